"""Time gradients ∂y(t_i)/∂t_i of a stiff solve at interpolated outputs and at step ends.

Every sensitivity mode gives an output time the slope of the dense output there:
f(t_i, y_i) at a step's end, the interpolant's derivative between steps (f at an
interpolated y_i magnified its error by the stiff Jacobian: 6 % off at t = 4, 23 % at
t = 10, before the loop recorded the slopes); with ``step_t=t`` the steps end on the
outputs.  Robertson, kvaerno5,
rtol 1e-6, atol 1e-10; reference f(t_i, y(t_i)) from scipy Radau at rtol 1e-12.
Prints the relative error of ∂y₂(t_i)/∂t_i (``docs/sensitivity.md`` quotes it).

    python studies/benchmarks/stiff_time_gradients.py
"""

import torch
from scipy.integrate import solve_ivp

from odenet import solve

D = torch.float64
TIMES = [0.0, 0.3, 1.0, 4.0, 10.0, 40.0]


def robertson(t, y):
    a, b, c = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack(
        [-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b], -1
    )


def main() -> int:
    torch.set_num_threads(1)

    def f_np(t, y):
        return robertson(t, torch.tensor(y)).numpy()

    ref = solve_ivp(f_np, (0, 40), [1, 0, 0], method="Radau", rtol=1e-12, atol=1e-16, t_eval=TIMES)
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    print("outputs", "mode", *(f"t={TIMES[i]:g}" for i in (2, 3, 4)), sep="\t")
    at_outputs = {"step_t": torch.tensor(TIMES, dtype=D)}
    for label, extra in (("interpolated", {}), ("step_t=t", at_outputs)):
        for mode in ("direct", "checkpoint", "adjoint"):
            t = torch.tensor(TIMES, dtype=D, requires_grad=True)
            sol = solve(robertson, y0, t, method="kvaerno5", rtol=1e-6, atol=1e-10,
                        sensitivity=mode, **extra)  # fmt: skip
            row = []
            for i in (2, 3, 4):
                g = torch.autograd.grad(sol.ys[i, 1], t, retain_graph=True)[0][i].item()
                true = f_np(TIMES[i], ref.y[:, i])[1]
                row.append(f"{abs(g - true) / abs(true):.2e}")
            print(label, mode, *row, sep="\t")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
