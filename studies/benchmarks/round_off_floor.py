"""How close to round-off each adaptive method honours rtol: the measurements behind
``ToleranceWarning`` (issue 14; ``odenet/_newton.py`` UNRESOLVED_GROWTH,
``odenet/_bdf.py`` ROUNDOFF_FLOOR, ``odenet/_validate.py`` warn_rtol_below_round_off).

Problems: the random dissipative linear systems of ``tests/test_honesty_property.py``
(``y' = A y + b``, ``A = Q diag(λ) Qᵀ``, 5 states, 4 output times), for seeds 0…S−1,
forward and backward in time, stiff (λ down to −1e4, implicit methods only) and not.
The reference is the closed form of the problem *rounded to the solve's dtype*, in
40-digit mpmath (scipy's ``expm`` is ~2e-12 off on the stiff ones, too coarse at
float64 tolerances).  Error: ``max |y − ref| / (0.01 + |ref|)`` over the outputs, in
units of rtol; a cell prints the worst over the draws, how many exceeded 100·rtol with
status ok, how many failed (``max_steps`` 20000), and whether odenet warned.

Usage::

    python studies/benchmarks/round_off_floor.py --dtype float32 --factors 1,100,300,1000
    python studies/benchmarks/round_off_floor.py --dtype float64 --factors 100,1000 \\
        --methods kvaerno5,bdf,ndf --seeds 6
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import mpmath
import numpy as np
import torch

import odenet
from odenet import _registry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_honesty_property import linear_system

mpmath.mp.dps = 40


def problem(seed, stiff, backward):
    """The property test's draw: 5 states, 4 output times, one initial state."""
    return linear_system(seed, 5, stiff, backward, 4)


def closed_form(A, b, y0, t):
    """The exact solution at ``t`` (``t[0]`` the start), 40 digits, as float64."""
    Am, bm = mpmath.matrix(A.tolist()), mpmath.matrix(b.tolist())
    shift = mpmath.lu_solve(Am, bm)
    start = mpmath.matrix(y0.tolist()) + shift
    out = []
    for s in t:
        y = mpmath.expm(Am * (mpmath.mpf(float(s)) - float(t[0]))) * start - shift
        out.append([float(v) for v in y])
    return np.array(out)


def cell(method, seed, stiff, backward, rtol, dtype):
    """``(error / rtol or None if the solve failed, warned)``."""
    A, b, y0, t = problem(seed, stiff, backward)
    At, bt, y0t, tt = (torch.tensor(v, dtype=dtype) for v in (A, b, y0, t))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", odenet.ToleranceWarning)
        sol = odenet.solve(
            lambda s, y: y @ At.T + bt, y0t, tt, method=method, rtol=rtol, atol=rtol / 100,
            max_steps=20000, throw=False,
        )  # fmt: skip
    warned = any(issubclass(w.category, odenet.ToleranceWarning) for w in caught)
    if not sol.success:
        return None, warned
    ref = closed_form(*(v.double().numpy() for v in (At, bt, y0t, tt)))
    err = np.max(np.abs(sol.ys.double().numpy() - ref) / (0.01 + np.abs(ref)))
    return float(err) / rtol, warned


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--factors", default="1,100,300,1000", help="rtol in units of eps")
    ap.add_argument(
        "--methods",
        default="dopri5,tsit5,dop853,bosh3,adams,radau_iia5,radau_iia9,radau_iia3,"
        "kvaerno3,kvaerno5,sdirk4,trbdf2,bdf,ndf",
    )
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    eps = torch.finfo(dtype).eps
    print(f"{args.dtype}, eps {eps:.3g}, seeds {args.seeds}")
    print("| method | rtol/eps | rtol | worst err/rtol (ok) | > 100·rtol | failed | warned |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        implicit = _registry.method(method).is_implicit
        for fac in (float(x) for x in args.factors.split(",")):
            rtol = fac * eps
            res = [
                cell(method, seed, stiff, bw, rtol, dtype)
                for seed in range(args.seeds)
                for bw in (False, True)
                for stiff in ((True, False) if implicit else (False,))
            ]
            ok = [e for e, _ in res if e is not None]
            print(
                f"| {method} | {fac:g} | {rtol:.2g} | {max(ok) if ok else float('nan'):.3g} | "
                f"{sum(e > 100 for e in ok)} | {len(res) - len(ok)} | "
                f"{sum(w for _, w in res)}/{len(res)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
