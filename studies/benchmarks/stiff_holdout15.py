"""A fifteenth stiff hold-out set for the must-hold of issue 14: three problems in none
of the other sets — atmospheric chemistry whose concentrations span nine decades and
whose photolysis stops every night, cluster nucleation with forty sizes coupled by
quadratic mass-action terms, and a controller whose actuator saturates, a field that is
continuous but has kinks:

=====================  =============================================================
``stratosphere``       The Chapman mechanism with NOx of KPP's ``small_strato``
                       example (Sandu et al.): ten reactions among O1D, O, O3, NO and
                       NO2 (molecules/cm³; O2 = 1.697e16 and M = 8.12e16 held fixed),
                       four of them photolyses scaled by the sun's intensity
                       ``σ = (1 + cos(π τ|τ|))/2`` between sunrise (4:30) and sunset
                       (19:30), ``τ = (2h − 4.5 − 19.5)/15`` at hour ``h``, zero at
                       night; KPP's rate constants and initial state, from noon over
                       three days ([0, 259200] s, ending at noon).  O1D is destroyed at
                       ``k6 M ≈ 5.8e6 /s`` against O3's changes over days; at sunset O
                       and O1D fall by forty decades within two hours and NO turns into
                       NO2; at sunrise they come back.
``becker_doring``      The Becker–Döring equations of nucleation, clusters of 1 … 40
                       monomers: ``J_k = a_k c_1 c_k − b_{k+1} c_{k+1}``, ``c_1' =
                       −2 J_1 − Σ_{k≥2} J_k``, ``c_k' = J_{k−1} − J_k`` (no flux out
                       of size 40), ``a_k = k^{2/3}`` and detailed balance ``b_{k+1} =
                       a_k Q_k / Q_{k+1}`` with ``Q_k = e^{−q (k−1)^{2/3}}``, q = 8,
                       from monomers only, ``c_1 = 20``, on [0, 100].  The dimer
                       breaks up at ``b_2 ≈ 3e3`` while the cluster distribution
                       coarsens on times of 10–100 (the Jacobian's eigenvalues span
                       −3.1e3 … −1e-2); the mass ``Σ k c_k = 20`` is conserved and the
                       detailed-balance state ``c_k = Q_k z^k`` is an equilibrium.
                       Truncated at 40, mass piles up in the largest size (a quarter of
                       it by t = 100).
``saturated_pi``       A heater under PI control with a saturating actuator and
                       back-calculation anti-windup: ``T' = P u_s − κ (T − T_a(t))``,
                       ``s' = (T − s)/τ_s``, ``I' = K_i (r(t) − s) + (u_s − u)/τ_w``,
                       ``u = K_p (r(t) − s) + I``, ``u_s = min(max(u, 0), 1)``; P = 2,
                       κ = 0.1, K_p = 0.8, K_i = 0.08, a sensor lag τ_s = 1e-3 and an
                       anti-windup time τ_w = 1e-2 (the stiff parts), a set point
                       ``r = 10 + 8 tanh(5 sin(2πt/60))`` (a rounded square wave) and
                       an ambient step ``T_a = −3 (1 + tanh((t − 120)/0.5))`` on
                       [0, 200].  The actuator saturates at both ends in every period,
                       so the field's Jacobian jumps (the anti-windup rate 1/τ_w
                       switches on and off) where ``u`` crosses 0 or 1; the end lies
                       inside a saturated stretch.
=====================  =============================================================

All written here from the formulas above (our code).  ``stratosphere``'s mechanism,
rate constants, daylight profile, initial state and span are KPP's ``small_strato``;
``becker_doring``'s form is Becker and Döring's with Penrose's kinetic coefficients, its
constants ours; ``saturated_pi`` is ours.  Floors: 1e-3 of each component's peak
magnitude over the span (measured with scipy Radau at rtol 1e-11).

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout15.py --check-refs
    python studies/benchmarks/stiff_holdout15.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout15.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout15.jsonl``; the committed table is
``stiff_holdout15_results.md``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_scipy_reference

OUT = Path(__file__).parent / "results" / "stiff_holdout15.jsonl"

# KPP small_strato: the fixed species (molecules/cm³), the thermal rate constants
# (cm³/s for the bimolecular ones) and the photolysis constants at full sun (1/s)
STRATO = {
    "O2": 1.697e16, "M": 8.120e16,
    "k2": 8.018e-17, "k4": 1.576e-15, "k6": 7.110e-11, "k7": 1.200e-10,
    "k8": 6.062e-15, "k9": 1.069e-11,
    "j1": 2.643e-10, "j3": 6.120e-4, "j5": 1.070e-3, "j10": 1.289e-2,
    "noon": 12 * 3600.0, "sunrise": 4.5, "sunset": 19.5,
}  # fmt: skip
# (O1D, O, O3, NO, NO2) at noon
STRATO_Y0 = np.array([9.906e1, 6.624e8, 5.326e11, 8.725e8, 2.240e8])


def sunlight(t, xp):
    """KPP's daylight intensity ``σ`` in [0, 1] at ``t`` seconds after noon: ``(1 +
    cos(π τ|τ|))/2`` between sunrise and sunset, ``τ`` running from −1 to 1 over the
    day; 0 at night.  C¹ at sunrise and sunset."""
    S = STRATO
    hour = xp.remainder((t + S["noon"]) / 3600.0, 24.0)
    tau = (2 * hour - S["sunrise"] - S["sunset"]) / (S["sunset"] - S["sunrise"])
    day = (1 + xp.cos(math.pi * tau * xp.abs(tau))) / 2
    return xp.where((hour >= S["sunrise"]) & (hour <= S["sunset"]), day, 0 * day)


def stratosphere_rates(light: float = 1.0):
    """``rates(t, y, xp)`` of ``stratosphere``, the photolyses scaled by ``light`` (the
    set's is 1; with 0 every night-time equation holds all day)."""
    S = STRATO

    def rates(t, y, xp):
        o1d, o, o3, no, no2 = (y[i] for i in range(5))
        sun = light * sunlight(t, xp)
        r1 = S["j1"] * sun**3 * S["O2"]
        r2 = S["k2"] * o * S["O2"]
        r3 = S["j3"] * sun * o3
        r4 = S["k4"] * o * o3
        r5 = S["j5"] * sun**2 * o3
        r6 = S["k6"] * S["M"] * o1d
        r7 = S["k7"] * o1d * o3
        r8 = S["k8"] * no * o3
        r9 = S["k9"] * no2 * o
        r10 = S["j10"] * sun * no2
        return xp.stack([
            r5 - r6 - r7,
            2 * r1 - r2 + r3 - r4 + r6 - r9 + r10,
            r2 - r3 - r4 - r5 - r7 - r8,
            r9 + r10 - r8,
            r8 - r9 - r10,
        ])  # fmt: skip

    return rates


# 1e-3 of each component's peak over the three days (scipy Radau at rtol 1e-10)
STRATO_FLOORS = np.array([1.411e2, 9.476e8, 7.616e11, 9.438e8, 1.0965e9]) * 1e-3


def stratosphere(t1: float = 3 * 86400.0):
    return _with_scipy_reference(
        stratosphere_rates(), STRATO_Y0, t1, "stratosphere",
        f"KPP small_strato: Chapman + NOx, diurnal photolysis, from noon, [0, {t1:g}] s",
        floors=STRATO_FLOORS,
    )  # fmt: skip


NUCLEATION = {"sizes": 40, "q": 8.0, "monomers": 20.0}


def becker_doring_coefficients(sizes: int, q: float):
    """``(a [sizes−1], b [sizes−1], Q [sizes])``: aggregation ``a_k = k^{2/3}`` and
    fragmentation ``b_{k+1} = a_k Q_k/Q_{k+1}`` for k = 1 … sizes−1, and the
    detailed-balance weights ``Q_k = e^{−q (k−1)^{2/3}}``."""
    k = np.arange(1, sizes + 1, dtype=np.float64)
    Q = np.exp(-q * (k - 1) ** (2 / 3))
    a = k[:-1] ** (2 / 3)
    return a, a * Q[:-1] / Q[1:], Q


def becker_doring_rates(sizes: int = NUCLEATION["sizes"], q: float = NUCLEATION["q"]):
    """``rates(t, y, xp)`` of ``becker_doring`` for ``sizes`` cluster sizes and surface
    energy ``q``."""
    a, b, _ = becker_doring_coefficients(sizes, q)

    def rates(t, y, xp):
        J = xp.asarray(a, dtype=y.dtype) * y[0] * y[:-1] - xp.asarray(b, dtype=y.dtype) * y[1:]
        zero = 0 * J[:1]
        # c_k' = J_{k−1} − J_k for k ≥ 2 (no flux out of the largest size); the monomer
        # enters every J_k, twice the dimer's
        growth = xp.concatenate([zero, J])[1:] - xp.concatenate([J, zero])[1:]
        return xp.concatenate([(-J.sum() - J[0])[None], growth])

    return rates


# 1e-3 of each size's peak over [0, 100] (scipy Radau at rtol 1e-11)
BD_PEAKS = np.array([
    2.000e01, 1.295e-01, 2.252e-02, 8.066e-03, 4.139e-03, 2.606e-03, 1.859e-03, 1.436e-03,
    1.170e-03, 9.898e-04, 8.602e-04, 7.629e-04, 6.873e-04, 6.267e-04, 5.772e-04, 5.359e-04,
    5.008e-04, 4.708e-04, 4.446e-04, 4.217e-04, 4.013e-04, 3.832e-04, 3.669e-04, 3.522e-04,
    3.388e-04, 3.265e-04, 3.153e-04, 3.050e-04, 2.954e-04, 2.866e-04, 2.784e-04, 2.708e-04,
    3.338e-04, 7.342e-04, 1.649e-03, 3.771e-03, 8.765e-03, 2.069e-02, 4.954e-02, 1.203e-01,
])  # fmt: skip


def becker_doring(t1: float = 100.0):
    y0 = np.zeros(NUCLEATION["sizes"])
    y0[0] = NUCLEATION["monomers"]
    return _with_scipy_reference(
        becker_doring_rates(), y0, t1, "becker_doring",
        f"Becker–Döring nucleation, {NUCLEATION['sizes']} sizes, q = {NUCLEATION['q']:g}, "
        f"c1(0) = {NUCLEATION['monomers']:g}, [0, {t1:g}]",
        floors=BD_PEAKS * 1e-3,
    )  # fmt: skip


CONTROL = {
    "P": 2.0, "kappa": 0.1, "Kp": 0.8, "Ki": 0.08, "sensor": 1e-3, "windup": 1e-2,
    "period": 60.0, "drop_at": 120.0,
}  # fmt: skip


def set_point(t, xp):
    """``r(t) = 10 + 8 tanh(5 sin(2πt/60))``: a rounded square wave between 2 and 18."""
    return 10 + 8 * xp.tanh(5 * xp.sin(2 * math.pi * t / CONTROL["period"]))


def saturated_pi_rates(low: float = 0.0, high: float = 1.0):
    """``rates(t, y, xp)`` of ``saturated_pi`` with the actuator's range ``[low, high]``
    (the set's is [0, 1]; a wide range never saturates and the field is smooth)."""
    C = CONTROL

    def rates(t, y, xp):
        T, s, integral = y[0], y[1], y[2]
        ambient = -3 * (1 + xp.tanh((t - C["drop_at"]) / 0.5))
        error = set_point(t, xp) - s
        u = C["Kp"] * error + integral
        u_s = xp.clip(u, low, high)
        return xp.stack([
            C["P"] * u_s - C["kappa"] * (T - ambient),
            (T - s) / C["sensor"],
            C["Ki"] * error + (u_s - u) / C["windup"],
        ])  # fmt: skip

    return rates


# 1e-3 of each component's peak over [0, 200] (scipy Radau at rtol 1e-11)
PI_FLOORS = np.array([17.12, 17.12, 7.0]) * 1e-3


def saturated_pi(t1: float = 200.0):
    return _with_scipy_reference(
        saturated_pi_rates(), [0.0, 0.0, 0.0], t1, "saturated_pi",
        f"PI heater with a saturating actuator and anti-windup, [0, {t1:g}]",
        floors=PI_FLOORS,
    )  # fmt: skip


HOLDOUT15 = {
    "stratosphere": stratosphere,
    "becker_doring": becker_doring,
    "saturated_pi": saturated_pi,
}
main = stiff_holdout.register(HOLDOUT15, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
