"""Gradients through stiff solves against the closed form, on random problems.

The linear cases of ``stiff_fuzz.py`` (``y' = A(y − g(t)) + g'(t)``: non-normal ``A``
with eigenvalues down to −1e7, some complex, forwards or backwards in time) have the
solution ``y(t) = g(t) + exp(Aτ)(y0 − g(t0))``, ``τ = t − t0``, so the gradient of
``L = Σ_t wᵀ y(t)`` (``w`` random, the sum over the case's outputs) is known exactly:

* ``∂L/∂y0 = Σ_t exp(Aτ)ᵀ w``;
* ``∂L/∂A_ij = Σ_t wᵀ D exp(Aτ)[τ E_ij] (y0 − g(t0))`` (the Fréchet derivative of the
  matrix exponential, ``scipy.linalg.expm_frechet``).

Each (method, sensitivity) is run on the same cases, ``A`` a leaf tensor of the field.
A gradient's error is measured by what it does to a prediction of ``L``: perturb the
input by one tolerance unit (``y0_i`` by ``atol + rtol·|y0_i|``, ``A_ij`` by
``rtol·|A_ij|``) and the first-order change of ``L`` that the gradient predicts is off
by at most ``Σ |Δg|·unit``; that is divided by ``L``'s own tolerance,
``Σ_t Σ_i |w_i|·(atol + rtol·|y_i(t)|)`` (:func:`error_units`).  Plain relative errors
say nothing here: on a stiff case whose transient has decayed by the outputs the exact
``∂L/∂A`` is ~1e-21 (drawn case 7) and every method's round-off is "1e16·rtol" of it.
That measure is lenient where the gradient matters (a 1 % error of an O(1) gradient
is ~0.01 units), so beside it each cell shows the relative error of the predicted
change, ``Σ |Δg|·unit / Σ |g|·unit``, in units of rtol, over the cases where the exact
predicted change is above 1e-3 of ``L``'s tolerance (none: ``–``; below it the
gradient is lost in the solution's own error, and on a decayed transient in
round-off).  Printed per cell: the largest of each over the cases solved.
``direct`` and ``checkpoint`` differentiate the computed solution (its step sizes
held fixed), whose error no estimate controls; ``adjoint`` solves the continuous
adjoint at the same tolerance.  Numbers only, no verdict.

    python studies/benchmarks/gradient_fuzz.py --cases 12
    python studies/benchmarks/gradient_fuzz.py --methods bdf --modes direct,adjoint --show
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, str(Path(__file__).parent))
from stiff_fuzz import Case, draw, limited_solve


def exact_gradients(case: Case, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(∂L/∂y0 [n], ∂L/∂A [n, n])`` of ``L = Σ_t wᵀ y(t)`` over ``case.t_out``."""
    n = len(case.y0)
    d0 = case.y0 - case.g(case.t0)
    g_y0, g_A = np.zeros(n), np.zeros((n, n))
    for t in case.t_out:
        tau = t - case.t0
        g_y0 += scipy.linalg.expm(case.A * tau).T @ w
        for i in range(n):
            for j in range(n):
                E = np.zeros((n, n))
                E[i, j] = tau
                g_A[i, j] += w @ scipy.linalg.expm_frechet(case.A * tau, E, compute_expm=False) @ d0
    return g_y0, g_A


def error_units(case: Case, w: np.ndarray, got, truth) -> list[tuple[float, float]]:
    """Per gradient of ``got = (∂L/∂y0, ∂L/∂A)`` against ``truth``: the error of the
    change of ``L`` it predicts for a one-tolerance-unit perturbation of the input, in
    units of ``L``'s tolerance, and that error relative to the exact predicted change in
    units of rtol (NaN where the exact change is below 1e-3 of ``L``'s tolerance); see the
    module's docstring."""
    y = case.exact(case.t_out)  # [T, n]
    tol_L = float((np.abs(w) * (case.atol + case.rtol * np.abs(y))).sum())
    unit_y0 = case.atol + case.rtol * np.abs(case.y0)
    unit_A = case.rtol * np.abs(case.A)
    out = []
    for g, tr, unit in zip(got, truth, (unit_y0, unit_A)):
        off, size = float((np.abs(g - tr) * unit).sum()), float((np.abs(tr) * unit).sum())
        out.append((off / tol_L, off / size / case.rtol if size > 1e-3 * tol_L else float("nan")))
    return out


def one(case: Case, method: str, mode: str, limit: float, w: np.ndarray):
    """``(∂L/∂y0, ∂L/∂A)`` from odenet, or the failure's name."""
    A = torch.tensor(case.A, requires_grad=True)
    y0 = torch.tensor(case.y0, requires_grad=True)
    t = torch.tensor(np.concatenate([[case.t0], case.t_out]))
    sol = limited_solve(
        limit, case.f_torch(A), y0, t, method=method, rtol=case.rtol, atol=case.atol,
        sensitivity=mode,
    )  # fmt: skip
    if isinstance(sol, str):
        return sol
    if not bool(sol.success):
        return f"status {int(sol.status.flatten()[0])}"
    loss = (sol.ys[1:] @ torch.tensor(w)).sum()
    g_y0, g_A = torch.autograd.grad(loss, (y0, A))
    return g_y0.numpy(), g_A.numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=12, help="linear cases, drawn from seed 0 on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="radau_iia5,radau_iia9,kvaerno5,bdf,ndf")
    p.add_argument("--modes", default="direct,checkpoint,adjoint")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per forward solve")
    p.add_argument("--show", action="store_true", help="every (case, method, mode) row")
    args = p.parse_args(argv)
    methods, modes = args.methods.split(","), args.modes.split(",")
    # (method, mode) -> [units y0, rtol y0, units A, rtol A], solved, failed
    worst = defaultdict(lambda: [[0.0] * 4, 0, 0])
    # method -> the largest gap, checkpoint against direct, in units (y0, A)
    apart = defaultdict(lambda: [0.0, 0.0])
    found, i, t_start = 0, 0, time.time()
    while found < args.cases:
        case = draw(args.seed * 100_000 + i)
        i += 1
        if case.s != 0:
            continue
        found += 1
        w = np.random.default_rng(case.seed).standard_normal(len(case.y0))
        truth = exact_gradients(case, w)
        for m in methods:
            both = {}
            for mode in modes:
                got = one(case, m, mode, args.timeout, w)
                both[mode] = got
                cell = worst[m, mode]
                if isinstance(got, str):
                    cell[2] += 1
                    if args.show:
                        print(f"case {case.seed} {m} {mode}: {got}")
                    continue
                (u0, r0), (uA, rA) = error_units(case, w, got, truth)
                cell[0] = [np.nanmax([a, b]) for a, b in zip(cell[0], (u0, r0, uA, rA))]
                cell[1] += 1
                if args.show:
                    print(f"case {case.seed} {m} {mode}: rtol {case.rtol:.1e}, ∂L/∂y0 "
                          f"{u0:.3g} units ({r0:.3g}·rtol), ∂L/∂A {uA:.3g} units "
                          f"({rA:.3g}·rtol)", flush=True)  # fmt: skip
            d, k = both.get("direct"), both.get("checkpoint")
            if not (d is None or k is None or isinstance(d, str) or isinstance(k, str)):
                gap = error_units(case, w, k, d)  # checkpoint measured against direct
                apart[m] = [max(a, g[0]) for a, g in zip(apart[m], gap)]
    print(
        f"\n{args.cases} linear cases (seed {args.seed}), {time.time() - t_start:.0f} s; "
        "largest error of each gradient over the cases (units: see the docstring)\n\n"
        "| method | sensitivity | ∂L/∂y0 units | ∂L/∂y0 ·rtol | ∂L/∂A units | ∂L/∂A ·rtol "
        "| solved | failed or timed out |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for m in methods:
        for mode in modes:
            e, ok, bad = worst[m, mode]
            cells = " | ".join("–" if v == 0 and i % 2 else f"{v:.3g}" for i, v in enumerate(e))
            print(f"| {m} | {mode} | {cells} | {ok} | {bad} |")
    if apart:
        # "checkpoint" replays the forward's steps; it gives the direct gradient to
        # round-off where the forward with a graph takes the steps the forward without
        # one took (docs/sensitivity.md)
        print("\n| method | checkpoint vs direct: ∂L/∂y0 units | ∂L/∂A units |\n|---|---|---|")
        for m in apart:
            print(f"| {m} | {apart[m][0]:.3g} | {apart[m][1]:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
