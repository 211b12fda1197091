"""How much of a cell's verdict is luck: one problem's end error at many rtols.

A sweep cell is one rtol.  Where the error depends on which steps straddle a feature
(a stick-to-slip fold, a diode's conduction window), moving ``rtol`` by a few per cent
moves the error by orders of magnitude, and a pass or a SILENT at 1e-3 says little.
This solves the problem at ``--points`` rtols spaced geometrically over ``[lo, hi]``
with odenet's methods and scipy's ``Radau``, with the sweeps' settings and error
measure (``atol = floors·rtol``; :func:`odenet.problems.stiff_error` at the end
against the set's reference, in units of rtol), and counts the cells above 10·rtol
and above 100·rtol (the sweeps' SILENT, where the status is ok).

    python studies/benchmarks/rtol_scan.py --problem stick_slip --methods radau_iia5 \\
        --lo 3e-4 --hi 3e-3 --points 40
    python studies/benchmarks/rtol_scan.py --problem rectifier --lo 5e-7 --hi 2e-6 --points 15

Before/after a library change: run it twice, the second time with a checkout of the
parent first on ``PYTHONPATH``.  ``--json`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from stiff import run_odenet, run_scipy  # the sibling benchmark's runners
from stiff_holdout import any_problem


def scan(problem: str, methods: list[str], rtols) -> list[dict]:
    """One row per (solver, rtol): status, nfe and ``err/rtol`` (NaN where it failed)."""
    p, floors = any_problem(problem)
    rows = []
    for r in rtols:
        r = float(r)
        for m in methods:
            if m == "scipy":
                o = run_scipy(p, "Radau", r, floors)
            else:
                o = run_odenet(p, m, r, floors, max_steps=100_000)
            units = o.get("err", math.nan) / r if o["status"] == "ok" else math.nan
            rows.append(dict(solver=m, rtol=r, status=o["status"], nfe=o.get("nfe"), units=units))
            print(f"{m:12s} rtol {r:.5g}: {o['status']}, error {units:.3g}·rtol", flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    out = ["| solver | cells | ok | > 10·rtol | > 100·rtol | largest | geometric mean |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in dict.fromkeys(r["solver"] for r in rows):
        u = np.array([r["units"] for r in rows if r["solver"] == m and r["status"] == "ok"])
        n = sum(r["solver"] == m for r in rows)
        big, silent = int((u > 10).sum()), int((u > 100).sum())
        top = f"{u.max():.3g}" if u.size else "–"
        mean = f"{np.exp(np.log(np.maximum(u, 1e-300)).mean()):.3g}" if u.size else "–"
        out.append(f"| {'scipy Radau' if m == 'scipy' else m} | {n} | {u.size} | {big} | "
                   f"{silent} | {top} | {mean} |")  # fmt: skip
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", required=True)
    ap.add_argument(
        "--methods", default="radau_iia5", help="odenet methods (scipy's Radau: --scipy)"
    )
    ap.add_argument("--scipy", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--lo", type=float, required=True)
    ap.add_argument("--hi", type=float, required=True)
    ap.add_argument("--points", type=int, default=40)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    methods = a.methods.split(",") + (["scipy"] if a.scipy else [])
    rows = scan(a.problem, methods, np.geomspace(a.lo, a.hi, a.points))
    print()
    print(summary(rows))
    if a.json:
        Path(a.json).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
