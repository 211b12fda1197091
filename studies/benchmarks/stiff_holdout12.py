"""A twelfth stiff hold-out set for the must-hold of issue 14: two semi-discretised
PDEs in none of the other sets — a string with Kelvin–Voigt damping, whose spectrum
runs from lightly damped oscillation through a critically damped (defective) mode to
stiff relaxation, and the Kuramoto–Sivashinsky equation, whose spectrum has an unstable
band beside a stiff tail of rates to −6.9e3 and whose long waves grow and saturate
through the nonlinear term:

========================  ===========================================================
``kelvin_voigt``          ``u_tt = c² u_xx + ν u_xxt`` on [0, π], u = 0 at both ends,
                          63 interior points (second differences, h = π/64): state
                          ``(u, u_t)``, 126 components; c = 4, ν = 2c/√μ₂₀ = 0.4165 so
                          that mode 20 of the discrete Laplacian (eigenvalue −μ₂₀) is
                          critically damped — a double eigenvalue −c√μ₂₀ with one
                          eigenvector, a Jordan block in the Jacobian.  Modes below
                          it oscillate (mode 1: ω ≈ 4, damping ν/2 ≈ 0.21); above it
                          each has a stiff root −νμ (to −650) and a slow one near
                          −c²/ν = −38.4.  u(0) a plucked string (triangle, peak 1 at
                          x = 0.3π), u_t(0) = 0; [0, 6].  A step long against a low
                          mode's period damps it (L-stable methods), a filtered
                          estimate may not see that; a defective mode grows like
                          ``t e^{λt}`` and a per-component Newton or estimate that
                          assumes a diagonal spectrum is wrong there.  Closed form:
                          per sine mode, the exponential of its 2 × 2 block.
``kuramoto_sivashinsky``  ``u_t = −u_xx − u_xxxx − (u²/2)_x``, periodic on [0, 22),
                          64 points, Fourier spectral (differentiation matrices; the
                          odd derivative's Nyquist mode dropped): linear rates
                          ``k² − k⁴`` from +0.22 (k = 2π/22·{1, 2, 3} grow) to
                          −6.9e3; u(0) = cos θ (1 + sin θ), θ = 2πx/22 (Kassam &
                          Trefethen's initial state, scaled to the length 22 that
                          studies of KS chaos use),
                          [0, 30]: the unstable modes grow and the energy cascades
                          into travelling cells (|u| up to 2.7).  A solver that damps
                          or phase-shifts the growing band changes where the cells
                          form; an early error reaches the end about 50× larger (y0
                          knocked by 1e-8 moves it by 4.6e-7).  ``Σu`` is an invariant
                          (every differentiation matrix has zero column sums).
                          Reference: scipy Radau at rtol 1e-12, checked against BDF.
========================  ===========================================================

Both written here from the formulas above (our code; c, ν, the grid and the span of
``kelvin_voigt`` ours; ``kuramoto_sivashinsky``'s length 22 and initial state are the
common ones of the literature, its grid and span ours).  Floors 1e-3 for every
component.

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout12.py --check-refs
    python studies/benchmarks/stiff_holdout12.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout12.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout12.jsonl``; the committed table is
``stiff_holdout12_results.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.linalg import expm

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_closed_form, _with_scipy_reference
from stiff_holdout11 import _matvec

OUT = Path(__file__).parent / "results" / "stiff_holdout12.jsonl"

KELVIN_VOIGT = {"n": 63, "c": 4.0, "critical_mode": 20, "peak": 0.3}


def kelvin_voigt_laplacian() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(L, S, μ)``: the second-difference matrix on the 63 interior points of
    [0, π] (Dirichlet ends), its orthonormal sine eigenvectors ``S`` (columns) and
    ``μ_k = (4/h²) sin²(kh/2)`` with ``L S = −S diag(μ)``."""
    n = KELVIN_VOIGT["n"]
    h = np.pi / (n + 1)
    L = np.diag(-2.0 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    L /= h * h
    k = np.arange(1, n + 1)
    x = h * np.arange(1, n + 1)
    S = np.sqrt(2.0 / (n + 1)) * np.sin(np.outer(x, k))
    mu = 4.0 / (h * h) * np.sin(k * h / 2) ** 2
    return L, S, mu


def kelvin_voigt_nu() -> float:
    """ν = 2c/√μ_m: mode m (``critical_mode``) critically damped."""
    _, _, mu = kelvin_voigt_laplacian()
    return 2 * KELVIN_VOIGT["c"] / np.sqrt(mu[KELVIN_VOIGT["critical_mode"] - 1])


def kelvin_voigt_initial() -> np.ndarray:
    n = KELVIN_VOIGT["n"]
    x = np.pi / (n + 1) * np.arange(1, n + 1)
    a = KELVIN_VOIGT["peak"] * np.pi
    u = np.where(x <= a, x / a, (np.pi - x) / (np.pi - a))
    return np.concatenate([u, np.zeros(n)])


def kelvin_voigt(t1: float = 6.0):
    L, _, _ = kelvin_voigt_laplacian()
    n, c2, nu = KELVIN_VOIGT["n"], KELVIN_VOIGT["c"] ** 2, kelvin_voigt_nu()
    A = np.block([[np.zeros((n, n)), np.eye(n)], [c2 * L, nu * L]])

    def rates(t, y, xp):
        return _matvec(A, y, xp)

    return _with_closed_form(
        rates, kelvin_voigt_initial(), t1, kelvin_voigt_exact, "kelvin_voigt",
        f"u_tt = c² u_xx + ν u_xxt, Dirichlet, 63 points, c = 4, ν = {nu:.4g} (mode 20 "
        f"critically damped), plucked, [0, {t1:g}]",
    )  # fmt: skip


def kelvin_voigt_exact(t) -> np.ndarray:
    """``(u, u_t)`` of ``kelvin_voigt`` at times ``t`` [m] → [m, 126]: each sine mode
    ``q_k`` moved by ``exp(t [[0, 1], [−c²μ_k, −νμ_k]])``."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    _, S, mu = kelvin_voigt_laplacian()
    n, c2, nu = KELVIN_VOIGT["n"], KELVIN_VOIGT["c"] ** 2, kelvin_voigt_nu()
    y0 = kelvin_voigt_initial()
    q0, p0 = S.T @ y0[:n], S.T @ y0[n:]
    out = np.empty((t.size, 2 * n))
    for i, ti in enumerate(t):
        q, p = np.empty(n), np.empty(n)
        for k in range(n):
            E = expm(ti * np.array([[0.0, 1.0], [-c2 * mu[k], -nu * mu[k]]]))
            q[k], p[k] = E @ np.array([q0[k], p0[k]])
        out[i] = np.concatenate([S @ q, S @ p])
    return out


KS = {"n": 64, "length": 22.0}


def ks_wavenumbers(odd: bool) -> np.ndarray:
    """``k = 2πj/22`` in numpy's FFT order; the Nyquist mode 0 for an odd derivative."""
    n, length = KS["n"], KS["length"]
    k = 2 * np.pi / length * np.fft.fftfreq(n, 1.0 / n)
    if odd:
        k[n // 2] = 0.0
    return k


def ks_derivative(m: int) -> np.ndarray:
    """The real matrix of ``∂^m/∂x^m`` (Fourier spectral, 64 points)."""
    n = KS["n"]
    k = ks_wavenumbers(odd=m % 2 == 1)
    E = np.fft.fft(np.eye(n), axis=0)
    return np.real(np.fft.ifft((1j * k[:, None]) ** m * E, axis=0))


def ks_initial() -> np.ndarray:
    n, length = KS["n"], KS["length"]
    th = 2 * np.pi * np.arange(n) / n
    del length  # θ = 2πx/L at x_j = jL/n
    return np.cos(th) * (1 + np.sin(th))


def ks_matrices() -> tuple[np.ndarray, np.ndarray]:
    """``(A, D1)``: the linear part ``A = −(D2 + D4)`` and the first derivative on
    ``KS["n"]`` points; the field is ``A u − D1 (u²)/2``."""
    return -(ks_derivative(2) + ks_derivative(4)), ks_derivative(1)


def kuramoto_sivashinsky(t1: float = 30.0):
    A, D1 = ks_matrices()

    def rates(t, y, xp):
        return _matvec(A, y, xp) - 0.5 * _matvec(D1, y * y, xp)

    return _with_scipy_reference(
        rates, ks_initial(), t1, "kuramoto_sivashinsky",
        f"u_t = −u_xx − u_xxxx − (u²/2)_x, periodic [0, 22), 64-point Fourier spectral, "
        f"u(0) = cos θ (1 + sin θ), [0, {t1:g}]",
    )  # fmt: skip


HOLDOUT12 = {"kelvin_voigt": kelvin_voigt, "kuramoto_sivashinsky": kuramoto_sivashinsky}
main = stiff_holdout.register(HOLDOUT12, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
