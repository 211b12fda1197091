"""Adaptive Radau IIA of orders 3, 5 and 9: Hairer's RADAU5 / RADAU as a method of the loop.

The ``s``-stage Radau IIA collocation method (:func:`odenet.tableau` ``"radau_iia3"``,
``"radau_iia5"``, ``"radau_iia9"``: ``s = 2, 3, 5``, order ``2s − 1``) with the machinery
that makes it the reference stiff solver (Hairer & Wanner II, Sec. IV.8, their codes
``radau5.f`` and the variable-order ``radau.f``; for ``s = 3`` the same choices as
scipy's ``Radau``).  One implementation, parametrised by the tableau; every constant
is derived from the tableau's coefficients at 50 digits (:func:`radau_constants`):

* **Simplified Newton on the eigen-decomposition of ``A⁻¹``.**  ``A⁻¹ = T Λ T⁻¹``
  with one real eigenvalue ``γ̂`` when ``s`` is odd and ``⌊s/2⌋`` complex pairs
  ``α_k ± iβ_k``; in the variables ``W = (T⁻¹ ⊗ I) Z`` the ``sn × sn`` iteration matrix
  splits into one real ``n × n`` system ``(γ̂/h − J)`` and one complex system
  ``((α_k + iβ_k)/h − J)`` per pair: for ``s = 3`` one real and one complex LU, for
  ``s = 5`` one real and two complex, for ``s = 2`` one complex.
* **Jacobian reuse.**  ``J`` is kept across steps and recomputed after an accepted
  step only when the Newton iteration there was slow (more than two iterations at
  a contraction rate above 1e-3), or when the iteration fails on a stale ``J``.
  For ``s = 3`` a slow iteration on a ``J`` evaluated at that step's start keeps it
  when the same iteration at twice the rate would still converge within the cap
  (:func:`kept_jacobian_converges`; the factor 2 doubles after a kept ``J`` fails
  where a fresh one converges, and halves back after one that converges): 0.57–1.0×
  scipy Radau's Jacobians on the stiff set, where scipy's rule alone gave 0.88–1.03×.
  The LU factors are kept while ``h`` and ``J`` do not change.
* **Starting guess** from the previous step's collocation polynomial, extrapolated
  to the new stage times.
* **Error estimate**: an embedded solution ``ŷ1 = y0 + h (γ₀ f(y0) + Σ b̂_i k_i)`` of
  order ``s`` (``s + 1`` conditions ``Σ b̂ c^(k−1) + γ₀[k = 1] = 1/k``, ``k ≤ s``), so
  ``ŷ1 − y1 = γ₀ h (f0 + Σ e_i Z_i / h)`` with ``e = −A⁻ᵀ V⁻ᵀ e₁``
  (``V_ik = c_i^(k−1)``), whatever ``γ₀`` — these are radau5.f's ``DD`` for ``s = 3``
  and radau.f's for ``s = 5, 7``.  The estimate is *filtered* so that stiff
  components are damped: ``s`` odd, ``γ₀ = 1/γ̂`` and
  ``err = (I − hγ₀J)⁻¹ (ŷ1 − y1) = (γ̂/h − J)⁻¹ (f0 + Σ e_i Z_i / h)`` through the real
  LU (Hairer's); ``s = 2`` has no real eigenvalue, so the filter is the real part of
  the complex pair's resolvent, ``err = Re((μ/h − J)⁻¹) (f0 + Σ e_i Z_i / h)`` (one
  complex solve): like Hairer's it is ``γ₀ h r`` where ``hJ`` is small (``γ₀ = Re(1/μ)``;
  the reported estimate is scaled by ``|μ|/Re μ`` to ``γ₀ = 1/|μ|``), damps a stiff
  component like ``1/(hλ)`` and turns a stiff transient into ``−y0`` exactly, so the
  second filtering below sees it removed.  (The real product of
  the pair, ``|μ|² ((μ/h − J)(μ̄/h − J))⁻¹ / h²``, used before, damps like ``1/(hλ)²``:
  the estimate fell to 1e-6 of the local error at ``hλ = −1e6`` on Prothero–Robinson,
  and radau_iia3 ended at 33–1100× scipy Radau's error there, status ok;
  ``studies/benchmarks/stiff_holdout.py``.)  The estimate is of order
  ``h^(s+1)`` (the controller's exponent is ``1/(s + 1)``).  After a rejection (and on
  the first step) a second filtering of ``f(y0 + err) + Σ e_i Z_i / h`` is used when
  the first estimate says reject, as in Hairer's codes (not where Newton failed: that
  step is rejected whatever its estimate).  For ``s = 2`` the estimate is
  multiplied by ``κ = 8·rtol^(−1/8)`` and Newton stops at ``min(scipy's threshold,
  3e-4)`` in units of ``tol/κ`` (:func:`radau_error_safety`), so that its error is
  within 10× of RADAU5's at the same ``rtol``.
* **Stiffness loss** (odd ``s``): a step the filtered estimate accepts is rejected
  where a component the start's ``J`` damped more than fourfold is damped more than
  four times less by the ``J`` at the step's end (a fold: a stick–slip oscillator
  leaving the stuck state), since the start's filter then hides the step's own error
  (``RadauIIA._stiffness_lost``; at most one ``f`` for a step that needs the test).
* **Dense output**: the collocation polynomial (degree ``s``) through ``y0`` and the
  ``s`` stage values.
* A Newton failure (divergence, or no convergence in ``max_iter`` iterations with
  a fresh Jacobian) makes the step fail (``ok = False``); the controller shrinks it
  by its ``newton_factor`` (the predictive controller halves), except that radau_iia5
  (RADAU5's method), where the iteration was stopped because it was predicted not to
  converge within the cap, gives RADAU5's milder factor
  ``0.8·q^(−1/(3 + m))`` (:func:`newton_shrink`) in its step result.

Gustafsson's predictive controller and RADAU5's "keep ``h`` when the factor is
in ``[1, 1.2]`` so the LU can be reused" live on the controller side
(:class:`odenet._controller.PredictiveController`); as in scipy's ``Radau``, ``h`` is
not kept when the step reports ``refresh`` (a Jacobian is due: the LU is refactorised
anyway); it reports ``safety = (2M + 1)/(2M + n)`` after ``n`` Newton iterations, by which
the loop scales the controller's safety factor (as radau5.f and scipy do); radau_iia5 also
reports the rows whose estimate came from the second filtering (``refiltered``), after
which the controller takes the classical factor alone (:class:`RadauStepResult`).  The
Newton stopping threshold is scipy's ``max(10 ε / rtol, min(0.03, √rtol))``, applied to
Hairer's and scipy's error left after the iteration (one rate for the whole increment)
and, up to :data:`COMPONENT_NEWTON_TOL`, to that error estimated from a contraction rate
per state component (:func:`_remaining`; the one-rate test alone stopped Newton on stages far from
the collocation solution where one direction converged slowly under a fast one); on the
first ratio of a component that reads :data:`FIRST_RATIO_DOUBT` or slower the looser
bound is not taken, and on a kept Jacobian neither is; the iteration cap is 6 for
``s ≤ 3`` (scipy, radau5.f 7) and radau.f's ``7 + 2.5 (s − 3)`` above (12 for
``s = 5``); ``solve``'s ``newton_max_iter`` overrides the cap when it is not the
adaptive default 8; ``newton_tol`` is not used.

The method protocol is the loop's (see :mod:`odenet._stepper`): ``step`` returns a
``StepResult`` whose ``error`` is the absolute local error estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy
import torch

from odenet._jacobian import batched_jacobian, lu_shifted
from odenet._newton import (
    DIRK_NEWTON_TOL,
    FLOOR_TRUST_RATE,
    Newton,
    capped_safety,
    hairer_newton_tol,
    roundoff_factor,
)
from odenet._ops import HostOps, TensorOps
from odenet._stepper import LastStep, RungeKutta, StepResult, tolerance_unit

_DPS = 50  # digits of the derivations below (the s = 5 tableau has 50-digit entries)


@dataclass(frozen=True)
class RadauConstants:
    """The constants of the ``s``-stage Radau IIA machinery, float64 numpy arrays.

    ``A⁻¹ T = T Λ``: ``T``'s columns are the real eigenvector (``s`` odd, eigenvalue
    ``mu_real``), then ``Re v_k, Im v_k`` for each complex pair (``mu_complex[k]``, with
    ``Im < 0``, is the conjugate of ``v_k``'s eigenvalue); every eigenvector is scaled
    to last component 1 (scipy's and Hairer's ``T`` for ``s = 3``).  ``E`` [s]: the
    embedded-estimate weights ``e``; ``P`` [s, s]: the collocation polynomial
    ``y(t0 + θh) = y0 + Σ_m θ^(m+1) Σ_i P[i, m] Z_i``.
    """

    s: int
    A_inv: np.ndarray
    T: np.ndarray
    TI: np.ndarray
    mu_real: float | None
    mu_complex: tuple
    E: np.ndarray
    P: np.ndarray


_CONSTANTS: dict = {}


def radau_constants(tab) -> RadauConstants:
    """:class:`RadauConstants` of a Radau IIA tableau, derived from its exact
    coefficients at 50 digits (cached per tableau object)."""
    key = id(tab)
    hit = _CONSTANTS.get(key)
    if hit is not None and hit[0] is tab:
        return hit[1]
    s = tab.stages
    with mpmath.workdps(_DPS):
        A = mpmath.matrix([[mpmath.mpf(str(sympy.N(x, _DPS))) for x in r] for r in tab.A_exact])
        c = [mpmath.mpf(str(sympy.N(x, _DPS))) for x in tab.c_exact]
        A_inv = A**-1
        lam, vecs = mpmath.eig(A_inv)
        cols, mu_real, mu_complex = [], None, []
        real = [k for k in range(s) if abs(mpmath.im(lam[k])) < mpmath.mpf(10) ** (-30)]
        if real:
            k = real[0]
            v = [mpmath.re(vecs[i, k] / vecs[s - 1, k]) for i in range(s)]
            cols.append(v)
            mu_real = float(mpmath.re(lam[k]))
        pairs = sorted(
            (k for k in range(s) if mpmath.im(lam[k]) > mpmath.mpf(10) ** (-30)),
            key=lambda k: float(abs(lam[k])),
        )
        for k in pairs:
            # A⁻¹ [Re v, Im v] = [Re v, Im v] [[a, b], [−b, a]] for λ = a + ib: in
            # W_r + i W_i the pair's system is ((a − ib)/h − J), so μ = conj(λ)
            v = [vecs[i, k] / vecs[s - 1, k] for i in range(s)]
            cols.append([mpmath.re(x) for x in v])
            cols.append([mpmath.im(x) for x in v])
            mu_complex.append(complex(mpmath.conj(lam[k])))
        T = mpmath.matrix([[cols[j][i] for j in range(s)] for i in range(s)])
        V = mpmath.matrix([[ci**k for k in range(s)] for ci in c])
        e1 = mpmath.matrix([1] + [0] * (s - 1))
        E = -(A_inv.T * (V.T) ** -1 * e1)
        Cp = mpmath.matrix([[ci ** (m + 1) for m in range(s)] for ci in c])

        def npf(M):
            return np.array(M.tolist(), dtype=float)

        out = RadauConstants(
            s=s,
            A_inv=npf(A_inv),
            T=npf(T),
            TI=npf(T**-1),
            mu_real=mu_real,
            mu_complex=tuple(mu_complex),
            E=npf(E).ravel(),
            P=npf(Cp.T**-1),
        )
    _CONSTANTS[key] = (tab, out)
    return out


# Measured (radau_orders_results.md): with S = 5 radau_iia3's error is 0.26–4.5× scipy
# Radau's on the five problems of STIFF_SUITE at rtol 1e-3 and 1e-6 (S = 3: up to 7.4×
# on the Oregonator, too close to the limit of 10×), for 2.3–3.1× its f-evaluations at
# 1e-3 and 6.8–8.2× at 1e-6 (an order-3 method held to an order-5 method's error); but
# 10.1× on HIRES at 1e-5 (stiff_accuracy.py), 6.3× with S = 8 for 16 % more f-calls.
ERROR_SAFETY_S2 = 8.0


def radau_error_safety(s: int, rtol: float, eps: float = 0.0) -> float:
    """``κ``, the factor the ``s``-stage estimate is multiplied by (1 for ``s ≥ 3``).

    The reference is the 3-stage method (RADAU5, scipy's ``Radau``): its estimate is of
    order ``h⁴`` and the local error of its solution of order ``h⁶``, so at ``rtol`` the
    solution's local error is ``∝ rtol^(3/2)``.  The ``s``-stage method's estimate is of
    order ``h^(s+1)`` and its solution's local error of order ``h^(2s)``: at an estimate
    ``tol'`` that error is ``∝ tol'^(2s/(s+1))``, the reference's when
    ``tol' = rtol^(3(s+1)/(4s))``.  ``κ = rtol/tol' = S·rtol^(−(3−s)/(4s))``:
    ``rtol^(−1/8)`` for ``s = 2``; the constant ``S`` (:data:`ERROR_SAFETY_S2`) is
    measured.  ``s ≥ 3`` keeps Hairer's estimate as it is (``κ < 1`` above ``s = 3``
    would loosen a method that is already more accurate than RADAU5).

    Why ``s = 2`` needs it: with ``κ = 1`` radau_iia3 ended at 14–74× scipy Radau's
    error at rtol 1e-6 and at 1.4·rtol on HIRES at 1e-3.  Most of the HIRES gap at
    1e-3 was Newton's (stopping at 1e-4 of the tolerance instead of 0.03 took it from
    54× to 7×; κ = 10 alone only to 26×): the stage order 2 leaves the estimate no
    margin over what Newton leaves in a slow component, as for the DIRK pairs, so
    Newton also stops at ``min(scipy's threshold, DIRK_NEWTON_TOL)`` in units of
    ``tol/κ``.  On Van der Pol the gap was the estimate's (κ = 10: 27× → 1.2×).

    Parameters
    ----------
    s : int, the number of stages.  rtol : float, the solve's (tightest) rtol.
    eps : float, the state dtype's machine epsilon: ``κ ≤ max(1, rtol/(100·eps))``, as
    :func:`odenet._newton.error_safety` (no relative error per step below what the
    dtype resolves); 0: no cap.

    Returns
    -------
    float ≥ 1.
    """
    if s >= 3:
        return 1.0

    def growth(r):
        return max(r, 1e-300) ** (-(3 - s) / (4 * s))

    return capped_safety(ERROR_SAFETY_S2, growth, rtol, eps, f"radau_iia{2 * s - 1}")


# A slow Newton iteration (more than two iterations at a last rate θ > 1e-3) makes scipy's
# Radau and RADAU5 evaluate J again after the step.  When that J was itself evaluated at the
# step's start (current), the slowness is the nonlinearity over the step, not J's age: the
# next step keeps it when the same iteration is predicted to converge on it within the cap
# (kept_jacobian_converges).  Its iteration then runs on a J one step older, at roughly
# twice the rate (the distance to J's point doubles); a slow iteration there (J no longer
# current) refreshes J as before, a failed one refreshes it and retries.
#
# "Twice the rate" is a prediction, and on some problems a Jacobian ages faster: on
# Burgers' moving front (stiff_holdout6.py, rtol 1e-3) the kept one failed on the next step
# at nine steps in a row, three iterations each before a fresh one converged (1.82x scipy
# Radau's f-evaluations), and on DETEST C5 after a fresh rate of ~3e-3.  So the factor is
# measured (RadauIIA.jacobian_aging): it doubles when a kept Jacobian fails where a fresh
# one converges, and halves back towards 2 when a kept one converges (1.82 -> 1.56x on
# Burgers, C5 1.21 -> 1.15x; stiff_results.md, 2026-12-05, session 29).
#
# The rule replaces a fixed bound θ < 0.2 (measured on the stiff set: 0.1 saved less, no
# bound cost 1.22x f-evaluations on HIRES at 1e-3).  That bound let
# θ = 0.19 after five iterations keep J, whose next iteration at ~0.38 cannot reach the
# same contraction in six: DETEST D5 at rtol 1e-6 failed Newton on the kept J at 12 steps
# in a row (1.22x scipy Radau's f-evaluations; studies/benchmarks/stiff_results.md,
# 2026-12-05), while θ = 0.25 after three iterations fits (five at 0.5).


def kept_jacobian_converges(n_iter: int, rate: float, cap: int, aging: float = 2.0) -> bool:
    """Whether a Newton iteration that took ``n_iter`` iterations at a last contraction
    rate ``rate`` on a Jacobian evaluated at its step's start would, on the same
    Jacobian one step older (rate ``aging·rate``, 2 unless a kept Jacobian has failed:
    see ``RadauIIA.jacobian_aging``), reach the same contraction ``rate^(n_iter − 1)``
    within ``cap`` iterations."""
    aged = aging * rate
    if aged >= 1.0:
        return False
    if rate <= 0.0:
        return True
    return 1 + (n_iter - 1) * math.log(rate) / math.log(aged) <= cap


def newton_shrink(ops, predicted, rate, m: int):
    """The factor for the next trial of a step whose simplified Newton iteration was
    stopped because it was predicted not to converge (Hairer's RADAU5): ``0.8 ·
    q^(−1/(3 + m))`` with ``q = min(predicted, 20)``, ``predicted`` the error left after
    the iteration cap, ``θ^m/(1 − θ) ‖ΔW‖`` in units of the Newton tolerance (≥ 1 at a
    failure), ``θ`` the last contraction rate and ``m`` the increments still allowed
    plus one.  A prediction just over the tolerance shrinks ``h`` by 0.8, one of 20 or
    more by 0.55 early in the iteration (``m = 5``).  Where the iteration diverged
    (``θ ≥ 1``) or is not finite the factor is NaN: the controller's own
    ``newton_factor`` (RADAU5 halves).  ``predicted``, ``rate``: floats, or ``[K]``
    tensors with :class:`odenet._ops.TensorOps`.

    Halving after every failure (before) made the steps after a Newton-limited one
    climb back to the size that failed: Gray–Scott pulse splitting at rtol 1e-3 took
    five Newton failures at h ≈ 50 and 473 f-evaluations where scipy's Radau takes 393
    (studies/benchmarks/stiff_results.md, session 40)."""
    factor = 0.8 * ops.clip(predicted, lo=1.0, hi=20.0) ** (-1.0 / (3 + m))
    valid = (rate < 1) & ops.isfinite(predicted)
    return ops.where(valid, factor, ops.full(math.nan, predicted))


# Where the classic one-rate test has stopped, the per-component estimate of the Newton
# error left (_remaining) need only be below this, in units of the local tolerance: the
# largest Newton tolerance scipy and RADAU5 use (min(0.03, rtol^½)).  The per-component
# test is there for a slow direction masked by one that converged at once (stick_slip:
# a remaining error of many tolerances, or a rate ≥ 1); at rtol 1e-6 (Newton tolerance
# 1e-3) it also asked for an extra iteration whenever a masked direction held 1e-3 … 3e-2
# of the tolerance, 40 steps in 259 on DETEST C1 (1.07x scipy's f-evaluations).  With
# 0.1 instead stick_slip at rtol 1e-3 ends 190x rtol off (stiff_results.md, 2026-12-05).
# Components that do not contract are held to the Newton tolerance itself (_remaining).
COMPONENT_NEWTON_TOL = 0.03

# A component whose first ratio (of the first two increments) is at or above this stops
# no Newton iteration after two increments: one more increment is read first.  The first
# increment carries what the other components' corrections feed into this one, so one
# ratio can read fast while the component stagnates.  hertz_bounce (stiff_holdout8.py) in
# free flight on the kept contact Jacobian: the height's first ratio read 0.72, its
# second 1.0; stopped after two increments its stages were 52 tolerance units off and
# radau_iia5 ended at 189-299x rtol at rtol 1e-6/3e-6, status ok.  Session 33 held the
# looser per-component bound to it; session 44 found the one-rate test and the
# per-component bound stopping there too on a kept Jacobian, both reading ~0.007 of the
# Newton tolerance left: hertz_bounce at rtol 1e-4, the height's first ratio 0.64 on a
# step 13 units off (82·rtol at the end, status ok), and stick_slip's last fold miss
# (1.096e-3, 102·rtol); on a kept Jacobian such a ratio now holds every stop (the
# generic Newton's three iterations on a stale one, in spirit): 1.3 and 0.15·rtol.  On a
# fresh Jacobian too it cost stiff_pendulum at rtol 1e-3 1.09 -> 1.24x scipy Radau's
# f-evaluations; kept only, 1.18x.  The stiff pendulum's first ratios of 0.5-0.83 all
# fell to 0.28 or less at the next increment (one more iteration each).  0.5 is where
# the one-ratio tail θ/(1 − θ) reaches the last increment itself: below it the component
# has at least halved.  (stiff_results.md, sessions 33, 44)
FIRST_RATIO_DOUBT = 0.5

# A step whose estimate the filter ``(I − hγ₀J)⁻¹`` accepts is rejected where the
# filter at the step's start damps some component more than LIMIT times more than the
# one at its end would (RadauIIA._stiffness_lost; the three constants below are its
# thresholds, LOOK that of the free look that decides whether to spend an f on it).
# Session 42 set UNITS = 0.1, END_UNITS = 0.01, LOOK = 2.  A second 40-rtol scan of
# stick_slip (stiff_holdout4.py) in session 43 found fold steps they let through, status
# ok at 155, 105 and 366·rtol, and a 16-rtol scan one at 204: a look of 1.83 (a secant
# over Newton's last update, 1e-4 in the velocity, as wide as the friction's ε, reads a
# Jacobian between J₀ and J₁), end reports of 3.4e-3 and 1.7e-3 units on steps 20 and
# 65 units off, and a raw estimate of 6e-3 units on a step 14 units off (left: testing
# raw estimates down to 1e-3 units put four hold-out cells over their count targets).
# Now 1 of 96 stick_slip rtols above 100·rtol (102, that last one), 4 before; the stiff
# grid and 154 hold-out cells: the same misses, Σ nfe +0.1 %, +0.05 % (stiff_results.md,
# sessions 42-43)
STIFFNESS_LOSS_LIMIT = 4.0
STIFFNESS_LOSS_UNITS = 0.1
STIFFNESS_LOSS_END_UNITS = 1e-3
STIFFNESS_LOOK = 1.5


def _end_product(g, t1, y1, f1, v, typical):
    """``J(t₁, y₁)·v`` [K, n] by one forward difference of ``f`` (``f1 = f(t₁, y₁)``),
    its step in each component at most √ε of that component's ``typical`` size
    (``|y| + atol/rtol``)."""
    reach = (v.abs() / typical).amax(dim=1, keepdim=True)
    step = math.sqrt(torch.finfo(v.dtype).eps) / torch.where(reach > 0, reach, 1.0)
    return (g(t1, y1 + step * v) - f1) / step


@dataclass
class RadauStepResult(StepResult):
    """A Radau IIA step and what it tells the controller beside its error (as
    :class:`odenet._bdf.BDFStepResult`): ``safety``, the factor its safety is scaled by
    after ``n`` Newton iterations; ``refresh``, a new Jacobian is due (the step is not
    held for an LU that will not be reused); ``refiltered``, the rows whose estimate came
    from the second filtering (``[K]`` bool, or None); ``newton_factor``, the factor
    for the next trial of a row whose Newton iteration failed (:func:`newton_shrink`;
    ``[K]``, NaN: the controller's own; None: every row solved)."""

    safety: float = 1.0
    refresh: bool = False
    refiltered: torch.Tensor | None = None
    newton_factor: torch.Tensor | None = None


class RadauNewton(Newton):
    """The Jacobian cache and counters of :class:`RadauIIA` (``Newton``'s interface).

    ``state_changed()`` (called by the loop after an accepted step) decides whether
    the next step gets a fresh Jacobian: only when the last iteration was slow.
    """

    def __init__(self, *, tol, max_iter, atol, rtol, jac=None, sparsity=None):
        super().__init__(
            tol=tol, max_iter=max_iter, atol=atol, rtol=rtol, jac=jac, sparsity=sparsity
        )
        self.slow = False  # the last Newton solve was slow: refresh J after acceptance

    def state_changed(self) -> None:
        self.J_fresh = False
        if self.slow:
            self.J = None  # recomputed at the start of the next step


class RadauIIA(RungeKutta):
    """Radau IIA with ``s`` stages (order ``2s − 1``) and Hairer's Newton, filtered
    error estimate and collocation dense output.

    Built by :func:`runtime_for` for a Radau IIA tableau on adaptive solves; same
    constructor as :class:`~odenet._stepper.RungeKutta`.
    """

    def __init__(self, tableau, dtype, time_dtype, device, newton):
        super().__init__(tableau, dtype, time_dtype, device, newton)
        k = radau_constants(tableau)
        self.k = k

        def T(x, dt=dtype):
            return torch.as_tensor(np.asarray(x), dtype=dt, device=device)

        cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.cdtype = cdt
        self.n_real = 0 if k.mu_real is None else 1
        self.T_mat = T(k.T)
        self.TI_mat = T(k.TI)
        r = self.n_real
        # rows of T⁻¹ for each complex pair, as one complex row: Re + i Im
        self.TI_pairs = torch.as_tensor(
            k.TI[r::2] + 1j * k.TI[r + 1 :: 2], dtype=cdt, device=device
        )  # [pairs, s]
        self.E = T(k.E)
        self.A_t = T(tableau.A)
        self.A_inv_t = T(k.A_inv)
        self.P_coll = T(k.P)
        # the largest row sum of |T⁻¹|: how much of the stages' field noise one
        # eigen-variable's residual mixes in (_at_roundoff_floor)
        self.TI_weight = float(np.abs(k.TI).sum(axis=1).max())
        # dense output in terms of the stage derivatives k = A⁻¹ Z / h:
        # Σ_i P[i, m] Z_i = h Σ_j (Aᵀ P)[j, m] k_j, the form RungeKutta.interpolate uses
        self.P = T(tableau.A.T @ k.P)
        self.extra_A = None
        rtol = newton.rtol
        # the tightest rtol of all rows and components sets the shared κ and Newton
        # threshold (the largest let a loose row loosen a tight one: Robertson, rows at
        # rtol 1e-2 and 1e-8, radau_iia5: the 1e-8 row 1.0e-9 batched, 7.6e-10 alone)
        rtol_f = float(rtol.min()) if isinstance(rtol, torch.Tensor) else float(rtol)
        eps = float(torch.finfo(dtype).eps)
        s = tableau.stages
        # κ ≥ 1: the estimate is multiplied by it, and Newton stops in units of tol/κ
        self.error_safety = radau_error_safety(s, rtol_f, eps)
        mu = k.mu_complex[0] if k.mu_real is None else None
        self.gamma_scale = 1.0 if mu is None else abs(mu) / mu.real  # see _error
        kap = self.error_safety
        # scipy's / Hairer's Newton stopping threshold in units of tol/κ, in units of the
        # tolerance below; for s = 2 at most DIRK_NEWTON_TOL (see radau_error_safety)
        cap = DIRK_NEWTON_TOL if kap > 1 else 0.03
        self.newton_tol = hairer_newton_tol(rtol_f, eps, kappa=kap, cap=cap) / kap
        self.component_newton_tol = max(self.newton_tol, COMPONENT_NEWTON_TOL / kap)
        default_cap = 6 if s <= 3 else int(7 + 2.5 * (s - 3))  # scipy; radau.f's NIT
        self.max_iter = default_cap if newton.max_iter == 8 else newton.max_iter
        self._lu = None
        self._lu_key = None
        # radau_iia5 only: radau_iia3/9's measured tables (radau_orders_results.md,
        # stiff_accuracy_results.md) are scipy's rule; applying it there is not measured yet
        self.keep_current_jacobian = s == 3
        # RADAU5's shrink after a predicted Newton failure (newton_shrink), for RADAU5's
        # method: on radau_iia9 (cap 12, so the factor's exponent is small) it cost
        # 6-33 % f-evaluations at rtol 1e-3 (HIRES, the Oregonator, Burgers, stick_slip;
        # studies/benchmarks/stiff_results.md, session 40); elsewhere the controller halves
        self.shrink_after_prediction = s == 3
        # the factor by which a kept Jacobian's rate is predicted to grow in one step
        # (kept_jacobian_converges; measured, see step)
        self.jacobian_aging = 2.0
        self._kept_pending = False  # J was kept by the rule at the last step
        # likewise (radau_iia5 only, measured there): the rows whose accepted estimate came
        # from the second filtering ([K] bool), read by the controller (see _error)
        self.predict_after_refiltering = s != 3
        # the last accepted step: (s_end [K], h [K], y_start [K, n], Z [K, s, n])
        self.last_step = LastStep()
        # the filter's stiffness-loss test (see _stiffness_lost): odd s, where the filter
        # is the real LU whose (γ̂/h − J) it reads
        self.stiffness_loss_limit = STIFFNESS_LOSS_LIMIT if self.n_real else None
        # (Z_s [K, n], f(t₁, Y_s) [K, n]) at each row's last Newton evaluation, or None
        self._last_stage_eval = None

    # --- linear algebra ------------------------------------------------------------
    def _factor(self, h, J):
        """``[(γ̂/h − J) when s is odd] + [(μ_k/h − J) for each pair]``, cached while
        ``h`` and ``J`` do not change."""
        key = (self.newton.J_version, h.tolist())
        if self._lu_key == key:
            return self._lu
        hy = h.to(self.dtype)
        lu = []
        if self.n_real:
            lu.append(lu_shifted(J, self.k.mu_real / hy))
        for mu in self.k.mu_complex:
            lu.append(lu_shifted(J, mu / hy.to(self.cdtype)))
        self.newton.stats.factorizations += len(lu)
        self._lu, self._lu_key = lu, key
        return lu

    def _solve(self, lu, rhs):
        self.newton.stats.linear_solves += 1
        return lu.solve(rhs)

    # --- the step ----------------------------------------------------------------------
    def step(self, g, s, y, h, f0) -> StepResult:
        nw = self.newton
        S = self.S
        K, n = y.shape
        h_safe = torch.where(h == 0, torch.ones_like(h), h)
        hy = h_safe.to(y.dtype)
        times = s[:, None] + self.c[None, :] * h[:, None]  # [K, S]
        with torch.no_grad():
            y_ = y.detach()
            scale = nw.atol + nw.rtol * y_.abs()
            # rejected rows retry from the same s: they use the second error estimate
            retry = self.last_step.rejected(s.detach())
            Z0 = self._starting_guess(s.detach(), h_safe.detach(), y_)
            for attempt in range(2):
                J = nw.jacobian(g, s.detach(), y_, fresh=attempt == 1)
                lu = self._factor(h_safe.detach(), J)
                Z, ok, n_iter, rate, shrink = self._iterate(
                    g, times.detach(), y_, hy, Z0, scale, lu
                )
                solved = bool(ok.all())  # one read of the device per attempt (reused below)
                # (a step retried from the same start after a rejection also counts as a
                # kept J that converged, although it runs at J's own point; leaving it out
                # was measured: Burgers 1e-3 1.56 -> 1.62x, sweeping_stiffness 1e-3 1788 -> 1824
                # f-evaluations, the other 188 grid and hold-out cells unchanged)
                if self._kept_pending and solved:
                    # the Jacobian kept at the last step: one that converged (attempt 0)
                    # brings the predicted growth back towards 2; one that failed where a
                    # fresh one converges (attempt 1) aged faster than predicted, and
                    # the factor doubles (where the fresh one fails too, the step size
                    # failed, not the kept Jacobian)
                    aging = self.jacobian_aging
                    self.jacobian_aging = max(2.0, aging / 2) if attempt == 0 else 2 * aging
                if solved or nw.J_fresh:
                    break
            self._kept_pending = False
            nw.slow = bool(n_iter > 2 and rate > 1e-3)
            if (
                nw.slow
                and self.keep_current_jacobian
                and nw.J_fresh
                and kept_jacobian_converges(n_iter, rate, self.max_iter, self.jacobian_aging)
            ):
                self._kept_pending = True
                # the iteration was slow on a Jacobian taken at this step's start: its age
                # is not what slowed it (the nonlinearity over the step is), and one taken
                # at the end would be only one step younger (see kept_jacobian_converges)
                nw.slow = False
            # for the controller (scipy's Radau): a step whose Jacobian is due is not
            # kept at the same size for the sake of an LU that will not be reused
            refresh = nw.slow
            # the controller's safety factor is scaled by (2M + 1)/(2M + n) after n of at
            # most M iterations (radau5.f, scipy's Radau): a step whose Newton iteration
            # was slow does not grow towards divergence (fewer slow steps, fewer Jacobians)
            safety = (2 * self.max_iter + 1) / (2 * self.max_iter + n_iter)
            if not solved:  # (ok is the last attempt's)
                nw.stats.failures += 1
                # [K] whichever backend ran the iteration (one system decides on floats)
                shrink = torch.as_tensor(shrink, dtype=y.dtype, device=y.device).reshape(K)
            else:
                shrink = None
        frozen = h == 0  # a row past its end (per-sample grids): it does not move
        if bool(frozen.any()):
            # its iteration ran with h_safe = 1 and may have diverged; a NaN here, even
            # masked by the loop, turns the rows' gradients into NaN in backward
            Z = torch.where(frozen[None, :, None], torch.zeros_like(Z), Z)
        if self.track_grad and torch.is_grad_enabled():
            base = y[:, None, :].expand(K, S, n)
            hA = h.to(y.dtype)[:, None, None] * self.A_t[None]  # 0 on frozen rows

            def G(Y):
                return torch.stack([g(times[:, j], Y[:, j]) for j in range(S)], dim=1)

            Y = nw.attach(g, times, base, hA, y[:, None] + Z.transpose(0, 1), G)
            Z = (Y - y[:, None]).transpose(0, 1)
        y1 = y + Z[S - 1]  # stiffly accurate: c_s = 1, the last stage is the solution
        ks = _mix(self.A_inv_t, Z) / hy[None, :, None]
        with torch.no_grad():
            # (a row whose Newton failed gets no second filtering: its estimate is
            # replaced below, so the f of one would be spent on a step rejected anyway)
            err, refiltered = self._error(
                g, s.detach(), y_, hy, f0.detach(), Z.detach(), lu, retry & ok, y1
            )
        lost, f1 = None, None
        if self.stiffness_loss_limit is not None:
            lost, f1 = self._stiffness_lost(
                g, times[:, S - 1], y_, y1, f0, Z, hy, err, ok & ~(h == 0)
            )
        with torch.no_grad():
            if lost is not None:
                # ten units: the controller roughly halves h, until the filter at the step's
                # start no longer damps a mode the step's end does not
                ten = 10 * self._scale(y_, y1.detach())
                err = torch.where(lost[:, None], torch.maximum(err.abs(), ten), err)
            # a failed row: an estimate whose ratio makes the I controller roughly halve h
            if not solved:
                big = 16.0 * self._scale(y_, y1.detach())
                err = torch.where(ok[:, None], err, big * torch.ones_like(err))
            zero = h == 0
            if bool(zero.any()):
                err = torch.where(zero[:, None], torch.zeros_like(err), err)
                ok = ok | zero
        Z_rows = Z.detach().transpose(0, 1)  # [K, s, n]: the record's rows first
        self.last_step.offer(s.detach() + h.detach(), h_safe.detach(), y_, Z_rows)
        return RadauStepResult(y1, err, ks, f1, ok, safety, refresh, refiltered, shrink)

    def _scale(self, y, y1):
        """A tolerance unit of the step [K, n], with the Newton iteration's tolerances."""
        return tolerance_unit(self.newton.atol, self.newton.rtol, y, y1)

    def _stiffness_lost(self, g, t1, y, y1, f0, Z, hy, err, ok):
        """The rows whose filtered estimate accepts a step across which a mode the filter
        damped lost its stiffness (``[K]`` bool, or None where no row was tested), and
        ``f(t₁, y₁)`` where it was evaluated (the next step's first stage; None
        otherwise).  Such a row's estimate is raised to ten units (see ``step``).

        The filter ``(I − hγ₀J₀)⁻¹`` damps the raw estimate ``u = γ₀h(f0 + Σ e_i Z_i/h)``
        (κ-scaled) along the modes that are stiff for ``J₀``, the Jacobian the step's
        Newton iteration used.  On a step that crosses a fold, where such a mode stops
        being stiff (a stick–slip oscillator leaving the stuck state), the start's
        ``J₀`` damps the very error the step makes: stick_slip at rtol 1e-3, a step
        estimated at 0.018 units was 95.7 units off (``J_vv`` ≈ −2e3 at its start,
        −11.5 at its end) and the solve ended at 632·rtol, status ok
        (``studies/benchmarks/stiff_results.md``, sessions 41–42); the raw estimate
        misses it too (0.2–1.3 units on steps 1–4 units off, 6e-3 on one 14 units
        off: at a fold it says nothing about the error).  Filtering with the end's
        ``J₁`` instead does not see a fold crossed mid-step, so the test is a ratio.
        Component ``i`` lost its stiffness where

        * the start's filter damps it more than ``L``-fold, ``|((I − hγ₀J₀)u)_i| >
          L·|u_i|`` (on a diagonal ``J``, ``|1 − hγ₀J₀,ii| > L``), with ``L`` =
          :data:`STIFFNESS_LOSS_LIMIT`, and its raw estimate is at least
          :data:`STIFFNESS_LOSS_UNITS` of a unit;
        * the end's damps it more than ``L`` times less, ``|((I − hγ₀J₀)u)_i| >
          L·|((I − hγ₀J₁)u)_i|``, with ``J₁u`` one forward difference of ``f`` at the
          step's end;
        * and the end's filter would report at least :data:`STIFFNESS_LOSS_END_UNITS`
          of a unit there;

        and a row with such a component is confirmed along the mode itself
        (:meth:`_mode_lost_stiffness`), since along ``u`` a stiff mode that only turns
        reads as lost.

        Cost: the test runs on rows the filtered estimate accepts that have such a
        damped component; it evaluates ``f(t₁, y₁)``, which an accepted step hands to
        the loop as the next step's first stage, reads ``J₁`` for free along the
        Newton iteration's last update (:meth:`_may_have_lost_stiffness`), spends
        one ``f`` on the difference only where that look says the Jacobian moved, and
        one more on the confirmation where a component is flagged.
        """
        nw = self.newton
        with torch.no_grad():
            y1_ = y1.detach()
            sc = self._scale(y, y1_)
            hg = (hy / self.k.mu_real)[:, None]
            u = self.error_safety * hg * (f0.detach() + _mix(self.E, Z.detach()) / hy[:, None])

            J0u = nw.jacobian_product(u)
            if J0u is None:  # a user Jacobian of another kind: no test
                return None, None
            r0 = (u - hg * J0u).abs()
            L = self.stiffness_loss_limit
            # the components the start's filter damps more than L-fold, where the raw
            # estimate is at least a tenth of a unit (below it, too many steps would be
            # tested for the rare fold whose raw estimate is that small: 6e-3 units on
            # a step 14 units off, stiff_results.md, session 43)
            damped = (r0 > L * u.abs()) & (u.abs() > STIFFNESS_LOSS_UNITS * sc)
            accepted = (err / sc).pow(2).mean(dim=1) <= 1
            tested = ok & accepted & damped.any(dim=1)
            if not bool(tested.any()):
                return None, None
        f1 = g(t1, y1)
        with torch.no_grad():
            tested = tested & self._may_have_lost_stiffness(y, y1_, f1.detach(), hg)
            if not bool(tested.any()):
                return tested, f1
            typical = sc / nw.rtol
            J1u = _end_product(g, t1, y1_, f1.detach(), u, typical)
            r1 = (u - hg * J1u).abs()
            # the end's filter would report |u_i|/d₁ (d₁ = r1_i/|u_i|): a mode still so
            # stiff there that this is below a thousandth of a unit hides nothing (the
            # diurnal kinetics' photolysis at dusk, d₀ = 3.7e3 → d₁ = 543: 6e-4 units;
            # stick_slip's folds 1.7e-3–0.3)
            reported = u * u > STIFFNESS_LOSS_END_UNITS * sc * r1
            hit = damped & (r0 > L * r1) & reported
            lost = tested & hit.any(dim=1)
        if not bool(lost.any()):
            return lost, f1
        dropped = self._mode_lost_stiffness(g, t1, y1_, f1.detach(), hit, J0u, hg, typical)
        return lost & dropped, f1

    def _mode_lost_stiffness(self, g, t1, y1, f1, hit, J0u, hg, typical):
        """Whether the filter's damping of the mode behind :meth:`_stiffness_lost`'s
        components fell ``L``-fold across the step (``[K]`` bool): along ``w = J₀u``
        restricted to those components (one power step from the raw estimate towards
        the stiff modes it excites), ``‖(I − hγ₀J₀)w‖ > L·‖(I − hγ₀J₁)w‖``, with ``J₁w``
        one forward difference of ``f`` at the step's end.

        The components' own test reads the filter along ``u``, where ``J₀u`` can be the
        small remainder of a stiff mode's large entries: in a relaxation system (the
        Jin–Xin system with ε = 1e-6, ``stiff_holdout13.py``) the rate −1/ε stays while
        its eigenvector turns with the state, and ``J₁u`` read 4–130× below ``J₀u``
        on steps whose true local errors were ≤ 0.06 units; radau_iia5 rejected 9 of 32
        steps there at rtol 1e-3 (415 f-evaluations, scipy Radau 113).  Along ``w`` the
        rate itself is read: −1/ε at both ends there, while a fold's lost stiffness
        shows as on ``u`` (stick_slip: ``J_vv`` ≈ −2042 → −391).  A norm, not a
        Rayleigh quotient, so that an oscillatory stiff pair (hertz_bounce's contact)
        counts by its modulus."""
        with torch.no_grad():
            w = torch.where(hit, J0u, torch.zeros_like(J0u))
            J0w = self.newton.jacobian_product(w)
            J1w = _end_product(g, t1, y1, f1, w, typical)
            d0 = (w - hg * J0w).norm(dim=1)
            d1 = (w - hg * J1w).norm(dim=1)
            return d0 > self.stiffness_loss_limit * d1

    def _may_have_lost_stiffness(self, y, y1, f1, hg):
        """A free look at ``J₁`` before :meth:`_stiffness_lost` spends an ``f`` on it
        (``[K]`` bool): the last Newton update of the last stage, ``d = y₁ − Y_s``, and
        ``f(t₁, y₁) − f(t₁, Y_s)`` ≈ ``J₁d`` (both fields are already evaluated).  The
        simplified iteration's last update lies along the directions in which ``J₀``
        is wrong for the stages, so a mode that lost its stiffness shows there; where
        no component reads ``|(I − hγ₀J₀)d|`` above :data:`STIFFNESS_LOOK` times
        ``|(I − hγ₀J₁)d|`` the Jacobian held over the step (a linear or slowly varying
        stiffness) and the probe is skipped.  The difference is a secant over ``d``,
        not ``J₁`` itself: where ``d`` is as wide as the field's nonlinearity it reads
        a Jacobian between the two (stick_slip at rtol 1.893e-3: 1.83, where the
        velocity's entries ``J₀`` ≈ −2042 and ``J₁`` ≈ −391 give 5.2), hence a
        threshold below the test's ``L``.  True where there is no look (the compiled
        Newton iteration does not keep the stage's field).  A row that converged
        while others iterated is read at its own last evaluation."""
        last = self._last_stage_eval
        if last is None:
            return torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        Z_last, F_last = last
        d = y1 - (y + Z_last)
        J0d = self.newton.jacobian_product(d)
        r0 = (d - hg * J0d).abs()
        r1 = (d - hg * (f1 - F_last)).abs()
        L = self.stiffness_loss_limit
        # a component whose last update is at the round-off of its size reads nothing
        # (the iteration converged to round-off there: J₀ holds for the stages; on a
        # linear problem every component does, and f1 − F is noise)
        typical = self._scale(y, y1) / self.newton.rtol
        readable = d.abs() > 1e3 * torch.finfo(d.dtype).eps * typical
        return (readable & (r0 > L * d.abs()) & (r0 > STIFFNESS_LOOK * r1)).any(dim=1)

    def _starting_guess(self, s, h, y):
        """Extrapolate each row's last accepted step's collocation polynomial, where the
        row starts at its end (zeros elsewhere: at first, after a jump or an event)."""
        last = self.last_step.rows_of(s)
        if last is None:
            return y.new_zeros(self.S, *y.shape)
        ps, ph, py, pZ = last
        # θ of the new stage times in the previous step (beyond 1: extrapolation)
        theta = 1 + (self.c[:, None] * h[None, :]) / ph[None, :]  # [S, K]
        th = theta.to(y.dtype)[:, :, None]
        Q = _mix(self.P_coll.T, pZ.transpose(0, 1))  # [degree, K, n]
        poly = sum(th ** (m + 1) * Q[m] for m in range(self.S))  # [S, K, n]
        guess = py[None] + poly - y[None]
        at_end = (s == ps)[None, :, None]  # (selects, not a read of the device)
        return torch.where(at_end, guess, torch.zeros_like(guess))

    def _iterate(self, g, times, y, hy, Z0, scale, lu):
        """Simplified Newton in the eigen-variables ``W = T⁻¹ Z``.  Returns
        ``(Z [S, K, n], ok [K], iterations, last rate, shrink)``: ``shrink`` ([K], or a
        float for one system) is :func:`newton_shrink`'s factor for the next trial on the
        rows that failed, NaN elsewhere."""
        S, r = self.S, self.n_real
        K, n = y.shape
        nw = self.newton
        # one system: the convergence decisions on Python floats (one read of the
        # increment norm per iteration) instead of ~30 operations on [1] tensors, which
        # cost more than the iteration's arithmetic on a small system
        host = K == 1
        ops = HostOps if host else TensorOps

        def rows(mask):  # a [K] decision applied to [S, K, n] tensors
            return mask if host else mask[None, :, None]

        hc = hy.to(self.cdtype)[:, None]
        # the loop invariants of the residual: stage times, shifts μ/h
        t_stages = [times[:, i] for i in range(S)]
        shift_real = (self.k.mu_real / hy)[:, None] if r else None
        shift_complex = [mu / hc for mu in self.k.mu_complex]
        W = _mix(self.TI_mat, Z0)
        Z = Z0
        if host:
            converged = failed = False
            rate = 0.0
        else:
            converged = torch.zeros(K, dtype=torch.bool, device=y.device)
            failed = torch.zeros_like(converged)
            rate = torch.zeros(K, dtype=y.dtype, device=y.device)
        # the step-size factor after a failure (newton_shrink): NaN, the controller's own
        shrink = ops.full(math.nan, rate)
        no = ops.full(False, converged)
        classic_conv = converged
        policy = None  # (iterations, rate) where the classic one-rate test stopped
        prev = prev_a2 = None
        worst = 0.0
        tol = self.newton_tol
        # whether the round-off floor may be believed: on a fresh Jacobian, or on a kept
        # one once its iteration has contracted (FLOOR_TRUST_RATE)
        trusted = ops.full(bool(nw.J_fresh), converged)
        k = 0
        for k in range(self.max_iter):
            nw.stats.iterations += 1
            # under solve(compile=True) one compiled call forms
            # the residual, the solves and the increment norm (odenet._compiled.FusedNewton,
            # None: this iteration runs eagerly); the decisions below stay on the host
            fused = getattr(nw, "fused", None)
            out = None if fused is None else fused.radau(self, times, y, hy, Z, W, scale, lu)
            if out is not None:
                dW, dnorm, finite_F = out
                self._last_stage_eval = None
            else:
                F = torch.stack([g(t_stages[i], y + Z[i]) for i in range(S)])  # [S, K, n]
                finite_F = torch.isfinite(F).all(dim=2).all(dim=0)
                F = torch.nan_to_num(F)
                dW = torch.empty_like(W)
                if r:
                    f_real = _mix(self.TI_mat[0], F) - shift_real * W[0]
                    dW[0] = self._solve(lu[0], f_real)
                Fc = _mix(self.TI_pairs, F.to(self.cdtype))
                for p, shift in enumerate(shift_complex):
                    Wc = torch.complex(W[r + 2 * p], W[r + 2 * p + 1])
                    d = self._solve(lu[r + p], Fc[p] - shift * Wc)
                    dW[r + 2 * p], dW[r + 2 * p + 1] = d.real, d.imag
            # per component, mean over the stages [K, n]: the convergence test below
            a2 = (dW / scale[None]).pow(2).mean(dim=0)
            if out is None:
                dnorm = a2.mean(dim=1).sqrt()
            if host:
                dnorm = float(dnorm)
                finite = bool(finite_F) and math.isfinite(dnorm)
            else:
                finite = finite_F & torch.isfinite(dnorm)
            active = ops.not_(converged | failed)
            if out is None:
                # each row's last stage and its field at the row's own last evaluation
                # (_may_have_lost_stiffness's free look at J₁)
                zs, fs = Z[S - 1], F[S - 1]
                if k > 0 and not host:
                    pz, pf = self._last_stage_eval
                    zs = torch.where(active[:, None], zs, pz)
                    fs = torch.where(active[:, None], fs, pf)
                self._last_stage_eval = (zs, fs)
            if prev is not None:
                rate = dnorm / prev
                # a rate ≥ 1 diverges whatever the rest says; clipped, the power cannot
                # overflow a Python float
                slow = ops.clip(rate, hi=1.0)
                # the Newton error predicted to be left after the iteration cap
                left_at_cap = slow ** (self.max_iter - k) / ops.clip(1 - slow, lo=1e-12) * dnorm
                diverging = (rate >= 1) | (left_at_cap > tol)
                classic = rate / ops.clip(1 - rate, lo=1e-12) * dnorm < tol
                left, stalled, doubtful = _remaining(a2, prev_a2, tol, self.max_iter - k - 1)
                # the looser per-component bound is for contracting components only
                loose = classic & (left < self.component_newton_tol) & (stalled < tol)
                conv = (left < tol) | loose
                if k == 1:
                    # on the first ratio of a component that reads FIRST_RATIO_DOUBT or
                    # slower, a fresh Jacobian's iteration does not take the looser bound,
                    # a kept one's stops not at all (its next ratio is read first)
                    if nw.J_fresh:
                        conv = (left < tol) | (loose & (doubtful < tol))
                    else:
                        conv = conv & (doubtful == 0)
                trusted = trusted | (finite & (rate <= FLOOR_TRUST_RATE))
                floored = active & finite & diverging & trusted
                if ops.any(floored):
                    at_floor = floored & self._at_roundoff_floor(
                        lu, y + Z[S - 1], None if out is not None else F[S - 1], scale, dnorm
                    )
                    conv, classic = conv | at_floor, classic | at_floor
                    diverging = diverging & ops.not_(at_floor)
                    # a ratio of round-off is no contraction rate: it does not ask for a
                    # new Jacobian (the policy below reads the rate)
                    rate = ops.where(at_floor, 0.0 * rate, rate)
                if host:
                    conv = bool(conv)
            else:
                diverging = conv = classic = no
            now_failed = active & (ops.not_(finite) | diverging)
            if self.shrink_after_prediction and prev is not None:
                # RADAU5's factor for the next trial; NaN where the row diverged (no
                # test of now_failed first: on rows that would read the device)
                factor = newton_shrink(ops, left_at_cap / tol, rate, self.max_iter - k)
                shrink = ops.where(now_failed, factor, shrink)
            upd = active & ops.not_(now_failed)
            W = ops.where(rows(upd), W + dW, W)
            Z = _mix(self.T_mat, W)
            now_conv = upd & ((dnorm == 0) | conv)
            if prev is not None and ops.any(upd):
                # the last rate (scipy's and Hairer's)
                worst = rate if host else float(rate[upd].max())
            converged = converged | now_conv
            failed = failed | now_failed
            classic_conv = classic_conv | (upd & ((dnorm == 0) | classic))
            if policy is None and ops.all(classic_conv | failed):
                policy = (k + 1, worst)
            prev, prev_a2 = dnorm, a2
            if ops.all(converged | failed):
                break
        ok = converged & ops.not_(failed)
        if host:
            ok = torch.tensor([ok], device=y.device)
        # the Jacobian policy and the safety factor (see step) read the iterations and the
        # rate at which the classic test stopped: they were measured with it, and the extra
        # iterations the per-component test adds (see _remaining) are the slow direction
        # converging, not a reason for a new Jacobian (on the Brusselators they were: 26
        # Jacobians where scipy takes 22)
        n_iter, rate = policy if policy is not None else (k + 1, worst)
        return Z, ok, n_iter, rate, shrink

    def _at_roundoff_floor(self, lu, yz, fz, scale, dnorm):
        """Whether an increment that no longer contracts is the round-off of the
        residual ([K] bool, or a bool for one system): ``dnorm`` within the stages'
        field noise (:meth:`Newton.roundoff_noise` at the last stage ``yz``, ``fz``
        [K, n]; ``fz`` None: the terms alone), mixed by the largest row of ``T⁻¹`` and
        filtered through ``(γ̂/h − J)⁻¹`` (:meth:`_filter`), times
        ``√roundoff_factor`` (:func:`~odenet._newton.roundoff_factor`: 10 on a fresh
        Jacobian, the factor every radau measurement since session 45 was made with,
        which multiplied the mean square; 1 on a kept one), and at most the
        per-component Newton tolerance (a floor above that is an f too noisy for the
        tolerance: the step fails and shrinks, as before).

        Asked on a fresh Jacobian, or on a kept one once its iteration has contracted
        (:data:`~odenet._newton.FLOOR_TRUST_RATE`; BDF's rule, ``BDFRuntime._iterate``):
        on a stale one a diverging iteration has small increments too.  The Kuramoto–
        Sivashinsky equation on 64 Fourier modes (``stiff_holdout12.py``, dense
        differentiation matrices with entries to 7e3) at rtol 1e-9: the Newton
        tolerance 3e-5 lies below f's round-off through the iteration matrix
        (increments of 3e-5 … 2e-4 at ratios about 1, a floor of ~1e-3), and 539 of
        1306 steps were rejected as Newton failures."""
        noise = self.newton.roundoff_noise(self.TI_weight, yz, fz, None)
        rms = (self._filter(lu, noise).abs() / scale).pow(2).mean(dim=1).sqrt()
        factor = math.sqrt(roundoff_factor(self.newton.J_fresh))
        floor = (factor * rms).clamp_max(self.component_newton_tol)
        if isinstance(dnorm, float):
            return dnorm <= float(floor)
        return dnorm <= floor

    def _filter(self, lu, rhs):
        """The filtered estimate of ``γ₀ h rhs`` (see the module docstring): the real
        LU for odd ``s``; for ``s = 2`` the real part of the complex pair's solve."""
        if self.n_real:
            return self._solve(lu[0], rhs)
        return self._solve(lu[0], rhs.to(self.cdtype)).real

    def interpolant_filter(self, defect):
        """``(γ̂/h − J)⁻¹ defect`` (``hγ(I − hγJ)⁻¹`` with ``γ = 1/γ̂``) with the last
        step's factors: the dense output's error estimate (:mod:`odenet._dense_check`)."""
        return self._filter(self._lu, defect)

    def _error(self, g, s, y, hy, f0, Z, lu, retry, y1):
        """The filtered estimate of ``f0 + Σ e_i Z_i / h``; a second filtering through
        ``f(y0 + err)`` for retried rows that the first rejects.  Returns ``(err [K, n],
        refiltered)``: the rows whose estimate the controller is told came from the second
        filtering (``[K]`` bool, or None)."""
        ZE = _mix(self.E, Z) / hy[:, None]
        err = self._filter(lu, f0 + ZE)
        # s = 2: the filter's γ₀ is Re(1/μ) (so that y0 + err removes a stiff transient
        # exactly, below); the reported estimate keeps γ₀ = 1/|μ| where hJ is small, the
        # size ERROR_SAFETY_S2 was measured with (HIRES rtol 1e-5: 7.5x scipy Radau's
        # error with Re(1/μ), 6.3x with 1/|μ|)
        kap = self.error_safety * self.gamma_scale
        refiltered = None
        if bool(retry.any()):
            sc = self._scale(y, y1.detach())
            ratio = kap * (err / sc).pow(2).mean(dim=1).sqrt()
            again = retry & (ratio > 1)
            if bool(again.any()):
                err2 = self._filter(lu, g(s, y + err) + ZE)
                err = torch.where(again[:, None], err2, err)
                if not self.predict_after_refiltering:
                    # the second filtering's estimate is of another kind (often ~0 where the
                    # first said reject): Gustafsson's predictor, which compares consecutive
                    # estimates, would read its ratio to the next one as an error that
                    # grows ~50x and cut h by ~2.5 for two steps.  Prothero-Robinson
                    # λ = −1e4, rtol 1e-8: 1.35x -> 1.07x scipy Radau's f-evaluations; no
                    # count changes on the 42-cell stiff grid or six hold-out problems
                    # (stiff_results.md; radau_trace.py's variant predict-after-refiltered is the
                    # controller without this rule)
                    refiltered = again
        return (err * kap if kap != 1 else err), refiltered


def _remaining(
    a2: torch.Tensor, prev_a2: torch.Tensor, tol: float, iterations_left: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Newton error left after this iteration, ``‖Σ_(m≥1) ΔW_(k+m)‖`` [K], from a
    contraction rate per state component: RMS over ``j`` of ``η_j |ΔW_j|`` with
    ``η_j = θ_j/(1 − θ_j)``, ``θ_j = |ΔW_j| / |ΔW_j|_prev`` (``a2``, ``prev_a2`` [K, n]:
    mean squares over the stages, in units of the scale).  Returns that, the part of
    it from the components that do not contract (``θ_j ≥ 1``) and the part from those
    that contract at :data:`FIRST_RATIO_DOUBT` or slower, all [K].

    The classic test takes one rate for the whole increment, whose first ratio is
    dominated by the components that converge at once: a stale Jacobian that is badly
    wrong in one direction (stiff there at the step's start, not over the step) makes
    that direction contract at 0.5–0.7 with small increments while the total ratio reads
    0.11, and Newton stopped after two iterations on stages far from the collocation
    solution (``stick_slip`` of ``studies/benchmarks/stiff_holdout4.py``, rtol 1e-3: a
    step of 2.3 over the stick-to-slip fold accepted with its slip missed, error 1.7,
    status ok; scipy's Radau the same).  Where every component contracts alike this is
    the classic ``θ/(1 − θ) ‖ΔW‖``.  Components whose increment is below 1e-3 of the
    tolerance are taken as converged (a ratio of round-off is noise).

    A component that does not contract has no geometric tail to sum: it counts as its
    increment once per iteration left (``iterations_left``, at least one).  Such
    components are mostly ones whose increments, 0.1–1.5 of the Newton tolerance, are
    fed by the errors of the others; counted as unbounded (before) they blocked the
    classic stop at 17 of 109 iterations on viscous Burgers at rtol 2e-4.  The caller
    holds them to the Newton tolerance itself (the second value), not to the looser
    bound it allows contracting components: with that bound for them too, the 2-D
    Brusselator's errors at rtol 3e-8 … 3e-7 grew up to 8x (studies/benchmarks/
    stiff_results.md, session 30).  A component that grows with a large increment still
    makes both values large, and a whole iteration that grows is stopped by the
    divergence test."""
    significant = a2 > (1e-3 * tol) ** 2
    theta = torch.where(significant, (a2 / prev_a2.clamp_min(1e-300)).sqrt(), 0.0)
    contracting = theta < 1
    tail = theta / (1 - theta).clamp_min(1e-300)
    per_iteration = float(max(iterations_left, 1))
    eta = torch.where(contracting, tail, per_iteration)
    stalled = torch.where(contracting, 0.0, per_iteration)
    doubtful = torch.where(contracting & (theta >= FIRST_RATIO_DOUBT), tail, 0.0)
    return tuple((w.pow(2) * a2).mean(dim=-1).sqrt() for w in (eta, stalled, doubtful))


def _mix(M: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """``Σ_j M[i, j] Z[j]`` over the stage axis of ``Z`` [S, K, n]; ``M`` [m, S] or [S].
    One matrix product (an einsum costs ~3x more in dispatch on a small system)."""
    out = M @ Z.reshape(Z.shape[0], -1)
    return out.reshape(*M.shape[:-1], *Z.shape[1:])


_REFERENCE: dict = {}  # s -> (A, c) of the s-stage Radau IIA, float64


def is_radau_iia(tab) -> bool:
    """The tableau is an ``s``-stage Radau IIA (the collocation method that
    :class:`RadauIIA` implements): ``c`` the Radau right points and ``A`` from ``C(s)``."""
    s = tab.stages
    if not tab.is_fully_implicit or s < 2:
        return False
    if s not in _REFERENCE:  # a root finding at 40 digits: once per stage count
        from odenet.tableaus import _radau_iia_coefficients

        A, _, c = _radau_iia_coefficients(s, digits=20)
        _REFERENCE[s] = (
            np.array([[float(x) for x in r] for r in A]),
            np.array([float(x) for x in c]),
        )
    A, c = _REFERENCE[s]
    return bool(
        np.allclose(np.asarray(tab.A, dtype=float), A, rtol=0, atol=1e-13)
        and np.allclose(np.asarray(tab.c, dtype=float), c, rtol=0, atol=1e-13)
    )


def runtime_for(tab, dtype, time_dtype, device, newton, *, fixed: bool) -> RungeKutta:
    """The method object the loop runs for ``tab``: :class:`RadauIIA` for an adaptive
    Radau IIA solve, :class:`~odenet._trapezoid.MilneTrapezoid` for an adaptive one
    of a tableau with the ``"milne"`` estimator, the generic :class:`RungeKutta`
    otherwise."""
    if not fixed and getattr(tab, "estimator", None) == "milne":
        from odenet._trapezoid import MilneTrapezoid

        return MilneTrapezoid(tab, dtype, time_dtype, device, newton)
    if not fixed and getattr(tab, "estimator", None) == "radau5" and is_radau_iia(tab):
        nw = RadauNewton(
            tol=newton.tol,
            max_iter=newton.max_iter,
            atol=newton.atol,
            rtol=newton.rtol,
            jac=newton.jac,
            sparsity=newton.sparsity,
        )
        return RadauIIA(tab, dtype, time_dtype, device, nw)
    return RungeKutta(tab, dtype, time_dtype, device, newton)


__all__ = [
    "COMPONENT_NEWTON_TOL",
    "RadauConstants",
    "RadauIIA",
    "RadauNewton",
    "RadauStepResult",
    "batched_jacobian",
    "is_radau_iia",
    "kept_jacobian_converges",
    "radau_constants",
    "radau_error_safety",
    "runtime_for",
]
