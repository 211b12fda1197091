"""Shared protocol of the fit_irregular benchmark scripts (models, evaluation, tables).

Protocol (same for every model): series split 60/20/20 by series; in every series the
last 20 % of its time span is the extrapolation target.  Training uses the training
series' windows (points before the tail); validation (early stopping) the validation
series' windows.  On test series, 20 % of the window's points are held out at random
(interpolation target) and the rest is the context the model conditions on — for
extrapolation as well, so extrapolation conditions only on the past.  MSE is in the
data's physical units.  Every learnt model gets the same optimiser budget: ``iters``
Adam steps on minibatches of ``batch`` series, validation every 25 steps, patience 8.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch

from odenet.fit import (
    GRUD,
    LOCF,
    GreyBoxField,
    GRUDeltaT,
    GRUGrid,
    LatentODEForecaster,
    LinearInterpolation,
    ODERNNForecaster,
    ShootingODE,
    TrainingMean,
    fit,
    holdout_points,
    n_parameters,
    neural_ode,
    relative_error,
    split_series,
    split_tail,
)
from odenet.fit.greybox import GreyBoxMLE

HERE = Path(__file__).parent
GREYBOX_ROUNDS = 3  # L-BFGS rounds for grey-box fits (each up to 20 iterations)
RESULTS = HERE / "results"


def study_parser(description: str, out: str, seeds=(0, 1, 2)) -> argparse.ArgumentParser:
    """The options every synthetic-data study shares (fractions, seeds, budget, output)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--observed", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--channel-observed", type=float, default=1.0,
                    help="probability each channel is observed at a kept time (synthetic "
                         "data sets that take it; 1: every channel)")  # fmt: skip
    ap.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n-series", type=int, default=40)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--out", default=out)
    return ap


def protocol(data, seed: int = 0):
    """(train_window, val_window, test_context, test_interp_target, test_extrap_target)."""
    train, val, test = split_series(data, (0.6, 0.2, 0.2), seed=seed)
    trw, _ = split_tail(train.batch, 0.2)
    vaw, _ = split_tail(val.batch, 0.2)
    tew, tail = split_tail(test.batch, 0.2)
    ctx, held = holdout_points(tew, 0.2, seed=seed + 1)
    return trw, vaw, ctx, held, tail


def make_models(dim: int, mechanism=None, guess=None, horizon: int = 6, which=None,
                mle: bool = False):  # fmt: skip
    """name -> zero-argument constructor (``mle``: add ``greybox_mle`` to the grey-boxes)."""
    ode = dict(rtol=1e-3, atol=1e-4)
    zoo = {
        "mean": lambda: TrainingMean(),
        "locf": lambda: LOCF(),
        "linear_interp": lambda: LinearInterpolation(),
        "gru_grid": lambda: GRUGrid(dim, 32, horizon=horizon),
        "gru_dt": lambda: GRUDeltaT(dim, 32, horizon=horizon),
        "gru_d": lambda: GRUD(dim, 32, horizon=horizon),
        "neural_ode": lambda: neural_ode(dim, 32, horizon=horizon, **ode),
        "ode_rnn": lambda: ODERNNForecaster(dim, 16, horizon=horizon, **ode),
        "latent_ode": lambda: LatentODEForecaster(dim, 4, 16, obs_std=0.1, **ode),
    }
    if mechanism is not None:
        zoo["greybox"] = lambda: ShootingODE(
            GreyBoxField(mechanism, guess), horizon=horizon, physical=True, rtol=1e-5, atol=1e-7
        )
    if mechanism is not None and mle:
        # maximum likelihood over parameters and initial states (Gauss–Newton)
        zoo["greybox_mle"] = lambda: GreyBoxMLE(GreyBoxField(mechanism, guess), node_every=4)
    return {k: v for k, v in zoo.items() if which is None or k in which}


def vector_field_error(model, field, params, states: torch.Tensor) -> float:
    """Mean squared error of the learnt data-space field at the true states [N, D]."""
    if not hasattr(model, "vector_field"):
        return math.nan
    with torch.no_grad():
        f_hat = model.vector_field(torch.zeros(states.shape[0], dtype=states.dtype), states)
        f_true = field(0.0, states, params)
    return float(((f_hat - f_true) ** 2).sum(-1).mean())


def _best_iter(res) -> int:
    """Iteration of the best validation loss (the returned model)."""
    h = res.history
    if not h.get("val_loss"):
        return res.iterations
    return h["iteration"][min(range(len(h["val_loss"])), key=h["val_loss"].__getitem__)]


def run_one(name, ctor, parts, *, seed, iters, batch, truth=None, max_seconds=None,
            curves=None):  # fmt: skip
    trw, vaw, ctx, held, tail = parts
    torch.manual_seed(seed)
    model = ctor()
    t = time.perf_counter()
    kw = dict(iters=iters, lr=1e-2, batch_size=batch, eval_every=25)
    if name == "greybox_mle":
        kw = dict(iters=50, optimizer="gauss_newton", batch_size=None)
    elif name.startswith("greybox"):
        # a handful of mechanistic parameters: full-batch L-BFGS rounds (≤ 20 iterations each)
        kw = dict(iters=GREYBOX_ROUNDS, optimizer="lbfgs", batch_size=None, eval_every=1)
    res = fit(model, trw, vaw, seed=seed, patience=8, max_seconds=max_seconds, **kw)
    train_time = time.perf_counter() - t
    if curves is not None:  # validation curve, to judge convergence (plateau)
        import json

        curves.mkdir(parents=True, exist_ok=True)
        (curves / f"{name}_seed{seed}.json").write_text(json.dumps(res.history))
    row = {
        "model": name,
        "seed": seed,
        "interp_mse": res.mse(ctx, held),
        "extrap_mse": res.mse(ctx, tail),
        "param_rel_err": math.nan,
        "vf_mse": math.nan,
        "iters": res.iterations,
        "best_iter": _best_iter(res),
        "stopped_early": res.stopped_early,
        "train_s": round(train_time, 1),
        "n_params": n_parameters(model),
    }
    if truth is not None:
        field, params, states = truth
        if name.startswith("greybox"):
            found = model.field.values()
            err = relative_error(found, params)
            row["param_rel_err"] = max(err.values())
            row["params_found"] = " ".join(f"{k}={v:.5f}" for k, v in found.items())
            if hasattr(model, "std_errors"):
                se = model.std_errors()
                # relative standard error and |error| / standard error, worst parameter
                row["param_rel_se"] = max(se[k] / abs(params[k]) for k in se)
                row["param_max_z"] = max(abs(found[k] - params[k]) / se[k] for k in se)
        row["vf_mse"] = vector_field_error(model, field, params, states)
    return row


def run_models(zoo: dict, parts, args, *, seed: int, truth, csv_path: Path, **tags) -> None:
    """Train and score every model of ``zoo`` on one split (``args``: a study_parser
    namespace), appending one row per model, tagged with ``tags``, to ``csv_path``."""
    for name, ctor in zoo.items():
        row = run_one(name, ctor, parts, seed=seed, iters=args.iters, batch=args.batch,
                      truth=truth, max_seconds=args.max_seconds)  # fmt: skip
        row.update(tags)
        append_rows(csv_path, [row])
        print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()},
              flush=True)  # fmt: skip


def append_rows(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["dataset", "observed", "model", "seed", "interp_mse", "extrap_mse",
              "param_rel_err", "param_rel_se", "param_max_z", "vf_mse", "iters", "best_iter",
              "stopped_early", "train_s", "n_params", "params_found"]  # fmt: skip
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow(r)


def table(path: Path) -> str:
    """Markdown table per (dataset, observed, model): median over seeds and the range.

    MSE cells read ``median [min, max]``; parameter cells: median of the worst
    relative error, of the worst relative standard error, and the largest
    ``|error| / standard error`` over seeds.
    """
    import pandas as pd

    df = pd.read_csv(path)
    for col in ("param_rel_se", "param_max_z", "best_iter", "stopped_early"):
        if col not in df:
            df[col] = math.nan
    g = lambda v: f"{v:.3g}"  # noqa: E731
    cols = ["observed", "model", "seeds", "interp MSE", "extrap MSE", "param rel. err",
            "param rel. SE", "max z", "vector-field MSE", "iters (best)", "train s",
            "params"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for (_, obs, model), d in df.groupby(["dataset", "observed", "model"], sort=False):

        def rng(c, d=d):
            x = d[c].dropna()
            if x.empty:
                return "—"
            return g(x.median()) if len(x) == 1 else f"{g(x.median())} [{g(x.min())}, {g(x.max())}]"

        pe = d["param_rel_err"].dropna()
        se = d["param_rel_se"].dropna()
        z = d["param_max_z"].dropna()
        best = d["best_iter"].dropna()
        its = f"{d['iters'].median():.0f}"
        if len(best):
            its += f" ({best.median():.0f})"
        lines.append("| " + " | ".join([
            f"{obs:g}", model, str(len(d)), rng("interp_mse"), rng("extrap_mse"),
            f"{pe.median():.2%} [max {pe.max():.2%}]" if len(pe) else "—",
            f"{se.median():.2%}" if len(se) else "—",
            f"{z.max():.2f}" if len(z) else "—", rng("vf_mse"),
            its, f"{d['train_s'].median():.0f}", str(int(d["n_params"].iloc[0])),
        ]) + " |")  # fmt: skip
    return "\n".join(lines)


GRU_BASELINES = ("gru_grid", "gru_dt", "gru_d")
BLACK_BOX = ("neural_ode", "ode_rnn", "latent_ode")
CONTINUOUS = (*BLACK_BOX, "greybox", "greybox_mle")


def target_check(path: Path) -> str:
    """Per fraction: odenet's best continuous-time model (all of them, and black-box
    only) vs the best GRU by median MSE, and in how many seeds that model beats every
    GRU on both targets."""
    import pandas as pd

    df = pd.read_csv(path)
    lines = ["| observed | candidates | best (interp / extrap) | best GRU interp | best GRU extrap "
             "| beats every GRU on both (seeds) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for obs, d in df.groupby("observed", sort=True):
        med = d.groupby("model")[["interp_mse", "extrap_mse"]].median()
        gru = med[med.index.isin(GRU_BASELINES)]
        for label, pool in (("all continuous", CONTINUOUS), ("black-box", BLACK_BOX)):
            cont = med[med.index.isin(pool)]
            if cont.empty or gru.empty:
                continue
            best = (cont["interp_mse"].rank() + cont["extrap_mse"].rank()).idxmin()
            seeds = sorted(set(d.loc[d.model == best, "seed"]))
            wins = 0
            for sd in seeds:
                e = d[d.seed == sd].set_index("model")
                g = e[e.index.isin(GRU_BASELINES)]
                wins += bool((e.loc[best, "interp_mse"] < g["interp_mse"]).all()
                             and (e.loc[best, "extrap_mse"] < g["extrap_mse"]).all())  # fmt: skip
            gi, ge = gru["interp_mse"].idxmin(), gru["extrap_mse"].idxmin()
            lines.append(f"| {obs:g} | {label} | {best} {cont.loc[best, 'interp_mse']:.3g} / "
                         f"{cont.loc[best, 'extrap_mse']:.3g} | {gi} "
                         f"{gru.loc[gi, 'interp_mse']:.3g} | {ge} {gru.loc[ge, 'extrap_mse']:.3g} "
                         f"| {wins}/{len(seeds)} |")  # fmt: skip
    return "\n".join(lines)
