"""Implicit methods on stiff problems, and gradients through implicit stages."""

import math

import pytest
import torch

import odenet

D = torch.float64
LAM = -1e4


def prothero_robinson(t, y):
    # y' = λ (y − cos t) − sin t, exact solution y = cos t for y(0) = 1
    return LAM * (y - torch.cos(t)) - torch.sin(t)


T_OUT = torch.tensor([0.0, 1.0], dtype=D)


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
def test_explicit_methods_blow_up_at_a_step_far_outside_their_stability_region(method):
    with pytest.raises(odenet.NonFiniteError):
        # |R(hλ)| ≥ 99 per step: overflow well within 500 steps
        odenet.solve(
            prothero_robinson,
            torch.ones(1, dtype=D),
            torch.tensor([0.0, 5.0], dtype=D),
            method=method,
            step_size=0.01,
        )


@pytest.mark.parametrize(
    "method, tol",
    [
        ("backward_euler", 1e-5),
        ("sdirk2", 1e-6),
        ("radau_iia5", 1e-8),
        ("trapezoid", 1e-5),
        ("gauss_legendre4", 1e-5),
    ],
)
def test_implicit_methods_stay_accurate_at_the_same_step(method, tol):
    sol = odenet.solve(
        prothero_robinson, torch.ones(1, dtype=D), T_OUT, method=method, step_size=0.01
    )
    assert abs(float(sol.ys[-1, 0]) - math.cos(1.0)) < tol


def test_backward_euler_step_on_a_linear_system_is_the_resolvent():
    A = torch.tensor([[-1000.0, 1.0], [0.0, -0.5]], dtype=D)
    y0 = torch.tensor([1.0, 1.0], dtype=D)
    sol = odenet.solve(
        lambda t, y: A @ y,
        y0,
        torch.tensor([0.0, 1.0], dtype=D),
        method="backward_euler",
        step_size=0.25,
    )
    R = torch.linalg.inv(torch.eye(2, dtype=D) - 0.25 * A)
    assert torch.allclose(sol.ys[-1], torch.linalg.matrix_power(R, 4) @ y0, rtol=1e-12)
    # a linear problem: one Jacobian, Newton converges at once, and the Jacobian is reused
    assert sol.stats["jacobians"] == 1


@pytest.mark.parametrize("method", ["backward_euler", "gauss_legendre4", "radau_iia5", "sdirk2"])
def test_direct_gradients_through_implicit_stages_pass_gradcheck(method):
    # d/d(a, y0) of y(1) for y' = -a y + sin(t y): implicit function theorem vs finite differences
    def run(a, y0):
        f = lambda t, y: -a * y + torch.sin(t * y)  # noqa: E731
        return odenet.solve(
            f, y0, torch.tensor([0.0, 0.6], dtype=D), method=method, step_size=0.2
        ).ys[-1]

    a = torch.tensor(2.0, dtype=D, requires_grad=True)
    y0 = torch.tensor([0.7, -0.3], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(run, (a, y0), eps=1e-6, atol=1e-6)


def test_direct_gradient_of_an_adaptive_solve_matches_the_closed_form():
    # y' = a y: dy(T)/da = T y0 e^{aT}
    a = torch.tensor(-0.7, dtype=D, requires_grad=True)
    y0 = torch.tensor([1.5], dtype=D)
    yT = odenet.solve(
        lambda t, y: a * y, y0, torch.tensor([0.0, 2.0], dtype=D), rtol=1e-10, atol=1e-12
    ).ys[-1, 0]
    yT.backward()
    assert math.isclose(float(a.grad), 2.0 * 1.5 * math.exp(-1.4), rel_tol=1e-7)
