"""Two checks behind ``stiff_holdout15_results.md``: the stratosphere's nights.

``night``    KPP's stratospheric chemistry over three days, each method as given, with
             ``max_step`` of an hour and with the sunrises and sunsets as ``step_t``:
             status, end error in units of rtol (the sweep's measure, against scipy
             Radau at rtol 1e-12) and f-evaluations.  At night nothing moves, the steps
             grow tenfold per step, and a step whose stages all fall at night skips the
             day between them with status ok; told where the days begin and end, every
             method sees them.
``outputs``  The same solves with output times every few hours: an implicit Runge–Kutta
             step checks its interpolant at up to three outputs inside it (the first,
             the middle and the last; ``odenet._dense_check``), and a check in daylight
             rejects a step that skips a day.

    OMP_NUM_THREADS=1 python studies/benchmarks/stiff_holdout15_checks.py night
    OMP_NUM_THREADS=1 python studies/benchmarks/stiff_holdout15_checks.py outputs
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

import odenet

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout15 as H
from stiff_holdout import mixed_error, scipy_reference


def daylight_edges(t1: float) -> list[float]:
    """The sunrises and sunsets in (0, t1), seconds after the first noon."""
    S = H.STRATO
    hours = (day * 24 + h - S["noon"] / 3600 for day in range(int(t1 // 86400) + 2)
             for h in (S["sunrise"], S["sunset"]))  # fmt: skip
    return sorted(3600.0 * h for h in hours if 0 < 3600.0 * h < t1)


def night(methods, rtols) -> list[str]:
    p = dataclasses.replace(H.get("stratosphere"), exact=None)
    ref = scipy_reference("stratosphere", second=False)["Radau"]
    variants = [
        ("as given", {}),
        ("max_step=3600", {"max_step": 3600.0}),
        ("step_t = sunrises and sunsets", {"step_t": daylight_edges(p.span[1])}),
    ]
    lines = ["| method | rtol | options | status ok | error (units of rtol) | nfe |"]
    lines.append("|---|---|---|---|---|---|")
    for method in methods:
        for rtol in rtols:
            atol = torch.as_tensor(np.asarray(p.atol_ratio) * rtol)
            for label, kw in variants:
                sol = odenet.solve(
                    p.f, torch.as_tensor(p.y0), torch.tensor(p.span, dtype=torch.float64),
                    method=method, rtol=rtol, atol=atol, max_steps=200_000, **kw,
                )  # fmt: skip
                err = mixed_error(p, sol.ys[-1].numpy(), ref) / rtol
                lines.append(
                    f"| {method} | {rtol:g} | {label} | {bool(sol.success)} | {err:.3g} "
                    f"| {sol.stats['nfe']} |"
                )
    return lines


def outputs(methods, rtols, every_hours) -> list[str]:
    p = dataclasses.replace(H.get("stratosphere"), exact=None)
    ref = scipy_reference("stratosphere", second=False)["Radau"]
    lines = ["| method | rtol | outputs every | status ok | end error (units of rtol) | nfe |"]
    lines.append("|---|---|---|---|---|---|")
    for method in methods:
        for rtol in rtols:
            atol = torch.as_tensor(np.asarray(p.atol_ratio) * rtol)
            for every in every_hours:
                t = np.unique(np.r_[np.arange(0.0, p.span[1], 3600.0 * every), p.span[1]])
                sol = odenet.solve(
                    p.f, torch.as_tensor(p.y0), torch.as_tensor(t), method=method,
                    rtol=rtol, atol=atol, max_steps=200_000,
                )  # fmt: skip
                err = mixed_error(p, sol.ys[-1].numpy(), ref) / rtol
                lines.append(
                    f"| {method} | {rtol:g} | {every:g} h | {bool(sol.success)} | {err:.3g} "
                    f"| {sol.stats['nfe']} |"
                )
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="check", required=True)
    n = sub.add_parser("night")
    n.add_argument("--methods", default="kvaerno3")
    n.add_argument("--rtols", default="1e-3,1e-5")
    o = sub.add_parser("outputs")
    o.add_argument("--methods", default="kvaerno3")
    o.add_argument("--rtols", default="1e-5")
    o.add_argument("--every", default="1,5,7", help="hours between outputs")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    floats = lambda text: [float(x) for x in text.split(",")]  # noqa: E731
    if args.check == "night":
        lines = night(args.methods.split(","), floats(args.rtols))
    else:
        lines = outputs(args.methods.split(","), floats(args.rtols), floats(args.every))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
