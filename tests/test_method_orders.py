"""Claim: every method converges with its declared order through ``odenet.solve``.

Fixed steps ``h`` on two problems with closed-form solutions, integrated together as
one 3-dimensional system (one solve per step size):

* ``y' = y cos t``, ``y(0) = 1``: ``y(t) = exp(sin t)`` (nonlinear in ``t``);
* ``u' = M u`` with ``M = [[-1/2, 2], [-2, -1/2]]``: ``u(t) = expm(M t) u(0)``
  (in closed form, cross-checked against ``torch.linalg.matrix_exp``).

The observed order is the least-squares slope of ``log(error)`` against ``log(h)``
over step sizes chosen per order so that the errors stay well above the round-off
floor (and, for implicit methods, the Newton tolerance); it must be within ±0.3 of
the declared order, for each problem separately.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import odenet
from odenet.tableaus import methods, tableau

T_END = 2.0
OUT = torch.linspace(0.0, T_END, 5, dtype=torch.float64)  # on every grid below
M = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
Y0 = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)

# steps per unit time, by order: three step sizes (even, so that every output time is
# a grid point), errors between ~1e-2 and ~1e-13
LADDER = {
    1: (8, 16, 32),
    2: (4, 8, 16),
    3: (4, 8, 16),
    4: (4, 8, 16),
    5: (4, 8, 16),
    6: (2, 4, 8),
    8: (4, 6, 8),
}
# Tsitouras minimised the fifth-order error coefficients, so the h^6 term matters down
# to small h here (fitted slopes 5.4 on h = 1/12..1/24, 5.25 on h = 1/24..1/48)
LADDER_BY_METHOD = {"tsit5": (24, 32, 48)}
FLOOR = 5e-14  # errors must stay above this (round-off is ~1e-15 here)


def field(t, y):
    return torch.cat([y[:1] * torch.cos(t), M @ y[1:]])


def exact(t: torch.Tensor) -> torch.Tensor:
    # expm(M t) = e^(−t/2) [[cos 2t, sin 2t], [−sin 2t, cos 2t]] in closed form: torch's
    # matrix_exp is off by up to ~1e-11 for small ‖M t‖ (see test_matrix_exp_reference)
    decay, cos, sin = torch.exp(-0.5 * t), torch.cos(2 * t), torch.sin(2 * t)
    u = decay[:, None] * torch.stack([cos * Y0[1] + sin * Y0[2], -sin * Y0[1] + cos * Y0[2]], 1)
    return torch.cat([torch.exp(torch.sin(t))[:, None], u], dim=1)


def observed_orders(method: str, ladder) -> tuple[float, float, list]:
    hs, errs = [], []
    truth = exact(OUT)
    for n in ladder:
        h = 1.0 / n
        sol = odenet.solve(field, Y0, OUT, method=method, step_size=h)
        assert sol.success
        err = (sol.ys - truth).abs()
        hs.append(h)
        errs.append((err[:, 0].max().item(), err[:, 1:].max().item()))
    logh = np.log(hs)
    slopes = [np.polyfit(logh, np.log([e[k] for e in errs]), 1)[0] for k in (0, 1)]
    return slopes[0], slopes[1], errs


@pytest.mark.parametrize("name", methods())
def test_observed_order_matches_declared_order(name):
    torch.set_num_threads(1)
    p = tableau(name).order
    s_nonlin, s_lin, errs = observed_orders(name, LADDER_BY_METHOD.get(name, LADDER[p]))
    assert min(min(e) for e in errs) > FLOOR, f"{name}: errors {errs} reach the round-off floor"
    assert abs(s_nonlin - p) <= 0.3, f"{name}: y' = y cos t, slope {s_nonlin:.2f}, errors {errs}"
    assert abs(s_lin - p) <= 0.3, f"{name}: linear system, slope {s_lin:.2f}, errors {errs}"


def test_exact_solution_is_right():
    # the reference itself, against a 1e-12 scipy solve (independent of odenet)
    from scipy.integrate import solve_ivp

    ref = solve_ivp(
        lambda t, y: np.concatenate([[y[0] * math.cos(t)], M.numpy() @ y[1:]]),
        (0.0, T_END),
        Y0.numpy(),
        method="DOP853",
        rtol=1e-13,
        atol=1e-13,
        t_eval=OUT.numpy(),
    )
    np.testing.assert_allclose(ref.y.T, exact(OUT).numpy(), rtol=1e-10, atol=1e-12)


def test_matrix_exp_reference():
    # at the output times the closed form and torch.linalg.matrix_exp agree to round-off
    u = torch.stack([torch.linalg.matrix_exp(M * tk) @ Y0[1:] for tk in OUT])
    torch.testing.assert_close(exact(OUT)[:, 1:], u, rtol=0, atol=1e-14)
