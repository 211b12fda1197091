"""The status enum: each member carries its message and error class."""

from __future__ import annotations

import pytest
import torch

import odenet
from odenet import Status


def test_every_failure_status_has_a_message_and_an_error_class():
    for status in Status:
        assert status.message
        if status in (Status.SUCCESS, Status.TERMINATED):
            assert status.error is None
        else:
            assert issubclass(status.error, odenet.SolverError)


@pytest.mark.parametrize(
    "kw, status",
    [
        (dict(max_steps=3), Status.MAX_STEPS),
        (dict(method="rk4", step_size=0.9, f=lambda t, y: -50 * y**3), Status.NON_FINITE),
    ],
)
def test_solution_and_raised_error_agree_with_the_enum(kw, status):
    f = kw.pop("f", lambda t, y: -y)
    y0, t = torch.ones(1, dtype=torch.float64) * 3, torch.linspace(0, 30, 3, dtype=torch.float64)
    sol = odenet.solve(f, y0, t, throw=False, **kw)
    assert int(sol.status[0]) == status and sol.message == status.message
    assert not sol.success
    with pytest.raises(status.error, match="The solve reached t ="):
        odenet.solve(f, y0, t, **kw)
