"""Runge–Kutta methods as data: the [`ButcherTableau`][odenet.tableaus.ButcherTableau] and the named methods.

A method is a frozen tableau `(A, b, c)` with an optional embedded weight vector
`b_hat` (for error estimation) and an optional continuous extension
([`DenseOutput`][odenet.tableaus.DenseOutput]).  Coefficients are kept exactly (sympy rationals or
surds) so order conditions can be checked in exact arithmetic
([`odenet.order_conditions`][odenet.order_conditions]); the float64 numpy arrays `A`, `b`, `c` are
what the integrator turns into tensors.  Methods whose coefficients were published
as truncated decimals (DOP853 to 30 digits, Tsit5, Kvaerno5) keep those decimals as
sympy Floats of the published precision, and every identity (row sums, `Σb = 1`,
order conditions) is checked to that precision.

Structural flags (explicit, diagonally implicit, FSAL, stiffly accurate) are
*derived* from the coefficients, never declared.  The registry is lazy: a method's
factory runs (and its sympy checks are paid) on first use, then is cached.

The table of all methods, with references, is `docs/methods.md`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from typing import Any

import mpmath
import numpy as np
import sympy

from odenet._errors import InvalidTableauError, UnknownMethodError

Exact = Any  # a sympy expression


# A decimal string with this many significant digits or more is a truncated expansion
# (DOP853's 30 digits, Tsit5's, Kvaerno5's 16-17) and becomes a sympy Float of that
# precision; shorter decimals ("0.161", "0.25") are exact rationals.
_DECIMAL_DIGITS = 15
_DECIMAL = re.compile(r"^\s*[+-]?(\d*)\.?(\d*)(?:[eE][+-]?\d+)?\s*$")


def _exact(x: Any) -> Exact:
    """Turn a coefficient into sympy.

    Accepts ints, `fractions.Fraction`, strings such as `"35/384"` or
    `"1 - sqrt(2)/2"` (exact), long decimal strings such as
    `"0.0526001519587677318785587544488"` (a Float of that precision), sympy numbers,
    and floats (a 17-digit Float, compared to 1e-14).
    """
    if isinstance(x, sympy.Basic):
        return x
    if isinstance(x, Fraction):
        return sympy.Rational(x.numerator, x.denominator)
    if isinstance(x, bool):
        raise InvalidTableauError(f"a coefficient must be a number, got {x!r}.")
    if isinstance(x, int | np.integer):
        return sympy.Integer(int(x))
    if isinstance(x, float | np.floating):
        return sympy.Float(float(x), 17)
    text = str(x)
    m = _DECIMAL.match(text)
    if m and (m.group(1) or m.group(2)):
        digits = len((m.group(1) + m.group(2)).lstrip("0"))
        if digits >= _DECIMAL_DIGITS:
            return sympy.Float(text.strip(), max(digits, 17))
    hint = (
        f"could not read the coefficient {x!r} as a real number (use ints, fractions, "
        "strings such as '35/384' or '1 - sqrt(2)/2', or floats)."
    )
    try:
        value = sympy.sympify(text, rational=True)
    except (sympy.SympifyError, SyntaxError, TypeError) as err:
        raise InvalidTableauError(hint) from err
    if not (value.is_number and value.is_real):
        raise InvalidTableauError(hint)
    return value


def _exact_vector(v: Sequence, name: str) -> tuple[Exact, ...]:
    arr = np.asarray(v, dtype=object)
    if arr.ndim != 1:
        raise InvalidTableauError(f"`{name}` must be a vector, got an array of shape {arr.shape}.")
    return tuple(_exact(x) for x in arr)


def _exact_matrix(m: Sequence, name: str) -> tuple[tuple[Exact, ...], ...]:
    rows = [list(r) for r in m]
    if len({len(r) for r in rows}) > 1:
        raise InvalidTableauError(f"`{name}` has rows of different lengths.")
    return tuple(tuple(_exact(x) for x in r) for r in rows)


def _to_float(x: Exact) -> float:
    if isinstance(x, sympy.Rational):
        return int(x.p) / int(x.q) if x.q != 1 else float(int(x.p))
    return float(sympy.N(x, 30))


def _sum_equals(terms: Sequence[Exact], target: Exact) -> bool:
    """`Σ terms == target` exactly, or to the precision of the decimals involved.

    Exact rationals compare exactly.  Irrational exact values are compared at 60
    digits (a zero surd expression evaluates to 0 or far below `1e-45`), which
    avoids `sympy.simplify`.  With truncated decimals (sympy Floats) the tolerance
    is `10^(3 − digits)` times the magnitude of the terms, `digits` being the
    precision of the least precise input (sympy keeps the *largest* precision in
    arithmetic, so it must be read from the inputs, not from the sum).
    """
    values = [*terms, target]
    if all(isinstance(v, sympy.Rational) for v in values):
        return sum(terms, sympy.Integer(0)) == target
    # term by term at 70 digits: evaluating the (cancelling) symbolic difference
    # with sympy.N would chase relative accuracy of a zero and is very slow
    with mpmath.workdps(70):
        mp = [mpmath.mpf(str(sympy.N(v, 70))) for v in values]
        value = float(abs(mpmath.fsum(mp[:-1]) - mp[-1]))
        scale = max(1.0, float(mpmath.fsum(abs(x) for x in mp)))
    floats = [f for v in values if isinstance(v, sympy.Basic) for f in v.atoms(sympy.Float)]
    if not floats:
        return value < 1e-45 * scale
    digits = min(min(int(f._prec * math.log10(2)) for f in floats), 65)
    return value <= 10.0 ** (3 - digits) * scale


@dataclass(frozen=True, eq=False)
class DenseOutput:
    """A continuous extension `y(t0 + θh) = y0 + h Σ_i b_i(θ) k_i` of a step.

    `b_i(θ) = Σ_m P[i, m] θ^(m+1)` for `m = 0 .. degree-1`.  Stages beyond the
    tableau's own `s` are *extra stages* evaluated only for steps that hold an
    output time: `k_{s+e} = f(t0 + extra_c[e] h, y0 + h Σ_j extra_A[e, j] k_j)`.

    Attributes
    ----------
    P : ndarray, shape [s + E, degree]
        Coefficients (exact values accepted as for [`ButcherTableau`][odenet.tableaus.ButcherTableau]; kept in
        `P_exact`, float64 in `P`).
    extra_A : ndarray, shape [E, s + E] or None
        Row `e` may use the stages before `s + e` (entries after are zero).
    extra_c : ndarray, shape [E] or None
    order : int
        Order of the interpolant (the error at any θ is `O(h^(order+1))`).
    """

    P: Any
    order: int
    extra_A: Any = None
    extra_c: Any = None
    P_exact: tuple = field(init=False, repr=False)
    extra_A_exact: tuple | None = field(init=False, repr=False)
    extra_c_exact: tuple | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        P = _exact_matrix(self.P, "dense.P")
        set_(self, "P_exact", P)
        set_(self, "P", np.array([[_to_float(x) for x in r] for r in P]))
        if (self.extra_A is None) != (self.extra_c is None):
            raise InvalidTableauError(
                "dense output: give both `extra_A` and `extra_c` (extra stages), or neither."
            )
        if self.extra_A is None:
            set_(self, "extra_A_exact", None)
            set_(self, "extra_c_exact", None)
            return
        eA = _exact_matrix(self.extra_A, "dense.extra_A")
        ec = _exact_vector(self.extra_c, "dense.extra_c")
        if len(eA) != len(ec):
            raise InvalidTableauError(
                f"dense output: `extra_A` has {len(eA)} rows but `extra_c` has {len(ec)} "
                "entries; one row and one node per extra stage."
            )
        for e, (row, ce) in enumerate(zip(eA, ec, strict=True)):
            if not _sum_equals(row, ce):
                raise InvalidTableauError(
                    f"dense output: row {e} of `extra_A` sums to {_to_float(sum(row)):.17g}, "
                    f"but extra_c[{e}] = {_to_float(ce):.17g}; the nodes must be the row sums."
                )
        set_(self, "extra_A_exact", eA)
        set_(self, "extra_c_exact", ec)
        set_(self, "extra_A", np.array([[_to_float(x) for x in r] for r in eA]))
        set_(self, "extra_c", np.array([_to_float(x) for x in ec]))

    @property
    def n_extra(self) -> int:
        return 0 if self.extra_A is None else len(self.extra_A)

    def weights(self, theta: np.ndarray) -> np.ndarray:
        """`b_i(θ)` for each θ: shape `[len(theta), s + E]`."""
        theta = np.atleast_1d(np.asarray(theta, dtype=float))
        powers = theta[:, None] ** np.arange(1, self.P.shape[1] + 1)[None, :]
        return powers @ self.P.T


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    """A Runge–Kutta method `k_i = f(t + c_i h, y + h Σ_j A_ij k_j)`, `y1 = y + h Σ b_i k_i`.

    Parameters
    ----------
    name : str
    A : [s, s] coefficients; ints, fractions, strings such as "35/384" or
        `"1/2 - sqrt(3)/6"`, sympy numbers, or floats (then checked to 1e-12).
    b : [s] weights of the propagated solution.
    c : [s] nodes; must equal the row sums of A.
    order : int
        Classical order `p` (local error `O(h^(p+1))`).
    b_hat : [s], optional
        Embedded weights; `h Σ (b_i - b_hat_i) k_i` estimates the local error.
    embedded_order : int, optional
        Order of the embedded solution (required with `b_hat`).
    dense : DenseOutput, optional
        The method's own continuous extension; Hermite interpolation otherwise.
    reference : str
        Where the coefficients come from.
    b_hat2 : [s], optional
        A second embedded solution (DOP853's third-order one), of order
        `embedded_order2`.  Kept as data for analysis and for an error estimator
        combining two embedded solutions; the integrator core uses `b_hat` only.
    estimator : str, optional
        A named error estimator that is not an embedded `b_hat` (`"radau5"`:
        Hairer's filtered estimate, `odenet._radau`; `"milne"`: the trapezoid's
        local error from its previous step, `odenet._trapezoid`), of order
        `estimator_order`; makes the method adaptive, and is what adaptive solves use
        where the tableau also has a `b_hat`.
    error_safety : float
        Diagonally implicit pairs: the constant of the factor ``κ`` their error
        estimate is multiplied by in an adaptive solve (``odenet._newton.error_safety``:
        ``κ = error_safety · max(1, 1e-2/rtol)^(1/order)``), so that status ok means a
        global error at the level of RADAU5's at the same ``rtol``.  1 by default;
        unused by other methods.

    Attributes (derived)
    --------------------
    stages, is_explicit, is_diagonally_implicit, is_fully_implicit,
    is_stiffly_accurate, is_fsal, is_adaptive.
    """

    name: str
    A: Any
    b: Any
    c: Any
    order: int
    b_hat: Any = None
    embedded_order: int | None = None
    dense: DenseOutput | None = None
    reference: str = ""
    b_hat2: Any = None
    embedded_order2: int | None = None
    estimator: str | None = None
    estimator_order: int | None = None
    error_safety: float = 1.0
    A_exact: tuple = field(init=False, repr=False)
    b_exact: tuple = field(init=False, repr=False)
    c_exact: tuple = field(init=False, repr=False)
    b_hat_exact: tuple | None = field(init=False, repr=False)
    b_hat2_exact: tuple | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        A = _exact_matrix(self.A, "A")
        b = _exact_vector(self.b, "b")
        c = _exact_vector(self.c, "c")
        s = len(b)
        if len(A) != s or any(len(r) != s for r in A) or len(c) != s:
            raise InvalidTableauError(
                f"tableau {self.name!r}: `A` must be [s, s] and `c` [s] with s = len(b) = {s}; "
                f"got A with {len(A)} rows and c of length {len(c)}."
            )
        if not isinstance(self.order, int | np.integer) or self.order < 1:
            raise InvalidTableauError(
                f"tableau {self.name!r}: `order` must be a positive integer, got {self.order!r}."
            )
        for i in range(s):
            if not _sum_equals(A[i], c[i]):
                raise InvalidTableauError(
                    f"tableau {self.name!r}: row {i} of `A` sums to "
                    f"{_to_float(sum(A[i], sympy.Integer(0))):.17g}, but c[{i}] = "
                    f"{_to_float(c[i]):.17g}; the nodes must be the row sums of A "
                    "(c_i = Σ_j A_ij)."
                )
        if not _sum_equals(b, sympy.Integer(1)):
            raise InvalidTableauError(
                f"tableau {self.name!r}: the weights `b` sum to "
                f"{_to_float(sum(b, sympy.Integer(0))):.17g}, not 1 (consistency)."
            )
        b_hat = self._embedded(self.b_hat, self.embedded_order, "b_hat", "embedded_order", s)
        b_hat2 = self._embedded(self.b_hat2, self.embedded_order2, "b_hat2", "embedded_order2", s)
        if b_hat2 is not None and b_hat is None:
            raise InvalidTableauError(
                f"tableau {self.name!r}: `b_hat2` given without `b_hat`; put the main "
                "embedded solution in `b_hat`."
            )
        if self.dense is not None:
            self._check_dense(s, b)
        set_(self, "A_exact", A)
        set_(self, "b_exact", b)
        set_(self, "c_exact", c)
        set_(self, "b_hat_exact", b_hat)
        set_(self, "b_hat2_exact", b_hat2)
        set_(self, "b_hat2", None if b_hat2 is None else np.array([_to_float(x) for x in b_hat2]))
        set_(self, "A", np.array([[_to_float(x) for x in r] for r in A]))
        set_(self, "b", np.array([_to_float(x) for x in b]))
        set_(self, "c", np.array([_to_float(x) for x in c]))
        set_(self, "b_hat", None if b_hat is None else np.array([_to_float(x) for x in b_hat]))

    def _embedded(self, v, order, name: str, order_name: str, s: int):
        if v is None:
            if order is not None:
                raise InvalidTableauError(
                    f"tableau {self.name!r}: `{order_name}` given without `{name}`."
                )
            return None
        w = _exact_vector(v, name)
        if len(w) != s:
            raise InvalidTableauError(
                f"tableau {self.name!r}: `{name}` has {len(w)} entries, expected {s}."
            )
        if not _sum_equals(w, sympy.Integer(1)):
            raise InvalidTableauError(
                f"tableau {self.name!r}: the embedded weights `{name}` sum to "
                f"{_to_float(sum(w, sympy.Integer(0))):.17g}, not 1."
            )
        if order is None:
            raise InvalidTableauError(
                f"tableau {self.name!r}: `{name}` given without `{order_name}`."
            )
        if not isinstance(order, int | np.integer) or order < 1:
            raise InvalidTableauError(
                f"tableau {self.name!r}: `{order_name}` must be a positive integer, got {order!r}."
            )
        return w

    def _check_dense(self, s: int, b) -> None:
        d = self.dense
        if not isinstance(d, DenseOutput):
            raise InvalidTableauError(
                f"tableau {self.name!r}: `dense` must be an odenet.DenseOutput, "
                f"got {type(d).__name__}."
            )
        n = s + d.n_extra
        if d.P.shape[0] != n:
            raise InvalidTableauError(
                f"tableau {self.name!r}: dense output has {d.P.shape[0]} rows, "
                f"expected s + extra stages = {n}."
            )
        if d.n_extra and d.extra_A.shape[1] != n:
            raise InvalidTableauError(
                f"tableau {self.name!r}: dense `extra_A` must be [E, s + E] = "
                f"[{d.n_extra}, {n}], got {list(d.extra_A.shape)}."
            )
        # continuity: the interpolant must end at the step's own y1 (b(1) = b)
        for i in range(n):
            end = sum(d.P_exact[i], sympy.Integer(0))
            target = b[i] if i < s else sympy.Integer(0)
            if not _sum_equals(d.P_exact[i], target):
                what = f"b[{i}]" if i < s else "zero (extra stage)"
                raise InvalidTableauError(
                    f"tableau {self.name!r}: dense output weight b_{i}(1) = "
                    f"{_to_float(end):.17g} but it must equal {what} = "
                    f"{_to_float(target):.17g}, so that the interpolant ends at y1."
                )

    # --- derived structure ---------------------------------------------------------
    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def is_explicit(self) -> bool:
        """`A` strictly lower triangular: every stage is an explicit formula."""
        return bool(np.all(np.triu(self.A) == 0))

    @property
    def is_diagonally_implicit(self) -> bool:
        """`A` lower triangular with some non-zero diagonal entry (DIRK / SDIRK / ESDIRK)."""
        return bool(np.all(np.triu(self.A, 1) == 0)) and not self.is_explicit

    @property
    def is_fully_implicit(self) -> bool:
        """Some entry above the diagonal: all stages are coupled."""
        return bool(np.any(np.triu(self.A, 1) != 0))

    @property
    def is_implicit(self) -> bool:
        return not self.is_explicit

    @property
    def is_stiffly_accurate(self) -> bool:
        """Last row of `A` equals `b` (so `y1` is the last stage value)."""
        return bool(np.array_equal(self.A[-1], self.b)) and self.c[-1] == 1.0

    @property
    def first_stage_explicit(self) -> bool:
        return bool(np.all(self.A[0] == 0))

    @property
    def is_fsal(self) -> bool:
        """First Same As Last: the last stage of a step is the first of the next."""
        return self.is_stiffly_accurate and self.first_stage_explicit

    @property
    def is_adaptive(self) -> bool:
        """Has an embedded error estimate (or an `estimator`), so `solve` can choose steps."""
        return self.b_hat is not None or self.estimator is not None

    @property
    def error_order(self) -> int:
        """Order `q` used by step-size controllers (the exponent is `-1/(q+1)`).

        `min(order, embedded_order)`; with a second embedded solution (DOP853) the
        combined estimate `|e5|² / sqrt(|e5|² + 0.01 |e3|²)` behaves like
        `O(h^order)`, so `q = order − 1` as in Hairer's dop853.f and scipy.
        """
        if self.b_hat2 is not None:
            return self.order - 1
        if self.estimator_order is not None:  # a named estimator replaces b_hat's
            return self.estimator_order
        return self.order if self.embedded_order is None else min(self.order, self.embedded_order)

    def __repr__(self) -> str:
        kind = (
            "explicit"
            if self.is_explicit
            else ("diagonally implicit" if self.is_diagonally_implicit else "fully implicit")
        )
        emb = f", embedded order {self.embedded_order}" if self.is_adaptive else ""
        return (
            f"ButcherTableau({self.name!r}: {kind}, {self.stages} stages, order {self.order}{emb})"
        )


# --- the registry ----------------------------------------------------------------

_REGISTRY: dict[str, Callable[[], ButcherTableau]] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, *aliases: str):
    """Decorator: register a zero-argument factory of a tableau under `name`."""

    def deco(factory: Callable[[], ButcherTableau]):
        _REGISTRY[name] = cache(factory)
        for a in aliases:
            _ALIASES[a] = name
        return factory

    return deco


def methods() -> list[str]:
    """Names of all registered methods, sorted.

    Examples
    --------
    >>> import odenet
    >>> "dopri5" in odenet.methods(), "radau_iia5" in odenet.methods()
    (True, True)
    """
    return sorted(_REGISTRY)


def tableau(name: str | ButcherTableau) -> ButcherTableau:
    """The [`ButcherTableau`][odenet.tableaus.ButcherTableau] registered under `name` (a tableau passes through).

    Raises
    ------
    UnknownMethodError
        If `name` is not registered; the message lists the valid names.

    Examples
    --------
    >>> import odenet
    >>> tab = odenet.tableau("rk4")
    >>> tab
    ButcherTableau('rk4': explicit, 4 stages, order 4)
    >>> tab.c
    array([0. , 0.5, 0.5, 1. ])
    """
    if isinstance(name, ButcherTableau):
        return name
    if not isinstance(name, str):
        raise UnknownMethodError(
            f"`method` must be a method name or a ButcherTableau, got {type(name).__name__}."
        )
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise UnknownMethodError(
            f"unknown method {name!r}; valid names are: {', '.join(methods())} "
            "(or pass your own odenet.ButcherTableau)."
        )
    return _REGISTRY[key]()


# --- explicit methods ---------------------------------------------------------------


@register("euler", "forward_euler", "explicit_euler")
def _euler() -> ButcherTableau:
    """Forward Euler, order 1."""
    return ButcherTableau("euler", A=[[0]], b=[1], c=[0], order=1, reference="Euler (1768).")


@register("midpoint", "explicit_midpoint")
def _midpoint() -> ButcherTableau:
    """Explicit midpoint, order 2."""
    return ButcherTableau(
        "midpoint",
        A=[[0, 0], ["1/2", 0]],
        b=[0, 1],
        c=[0, "1/2"],
        order=2,
        reference="Runge (1895).",
    )


@register("heun", "adaptive_heun", "heun_euler")
def _heun() -> ButcherTableau:
    """Heun's method (explicit trapezoid), order 2, with forward Euler embedded."""
    return ButcherTableau(
        "heun",
        A=[[0, 0], [1, 0]],
        b=["1/2", "1/2"],
        c=[0, 1],
        order=2,
        b_hat=[1, 0],
        embedded_order=1,
        reference="Heun (1900).",
    )


@register("ralston")
def _ralston() -> ButcherTableau:
    """Ralston's second-order method (minimal truncation-error bound)."""
    return ButcherTableau(
        "ralston",
        A=[[0, 0], ["2/3", 0]],
        b=["1/4", "3/4"],
        c=[0, "2/3"],
        order=2,
        reference="Ralston, Math. Comp. 16 (1962).",
    )


@register("rk3", "kutta3")
def _rk3() -> ButcherTableau:
    """Kutta's third-order method."""
    return ButcherTableau(
        "rk3",
        A=[[0, 0, 0], ["1/2", 0, 0], [-1, 2, 0]],
        b=["1/6", "2/3", "1/6"],
        c=[0, "1/2", 1],
        order=3,
        reference="Kutta (1901).",
    )


@register("ssprk3", "shu_osher3")
def _ssprk3() -> ButcherTableau:
    """Strong-stability-preserving RK3 of Shu & Osher (SSP coefficient 1)."""
    return ButcherTableau(
        "ssprk3",
        A=[[0, 0, 0], [1, 0, 0], ["1/4", "1/4", 0]],
        b=["1/6", "1/6", "2/3"],
        c=[0, 1, "1/2"],
        order=3,
        reference="Shu & Osher, J. Comput. Phys. 77 (1988).",
    )


@register("rk4", "classic_rk4")
def _rk4() -> ButcherTableau:
    """The classical fourth-order Runge–Kutta method."""
    return ButcherTableau(
        "rk4",
        A=[[0, 0, 0, 0], ["1/2", 0, 0, 0], [0, "1/2", 0, 0], [0, 0, 1, 0]],
        b=["1/6", "1/3", "1/3", "1/6"],
        c=[0, "1/2", "1/2", 1],
        order=4,
        reference="Kutta (1901).",
    )


@register("rk38", "three_eighths")
def _rk38() -> ButcherTableau:
    """Kutta's 3/8 rule, order 4."""
    return ButcherTableau(
        "rk38",
        A=[[0, 0, 0, 0], ["1/3", 0, 0, 0], ["-1/3", 1, 0, 0], [1, -1, 1, 0]],
        b=["1/8", "3/8", "3/8", "1/8"],
        c=[0, "1/3", "2/3", 1],
        order=4,
        reference="Kutta (1901).",
    )


@register("bosh3", "bogacki_shampine")
def _bosh3() -> ButcherTableau:
    """Bogacki–Shampine 3(2), FSAL, Hermite dense output (as MATLAB's ode23)."""
    return ButcherTableau(
        "bosh3",
        A=[[0, 0, 0, 0], ["1/2", 0, 0, 0], [0, "3/4", 0, 0], ["2/9", "1/3", "4/9", 0]],
        b=["2/9", "1/3", "4/9", 0],
        c=[0, "1/2", "3/4", 1],
        order=3,
        b_hat=["7/24", "1/4", "1/3", "1/8"],
        embedded_order=2,
        reference="Bogacki & Shampine, Appl. Math. Lett. 2 (1989).",
    )


@register("dopri5", "rk45", "dormand_prince")
def _dopri5() -> ButcherTableau:
    """Dormand–Prince 5(4), FSAL, with Shampine's fourth-order continuous extension."""
    A = [
        [0, 0, 0, 0, 0, 0, 0],
        ["1/5", 0, 0, 0, 0, 0, 0],
        ["3/40", "9/40", 0, 0, 0, 0, 0],
        ["44/45", "-56/15", "32/9", 0, 0, 0, 0],
        ["19372/6561", "-25360/2187", "64448/6561", "-212/729", 0, 0, 0],
        ["9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656", 0, 0],
        ["35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0],
    ]
    b = ["35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0]
    b_hat = ["5179/57600", 0, "7571/16695", "393/640", "-92097/339200", "187/2100", "1/40"]
    P = [
        [1, "-8048581381/2820520608", "8663915743/2820520608", "-12715105075/11282082432"],
        [0, 0, 0, 0],
        [0, "131558114200/32700410799", "-68118460800/10900136933", "87487479700/32700410799"],
        [0, "-1754552775/470086768", "14199869525/1410260304", "-10690763975/1880347072"],
        [0, "127303824393/49829197408", "-318862633887/49829197408", "701980252875/199316789632"],
        [0, "-282668133/205662961", "2019193451/616988883", "-1453857185/822651844"],
        [0, "40617522/29380423", "-110615467/29380423", "69997945/29380423"],
    ]
    return ButcherTableau(
        "dopri5",
        A=A,
        b=b,
        c=[0, "1/5", "3/10", "4/5", "8/9", 1, 1],
        order=5,
        b_hat=b_hat,
        embedded_order=4,
        dense=DenseOutput(P=P, order=4),
        reference="Dormand & Prince, J. Comput. Appl. Math. 6 (1980); dense output: "
        "Shampine, Math. Comp. 46 (1986).",
    )


# --- implicit methods ---------------------------------------------------------------


@register("backward_euler", "implicit_euler")
def _backward_euler() -> ButcherTableau:
    """Backward (implicit) Euler, order 1, L-stable."""
    return ButcherTableau(
        "backward_euler",
        A=[[1]],
        b=[1],
        c=[1],
        order=1,
        reference="Euler (1768).",
    )


# The trapezoid's κ constant (odenet._newton.error_safety) for its Milne-device estimate
# (odenet._trapezoid), measured like the DIRK pairs' below: at rtol 1e-3 on the stiff set
# S = 1000 left HIRES at 13x RADAU5's error, S = 2000 every problem within 10x (HIRES 8x)
# (studies/benchmarks/trapezoid_safety.py, stiff_trapezoid_results.md).
TRAPEZOID_SAFETY = 2000.0


@register("trapezoid", "crank_nicolson", "trapezoidal")
def _trapezoid() -> ButcherTableau:
    """The trapezoidal rule (Crank–Nicolson), order 2, A-stable; forward Euler embedded."""
    return ButcherTableau(
        "trapezoid",
        A=[[0, 0], ["1/2", "1/2"]],
        b=["1/2", "1/2"],
        c=[0, 1],
        order=2,
        b_hat=[1, 0],  # forward Euler, as data: adaptive solves use the estimator below
        embedded_order=1,
        # adaptive solves estimate -h³y'''/12 by Milne's device (odenet._trapezoid)
        estimator="milne",
        estimator_order=2,
        error_safety=TRAPEZOID_SAFETY,
        reference="Crank & Nicolson, Proc. Camb. Phil. Soc. 43 (1947).",
    )


@register("implicit_midpoint")
def _implicit_midpoint() -> ButcherTableau:
    """Implicit midpoint rule (1-stage Gauss), order 2, A-stable, symplectic."""
    return ButcherTableau(
        "implicit_midpoint",
        A=[["1/2"]],
        b=[1],
        c=["1/2"],
        order=2,
        reference="Gauss–Legendre collocation with one stage.",
    )


@register("gauss_legendre4", "gl4", "gauss4")
def _gauss_legendre4() -> ButcherTableau:
    """Two-stage Gauss–Legendre collocation, order 4, A-stable, symplectic."""
    r = "sqrt(3)/6"
    return ButcherTableau(
        "gauss_legendre4",
        A=[["1/4", f"1/4 - {r}"], [f"1/4 + {r}", "1/4"]],
        b=["1/2", "1/2"],
        c=[f"1/2 - {r}", f"1/2 + {r}"],
        order=4,
        reference="Butcher, Math. Comp. 18 (1964); Hairer & Wanner II, Table IV.5.1.",
    )


@register("radau_iia5", "radau5", "radauiia5")
def _radau_iia5() -> ButcherTableau:
    """Three-stage Radau IIA, order 5, L-stable, stiffly accurate."""
    s6 = "sqrt(6)"
    return ButcherTableau(
        "radau_iia5",
        A=[
            [f"(88 - 7*{s6})/360", f"(296 - 169*{s6})/1800", f"(-2 + 3*{s6})/225"],
            [f"(296 + 169*{s6})/1800", f"(88 + 7*{s6})/360", f"(-2 - 3*{s6})/225"],
            [f"(16 - {s6})/36", f"(16 + {s6})/36", "1/9"],
        ],
        b=[f"(16 - {s6})/36", f"(16 + {s6})/36", "1/9"],
        c=[f"(4 - {s6})/10", f"(4 + {s6})/10", 1],
        order=5,
        reference="Ehle (1969); Hairer & Wanner II, Table IV.5.6.",
        # adaptive through Hairer's RADAU5 estimate (odenet._radau), of order h⁴
        estimator="radau5",
        estimator_order=3,
    )


@register("sdirk2", "sdirk22")
def _sdirk2() -> ButcherTableau:
    """Two-stage L-stable SDIRK, order 2, γ = 1 − 1/√2 (stiffly accurate)."""
    g = "1 - sqrt(2)/2"
    return ButcherTableau(
        "sdirk2",
        A=[[g, 0], [f"1 - ({g})", g]],
        b=[f"1 - ({g})", g],
        c=[g, 1],
        order=2,
        reference="Alexander, SIAM J. Numer. Anal. 14 (1977); Hairer & Wanner II, (IV.6.18).",
    )


# --- more explicit methods -------------------------------------------------------------


@register("fehlberg2", "rkf12", "rk12")
def _fehlberg2() -> ButcherTableau:
    """Runge–Kutta–Fehlberg 2(1): order 2 propagated, order 1 embedded (torchdiffeq's)."""
    return ButcherTableau(
        "fehlberg2",
        A=[[0, 0, 0], ["1/2", 0, 0], ["1/256", "255/256", 0]],
        b=["1/512", "255/256", "1/512"],
        c=[0, "1/2", 1],
        order=2,
        b_hat=["1/256", "255/256", 0],
        embedded_order=1,
        reference="Fehlberg, NASA TR R-315 (1969); as torchdiffeq/_impl/fehlberg2.py.",
    )


@register("heun3")
def _heun3() -> ButcherTableau:
    """Heun's third-order method."""
    return ButcherTableau(
        "heun3",
        A=[[0, 0, 0], ["1/3", 0, 0], [0, "2/3", 0]],
        b=["1/4", 0, "3/4"],
        c=[0, "1/3", "2/3"],
        order=3,
        reference="Heun, Z. Math. Phys. 45 (1900); Hairer, Nørsett & Wanner I, Table II.1.1.",
    )


# Tsitouras 5(4): coefficients to 85 digits as in diffrax/_solver/tsit5.py (from
# OrdinaryDiffEq.jl's BigFloat construction); b̂ = b − b_error with the sign of the last
# entry corrected (OrdinaryDiffEq.jl issue 1654, diffrax issue 98).
_TSIT5_A = [
    ["161/1000"],
    [
        "-0.8480655492356988544426874250230774675121177393430391537369234245294192976164141156943e-2",
        "0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569",
    ],
    [
        "2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289",
        "-6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366",
        "4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077",
    ],
    [
        "5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791",
        "-11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589",
        "7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753",
        "-0.9249506636175524925650207933207191611349983406029535244034750452930469056411389539635e-1",
    ],
    [
        "5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748",
        "-12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452",
        "8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986",
        "-0.7158497328140099722453054252582973869127213147363544882721139659546372402303777878835e-1",
        "-0.2826905039406838290900305721271224146717633626879770007617876201276764571291579142206e-1",
    ],
]
_TSIT5_B = [
    "0.9646076681806522951816731316512876333711995238157997181903319145764851595234062815396e-1",
    "1/100",
    "0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509",
    "1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331",
    "-3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677",
    "2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841",
    0,
]
_TSIT5_B_HAT = [
    "0.9468075576583945807478876255758922856117527357724631226139574065785592789071067303271e-1",
    "0.9183565540343253096776363936645313759813746240984095238905939532922955247253608687270e-2",
    "0.4877705284247615707855642599631228241516691959761363774365216240304071651579571959813",
    "1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761",
    "-2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702",
    "1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089",
    "1/66",
]
_TSIT5_C5 = (
    "0.9800255409045096857298102862870245954942137979563024768854764293221195950761080302604"
)
# b_i(θ) = Σ_m r_{i,m} θ^m, m = 1..4, as OrdinaryDiffEq.jl's Tsit5Interp (float64 values;
# the factored form is in diffrax's _Tsit5Interpolation).
_TSIT5_R = [
    [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
    [0, 0.13169999999999998, -0.2234, 0.1017],
    [0, 3.9302962368947516, -5.941033872131505, 2.490627285651253],
    [0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
    [0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
    [0, -27.896526289197286, 65.09189467479366, -34.87065786149661],
    [0, 1.5, -4, 2.5],
]


def _lower(rows: list[list], s: int) -> list[list]:
    """Strictly lower-triangular `[s, s]` matrix from its rows below the diagonal."""
    out = [[0] * s]
    for r in rows:
        out.append(list(r) + [0] * (s - len(r)))
    return out


@register("tsit5", "tsitouras5")
def _tsit5() -> ButcherTableau:
    """Tsitouras 5(4), FSAL, with Tsitouras' fourth-order continuous extension."""
    A = _lower([*_TSIT5_A, _TSIT5_B[:6]], 7)
    return ButcherTableau(
        "tsit5",
        A=A,
        b=_TSIT5_B,
        c=[0, "161/1000", "327/1000", "9/10", _TSIT5_C5, 1, 1],
        order=5,
        b_hat=_TSIT5_B_HAT,
        embedded_order=4,
        dense=DenseOutput(P=_TSIT5_R, order=4),
        reference="Tsitouras, Comput. Math. Appl. 62 (2011); coefficients as in "
        "diffrax/_solver/tsit5.py and OrdinaryDiffEq.jl (tsit_tableaus.jl, Tsit5Interp).",
    )


# --- DOP853: Hairer's coefficients to 30 digits, as scipy/integrate/_ivp/dop853_coefficients.py ---

_DOP853_C = [
    "0.0",
    "0.526001519587677318785587544488e-01",
    "0.789002279381515978178381316732e-01",
    "0.118350341907227396726757197510",
    "0.281649658092772603273242802490",
    "0.333333333333333333333333333333",
    "0.25",
    "0.307692307692307692307692307692",
    "0.651282051282051282051282051282",
    "0.6",
    "0.857142857142857142857142857142",
    "1.0",
    "1.0",
    "0.1",
    "0.2",
    "0.777777777777777777777777777778",
]
# A[i][j] (row i uses stages j < i); rows 13-15 are the dense-output stages
_DOP853_A = {
    1: {
        0: "5.26001519587677318785587544488e-2",
    },
    2: {
        0: "1.97250569845378994544595329183e-2",
        1: "5.91751709536136983633785987549e-2",
    },
    3: {
        0: "2.95875854768068491816892993775e-2",
        2: "8.87627564304205475450678981324e-2",
    },
    4: {
        0: "2.41365134159266685502369798665e-1",
        2: "-8.84549479328286085344864962717e-1",
        3: "9.24834003261792003115737966543e-1",
    },
    5: {
        0: "3.7037037037037037037037037037e-2",
        3: "1.70828608729473871279604482173e-1",
        4: "1.25467687566822425016691814123e-1",
    },
    6: {
        0: "3.7109375e-2",
        3: "1.70252211019544039314978060272e-1",
        4: "6.02165389804559606850219397283e-2",
        5: "-1.7578125e-2",
    },
    7: {
        0: "3.70920001185047927108779319836e-2",
        3: "1.70383925712239993810214054705e-1",
        4: "1.07262030446373284651809199168e-1",
        5: "-1.53194377486244017527936158236e-2",
        6: "8.27378916381402288758473766002e-3",
    },
    8: {
        0: "6.24110958716075717114429577812e-1",
        3: "-3.36089262944694129406857109825",
        4: "-8.68219346841726006818189891453e-1",
        5: "2.75920996994467083049415600797e1",
        6: "2.01540675504778934086186788979e1",
        7: "-4.34898841810699588477366255144e1",
    },
    9: {
        0: "4.77662536438264365890433908527e-1",
        3: "-2.48811461997166764192642586468",
        4: "-5.90290826836842996371446475743e-1",
        5: "2.12300514481811942347288949897e1",
        6: "1.52792336328824235832596922938e1",
        7: "-3.32882109689848629194453265587e1",
        8: "-2.03312017085086261358222928593e-2",
    },
    10: {
        0: "-9.3714243008598732571704021658e-1",
        3: "5.18637242884406370830023853209",
        4: "1.09143734899672957818500254654",
        5: "-8.14978701074692612513997267357",
        6: "-1.85200656599969598641566180701e1",
        7: "2.27394870993505042818970056734e1",
        8: "2.49360555267965238987089396762",
        9: "-3.0467644718982195003823669022",
    },
    11: {
        0: "2.27331014751653820792359768449",
        3: "-1.05344954667372501984066689879e1",
        4: "-2.00087205822486249909675718444",
        5: "-1.79589318631187989172765950534e1",
        6: "2.79488845294199600508499808837e1",
        7: "-2.85899827713502369474065508674",
        8: "-8.87285693353062954433549289258",
        9: "1.23605671757943030647266201528e1",
        10: "6.43392746015763530355970484046e-1",
    },
    12: {
        0: "5.42937341165687622380535766363e-2",
        5: "4.45031289275240888144113950566",
        6: "1.89151789931450038304281599044",
        7: "-5.8012039600105847814672114227",
        8: "3.1116436695781989440891606237e-1",
        9: "-1.52160949662516078556178806805e-1",
        10: "2.01365400804030348374776537501e-1",
        11: "4.47106157277725905176885569043e-2",
    },
    13: {
        0: "5.61675022830479523392909219681e-2",
        6: "2.53500210216624811088794765333e-1",
        7: "-2.46239037470802489917441475441e-1",
        8: "-1.24191423263816360469010140626e-1",
        9: "1.5329179827876569731206322685e-1",
        10: "8.20105229563468988491666602057e-3",
        11: "7.56789766054569976138603589584e-3",
        12: "-8.298e-3",
    },
    14: {
        0: "3.18346481635021405060768473261e-2",
        5: "2.83009096723667755288322961402e-2",
        6: "5.35419883074385676223797384372e-2",
        7: "-5.49237485713909884646569340306e-2",
        10: "-1.08347328697249322858509316994e-4",
        11: "3.82571090835658412954920192323e-4",
        12: "-3.40465008687404560802977114492e-4",
        13: "1.41312443674632500278074618366e-1",
    },
    15: {
        0: "-4.28896301583791923408573538692e-1",
        5: "-4.69762141536116384314449447206",
        6: "7.68342119606259904184240953878",
        7: "4.06898981839711007970213554331",
        8: "3.56727187455281109270669543021e-1",
        12: "-1.39902416515901462129418009734e-3",
        13: "2.9475147891527723389556272149",
        14: "-9.15095847217987001081870187138",
    },
}
# the third-order embedded weights (b − E3 in scipy)
_DOP853_B3 = {
    0: "0.244094488188976377952755905512",
    8: "0.733846688281611857341361741547",
    11: "0.220588235294117647058823529412e-1",
}
# the fifth-order error coefficients E5 = b − b̂5
_DOP853_E5 = {
    0: "0.1312004499419488073250102996e-1",
    5: "-0.1225156446376204440720569753e+1",
    6: "-0.4957589496572501915214079952",
    7: "0.1664377182454986536961530415e+1",
    8: "-0.3503288487499736816886487290",
    9: "0.3341791187130174790297318841",
    10: "0.8192320648511571246570742613e-1",
    11: "-0.2235530786388629525884427845e-1",
}
# dense-output rows F_3 .. F_6 = h Σ_j D[m][j] k_j
_DOP853_D = {
    0: {
        0: "-0.84289382761090128651353491142e+1",
        5: "0.56671495351937776962531783590",
        6: "-0.30689499459498916912797304727e+1",
        7: "0.23846676565120698287728149680e+1",
        8: "0.21170345824450282767155149946e+1",
        9: "-0.87139158377797299206789907490",
        10: "0.22404374302607882758541771650e+1",
        11: "0.63157877876946881815570249290",
        12: "-0.88990336451333310820698117400e-1",
        13: "0.18148505520854727256656404962e+2",
        14: "-0.91946323924783554000451984436e+1",
        15: "-0.44360363875948939664310572000e+1",
    },
    1: {
        0: "0.10427508642579134603413151009e+2",
        5: "0.24228349177525818288430175319e+3",
        6: "0.16520045171727028198505394887e+3",
        7: "-0.37454675472269020279518312152e+3",
        8: "-0.22113666853125306036270938578e+2",
        9: "0.77334326684722638389603898808e+1",
        10: "-0.30674084731089398182061213626e+2",
        11: "-0.93321305264302278729567221706e+1",
        12: "0.15697238121770843886131091075e+2",
        13: "-0.31139403219565177677282850411e+2",
        14: "-0.93529243588444783865713862664e+1",
        15: "0.35816841486394083752465898540e+2",
    },
    2: {
        0: "0.19985053242002433820987653617e+2",
        5: "-0.38703730874935176555105901742e+3",
        6: "-0.18917813819516756882830838328e+3",
        7: "0.52780815920542364900561016686e+3",
        8: "-0.11573902539959630126141871134e+2",
        9: "0.68812326946963000169666922661e+1",
        10: "-0.10006050966910838403183860980e+1",
        11: "0.77771377980534432092869265740",
        12: "-0.27782057523535084065932004339e+1",
        13: "-0.60196695231264120758267380846e+2",
        14: "0.84320405506677161018159903784e+2",
        15: "0.11992291136182789328035130030e+2",
    },
    3: {
        0: "-0.25693933462703749003312586129e+2",
        5: "-0.15418974869023643374053993627e+3",
        6: "-0.23152937917604549567536039109e+3",
        7: "0.35763911791061412378285349910e+3",
        8: "0.93405324183624310003907691704e+2",
        9: "-0.37458323136451633156875139351e+2",
        10: "0.10409964950896230045147246184e+3",
        11: "0.29840293426660503123344363579e+2",
        12: "-0.43533456590011143754432175058e+2",
        13: "0.96324553959188282948394950600e+2",
        14: "-0.39177261675615439165231486172e+2",
        15: "-0.14972683625798562581422125276e+3",
    },
}


def _decimal(value, digits: int = 28) -> str:
    """A computed coefficient as a decimal string of `digits` significant digits.

    Combinations of DOP853's published 28-30 digit decimals are only that accurate;
    writing them with that many digits keeps the order-condition tolerance honest.
    """
    with mpmath.workdps(digits + 10):
        return mpmath.nstr(mpmath.mpf(value), digits, min_fixed=-3, max_fixed=3, strip_zeros=False)


def _dop853_dense_P(b16: list, d_rows: list[list]) -> list[list[str]]:
    """Convert scipy's DOP853 dense output into `b_i(θ) = Σ_m P[i, m] θ^(m+1)`.

    scipy (`Dop853DenseOutput`) evaluates `y(θ) = y0 + Σ_j F_j q_j(θ)` by a Horner
    scheme alternating the factors `θ` and `1 − θ`, i.e. `q_0 = θ`,
    `q_1 = θ(1−θ)`, `q_2 = θ²(1−θ)`, `q_3 = θ²(1−θ)²`, `q_4 = θ³(1−θ)²`,
    `q_5 = θ³(1−θ)³`, `q_6 = θ⁴(1−θ)³`, with `F_0 = Δy = h Σ b_i k_i`,
    `F_1 = h k_0 − Δy`, `F_2 = 2Δy − h (k_12 + k_0)` (`k_12 = f(t1, y1)`) and
    `F_{3+m} = h Σ_i D[m, i] k_i`.  Each `F_j = h Σ_i M[j, i] k_i`, so
    `P[i, m] = Σ_j M[j, i] [θ^(m+1)] q_j(θ)`.
    """
    theta = sympy.Symbol("theta")
    q = [
        theta,
        theta * (1 - theta),
        theta**2 * (1 - theta),
        theta**2 * (1 - theta) ** 2,
        theta**3 * (1 - theta) ** 2,
        theta**3 * (1 - theta) ** 3,
        theta**4 * (1 - theta) ** 3,
    ]
    qc = [
        [int(sympy.Poly(qj, theta).coeff_monomial(theta ** (m + 1))) for m in range(7)] for qj in q
    ]
    n = len(b16)
    with mpmath.workdps(50):
        b = [mpmath.mpf(str(x)) for x in b16]
        e0 = [mpmath.mpf(1 if i == 0 else 0) for i in range(n)]
        e12 = [mpmath.mpf(1 if i == 12 else 0) for i in range(n)]
        M = [
            b,
            [e0[i] - b[i] for i in range(n)],
            [2 * b[i] - e0[i] - e12[i] for i in range(n)],
        ] + [[mpmath.mpf(str(x)) for x in row] for row in d_rows]
        return [
            [_decimal(sum(M[j][i] * qc[j][m] for j in range(7))) for m in range(7)]
            for i in range(n)
        ]


@register("dop853", "dopri853")
def _dop853() -> ButcherTableau:
    """Hairer's DOP853: order 8, embedded orders 5 and 3, FSAL, 7th-order dense output.

    Twelve stages plus the FSAL stage `k_12 = f(t1, y1)` (row 12 of `A` is `b`),
    so a step costs 12 evaluations.  `b_hat` is the fifth-order embedded solution
    (`b − E5`, error `O(h^6)`); the third-order one is `b_hat2`.  Hairer's code
    and scipy combine both as `|e5|² / sqrt(|e5|² + 0.01 |e3|²)`, and so does the
    core whenever a tableau carries `b_hat2`.  The continuous
    extension adds three stages (`c = 0.1, 0.2, 7/9`).
    """
    n = 16
    full = [[_DOP853_A.get(i, {}).get(j, 0) for j in range(n)] for i in range(n)]
    A = [row[:13] for row in full[:13]]
    b = A[12]
    b16 = list(b) + [0] * 3
    with mpmath.workdps(50):
        b_hat = [
            _decimal(mpmath.mpf(str(b[i])) - mpmath.mpf(_DOP853_E5.get(i, 0))) for i in range(13)
        ]
    b_hat2 = [_DOP853_B3.get(i, 0) for i in range(13)]
    d_rows = [[_DOP853_D[m].get(j, 0) for j in range(n)] for m in range(4)]
    dense = DenseOutput(
        P=_dop853_dense_P(b16, d_rows),
        order=7,
        extra_A=full[13:16],
        extra_c=_DOP853_C[13:16],
    )
    return ButcherTableau(
        "dop853",
        A=A,
        b=b,
        c=_DOP853_C[:13],
        order=8,
        b_hat=b_hat,
        embedded_order=5,
        b_hat2=b_hat2,
        embedded_order2=3,
        dense=dense,
        reference="Hairer, Nørsett & Wanner I, Sec. II.10 and dop853.f (2004); coefficients "
        "and dense output as scipy/integrate/_ivp/dop853_coefficients.py.",
    )


# --- more implicit methods ----------------------------------------------------------------


@register("gauss_legendre6", "gl6", "gauss6")
def _gauss_legendre6() -> ButcherTableau:
    """Three-stage Gauss–Legendre collocation, order 6, A-stable, symplectic."""
    r = "sqrt(15)"
    return ButcherTableau(
        "gauss_legendre6",
        A=[
            ["5/36", f"2/9 - {r}/15", f"5/36 - {r}/30"],
            [f"5/36 + {r}/24", "2/9", f"5/36 - {r}/24"],
            [f"5/36 + {r}/30", f"2/9 + {r}/15", "5/36"],
        ],
        b=["5/18", "4/9", "5/18"],
        c=[f"1/2 - {r}/10", "1/2", f"1/2 + {r}/10"],
        order=6,
        reference="Butcher, Math. Comp. 18 (1964); Hairer & Wanner II, Table IV.5.2.",
    )


@register("radau_iia3", "radau3", "radauiia3")
def _radau_iia3() -> ButcherTableau:
    """Two-stage Radau IIA, order 3, L-stable, stiffly accurate."""
    return ButcherTableau(
        "radau_iia3",
        A=[["5/12", "-1/12"], ["3/4", "1/4"]],
        b=["3/4", "1/4"],
        c=["1/3", 1],
        order=3,
        reference="Ehle (1969); Hairer & Wanner II, Table IV.5.5.",
        # adaptive through the RADAU5-style filtered estimate (odenet._radau), of order h³
        estimator="radau5",
        estimator_order=2,
    )


def _radau_iia_coefficients(s: int, digits: int = 50) -> tuple[list, list, list]:
    """`(A, b, c)` of the `s`-stage Radau IIA collocation method as decimal strings.

    `c` are the zeros of `d^(s−1)/dx^(s−1) [x^(s−1) (x − 1)^s]` (`c_s = 1`, kept as
    the integer 1), `A = C V⁻¹` with `V_ik = c_i^(k−1)` and `C_ik = c_i^k / k` (the
    collocation conditions `C(s)`), `b` the last row of `A`.  Computed with mpmath at
    `digits + 20` digits and returned to `digits` significant digits, so the tableau
    checks its identities to that precision (Hairer & Wanner II, Sec. IV.5).
    """
    x = sympy.Symbol("x")
    poly = sympy.Poly(sympy.diff(x ** (s - 1) * (x - 1) ** s, x, s - 1), x)
    with mpmath.workdps(digits + 20):
        roots = mpmath.polyroots(
            [mpmath.mpf(int(a)) for a in poly.all_coeffs()], maxsteps=500, extraprec=400
        )
        c = sorted(mpmath.re(r) for r in roots)
        c[-1] = mpmath.mpf(1)
        V = mpmath.matrix([[ci**k for k in range(s)] for ci in c])
        C = mpmath.matrix([[ci ** (k + 1) / (k + 1) for k in range(s)] for ci in c])
        A = C * V**-1

        def fmt(v):
            return mpmath.nstr(v, digits, min_fixed=-1, max_fixed=1, strip_zeros=False)

        A_s = [[fmt(A[i, j]) for j in range(s)] for i in range(s)]
        c_s = [fmt(ci) for ci in c[:-1]] + [1]
    return A_s, list(A_s[-1]), c_s


@register("radau_iia9", "radau9", "radauiia9")
def _radau_iia9() -> ButcherTableau:
    """Five-stage Radau IIA, order 9, L-stable, stiffly accurate."""
    A, b, c = _radau_iia_coefficients(5)
    return ButcherTableau(
        "radau_iia9",
        A=A,
        b=b,
        c=c,
        order=9,
        reference="Ehle (1969); Hairer & Wanner II, Sec. IV.5 (coefficients computed "
        "from the collocation conditions at 50 digits); radau.f (Hairer & Wanner).",
        # adaptive through the RADAU5-style filtered estimate (odenet._radau), of order h⁶
        estimator="radau5",
        estimator_order=5,
    )


@register("lobatto_iiia4", "lobatto3a4")
def _lobatto_iiia4() -> ButcherTableau:
    """Three-stage Lobatto IIIA (collocation), order 4, A-stable, stiffly accurate."""
    return ButcherTableau(
        "lobatto_iiia4",
        A=[[0, 0, 0], ["5/24", "1/3", "-1/24"], ["1/6", "2/3", "1/6"]],
        b=["1/6", "2/3", "1/6"],
        c=[0, "1/2", 1],
        order=4,
        reference="Ehle (1969); Hairer & Wanner II, Table IV.5.7.",
    )


@register("lobatto_iiic4", "lobatto3c4")
def _lobatto_iiic4() -> ButcherTableau:
    """Three-stage Lobatto IIIC, order 4, L-stable, stiffly accurate."""
    return ButcherTableau(
        "lobatto_iiic4",
        A=[["1/6", "-1/3", "1/6"], ["1/6", "5/12", "-1/12"], ["1/6", "2/3", "1/6"]],
        b=["1/6", "2/3", "1/6"],
        c=[0, "1/2", 1],
        order=4,
        reference="Chipman, BIT 11 (1971); Hairer & Wanner II, Table IV.5.10.",
    )


# The constants of the DIRK pairs' error safety κ (odenet._newton.error_safety), chosen
# from measured cells of the stiff set (Robertson, HIRES, Oregonator, Van der Pol μ = 1000,
# Brusselator; studies/benchmarks/stiff_accuracy_results.md) so that the pair ends within
# 10x of RADAU5's error at the same rtol; the relaxation oscillators (Van der Pol, the
# Oregonator) need the largest.  TR-BDF2: S = 150 left Van der Pol and the Oregonator at
# rtol 1e-3 at 11x and 20x, S = 500 at 4.9x and 8.7x for 1.46x the f-evaluations.
# sdirk4: S = 2 passed the visible set but left two hold-out cells (Kaps rtol 1e-6,
# Prothero-Robinson λ = -1e4 rtol 1e-3) at 23x and 34x; S = 6 at 3.5x and 1.6x, every
# visible and hold-out cell at rtol 1e-3 and 1e-6 within 4.4x, for 1.0-3.1x (median 1.3x)
# the f-evaluations (studies/benchmarks/stiff_holdout_results.md).
KVAERNO3_SAFETY = 12.0
KVAERNO5_SAFETY = 40.0
SDIRK4_SAFETY = 6.0
TRBDF2_SAFETY = 500.0


@register("trbdf2", "tr_bdf2")
def _trbdf2() -> ButcherTableau:
    """TR-BDF2 as an ESDIRK: trapezoid to `t + γh` then BDF2; order 2, L-stable.

    `γ = 2 − √2`; the embedded solution is Hosea & Shampine's third-order one.
    """
    d = "(1 - sqrt(2)/2)"  # γ/2
    w = "sqrt(2)/4"
    return ButcherTableau(
        "trbdf2",
        A=[[0, 0, 0], [d, d, 0], [w, w, d]],
        b=[w, w, d],
        c=[0, "2 - sqrt(2)", 1],
        order=2,
        b_hat=[f"(1 - {w})/3", f"(3*{w} + 1)/3", f"{d}/3"],
        embedded_order=3,
        reference="Bank et al., IEEE Trans. CAD 4 (1985); ESDIRK form and embedded pair: "
        "Hosea & Shampine, Appl. Numer. Math. 20 (1996).",
        error_safety=TRBDF2_SAFETY,
    )


def _kvaerno3_coefficients() -> dict[str, Exact]:
    # γ ≈ 0.4358665215 is the root of 6γ³ − 18γ² + 9γ − 1 = 0 that makes R(∞) = 0,
    # written in closed (trigonometric) form; the other coefficients are Kværnø's
    # formulas in γ.  Built as sympy expressions once (parsing the long strings
    # repeatedly is what would be slow).
    g = _exact("1 + sqrt(2)*cos(acos(2*sqrt(2)/3)/3 - 2*pi/3)")
    return {
        "g": g,
        "a31": (-4 * g**2 + 6 * g - 1) / (4 * g),
        "a32": (-2 * g + 1) / (4 * g),
        "a41": (6 * g - 1) / (12 * g),
        "a42": -1 / ((24 * g - 12) * g),
        "a43": (-6 * g**2 + 6 * g - 1) / (6 * g - 3),
    }


@register("kvaerno3")
def _kvaerno3() -> ButcherTableau:
    """Kværnø's 3(2) ESDIRK: 4 stages, stiffly accurate, L-stable, explicit first stage."""
    k = _kvaerno3_coefficients()
    g = k["g"]
    return ButcherTableau(
        "kvaerno3",
        A=[
            [0, 0, 0, 0],
            [g, g, 0, 0],
            [k["a31"], k["a32"], g, 0],
            [k["a41"], k["a42"], k["a43"], g],
        ],
        b=[k["a41"], k["a42"], k["a43"], g],
        c=[0, 2 * g, 1, 1],
        order=3,
        b_hat=[k["a31"], k["a32"], g, 0],
        embedded_order=2,
        error_safety=KVAERNO3_SAFETY,
        reference="Kværnø, BIT 44 (2004); formulas in γ as diffrax/_solver/kvaerno3.py "
        "(γ here is the exact root, diffrax truncates it to 11 digits).",
    )


@register("kvaerno5")
def _kvaerno5() -> ButcherTableau:
    """Kværnø's 5(4) ESDIRK: 7 stages, stiffly accurate, L-stable (γ = 0.26)."""
    g = "0.26"
    rows = [
        [g],
        ["0.13", 0.84033320996790809],
        [0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
        [0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
        [0.13855640231268224, 0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676],
        [
            0.13659751177640291,
            0,
            -0.05496908796538376,
            -0.04118626728321046,
            0.62993304899016403,
            0.06962479448202728,
        ],
    ]
    A = [[0] * 7] + [list(r) + [g] + [0] * (6 - len(r)) for r in rows]
    c = [0, "0.52", 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1, 1]
    return ButcherTableau(
        "kvaerno5",
        A=A,
        b=A[6],
        c=c,
        order=5,
        b_hat=[*A[5][:6], 0],
        embedded_order=4,
        error_safety=KVAERNO5_SAFETY,
        reference="Kværnø, BIT 44 (2004); coefficients (17 digits) as "
        "diffrax/_solver/kvaerno5.py and OrdinaryDiffEq.jl (sdirk_tableaus.jl).",
    )


@register("sdirk4", "hairer4", "sdirk54")
def _sdirk4() -> ButcherTableau:
    """Hairer & Wanner's 5-stage SDIRK, order 4, embedded order 3, L-stable, γ = 1/4.

    Written with an explicit stage 0 at ``c = 0``, which is ``f(t0, y0)`` (free: the
    loop has it), so that the embedded solution can weigh it: the solution and the
    five implicit stages are Hairer & Wanner's; the embedded weights are HW's ``b̂``
    plus ``δ = (−1/16, 67/320, 163/640, −45/128, 0, −1/20)``, which is orthogonal to
    every order condition up to order 3 (so ``b̂`` keeps order 3) and has the smallest
    order-4 defects for its weight on ``f(t0, y0)`` (HW's defects 0.0249 in norm, ours
    0.0256: the estimate on smooth problems is HW's).  With HW's ``b̂`` no stage sits at
    the step's start (``c₁ = 1/4``), so a jump of ``f`` in the first quarter of a step
    was invisible to the solution and to the error estimate alike (rtol 1e-7: up to
    5e4·rtol off, status ok, ``studies/benchmarks/doc_claims.py sdirk4_jump``); now the
    jump makes ``f(t0, y0)`` disagree with the stages.  The weight is small because
    filtered by ``(I − hγJ)⁻¹`` that term tends to ``|δ₀|/γ = 1/4`` of the stiff
    components' error in ``y0`` as ``hλ → −∞``: with ``δ₀ = −1/4`` (weight 1) it
    tripled sdirk4's f-evaluations on Prothero–Robinson at rtol 1e-3
    (``stiff_holdout.py``)."""
    b = ["25/24", "-49/48", "125/16", "-85/12", "1/4"]
    implicit = [
        ["1/4", 0, 0, 0, 0],
        ["1/2", "1/4", 0, 0, 0],
        ["17/50", "-1/25", "1/4", 0, 0],
        ["371/1360", "-137/2720", "15/544", "1/4", 0],
        b,
    ]
    return ButcherTableau(
        "sdirk4",
        A=[[0] * 6] + [[0, *row] for row in implicit],
        b=[0, *b],
        c=[0, "1/4", "3/4", "11/20", "1/2", 1],
        order=4,
        b_hat=["-1/16", "1381/960", "149/1920", "855/128", "-85/12", "-1/20"],
        embedded_order=3,
        error_safety=SDIRK4_SAFETY,
        reference="Hairer & Wanner II, Table IV.6.5 (SDIRK4); the embedded weights on "
        "f(t0, y0) are odenet's (see the docstring).",
    )
