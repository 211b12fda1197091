"""Claim 8 — adaptive optimizers cancel depth scaling.

In a deep network the gradient of layer ℓ carries a scale ``s_ℓ`` that shrinks
geometrically with distance from the output (vanishing gradients); we impose
``s_ℓ = 10^{-k(L-ℓ)}`` on the gradients of a deep tanh ``MLPField``.  One SGD step
moves layer ℓ by ``η‖g_ℓ‖ ∝ s_ℓ``; one Adam step moves it by
about ``η √(#params)`` whatever ``s_ℓ`` (``m/√v`` is invariant to a per-coordinate
scale).  Natural gradient is the geometric version: with the Fisher matrix ``F`` the
step ``F⁻¹g`` is invariant to any reparametrisation, so rescaling a layer's
parameters ``θ₁ = s φ₁`` leaves the change of the model's outputs unchanged, while SGD's
changes like ``s²`` and Adam's like ``s``.

Run: ``python studies/theory/08_adam_vs_sgd.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call, jacrev

from odenet.models import MLPField, init_

NAME = "08_adam_vs_sgd"


@dataclass
class Result:
    table: pd.DataFrame  # per (optimizer, layer): gradient norm, update norm
    natural: pd.DataFrame  # per (scale s, optimizer): ‖Δ outputs‖


def deep_net(depth: int, width: int, gain: float, seed: int = 0) -> MLPField:
    torch.manual_seed(seed)
    net = MLPField(width, width, depth=depth, activation="tanh").double()
    return init_(net, "xavier", gain=gain)


def per_layer_updates(
    opt_name: str, depth: int, width: int, gain: float, decade_per_layer: float, lr: float = 1e-3
):
    """Scaled gradient norm ``s_ℓ‖g_ℓ‖`` and the first-step update ``‖Δθ_ℓ‖`` per linear layer.

    ``s_ℓ = 10^{-decade_per_layer·(L-1-ℓ)}`` multiplies layer ℓ's gradients (weights
    and bias) after backprop: the vanishing-gradient profile, made explicit.
    """
    net = deep_net(depth, width, gain)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, width, generator=gen, dtype=torch.float64)
    y = torch.randn(64, width, generator=gen, dtype=torch.float64)
    lins = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    before = [lin.weight.detach().clone() for lin in lins]
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[opt_name](net.parameters(), lr=lr)
    opt.zero_grad()
    ((net(0.0, x) - y) ** 2).mean().backward()
    for i, lin in enumerate(lins):
        scale = 10.0 ** (-decade_per_layer * (len(lins) - 1 - i))
        lin.weight.grad.mul_(scale)
        lin.bias.grad.mul_(scale)
    grads = [float(lin.weight.grad.norm()) for lin in lins]
    opt.step()
    return [
        {
            "optimizer": opt_name,
            "layer": i,
            "grad_norm": grads[i],
            "update_norm": float((lin.weight.detach() - before[i]).norm()),
        }
        for i, lin in enumerate(lins)
    ]


def natural_gradient_invariance(scales, lr: float = 1e-3) -> pd.DataFrame:
    """Reparametrise layer 1 of a small MLPField by ``θ₁ = s φ₁``; one step of SGD, Adam
    and natural gradient (Fisher of a unit-variance Gaussian likelihood, ``F = E[JᵀJ]``)
    in ``φ``; report the first-order change of the outputs ``‖J Δφ‖`` over the data.

    ``F⁺`` is the pseudo-inverse and the two ``1/n`` of ``F = JᵀJ/n`` and ``g = Jᵀr/n``
    cancel, so ``J F⁺ g = P_range(J) r``: the projection of the residual, the same for
    every invertible reparametrisation.
    """
    torch.manual_seed(3)
    base = MLPField(1, 4, depth=2, activation="tanh").double()
    x = torch.linspace(-2, 2, 32, dtype=torch.float64)[:, None]
    y = torch.sin(2 * x)
    names = [n for n, _ in base.named_parameters()]
    theta = {n: p.detach().clone() for n, p in base.named_parameters()}
    first = names[0]  # net.0.weight
    rows = []
    for s in scales:
        phi0 = {n: (v / s if n == first else v) for n, v in theta.items()}

        def outputs(phi, s=s):
            params = {n: (v * s if n == first else v) for n, v in phi.items()}
            return functional_call(base, params, (0.0, x))[:, 0]

        def loss(phi):
            return 0.5 * ((outputs(phi) - y[:, 0]) ** 2).mean()

        g = jacrev(loss)(phi0)
        gvec = torch.cat([g[n].reshape(-1) for n in names])
        J = jacrev(outputs)(phi0)
        Jm = torch.cat([J[n].reshape(len(x), -1) for n in names], dim=1)
        F = Jm.T @ Jm / len(x)
        steps = {
            "sgd": -lr * gvec,
            "adam": -lr * gvec / (gvec.abs() + 1e-8),  # Adam's first step: m/√v = sign
            "natural": -lr * torch.linalg.pinv(F, rtol=1e-13, hermitian=True) @ gvec,
        }
        for opt_name, d in steps.items():
            rows.append(
                {"scale": s, "optimizer": opt_name, "output_change": float((Jm @ d).norm())}
            )
    return pd.DataFrame(rows)


def compute(quick: bool = False) -> Result:
    depth, width = (10, 16) if quick else (20, 32)
    rows = []
    for opt_name in ("sgd", "adam"):
        rows += per_layer_updates(opt_name, depth, width, gain=1.0, decade_per_layer=0.3)
    scales = [1.0, 0.1, 0.01] if quick else [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
    return Result(pd.DataFrame(rows), natural_gradient_invariance(scales))


def slope(table: pd.DataFrame, optimizer: str) -> float:
    """Slope of log ‖Δθ_ℓ‖ against log ‖g_ℓ‖ across layers (1: ∝ s_ℓ, 0: independent)."""
    t = table[table.optimizer == optimizer]
    return float(np.polyfit(np.log(t.grad_norm), np.log(t.update_norm), 1)[0])


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(12, 4.3))
    for opt_name, g in res.table.groupby("optimizer"):
        axs[0].loglog(
            g.grad_norm,
            g.update_norm,
            "o-",
            label=f"{opt_name}: slope {slope(res.table, opt_name):.3f}",
        )
    axs[0].set(
        xlabel="‖g_ℓ‖ (layer gradient, vanishing towards the input)",
        ylabel="‖Δθ_ℓ‖ after one step",
        title="per-layer update vs gradient scale",
    )
    axs[0].legend()
    for opt_name, g in res.natural.groupby("optimizer"):
        axs[1].loglog(g.scale, g.output_change, "o-", label=opt_name)
    axs[1].set(
        xlabel="reparametrisation scale s (θ₁ = s φ₁)",
        ylabel="‖Δf‖ after one step",
        title="natural gradient is invariant to the parametrisation",
    )
    axs[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_lines(res: Result):
    sgd, adam = slope(res.table, "sgd"), slope(res.table, "adam")
    yield f"slope log‖Δθ‖ vs log‖g‖: sgd {sgd:.4f}, adam {adam:.4f}"
    g = res.table.groupby("optimizer").grad_norm
    yield f"gradient norms span {float((g.max() / g.min()).max()):.3g}×"
    yield res.natural.pivot(index="scale", columns="optimizer", values="output_change").to_string()


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    from _common import run_cli, write_table

    res = run_cli(NAME, compute, plot, _summary_lines)
    write_table(res.natural, NAME + "_natural")
