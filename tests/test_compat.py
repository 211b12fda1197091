"""odenet.odeint is a drop-in for torchdiffeq.odeint: same calls, same answers."""

import math

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


@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint"])
@pytest.mark.parametrize("grid", ["step_size", "grid_constructor"])
def test_adjoint_time_gradients_of_outputs_on_grid_nodes(method, grid):
    # y' = −y, outputs at t = 1, 2 on nodes of the h = 0.25 grid.  torchdiffeq's adjoint
    # gives every output time the flow's derivative (rk4: the closed form to 1e-4); ours
    # gave the on-node outputs 0 and moved their gradient to t_0 (grid_constructor: dropped)
    import torchdiffeq

    D = torch.float64
    y0 = torch.tensor([1.0], dtype=D)

    def quarter_steps(f, y0, t):  # torchdiffeq's backward asks for grids on [t_i, t_i-1]
        t = t.detach()
        n = round(abs(float(t[-1] - t[0])) / 0.25) + 1
        return torch.linspace(float(t[0]), float(t[-1]), n, dtype=D)

    options = {"step_size": 0.25} if grid == "step_size" else {"grid_constructor": quarter_steps}

    def grad(odeint_adjoint):
        t = torch.tensor([0.0, 1.0, 2.0], dtype=D, requires_grad=True)
        ys = odeint_adjoint(
            lambda t, y: -y, y0, t, method=method, options=options, adjoint_params=()
        )
        return torch.autograd.grad(ys[1:].sum(), t)[0]

    mine, theirs = grad(odenet.odeint_adjoint), grad(torchdiffeq.odeint_adjoint)
    torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    if method == "rk4":
        e1, e2 = math.exp(-1), math.exp(-2)
        exact = torch.tensor([e1 + e2, -e1, -e2], dtype=D)
        torch.testing.assert_close(mine, exact, rtol=1e-4, atol=0)


def test_complex_states_as_torchdiffeq():
    # torchdiffeq integrates complex tensors (quantum dynamics); odeint refused them
    C, D = torch.complex128, torch.float64
    A = torch.tensor([[0, 1.0], [-100.0, 0]], dtype=C)
    y0 = torch.tensor([1.0, 9.0], dtype=C)
    t = torch.linspace(0.0, 2.0, 10, dtype=D)
    exact = torch.stack([torch.linalg.matrix_exp(A * s) @ y0 for s in t])
    # (rk4's outputs between its nodes are torchdiffeq's linear interpolation: 1e-2)
    cases = (("dopri5", None, 1e-5, 1e-6), ("rk4", {"step_size": 0.01}, 2e-2, 1e-12))
    for method, options, to_exact, to_peer in cases:
        mine = odenet.odeint(lambda t, y: A @ y, y0, t, method=method, options=options)
        theirs = torchdiffeq.odeint(lambda t, y: A @ y, y0, t, method=method, options=options)
        assert mine.dtype == C and mine.shape == (10, 2)
        assert (mine - exact).abs().max() < to_exact
        torch.testing.assert_close(mine, theirs, rtol=0, atol=to_peer)

    class Spin(torch.nn.Module):  # y' = −i H(w) y
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.7, dtype=D))
            self.steps = 0

        def forward(self, t, y):
            one = torch.ones_like(self.w)
            H = torch.stack([torch.stack([self.w, one]), torch.stack([one, -self.w])])
            return -1j * (H.to(C) @ y)

        def callback_step(self, t, y, dt):
            assert y.dtype == C
            self.steps += 1

    def grad(odeint):
        f = Spin()
        ys = odeint(f, torch.tensor([1.0, 0.0], dtype=C), t[[0, -1]], rtol=1e-10, atol=1e-12)
        return torch.autograd.grad(ys[-1].abs()[0] ** 2, f.w)[0], f.steps

    ref, _ = grad(torchdiffeq.odeint)
    for odeint in (odenet.odeint, odenet.odeint_adjoint):
        g, steps = grad(odeint)
        torch.testing.assert_close(g, ref, rtol=1e-7, atol=0)
        assert steps > 0
    # y' = i y from 1 crosses Re y = 0 at π/2
    event_t, sol = odenet.odeint(
        lambda t, y: 1j * y,
        torch.tensor([1.0 + 0j], dtype=C),
        torch.tensor([0.0, 5.0], dtype=D),
        event_fn=lambda t, y: y.real[0],
        rtol=1e-10,
        atol=1e-12,
    )
    assert abs(float(event_t) - math.pi / 2) < 1e-9 and sol.dtype == C


@pytest.mark.parametrize("method", ["rk4", "euler", "implicit_adams"])
def test_odeint_time_gradient_of_an_output_on_a_grid_node(method):
    # torchdiffeq's linear interpolant returns a node's state itself, with t-gradient 0
    # (0 where the flow's is −0.529); odeint copied it, and ∂L/∂t0 came out +0.086 for
    # −0.033.  Truth: y = e^{−k(t − t0)}, so ∂y_i/∂t_i = −k y_i and ∂y_i/∂t0 = k y_i
    k, tv = 0.7, [0.0, 0.4, 1.1, 2.0]  # 0.4 and 1.1 are nodes of the grid 0.05·j
    t = torch.tensor(tv, dtype=torch.float64, requires_grad=True)
    ys = odenet.odeint(lambda s, y: -k * y, torch.tensor([1.0], dtype=torch.float64), t,
                       method=method, options={"step_size": 0.05})  # fmt: skip
    ys[1:3].sum().backward()
    y1, y2 = math.exp(-k * 0.4), math.exp(-k * 1.1)
    exact = torch.tensor([k * (y1 + y2), -k * y1, -k * y2, 0.0], dtype=torch.float64)
    tol = 0.05 if method == "euler" else 1e-6  # the scheme's error in y_i
    assert torch.allclose(t.grad, exact, rtol=tol, atol=1e-12)
