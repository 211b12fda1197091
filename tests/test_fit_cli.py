"""`odenet fit` / `odenet predict` under bad input and damaged checkpoints: every failure
is one line on stderr with exit status 2, the JSON is strict, checkpoints are versioned
and never overwritten by accident, and `predict` reproduces the fitted model."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from odenet.cli import main
from odenet.fit import datasets, to_long


@pytest.fixture
def lv_csv(tmp_path):
    data = datasets.lotka_volterra(6, observed=0.5, n_times=30, t_end=10.0, noise=0.02, seed=0)
    df = to_long(data)
    path = tmp_path / "lv.csv"
    df.to_csv(path, index=False)
    return path


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, *needles):
    lines = [ln for ln in err.splitlines() if ln.startswith("odenet: error:")]
    assert rc == 2 and len(lines) == 1, (rc, err)
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


FAST = ["--iters", "2", "--hidden", "4", "--no-progress"]


@pytest.mark.parametrize(
    "opts, needles",
    [
        (["--batch-size", "0"], ["--batch-size", "got 0"]),
        (["--lr", "nan"], ["--lr", "got nan"]),
        (["--lr", "-1"], ["--lr", "got -1"]),
        (["--hidden", "0"], ["--hidden", "got 0"]),
        (["--iters", "0"], ["--iters", "got 0"]),
        (["--tail", "1.5"], ["--tail", "1.5"]),
        (["--holdout", "0"], ["--holdout"]),
        (["--folds", "1"], ["--folds"]),
        (["--model", "greybox_mle"], ["needs --mechanism"]),
        (["--model", "greybox_mle", "--mechanism", "nope"], ["neither a built-in"]),
        (["--mechanism", "lotka_volterra"], ["only apply to --model greybox"]),
        (
            ["--model", "greybox_mle", "--mechanism", "lotka_volterra", "--solver", "nope"],
            ["--solver 'nope'", "radau_iia5"],
        ),
        (["--solver", "radau_iia5"], ["--solver chooses", "--model neural_ode"]),
        (["--plot", "/no/such/folder/p.png"], ["--plot", "does not exist"]),
        (["--channels", "nope"], ["nope", "not found"]),
        (["--covariates", "nope"], ["covariate", "nope"]),
        (["--device", "cuda:9"], ["--device cuda:9", "CUDA GPU"]),
        (["--device", "tpu"], ["--device 'tpu'", "cpu, cuda"]),
    ],
)
def test_bad_fit_options_are_one_line_errors_with_status_2(lv_csv, tmp_path, capsys, opts,
                                                          needles):  # fmt: skip
    rc, out, err = run(["fit", lv_csv, "--checkpoint", tmp_path / "c.pt", *FAST, *opts], capsys)
    one_line_error(rc, err, *needles)
    assert out == ""


def test_greybox_on_data_that_do_not_match_the_mechanism_is_a_clear_error(tmp_path, capsys):
    """3 channels for a 2-state mechanism, none named after its states."""
    df = to_long(datasets.lotka_volterra(4, observed=0.8, n_times=10, seed=0))
    df["third"] = df["prey"] * 2
    df.to_csv(tmp_path / "d.csv", index=False)
    rc, _, err = run(["fit", tmp_path / "d.csv", "--model", "greybox_mle", "--mechanism",
                      "lotka_volterra", "--checkpoint", tmp_path / "c.pt"], capsys)  # fmt: skip
    one_line_error(rc, err, "states ['x', 'y']", "3 channel(s)")


def test_checkpoint_is_not_overwritten_without_force_and_resume_must_match(lv_csv, tmp_path,
                                                                          capsys):  # fmt: skip
    ck = tmp_path / "c.pt"
    rc, out, _ = run(["fit", lv_csv, "--checkpoint", ck, *FAST, "--json"], capsys)
    assert rc == 0 and ck.exists()
    before = ck.read_bytes()
    rc, _, err = run(["fit", lv_csv, "--checkpoint", ck, *FAST], capsys)
    one_line_error(rc, err, "exists", "--resume", "--force")
    assert ck.read_bytes() == before
    rc, _, err = run(["fit", lv_csv, "--checkpoint", ck, *FAST[:2], "--hidden", "8",
                      "--no-progress", "--resume"], capsys)  # fmt: skip
    one_line_error(rc, err, "hidden: checkpoint 4 vs now 8")
    rc, _, err = run(["fit", lv_csv, "--checkpoint", ck, *FAST, "--model", "gru_d", "--resume"],
                     capsys)  # fmt: skip
    one_line_error(rc, err, "kind: checkpoint 'neural_ode' vs now 'gru_d'")
    # the optimiser settings too (they were silently replaced by the stored ones)
    rc, _, err = run(["fit", lv_csv, "--checkpoint", ck, "--iters", "3", *FAST[2:], "--lr",
                      "0.5", "--resume"], capsys)  # fmt: skip
    one_line_error(rc, err, "lr: checkpoint 0.01 vs now 0.5", "iters: checkpoint 2 vs now 3",
                   "--lr 0.01 --iters 2", "--force")  # fmt: skip
    assert ck.read_bytes() == before
    rc, _, _ = run(["fit", lv_csv, "--checkpoint", ck, *FAST, "--force"], capsys)
    assert rc == 0
    assert oct(os.stat(ck).st_mode & 0o777) == "0o644"


def test_damaged_and_unsafe_checkpoints_are_typed_errors(lv_csv, tmp_path, capsys):
    ck = tmp_path / "good.pt"
    assert run(["fit", lv_csv, "--checkpoint", ck, *FAST], capsys)[0] == 0
    raw = ck.read_bytes()
    cases = {
        "empty.pt": (b"", "is empty"),
        "trunc.pt": (raw[: len(raw) // 3], "truncated, corrupt"),
        "garbage.pt": (b"not a checkpoint at all", "corrupt or not a checkpoint"),
    }
    for name, (content, needle) in cases.items():
        (tmp_path / name).write_bytes(content)
        rc, _, err = run(["fit", lv_csv, "--checkpoint", tmp_path / name, *FAST, "--resume"],
                         capsys)  # fmt: skip
        one_line_error(rc, err, needle)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    rc, _, err = run(["predict", tmp_path / "list.pt", "--data", lv_csv, "--times", "1"], capsys)
    one_line_error(rc, err, "holds a list")

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "PWNED"),))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    rc, _, err = run(["fit", lv_csv, "--checkpoint", tmp_path / "evil.pt", *FAST, "--resume"],
                     capsys)  # fmt: skip
    one_line_error(rc, err, "refused (never executed)")
    assert not (tmp_path / "PWNED").exists()


def test_resume_is_honoured_by_greybox_mle(tmp_path, capsys):
    data = datasets.lotka_volterra(3, observed=0.8, n_times=12, noise=0.0, seed=1)
    to_long(data).to_csv(tmp_path / "d.csv", index=False)
    ck = tmp_path / "g.pt"
    base = ["fit", tmp_path / "d.csv", "--model", "greybox_mle", "--mechanism",
            "lotka_volterra", "--checkpoint", ck, "--json", "--iters", "20"]  # fmt: skip
    rc, out, _ = run(base, capsys)
    first = json.loads(out)
    # another --iters: a warm restart (the same --iters returns the stored result as is,
    # tests/test_reliability_kill.py)
    rc, out, _ = run([*base[:-1], "30", "--resume"], capsys)
    second = json.loads(out)
    assert rc == 0
    # restarted from the stored optimum: at most a couple of iterations, same estimates
    assert second["iterations"] <= 3 < first["iterations"]
    for k, v in first["parameters"].items():
        assert second["parameters"][k] == pytest.approx(v, rel=1e-6)


def test_json_is_strict_and_reports_what_was_scored(tmp_path, capsys):
    """A single short series: no validation data, few scored points — the JSON still
    parses with allow_nan=False semantics, and the counts and stop reason are there."""
    df = to_long(datasets.lotka_volterra(1, observed=1.0, n_times=12, seed=0))
    df.to_csv(tmp_path / "one.csv", index=False)
    rc, out, err = run(["fit", tmp_path / "one.csv", "--checkpoint", tmp_path / "c.pt", *FAST,
                        "--json"], capsys)  # fmt: skip
    assert rc == 0
    summary = json.loads(out, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert summary["stop_reason"] == "max_iters"
    assert summary["interp_points"] >= 0 and summary["extrap_points"] > 0
    assert "scored on only" in err  # the small-sample warning


def test_covariate_looking_column_is_announced_and_can_be_declared(lv_csv, tmp_path, capsys):
    import pandas as pd

    df = pd.read_csv(lv_csv)
    df["diet"] = (df["id"] % 2).astype(float)
    df.to_csv(tmp_path / "d.csv", index=False)
    rc, out, err = run(["fit", tmp_path / "d.csv", "--model", "linear_interp", "--checkpoint",
                        tmp_path / "a.pt", "--json"], capsys)  # fmt: skip
    assert rc == 0 and "['diet'] never change within a series" in err
    assert json.loads(out)["channels"] == ["prey", "predator", "diet"]
    rc, out, err = run(["fit", tmp_path / "d.csv", "--model", "linear_interp", "--checkpoint",
                        tmp_path / "b.pt", "--json", "--covariates", "diet"], capsys)  # fmt: skip
    s = json.loads(out)
    assert s["channels"] == ["prey", "predator"] and "ignored" in err


def test_within_split_never_scores_training_points(lv_csv, tmp_path, capsys):
    """With few series every series trains on its context points only: LOCF trained on
    nothing and linear interpolation give interpolation errors > 0 (a held-out point that
    leaked into the context would be reproduced exactly by linear interpolation)."""
    rc, out, _ = run(["fit", lv_csv, "--model", "linear_interp", "--checkpoint",
                      tmp_path / "a.pt", "--json"], capsys)  # fmt: skip
    s = json.loads(out)
    assert s["split"] == "within" and s["interp_mse"] > 1e-6
    assert sum(v is not None for v in s["interp_mse_per_series"].values()) >= 1
    assert set(s["extrap_mse_per_channel"]) == {"prey", "predator"}


def test_kfold_over_series_pools_every_series_once(lv_csv, tmp_path, capsys):
    rc, out, _ = run(["fit", lv_csv, "--model", "linear_interp", "--folds", "3", "--json"],
                     capsys)  # fmt: skip
    s = json.loads(out)
    assert rc == 0 and len(s["folds"]) == 3
    seen = sorted(x for f in s["folds"] for x in f["test_series"])
    assert seen == sorted(str(i) for i in range(6))
    assert s["extrap_points"] == sum(f["extrap_points"] for f in s["folds"])


def test_predict_from_a_checkpoint_matches_the_fitted_model(lv_csv, tmp_path, capsys):
    import pandas as pd

    from odenet.fit import load_fit, load_long

    ck = tmp_path / "c.pt"
    assert run(["fit", lv_csv, "--checkpoint", ck, "--iters", "3", "--hidden", "6",
                "--no-progress"], capsys)[0] == 0  # fmt: skip
    rc, out, _ = run(["predict", ck, "--data", lv_csv, "--times", "1,2.5,12", "--out",
                      tmp_path / "p.csv"], capsys)  # fmt: skip
    assert rc == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["id", "time", "prey", "predator"] and len(pred) == 18
    res = load_fit(ck)
    data = load_long(lv_csv)
    q = torch.tensor([[1.0, 2.5, 12.0]], dtype=torch.float64).expand(6, -1)
    direct = res.predict(data, q).reshape(-1, 2).numpy()
    np.testing.assert_allclose(pred[["prey", "predator"]].to_numpy(), direct, rtol=1e-10)
    rc, _, err = run(["predict", ck, "--data", lv_csv, "--times", "1", "--band"], capsys)
    one_line_error(rc, err, "--band is available for greybox_mle, latent_ode and ensemble")
    rc, _, err = run(["predict", ck, "--data", lv_csv], capsys)
    one_line_error(rc, err, "--times")
    rc, _, err = run(["predict", ck, "--data", lv_csv, "--times", "1", "--device", "gpu"], capsys)
    one_line_error(rc, err, "--device 'gpu'")
    # auto picks a GPU where torch sees one: the same predictions, to round-off
    rc, out, _ = run(["predict", ck, "--data", lv_csv, "--times", "1,2.5,12", "--device", "auto",
                      "--out", tmp_path / "q.csv"], capsys)  # fmt: skip
    assert rc == 0
    np.testing.assert_allclose(pd.read_csv(tmp_path / "q.csv")[["prey", "predator"]].to_numpy(),
                               direct, rtol=1e-9)  # fmt: skip


def test_predict_band_from_a_greybox_checkpoint(tmp_path, capsys):
    data = datasets.lotka_volterra(4, observed=0.8, n_times=15, noise=0.01, seed=1)
    to_long(data).to_csv(tmp_path / "d.csv", index=False)
    ck = tmp_path / "g.pt"
    assert run(["fit", tmp_path / "d.csv", "--model", "greybox_mle", "--mechanism",
                "lotka_volterra", "--checkpoint", ck, "--iters", "20"], capsys)[0] == 0  # fmt: skip
    rc, out, _ = run(["predict", ck, "--data", tmp_path / "d.csv", "--until", "12", "--n", "4",
                      "--band", "--json", "--series", "0"], capsys)  # fmt: skip
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 4
    for r in rows:
        assert r["prey_lo"] < r["prey"] < r["prey_hi"]


def test_fit_and_predict_help_have_no_literal_percent_signs_and_document_every_option(capsys):
    import argparse

    from odenet.fit.cli import register, register_predict

    parser = argparse.ArgumentParser(prog="odenet")
    sub = parser.add_subparsers(dest="command")
    for p in (register(sub), register_predict(sub)):
        text = p.format_help()
        assert "%%" not in text
        for action in p._actions:
            assert action.help, action.option_strings or action.dest


@pytest.mark.parametrize("model", ["greybox", "greybox_mle"])
def test_one_channel_csv_with_a_two_state_builtin_is_a_clear_error(tmp_path, capsys, model):
    """The issue's raw IndexError: a 1-channel CSV (not named after a state) with
    damped_oscillator."""
    df = to_long(datasets.damped_oscillator(3, observed=0.8, n_times=10, seed=0))
    df = df.rename(columns={df.columns[2]: "pos"})[["id", "time", "pos"]]
    df.to_csv(tmp_path / "d.csv", index=False)
    rc, _, err = run(["fit", tmp_path / "d.csv", "--model", model, "--mechanism",
                      "damped_oscillator", "--checkpoint", tmp_path / "c.pt"], capsys)  # fmt: skip
    one_line_error(rc, err, "states ['x', 'v']", "1 channel(s)")


DECAY = """
from odenet.fit import mechanism


@mechanism(params={"k": 1.0}, states=["y"])
def decay(t, x, p):
    return -p["k"] * x
"""


def test_per_series_estimates_under_split_series_are_keyed_by_training_series(tmp_path, capsys):
    """`--split series` with `--per-series`: the report lists each *training* series' own
    estimate under its id (it crashed with a traceback: no ids were passed)."""
    import pandas as pd

    from odenet.fit import load_long, split_series

    rng = np.random.default_rng(5)
    rows, truth = [], {}
    for s in range(10):
        k, y0 = 0.5 * np.exp(0.2 * rng.standard_normal()), rng.uniform(2, 6)
        truth[f"s{s}"] = k
        t = np.sort(rng.uniform(0, 5, 10))
        t[0] = 0
        rows += [(f"s{s}", ti, y0 * np.exp(-k * ti) + 0.02 * rng.standard_normal()) for ti in t]
    pd.DataFrame(rows, columns=["id", "time", "y"]).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "m.py").write_text(DECAY)
    rc, out, err = run(["fit", tmp_path / "d.csv", "--model", "greybox_mle", "--mechanism",
                        f"{tmp_path / 'm.py'}:decay", "--per-series", "k", "--split", "series",
                        "--iters", "30", "--json", "--no-progress", "--checkpoint",
                        tmp_path / "c.pt"], capsys)  # fmt: skip
    assert rc == 0 and "Traceback" not in err, err
    s = json.loads(out)
    train = split_series(load_long(tmp_path / "d.csv"), (0.6, 0.2, 0.2), seed=0)[0]
    est, se = s["series_parameters"]["k"], s["series_std_errors"]["k"]
    assert list(est) == [str(i) for i in train.ids]
    for sid, k in est.items():  # truths differ by ~20 %, the SEs are ~1 %: a swap fails
        assert abs(k - truth[sid]) < 4 * se[sid], (sid, k, truth[sid], se[sid])


TWO = """
import torch
from odenet.fit import mechanism


@mechanism(params={"ka": 1.0, "kb": 1.0}, states=["a", "b"])
def two(t, x, p):
    return torch.cat([-p["ka"] * x[..., 0:1], -p["kb"] * x[..., 1:2]], -1)
"""


def test_a_column_named_after_a_state_is_never_fitted_as_another_state(tmp_path, capsys):
    """States a, b; columns `b`, `a_meas`: the named column must not be matched by
    position (it was fitted as state a, ka and kb exchanged, with tiny standard errors).
    Refused, naming the matched and unmatched columns and the fix; named columns in any
    order fit each state's own rate."""
    import pandas as pd

    (tmp_path / "m.py").write_text(TWO)
    t = np.linspace(0, 4, 12)
    rng = np.random.default_rng(0)
    rows = [(s, ti, a0 * np.exp(-1.5 * ti) + 0.01 * rng.standard_normal(),
             b0 * np.exp(-0.2 * ti) + 0.01 * rng.standard_normal())
            for s, (a0, b0) in enumerate([(5.0, 3.0), (4.0, 2.0), (6.0, 1.0)])
            for ti in t]  # fmt: skip
    df = pd.DataFrame(rows, columns=["id", "time", "a", "b"])[["id", "time", "b", "a"]]
    df.rename(columns={"a": "a_meas"}).to_csv(tmp_path / "partial.csv", index=False)
    df.to_csv(tmp_path / "named.csv", index=False)
    mech = ["--model", "greybox_mle", "--mechanism", f"{tmp_path / 'm.py'}:two", "--iters", "30",
            "--no-progress", "--json"]  # fmt: skip
    rc, out, err = run(["fit", tmp_path / "partial.csv", *mech, "--checkpoint",
                        tmp_path / "p.pt"], capsys)  # fmt: skip
    one_line_error(rc, err, "['b'] match state(s) by name", "['a_meas'] match none",
                   "Rename", "--channels b")  # fmt: skip
    assert out == "" and not (tmp_path / "p.pt").exists()
    rc, out, err = run(["fit", tmp_path / "named.csv", *mech, "--checkpoint", tmp_path / "n.pt"],
                       capsys)  # fmt: skip
    assert rc == 0, err
    s = json.loads(out)
    assert s["parameters"]["ka"] == pytest.approx(1.5, rel=0.05)
    assert s["parameters"]["kb"] == pytest.approx(0.2, rel=0.05)
    # the shooting grey-box takes the channels as its state vector: order must match
    rc, _, err = run(["fit", tmp_path / "named.csv", *mech[2:4], "--model", "greybox",
                      "--iters", "1", "--no-progress", "--checkpoint", tmp_path / "g.pt"],
                     capsys)  # fmt: skip
    one_line_error(rc, err, "order of", "--channels a b")


def _write_decay_data(path):
    """Two series of y = y0·e^{−0.7 t} with 1 % noise, ten times each, as CSV."""
    import pandas as pd

    rng = np.random.default_rng(1)
    t = np.linspace(0, 3, 10)
    pd.DataFrame([(s, ti, y0 * np.exp(-0.7 * ti) + 0.01 * rng.standard_normal())
                  for s, y0 in enumerate([2.0, 3.0]) for ti in t],
                 columns=["id", "time", "y"]).to_csv(path, index=False)  # fmt: skip


def test_an_edited_mechanism_file_is_refused_by_resume_and_predict(tmp_path, capsys):
    """A checkpoint holds the mechanism's path: after editing -k·x to -0.5·k·x, --resume
    returned the old k as a new fit and `predict` paired it with the new field.  The
    mechanism's fingerprint (code, constants, globals, declaration) is stored and checked."""
    _write_decay_data(tmp_path / "d.csv")
    mech = tmp_path / "m.py"
    mech.write_text(DECAY)
    ck = tmp_path / "c.pt"
    fit = ["fit", tmp_path / "d.csv", "--model", "greybox_mle", "--mechanism", f"{mech}:decay",
           "--iters", "20", "--json", "--no-progress", "--checkpoint", ck]  # fmt: skip
    predict = ["predict", ck, "--data", tmp_path / "d.csv", "--times", "1,2"]
    rc, out, _ = run(fit, capsys)
    assert rc == 0
    k = json.loads(out)["parameters"]["k"]
    assert k == pytest.approx(0.7, rel=0.05)
    rc, before, _ = run(predict, capsys)
    assert rc == 0
    mech.write_text(DECAY.replace('return -p["k"] * x', 'return -0.5 * p["k"] * x'))
    rc, out, err = run([*fit, "--resume"], capsys)
    one_line_error(rc, err, "mechanism_fingerprint: checkpoint", "code or declaration changed")
    rc, out, err = run(predict, capsys)
    one_line_error(rc, err, "changed since this checkpoint was fitted", "refit")
    assert out == ""
    mech.write_text(DECAY)  # restored: the fit is usable again, to the bit
    rc, out, _ = run(predict, capsys)
    assert rc == 0 and out == before
    # a checkpoint of an older odenet (no fingerprint) still predicts, with a warning
    state = torch.load(ck, weights_only=True)
    del state["meta"]["mechanism_fingerprint"]
    torch.save(state, ck)
    rc, out, err = run(predict, capsys)
    assert rc == 0 and out == before and "cannot be checked" in err


EXCHANGE = """
import torch
from odenet.fit import mechanism


@mechanism(params={"kf": 300.0, "kb": 150.0, "kel": 0.5}, states=["a", "b"])
def exchange(t, x, p):
    a, b = x[..., 0:1], x[..., 1:2]
    return torch.cat([-p["kf"] * a + p["kb"] * b, p["kf"] * a - (p["kb"] + p["kel"]) * b], -1)
"""


def test_a_stiff_mechanism_fits_and_predicts_with_an_implicit_solver(tmp_path, capsys):
    """`--solver radau_iia5` reaches the grey-box solves and the checkpoint: a stiff
    exchange (kf = 400, kb = 200, kel = 0.3) recovers its slow elimination rate, and
    `predict` rebuilds the model with the same method (the checkpoint's meta)."""
    import pandas as pd

    import odenet

    rng = np.random.default_rng(2)
    t = torch.linspace(0, 4, 8, dtype=torch.float64)
    rows = []
    for s, a0 in enumerate([1.0, 2.0]):
        y = odenet.solve(lambda tt, x: torch.cat([-400 * x[0:1] + 200 * x[1:2],
                                                  400 * x[0:1] - 200.3 * x[1:2]]),
                         torch.tensor([a0, 0.2], dtype=torch.float64), t,
                         method="radau_iia5", rtol=1e-10, atol=1e-12).ys.numpy()  # fmt: skip
        y = y * (1 + 0.01 * rng.standard_normal(y.shape))
        rows += [(s, ti, *yi) for ti, yi in zip(t.tolist(), y)]
    pd.DataFrame(rows, columns=["id", "time", "a", "b"]).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "m.py").write_text(EXCHANGE)
    ck = tmp_path / "c.pt"
    rc, out, err = run(["fit", tmp_path / "d.csv", "--model", "greybox_mle", "--mechanism",
                        f"{tmp_path / 'm.py'}:exchange", "--solver", "radau_iia5", "--iters",
                        "2", "--json", "--no-progress", "--checkpoint", ck], capsys)  # fmt: skip
    assert rc == 0, err
    assert json.loads(out)["parameters"]["kel"] == pytest.approx(0.3, rel=0.05)
    assert torch.load(ck, weights_only=True)["meta"]["solver"] == "radau_iia5"
    from odenet.fit.cli import model_from_meta

    assert model_from_meta(torch.load(ck, weights_only=True)["meta"]).solver["method"] == (
        "radau_iia5"
    )
    rc, out, err = run(["predict", ck, "--data", tmp_path / "d.csv", "--times", "1,2"], capsys)
    assert rc == 0 and out, err


SCALED_DECAY = """
from odenet.fit import mechanism


class Scale:
    w = {w}


@mechanism(params={{"k": 1.0}}, states=["y"])
def decay(t, x, p):
    return -p["k"] * Scale.w * x
"""


def test_a_mechanism_file_with_a_class_predicts_in_another_process_and_sees_its_edits(
    tmp_path, capsys
):
    """The mechanism's module was named with hash(path), salted per process: a class in
    the file fingerprinted differently in every process, so `predict` and --resume
    refused every checkpoint of an unchanged file.  And an edit of the class constant
    (Scale.w 1 -> 2) went unseen: predict paired the old k with a field twice as fast,
    exit 0 (x(2) = 0.34 for the data's 0.74)."""
    import subprocess
    import sys

    _write_decay_data(tmp_path / "d.csv")
    mech = tmp_path / "m.py"
    mech.write_text(SCALED_DECAY.format(w="1.0"))
    ck = tmp_path / "c.pt"
    rc, out, _ = run(["fit", tmp_path / "d.csv", "--model", "greybox_mle", "--mechanism",
                      f"{mech}:decay", "--iters", "20", "--json", "--no-progress",
                      "--checkpoint", ck], capsys)  # fmt: skip
    assert rc == 0
    predict = ["predict", str(ck), "--data", str(tmp_path / "d.csv"), "--times", "1,2"]
    rc, before, _ = run(predict, capsys)
    assert rc == 0
    for seed in ("1", "2"):  # another process, another string hashing
        env = dict(os.environ, PYTHONHASHSEED=seed, OMP_NUM_THREADS="1")
        r = subprocess.run([sys.executable, "-m", "odenet.cli", *predict], capture_output=True,
                           text=True, env=env, timeout=240)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout == before
    mech.write_text(SCALED_DECAY.format(w="2.0"))
    stat = mech.stat()  # (a later second: the bytecode cache keys on whole seconds)
    os.utime(mech, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    rc, out, err = run(predict, capsys)
    one_line_error(rc, err, "changed since this checkpoint was fitted", "refit")
    assert out == ""


def test_ctrl_c_during_a_fit_advises_resume_not_the_same_command(monkeypatch, capsys):
    # the one message for every command said "rerun the same command to resume"; for a
    # fit run with --force that starts over on top of the checkpoint it had written
    import odenet.fit.cli as fit_cli
    from odenet.cli import main

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_cli, "run", interrupted)
    assert main(["fit", "data.csv", "--model", "locf", "--force"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["odenet: interrupted; its checkpoint is saved; rerun with --resume "
                   "(not --force) to continue."]  # fmt: skip


def test_predict_on_an_unfinished_fit_warns_and_serves_its_best_weights(
    lv_csv, tmp_path, monkeypatch, capsys
):
    # a fit killed after a periodic save left a checkpoint indistinguishable from a
    # finished one: predict served its last iterate with nothing on stderr
    import odenet.fit.train as train

    ck = tmp_path / "c.pt"
    save = train.save_checkpoint

    def killed_after_first_save(path, state):
        save(path, state)
        if state["finished"] is False:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", killed_after_first_save)
    assert run(["fit", lv_csv, "--checkpoint", ck, *FAST], capsys)[0] == 130
    monkeypatch.setattr(train, "save_checkpoint", save)
    state = torch.load(ck, weights_only=False)
    assert state["finished"] is False
    rc, out, err = run(["predict", ck, "--data", lv_csv, "--times", "1,2"], capsys)
    assert rc == 0 and "is an unfinished fit (saved at iteration" in err and "--resume" in err
    served = "best validation weights" if state["best_model"] is not None else "last iterate"
    assert served in err
    # the finished fit: no warning
    assert run(["fit", lv_csv, "--checkpoint", ck, *FAST, "--force"], capsys)[0] == 0
    assert torch.load(ck, weights_only=False)["finished"] is True
    rc, out, err = run(["predict", ck, "--data", lv_csv, "--times", "1,2"], capsys)
    assert rc == 0 and "unfinished" not in err


def test_predict_band_of_a_latent_ode_is_reproducible_around_the_plain_prediction(
    lv_csv, tmp_path, capsys
):
    # the band's samples came from the unseeded global generator (two runs 0.03 apart)
    # and the middle column switched to their median
    ck = tmp_path / "lat.pt"
    assert run(["fit", lv_csv, "--model", "latent_ode", "--checkpoint", ck, *FAST], capsys)[0] == 0
    args = ["predict", ck, "--data", lv_csv, "--times", "1,5,9", "--json"]
    runs = [json.loads(run([*args, "--band"], capsys)[1]) for _ in range(2)]
    assert runs[0] == runs[1]
    plain = json.loads(run(args, capsys)[1])
    assert [r["prey"] for r in runs[0]] == [r["prey"] for r in plain]
    other = json.loads(run([*args, "--band", "--seed", "1"], capsys)[1])
    assert [r["prey_lo"] for r in other] != [r["prey_lo"] for r in runs[0]]


@pytest.fixture(scope="module")
def one_point_context(tmp_path_factory):
    """A small training table and a context of one observation per series (the second
    series' single point misses a channel)."""
    folder = tmp_path_factory.mktemp("one")
    df = to_long(datasets.lotka_volterra(4, observed=0.8, n_times=12, noise=0.01, seed=1))
    df.to_csv(folder / "d.csv", index=False)
    one = df.groupby("id").head(1).copy()
    one.iloc[1, one.columns.get_loc("prey")] = np.nan
    one.to_csv(folder / "one.csv", index=False)
    return folder


#: every model kind `odenet fit` writes (and so `odenet predict` loads)
KINDS = ["neural_ode", "neural_ode_bidir", "neural_cde", "greybox", "greybox_mle", "ode_rnn",
         "latent_ode", "gru_grid", "gru_dt", "gru_d", "linear_interp", "locf", "mean",
         "ensemble"]  # fmt: skip


@pytest.mark.parametrize("model", KINDS)
def test_predict_conditions_every_model_kind_on_a_single_observation(one_point_context, model,
                                                                     capsys):  # fmt: skip
    """audit O S7: predict refused a one-observation context with the fitting rule ("a
    series needs at least two observation times"), which only fitting needs."""
    from odenet.fit.cli import MODEL_NAMES

    assert set(MODEL_NAMES) < set(KINDS)  # a new model kind is covered here too
    d = one_point_context
    ck = d / f"{model}.pt"
    kind = ["--ensemble", "2"] if model == "ensemble" else ["--model", model]
    if model.startswith("greybox"):
        kind += ["--mechanism", "lotka_volterra"]
    rc, _, err = run(["fit", d / "d.csv", *kind, "--checkpoint", ck, *FAST, "--json"], capsys)
    assert rc == 0, err
    rc, out, err = run(["predict", ck, "--data", d / "one.csv", "--times", "2,3", "--json"],
                       capsys)  # fmt: skip
    assert rc == 0, err
    rows = json.loads(out)
    want = [(str(i), t) for i in range(4) for t in (2.0, 3.0)]
    assert [(r["id"], r["time"]) for r in rows] == want
    assert all(np.isfinite(r[c]) for r in rows for c in ("prey", "predator"))
    if model in ("greybox_mle", "latent_ode", "ensemble"):
        rc, out, err = run(["predict", ck, "--data", d / "one.csv", "--until", "4", "--n", "3",
                            "--band", "--json"], capsys)  # fmt: skip
        assert rc == 0, err
        assert all(r["prey_lo"] <= r["prey"] <= r["prey_hi"] for r in json.loads(out))
    # fitting keeps its rule: one point has no dynamics to learn from
    rc, _, err = run(["fit", d / "one.csv", *kind, "--checkpoint", d / "x.pt", *FAST], capsys)
    one_line_error(rc, err, "single point", "at least two observation times")
