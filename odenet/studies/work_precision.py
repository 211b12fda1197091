"""Work–precision: error against cost (function evaluations, wall time) per solver.

Adaptive methods are run across tolerances (``rtol``, with ``atol = atol_ratio · rtol``,
the problem's :attr:`~odenet.problems.Problem.atol_ratio`, per component if it has one per
component), fixed-step methods across numbers of steps.  odenet methods run beside
scipy's ``solve_ivp`` (``"scipy:RK45"``, ``"scipy:Radau"``, ``"scipy:BDF+jac"``,
``"scipy:BDF+sparsity"``, ...) and torchdiffeq's ``odeint`` (``"torchdiffeq:dopri5"``,
...) on the same problem, the same output times and the same error measure.

The work is counted the same way on every side: ``nfe`` is every call of the vector
field, made by whichever library (the field is wrapped once, so scipy's
finite-difference Jacobian columns and the evaluation each odenet autograd Jacobian
makes are in it), ``jac_products`` the reverse-mode vector–Jacobian products of
odenet's autograd Jacobians (``n`` per dense Jacobian, one per row group with
``jac_sparsity``; each about the cost of one evaluation; ``Solution.stats``), and
``work = nfe + jac_products``; ``njev`` (Jacobians) and ``nlu`` (LU factorizations) as
each library reports them.  Each cell is timed ``repeats`` times (median reported)
in a child process that is killed after ``cell_timeout`` seconds: a cell that runs
past it is a failed cell with the reason ``timeout``, and the study goes on.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from odenet._errors import InputError, StepSplitWarning
from odenet.problems import MEASURES, Problem, as_problem
from odenet.studies.convergence import (
    _DTYPES,
    MAX_STEPS,
    blowup_message,
    cell_key,
    check_dtype,
    check_norm,
    exact_message,
    substep_message,
    time_norms,
)
from odenet.studies.sweep import (
    CellStore,
    _watch_parent,
    check_key,
    check_result,
    make_executor,
    problem_payload,
    resolve_problem,
    run_cells,
    warn_other_builds,
)

DEFAULT_COMPARE_METHODS = (
    "dopri5",
    "tsit5",
    "rk4",
    "scipy:RK45",
    "scipy:DOP853",
    "torchdiffeq:dopri5",
)
# a stiff problem's default rows: odenet's implicit methods beside scipy's stiff solvers
DEFAULT_STIFF_METHODS = (
    "radau_iia5",
    "kvaerno5",
    "sdirk4",
    "scipy:Radau",
    "scipy:BDF",
    "scipy:LSODA",
)
DEFAULT_TOLERANCES = (1e-3, 1e-5, 1e-7)
# float32: rtol below 100·eps (1.2e-5) is not resolved (odenet warns, scipy raises it)
DEFAULT_TOLERANCES_FLOAT32 = (1e-2, 1e-3, 1e-4)
# seconds per cell (all its repeats): long enough for any of the built-in problems at
# rtol 1e-8 on a slow machine, short enough that a stalled solver costs minutes, not hours
DEFAULT_CELL_TIMEOUT = 120.0
# after the cooperative deadline, how long a cell may take to stop before it is killed
_KILL_GRACE = 2.0
DEFAULT_N_STEPS = (16, 32, 64)
N_OUTPUTS = 21
SCIPY_METHODS = ("RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")
# which scipy methods take the problem's Jacobian (``+jac``) or its sparsity (``+sparsity``)
SCIPY_VARIANTS = {"jac": ("Radau", "BDF", "LSODA"), "sparsity": ("Radau", "BDF")}
TORCHDIFFEQ_FIXED = (
    "euler",
    "midpoint",
    "rk4",
    "heun2",
    "heun3",
    "explicit_adams",
    "implicit_adams",
)
TORCHDIFFEQ_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")


@dataclass(frozen=True)
class Solver:
    """One solver of a comparison: ``library`` (odenet | scipy | torchdiffeq), ``method``,
    and for scipy the ``variant``: ``""``, ``"jac"`` (the problem's exact Jacobian) or
    ``"sparsity"`` (its sparsity pattern)."""

    library: str
    method: str
    adaptive: bool
    variant: str = ""

    @property
    def label(self) -> str:
        name = self.method + (f"+{self.variant}" if self.variant else "")
        return name if self.library == "odenet" else f"{self.library}:{name}"


def _odenet_method(name: str):
    """The odenet method called ``name`` (a tableau or a method with memory: ``ndf``,
    ``bdf``, ``adams``, ``ab3``, ...), or None."""
    from odenet._errors import UnknownMethodError
    from odenet._registry import method

    try:
        return method(name)
    except UnknownMethodError:
        return None


def parse_solver(spec: str) -> Solver:
    """``"dopri5"`` → odenet; ``"ndf"``; ``"scipy:RK45"``; ``"scipy:BDF+jac"``;
    ``"torchdiffeq:rk4"``."""
    spec, _, variant = spec.partition("+")
    lib, sep, name = spec.partition(":")
    if not sep:
        lib, name = "odenet", spec
    method = _odenet_method(name) if lib == "odenet" else None
    if variant:
        implicit = method is not None and method.is_implicit
        if variant not in SCIPY_VARIANTS or not (lib == "scipy" or implicit):
            raise InputError(
                f"unknown variant {spec}+{variant} in `methods`; +jac and +sparsity go with "
                "odenet's implicit methods (radau_iia5+jac, kvaerno5+sparsity, ...) and "
                "scipy's stiff solvers (scipy:Radau+jac, scipy:BDF+sparsity, "
                "scipy:LSODA+jac, ...)."
            )
        if implicit:
            return Solver("odenet", name, method.is_adaptive, variant)
        if name not in SCIPY_VARIANTS[variant]:
            raise InputError(
                f"scipy:{name} does not take `{'jac' if variant == 'jac' else 'jac_sparsity'}`"
                f"; +{variant} works with "
                f"{', '.join('scipy:' + m for m in SCIPY_VARIANTS[variant])}."
            )
        return Solver("scipy", name, True, variant)
    if lib == "odenet":
        if method is None:
            from odenet._registry import method_names

            raise InputError(
                f"unknown odenet method {name!r} in `methods`; available: "
                f"{', '.join(method_names())}."
            )
        return Solver("odenet", name, method.is_adaptive)
    if lib == "scipy":
        if name not in SCIPY_METHODS:
            raise InputError(
                f"unknown scipy method {name!r} in `methods`; use one of "
                f"{', '.join('scipy:' + m for m in SCIPY_METHODS)}."
            )
        return Solver("scipy", name, True)
    if lib == "torchdiffeq":
        if name in TORCHDIFFEQ_FIXED:
            return Solver("torchdiffeq", name, False)
        if name in TORCHDIFFEQ_ADAPTIVE:
            return Solver("torchdiffeq", name, True)
        raise InputError(
            f"unknown torchdiffeq method {name!r} in `methods`; use one of "
            f"{', '.join('torchdiffeq:' + m for m in TORCHDIFFEQ_ADAPTIVE + TORCHDIFFEQ_FIXED)}."
        )
    raise InputError(
        f"unknown library {lib!r} in method {spec!r}; write NAME (odenet), scipy:NAME or "
        "torchdiffeq:NAME."
    )


def _check_tolerances(tols, dtype: str = "float64") -> list[float]:
    tols = [float(t) for t in np.atleast_1d(np.asarray(tols, dtype=np.float64))]
    if not tols or any(not (0 < t < 1) for t in tols):
        raise InputError(f"`tolerances` must be numbers in (0, 1), got {tols}.")
    # below the state's round-off no solver honours rtol, and odenet's steps shrink to
    # the step budget; scipy (float64 always) raises an rtol below 100·eps of float64
    # silently, so its row would carry a label it did not run at
    eps = float(torch.finfo(_DTYPES[dtype]).eps)
    floor = max(eps, 100 * float(torch.finfo(torch.float64).eps))
    low = [t for t in tols if t < floor]
    if low:
        raise InputError(
            f"`tolerances` {low} are below the round-off of {dtype} (eps = {eps:.2g}) or "
            f"scipy's floor 100·eps of float64: no solver honours them. Use tolerances "
            f"≥ {floor:.2g}{' (or float64)' if dtype != 'float64' else ''}."
        )
    return sorted(set(tols), reverse=True)


def _check_steps(ns) -> list[int]:
    arr = np.atleast_1d(np.asarray(ns))
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) or np.any(arr < 1):
        raise InputError(f"`n_steps` must be positive integers, got {arr.tolist()}.")
    if int(arr.max()) > MAX_STEPS:
        raise InputError(
            f"`n_steps` up to {MAX_STEPS:,} per run, got {int(arr.max()):,}; use fewer steps."
        )
    return sorted({int(n) for n in arr})


# --- one cell --------------------------------------------------------------------------------


class CellTimeout(Exception):
    """Raised inside the vector field once a cell's deadline has passed."""


class _Field:
    """Counts every call of a vector field and stops the solve at a deadline.

    The deadline is checked on each call: a solver always calls its field, so this
    stops a slow cell of any library at the next evaluation (a field that itself hangs
    is stopped by killing the cell's process instead).
    """

    def __init__(self, f, deadline: float | None):
        self.f, self.deadline, self.calls = f, deadline, 0

    def __call__(self, t, y):
        self.calls += 1
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise CellTimeout("deadline")
        return self.f(t, y)


def _run_once(
    problem: Problem,
    solver: Solver,
    setting: float,
    t_out: np.ndarray,
    dtype: str,
    deadline: float | None = None,
):
    """One solve; returns ``(ys [T, n] numpy, stats dict)`` (see the module docstring)."""
    tdt = _DTYPES[dtype]
    t0, t1 = problem.span
    atol = problem.atol(setting) if solver.adaptive else None
    if solver.library == "scipy":
        from scipy.integrate import solve_ivp

        f = _Field(problem.numpy_field(), deadline)
        extra = {}
        if solver.variant == "jac":
            extra["jac"] = problem.jac_numpy
            if solver.method == "LSODA":  # it takes a dense Jacobian only
                extra["jac"] = _dense_jacobian(problem.jac_numpy)
        elif solver.variant == "sparsity":
            extra["jac_sparsity"] = problem.jac_sparsity
        sol = solve_ivp(
            f,
            (t0, t1),
            problem.y0,
            method=solver.method,
            rtol=setting,
            atol=atol,
            dense_output=True,
            **extra,
        )
        if not sol.success:
            raise RuntimeError(sol.message)
        steps = len(sol.t) - 1
        return sol.sol(t_out).T, {
            "nfe": f.calls,
            "jac_products": 0,
            "njev": int(sol.njev),
            "nlu": int(sol.nlu),
            "steps": steps,
            "accepted": steps,
            "rejected": math.nan,
        }
    t_tensor = torch.as_tensor(t_out, dtype=tdt)
    y0 = problem.y0_tensor(tdt)
    f = _Field(problem.f, deadline)
    atol_t = atol if atol is None or np.ndim(atol) == 0 else torch.as_tensor(atol, dtype=tdt)
    if solver.library == "torchdiffeq":
        import torchdiffeq

        with torch.no_grad():
            if solver.adaptive:
                ys = torchdiffeq.odeint(
                    f, y0, t_tensor, method=solver.method, rtol=setting, atol=atol_t
                )
            else:
                n = int(setting)
                # exactly N steps (its step_size grid rounds (t1 − t0)/h + 1 up, one more
                # step for some N), and cubic Hermite outputs: its default linear
                # interpolation made the error at the outputs second order (Kepler, rk4,
                # N = 512: 1.6e-4 against 3.6e-6), odenet's rows use dense output
                ys = torchdiffeq.odeint(
                    f,
                    y0,
                    t_tensor,
                    method=solver.method,
                    options={
                        "grid_constructor": lambda func, y, t: torch.linspace(
                            t0, t1, n + 1, dtype=t.dtype, device=t.device
                        ),
                        "interp": "cubic",
                    },
                )
        steps = int(setting) if not solver.adaptive else math.nan
        return ys.double().numpy(), {
            "nfe": f.calls,
            "jac_products": 0,
            "njev": 0,
            "nlu": 0,
            "steps": steps,
            "accepted": steps,
            "rejected": math.nan,
        }
    from odenet import solve

    extra = {}
    if solver.variant == "jac":
        jac = problem.jac_numpy
        extra["jac"] = lambda t, y: jac(float(t), y.detach().cpu().numpy())
    elif solver.variant == "sparsity":
        extra["jac_sparsity"] = problem.jac_sparsity
    # (a fixed step split after a Newton failure is reported in the row's message)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", StepSplitWarning)
        if solver.adaptive:
            sol = solve(f, y0, t_tensor, method=solver.method, rtol=setting, atol=atol_t, **extra)
        else:
            sol = solve(
                f, y0, t_tensor, method=solver.method, step_size=abs(t1 - t0) / setting, **extra
            )
    # steps = accepted steps in every row: scipy reports len(sol.t) - 1, while odenet's
    # own "steps" counts attempts (rejected ones too); the table put the two side by side
    stats = {k: sol.stats[k] for k in ("accepted", "rejected")}
    stats["newton_failures"] = int(sol.stats.get("newton_failures", 0))  # (for the message)
    stats["steps"] = stats["accepted"]
    njev = int(sol.stats.get("njev", sol.stats.get("jacobians", 0)))
    # an autograd Jacobian is one taped evaluation (counted in nfe) and its reverse-mode
    # vector–Jacobian products (n for a dense one, one per row group with +sparsity),
    # or one evaluation on dual numbers per column group (in nfe); +jac costs neither
    stats.update(
        nfe=f.calls,
        jac_products=int(sol.stats.get("jac_products", 0)),
        njev=njev,
        nlu=int(sol.stats.get("nlu", sol.stats.get("factorizations", 0))),
    )
    return sol.ys.double().numpy().reshape(t_out.size, -1), stats


def _dense_jacobian(jac):
    """``jac`` returning a dense array where it returns a scipy sparse matrix (a
    problem may, for Radau and BDF; LSODA failed with "setting an array element with a
    sequence")."""

    def dense(t, y):
        J = jac(t, y)
        return J.toarray() if hasattr(J, "toarray") else J

    return dense


def _measure(payload, spec: str, setting: float, repeats: int, dtype: str, limit):
    """Solve ``repeats`` times within ``limit`` seconds; the raw outcome of one cell.

    Returns ``{"ys": [T, n] list or None, "stats", "times", "status", "message"}``.
    The first run is a warm-up and is not timed: a solver's first call in a process
    pays one-off costs (odenet's dopri5 on Kepler: 1.16 s, then 10-15 ms), which made
    the median of one or two repeats several times the solve's time.  The warm-up's
    result counts like any run's (every run computes the same).  A repeat is started only
    when the runs so far say it ends within the limit; when not even one timed repeat
    fits, the warm-up's time is reported.
    """
    problem = resolve_problem(payload)
    solver = parse_solver(spec)
    t_out = np.linspace(problem.span[0], problem.span[1], N_OUTPUTS)
    _import_library(solver)  # imports are not part of a solver's time
    times, status, message = [], "ok", ""
    ys, stats = None, {}
    start_all = time.perf_counter()
    deadline = None if limit is None else start_all + limit
    warmup = None
    for _ in range(repeats + 1):
        spent = times if times else ([warmup] if warmup is not None else [])
        if spent and deadline is not None and time.perf_counter() + max(spent) > deadline:
            break  # one more repeat would run past the limit: report the ones done
        start = time.perf_counter()
        try:
            ys, stats = _run_once(problem, solver, setting, t_out, dtype, deadline)
        except Exception as e:  # a failed solve is a result, not a crash of the sweep
            status = "failed"
            if deadline is not None and time.perf_counter() > deadline:
                message = _timeout_message(limit)
            else:
                message = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            break
        if warmup is None:
            warmup = time.perf_counter() - start
        else:
            times.append(time.perf_counter() - start)
    if status == "ok" and not times and warmup is not None:
        times = [warmup]  # no timed repeat fitted in the limit: the only time there is
    return {
        "ys": None if ys is None or status != "ok" else np.asarray(ys, dtype=np.float64).tolist(),
        "stats": stats,
        "times": times,
        "status": status,
        "message": message,
    }


def _import_library(solver: Solver) -> None:
    if solver.library == "torchdiffeq":
        import torchdiffeq  # noqa: F401
    elif solver.library == "scipy":
        import scipy.integrate  # noqa: F401


def _timeout_message(limit: float) -> str:
    return (
        f"timeout: the cell ran past its limit of {limit:g} s (--cell-timeout / "
        "`cell_timeout`); raise the limit to finish it"
    )


def _child(conn, args, parent: int) -> None:
    import signal
    import threading

    # Ctrl-C reaches the whole process group: the parent handles it and kills this child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a parent killed with -9 cannot kill its cell: stop with it instead of finishing
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        out = _measure(*args)
    except BaseException as e:  # report, never hang the parent waiting for a result
        out = {"crash": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    conn.send(out)
    conn.close()


def _measure_killable(args: tuple, limit: float) -> dict:
    """:func:`_measure` in a child process that is killed if it outlives ``limit``.

    The solve stops itself at the limit (the deadline in its field); the kill, a few
    seconds later, catches what cannot stop itself (a field stuck in one call, an
    endless factorization).  The child is forked: it starts in milliseconds with
    everything imported, needs nothing pickled (a problem may hold lambdas), and does
    not re-run the caller's script as spawn and forkserver children do.
    """
    if multiprocessing.current_process().daemon:  # daemons may not have children
        return _measure(*args)
    # in the parent, once: a forked cell that imports its library itself pays seconds
    # of its kill timer for it (2.4 s measured under load), not of its own deadline
    _import_library(parse_solver(args[1]))
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, args, os.getpid()), daemon=True)
    proc.start()
    send.close()
    try:
        if recv.poll(limit + _KILL_GRACE):
            try:
                out = recv.recv()
            except EOFError:  # the child died without an answer
                proc.join()
                out = {"crash": f"the cell's process died (exit code {proc.exitcode})"}
        else:
            out = {"status": "failed", "message": _timeout_message(limit)}
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()
    if "crash" in out:
        out = {"status": "failed", "message": out["crash"]}
    return {"ys": None, "stats": {}, "times": [], **out}


def work_precision_cell(
    payload,
    spec: str,
    setting: float,
    repeats: int,
    dtype: str,
    cell_timeout: float | None = None,
) -> dict:
    """Run one solver at one tolerance (or number of steps) ``repeats`` times; median time.

    With ``cell_timeout`` (seconds) the runs happen in a child process and a cell that
    runs past the limit is recorded as failed with a message starting ``"timeout"``.
    The errors are measured here, against the problem's exact or reference solution,
    in every measure of :data:`odenet.problems.MEASURES`.
    """
    args = (payload, spec, setting, repeats, dtype, cell_timeout)
    raw = _measure(*args) if cell_timeout is None else _measure_killable(args, cell_timeout)
    status, message, stats, times = raw["status"], raw["message"], raw["stats"], raw["times"]
    norms = {_field(m, n): math.inf for m in MEASURES for n in _NORMS}
    if status == "ok":
        problem = resolve_problem(payload)
        t_out = np.linspace(problem.span[0], problem.span[1], N_OUTPUTS)
        exact = problem.solution(t_out)
        ys = np.asarray(raw["ys"], dtype=np.float64).reshape(exact.shape)
        message = blowup_message(ys, exact) or exact_message(exact)
        if message:
            status = "failed"
        else:
            for m in MEASURES:
                per_time = problem.error(ys, exact, m).max(axis=1)
                for name, v in time_norms(t_out, per_time).items():
                    norms[_field(m, name.removeprefix("error_"))] = v
            if not parse_solver(spec).adaptive:
                # a fixed-step row whose Newton iteration failed sub-stepped: its error
                # and work are a real solve's, but not at N steps (said, not failed)
                h = abs(problem.span[1] - problem.span[0]) / setting
                message = substep_message(stats, int(setting), h)
    return {
        **norms,
        **{k: float(stats.get(k, math.nan)) for k in _COUNTS},
        "wall_s": statistics.median(times) if times else math.nan,
        "wall_all_s": times,
        "cell_timeout_s": math.inf if cell_timeout is None else float(cell_timeout),
        "status": status,
        "message": message,
    }


_NORMS = ("final", "max", "l2")
_COUNTS = ("nfe", "jac_products", "njev", "nlu", "steps", "rejected")


def _field(measure: str, norm: str) -> str:
    """The result field of one error measure and norm (``abs`` keeps the names ``error_*``)."""
    return f"{'error' if measure == 'abs' else measure}_{norm}"


_CELL_FIELDS = {
    # a relative error is infinite where the reference is 0 and the solution is not: an
    # `ok` cell may hold one (its `rel_final` stays finite when the last reference is not)
    **{_field(m, n): "error or inf" if m == "rel" else "error" for m in MEASURES for n in _NORMS},
    **{k: "number" for k in _COUNTS},
    "wall_s": "number",
    "wall_all_s": "numbers",
    "cell_timeout_s": "number",
    "status": "status",
    "message": "str",
}


def is_timeout(result: dict) -> bool:
    """Whether a stored cell failed by running past its time limit."""
    return result.get("status") == "failed" and result.get("message", "").startswith("timeout")


def validate_cell(key: dict, result: dict) -> str | None:
    """Schema of a stored work–precision cell: why it cannot be used, or ``None``."""
    why = check_key(key, "solver", "setting")
    if why:
        return why
    if not _is_positive(key["setting"]):
        return f"its setting {key['setting']!r} is not a positive number"
    why = check_result(result, _CELL_FIELDS)
    if why:
        return why
    if result["status"] == "failed" and math.isfinite(result["error_max"]):
        return "status 'failed' with a finite error"
    if result["status"] == "ok" and not (
        result["wall_all_s"] and all(math.isfinite(w) and w >= 0 for w in result["wall_all_s"])
    ):
        return "status 'ok' without valid timings"
    if result["error_max"] < result["error_final"]:
        return "error_max is smaller than error_final"
    return None


def _is_positive(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


# --- the result ------------------------------------------------------------------------------


@dataclass
class WorkPrecisionResult:
    """What :func:`work_precision` returns.

    Attributes
    ----------
    problem, norm, error : str
        The problem's name, the norm in time and the error measure (abs | rel | mixed).
    table : DataFrame
        One row per (solver, setting): ``label, library, method, adaptive, rtol, n_steps,
        error`` (the chosen measure and norm), the error in every measure and norm
        (``error_final, error_max, error_l2`` absolute, ``rel_*``, ``mixed_*``), ``nfe,
        jac_products, work, njev, nlu, steps, rejected, wall_s, cell_timeout_s, status,
        message`` (see the module docstring for what the counts count), ``dtype`` (the
        dtype the row ran in: scipy's rows run in float64 whatever the study's dtype, and
        in a study of another dtype their label ends in `` (float64)``).
    summary : DataFrame
        Per solver: the run with the least work reaching each error target (with its time).
    config : dict
    counts : dict
    """

    problem: str
    norm: str
    table: pd.DataFrame
    summary: pd.DataFrame
    config: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    error: str = "abs"

    def to_text(self) -> str:
        t = self.table.copy()
        from odenet.plotting import tolerance_label

        t["setting"] = [
            f"rtol={tolerance_label(r)}" if a else f"N={int(n)}"
            for a, r, n in zip(t["adaptive"], t["rtol"], t["n_steps"])
        ]
        cols = ["label", "setting", "error", "nfe", "jac_products", "njev", "nlu", "steps"]
        cols += ["wall_s", "status"]
        count = lambda v: "-" if not math.isfinite(v) else f"{int(v)}"  # noqa: E731
        lines = [
            f"Work–precision: problem {self.problem!r}, {self.error} error ({self.norm} over "
            f"{N_OUTPUTS} output times, max over components); nfe = every call of f "
            "(finite-difference Jacobians included), jac_products = autograd "
            "vector–Jacobian products; wall time = median of repeats",
            "",
            t[cols].to_string(
                index=False,
                na_rep="-",
                formatters={
                    "error": lambda v: f"{v:.2e}",
                    "wall_s": lambda v: f"{v * 1e3:.1f} ms",
                    **{c: count for c in ("nfe", "jac_products", "njev", "nlu", "steps")},
                },
            ),
        ]
        study = self.config.get("dtype", "float64")
        other = t[t["dtype"] != study] if "dtype" in t else t.iloc[:0]
        if not other.empty:
            lines += [
                "",
                f"The study ran in {study}, but scipy's solve_ivp works in float64 only: "
                f"its rows ({', '.join(dict.fromkeys(other['label']))}) are float64 solves.",
            ]
        failed = t[t["status"] != "ok"]
        if not failed.empty:
            lines += ["", "Failed cells:"]
            lines += [f"  {r.label} {r.setting}: {r.message}" for r in failed.itertuples()]
        noted = t[(t["status"] == "ok") & (t["message"].fillna("") != "")]
        if not noted.empty:
            lines += ["", "Not run as labelled:"]
            lines += [f"  {r.label} {r.setting}: {r.message}" for r in noted.itertuples()]
        lines += [
            "",
            "Least work (nfe + jac_products) reaching each error target (work / its median "
            "wall time):",
            self.summary.to_string(index=False),
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    targets = [1e-3, 1e-6, 1e-9]
    rows = []
    for label in dict.fromkeys(table["label"]):
        sub = table[(table["label"] == label) & (table["status"] == "ok")]
        row = {"solver": label}
        for tgt in targets:
            ok = sub[sub["error"] <= tgt]
            if ok.empty:
                row[f"err<={tgt:.0e}"] = "-"
            else:
                best = ok.loc[ok["work"].idxmin()]
                row[f"err<={tgt:.0e}"] = f"{int(best['work'])} / {best['wall_s'] * 1e3:.1f} ms"
        rows.append(row)
    return pd.DataFrame(rows)


def _row_dtype(solver: Solver, dtype: str) -> str:
    """The dtype ``solver`` ran in: scipy's ``solve_ivp`` always works in float64,
    whatever the study's ``dtype``; odenet and torchdiffeq run in the study's."""
    return "float64" if solver.library == "scipy" else dtype


def identity(problem: Problem, dtype: str, repeats: int) -> dict:
    ratio = problem.atol_ratio
    return {
        "kind": "work_precision",
        "problem": problem.name,
        "problem_key": problem.key(),
        "dtype": dtype,
        "repeats": repeats,
        "atol_ratio": ratio if np.ndim(ratio) == 0 else np.asarray(ratio).tolist(),
        "n_outputs": N_OUTPUTS,
    }


def check_cell_timeout(value) -> float | None:
    """``None`` (no limit) or a positive number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InputError(
            f"`cell_timeout` must be a positive number of seconds (or None for no limit), "
            f"got {value!r}."
        )
    return float(value)


def check_error_measure(value) -> str:
    if value not in MEASURES:
        raise InputError(
            f"`error` must be one of {', '.join(MEASURES)} (absolute, relative, or relative "
            f"above the problem's atol_ratio and absolute below), got {value!r}."
        )
    return value


def _check_variants(problem: Problem, solvers: list[Solver]) -> None:
    for s in solvers:
        if s.variant == "jac" and problem.jac_numpy is None:
            raise InputError(
                f"{s.label}: problem {problem.name!r} has no Jacobian; give the Problem a "
                "`jac_numpy` or compare without +jac."
            )
        if s.variant == "sparsity" and problem.jac_sparsity is None:
            raise InputError(
                f"{s.label}: problem {problem.name!r} has no sparsity pattern; give the Problem "
                "a `jac_sparsity` or compare without +sparsity."
            )


class _Redo:
    """A view of a store in which the given cells count as missing (to be recomputed)."""

    def __init__(self, store: CellStore, keys: list[dict]):
        self.store, self.folder = store, store.folder
        self._redo = [dict(k) for k in keys]

    def __contains__(self, key: dict) -> bool:
        return key not in self._redo and key in self.store

    def put(self, key: dict, result: dict) -> None:
        self.store.put(key, result)


def work_precision(
    problem_or_f,
    y0=None,
    span=None,
    *,
    exact=None,
    methods: Sequence[str] | str | None = None,
    tolerances: Sequence[float] | None = None,
    n_steps: Sequence[int] | None = None,
    repeats: int = 3,
    norm: str = "max",
    error: str = "abs",
    cell_timeout: float | None = DEFAULT_CELL_TIMEOUT,
    dtype: str = "float64",
    out=None,
    workers: int | None = 1,
    scheduler: str | None = None,
    executor=None,
    progress: bool = False,
    oversubscribe: bool = False,
) -> WorkPrecisionResult:
    """Error against work and wall time for several solvers on one problem.

    Parameters
    ----------
    problem_or_f, y0, span, exact :
        As in :func:`odenet.studies.convergence`.
    methods : list of str or comma-separated str
        odenet names (adaptive ones are run across ``tolerances``, fixed-step ones across
        ``n_steps``), ``"scipy:NAME"`` (``solve_ivp``; ``"scipy:NAME+jac"`` passes the
        problem's ``jac_numpy`` as ``jac``, ``"scipy:NAME+sparsity"`` its ``jac_sparsity``)
        and ``"torchdiffeq:NAME"``.  Default ``DEFAULT_COMPARE_METHODS``, or
        ``DEFAULT_STIFF_METHODS`` for a problem marked ``stiff``.
    tolerances : sequence of float
        ``rtol`` values; ``atol = problem.atol_ratio · rtol`` (default ratio 1e-3; one per
        component if the problem has one per component).  Default 1e-3, 1e-5, 1e-7
        (float32: 1e-2, 1e-3, 1e-4, at or above its 100·eps).
    n_steps : sequence of int
        Step counts for fixed-step solvers.  Default 16, 32, 64.
    repeats : int
        Timed repetitions per cell, after one untimed warm-up run; the median is
        reported (errors and counts from the last run: every run computes the same).
    norm : {"max", "final", "l2"}
        Norm in time over the 21 equally spaced output times (max over components).
    error : {"abs", "rel", "mixed"}
        Error measure per component (:meth:`odenet.problems.Problem.error`): absolute,
        relative to the reference, or mixed (relative above the problem's
        ``atol_ratio``, absolute below).  Every cell stores all three; this picks the
        ``error`` column and the summary.
    cell_timeout : float or None
        Seconds per cell (all its repeats, default 120).  Each cell runs in a child process;
        one that runs past the limit is recorded as failed with a message starting
        ``"timeout"`` and the study goes on.  Rerunning with a larger limit recomputes
        the cells that timed out under a smaller one.  ``None``: no limit, in-process.
    dtype, out, workers, scheduler, executor, progress, oversubscribe :
        As in :func:`odenet.studies.convergence`.  Timings are only meaningful with
        ``workers=1`` (no contention).

    Returns
    -------
    WorkPrecisionResult
    """
    problem = as_problem(problem_or_f, y0, span, exact)
    if methods is None:
        methods = list(DEFAULT_STIFF_METHODS if problem.stiff else DEFAULT_COMPARE_METHODS)
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        methods = list(methods)
    except TypeError:
        raise InputError(f"`methods` must be a list of solver names, got {methods!r}.") from None
    if not all(isinstance(m, str) for m in methods):
        raise InputError(f"`methods` must contain solver names (strings), got {methods!r}.")
    solvers = [parse_solver(m) for m in dict.fromkeys(methods)]
    if not solvers:
        raise InputError("`methods` is empty; name at least one solver.")
    _check_variants(problem, solvers)
    ns = _check_steps(DEFAULT_N_STEPS if n_steps is None else n_steps)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 100:
        raise InputError(
            f"`repeats` must be a positive integer up to 100 (timing repetitions), got {repeats!r}."
        )
    norm = check_norm(norm)
    error = check_error_measure(error)
    cell_timeout = check_cell_timeout(cell_timeout)
    dtype = check_dtype(dtype)
    if tolerances is None:  # the defaults the state's dtype resolves: rtol >= 100·eps, the
        # floor below which every adaptive solve warns (float32 kept 1e-5 < 1.2e-5: the
        # study's own defaults tripped that warning)
        floor = 100 * float(torch.finfo(_DTYPES[dtype]).eps)
        defaults = DEFAULT_TOLERANCES if dtype == "float64" else DEFAULT_TOLERANCES_FLOAT32
        tolerances = [t for t in defaults if t >= floor]
    tols = _check_tolerances(tolerances, dtype)
    store = CellStore(out, identity(problem, dtype, repeats), validate_cell)
    config = {
        "problem": problem.spec[0] if problem.spec else problem.name,
        "params": problem.spec[1] if problem.spec else {},
        "methods": [s.label for s in solvers],
        "tols": tols,
        "steps": ns,
        "repeats": repeats,
        "norm": norm,
        "error": error,
        "cell_timeout": cell_timeout,
        "dtype": dtype,
    }
    ctx = (
        nullcontext(executor)
        if executor is not None
        else make_executor(workers, scheduler, oversubscribe=oversubscribe)
    )
    with ctx as ex:
        payload = problem_payload(problem, ex)
        if payload is None:
            ex, payload = None, ("object", problem)
        tasks = []
        for s in solvers:
            settings = tols if s.adaptive else ns
            for v in settings:
                odenet_method = s.method if s.library == "odenet" else None
                key = cell_key({"solver": s.label}, odenet_method, library=s.library, setting=v)
                tasks.append((key, (payload, s.label, v, repeats, dtype, cell_timeout)))
        # a cell of another build (another odenet, scipy, ...) is recomputed, not served
        warn_other_builds(store, [k for k, _ in tasks])
        # a cell that timed out under a smaller limit than this run's is tried again
        limit = math.inf if cell_timeout is None else cell_timeout
        redo = [
            k
            for k, _ in tasks
            if k in store and is_timeout(store.get(k)) and store.get(k)["cell_timeout_s"] < limit
        ]
        if any(k not in store for k, _ in tasks) or redo:
            # the reference solve (cached on disk) is not part of any cell's time limit
            problem.solution(np.linspace(problem.span[0], problem.span[1], N_OUTPUTS))
        counts = run_cells(
            work_precision_cell,
            tasks,
            _Redo(store, redo) if redo else store,
            executor=ex,
            progress=progress,
            desc="compare",
        )
    rows = []
    for key, _ in tasks:
        s = parse_solver(key["solver"])
        r = dict(store.get(key))
        r.pop("wall_all_s", None)
        ran = _row_dtype(s, dtype)
        rows.append(
            {
                # a scipy row of a float32 study ran in float64: its label says so, so
                # the printed table, the summary and the plot's legend do too
                "label": s.label if ran == dtype else f"{s.label} ({ran})",
                "library": s.library,
                "method": s.method,
                "adaptive": s.adaptive,
                "rtol": key["setting"] if s.adaptive else math.nan,
                "n_steps": math.nan if s.adaptive else key["setting"],
                **r,
                "dtype": ran,
            }
        )
    table = pd.DataFrame(rows)
    table.insert(6, "error", table[_field(error, norm)])
    table.insert(
        table.columns.get_loc("jac_products") + 1, "work", table["nfe"] + table["jac_products"]
    )
    return WorkPrecisionResult(problem.name, norm, table, _summary(table), config, counts, error)


__all__ = [
    "DEFAULT_CELL_TIMEOUT",
    "DEFAULT_COMPARE_METHODS",
    "DEFAULT_N_STEPS",
    "DEFAULT_STIFF_METHODS",
    "DEFAULT_TOLERANCES",
    "DEFAULT_TOLERANCES_FLOAT32",
    "Solver",
    "WorkPrecisionResult",
    "parse_solver",
    "work_precision",
]
