"""ODE-RNN and latent ODE on irregular batches: the right ODE between each sample's own
observations, and outputs independent of how the batch was padded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from odenet.batch import IrregularBatch
from odenet.models import ODERNN, LatentODE

F64 = torch.float64


TIGHT = dict(rtol=1e-10, atol=1e-12)


def make_batch(seed=0, lengths=(3, 6, 4), D=2, missing=True):
    g = torch.Generator().manual_seed(seed)
    times, values, masks = [], [], []
    for n in lengths:
        t = torch.cumsum(0.1 + torch.rand(n, generator=g, dtype=F64), 0) + 0.5 * torch.rand(
            1, generator=g, dtype=F64
        )
        v = torch.randn(n, D, generator=g, dtype=F64)
        m = torch.ones(n, D, dtype=F64)
        if missing and n > 2:
            m[1, 0] = 0.0  # a missing channel
            m[2] = 0.0  # a time where nothing was observed
        times.append(t)
        values.append(v * m)
        masks.append(m)
    return IrregularBatch.from_lists(times, values, masks)


def sample(batch: IrregularBatch, b: int) -> IrregularBatch:
    """Sample ``b`` alone, without any padding."""
    n = int(batch.lengths[b])
    return IrregularBatch(
        batch.times[b : b + 1, :n],
        batch.values[b : b + 1, :n],
        batch.mask[b : b + 1, :n],
        batch.lengths[b : b + 1],
    )


def extra_padding(batch: IrregularBatch, k: int = 3) -> IrregularBatch:
    """The same batch with ``k`` more padding columns (garbage values, mask 0)."""
    B, T, D = batch.values.shape
    last = batch.times[:, -1:]
    times = torch.cat([batch.times, last + 0.37 * torch.arange(1, k + 1, dtype=F64)], 1)
    values = torch.cat([batch.values, torch.full((B, k, D), 9.0, dtype=F64)], 1)
    mask = torch.cat([batch.mask, torch.zeros(B, k, D, dtype=F64)], 1)
    return IrregularBatch(times, values, mask, batch.lengths.clone())


def scipy_flow(field, h, t0, t1):
    """Independent reference: scipy's DOP853 on the torch field, to 1e-12."""

    def rhs(t, y):
        with torch.no_grad():
            out = field(torch.tensor(t, dtype=F64), torch.tensor(y, dtype=F64)[None])
        return out[0].numpy()

    sol = solve_ivp(rhs, (t0, t1), h, method="DOP853", rtol=1e-12, atol=1e-13)
    return sol.y[:, -1]


def scipy_ode_rnn(field, cell, times, values, mask):
    """Reference ODE-RNN for one sample (numpy), observations in the given order."""
    h = np.zeros(cell.hidden_size)
    before, after = [], []
    for i in range(len(times)):
        if i > 0:
            h = scipy_flow(field, h, float(times[i - 1]), float(times[i]))
        before.append(h)
        if mask[i].sum() > 0:
            x = torch.cat([values[i] * mask[i], mask[i]])[None]
            with torch.no_grad():
                h = cell(x, torch.tensor(h, dtype=F64)[None])[0].numpy()
        after.append(h)
    return np.array(before), np.array(after)


@pytest.fixture(scope="module")
def odernn():
    torch.manual_seed(0)
    return ODERNN(2, 5, 3, **TIGHT).double()


@pytest.fixture(scope="module")
def latent():
    torch.manual_seed(1)
    return LatentODE(2, 3, 6, obs_std=0.2, **TIGHT).double()


@pytest.fixture(scope="module")
def latent_fast():
    """The same weights at working tolerances (invariance checks need no accuracy)."""
    torch.manual_seed(1)
    return LatentODE(2, 3, 6, obs_std=0.2, rtol=1e-5, atol=1e-7).double()


# --- ODE-RNN ---------------------------------------------------------------------------


def test_odernn_follows_the_ode_between_each_samples_own_times_and_jumps_by_gru(odernn):
    batch = make_batch()
    before, after = odernn.states(batch)
    for b in range(3):
        n = int(batch.lengths[b])
        ref_before, ref_after = scipy_ode_rnn(
            odernn.field, odernn.cell, batch.times[b, :n], batch.values[b, :n], batch.mask[b, :n]
        )
        np.testing.assert_allclose(before[b, :n].detach().numpy(), ref_before, atol=1e-8)
        np.testing.assert_allclose(after[b, :n].detach().numpy(), ref_after, atol=1e-8)


def test_odernn_forward_is_one_step_ahead_readout_of_the_state_before_the_update(odernn):
    batch = make_batch()
    before, _ = odernn.states(batch)
    pred = odernn(batch)
    assert pred.shape == (3, 6, 3)
    torch.testing.assert_close(pred, odernn.readout(before), rtol=0, atol=0)
    # position 0 is read from the initial state h = 0: the readout bias
    torch.testing.assert_close(pred[:, 0], odernn.readout.bias.expand(3, 3), rtol=0, atol=0)


def test_odernn_keeps_its_state_where_nothing_was_observed(odernn):
    batch = make_batch()
    before, after = odernn.states(batch)
    # index 2 is fully unobserved in every sample with length > 2
    assert torch.equal(before[:, 2], after[:, 2])
    assert not torch.equal(before[:, 1], after[:, 1])  # a partial observation updates


def test_odernn_outputs_do_not_depend_on_padding(odernn):
    batch = make_batch()
    padded = extra_padding(batch)
    pred, hid = odernn(batch), odernn.hidden(batch)
    pred_p, hid_p = odernn(padded), odernn.hidden(padded)
    for b in range(3):
        n = int(batch.lengths[b])
        alone = sample(batch, b)
        torch.testing.assert_close(pred[b, :n], odernn(alone)[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(pred[b, :n], pred_p[b, :n], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hid[b, :n], odernn.hidden(alone)[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hid[b, :n], hid_p[b, :n], rtol=1e-12, atol=1e-12)
        # padding positions hold the state after the last observation
        assert torch.equal(hid[b, n:], hid[b, n - 1].expand_as(hid[b, n:]))


def test_odernn_predict_extrapolates_the_last_state_to_each_samples_query_times(odernn):
    batch = make_batch()
    t_last = batch.times[torch.arange(3), batch.lengths - 1]
    query = t_last[:, None] + torch.tensor([0.3, 0.9, 2.0], dtype=F64)
    out = odernn.predict(batch, query)
    assert out.shape == (3, 3, 3)
    padded = odernn.predict(extra_padding(batch), query)
    torch.testing.assert_close(out, padded, rtol=1e-12, atol=1e-12)
    h_last = odernn.hidden(batch)[torch.arange(3), batch.lengths - 1]
    for b in range(3):
        for q in range(3):
            h = scipy_flow(
                odernn.field, h_last[b].detach().numpy(), float(t_last[b]), float(query[b, q])
            )
            with torch.no_grad():
                ref = odernn.readout(torch.tensor(h))
            np.testing.assert_allclose(out[b, q].detach().numpy(), ref.numpy(), atol=1e-8)


def test_odernn_one_step_ahead_loss_decreases_along_its_gradient():
    # the gradient through the batched solves and GRU jumps is a descent direction
    g = torch.Generator().manual_seed(3)
    times, values = [], []
    for n in (6, 9, 7):
        t = torch.sort(torch.rand(n, generator=g, dtype=F64) * 6)[0] + 0.01 * torch.arange(n)
        times.append(t)
        values.append(torch.sin(t + 6 * torch.rand(1, generator=g, dtype=F64))[:, None])
    batch = IrregularBatch.from_lists(times, values)
    torch.manual_seed(3)
    model = ODERNN(1, 6, 1, rtol=1e-6, atol=1e-8).double()
    m = batch.mask.clone()
    m[:, 0] = 0  # the first point has nothing to predict from

    def loss_fn():
        return ((model(batch) - batch.values) ** 2 * m).sum() / m.sum()

    loss = loss_fn()
    loss.backward()
    loss = float(loss.detach())
    grad_sq = sum(float(p.grad.pow(2).sum()) for p in model.parameters())
    lr = 1e-3
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
        new = float(loss_fn())
    # first-order prediction of the decrease: lr·‖g‖²
    assert 0.5 * lr * grad_sq < loss - new < 1.5 * lr * grad_sq


# --- latent ODE ------------------------------------------------------------------------


def test_latent_encoder_is_the_odernn_run_backward_over_each_samples_observations(latent):
    batch = make_batch()
    mu, logvar = latent.encode(batch)
    for b in range(3):
        n = int(batch.lengths[b])
        rev = torch.arange(n - 1, -1, -1)
        _, after = scipy_ode_rnn(
            latent.enc_field,
            latent.enc_cell,
            batch.times[b, rev],
            batch.values[b, rev],
            batch.mask[b, rev],
        )
        with torch.no_grad():
            ref = latent.to_posterior(torch.tensor(after[-1]))
        np.testing.assert_allclose(mu[b].detach().numpy(), ref[:3].numpy(), atol=1e-8)
        np.testing.assert_allclose(logvar[b].detach().numpy(), ref[3:].numpy(), atol=1e-8)


def test_latent_decoder_solves_the_latent_ode_at_each_samples_times(latent):
    batch = make_batch()
    z0 = torch.randn(3, 3, dtype=F64)
    out_one_solve = latent.decode(z0, batch.times)
    out_chained = latent.decode(z0, batch.times, lengths=batch.lengths)
    for b in range(3):
        n = int(batch.lengths[b])
        z = z0[b].numpy()
        for i in range(n):
            if i > 0:
                z = scipy_flow(
                    latent.dec_field, z, float(batch.times[b, i - 1]), float(batch.times[b, i])
                )
            with torch.no_grad():
                ref = latent.to_obs(torch.tensor(z)).numpy()
            np.testing.assert_allclose(out_one_solve[b, i].detach().numpy(), ref, atol=1e-8)
            np.testing.assert_allclose(out_chained[b, i].detach().numpy(), ref, atol=1e-8)


def test_latent_outputs_do_not_depend_on_padding(latent_fast):
    latent = latent_fast
    batch = make_batch()
    padded = extra_padding(batch)
    mu, logvar = latent.encode(batch)
    mu_p, logvar_p = latent.encode(padded)
    torch.testing.assert_close(mu, mu_p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logvar, logvar_p, rtol=1e-12, atol=1e-12)
    rec, rec_p = latent(batch), latent(padded)
    for b in range(3):
        n = int(batch.lengths[b])
        alone = sample(batch, b)
        mu_b, _ = latent.encode(alone)
        torch.testing.assert_close(mu[b], mu_b[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rec[b, :n], latent(alone)[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rec[b, :n], rec_p[b, :n], rtol=1e-12, atol=1e-12)
    torch.manual_seed(5)
    e = latent.elbo(batch)
    torch.manual_seed(5)
    e_p = latent.elbo(padded)
    torch.testing.assert_close(e, e_p, rtol=1e-12, atol=1e-12)


def test_elbo_is_masked_gaussian_loglik_minus_kl(latent_fast):
    latent = latent_fast
    batch = make_batch()
    torch.manual_seed(11)
    elbo = latent.elbo(batch, n_samples=1, kl_weight=0.5)
    mu, logvar = latent.encode(batch)
    torch.manual_seed(11)
    eps = torch.randn(1, 3, 3, dtype=F64)[0]
    xhat = latent.decode(mu + torch.exp(0.5 * logvar) * eps, batch.times, lengths=batch.lengths)
    normal = torch.distributions.Normal(xhat, 0.2)
    loglik = (normal.log_prob(batch.values) * batch.mask).sum(dim=(1, 2))
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    kl = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(elbo, (loglik - 0.5 * kl).mean(), rtol=1e-10, atol=1e-10)


def test_elbo_gradient_reaches_every_parameter():
    torch.manual_seed(2)
    model = LatentODE(2, 3, 6).double()
    model.elbo(make_batch(lengths=(4, 3)), n_samples=2).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_sample_predictions_are_posterior_draws_at_query_times(latent_fast):
    latent = latent_fast
    batch = make_batch()
    t0 = batch.times[:, 0]
    query = t0[:, None] + torch.tensor([0.0, 0.5, 1.5, 3.0], dtype=F64)
    draws = latent.sample_predictions(batch, query, n_samples=4)
    assert draws.shape == (4, 3, 4, 2)
    assert draws.std(dim=0).min() > 0  # a band, not a line
    # without a leading t0 the same times (after t0) come out
    torch.manual_seed(0)
    a = latent.sample_predictions(batch, query, n_samples=2)[:, :, 1:]
    torch.manual_seed(0)
    b = latent.sample_predictions(batch, query[:, 1:], n_samples=2)
    torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_latent_ode_float32_default_tolerances_run():
    torch.manual_seed(4)
    batch = make_batch().to(torch.float32)
    model = LatentODE(2, 3, 8)
    assert math.isfinite(float(model.elbo(batch).detach()))
    assert model(batch).shape == (3, 6, 2)


@pytest.mark.parametrize("sensitivity", ["adjoint", "checkpoint"])
def test_odernn_gradient_is_the_same_with_every_sensitivity(sensitivity):
    batch = make_batch()
    query = batch.times[torch.arange(3), batch.lengths - 1][:, None] + torch.tensor(
        [[0.5, 1.0]], dtype=F64
    )
    grads = []
    for sens in ["direct", sensitivity]:
        torch.manual_seed(0)
        m = ODERNN(2, 5, 3, rtol=1e-8, atol=1e-10, sensitivity=sens).double()
        (m(batch).pow(2).sum() + m.predict(batch, query).sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    # checkpoint replays the same steps (exact discrete gradient); the adjoint solves
    # the continuous adjoint ODE to its own tolerance
    tol = 1e-12 if sensitivity == "checkpoint" else 1e-6
    torch.testing.assert_close(grads[1], grads[0], rtol=tol, atol=tol * grads[0].abs().max())
