"""Random stiff problems with a known solution (issue 14's must-not-happen, on problems
nobody tuned on): a solve that reports success honoured its tolerance.

The cases and the judge live in ``studies/benchmarks/stiff_fuzz.py`` (which runs many
more and prints a table); here a few drawn cases that run fast, through the methods
users reach for first, one at a time and as one batch on per-sample grids.
"""

import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
import stiff_fuzz as F

METHODS = ["radau_iia5", "bdf", "kvaerno5", "sdirk4"]
# drawn cases (seeds of `stiff_fuzz.draw`) that each solve in well under a second:
# linear forwards, linear backwards, nonlinear forwards, nonlinear backwards
SEEDS = {"linear": 5, "linear_backward": 11, "nonlinear": 6, "nonlinear_backward": 2}
LIMIT = 100  # tolerance units, the "100 × rtol"


@functools.cache
def _exact(seed: int) -> np.ndarray:
    c = F.draw(seed)
    return c.exact(c.t_out)


def test_the_cases_cover_what_they_say():
    kinds = {}
    for name, seed in SEEDS.items():
        c = F.draw(seed)
        kinds[name] = ("nonlinear" if c.s else "linear") + ("_backward" if c.t1 < c.t0 else "")
    assert kinds == {name: name for name in SEEDS}


def test_closed_form_is_the_solution():
    """The judge's truth: the closed form agrees with scipy's DOP853 at 1e-12 on a
    non-stiff draw (and its field is the numpy field scipy integrates)."""
    from scipy.integrate import solve_ivp

    c = F.draw(47)  # |λ| ≈ 1, two outputs
    assert c.s == 0 and np.abs(np.linalg.eigvals(c.A)).max() < 10
    r = solve_ivp(c.f_numpy, (c.t0, c.t1), c.y0, "DOP853", t_eval=c.t_out, rtol=1e-12,
                  atol=1e-14)  # fmt: skip
    np.testing.assert_allclose(c.exact(c.t_out), r.y.T, rtol=1e-9, atol=1e-11)


def test_torch_and_numpy_fields_agree():
    for seed in SEEDS.values():
        c = F.draw(seed)
        f = c.f_torch()
        for t in (c.t0, 0.5 * (c.t0 + c.t1)):
            got = f(torch.tensor(t, dtype=torch.float64), torch.tensor(c.y0)).numpy()
            np.testing.assert_allclose(got, c.f_numpy(t, c.y0), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(SEEDS))
def test_status_ok_means_the_tolerance_was_honoured(kind, method):
    c = F.draw(SEEDS[kind])
    status, y, _ = F.run_odenet(c, method, limit=60)
    assert status == "ok", status
    worst = float(F.units(c, y, _exact(SEEDS[kind])).max())
    assert worst <= LIMIT, f"{worst:.3g} tolerance units; {c.describe()}"


@pytest.mark.parametrize("method", ["radau_iia5", "bdf"])
def test_a_batch_on_per_sample_grids_honours_each_samples_tolerance(method):
    """Three cases of different stiffness in one solve: each sample is judged against
    its own closed form."""
    c = F.draw(SEEDS["linear"])
    group = [c] + [F.draw(SEEDS["linear"] * 1000 + k, like=c) for k in (1, 2)]
    statuses, ys, _ = F.run_odenet_batch(group, method, limit=60)
    assert statuses == ["ok"] * 3
    for ck, yk in zip(group, ys):
        worst = float(F.units(ck, yk, ck.exact(ck.t_out)).max())
        assert worst <= LIMIT, f"{worst:.3g} tolerance units; {ck.describe()}"


def test_the_batched_field_is_each_cases_field():
    c = F.draw(SEEDS["nonlinear"])
    group = [c] + [F.draw(SEEDS["nonlinear"] * 1000 + k, like=c) for k in (1, 2)]
    f = F.batch_field(group)
    t = torch.tensor(0.5 * (c.t0 + c.t1), dtype=torch.float64)
    y = torch.tensor(np.stack([g.y0 for g in group]))
    for k, g in enumerate(group):
        np.testing.assert_allclose(
            f(t, y)[k].numpy(), g.f_numpy(float(t), g.y0), rtol=1e-12, atol=1e-9
        )


@pytest.mark.xfail(
    strict=True,
    reason="open: Radau IIA's and the DIRK pairs' interpolants between step ends are not "
    "error-controlled, and on a stiff system whose every component is stiff the steps "
    "are limited only by the step end's accuracy (here a long step covers an output); "
    "stiff_fuzz_results.md.  Pass the output times as step_t meanwhile.",
)
def test_an_output_inside_a_long_stiff_step_honours_the_tolerance():
    c = F.draw(200002001, like=F.draw(200002))
    status, y, _ = F.run_odenet(c, "radau_iia5", limit=60)
    assert status == "ok"
    worst = float(F.units(c, y, c.exact(c.t_out)).max())
    assert worst <= LIMIT, f"{worst:.3g} tolerance units; {c.describe()}"


def test_with_step_t_at_the_outputs_the_long_stiff_step_case_is_within_tolerance():
    c = F.draw(200002001, like=F.draw(200002))
    status, y, _ = F.run_odenet(c, "radau_iia5", limit=60, step_t=True)
    assert status == "ok"
    assert float(F.units(c, y, c.exact(c.t_out)).max()) <= 1
