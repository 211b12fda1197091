"""One solve, two error measures: the linear Airy equation of the eleventh hold-out set
(``stiff_holdout11.airy``) against its closed form, measured per component as the
sweeps do and against the solution's size (issue 14; ``stiff_holdout11_results.md``).

The sweeps' mixed measure, ``max_i |y_i − y*_i| / (floor_i + |y*_i|)``, reads ~1000·rtol
at t = 0.009 for radau_iia5 and scipy's Radau alike, where the wave passes within the
floor of zero at one grid point; the error against the solution's size,
``max_i |y_i − y*_i| / max_i |y*_i|``, stays at about rtol.  Same outputs, same atol
(``floor·rtol``) on both sides:

    python studies/benchmarks/airy_measures.py                    # rtol 1e-3, 1e-5
    python studies/benchmarks/airy_measures.py --t1 0.01 --rtols 1e-3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout11 as H

import odenet


def measures(y: np.ndarray, ref: np.ndarray, floors) -> tuple[float, float, float]:
    """``(max |y − y*|, max over times of the error over the solution's size, max of the
    mixed error)`` for outputs ``y``, ``ref`` [T, n]."""
    e = np.abs(y - ref)
    size = (e.max(axis=1) / np.abs(ref).max(axis=1)).max()
    return float(e.max()), float(size), float((e / (floors + np.abs(ref))).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t1", type=float, default=0.009)
    ap.add_argument("--rtols", default="1e-3,1e-5")
    ap.add_argument("--outputs", type=int, default=10)
    args = ap.parse_args(argv)
    p = H.airy(t1=args.t1)
    floors = np.asarray(p.atol_ratio, dtype=np.float64)
    ts = np.linspace(0.0, args.t1, args.outputs)
    ref = p.solution(ts)
    print(f"airy on [0, {args.t1:g}], {args.outputs} outputs, max|u| = {np.abs(ref).max():.3g}")
    print("| rtol | solver | max abs error | error / solution size | mixed error |")
    print("|---|---|---|---|---|")
    for rtol in (float(r) for r in args.rtols.split(",")):
        sol = odenet.solve(p.f, p.y0_tensor(), torch.tensor(ts), method="radau_iia5",
                           rtol=rtol, atol=torch.as_tensor(floors * rtol))  # fmt: skip
        s = solve_ivp(p.numpy_field(), (0.0, args.t1), p.y0, method="Radau", rtol=rtol,
                      atol=floors * rtol, t_eval=ts)  # fmt: skip
        for name, y in (("radau_iia5", sol.ys.numpy()), ("scipy Radau", s.y.T)):
            e, size, mixed = measures(y, ref, floors)
            print(
                f"| {rtol:.0e} | {name} | {e:.3g} | {size / rtol:.2f}·rtol | "
                f"{mixed / rtol:.0f}·rtol |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
