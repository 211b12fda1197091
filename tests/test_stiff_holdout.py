"""Violations the hold-out stiff sweep found (studies/benchmarks/stiff_holdout.py), each
checked against a closed form or scipy's Radau on the same input."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from test_radau import _one_step

import odenet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
from _must_hold import assert_cell_passes
from stiff_holdout import any_problem

D = torch.float64


def _prothero_robinson(lam, t1, rtol, method="radau_iia3"):
    """``method``'s and scipy Radau's errors at ``t1`` on ``y' = λ(y − sin t) + cos t``
    (exact ``sin t``), atol = 1e-3·rtol."""
    sol = odenet.solve(
        lambda t, y: lam * (y - torch.sin(t)) + torch.cos(t),
        torch.zeros(1, dtype=D),
        torch.tensor([0.0, t1], dtype=D),
        method=method,
        rtol=rtol,
        atol=1e-3 * rtol,
    )
    assert bool(sol.success)
    ref = solve_ivp(
        lambda t, y: lam * (y - np.sin(t)) + np.cos(t),
        (0.0, t1),
        [0.0],
        method="Radau",
        rtol=rtol,
        atol=1e-3 * rtol,
    )
    return abs(float(sol.ys[-1, 0]) - math.sin(t1)), abs(ref.y[0, -1] - math.sin(t1))


@pytest.mark.parametrize(("t1", "rtol"), [(3.0, 1e-6), (10.0, 1e-3)])
def test_radau_iia3_on_prothero_robinson_is_within_10x_of_scipy_radau(t1, rtol):
    # λ = −1e4: before the s = 2 filter damped stiff components like 1/(hλ)² instead of
    # 1/(hλ), radau_iia3 ended at 1.7e-5 (17·rtol, 200x scipy Radau) at rtol 1e-6 on
    # [0, 3] and at 33x scipy Radau's error at rtol 1e-3 on [0, 10], status ok
    ours, theirs = _prothero_robinson(-1e4, t1, rtol)
    assert ours <= rtol, (ours, theirs)
    assert ours <= 10 * theirs, (ours, theirs)


@pytest.mark.parametrize("lam", [-1e3, -1e5, -1e7])
def test_radau_iia3_estimate_follows_the_local_error_on_a_stiff_component(lam):
    # One step (not a retry: the first step was accepted, as the loop would tell the
    # method) of h = 0.1 from y = sin t on y' = λ(y − sin t) + cos t: the local error is
    # O(1/(hλ)), and so must
    # the estimate be.  radau_iia5's (Hairer's filter) is 0.33x it for every λ; the s = 2
    # filter as the real product of the complex pair damped like 1/(hλ)², its estimate
    # was 1.3e-2, 1.3e-4, 1.3e-6 x the error — what let radau_iia3 stop at 7 steps on
    # Prothero–Robinson with 33x scipy Radau's error
    def f(t, y):
        return lam * (y - torch.sin(t)) + torch.cos(t)

    ratios = {}
    for name in ("radau_iia3", "radau_iia5"):
        _, rk = _one_step(name, f, torch.full((1,), math.sin(0.5), dtype=D), 0.5, 0.1)
        rk.last_step.verdict(True, True)

        def g(s, y):
            return f(s[0], y[0])[None]

        s = torch.full((1,), 1.0, dtype=D)
        y = torch.full((1, 1), math.sin(1.0), dtype=D)
        res = rk.step(g, s, y, torch.full((1,), 0.1, dtype=D), g(s, y))
        local = abs(float(res.y1[0, 0]) - math.sin(1.1))
        ratios[name] = float(res.error.abs().max()) / local
    assert 0.1 < ratios["radau_iia3"] < 10, ratios
    assert 0.1 < ratios["radau_iia5"] < 10, ratios


def _dirk_step_ratio(name, lam):
    """Reported estimate / κ over the true local error of one h = 0.1 step from the
    manifold y = sin t of Prothero–Robinson (a first step: the LU the filter uses is
    the step's own)."""
    from odenet._newton import Newton
    from odenet._stepper import RungeKutta

    tab = odenet.tableau(name)

    def g(s, y):
        return lam * (y - torch.sin(s[:, None])) + torch.cos(s[:, None])

    nw = Newton(tol=1e-10, max_iter=30, atol=1e-14, rtol=1e-2, tableau=tab)
    rk = RungeKutta(tab, D, D, "cpu", nw)
    s = torch.full((1,), 1.0, dtype=D)
    y = torch.full((1, 1), math.sin(1.0), dtype=D)
    res = rk.step(g, s, y, torch.full((1,), 0.1, dtype=D), g(s, y))
    local = abs(float(res.y1[0, 0]) - math.sin(1.1))
    return float(res.error.abs().max()) / nw.safety / local


@pytest.mark.parametrize("name", ["kvaerno3", "kvaerno5", "sdirk4"])
@pytest.mark.parametrize("lam", [-1e3, -1e7])
def test_dirk_estimate_follows_the_local_error_on_a_driven_stiff_component(name, lam):
    # Kværnø's embedded solution is a stage, so ŷ1 − y1 is already O(1/(hλ)) there: the
    # (I − hγJ)⁻¹ filter on top made it 1.6e-5 (kvaerno3) and 4.8e-6 (kvaerno5) of the
    # local error at hλ = −1e6.  sdirk4's embedded solution is no stage: its raw
    # estimate grows like hλ (4e5x the error at hλ = −1e6) and the filter is what
    # keeps it at 1.6x
    ratio = _dirk_step_ratio(name, lam)
    assert 0.1 < ratio < 100, ratio


def test_sdirk4_on_prothero_robinson_is_within_10x_of_scipy_radau():
    # λ = −1e4 on [0, 10] at rtol 1e-3, the hold-out cell: with the error safety S = 2
    # sdirk4 ended at 34x scipy Radau's error (1.4e-4 against 4.2e-6) after 11 steps,
    # status ok; S = 6 (odenet.tableaus.SDIRK4_SAFETY) 1.6x
    ours, theirs = _prothero_robinson(-1e4, 10.0, 1e-3, method="sdirk4")
    assert ours <= 10 * theirs, (ours, theirs)


def test_kvaerno5_on_prothero_robinson_is_within_10x_of_scipy_radau():
    # λ = −1e4 on [0, 3] at rtol 1e-6: with the filtered estimate kvaerno5 ended at
    # 6.1e-6 (6·rtol, 70x scipy Radau's 8.8e-8) after 22 steps, status ok
    lam, t1, rtol = -1e4, 3.0, 1e-6
    ours, theirs = _prothero_robinson(lam, t1, rtol, method="kvaerno5")
    assert ours <= rtol and ours <= 10 * theirs, (ours, theirs)


def test_bdf_on_e5_believes_a_kept_jacobians_floor_only_at_the_round_off_itself():
    """E5 at rtol 1e-3: kept-Jacobian iterations that contracted at ratios ~0.5 were
    cut off at 40-80x the field's round-off, five times the Newton threshold.  Taken as
    converged there (the fresh Jacobian's 100x, odenet._newton.roundoff_factor), bdf
    ended in a step-size underflow; a kept J's floor is the round-off itself."""
    assert_cell_passes(any_problem("e5")[0], "bdf", 1e-3)


def test_ndf_on_e5_keeps_lowering_the_order_at_growing_modes():
    """E5 at rtol 1e-3: at order decisions from t ≈ 2e8 on, the differences carry modes
    of positive real Jacobian eigenvalues (180° from the negative real axis) at
    ``h|λ|`` of 2–27, beyond the lobes.  The stability guard lowers the order there as
    its ratio test alone did; with the lobe's reach applied to them too, ndf ended in
    a step-size underflow at t = 5.7e11.  Checked against the set's reference."""
    assert_cell_passes(any_problem("e5")[0], "ndf", 1e-3)
