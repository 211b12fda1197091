"""Steps across a jump in the forcing: the observed-order rule after a second rejection.

``y' = −λ (y − H(t − t_d))``, ``y(0) = 0`` on ``[0, 3]`` (``λ = 50``), whose solution is
``1 − exp(−λ (t − t_d))`` after ``t_d``.  A step across ``t_d`` has an error that falls
like ``h^0.5 … h^2`` as it shrinks, not like ``h^(q+1)``, so the classical factor
``r^(−1/k)`` creeps up to the jump in many rejections.  The controllers'
``observed_order`` rule shrinks a second rejection in a row by the order the two
rejected trials show.  Each method runs with the rule off (``observed_order=0``) and on
(``0.5``) over 25 jump positions ``t_d`` in ``[1.0, 1.2]`` (the jump falls anywhere in a
step), summing f-evaluations and rejections; the largest error over the positions is
in units of rtol (``atol = rtol``).  scipy's Radau on the same cells is the peer.

    python studies/benchmarks/jump_rejections.py
    python studies/benchmarks/jump_rejections.py --methods radau_iia5 --rtols 1e-3

The numbers behind the ``observed_order`` defaults in ``odenet/_controller.py``
(``PredictiveController``: on; ``PIDController``: off) come from this script.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

import odenet
from odenet._controller import PIDController, PredictiveController

LAM, T1 = 50.0, 3.0
POSITIONS = np.linspace(1.0, 1.2, 25)


def exact(t: float, td: float) -> float:
    return 0.0 if t < td else 1 - math.exp(-LAM * (t - td))


def run_odenet(method: str, rtol: float, observed: float) -> tuple[int, int, float]:
    kind = PredictiveController if method.startswith("radau") else PIDController
    nfe = rejected = 0
    worst = 0.0
    for td in POSITIONS:

        def f(t, y, td=td):
            return -LAM * (y - (t >= td).to(y.dtype))

        sol = odenet.solve(
            f,
            torch.zeros(1, dtype=torch.float64),
            torch.tensor([0.0, T1], dtype=torch.float64),
            method=method,
            rtol=rtol,
            atol=rtol,
            controller=kind(observed_order=observed),
        )
        nfe += int(sol.stats["nfe"])
        rejected += int(sol.stats["rejected"])
        worst = max(worst, abs(float(sol.ys[-1, 0]) - exact(T1, td)) / rtol)
    return nfe, rejected, worst


def run_scipy(rtol: float) -> tuple[int, float]:
    nfe, worst = 0, 0.0
    for td in POSITIONS:
        r = solve_ivp(
            lambda t, y, td=td: -LAM * (y - (1.0 if t >= td else 0.0)),
            (0.0, T1),
            [0.0],
            method="Radau",
            rtol=rtol,
            atol=rtol,
        )
        nfe += int(r.nfev)
        worst = max(worst, abs(r.y[0, -1] - exact(T1, td)) / rtol)
    return nfe, worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="dopri5,tsit5,bosh3,kvaerno5,sdirk4,radau_iia5,bdf")
    ap.add_argument("--rtols", default="1e-3,1e-6")
    args = ap.parse_args(argv)
    print(f"y' = -{LAM:g}(y - H(t - t_d)) on [0, {T1:g}], {len(POSITIONS)} jump positions")
    print()
    print("| method | rtol | nfe off | nfe on | on/off | rejected off | rejected on "
          "| max err/rtol off | on |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for rtol in (float(r) for r in args.rtols.split(",")):
        for m in args.methods.split(","):
            a, b = run_odenet(m, rtol, 0.0), run_odenet(m, rtol, 0.5)
            print(
                f"| {m} | {rtol:.0e} | {a[0]} | {b[0]} | {b[0] / a[0]:.3f} | {a[1]} | {b[1]} "
                f"| {a[2]:.2g} | {b[2]:.2g} |",
                flush=True,
            )
        nfe, worst = run_scipy(rtol)
        print(f"| scipy Radau | {rtol:.0e} | {nfe} | | | | | {worst:.2g} | |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
