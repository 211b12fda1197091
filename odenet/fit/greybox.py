"""Grey-box fitting: the user's mechanistic vector field with unknown parameters.

``GreyBoxField(mechanism, params)`` turns ``mechanism(t, x, p) -> dx/dt`` (torch, ``p``
a dict of scalars) into a learnable field; positive parameters are learnt as
logarithms so they stay positive.  An optional neural correction ``g(x)`` makes a
hybrid ``f = mechanism + g``.  Plug it into :class:`~odenet.fit.continuous.ShootingODE`
with ``physical=True`` (the mechanism speaks physical units; the trainer supplies
the normaliser).

:class:`OneCompartmentPK` is a grey-box model whose state is not the observation:
an oral one-compartment model with first-order absorption, doses entering the gut
compartment as jumps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

import odenet
from odenet._errors import InputError
from odenet.batch import IrregularBatch
from odenet.fit._common import masked_mse
from odenet.fit.datasets import damped_oscillator_field, lotka_volterra_field


class GreyBoxField(nn.Module):
    """Learnable mechanistic field ``f(t, x) = mechanism(t, x, p) [+ correction(x)]``.

    Parameters
    ----------
    mechanism : callable ``(t, x [K, D], p: dict[str, Tensor]) -> [K, D]``
        The known structure, in physical units.
    params : dict[str, float]
        Initial guesses of the unknown parameters.
    positive : bool
        Learn ``log p`` (parameters stay positive).  Initial guesses must then be > 0.
    correction : nn.Module ``(t, x) -> [K, D]``, optional
        A neural correction added to the mechanism (hybrid model).  Its output layer
        should start near 0 so the fit starts from the mechanism.
    """

    def __init__(
        self,
        mechanism: Callable,
        params: dict,
        *,
        positive: bool = True,
        correction: nn.Module | None = None,
    ):
        super().__init__()
        if not params:
            raise InputError("`params` must name at least one unknown parameter with a guess.")
        bad = {k: v for k, v in params.items() if positive and not v > 0}
        if bad:
            raise InputError(
                f"`params` {bad} must be > 0 with positive=True (they are learnt as logs); "
                "give positive guesses or pass positive=False."
            )
        self.mechanism = mechanism
        self.positive = positive
        self.names = list(params)
        init = [math.log(params[k]) if positive else float(params[k]) for k in self.names]
        self.raw = nn.Parameter(torch.tensor(init, dtype=torch.float64))
        self.correction = correction

    @property
    def params(self) -> dict:
        """Current parameter values ``{name: 0-dim Tensor}`` (differentiable)."""
        vals = self.raw.exp() if self.positive else self.raw
        return {k: vals[i] for i, k in enumerate(self.names)}

    def values(self) -> dict:
        """Current parameter values as plain floats."""
        return {k: float(v.detach()) for k, v in self.params.items()}

    def forward(self, t, x):
        dx = self.mechanism(t, x, self.params)
        if self.correction is not None:
            dx = dx + self.correction(t, x)
        return dx


MECHANISMS = {
    "lotka_volterra": (
        lotka_volterra_field,
        {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "delta": 1.0},
    ),
    "damped_oscillator": (damped_oscillator_field, {"omega": 1.0, "zeta": 0.5}),
}  # name -> (mechanism, default initial guesses)


def relative_error(found: dict, truth: dict) -> dict:
    """``|p̂ − p| / |p|`` per parameter name present in both."""
    return {k: abs(found[k] - truth[k]) / abs(truth[k]) for k in truth if k in found}


# --- pharmacokinetics -------------------------------------------------------------


class OneCompartmentPK(nn.Module):
    """Oral one-compartment PK with first-order absorption; doses are jumps.

    State ``(A_g, A_c)`` (amounts in gut and central compartment, dose units):
    ``A_g' = −k_a A_g``, ``A_c' = k_a A_g − k_e A_c``; observed concentration
    ``C = A_c / V``.  At each dose time the dose amount is added to ``A_g``.
    Single dose ⇒ the Bateman function
    ``C(t) = D k_a / (V (k_a − k_e)) (e^{−k_e t} − e^{−k_a t})`` (used in tests).

    Parameters
    ----------
    doses : list of list of (time, amount)
        Per series (batch row order) its dosing events, sorted in time.
    ka, ke, V : float
        Initial guesses (1/time, 1/time, volume per dose unit of concentration).
    """

    trains_in_physical_units = True

    def __init__(self, doses, *, ka: float = 1.0, ke: float = 0.1, V: float = 1.0,
                 rtol: float = 1e-7, atol: float = 1e-9):  # fmt: skip
        super().__init__()
        self.doses = [sorted((float(t), float(a)) for t, a in d) for d in doses]
        if any(len(d) == 0 for d in self.doses):
            raise InputError("every series needs at least one dose (time, amount) in `doses`.")
        self.raw = nn.Parameter(torch.log(torch.tensor([ka, ke, V], dtype=torch.float64)))
        self.names = ["ka", "ke", "V"]
        self.tol = dict(rtol=rtol, atol=atol)

    def values(self) -> dict:
        return {k: float(v) for k, v in zip(self.names, self.raw.detach().exp())}

    def _field(self, t, y):
        ka, ke, _ = self.raw.exp()
        g, c = y[..., 0], y[..., 1]
        return torch.stack([-ka * g, ka * g - ke * c], -1)

    def concentration(self, series: int, times: torch.Tensor) -> torch.Tensor:
        """``C`` [Q] of series ``series`` at increasing ``times`` [Q] (0 before the first dose)."""
        V = self.raw.exp()[2]
        y = torch.zeros(2, dtype=torch.float64)
        t_now = None
        out = torch.zeros(len(times), dtype=torch.float64)
        pieces = []
        events = self.doses[series] + [(math.inf, 0.0)]
        for k in range(len(events) - 1):
            t_d, amount = events[k]
            if t_now is not None:
                y = odenet.solve(self._field, y, torch.tensor([t_now, t_d]), **self.tol).ys[-1]
            y = y + torch.tensor([amount, 0.0], dtype=torch.float64)
            t_now = t_d
            sel = (times > t_d) & (times <= events[k + 1][0])
            if bool(sel.any()):
                grid = torch.cat([torch.tensor([t_d], dtype=torch.float64), times[sel]])
                ys = odenet.solve(self._field, y, grid, **self.tol).ys[1:, 1] / V
                pieces.append((sel, ys))
        for sel, ys in pieces:
            out = out.masked_scatter(sel, ys)
        return out

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        return masked_mse(self._all(batch.times, batch.lengths), batch.values[..., 0],
                          batch.mask[..., 0])  # fmt: skip

    def _all(self, times, lengths):
        if all(len(d) == 1 for d in self.doses):
            return self._single_dose(times)
        rows = []
        for b in range(times.shape[0]):
            n = int(lengths[b])
            c = self.concentration(b, times[b, :n])
            rows.append(torch.cat([c, c.new_zeros(times.shape[1] - n)]))
        return torch.stack(rows)

    def _single_dose(self, times):
        """One per-sample solve for all series when each has a single dose (common case)."""
        t_d = torch.tensor([d[0][0] for d in self.doses], dtype=torch.float64)[: times.shape[0]]
        amount = torch.tensor([d[0][1] for d in self.doses], dtype=torch.float64)[: times.shape[0]]
        after = times > t_d[:, None]
        # times at or before the dose give C = 0; nudge them to keep each grid increasing
        tt = torch.maximum(times, t_d[:, None] + 1e-9 * (1 + torch.arange(times.shape[1])))
        grid = torch.cat([t_d[:, None], tt], 1)
        y0 = torch.stack([amount, torch.zeros_like(amount)], -1)
        c = odenet.solve(self._field, y0, grid, **self.tol).ys[:, 1:, 1] / self.raw.exp()[2]
        return torch.where(after, c, torch.zeros_like(c))

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        full = torch.full((query_times.shape[0],), query_times.shape[1])
        return self._all(query_times, full)[..., None]
