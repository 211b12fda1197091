"""Work–precision: monotone cost and error across tolerances, real scipy/torchdiffeq rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odenet._errors import InputError
from odenet.problems import Problem, get_problem
from odenet.studies.work_precision import parse_solver, work_precision

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
    # both libraries' fixed-step RK4 take four evaluations per step (odenet: plus at
    # most one for the dense output at the requested times)
    for label in ["rk4", "torchdiffeq:rk4"]:
        sub = t[t["label"] == label]
        extra = sub["nfe"] - 4 * sub["n_steps"]
        assert ((extra >= 0) & (extra <= 1)).all(), (label, extra.tolist())


def test_scipy_and_torchdiffeq_rows_are_real_runs(result):
    from scipy.integrate import solve_ivp

    t = result.table
    prob = get_problem("kepler", eccentricity=0.3, t1=3.0)
    # rerun scipy RK45 at rtol 1e-5 ourselves: same NFE, same steps
    sol = solve_ivp(prob.f_numpy, prob.span, prob.y0, method="RK45", rtol=1e-5, atol=1e-8)
    row = t[(t["label"] == "scipy:RK45") & (t["rtol"] == 1e-5)].iloc[0]
    assert row["nfe"] == sol.nfev
    assert row["steps"] == len(sol.t) - 1
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
    assert "Fewest evaluations reaching each error target" in result.to_text()


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
        (dict(n_steps=[0]), "`n_steps` must be positive integers"),
        (dict(repeats=0), "`repeats` must be a positive integer"),
    ],
)
def test_validation_messages(kwargs, match):
    with pytest.raises(InputError, match=match):
        work_precision("cos", **kwargs)


def test_parse_solver():
    assert parse_solver("dopri5").adaptive and parse_solver("dopri5").library == "odenet"
    assert not parse_solver("rk4").adaptive
    assert parse_solver("scipy:Radau").label == "scipy:Radau"
    assert not parse_solver("torchdiffeq:rk4").adaptive
