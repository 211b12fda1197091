"""Ensemble bands for black-box models (odenet.fit.ensemble): members from different
seeds, the band = members' spread + noise calibrated on points no member trained on."""

from __future__ import annotations

import pytest
import torch

from odenet import OdenetError
from odenet.fit import datasets, holdout_points, neural_ode, split_tail
from odenet.fit.ensemble import fit_ensemble


def _small():
    data = datasets.damped_oscillator(6, observed=0.6, noise=0.05, seed=0)
    window, tail = split_tail(data.batch, 0.2)
    ctx, held = holdout_points(window, 0.25, seed=1)
    return ctx, held, tail


def test_members_differ_and_the_band_is_spread_plus_calibrated_noise():
    ctx, held, _ = _small()
    ens = fit_ensemble(lambda: neural_ode(2, 8, horizon=2, rtol=1e-3, atol=1e-4), ctx,
                       members=3, iters=4, batch_size=6, calibration=0.25)  # fmt: skip
    P = ens.member_predictions(ctx, held.times)
    assert P.shape[0] == 3 and not torch.allclose(P[0], P[1])  # distinct seeds
    lo, mid, hi = ens.band(ctx, held.times, level=0.9)
    torch.testing.assert_close(mid, P.mean(0))
    # the half-width is z_0.95 · sqrt(spread² + σ²), per channel
    z = 1.6448536269514722
    want = z * (P.var(0, unbiased=True) + ens.sigma**2).sqrt()
    torch.testing.assert_close(hi - mid, want)
    lo_c, _, hi_c = ens.band(ctx, held.times, level=0.9, prediction=False)
    assert bool(((hi_c - lo_c) <= (hi - lo) + 1e-12).all())
    assert ens.sigma.shape == (2,) and bool((ens.sigma > 0).all())
    assert ens.n_calibration > 0
    assert ens.mse(ctx, held) == pytest.approx(float(((mid - held.values) ** 2 * held.mask).sum()
                                                     / held.mask.sum()))  # fmt: skip


def test_bad_ensemble_options_are_refused():
    ctx, _, _ = _small()
    with pytest.raises(OdenetError, match="`members` must be an integer ≥ 2"):
        fit_ensemble(lambda: neural_ode(2, 8), ctx, members=1)
    with pytest.raises(OdenetError, match="`calibration` must be in"):
        fit_ensemble(lambda: neural_ode(2, 8), ctx, calibration=1.5)
