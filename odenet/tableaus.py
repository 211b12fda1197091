"""Runge–Kutta methods as data: the :class:`ButcherTableau` and the named methods.

A method is a frozen tableau ``(A, b, c)`` with an optional embedded weight vector
``b_hat`` (for error estimation) and an optional continuous extension
(:class:`DenseOutput`).  Coefficients are kept exactly (sympy rationals or
surds) so order conditions can be checked in exact arithmetic; the float64 numpy
arrays ``A``, ``b``, ``c`` are what the integrator turns into tensors.

Structural flags (explicit, diagonally implicit, FSAL, stiffly accurate) are
*derived* from the coefficients, never declared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import sympy

from odenet._errors import InvalidTableauError, UnknownMethodError

Exact = Any  # a sympy expression


def _exact(x: Any) -> Exact:
    """Turn a coefficient (int, Fraction, '35/384', '1 - sqrt(2)/2', float) into sympy."""
    if isinstance(x, sympy.Basic):
        return x
    if isinstance(x, float | np.floating):
        return sympy.Float(float(x), 17)
    return sympy.sympify(str(x), rational=True)


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
    return float(sympy.N(x, 30))


def _is_zero(x: Exact) -> bool:
    if isinstance(x, sympy.Float):
        return abs(float(x)) < 1e-15
    return sympy.simplify(x) == 0


def _equal(x: Exact, y: Exact) -> bool:
    return _is_zero(x - y)


@dataclass(frozen=True, eq=False)
class DenseOutput:
    """A continuous extension ``y(t0 + θh) = y0 + h Σ_i b_i(θ) k_i`` of a step.

    ``b_i(θ) = Σ_m P[i, m] θ^(m+1)`` for ``m = 0 .. degree-1``.  Stages beyond the
    tableau's own ``s`` are *extra stages* evaluated only for steps that hold an
    output time: ``k_{s+e} = f(t0 + extra_c[e] h, y0 + h Σ_j extra_A[e, j] k_j)``.

    Attributes
    ----------
    P : ndarray, shape [s + E, degree]
    extra_A : ndarray, shape [E, s + E] or None
    extra_c : ndarray, shape [E] or None
    order : int
        Order of the interpolant (the error at any θ is ``O(h^(order+1))``).
    """

    P: np.ndarray
    order: int
    extra_A: np.ndarray | None = None
    extra_c: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "P", np.array([[_to_float(_exact(x)) for x in r] for r in self.P]))
        if self.extra_A is not None:
            object.__setattr__(
                self, "extra_A", np.array([[_to_float(_exact(x)) for x in r] for r in self.extra_A])
            )
            object.__setattr__(
                self, "extra_c", np.array([_to_float(_exact(x)) for x in self.extra_c])
            )

    @property
    def n_extra(self) -> int:
        return 0 if self.extra_A is None else len(self.extra_A)

    def weights(self, theta: np.ndarray) -> np.ndarray:
        """``b_i(θ)`` for each θ: shape ``[len(theta), s + E]``."""
        theta = np.atleast_1d(np.asarray(theta, dtype=float))
        powers = theta[:, None] ** np.arange(1, self.P.shape[1] + 1)[None, :]
        return powers @ self.P.T


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    """A Runge–Kutta method ``k_i = f(t + c_i h, y + h Σ_j A_ij k_j)``, ``y1 = y + h Σ b_i k_i``.

    Parameters
    ----------
    name : str
    A : [s, s] coefficients; ints, fractions, strings such as ``"35/384"`` or
        ``"1/2 - sqrt(3)/6"``, sympy numbers, or floats (then checked to 1e-12).
    b : [s] weights of the propagated solution.
    c : [s] nodes; must equal the row sums of ``A``.
    order : int
        Classical order ``p`` (local error ``O(h^(p+1))``).
    b_hat : [s], optional
        Embedded weights; ``h Σ (b_i - b_hat_i) k_i`` estimates the local error.
    embedded_order : int, optional
        Order of the embedded solution (required with ``b_hat``).
    dense : DenseOutput, optional
        The method's own continuous extension; Hermite interpolation otherwise.
    reference : str
        Where the coefficients come from.

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
    A_exact: tuple = field(init=False, repr=False)
    b_exact: tuple = field(init=False, repr=False)
    c_exact: tuple = field(init=False, repr=False)
    b_hat_exact: tuple | None = field(init=False, repr=False)

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
            if not _equal(sum(A[i], sympy.Integer(0)), c[i]):
                raise InvalidTableauError(
                    f"tableau {self.name!r}: row {i} of `A` sums to {sum(A[i])}, but c[{i}] = "
                    f"{c[i]}; the nodes must be the row sums of A (c_i = Σ_j A_ij)."
                )
        if not _equal(sum(b, sympy.Integer(0)), 1):
            raise InvalidTableauError(
                f"tableau {self.name!r}: the weights `b` sum to {sum(b)}, not 1 (consistency)."
            )
        b_hat = None
        if self.b_hat is not None:
            b_hat = _exact_vector(self.b_hat, "b_hat")
            if len(b_hat) != s:
                raise InvalidTableauError(
                    f"tableau {self.name!r}: `b_hat` has {len(b_hat)} entries, expected {s}."
                )
            if not _equal(sum(b_hat, sympy.Integer(0)), 1):
                raise InvalidTableauError(
                    f"tableau {self.name!r}: the embedded weights `b_hat` sum to {sum(b_hat)}, "
                    "not 1."
                )
            if self.embedded_order is None:
                raise InvalidTableauError(
                    f"tableau {self.name!r}: `b_hat` given without `embedded_order`."
                )
        if self.dense is not None and self.dense.P.shape[0] != s + self.dense.n_extra:
            raise InvalidTableauError(
                f"tableau {self.name!r}: dense output has {self.dense.P.shape[0]} rows, "
                f"expected s + extra stages = {s + self.dense.n_extra}."
            )
        set_(self, "A_exact", A)
        set_(self, "b_exact", b)
        set_(self, "c_exact", c)
        set_(self, "b_hat_exact", b_hat)
        set_(self, "A", np.array([[_to_float(x) for x in r] for r in A]))
        set_(self, "b", np.array([_to_float(x) for x in b]))
        set_(self, "c", np.array([_to_float(x) for x in c]))
        set_(self, "b_hat", None if b_hat is None else np.array([_to_float(x) for x in b_hat]))

    # --- derived structure ---------------------------------------------------------
    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def is_explicit(self) -> bool:
        """``A`` strictly lower triangular: every stage is an explicit formula."""
        return bool(np.all(np.triu(self.A) == 0))

    @property
    def is_diagonally_implicit(self) -> bool:
        """``A`` lower triangular with some non-zero diagonal entry (DIRK / SDIRK / ESDIRK)."""
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
        """Last row of ``A`` equals ``b`` (so ``y1`` is the last stage value)."""
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
        """Has an embedded error estimate, so ``solve`` can choose steps."""
        return self.b_hat is not None

    @property
    def error_order(self) -> int:
        """Order ``q`` used by step-size controllers: ``min(order, embedded_order)``."""
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
    """Decorator: register a zero-argument factory of a tableau under ``name``."""

    def deco(factory: Callable[[], ButcherTableau]):
        _REGISTRY[name] = cache(factory)
        for a in aliases:
            _ALIASES[a] = name
        return factory

    return deco


def methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_REGISTRY)


def tableau(name: str | ButcherTableau) -> ButcherTableau:
    """The :class:`ButcherTableau` registered under ``name`` (a tableau passes through).

    Raises
    ------
    UnknownMethodError
        If ``name`` is not registered; the message lists the valid names.
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


@register("trapezoid", "crank_nicolson", "trapezoidal")
def _trapezoid() -> ButcherTableau:
    """The trapezoidal rule (Crank–Nicolson), order 2, A-stable, explicit first stage."""
    return ButcherTableau(
        "trapezoid",
        A=[[0, 0], ["1/2", "1/2"]],
        b=["1/2", "1/2"],
        c=[0, 1],
        order=2,
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
