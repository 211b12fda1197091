"""The ``odenet`` command: ``converge``, ``compare``, ``methods``, ``problems``
(+ ``stability``, ``fit``).

Every study writes a results folder: ``config.json`` (the exact configuration; rerun
with ``--config``), one JSON file per finished cell under ``cells/`` (an interrupted
study resumes from them), the tables as CSV, a ``summary.json`` and a PNG plot.
Every error — a bad option, an unusable folder, a full disk, a lost Dask cluster —
prints one line ``odenet: error: ...`` and exits with status 2; finished cells are
kept.  Heavy modules (torch, pandas, matplotlib) are imported only by the command
that needs them, so ``--help`` and parse errors stay quick.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from odenet._build import cell_build
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
    """``KEY=VALUE`` with a numeric value (names are checked against the problem later)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"parameter {key!r} needs a number, got {value!r}"
        ) from None


def _nonnegative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _cpus() -> int:
    from odenet.studies.sweep import available_cpus

    return available_cpus()


def _default_workers() -> int:
    return max(1, min(4, _cpus()))


def problem_arguments(p: argparse.ArgumentParser, *, problem: str, example: str) -> None:
    """``--problem`` (default ``problem``) and ``--param KEY=VALUE`` (read by
    :func:`_problem`), shared by every command that runs a problem."""
    p.add_argument(
        "--problem",
        default=problem,
        help=f"built-in problem (default {problem}; see `odenet problems`), or "
        "PATH.py:FUNCTION, a function in your file returning an odenet.problems.Problem",
    )
    p.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"problem parameter, e.g. --param {example} (repeatable)",
    )


def _common(p: argparse.ArgumentParser, *, problem: str, norm: str) -> None:
    problem_arguments(p, problem=problem, example="eccentricity=0.3")
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
        help="local worker processes (default: min(4, CPUs) for converge, 1 for compare, "
        "whose timings need a quiet machine; 1 = serial; at most the number of CPUs "
        "unless --oversubscribe)",
    )
    p.add_argument(
        "--oversubscribe",
        action="store_true",
        help="allow more --workers than CPUs",
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
    check_config(cfg, path)
    return cfg


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# what each saved setting must look like; the values themselves are checked by the study
_CONFIG_TYPES = {
    "problem": (lambda v: isinstance(v, str), "a problem name"),
    "params": (
        lambda v: (
            isinstance(v, dict) and all(isinstance(k, str) and _is_num(x) for k, x in v.items())
        ),
        "an object of NAME: number",
    ),
    "methods": (
        lambda v: (
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(m, str) for m in v))
        ),
        "a list of method names",
    ),
    "n_steps": (lambda v: isinstance(v, list) and all(_is_num(x) for x in v), "a list of integers"),
    "steps": (lambda v: isinstance(v, list) and all(_is_num(x) for x in v), "a list of integers"),
    "tols": (lambda v: isinstance(v, list) and all(_is_num(x) for x in v), "a list of numbers"),
    "repeats": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "norm": (lambda v: isinstance(v, str), "one of max, final, l2"),
    "error": (lambda v: isinstance(v, str), "one of abs, rel, mixed"),
    "cell_timeout": (lambda v: v is None or _is_num(v), "a number of seconds or null"),
    "dtype": (lambda v: isinstance(v, str), "float64 or float32"),
}


def check_config(cfg: dict, path) -> dict:
    """Refuse a saved configuration whose settings have the wrong JSON type (one line)."""
    for key, (ok, what) in _CONFIG_TYPES.items():
        if key in cfg and not ok(cfg[key]):
            raise CLIError(
                f"--config {path}: {key!r} must be {what}, got {json.dumps(cfg[key])[:60]}; "
                "fix the file or rerun without --config."
            )
    return cfg


def _resolve(args, cfg: dict, name: str, default):
    """An option given on the command line wins over the config file, which wins over defaults."""
    given = getattr(args, name)
    if given is not None:
        return given
    return cfg.get(name, default)


def _problem(args, cfg):
    from odenet.problems import get_problem, parameters

    name = args.problem if args.problem_given else cfg.get("problem", args.problem)
    params = dict(cfg.get("params", {})) if not args.problem_given else {}
    params.update(dict(args.param))
    known = parameters(name)
    for key, value in params.items():
        default = known.get(key)
        # integer parameters (grid sizes) arrive as floats from KEY=VALUE
        if isinstance(default, int) and not isinstance(default, bool):
            if not float(value).is_integer():
                raise CLIError(
                    f"--param {key}={value:g}: {key!r} of problem {name!r} must be an integer."
                )
            params[key] = int(value)
    return get_problem(name, **params), name, params


def _out_folder(args, command: str, problem_name: str) -> Path:
    if args.out is not None and not args.out.strip():
        raise CLIError("--out is empty; name the results folder, e.g. --out results/kepler.")
    # a problem file PATH.py:FUNCTION names the default folder after its function
    problem_name = problem_name.rpartition(":")[2] if ".py:" in problem_name else problem_name
    out = Path(args.out) if args.out else Path(DEFAULT_OUT) / f"{command}-{problem_name}"
    if out.exists() and not out.is_dir():
        # (--fresh renamed the user's file aside and reported success)
        raise CLIError(
            f"results path {out} exists and is not a folder; choose another output folder."
        )
    if args.fresh and out.exists():
        import shutil

        if out.is_dir() and not (out / "study.json").exists() and any(out.iterdir()):
            raise CLIError(f"--fresh refuses to delete {out}: it is not an odenet results folder.")
        # move it aside first (atomic) so a kill during the deletion never leaves a
        # half-deleted folder that the next run would call damaged
        trash = out.parent / f".{out.name}.deleting-{os.getpid()}"
        out.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    return out


def _write_outputs(out: Path, files: dict[str, str], stale: tuple[str, ...]) -> None:
    from odenet.studies.sweep import write_outputs

    write_outputs(out, files, stale=stale)


def _plot(fn, result, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return "(no plot: matplotlib is not installed)"
    from odenet.studies.sweep import atomic_path

    with atomic_path(path) as tmp:  # a kill mid-draw leaves no half-written image
        fn(result, path=tmp)
    return str(path)


def _quiet_dask_logs() -> None:
    """Silence dask's and tornado's own error logs: a lost cluster is reported in one
    line by the command; their tracebacks of the failed reconnection and of the futures
    that die with it would bury that line."""
    import logging

    # importing distributed sets its loggers' levels from its config: import it first
    # (a missing install is reported by make_executor)
    with contextlib.suppress(ImportError):
        import distributed  # noqa: F401
    for name in ("distributed", "distributed.client", "distributed.utils",
                 "distributed.core", "distributed.comm", "distributed.utils_comm",
                 "tornado.application", "asyncio"):  # fmt: skip
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _executor(args, default_workers: int):
    """The executor context for ``--workers``/``--scheduler`` (checked before any work)."""
    from odenet.studies.sweep import make_executor

    workers = args.workers if args.workers is not None else default_workers
    if args.scheduler is not None and args.workers is not None and args.workers > 1:
        raise CLIError("give --workers or --scheduler, not both.")
    if args.scheduler is not None:
        _quiet_dask_logs()
    return make_executor(workers, args.scheduler, oversubscribe=args.oversubscribe)


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
    with _executor(args, _default_workers()) as ex:
        result = convergence(
            problem,
            methods=methods,
            step_sizes=step_sizes,
            n_steps=n_steps,
            norm=norm,
            dtype=dtype,
            out=out,
            executor=ex,
            progress=not args.quiet,
        )
    config = {
        "schema": CONFIG_SCHEMA,
        "command": "converge",
        **result.config,
        "problem": pname,
        "params": params,
    }
    summary = {
        "problem": pname,
        "norm": norm,
        "orders": json.loads(result.orders.to_json(orient="records")),
        "cells": result.counts,
        "build": cell_build(),
    }
    _write_outputs(
        out,
        {
            "config.json": json.dumps(config, indent=2),
            "results.csv": result.table.to_csv(index=False),
            "orders.csv": result.orders.to_csv(index=False),
            "summary.json": json.dumps(summary, indent=2),
        },
        stale=("convergence.png",),
    )
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
        DEFAULT_CELL_TIMEOUT,
        DEFAULT_COMPARE_METHODS,
        DEFAULT_N_STEPS,
        DEFAULT_STIFF_METHODS,
        work_precision,
    )

    torch.set_num_threads(1)
    cfg = _load_config(args.config, "compare")
    problem, pname, params = _problem(args, cfg)
    if ".py:" in pname:  # config.json keeps the absolute path: it reruns from any folder
        pname = problem.spec[0]
    default = DEFAULT_STIFF_METHODS if problem.stiff else DEFAULT_COMPARE_METHODS
    methods = _resolve(args, cfg, "methods", list(default))
    tols = _resolve(args, cfg, "tols", None)  # None: the defaults the dtype resolves
    n_steps = _resolve(args, cfg, "steps", list(DEFAULT_N_STEPS))
    repeats = _resolve(args, cfg, "repeats", 3)
    norm = args.norm if args.norm_given else cfg.get("norm", args.norm)
    dtype = args.dtype if args.dtype_given else cfg.get("dtype", args.dtype)
    error = _resolve(args, cfg, "error", "abs")
    cell_timeout = _resolve(args, cfg, "cell_timeout", DEFAULT_CELL_TIMEOUT)
    if args.cell_timeout == 0:  # 0 on the command line: no limit
        cell_timeout = None
    out = _out_folder(args, "compare", pname)
    # Timings under contention are meaningless: compare runs serially unless told otherwise.
    with _executor(args, 1) as ex:
        result = work_precision(
            problem,
            methods=methods,
            tolerances=tols,
            n_steps=n_steps,
            repeats=repeats,
            norm=norm,
            error=error,
            cell_timeout=cell_timeout,
            dtype=dtype,
            out=out,
            executor=ex,
            progress=not args.quiet,
        )
    config = {
        "schema": CONFIG_SCHEMA,
        "command": "compare",
        **result.config,
        "problem": pname,
        "params": params,
    }
    summary = {
        "problem": pname,
        "norm": norm,
        "error": error,
        "cells": result.counts,
        "summary": json.loads(result.summary.to_json(orient="records")),
        # the build these numbers came from (torchdiffeq's version where it has rows)
        "build": cell_build(
            "torchdiffeq" if any(str(m).startswith("torchdiffeq:") for m in methods) else "odenet"
        ),
    }
    _write_outputs(
        out,
        {
            "config.json": json.dumps(config, indent=2),
            "results.csv": result.table.to_csv(index=False),
            "summary.csv": result.summary.to_csv(index=False),
            "summary.json": json.dumps(summary, indent=2),
        },
        stale=("work_precision.png",),
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
    from odenet.problems import describe

    rows = describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        span = f"[{r['span'][0]:g}, {r['span'][1]:g}]"
        flags = ", ".join(
            x for x in (r["solution"], "stiff" if r["stiff"] else "", f"dim {r['dim']}") if x
        )
        print(f"{r['name']:<18} t in {span:<14} {flags}")
        print(f"{'':<18} --param: {r['parameters']}")
        print(f"{'':<18} {r['description']}")
    print("\nSet a parameter with --param NAME=VALUE, e.g. --param eccentricity=0.3.")
    return 0


# --- odenet methods ---------------------------------------------------------------------------


def method_rows() -> list[dict]:
    """One row per integration method: order, stages, kind, adaptivity."""
    import odenet

    rows = []
    for name in odenet.methods():
        tab = odenet.tableau(name)
        if tab.is_explicit:
            kind = "explicit"
        elif tab.is_diagonally_implicit:
            kind = "diagonally implicit"
        else:
            kind = "implicit"
        rows.append(
            {
                "method": name,
                "order": int(tab.order),
                "embedded_order": None if tab.embedded_order is None else int(tab.embedded_order),
                "estimator": tab.estimator,
                "stages": int(tab.stages),
                "kind": kind,
                "adaptive": bool(tab.is_adaptive),
            }
        )
    from odenet._multistep import MULTISTEP

    family = {
        "ab": "explicit multistep",
        "abm": "PECE multistep",
        "am": "implicit multistep",
        "bdf": "implicit multistep",
    }
    for name, lm in MULTISTEP.items():  # one f-evaluation per step (PECE: two)
        rows.append(
            {
                "method": name,
                "order": lm.order,
                "embedded_order": None,
                "estimator": None,
                "stages": 2 if lm.family == "abm" else 1,
                "kind": f"{family[lm.family]} ({lm.steps} steps)",
                "adaptive": False,
            }
        )
    from odenet._registry import registered

    for name, m in registered().items():  # the variable-order families
        if name in MULTISTEP:
            continue
        pece = getattr(m, "implicit", False)  # torchdiffeq's corrected Adams
        kind = "implicit" if m.is_implicit else "PECE" if pece else "explicit"
        rows.append(
            {
                "method": name,
                "order": int(m.order),  # the highest order it reaches
                "embedded_order": None,
                "estimator": None,
                "stages": 1,
                "kind": f"{kind} multistep, variable order",
                "adaptive": bool(m.is_adaptive),
            }
        )
    return rows


def _cmd_methods(args) -> int:
    rows = method_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'method':<17}{'order':>5}  {'stages':>6}  {'kind':<36}step size")
    for r in sorted(rows, key=lambda r: (r["kind"] != "explicit", r["order"], r["method"])):
        if not r["adaptive"]:
            step = "fixed (give step_size / --steps)"
        elif r["embedded_order"] is None:  # an estimator that is not a tableau row (RADAU5)
            step = "adaptive"
        elif r["estimator"]:  # one that replaces the embedded pair (the trapezoid's)
            step = f"adaptive ({r['estimator']} estimate)"
        else:
            step = f"adaptive (embedded order {r['embedded_order']})"
        print(f"{r['method']:<17}{r['order']:>5}  {r['stages']:>6}  {r['kind']:<36}{step}")
    return 0


# --- the parser ------------------------------------------------------------------------------


def _mark_given(argv: list[str], args, names: dict[str, str]) -> None:
    for attr, flag in names.items():
        setattr(args, f"{attr}_given", any(a == flag or a.startswith(flag + "=") for a in argv))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``odenet`` parser.

    Parameters
    ----------
    command : str, optional
        Import only this subcommand's plugin module (``""``: none); ``None`` imports all.
    """
    parser = _Parser(
        prog="odenet",
        description="Convergence studies and integrator comparisons (and more) for odenet.",
    )
    parser.add_argument("--version", action="version", version=f"odenet {_version()}")
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
        help="odenet names (multistep too: ndf, bdf, adams, ab3, ...), "
        "scipy:NAME (RK45, DOP853, Radau, BDF, LSODA, RK23), "
        "torchdiffeq:NAME (dopri5, rk4, ...); NAME+jac / NAME+sparsity give the problem's "
        "Jacobian / its sparsity to an implicit odenet method or scipy's Radau, BDF "
        "(+jac also LSODA), e.g. radau_iia5+jac,scipy:BDF+sparsity; default for a stiff problem: "
        "radau_iia5,kvaerno5,sdirk4,scipy:Radau,scipy:BDF,scipy:LSODA",
    )
    pw.add_argument(
        "--error",
        default=None,
        choices=["abs", "rel", "mixed"],
        help="error measure per component: absolute, relative, or mixed = "
        "|y - ref| / (atol_ratio + |ref|) with the problem's atol_ratio (default abs)",
    )
    pw.add_argument(
        "--cell-timeout",
        dest="cell_timeout",
        type=_nonnegative_float,
        default=None,
        metavar="SECONDS",
        help="time limit per cell (default 120; 0 = none): a cell past it is recorded as "
        "failed (timeout) and the study goes on; a rerun with a larger limit retries it",
    )
    pw.add_argument(
        "--tols",
        type=_floats,
        default=None,
        help="rtol values of adaptive methods (default 1e-3,1e-5,1e-7; float32 1e-2,1e-3,1e-4)",
    )
    pw.add_argument(
        "--steps", type=_ints, default=None, help="steps of fixed-step methods (default 16,32,64)"
    )
    pw.add_argument(
        "--repeats", type=_positive_int, default=None, help="timing repetitions (median)"
    )
    pw.set_defaults(func=_cmd_compare)

    pp = sub.add_parser(
        "problems",
        help="list the built-in problems and their parameters",
        description="The built-in problems: span, exact or reference solution, and the "
        "parameters --param NAME=VALUE accepts (with their defaults).",
    )
    pp.add_argument("--json", action="store_true", help="print JSON instead of text")
    pp.set_defaults(func=_cmd_problems)

    pm = sub.add_parser(
        "methods",
        help="list the integration methods: order, stages, explicit/implicit, adaptive",
        description="Every method name accepted by --methods / --method / solve(method=...).",
    )
    pm.add_argument("--json", action="store_true", help="print JSON instead of text")
    pm.set_defaults(func=_cmd_methods)

    plugins = (("odenet.stability.cli", "stability"), ("odenet.stability.cli", "conditioning"),
               ("odenet.fit.cli", "fit"), ("odenet.fit.cli", "predict"))  # fmt: skip
    for mod, name in plugins:
        if command is not None and command != name and name in _PLUGIN_HELP:
            # only the command being run loads its module (fit imports torch)
            sub.add_parser(name, help=_PLUGIN_HELP[name], add_help=False)
            continue
        try:
            module = __import__(mod, fromlist=["register"])
            getattr(module, f"register_{name}", module.register)(sub)
        except ImportError:
            stub = sub.add_parser(name, help=f"({name} is not available in this installation)")
            stub.set_defaults(func=_unavailable(name))
    return parser


_PLUGIN_HELP = {
    "stability": "linear stability of a scheme: R(z), intervals, A/L-stability, region plot",
    "conditioning": "is a problem's answer determined at a tolerance? error amplification",
    "fit": "fit models to irregular time series",
    "predict": "predict from a checkpoint of `odenet fit` at given times",
}


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("odenet")
    except (ImportError, PackageNotFoundError):
        from odenet import __version__

        return __version__


def _unavailable(name: str):
    def run(args) -> int:
        raise CLIError(f"`odenet {name}` is not available in this installation of odenet.")

    return run


def _command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option)."""
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def _os_error(e: OSError) -> str:
    what = e.strerror or str(e) or type(e).__name__
    where = f": {e.filename}" if e.filename else ""
    if e.filename2:
        where += f" -> {e.filename2}"
    return f"{what}{where} (check that the folder exists, is writable and has free space)"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = str(message).replace("\n", " ")
    sys.stderr.write(f"odenet: warning: {text}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``odenet`` console script; returns the exit status.

    Errors print one line ``odenet: error: ...`` and return 2 (130 on Ctrl-C).
    """
    import warnings

    argv = list(sys.argv[1:] if argv is None else argv)
    # "" = no subcommand named: the top-level help needs no plugin module
    parser = build_parser(_command(argv) or "")
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    _mark_given(argv, args, {"problem": "--problem", "norm": "--norm", "dtype": "--dtype"})
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if _command(argv) == "fit":
            # (the same command with --force would start the fit over, on its checkpoint)
            advice = "its checkpoint is saved; rerun with --resume (not --force) to continue."
        else:
            advice = "finished cells are saved, rerun the same command to resume."
        sys.stderr.write(f"odenet: interrupted; {advice}\n")
        return 130
    except OdenetError as e:
        msg = " ".join(str(e).split())
        sys.stderr.write(f"odenet: error: {msg}\n")
        return 2
    except BrokenPipeError:
        # the reader went away (`odenet methods | head`): not an error of ours; silence
        # the flush at exit, which would raise again
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        sys.stderr.write(f"odenet: error: {_os_error(e)}\n")
        return 2
    except MemoryError:
        sys.stderr.write("odenet: error: out of memory; use fewer --workers or a smaller study.\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
