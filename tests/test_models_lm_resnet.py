"""LM-ResNet (odenet.models.LMResNet): the multistep network against the integrator, the
paper's recurrence, closed forms, and the multistep stability analyzer reading its scheme."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import odenet
from odenet import OdenetError
from odenet.models import (
    Autonomous,
    LayerwiseField,
    LMResNet,
    MLPField,
    ModelInputError,
    NeuralODE,
    ResNet,
    lm_polynomials,
)
from odenet.stability import multistep as M

D = torch.float64
torch.set_num_threads(1)


def linear_field(A) -> Autonomous:
    lin = nn.Linear(A.shape[0], A.shape[0], bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(A, dtype=D))
    return Autonomous(lin)


A = np.array([[-0.5, 2.0], [-2.0, -0.3]])


# --- the network is the integrator's multistep method ---------------------------------------
@pytest.mark.parametrize("method", ["ab1", "ab2", "ab3", "ab4", "ab6"])
def test_ab_network_equals_odenet_solve_with_the_same_step(method):
    torch.manual_seed(0)
    field = MLPField(3, 8, time_dependent=True).double()
    net = LMResNet(field, 24, method, horizon=1.2, t0=0.3)
    x = torch.randn(5, 3, dtype=D)
    t = torch.tensor([0.3, 1.5], dtype=D)
    ref = odenet.solve(field, x, t, method=method, step_size=net.dt).ys[-1]
    assert torch.allclose(net(x), ref, rtol=1e-13, atol=1e-14)


def test_ab2_network_on_a_layerwise_field_equals_odenet_solve():
    torch.manual_seed(1)
    field = LayerwiseField.mlp(2, 6, 4, horizon=2.0).double()
    net = LMResNet(field, 8, "ab2", horizon=2.0)
    x = torch.randn(3, 2, dtype=D)
    ref = odenet.solve(field, x, torch.tensor([0.0, 2.0], dtype=D), method="ab2", step_size=0.25)
    assert torch.allclose(net(x), ref.ys[-1], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("method", ["ab2", "ab3"])
def test_a_piece_per_layer_network_equals_odenet_solve_and_its_neural_ode(method):
    # one piece per layer: the starter's dop853 stages on t_1 fall on the next piece,
    # which the solver takes (stepping piece 0 alone put the network 5e-3 off)
    torch.manual_seed(2)
    field = LayerwiseField.mlp(3, 8, 8, horizon=1.0).double()
    net = LMResNet(field, 8, method, horizon=1.0)
    x = torch.randn(4, 3, dtype=D)
    ref = odenet.solve(field, x, torch.tensor([0.0, 1.0], dtype=D), method=method, step_size=1 / 8)
    assert torch.allclose(net(x), ref.ys[-1], rtol=1e-13, atol=1e-14)
    assert torch.allclose(net(x), net.to_neural_ode().flow(x, 0.0, 1.0), rtol=1e-13, atol=1e-14)


def test_lm_layer_is_the_papers_two_step_recurrence():
    torch.manual_seed(2)
    field = MLPField(3, 8).double()
    L, T = 7, 1.4
    ks = [0.3, -0.2, 0.9, 0.0, -0.7, 1.0]  # one per two-step layer
    net = LMResNet(field, L, "lm", horizon=T, k=ks)
    x = torch.randn(4, 3, dtype=D)
    dt = T / L
    u = [x, x + dt * field(0.0, x)]  # the first block is a residual (Euler) block
    for n in range(1, L):
        k = ks[n - 1]
        u.append((1 - k) * u[n] + k * u[n - 1] + (1 + k) * dt * field(0.0, u[n]))
    assert torch.allclose(net.trajectory(x), torch.stack(u), rtol=1e-14, atol=1e-14)


def test_lm_with_k_zero_is_the_euler_resnet():
    torch.manual_seed(3)
    field = MLPField(3, 8).double()
    x = torch.randn(4, 3, dtype=D)
    lm = LMResNet(field, 10, "lm", horizon=2.0, k=0.0)
    assert torch.allclose(lm(x), ResNet(field, 10, "euler", horizon=2.0)(x), rtol=0, atol=1e-15)


@pytest.mark.parametrize("k", [1.0, 0.5, -0.5])
def test_observed_order_is_the_analyzers_order_of_the_scheme(k):
    # y' = A y, exact flow expm(TA); the order of the LM scheme from its α/β conditions
    field = linear_field(A)
    x = torch.tensor([[1.0, 0.5]], dtype=D)
    exact = scipy.linalg.expm(2.0 * A) @ x[0].numpy()
    depths = [40, 80, 160]
    errs = [
        np.linalg.norm(LMResNet(field, L, "lm", horizon=2.0, k=k)(x)[0].detach().numpy() - exact)
        for L in depths
    ]
    observed = np.polyfit(np.log(depths), np.log(errs), 1)[0]
    predicted = M.order(lm_polynomials(k))
    assert predicted == (2 if k == 1.0 else 1)
    assert -observed == pytest.approx(predicted, abs=0.15)


def test_gradient_with_respect_to_learnable_k_matches_finite_differences():
    torch.manual_seed(4)
    field = MLPField(2, 5).double()
    x = torch.randn(3, 2, dtype=D)
    net = LMResNet(field, 6, "lm", horizon=1.0, k=[0.1, -0.3, 0.4, 0.2, 0.0], learn_k=True)
    assert any(p is net.k for p in net.parameters())

    def out(k):
        with torch.no_grad():
            net.k.copy_(k)
        return net(x).pow(2).sum()

    net(x).pow(2).sum().backward()
    k0 = net.k.detach().clone()
    eps = 1e-6
    fd = torch.stack(
        [(out(k0 + eps * e) - out(k0 - eps * e)) / (2 * eps) for e in torch.eye(5, dtype=D)]
    )
    assert torch.allclose(net.k.grad, fd, rtol=1e-6, atol=1e-9)


def test_state_dict_holds_one_copy_of_the_field_and_double_converts_k():
    net = LMResNet(MLPField(2, 4), 5, "lm", k=0.25)
    keys = list(net.state_dict())
    assert keys.count("k") == 1 and all(k.startswith(("field.", "k")) for k in keys)
    net = net.double()
    assert net.k.dtype == D
    assert net(torch.ones(1, 2, dtype=D)).dtype == D


# --- conversion -------------------------------------------------------------------------------
def test_ab_network_to_neural_ode_keeps_horizon_and_step_and_comes_back():
    torch.manual_seed(5)
    field = MLPField(3, 8).double()
    net = LMResNet(field, 12, "ab3", horizon=1.5, t0=0.2)
    node = net.to_neural_ode()
    assert isinstance(node, NeuralODE) and node.field is field
    assert (node.method, node.step_size, node.horizon, node.t0) == ("ab3", net.dt, 1.5, 0.2)
    x = torch.randn(4, 3, dtype=D)
    assert torch.allclose(node.flow(x, 0.2, 1.7), net(x), rtol=1e-13, atol=1e-14)
    back = node.to_lm_resnet()
    assert (back.depth, back.method, back.horizon, back.t0) == (12, "ab3", 1.5, 0.2)
    assert torch.equal(back(x), net(x))
    # without a remembered depth, it is read from the step size
    plain = NeuralODE(field, method="ab2", step_size=0.25)
    assert plain.to_lm_resnet(horizon=2.0).depth == 8


def test_lm_network_to_neural_ode_is_its_continuous_limit():
    field = linear_field(A)
    x = torch.tensor([[1.0, 0.5]], dtype=D)
    node = LMResNet(field, 50, "lm", horizon=2.0, k=0.5).to_neural_ode(rtol=1e-10, atol=1e-12)
    assert node.method == "dopri5" and node.step_size is None
    exact = scipy.linalg.expm(2.0 * A) @ x[0].numpy()
    assert np.allclose(node.flow(x, 0.0, 2.0)[0].detach().numpy(), exact, atol=1e-8)
    gaps = [
        (node.to_lm_resnet(L, "lm", k=0.5)(x) - node.flow(x, 0.0, 2.0)).norm().item()
        for L in (50, 100)
    ]
    assert gaps[1] == pytest.approx(gaps[0] / 2, rel=0.1)  # first order: halves with Δt


# --- the analyzer reads the network's scheme -------------------------------------------------
@pytest.mark.parametrize("k", [-1.5, -1.0, -0.999, -0.5, 0.0, 0.5, 1.0, 1.001, 2.0])
def test_lm_zero_stability_is_minus_one_below_k_at_most_one(k):
    # ρ(ζ) = (ζ − 1)(ζ + k): roots 1 and −k
    assert M.is_zero_stable(lm_polynomials(k)) == (-1 < k <= 1)
    roots = np.sort_complex(np.roots([float(c) for c in lm_polynomials(k)[0]]))
    assert np.allclose(roots, np.sort_complex(np.array([1.0, -k], dtype=complex)))


@pytest.mark.parametrize("k", [-0.99, -0.95, -0.5, 0.0, 0.5, 0.8])
def test_lm_real_interval_is_the_closed_form(k):
    # ζ = −1 is a root of ρ − zσ at z = −2(1 − k)/(1 + k); complex roots have |ζ|² = |k| < 1.
    # k = −0.95 and −0.99 end at −78 and −398, past the first scan's −50 (reported as
    # -inf, stable on the whole axis, before the scan widened)
    assert M.real_stability_interval(lm_polynomials(k)) == pytest.approx(
        -2 * (1 - k) / (1 + k), abs=1e-8
    )


def test_a_pair_is_analysed_like_the_named_method():
    pair = LMResNet(MLPField(2, 3), 4, "ab2").polynomials()
    assert pair == M.characteristic_polynomials("ab2")
    assert M.order(pair) == 2 and M.is_zero_stable(pair)
    assert M.real_stability_interval(pair) == pytest.approx(-1.0, abs=1e-8)
    assert np.allclose(M.boundary_locus(pair, 17), M.boundary_locus("ab2", 17))
    z = -0.3 + 0.4j
    roots = [np.sort_complex(M.stability_roots(m, z)) for m in (pair, "ab2")]
    assert np.allclose(*roots)
    # float coefficients are read as decimals: consistent (order 1) despite 1 − 1.2 ≠ −0.2
    assert M.order(([1, -(1 - 1.2), -1.2], [0, 2.2, 0])) == 1
    assert M.order(([1, -1], [0, 2])) == 0  # ρ'(1) ≠ σ(1): inconsistent
    leap = lm_polynomials(1)  # leapfrog: marginally stable on [−i, i] only
    assert M.is_absolutely_stable(leap, 0.9j) and not M.is_absolutely_stable(leap, -0.01)


def test_per_layer_k_needs_the_layer_for_the_polynomials():
    net = LMResNet(MLPField(2, 3), 4, "lm", k=[0.1, 0.2, -2.0])
    assert M.is_zero_stable(net.polynomials(1)) and not M.is_zero_stable(net.polynomials(3))
    with pytest.raises(OdenetError, match="pass `layer`"):
        net.polynomials()
    with pytest.raises(OdenetError, match=r"`layer` must be a two-step layer 1 … 3 \(layer 0"):
        net.polynomials(0)


@pytest.mark.parametrize("kw", [{"method": "ab2"}, {"method": "ab3"}, {"method": "lm", "k": 0.5}])
@pytest.mark.parametrize("dt", [0.1, 0.5])
def test_history_map_jacobian_is_the_companion_matrix_read_by_analyze(kw, dt):
    # odenet.stability.analyze on the layer's one-step form: spectral radius per step =
    # the multistep analyzer's max|ζ| over the eigenvalues Δtλ_i of A
    net = LMResNet(linear_field(A), 40, horizon=40 * dt, **kw)
    pair = net.polynomials()
    expected = max(np.abs(M.stability_roots(pair, dt * lam)).max() for lam in np.linalg.eigvals(A))
    X0 = torch.ones(2 * net.steps, dtype=D)
    report = odenet.stability.analyze(net.history_map(), X0, 30)
    assert float(report.spectral_radius[0]) == pytest.approx(expected, rel=1e-10)
    assert (report.verdict == "unstable") == (expected > 1)


def test_history_maps_compose_to_the_network():
    torch.manual_seed(6)
    field = LayerwiseField.mlp(2, 5, 6, horizon=1.2).double()
    net = LMResNet(field, 6, "ab3", horizon=1.2)
    x = torch.randn(3, 2, dtype=D)
    xs = net.trajectory(x)
    X = torch.cat([xs[2], xs[1], xs[0]], dim=-1)  # history after the two starter layers
    for n in range(2, 6):
        X = net.history_map(n)(X)
    assert torch.allclose(X[:, :2], xs[-1], rtol=1e-14, atol=1e-15)
    with pytest.raises(OdenetError, match="`layer` must be a multistep layer 2 … 5"):
        net.history_map(1)
    with pytest.raises(OdenetError, match=r"stack 3 states on the last axis"):
        net.history_map()(torch.ones(4, dtype=D))


# --- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "bdf2"}, "implicit and predictor"),
        ({"method": "abm3"}, "implicit and predictor"),
        ({"method": "rk4"}, "`method` must be one of 'lm', 'ab1'"),
        ({"method": "lm"}, "method='lm' needs `k`"),
        ({"method": "ab2", "k": 0.3}, "`k` belongs to method='lm'"),
        ({"method": "lm", "k": [0.1, 0.2]}, r"depth − 1 = 4\), got shape \(2,\)"),
        ({"method": "lm", "k": math.nan}, "`k` must be finite"),
        ({"method": "lm", "k": "abc"}, "`k` must be a float"),
        ({"method": "ab2", "starter": "nope"}, "nope"),
        ({"method": "ab2", "horizon": -1.0}, "`horizon` must be a positive"),
    ],
)
def test_bad_arguments_raise_with_the_fix(kwargs, match):
    with pytest.raises(OdenetError, match=match):
        LMResNet(MLPField(2, 3), 5, **kwargs)


def test_bad_input_and_conversions_raise_with_the_fix():
    net = LMResNet(MLPField(2, 3), 5, "ab2")
    with pytest.raises(ModelInputError, match="this LMResNet expects 2 features"):
        net(torch.ones(1, 3))
    with pytest.raises(OdenetError, match="not a multistep network scheme; pass `method`"):
        NeuralODE(MLPField(2, 3)).to_lm_resnet(4)
    with pytest.raises(OdenetError, match="pass `depth`"):
        NeuralODE(MLPField(2, 3), method="ab2", step_size=0.3).to_lm_resnet(horizon=1.0)


def test_lm_polynomials_are_exact():
    rho, sigma = lm_polynomials(0.1)
    assert rho == [1, Fraction(-9, 10), Fraction(-1, 10)] and sigma == [0, Fraction(11, 10), 0]


def test_k_of_a_field_without_parameters_is_kept_in_float64():
    """k = 0.3 was stored in float32 (0.30000001192) when the field had no parameter
    to take the dtype from: a float64 network then differed from its recurrence."""

    class Linear(nn.Module):
        def forward(self, t, x):
            return -3.0 * x

    k, L = 0.3, 6
    net = LMResNet(Linear(), depth=L, method="lm", horizon=1.0, k=k)
    assert net.k.dtype == torch.float64 and net.k.item() == 0.3
    dt = 1.0 / L
    x0 = torch.tensor([1.0], dtype=torch.float64)
    prev, x = x0, x0 + dt * -3.0 * x0  # Euler starter
    for _ in range(1, L):
        x, prev = (1 - k) * x + k * prev + (1 + k) * dt * -3.0 * x, x
    assert torch.allclose(net(x0), x, rtol=1e-14, atol=0)
    assert net(x0.float()).dtype == torch.float32  # the state's dtype, not k's
    assert [float(c) for c in net.polynomials()[0]] == [1.0, -0.7, -0.3]
