"""Two checks behind ``stiff_holdout9_results.md``: what the ninth set's problems do to
scipy's own solvers.

``depletion-k``: ``substrate_depletion`` with K = 1e-6 … 1e-3 (V = 1, S(0) = 1, the
set's span), scipy Radau, BDF and LSODA at rtol 1e-3 … 1e-7 with the set's atol
(1e-3·rtol): the end error (the set's mixed measure, floor 1e-3) against the closed
form, in units of rtol.
Where it is ~1e6 the solver stepped over the pole at S = −K (S ends near S(0) − t1,
status ok).  This is why the set uses K = 1e-3.

``steps``: ``critically_damped`` under scipy Radau, BDF and LSODA at rtol 1e-3 … 1e-8:
steps, f-evaluations and the end error against the closed form, in units of rtol —
the multistep codes' step counts on a forced defective stiff mode.

    python studies/benchmarks/stiff_holdout9_checks.py depletion-k
    python studies/benchmarks/stiff_holdout9_checks.py steps
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout9 as H9
from stiff_holdout import mixed_error

SCIPY = ("Radau", "BDF", "LSODA")


def depletion_k(rtols, ks=(1e-6, 1e-5, 1e-4, 1e-3)):
    """Rows ``(K, method, {rtol: error/rtol})``, against the closed form."""
    for K in ks:
        p = H9.substrate_depletion(K=K)
        ref = p.solution([p.span[1]])[0]
        for m in SCIPY:
            row = {}
            for rtol in rtols:
                r = solve_ivp(p.f_numpy, p.span, p.y0, method=m, rtol=rtol, atol=1e-3 * rtol)
                row[rtol] = mixed_error(p, r.y[:, -1], ref) / rtol if r.success else np.nan
            yield K, m, row


def damped_steps(rtols):
    """Rows ``(rtol, method, steps, nfev, error/rtol)`` on ``critically_damped``."""
    p = H9.get("critically_damped")
    ref = H9.damped_exact([p.span[1]])[0]
    for rtol in rtols:
        for m in SCIPY:
            r = solve_ivp(p.f_numpy, p.span, p.y0, method=m, rtol=rtol, atol=1e-3 * rtol)
            yield rtol, m, len(r.t) - 1, r.nfev, mixed_error(p, r.y[:, -1], ref) / rtol


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("depletion-k")
    d.add_argument("--rtols", default="1e-3,1e-4,1e-5,1e-6,1e-7")
    s = sub.add_parser("steps")
    s.add_argument("--rtols", default="1e-3,1e-4,1e-5,1e-6,1e-7,1e-8")
    args = ap.parse_args(argv)
    rtols = [float(x) for x in args.rtols.split(",")]
    if args.mode == "depletion-k":
        print("| K | method | " + " | ".join(f"{r:g}" for r in rtols) + " |")
        print("|---|---|" + "---|" * len(rtols))
        for K, m, row in depletion_k(rtols):
            print(f"| {K:g} | {m} | " + " | ".join(f"{row[r]:.1e}" for r in rtols) + " |")
    else:
        print("| rtol | method | steps | nfev | error/rtol |")
        print("|---|---|---|---|---|")
        for rtol, m, steps, nfev, err in damped_steps(rtols):
            print(f"| {rtol:g} | {m} | {steps} | {nfev} | {err:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
