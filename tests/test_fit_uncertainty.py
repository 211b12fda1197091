"""Honest uncertainty of grey-box fits: identifiability flags, calibrated standard errors,
prediction bands, and user mechanisms with per-series parameters, pinned initial states
and covariates (API and CLI).  Truth is synthetic data from scipy's solve_ivp or closed
forms, never odenet's own integrator."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import solve_ivp

from odenet.batch import IrregularBatch
from odenet.fit.greybox import GreyBoxField, GreyBoxMLE


def decay(t, x, p):
    return -p["k"] * x


def logistic(t, x, p):
    return p["r"] * x * (1 - x / p["K"])


def _batch(times, values):
    return IrregularBatch.from_lists(
        [torch.as_tensor(t, dtype=torch.float64) for t in times],
        [torch.as_tensor(v, dtype=torch.float64).reshape(len(v), -1) for v in values],
    )


def test_capacity_far_above_the_data_is_flagged_not_identifiable_with_infinite_se():
    """Logistic growth observed only while it still looks exponential (K = 1000, y ≤ 7):
    K is reported as not identifiable (SE = inf, a warning naming it), r is still
    estimated within 2 SE of the truth."""
    rng = np.random.default_rng(0)
    ts, vs = [], []
    for _ in range(4):
        t = np.sort(rng.uniform(0, 2, 8))
        t[0] = 0.0
        y = 1000 / (1 + 999 * np.exp(-t))
        ts.append(t)
        vs.append(y * (1 + 0.02 * rng.standard_normal(8)))
    model = GreyBoxMLE(GreyBoxField(logistic, {"r": 0.5, "K": 50.0}), rtol=1e-6, atol=1e-8)
    info = model.gauss_newton(_batch(ts, vs), max_iter=20)
    assert "K" in info["unidentifiable"]
    assert math.isinf(info["std_errors"]["K"])
    assert any("not identifiable" in w and "K" in w for w in info["warnings"])
    r, se_r = model.values()["r"], info["std_errors"]["r"]
    assert "r" not in info["unidentifiable"] and math.isfinite(se_r)
    assert abs(r - 1.0) < 2 * se_r


def test_parameters_entering_only_as_a_product_are_both_flagged():
    """x' = −a·b·x: only a·b is determined; the Jacobian has a null direction, so a and b
    get infinite standard errors and the rank is one short."""
    t = np.linspace(0, 3, 10)
    y = 2 * np.exp(-0.6 * t)
    field = GreyBoxField(lambda t, x, p: -p["a"] * p["b"] * x, {"a": 1.0, "b": 1.0})
    model = GreyBoxMLE(field, node_every=None, rtol=1e-8, atol=1e-10)
    info = model.gauss_newton(_batch([t, t], [y, 0.5 * y]), max_iter=30)
    assert set(info["unidentifiable"]) >= {"a", "b"}
    assert info["rank"] == info["n_unknowns"] - 1
    assert all(math.isinf(v) for v in info["std_errors"].values())
    assert model.values()["a"] * model.values()["b"] == pytest.approx(0.6, rel=1e-5)


def test_nominal_95_percent_intervals_cover_about_95_percent_of_true_values():
    """Monte Carlo coverage: 60 independent series (per-series decay rates, truth 0.7,
    noise σ = 0.05), one fit; each 95 % interval k̂ ± 1.96 SE should contain 0.7 with
    probability 0.95 (Binomial(60, .95): ≥ 53 hits with probability > 98 %), and the
    reported SEs should match the spread of the estimates."""
    rng = np.random.default_rng(1)
    t = np.linspace(0, 3, 8)
    B = 60
    ys = [2.0 * np.exp(-0.7 * t) + 0.05 * rng.standard_normal(8) for _ in range(B)]
    model = GreyBoxMLE(GreyBoxField(decay, {"k": 1.0}), node_every=None, rtol=1e-7,
                       atol=1e-9, per_series=["k"])  # fmt: skip
    info = model.gauss_newton(_batch([t] * B, ys), max_iter=30)
    k = np.array(info["series_params"]["k"])
    se = np.array(info["series_std_errors"]["k"])
    hits = int((np.abs(k - 0.7) < 1.96 * se).sum())
    assert hits >= 53, hits
    assert 0.75 < np.std(k) / np.mean(se) < 1.33
    assert 0.04 < info["sigma"] < 0.06


def test_delta_method_prediction_band_covers_new_observations():
    """Shared k fitted on 10 series; a new context series' prediction interval at later
    times contains ~95 % of fresh noisy observations there (truth from the closed form)."""
    rng = np.random.default_rng(2)
    t = np.linspace(0, 2, 6)
    sigma, k = 0.05, 0.7
    ys = [2.0 * np.exp(-k * t) + sigma * rng.standard_normal(6) for _ in range(10)]
    model = GreyBoxMLE(GreyBoxField(decay, {"k": 1.0}), node_every=None, rtol=1e-8,
                       atol=1e-10)  # fmt: skip
    model.gauss_newton(_batch([t] * 10, ys), max_iter=30)
    ctx = _batch([t], [1.5 * np.exp(-k * t) + sigma * rng.standard_normal(6)])
    q = torch.tensor([[2.5, 3.0, 4.0]], dtype=torch.float64)
    lo, mid, hi = model.band(ctx, q, level=0.95)
    truth = 1.5 * np.exp(-k * q.numpy()[0])
    draws = truth[None, :] + sigma * rng.standard_normal((400, 3))
    inside = (draws > lo[0, :, 0].numpy()) & (draws < hi[0, :, 0].numpy())
    assert 0.90 < inside.mean() < 0.99
    assert np.all(np.abs(mid[0, :, 0].numpy() - truth) < 0.5 * (hi - lo)[0, :, 0].numpy())
    lo_c, _, hi_c = model.band(ctx, q, prediction=False)  # the mean curve's band is narrower
    assert bool(((hi_c - lo_c) < (hi - lo)).all())


# --- a user mechanism: per-series parameters, a pinned initial state, a covariate -----

MECH = textwrap.dedent(
    """
    import torch
    from odenet.fit import mechanism

    @mechanism(params={"ka": 1.0, "cl": 0.1}, states=["depot", "conc"],
               covariates=["weight"], x0={"depot": 5.0})
    def oral(t, x, p):
        depot, conc = x[..., 0:1], x[..., 1:2]
        ke = p["cl"] * p["weight"]
        return torch.cat([-p["ka"] * depot, p["ka"] * depot - ke * conc], -1)
    """
)
TRUE_CL = 0.05
TRUE_KA = [0.6, 0.9, 1.2, 1.5, 0.8, 1.1]
WEIGHT = [1.0, 2.0, 3.0, 1.5, 2.5, 2.0]
DOSE = [6.0, 8.0, 5.0, 7.0, 9.0, 6.5]


def _pk_csv(path, seed=3, noise=0.03):
    """Oral one-compartment data (scipy DOP853), conc observed, depot latent."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (ka, w, dose) in enumerate(zip(TRUE_KA, WEIGHT, DOSE)):
        t = np.sort(np.concatenate([[0.0], rng.uniform(0.2, 12, 13)]))
        ke = TRUE_CL * w

        def f(_, y, ka=ka, ke=ke):
            return [-ka * y[0], ka * y[0] - ke * y[1]]

        sol = solve_ivp(f, (0, 12), [dose, 0.0], t_eval=t, method="DOP853", rtol=1e-11,
                        atol=1e-12)  # fmt: skip
        conc = sol.y[1] + noise * rng.standard_normal(len(t))
        rows += [{"id": f"s{i}", "time": tt, "conc": c, "weight": w} for tt, c in zip(t, conc)]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_user_mechanism_with_per_series_parameter_pinned_state_and_covariate_from_the_cli(
    tmp_path, capsys
):
    """One command: a mechanism in the user's file, ka per series, conc(0) pinned at 0, the
    covariate weight scaling the elimination; the shared clearance and the per-series ka
    are recovered within 2 standard errors (the data are simulated with scipy)."""
    from odenet.fit.cli import main

    (tmp_path / "mech.py").write_text(MECH)
    _pk_csv(tmp_path / "pk.csv")
    rc = main(["fit", str(tmp_path / "pk.csv"), "--model", "greybox_mle", "--mechanism",
               f"{tmp_path / 'mech.py'}:oral", "--per-series", "ka", "--fix-x0", "conc=0",
               "--covariates", "weight", "--iters", "40", "--checkpoint",
               str(tmp_path / "ck.pt"), "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["covariates"] == ["weight"] and out["channels"] == ["conc"]
    cl, se_cl = out["parameters"]["cl"], out["std_errors"]["cl"]
    assert abs(cl - TRUE_CL) < 2 * se_cl, (cl, se_cl)
    assert se_cl < 0.2 * TRUE_CL
    ka = out["series_parameters"]["ka"]
    se_ka = out["series_std_errors"]["ka"]
    z = [abs(ka[f"s{i}"] - TRUE_KA[i]) / se_ka[f"s{i}"] for i in range(6)]
    assert max(z) < 2, z
    assert out["identifiability"]["unidentifiable"] == []
    assert out["stop_reason"] in ("converged", "no_decrease")


def test_pinned_initial_state_is_exactly_the_pinned_value_and_covariates_are_not_scored():
    """API: fixed_x0 removes the unknown (x0 == the pinned value) and the covariate
    channel is neither fitted nor scored."""
    import tempfile
    from pathlib import Path

    from odenet.fit.data import load_long
    from odenet.fit.mechanisms import build_field, load_mechanism

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "mech.py").write_text(MECH)
        _pk_csv(Path(d) / "pk.csv")
        desc = load_mechanism(f"{d}/mech.py:oral")
        data = load_long(Path(d) / "pk.csv", channels=["conc", "weight"])
    field = build_field(desc)
    model = GreyBoxMLE(field, per_series=["ka"], fixed_x0={"conc": 0.0}, channels=["conc"])
    info = model.gauss_newton(data.batch, max_iter=40)
    assert np.all(info["x0"][:, 1] == 0.0)
    np.testing.assert_allclose(info["x0"][:, 0], DOSE, rtol=0.1)
    pred = model.predict(data.batch, data.batch.times)
    assert pred.shape[-1] == 1  # conc only: the covariate is an input


def test_mechanism_errors_name_the_problem(tmp_path):
    from odenet.fit.greybox import MechanismError
    from odenet.fit.mechanisms import build_field, load_mechanism, parse_assignments

    with pytest.raises(MechanismError, match="neither a built-in"):
        load_mechanism("nonsense")
    with pytest.raises(MechanismError, match="does not exist"):
        load_mechanism(f"{tmp_path}/missing.py:f")
    (tmp_path / "m.py").write_text("def f(t, x, p):\n    return x\n")
    with pytest.raises(MechanismError, match="give the function its parameters"):
        load_mechanism(f"{tmp_path}/m.py:f")
    with pytest.raises(MechanismError, match="has no function 'g'"):
        load_mechanism(f"{tmp_path}/m.py:g")
    (tmp_path / "bad.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(MechanismError, match=r"importing .* failed with RuntimeError: boom"):
        load_mechanism(f"{tmp_path}/bad.py:f")
    with pytest.raises(MechanismError, match="NAME=NUMBER"):
        parse_assignments(["k"], "--param")
    (tmp_path / "m2.py").write_text(MECH)
    with pytest.raises(MechanismError, match=r"--fix names \['nope'\]"):
        build_field(load_mechanism(f"{tmp_path}/m2.py:oral"), fixed={"nope": 1.0})
    # a mechanism returning the wrong shape is a typed error, not an IndexError
    bad = GreyBoxField(lambda t, x, p: x.sum(-1), {"k": 1.0})
    with pytest.raises(MechanismError, match="must return dx/dt with the state's shape"):
        GreyBoxMLE(bad, node_every=None).gauss_newton(_batch([np.linspace(0, 1, 4)], [np.ones(4)]))
