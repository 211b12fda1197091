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


@functools.cache
def _compiler_works() -> bool:
    if not _compiled.compile_enabled():
        return False
    try:
        torch.compile(lambda x: x + 1, fullgraph=True)(torch.zeros(1))
    except Exception:
        return False
    return True


needs_compiler = pytest.mark.skipif("not _compiler_works()", reason="torch.compile unavailable")


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
