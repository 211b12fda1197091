"""Checkpoint replays across a discontinuity (``jump_t``) repeat the forward's steps.

With ``jump_t`` a step lands one ulp before the jump and the solve restarts one ulp
after it without a step (state and a multistep method's memory kept, f evaluated
anew); the tape records both ends.  A replay used to run one loop over the recorded
ends: a segment ending at the restart merged the landing into its end (the loop's
snap) and stepped across the jump, and a segment holding both ends took a step of
two ulp, which a multistep method's history turned into gradients of 1e37.  The
truth here is the closed form of y' = a·y before t = 0.6 and b·y after.
"""

from __future__ import annotations

import pytest
import torch

from odenet._solve import solve

DT = torch.float64
TAU = 0.6


def _closed_form(t, W):
    t = torch.tensor(t, dtype=DT)
    y0 = torch.tensor(1.3, dtype=DT, requires_grad=True)
    a = torch.tensor(-1.0, dtype=DT, requires_grad=True)
    b = torch.tensor(0.5, dtype=DT, requires_grad=True)

    def R(x):  # ∫ rate from 0 to x
        return torch.where(x <= TAU, a * x, a * TAU + b * (x - TAU))

    loss = sum(w * y0 * torch.exp(R(t[i]) - R(t[0])) for i, w in enumerate(W))
    return torch.stack([g.reshape(()) for g in torch.autograd.grad(loss, [y0, a, b])])


def _solve_grad(method, sens, t, W, **opts):
    y0 = torch.tensor([1.3], dtype=DT, requires_grad=True)
    a = torch.tensor(-1.0, dtype=DT, requires_grad=True)
    b = torch.tensor(0.5, dtype=DT, requires_grad=True)
    if sens != "direct":
        opts["adjoint_params"] = [a, b]
    sol = solve(
        lambda s, y: (a if float(s) <= TAU else b) * y,  # left-continuous at the jump
        y0,
        torch.tensor(t, dtype=DT),
        method=method,
        rtol=1e-10,
        atol=1e-12,
        sensitivity=sens,
        jump_t=torch.tensor([TAU], dtype=DT),
        **opts,
    )
    assert sol.status.eq(0).all()
    loss = (sol.ys[:, 0] * torch.tensor(W, dtype=DT)).sum()
    return torch.stack([g.reshape(()) for g in torch.autograd.grad(loss, [y0, a, b])])


pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

GRIDS = {
    "increasing": ([0.1, 0.5, 0.9, 1.4], [0.0, 0.7, -0.4, 1.3]),
    "decreasing": ([1.4, 0.9, 0.5, 0.1], [0.0, 0.7, -0.4, 1.3]),
    "to-end": ([0.1, 1.4], [0.0, 1.0]),
}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "adams", "bdf"])
def test_checkpoint_across_a_jump_is_direct_and_exact(method, grid):
    t, W = GRIDS[grid]
    exact = _closed_form(t, W)
    direct = _solve_grad(method, "direct", t, W)
    assert float((direct - exact).abs().max()) < 1e-7 * float(exact.abs().max())
    for every in (None, 1, 2, 3, 5, 8):
        got = _solve_grad(method, "checkpoint", t, W, checkpoint_every=every)
        # the replay repeats the forward's steps: the direct gradient to round-off
        torch.testing.assert_close(got, direct, rtol=1e-9, atol=1e-12, msg=f"every={every}")


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "adams", "bdf"])
def test_adjoint_replaying_segments_across_a_jump_is_exact(method, grid):
    t, W = GRIDS[grid]
    exact = _closed_form(t, W)
    scale = float(exact.abs().max())
    for opts in ({}, {"checkpoints": 2}, {"checkpoints": 3}, {"checkpoint_every": 2}):
        got = _solve_grad(method, "adjoint", t, W, **opts)
        assert float((got - exact).abs().max()) < 1e-6 * scale, (opts, got, exact)


@pytest.mark.parametrize("method", ["dopri5", "adams", "bdf"])
def test_checkpoint_across_a_jump_on_per_sample_grids(method):
    # two rows, one increasing and one decreasing: they reach the jump in different
    # iterations (the other row stays put in each restart)
    tau = torch.tensor(TAU, dtype=DT)
    W = torch.tensor([[0.0, 0.7, -0.4, 1.3], [0.0, 0.2, 0.9, -0.6]], dtype=DT)
    TV = torch.tensor([[0.1, 0.5, 0.9, 1.4], [1.3, 0.8, 0.45, 0.05]], dtype=DT)

    def grads(sens=None, **opts):
        y0 = torch.tensor([[1.3], [0.8]], dtype=DT, requires_grad=True)
        a = torch.tensor(-1.0, dtype=DT, requires_grad=True)
        b = torch.tensor(0.5, dtype=DT, requires_grad=True)
        if sens is None:  # the closed form

            def R(x):
                return torch.where(x <= tau, a * x, a * tau + b * (x - tau))

            loss = sum(
                (W[r] * y0[r, 0] * torch.exp(R(TV[r]) - R(TV[r, 0]))).sum() for r in range(2)
            )
        else:
            sol = solve(
                lambda s, y: torch.where(s <= tau, a, b)[:, None] * y,
                y0,
                TV,
                method=method,
                rtol=1e-10,
                atol=1e-12,
                sensitivity=sens,
                jump_t=tau[None],
                adjoint_params=[a, b],
                **opts,
            )
            assert sol.status.eq(0).all()
            loss = (sol.ys[..., 0] * W).sum()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [y0, a, b])])

    exact = grads()
    for every in (None, 2, 3):
        got = grads("checkpoint", checkpoint_every=every)
        assert float((got - exact).abs().max()) < 1e-7 * float(exact.abs().max()), (every, got)
    got = grads("adjoint", checkpoints=2)
    assert float((got - exact).abs().max()) < 1e-6 * float(exact.abs().max()), got


@pytest.mark.parametrize("method", ["bdf", "adams"])
def test_a_multistep_history_restarts_at_a_jump(method):
    # the differences spanned the jump (entries of 1e34 after the two-ulp restart): adams
    # ended 30·rtol off at rtol 1e-8 (2.5e-7), bdf took 208 steps for 182, and a bdf
    # replay from t0 = 0 with the default stride drifted off the forward (2.8e-2 off)
    import math

    t, W = [0.0, 0.6, 0.9, 1.4], [0.0, 0.0, 0.0, 1.0]
    a = torch.tensor(-1.0, dtype=DT)
    b = torch.tensor(0.5, dtype=DT)
    sol = solve(lambda s, y: (a if float(s) <= TAU else b) * y, torch.tensor([1.0], dtype=DT),
                torch.tensor(t, dtype=DT), method=method, rtol=1e-8, atol=1e-10,
                jump_t=torch.tensor([TAU], dtype=DT))  # fmt: skip
    assert abs(float(sol.ys[-1, 0]) - math.exp(-0.6 + 0.4)) < 1e-8 * math.exp(-0.2)
    for sens in ("direct", "checkpoint"):
        got = _solve_grad(method, sens, t, W)
        torch.testing.assert_close(got, _closed_form(t, W), rtol=1e-7, atol=1e-9)


def _switching_gradients(method, rtol, **options):
    """``dL/d(k, c, y0)`` of ``L = y(2)`` for ``y' = −k y`` before t = 1 and
    ``y' = −2k y + c`` after, solved with ``jump_t = [1]``."""
    D = torch.float64
    k = torch.tensor(0.7, dtype=D, requires_grad=True)
    c = torch.tensor(0.3, dtype=D, requires_grad=True)
    y0 = torch.tensor([1.2], dtype=D, requires_grad=True)

    def f(t, y):
        return torch.where(t < 1.0, -k * y, -2 * k * y + c)

    sol = solve(
        f, y0, torch.tensor([0.0, 2.0], dtype=D), method=method, rtol=rtol, atol=rtol / 100,
        jump_t=torch.tensor([1.0], dtype=D), **options,
    )  # fmt: skip
    return torch.autograd.grad(sol.ys[-1].sum(), (k, c, y0))


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "adams"])
def test_the_adjoint_across_a_jump_t_linearizes_each_side_with_its_own_field(method):
    # closed form: y(1) = y0 e^{-k}, then y(2) = (y(1) − c/2k) e^{-2k} + c/2k; the
    # adjoint used to linearize the step landing on the jump with the post-jump
    # field (dopri5 rtol 1e-4: dL/dc 1.1 % off, 190× the direct gradient's error)
    D = torch.float64
    k, c, y0 = (torch.tensor(v, dtype=D, requires_grad=True) for v in (0.7, 0.3, 1.2))
    a = 2 * k
    exact = (y0 * torch.exp(-k) - c / a) * torch.exp(-a) + c / a
    truth = torch.autograd.grad(exact, (k, c, y0))
    for rtol in (1e-4, 1e-6):
        direct = _switching_gradients(method, rtol)
        adjoint = _switching_gradients(method, rtol, sensitivity="adjoint")
        for d, g, x in zip(direct, adjoint, truth):
            assert abs(float(g - x)) < 5 * max(abs(float(d - x)), 1e-3 * rtol), (rtol, g, x)
