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


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def _styles(keys: list, family: dict) -> dict:
    """A distinct (colour, marker) per key; with many keys, one colour per family.

    Up to ten curves get the ten ``tab10`` colours.  Beyond that colours repeat, so
    curves of one family (e.g. one order of accuracy) share a colour and differ by
    marker, and families are told apart by colour.
    """
    import matplotlib

    if len(keys) <= 10:
        return {k: (f"C{i}", _MARKERS[0]) for i, k in enumerate(keys)}
    fams = list(dict.fromkeys(family[k] for k in keys))
    cmap = matplotlib.colormaps["viridis" if len(fams) > 10 else "tab10"]
    colour = {
        f: cmap(i / max(1, len(fams) - 1) * 0.9) if len(fams) > 10 else cmap(i)
        for i, f in enumerate(fams)
    }
    seen: dict = {}
    out = {}
    for k in keys:
        f = family[k]
        out[k] = (colour[f], _MARKERS[seen.get(f, 0) % len(_MARKERS)])
        seen[f] = seen.get(f, 0) + 1
    return out


def _legend_outside(ax, n: int, title: str | None = None) -> None:
    """The legend right of the axes, in columns of at most 18 entries."""
    if n == 0:
        return
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=7 if n > 8 else 8,
        ncol=max(1, math.ceil(n / 18)),
        title=title,
        title_fontsize=8,
    )


def plot_convergence(result, ax=None, path=None, triangles: bool = True):
    """Log–log error against step size ``h`` per method, fitted points filled.

    Methods are listed by order of accuracy; with more than ten, methods of one order
    share a colour and differ by marker.  Solid lines are explicit methods, dashed
    lines implicit ones.  The legend sits outside the axes.

    Parameters
    ----------
    result : ConvergenceResult
    ax : matplotlib Axes, optional
    path : str or Path, optional
        Save the figure there (and close it).
    triangles : bool
        Slope triangles at the expected orders under the fitted ranges (one per method,
        or one per order when there are more than six methods).

    Returns
    -------
    matplotlib Figure
    """
    from odenet._registry import method as registered_method

    orders = result.orders.sort_values(["expected_order", "method"], kind="stable")
    n = len(orders)
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7 + 2.2 * math.ceil(n / 18), 5))
    else:
        fig = ax.figure
    table = result.table
    family = dict(zip(orders["method"], orders["expected_order"]))
    styles = _styles(list(orders["method"]), family)
    drawn_orders: set = set()
    for _, row in orders.iterrows():
        method = row["method"]
        sub = table[
            (table["method"] == method) & np.isfinite(table["error"]) & (table["error"] > 0)
        ]
        sub = sub.sort_values("h")
        color, marker = styles[method]
        implicit = not registered_method(method).is_explicit
        label = f"{method} (p={row['expected_order']}"
        if math.isfinite(row["observed_order"]):
            label += f", obs. {row['observed_order']:.2f}"
        elif sub.empty:
            label += ", every run failed"
        label += ")"
        ls = "--" if implicit else "-"
        ax.loglog(sub["h"], sub["error"], ls, color=color, lw=1, marker=marker, ms=4, label=label)
        fit = sub[sub["in_fit"]]
        rest = sub[~sub["in_fit"]]
        ax.loglog(rest["h"], rest["error"], marker, color=color, ms=5, mfc="white", ls="none")
        order = int(row["expected_order"])
        if triangles and len(fit) >= 2 and (n <= 6 or order not in drawn_orders):
            drawn_orders.add(order)
            h0 = float(fit["h"].min())
            e0 = float(fit.loc[fit["h"].idxmin(), "error"]) / 3
            _triangle(ax, h0 * 2, e0, order, color)
    ax.set_xlabel("step size h")
    ax.set_ylabel(f"error ({result.norm} norm)")
    ax.set_title(
        f"Convergence on {result.problem!r}\n(hollow: not in the fit; dashed: implicit)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(ax, n, "method (expected, observed order)")
    _save(fig, path)
    return fig


def exact_text(v: float, style: str = "e", min_digits: int = 0) -> str:
    """``v`` in format ``style`` (``"e"``, ``"g"``) with the fewest digits, at least
    ``min_digits``, that give ``v`` back when read: a label never names a number that
    did not run."""
    for digits in range(min_digits, 18):
        text = f"{v:.{digits}{style}}"
        if float(text) == v:
            return text
    return repr(v)  # (not finite)


def tolerance_label(r: float) -> str:
    """``r`` in e-notation with the fewest digits that give ``r`` back: ``1e-03``,
    ``1.5e-04`` (a one-digit format printed 1.5e-4 as ``1e-04`` and 2.5e-4 as ``3e-04``,
    so two tolerances of one study could share a label)."""
    return exact_text(r, "e")


def _setting_label(row) -> str:
    return tolerance_label(row["rtol"]) if row["adaptive"] else f"N={int(row['n_steps'])}"


def plot_work_precision(result, ax=None, path=None, x: str = "nfe", annotate: bool | None = None):
    """Error against cost (``x="nfe"`` or ``"wall"``), one curve per solver.

    The evaluation axis is the table's ``work``: evaluations of ``f`` plus the
    vector–Jacobian products of odenet's autograd Jacobians (scipy's finite-difference
    Jacobians are evaluations of ``f`` already), the cost the summary ranks by.

    Adaptive solvers (a sweep over ``rtol``) are solid lines with filled circles;
    fixed-step solvers (a sweep over the number of steps ``N``) are dashed lines with
    hollow squares.  Each point is labelled with its ``rtol`` or ``N``.

    Parameters
    ----------
    result : WorkPrecisionResult
    x : {"nfe", "wall"}
        Work (function evaluations and Jacobian products), or median wall time in seconds.
    annotate : bool, optional
        Label every point with its setting (default: when there are at most 40 points;
        otherwise only the first and last point of each curve).
    ax, path : as in :func:`plot_convergence`

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    table = result.table
    labels = list(dict.fromkeys(table["label"]))
    if ax is None:
        extra = 2.4 * math.ceil(len(labels) / 18)
        fig, axes = plt.subplots(1, 2, figsize=(12 + extra, 5), layout="constrained")
    else:
        fig, axes = ax.figure, [ax]
    xs = ["nfe", "wall"] if ax is None else [x]
    if annotate is None:
        annotate = len(table) <= 40
    family = {lab: table.loc[table["label"] == lab, "library"].iloc[0] for lab in labels}
    styles = _styles(labels, family)
    for axis, xx in zip(axes, xs):
        # odenet's autograd Jacobians cost products that are not evaluations of f,
        # scipy's finite differences are: plotting nfe alone favoured odenet 9x on
        # brusselator_1d where the table's work says the two are even
        col = ("work" if "work" in table else "nfe") if xx == "nfe" else "wall_s"
        for label in labels:
            every = table[table["label"] == label]
            adaptive = bool(every["adaptive"].iloc[0])
            sub = every[np.isfinite(every["error"]) & (every["error"] > 0)].sort_values(col)
            color, marker = styles[label]
            kind = "rtol sweep" if adaptive else "fixed steps, N sweep"
            axis.loglog(
                sub[col],
                sub["error"],
                "-" if adaptive else "--",
                marker=marker if adaptive else "s",
                mfc=color if adaptive else "white",
                color=color,
                ms=4,
                lw=1,
                label=f"{label} ({kind})",
            )
            pts = list(sub.itertuples(index=False))
            if not annotate and len(pts) > 2:
                pts = [pts[0], pts[-1]]
            for r in pts:
                axis.annotate(
                    _setting_label(r._asdict()),
                    (getattr(r, col), r.error),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=6,
                    color=color,
                )
        axis.set_xlabel(
            "work: f evaluations + Jacobian products" if xx == "nfe" else "wall time [s] (median)"
        )
        axis.set_ylabel(f"{getattr(result, 'error', 'abs')} error ({result.norm} norm)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_title(
        f"Work–precision on {result.problem!r} (solid: adaptive, dashed: fixed step)", fontsize=10
    )
    _legend_outside(axes[-1], len(labels), "solver")
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
