"""Derivatives the solve cannot give correctly raise UnsupportedDerivativeError.

Before, forward-mode tangents through implicit methods or the adjoint/checkpoint modes
came out silently wrong (radau_iia5 1.0, bdf 0.0, checkpoint/adjoint 0 for
e^{-0.7} = 0.4966), second derivatives through adjoint/checkpoint were None with
``allow_unused=True``, and torch.func transforms raised raw RuntimeErrors.  What
works stays working, checked against the closed form.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import odenet
from odenet import OdenetError, UnsupportedDerivativeError

DT = torch.float64
T = torch.tensor([0.0, 1.0], dtype=DT)
TRUTH = math.exp(-0.7)


def end(method, sensitivity):
    def F(y0):
        sol = odenet.solve(
            lambda t, y: -0.7 * y, y0, T, method=method, sensitivity=sensitivity,
            rtol=1e-10, atol=1e-12,
        )  # fmt: skip
        return sol.ys[-1]

    return F


def dual_tangent(F):
    with fwAD.dual_level():
        y = fwAD.make_dual(torch.tensor([1.0], dtype=DT), torch.tensor([1.0], dtype=DT))
        return fwAD.unpack_dual(F(y)).tangent


@pytest.mark.parametrize("method,sens", [("dopri5", "checkpoint"), ("dopri5", "adjoint"),
                                         ("radau_iia5", "adjoint")])  # fmt: skip
def test_forward_mode_refused_under_checkpoint_and_adjoint(method, sens):
    # the tangent came out 0 (functorch) or None (dual tensors)
    F = end(method, sens)
    assert issubclass(UnsupportedDerivativeError, OdenetError)
    with pytest.raises(UnsupportedDerivativeError, match=r"forward-mode|torch\.func"):
        dual_tangent(F)
    with pytest.raises(UnsupportedDerivativeError):
        torch.func.jvp(F, (torch.tensor([1.0], dtype=DT),), (torch.tensor([1.0], dtype=DT),))
    with pytest.raises(UnsupportedDerivativeError):
        torch.func.jacfwd(F)(torch.tensor([1.0], dtype=DT))


@pytest.mark.parametrize("method", ["radau_iia5", "bdf", "kvaerno5"])
def test_torch_func_forward_mode_through_implicit_methods_refused(method):
    F = end(method, "direct")  # (was a raw RuntimeError)
    with pytest.raises(UnsupportedDerivativeError, match="implicit method"):
        torch.func.jvp(F, (torch.tensor([1.0], dtype=DT),), (torch.tensor([1.0], dtype=DT),))
    with pytest.raises(UnsupportedDerivativeError, match="implicit method"):
        torch.func.jacfwd(F)(torch.tensor([1.0], dtype=DT))


@pytest.mark.parametrize("method", ["radau_iia5", "bdf", "kvaerno5"])
def test_dual_tangents_through_implicit_methods_match_reverse_mode(method):
    # radau_iia5 gave 1.0 and bdf 0.0 for e^{-0.7}: the stages were attached for
    # reverse mode only.  Tangent in y0 and in a captured parameter k at once, on a
    # nonlinear field, against dopri5's reverse-mode Jacobian
    def field(k):
        return lambda t, y: -k * y + 0.1 * y.roll(1) ** 2

    y0 = torch.tensor([1.0, 0.5], dtype=DT)
    assert abs(dual_tangent(end(method, "direct")).item() - TRUTH) < 1e-8
    with fwAD.dual_level():
        yd = fwAD.make_dual(y0, torch.tensor([1.0, 0.0], dtype=DT))
        kd = fwAD.make_dual(torch.tensor(0.7, dtype=DT), torch.tensor(1.0, dtype=DT))
        out = odenet.solve(field(kd), yd, T, method=method, rtol=1e-10, atol=1e-12).ys[-1]
        tan = fwAD.unpack_dual(out).tangent
    yr = y0.clone().requires_grad_()
    kr = torch.tensor(0.7, dtype=DT, requires_grad=True)
    o = odenet.solve(field(kr), yr, T, method="dopri5", rtol=1e-11, atol=1e-13).ys[-1]
    ref = torch.stack(
        [sum(g[0] if g.dim() else g for g in torch.autograd.grad(o[i], (yr, kr), retain_graph=True))
         for i in range(2)]
    )  # fmt: skip
    assert torch.allclose(tan, ref, rtol=1e-7, atol=1e-10), (tan, ref)


def test_forward_mode_in_the_output_times_refused():
    # dopri5 and rk4, direct: jacfwd with respect to t came out [0, 0, 0]
    # (jacrev: f(t_i, y_i) = -0.7 e^{-0.7} at t = 1)
    def F(t):
        return odenet.solve(lambda s, y: -0.7 * y, torch.tensor([1.0], dtype=DT), t).ys[-1]

    t = torch.tensor([0.0, 0.5, 1.0], dtype=DT)
    with pytest.raises(UnsupportedDerivativeError, match="output times"):
        torch.func.jacfwd(F)(t)
    with fwAD.dual_level():
        with pytest.raises(UnsupportedDerivativeError, match="output times"):
            F(fwAD.make_dual(t, torch.tensor([0.0, 0.0, 1.0], dtype=DT)))
    assert abs(torch.func.jacrev(F)(t)[0, 2].item() - (-0.7 * TRUTH)) < 1e-6


def test_forward_mode_still_works_for_explicit_direct():
    F = end("dopri5", "direct")
    assert abs(dual_tangent(F).item() - TRUTH) < 1e-8
    _, tan = torch.func.jvp(F, (torch.tensor([1.0], dtype=DT),), (torch.tensor([1.0], dtype=DT),))
    assert abs(tan.item() - TRUTH) < 1e-8
    assert abs(torch.func.jacfwd(F)(torch.tensor([1.0], dtype=DT)).item() - TRUTH) < 1e-8
    assert abs(torch.func.jacrev(F)(torch.tensor([1.0], dtype=DT)).item() - TRUTH) < 1e-8


@pytest.mark.parametrize(
    "method,sens", [("dopri5", "checkpoint"), ("dopri5", "adjoint"), ("radau_iia5", "direct")]
)
def test_torch_func_reverse_transforms_refused(method, sens):
    F = end(method, sens)
    with pytest.raises(UnsupportedDerivativeError, match=r"torch\.func"):
        torch.func.jacrev(F)(torch.tensor([1.0], dtype=DT))
    with pytest.raises(UnsupportedDerivativeError, match=r"torch\.func"):
        torch.func.grad(lambda y: F(y).sum())(torch.tensor([1.0], dtype=DT))


@pytest.mark.parametrize("sens", ["direct", "checkpoint"])
def test_vmap_over_the_state_is_refused_with_the_batching_alternative(sens):
    F = end("dopri5", sens)
    with pytest.raises(UnsupportedDerivativeError, match=r"per-sample grids t \[B, T\]"):
        torch.func.vmap(F)(torch.tensor([[1.0], [2.0]], dtype=DT))


@pytest.mark.parametrize("sens", ["checkpoint", "adjoint"])
def test_second_derivative_through_adjoint_or_checkpoint_raises(sens):
    # first derivative with create_graph stays right; differentiating it again raises
    # (was: a bare RuntimeError, or None = a silent zero with allow_unused=True)
    k = torch.tensor(0.7, dtype=DT, requires_grad=True)
    sol = odenet.solve(
        lambda t, y: -k * y, torch.tensor([1.3], dtype=DT), T, sensitivity=sens,
        rtol=1e-10, atol=1e-12,
    )  # fmt: skip
    (gk,) = torch.autograd.grad(sol.ys[-1].pow(2).sum(), k, create_graph=True)
    assert abs(gk.item() - (-2 * 1.3**2 * math.exp(-1.4))) < 1e-8
    with pytest.raises(UnsupportedDerivativeError, match="sensitivity='direct'"):
        torch.autograd.grad(gk, k, allow_unused=True)
    with pytest.raises(UnsupportedDerivativeError):
        (gk**2).backward()


@pytest.mark.parametrize("sens", ["checkpoint", "adjoint"])
def test_derivative_of_dydt_through_adjoint_or_checkpoint_raises(sens):
    y0 = torch.tensor([1.3], dtype=DT, requires_grad=True)
    t = torch.tensor([0.0, 0.37], dtype=DT, requires_grad=True)
    sol = odenet.solve(lambda s, y: -0.7 * y, y0, t, sensitivity=sens)
    (dydt,) = torch.autograd.grad(sol.ys[-1, 0], t, create_graph=True)
    with pytest.raises(UnsupportedDerivativeError):
        torch.autograd.grad(dydt[1], y0, allow_unused=True)


@pytest.mark.parametrize("method", ["backward_euler", "radau_iia5"])
def test_torch_func_through_an_implicit_step_raises_typed(method):
    def F(y):
        return odenet.step(lambda t, y: -5.0 * y, 0.0, y, 0.1, method)

    y = torch.tensor([2.0], dtype=DT)
    for transform in (torch.func.jacrev, torch.func.jacfwd):
        with pytest.raises(UnsupportedDerivativeError, match="implicit step"):
            transform(F)(y)
    # reverse mode and forward-mode dual tensors through the step are right
    # (backward Euler: dy1/dy = 1 / (1 + 0.5))
    yr = y.clone().requires_grad_()
    (d,) = torch.autograd.grad(F(yr).sum(), yr)
    with fwAD.dual_level():
        tan = fwAD.unpack_dual(F(fwAD.make_dual(y, torch.ones_like(y)))).tangent
    assert torch.allclose(tan, d, rtol=1e-12)
    if method == "backward_euler":
        assert abs(d.item() - 1 / 1.5) < 1e-12


@pytest.mark.parametrize("name", ["jump_t", "step_t"])
def test_stop_times_that_require_grad_are_refused_not_silently_constant(name):
    # y' = -y before tau, +y after: y(2) = e^{2 tau - 2}, dy/dtau = 2 y(2) (= 2 at tau = 1);
    # the solve would return tau.grad None (a silently missing gradient)
    tau = torch.tensor([1.0], dtype=DT, requires_grad=True)

    def field(t, y):
        return torch.where(t < tau.detach()[0], -y, y)

    span = torch.tensor([0.0, 2.0], dtype=DT)
    with pytest.raises(UnsupportedDerivativeError, match=f"`{name}` requires grad"):
        odenet.solve(field, torch.ones(1, dtype=DT), span, **{name: tau})
    sol = odenet.solve(field, torch.ones(1, dtype=DT), span, rtol=1e-10, atol=1e-12,
                       **{name: tau.detach()})  # fmt: skip
    assert abs(float(sol.ys[-1, 0]) - 1.0) < 1e-8
