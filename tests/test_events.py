"""Events, forced step boundaries and callbacks of the one loop.

Truths: closed-form crossing times (free fall, sin t), scipy ``solve_ivp`` events
on the same problem, the closed-form derivative of the first bounce time, and the
exact solution of a field with a jump.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import torch

import odenet
from odenet._events import Event
from odenet._odeint_event import until_event

D = torch.float64
G = 9.81


def fall(t, y):
    return torch.stack([y[..., 1], torch.full_like(y[..., 1], -G)], dim=-1)


def test_terminal_event_stops_at_the_closed_form_bounce_time():
    y0 = torch.tensor([2.0, 0.0], dtype=D)
    t = torch.tensor([0.0, 0.3, 0.6, 1.0], dtype=D)
    ev = Event(lambda t, y: y[0], direction=-1, terminal=True)
    sol = odenet.solve(fall, y0, t, events=[ev], rtol=1e-10, atol=1e-12)
    t_star = math.sqrt(2 * 2.0 / G)
    assert sol.success and int(sol.status[0]) == int(odenet.Status.TERMINATED)
    assert abs(float(sol.events.t[0]) - t_star) <= 1e-8 * t_star
    assert torch.isnan(sol.ys[-1]).all()  # after the terminal event
    assert torch.allclose(sol.ys[2, 0], torch.tensor(2.0 - G * 0.36 / 2, dtype=D), atol=1e-9)
    assert abs(float(sol.events.y[0, 1]) + G * t_star) < 1e-7


def test_crossing_times_and_directions_match_closed_form_and_scipy():
    f = lambda t, y: torch.cos(t) * torch.ones_like(y)  # noqa: E731  y = sin t
    y0 = torch.zeros(1, dtype=D)
    t = torch.tensor([0.0, 10.0], dtype=D)
    a = math.asin(0.5)
    both = [a, math.pi - a, 2 * math.pi + a, 3 * math.pi - a]
    for direction, expect in ((0, both), (1, both[0::2]), (-1, both[1::2])):
        ev = Event(lambda t, y: y[0] - 0.5, direction=direction)
        sol = odenet.solve(f, y0, t, events=ev, rtol=1e-10, atol=1e-12)
        got = sol.events.t.numpy()
        np.testing.assert_allclose(got, expect, rtol=1e-8)

        def e(t, y):
            return y[0] - 0.5

        e.direction = direction
        ref = scipy.integrate.solve_ivp(
            lambda t, y: [np.cos(t)], (0, 10), [0.0], events=e, rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(got, ref.t_events[0], rtol=1e-8)


def test_terminal_after_k_crossings_and_several_event_functions():
    f = lambda t, y: torch.cos(t) * torch.ones_like(y)  # noqa: E731
    t = torch.tensor([0.0, 20.0], dtype=D)
    evs = [Event(lambda t, y: y[0] - 0.5), Event(lambda t, y: y[0] + 0.5, terminal=2)]
    sol = odenet.solve(f, torch.zeros(1, dtype=D), t, events=evs, rtol=1e-10, atol=1e-12)
    b = math.asin(0.5)
    # y = -0.5 at π + b (first), 2π - b (second: terminal)
    assert abs(float(sol.events.t[-1]) - (2 * math.pi - b)) < 1e-8
    assert sol.events.which.tolist() == [0, 0, 1, 1]


def test_per_sample_events_each_row_stops_at_its_own_time():
    h = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    y0 = torch.stack([h, torch.zeros(3, dtype=D)], dim=1)
    t = torch.stack([torch.tensor([0.0, 0.2, 5.0], dtype=D) + 0.1 * k for k in range(3)])
    y0 = y0.clone()

    def fall_rows(t, y):
        return torch.stack([y[:, 1], torch.full_like(y[:, 1], -G)], dim=1)

    ev = Event(lambda t, y: y[:, 0], direction=-1, terminal=True)
    sol = odenet.solve(fall_rows, y0, t, events=ev, rtol=1e-10, atol=1e-12)
    for k in range(3):
        expect = 0.1 * k + math.sqrt(2 * float(h[k]) / G)
        assert abs(float(sol.events.t[k][0]) - expect) < 1e-8
    assert sol.success


@pytest.mark.parametrize("sensitivity", ["direct", "adjoint"])
def test_gradient_of_the_bounce_time_matches_closed_form(sensitivity):
    h = torch.tensor(2.0, dtype=D, requires_grad=True)
    y0 = torch.stack([h, torch.zeros((), dtype=D)])
    t_star, sol = until_event(
        fall,
        y0,
        torch.tensor(0.0, dtype=D),
        lambda t, y: y[0],
        reverse_time=False,
        sensitivity=sensitivity,
        solve_kw={"rtol": 1e-10, "atol": 1e-12},
    )
    (dt_dh,) = torch.autograd.grad(t_star, h, retain_graph=True)
    assert abs(t_star.item() - math.sqrt(2 * 2.0 / G)) < 1e-8
    assert abs(float(dt_dh) - 1 / math.sqrt(2 * G * 2.0)) < 1e-7
    # and the velocity at impact, -sqrt(2 g h): d/dh = -sqrt(g / (2h))
    (dv_dh,) = torch.autograd.grad(sol[-1, 1], h)
    assert abs(float(dv_dh) + math.sqrt(G / (2 * 2.0))) < 1e-6


def test_jump_t_lands_on_the_discontinuity_with_fewer_evaluations():
    def f(t, y):
        return -0.5 * y if t < 0.5 else y**2

    y0 = torch.tensor([1.0, 2.0], dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    plain = odenet.solve(f, y0, t, rtol=1e-8, atol=1e-8)
    jumped = odenet.solve(f, y0, t, rtol=1e-8, atol=1e-8, jump_t=torch.tensor([0.5]))
    x = y0 * math.exp(-0.25)
    exact = x / (1 - x * 0.5)
    assert jumped.stats["nfe"] < plain.stats["nfe"]
    assert torch.allclose(jumped.ys[-1], exact, rtol=1e-7)


def test_step_t_forces_the_boundary_and_callbacks_see_every_step():
    seen = {"step": [], "accept": [], "reject": []}

    def cb(kind, t, y, dt):
        seen[kind].append(float(t + dt) if kind == "accept" else float(t))

    sol = odenet.solve(
        lambda t, y: -y,
        torch.ones(1, dtype=D),
        torch.tensor([0.0, 2.0], dtype=D),
        step_t=[0.7, 1.3],
        callback=cb,
    )
    ends = seen["accept"]
    assert any(abs(e - 0.7) < 1e-12 for e in ends) and any(abs(e - 1.3) < 1e-12 for e in ends)
    assert len(seen["step"]) == sol.stats["steps"]
    assert len(ends) == sol.stats["accepted"] and len(seen["reject"]) == sol.stats["rejected"]


def test_bad_event_arguments_raise_typed_errors():
    with pytest.raises(odenet.OdenetError, match="direction"):
        Event(lambda t, y: y, direction=2)
    with pytest.raises(odenet.OdenetError, match="terminal"):
        Event(lambda t, y: y, terminal=-1)
    with pytest.raises(odenet.OdenetError, match="events"):
        odenet.solve(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), events=3)
    with pytest.raises(odenet.OdenetError, match="sensitivity='direct'"):
        odenet.solve(
            lambda t, y: -y,
            torch.ones(1),
            torch.tensor([0.0, 1.0]),
            events=lambda t, y: y[0],
            sensitivity="adjoint",
        )


class _GroundOrClock(torch.nn.Module):
    """Two event values: the height above ``w[0]`` and the time left to ``1.5 / w[1]``."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.0, 1.0], dtype=D))

    def forward(self, t, y):
        return torch.stack([y[0] - self.w[0], 1.5 - self.w[1] * t])


@pytest.mark.parametrize("odeint", [odenet.odeint, odenet.odeint_adjoint])
@pytest.mark.parametrize("h", [1.0, 20.0])  # the ground first (t* = √(2h/g)), the clock first
def test_a_vector_event_fn_stops_at_the_first_of_its_crossings(odeint, h):
    ev = _GroundOrClock()
    y0 = torch.tensor([h, 0.0], dtype=D, requires_grad=True)
    kw = dict(rtol=1e-10, atol=1e-12, odeint_interface=odeint)
    if odeint is odenet.odeint_adjoint:
        kw["adjoint_params"] = ()
    t_star, sol = odenet.odeint_event(fall, y0, torch.tensor(0.0, dtype=D), event_fn=ev, **kw)
    d_y0, d_w = torch.autograd.grad(t_star, [y0, ev.w])
    ground = math.sqrt(2 * h / G)
    if ground < 1.5:  # h + v0 t − g t²/2 = w0: dt* = −(dh + t* dv0 − dw0) / v(t*)
        assert abs(t_star.item() - ground) < 1e-8
        assert abs(sol[-1, 0].item()) < 1e-8
        v = -G * ground
        assert torch.allclose(d_y0, torch.tensor([-1 / v, -ground / v], dtype=D), atol=1e-7)
        assert torch.allclose(d_w, torch.tensor([1 / v, 0.0], dtype=D), atol=1e-7)
    else:  # t* = 1.5 / w1, whatever the state
        assert abs(t_star.item() - 1.5) < 1e-9
        assert torch.allclose(d_y0, torch.zeros(2, dtype=D), atol=1e-9)
        assert torch.allclose(d_w, torch.tensor([0.0, -1.5], dtype=D), atol=1e-7)
    # torchdiffeq's combination of the same function gives the same time
    torchdiffeq = pytest.importorskip("torchdiffeq")
    ref, _ = torchdiffeq.odeint_event(
        fall, y0.detach(), torch.tensor(0.0, dtype=D), event_fn=ev, rtol=1e-10, atol=1e-12
    )
    assert abs(t_star.item() - ref.item()) < 1e-9


def test_a_vector_event_fn_must_start_away_from_zero_in_each_value():
    y0 = torch.tensor([1.0, 0.0], dtype=D)
    with pytest.raises(odenet.InputError, match=r"zero at t\[0\] in component\(s\) \[1\]"):
        odenet.odeint(
            fall, y0, torch.tensor([0.0, 1.0], dtype=D), event_fn=lambda t, y: y, method="rk4"
        )


def test_a_tuple_state_keeps_the_event_functions_parameters_in_the_gradient():
    ev = _GroundOrClock()

    def fall2(t, y):
        return (y[1], torch.full_like(y[1], -G))

    y0 = (torch.tensor(1.0, dtype=D), torch.tensor(0.0, dtype=D))
    t_star, _ = odenet.odeint_event(
        fall2, y0, torch.tensor(0.0, dtype=D), event_fn=lambda t, y: ev(t, torch.stack(y)),
        rtol=1e-10, atol=1e-12,
    )  # fmt: skip
    (d_w,) = torch.autograd.grad(t_star, ev.w, allow_unused=True)
    # raising the ground by dw0 shortens the fall from 1 m: dt* = dw0 / v, v = −√(2g)
    assert d_w is not None and abs(float(d_w[0]) + 1 / math.sqrt(2 * G)) < 1e-7


def test_an_event_closure_over_a_graph_can_be_differentiated_twice():
    """torchdiffeq's event test: ``event_fn`` captures a tensor computed from parameters;
    ``event_t`` and the final state are each backpropagated."""
    w = torch.tensor(0.5, dtype=D, requires_grad=True)
    ground = w * 2.0  # a captured tensor with a graph of its own
    y0 = torch.tensor([3.0, 0.0], dtype=D, requires_grad=True)
    t, ys = odenet.odeint_adjoint(
        fall, y0, torch.tensor([0.0, 1.0], dtype=D), event_fn=lambda t, y: y[0] - ground,
        rtol=1e-10, atol=1e-12, adjoint_params=(),
    )  # fmt: skip
    t.backward(retain_graph=True)
    v = -math.sqrt(2 * G * 2.0)  # falling from 3 to 1
    assert abs(float(w.grad) - 2.0 / v) < 1e-7  # dt* = d(ground) / v
    ys[-1].sum().backward()
    assert y0.grad is not None and w.grad is not None


@pytest.mark.parametrize("method", ["dop853", "dopri5", "tsit5"])
def test_events_beside_interior_outputs_with_a_methods_own_interpolant(method):
    """A crossing and output times inside the same steps: both ask for the continuous
    extension's extra stages (DOP853's three), which were appended twice — a raw shape
    error.  The outputs equal the solve without events; crossings at π/2 + kπ."""
    f = lambda t, y: torch.stack([y[1], -y[0]])  # noqa: E731
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 10, 101, dtype=torch.float64)
    kw = dict(method=method, rtol=1e-10, atol=1e-12)
    plain = odenet.solve(f, y0, t, **kw)
    sol = odenet.solve(f, y0, t, events=[Event(lambda t, y: y[0], terminal=False)], **kw)
    torch.testing.assert_close(sol.ys, plain.ys, rtol=0, atol=1e-12)
    expected = torch.tensor([math.pi / 2 + k * math.pi for k in range(3)], dtype=torch.float64)
    torch.testing.assert_close(sol.events.t, expected, rtol=1e-8, atol=0)


@pytest.mark.parametrize(
    "kw", [{"method": "rk4", "step_size": 0.5}, {"method": "dopri5", "step_t": [1.0]}]
)
def test_a_crossing_after_an_event_that_is_zero_at_a_step_start_is_found(kw):
    # g = (t − 1)(t − 1.2) on y' = 1: a step ends exactly on the root at 1; the next step
    # starts at g = 0 and its end is past the root at 1.2, which the strict sign test
    # at the step's start lost (closed form: [1.0, 1.2])
    kw = {k: torch.tensor(v, dtype=torch.float64) if k == "step_t" else v for k, v in kw.items()}
    sol = odenet.solve(
        lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=torch.float64),
        torch.tensor([0.0, 3.0], dtype=torch.float64),
        events=odenet.Event(lambda t, y: (t - 1.0) * (t - 1.2)), **kw,
    )  # fmt: skip
    assert torch.allclose(sol.events.t.flatten(), torch.tensor([1.0, 1.2], dtype=torch.float64))


@pytest.mark.parametrize("terminal", [False, True])
@pytest.mark.parametrize("direction", [0, 1, -1])
def test_an_event_exactly_zero_at_t0_is_reported_there_as_scipy_does(direction, terminal):
    # g = y on y' = 1, y(0) = 0 leaves zero upward at t0; h = y − 0.5 crosses at 0.5.
    # scipy's solve_ivp is the reference, run on the same problem: it reports g at t0
    # for directions 0 and +1, and a terminal g stops there (odenet skipped it)
    g, h = (lambda t, y: y[0]), (lambda t, y: y[0] - 0.5)
    for fn in (g, h):
        fn.terminal, fn.direction = fn is g and terminal, direction if fn is g else 0
    ref = scipy.integrate.solve_ivp(
        lambda t, y: np.ones(1), (0.0, 1.0), [0.0], events=[g, h], rtol=1e-10
    )
    want = sorted((float(t), k) for k, ts in enumerate(ref.t_events) for t in ts)
    sol = odenet.solve(
        lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=torch.float64),
        torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-10, atol=1e-12,
        events=[odenet.Event(g, direction=direction, terminal=terminal), odenet.Event(h)],
    )  # fmt: skip
    got = list(zip(sol.events.t.flatten().tolist(), sol.events.which.flatten().tolist()))
    assert [k for _, k in got] == [k for _, k in want]
    assert np.allclose([t for t, _ in got], [t for t, _ in want], rtol=0, atol=1e-12)
    stopped = bool(torch.isnan(sol.ys[-1]).all())
    assert stopped == (ref.status == 1)


def test_odeint_event_returns_t0_when_the_event_fn_is_zero_there():
    # torchdiffeq returns (t0, y0) at once; odenet searched 1e6 time units and raised
    te, ys = odenet.odeint_event(
        lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=torch.float64),
        torch.tensor(0.0, dtype=torch.float64), event_fn=lambda t, y: y[0] * (y[0] - 0.5),
    )  # fmt: skip
    assert te.item() == 0.0 and ys[-1].item() == 0.0


@pytest.mark.parametrize("method", ["radau_iia5", "radau_iia9", "kvaerno5"])
def test_a_crossing_inside_a_long_stiff_step_is_located_within_tolerance(method):
    # y' = λ(y − g) + g' with every λ stiff and g slow: L-stable steps grow long and a
    # crossing of y₀ = c inside one was located on an interpolant the step's estimate
    # does not control (radau_iia5: 1.9e3 tolerance units off in y₀ at a crossing,
    # status ok).  After the transient (|λ₀| = 1.8e4) y₀ = a₀ sin(ω₀t + φ₀), so the
    # crossings of c = 0.3 a₀ are closed-form.  odenet._dense_check checks there.
    # (radau_iia9's steps were so long that it logged 6 of the 18 crossings: their
    # ends showed no sign change; the event functions are now sampled inside steps)
    lam = torch.tensor([-18326.0, -234.0, -32603.0], dtype=torch.float64)
    w = torch.tensor([2.44, 0.0567, 1.70], dtype=torch.float64)
    a = torch.tensor([0.589, 1.07, 1.14], dtype=torch.float64)
    ph = torch.tensor([2.93, 5.86, 4.65], dtype=torch.float64)
    y0 = torch.tensor([-0.53, -0.236, 1.82], dtype=torch.float64)
    T, rtol, c = 24.06, 3.58e-6, 0.3 * 0.589

    def f(t, y):
        return lam * (y - a * torch.sin(w * t + ph)) + a * w * torch.cos(w * t + ph)

    t = torch.tensor([0.0, T], dtype=torch.float64)
    ev = odenet.Event(lambda t, y: y[0] - c)
    sol = odenet.solve(f, y0, t, method=method, rtol=rtol, atol=rtol, events=ev)
    w0, ph0, base = 2.44, 2.93, math.asin(0.3)
    roots = sorted(
        (phase + 2 * math.pi * k - ph0) / w0
        for k in range(-1, 12)
        for phase in (base, math.pi - base)
        if 0 < (phase + 2 * math.pi * k - ph0) / w0 < T
    )
    t_ev = sol.events.t.numpy()
    assert len(t_ev) == len(roots) > 10
    slope = np.abs(0.589 * w0 * np.cos(w0 * np.array(roots) + ph0))
    units = np.abs(t_ev - roots) * slope / (rtol + rtol * c)
    assert units.max() <= 10, f"{units.max():.3g} tolerance units"


@pytest.mark.parametrize("method", ["dop853", "dopri5", "radau_iia5"])
def test_two_crossings_inside_one_step_are_both_logged(method):
    # y' = −y takes steps of ~1 (dop853: 12 over [0, 10]) while sin(5t) crosses zero
    # every π/5: a step over two crossings has the same sign at both ends, and a
    # sign test at step ends alone logged 6 of the 16 (dop853).  The event functions
    # are also evaluated on the interpolant inside the step (SUBSTEPS pieces).
    ev = Event(lambda t, y: torch.sin(5 * t))
    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    y0 = torch.ones(1, dtype=torch.float64)
    sol = odenet.solve(lambda t, y: -y, y0, t, method=method, rtol=1e-6, atol=1e-9, events=ev)
    exact = torch.arange(16, dtype=torch.float64) * math.pi / 5  # t = 0: a root it leaves
    assert len(sol.events.t) == 16
    assert float((sol.events.t - exact).abs().max()) < 1e-9
