"""Where the BDF/NDF stability guard acts: the ratio test alone against it with the mode test.

``odenet._bdf._stability_limited`` lowers the order at an order decision where the
differences do not decay (the ratio test) and, since session 38, only where the mode
they carry could lie in the order's lobe (the mode test: its angle from the Jacobian
above the order's A(α), ``h|λ|`` within reach of the lobe).  This script runs ``bdf``
and ``ndf`` on the stiff suite and every hold-out set's problems and counts, at each
order decision of the run, where the ratio test alone would have fired (``old``) and
where the guard fires (``new``).  A cell whose counts agree at every decision took the
same steps as it would without the mode test; the others are the cells to compare
against the parent commit, run with the same script (where ``_stability_limited`` has
no mode test both counts are the ratio test's).

    python studies/benchmarks/bdf_guard_scan.py --out after.jsonl
    PYTHONPATH=<worktree of the parent> python studies/benchmarks/bdf_guard_scan.py \\
        --problems <the changed cells' problems> --out before.jsonl
    python studies/benchmarks/bdf_guard_scan.py --compare after.jsonl before.jsonl

One JSON line per (problem, rtol, method): the counts (``decisions``, ``old``, ``new``),
the modes read where the ratio test fired (``modes``, see :class:`Triggers`), status,
error (the hold-out sweeps' measure, ``stiff.run_odenet``), f-evaluations and steps; a
wall-time limit per cell (``--timeout``; a cell past it is ``timeout``, a limit of this
script).  The files committed under ``results/`` predate ``decisions`` and ``modes``.

    python studies/benchmarks/bdf_guard_scan.py --problems e5 --rtols 1e-3 --methods ndf \
        --out /tmp/e5.jsonl          # the modes E5's decisions read (angles, h|λ|)
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from stiff import run_odenet
from stiff_accuracy import time_limited
from stiff_holdout import HOLDOUT, any_problem

from odenet import _bdf
from odenet import problems as P

OUT = Path(__file__).parent / "results" / "bdf_guard_scan.jsonl"


class Triggers:
    """Counts the order decisions, the ratio test's triggers (``old``) and the guard's
    (``new``), and records the mode the guard read at each ratio-test trigger
    (``modes``: ``[order, angle from the negative real axis (°), h|λ|, lowered]``, from
    ``_bdf.lobe_mode`` as ``BDFRuntime._in_lobe`` reads it).  Instrumentation of
    ``_bdf._stability_limited`` and ``_in_lobe``; the solve is unchanged."""

    def __init__(self):
        self.decisions = self.old = self.new = 0
        self.modes: list = []
        self._orig = _bdf._stability_limited
        self._orig_in_lobe = getattr(_bdf.BDFRuntime, "_in_lobe", None)
        has_mode = "mode" in inspect.signature(self._orig).parameters
        counts = self

        def limited(D, error, scale, order, mode=None):
            old = self._orig(D, error, scale, order)
            new = self._orig(D, error, scale, order, mode) if has_mode else old
            counts.decisions += 1
            counts.old += int(old.sum())
            counts.new += int(new.sum())
            return new

        def in_lobe(rt, v, order, h, scale):
            out = counts._orig_in_lobe(rt, v, order, h, scale)
            if rt.newton.J is not None:
                size, angle = _bdf.lobe_mode(rt.newton.jacobian_product, v, scale)
                for k, a, z, o in zip(order, angle, h * size, out):
                    counts.modes.append([int(k), round(float(a), 1), float(f"{z:.3g}"), bool(o)])
            return out

        self._limited = limited
        self._in_lobe = in_lobe

    def __enter__(self):
        self.decisions = self.old = self.new = 0
        self.modes = []
        _bdf._stability_limited = self._limited
        if self._orig_in_lobe is not None:
            _bdf.BDFRuntime._in_lobe = self._in_lobe
        return self

    def __exit__(self, *exc):
        _bdf._stability_limited = self._orig
        if self._orig_in_lobe is not None:
            _bdf.BDFRuntime._in_lobe = self._orig_in_lobe


def all_problems() -> list[str]:
    for i in range(2, 12):  # importing the further sets registers their problems
        __import__(f"stiff_holdout{i}")
    return list(P.STIFF_SUITE) + sorted(HOLDOUT)


def scan(names, rtols, methods, timeout, out):
    with open(out, "a") as fh:
        for name in names:
            prob, floors = any_problem(name)
            prob.solution([prob.span[1]])  # the reference (cached) before any timing
            for rtol in rtols:
                for method in methods:
                    with Triggers() as t:
                        r = time_limited(timeout, run_odenet, prob, method, rtol, floors, 20000)
                    row = dict(problem=name, rtol=rtol, method=method, old=t.old, new=t.new)
                    row.update({k: r.get(k) for k in ("status", "err", "nfe", "steps")})
                    row.update(decisions=t.decisions, modes=t.modes)
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    print(json.dumps(row), flush=True)


def _load(path) -> dict:
    rows = (json.loads(line) for line in Path(path).read_text().splitlines() if line)
    return {(r["problem"], r["rtol"], r["method"]): r for r in rows}


def compare(after_path, before_path) -> None:
    """The cells the mode test changed, after against before (Markdown)."""
    after, before = _load(after_path), _load(before_path)
    changed = [k for k, r in after.items() if r["old"] != r["new"]]
    print(f"{len(after)} cells; {len(after) - len(changed)} with the guard's decisions "
          f"unchanged; {len(changed)} changed, {sum(k in before for k in changed)} with a "
          "before\n")  # fmt: skip
    ratios, both_ok = [], []
    print("| problem | rtol | method | status before → after | nfe before → after (ratio) "
          "| error/rtol before → after |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for k in sorted(changed):
        if k not in before:
            continue
        a, b = after[k], before[k]
        ok = a["status"] == b["status"] == "ok"
        ratio = a["nfe"] / b["nfe"] if ok else math.nan
        if ok:
            ratios.append(ratio)
            both_ok.append((a["nfe"], b["nfe"]))
        err = f"{b['err'] / k[1]:.3g} → {a['err'] / k[1]:.3g}" if ok else ""
        print(f"| {k[0]} | {k[1]:.0e} | {k[2]} | {b['status']} → {a['status']} | "
              f"{b['nfe']} → {a['nfe']} ({ratio:.2f}) | {err} |")  # fmt: skip
    if ratios:
        total = sum(a for a, _ in both_ok) / sum(b for _, b in both_ok)
        print(f"\nnfe after/before over {len(ratios)} cells ok on both: median "
              f"{statistics.median(ratios):.3f}, range {min(ratios):.2f}–{max(ratios):.2f}, "
              f"sum {total:.3f}")  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="all", help="comma-separated names, or all")
    ap.add_argument("--rtols", default="1e-3,1e-6")
    ap.add_argument("--methods", default="bdf,ndf")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--compare", nargs=2, metavar=("AFTER", "BEFORE"))
    args = ap.parse_args(argv)
    if args.compare:
        compare(*args.compare)
        return 0
    names = all_problems() if args.problems == "all" else args.problems.split(",")
    rtols = [float(r) for r in args.rtols.split(",")]
    scan(names, rtols, args.methods.split(","), args.timeout, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
