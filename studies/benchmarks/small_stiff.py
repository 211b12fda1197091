"""CPU time of the implicit methods on the small stiff problems, against scipy (issue 14).

The five problems of :data:`odenet.problems.STIFF_SUITE` (Robertson on [0, 1e5], Van der
Pol μ = 1000 on [0, 3000], HIRES, the Oregonator: 3–8 states; the 1-D Brusselator,
N = 100: 200 states), ``atol = d·rtol`` with the problem's floor ``d``, the end state
only.  Per (problem, rtol) cell the solvers run interleaved, ``--reps`` times each, one
thread; the table gives the median process CPU time, its ratio to scipy ``Radau``'s on
the numpy field (finite-difference Jacobian, as a scipy user runs it), the steps and
f-evaluations.  On these sizes the time is per-step overhead (Python, tensor dispatch),
not arithmetic: the ratio is what the small-systems work moves.

    python studies/benchmarks/small_stiff.py                   # reps = 3
    python studies/benchmarks/small_stiff.py --methods radau_iia5 --rtols 1e-6 --reps 5
    python studies/benchmarks/small_stiff.py --methods bdf,ndf --scipy Radau,BDF

``--scipy``: the scipy solvers run beside, each with a column of ratios to its CPU time.
``--profile METHOD``: instead of the table, cProfile of one solve per (problem, rtol)
with ``METHOD``, the functions with the largest cumulative shares of the solve.

To compare two trees, run the script under each (``PYTHONPATH=<tree>``): each run's
ratios are against its own, interleaved scipy times.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import time

import torch
from scipy.integrate import solve_ivp

import odenet
from odenet import problems as P


def odenet_run(prob, method, rtol, d):
    """One odenet solve of ``prob`` to its end: ``(CPU s, steps tried, nfe, success)``."""
    span = torch.tensor(prob.span, dtype=torch.float64)
    t0 = time.process_time()
    sol = odenet.solve(
        prob.f, prob.y0_tensor(), span, method=method, rtol=rtol, atol=d * rtol,
        max_steps=200_000, throw=False,
    )  # fmt: skip
    cpu = time.process_time() - t0
    st = sol.stats
    return cpu, int(st["steps"]), int(st["nfe"]), bool(sol.success)


def scipy_run(prob, rtol, d, method="Radau"):
    """scipy's ``method`` on the numpy field: ``(CPU s, accepted steps, nfev, success)``."""
    fn = prob.numpy_field()
    t0 = time.process_time()
    r = solve_ivp(fn, prob.span, list(prob.y0), method=method, rtol=rtol, atol=d * rtol)
    cpu = time.process_time() - t0
    return cpu, len(r.t) - 1, r.nfev, r.success


def profile(method, names, rtols, top=20):
    """Print the ``top`` functions by cumulative share of one solve per (problem, rtol),
    after an untimed warm-up solve."""
    import cProfile
    import pstats

    for name in names:
        prob, d = P.get_problem(name), P.STIFF_SUITE[name]
        for rtol in rtols:
            odenet_run(prob, method, rtol, d)
            prof = cProfile.Profile()
            prof.runcall(odenet_run, prob, method, rtol, d)
            st = pstats.Stats(prof)
            total = max(v[3] for v in st.stats.values())  # the solve's cumulative time
            rows = sorted(st.stats.items(), key=lambda kv: -kv[1][3])[:top]
            print(f"\n{method} on {name} at rtol {rtol:g}: cumulative / self share of the solve")
            for (file, line, fn), (_, _, tt, ct, _) in rows:
                where = f"{file.rsplit('/', 1)[-1]}:{line}({fn})"
                print(f"  {100 * ct / total:5.1f} %  {100 * tt / total:5.1f} %  {where}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=",".join(P.STIFF_SUITE))
    ap.add_argument("--rtols", default="1e-3,1e-6")
    ap.add_argument("--methods", default="radau_iia5,kvaerno5")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scipy", default="Radau", help="scipy solve_ivp methods beside")
    ap.add_argument("--profile", metavar="METHOD", help="cumulative cProfile shares instead")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.profile:
        return profile(a.profile, a.problems.split(","), [float(x) for x in a.rtols.split(",")])
    methods = a.methods.split(",")
    peers = a.scipy.split(",")
    print(f"odenet {odenet.__file__}; torch {torch.__version__}; reps {a.reps}")
    # untimed: a method's first solve builds its constants (Radau's at 40 digits) once
    warm = P.get_problem("robertson_long")
    for m in methods:
        odenet_run(warm, m, 1e-3, P.STIFF_SUITE["robertson_long"])
    print()
    ratios = " | ".join(f"/ scipy {m}" for m in peers)
    print(f"| problem | rtol | solver | CPU ms | {ratios} | steps | nfe | µs per step |")
    print("|---|---|---|---|" + "---|" * len(peers) + "---|---|---|")
    for name in a.problems.split(","):
        prob, d = P.get_problem(name), P.STIFF_SUITE[name]
        for rtol in (float(x) for x in a.rtols.split(",")):
            rows = {f"scipy {m}": [] for m in peers} | {m: [] for m in methods}
            for _ in range(a.reps):  # interleaved: drifting load hits every solver alike
                for m in peers:
                    rows[f"scipy {m}"].append(scipy_run(prob, rtol, d, m))
                for m in methods:
                    rows[m].append(odenet_run(prob, m, rtol, d))
            bases = [statistics.median(r[0] for r in rows[f"scipy {m}"]) for m in peers]
            for label, runs in rows.items():
                cpu = statistics.median(r[0] for r in runs)
                _, steps, nfe, ok = runs[-1]
                status = "" if ok else " (failed)"
                ratio = " | ".join(f"{cpu / b:.2f}" for b in bases)
                print(
                    f"| {name} | {rtol:.0e} | {label}{status} | {1e3 * cpu:.1f} | "
                    f"{ratio} | {steps} | {nfe} | {1e6 * cpu / max(steps, 1):.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
