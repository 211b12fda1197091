"""Headline claims of studies/fit_irregular, at a small fast scale."""

import math

import pytest
import torch

from odenet.fit import GreyBoxField, LinearInterpolation, ShootingODE, datasets, fit, select
from odenet.fit._common import masked_mse


def seasonal_rate(t, x, p):
    tt = t[:, None]
    out = p["a"] + p["b"] * (tt - 1980.0)
    for k in (1, 2):
        w = 2 * math.pi * k * tt
        out = out + p[f"c{k}"] * torch.sin(w) + p[f"d{k}"] * torch.cos(w)
    return out.expand_as(x)


def test_co2_greybox_beats_linear_interpolation_across_gaps_and_seasonal_naive_forecast():
    pytest.importorskip("statsmodels")
    b = datasets.co2().batch
    # the study's protocol (studies/fit_irregular/co2.py, seed 0): last 2 years are the
    # forecast target; 20 random blocks of 8 consecutive weeks are the interpolation target
    t_end = float(b.times[0, -1])
    past = select(b, b.times <= t_end - 2.0)
    tail = select(b, b.times > t_end - 2.0)
    n = int(past.lengths[0])
    gap = torch.zeros_like(past.valid)
    starts = torch.randperm(n - 16, generator=torch.Generator().manual_seed(0))[:20] + 8
    for s in starts.tolist():
        gap[0, s : s + 8] = True
    ctx, held = select(past, ~gap), select(past, gap)
    guess = {"a": 1.0, "b": 0.0, "c1": 0.0, "d1": 0.0, "c2": 0.0, "d2": 0.0}
    model = ShootingODE(GreyBoxField(seasonal_rate, guess, positive=False), horizon=4,
                        physical=True, rtol=1e-5, atol=1e-6)  # fmt: skip
    res = fit(model, ctx, iters=2, optimizer="lbfgs")
    lin = LinearInterpolation().predict(ctx, held.times)
    lin_mse = float(masked_mse(lin, held.values, held.mask))
    # seasonal naive: the value one (or two) years before, from the context
    n = int(ctx.lengths[0])
    t, v = ctx.times[0, :n], ctx.values[0, :n, 0]
    k = torch.ceil(tail.times[0] - t[-1]).clamp_min(1)
    naive = v[(t[None, :] - (tail.times[0] - k)[:, None]).abs().argmin(1)]
    naive_mse = float(masked_mse(naive[None, :, None], tail.values, tail.mask))
    assert res.mse(ctx, held) < lin_mse
    assert res.mse(ctx, tail) < naive_mse


def test_multiple_shooting_recovers_lotka_volterra_where_a_single_shot_gets_stuck():
    """studies/fit_irregular/shooting.py at a small scale: one noisy series over about five
    periods, guess (1, 1, 1, 1), the same Levenberg–Marquardt budget for both fits."""
    from odenet.fit import relative_error
    from odenet.fit.greybox import MECHANISMS, GreyBoxMLE

    data = datasets.lotka_volterra(1, observed=1.0, noise=0.02, n_times=50, t_end=40.0, seed=0)
    mech, guess = MECHANISMS["lotka_volterra"]
    out = {}
    for name, nodes in (("single", None), ("multiple", 5)):
        model = GreyBoxMLE(GreyBoxField(mech, guess), node_every=nodes, rtol=1e-4, atol=1e-6)
        info = model.gauss_newton(data.batch, max_iter=6)
        rms = math.sqrt(2 * info["cost"] / int(data.batch.mask.sum()))
        err = max(relative_error(model.values(), datasets.LV_PARAMS).values())
        out[name] = (err, rms, info["stop_reason"])
    # the study runs single shooting to 100 iterations: it stays out of phase (see README)
    assert out["single"][0] > 0.1 and out["single"][1] > 5 * 0.02, out
    assert out["multiple"][0] < 0.03 and out["multiple"][1] < 1.5 * 0.02, out
    assert out["multiple"][2] == "converged", out
