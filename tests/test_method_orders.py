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
# order 9 reaches the round-off floor at h = 1/4 on this grid (errors
# 3e-10 at h = 1/2, 3e-13 at 1/4 and 1/6), leaving no three even steps to fit;
# its order is fitted in tests/test_radau.py::test_observed_order_on_a_closed_form
ORDER_FITTED_ELSEWHERE = {"radau_iia9"}
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
    if name in ORDER_FITTED_ELSEWHERE:
        pytest.skip("order 9 reaches round-off at h = 1/4 here; fitted in test_radau.py")
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


# --- one step, spied on -------------------------------------------------------------------


class Spy:
    """Wrap ``f`` and record every ``(t, y, f(t, y))`` it is called with."""

    def __init__(self, f):
        self.f = f
        self.calls: list[tuple[float, torch.Tensor, torch.Tensor]] = []

    def __call__(self, t, y):
        out = self.f(t, y)
        self.calls.append((float(t), y.detach().clone(), out.detach().clone()))
        return out


def _nonlinear(t, y):
    return torch.stack([y[1] * torch.cos(t), -torch.sin(y[0]) + t * y[1]])


@pytest.mark.parametrize("name", [m for m in methods() if tableau(m).is_explicit])
def test_explicit_step_evaluates_f_at_the_nodes_with_the_stage_combinations(name):
    tab = tableau(name)
    t0, h = 0.7, 0.3
    y0 = torch.tensor([0.4, -1.1], dtype=torch.float64)
    spy = Spy(_nonlinear)
    y1 = odenet.step(spy, t0, y0, h, method=name)
    assert len(spy.calls) == tab.stages
    ks = torch.stack([k for _, _, k in spy.calls])
    for i, (t, y, _) in enumerate(spy.calls):
        assert t == pytest.approx(t0 + tab.c[i] * h, abs=1e-15)
        expected = y0 + h * (torch.as_tensor(tab.A[i, :i]) @ ks[:i] if i else 0.0)
        torch.testing.assert_close(y, expected, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(y1, y0 + h * torch.as_tensor(tab.b) @ ks, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", [m for m in methods() if tableau(m).is_implicit])
def test_implicit_step_evaluates_f_only_at_the_stage_times(name):
    tab = tableau(name)
    t0, h = 0.7, 0.3
    spy = Spy(_nonlinear)
    odenet.step(spy, t0, torch.tensor([0.4, -1.1], dtype=torch.float64), h, method=name)
    stage_times = {round(t0 + c * h, 12) for c in tab.c}
    called = {round(t, 12) for t, _, _ in spy.calls}
    # every stage time is visited; t0 only for f(t0, y0) and the Jacobian
    assert stage_times <= called <= stage_times | {round(t0, 12)}


# --- the stability function ------------------------------------------------------------------

# L-stable (R(−∞) = 0) as published; the other implicit methods are A-stable with |R(−∞)| = 1
L_STABLE = {
    "backward_euler",
    "sdirk2",
    "sdirk4",
    "trbdf2",
    "kvaerno3",
    "kvaerno5",
    "radau_iia3",
    "radau_iia5",
    "radau_iia9",
    "lobatto_iiic4",
}


def _linear(z: float):
    return lambda t, y: z * y


def stability_function(tab, z: float) -> float:
    """``R(z) = 1 + z bᵀ (I − z A)⁻¹ 𝟙`` (numpy, independent of the stepper)."""
    s = tab.stages
    return 1.0 + z * tab.b @ np.linalg.solve(np.eye(s) - z * tab.A, np.ones(s))


@pytest.mark.parametrize("name", methods())
def test_one_step_on_the_linear_test_equation_is_the_stability_function(name):
    tab = tableau(name)
    zs = [-2.5, -1.0, -0.3, 0.4] + ([-50.0, -5.0] if tab.is_implicit else [])
    for z in zs:
        y1 = odenet.step(_linear(z), 0.0, torch.ones(1, dtype=torch.float64), 1.0, method=name)
        assert y1.item() == pytest.approx(stability_function(tab, z), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name", [m for m in methods() if tableau(m).is_implicit])
def test_stiff_decay_of_implicit_methods(name):
    # z = −1e6: the stage equations are solved to ~100 ulp of |y0| = 1, so the step
    # matches R(z) to ~1e-9 absolute; L-stable methods damp, the others keep |R| ≈ 1
    z = -1e6
    y0 = torch.ones(1, dtype=torch.float64)
    r = odenet.step(_linear(z), 0.0, y0, 1.0, method=name).item()
    assert r == pytest.approx(stability_function(tableau(name), z), rel=1e-8, abs=1e-9)
    if name in L_STABLE:
        assert abs(r) < 1e-5
    else:
        assert abs(abs(r) - 1) < 1e-3


@pytest.mark.parametrize("name", [m for m in methods() if tableau(m).is_explicit])
def test_fsal_methods_reuse_the_last_stage(name):
    # n fixed steps: f(t0, y0) once, then s − 1 new stages per step; a non-FSAL method
    # also evaluates f(t1, y1) after every step but the last
    tab = tableau(name)
    n = 5
    sol = odenet.solve(
        field, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method=name, step_size=1 / n
    )
    expected = 1 + (tab.stages - 1) * n + (0 if tab.is_fsal else n - 1)
    assert sol.stats["nfe"] == expected
