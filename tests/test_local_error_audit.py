"""``studies/benchmarks/local_error_audit.py``: the true local error of each accepted step,
checked against the closed-form flow of a Prothero–Robinson problem."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from odenet import problems as P

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
import local_error_audit as A

LAM = -50.0  # stiff enough that radau_iia5's filter matters, mild enough to run fast


def _prothero_robinson() -> P.Problem:
    """``y' = λ(y − sin t) + cos t``: the flow from ``(t0, y0)`` is
    ``sin t + (y0 − sin t0)·e^{λ(t − t0)}``."""

    def f(t, y):
        return LAM * (y - torch.sin(t)) + torch.cos(t)

    return P.Problem(
        f=f, y0=[0.5], span=(0.0, 3.0), name="pr_audit", stiff=True,
        description="Prothero–Robinson, λ = −50, y(0) = 0.5",
    )  # fmt: skip


@pytest.mark.parametrize("method", ["radau_iia5", "kvaerno5"])
def test_true_local_errors_are_the_closed_form_flows(method):
    prob, rtol, floors = _prothero_robinson(), 1e-3, 1e-3
    sol, steps = A.accepted_steps(prob, method, rtol, floors, max_steps=10_000)
    assert bool(sol.success) and len(steps) > 5
    # the steps tile the span, each starting where the last ended
    t0 = np.array([s[0] for s in steps])
    h = np.array([s[1] for s in steps])
    assert t0[0] == 0.0 and np.isclose(t0[-1] + h[-1], 3.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t0[1:], t0[:-1] + h[:-1], rtol=0, atol=1e-12)
    for (_, _, _, y1), (_, _, y0, _) in itertools.pairwise(steps):
        np.testing.assert_array_equal(y1, y0)

    units = A.true_local_units(prob.numpy_field(), steps, rtol, floors)
    closed = []
    for t, dt, y0, y1 in steps:
        flow = np.sin(t + dt) + (y0 - np.sin(t)) * np.exp(LAM * dt)
        scale = floors * rtol + rtol * np.maximum(np.abs(y0), np.abs(y1))
        closed.append(float(np.abs((y1 - flow) / scale)[0]))
    # the reference's error (rtol 1e-12) is ~1e-9 of a tolerance unit
    np.testing.assert_allclose(units, closed, rtol=1e-4, atol=1e-6)
    assert max(closed) > 1e-3  # the steps make errors the comparison can see
