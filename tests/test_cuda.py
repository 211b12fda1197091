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


# --- odenet.fit on the device -------------------------------------------------------------
# Each model kind is fitted (a few steps) with its parameters on DEVICE and on the CPU from
# the same seed, the data built on the CPU as the loaders build them: fit moves them.

FIT_KINDS = ["neural_ode", "neural_ode_bidir", "neural_cde", "ode_rnn", "latent_ode",
             "gru_grid", "gru_dt", "gru_d", "linear_interp", "locf", "mean", "greybox"]  # fmt: skip


def _fit_data(seed=0):
    from odenet.fit import datasets

    # channels missing at random: every model's mask paths (ShootingODE's assimilate too)
    return datasets.lotka_volterra(4, observed=0.5, noise=0.02, n_times=10, t_end=5.0, seed=seed,
                                   channel_observed=0.7)  # fmt: skip


def _fit_model(kind):
    from odenet.fit.cli import build_model

    torch.manual_seed(0)
    mech = "lotka_volterra" if kind.startswith("greybox") else None
    return build_model(kind, 2, hidden=8, horizon=2, mechanism=mech)


def _queries(d):
    """Two queries per series inside its window, one before it and one beyond: CPU, float32
    (the context's times are float64)."""
    t = d.batch.times
    last = t.gather(1, (d.batch.lengths - 1)[:, None])
    return torch.cat([t[:, :1] - 0.4, t[:, 1:2] + 0.1, t[:, 3:4] - 0.05, last + 0.7], 1).float()


def _params(model):
    return [p.detach().cpu() for p in model.parameters()]


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_fit_and_predict_on_the_device_match_the_cpu(kind):
    from odenet.fit import fit

    d, val = _fit_data(), _fit_data(seed=1)
    runs = {}
    for where in (DEVICE, "cpu"):
        model = _fit_model(kind).to(where)
        res = fit(model, d, val, iters=3, batch_size=2, eval_every=1, seed=0)
        runs[where] = res, res.predict(d, _queries(d))
    (gpu, p_gpu), (cpu, p_cpu) = runs[DEVICE], runs["cpu"]
    for p in gpu.model.parameters():
        assert p.device.type == torch.device(DEVICE).type
    assert gpu.normalizer.mean.device.type == torch.device(DEVICE).type
    assert p_gpu.device.type == "cpu"  # the context's device
    for key in ("train_loss", "val_loss"):
        torch.testing.assert_close(torch.tensor(gpu.history[key]), torch.tensor(cpu.history[key]),
                                   rtol=1e-4, atol=1e-6)  # fmt: skip
    for g, c in zip(_params(gpu.model), _params(cpu.model)):
        torch.testing.assert_close(g, c, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(p_gpu, p_cpu, rtol=1e-3, atol=1e-4)
    # the model's own predict, everything on the device but the queries
    z = gpu.normalizer.transform(d.batch.to(DEVICE))
    with torch.no_grad():
        own = gpu.model.predict(z, _queries(d))
    assert own.device.type == torch.device(DEVICE).type
    torch.testing.assert_close(gpu.normalizer.inverse(own).cpu(), p_gpu, rtol=1e-6, atol=1e-8)
    assert math.isfinite(gpu.mse(d, val)) and abs(gpu.mse(d, val) - cpu.mse(d, val)) < 1e-3


def test_greybox_mle_gauss_newton_on_the_device_matches_the_cpu():
    """GreyBoxMLE's least squares is numpy: it computes on the CPU and leaves its
    parameters, buffers and predictions on the model's device."""
    from odenet.fit import fit

    d = _fit_data()
    runs = {}
    for where in (DEVICE, "cpu"):
        res = fit(_fit_model("greybox_mle").to(where), d, d, iters=5, optimizer="gauss_newton")
        runs[where] = res, res.predict(d, _queries(d))
    (gpu, p_gpu), (cpu, p_cpu) = runs[DEVICE], runs["cpu"]
    assert {t.device.type for t in gpu.model.state_dict().values()} == {torch.device(DEVICE).type}
    for g, c in zip(_params(gpu.model), _params(cpu.model)):
        torch.testing.assert_close(g, c, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(p_gpu, p_cpu, rtol=1e-6, atol=1e-8)
    lo, mid, hi = gpu.model.band(gpu.normalizer.transform(d.batch.to(DEVICE)), _queries(d))
    assert mid.device.type == torch.device(DEVICE).type and bool((lo <= hi).all())


def test_pk_and_parametric_models_on_the_device():
    from odenet.batch import IrregularBatch
    from odenet.fit import OneCompartmentPK, ParametricCurve, fit

    t = torch.tensor([0.25, 0.5, 1.0, 2.0, 4.0, 7.0, 12.0], dtype=torch.float64)
    c = 4.0 * 1.5 / (0.5 * 1.3) * (torch.exp(-0.2 * t) - torch.exp(-1.5 * t))
    batch = IrregularBatch.from_lists([t, t[1:]], [c[:, None], c[1:, None]])
    doses = [[(0.0, 4.0)], [(0.0, 4.0)]]
    q = torch.tensor([[0.3, 3.0, 20.0]] * 2)
    out = {}
    for where in (DEVICE, "cpu"):
        pk = OneCompartmentPK(doses, ka=1.0, ke=0.1, V=1.0).to(where)
        res = fit(pk, batch, iters=2, optimizer="lbfgs")
        out[where] = res.predict(batch, q), pk.values()
    torch.testing.assert_close(out[DEVICE][0], out["cpu"][0], rtol=1e-5, atol=1e-8)
    for k, v in out["cpu"][1].items():
        assert abs(out[DEVICE][1][k] - v) <= 1e-5 * abs(v)
    curve = ParametricCurve("bateman")
    on_dev = curve.predict(batch.to(DEVICE), q)  # scipy on the CPU, back on the context's
    assert on_dev.device.type == torch.device(DEVICE).type
    torch.testing.assert_close(on_dev.cpu(), ParametricCurve("bateman").predict(batch, q))


def test_ensemble_on_the_device():
    from odenet.fit.ensemble import fit_ensemble

    d, val = _fit_data(), _fit_data(seed=1)
    q = _queries(d)
    ens = {}
    for w in (DEVICE, "cpu"):
        ens[w] = fit_ensemble(lambda w=w: _fit_model("gru_dt").to(w), d, val, members=2,
                              iters=2, batch_size=None)  # fmt: skip
    torch.testing.assert_close(ens[DEVICE].sigma.cpu(), ens["cpu"].sigma, rtol=1e-4, atol=1e-6)
    for a, b in zip(ens[DEVICE].band(d, q), ens["cpu"].band(d, q)):
        assert a.device.type == "cpu"
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["latent_ode", "neural_cde", "gru_d"])
def test_a_device_checkpoint_resumes_on_the_cpu_and_back(tmp_path, kind):
    """A fit interrupted on the device finishes on the CPU (and one interrupted on the CPU
    on the device) where the uninterrupted CPU fit ends: the stochastic models draw on the
    CPU generator, which the checkpoint stores."""
    from odenet.fit import fit, load_checkpoint

    d, val = _fit_data(), _fit_data(seed=1)

    class Stop(Exception):
        pass

    def run(where, ck, stop_at=None):
        def cb(it, loss):
            if it == stop_at:
                raise Stop

        model = _fit_model(kind).to(where)
        fit(model, d, val, iters=6, batch_size=2, eval_every=2, checkpoint=ck,
            checkpoint_every=2, resume=True, callback=cb)  # fmt: skip
        return _params(model)

    straight = run("cpu", tmp_path / "straight.pt")
    for i, (first, then) in enumerate(((DEVICE, "cpu"), ("cpu", DEVICE))):
        ck = tmp_path / f"{i}.pt"
        with pytest.raises(Stop):
            run(first, ck, stop_at=3)
        stored = load_checkpoint(ck)
        assert stored["iteration"] == 2
        assert {t.device.type for t in stored["model"].values()} == {"cpu"}
        for g, c in zip(run(then, ck), straight):
            torch.testing.assert_close(g, c, rtol=1e-4, atol=1e-6)


def test_fit_of_data_already_on_the_device():
    """Data given on the device train a CPU model as the same data on the CPU do."""
    from odenet.fit import fit

    d = _fit_data()
    a = fit(_fit_model("gru_dt"), d.batch.to(DEVICE), iters=2, batch_size=None)
    b = fit(_fit_model("gru_dt"), d.batch, iters=2, batch_size=None)
    assert a.history["train_loss"] == b.history["train_loss"]
    p = a.predict(d.batch.to(DEVICE), _queries(d))
    assert p.device.type == torch.device(DEVICE).type


def test_fit_and_predict_cli_on_the_device_match_the_cpu(tmp_path):
    """``odenet fit --device`` trains there; ``odenet predict --device`` reads the
    checkpoint there: the same predictions as the CPU run's checkpoint read on the CPU."""
    import pandas as pd

    from odenet.cli import main
    from odenet.fit import to_long

    d = _fit_data()
    csv = tmp_path / "d.csv"
    to_long(d).to_csv(csv, index=False)
    preds = []
    for k, where in enumerate((DEVICE, "cpu")):
        ck, out = tmp_path / f"run{k}.pt", tmp_path / f"run{k}.csv"
        assert main(["fit", str(csv), "--checkpoint", str(ck), "--iters", "3", "--hidden", "6",
                     "--no-progress", "--device", where]) == 0  # fmt: skip
        assert main(["predict", str(ck), "--data", str(csv), "--times", "0.5,2,6",
                     "--device", where, "--out", str(out)]) == 0  # fmt: skip
        preds.append(pd.read_csv(out)[["prey", "predator"]].to_numpy())
    torch.testing.assert_close(torch.tensor(preds[0]), torch.tensor(preds[1]), rtol=1e-3, atol=1e-4)
