"""Claim 5 — error propagation = gradient propagation.

Forward Euler on ``y' = f(y)`` and the ResNet/linearised RNN ``h_{n+1} = h_n + Δt f(h_n)``
are the same step map ``Φ``; its Jacobian ``M_n = ∂Φ/∂y`` drives both the integrator's
global-error recurrence ``e_{n+1} = M_n e_n + τ_n`` and the network's backprop
recurrence ``a_n = M_nᵀ a_{n+1}``.  We check: (i) the integrator's and the network's
``M_n`` are identical matrices, (ii) backprop through the network (autograd) equals
the transposed error recurrence run with the integrator's ``M_n``, (iii) the
propagated local errors predict the global error (exactly for a linear field, to
second order for a nonlinear one).

Run: ``python studies/theory/05_error_is_gradient.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from odenet.models import MLPField, ResNet
from odenet.stability import jacobians
from odenet.stability.duality import backpropagate, global_error_prediction

NAME = "05_error_is_gradient"
T_END = 2.0


@dataclass
class Result:
    table: pd.DataFrame  # per (field, method, n_steps): mismatches
    curves: dict  # per case: t, |actual|, |predicted|, |autograd a_n|, |backprop a_n|


def linear_field(dim: int = 4, seed: int = 0) -> MLPField:
    """``f(y) = A y`` as a one-layer ``MLPField`` (bias 0); ``A`` damped, non-normal."""
    gen = torch.Generator().manual_seed(seed)
    f = MLPField(dim, dim, depth=1).double()
    rot = torch.zeros(dim, dim, dtype=torch.float64)
    for i in range(0, dim - 1, 2):
        rot[i, i + 1], rot[i + 1, i] = 2.0, -2.0
    A = -0.3 * torch.eye(dim, dtype=torch.float64) + rot
    A += 0.5 * torch.triu(torch.randn(dim, dim, generator=gen, dtype=torch.float64), 1)
    with torch.no_grad():
        f.net[0].weight.copy_(A)
        f.net[0].bias.zero_()
    return f


def nonlinear_field(dim: int = 4, seed: int = 0) -> MLPField:
    """A random tanh ``MLPField`` (width 16) in float64."""
    torch.manual_seed(seed)
    return MLPField(dim, 16, depth=2, activation="tanh").double()


def exact_linear(f: MLPField, y0: torch.Tensor):
    A = f.net[0].weight.detach()
    return lambda t: torch.linalg.matrix_exp(A * t) @ y0


def exact_by_solve(f: MLPField, y0: torch.Tensor, n: int):
    """Reference solution on the grid by a tight dop853 solve (rtol 1e-12)."""
    import odenet

    t = torch.linspace(0.0, T_END, n + 1, dtype=torch.float64)
    with torch.no_grad():
        ys = odenet.solve(f, y0, t, method="dop853", rtol=1e-12, atol=1e-14).ys
    table = {round(float(tk), 12): ys[k] for k, tk in enumerate(t)}
    return lambda tk: table[round(float(tk), 12)]


def gradient_duality(f: MLPField, y0: torch.Tensor, n: int, method: str):
    """Backprop through ``ResNet(f, n, method)`` vs ``a_n = M_nᵀ a_{n+1}`` with the solver's M_n.

    Returns (max |M_resnet − M_solver|, autograd a_n [n+1, d], recurrence a_n [n+1, d]).
    """
    import odenet

    net = ResNet(f, n, method, horizon=T_END)
    h = y0[None].clone().requires_grad_(True)
    hs = [h]
    for layer in range(n):  # the network's own blocks; keep every state for its gradient
        hs.append(net.block(layer, hs[-1]))
        hs[-1].retain_grad()
    w = torch.linspace(1.0, -1.0, y0.numel(), dtype=torch.float64)
    loss = (w * hs[-1][0]).sum() + 0.5 * (hs[-1] ** 2).sum()
    loss.backward()
    a_autograd = torch.stack([x.grad[0] for x in hs])
    states = torch.stack([x.detach()[0] for x in hs[:-1]])
    dt = T_END / n
    M_net = torch.stack(
        [jacobians(lambda y, k=k: net.block(k, y[None])[0], states[k : k + 1])[0] for k in range(n)]
    )
    M_solver = torch.stack(
        [
            jacobians(lambda y, k=k: odenet.step(f, k * dt, y, dt, method), states[k : k + 1])[0]
            for k in range(n)
        ]
    )
    a_rec = backpropagate(M_solver, a_autograd[-1])
    return float((M_net - M_solver).abs().max()), a_autograd, a_rec


def compute(quick: bool = False) -> Result:
    ns = [10, 20, 40] if quick else [25, 50, 100, 200]
    methods = ["euler", "rk4"] if quick else ["euler", "midpoint", "rk4"]
    y0 = torch.tensor([1.0, 0.0, -0.5, 0.5], dtype=torch.float64)
    rows, curves = [], {}
    for kind in ("linear", "nonlinear"):
        f = linear_field() if kind == "linear" else nonlinear_field()
        for method in methods:
            for n in ns:
                exact = exact_linear(f, y0) if kind == "linear" else exact_by_solve(f, y0, n)
                with torch.no_grad():
                    gep = global_error_prediction(f, exact, 0.0, T_END, n, method)
                dM, a_auto, a_rec = gradient_duality(f, y0, n, method)
                err = gep.actual.norm(dim=1)
                rows.append(
                    {
                        "field": kind,
                        "method": method,
                        "n_steps": n,
                        "h": T_END / n,
                        "max_global_error": float(err.max()),
                        "error_prediction_mismatch": gep.relative_mismatch,
                        "max_M_difference": dM,
                        "gradient_mismatch": float(
                            (a_auto - a_rec).abs().max() / a_auto.abs().max()
                        ),
                    }
                )
                if n == ns[len(ns) // 2]:
                    curves[(kind, method)] = {
                        "t": gep.t.numpy(),
                        "actual": err.numpy(),
                        "predicted": gep.predicted.norm(dim=1).numpy(),
                        "a_autograd": a_auto.detach().norm(dim=1).numpy(),
                        "a_recurrence": a_rec.detach().norm(dim=1).numpy(),
                    }
    return Result(pd.DataFrame(rows), curves)


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(15, 4.3))
    for i, ((kind, method), c) in enumerate(res.curves.items()):
        if kind != "nonlinear":
            continue
        axs[0].semilogy(c["t"], c["actual"], "-", color=f"C{i}", label=f"{method}: actual")
        axs[0].semilogy(c["t"], c["predicted"], "k:", lw=1)
        axs[1].semilogy(c["t"], c["a_autograd"], "-", color=f"C{i}", label=f"{method}: autograd")
        axs[1].semilogy(c["t"], c["a_recurrence"], "k:", lw=1)
    axs[0].set(xlabel="t", ylabel="‖e_n‖", title="global error: actual vs Σ M⋯M τ (dotted)")
    axs[1].set(
        xlabel="t = layer·Δt", ylabel="‖∂L/∂h_n‖", title="backprop vs Mᵀ recurrence (dotted)"
    )
    axs[0].legend(fontsize=7)
    axs[1].legend(fontsize=7)
    t = res.table[res.table.field == "nonlinear"]
    for method, g in t.groupby("method"):
        axs[2].loglog(g.h, g.error_prediction_mismatch, "o-", label=method)
    axs[2].set(xlabel="h", ylabel="relative mismatch", title="nonlinear: prediction error → 0")
    axs[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_lines(res: Result):
    t = res.table
    yield t.to_string(index=False, float_format=lambda x: f"{x:.3g}")
    yield f"max |M_net - M_solver| = {t.max_M_difference.max():.2e}"
    yield f"max gradient mismatch = {t.gradient_mismatch.max():.2e}"
    lin = t[t.field == "linear"].error_prediction_mismatch.max()
    yield f"linear field: max error-prediction mismatch = {lin:.2e}"


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    from _common import run_cli

    run_cli(NAME, compute, plot, _summary_lines)
