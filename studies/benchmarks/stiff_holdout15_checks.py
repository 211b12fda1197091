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


def _table(methods, rtols, column: str, variants) -> list[str]:
    """The stratosphere solved by each method at each rtol under each variant ``(label,
    output times or None for the span alone, solve options)``: status, end error in
    units of rtol and f-evaluations, one markdown row each."""
    p = dataclasses.replace(H.get("stratosphere"), exact=None)
    ref = scipy_reference("stratosphere", second=False)["Radau"]
    lines = [f"| method | rtol | {column} | status ok | end error (units of rtol) | nfe |"]
    lines.append("|---|---|---|---|---|---|")
    for method in methods:
        for rtol in rtols:
            atol = torch.as_tensor(np.asarray(p.atol_ratio) * rtol)
            for label, t, kw in variants:
                sol = odenet.solve(
                    p.f, torch.as_tensor(p.y0),
                    torch.as_tensor(p.span if t is None else t, dtype=torch.float64),
                    method=method, rtol=rtol, atol=atol, max_steps=200_000, **kw,
                )  # fmt: skip
                err = mixed_error(p, sol.ys[-1].numpy(), ref) / rtol
                lines.append(
                    f"| {method} | {rtol:g} | {label} | {bool(sol.success)} | {err:.3g} "
                    f"| {sol.stats['nfe']} |"
                )
    return lines


def night(methods, rtols) -> list[str]:
    t1 = H.get("stratosphere").span[1]
    variants = [
        ("as given", None, {}),
        ("max_step=3600", None, {"max_step": 3600.0}),
        ("step_t = sunrises and sunsets", None, {"step_t": daylight_edges(t1)}),
    ]
    return _table(methods, rtols, "options", variants)


def outputs(methods, rtols, every_hours) -> list[str]:
    t1 = H.get("stratosphere").span[1]
    grid = lambda hours: np.unique(np.r_[np.arange(0.0, t1, 3600.0 * hours), t1])  # noqa: E731
    variants = [(f"{hours:g} h", grid(hours), {}) for hours in every_hours]
    return _table(methods, rtols, "outputs every", variants)


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
