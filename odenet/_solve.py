"""``odenet.solve``: validation at the boundary, the internal layout, the Solution.

The user's problem ``dy/dt = f(t, y)`` becomes ``K`` rows of ``n`` numbers in
internal time ``s = d·t`` (``d = ±1`` so that ``s`` increases).  With a 1-D ``t``
the whole ``y0`` is one system (``K = 1``); with per-sample times ``t [B, T]`` each
of the ``B`` samples is its own system with its own steps (``K = B``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from odenet._controller import PIDController, controller_from
from odenet._errors import (
    InputError,
    NewtonConvergenceError,
    StabilityWarning,
    StepSplitWarning,
    UnsupportedDerivativeError,
    warn_user,
)
from odenet._events import EventTracker, as_events
from odenet._jacobian import user_jacobian
from odenet._loop import LoopConfig, LoopResult, has_tangent, integrate
from odenet._multistep import LinearMultistep, MultistepRuntime
from odenet._newton import Newton
from odenet._solution import EventRecord, Solution, Status
from odenet._stepper import _STEP_CACHE
from odenet._stepper import cached_runtime as _cached_runtime
from odenet._stepper import own_copy as _own_copy
from odenet._stepper import runtime as _runtime
from odenet._validate import (  # noqa: F401  (re-exported: _compat and tests import them here)
    SENSITIVITIES,
    _wider,
    call_field,
    check_callable,
    check_field_output,
    check_flag,
    check_jac,
    check_newton,
    check_nonnegative,
    check_norm,
    check_positive,
    check_precision,
    check_sensitivity,
    check_state_scale,
    check_step_size,
    check_t,
    check_time_resolution,
    check_tolerances,
    check_y0,
    exact_time_dtype,
    field_changed,
    is_traced,
    resolve_method,
    warn_rtol_below_round_off,
)
from odenet.sensitivity import solve_with
from odenet.tableaus import ButcherTableau, tableau

# the name the field wrappers used before validation moved to odenet._validate
_check_field_output = check_field_output


# --- the prepared problem -----------------------------------------------------------


@dataclass
class Prepared:
    """A validated problem in the loop's layout; sensitivity methods build on it."""

    f: Callable
    y0: torch.Tensor  # as given
    t: torch.Tensor  # as given (validated)
    per_sample: bool
    direction: torch.Tensor  # [K] ±1 in the time dtype
    s_out: torch.Tensor  # [K, T] increasing internal times
    y0_rows: torch.Tensor  # [K, n]
    cfg: LoopConfig
    nfe: list  # [count] of calls to f
    fused: object = None  # solve(compile=True): the odenet._compiled.FusedHost

    @property
    def call_tdt(self) -> torch.dtype:
        """The dtype of the ``t`` that ``f`` and ``jac`` receive: ``t``'s promoted with
        ``y0``'s (the loop's clock, ``s_out``, is float64 whatever they are)."""
        return torch.promote_types(self.t.dtype, self.y0.dtype)

    @property
    def K(self) -> int:
        return self.y0_rows.shape[0]

    def internal_field(self, f: Callable, *, count: bool = True, check: bool = False):
        """Wrap ``f(t, y)`` (user layout) as ``g(s [K], y [K, n]) -> [K, n]`` in internal time."""
        shape = self.y0.shape
        K = self.K
        d = self.direction
        flip = bool((d < 0).any())
        counter = self.nfe
        checked = [not check]
        dev, call_tdt = self.s_out.device, self.call_tdt
        n = self.y0_rows.shape[1]
        # Only the first call is checked (call_field, check_field_output): a check per
        # call costs every solve.  A later call whose output has another number of
        # elements fails the reshape to exactly n per row below, at no cost (the size
        # was -1 before, and a [1] output of a [2] state went on to a torch error deep
        # in the stepper); another dtype or device surfaces where the stages combine,
        # and `explain` (called by the loop on a torch error) and `finish` (at the end)
        # name it from the last call, which is kept for them (two cell stores a call).
        last_t = last_out = None
        want = self.y0_rows.dtype, self.y0_rows.device
        row = (K, *shape[1:]) if self.per_sample else shape

        def changed(t, out, e):
            err = field_changed(t, out, tuple(row), *want)
            return err if err is not None else e

        def explain(e: BaseException):
            return None if last_out is None else field_changed(last_t, last_out, tuple(row), *want)

        def finish(check: bool = True):
            nonlocal last_t, last_out
            t_, out_ = last_t, last_out
            last_t = last_out = None  # hold no tensor (or its graph) past the solve
            if check and out_ is not None:
                err = field_changed(t_, out_, tuple(row), *want)
                if err is not None:
                    raise err

        if self.per_sample:
            row_shape = (K, *shape[1:])

            def g(s, y):
                nonlocal last_t, last_out
                if count:
                    counter[0] += 1
                t = (s * d if flip else s).to(call_tdt)
                if not checked[0]:
                    out = call_field(f, t, y.reshape(row_shape))
                    _check_field_output(out, y.reshape(row_shape), t)
                    checked[0] = True
                else:
                    out = f(t, y.reshape(row_shape))
                last_t, last_out = t, out
                try:
                    out = out.reshape(K, n)
                except (RuntimeError, AttributeError, TypeError) as e:
                    raise changed(t, out, e) from e
                return out * d[:, None].to(out.dtype) if flip else out
        else:
            sign = -1.0 if flip else 1.0

            def call(t, y):  # t: the user's time, 0-dim
                nonlocal last_t, last_out
                if count:
                    counter[0] += 1
                if t.dtype != call_tdt:  # (a no-op .to still dispatches: ~1 µs a call)
                    t = t.to(call_tdt)
                if not checked[0]:
                    out = call_field(f, t, y.reshape(shape))
                    _check_field_output(out, y.reshape(shape), t)
                    checked[0] = True
                else:
                    out = f(t, y.reshape(shape))
                last_t, last_out = t, out
                try:
                    out = out.reshape(1, n)
                except (RuntimeError, AttributeError, TypeError) as e:
                    raise changed(t, out, e) from e
                return -out if flip else out

            def g(s, y):
                return call(s[0] * sign if flip else s[0], y)

            def host(s: float, y):  # internal time as a Python float (the host-side loop)
                return call(torch.scalar_tensor(s * sign, dtype=call_tdt, device=dev), y)

            g.host = host

        g.explain, g.finish = explain, finish
        return g

    def install_hooks(
        self, *, events=None, step_t=None, jump_t=None, callback=None, isoutofdomain=None
    ):
        """Give the loop its hooks, translated from the user's terms to the loop's.

        ``events``: see :class:`odenet.Event`; ``step_t`` / ``jump_t``: times the steps
        must land on (1-D, user time; those outside the span are ignored); ``jump_t``
        marks discontinuities of ``f`` (the step lands one ulp before and restarts
        one ulp after, with a fresh ``f``);
        ``callback(kind, t, y, dt)`` with kind ``"step"``, ``"accept"``, ``"reject"``;
        ``isoutofdomain(t, y) -> bool`` (per sample: ``[B]``), see :func:`solve`.
        """
        cfg, K, d = self.cfg, self.K, self.direction
        shape, per = self.y0.shape, self.per_sample
        evs = as_events(events)
        if evs:
            row_shape = (K, *shape[1:]) if per else shape

            def fn_rows(e, s, y):
                t = (s * d).to(self.y0.dtype)
                out = evs[e].fn(t if per else t[0], y.reshape(row_shape))
                if not isinstance(out, torch.Tensor):
                    out = torch.as_tensor(out, dtype=torch.float64, device=y.device)
                return out

            cfg.events = EventTracker(evs, fn_rows, K, self.y0.device, self.s_out.dtype)
            cfg.events.field = self.internal_field(self.f, count=False)
        stops = [x for x in (step_t, jump_t) if x is not None]
        for name, x in (("step_t", step_t), ("jump_t", jump_t)):
            if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled():
                # the steps land on these times, but the solution's dependence on where
                # a jump sits is not differentiated: a gradient would come back as None
                raise UnsupportedDerivativeError(
                    f"`{name}` requires grad, but odenet does not differentiate with "
                    f"respect to the times the steps land on (the gradient would silently "
                    f"be missing). Pass `{name}.detach()`; for the gradient with respect "
                    "to a switching time, make the switch an event or a smooth function "
                    "of t."
                )
        if stops:
            if cfg.fixed:
                raise InputError(
                    "`step_t`/`jump_t` force the boundaries of adaptive steps; a fixed grid "
                    "already chooses its nodes: drop them or drop `step_size`."
                )
            times = torch.cat(
                [
                    torch.as_tensor(x, dtype=self.s_out.dtype, device=self.s_out.device).reshape(-1)
                    for x in stops
                ]
            )
            if not bool(torch.isfinite(times).all()):
                raise InputError("`step_t`/`jump_t` contain NaN or inf; give finite times.")
            internal = (times[None, :] * d[:, None]).detach()  # [K, P]
            s0, s1 = self.s_out[:, :1].detach(), self.s_out[:, -1:].detach()
            inside = (internal > s0) & (internal < s1)
            internal = torch.where(inside, internal, torch.full_like(internal, math.inf))
            cfg.stops = internal.sort(dim=1).values
            cfg.jumps = jump_t is not None
            # f sees t in call_tdt, or in y's dtype through odenet.odeint (torchdiffeq
            # casts t to y's dtype); call_tdt is y's promoted with t's, so y's real dtype
            # is the coarser: it places the jump's neighbours (a gap of one of its ulps,
            # not integrated, is at the round-off of such a state)
            real = self.y0.dtype.is_floating_point
            cfg.field_time_dtype = self.y0.dtype if real else self.call_tdt
        if callback is not None:
            check_callable("callback", callback)

            def loop_callback(kind, s, y, h, accept):
                t = s * d
                yy = y.reshape((K, *shape[1:]) if per else shape)
                dt = h * d
                if not per:
                    t, dt = t[0], dt[0]
                if kind == "step":
                    callback("step", t, yy, dt)
                elif per:
                    if bool(accept.any()):
                        callback("accept", t, yy, torch.where(accept, dt, 0.0 * dt))
                    if not bool(accept.all()):
                        callback("reject", t, yy, torch.where(accept, 0.0 * dt, dt))
                else:
                    callback("accept" if bool(accept.all()) else "reject", t, yy, dt)

            cfg.callback = loop_callback
        if isoutofdomain is not None:
            check_callable("isoutofdomain", isoutofdomain, "isoutofdomain(t, y) -> bool")
            if cfg.fixed:
                raise InputError(
                    "`isoutofdomain` rejects adaptive trial steps; a fixed grid cannot "
                    "reject one: drop `step_size` or `isoutofdomain`."
                )
            row_shape = (K, *shape[1:]) if per else shape

            def out_of_domain(s, y):
                t = s * d
                with torch.no_grad():
                    out = isoutofdomain(t if per else t[0], y.reshape(row_shape))
                out = torch.as_tensor(out, device=y.device)
                if out.dtype != torch.bool or out.numel() not in (1, K):
                    raise InputError(
                        "`isoutofdomain(t, y)` must return a bool (per-sample grids: a "
                        f"[{K}] bool tensor, one per sample), got {out.dtype} of shape "
                        f"{tuple(out.shape)}."
                    )
                return out.reshape(-1).expand(K)

            cfg.out_of_domain = out_of_domain

    def to_user(self, ys_rows: torch.Tensor) -> torch.Tensor:
        """``[K, T, n]`` -> ``[T, *y0.shape]`` (shared) or ``[B, T, *y0.shape[1:]]``."""
        T = ys_rows.shape[1]
        if self.per_sample:
            return ys_rows.reshape(self.K, T, *self.y0.shape[1:])
        return ys_rows[0].reshape(T, *self.y0.shape)

    def stiff_at(self, since: torch.Tensor):
        """The loop's ``stiff_since`` ([K] internal time, ``inf``: never) in the user's
        time: a float or None for a shared grid, a ``[B]`` tensor (NaN: never) per sample."""
        t = since.detach().to(self.direction.device) * self.direction.detach()
        t = torch.where(torch.isinf(t), math.nan, t)
        if self.per_sample:
            return t
        v = float(t[0])
        return None if math.isnan(v) else v

    def solution(
        self, result: LoopResult, method: str, *, throw: bool, frozen_steps: bool = True
    ) -> Solution:
        """The user's :class:`Solution` of the loop's ``result``; ``frozen_steps``: its
        gradients are taken through the forward's own steps (direct, checkpoint)."""
        newton = self.cfg.rk.newton
        stats = {"nfe": self.nfe[0]}
        if self.per_sample:
            stats.update(
                steps=result.accepted + result.rejected,
                accepted=result.accepted,
                rejected=result.rejected,
            )
        else:
            acc, rej = int(result.accepted[0]), int(result.rejected[0])
            stats.update(steps=acc + rej, accepted=acc, rejected=rej)
        if newton is not None:
            ns = newton.stats
            stats.update(
                jacobians=ns.jacobians,
                jac_products=ns.jac_products,
                factorizations=ns.factorizations,
                linear_solves=ns.linear_solves,
                newton_iterations=ns.iterations,
                newton_failures=ns.failures,
                # scipy's names: Jacobian evaluations and LU factorisations
                njev=ns.jacobians,
                nlu=ns.factorizations,
            )
        if result.stiff_since is not None:
            stats["stiff_at"] = self.stiff_at(result.stiff_since)
            if frozen_steps and result.ys.requires_grad:
                _warn_if_gradient_explodes(result.frozen_growth, method)
        finished = bool(
            ((result.status == Status.SUCCESS) | (result.status == Status.TERMINATED)).all()
        )
        if self.cfg.fixed and newton is not None and finished:  # (a failure explains itself)
            _warn_if_split(stats["rejected"], self.cfg.step_size)
        if self.fused is not None:
            stats.update(self.fused.stats())
        sol = Solution(
            ys=self.to_user(result.ys),
            ts=self.t,
            stats=stats,
            status=result.status,
            method=method,
        )
        if self.cfg.events is not None:
            sol.events = EventRecord.from_log(
                self.cfg.events.log,
                self.direction,
                self.per_sample,
                self.y0.shape,
                self.cfg.events.terminal_state,
            )
        if throw and not sol.success:
            raise_failure(sol, result, self)
        return sol


# e-folds of a perturbation with the steps held fixed past which the gradient is noise
GRADIENT_GROWTH_LIMIT = math.log(1e6)


def _warn_if_gradient_explodes(growth: torch.Tensor, method: str) -> None:
    """Backpropagation through an explicit method's steps held at its stability limit
    follows a perturbation with those steps fixed, which grows by ``∏|R(hλ)|``: the
    controller keeps the forward bounded by shrinking the steps where the error grows,
    but the derivative does not see that feedback.  y' = λ(y − cos t) − sin t with
    λ = −5000 and dopri5 on [0, 2] at rtol 1e-6: dy(2)/dλ = −1.4e87 (direct and
    checkpoint) against 3e-11 from the adjoint and ~0 exactly, with no word; Σ log|R(hλ)|
    = 205.6 over the steps (``studies/benchmarks/doc_claims.py explicit_stiff_gradients``)."""
    worst = float(growth.max())
    if not worst > GRADIENT_GROWTH_LIMIT:
        return
    warn_user(
        f"gradients through this {method} solve are unreliable: its steps were held at "
        "the method's stability limit, where a perturbation with the steps held fixed "
        f"(what backpropagation follows) grows by about e^{worst:.0f}, while the "
        "solution itself stays bounded only because the controller shrinks the steps. "
        "Use sensitivity='adjoint' (its own steps on the adjoint equation) or an implicit "
        "method (method='radau_iia5', 'bdf' or 'kvaerno5').",
        StabilityWarning,
    )


def _warn_if_split(rejected, step_size) -> None:
    """A fixed step whose implicit stages Newton could not solve is split by the loop
    (as an adaptive step would be): say so, since the result is then that of another
    grid (y' = t·y with backward Euler and one step of 0.55 from t = 0.35 returned the
    two half steps' 0.6419, not the step's 0.7921, with status ok and no word)."""
    n = int(rejected.sum()) if isinstance(rejected, torch.Tensor) else int(rejected)
    if n == 0:
        return
    h = "" if step_size is None else f" of h = {float(step_size):.4g}"
    warn_user(
        f"{n} fixed step(s){h} could not be taken: Newton's iteration on the implicit "
        "stages did not converge, and each was split into smaller steps, so the result "
        "is that of a finer grid than the one asked for (stats['rejected'] counts them). "
        "To take the steps as given, pass `jac` (the exact Jacobian helps Newton most "
        "where f depends on t), raise `newton_max_iter` (default 25 for fixed steps), or "
        "take a smaller step_size.",
        StepSplitWarning,
    )


def raise_failure(sol: Solution, result: LoopResult, prep: Prepared):
    bad = (result.status != 0).nonzero()[:, 0]
    k = int(bad[0])
    status = Status(int(result.status[k]))
    t_reached = float(result.t_reached[k] * prep.direction[k])
    t_end = float(prep.s_out[k, -1] * prep.direction[k])
    who = f"sample {k} ({len(bad)} of {prep.K} samples failed): " if prep.per_sample else ""
    steps = int(result.accepted[k] + result.rejected[k])
    h_last = float(result.h_last[k])
    digits = 6  # enough to tell the two apart (1e+12 of 1e+12 hid how far it got)
    while digits < 17 and f"{t_reached:.{digits}g}" == f"{t_end:.{digits}g}" and t_reached != t_end:
        digits += 1
    msg = (
        f"{who}{status.message}. The solve reached t = {t_reached:.{digits}g} of "
        f"t_end = {t_end:.{digits}g} after {steps} steps, the last step size tried being "
        f"h = {h_last:.3g} (method {sol.method!r}). Pass "
        "`throw=False` to get the partial solution (unreached outputs are NaN)."
    )
    t_start = float(prep.s_out[k, 0] * prep.direction[k])
    hints = (_precision_hint(status, prep)
             + _time_resolution_hint(status, prep, t_reached, h_last, t_start)
             + _jacobian_hint(status, prep, sol) + _order_hint(status, prep)
             + _underflow_hint(status, prep)
             + _stiffness_hint(status, prep, result, k))  # fmt: skip
    raise status.error(msg + hints, t=t_reached, solution=sol)


def _jacobian_hint(status: Status, prep: Prepared, sol: Solution) -> str:
    """A user ``jac`` that does not match ``f`` shows as Newton failing step after step:
    the solve ends at ``max_steps`` or in underflow with nothing else to say why."""
    if status not in (Status.MAX_STEPS, Status.STEP_UNDERFLOW, Status.NEWTON_FAILED):
        return ""
    newton = getattr(prep.cfg.rk, "newton", None)
    if newton is None or newton.jac is None:
        return ""
    fails, steps = sol.stats.get("newton_failures", 0), sol.stats.get("steps", 0)
    if not (status == Status.NEWTON_FAILED or fails >= max(10, 0.1 * steps)):
        return ""
    return (
        f" Newton failed {fails} times in {steps} steps with your `jac`: a Jacobian that "
        "does not match f (sign, scale, transposed, evaluated at another t) slows Newton "
        "down or stops it. Compare it with torch.func.jacrev of f, or drop `jac`."
    )


def _stiffness_hint(status: Status, prep: Prepared, result: LoopResult, k: int) -> str:
    """An explicit method that ran out of steps on a stiff problem was told to raise
    ``max_steps``: dopri5 on Robertson's [0, 1e5] reached t = 85 in 100 000 steps, its
    step held at the stability limit (:mod:`odenet._stiffness`), where more steps only
    crawl on."""
    if status not in (Status.MAX_STEPS, Status.STEP_UNDERFLOW) or result.stiff_since is None:
        return ""
    since = float(result.stiff_since[k])
    if math.isinf(since):
        return ""
    name = prep.cfg.rk.tableau.name
    return (
        f" But more steps will not get much further: the problem is stiff for {name} from "
        f"t ≈ {since * float(prep.direction[k]):.4g} (its step size is held near the edge of "
        "its stability region, h·|λ| ≈ its stability boundary, not by the tolerance). An "
        "implicit method takes the steps the accuracy allows: method='radau_iia5', 'bdf' or "
        "'kvaerno5'."
    )


def _underflow_hint(status: Status, prep: Prepared) -> str:
    """What to try after a step-size underflow depends on the method: "try an implicit
    method" was also said to a radau_iia5 solve, which is one (E5 at rtol 1e-3, whose
    tiny concentrations go negative and then blow up)."""
    if status != Status.STEP_UNDERFLOW:
        return ""
    method = getattr(prep.cfg.rk, "tableau", None)
    if not getattr(method, "is_implicit", False):
        return (
            " If the problem is stiff, an implicit method takes steps an explicit one "
            "cannot: method='radau_iia5', 'bdf' or 'kvaerno5'; else try looser tolerances."
        )
    domain = (
        ""
        if prep.cfg.out_of_domain is not None
        else " (concentrations, populations, densities that go negative: pass "
        "`isoutofdomain`, e.g. lambda t, y: bool((y < -atol).any()), so that such steps "
        "are rejected)"
    )
    return (
        f" {method.name} is implicit: stiffness alone does not shrink its steps to "
        "round-off. Look at f near the time reached: a finite-time blow-up, a state "
        f"leaving the region where the model holds{domain}, or a discontinuity of f "
        "(pass its times as `jump_t`)."
    )


def _order_hint(status: Status, prep: Prepared) -> str:
    """A low-order adaptive method at a tight rtol runs out of steps on its own: its step
    shrinks like ``rtol^(1/(p+1))`` or faster (the DIRK pairs' κ) — on a smooth 3-state
    problem with a λ = −20 mode at rtol 1e-7, trapezoid and heun run out of 2000 steps
    where kvaerno5 needs fewer for the whole span (tests/test_errors.py)."""
    if status != Status.MAX_STEPS or prep.cfg.fixed:
        return ""
    method = getattr(prep.cfg.rk, "tableau", None)
    p = getattr(method, "order", None)
    rtol = prep.cfg.rtol
    r = float(rtol.detach().abs().min()) if isinstance(rtol, torch.Tensor) else float(rtol)
    if p is None or p > 3 or r >= 1e-4:
        return ""
    implicit = getattr(method, "is_implicit", False)
    better = "radau_iia5 or kvaerno5" if implicit else "dopri5 or dop853 (stiff: radau_iia5)"
    return (
        f" Note: {method.name} is of order {p}: its steps shrink at least like "
        f"rtol^(1/{p + 1}), and at rtol = {r:.3g} a higher-order method takes far fewer "
        f"steps: {better}."
    )


def _precision_hint(status: Status, prep: Prepared) -> str:
    """Why steps may shrink without end: an rtol near the state's round-off.

    Below ~100·eps the error estimate of a step is mostly round-off, so the controller
    keeps cutting ``h``: the run ends at ``max_steps`` (or in underflow) and the message
    should name the dtype, not only the step count.
    """
    if status not in (Status.MAX_STEPS, Status.STEP_UNDERFLOW):
        return ""
    rtol, dtype = prep.cfg.rtol, prep.y0_rows.dtype
    r = float(rtol.detach().abs().min()) if isinstance(rtol, torch.Tensor) else float(rtol)
    eps = torch.finfo(dtype).eps
    if r <= 0 or r >= 100 * eps:
        return ""
    return (
        f" Note: rtol = {r:.3g} is within 100× the round-off of {dtype} (eps = {eps:.2g}); "
        f"its error estimates are then mostly round-off. Use rtol ≥ {100 * eps:.2g}"
        f"{_wider(dtype)}."
    )


def _time_resolution_hint(status: Status, prep: Prepared, t: float, h: float, t0: float) -> str:
    """A step that underflows near the round-off of ``t`` itself: the times, not the
    problem, may be the limit (at t = 1e12 float64 resolves 2.2e-4), and "try an
    implicit method" does not help.  Shifting the times helps only where the span
    starts far from 0 compared with its length (``t0`` the start of the failed row's
    span): E5 on [0, 1e13] failing at t = 1.7e10 was told to shift."""
    if status not in (Status.MAX_STEPS, Status.STEP_UNDERFLOW):
        return ""
    clock = prep.s_out.dtype
    ulp = torch.finfo(clock).eps * abs(t)
    if ulp == 0.0 or not (h <= 1e4 * ulp):  # at t = 0 the times resolve everything
        return ""
    if abs(t - t0) > 1e-2 * abs(t):  # t − t0 is resolved no better than t
        return ""
    return (
        f" Note: near t = {t:.6g} the times are resolved only to {ulp:.2g} "
        f"({clock}), and the last step was {h / ulp:.3g} of that: shift the "
        "times to start near 0 (t − t[0])."
    )


def _fixed_step_newton_tol(eps: float) -> float:
    """Newton's tolerance (relative and absolute) on a fixed grid: ``100·eps`` is
    round-off in float64 (2.2e-14) but 1.2e-5 per step in float32, where it set the
    error of a 16-step gauss_legendre4 solve of ``y' = y cos t`` (1.4e-4 against the
    scheme's 1.4e-5); ``10·eps`` in float64 stalls at round-off on stiff problems
    (Robertson: Newton failures and halved steps).  So ``100·eps``, at most 1e-6, but
    never below ``10·eps``."""
    return max(10 * eps, min(100 * eps, 1e-6))


def prepare(
    f,
    y0,
    t,
    *,
    method,
    rtol,
    atol,
    step_size,
    max_steps,
    first_step,
    min_step,
    max_step,
    controller,
    norm,
    newton_tol,
    newton_max_iter,
    grid_on_outputs: bool = False,
    jac=None,
    jac_sparsity=None,
) -> tuple[Prepared, ButcherTableau]:
    """Validate everything and build the loop's layout and configuration.

    ``grid_on_outputs=True`` takes fixed steps from output time to output time
    (torchdiffeq's behaviour for fixed-step methods without a step size).
    """
    check_callable("f", f)
    y0 = check_y0(y0)
    t = check_t(t, y0)
    step_size = check_positive("step_size", step_size, allow_none=True)
    tab = resolve_method(method, step_size is not None or grid_on_outputs)
    rtol, atol = check_tolerances(rtol, atol, y0)
    check_state_scale(y0, rtol, atol)
    max_steps = check_positive("max_steps", max_steps, integer=True)
    first_step = check_positive("first_step", first_step, allow_none=True)
    max_step = math.inf if max_step is None else check_positive("max_step", max_step)
    min_step = check_nonnegative("min_step", min_step)
    newton_tol, newton_max_iter = check_newton(newton_tol, newton_max_iter)
    jac, sparsity = check_jac(jac, jac_sparsity, y0, tab, t.dim() == 2)
    check_norm(norm)
    _check_step_options(
        step_size is not None or grid_on_outputs,
        first_step=first_step,
        max_step=max_step,
        min_step=min_step,
        controller=controller,
    )
    # RADAU5's estimator is tuned with Gustafsson's predictive controller (fewer
    # rejections on stiff problems); every other method defaults to the I controller
    if controller is None:
        controller = "predictive" if getattr(tab, "estimator", None) == "radau5" else "I"
        # a method may name its own default (BDF/NDF: PI)
        controller = getattr(tab, "default_controller", None) or controller
    ctrl = controller_from(controller)

    # The clock runs in float64 whatever the dtypes of t and y0 (torchdiffeq's mixed
    # precision; MPS has no float64): a float32 clock at t = 100 resolves 7.6e-6, so a
    # first step of 1e-4 there was already below round-off and a float32 solve on
    # [100, 150] ended in an underflow.  f still receives t in the dtype it always did.
    # (times follow y0 to its device: a ResNet's block times, or a t left on the CPU,
    # would otherwise meet a GPU state in the loop's control tensors)
    call_tdt = torch.promote_types(t.dtype, y0.dtype)
    tdt = torch.promote_types(call_tdt, exact_time_dtype(y0.device))
    tt = t.to(device=y0.device, dtype=tdt)
    per_sample = tt.dim() == 2
    rows = tt if per_sample else tt[None]
    if rows.shape[1] > 1:
        direction = torch.sign(rows[:, -1] - rows[:, 0])
    else:
        direction = torch.ones(rows.shape[0], dtype=tdt, device=tt.device)
    s_out = rows * direction[:, None]
    check_time_resolution(s_out)
    K = rows.shape[0]
    y0_rows = y0.reshape(K, -1)

    def per_row(v):
        if isinstance(v, torch.Tensor):
            return v.to(y0.dtype).expand(y0.shape).reshape(K, -1)
        return v

    newton = None
    fixed = step_size is not None or grid_on_outputs
    if not fixed:
        warn_rtol_below_round_off(rtol, y0.dtype)
    if tab.is_implicit:
        eps = torch.finfo(y0.dtype).eps
        # A fixed-step user asks for the scheme's own solution: solve the stage
        # equations to round-off.  An adaptive solve only needs them well inside
        # the local error tolerance.
        tol = _fixed_step_newton_tol(eps)
        n_atol, n_rtol = (tol, tol) if fixed else (atol, rtol)
        # None lets Newton choose (odenet._newton.DIRK_NEWTON_TOL)
        n_tol = newton_tol if newton_tol is not None else (1.0 if fixed else None)
        n_max = newton_max_iter if newton_max_iter is not None else (25 if fixed else 8)
        if isinstance(n_atol, torch.Tensor):
            n_atol = per_row(n_atol)
        if isinstance(n_rtol, torch.Tensor):
            n_rtol = per_row(n_rtol)
        if jac is not None:  # the user's jac(t, y) in the loop's layout and time
            jac = user_jacobian(
                jac,
                shape=y0.shape,
                per_sample=per_sample,
                direction=direction,
                sparsity=sparsity,
                time_dtype=call_tdt,
            )
        newton = Newton(
            tol=n_tol,
            max_iter=n_max,
            atol=n_atol,
            rtol=n_rtol,
            jac=jac,
            sparsity=sparsity,
            # an adaptive DIRK pair's error safety κ depends on
            # the method and rtol (odenet._newton.error_safety); fixed steps have none
            tableau=None if fixed else tab,
            eps=eps,
        )
    if hasattr(tab, "runtime"):  # a method with memory: history carried by the loop
        rk = tab.runtime(y0.dtype, tdt, y0.device, newton, fixed=fixed)
        if isinstance(rk, MultistepRuntime):  # equal steps are equal to t's round-off
            rk.time_eps = float(torch.finfo(t.dtype).eps) if t.is_floating_point() else 0.0
        # an explicit method that chooses its order (adams)
        # measures its candidate error estimates in the solve's tolerances
        if hasattr(rk, "tolerances"):
            rk.tolerances(per_row(atol), per_row(rtol))
    elif newton is None:  # explicit runtimes are stateless: build their tensors once
        rk = _runtime(tab, y0.dtype, tdt, y0.device)  # a per-solve copy of the cached one
    else:  # adaptive radau_iia5 runs Hairer's RADAU5 (odenet._radau)
        from odenet._radau import runtime_for

        rk = runtime_for(tab, y0.dtype, tdt, y0.device, newton, fixed=fixed)
    if step_size is not None:
        span = float(s_out.detach().abs().max())
        if step_size <= 16 * torch.finfo(tdt).eps * max(span, 1.0):
            ulp = torch.finfo(tdt).eps * max(span, 1.0)
            raise InputError(
                f"`step_size` = {step_size:g} is within 16 round-offs of the times (|t| up to "
                f"{span:g} in {tdt}, resolved to {ulp:.2g}): each step's length would be "
                f"off by up to {ulp / step_size:.0%}. Shift the times to start near 0 "
                f"(t − t[0]){_wider(tdt)}, or use a larger step."
            )
    cfg = LoopConfig(
        rk=rk,
        rtol=per_row(rtol),
        atol=per_row(atol),
        step_size=step_size,
        max_steps=max_steps,
        first_step=first_step,
        min_step=float(min_step),
        max_step=max_step,
        controller=ctrl,
        norm=_row_norm(norm, y0, per_sample),
    )
    if grid_on_outputs:
        cfg.grid = s_out
    prep = Prepared(
        f=f,
        y0=y0,
        t=t,
        per_sample=per_sample,
        direction=direction,
        s_out=s_out,
        y0_rows=y0_rows,
        cfg=cfg,
        nfe=[0],
    )
    return prep, tab


def _check_step_options(fixed: bool, *, first_step, max_step, min_step, controller) -> None:
    """The adaptive step options apply to adaptive steps only, and ``min_step`` must not
    exceed ``max_step``: a fixed grid ignored them (``step_size=0.1, max_step=0.01``
    took steps of 0.1), and ``min_step=0.5, max_step=0.01`` ignored ``min_step``."""
    if fixed:
        given = [
            name
            for name, v in (
                ("first_step", first_step),
                ("max_step", None if max_step == math.inf else max_step),
                ("min_step", min_step or None),
                ("controller", controller),
            )
            if v is not None
        ]
        if given:
            names, many = ", ".join(f"`{n}`" for n in given), len(given) > 1
            raise InputError(
                f"{names} {'control' if many else 'controls'} adaptive steps; a fixed grid "
                "(`step_size`, or a fixed-step method on `t`) takes its steps as given: drop "
                f"{'them' if many else 'it'}, or drop `step_size` for an adaptive solve (or "
                "give a smaller `step_size` for smaller steps)."
            )
    elif min_step > max_step:
        raise InputError(
            f"`min_step` = {min_step:g} exceeds `max_step` = {max_step:g}: no step size "
            "satisfies both. Lower `min_step` or raise `max_step`."
        )


def _row_norm(norm, y0, per_sample):
    """A user norm acts on one system's scaled error (user layout) -> scalar ``[K]``.

    Its first value is checked on the host (one synchronisation per solve): a norm
    must return one number per system, and never a negative one — with ``-max|e|``
    every trial was accepted and the solve ended at 500·rtol with status ok.  A later
    negative value becomes NaN (no synchronisation), which the controller rejects."""
    if norm is None:
        return None
    if not callable(norm):
        raise InputError(f"`norm` must be callable on a tensor, got {type(norm).__name__}.")
    shape = y0.shape[1:] if per_sample else y0.shape
    how = (
        "a per-sample `norm` is applied to every row at once with torch.vmap: it must "
        "use torch operations only (no float(), .item(), numpy)"
        if per_sample
        else "`norm` must return a number or a tensor of one element"
    )

    if per_sample:
        batched = torch.vmap(lambda e: norm(e.reshape(shape)))

        def call(x):
            try:
                v = batched(x)
            except RuntimeError as e:
                raise InputError(
                    f"`norm` failed on the rows' scaled errors of shape {tuple(shape)}: {e}. "
                    f"{how}, and return a 0-dim tensor (e.g. `e.abs().max()`)."
                ) from None
            if not isinstance(v, torch.Tensor) or v.shape != x.shape[:1]:
                got = tuple(v.shape[1:]) if isinstance(v, torch.Tensor) else type(v).__name__
                raise InputError(
                    f"`norm` returned {got} for a row's scaled error of shape "
                    f"{tuple(shape)}; it must return a 0-dim tensor (e.g. `e.abs().max()`)."
                )
            return v

    else:

        def call(x):
            v = torch.as_tensor(norm(x.reshape(shape)))
            if v.numel() != 1:
                raise InputError(
                    f"`norm` returned shape {tuple(v.shape)} for a scaled error of shape "
                    f"{tuple(shape)}; {how} (e.g. `e.abs().max()`)."
                )
            return v.reshape(1).to(device=x.device, dtype=x.dtype)

    checked = []

    def row_norm(x):
        v = call(x)
        if not checked:
            checked.append(True)
            if bool((v.detach() < 0).any()):
                raise InputError(
                    f"`norm` returned {float(v.detach().min()):.3g}: a norm must be ≥ 0 (a "
                    "negative or signed value makes every error look acceptable). Return "
                    "a norm of e, e.g. `e.abs().max()`."
                )
        return torch.where(v >= 0, v, torch.full_like(v, math.nan))

    return row_norm


_OPTION_NAMES = (
    "first_step",
    "min_step",
    "max_step",
    "controller",
    "norm",
    "newton_tol",
    "newton_max_iter",
    "throw",
    "grid_on_outputs",
    "events",
    "step_t",
    "jump_t",
    "callback",
    "isoutofdomain",
    "accept_min_step",
    "compile",
    "jac",
    "jac_sparsity",
)


def solve(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str | ButcherTableau = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    step_size: float | None = None,
    sensitivity: str = "direct",
    max_steps: int = 100_000,
    first_step: float | None = None,
    min_step: float = 0.0,
    max_step: float | None = None,
    controller: str | PIDController | None = None,
    norm: Callable | None = None,
    newton_tol: float | None = None,
    newton_max_iter: int | None = None,
    throw: bool = True,
    grid_on_outputs: bool = False,
    events=None,
    step_t=None,
    jump_t=None,
    callback: Callable | None = None,
    isoutofdomain: Callable | None = None,
    accept_min_step: bool = False,
    jac=None,
    jac_sparsity=None,
    compile: bool = False,
    **options,
) -> Solution:
    """Solve ``dy/dt = f(t, y)``, ``y(t[0]) = y0``, reporting ``y`` at the times ``t``.

    Parameters
    ----------
    f : callable ``f(t, y) -> dy/dt``
        On torch tensors; returns the shape and dtype of ``y``.  With per-sample
        times ``t [B, T]`` it is called with ``t`` of shape ``[B]`` (each sample's
        own time) and ``y`` of shape ``[B, ...]``; otherwise with a 0-dim ``t``.
    y0 : Tensor ``[...]`` (shared grid) or ``[B, ...]`` (per-sample grids)
        Initial state, float32 or float64, on any device.
    t : Tensor ``[T]`` or ``[B, T]``
        Output times (the first is the initial time); strictly increasing or
        strictly decreasing (integration backward in time).  Same units as ``f``'s time.
    method : str or ButcherTableau
        Any name in :func:`odenet.methods` or your own tableau.
    rtol, atol : float, or Tensor (numpy array, list) broadcastable to ``y0``
        Adaptive steps keep the RMS norm of ``err / (atol + rtol·max(|y0|, |y1|))`` ≤ 1.
    step_size : float, optional
        Given ⇒ fixed grid ``t0 + k·h`` (the last step shortened to land on the final
        time); outputs between grid points by dense output.
    sensitivity : ``"direct" | "adjoint" | "checkpoint"``
        How gradients flow back (see :mod:`odenet.sensitivity`).
    max_steps : int
        Attempted steps (accepted + rejected) per system before failing.
    first_step, min_step, max_step : float
        Initial step (default: Hairer's estimate), the smallest step before declaring
        underflow, the largest step.
    controller : ``"I" | "PI" | "PID" | "predictive"``, a :class:`PIDController`, or None
        None (the default) chooses: Gustafsson's predictive controller for adaptive
        ``radau_iia5`` (as in Hairer's RADAU5), the classical I controller otherwise.
    norm : callable, optional
        Norm of one system's scaled error (default RMS).
    newton_tol, newton_max_iter
        Implicit methods: rate-corrected stopping threshold for Newton increments in
        units of the tolerance, and the iteration cap.
    throw : bool
        On failure raise (default) or return a Solution whose ``status`` says why.
    grid_on_outputs : bool
        Fixed steps from each output time to the next (no ``step_size`` needed).
    events : callable, :class:`odenet.Event` or a list of them, optional
        Zero crossings of ``fn(t, y)`` (user layout; per-sample grids: ``t [B]``,
        ``y [B, ...]`` -> ``[B]``), located on the dense output to round-off of the
        interpolant.  Each :class:`odenet.Event` has a ``direction`` (+1 rising, −1
        falling, 0 both) and ``terminal`` (stop at the first / k-th crossing); a bare
        callable is terminal.  Every crossing is recorded in ``Solution.events``
        (times, states, which function); a terminal one ends its sample there with
        status ``TERMINATED`` (success) and NaN outputs after it.  Direct sensitivity
        only; the recorded times and states are differentiable (the time by the
        implicit function theorem, as :func:`odenet.odeint_event`).
    step_t, jump_t : 1-D tensors of times, optional
        Adaptive steps land exactly on these times; ``jump_t`` marks discontinuities
        of ``f``: the step lands one ulp before and the next one starts one ulp after
        with a fresh evaluation of ``f`` (torchdiffeq's ``perturb``).
    accept_min_step : bool
        torchdiffeq's meaning of ``min_step``: no step is proposed below ``min_step``
        and a finite step of that size is accepted whatever its error estimate (the
        tolerance is then not guaranteed there).  Default: a step that must fall below
        ``min_step`` is a step-size underflow.
    callback : callable ``callback(kind, t, y, dt)``, optional
        Called with ``kind="step"`` before every trial step, then ``"accept"`` or
        ``"reject"`` with the trial's start ``t``, state ``y`` and size ``dt``.
    isoutofdomain : callable ``isoutofdomain(t, y) -> bool``, optional
        Adaptive steps only: called with the end time and state of every trial step
        (per-sample grids: ``t [B]``, ``y [B, ...]``, returning ``[B]`` bools); a trial
        it flags is rejected and retried smaller, as a step whose error is far above
        the tolerance (Julia's ``isoutofdomain``, CVODE's ``constraints``).  For
        quantities that must stay non-negative (concentrations, densities),
        ``lambda t, y: bool((y < 0).any())``.  A strict test on components that sit
        at round-off level near the boundary can force tiny steps (the E5 chemistry
        with radau_iia5 at rtol 1e-6: a 20 000-step limit reached instead of 387
        steps); ``y < -atol`` leaves them room.
        Outputs between two accepted steps come from the dense output and are not
        checked.  A row whose steps must shrink below the round-off of ``t`` to stay
        inside fails with ``STEP_UNDERFLOW``.
    jac : callable ``jac(t, y) -> [n, n]``, or a constant ``[n, n]`` matrix, optional
        Implicit methods: ``∂f/∂y`` of the flattened state (``n = y0.numel()``;
        per-sample grids: ``[B, n, n]``) as a tensor, numpy array, ``scipy.sparse``
        matrix or torch sparse tensor, called with ``f``'s arguments.  Used for the
        Newton iteration only: gradients of the solution still come from ``f``'s
        autograd graph.  Default: autograd (see :mod:`odenet._jacobian`).
    jac_sparsity : ``[n, n]`` boolean pattern (array, tensor or scipy.sparse), optional
        Implicit methods: where ``∂f_i/∂y_j`` can be nonzero.  Autograd Jacobians are
        then compressed (one reverse-mode product per group of structurally
        orthogonal rows, or one forward-mode product per group of columns where the
        rows need more than four times as many groups) and one system with ``n ≥ 200``
        on the CPU is factorised with a sparse LU (SuperLU), as scipy's ``jac_sparsity``.
    compile : bool
        Fuse ``f`` with the method's step into one ``torch.compile`` kernel per step
        (one system, explicit method, ``sensitivity="direct"``, no gradient through
        the solve).  Opt-in: the first solve of a (field, method, shape, dtype) pays
        a compile of seconds, so it pays for small systems over many steps only (see
        "Compiled small systems" in the guide).  Where the fused step cannot serve
        the solve (no compiler, a field that does not trace, gradients needed,
        per-sample grids, events, an implicit method) the eager path runs, with a
        ``CompileFallbackWarning`` and the reason in ``stats["compile_fallback"]``.
        ``stats["compiled"]`` and ``stats["compile_time"]`` (seconds spent compiling
        in this call; 0 when the compiled code was cached) are reported.
    **options
        For ``sensitivity="adjoint"`` / ``"checkpoint"`` only:
        ``adjoint_params`` (tensors to differentiate; default the parameters of ``f``
        when it is an ``nn.Module``, plus every other tensor requiring grad that its
        output depends on, e.g. those a closure captures), ``checkpoints`` (the most
        forward states kept; default as many as fit in 4.5 MiB, at least 8) or
        ``checkpoint_every`` (a fixed
        number of steps per kept state), and for the adjoint ``adjoint_rtol``,
        ``adjoint_atol``, ``adjoint_method``, ``adjoint_seminorm``, ``adjoint_norm``,
        ``adjoint_callback``, ``adjoint_options`` (see
        :func:`odenet.sensitivity.solve_with`).

    Returns
    -------
    Solution
        ``ys`` of shape ``[T, *y0.shape]`` (per-sample: ``[B, T, ...]``), ``ts``,
        ``stats`` and ``status``.

    Raises
    ------
    InputError
        For invalid arguments (the message says which and how to fix it).
    SolverError
        Subclasses for step-size underflow, max_steps, non-finite state or Newton
        failure (``throw=True``).
    """
    check_sensitivity(sensitivity)
    compile = check_flag("compile", compile)
    transforms = _functorch_transforms()
    if "vmap" in transforms and (_vmapped(y0) or _vmapped(t)):
        raise _vmap_error()
    if has_tangent(t) or ("jvp" in transforms and is_traced(t)):
        raise UnsupportedDerivativeError(
            "forward-mode derivatives with respect to the output times `t` (dual tensors, "
            "torch.func.jvp/jacfwd) are not supported: they came out 0.  Use reverse mode "
            "(torch.autograd.grad, .backward(), torch.func.jacrev with "
            "sensitivity='direct'); dy(t_i)/dt_i is f(t_i, y(t_i))."
        )
    prep, tab = prepare(
        f,
        y0,
        t,
        method=method,
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        max_steps=max_steps,
        first_step=first_step,
        min_step=min_step,
        max_step=max_step,
        controller=controller,
        norm=norm,
        newton_tol=newton_tol,
        newton_max_iter=newton_max_iter,
        grid_on_outputs=grid_on_outputs,
        jac=jac,
        jac_sparsity=jac_sparsity,
    )
    if hasattr(tab, "check_use"):
        tab.check_use(sensitivity=sensitivity)
    if events is not None and sensitivity != "direct":
        raise InputError(
            "`events` need sensitivity='direct' (gradients through the event time come from "
            "odenet.odeint_event, which also works with the adjoint)."
        )
    prep.cfg.accept_min_step = bool(accept_min_step)
    if accept_min_step and not prep.cfg.min_step > 0:
        raise InputError(
            "`accept_min_step=True` needs a positive `min_step` (the step size whose "
            f"steps are accepted whatever their error), got min_step={min_step!r}."
        )
    _refuse_forward_mode(prep, sensitivity, transforms)
    prep.install_hooks(
        events=events,
        step_t=step_t,
        jump_t=jump_t,
        callback=callback,
        isoutofdomain=isoutofdomain,
    )
    if sensitivity != "direct":
        if compile:
            from odenet._compiled import CompileFallbackWarning

            warnings.warn(
                f"solve(compile=True) applies to sensitivity='direct'; the {sensitivity} "
                "solve runs eagerly.",
                CompileFallbackWarning,
                stacklevel=2,
            )
        return solve_with(sensitivity, prep, tab, throw=throw, **options)
    if options:
        raise InputError(
            f"unknown option(s) {', '.join(map(repr, sorted(options)))} for "
            f"sensitivity='direct'; solve() takes {', '.join(_OPTION_NAMES)} "
            "(adjoint_* and checkpoint options need sensitivity='adjoint'/'checkpoint')."
        )
    return run_direct(prep, tab, throw=throw, compile=compile)


def _functorch_transforms() -> set[str]:
    """The torch.func transforms active around this call: ``"vmap"``, ``"grad"``
    (grad, jacrev, vjp) and ``"jvp"`` (jvp, jacfwd)."""
    try:
        from torch._C._functorch import TransformType, get_interpreter_stack
    except ImportError:  # pragma: no cover - torch without functorch
        return set()
    names = {TransformType.Vmap: "vmap", TransformType.Grad: "grad", TransformType.Jvp: "jvp"}
    return {names[i.key()] for i in (get_interpreter_stack() or []) if i.key() in names}


def _vmapped(x) -> bool:
    """Whether ``x`` is batched by a torch.func.vmap (jacfwd's vmap batches only the
    tangents, which pass)."""
    if not isinstance(x, torch.Tensor):
        return False
    from torch._C._functorch import get_unwrapped, is_batchedtensor, is_functorch_wrapped_tensor

    while is_functorch_wrapped_tensor(x):
        if is_batchedtensor(x):
            return True
        x = get_unwrapped(x)
    return False


def _vmap_error():
    return UnsupportedDerivativeError(
        "odenet.solve under torch.func.vmap is not supported (the step-size control "
        "decides on the host, per solve).  Batch the samples in y0 instead: a shared "
        "time grid t [T] with y0 [B, ...], or per-sample grids t [B, T]."
    )


def _refuse_forward_mode(prep: Prepared, sensitivity: str, transforms: set[str]) -> None:
    """Raise where a derivative would come out silently wrong.

    Forward-mode tangents (``torch.autograd.forward_ad`` dual tensors, or
    ``torch.func.jvp``/``jacfwd``) pass through ``sensitivity="direct"`` only (the
    adjoint/checkpoint modes' autograd Function has no forward-mode rule: tangent 0).
    No ``torch.func`` transform can run that Function, nor the implicit methods'
    Newton Jacobians (which set ``requires_grad``).
    """
    implicit = getattr(prep.cfg.rk, "newton", None) is not None
    direct = sensitivity == "direct"
    if "vmap" in transforms:  # vmapped parameters of the field show in its output
        g = prep.internal_field(prep.f, count=False)
        if _vmapped(g(prep.s_out[:, 0], prep.y0_rows)):
            raise _vmap_error()
    if not direct and transforms:
        raise UnsupportedDerivativeError(
            f"torch.func transforms ({', '.join(sorted(transforms))}) are not supported with "
            f"sensitivity={sensitivity!r}.  Use torch.autograd.grad / .backward() with this "
            "sensitivity, or sensitivity='direct' (torch.func.grad/jacrev work there; "
            "jvp/jacfwd with explicit methods only)."
        )
    if implicit and transforms:
        raise UnsupportedDerivativeError(
            f"torch.func transforms ({', '.join(sorted(transforms))}) are not supported with "
            "an implicit method (its Newton Jacobians need autograd's requires_grad).  Use "
            "torch.autograd.grad / .backward() (all sensitivities), or an explicit method "
            "with sensitivity='direct'."
        )
    if direct:  # dual tensors pass (implicit stages attach for them, see _loop)
        return
    forward = "jvp" in transforms
    if not forward:
        import torch.autograd.forward_ad as fwAD

        if getattr(fwAD, "_current_level", -1) >= 0:  # inside a dual_level()
            forward = has_tangent(prep.y0_rows)
            if not forward:  # tangents of the field's parameters show in its output
                g = prep.internal_field(prep.f, count=False)
                forward = has_tangent(g(prep.s_out[:, 0], prep.y0_rows))
    if forward:
        raise UnsupportedDerivativeError(
            f"forward-mode differentiation (dual tensors, torch.func.jvp/jacfwd) through "
            f"sensitivity={sensitivity!r} is not supported: the tangents would come out 0.  "
            "Use reverse mode (torch.autograd.grad, .backward()) with this sensitivity, or "
            "sensitivity='direct' (dual tensors work there with every method, "
            "torch.func.jvp/jacfwd with explicit methods)."
        )


def run_direct(prep: Prepared, tab: ButcherTableau, *, throw: bool, compile=False) -> Solution:
    g = prep.internal_field(prep.f, check=True)
    if compile:  # the loop's host backend takes its fused step from here
        from odenet._compiled import FusedHost

        d = float(prep.direction[0])
        g.fused = prep.fused = FusedHost(prep.f, tab, prep.y0.shape, prep.s_out.dtype, d, prep.nfe)
        prep.fused.install_newton(prep.cfg.rk)  # Newton iterations
    s_out, y0_rows = prep.s_out, prep.y0_rows
    cfg = prep.cfg
    fixed = cfg.fixed
    # A fixed Runge–Kutta grid is a smooth function of its node times, and the loop
    # differentiates through them.  A fixed-step multistep formula is not: it holds on
    # equal steps only and an unequal step is its starter's, so y(T) jumps where T
    # crosses a node (bdf2 on y' = −y, h = 0.1: ∂y(1)/∂T came out 0.62·f).
    smooth_in_t = fixed and not isinstance(tab, LinearMultistep)
    if smooth_in_t or not (s_out.requires_grad and torch.is_grad_enabled()):
        result = integrate(g, s_out, y0_rows, cfg)
        return prep.solution(result, tab.name, throw=throw)
    # Adaptive steps are not a differentiable function of the times either (an accepted
    # or rejected trial is a jump), so the derivative with respect to t is that of the
    # flow, as the adjoint computes it: ∂y(s_i)/∂s_i = y'(s_i), the slope of the dense
    # output there (the loop records it; f(s_i, y_i) at an interpolated y_i magnifies
    # the interpolant's error by a stiff Jacobian), and ∂y(s_i)/∂s_0 = −Φ(s_i, s_0) g_0.
    # Both enter through terms whose value is zero: y0 − δs_0·g_0 starts the solve,
    # δs_i·y'(s_i) is added to each output.
    # The slopes carry the graph of f at the midpoint of the shift (the midpoint rule
    # of the flow, with the value of the slope unchanged), so that derivatives of the
    # time derivative are right too: ∂/∂θ y'(s_i) = f_y ∂y_i/∂θ + f_θ (physics-informed
    # residuals), and ∂²y/∂s_i² = f_s + f_y f.  Without it a recorded slope is a constant
    # to autograd and every derivative of ∂y/∂s came out zero.
    s_det = s_out.detach()
    if cfg.grid is not None:
        cfg.grid = cfg.grid.detach()
    g_plain = prep.internal_field(prep.f, count=False)
    with torch.no_grad():
        g0 = g_plain(s_det[:, 0], y0_rows.detach())
    ds = (s_out - s_det).to(y0_rows.dtype)
    half = ds / 2
    # the backward flow from s_0 + δ to s_0 by the midpoint rule; value g0
    g0 = g_plain(s_det[:, 0] + half[:, 0].to(s_det.dtype), y0_rows - half[:, :1] * g0)
    cfg.slopes = True
    result = integrate(g, s_det, y0_rows - ds[:, :1] * g0, cfg)
    # every row, whatever its status: a terminal event or another row's failure leaves
    # the outputs a row reached differentiable (an output never reached has no slope)
    slopes = result.slopes
    finite = torch.isfinite(slopes)
    slopes = torch.where(finite, slopes, torch.zeros_like(slopes))
    ys = result.ys
    graphs = []
    for i in range(ys.shape[1]):
        # f at the outputs (at the start, where f is finite, for a row that has none),
        # its value taken off: the value stays the dense output's slope, the graph is f's
        ok = finite[:, i].all(dim=-1, keepdim=True)
        y_i = torch.where(ok, ys[:, i], y0_rows.detach())
        y_i = y_i + half[:, i : i + 1] * slopes[:, i]
        s_i = torch.where(ok[:, 0], s_det[:, i], s_det[:, 0])
        f_i = g_plain(s_i + half[:, i].to(s_det.dtype), y_i)
        graphs.append(torch.where(ok, f_i - f_i.detach(), torch.zeros_like(f_i)))
    slopes = slopes + torch.stack(graphs, dim=1)
    result.ys = ys + ds[:, :, None] * slopes
    return prep.solution(result, tab.name, throw=throw)


def step(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    t: float | torch.Tensor,
    y: torch.Tensor,
    dt: float | torch.Tensor,
    method: str | ButcherTableau = "rk4",
    *,
    batched: bool = False,
) -> torch.Tensor:
    """One step of a scheme: the step map ``Φ(y) = y + dt Σ b_i k_i``.

    Differentiable with respect to ``y``, ``dt`` and anything ``f`` captures (for
    implicit methods through the implicit function theorem).

    Parameters
    ----------
    f : callable ``f(t, y) -> dy/dt``
    t : float or 0-dim Tensor, the time at the start of the step.
    y : Tensor ``[...]`` (one system) or ``[B, ...]`` with ``batched=True``
        (``B`` independent systems: implicit methods then solve ``B`` small Newton
        systems instead of one large one; ``f`` still receives the whole batch and a
        0-dim ``t``).
    dt : float, the step (negative steps integrate backward).
    method : str or ButcherTableau

    Returns
    -------
    Tensor with the shape of ``y``.
    """
    check_callable("f", f)
    y = check_y0(y, "y")
    tab = tableau(method)
    check_step_size("t", t)
    check_step_size("dt", dt)
    if batched and y.dim() == 0:
        raise InputError("`batched=True` needs `y` of shape [B, ...], got a 0-dim tensor.")
    K = y.shape[0] if batched else 1
    # time in the promotion of t's and y's dtypes, as solve() gives f (a Python number is
    # exact: float64): cast to a float32 state's dtype, the stage times t + c·h at
    # t = 1e6 were rounded to 1/16 and one rk4 step was 3.5e-4 off
    floating = isinstance(t, torch.Tensor) and t.is_floating_point()
    tdt = torch.promote_types(t.dtype if floating else exact_time_dtype(y.device), y.dtype)
    t0 = torch.as_tensor(t, dtype=tdt, device=y.device)
    h = torch.as_tensor(dt, dtype=tdt, device=y.device)
    shape = y.shape

    def g(s, yy):  # f's value in the state's dtype, whatever t's promotion made of it
        return f(s[0], yy.reshape(shape)).reshape(K, -1).to(y.dtype)

    rk = _STEP_CACHE.get((id(tab), y.dtype, tdt, str(y.device)))
    if rk is None or rk.tableau is not tab:
        rk = _cached_runtime(tab, y.dtype, tdt, y.device)
    if rk.implicit and _functorch_transforms():
        raise UnsupportedDerivativeError(
            f"torch.func transforms ({', '.join(sorted(_functorch_transforms()))}) are not "
            f"supported through an implicit step ({tab.name!r}: its Newton Jacobians need "
            "autograd's requires_grad).  Use torch.autograd.grad / .backward() or "
            "torch.autograd.forward_ad dual tensors, or an explicit method."
        )
    if rk.implicit:
        # a copy of the cached runtime holds this call's Newton (fresh: no Jacobian leaks
        # between unrelated steps) and track_grad, so no other step sees them (e.g. an
        # implicit step nested inside this step's f).  An explicit step reads neither:
        # it runs on the cached runtime itself, untouched
        rk = _own_copy(rk)
        eps = torch.finfo(y.dtype).eps
        rk.newton = Newton(tol=1.0, max_iter=25, atol=100 * eps, rtol=100 * eps)
        rk.track_grad = torch.is_grad_enabled()
    rows = y.reshape(K, -1)
    s = t0.expand(K)
    hh = h.expand(K)
    # the first evaluation is checked (not its dtype: under autocast f may return half
    # precision for a float32 state, and the step promotes it)
    f0 = check_field_output(call_field(f, t0, y), y, t0, dtype=False, finite=False)
    res = rk.step(g, s, rows, hh, f0.reshape(K, -1).to(y.dtype))
    if res.ok is not None and not bool(res.ok.all()):
        raise NewtonConvergenceError(
            f"method {tab.name!r}: Newton's method did not converge for the implicit stages "
            f"at t = {float(t0):.6g} with dt = {float(h):.6g}; reduce `dt`."
        )
    return res.y1.reshape(shape)
