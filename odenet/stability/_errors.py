"""Errors of the stability analyzer (subclasses of odenet's hierarchy)."""

from __future__ import annotations

from odenet._errors import InputError


class StabilityInputError(InputError):
    """An argument of a stability function has the wrong type, shape or value."""


class NotTranslationInvariantError(StabilityInputError):
    """A step given to :func:`von_neumann` is not linear and translation invariant."""


def check_positive_int(name: str, v, *, allow_zero: bool = False) -> int:
    """Return ``v`` as an int, or raise naming the argument and the fix."""
    ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        need = "a non-negative" if allow_zero else "a positive"
        raise StabilityInputError(f"`{name}` must be {need} integer, got {v!r}.")
    return v


def check_positive_float(name: str, v) -> float:
    """Return ``v`` as a float > 0, or raise naming the argument and the fix."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not x > 0 or x == float("inf"):
        raise StabilityInputError(f"`{name}` must be a positive finite number, got {v!r}.")
    return x
