"""A thirteenth stiff hold-out set for the must-hold of issue 14: three problems in none
of the other sets — a hyperbolic system with a stiff relaxation source, whose spectrum
is an advection circle beside a rate of −1e6, and a cardiac action potential, whose
gating rates have removable singularities the membrane voltage sweeps through and
whose upstroke is set off by a 1 ms stimulus, and the classic model of a curved slow
manifold:

========================  ===========================================================
``jin_xin``               Jin & Xin's relaxation system for Burgers' flux
                          ``u_t + v_x = 0``, ``v_t + a² u_x = −(v − u²/2)/ε``, a = 1,
                          ε = 1e-6, periodic on [0, 1), 100 cells, written in its
                          characteristic variables ``r = v + a u`` (moving right) and
                          ``s = v − a u`` (moving left), each with first-order
                          upwinding; 200 components.  u(0) = 0.5 + 0.4 sin 2πx, v(0)
                          = u(0)²/2 (the relaxed state), [0, 0.6]: the equilibrium
                          flow steepens into a shock near t = 0.4 that the upwind
                          differences smear over a few cells.  The relaxation's rate
                          −2/ε sits beside the advection's eigenvalues on circles of
                          radius a/Δx = 100 centred at −100 (a non-normal, circulant
                          Jacobian).  A step long against 1/(a/Δx) with the source
                          resolved only through its stiff limit is what every
                          asymptotic-preserving scheme is built for; an estimate
                          that reads the stiff residual, or a Newton iteration on a
                          Jacobian taken before the front moved, is not.
``beeler_reuter``         Beeler & Reuter's 1977 ventricular action potential: the
                          voltage V (mV), gates m, h, j (I_Na), d, f (I_s), x1
                          (I_x1) and the intracellular calcium c (mol/l); C_m = 1
                          µF/cm², g_Na = 4, g_NaC = 0.003, E_Na = 50, g_s = 0.09,
                          E_s = −82.3 − 13.0287 ln c; a 50 µA/cm² stimulus for t in
                          [0, 1) ms; from rest (V = −84.624, m = 0.011, h = 0.988,
                          j = 0.975, d = 0.003, f = 0.994, x1 = 1e-4, c = 1e-7),
                          [0, 400] ms: one action potential and its return to rest.
                          The sodium gate's rate ``α_m = (V + 47)/(1 − e^{−0.1(V+47)})``
                          and I_K1's ``(V + 23)/(1 − e^{−0.04(V+23)})`` are 0/0 at a
                          voltage the upstroke and the repolarisation cross (f's
                          round-off grows there); the upstroke takes ~2 ms against a
                          plateau of ~300 ms and m's rate reaches ~50 ms⁻¹; the
                          stimulus switches off inside the span (a jump in f that no
                          step is told of).  It starts at t = 0 so that the first
                          step sees it: a pulse later in the span, after the rest
                          state has let the steps grow, lies between what the
                          stages sample (see ``stiff_holdout13_results.md``).
``davis_skodje``          Davis & Skodje's slow-manifold model ``y1' = −y1``,
                          ``y2' = −γ y2 + ((γ − 1) y1 + γ y1²)/(1 + y1)²``, γ = 1e4,
                          y(0) = (2, 0), [0, 5]: a fast transient of rate −γ onto the
                          curved slow manifold ``y2 = y1/(1 + y1)``, then the slow
                          decay along it.  Closed form: ``y1 = 2e^{−t}`` and
                          ``y2 − y1/(1 + y1)`` decays as ``e^{−γt}``.  A step long
                          against 1/γ sees the stiff mode only through its filter;
                          the manifold's curvature is a forcing of that mode, which
                          the stiff component follows with a lag of O(1/γ).
========================  ===========================================================

All written here from the formulas above (our code).  ``jin_xin``'s a, ε, grid,
initial state and span are ours; ``beeler_reuter``'s rate constants and currents are
the published model's (Beeler & Reuter, J. Physiol. 268 (1977)), its stimulus and span
ours; ``davis_skodje`` is Davis & Skodje's model (J. Chem. Phys. 111, 1999), its γ,
y(0) and span ours.  Floors 1e-3 for every component of ``jin_xin`` and
``davis_skodje``; for ``beeler_reuter`` 1e-3 of
each component's peak magnitude over the span (measured with scipy Radau at rtol 1e-10:
V 84.6 mV, the gates 1, c 6.2e-6 mol/l).

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout13.py --check-refs
    python studies/benchmarks/stiff_holdout13.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout13.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout13.jsonl``; the committed table is
``stiff_holdout13_results.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_closed_form, _with_scipy_reference

OUT = Path(__file__).parent / "results" / "stiff_holdout13.jsonl"

JIN_XIN = {"cells": 100, "a": 1.0, "eps": 1e-6}


def jin_xin_initial() -> np.ndarray:
    """``(r, s)`` at t = 0 [200]: the relaxed state ``v = u²/2`` of ``u = 0.5 + 0.4 sin 2πx``
    at the cell centres."""
    n, a = JIN_XIN["cells"], JIN_XIN["a"]
    x = (np.arange(n) + 0.5) / n
    u = 0.5 + 0.4 * np.sin(2 * np.pi * x)
    v = 0.5 * u * u
    return np.concatenate([v + a * u, v - a * u])


def jin_xin_rates(eps: float):
    """``rates(t, y, xp)`` of ``jin_xin`` with relaxation time ``eps`` (the set's is
    ``JIN_XIN["eps"]``; ``stiff_holdout13_checks.py eps`` varies it)."""
    n, a = JIN_XIN["cells"], JIN_XIN["a"]
    dx = 1.0 / n

    def rates(t, y, xp):
        r, s = y[:n], y[n:]
        u, v = (r - s) / (2 * a), (r + s) / 2
        relax = -(v - 0.5 * u * u) / eps
        # upwind: r moves right (its left neighbour), s moves left (its right one)
        r_t = -a * (r - xp.roll(r, 1)) / dx + relax
        s_t = a * (xp.roll(s, -1) - s) / dx + relax
        return xp.concatenate([r_t, s_t])

    return rates


def jin_xin(t1: float = 0.6):
    return _with_scipy_reference(
        jin_xin_rates(JIN_XIN["eps"]), jin_xin_initial(), t1, "jin_xin",
        f"Jin–Xin relaxation of Burgers' flux, a = 1, ε = {JIN_XIN['eps']:g}, periodic, "
        f"100 cells, upwind characteristics, [0, {t1:g}]",
    )  # fmt: skip


# (C1, C2, C3, C4, C5, C6, C7) of Beeler & Reuter's Table 1: a rate (ms⁻¹) is
# (C1 e^{C2 (V + C3)} + C4 (V + C5)) / (e^{C6 (V + C3)} + C7)
BR_RATES = {
    "alpha_x1": (5e-4, 0.083, 50.0, 0.0, 0.0, 0.057, 1.0),
    "beta_x1": (1.3e-3, -0.06, 20.0, 0.0, 0.0, -0.04, 1.0),
    "alpha_m": (0.0, 0.0, 47.0, -1.0, 47.0, -0.1, -1.0),
    "beta_m": (40.0, -0.056, 72.0, 0.0, 0.0, 0.0, 0.0),
    "alpha_h": (0.126, -0.25, 77.0, 0.0, 0.0, 0.0, 0.0),
    "beta_h": (1.7, 0.0, 22.5, 0.0, 0.0, -0.082, 1.0),
    "alpha_j": (0.055, -0.25, 78.0, 0.0, 0.0, -0.2, 1.0),
    "beta_j": (0.3, 0.0, 32.0, 0.0, 0.0, -0.1, 1.0),
    "alpha_d": (0.095, -0.01, -5.0, 0.0, 0.0, -0.072, 1.0),
    "beta_d": (0.07, -0.017, 44.0, 0.0, 0.0, 0.05, 1.0),
    "alpha_f": (0.012, -0.008, 28.0, 0.0, 0.0, 0.15, 1.0),
    "beta_f": (0.0065, -0.02, 30.0, 0.0, 0.0, -0.2, 1.0),
}
BR = {"g_na": 4.0, "g_nac": 3e-3, "e_na": 50.0, "g_s": 0.09, "stimulus": 50.0, "on": (0.0, 1.0)}
BR_REST = [-84.624, 0.011, 0.988, 0.975, 0.003, 0.994, 1e-4, 1e-7]  # V, m, h, j, d, f, x1, c


def br_rate(name: str, V, xp):
    c1, c2, c3, c4, c5, c6, c7 = BR_RATES[name]
    return (c1 * xp.exp(c2 * (V + c3)) + c4 * (V + c5)) / (xp.exp(c6 * (V + c3)) + c7)


def beeler_reuter_rates(on: tuple[float, float]):
    """``rates(t, y, xp)`` of ``beeler_reuter`` with the stimulus on ``[on[0], on[1])`` ms
    (the set's is ``BR["on"]``; ``stiff_holdout13_checks.py stimulus`` moves it)."""

    def rates(t, y, xp):
        V, m, h, j, d, f, x1, c = (y[i] for i in range(8))
        i_na = (BR["g_na"] * m**3 * h * j + BR["g_nac"]) * (V - BR["e_na"])
        i_s = BR["g_s"] * d * f * (V - (-82.3 - 13.0287 * xp.log(c)))
        i_x1 = x1 * 0.8 * (xp.exp(0.04 * (V + 77)) - 1) / xp.exp(0.04 * (V + 35))
        i_k1 = 0.35 * (
            4 * (xp.exp(0.04 * (V + 85)) - 1) / (xp.exp(0.08 * (V + 53)) + xp.exp(0.04 * (V + 53)))
            + 0.2 * (V + 23) / (1 - xp.exp(-0.04 * (V + 23)))
        )
        stimulus = BR["stimulus"] * ((t >= on[0]) & (t < on[1]))
        gates = [
            br_rate(f"alpha_{g}", V, xp) * (1 - x) - br_rate(f"beta_{g}", V, xp) * x
            for g, x in (("m", m), ("h", h), ("j", j), ("d", d), ("f", f), ("x1", x1))
        ]
        dV = stimulus - (i_na + i_s + i_x1 + i_k1)
        dc = -1e-7 * i_s + 0.07 * (1e-7 - c)
        return xp.stack([dV, *gates, dc])

    return rates


# 1e-3 of each component's peak over [0, 400] ms (scipy Radau at rtol 1e-10)
BR_FLOORS = np.array([84.6, 1, 1, 1, 1, 1, 1, 6.2e-6]) * 1e-3


def beeler_reuter(t1: float = 400.0):
    on = BR["on"]
    return _with_scipy_reference(
        beeler_reuter_rates(on), BR_REST, t1, "beeler_reuter",
        f"Beeler–Reuter ventricular action potential, 50 µA/cm² stimulus on "
        f"[{on[0]:g}, {on[1]:g}) ms, [0, {t1:g}] ms",
        floors=BR_FLOORS,
    )  # fmt: skip


DAVIS_SKODJE = {"gamma": 1e4, "y0": (2.0, 0.0)}


def davis_skodje_exact(t) -> np.ndarray:
    """``(y1, y2)`` of ``davis_skodje`` at times ``t`` [m] → [m, 2]."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    g, (a, b) = DAVIS_SKODJE["gamma"], DAVIS_SKODJE["y0"]
    y1 = a * np.exp(-t)
    y2 = y1 / (1 + y1) + (b - a / (1 + a)) * np.exp(-g * t)
    return np.stack([y1, y2], axis=1)


def davis_skodje(t1: float = 5.0):
    g = DAVIS_SKODJE["gamma"]

    def rates(t, y, xp):
        y1, y2 = y[0], y[1]
        return xp.stack([-y1, -g * y2 + ((g - 1) * y1 + g * y1 * y1) / (1 + y1) ** 2])

    return _with_closed_form(
        rates, list(DAVIS_SKODJE["y0"]), t1, davis_skodje_exact, "davis_skodje",
        f"Davis–Skodje slow manifold, γ = {g:g}, y(0) = (2, 0), [0, {t1:g}]",
    )  # fmt: skip


HOLDOUT13 = {"jin_xin": jin_xin, "beeler_reuter": beeler_reuter, "davis_skodje": davis_skodje}
main = stiff_holdout.register(HOLDOUT13, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
