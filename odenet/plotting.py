"""Plots of study results (matplotlib; imported only here, never by the numerics).

- :func:`plot_convergence` — log–log error against step size with reference
  slope triangles at the expected orders;
- :func:`plot_work_precision` — error against function evaluations or wall time;
- :func:`plot_stability_regions` — ``{z : |R(z)| ≤ 1}`` of Runge–Kutta methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 5))
        return fig, ax
    return ax.figure, ax


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)


def _triangle(ax, h0: float, e0: float, order: int, color) -> None:
    """A slope triangle of the given order below-right of the point ``(h0, e0)``."""
    h1 = h0 / 2.0
    e1 = e0 * (h1 / h0) ** order
    ax.plot([h1, h0, h0, h1], [e1, e1, e0, e1], color=color, lw=0.8, alpha=0.7)
    ax.text(h0 * 1.03, math.sqrt(e0 * e1), f"{order}", color=color, fontsize=8, va="center")


def plot_convergence(result, ax=None, path=None, triangles: bool = True):
    """Log–log error against step size ``h`` per method, fitted points filled.

    Parameters
    ----------
    result : ConvergenceResult
    ax : matplotlib Axes, optional
    path : str or Path, optional
        Save the figure there (and close it).
    triangles : bool
        Draw a slope triangle with each method's expected order under its fitted range.

    Returns
    -------
    matplotlib Figure
    """
    fig, ax = _axes(ax)
    table = result.table
    for i, row in result.orders.iterrows():
        sub = table[
            (table["method"] == row["method"]) & np.isfinite(table["error"]) & (table["error"] > 0)
        ]
        sub = sub.sort_values("h")
        color = f"C{i % 10}"
        label = f"{row['method']} (p={row['expected_order']}"
        if math.isfinite(row["observed_order"]):
            label += f", observed {row['observed_order']:.2f}"
        label += ")"
        ax.loglog(sub["h"], sub["error"], "-", color=color, lw=1, label=label)
        fit = sub[sub["in_fit"]]
        rest = sub[~sub["in_fit"]]
        ax.loglog(fit["h"], fit["error"], "o", color=color, ms=5)
        ax.loglog(rest["h"], rest["error"], "o", color=color, ms=5, mfc="none")
        if triangles and len(fit) >= 2:
            h0 = float(fit["h"].min())
            e0 = float(fit.loc[fit["h"].idxmin(), "error"]) / 3
            _triangle(ax, h0 * 2, e0, int(row["expected_order"]), color)
    ax.set_xlabel("step size h")
    ax.set_ylabel(f"error ({result.norm} norm)")
    ax.set_title(f"Convergence on {result.problem!r} (filled: points in the fit)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return fig


def plot_work_precision(result, ax=None, path=None, x: str = "nfe"):
    """Error against cost (``x="nfe"`` or ``"wall"``), one curve per solver.

    Parameters
    ----------
    result : WorkPrecisionResult
    x : {"nfe", "wall"}
        Function evaluations, or median wall time in seconds.
    ax, path : as in :func:`plot_convergence`

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    else:
        fig, axes = ax.figure, [ax]
    xs = ["nfe", "wall"] if ax is None else [x]
    table = result.table
    for axis, xx in zip(axes, xs):
        col = "nfe" if xx == "nfe" else "wall_s"
        for i, label in enumerate(dict.fromkeys(table["label"])):
            sub = table[
                (table["label"] == label) & np.isfinite(table["error"]) & (table["error"] > 0)
            ]
            sub = sub.sort_values(col)
            style = "-o" if sub["library"].iloc[0] == "odenet" else "--s" if len(sub) else "-o"
            axis.loglog(sub[col], sub["error"], style, color=f"C{i % 10}", ms=4, lw=1, label=label)
        axis.set_xlabel("function evaluations" if xx == "nfe" else "wall time [s] (median)")
        axis.set_ylabel(f"error ({result.norm} norm)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    axes[0].set_title(f"Work–precision on {result.problem!r}")
    _save(fig, path)
    return fig


def _stability_function(name):
    """``R(z)`` from the stability analyzer when present, else ``1 + z bᵀ(I - zA)⁻¹ 1``."""
    from odenet.tableaus import tableau

    tab = tableau(name)
    try:
        from odenet.stability import stability_function

        return stability_function(tab)
    except ImportError:
        A, b = np.asarray(tab.A), np.asarray(tab.b)
        s = A.shape[0]

        def R(z):
            z = np.asarray(z, dtype=complex)
            flat = z.reshape(-1)
            M = np.eye(s)[None] - flat[:, None, None] * A[None]
            x = np.linalg.solve(M, np.ones((flat.size, s, 1), dtype=complex))[..., 0]
            return (1 + flat * (x @ b)).reshape(z.shape)

        return R


def plot_stability_regions(
    methods: Sequence[str],
    ax=None,
    path=None,
    extent: tuple[float, float, float, float] = (-6.0, 2.0, -4.0, 4.0),
    n: int = 401,
):
    """Boundaries ``|R(z)| = 1`` of the stability regions of the given methods.

    Parameters
    ----------
    methods : list of str
    extent : (re_min, re_max, im_min, im_max)
    n : int
        Grid points per axis.

    Returns
    -------
    matplotlib Figure
    """
    fig, ax = _axes(ax)
    re = np.linspace(extent[0], extent[1], n)
    im = np.linspace(extent[2], extent[3], n)
    Z = re[None, :] + 1j * im[:, None]
    handles = []
    for i, m in enumerate(methods):
        R = _stability_function(m)
        with np.errstate(all="ignore"):
            amp = np.abs(R(Z))
        color = f"C{i % 10}"
        ax.contour(re, im, amp, levels=[1.0], colors=[color], linewidths=1.2)
        ax.contourf(re, im, amp, levels=[0, 1.0], colors=[color], alpha=0.08)
        handles.append(
            __import__("matplotlib.lines", fromlist=["Line2D"]).Line2D([], [], color=color, label=m)
        )
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("Re z")
    ax.set_ylabel("Im z")
    ax.set_aspect("equal")
    ax.set_title("Stability regions |R(z)| ≤ 1")
    ax.legend(handles=handles, fontsize=8)
    _save(fig, path)
    return fig


__all__ = ["plot_convergence", "plot_stability_regions", "plot_work_precision"]
