"""Gradients with respect to the output times, y0 and parameters, in every mode.

Independent truths: for ``y' = A y`` the exact solution ``expm(A (t − t0)) y0`` is
differentiable by autograd through ``torch.linalg.matrix_exp``, which gives
``∂L/∂t``, ``∂L/∂y0`` and ``∂L/∂A`` of the flow; fixed grids are also checked with
``gradcheck`` against finite differences of the discrete solution itself.
"""

from __future__ import annotations

import pytest
import torch

import odenet

DT = torch.float64
A0 = torch.tensor([[-0.3, 1.7], [-1.9, -0.2]], dtype=DT)
Y0 = torch.tensor([1.0, -0.4], dtype=DT)
T0 = torch.tensor([0.13, 0.71, 1.37, 2.02], dtype=DT)
W = torch.tensor([[0.3, -1.1], [0.7, 0.2], [-0.5, 0.9], [1.3, 0.4]], dtype=DT)

CASES = [
    # (method, solve keywords, tolerance of the gradient against the exact flow)
    ("dopri5", {}, 1e-7),
    ("tsit5", {}, 1e-7),
    ("dop853", {}, 1e-7),
    ("bosh3", {}, 1e-6),
    ("kvaerno5", {}, 1e-6),
    ("kvaerno5", {"step_size": 0.01}, 1e-6),  # a stage abscissa c > 1
    ("rk4", {"step_size": 0.01}, 1e-7),
    ("backward_euler", {"step_size": 0.01}, 5e-2),
    ("gauss_legendre4", {"step_size": 0.02}, 1e-6),
]
SENSITIVITIES = ["direct", "adjoint", "checkpoint"]


def _exact_loss_grads(t, y0, A):
    t, y0, A = (x.detach().clone().requires_grad_(True) for x in (t, y0, A))
    ys = torch.stack([torch.linalg.matrix_exp(A * (ti - t[0])) @ y0 for ti in t])
    (ys * W).sum().backward()
    return t.grad, y0.grad, A.grad


def _solver_loss_grads(method, kw, sensitivity, t, y0, A):
    t, y0, A = (x.detach().clone().requires_grad_(True) for x in (t, y0, A))
    tol = {} if "step_size" in kw or "grid_on_outputs" in kw else {"rtol": 1e-11, "atol": 1e-13}
    extra = {"adjoint_params": [A]} if sensitivity != "direct" else {}
    sol = odenet.solve(
        lambda s, y: A @ y, y0, t, method=method, sensitivity=sensitivity, **tol, **kw, **extra
    )
    (sol.ys * W).sum().backward()
    return t.grad, y0.grad, A.grad


@pytest.mark.parametrize("sensitivity", SENSITIVITIES)
@pytest.mark.parametrize(("method", "kw", "tol"), CASES, ids=lambda v: str(v))
def test_gradients_match_the_exact_flow(method, kw, tol, sensitivity):
    exact = _exact_loss_grads(T0, Y0, A0)
    got = _solver_loss_grads(method, kw, sensitivity, T0, Y0, A0)
    for name, e, g in zip(("t", "y0", "A"), exact, got):
        assert g is not None, f"no gradient for {name}"
        err = (g - e).abs().max() / e.abs().max()
        assert err < tol, f"∂L/∂{name}: relative error {err:.2e} > {tol:g}"


@pytest.mark.parametrize("sensitivity", SENSITIVITIES)
def test_backward_in_time_gradients(sensitivity):
    t = T0.flip(0)
    exact = _exact_loss_grads(t, Y0, A0)
    got = _solver_loss_grads("dopri5", {}, sensitivity, t, Y0, A0)
    for e, g in zip(exact, got):
        assert torch.allclose(g, e, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    ("method", "kw"),
    [
        ("rk4", {"step_size": 0.05}),
        ("midpoint", {"grid_on_outputs": True}),
        ("rk4", {"grid_on_outputs": True}),
        ("dopri5", {"step_size": 0.07}),
        ("implicit_midpoint", {"step_size": 0.1}),
    ],
)
def test_fixed_grid_direct_gradient_is_that_of_the_discrete_solution(method, kw):
    # t chosen off the grid's nodes except where grid_on_outputs puts them: the
    # discrete solution is smooth in t there, so finite differences are its derivative
    A = A0.clone()

    def solve(y0, t):
        return odenet.solve(
            lambda s, y: A @ y * (1 + 0.3 * torch.sin(s)), y0, t, method=method, **kw
        ).ys

    y0 = Y0.clone().requires_grad_(True)
    t = torch.tensor([0.11, 0.63, 1.29], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(solve, (y0, t), atol=1e-6, rtol=1e-5)


def test_adaptive_direct_gradient_passes_gradcheck():
    # torchdiffeq's own gradient test: gradcheck of an adaptive solve with respect to
    # y0 and t at tight tolerances
    def solve(y0, t):
        return odenet.solve(
            lambda s, y: A0 @ y * (1 + 0.3 * torch.sin(s)), y0, t, rtol=1e-10, atol=1e-12
        ).ys

    y0 = Y0.clone().requires_grad_(True)
    t = torch.tensor([0.1, 0.6, 1.3], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(solve, (y0, t), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sensitivity", SENSITIVITIES)
@pytest.mark.parametrize(("method", "kw"), [("dopri5", {}), ("rk4", {"step_size": 0.01})])
def test_per_sample_grids(method, kw, sensitivity):
    ts = torch.stack([T0, T0 * 0.7 + 0.05, T0 * 1.2 - 0.1])
    y0s = torch.stack([Y0, -Y0, Y0.flip(0)])
    tol = {} if kw else {"rtol": 1e-11, "atol": 1e-13}
    t = ts.clone().requires_grad_(True)
    y0 = y0s.clone().requires_grad_(True)
    A = A0.clone().requires_grad_(True)
    extra = {"adjoint_params": [A]} if sensitivity != "direct" else {}
    sol = odenet.solve(
        lambda s, y: y @ A.T, y0, t, method=method, sensitivity=sensitivity, **tol, **kw, **extra
    )
    (sol.ys * W).sum().backward()
    gA = torch.zeros_like(A0)
    for b in range(3):
        et, ey, eA = _exact_loss_grads(ts[b], y0s[b], A0)
        assert torch.allclose(t.grad[b], et, rtol=1e-6, atol=1e-8)
        assert torch.allclose(y0.grad[b], ey, rtol=1e-6, atol=1e-8)
        gA += eA
    assert torch.allclose(A.grad, gA, rtol=1e-6, atol=1e-8)


def test_odeint_time_gradient_matches_odeint_adjoint():
    # torchdiffeq's TestGradient.test_adjoint: plain and adjoint gradients agree
    t = torch.linspace(0.0, 2.0, 7, dtype=DT, requires_grad=True)
    y0 = Y0.clone().requires_grad_(True)
    lin = torch.nn.Linear(2, 2).double()
    func = lambda s, y: lin(y)  # noqa: E731
    ys = odenet.odeint(func, y0, t)
    (ys * torch.arange(14, dtype=DT).reshape(7, 2)).sum().backward()
    tg = t.grad.clone()
    t.grad = None
    ys = odenet.odeint_adjoint(func, y0, t, adjoint_params=tuple(lin.parameters()))
    (ys * torch.arange(14, dtype=DT).reshape(7, 2)).sum().backward()
    assert torch.allclose(tg, t.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "method, kw",
    [
        ("dopri5", {}),  # a continuous extension (polynomial weights)
        ("dop853", {}),  # one with extra stages
        ("bosh3", {}),  # cubic Hermite
        ("radau_iia5", {}),  # the collocation polynomial
        ("bdf", {}),  # backward differences
        ("adams", {}),  # integrated differences of f
        ("bdf2", {"step_size": 0.01}),  # a fixed multistep method: cubic Hermite
    ],
)
@pytest.mark.parametrize("sensitivity", SENSITIVITIES)
def test_an_interpolated_outputs_time_gradient_is_the_dense_outputs_slope(method, kw, sensitivity):
    # outputs between steps: ∂L/∂t_i = ⟨W_i, y'(t_i)⟩ with y' = A y of the exact flow; a
    # wrong derivative of any interpolant would be off by O(1), not by the tolerance
    t = T0.clone().requires_grad_(True)
    sol = odenet.solve(
        lambda s, y: y @ A0.T, Y0, t, method=method, rtol=1e-9, atol=1e-11,
        sensitivity=sensitivity, **kw,
    )  # fmt: skip
    (sol.ys * W).sum().backward()
    exact_t, _, _ = _exact_loss_grads(T0, Y0, A0)
    assert torch.allclose(t.grad[1:], exact_t[1:], rtol=2e-3 if kw else 1e-5, atol=0)


def _robertson(t, y):
    a, b, c = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack(
        [-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b], -1
    )


@pytest.mark.parametrize("sensitivity", SENSITIVITIES)
def test_stiff_time_gradients_at_interpolated_outputs(sensitivity):
    # f(t_i, ŷ_i) at an interpolated ŷ_i magnified the interpolant's error by Robertson's
    # Jacobian: ∂y₂/∂t came out 6 % off at t = 4 and 23 % at t = 10.  Truth: f(t, y(t))
    # from scipy's Radau at rtol 1e-12
    from scipy.integrate import solve_ivp

    times = [0.0, 0.3, 1.0, 4.0, 10.0, 40.0]

    def f_np(s, y):
        return _robertson(s, torch.tensor(y)).numpy()

    ref = solve_ivp(f_np, (0, 40), [1, 0, 0], method="Radau", rtol=1e-12, atol=1e-16, t_eval=times)
    t = torch.tensor(times, dtype=DT, requires_grad=True)
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=DT)
    sol = odenet.solve(
        _robertson, y0, t, method="kvaerno5", rtol=1e-6, atol=1e-10, sensitivity=sensitivity
    )
    sol.ys[2:5, 1].sum().backward()
    for i in (2, 3, 4):
        true = f_np(times[i], ref.y[:, i])[1]
        assert abs(t.grad[i].item() - true) < 3e-3 * abs(true), (i, t.grad[i].item(), true)


def test_direct_time_gradients_before_a_terminal_event():
    # the time term was added only when every status was 0, and a terminal event's is
    # not: ∂L/∂t_i came out 0 for every output before the event
    import math

    k = 0.7
    t = torch.tensor([0.0, 0.5, 1.0, 3.0], dtype=DT, requires_grad=True)
    event = odenet.Event(lambda s, y: y[0] - 0.3, terminal=True)  # at ln(1/0.3)/k = 1.72
    sol = odenet.solve(lambda s, y: -k * y, torch.tensor([1.0], dtype=DT), t,
                       rtol=1e-10, atol=1e-12, events=[event])  # fmt: skip
    assert sol.success and torch.isnan(sol.ys[3]).all()
    (sol.ys[1].sum() + sol.ys[2].sum()).backward()
    e1, e2 = math.exp(-k * 0.5), math.exp(-k * 1.0)
    exact = torch.tensor([k * (e1 + e2), -k * e1, -k * e2, 0.0], dtype=DT)
    assert torch.allclose(t.grad, exact, rtol=1e-8, atol=1e-12)


def test_direct_time_gradients_of_a_row_beside_a_failed_one():
    # per-sample grids, throw=False: one row blows up (y' = y², y(0) = 1, singular at
    # t = 1); the other row's time gradients came out 0
    import math

    t = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.5, 2.0]], dtype=DT, requires_grad=True)
    y0 = torch.tensor([[1.0], [1.0]], dtype=DT)
    sol = odenet.solve(lambda s, y: torch.cat([-0.7 * y[:1], y[1:] ** 2]), y0, t,
                       rtol=1e-10, atol=1e-12, throw=False, max_steps=2000)  # fmt: skip
    assert int(sol.status[0]) == 0 and int(sol.status[1]) != 0
    sol.ys[0, 1:, 0].sum().backward()
    e1, e2 = math.exp(-0.35), math.exp(-0.7)
    exact = torch.tensor([0.7 * (e1 + e2), -0.7 * e1, -0.7 * e2], dtype=DT)
    assert torch.allclose(t.grad[0], exact, rtol=1e-8, atol=1e-12)
