"""Multistep methods across a ``jump_t`` discontinuity: error and steps (session 16).

``y' = a·y`` before t = 0.6 and ``b·y`` after (a = −1, b = 0.5), y(0) = 1, to t = 1.4 at
rtol 1e-8, atol 1e-10; closed form ``exp(−0.6 + 0.4)``.  Since 4671637 bdf, ndf and adams
restart their history at order 1 after the jump; before (557c09a, the same script)
adams ended 2.5e-7 off (25·rtol) in 89 steps and bdf took 211 steps.

    python studies/benchmarks/jump_multistep.py
"""

import math

import torch

from odenet import solve

D = torch.float64


def main() -> int:
    a, b, tau = -1.0, 0.5, 0.6
    exact = math.exp(a * tau + b * (1.4 - tau))
    print("method", "error", "error/rtol", "accepted", "rejected", "nfe", sep="\t")
    for method in ("bdf", "ndf", "adams"):
        sol = solve(lambda s, y: (a if float(s) <= tau else b) * y, torch.tensor([1.0], dtype=D),
                    torch.tensor([0.0, 0.6, 0.9, 1.4], dtype=D), method=method, rtol=1e-8,
                    atol=1e-10, jump_t=torch.tensor([tau], dtype=D))  # fmt: skip
        err = abs(float(sol.ys[-1, 0]) - exact)
        st = sol.stats
        print(method, f"{err:.2e}", f"{err / 1e-8 / exact:.3g}", int(st["accepted"]),
              int(st["rejected"]), int(st["nfe"]), sep="\t")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
