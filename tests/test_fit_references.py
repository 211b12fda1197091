"""Two-sided interpolation, per-series reference curves and time-varying covariates,
checked against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from odenet.batch import IrregularBatch
from odenet.fit import GreyBoxField, GreyBoxMLE, ParametricCurve, ShootingODE
from odenet.fit.parametric import bateman, biexponential, gompertz, logistic


class Decay(nn.Module):
    def forward(self, t, x):
        return -0.5 * x


def _batch(times, values):
    return IrregularBatch.from_lists(
        [torch.as_tensor(t, dtype=torch.float64) for t in times],
        [torch.as_tensor(v, dtype=torch.float64).reshape(len(v), -1) for v in values],
    )


def test_two_sided_interpolation_is_exact_for_the_true_field_and_continuous_at_observations():
    """With the true field x' = −x/2, forward and backward solutions both equal the closed
    form, so the blend does too; with a perturbed observation the one-sided curve jumps at
    it while the two-sided curve is continuous there."""
    t = np.array([0.0, 1.0, 2.5, 4.0])
    ctx = _batch([t], [3.0 * np.exp(-0.5 * t)])
    q = torch.tensor([[0.3, 1.7, 3.2]], dtype=torch.float64)
    one = ShootingODE(Decay(), physical=True, rtol=1e-10, atol=1e-12)
    two = ShootingODE(Decay(), physical=True, rtol=1e-10, atol=1e-12, bidirectional=True)
    exact = 3.0 * np.exp(-0.5 * q.numpy()[0])
    for m in (one, two):
        np.testing.assert_allclose(m.predict(ctx, q)[0, :, 0].numpy(), exact, rtol=1e-8)
    bumped = _batch([t], [3.0 * np.exp(-0.5 * t) * np.array([1, 1, 1.2, 1])])
    eps = 1e-6
    around = torch.tensor([[2.5 - eps, 2.5 + eps]], dtype=torch.float64)
    jump_one = float(np.diff(one.predict(bumped, around)[0, :, 0].numpy())[0])
    jump_two = float(np.diff(two.predict(bumped, around)[0, :, 0].numpy())[0])
    assert abs(jump_one) > 0.1 and abs(jump_two) < 1e-4
    # the two-sided value in a gap uses the observation after it: halfway, the blend of
    # the forward solution and the backward one from the bumped point
    mid = torch.tensor([[1.75]], dtype=torch.float64)
    fwd = 3.0 * np.exp(-0.5 * 1.75)
    bwd = 1.2 * 3.0 * np.exp(-0.5 * 2.5) * np.exp(0.5 * 0.75)
    assert float(two.predict(bumped, mid)) == pytest.approx(0.5 * fwd + 0.5 * bwd, rel=1e-8)


@pytest.mark.parametrize(
    "kind, curve, params",
    [
        ("logistic", logistic, (80.0, 0.4, 8.0)),
        ("gompertz", gompertz, (60.0, 0.3, 6.0)),
        ("bateman", lambda t, *p: bateman(t, *p, 0.0), (10.0, 0.1, 1.2)),
        ("biexponential", lambda t, *p: biexponential(t, *p, 0.0), (2.0, 1.5, 0.5, 0.2)),
    ],
)
def test_reference_curves_recover_their_own_noiseless_curve(kind, curve, params):
    t = np.linspace(0, 20, 12) if kind != "biexponential" else np.linspace(0, 8, 11)
    ctx = _batch([t, t[::2]], [curve(t, *params), curve(t[::2], *params)])
    q = torch.tensor(np.stack([t + 0.37, t[::1] + 0.11]), dtype=torch.float64)
    ref = ParametricCurve(kind)
    pred = ref.predict(ctx, q)[..., 0].numpy()
    np.testing.assert_allclose(pred, curve(q.numpy(), *params), rtol=1e-4, atol=1e-6)
    assert ref.fallbacks == 0


def test_reference_curve_falls_back_to_linear_interpolation_with_few_points():
    ref = ParametricCurve("logistic")
    ctx = _batch([[0.0, 1.0, 2.0]], [[1.0, 2.0, 4.0]])
    pred = ref.predict(ctx, torch.tensor([[0.5, 1.5]], dtype=torch.float64))
    np.testing.assert_allclose(pred[0, :, 0].numpy(), [1.5, 3.0])
    assert ref.fallbacks == 1


def test_time_varying_covariate_drives_the_mechanism():
    """x' = −k x + b u(t), u a step from 0 to 1 at t = 2 recorded as a covariate column;
    closed form on each side of the step; k and b recovered to 1e-3 (noiseless; the
    adaptive solver steps across the discontinuity of the forcing)."""
    k, b = 0.8, 1.5
    t = np.linspace(0, 6, 13)
    x0 = 2.0
    x = np.where(t < 2, x0 * np.exp(-k * t),
                 x0 * np.exp(-k * t) + b / k * (1 - np.exp(-k * (t - 2))))  # fmt: skip
    u = (t >= 2).astype(float)
    batch = _batch([t], [np.stack([x, u], -1)])

    def forced(t, x, p):
        return -p["k"] * x + p["b"] * p["u"]

    field = GreyBoxField(forced, {"k": 1.0, "b": 1.0}, covariates=["u"])
    model = GreyBoxMLE(field, node_every=None, rtol=1e-6, atol=1e-8)
    info = model.gauss_newton(batch, max_iter=40)
    assert model.values()["k"] == pytest.approx(k, rel=1e-3)
    assert model.values()["b"] == pytest.approx(b, rel=1e-3)
    assert info["x0"][0, 0] == pytest.approx(x0, rel=1e-3)
