"""ODE-RNN and the latent ODE (Rubanova, Chen & Duvenaud, NeurIPS 2019).

Between observations the hidden state follows an ODE ``dh/dt = f(t, h)``; at an
observation it jumps by a GRU update fed with the observed values and their mask.
All samples of an :class:`odenet.batch.IrregularBatch` are evolved together, each
between *its own* consecutive observation times: observation index ``i`` is one
batched :func:`odenet.solve` on the per-sample grid ``times[:, i-1:i+1]`` (``[B, 2]``,
each row with its own adaptive steps).  No union-of-all-times grid is built, and a
row past its ``length`` (padding) has its field multiplied by 0 and its state held,
so valid outputs do not depend on the padding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from odenet import solve
from odenet._errors import InputError
from odenet.batch import IrregularBatch
from odenet.models.fields import MLPField, ModelInputError, check_int, check_model_input


class MaskedField(nn.Module):
    """``active · f(t, h)``: rows with ``active = 0`` stand still (and step cheaply)."""

    def __init__(self, field: nn.Module, active: torch.Tensor):
        super().__init__()
        self.field = field
        self.active = active  # [B] bool

    def forward(self, t, h):
        out = self.field(t, h)
        return out * self.active.to(out.dtype).reshape(-1, *([1] * (out.dim() - 1)))


def evolve(field, h, t_from, t_to, active, *, method, rtol, atol, sensitivity):
    """Evolve each row ``b`` of ``h [B, H]`` from ``t_from[b]`` to ``t_to[b]`` in one solve.

    Rows with ``active[b] = False`` keep their state.  ``t_to`` may lie before
    ``t_from`` (backward in time), row by row.
    """
    if not bool(active.any()):
        return h
    # A resting row still rides along in the batched loop: give it the tiny interval
    # [0, 1e-7] so its first step covers it (on its own interval it would start at the
    # initial-step guess for a zero field and take several growing steps).
    zero = torch.zeros_like(t_from)
    grid = torch.stack(
        [torch.where(active, t_from, zero), torch.where(active, t_to, zero + 1e-7)], dim=1
    )
    sol = solve(
        MaskedField(field, active),
        h,
        grid,
        method=method,
        rtol=rtol,
        atol=atol,
        sensitivity=sensitivity,
    )
    return torch.where(active[:, None], sol.ys[:, 1], h)


def ode_rnn_scan(field, cell, h0, times, values, mask, lengths, **solver):
    """The ODE-RNN recurrence over a padded batch (times monotone along each row).

    Returns ``(before [B, T, H], after [B, T, H])``: the state arriving at each
    observation (evolved by the ODE) and the state after its GRU update.  At
    padding positions both hold the state after the sample's last observation.
    """
    B, T, _ = values.shape
    valid = torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]  # [B, T]
    observed = valid & (mask.sum(dim=-1) > 0)
    h = h0
    before, after = [], []
    for i in range(T):
        if i > 0:
            h = evolve(field, h, times[:, i - 1], times[:, i], valid[:, i], **solver)
        before.append(h)
        x = torch.cat([values[:, i] * mask[:, i], mask[:, i]], dim=-1).to(h.dtype)
        h = torch.where(observed[:, i, None], cell(x, h), h)
        after.append(h)
    return torch.stack(before, dim=1), torch.stack(after, dim=1)


def _check_batch(batch, input_dim: int, name: str = "batch") -> IrregularBatch:
    if not isinstance(batch, IrregularBatch):
        raise InputError(
            f"`{name}` must be an odenet.batch.IrregularBatch, got {type(batch).__name__}; "
            "build one with IrregularBatch.from_lists(times, values)."
        )
    if batch.values.shape[-1] != input_dim:
        raise ModelInputError(
            f"`{name}` has {batch.values.shape[-1]} channels but the model was built with "
            f"input_dim = {input_dim}."
        )
    return batch


def _last_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x [B, T, ...]`` at each row's last valid index -> ``[B, ...]``."""
    idx = (lengths - 1).to(x.device)
    return x[torch.arange(x.shape[0], device=x.device), idx]


def _check_query(query_times, t_ref, name: str, ref_name: str, strict: bool = True) -> torch.Tensor:
    if not isinstance(query_times, torch.Tensor) or query_times.dim() != 2:
        raise InputError(
            f"`{name}` must be a [B, Q] tensor of per-sample times, got "
            f"{getattr(query_times, 'shape', type(query_times).__name__)}."
        )
    if query_times.shape[0] != t_ref.shape[0]:
        raise InputError(
            f"`{name}` has {query_times.shape[0]} rows but the batch has {t_ref.shape[0]} samples."
        )
    if query_times.shape[1] > 1 and not bool((query_times.diff(dim=1) > 0).all()):
        raise InputError(f"`{name}` must be strictly increasing along each row.")
    first = query_times[:, 0].to(t_ref.dtype)
    bad = (first <= t_ref) if strict else (first < t_ref)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        rel = "after" if strict else "at or after"
        raise InputError(
            f"`{name}` must start {rel} each sample's {ref_name}; sample {b} has "
            f"{float(first[b]):.6g} vs {float(t_ref[b]):.6g}."
        )
    return query_times


class ODERNN(nn.Module):
    """ODE-RNN: hidden state evolves by an ODE between observations, GRU jump at each.

    ``h(t_0^-) = 0``; for each observation ``i`` of a sample,
    ``h(t_i^-) = φ_{t_{i-1} → t_i}(h(t_{i-1}^+))`` (the flow of ``dh/dt = f(t, h)``)
    and ``h(t_i^+) = GRU(h(t_i^-), [x_i ⊙ m_i, m_i])`` (kept when nothing is observed).

    Parameters
    ----------
    input_dim : int
        Channels ``D`` of the observations.
    hidden_dim : int
        Hidden state size ``H``.
    output_dim : int
        Size of the readout ``y = W_out h + b_out``.
    field : nn.Module ``f(t, h)``, optional
        The hidden dynamics (default: ``MLPField(hidden_dim, hidden_dim, activation="tanh")``).
    method, rtol, atol, sensitivity
        Passed to :func:`odenet.solve` for every evolution.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        *,
        field: nn.Module | None = None,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        sensitivity: str = "direct",
    ):
        super().__init__()
        self.input_dim = check_int("input_dim", input_dim)
        self.hidden_dim = check_int("hidden_dim", hidden_dim)
        self.output_dim = check_int("output_dim", output_dim)
        self.field = field if field is not None else MLPField(hidden_dim, hidden_dim)
        self.cell = nn.GRUCell(2 * input_dim, hidden_dim)
        self.readout = nn.Linear(hidden_dim, output_dim)
        self.solver = dict(method=method, rtol=rtol, atol=atol, sensitivity=sensitivity)

    def _h0(self, batch) -> torch.Tensor:
        p = self.readout.weight
        return torch.zeros(batch.times.shape[0], self.hidden_dim, dtype=p.dtype, device=p.device)

    def states(self, batch: IrregularBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(before, after)``, each ``[B, T, hidden_dim]``: states before / after each update."""
        _check_batch(batch, self.input_dim)
        return ode_rnn_scan(
            self.field,
            self.cell,
            self._h0(batch),
            batch.times,
            batch.values,
            batch.mask,
            batch.lengths,
            **self.solver,
        )

    def hidden(self, batch: IrregularBatch) -> torch.Tensor:
        """``[B, T, hidden_dim]``: hidden state after each observation's update.

        At padding positions: the state after the sample's last observation.
        """
        return self.states(batch)[1]

    def forward(self, batch: IrregularBatch) -> torch.Tensor:
        """One-step-ahead predictions ``[B, T, output_dim]``.

        Position ``i`` is read out from ``h(t_i^-)``, the state evolved to ``t_i``
        *before* observation ``i`` updates it, so it can be scored on ``x_i``
        (position 0 is read from the initial state).
        """
        before, _ = self.states(batch)
        return self.readout(before)

    def predict(self, batch: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        """Extrapolate: ``[B, Q, output_dim]`` at ``query_times [B, Q]``.

        Each sample's state after its last valid observation is evolved (one
        per-sample solve) to its own query times, which must be strictly
        increasing and later than that observation.
        """
        _, after = self.states(batch)
        t_last = _last_valid(batch.times, batch.lengths)
        _check_query(query_times, t_last, "query_times", "last observation time")
        h_last = _last_valid(after, batch.lengths)
        grid = torch.cat([t_last[:, None], query_times.to(t_last.dtype)], dim=1)
        ys = solve(self.field, h_last, grid, **self.solver).ys[:, 1:]
        return self.readout(ys)


def reverse_batch(batch: IrregularBatch):
    """Each sample's valid observations in reverse order -> ``(times, values, mask)``.

    Times are *decreasing* along each row; padding continues below the sample's
    first time (``t_0 - 1, t_0 - 2, ...``) so every row stays a valid grid.
    """
    B, T = batch.times.shape
    n = batch.lengths.to(batch.times.device)[:, None]
    j = torch.arange(T, device=batch.times.device)[None, :]
    src = torch.where(j < n, n - 1 - j, j)
    times = torch.where(j < n, batch.times.gather(1, src), batch.times[:, :1] - (j - n + 1))
    idx = src[:, :, None].expand_as(batch.values)
    return times, batch.values.gather(1, idx), batch.mask.gather(1, idx)


class LatentODE(nn.Module):
    """Latent ODE with an ODE-RNN recognition network (Rubanova et al. 2019).

    Generative model: ``z_0 ~ N(0, I)``, ``dz/dt = f_dec(t, z)``, and
    ``x_i ~ N(W z(t_i) + c, obs_std² I)`` on observed channels.  Recognition:
    an ODE-RNN run *backward in time* over each sample's valid observations gives
    ``q(z_0 | x) = N(μ, diag exp(logvar))`` at the sample's first time ``t_0``.

    Parameters
    ----------
    input_dim : int
        Channels ``D``.
    latent_dim : int
        Size ``L`` of ``z``.
    hidden_dim : int
        Encoder hidden size and width of both ODE fields.
    obs_std : float
        Observation noise standard deviation (units of the data).
    method, rtol, atol, sensitivity
        Passed to :func:`odenet.solve` (encoder and decoder).
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden_dim: int,
        *,
        obs_std: float = 0.1,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        sensitivity: str = "direct",
    ):
        super().__init__()
        self.input_dim = check_int("input_dim", input_dim)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.hidden_dim = check_int("hidden_dim", hidden_dim)
        if not (isinstance(obs_std, (int, float)) and obs_std > 0 and math.isfinite(obs_std)):
            raise InputError(f"`obs_std` must be a positive finite number, got {obs_std!r}.")
        self.obs_std = float(obs_std)
        self.enc_field = MLPField(hidden_dim, hidden_dim)
        self.enc_cell = nn.GRUCell(2 * input_dim, hidden_dim)
        self.to_posterior = nn.Linear(hidden_dim, 2 * latent_dim)
        self.dec_field = MLPField(latent_dim, hidden_dim)
        self.to_obs = nn.Linear(latent_dim, input_dim)
        self.solver = dict(method=method, rtol=rtol, atol=atol, sensitivity=sensitivity)

    # --- recognition ---------------------------------------------------------------
    def encode(self, batch: IrregularBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu [B, L], logvar [B, L])`` of ``q(z_0 | x)`` at each sample's first time."""
        _check_batch(batch, self.input_dim)
        times, values, mask = reverse_batch(batch)
        p = self.to_obs.weight
        h0 = torch.zeros(times.shape[0], self.hidden_dim, dtype=p.dtype, device=p.device)
        _, after = ode_rnn_scan(
            self.enc_field, self.enc_cell, h0, times, values, mask, batch.lengths, **self.solver
        )
        mu, logvar = self.to_posterior(after[:, -1]).chunk(2, dim=-1)
        return mu, logvar

    # --- generation ----------------------------------------------------------------
    def decode(
        self, z0: torch.Tensor, times: torch.Tensor, *, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean observations ``[B, Q, input_dim]`` along ``dz/dt = f_dec`` from ``z0``.

        Parameters
        ----------
        z0 : Tensor ``[B, L]``, the latent state at ``times[:, 0]``.
        times : Tensor ``[B, Q]``, strictly increasing per row; ``times[:, 0]`` is each
            sample's initial time ``t_0``.
        lengths : Tensor ``[B]``, optional
            Given: only the first ``lengths[b]`` times of row ``b`` are evolved (one
            solve per column, the state held on padding), so outputs at valid
            positions do not depend on the padding.  Otherwise one per-sample solve.
        """
        check_model_input(
            "z0",
            z0,
            model=self,
            shape=f"[B, {self.latent_dim}]",
            ndim=2,
            width=self.latent_dim,
            width_what="latent components",
        )
        if times.dim() != 2 or times.shape[0] != z0.shape[0]:
            raise InputError(
                f"`times` must be [B, Q] with B = {z0.shape[0]}, got shape {tuple(times.shape)}."
            )
        Q = times.shape[1]
        if Q == 1:
            zs = z0[:, None]
        elif lengths is None:
            zs = solve(self.dec_field, z0, times, **self.solver).ys
        else:
            valid = torch.arange(Q, device=lengths.device)[None, :] < lengths[:, None]
            z, out = z0, [z0]
            for i in range(1, Q):
                z = evolve(
                    self.dec_field, z, times[:, i - 1], times[:, i], valid[:, i], **self.solver
                )
                out.append(z)
            zs = torch.stack(out, dim=1)
        return self.to_obs(zs)

    def _sample_z0(self, mu, logvar, n_samples: int) -> torch.Tensor:
        eps = torch.randn(n_samples, *mu.shape, dtype=mu.dtype, device=mu.device)
        return (mu + torch.exp(0.5 * logvar) * eps).reshape(n_samples * mu.shape[0], -1)

    def elbo(
        self, batch: IrregularBatch, *, n_samples: int = 1, kl_weight: float = 1.0
    ) -> torch.Tensor:
        """Evidence lower bound, mean over the batch (maximise it; the loss is ``-elbo``).

        ``ELBO_b = E_q[Σ_{i,d} m_{bid} log N(x_{bid}; x̂_{bid}, obs_std²)] − kl_weight ·
        KL(q(z_0|x_b) ‖ N(0, I))``, the expectation by ``n_samples`` reparameterised
        samples; missing channels and padding (``m = 0``) contribute nothing.
        """
        check_int("n_samples", n_samples)
        mu, logvar = self.encode(batch)
        B, T, D = batch.values.shape
        z0 = self._sample_z0(mu, logvar, n_samples)
        xhat = self.decode(
            z0,
            batch.times.repeat(n_samples, 1),
            lengths=batch.lengths.repeat(n_samples),
        ).reshape(n_samples, B, T, D)
        loglik = gaussian_loglik(batch.values, xhat, batch.mask, self.obs_std).mean(dim=0)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)
        return (loglik - kl_weight * kl).mean()

    def sample_predictions(
        self, batch: IrregularBatch, query_times: torch.Tensor, n_samples: int = 20
    ) -> torch.Tensor:
        """Posterior predictive means ``[n_samples, B, Q, D]`` at ``query_times [B, Q]``.

        Each sample's ``z_0 ~ q(z_0 | x)`` is decoded from its first time ``t_0``;
        query times must be ≥ ``t_0`` and strictly increasing (for an uncertainty band
        take quantiles over the first dimension).
        """
        check_int("n_samples", n_samples)
        mu, logvar = self.encode(batch)
        t0 = batch.times[:, 0]
        _check_query(query_times, t0, "query_times", "first time t0", strict=False)
        q = query_times.to(t0.dtype)
        starts_at_t0 = q[:, 0] == t0
        if bool(starts_at_t0.all()):
            grid, drop = q, 0
        elif not bool(starts_at_t0.any()):
            grid, drop = torch.cat([t0[:, None], q], dim=1), 1
        else:
            raise InputError(
                "`query_times` must either start at every sample's first time t0 or after it "
                "in every row (not a mix)."
            )
        z0 = self._sample_z0(mu, logvar, n_samples)
        x = self.decode(z0, grid.repeat(n_samples, 1))[:, drop:]
        return x.reshape(n_samples, *q.shape, self.input_dim)

    def forward(self, batch: IrregularBatch) -> torch.Tensor:
        """Reconstruction ``[B, T, D]`` along the posterior-mean path (``z_0 = μ``)."""
        mu, _ = self.encode(batch)
        return self.decode(mu, batch.times, lengths=batch.lengths)


def gaussian_loglik(x, xhat, mask, std: float) -> torch.Tensor:
    """``Σ_{t,d} m · log N(x; x̂, std²)`` over the last two dims -> ``[..., B]``."""
    z = (x - xhat) / std
    ll = -0.5 * z.pow(2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return (ll * mask).sum(dim=(-2, -1))
