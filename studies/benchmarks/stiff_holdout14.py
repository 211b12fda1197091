"""A fourteenth stiff hold-out set for the must-hold of issue 14: three problems in none
of the other sets — a reactor's power excursion, whose prompt rate is stiff against its
delayed neutrons and whose pulse is ended by its own heating, a thermal explosion, whose
ignition is a runaway that turns a slow problem stiff in a few steps, and a ring of
relaxation oscillators, whose jumps fall at times of their own:

=====================  =============================================================
``point_kinetics``     The point reactor kinetics equations with six delayed-neutron
                       groups and adiabatic Doppler feedback:
                       ``n' = ((ρ − β)/Λ) n + Σ λ_i c_i``, ``c_i' = (β_i/Λ) n −
                       λ_i c_i``, ``T' = K n``, ``ρ = ρ0 − α T``; Keepin's U-235
                       thermal group constants (β = Σβ_i = 0.0065), Λ = 1e-6 s,
                       ρ0 = 1.2 β (a step 0.2 β above prompt critical), α = 1e-5 /K,
                       K = 1 K/s, from the critical equilibrium ``n = 1``,
                       ``c_i = β_i/(λ_i Λ)``, ``T = 0`` on [0, 20] s.  The power
                       rises on the prompt period Λ/(ρ0 − β) ≈ 0.8 ms to 8.5e4 at
                       8.4 ms and is turned back by the heating (the Nordheim–Fuchs
                       pulse: peak (ρ0 − β)²/(2αKΛ) = 8.46e4); then the delayed
                       neutrons carry it on seconds while the prompt rate
                       ``(ρ − β)/Λ`` lies between −1.7e3 and −1.2e4 /s: a stiff
                       tail after a sharp pulse.
``thermal_explosion``  Semenov's thermal explosion with reactant consumption,
                       dimensionless: ``c' = −k(T) c``, ``T' = Q k(T) c − h (T −
                       1)``, ``k(T) = k0 e^{E (1 − 1/T)}``, E = 40, Q = 1, k0 = 1e-3,
                       h = 1e-2 (Semenov's number Q E k0/h = 4 > 1/e: it ignites),
                       from (c, T) = (1, 1) on [0, 100].  A slow induction (about
                       Frank-Kamenetskii's 1/(Q E k0) = 25) ends in a runaway in
                       which k grows by e^{20} within a fraction of a time unit:
                       the consumption rate reaches ~5e5 while the heat relaxes on
                       1/h = 100.  The induction is unstable (T feeds itself), so
                       an error made in it grows until the ignition.
``vdp_ring``           Four Van der Pol oscillators in Liénard form on a ring,
                       ``x_i' = μ_i (x_i − x_i³/3 − w_i)``, ``w_i' = (x_i + κ
                       (x_{i+1} − x_i))/μ_i``, μ = (150, 250, 400, 650), κ = 5e-2,
                       x(0) = (2, 1.5, −1, −2), w(0) = x − x³/3 + 0.01, on [0, 1200]:
                       21 relaxation jumps (each of width ~1/μ_i against a slow
                       drift of period ≈ (3 − 2 ln 2) μ_i), each in one oscillator
                       at a time the others do not share, so a step that crosses
                       one oscillator's jump meets the others on their slow
                       branches.  The end lies on every oscillator's slow branch.
=====================  =============================================================

All written here from the formulas above (our code).  ``point_kinetics``' group
constants are Keepin's (Physics of Nuclear Kinetics, 1965; the six-group U-235 thermal
fission set), the other constants ours; ``thermal_explosion``'s form is Semenov's, its
constants ours; ``vdp_ring``'s μ, κ, initial state and span are ours.  Floors: for
``point_kinetics`` 1e-3 of each component's peak magnitude over the span (measured with
scipy Radau at rtol 1e-11: n 8.5e4, c_i 7.1e4 … 1.3e6, T 1.3e3); 1e-3 for every
component of the others.

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout14.py --check-refs
    python studies/benchmarks/stiff_holdout14.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout14.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout14.jsonl``; the committed table is
``stiff_holdout14_results.md``; ``stiff_holdout14_checks.py`` (``batch``, ``newton``,
``f32steps``) reproduces the other tables there and the guide's batch figures.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_scipy_reference

OUT = Path(__file__).parent / "results" / "stiff_holdout14.jsonl"

# Keepin's six-group U-235 thermal-fission delayed-neutron constants: the groups'
# fractions β_i and decay constants λ_i (1/s)
KEEPIN_BETA = np.array([0.000215, 0.001424, 0.001274, 0.002568, 0.000748, 0.000273])
KEEPIN_LAMBDA = np.array([0.0124, 0.0305, 0.111, 0.301, 1.14, 3.01])
REACTOR = {"generation": 1e-6, "rho0_in_beta": 1.2, "alpha": 1e-5, "heating": 1.0}


def point_kinetics_initial() -> np.ndarray:
    """``(n, c_1 … c_6, T)`` at t = 0 [8]: the critical equilibrium at unit power."""
    c = KEEPIN_BETA / (KEEPIN_LAMBDA * REACTOR["generation"])
    return np.concatenate([[1.0], c, [0.0]])


def point_kinetics_rates(rho0: float):
    """``rates(t, y, xp)`` of ``point_kinetics`` with the inserted reactivity ``rho0``
    (the set's is 1.2 β; with 0 the initial state is an equilibrium)."""
    beta, lam = KEEPIN_BETA.tolist(), KEEPIN_LAMBDA.tolist()
    generation, alpha, heating = (REACTOR[k] for k in ("generation", "alpha", "heating"))
    beta_sum = float(sum(beta))

    def rates(t, y, xp):
        n, T = y[0], y[7]
        rho = rho0 - alpha * T
        precursors = [y[1 + i] for i in range(6)]
        dn = (rho - beta_sum) / generation * n + sum(l * c for l, c in zip(lam, precursors))
        dc = [b / generation * n - l * c for b, l, c in zip(beta, lam, precursors)]
        return xp.stack([dn, *dc, heating * n])

    return rates


# 1e-3 of each component's peak over [0, 20] s (scipy Radau at rtol 1e-11)
PK_FLOORS = (
    np.array([8.50e4, 2.41e5, 1.28e6, 7.82e5, 1.11e6, 2.11e5, 7.06e4, 1.28e3]) * 1e-3
)  # fmt: skip


def point_kinetics(t1: float = 20.0):
    rho0 = REACTOR["rho0_in_beta"] * float(KEEPIN_BETA.sum())
    return _with_scipy_reference(
        point_kinetics_rates(rho0), point_kinetics_initial(), t1, "point_kinetics",
        f"point reactor kinetics, six Keepin groups, Λ = {REACTOR['generation']:g} s, "
        f"a 1.2β step with Doppler feedback, [0, {t1:g}] s",
        floors=PK_FLOORS,
    )  # fmt: skip


EXPLOSION = {"E": 40.0, "Q": 1.0, "k0": 1e-3, "h": 1e-2}


def thermal_explosion_rates(h: float):
    """``rates(t, y, xp)`` of ``thermal_explosion`` with heat-loss coefficient ``h`` (the
    set's is 1e-2; with 0 it is adiabatic and ``T + Q c`` is conserved)."""
    E, Q, k0 = EXPLOSION["E"], EXPLOSION["Q"], EXPLOSION["k0"]

    def rates(t, y, xp):
        c, T = y[0], y[1]
        k = k0 * xp.exp(E * (1 - 1 / T))
        return xp.stack([-k * c, Q * k * c - h * (T - 1)])

    return rates


def thermal_explosion(t1: float = 100.0):
    return _with_scipy_reference(
        thermal_explosion_rates(EXPLOSION["h"]), [1.0, 1.0], t1, "thermal_explosion",
        f"Semenov thermal explosion with consumption, E = {EXPLOSION['E']:g}, "
        f"Q = {EXPLOSION['Q']:g}, k0 = {EXPLOSION['k0']:g}, h = {EXPLOSION['h']:g}, "
        f"[0, {t1:g}]",
    )  # fmt: skip


RING = {"mu": (150.0, 250.0, 400.0, 650.0), "kappa": 5e-2, "x0": (2.0, 1.5, -1.0, -2.0)}


def vdp_ring_initial() -> np.ndarray:
    """``(x_1 … x_4, w_1 … w_4)`` at t = 0 [8]: each oscillator 0.01 below its slow
    branch ``w = x − x³/3``."""
    x = np.array(RING["x0"])
    return np.concatenate([x, x - x**3 / 3 + 0.01])


def vdp_ring_rates(kappa: float):
    """``rates(t, y, xp)`` of ``vdp_ring`` with coupling ``kappa`` (the set's is 5e-2;
    with 0 the oscillators are independent)."""
    mu = list(RING["mu"])
    m = len(mu)

    def rates(t, y, xp):
        x, w = [y[i] for i in range(m)], [y[m + i] for i in range(m)]
        dx = [mu[i] * (x[i] - x[i] ** 3 / 3 - w[i]) for i in range(m)]
        dw = [(x[i] + kappa * (x[(i + 1) % m] - x[i])) / mu[i] for i in range(m)]
        return xp.stack([*dx, *dw])

    return rates


def relaxation_period(mu: float) -> float:
    """The period of Liénard's Van der Pol oscillator in the relaxation limit (large μ):
    ``(3 − 2 ln 2) μ`` (the jumps take no time; the slow branches ``w = x − x³/3`` are
    followed from |x| = 2 to |x| = 1)."""
    return (3 - 2 * math.log(2)) * mu


def vdp_ring(t1: float = 1200.0):
    return _with_scipy_reference(
        vdp_ring_rates(RING["kappa"]), vdp_ring_initial(), t1, "vdp_ring",
        f"four Van der Pol oscillators on a ring, μ = {RING['mu']}, κ = {RING['kappa']:g}, "
        f"[0, {t1:g}]",
    )  # fmt: skip


HOLDOUT14 = {
    "point_kinetics": point_kinetics,
    "thermal_explosion": thermal_explosion,
    "vdp_ring": vdp_ring,
}
main = stiff_holdout.register(HOLDOUT14, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
