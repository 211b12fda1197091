"""Measure the observed order of accuracy of several Runge–Kutta methods.

A convergence study solves a problem with a known solution on a sequence of fixed
step sizes, records the error of each (method, step), and fits the slope of
log(error) against log(h) — the observed order — where the errors are in their
asymptotic range (above round-off, below the pre-asymptotic regime).

    python examples/convergence_study.py                    # 6 methods on y' = y cos t
    python examples/convergence_study.py --problem kepler --methods rk4,dopri5,dop853
    python examples/convergence_study.py --quick            # a few seconds, for CI
    python examples/convergence_study.py --plot convergence.png

The same study from the terminal, with resumable results: `odenet converge`.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import odenet
from odenet.problems import Problem


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    p.add_argument("--problem", default="cos", help="a built-in problem (`odenet problems`)")
    p.add_argument("--methods", default="euler,heun,rk3,rk4,dopri5,radau_iia5")
    p.add_argument("--n-steps", default="8,11,16,23,32,45,64", help="numbers of fixed steps")
    p.add_argument("--plot", metavar="PNG", help="save a log–log plot with slope triangles")
    args = p.parse_args(argv)
    n_steps = [int(n) for n in args.n_steps.split(",")]
    methods = args.methods.split(",")
    if args.quick:
        methods, n_steps = ["euler", "heun", "rk4"], [8, 16, 32, 64]

    res = odenet.convergence(args.problem, methods=methods, n_steps=n_steps)
    print(res)

    # Your own problem: a field, an initial state, a span and the exact solution.
    mine = Problem(lambda t, y: -y * torch.sin(t), y0=[1.0], span=(0.0, 3.0),
                   exact=lambda t: np.exp(np.cos(t) - 1)[:, None], name="decay")  # fmt: skip
    own = odenet.convergence(mine, methods=["heun", "rk4"], n_steps=[16, 32, 64, 128])
    print(own.orders[["method", "expected_order", "observed_order", "verdict"]].to_string())

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from odenet.plotting import plot_convergence

        plot_convergence(res, path=args.plot)
        print(f"saved {args.plot}")

    orders = dict(zip(res.orders["method"], res.orders["observed_order"]))
    expected = dict(zip(res.orders["method"], res.orders["expected_order"]))
    off = {m: (orders[m], expected[m]) for m in orders if abs(orders[m] - expected[m]) > 0.3}
    if args.quick and off:
        raise SystemExit(f"observed orders far from the expected ones: {off}")
    return res


if __name__ == "__main__":
    main()
