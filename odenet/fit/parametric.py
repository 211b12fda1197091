"""Per-series parametric reference curves fitted with ``scipy.optimize.curve_fit``.

The references a domain scientist would try first on a growth or drug-concentration
panel: every series (and channel) gets its own logistic, Gompertz or Bateman
(bi-exponential oral-absorption) curve, fitted to that series' context observations
only, in physical units.  They have the ``loss`` / ``predict`` interface of the other
models (nothing to train), so they sit in the same benchmark tables.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from odenet._errors import InputError
from odenet.batch import IrregularBatch
from odenet.fit._common import on_cpu


def logistic(t, K, r, tm):
    """``K / (1 + exp(−r (t − tm)))``."""
    return K / (1 + np.exp(np.clip(-r * (t - tm), -60, 60)))


def gompertz(t, K, r, tm):
    """``K exp(−exp(−r (t − tm)))``."""
    return K * np.exp(-np.exp(np.clip(-r * (t - tm), -60, 60)))


def bateman(t, A, ke, ka, t0=0.0):
    """``A (exp(−ke τ) − exp(−ka τ))``, ``τ = max(t − t0, 0)`` (oral one-compartment)."""
    tau = np.maximum(t - t0, 0.0)
    return A * (np.exp(-ke * tau) - np.exp(-ka * tau))


def biexponential(t, A, a, B, b, t0=0.0):
    """``A e^{−a τ} + B e^{−b τ}``, ``τ = t − t0`` (i.v. bolus, two compartments)."""
    tau = t - t0
    return A * np.exp(-a * tau) + B * np.exp(-b * tau)


def _guess(kind, t, y):
    span = max(t[-1] - t[0], 1e-12)
    if kind in ("logistic", "gompertz"):
        K = 1.2 * np.max(np.abs(y)) * np.sign(y[np.argmax(np.abs(y))] or 1.0)
        return [K, 4.0 / span, t[0] + 0.5 * span], ([-np.inf, 1e-8, -np.inf], np.inf)
    if kind == "biexponential":
        y0 = max(float(y[0]), 1e-12)
        return [0.7 * y0, 3.0 / span, 0.3 * y0, 0.3 / span], ([0, 1e-8, 0, 1e-8], np.inf)
    imax = int(np.argmax(y))
    tmax = max(t[imax] - t[0], 1e-3 * span)
    return [2 * np.max(y), 1.0 / span, 2.0 / tmax], ([0, 1e-8, 1e-8], np.inf)


class ParametricCurve(nn.Module):
    """A per-series, per-channel parametric curve (the classical reference).

    Parameters
    ----------
    kind : {"logistic", "gompertz", "bateman", "biexponential"}
        ``logistic``/``gompertz``: growth to a plateau ``K`` at rate ``r`` around
        ``tm``; ``bateman``: ``A (e^{−k_e τ} − e^{−k_a τ})`` from each series' first
        time (single oral dose); ``biexponential``: ``A e^{−a τ} + B e^{−b τ}``
        (i.v. bolus).

    Notes
    -----
    A series with fewer than 4 observed values of a channel, or whose fit fails,
    falls back to linear interpolation of its observations (counted in
    :attr:`fallbacks`), so a score is never silently missing.
    """

    trainable = False
    trains_in_physical_units = True
    KINDS: ClassVar[dict] = {"logistic": logistic, "gompertz": gompertz, "bateman": bateman,
                             "biexponential": biexponential}  # fmt: skip

    def __init__(self, kind: str = "logistic"):
        super().__init__()
        if kind not in self.KINDS:
            raise InputError(f"`kind` must be one of {sorted(self.KINDS)}, got {kind!r}.")
        self.kind = kind
        self.fallbacks = 0

    def loss(self, batch):
        return batch.values.new_zeros((), requires_grad=True)

    def _fit(self, t, y):
        """The fitted curve ``q -> values`` of one series and channel (or the fallback)."""
        from scipy.optimize import curve_fit

        from odenet.fit.baselines import _interp

        f = self.KINDS[self.kind]
        if len(t) >= 4:
            p0, bounds = _guess(self.kind, t, y)
            t0 = t[0]
            if self.kind == "bateman":

                def f(tt, A, ke, ka):
                    return bateman(tt, A, ke, ka, t0)

            elif self.kind == "biexponential":

                def f(tt, A, a, B, b):
                    return biexponential(tt, A, a, B, b, t0)

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p, _ = curve_fit(f, t, y, p0=p0, bounds=bounds, maxfev=5000)
                if np.all(np.isfinite(f(t, *p))):
                    return lambda q, f=f, p=p: f(q, *p)
            except (RuntimeError, ValueError):
                pass
        self.fallbacks += 1
        tt, yy = torch.as_tensor(t), torch.as_tensor(y)
        return lambda q: _interp(torch.as_tensor(q), tt, yy).numpy()

    @on_cpu  # scipy's curve_fit; the predictions go back to the context's device
    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        """[B, Q, D]: each series' own curve, fitted to its context observations (the fits
        are reused while the context stays the same).  Computed on the CPU (scipy);
        returned on the context's device."""
        B, Q = query_times.shape
        D = context.values.shape[-1]
        key = tuple(hash(x.numpy().tobytes()) for x in (context.times, context.values,
                                                        context.mask))  # fmt: skip
        if getattr(self, "_cache_key", None) != key:
            self._cache_key, self._curves = key, {}
        out = np.zeros((B, Q, D))
        for b in range(B):
            n = int(context.lengths[b])
            for d in range(D):
                m = (context.mask[b, :n, d] > 0).numpy()
                if not m.any():
                    continue
                if (b, d) not in self._curves:
                    t = context.times[b, :n].numpy()[m]
                    y = context.values[b, :n, d].numpy()[m]
                    self._curves[b, d] = self._fit(t, y)
                out[b, :, d] = self._curves[b, d](query_times[b].numpy())
        return torch.as_tensor(out, dtype=context.values.dtype)
