"""The host-side loop for one system and the masked K-row loop are the same algorithm.

One system with an explicit method runs on the host backend of ``odenet._loop`` (control in Python
floats), everything else on its masked backend ([K] tensors).  Fed the same problem
they must take the same steps, report the same outputs, statistics, failures and
recorded trajectory.  Each loop is also checked against closed forms and peers
elsewhere; this file pins that the fast path is not a second, different solver.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import odenet
from odenet._loop import integrate
from odenet._solution import MAX_STEPS, NON_FINITE, STEP_UNDERFLOW
from odenet._solve import prepare

D = torch.float64


def both_loops(f, y0, t, *, record=False, **kw):
    opts = dict(
        method="dopri5",
        rtol=1e-7,
        atol=1e-9,
        step_size=None,
        max_steps=100_000,
        first_step=None,
        min_step=0.0,
        max_step=None,
        controller="I",
        norm=None,
        newton_tol=None,
        newton_max_iter=None,
    )
    opts.update(kw)
    if opts["step_size"] is not None or opts.get("grid_on_outputs"):  # adaptive steps only
        opts["controller"] = None
    results = []
    for host in (True, False):
        prep, _ = prepare(f, y0, t, **opts)
        g = prep.internal_field(f)
        assert hasattr(g, "host")
        field = g if host else (lambda s, y, g=g: g(s, y))  # no `.host`: the masked loop
        rec = [] if record else None
        res = integrate(field, prep.s_out, prep.y0_rows, prep.cfg, record=rec)
        results.append((res, rec, prep.nfe[0]))
    return results


def van_der_pol(t, y):
    return torch.stack([y[1], 2.0 * (1 - y[0] ** 2) * y[1] - y[0]])


def forced(t, y):  # uses t, so the stage times matter
    return -y + torch.sin(3 * t) * torch.ones_like(y)


def assert_same(results, rtol=1e-12, s_rtol=1e-14):
    """Same accept/reject sequence, NFE, status; states and times to ``rtol``, ``s_rtol``.

    Adaptive solves agree only to round-off amplified: the error estimate
    Σ (b_i − b̂_i) k_i cancels many digits (all of them on a first step far below the
    tolerance), so its rounding depends on the summation order.
    """
    (a, rec_a, nfe_a), (b, rec_b, nfe_b) = results
    assert torch.equal(a.status, b.status)
    assert torch.equal(a.accepted, b.accepted)
    assert torch.equal(a.rejected, b.rejected)
    assert nfe_a == nfe_b
    torch.testing.assert_close(a.t_reached, b.t_reached, rtol=s_rtol, atol=s_rtol)
    torch.testing.assert_close(a.ys, b.ys, rtol=rtol, atol=rtol, equal_nan=True)
    if rec_a is not None:
        assert len(rec_a) == len(rec_b)
        for (sa, ya, acc_a), (sb, yb, acc_b) in zip(rec_a, rec_b, strict=True):
            assert torch.equal(acc_a, acc_b)
            torch.testing.assert_close(sa, sb, rtol=s_rtol, atol=s_rtol)
            if s_rtol < 1e-12:  # the same step ends: the same states
                torch.testing.assert_close(ya, yb, rtol=rtol, atol=rtol)


T_OUT = torch.tensor([0.0, 0.3, 0.31, 1.0, 2.5, 4.0], dtype=D)


@pytest.mark.parametrize(
    "method, controller, rtol",
    [
        ("dopri5", "I", 1e-7),
        ("dopri5", "PI", 1e-7),
        ("dopri5", "PID", 1e-7),
        ("tsit5", "I", 1e-7),
        ("dop853", "I", 1e-7),
        ("dop853", "PI", 1e-7),
        ("bosh3", "PI", 1e-6),
        ("fehlberg2", "I", 1e-4),
    ],
)
def test_adaptive_steps_outputs_and_stats_agree(method, controller, rtol):
    y0 = torch.tensor([2.0, 0.0], dtype=D)
    results = both_loops(
        van_der_pol, y0, T_OUT, method=method, controller=controller, rtol=rtol, record=True
    )
    assert_same(results, rtol=10 * rtol, s_rtol=1e-3)


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="rk4", step_size=0.07),  # outputs between nodes, last step shortened
        dict(method="euler", step_size=0.25),
        dict(method="ralston", step_size=0.1),
        dict(method="rk4", step_size=math.inf, grid_on_outputs=True),
        dict(method="dopri5", first_step=1e-3, max_step=0.05),
        dict(method="dopri5", rtol=torch.tensor([1e-6, 1e-9], dtype=D), atol=1e-12),
        dict(method="dopri5", norm=lambda e: e.abs().max()),
    ],
)
def test_fixed_grids_and_options_agree(kw):
    y0 = torch.tensor([1.0, -0.5], dtype=D)
    if kw.get("grid_on_outputs"):
        kw = {**kw, "step_size": None}
    adaptive = "step_size" not in kw and not kw.get("grid_on_outputs")
    tols = dict(rtol=1e-6, s_rtol=1e-3) if adaptive else {}
    assert_same(both_loops(forced, y0, T_OUT, record=True, **kw), **tols)


def test_backward_in_time_and_float32_agree():
    y0 = torch.tensor([0.5, 1.0])
    results = both_loops(forced, y0, torch.linspace(3.0, 0.0, 7), rtol=1e-5, atol=1e-7)
    assert_same(results, rtol=1e-5, s_rtol=1e-3)


@pytest.mark.parametrize(
    "method, mu",
    [("radau_iia5", 100.0), ("kvaerno5", 100.0), ("bdf", 100.0), ("ndf", 100.0), ("adams", 2.0)],
)
def test_a_float32_implicit_or_multistep_solve_is_the_same_with_a_callback(method, mu):
    """An observer does not change the steps.  A callback moves one system from the
    host backend (its controller in Python floats) to the masked one, whose controller
    multiplied float32 error norms and Newton safety scales: every one of these methods
    took other steps with it (radau_iia5 on stick_slip at rtol 1.194e-3: 4523 vs 4301
    f-evaluations, 26 vs 24·rtol).  Their steps and stage solvers are the masked
    backend's on both (explicit methods have a host kernel of their own, which agrees
    to round-off only)."""

    def field(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    y0 = torch.tensor([2.0, 0.0], dtype=torch.float32)
    t = torch.linspace(0.0, 20.0, 5, dtype=D)
    seen = []
    sols = [
        odenet.solve(field, y0, t, method=method, rtol=1e-3, atol=1e-6, callback=cb)
        for cb in (None, lambda kind, *a: seen.append(kind))
    ]
    assert seen  # the callback ran (on the masked backend)
    plain, observed = sols
    assert int(plain.stats["nfe"]) == int(observed.stats["nfe"])
    assert int(plain.stats["steps"]) == int(observed.stats["steps"])
    assert torch.equal(plain.ys, observed.ys)


def blow_up(t, y):  # y' = y², y(0) = 1: y = 1/(1 − t) leaves every float at t = 1
    return y * y


@pytest.mark.parametrize(
    "kw, code",
    [
        (dict(method="dopri5", rtol=1e-3, atol=1e-3), STEP_UNDERFLOW),
        (dict(method="rk4", step_size=0.5), NON_FINITE),  # on a fixed grid: at once
        (dict(method="dopri5", max_steps=5), MAX_STEPS),
    ],
)
def test_failures_agree(kw, code):
    y0 = torch.ones(1, dtype=D)
    results = both_loops(blow_up, y0, torch.tensor([0.0, 0.5, 3.0], dtype=D), **kw)
    if code == NON_FINITE:  # a fixed grid: the same steps to the last bit
        assert_same(results)
    else:  # near the pole the adaptive step sequence amplifies round-off
        for res, _, _ in results:
            assert int(res.status[0]) in (code, NON_FINITE)
            assert float(res.t_reached[0]) < 1.0 + 1e-6  # the pole of the exact solution
    status = int(results[0][0].status[0])
    # shrinking steps towards the pole end either below the minimum step or non-finite
    assert status == code or (code == STEP_UNDERFLOW and status == NON_FINITE)
    # the output reached before the failure is the closed form; the unreached one is NaN
    ys = results[0][0].ys[0, :, 0]
    if code != MAX_STEPS:  # rk4 with h = 0.5 is accurate to 0.6 % here
        assert abs(float(ys[1]) - 2.0) < (2e-2 if code == NON_FINITE else 1e-3)
    assert math.isnan(float(ys[2]))


# --- the equivalence as a property: any explicit method, tolerance and output grid -----

EXPLICIT_ADAPTIVE = ["dopri5", "tsit5", "bosh3", "dop853", "fehlberg2", "heun"]
EXPLICIT_FIXED = ["euler", "midpoint", "rk4", "rk38", "ssprk3", "ralston"]
# low orders at rtol 1e-9 take 1e4-1e5 steps (heun hits max_steps in ~70 s): the law
# is the same at any tolerance, so their draws are floored where a solve stays ~1 s
RTOL_FLOOR = {"heun": 1e-5, "fehlberg2": 1e-6, "bosh3": 1e-7}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(EXPLICIT_ADAPTIVE + EXPLICIT_FIXED),
    log_rtol=st.floats(-9, -3),
    gaps=st.lists(st.floats(0.01, 1.5), min_size=1, max_size=6),
    backward=st.booleans(),
    h=st.floats(0.02, 0.4),
)
def test_both_backends_take_the_same_steps(method, log_rtol, gaps, backward, h):
    times = torch.tensor([0.0, *np.cumsum(gaps).tolist()], dtype=D)
    if backward:
        times = times.flip(0)
    y0 = torch.tensor([1.0, -0.5], dtype=D)
    if method in EXPLICIT_FIXED:
        assert_same(both_loops(forced, y0, times, record=True, method=method, step_size=h))
    else:
        rtol = max(10.0**log_rtol, RTOL_FLOOR.get(method, 0.0))
        results = both_loops(forced, y0, times, record=True, method=method, rtol=rtol, atol=rtol)
        assert_same(results, rtol=10 * rtol, s_rtol=1e-3)


@pytest.mark.parametrize("method", ["dopri5", "radau_iia5"])
@pytest.mark.parametrize("compile", [False, True])
def test_steps_far_from_zero_move_the_state_as_far_as_the_clock(method, compile):
    """y' = [cos(t − t0), 1] from t0 = 1e9: the second component is t − t0 for any RK
    method, exactly.  The state moved by the nominal h while the clock moved by
    fl(s + h) − s: 2.7e-7 (dopri5) and 1.2e-5 (radau_iia5, 12× rtol) off after 100,
    with status ok.  scipy (which steps by fl(s + h) − s) gets 1e-14."""
    if compile and method != "dopri5":
        pytest.skip("compiled blocks are for explicit steps")
    t0 = 1e9

    def f(t, y):
        return torch.stack([torch.cos(t - t0), torch.ones_like(t)])

    t = t0 + torch.tensor([0.0, 10.0, 50.0, 100.0], dtype=torch.float64)
    sol = odenet.solve(
        f,
        torch.zeros(2, dtype=torch.float64),
        t,
        method=method,
        rtol=1e-8,
        atol=1e-10,
        compile=compile,
    )
    assert (sol.ys[:, 1] - (t - t0)).abs().max() < 1e-11
    assert (sol.ys[:, 0] - torch.sin(t - t0)).abs().max() < 1e-5


@pytest.mark.parametrize("rows", [1, 2])  # the host backend, and the masked one
@pytest.mark.parametrize("sensitivity", ["direct", "checkpoint", "adjoint"])
def test_an_output_near_a_step_end_far_from_zero_is_interpolated(rows, sensitivity):
    """An output within the loop's landing tolerance 64·eps·|t| of a step end was
    given the step end's state: at t = 1e9 that window is 1.4e-5, and rk4 on y' = 1
    (exact for any RK method) returned 5e-6 at an output 5e-6 past a node."""
    t0 = 1e9
    base = torch.tensor([0.0, 0.5 + 5e-6, 1.0 + 3e-6, 2.0], dtype=torch.float64)
    t = t0 + (base if rows == 1 else torch.stack([base, base / 2]))
    y0 = torch.zeros((1,) if rows == 1 else (2, 1), dtype=torch.float64, requires_grad=True)
    sol = odenet.solve(
        lambda t, y: torch.ones_like(y) + 0 * y,
        y0,
        t,
        method="rk4",
        step_size=0.1,
        sensitivity=sensitivity,
    )
    exact = (t - t0).reshape(sol.ys.shape[:-1])
    assert (sol.ys[..., 0] - exact).abs().max() < 1e-12
    sol.ys.sum().backward()
    assert torch.allclose(y0.grad, torch.full_like(y0, base.numel()))
