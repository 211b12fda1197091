"""Work–precision: error against cost (function evaluations, wall time) per solver.

Adaptive methods are run across tolerances (``rtol``, with ``atol = rtol ·
atol_ratio``), fixed-step methods across numbers of steps.  odenet methods run
beside scipy's ``solve_ivp`` (``"scipy:RK45"``, ``"scipy:DOP853"``,
``"scipy:Radau"``, ...) and torchdiffeq's ``odeint`` (``"torchdiffeq:dopri5"``,
``"torchdiffeq:rk4"``, ...) on the same problem, the same output times and the
same error norm.  Each cell is timed ``repeats`` times and the median is
reported; the function evaluations are counted by wrapping the vector field once.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from odenet._errors import InputError
from odenet.problems import Problem, as_problem
from odenet.studies.convergence import (
    _DTYPES,
    MAX_STEPS,
    blowup_message,
    check_dtype,
    check_norm,
    time_norms,
)
from odenet.studies.sweep import (
    CellStore,
    check_result,
    make_executor,
    problem_payload,
    resolve_problem,
    run_cells,
)

DEFAULT_COMPARE_METHODS = (
    "dopri5",
    "tsit5",
    "rk4",
    "scipy:RK45",
    "scipy:DOP853",
    "torchdiffeq:dopri5",
)
DEFAULT_TOLERANCES = (1e-3, 1e-5, 1e-7)
DEFAULT_N_STEPS = (16, 32, 64)
N_OUTPUTS = 21
SCIPY_METHODS = ("RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")
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
    """One solver of a comparison: ``library`` (odenet | scipy | torchdiffeq), ``method``."""

    library: str
    method: str
    adaptive: bool

    @property
    def label(self) -> str:
        return self.method if self.library == "odenet" else f"{self.library}:{self.method}"


def parse_solver(spec: str) -> Solver:
    """``"dopri5"`` → odenet; ``"scipy:RK45"``; ``"torchdiffeq:rk4"``."""
    from odenet.tableaus import methods, tableau

    lib, sep, name = spec.partition(":")
    if not sep:
        lib, name = "odenet", spec
    if lib == "odenet":
        if name not in methods():
            raise InputError(
                f"unknown odenet method {name!r} in `methods`; available: {', '.join(methods())}."
            )
        return Solver("odenet", name, tableau(name).is_adaptive)
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


def _check_tolerances(tols) -> list[float]:
    tols = [float(t) for t in np.atleast_1d(np.asarray(tols, dtype=np.float64))]
    if not tols or any(not (0 < t < 1) for t in tols):
        raise InputError(f"`tolerances` must be numbers in (0, 1), got {tols}.")
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


def _run_once(problem: Problem, solver: Solver, setting: float, t_out: np.ndarray, dtype: str):
    """One solve; returns ``(ys [T, n] numpy, stats dict)``."""
    tdt = _DTYPES[dtype]
    t0, t1 = problem.span
    if solver.library == "scipy":
        from scipy.integrate import solve_ivp

        f = problem.numpy_field()
        sol = solve_ivp(
            f,
            (t0, t1),
            problem.y0,
            method=solver.method,
            rtol=setting,
            atol=setting * 1e-3,
            dense_output=True,
        )
        if not sol.success:
            raise RuntimeError(sol.message)
        steps = len(sol.t) - 1
        return sol.sol(t_out).T, {
            "nfe": int(sol.nfev),
            "steps": steps,
            "accepted": steps,
            "rejected": math.nan,
            "njev": int(sol.njev),
        }
    t_tensor = torch.as_tensor(t_out, dtype=tdt)
    y0 = problem.y0_tensor(tdt)
    if solver.library == "torchdiffeq":
        import torchdiffeq

        count = [0]
        f_user = problem.f

        def f(t, y):
            count[0] += 1
            return f_user(t, y)

        with torch.no_grad():
            if solver.adaptive:
                ys = torchdiffeq.odeint(
                    f, y0, t_tensor, method=solver.method, rtol=setting, atol=setting * 1e-3
                )
            else:
                ys = torchdiffeq.odeint(
                    f,
                    y0,
                    t_tensor,
                    method=solver.method,
                    options={"step_size": (t1 - t0) / setting},
                )
        steps = int(setting) if not solver.adaptive else math.nan
        return ys.double().numpy(), {
            "nfe": count[0],
            "steps": steps,
            "accepted": steps,
            "rejected": math.nan,
        }
    from odenet import solve

    with torch.no_grad():
        if solver.adaptive:
            sol = solve(
                problem.f, y0, t_tensor, method=solver.method, rtol=setting, atol=setting * 1e-3
            )
        else:
            sol = solve(
                problem.f, y0, t_tensor, method=solver.method, step_size=(t1 - t0) / setting
            )
    stats = {k: sol.stats[k] for k in ("nfe", "steps", "accepted", "rejected")}
    for k in ("jacobians", "linear_solves"):
        if k in sol.stats:
            stats[k] = sol.stats[k]
    return sol.ys.double().numpy().reshape(t_out.size, -1), stats


def work_precision_cell(payload, spec: str, setting: float, repeats: int, dtype: str) -> dict:
    """Run one solver at one tolerance (or number of steps) ``repeats`` times; median time."""
    problem = resolve_problem(payload)
    solver = parse_solver(spec)
    t_out = np.linspace(problem.span[0], problem.span[1], N_OUTPUTS)
    times, status, message = [], "ok", ""
    ys, stats = None, {}
    # imports are not part of a solver's time
    if solver.library == "torchdiffeq":
        import torchdiffeq  # noqa: F401
    elif solver.library == "scipy":
        import scipy.integrate  # noqa: F401
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            ys, stats = _run_once(problem, solver, setting, t_out, dtype)
        except Exception as e:  # a failed solve is a result, not a crash of the sweep
            status, message = "failed", f"{type(e).__name__}: {e}".splitlines()[0][:300]
            break
        times.append(time.perf_counter() - start)
    norms = {"error_final": math.inf, "error_max": math.inf, "error_l2": math.inf}
    if status == "ok":
        exact = problem.solution(t_out)
        ys = np.asarray(ys, dtype=np.float64).reshape(exact.shape)
        message = blowup_message(ys, exact)
        if message:
            status = "failed"
        else:
            norms = time_norms(t_out, np.abs(ys - exact).max(axis=1))
    return {
        **norms,
        "nfe": float(stats.get("nfe", math.nan)),
        "steps": float(stats.get("steps", math.nan)),
        "rejected": float(stats.get("rejected", math.nan)),
        "wall_s": statistics.median(times) if times else math.nan,
        "wall_all_s": times,
        "status": status,
        "message": message,
    }


_CELL_FIELDS = {
    "error_final": "error",
    "error_max": "error",
    "error_l2": "error",
    "nfe": "number",
    "steps": "number",
    "rejected": "number",
    "wall_s": "number",
    "wall_all_s": "numbers",
    "status": "status",
    "message": "str",
}


def validate_cell(key: dict, result: dict) -> str | None:
    """Schema of a stored work–precision cell: why it cannot be used, or ``None``."""
    if set(key) != {"solver", "setting"} or not isinstance(key["solver"], str):
        return "its key is not (solver, setting)"
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
    problem, norm : str
    table : DataFrame
        One row per (solver, setting): ``label, library, method, adaptive, rtol, n_steps,
        error, error_final, error_max, error_l2, nfe, steps, rejected, wall_s, status,
        message``.
    summary : DataFrame
        Per solver: the run with the fewest evaluations reaching each error target (with its time).
    config : dict
    counts : dict
    """

    problem: str
    norm: str
    table: pd.DataFrame
    summary: pd.DataFrame
    config: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def to_text(self) -> str:
        t = self.table.copy()
        t["setting"] = [
            f"rtol={r:.0e}" if a else f"N={int(n)}"
            for a, r, n in zip(t["adaptive"], t["rtol"], t["n_steps"])
        ]
        cols = ["label", "setting", "error", "nfe", "steps", "wall_s", "status"]
        lines = [
            f"Work–precision: problem {self.problem!r}, {self.norm} error over {N_OUTPUTS} "
            "output times (max over components); wall time = median of repeats",
            "",
            t[cols].to_string(
                index=False,
                na_rep="-",
                formatters={
                    "error": lambda v: f"{v:.2e}",
                    "wall_s": lambda v: f"{v * 1e3:.1f} ms",
                    "nfe": lambda v: "-" if not math.isfinite(v) else f"{int(v)}",
                    "steps": lambda v: "-" if not math.isfinite(v) else f"{int(v)}",
                },
            ),
            "",
            "Fewest evaluations reaching each error target (NFE / its median wall time):",
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
                best = ok.loc[ok["nfe"].idxmin()]
                row[f"err<={tgt:.0e}"] = f"{int(best['nfe'])} / {best['wall_s'] * 1e3:.1f} ms"
        rows.append(row)
    return pd.DataFrame(rows)


def identity(problem: Problem, dtype: str, repeats: int) -> dict:
    return {
        "kind": "work_precision",
        "problem": problem.name,
        "problem_key": problem.key(),
        "dtype": dtype,
        "repeats": repeats,
        "atol_ratio": 1e-3,
        "n_outputs": N_OUTPUTS,
    }


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
    dtype: str = "float64",
    out=None,
    workers: int | None = 1,
    scheduler: str | None = None,
    executor=None,
    progress: bool = False,
    oversubscribe: bool = False,
) -> WorkPrecisionResult:
    """Error against function evaluations and wall time for several solvers on one problem.

    Parameters
    ----------
    problem_or_f, y0, span, exact :
        As in :func:`odenet.studies.convergence`.
    methods : list of str or comma-separated str
        odenet names (adaptive ones are run across ``tolerances``, fixed-step ones across
        ``n_steps``), ``"scipy:NAME"`` (``solve_ivp``) and ``"torchdiffeq:NAME"``; default
        ``DEFAULT_COMPARE_METHODS``.
    tolerances : sequence of float
        ``rtol`` values; ``atol = 1e-3 · rtol``.  Default 1e-3, 1e-5, 1e-7.
    n_steps : sequence of int
        Step counts for fixed-step solvers.  Default 16, 32, 64.
    repeats : int
        Timing repetitions per cell; the median is reported (NFE from the run itself).
    norm : {"max", "final", "l2"}
        Error over the 21 equally spaced output times (max over components).
    dtype, out, workers, scheduler, executor, progress, oversubscribe :
        As in :func:`odenet.studies.convergence`.  Timings are only meaningful with
        ``workers=1`` (no contention).

    Returns
    -------
    WorkPrecisionResult
    """
    problem = as_problem(problem_or_f, y0, span, exact)
    if methods is None:
        methods = list(DEFAULT_COMPARE_METHODS)
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
    tols = _check_tolerances(DEFAULT_TOLERANCES if tolerances is None else tolerances)
    ns = _check_steps(DEFAULT_N_STEPS if n_steps is None else n_steps)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 100:
        raise InputError(
            f"`repeats` must be a positive integer up to 100 (timing repetitions), got {repeats!r}."
        )
    norm = check_norm(norm)
    dtype = check_dtype(dtype)
    store = CellStore(out, identity(problem, dtype, repeats), validate_cell)
    config = {
        "problem": problem.spec[0] if problem.spec else problem.name,
        "params": problem.spec[1] if problem.spec else {},
        "methods": [s.label for s in solvers],
        "tols": tols,
        "steps": ns,
        "repeats": repeats,
        "norm": norm,
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
                key = {"solver": s.label, "setting": v}
                tasks.append((key, (payload, s.label, v, repeats, dtype)))
        counts = run_cells(
            work_precision_cell, tasks, store, executor=ex, progress=progress, desc="compare"
        )
    rows = []
    for key, _ in tasks:
        s = parse_solver(key["solver"])
        r = dict(store.get(key))
        r.pop("wall_all_s", None)
        rows.append(
            {
                "label": s.label,
                "library": s.library,
                "method": s.method,
                "adaptive": s.adaptive,
                "rtol": key["setting"] if s.adaptive else math.nan,
                "n_steps": math.nan if s.adaptive else key["setting"],
                **r,
            }
        )
    table = pd.DataFrame(rows)
    table.insert(6, "error", table[f"error_{norm}"])
    return WorkPrecisionResult(problem.name, norm, table, _summary(table), config, counts)


__all__ = [
    "DEFAULT_COMPARE_METHODS",
    "DEFAULT_N_STEPS",
    "DEFAULT_TOLERANCES",
    "Solver",
    "WorkPrecisionResult",
    "parse_solver",
    "work_precision",
]
