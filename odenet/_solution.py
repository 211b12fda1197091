"""The result of a solve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

SUCCESS = 0
MAX_STEPS = 1
STEP_UNDERFLOW = 2
NON_FINITE = 3
NEWTON_FAILED = 4

STATUS_MESSAGES = {
    SUCCESS: "success",
    MAX_STEPS: "maximum number of steps reached — increase `max_steps`",
    STEP_UNDERFLOW: (
        "step size underflow — the solution may blow up or the problem be stiff; "
        "try an implicit method (e.g. method='radau_iia5' or 'kvaerno5') or looser tolerances"
    ),
    NON_FINITE: (
        "the state or the vector field became NaN/inf — with a fixed step this usually "
        "means the step is outside the method's stability region: reduce `step_size` or "
        "use an implicit method"
    ),
    NEWTON_FAILED: (
        "Newton's method for the implicit stages did not converge even for small steps — "
        "check the vector field for discontinuities, or raise `newton_max_iter`"
    ),
}


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
        grids); implicit methods add ``jacobians``, ``factorizations``,
        ``linear_solves``, ``newton_iterations``.  Sensitivity methods add
        ``backward_nfe`` etc. after ``.backward()`` (see :mod:`odenet.sensitivity`).
    status : Tensor
        int ``[B]`` (or ``[1]``), 0 = success; see ``messages``.
    method : str
    """

    ys: torch.Tensor
    ts: torch.Tensor
    stats: dict[str, Any]
    status: torch.Tensor
    method: str = ""

    @property
    def success(self) -> bool:
        return bool((self.status == SUCCESS).all())

    @property
    def messages(self) -> list[str]:
        return [STATUS_MESSAGES[int(s)] for s in self.status.tolist()]

    @property
    def message(self) -> str:
        """The first failure's message, or ``"success"``."""
        for s in self.status.tolist():
            if s != SUCCESS:
                return STATUS_MESSAGES[int(s)]
        return STATUS_MESSAGES[SUCCESS]

    def __repr__(self) -> str:
        stats = ", ".join(
            f"{k}={v if isinstance(v, int) else v.tolist()}" for k, v in self.stats.items()
        )
        return (
            f"Solution(method={self.method!r}, ys={tuple(self.ys.shape)}, "
            f"status={self.message!r}, {stats})"
        )
