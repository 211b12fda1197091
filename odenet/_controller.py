"""Step-size controllers: they alone decide acceptance, the next step and failure.

The error ratio ``r`` of a step is the RMS norm of ``err / (atol + rtol·max(|y0|, |y1|))``
(one number per independent system).  A step is accepted when ``r ≤ 1`` and its
stage equations were solved.  Each rule is written once against
:mod:`odenet._ops`, so it runs on Python floats (one system) and on ``[K]`` tensors
(independent rows) alike.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import torch

from odenet._errors import InputError
from odenet._ops import HostOps
from odenet._solution import (
    NEWTON_FAILED,
    NON_FINITE,
    NON_FINITE_STEP,
    STEP_UNDERFLOW,
    SUCCESS,
)

_TINY = sys.float_info.min


def _exponent_base(error_order, r):
    """``k = q + 1`` of the exponents ``−β/k`` for an estimate of order ``q`` (an int,
    or per row ``[K]`` for a variable-order method), in the dtype of the ratio ``r``:
    a float divided by an integer tensor is torch's default float32, whose
    ``−0.35 ≈ −0.34999999404`` moved every step size by ~3e-8."""
    k = error_order + 1
    return k.to(r.dtype) if isinstance(k, torch.Tensor) else k


@dataclass(frozen=True)
class PIDController:
    """Söderlind's PID step-size controller.

    ``h_new = h · safety · r_n^(−β1/k) · r_{n−1}^(−β2/k) · r_{n−2}^(−β3/k)`` with
    ``β1 = p + i + d``, ``β2 = −(p + 2d)``, ``β3 = d`` and ``k = q + 1`` (``q`` the
    order of the error estimate), clipped to ``[factor_min, factor_max]``; after a
    rejection the step never grows.

    ``pcoeff = dcoeff = 0, icoeff = 1`` is the classical I controller (the default),
    ``PIDController.PI()`` a PI controller (Gustafsson), ``PIDController.PID()``
    Söderlind's H312 filter.

    ``observed_order > 0`` adds one rule for a second rejection in a row: the step
    shrinks by the order ``k̂`` the two rejected trials show (``r ∝ h^k̂``, clipped to
    ``[observed_order, k]``) where that is below ``k``, as across a jump in ``f``, where
    the error falls like ``h^0.5 … h^2`` and ``r^(−1/k)`` creeps up to it.  It is off
    here by default (measured neutral for explicit, DIRK and BDF steps) and on in
    :class:`PredictiveController`.

    References: Söderlind, ACM TOMS 29 (2003); Hairer & Wanner II, Sec. IV.2.
    """

    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    # after a Newton failure (Hairer's codes use 0.5 in RADAU5, 0.25 in SDIRK4)
    newton_factor: float = 0.25
    # the smallest observed order a second rejection shrinks by; 0: the rule is off
    # (the default here: measured neutral for explicit RK, DIRK and BDF steps across a
    # jump, ±2 % nfe; on for the predictive controller below)
    observed_order: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.safety <= 1:
            raise InputError(f"`safety` must be in (0, 1], got {self.safety}.")
        if not 0 < self.factor_min < 1 < self.factor_max:
            raise InputError(
                "`factor_min` must be in (0, 1) and `factor_max` > 1, got "
                f"factor_min={self.factor_min}, factor_max={self.factor_max}."
            )
        if not 0 < self.newton_factor < 1:
            raise InputError(
                f"`newton_factor` must be in (0, 1) (the step is shrunk by it after a "
                f"Newton failure), got {self.newton_factor}."
            )

    @classmethod
    def I(cls, **kw) -> PIDController:
        return cls(0.0, 1.0, 0.0, **kw)

    @classmethod
    def PI(cls, **kw) -> PIDController:
        return cls(0.4, 0.3, 0.0, **kw)

    @classmethod
    def PID(cls, **kw) -> PIDController:
        return cls(1 / 18, 1 / 9, 1 / 18, **kw)

    def init_memory(self, ops, like):
        """``(r_{n−1}, r_{n−2}, rejected, h_rej, r_rej)``: floats and a bool, or ``[K]``
        tensors (``h_rej, r_rej``: :meth:`_rejection_record`)."""
        rejected = False if like is None else torch.zeros_like(like, dtype=torch.bool)
        r1, r2, h_rej, r_rej = (ops.full(v, like) for v in (1.0, 1.0, 1.0, 0.0))
        return r1, r2, rejected, h_rej, r_rej

    @functools.cached_property
    def betas(self) -> tuple[float, float, float]:
        """``(β1, β2, β3)``: exponents (times ``−1/k``) of ``r_n, r_{n−1}, r_{n−2}``."""
        return (
            self.pcoeff + self.icoeff + self.dcoeff,
            -(self.pcoeff + 2 * self.dcoeff),
            self.dcoeff,
        )

    @staticmethod
    def error_ratio(ops, norms):
        """The step's error ratio ``r`` from the norms of its scaled estimates.

        One estimate: its norm.  Two (DOP853's 5th- and 3rd-order ones): Hairer's
        combination ``r5² / √(r5² + 0.01 r3²)``.  NaN/inf pass through: a non-finite
        trial is rejected by :meth:`judge`.
        """
        if len(norms) == 1:
            return norms[0]
        r5, r3 = norms[0] * norms[0], norms[1] * norms[1]
        return r5 / ops.clip(ops.sqrt(r5 + 0.01 * r3), lo=_TINY)

    def judge(
        self,
        ops,
        h,
        ratio,
        ok,
        memory,
        error_order: int,
        *,
        h_floor=0.0,
        hold=None,
        safety=None,
        newton_factor=None,
        **_,
    ):
        """Accept or reject a trial step of size ``h``; propose the next step.

        Parameters
        ----------
        ops : :class:`odenet._ops.HostOps` or :class:`odenet._ops.TensorOps`
        h : the step tried (float or ``[K]``).
        ratio : its error ratio (NaN/inf for a non-finite trial).
        ok : whether the stage equations were solved (``None``: explicit, always).
        memory : the controller's ``(r_{n−1}, r_{n−2}, rejected)``.
        error_order : order ``q`` of the error estimate (exponents use ``k = q + 1``).
        h_floor : float
            With ``h_floor > 0`` (torchdiffeq's ``min_step``) no step is proposed below
            it, and a finite, solved step of that size is accepted whatever its error.
        hold : bool or ``[K]`` bool, optional
            The method asks to keep ``h`` after this step if it is accepted (a
            multistep method between step-size changes; see :meth:`_limit`).
        safety : float, optional
            A scale of ``safety`` after slow Newton iterations (see :meth:`_safety`).
        newton_factor : float or ``[K]``, optional
            The method's factor for a step whose Newton iteration failed, where it
            has one (Radau IIA after a predicted failure: see
            :func:`odenet._radau.newton_shrink`); NaN or None: ``newton_factor``.

        Returns
        -------
        (accept, h_next, memory)
            A Newton failure shrinks the step by ``newton_factor``, a non-finite trial
            by ``factor_min``, any other rejection by the controller's own factor
            (``< 1`` since ``r > 1``): a rejected step is never retried unchanged.
        """
        finite, accept, r = self._verdict(ops, ratio, ok)
        k = _exponent_base(error_order, r)
        b1, b2, b3 = self.betas
        r1, r2, rejected, *rejection = memory
        safety = self._safety(safety)
        factor = safety * r ** (-b1 / k)
        if b2 != 0:
            factor = factor * r1 ** (-b2 / k)
        if b3 != 0:
            factor = factor * r2 ** (-b3 / k)
        factor = self._observed_shrink(ops, factor, h, r, accept, finite, ok, rejection, k, safety)
        factor = ops.clip(factor, self.factor_min, self.factor_max)
        accept, h_next = self._limit(
            ops, h, factor, accept, finite, ok, rejected, h_floor, hold, newton_factor
        )
        memory = (
            ops.where(accept, r, r1),
            ops.where(accept, r1, r2),
            ops.not_(accept),
            *self._rejection_record(ops, h, r, accept, finite, ok),
        )
        return accept, h_next, memory

    def _safety(self, scale):
        """``safety``, times the method's ``scale`` in (0, 1] where it reports one (an
        implicit method after a slow Newton iteration: Hairer's RADAU5 and scipy's BDF
        and Radau take ``safety·(2M + 1)/(2M + n)`` after ``n`` of at most ``M``
        iterations, so the step does not grow towards Newton's divergence)."""
        return self.safety if scale is None else self.safety * scale

    @staticmethod
    def _verdict(ops, ratio, ok):
        """``(finite, accept, r)``: a finite ratio ≤ 1 with solved stages is accepted;
        ``r`` is the ratio made safe for powers (1 where non-finite, ≥ tiny)."""
        finite = ops.isfinite(ratio)
        accept = finite & (ratio <= 1)
        if ok is not None:
            accept = accept & ok
        return finite, accept, ops.clip(ops.where(finite, ratio, 1.0), lo=_TINY)

    def _limit(self, ops, h, factor, accept, finite, ok, rejected, h_floor, hold=None, newton=None):
        """The rules every controller keeps, applied to its proposed ``factor``:
        right after a rejection the step does not grow (Hairer's codes: otherwise a
        step that just failed at a discontinuity is retried 10× larger and fails
        again); a rejection shrinks by at least ``safety``, a non-finite trial by
        ``factor_min``, a Newton failure by ``newton_factor`` or by the method's own
        factor ``newton`` where it gives one (finite); ``h_floor`` (torchdiffeq's
        ``min_step``) accepts a finite, solved step of that size and proposes none
        below it.  An accepted step whose method asked to ``hold`` keeps ``h``
        exactly: a variable-step BDF holds it for ``k + 1`` steps after each change
        (scipy's ``BDF``, ode15s), which keeps its LU factors and makes its order
        choice compare estimates on equal steps; a step too large for the held size
        is rejected and shrunk as any other.  Returns ``(accept, h_next)``."""
        # the host backend skips the selects of the common case (accepted after accepted)
        if not (ops is HostOps and accept and not rejected):
            factor = ops.where(accept & ops.not_(rejected), factor, ops.clip(factor, hi=1.0))
            factor = ops.where(accept, factor, ops.clip(factor, hi=self.safety))
            factor = ops.where(finite, factor, self.factor_min)
            if ok is not None:
                factor = ops.where(ok, factor, self._newton_factor(ops, newton))
        if hold is not None:
            factor = ops.where(accept & hold, ops.full(1.0, factor), factor)
        h_next = h * factor
        if h_floor > 0:
            # a non-finite trial is still rejected; at the floor that is a failure
            at_floor = finite & (h <= h_floor * (1 + 1e-12))
            if ok is not None:
                at_floor = at_floor & ok
            accept = accept | at_floor
            h_next = ops.clip(h_next, lo=h_floor)
        return accept, h_next

    def _newton_factor(self, ops, advice):
        """The factor after a Newton failure: the method's ``advice`` where it is finite
        (a float or ``[K]``), ``newton_factor`` elsewhere."""
        if advice is None:
            return self.newton_factor
        own = ops.full(self.newton_factor, advice)
        return ops.where(ops.isfinite(advice), advice, own)

    def _observed_shrink(self, ops, factor, h, r, accept, finite, ok, rejection, k, safety):
        """After a second rejection for error at the same time, shrink by the order the
        two ratios show, ``r ∝ h^k̂`` with ``k̂ = log(r_rej/r) / log(h_rej/h)`` (clipped to
        ``[observed_order, k]``), where it is below the asymptotic ``k``: across a
        discontinuity the error falls like ``h^0.5 … h^2``, and ``r^(−1/k)`` alone
        creeps up to it in many rejections.  ``rejection = (h_rej, r_rej)`` is the
        previous trial's record (:meth:`_rejection_record`)."""
        if not self.observed_order:
            return factor
        h_rej, r_rej = rejection
        again = self._error_rejected(ops, accept, finite, ok) & (r_rej > 1.0)
        if ops is HostOps and not again:
            return factor
        r_prev = ops.where(again, r_rej, ops.full(2.0, r))
        h_prev = ops.where(again, h_rej, 2.0 * h)
        k_obs = ops.log(r_prev / r) / ops.clip(ops.log(h_prev / h), lo=1e-12)
        # (k is a [K] tensor for a variable-order method: clip takes no tensor bound)
        k_obs = ops.minimum(ops.maximum(k_obs, self.observed_order), k)
        shrink = safety * r ** (-1.0 / k_obs)
        return ops.where(again, ops.minimum(factor, shrink), factor)

    @staticmethod
    def _error_rejected(ops, accept, finite, ok):
        """A trial rejected for its error (finite, stages solved, ratio above 1)."""
        rejected = ops.not_(accept) & finite
        return rejected if ok is None else rejected & ok

    @classmethod
    def _rejection_record(cls, ops, h, r, accept, finite, ok):
        """``(h, r)`` of a trial rejected for its error; ``r = 0`` for any other."""
        return h, ops.where(cls._error_rejected(ops, accept, finite, ok), r, ops.full(0.0, r))

    def min_step(self, ops, s, eps: float, min_step: float):
        """The smallest step before underflow at time ``s``: round-off or ``min_step``."""
        return ops.clip(16 * eps * abs(s), lo=min_step)

    @staticmethod
    def failure(ops, *, accept, finite, ok, h_next, min_h):
        """The status of rows whose step failed for good: a rejected step whose next
        size is below ``min_h`` (why: non-finite state, Newton, or plain underflow),
        or a non-finite next step size; ``SUCCESS`` elsewhere."""
        why = STEP_UNDERFLOW if ok is None else ops.where(ok, STEP_UNDERFLOW, NEWTON_FAILED)
        code = ops.where(finite, why, NON_FINITE)
        code = ops.where(ops.not_(accept) & (h_next <= min_h), code, SUCCESS)
        return ops.where(ops.isfinite(h_next), code, NON_FINITE_STEP)


@dataclass(frozen=True)
class PredictiveController(PIDController):
    """Gustafsson's predictive controller, as Hairer's RADAU5 uses it.

    After an accepted step the next factor is the smaller of the classical one,
    ``safety · r_n^(−1/k)``, and the predictive one,
    ``safety · (h_n / h_acc) · (r_acc / r_n²)^(1/k)`` (``h_acc, r_acc`` the previous
    accepted step and its ratio, ``r_acc ≥ 10⁻²``), which anticipates a shrinking
    error and avoids the rejections the classical rule makes on stiff problems.  A
    factor in ``[1, keep_max]`` keeps the step unchanged, so an implicit method can
    reuse its LU factors.  The rules common to every controller (rejections shrink,
    Newton failures by ``newton_factor``, no growth right after a rejection) hold.
    A step whose method reports its estimate ``refiltered`` (radau_iia5's second
    filtering after a rejection, often near zero) is not used for the prediction:
    the step after it takes the classical factor.  A second rejection in a row shrinks
    by the observed order (``observed_order``, see :class:`PIDController`).

    scipy's ``Radau`` differs in five rules (growth cap 10, keep ``h`` for every factor
    below 1.2, the predictive factor on rejections too, its ``h_old`` and ``r_acc``, growth
    right after a rejection); switching them in was measured against scipy on the stiff
    grid and hold-out problems and not adopted (``studies/benchmarks/stiff_results.md``,
    ``radau_trace.py controllers``).

    References: Gustafsson, ACM TOMS 20 (1994); Hairer & Wanner II, Sec. IV.8 (8.25).
    """

    factor_max: float = 8.0
    newton_factor: float = 0.5
    keep_max: float = 1.2
    # radau_iia5 across a jump in the forcing, 25 positions: nfe −17 % at rtol 1e-3,
    # −1 % at 1e-6 (see _observed_shrink)
    observed_order: float = 0.5

    def init_memory(self, ops, like):
        """``(h_acc, r_acc, accepted_before, rejected, h_rej, r_rej)``."""
        if like is None:
            return 1.0, 1.0, False, False, 1.0, 0.0
        zeros = torch.zeros_like(like, dtype=torch.bool)
        ones = torch.ones_like(like)
        return ones, ones.clone(), zeros, zeros.clone(), ones.clone(), torch.zeros_like(like)

    def judge(
        self,
        ops,
        h,
        ratio,
        ok,
        memory,
        error_order: int,
        *,
        h_floor=0.0,
        hold=None,
        safety=None,
        refresh=False,
        refiltered=None,
        newton_factor=None,
        **_,
    ):
        finite, accept, r = self._verdict(ops, ratio, ok)
        k = _exponent_base(error_order, r)
        h_acc, r_acc, before, rejected, *rejection = memory
        safety = self._safety(safety)
        factor = safety * r ** (-1.0 / k)
        factor = self._observed_shrink(ops, factor, h, r, accept, finite, ok, rejection, k, safety)
        # r² underflows to 0 for r < 1e-154 (a float division by zero on the host)
        predicted = safety * (h / h_acc) * (r_acc / ops.clip(r * r, lo=_TINY)) ** (1.0 / k)
        factor = ops.where(accept & before, ops.minimum(factor, predicted), factor)
        factor = ops.clip(factor, self.factor_min, self.factor_max)
        # as scipy's Radau, h is not kept when the method's Jacobian is
        # due (``refresh``, a bool): the LU is refactorised anyway, so keeping h saves
        # nothing.  2-D Brusselator N = 32, radau_iia5: nfe 262 -> 253 at rtol 1e-3
        # (scipy 216), 968 -> 990 at 1e-6 (scipy 890)
        keep = accept & (factor >= 1.0) & (factor <= self.keep_max) & (not refresh)
        factor = ops.where(keep, ops.full(1.0, factor), factor)
        accept, h_next = self._limit(
            ops, h, factor, accept, finite, ok, rejected, h_floor, hold, newton_factor
        )
        before = before | accept
        if refiltered is not None:
            # an accepted estimate from Radau's second filtering is not one the next
            # step's estimate can be compared with: the next factor is the classical one
            before = before & ops.not_(accept & refiltered)
        memory = (
            ops.where(accept, h, h_acc),
            ops.where(accept, ops.clip(r, lo=1e-2), r_acc),
            before,
            ops.not_(accept),
            *self._rejection_record(ops, h, r, accept, finite, ok),
        )
        return accept, h_next, memory


@dataclass(frozen=True)
class FixedGrid:
    """The controller of a fixed grid: every step that is finite and solved is
    accepted.  A failed step (non-finite, or Newton not converged) is halved and the
    step grows back towards the nominal one; a non-finite state is final — on a
    fixed grid it means the step lies outside the stability region."""

    h_fix: float

    def init_memory(self, ops, like):
        return ()

    def judge(self, ops, h, ratio, ok, memory, error_order: int, *, h_prev, to_node, **_):
        accept = ok
        h_next = ops.where(
            accept & to_node,
            ops.full(self.h_fix, h),
            ops.where(accept, ops.minimum(2 * h_prev, self.h_fix), h / 2),
        )
        return accept, h_next, memory

    def min_step(self, ops, s, eps: float, min_step: float):
        return 16 * eps * ops.clip(abs(s), lo=1.0)

    @staticmethod
    def failure(ops, *, accept, finite, ok, h_next, min_h):
        code = ops.where(finite, NEWTON_FAILED, NON_FINITE)
        return ops.where(ops.not_(finite) | (h_next < min_h), code, SUCCESS)


def controller_from(spec) -> PIDController:
    """Accept a controller object or one of the names ``"I"``, ``"PI"``, ``"PID"``,
    ``"predictive"`` (Gustafsson's, as in RADAU5)."""
    if isinstance(spec, PIDController):
        return spec
    if isinstance(spec, str) and spec.upper() in ("I", "PI", "PID"):
        return getattr(PIDController, spec.upper())()
    if isinstance(spec, str) and spec.lower() in ("predictive", "gustafsson"):
        return PredictiveController()
    raise InputError(
        "`controller` must be 'I', 'PI', 'PID', 'predictive' or an odenet.PIDController, "
        f"got {spec!r}."
    )
