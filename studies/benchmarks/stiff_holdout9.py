"""A ninth stiff hold-out set for the must-hold of issue 14: five problems in none of
the other sets, each with a way to fail that they do not have — fourth-order
(hyper)diffusion with an unstable band, an enzyme that runs out of substrate (a
stiffness of 1e3 switched on at a corner of the solution, and a rate with a pole just
below zero), a critically damped oscillator (a defective Jacobian whose entries span
eight decades), a cubic relaxation whose Jacobian vanishes on the slow manifold, and
a heat equation approaching blow-up:

=========================  ==========================================================
``cahn_hilliard``          ``u_t = (u³ − u − ε² u_xx)_xx`` on the periodic [0, 1],
                           64 points, ε = 0.03, u(0, x) = 0.1 + 0.05 cos 2πx
                           + 0.05 cos(8πx + 0.7), [0, 0.5]: spinodal decomposition.
                           The linearisation at u ≈ 0 grows in the band
                           ``k² < 1/ε²`` (rates to ``1/(4ε²) ≈ 280``) and decays
                           like ``−ε² k⁴`` above it (to ≈ −2.4e5 on the grid); the
                           mean of u is conserved exactly by the discretisation.
``substrate_depletion``    Michaelis–Menten with K_m far below the substrate:
                           ``S' = −V S/(K + S)``, ``P' = −S'``, V = 1, K = 1e-3,
                           S(0) = 1, P(0) = 0, [0, 1.01]: near zero-order decay
                           until S ≈ K at t ≈ 1, then first order at −V/K = −1e3
                           (the span ends ten time constants K/V later, at S ≈
                           4.3e-5, so the end value still carries the corner).  The
                           rate has a pole at S = −K: a step that overshoots below
                           it lands on a second root of the stage equations and
                           sends S to −∞.  Closed form by Lambert's W:
                           ``S = K W((S0/K) e^{(S0 − V t)/K})``.  (With K = 1e-6
                           … 1e-4 the solution is so nearly linear before the
                           corner that scipy's Radau, BDF and LSODA all step over
                           the pole at rtol 1e-3, status ok: no local error
                           estimate sees it; not a cell that tells solvers apart.)
``critically_damped``      ``x'' + 2ω x' + ω² x = ω² sin t``, ω = 1e4, x(0) = 1,
                           x'(0) = 0, as the system (x, x'), [0, 10]: the Jacobian
                           ``[[0, 1], [−ω², −2ω]]`` is one Jordan block at −ω with
                           entries from 1 to 1e8, x' reaches ~ω/e in the initial
                           layer.  Closed form (below).
``cubic_relaxation``       ``y' = −k (y − cos t)³``, ``z' = y − z``, k = 1e6,
                           y(0) = 2, z(0) = 0, [0, 10]: an algebraic initial layer
                           (``y − cos t ~ (2kt)^{−1/2}``) onto a manifold on which
                           the stiffness ``3k (y − cos t)²`` falls to ~1e2–1e3 and
                           vanishes where ``sin t`` changes sign; the lag
                           ``(sin t / k)^{1/3}`` is only Hölder there.
``heat_blowup``            ``u_t = u_xx + u²`` on [0, 1], u = 0 at both ends, 50
                           interior points, u(0, x) = 15 sin πx, [0, 0.14]: the
                           solution blows up at t ≈ 0.1423 (max u ≈ 470 at the end,
                           growing like ``1/(T − t)``) under diffusion eigenvalues to
                           −1e4: an L-stable method that takes a step long against
                           the growth damps it (``|R(z)| < 1`` for large positive z
                           too) and may report a tame, wrong solution.
=========================  ==========================================================

All are written here from the formulas above (our code).  ``substrate_depletion`` and
``critically_damped`` are measured against their closed forms (checked against scipy
Radau at rtol 1e-12 by ``--check-refs`` and against tight scipy solves at six times each
in the set's tests); the other three against scipy Radau at rtol 1e-12, checked against
scipy BDF.

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout9.py --check-refs
    python studies/benchmarks/stiff_holdout9.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout9.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout9.jsonl``; the committed table is
``stiff_holdout9_results.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_closed_form, _with_scipy_reference, lambert_w_of_exp

OUT = Path(__file__).parent / "results" / "stiff_holdout9.jsonl"


def cahn_hilliard(n: int = 64, eps: float = 0.03, t1: float = 0.5):
    dx = 1.0 / n
    x = np.arange(n) * dx

    def rates(t, u, xp):
        def lap(z):  # periodic second difference
            return (xp.roll(z, -1, 0) - 2 * z + xp.roll(z, 1, 0)) / dx**2

        return lap(u**3 - u - eps**2 * lap(u))

    u0 = 0.1 + 0.05 * np.cos(2 * np.pi * x) + 0.05 * np.cos(8 * np.pi * x + 0.7)
    return _with_scipy_reference(
        rates, u0, t1, "cahn_hilliard",
        f"Cahn–Hilliard, ε = {eps:g}, {n} periodic points, spinodal decomposition, [0, {t1:g}]",
    )  # fmt: skip


DEPLETION = {"V": 1.0, "K": 1e-3, "S0": 1.0}


def substrate_depletion(t1: float = 1.01, K: float = DEPLETION["K"]):
    V, S0 = DEPLETION["V"], DEPLETION["S0"]

    def rates(t, y, xp):
        rate = V * y[0] / (K + y[0])
        return xp.stack([-rate, rate])

    return _with_closed_form(
        rates, [S0, 0.0], t1, lambda t: depletion_exact(t, K), "substrate_depletion",
        f"Michaelis–Menten running out, V = {V:g}, K = {K:g}, S(0) = {S0:g}, [0, {t1:g}]",
    )  # fmt: skip


def depletion_exact(t, K: float = DEPLETION["K"]) -> np.ndarray:
    """``(S, P)`` of ``substrate_depletion`` (its ``K``) at times ``t`` [m] → [m, 2]:
    ``S + K ln S = S0 + K ln S0 − V t``, so ``S = K W(e^x)`` with
    ``x = ln(S0/K) + (S0 − V t)/K`` (:func:`stiff_holdout4.lambert_w_of_exp`: ``e^x``
    overflows long before the depletion)."""
    V, S0 = DEPLETION["V"], DEPLETION["S0"]
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    S = K * lambert_w_of_exp(np.log(S0 / K) + (S0 - V * t) / K)
    return np.column_stack([S, S0 - S])


DAMPING_OMEGA = 1e4


def critically_damped(omega: float = DAMPING_OMEGA, t1: float = 10.0):
    def rates(t, y, xp):
        x, v = y[0], y[1]
        return xp.stack([v, omega**2 * (xp.sin(t + 0 * x) - x) - 2 * omega * v])

    return _with_closed_form(
        rates, [1.0, 0.0], t1, damped_exact, "critically_damped",
        f"critically damped oscillator, ω = {omega:g}, forced by ω² sin t, [0, {t1:g}]",
    )  # fmt: skip


def damped_exact(t, omega: float = DAMPING_OMEGA) -> np.ndarray:
    """``(x, x')`` of ``critically_damped`` at times ``t`` [m] → [m, 2]: the periodic
    solution ``A sin t + B cos t`` with ``A = ω²(ω² − 1)/(ω² + 1)²``,
    ``B = −2ω³/(ω² + 1)²``, plus ``(c₁ + c₂ t) e^{−ωt}`` with ``c₁ = 1 − B`` and
    ``c₂ = ω c₁ − A`` (x(0) = 1, x'(0) = 0)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    w2 = omega**2
    A = w2 * (w2 - 1) / (w2 + 1) ** 2
    B = -2 * omega**3 / (w2 + 1) ** 2
    c1 = 1 - B
    c2 = omega * c1 - A
    decay = np.exp(-omega * t)
    x = A * np.sin(t) + B * np.cos(t) + (c1 + c2 * t) * decay
    v = A * np.cos(t) - B * np.sin(t) + (c2 - omega * (c1 + c2 * t)) * decay
    return np.column_stack([x, v])


def heat_blowup(n: int = 50, amplitude: float = 15.0, t1: float = 0.14):
    dx = 1.0 / (n + 1)
    x = np.arange(1, n + 1) * dx

    def rates(t, u, xp):
        zero = 0 * u[:1]
        w = xp.concatenate([zero, u, zero], 0)
        return (w[2:] - 2 * w[1:-1] + w[:-2]) / dx**2 + u**2

    return _with_scipy_reference(
        rates, amplitude * np.sin(np.pi * x), t1, "heat_blowup",
        f"u_t = u_xx + u², {n} points, u(0) = {amplitude:g} sin πx, [0, {t1:g}] (blow-up ≈ 0.1423)",
    )  # fmt: skip


def cubic_relaxation(k: float = 1e6, t1: float = 10.0):
    def rates(t, y, xp):
        y0, z = y[0], y[1]
        return xp.stack([-k * (y0 - xp.cos(t + 0 * y0)) ** 3, y0 - z])

    return _with_scipy_reference(
        rates, [2.0, 0.0], t1, "cubic_relaxation",
        f"cubic relaxation onto y = cos t, k = {k:g}, with a slow filter, [0, {t1:g}]",
    )  # fmt: skip


HOLDOUT9 = {
    "cahn_hilliard": cahn_hilliard,
    "substrate_depletion": substrate_depletion,
    "critically_damped": critically_damped,
    "cubic_relaxation": cubic_relaxation,
    "heat_blowup": heat_blowup,
}
main = stiff_holdout.register(HOLDOUT9, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
