"""Neural CDE (odenet.models.ncde): the spline path against scipy's natural cubic spline,
the CDE solve against a closed form, and a fit on a synthetic panel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from odenet import OdenetError, solve
from odenet.fit import LOCF, fit, holdout_points, split_tail
from odenet.fit.continuous import NeuralCDEForecaster
from odenet.models.ncde import CDEField, NaturalCubicSpline, NeuralCDE


def _data(seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 10, 12))
    y = np.stack([np.sin(t), np.exp(-0.2 * t) + 0.1 * t], axis=-1)
    mask = np.ones_like(y)
    mask[[3, 7], 0] = 0  # interior gaps
    mask[[0, 11], 1] = 0  # channel 1 starts late and ends early
    return t, y, mask


def test_spline_matches_scipy_natural_spline_per_channel_through_its_observed_points():
    t, y, mask = _data()
    s = NaturalCubicSpline(torch.tensor(t)[None], torch.tensor(y)[None], torch.tensor(mask)[None])
    for c in range(2):
        o = mask[:, c] > 0
        ref = CubicSpline(t[o], y[o, c], bc_type="natural")
        q = np.linspace(t[o][0], t[o][-1], 301)  # at the last knot its left limit
        X = s(torch.tensor(q)[None])[0, :, c].numpy()
        dX = s.derivative(torch.tensor(q)[None])[0, :, c].numpy()
        np.testing.assert_allclose(X, ref(q), atol=1e-12)
        # at a knot the left limit: at a late channel's first knot the held zero slope
        late = 1 if t[o][0] > t[0] else 0
        np.testing.assert_allclose(dX[late:], ref(q[late:], 1), atol=1e-11)
        if late:
            assert dX[0] == 0
        # it interpolates the data, including at the knots of the other channel
        np.testing.assert_allclose(s(torch.tensor(t[o])[None])[0, :, c].numpy(), y[o, c],
                                   atol=1e-12)  # fmt: skip
    # channel 1 is held outside its own first/last observation (value and zero slope)
    out = torch.tensor([[t[0], t[-1] + 3.0]])
    np.testing.assert_allclose(s(out)[0, :, 1].numpy(), [y[1, 1], y[10, 1]], atol=1e-12)
    assert s.derivative(out)[0, :, 1].abs().max() == 0


def test_spline_rows_of_a_padded_batch_are_independent():
    t, y, mask = _data()
    t2 = np.concatenate([t[:8], t[7] + np.arange(1, 5)])  # row 2: 8 points + padding
    m2 = mask.copy()
    m2[8:] = 0
    s = NaturalCubicSpline(torch.tensor(np.stack([t, t2])), torch.tensor(np.stack([y, y])),
                           torch.tensor(np.stack([mask, m2])))  # fmt: skip
    o = m2[:, 0] > 0
    ref = CubicSpline(t2[o], y[o, 0], bc_type="natural")
    q = torch.tensor([[1.0, 2.0], [t[1] + 0.1, t[6] - 0.1]])
    np.testing.assert_allclose(s(q)[1, :, 0].numpy(), ref(q[1].numpy()), atol=1e-12)


class _LinearField(CDEField):
    """``f(z) = diag(z) A``: ``dz_i = z_i Σ_c A_ic dX_c``, solved by ``z_i(t) =
    z_i(t0) exp(Σ_c A_ic (X_c(t) − X_c(t0)))``."""

    def __init__(self, A):
        super().__init__(A.shape[0], A.shape[1])
        self.A = A

    def matrix(self, z):
        return z[..., None] * self.A


def test_a_linear_cde_reproduces_the_closed_form_along_the_scipy_spline():
    t, y, mask = _data()
    A = torch.tensor([[0.7, -0.3, 0.5], [0.2, 0.4, -1.0]], dtype=torch.float64)
    model = NeuralCDE(2, 2, time_scale=4.0).double()
    X, dX = model.path(torch.tensor(t)[None], torch.tensor(y)[None], torch.tensor(mask)[None])
    field = _LinearField(A).bind(dX)
    q = np.linspace(t[0], t[-1], 9)
    z0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    zs = solve(field, z0, torch.tensor(q)[None], rtol=1e-10, atol=1e-12).ys[0].numpy()
    # X from scipy (the held ends as constants), time channel t / 4
    Xs = []
    for c in range(2):
        o = mask[:, c] > 0
        tc = np.clip(q, t[o][0], t[o][-1])
        Xs.append(CubicSpline(t[o], y[o, c], bc_type="natural")(tc))
    Xs.append(q / 4.0)
    Xs = np.stack(Xs, -1)
    exact = z0.numpy() * np.exp((Xs - Xs[0]) @ A.numpy().T)
    np.testing.assert_allclose(zs, exact, rtol=1e-7)


def test_fixed_steps_keep_their_order_up_to_the_last_observation():
    # a solve ends its last step on the last knot, where the path turns constant: read
    # from the right, dX/dt was 0 there and rk4's last output was 1.3e-3 off at every h
    t, y, _ = _data()
    A = torch.tensor([[0.7, -0.3, 0.5], [0.2, 0.4, -1.0]], dtype=torch.float64)
    model = NeuralCDE(2, 2, time_scale=4.0).double()
    X, dX = model.path(torch.tensor(t)[None], torch.tensor(y)[None])
    field = _LinearField(A).bind(dX)
    z0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    exact = z0 * torch.exp((X(t[-1]) - X(t[0])) @ A.T)
    q = torch.tensor([[t[0], t[-1]]])
    err = [
        (solve(field, z0, q, method="rk4", step_size=h).ys[0, -1] - exact[0]).abs().max()
        for h in (0.04, 0.005)
    ]
    # order 4 (steps crossing the knots, where X''' jumps, make it uneven: 3e-6, 5e-9)
    assert err[0] < 1e-5 and err[1] < 1e-8 and err[0] / err[1] > 100, err


def _decay_panel(n=12, seed=0):
    """``y = a e^{−k t}`` per series (a, k random), 10 random times each on [0, 6]."""
    from odenet.batch import IrregularBatch

    rng = np.random.default_rng(seed)
    times, values = [], []
    for _ in range(n):
        t = np.sort(rng.uniform(0, 6, 10))
        a, k = rng.uniform(1, 2), rng.uniform(0.2, 0.6)
        times.append(torch.tensor(t))
        values.append(torch.tensor(a * np.exp(-k * t))[:, None])
    return IrregularBatch.from_lists(times, values)


def test_neural_cde_learns_to_predict_points_hidden_from_its_path():
    """Training lowers the model's own held-out objective (points taken out of the path,
    fixed draw) well below the untrained model's — the spline held constant past the
    data, i.e. LOCF there — and interpolation of never-seen points stays better than
    LOCF's.  (Extrapolation of the true tail is *not* asserted: on this panel a short
    training does not beat LOCF there; see docs/fitting.md.)"""
    window, tail = split_tail(_decay_panel(), 0.25)
    ctx, held = holdout_points(window, 0.2, seed=0)
    torch.manual_seed(0)
    model = NeuralCDEForecaster(1, 8, rtol=1e-3, atol=1e-4)
    untrained = fit(model, ctx, iters=0)
    model.eval()
    with torch.no_grad():
        before = float(model.loss(untrained.normalizer.transform(ctx)))
    res = fit(model, ctx, ctx, iters=40, lr=2e-2, batch_size=None, eval_every=10,
              patience=None)  # fmt: skip
    locf = fit(LOCF(), ctx, iters=1)
    assert res.best_val < 0.5 * before, (res.best_val, before)
    assert res.mse(ctx, held) < locf.mse(ctx, held)


def test_bad_shapes_and_options_are_refused():
    with pytest.raises(OdenetError, match="strictly increasing"):
        NaturalCubicSpline(torch.tensor([[0.0, 0.0]]), torch.zeros(1, 2, 1))
    with pytest.raises(OdenetError, match="`mask` must have the shape"):
        NaturalCubicSpline(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2, 1), torch.ones(1, 2, 2))
    with pytest.raises(OdenetError, match="output_dim"):
        NeuralCDE(2, 4, 3, skip=True)
    with pytest.raises(OdenetError, match="holdout"):
        NeuralCDEForecaster(2, holdout=1.5)


@pytest.mark.parametrize("sensitivity", ["adjoint", "checkpoint"])
def test_adjoint_and_checkpoint_gradients_equal_the_direct_one(sensitivity):
    # the forward unbound the path before the backward pass called the field again:
    # "this DrivenField has no input path"
    t, y, mask = _data()
    torch.manual_seed(0)
    model = NeuralCDE(2, 4, 1, rtol=1e-9, atol=1e-11).double()
    args = (torch.tensor(t)[None], torch.tensor(y)[None], torch.tensor(mask)[None])
    out_t = torch.tensor(t[[0, 5, 11]])[None]

    def grads(mode):
        model.solver["sensitivity"] = mode
        loss = (model(*args, out_t) ** 2).sum()
        return torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    for a, b in zip(grads(sensitivity), grads("direct")):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


def test_the_validation_draw_follows_each_series_not_its_row():
    # audit O S2: the eval-mode hide masks were drawn by row position from one seed, so
    # the validation loss of the same series changed with their order (6.24 -> 75.0)
    from odenet.batch import IrregularBatch

    g = torch.Generator().manual_seed(3)
    lens = [9, 14, 6, 11, 12]
    times = [torch.sort(torch.rand(n, generator=g, dtype=torch.float64) * 5).values for n in lens]
    values = [torch.randn(n, 2, generator=g, dtype=torch.float64) for n in lens]
    m = NeuralCDEForecaster(2, 6, holdout=0.3, max_cut=0.3).double().eval()
    batch = IrregularBatch.from_lists(times, values)
    perm = [3, 0, 4, 2, 1]
    permuted = IrregularBatch.from_lists([times[i] for i in perm], [values[i] for i in perm])
    with torch.no_grad():
        torch.testing.assert_close(m.loss(permuted), m.loss(batch), rtol=1e-12, atol=0)
    # the same series padded to another width (beside a longer one) is hidden alike
    wide = IrregularBatch.from_lists(
        [times[2], torch.linspace(0, 5, 30, dtype=torch.float64)],
        [values[2], torch.zeros(30, 2, dtype=torch.float64)],
    )
    inside, after = m._hide(batch)
    inside_w, after_w = m._hide(wide)
    n = lens[2]
    assert torch.equal(inside[2, :n], inside_w[0, :n]) and torch.equal(after[2, :n], after_w[0, :n])
    assert bool((inside | after)[:, 1:].any())  # something is hidden and scored
