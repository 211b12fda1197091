"""The one step loop of odenet: fixed or adaptive steps, dense output, per-row status.

It integrates ``K`` independent systems (``K = 1`` for one system on a shared grid;
``K = B`` for per-sample time grids), each with its own time, step size,
acceptance, output cursor and status.  Time is *internal* time ``s``, increasing
for every row (the caller flips the sign of decreasing grids).

The loop body (:func:`integrate`) is written once.  Two small backends hold what
differs between the number types of its control state:

* :class:`_Host` — one system: time, step size, acceptance, controller memory and
  output cursor are Python floats (no tensor dispatch at all for an explicit
  method; one host synchronisation per step, the error norm; an implicit or
  multistep method's step takes ``[1]`` tensors of time, as on the masked backend,
  and reports to the controller in host numbers);
* :class:`_Masked` — ``[K]`` tensors and masked updates (per-sample grids, hooks,
  a multistep method's checkpointed trajectory, gradients with respect to the times
  of a fixed grid).

Roles are separate (see ``docs/contributing.md``): the method step proposes ``y1``
and an error estimate, the controller (:mod:`odenet._controller`) decides
acceptance, the next step and failure, the interpolant produces outputs; this loop
only sequences them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from odenet._controller import FixedGrid, PIDController
from odenet._dense_check import checks_outputs, landing, output_errors, pick
from odenet._errors import OdenetError
from odenet._ops import HostOps, TensorOps
from odenet._solution import MAX_STEPS, NON_FINITE_STEP, STEP_UNDERFLOW, SUCCESS, TERMINATED
from odenet._stepper import RungeKutta, interpolant_slope, tolerance_unit
from odenet._stiffness import StiffnessMonitor


def has_tangent(x) -> bool:
    """Whether ``x`` is a tensor carrying a forward-mode tangent (a ``forward_ad`` dual)."""
    import torch.autograd.forward_ad as fwAD

    return isinstance(x, torch.Tensor) and fwAD.unpack_dual(x).tangent is not None


@dataclass
class LoopConfig:
    rk: RungeKutta
    rtol: float | torch.Tensor
    atol: float | torch.Tensor
    step_size: float | None
    max_steps: int
    first_step: float | None
    min_step: float
    max_step: float
    controller: PIDController
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None
    # fixed steps on explicit nodes [K, G] (internal time) instead of t0 + k·step_size
    grid: torch.Tensor | None = None
    # hooks between accepted steps (they run on the masked backend):
    # zero crossings located on the dense output (odenet._events.EventTracker)
    events: object | None = None
    # forced step boundaries [K, P] (internal time, increasing, +inf padded); with
    # ``jumps`` they are discontinuities of the field: the step lands one ulp before
    # and the next starts one ulp after, with a fresh f (torchdiffeq's perturb)
    stops: torch.Tensor | None = None
    jumps: bool = False
    # the dtype of the t that f receives (float32 times: the clock's "one ulp before
    # the jump" is rounded by f's t to the jump itself, so the landing is taken one ulp
    # of this dtype before it)
    field_time_dtype: torch.dtype = torch.float64
    # torchdiffeq's meaning of min_step: no step below it, and a step of that size is
    # accepted whatever its error (instead of failing with an underflow)
    accept_min_step: bool = False
    # ``callback(kind, s [K], y [K, n], h [K], accept [K] | None)``: kind "step" before
    # every trial, "verdict" after the controller's (with the trial's start and size)
    callback: Callable | None = None
    # a method with memory starts from this state instead of its own start (a replay
    # of a stretch of the forward continues the forward's history)
    method_state: tuple | None = None
    # ``out_of_domain(s [K] | float, y1 [K, n]) -> [K] bool``: adaptive trial steps whose
    # end it flags are rejected and shrunk as a step with a large error (Julia's
    # ``isoutofdomain``, CVODE's constraints)
    out_of_domain: Callable | None = None
    # record ``d/dt`` of the dense output at every output time (LoopResult.slopes), for
    # gradients with respect to the output times
    slopes: bool = False

    @property
    def fixed(self) -> bool:
        """Fixed steps (``step_size`` or an explicit ``grid``), not error control."""
        return self.step_size is not None or self.grid is not None


@dataclass
class LoopResult:
    ys: torch.Tensor  # [K, T, n], NaN where not reached
    status: torch.Tensor  # [K] long
    t_reached: torch.Tensor  # [K] internal time reached
    accepted: torch.Tensor  # [K]
    rejected: torch.Tensor  # [K]
    h_last: torch.Tensor  # [K] the last step size tried (or proposed, after a failure)
    steps_record: list = field(default_factory=list)
    method_state: tuple | None = None  # a method with memory's state at the end
    # [K, T, n] d/dt of the dense output at the output times (LoopConfig.slopes), else None
    slopes: torch.Tensor | None = None
    # [K] internal time from which an explicit method's steps were held at its stability
    # limit (inf: never); None where the test does not apply (odenet._stiffness)
    stiff_since: torch.Tensor | None = None
    # [K] its estimate of log ‖∂y_N/∂y_0‖ with the steps held fixed (odenet._stiffness)
    frozen_growth: torch.Tensor | None = None


# the error ratio given to a trial step that left the domain (LoopConfig.out_of_domain):
# large enough that every controller rejects it and takes its smallest factor
OUTSIDE_RATIO = 1e6


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over everything but the first (row) dimension: ``[K, ...] -> [K]``."""
    return x.pow(2).flatten(1).mean(dim=1).sqrt()


def initial_step(g, s, y, f0, s_end, rk: RungeKutta, rtol, atol, norm) -> torch.Tensor:
    """Hairer, Nørsett & Wanner I, Sec. II.4 (as scipy's ``select_initial_step``). One f-call."""
    with torch.no_grad():
        scale = atol + rtol * y.abs()
        d0 = norm(y / scale)
        d1 = norm(f0 / scale)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        h0 = torch.minimum(h0.to(s.dtype), s_end - s)
        y1 = y + h0.to(y.dtype)[:, None] * f0
        f1 = g(s + h0, y1)
        d2 = norm((f1 - f0) / scale) / h0.to(y.dtype)
        dmax = torch.maximum(d1, d2)
        q = rk.tableau.error_order
        h1 = torch.where(
            dmax <= 1e-15,
            torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
            ((0.01 / dmax) ** (1.0 / (q + 1))).to(s.dtype),
        )
        return torch.minimum(100 * h0, h1)


def absolute_error_norms(cfg: LoopConfig, trial, y) -> list:
    """The norms ``[K]`` of a step's absolute error estimates, each scaled by
    ``atol + rtol·max(|y|, |y1|)`` (one per estimate; DOP853 has two)."""
    norm = cfg.norm or rms_norm
    scale = tolerance_unit(cfg.atol, cfg.rtol, y, trial.y1)
    errors = trial.error if isinstance(trial.error, tuple) else (trial.error,)
    return [norm(e / scale) for e in errors]


class _Trial:
    """One trial step: ``y1``, stage derivatives, ``f(s1, y1)`` when free, whether
    its stage equations were solved (``None``: explicit), and its error estimate
    (``error`` absolute, or ``rates`` to be multiplied by ``|h|``)."""

    __slots__ = ("abs_y1", "error", "f1", "ks", "ok", "rates", "reports", "y1")

    def __init__(self, y1, ks, f1, ok, error=None, rates=None, reports=None):
        self.y1, self.ks, self.f1, self.ok = y1, ks, f1, ok
        self.error, self.rates = error, rates
        self.reports = _NO_REPORTS if reports is None else reports
        self.abs_y1 = None


class _Reports(NamedTuple):
    """What a step tells the controller beside its error (the optional fields of its
    ``StepResult``: :class:`odenet._bdf.BDFStepResult`,
    :class:`odenet._radau.RadauStepResult`): the order of its estimate, whether to keep
    ``h``, a safety scale, whether a new Jacobian is due, the rows whose estimate came
    from a second filtering, the factor after a Newton failure; ``[K]`` tensors or
    numbers, host numbers on the host backend (:meth:`host`)."""

    error_order: object = None
    hold: object = None
    safety: object = None
    refresh: object = None
    refiltered: object = None
    newton_factor: object = None

    @classmethod
    def of(cls, out):
        return cls(*(getattr(out, name, None) for name in cls._fields))

    @classmethod
    def on_clock(cls, out, clock: torch.dtype):
        """The reports of ``K`` rows as ``[K]`` tensors, the real ones in the clock's
        dtype (:meth:`_Masked.error_norms`)."""
        return cls(*(_on_clock(v, clock) for v in cls.of(out)))

    @classmethod
    def host(cls, out):
        """The reports of a one-system step as Python numbers."""
        kinds = (int, bool, float, bool, bool, float)
        values = zip(cls.of(out), kinds, strict=True)
        return cls(*(v if v is None else kind(v) for v, kind in values))


_NO_REPORTS = _Reports()


def _on_clock(v, clock: torch.dtype):
    """A real ``[K]`` tensor in the clock's dtype (others as they are)."""
    if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != clock:
        return v.to(clock)
    return v


class _Host:
    """One system: control state in Python floats.

    ``g.host(s: float, y [1, n])`` is the field on host time; ``g`` itself (tensor
    time ``[1]``) serves the automatic initial step and the steps of implicit
    methods (their stage solvers and error estimates are the masked backend's, on
    ``[1]`` tensors).
    """

    ops = HostOps

    def __init__(self, g, s_out, y0, cfg: LoopConfig):
        self.g, self.gh, self.cfg, self.rk = g, g.host, cfg, cfg.rk
        self.s_out = s_out
        self.times = s_out[0].tolist()
        self.T, self.n = len(self.times), y0.shape[1]
        self.dev, self.tdt, self.ydt = y0.device, s_out.dtype, y0.dtype
        self.s0, self.s_end = self.times[0], self.times[-1]
        eps = torch.finfo(self.tdt).eps
        self.snap = 64 * eps * max(abs(self.s_end), abs(self.s0), 1.0)
        self.grid = None if cfg.grid is None else cfg.grid[0].tolist()
        self.root_n = math.sqrt(self.n)
        self.rtol = torch.as_tensor(cfg.rtol, dtype=self.ydt, device=self.dev)
        self.atol = torch.as_tensor(cfg.atol, dtype=self.ydt, device=self.dev)
        self.abs_y = y0.detach().abs()
        self.outputs = [y0]
        self.slopes = None  # see start_slopes
        self.cursor = 1
        self.status = SUCCESS
        self.accepted = self.rejected = 0
        self.fixed = cfg.fixed
        # solve(compile=True): an odenet._compiled.FusedHost; the first step decides
        # whether the fused step can serve this solve (an instance attribute shadows
        # the eager ``step`` until then, and after, when it can)
        self.fused = getattr(g, "fused", None)
        self._fused_finite = (None, True)  # (y1, finite) of the last fused fixed step
        if self.fused is not None:
            self.step = self._first_fused_step
        # compiled fixed-grid blocks (uniform grids): nodes skipped beyond the loop's
        # own node count, the block the next step is to take, its length
        self._block = None
        self._skip = 0
        self.block_pending = 0
        self._last_m = 1

    like = None

    def field(self, s, y):
        return self.gh(s, y)

    def full(self, value):
        return float(value)

    def initial_step(self, y, f0):
        norm = self.cfg.norm or rms_norm
        return float(
            initial_step(
                self.g,
                self.s_out[:, 0],
                y,
                f0,
                self.s_out[:, -1],
                self.rk,
                self.cfg.rtol,
                self.cfg.atol,
                norm,
            )
        )

    def node_time(self, node, h_fix):
        if self.grid is None:
            node += self._skip  # the loop counts a block as one node
            if self._block is not None:
                self._node_now = node
                m = self._block_length(node, h_fix)
                if m:
                    self.block_pending = m
                    return self.s0 + (node + m) * h_fix
            return self.s0 + (node + 1) * h_fix
        return self.grid[min(node + 1, len(self.grid) - 1)]

    # a block call costs about one fused step call: two steps or more pay
    BLOCK_MIN = 2

    def _block_length(self, node, h_fix) -> int:
        """Grid steps from ``node`` that end strictly before the next output (and the
        end), in whole loop iterations of the block, within ``max_steps``; 0: none."""
        limit = min(self.times[self.cursor], self.s_end) - self.snap
        last = math.floor((limit - self.s0) / h_fix)
        while last > node and self.s0 + last * h_fix >= limit:
            last -= 1
        unroll = self._unroll
        m = min(last - node, self.cfg.max_steps - self.steps_taken())
        m -= m % unroll
        return m if m >= max(self.BLOCK_MIN, unroll) else 0

    def running(self) -> bool:
        if self._skip and self.steps_taken() >= self.cfg.max_steps and self.cursor < self.T:
            # blocks take several steps per loop iteration: the loop's own budget check
            # counts iterations, so the step budget is enforced here
            self.status = MAX_STEPS
        return self.cursor < self.T and self.status == SUCCESS

    def freeze(self, h):
        return h

    def step(self, s, y, h, f0) -> _Trial:
        if self.rk.implicit:
            sh = torch.tensor([s, h], dtype=self.tdt, device=self.dev)
            out = self.rk.step(self.g, sh[:1], y, sh[1:], f0)
            ok = bool(out.ok)
            return _Trial(out.y1, out.ks, out.f1, ok, error=out.error, reports=_Reports.host(out))
        y1, ks, rates, f1 = self.rk.step_one(self.gh, s, y, h, f0)
        return _Trial(y1, ks, f1, None, rates=rates)

    def as_rows(self, s):
        """Time ``s`` as the ``[1]`` tensor a method's tensor interface takes."""
        return torch.tensor([s], dtype=self.tdt, device=self.dev)

    def step_with_state(self, s, y, h, f0, state):
        """A multistep method's trial (on ``[1]`` tensors of time, as an implicit
        step's) and its reports as host numbers: ``(trial, new state, reports)``."""
        sh = torch.tensor([s, h], dtype=self.tdt, device=self.dev)
        out, new = self.rk.step(self.g, sh[:1], y, sh[1:], f0, state)
        ok = None if out.ok is None else bool(out.ok)
        reports = _Reports.host(out)
        return _Trial(out.y1, out.ks, out.f1, ok, error=out.error, reports=reports), new, reports

    def _first_fused_step(self, s, y, h, f0) -> _Trial:
        fused, fn = self.fused, None
        if f0.requires_grad:
            # the fused kernel runs without autograd: a gradient through it would be
            # silently zero, so the eager step (which keeps the graph) runs instead
            fused.decline(
                "gradients are needed through the solve (the compiled step keeps no "
                "autograd graph); use it under torch.no_grad() or for inference"
            )
        elif not self.fixed and self.cfg.norm is not None:
            fused.decline("a user `norm` is applied eagerly (the fused step computes the RMS norm)")
        else:
            fn = fused.build(self.rk, y, adaptive=not self.fixed)
        if fn is None:
            del self.step  # the class's eager step from now on
            return self.step(s, y, h, f0)
        tol = torch.stack(
            [
                torch.as_tensor(x, dtype=self.ydt, device=self.dev).expand(1, self.n)[0]
                for x in (self.cfg.atol, self.cfg.rtol)
            ]
        )
        self._tol = tol
        self.step = self._fused_step
        if self.fixed and self.grid is None:
            self._unroll = self.UNROLL
            self._block = fused.build_block(self.rk, y, self._unroll)
            if self._block is not None:
                self._grid = torch.tensor(
                    [self.s0, float(self.cfg.step_size)], dtype=self.tdt, device=self.dev
                )
        return self._fused_step(s, y, h, f0)

    # grid steps per iteration of the compiled block's loop: with inductor's C++
    # wrapper the iteration costs nothing to share (measured 6.8 / 7.0 / 6.7 µs per
    # rk4 step for 1 / 2 / 4 steps per iteration), and unrolling compiles longer
    UNROLL = 1

    def _block_step(self, s, y, f0) -> _Trial:
        m, self.block_pending = self.block_pending, 0
        node = self._node_now
        out = self.fused.call_block(m, self._unroll, node, self._grid, s, y, f0)
        if out is None:  # did not compile: this block, and all later steps, by single
            self._block = None  # fused steps, to the same nodes
            h_fix = float(self.cfg.step_size)
            for j in range(node + 1, node + m + 1):
                target = self.s0 + j * h_fix
                sh = torch.tensor([s, target - s], dtype=self.tdt, device=self.dev)
                with torch.no_grad():
                    y, _, _, f0 = self.fused.call(sh, y, f0, self._tol)
                s = target
            out = (y, f0, torch.isfinite(y).all())
        y1, f1, finite = out
        self._fused_finite = (y1, bool(finite))
        self._last_m = m
        return _Trial(y1, None, f1, None)

    def _fused_step(self, s, y, h, f0) -> _Trial:
        if self.block_pending:
            trial = self._block_step(s, y, f0)
            if trial is not None:
                return trial
        sh = torch.tensor([s, h], dtype=self.tdt, device=self.dev)
        # one grad mode for every call: dynamo guards on it (another mode recompiles)
        with torch.no_grad():
            out = self.fused.call(sh, y, f0, self._tol)
        if out is None:  # its first call failed to compile: eager from here on
            del self.step
            self._block = None
            return self.step(s, y, h, f0)
        y1, ks, check, f1 = out
        check = check.tolist()  # the step's one host synchronisation
        if self.fixed:
            self._fused_finite = (y1, check[0] == 1.0)
            return _Trial(y1, ks, f1, None)
        return _Trial(y1, ks, f1, None, error=check)

    def error_norms(self, trial: _Trial, y, h):
        if trial.rates is None:
            if isinstance(trial.error, list):  # a fused step: the norms, a list of floats
                return trial.error
            return [float(v) for v in absolute_error_norms(self.cfg, trial, y)]
        abs_y1 = trial.y1.detach().abs()
        trial.abs_y1 = abs_y1
        q = trial.rates / torch.addcmul(self.atol, self.rtol, torch.maximum(self.abs_y, abs_y1))
        norm = self.cfg.norm
        if norm is None:
            return [abs(h) * v / self.root_n for v in torch.linalg.vector_norm(q, dim=1).tolist()]
        return [abs(h) * float(norm(q[e : e + 1])) for e in range(q.shape[0])]

    def finite(self, y1) -> bool:
        last, ok = self._fused_finite
        if y1 is last:
            return ok
        return bool(torch.isfinite(y1).all())

    def emit(self, s, s1, h, y, trial: _Trial, f0, accept, all_accept, t_grad, y_end=None):
        """Write the outputs in ``(s, s1]``; returns ``f(s1, y1)`` if it was needed.
        (``y_end``: events run on the masked backend only.)"""
        f1 = trial.f1
        if not accept:
            return f1
        times, T, snap = self.times, self.T, self.snap
        y1, cursor = trial.y1, self.cursor
        hi = cursor
        while hi < T and times[hi] <= s1 + snap:
            hi += 1
        if f1 is None and (s1 < self.s_end or (self.slopes is not None and hi > cursor)):
            f1 = self.gh(s1, y1)  # also the next step's first stage
        if hi > cursor:
            # only an output on the step's end is y1: one within ``snap`` of it is
            # interpolated (θ a little past 1 where it lies beyond), for ``snap`` grows
            # with |t| — 1.4e-5 at t = 1e9, which rk4 on y' = 1 returned as its error
            at_end = [s1 == times[j] for j in range(cursor, hi)]
            n_interior = at_end.index(True) if True in at_end else len(at_end)
            if n_interior:
                if f1 is None and not self.rk.has_own_interpolant:
                    f1 = self.gh(s1, y1)
                hd = h if h != 0 else 1.0
                theta = [max((times[j] - s) / hd, 0.0) for j in range(cursor, cursor + n_interior)]
                self.outputs.append(self._interpolate(s, y, y1, f0, f1, h, trial.ks, theta))
                if self.slopes is not None:
                    self.slopes.append(self._slope(s, y, y1, f0, f1, h, trial.ks, theta))
            if n_interior < len(at_end):
                self.outputs.append(y1.expand(len(at_end) - n_interior, self.n))
                if self.slopes is not None:
                    self.slopes.append(f1.detach().expand(len(at_end) - n_interior, self.n))
            self.cursor = hi
        return f1

    def interior_outputs(self, s, s1, rows):
        """The outputs strictly inside ``(s, s1)`` (not within ``snap`` of ``s1``) as
        ``(t [1, m], valid [1, m])`` tensors, or ``None``; ``rows``: whether the row
        is to be checked at all (a bool here)."""
        times, j, inner = self.times, self.cursor, []
        while rows and j < self.T and times[j] < s1 - self.snap:
            inner.append(times[j])
            j += 1
        if not inner:
            return None
        t = torch.tensor([inner], dtype=self.tdt, device=self.dev)
        return t, torch.ones_like(t, dtype=torch.bool)

    def _interpolate(self, s, y, y1, f0, f1, h, ks, theta):
        """States ``[m, n]`` at ``s + θh`` for the list ``theta``."""
        rk = self.rk
        if not (rk.implicit or getattr(rk, "has_state", False)):
            return rk.interpolate_one(self.gh, s, y, y1, f0, f1, h, ks, theta)
        # an implicit or multistep method's stages are in the masked layout ([S, 1, n])
        st = torch.tensor([s, h], dtype=self.tdt, device=self.dev)
        if rk.has_own_interpolant:
            ks = rk.extra_stages(self.g, st[:1], y, st[1:], ks)
        th = torch.tensor([theta], dtype=self.tdt, device=self.dev)
        return rk.interpolate(th, y, y1, f0, f1, st[1:], ks)[0]

    def _slope(self, s, y, y1, f0, f1, h, ks, theta):
        """``d/dt`` of the dense output ``[m, n]`` at ``s + θh`` for the list ``theta``."""
        rk = self.rk
        st = torch.tensor([s, h], dtype=self.tdt, device=self.dev)
        if ks.dim() == 2:  # an explicit step's stages in the host layout [S, n]
            ks = ks[:, None]
        if rk.has_own_interpolant:
            ks = rk.extra_stages(self.g, st[:1], y, st[1:], ks)
        th = torch.tensor([theta], dtype=self.tdt, device=self.dev)
        return interpolant_slope(rk, th, y, y1, f0, f1, st[1:], ks)[0]

    def start_slopes(self, f0):
        """Record output slopes from here on (LoopConfig.slopes); ``f0 = f(s0, y0)``."""
        self.slopes = [f0.detach()]

    def commit(self, accept, all_accept, y, f0, trial: _Trial, f1):
        if not accept:
            return y, f0
        if trial.abs_y1 is not None:
            self.abs_y = trial.abs_y1
        return trial.y1, (f1 if f1 is not None else f0)

    def count(self, accept, all_accept):
        m, self._last_m = self._last_m, 1  # a compiled block counts its grid steps
        if accept:
            self.accepted += m
            self._skip += m - 1
        else:
            self.rejected += 1

    def record(self, record, s, y, accept):
        record.append(
            (
                torch.full((1,), s, dtype=self.tdt, device=self.dev),
                y,
                torch.tensor([accept], device=self.dev),
            )
        )

    def steps_taken(self):
        return self.accepted + self.rejected

    def fail(self, code, too_many):
        if code != SUCCESS:
            self.status = code
        elif too_many and self.cursor < self.T:
            self.status = MAX_STEPS

    def result(self, s, h, record) -> LoopResult:
        ys, slopes = torch.cat(self.outputs), None
        if ys.shape[0] < self.T:
            ys = torch.cat([ys, ys.new_full((self.T - ys.shape[0], self.n), math.nan)])
        if self.slopes is not None:
            slopes = torch.cat(self.slopes)
            gap = self.T - slopes.shape[0]
            slopes = torch.cat([slopes, slopes.new_full((gap, self.n), math.nan)])[None]

        def one(v, dtype):
            return torch.tensor([v], dtype=dtype, device=self.dev)

        return LoopResult(
            ys[None],
            one(self.status, torch.long),
            one(s, self.tdt),
            one(self.accepted, torch.long),
            one(self.rejected, torch.long),
            one(h, self.tdt),
            record if record is not None else [],
            slopes=slopes,
        )


class _Masked:
    """``K`` rows as ``[K]`` tensors with masked updates.

    A few host synchronisations per step (whether rows accepted, how many outputs
    fall in the step, whether every row has finished); counting and failure
    bookkeeping cost tensor operations only on steps where some row rejected.
    """

    ops = TensorOps

    def __init__(self, g, s_out, y0, cfg: LoopConfig):
        self.g, self.cfg, self.rk = g, cfg, cfg.rk
        self.s_out = s_out
        self.K, self.T = s_out.shape
        self.n = y0.shape[1]
        dev = self.dev = y0.device
        self.tdt = s_out.dtype
        self.s0, self.s_end = s_out[:, 0], s_out[:, -1]
        eps = torch.finfo(self.tdt).eps
        self.snap = (
            64
            * eps
            * torch.maximum(self.s_end.detach().abs(), self.s0.detach().abs()).clamp_min(1.0)
        )
        self.like = torch.zeros(self.K, dtype=self.tdt, device=dev)
        self.status = torch.zeros(self.K, dtype=torch.long, device=dev)
        self.accepted = torch.zeros(self.K, dtype=torch.long, device=dev)
        self.rejected = torch.zeros(self.K, dtype=torch.long, device=dev)
        self.n_all_accepted = 0
        self.cursor = torch.ones(self.K, dtype=torch.long, device=dev)
        self.done = self.cursor >= self.T
        self.n_done = int(self.done.sum())
        self.outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.y0 = y0
        self.slopes = self.f0 = None  # see start_slopes

    def start_slopes(self, f0):
        """Record output slopes from here on (LoopConfig.slopes); ``f0 = f(s0, y0)``."""
        self.slopes, self.f0 = [], f0.detach()

    def field(self, s, y):
        return self.g(s, y)

    def full(self, value):
        if isinstance(value, torch.Tensor):  # per row (e.g. the step a previous solve proposed)
            return value.detach().to(self.tdt).expand(self.K).clone()
        return torch.full((self.K,), float(value), dtype=self.tdt, device=self.dev)

    def initial_step(self, y, f0):
        cfg = self.cfg
        return initial_step(
            self.g, self.s0, y, f0, self.s_end, self.rk, cfg.rtol, cfg.atol, cfg.norm or rms_norm
        ).detach()

    def node_time(self, node, h_fix):
        grid = self.cfg.grid
        if grid is None:
            return self.s0 + (node + 1).to(self.tdt) * h_fix
        return grid.gather(1, (node + 1).clamp(max=grid.shape[1] - 1)[:, None])[:, 0]

    def running(self) -> bool:
        return self.n_done < self.K

    def freeze(self, h):
        # finished rows take zero steps
        return torch.where(self.done, torch.zeros_like(h), h) if self.n_done else h

    def step(self, s, y, h, f0) -> _Trial:
        out = self.rk.step(self.g, s, y, h, f0)
        return _Trial(
            out.y1,
            out.ks,
            out.f1,
            out.ok,
            error=out.error,
            reports=_Reports.on_clock(out, self.tdt),
        )

    @staticmethod
    def as_rows(s):
        return s

    def step_with_state(self, s, y, h, f0, state):
        """A multistep method's trial: ``(trial, new state, reports)`` (``[K]`` tensors)."""
        out, new = self.rk.step(self.g, s, y, h, f0, state)
        reports = _Reports.on_clock(out, self.tdt)
        trial = _Trial(out.y1, out.ks, out.f1, out.ok, error=out.error, reports=reports)
        return trial, new, reports

    def error_norms(self, trial: _Trial, y, h):
        # the controller's arithmetic in the clock's dtype, as the host backend's Python
        # floats: with a float32 state its factors were rounded to float32, and a solve
        # took other steps once a callback (or a batch) moved it to this backend
        return [_on_clock(e, self.tdt) for e in absolute_error_norms(self.cfg, trial, y)]

    def finite(self, y1):
        return torch.isfinite(y1).all(dim=1)

    def emit(self, s, s1, h, y, trial: _Trial, f0, accept, all_accept, t_grad, y_end=None):
        """Write every output time in ``(s, s1]`` of each accepting row, evaluated at
        once; returns ``f(s1, y1)`` if it was needed.  ``s1`` may end before the trial
        step (a terminal event): ``y_end`` is then the state there."""
        rk, K, n = self.rk, self.K, self.n
        f1, ks, y1 = trial.f1, trial.ks, trial.y1
        y_at_end = y1 if y_end is None else y_end
        cursor = self.cursor
        at_most = self.s_out <= (s1 + self.snap)[:, None]
        cols, valid, t_req, n_in = self._window(at_most, None if all_accept else accept)
        m = 0 if cols is None else cols.shape[1]
        interior = False
        if m > 0:
            at_end = t_req == s1[:, None]  # (only there: see the host's emit)
            interior = bool((valid & ~at_end).any())
        want_slopes = self.slopes is not None and m > 0
        needs_f1 = (interior and not rk.has_own_interpolant) or ((t_grad or want_slopes) and m > 0)
        active = ~self.done
        if f1 is None and (needs_f1 or not bool((s1 >= self.s_end)[active].all())):
            f1 = self.g(s1, y1)  # also the next step's first stage
        if m > 0:
            if (interior or want_slopes) and rk.has_own_interpolant:
                ks = rk.extra_stages(self.g, s, y, h, ks)
            if interior or want_slopes:
                h_div = torch.where(h == 0, torch.ones_like(h), h)
                theta = ((t_req - s[:, None]) / h_div[:, None]).clamp_min(0)
            if want_slopes:
                slopes = interpolant_slope(rk, theta, y, y1, f0, f1, h, ks)
                if y_end is None:  # on the step's end: f(s1, y1) itself
                    slopes = torch.where(at_end[:, :, None], f1.detach()[:, None], slopes)
                self.slopes.append((cols, valid, slopes))
            if interior:
                values = rk.interpolate(theta, y, y1, f0, f1, h, ks)
                values = torch.where(at_end[:, :, None], y_at_end[:, None], values)
            else:
                values = y_at_end[:, None].expand(K, m, n)
            if t_grad:
                # an output on a node is the interpolant at θ = 1: to first order
                # y1 + (t_req − s1)·f1, whose value is y1 exactly
                lag = t_req - s1[:, None]
                lag = (lag - lag.detach()).to(y1.dtype)[:, :, None]
                values = torch.where(at_end[:, :, None], values + lag * f1[:, None], values)
            self.outputs.append((cols, valid, values))
            self.cursor = cursor + n_in
        return f1

    def interior_outputs(self, s, s1, rows):
        """Each row's outputs strictly inside ``(s, s1)`` (not within ``snap`` of
        ``s1``), for the rows ``rows`` [K]: ``(t [K, m], valid [K, m])``, or ``None``."""
        _, valid, t_req, _ = self._window(self.s_out < (s1 - self.snap)[:, None], rows)
        return None if valid is None else (t_req, valid)

    def _window(self, before, rows=None):
        """The outputs from each row's cursor on that ``before`` [K, T] (a bool per
        output time, true on a prefix) admits, on ``rows`` [K] (all when ``None``):
        ``(cols [K, m], valid [K, m], t [K, m], counts [K])``, ``m`` the largest count
        (one host synchronisation), the first three ``None`` when ``m = 0``; ``cols``
        past a row's count are not clamped to ``T − 1`` (``t`` is read clamped)."""
        n_in = (before.sum(dim=1) - self.cursor).clamp_min(0)
        if rows is not None:
            n_in = torch.where(rows, n_in, torch.zeros_like(n_in))
        m = int(n_in.max())
        if m == 0:
            return None, None, None, n_in
        offsets = torch.arange(m, device=self.dev)
        cols = self.cursor[:, None] + offsets  # [K, m]
        t_req = self.s_out.gather(1, cols.clamp(max=self.T - 1))
        return cols, offsets[None, :] < n_in[:, None], t_req, n_in

    def commit(self, accept, all_accept, y, f0, trial: _Trial, f1):
        # Python-level branching when every row agrees keeps rejected (possibly
        # non-finite) trials out of the autograd graph and saves two ops per step
        if all_accept:
            return trial.y1, (f1 if f1 is not None else f0)
        acc2 = accept[:, None]
        y = torch.where(acc2, trial.y1, y)
        if f1 is not None:
            f0 = torch.where(acc2, f1, f0)
        return y, f0

    def count(self, accept, all_accept):
        if all_accept:  # the common case costs no tensor bookkeeping
            self.n_all_accepted += 1
        else:
            self.accepted = self.accepted + accept.long()
            self.rejected = self.rejected + (~self.done & ~accept).long()

    def record(self, record, s, y, accept):
        record.append((s, y, accept))

    def steps_taken(self):
        return self.accepted + self.rejected + self.n_all_accepted

    def fail(self, code, too_many):
        active = ~self.done
        fresh_done = self.cursor >= self.T
        too_many = active & ~fresh_done & too_many
        new = torch.where(code != SUCCESS, code, torch.where(too_many, MAX_STEPS, SUCCESS))
        self.status = torch.where(active & (self.status == SUCCESS), new, self.status)

    def next_stop(self, s, jumps: bool):
        """The next forced boundary after ``s`` per row (``inf`` when none), and the
        time to land on for it (one ulp before a jump)."""
        stops = self.cfg.stops
        idx = (stops <= (s + self.snap)[:, None]).sum(dim=1, keepdim=True)
        nxt = stops.gather(1, idx.clamp(max=stops.shape[1] - 1))[:, 0]
        nxt = torch.where(idx[:, 0] < stops.shape[1], nxt, torch.full_like(nxt, math.inf))
        if not jumps:
            return nxt, nxt
        return nxt, _jump_side(nxt, -math.inf, self.cfg.field_time_dtype)

    def terminate(self, stop):
        self.status = torch.where(stop & (self.status == SUCCESS), TERMINATED, self.status)

    def update_done(self):
        self.done = (self.cursor >= self.T) | (self.status != SUCCESS)
        self.n_done = int(self.done.sum())

    def result(self, s, h, record) -> LoopResult:
        slopes = None
        if self.slopes is not None:
            slopes = _assemble(self.f0, self.slopes, self.K, self.T, self.n)
        return LoopResult(
            _assemble(self.y0, self.outputs, self.K, self.T, self.n),
            self.status,
            s,
            self.accepted + self.n_all_accepted,
            self.rejected,
            h.detach(),
            record if record is not None else [],
            slopes=slopes,
        )


def _clock_step(ops, s, h):
    """The step the clock takes, ``fl(s + h) − s``, where it differs from ``h`` by more
    than ``1e-10·h``: a state moved by ``h`` while the clock moved by another interval
    drifts from it (y' = 1 from t = 1e9: 1e-5 off after 100 with radau_iia5; scipy
    steps by the clock's interval always).  Below that the drift is far under any
    tolerance, and ``h`` stays bit for bit the controller's, whose LU factors a kept
    step reuses."""
    h_clock = (s + h) - s
    return ops.where(abs(h_clock - h) > 1e-10 * abs(h), h_clock, h)


def integrate(g, s_out: torch.Tensor, y0: torch.Tensor, cfg: LoopConfig, *, record=None):
    """:func:`_integrate`, naming the vector field when a later call of it returned
    another dtype or device than its first (checked) one.

    ``g.explain(error)`` (the field wrappers of :meth:`odenet._solve.Prepared.internal_field`)
    tells from the last call whether a torch error of the loop was the field's; it is
    asked only once the error happened, so the calls themselves check nothing.
    ``g.finish()`` raises if the last call's output was off while the solve went
    through (a float32 stage in a float64 solve is promoted silently).
    """
    explain = getattr(g, "explain", None)
    if explain is None:
        return _integrate(g, s_out, y0, cfg, record=record)
    try:
        result = _integrate(g, s_out, y0, cfg, record=record)
    except RuntimeError as e:
        err = None if isinstance(e, OdenetError) else explain(e)
        g.finish(check=False)
        if err is not None:
            raise err from e
        raise
    except BaseException:
        g.finish(check=False)
        raise
    g.finish()
    return result


def _integrate(g, s_out: torch.Tensor, y0: torch.Tensor, cfg: LoopConfig, *, record=None):
    """Integrate ``dy/ds = g(s, y)`` from ``s_out[:, 0]`` through the output times ``s_out``.

    Parameters
    ----------
    g : callable ``(s [K], y [K, n]) -> [K, n]``
        With a ``host(s: float, y)`` attribute, one system runs on the host backend
        (not with events, callbacks, stops, a replay recorder, ``compile=True``'s
        implicit steps, or a multistep method whose trajectory is recorded).
    s_out : [K, T] increasing internal output times per row (``s_out[:, 0]`` is the start).
        On a fixed grid, a ``s_out`` that requires grad carries it through the node
        times (the exact derivative of the discrete solution); adaptive solves take
        the derivative with respect to the times outside the loop.
    y0 : [K, n]
    record : list-like, optional
        If given, ``(s [K], y [K, n], accepted [K])`` is appended after every step,
        for sensitivity methods that checkpoint the forward trajectory.  A recorder
        with an ``on_step(s, h, y, trial, f0, f1, accept)`` method also sees every
        step whole before its commit (the tape replay builds on this).

    Returns
    -------
    LoopResult
    """
    rk = cfg.rk
    K, n = y0.shape
    fixed = cfg.fixed
    t_grad = fixed and s_out.requires_grad and torch.is_grad_enabled()
    if not t_grad:
        s_out = s_out.detach()
    hooks = cfg.events is not None or cfg.stops is not None or cfg.callback is not None
    stateful = getattr(rk, "has_state", False)  # a method with memory (multistep)
    # a multistep method's recorded (checkpointed) trajectory is replayed on the masked
    # backend, whose time arithmetic it must repeat to the ulp: it records there too
    hooks = hooks or hasattr(record, "on_step") or (stateful and record is not None)
    # compile=True's fused steps and blocks on the host backend are explicit ones: an
    # implicit method's fused Newton iterations run on the masked backend
    compiled_implicit = rk.implicit and getattr(g, "fused", None) is not None
    host = K == 1 and not compiled_implicit and hasattr(g, "host") and not t_grad and not hooks
    B = _Host(g, s_out, y0, cfg) if host else _Masked(g, s_out, y0, cfg)
    ops = B.ops
    eps = torch.finfo(s_out.dtype).eps
    s_end, snap = B.s_end, B.snap

    s = B.s0
    y = y0
    f0 = B.field(s, y)
    if cfg.slopes:
        B.start_slopes(f0)
    # implicit stages are attached to the autograd graph only when someone needs it:
    # reverse mode, or forward mode (dual tensors: the attachment's Newton steps are
    # differentiable, and without them only y's pass-through tangent survived)
    rk.track_grad = torch.is_grad_enabled() and (
        f0.requires_grad or t_grad or has_tangent(f0) or has_tangent(y)
    )
    error_order = rk.tableau.error_order
    if fixed:
        h_fix = math.inf if cfg.step_size is None else float(cfg.step_size)
        ctrl = FixedGrid(h_fix)
        h = B.full(h_fix)
        node = 0 if host else torch.zeros(K, dtype=torch.long, device=y0.device)
    else:
        ctrl = cfg.controller
        if cfg.first_step is not None or not B.running():  # nothing to integrate: T = 1
            h = B.full(0.0 if cfg.first_step is None else cfg.first_step)
        else:
            h = B.initial_step(y, f0)
        # a NaN estimate (f NaN at its trial point, a NaN user norm) fails here, before
        # f is ever called at a NaN time
        B.fail(ops.where(ops.isfinite(h), SUCCESS, NON_FINITE_STEP), False)
        if not host:
            B.update_done()
    memory = ctrl.init_memory(ops, B.like)
    # Hairer's stiffness test on an explicit method's accepted steps: a diagnosis only
    stiffness = None if fixed else StiffnessMonitor.of(rk, ops, B.like)
    h_floor = cfg.min_step if cfg.accept_min_step else 0.0
    events, callback = cfg.events, cfg.callback
    on_step = getattr(record, "on_step", None)
    method_state = None
    last_step = getattr(rk, "last_step", None)  # see odenet._stepper.LastStep
    if stateful:
        method_state = cfg.method_state or rk.init_state(B.as_rows(s), y, f0)
    keep_state = getattr(record, "keep_state", None) if stateful else None
    if keep_state is not None:  # a tape keeps the history beside its checkpoints
        keep_state(method_state)
    if events is not None:
        events.start(s, y)
    stop_landing = None
    check_outputs, land = checks_outputs(rk, cfg), None
    # the end of the latest trial whose Newton iteration failed, until reached (see
    # _short_of_newton_failure); None until an implicit step fails so
    newton_end = None

    # rows whose step is zero on a grid with repeated nodes stay put (a checkpoint
    # replay's grid repeats the step ends of the rows that rejected or had finished in
    # an iteration of the forward); see _hold_still_rows.  (Finished rows are frozen to
    # zero steps too, but never accepted.  With gradients in the times, a zero step
    # keeps its derivative with respect to them.)
    grid = cfg.grid
    still_rows = (
        grid is not None
        and not host
        and not t_grad
        and grid.shape[1] > 1
        and bool((grid[:, 1:] == grid[:, :-1]).any())
    )
    n_iter = 0
    while B.running():
        # solve(compile=True), adaptive on the host backend: a
        # compiled block takes the steps that write no output, under this loop's
        # controller and rules, and stops before the first step that needs the loop
        # (a domain check needs every trial step in this loop)
        fusable = host and not fixed and B.fused is not None and record is None
        if fusable and cfg.out_of_domain is None:
            s, y, f0, h, memory = B.fused.advance(
                B, s, y, f0, h, memory, ctrl, error_order, h_floor
            )
            if not B.running():
                break
        # --- the step to try: to the next node (fixed) or as proposed (adaptive) ----
        # (no grad-mode switch: with t_grad grad mode is on, without it the times are
        # detached, so only a fixed grid differentiable in t builds a graph here)
        if fixed:
            target = B.node_time(node, h_fix)
            target = ops.where((s_end - target) <= snap, s_end, target)
            gap = target - s
            # the host's compiled fixed-grid block ends on a node several steps ahead
            to_node = (host and B.block_pending > 0) or h >= gap - snap
            h_try = ops.where(to_node, gap, h)
            s_node = target
        else:
            h_try = h if math.isinf(cfg.max_step) else ops.clip(h, hi=cfg.max_step)
            s_node = s_end
            if cfg.stops is not None:
                stop_next, stop_landing = B.next_stop(s, cfg.jumps)
                s_node = torch.minimum(s_end, stop_landing)
            if newton_end is not None:
                h_try, newton_end = _short_of_newton_failure(
                    B, cfg, s, y, h_try, newton_end, s_node
                )
            to_node = h_try >= (s_node - s) - snap
            h_try = ops.where(to_node, s_node - s, _clock_step(ops, s, h_try))
        h_try = B.freeze(h_try)
        if callback is not None:
            callback("step", s, y, h_try, None)

        trial_state = None
        if stateful:
            trial, trial_state, reports = B.step_with_state(s, y, h_try, f0, method_state)
            # a variable-order method reports the order of its
            # error estimate per row; the controller's exponent follows it
            if reports.error_order is not None:
                error_order = reports.error_order
        else:
            trial = B.step(s, y, h_try, f0)
            reports = trial.reports
        if still_rows:
            trial_state = _hold_still_rows(rk, trial, h_try, y, f0, method_state, trial_state)

        # --- the controller's verdict -----------------------------------------------
        with torch.no_grad():
            h_plain = h_try if host else h_try.detach()
            if fixed:
                finite = B.finite(trial.y1)
                ok = finite if trial.ok is None else finite & trial.ok
                ratio = None
            else:
                ratio = ctrl.error_ratio(ops, B.error_norms(trial, y, h_plain))
                ok = trial.ok
                if cfg.out_of_domain is not None:
                    outside = cfg.out_of_domain(s + h_plain, trial.y1.detach())
                    if host:
                        outside = bool(outside.reshape(-1)[0])
                    # a finite trial outside the domain is rejected as one with an error
                    # ratio of OUTSIDE_RATIO (every controller then takes its smallest
                    # factor, factor_min); a non-finite one keeps its own verdict
                    outside = outside & ops.isfinite(ratio)
                    ratio = ops.where(outside, ops.clip(ratio, lo=OUTSIDE_RATIO), ratio)
                if check_outputs:
                    s1_try = ops.where(to_node, s_node, s + h_plain)
                    ratio, land = _check_outputs(B, cfg, s, h_plain, s1_try, y, trial, f0, ratio)
            accept, h_next, memory = ctrl.judge(
                ops,
                h_plain,
                ratio,
                ok,
                memory,
                error_order,
                h_prev=h,
                to_node=to_node,
                h_floor=h_floor,
                # the step's advice (H3, issue 14): keep h ([K] bool, BDF), a safety
                # scale after slow Newton iterations (BDF, Radau IIA), a new Jacobian is
                # due (Radau IIA), rows whose estimate came from a second filtering, the
                # factor after a predicted Newton failure (Radau IIA)
                hold=reports.hold,
                safety=reports.safety,
                refresh=bool(reports.refresh),
                refiltered=_rows(host, reports.refiltered),
                newton_factor=reports.newton_factor,
            )
            if land is not None:  # retry to end on the output the interpolant missed
                h_next = ops.where(ops.not_(accept) & (land < math.inf), land, h_next)
                land = None
            if not host and B.n_done:
                accept = accept & ~B.done
        if stateful:  # the method's memory moves on with its rows' steps, else rewinds
            if ops.all(accept):
                method_state = trial_state
            elif not host:
                method_state = rk.commit_state(method_state, trial_state, accept)
        all_accept = ops.all(accept)
        if not all_accept and trial.ok is not None and not fixed:
            # looked at only after a rejection: no host sync on the steps all rows accept
            failed = ops.not_(accept) & ops.not_(trial.ok)
            if ops.any(failed):
                s_fail = s + h_plain if host else s.detach() + h_plain
                # the latest failure's end: a step short of the one before ends before it
                previous = -math.inf if newton_end is None else newton_end
                newton_end = ops.where(failed, s_fail, previous)
        if last_step is not None:  # the method keeps its rows' last accepted steps
            last_step.verdict(accept, all_accept)
        any_accept = all_accept or ops.any(accept)
        if stiffness is not None and any_accept:
            stiffness.check(s if host else s.detach(), h_plain, y, trial.ks, accept)
        # an accepted step of the controller's own size below the
        # round-off of its start (scipy's "step size less than spacing between numbers"):
        # past a finite-time blow-up radau_iia5 accepted 1300 steps with s + h == s (y' = y²,
        # h down to 1e-155) before Newton failed; the rows fail with an underflow instead
        stalled = None
        if not fixed and not cfg.accept_min_step and any_accept:
            with torch.no_grad():
                s_plain = s if host else s.detach()
                stalled = accept & ops.not_(to_node)
                stalled = stalled & (h_plain < ctrl.min_step(ops, s_plain, eps, 0.0))
            if not ops.any(stalled):
                stalled = None

        # --- the end of the step, its outputs, the commit ------------------------------
        if callback is not None:
            callback("verdict", s, y, h_try, accept)
        if all_accept:
            s1 = ops.where(to_node, s_node, s + h_try)
        else:
            s1 = ops.where(accept, ops.where(to_node, s_node, s + h_try), s)
        y_end = terminal = None
        if events is not None and any_accept:
            s1, y_end, terminal = _events_in_step(B, events, s, s1, h_try, y, trial, f0, accept)
        if any_accept:
            f1 = B.emit(s, s1, h_try, y, trial, f0, accept, all_accept, t_grad, y_end=y_end)
        else:
            f1 = trial.f1
        if y_end is not None:
            trial.y1 = y_end  # rows stopped by a terminal event end there
        refresh = False
        if stop_landing is not None and cfg.jumps:
            # landed one ulp before a discontinuity: restart one ulp after it, with
            # the field evaluated on the far side
            jumped = accept & to_node & (stop_landing < s_end)
            refresh = bool(jumped.any())
            if refresh:
                after = _jump_side(stop_next, math.inf, cfg.field_time_dtype)
                s_landed = s1
                s1 = torch.where(jumped, after, s1)
                # f1 stays the next first stage of the rows that accepted without jumping
                # (dropping it left them their step's *start* slope: 70·rtol on dopri5)
        if on_step is not None:  # before the commit: the step's start is still y, f0
            on_step(s, h_try, y, trial, f0, f1, accept)
        y, f0 = B.commit(accept, all_accept, y, f0, trial, f1)
        s = s1
        if refresh:
            f0 = torch.where(jumped[:, None], B.field(s, y), f0)
        B.count(accept, all_accept)
        if terminal is not None:
            B.terminate(terminal)
        n_iter += 1
        if record is not None:
            if refresh:
                # the landing before the jump and the restart after it as two step
                # ends: a replay on the recorded ends then evaluates f on the same
                # sides of the discontinuity as this solve did.  The restart is no
                # step (the state and a method's memory stay, f is evaluated anew): a
                # recorder with ``mark_jump`` is told which rows it moves, so that a
                # replay repeats it instead of stepping across the discontinuity
                B.record(record, s_landed, y, accept)
                if keep_state is not None:  # a checkpoint at the landing needs it too
                    keep_state(method_state)
                mark_jump = getattr(record, "mark_jump", None)
                if mark_jump is not None:
                    mark_jump(jumped)
        if refresh and stateful:
            method_state = restart_history(rk, method_state, y, f0, jumped)
        if record is not None:
            B.record(record, s, y, accept)
            if keep_state is not None:
                keep_state(method_state)
        if rk.newton is not None and any_accept:
            rk.newton.state_changed()
        if fixed:
            node = ops.where(accept & to_node, node + 1, node)
        h = h_next

        # --- failures: only after a rejection, or with the step budget used up -------
        if not all_accept or n_iter >= cfg.max_steps or stalled is not None:
            with torch.no_grad():
                if fixed:
                    finite_y = finite
                else:
                    finite_y = B.finite(trial.y1)
                s_plain = s if host else s.detach()
                min_h = ctrl.min_step(ops, s_plain, eps, cfg.min_step)
                # torchdiffeq's min_step (accept_min_step) tries a
                # step proposed at the floor and accepts it if finite: no underflow until a
                # trial at the floor itself is rejected (first_step + min_step raised here)
                if cfg.accept_min_step:
                    tried_floor = h_plain <= h_floor * (1 + 1e-12)
                    min_h = ops.where(tried_floor, min_h, ctrl.min_step(ops, s_plain, eps, 0.0))
                code = ctrl.failure(
                    ops, accept=accept, finite=finite_y, ok=trial.ok, h_next=h, min_h=min_h
                )
                if stalled is not None:  # H5 (issue 14), see above
                    code = ops.where(stalled, STEP_UNDERFLOW, code)
                B.fail(code, B.steps_taken() >= cfg.max_steps)
        if not host:
            B.update_done()

    result = B.result(s, h, record)
    result.method_state = method_state
    if stiffness is not None:
        since, growth = stiffness.since, stiffness.frozen_growth
        result.stiff_since = since if not host else torch.tensor([since], dtype=B.tdt)
        result.frozen_growth = growth if not host else torch.tensor([growth], dtype=B.tdt)
    return result


def _jump_side(s: torch.Tensor, toward: float, field_dtype: torch.dtype) -> torch.Tensor:
    """The clock time next to the jump ``s`` on its ``toward`` side (``±inf``) that stays
    on that side when ``f`` receives it in ``field_dtype``: one ulp of the clock, or one
    ulp of ``field_dtype`` where that is coarser.  With float32 times the clock's
    0.49999999999999994 reached ``f`` as 0.5, the far side of a jump at 0.5: every step
    landing there was rejected (dopri5, rtol 1e-6: 17 rejections and 297 f-evaluations,
    against 8 and 123 with float64 times, `studies/benchmarks/doc_claims.py
    jump_t_float32` on the commit before; torchdiffeq's own test_odeint_jump_t)."""
    near = torch.nextafter(s, torch.full_like(s, toward))
    if field_dtype == s.dtype or not s.dtype.is_floating_point:
        return near
    coarse = s.to(field_dtype)
    coarse = torch.nextafter(coarse, torch.full_like(coarse, toward)).to(s.dtype)
    return torch.minimum(near, coarse) if toward < 0 else torch.maximum(near, coarse)


def _short_of_newton_failure(B, cfg: LoopConfig, s, y, h, s_fail, s_node):
    """The step ``h`` shortened to end at ``s_fail``, the end of a trial whose Newton
    iteration failed, where it would step over it before a node and ``f`` at the same
    state moves by more than a tolerance unit over the step between here and there.
    Returns the step and the failed end kept (``-inf`` once it is decided against).

    A Newton failure says the field at the trial's end is not the one the step started
    in, and nothing else has sampled it: the retries cover part of the span, and the
    controller's growth after them used to carry the next step over its end unseen.
    On KPP's stratosphere (issue 14) a trial into the morning failed, two steps of a
    quarter followed, and the next, tenfold, went from before sunrise to the next
    night: a day never evaluated, status ok, 593·rtol off (ndf at 1e-4).  Landing on
    the failed trial's end puts a stage there (an implicit step's last stage is its
    end), and what that step sees decides the next.

    Only a forcing can hide that way: where ``f`` has no explicit time dependence
    between here and there, the state that made Newton fail is the one a longer step's
    own Newton iteration must pass through, and its estimate sees it.  Two evaluations
    of ``f`` at this state, here and at ``s_fail``, tell the cases apart, once per
    failure; DETEST F5's Newton-limited DIRK steps (autonomous, a failure every few
    steps) cost threefold where every failure was landed on, and a ceiling on the step
    size after one fourfold (``stiff_holdout15_results.md``)."""
    ops, snap = B.ops, B.snap
    host = isinstance(s, float)
    s_here = s if host else s.detach()
    ahead = s_fail - s_here
    crossing = (ahead > snap) & (s_fail < s_node - snap) & (h > ahead)
    if not ops.any(crossing):
        return h, s_fail
    with torch.no_grad():
        y_here = y.detach()
        f_there = B.field(ops.where(crossing, s_fail, s_here), y_here)
        f_here = B.field(s_here, y_here)
        scale = tolerance_unit(cfg.atol, cfg.rtol, y_here, y_here)
        moved = (cfg.norm or rms_norm)((f_there - f_here) / scale)
        moved = float(moved[0]) if host else moved.to(ahead.dtype)
        moved = crossing & (abs(h) * moved > 1.0)
    return ops.where(moved, ahead, h), ops.where(crossing & ops.not_(moved), -math.inf, s_fail)


def _hold_still_rows(rk, trial: _Trial, h, y, f0, state, trial_state):
    """Rows whose trial step is zero stay where they are: ``y1 = y``, ``f1 = f0`` and a
    method with memory keeps its ``state``.  Returns the trial state to commit.

    The methods' own results for ``h = 0`` are not that: a stiffly accurate DIRK
    returns ``f1 = (Z − base)/(h·a_ii) = 0``, which the row's next step took as its
    first stage; BDF, NDF and Adams step a frozen row by their history's spacing (a
    trial meant to be discarded).  A checkpoint replay of a per-sample adaptive solve
    has such rows in every iteration in which some rows moved and others rejected or
    had finished (its grid repeats their step ends), and accepts them: its gradients
    were 1–5 % off the direct ones (kvaerno5, bdf on Van der Pol μ = 10, two rows)."""
    still = h == 0  # selected without asking whether any row is still: no host sync per step
    trial.y1 = torch.where(still[:, None], y, trial.y1)
    if trial.f1 is not None:
        trial.f1 = torch.where(still[:, None], f0, trial.f1)
    if trial_state is not None:
        trial_state = rk.commit_state(state, trial_state, ~still)
    return trial_state


def restart_history(rk, state, y, f0, rows):
    """A method with memory restarts at order 1 on ``rows`` [K], from ``y`` and
    ``f0 = f(s, y)`` on the far side of a discontinuity of the field (``jump_t``):
    its differences spanned the jump (without the restart, at 557c09a, adams ended
    30·rtol off at rtol 1e-8 and bdf took 208 steps for 182; with it 0.02·rtol:
    studies/benchmarks/jump_multistep.py), as CVODE and LSODA are restarted there."""
    return rk.commit_state(state, rk.restart_state(state, y, f0), rows)


def _rows(host: bool, mask):
    """A method's ``[K]`` report as the backend's number type (a bool on the host)."""
    return bool(mask) if host and mask is not None else mask


def _check_outputs(B, cfg: LoopConfig, s, h, s1, y, trial: _Trial, f0, ratio):
    """The error ratio of a trial implicit step with its interpolant's error folded in
    at the outputs and event crossings inside it (:mod:`odenet._dense_check`), and the
    step to retry with where that error rejects it: ``(ratio, land)``; ``land`` is
    ``None`` when nothing was checked, else ``inf`` on rows that keep their verdict."""
    ops, rk, events = B.ops, cfg.rk, cfg.events
    host = ops is HostOps
    passing = (ratio <= 1) & trial.ok  # only a step about to be accepted is checked
    found = B.interior_outputs(s, s1, passing)
    if found is None and events is None:
        return ratio, None
    if host:
        st = torch.tensor([s, h], dtype=B.tdt, device=B.dev)
        s_t, h_t = st[:1], st[1:]
    else:
        s_t, h_t = s, h
    # (computed under no_grad: kept out of the trial, whose f1 and stages the emit and
    # the events use with their graphs)
    f1 = trial.f1
    if f1 is None and not rk.has_own_interpolant:
        f1 = B.g(s_t + h_t, trial.y1)
    ks = rk.extra_stages(B.g, s_t, y, h_t, trial.ks)
    points = [] if found is None else [pick(*found)]
    if events is not None and bool(passing.any()):  # (events run on the masked backend)
        # an event located on the interpolant is as far off as the interpolant is there
        def state_at(theta):
            return rk.interpolate(theta, y, trial.y1, f0, f1, h_t, ks)

        t_ev = events.crossing_times(s, s1, passing, state_at, trial.y1)
        if t_ev is not None:
            inside = torch.isfinite(t_ev) & (t_ev > s[:, None]) & (t_ev < (s1 - B.snap)[:, None])
            points.append((torch.where(inside, t_ev, s1[:, None]), inside))
    if not points:
        return ratio, None
    t_req = torch.cat([p[0] for p in points], dim=1)
    valid = torch.cat([p[1] for p in points], dim=1)
    norm = cfg.norm or rms_norm
    r = output_errors(
        rk, B.g, s_t, h_t, y, trial.y1, f0, f1, ks, t_req, valid, cfg.atol, cfg.rtol, norm
    )
    worst, land = landing(t_req, r, s_t)
    fails = worst > 1
    if host:
        return (float(worst[0]), float(land[0])) if bool(fails[0]) else (ratio, math.inf)
    return torch.where(fails, worst, ratio), torch.where(fails, land, torch.inf)


def _events_in_step(B, events, s, s1, h, y, trial: _Trial, f0, accept):
    """Crossings in the accepted step ``(s, s1]``; returns ``(s1, y_end, terminal)``
    with ``s1`` and ``y_end`` cut at a terminal crossing (``None`` when none)."""
    rk = B.rk
    if trial.f1 is None:
        trial.f1 = B.field(s1, trial.y1)
    extended = []
    # the extra stages are computed once, on the first call, and kept for the state at
    # the crossing too, with its graph: the first call comes from the crossing search,
    # which samples the interpolant under no_grad (dop853's event-time gradients were
    # 30 % off, the interpolant's weights seen as constants)
    grad = torch.is_grad_enabled()

    def state_at(theta):  # accepted rows step by h: s1 = s + h
        if not extended:  # a method's own interpolant's extra stages, once a crossing asks
            if rk.has_own_interpolant:
                with torch.set_grad_enabled(grad):
                    trial.ks = rk.extra_stages(B.g, s, y, h, trial.ks)
            extended.append(True)
        return rk.interpolate(theta, y, trial.y1, f0, trial.f1, h, trial.ks)

    # the event functions at the step's end see its state itself
    theta, y_stop, stop = events.step(s, s1, accept, state_at, y1=trial.y1)
    if y_stop is None or not bool(stop.any()):
        return s1, None, None
    s1 = torch.where(stop, s + theta.to(s.dtype) * (s1 - s), s1)
    return s1, torch.where(stop[:, None], y_stop, trial.y1), stop


def _assemble(y0, outputs, K, T, n) -> torch.Tensor:
    """Outputs in the order recorded -> ``[K, T, n]`` (NaN where never written)."""
    if K == 1 and sum(v.shape[1] for _, _, v in outputs) == T - 1:
        return torch.cat([y0[:, None]] + [v for _, _, v in outputs], dim=1)
    ys = torch.full((K, T, n), math.nan, dtype=y0.dtype, device=y0.device)
    ys[:, 0] = y0
    for cols, valid, values in outputs:
        rows, j = valid.nonzero(as_tuple=True)
        ys[rows, cols[rows, j]] = values[rows, j]
    return ys
