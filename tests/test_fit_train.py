"""odenet.fit.train: checkpoints load with weights_only, resume equals an uninterrupted run,
early stopping, errors; the ``odenet fit`` subcommand end to end."""

import argparse
import json
import math

import pytest
import torch

from odenet._errors import InputError
from odenet.fit import GRUD, datasets, fit, load_checkpoint, neural_ode
from odenet.fit.data import to_long


def data(n=6, seed=0):
    return datasets.lotka_volterra(n, observed=0.4, n_times=25, t_end=8.0, seed=seed)


def test_checkpoint_loads_with_weights_only_and_predicts_identically(tmp_path):
    d = data()
    ck = tmp_path / "m.pt"
    torch.manual_seed(0)
    res = fit(neural_ode(2, 8, rtol=1e-4, atol=1e-6), d, iters=4, batch_size=3, checkpoint=ck)
    state = torch.load(ck, weights_only=True)
    assert state["iteration"] == 4 and state["model_class"] == "ShootingODE"
    fresh = neural_ode(2, 8, rtol=1e-4, atol=1e-6).double()
    fresh.load_state_dict(state["model"])
    q = torch.tensor([[1.0, 2.5, 9.0]] * d.n_series, dtype=torch.float64)
    from odenet.fit import Normalizer

    norm = Normalizer(2)
    norm.load_state_dict(state["normalizer"])
    with torch.no_grad():
        p_loaded = norm.inverse(fresh.predict(norm.transform(d.batch), q))
    torch.testing.assert_close(p_loaded, res.predict(d, q), rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file


class Interrupt(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_parameters(tmp_path):
    d = data()
    val = data(3, seed=1)

    def run(ck, stop_at=None):
        torch.manual_seed(0)
        model = GRUD(2, 8, horizon=2)

        def cb(it, loss):
            if stop_at is not None and it == stop_at:
                raise Interrupt

        fit(model, d, val, iters=12, batch_size=3, eval_every=2, checkpoint=ck,
            checkpoint_every=4, resume=True, callback=cb)  # fmt: skip
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    straight = run(tmp_path / "a.pt")
    with pytest.raises(Interrupt):
        run(tmp_path / "b.pt", stop_at=7)  # last checkpoint at iteration 4
    assert load_checkpoint(tmp_path / "b.pt")["iteration"] == 4
    torch.manual_seed(123)  # a different global state must not matter: it is restored
    resumed = run(tmp_path / "b.pt")
    torch.testing.assert_close(resumed, straight, rtol=0, atol=0)


def test_resume_with_other_optimiser_settings_is_refused_naming_each(tmp_path):
    """Resuming restores the optimiser and schedule states, which carry the stored lr,
    weight decay and cosine T_max: a resume with lr=0.5 and iters=40 of a run with
    lr=0.01 and iters=20 silently kept lr 0.01 and T_max 20 (the cosine climbed back to
    0.01 by step 40).  Each differing setting is named; the same settings resume."""
    from odenet.fit import CheckpointError

    d = data()
    ck = tmp_path / "c.pt"
    kw = dict(iters=4, lr=0.01, batch_size=3, checkpoint=ck)
    fit(GRUD(2, 8, horizon=2), d, **kw)
    for change, needle in ((dict(lr=0.5), "lr: checkpoint 0.01 vs now 0.5"),
                           (dict(batch_size=2), "batch_size: checkpoint 3 vs now 2"),
                           (dict(iters=8), "iters: checkpoint 4 vs now 8"),
                           (dict(weight_decay=0.1), "weight_decay: checkpoint 0.0 vs now 0.1"),
                           (dict(optimizer="lbfgs"), "optimizer: checkpoint 'adam'")):  # fmt: skip
        with pytest.raises(CheckpointError, match=needle) as e:
            fit(GRUD(2, 8, horizon=2), d, **{**kw, **change}, resume=True)
        assert "--force" in str(e.value)
    res = fit(GRUD(2, 8, horizon=2), d, **kw, resume=True)  # the same settings: done already
    assert res.iterations == 4


def test_early_stopping_returns_the_best_validation_model():
    d = data()
    torch.manual_seed(0)
    res = fit(GRUD(2, 8, horizon=2), d, data(3, seed=1), iters=400, lr=0.3, batch_size=3,
              eval_every=2, patience=2)  # fmt: skip
    assert res.stopped_early and res.iterations < 400
    assert res.best_val == min(res.history["val_loss"])


def test_fit_argument_errors():
    d = data()
    with pytest.raises(InputError, match="needs `loss\\(batch\\)` and `predict"):
        fit(torch.nn.Linear(2, 2), d)
    with pytest.raises(InputError, match="`optimizer` must be 'adam', 'lbfgs' or 'gauss_newton'"):
        fit(GRUD(2, 4), d, iters=1, optimizer="sgd")
    with pytest.raises(InputError, match="`iters` must be a non-negative integer"):
        fit(GRUD(2, 4), d, iters=-1)


def test_cli_fit_subcommand_end_to_end(tmp_path, capsys):
    from odenet.fit.cli import register

    csv = tmp_path / "lv.csv"
    to_long(datasets.lotka_volterra(10, observed=0.6, n_times=30, seed=0)).to_csv(csv, index=False)
    parser = argparse.ArgumentParser(prog="odenet")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fit", str(csv), "--model", "gru_d", "--iters", "3", "--json",
                              "--checkpoint", str(tmp_path / "c.pt"), "--no-progress",
                              "--plot", str(tmp_path / "fit.png")])  # fmt: skip
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["iterations"] == 3 and out["interp_mse"] > 0 and out["extrap_mse"] > 0
    assert (tmp_path / "fit.png").exists() and (tmp_path / "c.pt").exists()
    bad = parser.parse_args(["fit", str(csv), "--model", "greybox"])
    with pytest.raises(InputError, match="--model greybox needs --mechanism"):
        bad.func(bad)


def test_cli_fits_a_mechanism_by_maximum_likelihood(tmp_path, capsys):
    # `odenet fit --model greybox_mle` recovers the generating LV parameters (noiseless data)
    from odenet.fit.cli import register

    csv = tmp_path / "lv.csv"
    data = datasets.lotka_volterra(4, observed=0.6, n_times=30, noise=0.0, seed=1)
    to_long(data).to_csv(csv, index=False)
    parser = argparse.ArgumentParser(prog="odenet")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fit", str(csv), "--model", "greybox_mle", "--mechanism",
                              "lotka_volterra", "--iters", "30", "--json", "--no-progress",
                              "--checkpoint", str(tmp_path / "c.pt")])  # fmt: skip
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    truth = data.meta["params"]
    for k, v in out["parameters"].items():
        assert abs(v - truth[k]) / abs(truth[k]) < 1e-3, (k, v, truth[k])
    hybrid = parser.parse_args(["fit", str(csv), "--model", "greybox_mle", "--mechanism",
                                "lotka_volterra", "--hybrid"])  # fmt: skip
    with pytest.raises(InputError, match="--hybrid adds a neural correction"):
        hybrid.func(hybrid)


# every model kind: fit, predict and score on explicit CPU data under a "meta" default
# device, so a tensor created without `device=` (a CUDA fit's device-mismatch error) fails
DEVICE_KINDS = ["neural_ode", "neural_ode_bidir", "neural_cde", "ode_rnn", "latent_ode",
                "gru_grid", "gru_dt", "gru_d", "linear_interp", "locf", "mean", "greybox",
                "greybox_mle"]  # fmt: skip


@pytest.mark.parametrize("kind", DEVICE_KINDS)
def test_fit_creates_its_tensors_on_the_data_device_not_the_default_one(kind):
    from odenet.fit.cli import build_model

    d = datasets.lotka_volterra(3, observed=0.5, n_times=8, t_end=4.0, seed=0)
    torch.manual_seed(0)
    mech = "lotka_volterra" if kind.startswith("greybox") else None
    model = build_model(kind, 2, hidden=4, horizon=2, mechanism=mech)
    t = d.batch.times
    q = torch.cat([t[:, :1] - 0.3, t[:, 1:3] + 0.1], 1)
    opt = {"optimizer": "gauss_newton"} if kind == "greybox_mle" else {}
    with torch.device("meta"):
        res = fit(model, d, d, iters=2, batch_size=2, eval_every=1, **opt)
        p = res.predict(d, q)
        mse = res.mse(d, d)
    assert p.device.type == "cpu" and bool(torch.isfinite(p).all()) and math.isfinite(mse)
