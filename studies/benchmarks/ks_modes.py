"""Kuramoto–Sivashinsky (``stiff_holdout12.py``) with ``--modes`` Fourier points over
[0, ``--t1``]: odenet's methods and scipy's ``Radau``/``BDF`` side by side at each rtol,
each against scipy BDF at rtol 1e-12 (atol 1e-14), ``atol = 1e-3·rtol``.  Per solve:
status, the largest error over the components in units of rtol (floor 1e-3, the set's
measure), steps, rejected steps, Jacobians, f-evaluations and wall seconds.

The grid's round-off grows with the modes (the fourth-derivative matrix's entries grow
like ``k_max⁴``): at tight rtol a Newton iteration's increments stall at that round-off
(``RadauIIA._at_roundoff_floor``; BDF's ``roundoff_floor``).  ``stiff_holdout12_results.md``
quotes these runs:

    OMP_NUM_THREADS=1 python studies/benchmarks/ks_modes.py --modes 64 --t1 10 \\
        --rtols 1e-7,1e-8,1e-9,1e-10
    OMP_NUM_THREADS=1 python studies/benchmarks/ks_modes.py --modes 128 --t1 10 \\
        --rtols 1e-7,1e-8,1e-9 --scipy-rtols 1e-8 --timeout 900
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import odenet

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout12 as H
from stiff_accuracy import time_limited


def fields(modes: int):
    """The torch and numpy fields and ``u(0)`` on ``modes`` points."""
    H.KS["n"] = modes  # the set's matrices and u(0) read the grid size from KS
    A, D1 = H.ks_matrices()
    At, D1t = torch.tensor(A), torch.tensor(D1)

    def f(t, y):
        return At @ y - 0.5 * D1t @ (y * y)

    def f_numpy(t, y):
        return A @ y - 0.5 * D1 @ (y * y)

    return f, f_numpy, H.ks_initial()


def units(y, ref, rtol):
    return float((np.abs(y - ref) / (1e-3 + np.abs(ref))).max() / rtol)


def run_odenet(f, y0, t1, method, rtol, ref):
    t0 = time.perf_counter()
    sol = odenet.solve(
        f, torch.tensor(y0), torch.tensor([0.0, t1], dtype=torch.float64), method=method,
        rtol=rtol, atol=1e-3 * rtol, max_steps=200_000, throw=False,
    )  # fmt: skip
    st = sol.stats
    status = "ok" if bool(sol.success) else "failed"
    return (
        f"{method} {status} {units(sol.ys[-1].numpy(), ref, rtol):.3g}"
        f" | {int(st['steps'])} ({int(st['rejected'])}) | {int(st['jacobians'])}"
        f" | {int(st['nfe'])} | {time.perf_counter() - t0:.1f}"
    )


def run_scipy(f_numpy, y0, t1, method, rtol, ref):
    t0 = time.perf_counter()
    s = solve_ivp(f_numpy, (0.0, t1), y0, method=method, rtol=rtol, atol=1e-3 * rtol)
    return (
        f"scipy {method} {'ok' if s.status == 0 else 'failed'} {units(s.y[:, -1], ref, rtol):.3g}"
        f" | {s.t.size - 1} | {s.njev} | {s.nfev} | {time.perf_counter() - t0:.1f}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", type=int, default=64)
    ap.add_argument("--t1", type=float, default=10.0)
    ap.add_argument("--rtols", default="1e-7,1e-8,1e-9")
    ap.add_argument("--methods", default="radau_iia5,bdf")
    ap.add_argument("--scipy-rtols", default=None, help="rtols for scipy (default: --rtols)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per solve")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    f, f_numpy, y0 = fields(args.modes)
    ref = solve_ivp(f_numpy, (0.0, args.t1), y0, method="BDF", rtol=1e-12, atol=1e-14).y[:, -1]
    scipy_rtols = [float(r) for r in (args.scipy_rtols or args.rtols).split(",")]
    print("| rtol | solver status error/rtol | steps (rejected) | Jacobians | nfe | wall s |")
    print("|---|---|---|---|---|---|")
    for rtol in (float(r) for r in args.rtols.split(",")):
        runs = [(run_odenet, f, m) for m in args.methods.split(",")]
        if rtol in scipy_rtols:
            runs += [(run_scipy, f_numpy, m) for m in ("Radau", "BDF")]
        for runner, field, method in runs:
            row = time_limited(args.timeout, runner, field, y0, args.t1, method, rtol, ref)
            if isinstance(row, dict):  # past the limit
                row = f"{method} timeout | | | | {args.timeout:g}"
            print(f"| {rtol:g} | {row} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
