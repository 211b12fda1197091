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
    mechanism : callable ``(t, x [..., K, S], p: dict[str, Tensor]) -> [..., K, S]``
        The known structure, in physical units.  With only shared parameters and
        no covariates every ``p[name]`` is a 0-dim tensor; once
        :class:`GreyBoxMLE` has per-series parameters or covariates, each ``p[name]``
        is a column ``[..., K, 1]`` (one value per row), so write mechanisms that
        work with both, e.g. ``p["r"] * x[..., 0:1]`` and ``torch.cat(..., -1)``.
    params : dict[str, float]
        Initial guesses of the unknown parameters.
    positive : bool or iterable of str
        Which parameters are learnt as logarithms (so they stay positive): all
        (True), none (False) or the named ones.  Their guesses must be > 0.
    correction : nn.Module ``(t, x) -> [K, S]``, optional
        A neural correction added to the mechanism (hybrid model).  Its output layer
        should start near 0 so the fit starts from the mechanism.
    states : list of str, optional
        Names of the state components (default: the data channels, in order).
        States that no data channel is named after are latent (never observed).
    covariates : list of str
        Names of covariate columns the mechanism reads from ``p`` (per series, or
        time-varying: the last value at or before ``t``).  Only
        :class:`GreyBoxMLE` supplies them.
    x0_guess : dict[str, float], optional
        Starting values of latent (unobserved) initial states (default 0).
    """

    def __init__(
        self,
        mechanism: Callable,
        params: dict,
        *,
        positive=True,
        correction: nn.Module | None = None,
        states: list | None = None,
        covariates=(),
        x0_guess: dict | None = None,
    ):
        super().__init__()
        if not callable(mechanism):
            raise InputError(f"`mechanism` must be callable (t, x, p) -> dx/dt, got {mechanism!r}.")
        if not params:
            raise InputError("`params` must name at least one unknown parameter with a guess.")
        self.names = list(params)
        if isinstance(positive, bool):
            pos = set(self.names) if positive else set()
        else:
            pos = set(positive)
            unknown = sorted(pos - set(self.names))
            if unknown:
                raise InputError(
                    f"`positive` names {unknown}, which are not parameters; the parameters "
                    f"are {self.names}."
                )
        bad = {k: v for k, v in params.items() if k in pos and not float(v) > 0}
        if bad:
            raise InputError(
                f"`params` {bad} must be > 0: they are positive (learnt as logs); "
                "give positive guesses or leave them out of `positive`."
            )
        self.mechanism = mechanism
        self.positive = positive
        self.states = None if states is None else [str(s) for s in states]
        self.covariates = [str(c) for c in covariates]
        clash = sorted(set(self.covariates) & set(self.names))
        if clash:
            raise InputError(f"{clash} are both parameters and covariates; rename one of them.")
        self.x0_guess = dict(x0_guess or {})
        self.register_buffer(
            "pos_mask", torch.tensor([k in pos for k in self.names], dtype=torch.bool)
        )
        init = [math.log(params[k]) if k in pos else float(params[k]) for k in self.names]
        self.raw = nn.Parameter(torch.tensor(init, dtype=torch.float64))
        self.correction = correction

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        """Parameter values from raw (log or identity) coordinates; ``raw [..., P]``."""
        pos = self.pos_mask.tolist()
        if all(pos):
            return raw.exp()
        if not any(pos):
            return raw
        # per-column exp and cat: torch.where has no fast forward-mode AD rule (it falls
        # back to a Python decomposition that dominated the cost of a fit)
        return torch.cat([raw[..., i : i + 1].exp() if p else raw[..., i : i + 1]
                          for i, p in enumerate(pos)], dim=-1)  # fmt: skip

    @property
    def params(self) -> dict:
        """Current parameter values ``{name: 0-dim Tensor}`` (differentiable)."""
        vals = self.transform(self.raw)
        return {k: vals[i] for i, k in enumerate(self.names)}

    def values(self) -> dict:
        """Current parameter values as plain floats."""
        return {k: float(v.detach()) for k, v in self.params.items()}

    def forward(self, t, x):
        if self.covariates:
            raise InputError(
                f"this mechanism reads covariates {self.covariates}; only GreyBoxMLE "
                "(--model greybox_mle) supplies them."
            )
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


def _param_dict(field: GreyBoxField, raw, cov, columnar: bool) -> dict:
    """``p`` for the mechanism: parameter values (and covariates) by name.

    ``raw`` is ``[P]`` or ``[C, P]`` (shared parameters only: scalars / ``[C, 1]``) or,
    with ``columnar``, ``[..., K, P]`` giving columns ``[..., K, 1]``; ``cov [K, C]``.
    """
    vals = field.transform(raw)
    if columnar:
        p = {k: vals[..., i : i + 1] for i, k in enumerate(field.names)}
        if cov is not None:
            p.update({k: cov[..., j : j + 1] for j, k in enumerate(field.covariates)})
        return p
    if vals.dim() == 2:  # stacked shared parameters: [C, P] -> P columns [C, 1]
        return dict(zip(field.names, vals.T.unsqueeze(-1).unbind(0)))
    return {k: vals[i] for i, k in enumerate(field.names)}


class _Rows:
    """What each row of a batched solve needs besides its state: raw parameters and
    covariates (their last value at or before ``t``, from the row's series)."""

    def __init__(self, raw_rows: torch.Tensor, cov_times=None, cov_values=None):
        self.raw = raw_rows  # [K, P]
        self.cov_times, self.cov_values = cov_times, cov_values  # [K, T], [K, T, C]

    def covariates(self, t) -> torch.Tensor | None:
        if self.cov_values is None:
            return None
        K, T = self.cov_times.shape
        tt = torch.as_tensor(t, dtype=self.cov_times.dtype).reshape(-1)
        tt = tt.expand(K) if tt.numel() == 1 else tt
        # 1e-12 relative: a solver stage exactly at an observation time sees that value
        le = self.cov_times <= (tt + 1e-12 * (1 + tt.abs()))[:, None]
        idx = (le.sum(1) - 1).clamp(0, T - 1)
        return self.cov_values[torch.arange(K), idx]


class MechanismError(InputError):
    """A user mechanism is malformed (wrong output shape, unknown names, bad file)."""


def _check_output(f, x, where: str):
    if not isinstance(f, torch.Tensor) or f.shape != x.shape:
        got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise MechanismError(
            f"the mechanism returned {got} for a state of shape {tuple(x.shape)} ({where}); "
            "it must return dx/dt with the state's shape — with per-series parameters or "
            "covariates each p[name] is a column [..., K, 1]: use x[..., i:i+1] slices "
            "and torch.cat(..., -1)."
        )


class _RowField(nn.Module):
    """The mechanism with per-row parameters and covariates (no sensitivities)."""

    def __init__(self, field: GreyBoxField, rows: _Rows, columnar: bool):
        super().__init__()
        self.field, self.rows, self.columnar = field, rows, columnar

    def forward(self, t, x):
        raw = self.rows.raw if self.columnar else self.rows.raw[0]
        f = self.field.mechanism(t, x, _param_dict(self.field, raw, self.rows.covariates(t),
                                                   self.columnar))  # fmt: skip
        _check_output(f, x, "prediction")
        return f


class _Sensitivities(nn.Module):
    """Mechanism plus its forward variational equations, one row per segment.

    State ``[x, S]`` with ``S = ∂x/∂(s, raw) ∈ R^{D×(D+P)}`` (``s`` the segment's
    initial state, ``raw`` the row's parameters in learnt coordinates):
    ``S' = J_x S + [0 | J_raw]``.  Column ``c`` of ``S'`` is a forward-mode
    directional derivative of the mechanism (tangent ``S[:, :, c]`` in ``x``, the unit
    vector ``e_{c−D}`` in ``raw``), so any mechanism written with torch operations
    works and no Jacobian is formed.  All ``D + P`` columns go through the mechanism
    in one call, stacked on a leading axis; a mechanism that does not broadcast that
    way is detected on the first call and served one column at a time.
    """

    def __init__(self, field: GreyBoxField, D: int, rows: _Rows, columnar: bool):
        super().__init__()
        self.field, self.D, self.rows, self.columnar = field, D, rows, columnar
        self.P = field.raw.numel()
        self.stacked: bool | None = None  # decided on the first call
        self._tangent = None

    def _columns(self, t, x, S, stacked):
        D, P, field = self.D, self.P, self.field
        C, K = D + P, x.shape[0]
        raw = self.rows.raw if self.columnar else self.rows.raw[0]  # [K, P] or [P]
        cov = self.rows.covariates(t)
        if self._tangent is None or self._tangent.dtype != raw.dtype:
            self._tangent = torch.cat([torch.zeros(D, P, dtype=raw.dtype),
                                       torch.eye(P, dtype=raw.dtype)])  # fmt: skip
        tan = self._tangent  # [C, P]
        with torch.no_grad(), fwAD.dual_level():
            if cov is not None:
                # a dual covariate (zero tangent) of the operands' full shape: mixing a dual
                # with a broadcast plain tensor takes a slow decomposition path (~20x)
                cov = cov.expand(C, *cov.shape) if stacked else cov
                cov = fwAD.make_dual(cov.contiguous(), torch.zeros_like(cov))
            if stacked:
                xd = fwAD.make_dual(x.expand(C, K, D).clone(), S.permute(2, 0, 1).contiguous())
                if self.columnar:
                    rd = fwAD.make_dual(raw.expand(C, K, P).clone(),
                                        tan[:, None, :].expand(C, K, P).contiguous())  # fmt: skip
                else:
                    rd = fwAD.make_dual(raw.expand(C, P).clone(), tan)
                out = field.mechanism(t, xd, _param_dict(field, rd, cov, self.columnar))
                f, d = fwAD.unpack_dual(out)
                if f.shape != (C, K, D) or d is None:
                    raise ValueError("the mechanism does not broadcast over a leading axis")
                return f[0], d.permute(1, 2, 0)
            cols = []
            for c in range(C):
                xd = fwAD.make_dual(x, S[:, :, c])
                t_raw = tan[c].expand_as(raw).contiguous()
                rd = fwAD.make_dual(raw, t_raw)
                out = field.mechanism(t, xd, _param_dict(field, rd, cov, self.columnar))
                _check_output(out, x, "fit")
                f, dc = fwAD.unpack_dual(out)
                cols.append(dc if dc is not None else torch.zeros_like(f))
            return f, torch.stack(cols, dim=-1)

    def forward(self, t, y):
        D, P = self.D, self.P
        x = y[:, :D]
        S = y[:, D:].reshape(-1, D, D + P)
        if self.stacked is None:  # try the one-call path once, check it against the loop
            slow = self._columns(t, x, S, stacked=False)
            try:
                fast = self._columns(t, x, S, stacked=True)
                self.stacked = all(torch.allclose(a, b, rtol=1e-10, atol=1e-12)
                                   for a, b in zip(fast, slow))  # fmt: skip
            except (RuntimeError, ValueError, IndexError):
                self.stacked = False
            f, dS = slow
        else:
            f, dS = self._columns(t, x, S, stacked=self.stacked)
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


def _increasing(q: torch.Tensor, t0: torch.Tensor):
    """Row-wise sorted copy of ``q [B, Q]``, clamped after ``t0 [B, 1]`` and made strictly
    increasing (ties nudged by 1e-9 relative); returns it and the inverse permutation."""
    order = torch.argsort(q, dim=1, stable=True)
    qs = torch.maximum(q.gather(1, order), t0 + 1e-9 * (1 + t0.abs()))
    eps = 1e-9 * (1 + qs.abs())
    for j in range(1, qs.shape[1]):
        qs[:, j] = torch.maximum(qs[:, j], qs[:, j - 1] + eps[:, j])
    inv = torch.argsort(order, dim=1)
    return qs, inv


class _Layout:
    """Where each unknown of a least-squares stage lives in the vector ``u``.

    ``u = [shared raw parameters (unless fixed)] + [per-series raw parameters, series
    by series] + [free components of every segment's node state]``; a series' first
    node omits the pinned initial states.
    """

    def __init__(self, segs, B, S, P, shared, per, pinned, fix_shared):
        self.segs, self.B, self.S, self.P = segs, B, S, P
        self.shared, self.per, self.pinned = shared, per, pinned
        self.n_sh = 0 if fix_shared else len(shared)
        self.n_per = B * len(per)
        off = self.n_sh + self.n_per
        self.node_cols = []  # per segment: [S] u-index of each state component or -1
        for _, j0, _, _ in segs:
            cols = np.full(S, -1)
            for s in range(S):
                if j0 == 0 and s in pinned:
                    continue
                cols[s] = off
                off += 1
            self.node_cols.append(cols)
        self.n = off
        self.cols = []  # per segment: [S + P] u-index of each column of S, or -1
        for k, (b, _, _, _) in enumerate(segs):
            c = np.full(S + P, -1)
            c[:S] = self.node_cols[k]
            if not fix_shared:
                for i, j in enumerate(shared):
                    c[S + j] = i
            for i, j in enumerate(per):
                c[S + j] = self.n_sh + b * len(per) + i
            self.cols.append(c)

    def unpack(self, u, raw_fixed, node_guess):
        """(raw_rows [K, P], nodes [K, S]) as tensors; ``node_guess [K, S]`` supplies pins."""
        K = len(self.segs)
        raw = np.tile(raw_fixed, (K, 1))
        if self.n_sh:
            raw[:, self.shared] = u[: self.n_sh]
        if self.per:
            per = u[self.n_sh : self.n_sh + self.n_per].reshape(self.B, len(self.per))
            bs = [b for b, _, _, _ in self.segs]
            raw[:, self.per] = per[bs]
        nodes = np.array(node_guess, dtype=float, copy=True)
        for k, cols in enumerate(self.node_cols):
            free = cols >= 0
            nodes[k, free] = u[cols[free]]
        return torch.as_tensor(raw), torch.as_tensor(nodes)


class GreyBoxMLE(nn.Module):
    """Grey-box ODE fitted by maximum likelihood over parameters *and* initial states.

    Observations ``y_{bi} = H x_b(t_{bi}) + ε``, ``ε ~ N(0, σ² I)`` i.i.d. (``H`` picks
    the observed states), with ``x_b' = f(t, x_b; p_b, u_b(t))``: the estimate
    minimises ``Σ_{b,i} ‖m_{bi} ⊙ (H x_b(t_{bi}) − y_{bi})‖²`` jointly over the shared
    parameters, every series' own parameters (``per_series``) and every series' initial
    state (except the ``fixed_x0`` components).  :meth:`gauss_newton` solves it by
    Levenberg–Marquardt with exact Jacobians from the forward variational equations,
    in two stages:

    1. *multiple shooting* (Bock): each series is cut into segments of
       ``node_every`` observations whose initial states are unknowns too (started
       at the observations), with continuity defects ``w (x_k(τ_{k+1}) − s_{k+1})``
       as extra residuals — short segments keep the problem nearly linear far from
       the optimum;
    2. *single shooting* from the stage-1 solution (one segment per series): the
       exact least-squares problem above, continuity exact by construction.

    Uncertainty: at the optimum, the Gauss–Newton covariance ``σ̂² (JᵀJ)⁻¹`` (with
    ``σ̂² = RSS / (N − n_unknowns)``), computed from the SVD of the column-scaled
    Jacobian *without* truncation — a direction the data do not determine gives an
    infinite standard error, never a small one.  :attr:`info` reports the Jacobian's
    rank and condition number, the parameters (and initial states) that are not
    identifiable or only weakly identified, by name, and why the solver stopped.

    ``predict(context, q)`` re-estimates each context series' initial state (and its
    own parameters, with ``per_series``) with the shared parameters fixed, and
    integrates from it, so predictions use every context observation.
    :meth:`band` gives delta-method confidence or prediction bands.

    Data layout: the batch's channels are the observed states followed by the
    covariates (``field.covariates``, in that order).  ``channels`` names the
    batch's data channels when they are a subset of ``field.states`` (latent states).

    Parameters
    ----------
    field : GreyBoxField
        The mechanism with its parameter guesses (no neural correction).
    node_every : int or None
        Observations per multiple-shooting segment in stage 1 (None: skip stage 1).
    continuity_weight : float
        ``w`` of the stage-1 continuity residuals (data units).
    per_series : iterable of str
        Parameters estimated separately for every series (the rest are shared).
    fixed_x0 : dict[str, float]
        Initial states pinned to a known value in every series (by state name).
    channels : list of str, optional
        Names of the observed channels (default: ``field.states``, or all channels).
    method, rtol, atol, max_steps :
        Passed to :func:`odenet.solve` for the state-plus-sensitivity system.
    """

    trains_in_physical_units = True

    def __init__(
        self,
        field: GreyBoxField,
        *,
        node_every: int | None = 4,
        continuity_weight: float = 10.0,
        per_series=(),
        fixed_x0: dict | None = None,
        channels: list | None = None,
        method: str = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        max_steps: int = 5000,
    ):
        super().__init__()
        if not isinstance(field, GreyBoxField) or field.correction is not None:
            raise InputError(
                "`field` must be a GreyBoxField without a neural correction (Gauss–Newton "
                "needs the few mechanistic parameters only); fit hybrids with ShootingODE."
            )
        if node_every is not None and (not isinstance(node_every, int) or node_every < 2):
            raise InputError(f"`node_every` must be an integer ≥ 2 or None, got {node_every!r}.")
        per_series = list(per_series)
        unknown = [k for k in per_series if k not in field.names]
        if unknown:
            raise InputError(
                f"`per_series` names {unknown}, which are not parameters of the mechanism "
                f"({field.names})."
            )
        self.field = field
        self.node_every = node_every
        self.continuity_weight = float(continuity_weight)
        # a trial step of Levenberg–Marquardt may make the ODE stiff or explode: a bounded
        # step budget turns that into a rejected step within seconds instead of minutes
        self.solver = dict(method=method, rtol=rtol, atol=atol, max_steps=max_steps)
        self.per_series = per_series
        self.fixed_x0 = {str(k): float(v) for k, v in (fixed_x0 or {}).items()}
        states = field.states
        if states is not None:
            bad = [k for k in self.fixed_x0 if k not in states]
            if bad:
                raise InputError(
                    f"`fixed_x0` names {bad}, which are not states; the states are {states}."
                )
            if channels is not None:
                extra = [c for c in channels if c not in states]
                if extra:
                    raise InputError(
                        f"data channel(s) {extra} are not states of the mechanism ({states}); "
                        "pass covariates as covariates, or drop the column(s)."
                    )
        self.channels = None if channels is None else list(channels)
        P = field.raw.numel()
        self.register_buffer("raw_cov", torch.full((P, P), math.nan, dtype=torch.float64))
        self.register_buffer("sigma", torch.tensor(math.nan, dtype=torch.float64))
        # per-series raw parameters and initial states of the training series
        self.register_buffer("series_raw", torch.zeros(0, len(per_series), dtype=torch.float64))
        self.register_buffer("x0", torch.zeros(0, 0, dtype=torch.float64))
        self.info: dict = {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # these buffers are sized by the training data; take the checkpoint's size
        for name in ("series_raw", "x0"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- layout of states, channels and covariates ------------------------------------
    @property
    def columnar(self) -> bool:
        return bool(self.per_series or self.field.covariates)

    def _dims(self, batch: IrregularBatch):
        """(state names, observed state index per data channel, first covariate channel)."""
        C = len(self.field.covariates)
        D = batch.values.shape[-1] - C
        if D < 1:
            raise InputError(
                f"the data have {batch.values.shape[-1]} channel(s) but the mechanism reads "
                f"{C} covariate(s) {self.field.covariates}: no channel is left to fit."
            )
        states = self.field.states
        if states is None:
            return [f"x{i}" for i in range(D)], list(range(D)), D
        chans = self.channels or (states if D == len(states) else None)
        if chans is None or len(chans) != D:
            raise InputError(
                f"the data have {D} observed channel(s) but the mechanism has states "
                f"{states}; name the observed ones with `channels=` (--channels)."
            )
        return states, [states.index(c) for c in chans], D

    def _pinned(self, states) -> dict:
        pins = {}
        for k, v in self.fixed_x0.items():
            if k in states:
                pins[states.index(k)] = v
            elif k.isdigit() and int(k) < len(states):
                pins[int(k)] = v
            else:
                raise InputError(f"`fixed_x0` names {k!r}, not a state of {states}.")
        return pins

    def _index(self):
        shared = [i for i, k in enumerate(self.field.names) if k not in self.per_series]
        per = [self.field.names.index(k) for k in self.per_series]
        return shared, per

    # --- the residual and its Jacobian -------------------------------------------------
    def _solve_rows(self, grid, nodes, raw_rows, cov, sens: bool = True):
        """Solve every row on its grid ``[K, M]``: X ``[K, M, S]`` (and S ``[K, M, S, S+P]``)."""
        K, S = nodes.shape
        P = raw_rows.shape[1]
        rows = _Rows(raw_rows, *cov) if cov is not None else _Rows(raw_rows)
        with torch.no_grad():
            if not sens:
                return odenet.solve(_RowField(self.field, rows, self.columnar), nodes, grid,
                                    **self.solver).ys  # fmt: skip
            S0 = torch.zeros(K, S, S + P, dtype=nodes.dtype)
            S0[:, :, :S] = torch.eye(S, dtype=nodes.dtype)
            y0 = torch.cat([nodes, S0.reshape(K, -1)], dim=1)
            sys_ = _Sensitivities(self.field, S, rows, self.columnar)
            if getattr(self, "_stacked", None) is not None:
                sys_.stacked = self._stacked
            ys = odenet.solve(sys_, y0, grid, **self.solver).ys
            self._stacked = sys_.stacked
        return ys[..., :S], ys[..., S:].reshape(K, -1, S, S + P)

    def _covariate_rows(self, batch, segs, D):
        if not self.field.covariates:
            return None
        filled = fill_locf(batch)[..., D:]
        idx = [b for b, _, _, _ in segs]
        return batch.times[idx], filled[idx]

    def _residuals(self, batch, lay, u, raw_fixed, node_guess, weight, obs, D, cov):
        """Residual vector r [N] and Jacobian J [N, n_u] at unknowns ``u`` (numpy)."""
        segs = lay.segs
        raw_rows, nodes = lay.unpack(u, raw_fixed, node_guess)
        M = max(j1 - j0 + int(nxt) for _, j0, j1, nxt in segs)
        grids = []
        for b, j0, j1, nxt in segs:
            g = batch.times[b, j0 : j1 + int(nxt)]
            pad = g[-1] + 1e-6 * torch.arange(1, M - len(g) + 1, dtype=g.dtype)
            grids.append(torch.cat([g, pad]))
        X, Sn = self._solve_rows(torch.stack(grids), nodes, raw_rows, cov)
        X, Sn, nodes = X.numpy(), Sn.numpy(), nodes.numpy()
        rows_r, rows_J = [], []
        n_u = lay.n
        for k, (b, j0, j1, nxt) in enumerate(segs):
            n = j1 - j0
            m = batch.mask[b, j0:j1, :D].numpy()  # [n, D]
            r = (X[k, :n][:, obs] - batch.values[b, j0:j1, :D].numpy()) * m
            cols = lay.cols[k]
            ok = cols >= 0
            J = np.zeros((n, D, n_u))
            J[:, :, cols[ok]] = Sn[k, :n][:, obs][..., ok] * m[..., None]
            rows_r.append(r.reshape(-1))
            rows_J.append(J.reshape(-1, n_u))
            if nxt:
                r = weight * (X[k, n] - nodes[k + 1])
                J = np.zeros((lay.S, n_u))
                J[:, cols[ok]] = weight * Sn[k, n][:, ok]
                nc = lay.node_cols[k + 1]
                J[np.arange(lay.S)[nc >= 0], nc[nc >= 0]] -= weight
                rows_r.append(r)
                rows_J.append(J)
        return np.concatenate(rows_r), np.concatenate(rows_J)

    def _levenberg_marquardt(self, evaluate_rj, u, max_iter, log_mask=None, rel_tol=1e-9):
        def evaluate(v):
            try:
                r, J = evaluate_rj(v)
            except odenet.OdenetError as e:
                cause = e if isinstance(e, MechanismError) else e.__cause__
                if isinstance(cause, MechanismError):  # a bug in the mechanism, not a bad step
                    raise cause from None
                return math.inf, None, None  # the trial parameters blew the ODE up
            c = 0.5 * float(r @ r)
            return (c, r, J) if math.isfinite(c) and np.isfinite(J).all() else (math.inf, None, None)  # noqa: E501

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
            # Marquardt's scaling with a floor: a nearly flat direction still gets damped
            d = np.maximum(d, 1e-10 * max(d.max(), 1e-300))
            d[d == 0] = 1.0
            improved = False
            for _ in range(12):
                try:
                    step = np.linalg.solve(H + lam * np.diag(d), -g)
                except np.linalg.LinAlgError:
                    step = np.linalg.lstsq(H + lam * np.diag(d), -g, rcond=None)[0]
                if log_mask is not None and log_mask.any():
                    # a box on the log-parameters (at most a factor e per step): a direction
                    # the data barely see must not throw a parameter to 1e16 in one step
                    step[log_mask] = np.clip(step[log_mask], -1.0, 1.0)
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
            if rel < rel_tol or np.abs(step).max() < 1e-10 * (1 + np.abs(u).max()):
                reason = "converged"
                break
        self._last_reason = reason
        return u, cost, r, J, it

    def _estimate(self, batch, *, fix_shared: bool, max_iter: int, series_raw=None,
                  multiple_shooting: bool = True):  # fmt: skip
        """Two-stage LM.  Returns a dict with the single-shooting ``u``, ``r``, ``J``,
        its layout, ``iterations``, per-series raw parameters and initial states."""
        states, obs, D = self._dims(batch)
        S, B = len(states), batch.times.shape[0]
        pins = self._pinned(states)
        shared, per = self._index()
        P = self.field.raw.numel()
        raw0 = self.field.raw.detach().clone().numpy()
        filled = fill_locf(batch)[..., :D].numpy()
        lat = [s for s in range(S) if s not in obs]
        guess = np.zeros(S)
        for s in lat:
            guess[s] = float(self.field.x0_guess.get(states[s], 0.0))

        def node_guess(segs):
            g = np.tile(guess, (len(segs), 1))
            for k, (b, j0, _, _) in enumerate(segs):
                g[k, obs] = filled[b, j0]
                if j0 == 0:
                    for s, v in pins.items():
                        g[k, s] = v
            return g

        per0 = np.tile(raw0[per], (B, 1)) if series_raw is None else np.asarray(series_raw)
        head = ([] if fix_shared else [raw0[shared]]) + [per0.reshape(-1)]
        total = 0
        first_nodes = None
        if self.node_every is not None and multiple_shooting:
            segs = _segments(batch, self.node_every)
            lay = _Layout(segs, B, S, P, shared, per, pins, fix_shared)
            ng = node_guess(segs)
            cov = self._covariate_rows(batch, segs, D)
            u = np.concatenate([*head, *[ng[k, c >= 0] for k, c in enumerate(lay.node_cols)]])
            def rj1(v, lay=lay, ng=ng, cov=cov):
                return self._residuals(batch, lay, v, raw0, ng, self.continuity_weight, obs, D,
                                       cov)  # fmt: skip

            # stage 1 only has to bring the unknowns near the optimum: a loose tolerance
            u, _, _, _, n = self._levenberg_marquardt(rj1, u, max_iter, self._log_mask(lay),
                                                      rel_tol=1e-5)  # fmt: skip
            total += n
            head = [u[: lay.n_sh + lay.n_per]]
            first = [k for k, s in enumerate(segs) if s[1] == 0]
            first_nodes = [u[lay.node_cols[k][lay.node_cols[k] >= 0]] for k in first]
        segs = _segments(batch, None)
        lay = _Layout(segs, B, S, P, shared, per, pins, fix_shared)
        ng = node_guess(segs)
        if first_nodes is None:
            first_nodes = [ng[k, c >= 0] for k, c in enumerate(lay.node_cols)]
        cov = self._covariate_rows(batch, segs, D)
        u = np.concatenate([*head, *first_nodes])

        def rj(v):
            return self._residuals(batch, lay, v, raw0, ng, 1.0, obs, D, cov)

        u, cost, r, J, n = self._levenberg_marquardt(rj, u, max_iter, self._log_mask(lay))
        total += n
        raw_rows, nodes = lay.unpack(u, raw0, ng)
        if not fix_shared:
            self.field.raw.data[shared] = torch.as_tensor(u[: lay.n_sh])
        return {
            "u": u, "r": r, "J": J, "layout": lay, "iterations": total, "rj": rj,
            "series_raw": raw_rows[:, per].clone(), "x0": nodes, "states": states,
            "obs": obs, "D": D, "node_guess": ng, "cov": cov,
        }  # fmt: skip

    def _log_mask(self, lay) -> np.ndarray:
        """Which unknowns are log-parameters (positive ones)."""
        pos = self.field.pos_mask.numpy()
        m = np.zeros(lay.n, bool)
        m[: lay.n_sh] = pos[lay.shared][: lay.n_sh]
        for b in range(lay.B):
            o = lay.n_sh + b * len(lay.per)
            m[o : o + len(lay.per)] = pos[lay.per]
        return m

    # --- uncertainty ---------------------------------------------------------------
    def _unknown_names(self, lay, states, ids=None) -> list:
        names = [self.field.names[j] for j in lay.shared][: lay.n_sh]
        sid = ids if ids is not None else list(range(lay.B))
        for b in range(lay.B):
            names += [f"{self.field.names[j]}[{sid[b]}]" for j in lay.per]
        for k, cols in enumerate(lay.node_cols):
            b = lay.segs[k][0]
            names += [f"x0.{states[s]}[{sid[b]}]" for s in range(lay.S) if cols[s] >= 0]
        return names

    @staticmethod
    def _covariance(J, sigma2):
        """σ² (JᵀJ)⁻¹ by the SVD of the column-scaled Jacobian, untruncated (a null
        direction gives infinite variance), its condition number and null vectors."""
        norms = np.linalg.norm(J, axis=0)
        zero = norms <= 1e-300
        scale = np.where(zero, 1.0, norms)
        _, s, Vt = np.linalg.svd(J / scale, full_matrices=False)
        s_rel = s / s[0] if s[0] > 0 else np.zeros_like(s)
        null = s_rel < 1e-8  # beyond ~1e8 the covariance is round-off, not information
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            inv_s2 = np.where(null, np.inf, 1.0 / s**2)
            cov_n = (Vt.T * inv_s2) @ Vt
            # an inf times a zero component of V gives nan: that entry does not see the null
            # direction; recompute on the identified subspace and put inf where it does
            cov_fin = (Vt[~null].T / s[~null] ** 2) @ Vt[~null]
            hit = (np.abs(Vt[null]) > 1e-3).any(axis=0) if null.any() else np.zeros(len(s), bool)
            cov_n = np.where(hit[:, None] | hit[None, :], np.inf, cov_fin)
            cov = sigma2 * cov_n / np.outer(scale, scale)
        cov[zero, :] = np.inf
        cov[:, zero] = np.inf
        cond = float(1 / s_rel[-1]) if s_rel[-1] > 0 else math.inf
        rank = int((~null).sum())
        return cov, cond, rank, Vt[null], hit | zero

    def _identifiability(self, cov, values_u, names, is_log, hit) -> tuple[dict, list, list]:
        """Standard errors (physical units) and the unknowns flagged, by name."""
        se_u = np.sqrt(np.clip(np.diag(cov), 0, None))
        rel = np.where(is_log, se_u, se_u / np.maximum(np.abs(values_u), 1e-12))
        unident = [n for n, h, r in zip(names, hit, rel) if h or not r < 10]
        weak = [n for n, h, r in zip(names, hit, rel) if not h and 1 < r < 10]
        return se_u, unident, weak

    def gauss_newton(self, batch: IrregularBatch, *, max_iter: int = 50, ids=None,
                     multiple_shooting: bool = True) -> dict:  # fmt: skip
        """Fit parameters and every series' initial state (maximum likelihood).

        Parameters
        ----------
        batch : IrregularBatch
            Training series in physical units (observed channels, then covariates).
        max_iter : int
            Levenberg–Marquardt iterations per stage.
        ids : list, optional
            Series names used in the flagged-unknown names (default: row numbers).
        multiple_shooting : bool
            Run stage 1 (False: start single shooting from the current parameters and
            the first observations — a warm restart, e.g. when resuming).

        Returns
        -------
        dict
            ``iterations`` (both stages), ``cost`` (½ RSS), ``sigma`` (σ̂), ``x0`` [B, S]
            (estimated initial states), ``std_errors`` (per shared parameter; ``inf``
            when not identifiable), ``series_params`` / ``series_std_errors`` (per-series
            parameters, ``{name: [B]}``), ``stop_reason`` of the final stage
            (``"converged"``, ``"no_decrease"`` — no step lowers the cost: a minimum to
            the solver's accuracy — or ``"max_iter"``: not converged), ``rank`` and
            ``n_unknowns`` and ``condition`` of the column-scaled Jacobian,
            ``unidentifiable`` and ``weakly_identified`` (names, with relative standard
            error > 10 or in a null direction of the Jacobian, and between 1 and 10),
            ``warnings`` (sentences for the user).
        """
        est = self._estimate(batch, fix_shared=False, max_iter=max_iter,
                             multiple_shooting=multiple_shooting)  # fmt: skip
        u, r, J, lay = est["u"], est["r"], est["J"], est["layout"]
        n_obs = int(batch.mask[..., : est["D"]].sum())
        dof = n_obs - len(u)
        sigma2 = float(r @ r) / max(dof, 1)
        cov, cond, rank, _, hit = self._covariance(J, sigma2)
        names = self._unknown_names(lay, est["states"], ids)
        pos = self.field.pos_mask.numpy()
        is_log = self._log_mask(lay)
        se_u, unident, weak = self._identifiability(cov, u, names, is_log, hit)
        flagged = np.array([n in set(unident) for n in names])
        if flagged.any():  # no finite number for what the data do not determine
            cov = cov.copy()
            cov[flagged, :] = np.inf
            cov[:, flagged] = np.inf
            se_u = np.where(flagged, np.inf, se_u)
        P = self.field.raw.numel()
        raw_cov = torch.full((P, P), math.nan, dtype=torch.float64)
        sh = torch.as_tensor(lay.shared, dtype=torch.long)
        raw_cov[sh[:, None], sh[None, :]] = torch.as_tensor(cov[: lay.n_sh, : lay.n_sh])
        self.raw_cov = raw_cov
        self.sigma = torch.tensor(math.sqrt(sigma2), dtype=torch.float64)
        self.series_raw = est["series_raw"]
        self.x0 = est["x0"]
        self._cov_u = cov
        S = len(est["states"])
        vals = self.field.transform(est["series_raw"]) if lay.per else None
        per_se = {}
        for i, j in enumerate(lay.per):
            idx = [lay.n_sh + b * len(lay.per) + i for b in range(lay.B)]
            se = se_u[idx] * (vals[:, i].numpy() if pos[j] else 1.0)
            per_se[self.field.names[j]] = se.tolist()
        warnings = []
        if unident:
            warnings.append(
                f"not identifiable from these data: {_names_summary(unident)} — their "
                "standard errors are infinite (a flat or near-flat direction of the "
                "likelihood); fix them (--fix / a pinned initial state) or add data."
            )
        if weak:
            warnings.append(
                f"weakly identified (relative standard error > 100 %): {_names_summary(weak)}."
            )
        if self._last_reason == "max_iter":
            warnings.append(
                "Levenberg–Marquardt stopped at the iteration cap (max_iter) before "
                "converging: raise --iters; the estimates may not be the optimum."
            )
        if dof < 1:
            warnings.append(
                f"{n_obs} observations for {len(u)} unknowns: σ̂ and the standard errors "
                "are not estimable."
            )
        self.info = {
            "iterations": est["iterations"],
            "cost": 0.5 * float(r @ r),
            "sigma": math.sqrt(sigma2) if dof >= 1 else math.nan,
            "x0": est["x0"].numpy().reshape(-1, S),
            "std_errors": self.std_errors(),
            "series_params": {n: vals[:, i].tolist() for i, n in enumerate(self.per_series)},
            "series_std_errors": per_se,
            "stop_reason": self._last_reason,
            "n_observations": n_obs,
            "n_unknowns": len(u),
            "rank": rank,
            "condition": cond,
            "unidentifiable": unident,
            "weakly_identified": weak,
            "warnings": warnings,
        }
        return self.info

    def std_errors(self) -> dict:
        """Gauss–Newton standard error of each shared parameter (physical units, delta
        method for log-parameters; ``inf`` when not identifiable, nan before a fit)."""
        se_raw = self.raw_cov.diagonal().clamp_min(0).sqrt()
        vals = self.field.transform(self.field.raw.detach())
        se = torch.where(self.field.pos_mask, se_raw * vals, se_raw)
        se = torch.where(torch.isinf(se_raw), torch.full_like(se, math.inf), se)
        return {k: float(se[i]) for i, k in enumerate(self.field.names)
                if k not in self.per_series}  # fmt: skip

    def values(self) -> dict:
        """Shared parameter values (per-series ones: ``info["series_params"]``)."""
        return {k: v for k, v in self.field.values().items() if k not in self.per_series}

    def initial_states(self, context: IrregularBatch, *, max_iter: int = 30) -> torch.Tensor:
        """[B, S] maximum-likelihood initial states of ``context``'s series, shared
        parameters fixed (per-series ones re-estimated)."""
        return self._estimate(context, fix_shared=True, max_iter=max_iter)["x0"]

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        """Mean squared residual of ``batch`` at re-estimated initial states (no gradient:
        train with ``fit(..., optimizer="gauss_newton")``)."""
        D = self._dims(batch)[2]
        with torch.no_grad():
            pred = self.predict(batch, batch.times)
        return masked_mse(pred, batch.values[..., :D], batch.mask[..., :D])

    def _query_solve(self, est, context, query_times, sens: bool):
        D, obs = est["D"], est["obs"]
        t0 = context.times[:, :1]
        qs, inv = _increasing(query_times.to(t0.dtype), t0)
        grid = torch.cat([t0, qs], 1)
        lay = est["layout"]
        raw0 = self.field.raw.detach().numpy()
        raw_rows, nodes = lay.unpack(est["u"], raw0, est["node_guess"])
        cov = None
        if self.field.covariates:
            cov = (context.times, fill_locf(context)[..., D:])
        out = self._solve_rows(grid, nodes, raw_rows, cov, sens=sens)
        if not sens:
            return out[:, 1:][:, :, obs].gather(1, inv[..., None].expand(-1, -1, len(obs)))
        X, Sn = out
        idx = inv[..., None].expand(-1, -1, len(obs))
        X = X[:, 1:][:, :, obs].gather(1, idx)
        Sn = Sn[:, 1:][:, :, obs]
        Sn = Sn.gather(1, inv[..., None, None].expand(-1, -1, len(obs), Sn.shape[-1]))
        return X, Sn

    def _context_estimate(self, context: IrregularBatch) -> dict:
        """The context's initial states (and per-series parameters), shared parameters
        fixed; the last result is reused for the same context and parameters (scoring
        interpolation and extrapolation conditions on one context twice)."""
        key = tuple(hash(x.detach().numpy().tobytes()) for x in
                    (context.times, context.values, context.mask, self.field.raw))  # fmt: skip
        cached = getattr(self, "_ctx_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        est = self._estimate(context, fix_shared=True, max_iter=30)
        self._ctx_cache = (key, est)
        return est

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        """[B, Q, D]: integrate from each series' estimated initial state to ``query_times``."""
        est = self._context_estimate(context)
        return self._query_solve(est, context, query_times, sens=False)

    def band(self, context: IrregularBatch, query_times: torch.Tensor, *, level: float = 0.95,
             prediction: bool = True):  # fmt: skip
        """Delta-method band ``(lower, mean, upper)`` [B, Q, D] at ``query_times``.

        The variance of the prediction combines the uncertainty of the shared parameters
        (the training covariance, propagated through the context's re-estimated initial
        states and per-series parameters, which depend on them) and of the context's own
        unknowns (``σ̂² (J_wᵀJ_w)⁻¹`` from the context's observations); with
        ``prediction`` the observation noise ``σ̂²`` is added (a prediction interval for
        a new observation), otherwise it is a confidence band for the mean curve.
        Context series are assumed independent of the training series.
        """
        from scipy.stats import norm as _norm

        if not 0 < level < 1:
            raise InputError(f"`level` must be in (0, 1), got {level!r}.")
        if not math.isfinite(float(self.sigma)):
            raise InputError("band() needs a fitted model: call gauss_newton (or fit) first.")
        est = self._context_estimate(context)
        lay = est["layout"]
        shared = lay.shared
        X, Sn = self._query_solve(est, context, query_times, sens=True)
        # the context Jacobian w.r.t. its own unknowns (w) and the shared raw parameters (θ)
        full = _Layout(lay.segs, lay.B, lay.S, lay.P, shared, lay.per, self._pinned(est["states"]),
                       fix_shared=False)  # fmt: skip
        raw0 = self.field.raw.detach().numpy()
        u_full = np.concatenate([raw0[shared], est["u"]])
        _, Jf = self._residuals(context, full, u_full, raw0, est["node_guess"], 1.0,
                                est["obs"], est["D"], est["cov"])  # fmt: skip
        ns = len(shared)
        Jt, Jw = Jf[:, :ns], Jf[:, ns:]
        sigma2 = float(self.sigma) ** 2
        JwtJw_inv = np.linalg.pinv(Jw.T @ Jw)
        dw_dt = -JwtJw_inv @ (Jw.T @ Jt)  # [n_w, ns]
        cov_t = self.raw_cov.numpy()[np.ix_(shared, shared)]
        cov_w = sigma2 * JwtJw_inv
        B, Q, D = X.shape
        var = np.zeros((B, Q, D))
        Sn = Sn.numpy()
        for b in range(B):
            cols = full.cols[b]  # single shooting: segment b is series b
            Hw = np.zeros((Q, D, full.n))
            ok = cols >= 0
            Hw[:, :, cols[ok]] = Sn[b][..., ok]
            Ht, Hw = Hw[..., :ns], Hw[..., ns:]
            G = Ht + Hw @ dw_dt
            var[b] = (np.einsum("qdi,ij,qdj->qd", G, cov_t, G)
                      + np.einsum("qdi,ij,qdj->qd", Hw, cov_w, Hw))  # fmt: skip
        if prediction:
            var = var + sigma2
        z = float(_norm.ppf(0.5 + level / 2))
        half = torch.as_tensor(z * np.sqrt(np.clip(var, 0, None)))
        return X - half, X, X + half

    def vector_field(self, t, x: torch.Tensor) -> torch.Tensor:
        """The fitted ``dx/dt`` at physical states ``x [..., S]`` (shared parameters; not
        available for mechanisms with per-series parameters or covariates)."""
        return self.field(t, x)


def _names_summary(names: list) -> str:
    """``a, b[0], b[1], …`` shortened to ``b[…] (12 series)`` per base name."""
    groups: dict = {}
    for n in names:
        base = n.split("[", 1)[0]
        groups.setdefault(base, []).append(n)
    parts = []
    for base, ns in groups.items():
        parts.append(ns[0] if len(ns) == 1 else f"{base} ({len(ns)} series)")
    return ", ".join(parts)
