"""Compressed Jacobians with ``jac_sparsity``: reverse mode (one taped call of ``f``, one
vector–Jacobian product per row group) against forward mode (one call on dual numbers
per column group), and whole solves against scipy with the same pattern.

Three tables, one run (``OMP_NUM_THREADS=1`` for steady timings):

0. **Per op**, why: one elementwise or matrix op on a vector of 500 entries, on a plain
   tensor and on a dual tensor (``torch.autograd.forward_ad``), under ``no_grad`` as the
   Jacobians run.  An op between a dual tensor and an operand without a tangent (a
   Python number, a constant tensor, a weight) takes torch's Python reference kernels.
1. **Per Jacobian**, on the 1-D Brusselator (:func:`odenet.problems.brusselator_1d`,
   ``2N`` states) and the 2-D one (``2N²`` states): the best of ``--repeats`` times of
   each mode (``odenet._jacobian``), their ratio, and the largest difference between the
   two Jacobians.  torch's forward mode runs every op between a dual tensor and an
   operand without a tangent (a number, a constant tensor) through its Python reference
   kernels, which is why a field pays far more per dual call than per taped one.
2. **Per solve**: odenet's implicit methods with ``jac_sparsity`` on the 1-D Brusselator
   at ``--rtol`` (atol = rtol·the stiff set's floor, 1), scipy's Radau and BDF with the
   same pattern (the problems' own ``jac_sparsity``); wall time (best of ``--solves``
   after a warm-up), error against the problem's reference in
   :func:`odenet.problems.stiff_error`'s measure, counts, and wall / scipy Radau's.

    OMP_NUM_THREADS=1 python studies/benchmarks/sparse_jacobian.py
    OMP_NUM_THREADS=1 python studies/benchmarks/sparse_jacobian.py --n1 250 --n2 32 \\
        --methods radau_iia5,kvaerno5,sdirk4,bdf --rtol 1e-6
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.autograd.forward_ad as fwAD
from scipy.integrate import solve_ivp

import odenet
from odenet import _jacobian
from odenet import problems as P


def best_time(fn, repeats: int) -> float:
    """The best of ``repeats`` timed calls of ``fn`` (seconds), after one untimed call."""
    fn()  # a first call pays one-off imports (vmap's, dual numbers')
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def op_rows(repeats: int, n: int = 500):
    """Best time of each op on a plain and on a dual ``z`` of ``n`` entries (µs)."""
    gen = torch.Generator().manual_seed(0)
    z0 = torch.rand(n, dtype=torch.float64, generator=gen)
    tangent = torch.rand(n, dtype=torch.float64, generator=gen)
    c = torch.full((n,), 2.0, dtype=torch.float64)
    W = torch.rand(n, n, dtype=torch.float64, generator=gen)
    ops = {
        "z * z": lambda z: z * z,
        "sin(z)": torch.sin,
        "2.0 * z": lambda z: 2.0 * z,
        "z + 1.0": lambda z: z + 1.0,
        "c * z (constant tensor)": lambda z: c * z,
        f"W @ z (W {n} × {n})": lambda z: W @ z,
    }
    yield f"| op, {n} entries | plain µs | dual µs | dual / plain |"
    yield "|---|---|---|---|"
    for label, op in ops.items():
        with torch.no_grad(), fwAD.dual_level():
            dual = fwAD.make_dual(z0, tangent)
            plain = best_time(lambda op=op: op(z0), repeats) * 1e6
            slow = best_time(lambda op=op, dual=dual: op(dual), repeats) * 1e6
        yield f"| {label} | {plain:.1f} | {slow:.1f} | {slow / plain:.0f} |"


def both_modes(prob, pattern, repeats: int):
    """``(sparsity, reverse s, forward s, max |J_reverse − J_forward|)`` for ``prob``'s
    Jacobian at 1.01·y0 (the pattern's entries only, no LU)."""
    sparsity = _jacobian.Sparsity.from_pattern(pattern)
    y = prob.y0_tensor()[None] * 1.01
    s = torch.zeros(1, dtype=torch.float64)

    def g(s_, z):
        return prob.f(s_[0], z[0])[None]

    rows, cols = torch.as_tensor(sparsity.indices), torch.as_tensor(sparsity.cols)

    def reverse():
        return _jacobian._reverse_compressed(g, s, y, sparsity, rows, cols)

    def forward():
        return _jacobian._forward_compressed(g, s, y, sparsity, rows, cols)

    tr, tf = best_time(reverse, repeats), best_time(forward, repeats)
    return sparsity, tr, tf, float((reverse() - forward()).abs().max())


def jacobian_rows(cases, repeats: int):
    yield (
        "| problem | states | row groups | column groups | reverse ms | forward ms | "
        "forward / reverse | max diff |"
    )
    yield "|---|---|---|---|---|---|---|---|"
    for label, prob, pattern in cases:
        sparsity, tr, tf, diff = both_modes(prob, pattern, repeats)
        yield (
            f"| {label} | {prob.dim} | {sparsity.n_row_groups} | {sparsity.n_groups} | "
            f"{tr * 1e3:.2f} | {tf * 1e3:.2f} | {tf / tr:.1f} | {diff:.1e} |"
        )


def solve_rows(n: int, methods, rtol: float, solves: int):
    prob = P.brusselator_1d(n)
    pattern = prob.jac_sparsity
    floor = P.STIFF_SUITE["brusselator_1d"]
    atol = floor * rtol
    t = torch.tensor(prob.span, dtype=torch.float64)
    prob.solution([prob.span[1]])  # the reference outside the timings
    rows = {}
    for m in methods:
        out = {}

        def run(m=m, out=out):
            out["sol"] = odenet.solve(
                prob.f, prob.y0_tensor(), t, method=m, rtol=rtol, atol=atol,
                jac_sparsity=pattern,
            )  # fmt: skip

        wall = best_time(run, solves)
        st = out["sol"].stats
        err = P.stiff_error(prob, out["sol"].ys[-1], floor)
        rows[m] = (wall, err, st["nfe"], st["njev"], st["nlu"], st["steps"])
    for m in ("Radau", "BDF"):
        out = {}

        def run(m=m, out=out):
            out["r"] = solve_ivp(
                prob.f_numpy, prob.span, prob.y0, method=m, rtol=rtol, atol=atol,
                jac_sparsity=pattern,
            )  # fmt: skip

        wall = best_time(run, solves)
        r = out["r"]
        err = P.stiff_error(prob, r.y[:, -1], floor)
        rows[f"scipy {m}"] = (wall, err, r.nfev, r.njev, r.nlu, len(r.t) - 1)
    base = rows["scipy Radau"][0]
    yield f"1-D Brusselator, {2 * n} states, rtol {rtol:g}, atol {atol:g}, jac_sparsity"
    yield ""
    yield "| solver | wall s | wall / scipy Radau | error | nfe | njev | nlu | steps |"
    yield "|---|---|---|---|---|---|---|---|"
    for label, (wall, err, nfe, njev, nlu, steps) in rows.items():
        yield (
            f"| {label} | {wall:.3f} | {wall / base:.2f} | {err:.1e} | {nfe} | {njev} | "
            f"{nlu} | {steps} |"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n1", type=int, default=250, help="1-D Brusselator points")
    ap.add_argument("--n2", type=int, default=32, help="2-D Brusselator side (0: skip)")
    ap.add_argument("--repeats", type=int, default=20, help="timings per Jacobian")
    ap.add_argument("--methods", default="radau_iia5,kvaerno5,sdirk4,bdf")
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--solves", type=int, default=1, help="timed solves per row, after a warm-up")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    problems = {f"brusselator_1d N={args.n1}": P.brusselator_1d(args.n1)}
    if args.n2:
        problems[f"brusselator_2d N={args.n2}"] = P.get_problem("brusselator_2d", n=args.n2)
    cases = [(label, prob, prob.jac_sparsity) for label, prob in problems.items()]
    for line in op_rows(max(args.repeats, 50)):
        print(line, flush=True)
    print()
    for line in jacobian_rows(cases, args.repeats):
        print(line, flush=True)
    print()
    methods = [m for m in args.methods.split(",") if m]
    for line in solve_rows(args.n1, methods, args.rtol, args.solves):
        print(line, flush=True)


if __name__ == "__main__":
    main()
