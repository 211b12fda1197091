"""Neural ODE: the adaptive solve of a learnable field, as a module."""

from __future__ import annotations

import math

import torch
from torch import nn

from odenet import solve
from odenet._errors import InputError
from odenet.models.fields import check_model_input, field_width
from odenet.tableaus import ButcherTableau


class NeuralODE(nn.Module):
    """``y0 ↦ (y(t_1), …, y(t_T))`` for ``dy/dt = f(t, y)``, solved by :func:`odenet.solve`.

    Parameters
    ----------
    field : nn.Module ``f(t, y)``
    method : str or ButcherTableau
        Adaptive by default (``"dopri5"``); a fixed-step method needs ``step_size``.
    rtol, atol : float
        Tolerances of the adaptive steps.
    sensitivity : ``"direct" | "adjoint" | "checkpoint"``
        How gradients flow back through the solve.
    step_size : float, optional
        Fixed grid ``t0 + k·step_size`` instead of adaptive steps.
    **solve_options
        Any further keyword of :func:`odenet.solve` (``max_steps``, ``controller``, ...).

    Attributes
    ----------
    last_solution : odenet.Solution or None
        The last forward solve (``stats``: ``nfe``, ``steps``, ...).
    """

    def __init__(
        self,
        field: nn.Module,
        *,
        method: str | ButcherTableau = "dopri5",
        rtol: float = 1e-6,
        atol: float = 1e-8,
        sensitivity: str = "direct",
        step_size: float | None = None,
        **solve_options,
    ):
        super().__init__()
        if not callable(field):
            raise InputError(f"`field` must be callable as f(t, y), got {type(field).__name__}.")
        self.field = field
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.sensitivity = sensitivity
        self.step_size = step_size
        self.solve_options = solve_options
        self.last_solution = None

    def solve(self, y0: torch.Tensor, t: torch.Tensor):
        """The full :class:`odenet.Solution` of the solve from ``y0`` at ``t[..., 0]``.

        Raises
        ------
        odenet.models.ModelInputError
            ``y0`` is not a floating tensor, its last dimension is not the field's
            width (when the field declares one, e.g. :class:`MLPField`), or its dtype
            or device differs from the field's parameters.
        """
        width = field_width(self.field)
        check_model_input(
            "y0",
            y0,
            model=self,
            shape=f"[B, {width or 'dim'}]",
            width=width,
            width_what="state components",
            # a field of unknown kind may convert its input itself
            check_dtype=width is not None,
        )
        sol = solve(
            self.field,
            y0,
            t,
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
            sensitivity=self.sensitivity,
            step_size=self.step_size,
            **self.solve_options,
        )
        self.last_solution = sol
        return sol

    def forward(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The trajectory at the requested times.

        Parameters
        ----------
        y0 : Tensor ``[B, D]``, the state at ``t[0]`` (or ``t[:, 0]`` per sample).
        t : Tensor ``[T]`` (shared times) or ``[B, T]`` (per-sample, irregular times;
            each row its own adaptive steps), strictly monotone along the last dim.

        Returns
        -------
        Tensor ``[T, B, D]`` for shared times, ``[B, T, D]`` for per-sample times.
        """
        return self.solve(y0, t).ys

    def flow(self, y0: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
        """``y(t1)`` from ``y(t0) = y0`` (``[B, D]`` -> ``[B, D]``)."""
        if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
            raise InputError(f"`t0` and `t1` must be finite and distinct, got {t0!r}, {t1!r}.")
        dtype = y0.dtype if y0.is_floating_point() else torch.get_default_dtype()
        t = torch.tensor([t0, t1], dtype=dtype, device=y0.device)
        return self.forward(y0, t)[-1]

    # ``to_resnet(depth, method=None, horizon=None, *, t0=None)`` is
    # :func:`odenet.models.convert.neural_ode_to_resnet`, installed as a method by that
    # module: the conversions live in one module that imports both classes, so neither
    # class module imports the other (no import cycle).
