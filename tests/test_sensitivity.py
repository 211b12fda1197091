"""Gradients from sensitivity='adjoint' and 'checkpoint' against independent truths.

Truths: closed forms (y' = a·y), ``torch.linalg.matrix_exp`` (linear systems, also
contracting ones where a backward re-solve of the state would explode), finite
differences (``torch.autograd.gradcheck``, output times), and ``direct`` autograd
through the steps (checkpoint must reproduce it to round-off).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odenet._compat import odeint, odeint_adjoint
from odenet._errors import InputError
from odenet._solve import solve

DT = torch.float64
SOLVERS = {
    "dopri5-adaptive": dict(method="dopri5", rtol=1e-10, atol=1e-12),
    "rk4-fixed": dict(method="rk4", step_size=0.02),
}
KINDS = ["direct", "adjoint", "checkpoint"]


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def grads_of(kind, f, y0, t, weights, params, **kw):
    extra = {} if kind == "direct" else {"adjoint_params": params}
    sol = solve(f, y0, t, sensitivity=kind, **kw, **extra)
    loss = (sol.ys * weights).sum()
    return torch.autograd.grad(loss, [y0, *params]), sol


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", KINDS)
def test_exponential_growth_gradients_match_closed_form(kind, solver):
    # y' = a y:  y(T) = y0 e^{aT},  ∂y(T)/∂a = T y0 e^{aT},  ∂y(T)/∂y0 = e^{aT}
    a = torch.tensor(-0.7, dtype=DT, requires_grad=True)
    y0 = torch.tensor([1.3], dtype=DT, requires_grad=True)
    T = 2.0
    t = torch.tensor([0.0, 0.5, T], dtype=DT)
    (gy0, ga), _ = grads_of(
        kind,
        lambda t, y: a * y,
        y0,
        t,
        torch.tensor([[0.0], [0.0], [1.0]], dtype=DT),
        [a],
        **SOLVERS[solver],
    )
    assert float(ga) == pytest.approx(T * 1.3 * math.exp(-0.7 * T), rel=1e-8)
    assert float(gy0) == pytest.approx(math.exp(-0.7 * T), rel=1e-8)


def _contracting(n=4, seed=0, eig=(-10.0, -5.0, -1.0, -0.3)):
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, n, dtype=DT, generator=g))[0]
    return Q @ torch.diag(torch.tensor(eig, dtype=DT)) @ Q.T


@pytest.mark.parametrize(
    "kw",
    [dict(method="dopri5", rtol=1e-9, atol=1e-11), dict(method="rk4", step_size=0.02)],
    ids=["dopri5", "rk4"],
)
def test_adjoint_matches_matrix_exp_on_contracting_linear_system(kw):
    # eigenvalues down to −10 on a horizon of 2: a backward re-solve of the state
    # would amplify its errors by e^{20}; the checkpointed adjoint must not.
    A = _contracting().requires_grad_(True)
    y0 = torch.randn(4, dtype=DT, generator=torch.Generator().manual_seed(1)).requires_grad_()
    w = torch.tensor([0.3, -1.0, 0.5, 2.0], dtype=DT)
    T = 2.0
    ref = torch.autograd.grad((w * (torch.linalg.matrix_exp(A * T) @ y0)).sum(), [A, y0])
    sol = solve(
        lambda t, y: A @ y,
        y0,
        torch.tensor([0.0, T], dtype=DT),
        sensitivity="adjoint",
        adjoint_params=[A],
        **kw,
    )
    got = torch.autograd.grad((w * sol.ys[-1]).sum(), [A, y0])
    assert rel(got[0], ref[0]) < 1e-6
    assert rel(got[1], ref[1]) < 1e-6


class MLPField(torch.nn.Module):
    def __init__(self, n=3, width=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n, width), torch.nn.Tanh(), torch.nn.Linear(width, n)
        ).double()

    def forward(self, t, y):
        tt = t[:, None] if t.dim() else t  # per-sample times come as [B]
        return self.net(y) * (1 + 0.2 * torch.sin(tt))


@pytest.mark.parametrize("solver", SOLVERS)
def test_adjoint_and_checkpoint_agree_with_direct_on_mlp_field(solver):
    f = MLPField()
    params = list(f.parameters())
    y0 = torch.randn(5, 3, dtype=DT, generator=torch.Generator().manual_seed(2)).requires_grad_()
    t = torch.tensor([0.0, 0.4, 1.1], dtype=DT)
    w = torch.randn(3, 5, 3, dtype=DT, generator=torch.Generator().manual_seed(3))
    ref, _ = grads_of("direct", f, y0, t, w, params, **SOLVERS[solver])
    ck, _ = grads_of("checkpoint", f, y0, t, w, params, **SOLVERS[solver])
    adj, sol = grads_of("adjoint", f, y0, t, w, params, **SOLVERS[solver])
    for r, c, a in zip(ref, ck, adj):
        assert rel(c, r) < 1e-12  # the same discrete gradient, to round-off
        assert rel(a, r) < 1e-7  # the continuous gradient, to tolerance level
    assert sol.stats["backward_nfe"] > 0 and sol.stats["backward_steps"] > 0
    assert sol.stats["seminorm"] is True


def test_checkpoint_keeps_order_sqrt_n_states_and_reproduces_direct():
    f = MLPField(seed=4)
    params = list(f.parameters())
    y0 = torch.randn(2, 3, dtype=DT, generator=torch.Generator().manual_seed(5)).requires_grad_()
    t = torch.tensor([0.0, 2.0], dtype=DT)
    w = torch.ones(2, 2, 3, dtype=DT)
    ref, _ = grads_of("direct", f, y0, t, w, params, method="rk4", step_size=0.02)
    got, sol = grads_of("checkpoint", f, y0, t, w, params, method="rk4", step_size=0.02)
    N = 100
    assert math.sqrt(N / 2) <= sol.stats["checkpoints"] <= 2 * math.sqrt(2 * N) + 1
    assert sol.stats["backward_segments"] <= sol.stats["checkpoints"]
    for r, c in zip(ref, got):
        assert rel(c, r) < 1e-12


def test_fixed_checkpoint_stride_is_honoured():
    f = MLPField(seed=6)
    y0 = torch.randn(3, dtype=DT, requires_grad=True)
    sol = solve(
        f,
        y0,
        torch.tensor([0.0, 1.0], dtype=DT),
        method="rk4",
        step_size=0.01,
        sensitivity="adjoint",
        checkpoint_every=10,
    )
    sol.ys.sum().backward()
    assert sol.stats["checkpoints"] == 11  # after steps 0, 10, ..., 100


@pytest.mark.parametrize("method", ["sdirk2", "radau_iia5"])
def test_implicit_methods_checkpoint_equals_direct_adjoint_near_truth(method):
    A = _contracting(3, seed=7, eig=(-20.0, -2.0, -0.5)).requires_grad_(True)
    y0 = torch.tensor([1.0, -0.5, 0.25], dtype=DT, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=DT)
    w = torch.tensor([[0.0, 0, 0], [1.0, 0.5, -1.0], [0.2, 1.0, 1.0]], dtype=DT)

    def f(t, y):
        return A @ y

    kw = dict(method=method, step_size=0.05)
    ref, _ = grads_of("direct", f, y0, t, w, [A], **kw)
    ck, _ = grads_of("checkpoint", f, y0, t, w, [A], **kw)
    adj, _ = grads_of("adjoint", f, y0, t, w, [A], **kw)
    exact = torch.autograd.grad(
        sum((w[i] * (torch.linalg.matrix_exp(A * t[i]) @ y0)).sum() for i in range(3)), [y0, A]
    )
    # the adjoint reads the state from the forward's cubic Hermite interpolant: O(h⁴)
    order_tol = 5e-3 if method == "sdirk2" else 2e-4
    for r, c, a, e in zip(ref, ck, adj, exact):
        assert rel(c, r) < 1e-9
        assert rel(a, e) < order_tol
        assert rel(r, e) < order_tol


@pytest.mark.parametrize("kind", ["adjoint", "checkpoint"])
def test_gradcheck_fixed_and_adaptive(kind):
    theta = torch.tensor([0.8, -0.3], dtype=DT, requires_grad=True)
    y0 = torch.tensor([0.5, 1.0], dtype=DT, requires_grad=True)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=DT)

    # the adjoint is the continuous gradient: it differs from the finite differences
    # of the discrete solve by the discretization error
    for kw, tol in (
        (dict(method="rk4", step_size=0.05), 1e-5),
        (dict(method="dopri5", rtol=1e-9, atol=1e-10), 1e-5),
    ):
        atol = 1e-8 if kind == "checkpoint" and "step_size" in kw else tol

        def fn(y0_, theta_, kw=kw):
            def g(t, y):
                return torch.stack([theta_[0] * y[1], theta_[1] * y[0] - torch.sin(y[1])])

            return solve(g, y0_, t, sensitivity=kind, adjoint_params=[theta_], **kw).ys

        assert torch.autograd.gradcheck(
            fn, (y0, theta), atol=atol, rtol=1e-5, eps=1e-6, fast_mode=True
        )


@pytest.mark.parametrize("kind", ["adjoint", "checkpoint"])
def test_output_time_gradients_match_finite_differences(kind):
    f = MLPField(seed=8)
    y0 = torch.randn(2, 3, dtype=DT, generator=torch.Generator().manual_seed(9))
    t = torch.tensor([1.0, 0.6, 0.2, -0.5], dtype=DT)  # decreasing: backward in time
    w = torch.randn(4, 2, 3, dtype=DT, generator=torch.Generator().manual_seed(10))
    kw = dict(rtol=1e-12, atol=1e-12)

    def loss(tv, k):
        return (solve(f, y0, tv, sensitivity=k, **kw).ys * w).sum()

    fd = torch.zeros(4, dtype=DT)
    with torch.no_grad():
        for i in range(4):
            e = torch.zeros(4, dtype=DT)
            e[i] = 1e-6
            fd[i] = (loss(t + e, "direct") - loss(t - e, "direct")) / 2e-6
    tv = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(tv, kind), tv)
    assert torch.allclose(g, fd, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["adjoint", "checkpoint"])
def test_per_sample_grids_match_direct_and_finite_differences(kind):
    f = MLPField(seed=11)
    params = list(f.parameters())
    y0 = torch.randn(3, 3, dtype=DT, generator=torch.Generator().manual_seed(12))
    y0.requires_grad_(True)
    tt = torch.tensor(
        [[0.0, 0.3, 0.9, 1.5], [0.2, 0.25, 1.0, 1.1], [1.0, 0.5, 0.1, -0.4]], dtype=DT
    )
    w = torch.randn(3, 4, 3, dtype=DT, generator=torch.Generator().manual_seed(13))
    kw = dict(rtol=1e-10, atol=1e-11)
    ref, _ = grads_of("direct", f, y0, tt, w, params, **kw)
    got, sol = grads_of(kind, f, y0, tt, w, params, **kw)
    for r, g in zip(ref, got):
        assert rel(g, r) < (1e-12 if kind == "checkpoint" else 1e-7)
    # output-time gradients against central differences
    tv = tt.clone().requires_grad_(True)
    (gt,) = torch.autograd.grad(
        (solve(f, y0.detach(), tv, sensitivity=kind, **kw).ys * w).sum(), tv
    )
    with torch.no_grad():
        for b, i in [(0, 0), (2, 1)]:
            e = torch.zeros_like(tt)
            e[b, i] = 1e-6
            lp = (solve(f, y0, tt + e, **kw).ys * w).sum()
            lm = (solve(f, y0, tt - e, **kw).ys * w).sum()
            assert float(gt[b, i]) == pytest.approx(float((lp - lm) / 2e-6), abs=1e-6)


@settings(max_examples=5, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.1, 2.0),
)
def test_adjoint_equals_direct_for_random_linear_systems(seed, scale):
    gen = torch.Generator().manual_seed(seed)
    A = (scale * torch.randn(3, 3, dtype=DT, generator=gen)).requires_grad_(True)
    y0 = torch.randn(3, dtype=DT, generator=gen).requires_grad_(True)
    w = torch.randn(3, 3, dtype=DT, generator=gen)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=DT)
    kw = dict(rtol=1e-9, atol=1e-9)

    def f(t, y):
        return A @ y

    ref, _ = grads_of("direct", f, y0, t, w, [A], **kw)
    got, _ = grads_of("adjoint", f, y0, t, w, [A], **kw)
    for r, g in zip(ref, got):
        assert rel(g, r) < 1e-5


def test_seminorm_off_still_accurate_and_reported():
    f = MLPField(seed=14)
    y0 = torch.randn(4, 3, dtype=DT, generator=torch.Generator().manual_seed(15))
    t = torch.linspace(0, 3, 4, dtype=DT)
    out = {}
    for semi in (True, False):
        f.zero_grad()
        sol = solve(f, y0, t, rtol=1e-7, atol=1e-9, sensitivity="adjoint", adjoint_seminorm=semi)
        sol.ys.pow(2).sum().backward()
        out[semi] = ([p.grad.clone() for p in f.parameters()], sol.stats)
    assert out[False][1]["seminorm"] is False
    for a, b in zip(out[True][0], out[False][0]):
        assert rel(a, b) < 1e-4
    # the full norm can only add error channels: never fewer steps
    assert out[False][1]["backward_steps"] >= out[True][1]["backward_steps"]


def test_odeint_adjoint_matches_odeint_with_module_and_tuple_state():
    f = MLPField(seed=16)

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = f

        def forward(self, t, ys):
            u, v = ys
            return self.f(t, u), -v * u.sum()

    m = Pair()
    u0 = torch.randn(3, dtype=DT)
    v0 = torch.tensor([0.5], dtype=DT)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=DT)
    grads = []
    for fn in (odeint, odeint_adjoint):
        u, v = fn(m, (u0, v0), t)
        grads.append(torch.autograd.grad(u.sum() + v.sum(), list(m.parameters())))
    for a, b in zip(grads[1], grads[0]):
        assert rel(a, b) < 1e-6


@pytest.mark.parametrize("N, C", [(40, 64), (300, 48)])
def test_adjoint_keeps_its_budget_of_states_and_recomputes_each_step_at_most_once(N, C):
    # all N + 1 states when they fit in the budget C (no recomputation: 2 evaluations
    # with graph per step, at s_n and the midpoint, + 1 at the end); else ≤ C
    # checkpoints and each step recomputed once (≤ 4 more evaluations per RK4 step)
    a = torch.tensor(-0.5, dtype=DT, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=DT, requires_grad=True)
    sol = solve(
        lambda t, y: a * y,
        y0,
        torch.tensor([0.0, 1.0], dtype=DT),
        method="rk4",
        step_size=1.0 / N,
        sensitivity="adjoint",
        adjoint_params=[a],
        checkpoints=C,
    )
    (ga,) = torch.autograd.grad(sol.ys[-1].sum(), [a])
    assert float(ga) == pytest.approx(1.0 * math.exp(-0.5), rel=1e-9)
    st = sol.stats
    assert st["backward_steps"] == N
    # 4 products with respect to y per step, ≤ 2 with respect to θ (+ 1 at the end)
    assert 4 * N < st["backward_vjp"] <= 6 * N + 1
    if N <= C:
        assert st["checkpoints"] == N + 1 and st["backward_segments"] == 0
        assert st["backward_nfe"] == 2 * N + 1
    else:
        assert st["checkpoints"] <= C and st["backward_segments"] >= 1
        assert 2 * N + 1 < st["backward_nfe"] <= 6 * N + 1


# --- the adjoint's own norm and callbacks ------------------------------------------------


def _decay_problem():
    A = torch.tensor([[-1.0, 0.5], [-0.5, -0.2]], dtype=DT, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5], dtype=DT)
    t = torch.tensor([0.0, 0.7, 2.0], dtype=DT)
    return A, y0, t


def _exact_gradient(A, y0, t):
    # L = Σ_i sum(y(t_i)) with y(t) = exp(A t) y0: autograd through matrix_exp
    (g,) = torch.autograd.grad(sum(torch.matrix_exp(A * ti) @ y0 for ti in t[1:]).sum(), [A])
    return g


def test_adjoint_norm_sees_the_adjoint_and_parameter_channels_and_keeps_the_gradient():
    A, y0, t = _decay_problem()
    seen = []

    def norm(parts):
        seen.append(tuple(p.shape for p in parts))
        return torch.stack([p.abs().max() for p in parts]).max()

    sol = solve(
        lambda s, y: A @ y,
        y0,
        t,
        method="dopri5",
        rtol=1e-10,
        atol=1e-12,
        sensitivity="adjoint",
        adjoint_params=[A],
        adjoint_norm=norm,
    )
    (g,) = torch.autograd.grad(sol.ys[1:].sum(), [A])
    assert rel(g, _exact_gradient(A, y0, t)) < 1e-7
    assert seen and all(shape == ((2,), (2, 2)) for shape in seen)
    assert sol.stats["seminorm"] is False


def test_adjoint_norm_on_the_parameter_channels_costs_steps_the_seminorm_saves():
    # a norm that only measures the parameter channels must take at least as many
    # backward steps as the seminorm (which ignores them) and agree on the gradient
    A, y0, t = _decay_problem()
    steps, grads = [], []
    for opts in ({}, {"adjoint_norm": lambda parts: parts[1].abs().max() * 1e3}):
        sol = solve(
            lambda s, y: A @ y,
            y0,
            t,
            method="dopri5",
            rtol=1e-6,
            atol=1e-8,
            sensitivity="adjoint",
            adjoint_params=[A],
            **opts,
        )
        grads.append(torch.autograd.grad(sol.ys[1:].sum(), [A])[0])
        steps.append(sol.stats["backward_steps"])
    assert steps[1] > steps[0]
    assert rel(grads[1], _exact_gradient(A, y0, t)) < rel(grads[0], _exact_gradient(A, y0, t))


def test_torchdiffeq_adjoint_norm_gets_t_y_a_and_parameters():
    A, y0, t = _decay_problem()
    lengths = []

    def norm(parts):
        lengths.append(len(parts))
        t_, y_, a_, p_ = parts
        assert float(t_) == 0.0 and not bool(y_.any())
        return torch.maximum(a_.abs().max(), p_.abs().max())

    ys = odeint_adjoint(
        lambda s, y: A @ y,
        y0,
        t,
        method="dopri5",
        adjoint_params=(A,),
        adjoint_options={"norm": norm},
    )
    (g,) = torch.autograd.grad(ys[1:].sum(), [A])
    assert rel(g, _exact_gradient(A, y0, t)) < 1e-6
    assert lengths and set(lengths) == {4}


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_adjoint_callback_walks_back_from_the_last_time_to_the_first(method):
    A, y0, t = _decay_problem()
    calls = []
    sol = solve(
        lambda s, y: A @ y,
        y0,
        t,
        method=method,
        step_size=None if method == "dopri5" else 0.1,
        sensitivity="adjoint",
        adjoint_params=[A],
        adjoint_callback=lambda kind, tt, a, dt: calls.append((kind, float(tt), float(dt))),
    )
    sol.ys[1:].sum().backward()
    kinds = [c[0] for c in calls]
    assert kinds[0] == "step" and kinds.count("step") == kinds.count("accept") + kinds.count(
        "reject"
    )
    assert kinds.count("accept") == sol.stats["backward_steps"]
    starts = [c[1] for c in calls if c[0] == "accept"]
    assert starts[0] == pytest.approx(2.0) and all(
        b <= a + 1e-12 for a, b in itertools.pairwise(starts)
    )
    assert all(c[2] <= 0 for c in calls)
    assert starts[-1] + [c[2] for c in calls if c[0] == "accept"][-1] == pytest.approx(0.0)


def test_adjoint_norm_needs_a_shared_grid_and_no_seminorm():
    A, y0, _ = _decay_problem()
    tb = torch.tensor([[0.0, 1.0], [0.0, 2.0]], dtype=DT)
    with pytest.raises(InputError, match="shared time grid"):
        solve(
            lambda s, y: y @ A.T,
            torch.stack([y0, y0]),
            tb,
            sensitivity="adjoint",
            adjoint_params=[A],
            adjoint_norm=lambda parts: parts[0].abs().max(),
        )
    with pytest.raises(InputError, match="seminorm"):
        solve(
            lambda s, y: A @ y,
            y0,
            tb[0],
            sensitivity="adjoint",
            adjoint_params=[A],
            adjoint_norm=lambda parts: parts[0].abs().max(),
            adjoint_seminorm=True,
        )


def test_jump_t_is_exact_under_every_sensitivity():
    # f = a·y up to t = 0.6 and b·y after: with jump_t the steps land one ulp before
    # the jump and restart one ulp after it in every mode (the tape records both ends,
    # so a replay evaluates f on the same sides): no rejected steps, checkpoint = direct
    a = torch.tensor(-1.0, dtype=DT, requires_grad=True)
    b = torch.tensor(0.5, dtype=DT, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=DT)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=DT)
    exact = torch.autograd.grad(torch.exp(0.6 * a + 0.4 * b) + torch.exp(0.6 * a + 1.4 * b), [a, b])
    got = {}
    for sens in ("direct", "checkpoint", "adjoint"):
        opts = {} if sens == "direct" else {"adjoint_params": [a, b]}
        sol = solve(
            lambda s, y: (a if float(s) <= 0.6 else b) * y,  # left-continuous at the jump
            y0,
            t,
            rtol=1e-9,
            atol=1e-12,
            sensitivity=sens,
            jump_t=torch.tensor([0.6], dtype=DT),
            **opts,
        )
        assert sol.stats["rejected"] == 0
        got[sens] = torch.autograd.grad(sol.ys[1:].sum(), [a, b])
    for x, y in zip(got["checkpoint"], got["direct"]):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    for sens in ("direct", "adjoint"):
        assert max(abs(float(x - y)) for x, y in zip(got[sens], exact)) < 1e-6


def test_checkpoint_on_per_sample_grids_with_implicit_steps_is_direct():
    # Van der Pol μ = 10, two rows of unequal work: checkpoint replays of kvaerno5, bdf
    # and adams steps were 1–5 % off the direct gradient.  The replay's grid gives the
    # rows that rejected or had finished in an iteration of the forward a zero step;
    # the DIRK's zero step returned f1 = 0 (the row's next first stage), the BDF's and
    # Adams' stepped the row by its history's spacing.  Zero steps now stay put.
    mu = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)

    def f(t, y):
        return torch.stack([y[..., 1], mu * ((1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0])], -1)

    y0 = torch.tensor([[2.0, 0.0], [1.5, -1.0]], dtype=torch.float64)
    apart = torch.tensor([[0.0, 1.0], [0.0, 0.6]], dtype=torch.float64)
    same = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)

    def grads(method, mode, t):
        y = y0.clone().requires_grad_(True)
        sol = solve(f, y, t, method=method, rtol=1e-6, atol=1e-8, sensitivity=mode)
        return torch.autograd.grad(sol.ys[:, -1].sum(), [y, mu])

    # (before: 1.3e-2, 2.1e-2 and 4.7e-2 relative off)
    for method, t in (("kvaerno5", apart), ("bdf", apart), ("adams", same)):
        for a, b in zip(grads(method, "checkpoint", t), grads(method, "direct", t)):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
