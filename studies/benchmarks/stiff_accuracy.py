"""The stiff accuracy must-hold of issue 14, measured cell by cell.

"On every stiff problem and every rtol in 1e-3 … 1e-8, each stiff method either
reaches an error within 10× of scipy Radau's at the same rtol, or fails with a status
or typed error — never status ok with an error above 100 × rtol; every solve ends in
a bounded number of steps."

For each (problem, rtol) scipy's Radau runs first, then every implicit adaptive
method (``stiff_methods()``: the DIRK/ESDIRK pairs, Radau IIA, bdf and ndf), interleaved,
with ``atol = problem.atol_ratio · rtol`` and the error of
:func:`odenet.problems.stiff_error` at the final time (relative above the problem's
``atol_ratio``, absolute below) against the rtol-1e-13 reference.  Each odenet solve
gets a step budget, ``max_steps = max(--min-steps, --budget × scipy Radau's steps)``,
and a wall-time limit (``--timeout``; a solve past it is recorded ``timeout``, a
limit of this script on a slow machine, not a verdict on the method).

Verdict per cell:

* ``pass``   status ok and error ≤ 10 × scipy Radau's;
* ``fail``   the solver reported a failure (a status or a typed error): honest;
* ``LOOSE``  status ok, error ≤ 100·rtol but above 10 × Radau's (misses the target);
* ``SILENT`` status ok with an error above 100·rtol (the must-not-happen).

    python studies/benchmarks/stiff_accuracy.py                    # everything
    python studies/benchmarks/stiff_accuracy.py --problems hires --rtols 1e-3,1e-6

Each finished cell is appended to ``results/stiff_accuracy.jsonl`` (a rerun skips the
cells already there unless ``--fresh``); the table is printed as markdown (the
committed ``stiff_accuracy_results.md`` is one such run).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from stiff import run_odenet, run_scipy

from odenet import problems as P

RTOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
OUT = Path(__file__).parent / "results" / "stiff_accuracy.jsonl"


def stiff_methods() -> list[str]:
    """Every implicit method odenet can run adaptively: the one-step tableaus and the
    methods with memory (bdf, ndf)."""
    from odenet._registry import method, method_names

    return [m for m in method_names() if method(m).is_implicit and method(m).is_adaptive]


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def time_limited(limit, run, *args, **kwargs) -> dict:
    """``run(*args, **kwargs)`` (a cell runner returning a dict) under a wall-time limit
    of ``limit`` seconds (SIGALRM: a benchmark on Unix; 0 or None: no limit).  A run past
    it returns ``{"status": "timeout", "err": nan, "wall": limit}``: a limit of the script
    on its machine, not a verdict on the solver."""
    if not limit:
        return run(*args, **kwargs)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return run(*args, **kwargs)
    except _Timeout:
        return {"status": "timeout", "err": math.nan, "wall": limit}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def timed_odenet(prob, method, rtol, max_steps, limit):
    """stiff.run_odenet under a wall-time limit (:func:`time_limited`)."""
    return time_limited(limit, run_odenet, prob, method, rtol, prob.atol_ratio, max_steps)


def verdict(r: dict, radau_err: float, rtol: float) -> str:
    if r["status"] == "timeout":
        return "timeout"
    if r["status"] != "ok":
        return "fail"
    if r["err"] > 100 * rtol:
        return "SILENT"
    if r["err"] > 10 * radau_err:
        return "LOOSE"
    return "pass"


def _ratio(r: dict) -> float:
    """Error over scipy Radau's; Radau exact to the last bit (error 0) gives inf."""
    if r["status"] != "ok":
        return math.nan
    if r["radau_err"] == 0:
        return 1.0 if r["err"] == 0 else math.inf
    return r["err"] / r["radau_err"]


def table(rows: list[dict], before: dict | None = None) -> str:
    """Markdown table of the cells; with ``before`` (cells of an earlier run, keyed as
    ``(problem, rtol, method)``) two more columns: that run's verdict / ratio and nfe."""
    extra = " | before: verdict, ratio | before: nfe" if before is not None else ""
    out = [
        "| problem | rtol | method | verdict | error | Radau error | ratio | steps (budget) "
        f"| nfe | wall s{extra} |",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if before is not None else ""),
    ]
    for r in rows:
        steps = r.get("steps", "-")
        line = (
            f"| {r['problem']} | {r['rtol']:.0e} | {r['method']} | {r['verdict']} "
            f"| {r['err']:.2e} | {r['radau_err']:.2e} | {_ratio(r):.2g} | {steps} ({r['budget']}) "
            f"| {r.get('nfe', '-')} | {r['wall']:.2f}"
        )
        if before is not None:
            b = before.get((r["problem"], r["rtol"], r["method"]))
            line += (
                " | - | -"
                if b is None
                else f" | {b['verdict']}, {_ratio(b):.2g} | {b.get('nfe', '-')}"
            )
        out.append(line + " |")
    return "\n".join(out)


def read_cells(path: Path) -> dict:
    """The cells of a ``--out`` file, keyed ``(problem, rtol, method)`` (last one wins)."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done[(r["problem"], r["rtol"], r["method"])] = r
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sweep_options(ap, list(P.STIFF_SUITE), stiff_methods(), timeout=300.0, out=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    return sweep(args, P.get_problem, args.problems.split(","))


def sweep_options(ap, problems, methods, timeout: float, out: Path, rtols=RTOLS) -> None:
    """The options :func:`sweep` reads, added to the parser ``ap`` with these defaults
    (this script's and ``stiff_holdout.py``'s differ only there)."""
    ap.add_argument("--problems", default=",".join(problems))
    ap.add_argument("--rtols", default=",".join(f"{r:.0e}" for r in rtols))
    ap.add_argument("--methods", default=",".join(methods))
    ap.add_argument("--budget", type=float, default=20.0, help="steps per scipy Radau step")
    ap.add_argument("--min-steps", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=timeout, help="seconds per odenet solve")
    ap.add_argument("--out", default=str(out))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--report", action="store_true", help="only print the cells in --out")
    ap.add_argument("--before", help="a --out file of an earlier run to compare with (report)")
    ap.add_argument(
        "--redo",
        metavar="VERDICTS",
        help="only the cells of --redo-from with one of these verdicts (e.g. timeout), "
        "computed again into --out",
    )
    ap.add_argument("--redo-from", help="the earlier run --redo reads (default: --out)")


def cells_to_redo(args) -> set | None:
    """The ``(problem, rtol, method)`` keys ``--redo`` selects, or None without it."""
    if not getattr(args, "redo", None):
        return None
    wanted = set(args.redo.split(","))
    source = read_cells(Path(args.redo_from or args.out))
    return {k for k, r in source.items() if r["verdict"] in wanted}


def sweep(args, get_problem, names: list[str]) -> int:
    """The cells of ``names`` × ``args.rtols`` × ``args.methods`` (scipy Radau first in
    each (problem, rtol), then each odenet method under its step budget and time limit),
    appended to ``args.out`` as they finish; prints the table.  ``args``: this script's
    options (``stiff_holdout.py`` has the same); ``get_problem(name) -> Problem``.
    Returns 1 if a cell is LOOSE or SILENT."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and out.exists():
        out.unlink()
    redo = cells_to_redo(args)
    done = read_cells(out)
    if redo is not None and not args.redo_from:
        # redone in place: the old verdicts are what selects the cells, not a result
        done = {k: r for k, r in done.items() if k not in redo}
    if args.report:
        rows = list(done.values())
        print(table(rows, read_cells(Path(args.before)) if args.before else None))
        print(summary(rows))
        return 0
    rows = []
    for name in names:
        prob = get_problem(name)
        prob.solution([prob.span[1]])  # the reference (cached) is not part of any timing
        for rtol in (float(x) for x in args.rtols.split(",")):
            cells = [(name, rtol, m) for m in args.methods.split(",")]
            if redo is not None:
                cells = [k for k in cells if k in redo]
            todo = [k[2] for k in cells if k not in done]
            if todo:
                radau = run_scipy(prob, "Radau", rtol, prob.atol_ratio)
                budget = max(args.min_steps, int(args.budget * radau["steps"]))
            for m in todo:
                t0 = time.perf_counter()
                r = timed_odenet(prob, m, rtol, budget, args.timeout)
                r.setdefault("wall", time.perf_counter() - t0)
                r.update(
                    problem=name,
                    rtol=rtol,
                    method=m,
                    budget=budget,
                    radau_err=radau["err"],
                    radau_steps=radau["steps"],
                    verdict=verdict(r, radau["err"], rtol),
                )
                r.setdefault("err", math.nan)
                done[(name, rtol, m)] = r
                with out.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
                print(
                    f"{name:24s} {rtol:.0e} {m:11s} {r['verdict']:7s} err {r['err']:.2e} "
                    f"(Radau {radau['err']:.2e}) steps {r.get('steps', '-')}/{budget} "
                    f"{r['wall']:.1f} s",
                    flush=True,
                )
            rows += [done[k] for k in cells]
    print()
    print(table(rows))
    print(summary(rows))
    return 1 if any(r["verdict"] in ("SILENT", "LOOSE") for r in rows) else 0


def summary(rows: list[dict]) -> str:
    counts = ", ".join(
        f"{v} {sum(r['verdict'] == v for r in rows)}"
        for v in ("pass", "fail", "LOOSE", "SILENT", "timeout")
    )
    return f"\n{len(rows)} cells: {counts}"


if __name__ == "__main__":
    sys.exit(main())
