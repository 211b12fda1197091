"""Hairer's stiffness test on the explicit pairs: where ``h·ρ`` sits, and the verdicts.

For each (problem, method, rtol) the accepted steps' ``h·ρ`` (odenet._stiffness, read on
every accepted step here, not on the solver's schedule) in units of the method's real
stability boundary: median, 90 % quantile and largest over the steps after the first
fifth of the solve (past a start-up transient), the steps taken (at most
``--max-steps``) and ``stats["stiff_at"]``.  Problems: the library's (``--problems``)
and ``relax<λ>``, ``y' = −λ(y − cos t) − sin t`` on [0, 2] from y(0) = 2 (stiff for
λ ≫ 1).  ``--span-factor`` stretches a library problem's span (non-stiff problems
over 20 periods and more).

    python studies/benchmarks/stiffness_detection.py                  # the table of the docs
    python studies/benchmarks/stiffness_detection.py --problems relax500 --rtols 1e-6,1e-8

What the guide (docs/guide/choosing.md, "Is my problem stiff?") says about the
threshold (0.7 of the boundary) is read from this table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse

import numpy as np
import torch

import odenet
from odenet import _stiffness
from odenet import problems as P
from odenet.stability import real_stability_interval

NONSTIFF = "lorenz,lotka_volterra,kepler,harmonic,van_der_pol,linear,advection"
STIFF = "relax500,relax5000,hires,robertson_long,van_der_pol_relaxation,kaps,heat"


def case(name: str, span_factor: float):
    """``(f, y0, t)`` of a library problem or of ``relax<λ>``."""
    if name.startswith("relax"):
        lam = float(name[5:])
        t = torch.tensor([0.0, 2.0], dtype=torch.float64)
        return lambda t, y: -lam * (y - torch.cos(t)) - torch.sin(t), torch.full((1,), 2.0), t
    prob = P.get_problem(name)
    t0, t1 = prob.span
    return prob.f, prob.y0_tensor(), torch.tensor([t0, t0 + span_factor * (t1 - t0)])


def h_rho_log(f, y0, t, method, rtol, max_steps):
    """Every accepted step's ``h·ρ`` over the boundary, and the solution."""
    seen = []
    check = _stiffness.StiffnessMonitor.check

    def logging_check(self, s, h, y, ks, accept):
        if bool(accept if isinstance(accept, bool) else accept.all()):
            seen.append(float(self.h_rho(ks.detach(), h, y.detach()).reshape(-1)[0]))
        return check(self, s, h, y, ks, accept)

    _stiffness.StiffnessMonitor.check = logging_check
    try:
        sol = odenet.solve(f, y0.double(), t.double(), method=method, rtol=rtol,
                           atol=rtol * 1e-3, max_steps=max_steps, throw=False)  # fmt: skip
    finally:
        _stiffness.StiffnessMonitor.check = check
    boundary = abs(real_stability_interval(odenet.tableau(method)))
    return np.array(seen) / boundary, sol


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=f"{NONSTIFF},{STIFF}")
    ap.add_argument("--methods", default="dopri5,tsit5,dop853")
    ap.add_argument("--rtols", default="1e-2,1e-3,1e-6")
    ap.add_argument("--span-factor", type=float, default=20.0, help="for the library's problems")
    ap.add_argument("--max-steps", type=int, default=5000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"threshold {_stiffness.BOUNDARY_FRACTION} of the boundary; span × {args.span_factor}\n")
    print("| problem | method | rtol | steps | h·ρ / boundary: median | 90 % | max | stiff_at |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.problems.split(","):
        f, y0, t = case(name, 1.0 if name in STIFF.split(",") else args.span_factor)
        for method in args.methods.split(","):
            for rtol in (float(r) for r in args.rtols.split(",")):
                r, sol = h_rho_log(f, y0, t, method, rtol, args.max_steps)
                r = r[len(r) // 5 :]
                r = r[np.isfinite(r)]  # (not read: see odenet._stiffness.READABLE)
                at = sol.stats["stiff_at"]
                q = np.quantile(r, [0.5, 0.9]) if len(r) else (np.nan, np.nan)
                print(f"| {name} | {method} | {rtol:g} | {sol.stats['steps']} | {q[0]:.2f} | "
                      f"{q[1]:.2f} | {r.max() if len(r) else np.nan:.2f} | "
                      f"{'—' if at is None else f'{at:.3g}'} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
