"""The controller decides acceptance, the next step and failure — one rule set.

Each rule is checked on both number types it runs on (Python floats for one
system, [K] tensors for rows): hypothesis draws the inputs, and the two must agree.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odenet
from odenet._controller import FixedGrid, PIDController
from odenet._ops import HostOps, TensorOps
from odenet._solution import NEWTON_FAILED, NON_FINITE, NON_FINITE_STEP, STEP_UNDERFLOW, SUCCESS

D = torch.float64


def judge_both(ctrl, h, ratio, ok, memory, order=4):
    host = ctrl.judge(HostOps, h, ratio, ok, memory, order)
    t = lambda v: torch.tensor([v], dtype=D)  # noqa: E731
    mem = tuple(torch.tensor([v]) if isinstance(v, bool) else t(v) for v in memory)
    ok_t = None if ok is None else torch.tensor([ok])
    rows = ctrl.judge(TensorOps, t(h), t(ratio), ok_t, mem, order)
    return host, rows


@settings(max_examples=200, deadline=None)
@given(
    ratio=st.one_of(st.floats(0, 1e6), st.just(math.inf), st.just(math.nan)),
    h=st.floats(1e-8, 10),
    ok=st.sampled_from([None, True, False]),
    r1=st.floats(1e-6, 10),
    r2=st.floats(1e-6, 10),
    rejected=st.booleans(),
    h_rej=st.floats(1e-8, 20),
    r_rej=st.one_of(st.just(0.0), st.floats(1, 1e6)),
    kind=st.sampled_from(["I", "PI", "PID"]),
    observed=st.sampled_from([0.0, 0.5]),
)
def test_host_and_tensor_rules_agree(ratio, h, ok, r1, r2, rejected, h_rej, r_rej, kind, observed):
    ctrl = getattr(PIDController, kind)(observed_order=observed)
    memory = (r1, r2, rejected, h_rej, r_rej)
    (acc, h1, mem), (acc_t, h1_t, mem_t) = judge_both(ctrl, h, ratio, ok, memory)
    assert acc == bool(acc_t[0])
    assert math.isclose(h1, float(h1_t[0]), rel_tol=1e-12)
    assert mem[2] == bool(mem_t[2][0])
    assert mem[4] == float(mem_t[4][0])
    # the laws: a rejected step never stays the same size, an accepted one never
    # grows right after a rejection, and the factor stays in its bounds
    factor = h1 / h
    assert ctrl.factor_min * (1 - 1e-12) <= factor <= ctrl.factor_max * (1 + 1e-12) or (
        ok is False and factor == pytest.approx(ctrl.newton_factor)
    )
    if not acc:
        assert factor < 1
    if acc and rejected:
        assert factor <= 1 + 1e-12
    assert acc == (ok is not False and math.isfinite(ratio) and ratio <= 1)


def test_newton_failure_shrinks_even_when_the_error_estimate_is_small():
    ctrl = PIDController()
    acc, h1, _ = ctrl.judge(HostOps, 0.1, 0.01, False, (1.0, 1.0, False, 1.0, 0.0), 4)
    assert not acc and h1 == pytest.approx(0.1 * ctrl.newton_factor)


def test_non_finite_ratio_is_rejected_with_factor_min():
    ctrl = PIDController()
    for r in (math.nan, math.inf):
        acc, h1, _ = ctrl.judge(HostOps, 0.1, r, None, (1.0, 1.0, False, 1.0, 0.0), 4)
        assert not acc and h1 == pytest.approx(0.1 * ctrl.factor_min)


def test_dop853_combined_error_ratio():
    r5, r3 = 0.3, 2.0
    expect = r5**2 / math.sqrt(r5**2 + 0.01 * r3**2)
    assert PIDController.error_ratio(HostOps, [r5, r3]) == pytest.approx(expect)
    rows = PIDController.error_ratio(TensorOps, [torch.tensor([r5]), torch.tensor([r3])])
    assert float(rows[0]) == pytest.approx(expect)


@pytest.mark.parametrize(
    "accept, finite, ok, h_next, code",
    [
        (True, True, None, 1e-20, SUCCESS),
        (False, True, None, 1e-3, SUCCESS),
        (False, True, None, 1e-20, STEP_UNDERFLOW),
        (False, False, None, 1e-20, NON_FINITE),
        (False, True, False, 1e-20, NEWTON_FAILED),
        (False, True, None, math.nan, NON_FINITE_STEP),
    ],
)
def test_failure_codes(accept, finite, ok, h_next, code):
    host = PIDController.failure(
        HostOps, accept=accept, finite=finite, ok=ok, h_next=h_next, min_h=1e-15
    )
    rows = PIDController.failure(
        TensorOps,
        accept=torch.tensor([accept]),
        finite=torch.tensor([finite]),
        ok=None if ok is None else torch.tensor([ok]),
        h_next=torch.tensor([h_next], dtype=D),
        min_h=torch.tensor([1e-15], dtype=D),
    )
    assert int(host) == code == int(rows[0])


def test_fixed_grid_halves_a_failed_step_and_grows_back():
    ctrl = FixedGrid(0.1)
    acc, h1, _ = ctrl.judge(HostOps, 0.1, None, False, (), 1, h_prev=0.1, to_node=True)
    assert not acc and h1 == pytest.approx(0.05)
    acc, h1, _ = ctrl.judge(HostOps, 0.05, None, True, (), 1, h_prev=0.05, to_node=False)
    assert acc and h1 == pytest.approx(0.1)
    code = FixedGrid.failure(HostOps, accept=False, finite=False, ok=None, h_next=0.05, min_h=0)
    assert code == NON_FINITE


def test_bad_controller_settings_raise():
    with pytest.raises(odenet.InputError, match="newton_factor"):
        PIDController(newton_factor=1.0)
    with pytest.raises(odenet.InputError, match="safety"):
        PIDController(safety=0.0)
    with pytest.raises(odenet.InputError, match="controller"):
        odenet.solve(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), controller="Q")


def test_newton_failure_in_a_solve_ends_quickly_with_a_typed_error():
    # the reproducer: f becomes inf at t = 0.5; every trial across it fails
    calls = []

    def f(t, y):
        calls.append(float(t))
        return -y if float(t) < 0.5 else y * math.inf

    y0, t = torch.tensor([1.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    with pytest.raises(odenet.NewtonConvergenceError, match=r"t = 0\.5.*h = "):
        odenet.solve(f, y0, t, method="kvaerno5", max_steps=1000)
    assert len(calls) < 2000 and not any(math.isnan(c) for c in calls)
    sol = odenet.solve(f, y0, t, method="kvaerno5", max_steps=1000, throw=False)
    assert int(sol.status[0]) == NEWTON_FAILED and sol.stats["newton_failures"] > 0
    assert sol.stats["steps"] < 300


@pytest.mark.parametrize("method", ["dopri5", "kvaerno5"])
def test_nan_initial_step_estimate_fails_at_once(method):
    calls = []

    def f(t, y):
        calls.append(float(t))
        return -y if float(t) == 0.0 else y * math.nan

    sol = odenet.solve(
        f, torch.ones(1, dtype=D), torch.tensor([0.0, 1.0], dtype=D), method=method, throw=False
    )
    assert int(sol.status[0]) == NON_FINITE_STEP
    assert len(calls) <= 3 and not any(math.isnan(c) for c in calls)
    with pytest.raises(odenet.NonFiniteError, match="step size or the error estimate"):
        odenet.solve(f, torch.ones(1, dtype=D), torch.tensor([0.0, 1.0], dtype=D), method=method)


def test_nan_user_norm_fails_at_once():
    sol = odenet.solve(
        lambda t, y: -y,
        torch.ones(2, dtype=D),
        torch.tensor([0.0, 1.0], dtype=D),
        norm=lambda e: torch.tensor(math.nan),
        throw=False,
    )
    assert int(sol.status[0]) == NON_FINITE_STEP and sol.stats["nfe"] <= 2


def test_accept_min_step_takes_floor_steps_and_still_fails_on_non_finite():
    y0, t = torch.ones(1, dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    # rtol far below what h = 0.1 can give: every step is taken at the floor, accepted
    sol = odenet.solve(
        lambda t, y: -y, y0, t, rtol=1e-14, atol=1e-14, min_step=0.1, accept_min_step=True
    )
    assert sol.success and sol.stats["accepted"] <= 12
    assert abs(float(sol.ys[-1, 0]) - math.exp(-1)) < 1e-6  # dopri5 at h = 0.1
    # unstable at the floor: a non-finite trial is a failure, never accepted garbage
    long = torch.tensor([0.0, 5.0], dtype=D)
    bad = odenet.solve(
        lambda t, y: -1000 * y, y0, long, min_step=0.01, accept_min_step=True, throw=False
    )
    assert int(bad.status[0]) == NON_FINITE
    with pytest.raises(odenet.InputError, match="min_step"):
        odenet.solve(lambda t, y: -y, y0, t, accept_min_step=True)


@settings(max_examples=100, deadline=None)
@given(
    ratios=st.lists(st.one_of(st.floats(1e-6, 50), st.just(math.inf)), min_size=1, max_size=8),
    oks=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_predictive_controller_rules_agree_on_floats_and_tensors(ratios, oks):
    from odenet._controller import PredictiveController

    ctrl = PredictiveController()
    mem_h = ctrl.init_memory(HostOps, None)
    mem_t = ctrl.init_memory(TensorOps, torch.zeros(1, dtype=D))
    h = h_t = 0.1
    for r, ok in zip(ratios, oks):
        acc, h1, mem_h = ctrl.judge(HostOps, h, r, ok, mem_h, 3)
        acc_t, h1_t, mem_t = ctrl.judge(
            TensorOps,
            torch.tensor([h_t], dtype=D),
            torch.tensor([r], dtype=D),
            torch.tensor([ok]),
            mem_t,
            3,
        )
        assert acc == bool(acc_t[0]) and math.isclose(h1, float(h1_t[0]), rel_tol=1e-12)
        if not acc:
            assert h1 < h
        h, h_t = h1, float(h1_t[0])


def test_radau_iia5_defaults_to_the_predictive_controller_with_fewer_rejections():
    mu = 1000.0

    def vdp(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    y0, t = torch.tensor([2.0, 0.0], dtype=D), torch.tensor([0.0, 1500.0], dtype=D)
    auto = odenet.solve(vdp, y0, t, method="radau_iia5", rtol=1e-4, atol=1e-7)
    classic = odenet.solve(vdp, y0, t, method="radau_iia5", rtol=1e-4, atol=1e-7, controller="I")
    assert auto.stats["rejected"] < classic.stats["rejected"]
    torch.testing.assert_close(auto.ys[-1], classic.ys[-1], rtol=1e-2, atol=1e-3)


@settings(max_examples=150, deadline=None)
@given(
    ratio=st.one_of(st.floats(0, 1e3), st.just(math.inf)),
    ok=st.sampled_from([None, True, False]),
    rejected=st.booleans(),
    kind=st.sampled_from(["I", "PI", "PID", "predictive"]),
)
def test_a_held_step_keeps_h_exactly_only_when_accepted(ratio, ok, rejected, kind):
    """``hold`` (a BDF between step-size changes) keeps ``h`` bit for bit after an
    accepted step, so the method's next step reuses its LU; a rejected step shrinks
    exactly as it would without ``hold``; on floats and tensors alike."""
    from odenet._controller import controller_from

    ctrl, h = controller_from(kind), 0.37
    mem_h = ctrl.init_memory(HostOps, None)
    if kind != "predictive":
        mem_h = (0.5, 2.0, rejected, 1.0, 0.0)
    mem_t = tuple(torch.tensor([v], dtype=D if isinstance(v, float) else None) for v in mem_h)
    ok_t = None if ok is None else torch.tensor([ok])
    free = ctrl.judge(HostOps, h, ratio, ok, mem_h, 3)
    held = ctrl.judge(HostOps, h, ratio, ok, mem_h, 3, hold=True)
    held_t = ctrl.judge(
        TensorOps,
        torch.tensor([h], dtype=D),
        torch.tensor([ratio], dtype=D),
        ok_t,
        mem_t,
        3,
        hold=torch.tensor([True]),
    )
    assert held[0] == free[0] == bool(held_t[0][0])
    if free[0]:
        assert held[1] == h and float(held_t[1][0]) == h
    else:
        assert held[1] == free[1] < h
        assert math.isclose(float(held_t[1][0]), free[1], rel_tol=1e-12)
    # hold=False (and None) is the plain rule
    assert ctrl.judge(HostOps, h, ratio, ok, mem_h, 3, hold=False)[1] == free[1]


@pytest.mark.parametrize("kind", ["I", "PI", "predictive"])
def test_a_methods_safety_scale_multiplies_the_step_factor(kind):
    """``safety`` (BDF after ``n`` Newton iterations: ``(2M + 1)/(2M + n)``) scales
    the proposed factor, accepted or rejected, where no bound clips it; on floats and
    tensors alike."""
    from odenet._controller import controller_from

    ctrl = controller_from(kind)
    mem = ctrl.init_memory(HostOps, None)
    if kind != "predictive":
        mem = (0.5, 0.5, False, 1.0, 0.0)
    mem_t = tuple(torch.tensor([v], dtype=D if isinstance(v, float) else None) for v in mem)
    scale = 9 / 12  # M = 4, n = 4
    for ratio in (0.3, 1.5):  # accepted, rejected
        plain = ctrl.judge(HostOps, 0.2, ratio, True, mem, 3)[1]
        scaled = ctrl.judge(HostOps, 0.2, ratio, True, mem, 3, safety=scale)[1]
        assert scaled == pytest.approx(scale * plain, rel=1e-12), (ratio, plain, scaled)
        t = ctrl.judge(
            TensorOps,
            torch.tensor([0.2], dtype=D),
            torch.tensor([ratio], dtype=D),
            torch.tensor([True]),
            mem_t,
            3,
            safety=torch.tensor([scale], dtype=D),
        )[1]
        assert float(t[0]) == pytest.approx(scaled, rel=1e-12)


def test_a_second_rejection_with_per_row_orders_shrinks_by_the_observed_order():
    """A variable-order method (bdf, adams) gives ``error_order`` per row as a tensor;
    the observed-order rule clipped with a tensor bound, which torch refused (a
    TypeError at the second rejection of any masked solve).  Host and rows agree."""
    ctrl = PIDController(observed_order=0.5)
    h, h_rej, r, r_rej = 0.7, 1.0, 3.0, 4.0  # r ∝ h^k̂, k̂ = log(4/3)/log(1/0.7) ≈ 0.81
    host = ctrl.judge(HostOps, h, r, None, (1.0, 1.0, True, h_rej, r_rej), 4)
    t = lambda v: torch.tensor([v, v], dtype=D)  # noqa: E731
    rows = ctrl.judge(
        TensorOps,
        t(h),
        t(r),
        None,
        (t(1.0), t(1.0), torch.tensor([True, True]), t(h_rej), t(r_rej)),
        torch.tensor([4, 2]),
    )
    k_obs = math.log(r_rej / r) / math.log(h_rej / h)
    assert host[1] == pytest.approx(h * ctrl.safety * r ** (-1 / k_obs), rel=1e-12)
    assert float(rows[1][0]) == pytest.approx(host[1], rel=1e-12)
    # order 2 (k = 3) is above k̂ too: the same shrink
    assert float(rows[1][1]) == pytest.approx(host[1], rel=1e-12)


@pytest.mark.parametrize("kind", ["I", "PI", "predictive"])
def test_a_methods_newton_factor_replaces_the_controllers_after_a_newton_failure(kind):
    """Radau IIA gives its own factor for a step whose Newton iteration was predicted
    not to converge (``odenet._radau.newton_shrink``): a failed row takes it, a row
    whose advice is NaN takes the controller's ``newton_factor``, a solved row ignores
    it; on floats and [K] tensors alike."""
    from odenet._controller import controller_from

    ctrl = controller_from(kind)
    mem = ctrl.init_memory(HostOps, None)
    if kind != "predictive":
        mem = (0.5, 0.5, False, 1.0, 0.0)
    h, ratio = 0.2, 0.3
    failed = ctrl.judge(HostOps, h, ratio, False, mem, 3, newton_factor=0.7)
    assert not failed[0] and failed[1] == pytest.approx(0.7 * h, rel=1e-12)
    own = ctrl.judge(HostOps, h, ratio, False, mem, 3, newton_factor=math.nan)
    assert own[1] == pytest.approx(ctrl.newton_factor * h, rel=1e-12)
    assert ctrl.judge(HostOps, h, ratio, False, mem, 3)[1] == own[1]
    solved = ctrl.judge(HostOps, h, ratio, True, mem, 3)
    assert solved[0] and ctrl.judge(HostOps, h, ratio, True, mem, 3, newton_factor=0.7) == solved

    rows = lambda v, dt=D: torch.tensor([v] * 3, dtype=dt)  # noqa: E731
    mem_t = tuple(rows(v, D if isinstance(v, float) else None) for v in mem)
    acc, h_t, _ = ctrl.judge(
        TensorOps,
        rows(h),
        rows(ratio),
        torch.tensor([False, False, True]),
        mem_t,
        3,
        newton_factor=torch.tensor([0.7, math.nan, 0.6], dtype=D),
    )
    assert acc.tolist() == [False, False, True]
    expect = [failed[1], own[1], solved[1]]
    assert h_t.tolist() == pytest.approx(expect, rel=1e-12)
