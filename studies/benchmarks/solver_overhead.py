"""Solver overhead: odenet vs torchdiffeq vs torchode on the same small MLP field.

The problem (issue 2): MLP field 8 -> 64 -> 8 (tanh), batch 64, dopri5, rtol 1e-6,
atol 1e-8, 20 output times on [0, 5], float32, one CPU thread.  The *floor* is
NFE x (cost of one field evaluation): what a solver with zero overhead would cost.
Repetitions are interleaved (odenet, torchdiffeq, torchode, odenet, ...) and medians
reported, so drifting machine load hits all three alike.  Prints ratios.

    python studies/benchmarks/solver_overhead.py [--reps 30] [--ops]

``--ops`` also counts the ATen operator calls of one forward solve (torch.profiler):
per-op dispatch on small tensors is what bounds the overhead ratio.

Writes ``studies/benchmarks/results/solver_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torchdiffeq

import odenet

try:
    import torchode
except ImportError:  # optional peer
    torchode = None


def make_problem(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))
    y0 = torch.randn(64, 8)
    t = torch.linspace(0, 5, 20)
    return net, y0, t


def runners(net, y0, t, rtol, atol):
    calls = {"n": 0}

    def f(t_, y):
        calls["n"] += 1
        return net(y)

    def run_odenet():
        return odenet.solve(f, y0, t, method="dopri5", rtol=rtol, atol=atol).ys

    def run_torchdiffeq():
        return torchdiffeq.odeint(f, y0, t, method="dopri5", rtol=rtol, atol=atol)

    out = {"odenet": run_odenet, "torchdiffeq": run_torchdiffeq}
    if torchode is not None:
        term = torchode.ODETerm(f)
        method = torchode.Dopri5(term=term)
        ctrl = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
        solver = torchode.AutoDiffAdjoint(method, ctrl)
        t_eval = t.expand(y0.shape[0], -1)

        def run_torchode():
            return solver.solve(torchode.InitialValueProblem(y0=y0, t_eval=t_eval)).ys

        out["torchode"] = run_torchode
    return out, calls


def time_interleaved(fns: dict, reps: int, backward: bool, params) -> dict:
    samples = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            for p in params:
                p.grad = None
            t0 = time.perf_counter()
            if backward:
                fn().square().sum().backward()
            else:
                with torch.no_grad():
                    fn()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def count_nfe(fn, calls) -> int:
    calls["n"] = 0
    with torch.no_grad():
        fn()
    return calls["n"]


def count_ops(fn) -> int:
    """ATen operator calls made by one no-grad call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--ops", action="store_true", help="count ATen calls per solve")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net, y0, t = make_problem()
    fns, calls = runners(net, y0, t, rtol=1e-6, atol=1e-8)
    params = list(net.parameters())
    for fn in fns.values():  # warm-up
        fn().sum().backward()
    nfe = {k: count_nfe(fn, calls) for k, fn in fns.items()}
    with torch.no_grad():  # the cost of one field evaluation
        reps = 2000
        t0 = time.perf_counter()
        for _ in range(reps):
            net(y0)
        field_cost = (time.perf_counter() - t0) / reps
    fwd = time_interleaved(fns, args.reps, False, params)
    fwd_bwd = time_interleaved(fns, args.reps, True, params)
    ref = "torchdiffeq"
    ops = {k: count_ops(fn) for k, fn in fns.items()} if args.ops else {}
    rows = []
    for k in fns:
        rows.append(
            {
                "solver": k,
                "nfe": nfe[k],
                **({"aten_calls": ops[k]} if ops else {}),
                "forward / torchdiffeq": fwd[k] / fwd[ref],
                "forward / floor": fwd[k] / (nfe[k] * field_cost),
                "fwd+bwd / torchdiffeq": fwd_bwd[k] / fwd_bwd[ref],
            }
        )
    print(f"field cost {field_cost * 1e6:.1f} us; floor = NFE x field cost")
    print(f"{'solver':<12} {'NFE':>5} {'fwd/tdq':>9} {'fwd/floor':>10} {'fwd+bwd/tdq':>12}")
    for r in rows:
        print(
            f"{r['solver']:<12} {r['nfe']:>5} {r['forward / torchdiffeq']:>9.2f} "
            f"{r['forward / floor']:>10.2f} {r['fwd+bwd / torchdiffeq']:>12.2f}"
        )
    if ops:
        print("ATen calls per forward solve: " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    out = Path(__file__).parent / "results" / "solver_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"rows": rows, "reps": args.reps, "torch": torch.__version__}, indent=2)
    )
    return rows


if __name__ == "__main__":
    main()
