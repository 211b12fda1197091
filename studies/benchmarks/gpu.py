"""odenet on a GPU: against torchdiffeq on the same device, and against itself on the CPU.

Cases (float32, an MLP field ``d -> 4d -> d`` with tanh, dopri5, rtol 1e-4, atol 1e-6,
10 output times on [0, 1]):

* ``forward``: one solve of a batch ``[B, d]`` (a Neural ODE's forward pass);
* ``backward-direct``, ``backward-adjoint``: forward plus backward of ``sum(ys²)``
  through the solver (direct) and through the adjoint;
* ``per-sample``: ``B`` systems on their own time grids ``t [B, T]`` (the masked
  loop; torchdiffeq has no equivalent, so the ratio is GPU against CPU);
* ``stiff-batch``: radau_iia5 on ``B`` Robertson systems with per-sample grids
  (float64, rtol 1e-6): batched Newton with ``B`` small LU factorizations.

Repetitions are interleaved (odenet, peer, odenet, ...) and medians reported, each
timed between ``torch.cuda.synchronize()`` calls after one warm-up run. The host
synchronisations per accepted step are counted with ``torch.cuda.set_sync_debug_mode``.
Prints a table of ratios and writes it as JSON (``--out``).

    python studies/benchmarks/gpu.py [--reps 5] [--out results/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

import odenet

try:
    import torchdiffeq
except ImportError:  # optional peer
    torchdiffeq = None


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def medians(runners: dict, device, reps):
    """Median wall time of each runner, interleaved, after one warm-up each."""
    for fn in runners.values():
        fn()
    times = {k: [] for k in runners}
    for _ in range(reps):
        for k, fn in runners.items():
            times[k].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def mlp(d, device, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.Tanh(), torch.nn.Linear(4 * d, d))
    return net.to(device=device, dtype=dtype)


class Field(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y)


TOL = {"rtol": 1e-4, "atol": 1e-6}


def neural_ode_case(B, d, device, reps, mode):
    f = Field(mlp(d, device))
    y0 = torch.randn(B, d, device=device)
    t = torch.linspace(0, 1, 10, device=device)

    def ours():
        y = y0.clone().requires_grad_(mode != "forward")
        sens = "adjoint" if mode == "backward-adjoint" else "direct"
        ys = odenet.solve(f, y, t, method="dopri5", sensitivity=sens, **TOL).ys
        if mode != "forward":
            ys.square().sum().backward()
        return ys

    def theirs():
        y = y0.clone().requires_grad_(mode != "forward")
        if mode == "backward-adjoint":
            ys = torchdiffeq.odeint_adjoint(f, y, t, method="dopri5", **TOL)
        else:
            ys = torchdiffeq.odeint(f, y, t, method="dopri5", **TOL)
        if mode != "forward":
            ys.square().sum().backward()
        return ys

    runners = {"odenet": ours}
    if torchdiffeq is not None:
        runners["torchdiffeq"] = theirs
    with torch.no_grad() if mode == "forward" else torch.enable_grad():
        m = medians(runners, device, reps)
        agree = float((ours() - theirs()).detach().abs().max()) if torchdiffeq is not None else None
    return m, agree


def per_sample_case(B, d, device, reps):
    f_dev = Field(mlp(d, device))
    f_cpu = Field(mlp(d, "cpu"))
    g = torch.Generator().manual_seed(0)
    y0 = torch.randn(B, d, generator=g)
    t = torch.sort(torch.rand(B, 10, generator=g), dim=1).values
    yd, td = y0.to(device), t.to(device)

    def gpu():
        return odenet.solve(f_dev, yd, td, method="dopri5", **TOL).ys

    def cpu():
        return odenet.solve(f_cpu, y0, t, method="dopri5", **TOL).ys

    with torch.no_grad():
        m = medians({"device": gpu, "cpu": cpu}, device, reps)
        agree = float((gpu().cpu() - cpu()).abs().max())
    return m, agree


def robertson(t, y):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack(
        [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], -1
    )


def stiff_case(B, device, reps):
    g = torch.Generator().manual_seed(0)
    y0 = torch.zeros(B, 3, dtype=torch.float64)
    y0[:, 0] = 1.0
    t = torch.sort(torch.rand(B, 5, generator=g, dtype=torch.float64) * 100, dim=1).values
    t[:, 0] = 0.0
    yd, td = y0.to(device), t.to(device)
    kw = {"method": "radau_iia5", "rtol": 1e-6, "atol": 1e-10}

    def gpu():
        return odenet.solve(robertson, yd, td, **kw).ys

    def cpu():
        return odenet.solve(robertson, y0, t, **kw).ys

    m = medians({"device": gpu, "cpu": cpu}, device, reps)
    agree = float((gpu().cpu() - cpu()).abs().max())
    return m, agree


def syncs_per_step(device):
    """Host synchronisations per accepted step: one system, and per-sample grids."""
    if torch.device(device).type != "cuda":
        return {}
    out = {}
    f = Field(mlp(16, device))
    cases = {
        "one system": (torch.randn(64, 16, device=device), torch.linspace(0, 1, 10, device=device)),
        "per-sample": (
            torch.randn(64, 16, device=device),
            torch.sort(torch.rand(64, 10, device=device), dim=1).values,
        ),
    }
    for name, (y0, t) in cases.items():
        with torch.no_grad():
            odenet.solve(f, y0, t, **TOL)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    sol = odenet.solve(f, y0, t, **TOL)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
        n_sync = sum("synchroniz" in str(w.message) for w in caught)
        steps = sol.stats.get("naccept") or sol.stats.get("n_steps") or sol.stats["nfe"] / 6
        steps = float(torch.as_tensor(steps, dtype=torch.float64).max())
        out[name] = {"syncs": n_sync, "steps": steps, "per_step": n_sync / max(steps, 1)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes (a dry run on CPU)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    dev = args.device
    sizes = [(64, 16), (256, 64)] if args.quick else [(256, 64), (4096, 64), (1024, 256)]
    rows = []

    def record(case, size, m, agree, base):
        other = next(k for k in m if k != base) if len(m) > 1 else None
        row = {"case": case, "size": size, **{f"{k}_s": v for k, v in m.items()}}
        if other:
            row[f"{base}/{other}"] = m[base] / m[other]
        row["max_abs_difference"] = agree
        rows.append(row)
        ratio = f"{m[base] / m[other]:.2f}" if other else "-"
        print(f"{case:18s} {size:12s} {base}/{other or '-'} = {ratio}   ({agree=:.1e})", flush=True)

    for B, d in sizes:
        for mode in ("forward", "backward-direct", "backward-adjoint"):
            m, agree = neural_ode_case(B, d, dev, args.reps, mode)
            record(mode, f"B={B} d={d}", m, agree if agree is not None else float("nan"), "odenet")
    for B in [64] if args.quick else [256, 4096]:
        m, agree = per_sample_case(B, 16, dev, args.reps)
        record("per-sample", f"B={B} d=16", m, agree, "device")
    for B in [8] if args.quick else [64, 512]:
        m, agree = stiff_case(B, dev, max(2, args.reps // 2))
        record("stiff-batch", f"B={B} d=3", m, agree, "device")
    syncs = syncs_per_step(dev)
    for name, s in syncs.items():
        print(f"host syncs per accepted step ({name}): {s['per_step']:.2f}")
    info = {
        "device": torch.cuda.get_device_name() if torch.device(dev).type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torchdiffeq": getattr(torchdiffeq, "__version__", None),
        "cpu_threads": torch.get_num_threads(),
    }
    print(info)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"info": info, "rows": rows, "syncs": syncs}, indent=1))


if __name__ == "__main__":
    main()
