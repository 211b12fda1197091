"""torchdiffeq's Adams methods (``explicit_adams``, ``implicit_adams``, ``fixed_adams``).

Truths: torchdiffeq's own implementation on the same input (equal-step grids), closed
forms (the harmonic oscillator), finite differences (gradcheck), and the Gauss rule
against the exact rational coefficients.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import odenet
from odenet._adams import METHODS, lagrange_integrals
from odenet._multistep import adams_bashforth, adams_moulton

D = torch.float64
torchdiffeq = pytest.importorskip("torchdiffeq")

_A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=D)


def _forced(t, y):
    return _A @ y + 0.3 * torch.sin(t)


def _oscillator(t, y):
    return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


_CASES = [
    (method, options)
    for method in ("explicit_adams", "implicit_adams", "fixed_adams")
    for options in (
        dict(step_size=0.05, max_order=8),
        dict(step_size=0.1, max_iters=1),  # the corrector stops unconverged: warns
        dict(step_size=0.07, max_order=3),  # the 3/8 rule throughout
    )
] + [
    ("implicit_adams", dict(step_size=0.02)),  # max_order 12
    # the 11-step explicit formula (max_order 12) is unstable on this problem at any of
    # these steps, in both implementations: one order less, and a smaller step
    ("explicit_adams", dict(step_size=0.005, max_order=11)),
]


@pytest.mark.parametrize("method, options", _CASES)
def test_agrees_with_torchdiffeq_on_an_equal_step_grid(method, options):
    y0 = torch.tensor([1.0, 0.5], dtype=D)
    t = torch.linspace(0.0, 1.5, 6, dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torchdiffeq.odeint(_forced, y0, t, method=method, options=options)
        got = odenet.odeint(_forced, y0, t, method=method, options=options)
    assert float((got - ref).abs().max()) < 1e-12


def test_unconverged_corrector_warns_like_torchdiffeq():
    y0 = torch.tensor([1.0, 0.5], dtype=D)
    t = torch.linspace(0.0, 2.0, 3, dtype=D)
    with pytest.warns(RuntimeWarning, match="did not converge in max_iters=1"):
        odenet.odeint(
            _forced, y0, t, method="implicit_adams", options=dict(step_size=0.1, max_iters=1)
        )


def _decay_error(h, max_order, record):
    y0 = torch.tensor([1.0], dtype=D)
    t = torch.tensor([0.0, 3.0], dtype=D)
    opts = dict(step_size=h, max_order=max_order)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = odenet.odeint(lambda t, y: -y, y0, t, method="explicit_adams", options=opts)[-1]
    record.extend(w for w in caught if issubclass(w.category, odenet.StabilityWarning))
    return abs(float(y1) - math.exp(-3.0))


@pytest.mark.parametrize("h", [0.1, 0.03, 0.01])
def test_explicit_adams_warns_when_its_high_order_formula_is_unstable(h):
    # torchdiffeq's default, max_order 12 (the 11-step formula), grows spuriously on
    # y' = -y at these steps, to 1e4 … 1e19 against e^{-3}: no error control notices
    warned = []
    assert _decay_error(h, 12, warned) > 1.0
    assert len(warned) == 1
    assert "max_order" in str(warned[0].message)


@pytest.mark.parametrize("h, max_order", [(0.003, 12), (0.1, 5), (0.01, 8), (0.03, 5)])
def test_explicit_adams_does_not_warn_on_an_accurate_solve(h, max_order):
    warned = []
    assert _decay_error(h, max_order, warned) < 1e-5
    assert not warned


def _oscillator_error(method, h, **options):
    m = METHODS[method].with_options(rtol=1e-13, atol=1e-15, max_iters=12, **options)
    y0 = torch.tensor([1.0, 0.0], dtype=D)
    sol = odenet.solve(_oscillator, y0, torch.tensor([0.0, 3.0], dtype=D), method=m, step_size=h)
    exact = torch.tensor([math.cos(3.0), -math.sin(3.0)], dtype=D)
    return float((sol.ys[-1] - exact).abs().max())


@pytest.mark.parametrize(
    "method, max_order, order",
    [("implicit_adams", 4, 4), ("explicit_adams", 4, 3), ("explicit_adams", 5, 4)],
)
def test_observed_order(method, max_order, order):
    hs = np.array([0.04, 0.02, 0.01])
    errs = np.array([_oscillator_error(method, h, max_order=max_order) for h in hs])
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.15, (slope, errs)


def test_the_order_holds_on_a_graded_grid_where_torchdiffeqs_drops():
    """Variable-step coefficients: fourth order on t_k = 3 (k/N)^1.5 (torchdiffeq's
    equal-step coefficients are second order there)."""
    y0 = torch.tensor([1.0, 0.0], dtype=D)
    errs, ref_errs = [], []
    for n in (20, 40):
        t = 3.0 * torch.linspace(0, 1, n + 1, dtype=D) ** 1.5
        exact = torch.stack([torch.cos(t), -torch.sin(t)], -1)
        opts = dict(max_order=4, max_iters=12)
        got = odenet.odeint(_oscillator, y0, t, method="implicit_adams", options=opts)
        ref = torchdiffeq.odeint(_oscillator, y0, t, method="implicit_adams", options=opts)
        errs.append(float((got - exact).abs().max()))
        ref_errs.append(float((ref - exact).abs().max()))
    assert math.log2(errs[0] / errs[1]) > 3.7
    assert math.log2(ref_errs[0] / ref_errs[1]) < 2.3
    assert errs[1] < ref_errs[1] / 50


def test_variable_step_coefficients_reduce_to_the_exact_ones():
    k = 6
    nodes = -torch.arange(k, dtype=D)
    ab = lagrange_integrals(nodes[None], torch.ones(1, k, dtype=torch.bool))[0]
    assert np.allclose(ab.numpy(), [float(c) for c in adams_bashforth(k)], rtol=1e-13, atol=0)
    z = torch.cat([torch.ones(1, dtype=D), nodes])
    am = lagrange_integrals(z[None], torch.ones(1, k + 1, dtype=torch.bool))[0]
    assert np.allclose(am.numpy(), [float(c) for c in adams_moulton(k)], rtol=1e-13, atol=0)
    # two steps, the second twice the first: ∫_0^1 of the line through (0, f0), (−1/2, f1)
    two = lagrange_integrals(torch.tensor([[0.0, -0.5]], dtype=D), torch.ones(1, 2, dtype=bool))
    assert torch.allclose(two, torch.tensor([[2.0, -1.0]], dtype=D), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_gradients_with_respect_to_y0_t_and_parameters(method):
    w = torch.tensor([1.3, 0.2], dtype=D, requires_grad=True)

    def f(t, y):
        return torch.stack([w[0] * y[1], -y[0] - w[1] * y[1]]) + 0.1 * torch.sin(t)

    y0 = torch.tensor([1.0, 0.0], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.5, 0.8, 1.1, 1.2, 1.5], dtype=D, requires_grad=True)

    def on_t(y0, t, w_):  # steps on t itself: an uneven grid, differentiable in t
        return odenet.odeint(f, y0, t, method=method, rtol=1e-12, atol=1e-14)

    def on_grid(y0, w_):
        return odenet.odeint(f, y0, t.detach(), method=method, options=dict(step_size=0.1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert torch.autograd.gradcheck(on_t, (y0, t, w))
        assert torch.autograd.gradcheck(on_grid, (y0, w))


def test_odeint_adjoint_integrates_backward_with_the_38_rule():
    """The continuous adjoint on the forward's grid: the direct (discrete) gradient up to
    the discretization error."""
    w = torch.tensor([1.3, 0.2], dtype=D, requires_grad=True)

    def f(t, y):
        return torch.stack([w[0] * y[1], -y[0] - w[1] * y[1]])

    y0 = torch.tensor([1.0, 0.0], dtype=D, requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=D)
    opts = dict(step_size=0.05, max_iters=12)
    grads = []
    for odeint, kw in ((odenet.odeint, {}), (odenet.odeint_adjoint, {"adjoint_params": (w,)})):
        ys = odeint(f, y0, t, method="implicit_adams", rtol=1e-12, atol=1e-14, options=opts, **kw)
        grads.append(torch.cat(torch.autograd.grad(ys.sum(), (y0, w))))
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-6)
    assert not torch.allclose(grads[0], grads[1], rtol=0, atol=1e-13)  # two methods indeed


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_checkpointed_gradients_are_the_direct_ones(method):
    """A replayed segment continues the forward's history (a restart would differ)."""
    w = torch.tensor([1.3, 0.2], dtype=D, requires_grad=True)

    def f(t, y):
        return torch.stack([w[0] * y[1], -y[0] - w[1] * y[1]])

    y0 = torch.tensor([1.0, 0.0], dtype=D, requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=D)
    m = METHODS[method].with_options(max_order=6, rtol=1e-12, atol=1e-14, max_iters=12)
    grads = []
    for kw in ({}, {"sensitivity": "checkpoint", "checkpoint_every": 7}):
        ys = odenet.solve(f, y0, t, method=m, step_size=0.05, **kw).ys
        grads.append(torch.cat(torch.autograd.grad(ys.sum(), (y0, w))))
    assert torch.allclose(grads[0], grads[1], rtol=1e-12, atol=1e-13)


def test_time_gradients_direct_is_the_discrete_solutions_checkpoint_the_flows():
    """On a fixed grid `direct` differentiates the computed solution with respect to an
    output time (torchdiffeq's semantics, so `gradcheck` on `t` passes); `checkpoint` and
    `adjoint` use the flow's derivative f(T, y(T)), as on a fixed Runge–Kutta grid.  The
    two differ by the scheme's error (1.9 % here), which docs/sensitivity.md states."""

    def f(t, y):
        return -y

    y0, T, h = torch.tensor([1.0], dtype=D), 1.05, 0.1

    def y_end(T_, sensitivity="direct"):
        t = torch.tensor([0.0, T_], dtype=D, requires_grad=True)
        kw = dict(method="explicit_adams", step_size=h, sensitivity=sensitivity)
        ys = odenet.solve(f, y0, t, **kw).ys
        return ys[-1, 0], t

    eps = 1e-6
    with torch.no_grad():
        discrete = (y_end(T + eps)[0] - y_end(T - eps)[0]).item() / (2 * eps)
    for sensitivity in ("direct", "checkpoint", "adjoint"):
        y, t = y_end(T, sensitivity)
        (g,) = torch.autograd.grad(y, t)
        want = discrete if sensitivity == "direct" else -y.item()  # the flow: f = −y
        assert abs(g[1].item() - want) < 1e-7 * abs(want), sensitivity
    assert abs(discrete + y.item()) > 1e-2 * abs(discrete)  # the two semantics differ here


def test_a_batch_with_per_sample_grids_is_each_sample_alone():
    t = torch.stack([torch.linspace(0, 2, 5, dtype=D), torch.linspace(0, 3, 5, dtype=D)])
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.2]], dtype=D)
    m = METHODS["implicit_adams"].with_options(rtol=1e-12, atol=1e-14, max_iters=8)
    batch = odenet.solve(_oscillator, y0, t, method=m, step_size=0.1)
    for i in range(2):
        alone = odenet.solve(_oscillator, y0[i], t[i], method=m, step_size=0.1)
        assert torch.allclose(batch.ys[i], alone.ys, rtol=0, atol=1e-14)


def test_bad_use_is_a_one_line_error():
    y0 = torch.tensor([1.0, 0.0], dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    with pytest.raises(odenet.InputError, match=r"max_order.*from 1 to 12"):
        odenet.odeint(_oscillator, y0, t, method="implicit_adams", options=dict(max_order=13))
    with pytest.raises(odenet.InputError, match="max_iters"):
        odenet.odeint(_oscillator, y0, t, method="implicit_adams", options=dict(max_iters=0))
    with pytest.raises(odenet.InputError, match="fixed grid"):
        odenet.solve(_oscillator, y0, t, method="explicit_adams")
    with pytest.raises(odenet.InputError, match="unknown option"):
        METHODS["explicit_adams"].with_options(order=3)
    with pytest.warns(RuntimeWarning, match="3/8 rule"):
        METHODS["explicit_adams"].with_options(max_order=2)
