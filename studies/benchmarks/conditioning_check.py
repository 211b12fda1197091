"""`odenet.stability.conditioning` against knock experiments on the stiff fuzz's cases.

Two independent measures of "how far does one tolerance unit of error travel":

* **linearized** — :func:`odenet.stability.conditioning`: the largest
  ``‖D(t)⁻¹ Φ(t, s) D(s)‖₂`` over pairs of 50 checkpoints, from autograd Jacobians of
  radau_iia5's flow (run at 1e-2 of the case's rtol and atol: the measure depends on
  their ratio only, and tighter solves give better Jacobians);
* **knocked** — ``stiff_fuzz.Case.amplification``: the solution knocked by one random
  tolerance unit at 50 times, its largest deviation from the reference on 200 times
  (scipy Radau at rtol 1e-12, or the closed form), the worse of two knock sequences.

They answer the same question by different routes (a norm of the linear propagator;
a nonlinear sum of random knocks measured in the max norm), so they agree to within a
factor of ~10, not digit for digit; what matters is that they agree on which side of
the ``1e4`` line (ill-conditioned) a case falls.  Drawn case 100030 is the one that
the fuzz found (an error of 6.9e8 units from bdf with status ok, ``stiff_fuzz_results.md``).

    python studies/benchmarks/conditioning_check.py                    # cases 0..9, 39, 100030
    python studies/benchmarks/conditioning_check.py --cases 0,1,100030

``--problems``: does the verdict predict the global error?  On built-in problems, the
worst amplification beside the solve's actual global error (against the problem's
closed form or reference, in the same tolerance units as the report: ``|y|`` read as
the error test of the step ending at each of the 51 checkpoint times) at two rtols.

    python studies/benchmarks/conditioning_check.py --problems
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import stiff_fuzz as F

from odenet.stability import conditioning

DEFAULT = "0,1,2,3,4,5,6,7,8,9,39,100030"
PROBLEMS = [
    ("lorenz", {"t1": 10.0}),
    ("lorenz", {"t1": 20.0}),
    ("kepler", {}),
    ("van_der_pol", {}),
    ("lotka_volterra", {}),
    ("robertson", {}),
    ("hires", {}),
    ("oregonator", {}),
]


def global_errors(rtols=(1e-4, 1e-7), checkpoints: int = F.CHECKPOINTS) -> None:
    """The ``--problems`` table: worst amplification and actual global error per cell."""
    import numpy as np

    import odenet
    from odenet.problems import get_problem

    print("| problem | method | rtol | worst amplification | verdict | global error | "
          "error / worst | steps |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, params in PROBLEMS:
        p = get_problem(name, **params)
        method = "radau_iia5" if p.stiff else "dopri5"
        label = name + "".join(f" {k}={v:g}" for k, v in params.items())
        for rtol in rtols:
            atol, y0 = p.atol(rtol), p.y0_tensor()
            span = torch.tensor(p.span, dtype=torch.float64)
            rep = conditioning(
                p.f, y0, span, method=method, rtol=rtol, atol=atol, checkpoints=checkpoints
            )
            sol = odenet.solve(p.f, y0, torch.as_tensor(rep.times), method=method, rtol=rtol,
                               atol=atol)  # fmt: skip
            ref = p.solution(rep.times)
            mag = np.abs(ref)
            mag[1:] = np.maximum(mag[1:], mag[:-1])  # the report's tolerance unit
            err = float((np.abs(sol.ys.numpy() - ref) / (np.asarray(atol) + rtol * mag)).max())
            steps = sol.stats["steps"]
            print(f"| {label} | {method} | {rtol:g} | {rep.worst:.3g} | {rep.verdict} | "
                  f"{err:.3g} | {err / rep.worst:.2g} | {steps} |", flush=True)  # fmt: skip


def linearized(case: F.Case, checkpoints: int = F.CHECKPOINTS):
    """The conditioning report of ``case`` (radau_iia5 at 1e-2 of its tolerances)."""
    t = torch.tensor([case.t0, case.t1], dtype=torch.float64)
    return conditioning(
        case.f_torch(),
        torch.tensor(case.y0),
        t,
        method="radau_iia5",
        rtol=1e-2 * case.rtol,
        atol=1e-2 * case.atol,
        checkpoints=checkpoints,
        max_steps=200_000,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=DEFAULT, help="comma-separated seeds of drawn cases")
    ap.add_argument("--checkpoints", type=int, default=F.CHECKPOINTS)
    ap.add_argument("--problems", action="store_true", help="the global-error table instead")
    args = ap.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    if args.problems:
        global_errors(checkpoints=args.checkpoints)
        return 0
    print(
        "| case | kind | linearized worst | verdict | knocked | ratio | same side | s lin/knock |"
    )
    print("|---|---|---|---|---|---|---|---|")
    disagree = 0
    for seed in (int(s) for s in args.cases.split(",")):
        case = F.draw(seed)
        kind = "nonlinear" if case.s else "linear"
        t0 = time.perf_counter()
        rep = linearized(case, args.checkpoints)
        t1 = time.perf_counter()
        knock = case.amplification(checkpoints=args.checkpoints)
        t2 = time.perf_counter()
        ratio = rep.worst / knock if knock > 0 else math.inf
        same = (rep.worst >= F.ILL_CONDITIONED) == (knock >= F.ILL_CONDITIONED)
        disagree += not same
        print(
            f"| {seed} | {kind} | {rep.worst:.3g} | {rep.verdict} | {knock:.3g} | "
            f"{ratio:.2g} | {'yes' if same else 'NO'} | {t1 - t0:.1f}/{t2 - t1:.1f} |",
            flush=True,
        )
    print(f"\n{disagree} case(s) on different sides of {F.ILL_CONDITIONED:g}")
    return 1 if disagree else 0


if __name__ == "__main__":
    raise SystemExit(main())
