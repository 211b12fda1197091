"""radau_iia5 against scipy's ``Radau``, count for count and step for step (issue 14).

Two modes:

``grid``: every (problem, rtol) cell of the stiff set, odenet's adaptive radau_iia5
and scipy's ``Radau`` (finite-difference Jacobian, as ``stiff.py``) at the same
``rtol`` and ``atol = d·rtol``; per solver ``njev``, ``nfe``, ``nlu``, accepted steps,
rejected steps and the error of :func:`odenet.problems.stiff_error`; also odenet's
``nfe`` without the f-calls its Jacobians make (one per autograd Jacobian, the taped
one; one per column group where ``jac_sparsity`` takes forward mode), which is what
scipy's ``nfev`` counts.  A cell is
"over" when its njev is above scipy's or that nfe above 1.2× scipy's.  Counts are
deterministic, so the machine's load does not matter, but scipy's depend on its BLAS's
round-off and so on the number of BLAS threads: stiff_pendulum 1e-6 takes 154 Jacobians
with OpenBLAS's default threads and 142 under ``OMP_NUM_THREADS=1`` (hertz_bounce 1e-6
31 and 35; stiff_results.md, session 33).  Compare runs made with the same setting.
``--json`` keeps the rows.

    python studies/benchmarks/radau_trace.py grid --problems all \\
        --rtols 1e-3,1e-4,1e-5,1e-6,1e-7,1e-8 --brusselator-1d 250 --brusselator-2d 16

``trace``: one cell, one line per step *attempt* on each side: ``t``, ``h``,
accepted or rejected (error ratio), Newton iterations, the last contraction rate θ,
whether the Jacobian was recomputed in the attempt and why (``start``: the first
one; ``slow``: the previous accepted step's Newton was slow; ``fail``: Newton failed
on a stale Jacobian), and the next ``h``.  scipy's side is a copy of
``Radau._step_impl`` (scipy 1.x) with logging and nothing else changed; ``grid
--check-copy`` also runs scipy's own ``Radau`` and checks that the copy's counts equal
the original's.

    python studies/benchmarks/radau_trace.py trace --problem oregonator --rtol 1e-3

A problem of a hold-out sweep (``stiff_holdout.py`` … ``stiff_holdout15.py``: ``e5``,
``prothero_robinson_1e4``, ``detest_d5``, ``stick_slip``, ...) is traced, or run in
``grid``, with its own floors (``atol = floors·rtol``):

    python studies/benchmarks/radau_trace.py trace --problem prothero_robinson_1e4 --rtol 1e-3

``controllers``: the grid's cells solved by radau_iia5 under variants of its step-size
controller that follow scipy's ``Radau`` where odenet's :class:`~odenet._controller.
PredictiveController` (RADAU5's rules) differs (:data:`VARIANTS`, a
:class:`ScipyRules` each); per variant njev, nfe, nlu and the error against scipy
Radau's, summed over the cells, and how many attempts from the start each run takes
exactly as scipy's (step sizes within 1e-3).  ``--t1s`` moves the end of the span
(where a run puts its last step is what decides Prothero–Robinson's error).

    python studies/benchmarks/radau_trace.py controllers --problems all \
        --brusselator-1d 250 --brusselator-2d 16 --json /tmp/controllers.json
    python studies/benchmarks/radau_trace.py controllers --problems prothero_robinson_1e4 \
        --rtols 1e-3,1e-6,1e-8 --t1s 6:15:0.25
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.integrate._ivp import radau as R

import odenet
from odenet import _controller, _radau
from odenet import problems as P
from odenet._newton import Newton
from odenet._ops import HostOps

sys.path.insert(0, str(Path(__file__).parent))
from stiff import ratio_text  # the sibling benchmarks
from stiff_holdout import any_problem


def _rtol_text(rtol: float) -> str:
    """``1e-03``, ``1.2e-03``: every digit the rtol was given with (``.0e`` printed 1.2e-3
    and 1.4e-3 both as ``1e-03``)."""
    return np.format_float_scientific(rtol, exp_digits=2, trim="-")


class TracedRadau(R.Radau):
    """scipy's ``Radau`` whose ``_step_impl`` logs every attempt in ``self.log``."""

    def __init__(self, *args, **kw):
        self.log = []
        super().__init__(*args, **kw)

    def _step_impl(self):  # scipy's, with ``log`` lines added (marked ``# log``)
        t, y, f = self.t, self.y, self.f
        max_step, atol, rtol = self.max_step, self.atol, self.rtol
        min_step = 10 * np.abs(np.nextafter(t, self.direction * np.inf) - t)
        if self.h_abs > max_step:
            h_abs, h_abs_old, error_norm_old = max_step, None, None
        elif self.h_abs < min_step:
            h_abs, h_abs_old, error_norm_old = min_step, None, None
        else:
            h_abs, h_abs_old, error_norm_old = self.h_abs, self.h_abs_old, self.error_norm_old
        J, LU_real, LU_complex = self.J, self.LU_real, self.LU_complex
        current_jac, jac = self.current_jac, self.jac
        rejected = False
        step_accepted = False
        while not step_accepted:
            if h_abs < min_step:
                return False, self.TOO_SMALL_STEP
            h = h_abs * self.direction
            t_new = t + h
            if self.direction * (t_new - self.t_bound) > 0:
                t_new = self.t_bound
            h = t_new - t
            h_abs = np.abs(h)
            Z0 = np.zeros((3, y.shape[0])) if self.sol is None else self.sol(t + h * R.C).T - y
            scale = atol + np.abs(y) * rtol
            converged = False
            why = ""  # log
            iters = []  # log
            while not converged:
                if LU_real is None or LU_complex is None:
                    LU_real = self.lu(R.MU_REAL / h * self.I - J)
                    LU_complex = self.lu(R.MU_COMPLEX / h * self.I - J)
                converged, n_iter, Z, rate = R.solve_collocation_system(
                    self.fun,
                    t,
                    y,
                    h,
                    Z0,
                    scale,
                    self.newton_tol,
                    LU_real,
                    LU_complex,
                    self.solve_lu,
                )
                iters.append(n_iter)  # log
                if not converged:
                    if current_jac:
                        break
                    J = self.jac(t, y, f)
                    why = "fail"  # log
                    current_jac = True
                    LU_real = None
                    LU_complex = None
            if not converged:
                self.log.append(dict(t=t, h=h_abs, acc="newton-fail", it=iters, rate=rate, jac=why))
                h_abs *= 0.5
                LU_real = None
                LU_complex = None
                continue
            y_new = y + Z[-1]
            ZE = Z.T.dot(R.E) / h
            error = self.solve_lu(LU_real, f + ZE)
            scale = atol + np.maximum(np.abs(y), np.abs(y_new)) * rtol
            error_norm = R.norm(error / scale)
            safety = 0.9 * (2 * R.NEWTON_MAXITER + 1) / (2 * R.NEWTON_MAXITER + n_iter)
            if rejected and error_norm > 1:
                error = self.solve_lu(LU_real, self.fun(t, y + error) + ZE)
                error_norm = R.norm(error / scale)
            rec = dict(t=t, h=h_abs, err=error_norm, it=iters, rate=rate, jac=why)  # log
            if error_norm > 1:
                factor = R.predict_factor(h_abs, h_abs_old, error_norm, error_norm_old)
                h_abs *= max(R.MIN_FACTOR, safety * factor)
                LU_real = None
                LU_complex = None
                rejected = True
                self.log.append(dict(rec, acc="reject", h_next=h_abs))  # log
            else:
                step_accepted = True
        recompute_jac = jac is not None and n_iter > 2 and rate > 1e-3
        factor = R.predict_factor(h_abs, h_abs_old, error_norm, error_norm_old)
        factor = min(R.MAX_FACTOR, safety * factor)
        if not recompute_jac and factor < 1.2:
            factor = 1
        else:
            LU_real = None
            LU_complex = None
        f_new = self.fun(t_new, y_new)
        if recompute_jac:
            J = jac(t_new, y_new, f_new)
            current_jac = True
        elif jac is not None:
            current_jac = False
        self.log.append(dict(rec, acc="accept", h_next=h_abs * factor, due=recompute_jac))  # log
        self.h_abs_old = self.h_abs
        self.error_norm_old = error_norm
        self.h_abs = h_abs * factor
        self.y_old = y
        self.t = t_new
        self.y = y_new
        self.f = f_new
        self.Z = Z
        self.LU_real = LU_real
        self.LU_complex = LU_complex
        self.current_jac = current_jac
        self.J = J
        self.t_old = t
        self.sol = self._compute_dense_output()
        return step_accepted, None


@dataclasses.dataclass(frozen=True)
class ScipyRules(_controller.PredictiveController):
    """:class:`odenet._controller.PredictiveController` with scipy ``Radau``'s rules
    switched in one by one (scipy 1.x ``Radau._step_impl`` and ``predict_factor``);
    every switch off is odenet's controller (same steps, checked by ``controllers``'
    ``current`` row against ``grid``).  One system only (Python numbers on the loop's host backend).

    ``factor_max``: scipy's ``MAX_FACTOR`` is 10 (RADAU5 and odenet 8).
    ``keep_below``: keep ``h`` after an accepted step for every factor below
    ``keep_max`` (scipy), not only in ``[1, keep_max]`` (RADAU5).
    ``predict_rejected``: a rejected step shrinks by the predictive factor too (scipy),
    not the classical one.  ``h_old_proposed``: the predictive factor's ``h_old`` is
    the step size proposed at the previous step's start (scipy's ``h_abs_old``), not the
    accepted one; ``r_floor``: the previous error ratio's floor (RADAU5 1e-2, scipy 0).
    ``grow_after_reject``: the step may grow right after a rejection (scipy; RADAU5
    and odenet keep ``h`` there).  ``predict_after_refiltered``: the step after one whose
    estimate came from the second filtering uses the predictive factor too (scipy, and
    odenet before the ``refiltered`` rule); ``classical_after_retry``: every step after
    an accepted retry uses the classical factor alone (measured, not adopted).
    ``grow_after_newton_failure``: only a rejection for error keeps ``h`` at the next
    step, not a Newton failure (scipy's rule for Newton failures; RADAU5 keeps ``h``
    after both).  ``ceiling_after_newton_failure = C`` (0: off), ``ceiling_relax = R``:
    after a Newton failure at ``h_f`` an accepted step proposes at most ``C·h_f``, a
    ceiling that grows by ``R`` per accepted step (measured, not adopted:
    ``stiff_results.md``, session 37).
    """

    keep_below: bool = False
    predict_rejected: bool = False
    h_old_proposed: bool = False
    r_floor: float = 1e-2
    grow_after_reject: bool = False
    classical_after_retry: bool = False
    predict_after_refiltered: bool = False
    grow_after_newton_failure: bool = False
    ceiling_after_newton_failure: float = 0.0
    ceiling_relax: float = 1.0
    # (h, error ratio, accepted) per attempt, for the comparison with scipy's log
    log: list = dataclasses.field(default_factory=list, compare=False, repr=False)

    def init_memory(self, ops, like):
        if like is not None and like.numel() != 1:
            raise SystemExit("ScipyRules runs one system only")
        # h_old, r_old, before, rejected, h_start, ceiling, (h_rej, r_rej)
        return (1.0, 1.0, False, False, None, math.inf, (1.0, 0.0))

    def judge(self, ops, h, ratio, ok, memory, error_order, **kw):
        # the loop's keywords: h_floor, hold, safety (Newton's scale), refresh (J due)
        h_floor, hold, safety = kw.get("h_floor", 0.0), kw.get("hold"), kw.get("safety")
        refresh = kw.get("refresh", False)
        row = h
        h, ratio = float(h), float(ratio)
        ok = True if ok is None else bool(ok)
        safety = None if safety is None else float(safety)
        host = HostOps
        finite, accept, r = self._verdict(host, ratio, ok)
        k = error_order + 1
        h_old, r_old, before, rejected, h_start, ceiling, rejection = memory
        h_start = h if h_start is None else h_start
        sf = self._safety(safety)
        factor = sf * r ** (-1.0 / k)
        # odenet's: a second rejection in a row shrinks by the observed order
        factor = self._observed_shrink(host, factor, h, r, accept, finite, ok, rejection, k, sf)
        predicted = sf * (h / h_old) * (r_old / max(r * r, _controller._TINY)) ** (1.0 / k)
        if before and (accept or (self.predict_rejected and finite and ok)):
            factor = min(factor, predicted)
        factor = min(max(factor, self.factor_min), self.factor_max)
        low = -math.inf if self.keep_below else 1.0
        if accept and low <= factor <= self.keep_max and not bool(refresh):
            factor = 1.0
        held = rejected and not self.grow_after_reject
        accept, h_next = self._limit(host, h, factor, accept, finite, ok, held, h_floor, hold)
        if accept and ceiling < math.inf:
            h_next = min(h_next, ceiling)
            ceiling = ceiling * self.ceiling_relax
        if not ok and self.ceiling_after_newton_failure:
            ceiling = min(ceiling, self.ceiling_after_newton_failure * h)
        self.log.append((h, ratio, bool(accept)))
        rejection = self._rejection_record(host, h, r, accept, finite, ok)
        if accept:
            h_prev = h_start if self.h_old_proposed else h
            before = not (rejected and self.classical_after_retry)
            refiltered = kw.get("refiltered")
            if not self.predict_after_refiltered and refiltered is not None and bool(refiltered):
                before = False
            memory = (h_prev, max(r, self.r_floor), before, False, None, ceiling, rejection)
        else:
            held_next = ok or not self.grow_after_newton_failure
            memory = (h_old, r_old, before, held_next, h_start, ceiling, rejection)
        if ops is HostOps:  # the loop's host backend (one system): Python numbers
            return bool(accept), h_next, memory
        return torch.tensor([accept]), torch.full_like(row, h_next), memory


_SCIPY = dict(
    factor_max=10.0,
    predict_rejected=True,
    h_old_proposed=True,
    r_floor=0.0,
    grow_after_reject=True,
    predict_after_refiltered=True,
)
#: the controller variants of ``controllers``: odenet's, scipy's growth cap alone,
#: scipy's rules but RADAU5's keep rule, and scipy's exactly
VARIANTS = {
    "current": {},
    "cap10": dict(factor_max=10.0),
    "scipy-but-keep": _SCIPY,
    "scipy": dict(_SCIPY, keep_below=True),
    "classical-after-retry": dict(classical_after_retry=True),
    "predict-after-refiltered": dict(predict_after_refiltered=True),
    "grow-after-newton-failure": dict(grow_after_newton_failure=True),
    "ceiling-0.7-1.2": dict(ceiling_after_newton_failure=0.7, ceiling_relax=1.2),
    "ceiling-0.8-1.1": dict(ceiling_after_newton_failure=0.8, ceiling_relax=1.1),
    "ceiling-0.6-1.3": dict(ceiling_after_newton_failure=0.6, ceiling_relax=1.3),
    "ceiling-0.8-1.2": dict(ceiling_after_newton_failure=0.8, ceiling_relax=1.2),
    "ceiling-0.9-1.1": dict(ceiling_after_newton_failure=0.9, ceiling_relax=1.1),
}


def run_scipy(prob, rtol, d, traced=True, **kw):
    """scipy ``Radau`` (the traced copy, or the original) on ``prob``: a row and the log."""
    holder = {}

    class Keep(TracedRadau):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            holder["solver"] = self

    method = Keep if traced else "Radau"
    r = solve_ivp(
        prob.numpy_field(), prob.span, prob.y0, method=method, rtol=rtol, atol=d * rtol, **kw
    )
    log = holder["solver"].log if traced else []
    rej = sum(1 for e in log if e["acc"] != "accept")
    row = dict(
        status="ok" if r.success else r.message,
        njev=int(r.njev),
        nfe=int(r.nfev),
        nlu=int(r.nlu),
        acc=len(r.t) - 1,
        rej=rej,
        err=P.stiff_error(prob, r.y[:, -1], d) if r.success else math.nan,
    )
    return row, log


def run_odenet(prob, rtol, d, trace=False, **kw):
    """odenet's radau_iia5 on ``prob``; with ``trace`` the per-attempt log (the
    controller's and the Newton iteration's inputs, read through wrappers)."""
    log = []
    # f-calls made inside Newton.jacobian (one per autograd Jacobian; one per column group
    # of a forward-mode jac_sparsity one): scipy's nfev leaves its finite-difference calls out
    calls = {"f": 0, "jac": 0, "inside": False}
    jacobian = Newton.jacobian

    def counted_jacobian(self, *a, **k):
        calls["inside"] = True
        try:
            return jacobian(self, *a, **k)
        finally:
            calls["inside"] = False

    def f(t, y):
        calls["jac" if calls["inside"] else "f"] += 1
        return prob.f(t, y)

    Newton.jacobian = counted_jacobian
    undo = [(Newton, "jacobian", jacobian)]
    if trace:
        ctrl_judge = _controller.PredictiveController.judge
        iterate = _radau.RadauIIA._iterate
        step = _radau.RadauIIA.step
        cur = {}

        def judge(self, ops, h, ratio, ok, memory, error_order, **kw2):
            out = ctrl_judge(self, ops, h, ratio, ok, memory, error_order, **kw2)
            acc = bool(out[0])
            rec = dict(
                cur,
                h=float(h),
                err=float(ratio),
                h_next=float(out[1]),
                acc="accept" if acc else ("reject" if bool(ok) else "newton-fail"),
                due=bool(kw2.get("refresh")),
            )
            log.append(rec)
            return out

        def it(self, *a, **k2):
            out = iterate(self, *a, **k2)
            cur["it"].append(out[2])
            # a failed iteration's rate is not read (odenet._radau reports 0 there): shown
            # as "diverged" rather than as a rate of 0
            cur["rate"] = out[3] if bool(out[1].all()) else "diverged"
            return out

        def st(self, g, s, y, h, f0):
            nj = self.newton.stats.jacobians
            had = self.newton.J is not None
            cur.clear()
            cur.update(t=float(s), it=[])
            out = step(self, g, s, y, h, f0)
            why = ""
            if self.newton.stats.jacobians > nj:
                if not had:
                    why = "start" if nj == 0 else "slow"
                if len(cur["it"]) > 1:
                    why = (why + "+fail") if why else "fail"
            cur["jac"] = why
            return out

        _controller.PredictiveController.judge = judge
        _radau.RadauIIA._iterate = it
        _radau.RadauIIA.step = st
        undo += [
            (_controller.PredictiveController, "judge", ctrl_judge),
            (_radau.RadauIIA, "_iterate", iterate),
            (_radau.RadauIIA, "step", step),
        ]
    try:
        sol = odenet.solve(
            f,
            prob.y0_tensor(),
            torch.tensor(prob.span, dtype=torch.float64),
            method="radau_iia5",
            rtol=rtol,
            atol=d * rtol,
            max_steps=50_000,
            throw=False,
            **kw,
        )
    finally:
        for obj, name, fn in undo:
            setattr(obj, name, fn)
    st = sol.stats
    ok = bool(sol.success)
    row = dict(
        status="ok" if ok else f"status {int(sol.status.flatten()[0])}",
        njev=int(st["jacobians"]),
        nfe=int(st["nfe"]),
        nfe_jac=calls["jac"],
        nlu=int(st["factorizations"]),
        acc=int(st["accepted"]),
        rej=int(st["rejected"]),
        err=P.stiff_error(prob, sol.ys[-1], d) if ok else math.nan,
    )
    return row, log


def _named(name):
    """A cell of the stiff set, or of a hold-out sweep (``stiff_holdout.py`` …
    ``stiff_holdout15.py``: their problems and per-component floors), by name."""
    prob, floors = any_problem(name)
    return (name, prob, floors, {}, {})


def cells(args):
    """(label, problem, floor d, extra kwargs for odenet, extra kwargs for scipy)."""
    names = {"all": list(P.STIFF_SUITE), "none": []}.get(args.problems)
    names = args.problems.split(",") if names is None else names
    out = [_named(n) for n in names]
    if args.brusselator_1d:
        n = args.brusselator_1d
        out.append(
            (
                f"brusselator_1d N={n}",
                P.get_problem("brusselator_1d", n=n),
                P.STIFF_SUITE["brusselator_1d"],
                {},
                {},
            )
        )
    if args.brusselator_2d:
        n = args.brusselator_2d
        pat = P.brusselator_2d_sparsity(n)
        out.append(
            (
                f"brusselator_2d N={n} t1={args.b2d_t1:g}",
                P.get_problem("brusselator_2d", n=n, t1=args.b2d_t1),
                1.0,
                {"jac_sparsity": pat},
                {"jac_sparsity": pat},
            )
        )
    return out


def grid(args):
    rows = []
    print(
        "| problem | rtol | njev o/s | nfe o/s (ratio) | nfe − Jacobian calls (ratio) | "
        "nlu o/s | accepted o/s | rejected o/s | error o/s (ratio) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, prob, d, okw, skw in cells(args):
        prob.solution([prob.span[1]])
        for rtol in [float(x) for x in args.rtols.split(",")]:
            o, _ = run_odenet(prob, rtol, d, **okw)
            s, _ = run_scipy(prob, rtol, d, **skw)
            if args.check_copy:
                plain, _ = run_scipy(prob, rtol, d, traced=False, **skw)
                for k in ("njev", "nfe", "nlu", "acc"):
                    if plain[k] != s[k]:
                        raise SystemExit(
                            f"traced copy differs from scipy Radau: {k} {s[k]} vs {plain[k]}"
                        )
            # "over": the must-hold missed; f-evaluations compared without Jacobian calls
            own = o["nfe"] - o["nfe_jac"]
            flag = " **over**" if _misses({"odenet": o, "scipy": s}) else ""
            print(
                f"| {label} | {_rtol_text(rtol)} | {o['njev']}/{s['njev']}{flag} | "
                f"{o['nfe']}/{s['nfe']} "
                f"({o['nfe'] / s['nfe']:.2f}) | {own}/{s['nfe']} ({own / s['nfe']:.2f}) | "
                f"{o['nlu']}/{s['nlu']} | {o['acc']}/{s['acc']} | {o['rej']}/{s['rej']} | "
                f"{o['err']:.2e}/{s['err']:.2e} ({ratio_text(o['err'], s['err'])}) |",
                flush=True,
            )
            rows.append(dict(problem=label, rtol=rtol, odenet=o, scipy=s))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=float)


def _misses(row) -> list[str]:
    """The count must-holds a grid row misses (Jacobians above scipy's, f-evaluations
    without the Jacobians' calls above 1.2× scipy's); none where either side failed."""
    o, s = row["odenet"], row["scipy"]
    if o.get("status") != "ok" or s.get("status") != "ok":
        return []
    out = [f"njev {o['njev']}/{s['njev']}"] if o["njev"] > s["njev"] else []
    own = (o["nfe"] - o["nfe_jac"]) / s["nfe"]
    return out + ([f"nfe {own:.3f}x"] if own > 1.2 else [])


def compare(args):
    """Two ``grid --json`` files of the same cells, before and after a change: the cells
    whose status, counts or end error changed (with scipy's error beside), the misses on
    each side and the sums over the cells both solved (f-evaluations without the
    Jacobians' calls, as a ratio to scipy's)."""
    with open(args.before) as fh:
        before = {(r["problem"], r["rtol"]): r for r in json.load(fh)}
    with open(args.after) as fh:
        after = [r for r in json.load(fh) if (r["problem"], r["rtol"]) in before]
    if not after:
        raise SystemExit(
            f"compare: no (problem, rtol) cell of {args.after} is in {args.before}; "
            "pass two `grid --json` files of the same cells"
        )
    print(
        "| problem | rtol | nfe before → after | njev before → after (scipy) | "
        "error before → after (scipy) | misses |"
    )
    print("|---|---|---|---|---|---|")
    own = {"before": 0, "after": 0, "scipy": 0}
    jac = dict(own)
    missed = {"before": 0, "after": 0}
    for r in after:
        b = before[(r["problem"], r["rtol"])]
        o, ob, s = r["odenet"], b["odenet"], r["scipy"]
        missed["before"] += bool(_misses(b))
        missed["after"] += bool(_misses(r))
        if o.get("status") != ob.get("status"):
            print(
                f"| {r['problem']} | {_rtol_text(r['rtol'])} | status {ob.get('status')} → "
                f"{o.get('status')} | | | |"
            )
        if "ok" != o.get("status") or "ok" != ob.get("status") or "ok" != s.get("status"):
            continue
        for side, x in (("before", ob), ("after", o)):
            own[side] += x["nfe"] - x["nfe_jac"]
            jac[side] += x["njev"]
        own["scipy"] += s["nfe"]
        jac["scipy"] += s["njev"]
        # a change of the error alone (same counts) is a change of decisions too
        if (o["nfe"], o["njev"], o["err"]) != (ob["nfe"], ob["njev"], ob["err"]):
            print(
                f"| {r['problem']} | {_rtol_text(r['rtol'])} | {ob['nfe']} → {o['nfe']} | "
                f"{ob['njev']} → {o['njev']} ({s['njev']}) | "
                f"{ob['err']:.2e} → {o['err']:.2e} ({s['err']:.2e}) | "
                f"{', '.join(_misses(b)) or '-'} → {', '.join(_misses(r)) or '-'} |"
            )
    ratios = (
        f"{own['before'] / own['scipy']:.4f} → {own['after'] / own['scipy']:.4f}"
        if own["scipy"]
        else "- (no cell solved on all three sides)"
    )
    print(
        f"\n{len(after)} cells; missed {missed['before']} → {missed['after']}; "
        f"Σ njev {jac['before']} → {jac['after']} (scipy {jac['scipy']}); Σ nfe without "
        f"the Jacobians' calls / scipy's {ratios}"
    )


def _same_start(olog, slog, tol=1e-3):
    """How many attempts from the start the two runs take alike (``h`` within ``tol``
    relative, same verdict)."""
    n = 0
    for (h, _, acc), e in zip(olog, slog):
        if abs(h - e["h"]) > tol * e["h"] or acc != (e["acc"] == "accept"):
            break
        n += 1
    return n


def controllers(args):
    """Every cell under every controller variant; a summary row per variant."""
    names = args.variants.split(",")
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    t1s = [None]
    if args.t1s:
        a, b, step = (float(x) for x in args.t1s.split(":"))
        t1s = list(np.arange(a, b + step / 2, step))
    rows = []
    for label, prob0, d, okw, skw in cells(args):
        for t1 in t1s:
            prob = prob0 if t1 is None else dataclasses.replace(prob0, span=(0.0, float(t1)))
            prob.solution([prob.span[1]])
            for rtol in [float(x) for x in args.rtols.split(",")]:
                s, slog = run_scipy(prob, rtol, d, **skw)
                # "radau": scipy Radau's counts (a variant is named "scipy")
                row = dict(problem=label, t1=prob.span[1], rtol=rtol, radau=s)
                for v in names:
                    ctrl = ScipyRules(**VARIANTS[v])
                    o, _ = run_odenet(prob, rtol, d, controller=ctrl, **okw)
                    o["same_start"] = _same_start(ctrl.log, slog)
                    o["attempts"] = len(ctrl.log)
                    row[v] = o
                rows.append(row)
                print(
                    f"{label}{'' if t1 is None else f' t1={t1:g}'} rtol={_rtol_text(rtol)} "
                    f"scipy njev {s['njev']} "
                    f"nfe {s['nfe']}: "
                    + "; ".join(
                        f"{v} {row[v]['njev']}, {row[v]['nfe'] - row[v]['nfe_jac']}, "
                        # (scipy's error can be exactly 0: flame's end state at 1e-6)
                        f"err {row[v]['err']:.2g} vs {s['err']:.2g}"
                        for v in names
                    ),
                    flush=True,
                )
    print(
        f"\n{len(rows)} cells.  njev ≤ scipy's, nfe (without Jacobian calls) ≤ 1.2× scipy's: "
        "cells meeting it; |log10 error ratio|: odenet's error over scipy Radau's"
    )
    print(
        "| controller | njev ≤ | nfe ≤ 1.2× | njev Σ o/s | nfe Σ o/s | |log10 err ratio| "
        "median, mean | err ratio max, min | > 3×, < 1/3× | nlu Σ o/s | rejected Σ o/s | "
        "attempts as scipy's, Σ o/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    n = len(rows)
    scipy_attempts = sum(r["radau"]["acc"] + r["radau"]["rej"] for r in rows)
    for v in names:
        own = [r[v]["nfe"] - r[v]["nfe_jac"] for r in rows]
        # (an error of exactly 0 has no ratio: flame's end state at rtol 1e-6)
        ok = [
            r
            for r in rows
            if r[v]["status"] == "ok"
            and r["radau"]["status"] == "ok"
            and r[v]["err"] > 0
            and r["radau"]["err"] > 0
        ]
        lr = [math.log10(r[v]["err"] / r["radau"]["err"]) for r in ok] or [math.nan]
        third = math.log10(3)
        tot = lambda key, side=v: sum(r[side][key] for r in rows)  # noqa: E731
        print(
            f"| {v} | {sum(r[v]['njev'] <= r['radau']['njev'] for r in rows)}/{n} | "
            f"{sum(o <= 1.2 * r['radau']['nfe'] for o, r in zip(own, rows))}/{n} | "
            f"{tot('njev')}/{tot('njev', 'radau')} | {sum(own)}/{tot('nfe', 'radau')} | "
            f"{statistics.median(map(abs, lr)):.3f}, {sum(map(abs, lr)) / len(lr):.3f} | "
            f"{10 ** max(lr):.3g}, {10 ** min(lr):.3g} | "
            f"{sum(x > third for x in lr)}, {sum(x < -third for x in lr)} | "
            f"{tot('nlu')}/{tot('nlu', 'radau')} | {tot('rej')}/{tot('rej', 'radau')} | "
            f"{sum(r[v]['same_start'] for r in rows)}/{scipy_attempts} |"
            + ("" if len(ok) == n else f" ({n - len(ok)} not ok)")
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=float)


def _fmt(e):
    it = ",".join(str(i) for i in e.get("it", []))
    rate = e.get("rate")
    rate = "" if rate is None else rate if isinstance(rate, str) else f"{rate:.1e}"
    err = e.get("err")
    err = "" if err is None else f"{err:.2f}"
    hn = e.get("h_next")
    hn = "" if hn is None else f"{hn:.3e}"
    due = "due" if e.get("due") else ""
    return (
        f"{e['t']:.6e} {e['h']:.3e} {e['acc'][:6]:6s} {err:>7s} it={it:5s} "
        f"θ={rate:8s} J={e.get('jac', ''):9s} {due:3s} → {hn}"
    )


def trace(args):
    for label, prob, d, okw, skw in cells(args):
        o, lo = run_odenet(prob, args.rtol, d, trace=True, **okw)
        s, ls = run_scipy(prob, args.rtol, d, **skw)
        print(f"## {label}, rtol {args.rtol:g}\nodenet {o}\nscipy  {s}")
        print("attempt | odenet: t h verdict err iters θ J(why) → h_next || scipy: same")
        for i in range(max(len(lo), len(ls))):
            a = _fmt(lo[i]) if i < len(lo) else ""
            b = _fmt(ls[i]) if i < len(ls) else ""
            print(f"{i:4d} {a:90s} || {b}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("grid", "trace", "controllers"):
        p = sub.add_parser(name)
        p.add_argument("--problems", default="none" if name == "trace" else "all")
        p.add_argument("--brusselator-1d", type=int, default=0, metavar="N")
        p.add_argument("--brusselator-2d", type=int, default=0, metavar="N")
        p.add_argument("--b2d-t1", type=float, default=1.5)
    g = sub.choices["grid"]
    g.add_argument("--rtols", default="1e-3,1e-4,1e-5,1e-6,1e-7,1e-8")
    c = sub.choices["controllers"]
    c.add_argument("--rtols", default="1e-3,1e-4,1e-5,1e-6,1e-7,1e-8")
    c.add_argument("--variants", default=",".join(VARIANTS), help=", ".join(VARIANTS))
    c.add_argument("--t1s", default="", metavar="A:B:STEP", help="ends of the span A…B")
    c.add_argument("--json", default="")
    g.add_argument(
        "--check-copy",
        action="store_true",
        help="also run scipy's own Radau and check the traced copy's counts",
    )
    g.add_argument("--json", default="")
    cmp = sub.add_parser("compare")
    cmp.add_argument("before")
    cmp.add_argument("after")
    t = sub.choices["trace"]
    t.add_argument("--problem", default="")
    t.add_argument("--rtol", type=float, default=1e-3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.mode == "trace" and args.problem:
        args.problems = args.problem
    modes = {"grid": grid, "trace": trace, "controllers": controllers, "compare": compare}
    modes[args.mode](args)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
