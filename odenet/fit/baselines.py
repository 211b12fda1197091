"""Baselines for irregular series, with the same ``loss`` / ``predict`` interface.

Recurrent baselines (all GRUs, the same readout, the same training objective as the
continuous-time models):

- :class:`GRUGrid` — a GRU on a fixed grid of step ``dt``: each cell gets the last
  observation carried forward (LOCF) and a mask saying whether the cell saw a new one;
- :class:`GRUDeltaT` — a GRU stepped once per observation with ``[x, m, Δt]`` input
  (``x`` LOCF-filled);
- :class:`GRUD` — GRU-D (Che et al. 2018): missing inputs decay towards the channel
  mean and the hidden state decays, ``γ = exp(−max(0, W δ + b))``, with ``δ`` the time
  since each channel was last seen.

Each produces a state ``h_i`` after each event at time ``τ_i``; the prediction at a
later time ``q`` is ``readout(h_i, q − τ_i)`` from the last state strictly before ``q``
(GRU-D first decays ``h_i`` over the gap).  Training scores every observation from
each of the ``horizon`` most recent states before it — the same multi-horizon
objective as the shooting ODEs, so extrapolation is trained equally.

The LOCF inputs are causal: before a channel's first observation its input is the
channel mean (0 after normalisation) and the mask says it is unobserved, as in GRU-D.

Non-learnt baselines: :class:`LinearInterpolation` (interpolates between context
observations, holds the last value beyond), :class:`LOCF`, :class:`TrainingMean`.
"""

from __future__ import annotations

import torch
from torch import nn

from odenet._errors import InputError
from odenet.batch import IrregularBatch
from odenet.fit._common import fill_locf, last_index, placed


class _Readout(nn.Module):
    def __init__(self, hidden: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, h, gap):
        return self.net(torch.cat([h, gap[..., None]], dim=-1))


class _RecurrentBaseline(nn.Module):
    """Shared machinery: ``states(batch)`` → readout at gaps; multi-horizon loss."""

    def __init__(self, dim: int, hidden: int, horizon: int):
        super().__init__()
        if not isinstance(horizon, int) or horizon < 1:
            raise InputError(f"`horizon` must be a positive integer, got {horizon!r}.")
        self.dim, self.hidden, self.horizon = dim, hidden, horizon
        self.readout = _Readout(hidden, dim)

    # subclasses: states(batch) -> (h [B, N, H], tau [B, N], n [B]) and optional decay
    def states(self, batch):  # pragma: no cover - abstract
        raise NotImplementedError

    def decay(self, h, gap):
        return h

    def _read(self, h, tau, n, query, back: int = 0):
        """Predictions at ``query [B, Q]`` from the ``back``-th state before it, and validity."""
        B, Q = query.shape
        eps = 1e-9 * (1 + query.abs())
        idx = last_index(tau, n, query - eps)  # last state strictly before q
        has = (tau[:, :1] < query - eps) & (idx - back >= 0)
        src = (idx - back).clamp_min(0)
        hs = h.gather(1, src[..., None].expand(B, Q, h.shape[-1]))
        gap = query - tau.gather(1, src)
        return self.readout(self.decay(hs, gap), gap), has

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        h, tau, n = self.states(batch)
        total, count = 0.0, 0.0
        for back in range(self.horizon):
            pred, has = self._read(h, tau, n, batch.times, back)
            m = batch.mask * has[..., None].to(batch.mask.dtype)
            total = total + (((pred - batch.values) ** 2) * m).sum()
            count = count + m.sum()
        return total / max(float(count), 1.0)

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        context, query_times = placed(self, context, query_times)
        h, tau, n = self.states(context)
        pred, has = self._read(h, tau, n, query_times)
        # before any state: the readout of the initial (zero) state
        return torch.where(has[..., None], pred, self.readout(torch.zeros_like(h[:, :1]).expand(
            -1, query_times.shape[1], -1), torch.zeros_like(query_times)))  # fmt: skip


class GRUDeltaT(_RecurrentBaseline):
    """GRU stepped at each observation with input ``[x (LOCF-filled), m, Δt]``."""

    def __init__(self, dim: int, hidden: int = 32, *, horizon: int = 4):
        super().__init__(dim, hidden, horizon)
        self.cell = nn.GRUCell(2 * dim + 1, hidden)

    def states(self, batch):
        x = fill_locf(batch)
        dt = torch.diff(batch.times, dim=1, prepend=batch.times[:, :1])
        h = x.new_zeros(x.shape[0], self.hidden)
        out = []
        for i in range(x.shape[1]):
            h = self.cell(torch.cat([x[:, i], batch.mask[:, i], dt[:, i : i + 1]], -1), h)
            out.append(h)
        return torch.stack(out, 1), batch.times, batch.lengths


class GRUD(_RecurrentBaseline):
    """GRU-D: input and hidden-state decay driven by time since last observation."""

    def __init__(self, dim: int, hidden: int = 32, *, horizon: int = 4):
        super().__init__(dim, hidden, horizon)
        self.cell = nn.GRUCell(2 * dim, hidden)
        self.gamma_x = nn.Parameter(torch.zeros(dim))
        self.beta_x = nn.Parameter(torch.zeros(dim))
        self.gamma_h = nn.Linear(dim, hidden)
        self.gamma_gap = nn.Linear(1, hidden)

    def decay(self, h, gap):
        return h * torch.exp(-torch.relu(self.gamma_gap(gap[..., None])))

    def states(self, batch):
        v, m = batch.values, batch.mask
        B, T, D = v.shape
        h = v.new_zeros(B, self.hidden)
        last_x = v.new_zeros(B, D)  # the channel mean (0 after normalisation) until seen
        last_t = batch.times[:, :1].expand(B, D).clone()
        out = []
        for i in range(T):
            delta = batch.times[:, i : i + 1] - last_t  # [B, D] time since channel last seen
            gx = torch.exp(-torch.relu(self.gamma_x * delta + self.beta_x))
            x_hat = m[:, i] * v[:, i] + (1 - m[:, i]) * gx * last_x
            h = h * torch.exp(-torch.relu(self.gamma_h(delta)))
            h = self.cell(torch.cat([x_hat, m[:, i]], -1), h)
            out.append(h)
            seen = m[:, i] > 0
            last_x = torch.where(seen, v[:, i], last_x)
            last_t = torch.where(seen, batch.times[:, i : i + 1].expand(B, D), last_t)
        return torch.stack(out, 1), batch.times, batch.lengths


class GRUGrid(_RecurrentBaseline):
    """GRU on a fixed grid ``t_0 + k·dt``: LOCF values plus a "new observation" mask.

    Cell ``k`` aggregates the observations in ``(τ_{k−1}, τ_k]``; its state is used for
    queries after ``τ_k``.  ``dt`` is in data time units (default: set by the trainer
    to the median gap of the training data via :meth:`set_grid`).
    """

    def __init__(self, dim: int, hidden: int = 32, *, horizon: int = 4, dt: float | None = None,
                 max_cells: int = 2000):  # fmt: skip
        super().__init__(dim, hidden, horizon)
        self.cell = nn.GRUCell(2 * dim, hidden)
        self.register_buffer("dt", torch.tensor(float(dt) if dt else 0.0, dtype=torch.float64))
        self.max_cells = max_cells

    def set_grid(self, batch: IrregularBatch) -> None:
        """Grid step = median gap between consecutive observations of ``batch``."""
        if float(self.dt) > 0:
            return
        gaps = batch.times.diff(dim=1)[batch.valid[:, 1:]]
        if gaps.numel() == 0:
            raise InputError(
                "GRUGrid sets its grid step from the gaps between observations, and no series "
                "has two observation times; give longer series or pass `dt=`."
            )
        self.dt = gaps.median().to(torch.float64)

    def states(self, batch):
        if float(self.dt) <= 0:
            self.set_grid(batch)
        dt = float(self.dt)
        B, T, D = batch.values.shape
        t0 = batch.times[:, :1]
        t_end = batch.times.gather(1, (batch.lengths - 1)[:, None])
        K = int(torch.ceil(((t_end - t0) / dt).max()).item()) + 1
        if K > self.max_cells:
            raise InputError(
                f"GRUGrid would need {K} cells of dt = {dt:g}; raise `dt` or `max_cells`."
            )
        grid = torch.arange(K, dtype=t0.dtype, device=t0.device)[None, :]
        tau = t0 + dt * grid  # [B, K]
        # cell index of each observation: smallest k with τ_k ≥ t
        cell = torch.ceil((batch.times - t0) / dt - 1e-9).long().clamp(0, K - 1)
        filled = fill_locf(batch)
        # per cell: the last observation index with cell ≤ k (LOCF), and whether any was new
        ar = torch.arange(T, device=t0.device)[None, :]
        obs_idx = torch.where(batch.valid, ar, torch.full_like(ar, -1))
        upto = last_index(cell.to(t0.dtype), batch.lengths, grid.expand(B, K))  # [B, K]
        started = cell[:, :1] <= torch.arange(K, device=t0.device)[None, :]
        src = upto.clamp_min(0)
        x = filled.gather(1, src[..., None].expand(B, K, D)) * started[..., None]
        new = batch.mask.new_zeros(B, K, D)
        valid_obs = (obs_idx >= 0)[..., None] & (batch.mask > 0)
        new.scatter_add_(1, cell[..., None].expand(B, T, D), valid_obs.to(new.dtype))
        new = (new > 0).to(new.dtype)
        h = x.new_zeros(B, self.hidden)
        out = []
        for k in range(K):
            h = self.cell(torch.cat([x[:, k], new[:, k]], -1), h)
            out.append(h)
        n = (torch.ceil((t_end[:, 0] - t0[:, 0]) / dt - 1e-9).long() + 1).clamp(1, K)
        return torch.stack(out, 1), tau, n


# --- non-learnt baselines ----------------------------------------------------------


class _Fixed(nn.Module):
    """A baseline without trainable parameters (``loss`` is 0; nothing to fit)."""

    trainable = False

    def loss(self, batch):
        return batch.values.new_zeros((), requires_grad=True)


class TrainingMean(_Fixed):
    """Predicts the training mean of each channel (0 in normalised units)."""

    def predict(self, context, query_times):
        context, query_times = placed(self, context, query_times)
        B, Q = query_times.shape
        return context.values.new_zeros(B, Q, context.values.shape[-1])


class LOCF(_Fixed):
    """Last observation carried forward: each channel's last observed value at or before
    ``q``, the training mean (0) where the channel has none yet."""

    def predict(self, context, query_times):
        context, query_times = placed(self, context, query_times)
        filled = fill_locf(context)
        idx = last_index(context.times, context.lengths, query_times)
        out = filled.gather(1, idx[..., None].expand(*idx.shape, filled.shape[-1]))
        # last_index answers 0 for a query before the first time: nothing is observed yet
        return out * (context.times[:, :1] <= query_times)[..., None].to(out.dtype)


class LinearInterpolation(_Fixed):
    """Per-channel linear interpolation between observed context values; LOCF beyond."""

    def predict(self, context, query_times):
        context, query_times = placed(self, context, query_times)
        B, Q = query_times.shape
        D = context.values.shape[-1]
        out = context.values.new_zeros(B, Q, D)
        for b in range(B):
            n = int(context.lengths[b])
            for d in range(D):
                m = context.mask[b, :n, d] > 0
                if not bool(m.any()):
                    continue
                t, v = context.times[b, :n][m], context.values[b, :n, d][m]
                out[b, :, d] = _interp(query_times[b], t, v)
        return out


def _interp(q, t, v):
    """``numpy.interp`` in torch: linear inside ``[t_0, t_end]``, constant outside."""
    i = torch.searchsorted(t, q).clamp(1, max(len(t) - 1, 1))
    if len(t) == 1:
        return v.expand_as(q).clone()
    t0, t1, v0, v1 = t[i - 1], t[i], v[i - 1], v[i]
    w = ((q - t0) / (t1 - t0)).clamp(0, 1)
    return v0 + w * (v1 - v0)
