"""Neural controlled differential equations (Kidger et al. 2020) on a cubic-spline path.

A neural CDE evolves a hidden state ``z`` driven by a continuous path ``X`` built from
the observations::

    dz/dt = f_θ(z) · dX/dt,       z(t_0) = ζ_θ(X(t_0)),       y(t) = ℓ_θ(z(t))

with ``f_θ(z)`` an ``[H, C]`` matrix and ``X(t) ∈ ℝ^C`` the observed channels plus
time (``t / τ``) as the last channel.  The right-hand side is an ordinary vector field
of ``(t, z)`` (:class:`CDEField`, a :class:`~odenet.models.fields.DrivenField` bound
to ``dX/dt``), so the one step loop of :func:`odenet.solve` integrates it; there is
no separate integrator.

The path is the **natural cubic spline** of each channel through that channel's own
observed points (:class:`NaturalCubicSpline`), the interpolation Kidger et al. use and
torchcde's handling of missing values (a channel missing at a time is interpolated
from its neighbours, not zero-filled).  Outside a channel's first/last observation the
channel is held constant (``dX_c/dt = 0``); the time channel keeps increasing, so
beyond the data the CDE is an autonomous neural ODE ``dz/dt = f_θ(z)[:, time] / τ``
(that is what extrapolates).

The natural spline is *not causal*: its value between two observations depends on
both neighbours (and, weakly, on every knot — the system for the second derivatives
is global).  That is the point here: the model conditions on a whole context window
and interpolates two-sided.  For online use (a state that may only see the past) a
Hermite cubic with backward differences or the rectilinear path would be the causal
choice; they are not implemented.

Reference: P. Kidger, J. Morrill, J. Foster, T. Lyons, *Neural Controlled
Differential Equations for Irregular Time Series*, NeurIPS 2020.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import solve_banded
from torch import nn

from odenet import solve
from odenet._errors import InputError
from odenet.models.fields import DrivenField, check_int


def _natural_second_derivatives(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``M_k = S''(x_k)`` of the natural cubic spline through ``(x_k, y_k)``.

    Natural: ``M_0 = M_{n-1} = 0``.

    The continuity of ``S'`` at the interior knots is the tridiagonal system
    ``h_{k-1} M_{k-1} + 2(h_{k-1} + h_k) M_k + h_k M_{k+1} = 6(Δ_k − Δ_{k-1})`` with
    ``Δ_k = (y_{k+1} − y_k)/h_k``, solved as a banded system.
    """
    n = len(x)
    M = np.zeros(n)
    if n < 3:
        return M
    h = np.diff(x)
    delta = np.diff(y) / h
    ab = np.zeros((3, n - 2))
    ab[0, 1:] = h[1:-1]
    ab[1] = 2 * (h[:-1] + h[1:])
    ab[2, :-1] = h[1:-1]
    M[1:-1] = solve_banded((1, 1), ab, 6 * np.diff(delta))
    return M


def _channel_pieces(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Taylor coefficients ``[G, 4]`` of one channel's spline at each ``grid`` point.

    Row ``j`` holds ``(S, S', S''/2, S'''/6)`` of the piece valid on ``[grid_j,
    grid_{j+1})`` (right limits at the knots), so ``S(t) = Σ_i c_ji (t − grid_j)^i``
    there.  ``grid`` must contain every knot ``x``.  Before ``x_0`` and from
    ``x_{n-1}`` on the spline is constant (``y_0``, ``y_{n-1}``); no knot: 0.
    """
    out = np.zeros((len(grid), 4))
    if len(x) == 0:
        return out
    out[:, 0] = np.where(grid < x[0], y[0], y[-1])
    if len(x) == 1:
        return out
    M = _natural_second_derivatives(x, y)
    h = np.diff(x)
    a, c = y[:-1], M[:-1] / 2
    b = np.diff(y) / h - h * (2 * M[:-1] + M[1:]) / 6
    d = np.diff(M) / (6 * h)
    inside = (grid >= x[0]) & (grid < x[-1])
    k = np.clip(np.searchsorted(x, grid, side="right") - 1, 0, len(x) - 2)[inside]
    u = grid[inside] - x[k]
    out[inside] = np.stack([a[k] + u * (b[k] + u * (c[k] + u * d[k])),
                            b[k] + u * (2 * c[k] + 3 * u * d[k]),
                            c[k] + 3 * u * d[k], d[k]], axis=-1)  # fmt: skip
    return out


class NaturalCubicSpline:
    """Per-sample, per-channel natural cubic spline through the observed points.

    Parameters
    ----------
    times : Tensor [B, T]
        Strictly increasing per row (padding included, as in
        :class:`~odenet.batch.IrregularBatch`).
    values : Tensor [B, T, C]
    mask : Tensor [B, T, C], optional
        1 where a channel is observed; each channel's spline passes through its own
        observed points only (default: everything observed).

    Notes
    -----
    Every channel is re-expanded on its row's grid ``times[b]``: interval ``j`` is
    ``(t_j, t_{j+1}]`` and the last one ``(t_{T-1}, ∞)``, so evaluation at a time
    per row is one ``searchsorted`` and a cubic, whatever the channel's own knots.
    At a knot the path and its slope are the left limits: a solve's step that ends on
    a channel's last observation reads the spline's slope there, not the held
    constant's zero.  A channel observed first after its row's start (or last before
    its row's end, with a later output) has a kink there, where the held constant
    meets the spline; fixed steps through it are first order, adaptive ones (the
    default) are not affected.
    Coefficients are data (no gradient flows into the observations).
    """

    def __init__(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None):
        if times.dim() != 2 or values.dim() != 3 or values.shape[:2] != times.shape:
            raise InputError(
                f"`times` must be [B, T] and `values` [B, T, C] with the same B, T; got "
                f"{tuple(times.shape)} and {tuple(values.shape)}."
            )
        if mask is None:
            mask = torch.ones_like(values)
        if mask.shape != values.shape:
            raise InputError(f"`mask` must have the shape of `values` {tuple(values.shape)}, "
                             f"got {tuple(mask.shape)}.")  # fmt: skip
        if times.shape[1] > 1 and not bool((times.diff(dim=1) > 0).all()):
            raise InputError("spline knots (`times`) must be strictly increasing along each row.")
        t = times.detach().cpu().double().numpy()
        v = values.detach().cpu().double().numpy()
        m = mask.detach().cpu().numpy() > 0
        B, T, C = v.shape
        coeffs = np.zeros((B, T, C, 4))
        for b in range(B):
            for c in range(C):
                obs = m[b, :, c]
                coeffs[b, :, c] = _channel_pieces(t[b, obs], v[b, obs, c], t[b])
        self.times = times
        self.coeffs = torch.as_tensor(coeffs, dtype=values.dtype, device=values.device)

    def _piece(self, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Coefficients ``[B, Q, C, 4]``, offsets ``[B, Q, 1]`` and times ``[B, Q]``."""
        B = self.times.shape[0]
        tt = torch.as_tensor(t, dtype=self.times.dtype, device=self.times.device)
        tq = (tt.expand(B) if tt.dim() == 0 else tt).reshape(B, -1)
        # at a knot, the piece that ends there (its left limit): a solve ends its last
        # step on the last observation, where a channel's path turns constant, and read
        # the constant's zero slope from the right (fixed steps were first order there)
        j = torch.searchsorted(self.times.contiguous(), tq.contiguous(), right=False)
        j = (j - 1).clamp(0, self.times.shape[1] - 1)
        # before a row's first knot every channel is held at its first value
        u = (tq - self.times.gather(1, j)).clamp_min(0)
        cf = self.coeffs[torch.arange(B, device=j.device)[:, None], j]
        return cf, u.to(cf.dtype)[..., None], tq

    @staticmethod
    def _shaped(x: torch.Tensor, t) -> torch.Tensor:
        return x[:, 0] if torch.as_tensor(t).dim() < 2 else x

    def __call__(self, t) -> torch.Tensor:
        """``X(t)`` ``[B, C]`` for ``t`` 0-dim or ``[B]``; ``[B, Q, C]`` for ``t [B, Q]``."""
        cf, u, _ = self._piece(t)
        x = cf[..., 0] + u * (cf[..., 1] + u * (cf[..., 2] + u * cf[..., 3]))
        return self._shaped(x, t)

    def derivative(self, t) -> torch.Tensor:
        """``dX/dt`` shaped like :meth:`__call__`'s output (0 where a channel is held)."""
        cf, u, tq = self._piece(t)
        d = cf[..., 1] + u * (2 * cf[..., 2] + 3 * u * cf[..., 3])
        d = torch.where((tq < self.times[:, :1])[..., None], torch.zeros_like(d), d)
        return self._shaped(d, t)


class CDEField(DrivenField):
    """``dz/dt = f_θ(z) · dX/dt``: a neural CDE as an ordinary vector field of ``(t, z)``.

    ``f_θ`` is an MLP ``H → width → H·C`` with a final ``tanh`` (bounded, as in Kidger
    et al., so ``z`` grows at most linearly in the path's length).  Bind the path's
    derivative with ``field.bind(spline_derivative)``, a callable ``t -> [B, C]``.

    Parameters
    ----------
    hidden, channels, width : int
        ``H``, ``C`` (path channels, time included), MLP width.

    Shapes
    ------
    ``forward(t, z)``: ``t`` 0-dim or ``[B]``, ``z`` ``[B, H]`` -> ``[B, H]``.
    """

    def __init__(self, hidden: int, channels: int, width: int = 32):
        super().__init__()
        self.hidden = check_int("hidden", hidden)
        self.channels = check_int("channels", channels)
        check_int("width", width)
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.Softplus(),
                                 nn.Linear(width, hidden * channels), nn.Tanh())  # fmt: skip

    def matrix(self, z: torch.Tensor) -> torch.Tensor:
        """``f_θ(z)`` ``[B, H, C]``."""
        return self.net(z).reshape(*z.shape[:-1], self.hidden, self.channels)

    def drive(self, t, z, dX):
        return (self.matrix(z) @ dX.to(z.dtype)[..., None])[..., 0]


class _Driven(nn.Module):
    """``f(t, z) = field.drive(t, z, dX(t))``: a :class:`CDEField` with one call's path
    (its parameters are this module's, so the adjoint finds them)."""

    def __init__(self, field: CDEField, dX):
        super().__init__()
        self.field, self.dX = field, dX

    def forward(self, t, z):
        return self.field.drive(t, z, self.dX(t))


class NeuralCDE(nn.Module):
    """Neural CDE ``(times, values, mask) ↦ y`` at output times, solved by :func:`odenet.solve`.

    Parameters
    ----------
    input_dim : int
        Observed channels ``D`` (the path adds time as channel ``D + 1``).
    hidden : int
        Size ``H`` of ``z``; also the width of ``f_θ``.
    output_dim : int
        Channels of the linear readout (default ``input_dim``).
    skip : bool
        Output ``X(t) + ℓ_θ(z(t))`` instead of ``ℓ_θ(z(t))`` (needs ``output_dim =
        input_dim``): the readout learns a *correction* to the spline path, zero at
        initialisation, so an untrained model interpolates like the natural spline and
        extrapolates like LOCF (the path is held past the last observation) — without
        it, ``z`` must first learn to reproduce the data it was given.
    time_scale : float
        ``τ``: the time channel is ``t / τ`` (choose it near the series' span, so the
        time channel moves by O(1) like the normalised values).
    method, rtol, atol, sensitivity, step_size :
        Passed to :func:`odenet.solve`.

    Shapes
    ------
    ``forward(times [B, T], values [B, T, D], mask [B, T, D], out_times [B, Q])`` ->
    ``[B, Q, output_dim]``.  ``out_times`` must be strictly increasing per row; the
    solve starts at ``min(times[:, 0], out_times[:, 0])``.  ``X`` of :meth:`path` also
    takes ``t [B, Q]``.
    """

    def __init__(self, input_dim: int, hidden: int = 32, output_dim: int | None = None, *,
                 skip: bool = False, time_scale: float = 1.0, method: str = "dopri5",
                 rtol: float = 1e-3, atol: float = 1e-4, sensitivity: str = "direct",
                 step_size: float | None = None):  # fmt: skip
        super().__init__()
        self.input_dim = check_int("input_dim", input_dim)
        out = self.input_dim if output_dim is None else check_int("output_dim", output_dim)
        self.initial = nn.Linear(input_dim + 1, hidden)
        self.field = CDEField(hidden, input_dim + 1, hidden)
        self.readout = nn.Linear(hidden, out)
        if skip and out != self.input_dim:
            raise InputError(f"`skip=True` adds the path to the readout, so `output_dim` must be "
                             f"`input_dim` = {input_dim}, got {out}.")  # fmt: skip
        self.skip = bool(skip)
        if self.skip:
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        self.register_buffer("time_scale", torch.tensor(float(time_scale), dtype=torch.float64))
        self.solver = dict(method=method, rtol=rtol, atol=atol, step_size=step_size,
                           sensitivity=sensitivity)  # fmt: skip

    def path(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None):
        """``(X, dX/dt)`` callables of ``t [B]`` -> ``[B, D + 1]`` (time last)."""
        spline = NaturalCubicSpline(times, values, mask)
        tau = self.time_scale.to(values.dtype)

        def X(t):
            x = spline(t)
            tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1])
            return torch.cat([x, (tt / tau)[..., None]], dim=-1)

        def dX(t):
            d = spline.derivative(t)
            return torch.cat([d, (torch.ones_like(d[:, :1]) / tau)], dim=-1)

        return X, dX

    def forward(self, times, values, mask, out_times) -> torch.Tensor:
        if out_times.dim() != 2 or out_times.shape[0] != times.shape[0]:
            raise InputError(f"`out_times` must be [B, Q] with B = {times.shape[0]}, got "
                             f"{tuple(out_times.shape)}.")  # fmt: skip
        X, dX = self.path(times, values, mask)
        t0 = torch.minimum(times[:, 0], out_times[:, 0])
        z0 = self.initial(X(t0))
        # an output at t0 itself moves just past it: the solve's times must increase (by at
        # least one float spacing: 1e-9 relative vanishes in float32), and stay before the
        # next output (a query merged at the first observation sits 1e-9 past it already)
        up = torch.nextafter(t0, torch.full_like(t0, float("inf")))
        nudge = torch.maximum(1e-9 * (1 + t0.abs()), up - t0)
        if out_times.shape[1] > 1:
            nudge = torch.minimum(nudge, (out_times[:, 1] - t0) / 2)
        t1 = torch.maximum(out_times[:, 0], t0 + nudge)
        grid = torch.cat([t0[:, None], t1[:, None], out_times[:, 1:]], dim=1)
        # the field with this call's path, not bound into self.field: the adjoint and
        # checkpoint backward passes call it after forward has returned (an unbind
        # there made them raise "no input path")
        driven = _Driven(self.field, dX)
        zs = solve(driven, z0, grid, **{k: v for k, v in self.solver.items()
                                        if v is not None}).ys  # fmt: skip
        out = self.readout(zs[:, 1:])
        return out + X(grid[:, 1:])[..., : self.input_dim] if self.skip else out
