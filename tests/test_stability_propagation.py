"""The propagation report and the error ↔ gradient duality, against brute-force
matrix powers, closed forms, the true global error of a solve, and autograd."""

import math

import numpy as np
import pytest
import torch

import odenet
from odenet.stability import (
    StabilityInputError,
    analyze,
    flow_map,
    jacobian,
    kreiss_constant,
    stability_function,
)
from odenet.stability.duality import backpropagate, global_error_prediction, propagate_errors

D = torch.float64


def test_constant_non_normal_matrix_transient_peak_and_kreiss_bounds():
    M = np.array([[0.9, 5.0], [0.0, 0.8]])
    rep = analyze(M, n_steps=80)
    powers = [np.linalg.norm(np.linalg.matrix_power(M, k), 2) for k in range(81)]
    np.testing.assert_allclose(rep.forward_growth, powers, rtol=1e-10)
    assert rep.transient_peak == pytest.approx(max(powers), rel=1e-12)
    assert rep.transient_peak_step == int(np.argmax(powers))
    K = rep.kreiss_constant
    assert K <= max(powers) * (1 + 1e-6) and max(powers) <= math.e * 2 * K  # Kreiss
    assert rep.verdict == "stable"
    assert "non-normal transient growth" in rep.reason
    np.testing.assert_allclose(rep.spectral_radius, 0.9)
    np.testing.assert_allclose(rep.lyapunov_exponents, [math.log(0.9), math.log(0.8)], atol=0.05)


def test_kreiss_constant_of_a_rotating_jordan_block_obeys_the_kreiss_theorem():
    # two rotations by half a grid angle, |λ| = 0.9999, coupled: the resolvent peaks at
    # the eigenvalues' angle, between the samples; K came out 40 for a true ~2500,
    # below sup‖M^k‖ / (e d) = 338 — the Kreiss matrix theorem K ≤ sup_k ‖M^k‖ ≤ e d K
    th = np.pi / 256
    R = 0.9999 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    M = np.block([[R, np.eye(2)], [np.zeros((2, 2)), R]])
    M10 = np.linalg.matrix_power(M, 10)
    P, peak = np.eye(4), 0.0
    for _ in range(6000):  # ‖M^k‖ every 10th k, to k = 60 000 (the peak is near 20 000)
        P = M10 @ P
        peak = max(peak, np.linalg.norm(P, 2))
    K = kreiss_constant(M)
    assert peak / (math.e * 4) <= K <= peak


def _power_sup(M, n=2000):
    P, peak = np.eye(M.shape[0]), 1.0
    for _ in range(n):
        P = M @ P
        peak = max(peak, np.linalg.norm(P, 2))
    return peak


@pytest.mark.parametrize(
    "M",
    [
        np.eye(2),
        np.array([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]]),
        np.diag([1.0, -1.0, 0.5]),
    ],
)
def test_kreiss_constant_of_normal_power_bounded_matrices_is_one(M):
    # Normal with spectral radius 1: (|z| − 1)/dist(z, spec) ≤ 1, → 1 as z → ∞, so K = 1
    # (= sup_k ‖M^k‖).  Eigenvalues on the unit circle used to give inf (identity), or
    # 1.0000000000003 when round-off put them at 1 − 1e-17 (rotation).
    assert kreiss_constant(M) == pytest.approx(1.0, abs=1e-8)
    assert _power_sup(M) == pytest.approx(1.0, abs=1e-12)


def test_kreiss_constant_of_a_non_normal_matrix_with_unit_eigenvalues_obeys_kreiss():
    # S diag(1, −1) S⁻¹: eigenvalues ±1 (semisimple), powers bounded (M² = I), non-normal
    S = np.array([[1.0, 5.0], [0.0, 1.0]])
    M = S @ np.diag([1.0, -1.0]) @ np.linalg.inv(S)
    peak = _power_sup(M, 10)
    K = kreiss_constant(M)
    assert peak / (math.e * 2) <= K <= peak * (1 + 1e-6)


def test_kreiss_constant_of_a_unit_jordan_block_is_infinite():
    # [[1, 1], [0, 1]]^k = [[1, k], [0, 1]]: unbounded powers, K = inf
    # ((|z| − 1)‖(z − M)⁻¹‖ ≈ 1/(|z| − 1) at z → 1)
    assert kreiss_constant(np.array([[1.0, 1.0], [0.0, 1.0]])) == math.inf
    assert kreiss_constant(np.array([[1.01, 0.0], [0.0, 0.5]])) == math.inf


def test_complex_jacobians_are_refused_not_read_as_their_real_parts():
    # np.asarray(·, dtype=float) made M = 1.2i a zero matrix: "stable", radius 0
    with pytest.raises(StabilityInputError, match="complex Jacobians"):
        analyze(torch.full((10, 1, 1), 1.2j, dtype=torch.complex128))


def test_kreiss_constant_of_a_normal_contraction_is_one():
    # for a normal matrix with spectral radius ρ < 1: K = sup (|z|−1)/(|z|−ρ) = 1
    assert kreiss_constant(np.diag([0.5, -0.3])) == pytest.approx(1.0, rel=1e-3)
    assert kreiss_constant(np.eye(2)) == pytest.approx(1.0, abs=1e-9)  # was inf (wrong)


def test_verdicts_and_reasons():
    grow = analyze(np.eye(3) * 1.8, n_steps=50)
    assert grow.verdict == "unstable"
    assert "spectral norm 1.8 > 1 at 50 of 50 steps" in grow.reason
    assert "~1.8^n" in grow.reason
    assert analyze(np.eye(3), n_steps=50).verdict == "marginal"
    decay = analyze(np.eye(2) * 0.5, n_steps=20)
    assert decay.verdict == "stable" and "gradients vanish" in decay.reason
    np.testing.assert_allclose(decay.singular_values, [0.5**20] * 2)


def test_backward_growth_is_the_norm_of_the_suffix_product():
    gen = torch.Generator().manual_seed(3)
    Ms = torch.randn(12, 4, 4, dtype=D, generator=gen) * 0.6
    rep = analyze(Ms)
    for n in range(13):
        S = np.eye(4)
        for M in Ms[n:].numpy():
            S = M @ S
        assert rep.backward_growth[n] == pytest.approx(np.linalg.norm(S, 2), rel=1e-10)
    df = rep.to_frame()
    assert list(df.columns)[:3] == ["step", "spectral_radius", "spectral_norm"]
    assert len(df) == 12


@pytest.mark.parametrize("method", ["euler", "rk4", "backward_euler", "trapezoid", "radau_iia5"])
def test_step_jacobian_on_the_test_equation_equals_R_of_h_lambda(method):
    lam, h = -3.0, 0.2
    step = flow_map(lambda t, y: lam * y, h, method)
    J = jacobian(step, torch.tensor([1.3], dtype=D))
    assert float(J[0, 0]) == pytest.approx(
        float(stability_function(method)(lam * h).real), rel=1e-10
    )


@pytest.mark.parametrize("method", ["euler", "rk4", "backward_euler"])
def test_predicted_global_error_matches_the_true_global_error(method):
    # logistic equation with its closed-form solution
    def f(t, y):
        return y * (1 - y)

    def exact(t):
        e = torch.exp(t)
        return (0.1 * e / (0.9 + 0.1 * e)).reshape(1)

    res = global_error_prediction(f, exact, 0.0, 5.0, 50, method)
    err = res.actual.abs().max()
    # first-order theory: mismatch is second order in the error
    assert res.relative_mismatch < 5 * float(err) + 1e-6
    assert res.relative_mismatch < 0.05


def test_linear_problem_error_recurrence_is_exact():
    lam, h = -2.0, 0.1
    res = global_error_prediction(
        lambda t, y: lam * y, lambda t: torch.exp(lam * t).reshape(1), 0.0, 2.0, 20, "rk4"
    )
    np.testing.assert_allclose(res.predicted, res.actual, atol=1e-15)
    np.testing.assert_allclose(res.jacobians[:, 0, 0], stability_function("rk4")(lam * h).real)


def _deep_net(kind, depth, width, gain, seed=0):
    gen = torch.Generator().manual_seed(seed)
    Ws = torch.randn(depth, width, width, dtype=D, generator=gen) * gain / math.sqrt(width)
    act = torch.tanh if kind != "relu" else torch.relu

    def step(x, W):
        y = act(W @ x)
        return x + 0.2 * y if kind == "residual" else y

    return step, Ws


@pytest.mark.parametrize(
    "kind, gain", [("tanh", 1.0), ("tanh", 3.0), ("relu", 2**0.5), ("residual", 1.0)]
)
def test_predicted_gradients_match_autograd_layer_by_layer(kind, gain):
    depth, width = 20, 32
    step, Ws = _deep_net(kind, depth, width, gain)
    x0 = torch.randn(width, dtype=D, generator=torch.Generator().manual_seed(1))
    rep = analyze(step, x0, depth, inputs=Ws)
    # autograd through the same network
    xs = [x0.clone().requires_grad_()]
    for W in Ws:
        xs.append(step(xs[-1], W))
        xs[-1].retain_grad()
    a_N = torch.randn(width, dtype=D, generator=torch.Generator().manual_seed(2))
    (a_N @ xs[-1]).backward()
    measured = torch.stack([x.grad for x in xs])
    predicted = backpropagate(torch.as_tensor(rep.jacobians), a_N)
    np.testing.assert_allclose(predicted, measured, rtol=1e-10, atol=1e-12)
    # the report's backward growth bounds the measured gradient amplification
    ratio = measured.norm(dim=1) / a_N.norm()
    assert np.all(ratio.numpy() <= rep.backward_growth * (1 + 1e-10))
    # forward errors are the same Jacobians read the other way
    e = propagate_errors(torch.as_tensor(rep.jacobians), torch.zeros(depth, width, dtype=D), e0=a_N)
    assert float(e[-1].norm()) <= rep.forward_growth[-1] * float(a_N.norm()) * (1 + 1e-10)


def test_plain_deep_nets_explode_or_vanish_and_residual_nets_stay_marginal():
    width, depth = 32, 30
    x0 = torch.randn(width, dtype=D, generator=torch.Generator().manual_seed(1))
    big, Wb = _deep_net("tanh", depth, width, 1.0)
    Wb = Wb * 4.0  # gain 4 tanh: chaotic regime
    small, Ws = _deep_net("tanh", depth, width, 0.3)
    assert analyze(big, x0, depth, inputs=Wb).verdict == "unstable"
    assert analyze(small, x0, depth, inputs=Ws).verdict == "stable"
    res, Wr = _deep_net("residual", depth, width, 0.5)
    assert analyze(res, x0, depth, inputs=Wr).verdict == "marginal"


def test_analyze_errors_are_reported():
    with pytest.raises(StabilityInputError, match="needs `x0` and `n_steps`"):
        analyze(lambda x: x)
    with pytest.raises(StabilityInputError, match="`margin` must be a factor > 1"):
        analyze(np.eye(2), n_steps=3, margin=0.5)
    with pytest.raises(StabilityInputError, match="`dt` must be a positive finite number"):
        analyze(np.eye(2), n_steps=3, dt=-1.0)
    with pytest.raises(StabilityInputError, match="needs `n_steps`"):
        analyze(np.eye(2))
    with pytest.raises(StabilityInputError, match=r"stack \[N, d, d\] of square"):
        analyze(np.ones((3, 2, 4)))
    with pytest.raises(StabilityInputError, match=r"`taus` must be \[N, d\]"):
        propagate_errors(torch.eye(2, dtype=D)[None], torch.zeros(2, 2, dtype=D))
    with pytest.raises(StabilityInputError, match="stack of square Jacobians"):
        backpropagate(torch.eye(2, dtype=D), torch.zeros(2, dtype=D))


def test_solver_step_and_flow_map_agree_to_round_off():
    def f(t, y):
        return torch.stack([y[1], -torch.sin(y[0]) + 0.1 * t])

    y = torch.tensor([0.3, -0.2], dtype=D)
    for method in ["euler", "rk4", "dopri5", "tsit5"]:
        a = flow_map(f, 0.07, method)(y)
        b = odenet.step(f, 0.0, y, 0.07, method)
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_end_to_end_singular_values_past_overflow_are_inf_and_zero_not_nan():
    # diag(1.5, 0.5)^n: e^(0.405 n) overflows and e^(−0.693 n) underflows at n = 1800;
    # the normalised product's small singular value is 0, and inf · 0 gave NaN
    r = analyze(torch.tensor([[1.5, 0.0], [0.0, 0.5]], dtype=D), n_steps=1800)
    assert r.singular_values[0] == math.inf and r.singular_values[1] == 0.0
    assert r.log_forward_growth[-1] == pytest.approx(1800 * math.log(1.5), rel=1e-12)
    assert r.verdict == "unstable"


def test_an_orbit_that_overflows_is_named_not_analysed():
    with pytest.raises(odenet.OdenetError, match=r"step 10 has inf/NaN.*n_steps ≤ 10"):
        analyze(lambda x: x**2 + 1.0, torch.tensor([2.0, 3.0], dtype=D), 20)
