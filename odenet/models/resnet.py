"""ResNet = a scheme stepped over depth: block ℓ is one step from ``t_ℓ`` to ``t_{ℓ+1}``."""

from __future__ import annotations

import math

import torch
from torch import nn

from odenet import step
from odenet._errors import InputError
from odenet.models.fields import (
    LayerwiseField,
    ModelInputError,
    check_int,
    check_model_input,
    field_width,
)
from odenet.tableaus import ButcherTableau, tableau


class ResNet(nn.Module):
    """``L`` blocks, each one step of ``method`` for ``dh/dt = f(t, h)`` on ``[t0, t0 + T]``.

    With ``Δt = T / L`` and ``t_ℓ = t0 + ℓ Δt``, block ℓ maps ``h_ℓ`` to
    ``h_{ℓ+1} = Φ(t_ℓ, h_ℓ, Δt)``, the step map of the scheme (:func:`odenet.step`):

    - ``"euler"``: ``h + Δt f(t_ℓ, h)`` — exactly the residual block;
    - ``"midpoint"``, ``"rk4"``, ...: other explicit architectures, same parameters;
    - ``"backward_euler"``, ``"trapezoid"``, ...: implicit blocks (a per-sample
      Newton solve inside each block, differentiable by the implicit function theorem).

    Parameters
    ----------
    field : nn.Module ``f(t, h)``
        Weight-tied (one field for every block) or a :class:`LayerwiseField`
        (``θ(t)`` piecewise constant: block ℓ uses the piece containing
        ``[t_ℓ, t_{ℓ+1})``; ``depth`` must then be a multiple of its ``n_layers``).
    depth : int
        Number of blocks ``L``.
    method : str or ButcherTableau
        The scheme (any name in :func:`odenet.methods`).
    horizon : float
        Total time ``T`` (``Δt = T / L``).
    t0 : float
        Initial time.

    Shapes
    ------
    ``forward(h)``: ``[B, dim]`` -> ``[B, dim]``; ``trajectory(h)`` -> ``[L + 1, B, dim]``.
    """

    def __init__(
        self,
        field: nn.Module,
        depth: int,
        method: str | ButcherTableau = "euler",
        horizon: float = 1.0,
        *,
        t0: float = 0.0,
    ):
        super().__init__()
        if not callable(field):
            raise InputError(f"`field` must be callable as f(t, h), got {type(field).__name__}.")
        self.field = field
        self.depth = check_int("depth", depth)
        self.tableau = tableau(method)  # validates the name
        self.method = self.tableau.name
        if not (isinstance(horizon, (int, float)) and horizon > 0 and math.isfinite(horizon)):
            raise InputError(f"`horizon` must be a positive finite number, got {horizon!r}.")
        self.horizon = float(horizon)
        self.t0 = float(t0)
        if isinstance(field, LayerwiseField):
            if depth % field.n_layers != 0:
                raise InputError(
                    f"`depth` = {depth} is not a multiple of the field's n_layers = "
                    f"{field.n_layers}; each block must lie inside one piece of θ(t)."
                )
            if not (math.isclose(field.horizon, self.horizon) and math.isclose(field.t0, self.t0)):
                raise InputError(
                    f"the LayerwiseField covers [{field.t0}, {field.t0 + field.horizon}] but the "
                    f"ResNet steps over [{self.t0}, {self.t0 + self.horizon}]; use the same "
                    "`horizon` and `t0`."
                )

    @property
    def dt(self) -> float:
        """Step ``Δt = T / L`` (time per block)."""
        return self.horizon / self.depth

    def times(self) -> torch.Tensor:
        """Block boundaries ``t_0 … t_L`` ([L + 1], float64)."""
        return self.t0 + self.dt * torch.arange(self.depth + 1, dtype=torch.float64)

    def block_field(self, layer: int) -> nn.Module:
        """The field block ``layer`` steps (its own piece for a LayerwiseField)."""
        if isinstance(self.field, LayerwiseField):
            return self.field.piece(layer * self.field.n_layers // self.depth)
        return self.field

    def block(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Block ``layer``: one step of the scheme from ``t_layer`` (``[B, dim]`` -> same)."""
        if not (isinstance(layer, int) and 0 <= layer < self.depth):
            raise ModelInputError(f"`layer` must be an int in 0 … {self.depth - 1}, got {layer!r}.")
        t = self.t0 + layer * self.dt
        return step(self.block_field(layer), t, h, self.dt, self.tableau, batched=True)

    def step_maps(self) -> list:
        """The blocks as step maps ``h ↦ h_{ℓ+1}`` (for :mod:`odenet.stability`)."""
        return [lambda h, layer=layer: self.block(layer, h) for layer in range(self.depth)]

    def _check(self, h):
        width = field_width(self.field)
        return check_model_input(
            "h",
            h,
            model=self,
            shape=f"[B, {width or 'dim'}]",
            width=width,
            width_what="features",
            # a field of unknown kind may convert its input itself
            check_dtype=width is not None,
        )

    def trajectory(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states after every block, ``[L + 1, B, dim]`` (``[0]`` is the input)."""
        self._check(h)
        hs = [h]
        for layer in range(self.depth):
            h = self.block(layer, h)
            hs.append(h)
        return torch.stack(hs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h [B, dim]`` through the ``L`` blocks -> ``[B, dim]``.

        Raises :class:`~odenet.models.ModelInputError` for a non-tensor, a width other
        than the field's, or a dtype/device other than the parameters'.
        """
        self._check(h)
        for layer in range(self.depth):
            h = self.block(layer, h)
        return h

    # ``to_neural_ode(**solver)`` is :func:`odenet.models.convert.resnet_to_neural_ode`,
    # installed as a method by that module (which imports both classes; neither class
    # module imports the other).

    def extra_repr(self) -> str:
        return f"depth={self.depth}, method={self.method!r}, horizon={self.horizon}, t0={self.t0}"
