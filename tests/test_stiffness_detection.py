"""Hairer's stiffness test on explicit Runge–Kutta steps (odenet._stiffness): the
estimate ``h·ρ`` against closed forms, the verdict on stiff and non-stiff problems,
and the advice a stiff solve that runs out of steps gets."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odenet
from odenet import MaxStepsError
from odenet import problems as P
from odenet._ops import TensorOps
from odenet._stepper import explicit_step, runtime
from odenet._stiffness import StiffnessMonitor, stability_limit, stage_pair
from odenet.stability import real_stability_interval

D = torch.float64
PAIRED = ["dopri5", "tsit5", "dop853"]


def monitor(method):
    rk = runtime(odenet.tableau(method), D, D, torch.device("cpu"))
    return rk, StiffnessMonitor.of(rk, TensorOps, torch.zeros(1, dtype=D))


def relaxation(lam):
    """``y' = λ(y − cos t) − sin t``: ``y = cos t + e^(λt)(y0 − 1)``; stiff for λ ≪ −1."""
    return lambda t, y: lam * (y - torch.cos(t)) - torch.sin(t)


@pytest.mark.parametrize("method", PAIRED)
def test_the_stage_pair_is_the_last_two_stages_at_one_node(method):
    tab = odenet.tableau(method)
    i, j = stage_pair(tab)
    assert j == tab.stages - 1 and i == j - 1 and tab.c[i] == tab.c[j] == 1.0
    # the limit is a fraction of the analyzer's real stability boundary
    assert stability_limit(tab) == pytest.approx(0.7 * abs(real_stability_interval(tab)))


@pytest.mark.parametrize("method", ["bosh3", "heun", "fehlberg2"])
def test_tableaus_without_two_stages_at_one_node_have_no_pair(method):
    assert stage_pair(odenet.tableau(method)) is None


@pytest.mark.parametrize("method", PAIRED)
@pytest.mark.parametrize("lam, h", [(-1e3, 2e-3), (-7.0, 0.3), (40.0, 1e-2)])
def test_h_rho_is_h_lambda_on_a_scalar_linear_field(method, lam, h):
    rk, mon = monitor(method)
    y = torch.tensor([[0.7]], dtype=D)
    _, _, ks = explicit_step(lambda t, y: lam * y, torch.tensor(0.0, dtype=D), y, h, rk)
    assert float(mon.h_rho(ks, h, y)[0]) == pytest.approx(abs(lam) * h, rel=1e-8)


@settings(max_examples=40, deadline=None)
@given(
    eigs=st.lists(st.floats(-1e4, 1e2), min_size=1, max_size=5),
    seed=st.integers(0, 2**31 - 1),
    h=st.floats(1e-5, 1.0),
    method=st.sampled_from(PAIRED),
)
def test_h_rho_never_exceeds_h_times_the_spectral_norm(eigs, seed, h, method):
    """For a symmetric ``A``, ``‖A d‖ / ‖d‖ ≤ ‖A‖₂ = max |λ|`` along any ``d``; the
    stage states' round-off moves ``d`` by at most 1 % of its size where the estimate
    is read (NaN where not)."""
    rng = np.random.default_rng(seed)
    n = len(eigs)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = torch.tensor(Q @ np.diag(eigs) @ Q.T, dtype=D)
    rk, mon = monitor(method)
    y = torch.tensor(rng.standard_normal((1, n)), dtype=D)
    _, _, ks = explicit_step(lambda t, y: y @ A.T, torch.tensor(0.0, dtype=D), y, h, rk)
    bound = h * max(abs(e) for e in eigs)
    estimate = float(mon.h_rho(ks, h, y)[0])
    assert math.isnan(estimate) or estimate <= bound * (1 + 1e-2)


@pytest.mark.parametrize("method", PAIRED)
@pytest.mark.parametrize("rtol", [1e-3, 1e-6])
def test_a_stiff_relaxation_is_found_stiff_after_its_transient(method, rtol):
    """λ = −5000: the transient ``e^(λt)`` is over by t ≈ 1e-3; from there the explicit
    step is held by stability (radau_iia5 takes ~10 steps on [0, 2], these thousands)."""
    t = torch.tensor([0.0, 2.0], dtype=D)
    y0 = torch.full((1,), 2.0, dtype=D)
    sol = odenet.solve(relaxation(-5000.0), y0, t, method=method, rtol=rtol, atol=rtol * 1e-3)
    assert sol.stats["steps"] > 1000
    assert 0.0 < sol.stats["stiff_at"] < 0.05
    assert "stiff_at=" in repr(sol)
    # the diagnosis changes nothing: the answer is the closed form's
    exact = math.cos(2.0) + math.exp(-5000.0 * 2.0)
    assert float(sol.ys[-1, 0]) == pytest.approx(exact, rel=100 * rtol)


@pytest.mark.parametrize("name", ["lorenz", "lotka_volterra", "kepler", "van_der_pol"])
def test_non_stiff_problems_are_not_found_stiff(name):
    prob = P.get_problem(name)
    t0, t1 = prob.span
    t = torch.tensor([t0, t0 + 20 * (t1 - t0)], dtype=D)
    for method in PAIRED:
        for rtol in (1e-3, 1e-6):
            sol = odenet.solve(prob.f, prob.y0_tensor(), t, method=method, rtol=rtol,
                               atol=rtol * 1e-3)  # fmt: skip
            assert sol.stats["stiff_at"] is None, (method, rtol)


def test_methods_the_test_does_not_apply_to_report_nothing():
    t = torch.tensor([0.0, 0.5], dtype=D)
    y0 = torch.ones(1, dtype=D)
    for kw in ({"method": "bosh3"}, {"method": "radau_iia5"}, {"method": "bdf"},
               {"method": "rk4", "step_size": 1e-4}):  # fmt: skip
        sol = odenet.solve(relaxation(-5000.0), y0, t, rtol=1e-4, atol=1e-7, **kw)
        assert "stiff_at" not in sol.stats, kw


def test_a_solve_backward_in_time_reports_the_users_time():
    t = torch.tensor([2.0, 0.0], dtype=D)
    y0 = torch.full((1,), 2.0, dtype=D)
    # backward in time the decay grows: y' = −λ(...) on the reversed clock
    sol = odenet.solve(relaxation(5000.0), y0, t, method="dopri5", rtol=1e-6, atol=1e-9)
    assert 1.95 < sol.stats["stiff_at"] < 2.0


def test_per_sample_rows_are_judged_one_by_one():
    lam = torch.tensor([[-5000.0], [-1.0]], dtype=D)

    def f(t, y):  # t: [2], one time per row
        return lam * (y - torch.cos(t)[:, None]) - torch.sin(t)[:, None]

    t = torch.tensor([[0.0, 2.0], [0.0, 2.0]], dtype=D)
    sol = odenet.solve(f, torch.full((2, 1), 2.0, dtype=D), t, method="dopri5", rtol=1e-6,
                       atol=1e-9)  # fmt: skip
    at = sol.stats["stiff_at"]
    assert at.shape == (2,) and 0.0 < float(at[0]) < 0.05 and math.isnan(float(at[1]))


def test_a_stiff_solve_out_of_steps_is_told_it_is_stiff():
    """dopri5 on Robertson runs out of steps at t ≈ 1 of 1e5: raising max_steps, what the
    message said alone, would not get it there; an implicit method is the advice."""
    prob = P.get_problem("robertson_long")
    t = torch.tensor(prob.span, dtype=D)
    with pytest.raises(MaxStepsError, match=r"stiff for dopri5 from t ≈ .*radau_iia5"):
        odenet.solve(prob.f, prob.y0_tensor(), t, method="dopri5", rtol=1e-6, atol=1e-10,
                     max_steps=3000)  # fmt: skip
    # a non-stiff problem that runs out of steps is not called stiff
    lv = P.get_problem("lotka_volterra")
    with pytest.raises(MaxStepsError) as info:
        odenet.solve(lv.f, lv.y0_tensor(), torch.tensor(lv.span, dtype=D), method="dopri5",
                     rtol=1e-6, max_steps=40)  # fmt: skip
    assert "stiff" not in str(info.value)


def _gradient(lam0, sensitivity):
    lam = torch.tensor(lam0, dtype=D, requires_grad=True)
    sol = odenet.solve(lambda t, y: lam * (y - torch.cos(t)) - torch.sin(t),
                       torch.full((1,), 2.0, dtype=D), torch.tensor([0.0, 2.0], dtype=D),
                       method="dopri5", rtol=1e-6, atol=1e-9, sensitivity=sensitivity)  # fmt: skip
    (g,) = torch.autograd.grad(sol.ys[-1, 0], lam)
    return float(g)


def test_gradients_through_steps_held_past_the_stability_limit_are_flagged():
    """y = cos t + e^(λt): dy(2)/dλ = 2e^(2λ) ≈ 0 for λ = −5000.  Backpropagation through
    dopri5's steps, which sit about the stability boundary with |R(hλ)| up to 5, follows
    a perturbation with the steps held fixed: 1.4e87 in direct and checkpoint mode; the
    adjoint solves its own equation.  λ = −500 at this rtol keeps |R| < 1: no word."""
    for sensitivity in ("direct", "checkpoint"):
        with pytest.warns(odenet.StabilityWarning, match=r"gradients through this dopri5"):
            assert abs(_gradient(-5000.0, sensitivity)) > 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("error", odenet.StabilityWarning)
        assert abs(_gradient(-5000.0, "adjoint")) < 1e-6
        assert abs(_gradient(-500.0, "direct")) < 1e-6
