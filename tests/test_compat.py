"""odenet.odeint is a drop-in for torchdiffeq.odeint: same calls, same answers."""

import pytest
import torch
import torchdiffeq

import odenet

D = torch.float64


def f(t, y):
    return torch.stack([y[1], -y[0] + 0.1 * torch.sin(t) * y[1]])


Y0 = torch.tensor([1.0, 0.5], dtype=D)
T = torch.linspace(0, 3, 7, dtype=D)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_methods_on_the_output_grid_match_torchdiffeq_to_round_off(method):
    # torchdiffeq steps on `t` itself when no step_size is given; its "rk4" is the 3/8 rule
    ours = odenet.odeint(f, Y0, T, method=method)
    theirs = torchdiffeq.odeint(f, Y0, T, method=method)
    assert torch.allclose(ours, theirs, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(
    "method, rtol", [("dopri5", 1e-9), ("bosh3", 1e-7), ("adaptive_heun", 1e-5)]
)
def test_adaptive_methods_are_as_accurate_as_torchdiffeq_at_equal_tolerance(method, rtol):
    reference = odenet.odeint(f, Y0, T, method="dopri5", rtol=1e-13, atol=1e-14)
    ours = odenet.odeint(f, Y0, T, method=method, rtol=rtol, atol=rtol / 100)
    theirs = torchdiffeq.odeint(f, Y0, T, method=method, rtol=rtol, atol=rtol / 100)
    assert ours.shape == theirs.shape
    err_ours = (ours - reference).abs().max()
    err_theirs = (theirs - reference).abs().max()
    assert err_ours <= 3 * err_theirs + 1e-13


def test_default_tolerances_and_method_are_torchdiffeqs():
    ours = odenet.odeint(f, Y0, T)
    theirs = torchdiffeq.odeint(f, Y0, T)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-8)


def test_tuple_states_round_trip():
    def g(t, state):
        x, v = state
        return v, -x

    x0, v0 = torch.ones(3, dtype=D), torch.zeros(3, dtype=D)
    xs, vs = odenet.odeint(g, (x0, v0), T, rtol=1e-10, atol=1e-12)
    assert xs.shape == (7, 3) and vs.shape == (7, 3)
    assert torch.allclose(xs[:, 0], torch.cos(T), atol=1e-8)
    assert torch.allclose(vs[:, 0], -torch.sin(T), atol=1e-8)


def test_options_step_size_and_controller_keys_are_honoured():
    ours = odenet.odeint(f, Y0, T, method="rk4", options={"step_size": 0.1})
    exact = odenet.odeint(f, Y0, T, rtol=1e-12, atol=1e-12)
    assert torch.allclose(ours, exact, atol=1e-5)
    ours = odenet.odeint(
        f,
        Y0,
        T,
        options={
            "first_step": 0.01,
            "safety": 0.8,
            "ifactor": 5.0,
            "dfactor": 0.3,
            "max_num_steps": 10_000,
        },
    )
    assert torch.allclose(ours, exact, atol=1e-6)


def test_unknown_options_and_unsupported_methods_raise():
    with pytest.raises(odenet.InputError, match=r"unknown `options` key\(s\) \['bogus'\]"):
        odenet.odeint(f, Y0, T, method="rk4", options={"bogus": None})
    with pytest.raises(odenet.InputError, match=r"unknown `options` key\(s\) \['max_order'\]"):
        odenet.odeint(f, Y0, T, method="rk4", options={"max_order": 4})
    with pytest.raises(odenet.InputError, match=r"`event_fn`"):
        odenet.odeint(f, Y0, T, event_fn=lambda t, y: y[0])


def test_decreasing_times_like_torchdiffeq():
    t = torch.flip(T, [0])
    ours = odenet.odeint(f, Y0, t, rtol=1e-9, atol=1e-11)
    theirs = torchdiffeq.odeint(f, Y0, t, rtol=1e-9, atol=1e-11)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-8)
