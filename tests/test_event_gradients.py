"""`solve(events=...)`: the recorded crossing times and states carry their gradients.

They were detached, so a loss through ``sol.events.t`` / ``sol.events.y`` silently lost
that term.  The time's derivative is the implicit function theorem's (as
``odenet.odeint_event``); checked against closed forms.
"""

from __future__ import annotations

import math

import pytest
import torch

import odenet

DT = torch.float64
G = 9.81


def fall(t, y):
    return torch.stack([y[1], torch.full_like(y[1], -G)])


@pytest.mark.parametrize(
    "method,kw",
    [("dopri5", {}), ("radau_iia5", {}), ("bdf", {}), ("rk4", dict(step_size=0.01))],
    ids=lambda v: str(v),
)
def test_terminal_event_time_and_state_gradients_match_closed_form(method, kw):
    def closed(h0, v0):
        ts = (v0 + torch.sqrt(v0**2 + 2 * G * h0)) / G
        return ts, v0 - G * ts

    h0c = torch.tensor(2.0, dtype=DT, requires_grad=True)
    v0c = torch.tensor(1.0, dtype=DT, requires_grad=True)
    ts, vs = closed(h0c, v0c)
    truth_t = torch.stack(torch.autograd.grad(ts, (h0c, v0c), retain_graph=True))
    truth_v = torch.stack(torch.autograd.grad(vs, (h0c, v0c)))

    h0 = torch.tensor(2.0, dtype=DT, requires_grad=True)
    v0 = torch.tensor(1.0, dtype=DT, requires_grad=True)
    sol = odenet.solve(
        fall, torch.stack([h0, v0]), torch.tensor([0.0, 0.3, 10.0], dtype=DT), method=method,
        events=odenet.Event(lambda t, y: y[0], terminal=True), rtol=1e-10, atol=1e-12, **kw,
    )  # fmt: skip
    te, ye = sol.events.t[-1], sol.events.y[-1]
    assert abs(te.item() - ts.item()) < 1e-8
    got_t = torch.stack(torch.autograd.grad(te, (h0, v0), retain_graph=True))
    got_v = torch.stack(torch.autograd.grad(ye[1], (h0, v0), retain_graph=True))
    assert torch.allclose(got_t, truth_t, rtol=1e-7), (got_t, truth_t)
    assert torch.allclose(got_v, truth_v, rtol=1e-7), (got_v, truth_v)
    # the audit's loss: h(0.3) + v(impact); dL/dh0 = 1 - g / sqrt(2 g h0 + v0²)
    (dh0,) = torch.autograd.grad(sol.ys[1, 0] + ye[1], h0)
    assert abs(dh0.item() - (1 - G / math.sqrt(2 * G * 2.0 + 1.0))) < 1e-7


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dop853"])
def test_event_gradients_in_a_field_parameter_and_the_start_time(method):
    """A fall from h0 at t0 under g: t* = t0 + √(2h0/g), v* = −√(2gh0).  dop853's
    interpolant has extra stages, which the crossing search computed under no_grad and
    the crossing's state reused: dt*/dg came out 30 % off, dt*/dt0 0.83, status ok."""
    g = torch.tensor(G, dtype=DT, requires_grad=True)
    t0 = torch.tensor(0.3, dtype=DT, requires_grad=True)
    sol = odenet.solve(
        lambda t, y: torch.stack([y[1], -g * torch.ones_like(y[1])]),
        torch.tensor([2.0, 0.0], dtype=DT), torch.stack([t0, t0 + 10.0]), method=method,
        events=odenet.Event(lambda t, y: y[0], direction=-1, terminal=True),
        rtol=1e-10, atol=1e-12,
    )  # fmt: skip
    te, ve = sol.events.t[-1], sol.events.y[-1][1]
    dg, dt0 = torch.autograd.grad(te, (g, t0), retain_graph=True)
    assert dg.item() == pytest.approx(-0.5 * math.sqrt(2 * 2.0) * G**-1.5, rel=1e-7)
    assert dt0.item() == pytest.approx(1.0, rel=1e-7)
    (dvg,) = torch.autograd.grad(ve, g)
    assert dvg.item() == pytest.approx(-math.sqrt(2.0 / (2 * G)), rel=1e-7)


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_non_terminal_crossings_gradients_in_frequency_and_event_parameter(backward):
    # y = (cos(w t), -sin(w t)); y[0] = a at w t = ±arccos(a) + 2πm, so dt*/dw = -t*/w
    # and dt*/da = -1 / (w sin(w t*)); every crossing in (0, 10] (or [-10, 0))
    w = torch.tensor(1.3, dtype=DT, requires_grad=True)
    a = torch.tensor(0.4, dtype=DT, requires_grad=True)
    y0 = torch.tensor([1.0, 0.0], dtype=DT)
    t = torch.tensor([0.0, -10.0 if backward else 10.0], dtype=DT)
    sol = odenet.solve(
        lambda s, y: torch.stack([w * y[1], -w * y[0]]),
        y0, t, events=odenet.Event(lambda s, y: y[0] - a), rtol=1e-11, atol=1e-13,
    )  # fmt: skip
    ts, ys = sol.events.t, sol.events.y
    assert len(ts) >= 4
    for i in range(len(ts)):
        tv = ts[i].item()
        assert abs(math.cos(1.3 * tv) - 0.4) < 1e-8
        dw, da = torch.autograd.grad(ts[i], (w, a), retain_graph=True)
        assert abs(dw.item() - (-tv / 1.3)) < 1e-7 * max(1, abs(tv))
        # c = cos(w t) - a: ∂c/∂t = -w sin(w t), ∂c/∂a = -1 -> dt/da = -1 / (w sin(w t))
        assert abs(da.item() - (-1 / (1.3 * math.sin(1.3 * tv)))) < 1e-7
        # y*[0] = a at every crossing: dy*[0]/da = 1, dy*[0]/dw = 0
        dyw, dya = torch.autograd.grad(ys[i][0], (w, a), retain_graph=True)
        assert abs(dya.item() - 1) < 1e-7 and abs(dyw.item()) < 1e-7


def test_no_graph_without_gradients():
    sol = odenet.solve(
        fall, torch.tensor([2.0, 1.0], dtype=DT), torch.tensor([0.0, 10.0], dtype=DT),
        events=odenet.Event(lambda t, y: y[0], terminal=True),
    )  # fmt: skip
    assert not sol.events.t.requires_grad and not sol.events.y.requires_grad
