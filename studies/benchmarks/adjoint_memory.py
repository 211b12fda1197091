"""Peak memory and time of forward + backward: direct vs adjoint vs checkpoint.

rk4 with N fixed steps on an MLP field 256 → 256 → 256 (tanh, batch 32), for
odenet's three sensitivities beside torchdiffeq's ``odeint`` (backprop) and
``odeint_adjoint``.  Each configuration runs in its own subprocess; its memory is
the rise of the process's peak resident set (VmHWM, reset just before the solve)
above the resident set after setup and a warm-up.  Repetitions are interleaved
over configurations; times are medians.  A second part checks accuracy on a
contracting linear system (gradients against ``matrix_exp``) and reports the
adjoint's backward NFE with and without the seminorm.

Usage::

    python studies/benchmarks/adjoint_memory.py            # quick: N = 100, 1000
    python studies/benchmarks/adjoint_memory.py --full     # N = 100, 1000, 5000

Results are printed and written to ``adjoint_memory_results.md`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = ["odenet-direct", "odenet-adjoint", "odenet-checkpoint", "tde-odeint", "tde-adjoint"]


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def child(config: str, n_steps: int, batch: int, width: int) -> dict:
    """One forward + backward in this process; returns time and memory rise."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    import torchdiffeq

    import odenet

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = torch.nn.Linear(width, width)
            self.l2 = torch.nn.Linear(width, width)

        def forward(self, t, y):
            return self.l2(torch.tanh(self.l1(y)))

    f = Field()
    y0 = torch.randn(batch, width, requires_grad=True)
    t = torch.tensor([0.0, 1.0])

    def run(n):
        h = 1.0 / n
        if config.startswith("odenet"):
            kind, _, budget = config.split("-")[1].partition(":")
            extra = {"checkpoints": int(budget)} if budget else {}
            ys = odenet.solve(f, y0, t, method="rk4", step_size=h, sensitivity=kind, **extra).ys
        elif config == "tde-odeint":
            ys = torchdiffeq.odeint(f, y0, t, method="rk4", options={"step_size": h})
        else:
            ys = torchdiffeq.odeint_adjoint(f, y0, t, method="rk4", options={"step_size": h})
        ys[-1].pow(2).sum().backward()

    run(4)  # warm-up: kernels, allocator pools
    f.zero_grad()
    base = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM)
        fh.write("5")
    t0 = time.perf_counter()
    run(n_steps)
    elapsed = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    return {"time_s": elapsed, "mem_mb": (peak - base) / 1024}


def measure(config, n, batch, width) -> dict:
    cmd = [sys.executable, __file__, "--child", config, str(n), str(batch), str(width)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def accuracy() -> list[str]:
    """Contracting y' = A y (eigenvalues −10, −5, −1, −0.3), T = 3: gradient errors."""
    import torch
    import torchdiffeq

    import odenet

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dt = torch.float64
    n, T = 4, 3.0
    Q = torch.linalg.qr(torch.randn(n, n, dtype=dt))[0]
    A0 = Q @ torch.diag(torch.tensor([-10.0, -5.0, -1.0, -0.3], dtype=dt)) @ Q.T
    y0 = torch.randn(n, dtype=dt, requires_grad=True)
    w = torch.randn(n, dtype=dt)

    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(A0.clone())

        def forward(self, t, y):
            return self.A @ y

    f = Lin()
    yT = torch.linalg.matrix_exp(f.A * T) @ y0
    gA, gy = torch.autograd.grad((w * yT).sum(), [f.A, y0])
    tt = torch.tensor([0.0, T], dtype=dt)
    rows = ["| solver (dopri5, rtol 1e-8, atol 1e-10) | rel. error dL/dA | rel. error dL/dy0 |"]
    rows.append("|---|---|---|")
    cases = {
        "odenet adjoint": lambda: (
            odenet.solve(f, y0, tt, rtol=1e-8, atol=1e-10, sensitivity="adjoint").ys
        ),
        "odenet checkpoint": lambda: (
            odenet.solve(f, y0, tt, rtol=1e-8, atol=1e-10, sensitivity="checkpoint").ys
        ),
        "odenet direct": lambda: odenet.solve(f, y0, tt, rtol=1e-8, atol=1e-10).ys,
        "torchdiffeq odeint_adjoint": lambda: torchdiffeq.odeint_adjoint(
            f, y0, tt, rtol=1e-8, atol=1e-10
        ),
    }
    for name, fn in cases.items():
        ga, g0 = torch.autograd.grad((w * fn()[-1]).sum(), [f.A, y0])
        ea = float((ga - gA).norm() / gA.norm())
        e0 = float((g0 - gy).norm() / gy.norm())
        rows.append(f"| {name} | {ea:.2e} | {e0:.2e} |")

    # seminorm: backward NFE of the adjoint with and without it (MLP field, dopri5)
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 8)
    ).double()

    def g(t, y):
        return net(y)

    x0 = torch.randn(16, 8, dtype=dt)
    rows += ["", "| adjoint error norm (MLP 8-32-8, dopri5, rtol 1e-7) | backward NFE |"]
    rows.append("| backward steps (rejected) |---|---|")
    rows[-1] = "|---|---|"
    for semi in (True, False):
        sol = odenet.solve(
            g,
            x0,
            torch.linspace(0, 5, 6, dtype=dt),
            rtol=1e-7,
            atol=1e-9,
            sensitivity="adjoint",
            adjoint_params=list(net.parameters()),
            adjoint_seminorm=semi,
        )
        sol.ys.pow(2).sum().backward()
        st = sol.stats
        name = "seminorm (default)" if semi else "full norm"
        rows.append(
            f"| {name}: {st['backward_steps']} steps, {st['backward_rejected']} rejected "
            f"| {st['backward_nfe']} |"
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="include N = 5000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, nargs="+", help="override the list of N")
    ap.add_argument(
        "--configs",
        nargs="+",
        default=CONFIGS,
        help=f"any of {', '.join(CONFIGS)}; 'odenet-adjoint:C' sets checkpoints=C",
    )
    ap.add_argument("--out", default="adjoint_memory_results.md", help="file beside the script")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the accuracy part")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        config, n, batch, width = args.child
        print(json.dumps(child(config, int(n), int(batch), int(width))))
        return
    steps = args.steps or ([100, 1000, 5000] if args.full else [100, 1000])
    configs = args.configs
    runs: dict = {(c, n): [] for c in configs for n in steps}
    for rep in range(args.reps):
        for n in steps:
            for c in configs:
                r = measure(c, n, args.batch, args.width)
                runs[(c, n)].append(r)
                print(
                    f"rep {rep} N={n:5d} {c:18s} {r['time_s']:7.2f} s  +{r['mem_mb']:8.1f} MB",
                    flush=True,
                )
    med = {
        k: {m: statistics.median(r[m] for r in v) for m in ("time_s", "mem_mb")}
        for k, v in runs.items()
    }
    lines = [
        "# adjoint_memory results",
        "",
        f"Command: `python studies/benchmarks/adjoint_memory.py {' '.join(sys.argv[1:])}`  ",
        f"rk4, N fixed steps on [0, 1], MLP {args.width}→{args.width}→{args.width} (tanh), "
        f"batch {args.batch}, float32, 1 thread; median of {args.reps} interleaved runs, each "
        "in its own subprocess; memory = rise of peak RSS over the post-warm-up RSS. "
        f"Machine: {os.cpu_count()} shared CPU cores (absolute times are noisy; ratios matter).",
        "",
        "| N | config | time (s) | peak memory rise (MB) |",
        "|---|---|---|---|",
    ]
    for n in steps:
        for c in configs:
            m = med[(c, n)]
            lines.append(f"| {n} | {c} | {m['time_s']:.2f} | {m['mem_mb']:.1f} |")
    lo, hi = steps[0], steps[-1]
    lines += ["", f"Ratios (N = {hi} vs N = {lo}, and odenet vs torchdiffeq):", ""]

    def growth(c):
        return med[(c, hi)]["mem_mb"] / max(med[(c, lo)]["mem_mb"], 1e-3)

    if lo != hi:
        for c in configs:
            lines.append(f"- memory growth {c}: {growth(c):.2f}×")

    def ratio(a, b, n, m):
        if (a, n) in med and (b, n) in med:
            return med[(a, n)][m] / max(med[(b, n)][m], 1e-9)
        return None

    r = ratio("odenet-checkpoint", "odenet-direct", hi, "mem_mb")
    if r is not None:
        lines.append(f"- checkpoint / direct memory at N = {hi}: {r:.3f}")
    for n in steps:
        for a, b in (("odenet-adjoint", "tde-adjoint"), ("odenet-checkpoint", "odenet-direct")):
            r = ratio(a, b, n, "time_s")
            if r is not None:
                lines.append(f"- time {a} / {b} at N = {n}: {r:.2f}")
    # the targets, when the run has what they need
    if lo != hi and all(
        (c, n) in med for c in ("odenet-adjoint", "odenet-direct") for n in (lo, hi)
    ):
        lines += ["", "Targets:", ""]
        ga, gd = growth("odenet-adjoint"), growth("odenet-direct")
        lines.append(
            f"- adjoint memory growth N = {lo} → {hi} ≤ 2×: {ga:.2f}× "
            f"({'met' if ga <= 2 else 'MISSED'}); direct grows {gd:.1f}× (N ratio {hi / lo:.0f})"
        )
        if all(("odenet-checkpoint", n) in med for n in (lo, hi)):
            gc = growth("odenet-checkpoint")
            lines.append(
                f"- checkpoint growth ≤ half of linear ({hi / lo / 2:.0f}×): {gc:.2f}× "
                f"({'met' if gc <= hi / lo / 2 else 'MISSED'})"
            )
    for n in steps:
        r = ratio("odenet-adjoint", "tde-adjoint", n, "time_s")
        if r is not None:
            verdict = "met" if r <= 1 else "MISSED"
            lines.append(f"- adjoint time ≤ torchdiffeq adjoint at N = {n}: {r:.2f} ({verdict})")
    if not args.no_accuracy:
        lines += ["", "## Accuracy on contracting dynamics and the seminorm", ""]
        lines += accuracy()
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / args.out).write_text(text)


if __name__ == "__main__":
    main()
