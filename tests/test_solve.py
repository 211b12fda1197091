"""The integrator core against independent truths: closed forms, scipy, torchdiffeq."""

import math

import numpy as np
import pytest
import scipy.integrate
import torch
import torchdiffeq

import odenet

D = torch.float64


def lotka_volterra(t, y):
    a, b, c, d = 1.5, 1.0, 3.0, 1.0
    return torch.stack([a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]])


def lv_numpy(t, y):
    return lotka_volterra(t, torch.as_tensor(y)).numpy()


def scipy_reference(f_np, y0, t):
    sol = scipy.integrate.solve_ivp(
        f_np, (t[0], t[-1]), y0, method="DOP853", t_eval=t, rtol=1e-13, atol=1e-13
    )
    return sol.y.T


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_adaptive_error_is_within_tolerance_of_scipy_reference(method):
    t = np.linspace(0, 5, 11)
    y0 = np.array([1.0, 1.0])
    ref = scipy_reference(lv_numpy, y0, t)
    rtol, atol = 1e-8, 1e-10
    sol = odenet.solve(
        lotka_volterra, torch.tensor(y0), torch.tensor(t), method=method, rtol=rtol, atol=atol
    )
    # scipy's convention: error in units of the tolerance (global error may exceed the
    # local tolerance by a modest factor)
    err_units = np.abs(sol.ys.numpy() - ref) / (atol + rtol * np.abs(ref))
    assert err_units.max() < 100


def test_dopri5_matches_scipy_rk45_at_equal_tolerance_within_their_error():
    t = np.linspace(0, 5, 6)
    y0 = np.array([1.0, 1.0])
    ref = scipy_reference(lv_numpy, y0, t)
    ours = odenet.solve(lotka_volterra, torch.tensor(y0), torch.tensor(t), rtol=1e-6, atol=1e-9)
    theirs = scipy.integrate.solve_ivp(lv_numpy, (0, 5), y0, t_eval=t, rtol=1e-6, atol=1e-9)
    err_ours = np.abs(ours.ys.numpy() - ref).max()
    err_scipy = np.abs(theirs.y.T - ref).max()
    assert err_ours < 10 * err_scipy + 1e-12
    assert ours.stats["nfe"] < 2 * theirs.nfev


def test_dopri5_agrees_with_torchdiffeq_on_the_same_input_with_no_more_evaluations():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    net = net.double()
    y0 = torch.randn(8, 4, dtype=D)
    t = torch.linspace(0, 3, 7, dtype=D)
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return net(y)

    with torch.no_grad():
        ours = odenet.solve(f, y0, t, rtol=1e-9, atol=1e-11)
        n_ours = calls[0]
        calls[0] = 0
        theirs = torchdiffeq.odeint(f, y0, t, rtol=1e-9, atol=1e-11)
        n_theirs = calls[0]
    assert torch.allclose(ours.ys, theirs, rtol=1e-7, atol=1e-9)
    assert ours.stats["nfe"] == n_ours  # the counter is the truth
    assert n_ours <= n_theirs


@pytest.mark.parametrize(
    "method,step_size", [("dopri5", None), ("rk4", 0.01), ("radau_iia5", 0.05)]
)
def test_nfe_counts_equal_real_calls(method, step_size):
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return -y + torch.sin(t)

    sol = odenet.solve(
        f,
        torch.ones(3, dtype=D),
        torch.linspace(0, 1, 5, dtype=D),
        method=method,
        step_size=step_size,
    )
    assert sol.stats["nfe"] == calls[0]
    assert sol.stats["steps"] == sol.stats["accepted"] + sol.stats["rejected"]


def test_integration_backward_in_time_matches_closed_form():
    t = torch.linspace(2.0, 0.0, 5, dtype=D)
    y_T = torch.tensor([math.exp(2.0)], dtype=D)
    sol = odenet.solve(lambda t, y: y, y_T, t, rtol=1e-10, atol=1e-12)
    assert torch.allclose(sol.ys[:, 0], torch.exp(t), rtol=1e-8)


def test_float32_solves_keep_float32_and_are_accurate_to_float32():
    t = torch.linspace(0, 1, 4)
    sol = odenet.solve(lambda t, y: -2 * y, torch.ones(2), t, rtol=1e-5, atol=1e-7)
    assert sol.ys.dtype == torch.float32
    assert torch.allclose(sol.ys[:, 0], torch.exp(-2 * t), rtol=1e-4)


@pytest.mark.parametrize("method", ["dopri5", "adams", "radau_iia5", "bdf"])
def test_a_float32_solve_far_from_t_0_runs_on_a_float64_clock(method):
    # y' = cos t on [100, 150] in float32: a float32 clock there resolves 7.6e-6, and the
    # first step (1e-4) counted as "below round-off": the solve ended in an underflow.
    # The clock is float64 now (torchdiffeq's mixed precision); f still gets float32 t.
    seen = set()

    def f(t, y):
        seen.add(t.dtype)
        return torch.cos(t) * torch.ones_like(y)

    sol = odenet.solve(f, torch.zeros(1), torch.tensor([100.0, 150.0]), method=method, rtol=1e-4)
    assert sol.success and sol.ys.dtype == torch.float32
    # f's own float32 time (ulp 7.6e-6 at 100) limits this to ~50·4e-6 = 2e-4 and beyond
    assert abs(float(sol.ys[-1, 0]) - (math.sin(150) - math.sin(100))) < 1e-3
    assert seen == {torch.float32}
    # per-sample float32 grids far from 0 as well
    rows = odenet.solve(
        lambda t, y: torch.cos(t)[:, None] * torch.ones_like(y),
        torch.zeros(2, 1),
        torch.tensor([[100.0, 120.0, 150.0], [300.0, 310.0, 320.0]]),
        method=method,
        rtol=1e-4,
    )
    exact = torch.tensor([math.sin(150) - math.sin(100), math.sin(320) - math.sin(300)])
    assert rows.success and (rows.ys[:, -1, 0] - exact).abs().max() < 1e-3


def test_dense_output_hits_requested_times_without_extra_steps():
    # y' = y cos t, y = exp(sin t): many output times, few steps
    f = lambda t, y: y * torch.cos(t)  # noqa: E731
    t_few = torch.tensor([0.0, 6.0], dtype=D)
    t_many = torch.linspace(0, 6, 301, dtype=D)
    few = odenet.solve(f, torch.ones(1, dtype=D), t_few, rtol=1e-9, atol=1e-12)
    many = odenet.solve(f, torch.ones(1, dtype=D), t_many, rtol=1e-9, atol=1e-12)
    assert many.stats["steps"] == few.stats["steps"]
    exact = torch.exp(torch.sin(t_many))
    assert (many.ys[:, 0] - exact).abs().max() < 1e-7


def test_fixed_grid_lands_on_the_final_time_and_interpolates_between_nodes():
    f = lambda t, y: -y  # noqa: E731
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=D)
    sol = odenet.solve(f, torch.ones(1, dtype=D), t, method="rk4", step_size=0.3)
    assert sol.stats["steps"] == 4  # 0.3, 0.6, 0.9, 1.0
    assert torch.allclose(sol.ys[:, 0], torch.exp(-t), atol=5e-5)  # rk4 global error at h = 0.3
    # the final value is a step result, not an interpolation: rk4 accuracy at h = 0.3
    r = 1 - 0.3 + 0.3**2 / 2 - 0.3**3 / 6 + 0.3**4 / 24
    r_last = 1 - 0.1 + 0.1**2 / 2 - 0.1**3 / 6 + 0.1**4 / 24
    assert math.isclose(float(sol.ys[-1, 0]), r**3 * r_last, rel_tol=1e-13)


def test_grid_on_outputs_takes_one_step_per_interval():
    t = torch.tensor([0.0, 0.1, 0.3, 0.35, 1.0], dtype=D)
    sol = odenet.solve(
        lambda t, y: -y, torch.ones(1, dtype=D), t, method="euler", grid_on_outputs=True
    )
    assert sol.stats["steps"] == 4
    expected = torch.cumprod(torch.cat([torch.ones(1, dtype=D), 1 - t.diff()]), 0)
    assert torch.allclose(sol.ys[:, 0], expected, rtol=1e-14)


@pytest.mark.parametrize("controller", ["I", "PI", "PID", odenet.PIDController(0.2, 0.4, 0.0)])
def test_every_controller_meets_the_tolerance(controller):
    t = torch.linspace(0, 10, 3, dtype=D)

    # Van der Pol mu = 5: mildly stiff, exercises rejections
    def vdp(t, y):
        return torch.stack([y[1], 5 * (1 - y[0] ** 2) * y[1] - y[0]])

    ref = scipy.integrate.solve_ivp(
        lambda t, y: vdp(t, torch.as_tensor(y)).numpy(),
        (0, 10),
        [2.0, 0.0],
        method="Radau",
        t_eval=t.numpy(),
        rtol=1e-12,
        atol=1e-12,
    ).y.T
    sol = odenet.solve(
        vdp, torch.tensor([2.0, 0.0], dtype=D), t, rtol=1e-7, atol=1e-9, controller=controller
    )
    assert np.abs(sol.ys.numpy() - ref).max() < 1e-4
    assert sol.stats["rejected"] < sol.stats["accepted"]


def test_max_step_and_first_step_are_honoured():
    t = torch.tensor([0.0, 1.0], dtype=D)
    sol = odenet.solve(lambda t, y: 0 * y, torch.ones(1, dtype=D), t, max_step=0.1)
    assert sol.stats["steps"] >= 10
    sol = odenet.solve(lambda t, y: -y, torch.ones(1, dtype=D), t, first_step=1e-3)
    assert sol.success


def test_step_is_the_one_step_map_of_the_scheme():
    y = torch.tensor([1.0, 2.0], dtype=D)
    h = 0.1
    # forward Euler: y + h f(y); backward Euler on a linear field: (I - hA)^-1 y
    A = torch.tensor([[-1.0, 2.0], [0.0, -3.0]], dtype=D)
    f = lambda t, y: A @ y  # noqa: E731
    assert torch.allclose(odenet.step(f, 0.0, y, h, "euler"), y + h * A @ y)
    be = torch.linalg.solve(torch.eye(2, dtype=D) - h * A, y)
    assert torch.allclose(odenet.step(f, 0.0, y, h, "backward_euler"), be, rtol=1e-13)


# --- isoutofdomain: trial steps that leave the domain are rejected ----------------------


def _decay(t, y):
    return -10.0 * y


def _accepted_states(**kw):
    """The state at the start of every accepted step, and the solution."""
    states = []

    def cb(kind, t, y, dt):
        if kind == "accept":
            states.append(y.detach().clone())

    sol = odenet.solve(
        _decay,
        kw.pop("y0", torch.tensor([0.05], dtype=torch.float64)),
        kw.pop("t", torch.tensor([0.0, 5.0], dtype=torch.float64)),
        method="bosh3",
        rtol=0.1,
        atol=0.1,
        callback=cb,
        **kw,
    )
    return torch.stack(states), sol


def test_isoutofdomain_keeps_accepted_states_inside():
    # y = 0.05 e^(−10 t) > 0; at tolerances of 0.1 bosh3's steps overshoot below zero
    # (within the absolute tolerance, status ok); with the domain check none does
    plain, _ = _accepted_states()
    assert float(plain.min()) < 0
    inside, sol = _accepted_states(isoutofdomain=lambda t, y: bool((y < 0).any()))
    assert float(inside.min()) >= 0
    assert bool(sol.success) and float(sol.ys[-1]) >= 0
    assert sol.stats["rejected"] > 0


def test_isoutofdomain_per_sample_rows_decide_alone():
    # per-sample grids: t [B], y [B, 1], one verdict per row ([B] bool); row 0 starts
    # where the plain solve overshoots, row 1 far inside (its steps are not touched)
    y0 = torch.tensor([[0.05], [5.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 5.0], [0.0, 0.3]], dtype=torch.float64)
    calls = []

    def outside(tt, y):
        calls.append(tt.shape)
        return (y < 0).any(dim=1)

    states, sol = _accepted_states(y0=y0, t=t, isoutofdomain=outside)
    assert calls and calls[0] == (2,)
    assert bool(sol.success) and float(sol.ys[:, -1].min()) >= 0
    exact = 5.0 * math.exp(-3.0)
    assert abs(float(sol.ys[1, -1, 0]) - exact) < 0.2 * (1 + exact)


def test_isoutofdomain_bad_input_is_an_input_error():
    y0, t = torch.tensor([1.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    with pytest.raises(odenet.InputError, match="fixed grid"):
        odenet.solve(_decay, y0, t, step_size=0.1, isoutofdomain=lambda t, y: False)
    with pytest.raises(odenet.InputError, match="must return a bool"):
        odenet.solve(_decay, y0, t, isoutofdomain=lambda t, y: y)
    with pytest.raises(odenet.InputError, match="callable"):
        odenet.solve(_decay, y0, t, isoutofdomain=3)


def test_isoutofdomain_that_no_step_can_meet_ends_in_an_underflow():
    # every trial end flagged: the steps shrink to the round-off of t, then the solve
    # says so (it neither loops forever nor returns the start as a result)
    with pytest.raises(odenet.StepSizeUnderflowError):
        odenet.solve(
            _decay,
            torch.tensor([1.0], dtype=D),
            torch.tensor([0.0, 1.0], dtype=D),
            isoutofdomain=lambda t, y: True,
        )
