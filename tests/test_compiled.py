"""The compiled small-system path (odenet._compiled) computes what the eager stepper
computes: the fused rk step equals ``RungeKutta.step_one``, a block of steps equals
the steps one by one, the orbit loop equals Benettin's loop by hand.  The eager
forms (``compile=False``) are checked fast; the compiled ones (slow: ``torch.compile``
takes tens of seconds on a loaded core) are skipped when the compiler is unavailable."""

import functools

import numpy as np
import pytest
import torch

import odenet
from odenet import _compiled
from odenet._compiled import (
    compile_records,
    compiled_map,
    compiled_orbit,
    compiled_rk_step,
)
from odenet._stepper import RungeKutta
from odenet.stability import flow_map

D = torch.float64


def vdp(t, y):  # user layout [2]
    return torch.stack([y[..., 1], (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0] + 0.1 * t], -1)


def reference_step_one(f, method, y, s, h):
    """The host loop's own step: RungeKutta.step_one on g(s: float, y [1, n])."""
    rk = RungeKutta(odenet.tableau(method), D, D, y.device)
    shape = y.shape[1:]

    def g(t, row):
        return f(torch.scalar_tensor(t, dtype=D), row.reshape(shape)).reshape(1, -1)

    return rk.step_one(g, s, y, h, g(s, y))


@pytest.mark.parametrize("method", ["rk4", "dopri5", "tsit5", "bosh3", "dop853"])
def test_eager_fused_step_equals_step_one_to_round_off(method):
    y = torch.tensor([[1.5, -0.3]], dtype=D)
    s, h = 0.2, 0.05
    want = reference_step_one(vdp, method, y, s, h)
    fn = compiled_rk_step(vdp, method, y, shape=(2,), compile=False)
    f0 = vdp(torch.scalar_tensor(s, dtype=D), y[0]).reshape(1, -1)
    got = fn(torch.scalar_tensor(s, dtype=D), y, torch.scalar_tensor(h, dtype=D), f0)
    for a, b in zip(got, want, strict=True):
        if b is None:
            assert a is None
            continue
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


def test_block_and_tangent_equal_single_steps_and_jacobian_products():
    step = flow_map(lambda t, x: torch.stack([x[1], -torch.sin(x[0])]), 0.1)
    x = torch.tensor([0.4, 0.1], dtype=D)
    blk = compiled_map(step, x, block=3, compile=False)
    torch.testing.assert_close(blk(x), step(step(step(x))), rtol=0, atol=0)
    tan = compiled_map(step, x, block=3, k=2, compile=False)
    Q = torch.eye(2, dtype=D)
    x3, V = tan(x, Q)
    M = torch.eye(2, dtype=D)
    y = x
    for _ in range(3):
        M = torch.autograd.functional.jacobian(step, y) @ M
        y = step(y)
    torch.testing.assert_close(x3, y, rtol=0, atol=1e-15)
    torch.testing.assert_close(V, M, rtol=1e-13, atol=1e-14)


def test_orbit_loop_is_benettin_by_hand():
    a = torch.tensor([[1.1, 0.3], [0.0, 0.6]], dtype=D)

    def step(x):
        return a @ x + 0.01 * torch.sin(x)

    x = torch.tensor([0.5, -0.2], dtype=D)
    run = compiled_orbit(step, x, k=2, compile=False)
    Q0 = torch.eye(2, dtype=D)
    xe, Q, acc = run(torch.tensor(7), x, Q0, torch.zeros(2, dtype=D))
    y, V, want = x, Q0, torch.zeros(2, dtype=D)
    for _ in range(7):
        V = torch.autograd.functional.jacobian(step, y) @ V
        y = step(y)
        V, R = torch.linalg.qr(V)
        want = want + torch.diagonal(R).abs().log()
    torch.testing.assert_close(xe, y, rtol=0, atol=1e-15)
    torch.testing.assert_close(acc, want, rtol=1e-12, atol=1e-13)


def test_disabled_compiler_runs_eager_and_says_why(monkeypatch):
    monkeypatch.setenv("ODENET_COMPILE", "0")
    y = torch.tensor([[1.0, 0.0]], dtype=D)
    f = functools.partial(vdp)  # a fresh callable: no cached entry
    fn = compiled_rk_step(f, "rk4", y)
    assert not fn.compiled and "disabled" in fn.record.reason
    assert fn.record in compile_records()
    f0 = vdp(torch.scalar_tensor(0.0, dtype=D), y).reshape(1, -1)
    z = torch.scalar_tensor(0.0, dtype=D)
    out = fn(z, y, torch.scalar_tensor(0.1, dtype=D), f0)
    torch.testing.assert_close(out[0], reference_step_one(vdp, "rk4", y, 0.0, 0.1)[0])


def test_cache_is_per_callable_shape_and_dtype():
    f = functools.partial(vdp)
    y = torch.zeros(1, 2, dtype=D)
    a = compiled_rk_step(f, "rk4", y, compile=False)
    assert compiled_rk_step(f, "rk4", y, compile=False) is a
    assert compiled_rk_step(f, "rk4", y.float(), compile=False) is not a
    assert compiled_rk_step(f, "dopri5", y, compile=False) is not a
    with pytest.raises(ValueError, match="explicit"):
        compiled_rk_step(f, "radau_iia5", y)


# --- compiled (slow) ------------------------------------------------------------------


needs_compiler = pytest.mark.skipif(
    "not _compiled.compiler_works()", reason="torch.compile unavailable"
)


@pytest.mark.slow
@needs_compiler
def test_compiled_fused_step_equals_eager_to_round_off():
    y = torch.tensor([[1.5, -0.3]], dtype=D)
    fn = compiled_rk_step(vdp, "dopri5", y, shape=(2,))
    s, h = torch.scalar_tensor(0.2, dtype=D), torch.scalar_tensor(0.05, dtype=D)
    f0 = vdp(s, y[0]).reshape(1, -1)
    got = fn(s, y, h, f0)
    assert fn.compiled, fn.record.reason
    assert fn.compile_time > 0
    want = reference_step_one(vdp, "dopri5", y, 0.2, 0.05)
    for a, b in zip(got, want, strict=True):
        if b is not None:
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-14, atol=1e-15)
    # a new step size reuses the compiled code (h is a tensor, not a constant)
    fn(s, y, torch.scalar_tensor(0.01, dtype=D), f0)
    assert sum(r is fn.record for r in compile_records()) == 1


def test_backward_direction_steps_the_internal_field():
    # decreasing output times: the loop runs s = -t on -f(-s, y)
    y = torch.tensor([[0.7, 0.2]], dtype=D)
    s, h = 0.3, 0.1
    rk = RungeKutta(odenet.tableau("dopri5"), D, D, y.device)

    def g(t, row):
        return -vdp(-torch.scalar_tensor(t, dtype=D), row.reshape(2)).reshape(1, -1)

    want = rk.step_one(g, s, y, h, g(s, y))
    fn = compiled_rk_step(vdp, "dopri5", y, shape=(2,), direction=-1, compile=False)
    got = fn(torch.scalar_tensor(s, dtype=D), y, torch.scalar_tensor(h, dtype=D), g(s, y))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


# --- solve(compile=True): the fused step in the one loop ------------------------------
#
# The wiring (which step the host backend takes, blocks of grid steps, counts, stats,
# fallbacks) is checked with the compiler replaced by the identity and while_loop by
# its Python loop: the same functions run, fast.  One slow test compiles for real.

import math  # noqa: E402
import warnings  # noqa: E402
import weakref  # noqa: E402

from odenet._compiled import CompileFallbackWarning  # noqa: E402


@pytest.fixture
def fake_compiler(monkeypatch):
    """``torch.compile`` -> identity, ``while_loop`` -> Python loop, an empty cache."""
    compiled = []

    def identity(fn, options=None):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(_compiled, "_compile", identity)
    monkeypatch.setattr(_compiled, "_while_loop", lambda: None)
    monkeypatch.setattr(_compiled, "_CACHE", weakref.WeakKeyDictionary())
    monkeypatch.setattr(_compiled, "_STRONG_CACHE", {})
    monkeypatch.setattr(_compiled, "_RECORDS", [])
    monkeypatch.delenv("ODENET_COMPILE", raising=False)
    return compiled


def lin(t, y):  # a 3-state linear system with a time-dependent forcing
    a = torch.tensor([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.0, 0.0, -1.0]], dtype=y.dtype)
    return a @ y + torch.stack([torch.zeros_like(t), torch.sin(t), torch.zeros_like(t)])


def both(f, y0, t, **kw):
    eager = odenet.solve(f, y0, t, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        comp = odenet.solve(f, y0, t, compile=True, **kw)
    return eager, comp


TIMES = {
    "forward": torch.tensor([0.0, 0.37, 1.0, 2.5, 4.0], dtype=D),
    "backward": torch.tensor([1.0, 0.5, -0.73, -3.0], dtype=D),
}


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dop853"])
def test_compiled_adaptive_solve_equals_eager(fake_compiler, method, direction):
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    eager, comp = both(lin, y0, TIMES[direction], method=method, rtol=1e-7, atol=1e-9)
    assert comp.stats["compiled"] and comp.stats["compile_time"] >= 0
    # the same steps, accepted and rejected, and the same field evaluations
    for k in ("steps", "accepted", "rejected", "nfe"):
        assert comp.stats[k] == eager.stats[k], k
    torch.testing.assert_close(comp.ys, eager.ys, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint", "dopri5"])
def test_compiled_fixed_solve_equals_eager_with_blocks(fake_compiler, method, direction):
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    t = TIMES[direction]
    eager, comp = both(lin, y0, t, method=method, step_size=0.01)
    assert comp.stats["compiled"]
    assert comp.stats["steps"] == comp.stats["accepted"] == eager.stats["steps"]
    # blocks of grid steps ran between the outputs (the last step before each
    # output is a single fused step: its interpolant writes the output)
    blocks = [r for r in compile_records() if r.what.startswith("fixed-grid block")]
    assert blocks and blocks[0].calls == len(t) - 1
    torch.testing.assert_close(comp.ys, eager.ys, rtol=1e-12, atol=1e-13)
    # every stage of every step, plus f(t0): the fused step always forms f(t1, y1)
    S = odenet.tableau(method).stages
    per_step = S - 1 if odenet.tableau(method).is_stiffly_accurate else S
    assert comp.stats["nfe"] == 1 + per_step * comp.stats["steps"]


def test_compiled_fixed_nfe_is_the_number_of_field_calls(fake_compiler):
    """Audit H C5: rk4, step_size 0.07 on [0, 3] with 7 outputs reported nfe 173
    compiled against 172 eager.  Both are the true counts (a counting f, the compiled
    functions run as Python): the fused step forms f(t1, y1) on the last node too,
    which the eager loop never evaluates (43 steps: 1 + 4·43 against 1 + 4·43 − 1)."""
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return -y + torch.sin(3 * t)

    y0 = torch.ones(1, dtype=D)
    t = torch.linspace(0, 3, 7, dtype=D)
    for compile in (False, True):
        calls[0] = 0
        sol = odenet.solve(f, y0, t, method="rk4", step_size=0.07, compile=compile)
        assert sol.stats["steps"] == 43
        assert sol.stats["nfe"] == calls[0] == 172 + compile


def test_compiled_rk4_matches_the_exact_flow(fake_compiler):
    # an independent truth: y' = A y, y(t) = expm(A t) y0 (rk4 error ~ h^4)
    a = torch.tensor([[0.0, 1.0], [-4.0, -0.2]], dtype=D)
    y0 = torch.tensor([1.0, 0.0], dtype=D)
    t = torch.linspace(0, 3, 4, dtype=D)
    sol = odenet.solve(lambda t, y: a @ y, y0, t, method="rk4", step_size=1e-3, compile=True)
    assert sol.stats["compiled"]
    exact = torch.stack([torch.linalg.matrix_exp(a * ti) @ y0 for ti in t])
    torch.testing.assert_close(sol.ys, exact, rtol=0, atol=1e-10)


def test_blocks_keep_the_step_budget_and_report_blow_ups(fake_compiler):
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    t = torch.tensor([0.0, 4.0], dtype=D)
    kw = dict(method="rk4", step_size=0.01, max_steps=150, throw=False)
    eager, comp = both(lin, y0, t, **kw)
    assert int(eager.status[0]) == int(comp.status[0]) != 0  # MAX_STEPS
    assert comp.stats["steps"] == eager.stats["steps"] == 150
    with pytest.raises(odenet.MaxStepsError):
        odenet.solve(lin, y0, t, compile=True, method="rk4", step_size=0.01, max_steps=150)

    def blowup(t, y):  # y' = y², y(0) = 1: infinite at t = 1
        return y * y

    one = torch.ones(1, dtype=D)
    kw = dict(method="rk4", step_size=0.01, throw=False)
    eager, comp = both(blowup, one, torch.tensor([0.0, 3.0], dtype=D), **kw)
    assert int(eager.status[0]) == int(comp.status[0]) == odenet.Status.NON_FINITE.value
    with pytest.raises(odenet.NonFiniteError):
        odenet.solve(blowup, one, torch.tensor([0.0, 3.0], dtype=D), step_size=0.01, compile=True)


def test_gradients_fall_back_to_the_eager_graph(fake_compiler):
    # the fused step keeps no autograd graph: with a gradient needed the eager step runs
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D, requires_grad=True)
    t = TIMES["forward"]
    with pytest.warns(CompileFallbackWarning, match="gradients"):
        comp = odenet.solve(lin, y0, t, method="dopri5", compile=True)
    assert not comp.stats["compiled"] and "gradients" in comp.stats["compile_fallback"]
    (g_comp,) = torch.autograd.grad(comp.ys[-1].sum(), y0)
    eager = odenet.solve(lin, y0, t, method="dopri5")
    (g_eager,) = torch.autograd.grad(eager.ys[-1].sum(), y0)
    torch.testing.assert_close(g_comp, g_eager, rtol=0, atol=0)
    # and against a closed form: the solution is linear in y0, so d(sum y(T))/dy0 is
    # the column sums of the flow map, obtained by solving from unit vectors
    cols = [
        odenet.solve(lin, e, t, method="dopri5").ys[-1] - odenet.solve(lin, 0 * e, t).ys[-1]
        for e in torch.eye(3, dtype=D)
    ]
    torch.testing.assert_close(g_comp, torch.stack(cols).sum(1), rtol=1e-5, atol=1e-6)


def test_unsupported_solves_run_eagerly_and_say_why(fake_compiler, monkeypatch):
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    t = TIMES["forward"]
    # a callback puts the loop on its masked backend (implicit methods: see below)
    kw = dict(method="dopri5", callback=lambda *args: None)
    want = odenet.solve(lin, y0, t, **kw)
    with pytest.warns(CompileFallbackWarning, match="masked backend"):
        sol = odenet.solve(lin, y0, t, compile=True, **kw)
    assert not sol.stats["compiled"] and "callbacks" in sol.stats["compile_fallback"]
    torch.testing.assert_close(sol.ys, want.ys, rtol=0, atol=0)
    with pytest.warns(CompileFallbackWarning, match="sensitivity='direct'"):
        odenet.solve(lin, y0, t, sensitivity="adjoint", compile=True)
    with pytest.warns(CompileFallbackWarning, match="`norm`"):
        odenet.solve(lin, y0, t, norm=lambda e: e.abs().max(), compile=True)
    monkeypatch.setenv("ODENET_COMPILE", "0")
    with pytest.warns(CompileFallbackWarning, match="disabled"):
        sol = odenet.solve(lin, y0, t, compile=True)
    assert sol.stats["compile_time"] == 0.0
    with pytest.raises(odenet.InputError, match="`compile` must be True or False"):
        odenet.solve(lin, y0, t, compile="yes")


def test_a_failed_compile_runs_eagerly_with_the_same_result(fake_compiler, monkeypatch):
    def broken(fn, options=None):
        def run(*args):
            raise RuntimeError("graph break: data-dependent branch")

        return run

    monkeypatch.setattr(_compiled, "_compile", broken)
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    t = TIMES["backward"]
    for kw in (dict(method="dopri5"), dict(method="rk4", step_size=0.01)):
        want = odenet.solve(lin, y0, t, **kw)
        with pytest.warns(CompileFallbackWarning, match="graph break"):
            sol = odenet.solve(lin, y0, t, compile=True, **kw)
        assert not sol.stats["compiled"] and "graph break" in sol.stats["compile_fallback"]
        torch.testing.assert_close(sol.ys, want.ys, rtol=0, atol=0)


# --- adaptive blocks: the loop's quiet steps (no output, no failure) in one call ------


def adaptive_blocks():
    return [r for r in compile_records() if r.what.startswith("adaptive block")]


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="dopri5", rtol=1e-7, atol=1e-9),
        dict(method="dop853", rtol=1e-9, atol=1e-11),  # two error estimates
        dict(method="bosh3", controller="PI", max_step=0.05),
        dict(method="tsit5", controller="predictive", first_step=1e-4, min_step=1e-9),
    ],
    ids=["dopri5", "dop853", "bosh3-PI-max_step", "tsit5-predictive"],
)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_adaptive_blocks_take_the_eager_steps(fake_compiler, kw, direction):
    # sparse outputs, dense ones (the block keeps the steps that hold outputs for the
    # loop to interpolate) and very dense ones (every step holds some: the block's
    # buffer fills and it stops)
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    t = TIMES[direction]
    lin_t = functools.partial(torch.linspace, float(t[0]), float(t[-1]), dtype=D)
    for times in (t, lin_t(41), lin_t(1001)):
        eager, comp = both(lin, y0, times, **kw)
        assert comp.stats["compiled"] and "compile_fallback" not in comp.stats
        for k in ("steps", "accepted", "rejected", "nfe"):
            assert comp.stats[k] == eager.stats[k], k
        torch.testing.assert_close(comp.ys, eager.ys, rtol=1e-12, atol=1e-13)
        if len(times) == len(t):
            # one block per loop iteration that follows a step the loop took itself
            # (an output, or the start): far fewer calls than steps on the sparse grid
            (blk,) = adaptive_blocks()
            assert 0 < blk.calls <= 2 * len(t) < comp.stats["steps"]


def test_adaptive_blocks_match_the_exact_flow(fake_compiler):
    # an independent truth: y' = A y, y(t) = expm(A t) y0, errors within the tolerance
    a = torch.tensor([[0.0, 1.0], [-4.0, -0.2]], dtype=D)
    y0 = torch.tensor([1.0, 0.0], dtype=D)
    t = torch.linspace(0, 10, 6, dtype=D)
    sol = odenet.solve(lambda t, y: a @ y, y0, t, rtol=1e-8, atol=1e-10, compile=True)
    assert sol.stats["compiled"] and adaptive_blocks()[0].calls >= 1
    exact = torch.stack([torch.linalg.matrix_exp(a * ti) @ y0 for ti in t])
    torch.testing.assert_close(sol.ys, exact, rtol=0, atol=1e-7)


def test_adaptive_blocks_keep_the_step_budget_and_report_failures(fake_compiler):
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    t = torch.tensor([0.0, 40.0], dtype=D)
    kw = dict(rtol=1e-10, atol=1e-12, max_steps=57, throw=False)
    eager, comp = both(lin, y0, t, **kw)
    assert int(eager.status[0]) == int(comp.status[0]) == odenet.Status.MAX_STEPS.value
    assert comp.stats["steps"] == eager.stats["steps"] == 57
    assert comp.stats["nfe"] == eager.stats["nfe"]
    with pytest.raises(odenet.MaxStepsError):
        odenet.solve(lin, y0, t, compile=True, rtol=1e-10, atol=1e-12, max_steps=57)

    def blowup(t, y):  # y' = y², y(0) = 1: infinite at t = 1, the steps shrink to nothing
        return y * y

    one = torch.ones(1, dtype=D)
    t = torch.tensor([0.0, 3.0], dtype=D)
    eager, comp = both(blowup, one, t, throw=False)
    assert int(eager.status[0]) == int(comp.status[0]) != odenet.Status.SUCCESS.value
    for k in ("steps", "accepted", "rejected", "nfe"):
        assert comp.stats[k] == eager.stats[k], k
    torch.testing.assert_close(comp.ys, eager.ys, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize(
    "block, kw",
    [
        # e.g. inductor's C++ wrapper rejects tensor constants made inside a while_loop body
        ("host_block", dict(method="rk4", step_size=0.01)),
        ("host_adaptive_block", dict(method="dopri5")),
    ],
)
def test_a_block_that_fails_to_compile_leaves_single_fused_steps(
    fake_compiler, monkeypatch, block, kw
):
    def blocks_broken(fn, options=None):
        if fn.__qualname__.startswith(block + "."):

            def run(*args):
                raise RuntimeError("CppCompileError: C++ compile error")

            return run
        return fn

    monkeypatch.setattr(_compiled, "_compile", blocks_broken)
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    eager, comp = both(lin, y0, TIMES["forward"], **kw)
    assert comp.stats["compiled"]
    kind = "fixed-grid" if "step_size" in kw else "adaptive"
    assert f"{kind} blocks ran as single fused steps" in comp.stats["compile_fallback"]
    # (nfe: a fused fixed step also forms f at the last node, the eager one does not)
    for k in ("steps", "accepted", "rejected"):
        assert comp.stats[k] == eager.stats[k], k
    torch.testing.assert_close(comp.ys, eager.ys, rtol=1e-12, atol=1e-13)


def test_an_unhashable_controller_runs_single_fused_steps_and_says_why(fake_compiler):
    class Mine(odenet.PIDController):  # a user's controller that cannot key a cache
        __hash__ = None

    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    eager, comp = both(lin, y0, TIMES["forward"], controller=Mine())
    assert comp.stats["compiled"] and "not hashable" in comp.stats["compile_fallback"]
    assert not adaptive_blocks()
    for k in ("steps", "accepted", "rejected", "nfe"):
        assert comp.stats[k] == eager.stats[k], k
    torch.testing.assert_close(comp.ys, eager.ys, rtol=1e-12, atol=1e-13)


@pytest.mark.slow
@needs_compiler
def test_really_compiled_adaptive_blocks_take_the_eager_steps():
    f = functools.partial(vdp)  # its own cache entry
    y0 = torch.tensor([2.0, 0.0], dtype=D)
    t = torch.linspace(0.0, 6.0, 13, dtype=D)  # outputs inside the blocks' steps
    # bosh3: 4 stages compile faster than dopri5's 7 and run the same code
    kw = dict(method="bosh3", rtol=1e-6, atol=1e-8)
    earlier = {id(r) for r in adaptive_blocks()}  # other tests' blocks in this process
    eager = odenet.solve(f, y0, t, **kw)
    comp = odenet.solve(f, y0, t, compile=True, **kw)
    assert comp.stats["compiled"] and "compile_fallback" not in comp.stats, comp.stats
    (blk,) = [r for r in adaptive_blocks() if r.calls and id(r) not in earlier]
    assert blk.compiled and blk.calls < comp.stats["steps"]
    for k in ("steps", "accepted", "rejected", "nfe"):
        assert comp.stats[k] == eager.stats[k], k
    torch.testing.assert_close(comp.ys, eager.ys, rtol=1e-12, atol=1e-13)
    # another number of output times, another span: no new graph (the shapes the
    # block sees do not depend on them)
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    t2 = torch.linspace(0.0, 9.0, 301, dtype=D)
    again = odenet.solve(f, y0, t2, compile=True, **kw)
    assert counters["stats"]["unique_graphs"] == graphs
    assert again.stats["compile_time"] == 0.0
    eager2 = odenet.solve(f, y0, t2, **kw)
    assert again.stats["steps"] == eager2.stats["steps"]
    torch.testing.assert_close(again.ys, eager2.ys, rtol=1e-12, atol=1e-13)


@pytest.mark.slow
@needs_compiler
def test_really_compiled_solve_equals_eager_and_is_cached():
    f = functools.partial(vdp)  # its own cache entry
    y0 = torch.tensor([1.0, -0.5], dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    eager = odenet.solve(f, y0, t, method="rk4", step_size=0.01)
    first = odenet.solve(f, y0, t, method="rk4", step_size=0.01, compile=True)
    # the fused step and the fixed-grid blocks both compiled
    assert first.stats["compiled"] and "compile_fallback" not in first.stats, first.stats
    assert first.stats["compile_time"] > 0
    torch.testing.assert_close(first.ys, eager.ys, rtol=1e-12, atol=1e-13)
    again = odenet.solve(f, y0, t, method="rk4", step_size=0.01, compile=True)
    assert again.stats["compile_time"] == 0.0  # cached per (field, method, shape, dtype)
    torch.testing.assert_close(again.ys, first.ys, rtol=0, atol=0)
    assert math.isfinite(first.stats["compile_time"])


# --- implicit methods: the Newton iterations fused (odenet._compiled.FusedNewton) ------


def stiff(t, y):  # linear, eigenvalues -1000 and -1 ± 2i, with a forcing in time
    a = torch.tensor([[-1000.0, 0.0, 1.0], [0.0, -1.0, 2.0], [0.0, -2.0, -1.0]], dtype=y.dtype)
    force = torch.stack([torch.zeros_like(t), torch.cos(t), torch.zeros_like(t)], -1)
    return y @ a.T + force  # (per-sample: y [B, 3], t [B])


def vdp_stiff(t, y):  # Van der Pol, μ = 100
    return torch.stack([y[1], 100.0 * (1 - y[0] ** 2) * y[1] - y[0]])


IMPLICIT_COUNTS = (
    "steps", "accepted", "rejected", "nfe", "njev", "nlu", "linear_solves", "newton_iterations"
)  # fmt: skip


def iteration_records():
    return [r for r in compile_records() if "iteration" in r.what]


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(method="radau_iia5", rtol=1e-6, atol=1e-9),
        dict(method="radau_iia3", rtol=1e-4, atol=1e-7),  # one complex LU, no real one
        dict(method="radau_iia9", rtol=1e-8, atol=1e-11),  # two complex LUs
        dict(method="kvaerno5", rtol=1e-6, atol=1e-9),
        dict(method="trbdf2", rtol=1e-3, atol=1e-6),
        dict(method="backward_euler", step_size=0.05),
    ],
    ids=["radau_iia5", "radau_iia3", "radau_iia9", "kvaerno5", "trbdf2", "backward_euler"],
)
def test_compiled_newton_iterations_take_the_eager_steps(fake_compiler, kw, direction):
    # Van der Pol (nonlinear: Jacobian refreshes, rejected steps, slow iterations) and
    # a stiff forced linear system forward; backward (s = -t, the field -f(-s, y)) a
    # system that is well posed that way; every iteration goes through the fused function
    t = TIMES[direction]
    y3 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    problems = [(vdp_stiff, torch.tensor([2.0, 0.0], dtype=D)), (stiff, y3)]
    for f, y0 in problems if direction == "forward" else [(lin, y3)]:
        eager, comp = both(f, y0, t, **kw)
        assert comp.stats["compiled"] and "compile_fallback" not in comp.stats, comp.stats
        for k in IMPLICIT_COUNTS:
            assert comp.stats[k] == eager.stats[k], k
        torch.testing.assert_close(comp.ys, eager.ys, rtol=1e-12, atol=1e-13)
        (rec,) = [r for r in iteration_records() if r.what.endswith(f"shape={tuple(y0.shape)} {D}")]
        assert rec.calls == comp.stats["newton_iterations"] > 0
        fake_compiler.clear()
        _compiled._RECORDS.clear()


def test_compiled_newton_iterations_match_the_exact_flow(fake_compiler):
    # an independent truth: y' = A y with A's eigenvalues -1000, -1 ± 2i, y = expm(A t) y0
    a = torch.tensor([[-1000.0, 0.0, 1.0], [0.0, -1.0, 2.0], [0.0, -2.0, -1.0]], dtype=D)
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    t = torch.linspace(0, 4, 5, dtype=D)
    exact = torch.stack([torch.linalg.matrix_exp(a * ti) @ y0 for ti in t])
    for method in ("radau_iia5", "kvaerno5"):
        sol = odenet.solve(lambda t, y: a @ y, y0, t, method=method, rtol=1e-6, atol=1e-9,
                           compile=True)  # fmt: skip
        assert sol.stats["compiled"] and iteration_records()
        torch.testing.assert_close(sol.ys, exact, rtol=0, atol=1e-5)


def test_implicit_fallbacks_run_eagerly_and_say_why(fake_compiler):
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    t = TIMES["forward"]
    kw = dict(method="radau_iia5", rtol=1e-6, atol=1e-9)
    cases = []
    # gradients through the solve: the eager iterations and the attached IFT step
    y0g = y0.clone().requires_grad_(True)
    cases.append(("gradients", stiff, y0g, t, kw))
    # a batch with per-sample times
    yb = torch.stack([y0, 2 * y0])
    cases.append(("per-sample", stiff, yb, torch.stack([t, 0.5 * t]), kw))
    # the sparse SuperLU path (n >= 200 with a pattern): a diffusion chain
    n = 200
    lap = torch.diag(torch.full((n,), -2.0, dtype=D)) + torch.diag(
        torch.ones(n - 1, dtype=D), 1
    ) + torch.diag(torch.ones(n - 1, dtype=D), -1)  # fmt: skip
    kws = dict(kw, jac_sparsity=lap != 0)
    cases.append(("sparse LU", lambda t, y: lap @ y, torch.linspace(0, 1, n, dtype=D),
                  torch.tensor([0.0, 0.1], dtype=D), kws))  # fmt: skip
    # a fully implicit tableau other than Radau IIA (the generic stage solver)
    cases.append(("Radau IIA and diagonally implicit", stiff, y0, t,
                  dict(method="gauss_legendre4", step_size=0.1)))  # fmt: skip
    for why, f, y, times, kw_ in cases:
        want = odenet.solve(f, y, times, **kw_)
        with pytest.warns(CompileFallbackWarning, match=why):
            sol = odenet.solve(f, y, times, compile=True, **kw_)
        assert not sol.stats["compiled"] and why in sol.stats["compile_fallback"], why
        for k in IMPLICIT_COUNTS:  # (per-sample: tensors of counts)
            assert torch.equal(torch.as_tensor(sol.stats[k]), torch.as_tensor(want.stats[k]))
        torch.testing.assert_close(sol.ys, want.ys, rtol=0, atol=0)
        if why == "gradients":  # the gradient is the eager one
            (g1,) = torch.autograd.grad(sol.ys[-1].sum(), y)
            (g2,) = torch.autograd.grad(want.ys[-1].sum(), y)
            torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    assert not [r for r in iteration_records() if r.calls]


def test_a_newton_iteration_that_fails_to_compile_runs_eagerly(fake_compiler, monkeypatch):
    def broken(fn, options=None):
        def run(*args):
            raise RuntimeError("graph break: complex lu_solve")

        return run

    monkeypatch.setattr(_compiled, "_compile", broken)
    y0 = torch.tensor([2.0, 0.0], dtype=D)
    for method in ("radau_iia5", "kvaerno5"):
        want = odenet.solve(vdp_stiff, y0, TIMES["forward"], method=method)
        with pytest.warns(CompileFallbackWarning, match="complex lu_solve"):
            sol = odenet.solve(vdp_stiff, y0, TIMES["forward"], method=method, compile=True)
        assert not sol.stats["compiled"] and "complex lu_solve" in sol.stats["compile_fallback"]
        for k in IMPLICIT_COUNTS:
            assert sol.stats[k] == want.stats[k], (method, k)
        torch.testing.assert_close(sol.ys, want.ys, rtol=0, atol=0)


@pytest.mark.slow
@needs_compiler
def test_really_compiled_newton_iterations_take_the_eager_steps():
    # kvaerno5 (a real LU; ~10 s of compile).  radau_iia5's complex iteration compiles
    # too (inductor runs its complex operations as eager kernels), in about a minute.
    f = functools.partial(vdp_stiff)  # its own cache entry
    y0 = torch.tensor([2.0, 0.0], dtype=D)
    kw = dict(method="kvaerno5", rtol=1e-6, atol=1e-9)
    eager = odenet.solve(f, y0, TIMES["forward"], **kw)
    comp = odenet.solve(f, y0, TIMES["forward"], compile=True, **kw)
    assert comp.stats["compiled"] and "compile_fallback" not in comp.stats, comp.stats
    assert comp.stats["compile_time"] > 0
    (rec,) = [r for r in iteration_records() if r.calls and r.compiled]
    assert rec.calls == comp.stats["newton_iterations"]
    for k in IMPLICIT_COUNTS:
        assert comp.stats[k] == eager.stats[k], k
    torch.testing.assert_close(comp.ys, eager.ys, rtol=1e-12, atol=1e-13)
    again = odenet.solve(f, y0, TIMES["forward"], compile=True, **kw)
    assert again.stats["compile_time"] == 0.0


def test_two_tableaus_with_one_name_compile_each_their_own_step():
    # the compiled-step cache was keyed by the tableau's name: the second "mine"
    # (midpoint) ran the first one's (Euler) compiled step, 0.9^10 for 0.905^10
    from odenet.tableaus import ButcherTableau

    euler = ButcherTableau(name="mine", A=[[0]], b=[1], c=[0], order=1)
    midpoint = ButcherTableau(name="mine", A=[[0, 0], ["1/2", 0]], b=[0, 1], c=[0, "1/2"],
                              order=2)  # fmt: skip
    y0, t = torch.ones(1, dtype=D), torch.tensor([0.0, 1.0], dtype=D)

    def decay(t, y):  # one field: the cache lives on it
        return -y

    for tab, exact in ((euler, 0.9**10), (midpoint, 0.905**10)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = odenet.solve(decay, y0, t, method=tab, step_size=0.1, compile=True)
        assert sol.ys[-1].item() == pytest.approx(exact, rel=1e-12)
