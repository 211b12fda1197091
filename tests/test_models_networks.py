"""ResNet, RNN and Neural ODE are one field stepped by different schemes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from odenet.models import (
    RNN,
    InputPath,
    LayerwiseField,
    MLPField,
    NeuralODE,
    ResNet,
    RNNField,
    discretization_gap,
    init_,
    neural_ode_to_resnet,
    resnet_to_neural_ode,
)

F64 = torch.float64


def smooth_field(dim=3, hidden=16, seed=0, time_dependent=True):
    torch.manual_seed(seed)
    f = MLPField(dim, hidden, time_dependent=time_dependent).double()
    init_(f, "xavier", gain=1.5)
    with torch.no_grad():  # non-zero biases: a generic, non-odd field
        for m in f.modules():
            if isinstance(m, nn.Linear):
                m.bias.uniform_(-0.5, 0.5)
    return f


def observed_order(depths, errors) -> float:
    return -np.polyfit(np.log(depths), np.log(errors), 1)[0]


@pytest.fixture(scope="module")
def reference_flow():
    """A smooth time-dependent field, inputs, and its flow over [0, 2] to 1e-11."""
    f = smooth_field()
    h0 = torch.randn(4, 3, dtype=F64)
    with torch.no_grad():
        exact = NeuralODE(f, rtol=1e-11, atol=1e-13).flow(h0, 0.0, 2.0)
    return f, h0, exact


# --- ResNet ↔ forward Euler -------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(1, 12), horizon=st.floats(0.05, 5.0), t0=st.floats(-3.0, 3.0))
def test_euler_resnet_equals_handwritten_residual_recurrence_bit_for_bit(depth, horizon, t0):
    f = smooth_field()
    h0 = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(depth))
    net = ResNet(f, depth, "euler", horizon=horizon, t0=t0)
    dt = horizon / depth
    h = h0
    for layer in range(depth):
        h = h + dt * f(torch.tensor(t0 + layer * dt, dtype=F64), h)
    assert torch.equal(net(h0), h)


def test_euler_resnet_with_layerwise_weights_equals_classic_resnet_bit_for_bit():
    torch.manual_seed(1)
    blocks = [MLPField(4, 8).double() for _ in range(3)]
    field = LayerwiseField(blocks, horizon=3.0)
    h0 = torch.randn(6, 4, dtype=F64)
    h = h0
    for blk in blocks:  # the textbook ResNet: h ← h + Δt · F_ℓ(h), Δt = T / L = 1
        h = h + 1.0 * blk.net(h)
    assert torch.equal(ResNet(field, 3, "euler", horizon=3.0)(h0), h)


def test_a_float32_euler_resnet_equals_its_neural_ode_on_the_same_grid():
    # float32 grid times t0 + ℓΔ land a float32 rounding below a piece's boundary; read
    # with a float64-sized margin 80 of 100 of them took the previous piece (0.187 apart)
    torch.manual_seed(3)
    field = LayerwiseField.mlp(3, 8, 100, horizon=1.0)
    net = ResNet(field, 100, "euler", horizon=1.0)
    h0 = torch.randn(4, 3)
    node = net.to_neural_ode(method="euler", step_size=0.01)
    torch.testing.assert_close(node.flow(h0, 0.0, 1.0), net(h0), rtol=1e-5, atol=1e-5)
    grid = torch.arange(101, dtype=torch.float32) * torch.tensor(0.01)
    assert torch.equal(field.layer_index(grid[:100]), torch.arange(100))


def test_a_plain_pytorch_resnet_is_the_euler_discretization_of_its_layerwise_field():
    torch.manual_seed(9)
    blocks = [nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3)).double() for _ in "abcd"]
    h0 = torch.randn(5, 3, dtype=F64)
    h = h0
    for g in blocks:  # the network as a user wrote it
        h = h + g(h)
    field = LayerwiseField.from_residual_blocks(blocks)
    net = ResNet(field, 4, "euler", horizon=4.0)
    assert torch.equal(net(h0), h)
    assert field.piece(2).module is blocks[2]  # shared, not copied
    # …and the continuous model it discretizes, on the same parameters
    node = net.to_neural_ode(rtol=1e-8, atol=1e-10)
    assert node.flow(h0, 0.0, 4.0).shape == (5, 3)
    # another horizon rescales the field so that Euler still reproduces the network
    torch.testing.assert_close(
        ResNet(LayerwiseField.from_residual_blocks(blocks, horizon=1.0), 4, horizon=1.0)(h0),
        h,
        rtol=1e-14,
        atol=1e-14,
    )


def test_midpoint_resnet_block_is_the_handwritten_midpoint_step():
    f = smooth_field()
    h0 = torch.randn(4, 3, dtype=F64)
    net = ResNet(f, 1, "midpoint", horizon=0.4)
    dt = 0.4
    t0 = torch.tensor(0.0, dtype=F64)
    expected = h0 + dt * f(t0 + dt / 2, h0 + dt / 2 * f(t0, h0))
    torch.testing.assert_close(net(h0), expected, rtol=1e-15, atol=1e-15)


def test_backward_euler_block_solves_its_implicit_equation_per_sample():
    f = smooth_field()
    h0 = torch.randn(4, 3, dtype=F64)
    net = ResNet(f, 4, "backward_euler", horizon=1.0)
    h1 = net.block(2, h0)
    t1 = torch.tensor(3 * 0.25, dtype=F64)
    residual = h1 - (h0 + 0.25 * f(t1, h1))
    assert residual.abs().max() < 1e-12


@pytest.mark.parametrize(
    "method, depths, order",
    [
        ("euler", [8, 16, 32, 64], 1),
        ("midpoint", [8, 16, 32, 64], 2),
        ("rk4", [4, 8, 16, 32], 4),
    ],
)
def test_resnet_converges_to_neural_ode_with_the_order_of_its_scheme(
    method, depths, order, reference_flow
):
    f, h0, exact = reference_flow
    with torch.no_grad():
        errs = [(ResNet(f, L, method, horizon=2.0)(h0) - exact).abs().max().item() for L in depths]
    assert abs(observed_order(depths, errs) - order) < 0.25, errs


def test_layerwise_resnet_converges_to_the_piecewise_neural_ode_at_fourth_order():
    torch.manual_seed(2)
    field = LayerwiseField.mlp(3, 8, 2, horizon=2.0, time_dependent=True).double()
    h0 = torch.randn(3, 3, dtype=F64)
    # exact: solve each piece separately (the field is smooth inside a piece)
    h = h0
    for layer in range(2):
        node = NeuralODE(field.piece(layer), rtol=1e-11, atol=1e-13)
        h = node.flow(h, float(layer), float(layer + 1))
    depths = [2, 4, 8, 16]
    with torch.no_grad():
        errs = [(ResNet(field, L, "rk4", horizon=2.0)(h0) - h).abs().max().item() for L in depths]
    assert abs(observed_order(depths, errs) - 4) < 0.3, errs
    # the adaptive solve across the jumps of θ(t) agrees with the piecewise solve
    whole = NeuralODE(field, rtol=1e-8, atol=1e-10).flow(h0, 0.0, 2.0)
    torch.testing.assert_close(whole, h, rtol=1e-6, atol=1e-7)


# --- RNN ↔ driven ODE ------------------------------------------------------------------


def vanilla_rnn(cell: RNNField, xs, h0):
    W, U, b = cell.W.weight, cell.U.weight, cell.U.bias
    h, hs = h0, []
    for k in range(xs.shape[1]):
        h = torch.tanh(h @ W.T + xs[:, k] @ U.T + b)
        hs.append(h)
    return torch.stack(hs, dim=1)


def test_euler_rnn_with_unit_step_is_the_vanilla_rnn():
    torch.manual_seed(3)
    rnn = RNN(2, 5, dt=1.0, method="euler").double()
    xs = torch.randn(4, 9, 2, dtype=F64)
    h0 = torch.zeros(4, 5, dtype=F64)
    out = rnn(xs, h0)
    ref = vanilla_rnn(rnn.field, xs, h0)
    # from h = 0 the Euler step h + 1·(−h + σ) is σ exactly
    assert torch.equal(out[:, 0], ref[:, 0])
    # afterwards h + (σ − h) rounds once per step (IEEE addition is not associative)
    assert (out - ref).abs().max() < 1e-14


def test_euler_rnn_is_bit_for_bit_the_euler_formula_of_the_driven_ode():
    torch.manual_seed(4)
    rnn = RNN(3, 4, dt=0.3, method="euler").double()
    xs = torch.randn(2, 6, 3, dtype=F64)
    h0 = torch.randn(2, 4, dtype=F64)
    h, hs = h0, []
    for k in range(6):
        h = h + 0.3 * (-h + rnn.field.cell(h, xs[:, k]))
        hs.append(h)
    assert torch.equal(rnn(xs, h0), torch.stack(hs, dim=1))


@pytest.mark.parametrize(
    "method, interpolation, order",
    [("euler", "hold", 1), ("rk4", "linear", 2)],
)
def test_rnn_converges_to_the_continuous_time_rnn_as_the_step_shrinks(method, interpolation, order):
    # a smooth input x(t) sampled every Δt; the RNN's held/linear path is O(Δt)/O(Δt²)
    # from it, which (not the scheme) limits the order
    torch.manual_seed(5)
    field = RNNField(2, 3).double()
    init_(field, "xavier", gain=1.5)
    h0 = torch.randn(2, 3, dtype=F64)
    phase = torch.tensor([[0.0], [1.0]], dtype=F64)

    def x_of_t(t):
        return torch.cat([torch.sin(t + phase), torch.cos(2 * t + phase)], dim=1)

    T = 2.0
    field.bind(x_of_t)
    exact = NeuralODE(field, rtol=1e-11, atol=1e-13).flow(h0, 0.0, T)
    dts, errs = [0.1, 0.05, 0.025], []
    for dt in dts:
        n = round(T / dt)
        xs = torch.stack([x_of_t(torch.tensor(k * dt, dtype=F64)) for k in range(n + 1)], 1)
        rnn = RNN(2, 3, dt=dt, method=method, field=field, interpolation=interpolation)
        errs.append((rnn(xs, h0)[:, n - 1] - exact).abs().max().item())
    assert abs(-observed_order(dts, errs) - order) < 0.25, errs


# --- Neural ODE ↔ adaptive solve ---------------------------------------------------------


def linear_node(dtype=F64):
    torch.manual_seed(7)
    lin = nn.Linear(3, 3, bias=False).to(dtype)
    field = lambda t, h: lin(h)  # noqa: E731
    return lin, field


def test_neural_ode_matches_matrix_exponential_on_shared_times():
    lin, field = linear_node()
    A = lin.weight.detach().numpy()
    y0 = torch.randn(4, 3, dtype=F64)
    t = torch.tensor([0.0, 0.3, 1.1, 2.0], dtype=F64)
    ys = NeuralODE(field, rtol=1e-10, atol=1e-12)(y0, t)
    assert ys.shape == (4, 4, 3)
    for i, ti in enumerate(t.tolist()):
        exact = y0.numpy() @ scipy.linalg.expm(A * ti).T
        np.testing.assert_allclose(ys[i].detach().numpy(), exact, rtol=1e-8, atol=1e-9)


def test_neural_ode_returns_each_sample_at_its_own_irregular_times():
    lin, field = linear_node()
    A = lin.weight.detach().numpy()
    y0 = torch.randn(3, 3, dtype=F64)
    t = torch.tensor([[0.0, 0.1, 0.5], [1.0, 1.7, 3.0], [-1.0, -0.2, 0.05]], dtype=F64)
    ys = NeuralODE(field, rtol=1e-10, atol=1e-12)(y0, t)
    assert ys.shape == (3, 3, 3)
    for b in range(3):
        for i in range(3):
            exact = scipy.linalg.expm(A * float(t[b, i] - t[b, 0])) @ y0[b].numpy()
            np.testing.assert_allclose(ys[b, i].detach().numpy(), exact, rtol=1e-8, atol=1e-9)


def test_neural_ode_gradient_matches_the_exact_sensitivity_of_a_linear_flow():
    # d/dA of sum(expm(A T) y0) = ∫ … ; compared with a central difference of expm
    lin, field = linear_node()
    y0 = torch.randn(2, 3, dtype=F64)
    node = NeuralODE(field, rtol=1e-11, atol=1e-13)
    loss = node.flow(y0, 0.0, 1.0).sum()
    loss.backward()
    A = lin.weight.detach().numpy()
    eps = 1e-6
    fd = np.zeros_like(A)
    for i in range(3):
        for j in range(3):
            E = np.zeros_like(A)
            E[i, j] = eps
            up = (y0.numpy() @ scipy.linalg.expm(A + E).T).sum()
            dn = (y0.numpy() @ scipy.linalg.expm(A - E).T).sum()
            fd[i, j] = (up - dn) / (2 * eps)
    np.testing.assert_allclose(lin.weight.grad.numpy(), fd, rtol=1e-6, atol=1e-7)


def test_neural_ode_fixed_step_rk4_equals_rk4_resnet():
    f = smooth_field()
    h0 = torch.randn(3, 3, dtype=F64)
    node = NeuralODE(f, method="rk4", step_size=0.25)
    via_node = node.flow(h0, 0.0, 2.0)
    via_resnet = ResNet(f, 8, "rk4", horizon=2.0)(h0)
    torch.testing.assert_close(via_node, via_resnet, rtol=1e-13, atol=1e-13)


# --- conversion ---------------------------------------------------------------------


def test_resnet_to_neural_ode_and_back_shares_parameters_and_output():
    f = smooth_field()
    net = ResNet(f, 10, "euler", horizon=1.5, t0=0.5)
    node = resnet_to_neural_ode(net, rtol=1e-9, atol=1e-11)
    assert node.field is f
    back = neural_ode_to_resnet(node, 10)
    assert back.horizon == 1.5 and back.t0 == 0.5
    # the round trip keeps the blocks' scheme (it came back as Euler, whatever it was)
    rk4 = ResNet(f, 10, "rk4", horizon=1.5, t0=0.5)
    h = torch.randn(4, 3, dtype=F64)
    assert torch.equal(rk4.to_neural_ode().to_resnet(10)(h), rk4(h))
    assert [p.data_ptr() for p in back.parameters()] == [p.data_ptr() for p in f.parameters()]
    h0 = torch.randn(4, 3, dtype=F64)
    assert torch.equal(back(h0), net(h0))
    # training the Neural ODE moves the ResNet: the parameters are the same tensors
    before = back(h0).detach()
    node.flow(h0, 0.5, 2.0).pow(2).sum().backward()
    with torch.no_grad():
        for p in node.parameters():
            p -= 0.1 * p.grad
    after = back(h0).detach()
    assert not torch.equal(after, before)
    assert torch.equal(after, net(h0).detach())


def test_discretization_gap_halves_with_depth_for_euler():
    f = smooth_field()
    h0 = torch.randn(4, 3, dtype=F64)
    g1 = discretization_gap(ResNet(f, 32, "euler", horizon=1.0), h0)
    g2 = discretization_gap(ResNet(f, 64, "euler", horizon=1.0), h0)
    ratio = (g1 / g2).detach()
    assert torch.all((ratio > 1.8) & (ratio < 2.2)), ratio


# --- fields --------------------------------------------------------------------------


def test_layerwise_field_uses_each_samples_own_piece_for_per_sample_times():
    torch.manual_seed(8)
    field = LayerwiseField.mlp(2, 4, 3, horizon=3.0).double()
    h = torch.randn(4, 2, dtype=F64)
    t = torch.tensor([0.5, 2.0, 1.0, 2.9], dtype=F64)  # pieces 0, 2, 1, 2
    out = field(t, h)
    for b, piece in enumerate([0, 2, 1, 2]):
        torch.testing.assert_close(out[b], field.piece(piece)(t[b], h[b : b + 1])[0])
    # a boundary computed as ℓ·Δ with a rounding error belongs to piece ℓ, not ℓ - 1
    assert int(field.layer_index(torch.tensor(2.0 - 1e-15, dtype=F64))) == 2
    assert int(field.layer_index(torch.tensor(2.0 - 1e-9, dtype=F64))) == 1


def test_input_path_holds_or_interpolates_between_samples():
    times = torch.tensor([0.0, 1.0, 3.0], dtype=F64)
    xs = torch.tensor([[[0.0], [2.0], [6.0]]], dtype=F64)
    hold = InputPath(times, xs, "hold")
    lin = InputPath(times, xs, "linear")
    for t, held, linear in [(0.0, 0.0, 0.0), (0.5, 0.0, 1.0), (1.0, 2.0, 2.0), (2.0, 2.0, 4.0),
                            (3.0, 6.0, 6.0), (4.0, 6.0, 6.0), (-1.0, 0.0, 0.0)]:  # fmt: skip
        tt = torch.tensor(t, dtype=F64)
        assert float(hold(tt)) == held
        assert float(lin(tt)) == pytest.approx(linear, abs=1e-15)
    # per-sample times [B]: each row reads its own time
    two = InputPath(times, xs.expand(2, 3, 1), "linear")
    torch.testing.assert_close(
        two(torch.tensor([0.5, 2.0], dtype=F64)), torch.tensor([[1.0], [4.0]], dtype=F64)
    )


@pytest.mark.parametrize("sensitivity", ["adjoint", "checkpoint"])
def test_neural_ode_sensitivities_give_the_direct_gradient(sensitivity):
    f = smooth_field()
    y0 = torch.randn(3, 3, dtype=F64)
    t = torch.tensor([[0.0, 0.4, 1.0], [0.2, 0.5, 0.6], [1.0, 1.5, 2.0]], dtype=F64)
    grads = []
    for sens in ["direct", sensitivity]:
        f.zero_grad()
        NeuralODE(f, rtol=1e-9, atol=1e-11, sensitivity=sens)(y0, t).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in f.parameters()]))
    tol = 1e-12 if sensitivity == "checkpoint" else 1e-6
    torch.testing.assert_close(grads[1], grads[0], rtol=tol, atol=tol)
