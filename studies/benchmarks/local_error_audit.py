"""Each accepted step's true local error, in units of the tolerance: an audit of an
adaptive method's error estimate.

A solver accepts a step when its *estimate* of the step's local error is at most one
tolerance unit.  This measures the *true* local error of every accepted step: the step's
end state against the exact flow from the step's own start (scipy's ``Radau`` at rtol
1e-12 over the same interval), in the solver's own norm, the RMS over components of
``|y₁ − φ_h(y₀)| / (atol + rtol·max(|y₀|, |y₁|))`` with the sweeps' ``atol =
floors·rtol``.  A step many units above one is one whose estimate missed it, or a step
whose error sits in a component the problem damps: a filtered estimate (Radau IIA's,
the DIRK pairs') reports a stiff component's error as the next steps leave it, by
design.  The end error (:func:`odenet.problems.stiff_error` in units of rtol, as the
sweeps report it) and the step's place (a fold, a switch) tell which, and whether it
mattered.  The accepted steps come from ``solve``'s public
``callback`` (start, state, size); the step's end state is the next step's start, and
the solution's end for the last.

A global error of many units with every step near or below one unit is the problem's
own accumulation (the phase of an oscillation drifting by the same sign every cycle);
a global error that follows one step of 10–100 units is the estimate's failure.  So
this tells the two apart where an end-error sweep (``rtol_scan.py``) cannot.

    python studies/benchmarks/local_error_audit.py --problems stick_slip \\
        --methods radau_iia5 --rtols 1e-3,1.601e-3 --worst 3
    python studies/benchmarks/local_error_audit.py --problems stick_slip \\
        --rtols 1e-3,1.299e-3 --filter-at-end      # an estimator experiment
    python studies/benchmarks/local_error_audit.py --problems stick_slip \\
        --rtols 1e-3,3e-3 --reject-on-stiffness-loss 4      # another

Per (problem, method, rtol): the status, the end error, the accepted steps and
f-evaluations (an experiment's Jacobian counts one, as the library's autograd Jacobians
do, and is left out of ``njev``), how many are
above 1 and above 10 units, and the worst (its units, start and size); ``--worst N``
also lists the N worst steps; ``--json`` keeps the rows.  Any problem of the stiff set or
of a hold-out set (``stiff_holdout.any_problem``) and any adaptive method.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import odenet
from odenet import problems as P

sys.path.insert(0, str(Path(__file__).parent))
from stiff_holdout import any_problem  # the sibling benchmark's registry

REFERENCE_RTOL = 1e-12


def _with_end_jacobian(adjust) -> None:
    """Replace Radau IIA's estimate by ``adjust(self, err, J₁, rhs, hy, y)``, with ``J₁``
    the Jacobian at the step's end and ``rhs`` the raw estimate the filter solves for:
    the experiments below (a full Jacobian per step attempt, one f-evaluation in the
    stats, no ``njev``; dense Jacobians and odd stage counts only)."""
    from odenet import _radau
    from odenet._jacobian import batched_jacobian

    plain = _radau.RadauIIA._error

    def error(self, g, s, y, hy, f0, Z, lu, retry, y1):
        err, refiltered = plain(self, g, s, y, hy, f0, Z, lu, retry, y1)
        J1 = batched_jacobian(g, s + hy, y1.detach())
        rhs = f0 + _radau._mix(self.E, Z) / hy[:, None]
        return adjust(self, err, J1, rhs, hy, y), refiltered

    _radau.RadauIIA._error = error


def filter_also_at_the_end() -> None:
    """An experiment, not the library's rule: Radau IIA's estimate also filtered through
    the Jacobian at the step's end, ``(I − hγ₀J(t₁, y₁))⁻¹(…)``, the larger of the two
    per component (a step that leaves a region where a mode is stiff, such as a
    stick-to-slip fold, is filtered by a start-of-step ``J`` that damps that mode's
    error)."""
    from odenet._jacobian import lu_shifted

    def adjust(self, err, J1, rhs, hy, y):
        e1 = lu_shifted(J1, self.k.mu_real / hy).solve(rhs) * self.error_safety
        return torch.where(e1.abs() > err.abs(), e1, err)

    _with_end_jacobian(adjust)


def reject_on_stiffness_loss(limit: float) -> None:
    """An experiment (session 41; the library's own test since session 42 is
    ``RadauIIA._stiffness_lost``, which reads ``J₁`` along the raw estimate and runs
    underneath this one): a Radau IIA step is rejected (its estimate
    raised to 10 units) where the filter at its end would damp some component more than
    ``limit`` times less than the filter at its start, ``|1 − hγ₀J₀ᵢᵢ| > limit·|1 −
    hγ₀J₁ᵢᵢ|`` with ``J₁`` the Jacobian at the step's end: a step across which a mode
    loses its stiffness (a stick-to-slip fold) is not filtered by a ``J`` that no longer
    holds."""

    def adjust(self, err, J1, rhs, hy, y):
        hg = (hy / self.k.mu_real)[:, None]
        damping = [
            (1 - hg * torch.diagonal(J, dim1=-2, dim2=-1)).abs() for J in (self.newton.J, J1)
        ]
        lost = (damping[0] / damping[1]).amax(dim=1) > limit
        ten = 10 * (self.newton.atol + self.newton.rtol * y.abs())
        return torch.where(lost[:, None], torch.maximum(err.abs(), ten), err)

    _with_end_jacobian(adjust)


def accepted_steps(prob, method: str, rtol: float, floors, max_steps: int):
    """Solve as the sweeps do; returns ``(sol, [(t0, h, y0 [n], y1 [n])])``, or
    ``(None, [])`` where a typed error was raised."""
    starts = []

    def record(kind, t, y, dt):
        if kind == "accept":
            starts.append((float(t), float(dt), y.detach().reshape(-1).numpy().copy()))

    atol = torch.as_tensor(floors * rtol) if isinstance(floors, np.ndarray) else floors * rtol
    span = torch.tensor(prob.span, dtype=torch.float64)
    try:
        sol = odenet.solve(
            prob.f, prob.y0_tensor(), span, method=method, rtol=rtol, atol=atol,
            max_steps=max_steps, throw=False, callback=record,
        )  # fmt: skip
    except odenet.OdenetError:
        return None, []
    ends = [s[2] for s in starts[1:]] + [sol.ys[-1].detach().reshape(-1).numpy()]
    return sol, [(t, h, y0, y1) for (t, h, y0), y1 in zip(starts, ends)]


def true_local_units(fn, steps, rtol: float, floors) -> np.ndarray:
    """The true local error of each step in tolerance units (RMS over components)."""
    atol = np.broadcast_to(np.asarray(floors, dtype=float) * rtol, steps[0][2].shape)
    ref_atol = np.asarray(floors, dtype=float) * REFERENCE_RTOL
    out = np.empty(len(steps))
    for i, (t, h, y0, y1) in enumerate(steps):
        ref = solve_ivp(fn, (t, t + h), y0, method="Radau", rtol=REFERENCE_RTOL, atol=ref_atol)
        exact = ref.y[:, -1]
        scale = atol + rtol * np.maximum(np.abs(y0), np.abs(y1))
        out[i] = math.sqrt(float(np.mean(((y1 - exact) / scale) ** 2)))
    return out


def audit(name: str, method: str, rtol: float, max_steps: int, worst: int) -> dict:
    prob, floors = any_problem(name)
    sol, steps = accepted_steps(prob, method, rtol, floors, max_steps)
    row = dict(problem=name, method=method, rtol=rtol)
    if sol is None or not bool(sol.success) or not steps:
        row["status"] = "error" if sol is None else f"status {int(sol.status.flatten()[0])}"
        return row
    units = true_local_units(prob.numpy_field(), steps, rtol, floors)
    k = int(np.argmax(units))
    order = np.argsort(-units)[:worst]
    row.update(
        status="ok",
        end_units=P.stiff_error(prob, sol.ys[-1], floors) / rtol,
        accepted=len(steps),
        nfe=int(sol.stats["nfe"]),
        above_1=int((units > 1).sum()),
        above_10=int((units > 10).sum()),
        worst_units=float(units[k]),
        worst_t=steps[k][0],
        worst_h=steps[k][1],
        worst_steps=[dict(t=steps[i][0], h=steps[i][1], units=float(units[i])) for i in order],
    )
    return row


def line(r: dict) -> str:
    head = f"| {r['problem']} | {r['method']} | {r['rtol']:.4g} | {r['status']} |"
    if r["status"] != "ok":
        return head + " – | – | – | – | – | – |"
    return (
        head + f" {r['end_units']:.3g} | {r['accepted']} | {r['nfe']} | {r['above_1']} | "
        f"{r['above_10']} | "
        f"{r['worst_units']:.3g} at t = {r['worst_t']:.6g} (h = {r['worst_h']:.3g}) |"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", required=True, help="comma-separated problem names")
    ap.add_argument("--methods", default="radau_iia5")
    ap.add_argument("--rtols", default="1e-3,1e-6")
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument("--worst", type=int, default=0, help="also list the N worst steps")
    ap.add_argument("--json", type=Path, help="append the rows (JSON lines)")
    ap.add_argument(
        "--filter-at-end",
        action="store_true",
        help="radau_iia5 (odd stage counts): the experiment filter_also_at_the_end",
    )
    ap.add_argument(
        "--reject-on-stiffness-loss",
        type=float,
        metavar="LIMIT",
        help="radau_iia5 (odd stage counts): the experiment reject_on_stiffness_loss",
    )
    a = ap.parse_args(argv)
    if a.filter_at_end:
        filter_also_at_the_end()
    if a.reject_on_stiffness_loss:
        reject_on_stiffness_loss(a.reject_on_stiffness_loss)
    np.seterr(all="ignore")
    print("| problem | method | rtol | status | end error / rtol | accepted steps | nfe | "
          "> 1 unit | > 10 units | worst true local error (units) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in a.problems.split(","):
        for m in a.methods.split(","):
            for r in (float(x) for x in a.rtols.split(",")):
                row = audit(name, m, r, a.max_steps, a.worst)
                print(line(row), flush=True)
                for w in row.get("worst_steps", []):
                    print(f"|   | step at t = {w['t']:.6g}, h = {w['h']:.3g}: "
                          f"{w['units']:.3g} units | | | | | | | | |")  # fmt: skip
                if a.json:
                    with a.json.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
