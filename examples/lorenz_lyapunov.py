"""The Lyapunov spectrum of the Lorenz system, from the step map of an integrator.

One rk4 step of size dt is a map x ↦ Φ(x); `odenet.stability.flow_map` builds it, and
`odenet.stability.lyapunov` runs the Benettin/QR algorithm on it (tangent vectors
pushed through the step Jacobians, re-orthonormalized, log|R_jj| accumulated, divided
by time). The same function serves RNN cells and ResNet blocks.

Checks printed at the end:
- the sum of the exponents equals the (constant) divergence of the field,
  −(σ + 1 + β) = −13.667, up to the rk4 discretization and averaging;
- one exponent is ≈ 0 (the direction along the flow);
- the largest is positive (chaos); the literature value for σ=10, ρ=28, β=8/3 is
  λ ≈ (0.906, 0, −14.572).

    python examples/lorenz_lyapunov.py            # 50 orbits × 2000 steps of dt = 0.01
    python examples/lorenz_lyapunov.py --quick    # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import time

import torch

from odenet.stability import flow_map, kaplan_yorke_dimension, lyapunov

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0


def lorenz(t, x):
    """The Lorenz field on states `[..., 3]` (so one call steps a whole ensemble)."""
    x0, x1, x2 = x[..., 0], x[..., 1], x[..., 2]
    return torch.stack([SIGMA * (x1 - x0), x0 * (RHO - x2) - x1, x0 * x1 - BETA * x2], dim=-1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    p.add_argument("--orbits", type=int, default=50, help="independent orbits averaged")
    p.add_argument("--steps", type=int, default=2000, help="steps per orbit after the transient")
    p.add_argument("--transient", type=int, default=1000)
    p.add_argument("--dt", type=float, default=0.01)
    p.add_argument("--method", default="rk4")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.orbits, args.steps, args.transient = 8, 600, 300
    torch.manual_seed(args.seed)

    step = flow_map(lorenz, args.dt, method=args.method)
    x0 = torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64) + torch.randn(
        args.orbits, 3, dtype=torch.float64
    )
    start = time.perf_counter()
    res = lyapunov(step, x0, args.steps, dt=args.dt, transient=args.transient,
                   ensemble=True, vectorized=True)  # fmt: skip
    wall = time.perf_counter() - start
    lam = res.exponents.tolist()
    total = sum(lam)
    print(f"Lorenz (σ={SIGMA:g}, ρ={RHO:g}, β={BETA:.4g}), {args.method} dt={args.dt:g}, "
          f"{args.orbits} orbits × {args.steps} steps after {args.transient}: "
          f"{wall:.1f} s")  # fmt: skip
    for i, (v, se) in enumerate(zip(lam, res.stderr)):
        print(f"  λ{i + 1} = {v:9.4f}  ± {se:.4f}")
    print(f"  sum = {total:.4f}   (divergence −(σ+1+β) = {-(SIGMA + 1 + BETA):.4f})")
    print(f"  Kaplan–Yorke dimension = {kaplan_yorke_dimension(res.exponents):.3f}")

    if args.quick:
        problems = []
        if abs(total + SIGMA + 1 + BETA) > 0.05:
            problems.append(f"sum {total:.4f} is not −(σ+1+β)")
        if not lam[0] > 0.3:
            problems.append(f"largest exponent {lam[0]:.3f} is not clearly positive")
        if abs(lam[1]) > 0.3:
            problems.append(f"middle exponent {lam[1]:.3f} is not near 0")
        if problems:
            raise SystemExit("; ".join(problems))
    return res


if __name__ == "__main__":
    main()
