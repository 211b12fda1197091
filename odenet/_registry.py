"""Every method with memory by name: the fixed-step linear multistep family
(:mod:`odenet._multistep`) and the families that live in modules of their own.

A module of its own (not :mod:`odenet._multistep`) because the families build on
``_multistep``'s runtime: looking them up from there would be an import cycle.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from odenet._adams import METHODS as ADAMS  # torchdiffeq's variable-order Adams
from odenet._bdf import METHODS as VARIABLE_BDF  # variable-step, variable-order BDF/NDF
from odenet._errors import UnknownMethodError
from odenet._multistep import MULTISTEP
from odenet.tableaus import methods, tableau

__all__ = ["method", "method_digest", "method_names", "multistep", "registered"]


def registered() -> dict:
    """Every method with memory by name: the fixed-step family of
    :mod:`odenet._multistep` and the families in modules of their own (each exports
    ``METHODS``, name → method object with the protocol of
    :class:`odenet._multistep.LinearMultistep`: ``name``, ``order``, ``error_order``,
    ``is_implicit``, ``is_explicit``, ``is_adaptive``, ``runtime(...)`` and
    ``check_use(...)``)."""
    return {**MULTISTEP, **ADAMS, **VARIABLE_BDF}


def multistep(name):
    """The method with memory registered under ``name`` (None for other names)."""
    if isinstance(name, str):
        return registered().get(name.lower())
    if hasattr(name, "runtime") and hasattr(name, "check_use"):
        return name
    return None


def method(name):
    """The method called ``name``, of either kind: a method with memory (``ndf``,
    ``adams``, ``ab3``, ...) or a Butcher tableau (a tableau object passes through).

    Raises :class:`odenet.UnknownMethodError` for any other name, listing every valid
    one of both kinds (:func:`odenet.tableaus.tableau` alone lists the tableaus only)."""
    found = multistep(name)
    if found is not None:
        return found
    try:
        return tableau(name)
    except UnknownMethodError:
        if not isinstance(name, str):
            raise
        raise UnknownMethodError(
            f"unknown method {name!r}; valid names are: {', '.join(method_names())} "
            "(or pass your own odenet.ButcherTableau)."
        ) from None


def method_names() -> list[str]:
    """Every method's name, one-step and with memory, sorted."""
    return sorted([*methods(), *registered()])


def method_digest(name) -> str | None:
    """A digest of the data that defines the method called ``name``, or None for a name
    that is not odenet's (``scipy:Radau``).

    A tableau: its coefficients (``A``, ``b``, ``b̂``, ``c``), orders and error safety;
    a method with memory: its fields.  A study keys its cells by it (with the method's
    name), so a cell computed with other coefficients — stored before an odenet version
    that changed the method — is recomputed instead of served as current.  Changes to
    the code that runs a method (the loop, Newton) are not seen here: the cell's key
    also holds its build (:func:`odenet._build.cell_build`: a digest of odenet's source
    and the versions of torch, numpy, scipy, torchdiffeq), which sees them.
    """
    try:
        m = method(name)
    except UnknownMethodError:
        return None
    h = hashlib.sha256()
    if dataclasses.is_dataclass(m):
        h.update(repr(dataclasses.asdict(m)).encode())
    else:
        for attr in ("order", "embedded_order", "error_safety"):
            h.update(repr(getattr(m, attr, None)).encode())
        for attr in ("A", "b", "b_hat", "b_hat2", "c"):
            x = getattr(m, attr, None)
            h.update(b"-" if x is None else np.ascontiguousarray(x, dtype=np.float64).tobytes())
    h.update(type(m).__qualname__.encode())
    return h.hexdigest()[:16]
