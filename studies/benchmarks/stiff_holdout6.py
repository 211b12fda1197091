"""A sixth stiff hold-out set for the must-hold of issue 14: six problems in none of the
other sets, chosen for ways to fail that they do not have — a large system whose
stiffness switches with the time of day, a highly oscillatory stiff mode, a stiffness
that sweeps six decades along the solution, a decay chain whose short-lived members sit
between long-lived ones, a singularly perturbed enzyme with an initial layer, and a
viscous shock:

=====================  ==============================================================
``diurnal``            Hindmarsh's 2-D diurnal kinetics advection–diffusion problem,
                       the SUNDIALS/CVODE example ``cvDiurnal_kry`` (ozone chemistry
                       of two species, c1 ~ 1e6 and c2 ~ 1e12, on a 10 × 10 grid:
                       200 states) over one day, [0, 86400] s.  The photolysis rates
                       ``q3, q4 = exp(−a/sin ωt)`` switch on at dawn and off at dusk
                       (ω = π/43200), so the kinetics' stiffness changes with the
                       time of day; c1 decays to ~0 at night.  CVODE's constants,
                       central differences and reflecting boundaries; floors 100 (its
                       ``FLOOR``: atol = 100·rtol).
``stiff_pendulum``     The elastic pendulum with a stiff spring (Hairer, Lubich &
                       Wanner; Hairer & Wanner II, Sec. VI.? motivate index-3 DAEs
                       with it): ``q'' = −k (1 − 1/|q|) q − (0, 1)``, k = 1e4, q(0) =
                       (1, 0), q'(0) = 0, [0, 5]: a pendulum swinging through a fast
                       radial mode of frequency 100 and amplitude ~1e-4, which an
                       L-stable method damps at loose tolerances and must resolve at
                       tight ones.
``sweeping_stiffness``  ``y1' = −λ(t) (y1 − cos t)``, ``y2' = y1 − y2``, ``λ(t) =
                       10^(3 + 3 sin t)``, y(0) = (0, 1), [0, 10]: the stiffness runs
                       from 1 to 1e6 and back, so a Jacobian kept across steps can
                       be wrong by orders of magnitude.
``decay_chain``        A radioactive decay chain of ten members with decay rates 1e-2,
                       1e4, 1e-1, 1e5, 1, 1e6, 1e-3, 3e3, 0.3, 1e-4 (1/s), y(0) = e1,
                       [0, 1000]: short-lived members in secular equilibrium between
                       long-lived ones (concentrations down to ~1e-8).  Floors 1e-9.
``enzyme``             Michaelis–Menten kinetics in the Segel–Slemrod scaling, ``s' =
                       −s + (s + K − λ) c``, ``ε c' = s − (s + K) c``, K = 1, λ = 0.5,
                       ε = 1e-4, y(0) = (1, 0), [0, 20]: an initial layer of width ε,
                       then a slow manifold.
``burgers``            Viscous Burgers ``u_t + (u²/2)_x = ν u_xx`` on [0, 1], ν = 1e-2,
                       u = 0 at both ends, u(0, x) = sin 2πx + 0.5 sin πx, 100
                       interior points, central differences, [0, 1]: a steep front
                       forms at t ≈ 0.2 and decays (diffusion eigenvalues to −4e2,
                       advection with a non-normal Jacobian).
=====================  ==============================================================

All are written here from the formulas above (our code; ``diurnal`` follows the
published example's constants, grid and stencil); the references are scipy Radau at
rtol 1e-12, checked against scipy BDF (``--check-refs``).

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout6.py --check-refs
    python studies/benchmarks/stiff_holdout6.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout6.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout6.jsonl``; the committed table is
``stiff_holdout6_results.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_scipy_reference

OUT = Path(__file__).parent / "results" / "stiff_holdout6.jsonl"


def _positive(x, xp):
    # max(x, tiny) in the spelling of both modules: exp(−a/x) is then 0, not inf, for x ≤ 0
    return xp.where(x > 0, x, 1e-300 + 0 * x)


def _like(a, y, xp):
    # a numpy constant in the state's module, dtype and device
    return (
        xp.asarray(a, dtype=y.dtype)
        if xp is np
        else xp.as_tensor(a, dtype=y.dtype, device=y.device)
    )


def diurnal(mx: int = 10, my: int = 10, t1: float = 86400.0):
    """Hindmarsh's 2-D diurnal kinetics (CVODE's ``cvDiurnal_kry``), ``2·mx·my`` states
    ordered (y, x, species)."""
    kh, vel, kv0 = 4.0e-6, 0.001, 1.0e-8
    q1, q2, c3, a3, a4 = 1.63e-16, 4.66e-16, 3.7e16, 22.62, 7.601
    om = np.pi / 43200.0
    dx, dy = 20.0 / (mx - 1), 20.0 / (my - 1)
    hdco, haco, vdco = kh / dx**2, vel / (2 * dx), kv0 / dy**2
    ydn = 30.0 + (np.arange(my) - 0.5) * dy  # the vertical diffusivity at j ± 1/2
    cydn = (vdco * np.exp(0.2 * ydn))[:, None, None]
    cyup = (vdco * np.exp(0.2 * (ydn + dy)))[:, None, None]

    def rates(t, y, xp):
        c = y.reshape(my, mx, 2)
        s = _positive(xp.sin(om * t), xp)
        q3, q4 = xp.exp(-a3 / s), xp.exp(-a4 / s)
        c1, c2 = c[..., 0], c[..., 1]
        qq1, qq2, qq4 = q1 * c3 * c1, q2 * c1 * c2, q4 * c2
        kin = xp.stack([-qq1 - qq2 + 2 * q3 * c3 + qq4, qq1 - qq2 - qq4], -1)
        # reflecting boundaries: the missing neighbour is the one inside
        dn = xp.concatenate([c[1:2], c[:-1]], 0)
        up = xp.concatenate([c[1:], c[-2:-1]], 0)
        lt = xp.concatenate([c[:, 1:2], c[:, :-1]], 1)
        rt = xp.concatenate([c[:, 1:], c[:, -2:-1]], 1)
        vert = _like(cyup, y, xp) * (up - c) - _like(cydn, y, xp) * (c - dn)
        hor = hdco * (rt - 2 * c + lt) + haco * (rt - lt)
        return (vert + hor + kin).reshape(-1)

    x = np.arange(mx) * dx
    yy = 30.0 + np.arange(my) * dy
    cx = (0.1 * (x - 10.0)) ** 2
    cx = 1 - cx + 0.5 * cx**2
    cy = (0.1 * (yy - 40.0)) ** 2
    cy = 1 - cy + 0.5 * cy**2
    prof = cy[:, None] * cx[None, :]
    y0 = np.stack([1e6 * prof, 1e12 * prof], -1).reshape(-1)
    return _with_scipy_reference(
        rates, y0, t1, "diurnal",
        f"2-D diurnal kinetics (CVODE cvDiurnal), {mx}×{my} grid, [0, {t1:g}] s",
        floors=100.0,
    )  # fmt: skip


def stiff_pendulum(k: float = 1e4, t1: float = 5.0):
    def rates(t, y, xp):
        x, z, u, v = y[0], y[1], y[2], y[3]
        pull = k * (1 - 1 / xp.sqrt(x * x + z * z))
        return xp.stack([u, v, -pull * x, -pull * z - 1.0])

    return _with_scipy_reference(
        rates, [1.0, 0.0, 0.0, 0.0], t1, "stiff_pendulum",
        f"elastic pendulum with a stiff spring, k = {k:g}, [0, {t1:g}]",
    )  # fmt: skip


def sweeping_stiffness(t1: float = 10.0):
    def rates(t, y, xp):
        lam = 10.0 ** (3.0 + 3.0 * xp.sin(t))
        return xp.stack([-lam * (y[0] - xp.cos(t)), y[0] - y[1]])

    return _with_scipy_reference(
        rates, [0.0, 1.0], t1, "sweeping_stiffness",
        "y1' = −λ(t)(y1 − cos t), y2' = y1 − y2, λ = 10^(3 + 3 sin t)",
    )  # fmt: skip


DECAY_RATES = np.array([1e-2, 1e4, 1e-1, 1e5, 1.0, 1e6, 1e-3, 3e3, 0.3, 1e-4])


def decay_chain(t1: float = 1000.0):
    lam = DECAY_RATES

    def rates(t, y, xp):
        rate = _like(lam, y, xp)
        return -rate * y + xp.concatenate([0 * y[:1], rate[:-1] * y[:-1]], 0)

    y0 = np.zeros(len(lam))
    y0[0] = 1.0
    return _with_scipy_reference(
        rates, y0, t1, "decay_chain",
        "decay chain of ten members, rates 1e-4 … 1e6 interleaved, [0, 1000]",
        floors=1e-9,
    )  # fmt: skip


def enzyme(eps: float = 1e-4, K: float = 1.0, lam: float = 0.5, t1: float = 20.0):
    def rates(t, y, xp):
        s, c = y[0], y[1]
        return xp.stack([-s + (s + K - lam) * c, (s - (s + K) * c) / eps])

    return _with_scipy_reference(
        rates, [1.0, 0.0], t1, "enzyme",
        f"Michaelis–Menten, Segel–Slemrod scaling, ε = {eps:g}, [0, {t1:g}]",
    )  # fmt: skip


def burgers(n: int = 100, nu: float = 1e-2, t1: float = 1.0):
    dx = 1.0 / (n + 1)
    x = np.arange(1, n + 1) * dx

    def rates(t, y, xp):
        zero = 0 * y[:1]
        u = xp.concatenate([zero, y, zero], 0)  # u = 0 at both ends
        flux = 0.5 * u * u
        return -(flux[2:] - flux[:-2]) / (2 * dx) + nu * (u[2:] - 2 * y + u[:-2]) / dx**2

    return _with_scipy_reference(
        rates, np.sin(2 * np.pi * x) + 0.5 * np.sin(np.pi * x), t1, "burgers",
        f"viscous Burgers, ν = {nu:g}, {n} points, [0, {t1:g}]",
    )  # fmt: skip


HOLDOUT6 = {
    "diurnal": diurnal,
    "stiff_pendulum": stiff_pendulum,
    "sweeping_stiffness": sweeping_stiffness,
    "decay_chain": decay_chain,
    "enzyme": enzyme,
    "burgers": burgers,
}
main = stiff_holdout.register(HOLDOUT6, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
