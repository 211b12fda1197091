"""``odenet fit data.csv --model …`` and ``odenet predict checkpoint.pt …`` from the shell.

The CLI module of the package calls :func:`register` (``fit``) and
:func:`register_predict` (``predict``).  Every error is an :class:`odenet.OdenetError`
with a one-line message (the ``odenet`` entry point prints it and exits with 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from odenet._errors import InputError
from odenet.fit.baselines import GRUD, LOCF, GRUDeltaT, GRUGrid, LinearInterpolation, TrainingMean
from odenet.fit.continuous import (
    LatentODEForecaster,
    NeuralCDEForecaster,
    ODERNNForecaster,
    ShootingODE,
    neural_ode,
)
from odenet.fit.data import holdout_points, load_long, split_series, split_tail

MODEL_NAMES = ["neural_ode", "neural_ode_bidir", "neural_cde", "greybox", "greybox_mle", "ode_rnn",
               "latent_ode", "gru_grid", "gru_dt", "gru_d", "linear_interp", "locf",
               "mean"]  # fmt: skip
GREYBOX = ("greybox", "greybox_mle")
SMALL_SCORE = 20  # fewer scored values than this: the MSE is too noisy to compare models


class FitCLIError(InputError):
    """A ``fit`` / ``predict`` option or its combination with the data is invalid."""


def parse_device(spec: str) -> torch.device:
    """``--device``: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (a CUDA GPU if torch
    sees one, else Apple's MPS if available, else the CPU).  A device torch cannot use is
    a :class:`FitCLIError` saying which are available."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise FitCLIError(
            f"--device {spec!r} is not a device name; use cpu, cuda, cuda:N, mps or auto."
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise FitCLIError(
                f"--device {spec}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                f"built {'with' if torch.version.cuda else 'without'} CUDA); use --device cpu "
                "(or auto)."
            )
        if dev.index is not None and dev.index >= n:
            raise FitCLIError(f"--device {spec}: torch sees {n} CUDA GPU(s), numbered 0…{n - 1}.")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise FitCLIError(f"--device {spec}: MPS is not available here; use --device cpu.")
    elif dev.type != "cpu":
        raise FitCLIError(f"--device {spec!r}: use cpu, cuda, cuda:N, mps or auto.")
    return dev


def warn(msg: str) -> None:
    """One line on stderr (warnings never go to stdout, which may carry JSON)."""
    sys.stderr.write(f"odenet: warning: {msg}\n")


def build_model(name: str, dim: int, *, hidden: int = 32, horizon: int = 4,
                mechanism: str | None = None, hybrid: bool = False, guesses=None, fixed=None,
                per_series=(), fixed_x0=None, channels=None, random=(),
                solver=None):  # fmt: skip
    """A model of ``odenet fit --model NAME`` for ``dim`` observed channels.

    ``mechanism`` is a built-in name or ``path.py:function`` (grey-box models);
    ``guesses``/``fixed`` override or fix its parameters, ``per_series`` names
    parameters estimated per series, ``random`` per-series parameters with a population
    distribution (random effects), ``fixed_x0`` pins initial states (greybox_mle);
    ``solver`` is the grey-box models' ODE method (default dopri5).
    """
    if solver is not None and name not in GREYBOX:
        raise FitCLIError(
            f"--solver chooses the ODE method of a grey-box mechanism (--model "
            f"{' or '.join(sorted(GREYBOX))}); --model {name} has its own."
        )
    if name in GREYBOX:
        from odenet.fit.greybox import GreyBoxMLE
        from odenet.fit.mechanisms import BUILTIN, build_field, load_mechanism

        if mechanism is None:
            raise FitCLIError(
                f"--model {name} needs --mechanism: a built-in ({', '.join(sorted(BUILTIN))}) "
                "or your own PATH.py:FUNCTION."
            )
        method = _check_solver(solver)
        desc = load_mechanism(mechanism)
        field = build_field(desc, guesses=guesses, fixed=fixed, channels=channels)
        states = field.states
        obs_channels = None
        if states is not None:
            obs_channels = _observed_states(mechanism, states, channels, dim)
        if name == "greybox_mle":  # parameters + initial states by Levenberg–Marquardt
            if hybrid:
                raise FitCLIError(
                    "--hybrid adds a neural correction, which the least-squares fit of "
                    "--model greybox_mle cannot train; use --model greybox --hybrid."
                )
            return GreyBoxMLE(field, node_every=4, per_series=per_series, fixed_x0=fixed_x0,
                              channels=obs_channels, rtol=1e-6, atol=1e-8,
                              random=random, method=method)  # fmt: skip
        if random:
            raise FitCLIError("--random (random effects) needs --model greybox_mle.")
        if per_series or fixed_x0 or field.covariates:
            raise FitCLIError(
                "--per-series, --fix-x0 and covariates need --model greybox_mle (the "
                "shooting grey-box resets the state to the data and has no per-series unknowns)."
            )
        if states is not None and len(states) != dim:
            raise FitCLIError(
                f"--model greybox needs every state observed; {mechanism} has states {states} "
                f"and the data {dim} channel(s). Use --model greybox_mle for latent states."
            )
        if obs_channels is not None and obs_channels != list(states):
            # the shooting model's state is the channel vector, in the columns' order
            raise FitCLIError(
                f"--model greybox needs the channels in the order of {mechanism}'s states "
                f"{states}, got {obs_channels}; pass --channels {' '.join(states)}."
            )
        corr = None
        if hybrid:
            from odenet.fit.continuous import TimeInvariantMLP

            corr = TimeInvariantMLP(dim, hidden)
            field.correction = corr
        return ShootingODE(field, horizon=horizon, physical=True, method=method)
    zoo = {
        "neural_ode": lambda: neural_ode(dim, hidden, horizon=horizon, rtol=1e-3, atol=1e-4),
        "neural_ode_bidir": lambda: neural_ode(
            dim, hidden, horizon=horizon, rtol=1e-3, atol=1e-4, bidirectional=True
        ),
        "neural_cde": lambda: NeuralCDEForecaster(dim, hidden, rtol=1e-3, atol=1e-4),
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
        raise FitCLIError(f"unknown --model {name!r}; choose one of {MODEL_NAMES}.")
    return zoo[name]()


def _check_solver(solver: str | None) -> str:
    """``--solver``'s method name (default dopri5), or a FitCLIError naming the choices."""
    from odenet._errors import InputError
    from odenet._validate import resolve_method

    method = "dopri5" if solver is None else solver
    try:
        resolve_method(method, False)
    except InputError as e:
        raise FitCLIError(f"--solver {solver!r}: {e}") from None
    return method


def _observed_states(mechanism, states: list, channels, dim: int):
    """The state each data channel observes: ``list(channels)`` when they are named
    after states (a subset: the others are latent), ``None`` for matching by position —
    only when no channel names a state and there are as many channels as states.

    A mix (some columns named after states, some not) is refused: matching the others
    by position could fit a column named after one state as another state."""
    channels = list(channels or [])
    named = [c for c in channels if c in states]
    if named and len(named) == len(channels):
        return channels
    if named:
        other = [c for c in channels if c not in states]
        free = [s for s in states if s not in named]
        raise FitCLIError(
            f"--mechanism {mechanism} has states {states}; data column(s) {named} match "
            f"state(s) by name but {other} match none, and columns are matched by name once "
            f"any is (never by position). Rename each of {other} after the state it observes "
            f"(unmatched states: {free}), or leave it out with --channels {' '.join(named)}."
        )
    if len(states) == dim:
        return None  # no column names a state: matched by position
    raise FitCLIError(
        f"--mechanism {mechanism} has states {states} but the data have "
        f"{dim} channel(s) {channels or None}; name the CSV columns after the states they "
        "observe (a subset is fine: the others are latent), or choose channels with "
        "--channels."
    )


def model_from_meta(meta: dict):
    """Rebuild the (untrained) model a checkpoint's ``meta`` describes."""
    from odenet.fit.train import CheckpointError

    if meta.get("mechanism"):
        _check_mechanism_unchanged(meta)
    try:
        return build_model(meta["kind"], int(meta["n_channels"]), hidden=int(meta["hidden"]),
                           horizon=int(meta["horizon"]), mechanism=meta.get("mechanism"),
                           hybrid=bool(meta.get("hybrid")), guesses=meta.get("guesses") or None,
                           fixed=meta.get("fixed") or None,
                           per_series=meta.get("per_series") or (),
                           random=meta.get("random") or (),
                           fixed_x0=meta.get("fixed_x0") or None,
                           channels=meta.get("channels"),
                           solver=meta.get("solver"))  # fmt: skip
    except KeyError as e:
        raise CheckpointError(f"the checkpoint's meta lacks {e}; refit with this odenet.") from None


def _check_mechanism_unchanged(meta: dict) -> None:
    """Refuse a checkpoint whose mechanism file was edited since the fit (the checkpoint
    holds its path and fingerprint, not its code)."""
    from odenet.fit.mechanisms import load_mechanism, mechanism_fingerprint
    from odenet.fit.train import CheckpointError

    spec = meta["mechanism"]
    stored = meta.get("mechanism_fingerprint")
    now = mechanism_fingerprint(load_mechanism(spec))
    if stored is None:
        warn(f"this checkpoint was written without the mechanism's fingerprint (an older "
             f"odenet): it cannot be checked that {spec} is unchanged since the fit; if it "
             "was edited, the predictions pair the old parameters with the new field — "
             "refit.")  # fmt: skip
    elif stored != now:
        raise CheckpointError(
            f"the mechanism {spec} changed since this checkpoint was fitted "
            f"(mechanism_fingerprint: checkpoint {stored!r} vs now {now!r}); its parameters "
            "belong to the old vector field. Restore the file as it was when fitting, or "
            "refit (odenet fit --force)."
        )


def load_fit(path, device=None):
    """A :class:`~odenet.fit.train.FitResult` from a checkpoint of ``odenet fit``.

    The model is rebuilt from the hyperparameters, mechanism, channels and data
    scaling stored in the checkpoint, so ``load_fit(p).predict(context, times)``
    needs nothing else.  ``device``: where the model (every member of an ensemble)
    runs; the CPU by default, whatever device fitted it.

    Raises
    ------
    CheckpointError
        Unreadable, unsafe, or written without the model description (by
        :func:`odenet.fit.fit` without ``meta``).
    """
    from odenet.fit.data import Normalizer
    from odenet.fit.train import CheckpointError, FitResult, load_checkpoint, load_state

    ck = load_checkpoint(path)
    meta = ck.get("meta") or {}
    if "kind" not in meta:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not describe its model (written by the API without "
            "`meta=`); rebuild the model yourself and load ck['model'] into it."
        )
    model = model_from_meta(meta)
    model.to(torch.float64)
    where = f"checkpoint {str(path)!r}"
    weights = ck["model"]
    if ck.get("finished") is False:
        # written while training ran (killed, or still running): its "model" is the
        # last iterate; the best validation weights so far are what a finished fit serves
        best = ck.get("best_model")
        weights = best if best is not None else weights
        warn(f"{where} is an unfinished fit (saved at iteration {ck.get('iteration')} of "
             f"{ck.get('total_iters')}); predicting with its "
             f"{'best validation weights so far' if best is not None else 'last iterate'}. "
             "Finish it with the same `odenet fit` command plus --resume.")  # fmt: skip
    load_state(model, weights, where)
    norm = Normalizer(int(meta["n_channels"]) + len(meta.get("covariates") or []))
    try:
        norm.load_state_dict(ck["normalizer"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{where} has no usable data scaling ({type(e).__name__}).") from None
    if meta.get("ensemble"):
        from odenet.fit.ensemble import load_ensemble

        ens = load_ensemble(ck, lambda: model_from_meta(meta), norm, where)
        for m in ens.members:
            m.model.to(device or "cpu")
        return ens
    model.to(device or "cpu")
    return FitResult(model, norm, ck.get("history", {}), math.nan, int(ck.get("iteration", 0)),
                     float(ck.get("train_time", 0.0)), bool(ck.get("stopped_early", False)),
                     str(ck.get("stop_reason", "")), meta)  # fmt: skip


# --- options --------------------------------------------------------------------------


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``fit`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "fit",
        help="fit a continuous-time model to irregularly sampled series (long-format CSV)",
        description="Fit a model to a long-format CSV (series id, time, one column per "
        "channel; empty cells = missing).  Holds out the tail of every series for "
        "extrapolation (--tail) and a random fraction of the remaining points for "
        "interpolation (--holdout, default 20 %), prints both MSEs with the number of "
        "points scored, and saves a checkpoint that `odenet predict` reads.",
    )
    p.add_argument("data", help="long-format CSV file")
    p.add_argument("--model", default="neural_ode", choices=MODEL_NAMES,
                   help="model to fit (default neural_ode; neural_ode_bidir and neural_cde "
                   "interpolate from both sides of a gap)")  # fmt: skip
    p.add_argument("--mechanism", default=None, metavar="NAME|PATH.py:FUNC",
                   help="grey-box vector field: lotka_volterra, damped_oscillator, or a "
                   "function in your own file (see docs/fitting.md)")  # fmt: skip
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="initial guess of a mechanism parameter (repeatable)",
    )
    p.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hold a mechanism parameter at a known value (repeatable)",
    )
    p.add_argument("--per-series", default="", metavar="NAMES",
                   help="comma-separated parameters estimated separately for every series "
                   "(greybox_mle)")  # fmt: skip
    p.add_argument("--random", default="", metavar="NAMES",
                   help="comma-separated parameters with random effects: per series, drawn "
                   "from a population (log-)normal whose mean and spread are estimated "
                   "(greybox_mle)")  # fmt: skip
    p.add_argument("--doses", default=None, metavar="CSV",
                   help="bolus doses (greybox_mle): a CSV with columns id, "
                   "time, amount and optionally state; the state jumps by the amount")  # fmt: skip
    p.add_argument(
        "--dose-state",
        default=None,
        metavar="STATE",
        help="the state doses without a state column enter (e.g. gut)",
    )
    p.add_argument(
        "--fix-x0",
        action="append",
        default=[],
        metavar="STATE=VALUE",
        help="pin a state's initial value in every series (greybox_mle; repeatable)",
    )
    p.add_argument("--covariates", nargs="*", default=None, metavar="COL",
                   help="columns that are inputs, not channels (static per series or "
                   "time-varying; the mechanism reads them from p). Default: the "
                   "mechanism's declared covariates")  # fmt: skip
    p.add_argument("--hybrid", action="store_true", help="grey-box plus a neural correction")
    p.add_argument("--solver", default=None, metavar="METHOD",
                   help="ODE method of a grey-box model's solves (default dopri5); an "
                   "implicit one (radau_iia5, bdf, kvaerno5) for a stiff mechanism")  # fmt: skip
    p.add_argument("--id-col", default="id", help="series-id column (default id)")
    p.add_argument("--time-col", default="time", help="time column (default time)")
    p.add_argument(
        "--channels",
        nargs="*",
        default=None,
        help="value columns to fit (default: all others except covariates)",
    )
    p.add_argument(
        "--iters",
        type=int,
        default=300,
        help="optimiser steps (greybox_mle: Levenberg–Marquardt iterations per stage)",
    )
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="series per minibatch")
    p.add_argument("--hidden", type=int, default=32, help="hidden width of the networks")
    p.add_argument("--horizon", type=int, default=4, help="observations per training shot")
    p.add_argument("--optimizer", choices=["adam", "lbfgs", "gauss_newton"], default=None,
                   help="default: gauss_newton for greybox_mle, adam otherwise")  # fmt: skip
    p.add_argument(
        "--tail",
        type=float,
        default=0.2,
        help="fraction of each series' time span held out for extrapolation",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="fraction of the remaining points held out for interpolation",
    )
    p.add_argument("--split", choices=["auto", "series", "within"], default="auto",
                   help="series: train/validation/test series 60/20/20; within: every series "
                   "is trained on its context points and scored on its held-out points; "
                   "auto: series with >= 10 series, else within")  # fmt: skip
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        help="k-fold cross-validation over series (k = number of series: "
        "leave-one-series-out); reports pooled and per-fold errors, no checkpoint",
    )
    p.add_argument("--ensemble", type=int, default=0, metavar="M",
                   help="train M >= 2 copies from seeds seed..seed+M-1 (black-box models) and "
                   "save them in one checkpoint: predictions are their mean and "
                   "`odenet predict --band` gives the members' spread plus a noise level "
                   "calibrated on points no member trained on")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (splits, initialisation)")
    p.add_argument("--device", default="cpu",
                   help="where the model trains: cpu (default), cuda, cuda:N, mps, or auto "
                   "(a GPU if torch sees one); the checkpoint loads on any device")  # fmt: skip
    p.add_argument("--checkpoint", default="odenet_fit.pt", help="checkpoint file to write")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from an existing checkpoint (it must match the options)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    p.add_argument("--plot", default=None, help="save a plot of the fit (png)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def register_predict(subparsers) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "predict",
        help="predict from a checkpoint of `odenet fit` at given times",
        description="Condition a fitted model on observations (--data, long-format CSV "
        "with the checkpoint's channels) and predict every series at --times; writes a "
        "long-format CSV (id, time, channels; with --band also CHANNEL_lo/CHANNEL_hi).",
    )
    p.add_argument("checkpoint", help="checkpoint written by `odenet fit`")
    p.add_argument("--data", required=True, help="context observations (long-format CSV)")
    p.add_argument(
        "--times", default=None, metavar="T1,T2,...", help="prediction times (shared by all series)"
    )
    p.add_argument(
        "--until",
        type=float,
        default=None,
        help="predict on a grid from each series' first time to this time",
    )
    p.add_argument("--n", type=int, default=50, help="grid points with --until")
    p.add_argument("--series", nargs="*", default=None, help="only these series ids")
    p.add_argument(
        "--band",
        action="store_true",
        help="add a prediction band (greybox_mle: delta method; latent_ode: "
        "quantiles of curves decoded from posterior samples of z0, without "
        "observation noise; an --ensemble checkpoint: members' spread + calibrated "
        "noise)",
    )
    p.add_argument("--level", type=float, default=0.95, help="band level (default 0.95)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of a latent ODE's --band samples (default 0)",
    )
    p.add_argument("--doses", default=None, metavar="CSV",
                   help="the context's doses (id, time, amount[, state]); needed when the "
                   "checkpoint was fitted with --doses")  # fmt: skip
    p.add_argument(
        "--device",
        default="cpu",
        help="where the model runs: cpu (default), cuda, cuda:N, mps or auto",
    )
    p.add_argument("--out", default=None, help="write the CSV here instead of stdout")
    p.add_argument("--json", action="store_true", help="print JSON instead of CSV")
    p.set_defaults(func=run_predict)
    return p


def _check_options(args) -> None:
    def bad(opt, val, need):
        raise FitCLIError(f"{opt} must be {need}, got {val!r}.")

    parse_device(args.device)  # before any data are read
    if args.iters < 1:
        bad("--iters", args.iters, "a positive integer (optimiser steps)")
    if not (math.isfinite(args.lr) and args.lr > 0):
        bad("--lr", args.lr, "a finite number > 0, e.g. 1e-2")
    if args.batch_size < 1:
        bad("--batch-size", args.batch_size, "a positive integer (series per minibatch)")
    if args.hidden < 1:
        bad("--hidden", args.hidden, "a positive integer (network width)")
    if args.horizon < 1:
        bad("--horizon", args.horizon, "a positive integer")
    for opt, v in (("--tail", args.tail), ("--holdout", args.holdout)):
        if not (math.isfinite(v) and 0 < v < 1):
            bad(opt, v, "a fraction strictly between 0 and 1")
    if args.folds < 0 or args.folds == 1:
        bad("--folds", args.folds, "0 (no cross-validation) or at least 2")
    if args.ensemble < 0 or args.ensemble == 1:
        bad("--ensemble", args.ensemble, "0 (one model) or at least 2 members")
    if args.ensemble:
        if args.model in GREYBOX:
            raise FitCLIError(
                f"--ensemble is for black-box models; --model {args.model} has its own band "
                "(greybox_mle: delta method, `odenet predict --band`)."
            )
        for opt, v in (("--folds", args.folds), ("--resume", args.resume)):
            if v:
                raise FitCLIError(f"--ensemble does not combine with {opt}.")
    if args.model not in GREYBOX:
        used = [o for o, v in (("--mechanism", args.mechanism), ("--param", args.param),
                               ("--fix", args.fix), ("--per-series", args.per_series),
                               ("--random", args.random), ("--doses", args.doses),
                               ("--fix-x0", args.fix_x0)) if v]  # fmt: skip
        if used:
            raise FitCLIError(f"{', '.join(used)} only apply to --model greybox / greybox_mle.")
    if args.plot:
        parent = Path(args.plot).resolve().parent
        if not parent.is_dir():
            raise FitCLIError(f"--plot {args.plot!r}: folder {str(parent)!r} does not exist.")
    if args.folds == 0:
        ck = Path(args.checkpoint)
        if ck.is_dir():
            raise FitCLIError(f"--checkpoint {args.checkpoint!r} is a folder; give a file path.")
        if ck.exists() and not (args.resume or args.force):
            raise FitCLIError(
                f"checkpoint {args.checkpoint!r} exists; pass --resume to continue it, --force "
                "to overwrite it, or another --checkpoint path."
            )
        if args.resume and args.force:
            raise FitCLIError("--resume and --force contradict each other; pass one.")
        if not ck.resolve().parent.is_dir():
            raise FitCLIError(
                f"--checkpoint {args.checkpoint!r}: folder {str(ck.resolve().parent)!r} "
                "does not exist."
            )


def _columns(args, mechanism_covariates):
    """(channels, covariates) from the options and the CSV header."""
    import pandas as pd

    from odenet.fit.data import DataFormatError

    path = Path(args.data)
    if not path.is_file():
        raise DataFormatError(f"data file {args.data!r} does not exist.")
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except Exception as e:  # pandas raises many kinds of parse errors
        raise DataFormatError(f"could not parse {args.data!r} as CSV: {e}") from None
    covariates = list(args.covariates) if args.covariates is not None else list(
        mechanism_covariates)  # fmt: skip
    missing = [c for c in covariates if c not in header]
    if missing:
        raise DataFormatError(
            f"covariate column(s) {missing} not in {args.data!r} (columns: {header})."
        )
    if args.channels:
        clash = [c for c in args.channels if c in covariates]
        if clash:
            raise FitCLIError(f"{clash} are given both as --channels and as --covariates.")
        return list(args.channels), covariates
    skip = {args.id_col, args.time_col, "rownames", *covariates}
    return [c for c in header if c not in skip], covariates


def _constant_columns(data, channels) -> list:
    """Channels that never change within any series (likely covariates)."""
    b = data.batch
    out = []
    for d, name in enumerate(channels):
        const, seen = True, 0
        for i in range(b.times.shape[0]):
            n = int(b.lengths[i])
            m = b.mask[i, :n, d] > 0
            v = b.values[i, :n, d][m]
            seen += int(m.sum())
            if len(v) > 1 and bool((v != v[0]).any()):
                const = False
                break
        if const and seen > b.times.shape[0] and data.n_series > 1:
            out.append(name)
    return out


def _json_safe(x):
    """Replace nan/inf by None and numpy/torch scalars by Python ones (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, torch.Tensor):
        return _json_safe(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.6g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list) and v and all(isinstance(x, float) for x in v):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


# --- fit ------------------------------------------------------------------------------


def _prepare(args):
    """Load the data and the mechanism description; returns (data, channels, covariates)."""
    mech_cov = []
    if args.model in GREYBOX and args.mechanism:
        from odenet.fit.mechanisms import load_mechanism

        mech_cov = load_mechanism(args.mechanism)["covariates"]
    channels, covariates = _columns(args, mech_cov)
    if not channels:
        raise FitCLIError(f"{args.data!r} has no channel column left to fit (covariates: "
                          f"{covariates}); name channels with --channels.")  # fmt: skip
    if args.model == "greybox_mle":
        missing = [c for c in mech_cov if c not in covariates]
        if missing:
            raise FitCLIError(
                f"--mechanism {args.mechanism} reads covariate(s) {missing}; add them with "
                "--covariates (columns of the CSV)."
            )
        extra = [c for c in covariates if c not in mech_cov]
        if extra:
            raise FitCLIError(
                f"--covariates {extra} are not read by --mechanism {args.mechanism} (it "
                f"declares {mech_cov}); drop them or declare them in the mechanism."
            )
    use_cov = covariates if args.model == "greybox_mle" else []
    if covariates and not use_cov:
        warn(f"--model {args.model} does not use covariates; {covariates} are ignored "
             "(not fitted as channels).")  # fmt: skip
    data = load_long(args.data, id_col=args.id_col, time_col=args.time_col,
                     channels=channels + use_cov)  # fmt: skip
    if args.channels is None and args.covariates is None:
        const = _constant_columns(data, channels)
        if const:
            warn(f"column(s) {const} never change within a series: they look like covariates "
                 "but are fitted as channels (and enter every MSE); pass --covariates "
                 f"{' '.join(const)} or choose --channels.")  # fmt: skip
    return data, channels, use_cov


def _meta(args, channels, covariates) -> dict:
    from odenet.fit.mechanisms import parse_assignments

    mech = args.mechanism
    if mech and ":" in mech:  # store an absolute path: predict may run elsewhere
        path, name = mech.rsplit(":", 1)
        mech = f"{Path(path).resolve()}:{name}"
    meta = {
        "kind": args.model,
        "n_channels": len(channels),
        "channels": list(channels),
        "covariates": list(covariates),
        "hidden": args.hidden,
        "horizon": args.horizon,
        "mechanism": mech,
        "hybrid": bool(args.hybrid),
        "guesses": parse_assignments(args.param, "--param"),
        "fixed": parse_assignments(args.fix, "--fix"),
        "per_series": [s for s in args.per_series.split(",") if s],
        "fixed_x0": parse_assignments(args.fix_x0, "--fix-x0"),
        "id_col": args.id_col,
        "time_col": args.time_col,
    }
    # only when used: checkpoints of earlier versions (without these keys) still resume
    random = [s for s in args.random.split(",") if s]
    if random:
        meta["random"] = random
    if args.doses:
        meta["doses"], meta["dose_state"] = True, args.dose_state
    if args.solver:
        meta["solver"] = args.solver
    if args.mechanism and args.model in GREYBOX:  # its code: the checkpoint holds a path
        from odenet.fit.mechanisms import load_mechanism, mechanism_fingerprint

        meta["mechanism_fingerprint"] = mechanism_fingerprint(load_mechanism(args.mechanism))
    return meta


def _splits(data, args):
    """(train, val, ctx, held, tail, test ids, mode, train ids) for one fit."""
    mode = args.split
    if mode == "auto":
        mode = "series" if data.n_series >= 10 else "within"
    if mode == "series":
        if data.n_series < 3:
            raise FitCLIError(
                f"--split series needs at least 3 series, got {data.n_series}; use --split within."
            )
        train, val, test = split_series(data, (0.6, 0.2, 0.2), seed=args.seed)
        train_w = split_tail(train.batch, args.tail)[0]
        val_w = split_tail(val.batch, args.tail)[0]
        test_w, tail = split_tail(test.batch, args.tail)
        ctx, held = holdout_points(test_w, args.holdout, seed=args.seed)
        return train_w, val_w, ctx, held, tail, test.ids, mode, train.ids
    # within: every series trains on its context points; held-out and tail points are
    # never seen in training (the score is on genuinely unseen points)
    window, tail = split_tail(data.batch, args.tail)
    ctx, held = holdout_points(window, args.holdout, seed=args.seed)
    return ctx, None, ctx, held, tail, data.ids, mode, data.ids


def _fit_one(args, data, channels, covariates, train, val, meta, checkpoint, progress=True):
    from odenet.fit.mechanisms import parse_assignments
    from odenet.fit.train import fit

    torch.manual_seed(args.seed)
    doses = meta.pop("dose_table", None)
    model = build_model(args.model, len(channels), hidden=args.hidden, horizon=args.horizon,
                        mechanism=args.mechanism, hybrid=args.hybrid,
                        guesses=parse_assignments(args.param, "--param") or None,
                        fixed=parse_assignments(args.fix, "--fix") or None,
                        per_series=meta["per_series"], fixed_x0=meta["fixed_x0"] or None,
                        channels=channels, random=meta.get("random", ()),
                        solver=args.solver)  # fmt: skip
    model.to(parse_device(args.device))
    if doses is not None:
        from odenet.fit.greybox import _check_doses

        model.doses, model.dose_state = _check_doses(doses, args.dose_state), args.dose_state
    if args.model in GREYBOX and len(channels) != data.batch.values.shape[-1] - len(covariates):
        raise FitCLIError("internal: channel count mismatch")  # pragma: no cover
    optimizer = args.optimizer or ("gauss_newton" if args.model == "greybox_mle" else "adam")
    if optimizer == "gauss_newton" and args.model != "greybox_mle":
        raise FitCLIError(f"--optimizer gauss_newton needs --model greybox_mle, not {args.model}.")
    return fit(model, train, val, iters=args.iters, lr=args.lr, batch_size=args.batch_size,
               seed=args.seed, checkpoint=checkpoint, resume=args.resume,
               progress=progress and not args.no_progress, optimizer=optimizer,
               meta=meta, overwrite=args.force)  # fmt: skip


def _fit_ensemble(args, channels, train, val, meta):
    """``--ensemble M``: M members from seeds ``seed, seed+1, …``, one checkpoint."""
    from odenet.fit.ensemble import fit_ensemble, save_ensemble
    from odenet.fit.train import checkpoint_lock

    device = parse_device(args.device)

    def make():
        model = build_model(args.model, len(channels), hidden=args.hidden, horizon=args.horizon,
                            solver=args.solver)  # fmt: skip
        return model.to(device)

    optimizer = args.optimizer or "adam"
    if optimizer == "gauss_newton":
        raise FitCLIError(f"--optimizer gauss_newton needs --model greybox_mle, not {args.model}.")
    with checkpoint_lock(args.checkpoint):
        ens = fit_ensemble(make, train, val, members=args.ensemble, seed=args.seed,
                           iters=args.iters, lr=args.lr, batch_size=args.batch_size,
                           optimizer=optimizer, meta=meta)  # fmt: skip
        save_ensemble(args.checkpoint, ens, meta)
    return ens


class _DoseTable:
    """Doses per series id, handed to a model in the row order of the batch it sees
    (training series, then test series: ``--split series`` and ``--folds``)."""

    def __init__(self, table: list, ids):
        self.by_id = {str(i): d for i, d in zip(ids, table)}

    def rows(self, ids) -> list:
        return [self.by_id[str(i)] for i in ids]

    def fingerprint(self, ids) -> str:
        """A short hash of the doses of series ``ids`` (times, amounts, states, in row
        order): stored in the checkpoint, so a resume with another dose file is refused."""
        import hashlib

        text = json.dumps([[str(i), self.by_id[str(i)]] for i in ids])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _scores(res, ctx, held, tail, channels, ids) -> dict:
    out = {}
    for what, tgt in (("interp", held), ("extrap", tail)):
        e = res.errors(ctx, tgt)
        out[f"{what}_mse"] = e["mse"]
        out[f"{what}_points"] = e["n_points"]
        out[f"{what}_mse_per_channel"] = dict(zip(channels, e["per_channel"]))
        out[f"{what}_mse_per_series"] = {str(i): v for i, v in zip(ids, e["per_series"])}
    return out


def _small_warnings(summary) -> None:
    for what, name in (("interp", "interpolation"), ("extrap", "extrapolation")):
        n = summary.get(f"{what}_points", 0)
        if n < SMALL_SCORE:
            warn(f"{name} MSE scored on only {n} value(s): too few to compare models; use "
                 "--folds (cross-validation over series), a larger --holdout/--tail, or "
                 "more data.")  # fmt: skip


def _greybox_report(model, ids) -> dict:
    """Parameters, standard errors and identifiability of a fitted ``greybox_mle``;
    ``ids`` are the series the model was fitted on, in its row order (the training
    series: all of them with ``--split within``), which key the per-series estimates."""
    info = getattr(model, "info", None) or {}
    if not info:
        return {}
    out = {
        "parameters": model.values(),
        "std_errors": info.get("std_errors"),
        "stop_reason": info.get("stop_reason"),
        "identifiability": {
            k: info.get(k)
            for k in ("rank", "n_unknowns", "condition", "unidentifiable", "weakly_identified")
        },
        "sigma": info.get("sigma"),
    }
    if info.get("series_params"):
        n = len(next(iter(info["series_params"].values())))
        if len(ids) != n:  # pragma: no cover - a broken invariant, not a user error
            raise RuntimeError(f"internal: {n} per-series estimates for {len(ids)} series ids")
        out["series_parameters"] = {k: dict(zip(map(str, ids), v))
                                    for k, v in info["series_params"].items()}  # fmt: skip
        out["series_std_errors"] = {k: dict(zip(map(str, ids), v))
                                    for k, v in info["series_std_errors"].items()}  # fmt: skip
    if info.get("random_effects"):
        out["random_effects"] = info["random_effects"]
    for w in info.get("warnings", []):
        warn(w)
    return out


def run(args) -> int:
    _check_options(args)
    data, channels, covariates = _prepare(args)
    meta = _meta(args, channels, covariates)
    if args.folds:
        return _run_folds(args, data, channels, covariates, meta)
    train, val, ctx, held, tail, test_ids, mode, train_ids = _splits(data, args)
    doses = None
    if args.doses:
        doses = _DoseTable(_read_doses(args.doses, data.ids, args.dose_state), data.ids)
        meta["dose_table"] = doses.rows(train_ids)
        # what the fit depends on, checked on --resume like the training data
        meta["doses_fingerprint"] = doses.fingerprint(train_ids)
        if val is not None:
            # doses follow the rows of the batch a model sees; the validation series are
            # not those of training, and greybox_mle does not stop early anyway
            warn("--doses with --split series: the validation series are not used.")
            val = None
    if args.ensemble:
        res = _fit_ensemble(args, channels, train, val, meta)
    else:
        res = _fit_one(args, data, channels, covariates, train, val, meta, args.checkpoint)
    model = res.model
    if doses is not None:  # scored on the test series: their doses, in their row order
        model.doses = doses.rows(test_ids)
    summary = {
        "model": args.model,
        "series": data.n_series,
        "channels": channels,
        "covariates": covariates,
        "split": mode,
        "iterations": res.iterations,
        "stop_reason": res.stop_reason,
        **_scores(res, ctx, held, tail, channels, test_ids),
        # one unit for every model: the validation loss is each model's own objective
        # (ELBO, normalised MSE…), so only physical-unit MSEs are reported
        "train_seconds": round(res.train_time, 2),
        "checkpoint": args.checkpoint,
    }
    if args.ensemble:
        summary["ensemble"] = args.ensemble
        summary["band_noise_sigma"] = dict(zip(channels, res.sigma.tolist()))
    if args.model == "greybox_mle":  # per-series estimates are those of the training rows
        summary.update(_greybox_report(model, train_ids))
    elif hasattr(model, "field") and hasattr(model.field, "values"):
        summary["parameters"] = model.field.values()
    _small_warnings(summary)
    if args.plot:
        from odenet.fit.plots import plot_fit

        band = None
        if args.ensemble:
            band = _band_fn(res, "ensemble")
        elif hasattr(model, "band") and args.model in ("greybox_mle", "latent_ode"):
            band = _band_fn(res, args.model)
        from odenet.studies.sweep import atomic_path

        with atomic_path(args.plot) as tmp:  # a kill mid-draw leaves no half-written image
            plot_fit(res, ctx, held, tail=tail, path=tmp,
                     series=range(min(3, ctx.times.shape[0])), channels=channels,
                     band=band)  # fmt: skip
        summary["plot"] = args.plot
    _print(summary, args.json)
    return 0


def _band_fn(res, kind, level=0.95):
    """``(context, q) -> (lo, mid, hi)`` in physical units for plots and predict."""
    model = res.model
    if kind == "ensemble":
        return lambda c, q: res.band(c, q, level=level)
    if kind == "greybox_mle":
        return lambda c, q: model.band(c, q, level=level)
    norm = res.normalizer

    def latent(c, q):
        with torch.no_grad():
            # 256 curves: the tails of a 95 % band from 32 moved by ~0.03 between draws
            lo, mid, hi = model.band(norm.transform(c), q, n_samples=256, q=level)
        return norm.inverse(lo), norm.inverse(mid), norm.inverse(hi)

    return latent


def _run_folds(args, data, channels, covariates, meta) -> int:
    """k-fold over series: each fold's series are held out entirely (leave-series-out)."""
    k = args.folds
    if k > data.n_series:
        raise FitCLIError(
            f"--folds {k} exceeds the {data.n_series} series; use at most {data.n_series} "
            "(leave-one-series-out)."
        )
    if args.resume:
        raise FitCLIError("--resume does not apply to --folds (cross-validation writes no "
                          "checkpoint).")  # fmt: skip
    doses = None
    if args.doses:
        doses = _DoseTable(_read_doses(args.doses, data.ids, args.dose_state), data.ids)
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(data.n_series, generator=g).tolist()
    folds = [sorted(perm[i::k]) for i in range(k)]
    se = {"interp": [0.0, 0], "extrap": [0.0, 0]}
    per_fold, per_series = [], {}
    for i, test_idx in enumerate(folds):
        train_idx = sorted(set(range(data.n_series)) - set(test_idx))
        train, test = data.subset(train_idx), data.subset(test_idx)
        train_w = split_tail(train.batch, args.tail)[0]
        test_w, tail = split_tail(test.batch, args.tail)
        ctx, held = holdout_points(test_w, args.holdout, seed=args.seed)
        if doses is not None:
            meta["dose_table"] = doses.rows(train.ids)
        res = _fit_one(args, data, channels, covariates, train_w, None, meta, None,
                       progress=False)  # fmt: skip
        if doses is not None:
            res.model.doses = doses.rows(test.ids)
        sc = _scores(res, ctx, held, tail, channels, test.ids)
        row = {"fold": i, "test_series": [str(s) for s in test.ids],
               "stop_reason": res.stop_reason}  # fmt: skip
        for what in ("interp", "extrap"):
            n, m = sc[f"{what}_points"], sc[f"{what}_mse"]
            row[f"{what}_mse"], row[f"{what}_points"] = m, n
            if n:
                se[what][0] += m * n
                se[what][1] += n
            for s, v in sc[f"{what}_mse_per_series"].items():
                per_series.setdefault(s, {})[what] = v
        per_fold.append(row)
    summary = {"model": args.model, "series": data.n_series, "channels": channels,
               "covariates": covariates, "split": f"{k}-fold over series"}  # fmt: skip
    for what in ("interp", "extrap"):
        tot, n = se[what]
        summary[f"{what}_mse"] = tot / n if n else math.nan
        summary[f"{what}_points"] = n
    summary["folds"] = per_fold
    summary["per_series"] = per_series
    _small_warnings(summary)
    _print(summary, args.json)
    return 0


def _print(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_json_safe(summary), allow_nan=False))
        return
    for k, v in summary.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            print(f"{k:>24}:")
            for row in v:
                print(" " * 26 + _fmt(row))
            continue
        print(f"{k:>24}: {_fmt(v)}")


def _read_doses(path, ids, dose_state) -> list:
    """Per series (in ``ids`` order) its doses ``[(time, amount[, state])]`` from a CSV
    with columns ``id, time, amount`` and optionally ``state``."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise FitCLIError(f"cannot read --doses {str(path)!r}: {e}.") from None
    missing = [c for c in ("id", "time", "amount") if c not in df.columns]
    if missing:
        raise FitCLIError(f"--doses {str(path)!r} lacks column(s) {missing}; it needs id, time, "
                          "amount (and optionally state).")  # fmt: skip
    if "state" not in df.columns and dose_state is None:
        raise FitCLIError("--doses without a state column needs --dose-state STATE (e.g. gut).")
    known = {str(i): k for k, i in enumerate(ids)}
    unknown = sorted({str(i) for i in df["id"]} - set(known))
    if unknown:
        raise FitCLIError(f"--doses names series {unknown[:5]} that are not in the data.")
    out: list = [[] for _ in ids]
    for row, r in df.iterrows():
        t = pd.to_numeric(r["time"], errors="coerce")
        a = pd.to_numeric(r["amount"], errors="coerce")
        if not (math.isfinite(t) and math.isfinite(a)):
            raise FitCLIError(f"--doses row {row + 2} (file line): time and amount must be "
                              f"finite numbers, got {r['time']!r}, {r['amount']!r}.")  # fmt: skip
        dose = (
            (float(t), float(a))
            if "state" not in df.columns
            else (float(t), float(a), str(r["state"]))
        )
        out[known[str(r["id"])]].append(dose)
    return out


# --- predict --------------------------------------------------------------------------


def run_predict(args) -> int:
    import pandas as pd

    from odenet.fit.data import DTYPE

    res = load_fit(args.checkpoint, parse_device(args.device))
    meta = res.meta
    if args.times is None and args.until is None:
        raise FitCLIError("give --times T1,T2,... or --until T (with --n points).")
    if args.times is not None and args.until is not None:
        raise FitCLIError("give --times or --until, not both.")
    if not (0 < args.level < 1):
        raise FitCLIError(f"--level must be in (0, 1), got {args.level!r}.")
    if args.n < 2:
        raise FitCLIError(f"--n must be at least 2, got {args.n!r}.")
    cols = meta["channels"] + list(meta.get("covariates") or [])
    # a prediction may condition on a single observation (fitting needs two)
    data = load_long(args.data, id_col=meta.get("id_col", "id"),
                     time_col=meta.get("time_col", "time"), channels=cols,
                     min_points=1)  # fmt: skip
    if args.series:
        want = [str(s) for s in args.series]
        idx = [i for i, s in enumerate(data.ids) if str(s) in want]
        missing = sorted(set(want) - {str(data.ids[i]) for i in idx})
        if missing:
            raise FitCLIError(f"--series {missing} not in {args.data!r}.")
        data = data.subset(idx)
    B = data.n_series
    if meta.get("doses") and not args.doses:
        raise FitCLIError("this checkpoint was fitted with --doses: give the context's doses "
                          "with --doses CSV.")  # fmt: skip
    if args.doses:
        from odenet.fit.greybox import _check_doses

        if meta["kind"] != "greybox_mle":
            raise FitCLIError(f"--doses applies to greybox_mle checkpoints, not {meta['kind']}.")
        state = meta.get("dose_state")
        res.model.doses = _check_doses(_read_doses(args.doses, data.ids, state), state)
        res.model.dose_state = state
    if args.times is not None:
        try:
            t = [float(x) for x in args.times.split(",") if x.strip()]
        except ValueError:
            raise FitCLIError(f"--times must be numbers separated by commas, got "
                              f"{args.times!r}.") from None  # fmt: skip
        if not t or not all(math.isfinite(x) for x in t):
            raise FitCLIError(f"--times must be finite numbers, got {args.times!r}.")
        q = torch.tensor(t, dtype=DTYPE)[None, :].expand(B, -1).clone()
    else:
        if not math.isfinite(args.until):
            raise FitCLIError(f"--until must be finite, got {args.until!r}.")
        t0 = data.batch.times[:, 0]
        if bool((t0 >= args.until).any()):
            raise FitCLIError(f"--until {args.until} is not after every series' first time.")
        s = torch.linspace(0, 1, args.n, dtype=DTYPE)
        q = t0[:, None] + s[None, :] * (args.until - t0[:, None])
    D = len(meta["channels"])
    band = None
    if args.band:
        kind = "ensemble" if meta.get("ensemble") else meta["kind"]
        if kind not in ("greybox_mle", "latent_ode", "ensemble"):
            raise FitCLIError(
                f"--band is available for greybox_mle, latent_ode and ensemble checkpoints "
                f"(`odenet fit --ensemble M`), not a single {meta['kind']}."
            )
        # a latent ODE's band is sampled: seeded, so the same command prints the same band
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            lo, _, hi = _band_fn(res, kind, args.level)(data.batch, q)
        band = (lo[..., :D], hi[..., :D])
    # the middle column is the model's prediction, with or without --band (a latent
    # ODE's sample median moved with the draw)
    pred = res.predict(data.batch, q)[..., :D]
    rows = []
    for b, sid in enumerate(data.ids):
        for j in range(q.shape[1]):
            row = {"id": sid, "time": float(q[b, j])}
            for d, c in enumerate(meta["channels"]):
                row[c] = float(pred[b, j, d])
                if band is not None:
                    row[f"{c}_lo"] = float(band[0][b, j, d])
                    row[f"{c}_hi"] = float(band[1][b, j, d])
            rows.append(row)
    if args.json:
        text = json.dumps(_json_safe(rows), allow_nan=False)
    else:
        text = pd.DataFrame(rows).to_csv(index=False)
    if args.out:
        from odenet.studies.sweep import atomic_write_text

        try:  # a kill mid-write must not leave a truncated CSV that looks complete
            atomic_write_text(Path(args.out), text, make_parents=False)
        except OSError as e:
            raise FitCLIError(f"cannot write --out {args.out!r}: {e.strerror or e}.") from None
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point (``python -m odenet.fit.cli fit data.csv``)."""
    from odenet._errors import OdenetError

    parser = argparse.ArgumentParser(prog="odenet")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    register_predict(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OdenetError as e:
        sys.stderr.write(f"odenet: error: {str(e).replace(chr(10), ' ')}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
