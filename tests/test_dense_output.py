"""Claims about dense output: the interpolants are continuous extensions of the step,
have their declared order, and agree with independent implementations.

* every own interpolant reproduces the step at θ = 1 (``b(1) = b``) and starts at
  ``y0`` (``b(0) = 0``);
* Tsitouras' interpolant equals the factored form published in diffrax;
* DOP853's 7th-order dense output and dopri5's Shampine interpolant agree with
  scipy's ``DOP853`` / ``RK45`` dense output on the same step;
* the local interpolation error of one step of ``odenet.solve(..., step_size=h)``
  started on the exact solution, at off-grid output times, is ``O(h^(r+1))`` with
  ``r = min(order, interpolant order)`` (cubic Hermite, order 3, for methods without
  their own interpolant).
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from scipy.integrate import DOP853, RK45

import odenet
from odenet.tableaus import methods, tableau

ALL = methods()
OWN = [m for m in ALL if tableau(m).dense is not None]


@pytest.mark.parametrize("name", OWN)
def test_interpolant_starts_at_y0_and_ends_at_y1(name):
    tab = tableau(name)
    d = tab.dense
    end = d.weights(1.0)[0]
    # float64 sums of P's row (entries up to ~500 for DOP853): a few ulps of Σ|P|
    tol = 4 * np.finfo(float).eps * np.abs(d.P).sum(axis=1)
    assert np.all(np.abs(end[: tab.stages] - tab.b) <= tol[: tab.stages])
    assert np.all(np.abs(end[tab.stages :]) <= tol[tab.stages :])
    np.testing.assert_array_equal(d.weights(0.0), 0.0)
    assert d.weights(np.linspace(0, 1, 7)).shape == (7, tab.stages + d.n_extra)


def test_tsit5_interpolant_equals_the_published_factored_form():
    t = np.linspace(0.0, 1.0, 11)
    # diffrax/_solver/tsit5.py, _Tsit5Interpolation.evaluate
    b = [
        -1.0530884977290216
        * t
        * (t - 1.3299890189751412)
        * (t**2 - 1.4364028541716351 * t + 0.7139816917074209),
        0.1017 * t**2 * (t**2 - 2.1966568338249754 * t + 1.2949852507374631),
        2.490627285651252793 * t**2 * (t**2 - 2.38535645472061657 * t + 1.57803468208092486),
        -16.54810288924490272 * (t - 1.21712927295533244) * (t - 0.61620406037800089) * t**2,
        47.37952196281928122 * (t - 1.203071208372362603) * (t - 0.658047292653547382) * t**2,
        -34.87065786149660974 * (t - 1.2) * (t - 0.666666666666666667) * t**2,
        2.5 * (t - 1) * (t - 0.6) * t**2,
    ]
    np.testing.assert_allclose(tableau("tsit5").dense.weights(t), np.stack(b, 1), atol=5e-14)


def _rhs(t, y):
    return np.array([y[1], -math.sin(y[0]) + 0.3 * math.cos(t)])


def _rhs_torch(t, y):
    return torch.stack([y[1], -torch.sin(y[0]) + 0.3 * torch.cos(t)])


@pytest.mark.parametrize("name, scipy_solver", [("dop853", DOP853), ("dopri5", RK45)])
def test_dense_output_agrees_with_scipy_on_one_step(name, scipy_solver):
    t0, h = 0.2, 0.5
    y0 = np.array([1.0, 0.3])
    # loose tolerances so that scipy accepts exactly the one step h
    s = scipy_solver(_rhs, t0, y0, t0 + 2 * h, first_step=h, rtol=1.0, atol=1.0)
    s.step()
    assert s.t == pytest.approx(t0 + h, abs=1e-15)
    theta = np.array([0.1, 0.3, 0.5, 0.77, 0.95])
    ts = np.concatenate([[t0], t0 + theta * h, [t0 + h]])
    ref = s.dense_output()(ts).T
    sol = odenet.solve(_rhs_torch, torch.tensor(y0), torch.tensor(ts), method=name, step_size=h)
    assert sol.stats["steps"] == 1
    # round-off only: y1 itself sums 12 stages with weights up to 4.5 (|y| ~ 1)
    np.testing.assert_allclose(sol.ys.numpy(), ref, rtol=1e-13, atol=1e-13)


# --- empirical interpolation order ------------------------------------------------------

M = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
T0 = 0.3
THETA = torch.tensor([0.23, 0.5, 0.81], dtype=torch.float64)
torch_f64 = torch.float64
# step sizes by expected local order r + 1 of the interpolated values
H_LADDER = {
    2: (0.1, 0.05, 0.025),
    3: (0.1, 0.05, 0.025),
    4: (0.1, 0.05, 0.025),
    5: (0.1, 0.05, 0.025),
    8: (0.4, 0.2, 0.1),
}


def _field(t, y):
    return torch.cat([y[:1] * torch.cos(t), M @ y[1:]])


def _exact(t):
    # closed form of expm(M (t − T0)) [1, 0]: torch.linalg.matrix_exp is off by up to
    # ~1e-11 for small arguments (‖M τ‖ ≈ 0.02), which would mask DOP853's accuracy
    tau = t - T0
    decay = torch.exp(-0.5 * tau)
    u = torch.stack([decay * torch.cos(2 * tau), -decay * torch.sin(2 * tau)], 1)
    return torch.cat([torch.exp(torch.sin(t))[:, None], u], dim=1)


def _expected_order(tab) -> int:
    q = tab.dense.order if tab.dense is not None else 3  # cubic Hermite
    return min(tab.order, q) + 1


@pytest.mark.parametrize("name", ALL)
def test_interpolation_error_has_the_expected_order(name):
    torch.set_num_threads(1)
    tab = tableau(name)
    r = _expected_order(tab)
    hs = H_LADDER[r]
    y0 = _exact(torch.tensor([T0], dtype=torch.float64))[0]
    errs = []
    for h in hs:
        ts = torch.cat(
            [
                torch.tensor([T0], dtype=torch_f64),
                T0 + THETA * h,
                torch.tensor([T0 + h], dtype=torch_f64),
            ]
        )
        sol = odenet.solve(_field, y0, ts, method=name, step_size=h)
        assert sol.stats["steps"] == 1
        errs.append((sol.ys[1:-1] - _exact(ts[1:-1])).abs().max().item())
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert min(errs) > 1e-14, f"{name}: errors {errs} at round-off"
    assert abs(slope - r) <= 0.3, f"{name}: slope {slope:.2f}, expected {r}; errors {errs}"


# --- outputs inside implicit steps (odenet._dense_check) ---------------------------------
@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    log_lam=st.lists(st.floats(0.5, 6.0), min_size=3, max_size=3),
    log_w=st.lists(st.floats(-1.5, 0.5), min_size=3, max_size=3),
    log_rtol=st.floats(-8.0, -3.0),
    log_T=st.floats(0.0, 1.5),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("method", ["radau_iia5", "kvaerno5"])
def test_outputs_inside_implicit_steps_honour_the_tolerance(
    method, log_lam, log_w, log_rtol, log_T, seed
):
    # y' = λ(y − g) + g', g slow: every component stiff, so L-stable steps grow long
    # past the outputs; closed form y = g + e^{λt}(y0 − g(0)).  With the check switched
    # off both methods fail here (hypothesis shrank to 39.9 units for radau_iia5, 11.2
    # for kvaerno5); drawn cases in test_stiff_fuzz.py reached thousands
    rng = np.random.default_rng(seed)
    lam, w = -(10.0 ** np.array(log_lam)), 10.0 ** np.array(log_w)
    a, ph, y0 = rng.uniform(0.5, 2, 3), rng.uniform(0, 6, 3), rng.standard_normal(3)
    T, rtol = 10.0**log_T, 10.0**log_rtol
    lam_t, w_t, ph_t, a_t = (torch.tensor(v) for v in (lam, w, ph, a))

    def f(t, y):
        arg = w_t * t + ph_t
        return lam_t * (y - a_t * torch.sin(arg)) + a_t * w_t * torch.cos(arg)

    t = np.concatenate([[0.0], np.sort(rng.uniform(0, T, 5)), [T]])

    def g(u):
        return a * np.sin(w * u + ph)

    exact = np.stack([g(u) + np.exp(lam * u) * (y0 - g(0.0)) for u in t])
    sol = odenet.solve(f, torch.tensor(y0), torch.tensor(t), method=method, rtol=rtol, atol=rtol)
    units = np.abs(sol.ys.numpy() - exact) / (rtol + rtol * np.abs(exact))
    assert units.max() <= 10, f"{units.max():.3g} tolerance units"


def test_the_checked_outputs_of_a_step_are_distinct_and_span_its_interior():
    # rows with 2, 10 and 4 interior outputs in one batch (m = 10): a row with at most
    # MAX_CHECKED = 3 has all of them checked, a row with more its first, last and
    # middle ones (with a shared spread the 2-output row checked its first twice)
    from odenet._dense_check import MAX_CHECKED, pick

    t = torch.arange(10.0).expand(3, 10).clone()
    valid = torch.arange(10)[None, :] < torch.tensor([[2], [10], [4]])
    chosen, ok = pick(t, valid)
    assert MAX_CHECKED == 3
    assert [sorted(set(c[o].tolist())) for c, o in zip(chosen, ok)] == [
        [0.0, 1.0],
        [0.0, 4.0, 9.0],
        [0.0, 1.0, 3.0],
    ]
    assert int(ok.sum()) == 2 + 3 + 3  # each checked once
