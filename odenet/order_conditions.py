"""Butcher's order conditions, checked exactly on a `odenet.ButcherTableau`.

A Runge–Kutta method has order `p` iff for every rooted tree `τ` with
`|τ| ≤ p` nodes its elementary weight equals the inverse density,

    Φ(τ) = Σ_i b_i g_i(τ) = 1 / γ(τ),

where `g(•) = 𝟙`, `g([τ_1, …, τ_m]) = Π_k (A g(τ_k))` (elementwise product of
stage vectors) and `γ(•) = 1`, `γ([τ_1, …, τ_m]) = |τ| Π_k γ(τ_k)`
(Hairer, Nørsett & Wanner I, Sec. II.2; Butcher, *Numerical Methods for ODEs*,
Sec. 31).  A continuous extension `b(θ)` has order `q` iff
`Σ_i b_i(θ) g_i(τ) = θ^|τ| / γ(τ)` for every `|τ| ≤ q` and every `θ` — a
polynomial identity, checked coefficient by coefficient.

Arithmetic.  Tableaus with rational coefficients are checked in exact rational
arithmetic (`fractions.Fraction`, no rounding at all).  Surds (`sqrt(6)`,
trigonometric roots) are evaluated with mpmath at 60 significant digits and a
residual counts as zero below `1e-45` times its scale — 15 digits of margin on
either side.  Coefficients published as truncated decimals (DOP853 to 30 digits,
Tsit5, Kvaerno5 to 16–17) are checked to the precision they were published with:
the tolerance is `100·|τ|·10^(-digits)·Φ_abs(τ)`, where `Φ_abs` is the elementary
weight of `|A|, |b|` (a bound on the accumulated rounding).

Trees are nested tuples: a tree is the sorted tuple of its children, the single
node `•` is `()`.  They are generated once per order and cached
(1, 1, 2, 4, 9, 20, 48, 115, 286, 719 trees of order 1 … 10).
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache
from typing import Any, NamedTuple

import mpmath
import sympy

from odenet._errors import InputError
from odenet.tableaus import ButcherTableau
from odenet.tableaus import tableau as _tableau

Tree = tuple  # a tree is the sorted tuple of its child trees; the leaf is ()

_SURD_DPS = 60  # working precision for irrational coefficients
_SURD_DIGITS = 45  # residuals below 10^-45 (relative) count as zero


# --- rooted trees --------------------------------------------------------------------


@cache
def trees(order: int) -> tuple[Tree, ...]:
    """All rooted trees with `order` nodes, each once, in a canonical order.

    Parameters
    ----------
    order : int ≥ 1

    Returns
    -------
    tuple of trees (nested tuples; `()` is the single node).
    """
    if order < 1:
        return ()
    if order == 1:
        return ((),)
    out = []
    for forest in _forests(order - 1, (order - 1, len(trees(order - 1)) - 1)):
        out.append(tuple(forest))
    return tuple(out)


def _forests(total: int, max_key: tuple[int, int]):
    """Multisets of trees with `total` nodes, as lists non-increasing in (size, index)."""
    if total == 0:
        yield []
        return
    size_max, index_max = max_key
    for size in range(min(total, size_max), 0, -1):
        ts = trees(size)
        top = index_max if size == size_max else len(ts) - 1
        for idx in range(top, -1, -1):
            for rest in _forests(total - size, (size, idx)):
                yield [ts[idx], *rest]


def trees_up_to(order: int) -> list[Tree]:
    """All rooted trees with at most `order` nodes, by increasing order."""
    return [t for p in range(1, order + 1) for t in trees(p)]


@cache
def tree_order(tree: Tree) -> int:
    """Number of nodes `|τ|`."""
    return 1 + sum(tree_order(ch) for ch in tree)


@cache
def density(tree: Tree) -> int:
    """The density `γ(τ) = |τ| Π γ(children)`; the order condition is Φ(τ) = 1/γ(τ)."""
    return tree_order(tree) * math.prod(density(ch) for ch in tree)


def tree_str(tree: Tree) -> str:
    """Butcher's bracket notation: `τ` for the leaf, `[τ, [τ]]` otherwise."""
    if not tree:
        return "τ"
    return "[" + ", ".join(tree_str(ch) for ch in tree) + "]"


# --- arithmetic on tableau coefficients ------------------------------------------------


class _Field(NamedTuple):
    """Numbers of one tableau in the arithmetic used to check it."""

    A: list  # [S, S]
    bs: list  # weight vectors, each [S]
    absA: list
    absbs: list
    rel_tol: Any  # 0 for exact rationals


def _digits(values) -> int | None:
    """Smallest number of significant digits among published decimals; None if none."""
    digits = None
    for v in values:
        for f in sympy.sympify(v).atoms(sympy.Float):
            d = int(f._prec * math.log10(2))
            digits = d if digits is None else min(digits, d)
    return digits


def _make_field(A_exact, bs_exact) -> _Field:
    values = [x for r in A_exact for x in r] + [x for b in bs_exact for x in b]
    values = [sympy.sympify(x) for x in values]
    if all(isinstance(x, sympy.Rational) for x in values):

        def conv(x):
            x = sympy.sympify(x)
            return Fraction(int(x.p), int(x.q))

        tol = 0
    else:
        digits = _digits(values)
        # no more digits than the working precision can resolve
        digits = _SURD_DIGITS if digits is None else min(digits, _SURD_DIGITS)
        with mpmath.workdps(_SURD_DPS):
            tol = mpmath.mpf(10) ** (-digits)

        def conv(x):
            with mpmath.workdps(_SURD_DPS):
                return mpmath.mpf(str(sympy.N(x, _SURD_DPS)))

    A = [[conv(x) for x in r] for r in A_exact]
    bs = [[conv(x) for x in b] for b in bs_exact]
    return _Field(A, bs, [[abs(x) for x in r] for r in A], [[abs(x) for x in b] for b in bs], tol)


def _check(F: _Field, k: int, t: Tree, g: dict, gabs: dict, target: Fraction):
    """(residual, ok) of `Σ_i bs[k]_i g_i(τ) = target`."""
    b = F.bs[k]
    S = len(b)
    val = sum((b[i] * g[t][i] for i in range(S)), b[0] * 0)
    if not F.rel_tol:
        res = val - target
        return res, res == 0
    tgt = mpmath.mpf(target.numerator) / target.denominator
    res = val - tgt
    scale = sum((F.absbs[k][i] * gabs[t][i] for i in range(S)), abs(tgt))
    return res, abs(res) <= 100 * tree_order(t) * F.rel_tol * scale


def _stage_vectors(A, S: int, max_order: int, cache_: dict) -> dict:
    """`g(τ)` for every tree up to `max_order`: dict tree -> list [S]."""
    one = A[0][0] * 0 + 1 if S else 1
    for p in range(1, max_order + 1):
        for t in trees(p):
            if t in cache_:
                continue
            g = [one] * S
            for ch in t:
                key = ("A", ch)  # A g(child) is shared by every tree with that child
                if key not in cache_:
                    gc = cache_[ch]
                    cache_[key] = [
                        sum((A[i][j] * gc[j] for j in range(S)), one * 0) for i in range(S)
                    ]
                Agc = cache_[key]
                g = [g[i] * Agc[i] for i in range(S)]
            cache_[t] = g
    return cache_


class OrderCondition(NamedTuple):
    """One order condition: `residual = Φ(τ) − 1/γ(τ)` (exact Fraction or mpmath mpf)."""

    tree: Tree
    residual: Any

    @property
    def order(self) -> int:
        return tree_order(self.tree)

    @property
    def gamma(self) -> int:
        return density(self.tree)


def _weights(tab: ButcherTableau, weights: str):
    if weights == "b":
        return tab.b_exact
    if weights == "b_hat":
        if tab.b_hat_exact is None:
            raise InputError(f"tableau {tab.name!r} has no embedded weights `b_hat`.")
        return tab.b_hat_exact
    if weights == "b_hat2":
        if getattr(tab, "b_hat2_exact", None) is None:
            raise InputError(f"tableau {tab.name!r} has no second embedded weights `b_hat2`.")
        return tab.b_hat2_exact
    raise InputError(f"`weights` must be 'b', 'b_hat' or 'b_hat2', got {weights!r}.")


def _conditions(tab: ButcherTableau, weights: str, order: int):
    """Yield (tree, residual, ok) for every tree up to `order`."""
    F = _make_field(tab.A_exact, [_weights(tab, weights)])
    S = tab.stages
    with mpmath.workdps(_SURD_DPS):
        g = _stage_vectors(F.A, S, order, {})
        gabs = _stage_vectors(F.absA, S, order, {}) if F.rel_tol else {}
        for t in trees_up_to(order):
            res, ok = _check(F, 0, t, g, gabs, Fraction(1, density(t)))
            yield t, res, ok


def order_conditions(
    tab: ButcherTableau | str, order: int | None = None, *, weights: str = "b"
) -> list[OrderCondition]:
    """Residuals `Φ(τ) − 1/γ(τ)` of all order conditions up to `order`.

    Parameters
    ----------
    tab : ButcherTableau or method name
    order : int, optional
        Largest tree order; defaults to the tableau's declared order (its
        `embedded_order` / `embedded_order2` for the embedded weights).
    weights : {"b", "b_hat", "b_hat2"}
        Which weight vector to check (the propagated or an embedded solution).

    Returns
    -------
    list of OrderCondition `(tree, residual)`; the residual is an exact
    `fractions.Fraction` for rational tableaus, an mpmath number otherwise.
    """
    tab = _tableau(tab)
    if order is None:
        order = {
            "b": tab.order,
            "b_hat": tab.embedded_order,
            "b_hat2": getattr(tab, "embedded_order2", None),
        }.get(weights)
    _weights(tab, weights)  # validates `weights`
    return [OrderCondition(t, r) for t, r, _ in _conditions(tab, weights, order)]


def verify_order(tab: ButcherTableau | str, *, weights: str = "b", max_order: int = 10) -> int:
    """The largest `p` such that every order condition with `|τ| ≤ p` holds.

    Exact for rational tableaus; to 45 digits for surds; to the published
    precision for decimal coefficients (see the module docstring).  Stops at the
    first order with a violated condition, so a method of order `p` costs the
    trees up to `p + 1` (DOP853: 719 trees).

    Parameters
    ----------
    tab : ButcherTableau or method name
    weights : {"b", "b_hat", "b_hat2"}
    max_order : int
        Give up (return `max_order`) beyond this.

    Returns
    -------
    int (0 if even `Σ b_i = 1` fails).

    Examples
    --------
    >>> from odenet.order_conditions import verify_order
    >>> verify_order("rk4"), verify_order("dopri5"), verify_order("dopri5", weights="b_hat")
    (4, 5, 4)
    """
    tab = _tableau(tab)
    F = _make_field(tab.A_exact, [_weights(tab, weights)])
    S = tab.stages
    g: dict = {}
    gabs: dict = {}
    with mpmath.workdps(_SURD_DPS):
        for p in range(1, max_order + 1):
            _stage_vectors(F.A, S, p, g)
            if F.rel_tol:
                _stage_vectors(F.absA, S, p, gabs)
            for t in trees(p):
                if not _check(F, 0, t, g, gabs, Fraction(1, density(t)))[1]:
                    return p - 1
    return max_order


def stage_order(tab: ButcherTableau | str, max_order: int = 10) -> int:
    """The stage order: largest `q` with `B(q)` and `C(q)`.

    `B(q)`: `Σ_i b_i c_i^(k−1) = 1/k` and `C(q)`: `Σ_j a_ij c_j^(k−1) = c_i^k / k`
    for all stages `i` and `k ≤ q`.  Explicit methods have stage order 1; Gauss and Radau IIA
    with `s` stages have stage order `s`.
    """
    tab = _tableau(tab)
    F = _make_field(tab.A_exact, [tab.b_exact])
    S = tab.stages
    with mpmath.workdps(_SURD_DPS):
        zero = F.A[0][0] * 0
        c = [sum((F.A[i][j] for j in range(S)), zero) for i in range(S)]
        b = F.bs[0]
        for q in range(1, max_order + 1):
            rows = [(F.A[i], c[i] ** q / q, F.absA[i]) for i in range(S)]
            rows.append((b, zero + 1 / mpmath.mpf(q) if F.rel_tol else Fraction(1, q), F.absbs[0]))
            for row, rhs, abs_row in rows:
                lhs = sum((row[j] * c[j] ** (q - 1) for j in range(S)), zero)
                if F.rel_tol:
                    scale = sum((abs_row[j] for j in range(S)), zero) + 1
                    if abs(lhs - rhs) > 100 * q * F.rel_tol * scale:
                        return q - 1
                elif lhs != rhs:
                    return q - 1
    return max_order


def verify_dense_order(tab: ButcherTableau | str, max_order: int = 10) -> int:
    """Order of the tableau's own continuous extension `b(θ)`.

    The largest `q` with `Σ_i b_i(θ) g_i(τ) = θ^|τ| / γ(τ)` identically in `θ`
    for all `|τ| ≤ q`, where the stages include the dense output's extra stages
    (`A` extended by the rows `extra_A`).  With `b_i(θ) = Σ_m P[i, m] θ^(m+1)`
    this is `Σ_i P[i, m] g_i(τ) = δ_{m+1, |τ|} / γ(τ)` for every power `m`.

    Returns
    -------
    int; `-1` when the tableau has no own dense output.
    """
    tab = _tableau(tab)
    d = tab.dense
    if d is None:
        return -1
    S, E = tab.stages, d.n_extra
    N = S + E
    zero = sympy.Integer(0)
    A_ext = [list(r) + [zero] * E for r in tab.A_exact]
    if E:
        A_ext += [list(r)[:N] + [zero] * (N - len(r)) for r in d.extra_A_exact]
    degree = len(d.P_exact[0])
    # one weight vector per power θ^(m+1): the column P[:, m]
    F = _make_field(A_ext, [[d.P_exact[i][m] for i in range(N)] for m in range(degree)])
    g: dict = {}
    gabs: dict = {}
    with mpmath.workdps(_SURD_DPS):
        for p in range(1, max_order + 1):
            _stage_vectors(F.A, N, p, g)
            if F.rel_tol:
                _stage_vectors(F.absA, N, p, gabs)
            for t in trees(p):
                for m in range(degree):
                    target = Fraction(1, density(t)) if m + 1 == p else Fraction(0)
                    if not _check(F, m, t, g, gabs, target)[1]:
                        return p - 1
    return max_order
