"""BDF/NDF held at a stability lobe: the order guard on and off, and scipy's BDF.

At orders 3–5 the stability regions of BDF and NDF leave out a lobe beside the imaginary
axis.  A weakly damped oscillatory mode (eigenvalue near the imaginary axis) that has
decayed to the noise level grows when ``hλ`` lies in that lobe; the error estimate sees
the growth, and the controller holds ``h`` at the lobe's edge for the rest of the solve,
though the smooth solution would allow far larger steps.  ``VariableBDF``'s
``stability_guard`` (on by default) lowers the order at such a decision (see
``odenet._bdf._stability_limited``).  This script

1. prints each fixed-step member's A(α) and the lobe's extent, the largest ``|z|`` on
   the boundary locus left of the imaginary axis (``odenet.stability.multistep``, which
   analyses NDF k as its ``(ρ, σ)`` pair on equal steps),
2. runs ``bdf`` and ``ndf`` with the guard on and off, interleaved per cell, and
   scipy's ``BDF`` (the NDF formulas, without a guard) beside them, on the lobe system
   (``−1`` and ``−100 ± 1000i``, 84.3° from the negative real axis, rotated), the
   hold-out problem ``unstable_stiff`` and the stiff suite, and
3. prints the ratio ``‖∇^{k+1} y‖/‖∇ᵏ y‖`` the guard tests, at the order decisions at
   orders ≥ 3 of the guarded runs (median, 90th percentile): where the steps resolve
   the solution it is ``≈ h/τ``, well below the guard's 0.5.

    python studies/benchmarks/bdf_stability_limit.py
    python studies/benchmarks/bdf_stability_limit.py --rtols 1e-3 --problems lobe_2,unstable_stiff

Writes ``results/bdf_stability_limit.json``; ``bdf_stability_limit_results.md`` is one
run's printout.  Errors: ``max |y − ref|/(atol_ratio + |ref|)`` at the end, as the
hold-out sweeps (``ref``: the closed form or the problem's reference).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import odenet
from odenet import _bdf
from odenet import problems as P
from odenet.stability import multistep as MS

sys.path.insert(0, str(Path(__file__).parent))
from stiff_holdout import any_problem  # the stiff set's and the hold-out sets' problems

OUT = Path(__file__).parent / "results" / "bdf_stability_limit.json"


def lobe_table() -> list[dict]:
    rows = []
    for method in [*(f"bdf{k}" for k in (2, 3, 4, 5)), *(f"ndf{k}" for k in (2, 3, 4))]:
        z = MS.boundary_locus(method, 20001)
        left = z[np.isfinite(z) & (z.real < -1e-12)]
        extent = float(np.abs(left).max()) if left.size else 0.0
        rows.append({"method": method, "a_alpha": MS.a_alpha(method), "lobe": extent})
    return rows


def lobe_problem(t1: float) -> P.Problem:
    B = np.array([[-1.0, 0.0, 0.0], [0.0, -100.0, 1000.0], [0.0, -1000.0, -100.0]])
    v = np.array([3.0, 2.0, 1.0])
    Q = np.eye(3) - 2 * np.outer(v, v) / (v @ v)
    A = Q @ B @ Q.T
    A_t = torch.as_tensor(A)
    y0 = np.ones(3)
    return P.Problem(
        f=lambda t, y: y @ A_t.to(y.dtype).T,
        y0=y0,
        span=(0.0, t1),
        exact=lambda t: np.stack([expm(A * s) @ y0 for s in np.atleast_1d(t)]),
        name=f"lobe_{t1:g}",
        description="−1 and −100 ± 1000i in a rotated basis",
        stiff=True,
        f_numpy=lambda t, y: A @ y,
        atol_ratio=1e-3,
    )


def problems(names: list[str]):
    out = {}
    for name in names:
        if name.startswith("lobe_"):
            out[name] = lobe_problem(float(name[5:]))
        else:
            prob, floors = any_problem(name)
            out[name] = dataclasses.replace(prob, atol_ratio=floors)
    return out


def error(p: P.Problem, y) -> float:
    ref = p.solution(np.array([p.span[1]]))[-1]
    return float(np.max(np.abs(np.asarray(y) - ref) / (np.asarray(p.atol_ratio) + np.abs(ref))))


class Ratios:
    """Records ``‖∇^{k+1} y‖/‖∇ᵏ y‖`` at the order decisions at orders ≥ 3 (instrumentation
    of ``BDFRuntime._select_order``; the solve is unchanged)."""

    def __init__(self):
        self.values: list[float] = []
        self._orig = _bdf.BDFRuntime._select_order
        ratios = self

        def select(rt, D, err, y_new, order, n_steps, h):
            due = (n_steps + 1 >= order + 1) & (order >= 3)
            if bool(due.any()):
                nw = rt.newton
                scale = (nw.atol + nw.rtol * y_new.abs()) / rt._kappa
                ratios.values += _bdf.difference_ratio(D, scale, order)[due].tolist()
            return ratios._orig(rt, D, err, y_new, order, n_steps, h)

        self._select = select

    def __enter__(self):
        self.values = []
        _bdf.BDFRuntime._select_order = self._select
        return self

    def __exit__(self, *exc):
        _bdf.BDFRuntime._select_order = self._orig


def run_ours(p, method, rtol, max_steps):
    atol = torch.as_tensor(np.broadcast_to(np.asarray(p.atol_ratio) * rtol, p.y0.shape).copy())
    t0 = time.perf_counter()
    with Ratios() as ratios:
        try:
            sol = odenet.solve(
                p.f, torch.as_tensor(p.y0, dtype=torch.float64), torch.tensor(p.span),
                method=method, rtol=rtol, atol=atol, max_steps=max_steps,
            )  # fmt: skip
        except odenet.OdenetError as e:
            return {"status": type(e).__name__, "steps": None, "nfe": None, "err": None}
    return {
        "status": "ok" if int(sol.status) == 0 else "fail",
        "steps": sol.stats["steps"],
        "nfe": sol.stats["nfe"],
        "err": error(p, sol.ys[-1].numpy()),
        "wall": time.perf_counter() - t0,
        "ratios": ratios.values,
    }


def run_scipy(p, rtol):
    atol = np.broadcast_to(np.asarray(p.atol_ratio) * rtol, p.y0.shape)
    s = solve_ivp(p.f_numpy, p.span, p.y0, method="BDF", rtol=rtol, atol=atol)
    return {"status": "ok" if s.success else "fail", "steps": s.t.size - 1, "nfe": s.nfev,
            "err": error(p, s.y[:, -1])}  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = "lobe_2,lobe_5,unstable_stiff," + ",".join(P.STIFF_SUITE)
    ap.add_argument("--problems", default=default)
    ap.add_argument("--rtols", default="1e-3,1e-4,1e-6")
    ap.add_argument("--max-steps", type=int, default=40000)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.set_default_dtype(torch.float64)

    print("## The lobe each order leaves out (boundary locus, odenet.stability.multistep)\n")
    print("| method | A(α) ° | lobe: largest |z| left of the imaginary axis |")
    print("|---|---|---|")
    table = lobe_table()
    for r in table:
        print(f"| {r['method']} | {r['a_alpha']:.2f} | {r['lobe']:.2f} |")

    rtols = [float(r) for r in args.rtols.split(",")]
    cells = []
    print("\n## Guard on and off (steps, nfe, error), scipy BDF beside\n")
    print("| problem | rtol | method | steps on/off | nfe on/off (ratio) | err on / off "
          "| scipy BDF steps, err |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, p in problems(args.problems.split(",")).items():
        for rtol in rtols:
            theirs = run_scipy(p, rtol)
            for kind in ("bdf", "ndf"):
                on = run_ours(p, kind, rtol, args.max_steps)
                off_method = odenet.VariableBDF(f"{kind}_unguarded", ndf=kind == "ndf",
                                                stability_guard=False)  # fmt: skip
                off = run_ours(p, off_method, rtol, args.max_steps)
                cell = {"problem": name, "rtol": rtol, "method": kind, "on": on, "off": off,
                        "scipy_bdf": theirs}  # fmt: skip
                cells.append(cell)

                def fmt(r, key):
                    v = r[key]
                    return r["status"] if v is None else (f"{v:.2e}" if key == "err" else f"{v}")

                ratio = f"{on['nfe'] / off['nfe']:.2f}" if on["nfe"] and off["nfe"] else "-"
                row = [
                    name, f"{rtol:.0e}", kind, f"{fmt(on, 'steps')}/{fmt(off, 'steps')}",
                    f"{fmt(on, 'nfe')}/{fmt(off, 'nfe')} ({ratio})",
                    f"{fmt(on, 'err')} / {fmt(off, 'err')}",
                    f"{theirs['steps']}, {theirs['err']:.2e}",
                ]  # fmt: skip
                print("| " + " | ".join(row) + " |", flush=True)

    print("\n## ‖∇^{k+1} y‖/‖∇ᵏ y‖ at the order decisions at orders ≥ 3 (guard on)\n")
    print("| problem | decisions | median | 90th percentile | above 0.5 |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(c["problem"] for c in cells):
        v = np.array([x for c in cells if c["problem"] == name for x in c["on"].get("ratios", [])])
        if v.size:
            print(f"| {name} | {v.size} | {np.median(v):.3f} | {np.quantile(v, 0.9):.3f} "
                  f"| {(v > _bdf.STABILITY_RATIO).mean():.1%} |")  # fmt: skip

    for c in cells:  # the ratio lists are long; the table above summarises them
        for side in ("on", "off"):
            c[side].pop("ratios", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"lobes": table, "cells": cells}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
