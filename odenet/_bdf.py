"""Variable-step, variable-order BDF and NDF (adaptive multistep methods for stiff problems).

The algorithm is scipy's ``BDF`` (Shampine & Reichelt, "The MATLAB ODE suite", SIAM
J. Sci. Comput. 18, 1997; the same formulas as MATLAB's ode15s), run by the one step
loop with its history as method state:

* **History as backward differences.**  ``D [MAX_ORDER + 3, K, n]`` holds the
  differences ``∇ʲ y_n`` of the interpolating polynomial on an equidistant grid of
  spacing ``h_D`` (quasi-constant step size).  A step of another size first moves
  the polynomial to the new spacing, ``D ← (R(h/h_D) U)ᵀ D`` (scipy's
  ``change_D``), which is exact for the degree-``k`` polynomial; the two
  differences above the order, kept only for the error estimates of the
  neighbouring orders, are scaled by ``(h/h_D)ʲ`` (their leading term).
* **The step.**  Predictor ``y_p = Σ_{j≤k} ∇ʲ y_n``; the corrector solves
  ``d − c f(t_{n+1}, y_p + d) + ψ = 0`` with ``c = h/α_k`` and
  ``ψ = Σ_{j=1..k} γ_j ∇ʲ y_n / α_k`` by simplified Newton on ``I − cJ``: the
  Jacobian is kept across steps and recomputed (at ``(t_{n+1}, y_p)``) only when
  the iteration fails to converge on the old one; the LU of ``I − c′J`` is kept
  while ``J`` does not change and the controller keeps ``h`` (``c′ = c``), and also
  across the retries of a step rejected for its error and the held steps after
  them (``c′ ≠ c``: scipy's choice, an inexact matrix costs an iteration or two, an
  LU more).  Scipy's stopping rule: at most 4 iterations, abandoned as soon as the
  contraction rate predicts no convergence; the step reports the iterations it took
  as a ``safety`` scale ``(2M + 1)/(2M + n)`` for the controller (Hairer's RADAU5,
  scipy's BDF and Radau), so the step does not grow towards Newton's divergence.
* **Error estimate** ``C_{k+1} d`` (``d = ∇^{k+1} y_{n+1}``): reported with its
  order ``k`` per row, so the controller's exponent follows the order.
* **Step-size hold** (scipy's ``n_equal_steps``): the controller chooses a new ``h``
  only on the steps where the order rule runs, after ``k + 1`` accepted steps of
  equal size; on the others the step reports ``hold`` and the controller keeps ``h``
  (a rejection still shrinks it, and the count starts again).  Held steps reuse the
  LU of ``I − cJ`` (``c = h/α_k``) and need no rescaling of ``D``; changing ``h``
  every step, as the PI controller alone did, cost an LU per step (4–6× scipy's)
  for no fewer f-evaluations.
* **Order selection** after ``k + 1`` accepted equal steps at order ``k``: the estimates
  for ``k − 1`` (``C_k ∇ᵏ y_{n+1}``) and ``k + 1`` (``C_{k+2} ∇^{k+2} y_{n+1}``) are
  compared with the one for ``k`` by the step each would allow,
  ``‖e_j‖^{−1/(j+1)}``, and the best order is kept for the next step.
* **Stability-limit guard** (at orders ≥ 3, which are not A-stable): where the
  differences do not decay, ``‖∇^{k+1} y‖ > ½‖∇ᵏ y‖`` with the estimate above 0.1 at
  the order decision, and the mode they carry (the Jacobian's Ritz value on
  ``span{v, Jv}``, ``v = ∇^{k+1} y``) lies outside the order's A(α) sector within reach
  of its lobe, the order is lowered by one whatever the rule above chose (see
  :func:`_stability_limited`).
* **NDF** (Klopfenstein–Shampine numerical differentiation formulas, scipy's and
  ode15s's default) add ``κ_k γ_k ∇^{k+1} y_{n+1}`` to the BDF equation: the same
  stability angle up to order 4 (slightly smaller) with an error constant up to
  26 % smaller, so larger steps at the same tolerance.
* **Dense output**: the polynomial through the step's end and the ``k`` points
  before it (scipy's ``BdfDenseOutput``), no extra ``f`` evaluation; ``f`` at the
  step's end is read off the corrector equation, ``f(t_{n+1}, y_{n+1}) = (ψ + d)/c``.

Two names, one class: ``bdf`` (``κ = 0``) and ``ndf`` (scipy's ``BDF``).  Names
rather than an option because a method is data chosen by ``method=``; an option
would have to travel through ``solve``'s keyword arguments for this method alone.

The loop does the rest (see ``docs/contributing.md``, *the loop contract*): the
controller decides acceptance and the next step from the error ratio and the
order reported with it; a rejected trial's state (the moved differences, an order
change) is dropped and the step retried from the old one.

``METHODS`` maps each name to its method object (the protocol of
:class:`odenet._multistep.LinearMultistep`); :func:`odenet._registry.registered`
collects it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from odenet._errors import InputError
from odenet._newton import (
    FLOOR_TRUST_RATE,
    capped_safety,
    hairer_newton_tol,
    roundoff_factor,
    rtol_growth,
)
from odenet._ops import HostOps, TensorOps
from odenet._stepper import StepResult, tolerance_unit

MAX_ORDER = 5
NEWTON_MAXITER = 4  # scipy's cap; a non-default `newton_max_iter` overrides it
# Below rtol = ROUNDOFF_FLOOR·eps a solve warns (ToleranceWarning): the round-off carried in
# the differences over the many steps of a tight tolerance is an error floor of its own,
# about 5e4·eps whatever rtol (studies/benchmarks/round_off_floor_results.md, worst of 24
# random linear systems against a 40-digit reference: float64 bdf 564, 56, 13·rtol at rtol
# 100, 1000, 4500·eps; ndf alike), and in float32 κ's cap (rtol/κ ≥ 100·eps) holds the
# per-step tolerance at 100·eps whatever rtol, so that over many steps the error is a
# floor too (four Van der Pol oscillators, ~2800 steps, stiff_holdout14_results.md: bdf
# 28.5, 19.9, 8.1·rtol at 1100, 1700, 4200·eps).  At 5000·eps both stay near 10·rtol;
# at 1000·eps (the floor until session 48) they ended at 56 and 28.5·rtol unwarned.
ROUNDOFF_FLOOR = 5000
# The stability-limit guard (_stability_limited): at an order decision at order k ≥ 3,
# differences that fall by less than STABILITY_RATIO per order, with an estimate above
# STABILITY_ERROR (in units of the controlled tolerance), lower the order
STABILITY_RATIO = 0.5
STABILITY_ERROR = 0.1
# ... but only where the mode those differences carry could lie in order k's lobe: its
# angle from the negative real axis above the order's A(α) (degrees) less SECTOR_MARGIN
# and, if it decays, its |hλ| within LOBE_MARGIN times the lobe's extent (the largest
# |z| of the boundary locus left of the imaginary axis).  Both from odenet.stability.multistep
# (tests/test_bdf.py checks them); NDF5 is BDF5 (κ₅ = 0).  A mode well inside the A(α)
# sector, or beyond the lobe, is damped at that order whatever h: a stiff component
# decaying at |hλ| ~ 1e2–1e3 leaves differences of its Newton noise that do not decay
# either (sir_switching, stiff_holdout11.py: the switch's λ ≈ −9.9e3; the guard fired
# there at 12 of 615 order decisions and ndf took 1.5x the f-evaluations at rtol 1e-7)
A_ALPHA = {False: (90.0, 90.0, 90.0, 86.03, 73.35, 51.84),
           True: (90.0, 90.0, 90.0, 80.42, 66.18, 51.84)}  # fmt: skip
LOBE = {False: (0.0, 0.0, 0.0, 1.94, 4.71, 9.39), True: (0.0, 0.0, 0.0, 3.47, 6.57, 9.39)}
LOBE_MARGIN = 2.0
# A mode just inside the sector is stable but hardly damped at small |hλ|: DETEST B5's
# pair at 84.3° (BDF3's A(α) 86.03°) held bdf at order 3 with h|λ| below 1.2 and cost
# 2.7x the f-evaluations at rtol 1e-3 until the guard took modes within this many
# degrees of the sector's edge as well (studies/benchmarks/bdf_stability_limit_results.md)
SECTOR_MARGIN = 10.0
# Klopfenstein–Shampine κ_k for orders 0 … 5 (Shampine & Reichelt 1997, Table 1; scipy's
# values: −0.1850, −1/9, −0.0823, −0.0415, 0), exact for the stability analyser
NDF_KAPPA_EXACT = (
    Fraction(0), Fraction(-37, 200), Fraction(-1, 9), Fraction(-823, 10000),
    Fraction(-83, 2000), Fraction(0),
)  # fmt: skip
NDF_KAPPA = tuple(float(k) for k in NDF_KAPPA_EXACT)


def characteristic_coefficients(k: int, ndf: bool) -> tuple[Fraction, ...]:
    """BDF or NDF ``k`` on equal steps, ``Σ_{j≤k} ∇ʲ y_{n+1}/j − κ_k γ_k ∇^{k+1} y_{n+1}
    = h f_{n+1}`` (``κ_k = 0`` for BDF), as the exact coefficients of its ``ρ(ζ)``
    times ``ζ^{k+1 − deg}``: ``k + 2`` of them, ``ζ^{k+1}`` first; its ``σ(ζ)`` is
    ``ζ^{k+1}``.  (For BDF the last is 0: a root at 0 that changes no modulus.)"""
    kappa = NDF_KAPPA_EXACT[k] if ndf else Fraction(0)
    gamma = sum(Fraction(1, j) for j in range(1, k + 1))
    # ∇ʲ as (1 − w)ʲ, w = ζ⁻¹; × ζ^{k+1}: the coefficient of wⁱ is that of ζ^{k+1−i}
    coef = [Fraction(0)] * (k + 2)
    for c, j in [(Fraction(1, j), j) for j in range(1, k + 1)] + [(-kappa * gamma, k + 1)]:
        for i in range(j + 1):
            coef[i] += c * math.comb(j, i) * (-1) ** i
    return tuple(coef)


def amplification(z: torch.Tensor, order: torch.Tensor, ndf: bool) -> torch.Tensor:
    """``max |ζ|`` [K] over the roots of ``ρ(ζ) − z σ(ζ)`` of BDF/NDF ``order`` [K]
    (:func:`characteristic_coefficients`) at ``z = hλ`` [K] (complex): how much a mode
    ``y' = λy`` grows per step at that order on equal steps, spurious roots included.
    The roots are the eigenvalues of the companion matrix of each row's polynomial,
    padded to degree ``MAX_ORDER + 1`` with roots at 0."""
    d = MAX_ORDER + 1
    table = torch.tensor(_characteristic_table(ndf), dtype=torch.float64)
    coef = table.to(device=z.device, dtype=z.dtype)[order]  # [K, d + 1], ζ^d first
    coef[:, 0] = coef[:, 0] - z
    companion = torch.zeros(z.shape[0], d, d, dtype=z.dtype, device=z.device)
    top = -coef[:, 1:] / coef[:, :1]
    # a leading coefficient of 0 (z real at γ_k(1 − κ_k)) is a root at ∞, and a z that
    # is not finite has no roots: NaN for those rows.  LAPACK is never handed them (MKL's
    # complex eigensolver crashes the process on a non-finite matrix)
    readable = torch.isfinite(top).all(dim=1)
    companion[:, 0, :] = torch.where(readable[:, None], top, 0)
    companion[:, 1:, :-1] = torch.eye(d - 1, dtype=z.dtype, device=z.device)
    rho = torch.linalg.eigvals(companion).abs().amax(dim=1)
    return torch.where(readable, rho, math.nan)


@functools.cache
def _characteristic_table(ndf: bool) -> tuple[tuple[float, ...], ...]:
    """:func:`characteristic_coefficients` of orders 0 … MAX_ORDER as floats, each
    padded to ``MAX_ORDER + 2`` with trailing zeros (roots at 0); order 0's all zero."""
    rows = [(0.0,) * (MAX_ORDER + 2)]
    for k in range(1, MAX_ORDER + 1):
        c = [float(x) for x in characteristic_coefficients(k, ndf)]
        rows.append(tuple(c + [0.0] * (MAX_ORDER - k)))
    return tuple(rows)


@dataclass
class BDFStepResult(StepResult):
    """A step result that also reports the order of its error estimate per row
    (``error_order [K]``: the loop passes it to the controller in place of the
    method's fixed ``error_order``) and, for BDF, what the controller's ``judge``
    is told beside it: whether the step size is to be kept after this step if it is
    accepted (``hold [K]`` bool) and the factor in ``(0, 1]`` its safety is scaled by
    (``safety [K]``, after slow Newton iterations)."""

    error_order: torch.Tensor | None = None
    hold: torch.Tensor | None = None
    safety: torch.Tensor | None = None


@dataclass(frozen=True)
class VariableBDF:
    """Adaptive variable-step, variable-order BDF (``ndf=False``) or NDF (orders 1–5).

    Attributes
    ----------
    name : str
    ndf : bool
        Klopfenstein–Shampine's modified formulas (scipy's ``BDF``, MATLAB's ode15s).
    error_safety, safety_exponent : float
        The local error estimate is multiplied by
        ``κ = error_safety · max(1, 1e-2/rtol)^safety_exponent`` (default 150 and 1/3:
        κ = 323 at rtol 1e-3, 3232 at 1e-6, 15000 at 1e-8), so that the *global* error
        at the end follows ``rtol`` as a RADAU5's does (within 10× of scipy Radau's on
        the stiff set) instead of growing with the number of steps; ``error_safety=1,
        safety_exponent=0`` is scipy's ``BDF`` (local error per step ≈ ``rtol``, the
        global error 30–4600× Radau's at the same rtol).  Work at *equal error* is the
        same; see :func:`bdf_error_safety`.
    stability_guard : bool
        Lower the order where the step is held by the stability region of orders 3–5
        rather than by accuracy (default; ``False`` is scipy's order rule alone).  A
        weakly damped oscillatory mode whose ``hλ`` lies in the lobe beside the
        imaginary axis that those orders' regions leave out otherwise holds ``h`` at
        the lobe's edge for the rest of the solve (see :func:`_stability_limited`).
    order : the highest order used (5).
    error_order : the order of the first step's estimate (1); later steps report
        theirs per row.

    ``method="bdf"`` and ``method="ndf"`` are the two with the default error safety;
    an instance is a method too::

        local = odenet.VariableBDF("ndf_local", ndf=True, error_safety=1, safety_exponent=0)
        sol = odenet.solve(f, y0, t, method=local, rtol=1e-6)  # scipy's BDF control

    References: Shampine & Reichelt, SIAM J. Sci. Comput. 18 (1997); Byrne &
    Hindmarsh, ACM TOMS 1 (1975); Hairer & Wanner II, Sec. III.5 and V.
    """

    name: str
    ndf: bool
    error_safety: float = 150.0
    safety_exponent: float = 1 / 3
    stability_guard: bool = True

    family = "bdf_variable"
    order = MAX_ORDER
    error_order = 1
    is_implicit = True
    is_explicit = False
    is_adaptive = True
    # scipy's rule: the I controller, h held for k + 1 steps after each change (the
    # step's ``hold``), safety lowered after slow Newton iterations (its ``safety``).
    # Without the hold the PI controller was needed (with I the step grew as soon as
    # one estimate was small: Van der Pol μ = 1000, rtol 1e-3 … 1e-4, came back ok with
    # a relative error of 0.65 … 1.8), and h changed every step: an LU per step, 4–6×
    # scipy's.  With it: scipy's nlu, nfe and error within ~15 %
    # (studies/benchmarks/bdf_results.md)
    default_controller = "I"
    # sensitivity="adjoint": the reverse solve's method (stiff too), unless the caller
    # names one with options adjoint_method=...
    adjoint_method = "radau_iia5"

    def __post_init__(self):
        ok = math.isfinite(self.error_safety) and self.error_safety > 0
        if not (ok and math.isfinite(self.safety_exponent) and self.safety_exponent >= 0):
            raise InputError(
                f"VariableBDF {self.name!r}: error_safety={self.error_safety!r} and "
                f"safety_exponent={self.safety_exponent!r} must be a positive and a "
                "non-negative finite number (error_safety=1, safety_exponent=0 is scipy's "
                "local error control)"
            )
        if not isinstance(self.stability_guard, bool):
            raise InputError(
                f"VariableBDF {self.name!r}: stability_guard={self.stability_guard!r} must be "
                "True (lower the order where the step is held by stability) or False "
                "(scipy's order rule alone)"
            )

    def __repr__(self) -> str:
        kind = "NDF" if self.ndf else "BDF"
        return f"VariableBDF({self.name!r}: variable-step {kind}, orders 1–{MAX_ORDER})"

    def coefficients(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(γ, α, C)`` for orders ``0 … 5``: ``γ_k = Σ_{j≤k} 1/j``,
        ``α_k = (1 − κ_k) γ_k`` and the error constants ``C_k = κ_k γ_k + 1/(k + 1)``."""
        kappa = np.array(NDF_KAPPA if self.ndf else (0.0,) * (MAX_ORDER + 1))
        gamma = np.hstack([0.0, np.cumsum(1.0 / np.arange(1, MAX_ORDER + 1))])
        alpha = (1 - kappa) * gamma
        error_const = kappa * gamma + 1.0 / np.arange(1, MAX_ORDER + 2)
        return gamma, alpha, error_const

    def runtime(self, dtype, time_dtype, device, newton=None, *, fixed: bool = False):
        """The loop's method object (history as method state) for one solve."""
        return BDFRuntime(self, dtype, time_dtype, device, newton)

    def check_use(self, *, fixed: bool | None = None, sensitivity: str = "direct") -> None:
        """Raise :class:`InputError` unless the method can run this way (``fixed=None``:
        the step mode was checked already)."""
        _check_use(self.name, "a fixed-step BDF (bdf1 … bdf6)", fixed, sensitivity)


def _check_use(name: str, fixed_alternative: str, fixed, sensitivity: str) -> None:
    """Adaptive only (every sensitivity mode: the checkpoint tape keeps the history,
    the adjoint integrates with ``adjoint_method``); the message names the way out."""
    if fixed:
        raise InputError(
            f"method {name!r} chooses its own steps and orders: drop `step_size` (and "
            f"grid_on_outputs), or use {fixed_alternative} on a fixed grid."
        )


def _R(f: torch.Tensor, size: int) -> torch.Tensor:
    """Scipy's ``compute_R``: ``R[k, i, j] = Π_{l=1..i} (l − 1 − f_k·j)/l`` (row 0: ones,
    column 0 below it: zeros), ``[K, size, size]`` for ``f [K]``."""
    i = torch.arange(1, size, dtype=f.dtype, device=f.device)
    M = torch.ones(f.shape[0], size, size, dtype=f.dtype, device=f.device)
    M[:, 1:, 1:] = (i[:, None] - 1 - f[:, None, None] * i) / i[:, None]
    M[:, 1:, 0] = 0.0
    return torch.cumprod(M, dim=1)


def _rescale_matrix(factor: torch.Tensor, order: torch.Tensor, size: int, U=None) -> torch.Tensor:
    """``T [K, size, size]`` with ``D_new[j] = Σ_i T[i, j] D[i]``: scipy's ``R(f)·U`` on
    the differences up to each row's order, ``fʲ`` on the ones above it (``U = R(1)``,
    passed when the caller keeps it)."""
    if U is None:
        U = _R(torch.ones_like(factor[:1]), size)
    idx = torch.arange(size, device=factor.device)
    inside = idx <= order[:, None]  # [K, size]
    both = inside[:, :, None] & inside[:, None, :]
    powers = factor[:, None] ** idx.to(factor.dtype)
    return torch.where(
        both, _R(factor, size) @ U, torch.diag_embed(torch.where(inside, 0.0, powers))
    )


def bdf_error_safety(method: VariableBDF, rtol, eps: float = 0.0):
    """``κ = method.error_safety · max(1, RTOL_REF/rtol)^method.safety_exponent``, the
    factor the BDF/NDF error estimate is multiplied by (capped where the dtype of
    machine epsilon ``eps`` cannot resolve ``rtol/κ``, with a warning where that costs the
    tolerance: :func:`odenet._newton.capped_safety`).

    Why: the estimate ``C_{k+1} ∇^{k+1} y`` is the local error of the step itself (no
    local extrapolation, unlike Radau IIA's, whose order-5 solution lands far below its
    order-3 estimate), so with the error per step at ``rtol`` the global error is a sum
    over ``N`` steps: scipy's BDF ends at 1–150·rtol on the stiff set, 30–4600× scipy
    Radau's error at the same rtol, and the ratio grows as rtol tightens (Radau's error
    falls faster than rtol).  Growing like ``rtol^(−1/3)``, faster than the number of
    steps at order 5 (``rtol^(−1/6)``), κ keeps ndf within 0.034–4.7× Radau's error from
    rtol 1e-3 to 1e-8 on Robertson, HIRES, Van der Pol μ = 1000, the Oregonator and the
    1-D Brusselator (S = 100 with exponent 1/6: up to 32× on the Oregonator at 1e-8;
    ``studies/benchmarks/stiff_accuracy_results.md``; 0–4.4× on nine hold-out problems),
    for 2.5–4.2× scipy BDF's f-evaluations *at the same rtol* and the same work at equal
    error (1.01–1.10×, ``bdf_results.md``).  ``rtol``: a float, or a tensor (per row /
    component: κ then is one too)."""
    growth = rtol_growth(method.safety_exponent)
    return capped_safety(method.error_safety, growth, rtol, eps, method.name, floor=ROUNDOFF_FLOOR)


class BDFRuntime:
    """The method protocol of the loop for :class:`VariableBDF`, with state.

    State ``(D [MAX_ORDER + 3, K, n], order [K], h_D [K], n_steps [K])``: the
    differences, each row's order, the spacing ``D`` is on, and the accepted steps of
    the current size taken since the order rule last ran (the step size is held until
    it runs again).
    """

    has_state = True
    has_own_interpolant = True

    def __init__(self, method: VariableBDF, dtype, time_dtype, device, newton):
        self.tableau = method
        self.implicit = True
        self.newton = newton
        self.track_grad = False
        self.dtype = dtype
        gamma, alpha, error_const = method.coefficients()

        def T(x):
            return torch.as_tensor(x, dtype=dtype, device=device)

        self.gamma, self.alpha, self.error_const = T(gamma), T(alpha), T(error_const)
        # per order k (rows): which differences the predictor sums (j ≤ k), and the
        # weights γ_j/α_k of ψ (1 ≤ j ≤ k): one lookup per step instead of masks
        j = torch.arange(MAX_ORDER + 3, device=device)
        k = torch.arange(MAX_ORDER + 1, device=device)[:, None]
        self._upto = (j <= k).to(dtype)  # [M + 1, M + 3]
        inside = (j[: MAX_ORDER + 1] >= 1) & (j[: MAX_ORDER + 1] <= k)
        ratio = self.gamma[None, :] / self.alpha[:, None].clamp_min(1e-300)
        self._psi_w = torch.where(inside, ratio, torch.zeros_like(ratio))  # [M + 1, M + 1]
        rtol = newton.rtol
        eps = float(torch.finfo(dtype).eps)
        # κ of each row's (component's) own rtol ([K, n] for a tensor rtol): one κ from
        # the largest rtol cut a tight row's κ (Robertson, rows at rtol 1e-2 and 1e-8: the
        # 1e-8 row ended at 7.5e-10 batched against 1.6e-11 alone)
        self._kappa = bdf_error_safety(method, rtol, eps)
        # scipy's Newton stopping threshold for the tolerance the error control enforces
        # (rtol/κ), in units of the solve's tolerance: Newton's leftover is an error per
        # step too, and at the threshold of rtol it was above tol/κ.  Per row, its
        # tightest component's ([K]; one system: a float, compared on the host)
        tol = hairer_newton_tol(rtol / self._kappa, eps) / self._kappa
        if isinstance(tol, torch.Tensor):  # rtol [K, n] (solve's per_row)
            tol = tol.reshape(tol.shape[0], -1).amin(dim=1)
            tol = float(tol) if tol.shape[0] == 1 else tol
        self.newton_tol = tol
        self.max_iter = NEWTON_MAXITER if newton.max_iter == 8 else newton.max_iter
        # the LU of I − c′J in use: (J_version, c′ [K]), and the last trial's start and
        # Newton outcome per row (a retry after an error rejection keeps the LU)
        self._lu_key = None
        self._lu = None
        self._last = None
        self._U = _R(torch.ones(1, dtype=dtype, device=device), MAX_ORDER + 3)

    # --- state ------------------------------------------------------------------------
    def init_state(self, s, y, f0):
        """Order 1, no history yet (``h_D = NaN``): the first step takes ``D[0] = y0``,
        ``D[1] = 1·f0`` from its own arguments, so the state holds nothing that depends
        on ``y0`` (a checkpoint replay differentiates through the step's arguments)."""
        return _empty_state(y, MAX_ORDER + 3, s)

    def restart_state(self, state, y, f0):
        """After a discontinuity of the field (``jump_t``): order 1 with the history
        ``[y, h_D·f0]`` on the last spacing ``h_D``, the start's history taken at
        once (the differences of the solution across the jump mean nothing)."""
        D, order, h_D, n_steps = state
        h = _spacing(h_D)
        first = torch.stack([y, h.to(y.dtype)[:, None] * f0])
        return torch.cat([first, torch.zeros_like(D[2:])]), 1 + 0 * order, h, 0 * n_steps

    @staticmethod
    def commit_state(old, new, accept):
        if bool(accept.all()):
            return new
        D = torch.where(accept[None, :, None], new[0], old[0])
        return (D, *(torch.where(accept, n, o) for n, o in zip(new[1:], old[1:])))

    # --- the step -----------------------------------------------------------------------
    def step(self, g, s, y, h, f0, state):
        D, order, h_D, n_steps = _start(state, y, f0)
        # D[0] is y: taken from the argument, so gradients flow through the loop's state
        D = torch.cat([y[None], D[1:]])
        K, n = y.shape
        dt = y.dtype
        nw = self.newton
        frozen = h == 0  # finished rows: their trial is discarded
        h_safe = torch.where(frozen, h_D, h)
        factor = (h_safe / h_D).detach().to(dt)
        if not bool((factor == 1).all()):
            Tm = _rescale_matrix(factor, order, MAX_ORDER + 3, self._U)
            D = torch.einsum("kij,ikn->jkn", Tm, D)
            # another step size (a rejection's retry, the controller's change) restarts
            # the count of equal steps.  "Equal" to a few ulps of t: a checkpoint replay
            # recomputes each step as the difference of the forward's step ends, equal
            # to the forward's step only to the rounding of t + h
            ulp = torch.finfo(s.dtype).eps * (s.abs() + h_safe.abs())
            n_steps = torch.where((h_safe - h_D).abs() <= 4 * ulp, n_steps, 0)
        upto = self._upto[order].T  # [M + 3, K]
        alpha_k = self.alpha[order]
        y_pred = (D * upto[:, :, None]).sum(dim=0)
        g_w = self._psi_w[order].T  # [M + 1, K]
        psi = (D[: MAX_ORDER + 1] * g_w[:, :, None]).sum(dim=0)
        c = (h_safe.to(dt) / alpha_k).detach()
        t_new = s + h_safe

        with torch.no_grad():
            y_p = y_pred.detach()
            scale = nw.atol + nw.rtol * y_p.abs()
            ok, y_new, d, n_iter = self._correct(
                g, s, y, t_new, y_p, c, psi.detach(), scale, frozen
            )
            if K == 1:  # one system's outcome, decided on the host
                ok = torch.tensor([ok], device=y.device)
                n_iter = torch.tensor([n_iter], device=y.device)
        if self.track_grad and torch.is_grad_enabled():
            # the implicit function theorem through one exact Newton step at the solution
            def G(Z):
                return g(t_new, Z[:, 0])[:, None]

            base = (y_pred - psi)[:, None]
            y_new = nw.attach(g, t_new[:, None], base, c[:, None, None], y_new[:, None], G)[:, 0]
            d = y_new - y_pred
        f1 = (psi + d) / c[:, None]

        with torch.no_grad():
            d_ = d.detach()
            error = self.error_const[order][:, None] * d_
            error = torch.where(ok[:, None], error, torch.zeros_like(error))
        D_new = _update_differences(D, d, order)
        with torch.no_grad():
            order_new, n_new = self._select_order(
                D_new.detach(), error, y_new.detach(), order, n_steps, h_safe.detach()
            )
            order_new = torch.where(ok, order_new, order)
            # the controller's ratio against tol/κ, as the order rule's above (which on the
            # unscaled estimates favoured order 1 at large κ: κ^(1/2) against κ^(1/6) for
            # order 5, and Robertson at rtol 1e-8 stalled at order 1–2)
            error = error * self._kappa
        ks = D_new * upto[:, :, None]  # dense output: the step's polynomial
        # keep h until k + 1 equal steps are taken (n_new counts them; it is reset to 0
        # when the order rule ran, and then the controller chooses the next h)
        hold = ok & (n_new > 0)
        # Hairer's (RADAU5) and scipy's safety: lower after a slow Newton iteration
        M = self.max_iter
        safety = (2 * M + 1) / (2 * M + n_iter.clamp(min=1).to(dt))
        result = BDFStepResult(
            y_new, error, ks, f1, ok | frozen, error_order=order, hold=hold, safety=safety
        )
        return result, (D_new, order_new, h_safe.detach(), n_new)

    def _correct(self, g, s, y, t_new, y_pred, c, psi, scale, frozen):
        """Scipy's simplified Newton for ``d − c f(t_new, y_pred + d) + ψ = 0``.

        The iteration matrix ``I − c′J`` is refactorised only when needed, as in
        scipy's ``BDF``: ``J`` is kept until the iteration fails on it (then recomputed
        at ``(t_new, y_pred)``; the step is cut only where it fails on a ``J`` taken at
        this trial's point, CVODE's rule: scipy cuts it on any ``J`` of the same step,
        one taken at an earlier, longer trial's predictor too), and ``c′`` follows
        ``c`` when the controller changes the step, but not when a step rejected for
        its error estimate is retried smaller (same start, Newton converged): the retry
        and the held steps after it keep the factors of ``c′``, so a rejection costs no
        LU.  A row that fails on such an inexact matrix is retried on the exact one
        before ``J`` is refreshed.  ``c′`` is per row, so a row of a batch iterates as
        it would alone.

        One system decides on Python floats (``c``, ``s``, the outcome), a batch on
        ``[K]`` tensors: the rule is written once against :mod:`odenet._ops`.
        Returns ``(ok, y_new, d, iterations)``: ``ok`` and ``iterations`` a bool and
        an int for one system, ``[K]`` tensors for a batch."""
        nw = self.newton
        host = y.shape[0] == 1
        ops = HostOps if host else TensorOps
        if host:
            s, c_row, c = float(s), c, float(c)
            keep = force = False  # rows that may keep c′ though c changed / must not
        else:
            keep, force = torch.zeros_like(frozen), torch.zeros_like(frozen)
        if self._last is not None:
            s_prev, ok_prev = self._last
            keep = (s == s_prev) & ok_prev
        result = None
        refresh = False
        here = False  # J taken at this trial's (t_new, y_pred)
        while True:
            if refresh:
                # a J taken for another trial of this step (before a rejection cut h) is
                # not this trial's: where f is exponential in y it can be off by 1e13
                # (the rectifier of stiff_holdout8, a J from a far predictor) and then
                # every increment is tiny, so drop it whenever it is not this trial's
                nw.forget()
            version = nw.J_version
            J = nw.jacobian(g, t_new, y_pred)
            here = here or nw.J_version != version
            c_lu, stale = c, True
            if self._lu_key is not None and self._lu_key[0] == nw.J_version:
                _, c_old, serves = self._lu_key
                c_lu = ops.where(keep | (serves == c), c_old, c)
                c_lu = ops.where(force, c, c_lu)
                stale = c_lu != c_old if host else not torch.equal(c_lu, c_old)
            if stale:
                c_mat = (c_row if c_lu == c else c_row.new_full((1,), c_lu)) if host else c_lu
                self._lu = nw.iteration_matrix(c_mat[:, None, None], J)
            self._lu_key = (nw.J_version, c_lu, c)  # the steps of size c use c′ till h changes
            exact = c_lu == c
            ok, y_new, d, n_iter = self._iterate(
                g, t_new, y_pred, c_row if host else c, psi, scale, self._lu, frozen, here
            )
            if result is not None:  # keep the rows that converged on the previous matrix
                ok0, y0, d0, n0 = result
                y_new = ops.where(_rows(host, ok0), y0, y_new)
                d = ops.where(_rows(host, ok0), d0, d)
                n_iter = ops.where(ok0, n0, n_iter)
                ok = ok | ok0
            result = ok, y_new, d, n_iter
            failed_inexact = ops.not_(ok) & ops.not_(exact)
            if ops.any(failed_inexact):  # first the exact c (cheaper than a Jacobian)
                force = force | failed_inexact
                continue
            if ops.all(ok) or here:
                break
            refresh = True
        self._last = (s if host else s.clone(), ok)
        if not ops.all(ok):
            nw.stats.failures += 1
        return result

    def _iterate(self, g, t_new, y_pred, c, psi, scale, lu, frozen, here):
        """At most ``max_iter`` simplified Newton iterations on the factors ``lu``;
        scipy's stopping rule.  ``here``: the Jacobian in ``lu`` was taken at this
        trial's ``(t_new, y_pred)``.  Returns ``(ok, y, d, iterations)`` (host numbers
        for one system, as :meth:`_correct`)."""
        nw = self.newton
        tol = self.newton_tol
        host = y_pred.shape[0] == 1
        ops = HostOps if host else TensorOps
        y = y_pred.clone()
        d = torch.zeros_like(y)
        if host:
            converged, failed, n_iter = bool(frozen), False, 0
        else:
            converged = frozen.clone()
            failed = torch.zeros_like(converged)
            n_iter = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
        prev = None
        # whether the round-off floor may be believed (see the stalled case below)
        trusted = ops.full(bool(here), frozen)
        for it in range(self.max_iter):
            nw.stats.iterations += 1
            f = g(t_new, y)
            if host:
                # a non-finite f makes the increment, and its norm, non-finite
                dy = nw.solve(lu, c[:, None] * f - psi - d)
                dnorm = float((dy / scale).pow(2).mean(dim=1).sqrt())
                finite = math.isfinite(dnorm)
            else:
                finite = torch.isfinite(f).all(dim=1)
                dy = nw.solve(lu, c[:, None] * torch.nan_to_num(f) - psi - d)
                dnorm = (dy / scale).pow(2).mean(dim=1).sqrt()
                finite = finite & torch.isfinite(dnorm)
            active = ops.not_(converged | failed)
            n_iter = n_iter + (int(active) if host else active.long())
            if prev is None:
                stop = ops.not_(finite)
                conv = dnorm == 0
            else:
                rate = dnorm / prev if not host or prev > 0 else math.inf
                one_minus = ops.clip(1 - rate, lo=1e-12)
                # (a rate ≥ 1 stops anyway: capped, its power cannot overflow a float)
                hopeless = ops.clip(rate, hi=1.0) ** (self.max_iter - it) / one_minus * dnorm > tol
                stop = ops.not_(finite) | (rate >= 1) | hopeless
                conv = (dnorm == 0) | (rate / one_minus * dnorm < tol)
                # only on a Jacobian of this trial, or on a kept one whose iteration has
                # contracted (FLOOR_TRUST_RATE): on a stale one a slowly diverging
                # iteration has small increments too, and accepting it left a stiff
                # component off its manifold by more than the κ-scaled estimate allows,
                # which then rejected every later step down to underflow (Robertson on
                # [0, 1e11], rtol 1e-6: bdf and ndf failed at t = 1.8e9); and the floor
                # reads J, so a J of another point makes it another point's floor (the
                # rectifier: 1e13 too large, it passed an iterate whose residual was
                # 4e6 tolerance units)
                trusted = trusted | (finite & (rate <= FLOOR_TRUST_RATE))
                stalled = active & finite & stop & trusted
                if ops.any(stalled):
                    # increments that no longer contract may be the residual's round-off
                    # (DETEST F5 at its equilibrium: rates of 1e3 cancel in f ≈ 0, and
                    # the step shrank to 1e-10 to get them below tol; scipy's BDF too)
                    floor = nw.roundoff_floor(lu, c, y, f, psi + d, scale, roundoff_factor(here))
                    at_floor = stalled & ((float(floor) if host else floor) >= dnorm)
                    conv = conv | at_floor
                    stop = stop & ops.not_(at_floor)
            now_failed = active & stop
            upd = active & ops.not_(now_failed)
            y = ops.where(_rows(host, upd), y + dy, y)
            d = ops.where(_rows(host, upd), d + dy, d)
            converged = converged | (upd & conv)
            failed = failed | now_failed
            prev = dnorm
            if ops.all(converged | failed):
                break
        return converged & ops.not_(failed), y, d, n_iter

    def _select_order(self, D, error, y_new, order, n_steps, h):
        """The order for the next step and the count of equal steps taken at it: the
        estimates for ``k − 1`` (``C_k ∇ᵏ y_{n+1}``), ``k`` and ``k + 1``
        (``C_{k+2} ∇^{k+2} y_{n+1}``) compete (see :func:`_next_order`)."""
        nw = self.newton
        n1 = n_steps + 1
        if not bool((n1 >= order + 1).any()):
            return order, n1
        idx = order[None, :, None].expand(1, *D.shape[1:])
        ec = self.error_const
        e_lo = ec[(order - 1).clamp(min=0)][:, None] * D.gather(0, idx)[0]
        e_hi = ec[(order + 1).clamp(max=MAX_ORDER)][:, None] * D.gather(0, idx + 2)[0]
        scale = (nw.atol + nw.rtol * y_new.abs()) / self._kappa
        order_new, n_new = _next_order(order, n1, (e_lo, error, e_hi), scale, order, MAX_ORDER)
        if self.tableau.stability_guard:
            mode = lambda v, k: self._in_lobe(v, k, h, scale)  # noqa: E731
            held = (n1 >= order + 1) & _stability_limited(D, error, scale, order, mode)
            order_new = torch.where(held, torch.minimum(order_new, order - 1), order_new)
        return order_new, n_new

    def _in_lobe(self, v, order, h, scale):
        """``[K]``: whether the mode in the direction ``v`` [K, n] (``∇^{k+1} y``) could
        lie in the lobe order ``k`` (``order`` [K]) leaves out, at the step ``h`` [K]
        the differences are on: its angle (:func:`lobe_mode` with the cached Jacobian)
        above the order's A(α) less ``SECTOR_MARGIN`` and, for a decaying mode, ``h|λ|``
        within ``LOBE_MARGIN`` lobes; and whether order ``k − 1`` damps it more there
        (:func:`amplification` at ``z = hλ``).  True where there is no Jacobian to tell."""
        nw = self.newton
        if nw.J is None:
            return torch.ones_like(order, dtype=torch.bool)
        size, angle = lobe_mode(nw.jacobian_product, v, scale)
        ndf = self.tableau.ndf
        a_alpha = v.new_tensor(A_ALPHA[ndf])[order]
        lobe = v.new_tensor(LOBE[ndf])[order]
        near = angle > a_alpha - SECTOR_MARGIN
        # the lobe bounds where a decaying mode can be trapped; a growing or undamped
        # one (90° or more) keeps the ratio test's verdict whatever its h|λ| (E5 at
        # rtol 1e-3: ndf ended in a step-size underflow at t = 5.7e11 where growing
        # modes at h|λ| up to 27 no longer lowered the order)
        hs = h.to(v.dtype) * size
        reach = (hs <= LOBE_MARGIN * lobe) | (angle >= 90.0)
        # and the lower order must damp the mode more than this one: BDF5's locus runs
        # right of the imaginary axis up to |z| = 0.71 while BDF3's and BDF4's run left
        # of it from the origin, so an undamped mode there is stable at order 5 and
        # grows at 4 (stiff_pendulum, stiff_holdout6.py: the guard moved it from 5 to 4)
        phi = torch.deg2rad(angle)
        z = torch.complex(-hs * torch.cos(phi), hs * torch.sin(phi))
        lower, this = amplification(z, order - 1, ndf), amplification(z, order, ndf)
        # a mode the roots cannot be read at (non-finite) keeps the ratio test's verdict
        damps = (lower < this) | ~(torch.isfinite(lower) & torch.isfinite(this))
        return near & reach & damps

    # --- dense output ---------------------------------------------------------------------
    def extra_stages(self, g, s, y, h, ks):
        return ks

    def interpolate(self, theta, y0, y1, f0, f1, h, ks, derivative=False):
        """``y(s + θh) = Σ_j p_j(θ) ∇ʲ y_{n+1}`` with ``p_j = Π_{i<j} (θ − 1 + i)/(i + 1)``:
        the step's polynomial through ``y_{n+1}`` and the ``k`` points before it (on the
        spacing ``h``); its ``d/dθ`` with ``derivative``.  ``theta [K]`` or ``[K, m]`` ->
        ``[K, n]`` or ``[K, m, n]``."""
        if theta.dim() == 1:
            return self.interpolate(theta[:, None], y0, y1, f0, f1, h, ks, derivative)[:, 0]
        th = theta.to(y0.dtype)  # [K, m]
        i = torch.arange(ks.shape[0] - 1, dtype=th.dtype, device=th.device)
        x = (th[:, :, None] - 1 + i) / (i + 1)  # [K, m, M]
        p = torch.cumprod(x, dim=2)
        if not derivative:
            return ks[0][:, None] + torch.einsum("kmj,jkn->kmn", p, ks[1:])
        # p_j = p_{j−1} x_j, x_j' = 1/(j + 1): the product rule as a recurrence (a
        # quotient p_j/x_i would divide by the x_i that vanish on the nodes)
        dp = [torch.ones_like(th)]
        for j in range(1, x.shape[2]):
            dp.append(dp[-1] * x[:, :, j] + p[:, :, j - 1] / (j + 1))
        return torch.einsum("kmj,jkn->kmn", torch.stack(dp, dim=2), ks[1:])


def _stability_limited(D, error, scale, order, mode=None):
    """``[K]``: rows at order ``k ≥ 3`` whose differences do not decay,
    ``‖∇^{k+1} y‖ > STABILITY_RATIO·‖∇ᵏ y‖``, while the estimate ``error`` is above
    ``STABILITY_ERROR`` (norms in units of ``scale``), and whose mode could lie in the
    order's lobe (``mode``: a callable ``(v [K, n], order [K]) -> [K]`` bool, see
    :meth:`BDFRuntime._in_lobe`; None: every mode could).

    Why: for a solution the step resolves, ``‖∇^{j+1} y‖/‖∇ʲ y‖ ≈ h/τ`` (``τ`` its time
    scale; median 0.06–0.09 at the order decisions on the stiff suite, above 0.5 at 2–3 %
    of them: ``studies/benchmarks/bdf_stability_limit.py``).  A ratio near 1 says
    the high differences are those of a mode with ``|hλ| ≳ 1`` at the noise level (a
    mode of amplitude well above the tolerance would give a far larger estimate).  At
    orders 3–5 that is what a weakly damped oscillatory mode looks like when ``hλ`` sits
    on the edge of the lobe beside the imaginary axis that their stability regions leave
    out (BDF3: ``|hλ| ≤ 1.9``, NDF3 ``3.5``, BDF/NDF5 ``9.4``, from the boundary locus):
    the mode grows inside the lobe, its growth is what the estimate sees, and the
    controller holds ``h`` at the edge for the rest of the solve, while the lower order,
    whose estimate is of the same size there, has a smaller lobe (order 2 none).  On the
    hold-out problem ``unstable_stiff`` (a pair ``−100 ± 1000i``, 84.3° from the negative
    real axis: outside NDF3's 80.4° sector) ndf without the guard stayed at order 3 and
    ``h ≈ 1e-3`` for 22 650 steps at rtol 1e-6, 3368 with it (same script).

    The mode test (``mode``): a ratio near 1 also comes from a component whose
    differences are its Newton noise, one decaying at ``|hλ|`` of hundreds on the
    negative real axis, which every order damps; only a mode whose angle from the
    negative real axis exceeds the order's A(α) can be in its lobe (the test starts
    ``SECTOR_MARGIN`` inside it: a mode at the edge is hardly damped), a decaying one
    only while ``h|λ|`` is within reach of it; and lowering must damp it: the lower
    order's largest root at ``hλ`` below this one's (an undamped mode at ``|hλ| < 0.71``
    is stable at order 5 and grows at orders 3 and 4).

    CVODE's STALD (Hindmarsh 1992) detects the same trap from the growth of the scaled
    derivatives over five steps and lowers the order too; this is a simpler test on
    the differences the order rule already has."""
    estimate = (error / scale).pow(2).mean(dim=1).sqrt()
    ratio = difference_ratio(D, scale, order)
    held = (order >= 3) & (ratio > STABILITY_RATIO) & (estimate > STABILITY_ERROR)
    if mode is None or not bool(held.any()):
        return held
    idx = order[None, :, None].expand(1, *D.shape[1:])
    return held & mode(D.gather(0, idx + 1)[0], order)


def lobe_mode(apply_J, v: torch.Tensor, scale: torch.Tensor):
    """``(|λ|, angle)`` [K] of the mode in the direction ``v`` [K, n]: the Ritz value of
    ``J`` on the Krylov plane ``span{v, Jv}`` (two steps of Arnoldi in the inner product
    weighted by ``1/scale²``, where ``J`` is similar to ``diag(1/scale) J diag(scale)``)
    and its angle from the negative real axis in degrees (0: decaying, 90: undamped,
    180: growing).  ``apply_J``: ``x [K, n] -> J x``.  Of a complex Ritz pair either;
    of two real ones, the one whose Ritz vector leans most on ``v``.

    Exact where ``v`` lies in a two-dimensional invariant subspace of ``J`` (a complex
    pair, normal or not: a damped oscillator ``x' = u, u' = −ω²x − cu`` seen from
    ``v = (1, 0)``, where the Rayleigh quotient ``⟨v, Jv⟩/‖v‖²`` alone reads 0 and
    ``‖Jv‖/‖v‖`` reads ``ω²``) or along one real eigenvector."""

    def dot(a, b):
        return (a * b).sum(dim=1)

    def J_w(x):  # the weighted J: diag(1/scale) J diag(scale)
        return apply_J(x * scale) / scale

    u = v / scale
    q1 = u / dot(u, u).sqrt().clamp_min(1e-300)[:, None]
    w = J_w(q1)
    h11 = dot(q1, w)
    w = w - h11[:, None] * q1
    h21 = dot(w, w).sqrt()
    # h21 ≈ 0: v is an eigenvector (q2 = 0 leaves H = [[h11, 0], [0, 0]], Ritz value h11)
    q2 = torch.where(h21[:, None] > 0, w / h21.clamp_min(1e-300)[:, None], 0.0)
    w2 = J_w(q2)
    h12, h22 = dot(q1, w2), dot(q2, w2)
    half_trace = (h11 + h22) / 2
    disc = half_trace**2 - (h11 * h22 - h12 * h21)
    root = disc.abs().sqrt()
    # a real pair: the Ritz vector (λ − h22, h21) of each, its share on q1
    lam = torch.stack([half_trace + root, half_trace - root])
    share = (lam - h22).abs() / ((lam - h22).pow(2) + h21**2).sqrt().clamp_min(1e-300)
    real = torch.where(share[0] >= share[1], lam[0], lam[1])
    im = torch.where(disc < 0, root, 0.0)
    re = torch.where(disc < 0, half_trace, real)
    return torch.hypot(re, im), torch.rad2deg(torch.atan2(im, -re))


def difference_ratio(D, scale, order):
    """``‖∇^{k+1} y‖/‖∇ᵏ y‖`` ``[K]`` (RMS norms in units of ``scale`` ``[K, n]``) of the
    differences ``D [MAX_ORDER + 3, K, n]`` at each row's order ``k`` (``order [K]``):
    the test of :func:`_stability_limited` (inf where ``∇ᵏ y`` is 0)."""
    idx = order[None, :, None].expand(1, *D.shape[1:])

    def norm(x):
        return (x / scale).pow(2).mean(dim=1).sqrt()

    return norm(D.gather(0, idx + 1)[0]) / norm(D.gather(0, idx)[0])


def _rows(host: bool, mask):
    """A ``[K]`` decision applied to ``[K, n]`` tensors (a bool for one system)."""
    return mask if host else mask[:, None]


def _empty_state(y, size: int, s):
    """``(history [size, K, n] zeros, order 1, spacing NaN: not started, 0 steps)``."""
    order = torch.ones(y.shape[0], dtype=torch.long, device=y.device)
    return y.new_zeros(size, *y.shape), order, torch.full_like(s, math.nan), 0 * order


def _start(state, y, f0):
    """Rows not started yet (spacing NaN) begin their history from the step's own
    arguments: ``[y, 1·f0]`` (BDF, ``y`` given) or ``[f0]`` (Adams), on spacing 1."""
    H, order, h_H, n_steps = state
    fresh = torch.isnan(h_H)
    if not bool(fresh.any()):
        return state
    first = [f0] if y is None else [y, f0]
    start = torch.cat([torch.stack(first), H[len(first) :]])
    H = torch.where(fresh[None, :, None], start, H)
    return H, order, _spacing(h_H), n_steps


def _spacing(h_H):
    """The history's spacing, 1 where it has not started (NaN): the start's ``[y, 1·f0]``
    (or ``[f0]``) is a history on spacing 1."""
    return torch.where(torch.isnan(h_H), torch.ones_like(h_H), h_H)


def _next_order(order, n1, errors, scale, q, max_order):
    """Scipy's order rule, once ``k + 1`` steps were accepted at order ``k`` (``n1``
    counts them): of the estimates ``errors = (e_{k−1}, e_k, e_{k+1})`` ``[K, n]``,
    the one that allows the largest step ``‖e/scale‖^{−1/(q_j + 1)}`` wins, where
    ``q = q_k`` ``[K]`` is the order of the current estimate (``k`` for BDF, ``k + 1``
    for Adams).  Returns ``(order [K], steps at it [K])``."""
    due = n1 >= order + 1
    inf = torch.full_like(scale[:, 0], math.inf)
    norms = [(e / scale).pow(2).mean(dim=1).sqrt() for e in errors]
    norms = torch.stack(
        [
            torch.where(order > 1, norms[0], inf),
            norms[1],
            torch.where(order < max_order, norms[2], inf),
        ],
        dim=1,
    )
    expo = -1.0 / (q[:, None] + torch.arange(3, device=q.device)).to(norms.dtype)
    factors = torch.nan_to_num(norms**expo, nan=0.0)
    delta = factors.argmax(dim=1) - 1
    return torch.where(due, order + delta, order), torch.where(due, 0, n1)


def _update_differences(D, d, order):
    """The differences after an accepted step: ``∇^{k+2} = d − ∇^{k+1}_old``,
    ``∇^{k+1} = d``, ``∇ʲ += ∇^{j+1}`` downwards (scipy's update, per-row order)."""
    j = torch.arange(D.shape[0], device=D.device)[:, None]  # [M + 3, 1]
    k = order[None, :]
    low = (j <= k)[:, :, None]
    tail = torch.flip(torch.cumsum(torch.flip(D * low, [0]), dim=0), [0])
    D_k1 = D.gather(0, (order + 1)[None, :, None].expand(1, *D.shape[1:]))[0]
    out = torch.where(low, tail + d, D)
    out = torch.where((j == k + 1)[:, :, None], d, out)
    return torch.where((j == k + 2)[:, :, None], d - D_k1, out)


# --- variable-step, variable-order Adams–Bashforth–Moulton (PECE) -------------------------

# predictor orders 1 … 7, corrector one higher.  LSODA goes to 12 in Nordsieck form; in
# this quasi-constant-step difference form 11 failed with step underflow on
# Lotka–Volterra and Van der Pol μ = 1 at rtol 1e-7 … 1e-10 (interpolating
# high-degree polynomials across step changes is unstable), 7 solved them with
# fewer f-evaluations than 4 did (e.g. 1224 against 2604 at 1e-10)
ADAMS_MAX_ORDER = 7


def _adams_integrals(m: int) -> list[list]:
    """Exact coefficients (lowest power first) of ``I_j(u) = ∫₀ᵘ s(s+1)…(s+j−1)/j! ds``,
    ``j = 0 … m``: Newton's backward-difference form of the integrated interpolant,
    ``y(t_{n+1} + u h) = y_{n+1} + h Σ_j I_j(u) ∇ʲ f_{n+1}``."""
    from fractions import Fraction

    from odenet._multistep import _poly_mul

    out = []
    p = [Fraction(1)]
    for j in range(m + 1):
        if j:
            p = [c / j for c in _poly_mul(p, [Fraction(j - 1), Fraction(1)])]
        out.append([Fraction(0)] + [c / (i + 1) for i, c in enumerate(p)])
    return out


def _adams_gammas(m: int) -> tuple[list, list]:
    """Exact ``(γ_j, γ*_j)``, ``j = 0 … m``: Adams–Bashforth ``γ_j = I_j(1)`` and
    Adams–Moulton ``γ*_j = −I_j(−1)`` (Hairer, Nørsett & Wanner I, III.1)."""
    integrals = _adams_integrals(m)
    ab = [sum(c) for c in integrals]
    am = [-sum(x * (-1) ** i for i, x in enumerate(c)) for c in integrals]
    return ab, am


_INTERVALS: dict = {}


def adams_real_intervals(max_order: int = ADAMS_MAX_ORDER) -> np.ndarray:
    """``x_k``, ``k = 0 … max_order``: the real stability interval ``(−x_k, 0)`` of
    :class:`VariableAdams`' step at predictor order ``k`` on a constant step — the PECE
    step with local extrapolation, as it is propagated — found from the spectral radius
    of its linear map on ``y' = λy`` (state ``y, ∇⁰f … ∇^(k−1)f``), ``z = hλ``, by a scan
    in steps of 0.01 and bisection to 1e-9.  ``x_0`` is unused (0).  Order 1 is Heun's
    method (2.0); then 2.40, 1.94, 1.41, 1.04, 0.77, 0.58 for orders 2 … 7."""
    if max_order in _INTERVALS:
        return _INTERVALS[max_order]
    g = [float(x) for x in _adams_gammas(max_order + 1)[0]]

    def radius(z: float, k: int) -> float:
        n = k + 1
        M = np.zeros((n, n))
        for c in range(n):
            v = np.zeros(n)
            v[c] = 1.0
            phi = v[1:]
            y_p = v[0] + sum(g[j] * phi[j] for j in range(k))
            y1 = y_p + g[k] * (z * y_p - phi.sum())
            new = [z * y1]
            for j in range(k - 1):
                new.append(new[-1] - phi[j])
            M[:, c] = [y1, *new]
        return float(np.abs(np.linalg.eigvals(M)).max())

    out = np.zeros(max_order + 1)
    for k in range(1, max_order + 1):
        lo, hi = 0.0, None
        for x in np.arange(0.01, 20.0, 0.01):
            if radius(-x, k) > 1 + 1e-12:
                hi = x
                break
            lo = x
        if hi is None:
            out[k] = lo
            continue
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if radius(-mid, k) <= 1 + 1e-12 else (lo, mid)
        out[k] = lo
    _INTERVALS[max_order] = out
    return out


@dataclass(frozen=True)
class VariableAdams:
    """Adaptive variable-step, variable-order Adams–Bashforth–Moulton in PECE mode.

    The non-stiff multistep workhorse (LSODA's non-stiff side, torchdiffeq's
    ``adams``): two ``f`` evaluations per step at any order, orders 2 … 8.  The
    history is the backward differences of ``f`` (same quasi-constant-step machinery
    and order rule as :class:`VariableBDF`): predictor of order ``k``
    ``y^p = y_n + h Σ_{j<k} γ_j ∇ʲ f_n``, evaluate, corrector of order ``k + 1``
    ``y_{n+1} = y^p + h γ_k ∇ᵏ f^p_{n+1}``, evaluate.  The error estimate is the
    order-``k`` corrector's, ``h γ*_k ∇ᵏ f_{n+1}``, while the order-``k + 1`` result is
    propagated (local extrapolation, as Shampine & Gordon's DE/STEP), so the local
    errors, one order smaller than the estimate, do not add up to ``N·rtol`` over
    ``N`` steps.  Dense output: the integrated interpolant of ``f`` (degree ``k + 1``).
    A step outside the real stability interval of its order fails (the estimate does
    not see a parasitic root's smooth growth; see ``AdamsRuntime._excess``).

    References: Hairer, Nørsett & Wanner I, Sec. III.1 and III.7; Shampine &
    Gordon, *Computer Solution of ODEs* (1975).
    """

    name: str
    order = ADAMS_MAX_ORDER + 1
    error_order = 1  # the first step's (Euler against trapezoid)
    is_implicit = False
    is_explicit = True
    is_adaptive = True
    default_controller = "PI"
    adjoint_method = "dopri5"  # sensitivity="adjoint": the reverse solve's method

    def __repr__(self) -> str:
        return f"VariableAdams({self.name!r}: variable-step ABM PECE, orders 2–{self.order})"

    def runtime(self, dtype, time_dtype, device, newton=None, *, fixed: bool = False):
        """The loop's method object (history as method state) for one solve."""
        return AdamsRuntime(self, dtype, time_dtype, device)

    def check_use(self, *, fixed: bool | None = None, sensitivity: str = "direct") -> None:
        """Raise :class:`InputError` unless the method can run this way."""
        fixed_members = "a fixed-step Adams method (ab1 … ab6, am1 … am6, abm2 … abm6)"
        _check_use(self.name, fixed_members, fixed, sensitivity)


class AdamsRuntime:
    """The method protocol of the loop for :class:`VariableAdams`, with state
    ``(Φ [ADAMS_MAX_ORDER + 3, K, n], order [K], h_Φ [K], n_steps [K])``: the backward
    differences of ``f``, each row's order, their spacing, steps at the order."""

    has_state = True
    has_own_interpolant = True
    implicit = False
    newton = None
    commit_state = staticmethod(BDFRuntime.commit_state)
    extra_stages = BDFRuntime.extra_stages

    def __init__(self, method: VariableAdams, dtype, time_dtype, device):
        self.tableau = method
        self.track_grad = False
        ab, am = _adams_gammas(ADAMS_MAX_ORDER + 2)
        self.g_ab = torch.tensor([float(x) for x in ab], dtype=dtype, device=device)
        self.g_am = torch.tensor([float(x) for x in am], dtype=dtype, device=device)
        self.size = ADAMS_MAX_ORDER + 3
        # dense output: I_j(u) as a [size, size + 1] table of polynomial coefficients
        table = torch.zeros(self.size, self.size + 1, dtype=dtype, device=device)
        for jj, coeffs in enumerate(_adams_integrals(self.size - 1)):
            table[jj, : len(coeffs)] = torch.tensor([float(x) for x in coeffs], dtype=dtype)
        self._integrals = table
        self._U = _R(torch.ones(1, dtype=dtype, device=device), self.size)
        self.atol, self.rtol = 1e-8, 1e-6  # solve's defaults, until tolerances() is called
        # the real stability interval per predictor order (see step)
        self.intervals = torch.tensor(adams_real_intervals(), dtype=dtype, device=device)

    def tolerances(self, atol, rtol) -> None:
        """The solve's ``atol``, ``rtol`` (numbers or ``[K, n]``): the order rule
        measures the candidate estimates in them, as the controller does."""
        self.atol, self.rtol = atol, rtol

    def init_state(self, s, y, f0):
        """Order 1, no history yet: the first step takes ``Φ[0] = f0`` from its argument."""
        return _empty_state(y, self.size, s)

    def restart_state(self, state, y, f0):
        """After a discontinuity of the field (``jump_t``): order 1 with the history
        ``[f0]`` on the last spacing (see :meth:`BDFRuntime.restart_state`)."""
        Phi, order, h_P, n_steps = state
        h = _spacing(h_P)
        return torch.cat([f0[None], torch.zeros_like(Phi[1:])]), 1 + 0 * order, h, 0 * n_steps

    def step(self, g, s, y, h, f0, state):
        Phi, order, h_P, n_steps = _start(state, None, f0)
        dt = y.dtype
        frozen = h == 0
        h_safe = torch.where(frozen, h_P, h)
        factor = (h_safe / h_P).detach().to(dt)
        if not bool((factor == 1).all()):
            Phi = torch.einsum(
                "kij,ikn->jkn", _rescale_matrix(factor, order, self.size, self._U), Phi
            )
        j = torch.arange(self.size, device=y.device)[:, None]
        hy = h_safe.to(dt)[:, None]
        w = torch.where(j < order[None, :], self.g_ab[: self.size, None], 0.0)
        y_p = y + hy * (Phi * w[:, :, None]).sum(dim=0)
        t1 = s + h_safe
        f_p = g(t1, y_p)
        # ∇ʲ f^p_{n+1} for j ≤ k: the new point's differences against the history
        nab_k = f_p - (Phi * (j < order[None, :])[:, :, None]).sum(dim=0)
        y1 = y_p + hy * self.g_ab[order][:, None] * nab_k
        f1 = g(t1, y1)
        # the differences with the corrected f: Φ'[0] = f1, Φ'[j+1] = Φ'[j] − Φ[j]
        tail = torch.cumsum(torch.cat([f1[None], -Phi[:-1]]), dim=0)
        Phi_new = torch.where(j[:, :, None] <= order[None, :, None] + 2, tail, Phi)
        with torch.no_grad():
            P_ = Phi_new.detach()
            idx = order[None, :, None].expand(1, *y.shape)
            hd = hy.detach()
            err = hd * self.g_am[order][:, None] * P_.gather(0, idx)[0]
            e_lo = hd * self.g_am[order - 1][:, None] * P_.gather(0, (idx - 1).clamp(min=0))[0]
            e_hi = hd * self.g_am[order + 1][:, None] * P_.gather(0, idx + 1)[0]
            ok = torch.isfinite(y1).all(dim=1)
            scale = tolerance_unit(self.atol, self.rtol, y, y1.detach())
            excess = self._excess(y_p, y1.detach(), f_p, f1.detach(), hd[:, 0], order, scale)
            n1 = n_steps + 1
            order_new, n_new = order, n1
            if bool((n1 >= order + 1).any()):
                order_new, n_new = _next_order(
                    order, n1, (e_lo, err, e_hi), scale, order, ADAMS_MAX_ORDER
                )
            # a step beyond the stability interval is rejected through its estimate, sized
            # so that the controller's factor (exponent 1/(order + 1)) lands inside it
            err = torch.where(
                (excess > 1)[:, None],
                torch.maximum(err.abs(), 2 * scale * excess.pow(order + 1)[:, None]),
                err,
            )
        # dense output: the integrated interpolant of f through t_{n+1} … t_{n+1−k}
        ks = Phi_new * (j <= order[None, :])[:, :, None]
        result = BDFStepResult(y1, err, ks, f1, ok | frozen, error_order=order)
        return result, (Phi_new, order_new, h_safe.detach(), n_new)

    def _excess(self, y_p, y1, f_p, f1, h, order, scale):
        """``−q h / x_k`` per row ([K], at most 1e3; 0 where nothing is seen): above 1 the
        step lies outside the real stability interval of its order.

        The error estimate cannot see this: on ``y' = −100 y`` at rtol = atol = 0.1 the
        controller settled on ``hλ ≈ −3.4``, beyond every order's interval (at most 2.4,
        :func:`adams_real_intervals`), where the step has a real parasitic root near 4.5:
        the solution grew smoothly by 4.5× per step, its differences of ``f`` stayed small
        against ``f``, the estimate at 0.02·|y| under rtol, and the solve ended at −2e85
        with status ok.  As LSODA's stiffness test, the step's two evaluations give the
        field's rate along the corrector's change, the Rayleigh quotient
        ``q = ⟨f1 − f^p, y1 − y^p⟩ / |y1 − y^p|²`` (λ itself on ``y' = λy``); a step with
        ``−q h`` beyond the interval of its order is rejected (its estimate is raised so
        that the controller's next step lies inside; a row that cannot get inside ends in
        a step-size underflow).  A change below 1e-3 of the tolerance says nothing
        (round-off)."""
        dy = y1 - y_p
        q = ((f1 - f_p) * dy).sum(dim=1) / (dy * dy).sum(dim=1).clamp_min(1e-300)
        seen = (dy / scale).pow(2).mean(dim=1).sqrt() > 1e-3
        excess = (-q * h.to(q.dtype) / self.intervals[order]).clamp(0.0, 1e3)
        return torch.where(seen, torch.nan_to_num(excess), torch.zeros_like(excess))

    def interpolate(self, theta, y0, y1, f0, f1, h, ks, derivative=False):
        """``y(s + θh) = y_{n+1} + h Σ_j I_j(θ − 1) ∇ʲ f_{n+1}`` (degree ``k + 1``, the
        corrector's order; the cubic Hermite through the step's ends left errors of
        80·rtol between the steps at rtol 1e-10 where the nodes had 0.3·rtol); its
        ``d/dθ`` with ``derivative``.
        ``theta [K]`` or ``[K, m]`` -> ``[K, n]`` or ``[K, m, n]``."""
        if theta.dim() == 1:
            return self.interpolate(theta[:, None], y0, y1, f0, f1, h, ks, derivative)[:, 0]
        u = theta.to(y0.dtype) - 1  # [K, m]
        p = torch.arange(self.size + 1, device=u.device).to(u.dtype)
        if derivative:  # p·u^(p−1), with the constant term's 0·u^(−1) read as 0
            powers = p * u[:, :, None] ** (p - 1).clamp_min(0)
        else:
            powers = u[:, :, None] ** p
        weights = torch.einsum("kmp,jp->kmj", powers, self._integrals)  # I_j(u) or I_j'(u)
        hy = h.to(y0.dtype)[:, None, None]
        step = hy * torch.einsum("kmj,jkn->kmn", weights, ks)
        return step if derivative else y1[:, None] + step


METHODS: dict = {
    "bdf": VariableBDF("bdf", ndf=False),
    "ndf": VariableBDF("ndf", ndf=True),
    "adams": VariableAdams("adams"),
}
