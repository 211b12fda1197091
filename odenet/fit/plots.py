"""Plots of fits: observations, held-out points and the model's curve (matplotlib)."""

from __future__ import annotations

import torch

from odenet.batch import IrregularBatch


def plot_fit(result, context: IrregularBatch, held_out: IrregularBatch | None = None, *,
             tail: IrregularBatch | None = None, path=None, series=(0,), n_points: int = 300,
             t_end: float | None = None, channels=None, band=None):  # fmt: skip
    """Plot predictions of a :class:`~odenet.fit.train.FitResult` on a dense time grid.

    Parameters
    ----------
    result : FitResult
        The fitted model (predicts in physical units).
    context : IrregularBatch
        Observations the model conditions on (drawn as dots).
    held_out : IrregularBatch, optional
        Held-out observations inside the context window (crosses): interpolation targets.
    tail : IrregularBatch, optional
        Held-out observations after the context (squares): extrapolation targets; the
        curve and band extend to the last of them, and the context's end is marked.
    path : str or Path, optional
        Where to save the figure (png/pdf); the figure is returned either way.
    series : sequence of int
        Batch rows to draw, one panel each.
    t_end : float, optional
        Right end of the dense grid (default: last held-out or context time).
    band : callable ``(context, query) -> (lo, mid, hi)`` in physical units, optional
        Draws an uncertainty band (e.g. latent-ODE posterior samples).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(series)
    fig, axes = plt.subplots(len(rows), 1, figsize=(7, 2.6 * len(rows)), squeeze=False)
    D = context.values.shape[-1]
    names = channels or [f"channel {d}" for d in range(D)]
    for ax, b in zip(axes[:, 0], rows):
        n = int(context.lengths[b])
        t0 = float(context.times[b, 0])
        t1 = t_end
        if t1 is None:
            t1 = float(context.times[b, n - 1])
            for extra in (held_out, tail):
                if extra is not None and bool(extra.mask[b].any()):
                    t1 = max(t1, float(extra.times[b, int(extra.lengths[b]) - 1]))
        q = torch.linspace(t0, t1, n_points, dtype=context.times.dtype)[None, :]
        ctx = IrregularBatch(context.times[b : b + 1], context.values[b : b + 1],
                             context.mask[b : b + 1], context.lengths[b : b + 1])  # fmt: skip
        pred = result.predict(ctx, q)[0]
        bands = band(ctx, q) if band is not None else None
        D = pred.shape[-1]
        for d in range(D):
            color = f"C{d}"
            ax.plot(q[0], pred[:, d], color=color, lw=1.2, label=f"{names[d]} model")
            m = context.mask[b, :n, d] > 0
            ax.plot(context.times[b, :n][m], context.values[b, :n, d][m], "o", color=color, ms=3)
            if held_out is not None:
                k = int(held_out.lengths[b])
                mh = held_out.mask[b, :k, d] > 0
                ax.plot(held_out.times[b, :k][mh], held_out.values[b, :k, d][mh], "x",
                        color=color, ms=5)  # fmt: skip
            if tail is not None:
                k = int(tail.lengths[b])
                mt = tail.mask[b, :k, d] > 0
                ax.plot(tail.times[b, :k][mt], tail.values[b, :k, d][mt], "s", mfc="none",
                        color=color, ms=4)  # fmt: skip
            if bands is not None:
                lo, _, hi = bands
                ax.fill_between(q[0], lo[0, :, d], hi[0, :, d], color=color, alpha=0.2)
        ax.axvline(float(context.times[b, n - 1]), color="0.6", lw=0.8, ls="--")
        ax.set_xlabel("time")
        ax.set_title(f"series {b}: dots = context, x = held out (interpolation), "
                     "squares = tail (extrapolation)", fontsize=8)  # fmt: skip
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
