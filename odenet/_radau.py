"""Adaptive Radau IIA of order 5: Hairer's RADAU5 as a method of the one step loop.

The three-stage Radau IIA collocation method (:func:`odenet.tableau` ``"radau_iia5"``)
with the machinery that makes it the reference stiff solver (Hairer & Wanner II,
Sec. IV.8; the same choices as scipy's ``Radau``):

* **Simplified Newton on the eigen-decomposition of ``A⁻¹``.**  ``A⁻¹ = T Λ T⁻¹``
  with one real eigenvalue ``γ̂`` and a complex pair ``α ± iβ``; in the variables
  ``W = (T⁻¹ ⊗ I) Z`` the ``3n × 3n`` iteration matrix splits into one real
  ``n × n`` system ``(γ̂/h − J)`` and one complex ``n × n`` system
  ``((α + iβ)/h − J)``: two LU factorisations instead of one of size ``3n``.
* **Jacobian reuse.**  ``J`` is kept across steps and recomputed after an accepted
  step only when the Newton iteration there was slow (more than two iterations at
  a contraction rate above 1e-3), or when the iteration fails on a stale ``J``.
  The LU factors are kept while ``h`` and ``J`` do not change.
* **Starting guess** from the previous step's collocation polynomial, extrapolated
  to the new stage times.
* **Error estimate** ``err = (I − hγ₀J)⁻¹ [γ₀ h f(y0) + Σ e_i Z_i]`` with
  ``γ₀ = 1/γ̂``: the embedded third-order solution, *filtered* through the real LU
  so that stiff components are damped (an estimate of order ``h⁴``: the
  controller's exponent is 1/4).  After a rejection (and on the first step) a
  second filtering ``(I − hγ₀J)⁻¹ [f(y0 + err) + Σ e_i Z_i / h] h γ₀`` is used when
  the first estimate says reject, as in Hairer's code.
* **Dense output**: the collocation polynomial (degree 3) through ``y0`` and the
  three stage values.
* A Newton failure (divergence, or no convergence in ``max_iter`` iterations with
  a fresh Jacobian) makes the step fail (``ok = False``) with an error estimate
  that makes the controller halve the step.

Gustafsson's predictive controller and RADAU5's "keep ``h`` when the factor is
below 1.2 so the LU can be reused" live on the controller side and are not part
of this method object.  The Newton stopping threshold is scipy's
``max(10 ε / rtol, min(0.03, √rtol))`` and the iteration cap 6 (``solve``'s
``newton_max_iter`` overrides the cap when it is not the adaptive default 8;
``newton_tol`` is not used).

The method protocol is the loop's (see :mod:`odenet._stepper`): ``step`` returns a
``StepResult`` whose ``error`` is the absolute local error estimate.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from odenet._jacobian import batched_jacobian, lu_shifted
from odenet._newton import Newton
from odenet._stepper import RungeKutta, StepResult

S6 = math.sqrt(6.0)
# the embedded-estimate weights e_i (Hairer's radau5.f / scipy): Σ e_i Z_i / h
E_WEIGHTS = np.array([-13 - 7 * S6, -13 + 7 * S6, -1]) / 3
# eigenvalues of A⁻¹: one real, a complex pair α ± iβ
MU_REAL = 3 + 3 ** (2 / 3) - 3 ** (1 / 3)
MU_COMPLEX = 3 + 0.5 * (3 ** (1 / 3) - 3 ** (2 / 3)) - 0.5j * (3 ** (5 / 6) + 3 ** (7 / 6))
# A⁻¹ = T diag-block(MU_REAL, [[α, −β], [β, α]]) T⁻¹ (Hairer's constants, as scipy)
T_MAT = np.array(
    [
        [0.09443876248897524, -0.14125529502095421, 0.03002919410514742],
        [0.25021312296533332, 0.20412935229379994, -0.38294211275726192],
        [1.0, 1.0, 0.0],
    ]
)
TI_MAT = np.array(
    [
        [4.17871859155190428, 0.32768282076106237, 0.52337644549944951],
        [-4.17871859155190428, -0.32768282076106237, 0.47662355450055044],
        [0.50287263494578682, -2.57192694985560522, 0.59603920482822492],
    ]
)
# the collocation polynomial: y(t0 + θh) = y0 + Σ_m θ^(m+1) Σ_i P[i, m] Z_i
P_COLLOCATION = np.array(
    [
        [13 / 3 + 7 * S6 / 3, -23 / 3 - 22 * S6 / 3, 10 / 3 + 5 * S6],
        [13 / 3 - 7 * S6 / 3, -23 / 3 + 22 * S6 / 3, 10 / 3 - 5 * S6],
        [1 / 3, -8 / 3, 10 / 3],
    ]
)


class RadauNewton(Newton):
    """The Jacobian cache and counters of :class:`Radau5` (``Newton``'s interface).

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


class Radau5(RungeKutta):
    """Radau IIA order 5 with Hairer's RADAU5 Newton, error estimate and dense output.

    Built by :func:`runtime_for` for the tableau ``radau_iia5`` on adaptive solves;
    same constructor as :class:`~odenet._stepper.RungeKutta`.
    """

    def __init__(self, tableau, dtype, time_dtype, device, newton):
        super().__init__(tableau, dtype, time_dtype, device, newton)

        def T(x, dt=dtype):
            return torch.as_tensor(np.asarray(x), dtype=dt, device=device)

        cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.cdtype = cdt
        self.T_mat = T(T_MAT)
        self.TI_real = T(TI_MAT[0])
        self.TI_complex = torch.as_tensor(TI_MAT[1] + 1j * TI_MAT[2], dtype=cdt, device=device)
        self.E = T(E_WEIGHTS)
        self.A_t = T(tableau.A)
        self.A_inv_t = T(np.linalg.inv(tableau.A))
        # dense output in terms of the stage derivatives k = A⁻¹ Z / h:
        # Σ_i P[i, m] Z_i = h Σ_j (Aᵀ P)[j, m] k_j, the form RungeKutta.interpolate uses
        self.P = T(tableau.A.T @ P_COLLOCATION)
        self.extra_A = None
        rtol = newton.rtol
        rtol_f = float(rtol.max()) if isinstance(rtol, torch.Tensor) else float(rtol)
        eps = float(torch.finfo(dtype).eps)
        # scipy's / Hairer's Newton stopping threshold (in units of the tolerance)
        self.newton_tol = max(10 * eps / max(rtol_f, 1e-300), min(0.03, math.sqrt(rtol_f)))
        self.max_iter = 6 if newton.max_iter == 8 else newton.max_iter
        self._lu = None
        self._lu_key = None
        self._prev = None  # (s_end [K], h [K], y_start [K, n], Q-coefficients Z [3, K, n])
        self._last_s = None

    # --- linear algebra ------------------------------------------------------------
    def _factor(self, h, J):
        key = (self.newton.J_version, h.tolist())
        if self._lu_key == key:
            return self._lu
        hy = h.to(self.dtype)
        lu = (lu_shifted(J, MU_REAL / hy), lu_shifted(J, MU_COMPLEX / hy.to(self.cdtype)))
        self.newton.stats.factorizations += 2
        self._lu, self._lu_key = lu, key
        return lu

    def _solve(self, lu, rhs):
        self.newton.stats.linear_solves += 1
        return lu.solve(rhs)

    # --- the step ----------------------------------------------------------------------
    def step(self, g, s, y, h, f0) -> StepResult:
        nw = self.newton
        K, n = y.shape
        dt = y.dtype
        h_safe = torch.where(h == 0, torch.ones_like(h), h)
        hy = h_safe.to(dt)
        times = s[:, None] + self.c[None, :] * h[:, None]  # [K, 3]
        with torch.no_grad():
            y_ = y.detach()
            scale = nw.atol + nw.rtol * y_.abs()
            # rejected rows retry from the same s: they use the second error estimate
            retry = (
                torch.ones(K, dtype=torch.bool, device=y.device)
                if self._last_s is None or self._last_s.shape != s.shape
                else (s.detach() == self._last_s)
            )
            Z0 = self._starting_guess(s.detach(), h_safe.detach(), y_)
            for attempt in range(2):
                J = nw.jacobian(g, s.detach(), y_, fresh=attempt == 1)
                lu = self._factor(h_safe.detach(), J)
                Z, ok, n_iter, rate = self._iterate(g, times.detach(), y_, hy, Z0, scale, lu)
                if bool(ok.all()) or nw.J_fresh:
                    break
            nw.slow = bool(n_iter > 2 and rate > 1e-3)
            if not bool(ok.all()):
                nw.stats.failures += 1
        if self.track_grad and torch.is_grad_enabled():
            base = y[:, None, :].expand(K, 3, n)
            hA = hy[:, None, None] * self.A_t[None]

            def G(Y):
                return torch.stack([g(times[:, j], Y[:, j]) for j in range(3)], dim=1)

            Y = nw.attach(g, times, base, hA, y[:, None] + Z.transpose(0, 1), G)
            Z = (Y - y[:, None]).transpose(0, 1)
        y1 = y + Z[2]
        ks = torch.einsum("ij,jkn->ikn", self.A_inv_t, Z) / hy[None, :, None]
        with torch.no_grad():
            err = self._error(g, s.detach(), y_, hy, f0.detach(), Z.detach(), lu, retry, y1)
            # a failed row: an estimate whose ratio makes the I controller roughly halve h
            big = 16.0 * (nw.atol + nw.rtol * torch.maximum(y_.abs(), y1.detach().abs()))
            err = torch.where(ok[:, None], err, big * torch.ones_like(err))
            zero = h == 0
            if bool(zero.any()):
                err = torch.where(zero[:, None], torch.zeros_like(err), err)
                ok = ok | zero
        self._last_s = s.detach().clone()
        self._pending = (s.detach() + h.detach(), h_safe.detach(), y_, Z.detach(), ok)
        return StepResult(y1, err, ks, None, ok)

    def _starting_guess(self, s, h, y):
        """Extrapolate the last accepted step's collocation polynomial (zeros at first)."""
        pending = getattr(self, "_pending", None)
        if pending is not None and pending[0].shape == s.shape:
            s_end, h_p, y_p, Z_p, ok_p = pending
            # rows whose last trial was accepted now start at its end
            moved = ok_p & (s == s_end)
            if self._prev is None:
                if bool(moved.all()):
                    self._prev = (s_end, h_p, y_p, Z_p)
            else:
                ps, ph, py, pZ = self._prev
                m2, m3 = moved[:, None], moved[None, :, None]
                self._prev = (
                    torch.where(moved, s_end, ps),
                    torch.where(moved, h_p, ph),
                    torch.where(m2, y_p, py),
                    torch.where(m3, Z_p, pZ),
                )
            self._pending = None
        if self._prev is None:
            return torch.zeros(3, *y.shape, dtype=y.dtype, device=y.device)
        ps, ph, py, pZ = self._prev
        if not bool((s == ps).all()):  # a row not at the end of its last accepted step
            return torch.zeros(3, *y.shape, dtype=y.dtype, device=y.device)
        # θ of the new stage times in the previous step (beyond 1: extrapolation)
        theta = 1 + (self.c[:, None] * h[None, :]) / ph[None, :]  # [3, K]
        th = theta.to(y.dtype)[:, :, None]
        Q = torch.einsum("ikn,im->mkn", pZ, torch.as_tensor(P_COLLOCATION, dtype=y.dtype))
        poly = th * Q[0] + th**2 * Q[1] + th**3 * Q[2]  # [3, K, n]
        return py[None] + poly - y[None]

    def _iterate(self, g, times, y, hy, Z0, scale, lu):
        """Simplified Newton in the eigen-variables ``W = T⁻¹ Z``.  Returns
        ``(Z [3, K, n], ok [K], iterations, worst rate)``."""
        nw = self.newton
        lu_r, lu_c = lu
        K, n = y.shape
        Mr = (MU_REAL / hy)[:, None]
        Mc = (MU_COMPLEX / hy.to(self.cdtype))[:, None]
        TI = torch.as_tensor(TI_MAT, dtype=y.dtype, device=y.device)
        W = torch.einsum("ij,jkn->ikn", TI, Z0)
        Z = Z0
        converged = torch.zeros(K, dtype=torch.bool, device=y.device)
        failed = torch.zeros_like(converged)
        prev = None
        rate = torch.zeros(K, dtype=y.dtype, device=y.device)
        worst = 0.0
        tol = self.newton_tol
        k = 0
        for k in range(self.max_iter):
            nw.stats.iterations += 1
            F = torch.stack([g(times[:, i], y + Z[i]) for i in range(3)])  # [3, K, n]
            finite_F = torch.isfinite(F).all(dim=2).all(dim=0)
            F = torch.nan_to_num(F)
            f_real = torch.einsum("i,ikn->kn", self.TI_real, F) - Mr * W[0]
            f_cplx = torch.einsum("i,ikn->kn", self.TI_complex, F.to(self.cdtype)) - Mc * (
                W[1] + 1j * W[2]
            )
            dW_r = self._solve(lu_r, f_real)
            dW_c = self._solve(lu_c, f_cplx)
            dW = torch.stack([dW_r, dW_c.real, dW_c.imag])
            dnorm = (dW / scale[None]).pow(2).mean(dim=(0, 2)).sqrt()
            active = ~(converged | failed)
            finite = finite_F & torch.isfinite(dnorm)
            if prev is not None:
                rate = dnorm / prev
                diverging = (rate >= 1) | (
                    rate.pow(self.max_iter - k) / (1 - rate).clamp_min(1e-12) * dnorm > tol
                )
            else:
                diverging = torch.zeros_like(converged)
            now_failed = active & (~finite | diverging)
            upd = active & ~now_failed
            W = torch.where(upd[None, :, None], W + dW, W)
            Z = torch.einsum("ij,jkn->ikn", self.T_mat, W)
            if prev is not None:
                conv = rate / (1 - rate).clamp_min(1e-12) * dnorm < tol
            else:
                conv = torch.zeros_like(converged)
            now_conv = upd & ((dnorm == 0) | conv)
            if prev is not None and bool(upd.any()):
                worst = float(rate[upd].max())  # the last rate (scipy's and Hairer's)
            converged |= now_conv
            failed |= now_failed
            prev = dnorm
            if bool((converged | failed).all()):
                break
        return Z, converged & ~failed, k + 1, worst

    def _error(self, g, s, y, hy, f0, Z, lu, retry, y1):
        """Hairer's filtered estimate ``(γ̂/h − J)⁻¹ (f0 + Σ e_i Z_i / h)``; a second
        filtering through ``f(y0 + err)`` for retried rows that the first rejects."""
        lu_r = lu[0]
        ZE = torch.einsum("i,ikn->kn", self.E, Z) / hy[:, None]
        err = self._solve(lu_r, f0 + ZE)
        if bool(retry.any()):
            nw = self.newton
            sc = nw.atol + nw.rtol * torch.maximum(y.abs(), y1.detach().abs())
            ratio = (err / sc).pow(2).mean(dim=1).sqrt()
            again = retry & (ratio > 1)
            if bool(again.any()):
                err2 = self._solve(lu_r, g(s, y + err) + ZE)
                err = torch.where(again[:, None], err2, err)
        return err


def is_radau5(tab) -> bool:
    """The tableau is the three-stage Radau IIA that :class:`Radau5` implements."""
    ref = _radau_A()
    A = np.asarray(tab.A, dtype=float)
    return A.shape == (3, 3) and bool(np.allclose(A, ref, rtol=0, atol=1e-14))


def _radau_A() -> np.ndarray:
    return np.array(
        [
            [(88 - 7 * S6) / 360, (296 - 169 * S6) / 1800, (-2 + 3 * S6) / 225],
            [(296 + 169 * S6) / 1800, (88 + 7 * S6) / 360, (-2 - 3 * S6) / 225],
            [(16 - S6) / 36, (16 + S6) / 36, 1 / 9],
        ]
    )


def runtime_for(tab, dtype, time_dtype, device, newton, *, fixed: bool) -> RungeKutta:
    """The method object the loop runs for ``tab``: :class:`Radau5` for an adaptive
    three-stage Radau IIA solve, the generic :class:`RungeKutta` otherwise."""
    if not fixed and getattr(tab, "estimator", None) == "radau5" and is_radau5(tab):
        nw = RadauNewton(
            tol=newton.tol,
            max_iter=newton.max_iter,
            atol=newton.atol,
            rtol=newton.rtol,
            jac=newton.jac,
            sparsity=newton.sparsity,
        )
        return Radau5(tab, dtype, time_dtype, device, nw)
    return RungeKutta(tab, dtype, time_dtype, device, newton)


__all__ = ["Radau5", "RadauNewton", "batched_jacobian", "is_radau5", "runtime_for"]
