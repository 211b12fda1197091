"""Linear stability of Runge–Kutta schemes, from the tableau.

On the test equation `y' = λy` one step of a Runge–Kutta method multiplies the
state by the *stability function* `R(z)`, `z = hλ`:

    R(z) = 1 + z bᵀ (I − zA)⁻¹ 𝟙 = det(I − zA + z 𝟙bᵀ) / det(I − zA) = P(z) / Q(z).

`P` and `Q` are polynomials of degree ≤ s; they are computed from the exact
tableau (`Q` the reversed characteristic polynomial of `A`, `P = Q · R` from the
series `R = 1 + Σ bᵀA^{k−1}𝟙 z^k`), in rational arithmetic for rational tableaus
and in 60-digit arithmetic otherwise.  The stability region is
`{z : |R(z)| ≤ 1}`; intervals on the real and imaginary axes are the boundary
points where `|Q|² − |P|²` changes sign, found by exact real-root isolation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import mpmath
import numpy as np
import sympy
import torch

import odenet
from odenet._registry import multistep
from odenet.stability._errors import StabilityInputError
from odenet.tableaus import ButcherTableau


def _tab(tableau) -> ButcherTableau:
    if isinstance(tableau, str) and multistep(tableau) is not None:
        # solve(method="bdf2") runs it, and "unknown method" sent the user nowhere
        raise StabilityInputError(
            f"{tableau!r} is a multistep method, not a Runge–Kutta tableau: its stability "
            "is in odenet.stability.multistep (real_stability_interval, a_alpha, "
            "stability_roots, boundary_locus, is_zero_stable)."
        )
    return odenet.tableau(tableau)


def stability_function(tableau: str | ButcherTableau) -> Callable[[np.ndarray], np.ndarray]:
    """The linear stability function `R(z)` of a Runge–Kutta method.

    Parameters
    ----------
    tableau : str or ButcherTableau (explicit or implicit).

    Returns
    -------
    callable `R(z)`: complex numpy array of any shape -> complex array of the
    same shape, `R(z) = det(I − zA + z𝟙bᵀ) / det(I − zA)` (`inf` at poles).

    Examples
    --------
    >>> import numpy as np, odenet
    >>> from odenet.stability import stability_function
    >>> R = stability_function(odenet.tableau("rk4"))
    >>> np.round(R(np.array([-1.0, -2.785])).real, 4)   # 1 + z + z²/2 + z³/6 + z⁴/24
    array([0.375 , 0.9996])
    """
    tab = _tab(tableau)
    A = np.asarray(tab.A, dtype=complex)
    E = A - np.outer(np.ones(tab.stages), tab.b)  # I − z(A − 𝟙bᵀ) = I − zA + z𝟙bᵀ
    eye = np.eye(tab.stages)

    def R(z):
        z = np.asarray(z, dtype=complex)
        zz = z[..., None, None]
        num = np.linalg.det(eye - zz * E)
        den = np.linalg.det(eye - zz * A)
        with np.errstate(divide="ignore", invalid="ignore"):
            return num / den

    R.tableau = tab  # type: ignore[attr-defined]
    return R


def stability_polynomials(tableau: str | ButcherTableau) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (ascending powers of `z`) of `P` and `Q` with `R = P / Q`.

    Computed from the exact tableau (`A_exact`, `b_exact`), not from samples of
    `R`: `Q(z) = det(I − zA)` is the reversed characteristic polynomial of `A`
    (Samuelson–Berkowitz, division-free) and `P = Q · R` truncated to degree `s`,
    with the power series `R(z) = 1 + Σ_k bᵀA^{k−1}𝟙 z^k` (for explicit methods
    `Q = 1` and `P` is that series).  Rational tableaus are handled in exact
    rational arithmetic, others (surds, long decimals) in 50+ digit arithmetic;
    the float64 values are the correctly rounded coefficients, so small
    high-order coefficients (Chebyshev / RKC methods with long real intervals)
    keep their digits.

    Returns
    -------
    P, Q : ndarray [s + 1] float64 each (trailing zeros kept; P[0] = Q[0] = 1).
    """
    P, Q, _ = _exact_polynomials(_tab(tableau))
    return np.array([float(v) for v in P]), np.array([float(v) for v in Q])


def _berkowitz(M: list, one, absolute: bool = False) -> list:
    """`[c_0, …, c_n]` with `det(I − zM) = Σ c_k z^k` (`c_0 = 1`), division-free.

    The Samuelson–Berkowitz recursion over leading principal submatrices.  With
    `absolute=True` (and `|M|` passed) every subtraction becomes an addition, which
    bounds the sum of the absolute values of the terms of each coefficient.
    """
    sign = 1 if absolute else -1
    zero = one - one
    c = [one]
    for r in range(len(M)):
        row = M[r][:r]
        v = [M[i][r] for i in range(r)]
        t = [one, sign * M[r][r]]
        for _ in range(r):
            t.append(sign * sum((row[j] * v[j] for j in range(r)), zero))
            v = [sum((M[i][j] * v[j] for j in range(r)), zero) for i in range(r)]
        c = [
            sum((t[i - j] * c[j] for j in range(max(0, i - r - 1), min(i, r) + 1)), zero)
            for i in range(r + 2)
        ]
    return c


def _series_times(Q: list, m: list) -> list:
    """First `len(Q)` coefficients of the product of two power series."""
    return [sum(Q[j] * m[k - j] for j in range(k + 1)) for k in range(len(Q))]


def _moments(A: list, b: list, one) -> list:
    """`[1, bᵀ𝟙, bᵀA𝟙, …, bᵀA^{s−1}𝟙]`: the Taylor coefficients of `R` up to `z^s`."""
    s = len(b)
    zero = one - one
    v = [one] * s
    out = [one]
    for _ in range(s):
        out.append(sum((b[i] * v[i] for i in range(s)), zero))
        v = [sum((A[i][j] * v[j] for j in range(s)), zero) for i in range(s)]
    return out


_POLY_CACHE: dict = {}
_MP_DIGITS = 60


def _exact_polynomials(tab: ButcherTableau) -> tuple[list, list, Fraction]:
    """`P`, `Q` as lists of `Fraction` (ascending) and a relative round-off level.

    Exact for tableaus with rational coefficients (round-off level 0).  Otherwise
    the coefficients are computed in `_MP_DIGITS`-digit arithmetic; a coefficient
    is set to 0 when it is below the tableau's own precision (its decimals' digits,
    or `_MP_DIGITS` for surds) times the sum of the absolute values of its terms,
    and the returned level is that precision.
    """
    key = (tab.A_exact, tab.b_exact)
    if key in _POLY_CACHE:
        return _POLY_CACHE[key]
    entries = [x for row in tab.A_exact for x in row] + list(tab.b_exact)
    if all(isinstance(x, sympy.Rational) for x in entries):

        def fr(x):
            return Fraction(int(x.p), int(x.q))

        A = [[fr(x) for x in row] for row in tab.A_exact]
        b = [fr(x) for x in tab.b_exact]
        Q = _berkowitz(A, Fraction(1))
        P = _series_times(Q, _moments(A, b, Fraction(1)))
        out = (P, Q, Fraction(0))
    else:
        floats = [x for x in entries if isinstance(x, sympy.Float)]
        digits = min([_MP_DIGITS] + [int(x._prec * math.log10(2)) for x in floats])
        level = mpmath.mpf(10) ** (3 - digits)
        with mpmath.workdps(_MP_DIGITS + 10):
            A = [[mpmath.mpf(sympy.N(x, _MP_DIGITS + 10)) for x in row] for row in tab.A_exact]
            b = [mpmath.mpf(sympy.N(x, _MP_DIGITS + 10)) for x in tab.b_exact]
            one = mpmath.mpf(1)
            Q = _berkowitz(A, one)
            P = _series_times(Q, _moments(A, b, one))
            absA = [[abs(x) for x in row] for row in A]
            Qa = _berkowitz(absA, one, absolute=True)
            Pa = _series_times(Qa, _moments(absA, [abs(x) for x in b], one))
            P = [_mp_fraction(v) if abs(v) > level * a else Fraction(0) for v, a in zip(P, Pa)]
            Q = [_mp_fraction(v) if abs(v) > level * a else Fraction(0) for v, a in zip(Q, Qa)]
            out = (P, Q, _mp_fraction(level))
    if len(_POLY_CACHE) > 256:
        _POLY_CACHE.clear()
    _POLY_CACHE[key] = out
    return out


def _mp_fraction(v) -> Fraction:
    """The exact binary value of an mpmath number as a `Fraction`."""
    sign, man, exp, _ = mpmath.mpf(v)._mpf_
    value = Fraction(int(man)) * Fraction(2) ** int(exp)
    return -value if sign else value


def _dyadic(v: Fraction, bits: int = 256) -> Fraction:
    """`v` rounded to a `bits`-bit binary mantissa (keeps root isolation fast when
    the exact rationals of a many-stage tableau have huge denominators)."""
    if v == 0:
        return v
    e = v.numerator.bit_length() - v.denominator.bit_length()
    shift = Fraction(2) ** (bits - e)
    return Fraction(round(v * shift)) / shift


def _boundary(gain: list, norm: list, direction: int, absnorm: list, level: Fraction) -> float:
    """First point along the ray `x = direction · r, r ≥ 0` where `gain(x) < 0`.

    `gain` and `norm` are real polynomials with `Fraction` coefficients
    (ascending): `gain = |Q|² − |P|²` (≥ 0 ⇔ |R| ≤ 1), `norm = |Q|² + |P|²` for a
    relative tolerance; `absnorm` the same from absolute coefficients, so gain
    coefficients below `level · absnorm` (round-off of an inexact tableau) are
    set to zero.  The real roots of `gain` are isolated exactly (sympy, rational
    arithmetic, with multiplicities) and the sign between them is evaluated
    exactly.  Returns the distance `r` of the boundary (`inf` if the whole ray
    is stable).
    """
    gain = [_dyadic(g) if abs(g) > level * a else Fraction(0) for g, a in zip(gain, absnorm)]
    norm = [_dyadic(v) for v in norm]
    x = sympy.Symbol("x")

    def poly(c):
        return sympy.Poly(
            [sympy.Rational(v.numerator, v.denominator) for v in reversed(c)], x, domain="QQ"
        )

    g, nrm = poly(gain), poly(norm)
    if g.is_zero:
        return float("inf")  # |R| = 1 on the whole ray
    eps = sympy.Rational(1, 10**12)
    cands = {sympy.Integer(0)}
    for (lo, hi), _mult in g.intervals(eps=eps):
        r = direction * (lo + hi) / 2
        if r > 0:
            cands.add(r)
    cands = sorted(cands)
    tol = max(sympy.Rational(1, 10**10), 1000 * sympy.Rational(level.numerator, level.denominator))

    def unstable(rr) -> bool:
        xx = direction * rr
        return g.eval(xx) < -tol * nrm.eval(xx)

    for i, r0 in enumerate(cands):
        r1 = cands[i + 1] if i + 1 < len(cands) else 2 * r0 + 1
        if unstable((r0 + r1) / 2):
            return float(r0)
    return float("inf")


def _poly_mul(a: list, b: list) -> list:
    """Product of two polynomials (ascending coefficients, no trimming)."""
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                out[i + j] += x * y
    return out


def _absnorm(P: list, Q: list) -> list:
    """Coefficientwise bound on the terms of `|Q|² ± |P|²` (on either axis)."""
    aP, aQ = [abs(v) for v in P], [abs(v) for v in Q]
    return [q + p for q, p in zip(_poly_mul(aQ, aQ), _poly_mul(aP, aP))]


def _abs2_on_imaginary_axis(P: list) -> list:
    """`|P(iy)|²` as a real polynomial in `y` (ascending `Fraction` coefficients)."""
    re = [(-1) ** (k // 2) * v if k % 2 == 0 else Fraction(0) for k, v in enumerate(P)]
    im = [(-1) ** (k // 2) * v if k % 2 == 1 else Fraction(0) for k, v in enumerate(P)]
    return [a + b for a, b in zip(_poly_mul(re, re), _poly_mul(im, im))]


def real_stability_interval(tableau: str | ButcherTableau) -> float:
    """Left end `x < 0` of the real stability interval `[x, 0]`.

    The largest `x` with `|R(ξ)| ≤ 1` for all `ξ ∈ [x, 0]`; `-inf` if the
    whole negative real axis is stable (e.g. A-stable methods).  Euler: `-2`;
    classical RK4: `≈ -2.785`.

    Examples
    --------
    >>> import odenet
    >>> from odenet.stability import real_stability_interval
    >>> round(real_stability_interval(odenet.tableau("rk4")), 4)
    -2.7853
    >>> real_stability_interval(odenet.tableau("backward_euler"))
    -inf
    """
    P, Q, level = _exact_polynomials(_tab(tableau))
    QQ, PP = _poly_mul(Q, Q), _poly_mul(P, P)
    gain = [q - p for q, p in zip(QQ, PP)]
    norm = [q + p for q, p in zip(QQ, PP)]
    return -_boundary(gain, norm, -1, _absnorm(P, Q), level)


def imaginary_stability_interval(tableau: str | ButcherTableau) -> float:
    """Half-length `y ≥ 0` of the imaginary stability interval `[-iy, iy]`.

    `0` for Euler (no imaginary interval), `2√2` for classical RK4, `inf` for
    A-stable methods.  (`|R(iy)| = |R(-iy)|` for real tableaux.)
    """
    P, Q, level = _exact_polynomials(_tab(tableau))
    qq, pp = _abs2_on_imaginary_axis(Q), _abs2_on_imaginary_axis(P)
    gain = [q - p for q, p in zip(qq, pp)]
    norm = [q + p for q, p in zip(qq, pp)]
    return _boundary(gain, norm, 1, _absnorm(P, Q), level)


def r_infinity(tableau: str | ButcherTableau) -> complex:
    """`R(∞) = lim_{|z|→∞} R(z)` (`inf` for explicit methods)."""
    P, Q = stability_polynomials(tableau)
    dp = np.nonzero(P)[0].max()
    dq = np.nonzero(Q)[0].max()
    if dp > dq:
        return complex("inf")
    if dp < dq:
        return 0.0 + 0.0j
    return complex(P[dp] / Q[dq])


def is_a_stable(tableau: str | ButcherTableau) -> bool:
    """A-stability: `|R(z)| ≤ 1` on the whole closed left half-plane.

    By the maximum principle: no pole of `R` in `Re z ≤ 0` and `|R(iy)| ≤ 1`
    on the imaginary axis (explicit methods are never A-stable).

    Examples
    --------
    >>> import odenet
    >>> from odenet.stability import is_a_stable
    >>> is_a_stable(odenet.tableau("radau_iia5")), is_a_stable(odenet.tableau("dopri5"))
    (True, False)
    """
    P, Q = stability_polynomials(tableau)
    if np.nonzero(P)[0].max() > np.nonzero(Q)[0].max():
        return False
    qr = np.polynomial.polynomial.polyroots(np.trim_zeros(Q, "b")) if np.any(Q[1:]) else []
    if any(np.real(r) <= 1e-12 for r in qr):
        return False
    return imaginary_stability_interval(tableau) == float("inf")


def is_l_stable(tableau: str | ButcherTableau) -> bool:
    """L-stability: A-stable and `R(∞) = 0` (stiff components are damped in one step)."""
    return is_a_stable(tableau) and abs(r_infinity(tableau)) < 1e-12


@dataclass(frozen=True)
class StabilityRegion:
    """`|R(z)|` on a grid of the complex plane, ready for a contour plot at level 1.

    Attributes
    ----------
    method : str
    x : ndarray [nx] real parts; y : ndarray [ny] imaginary parts.
    abs_R : ndarray [ny, nx], |R(x + iy)| (inf at poles).
    """

    method: str
    x: np.ndarray
    y: np.ndarray
    abs_R: np.ndarray

    @property
    def stable(self) -> np.ndarray:
        """Boolean mask `[ny, nx]` of `|R| ≤ 1`."""
        return self.abs_R <= 1.0

    def area(self) -> float:
        """Area of the stable set inside the grid (grid units²)."""
        dx = (self.x[-1] - self.x[0]) / (len(self.x) - 1)
        dy = (self.y[-1] - self.y[0]) / (len(self.y) - 1)
        return float(self.stable.sum() * dx * dy)


def stability_region(
    tableau: str | ButcherTableau,
    *,
    re: tuple[float, float] = (-5.0, 2.0),
    im: tuple[float, float] = (-4.0, 4.0),
    n: int = 401,
) -> StabilityRegion:
    """Sample `|R(z)|` on an `n × n` grid of `re × im` (data for a plot).

    Examples
    --------
    >>> from odenet.stability import stability_region
    >>> region = stability_region("rk4")          # |R(z)| on a grid of the complex plane
    >>> region.abs_R.shape, round(region.area(), 1)
    ((401, 401), 12.7)
    """
    tab = _tab(tableau)
    x = np.linspace(re[0], re[1], n)
    y = np.linspace(im[0], im[1], n)
    Z = x[None, :] + 1j * y[:, None]
    return StabilityRegion(tab.name, x, y, np.abs(stability_function(tab)(Z)))


def empirical_stability_function(tableau: str | ButcherTableau, z: np.ndarray) -> np.ndarray:
    """`R(z)` measured by one real step of the integrator on `y' = zy` (h = 1).

    The complex scalar equation is stepped as the real 2-vector system
    `(u, v)' = (a u − b v, b u + a v)` with `z = a + ib`, `y_0 = (1, 0)`,
    all `z` at once via `odenet.step(..., batched=True)`.
    """
    z = np.asarray(z, dtype=complex)
    a = torch.as_tensor(z.real.reshape(-1), dtype=torch.float64)
    b = torch.as_tensor(z.imag.reshape(-1), dtype=torch.float64)

    def f(t, y):
        u, v = y[:, 0], y[:, 1]
        return torch.stack([a * u - b * v, b * u + a * v], dim=-1)

    y0 = torch.zeros(len(a), 2, dtype=torch.float64)
    y0[:, 0] = 1.0
    with torch.no_grad():
        y1 = odenet.step(f, 0.0, y0, 1.0, _tab(tableau), batched=True)
    return (y1[:, 0] + 1j * y1[:, 1]).numpy().reshape(z.shape)
