"""The adaptive trapezoid's Milne-device error estimate (odenet._trapezoid).

Truths: the trapezoid's local error ``−h³y'''/12`` in closed form on cubics, closed-form
solutions (harmonic oscillator, a quadratic), single-row solves for a batch, and scipy
Radau's error on a standard stiff problem (the must-hold of issue 14).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from _scipy_radau import radau_error
from hypothesis import given, settings
from hypothesis import strategies as st

import odenet
from odenet import problems as P
from odenet._trapezoid import MilneTrapezoid, midpoint_estimate, milne_estimate

D = torch.float64


@settings(max_examples=60, deadline=None)
@given(
    coefficients=st.lists(st.floats(-5, 5), min_size=4, max_size=4),
    t0=st.floats(-3, 3),
    h=st.floats(1e-3, 1.0),
    ratio=st.floats(0.1, 10.0),
    backward=st.booleans(),
)
def test_milne_estimate_is_the_trapezoid_local_error_on_cubics(
    coefficients, t0, h, ratio, backward
):
    # y = a t³ + b t² + c t + d with f = y'(t): one trapezoid step has the local error
    # y(t0 + h) − y1 = −h³ y'''/12 = −a h³/2 exactly, and the estimate is exact there
    a, b, c, d = coefficients
    sign = -1.0 if backward else 1.0
    h, H = sign * h, sign * h / ratio

    def y(t):
        return a * t**3 + b * t**2 + c * t + d

    def f(t):
        return 3 * a * t**2 + 2 * b * t + c

    y1 = y(t0) + h / 2 * (f(t0) + f(t0 + h))
    exact = y(t0 + h) - y1
    T = [torch.tensor([[v]], dtype=D) for v in (y(t0), f(t0), f(t0 - H), y1)]
    est = milne_estimate(*T, torch.tensor([h], dtype=D), torch.tensor([H], dtype=D))
    assert exact == pytest.approx(-a * h**3 / 2, abs=1e-12)
    assert float(est) == pytest.approx(exact, rel=1e-7, abs=1e-11)


@settings(max_examples=60, deadline=None)
@given(
    coefficients=st.lists(st.floats(-5, 5), min_size=4, max_size=4),
    t0=st.floats(-3, 3),
    h=st.floats(-1.0, 1.0).filter(lambda v: abs(v) > 1e-3),
)
def test_midpoint_estimate_is_the_local_error_where_f_depends_on_t_alone(coefficients, t0, h):
    # the estimate of a step with no predecessor: one more f at the step's midpoint
    a, b, c, _ = coefficients

    def f(t):
        return 3 * a * t**2 + 2 * b * t + c

    T = [torch.tensor([[v]], dtype=D) for v in (f(t0), f(t0 + h), f(t0 + h / 2))]
    est = midpoint_estimate(*T, torch.tensor([h], dtype=D))
    assert float(est) == pytest.approx(-a * h**3 / 2, rel=1e-7, abs=1e-11)


def test_a_restart_after_a_jump_takes_no_rejected_step():
    # f jumps at t = 1 (jump_t: the loop lands just before and restarts just after).
    # The step after it has no predecessor on its side; the solution is piecewise
    # quadratic, so the trapezoid and its midpoint estimate are exact and the steps grow
    # at once.  The forward Euler estimate (h²/2 here, times κ) that such steps had
    # before took 15 rejections and 33 steps
    def f(t, y):
        return (t + 5.0 * (t > 1.0)) * torch.ones_like(y)

    t = torch.tensor([0.0, 50.0], dtype=D)
    sol = odenet.solve(
        f, torch.zeros(1, dtype=D), t, method="trapezoid", rtol=1e-6, atol=1e-6, jump_t=[1.0]
    )
    assert float(sol.ys[-1, 0]) == pytest.approx(1250.0 + 5.0 * 49.0, rel=1e-12)
    assert int(sol.stats["rejected"]) == 0 and int(sol.stats["steps"]) <= 10


def harmonic(t, y):
    return torch.stack([y[..., 1], -y[..., 0]], -1)


def test_the_global_error_follows_rtol():
    # tolerance proportionality (what κ's rtol^(−1/2) is for, with an estimate of the
    # trapezoid's own local error): the end error over rtol is the same at every rtol;
    # with the forward Euler estimate it fell like rtol^(1/2) (0.53 → 0.053 from 1e-3
    # to 1e-5)
    units = []
    for rtol in (1e-3, 1e-4, 1e-5):
        sol = odenet.solve(
            harmonic,
            torch.tensor([1.0, 0.0], dtype=D),
            torch.tensor([0.0, 5.0], dtype=D),
            method="trapezoid",
            rtol=rtol,
            atol=rtol,
        )
        exact = torch.tensor([math.cos(5.0), -math.sin(5.0)], dtype=D)
        units.append(float((sol.ys[-1] - exact).abs().max()) / rtol)
    assert max(units) < 0.5
    assert max(units) / min(units) < 2.0, units


def test_a_quadratic_solution_takes_few_steps():
    # y' = t: the trapezoid is exact and so is the Milne estimate (zero), so the steps
    # grow by the controller's largest factor; the Euler estimate h²/2 held them to
    # ~sqrt(tol/κ) (622 steps over [0, 4] at rtol 1e-4, against 7)
    def f(t, y):
        return t * torch.ones_like(y)

    t = torch.tensor([0.0, 4.0], dtype=D)
    sol = odenet.solve(f, torch.zeros(1, dtype=D), t, method="trapezoid", rtol=1e-4, atol=1e-4)
    assert float(sol.ys[-1, 0]) == pytest.approx(8.0, rel=1e-12)
    assert int(sol.stats["steps"]) < 20
    # the same tableau on its forward Euler estimate: the history is what does it
    euler = dataclasses.replace(
        odenet.tableau("trapezoid"), estimator=None, estimator_order=None, error_safety=1.0
    )
    old = odenet.solve(f, torch.zeros(1, dtype=D), t, method=euler, rtol=1e-4, atol=1e-4)
    assert int(old.stats["steps"]) > 300


def test_rows_of_a_batch_keep_their_own_previous_steps():
    # each row's estimate reads its own last accepted step: per-sample grids give
    # each row exactly its single solve
    def f(t, y):
        return -y + torch.sin(3 * t)[..., None] if t.dim() else -y + torch.sin(3 * t)

    t = torch.tensor([[0.0, 0.5, 1.0], [0.0, 1.5, 2.0], [1.0, 1.2, 2.5]], dtype=D)
    y0 = torch.tensor([[1.0], [0.5], [-1.0]], dtype=D)
    batch = odenet.solve(f, y0, t, method="trapezoid", rtol=1e-3, atol=1e-5)
    for k in range(3):
        one = odenet.solve(f, y0[k], t[k], method="trapezoid", rtol=1e-3, atol=1e-5)
        assert torch.equal(batch.ys[k], one.ys)
        assert int(batch.stats["accepted"][k]) == int(one.stats["accepted"])


def test_the_previous_step_counts_only_where_it_was_accepted_and_f_did_not_change():
    # the loop tells the runtime which rows accepted their trials; after a jump or an
    # event f at the new start is evaluated again and differs from the step's end
    # derivative, and the previous step (the other side of the jump) is not extrapolated
    rk = MilneTrapezoid(odenet.tableau("trapezoid"), D, D, "cpu", None)
    last = rk.last_step

    def trial(s, h, f_start, f_end, accept):
        last.offer(s + h, h, f_start, f_end)
        accept = torch.tensor(accept)
        last.verdict(accept, bool(accept.all()))

    col = lambda *v: torch.tensor(v, dtype=D)[:, None]  # noqa: E731
    h = torch.tensor([0.5, 0.25, 0.5], dtype=D)
    # first trial from 0: rows 0 and 1 accepted, row 2 rejected
    trial(torch.zeros(3, dtype=D), h, col(1, 2, 3), col(4, 5, 6), [True, True, False])
    assert last.rejected(h).tolist() == [False, False, True]
    # row 0 moves on with its end derivative; row 1 moves on, but f was evaluated again
    # there (a jump); row 2 retries from 0 and has no accepted step yet
    s = torch.tensor([0.5, 0.25, 0.0], dtype=D)
    valid, h_prev, f_prev = rk._previous(s, col(4, 7, 3))
    assert valid.tolist() == [True, False, False]
    assert h_prev[0] == 0.5 and f_prev[0, 0] == 1
    # second trial: rows 0 and 2 accepted, row 1 rejected: it retries from 0.25 with
    # the derivative after the jump, and its last accepted step (before it) still does
    # not count
    trial(s, h, col(4, 7, 3), col(8, 9, 10), [True, False, True])
    s2 = torch.tensor([1.0, 0.25, 0.5], dtype=D)
    valid, h_prev, f_prev = rk._previous(s2, col(8, 7, 10))
    assert valid.tolist() == [True, False, True]
    assert h_prev[0] == 0.5 and h_prev[2] == 0.5
    assert f_prev[0, 0] == 4 and f_prev[2, 0] == 3
    # every row's next trial is accepted: from then on row 1 has a previous step again
    trial(s2, h, col(8, 7, 10), col(11, 12, 13), [True, True, True])
    assert not last.rejected(h).any()
    valid, h_prev, f_prev = rk._previous(s2 + h, col(11, 12, 13))
    assert valid.tolist() == [True, True, True]
    assert f_prev[:, 0].tolist() == [8, 7, 10]


def test_hires_at_rtol_1e_3_is_within_10x_of_scipy_radau():
    # the stiff must-hold (issue 14) on its hardest visible cell for this method: with the
    # forward Euler estimate the trapezoid ended 130x above scipy Radau's error here
    prob = P.get_problem("hires")
    d = P.STIFF_SUITE["hires"]
    rtol = 1e-3
    t = torch.tensor(prob.span, dtype=D)
    sol = odenet.solve(prob.f, prob.y0_tensor(), t, method="trapezoid", rtol=rtol, atol=d * rtol)
    assert bool(sol.success)
    err = P.stiff_error(prob, sol.ys[-1], d)
    radau, _ = radau_error(
        prob.numpy_field(), prob.span, prob.y0, rtol, d * rtol, lambda y: P.stiff_error(prob, y, d)
    )
    assert err < 10 * radau, (err, radau)
