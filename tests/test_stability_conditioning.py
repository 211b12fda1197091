"""`odenet.stability.conditioning` against closed forms.

Linear systems: the scaled propagator is `D(t)⁻¹ expm(A (t − s)) D(s)` with `D` from the
exact solution `expm(A s) y0` (scipy's `expm`, independent of the solver); scalar
Prothero–Robinson problems have it in closed form.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm

import odenet
from odenet.stability import ConditioningReport, StabilityInputError, conditioning

F64 = torch.float64


def _step_max(y):
    """The documented tolerance unit's ``|y|`` at each checkpoint (rows):
    ``max(|y(s_{j−1})|, |y(s_j)|)``, ``|y0|`` at the start."""
    return np.maximum(y, np.vstack([y[:1], y[:-1]]))


def _exact_log10(A, y0, times, rtol, atol):
    ys = np.stack([expm(A * (s - times[0])) @ y0 for s in times])
    D = atol + rtol * _step_max(np.abs(ys))
    m = len(times)
    out = np.full((m, m), np.nan)
    for i in range(m):
        for j in range(i, m):
            M = expm(A * (times[j] - times[i]))
            out[j, i] = math.log10(np.linalg.norm(M * D[i][None, :] / D[j][:, None], 2))
    return out


# non-normal, stable systems whose transients peak well above 1: a stiff one for the
# implicit methods and a non-stiff one for dopri5, whose flow on a stiff component is its
# stability function at the step (|R(hλ)| ≈ 1 where the controller holds it), not e^{hλ}
A_STIFF = np.array([[-1.0, 40.0, 0.0], [0.0, -2.0, 5.0], [0.0, 0.0, -300.0]])
A_NONSTIFF = np.array([[-1.0, 40.0, 0.0], [0.0, -2.0, 5.0], [0.0, 0.0, -3.0]])
Y0 = np.array([1.0, -0.5, 2.0])


@pytest.mark.parametrize(
    "method, A0, backward",
    [
        ("dopri5", A_NONSTIFF, False),
        ("dopri5", A_NONSTIFF, True),
        ("radau_iia5", A_STIFF, False),
        ("radau_iia5", A_STIFF, True),
        ("bdf", A_STIFF, False),
        ("kvaerno5", A_STIFF, True),
    ],
)
def test_amplification_of_a_linear_system_is_the_scaled_matrix_exponential(method, A0, backward):
    A = -A0 if backward else A0  # backward in time: the same flow reversed
    t = torch.tensor([0.0, 0.05, 0.4, 1.5], dtype=F64)
    if backward:
        t = -t
    rtol, atol = 1e-9, 1e-11
    report = conditioning(
        lambda t, y: torch.as_tensor(A) @ y,
        torch.as_tensor(Y0),
        t,
        method=method,
        rtol=rtol,
        atol=atol,
        checkpoints=6,
    )
    exact = _exact_log10(A, Y0, report.times, rtol, atol)
    assert report.times[0] == t[0] and report.times[-1] == t[-1]
    assert set(t.tolist()) <= set(report.times.tolist())
    np.testing.assert_allclose(report.log10_amplification, exact, atol=2e-5, equal_nan=True)
    assert report.worst == pytest.approx(10 ** np.nanmax(exact), rel=1e-4)
    # the worst so far is non-decreasing only from the start; each row's max is ≥ 1
    assert np.all(report.amplification >= 1.0)


def _pr(lam):
    return lambda t, y: lam * (y - torch.sin(t)) + torch.cos(t)


@pytest.mark.parametrize(
    "lam, verdict",
    [(-50.0, "well-conditioned"), (1.5, "sensitive"), (6.0, "ill-conditioned")],
)
def test_prothero_robinson_amplification_and_verdict_in_closed_form(lam, verdict):
    """`y' = λ(y − sin t) + cos t`, `y = sin t`: `Φ(t, s) = e^{λ(t − s)}`, so
    `Â(t, s) = e^{λ(t − s)} (atol + rtol|y(s)|) / (atol + rtol|y(t)|)`."""
    rtol, atol = 1e-8, 1e-8
    t = torch.linspace(0.0, 4.0, 3, dtype=F64)
    report = conditioning(
        _pr(lam),
        torch.zeros(1, dtype=F64),
        t,
        method="radau_iia5",
        rtol=rtol,
        atol=atol,
        checkpoints=16,
    )
    s = report.times
    # the scale is the computed solution's (ill-conditioned, it is far from sin t at the
    # end, which is the point); Φ = e^{λΔs} along any solution
    D = atol + rtol * _step_max(np.abs(report.states.numpy()))[:, 0]
    exact = np.log10(np.exp(lam * (s[:, None] - s[None, :])) * D[None, :] / D[:, None])
    exact[np.triu_indices(len(s), 1)] = np.nan
    # (a decayed propagator, 1e-5 and below, is the method's R(hλ)^k, not e^{λΔs}: compared
    # in absolute terms, as the error it carries)
    np.testing.assert_allclose(
        10**report.log10_amplification, 10**exact, rtol=1e-4, atol=1e-4, equal_nan=True
    )
    assert report.verdict == verdict, report.reason
    assert verdict in report.summary()
    if verdict == "ill-conditioned":
        assert "not determined" in report.reason
        assert report.digits_lost > 4


def test_relative_errors_of_exponential_growth_are_not_amplified():
    """`y' = 5y` with atol ≪ rtol|y|: a relative error is carried unchanged, `Â ≈ 1`."""
    report = conditioning(
        lambda t, y: 5.0 * y,
        torch.ones(2, dtype=F64),
        torch.tensor([0.0, 3.0], dtype=F64),
        rtol=1e-8,
        atol=1e-16,
        checkpoints=5,
    )
    assert report.verdict == "well-conditioned"
    assert report.worst == pytest.approx(1.0, rel=1e-6)


def test_report_shapes_states_and_float32():
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float32)  # any shape, n = 4
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float32)
    report = conditioning(lambda t, y: -y, y0, t, rtol=1e-4, atol=1e-7, checkpoints=4)
    assert isinstance(report, ConditioningReport)
    m = len(report.times) - 1
    assert report.states.shape == (m + 1, 2, 2)
    assert report.propagators.shape == (m, 4, 4)
    assert report.log10_amplification.shape == (m + 1, m + 1)
    assert report.scale.shape == (m + 1, 4)
    # y' = −y: Φ(s_{i+1}, s_i) = e^{−Δs} I, the states the exact decay
    for i in range(m):
        ds = report.times[i + 1] - report.times[i]
        np.testing.assert_allclose(report.propagators[i], math.exp(-ds) * np.eye(4), atol=1e-4)
    np.testing.assert_allclose(report.states[-1].numpy(), math.exp(-1.0) * y0.numpy(), atol=1e-5)
    assert report.stats["nfe"] > 0 and report.stats["steps"] >= m


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y0=torch.tensor([1, 2])), "floating-point"),
        (dict(t=torch.zeros(2, 3, dtype=F64)), "1-D"),
        (dict(t=torch.tensor([0.0, 1.0, 0.5], dtype=F64)), "increasing"),
        (dict(checkpoints=0), "checkpoints"),
        (dict(ill_conditioned=1.0), "ill_conditioned"),
        (dict(sensitivity="adjoint"), "sensitivity"),
        (dict(throw=False), "throw"),
        (dict(events=lambda t, y: y[0] - 0.5), "events"),
        (dict(atol=0.0, y0=torch.tensor([0.0, 1.0], dtype=F64)), "atol"),
    ],
)
def test_bad_input_is_a_stability_input_error(kwargs, match):
    args = dict(
        f=lambda t, y: -y, y0=torch.ones(2, dtype=F64), t=torch.tensor([0.0, 1.0], dtype=F64)
    )
    args.update(kwargs)
    with pytest.raises(StabilityInputError, match=match):
        conditioning(**args)
    assert issubclass(StabilityInputError, odenet.OdenetError)


def test_a_failed_segment_solve_raises():
    with pytest.raises(odenet.OdenetError):
        conditioning(
            lambda t, y: -1e4 * y,
            torch.ones(1, dtype=F64),
            torch.tensor([0.0, 1.0], dtype=F64),
            method="dopri5",
            max_steps=3,
        )


# --- `odenet conditioning` --------------------------------------------------------------


def test_cli_growth_is_one_unit_and_json_matches_the_closed_form(capsys):
    """``y' = 2y`` with atol ≪ rtol|y|: every scaled propagator is exactly one unit."""
    from odenet.cli import main

    argv = ["conditioning", "--problem", "exponential", "--param", "lam=2", "--rtol", "1e-8"]
    assert main([*argv, "--atol", "1e-20", "--checkpoints", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "well-conditioned" and out["method"] == "dopri5"
    assert out["worst"] == pytest.approx(1.0, rel=1e-6)
    assert len(out["times"]) == len(out["amplification"]) == 9


def test_cli_reads_a_problem_file_and_reports_ill_conditioning(tmp_path, capsys):
    from odenet.cli import main

    path = tmp_path / "pr.py"
    path.write_text(
        "import torch\n"
        "from odenet.problems import Problem\n"
        "def pr():\n"
        "    f = lambda t, y: 6.0 * (y - torch.sin(t)) + torch.cos(t)\n"
        "    return Problem(f=f, y0=[0.0], span=(0.0, 4.0), stiff=True, atol_ratio=1.0)\n"
    )
    assert main(["conditioning", "--problem", f"{path}:pr", "--rtol", "1e-8"]) == 0
    text = capsys.readouterr().out
    assert "ill-conditioned" in text and "radau_iia5" in text and "not determined" in text


def test_cli_bad_problem_is_one_error_line(capsys):
    from odenet.cli import main

    assert main(["conditioning", "--problem", "no_such_problem"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_problem" in err[0]


def test_pair_norms_match_products_formed_directly_even_past_overflow():
    from odenet.stability.amplification import _log10_pairs

    rng = np.random.default_rng(0)
    S = rng.normal(size=(12, 3, 3))
    S[7] = 0.0  # nothing carries across segment 7
    got = _log10_pairs(S)
    for i in range(13):
        for j in range(i, 13):
            P = np.eye(3)
            for k in range(i, j):
                P = S[k] @ P
            norm = np.linalg.norm(P, 2)
            want = -np.inf if norm == 0 else math.log10(norm)
            assert got[j, i] == pytest.approx(want, abs=1e-12), (i, j)
    # 400 segments each growing 1e3: the products pass 1e308, their logs do not
    big = _log10_pairs(np.broadcast_to(1e3 * np.eye(2), (400, 2, 2)))
    assert big[400, 0] == pytest.approx(1200.0)


def test_rows_one_pass_each_where_a_batched_backward_is_refused(monkeypatch):
    """A field whose operations vmap cannot batch: the Jacobian is taken a row a pass,
    with the same report."""
    args = (lambda t, y: torch.as_tensor(A_NONSTIFF) @ y, torch.as_tensor(Y0),
            torch.tensor([0.0, 1.0], dtype=F64))  # fmt: skip
    kw = dict(rtol=1e-8, atol=1e-10, checkpoints=3)
    batched = conditioning(*args, **kw)
    grad = torch.autograd.grad

    def no_batching(*a, **k):
        if k.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented for aten::something")
        return grad(*a, **k)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    rowwise = conditioning(*args, **kw)
    np.testing.assert_allclose(rowwise.propagators, batched.propagators, rtol=1e-12, atol=1e-15)
    assert rowwise.worst == pytest.approx(batched.worst, rel=1e-12)
