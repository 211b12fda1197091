"""The CUDA path gives what the CPU path gives.

Every method, per-sample grids, every sensitivity mode, events, the torchdiffeq
interface and the networks run on the GPU and are compared with the same call on the
CPU (an independent run of the same arithmetic, on other kernels). Skipped where no
GPU is present, as in CI; ``ODENET_TEST_DEVICE=cpu`` runs the same comparisons CPU
against CPU, which checks the tests themselves.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

import odenet
from odenet._registry import method, method_names

DEVICE = os.environ.get("ODENET_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no CUDA device (set ODENET_TEST_DEVICE)")

# y' = A y + sin(y) mixing a fast and a slow mode: nonlinear, mildly stiff (λ ≈ -20).
A = torch.tensor([[-20.0, 1.0, 0.0], [0.5, -1.0, 2.0], [0.0, -2.0, -0.5]], dtype=torch.float64)


def field(t, y):
    a = A.to(y)
    return y @ a.T + torch.sin(y) * torch.cos(t)[..., None]  # t: [] or [B] (per-sample grids)


def on(device, *xs):
    return [x.to(device) for x in xs]


def _solve(name, device, dtype=torch.float64, **kw):
    y0, t = on(
        device, torch.tensor([1.0, -0.5, 2.0], dtype=dtype), torch.linspace(0, 2, 7, dtype=dtype)
    )
    m = method(name)
    if not m.is_adaptive:
        kw.setdefault("step_size", 1e-2)
    return odenet.solve(field, y0, t, method=name, **kw)


@pytest.mark.parametrize("name", method_names())
def test_every_method_matches_cpu(name):
    gpu = _solve(name, DEVICE, rtol=1e-5, atol=1e-7)
    cpu = _solve(name, "cpu", rtol=1e-5, atol=1e-7)
    assert gpu.ys.device.type == torch.device(DEVICE).type and gpu.ys.dtype == torch.float64
    assert gpu.status == cpu.status
    # fixed grids do the same arithmetic: only round-off apart; adaptive runs may take
    # other steps after a round-off-sized difference in an error norm: tolerance apart
    tol = 1e-9 if not method(name).is_adaptive else 1e-4
    torch.testing.assert_close(gpu.ys.cpu(), cpu.ys, rtol=tol, atol=tol)
    assert abs(gpu.stats["nfe"] - cpu.stats["nfe"]) <= max(0.1 * cpu.stats["nfe"], 4)


@pytest.mark.parametrize("name", ["dopri5", "tsit5", "radau_iia5", "kvaerno5", "bdf", "adams"])
def test_float32_matches_float64(name):
    gpu = _solve(name, DEVICE, dtype=torch.float32, rtol=1e-4, atol=1e-6)
    ref = _solve(name, "cpu", rtol=1e-10, atol=1e-12)
    assert gpu.ys.dtype == torch.float32
    torch.testing.assert_close(gpu.ys.double().cpu(), ref.ys, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("name", ["dopri5", "radau_iia5", "bdf"])
def test_per_sample_grids(name):
    """Batch rows with their own time grids (the masked loop, all control on device)."""
    g = torch.Generator().manual_seed(0)
    B = 16
    y0 = torch.randn(B, 3, generator=g, dtype=torch.float64)
    t = torch.sort(torch.rand(B, 6, generator=g, dtype=torch.float64) * 3, dim=1).values
    gpu = odenet.solve(field, *on(DEVICE, y0, t), method=name, rtol=1e-7, atol=1e-9)
    cpu = odenet.solve(field, y0, t, method=name, rtol=1e-7, atol=1e-9)
    assert gpu.ys.shape == (B, 6, 3)
    torch.testing.assert_close(gpu.ys.cpu(), cpu.ys, rtol=1e-5, atol=1e-5)


class Damped(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([1.5, 0.3], dtype=torch.float64))

    def forward(self, t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, -self.k[0] * x - self.k[1] * v + 0.1 * torch.sin(x)], -1)


@pytest.mark.parametrize("sensitivity", ["direct", "adjoint", "checkpoint"])
@pytest.mark.parametrize("name", ["dopri5", "radau_iia5", "bdf"])
def test_gradients_match_cpu(sensitivity, name):
    def grad(device):
        f = Damped().to(device)
        y0, t = on(
            device,
            torch.tensor([1.0, 0.0], dtype=torch.float64),
            torch.linspace(0, 3, 5, dtype=torch.float64),
        )
        y0.requires_grad_(True)
        sol = odenet.solve(f, y0, t, method=name, rtol=1e-8, atol=1e-10, sensitivity=sensitivity)
        (sol.ys**2).sum().backward()
        return f.k.grad.cpu(), y0.grad.cpu()

    for g, c in zip(grad(DEVICE), grad("cpu")):
        torch.testing.assert_close(g, c, rtol=1e-5, atol=1e-7)


def test_event_time_on_device():
    """A ball dropped from 1 m hits the floor at sqrt(2/g)."""
    g = 9.81

    def ball(t, y):
        return torch.stack([y[1], -g * torch.ones_like(y[1])])

    hit = odenet.Event(lambda t, y: y[0], direction=-1, terminal=True)
    y0, t = on(
        DEVICE,
        torch.tensor([1.0, 0.0], dtype=torch.float64),
        torch.tensor([0.0, 2.0], dtype=torch.float64),
    )
    sol = odenet.solve(ball, y0, t, events=[hit], rtol=1e-9, atol=1e-11)
    assert sol.events.t.numel() == 1
    assert abs(float(sol.events.t.reshape(-1)[0]) - math.sqrt(2 / g)) < 1e-8
    assert sol.ys.device.type == torch.device(DEVICE).type


@pytest.mark.parametrize("adjoint", [False, True])
def test_odeint_matches_torchdiffeq(adjoint):
    torchdiffeq = pytest.importorskip("torchdiffeq")
    f = Damped().to(DEVICE)
    y0, t = on(
        DEVICE,
        torch.tensor([1.0, 0.0], dtype=torch.float64),
        torch.linspace(0, 3, 5, dtype=torch.float64),
    )
    ours = odenet.odeint_adjoint if adjoint else odenet.odeint
    theirs = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    kw = {"adjoint_params": tuple(f.parameters())} if adjoint else {}
    a = ours(f, y0, t, rtol=1e-9, atol=1e-11, **kw)
    b = theirs(f, y0, t, rtol=1e-9, atol=1e-11, **kw)
    torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    ga = torch.autograd.grad(a.sum(), f.k)[0]
    gb = torch.autograd.grad(b.sum(), f.k)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-8)


def _same_module(build, device, *inputs):
    torch.manual_seed(0)
    model = build().double()
    out_cpu = model(*inputs)
    loss_cpu = sum(o.sum() for o in (out_cpu if isinstance(out_cpu, tuple) else (out_cpu,)))
    grads_cpu = torch.autograd.grad(loss_cpu, list(model.parameters()), allow_unused=True)
    model = model.to(device)
    out = model(*[x.to(device) for x in inputs])
    loss = sum(o.sum() for o in (out if isinstance(out, tuple) else (out,)))
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(loss.cpu(), loss_cpu, rtol=1e-5, atol=1e-6)
    for g, c in zip(grads, grads_cpu):
        if c is not None:
            torch.testing.assert_close(g.cpu(), c, rtol=1e-4, atol=1e-6)


def test_neural_ode_and_resnet():
    x = torch.randn(8, 4, dtype=torch.float64)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    _same_module(lambda: _NodeWrap(odenet.NeuralODE(odenet.MLPField(4, 16))), DEVICE, x, t)
    _same_module(lambda: odenet.ResNet(odenet.MLPField(4, 16), depth=5), DEVICE, x)


class _NodeWrap(torch.nn.Module):
    def __init__(self, node):
        super().__init__()
        self.node = node

    def forward(self, x, t):
        return self.node(x, t)


def test_ode_rnn_and_latent_ode():
    g = torch.Generator().manual_seed(1)
    B, T, D = 4, 7, 2
    times = torch.sort(torch.rand(B, T, generator=g, dtype=torch.float64), dim=1).values
    values = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    masks = [torch.rand(T, D, generator=g) > 0.3 for _ in range(B)]
    batch = odenet.IrregularBatch.from_lists(list(times), list(values), masks)
    for build in (lambda: odenet.ODERNN(D, 8, D), lambda: odenet.LatentODE(D, 3, 8)):
        torch.manual_seed(0)
        model = build().double()
        cpu = model(batch).square().sum()
        (gc,) = torch.autograd.grad(cpu, [next(model.parameters())])
        model = model.to(DEVICE)
        gpu = model(batch.to(DEVICE)).square().sum()
        (gg,) = torch.autograd.grad(gpu, [next(model.parameters())])
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gg.cpu(), gc, rtol=1e-3, atol=1e-6)


def test_stability_analyzer_on_device():
    """The analyzer reads a GPU network: the spectra of its layer Jacobians."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4).double()
    x = torch.randn(4, dtype=torch.float64)

    def report(device):
        lay = layer.to(device)
        return odenet.stability.analyze(lambda z: z + 0.5 * torch.tanh(lay(z)), x.to(device), 12)

    gpu, cpu = report(DEVICE), report("cpu")
    assert gpu.verdict == cpu.verdict
    for name in ("spectral_radius", "spectral_norm"):
        a, b = getattr(gpu, name), getattr(cpu, name)
        torch.testing.assert_close(
            torch.as_tensor(a).cpu(), torch.as_tensor(b), rtol=1e-6, atol=1e-9
        )


def test_compiled_host_steps_on_device():
    """``compile=True`` (the fused step, inductor) gives the eager solve's steps."""

    def lorenz(t, y):
        return torch.stack(
            [10 * (y[1] - y[0]), y[0] * (28 - y[2]) - y[1], y[0] * y[1] - 8 / 3 * y[2]]
        )

    y0, t = on(
        DEVICE,
        torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64),
        torch.linspace(0, 1, 5, dtype=torch.float64),
    )
    eager = odenet.solve(lorenz, y0, t, rtol=1e-8, atol=1e-10)
    fused = odenet.solve(lorenz, y0, t, rtol=1e-8, atol=1e-10, compile=True)
    assert fused.stats["nfe"] == eager.stats["nfe"]
    torch.testing.assert_close(fused.ys, eager.ys, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["dopri5", "radau_iia5", "bdf"])
def test_times_left_on_the_cpu_follow_the_state(name):
    """``t`` on the CPU with ``y0`` on the GPU (a ResNet's block times are built so): the
    solve runs on ``y0``'s device, one system and per-sample grids alike."""
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    t = torch.linspace(0, 2, 7, dtype=torch.float64)
    gpu = odenet.solve(field, y0.to(DEVICE), t, method=name, rtol=1e-7, atol=1e-9)
    cpu = odenet.solve(field, y0, t, method=name, rtol=1e-7, atol=1e-9)
    assert gpu.ys.device.type == torch.device(DEVICE).type
    torch.testing.assert_close(gpu.ys.cpu(), cpu.ys, rtol=1e-5, atol=1e-5)
    ts = torch.stack([t, t * 0.5])
    rows = odenet.solve(field, y0.expand(2, 3).to(DEVICE), ts, method=name, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(rows.ys[0].cpu(), cpu.ys, rtol=1e-5, atol=1e-5)
