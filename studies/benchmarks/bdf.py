"""Variable-order BDF/NDF: odenet's ``ndf`` (and ``bdf``) against scipy's ``BDF`` at equal error.

The issue's must-hold is "f-evaluations ≤ 1.5× scipy BDF's at equal error".  Both
solvers run interleaved per (problem, rtol) cell on the stiff set of
:data:`odenet.problems.STIFF_SUITE` (``atol = d·rtol``, error at the final time by
:func:`odenet.problems.stiff_error` against the cached reference), so drifting load
hits both alike.  Per problem, each solver's (error, nfe) points over the rtols form
a work–precision curve; the **ratio at equal error** is odenet's work interpolated
(log–log) at the error scipy reached, divided by scipy's, for every scipy point
inside odenet's error range, for each measure of work: nfe, LU factorisations (nlu),
Jacobians (njev) and wall time.  Also printed per cell: the ratios at equal rtol
(nfe, nlu, njev, wall, error) and odenet's error over scipy Radau's (the issue's
"within 10×" criterion).

nfe counts every call of ``f`` on both sides as reported: odenet's includes the one
call each autograd Jacobian makes, scipy's ``nfev`` excludes its finite-difference
Jacobian calls (``njev`` is printed beside it).

    python studies/benchmarks/bdf.py                                  # default run
    python studies/benchmarks/bdf.py --problems robertson_long --rtols 1e-3,1e-5 --scipy-rtols 1e-7
    python studies/benchmarks/bdf.py --nonstiff      # adams vs dopri5 and scipy LSODA
    python studies/benchmarks/bdf.py --problems none --brusselator-2d 32   # jac_sparsity both sides
    python studies/benchmarks/bdf.py --problems detest_d5,pollution --methods bdf,ndf  # hold-outs

A problem of a hold-out set (``stiff_holdout.py`` … ``stiff_holdout15.py``) runs with its
own floors (``atol = floors·rtol``).

Writes ``studies/benchmarks/results/bdf.json``; ``bdf_results.md`` beside this file
is one run's printout.
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

from odenet import problems as P

sys.path.insert(0, str(Path(__file__).parent))
from stiff import ratio_text, run_odenet, run_scipy  # the sibling benchmark's runners
from stiff_accuracy import time_limited
from stiff_holdout import any_problem  # the stiff set's and the hold-out sets' problems

# the work counted on both sides: f-evaluations, LU factorisations, Jacobians, wall time
WORK = ("nfe", "nlu", "njev", "wall")


def at_equal_error(
    ours: list[dict], theirs: list[dict], key: str = "nfe"
) -> list[tuple[float, float]]:
    """``(scipy error, our work / scipy work)`` at each scipy point inside our error
    range, our ``key`` (nfe, nlu, njev, wall) interpolated linearly in ``log err → log
    work``."""
    pts = sorted(
        (math.log(r["err"]), math.log(max(r[key], 1e-12)))
        for r in ours
        if r["status"] == "ok" and r["err"]
    )
    out = []
    if len(pts) < 2:
        return out
    le, ln = np.array(pts).T
    for r in theirs:
        if r["status"] != "ok" or not r["err"]:
            continue
        x = math.log(r["err"])
        if le[0] <= x <= le[-1]:
            out.append((r["err"], math.exp(float(np.interp(x, le, ln))) / max(r[key], 1e-12)))
    return out


def nonstiff(problems, rtols):
    """``adams`` against ``dopri5`` and scipy's LSODA on smooth problems: error at five
    output times (``max |y − ref| / max |ref|``, ``atol = 1e-2·rtol``) and nfe."""
    import odenet

    print("\n### adams on non-stiff problems\n")
    print(
        "| problem | rtol | adams err | nfe | dopri5 err | nfe | LSODA err | nfe | "
        "adams nfe / dopri5 | adams nfe / LSODA |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in problems:
        prob = P.get_problem(name)
        t = torch.linspace(*prob.span, 5, dtype=torch.float64)
        ref = prob.solution(t.numpy())
        scale = np.abs(ref).max()
        for rtol in rtols:
            res = {}
            for m in ("adams", "dopri5"):
                sol = odenet.solve(
                    prob.f, prob.y0_tensor(), t, method=m, rtol=rtol, atol=1e-2 * rtol
                )
                res[m] = (np.abs(sol.ys.numpy() - ref).max() / scale, sol.stats["nfe"])
            r = solve_ivp(
                prob.numpy_field(),
                prob.span,
                prob.y0,
                method="LSODA",
                t_eval=t.numpy(),
                rtol=rtol,
                atol=1e-2 * rtol,
            )
            res["LSODA"] = (np.abs(r.y.T - ref).max() / scale, r.nfev)
            (ea, na), (ed, nd), (el, nl) = res["adams"], res["dopri5"], res["LSODA"]
            print(
                f"| {name} | {rtol:.0e} | {ea:.1e} | {na} | {ed:.1e} | {nd} | {el:.1e} | "
                f"{nl} | {na / nd:.2f} | {na / nl:.2f} |",
                flush=True,
            )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="robertson_long,hires,van_der_pol_relaxation")
    ap.add_argument("--rtols", default="1e-3,1e-4,1e-5,1e-6,1e-7")
    ap.add_argument(
        "--scipy-rtols",
        default="1e-8,1e-9,1e-10",
        help="more rtols for scipy's BDF alone: odenet's error at rtol (its error safety "
        "aims at Radau's global error) is scipy's at a 10-1000x tighter rtol, and the "
        "comparison at equal error needs scipy's curve there",
    )
    ap.add_argument("--methods", default="ndf")
    ap.add_argument("--max-steps", type=int, default=50_000)
    ap.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="wall-time limit per run in seconds (odenet's and scipy's alike; a run past it "
        "is recorded as status timeout; 0: none).  scipy's BDF on DETEST F5 at rtol 1e-9 "
        "had not finished after 8 minutes",
    )
    ap.add_argument(
        "--controller", default=None, help="odenet's controller (default: the method's own)"
    )
    ap.add_argument(
        "--brusselator-2d",
        type=int,
        default=0,
        metavar="N",
        help="add the 2-D Brusselator (2N² states) with jac_sparsity on both sides",
    )
    ap.add_argument("--b2d-t1", type=float, default=1.5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bdf.json"))
    ap.add_argument(
        "--report",
        action="store_true",
        help="no runs: print the equal-error summary of the cells saved in --out",
    )
    ap.add_argument(
        "--nonstiff",
        action="store_true",
        help="instead: adams vs dopri5 and LSODA on kepler, lotka_volterra, van_der_pol",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.report:
        report(json.loads(Path(args.out).read_text()), args.methods.split(","))
        return
    if args.nonstiff:
        nonstiff(["kepler", "lotka_volterra", "van_der_pol"], [1e-4, 1e-7, 1e-10])
        return
    methods = args.methods.split(",")
    rtols = [float(x) for x in args.rtols.split(",")]
    extra = [float(x) for x in args.scipy_rtols.split(",") if x]
    all_rtols = sorted(set(rtols) | set(extra), reverse=True)
    kw = {} if args.controller is None else {"controller": args.controller}
    rows = []
    # (label, problem, floor d, keyword arguments for both sides)
    cases = [(name, *any_problem(name), {}) for name in args.problems.split(",") if name != "none"]
    if args.brusselator_2d:
        N = args.brusselator_2d
        cases.append(
            (
                f"brusselator_2d N={N} t1={args.b2d_t1:g} +sparsity",
                P.get_problem("brusselator_2d", n=N, t1=args.b2d_t1),
                1.0,
                {"jac_sparsity": P.brusselator_2d_sparsity(N)},
            )
        )
    for name, prob, d, sparse in cases:
        prob.solution([prob.span[1]])  # the reference (cached) before any timing
        print(f"\n### {name}\n")
        print(
            "| rtol | solver | status | error | nfe | njev | nlu | steps | "
            "nfe / scipy BDF | nlu / scipy | njev / scipy | wall / scipy | "
            "err / scipy BDF | err / scipy Radau |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for rtol in all_rtols:
            ours = methods if rtol in rtols else []
            cell = {
                m: time_limited(
                    args.timeout, run_odenet, prob, m, rtol, d, args.max_steps, **kw, **sparse
                )
                for m in ours
            }
            cell["scipy BDF"] = time_limited(
                args.timeout, run_scipy, prob, "BDF", rtol, d, **sparse
            )
            radau = time_limited(args.timeout, run_scipy, prob, "Radau", rtol, d, **sparse)
            ref = cell["scipy BDF"]
            for who, r in cell.items():
                r.update(problem=name, rtol=rtol, solver=who)
                rows.append(r)
                if r["status"] != "ok":
                    print(f"| {rtol:.0e} | {who} | {r['status']} |" + " |" * 11)
                    continue
                # scipy's cells may have timed out (no counts, error nan): "-" there
                q = {
                    k: f"{r[k] / max(ref[k], 1e-12):{'.2g' if k == 'wall' else '.2f'}}"
                    if ref["status"] == "ok"
                    else "-"
                    for k in WORK
                }
                vs = [
                    ratio_text(r["err"], x["err"]) if x["status"] == "ok" else "-"
                    for x in (ref, radau)
                ]
                print(
                    f"| {rtol:.0e} | {who} | ok | {r['err']:.2e} | {r['nfe']} | {r['njev']} | "
                    f"{r['nlu']} | {r['steps']} | {q['nfe']} | {q['nlu']} | {q['njev']} | "
                    f"{q['wall']} | {vs[0]} | {vs[1]} |",
                    flush=True,
                )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=float))
    report(rows, methods)


def report(rows: list[dict], methods: list[str]) -> None:
    """The work ratios at equal error per (problem, method): the worst and the median
    over scipy BDF's points inside our error range (``rows``: the cells as saved)."""
    print(
        "\n### work / scipy BDF's at equal error (worst; median over scipy's points inside ours)\n"
    )
    print("| problem | method | scipy errors | " + " | ".join(WORK) + " |")
    print("|---|---|---|" + "---|" * len(WORK))
    for name in dict.fromkeys(r["problem"] for r in rows):
        cells = [r for r in rows if r["problem"] == name]
        theirs = [r for r in cells if r["solver"] == "scipy BDF"]
        for m in methods:
            ours = [r for r in cells if r["solver"] == m]
            eq = {k: at_equal_error(ours, theirs, k) for k in WORK}
            errs = ", ".join(f"{e:.1e}" for e, _ in eq["nfe"]) or "none"
            worst = [
                f"{max(q for _, q in eq[k]):.2f}; {float(np.median([q for _, q in eq[k]])):.2f}"
                if eq[k]
                else "n/a"
                for k in WORK
            ]
            print(f"| {name} | {m} | {errs} | " + " | ".join(worst) + " |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
