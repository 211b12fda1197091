"""Convergence studies: error per (method, step size) and the observed order.

For a fixed step ``h = (t1 - t0)/N`` a method of order ``p`` has global error
``e(h) ≈ C h^p`` in the asymptotic range, so ``log e = log C + p log h`` and the
observed order is the least-squares slope of ``log e`` on ``log h`` over that
range.  The range is found from the data, not assumed: points below the
round-off / reference floor are dropped, and the fit uses the longest run of
consecutive step sizes whose local slopes
``p_i = log(e_i / e_{i+1}) / log(h_i / h_{i+1})`` agree (within ``max(0.3, 0.1 p)``),
which excludes the pre-asymptotic regime at large ``h`` and the round-off plateau
at small ``h`` without assuming that steps are halved.

An observed order clearly below the classical order of the tableau is reported as
*order reduction* (e.g. implicit Runge–Kutta methods on stiff Prothero–Robinson
problems converge with their stage order).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from odenet._errors import InputError, StepSplitWarning
from odenet.problems import Problem, as_problem
from odenet.studies.sweep import (
    CellStore,
    check_key,
    check_result,
    make_executor,
    problem_payload,
    resolve_problem,
    run_cells,
    warn_other_builds,
)

NORMS = ("final", "max", "l2")
DEFAULT_METHODS = ("euler", "heun", "rk3", "rk4", "dopri5", "radau_iia5")
DEFAULT_N_STEPS = (8, 11, 16, 23, 32, 45, 64)
# the error is measured at every grid node, so a cell holds N + 1 states in memory
MAX_STEPS = 10_000_000
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


# --- validators ----------------------------------------------------------------------------


def check_methods(methods) -> list[str]:
    from odenet._multistep import MULTISTEP
    from odenet.tableaus import methods as all_methods

    if methods is None:
        return list(DEFAULT_METHODS)
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        methods = list(methods)
    except TypeError:
        raise InputError(
            f"`methods` must be a list of method names or a comma-separated string, got "
            f"{methods!r}."
        ) from None
    if not all(isinstance(m, str) for m in methods):
        raise InputError(f"`methods` must contain method names (strings), got {methods!r}.")
    if methods == ["all"]:
        return all_methods()
    methods = list(dict.fromkeys(methods))
    # multistep methods (ab1…, abm2…, bdf1…) are fixed-step schemes to study too;
    # "all" stays the Runge–Kutta tableaus so that its plot keeps a readable legend
    known = all_methods() + list(MULTISTEP)
    bad = [m for m in methods if m not in known]
    if bad or not methods:
        raise InputError(
            f"`methods` has unknown method(s) {bad}; available: {', '.join(known)} (or 'all')."
        )
    return methods


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise InputError(f"`norm` must be one of {NORMS}, got {norm!r}.")
    return norm


def check_dtype(dtype) -> str:
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise InputError(f"`dtype` must be 'float64' or 'float32', got {dtype!r}.")
    return name


def steps_from(problem: Problem, step_sizes=None, n_steps=None) -> list[int]:
    """Numbers of steps ``N`` (sorted, unique) from step sizes ``h`` or counts ``N``.

    A step size ``h`` becomes ``N = round(|t1 - t0|/h)`` so the grid ends exactly at
    ``t1``; the study records the step actually used, ``|t1 - t0|/N`` (a step size, also
    for a span that runs backward).
    """
    if step_sizes is not None and n_steps is not None:
        raise InputError("give `step_sizes` or `n_steps`, not both.")
    span = abs(problem.span[1] - problem.span[0])
    if step_sizes is not None:
        hs = np.atleast_1d(np.asarray(step_sizes, dtype=np.float64))
        if hs.size < 2 or not np.all(np.isfinite(hs)) or np.any(hs <= 0) or np.any(hs > span):
            raise InputError(
                f"`step_sizes` must be at least two positive step sizes no larger than the "
                f"span {span:g}, got {hs.tolist()}."
            )
        ns = np.maximum(1, np.round(span / hs)).astype(int)
    else:
        ns = np.atleast_1d(np.asarray(DEFAULT_N_STEPS if n_steps is None else n_steps))
        if ns.size < 2 or not np.issubdtype(ns.dtype, np.integer) or np.any(ns < 1):
            raise InputError(
                f"`n_steps` must be at least two positive integers, got {ns.tolist()}."
            )
    ns = sorted({int(n) for n in ns})
    if ns[-1] > MAX_STEPS:
        raise InputError(
            f"a cell of {ns[-1]:,} steps is beyond the {MAX_STEPS:,} a study allows (it would "
            "store every step's state); use fewer steps or larger step sizes."
        )
    if len(ns) < 2:
        raise InputError(
            f"the step sizes give only N = {ns} distinct step count(s); a fit needs at least "
            "two different step sizes."
        )
    return ns


# --- one cell -------------------------------------------------------------------------------


def time_norms(t: np.ndarray, err: np.ndarray) -> dict[str, float]:
    """Error norms over a time grid from per-time errors ``err [T]`` (max over components).

    ``final = e(t_N)``, ``max = max_k e(t_k)``, ``l2 = (∫ e(t)² dt)^{1/2}`` (trapezoid rule).
    Each norm reads only the times it needs: an infinite error at one time (a relative
    error where the reference is 0) makes ``max`` and ``l2`` infinite, not ``final``.
    """
    err = np.where(np.isnan(err), math.inf, err)
    if not np.all(np.isfinite(err)):
        return {"error_final": float(err[-1]), "error_max": math.inf, "error_l2": math.inf}
    if t.size > 1:
        w = np.zeros_like(t)
        dt = np.abs(np.diff(t))  # (a span that runs backward has decreasing times)
        w[:-1] += dt / 2
        w[1:] += dt / 2
        l2 = math.sqrt(float(np.sum(w * err**2)))
    else:
        l2 = float(err[-1])
    return {"error_final": float(err[-1]), "error_max": float(err.max()), "error_l2": l2}


# A numerical solution this many times larger than the exact one has blown up (a step
# beyond the stability limit): its "error" measures the instability, not accuracy.
BLOWUP_FACTOR = 1e3

_INF_NORMS = {"error_final": math.inf, "error_max": math.inf, "error_l2": math.inf}


def blowup_message(ys: np.ndarray, exact: np.ndarray) -> str:
    """Why ``ys`` counts as blown up against ``exact`` (both ``[T, n]``), or ``""``.

    A solution blew up when it is non-finite, or when its largest magnitude exceeds
    :data:`BLOWUP_FACTOR` times the exact solution's largest magnitude (``1`` when the
    exact solution is identically zero).
    """
    if not np.all(np.isfinite(ys)):
        return "non-finite solution (unstable step size?)"
    scale = float(np.abs(exact).max()) if exact.size else 0.0
    scale = scale if scale > 0 else 1.0
    peak = float(np.abs(ys).max()) if ys.size else 0.0
    if peak > BLOWUP_FACTOR * scale:
        return (
            f"solution blew up: |y| reached {peak:.3g}, {peak / scale:.2g} times the exact "
            f"solution's largest value {scale:.3g} (step size beyond the method's stability "
            "limit?)"
        )
    return ""


def exact_message(exact: np.ndarray) -> str:
    """Why the exact (or reference) states ``exact [T, n]`` cannot measure an error, or
    ``""``: a state that is not finite (it overflows float64) makes every error
    infinite, whatever the solver did."""
    bad = ~np.all(np.isfinite(exact), axis=-1)
    if not bad.any():
        return ""
    return (
        f"the exact solution is not finite at {int(bad.sum())} of the {bad.size} times it is "
        "compared at (it overflows float64): no error can be measured; shorten the span or "
        "change the problem's parameters."
    )


def substep_message(stats, n_steps: int, h: float) -> str:
    """Why a fixed-step solve of ``n_steps`` steps did not take them, or ``""``.

    A step an implicit method's Newton iteration could not take is rejected and split
    into smaller ones: its error is then not the error at ``h``.  Without rejections,
    extra steps mean the grid of ``h`` did not end at ``t1`` after ``n_steps`` of them
    (rounding in float32).
    """
    accepted, rejected = stats.get("accepted"), stats.get("rejected")
    # (nan: a library that does not count them)
    rejected = 0 if rejected is None or rejected != rejected else int(rejected)
    if accepted is None or accepted != accepted or (accepted == n_steps and not rejected):
        return ""
    accepted = int(accepted)
    if not rejected:  # more steps of the fixed h, none rejected (float32 compare rows)
        return (
            f"the solver took {accepted} steps instead of {n_steps}, none rejected: "
            f"{n_steps} steps of h={h:.4g} in the state's floating-point type did not end "
            f"at t1, so its work and steps are those of {accepted} steps."
        )
    failures = stats.get("newton_failures")
    why = f"Newton failed {failures} time(s)" if failures else f"{rejected} step(s) rejected"
    return (
        f"the fixed step h={h:.4g} could not be taken ({why}): the solver sub-stepped, "
        f"{accepted} accepted and {rejected} rejected steps instead of {n_steps}, so "
        "its error is not the error at h; use more steps (a smaller h) for this method."
    )


def convergence_cell(payload, method: str, n_steps: int, dtype: str) -> dict:
    """Solve on the uniform grid of ``n_steps`` steps and measure the error at every node.

    A run that fails, blows up (see :func:`blowup_message`) or does not take exactly
    ``n_steps`` steps (see :func:`substep_message`) is a ``failed`` cell with infinite
    errors and the reason in ``message``.
    """
    from odenet import solve
    from odenet._errors import SolverError

    problem = resolve_problem(payload)
    t0, t1 = problem.span
    h = abs(t1 - t0) / n_steps  # the step size (the grid runs from t0 towards t1)
    t_np = t0 + (t1 - t0) / n_steps * np.arange(n_steps + 1)
    t_np[-1] = t1
    tdt = _DTYPES[dtype]
    start = time.perf_counter()
    status, message = "ok", ""
    try:
        with warnings.catch_warnings():
            # a split step is reported in the cell itself (substep_message)
            warnings.simplefilter("ignore", StepSplitWarning)
            sol = solve(
                problem.f,
                problem.y0_tensor(tdt),
                torch.as_tensor(t_np, dtype=tdt),
                method=method,
                grid_on_outputs=True,
                throw=False,
            )
        ys = sol.ys.detach().double().numpy().reshape(t_np.size, -1)
        stats = sol.stats
        if not sol.success:
            status, message = "failed", sol.message
    except SolverError as e:
        ys = np.full((t_np.size, problem.dim), np.nan)
        stats = {}
        status, message = "failed", str(e)
    wall = time.perf_counter() - start
    exact = problem.solution(t_np)
    if status == "ok":
        message = substep_message(stats, n_steps, h)
        status = "failed" if message else "ok"
    if status == "ok":
        message = blowup_message(ys, exact) or exact_message(exact)
        status = "failed" if message else "ok"
    if status == "ok":
        norms = time_norms(t_np, np.abs(ys - exact).max(axis=1))
    else:
        norms = dict(_INF_NORMS)
    return {
        "h": h,
        "n_steps": n_steps,
        **norms,
        "nfe": int(stats.get("nfe", 0)),
        "steps": int(stats.get("steps", 0)),
        "wall_s": wall,
        "status": status,
        "message": message,
    }


_CELL_FIELDS = {
    "h": "error",
    "n_steps": "int",
    "error_final": "error",
    "error_max": "error",
    "error_l2": "error",
    "nfe": "int",
    "steps": "int",
    "wall_s": "error",
    "status": "status",
    "message": "str",
}


def validate_cell(key: dict, result: dict) -> str | None:
    """Schema of a stored convergence cell: why it cannot be used, or ``None``."""
    why = check_key(key, "method", "n_steps")
    if why:
        return why
    why = check_result(result, _CELL_FIELDS)
    if why:
        return why
    if result["n_steps"] != key["n_steps"]:
        return f"n_steps {result['n_steps']} does not match its key ({key['n_steps']})"
    if result["status"] == "failed" and math.isfinite(result["error_max"]):
        return "status 'failed' with a finite error"
    if result["error_max"] < result["error_final"]:
        return "error_max is smaller than error_final"
    return None


# --- the order fit --------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderFit:
    """Least-squares order over the detected asymptotic range.

    Attributes
    ----------
    order : float
        Slope of ``log e`` on ``log h`` (NaN when no range was found).
    stderr : float
        Standard error of the slope (NaN with only two points).
    mask : ndarray of bool, shape [M]
        Which points (in the input order) were used.
    reason : str
        Empty, or why no fit was possible.
    """

    order: float
    stderr: float
    mask: np.ndarray
    reason: str = ""

    @property
    def n_points(self) -> int:
        return int(self.mask.sum())


# An error above this fraction of the solution's largest magnitude has not converged:
# it is pre-asymptotic and kept out of the order fit.  (Half, not a tenth: heun on the
# harmonic oscillator is already on its slope 2 at errors of 35 % of the solution.)
PREASYMPTOTIC_REL_ERROR = 0.5


def slope_band(p: float) -> float:
    """How far two local slopes near ``p`` may differ and still count as one order."""
    return max(0.3, 0.1 * abs(p))


def fit_order(
    h: Sequence[float], err: Sequence[float], *, floor=0.0, scale: float | None = None
) -> OrderFit:
    """Observed order from errors ``err [M]`` at step sizes ``h [M]`` (any spacing).

    Points with a non-finite error or an error at or below ``floor`` (round-off or
    reference accuracy; one number or one per point) are excluded, and so, when the
    solution's largest magnitude ``scale`` is given, are errors above
    :data:`PREASYMPTOTIC_REL_ERROR` ``· scale`` (not converged: an error as large as
    the solution says nothing about the order).  Among the rest, the fit uses a run
    of consecutive step sizes whose local slopes agree to within ``max(0.3, 0.1 p)``
    and are at least 0.5 (smaller slopes are a plateau, not convergence): the run of
    at least three points that reaches the smallest ``h`` (the asymptotic end), the
    longest such; two points only when no three agree.  When the error still falls
    steadily and faster beyond that run (a pre-asymptotic run at large ``h``), the run
    that ends where the steady decrease ends is used instead.
    """
    h = np.asarray(h, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    if h.shape != err.shape or h.ndim != 1:
        raise InputError(f"`h` and `err` must be 1-D of equal length, got {h.shape}, {err.shape}.")
    order = np.argsort(-h)  # large h first
    floor = np.broadcast_to(np.asarray(floor, dtype=np.float64), h.shape)
    valid = np.isfinite(err[order]) & (err[order] > floor[order]) & (h[order] > 0)
    if scale is not None and math.isfinite(scale) and scale > 0:
        valid &= err[order] <= PREASYMPTOTIC_REL_ERROR * scale
    idx = order[valid]
    mask = np.zeros(h.shape, dtype=bool)
    if idx.size < 2:
        why = "fewer than two errors above the floor"
        if scale is not None and math.isfinite(scale) and scale > 0:
            why += f" and below {PREASYMPTOTIC_REL_ERROR:g}× the solution's size"
        return OrderFit(math.nan, math.nan, mask, why)
    x, y = np.log(h[idx]), np.log(err[idx])
    slopes = np.diff(y) / np.diff(x)  # slopes[i] between points i and i+1
    m = slopes.size

    def best_run(end: int | None = None):
        """Best agreeing run among all (``end`` None) or among those ending at ``end``."""
        best = None
        for a in range(m):
            for b in range(a, m) if end is None else [end]:
                s = slopes[a : b + 1]
                if s.size == 0:
                    continue
                mean = s.mean()
                if s.min() < 0.5 or s.max() - s.min() > slope_band(mean):
                    continue
                # the asymptotic range is at small h: prefer runs of >= 3 points that
                # end at the smallest h, then longer runs
                cand = (min(b - a, 1), b, b - a)
                if best is None or cand > best[0]:
                    best = (cand, a, b)
        return best

    best = best_run()
    if best is None:
        return OrderFit(math.nan, math.nan, mask, "no range where the error decreases steadily")
    _, a, b = best
    # Beyond a run that stops short of the smallest h, the error may still fall steadily
    # (slopes >= 0.5, up to a round-off plateau).  If it falls faster there than in the
    # run, the run was pre-asymptotic: take the best run that reaches that far instead.
    later = slopes[b + 1 :]
    later = later[: int(np.argmax(later < 0.5)) if np.any(later < 0.5) else later.size]
    run = slopes[a : b + 1].mean()
    if later.size and later.mean() > run + slope_band(run):
        best = best_run(b + later.size)
        if best is not None:
            _, a, b = best
    sel = idx[a : b + 2]
    mask[sel] = True
    xs, ys = np.log(h[sel]), np.log(err[sel])
    if sel.size == 2:
        return OrderFit(float((ys[1] - ys[0]) / (xs[1] - xs[0])), math.nan, mask)
    A = np.stack([xs, np.ones_like(xs)], axis=1)
    coef, *_ = np.linalg.lstsq(A, ys, rcond=None)
    resid = ys - A @ coef
    sxx = float(np.sum((xs - xs.mean()) ** 2))
    stderr = math.sqrt(float(np.sum(resid**2)) / (sel.size - 2) / sxx)
    return OrderFit(float(coef[0]), stderr, mask)


@functools.cache
def stage_order(name: str) -> int:
    """Stage order ``q``: the largest ``q`` with ``B(q)`` and ``C(q)`` (exact arithmetic).

    The one definition is :func:`odenet.order_conditions.stage_order`; e.g. 1 for
    explicit Euler and rk4, 3 for Radau IIA of order 5, 2 for the 2-stage Gauss method.
    (``C(q)`` alone holds for every ``q`` when all stages sit at ``c = 0``, which is how
    explicit Euler was once reported with stage order 11.)
    """
    from odenet.order_conditions import stage_order as exact_stage_order

    return int(exact_stage_order(name))


def verdict(expected: int, fit: OrderFit) -> str:
    """``ok`` | ``order reduction`` | ``higher than expected`` | ``no asymptotic range``."""
    if not math.isfinite(fit.order):
        return "no asymptotic range"
    tol = max(0.3, 2 * (fit.stderr if math.isfinite(fit.stderr) else 0.0))
    if fit.order < expected - tol:
        return "order reduction"
    if fit.order > expected + max(0.5, tol):
        return "higher than expected"
    return "ok"


# --- the result ----------------------------------------------------------------------------


@dataclass
class ConvergenceResult:
    """What :func:`convergence` returns.

    Attributes
    ----------
    problem : str
    norm : str
        ``final`` | ``max`` | ``l2``; the ``error`` column of ``table`` uses it.
    table : DataFrame
        One row per (method, step): ``method, n_steps, h, error, error_final, error_max,
        error_l2, nfe, steps, wall_s, status, message, in_fit``.
    orders : DataFrame
        One row per method: ``method, expected_order, stage_order, observed_order,
        stderr, n_fit, h_min, h_max, verdict, note``.
    config : dict
        The arguments that reproduce the study.
    counts : dict
        ``{"loaded": cells read from the results folder, "computed": cells computed}``.
    """

    problem: str
    norm: str
    table: pd.DataFrame
    orders: pd.DataFrame
    config: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def observed_order(self, method: str) -> float:
        row = self.orders.loc[self.orders["method"] == method]
        if row.empty:
            raise InputError(f"method {method!r} is not in this study: {list(self.orders.method)}.")
        return float(row["observed_order"].iloc[0])

    def errors(self) -> pd.DataFrame:
        """Error matrix: rows ``h`` (descending), one column per method."""
        return self.table.pivot(index="h", columns="method", values="error").sort_index(
            ascending=False
        )[list(self.orders["method"])]

    def to_text(self) -> str:
        """The terminal summary: the error table and the fitted orders."""
        import shutil

        width = max(80, shutil.get_terminal_size((100, 24)).columns)
        err = self.errors()
        err.index = [f"{h:.4g}" for h in err.index]
        err.index.name = "h"
        if err.shape[1] > 8:
            # many methods: one row per method keeps the table as wide as the step list
            err = err.T
            err.index.name = "method \\ h"
            err.columns.name = None
        lines = [
            f"Convergence study: problem {self.problem!r}, {self.norm} error (max over components)",
            "",
            err.to_string(float_format=lambda v: f"{v:.2e}", line_width=width),
            "",
        ]
        o = self.orders.copy()
        o["observed"] = [
            "  nan"
            if not math.isfinite(p)
            else (f"{p:5.2f}" + (f" ± {s:.2f}" if math.isfinite(s) else ""))
            for p, s in zip(o["observed_order"], o["stderr"])
        ]
        o["fit range h"] = [
            "-" if not math.isfinite(a) else f"[{a:.3g}, {b:.3g}]"
            for a, b in zip(o["h_min"], o["h_max"])
        ]
        cols = ["method", "expected_order", "observed", "n_fit", "fit range h", "verdict"]
        out = o[cols].rename(columns={"expected_order": "expected", "n_fit": "points"})
        lines.append(out.to_string(index=False))
        import textwrap

        notes = [
            textwrap.fill(f"  {m}: {n}", width, subsequent_indent="      ")
            for m, n in zip(o["method"], o["note"])
            if n
        ]
        if notes:
            lines += ["", "Notes:", *notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


# Local slopes that move toward the classical order by more than this over a fitted run
# are still on their way to it: rk4 on Lotka–Volterra at N = 32, 64, 128 gives 3.32 → 3.58
# (then 3.84, 3.94, 3.97), which the fit's agreement band accepts as one slope.
RISING_SLOPES = 0.2


def _unsettled(h, err, fit: OrderFit, expected: int) -> str:
    """Why the fitted slope cannot support a verdict: ``""`` when it can.  A slope from
    two points cannot when they are all the study has, or when the slope to a point
    beside them disagrees; nor can local slopes that still move toward the classical
    order ``expected`` at the small steps (pre-asymptotic, not reduced)."""
    order = np.argsort(-h)
    h, err, used = h[order], err[order], fit.mask[order]
    idx = np.flatnonzero(used)
    if idx.size < 2:
        return ""
    if idx.size == 2:
        near = [i for i in (idx[0] - 1, idx[1] + 1) if 0 <= i < h.size and err[i] > 0]
        for i in near:
            j = idx[0] if i < idx[0] else idx[1]
            s = math.log(err[i] / err[j]) / math.log(h[i] / h[j])
            if not (abs(s - fit.order) <= slope_band(fit.order)):
                return (
                    f"from two step sizes only, and the slope beside them is {s:.2f}: "
                    "not asymptotic yet; use smaller step sizes"
                )
        if h.size == 2:
            return "from two step sizes only: give three or more to tell"
        return ""
    slope = np.diff(np.log(err[idx])) / np.diff(np.log(h[idx]))
    # still moving toward the classical order: rising below it, falling above it
    toward = np.sign(expected - fit.order)
    steps = np.diff(slope) * toward
    if toward and np.all(steps > 0) and steps.sum() > RISING_SLOPES:
        return (
            f"the local slopes still {'rise' if toward > 0 else 'fall'} toward the small "
            f"steps ({slope[0]:.2f} → {slope[-1]:.2f}): not asymptotic yet; use smaller "
            "step sizes"
        )
    return ""


def summarize(
    table: pd.DataFrame, norm: str, floor, scale: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit the order per method; return ``(table with in_fit, orders)``.  ``floor``: one
    number, or one per row of ``table`` (see :func:`error_floor`); ``scale``: the
    solution's largest magnitude (errors above half of it are not fitted, see
    :func:`fit_order`)."""
    from odenet._registry import method as registered_method
    from odenet._registry import multistep

    table = table.copy()
    table["error"] = table[f"error_{norm}"]
    table["in_fit"] = False
    floor = np.broadcast_to(np.asarray(floor, dtype=np.float64), len(table))
    floors = pd.Series(floor, index=table.index)
    rows = []
    for method in dict.fromkeys(table["method"]):
        sub = table[table["method"] == method]
        below = floors[sub.index].to_numpy()
        fit = fit_order(sub["h"].to_numpy(), sub["error"].to_numpy(), floor=below, scale=scale)
        table.loc[sub.index[fit.mask], "in_fit"] = True
        tab = registered_method(method)
        expected = int(tab.order)
        # a multistep method has no stages: its error has no stage-order reduction
        q = expected if multistep(method) else stage_order(method)
        v = verdict(expected, fit)
        note = ""
        unsettled = _unsettled(sub["h"].to_numpy(), sub["error"].to_numpy(), fit, expected)
        # an "ok" from two points stands unless the points beside them disagree
        judged = v != "ok" or (fit.n_points == 2 and len(sub) > 2)
        if judged and unsettled:
            v, note = "no asymptotic range", f"observed order {fit.order:.2f}, but {unsettled}"
        elif v == "order reduction":
            note = f"observed order {fit.order:.2f} < classical order {expected}"
            if multistep(method):
                # no stages, so no stage-order reduction: the steps are not asymptotic
                # yet, or the problem is not smooth enough for this order
                note += (
                    " (a multistep method has no stage order: the step sizes may not be "
                    "asymptotic yet, or the solution not smooth enough)"
                )
            elif not tab.is_explicit:
                note += f" (stage order {q}: stiff problems reduce implicit methods towards it)"
        elif v == "no asymptotic range":
            failed = sub[sub["status"] != "ok"]
            if len(failed):
                note = (
                    f"all {len(sub)} runs failed ({failed['message'].iloc[0]})"
                    if len(failed) == len(sub)
                    else f"{len(failed)} of {len(sub)} runs failed ({failed['message'].iloc[0]}); "
                    f"among the rest, {fit.reason}"
                )
            else:
                # the errors above the floor are the large-h ones: the range that is
                # left over is the pre-asymptotic or round-off side of it
                above = sub["error"].to_numpy() > below
                h = sub["h"].to_numpy()
                if not above.any():
                    note = "every error is at round-off level already: use larger step sizes"
                elif above.sum() < 3 and h[above].min() > h[~above].max(initial=0.0):
                    note = (
                        f"{fit.reason}: the errors at the smaller steps are at round-off "
                        "level; use larger step sizes"
                    )
                else:
                    note = f"{fit.reason}: use smaller step sizes"

        elif v == "higher than expected":
            note = (
                f"observed {fit.order:.2f} > classical order {expected} "
                "(pre-asymptotic, or superconvergence on this problem)"
            )
        used = sub["h"].to_numpy()[fit.mask]
        rows.append(
            {
                "method": method,
                "expected_order": expected,
                "stage_order": q,
                "observed_order": fit.order,
                "stderr": fit.stderr,
                "n_fit": fit.n_points,
                "h_min": float(used.min()) if used.size else math.nan,
                "h_max": float(used.max()) if used.size else math.nan,
                "verdict": v,
                "note": note,
            }
        )
    return table, pd.DataFrame(rows)


def error_floor(problem: Problem, dtype: str, n_steps=None, scale: float | None = None):
    """Errors at or below this are round-off (or reference inaccuracy), not truncation.

    Round-off after ``N`` steps is a random walk of ``eps·|y|`` per step: the floor is
    ``eps·scale·max(100, 10·√N)`` with ``scale`` the solution's largest magnitude (not
    ``y0``'s: a solution that grows to 1e5 carries round-off 1e5 times larger, and one
    of size 1e-12 carries round-off 1e-12 times smaller), one value per entry of
    ``n_steps`` (a float when ``n_steps`` is None: ``N = 10⁴``).  An identically zero
    (or non-finite) scale counts as 1.
    """
    if scale is None:
        scale = float(np.abs(problem.y0).max())
    scale = float(scale) if math.isfinite(scale) and scale > 0 else 1.0
    eps = float(torch.finfo(_DTYPES[dtype]).eps)
    n = np.asarray(1e4 if n_steps is None else n_steps, dtype=np.float64)
    floor = eps * scale * np.maximum(100.0, 10.0 * np.sqrt(n))
    if not problem.has_exact:
        from odenet.problems import REFERENCE_ATOL, REFERENCE_RTOL

        # the reference is solved with rtol and an absolute atol: its error is the larger
        floor = np.maximum(floor, 1e3 * max(REFERENCE_RTOL * scale, REFERENCE_ATOL))
    elif problem.exact_rtol is not None:  # a stored numerical reference
        floor = np.maximum(floor, 1e3 * problem.exact_rtol * scale)
    return float(floor) if n_steps is None else floor


def _solution_scale(problem: Problem, n_steps: int) -> float:
    """``max |y|`` over the finest grid's nodes (the times the cells measured at, so a
    reference solution comes from the cache)."""
    t0, t1 = problem.span
    t = t0 + (t1 - t0) / n_steps * np.arange(n_steps + 1)
    t[-1] = t1
    y = problem.solution(t)
    return float(np.nanmax(np.abs(y))) if np.isfinite(y).any() else 1.0


def cell_key(head: dict, method: str | None, *, library: str = "odenet", **setting) -> dict:
    """A cell's key in its results folder: ``head`` (what names the solver), the digest
    of odenet ``method``'s data (:func:`odenet._registry.method_digest`; none for
    scipy's and torchdiffeq's, ``method=None``), the setting, and the build that
    computes it (:func:`odenet._build.cell_build` of the solver's ``library``: odenet's
    code and the libraries' versions).  With the digest, a cell stored before a method's
    coefficients changed is recomputed, not served as current (the key held only the
    name: a folder from before sdirk4's embedded weights changed kept serving its old
    sdirk4 cells); with the build, so is a cell computed by another odenet or with
    another torch, numpy, scipy (or torchdiffeq, for its rows)."""
    from odenet import _build
    from odenet._registry import method_digest

    data = None if method is None else method_digest(method)
    return {
        **head,
        **({"method_data": data} if data else {}),
        **setting,
        "build": _build.cell_build(library),
    }


def identity(problem: Problem, dtype: str) -> dict:
    """The settings that determine a convergence cell's value (a results folder holds one)."""
    return {
        "kind": "convergence",
        "problem": problem.name,
        "problem_key": problem.key(),
        "dtype": dtype,
    }


def convergence(
    problem_or_f,
    y0=None,
    span=None,
    *,
    exact=None,
    methods: Sequence[str] | str | None = None,
    step_sizes: Sequence[float] | None = None,
    n_steps: Sequence[int] | None = None,
    norm: str = "max",
    dtype: str = "float64",
    out=None,
    workers: int | None = 1,
    scheduler: str | None = None,
    executor=None,
    progress: bool = False,
    oversubscribe: bool = False,
) -> ConvergenceResult:
    """Error per (method, step size) on a problem, and the observed order of each method.

    Parameters
    ----------
    problem_or_f : Problem, str or callable
        A :class:`~odenet.problems.Problem`, a built-in problem name (see
        :func:`odenet.problems.problems`), or a vector field ``f(t, y)`` with ``y0``,
        ``span`` and ideally ``exact``.
    y0, span, exact :
        Only with a vector field: initial state ``[n]``, ``(t0, t1)``, and
        ``exact(t [T]) -> [T, n]`` (without it a scipy reference is computed).
    methods : list of str, comma-separated str, or ``"all"``
        Method names from :func:`odenet.methods`; default ``DEFAULT_METHODS`` (orders 1–5,
        two implicit).
    step_sizes : sequence of float, optional
        Step sizes ``h`` (any spacing; each is rounded so the grid ends at ``t1``).
    n_steps : sequence of int, optional
        Numbers of steps instead of ``step_sizes``; default ``DEFAULT_N_STEPS``.
    norm : {"max", "final", "l2"}
        Max over the grid nodes (default; robust to an error that happens to cross
        zero at the final time), error at the final time, or ``(∫ e² dt)^{1/2}``; the
        error at one time is the max over components.
    dtype : {"float64", "float32"}
    out : path, optional
        Results folder: every finished cell is saved there at once, and a rerun of the
        same study resumes from it.
    workers : int
        Local worker processes (``1`` = serial in this process); at most the number of
        available CPUs unless ``oversubscribe``.
    scheduler : str, optional
        Dask scheduler address; runs the cells on that cluster.
    executor : concurrent.futures.Executor, optional
        Use this executor instead (overrides ``workers`` and ``scheduler``).
    progress : bool
        tqdm progress bar on stderr.
    oversubscribe : bool
        Allow more ``workers`` than CPUs.

    Returns
    -------
    ConvergenceResult
    """
    problem = as_problem(problem_or_f, y0, span, exact)
    methods = check_methods(methods)
    norm = check_norm(norm)
    dtype = check_dtype(dtype)
    ns = steps_from(problem, step_sizes, n_steps)
    store = CellStore(out, identity(problem, dtype), validate_cell)
    config = {
        "problem": problem.spec[0] if problem.spec else problem.name,
        "params": problem.spec[1] if problem.spec else {},
        "methods": methods,
        "n_steps": ns,
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
        tasks = [
            (cell_key({"method": m}, m, n_steps=n), (payload, m, n, dtype))
            for m in methods
            for n in ns
        ]
        # a cell of another build (another odenet, torch, ...) is recomputed, not served
        warn_other_builds(store, [k for k, _ in tasks])
        counts = run_cells(
            convergence_cell, tasks, store, executor=ex, progress=progress, desc="converge"
        )
    rows = [{"method": k["method"], **store.get(k)} for k, _ in tasks]
    table = pd.DataFrame(rows)
    scale = _solution_scale(problem, max(ns))  # its first node is t0: y0 counts
    floors = error_floor(problem, dtype, table["n_steps"].to_numpy(), scale)
    table, orders = summarize(table, norm, floors, scale)
    cols = [
        "method",
        "n_steps",
        "h",
        "error",
        "error_final",
        "error_max",
        "error_l2",
        "nfe",
        "steps",
        "wall_s",
        "status",
        "message",
        "in_fit",
    ]
    return ConvergenceResult(problem.name, norm, table[cols], orders, config, counts)


__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_N_STEPS",
    "NORMS",
    "ConvergenceResult",
    "OrderFit",
    "blowup_message",
    "convergence",
    "fit_order",
    "stage_order",
    "time_norms",
    "validate_cell",
]
