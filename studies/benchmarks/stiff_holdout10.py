"""A tenth stiff hold-out set for the must-hold of issue 14: five problems in none of
the other sets, each with a way to fail quietly that they do not have — a lightly damped
ringing that must be resolved under a stiff tracker, a bistable switch started next to
its separatrix, a slow passage through a bifurcation after a long stiff phase, a stiff
problem integrated backward in time and a reaction–diffusion pulse that replicates:

=====================  ==============================================================
``resolved_ringing``   ``x'' + 2ζω x' + ω² x = 0``, ω = 200, ζ = 5e-3 (ζω = 1),
                       x(0) = 1e-2, x'(0) = 0, as (x, x'), with a stiff tracker
                       ``s' = −μ (s − cos t − x)``, μ = 1e5, s(0) = 0, [0, 1]:
                       eigenvalues −1 ± 200i and −1e5, 32 periods of a ringing that
                       decays by e over the span (amplitude 3.7e-3 at the end, x(1)
                       = 1.8e-3, above x's floor 1e-3).  An L-stable method whose estimate is
                       filtered by ``(I − hγJ)⁻¹`` sees the ringing's error divided
                       by ~hγω once hω ≫ 1; if its step grows past the period,
                       ``R(ihω) → 0`` wipes the ringing out (x ends near 0: a mixed
                       error ~1) with status ok.  Closed form.  (With ω = 1e3 scipy
                       Radau needs 16 600 steps at rtol 1e-7; ω = 200 keeps the
                       sweep's cells within their time limit.)
``bistable_switch``    Schlögl's cubic ``x' = −k (x − a)(x − b)(x − c)``, a = 0,
                       b = 0.01, c = 1, k = 1e4, x(0) = b + 1e-4, with ``z' = x``,
                       z(0) = 0, [0, 1]: x leaves the unstable state b at
                       ``k b (c − b) ≈ 99``, jumps (f' up to +3.3e3) onto c at
                       t ≈ 0.047 and relaxes there at ``−k c (c − b) ≈ −9.9e3``.  The
                       branch is decided by the 1e-4 above b (ten tolerances at rtol
                       1e-3): an error of that size sends x to a (x ends at 0), and
                       an implicit step long against 1/99 (``|R(z)| < 1`` for large
                       positive z too) holds x at b; both with status ok.
                       ``z = ∫x`` records the switching time.
``slow_passage``       ``ε y' = (t − 1) y − y² + η``, ε = 1e-3, η = 1e-8, y(0) = η,
                       with ``z' = y``, z(0) = 0, [0, 1.5]; floors 1e-8 for y (its
                       size before the jump), 1e-3 for z.  Until t = 1 the state
                       ``y ≈ η/(1 − t)`` is stable and stiff (rate ``(1 − t)/ε``, 1e3
                       at t = 0); there it exchanges stability with ``y = t − 1``: y
                       grows like ``e^{(t−1)²/(2ε)}`` from ``η √(π/2ε) ≈ 4e-7`` and
                       jumps at t ≈ 1.16.  A controller that grew h over the stable
                       phase arrives at t = 1 with steps long against the growth
                       that follows, which an L-stable step damps: the jump comes
                       late (a numerical delay of the bifurcation), status ok;
                       ``z(1.5)`` measures the jump time.
``backward_stiff``     ``y' = M (y − g(t)) + g'(t)``, ``M = Q B Qᵀ``, B with
                       eigenvalues +1e4, +50 ± 500i, +1, −0.2, Q a Householder
                       reflection, ``g = (cos t, sin 2t, 1 + sin(t)/2, cos(t/2),
                       cos(3t)/2)``, y(0) = 1, from t = 0 *back* to t = −10: stable
                       in that direction (the last mode grows by e²), violently
                       unstable forward.  odenet maps a decreasing span onto
                       ``s = −t`` in ``solve``; a sign lost on the way (in h, the
                       Jacobian, the time given to f) either blows up or — in the
                       time given to f — relaxes the stiff modes onto the wrong
                       forcing (``sin 2t`` is odd) with status ok.  Closed form
                       ``y = g(t) + e^{Mt} (y(0) − g(0))``.  (A ``Problem`` whose
                       span runs backward; until session 37 ``Problem`` asked for
                       ``t0 < t1`` and this set subclassed it.)
``gray_scott``         ``u_t = D_u u_xx − u v² + F (1 − u)``, ``v_t = D_v v_xx + u v²
                       − (F + k) v`` on the periodic [0, 0.5], 128 points (Pearson's
                       D_u = 2e-5, D_v = 1e-5), F = 0.04, k = 0.06, u(0) = 1 − φ/2,
                       v(0) = φ/4, ``φ = exp(−((x − 1/4)/0.02)²)``, [0, 800]: the
                       pulse splits in two by t ≈ 90 and each again at t ≈ 705
                       (four at the end).  Diffusion eigenvalues to −5.3 under
                       reaction rates ~0.1 over 800 time units: steps of ~20 between
                       the splittings.  Self-replication is a threshold event and
                       the uniform state (1, 0) is stable: a step too long across a
                       splitting can leave one pulse where two should be, or let a
                       pulse die — a discrete change that an estimate taken on a
                       smooth pulse need not see.
=====================  ==============================================================

All are written here from the formulas above (our code).  ``resolved_ringing`` and
``backward_stiff`` are measured against their closed forms (checked against scipy
Radau at rtol 1e-12 by ``--check-refs`` and at several times in the set's tests); the
other three against scipy Radau at rtol 1e-12, checked against scipy BDF.

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).

    python studies/benchmarks/stiff_holdout10.py --check-refs
    python studies/benchmarks/stiff_holdout10.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout10.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout10.jsonl``; the committed table is
``stiff_holdout10_results.md``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from scipy.linalg import expm

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout4 import _with_closed_form, _with_scipy_reference

from odenet import problems as P

OUT = Path(__file__).parent / "results" / "stiff_holdout10.jsonl"

RINGING = {"omega": 200.0, "zeta": 5e-3, "mu": 1e5, "x0": 1e-2}


def resolved_ringing(t1: float = 1.0):
    om, zeta, mu, x0 = RINGING["omega"], RINGING["zeta"], RINGING["mu"], RINGING["x0"]

    def rates(t, y, xp):
        x, v, s = y[0], y[1], y[2]
        return xp.stack([v, -(om**2) * x - 2 * zeta * om * v, -mu * (s - xp.cos(t + 0 * s) - x)])

    return _with_closed_form(
        rates, [x0, 0.0, 0.0], t1, ringing_exact, "resolved_ringing",
        f"a lightly damped oscillator, ω = {om:g}, ζ = {zeta:g}, under a stiff tracker "
        f"(μ = {mu:g}), [0, {t1:g}]",
    )  # fmt: skip


def ringing_exact(t) -> np.ndarray:
    """``(x, x', s)`` of ``resolved_ringing`` at times ``t`` [m] → [m, 3]: with
    ``λ = −ζω + iω√(1 − ζ²)``, ``x = Re(X e^{λt})``, ``X = x0 (1 + i Re λ / Im λ)``
    (x'(0) = 0); s is the tracker's particular solutions for ``cos t``,
    ``(μ² cos t + μ sin t)/(μ² + 1)``, and for x, ``Re(μX/(λ + μ) e^{λt})``, less their
    value at 0 times ``e^{−μt}`` (s(0) = 0)."""
    om, zeta, mu, x0 = RINGING["omega"], RINGING["zeta"], RINGING["mu"], RINGING["x0"]
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    lam = complex(-zeta * om, om * np.sqrt(1 - zeta**2))
    X = x0 * (1 + 1j * lam.real / lam.imag)  # Re X = x0, Re(λX) = 0
    e = np.exp(lam * t)
    x = np.real(X * e)
    v = np.real(lam * X * e)
    sx = np.real(mu * X / (lam + mu) * e)
    sc = (mu**2 * np.cos(t) + mu * np.sin(t)) / (mu**2 + 1)
    s0 = mu**2 / (mu**2 + 1) + np.real(mu * X / (lam + mu))
    s = sc + sx - s0 * np.exp(-mu * t)
    return np.column_stack([x, v, s])


SCHLOGL = {"k": 1e4, "a": 0.0, "b": 0.01, "c": 1.0, "delta": 1e-4}


def bistable_switch(t1: float = 1.0):
    k, a, b, c = SCHLOGL["k"], SCHLOGL["a"], SCHLOGL["b"], SCHLOGL["c"]

    def rates(t, y, xp):
        x = y[0]
        return xp.stack([-k * (x - a) * (x - b) * (x - c), x])

    return _with_scipy_reference(
        rates, [b + SCHLOGL["delta"], 0.0], t1, "bistable_switch",
        f"Schlögl's cubic from just above its separatrix, with z' = x, [0, {t1:g}]",
    )  # fmt: skip


PASSAGE = {"eps": 1e-3, "eta": 1e-8}


def slow_passage(t1: float = 1.5):
    eps, eta = PASSAGE["eps"], PASSAGE["eta"]

    def rates(t, y, xp):
        y0 = y[0]
        return xp.stack([((t - 1 + 0 * y0) * y0 - y0 * y0 + eta) / eps, y0])

    return _with_scipy_reference(
        rates, [eta, 0.0], t1, "slow_passage",
        f"slow passage through a transcritical bifurcation, ε = {eps:g}, η = {eta:g}, "
        f"[0, {t1:g}]",
        floors=np.array([eta, 1e-3]),
    )  # fmt: skip


def backward_matrix() -> np.ndarray:
    """``M = Q B Qᵀ`` of ``backward_stiff``: B with eigenvalues +1e4, +50 ± 500i, +1,
    −0.2 (a 2 × 2 block for the pair), Q the Householder reflection along (1, …, 5)."""
    B = np.zeros((5, 5))
    B[0, 0] = 1e4
    B[1:3, 1:3] = [[50.0, 500.0], [-500.0, 50.0]]
    B[3, 3], B[4, 4] = 1.0, -0.2
    v = np.arange(1.0, 6.0)
    Q = np.eye(5) - 2 * np.outer(v, v) / (v @ v)
    return Q @ B @ Q.T


def _backward_g(t, xp):
    return [xp.cos(t), xp.sin(2 * t), 1 + 0.5 * xp.sin(t), xp.cos(0.5 * t), 0.5 * xp.cos(3 * t)]


def _backward_dg(t, xp):
    return [-xp.sin(t), 2 * xp.cos(2 * t), 0.5 * xp.cos(t), -0.5 * xp.sin(0.5 * t),
            -1.5 * xp.sin(3 * t)]  # fmt: skip


def backward_stiff(t1: float = -10.0):
    M = backward_matrix()

    def rates(t, y, xp):
        tt = t + 0 * y[0]
        g = xp.stack(_backward_g(tt, xp))
        dg = xp.stack(_backward_dg(tt, xp))
        Mx = xp.as_tensor(M, dtype=y.dtype) if xp.__name__ == "torch" else M
        return Mx @ (y - g) + dg

    p = _with_closed_form(
        rates, np.ones(5), -t1, backward_exact, "backward_stiff",
        f"y' = M(y − g(t)) + g'(t), M's eigenvalues +1e4, 50 ± 500i, 1, −0.2, from 0 back "
        f"to {t1:g}",
    )  # fmt: skip
    fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    return P.Problem(**{**fields, "span": (0.0, t1)})


def backward_exact(t) -> np.ndarray:
    """``y`` of ``backward_stiff`` at times ``t`` [m] → [m, 5]:
    ``g(t) + e^{Mt} (y(0) − g(0))``."""
    M = backward_matrix()
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    g0 = np.array(_backward_g(0.0, np))
    return np.stack([np.array(_backward_g(s, np)) + expm(M * s) @ (np.ones(5) - g0) for s in t])


GRAY_SCOTT = {"Du": 2e-5, "Dv": 1e-5, "F": 0.04, "k": 0.06}


def gray_scott(n: int = 128, length: float = 0.5, t1: float = 800.0):
    Du, Dv, F, k = (GRAY_SCOTT[c] for c in ("Du", "Dv", "F", "k"))
    dx = length / n
    x = (np.arange(n) + 0.5) * dx

    def rates(t, y, xp):
        def lap(z):  # periodic second difference
            return (xp.roll(z, -1, 0) - 2 * z + xp.roll(z, 1, 0)) / dx**2

        u, v = y[:n], y[n:]
        uv2 = u * v * v
        return xp.concatenate([Du * lap(u) - uv2 + F * (1 - u), Dv * lap(v) + uv2 - (F + k) * v])

    bump = np.exp(-(((x - length / 2) / 0.02) ** 2))
    return _with_scipy_reference(
        rates, np.concatenate([1 - 0.5 * bump, 0.25 * bump]), t1, "gray_scott",
        f"Gray–Scott, F = {F:g}, k = {k:g}, {n} periodic points, pulse splitting, [0, {t1:g}]",
    )  # fmt: skip


HOLDOUT10 = {
    "resolved_ringing": resolved_ringing,
    "bistable_switch": bistable_switch,
    "slow_passage": slow_passage,
    "backward_stiff": backward_stiff,
    "gray_scott": gray_scott,
}
main = stiff_holdout.register(HOLDOUT10, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
