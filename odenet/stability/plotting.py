"""Plots for the stability analyzer (matplotlib is imported here only, never in numerics)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from odenet.stability.regions import StabilityRegion, stability_region


def plot_stability_regions(
    methods: Sequence, *, re=(-5.0, 2.0), im=(-4.0, 4.0), n: int = 401, ax=None
):
    """Contours ``|R(z)| = 1`` of several methods (names, tableaux or StabilityRegion).

    Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    methods = list(methods)
    if ax is None:
        _, ax = plt.subplots(figsize=(6 + (2 if len(methods) > 6 else 0), 5))
    # beyond ten regions tab10 would repeat colours; tab20 plus line styles stays distinct
    cmap = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    styles = ("solid", "dashed", "dashdot", "dotted")
    for i, m in enumerate(methods):
        reg = m if isinstance(m, StabilityRegion) else stability_region(m, re=re, im=im, n=n)
        color = cmap(i % cmap.N)
        ls = styles[(i // cmap.N) % len(styles)] if len(methods) > 10 else "solid"
        ax.contour(reg.x, reg.y, reg.abs_R, levels=[1.0], colors=[color], linestyles=[ls])
        ax.plot([], [], color=color, ls=ls, label=reg.method)
        # fills pile up into mud with many regions: only outlines then
        if len(methods) <= 6:
            ax.contourf(reg.x, reg.y, reg.abs_R, levels=[0.0, 1.0], colors=[color], alpha=0.08)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("Re z")
    ax.set_ylabel("Im z")
    ax.set_aspect("equal")
    if len(methods) > 6:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7)
    else:
        ax.legend(loc="upper left", fontsize=8)
    ax.set_title("stability regions |R(z)| ≤ 1")
    return ax


def plot_propagation(report, ax=None):
    """Forward and backward growth of the Jacobian products (log scale) of a report."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    n = np.arange(len(report.log_forward_growth))
    ax.semilogy(n, report.forward_growth, label="forward ‖M_{n-1}⋯M_0‖ (errors)")
    ax.semilogy(n, report.backward_growth, label="backward ‖M_{N-1}⋯M_n‖ (gradients)")
    ax.semilogy(n[1:], report.spectral_norm, ":", label="per-step spectral norm")
    ax.semilogy(n[1:], report.spectral_radius, "--", label="per-step spectral radius")
    ax.set_xlabel("step n")
    ax.set_title(f"{report.verdict}")
    ax.legend(fontsize=8)
    return ax


def plot_lyapunov_convergence(result, ax=None):
    """Running averages of the Lyapunov exponents against time."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for j in range(result.running.shape[1]):
        ax.plot(result.times, result.running[:, j], label=f"λ{j + 1}")
    ax.set_xlabel("time")
    ax.set_ylabel("running average")
    ax.legend(fontsize=8)
    return ax


def plot_amplification(result, ax=None):
    """``|G(θ)|`` of a 1-D von Neumann result (first axis for more dimensions)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    th = result.theta[0]
    amp = result.amplification
    while amp.ndim > 1:
        th, amp = th[..., 0], amp.max(axis=-1)
    order = np.argsort(th)
    ax.plot(th[order], amp[order])
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xlabel("θ (rad / cell)")
    ax.set_ylabel("|G(θ)|")
    return ax
