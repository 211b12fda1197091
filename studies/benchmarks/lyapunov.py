"""Lyapunov spectra: odenet.stability beside lyapynov on the same systems, one process.

1. Lorenz (σ=10, ρ=28, β=8/3), rk4 with dt = 0.01, full spectrum, reference
   (0.9056, 0, −14.5723) (Sprott 2003), sum −(σ+1+β) exactly.  Both tools average
   over the same total time T after a 20-unit transient: lyapynov along one orbit
   (its tangent propagation uses the analytic Jacobian of the field), odenet along
   an ensemble of B orbits of T/B each (one vmapped step per time step; tangent
   maps by autodiff of the rk4 step), and along one orbit for the linear-cost check.
2. A 256-unit random tanh RNN x ↦ tanh(W x), W ~ N(0, g²/n), g = 1.5 (chaotic),
   full spectrum of 256 exponents over N steps; lyapynov with the analytic Jacobian
   diag(1 − x'²) W, odenet with vmapped jacrev Jacobians and QR every step (equal
   work) and every 4 steps, and matrix-free (vmapped jvp of the 256 tangent vectors,
   no Jacobian formed).  Both tools start the tangent vectors from the identity;
   odenet also evolves them during the transient (lyapynov does not), so the two
   finite-N estimates differ by the start-up bias, not by round-off.
3. Linear cost: odenet time for N = 1000, 2000, 4000 Lorenz steps (one orbit).

Repetitions are interleaved between tools; times are medians of the process's
CPU time (1 thread; wall time on the shared 2-core machine is too noisy).  Usage::

    python studies/benchmarks/lyapunov.py            # T = 1000 (Lorenz), N = 300 (RNN)
    python studies/benchmarks/lyapunov.py --quick    # T = 200, N = 100

Results are printed and written to ``lyapunov_results.md`` beside this file.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one BLAS thread for numpy and torch
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from odenet.stability import flow_map, lyapunov

HERE = Path(__file__).resolve().parent
SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
REF = np.array([0.9056, 0.0, -14.5723])


def lorenz(t, x):
    return torch.stack(
        [
            SIGMA * (x[..., 1] - x[..., 0]),
            x[..., 0] * (RHO - x[..., 2]) - x[..., 1],
            x[..., 0] * x[..., 1] - BETA * x[..., 2],
        ],
        dim=-1,
    )


def lorenz_np(x, t):
    return np.array([SIGMA * (x[1] - x[0]), x[0] * (RHO - x[2]) - x[1], x[0] * x[1] - BETA * x[2]])


def lorenz_jac_np(x, t):
    return np.array([[-SIGMA, SIGMA, 0.0], [RHO - x[2], -1.0, -x[0]], [x[1], x[0], -BETA]])


def timed(fn):
    """CPU time of this (single-threaded) process: robust on a shared machine."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def lorenz_lyapynov(T, dt, transient):
    import lyapynov

    ds = lyapynov.ContinuousDS(np.array([1.0, 1.0, 1.0]), 0.0, lorenz_np, lorenz_jac_np, dt)
    return lyapynov.LCE(ds, 3, int(transient / dt), int(T / dt), False)


def lorenz_odenet(T, dt, transient, B):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) + torch.randn(
        B, 3, dtype=torch.float64, generator=gen
    )
    res = lyapunov(
        flow_map(lorenz, dt),
        x0,
        int(T / B / dt),
        dt=dt,
        transient=int(transient / dt),
        ensemble=True,
        vectorized=True,
        qr_every=5,
    )
    return res.exponents.numpy()


def rnn(n, g=1.5, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(0.0, g / np.sqrt(n), (n, n))
    x0 = rng.normal(0.0, 1.0, n)
    return W, x0


def rnn_lyapynov(W, x0, N, transient):
    import lyapynov

    f = lambda x, t: np.tanh(W @ x)  # noqa: E731
    jac = lambda x, t: (1.0 - np.tanh(W @ x) ** 2)[:, None] * W  # noqa: E731
    ds = lyapynov.DiscreteDS(x0.copy(), 0, f, jac)
    return lyapynov.LCE(ds, len(x0), transient, N, False)


def rnn_odenet(W, x0, N, transient, qr_every, tangent="jacobian"):
    Wt = torch.as_tensor(W)
    res = lyapunov(
        lambda x: torch.tanh(Wt @ x),
        torch.as_tensor(x0),
        N,
        transient=transient,
        qr_every=qr_every,
        tangent=tangent,
    )
    return res.exponents.numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    T = 200.0 if a.quick else 1000.0
    N_rnn = 100 if a.quick else 300
    dt, transient, B = 0.01, 20.0, 50
    lines = ["# lyapunov benchmark results", ""]
    cmd = "python studies/benchmarks/lyapunov.py" + (" --quick" if a.quick else "")
    lines += [
        f"Command: `{cmd}` (reps = {a.reps}, interleaved; medians). "
        "1 thread; 2 shared CPU cores, so absolute times are noisy and ratios matter.",
        "",
    ]

    # warm-up (torch.func tracing, imports)
    lorenz_odenet(5.0, dt, 1.0, 2)
    lorenz_lyapynov(1.0, dt, 0.1)

    # 1. Lorenz
    t_lp, t_od, lam_lp, lam_od = [], [], None, None
    for _ in range(a.reps):
        t, lam_lp = timed(lambda: lorenz_lyapynov(T, dt, transient))
        t_lp.append(t)
        t, lam_od = timed(lambda: lorenz_odenet(T, dt, transient, B))
        t_od.append(t)
    err = lambda lam: np.abs(np.asarray(lam) - REF) / abs(REF[0])  # noqa: E731
    lines += [
        f"## Lorenz, full spectrum, rk4 dt = {dt}, averaging time T = {T:g} after {transient:g}",
        "",
        "| tool | λ1 | λ2 | λ3 | sum + (σ+1+β) | max error / λ1_ref | median CPU time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, lam, ts in (
        ("lyapynov (1 orbit)", lam_lp, t_lp),
        (f"odenet ({B} orbits × T/{B})", lam_od, t_od),
    ):
        lam = np.asarray(lam)
        lines.append(
            f"| {name} | {lam[0]:.4f} | {lam[1]:.4f} | {lam[2]:.4f} | "
            f"{lam.sum() + SIGMA + 1 + BETA:.2e} | {err(lam).max():.2%} | "
            f"{statistics.median(ts):.2f} |"
        )
    ratio_l = statistics.median(t_lp) / statistics.median(t_od)
    lines += ["", f"Speed-up odenet vs lyapynov (Lorenz): **{ratio_l:.2f}×**", ""]

    # 2. RNN 256
    W, x0 = rnn(256)
    tr = 50
    t_lp, t_o1, t_o4, t_j4 = [], [], [], []
    for _ in range(a.reps):
        t, lam_lp = timed(lambda: rnn_lyapynov(W, x0, N_rnn, tr))
        t_lp.append(t)
        t, lam_o1 = timed(lambda: rnn_odenet(W, x0, N_rnn, tr, 1))
        t_o1.append(t)
        t, lam_o4 = timed(lambda: rnn_odenet(W, x0, N_rnn, tr, 4))
        t_o4.append(t)
        t, lam_j4 = timed(lambda: rnn_odenet(W, x0, N_rnn, tr, 4, "jvp"))
        t_j4.append(t)
    lam_lp = np.asarray(lam_lp)
    lines += [
        f"## Random tanh RNN, n = 256, g = 1.5, full spectrum (256 exponents), "
        f"N = {N_rnn} steps after {tr}",
        "",
        "| tool | λ1 | λ128 | λ256 | Kaplan–Yorke | max abs diff vs lyapynov "
        "| median CPU time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    from odenet.stability import kaplan_yorke_dimension

    for name, lam, ts in (
        ("lyapynov (QR every step)", lam_lp, t_lp),
        ("odenet (QR every step)", lam_o1, t_o1),
        ("odenet (QR every 4 steps)", lam_o4, t_o4),
        ("odenet (matrix-free jvp, QR every 4 steps)", lam_j4, t_j4),
    ):
        lam = np.asarray(lam)
        lines.append(
            f"| {name} | {lam[0]:.4f} | {lam[127]:.4f} | {lam[-1]:.4f} | "
            f"{kaplan_yorke_dimension(lam):.2f} | {np.abs(lam - lam_lp).max():.1e} | "
            f"{statistics.median(ts):.2f} |"
        )
    lines += [
        "",
        f"Speed-up odenet vs lyapynov (RNN, QR every step): "
        f"**{statistics.median(t_lp) / statistics.median(t_o1):.2f}×**; "
        f"QR every 4 steps: **{statistics.median(t_lp) / statistics.median(t_o4):.2f}×**; "
        "matrix-free jvp, QR every 4 steps: "
        f"**{statistics.median(t_lp) / statistics.median(t_j4):.2f}×**",
        "",
    ]

    # 3. linear cost in the number of steps (one Lorenz orbit)
    Ns = [1000, 2000, 4000]
    ts = {n: [] for n in Ns}
    x0l = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    for _ in range(a.reps):
        for n in Ns:
            t, _ = timed(lambda n=n: lyapunov(flow_map(lorenz, dt), x0l, n, dt=dt))
            ts[n].append(t)
    med = [statistics.median(ts[n]) for n in Ns]
    slope = np.polyfit(np.log(Ns), np.log(med), 1)[0]
    lines += [
        "## Cost against the number of steps (odenet, one Lorenz orbit)",
        "",
        "| N | median CPU time (s) | time / N (ms) |",
        "|---|---|---|",
        *[f"| {n} | {m:.2f} | {1e3 * m / n:.3f} |" for n, m in zip(Ns, med, strict=True)],
        "",
        f"Fitted exponent of time ∝ N^p: **p = {slope:.2f}** (1 = linear).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (HERE / "lyapunov_results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
