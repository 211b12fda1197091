"""Ensemble bands for black-box models (odenet.fit.ensemble): members from different
seeds, the band = members' spread + noise calibrated on points no member trained on."""

from __future__ import annotations

import pytest
import scipy.stats
import torch

from odenet import OdenetError
from odenet.fit import datasets, holdout_points, neural_ode, split_tail
from odenet.fit.ensemble import calibrated_noise, curve_variance, fit_ensemble, student_quantile


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
    # the half-width is t_0.95 · sqrt((1 + 1/M) spread² + σ²), per channel, t with the
    # Welch–Satterthwaite degrees of freedom, here from scipy directly
    v, s2 = (1 + 1 / 3) * P.var(0, unbiased=True), ens.sigma**2
    dof = ((v + s2) ** 2 * 2 / v**2).clamp(max=1e6)
    t = torch.as_tensor(scipy.stats.t.ppf(0.95, dof.numpy()), dtype=torch.float64)
    want = t * (v + s2).sqrt()
    torch.testing.assert_close(hi - mid, want)
    lo_c, _, hi_c = ens.band(ctx, held.times, level=0.9, prediction=False)
    assert bool(((hi_c - lo_c) <= (hi - lo) + 1e-12).all())
    assert ens.sigma.shape == (2,) and bool((ens.sigma > 0).all())
    assert ens.n_calibration > 0
    assert ens.mse(ctx, held) == pytest.approx(float(((mid - held.values) ** 2 * held.mask).sum()
                                                     / held.mask.sum()))  # fmt: skip


def test_no_member_is_trained_or_selected_on_a_calibration_point(monkeypatch):
    """Early stopping picks a member by its validation loss: with the calibration points
    in it (as before), the members were chosen to fit them and σ̂ came out small."""
    import odenet.fit.ensemble as E

    data = datasets.damped_oscillator(8, observed=0.6, noise=0.05, seed=0)
    train, val = data.subset(range(5)), data.subset(range(5, 8))
    seen = []
    real_fit = E.fit

    def spy(model, train_data, val_data, **kw):
        seen.append((train_data, val_data))
        return real_fit(model, train_data, val_data, **kw)

    monkeypatch.setattr(E, "fit", spy)
    ens = fit_ensemble(lambda: neural_ode(2, 8, horizon=2, rtol=1e-3, atol=1e-4), train, val,
                       members=2, iters=2, batch_size=5, calibration=0.3)  # fmt: skip
    assert len(seen) == 2 and ens.n_calibration > 0
    _, cal = holdout_points(val.batch, 0.3, seed=0)  # the calibration points drawn
    cal_pts = {(round(float(t), 12), b) for b in range(cal.times.shape[0])
               for t in cal.times[b, : int(cal.lengths[b])]}  # fmt: skip
    for _, val_data in seen:
        vb = val_data.batch if hasattr(val_data, "batch") else val_data
        used = {(round(float(t), 12), b) for b in range(vb.times.shape[0])
                for t in vb.times[b, : int(vb.lengths[b])]}  # fmt: skip
        assert not used & cal_pts
        assert val_data.ids == val.ids  # still the validation series, by name


def test_bad_ensemble_options_are_refused():
    ctx, _, _ = _small()
    with pytest.raises(OdenetError, match="`members` must be an integer ≥ 2"):
        fit_ensemble(lambda: neural_ode(2, 8), ctx, members=1)
    with pytest.raises(OdenetError, match="`calibration` must be in"):
        fit_ensemble(lambda: neural_ode(2, 8), ctx, calibration=1.5)


@pytest.mark.parametrize("spread, noise", [(0.05, 0.05), (0.1, 0.05), (0.05, 0.0)])
def test_an_ideal_ensembles_band_covers_its_nominal_level(spread, noise):
    # truth and M = 4 members drawn alike about a centre, observations with noise: by the
    # law of total variance y − f̄ has variance noise² + (1 + 1/M) spread², which the
    # calibrated band must reproduce (the residual taken as the noise, plus the spread
    # again, covered 95–96 % at a nominal 90 %)
    g = torch.Generator().manual_seed(0)
    M, n = 4, 200_000

    def draw():
        centre = torch.randn(1, n, 1, 1, generator=g, dtype=torch.float64)
        truth = centre + spread * torch.randn(1, n, 1, 1, generator=g, dtype=torch.float64)
        P = centre + spread * torch.randn(M, n, 1, 1, generator=g, dtype=torch.float64)
        y = truth[0] + noise * torch.randn(n, 1, 1, generator=g, dtype=torch.float64)
        return P, y

    P, y = draw()
    sigma = calibrated_noise(P, y, torch.ones_like(y))
    assert float(sigma) == pytest.approx(noise, abs=3e-3)
    P, y = draw()
    spread = curve_variance(P)
    half = student_quantile(spread, sigma**2, M, 0.9) * (spread + sigma**2).sqrt()
    coverage = float(((P.mean(0) - y).abs() <= half).double().mean())
    # exact where the noise is 0 (t with M − 1 degrees of freedom); Welch–Satterthwaite's
    # approximation elsewhere (0.887 at spread 0.1, noise 0.05)
    assert coverage == pytest.approx(0.90, abs=0.015)
