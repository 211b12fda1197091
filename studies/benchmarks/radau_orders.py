"""Radau IIA of orders 3, 5 and 9 against each other and scipy's Radau, loose to tight rtol.

Which order for which tolerance: odenet's adaptive ``radau_iia3`` (2 stages, one
complex LU), ``radau_iia5`` (3 stages, Hairer's RADAU5) and ``radau_iia9`` (5 stages,
one real and two complex LUs) on problems of the stiff test set
(:data:`odenet.problems.STIFF_SUITE`), each with ``atol = d·rtol`` and scored at the
final time by ``max_i |y_i − ref_i| / (d + |ref_i|)`` against the problem's scipy
Radau reference at rtol 1e-13 (so errors below ~1e-11 are partly the reference's
own).  One cell (problem, rtol) runs its solvers back to back, so machine load hits
all alike.  ``nfe`` counts every call of ``f`` on odenet's side (also those the
autograd Jacobian makes); scipy's ``nfev`` excludes its finite-difference Jacobian
calls.  Work is compared in f-evaluations, the machine-independent measure; wall
times are printed for completeness only.

    python studies/benchmarks/radau_orders.py                      # the committed run
    python studies/benchmarks/radau_orders.py --problems hires --rtols 1e-6,1e-10

Prints a markdown table per problem (the committed ``radau_orders_results.md`` is one
such run) and writes ``studies/benchmarks/results/radau_orders.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from odenet import problems as P

sys.path.insert(0, str(Path(__file__).parent))
from stiff import run_odenet, run_scipy  # the sibling benchmark's runners

METHODS = ("radau_iia3", "radau_iia5", "radau_iia9")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="hires,robertson_long")
    ap.add_argument("--rtols", default="1e-3,1e-6,1e-8,1e-10,1e-12")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument(
        "--order3-min-rtol",
        type=float,
        default=1e-6,
        help="radau_iia3 below this rtol is skipped (steps grow like rtol^(-1/3))",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "radau_orders.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    methods = args.methods.split(",")
    rtols = [float(x) for x in args.rtols.split(",")]
    rows = []
    for name in args.problems.split(","):
        prob, d = P.get_problem(name), P.STIFF_SUITE[name]
        prob.solution([prob.span[1]])  # the reference (cached) before any timing
        print(f"\n### {name} (d = {d:g})\n")
        print(
            "| rtol | solver | status | error | nfe | njev | nlu | steps | wall s "
            "| nfe / radau_iia5 | error / radau_iia5 |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for rtol in rtols:
            cell = {
                m: run_odenet(prob, m, rtol, d, args.max_steps)
                for m in methods
                if not (m == "radau_iia3" and rtol < args.order3_min_rtol)
            }
            cell["scipy Radau"] = run_scipy(prob, "Radau", rtol, d)
            ref = cell.get("radau_iia5")
            for who, r in cell.items():
                r.update(problem=name, rtol=rtol, solver=who)
                rows.append(r)
                if r["status"] != "ok":
                    print(f"| {rtol:.0e} | {who} | {r['status']} | | | | | | | | |")
                    continue
                rn = r["nfe"] / ref["nfe"] if ref and ref["status"] == "ok" else math.nan
                re = r["err"] / ref["err"] if ref and ref["status"] == "ok" else math.nan
                print(
                    f"| {rtol:.0e} | {who} | ok | {r['err']:.2e} | {r['nfe']} | {r['njev']} "
                    f"| {r['nlu']} | {r['steps']} | {r['wall']:.2f} | {rn:.2f} | {re:.2g} |",
                    flush=True,
                )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
