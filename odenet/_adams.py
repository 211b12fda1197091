"""torchdiffeq's Adams methods (``explicit_adams``, ``implicit_adams``, ``fixed_adams``).

``METHODS`` maps each name to its method object (the protocol of
:class:`odenet._multistep.LinearMultistep`); :func:`odenet._registry.registered`
collects it.

The methods are torchdiffeq's ``AdamsBashforth`` / ``AdamsBashforthMoulton``
(``torchdiffeq/_impl/fixed_adams.py``), run by the one loop on a fixed grid:

* every step first adds ``f(t_n, y_n)`` to a history of at most ``max_order − 1``
  past slopes (the oldest drops out);
* while fewer than three slopes are known the step is Kutta's 3/8 rule (torchdiffeq's
  ``rk4``); so is every step when ``max_order < 4``;
* then with ``k`` slopes the predictor is the ``k``-step Adams–Bashforth formula
  (order ``k``); ``implicit_adams`` corrects it with the ``k``-step Adams–Moulton
  formula (order ``k + 1``) by functional iteration, ``y_{n+1} = y_n + h c_0
  f(t_{n+1}, y_{n+1}) + h Σ_{j≥1} c_j f_{n+1−j}``, at most ``max_iters`` times, until
  two successive increments agree to ``atol + rtol·max(|Δ|, |Δ'|)`` (max norm);
  if they never do, a ``RuntimeWarning`` says so, the last iterate is kept and the
  order does not rise at the next step (torchdiffeq drops its oldest slope);
* so the order ramps up with the history to ``max_order`` (``implicit_adams``) or
  ``max_order − 1`` (``explicit_adams``).

Where odenet differs: on a grid whose steps are not all equal (``t`` itself as the
grid, a shortened last step, a ``grid_constructor``) torchdiffeq still uses the
equal-step coefficients, which makes the method inconsistent there (first order at
best); odenet integrates the interpolation polynomial through the actual past times,
so the order holds on any grid.  On an equal-step grid both are the same formula:
odenet's coefficients are then the exact rational ones of
:func:`odenet._multistep.adams_bashforth` / :func:`~odenet._multistep.adams_moulton`
plus the variation of the variable-step formula, which is zero there.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from odenet._errors import InputError, StabilityWarning, warn_user
from odenet._multistep import (
    GAUSS_POINTS,
    MultistepRuntime,
    adams_bashforth,
    adams_moulton,
    lagrange_integrals,
)
from odenet._stepper import RungeKutta, StepResult
from odenet.tableaus import tableau as _tableau

MAX_ORDER = 12  # torchdiffeq's cap (and the Gauss rule below is exact up to it)
_MIN_ORDER = 4  # below it every step is the 3/8 rule, as in torchdiffeq
_ADAMS_FROM = _MIN_ORDER - 1  # past slopes needed before an Adams step
# the variable-step coefficients' Gauss rule (odenet._multistep) integrates the
# Lagrange polynomials of degree ≤ MAX_ORDER exactly
assert MAX_ORDER <= 2 * GAUSS_POINTS - 1
# explicit_adams' spurious growth check: the last term of the order-k formula (the
# order-k increment less the order-(k-1) one) against |y| + |h f|.  On a solve that
# is accurate it is the local error estimate of order k-1 (≤ 2e-3 on runs accurate to
# 1e-3); once h·λ leaves the high-order formula's small stability region it is of the
# size of the state (0.04 … 140), so 1e-2 separates the two: the warning comes with
# every end error above 0.0042 and none below 0.0089
# (studies/benchmarks/doc_claims.py explicit_adams_growth).
_SPURIOUS_GROWTH = 1e-2
_CHECK_EVERY = 4  # steps between the host syncs of that check


@functools.cache
def _tables(m: int):
    """Per number of past slopes ``k`` (row ``k``): the exact AB and AM coefficients
    (float64, zero-padded) and the same from :func:`lagrange_integrals` on the equal
    nodes ``0, −1, −2, …`` (subtracted again so that equal steps give the exact ones)."""
    ab = np.zeros((m + 1, m))
    am = np.zeros((m + 1, m + 1))
    for k in range(1, m + 1):
        ab[k, :k] = [float(c) for c in adams_bashforth(k)]
        am[k, : k + 1] = [float(c) for c in adams_moulton(k)]
    ks = torch.arange(m + 1)
    x = -torch.arange(m, dtype=torch.float64)
    ab_num = lagrange_integrals(x.expand(m + 1, m), torch.arange(m)[None, :] < ks[:, None]).numpy()
    z = torch.cat([torch.ones(1, dtype=torch.float64), x])
    am_num = lagrange_integrals(
        z.expand(m + 1, m + 1), torch.arange(m + 1)[None, :] < (ks + 1)[:, None]
    ).numpy()
    return ab, ab_num, am, am_num


def _check_tol(name, v):
    if isinstance(v, torch.Tensor):
        if v.requires_grad:
            raise InputError(f"`{name}` cannot require gradient.")
        if not v.is_floating_point() or bool((v < 0).any()) or not bool(v.isfinite().all()):
            raise InputError(f"`{name}` must hold finite numbers >= 0, got {v!r}.")
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0 <= v < math.inf):
        raise InputError(f"`{name}` must be a finite number >= 0, got {v!r}.")
    return float(v)


@dataclass(frozen=True, eq=False)
class Adams:
    """torchdiffeq's variable-order Adams method on a fixed grid (see the module doc).

    Attributes
    ----------
    name : str
    implicit : bool
        Correct the Adams–Bashforth predictor with Adams–Moulton (functional iteration).
    max_order : int, 1 … 12 (default 12)
        The order the implicit method ramps up to (the explicit one: ``max_order − 1``);
        below 4 every step is the 3/8 rule.
    max_iters : int ≥ 1 (default 4)
        Corrector iterations per step at most.
    rtol, atol : float or Tensor (per state element), default 1e-7, 1e-9
        The corrector's convergence test (torchdiffeq uses ``odeint``'s tolerances).
    adjoint_method : str (default ``"rk38"``, torchdiffeq's ``rk4``)
        The Runge–Kutta method of the continuous adjoint on the forward's steps
        (``sensitivity="adjoint"``: a history cannot run backward).  With
        ``"checkpoint"`` a replayed segment continues the forward's history, so the
        gradient is that of the forward.
    """

    name: str
    implicit: bool
    max_order: int = MAX_ORDER
    max_iters: int = 4
    rtol: float | torch.Tensor = 1e-7
    atol: float | torch.Tensor = 1e-9
    adjoint_method: str = "rk38"

    def __post_init__(self):
        mo, mi = self.max_order, self.max_iters
        if isinstance(mo, bool) or not isinstance(mo, numbers.Integral) or not 1 <= mo <= 12:
            raise InputError(
                f"`max_order` of {self.name!r} must be an integer from 1 to {MAX_ORDER} "
                f"(torchdiffeq's range), got {mo!r}."
            )
        if isinstance(mi, bool) or not isinstance(mi, numbers.Integral) or mi < 1:
            raise InputError(
                f"`max_iters` of {self.name!r} must be an integer >= 1 (corrector "
                f"iterations per step), got {mi!r}."
            )
        object.__setattr__(self, "max_order", int(mo))
        object.__setattr__(self, "max_iters", int(mi))
        object.__setattr__(self, "rtol", _check_tol("rtol", self.rtol))
        object.__setattr__(self, "atol", _check_tol("atol", self.atol))
        if mo < _MIN_ORDER:
            warnings.warn(
                f"{self.name}: max_order={mo} is below {_MIN_ORDER}, so every step is the "
                "3/8 rule (torchdiffeq's rk4).",
                RuntimeWarning,
                stacklevel=3,
            )

    def with_options(self, **options) -> Adams:
        """A copy with other ``max_order``, ``max_iters``, ``rtol``, ``atol`` or
        ``adjoint_method``."""
        unknown = sorted(
            set(options) - {"max_order", "max_iters", "rtol", "atol", "adjoint_method"}
        )
        if unknown:
            raise InputError(
                f"unknown option(s) {unknown} for {self.name!r}; it takes max_order, "
                "max_iters (and the corrector's rtol, atol)."
            )
        return replace(self, **options)

    @property
    def order(self) -> int:
        """The order once the history is full."""
        top = max(self.max_order - 1, 0)
        if top < _ADAMS_FROM:
            return 4
        return top + 1 if self.implicit else top

    @property
    def error_order(self) -> int:
        return self.order

    # a functional iteration, no Newton: explicit as far as the loop is concerned
    is_implicit = False
    is_explicit = True
    is_adaptive = False

    def __repr__(self) -> str:
        kind = "Adams–Bashforth–Moulton" if self.implicit else "Adams–Bashforth"
        return (
            f"Adams({self.name!r}: {kind}, max_order={self.max_order}, max_iters={self.max_iters})"
        )

    def runtime(self, dtype, time_dtype, device, newton=None, *, fixed: bool = True):
        """The loop's method object (the slope history as method state) for one solve."""
        return AdamsRuntime(self, dtype, time_dtype, device)

    def check_use(self, *, fixed: bool | None = None, sensitivity: str = "direct") -> None:
        """Raise :class:`InputError` unless the method can run this way."""
        if fixed is False:
            raise InputError(
                f"method {self.name!r} runs on a fixed grid: pass `step_size=h` (or "
                "grid_on_outputs=True); for adaptive steps use e.g. 'dopri5'."
            )


METHODS = {
    "explicit_adams": Adams("explicit_adams", implicit=False),
    "implicit_adams": Adams("implicit_adams", implicit=True),
    # torchdiffeq's older name for implicit_adams
    "fixed_adams": Adams("fixed_adams", implicit=True),
}


def _row_tol(v, like):
    """A tolerance as a number or a tensor broadcasting against ``[K, n]``."""
    if not isinstance(v, torch.Tensor):
        return v
    v = v.to(like.dtype)
    if v.numel() == 1:
        return v.reshape(())
    if v.numel() == like.numel():
        return v.reshape(like.shape)
    return v.reshape(-1)  # one per state element, shared by the rows


def _where_rows(mask, new, old):
    """Per row (dim 1 of a history ``[m, K, ...]``, dim 0 of ``[K]``) choose new/old."""
    shape = (-1,) if new.dim() == 1 else (1, -1) + (1,) * (new.dim() - 2)
    return torch.where(mask.reshape(shape), new, old)


class AdamsRuntime:
    """The loop's method protocol for :class:`Adams`.

    State ``(F [m, K, n], S [m, K], count [K])``: past slopes and their times, newest
    first, and how many are known (``m = max(max_order − 1, 1)``).
    """

    has_state = True
    has_own_interpolant = False
    implicit = False
    newton = None
    # dense output: the cubic Hermite through the step's ends, as for the other
    # multistep methods
    extra_stages = MultistepRuntime.extra_stages
    interpolate = MultistepRuntime.interpolate
    track_grad = MultistepRuntime.track_grad  # the starter's

    def __init__(self, method: Adams, dtype, time_dtype, device):
        self.tableau = method
        self.method = method
        self.top = max(method.max_order - 1, 0)  # past slopes an Adams step uses at most
        self.m = max(self.top, 1)
        self.starter = RungeKutta(_tableau("rk38"), dtype, time_dtype, device)
        ab, ab_num, am, am_num = _tables(self.m)
        as64 = functools.partial(torch.as_tensor, dtype=torch.float64, device=device)
        self.ab, self.ab_num, self.am, self.am_num = map(as64, (ab, ab_num, am, am_num))
        self.unconverged = 0  # steps whose corrector did not converge
        self._growth = None  # the largest last-term ratio since the last check
        self._unchecked = 0
        self._warned = False

    # --- state ------------------------------------------------------------------------
    def init_state(self, s, y, f0):
        K = y.shape[0]
        F = y.new_zeros(self.m, *y.shape)
        S = s.new_zeros(self.m, K)
        return F, S, torch.zeros(K, dtype=torch.long, device=y.device)

    @staticmethod
    def commit_state(old, new, accept):
        if bool(accept.all()):
            return new
        return tuple(_where_rows(accept, n, o) for n, o in zip(new, old))

    # --- the step -----------------------------------------------------------------------
    def step(self, g, s, y, h, f0, state):
        F, S, count = state
        F = torch.cat([f0[None], F[:-1]])
        S = torch.cat([s[None], S[:-1]])
        count = (count + 1).clamp(max=self.m)
        order = count.clamp(max=self.top)
        adams = (order >= _ADAMS_FROM) & (h != 0)
        y1 = None
        if bool(adams.any()):
            y1, converged = self._adams(g, s, y, h, F, S, order, adams)
            if converged is not None:
                missed = adams & ~converged
                if bool(missed.any()):
                    self.unconverged += int(missed.sum())
                    warnings.warn(
                        f"{self.method.name}: the Adams–Moulton corrector did not converge "
                        f"in max_iters={self.method.max_iters} iterations; the step keeps "
                        "the last iterate and the order stops rising. Increase `max_iters` "
                        "or take smaller steps.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    count = torch.where(missed, count - 1, count)
        if not bool(adams.all()):
            start = self.starter.step(g, s, y, h, f0).y1
            y1 = start if y1 is None else torch.where(adams[:, None], y1, start)
        return StepResult(y1, None, f0[None], None, None), (F, S, count)

    def _coefficients(self, s, h, S, order, implicit):
        """``h·β`` per row in float64: the exact equal-step coefficients plus the
        variation of the variable-step ones (zero on an equal-step grid)."""
        m = self.m
        h_safe = torch.where(h == 0, torch.ones_like(h), h).to(torch.float64)
        x = ((S.to(torch.float64) - s.to(torch.float64)) / h_safe).T  # [K, m], x_0 = 0
        idx = torch.arange(m + 1, device=x.device)
        if implicit:
            z = torch.cat([torch.ones_like(x[:, :1]), x], dim=1)
            act = idx[None, :] < (order + 1)[:, None]
            beta = self.am[order] + lagrange_integrals(z, act) - self.am_num[order]
        else:
            act = idx[None, :m] < order[:, None]
            beta = self.ab[order] + lagrange_integrals(x, act) - self.ab_num[order]
        return h.to(torch.float64)[:, None] * beta

    def _watch_growth(self, s, h, F, S, order, rows, y, hb, Fw):
        """Warn once per solve (:class:`StabilityWarning`) when the explicit formula's
        last term is not small against the state: a fixed step has no error control,
        and an Adams–Bashforth formula of high order is stable only for tiny ``h·λ``
        (torchdiffeq's default order 11 blows up on ``y' = −y`` at ``h = 0.01``)."""
        if self._warned:
            return
        with torch.no_grad():
            lower = self._coefficients(s, h, S, (order - 1).clamp(min=1), implicit=False)
            top = torch.einsum("km,mkn->kn", hb - lower.to(hb.dtype), Fw).abs().amax(dim=1)
            scale = y.abs().amax(dim=1) + (h[:, None] * F[0]).abs().amax(dim=1)
            ratio = torch.where(rows, top / scale.to(top.dtype).clamp_min(1e-300), 0.0)
            worst = ratio.max()
        self._growth = worst if self._growth is None else torch.maximum(self._growth, worst)
        self._unchecked += 1
        if self._unchecked < _CHECK_EVERY:
            return
        self._unchecked = 0
        growth = float(self._growth)
        self._growth = None
        if not growth > _SPURIOUS_GROWTH:  # NaN too: the non-finite check reports it
            return
        self._warned = True
        k = int(order.max())
        warn_user(
            f"{self.method.name}: the order-{k} Adams–Bashforth step's last term is "
            f"{growth:.2g}·(|y| + |h f|) at steps of {float(h.abs().max()):.3g} "
            f"(an accurate solve keeps it below 1e-2): the step is outside the "
            "high-order formula's small stability region, so the state is probably "
            "growing spuriously and the result is not to be trusted. Take a smaller "
            "`step_size` or a lower `max_order` (e.g. max_order=5), or an adaptive "
            "method (dopri5, or 'adams' for a multistep one).",
            StabilityWarning,
        )

    def _adams(self, g, s, y, h, F, S, order, rows):
        """The Adams step of the rows ``rows``; returns ``(y1, converged or None)``."""
        # sums of the history in float64, rounded once (as torchdiffeq does): the high
        # orders amplify round-off, and float32 states would otherwise lose digits here
        dt = y.dtype
        wide = torch.promote_types(dt, torch.float64)
        Fw = F.to(wide)
        hb = self._coefficients(s, h, S, order, implicit=False).to(wide)
        dy = torch.einsum("km,mkn->kn", hb, Fw).to(dt)
        if not self.method.implicit:
            self._watch_growth(s, h, F, S, order, rows, y, hb, Fw)
            return y + dy, None
        hc = self._coefficients(s, h, S, order, implicit=True).to(wide)
        delta = torch.einsum("km,mkn->kn", hc[:, 1:], Fw).to(dt)
        hc = hc.to(dt)
        rtol = _row_tol(self.method.rtol, y)
        atol = _row_tol(self.method.atol, y)
        t1 = s + h
        done = ~rows
        for _ in range(self.method.max_iters):
            dy_new = hc[:, :1] * g(t1, y + dy) + delta
            with torch.no_grad():
                scale = atol + rtol * torch.maximum(dy.abs(), dy_new.abs())
                converged = ((dy - dy_new).abs() / scale).amax(dim=1) < 1
            dy = torch.where(done[:, None], dy, dy_new)
            done = done | converged
            if bool(done.all()):
                break
        return y + dy, done
