"""Bolus doses as events on the state inside GreyBoxMLE, checked against the closed-form
one-compartment multiple-dose solution (superposition of Bateman functions),

    C(t) = Σ_d A_d k_a / (k_a − k_e) (e^{−k_e (t − t_d)} − e^{−k_a (t − t_d)}),  t > t_d,

never against odenet's own integrator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odenet import OdenetError
from odenet.batch import IrregularBatch
from odenet.fit.greybox import GreyBoxField, GreyBoxMLE

KA, KE = 1.2, 0.15
# dose at the first observation, several doses, and a dose before the first observation
DOSES = [[(0.0, 4.0), (12.0, 4.0), (24.0, 4.0)],
         [(0.0, 6.0), (8.0, 3.0), (16.0, 3.0), (24.0, 3.0)],
         [(-1.0, 5.0), (11.0, 5.0)]]  # fmt: skip


def oral(t, x, p):
    gut, conc = x[..., 0:1], x[..., 1:2]
    return torch.cat([-p["ka"] * gut, p["ka"] * gut - p["ke"] * conc], -1)


def closed_form(t, doses, ka=KA, ke=KE):
    c = np.zeros_like(t, dtype=float)
    for td, amount in doses:
        tau = np.clip(t - td, 0, None)
        c += np.where(t > td, amount * ka / (ka - ke) * (np.exp(-ke * tau) - np.exp(-ka * tau)), 0)
    return c


def _data(seed=0, noise=0.05, n=12):
    """Each series sampled at random times plus exactly at two dose times (troughs)."""
    rng = np.random.default_rng(seed)
    times, values = [], []
    for d in DOSES:
        t = np.unique(np.concatenate([[0.0, 12.0, 24.0], rng.uniform(0.2, 36, n)]))
        times.append(t)
        values.append(closed_form(t, d) + noise * rng.standard_normal(len(t)))
    batch = IrregularBatch.from_lists([torch.as_tensor(t) for t in times],
                                      [torch.as_tensor(v)[:, None] for v in values])  # fmt: skip
    return batch


def _model(ka=0.5, ke=0.3, **kw):
    field = GreyBoxField(oral, {"ka": ka, "ke": ke}, states=["gut", "conc"])
    return GreyBoxMLE(field, channels=["conc"], fixed_x0={"gut": 0.0, "conc": 0.0},
                      doses=DOSES, dose_state="gut", rtol=1e-7, atol=1e-9, **kw)  # fmt: skip


def test_multiple_doses_match_the_closed_form_superposition():
    """At the true parameters the piecewise solve through the doses reproduces the
    closed form at dense query times, including exactly at dose times (the value
    just before the dose) and before the first observation (from the first dose)."""
    model = _model(KA, KE)
    batch = _data()
    q = torch.linspace(-1.0, 36.0, 75, dtype=torch.float64)
    q = torch.cat([q, torch.tensor([8.0, 11.0, 12.0, 24.0], dtype=torch.float64)])
    q = q.sort().values[None].expand(3, -1).clone()
    pred = model.predict(batch, q)[..., 0].numpy()
    for b, d in enumerate(DOSES):
        start = min(d[0][0], float(batch.times[b, 0]))
        ok = q[b].numpy() >= start
        exact = closed_form(q[b].numpy(), d)
        np.testing.assert_allclose(pred[b, ok], exact[ok], rtol=1e-5, atol=1e-6)
    # a trough at a dose time is the pre-dose value, not pre-dose + amount
    j = int(torch.nonzero(q[0] == 12.0)[0, 0])
    assert pred[0, j] < 1.0


def test_parameters_recovered_within_two_standard_errors_from_multiple_dose_data():
    model = _model()
    info = model.gauss_newton(_data(seed=1), max_iter=40)
    vals, se = model.values(), model.std_errors()
    for name, truth in (("ka", KA), ("ke", KE)):
        assert abs(vals[name] - truth) < 2 * se[name], (name, vals[name], se[name])
        assert se[name] < 0.1 * truth
    assert abs(info["sigma"] - 0.05) < 0.02
    assert info["unidentifiable"] == [] and info["stop_reason"] in ("converged", "no_decrease")


def test_ignoring_the_doses_is_visibly_wrong():
    """Control: the same data without the later doses cannot be fitted (σ̂ ≫ noise),
    so the test above depends on the events."""
    field = GreyBoxField(oral, {"ka": 0.5, "ke": 0.3}, states=["gut", "conc"])
    first_only = [[d[0]] for d in DOSES]
    model = GreyBoxMLE(field, channels=["conc"], fixed_x0={"gut": 0.0, "conc": 0.0},
                       doses=first_only, dose_state="gut", rtol=1e-7, atol=1e-9)  # fmt: skip
    info = model.gauss_newton(_data(seed=1), max_iter=40)
    assert info["sigma"] > 10 * 0.05


def test_bad_doses_are_refused_with_the_fix():
    field = GreyBoxField(oral, {"ka": 0.5, "ke": 0.3}, states=["gut", "conc"])
    with pytest.raises(OdenetError, match="need `dose_state="):
        GreyBoxMLE(field, channels=["conc"], doses=[[(0.0, 1.0)]])
    with pytest.raises(OdenetError, match="not \\(time, amount\\)"):
        GreyBoxMLE(field, channels=["conc"], doses=[[(0.0, "x")]], dose_state="gut")
    model = GreyBoxMLE(field, channels=["conc"], doses=[[(0.0, 1.0, "liver")]] * 3)
    with pytest.raises(OdenetError, match="state 'liver', not one of"):
        model.gauss_newton(_data(), max_iter=2)
    model = GreyBoxMLE(field, channels=["conc"], doses=[[(0.0, 1.0)]], dose_state="gut")
    with pytest.raises(OdenetError, match="`doses` lists 1 series but the data have 3"):
        model.gauss_newton(_data(), max_iter=2)


MECH = """
import torch
from odenet.fit import mechanism

@mechanism(params={"ka": 0.5, "ke": 0.3}, states=["gut", "conc"])
def oral(t, x, p):
    gut, conc = x[..., 0:1], x[..., 1:2]
    return torch.cat([-p["ka"] * gut, p["ka"] * gut - p["ke"] * conc], -1)
"""


@pytest.mark.slow  # ~15 s of CPU: a fit and two predictions through the CLI
def test_doses_from_a_csv_in_one_command_and_predict_needs_them(tmp_path, capsys):
    """`odenet fit --doses d.csv --dose-state gut` recovers k_a, k_e within 2 SE;
    `odenet predict` with the same doses follows the closed form, and refuses to predict
    without them (a dosed model without its doses would be silently wrong)."""
    import json

    import pandas as pd

    from odenet.fit.cli import main

    batch = _data(seed=1)
    rows = [{"id": f"s{b}", "time": float(t), "conc": float(v)}
            for b in range(3) for t, v in zip(batch.times[b], batch.values[b, :, 0])]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame([{"id": f"s{b}", "time": t, "amount": a} for b, d in enumerate(DOSES)
                  for t, a in d]).to_csv(tmp_path / "d.csv", index=False)  # fmt: skip
    (tmp_path / "m.py").write_text(MECH)
    ck = str(tmp_path / "ck.pt")
    rc = main(["fit", str(tmp_path / "c.csv"), "--model", "greybox_mle", "--mechanism",
               f"{tmp_path / 'm.py'}:oral", "--fix-x0", "gut=0", "--fix-x0", "conc=0",
               "--doses", str(tmp_path / "d.csv"), "--dose-state", "gut", "--iters", "40",
               "--checkpoint", ck, "--json", "--no-progress"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    for name, truth in (("ka", KA), ("ke", KE)):
        assert abs(out["parameters"][name] - truth) < 2 * out["std_errors"][name], out
    rc = main(["predict", ck, "--data", str(tmp_path / "c.csv"), "--times", "6,13,30",
               "--doses", str(tmp_path / "d.csv"), "--json"])  # fmt: skip
    pred = json.loads(capsys.readouterr().out)
    assert rc == 0
    got = np.array([r["conc"] for r in pred]).reshape(3, 3)
    want = np.stack([closed_form(np.array([6.0, 13.0, 30.0]), d) for d in DOSES])
    np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05)
    rc = main(["predict", ck, "--data", str(tmp_path / "c.csv"), "--times", "6"])
    assert rc == 2
    assert "fitted with --doses" in capsys.readouterr().err


def _dose_csvs(tmp_path, n_series=6):
    """Concentrations (noise 0.05) and doses of ``n_series`` series cycling through the
    three dose schedules of DOSES, so neighbouring series are dosed differently."""
    import pandas as pd

    rng = np.random.default_rng(3)
    rows, drows = [], []
    for b in range(n_series):
        d = DOSES[b % 3]
        t = np.unique(np.concatenate([[0.0, 12.0, 24.0], rng.uniform(0.2, 36, 12)]))
        c = closed_form(t, d) + 0.05 * rng.standard_normal(len(t))
        rows += [{"id": f"s{b}", "time": float(x), "conc": float(v)} for x, v in zip(t, c)]
        drows += [{"id": f"s{b}", "time": x, "amount": a} for x, a in d]
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame(drows).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "m.py").write_text(MECH)


@pytest.mark.slow  # ~40 s of CPU: four least-squares fits through the CLI
@pytest.mark.parametrize("split", [["--split", "series"], ["--folds", "3"]])
def test_doses_follow_their_series_across_series_splits_and_folds(tmp_path, capsys, split):
    """With --split series / --folds the held-out series are predicted with *their own*
    doses: the shared k_a, k_e and the pinned zero initial states leave nothing else to
    fit, so their MSE is at the noise level (σ² = 0.0025).  Handing them the training
    rows' doses (the schedules differ by series) misses by far more."""
    import json

    from odenet.fit.cli import main

    _dose_csvs(tmp_path)
    rc = main(["fit", str(tmp_path / "c.csv"), "--model", "greybox_mle", "--mechanism",
               f"{tmp_path / 'm.py'}:oral", "--fix-x0", "gut=0", "--fix-x0", "conc=0",
               "--doses", str(tmp_path / "d.csv"), "--dose-state", "gut", "--iters", "10",
               "--checkpoint", str(tmp_path / "ck.pt"), "--json", "--no-progress",
               *split])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    for what in ("interp", "extrap"):
        assert out[f"{what}_points"] > 0
        assert out[f"{what}_mse"] < 4 * 0.05**2, out
    if "--folds" in split:
        assert len(out["folds"]) == 3


@pytest.mark.slow  # ~25 s of CPU: one least-squares fit through the CLI
def test_resume_with_another_dose_file_is_refused_naming_the_doses(tmp_path, capsys):
    """The checkpoint stored `doses: True`, not the doses: a resume with every amount
    doubled returned the old k_a, k_e with exit 0 (the data fingerprint covers the
    observations only).  It now stores a fingerprint of the training series' doses."""
    import json

    import pandas as pd

    from odenet.fit.cli import main

    _dose_csvs(tmp_path, n_series=3)
    d = pd.read_csv(tmp_path / "d.csv")
    d.assign(amount=2 * d["amount"]).to_csv(tmp_path / "d2.csv", index=False)
    ck = str(tmp_path / "ck.pt")

    def fit(doses, *more):
        rc = main(["fit", str(tmp_path / "c.csv"), "--model", "greybox_mle", "--mechanism",
                   f"{tmp_path / 'm.py'}:oral", "--fix-x0", "gut=0", "--fix-x0", "conc=0",
                   "--doses", str(tmp_path / doses), "--dose-state", "gut", "--iters", "10",
                   "--checkpoint", ck, "--json", "--no-progress", *more])  # fmt: skip
        out, err = capsys.readouterr()
        return rc, out, err

    rc, out, _ = fit("d.csv")
    assert rc == 0
    first = json.loads(out)["parameters"]
    rc, out, err = fit("d2.csv", "--resume")
    assert rc == 2 and out == ""
    assert "doses_fingerprint: checkpoint" in err and "(--doses) changed" in err, err
    rc, out, _ = fit("d.csv", "--resume")  # the same doses: the stored fit, as it was
    assert rc == 0 and json.loads(out)["parameters"] == first
