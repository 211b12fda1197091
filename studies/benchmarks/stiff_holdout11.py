"""An eleventh stiff hold-out set for the must-hold of issue 14: five problems in none of
the other sets, each with a way to fail quietly that they do not have — forcing that a
whole spectrum of relaxation rates must track, a dispersive wave whose modes sit on the
imaginary axis, a stiff diagonal system seen through a nonlinear change of basis, a
biochemical limit cycle with a 1e6 equilibration, and an epidemic held on a threshold
by a fast-switching intervention (a regularised sliding mode):

========================  ===========================================================
``curtiss_hirschfelder``  Curtiss & Hirschfelder's ``y' = −50 (y − cos t)`` (PNAS 38
                          (1952)) as a vector: ``y' = −M (y − Q c(t))``, ``M = Q Λ Q``,
                          Λ = diag(50, 5e3, 5e5), ``c = (cos t, cos 4t, cos 20t)``, Q
                          the Householder reflection along (1, 2, 3), y(0) = 0,
                          [0, 10]: every component tracks forcing through every rate
                          (a layer of width 2e-6 at the start, then 32 periods of
                          ``cos 20t`` under the rate 5e5).  A method whose stages
                          have low stage order loses order on forced stiff modes
                          (Prothero–Robinson's order reduction), and an estimate of
                          the classical order then underestimates: status ok, error
                          above the tolerance.  Closed form.
``airy``                  The linear Airy (linearised KdV) equation ``u_t = −u_xxx``
                          on the periodic [0, 2π), 64 points, Fourier spectral
                          (symbols ``i k³``, k = −31 … 31, the Nyquist mode dropped):
                          a real skew-symmetric system with eigenvalues ``±i k³`` up
                          to ±29 791i, ``u(0) = Σ_{k=1}^{31} e^{−k/4} cos(kx + k²)``,
                          [0, 0.01] (mode 31 turns 47 times).  The modes never
                          decay; an L-stable step long against a mode's period
                          damps it (``R(ihk³) → 0``) and an estimate filtered by
                          ``(I − hγJ)⁻¹`` may not see it.  Mode 31's amplitude,
                          4.3e-4, is about the tolerance at rtol 1e-3 where u
                          crosses zero (floor 1e-3): its loss is an error of ~0.4
                          there.  Closed form (each mode turns by ``e^{i k³ t}``);
                          ``‖u‖`` and ``Σu`` are invariants.
``krogh``                 Krogh's device (after Krogh, JACM 20 (1973); β and z(0)
                          ours): decoupled Bernoulli equations ``z_i' = −β_i z_i +
                          z_i²``, β = (1e5, 1e3, 1, −0.5), z(0) = (1, 1, 0.5, −0.01),
                          seen as ``y = U z``, U = I − J/2 (4 × 4, symmetric
                          orthogonal), [0, 8]: every component carries every rate,
                          the Jacobian ``U(−B + 2 diag z)U`` changes along the
                          solution, and the fourth mode leaves its unstable state
                          z = 0 (rate +0.5) for z = −0.5 and is half-way at the end
                          (z₄(8) = −0.264): an error made early is amplified ~e⁴
                          and the end value records it.  Closed form
                          ``z_i = β_i z_i0 e^{−β_i t}/(β_i − z_i0 (1 − e^{−β_i t}))``.
``tyson``                 Tyson's cdc2–cyclin cell-cycle model (Tyson, PNAS 88
                          (1991); the parameters of BioModels BIOMD0000000005 as we
                          took them, not checked against the file): six species, k1 =
                          0.015, k2 = 0, k3 = 200, k4 = 180, k4' = 0.018, k5 = 0,
                          k6 = 1, k7 = 0.6, k8 = 1e6, k9 = 1e3, y(0) = (C2, CP, pM, M,
                          Y, YP) = (0, 0.75, 0.25, 0, 0, 0), [0, 100]: the
                          phosphorylation equilibrium C2 ⇄ CP at rate ~1e6 under a
                          limit cycle of period ~35 driven by M's autocatalysis
                          (``k4 M²``).  A phase error grows linearly along a limit
                          cycle; a solver that cuts a spike's peak short (M rises a
                          hundredfold, to 0.2) shifts every later one, status ok.
                          Total cdc2 ``C2 + CP + pM + M = 1`` is conserved.
``sir_switching``         SIR with a threshold-triggered intervention: ``S' = −β(1 −
                          ρc) S I − ν c S``, ``I' = β(1 − ρc) S I − γ I``, ``R' = γ I``,
                          ``V' = ν c S``, ``τ c' = σ((I − I*)/δ) − c``, σ(x) = (1 +
                          tanh x)/2, β = 0.5, γ = 0.1, ρ = 0.9, ν = 0.02, I* = 0.01,
                          δ = 1e-5, τ = 1e-4, y(0) = (0.999, 1e-3, 0, 0, 0), [0, 150]:
                          the epidemic grows to I* and is held there (a sliding mode
                          of the switch, regularised: loop eigenvalues ≈ −9.9e3 and
                          −100 … −40) while vaccination drains S, until S reaches
                          γ/β = 0.2 and it dies out.  A solver that chatters across
                          the switch with long steps biases the mean of c — the
                          vaccinated share V and the end of the sliding phase —
                          status ok.  ``S + I + R + V = 1`` is conserved.
========================  ===========================================================

All are written here from the formulas above (our code; the rates and forcings of
``curtiss_hirschfelder``, the data of ``airy`` and ``krogh`` and all of
``sir_switching``'s parameters are ours; ``tyson`` oscillates with period 35.6 here,
as the set's tests check).  ``curtiss_hirschfelder``, ``airy`` and
``krogh`` are measured against their closed forms (checked against scipy Radau at rtol
1e-12 by ``--check-refs`` and in the set's tests); ``tyson`` and ``sir_switching``
against scipy Radau at rtol 1e-12, checked against scipy BDF.  Floors 1e-3 for every
component.

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout11.py --check-refs
    python studies/benchmarks/stiff_holdout11.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout11.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout11.jsonl``; the committed table is
``stiff_holdout11_results.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_closed_form, _with_scipy_reference

OUT = Path(__file__).parent / "results" / "stiff_holdout11.jsonl"


def _householder(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return np.eye(v.size) - 2 * np.outer(v, v) / (v @ v)


def _matvec(A: np.ndarray, y, xp):
    if xp.__name__ == "torch":
        return xp.as_tensor(A, dtype=y.dtype) @ y
    return A @ y


CURTISS = {"rates": (50.0, 5e3, 5e5), "omegas": (1.0, 4.0, 20.0)}


def curtiss_matrices() -> tuple[np.ndarray, np.ndarray]:
    """``(M, Q)`` of ``curtiss_hirschfelder``: ``M = Q Λ Q``, Q the Householder
    reflection along (1, 2, 3)."""
    Q = _householder([1.0, 2.0, 3.0])
    return Q @ np.diag(CURTISS["rates"]) @ Q, Q


def curtiss_hirschfelder(t1: float = 10.0):
    M, Q = curtiss_matrices()
    om = CURTISS["omegas"]

    def rates(t, y, xp):
        c = xp.stack([xp.cos(w * t + 0 * y[0]) for w in om])
        return -_matvec(M, y - _matvec(Q, c, xp), xp)

    return _with_closed_form(
        rates, np.zeros(3), t1, curtiss_exact, "curtiss_hirschfelder",
        f"y' = −M(y − Q cos(ωt)), rates 50, 5e3, 5e5, ω = 1, 4, 20, rotated, [0, {t1:g}]",
    )  # fmt: skip


def curtiss_exact(t) -> np.ndarray:
    """``y`` of ``curtiss_hirschfelder`` at times ``t`` [m] → [m, 3]: ``y = Q z`` with
    ``z_i = (λ² cos ωt + λω sin ωt)/(λ² + ω²) − λ²/(λ² + ω²) e^{−λt}`` (z(0) = 0)."""
    _, Q = curtiss_matrices()
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None]
    lam, om = np.array(CURTISS["rates"]), np.array(CURTISS["omegas"])
    d = lam**2 + om**2
    z = (lam**2 * np.cos(om * t) + lam * om * np.sin(om * t)) / d - lam**2 / d * np.exp(-lam * t)
    return z @ Q.T


AIRY = {"n": 64, "decay": 4.0}


def airy_wavenumbers() -> np.ndarray:
    """The integer wavenumbers of the 64-point grid (numpy's FFT order), the Nyquist
    mode set to 0."""
    n = AIRY["n"]
    k = np.fft.fftfreq(n, 1.0 / n)
    k[n // 2] = 0.0
    return k


def airy_matrix() -> np.ndarray:
    """The real skew-symmetric matrix of ``u ↦ −u_xxx`` (Fourier spectral, 64 points):
    ``F⁻¹ diag(i k³) F``."""
    n = AIRY["n"]
    k = airy_wavenumbers()
    E = np.fft.fft(np.eye(n), axis=0)
    return np.real(np.fft.ifft(1j * k[:, None] ** 3 * E, axis=0))


def airy_initial() -> np.ndarray:
    n = AIRY["n"]
    x = 2 * np.pi * np.arange(n) / n
    return sum(np.exp(-k / AIRY["decay"]) * np.cos(k * x + k * k) for k in range(1, n // 2))


def airy(t1: float = 0.01):
    A = airy_matrix()

    def rates(t, y, xp):
        return _matvec(A, y, xp)

    return _with_closed_form(
        rates, airy_initial(), t1, airy_exact, "airy",
        f"u_t = −u_xxx, periodic, 64-point Fourier spectral, modes 1 … 31 of amplitude "
        f"e^(−k/4), [0, {t1:g}]",
    )  # fmt: skip


def airy_exact(t) -> np.ndarray:
    """``u`` of ``airy`` at times ``t`` [m] → [m, 64]: every Fourier mode of u(0) turned
    by ``e^{i k³ t}``."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    k = airy_wavenumbers()
    u0 = np.fft.fft(airy_initial())
    return np.real(np.fft.ifft(u0[None] * np.exp(1j * k[None] ** 3 * t[:, None]), axis=1))


KROGH = {"beta": (1e5, 1e3, 1.0, -0.5), "z0": (1.0, 1.0, 0.5, -0.01)}


def krogh_matrix() -> np.ndarray:
    """``U = I − J/2`` (4 × 4): symmetric and orthogonal (``U² = I``)."""
    return np.eye(4) - 0.5 * np.ones((4, 4))


def krogh(t1: float = 8.0):
    U = krogh_matrix()
    beta = KROGH["beta"]

    def rates(t, y, xp):
        z = _matvec(U, y, xp)
        dz = xp.stack([-b * z[i] + z[i] * z[i] for i, b in enumerate(beta)])
        return _matvec(U, dz, xp)

    return _with_closed_form(
        rates, U @ np.array(KROGH["z0"]), t1, krogh_exact, "krogh",
        f"Krogh's device: z_i' = −β_i z_i + z_i², β = 1e5, 1e3, 1, −0.5, seen as y = Uz, "
        f"[0, {t1:g}]",
    )  # fmt: skip


def krogh_exact(t) -> np.ndarray:
    """``y = U z`` of ``krogh`` at times ``t`` [m] → [m, 4]:
    ``z_i = β_i z_i0 e^{−β_i t}/(β_i − z_i0 (1 − e^{−β_i t}))``."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None]
    b, z0 = np.array(KROGH["beta"]), np.array(KROGH["z0"])
    e = np.exp(-b * t)
    z = b * z0 * e / (b - z0 * (1 - e))
    return z @ krogh_matrix().T


TYSON = {
    "k1": 0.015, "k2": 0.0, "k3": 200.0, "k4": 180.0, "k4p": 0.018, "k5": 0.0, "k6": 1.0,
    "k7": 0.6, "k8": 1e6, "k9": 1e3,
}  # fmt: skip


def tyson(t1: float = 100.0):
    k = TYSON

    def rates(t, y, xp):
        C2, CP, pM, M, Y, YP = (y[i] for i in range(6))
        CT = C2 + CP + pM + M
        act = pM * (k["k4p"] + k["k4"] * (M / CT) ** 2)
        bind = k["k3"] * CP * Y
        return xp.stack([
            k["k6"] * M - k["k8"] * C2 + k["k9"] * CP,
            -bind + k["k8"] * C2 - k["k9"] * CP,
            bind - act + k["k5"] * M,
            act - k["k5"] * M - k["k6"] * M,
            k["k1"] - k["k2"] * Y - bind,
            k["k6"] * M - k["k7"] * YP,
        ])  # fmt: skip

    return _with_scipy_reference(
        rates, [0.0, 0.75, 0.25, 0.0, 0.0, 0.0], t1, "tyson",
        f"Tyson's cdc2–cyclin cell cycle (1991), k8 = 1e6, k9 = 1e3, [0, {t1:g}]",
    )  # fmt: skip


SIR = {
    "beta": 0.5, "gamma": 0.1, "rho": 0.9, "nu": 0.02, "istar": 0.01, "delta": 1e-5,
    "tau": 1e-4,
}  # fmt: skip


def sir_switching(t1: float = 150.0):
    p = SIR

    def rates(t, y, xp):
        S, I, c = y[0], y[1], y[4]
        inf = p["beta"] * (1 - p["rho"] * c) * S * I
        vac = p["nu"] * c * S
        on = 0.5 * (1 + xp.tanh((I - p["istar"]) / p["delta"]))
        return xp.stack([-inf - vac, inf - p["gamma"] * I, p["gamma"] * I, vac,
                         (on - c) / p["tau"]])  # fmt: skip

    return _with_scipy_reference(
        rates, [0.999, 1e-3, 0.0, 0.0, 0.0], t1, "sir_switching",
        f"SIR with a threshold-switched intervention (I* = {p['istar']:g}, δ = "
        f"{p['delta']:g}, τ = {p['tau']:g}): a sliding mode, [0, {t1:g}]",
    )  # fmt: skip


HOLDOUT11 = {
    "curtiss_hirschfelder": curtiss_hirschfelder,
    "airy": airy,
    "krogh": krogh,
    "tyson": tyson,
    "sir_switching": sir_switching,
}
main = stiff_holdout.register(HOLDOUT11, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
