"""A stiff problem (Robertson's chemical kinetics) solved by odenet and by scipy.

Robertson's three reactions run at rates from 0.04 to 3·10⁷: the fast ones decay in
microseconds, the slow one over the whole span, and an explicit method must keep its
step at the fast time scale. The script solves it with odenet's adaptive implicit
methods (`radau_iia5` is Hairer's RADAU5, the method behind scipy's Radau) and with
scipy's `solve_ivp` (Radau, BDF, LSODA) over a sweep of tolerances,
and prints, per solver and tolerance, the function evaluations, Jacobian evaluations,
the error at the final time against a tight reference solution, and wall time. An
explicit method (dopri5) with a step budget shows why implicit methods are needed.

    python examples/stiff_vs_scipy.py            # t in [0, 40], rtol 1e-3 .. 1e-7
    python examples/stiff_vs_scipy.py --quick    # a few seconds, for CI

Wall times are those of this machine and this run (one process, no repetitions): read
them as rough ratios. The reference (scipy Radau at rtol 1e-13) is cached under
$ODENET_CACHE.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from scipy.integrate import solve_ivp

import odenet
from odenet.problems import get_problem


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    p.add_argument("--t1", type=float, default=40.0, help="end time")
    p.add_argument("--rtols", default="1e-3,1e-4,1e-5,1e-6,1e-7")
    p.add_argument("--methods", default="radau_iia5,kvaerno5,kvaerno3,sdirk4,trbdf2")
    p.add_argument("--scipy", default="Radau,BDF,LSODA")
    p.add_argument("--explicit-steps", type=int, default=20_000,
                   help="step budget of the explicit dopri5 run")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.t1, args.rtols, args.explicit_steps = 1.0, "1e-4", 300
        args.methods, args.scipy = "radau_iia5,kvaerno5", "Radau,BDF"

    prob = get_problem("robertson", t1=args.t1)
    t0, t1 = prob.span
    ref = prob.solution(np.array([t0, t1]))[-1]
    y0 = torch.tensor(prob.y0, dtype=torch.float64)
    times = torch.tensor([t0, t1], dtype=torch.float64)
    f_np = prob.numpy_field()

    rows = []
    for rtol in (float(r) for r in args.rtols.split(",")):
        atol = rtol * 1e-4  # y2 is ~1e-5: an absolute tolerance far below it
        for m in args.methods.split(","):
            start = time.perf_counter()
            sol = odenet.solve(prob.f, y0, times, method=m, rtol=rtol, atol=atol)
            wall = time.perf_counter() - start
            rows.append(dict(solver=f"odenet {m}", rtol=rtol, nfe=sol.stats["nfe"],
                             jacobians=sol.stats["jacobians"],
                             error=float(np.abs(sol.ys[-1].numpy() - ref).max()),
                             wall_s=wall))  # fmt: skip
        for m in args.scipy.split(","):
            start = time.perf_counter()
            r = solve_ivp(f_np, (t0, t1), prob.y0, method=m, rtol=rtol, atol=atol)
            wall = time.perf_counter() - start
            rows.append(dict(solver=f"scipy {m}", rtol=rtol, nfe=r.nfev, jacobians=r.njev,
                             error=float(np.abs(r.y[:, -1] - ref).max()), wall_s=wall))  # fmt: skip
    table = pd.DataFrame(rows)
    with pd.option_context("display.float_format", "{:.3g}".format, "display.width", 120):
        print(f"Robertson on [0, {t1:g}], error = max |y(t1) - reference|\n")
        print(table.to_string(index=False))

    sol = odenet.solve(prob.f, y0, times, method="dopri5", rtol=1e-4, atol=1e-8,
                       max_steps=args.explicit_steps, throw=False)  # fmt: skip
    print(f"\nexplicit dopri5 (rtol 1e-4) with a budget of {args.explicit_steps} steps: "
          f"{sol.message}; accepted {int(sol.stats['accepted'])}, rejected "
          f"{int(sol.stats['rejected'])}")  # fmt: skip

    if args.quick:
        bad = table[~(table["error"] < 1e-3)]
        if len(bad):
            raise SystemExit(f"a stiff solver missed the reference by more than 1e-3:\n{bad}")
    return table


if __name__ == "__main__":
    main()
