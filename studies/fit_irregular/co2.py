"""Benchmark: weekly Mauna Loa CO₂ (statsmodels), genuine gaps; interpolation across gaps and
extrapolation of the last two years.

    python studies/fit_irregular/co2.py --iters 150 --seeds 0 1 2 3 4
    python studies/fit_irregular/co2.py --seeds 0 1 2 3 4 --models greybox_seasonal

The interpolation target depends on where the random gaps fall, so every ``--seeds``
value draws a new set of gap blocks (and a new initialisation); the summary reports the
median and range over seeds and on how many seeds a model beats the baseline.

Time ``t`` is in Julian years (365.25 days) from the epoch J2000 (``datasets.co2()``), so it
is uniform in days and ``sin 2πkt`` has a period of exactly 365.25/k days.

Protocol: one series, split by time.  Extrapolation target: the last ``--tail-years``
(default 2) years, conditioning only on the past.  Interpolation target: ``--blocks``
random blocks of ``--block-weeks`` consecutive observations inside the training window
(gaps long enough that the seasonal shape matters).  Models see the remaining points.
Baselines: linear interpolation (interpolation) and the seasonal-naive forecast
(the value one year earlier, repeated; extrapolation).  Models:

- ``greybox_seasonal`` — ``dx/dt = a + b (t − 1980) + Σ_{k=1,2} c_k sin 2πkt + d_k cos 2πkt``,
  state reset at each observation (a mechanistic "trend + annual cycle" rate law);
- ``neural_ode_seasonal`` — ``dx/dt = MLP(x, sin 2πt, cos 2πt, sin 4πt, cos 4πt)``.

Appends to results/co2.csv (one row per model and seed; an earlier row of the same
model and seed is replaced) and writes results/co2.md (summary over seeds + all rows).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from common import RESULTS
from torch import nn

from odenet.batch import IrregularBatch
from odenet.fit import GreyBoxField, LinearInterpolation, ShootingODE, datasets, fit, select
from odenet.fit._common import masked_mse


def seasonal_rate(t, x, p):
    tt = t[:, None] if t.dim() == 1 else t
    out = p["a"] + p["b"] * (tt - 1980.0)
    for k in (1, 2):
        w = 2 * math.pi * k * tt
        out = out + p[f"c{k}"] * torch.sin(w) + p[f"d{k}"] * torch.cos(w)
    return out.expand_as(x)


class SeasonalMLP(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, 1))  # fmt: skip

    def forward(self, t, x):
        tt = (t[:, None] if t.dim() == 1 else t.expand(x.shape[0], 1)).to(x.dtype)
        w = 2 * math.pi * tt
        feats = [x, torch.sin(w), torch.cos(w), torch.sin(2 * w), torch.cos(2 * w),
                 (tt - 1980.0) / 20]  # fmt: skip
        return self.net(torch.cat(feats, -1))


def seasonal_naive(ctx: IrregularBatch, query: torch.Tensor) -> torch.Tensor:
    """Value at the context time nearest to ``q − k`` years, ``k`` the fewest whole years
    that land inside the context."""
    n = int(ctx.lengths[0])
    t, v = ctx.times[0, :n], ctx.values[0, :n, 0]
    t_last = t[-1]
    k = torch.ceil((query[0] - t_last) / 1.0).clamp_min(1)
    src = query[0] - k
    idx = (t[None, :] - src[:, None]).abs().argmin(1)
    return v[idx][None, :, None]


def block_holdout(batch: IrregularBatch, n_blocks: int, weeks: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    n = int(batch.lengths[0])
    out = torch.zeros_like(batch.valid)
    starts = torch.randperm(n - 2 * weeks, generator=g)[:n_blocks] + weeks
    for s in starts.tolist():
        out[0, s : s + weeks] = True
    return select(batch, ~out), select(batch, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--tail-years", type=float, default=2.0)
    ap.add_argument("--blocks", type=int, default=20)
    ap.add_argument("--block-weeks", type=int, default=8)
    ap.add_argument(
        "--models",
        nargs="*",
        default=None,
        help="greybox_seasonal and/or neural_ode_seasonal (default both)",
    )
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = datasets.co2()
    b = data.batch
    t_end = float(b.times[0, int(b.lengths[0]) - 1])
    past = select(b, b.times <= t_end - args.tail_years)
    tail = select(b, b.times > t_end - args.tail_years)
    rows = []
    for seed in args.seeds:
        ctx, held = block_holdout(past, args.blocks, args.block_weeks, seed)
        lin = LinearInterpolation().predict(ctx, held.times)
        naive = seasonal_naive(ctx, tail.times)
        rows.append(dict(model="linear_interp", seed=seed,
                         interp_mse=float(masked_mse(lin, held.values, held.mask)),
                         extrap_mse=float(masked_mse(LinearInterpolation().predict(ctx, tail.times),
                                                     tail.values, tail.mask)),
                         train_s=0.0, n_params=0))  # fmt: skip
        rows.append(dict(model="seasonal_naive", seed=seed,
                         interp_mse=math.nan,  # a forecast, not an interpolator
                         extrap_mse=float(masked_mse(naive, tail.values, tail.mask)),
                         train_s=0.0, n_params=0))  # fmt: skip
        guess = {"a": 1.0, "b": 0.0, "c1": 0.0, "d1": 0.0, "c2": 0.0, "d2": 0.0}
        models = {
            "greybox_seasonal": (
                lambda: ShootingODE(GreyBoxField(seasonal_rate, guess, positive=False),  # noqa: B023
                                    horizon=4, physical=True, rtol=1e-6, atol=1e-6),
                dict(optimizer="lbfgs", iters=3),
            ),
            "neural_ode_seasonal": (
                lambda: ShootingODE(SeasonalMLP(), horizon=4, rtol=1e-4, atol=1e-5),
                dict(iters=args.iters, lr=1e-2, batch_size=None),
            ),
        }  # fmt: skip
        models = {k: v for k, v in models.items() if args.models is None or k in args.models}
        for name, (ctor, kw) in models.items():
            torch.manual_seed(seed)
            model = ctor()
            t0 = time.perf_counter()
            res = fit(model, ctx, None, seed=seed, eval_every=25, max_seconds=args.max_seconds,
                      **kw)  # fmt: skip
            row = dict(model=name, seed=seed, interp_mse=res.mse(ctx, held),
                       extrap_mse=res.mse(ctx, tail), train_s=round(time.perf_counter() - t0, 1),
                       n_params=sum(p.numel() for p in model.parameters()),
                       iters=res.iterations)  # fmt: skip
            if name == "greybox_seasonal":
                row["params"] = " ".join(f"{k}={v:.4g}" for k, v in model.field.values().items())
            rows.append(row)
            print(row, flush=True)
            if seed == 0 and not args.no_plots:
                from odenet.fit.data import concat
                from odenet.fit.plots import plot_fit

                plot_fit(res, ctx, concat(held, tail), path=RESULTS / f"co2_{name}.png",
                         n_points=3000, channels=["co2 (ppm)"])  # fmt: skip
    write_results(rows)


KEYS = ["model", "seed", "interp_mse", "extrap_mse", "train_s", "iters", "n_params", "params"]


def write_results(rows: list) -> None:
    """Merge ``rows`` into results/co2.csv (same model and seed replaced); write co2.md."""
    import pandas as pd

    path = RESULTS / "co2.csv"
    RESULTS.mkdir(exist_ok=True)
    new = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path)
        key = set(zip(new["model"], new["seed"]))
        old = old[[(m, s) not in key for m, s in zip(old["model"], old["seed"])]]
        new = pd.concat([old, new], ignore_index=True)
    new = new.reindex(columns=KEYS).sort_values(["model", "seed"], kind="stable")
    new.to_csv(path, index=False)
    text = summary(new)
    (RESULTS / "co2.md").write_text(text + "\n")
    print(text)


def summary(df) -> str:
    """Median [min, max] over seeds; wins against the baselines on the same seed."""
    lin = df[df.model == "linear_interp"].set_index("seed")
    naive = df[df.model == "seasonal_naive"].set_index("seed")
    lines = ["| model | seeds | interp MSE (ppm²) median [min, max] | seeds beating linear "
             "interp | extrap MSE (ppm²) median [min, max] | seeds beating seasonal naive | "
             "train s (median) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, g in df.groupby("model", sort=False):
        g = g.set_index("seed")

        def cell(c, g=g):
            v = g[c].dropna()
            return "—" if v.empty else f"{v.median():.3g} [{v.min():.3g}, {v.max():.3g}]"

        def wins(c, base, g=g, name=name):
            s = [i for i in g.index if i in base.index and not math.isnan(g.at[i, c])]
            if name in ("linear_interp", "seasonal_naive") or not s:
                return "—"
            return f"{sum(g.at[i, c] < base.at[i, c] for i in s)}/{len(s)}"

        lines.append(f"| {name} | {len(g)} | {cell('interp_mse')} | {wins('interp_mse', lin)} | "
                     f"{cell('extrap_mse')} | {wins('extrap_mse', naive)} | "
                     f"{g['train_s'].median():.3g} |")  # fmt: skip
    lines += ["", "Per seed:", "", "| model | seed | interp MSE | extrap MSE | train s | iters |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r.model} | {r.seed} | {r.interp_mse:.4g} | {r.extrap_mse:.4g} | {r.train_s} | "
              f"{r.iters} |" for r in df.itertuples()]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
