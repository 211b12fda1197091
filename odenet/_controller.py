"""Step-size controllers: they alone decide acceptance and the next step.

The error ratio ``r`` of a step is the RMS norm of ``err / (atol + rtol·max(|y0|, |y1|))``
(one number per independent system).  A step is accepted when ``r ≤ 1``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch

from odenet._errors import InputError


@dataclass(frozen=True)
class PIDController:
    """Söderlind's PID step-size controller.

    ``h_new = h · safety · r_n^(−β1/k) · r_{n−1}^(−β2/k) · r_{n−2}^(−β3/k)`` with
    ``β1 = p + i + d``, ``β2 = −(p + 2d)``, ``β3 = d`` and ``k = q + 1`` (``q`` the
    order of the error estimate), clipped to ``[factor_min, factor_max]``; after a
    rejection the step never grows.

    ``pcoeff = dcoeff = 0, icoeff = 1`` is the classical I controller (the default),
    ``PIDController.PI()`` a PI controller (Gustafsson), ``PIDController.PID()``
    Söderlind's H312 filter.

    References: Söderlind, ACM TOMS 29 (2003); Hairer & Wanner II, Sec. IV.2.
    """

    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.safety <= 1:
            raise InputError(f"`safety` must be in (0, 1], got {self.safety}.")
        if not 0 < self.factor_min < 1 < self.factor_max:
            raise InputError(
                "`factor_min` must be in (0, 1) and `factor_max` > 1, got "
                f"factor_min={self.factor_min}, factor_max={self.factor_max}."
            )

    @classmethod
    def I(cls, **kw) -> PIDController:
        return cls(0.0, 1.0, 0.0, **kw)

    @classmethod
    def PI(cls, **kw) -> PIDController:
        return cls(0.4, 0.3, 0.0, **kw)

    @classmethod
    def PID(cls, **kw) -> PIDController:
        return cls(1 / 18, 1 / 9, 1 / 18, **kw)

    def init_state(self, K: int, dtype, device):
        ones = torch.ones(K, dtype=dtype, device=device)
        return ones, ones.clone()  # r_{n-1}, r_{n-2}

    @property
    def betas(self) -> tuple[float, float, float]:
        """``(β1, β2, β3)``: exponents (times ``−1/k``) of ``r_n, r_{n−1}, r_{n−2}``."""
        return (
            self.pcoeff + self.icoeff + self.dcoeff,
            -(self.pcoeff + 2 * self.dcoeff),
            self.dcoeff,
        )

    def propose(self, h, ratio, accept, state, error_order: int):
        """Next step sizes ``[K]`` and controller state after a step with ``ratio``."""
        k = error_order + 1
        b1, b2, b3 = self.betas
        tiny = torch.finfo(ratio.dtype).tiny
        r = ratio.clamp_min(tiny)
        r1, r2 = state
        factor = self.safety * r ** (-b1 / k)
        if b2 != 0:
            factor = factor * r1 ** (-b2 / k)
        if b3 != 0:
            factor = factor * r2 ** (-b3 / k)
        # r is clamped away from 0 and NaN is mapped to inf by the loop: factor is finite
        # or +inf, and NaN only if a caller passes one — then shrink
        factor = torch.nan_to_num(factor, nan=self.factor_min)
        factor = factor.clamp(self.factor_min, self.factor_max)
        factor = torch.where(accept, factor, factor.clamp_max(1.0))
        new_state = (torch.where(accept, r, r1), torch.where(accept, r1, r2))
        return h * factor.to(h.dtype), new_state

    def propose_one(self, h: float, ratio: float, accept: bool, state, error_order: int):
        """:meth:`propose` for one system in Python floats (the host-side loop).

        ``ratio`` may be ``inf`` (a non-finite trial); the result is the same rule.
        """
        k = error_order + 1
        b1, b2, b3 = self.betas
        r = max(ratio, sys.float_info.min)
        r1, r2 = state
        factor = self.safety * r ** (-b1 / k) if math.isfinite(r) else 0.0
        if b2 != 0:
            factor *= r1 ** (-b2 / k)
        if b3 != 0:
            factor *= r2 ** (-b3 / k)
        factor = min(max(factor, self.factor_min), self.factor_max)
        if not accept:
            factor = min(factor, 1.0)
        new_state = (r, r1) if accept else (r1, r2)
        return h * factor, new_state


def controller_from(spec) -> PIDController:
    """Accept a controller object or one of the names ``"I"``, ``"PI"``, ``"PID"``."""
    if isinstance(spec, PIDController):
        return spec
    if isinstance(spec, str) and spec.upper() in ("I", "PI", "PID"):
        return getattr(PIDController, spec.upper())()
    raise InputError(
        f"`controller` must be 'I', 'PI', 'PID' or an odenet.PIDController, got {spec!r}."
    )
