"""Three checks behind ``stiff_holdout14_results.md`` and the guide:

``batch``     point kinetics as a per-sample batch of two rows (its initial state and
              0.9 times it; outputs at 0, 6, 20 s; rtol 1e-5) against each row solved
              alone, radau_iia5 and bdf: the largest error over the outputs in units of
              rtol (against scipy Radau at rtol 1e-12) and the accepted steps.  The
              adaptive implicit methods share one Jacobian cache across the batch
              (``docs/guide/solving.md``), so a row's steps can differ from alone.
``newton``    Newton iterations, f-evaluations, Jacobians and rejected steps per step of
              kvaerno5, sdirk4 and radau_iia5 on the set's three problems at rtol 1e-3.
``newton-options``  kvaerno5, sdirk4 and kvaerno3 on the set's three problems at rtol
              1e-3 with the defaults, with ``newton_max_iter=12`` and with a controller
              whose ``newton_factor`` is 0.5 (0.25 by default): f-evaluations, accepted
              and rejected steps, Newton failures and the end error in units of rtol.
``f32steps``  bdf on the ring of Van der Pol oscillators in float32 and float64 at rtol
              1.3e-4 … 2e-3: accepted steps and the end error in units of rtol.  κ's cap
              in float32 holds the per-step tolerance at 100·eps whatever rtol asks.

    OMP_NUM_THREADS=1 python studies/benchmarks/stiff_holdout14_checks.py batch
    OMP_NUM_THREADS=1 python studies/benchmarks/stiff_holdout14_checks.py newton
    OMP_NUM_THREADS=1 python studies/benchmarks/stiff_holdout14_checks.py newton-options
    OMP_NUM_THREADS=1 python studies/benchmarks/stiff_holdout14_checks.py f32steps
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import odenet

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout14 as H
from stiff_holdout import per_sample_field

D = torch.float64


def _units(y, ref, floors, rtol) -> float:
    return float(np.max(np.abs(np.asarray(y) - ref) / (floors + np.abs(ref))) / rtol)


def _atol(p, rtol, dtype=D):
    return torch.as_tensor(np.broadcast_to(p.atol_ratio * rtol, p.y0.shape).copy(), dtype=dtype)


def batch_rows(method: str, rtol: float = 1e-5) -> list[dict]:
    """Point kinetics as a per-sample batch of two rows (its initial state and 0.9 times
    it; outputs at 0, 6, 20 s) and each row alone, against scipy Radau at rtol 1e-12:
    per row the largest error over the outputs in units of ``rtol`` (``batched``,
    ``alone``), the accepted steps (``steps_batched``, ``steps_alone``) and whether the
    batched solve succeeded.  ``tests/test_batching.py`` asserts on these rows."""
    p = H.get("point_kinetics")
    y0 = torch.tensor(p.y0, dtype=D)
    y0 = torch.stack([y0, 0.9 * y0])
    t = torch.tensor([0.0, 6.0, 20.0], dtype=D).repeat(2, 1)
    atol = _atol(p, rtol)
    both = odenet.solve(per_sample_field(p), y0, t, method=method, rtol=rtol, atol=atol)
    rows = []
    for b in range(2):
        ref = solve_ivp(
            p.f_numpy, (0.0, 20.0), y0[b].numpy(), method="Radau", rtol=1e-12,
            atol=p.atol_ratio * 1e-10, t_eval=t[b].numpy(),
        ).y.T  # fmt: skip
        alone = odenet.solve(p.f, y0[b], t[b], method=method, rtol=rtol, atol=atol)
        rows.append({
            "success": bool(both.success),
            "batched": _units(both.ys[b].numpy(), ref, p.atol_ratio, rtol),
            "steps_batched": int(both.stats["accepted"][b]),
            "alone": _units(alone.ys.numpy(), ref, p.atol_ratio, rtol),
            "steps_alone": int(alone.stats["accepted"]),
        })  # fmt: skip
    return rows


def batch(methods=("radau_iia5", "bdf"), rtol=1e-5) -> list[str]:
    lines = ["| method | row | error batched (rtol) | steps batched | error alone | steps alone |"]
    lines.append("|---|---|---|---|---|---|")
    for m in methods:
        for b, r in enumerate(batch_rows(m, rtol)):
            lines.append(
                f"| {m} | {b} | {r['batched']:.3f} | {r['steps_batched']} | "
                f"{r['alone']:.3f} | {r['steps_alone']} |"
            )
    return lines


def newton(methods=("kvaerno5", "sdirk4", "radau_iia5"), rtol=1e-3) -> list[str]:
    lines = ["| problem | method | steps | rejected | Newton it. / step | f / step | Jacobians |"]
    lines.append("|---|---|---|---|---|---|---|")
    for name in H.HOLDOUT14:
        p = H.get(name)
        for m in methods:
            sol = odenet.solve(
                p.f, torch.tensor(p.y0), torch.tensor(p.span, dtype=D), method=m,
                rtol=rtol, atol=_atol(p, rtol), max_steps=100_000,
            )  # fmt: skip
            st = {k: int(v) for k, v in sol.stats.items() if k in (
                "steps", "rejected", "newton_iterations", "nfe", "jacobians")}  # fmt: skip
            lines.append(
                f"| {name} | {m} | {st['steps']} | {st['rejected']} | "
                f"{st['newton_iterations'] / st['steps']:.1f} | {st['nfe'] / st['steps']:.1f} | "
                f"{st['jacobians']} |"
            )
    return lines


def newton_options(methods=("kvaerno5", "sdirk4", "kvaerno3"), rtol=1e-3) -> list[str]:
    variants = {
        "default": {},
        "newton_max_iter=12": {"newton_max_iter": 12},
        "newton_factor=0.5": {"controller": odenet.PIDController.I(newton_factor=0.5)},
    }
    lines = ["| problem | method | variant | nfe | accepted | rejected | Newton failures | "
             "error (rtol) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in H.HOLDOUT14:
        p = H.get(name)
        ref = p.exact([p.span[1]])[0]
        for m in methods:
            for label, kw in variants.items():
                sol = odenet.solve(
                    p.f, torch.tensor(p.y0), torch.tensor(p.span, dtype=D), method=m,
                    rtol=rtol, atol=_atol(p, rtol), max_steps=100_000, **kw,
                )  # fmt: skip
                st = {k: int(v) for k, v in sol.stats.items() if k in (
                    "nfe", "accepted", "rejected", "newton_failures")}  # fmt: skip
                err = _units(sol.ys[-1].numpy(), ref, p.atol_ratio, rtol)
                lines.append(
                    f"| {name} | {m} | {label} | {st['nfe']} | {st['accepted']} | "
                    f"{st['rejected']} | {st['newton_failures']} | {err:.3g} |"
                )
    return lines


def f32steps(rtols=(1.3e-4, 2e-4, 5e-4, 1e-3, 2e-3)) -> list[str]:
    p = H.get("vdp_ring")
    ref = p.exact([p.span[1]])[0]
    lines = ["| rtol | float32 steps | float32 error (rtol) | float64 steps | float64 error |"]
    lines.append("|---|---|---|---|---|")
    for rtol in rtols:
        row = [f"{rtol:g}"]
        for dtype in (torch.float32, D):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", odenet.ToleranceWarning)
                sol = odenet.solve(
                    p.f, torch.tensor(p.y0, dtype=dtype), torch.tensor(p.span, dtype=dtype),
                    method="bdf", rtol=rtol, atol=1e-3 * rtol,
                )  # fmt: skip
            err = _units(sol.ys[-1].double().numpy(), ref, p.atol_ratio, rtol)
            row += [str(int(sol.stats["accepted"])), f"{err:.3g}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    checks = {
        "batch": batch,
        "newton": newton,
        "newton-options": newton_options,
        "f32steps": f32steps,
    }
    ap.add_argument("check", choices=list(checks))
    args = ap.parse_args(argv)
    for line in checks[args.check]():
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
