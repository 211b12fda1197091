"""odenet.fit answers that must not depend on how a question is batched or asked.

Each test compares against an independent computation (a closed form, a hand-written
recurrence, the same question asked another way).
"""

import numpy as np
import torch
from scipy.linalg import expm

from odenet.batch import IrregularBatch

# --- ODE-RNN: a prediction depends on the context and its own time only -----------------


def _odernn_affine(H=4, seed=0):
    """An ODE-RNN forecaster whose hidden field is affine, ``h' = A h + c``."""
    from odenet.fit import ODERNNForecaster

    torch.manual_seed(seed)
    A = torch.randn(H, H, dtype=torch.float64) * 0.5
    c = torch.randn(H, dtype=torch.float64)

    class Affine(torch.nn.Module):
        def forward(self, t, h):
            return h @ A.T + c

    m = ODERNNForecaster(2, H, rtol=1e-10, atol=1e-12).double().eval()
    m.net.field = Affine()
    return m, A.numpy(), c.numpy()


def _flow(A, c, h, dt):
    """Exact flow of ``h' = A h + c`` over ``dt`` (either sign)."""
    H = len(h)
    M = np.zeros((H + 1, H + 1))
    M[:H, :H], M[:H, H] = A, c
    return (expm(M * dt) @ np.append(h, 1.0))[:H]


def test_ode_rnn_prediction_does_not_depend_on_the_other_query_times():
    m, A, c = _odernn_affine()
    nan = np.nan
    t = [torch.tensor([0.0, 0.4, 1.1, 2.0], dtype=torch.float64),
         torch.tensor([1.3, 1.5, 1.9], dtype=torch.float64)]  # fmt: skip
    v = [torch.tensor([[nan, 1.0], [2, nan], [1, 1], [3, 4]], dtype=torch.float64),
         torch.tensor([[1.0, 2], [nan, 3], [4, nan]], dtype=torch.float64)]  # fmt: skip
    ctx = IrregularBatch.from_lists(t, v)
    # queries shared by both series: series 1 starts at 1.3, after -5, 0.2 and 1.1
    times = [-5.0, 0.2, 1.1, 1.5, 1.7, 3.0]
    q = torch.tensor([times, times], dtype=torch.float64)

    # the hand recurrence: h = 0 arriving at t0, exact flow between points, GRU at each
    ref = np.zeros((2, len(times), 2))
    for s in range(2):
        tt, vv = t[s].numpy(), v[s]
        h, hs = np.zeros(4), []
        for i in range(len(tt)):
            if i:
                h = _flow(A, c, h, tt[i] - tt[i - 1])
            mk = (~torch.isnan(vv[i])).double()
            x = torch.cat([torch.nan_to_num(vv[i]) * mk, mk])[None]
            with torch.no_grad():
                h = m.net.cell(x, torch.tensor(h)[None])[0].numpy()
            hs.append(h.copy())
        for j, qq in enumerate(times):
            if qq < tt[0]:  # backcast from the initial state h(t0^-) = 0
                hq = _flow(A, c, np.zeros(4), qq - tt[0])
            else:  # a query at an observation time sits after it
                i = max(k for k in range(len(tt)) if tt[k] <= qq)
                hq = _flow(A, c, hs[i], qq - tt[i])
            with torch.no_grad():
                ref[s, j] = m.net.readout(torch.tensor(hq)).numpy()

    with torch.no_grad():
        together = m.predict(ctx, q).numpy()
        alone = np.stack([m.predict(ctx, q[:, j : j + 1]).numpy()[:, 0]
                          for j in range(len(times))], axis=1)  # fmt: skip
        reordered = m.predict(ctx, q.flip(1)).numpy()[:, ::-1]
        repeated = m.predict(ctx, q[:, [5, 0, 5]]).numpy()
    np.testing.assert_allclose(together, ref, atol=1e-8)
    np.testing.assert_allclose(alone, ref, atol=1e-8)
    np.testing.assert_allclose(reordered, ref, atol=1e-8)
    np.testing.assert_allclose(repeated, ref[:, [5, 0, 5]], atol=1e-8)


# --- OneCompartmentPK: each series is solved with its own doses --------------------------


def _bateman(t, dose, ka=1.5, ke=0.2, V=2.0):
    return dose * ka / (V * (ka - ke)) * (np.exp(-ke * t) - np.exp(-ka * t))


def _pk_panel():
    from odenet.fit import OneCompartmentPK, SeriesData

    doses = [1.0, 2.0, 4.0, 8.0]
    t = np.array([0.5, 1, 2, 4, 8, 12.0])
    values = [torch.tensor(_bateman(t, D))[:, None] for D in doses]
    b = IrregularBatch.from_lists([torch.tensor(t)] * 4, values)
    sd = SeriesData(b, [0, 1, 2, 3], ["conc"])
    m = OneCompartmentPK([[(0.0, D)] for D in doses], ka=1.5, ke=0.2, V=2.0, rtol=1e-10,
                         atol=1e-12)  # fmt: skip
    return sd, m, doses


def test_one_compartment_pk_subsets_use_their_own_series_doses():
    import pytest

    from odenet.fit import SeriesMismatchError

    sd, m, doses = _pk_panel()
    q = torch.tensor([[3.0, 6.0]] * 4, dtype=torch.float64)
    exact = np.array([_bateman(q[0].numpy(), D) for D in doses])
    with torch.no_grad():
        full = m.predict(sd.batch, q)[..., 0].numpy()
        sub = m.select([3, 1]).predict(sd.subset([3, 1]).batch, q[:2])[..., 0].numpy()
        loss = float(m.select([2, 3]).loss(sd.subset([2, 3]).batch))
    np.testing.assert_allclose(full, exact, rtol=1e-7)
    np.testing.assert_allclose(sub, exact[[3, 1]], rtol=1e-7)  # 2.4817 at t = 3 for dose 8
    assert loss < 1e-14  # the true parameters on noise-free data
    # rows that are not the model's series are refused, not read with other doses
    with pytest.raises(SeriesMismatchError, match=r"model\.select"):
        m.predict(sd.subset([3]).batch, q[:1])
    with pytest.raises(SeriesMismatchError, match="doses for 4"):
        m.loss(sd.subset([2, 3]).batch)
    # scoring: the context keeps the model's row order; a reordered target is refused
    from odenet.fit import fit

    r = fit(m, sd, None, iters=0)
    assert r.mse(sd, sd) < 1e-14
    with pytest.raises(SeriesMismatchError, match="keys its per-series data"):
        r.mse(sd, sd.subset([3, 2, 1, 0]))


def test_one_compartment_pk_minibatch_fit_keeps_each_series_doses():
    """From the true parameters on noise-free data, minibatches of one series each must
    stay at the truth (every minibatch loss is 0 there); with doses read by row
    position they drifted to (k_a, k_e, V) = (1.83, 0.166, 1.65)."""
    from odenet.fit import fit

    sd, m, _ = _pk_panel()
    fit(m, sd.batch, None, iters=30, batch_size=1, lr=1e-2, normalize=False)
    v = m.values()
    np.testing.assert_allclose([v["ka"], v["ke"], v["V"]], [1.5, 0.2, 2.0], rtol=2e-3)


# --- FitResult scoring pairs each target series with its own context ---------------------


def _interp_truth(ctx: IrregularBatch, tgt: IrregularBatch) -> float:
    """MSE of per-channel numpy.interp (the linear_interp model) at the target's points."""
    se, n = 0.0, 0
    for b in range(ctx.times.shape[0]):
        nc, nt = int(ctx.lengths[b]), int(tgt.lengths[b])
        for d in range(ctx.values.shape[-1]):
            o = ctx.mask[b, :nc, d] > 0
            m = tgt.mask[b, :nt, d] > 0
            p = np.interp(tgt.times[b, :nt][m].numpy(), ctx.times[b, :nc][o].numpy(),
                          ctx.values[b, :nc, d][o].numpy())  # fmt: skip
            se += float(((p - tgt.values[b, :nt, d][m].numpy()) ** 2).sum())
            n += int(m.sum())
    return se / n


def test_fit_result_scores_each_target_series_against_its_own_context():
    import pytest

    from odenet.fit import (
        LinearInterpolation,
        SeriesData,
        SeriesMismatchError,
        datasets,
        fit,
        split_tail,
    )

    d = datasets.lotka_volterra(5, observed=0.3, n_times=40, seed=0)
    w, tail = split_tail(d.batch, 0.2)
    ctx, tgt = SeriesData(w, d.ids, d.channels), SeriesData(tail, d.ids, d.channels)
    r = fit(LinearInterpolation(), w, None, iters=1)
    some = tgt.subset([4, 2, 3])
    truth = _interp_truth(ctx.subset([4, 2, 3]).batch, some.batch)
    assert abs(r.mse(ctx, some) - truth) < 1e-12  # paired by series id
    assert abs(r.mse(ctx, tgt) - _interp_truth(w, tail)) < 1e-12
    # batches carry no ids: rows are paired by position and the counts must agree
    with pytest.raises(SeriesMismatchError, match="context has 5 series but the target has 3"):
        r.mse(ctx.batch, some.batch)
    with pytest.raises(SeriesMismatchError, match="context has 3 series but the target has 5"):
        r.errors(ctx.subset([0, 1, 2]).batch, tail)
    with pytest.raises(SeriesMismatchError, match="not in the context"):
        r.mse(ctx.subset([0, 1]), some)
    with pytest.raises(SeriesMismatchError, match="`query_times` has 3 rows"):
        r.predict(ctx, some.batch.times)


# --- ShootingODE bidirectional: the backward pass starts where the channel is observed ----


def test_bidirectional_shooting_with_the_exact_field_is_exact_when_channels_are_missing():
    """Damped oscillator ``x' = v, v' = −4x − 0.2v`` as the model's (exact, linear) field,
    noise-free observations with channels missing at the observation after the queries.
    Every query follows a fully observed point, so forward and backward passes are both
    exact and so is their blend: ``expm(A t) x0``.  Starting the backward pass from a
    stale carried-forward value gave errors up to 0.21 (x missing at t = 2)."""
    from odenet.fit import ShootingODE

    A = torch.tensor([[0.0, 1.0], [-4.0, -0.2]], dtype=torch.float64)

    class Linear(torch.nn.Module):
        def forward(self, t, x):
            return x @ A.T

    def exact(x0, ts):
        return np.stack([expm(A.numpy() * s) @ np.array(x0) for s in ts])

    t0, t1 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 0.7, 1.6, 2.4, 3.1])
    o0, o1 = exact([1.0, 0.0], t0), exact([0.0, 1.0], t1)
    o0[2, 0] = np.nan  # x missing at t = 2 (v observed): x's next observation is t = 3
    o1[2, 1] = o1[3, 1] = np.nan  # v missing at 1.6 and 2.4: its next one is 3.1
    ctx = IrregularBatch.from_lists([torch.tensor(t0), torch.tensor(t1)],
                                    [torch.tensor(o0), torch.tensor(o1)])  # fmt: skip
    q = torch.tensor([[1.25, 1.5, 1.75, 0.5], [0.9, 1.2, 1.5, 0.3]], dtype=torch.float64)
    truth = np.stack([exact([1.0, 0.0], q[0].numpy()), exact([0.0, 1.0], q[1].numpy())])
    for bidirectional in (False, True):
        m = ShootingODE(Linear(), bidirectional=bidirectional, rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            p = m.double().predict(ctx, q).numpy()
        np.testing.assert_allclose(p, truth, atol=1e-8)
    # the two-sided blend is not the forward pass: with a wrong field they differ
    m = ShootingODE(Linear(), bidirectional=True, rtol=1e-10, atol=1e-12).double()
    A.mul_(1.1)
    with torch.no_grad():
        two, one = m.predict(ctx, q), ShootingODE(Linear()).double().predict(ctx, q)
    assert (two - one).abs().max() > 1e-3


# --- fit(normalize=False): "the channel mean" is the training mean in data units ----------


def test_mean_baselines_without_normalisation_use_the_training_mean():
    from odenet.fit import LOCF, TrainingMean, fit

    nan = np.nan
    t = [torch.tensor([0.0, 1, 2, 3], dtype=torch.float64)] * 2
    v = [torch.tensor([[10.0, nan], [12, 100], [11, nan], [13, 104]], dtype=torch.float64),
         torch.tensor([[20.0, 7], [22, nan], [21, 9], [23, nan]], dtype=torch.float64)]  # fmt: skip
    b = IrregularBatch.from_lists(t, v)
    mean = [np.mean([10, 12, 11, 13, 20, 22, 21, 23]), np.mean([100, 104, 7, 9])]  # 16.5, 55
    q = torch.tensor([[-1.0, 0.5, 5.0], [-1.0, 0.5, 5.0]], dtype=torch.float64)
    # LOCF by hand: the mean before a channel's first observation, else its last value
    locf = np.array([[mean, [10, mean[1]], [13, 104]], [mean, [20, 7], [23, 9]]])
    for normalize in (True, False):
        r = fit(TrainingMean(), b, None, normalize=normalize)
        np.testing.assert_allclose(r.predict(b, q).numpy(), np.broadcast_to(mean, (2, 3, 2)))
        r = fit(LOCF(), b, None, normalize=normalize)
        np.testing.assert_allclose(r.predict(b, q).numpy(), locf)


# --- GreyBoxMLE: a prediction does not depend on what was asked before --------------------


def test_greybox_mle_prediction_follows_a_change_of_doses(tmp_path):
    """Predict under doses A, change ``model.doses`` to B, predict again: the answer must
    be that of a fresh model with doses B and the same parameters (the context's initial
    states are re-estimated under B; the cached estimate under A was reused)."""
    from odenet.fit import GreyBoxMLE, fit
    from odenet.fit.mechanisms import build_field, load_mechanism

    (tmp_path / "pk.py").write_text(
        "import torch\n"
        "from odenet.fit.mechanisms import mechanism\n"
        "@mechanism(params={'ka': 1.0, 'ke': 0.2}, states=['gut', 'conc'],\n"
        "           x0={'gut': 0.0, 'conc': 0.0})\n"
        "def pk(t, x, p):\n"
        "    g, c = x[..., 0], x[..., 1]\n"
        "    return torch.stack([-p['ka'] * g, p['ka'] * g - p['ke'] * c], -1)\n"
    )
    pk = load_mechanism(f"{tmp_path / 'pk.py'}:pk")

    def conc(t, dose, ka=1.2, ke=0.25):
        return dose * ka / (ka - ke) * (np.exp(-ke * t) - np.exp(-ka * t))

    ts = [np.array([0.5, 1, 2, 4, 6, 8, 12.0]), np.array([0.25, 1.5, 3, 5, 9, 11.0])]
    doses_a, doses_b = [[(0.0, 4.0)], [(0.0, 2.0)]], [[(0.0, 8.0)], [(0.0, 1.0)]]
    b = IrregularBatch.from_lists([torch.tensor(t) for t in ts],
                                  [torch.tensor(conc(t, d[0][1]))[:, None]
                                   for t, d in zip(ts, doses_a)])  # fmt: skip

    def model(doses):
        return GreyBoxMLE(build_field(pk, channels=["conc"]), node_every=None,
                          fixed_x0={"gut": 0.0}, channels=["conc"], doses=doses,
                          dose_state="gut")  # fmt: skip

    m = model(doses_a)
    res = fit(m, b, None, iters=30, optimizer="gauss_newton")
    q = torch.tensor([[3.0, 7.0]] * 2, dtype=torch.float64)
    before = res.predict(b, q)
    m.doses = doses_b
    after = res.predict(b, q)
    fresh = model(doses_b)
    with torch.no_grad():
        fresh.field.raw.copy_(m.field.raw)
        want = fresh.predict(b, q)
    torch.testing.assert_close(after, want, rtol=1e-6, atol=1e-8)  # 3.0573, 1.2240 at s0
    assert (after - before).abs().max() > 0.1


# --- resuming after a max_seconds stop continues the uninterrupted run --------------------


def test_resume_after_max_seconds_stops_ends_like_an_uninterrupted_run(tmp_path):
    """``max_seconds=0`` stops after every iteration; resuming each time must give the
    parameters and validation history of one uninterrupted run (the stop saved the best
    validation weights as the model to resume, beside the last iterate's optimiser)."""
    from odenet.fit import datasets, fit
    from odenet.fit.cli import build_model

    data = datasets.lotka_volterra(8, observed=0.3, n_times=40, seed=0)
    tr, va = data.subset(range(6)), data.subset([6, 7])
    kw = dict(iters=10, lr=1e-2, batch_size=3, eval_every=2, patience=None, seed=3)
    torch.manual_seed(0)
    full = fit(build_model("gru_dt", 2, hidden=8, horizon=3), tr, va, **kw)
    ck = tmp_path / "run.pt"
    runs = 0
    while True:
        torch.manual_seed(0)
        r = fit(build_model("gru_dt", 2, hidden=8, horizon=3), tr, va, checkpoint=ck,
                resume=True, max_seconds=0.0, **kw)  # fmt: skip
        runs += 1
        if r.stop_reason != "max_seconds" or r.iterations >= kw["iters"] or runs > 12:
            break
    assert runs >= 9 and r.iterations == kw["iters"]
    assert r.history["val_loss"] == full.history["val_loss"]
    # the validation loss got worse at some evaluation, so best ≠ last iterate there
    assert min(full.history["val_loss"]) < full.history["val_loss"][-1]
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(r.model.state_dict()[k], v, rtol=0, atol=0)


# --- clear errors instead of raw tracebacks and misleading messages ----------------------


def test_training_on_one_point_series_is_refused_by_every_learnt_model():
    import pytest

    from odenet._errors import OdenetError
    from odenet.fit import GRUGrid, ODERNNForecaster, fit
    from odenet.fit.cli import build_model

    one = IrregularBatch.from_lists([torch.tensor([0.0]), torch.tensor([1.0])],
                                    [torch.tensor([[1.0]]), torch.tensor([[2.0]])])  # fmt: skip
    for name in ("gru_grid", "gru_dt", "gru_d", "ode_rnn", "neural_ode", "latent_ode",
                 "neural_cde"):  # fmt: skip
        with pytest.raises(OdenetError, match="at least two observation times, but every"):
            fit(build_model(name, 1, hidden=4, horizon=2), one, None, iters=1)
    with pytest.raises(OdenetError, match="no series has two observation times"):
        GRUGrid(1).set_grid(one)
    # a minibatch of one-point series among longer ones scores nothing: 0, not a crash
    m = ODERNNForecaster(1, 4, horizon=2).double()
    loss = m.loss(one)
    assert float(loss) == 0.0 and loss.requires_grad
    # the fixed baselines need no training pairs
    assert fit(build_model("locf", 1), one, None).stop_reason == "nothing_to_train"


def test_neural_cde_answers_repeated_and_unsorted_query_times():
    """``predict`` at ``[3, 1, 3, 2]`` equals the four times asked one at a time (merged
    queries failed with an error about batch padding when a time repeated)."""
    from odenet.fit import NeuralCDEForecaster, datasets

    torch.manual_seed(0)
    d = datasets.lotka_volterra(3, observed=0.4, n_times=25, t_end=8.0, seed=0)
    m = NeuralCDEForecaster(2, 8).double().eval()
    m.set_grid(d.batch)
    q = torch.tensor([[3.0, 1.0, 3.0, 2.0]] * 3, dtype=torch.float64)
    with torch.no_grad():
        together = m.predict(d.batch, q)
        alone = torch.stack([m.predict(d.batch, q[:, j : j + 1])[:, 0] for j in range(4)], 1)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-12)


def test_shooting_ode_query_at_an_observation_time_returns_it_at_any_magnitude():
    """Hourly observations in Unix seconds (t ≈ 1.7e9, float64) and float32 times: a query
    at an observation time returns the observation and one between follows the exact
    flow (an absolute 1e-9 nudge vanished there and the solver refused ``[t0, t0]``)."""
    from odenet.fit import ShootingODE

    A = torch.tensor([[0.0, 1.0], [-4.0, -0.2]], dtype=torch.float64) / 3600

    class Linear(torch.nn.Module):
        def forward(self, t, x):
            return x @ A.T

    k = np.arange(5.0)
    obs = np.stack([expm(A.numpy() * 3600 * s) @ np.array([1.0, 0.0]) for s in k])
    times = torch.tensor(1.7e9 + 3600 * k, dtype=torch.float64)
    ctx = IrregularBatch.from_lists([times], [torch.tensor(obs)])
    q = torch.tensor([[1.7e9 + 3600, 1.7e9 + 5400, 1.7e9 + 4 * 3600]], dtype=torch.float64)
    want = np.stack([obs[1], expm(A.numpy() * 5400) @ np.array([1.0, 0.0]), obs[4]])
    for bidirectional in (False, True):
        m = ShootingODE(Linear(), bidirectional=bidirectional, rtol=1e-10, atol=1e-12).double()
        with torch.no_grad():
            np.testing.assert_allclose(m.predict(ctx, q)[0].numpy(), want, atol=1e-8)
    # float32 times at ordinary magnitudes: 1.0 + 1e-9 == 1.0 there too
    ctx32 = IrregularBatch.from_lists([torch.tensor([0.5, 1.0, 4.0])],
                                      [torch.tensor(obs[:3])])  # fmt: skip
    with torch.no_grad():
        got = ShootingODE(Linear()).double().predict(ctx32, torch.tensor([[1.0]]))
    np.testing.assert_allclose(got[0, 0].numpy(), obs[1])


def test_every_model_fits_and_predicts_float32_data():
    """float32 batches (torch's default dtype): the normaliser takes the data's dtype (its
    float64 statistics made float64 inputs for the float32 model, and the dtype error was
    blamed on the vector field's signature).  The baselines' scores equal float64's."""
    import warnings

    from odenet.fit import fit
    from odenet.fit.cli import build_model

    torch.manual_seed(0)
    t = [torch.tensor([0.0, 0.7, 1.9, 3.0, 4.2]), torch.tensor([0.5, 1.0, 2.2, 4.0])]
    v = [torch.randn(5, 2), torch.randn(4, 2)]
    ctx32 = IrregularBatch.from_lists(t, v)
    ctx64 = IrregularBatch.from_lists([x.double() for x in t], [x.double() for x in v])
    q = torch.tensor([[0.0, 0.3, 5.0], [0.5, 0.7, 5.0]])  # at, between and after observations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32 is below some default tolerances
        for name in ("neural_ode", "neural_ode_bidir", "ode_rnn", "latent_ode", "neural_cde",
                     "gru_grid", "gru_dt", "gru_d", "locf", "mean", "linear_interp"):  # fmt: skip
            r = fit(build_model(name, 2, hidden=4, horizon=2), ctx32, None, iters=2)
            p = r.predict(ctx32, q)
            assert p.dtype == torch.float32 and bool(torch.isfinite(p).all()), name
            if name in ("locf", "mean", "linear_interp"):
                r64 = fit(build_model(name, 2), ctx64, None)
                torch.testing.assert_close(p.double(), r64.predict(ctx64, q.double()),
                                           rtol=1e-5, atol=1e-6)  # fmt: skip


def test_neural_cde_predicts_at_a_series_first_observation_time():
    """A query at the first observation was merged 1e-9 past it, exactly where the model
    moved its own first output: a "not strictly increasing" error.  The answer is the
    limit from the right."""
    from odenet.fit import NeuralCDEForecaster

    torch.manual_seed(0)
    times = [torch.tensor([0.0, 0.7, 1.9]), torch.tensor([0.5, 1.0, 2.2])]
    values = [torch.randn(3, 2, dtype=torch.float64) for _ in times]
    ctx = IrregularBatch.from_lists([x.double() for x in times], values)
    m = NeuralCDEForecaster(2, 4, rtol=1e-9, atol=1e-11).double().eval()
    m.set_grid(ctx)
    with torch.no_grad():
        at = m.predict(ctx, torch.tensor([[0.0], [0.5]], dtype=torch.float64))
        near = m.predict(ctx, torch.tensor([[1e-7], [0.5 + 1e-7]], dtype=torch.float64))
    torch.testing.assert_close(at, near, rtol=0, atol=1e-5)


# --- grey-box MLE: built-in mechanisms per series, and the mechanism's own error ----------


def test_builtin_mechanism_fits_a_per_series_parameter():
    """Noise-free damped oscillators (exact ``expm``) with ζ = 0.05, 0.15, 0.3 per series:
    the built-in field with ``per_series=["zeta"]`` recovers each ζ and the shared ω (it
    indexed ``y[..., 0]``, broadcast a column of ζ into [K, K] and failed as "the initial
    guess makes the ODE fail")."""
    from odenet.fit import GreyBoxField, GreyBoxMLE, fit
    from odenet.fit.datasets import damped_oscillator_field, lotka_volterra_field

    omega, zetas = 2.0, [0.05, 0.15, 0.3]
    t = np.linspace(0, 6, 15)

    def A(z):
        return np.array([[0, 1], [-(omega**2), -2 * z * omega]])

    vals = [np.stack([expm(A(z) * s) @ np.array([1.0, 0.5]) for s in t]) for z in zetas]
    b = IrregularBatch.from_lists([torch.tensor(t)] * 3, [torch.tensor(v) for v in vals])
    m = GreyBoxMLE(GreyBoxField(damped_oscillator_field, {"omega": 1.8, "zeta": 0.2}),
                   per_series=["zeta"], node_every=None, rtol=1e-9, atol=1e-11)  # fmt: skip
    fit(m, b, None, iters=50, optimizer="gauss_newton")
    assert abs(m.values()["omega"] - omega) < 1e-6
    np.testing.assert_allclose(m.series_raw[:, 0].exp().numpy(), zetas, rtol=1e-5)
    # columns of parameters give, row by row, what scalars give
    y = torch.randn(4, 2, dtype=torch.float64)
    col = torch.tensor([[0.5], [1.0], [1.5], [2.0]], dtype=torch.float64)
    p = {"alpha": col, "beta": 1.3, "gamma": 0.7, "delta": col * 2}
    rows = [lotka_volterra_field(0.0, y[k], {**p, "alpha": col[k, 0], "delta": 2 * col[k, 0]})
            for k in range(4)]  # fmt: skip
    torch.testing.assert_close(lotka_volterra_field(0.0, y, p), torch.stack(rows))


def test_greybox_mle_names_the_mechanism_error_at_the_initial_guess():
    import pytest

    import odenet
    from odenet.fit import GreyBoxField, GreyBoxMLE, datasets

    def typo(t, x, p):
        return torch.cat([x[..., 1:2], -(p["omgea"] ** 2) * x[..., 0:1]], -1)

    d = datasets.damped_oscillator(2, observed=0.4, n_times=20, seed=0)
    m = GreyBoxMLE(GreyBoxField(typo, {"omega": 1.0}))
    want = r"initial guess makes the ODE fail \(.*KeyError.*omgea"
    with pytest.raises(odenet.SolverError, match=want):
        m.gauss_newton(d.batch)


def test_load_long_refuses_rows_without_a_series_id(tmp_path):
    """Empty id cells in a CSV were gathered silently into one series named ''; NaN ids
    in a DataFrame made one series per row."""
    import pandas as pd
    import pytest

    from odenet.fit import DataFormatError, load_long

    path = tmp_path / "t.csv"
    path.write_text("id,time,y\na,0,1\na,1,2\n,2,3\n,3,4\nb,0,1\nb,1,2\n")
    with pytest.raises(DataFormatError, match="line 4 of the CSV, column 'id': missing series id"):
        load_long(path)
    df = pd.DataFrame({"id": [1, 1, np.nan, np.nan, 2, 2], "time": [0, 1, 2, 3, 0, 1],
                       "y": [1, 2, 3, 4, 1, 2.0]})  # fmt: skip
    with pytest.raises(DataFormatError, match="row 2, column 'id': missing series id"):
        load_long(df)
    ok = load_long(pd.DataFrame({"id": ["a", "a"], "time": [0, 1], "y": [1.0, 2.0]}))
    assert ok.ids == ["a"]
