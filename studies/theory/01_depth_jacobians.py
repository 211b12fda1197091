"""Claim 1 — depth is a product of Jacobians.

``∂L/∂h_ℓ = M_ℓᵀ ⋯ M_{L-1}ᵀ ∂L/∂h_L`` with ``M_ℓ = ∂h_{ℓ+1}/∂h_ℓ``.  For plain deep
nets (``odenet.models.MLPField`` with ``init_`` scaled by a gain ``c``) the gradient
norm grows or decays like ``ρ^L`` with ``ρ ≈ c``; for ResNets whose branches start
small (``I + J``, ``‖J‖ ~ ε``) it changes only like ``(1 + ε)^L``.  The analyzer
(``odenet.stability.analyze`` on the layer Jacobians from ``odenet.stability.jacobian``)
predicts the per-layer growth; autograd measures it.  Scalar check:
``1.1^100 = 13780.6``, ``0.9^100 = 2.656e-5``.

Run: ``python studies/theory/01_depth_jacobians.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from odenet.models import MLPField, ResNet, init_
from odenet.stability import analyze, jacobian

NAME = "01_depth_jacobians"


@dataclass
class Result:
    table: pd.DataFrame  # per (arch, activation, gain/eps, width, depth): rates
    curves: dict  # key -> (measured log‖δ_ℓ‖ [L+1], analyzer log backward growth [L+1])


def plain_layers(activation: str, width: int, depth: int, gain: float, seed: int):
    """The ``depth`` maps ``h ↦ W_ℓ φ(h)`` of a deep ``MLPField`` (He/Xavier init × gain)."""
    torch.manual_seed(seed)
    scheme = "he" if activation == "relu" else "xavier"
    net = init_(MLPField(width, width, depth=depth + 1, activation=activation), scheme).double()
    with torch.no_grad():
        for lin in net.net[2::2]:  # scale the maps that follow an activation
            lin.weight.mul_(gain)
    lins, acts = net.net[2::2], net.net[1::2]
    return [lambda h, lin=lin, act=act: lin(act(h)) for lin, act in zip(lins, acts)]


def resnet_layers(activation: str, width: int, depth: int, eps: float, seed: int):
    """The blocks ``h ↦ h + f(h)`` of ``odenet.models.ResNet`` with ``‖f‖`` scaled by ``eps``."""
    torch.manual_seed(seed)
    f = init_(MLPField(width, width, depth=2, activation=activation), "xavier").double()
    with torch.no_grad():
        f.output_layer.weight.mul_(eps)
    net = ResNet(f, depth, "euler", horizon=float(depth))  # Δt = 1: h + f(h)
    return [lambda h, k=k: net.block(k, h[None])[0] for k in range(depth)]


def measure(layers, width: int, seed: int):
    """Autograd ``log ‖∂L/∂h_ℓ‖`` and the analyzer's ``log ‖M_{L-1}⋯M_ℓ‖`` along one input."""
    gen = torch.Generator().manual_seed(seed + 7)
    h = torch.randn(width, generator=gen, dtype=torch.float64).requires_grad_()
    hs = [h]
    for layer in layers:
        hs.append(layer(hs[-1]))
        hs[-1].retain_grad()
    g = torch.randn(width, generator=gen, dtype=torch.float64)
    (g @ hs[-1]).backward()
    measured = np.log([float(x.grad.norm()) for x in hs])
    Ms = torch.stack([jacobian(layer, x.detach()) for layer, x in zip(layers, hs[:-1])])
    rep = analyze(Ms)
    return measured, rep


def per_layer_rate(log_norms: np.ndarray) -> float:
    """``exp(−slope)`` of the least-squares line through ``log‖·‖`` vs layer.

    The slope is the per-layer growth of a gradient travelling back; the offset
    (``‖g‖`` vs the operator norm of the product) drops out.
    """
    ell = np.arange(len(log_norms))
    return float(np.exp(-np.polyfit(ell, log_norms, 1)[0]))


def compute(quick: bool = False) -> Result:
    widths = [64] if quick else [64, 256]
    depths = [30] if quick else [10, 50, 100]
    seeds = [0]
    cases = [("plain", "relu", c) for c in (0.9, 1.0, 1.1)]
    cases += [("plain", "tanh", c) for c in (0.8, 1.5)]
    cases += [("resnet", act, e) for act in ("relu", "tanh") for e in (0.01, 0.05)]
    rows, curves = [], {}
    for arch, act, p in cases:
        for width in widths:
            for depth in depths:
                for seed in seeds:
                    make = plain_layers if arch == "plain" else resnet_layers
                    layers = make(act, width, depth, p, seed)
                    meas, rep = measure(layers, width, seed)
                    back = rep.log_backward_growth
                    rows.append(
                        {
                            "arch": arch,
                            "activation": act,
                            "gain_or_eps": p,
                            "width": width,
                            "depth": depth,
                            "seed": seed,
                            "measured_rate": per_layer_rate(meas),
                            "analyzer_rate": per_layer_rate(back),
                            "analyzer_top_lyapunov_rate": float(np.exp(rep.lyapunov_exponents[0])),
                            "measured_end_to_end": float(np.exp(meas[0] - meas[-1])),
                            "max_spectral_norm": float(rep.spectral_norm.max()),
                        }
                    )
                    if width == widths[-1] and depth == depths[-1] and seed == 0:
                        curves[(arch, act, p)] = (meas - meas[-1], back)
    return Result(pd.DataFrame(rows), curves)


def scalar_checks() -> dict:
    """The theory's scalar examples, ``ρ^100``."""
    return {"1.1^100": 1.1**100, "0.9^100": 0.9**100}


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (key, (meas, back)) in enumerate(res.curves.items()):
        L = len(meas) - 1
        lab = f"{key[0]} {key[1]} {'c' if key[0] == 'plain' else 'ε'}={key[2]}"
        axs[0].semilogy(np.arange(L + 1), np.exp(meas), "-", color=f"C{i % 10}", label=lab)
        axs[0].semilogy(np.arange(L + 1), np.exp(back), ":", color=f"C{i % 10}")
    axs[0].set(
        xlabel="layer ℓ",
        ylabel="‖∂L/∂h_ℓ‖ / ‖∂L/∂h_L‖",
        title="autograd (solid) vs analyzer ‖M_{L-1}⋯M_ℓ‖ (dotted)",
    )
    axs[0].legend(fontsize=6, ncol=2)
    t = res.table
    for i, (arch, g) in enumerate(t.groupby("arch")):
        axs[1].plot(g.analyzer_rate, g.measured_rate, "o", color=f"C{i}", label=arch, ms=4)
    lo, hi = (
        t[["analyzer_rate", "measured_rate"]].min().min(),
        t[["analyzer_rate", "measured_rate"]].max().max(),
    )
    axs[1].plot([lo, hi], [lo, hi], "k:")
    axs[1].set(
        xlabel="analyzer per-layer growth",
        ylabel="autograd per-layer growth",
        title="predicted vs measured (all widths, depths)",
    )
    axs[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_lines(res: Result):
    s = scalar_checks()
    yield f"1.1^100 = {s['1.1^100']:.1f}, 0.9^100 = {s['0.9^100']:.4g}"
    g = res.table.groupby(["arch", "activation", "gain_or_eps"])
    yield g[["measured_rate", "analyzer_rate", "analyzer_top_lyapunov_rate"]].mean().to_string()
    rel = (res.table.measured_rate / res.table.analyzer_rate - 1).abs().max()
    yield f"max |measured/analyzer − 1| per layer = {rel:.3g}"


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    from _common import run_cli

    run_cli(NAME, compute, plot, _summary_lines)
