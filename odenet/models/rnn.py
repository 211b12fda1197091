"""RNN = a driven ODE stepped once per input sample.

``dh/dt = −h + σ(W h + U x(t) + b)``.  One forward-Euler step of ``Δt = 1`` from
``t_k`` with the input held at ``x_k`` is ``h_{k+1} = σ(W h_k + U x_k + b)``: the
vanilla RNN.  Other ``Δt`` give the leaky / continuous-time RNN
``h_{k+1} = (1 − Δt) h_k + Δt σ(·)``, other schemes other recurrent cells.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from odenet import solve, step
from odenet._errors import InputError
from odenet.models.fields import (
    DrivenField,
    InputPath,
    ModelInputError,
    RNNField,
    check_int,
    check_model_input,
)
from odenet.tableaus import ButcherTableau, tableau


class _Held(nn.Module):
    """``f(t, h) = drive(t, h, x_k)``: the driven field with its input frozen over one step."""

    def __init__(self, field: DrivenField, x: torch.Tensor):
        super().__init__()
        self.field = field
        self.x = x

    def forward(self, t, h):
        return self.field.drive(t, h, self.x)


class RNN(nn.Module):
    """A recurrent network as a scheme stepping a driven field once per input.

    Input ``k`` arrives at ``t_k = t0 + k Δt``; the step from ``t_k`` to ``t_{k+1}``
    sees ``x(t) = x_k`` (``interpolation="hold"``: every stage of the scheme uses
    ``x_k``) or the linear interpolant of the samples (``"linear"``).

    Parameters
    ----------
    input_dim, hidden_dim : int
    dt : float
        Time per input (``Δt = 1`` with ``"euler"``: the vanilla RNN).
    method : str or ButcherTableau
        Scheme for each step (``"euler"``, ``"rk4"``, ``"backward_euler"``, ...).
    activation : str
        ``σ`` of the default :class:`RNNField`.
    field : DrivenField, optional
        Your own driven field (default ``RNNField(input_dim, hidden_dim)``).
    interpolation : ``"hold" | "linear"``
    t0 : float

    Shapes
    ------
    ``forward(xs [B, N, input_dim], h0 [B, hidden_dim] = 0)`` -> ``[B, N, hidden_dim]``,
    the states ``h_1 … h_N`` after each input.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        *,
        dt: float = 1.0,
        method: str | ButcherTableau = "euler",
        activation: str = "tanh",
        field: DrivenField | None = None,
        interpolation: str = "hold",
        t0: float = 0.0,
    ):
        super().__init__()
        self.input_dim = check_int("input_dim", input_dim)
        self.hidden_dim = check_int("hidden_dim", hidden_dim)
        if not (isinstance(dt, (int, float)) and dt > 0 and math.isfinite(dt)):
            raise InputError(f"`dt` must be a positive finite number, got {dt!r}.")
        if interpolation not in InputPath.INTERPOLATIONS:
            raise InputError(f"`interpolation` must be 'hold' or 'linear', got {interpolation!r}.")
        if field is not None and not isinstance(field, DrivenField):
            raise InputError(
                f"`field` must be a DrivenField (f(t, h, x)), got {type(field).__name__}."
            )
        self.field = (
            field if field is not None else RNNField(input_dim, hidden_dim, activation=activation)
        )
        self.dt = float(dt)
        self.tableau = tableau(method)
        self.method = self.tableau.name
        self.interpolation = interpolation
        self.t0 = float(t0)

    def _check_inputs(self, xs, h0):
        check_model_input(
            "xs",
            xs,
            model=self,
            shape=f"[B, N, {self.input_dim}]",
            ndim=3,
            width=self.input_dim,
            width_what="input channels",
        )
        if xs.shape[1] == 0:
            raise ModelInputError(
                f"`xs` has no time steps (shape {tuple(xs.shape)}); an RNN needs at least one "
                "input per sequence, N >= 1."
            )
        if h0 is None:
            return xs.new_zeros(xs.shape[0], self.hidden_dim)
        check_model_input(
            "h0",
            h0,
            model=self,
            shape=f"[{xs.shape[0]}, {self.hidden_dim}]",
            ndim=2,
            width=self.hidden_dim,
            width_what="hidden units",
        )
        if h0.shape != (xs.shape[0], self.hidden_dim):
            raise ModelInputError(
                f"`h0` must be [{xs.shape[0]}, {self.hidden_dim}], got {tuple(h0.shape)}."
            )
        return h0

    def input_times(self, n: int, dtype=torch.float64) -> torch.Tensor:
        """``t_k = t0 + k Δt`` for ``k = 0 … n-1``."""
        return self.t0 + self.dt * torch.arange(n, dtype=dtype)

    def forward(self, xs: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        h = self._check_inputs(xs, h0)
        N = xs.shape[1]
        if self.interpolation == "linear":
            path = InputPath(self.input_times(N, xs.dtype).to(xs.device), xs, "linear")
            self.field.bind(path)
        hs = []
        for k in range(N):
            t = self.t0 + k * self.dt
            f = self.field if self.interpolation == "linear" else _Held(self.field, xs[:, k])
            h = step(f, t, h, self.dt, self.tableau, batched=True)
            hs.append(h)
        return torch.stack(hs, dim=1)

    def continuous(
        self,
        xs: torch.Tensor,
        t: torch.Tensor,
        h0: torch.Tensor | None = None,
        **solve_options,
    ) -> torch.Tensor:
        """The ODE the RNN discretizes, solved adaptively: ``h(t)`` at times ``t [T]``.

        The input path is the samples ``xs`` at ``t_k = t0 + k Δt``, held or linearly
        interpolated; ``solve_options`` go to :func:`odenet.solve` (``method``,
        ``rtol``, ...).  Returns ``[T, B, hidden_dim]``.
        """
        h = self._check_inputs(xs, h0)
        times = self.input_times(xs.shape[1], xs.dtype).to(xs.device)
        self.field.bind(InputPath(times, xs, self.interpolation))
        return solve(self.field, h, t, **solve_options).ys
