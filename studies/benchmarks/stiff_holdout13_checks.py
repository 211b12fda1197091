"""Two checks behind ``stiff_holdout13_results.md`` that vary a problem of the set:

``eps``       Jin–Xin's relaxation time ε from 1e-3 to 1e-10: radau_iia5 against scipy's
              Radau at each rtol (f-evaluations without odenet's Jacobian calls, rejected
              steps, end errors in units of rtol against scipy Radau at rtol 1e-11).  Is
              the stiffness-loss confirmation (``RadauIIA._mode_lost_stiffness``) right
              for every ε, not only the set's 1e-6?
``stimulus``  Beeler–Reuter with the stimulus at [10, 11) ms, after rest: each method as
              given, with ``jump_t=[10, 11]`` and with ``max_step=1``; end errors in
              units of rtol against scipy Radau at rtol 1e-11.  A pulse no stage samples
              is stepped over with status ok; told where it is, every method sees it.

    OMP_NUM_THREADS=1 python studies/benchmarks/stiff_holdout13_checks.py eps
    OMP_NUM_THREADS=1 python studies/benchmarks/stiff_holdout13_checks.py stimulus
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import odenet

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout13 as H
from stiff_holdout2 import _twin_xp


def _units(y, ref, floors, rtol) -> float:
    return float(np.max(np.abs(np.asarray(y) - ref) / (floors + np.abs(ref))) / rtol)


def eps_sweep(epss, rtols) -> list[str]:
    lines = ["| ε | rtol | odenet nfe | scipy nfe | ratio | rejected | error o/s (units of rtol) |"]
    lines.append("|---|---|---|---|---|---|---|")
    y0 = H.jin_xin_initial()
    span = (0.0, 0.6)
    for eps in epss:
        f, f_numpy = _twin_xp(H.jin_xin_rates(eps))
        ref = solve_ivp(f_numpy, span, y0, method="Radau", rtol=1e-11, atol=1e-14).y[:, -1]
        for rtol in rtols:
            sol = odenet.solve(
                f,
                torch.tensor(y0),
                torch.tensor(span, dtype=torch.float64),
                method="radau_iia5",
                rtol=rtol,
                atol=1e-3 * rtol,
                throw=False,
            )
            r = solve_ivp(f_numpy, span, y0, method="Radau", rtol=rtol, atol=1e-3 * rtol)
            own = int(sol.stats["nfe"]) - int(sol.stats["njev"])
            lines.append(
                f"| {eps:.0e} | {rtol:.0e} | {own} | {r.nfev} | {own / r.nfev:.2f} | "
                f"{int(sol.stats['rejected'])} | {_units(sol.ys[-1].numpy(), ref, 1e-3, rtol):.3g}"
                f" / {_units(r.y[:, -1], ref, 1e-3, rtol):.3g} |"
            )
    return lines


def stimulus(methods, rtols, on=(10.0, 11.0)) -> list[str]:
    f, f_numpy = _twin_xp(H.beeler_reuter_rates(on))
    y0, span, floors = np.array(H.BR_REST), (0.0, 400.0), H.BR_FLOORS
    ref = solve_ivp(f_numpy, span, y0, method="Radau", rtol=1e-11, atol=floors * 1e-9).y[:, -1]
    options = {
        "as given": {},
        f"jump_t={list(on)}": {"jump_t": torch.tensor(on, dtype=torch.float64)},
        "max_step=1": {"max_step": 1.0},
    }
    lines = ["| method | rtol | " + " | ".join(options) + " |"]
    lines.append("|---|---|" + "---|" * len(options))
    for method in methods:
        for rtol in rtols:
            cells = []
            for kw in options.values():
                sol = odenet.solve(
                    f,
                    torch.tensor(y0),
                    torch.tensor(span, dtype=torch.float64),
                    method=method,
                    rtol=rtol,
                    atol=torch.as_tensor(floors * rtol),
                    max_steps=100_000,
                    throw=False,
                    **kw,
                )
                status = "ok" if bool(sol.success) else f"status {int(sol.status.flatten()[0])}"
                units = _units(sol.ys[-1].numpy(), ref, floors, rtol)
                cells.append(f"{units:.3g}·rtol, {status} ({int(sol.stats['nfe'])} f)")
            lines.append(f"| {method} | {rtol:.0e} | " + " | ".join(cells) + " |")
    lines.append("")
    r = solve_ivp(f_numpy, span, y0, method="Radau", rtol=1e-3, atol=floors * 1e-3)
    lines.append(
        f"scipy Radau at rtol 1e-3, as given: {_units(r.y[:, -1], ref, floors, 1e-3):.3g}·rtol "
        f"({r.nfev} f)"
    )
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="check", required=True)
    e = sub.add_parser("eps")
    e.add_argument("--eps", default="1e-3,1e-4,1e-8,1e-10")
    e.add_argument("--rtols", default="1e-3,1e-4,1e-6")
    s = sub.add_parser("stimulus")
    s.add_argument("--methods", default="radau_iia5,kvaerno5,bdf")
    s.add_argument("--rtols", default="1e-3,1e-5")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    floats = lambda text: [float(x) for x in text.split(",")]  # noqa: E731
    if args.check == "eps":
        lines = eps_sweep(floats(args.eps), floats(args.rtols))
    else:
        lines = stimulus(args.methods.split(","), floats(args.rtols))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
