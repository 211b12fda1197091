"""``odenet fit data.csv --model …``: fit a model to a long-format table from the shell.

The CLI module of the package calls :func:`register` to add the subcommand.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from odenet.fit.baselines import GRUD, LOCF, GRUDeltaT, GRUGrid, LinearInterpolation, TrainingMean
from odenet.fit.continuous import LatentODEForecaster, ODERNNForecaster, ShootingODE, neural_ode
from odenet.fit.data import holdout_points, load_long, split_series, split_tail
from odenet.fit.greybox import MECHANISMS, GreyBoxField, GreyBoxMLE


def build_model(name: str, dim: int, *, hidden: int = 32, horizon: int = 4,
                mechanism: str | None = None, hybrid: bool = False):  # fmt: skip
    """A model of ``odenet fit --model NAME`` for ``dim`` channels."""
    from odenet._errors import InputError

    if name in ("greybox", "greybox_mle"):
        if mechanism not in MECHANISMS:
            raise InputError(
                f"--model {name} needs --mechanism, one of {sorted(MECHANISMS)}; got {mechanism!r}."
            )
        mech, guess = MECHANISMS[mechanism]
        if name == "greybox_mle":  # parameters + initial states by Levenberg–Marquardt
            if hybrid:
                raise InputError(
                    "--hybrid adds a neural correction, which the least-squares fit of "
                    "--model greybox_mle cannot train; use --model greybox --hybrid."
                )
            return GreyBoxMLE(GreyBoxField(mech, guess), node_every=4)
        corr = None
        if hybrid:
            from odenet.fit.continuous import TimeInvariantMLP

            corr = TimeInvariantMLP(dim, hidden)
        return ShootingODE(GreyBoxField(mech, guess, correction=corr), horizon=horizon,
                           physical=True)  # fmt: skip
    zoo = {
        "neural_ode": lambda: neural_ode(dim, hidden, horizon=horizon, rtol=1e-3, atol=1e-4),
        "ode_rnn": lambda: ODERNNForecaster(dim, hidden, horizon=horizon),
        "latent_ode": lambda: LatentODEForecaster(dim, 4, hidden),
        "gru_grid": lambda: GRUGrid(dim, hidden, horizon=horizon),
        "gru_dt": lambda: GRUDeltaT(dim, hidden, horizon=horizon),
        "gru_d": lambda: GRUD(dim, hidden, horizon=horizon),
        "linear_interp": LinearInterpolation,
        "locf": LOCF,
        "mean": TrainingMean,
    }
    if name not in zoo:
        raise InputError(f"unknown --model {name!r}; choose one of {sorted(MODEL_NAMES)}.")
    return zoo[name]()


MODEL_NAMES = ["neural_ode", "greybox", "greybox_mle", "ode_rnn", "latent_ode", "gru_grid",
               "gru_dt", "gru_d", "linear_interp", "locf", "mean"]  # fmt: skip


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``fit`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "fit",
        help="fit a continuous-time model to irregularly sampled series (long-format CSV)",
        description="Fit a model to a long-format CSV (series id, time, one column per "
        "channel; empty cells = missing).  Holds out the tail of every series for "
        "extrapolation and a random 20%% of the remaining points for interpolation, "
        "prints both MSEs, and saves a checkpoint.",
    )
    p.add_argument("data", help="CSV file")
    p.add_argument("--model", default="neural_ode", choices=MODEL_NAMES)
    p.add_argument("--mechanism", choices=sorted(MECHANISMS), help="grey-box vector field")
    p.add_argument("--hybrid", action="store_true", help="grey-box plus a neural correction")
    p.add_argument("--id-col", default="id")
    p.add_argument("--time-col", default="time")
    p.add_argument("--channels", nargs="*", default=None)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--horizon", type=int, default=4, help="observations per training shot")
    p.add_argument("--optimizer", choices=["adam", "lbfgs", "gauss_newton"], default=None,
                   help="default: gauss_newton for greybox_mle, adam otherwise")  # fmt: skip
    p.add_argument("--tail", type=float, default=0.2, help="fraction of each span held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="odenet_fit.pt")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--plot", default=None, help="save a plot of the fit (png)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from odenet.fit.train import fit

    data = load_long(args.data, id_col=args.id_col, time_col=args.time_col, channels=args.channels)
    torch.manual_seed(args.seed)
    model = build_model(args.model, len(data.channels), hidden=args.hidden, horizon=args.horizon,
                        mechanism=args.mechanism, hybrid=args.hybrid)  # fmt: skip
    if data.n_series >= 5:
        train, val, test = split_series(data, (0.6, 0.2, 0.2), seed=args.seed)
        val_w = split_tail(val.batch, args.tail)[0]
    else:  # too few series to split by series: fit and score on the same series' windows
        train, test, val_w = data, data, None
    train_w = split_tail(train.batch, args.tail)[0]
    test_w, tail = split_tail(test.batch, args.tail)
    ctx, held = holdout_points(test_w, 0.2, seed=args.seed)
    optimizer = args.optimizer or ("gauss_newton" if args.model == "greybox_mle" else "adam")
    res = fit(model, train_w, val_w, iters=args.iters, lr=args.lr, batch_size=args.batch_size,
              seed=args.seed, checkpoint=args.checkpoint, resume=args.resume,
              progress=not args.no_progress, optimizer=optimizer)  # fmt: skip
    summary = {
        "model": args.model,
        "series": data.n_series,
        "channels": data.channels,
        "iterations": res.iterations,
        "best_val_loss": None if math.isnan(res.best_val) else res.best_val,
        "interp_mse": res.mse(ctx, held),
        "extrap_mse": res.mse(ctx, tail),
        "train_seconds": round(res.train_time, 2),
        "checkpoint": args.checkpoint,
    }
    if hasattr(model, "field") and hasattr(model.field, "values"):
        summary["parameters"] = model.field.values()
    if args.plot:
        from odenet.fit.data import concat
        from odenet.fit.plots import plot_fit

        plot_fit(res, ctx, concat(held, tail), path=args.plot,
                 series=range(min(3, test.n_series)), channels=data.channels)  # fmt: skip
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>14}: {v}")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point (``python -m odenet.fit.cli fit data.csv``)."""
    parser = argparse.ArgumentParser(prog="odenet")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
