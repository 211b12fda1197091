"""Adaptive radau_iia5 under the classical I controller and Gustafsson's predictive one.

On the stiff test set (odenet.problems.STIFF_SUITE: atol = floor·rtol), prints per
problem and rtol the f-evaluations, Jacobian evaluations, rejected steps and the error
measure of ``odenet.problems.stiff_error`` for both controllers, and the ratios
predictive / I.  The predictive controller is radau_iia5's default.

    python studies/benchmarks/stiff_controllers.py            # rtol 1e-3 and 1e-6
    python studies/benchmarks/stiff_controllers.py --rtols 1e-4

Results are printed and written to ``stiff_controllers_results.md`` beside this file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import odenet
from odenet import problems as P

HERE = Path(__file__).resolve().parent
PROBLEMS = ["robertson_long", "hires", "oregonator", "van_der_pol_relaxation", "brusselator_1d"]


def run(name: str, rtol: float, controller: str) -> dict:
    prob = P.get_problem(name)
    floor = P.STIFF_SUITE[name]
    y0 = torch.as_tensor(np.asarray(prob.y0), dtype=torch.float64)
    t = torch.tensor(prob.span, dtype=torch.float64)
    sol = odenet.solve(
        prob.f,
        y0,
        t,
        method="radau_iia5",
        rtol=rtol,
        atol=floor * rtol,
        controller=controller,
        throw=False,
        max_steps=50_000,
    )
    err = P.stiff_error(prob, sol.ys[-1].numpy(), floor) if sol.success else float("nan")
    st = sol.stats
    return {
        "nfe": st["nfe"],
        "njev": st["jacobians"],
        "rej": st["rejected"],
        "err": err,
        "ok": sol.success,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtols", default="1e-3,1e-6")
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    args = ap.parse_args()
    rtols = [float(x) for x in args.rtols.split(",")]
    header = (
        "| problem | rtol | nfe I / pred | njev I / pred | rejected I / pred | error I / pred "
        "| nfe ratio |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name in args.problems.split(","):
        for rtol in rtols:
            a, b = run(name, rtol, "I"), run(name, rtol, "predictive")
            lines.append(
                f"| {name} | {rtol:g} | {a['nfe']} / {b['nfe']} | {a['njev']} / {b['njev']} "
                f"| {a['rej']} / {b['rej']} | {a['err']:.1e} / {b['err']:.1e} "
                f"| {b['nfe'] / a['nfe']:.2f} |"
            )
            print(lines[-1], flush=True)
    text = (
        "# radau_iia5: I controller vs predictive (Gustafsson)\n\n"
        f"Command: `python studies/benchmarks/stiff_controllers.py --rtols {args.rtols}`\n\n"
        + "\n".join(lines)
        + "\n"
    )
    (HERE / "stiff_controllers_results.md").write_text(text)


if __name__ == "__main__":
    main()
