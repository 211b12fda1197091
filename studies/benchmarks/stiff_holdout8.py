"""An eighth stiff hold-out set for the must-hold of issue 14: five problems in none of
the other sets, each with a way to fail that they do not have — a stiff direction that
rotates (frozen eigenvalues that say nothing), a stiffness switched on and off by an
exponential diode law, a drug whose fast binding holds its target in quasi-equilibrium,
a reaction–diffusion equation close to its fold, and impacts on a stiff Hertzian floor:

========================  ===========================================================
``rotating_stiff``        ``y' = U(ωt)ᵀ D U(ωt) y``, ``U`` the rotation by ``ωt``,
                          ω = 50, ``D = diag(−0.5, −1e5)``, y(0) = (1, 0), [0, 5]:
                          the stiff direction turns 40 times.  ``z = U y`` solves
                          ``z' = (ωS + D) z`` (``S`` the rotation generator), so
                          ``y(t) = U(ωt)ᵀ exp(t(ωS + D)) y(0)`` in closed form (the
                          rotating-frame problem of Hairer & Wanner II, Sec. IV.15).
``rectifier``             A half-wave rectifier: ``C V' = I_s (e^{(V_s − V)/(n V_T)} − 1)
                          − V/R``, ``V_s = 10 sin(100πt)`` V, C = 100 µF, R = 1 kΩ,
                          I_s = 1e-12 A, n V_T = 0.04 V, V(0) = 0, [0, 0.1] s (five
                          cycles): the diode's conductance, up to ~1e5 s⁻¹ over C,
                          switches on near each crest and off for the rest.
``tmdd``                  Target-mediated drug disposition (Mager & Jusko 2001): drug
                          C, free target R, complex RC (nM, h); k_el 0.1, k_on 100,
                          k_off 0.1, k_int 0.05, k_syn 1, k_deg 0.2; a 100 nM bolus on
                          the target's steady state R = 5, [0, 200] h: binding ~1e4
                          h⁻¹ against elimination ~0.05 h⁻¹.
``bratu_heat``            ``u_t = u_xx + δ e^u`` on [0, 1], u = 0 at both ends, 100
                          interior points, δ = 3.4 (the fold is at δ ≈ 3.5138), u(0, x)
                          = 0, [0, 10]: diffusion eigenvalues to −4e4 and a slow
                          approach to the lower steady branch near the fold.
``hertz_bounce``          A ball dropped from 1 m onto a Hertzian floor with
                          Hunt–Crossley damping: ``x'' = −g + k δ^{3/2} (1 − α x')``
                          for ``δ = −x > 0``, k = 1e7 (per unit mass), α = 0.05 s/m,
                          [0, 3] s: free flight (a zero Jacobian) between contacts of
                          ~2 ms with frequencies ~1e3 s⁻¹ and a force that is only
                          C¹ at the floor.
========================  ===========================================================

All are written here from the formulas above (our code); the references are scipy Radau
at rtol 1e-12, checked against scipy BDF (``--check-refs``); ``rotating_stiff``'s closed
form is checked against its reference in the set's tests.

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout8.py --check-refs
    python studies/benchmarks/stiff_holdout8.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout8.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout8.jsonl``; the committed table is
``stiff_holdout8_results.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.linalg import expm

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_closed_form, _with_scipy_reference

OUT = Path(__file__).parent / "results" / "stiff_holdout8.jsonl"


def rotating_stiff(omega: float = 50.0, slow: float = -0.5, fast: float = -1e5, t1=5.0):
    def rates(t, y, xp):
        c, s = xp.cos(omega * t), xp.sin(omega * t)
        z0, z1 = c * y[0] - s * y[1], s * y[0] + c * y[1]  # z = U y
        w0, w1 = slow * z0, fast * z1  # D z
        return xp.stack([c * w0 + s * w1, -s * w0 + c * w1])  # Uᵀ D z

    # z = U y solves z' = (ωS + D) z, S = U'Uᵀ/ω = [[0, −1], [1, 0]]: constant coefficients
    M = np.array([[slow, -omega], [omega, fast]])

    def exact(t):
        out = []
        for ti in np.atleast_1d(np.asarray(t, dtype=np.float64)):
            z = expm(ti * M) @ np.array([1.0, 0.0])
            c, s = np.cos(omega * ti), np.sin(omega * ti)
            out.append([c * z[0] + s * z[1], -s * z[0] + c * z[1]])  # y = Uᵀ z
        return np.array(out)

    return _with_closed_form(
        rates, [1.0, 0.0], t1, exact, "rotating_stiff",
        f"rotating stiff direction, ω = {omega:g}, D = diag({slow:g}, {fast:g}), [0, {t1:g}]",
    )  # fmt: skip


def rectifier(t1: float = 0.1):
    C, R, i_s, nvt = 1e-4, 1e3, 1e-12, 0.04

    def rates(t, y, xp):
        source = 10.0 * xp.sin(100 * np.pi * t) + 0 * y[0]
        diode = i_s * (xp.exp((source - y[0]) / nvt) - 1)
        return xp.stack([(diode - y[0] / R) / C])

    return _with_scipy_reference(
        rates, [0.0], t1, "rectifier",
        f"half-wave rectifier, exponential diode, RC = 0.1 s, 50 Hz, [0, {t1:g}] s",
    )  # fmt: skip


TMDD = {"kel": 0.1, "kon": 100.0, "koff": 0.1, "kint": 0.05, "ksyn": 1.0, "kdeg": 0.2}


def tmdd(dose: float = 100.0, t1: float = 200.0):
    k = TMDD

    def rates(t, y, xp):
        c, r, rc = y[0], y[1], y[2]
        bind = k["kon"] * c * r - k["koff"] * rc
        return xp.stack(
            [
                -k["kel"] * c - bind,
                k["ksyn"] - k["kdeg"] * r - bind,
                bind - k["kint"] * rc,
            ]
        )

    return _with_scipy_reference(
        rates, [dose, k["ksyn"] / k["kdeg"], 0.0], t1, "tmdd",
        f"target-mediated drug disposition, {dose:g} nM bolus, [0, {t1:g}] h",
    )  # fmt: skip


def bratu_heat(n: int = 100, delta: float = 3.4, t1: float = 10.0):
    dx = 1.0 / (n + 1)

    def rates(t, y, xp):
        zero = 0 * y[:1]
        u = xp.concatenate([zero, y, zero], 0)
        return (u[2:] - 2 * u[1:-1] + u[:-2]) / dx**2 + delta * xp.exp(y)

    return _with_scipy_reference(
        rates, np.zeros(n), t1, "bratu_heat",
        f"u_t = u_xx + {delta:g} e^u, {n} points, from rest, [0, {t1:g}]",
    )  # fmt: skip


def bratu_steady_maximum(delta: float = 3.4) -> float:
    """``u(1/2)`` on the lower branch of ``u'' + δ e^u = 0``, u(0) = u(1) = 0:
    ``u = −2 ln(cosh((x − ½)θ/2) / cosh(θ/4))`` with ``θ = √(2δ) cosh(θ/4)``, the
    smaller root (fixed-point iteration from 0 converges to it below the fold)."""
    theta = 0.0
    for _ in range(200):
        theta = np.sqrt(2 * delta) * np.cosh(theta / 4)
    return float(2 * np.log(np.cosh(theta / 4)))


def hertz_bounce(k: float = 1e7, alpha: float = 0.05, t1: float = 3.0):
    g = 9.81

    def rates(t, y, xp):
        x, v = y[0], y[1]
        depth = xp.where(x < 0, -x, 0 * x)
        return xp.stack([v, -g + k * depth**1.5 * (1 - alpha * v)])

    return _with_scipy_reference(
        rates, [1.0, 0.0], t1, "hertz_bounce",
        f"ball on a Hertzian floor (k = {k:g}, Hunt–Crossley α = {alpha:g}), [0, {t1:g}] s",
    )  # fmt: skip


HOLDOUT8 = {
    "rotating_stiff": rotating_stiff,
    "rectifier": rectifier,
    "tmdd": tmdd,
    "bratu_heat": bratu_heat,
    "hertz_bounce": hertz_bounce,
}
main = stiff_holdout.register(HOLDOUT8, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
