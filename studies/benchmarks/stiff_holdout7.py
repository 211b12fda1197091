"""A seventh stiff hold-out set for the must-hold of issue 14: five problems in none of
the other sets, each with a way to fail that they do not have — a Jacobian that is one
Jordan block (upwind advection, the most non-normal there is) under a periodic inflow,
a neuron's spike train, diffusion that degenerates where the solution vanishes (a
front moving into a zero state), a stiff spring chain that trades energy with soft
nonlinear springs, and a fast equilibrium feeding an autocatalytic switch:

========================  ===========================================================
``advection_diffusion``   ``u_t + u_x = ν u_xx`` on [0, 1], ν = 2e-4, 200 points,
                          first-order upwind advection, central diffusion, inflow
                          ``u(0, t) = sin²(2πt)``, outflow ``u_x = 0``, u(0, x) = 0,
                          [0, 2]: the Jacobian is a bidiagonal band close to one
                          Jordan block (eigenvalues near −216, huge transient growth
                          of ``e^{tJ}`` in norm), the solution a train of pulses.
``hodgkin_huxley``        The Hodgkin–Huxley squid axon (mV, ms; the modern
                          constants: g_Na 120, g_K 36, g_L 0.3, E_Na 50, E_K −77,
                          E_L −54.387, C 1), I = 10 µA/cm², from rest, [0, 50] ms:
                          periodic spikes whose upstroke is ~100× faster than the
                          recovery.
``porous_medium``         ``u_t = (u²)_xx`` on [−1, 1], 100 interior points, u = 0 at
                          both ends, u(0, x) = max(0, 1 − 4x²)², [0, 0.5]: the
                          diffusivity 2u vanishes outside the support, so the
                          Jacobian's stiffness (to ~2e4) moves with the fronts, which
                          travel at finite speed into a zero state; they reach the
                          walls at t ≈ 0.2, and mass drains through them after.
``fpu_stiff``             The Fermi–Pasta–Ulam problem of Hairer, Lubich & Wanner
                          (GNI, Sec. I.5): m = 3 stiff linear springs (ω = 50)
                          alternating with soft quartic ones, their initial values
                          (x₀,₁ = ẋ₀,₁ = 1, x₁,₁ = 1/ω, ẋ₁,₁ = 1 in the slow/stiff
                          coordinates, the rest 0), [0, 5]: fast oscillations (period
                          2π/ω ≈ 0.13) of amplitude ~1/ω beside the slow motion.
``fast_equilibrium``      2A ⇌ B (k_f = 1e6, k_b = 1e5), B + C → 2C (1), C → 2A (0.2),
                          A = 1, B = 0, C = 1e-3, [0, 100]: a dimerisation
                          equilibrium faster than the rest by 1e6 under an
                          autocatalytic switch (A + 2B + 2C is conserved).
========================  ===========================================================

All are written here from the formulas above (our code); the references are scipy Radau
at rtol 1e-12, checked against scipy BDF (``--check-refs``).

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout7.py --check-refs
    python studies/benchmarks/stiff_holdout7.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout7.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout7.jsonl``; the committed table is
``stiff_holdout7_results.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_scipy_reference

OUT = Path(__file__).parent / "results" / "stiff_holdout7.jsonl"


def advection_diffusion(n: int = 200, nu: float = 2e-4, t1: float = 2.0):
    dx = 1.0 / n  # points x_i = i·dx, i = 1 … n; x_0 = 0 is the inflow

    def rates(t, y, xp):
        inflow = xp.sin(2 * np.pi * t) ** 2 + 0 * y[:1]
        left = xp.concatenate([inflow, y[:-1]], 0)
        right = xp.concatenate([y[1:], y[-1:]], 0)  # u_x = 0: the ghost point is the last one
        return -(y - left) / dx + nu * (right - 2 * y + left) / dx**2

    return _with_scipy_reference(
        rates, np.zeros(n), t1, "advection_diffusion",
        f"upwind advection–diffusion, ν = {nu:g}, {n} points, inflow sin²(2πt), [0, {t1:g}]",
    )  # fmt: skip


def _rate(x, xp):
    # x / (1 − e^(−x)), whose 0/0 at x = 0 is removable (value 1): both branches stay
    # finite, so an autograd Jacobian through the select has no NaN
    safe = xp.where(abs(x) < 1e-6, 1e-6 + 0 * x, x)
    return xp.where(abs(x) < 1e-6, 1 + x / 2, safe / (1 - xp.exp(-safe)))


def hodgkin_huxley(current: float = 10.0, t1: float = 50.0):
    g_na, g_k, g_l, e_na, e_k, e_l = 120.0, 36.0, 0.3, 50.0, -77.0, -54.387

    def rates(t, y, xp):
        v, m, h, n = y[0], y[1], y[2], y[3]
        am = _rate((v + 40) / 10, xp)  # 0.1 (v + 40) / (1 − e^(−(v + 40)/10))
        bm = 4 * xp.exp(-(v + 65) / 18)
        ah = 0.07 * xp.exp(-(v + 65) / 20)
        bh = 1 / (1 + xp.exp(-(v + 35) / 10))
        an = 0.1 * _rate((v + 55) / 10, xp)  # 0.01 (v + 55) / (1 − e^(−(v + 55)/10))
        bn = 0.125 * xp.exp(-(v + 65) / 80)
        ionic = g_na * m**3 * h * (v - e_na) + g_k * n**4 * (v - e_k) + g_l * (v - e_l)
        return xp.stack(
            [current - ionic, am * (1 - m) - bm * m, ah * (1 - h) - bh * h, an * (1 - n) - bn * n]
        )

    v0 = -65.0  # rest, the gates at their steady states there (m 0.053, h 0.596, n 0.318)
    am, bm = 0.1 * -25 / (1 - np.exp(2.5)), 4.0
    ah, bh = 0.07, 1 / (1 + np.exp(3.0))
    an, bn = 0.01 * -10 / (1 - np.exp(1.0)), 0.125
    y0 = [v0, am / (am + bm), ah / (ah + bh), an / (an + bn)]
    return _with_scipy_reference(
        rates, y0, t1, "hodgkin_huxley",
        f"Hodgkin–Huxley squid axon, I = {current:g} µA/cm², from rest, [0, {t1:g}] ms",
        floors=1e-3,
    )  # fmt: skip


def porous_medium(n: int = 100, t1: float = 0.5):
    dx = 2.0 / (n + 1)
    x = -1.0 + np.arange(1, n + 1) * dx

    def rates(t, y, xp):
        zero = 0 * y[:1]
        w = xp.concatenate([zero, y * y, zero], 0)  # u = 0 at both ends
        return (w[2:] - 2 * w[1:-1] + w[:-2]) / dx**2

    return _with_scipy_reference(
        rates, np.maximum(0.0, 1 - 4 * x**2) ** 2, t1, "porous_medium",
        f"porous medium u_t = (u²)_xx, {n} points, compact support, [0, {t1:g}]",
    )  # fmt: skip


def fpu_stiff(m: int = 3, omega: float = 50.0, t1: float = 5.0):
    def rates(t, y, xp):
        q, p = y[: 2 * m], y[2 * m :]
        zero = 0 * q[:1]
        qq = xp.concatenate([zero, q, zero], 0)  # q_0 = q_{2m+1} = 0
        # H = Σ p²/2 + ω²/4 Σ_i s_i² + Σ_i d_i⁴: stiff springs s_i = q_{2i} − q_{2i−1}
        # (i = 1 … m), soft ones d_i = q_{2i+1} − q_{2i} (i = 0 … m); force −∂H/∂q
        s = q[1::2] - q[0::2]
        d3 = 4 * (qq[1::2] - qq[0::2]) ** 3
        on_odd = omega**2 / 2 * s - d3[:-1]  # q_{2i−1}
        on_even = -(omega**2) / 2 * s + d3[1:]  # q_{2i}
        return xp.concatenate([p, xp.stack([on_odd, on_even], 1).reshape(-1)], 0)

    # HLW's initial values are in the coordinates x₀ = (q_{2i} + q_{2i−1})/√2 (slow), x₁ =
    # (q_{2i} − q_{2i−1})/√2 (stiff): x₀,₁ = 1, p-part 1; x₁,₁ = 1/ω, p-part 1 (the stiff
    # spring's energy ½(ẋ₁² + ω²x₁²) = 1); the rest 0
    x0, x1, y0_, y1_ = (np.zeros(m) for _ in range(4))
    x0[0], x1[0], y0_[0], y1_[0] = 1.0, 1.0 / omega, 1.0, 1.0
    r = np.sqrt(0.5)
    q = np.stack([r * (x0 - x1), r * (x0 + x1)], 1).reshape(-1)
    p = np.stack([r * (y0_ - y1_), r * (y0_ + y1_)], 1).reshape(-1)
    y0 = np.concatenate([q, p])
    return _with_scipy_reference(
        rates, y0, t1, "fpu_stiff",
        f"Fermi–Pasta–Ulam, m = {m}, ω = {omega:g} (Hairer–Lubich–Wanner), [0, {t1:g}]",
    )  # fmt: skip


def fast_equilibrium(kf: float = 1e6, kb: float = 1e5, t1: float = 100.0):
    def rates(t, y, xp):
        a, b, c = y[0], y[1], y[2]
        r1 = kf * a * a - kb * b
        r2 = 1.0 * b * c
        r3 = 0.2 * c
        return xp.stack([-2 * r1 + 2 * r3, r1 - r2, r2 - r3])

    return _with_scipy_reference(
        rates, [1.0, 0.0, 1e-3], t1, "fast_equilibrium",
        f"2A ⇌ B (k_f {kf:g}, k_b {kb:g}), B + C → 2C, C → 2A, [0, {t1:g}]",
    )  # fmt: skip


HOLDOUT7 = {
    "advection_diffusion": advection_diffusion,
    "hodgkin_huxley": hodgkin_huxley,
    "porous_medium": porous_medium,
    "fpu_stiff": fpu_stiff,
    "fast_equilibrium": fast_equilibrium,
}
main = stiff_holdout.register(HOLDOUT7, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
