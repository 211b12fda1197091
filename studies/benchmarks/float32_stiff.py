"""Does status ok still mean the tolerance was honoured when the state is float32?

Issue 14's must-not-happen ("status ok with an error above 100·rtol") was measured in
float64 on the stiff set and the hold-out sets.  Neural-ODE users run float32.  This
solves the same problems with a float32 state (the clock stays float64, as in every
solve) beside the float64 solve of the same cell, interleaved, with the sweeps'
settings (``atol = floors·rtol``, cast to float32; :func:`odenet.problems.stiff_error`
at the end against the set's float64 reference, in units of rtol), and gives per cell

* ``ok``      status ok and the error ≤ 100·rtol;
* ``fail``    a status or a typed error (honest);
* ``timeout`` past ``--timeout`` seconds (a limit of this script, not a verdict);
* ``SILENT``  status ok with an error above 100·rtol;

and the float32 error over the float64 one.  An rtol near float32's round-off is its
own limit: ``solve`` warns (``ToleranceWarning``) below the rtol each method's error
control can resolve, and such cells are marked ``warned``.

    OMP_NUM_THREADS=1 python studies/benchmarks/float32_stiff.py --methods radau_iia5,bdf \\
        --rtols 1e-3,1e-4 --problems all

Two diagnoses of a float32 miss: ``--wide-f`` adds a third solve, the float32 state
with ``f`` evaluated in float64 and rounded once (where that is back at float64's
error, ``f``'s float32 round-off was the cause); ``--knock N`` instead prints, per
problem, how far ``N`` float64 solves' ends move when ``y0`` alone is knocked by
float32's epsilon (where that is above 100·rtol the end is not determined at float32
precision, whatever the solver):

    OMP_NUM_THREADS=1 python studies/benchmarks/float32_stiff.py --wide-f \
        --problems linear_oscillatory,allen_cahn --rtols 1e-3
    OMP_NUM_THREADS=1 python studies/benchmarks/float32_stiff.py --knock 3 --problems allen_cahn

Each finished cell is appended to ``--json`` (a rerun skips cells already there), so an
interrupted run loses at most the cell in progress.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import warnings
from pathlib import Path

import torch

import odenet

sys.path.insert(0, str(Path(__file__).parent))
from stiff import run_odenet
from stiff_accuracy import time_limited
from stiff_holdout import HOLDOUT, any_problem

from odenet import problems as P

# problems whose float64 cells alone take minutes (the hold-out sweeps leave them out too)
SLOW = ("ringmod", "beam", "medakzo", "rotating_stiff", "critically_damped")


def all_problems() -> list[str]:
    any_problem("stick_slip")  # registers every hold-out set in HOLDOUT
    return list(P.STIFF_SUITE) + [n for n in HOLDOUT if n not in SLOW]


def wide(p: P.Problem) -> P.Problem:
    """``p`` with ``f`` evaluated in float64 and rounded once to the state's dtype: a
    float32 solve of it differs from the float64 one only by the solver's own float32
    arithmetic (its states, stages and linear algebra), not by ``f``'s round-off."""
    f = p.f

    def f_wide(t, y):
        return f(t.double(), y.double()).to(y.dtype)

    return dataclasses.replace(p, f=f_wide)


def t_in_state_dtype(p: P.Problem) -> P.Problem:
    """``p`` with ``f`` given ``t`` in the state's dtype (torchdiffeq's convention, and
    ``odenet.odeint``'s), for the fields that compute with the float64 ``t`` that
    ``solve`` gives them and so return float64 for a float32 state."""
    f = p.f

    def f_cast(t, y):
        return f(t.to(y.dtype), y)

    return dataclasses.replace(p, f=f_cast)


def cell(name: str, method: str, rtol: float, limit: float, wide_f: bool = False) -> dict:
    """One (problem, method, rtol): the float32 and float64 solves and their verdicts
    (with ``wide_f``, also ``"f32_wide_f"``: the float32 state with :func:`wide`'s f)."""
    p, floors = any_problem(name)
    row = dict(problem=name, method=method, rtol=rtol)
    runs = [(torch.float32, "f32", p), (torch.float64, "f64", p)]
    if wide_f:
        runs.append((torch.float32, "f32_wide_f", wide(p)))
    for dtype, tag, q in runs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            o = time_limited(limit, run_odenet, q, method, rtol, floors, 100_000, dtype=dtype)
            t_cast = o["status"] == "VectorFieldError" and dtype != torch.float64
            if t_cast:  # f computes in the float64 t it is given: give it t in y's dtype
                q = t_in_state_dtype(q)
                o = time_limited(limit, run_odenet, q, method, rtol, floors, 100_000, dtype=dtype)
        warned = any("ToleranceWarning" in type(w.message).__name__ for w in caught)
        units = o["err"] / rtol if o["status"] == "ok" else math.nan
        if o["status"] == "timeout":
            verdict = "timeout"
        elif o["status"] != "ok":
            verdict = "fail"
        else:
            verdict = "SILENT" if units > 100 else "ok"
        row[tag] = dict(status=o["status"], units=units, nfe=o.get("nfe"), verdict=verdict)
        row[tag]["warned"] = warned
        row[tag]["t_cast"] = t_cast
    return row


def knock(name: str, draws: int, seed: int = 0) -> list[float]:
    """How far the end moves when ``y0`` alone is knocked by float32's epsilon,
    ``y0·(1 + 1.2e-7·N(0, 1))``, each solve in float64 with radau_iia5 at rtol 1e-9: the
    end's change per draw, in the measure of :func:`odenet.problems.stiff_error` (divide
    by an rtol for its units).  Where it is above 100·rtol, a float32 solve at that rtol
    is not determined by its input, whatever the solver."""
    p, floors = any_problem(name)
    y0 = p.y0_tensor()
    gen = torch.Generator().manual_seed(seed)
    eps32 = torch.finfo(torch.float32).eps
    base = run_end(p, y0, floors)
    moves = []
    for _ in range(draws):
        y = y0 * (1 + eps32 * torch.randn(y0.shape, generator=gen, dtype=y0.dtype))
        end = run_end(p, y, floors)
        scale = torch.as_tensor(floors, dtype=end.dtype) + base.abs()
        moves.append(float(((end - base).abs() / scale).max()))
    return moves


def run_end(p: P.Problem, y0: torch.Tensor, floors) -> torch.Tensor:
    """The float64 end state from ``y0`` (radau_iia5, rtol 1e-9, ``atol = floors·1e-9``)."""
    atol = torch.as_tensor(floors * 1e-9, dtype=torch.float64)
    t = torch.tensor(p.span, dtype=torch.float64)
    sol = odenet.solve(p.f, y0, t, method="radau_iia5", rtol=1e-9, atol=atol, max_steps=10**6)
    return sol.ys[-1]


def summary(rows: list[dict]) -> str:
    out = [
        "| method | rtol | cells | f32 ok | f32 fail | f32 timeout | f32 SILENT (warned) "
        "| f64 SILENT | f32 > 10·rtol | largest f32 ok error / f64 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = dict.fromkeys((r["method"], r["rtol"]) for r in rows)
    for m, rt in keys:
        rs = [r for r in rows if r["method"] == m and r["rtol"] == rt]
        v32 = [r["f32"]["verdict"] for r in rs]
        silent = [r for r in rs if r["f32"]["verdict"] == "SILENT"]
        warned = sum(r["f32"]["warned"] for r in silent)
        big = sum(r["f32"]["verdict"] in ("ok", "SILENT") and r["f32"]["units"] > 10 for r in rs)
        ratios = [
            r["f32"]["units"] / r["f64"]["units"]
            for r in rs
            if r["f32"]["verdict"] == "ok" and r["f64"]["verdict"] == "ok" and r["f64"]["units"]
        ]
        top = f"{max(ratios):.3g}" if ratios else "–"
        out.append(
            f"| {m} | {rt:g} | {len(rs)} | {v32.count('ok')} | {v32.count('fail')} "
            f"| {v32.count('timeout')} | {len(silent)} ({warned}) "
            f"| {sum(r['f64']['verdict'] == 'SILENT' for r in rs)} | {big} | {top} |"
        )
    for r in rows:
        if r["f32"]["verdict"] == "SILENT":
            out.append(
                f"\nSILENT: {r['problem']} {r['method']} rtol {r['rtol']:g}: float32 "
                f"{r['f32']['units']:.3g}·rtol (nfe {r['f32']['nfe']}), float64 "
                f"{r['f64']['units']:.3g}·rtol ({r['f64']['status']})"
                + (
                    f"; f in float64 {r['f32_wide_f']['units']:.3g}·rtol"
                    if "f32_wide_f" in r
                    else ""
                )
                + (", rtol below the method's float32 floor (warned)" if r["f32"]["warned"] else "")
            )
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="all", help="comma-separated names, or all")
    ap.add_argument("--methods", default="radau_iia5,bdf")
    ap.add_argument("--rtols", default="1e-3,1e-4")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per solve")
    ap.add_argument("--json", default=None, help="append each cell here (and resume from it)")
    ap.add_argument(
        "--wide-f",
        action="store_true",
        help="also solve the float32 state with f evaluated in float64 (whose error is f's)",
    )
    ap.add_argument(
        "--knock",
        type=int,
        default=0,
        help="instead: per problem, how far the end moves when y0 is knocked by float32's "
        "epsilon (this many draws, float64 solves)",
    )
    a = ap.parse_args(argv)
    names = all_problems() if a.problems == "all" else a.problems.split(",")
    if a.knock:
        for name in names:
            moves = knock(name, a.knock)
            units = ", ".join(
                f"{max(moves) / float(r):.3g} units of {float(r):g}" for r in a.rtols.split(",")
            )
            print(f"{name}: y0 knocked by eps32 moves the end by up to {units}", flush=True)
        return
    rows, done = [], set()
    if a.json and Path(a.json).exists():
        rows = [json.loads(line) for line in Path(a.json).read_text().splitlines() if line]
        done = {(r["problem"], r["method"], r["rtol"]) for r in rows}
    for name in names:
        for rtol in (float(x) for x in a.rtols.split(",")):
            for m in a.methods.split(","):
                if (name, m, rtol) in done:
                    continue
                r = cell(name, m, rtol, a.timeout, a.wide_f)
                rows.append(r)
                print(
                    f"{name:24s} {m:10s} {rtol:g}: f32 {r['f32']['verdict']} "
                    f"{r['f32']['units']:.3g}·rtol, f64 {r['f64']['verdict']} "
                    f"{r['f64']['units']:.3g}·rtol"
                    + (
                        f", f32 with f in float64 {r['f32_wide_f']['verdict']} "
                        f"{r['f32_wide_f']['units']:.3g}·rtol"
                        if a.wide_f
                        else ""
                    ),
                    flush=True,
                )
                if a.json:
                    with open(a.json, "a") as fh:
                        fh.write(json.dumps(r) + "\n")
    print(summary(rows))


if __name__ == "__main__":
    main()
