"""RADAU5's complex system ``σ I − J`` on the 2-D Brusselator: SuperLU's complex
factorisation (what ``odenet._jacobian.SparseComplexLU`` does since session 46, and
scipy's ``Radau``) against the real ``2n × 2n`` block ``[[aI − J, −bI], [bI, aI − J]]``
it replaced, and scipy Radau's own call (COLAMD, partial pivoting).

Per Jacobian (at t = 0 and at t = ``--t1`` on odenet's solution) and step size ``h``
(``σ = μ_complex/h``): the best of ``--repeats`` factorisation times in ms, the fill
(nonzeros of L and U) and the residual of one solve.  Prints a markdown table.

``--orderings RTOL``: instead, one radau_iia5 solve with ``jac_sparsity`` over
[0, ``--t1``] at that rtol, and per factorisation ``SparseLU`` makes the count of
entries without their transpose, the entries, and the ordering it chose
(``odenet._jacobian.ASYMMETRY``).

    OMP_NUM_THREADS=1 python studies/benchmarks/sparse_complex_lu.py --n 32
    OMP_NUM_THREADS=1 python studies/benchmarks/sparse_complex_lu.py --n 32 --orderings 1e-6
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import numpy as np
import scipy
import scipy.sparse as sp
import torch
from scipy.integrate._ivp.radau import MU_COMPLEX
from scipy.sparse.linalg import splu

import odenet
from odenet import _jacobian
from odenet import problems as P


def jacobians(n: int, t1: float):
    """``[(label, J)]``: the field's Jacobian (CSC) at t = 0 and at t = ``t1``."""
    prob = P.get_problem("brusselator_2d", n=n, t1=t1)
    y0 = prob.y0_tensor()
    sol = odenet.solve(
        prob.f,
        y0,
        torch.tensor([0.0, t1], dtype=torch.float64),
        method="radau_iia5",
        rtol=1e-3,
        atol=1e-3,
        jac_sparsity=P.brusselator_2d_sparsity(n),
    )
    out = []
    for label, t, y in [("t = 0", 0.0, y0), (f"t = {t1:g}", t1, sol.ys[-1])]:
        tt = torch.tensor(t, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(lambda z: prob.f(tt, z), y)  # noqa: B023
        out.append((label, sp.csc_matrix(J.numpy())))
    return out


def orderings(n: int, t1: float, rtol: float) -> Counter:
    """``{(entries without their transpose, entries, ordering): factorisations}`` of a
    radau_iia5 solve with ``jac_sparsity`` (each ``SparseLU`` it builds)."""
    seen: Counter = Counter()
    chosen = []
    real_splu = _jacobian.splu

    def splu(M, permc_spec=None, **kw):
        chosen.append(permc_spec)
        return real_splu(M, permc_spec=permc_spec, **kw)

    real_init = _jacobian.SparseLU.__init__

    def init(self, M, **kw):
        S = sp.csc_matrix(M, copy=True)
        S.data[:] = 1
        real_init(self, M, **kw)
        seen[((S != S.T).nnz, S.nnz, chosen[-1])] += 1

    prob = P.get_problem("brusselator_2d", n=n, t1=t1)
    _jacobian.splu, _jacobian.SparseLU.__init__ = splu, init
    try:
        odenet.solve(
            prob.f,
            prob.y0_tensor(),
            torch.tensor([0.0, t1], dtype=torch.float64),
            method="radau_iia5",
            rtol=rtol,
            atol=rtol,
            jac_sparsity=P.brusselator_2d_sparsity(n),
        )
    finally:
        _jacobian.splu, _jacobian.SparseLU.__init__ = real_splu, real_init
    return seen


def best_of(repeats: int, factorise):
    best, lu = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        lu = factorise()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best, lu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="grid points per side (2n² states)")
    ap.add_argument("--t1", type=float, default=1.5)
    ap.add_argument("--hs", default="1e-1,1e-3,1e-5")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--orderings", type=float, default=None, metavar="RTOL")
    args = ap.parse_args(argv)
    if args.orderings is not None:
        print("| entries without their transpose | entries | ordering | factorisations |")
        print("|---|---|---|---|")
        for (asym, nnz, spec), count in sorted(orderings(args.n, args.t1, args.orderings).items()):
            print(f"| {asym} | {nnz} | {spec} | {count} |")
        return 0
    print(f"scipy {scipy.__version__}, n = {2 * args.n**2}\n")
    print("| J at | h | complex, symmetric order, threshold 0.5: ms (fill, residual) "
          "| real 2n block, same: ms (fill) | scipy Radau's call: ms (fill) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for label, J in jacobians(args.n, args.t1):
        m = J.shape[0]
        eye = sp.identity(m, format="csc")
        for h in (float(x) for x in args.hs.split(",")):
            sigma = MU_COMPLEX / h
            M = sp.csc_matrix(sigma * eye - J)
            A = sigma.real * eye - J
            B = sp.csc_matrix(sp.bmat([[A, -sigma.imag * eye], [sigma.imag * eye, A]]))
            sym = {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.5}
            tc, lc = best_of(args.repeats, lambda: splu(M, **sym))  # noqa: B023
            tb, lb = best_of(args.repeats, lambda: splu(B, **sym))  # noqa: B023
            ts, ls = best_of(args.repeats, lambda: splu(M))  # noqa: B023
            rhs = np.ones(m, dtype=complex)
            res = np.abs(M @ lc.solve(rhs) - rhs).max()

            def fill(lu):
                return lu.L.nnz + lu.U.nnz

            print(
                f"| {label} | {h:g} | {tc:.1f} ({fill(lc)}, {res:.1e}) | {tb:.1f} ({fill(lb)}) "
                f"| {ts:.1f} ({fill(ls)}) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
