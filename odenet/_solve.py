"""``odenet.solve``: validation at the boundary, the internal layout, the Solution.

The user's problem ``dy/dt = f(t, y)`` becomes ``K`` rows of ``n`` numbers in
internal time ``s = d·t`` (``d = ±1`` so that ``s`` increases).  With a 1-D ``t``
the whole ``y0`` is one system (``K = 1``); with per-sample times ``t [B, T]`` each
of the ``B`` samples is its own system with its own steps (``K = B``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch

from odenet._controller import PIDController, controller_from
from odenet._errors import (
    InputError,
    MaxStepsError,
    NewtonConvergenceError,
    NonFiniteError,
    SolverError,
    StepSizeUnderflowError,
    VectorFieldError,
)
from odenet._loop import LoopConfig, LoopResult, integrate
from odenet._newton import Newton
from odenet._solution import (
    MAX_STEPS,
    NEWTON_FAILED,
    NON_FINITE,
    STATUS_MESSAGES,
    STEP_UNDERFLOW,
    Solution,
)
from odenet._stepper import RungeKutta
from odenet.tableaus import ButcherTableau, methods, tableau

SENSITIVITIES = ("direct", "adjoint", "checkpoint")


# --- validators: each returns the cleaned value or raises naming the argument ---------


def check_y0(y0) -> torch.Tensor:
    if not isinstance(y0, torch.Tensor):
        try:
            y0 = torch.as_tensor(y0)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(
                f"`y0` must be a torch.Tensor (or array-like of numbers), got "
                f"{type(y0).__name__}: {e}"
            ) from None
        if not y0.is_floating_point():
            y0 = y0.to(torch.get_default_dtype())
    if not y0.is_floating_point():
        raise InputError(
            f"`y0` must have a floating dtype, got {y0.dtype}; convert it, e.g. `y0.double()`."
        )
    if y0.numel() == 0:
        raise InputError(f"`y0` is empty (shape {tuple(y0.shape)}); give at least one state.")
    if not bool(torch.isfinite(y0).all()):
        raise InputError("`y0` contains NaN or inf; the initial state must be finite.")
    return y0


def check_t(t, y0: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t, dtype=y0.dtype if y0.dtype == torch.float64 else None)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"`t` must be a 1-D or 2-D tensor of times: {e}") from None
    if not t.is_floating_point():
        t = t.to(y0.dtype)
    if t.dim() not in (1, 2):
        raise InputError(
            f"`t` must be 1-D [T] (shared times) or 2-D [B, T] (per-sample times), "
            f"got shape {tuple(t.shape)}."
        )
    if t.shape[-1] < 1:
        raise InputError("`t` is empty; give at least the initial time.")
    if not bool(torch.isfinite(t).all()):
        raise InputError("`t` contains NaN or inf; output times must be finite.")
    if t.dim() == 2:
        if y0.dim() == 0 or y0.shape[0] != t.shape[0]:
            raise InputError(
                f"per-sample times `t` of shape {tuple(t.shape)} need `y0` of shape "
                f"[{t.shape[0]}, ...] (one row per sample), got {tuple(y0.shape)}."
            )
    if t.shape[-1] > 1:
        dt = t.diff(dim=-1)
        increasing = (dt > 0).all(dim=-1)
        decreasing = (dt < 0).all(dim=-1)
        bad = ~(increasing | decreasing)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0]) if t.dim() == 2 else None
            tt = t[row] if row is not None else t
            d = tt.diff()
            where = int(((d <= 0) if bool(d[0] > 0) else (d >= 0)).nonzero()[0, 0]) + 1
            which = f"row {row} of `t`" if row is not None else "`t`"
            raise InputError(
                f"{which} must be strictly increasing or strictly decreasing; at index "
                f"{where} it goes from {float(tt[where - 1])} to {float(tt[where])}. "
                "Sort the times and remove duplicates."
            )
    return t


def check_tolerances(rtol, atol):
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, torch.Tensor):
            if bool((v < 0).any()) or not bool(torch.isfinite(v).all()):
                raise InputError(f"`{name}` must be finite and non-negative.")
        elif not isinstance(v, numbers.Real) or not (v >= 0) or not math.isfinite(v):
            raise InputError(f"`{name}` must be a finite non-negative number, got {v!r}.")
    if not isinstance(rtol, torch.Tensor) and not isinstance(atol, torch.Tensor):
        if rtol == 0 and atol == 0:
            raise InputError("`rtol` and `atol` are both 0; at least one must be positive.")
    return rtol, atol


def check_positive(name: str, v, *, allow_none: bool = False, integer: bool = False):
    if v is None and allow_none:
        return None
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(v, bool) or not isinstance(v, kind) or not (v > 0) or not math.isfinite(v):
        what = "a positive integer" if integer else "a positive finite number"
        raise InputError(f"`{name}` must be {what}, got {v!r}.")
    return int(v) if integer else float(v)


def resolve_method(method, fixed: bool) -> ButcherTableau:
    tab = tableau(method)
    if not fixed and not tab.is_adaptive:
        adaptive = [m for m in methods() if tableau(m).is_adaptive]
        raise InputError(
            f"method {tab.name!r} has no embedded error estimate, so it cannot choose its "
            f"own steps: pass `step_size=h` for a fixed grid, or use an adaptive method "
            f"({', '.join(adaptive)})."
        )
    return tab


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

        if self.per_sample:
            row_shape = (K, *shape[1:])

            def g(s, y):
                if count:
                    counter[0] += 1
                out = f(s * d if flip else s, y.reshape(row_shape))
                if not checked[0]:
                    _check_field_output(out, y.reshape(row_shape), s * d)
                    checked[0] = True
                out = out.reshape(K, -1)
                return out * d[:, None].to(out.dtype) if flip else out
        else:
            sign = -1.0 if flip else 1.0
            tdt, dev = self.s_out.dtype, self.s_out.device

            def call(t, y):  # t: the user's time, 0-dim
                if count:
                    counter[0] += 1
                out = f(t, y.reshape(shape))
                if not checked[0]:
                    _check_field_output(out, y.reshape(shape), t)
                    checked[0] = True
                out = out.reshape(1, -1)
                return -out if flip else out

            def g(s, y):
                return call(s[0] * sign if flip else s[0], y)

            def host(s: float, y):  # internal time as a Python float (the host-side loop)
                return call(torch.scalar_tensor(s * sign, dtype=tdt, device=dev), y)

            g.host = host

        return g

    def to_user(self, ys_rows: torch.Tensor) -> torch.Tensor:
        """``[K, T, n]`` -> ``[T, *y0.shape]`` (shared) or ``[B, T, *y0.shape[1:]]``."""
        T = ys_rows.shape[1]
        if self.per_sample:
            return ys_rows.reshape(self.K, T, *self.y0.shape[1:])
        return ys_rows[0].reshape(T, *self.y0.shape)

    def solution(self, result: LoopResult, method: str, *, throw: bool) -> Solution:
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
                factorizations=ns.factorizations,
                linear_solves=ns.linear_solves,
                newton_iterations=ns.iterations,
            )
        sol = Solution(
            ys=self.to_user(result.ys),
            ts=self.t,
            stats=stats,
            status=result.status,
            method=method,
        )
        if throw and not sol.success:
            raise_failure(sol, result, self)
        return sol


_FAILURE_CLASSES = {
    MAX_STEPS: MaxStepsError,
    STEP_UNDERFLOW: StepSizeUnderflowError,
    NON_FINITE: NonFiniteError,
    NEWTON_FAILED: NewtonConvergenceError,
}


def raise_failure(sol: Solution, result: LoopResult, prep: Prepared):
    bad = (result.status != 0).nonzero()[:, 0]
    k = int(bad[0])
    code = int(result.status[k])
    t_reached = float(result.t_reached[k] * prep.direction[k])
    t_end = float(prep.s_out[k, -1] * prep.direction[k])
    who = f"sample {k} ({len(bad)} of {prep.K} samples failed): " if prep.per_sample else ""
    steps = int(result.accepted[k] + result.rejected[k])
    msg = (
        f"{who}{STATUS_MESSAGES[code]}. The solve reached t = {t_reached:.6g} of "
        f"t_end = {t_end:.6g} after {steps} steps (method {sol.method!r}). Pass "
        "`throw=False` to get the partial solution (unreached outputs are NaN)."
    )
    raise _FAILURE_CLASSES.get(code, SolverError)(msg, t=t_reached, solution=sol)


def _check_field_output(out, y, t):
    if not isinstance(out, torch.Tensor):
        raise VectorFieldError(
            f"the vector field `f` must return a torch.Tensor, got {type(out).__name__}."
        )
    if out.shape != y.shape:
        raise VectorFieldError(
            f"the vector field `f` returned shape {tuple(out.shape)} for a state of shape "
            f"{tuple(y.shape)}; dy/dt must have the state's shape."
        )
    if out.dtype != y.dtype:
        raise VectorFieldError(
            f"the vector field `f` returned dtype {out.dtype} for a state of dtype {y.dtype}; "
            "return the state's dtype (e.g. build constants with dtype=y.dtype)."
        )
    if not bool(torch.isfinite(out).all()):
        raise VectorFieldError(
            f"the vector field `f` returned NaN or inf at the initial time t = "
            f"{t.detach().flatten()[0].item():.6g} for a finite initial state."
        )


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
) -> tuple[Prepared, ButcherTableau]:
    """Validate everything and build the loop's layout and configuration.

    ``grid_on_outputs=True`` takes fixed steps from output time to output time
    (torchdiffeq's behaviour for fixed-step methods without a step size).
    """
    if not callable(f):
        raise InputError(f"`f` must be callable as f(t, y), got {type(f).__name__}.")
    y0 = check_y0(y0)
    t = check_t(t, y0)
    step_size = check_positive("step_size", step_size, allow_none=True)
    tab = resolve_method(method, step_size is not None or grid_on_outputs)
    rtol, atol = check_tolerances(rtol, atol)
    max_steps = check_positive("max_steps", max_steps, integer=True)
    first_step = check_positive("first_step", first_step, allow_none=True)
    max_step = math.inf if max_step is None else check_positive("max_step", max_step)
    if not isinstance(min_step, numbers.Real) or min_step < 0:
        raise InputError(f"`min_step` must be a non-negative number, got {min_step!r}.")
    ctrl = controller_from(controller)

    tdt = torch.promote_types(t.dtype, y0.dtype)
    tt = t.to(tdt)
    per_sample = tt.dim() == 2
    rows = tt if per_sample else tt[None]
    if rows.shape[1] > 1:
        direction = torch.sign(rows[:, -1] - rows[:, 0])
    else:
        direction = torch.ones(rows.shape[0], dtype=tdt, device=tt.device)
    s_out = rows * direction[:, None]
    K = rows.shape[0]
    y0_rows = y0.reshape(K, -1)

    def per_row(v):
        if isinstance(v, torch.Tensor):
            return v.to(y0.dtype).expand(y0.shape).reshape(K, -1)
        return v

    newton = None
    if tab.is_implicit:
        fixed = step_size is not None or grid_on_outputs
        eps = torch.finfo(y0.dtype).eps
        # A fixed-step user asks for the scheme's own solution: solve the stage
        # equations to round-off.  An adaptive solve only needs them well inside
        # the local error tolerance.
        n_atol, n_rtol = (100 * eps, 100 * eps) if fixed else (atol, rtol)
        n_tol = newton_tol if newton_tol is not None else (1.0 if fixed else 0.03)
        n_max = newton_max_iter if newton_max_iter is not None else (25 if fixed else 8)
        if isinstance(n_atol, torch.Tensor):
            n_atol = per_row(n_atol)
        if isinstance(n_rtol, torch.Tensor):
            n_rtol = per_row(n_rtol)
        newton = Newton(tol=n_tol, max_iter=n_max, atol=n_atol, rtol=n_rtol)
    if newton is None:  # explicit runtimes are stateless: build their tensors once
        rk = _runtime(tab, y0.dtype, tdt, y0.device)
    else:  # adaptive radau_iia5 runs Hairer's RADAU5 (odenet._radau)
        from odenet._radau import runtime_for

        rk = runtime_for(tab, y0.dtype, tdt, y0.device, newton, fixed=fixed)
    if step_size is not None:
        span = float(s_out.detach().abs().max())
        if step_size <= 16 * torch.finfo(tdt).eps * max(span, 1.0):
            raise InputError(
                f"`step_size` = {step_size:g} is below the round-off of the times (|t| up to "
                f"{span:g} in {tdt}): t + h == t. Use a larger step or float64 times."
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


def _row_norm(norm, y0, per_sample):
    """A user norm acts on one system's scaled error (user layout) -> scalar."""
    if norm is None:
        return None
    if not callable(norm):
        raise InputError(f"`norm` must be callable on a tensor, got {type(norm).__name__}.")
    if per_sample:
        batched = torch.vmap(lambda e: norm(e.reshape(y0.shape[1:])))
        return lambda x: batched(x)
    return lambda x: torch.as_tensor(norm(x.reshape(y0.shape))).reshape(1).to(x.dtype)


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
    controller: str | PIDController = "I",
    norm: Callable | None = None,
    newton_tol: float | None = None,
    newton_max_iter: int | None = None,
    throw: bool = True,
    grid_on_outputs: bool = False,
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
    rtol, atol : float or Tensor broadcastable to ``y0``
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
    controller : ``"I" | "PI" | "PID"`` or :class:`PIDController`
    norm : callable, optional
        Norm of one system's scaled error (default RMS).
    newton_tol, newton_max_iter
        Implicit methods: rate-corrected stopping threshold for Newton increments in
        units of the tolerance, and the iteration cap.
    throw : bool
        On failure raise (default) or return a Solution whose ``status`` says why.
    grid_on_outputs : bool
        Fixed steps from each output time to the next (no ``step_size`` needed).
    **options
        For ``sensitivity="adjoint"`` / ``"checkpoint"`` only:
        ``adjoint_params`` (tensors to differentiate; default the parameters of ``f``
        when it is an ``nn.Module``), ``checkpoints`` (the most forward states kept;
        default as many as fit in 4.5 MiB, at least 8) or ``checkpoint_every`` (a fixed
        number of steps per kept state), and for the adjoint ``adjoint_rtol``,
        ``adjoint_atol``, ``adjoint_method``, ``adjoint_seminorm``,
        ``adjoint_options`` (see :func:`odenet.sensitivity.solve_with`).

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
    if sensitivity not in SENSITIVITIES:
        raise InputError(
            f"`sensitivity` must be one of {', '.join(map(repr, SENSITIVITIES))}, "
            f"got {sensitivity!r}."
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
    )
    if sensitivity != "direct":
        from odenet import sensitivity as sens

        return sens.solve_with(sensitivity, prep, tab, throw=throw, **options)
    if options:
        raise InputError(
            f"unknown option(s) {', '.join(map(repr, sorted(options)))} for "
            f"sensitivity='direct'; solve() takes {', '.join(_OPTION_NAMES)} "
            "(adjoint_* and checkpoint options need sensitivity='adjoint'/'checkpoint')."
        )
    return run_direct(prep, tab, throw=throw)


def run_direct(prep: Prepared, tab: ButcherTableau, *, throw: bool) -> Solution:
    g = prep.internal_field(prep.f, check=True)
    s_out, y0_rows = prep.s_out, prep.y0_rows
    cfg = prep.cfg
    fixed = cfg.step_size is not None or cfg.grid is not None
    if fixed or not (s_out.requires_grad and torch.is_grad_enabled()):
        # fixed grids differentiate through their node times inside the loop
        result = integrate(g, s_out, y0_rows, cfg)
        return prep.solution(result, tab.name, throw=throw)
    # Adaptive steps are not a differentiable function of the times (an accepted or
    # rejected trial is a jump), so the derivative with respect to t is that of the
    # exact flow, as the adjoint computes it: ∂y(s_i)/∂s_i = g(s_i, y_i) and
    # ∂y(s_i)/∂s_0 = −Φ(s_i, s_0) g(s_0, y_0).  Both enter through terms whose value
    # is zero: y0 − δs_0·g_0 starts the solve, δs_i·g_i is added to each output.
    s_det = s_out.detach()
    g_plain = prep.internal_field(prep.f, count=False)
    with torch.no_grad():
        g0 = g_plain(s_det[:, 0], y0_rows.detach())
    ds = (s_out - s_det).to(y0_rows.dtype)
    result = integrate(g, s_det, y0_rows - ds[:, :1] * g0, cfg)
    if bool((result.status == 0).all()):
        with torch.no_grad():
            slopes = torch.stack(
                [g_plain(s_det[:, i], result.ys[:, i].detach()) for i in range(s_det.shape[1])],
                dim=1,
            )
        result.ys = result.ys + ds[:, :, None] * slopes
    return prep.solution(result, tab.name, throw=throw)


def step(f, t, y, dt, method: str | ButcherTableau = "rk4", *, batched: bool = False):
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
    y = check_y0(y) if not isinstance(y, torch.Tensor) else y
    tab = tableau(method)
    K = y.shape[0] if batched else 1
    tdt = y.dtype
    t0 = torch.as_tensor(t, dtype=tdt, device=y.device)
    h = torch.as_tensor(dt, dtype=tdt, device=y.device)
    shape = y.shape

    def g(s, yy):
        return f(s[0], yy.reshape(shape)).reshape(K, -1)

    rk = _step_runtime(tab, y.dtype, y.device)
    if rk.implicit:  # a fresh Newton per call: no Jacobian leaks between unrelated steps
        eps = torch.finfo(y.dtype).eps
        rk.newton = Newton(tol=1.0, max_iter=25, atol=100 * eps, rtol=100 * eps)
    rk.track_grad = torch.is_grad_enabled()
    rows = y.reshape(K, -1)
    s = t0.expand(K)
    hh = h.expand(K)
    res = rk.step(g, s, rows, hh, g(s, rows))
    if res.ok is not None and not bool(res.ok.all()):
        raise NewtonConvergenceError(
            f"method {tab.name!r}: Newton's method did not converge for the implicit stages "
            f"at t = {float(t0):.6g} with dt = {float(h):.6g}; reduce `dt`."
        )
    return res.y1.reshape(shape)


_STEP_CACHE: dict = {}


def _runtime(tab: ButcherTableau, dtype, time_dtype, device) -> RungeKutta:
    """A tableau's tensors, built once per (tableau, dtypes, device).

    A ResNet calls ``step`` once per layer and a training loop calls ``solve`` once per
    batch: rebuilding tensors from numpy each time would dominate small problems.
    Only the Newton solver and ``track_grad`` are per-call state (set by the caller).
    """
    key = (id(tab), dtype, time_dtype, str(device))
    rk = _STEP_CACHE.get(key)
    if rk is None or rk.tableau is not tab:
        if len(_STEP_CACHE) > 64:
            _STEP_CACHE.clear()
        rk = _STEP_CACHE[key] = RungeKutta(tab, dtype, time_dtype, device, None)
    return rk


def _step_runtime(tab: ButcherTableau, dtype, device) -> RungeKutta:
    return _runtime(tab, dtype, dtype, device)
