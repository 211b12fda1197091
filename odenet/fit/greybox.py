"""Grey-box fitting: the user's mechanistic vector field with unknown parameters.

``GreyBoxField(mechanism, params)`` turns ``mechanism(t, x, p) -> dx/dt`` (torch, ``p``
a dict of scalars) into a learnable field; positive parameters are learnt as
logarithms so they stay positive.  An optional neural correction ``g(x)`` makes a
hybrid ``f = mechanism + g``.  Plug it into :class:`~odenet.fit.continuous.ShootingODE`
with ``physical=True`` (the mechanism speaks physical units; the trainer supplies
the normaliser).

:class:`OneCompartmentPK` is a grey-box model whose state is not the observation:
an oral one-compartment model with first-order absorption, doses entering the gut
compartment as jumps.

:class:`GreyBoxMLE` fits a mechanism by maximum likelihood over its parameters *and*
every series' initial state (Levenberg–Marquardt with exact Jacobians from the forward
variational equations; multiple shooting first, then single shooting), with
Gauss–Newton standard errors: use it through ``fit(..., optimizer="gauss_newton")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

import odenet
from odenet._errors import InputError
from odenet.batch import IrregularBatch
from odenet.fit._common import fill_locf, masked_mse
from odenet.fit.datasets import damped_oscillator_field, lotka_volterra_field


class GreyBoxField(nn.Module):
    """Learnable mechanistic field ``f(t, x) = mechanism(t, x, p) [+ correction(x)]``.

    Parameters
    ----------
    mechanism : callable ``(t, x [K, D], p: dict[str, Tensor]) -> [K, D]``
        The known structure, in physical units.
    params : dict[str, float]
        Initial guesses of the unknown parameters.
    positive : bool
        Learn ``log p`` (parameters stay positive).  Initial guesses must then be > 0.
    correction : nn.Module ``(t, x) -> [K, D]``, optional
        A neural correction added to the mechanism (hybrid model).  Its output layer
        should start near 0 so the fit starts from the mechanism.
    """

    def __init__(
        self,
        mechanism: Callable,
        params: dict,
        *,
        positive: bool = True,
        correction: nn.Module | None = None,
    ):
        super().__init__()
        if not params:
            raise InputError("`params` must name at least one unknown parameter with a guess.")
        bad = {k: v for k, v in params.items() if positive and not v > 0}
        if bad:
            raise InputError(
                f"`params` {bad} must be > 0 with positive=True (they are learnt as logs); "
                "give positive guesses or pass positive=False."
            )
        self.mechanism = mechanism
        self.positive = positive
        self.names = list(params)
        init = [math.log(params[k]) if positive else float(params[k]) for k in self.names]
        self.raw = nn.Parameter(torch.tensor(init, dtype=torch.float64))
        self.correction = correction

    @property
    def params(self) -> dict:
        """Current parameter values ``{name: 0-dim Tensor}`` (differentiable)."""
        vals = self.raw.exp() if self.positive else self.raw
        return {k: vals[i] for i, k in enumerate(self.names)}

    def values(self) -> dict:
        """Current parameter values as plain floats."""
        return {k: float(v.detach()) for k, v in self.params.items()}

    def forward(self, t, x):
        dx = self.mechanism(t, x, self.params)
        if self.correction is not None:
            dx = dx + self.correction(t, x)
        return dx


MECHANISMS = {
    "lotka_volterra": (
        lotka_volterra_field,
        {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "delta": 1.0},
    ),
    "damped_oscillator": (damped_oscillator_field, {"omega": 1.0, "zeta": 0.5}),
}  # name -> (mechanism, default initial guesses)


def relative_error(found: dict, truth: dict) -> dict:
    """``|p̂ − p| / |p|`` per parameter name present in both."""
    return {k: abs(found[k] - truth[k]) / abs(truth[k]) for k in truth if k in found}


# --- pharmacokinetics -------------------------------------------------------------


class OneCompartmentPK(nn.Module):
    """Oral one-compartment PK with first-order absorption; doses are jumps.

    State ``(A_g, A_c)`` (amounts in gut and central compartment, dose units):
    ``A_g' = −k_a A_g``, ``A_c' = k_a A_g − k_e A_c``; observed concentration
    ``C = A_c / V``.  At each dose time the dose amount is added to ``A_g``.
    Single dose ⇒ the Bateman function
    ``C(t) = D k_a / (V (k_a − k_e)) (e^{−k_e t} − e^{−k_a t})`` (used in tests).

    Parameters
    ----------
    doses : list of list of (time, amount)
        Per series (batch row order) its dosing events, sorted in time.
    ka, ke, V : float
        Initial guesses (1/time, 1/time, volume per dose unit of concentration).
    """

    trains_in_physical_units = True

    def __init__(self, doses, *, ka: float = 1.0, ke: float = 0.1, V: float = 1.0,
                 rtol: float = 1e-7, atol: float = 1e-9):  # fmt: skip
        super().__init__()
        self.doses = [sorted((float(t), float(a)) for t, a in d) for d in doses]
        if any(len(d) == 0 for d in self.doses):
            raise InputError("every series needs at least one dose (time, amount) in `doses`.")
        self.raw = nn.Parameter(torch.log(torch.tensor([ka, ke, V], dtype=torch.float64)))
        self.names = ["ka", "ke", "V"]
        self.tol = dict(rtol=rtol, atol=atol)

    def values(self) -> dict:
        return {k: float(v) for k, v in zip(self.names, self.raw.detach().exp())}

    def _field(self, t, y):
        ka, ke, _ = self.raw.exp()
        g, c = y[..., 0], y[..., 1]
        return torch.stack([-ka * g, ka * g - ke * c], -1)

    def concentration(self, series: int, times: torch.Tensor) -> torch.Tensor:
        """``C`` [Q] of series ``series`` at increasing ``times`` [Q] (0 before the first dose)."""
        V = self.raw.exp()[2]
        y = torch.zeros(2, dtype=torch.float64)
        t_now = None
        out = torch.zeros(len(times), dtype=torch.float64)
        pieces = []
        events = self.doses[series] + [(math.inf, 0.0)]
        for k in range(len(events) - 1):
            t_d, amount = events[k]
            if t_now is not None:
                y = odenet.solve(self._field, y, torch.tensor([t_now, t_d]), **self.tol).ys[-1]
            y = y + torch.tensor([amount, 0.0], dtype=torch.float64)
            t_now = t_d
            sel = (times > t_d) & (times <= events[k + 1][0])
            if bool(sel.any()):
                grid = torch.cat([torch.tensor([t_d], dtype=torch.float64), times[sel]])
                ys = odenet.solve(self._field, y, grid, **self.tol).ys[1:, 1] / V
                pieces.append((sel, ys))
        for sel, ys in pieces:
            out = out.masked_scatter(sel, ys)
        return out

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        return masked_mse(self._all(batch.times, batch.lengths), batch.values[..., 0],
                          batch.mask[..., 0])  # fmt: skip

    def _all(self, times, lengths):
        if all(len(d) == 1 for d in self.doses):
            return self._single_dose(times)
        rows = []
        for b in range(times.shape[0]):
            n = int(lengths[b])
            c = self.concentration(b, times[b, :n])
            rows.append(torch.cat([c, c.new_zeros(times.shape[1] - n)]))
        return torch.stack(rows)

    def _single_dose(self, times):
        """One per-sample solve for all series when each has a single dose (common case)."""
        t_d = torch.tensor([d[0][0] for d in self.doses], dtype=torch.float64)[: times.shape[0]]
        amount = torch.tensor([d[0][1] for d in self.doses], dtype=torch.float64)[: times.shape[0]]
        after = times > t_d[:, None]
        # times at or before the dose give C = 0; nudge them to keep each grid increasing
        tt = torch.maximum(times, t_d[:, None] + 1e-9 * (1 + torch.arange(times.shape[1])))
        grid = torch.cat([t_d[:, None], tt], 1)
        y0 = torch.stack([amount, torch.zeros_like(amount)], -1)
        c = odenet.solve(self._field, y0, grid, **self.tol).ys[:, 1:, 1] / self.raw.exp()[2]
        return torch.where(after, c, torch.zeros_like(c))

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        full = torch.full((query_times.shape[0],), query_times.shape[1])
        return self._all(query_times, full)[..., None]


# --- maximum likelihood: parameters and initial states, Gauss–Newton -----------------


class _Sensitivities(nn.Module):
    """Mechanism plus its forward variational equations, one row per segment.

    State ``[x, S]`` with ``S = ∂x/∂(s, raw) ∈ R^{D×(D+P)}`` (``s`` the segment's
    initial state, ``raw`` the learnt parameters): ``S' = J_x S + [0 | J_raw]``.
    Column ``c`` of ``S'`` is a forward-mode directional derivative of the
    mechanism (tangent ``S[:, :, c]`` in ``x``, the unit vector ``e_{c−D}`` in
    ``raw``), so any mechanism written with torch operations works and no Jacobian
    is formed.  All ``D + P`` columns go through the mechanism in one call, stacked
    on a leading axis (states ``[C, K, D]``, parameters ``[C, 1]``); a mechanism that
    does not broadcast that way is detected on the first call and served one column
    at a time.
    """

    def __init__(self, field: GreyBoxField, D: int):
        super().__init__()
        self.field, self.D = field, D
        self.P = field.raw.numel()
        self.stacked: bool | None = None  # decided on the first call
        self._tangent = None

    def _columns(self, t, x, S, raw, stacked):
        D, P, field = self.D, self.P, self.field
        C, K = D + P, x.shape[0]
        if self._tangent is None or self._tangent.dtype != raw.dtype:
            self._tangent = torch.cat([torch.zeros(D, P, dtype=raw.dtype),
                                       torch.eye(P, dtype=raw.dtype)])  # fmt: skip
        tangent_raw = self._tangent
        with torch.no_grad(), fwAD.dual_level():
            if stacked:
                xd = fwAD.make_dual(x.expand(C, K, D).clone(), S.permute(2, 0, 1).contiguous())
                # parameter c's column of the tangent: vals [C, P] -> P tensors [C, 1]
                rd = fwAD.make_dual(raw.expand(C, P).clone(), tangent_raw)
                vals = (rd.exp() if field.positive else rd).T.unsqueeze(-1).unbind(0)
                p = dict(zip(field.names, vals))
                f, d = fwAD.unpack_dual(field.mechanism(t, xd, p))
                if f.shape != (C, K, D) or d is None:
                    raise ValueError("the mechanism does not broadcast over a leading axis")
                return f[0], d.permute(1, 2, 0)
            cols = []
            for c in range(C):
                xd = fwAD.make_dual(x, S[:, :, c])
                rd = fwAD.make_dual(raw, tangent_raw[c])
                vals = rd.exp() if field.positive else rd
                out = field.mechanism(t, xd, {k: vals[i] for i, k in enumerate(field.names)})
                f, dc = fwAD.unpack_dual(out)
                cols.append(dc if dc is not None else torch.zeros_like(f))
            return f, torch.stack(cols, dim=-1)

    def forward(self, t, y):
        D, P = self.D, self.P
        x = y[:, :D]
        S = y[:, D:].reshape(-1, D, D + P)
        raw = self.field.raw.detach()
        if self.stacked is None:  # try the one-call path once, check it against the loop
            slow = self._columns(t, x, S, raw, stacked=False)
            try:
                fast = self._columns(t, x, S, raw, stacked=True)
                self.stacked = all(torch.allclose(a, b, rtol=1e-10, atol=1e-12)
                                   for a, b in zip(fast, slow))  # fmt: skip
            except (RuntimeError, ValueError, IndexError):
                self.stacked = False
            f, dS = slow
        else:
            f, dS = self._columns(t, x, S, raw, stacked=self.stacked)
        return torch.cat([f, dS.reshape(x.shape[0], -1)], dim=1)


def _segments(batch: IrregularBatch, node_every: int | None):
    """Split each series into shooting segments of ``node_every`` observations.

    Returns a list of ``(b, j0, j1, has_next)``: segment of series ``b`` starting at
    observation ``j0`` (its node) and scoring observations ``j0 … j1−1``; if
    ``has_next`` the state at ``t_{j1}`` must equal the next segment's node state.
    """
    segs = []
    for b in range(batch.times.shape[0]):
        n = int(batch.lengths[b])
        m = n if node_every is None else max(1, int(node_every))
        starts = list(range(0, n, m))
        if len(starts) > 1 and n - starts[-1] < 2:  # a last segment of 1 point: merge it
            starts.pop()
        for i, j0 in enumerate(starts):
            j1 = starts[i + 1] if i + 1 < len(starts) else n
            segs.append((b, j0, j1, i + 1 < len(starts)))
    return segs


class GreyBoxMLE(nn.Module):
    """Grey-box ODE fitted by maximum likelihood over parameters *and* initial states.

    Observations ``y_{bi} = x_b(t_{bi}) + ε``, ``ε ~ N(0, σ² I)`` i.i.d., with
    ``x_b' = f(t, x_b; p)``: the maximum-likelihood estimate minimises
    ``Σ_{b,i} ‖m_{bi} ⊙ (x_b(t_{bi}; s_b, p) − y_{bi})‖²`` jointly over ``p`` and
    every series' initial state ``s_b`` (no shot starts from a noisy observation).
    :meth:`gauss_newton` solves it by Levenberg–Marquardt with exact Jacobians from
    the forward variational equations, in two stages:

    1. *multiple shooting* (Bock): each series is cut into segments of
       ``node_every`` observations whose initial states are unknowns too (started
       at the observations), with continuity defects ``w (x_k(τ_{k+1}) − s_{k+1})``
       as extra residuals — short segments keep the problem nearly linear far from
       the optimum;
    2. *single shooting* from the stage-1 solution (one segment per series): the
       exact least-squares problem above, continuity exact by construction.

    At the optimum the Gauss–Newton covariance ``σ̂² (JᵀJ)⁻¹`` with
    ``σ̂² = RSS / (N − n_unknowns)`` gives standard errors (:attr:`std_errors`,
    delta method for log-parameters).

    ``predict(context, q)`` re-estimates each context series' initial state with
    ``p`` fixed (the same two stages) and integrates from it, so predictions use
    every context observation (earlier and later ones for interpolation; only the
    past for extrapolation beyond the context).

    Parameters
    ----------
    field : GreyBoxField
        The mechanism with its parameter guesses (no neural correction).
    node_every : int or None
        Observations per multiple-shooting segment in stage 1 (None: skip stage 1).
    continuity_weight : float
        ``w`` of the stage-1 continuity residuals (data units).
    method, rtol, atol :
        Passed to :func:`odenet.solve` for the state-plus-sensitivity system.
    """

    trains_in_physical_units = True

    def __init__(
        self,
        field: GreyBoxField,
        *,
        node_every: int | None = 4,
        continuity_weight: float = 10.0,
        method: str = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
    ):
        super().__init__()
        if not isinstance(field, GreyBoxField) or field.correction is not None:
            raise InputError(
                "`field` must be a GreyBoxField without a neural correction (Gauss–Newton "
                "needs the few mechanistic parameters only); fit hybrids with ShootingODE."
            )
        if node_every is not None and (not isinstance(node_every, int) or node_every < 2):
            raise InputError(f"`node_every` must be an integer ≥ 2 or None, got {node_every!r}.")
        self.field = field
        self.node_every = node_every
        self.continuity_weight = float(continuity_weight)
        self.solver = dict(method=method, rtol=rtol, atol=atol)
        P = field.raw.numel()
        self.register_buffer("raw_cov", torch.full((P, P), math.nan, dtype=torch.float64))
        self.register_buffer("sigma", torch.tensor(math.nan, dtype=torch.float64))
        self.info: dict = {}

    # --- the residual and its Jacobian -------------------------------------------------
    def _solve_segments(self, batch, segs, nodes, raw):
        """X [K, M, D], S [K, M, D, D+P] along each segment's grid; the grids [K, M]."""
        D, P = batch.values.shape[-1], raw.numel()
        M = max(j1 - j0 + int(nxt) for _, j0, j1, nxt in segs)
        grids = []
        for b, j0, j1, nxt in segs:
            g = batch.times[b, j0 : j1 + int(nxt)]
            pad = g[-1] + 1e-6 * torch.arange(1, M - len(g) + 1, dtype=g.dtype)
            grids.append(torch.cat([g, pad]))
        grid = torch.stack(grids)
        K = len(segs)
        S0 = torch.zeros(K, D, D + P, dtype=nodes.dtype)
        S0[:, :, :D] = torch.eye(D, dtype=nodes.dtype)
        y0 = torch.cat([nodes, S0.reshape(K, -1)], dim=1)
        with torch.no_grad():
            self.field.raw.data.copy_(raw)
            if getattr(self, "_sens", None) is None or self._sens.D != D:
                self._sens = _Sensitivities(self.field, D)
            ys = odenet.solve(self._sens, y0, grid, **self.solver).ys
        return ys[..., :D], ys[..., D:].reshape(K, M, D, D + P)

    def _residuals(self, batch, segs, u, fix_params, raw_fixed, weight):
        """Residual vector r [N] and Jacobian J [N, n_u] at unknowns ``u`` (numpy)."""
        D = batch.values.shape[-1]
        P = self.field.raw.numel()
        np_ = 0 if fix_params else P
        raw = raw_fixed if fix_params else torch.as_tensor(u[:P])
        nodes = torch.as_tensor(u[np_:]).reshape(-1, D)
        X, S = self._solve_segments(batch, segs, nodes, raw)
        X, S = X.numpy(), S.numpy()
        rows_r, rows_J = [], []
        n_u = len(u)
        for k, (b, j0, j1, nxt) in enumerate(segs):
            n = j1 - j0
            m = batch.mask[b, j0:j1].numpy()  # [n, D]
            r = (X[k, :n] - batch.values[b, j0:j1].numpy()) * m
            J = np.zeros((n, D, n_u))
            sl = slice(np_ + k * D, np_ + (k + 1) * D)
            J[:, :, sl] = S[k, :n, :, :D] * m[..., None]
            if not fix_params:
                J[:, :, :P] = S[k, :n, :, D:] * m[..., None]
            rows_r.append(r.reshape(-1))
            rows_J.append(J.reshape(-1, n_u))
            if nxt:
                r = weight * (X[k, n] - nodes[k + 1].numpy())
                J = np.zeros((D, n_u))
                J[:, sl] = weight * S[k, n, :, :D]
                J[:, np_ + (k + 1) * D : np_ + (k + 2) * D] = -weight * np.eye(D)
                if not fix_params:
                    J[:, :P] = weight * S[k, n, :, D:]
                rows_r.append(r)
                rows_J.append(J)
        return np.concatenate(rows_r), np.concatenate(rows_J)

    def _levenberg_marquardt(self, batch, segs, u, *, fix_params, raw_fixed, weight, max_iter):
        def evaluate(v):
            try:
                r, J = self._residuals(batch, segs, v, fix_params, raw_fixed, weight)
            except odenet.OdenetError:
                return math.inf, None, None  # the trial parameters blew the ODE up
            c = 0.5 * float(r @ r)
            return (c, r, J) if math.isfinite(c) else (math.inf, None, None)

        cost, r, J = evaluate(u)
        if J is None:
            raise odenet.SolverError(
                "the initial guess makes the ODE fail; give parameter guesses closer to the data."
            )
        lam, it, reason = 1e-3, 0, "max_iter"
        while it < max_iter:
            it += 1
            H, g = J.T @ J, J.T @ r
            d = np.diag(H).copy()
            d[d == 0] = 1.0
            improved = False
            for _ in range(12):
                step = np.linalg.solve(H + lam * np.diag(d), -g)
                c2, r2, J2 = evaluate(u + step)
                if c2 < cost:
                    improved = True
                    break
                lam *= 4.0
            if not improved:
                reason = "no_decrease"  # a (local) minimum to the solver's accuracy
                break
            rel = (cost - c2) / max(cost, 1e-300)
            u, cost, r, J = u + step, c2, r2, J2
            lam = max(lam / 3.0, 1e-12)
            if rel < 1e-9 or np.abs(step).max() < 1e-10 * (1 + np.abs(u).max()):
                reason = "converged"
                break
        self._last_reason = reason
        return u, cost, r, J, it

    def _estimate(self, batch, *, fix_params: bool, max_iter: int):
        """Two-stage LM; returns (unknowns of the single-shooting stage, r, J, iterations)."""

        D = batch.values.shape[-1]
        P = self.field.raw.numel()
        raw0 = self.field.raw.detach().clone()
        filled = fill_locf(batch)
        head = [] if fix_params else [raw0.numpy()]
        total = 0
        u_params = raw0.numpy()
        starts = filled[:, 0].numpy()
        if self.node_every is not None:
            segs = _segments(batch, self.node_every)
            nodes = np.stack([filled[b, j0].numpy() for b, j0, _, _ in segs])
            u = np.concatenate([*head, nodes.reshape(-1)])
            u, _, _, _, n = self._levenberg_marquardt(
                batch, segs, u, fix_params=fix_params, raw_fixed=raw0,
                weight=self.continuity_weight, max_iter=max_iter,
            )  # fmt: skip
            total += n
            off = 0 if fix_params else P
            u_params = u[:P] if not fix_params else u_params
            first = [i for i, s in enumerate(segs) if s[1] == 0]
            starts = u[off:].reshape(-1, D)[first]
        segs = _segments(batch, None)
        u = np.concatenate(([] if fix_params else [u_params]) + [starts.reshape(-1)])
        u, cost, r, J, n = self._levenberg_marquardt(
            batch, segs, u, fix_params=fix_params, raw_fixed=raw0, weight=1.0, max_iter=max_iter
        )
        total += n
        if fix_params:
            self.field.raw.data.copy_(raw0)
        else:
            self.field.raw.data.copy_(torch.as_tensor(u[:P]))
        return u, r, J, total

    def gauss_newton(self, batch: IrregularBatch, *, max_iter: int = 50) -> dict:
        """Fit parameters and every series' initial state (maximum likelihood).

        Parameters
        ----------
        batch : IrregularBatch
            Training series in physical units.
        max_iter : int
            Levenberg–Marquardt iterations per stage.

        Returns
        -------
        dict
            ``iterations`` (both stages), ``cost`` (½ RSS), ``sigma`` (σ̂),
            ``x0`` [B, D] (estimated initial states), ``std_errors`` (per parameter),
            ``stop_reason`` of the final stage.
        """
        P = self.field.raw.numel()
        u, r, J, its = self._estimate(batch, fix_params=False, max_iter=max_iter)
        n_obs = int(batch.mask.sum())
        dof = max(n_obs - len(u), 1)
        sigma2 = float(r @ r) / dof
        cov = sigma2 * np.linalg.pinv(J.T @ J)
        self.raw_cov = torch.as_tensor(cov[:P, :P].copy())
        self.sigma = torch.tensor(math.sqrt(sigma2), dtype=torch.float64)
        D = batch.values.shape[-1]
        self.info = {
            "iterations": its,
            "cost": 0.5 * float(r @ r),
            "sigma": math.sqrt(sigma2),
            "x0": u[P:].reshape(-1, D),
            "std_errors": self.std_errors(),
            # why the final (single-shooting) stage stopped: "converged" (relative
            # decrease < 1e-9), "no_decrease" (no step helps) or "max_iter"
            "stop_reason": self._last_reason,
        }
        return self.info

    def std_errors(self) -> dict:
        """Gauss–Newton standard error of each parameter (physical units; nan before a fit)."""
        se_raw = self.raw_cov.diagonal().clamp_min(0).sqrt()
        vals = self.field.raw.detach()
        se = se_raw * vals.exp() if self.field.positive else se_raw  # delta method
        return {k: float(se[i]) for i, k in enumerate(self.field.names)}

    def values(self) -> dict:
        return self.field.values()

    def initial_states(self, context: IrregularBatch, *, max_iter: int = 30) -> torch.Tensor:
        """[B, D] maximum-likelihood initial states of ``context``'s series, parameters fixed."""
        u, _, _, _ = self._estimate(context, fix_params=True, max_iter=max_iter)
        return torch.as_tensor(u).reshape(context.times.shape[0], -1)

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        """Mean squared residual of ``batch`` at re-estimated initial states (no gradient:
        train with ``fit(..., optimizer="gauss_newton")``)."""
        with torch.no_grad():
            pred = self.predict(batch, batch.times)
        return masked_mse(pred, batch.values, batch.mask)

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        """[B, Q, D]: integrate from each series' estimated initial state to ``query_times``."""
        x0 = self.initial_states(context)
        t0 = context.times[:, :1]
        q = torch.maximum(query_times.to(t0.dtype), t0 + 1e-9)
        with torch.no_grad():
            ys = odenet.solve(self.field, x0, torch.cat([t0, q], 1), **self.solver).ys
        return ys[:, 1:]

    def vector_field(self, t, x: torch.Tensor) -> torch.Tensor:
        """The fitted ``dx/dt`` at physical states ``x [..., D]``."""
        return self.field(t, x)
