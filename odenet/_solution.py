"""The result of a solve."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch

from odenet._errors import (
    MaxStepsError,
    NewtonConvergenceError,
    NonFiniteError,
    SolverError,
    StepSizeUnderflowError,
)


class Status(enum.IntEnum):
    """How a solve (or one sample of it) ended; each member carries its message and
    the error class raised for it (``None`` for success).

    The int values are what ``Solution.status`` holds, per sample.
    """

    message: str
    error: type[SolverError] | None

    def __new__(cls, value: int, message: str, error: type[SolverError] | None):
        member = int.__new__(cls, value)
        member._value_ = value
        member.message = message
        member.error = error
        return member

    SUCCESS = 0, "success", None
    MAX_STEPS = (
        1,
        "maximum number of steps reached — increase `max_steps`",
        MaxStepsError,
    )
    STEP_UNDERFLOW = (
        2,
        "step size underflow — the steps shrank below the smallest allowed (the round-off "
        "of t, or `min_step`): the solution may "
        "blow up there, leave the region where the field holds, meet a discontinuity of "
        "f, or the problem be stiff (for an explicit method)",
        StepSizeUnderflowError,
    )
    NON_FINITE = (
        3,
        "the state or the vector field became NaN/inf — with a fixed step this usually "
        "means the step is outside the method's stability region: reduce `step_size` or "
        "use an implicit method",
        NonFiniteError,
    )
    NEWTON_FAILED = (
        4,
        "Newton's method for the implicit stages did not converge even for small steps — "
        "the vector field is discontinuous, non-finite or nearly singular near this time "
        "(a blow-up, a near-collision of bodies, a division by a vanishing quantity): "
        "check it there, or raise `newton_max_iter`",
        NewtonConvergenceError,
    )
    TERMINATED = (
        6,
        "a terminal event occurred: the integration stopped there (later outputs are NaN)",
        None,
    )
    NON_FINITE_STEP = (
        5,
        "the step size or the error estimate is NaN/inf — the vector field returned "
        "NaN/inf at a trial point of the initial-step estimate, a user `norm` returned "
        "NaN, the state's dtype cannot represent the error scale, or a component's error "
        "scale atol + rtol·|y| is 0 (atol = 0 where a component is 0); pass `first_step`, "
        "check `f` and `norm`, give a positive `atol`, or use float32/float64",
        NonFiniteError,
    )


# the int codes, for the loops' tensors of per-row status
SUCCESS = int(Status.SUCCESS)
MAX_STEPS = int(Status.MAX_STEPS)
STEP_UNDERFLOW = int(Status.STEP_UNDERFLOW)
NON_FINITE = int(Status.NON_FINITE)
NEWTON_FAILED = int(Status.NEWTON_FAILED)
NON_FINITE_STEP = int(Status.NON_FINITE_STEP)
TERMINATED = int(Status.TERMINATED)


@dataclass
class EventRecord:
    """Every event crossing of a solve, in the order they happened.

    For a shared grid: ``t`` ``[M]`` (times), ``y`` ``[M, *y0.shape]`` (states) and
    ``which`` ``[M]`` (index of the event function in ``events``).  For per-sample
    grids: lists with one such entry per sample.  ``terminal_state``: the state at
    a terminal crossing, with its autograd graph (per sample; ``None`` if none fired).
    """

    t: Any
    y: Any
    which: Any
    # the state at each row's terminal crossing with its autograd graph (per row;
    # None where no terminal event fired): what odenet.odeint_event differentiates
    terminal_state: Any = None

    @classmethod
    def from_log(cls, log, direction, per_sample: bool, shape, terminal=None) -> EventRecord:
        ts, ys, ws = [], [], []
        row = tuple(shape[1:]) if per_sample else tuple(shape)
        for k in range(log.K):
            d = float(direction[k].detach())
            # a crossing's time is a float, or a 0-dim tensor with its autograd graph
            times = [torch.as_tensor(t, dtype=direction.dtype) for t in log.t[k]]
            ts.append(d * torch.stack(times) if times else torch.empty(0, dtype=direction.dtype))
            ys.append(torch.stack(log.y[k]).reshape(-1, *row) if log.y[k] else torch.empty(0, *row))
            ws.append(torch.tensor(log.which[k], dtype=torch.long))
        term = [None] * log.K
        for k, y in (terminal or {}).items():
            term[k] = y.reshape(row)
        if per_sample:
            return cls(ts, ys, ws, term)
        return cls(ts[0], ys[0], ws[0], term[0])


@dataclass
class Solution:
    """What :func:`odenet.solve` returns.

    Attributes
    ----------
    ys : Tensor
        ``[T, *y0.shape]`` for a shared time grid, ``[B, T, *y0.shape[1:]]`` for
        per-sample grids ``t`` of shape ``[B, T]``.  Outputs a failed solve did not
        reach are NaN.
    ts : Tensor
        The output times, as given (``[T]`` or ``[B, T]``).
    stats : dict
        ``nfe`` (calls of the vector field; each call evaluates the whole batch),
        ``steps``, ``accepted``, ``rejected`` (ints, or ``[B]`` tensors for per-sample
        grids); implicit methods add ``jacobians``, ``jac_products`` (the autograd
        Jacobians' reverse-mode vector–Jacobian products: ``n`` per dense one, one per
        row group of ``jac_sparsity``; each costs about one evaluation),
        ``factorizations``,
        ``linear_solves``, ``newton_iterations``, ``newton_failures`` and scipy's names
        ``njev`` (Jacobian evaluations) and ``nlu`` (LU factorizations);
        adaptive ``dopri5``, ``tsit5`` and ``dop853`` add ``stiff_at``: the time from
        which the step size was held by stability rather than by the tolerance (Hairer's
        stiffness test, :mod:`odenet._stiffness`; None if never, or a ``[B]`` tensor with
        NaN for per-sample grids);
        ``compile=True`` adds ``compiled``, ``compile_time`` (seconds) and, when eager
        ran, ``compile_fallback``.  Sensitivity methods add ``backward_nfe`` etc. after
        ``.backward()`` (see :mod:`odenet.sensitivity`).
    status : Tensor
        int ``[B]`` (or ``[1]``), 0 = success; see ``messages``.
    method : str
    """

    ys: torch.Tensor
    ts: torch.Tensor
    stats: dict[str, Any]
    status: torch.Tensor
    method: str = ""
    # the crossings found when `events` were given (see EventRecord), else None
    events: EventRecord | None = None

    @property
    def success(self) -> bool:
        return bool(((self.status == SUCCESS) | (self.status == TERMINATED)).all())

    @property
    def messages(self) -> list[str]:
        return [Status(s).message for s in self.status.tolist()]

    @property
    def message(self) -> str:
        """The first failure's message, or ``"success"``."""
        for s in self.status.tolist():
            if s not in (SUCCESS, TERMINATED):
                return Status(s).message
        return Status.SUCCESS.message

    def __repr__(self) -> str:
        stats = ", ".join(
            f"{k}={v.tolist() if isinstance(v, torch.Tensor) else v}" for k, v in self.stats.items()
        )
        return (
            f"Solution(method={self.method!r}, ys={tuple(self.ys.shape)}, "
            f"status={self.message!r}, {stats})"
        )
