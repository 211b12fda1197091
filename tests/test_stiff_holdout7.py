"""The seventh stiff hold-out set (studies/benchmarks/stiff_holdout7.py): its problems are
the ones described (checked against laws they must obey: a Hamiltonian's gradient, a
conserved mass, a rest state), and a must-hold cell per failure mode it was chosen for."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
import stiff_holdout7 as H7
from _must_hold import assert_cell_passes
from stiff_holdout import any_problem, both_fields


@pytest.mark.parametrize("name", list(H7.HOLDOUT7))
def test_the_torch_field_is_the_numpy_field(name):
    # scipy's references use f_numpy, odenet's solves use f: they must be one problem
    ours, theirs = both_fields(H7.get(name))
    np.testing.assert_allclose(ours, theirs, rtol=1e-11, atol=1e-11 * np.abs(theirs).max())


def test_fpu_force_is_minus_the_gradient_of_its_hamiltonian():
    # H = Σ p²/2 + ω²/4 Σ (q_{2i} − q_{2i−1})² + Σ (q_{2i+1} − q_{2i})⁴, q_0 = q_7 = 0
    # (Hairer, Lubich & Wanner, GNI I.5), by central differences at a random point
    m, omega = 3, 50.0
    f = H7.fpu_stiff(m, omega).f_numpy

    def hamiltonian(y):
        q, p = y[: 2 * m], y[2 * m :]
        qq = np.concatenate([[0.0], q, [0.0]])
        stiff = q[1::2] - q[0::2]
        soft = qq[1::2] - qq[0::2]
        return 0.5 * p @ p + omega**2 / 4 * stiff @ stiff + np.sum(soft**4)

    y = np.random.default_rng(7).normal(size=4 * m)
    grad = np.array(
        [(hamiltonian(y + e) - hamiltonian(y - e)) / 2e-6 for e in 1e-6 * np.eye(4 * m)]
    )
    out = f(0.0, y)
    np.testing.assert_allclose(out[: 2 * m], grad[2 * m :], rtol=1e-7)  # q' = ∂H/∂p
    np.testing.assert_allclose(out[2 * m :], -grad[: 2 * m], rtol=1e-6, atol=1e-6)
    # the initial values carry one unit of energy in the stiff spring, ½(ẋ₁² + ω²x₁²)
    y0 = H7.fpu_stiff(m, omega).y0
    x1, v1 = (y0[1] - y0[0]) / np.sqrt(2), (y0[2 * m + 1] - y0[2 * m]) / np.sqrt(2)
    assert 0.5 * (v1**2 + omega**2 * x1**2) == pytest.approx(1.0)


def test_fast_equilibrium_conserves_mass_and_sits_on_its_equilibrium():
    p = H7.get("fast_equilibrium")
    a, b, c = p.solution([p.span[1]])[0]
    a0, b0, c0 = p.y0
    assert a + 2 * b + 2 * c == pytest.approx(a0 + 2 * b0 + 2 * c0, rel=1e-9)
    assert 1e6 * a * a == pytest.approx(1e5 * b, rel=1e-4)  # k_f A² = k_b B


def test_hodgkin_huxley_rests_without_current_and_fires_with_it():
    # the modern constants put the rest state at −65 mV with the gates at their
    # steady states there: without current it is (nearly) a fixed point
    rest = H7.hodgkin_huxley(current=0.0)
    drift = rest.f_numpy(0.0, np.asarray(rest.y0))
    assert np.abs(drift[1:]).max() < 1e-12 and abs(drift[0]) < 0.05  # mV/ms
    # with I = 10 µA/cm² it fires a regular train: V crosses 0 mV upwards every
    # ~14.6 ms (Hodgkin–Huxley at 10 µA/cm²: ~68 Hz) after a first, earlier spike
    p = H7.hodgkin_huxley()
    t = np.linspace(0.0, 50.0, 5001)
    v = solve_ivp(p.f_numpy, p.span, np.asarray(p.y0), method="Radau", rtol=1e-8,
                  atol=1e-8, t_eval=t).y[0]  # fmt: skip
    ups = t[1:][(v[:-1] < 0) & (v[1:] >= 0)]
    assert len(ups) == 4 and v.max() > 30.0
    assert np.diff(ups)[1:] == pytest.approx(14.6, abs=0.5)


def test_porous_medium_keeps_its_mass_until_its_fronts_reach_the_walls():
    # Σ (w_{i+1} − 2w_i + w_{i−1}) telescopes to the boundary terms −u_1² − u_n²: mass is
    # conserved while u vanishes at both ends (the fronts travel at finite speed and
    # reach the walls at t ≈ 0.2); then it drains
    p = H7.porous_medium()
    u0 = np.asarray(p.y0)
    r = solve_ivp(p.f_numpy, (0.0, 0.5), u0, method="Radau", rtol=1e-9, atol=1e-12,
                  t_eval=[0.1, 0.5])  # fmt: skip
    inside, drained = r.y.T
    assert inside.sum() == pytest.approx(u0.sum(), rel=1e-8)
    assert inside[0] < 1e-9 and inside[-1] < 1e-9
    assert drained.sum() < 0.9 * u0.sum()


def test_any_problem_finds_the_seventh_set():
    prob, floors = any_problem("porous_medium")
    assert prob.name == "porous_medium" and floors == prob.atol_ratio == 1e-3


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("hodgkin_huxley", "radau_iia5"),
        ("porous_medium", "bdf"),
        ("advection_diffusion", "kvaerno5"),
        ("fast_equilibrium", "sdirk4"),
    ],
)
def test_a_must_hold_cell_at_rtol_1e5(name, method):
    assert_cell_passes(H7.get(name), method, 1e-5)
