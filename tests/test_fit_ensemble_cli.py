"""`odenet fit --ensemble M` writes one checkpoint with every member; `odenet predict
--band` reads it back: mean of the members and the Gaussian band of their spread plus
the calibrated noise, recomputed here from the members' own predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import torch

from odenet.fit import datasets, load_fit, to_long
from odenet.fit.cli import main
from odenet.fit.ensemble import EnsembleFit


@pytest.fixture
def osc_csv(tmp_path):
    data = datasets.damped_oscillator(6, observed=0.5, n_times=30, noise=0.05, seed=0)
    path = tmp_path / "osc.csv"
    to_long(data).to_csv(path, index=False)
    return path


def test_ensemble_checkpoint_round_trip_and_predict_band(osc_csv, tmp_path, capsys):
    ck = tmp_path / "ens.pt"
    rc = main(["fit", str(osc_csv), "--model", "neural_ode", "--hidden", "8", "--horizon", "2",
               "--iters", "4", "--ensemble", "3", "--checkpoint", str(ck), "--json",
               "--no-progress"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["ensemble"] == 3
    res = load_fit(ck)
    assert isinstance(res, EnsembleFit) and len(res.members) == 3
    rc = main(["predict", str(ck), "--data", str(osc_csv), "--times", "1.5,4,12", "--band",
               "--level", "0.9", "--json"])  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(rows) == 6 * 3
    got = np.array([[r["x"], r["x_lo"], r["x_hi"]] for r in rows]).reshape(6, 3, 3)
    # the band by hand: t_0.95 · sqrt((1 + 1/M)·unbiased member variance + sigma²)
    from odenet.fit import load_long

    data = load_long(osc_csv, channels=["x", "v"])
    q = torch.tensor([1.5, 4.0, 12.0], dtype=torch.float64)[None].expand(6, -1)
    P = torch.stack([m.predict(data.batch, q) for m in res.members])[..., 0]
    assert not torch.allclose(P[0], P[1])  # members from different seeds
    v, s2 = (1 + 1 / 3) * P.var(0), res.sigma[0] ** 2
    dof = ((v + s2) ** 2 * 2 / v**2).clamp(max=1e6)  # Welch–Satterthwaite, M − 1 = 2
    half = torch.as_tensor(scipy.stats.t.ppf(0.95, dof.numpy())) * (v + s2).sqrt()
    mean = P.mean(0)
    np.testing.assert_allclose(got[..., 0], mean.numpy(), rtol=1e-9)
    np.testing.assert_allclose(got[..., 1], (mean - half).numpy(), rtol=1e-9)
    np.testing.assert_allclose(got[..., 2], (mean + half).numpy(), rtol=1e-9)
    # the checkpoint reproduces the fit's own score (same members, same scaling)
    assert summary["band_noise_sigma"]["x"] == pytest.approx(float(res.sigma[0]))


@pytest.mark.parametrize("extra, needle", [
    (["--ensemble", "1"], "--ensemble must be 0 (one model) or at least 2"),
    (["--ensemble", "2", "--folds", "2"], "does not combine with --folds"),
    (["--ensemble", "2", "--model", "greybox_mle", "--mechanism", "damped_oscillator"],
     "--ensemble is for black-box models"),
])  # fmt: skip
def test_bad_ensemble_options_are_one_line_errors(osc_csv, tmp_path, capsys, extra, needle):
    rc = main(["fit", str(osc_csv), "--iters", "1", "--checkpoint", str(tmp_path / "c.pt"),
               *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and needle in err, err


def test_predict_band_on_a_single_black_box_model_says_how_to_get_one(osc_csv, tmp_path, capsys):
    ck = tmp_path / "one.pt"
    assert main(["fit", str(osc_csv), "--hidden", "8", "--iters", "2", "--checkpoint", str(ck),
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    rc = main(["predict", str(ck), "--data", str(osc_csv), "--times", "1", "--band"])
    err = capsys.readouterr().err
    assert rc == 2 and "odenet fit --ensemble M" in err, err
