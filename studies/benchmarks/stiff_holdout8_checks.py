"""Follow-ups of the eighth stiff hold-out set (``stiff_holdout8_results.md``), as
commands: the rectifier's stepped-over crests with and without ``max_step``; the end
error of a few methods on one problem over a scan of rtols, scipy Radau beside them;
and bdf/ndf's (or other methods') counts on every problem of the stiff set and the
hold-out sets, to compare two checkouts of the library cell by cell.

    python studies/benchmarks/stiff_holdout8_checks.py max-step
    python studies/benchmarks/stiff_holdout8_checks.py scan --problem hertz_bounce \
        --methods radau_iia5,radau_iia9,kvaerno5,bdf --rtols 1e-4,3e-5,1e-5,3e-6,1e-6,3e-7,1e-7
    python studies/benchmarks/stiff_holdout8_checks.py bdf-counts --out after.jsonl
    PYTHONPATH=/path/to/an/older/checkout python studies/benchmarks/stiff_holdout8_checks.py \
        bdf-counts --out before.jsonl
    python studies/benchmarks/stiff_holdout8_checks.py bdf-compare before.jsonl after.jsonl
    python studies/benchmarks/stiff_holdout8_checks.py bdf-counts --out after.jsonl \
        --methods kvaerno5,sdirk4,kvaerno3,trbdf2 --rtols 1e-3,1e-5 --limit 20
    python studies/benchmarks/stiff_holdout8_checks.py bdf-compare before.jsonl after.jsonl \
        --same-path
    python studies/benchmarks/stiff_holdout8_checks.py bdf-verdicts after.jsonl \
        --radau radau_errors.jsonl
    python studies/benchmarks/stiff_holdout8_checks.py jitter --problem stiff_pendulum \
        --rtol 1e-6 --spread 0.01 --points 11

Errors are the hold-out sweep's (``stiff_holdout.mixed_error`` at the end, atol =
floors·rtol), printed as multiples of rtol.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout8  # noqa: F401  (registers the set's problems)
from stiff import run_odenet, run_scipy
from stiff_accuracy import verdict
from stiff_holdout import HOLDOUT, any_problem, get, mixed_error, scipy_end

from odenet import problems as P

MAX_STEP_METHODS = "kvaerno5,radau_iia3,radau_iia5,radau_iia9"
VERDICTS = ("pass", "fail", "LOOSE", "SILENT", "timeout")  # stiff_accuracy.verdict's


def _end(p):
    return p.solution([p.span[1]])[0]


def max_step(methods: str, rtols: list[float], limit: float) -> None:
    """Each method on ``rectifier`` as swept and with ``max_step=limit`` (s): status,
    end error, f-evaluations; scipy Radau with the same ``max_step``."""
    p = get("rectifier")
    ref = _end(p)
    print(f"| rtol | method | plain: error (nfe) | max_step={limit:g}: error (nfe) |")
    print("|---|---|---|---|")
    for rtol in rtols:
        s = mixed_error(p, scipy_end(p, rtol, max_step=limit), ref)
        print(f"| {rtol:.0e} | scipy Radau | - | {s:.2e} |")
        for m in methods.split(","):
            cells = [
                run_odenet(p, m, rtol, p.atol_ratio, max_steps=20000, **kw)
                for kw in ({}, {"max_step": limit})
            ]
            shown = [
                f"{c['err']:.2e} ({c['nfe']})" if c["status"] == "ok" else c["status"]
                for c in cells
            ]
            print(f"| {rtol:.0e} | {m} | {shown[0]} | {shown[1]} |", flush=True)


def scan(problem: str, methods: str, rtols: list[float]) -> None:
    """End error / rtol of each method on ``problem`` at each rtol, scipy Radau first."""
    p = get(problem)
    ref = _end(p)
    names = methods.split(",")
    print("| rtol | scipy Radau | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for rtol in rtols:
        row = [f"{mixed_error(p, scipy_end(p, rtol), ref) / rtol:.3g}"]
        for m in names:
            c = run_odenet(p, m, rtol, p.atol_ratio, max_steps=100000)
            row.append(f"{c['err'] / rtol:.3g}" if c["status"] == "ok" else c["status"])
        print(f"| {rtol:.0e} | " + " | ".join(row) + " |", flush=True)


def jitter(problem: str, method: str, rtol: float, spread: float, points: int) -> None:
    """Counts (Jacobians, f-evaluations) of ``method`` and scipy Radau at ``points`` rtols
    spread evenly over ``rtol·(1 ± spread)`` (one point: ``rtol`` itself): how much a
    count moves under a perturbation far below any tolerance, on either side.  scipy's
    count also moves with the number of BLAS threads: run ``--points 1`` with and
    without ``OMP_NUM_THREADS=1`` to see it."""
    p, floors = any_problem(problem)
    ours, theirs = [], []
    print(f"| rtol | {method} njev | nfe | scipy Radau njev | nfe |")
    print("|---|---|---|---|---|")
    for i in range(points):
        offset = 0.0 if points == 1 else 2 * i / (points - 1) - 1
        r = rtol * (1 + spread * offset)
        c = run_odenet(p, method, r, floors, max_steps=100000)
        sc = run_scipy(p, "Radau", r, floors)
        ours.append((c["njev"], c["nfe"]))
        theirs.append((sc["njev"], sc["nfe"]))
        print(f"| {r:.4g} | {c['njev']} | {c['nfe']} | {sc['njev']} | {sc['nfe']} |", flush=True)

    def spread_of(rows, j):
        v = sorted(x[j] for x in rows)
        return f"{v[0]} / {v[len(v) // 2]} / {v[-1]}"

    print(f"\nmin / median / max: {method} njev {spread_of(ours, 0)}, nfe {spread_of(ours, 1)}; "
          f"scipy Radau njev {spread_of(theirs, 0)}, nfe {spread_of(theirs, 1)}")  # fmt: skip


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def bdf_counts(out: str, rtols: list[float], limit: float, methods=("bdf", "ndf")) -> None:
    """``methods`` (bdf and ndf unless told) on every problem of the stiff set and of
    every hold-out set at each rtol (the sweep's atol = floors·rtol): status, end error
    and counts per cell, one JSON line each in ``out``; a cell past ``limit`` seconds is
    ``timeout``."""
    any_problem("tmdd")  # imports every hold-out set, which registers its problems
    old = signal.signal(signal.SIGALRM, _alarm)
    with open(out, "w") as fh:
        for name in sorted(P.STIFF_SUITE) + sorted(HOLDOUT):
            p, floors = any_problem(name)
            # the reference outside the cells' time, as stiff_accuracy.sweep does: built on
            # first use, it took medakzo's first cell (scipy Radau, 14234 steps) past 20 s
            p.solution([p.span[1]])
            for m in methods:
                for rtol in rtols:
                    t0 = time.perf_counter()
                    signal.setitimer(signal.ITIMER_REAL, limit)
                    try:
                        r = run_odenet(p, m, rtol, floors, max_steps=50000)
                        keys = ("status", "err", "nfe", "njev", "nlu", "steps")
                        row = {k: r.get(k) for k in keys}
                    except _Timeout:
                        row = {"status": "timeout"}
                    finally:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                    row.update(problem=name, method=m, rtol=rtol, wall=time.perf_counter() - t0)
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
    signal.signal(signal.SIGALRM, old)


def bdf_compare(before: str, after: str, same_path: bool = False) -> None:
    """The cells of two :func:`bdf_counts` files: status changes, the cells whose
    f-evaluations or Jacobians changed, and the sum of f-evaluations over the cells ok
    in both.  ``same_path``: for a change meant to keep every step, the cells whose
    steps, Jacobians or end error changed instead (f-evaluations may differ)."""

    def load(path):
        return {(r["problem"], r["method"], r["rtol"]): r for r in map(json.loads, open(path))}

    a, b = load(before), load(after)
    if same_path and any("steps" not in r for r in [*a.values(), *b.values()] if "nfe" in r):
        # files from before bdf-counts recorded steps would all read "the same path"
        raise SystemExit("--same-path needs the steps of every cell: rerun bdf-counts")
    same, nfe = 0, [0, 0]
    print("| problem | method | rtol | status | nfe | njev | error |")
    print("|---|---|---|---|---|---|---|")
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if x["status"] != "ok" or y["status"] != "ok":
            if x["status"] != y["status"]:
                print(f"| {k[0]} | {k[1]} | {k[2]:.0e} | {x['status']} → {y['status']} | | | |")
            continue
        nfe[0] += x["nfe"]
        nfe[1] += y["nfe"]
        fields = ("steps", "njev", "err") if same_path else ("nfe", "njev")
        if all(x.get(f) == y.get(f) for f in fields):
            same += 1
            continue
        print(
            f"| {k[0]} | {k[1]} | {k[2]:.0e} | ok | {x['nfe']} → {y['nfe']} | "
            f"{x['njev']} → {y['njev']} | {x['err']:.2e} → {y['err']:.2e} |"
        )
    ratio = nfe[1] / max(nfe[0], 1)
    print(f"\n{len(set(a) & set(b))} cells; {same} ok in both with the same counts; "
          f"Σ nfe over the cells ok in both, after / before: {ratio:.4f}")  # fmt: skip
    if same_path:
        print("(same counts: the same steps, Jacobians and end error)")


def radau_errors(cells: set, path: str, limit: float) -> dict:
    """scipy Radau's end error at each ``(problem, rtol)`` of ``cells``, with the floors of
    :func:`bdf_counts` (atol = floors·rtol): read from the JSON-lines file ``path`` where
    it has them, the rest solved (``limit`` seconds each, else ``timeout``) and appended
    to it.  Returns ``{(problem, rtol): error or nan}``."""
    known = {}
    if Path(path).exists():
        known = {(r["problem"], r["rtol"]): r for r in map(json.loads, open(path))}
    old = signal.signal(signal.SIGALRM, _alarm)
    with open(path, "a") as fh:
        for name, rtol in sorted(cells - set(known)):
            p, floors = any_problem(name)
            p.solution([p.span[1]])  # the reference outside the limit, as bdf_counts
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                row = run_scipy(p, "Radau", rtol, floors)
            except _Timeout:
                row = {"status": "timeout"}
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            row.update(problem=name, rtol=rtol)
            known[(name, rtol)] = row
            fh.write(json.dumps(row, default=float) + "\n")
            fh.flush()
    signal.signal(signal.SIGALRM, old)
    return {k: r["err"] if r["status"] == "ok" else math.nan for k, r in known.items()}


def bdf_verdicts(paths: list[str], radau_path: str, limit: float) -> None:
    """The hold-out sweep's verdicts (``stiff_accuracy.verdict``: pass, fail, LOOSE,
    SILENT, timeout) of the cells of :func:`bdf_counts` files, against scipy Radau's
    error at the same rtol and floors (:func:`radau_errors`): the LOOSE and SILENT cells,
    then the count of each verdict per method."""
    rows = [r for path in paths for r in map(json.loads, open(path))]
    radau = radau_errors({(r["problem"], r["rtol"]) for r in rows}, radau_path, limit)
    counts = collections.defaultdict(collections.Counter)
    print("| verdict | problem | method | rtol | error / rtol | scipy Radau's / rtol |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["problem"], r["method"], r["rtol"])):
        ref = radau[(r["problem"], r["rtol"])]
        v = verdict({"err": math.nan, **r}, ref, r["rtol"])
        counts[r["method"]][v] += 1
        if v in ("LOOSE", "SILENT"):
            print(f"| {v} | {r['problem']} | {r['method']} | {r['rtol']:.0e} | "
                  f"{r['err'] / r['rtol']:.3g} | {ref / r['rtol']:.3g} |")  # fmt: skip
    print("\n| method | pass | fail | LOOSE | SILENT | timeout |\n|---|---|---|---|---|---|")
    for m, c in sorted(counts.items()):
        print(f"| {m} | " + " | ".join(str(c[v]) for v in VERDICTS) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("max-step", help="the rectifier with and without max_step")
    a.add_argument("--methods", default=MAX_STEP_METHODS)
    a.add_argument("--rtols", default="1e-3,1e-5,1e-7")
    a.add_argument("--limit", type=float, default=1e-3, help="max_step (s)")
    b = sub.add_parser("scan", help="end error / rtol over a scan of rtols")
    b.add_argument("--problem", default="hertz_bounce")
    b.add_argument("--methods", default="radau_iia5,radau_iia9,kvaerno5,bdf")
    b.add_argument("--rtols", default="1e-4,3e-5,1e-5,3e-6,1e-6,3e-7,1e-7")
    j = sub.add_parser("jitter", help="counts over rtols a fraction of a percent apart")
    j.add_argument("--problem", default="stiff_pendulum")
    j.add_argument("--method", default="radau_iia5")
    j.add_argument("--rtol", type=float, default=1e-6)
    j.add_argument("--spread", type=float, default=0.01, help="relative half-width")
    j.add_argument("--points", type=int, default=11)
    c = sub.add_parser("bdf-counts", help="bdf/ndf counts per cell, to compare checkouts")
    c.add_argument("--out", required=True)
    c.add_argument("--methods", default="bdf,ndf")
    c.add_argument("--rtols", default="1e-3,1e-5,1e-7")
    c.add_argument("--limit", type=float, default=30.0, help="seconds per cell")
    d = sub.add_parser("bdf-compare", help="two bdf-counts files, cell by cell")
    d.add_argument("before")
    d.add_argument("after")
    d.add_argument("--same-path", action="store_true", help="compare steps, not nfe")
    v = sub.add_parser("bdf-verdicts", help="verdicts of bdf-counts files against scipy")
    v.add_argument("files", nargs="+")
    v.add_argument("--radau", required=True, help="scipy Radau's errors (JSON lines, cache)")
    v.add_argument("--limit", type=float, default=90.0, help="seconds per scipy solve")
    args = ap.parse_args(argv)
    # scipy's and odenet's trial steps overflow the rectifier's diode: rejected, not wrong
    warnings.filterwarnings("ignore", "overflow encountered")
    if args.mode == "bdf-compare":
        bdf_compare(args.before, args.after, args.same_path)
        return 0
    if args.mode == "bdf-verdicts":
        bdf_verdicts(args.files, args.radau, args.limit)
        return 0
    if args.mode == "jitter":
        jitter(args.problem, args.method, args.rtol, args.spread, args.points)
        return 0
    rtols = [float(r) for r in args.rtols.split(",")]
    if args.mode == "max-step":
        max_step(args.methods, rtols, args.limit)
    elif args.mode == "scan":
        scan(args.problem, args.methods, rtols)
    else:
        bdf_counts(args.out, rtols, args.limit, args.methods.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
