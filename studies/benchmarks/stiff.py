"""Stiff work–precision: odenet's implicit methods against scipy's Radau, BDF and LSODA.

The stiff test set of :data:`odenet.problems.STIFF_SUITE` (Robertson on [0, 1e5],
Van der Pol μ = 1000 on [0, 3000], HIRES, the Oregonator, the 1-D Brusselator with
N = 100), each solved with ``atol = d·rtol`` (``d`` the problem's absolute floor) and
scored at the final time by ``max_i |y_i − ref_i| / (d + |ref_i|)`` against a scipy
Radau reference at rtol 1e-13.  Solvers run interleaved per (problem, rtol) cell,
so drifting machine load hits all alike.  For every cell the table gives the error,
``nfe`` (odenet: every call of ``f``, including the one autograd Jacobians make;
scipy: ``nfev``, which excludes the finite-difference Jacobian calls of Radau and BDF
but includes LSODA's, made in its Fortran core), ``njev``, wall
time, and ratios of odenet's radau_iia5 to scipy Radau.  A cell whose status is not
ok is reported as such; a cell that is ok with an error above 100·rtol is flagged
``SILENT`` (the issue's must-not-happen).

    python studies/benchmarks/stiff.py                       # short default run
    python studies/benchmarks/stiff.py --rtols 1e-3,1e-4,1e-5,1e-6,1e-7,1e-8 \\
        --problems all --methods radau_iia5,kvaerno3,kvaerno5,sdirk4,trbdf2

Writes ``studies/benchmarks/results/stiff.json`` and prints a markdown table (the
committed ``studies/benchmarks/stiff_results.md`` is one such run).

``--brusselator-2d N`` adds the 2-D Brusselator (:func:`odenet.problems.brusselator_2d`,
``2N²`` states, on ``[0, --b2d-t1]``), where linear algebra dominates: odenet's
radau_iia5 with ``jac_sparsity`` (compressed autograd Jacobians, SuperLU) against
scipy's Radau and BDF with ``jac_sparsity``; ``--b2d-dense`` adds the rows without it
(dense Jacobians and LU on both sides: slow for N ≥ 32).  Error against a scipy BDF
reference with ``jac_sparsity`` at rtol 1e-10, floor ``d = 1``.

    python studies/benchmarks/stiff.py --problems none --rtols 1e-3,1e-6 \\
        --brusselator-2d 32 --b2d-t1 1.5 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import odenet
from odenet import problems as P

SCIPY = ("Radau", "BDF", "LSODA")


def ratio_text(a: float, b: float) -> str:
    """``a/b`` to two digits for a table; "—" where ``b`` is an exact 0 (an end state
    that hits the reference exactly, as flame's does)."""
    return f"{a / b:.2g}" if b else "—"


def run_odenet(prob, method, rtol, d, max_steps, dtype=torch.float64, **kw):
    t = torch.tensor(prob.span, dtype=torch.float64)
    # a per-component floor `d` [n] (numpy) goes in as a
    # tensor; solve takes a number or a tensor for atol
    atol = torch.as_tensor(d * rtol) if isinstance(d, np.ndarray) else d * rtol
    if dtype != torch.float64 and isinstance(atol, torch.Tensor):
        atol = atol.to(dtype)
    t0 = time.perf_counter()
    try:
        sol = odenet.solve(
            prob.f,
            prob.y0_tensor(dtype),
            t,
            method=method,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
            throw=False,
            **kw,
        )
    except odenet.OdenetError as e:  # a typed failure counts as a failure
        return {"status": type(e).__name__, "wall": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    st = sol.stats
    ok = bool(sol.success)
    return {
        "status": "ok" if ok else f"status {int(sol.status.flatten()[0])}",
        "err": P.stiff_error(prob, sol.ys[-1], d) if ok else math.nan,
        "nfe": int(st["nfe"]),
        "njev": int(st.get("jacobians", 0)),
        "nlu": int(st.get("factorizations", 0)),
        "steps": int(st["steps"]),
        "wall": wall,
    }


def run_scipy(prob, method, rtol, d, **kw):
    fn = prob.numpy_field()
    t0 = time.perf_counter()
    r = solve_ivp(fn, prob.span, prob.y0, method=method, rtol=rtol, atol=d * rtol, **kw)
    wall = time.perf_counter() - t0
    return {
        "status": "ok" if r.success else r.message,
        "err": P.stiff_error(prob, r.y[:, -1], d) if r.success else math.nan,
        "nfe": int(r.nfev),
        "njev": int(r.njev),
        "nlu": int(r.nlu),
        "steps": len(r.t) - 1,
        "wall": wall,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="robertson_long,hires,oregonator")
    ap.add_argument("--rtols", default="1e-3,1e-6")
    ap.add_argument("--methods", default="radau_iia5")
    ap.add_argument("--max-steps", type=int, default=20_000)
    ap.add_argument("--brusselator-2d", type=int, default=0, metavar="N")
    ap.add_argument("--b2d-t1", type=float, default=11.5)
    ap.add_argument("--b2d-dense", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="2-D Brusselator timing repeats")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "stiff.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = {"all": list(P.STIFF_SUITE), "none": []}.get(args.problems)
    names = args.problems.split(",") if names is None else names
    methods = args.methods.split(",")
    rtols = [float(x) for x in args.rtols.split(",")]
    rows = []
    for name in names:
        prob, d = P.get_problem(name), P.STIFF_SUITE[name]
        prob.solution([prob.span[1]])  # the reference (cached) before any timing
        for rtol in rtols:
            cell = {}
            for m in methods:
                cell[m] = run_odenet(prob, m, rtol, d, args.max_steps)
            for m in SCIPY:
                cell["scipy " + m] = run_scipy(prob, m, rtol, d)
            for who, r in cell.items():
                r.update(problem=name, rtol=rtol, solver=who)
                silent = r["status"] == "ok" and r.get("err", 0) > 100 * rtol
                r["flag"] = "SILENT" if silent else ""
                rows.append(r)
            _print_cell(name, rtol, cell)
    if args.brusselator_2d:
        rows += brusselator_2d_rows(args, rtols)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=float))


def brusselator_2d_rows(args, rtols):
    """The 2-D Brusselator cells: each solver ``--repeats`` times, interleaved; the
    fastest wall time of each is kept (the machine's load only ever adds time)."""
    N = args.brusselator_2d
    prob = P.get_problem("brusselator_2d", n=N, t1=args.b2d_t1)
    name = f"brusselator_2d (N = {N}, n = {prob.dim}, t1 = {args.b2d_t1:g})"
    pattern = P.brusselator_2d_sparsity(N)
    prob.solution([prob.span[1]])  # the reference, before any timing
    # a first sparse solve imports torch's forward-mode decompositions (one-time cost)
    odenet.solve(
        prob.f,
        prob.y0_tensor(),
        torch.tensor([0.0, 1e-3], dtype=torch.float64),
        method="radau_iia5",
        jac_sparsity=pattern,
    )
    solvers = {
        "radau_iia5 +sparsity": lambda r: run_odenet(
            prob, "radau_iia5", r, 1.0, args.max_steps, jac_sparsity=pattern
        ),
        "scipy Radau +sparsity": lambda r: run_scipy(prob, "Radau", r, 1.0, jac_sparsity=pattern),
        "scipy BDF +sparsity": lambda r: run_scipy(prob, "BDF", r, 1.0, jac_sparsity=pattern),
    }
    if args.b2d_dense:
        solvers.update(
            {
                "radau_iia5 dense": lambda r: run_odenet(
                    prob, "radau_iia5", r, 1.0, args.max_steps
                ),
                "scipy Radau dense": lambda r: run_scipy(prob, "Radau", r, 1.0),
                "scipy BDF dense": lambda r: run_scipy(prob, "BDF", r, 1.0),
            }
        )
    rows = []
    for rtol in rtols:
        cell = {}
        for _ in range(args.repeats):
            for who, run in solvers.items():
                r = run(rtol)
                if who not in cell or r["wall"] < cell[who]["wall"]:
                    cell[who] = r
        # the reference column of _print_cell is scipy Radau with the same pattern
        cell["scipy Radau"] = cell["scipy Radau +sparsity"]
        for who, r in cell.items():
            r.update(problem=name, rtol=rtol, solver=who)
            r["flag"] = "SILENT" if r["status"] == "ok" and r.get("err", 0) > 100 * rtol else ""
        _print_cell(name, rtol, {k: v for k, v in cell.items() if k != "scipy Radau"})
        rows += [r for k, r in cell.items() if k != "scipy Radau"]
    return rows


def _print_cell(name, rtol, cell):
    ref = cell.get("scipy Radau") or cell["scipy Radau +sparsity"]
    print(f"\n### {name}, rtol {rtol:.0e}\n")
    print(
        "| solver | status | error | error/rtol | nfe | njev | nlu | steps | wall s | "
        "err / Radau | nfe / Radau | njev / Radau | wall / Radau |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for who, r in cell.items():
        if r["status"] != "ok":
            print(f"| {who} | {r['status']} | | | | | | | {r['wall']:.2f} | | | | |")
            continue

        def ratio(k, r=r):
            return r[k] / ref[k] if ref.get(k) else math.nan

        flag = " **SILENT**" if r["flag"] else ""
        print(
            f"| {who} | ok{flag} | {r['err']:.2e} | {r['err'] / rtol:.2g} | {r['nfe']} | "
            f"{r['njev']} | {r['nlu']} | {r['steps']} | {r['wall']:.2f} | "
            f"{ratio('err'):.2g} | {ratio('nfe'):.2f} | {ratio('njev'):.2f} | "
            f"{ratio('wall'):.2g} |",
            flush=True,
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
