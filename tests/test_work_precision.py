"""Work–precision: monotone cost and error across tolerances, real scipy/torchdiffeq rows."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import torch

from odenet._errors import InputError
from odenet.problems import Problem, get_problem
from odenet.studies.work_precision import Solver, parse_solver, work_precision

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ODENET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def result():
    return work_precision(
        get_problem("kepler", eccentricity=0.3, t1=3.0),
        methods="dopri5,bosh3,rk4,scipy:RK45,scipy:DOP853,torchdiffeq:dopri5,torchdiffeq:rk4",
        tolerances=[1e-3, 1e-5, 1e-7],
        n_steps=[16, 32, 64],
        repeats=2,
    )


def test_tighter_tolerance_costs_more_and_is_not_much_less_accurate(result):
    t = result.table
    for label in ["dopri5", "bosh3", "scipy:RK45", "scipy:DOP853", "torchdiffeq:dopri5"]:
        sub = t[t["label"] == label].sort_values("rtol", ascending=False)
        assert (sub["status"] == "ok").all()
        assert np.all(np.diff(sub["nfe"].to_numpy()) > 0), (label, sub["nfe"].tolist())
        err = sub["error"].to_numpy()
        assert np.all(err[1:] <= 3.0 * err[:-1]), (label, err)
        assert err[-1] < err[0] / 10


def test_more_fixed_steps_cost_more_and_reduce_the_error(result):
    t = result.table
    for label in ["rk4", "torchdiffeq:rk4"]:
        sub = t[t["label"] == label].sort_values("n_steps")
        assert np.all(np.diff(sub["nfe"].to_numpy()) > 0)
        assert np.all(np.diff(sub["error"].to_numpy()) < 0)
    # both libraries' fixed-step RK4 take four evaluations per step: odenet's dense
    # output adds at most one, torchdiffeq's cubic Hermite outputs f at the end of each
    # step with an output in it (21 output times)
    for label, most in [("rk4", 1), ("torchdiffeq:rk4", 21)]:
        sub = t[t["label"] == label]
        extra = sub["nfe"] - 4 * sub["n_steps"]
        assert ((extra >= 0) & (extra <= most)).all(), (label, extra.tolist())
        assert (sub["steps"] == sub["n_steps"]).all()
    # the outputs are as accurate as the steps: with torchdiffeq's default linear
    # interpolation its rk4 error at the outputs was second order (16x per halving
    # became 4x) and 40x odenet's at N = 64
    td = t[t["label"] == "torchdiffeq:rk4"].set_index("n_steps")["error"]
    od = t[t["label"] == "rk4"].set_index("n_steps")["error"]
    assert (td / od < 5).all(), (td / od).tolist()
    assert td[32] / td[64] > 10


def test_a_torchdiffeq_fixed_row_takes_exactly_n_steps():
    """torchdiffeq's step_size grid has ceil((t1 − t0)/h + 1) nodes, one step more for
    some N (N = 49 on [0, 1]); the row said N steps and scored N + 1."""
    res = work_precision("exponential", methods="torchdiffeq:euler", n_steps=[49], repeats=1)
    row = res.table.iloc[0]
    h = 2.0 / 49  # y' = −y on [0, 2]: Euler's y(2) after exactly 49 steps
    assert row["steps"] == 49
    # one evaluation per step and one per output after t0 (cubic Hermite's f(t1, y1));
    # the step_size grid took 50 (its 50th step ~1e-15 long) and counted 49
    assert row["nfe"] == 49 + 20
    assert row["error_final"] == pytest.approx(abs((1 - h) ** 49 - np.exp(-2.0)), rel=1e-9)


def test_scipy_and_torchdiffeq_rows_are_real_runs(result):
    from scipy.integrate import solve_ivp

    t = result.table
    prob = get_problem("kepler", eccentricity=0.3, t1=3.0)
    # rerun scipy RK45 at rtol 1e-5 ourselves: same NFE, same steps
    sol = solve_ivp(prob.f_numpy, prob.span, prob.y0, method="RK45", rtol=1e-5, atol=1e-8)
    row = t[(t["label"] == "scipy:RK45") & (t["rtol"] == 1e-5)].iloc[0]
    assert row["nfe"] == sol.nfev
    assert row["steps"] == len(sol.t) - 1
    # odenet's dopri5 is the same pair with the same controller: its steps column counts
    # the same thing (accepted steps; it counted attempts, rejected ones too)
    # (at rtol 1e-7, where one step is rejected)
    sol = solve_ivp(prob.f_numpy, prob.span, prob.y0, method="RK45", rtol=1e-7, atol=1e-10)
    mine = t[(t["label"] == "dopri5") & (t["rtol"] == 1e-7)].iloc[0]
    assert mine["rejected"] >= 1
    assert mine["nfe"] == sol.nfev == 6 * (mine["steps"] + mine["rejected"]) + 2
    assert mine["steps"] == len(sol.t) - 1
    # torchdiffeq's dopri5 is a different implementation of the same pair: close NFE,
    # comparable error, but not the odenet numbers copied
    td = t[t["label"] == "torchdiffeq:dopri5"].set_index("rtol")
    od = t[t["label"] == "dopri5"].set_index("rtol")
    assert (td["nfe"] > 0).all() and (td["wall_s"] > 0).all()
    ratio = td["nfe"] / od["nfe"]
    assert ((ratio > 0.5) & (ratio < 2)).all()
    assert not np.array_equal(td["error"].to_numpy(), od["error"].to_numpy())


def test_timings_are_medians_of_repeats(result):
    assert (result.table["wall_s"] > 0).all()
    assert "Least work (nfe + jac_products) reaching each error target" in result.to_text()


def test_failed_solver_is_a_row_not_a_crash():
    def f(t, y):  # the field turns NaN half way: every solver must fail there
        return torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)

    prob = Problem(f, y0=[1.0], span=(0, 1), exact=lambda t: np.exp(-t)[:, None])
    res = work_precision(prob, methods="rk4,dopri5", n_steps=[8], tolerances=[1e-4], repeats=1)
    assert (res.table["status"] == "failed").all()
    assert np.isinf(res.table["error"]).all()
    assert res.table["message"].str.len().gt(0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(methods="scipy:Euler"), "unknown scipy method 'Euler'"),
        (dict(methods="torchdiffeq:magic"), "unknown torchdiffeq method 'magic'"),
        (dict(methods="julia:Tsit5"), "unknown library 'julia'"),
        (dict(methods="nope"), "unknown odenet method 'nope'"),
        (dict(tolerances=[2.0]), r"`tolerances` must be numbers in \(0, 1\)"),
        # scipy would run 1e-30 at its own 100·eps and the row carry a label it never ran
        (dict(tolerances=[1e-3, 1e-30]), r"\[1e-30\] are below the round-off of float64"),
        # between eps and 100·eps too: scipy raises 1e-15 to 2.2e-14 (and only warns)
        (dict(tolerances=[1e-15]), r"\[1e-15\] are below .* scipy's floor"),
        (dict(tolerances=[1e-9], dtype="float32"), "round-off of float32"),
        (dict(n_steps=[0]), "`n_steps` must be positive integers"),
        (dict(repeats=0), "`repeats` must be a positive integer"),
    ],
)
def test_validation_messages(kwargs, match):
    with pytest.raises(InputError, match=match):
        work_precision("cos", **kwargs)


def test_float32_keeps_the_default_tolerances_it_resolves(tmp_path):
    # at or above 100·eps of float32 (1.2e-5): 1e-5 tripped the solver's own warning
    res = work_precision("cos", methods=["dopri5"], dtype="float32", repeats=1, out=tmp_path)
    assert sorted(res.table["rtol"].unique()) == [1e-4, 1e-3, 1e-2]


def test_parse_solver():
    assert parse_solver("radau_iia5+sparsity") == Solver("odenet", "radau_iia5", True, "sparsity")
    assert parse_solver("scipy:BDF+jac").label == "scipy:BDF+jac"
    assert parse_solver("dopri5").adaptive and parse_solver("dopri5").library == "odenet"
    assert not parse_solver("rk4").adaptive
    assert parse_solver("scipy:Radau").label == "scipy:Radau"
    assert not parse_solver("torchdiffeq:rk4").adaptive


def test_methods_with_memory_are_compared_too():
    # the multistep families (ndf, bdf, adams; fixed-step ab3, bdf2, ...) were refused
    # as "unknown odenet method", so `odenet compare` could not set ndf beside scipy's BDF
    assert parse_solver("ndf") == Solver("odenet", "ndf", True)
    assert parse_solver("bdf+jac") == Solver("odenet", "bdf", True, "jac")
    assert not parse_solver("ab3").adaptive
    with pytest.raises(InputError, match="ndf"):  # the list of names offers them
        parse_solver("ndff")
    prob = get_problem("robertson")
    t = work_precision(prob, methods="ndf,scipy:BDF", tolerances=[1e-4], repeats=1).table
    t = t.set_index("label")
    assert (t["status"] == "ok").all()
    # the same solve outside the study: the row reports its f-evaluations
    direct = solve(
        prob.f,
        prob.y0_tensor(),
        torch.tensor(prob.span, dtype=torch.float64),
        method="ndf",
        rtol=1e-4,
        atol=torch.as_tensor(prob.atol(1e-4)),
    )
    assert int(t.loc["ndf", "nfe"]) == int(direct.stats["nfe"])
    assert t.loc["ndf", "error"] <= 10 * t.loc["scipy:BDF", "error"]
    fixed = work_precision("cos", methods="ab3", n_steps=[16, 32], repeats=1).table
    err = fixed.sort_values("steps")["error"].to_numpy()
    assert err[1] < err[0] / 4  # third order: 8x from halving h, with slack


# --- stiff rows, one work axis, error measures, atol per component, time limits ----------

import math  # noqa: E402
import time  # noqa: E402

from scipy.integrate import solve_ivp  # noqa: E402

from odenet import solve  # noqa: E402


@pytest.fixture(scope="module")
def stiff():
    prob = get_problem("robertson")
    res = work_precision(
        prob,
        methods="radau_iia5,radau_iia5+jac,scipy:Radau,scipy:Radau+jac,scipy:BDF+jac,scipy:LSODA",
        tolerances=[1e-3],
        repeats=1,
        error="mixed",
    )
    return prob, res.table.set_index("label")


def test_scipy_rows_count_every_call_of_f_including_the_finite_difference_jacobian(stiff):
    prob, t = stiff
    f_calls = [0]

    def f(t_, y):
        f_calls[0] += 1
        return prob.f_numpy(t_, y)

    for label, method, extra in [
        ("scipy:Radau", "Radau", {}),
        ("scipy:Radau+jac", "Radau", {"jac": prob.jac_numpy}),
        ("scipy:BDF+jac", "BDF", {"jac": prob.jac_numpy}),
    ]:
        f_calls[0] = 0
        sol = solve_ivp(f, prob.span, prob.y0, method=method, rtol=1e-3, atol=1e-9, **extra)
        row = t.loc[label]
        assert (row["nfe"], row["njev"], row["nlu"]) == (f_calls[0], sol.njev, sol.nlu)
        assert row["jac_products"] == 0
        if extra:  # an exact Jacobian: scipy's own count is complete
            assert row["nfe"] == sol.nfev
        else:  # a difference Jacobian costs n calls that scipy's nfev leaves out
            assert row["nfe"] >= sol.nfev + prob.dim * sol.njev


def test_odenet_rows_count_the_autograd_jacobian_products(stiff):
    prob, t = stiff
    sol = solve(
        prob.f,
        prob.y0_tensor(),
        torch.linspace(*prob.span, 21, dtype=torch.float64),
        method="radau_iia5",
        rtol=1e-3,
        atol=prob.atol(1e-3),
    )
    row = t.loc["radau_iia5"]
    assert row["nfe"] == sol.stats["nfe"] and row["njev"] == sol.stats["jacobians"] > 0
    assert row["jac_products"] == prob.dim * row["njev"]
    assert row["work"] == row["nfe"] + row["jac_products"]
    # with the problem's exact Jacobian: no products, and the same solve as solve(jac=...)
    with_jac = solve(
        prob.f,
        prob.y0_tensor(),
        torch.linspace(*prob.span, 21, dtype=torch.float64),
        method="radau_iia5",
        rtol=1e-3,
        atol=prob.atol(1e-3),
        jac=lambda t, y: prob.jac_numpy(float(t), y.numpy()),
    )
    row = t.loc["radau_iia5+jac"]
    assert row["jac_products"] == 0 and row["nfe"] == with_jac.stats["nfe"]
    assert row["njev"] == with_jac.stats["njev"] and row["nlu"] == with_jac.stats["nlu"]
    # and the stiff solvers all reach the tolerance in the mixed measure
    assert (t["status"] == "ok").all() and (t["error"] < 30 * 1e-3).all(), t["error"]


def test_error_measures_and_per_component_atol_reach_both_libraries():
    prob = Problem(
        lambda t, y: torch.stack([-y[0], -30 * y[1]]),
        y0=[1.0, 1e-3],
        span=(0.0, 1.0),
        exact=lambda t: np.stack([np.exp(-t), 1e-3 * np.exp(-30 * t)], axis=1),
        f_numpy=lambda t, y: np.array([-y[0], -30 * y[1]]),
        atol_ratio=[1e-3, 1e-9],
    )
    res = work_precision(
        prob, methods="dopri5,scipy:RK45", tolerances=[1e-4], repeats=1, error="rel"
    )
    t = res.table.set_index("label")
    # scipy rerun with the per-component atol: the same run
    sol = solve_ivp(prob.f_numpy, prob.span, prob.y0, rtol=1e-4, atol=[1e-7, 1e-13])
    assert t.loc["scipy:RK45", "nfe"] == sol.nfev
    ours = solve(
        prob.f,
        prob.y0_tensor(),
        torch.linspace(0, 1, 21, dtype=torch.float64),
        rtol=1e-4,
        atol=torch.tensor([1e-7, 1e-13], dtype=torch.float64),
    )
    assert t.loc["dopri5", "nfe"] == ours.stats["nfe"]
    # the three measures from the same solution, by hand
    ts = np.linspace(0, 1, 21)
    ref = prob.exact(ts)
    diff = np.abs(ours.ys.numpy() - ref)
    assert t.loc["dopri5", "error_max"] == pytest.approx(diff.max(), rel=1e-12)
    assert t.loc["dopri5", "rel_max"] == pytest.approx((diff / np.abs(ref)).max(), rel=1e-12)
    mixed = diff / (np.array([1e-3, 1e-9]) + np.abs(ref))
    assert t.loc["dopri5", "mixed_final"] == pytest.approx(mixed[-1].max(), rel=1e-12)
    assert (t["error"] == t["rel_max"]).all()
    # the per-component atol matters here: a scalar one gives another run
    scalar = solve_ivp(prob.f_numpy, prob.span, prob.y0, rtol=1e-4, atol=1e-7)
    assert scalar.nfev < sol.nfev


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("scipy:RK45+jac", r"scipy:RK45 does not take `jac`"),
        ("scipy:LSODA+sparsity", r"scipy:LSODA does not take `jac_sparsity`"),
        ("dopri5+jac", "go with odenet's implicit methods"),
        ("scipy:BDF+hessian", "unknown variant"),
    ],
)
def test_bad_variants_are_refused(spec, match):
    with pytest.raises(InputError, match=match):
        parse_solver(spec)


def test_a_variant_needs_what_the_problem_provides():
    with pytest.raises(InputError, match="problem 'kepler' has no Jacobian"):
        work_precision("kepler", methods="scipy:BDF+jac")
    with pytest.raises(InputError, match="has no sparsity pattern"):
        work_precision("robertson", methods="scipy:BDF+sparsity")
    with pytest.raises(InputError, match="`error` must be one of abs, rel, mixed"):
        work_precision("cos", error="relative")
    with pytest.raises(InputError, match="`cell_timeout` must be a positive number"):
        work_precision("cos", cell_timeout=0)


def _slow_field(t, y):  # module level: the same field (the same study) in both runs
    time.sleep(0.01)
    return -y


def _hung_field(t, y):
    time.sleep(3600)
    return -y


def test_a_cell_past_its_time_limit_fails_with_timeout_and_a_larger_limit_retries_it(tmp_path):
    slow = Problem(_slow_field, y0=[1.0], span=(0, 1), exact=lambda t: np.exp(-t)[:, None])
    hung = Problem(_hung_field, y0=[1.0], span=(0, 1), exact=lambda t: np.exp(-t)[:, None])
    start = time.perf_counter()
    res = work_precision(hung, methods="rk4,scipy:RK45", n_steps=[50], tolerances=[1e-6],
                         repeats=1, cell_timeout=0.3)  # fmt: skip
    # a field stuck in one call is killed (limit + grace per cell), never waited for
    assert time.perf_counter() - start < 2 * (0.3 + 2.0) + 10
    assert (res.table["status"] == "failed").all()
    assert res.table["message"].str.startswith("timeout").all()
    kw = dict(methods="rk4", n_steps=[50], repeats=1, out=tmp_path / "wp")
    first = work_precision(slow, cell_timeout=0.2, **kw)  # 200 calls of 10 ms: > 0.2 s
    assert first.table["message"].iloc[0].startswith("timeout")
    again = work_precision(slow, cell_timeout=0.2, **kw)  # same limit: loaded, not rerun
    assert again.counts == {"loaded": 1, "computed": 0}
    done = work_precision(slow, cell_timeout=60, **kw)
    assert done.counts == {"loaded": 0, "computed": 1}
    assert done.table["status"].iloc[0] == "ok" and done.table["nfe"].iloc[0] >= 200
    assert math.isfinite(done.table["error"].iloc[0])


def test_compare_command_with_a_problem_file_and_the_new_options(tmp_path, monkeypatch, capsys):
    import json

    from odenet.cli import main

    (tmp_path / "mine.py").write_text(
        "import torch\nfrom odenet.problems import Problem\n\n"
        "def stiff_decay(lam: float = -100.0):\n"
        "    return Problem(lambda t, y: lam * (y - torch.cos(t)), y0=[1.0], span=(0.0, 1.0),\n"
        "                   stiff=True, name='stiff_decay', atol_ratio=1e-4)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ODENET_CACHE", str(tmp_path / "cache"))
    argv = ["compare", "--problem", "mine.py:stiff_decay", "--param", "lam=-50"]
    argv += ["--methods", "kvaerno3,scipy:BDF", "--tols", "1e-3", "--repeats", "1"]
    argv += ["--error", "mixed", "--cell-timeout", "60", "--quiet", "--no-plot"]
    assert main(argv) == 0
    out = tmp_path / "odenet-results" / "compare-stiff_decay"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["error"] == "mixed" and cfg["cell_timeout"] == 60 and cfg["params"] == {"lam": -50}
    table = pd.read_csv(out / "results.csv")
    assert (table["status"] == "ok").all() and (table["error"] == table["mixed_max"]).all()
    assert "mixed error" in capsys.readouterr().out
    assert cfg["problem"] == f"{tmp_path / 'mine.py'}:stiff_decay"
    # the saved configuration reruns it from any folder (every cell loaded)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rerun = ["compare", "--config", str(out / "config.json"), "--out", str(out)]
    assert main([*rerun, "--quiet", "--no-plot"]) == 0
    assert "0 computed, 2 loaded" in capsys.readouterr().out


def test_lsoda_with_a_sparse_jacobian_runs():
    """A problem's `jac_numpy` may return a scipy sparse matrix (Radau and BDF take it);
    LSODA takes dense ones only, and the `+jac` row failed with "setting an array
    element with a sequence"."""
    from scipy import sparse
    from scipy.linalg import expm

    A = np.array([[-2.0, 1.0], [1.0, -200.0]])
    At = torch.as_tensor(A)
    prob = Problem(
        lambda t, y: At @ y,
        y0=[1.0, 1.0],
        span=(0.0, 1.0),
        exact=lambda t: np.stack([expm(A * s) @ np.ones(2) for s in np.atleast_1d(t)]),
        jac_numpy=lambda t, y: sparse.csr_matrix(A),
        f_numpy=lambda t, y: A @ y,
        stiff=True,
    )
    res = work_precision(prob, methods="scipy:LSODA+jac,scipy:LSODA", tolerances=[1e-6], repeats=1)
    t = res.table.set_index("label")
    assert (t["status"] == "ok").all(), t["message"].tolist()
    assert t.loc["scipy:LSODA+jac", "error"] < 1e-4
    assert t.loc["scipy:LSODA+jac", "njev"] > 0


def test_a_fixed_step_row_that_sub_stepped_says_so(tmp_path):
    # audit M S2 (F2's mechanism in compare): at N = 16 on Kepler gauss_legendre4's
    # Newton iteration fails once; the row labelled N=16 took 17 accepted + 1 rejected
    # steps and the text showed nothing but `steps 17`.  A row that took its N steps
    # (the same method at N = 32; torchdiffeq's rk4, whose rejected count is unknown)
    # carries no note.  The truth for the step counts: a fixed-step row of N steps has
    # h = span/N on every step, so its steps are N.
    r = work_precision(
        "kepler",
        methods="gauss_legendre4,torchdiffeq:rk4",
        n_steps=[16, 32],
        repeats=1,
        cell_timeout=None,
        out=tmp_path / "wp",
    )
    t = r.table.set_index(["label", "n_steps"])
    assert (t["status"] == "ok").all()
    sub = t.loc[("gauss_legendre4", 16)]
    assert (sub["steps"], sub["rejected"]) != (16, 0)
    assert "the fixed step h=0.3927 could not be taken (Newton failed" in sub["message"]
    assert "17 accepted and 1 rejected steps instead of 16" in sub["message"]
    for key in [("gauss_legendre4", 32), ("torchdiffeq:rk4", 16), ("torchdiffeq:rk4", 32)]:
        assert t.loc[key, "steps"] == key[1] and t.loc[key, "message"] == "", key
    assert "Not run as labelled:\n  gauss_legendre4 N=16: the fixed step" in r.to_text()


def test_a_zero_of_the_reference_at_one_output_time_keeps_the_final_relative_error(tmp_path):
    # audit M F3: y' = cos t, y(0) = -sin 0.5, exact sin t - sin 0.5, exactly 0 at the
    # output time t = 0.5: every rel_* norm was inf (final too), the cell was stored `ok`
    # and then rejected by odenet's own validator on every rerun (a new *.json.bad each
    # time), even for --error abs.
    import warnings

    from odenet.studies.sweep import ResultsWarning

    s = math.sin(0.5)
    problem = Problem(lambda t, y: torch.cos(t) + 0 * y, y0=[-s], span=(0.0, 1.0),
                      exact=lambda t: (np.sin(t) - s)[:, None], name="zero")  # fmt: skip
    # the truth: rk4 on y' = cos t is Simpson's rule on each step
    h, y = 1 / 8, -s
    for k in range(8):
        t = k * h
        y += h * (math.cos(t) + 4 * math.cos(t + h / 2) + math.cos(t + h)) / 6
    truth = abs(y - (math.sin(1.0) - s)) / (math.sin(1.0) - s)

    def run(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResultsWarning)  # a rejected cell warns
            return work_precision(problem, methods="rk4", n_steps=[8], repeats=1,
                                  cell_timeout=None, out=tmp_path / "wp", **kw)  # fmt: skip

    first = run()
    row = first.table.iloc[0]
    assert row["status"] == "ok"
    assert row["rel_final"] == pytest.approx(truth, rel=1e-6)
    assert row["rel_max"] == math.inf and row["rel_l2"] == math.inf
    again = run(error="rel", norm="final")
    assert again.counts == {"loaded": 1, "computed": 0}
    assert again.table.iloc[0]["error"] == pytest.approx(truth, rel=1e-6)
    assert not list((tmp_path / "wp").rglob("*.bad"))


def test_tolerance_labels_give_back_the_tolerance_that_ran(tmp_path):
    # audit M F5: the table and the plot printed rtol with one digit: 1.5e-4 as
    # `rtol=1e-04`, 2.5e-4 as `rtol=3e-04`
    import re

    from odenet.plotting import _setting_label

    tols = [1e-4, 1.5e-4, 2.5e-4]
    r = work_precision("kepler", methods="scipy:RK45", tolerances=tols, repeats=1,
                       cell_timeout=None, out=tmp_path / "wp")  # fmt: skip
    shown = [float(x) for x in re.findall(r"rtol=(\S+)", r.to_text())]
    assert sorted(shown) == sorted(r.table["rtol"]) == sorted(tols)
    labels = [_setting_label(row) for row in r.table.to_dict("records")]
    assert sorted(float(x) for x in labels) == sorted(tols)


def test_the_first_run_of_a_cell_is_an_untimed_warm_up(monkeypatch):
    # audit M F6: a solver's first call in a process pays one-off costs (odenet dopri5
    # on Kepler: 1.16 s, then ~12 ms); every repeat was timed, so --repeats 1 reported
    # the warm-up (74 ms against ~10 ms) and 2 the mean of it and a real run.  The truth
    # here: a stand-in solve that takes 0.4 s the first time and 0.01 s after.
    import importlib
    import time as time_module

    W = importlib.import_module("odenet.studies.work_precision")

    real = W._run_once
    calls = []

    def run_once(*args, **kw):
        calls.append(1)
        time_module.sleep(0.4 if len(calls) == 1 else 0.01)
        return real(*args, **kw)

    monkeypatch.setattr(W, "_run_once", run_once)
    payload = W.problem_payload(get_problem("exponential"), None)
    for repeats in (1, 2):
        calls.clear()
        cell = W.work_precision_cell(payload, "rk4", 8, repeats, "float64")
        assert cell["status"] == "ok" and len(calls) == repeats + 1
        assert len(cell["wall_all_s"]) == repeats
        assert cell["wall_s"] < 0.2, cell["wall_all_s"]


def test_float32_default_tolerances_are_ones_its_solves_do_not_warn_about(tmp_path):
    # audit M F9: the float32 defaults kept every tolerance >= eps (1e-3 and 1e-5), and
    # the solver then warned that 1e-5 is below 100·eps of float32 (1.2e-5), the floor
    # the solver itself (odenet._validate.warn_rtol_below_round_off) states
    import warnings

    import odenet

    floor = 100 * float(torch.finfo(torch.float32).eps)
    with warnings.catch_warnings():
        warnings.simplefilter("error", odenet.ToleranceWarning)
        r = work_precision(get_problem("kepler", eccentricity=0.3, t1=1.0), methods="dopri5",
                           dtype="float32", repeats=1, cell_timeout=None,
                           out=tmp_path / "wp")  # fmt: skip
    rtols = r.table["rtol"].tolist()
    assert len(rtols) >= 2 and min(rtols) >= floor
    assert (r.table["status"] == "ok").all()


def test_a_float32_fixed_step_row_with_an_extra_step_is_not_blamed_on_newton(tmp_path):
    # rk4 in float32 takes N + 1 steps (audit M F9 note: N=16 -> 17 steps, nfe 68), none
    # rejected; the sub-step note first said "could not be taken (steps were rejected)"
    r = work_precision("kepler", methods="rk4", n_steps=[16], dtype="float32", repeats=1,
                       cell_timeout=None, out=tmp_path / "wp")  # fmt: skip
    row = r.table.iloc[0]
    assert row["status"] == "ok" and row["rejected"] == 0
    if row["steps"] != 16:
        assert row["nfe"] == 4 * row["steps"]  # rk4: 4 evaluations per step, all accepted
        assert f"took {int(row['steps'])} steps instead of 16, none rejected" in row["message"]
        assert "Newton" not in row["message"] and "rejected)" not in row["message"]
    else:
        assert row["message"] == ""


def test_scipy_rows_of_a_float32_study_say_float64_in_the_table_text_and_plot():
    # audit M S3: solve_ivp runs in float64 whatever the study's dtype
    import matplotlib

    matplotlib.use("Agg")
    from odenet.plotting import plot_work_precision

    r = work_precision("cos", methods="dopri5,scipy:RK45", tolerances=[1e-3], dtype="float32",
                       repeats=1, cell_timeout=None)  # fmt: skip
    assert list(r.table["label"]) == ["dopri5", "scipy:RK45 (float64)"]
    assert list(r.table["dtype"]) == ["float32", "float64"]
    assert "its rows (scipy:RK45 (float64)) are float64 solves" in r.to_text()
    fig = plot_work_precision(r)
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    assert any(text.startswith("scipy:RK45 (float64)") for text in legend), legend
    # a float64 study's labels are the solver names, as before
    r64 = work_precision("cos", methods="scipy:RK45", tolerances=[1e-3], repeats=1,
                         cell_timeout=None)  # fmt: skip
    assert list(r64.table["label"]) == ["scipy:RK45"] and list(r64.table["dtype"]) == ["float64"]
    assert "float64 solves" not in r64.to_text()


def test_cells_of_another_scipy_or_torchdiffeq_are_recomputed_with_a_warning(tmp_path, monkeypatch):
    # a peer's row computed with another scipy or torchdiffeq was served as current
    import warnings

    import odenet._build as build

    wp = importlib.import_module("odenet.studies.work_precision")  # (the name is a function)
    from odenet.studies.sweep import ResultsWarning

    real = build.library_version
    versions = {}
    monkeypatch.setattr(build, "library_version", lambda n: versions.get(n, real(n)))
    computed = []

    def cell(payload, spec, *args):
        computed.append(spec)
        return {**wp_cell(payload, spec, *args), "message": f"{spec} {versions}"}

    wp_cell = wp.work_precision_cell
    monkeypatch.setattr(wp, "work_precision_cell", cell)

    def run():
        computed.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResultsWarning)
            res = work_precision("exponential", methods="rk4,scipy:RK45,torchdiffeq:rk4",
                                 tolerances=[1e-3], n_steps=[16], repeats=1,
                                 cell_timeout=None, out=tmp_path / "wp")  # fmt: skip
        said = [str(w.message) for w in caught if issubclass(w.category, ResultsWarning)]
        return res, sorted(computed), said

    versions.update(scipy="1.0.0", torchdiffeq="0.1.0")
    res, computed_now, said = run()
    assert computed_now == ["rk4", "scipy:RK45", "torchdiffeq:rk4"] and not said
    assert run()[1:] == ([], [])  # the same build: served, nothing said

    # another torchdiffeq: its row only; the others do not run on it
    versions.update(torchdiffeq="0.2.0")
    res, computed_now, said = run()
    assert computed_now == ["torchdiffeq:rk4"] and len(said) == 1
    assert "1 cell(s)" in said[0] and "torchdiffeq 0.1.0 → 0.2.0 (1)" in said[0]

    # another scipy: the scipy row (and the others: the problems' exact solutions and
    # odenet's sparse Jacobians use scipy too)
    del versions["scipy"]
    res, computed_now, said = run()
    assert "scipy:RK45" in computed_now and len(said) == 1
    assert f"scipy 1.0.0 → {real('scipy')}" in said[0]
    assert "odenet code changed" not in said[0]
    # the table: one row per requested cell, each of this build
    assert len(res.table) == 3
    assert all("'scipy'" not in m for m in res.table["message"])
    assert "0.2.0" in res.table.set_index("label").loc["torchdiffeq:rk4", "message"]


def test_a_backward_span_compares_like_its_mirror_image_forward(tmp_path):
    """``y' = cos(t) y`` from 0 back to −2 against ``z' = −cos(s) z`` forward from 0 to 2
    (``z(s) = y(−s)``): every row of the backward study — odenet's adaptive and fixed,
    scipy's, torchdiffeq's — has the errors and work of the same row on the mirrored
    problem (each library integrates a decreasing span as the mirrored increasing one),
    and scipy's RK45 takes the steps of odenet's dopri5 (the same pair and controller)."""

    def exp_sin(t):
        return np.exp(np.sin(np.asarray(t, dtype=np.float64)))[:, None]

    methods = "dopri5,rk4,radau_iia5,scipy:RK45,torchdiffeq:rk4"
    kw = dict(methods=methods, tolerances=[1e-4, 1e-7], n_steps=[16, 32], repeats=1)
    back = work_precision(
        Problem(lambda t, y: torch.cos(t) * y, y0=[1.0], span=(0.0, -2.0), exact=exp_sin),
        out=tmp_path / "back", **kw,
    )  # fmt: skip
    mirror = work_precision(
        Problem(lambda s, z: -torch.cos(s) * z, y0=[1.0], span=(0.0, 2.0),
                exact=lambda s: exp_sin(-np.asarray(s))),
        out=tmp_path / "mirror", **kw,
    )  # fmt: skip

    def rows(r):
        t = r.table.assign(setting=r.table["rtol"].fillna(r.table["n_steps"]))
        return t.set_index(["label", "setting"]).sort_index()

    b, m = rows(back), rows(mirror)
    assert (b["status"] == "ok").all(), b["message"]
    assert len(b) == 10
    np.testing.assert_allclose(b["error"], m["error"], rtol=1e-6)
    assert (b["nfe"] == m["nfe"]).all() and (b["steps"] == m["steps"]).all()
    dop, rk45 = (b.xs(label, level="label") for label in ("dopri5", "scipy:RK45"))
    assert (dop["nfe"] == rk45["nfe"]).all()
    np.testing.assert_allclose(dop["error"], rk45["error"], rtol=1e-6)
