"""Why BEAM ends above 100·rtol with status ok (issue 14, ``stiff_holdout3_results.md``).

BEAM (Bari test set, 80 equations, an undamped nonlinear beam; ``stiff_holdout3.py``)
is SILENT for radau_iia5 and radau_iia9 at rtol ≤ 3e-8, and scipy's Radau is too.  This
script takes radau_iia5's machinery apart one piece at a time on the same solve and
prints the end error against Hairer's published y(5) in units of rtol (the sweep's
measure: ``max |y − ref| / (floor + |ref|)``, per-component floors of
``stiff_holdout3.py``):

``radau_iia5``     as shipped;
``unfiltered``     radau_iia5 with the error estimate's ``(γ̂/h − J)⁻¹`` filter replaced
                   by the unfiltered ``(h/γ̂)(f0 + Σ e_i Z_i / h)`` (is the filter hiding
                   the error?);
``newton=TOL``     radau_iia5 with its Newton stopping threshold forced to TOL (is the
                   Newton iteration leaving it?);
any other name     that method as shipped (e.g. ``kvaerno5``, a DIRK with a different
                   estimate; ``dopri5``, explicit, no Newton, no filter).

    python studies/benchmarks/beam_diagnosis.py --rtol 1e-6 \\
        --variants radau_iia5,unfiltered,newton=1e-6,kvaerno5,dopri5

If every variant lands at a similar multiple of rtol, the error is not a defect of one
estimate or iteration but the problem's: local errors are never damped on an undamped
oscillation and a local error control cannot bound their sum.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout3 as H3

import odenet
import odenet._radau as R


def _run(variant: str, rtol: float, max_steps: int) -> dict:
    """One solve of BEAM on [0, 5] with ``variant``; the class patches are undone after."""
    p = H3.get("beam")
    floors = np.asarray(p.atol_ratio)
    method, undo = variant, []
    if variant == "unfiltered":
        method = "radau_iia5"
        old_filter, old_error = R.RadauIIA._filter, R.RadauIIA._error

        def _error(self, g, s, y, hy, f0, Z, lu, retry, y1):
            self._h_now = hy[:, None]
            return old_error(self, g, s, y, hy, f0, Z, lu, retry, y1)

        def _filter(self, lu, rhs):  # γ₀ h rhs with γ₀ = 1/γ̂, no resolvent
            return rhs * self._h_now / self.k.mu_real

        R.RadauIIA._filter, R.RadauIIA._error = _filter, _error
        undo = [("_filter", old_filter), ("_error", old_error)]
    elif variant.startswith("newton="):
        method, tol = "radau_iia5", float(variant.split("=", 1)[1])
        old_init = R.RadauIIA.__init__

        def __init__(self, *a, **k):
            old_init(self, *a, **k)
            self.newton_tol = tol

        R.RadauIIA.__init__ = __init__
        undo = [("__init__", old_init)]
    try:
        t0 = time.perf_counter()
        sol = odenet.solve(
            p.f,
            p.y0_tensor(),
            torch.tensor([0.0, 5.0], dtype=torch.float64),
            method=method,
            rtol=rtol,
            atol=torch.as_tensor(floors * rtol),
            max_steps=max_steps,
            throw=False,
        )
        wall = time.perf_counter() - t0
    finally:
        for name, fn in undo:
            setattr(R.RadauIIA, name, fn)
    ref = H3.stiff_holdout.PUBLISHED["beam"]
    e = np.abs(sol.ys[-1].numpy() - ref) / (floors + np.abs(ref))
    return {
        "variant": variant,
        "status": int(sol.status.flatten()[0]),
        "err_over_rtol": float(e.max() / rtol),
        "component": int(e.argmax()),
        "steps": int(sol.stats["steps"]),
        "nfe": int(sol.stats["nfe"]),
        "njev": int(sol.stats.get("jacobians", 0)),
        "wall": wall,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--variants", default="radau_iia5,unfiltered,newton=1e-6,kvaerno5,dopri5")
    ap.add_argument("--max-steps", type=int, default=200_000)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"BEAM on [0, 5], rtol {args.rtol:g}, error against the published y(5)\n")
    print("| variant | status | error / rtol | worst component | steps | nfe | njev | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for v in args.variants.split(","):
        r = _run(v, args.rtol, args.max_steps)
        print(
            f"| {r['variant']} | {r['status']} | {r['err_over_rtol']:.1f} | {r['component']} "
            f"| {r['steps']} | {r['nfe']} | {r['njev']} | {r['wall']:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
