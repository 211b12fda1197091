"""The ``odenet`` command: ``converge``, ``compare``, ``problems`` (+ ``stability``, ``fit``).

Every study writes a results folder: ``config.json`` (the exact configuration; rerun
with ``--config``), one JSON file per finished cell under ``cells/`` (an interrupted
study resumes from them), the tables as CSV, a ``summary.json`` and a PNG plot.
Bad options print one line ``odenet: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from odenet._errors import OdenetError

DEFAULT_OUT = "odenet-results"
CONFIG_SCHEMA = "odenet.config/1"


class CLIError(OdenetError, ValueError):
    """A command-line option is invalid."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (and exit status 2)."""

    def error(self, message: str):
        sys.stderr.write(f"odenet: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


# --- option parsing helpers --------------------------------------------------------------


def _numbers(convert, what: str):
    """An argparse type: comma-separated values of one kind."""

    def parse(text: str) -> list:
        try:
            vals = [convert(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}s, got {text!r}"
            ) from None
        if not vals:
            raise argparse.ArgumentTypeError(f"expected at least one {what}")
        return vals

    return parse


_floats = _numbers(float, "number")
_ints = _numbers(int, "integer")


def _names(text: str) -> list[str]:
    vals = [v.strip() for v in text.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return vals


def _param(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"parameter {key!r} needs a number, got {value!r}"
        ) from None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _common(p: argparse.ArgumentParser, *, problem: str, norm: str) -> None:
    p.add_argument(
        "--problem",
        default=problem,
        help=f"built-in problem (default {problem}); see `odenet problems`",
    )
    p.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="problem parameter, e.g. --param eccentricity=0.3 (repeatable)",
    )
    p.add_argument(
        "--norm",
        default=norm,
        choices=["max", "final", "l2"],
        help=f"error norm in time (default {norm}); max over components",
    )
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument(
        "--out", default=None, help=f"results folder (default {DEFAULT_OUT}/<command>-<problem>)"
    )
    p.add_argument("--fresh", action="store_true", help="delete earlier results in --out first")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="local worker processes (default: min(4, CPUs); 1 = serial)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="run the cells on this dask.distributed scheduler",
    )
    p.add_argument(
        "--config", default=None, help="rerun the configuration saved in this config.json"
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# --- shared plumbing ----------------------------------------------------------------------


def _load_config(path: str | None, command: str) -> dict:
    if path is None:
        return {}
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CLIError(f"cannot read --config {path}: {e}") from None
    if (
        not isinstance(cfg, dict)
        or cfg.get("schema") != CONFIG_SCHEMA
        or cfg.get("command") != command
    ):
        raise CLIError(
            f"--config {path} is not an `odenet {command}` configuration "
            f"(expected schema {CONFIG_SCHEMA!r}, command {command!r})."
        )
    return cfg


def _resolve(args, cfg: dict, name: str, default):
    """An option given on the command line wins over the config file, which wins over defaults."""
    given = getattr(args, name)
    if given is not None:
        return given
    return cfg.get(name, default)


def _problem(args, cfg):
    from odenet.problems import get_problem

    name = args.problem if args.problem_given else cfg.get("problem", args.problem)
    params = dict(cfg.get("params", {})) if not args.problem_given else {}
    params.update(dict(args.param))
    return get_problem(name, **params), name, params


def _out_folder(args, command: str, problem_name: str) -> Path:
    out = Path(args.out) if args.out else Path(DEFAULT_OUT) / f"{command}-{problem_name}"
    if args.fresh and out.exists():
        import shutil

        if not (out / "study.json").exists() and any(out.iterdir()):
            raise CLIError(f"--fresh refuses to delete {out}: it is not an odenet results folder.")
        shutil.rmtree(out)
    return out


def _write(path: Path, text: str) -> None:
    from odenet.studies.sweep import atomic_write_text

    atomic_write_text(path, text)


def _plot(fn, result, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return "(no plot: matplotlib is not installed)"
    fn(result, path=path)
    return str(path)


def _executor_args(args) -> tuple[int, str | None]:
    workers = args.workers if args.workers is not None else _default_workers()
    return workers, args.scheduler


# --- odenet converge ----------------------------------------------------------------------


def _cmd_converge(args) -> int:
    import torch

    from odenet.plotting import plot_convergence
    from odenet.studies.convergence import DEFAULT_METHODS, DEFAULT_N_STEPS, convergence

    torch.set_num_threads(1)
    cfg = _load_config(args.config, "converge")
    problem, pname, params = _problem(args, cfg)
    methods = _resolve(args, cfg, "methods", list(DEFAULT_METHODS))
    if args.step_sizes is not None and args.steps is not None:
        raise CLIError("give --steps or --step-sizes, not both.")
    step_sizes = args.step_sizes
    n_steps = (
        args.steps
        if args.steps is not None
        else (None if step_sizes is not None else cfg.get("n_steps", list(DEFAULT_N_STEPS)))
    )
    norm = args.norm if args.norm_given else cfg.get("norm", args.norm)
    dtype = args.dtype if args.dtype_given else cfg.get("dtype", args.dtype)
    out = _out_folder(args, "converge", pname)
    workers, scheduler = _executor_args(args)
    result = convergence(
        problem,
        methods=methods,
        step_sizes=step_sizes,
        n_steps=n_steps,
        norm=norm,
        dtype=dtype,
        out=out,
        workers=workers,
        scheduler=scheduler,
        progress=not args.quiet,
    )
    config = {
        "schema": CONFIG_SCHEMA,
        "command": "converge",
        **result.config,
        "problem": pname,
        "params": params,
    }
    _write(out / "config.json", json.dumps(config, indent=2))
    _write(out / "results.csv", result.table.to_csv(index=False))
    _write(out / "orders.csv", result.orders.to_csv(index=False))
    summary = {
        "problem": pname,
        "norm": norm,
        "orders": json.loads(result.orders.to_json(orient="records")),
        "cells": result.counts,
    }
    _write(out / "summary.json", json.dumps(summary, indent=2))
    print(result.to_text())
    print()
    plot = "" if args.no_plot else _plot(plot_convergence, result, out / "convergence.png")
    print(
        f"Cells: {result.counts['computed']} computed, {result.counts['loaded']} loaded from "
        f"earlier runs. Results in {out}/ (config.json, results.csv, orders.csv, summary.json"
        + (", convergence.png" if plot and plot.endswith(".png") else "")
        + ")."
    )
    if plot and not plot.endswith(".png"):
        print(plot)
    return 0


# --- odenet compare -----------------------------------------------------------------------


def _cmd_compare(args) -> int:
    import torch

    from odenet.plotting import plot_work_precision
    from odenet.studies.work_precision import (
        DEFAULT_COMPARE_METHODS,
        DEFAULT_N_STEPS,
        DEFAULT_TOLERANCES,
        work_precision,
    )

    torch.set_num_threads(1)
    cfg = _load_config(args.config, "compare")
    problem, pname, params = _problem(args, cfg)
    methods = _resolve(args, cfg, "methods", list(DEFAULT_COMPARE_METHODS))
    tols = _resolve(args, cfg, "tols", list(DEFAULT_TOLERANCES))
    n_steps = _resolve(args, cfg, "steps", list(DEFAULT_N_STEPS))
    repeats = _resolve(args, cfg, "repeats", 3)
    norm = args.norm if args.norm_given else cfg.get("norm", args.norm)
    dtype = args.dtype if args.dtype_given else cfg.get("dtype", args.dtype)
    out = _out_folder(args, "compare", pname)
    # Timings under contention are meaningless: compare runs serially unless told otherwise.
    workers = args.workers if args.workers is not None else 1
    result = work_precision(
        problem,
        methods=methods,
        tolerances=tols,
        n_steps=n_steps,
        repeats=repeats,
        norm=norm,
        dtype=dtype,
        out=out,
        workers=workers,
        scheduler=args.scheduler,
        progress=not args.quiet,
    )
    config = {
        "schema": CONFIG_SCHEMA,
        "command": "compare",
        **result.config,
        "problem": pname,
        "params": params,
    }
    _write(out / "config.json", json.dumps(config, indent=2))
    _write(out / "results.csv", result.table.to_csv(index=False))
    _write(out / "summary.csv", result.summary.to_csv(index=False))
    _write(
        out / "summary.json",
        json.dumps(
            {
                "problem": pname,
                "norm": norm,
                "cells": result.counts,
                "summary": json.loads(result.summary.to_json(orient="records")),
            },
            indent=2,
        ),
    )
    print(result.to_text())
    print()
    plot = "" if args.no_plot else _plot(plot_work_precision, result, out / "work_precision.png")
    print(
        f"Cells: {result.counts['computed']} computed, {result.counts['loaded']} loaded from "
        f"earlier runs. Results in {out}/ (config.json, results.csv, summary.csv, summary.json"
        + (", work_precision.png" if plot and plot.endswith(".png") else "")
        + ")."
    )
    return 0


# --- odenet problems ------------------------------------------------------------------------


def _cmd_problems(args) -> int:
    import pandas as pd

    from odenet.problems import describe

    df = pd.DataFrame(describe())
    df["span"] = [f"[{a:g}, {b:g}]" for a, b in df["span"]]
    with pd.option_context("display.max_colwidth", 70, "display.width", 200):
        print(df.to_string(index=False))
    return 0


# --- the parser ------------------------------------------------------------------------------


def _mark_given(argv: list[str], args, names: dict[str, str]) -> None:
    for attr, flag in names.items():
        setattr(args, f"{attr}_given", any(a == flag or a.startswith(flag + "=") for a in argv))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="odenet",
        description="Convergence studies and integrator comparisons (and more) for odenet.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    pc = sub.add_parser(
        "converge",
        help="observed order of accuracy of several methods",
        description="Error per (method, step size) and the observed order of each method.",
    )
    _common(pc, problem="cos", norm="max")
    pc.add_argument(
        "--methods",
        type=_names,
        default=None,
        help="comma-separated method names, or 'all' "
        "(default: euler,heun,rk3,rk4,dopri5,radau_iia5)",
    )
    pc.add_argument(
        "--steps",
        type=_ints,
        default=None,
        metavar="N1,N2,...",
        help="numbers of steps (default 8,11,16,23,32,45,64)",
    )
    pc.add_argument(
        "--step-sizes",
        dest="step_sizes",
        type=_floats,
        default=None,
        metavar="H1,H2,...",
        help="step sizes instead of --steps (any spacing)",
    )
    pc.set_defaults(func=_cmd_converge)

    pw = sub.add_parser(
        "compare",
        help="work–precision: error vs cost, odenet beside scipy and torchdiffeq",
        description="Error against function evaluations and wall time, across "
        "tolerances (adaptive) or steps (fixed).",
    )
    _common(pw, problem="kepler", norm="max")
    pw.add_argument(
        "--methods",
        type=_names,
        default=None,
        help="odenet names, scipy:NAME (RK45, DOP853, Radau, BDF, LSODA, RK23), "
        "torchdiffeq:NAME (dopri5, rk4, ...)",
    )
    pw.add_argument(
        "--tols",
        type=_floats,
        default=None,
        help="rtol values of adaptive methods (default 1e-3,1e-5,1e-7)",
    )
    pw.add_argument(
        "--steps", type=_ints, default=None, help="steps of fixed-step methods (default 16,32,64)"
    )
    pw.add_argument(
        "--repeats", type=_positive_int, default=None, help="timing repetitions (median)"
    )
    pw.set_defaults(func=_cmd_compare)

    pp = sub.add_parser("problems", help="list the built-in problems")
    pp.set_defaults(func=_cmd_problems)

    for mod, name in (("odenet.stability.cli", "stability"), ("odenet.fit.cli", "fit")):
        try:
            module = __import__(mod, fromlist=["register"])
            module.register(sub)
        except ImportError:
            stub = sub.add_parser(name, help=f"({name} is not available in this installation)")
            stub.set_defaults(func=_unavailable(name))
    return parser


def _unavailable(name: str):
    def run(args) -> int:
        raise CLIError(f"`odenet {name}` is not available in this installation of odenet.")

    return run


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``odenet`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    _mark_given(argv, args, {"problem": "--problem", "norm": "--norm", "dtype": "--dtype"})
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write(
            "odenet: interrupted; finished cells are saved, rerun the same command to resume.\n"
        )
        return 130
    except OdenetError as e:
        msg = str(e).replace("\n", " ")
        sys.stderr.write(f"odenet: error: {msg}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
