"""Linear stability of Runge–Kutta schemes, from the tableau.

On the test equation `y' = λy` one step of a Runge–Kutta method multiplies the
state by the *stability function* `R(z)`, `z = hλ`:

    R(z) = 1 + z bᵀ (I − zA)⁻¹ 𝟙 = det(I − zA + z 𝟙bᵀ) / det(I − zA) = P(z) / Q(z).

`P` and `Q` are polynomials of degree ≤ s; they are recovered exactly (to
round-off) by evaluating the two determinants at the `s + 1` roots of unity and
inverting the discrete Fourier transform.  The stability region is
`{z : |R(z)| ≤ 1}`; intervals on the real and imaginary axes are the boundary
points where `|Q|² − |P|²` changes sign, found as polynomial roots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import odenet
from odenet.tableaus import ButcherTableau


def _tab(tableau) -> ButcherTableau:
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

    Returns
    -------
    P, Q : ndarray [s + 1] float64 each (trailing zeros kept; P[0] = Q[0] = 1).
    """
    tab = _tab(tableau)
    s = tab.stages
    A = np.asarray(tab.A, dtype=float)
    E = A - np.outer(np.ones(s), tab.b)
    # On a circle of radius ρ the scaled coefficients a_k ρ^k are balanced (a_k ~ 1/k!).
    rho = max(1.0, s / 3.0)
    w = rho * np.exp(2j * np.pi * np.arange(s + 1) / (s + 1))
    eye = np.eye(s)
    # A degree-≤s polynomial is its own DFT on s+1 roots of unity.
    p_vals = np.linalg.det(eye - w[:, None, None] * E)
    q_vals = np.linalg.det(eye - w[:, None, None] * A)
    # fft(v)_k = Σ_m v_m e^{-2πimk/(s+1)}: (s+1) a_k ρ^k for v_m = Σ_j a_j w_m^j.
    Ps = np.fft.fft(p_vals).real / (s + 1)
    Qs = np.fft.fft(q_vals).real / (s + 1)
    scale = max(np.abs(Ps).max(), np.abs(Qs).max())
    Ps[np.abs(Ps) < 1e-13 * scale] = 0.0  # round-off of coefficients that are exactly 0
    Qs[np.abs(Qs) < 1e-13 * scale] = 0.0
    k = np.arange(s + 1)
    return Ps / rho**k, Qs / rho**k


def _boundary(gain: np.ndarray, norm: np.ndarray, direction: float, absnorm: np.ndarray) -> float:
    """First point along the ray `x = direction · r, r ≥ 0` where `gain(x) < 0`.

    `gain` and `norm` are real polynomials (ascending coefficients):
    `gain = |Q|² − |P|²` (≥ 0 ⇔ |R| ≤ 1), `norm = |Q|² + |P|²` for a
    relative tolerance; `absnorm` the same from absolute coefficients, so
    coefficients that cancel to round-off are set to zero.  Returns the
    distance `r` of the boundary (`inf` if the whole ray is stable).
    """
    poly = np.polynomial.polynomial
    gain = np.where(np.abs(gain) < 1e-12 * absnorm, 0.0, gain)  # cancelled to round-off
    g = poly.Polynomial(gain)
    nrm = poly.Polynomial(norm)
    roots = g.roots() if g.degree() > 0 and np.any(gain[1:] != 0) else np.array([])
    r = roots[np.abs(roots.imag) <= 1e-7 * (1 + np.abs(roots.real))].real * direction
    # 0 is always a boundary candidate (R(0) = 1); multiple roots there scatter by ~eps^(1/m)
    cands = np.unique(np.concatenate([[0.0], r[r > 1e-6]]))
    cands.sort()

    def unstable(rr: float) -> bool:
        x = direction * rr
        return g(x) < -1e-10 * nrm(x)

    for i, r0 in enumerate(cands):
        r1 = cands[i + 1] if i + 1 < len(cands) else 2 * r0 + 1.0
        if unstable(0.5 * (r0 + r1)):
            return float(r0)
    # beyond the last root the sign is that of the leading coefficient
    nz = np.nonzero(gain)[0]
    if len(nz) and gain[nz[-1]] * direction ** nz[-1] < 0:
        return float(cands[-1])
    return float("inf")


def _absnorm(P, Q):
    return _poly_mul(np.abs(Q), np.abs(Q)) + _poly_mul(np.abs(P), np.abs(P))


def _poly_mul(a, b):
    return np.convolve(a, b)  # ascending coefficients, no trimming


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
    P, Q = stability_polynomials(tableau)
    gain = _poly_mul(Q, Q) - _poly_mul(P, P)
    norm = _poly_mul(Q, Q) + _poly_mul(P, P)
    return -_boundary(gain, norm, -1.0, _absnorm(P, Q))


def imaginary_stability_interval(tableau: str | ButcherTableau) -> float:
    """Half-length `y ≥ 0` of the imaginary stability interval `[-iy, iy]`.

    `0` for Euler (no imaginary interval), `2√2` for classical RK4, `inf` for
    A-stable methods.  (`|R(iy)| = |R(-iy)|` for real tableaux.)
    """
    P, Q = stability_polynomials(tableau)
    k = np.arange(len(P))
    ip = P * (1j) ** k  # P(iy) as a polynomial in y
    im = P * (-1j) ** k
    iq = Q * (1j) ** k
    iqm = Q * (-1j) ** k
    qq = _poly_mul(iq, iqm).real
    pp = _poly_mul(ip, im).real
    return _boundary(qq - pp, qq + pp, 1.0, _absnorm(P, Q))


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
