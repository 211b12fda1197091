"""The trapezoid's κ constant (``odenet.tableaus.TRAPEZOID_SAFETY``): error / scipy
Radau's and steps on the visible stiff set at rtol 1e-3, for several constants ``S``.

The adaptive trapezoid reports its Milne-device estimate times
``κ = S · max(1, 1e-2/rtol)^(1/2)`` (``odenet._newton.error_safety``), as the DIRK pairs
do with their constants.  The committed ``S`` is the smallest of those tried that keeps
every problem of the visible set within 10× of scipy Radau's error at rtol 1e-3 (the
must-hold of issue 14); this script prints the table it was chosen from
(``stiff_trapezoid_results.md``).

    python studies/benchmarks/trapezoid_safety.py
    python studies/benchmarks/trapezoid_safety.py --safeties 1000,2000 --problems hires

Error measure and floors as ``stiff.py`` (``P.stiff_error``, ``atol = d·rtol``);
scipy Radau's error is the median of three jittered runs (``tests/_scipy_radau.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from _scipy_radau import radau_error
from stiff import run_odenet

import odenet
from odenet import problems as P


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--safeties", default="100,500,1000,2000")
    ap.add_argument("--problems", default=",".join(P.STIFF_SUITE))
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--max-steps", type=int, default=100_000)
    args = ap.parse_args(argv)
    names = args.problems.split(",")
    safeties = [float(x) for x in args.safeties.split(",")]
    base = odenet.tableau("trapezoid")
    cells = {}
    for name in names:
        prob, d = P.get_problem(name), P.STIFF_SUITE[name]
        radau, _ = radau_error(
            prob.numpy_field(), prob.span, prob.y0, args.rtol, d * args.rtol,
            lambda y, prob=prob, d=d: P.stiff_error(prob, y, d),
        )  # fmt: skip
        for S in safeties:
            tab = dataclasses.replace(base, error_safety=S)
            r = run_odenet(prob, tab, args.rtol, d, args.max_steps)
            ok = r["status"] == "ok"
            cells[name, S] = f"{r['err'] / radau:.2g}× ({r['steps']})" if ok else r["status"]
            print(f"{name} S={S:g}: {cells[name, S]}", file=sys.stderr, flush=True)
    print(f"rtol {args.rtol:g}: error / scipy Radau's (steps)\n")
    print("| S | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for S in safeties:
        print(f"| {S:g} | " + " | ".join(cells[name, S] for name in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
