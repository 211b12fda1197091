"""Outputs inside implicit steps: what the interpolant check costs and what it buys.

An implicit Runge–Kutta method answers an output time inside a step with its
interpolant, whose error the step's estimate does not control; odenet checks it at
up to three outputs per step (``odenet/_dense_check.py``, ``docs/methods.md``).  This
runs each method with the check and without it (``odenet._loop.checks_outputs``
replaced by one that says no: the code path before the check existed) on problems
from the library or a drawn case of ``stiff_fuzz.py``, with ``N`` outputs, beside
scipy's ``Radau`` (its dense output, ``t_eval``) on the same input.  Error: the
largest over the outputs, in tolerance units ``|y − y*| / (atol + rtol |y*|)``,
against scipy ``Radau`` at rtol 1e-12 with the exact Jacobian (library problems) or
the case's own reference.

    python studies/benchmarks/dense_outputs.py \
        --problems robertson,hires,van_der_pol_relaxation --outputs 50 --rtol 1e-6
    python studies/benchmarks/dense_outputs.py \
        --problems kepler,van_der_pol --outputs 1000 --rtol 1e-6
    python studies/benchmarks/dense_outputs.py --case 200002001 --like 200002 --outputs 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import odenet
import odenet._loop as loop
from odenet import problems

sys.path.insert(0, str(Path(__file__).parent))
import stiff_fuzz

CHECKED = loop.checks_outputs


def _library(name: str, n_out: int, rtol: float):
    """``(label, f_torch, f_numpy, y0, t [T], atol, reference [T, n])``."""
    p = problems.get_problem(name)
    t0, t1 = p.span
    if name.startswith("robertson"):  # its dynamics span decades of time
        t = np.concatenate([[t0], np.geomspace(1e-4, t1, n_out)])
    else:
        t = np.linspace(t0, t1, n_out + 1)
    atol = np.broadcast_to(np.asarray(p.atol(rtol), float), p.y0.shape).copy()
    ref = solve_ivp(
        p.f_numpy, (t0, t1), p.y0, method="Radau", t_eval=t[1:], rtol=1e-12,
        atol=atol * 1e-6, jac=p.jac_numpy,
    )  # fmt: skip
    return name, p.f, p.f_numpy, p.y0, t, atol, ref.y.T


def _drawn(seed: int, like: int | None, n_out: int):
    c = stiff_fuzz.draw(seed, like=None if like is None else stiff_fuzz.draw(like))
    c.t_out = np.linspace(c.t0, c.t1, n_out + 1)[1:]
    t = np.concatenate([[c.t0], c.t_out])
    atol = np.full(len(c.y0), c.atol)
    label = f"stiff_fuzz case {seed}"
    return c.rtol, (label, c.f_torch(), c.f_numpy, c.y0, t, atol, c.exact(c.t_out))


def rows(label, f, f_numpy, y0, t, atol, ref, rtol, methods):
    def units(y):
        return float((np.abs(y - ref) / (atol + rtol * np.abs(ref))).max())

    s = solve_ivp(f_numpy, (t[0], t[-1]), y0, method="Radau", t_eval=t[1:], rtol=rtol, atol=atol)
    print(f"\n{label}: {len(t) - 1} outputs, rtol {rtol:g}\n")
    print("| solver | steps | nfe | largest error (units) |\n|---|---|---|---|")
    print(f"| scipy Radau | – | {s.nfev} | {units(s.y.T):.3g} |")
    for m in methods:
        for checked in (False, True):
            loop.checks_outputs = CHECKED if checked else (lambda rk, cfg: False)
            try:
                sol = odenet.solve(
                    f, torch.as_tensor(y0), torch.as_tensor(t), method=m, rtol=rtol,
                    atol=torch.as_tensor(atol), max_steps=200_000, throw=False,
                )  # fmt: skip
            finally:
                loop.checks_outputs = CHECKED
            err = units(sol.ys[1:].numpy()) if bool(sol.success) else float("nan")
            name = m if checked else f"{m}, unchecked"
            print(f"| {name} | {int(sol.stats['steps'])} | {int(sol.stats['nfe'])} | {err:.3g} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", default="", help="library problems, comma-separated")
    p.add_argument("--case", type=int, default=None, help="a stiff_fuzz.py case (its seed)")
    p.add_argument("--like", type=int, default=None, help="with --case: its batch's first seed")
    p.add_argument("--outputs", type=int, default=50, help="output times (evenly spaced)")
    p.add_argument("--rtol", type=float, default=1e-6, help="library problems only")
    p.add_argument("--methods", default="radau_iia5,radau_iia9,kvaerno5")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    for name in filter(None, args.problems.split(",")):
        rows(*_library(name, args.outputs, args.rtol), args.rtol, methods)
    if args.case is not None:
        rtol, case = _drawn(args.case, args.like, args.outputs)
        rows(*case, rtol, methods)


if __name__ == "__main__":
    main()
