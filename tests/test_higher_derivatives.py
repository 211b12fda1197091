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
    ("trbdf2", dict(rtol=1e-6, atol=1e-8)),  # order 2: 1e-8 took 15 k steps, 97 s
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


# --- derivatives of the output-time derivative (physics-informed residuals) ----------

TIME_METHODS = [
    ("dopri5", dict(rtol=1e-10, atol=1e-12)),
    ("tsit5", dict(rtol=1e-10, atol=1e-12)),
    ("adams", dict(rtol=1e-10, atol=1e-12)),
    ("bdf", dict(rtol=1e-10, atol=1e-12)),
    ("radau_iia5", dict(rtol=1e-10, atol=1e-12)),
    ("abm4", dict(step_size=0.01)),
    ("rk4", dict(step_size=0.01)),
]


@pytest.mark.parametrize("method,kw", TIME_METHODS, ids=lambda v: str(v))
def test_parameter_derivative_of_dydt_matches_closed_form(method, kw):
    # y = y0 e^{-k t}: d/dk y'(t) = (k t - 1) y0 e^{-k t}, d/dy0 y'(t) = -k e^{-k t}
    y0v, kv = 1.3, 0.7
    k = torch.tensor(kv, dtype=DT, requires_grad=True)
    y0 = torch.tensor([y0v], dtype=DT, requires_grad=True)
    t = torch.tensor([0.0, 0.37, 1.0], dtype=DT, requires_grad=True)
    sol = odenet.solve(lambda s, y: -k * y, y0, t, method=method, **kw)
    (dydt,) = torch.autograd.grad(sol.ys[:, 0].sum(), t, create_graph=True)
    tt = t.detach()
    e = torch.exp(-kv * tt)
    # (index 0 is ∂Σy/∂t0, the flow's dependence on its start)
    assert torch.allclose(dydt[1:], -kv * y0v * e[1:], rtol=1e-7)
    for i in (1, 2):
        dk, dy0 = torch.autograd.grad(dydt[i], (k, y0), retain_graph=True)
        assert torch.allclose(dk, (kv * tt[i] - 1) * y0v * e[i], rtol=1e-6), (i, dk)
        assert torch.allclose(dy0, -kv * e[i], rtol=1e-6), (i, dy0)


def test_compat_odeint_pinn_derivative_matches_torchdiffeq():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    vals = []
    for lib in (torchdiffeq, odenet):
        k = torch.tensor(0.7, dtype=DT, requires_grad=True)
        t = torch.tensor([0.0, 0.37, 1.0], dtype=DT, requires_grad=True)
        ys = lib.odeint(
            lambda s, y, k=k: -k * y,
            torch.tensor([1.3], dtype=DT),
            t,
            method="dopri5",
            rtol=1e-10,
            atol=1e-12,
        )
        (dydt,) = torch.autograd.grad(ys[:, 0].sum(), t, create_graph=True)
        vals.append(
            torch.stack([torch.autograd.grad(dydt[i], k, retain_graph=True)[0] for i in (1, 2)])
        )
    assert torch.allclose(vals[1], vals[0], rtol=1e-7), vals
    assert abs(vals[1][0].item() - (-0.74349712)) < 1e-7


def _time_grad(tv, method, create_graph=False):
    t = torch.tensor(tv, dtype=DT, requires_grad=True)
    sol = odenet.solve(
        lambda s, y: -0.7 * y + torch.cos(s) * y**2 / (1 + y**2),
        torch.tensor([1.3], dtype=DT),
        t,
        method=method,
        rtol=1e-11,
        atol=1e-13,
    )
    (g,) = torch.autograd.grad(sol.ys[:, 0].sum(), t, create_graph=create_graph)
    return t, g


@pytest.mark.parametrize("method", ["dopri5", "bdf"])
@pytest.mark.parametrize("tv", [[0.2, 0.9, 1.7], [1.7, 0.9, 0.2]], ids=["forward", "backward"])
def test_time_hessian_matches_finite_differences_of_the_gradient(method, tv):
    # second derivatives with respect to the output times and the start time
    # (y'' = f_t + f_y f on the diagonal, the flow's dependence on t0 off it)
    t, g = _time_grad(tv, method, create_graph=True)
    H = torch.stack([torch.autograd.grad(g[i], t, retain_graph=True)[0] for i in range(3)])
    eps = 1e-5
    cols = []
    for j in range(3):
        up = [v + eps * (i == j) for i, v in enumerate(tv)]
        dn = [v - eps * (i == j) for i, v in enumerate(tv)]
        cols.append((_time_grad(up, method)[1] - _time_grad(dn, method)[1]) / (2 * eps))
    Hfd = torch.stack(cols, dim=1)
    assert torch.allclose(H, Hfd, rtol=1e-5, atol=1e-6), (H, Hfd)


def test_time_gradient_with_unreached_outputs_stays_finite():
    # a terminal event leaves NaN outputs; f = -k/y is singular at y = 0, so the
    # slopes' graph must not evaluate f at a made-up state there (k.grad came out NaN)
    k = torch.tensor(1.0, dtype=DT, requires_grad=True)
    t = torch.tensor([0.0, 0.1, 0.3, 0.45, 0.6], dtype=DT, requires_grad=True)
    sol = odenet.solve(
        lambda s, y: -k / y, torch.tensor([1.0], dtype=DT), t,
        events=odenet.Event(lambda s, y: y[0] - 0.5, terminal=True), rtol=1e-10, atol=1e-12,
    )  # fmt: skip
    ys = sol.ys[:, 0]
    assert torch.isnan(ys[3:]).all()
    torch.where(torch.isfinite(ys), ys, torch.zeros_like(ys)).sum().backward()
    # y = sqrt(1 - 2 k t): dy/dk = -t / y, dy/dt = -k / y
    tt = t.detach()[1:3]
    y = torch.sqrt(1 - 2 * tt)
    assert torch.allclose(k.grad, (-tt / y).sum(), rtol=1e-6), (k.grad, (-tt / y).sum())
    # (the dense output's slope: one order below the solution's accuracy)
    assert torch.allclose(t.grad[1:3], -1 / y, rtol=1e-5), t.grad
    assert (t.grad[3:] == 0).all()
