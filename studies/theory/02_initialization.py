"""Claim 2 — initialization fixes the average.

For a plain net ``h_{l+1} = W_l φ(h_l)``, ``W_l ~ N(0, σ_w²/n)``, mean-field theory
predicts the per-layer gradient-norm ratio ``‖δ_l‖/‖δ_{l+1}‖ = √χ`` with
``χ = σ_w² E[φ'(√q z)²]``: ``1`` for He (``σ_w² = 2``) with ReLU, ``1/√2`` for
Xavier (``σ_w² = 1``) with ReLU, ``≈ 1`` for Xavier with tanh near the origin.  We
compare the prediction (``odenet.stability.meanfield.mean_field``) with autograd on
random nets (``measured_gradient_ratios``) and on ``odenet.models.MLPField`` deep
MLPs initialised with ``odenet.models.init_``, across depths and widths; and check
that zero-initialised residual branches (``zero_init_``) start as the identity.

Run: ``python studies/theory/02_initialization.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from odenet.models import MLPField, ResNet, init_, zero_init_
from odenet.stability import jacobian
from odenet.stability.meanfield import mean_field, measured_gradient_ratios

NAME = "02_initialization"
# (activation, init scheme, σ_w², q0): q0 small for tanh = "near the origin"
CASES = [
    ("relu", "he", 2.0, 1.0),
    ("relu", "xavier", 1.0, 1.0),
    ("tanh", "xavier", 1.0, 0.01),
]


@dataclass
class Result:
    table: pd.DataFrame  # per (case, depth, width): predicted and measured ratios
    identity: pd.DataFrame  # zero-init ResNets: |out − in|, |J − I|


def mlp_ratio(activation: str, scheme: str, depth: int, width: int, q0: float, n_nets: int):
    """Per-layer gradient ratio ``(‖∂L/∂x‖ / ‖∂L/∂y‖)^{1/L}`` of an ``MLPField`` deep MLP.

    ``MLPField(width, width, depth=L+1)`` has ``L`` hidden activations; biases are 0
    after :func:`init_`, the loss is ``g · y`` with ``g ~ N(0, I)``.
    """
    logs = []
    for k in range(n_nets):
        torch.manual_seed(1000 + k)
        net = init_(MLPField(width, width, depth=depth + 1, activation=activation), scheme)
        net = net.double()
        x = (q0**0.5 * torch.randn(1, width, dtype=torch.float64)).requires_grad_()
        # the first map acts on x directly (no activation in front): its ratio is that
        # of a linear layer; remove it by measuring from the first hidden pre-activation
        z1 = net.net[0](x)
        z1.retain_grad()
        y = net.net[1:](z1)
        g = torch.randn_like(y)  # loss g · y, so ∂L/∂y = g
        (g * y).sum().backward()
        logs.append(float(torch.log(z1.grad.norm())) - float(torch.log(g.norm())))
    return float(np.exp(np.mean(logs) / depth))


def zero_init_identity(methods=("euler", "rk4", "backward_euler"), depth: int = 20) -> pd.DataFrame:
    """ResNets with a ``zero_init_``-ed branch: deviation of output and Jacobian from identity."""
    ident = []
    for method in methods:
        torch.manual_seed(0)
        f = zero_init_(MLPField(8, 32, depth=3, activation="tanh")).double()
        net = ResNet(f, depth, method)
        x = torch.randn(5, 8, dtype=torch.float64)
        with torch.no_grad():
            out = net(x)
        J = jacobian(lambda v, net=net: net(v[None])[0], x[0])
        ident.append(
            {
                "method": method,
                "max_abs_out_minus_in": float((out - x).abs().max()),
                "max_abs_J_minus_I": float((J - torch.eye(8, dtype=torch.float64)).abs().max()),
            }
        )
    return pd.DataFrame(ident)


def compute(quick: bool = False) -> Result:
    depths = [10, 25] if quick else [10, 25, 50, 100]
    widths = [64] if quick else [64, 128, 256]
    n_nets = 3 if quick else 8
    rows = []
    for act, scheme, s2, q0 in CASES:
        for depth in depths:
            pred = mean_field(act, s2, depth, q0=q0)
            for width in widths:
                meas = measured_gradient_ratios(act, s2, depth, width, q0=q0, n_nets=n_nets)
                rows.append(
                    {
                        "activation": act,
                        "init": scheme,
                        "sigma_w2": s2,
                        "depth": depth,
                        "width": width,
                        "predicted_ratio": float(np.exp(np.log(pred.gradient_ratio).mean())),
                        "measured_ratio": float(np.exp(0.5 * np.log(meas.chi).mean())),
                        "mlpfield_ratio": mlp_ratio(act, scheme, depth, width, q0, n_nets),
                    }
                )
    return Result(pd.DataFrame(rows), zero_init_identity())


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(11, 4.3))
    t = res.table
    for i, ((act, scheme), g) in enumerate(t.groupby(["activation", "init"], sort=False)):
        p = g.groupby("depth").predicted_ratio.mean()
        axs[0].plot(p.index, p.values, "-", color=f"C{i}", label=f"{act}/{scheme}: mean field")
        axs[0].plot(g.depth, g.measured_ratio, "o", color=f"C{i}", mfc="none", label="measured")
        axs[0].plot(g.depth, g.mlpfield_ratio, "x", color=f"C{i}", label="MLPField + init_")
    axs[0].axhline(1.0, color="k", ls=":")
    axs[0].axhline(2**-0.5, color="k", ls="--", lw=0.8)
    axs[0].set(
        xlabel="depth L",
        ylabel="per-layer ‖δ_l‖/‖δ_{l+1}‖ (geometric mean)",
        title="gradient ratio: prediction vs autograd",
    )
    axs[0].legend(fontsize=6, ncol=2)
    for i, ((act, scheme), g) in enumerate(t.groupby(["activation", "init"], sort=False)):
        d = g.depth.max()
        row = g[g.depth == d]
        axs[1].semilogy(
            row.width, row.measured_ratio**row.depth, "o-", color=f"C{i}", label=f"{act}/{scheme}"
        )
        axs[1].semilogy(row.width, row.predicted_ratio**row.depth, ":", color=f"C{i}")
    axs[1].set(
        xlabel="width",
        ylabel="‖δ_0‖/‖δ_L‖ (deepest)",
        title="end-to-end factor: measured vs predicted (dotted)",
    )
    axs[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_lines(res: Result):
    g = res.table.groupby(["activation", "init"], sort=False)
    yield g[["predicted_ratio", "measured_ratio", "mlpfield_ratio"]].mean().to_string()
    yield res.identity.to_string(index=False)


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    from _common import run_cli

    run_cli(NAME, compute, plot, _summary_lines)
