"""The thirteenth stiff hold-out set (studies/benchmarks/stiff_holdout13.py): its problems
are the ones described (Jin–Xin's relaxation: the spectrum of −1/ε beside the upwind
advection, the conserved Σu, the state held at its relaxed v = u²/2; Beeler–Reuter: the
gating rates' removable singularities and the action potential; Davis–Skodje: its
closed form and slow manifold), must-hold cells of all three, and radau_iia5's
stiffness-loss test on a stiff mode that only turns."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import odenet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
import stiff_holdout13 as H13
from _must_hold import assert_cell_passes, fd_jacobian, obeys_its_equation
from stiff_holdout import any_problem, both_fields


@pytest.mark.parametrize("name", list(H13.HOLDOUT13))
def test_the_torch_field_is_the_numpy_field(name):
    ours, theirs = both_fields(H13.get(name))
    np.testing.assert_allclose(ours, theirs, rtol=1e-11, atol=1e-11 * np.abs(theirs).max())


def test_any_problem_finds_the_thirteenth_set():
    for name in H13.HOLDOUT13:
        p, floors = any_problem(name)
        assert p.name == name
        np.testing.assert_array_equal(floors, p.atol_ratio)


def test_jin_xin_has_a_relaxation_rate_beside_the_upwind_advection():
    p = H13.get("jin_xin")
    n, a, eps = H13.JIN_XIN["cells"], H13.JIN_XIN["a"], H13.JIN_XIN["eps"]
    J = fd_jacobian(p, 0.0, p.y0, h=1e-9)
    ev = np.linalg.eigvals(J)
    stiff = ev.real < -1e3
    # one relaxation rate −1/ε per cell (the 2 × 2 source block has eigenvalues 0 and
    # −1/ε), the other n eigenvalues those of the relaxed upwind flow: in the disc
    # |λ + a/Δx| ≤ a/Δx of the first-order upwind differences
    assert stiff.sum() == n
    np.testing.assert_allclose(ev[stiff].real, -1 / eps, rtol=1e-3)
    slow = ev[~stiff]
    assert (np.abs(slow + a * n) <= a * n * (1 + 1e-6)).all()
    assert slow.real.min() < -10 and slow.real.max() < 1e-6


def test_jin_xin_conserves_u_and_stays_at_its_relaxed_state():
    p = H13.get("jin_xin")
    n, a, eps = H13.JIN_XIN["cells"], H13.JIN_XIN["a"], H13.JIN_XIN["eps"]
    r = solve_ivp(p.f_numpy, p.span, p.y0, method="Radau", rtol=1e-8, atol=1e-11, dense_output=True)
    Y = r.sol(np.linspace(*p.span, 13))
    u, v = (Y[:n] - Y[n:]) / (2 * a), (Y[:n] + Y[n:]) / 2
    # u_t + v_x = 0 on a periodic grid (the upwind sums telescope): Σu is invariant
    np.testing.assert_allclose(u.sum(0), u[:, 0].sum(), rtol=1e-9)
    # v − u²/2 is O(ε) once the initial equilibrium has moved (Chapman–Enskog: ε·(a² −
    # u²)·u_x), far below the tolerance floors
    assert np.abs(v - 0.5 * u * u).max() < 100 * eps
    # and the flow steepened: the largest slope has grown several-fold from 0.4·2π
    slope = np.abs(np.diff(u[:, -1])).max() * n
    assert slope > 3 * 0.4 * 2 * np.pi


def test_beeler_reuter_rates_are_finite_through_their_removable_singularities():
    # α_m = (V + 47)/(1 − e^{−0.1(V+47)}) → 10 at V = −47; computed on either side
    for dv in (1e-6, -1e-6):
        assert H13.br_rate("alpha_m", -47.0 + dv, np) == pytest.approx(10.0, rel=1e-5)
    # Table 1's form at V = 0: β_m = 40 e^{−0.056·72}, α_h = 0.126 e^{−0.25·77}
    assert H13.br_rate("beta_m", 0.0, np) == pytest.approx(40 * np.exp(-0.056 * 72))
    assert H13.br_rate("alpha_h", 0.0, np) == pytest.approx(0.126 * np.exp(-0.25 * 77))


def test_beeler_reuter_fires_one_action_potential_and_returns_to_rest():
    p = H13.get("beeler_reuter")
    r = solve_ivp(p.f_numpy, p.span, p.y0, method="Radau", rtol=1e-8, atol=p.atol_ratio * 1e-5)
    V, c = r.y[0], r.y[7]
    # the upstroke within 3 ms of the stimulus, an overshoot to +20 … +40 mV
    assert 20 < V.max() < 40 and r.t[V.argmax()] < 3.0
    # a plateau above −20 mV to 150 ms, repolarised below −75 mV by 320 ms
    assert V[(r.t > 20) & (r.t < 150)].min() > -20
    assert V[r.t > 320].max() < -75
    # calcium rises 60-fold during the plateau and falls back
    assert c.max() > 50 * p.y0[7] and c[-1] < 3 * p.y0[7]


def test_davis_skodje_follows_its_closed_form_onto_the_slow_manifold():
    p = H13.get("davis_skodje")
    exact = H13.davis_skodje_exact
    np.testing.assert_allclose(exact([0.0])[0], p.y0, atol=1e-15)
    # central differences need h well below 1/γ inside the transient
    obeys_its_equation(p, exact, [2e-5, 1e-4], h=1e-9, rtol=1e-5)
    obeys_its_equation(p, exact, [0.3, 2.0, 4.9], rtol=1e-6)
    # after the transient the state lies on y2 = y1/(1 + y1) (to e^{−γt})
    y1, y2 = exact([0.01])[0]
    assert abs(y2 - y1 / (1 + y1)) < 1e-40
    # the Jacobian's rates: −1 and −γ
    J = fd_jacobian(p, 0.0, exact([1.0])[0])
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(J).real), [-1e4, -1.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "method", "rtol"),
    [
        ("jin_xin", "radau_iia5", 1e-3),
        ("jin_xin", "bdf", 1e-5),
        ("jin_xin", "kvaerno5", 1e-4),
        ("beeler_reuter", "radau_iia5", 1e-5),
        ("beeler_reuter", "ndf", 1e-3),
        ("beeler_reuter", "sdirk4", 1e-4),
        ("davis_skodje", "radau_iia5", 1e-6),
        ("davis_skodje", "bdf", 1e-4),
        ("davis_skodje", "kvaerno5", 1e-3),
    ],
)
def test_a_must_hold_cell(name, method, rtol):
    assert_cell_passes(H13.get(name), method, rtol)


@pytest.mark.parametrize("rtol", [1e-3, 1e-4])
def test_radau_iia5_keeps_a_relaxation_mode_that_only_turns(rtol):
    # Jin–Xin's stiff rate is −1/ε at every state, but its eigenvector turns with u: the
    # filter's damping along the raw estimate read 4–130x less at a step's end than at
    # its start, and the stiffness-loss test rejected 9 of 32 steps at rtol 1e-3 (415
    # f-evaluations; 4 of 30 at 1e-4, 339) whose true local errors were ≤ 0.06 units.
    # Read along J₀u it keeps its rate (RadauIIA._mode_lost_stiffness)
    p = H13.get("jin_xin")
    sol = odenet.solve(
        p.f,
        torch.tensor(p.y0),
        torch.tensor(p.span, dtype=torch.float64),
        method="radau_iia5",
        rtol=rtol,
        atol=1e-3 * rtol,
    )
    assert bool(sol.success)
    assert int(sol.stats["rejected"]) == 0, int(sol.stats["rejected"])
    assert int(sol.stats["nfe"]) <= 260, int(sol.stats["nfe"])
    ref = p.exact([p.span[1]])[0]
    err = np.abs(sol.ys[-1].numpy() - ref) / (1e-3 + np.abs(ref))
    assert err.max() <= rtol, err.max() / rtol
