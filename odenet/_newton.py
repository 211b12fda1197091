"""Newton's method for the stage equations of implicit Runge–Kutta methods.

All stage systems have the form ``F(Z) = Z − base − h (A ⊗ I) G(Z) = 0`` with
``G_j = f(t + c_j h, Z_j)``; a DIRK stage is the case of one stage with ``A = [[a_ii]]``.
The iteration is *simplified* Newton: the Jacobian ``J = ∂f/∂y`` is computed once
(by torch autograd, batched over the rows of the state) and reused across
iterations and across steps while the iteration converges; the iteration matrix
``I − h (A ⊗ J)`` is LU-factorised once per distinct ``h·A``.  A stale Jacobian
that fails to converge is refreshed; a fresh one that fails makes the step fail,
and the caller retries with a smaller step.

Gradients (``sensitivity="direct"``) do not flow through the iterations: the
converged stages are attached to the autograd graph by two extra Newton steps
taken with the exact Jacobian at the solution.  The first gives the implicit function
theorem ``dZ = (I − h A ⊗ J(Z))⁻¹ (∂base + h A ∂G/∂θ)``, the second makes second
derivatives (Hessian-vector products, gradient penalties) right as well.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from odenet._errors import ToleranceWarning, warn_user
from odenet._jacobian import SparseJac, batched_jacobian, compressed_jacobian, lu_kron
from odenet._ops import HostOps, TensorOps

# The tolerance at which a DIRK pair's error estimate is taken at face value: below it
# the estimate is scaled up by (RTOL_REF / rtol)^(1/p) (see error_safety).
RTOL_REF = 1e-2


def is_dirk_pair(tableau) -> bool:
    """A diagonally implicit tableau with an embedded estimate (the pairs κ applies to)."""
    return getattr(tableau, "b_hat", None) is not None and tableau.is_diagonally_implicit


@functools.lru_cache(maxsize=64)  # tableaus hash by identity; asked once per step
def embedded_is_a_stage(tableau) -> bool:
    """The embedded weights ``b̂`` are a row of ``A``: the embedded solution is a stage value.

    Then ``ŷ1 − y1`` (for a stiffly accurate method, the difference of two stages) is
    small wherever the stage values are accurate, stiff components included, and needs
    no ``(I − hγJ)⁻¹`` filter (see :meth:`Newton.filter_error`).  ``tableau``: with
    ``b_hat``.
    """
    A = np.asarray(tableau.A, dtype=np.float64)
    b_hat = np.asarray(tableau.b_hat, dtype=np.float64)
    return bool(np.any(np.all(np.abs(A - b_hat[None, :]) <= 1e-14, axis=1)))


def error_safety(tableau, rtol, eps: float = 0.0):
    """``κ``, the factor a diagonally implicit pair's error estimate is multiplied by.

    ``κ = tableau.error_safety · max(1, RTOL_REF / rtol)^(1/p)`` (``p`` the order of the
    propagated solution, ``RTOL_REF = 1e-2``); 1 for any other tableau.  The controller
    then keeps the estimate at the tolerance, i.e. the error per step at ``tol/κ``.

    Why: on stiff problems the stage order (1 for sdirk4, 2 for the ESDIRKs, TR-BDF2)
    takes away the margin local extrapolation gives on smooth ones, so the local error
    of the propagated solution is about the estimate, and the ``N ∝ rtol^(−1/p)`` steps
    add up to a global error ``∝ rtol^(1−1/p)``, not ``∝ rtol`` (measured with κ ≡ 1:
    kvaerno5 ends at 0.42·rtol at rtol 1e-3 and at 4.9·rtol at 1e-8 on Robertson,
    ``studies/benchmarks/doc_claims.py kvaerno5_without_kappa``).  Dividing the
    error per step by ``rtol^(−1/p)``, which grows like the number of steps, makes the
    global error proportional to ``rtol`` (Shampine's tolerance proportionality); the
    constant ``error_safety`` of each pair is the measured estimate-to-error ratio
    that then brings its global error to the level of RADAU5's at the same ``rtol``
    (``studies/benchmarks/stiff_accuracy_results.md``).

    Parameters
    ----------
    tableau : ButcherTableau or None
    rtol : float or Tensor (per row / component, broadcastable with the estimate)
    eps : float
        Machine epsilon of the state's dtype: ``κ`` never asks for a relative error per
        step below ``100·eps`` (``κ ≤ max(1, rtol/(100·eps))``), which the dtype cannot
        resolve — in float32 at rtol 1e-6 an uncapped ``κ ≈ 260`` made steps shrink
        without end.  0: no cap.

    Returns
    -------
    float or Tensor (as ``rtol``), ≥ 1 (≥ ``tableau.error_safety`` unless capped).
    """
    # (multistep methods carry their own tables, without b_hat)
    if not is_dirk_pair(tableau):
        return 1.0
    return capped_safety(
        tableau.error_safety, rtol_growth(1 / tableau.order), rtol, eps, tableau.name
    )


def rtol_growth(exponent: float):
    """``r ↦ max(1, RTOL_REF/r)^exponent`` for float or tensor ``r``."""

    def growth(r):
        if isinstance(r, torch.Tensor):
            return (RTOL_REF / r.clamp_min(1e-300)).clamp_min(1.0) ** exponent
        return max(RTOL_REF / max(r, 1e-300), 1.0) ** exponent

    return growth


# The dtype's cap on κ may take this factor of κ away (κ/cap ≤ 3, the constant included)
# and the global error still follows rtol.  Measured in float32 on Prothero–Robinson
# (λ = −1e4, closed form) and Van der Pol μ = 100 (scipy Radau at 1e-12), default
# controller: every status-ok solve above 3.3·rtol is cut more than 3× (kvaerno5 at rtol
# 1e-4, 3e-5: cut 12×, 51×, 21 and 69·rtol; kvaerno3 and sdirk4 at 3e-5: 36 and 11·rtol;
# trbdf2 on Van der Pol at 1e-4: cut 600×, 5.8·rtol); uncut or cut less, at most 3.2·rtol.
# Left uncapped, κ stalls instead: on Prothero–Robinson sdirk4 took 4167 steps for 25 at
# rtol 3e-5 and 16429 at 1.2e-5, kvaerno3 ran out of 20000 steps at 1.2e-5, trbdf2 (κ
# constant 500; uncapped constant, capped growth) took 3230 for 52 at 1e-3 (kvaerno5
# ended within 1.9·rtol for 5× the steps; Van der Pol: 12×).  So the cap stays and
# the warning names the smallest rtol kept within it (float32: kvaerno5 3.2e-4, kvaerno3
# 1.8e-4, sdirk4 8e-5, trbdf2 3.4e-3, radau_iia3 1e-4).  On the random linear systems of
# tests/test_honesty_property.py (studies/benchmarks/round_off_floor_results.md) the
# unwarned float32 cells at 300·eps and 1000·eps (kvaerno5 80, 20·rtol) are cut 41× and
# 10× and now warn too.
UNRESOLVED_GROWTH = 3.0

# A stalled Newton iteration whose increment is within this factor of the round-off of
# its residual has converged (Newton.roundoff_floor; LSODE's 100·uround)
ROUNDOFF_FACTOR = 100.0

# A kept Jacobian's round-off floor is believed once its iteration has contracted at this
# ratio or faster.  A simplified Newton ratio is ‖(I − cJ)⁻¹c(J_true − J)·Δ‖/‖Δ‖ along
# the last update Δ, so such a ratio shows J right along the direction the iteration
# moves, read for free; a kept J that never contracts may be another point's (the
# rectifier's, 1e13 too large) and is refreshed first, as before.  Kuramoto–Sivashinsky
# (64 modes, [0, 3], stiff_holdout12.py), whose field is nearly linear: each kept
# Jacobian's iteration contracted, then stalled at the round-off, failed, and a fresh J
# gave the same increments (bdf at rtol 1e-8 116 Jacobians in 444 steps -> 1;
# radau_iia5 at 1e-9 92 -> 2).  On a kept J the increment must lie within the round-off
# itself, not ROUNDOFF_FACTOR times it (roundoff_factor): E5 at rtol 1e-3 (stiff
# DETEST) stalled at 40-80x its round-off, five times bdf's Newton threshold, still
# contracting at ratios ~0.5; taken as converged it ended in a step-size underflow.
FLOOR_TRUST_RATE = 0.5


def roundoff_factor(fresh: bool) -> float:
    """The factor on the round-off below which a stalled Newton increment has converged:
    :data:`ROUNDOFF_FACTOR` on a Jacobian of this trial (``fresh``), 1 on a kept one
    (see :data:`FLOOR_TRUST_RATE`)."""
    return ROUNDOFF_FACTOR if fresh else 1.0


def capped_safety(base: float, growth, rtol, eps: float, name: str = "", *, floor=None):
    """``κ = base·growth(rtol)`` limited by :func:`resolvable_safety`, with a
    :class:`ToleranceWarning` (naming the smallest ``rtol`` honoured) where ``rtol`` is
    out of the method's reach in this dtype: where the limit takes more than
    :data:`UNRESOLVED_GROWTH` of κ away or, when ``floor`` is given, below
    ``floor·eps`` (a multistep method's round-off, carried over its steps).  ``rtol``:
    float or tensor; ``name``: the method's (no warning without it)."""
    kappa = base * growth(rtol)
    capped = resolvable_safety(kappa, rtol, eps)
    if not (eps > 0 and name):
        return capped
    if floor is None:
        # the whole of κ the cap takes away, its constant included: testing growth(r)
        # alone let float32 kvaerno5 at rtol 1e-4 pass (growth 2.5 ≤ 25) while the cap cut
        # κ from 100 to 8.4 and the solve ended at 21·rtol with status ok

        def honoured(r):
            return base * growth(r) <= UNRESOLVED_GROWTH * max(1.0, r / (100 * eps))

    else:

        def honoured(r):
            return r >= floor * eps

    # (below 100·eps every adaptive solve also warns: odenet._validate.warn_rtol_below_round_off;
    # this one names the method's own, larger floor)
    if not honoured(float(torch.as_tensor(rtol).min())):
        _warn_unresolved(name, honoured, rtol, eps)
    return capped


def _warn_unresolved(name: str, honoured, rtol, eps: float) -> None:
    lo, hi = math.log(100 * eps), math.log(RTOL_REF)  # every rule holds at RTOL_REF
    for _ in range(60):  # the smallest honoured rtol, by bisection on log rtol
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if honoured(math.exp(mid)) else (mid, hi)
    dtype = torch.float32 if eps > 1e-10 else torch.float64
    r = float(torch.as_tensor(rtol).min())
    wider = " or float64," if dtype == torch.float32 else ""
    warn_user(
        f"rtol = {r:.3g} is too close to the round-off of {dtype} (eps = {eps:.2g}) for "
        f"{name}'s error control: there its error per step cannot be held to what rtol "
        "asks, and the global error may exceed rtol by 100× or more while the solve "
        f"reports success. Use rtol ≥ {math.exp(hi):.2g}{wider} or radau_iia5 (its "
        "error control needs no such margin).",
        ToleranceWarning,
    )


def resolvable_safety(kappa, rtol, eps: float):
    """``κ`` limited to ``max(1, rtol/(100·eps))``: an error safety never asks for a
    relative error per step the dtype (machine epsilon ``eps``; 0: no limit) cannot
    resolve.  ``kappa``, ``rtol``: floats or broadcastable tensors."""
    if not eps > 0:
        return kappa
    if isinstance(kappa, torch.Tensor) or isinstance(rtol, torch.Tensor):
        return torch.as_tensor(kappa).minimum(torch.as_tensor(rtol / (100 * eps)).clamp_min(1.0))
    return min(kappa, max(1.0, rtol / (100 * eps)))


def hairer_newton_tol(rtol, eps: float, *, kappa=1.0, cap: float = 0.03):
    """Hairer's Newton stopping threshold (RADAU5's ``fnewt``, scipy's Radau and BDF), in
    units of the tolerance ``tol/κ`` the error control enforces:
    ``max(10·eps·κ/rtol, min(0.03, √rtol, cap))`` — not below what the dtype resolves,
    tighter at tight tolerances.  ``rtol``, ``kappa``: floats, or tensors (elementwise)."""
    # rtol below 100·eps counts as 100·eps, as scipy raises it (rtol = 0 overflowed)
    if isinstance(rtol, torch.Tensor) or isinstance(kappa, torch.Tensor):
        rtol = torch.as_tensor(rtol).clamp_min(100 * eps)
        return torch.maximum(10 * eps * kappa / rtol, rtol.sqrt().clamp_max(min(0.03, cap)))
    rtol = max(rtol, 100 * eps)
    return max(10 * eps * kappa / rtol, min(0.03, math.sqrt(rtol), cap))


# Default stopping thresholds of an adaptive solve's Newton iteration, in units of the
# tolerance the error control enforces.  0.03 is Hairer's (RADAU5's fnewt at rtol ≥ 1e-3).
# A DIRK pair's stage errors are no O(h^(p+1)) quantity: what Newton leaves in a slow
# component is carried to the end like an error per step, and at 0.03 it was most of the
# final error (kvaerno3, HIRES, rtol 1e-3: 0.73·rtol at 0.03, 0.41 at 3e-3, 0.18 at 3e-4,
# 0.10 at 1e-6, for +34 % f-evaluations at 3e-4; the error safety κ alone moved it from
# 0.81 at κ = 1 to 0.73 at κ = 6.5), when the threshold was chosen; on 2026-12-04
# 0.42·rtol at 0.03 and 0.17 at 3e-4, with κ ≡ 1 0.87 and 0.24
# (studies/benchmarks/doc_claims.py kvaerno3_newton).
NEWTON_TOL = 0.03
DIRK_NEWTON_TOL = 3e-4


@dataclass
class NewtonStats:
    """Counters of the implicit machinery (python ints, summed over the batch)."""

    jacobians: int = 0
    # reverse-mode vector–Jacobian products the autograd Jacobians took (each costs
    # about one evaluation of f; their one taped evaluation is counted as an
    # evaluation, as forward mode's dual ones are)
    jac_products: int = 0
    factorizations: int = 0
    linear_solves: int = 0
    iterations: int = 0
    failures: int = 0


class Newton:
    """Solves stage systems for one solve; holds the cached Jacobian.

    Parameters
    ----------
    tol : float or None
        Convergence threshold for the scaled increment (rate-corrected, as in
        Hairer & Wanner II, Sec. IV.8): stop when ``θ/(1−θ)·‖ΔZ‖ ≤ tol``.  None:
        :data:`DIRK_NEWTON_TOL` for a DIRK pair's adaptive solve, :data:`NEWTON_TOL`
        otherwise.
    max_iter : int
    atol, rtol : float or Tensor
        Scale ``(atol + rtol·|y|)/κ`` in which increments are measured (RMS norm):
        the tolerance the error control enforces.
    tableau : ButcherTableau, optional
        An adaptive solve's method: a DIRK pair's estimates are scaled by
        ``κ =`` :func:`error_safety` (1 without a tableau: fixed steps, other methods).
    eps : float
        Machine epsilon of the state's dtype (0: unknown): caps ``κ`` and floors the
        default DIRK threshold at what the dtype can resolve.
    jac : callable, optional
        A user Jacobian in the internal layout, ``jac(s [K], y [K, n])`` -> Tensor
        ``[K, n, n]`` or :class:`~odenet._jacobian.SparseJac` (wrapped by
        :func:`odenet._jacobian.user_jacobian`); autograd when None.
    sparsity : :class:`~odenet._jacobian.Sparsity`, optional
        The pattern of ``J``: autograd Jacobians are compressed (one product per row
        or column group, :func:`~odenet._jacobian.compressed_jacobian`) and a large
        single system factorises with SuperLU.
    """

    def __init__(
        self,
        *,
        tol: float | None,
        max_iter: int,
        atol,
        rtol,
        jac=None,
        sparsity=None,
        tableau=None,
        eps: float = 0.0,
    ):
        # the iteration stops well inside the error the controller lets through, which
        # for a DIRK pair is tol/κ, not tol (a Newton error of 0.03·tol would be the
        # larger part of the per-step error at κ ≈ 30)
        self.safety = error_safety(tableau, rtol, eps)
        if tol is None and is_dirk_pair(tableau):
            # but not below what the dtype resolves: 10·eps relative, in units of the
            # scale (atol + rtol·|y|)/κ (RADAU5's floor 10·eps/rtol, with κ)
            tight = torch.as_tensor(self.safety / torch.as_tensor(rtol).clamp_min(1e-300))
            tol = max(DIRK_NEWTON_TOL, 10 * eps * float(tight.max()))
        elif tol is None:
            tol = NEWTON_TOL
        self.tol = tol
        self.jac = jac
        self.sparsity = sparsity
        self.max_iter = max_iter
        self.atol = atol
        self.rtol = rtol
        self.stats = NewtonStats()
        self.J: torch.Tensor | None = None
        self.J_fresh = False
        self.J_version = 0
        self._lu_key = None
        self._lu = None
        self._lu_hA = None  # the hA of _lu (see filtered)

    # --- Jacobian cache -----------------------------------------------------------
    def jacobian(self, g, s, y, *, fresh: bool = False):
        """The cached ``J`` at ``(s [K], y [K, n])`` (recomputed when absent, or when
        ``fresh`` and the cached one is stale): Tensor ``[K, n, n]`` or
        :class:`~odenet._jacobian.SparseJac`."""
        if self.J is None or (fresh and not self.J_fresh):
            if self.jac is not None:
                with torch.no_grad():
                    self.J = self.jac(s.detach(), y.detach())
            elif self.sparsity is not None:
                self.J = compressed_jacobian(g, s, y, self.sparsity)
                self.stats.jac_products += self.sparsity.products
            else:
                self.J = batched_jacobian(g, s, y)
                self.stats.jac_products += y.shape[-1]
            self.J_fresh = True
            self.J_version += 1
            self.stats.jacobians += 1
        return self.J

    def jacobian_product(self, v: torch.Tensor) -> torch.Tensor | None:
        """``J v`` [K, n] with the cached Jacobian (None where there is none yet)."""
        J = self.J
        if isinstance(J, SparseJac):
            Jv = J.A @ v.T.cpu().numpy()
            return torch.as_tensor(Jv, dtype=v.dtype, device=v.device).T
        if isinstance(J, torch.Tensor):
            return (J.to(v.dtype) @ v[..., None])[..., 0]
        return None

    def state_changed(self) -> None:
        """Called after an accepted step: the cached Jacobian is now stale."""
        self.J_fresh = False

    def forget(self) -> None:
        self.J = None
        self.J_fresh = False

    # --- the iteration ------------------------------------------------------------
    def iteration_matrix(self, hA: torch.Tensor, J):
        """LU factors of ``I − (hA ⊗ J)`` for ``hA`` [K, S, S] and ``J`` [K, n, n],
        per-stage ``[K, S, n, n]`` or sparse (an object with ``solve(rhs [K, S·n])``)."""
        self.stats.factorizations += 1
        return lu_kron(hA, J)

    def filter_error(self, err: torch.Tensor, tableau=None) -> torch.Tensor:
        """The error estimate a diagonally implicit step reports: ``κ · F(err)``.

        ``κ = self.safety`` (:func:`error_safety` of the solve's tableau, fixed when the
        Newton solver is built).  ``F`` is Hairer & Wanner's filter (IV.8)
        ``(I − hγJ)⁻¹ err`` with the LU cached by :meth:`stages` for methods that
        propagate the higher-order solution (local extrapolation: kvaerno3/5, sdirk4;
        their implicit stages share ``γ = a_ii``): non-stiff components (``hγJ``
        small) are kept, stiff ones damped, so the controller does not reject steps
        the stiff components do not need (sdirk4 on Robertson [0, 1e5] at rtol 1e-6:
        2468 f-evaluations instead of 22056).

        A method that propagates the *lower*-order solution (TR-BDF2: order 2, its
        estimate of order 3) gets no filter: filtered, its error on HIRES at rtol 1e-6
        was 573·rtol against 143·rtol raw.  Nor does a pair whose embedded solution is
        one of its stages (:func:`embedded_is_a_stage`: kvaerno3, kvaerno5): its
        estimate is the difference of two stage values, already damped like ``1/(hλ)``
        where a stiff component is driven (Prothero–Robinson), so the filter damped it
        twice, like ``1/(hλ)²`` — one step at ``hλ = −1e6`` estimated 1.6e-5 (kvaerno3)
        and 4.8e-6 (kvaerno5) of its local error, and the solves ended at 70× and 14×
        scipy Radau's error, status ok (``studies/benchmarks/stiff_holdout.py``).
        ``err`` [K, n].
        """
        if err is None or isinstance(err, tuple):
            return err
        with torch.no_grad():
            b_hat = None if tableau is None else tableau.b_hat
            extrapolates = b_hat is None or tableau.order > (tableau.embedded_order or 0)
            undamped = b_hat is None or not embedded_is_a_stage(tableau)
            if (
                extrapolates
                and undamped
                and self._lu is not None
                and self._lu.shape == tuple(err.shape)
            ):
                err = self.solve(self._lu, err)
            return err * self.safety

    def filtered(self, rhs: torch.Tensor):
        """``hγ (I − hγJ)⁻¹ rhs`` [K, n] with the factors of the last diagonally
        implicit stage (``hγ = h·a_ii``); ``None`` where the last factors are of a
        fully implicit step (``S·n`` unknowns), which has no such form."""
        lu, hA = self._lu, self._lu_hA
        if lu is None or hA is None or hA.shape[1] != 1 or lu.shape != tuple(rhs.shape):
            return None
        return self.solve(lu, hA[:, 0, :] * rhs)

    def roundoff_floor(self, lu, c, y, f, rest, scale, factor=ROUNDOFF_FACTOR):
        """The norm below which a Newton increment is the round-off of its residual.

        The residual ``c·f(y) − rest`` is evaluated in floating point: each ``f_i``
        carries ``eps·Σ_j |J_ij y_j|`` (the size of the terms that cancel in it: at a
        chemical equilibrium ``f ≈ 0`` is a balance of rates 1e10 times larger than
        ``y``, DETEST F5), the sum ``eps·(|c f| + |rest|)``.  Through the iteration
        matrix that noise is the increment an iteration at the solution still makes;
        an increment within ``factor`` of it has converged as far as arithmetic
        allows (LSODE's test ``del ≤ 100·uround·‖y‖`` in spirit, with the terms' size
        in place of ``y``'s; :func:`roundoff_factor`).

        Parameters
        ----------
        lu : factors of :meth:`iteration_matrix` for one stage, ``I − cJ``;
        c : [K] the coefficient of ``J`` there (BDF: ``h/α_k``, in time units of ``t``);
        y, f, rest, scale : [K, n] (state, ``f(y)``, the residual's other terms, the
            error scale ``atol + rtol·|y|``);
        factor : the multiple of the round-off (default :data:`ROUNDOFF_FACTOR`).

        Returns
        -------
        [K] the floor in the increment's norm (RMS of ``|Δ|/scale``).
        """
        return self._floor_of(lu, self.roundoff_noise(c, y, f, rest), scale, factor)

    def _floor_of(self, lu, noise, scale, factor):
        """``factor`` times the RMS of ``M⁻¹ noise / scale`` [K]: the increment an
        iteration makes from a residual of that noise alone (``noise``, ``scale`` [K, m])."""
        return factor * (self.solve(lu, noise).abs() / scale).pow(2).mean(dim=1).sqrt()

    def roundoff_noise(self, c, y, f, rest):
        """``eps·(|c|·(Σ_j |J_ij y_j| + |f_i|) + |rest_i|)`` [K, n]: the round-off of the
        residual ``c·f(y) − rest`` (:meth:`roundoff_floor`) with the current Jacobian
        (none: only ``|f|`` and ``rest``).  ``c`` [K] or a number; ``f``, ``rest``
        [K, n] or ``None`` (zero)."""
        eps = torch.finfo(y.dtype).eps
        J = self.J
        if isinstance(J, SparseJac):
            terms = torch.as_tensor(
                abs(J.A) @ y.abs().T.cpu().numpy(), dtype=y.dtype, device=y.device
            ).T
        elif isinstance(J, torch.Tensor):
            terms = (J.abs() @ y.abs()[..., None])[..., 0]
        else:
            terms = torch.zeros_like(y)
        if f is not None:
            terms = terms + f.abs()
        cc = torch.as_tensor(c, dtype=y.dtype, device=y.device).reshape(-1, 1)
        noise = cc.abs() * terms
        return eps * (noise if rest is None else noise + rest.abs())

    def stage_roundoff_floor(self, lu, hA, Z, G, base, scale, factor=ROUNDOFF_FACTOR):
        """The norm below which an increment of :meth:`stages` is the round-off of the
        stage residual ``Z − base − (hA ⊗ I)·G(Z)``: ``factor`` times the RMS of
        ``(I − hA ⊗ J)⁻¹ noise / scale`` with ``noise = (|hA| ⊗ I)·n_G + eps·(|Z| +
        |base|)``, ``n_G`` each stage's :meth:`roundoff_noise` of ``G`` (``eps·(|J||Z_j|
        + |G_j|)``: the terms that cancel in ``f``).  ``lu``: the factors of
        :meth:`iteration_matrix` for ``hA`` [K, S, S]; ``Z, G, base`` [K, S, n]; ``scale``
        [K, 1, n].  Returns [K]."""
        K, S, n = Z.shape
        eps = torch.finfo(Z.dtype).eps
        n_G = torch.stack([self.roundoff_noise(1.0, Z[:, j], G[:, j], None) for j in range(S)], 1)
        noise = hA.abs() @ n_G + eps * (Z.abs() + base.abs())
        flat = (K, S * n)
        return self._floor_of(lu, noise.reshape(flat), scale.expand(K, S, n).reshape(flat), factor)

    def solve(self, lu, rhs: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ rhs`` for the factors ``lu`` of :meth:`iteration_matrix`; rhs [K, m]."""
        self.stats.linear_solves += 1
        return lu.solve(rhs)

    def stages(self, g, s, y, base, hA, Z0, g_of_stages):
        """Solve ``Z = base + (hA ⊗ I) G(Z)`` for ``Z`` [K, S, n] (no autograd history).

        Parameters
        ----------
        s, y : [K], [K, n] the step's start (where a fresh Jacobian is taken).
        base : [K, S, n]; hA : [K, S, S]; Z0 : initial guess [K, S, n].
        g_of_stages : callable ``Z [K, S, n] -> G [K, S, n]``.

        Returns
        -------
        (Z, ok) where ok [K] is False for rows whose iteration failed.
        """
        K, S, n = Z0.shape
        scale = ((self.atol + self.rtol * y.abs()) / self.safety).unsqueeze(1)  # [K, 1, n]
        with torch.no_grad():
            for attempt in range(2):
                J = self.jacobian(g, s, y, fresh=attempt == 1)
                # SDIRK/ESDIRK stages share h·a_ii: one factorization per step serves all
                key = (self.J_version, hA.shape, hA.flatten(1).tolist())
                if self._lu_key == key:
                    lu = self._lu
                else:
                    lu = self.iteration_matrix(hA, J)
                    self._lu_key, self._lu, self._lu_hA = key, lu, hA
                before = self.stats.iterations
                Z, ok = self._iterate(
                    Z0, base, hA, scale, lu, g_of_stages, min_iter=1 if self.J_fresh else 3,
                    fresh=self.J_fresh,
                )  # fmt: skip
                if bool(ok.all()) or self.J_fresh:
                    break
            if not bool(ok.all()):
                self.stats.failures += 1
            elif self.stats.iterations - before > 3 and not self.J_fresh:
                # converging, but slowly on a stale Jacobian: refresh it next time
                self.forget()
        return Z, ok

    def _iterate(
        self, Z0, base, hA, scale, lu, g_of_stages, *, min_iter: int = 1, fresh: bool = True
    ):
        """Simplified Newton iterations; ``min_iter`` iterations at least before convergence.

        With a stale Jacobian the contraction estimate from two increments is not to be
        trusted: a direction in which the old iteration matrix is badly wrong contracts
        at a rate near 1 with tiny increments, while the first increments are dominated
        by the directions that converge at once (Van der Pol μ = 1000 after a jump: a
        Jacobian from the jump gives increments of 1e-3 of the tolerance and a rate of
        0.07, with a stage residual 1e6 times the tolerance).  Three iterations give a
        second rate estimate, which shows the slow direction.

        Increments that stop contracting within the round-off of the stage residual
        have converged (:meth:`stage_roundoff_floor`, as BDF's and Radau's iterations):
        on DETEST F5 at its equilibrium, where rates of 1e3 cancel in ``f ≈ 0``, the
        DIRK stages stalled at 4e-7 … 5e-5 tolerance units, were taken as diverged, and
        kvaerno5 at rtol 1e-5 failed Newton on 236 of 602 steps.  ``fresh``: the
        Jacobian in ``lu`` was taken at this step's start (its floor is believed at
        once and :data:`ROUNDOFF_FACTOR` times; a kept one's after a contraction at
        :data:`FLOOR_TRUST_RATE` and within the round-off itself, :func:`roundoff_factor`).
        """
        K, S, n = Z0.shape
        # one system: the decisions on Python floats (see odenet._radau.RadauIIA._iterate)
        host = K == 1
        ops = HostOps if host else TensorOps

        def rows(mask):  # a [K] decision applied to [K, S, n] tensors
            return mask if host else mask[:, None, None]

        Z = Z0.clone()
        if host:
            converged = failed = False
            prev, rate = math.inf, 0.0
        else:
            converged = torch.zeros(K, dtype=torch.bool, device=Z.device)
            failed = torch.zeros_like(converged)
            prev = torch.full((K,), float("inf"), dtype=Z.dtype, device=Z.device)
            rate = torch.zeros(K, dtype=Z.dtype, device=Z.device)
        last = rate
        trusted = ops.full(bool(fresh), converged)
        eps = torch.finfo(Z.dtype).eps
        for it in range(self.max_iter):
            self.stats.iterations += 1
            Z_it, G = Z, None
            # under solve(compile=True) one compiled call forms
            # the residual, the solve and the increment norm (odenet._compiled.FusedNewton,
            # None: this iteration runs eagerly); the decisions below stay on the host
            fused = getattr(self, "fused", None)
            out = None
            if fused is not None:
                out = fused.iteration(self, g_of_stages, Z, base, hA, scale, lu)
            if out is not None:
                dZ, dnorm = out
            else:
                G = g_of_stages(Z)
                F = Z - base - hA @ G
                dZ = -self.solve(lu, F.reshape(K, S * n)).reshape(K, S, n)
                dnorm = (dZ / scale).pow(2).mean(dim=(1, 2)).sqrt()
            if host:
                dnorm = float(dnorm)
            finite = ops.isfinite(dnorm)
            active = ops.not_(converged | failed)
            Z = ops.where(rows(active & finite), Z + dZ, Z)
            # an increment at the round-off of the stages cannot be improved on
            size = (Z / scale).pow(2).mean(dim=(1, 2)).sqrt()
            roundoff = dnorm <= 16 * eps * (float(size) if host else size)
            if it > 0:
                # the worse of the last two rates: an early fast one must not hide a slow one
                last, rate = dnorm / prev, ops.maximum(last, dnorm / prev)
                eta = rate / ops.clip(1 - rate, lo=1e-12)
            else:
                # no rate estimate yet: accept a first increment only when it is tiny
                eta = ops.full(100.0, dnorm)
            now_converged = active & finite & ((eta * dnorm <= self.tol) | roundoff)
            if it + 1 < min_iter:
                now_converged = now_converged & roundoff
            diverged = (rate >= 1) & (it > 0) & ops.not_(now_converged)
            if it > 0:
                trusted = trusted | (finite & (last <= FLOOR_TRUST_RATE))
                stalled = active & finite & diverged & trusted
                if ops.any(stalled):
                    G = g_of_stages(Z_it) if G is None else G  # the fused iteration keeps none
                    floor = self.stage_roundoff_floor(
                        lu, hA, Z_it, G, base, scale, roundoff_factor(fresh)
                    )
                    at_floor = stalled & ((float(floor) if host else floor) >= dnorm)
                    now_converged = now_converged | at_floor
                    diverged = diverged & ops.not_(at_floor)
            now_failed = active & (ops.not_(finite) | diverged)
            converged = converged | now_converged
            failed = failed | now_failed
            prev = dnorm
            if ops.all(converged | failed):
                break
        ok = converged & ops.not_(failed)
        if host:
            ok = torch.tensor([ok], device=Z.device)
        return Z, ok

    def attach(self, g, times, base, hA, Z, g_of_stages):
        """Two Newton steps with the exact Jacobian at ``Z`` and autograd enabled.

        The value is ``Z`` (to solver precision); the graph gives the exact
        implicit-function-theorem derivative and the exact second derivative.
        Used only when gradients are needed.
        """
        K, S, n = Z.shape
        Zd = Z.detach()
        Js = torch.stack(
            [batched_jacobian(g, times[:, j], Zd[:, j]) for j in range(S)], dim=1
        )  # [K, S, n, n]
        self.stats.jacobians += S
        lu = self.iteration_matrix(hA.detach(), Js)

        def newton_step(Z):
            F = Z - base - torch.einsum("kij,kjn->kin", hA, g_of_stages(Z))
            return Z - self.solve(lu, F.reshape(K, S * n)).reshape(K, S, n)

        # Two steps: each simplified Newton step with the exact Jacobian at the solution
        # gains one order in the perturbation of the inputs, so the first step (from the
        # detached Z) has the right first derivative and the second the right second
        # derivative too (one step alone has a wrong second derivative: half the truth
        # for y' = -k y, none at all when f is linear in y).  Third and higher derivatives
        # would need more steps and are not supported.
        return newton_step(newton_step(Zd))
