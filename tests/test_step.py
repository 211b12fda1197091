"""``odenet.step``: the step map of every scheme against closed forms, nested implicit
steps, torch.func tracing, and the errors of a wrong call."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.func import jacrev, vmap

import odenet
from odenet import InputError, VectorFieldError
from odenet._solve import _STEP_CACHE
from odenet._stepper import RungeKutta, explicit_step
from odenet.stability import flow_map, stability_function

D = torch.float64
ALL = odenet.methods()
EXPLICIT = [m for m in ALL if odenet.tableau(m).is_explicit]


@pytest.mark.parametrize("method", ALL)
def test_one_step_on_the_linear_test_equation_is_the_stability_function(method):
    # y' = λy: one step multiplies by R(λh), R from the tableau alone
    lam, h = -1.3, 0.4
    y = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    got = odenet.step(lambda t, y: lam * y, 0.7, y, h, method)
    R = complex(stability_function(odenet.tableau(method))(np.array([lam * h + 0j]))[0])
    assert R.imag == pytest.approx(0.0, abs=1e-14)
    torch.testing.assert_close(got, R.real * y, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("method", [m for m in ALL if odenet.tableau(m).order >= 3])
def test_a_quadrature_of_degree_two_is_exact_from_any_start_time(method):
    # y' = 3t² integrates exactly for order ≥ 3, and t enters as t0 + c_i h
    t0, h = 1.25, 0.5
    y = torch.zeros(2, dtype=D)
    got = odenet.step(lambda t, y: (3 * t**2) * torch.ones_like(y), t0, y, h, method)
    torch.testing.assert_close(got, torch.full((2,), (t0 + h) ** 3 - t0**3, dtype=D))


@pytest.mark.parametrize("t0", [1e6, torch.tensor(1e6, dtype=torch.float64)])
def test_a_float32_state_steps_on_its_times_as_solve_does(t0):
    # y' = −cos(t) y from t = 1e6: the step cast t (even a float64 tensor) to the state's
    # float32, rounding the stage times to 1/16 (3.5e-4 off); solve keeps them
    f = lambda t, y: -torch.cos(t) * y  # noqa: E731
    y0 = torch.ones(1)
    one = odenet.step(f, t0, y0, 0.1, "rk4")
    t = torch.tensor([1e6, 1e6 + 0.1], dtype=torch.float64)
    exact = math.exp(-(math.sin(1e6 + 0.1) - math.sin(1e6)))
    assert one.dtype == torch.float32
    by_solve = odenet.solve(f, y0, t, method="rk4", step_size=0.1).ys[-1]
    assert one.item() == pytest.approx(by_solve.item())
    assert one.item() == pytest.approx(exact, rel=1e-6)


def test_euler_is_bit_for_bit_the_residual_block_and_negative_steps_go_back():
    y = torch.tensor([[1.0, 5.0]], dtype=D)
    assert torch.equal(odenet.step(lambda t, y: -y, 0.0, y, 0.1, "euler"), y + 0.1 * (-y))
    back = odenet.step(lambda t, y: -y, 0.0, y, -0.1, "backward_euler")
    torch.testing.assert_close(back, y / 0.9)  # y1 = y0 + h·(−y1), h = −0.1


def test_batched_implicit_step_solves_each_row_on_its_own():
    lam = torch.tensor([[-1.0], [-10.0], [-100.0]], dtype=D)
    y = torch.ones(3, 2, dtype=D)
    got = odenet.step(lambda t, y: lam * y, 0.0, y, 0.1, "backward_euler", batched=True)
    torch.testing.assert_close(got, y / (1 - 0.1 * lam))


@pytest.mark.parametrize("outer", ["backward_euler", "sdirk2", "radau_iia5", "trapezoid"])
def test_a_nested_implicit_step_does_not_disturb_the_outer_one(outer):
    # the outer field is itself an implicit step of the same method (one cached runtime):
    # (Φ_inner(y) − y)/δ = λ y for y' = −y, so the outer field is linear.  When the
    # runtime was shared, the inner call reset the outer's Newton and track_grad and
    # the outer step lost its gradient (0 instead of R(λh))
    delta = 0.1

    def field(t, y):
        inner = odenet.step(lambda s, x: -x, 0.0, y, delta, outer)
        return (inner - y) / delta

    one = torch.ones(1, dtype=D)
    lam = float((odenet.step(lambda s, x: -x, 0.0, one, delta, outer) - 1) / delta)
    y = torch.tensor([1.0, 3.0], dtype=D, requires_grad=True)
    got = odenet.step(field, 0.0, y, 0.5, outer)
    (grad,) = torch.autograd.grad(got.sum(), y)
    y_ref = y.detach().clone().requires_grad_(True)
    want = odenet.step(lambda t, y: lam * y, 0.0, y_ref, 0.5, outer)
    (grad_want,) = torch.autograd.grad(want.sum(), y_ref)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_want, rtol=1e-10, atol=1e-12)


def test_the_cached_runtime_is_never_handed_out():
    y = torch.ones(2, dtype=D)
    odenet.step(lambda t, y: -y, 0.0, y, 0.1, "sdirk2")
    for rk in _STEP_CACHE.values():
        assert rk.newton is None and rk.track_grad is False


def test_step_is_differentiable_in_y_and_dt():
    y = torch.tensor([1.0, 2.0], dtype=D, requires_grad=True)
    dt = torch.tensor(0.2, dtype=D, requires_grad=True)
    out = odenet.step(lambda t, y: -2.0 * y, 0.0, y, dt, "backward_euler")
    out.sum().backward()
    # Φ = y / (1 + 2 dt): ∂Φ/∂y = 1/1.4, ∂ΣΦ/∂dt = −2 Σy / 1.4²
    torch.testing.assert_close(y.grad, torch.full((2,), 1 / 1.4, dtype=D))
    torch.testing.assert_close(dt.grad, torch.tensor(-2 * 3.0 / 1.4**2, dtype=D))


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
def test_step_and_flow_map_run_under_torch_func(method):
    A = torch.tensor([[0.0, 1.0], [-4.0, -0.3]], dtype=D)

    def f(t, x):
        return A @ x

    xs = torch.randn(5, 2, dtype=D)
    J = vmap(jacrev(lambda x: odenet.step(f, 0.0, x, 0.1, method)))(xs)
    Jf = vmap(jacrev(flow_map(f, 0.1, method)))(xs)
    # linear field: the step's Jacobian is the matrix R(hA), the same at every state
    R = torch.linalg.matrix_exp(0.1 * A)
    order = odenet.tableau(method).order
    assert float((J[0] - R).abs().max()) < 10 * 0.1 ** (order + 1)
    torch.testing.assert_close(J, Jf)
    torch.testing.assert_close(J, J[:1].expand_as(J))


@pytest.mark.parametrize("method", EXPLICIT)
def test_explicit_step_is_the_runtime_step(method):
    tab = odenet.tableau(method)
    rk = RungeKutta(tab, D, D, "cpu")

    def g(s, y):
        return torch.sin(s)[:, None] * y - y**2

    y = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=D)
    s = torch.tensor([0.1, 0.2], dtype=D)
    h = torch.tensor([0.05, -0.1], dtype=D)
    res = rk.step(g, s, y, h, g(s, y))
    y1, err, ks = explicit_step(g, s, y, h, rk, hy=h[:, None])
    assert torch.equal(res.y1, y1) and torch.equal(res.ks, ks)


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(EXPLICIT),
    s=st.floats(-3, 3),
    h=st.floats(-0.5, 0.5).filter(lambda v: abs(v) > 1e-6),
    y=st.lists(st.floats(-2, 2), min_size=1, max_size=4),
)
def test_the_host_layout_of_explicit_step_is_the_same_step(method, s, h, y):
    # Python-float times and one system (the loop's host backend) take the same
    # stages as tensor times: same stages, solution and error estimate to round-off
    rk = RungeKutta(odenet.tableau(method), D, D, "cpu")

    def g(t, yy):
        t = torch.as_tensor(t, dtype=D).reshape(-1, 1)
        return torch.cos(t) * yy - 0.5 * yy**3

    y0 = torch.tensor([y], dtype=D)
    y1_h, err_h, K = explicit_step(g, s, y0, h, rk)
    s_t, h_t = torch.tensor([s], dtype=D), torch.tensor([h], dtype=D)
    y1_t, err_t, ks = explicit_step(g, s_t, y0, h_t, rk, hy=h_t[:, None])
    # the two layouts sum the stage inputs y + h Σ a_ij k_j in different orders: their
    # round-off is up to ~eps·|h|·max_i Σ_j |a_ij|·max|k| (96·|h| for DOP853), and f
    # multiplies it by |∂f/∂y| = |cos t − 1.5 Y²|, at most 16.5 where every |k| ≤ 10
    # (|Y| ≤ 3.2); measured 3.9e-13 for DOP853, h = 0.5, y = 2.  Stages that blow up
    # (y' = −y³/2 backward in time: |k| ~ 1e28 at h = −0.5, y = 1.75) amplify round-off
    # stage by stage, which says nothing about the layouts: not compared
    assume(float(K.abs().max()) <= 10)
    rho = float(np.abs(np.asarray(rk.tableau.A, dtype=float)).sum(axis=1).max())
    eps = torch.finfo(D).eps
    tol = 16 * eps * max(1.0, abs(h) * rho) * max(1.0, float(K.abs().max())) * 16.5
    torch.testing.assert_close(K, ks[:, 0], rtol=1e-13, atol=max(1e-13, tol))
    torch.testing.assert_close(y1_h, y1_t, rtol=1e-13, atol=max(1e-13, abs(h) * tol))
    if err_t is not None:
        errs_t = err_t if isinstance(err_t, tuple) else (err_t,)
        err_tol = max(1e-13, abs(h) * tol)
        torch.testing.assert_close(err_h, torch.cat(errs_t), rtol=1e-10, atol=err_tol)
    y1_o, K_o, rates, f1 = rk.step_one(g, s, y0, h, K[:1])  # the host backend's step
    assert torch.equal(y1_o, y1_h) and torch.equal(K_o, K)
    if rk.stiffly_accurate:  # FSAL: f1 is f at the solution, exactly
        assert torch.equal(f1, g(s + h, y1_o))


# --- wrong calls --------------------------------------------------------------------


def test_a_field_of_the_wrong_shape_is_an_error_not_a_broadcast():
    # before: an Euler step of -y[:1] on [1, 5] gave [0.9, 4.9]
    y = torch.tensor([1.0, 5.0], dtype=D)
    with pytest.raises(
        VectorFieldError, match=r"returned shape \(1,\) for a state of shape \(2,\)"
    ):
        odenet.step(lambda t, y: -y[:1], 0.0, y, 0.1, "euler")
    with pytest.raises(VectorFieldError, match=r"must return a torch.Tensor, got float"):
        odenet.step(lambda t, y: 1.0, 0.0, y, 0.1, "rk4")


def test_a_field_that_raises_is_a_vector_field_error_chained_to_it():
    def f(t, y):
        raise KeyError("no such parameter")

    with pytest.raises(VectorFieldError, match=r"raised KeyError on its first call") as info:
        odenet.step(f, 0.0, torch.ones(2, dtype=D), 0.1)
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"y": torch.tensor([float("nan"), 1.0])},
            r"`y` contains NaN or inf \(NaN at index \[0\]\)",
        ),
        ({"y": torch.tensor([1, 2])}, r"`y` must have a floating dtype, got torch.int64"),
        ({"y": torch.ones(2, dtype=torch.float16)}, r"`y` has dtype torch.float16.*float32"),
        ({"y": torch.ones(0)}, r"`y` is empty"),
        ({"dt": float("nan")}, r"`dt` must be a finite number, got nan"),
        ({"dt": "0.1"}, r"`dt` must be a finite number, got '0.1'"),
        ({"dt": torch.ones(2)}, r"`dt` must be a number or a 0-dim tensor"),
        ({"f": 3}, r"`f` must be callable as f\(t, y\), got int"),
        ({"y": torch.tensor(1.0), "batched": True}, r"`batched=True` needs `y` of shape \[B"),
    ],
)
def test_wrong_arguments_to_step(kwargs, match):
    args = {"f": lambda t, y: -y, "t": 0.0, "y": torch.ones(2, dtype=D), "dt": 0.1}
    batched = kwargs.pop("batched", False)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        odenet.step(args["f"], args["t"], args["y"], args["dt"], "rk4", batched=batched)


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(odenet.UnknownMethodError, match="rk4"):
        odenet.step(lambda t, y: -y, 0.0, torch.ones(2), 0.1, "rk5000")


def test_flow_map_checks_its_field_as_step_does():
    from odenet.stability import StabilityInputError

    x = torch.tensor([1.0, 5.0], dtype=D)
    with pytest.raises(VectorFieldError, match=r"returned shape \(1,\) for a state of shape"):
        flow_map(lambda t, x: -x[:1], 0.1)(x)
    with pytest.raises(StabilityInputError, match=r"`f` must be callable as f\(t, x\)"):
        flow_map(3, 0.1)
    # the check reads shapes only, so the map still runs under vmap(jacrev)
    J = vmap(jacrev(flow_map(lambda t, x: -x, 0.1, "euler")))(x[None].expand(3, 2))
    torch.testing.assert_close(J, 0.9 * torch.eye(2, dtype=D).expand(3, 2, 2))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    f=st.sampled_from([lambda t, y: -y, lambda t, y: -y[:1], lambda t, y: 1.0, lambda t, y: y.x]),
    t=st.sampled_from([0.0, 1, torch.tensor(0.5), "x", None, math.nan, torch.ones(3), 1j]),
    y=st.sampled_from(
        [torch.ones(2, 3, dtype=D), torch.ones(3), [1.0, 2.0], torch.tensor(math.inf), "y"]
    ),
    dt=st.sampled_from([0.1, -0.2, 0, torch.tensor(0.1, dtype=D), math.inf, "x", None]),
    method=st.sampled_from(["euler", "rk4", "dopri5", "backward_euler", "sdirk2", "nope"]),
    batched=st.booleans(),
)
def test_fuzz_step_either_works_or_raises_an_odenet_error(f, t, y, dt, method, batched):
    try:
        out = odenet.step(f, t, y, dt, method, batched=batched)
    except odenet.OdenetError:
        return
    assert isinstance(out, torch.Tensor) and out.shape == torch.as_tensor(y).shape
