"""Second derivatives through `solve` (and `step`) against closed forms and an explicit method.

The implicit methods attach their Newton stages to the graph by the implicit function
theorem; one Newton step gave the right first derivative but a wrong second one (half
the truth for y' = -k y, 1000x too small or zero for y' = -k y², no graph at all when f
is linear in y).
"""

from __future__ import annotations

import pytest
import torch

import odenet

DT = torch.float64
T = torch.tensor([0.0, 1.0], dtype=DT)

IMPLICIT = [
    ("radau_iia5", dict(rtol=1e-9, atol=1e-11)),
    ("radau_iia3", dict(rtol=1e-8, atol=1e-10)),
    ("kvaerno5", dict(rtol=1e-9, atol=1e-11)),
    ("sdirk4", dict(rtol=1e-9, atol=1e-11)),
    ("trbdf2", dict(rtol=1e-8, atol=1e-10)),
    ("bdf", dict(rtol=1e-9, atol=1e-11)),
    ("ndf", dict(rtol=1e-9, atol=1e-11)),
    ("radau_iia5", dict(step_size=0.05)),
    ("gauss_legendre4", dict(step_size=0.02)),
]


def _closed_riccati(y0, k):  # y' = -k y², y(1)
    return y0 / (1 + k * y0)


@pytest.mark.parametrize("method,kw", IMPLICIT, ids=lambda v: str(v))
def test_second_derivatives_nonlinear_match_closed_form(method, kw):
    y0c = torch.tensor(0.8, dtype=DT, requires_grad=True)
    kc = torch.tensor(1.0, dtype=DT, requires_grad=True)
    gy, gk = torch.autograd.grad(_closed_riccati(y0c, kc), (y0c, kc), create_graph=True)
    truth = torch.stack(torch.autograd.grad(gy, (y0c, kc)))

    y0 = torch.tensor([0.8], dtype=DT, requires_grad=True)
    k = torch.tensor(1.0, dtype=DT, requires_grad=True)
    sol = odenet.solve(lambda t, y: -k * y**2, y0, T, method=method, **kw)
    gy, gk = torch.autograd.grad(sol.ys[-1].sum(), (y0, k), create_graph=True)
    assert gy.requires_grad
    got = torch.stack([h.reshape(()) for h in torch.autograd.grad(gy.sum(), (y0, k))])
    assert torch.allclose(got, truth, rtol=1e-6, atol=0), (got, truth)


@pytest.mark.parametrize("method,kw", IMPLICIT[:6], ids=lambda v: str(v))
def test_pinn_style_gradient_penalty_linear(method, kw):
    # L = y(1)² = y0² e^{-2k}; (dL/dk)² differentiated again: d/dk (dL/dk)² = 2 L_k L_kk
    y0v, kv = 1.3, 0.7
    E = torch.exp(torch.tensor(-2 * kv, dtype=DT))
    L_k, L_kk = -2 * y0v**2 * E, 4 * y0v**2 * E
    k = torch.tensor(kv, dtype=DT, requires_grad=True)
    y0 = torch.tensor([y0v], dtype=DT)
    sol = odenet.solve(lambda t, y: -k * y, y0, T, method=method, **kw)
    (gk,) = torch.autograd.grad(sol.ys[-1].pow(2).sum(), k, create_graph=True)
    (gk**2).backward()
    assert torch.allclose(k.grad, 2 * L_k * L_kk, rtol=1e-6)


def test_hessian_vector_product_matches_explicit_method():
    # a small tanh network field: the Hessian-vector product in the weights through
    # radau_iia5 and bdf equals dopri5's at tight tolerances
    torch.manual_seed(0)
    W0 = 0.8 * torch.randn(3, 3, dtype=DT)
    v = torch.randn(3, 3, dtype=DT)
    y0 = torch.tensor([0.5, -0.3, 0.9], dtype=DT)
    t = torch.tensor([0.0, 0.6, 1.5], dtype=DT)

    def hvp(method):
        W = W0.clone().requires_grad_()
        sol = odenet.solve(
            lambda s, y: torch.tanh(y @ W.T) - 0.5 * y, y0, t, method=method, rtol=1e-10, atol=1e-12
        )
        (g,) = torch.autograd.grad(sol.ys.pow(3).sum(), W, create_graph=True)
        (h,) = torch.autograd.grad((g * v).sum(), W)
        return h

    ref = hvp("dopri5")
    for method in ("radau_iia5", "kvaerno5", "bdf"):
        assert torch.allclose(hvp(method), ref, rtol=1e-6, atol=1e-8), method


@pytest.mark.parametrize("method", ["backward_euler", "trapezoid"])
def test_single_step_second_derivative_closed_form(method):
    # y' = -k y, one step h: backward Euler y1 = y/(1 + hk), trapezoid y/(1+hk/2)·(1-hk/2)
    h, y = 0.1, torch.tensor([1.0], dtype=DT)

    def exact(k):
        if method == "backward_euler":
            return y / (1 + h * k)
        return y * (1 - h * k / 2) / (1 + h * k / 2)

    kc = torch.tensor(5.0, dtype=DT, requires_grad=True)
    (d1,) = torch.autograd.grad(exact(kc).sum(), kc, create_graph=True)
    (truth,) = torch.autograd.grad(d1, kc)

    k = torch.tensor(5.0, dtype=DT, requires_grad=True)
    y1 = odenet.step(lambda t, y: -k * y, 0.0, y, h, method)
    (d1,) = torch.autograd.grad(y1.sum(), k, create_graph=True)
    (got,) = torch.autograd.grad(d1, k)
    assert torch.allclose(got, truth, rtol=1e-10)
