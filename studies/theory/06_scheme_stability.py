"""Claim 6 — stability of the scheme is stability of the network.

A ResNet with the linear field ``f(y) = λ y`` and ``L`` blocks over a horizon ``T`` is
forward Euler with ``h = T/L``: each block multiplies by ``R(hλ)``.  The network's
activations stay bounded iff ``|R(hλ)| ≤ 1``; switching the scheme of the blocks
(``"rk4"``, ``"backward_euler"``) moves the limit exactly where the stability
function ``R`` of the tableau predicts.  On a convolutional (diffusion) field
``u' = D Δ u`` the same holds mode by mode: von Neumann ``max_θ |G(θ)| ≤ 1`` with
``G(θ) = R(hλ(θ))``, ``λ(θ) = −4D sin²(θ/2)/Δx²``.

Run: ``python studies/theory/06_scheme_stability.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from odenet.models import MLPField, ResNet
from odenet.stability import (
    cfl_search,
    real_stability_interval,
    stability_function,
    von_neumann,
)

NAME = "06_scheme_stability"
METHODS = ("euler", "midpoint", "rk4", "backward_euler")
LAM = -4.0  # the test equation's λ (1/time)


@dataclass
class Result:
    table: pd.DataFrame  # per (method, h): measured per-block factor vs |R(hλ)|
    limits: pd.DataFrame  # per method and field: predicted vs measured stability limit


class Diffusion1D(nn.Module):
    """``f(t, u) = D (u_{i-1} − 2u_i + u_{i+1}) / Δx²``, periodic: a fixed 3-tap convolution."""

    def __init__(self, D: float = 1.0, dx: float = 1.0):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular", bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[1.0, -2.0, 1.0]]]) * D / dx**2)

    def forward(self, t, u):  # u [B, N]
        return self.conv(u[:, None])[:, 0]


def scalar_resnet(method: str, h: float, depth: int) -> ResNet:
    """ResNet of ``depth`` blocks of ``method`` on ``y' = λ y`` (a 1-D linear MLPField)."""
    f = MLPField(1, 1, depth=1).double()
    with torch.no_grad():
        f.net[0].weight.fill_(LAM)
        f.net[0].bias.zero_()
    return ResNet(f, depth, method, horizon=h * depth)


def measured_factor(method: str, h: float, depth: int) -> float:
    """``|h_L / h_0|^{1/L}``: the per-block growth measured by running the network."""
    net = scalar_resnet(method, h, depth)
    with torch.no_grad():
        out = net(torch.ones(1, 1, dtype=torch.float64))
    return float(abs(out.item()) ** (1.0 / depth))


def diffusion_step(method: str, r: float, n: int = 32):
    """One block of a ResNet on the diffusion field with ``r = D Δt/Δx²``: ``u -> Φ(u)``."""
    net = ResNet(Diffusion1D().double(), 1, method, horizon=r)
    return lambda u: net.block(0, u[None])[0]


def compute(quick: bool = False) -> Result:
    hs = np.linspace(0.05, 1.0, 12 if quick else 60)
    depth = 30 if quick else 100
    methods = ("euler", "rk4", "backward_euler") if quick else METHODS
    rows = []
    for m in methods:
        R = stability_function(m)
        for h in hs:
            rows.append(
                {
                    "method": m,
                    "h": float(h),
                    "z": float(h * LAM),
                    "measured_factor": measured_factor(m, float(h), depth),
                    "abs_R": float(abs(R(np.array(h * LAM)))),
                }
            )
    table = pd.DataFrame(rows)
    lim = []
    n = 16 if quick else 64
    for m in methods:
        x = real_stability_interval(m)  # left end of the real interval (−inf: A-stable)
        pred_h = x / LAM if np.isfinite(x) else np.inf
        # measured: largest h with a non-growing network (bisection on the real network)
        lo, hi = 1e-3, 5.0
        if measured_factor(m, hi, depth) <= 1 + 1e-12:
            meas_h = np.inf
        else:
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if measured_factor(m, mid, depth) <= 1 + 1e-12 else (lo, mid)
            meas_h = lo
        # diffusion: λ_min = −4 D/Δx², predicted r* = x / (−4); measured by von Neumann bisection
        pred_r = x / -4.0 if np.isfinite(x) else np.inf
        r_star = cfl_search(lambda r, m=m: diffusion_step(m, r, n), (n,), 0.01, 5.0, rtol=1e-6)
        meas_r = np.inf if r_star >= 5.0 else r_star
        vn = von_neumann(diffusion_step(m, 0.9 * min(pred_r, 5.0), n), (n,))
        lim.append(
            {
                "method": m,
                "real_interval_left": x,
                "predicted_h_max": pred_h,
                "measured_h_max": meas_h,
                "predicted_r_max": pred_r,
                "measured_r_max": meas_r,
                "vn_max_G_at_0.9_limit": vn.max_amplification,
            }
        )
    return Result(table, pd.DataFrame(lim))


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(15, 4.3))
    for i, (m, g) in enumerate(res.table.groupby("method", sort=False)):
        axs[0].plot(g.h, g.measured_factor, "o", ms=3, color=f"C{i}", label=f"{m}: network")
        axs[0].plot(g.h, g.abs_R, "-", color=f"C{i}", lw=1)
    axs[0].axhline(1.0, color="k", ls=":")
    axs[0].set(
        xlabel="h (λ = −4)",
        ylabel="growth per block",
        ylim=(0, 3),
        title="ResNet on y' = λy: measured (dots) vs |R(hλ)|",
    )
    axs[0].legend(fontsize=7)
    x, y = np.meshgrid(np.linspace(-5, 1, 301), np.linspace(-3.5, 3.5, 301))
    for i, m in enumerate(res.limits.method):
        R = stability_function(m)
        axs[1].contour(x, y, np.abs(R(x + 1j * y)), levels=[1.0], colors=[f"C{i}"])
        axs[1].plot([], [], color=f"C{i}", label=m)
    axs[1].set(xlabel="Re hλ", ylabel="Im hλ", title="stability regions |R(z)| = 1")
    axs[1].legend(fontsize=7)
    lim = res.limits.replace(np.inf, np.nan)
    xs = np.arange(len(lim))
    axs[2].bar(xs - 0.2, lim.predicted_r_max, 0.4, label="predicted x*/(−4)")
    axs[2].bar(xs + 0.2, lim.measured_r_max, 0.4, label="von Neumann (cfl_search)")
    axs[2].set_xticks(xs, lim.method)
    axs[2].set(ylabel="largest stable r = DΔt/Δx²", title="diffusion ResNet (∞ not drawn)")
    axs[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_lines(res: Result):
    t = res.table
    yield f"max |measured factor − |R(hλ)|| = {(t.measured_factor - t.abs_R).abs().max():.2e}"
    yield res.limits.to_string(index=False, float_format=lambda x: f"{x:.6g}")


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    from _common import run_cli

    res = run_cli(NAME, compute, plot, _summary_lines)
    from _common import write_table

    write_table(res.limits, NAME + "_limits")
