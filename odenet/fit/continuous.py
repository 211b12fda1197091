"""Continuous-time models for irregular series, all sharing one interface.

Every model in :mod:`odenet.fit` is an ``nn.Module`` with

- ``loss(batch) -> scalar``: training loss on a (normalised) :class:`IrregularBatch`;
- ``predict(context, query_times [B, Q]) -> [B, Q, D]``: predictions at arbitrary times,
  conditioning on the observations in ``context`` (interpolation inside its window,
  extrapolation beyond).

:class:`ShootingODE` is the data-space ODE ``dx/dt = f(t, x)``: the state *is* the
observation vector, reset to the data at each observation.  Training is multiple
shooting: from every observation ``i`` it integrates to the next ``horizon``
observations and scores them, so no shot is longer than ``horizon`` gaps (a single
shot through a long oscillating series has a loss landscape full of local minima).
Prediction at ``q`` integrates from the last observation at or before ``q``.

A channel missing at an observation is the model's own forecast there
(:meth:`ShootingODE.assimilate`: the flow from the state at the observation before, with
the observed channels reset to the data), not its last observed value held constant — a
stale value is the start of every shot and prediction from that observation.  Before the
channel's first observation the state starts at the channel mean (0), and that channel's
terms of a shot are not scored — a start filled from a later observation made the shot's
target its own input.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

import odenet
from odenet._errors import InputError
from odenet.batch import IrregularBatch
from odenet.fit._common import (
    QueryGrid,
    fill_locf,
    last_index,
    masked_mse,
    merge_queries,
    observed_yet,
    placed,
)


def _cpu_randn(like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws shaped like ``like``, drawn on the CPU generator and moved to
    ``like``'s device: a seed gives the same fit on any device, and a checkpoint (which
    stores the CPU generator's state) resumes it exactly."""
    return torch.randn(like.shape, dtype=like.dtype, device="cpu").to(like.device)


class _NormalisedField(nn.Module):
    """A physical-units field seen in normalised coordinates ``z = (x − μ)/σ``."""

    def __init__(self, field: nn.Module, owner: ShootingODE):
        super().__init__()
        self.field = field
        self._owner = [owner]  # a list keeps the owner out of the module tree

    def forward(self, t, z):
        o = self._owner[0]
        x = z * o.norm_std + o.norm_mean
        return self.field(t, x) / o.norm_std


class ShootingODE(nn.Module):
    """Data-space ODE fitted by multiple shooting; black-box, grey-box or hybrid.

    Parameters
    ----------
    field : nn.Module
        ``f(t [K], x [K, D]) -> [K, D]``.  With ``physical=True`` it works in the
        data's physical units (a mechanistic model); otherwise in normalised units.
    horizon : int
        Number of observations each shot predicts during training (≥ 1).
    physical : bool
        Whether ``field`` expects physical units (grey-box).  The trainer attaches
        the normaliser, kept as buffers ``norm_mean``/``norm_std`` in the checkpoint.
    bidirectional : bool
        Two-sided interpolation: a query between two context observations blends the
        solution integrated forward from the one before and *backward* from the one
        after, ``(1 − w) x_fwd + w x_bwd`` with ``w = (q − t_i)/(t_{i+1} − t_i)`` — so
        the curve passes through every observation without resets and uses the next
        observation as well as the last.  Per channel ``d``, "the one after" is the
        next observation ``t_j`` where ``d`` *is observed* (``w = (q − t_i)/(t_j − t_i)``);
        the backward solve starts there from the observed channels and, for the
        others, the model's forecast there (:meth:`assimilate`).  A channel
        never observed after ``q`` is forward only, as is everything beyond the last
        observation.  Training is unchanged (the field is the same).
    method, rtol, atol, sensitivity, step_size :
        Passed to :func:`odenet.solve` (``sensitivity="adjoint"`` works when the
        adjoint is available; ``"direct"`` backpropagates through the steps).
    """

    def __init__(
        self,
        field: nn.Module,
        *,
        horizon: int = 4,
        physical: bool = False,
        bidirectional: bool = False,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-6,
        step_size: float | None = None,
        sensitivity: str = "direct",
    ):
        super().__init__()
        if not isinstance(horizon, int) or horizon < 1:
            raise InputError(f"`horizon` must be a positive integer, got {horizon!r}.")
        self.field = field
        self.horizon = horizon
        self.physical = physical
        self.bidirectional = bool(bidirectional)
        self.solver = dict(method=method, rtol=rtol, atol=atol, step_size=step_size,
                           sensitivity=sensitivity)  # fmt: skip
        self.register_buffer("norm_mean", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("norm_std", torch.ones(0, dtype=torch.float64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the normaliser buffers are sized when attached; take the checkpoint's size
        for name in ("norm_mean", "norm_std"):
            if prefix + name in state_dict:
                # on this module's device: a checkpoint loads on the CPU into a GPU model
                setattr(
                    self,
                    name,
                    torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device),
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def attach_normalizer(self, normalizer) -> None:
        """Use ``normalizer``'s mean/std to map between physical and normalised units."""
        self.norm_mean = normalizer.mean.clone()
        self.norm_std = normalizer.std.clone()

    def _solve(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.physical and self.norm_mean.numel() == 0:
            self.norm_mean = y0.new_zeros(y0.shape[-1])
            self.norm_std = y0.new_ones(y0.shape[-1])
        opts = {k: v for k, v in self.solver.items() if v is not None}
        f = _NormalisedField(self.field, self) if self.physical else self.field
        return odenet.solve(f, y0, t, **opts).ys

    def assimilate(self, batch: IrregularBatch) -> torch.Tensor:
        """[B, T, D] the state at each observation time, missing channels forecast.

        ``x_0`` is the first observation (an unobserved channel at its mean, 0); then
        ``x_i = m_i ⊙ v_i + (1 − m_i) ⊙ φ(t_{i−1} → t_i, x_{i−1})``: the channels observed
        at ``t_i`` from the data, the missing ones from the model's flow.  A missing
        channel held at its last observed value (LOCF) started every shot and prediction
        from a state the model's own dynamics contradict — with the true field, the
        prediction after a gap in one channel was off by the channel's change over the gap.

        One solve per time column where some series misses a channel (rows batched); a
        batch with every channel observed at every time costs nothing and equals the data.
        Differentiable (the loss calls it under ``no_grad``: its shot starts are data).
        """
        filled = fill_locf(batch)
        observed = batch.mask > 0
        partial = ~observed.all(-1) & batch.valid  # [B, T]
        partial[:, 0] = False
        columns = partial.any(0).nonzero().flatten().tolist()
        if not columns:
            return filled
        states = list(filled.unbind(1))
        for i in columns:
            rows = partial[:, i].nonzero().flatten()
            grid = torch.stack([batch.times[rows, i - 1], batch.times[rows, i]], -1)
            arrive = self._solve(states[i - 1][rows], grid)[:, 1]
            here = torch.where(observed[rows, i], batch.values[rows, i], arrive)
            states[i] = states[i].index_put((rows,), here)
        return torch.stack(states, 1)

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        """Multiple-shooting MSE: shots of ``horizon`` gaps from every observation.

        A shot starts from :meth:`assimilate`'s state (computed without gradient, like
        the data): a channel missing there is the model's forecast.  A channel not yet
        observed at a shot's start starts at its mean and is not scored in that shot (its
        start carries no information about it)."""
        B, T, D = batch.values.shape
        if T < 2:
            raise InputError("training needs series with at least two observation times.")
        L = min(self.horizon, T - 1)
        with torch.no_grad():
            filled = self.assimilate(batch)
        # pad L extra columns (times keep increasing, mask 0) so every start has a window
        dt = torch.arange(1, L + 1, dtype=batch.times.dtype, device=batch.times.device)[None, :]
        times = torch.cat([batch.times, batch.times[:, -1:] + dt], dim=1)
        values = torch.cat([batch.values, batch.values.new_zeros(B, L, D)], dim=1)
        mask = torch.cat([batch.mask, batch.mask.new_zeros(B, L, D)], dim=1)
        win_t = times.unfold(1, L + 1, 1)[:, :T]  # [B, T, L+1]
        win_v = values.unfold(1, L + 1, 1)[:, :T].permute(0, 1, 3, 2)  # [B, T, L+1, D]
        win_m = mask.unfold(1, L + 1, 1)[:, :T].permute(0, 1, 3, 2)
        cols = torch.arange(T, device=batch.times.device)[None, :]
        start_ok = cols < (batch.lengths[:, None] - 1)  # [B, T]
        y0 = filled[start_ok]  # [K, D]
        ys = self._solve(y0, win_t[start_ok])  # [K, L+1, D]
        seen = observed_yet(batch)[start_ok].to(mask.dtype)  # [K, D] at each shot's start
        scored = win_m[start_ok][:, 1:] * seen[:, None, :]
        return masked_mse(ys[:, 1:], win_v[start_ok][:, 1:], scored)

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        """[B, Q, D]: integrate from the last context observation at or before each query.

        The start is :meth:`assimilate`'s state there (a channel missing at that
        observation is the model's forecast from the ones before).  A query before the
        series' first observation is integrated backward from it (a backcast).  A channel
        not yet observed at the start starts at its mean (0)."""
        context, query_times = placed(self, context, query_times)
        B, Q = query_times.shape
        filled = self.assimilate(context)
        idx = last_index(context.times, context.lengths, query_times)  # [B, Q]
        t0 = context.times.gather(1, idx)
        x0 = filled.gather(1, idx[..., None].expand(B, Q, filled.shape[-1]))
        # a query at an observation time returns the observation, unsolved (it was nudged by
        # an absolute 1e-9, which vanishes at t ≈ 1.7e9 or in float32, and the solver refused
        # the grid [t0, t0]); one before the first observation (idx 0) runs backward in its
        # own row
        query_times = query_times.to(t0.dtype)
        move = (query_times != t0).reshape(-1)
        fwd = x0.reshape(B * Q, -1).clone()
        if bool(move.any()):
            grid = torch.stack([t0, query_times], -1).reshape(B * Q, 2)[move]
            fwd[move] = self._solve(fwd[move], grid)[:, 1].to(fwd.dtype)
        fwd = fwd.reshape(B, Q, -1)
        if not self.bidirectional:
            return fwd
        # per channel d, the first observation after the query where d is observed:
        # the backward pass for d starts there (a channel missing at the next observation
        # was started from its stale carried-forward value, as if observed)
        B, T, D = context.values.shape
        nxt = (idx + 1).clamp(max=T - 1)
        t_next = context.times.gather(1, nxt)
        inside = (nxt < context.lengths[:, None]) & (query_times > t0) & (query_times < t_next)
        obs = (context.mask > 0) & context.valid[..., None]  # [B, T, D]
        ar = torch.arange(T, device=context.times.device)[None, :, None].expand(B, T, D)
        next_obs = torch.where(obs, ar, T).flip(1).cummin(1).values.flip(1)  # first ≥ j
        jd = next_obs.gather(1, nxt[..., None].expand(B, Q, D))  # [B, Q, D]
        has = inside[..., None] & (jd < T)
        if not bool(has.any()):
            return fwd
        bq, qq, dd = has.nonzero(as_tuple=True)
        j = jd[bq, qq, dd]
        tj = context.times[bq, j]
        # the state at t_j: the channels observed there from the data, the others the
        # model's forecast (assimilate)
        try:
            bwd = self._solve(filled[bq, j], torch.stack([tj, query_times[bq, qq]], -1))[:, 1]
        except odenet.SolverError:  # a field stiff backwards in time: keep the forward pass
            return fwd
        bwd = bwd[torch.arange(len(dd), device=dd.device), dd]
        w = (query_times[bq, qq] - t0[bq, qq]) / (tj - t0[bq, qq])
        out = fwd.clone()
        out[bq, qq, dd] = (1 - w) * fwd[bq, qq, dd] + w * bwd
        return out

    def vector_field(self, t, x: torch.Tensor) -> torch.Tensor:
        """The learnt ``dx/dt`` in physical units at physical states ``x [..., D]``."""
        if self.physical:
            return self.field(t, x)
        z = (x - self.norm_mean) / self.norm_std
        return self.field(t, z) * self.norm_std


class TimeInvariantMLP(nn.Module):
    """Autonomous black-box field ``f(x) = MLP(x)`` (tanh), last layer small at init."""

    def __init__(self, dim: int, hidden: int = 64, layers: int = 2):
        super().__init__()
        mods, d = [], dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.Tanh()]
            d = hidden
        last = nn.Linear(d, dim)
        nn.init.normal_(last.weight, std=1e-2)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*mods, last)

    def forward(self, t, x):
        return self.net(x)


def neural_ode(dim: int, hidden: int = 64, *, horizon: int = 4, **solver) -> ShootingODE:
    """A data-space Neural ODE: :class:`ShootingODE` on a :class:`TimeInvariantMLP`."""
    return ShootingODE(TimeInvariantMLP(dim, hidden), horizon=horizon, **solver)


# --- adapters for the sequence models of odenet.models --------------------------------


class ODERNNForecaster(nn.Module):
    """ODE-RNN (:class:`odenet.models.ODERNN`) trained on multi-horizon prediction.

    From the state after each observation ``i``, the hidden ODE is integrated over the
    next ``horizon`` observation times and read out there (the same multiple-shooting
    objective as :class:`ShootingODE`).  ``predict`` merges the queries into the
    context as unobserved points, so each query is read from the state evolved from
    the past observations only (interpolation *and* extrapolation).  The scan starts
    at each series' first context time whatever is asked: a query before it is the
    backcast ``readout(φ_{t_0 → q}(0))``, the hidden flow run backward from the
    initial state (see :class:`~odenet.fit._common.QueryGrid`), so the answer at a
    time never depends on the other query times (an early query used to become the
    start of the scan and shift every later prediction of its series).
    """

    def __init__(self, dim: int, hidden: int = 32, *, horizon: int = 4, **solver):
        super().__init__()
        from odenet.models import ODERNN

        solver.setdefault("sensitivity", "direct")
        self.net = ODERNN(dim, hidden, dim, **solver)
        self.horizon = horizon

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        net = self.net
        if self.horizon <= 1:
            pred = net(batch)  # [B, T, D]: prediction of point i from points < i
            m = batch.mask.clone()
            m[:, 0] = 0  # the first point has no past
            return masked_mse(pred, batch.values, m)
        B, T, D = batch.values.shape
        L = min(self.horizon, T - 1)
        after = net.hidden(batch)  # [B, T, H]
        dt = torch.arange(1, L + 1, dtype=batch.times.dtype, device=batch.times.device)[None, :]
        times = torch.cat([batch.times, batch.times[:, -1:] + dt], dim=1)
        values = torch.cat([batch.values, batch.values.new_zeros(B, L, D)], dim=1)
        mask = torch.cat([batch.mask, batch.mask.new_zeros(B, L, D)], dim=1)
        win_t = times.unfold(1, L + 1, 1)[:, :T]
        win_v = values.unfold(1, L + 1, 1)[:, :T].permute(0, 1, 3, 2)
        win_m = mask.unfold(1, L + 1, 1)[:, :T].permute(0, 1, 3, 2)
        ok = torch.arange(T, device=batch.times.device)[None, :] < (batch.lengths[:, None] - 1)
        if not bool(ok.any()):  # a minibatch of one-point series: nothing to score
            return (after * 0).sum()
        hs = odenet.solve(net.field, after[ok], win_t[ok], **net.solver).ys  # [K, L+1, H]
        pred = net.readout(hs[:, 1:])
        return masked_mse(pred, win_v[ok][:, 1:], win_m[ok][:, 1:])

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        net = self.net
        context, query_times = placed(self, context, query_times)
        t0 = context.times[:, :1].expand_as(query_times)
        early = query_times < t0
        # the scan starts at t0 for every series: a query before it must not enter it
        merged, pos = merge_queries(context, torch.where(early, t0, query_times))
        out = net(merged)  # readout of h(t^-): only observations before t are used
        out = out.gather(1, pos[..., None].expand(*pos.shape, out.shape[-1]))
        if not bool(early.any()):
            return out
        # backcast: h(t0^-) = 0 evolved backward to each earlier query
        qg = QueryGrid(torch.where(early, query_times, t0), context.times[:, 0])
        p = net.readout.weight
        h0 = torch.zeros(len(qg.series), net.hidden_dim, dtype=p.dtype, device=p.device)
        back = net.readout(qg.take(odenet.solve(net.field, h0, qg.grid, **net.solver).ys))
        return torch.where(early[..., None], back, out)


def compress_padding(times: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``times [B, T]`` with each row's padding columns 1e-3 apart past its last time."""
    # padding columns continue at 1e-3 steps: the per-sample solve barely moves there
    T = times.shape[1]
    cols = torch.arange(T, device=times.device)[None, :]
    last = times.gather(1, (lengths - 1)[:, None])
    return torch.where(cols < lengths[:, None], times, last + 1e-3 * (cols - lengths[:, None] + 1))


class _GapField(nn.Module):
    """``f`` over one gap per row, time rescaled to ``s ∈ [0, 1]``: ``dh/ds = Δt_b f(h)``.

    One fixed step of size 1 on it is one step of size ``Δt_b`` on row ``b``, so rows
    with different gaps share one call of :func:`odenet.step`.
    """

    def __init__(self, field: nn.Module, t0: torch.Tensor, dt: torch.Tensor):
        super().__init__()
        self.field, self.t0, self.dt = field, t0, dt

    def forward(self, s, h):
        return self.dt[:, None] * self.field(self.t0 + s * self.dt, h)


class LatentODEForecaster(nn.Module):
    """Latent ODE (:class:`odenet.models.LatentODE`) trained by the ELBO.

    ``predict`` decodes the posterior mean; :meth:`band` gives a sample band.

    Parameters
    ----------
    dim, latent, hidden : int
        Channels, latent size, encoder hidden size (and width of both fields).
    obs_std : float
        Observation noise of the likelihood (normalised units).
    kl_weight : float
        Weight of the KL term of the ELBO.
    encoder : {"rk4", "adaptive"}
        ``"rk4"`` (default): the backward ODE-RNN recognition network takes one
        classical RK4 step per gap between observations (all rows in one
        :func:`odenet.step`, time rescaled per row) — the encoder is a learnt map,
        not a simulation, so an adaptive error control buys nothing there and one
        solve per observation dominated the cost of a training step.
        ``"adaptive"``: the unmodified :class:`odenet.models.LatentODE` path — its
        ``encode`` and ``elbo`` (one adaptive solve per observation in the encoder
        and in the decoder), kept for comparison.
    **solver :
        ``method``, ``rtol``, ``atol``, ``sensitivity`` of the decoder (and of the
        adaptive encoder).  The decoder is one per-sample solve over each series'
        own grid (padding compressed to 1e-3 steps past the last time).
    """

    def __init__(self, dim: int, latent: int = 4, hidden: int = 32, *, obs_std: float = 0.1,
                 kl_weight: float = 1.0, encoder: str = "rk4", **solver):  # fmt: skip
        super().__init__()
        from odenet.models import LatentODE

        if encoder not in ("rk4", "adaptive"):
            raise InputError(f"`encoder` must be 'rk4' or 'adaptive', got {encoder!r}.")
        self.net = LatentODE(dim, latent, hidden, obs_std=obs_std, **solver)
        self.kl_weight = kl_weight
        self.encoder = encoder

    def encode(self, batch: IrregularBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` [B, L] of ``q(z_0 | x)`` at each series' first time."""
        if self.encoder == "adaptive":
            return self.net.encode(batch)
        from odenet.models.odernn import reverse_batch

        net = self.net
        times, values, mask = reverse_batch(batch)  # decreasing times per row
        B, T, _ = values.shape
        valid = torch.arange(T, device=times.device)[None, :] < batch.lengths[:, None]
        observed = valid & (mask.sum(-1) > 0)
        h = values.new_zeros(B, net.hidden_dim)
        for i in range(T):
            if i > 0:
                dt = torch.where(
                    valid[:, i], times[:, i] - times[:, i - 1], torch.zeros_like(times[:, i])
                )
                gap = _GapField(net.enc_field, times[:, i - 1], dt)
                h = odenet.step(gap, h.new_zeros(()), h, 1.0, "rk4")
            x = torch.cat([values[:, i] * mask[:, i], mask[:, i]], dim=-1)
            h = torch.where(observed[:, i, None], net.enc_cell(x, h), h)
        mu, logvar = net.to_posterior(h).chunk(2, dim=-1)
        return mu, logvar

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        """Negative ELBO, mean over series: one reparameterised sample of ``z_0`` in
        training mode, ``z_0 = μ`` in eval mode."""
        from odenet.models.odernn import gaussian_loglik

        net = self.net
        if self.encoder == "adaptive" and self.training:
            # the original path (one adaptive solve per point); its elbo always samples,
            # so eval mode takes the path below (it drew 178–1041 around a loss of 309)
            return -net.elbo(batch, n_samples=1, kl_weight=self.kl_weight).mean()
        mu, logvar = self.encode(batch)
        # eval mode (validation): the posterior mean, so early stopping sees no sampling noise
        z0 = mu + torch.exp(0.5 * logvar) * _cpu_randn(mu) if self.training else mu
        times = compress_padding(batch.times, batch.lengths)
        xhat = net.decode(z0, times)  # one per-sample solve; padding is masked out
        loglik = gaussian_loglik(batch.values, xhat, batch.mask, net.obs_std)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)
        return -(loglik - self.kl_weight * kl).mean()

    def _decode(self, z0, context, query_times):
        """Decoded means ``[n, B, Q, D]`` at ``query_times [B, Q]`` from ``z0 [n·B, L]``
        (``n`` draws of every series, series fastest) at each series' first time; a query
        before it is decoded backward from ``z0`` (see :class:`QueryGrid`)."""
        B = query_times.shape[0]
        n = z0.shape[0] // B
        qg = QueryGrid(query_times.to(context.times.dtype), context.times[:, 0])
        R = len(qg.series)
        rows = (torch.arange(n, device=qg.series.device)[:, None] * B
                + qg.series[None, :]).reshape(-1)  # fmt: skip
        out = self.net.decode(z0[rows], qg.grid.repeat(n, 1))
        return torch.stack([qg.take(o) for o in out.reshape(n, R, *out.shape[1:])])

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        """Decoded posterior mean at ``query_times`` (any order; before the first
        observation it is the latent flow run backward from ``z_0``)."""
        context, query_times = placed(self, context, query_times)
        mu, _ = self.encode(context)
        return self._decode(mu, context, query_times)[0]

    def band(self, context, query_times, n_samples: int = 32, q: float = 0.9):
        """(lower, median, upper) [B, Q, D] from ``n_samples`` posterior samples."""
        context, query_times = placed(self, context, query_times)
        mu, logvar = self.encode(context)
        B = mu.shape[0]
        eps = _cpu_randn(mu.expand(n_samples, *mu.shape))
        z0 = (mu + torch.exp(0.5 * logvar) * eps).reshape(n_samples * B, -1)
        s = self._decode(z0, context, query_times)
        lo, hi = (1 - q) / 2, 1 - (1 - q) / 2
        return s.quantile(lo, 0), s.median(0).values, s.quantile(hi, 0)


class NeuralCDEForecaster(nn.Module):
    """Neural CDE (``odenet.models.ncde.NeuralCDE``) on the spline of the context.

    The path is the natural cubic spline through the *context* observations (each
    channel through its own observed points) with time as a channel; the hidden state
    is read out anywhere, so a query between two observations is conditioned on both
    (two-sided interpolation), and one beyond the last is an extrapolation by the
    autonomous part of the field.

    Training imitates that use: in every series a random ``holdout`` fraction of the
    points and everything after a random cut in the last ``max_cut`` of its span are
    taken out of the path, and the loss is the MSE at those hidden points (what the
    path shows the model is not scored — it would be a copy).  In eval mode (the
    validation loss) the draw is fixed per series, seeded by its own times, so
    successive evaluations are comparable and do not depend on the series' order.

    Parameters
    ----------
    dim : int
        Observed channels.
    hidden : int
        Size of ``z`` and width of ``f_θ``.
    holdout, max_cut : float
        Fractions of the training draw (see above).
    skip : bool
        Predict the spline path plus a learnt correction (default; see
        ``odenet.models.ncde.NeuralCDE``): on few, smooth series the plain
        readout must first learn to copy its input.
    **solver :
        ``method``, ``rtol``, ``atol``, ``sensitivity`` of the solve.
    """

    def __init__(self, dim: int, hidden: int = 32, *, holdout: float = 0.2,
                 max_cut: float = 0.4, skip: bool = True, **solver):  # fmt: skip
        super().__init__()
        from odenet.models.ncde import NeuralCDE

        for name, v in (("holdout", holdout), ("max_cut", max_cut)):
            if not 0 <= v < 1:
                raise InputError(f"`{name}` must be a fraction in [0, 1), got {v!r}.")
        self.net = NeuralCDE(dim, hidden, skip=skip, **solver)
        self.holdout, self.max_cut = holdout, max_cut

    def set_grid(self, batch: IrregularBatch) -> None:
        """``τ`` of the time channel: the median span of the training series."""
        first = batch.times[:, 0]
        last = batch.times.gather(1, (batch.lengths - 1)[:, None])[:, 0]
        span = float((last - first).median())
        self.net.time_scale.fill_(span if span > 0 else 1.0)

    def _draws(self, batch: IrregularBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform draws ``[B, 1]`` (the cut) and ``[B, T]`` (the holdout) of ``_hide``.

        Training: fresh ones.  Eval: fixed per series, from a seed made of its own times,
        so a series is hidden alike whatever its row and the batch's padded width (drawn
        by row position from one seed, the validation loss of the same series went from
        6.24 to 75.0 when their order changed)."""
        B, T = batch.times.shape
        dt = batch.times.dtype
        dev = batch.times.device
        if self.training:  # CPU draws, see _cpu_randn
            return (torch.rand(B, 1, dtype=dt, device="cpu").to(dev),
                    torch.rand(B, T, dtype=dt, device="cpu").to(dev))  # fmt: skip
        u_cut = torch.empty(B, 1, dtype=dt, device="cpu")
        u_drop = torch.ones(B, T, dtype=dt, device="cpu")  # padding: never dropped (not valid)
        for b, n in enumerate(batch.lengths.tolist()):
            times = batch.times[b, :n].detach().to("cpu", torch.float64).numpy().tobytes()
            seed = int.from_bytes(hashlib.blake2b(times, digest_size=8).digest(), "little")
            gen = torch.Generator().manual_seed(seed & (2**63 - 1))
            u_cut[b] = torch.rand(1, generator=gen, dtype=dt, device="cpu")
            u_drop[b, :n] = torch.rand(n, generator=gen, dtype=dt, device="cpu")
        return u_cut.to(dev), u_drop.to(dev)

    def _hide(self, batch: IrregularBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] bool masks of the points taken out of the path and scored: inside the
        kept span (interpolation) and after the cut (extrapolation)."""
        B, T = batch.times.shape
        valid = batch.valid
        first = batch.times[:, :1]
        last = batch.times.gather(1, (batch.lengths - 1)[:, None])
        u_cut, u_drop = self._draws(batch)
        cut = last - u_cut * self.max_cut * (last - first)
        drop = u_drop < self.holdout
        after = valid & (batch.times > cut)
        inside = valid & drop & ~after
        inside[:, 0] = after[:, 0] = False  # the path keeps each series' first point
        return inside, after

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        """MSE at the interpolation targets plus MSE at the extrapolation targets (each
        averaged on its own, so the larger extrapolation errors do not drown the
        interpolation term)."""
        inside, after = self._hide(batch)
        m = batch.mask
        path_mask = m * (~(inside | after))[..., None].to(m.dtype)
        times = compress_padding(batch.times, batch.lengths)
        pred = self.net(times, batch.values, path_mask, times)
        return sum(masked_mse(pred, batch.values, m * h[..., None].to(m.dtype))
                   for h in (inside, after))  # fmt: skip

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        context, query_times = placed(self, context, query_times)
        merged, pos = merge_queries(context, query_times)
        times = compress_padding(merged.times, merged.lengths)
        out = self.net(times, merged.values, merged.mask, times)
        return out.gather(1, pos[..., None].expand(*pos.shape, out.shape[-1]))
