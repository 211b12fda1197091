"""The ninth stiff hold-out set (studies/benchmarks/stiff_holdout9.py): its problems are
the ones described (checked against two closed forms, a conservation law, the linear
band of spinodal decomposition, a quasi-steady lag and Kaplan's blow-up bound), and a
must-hold cell per failure mode."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
import stiff_holdout9 as H9
from _must_hold import assert_cell_passes, scipy_radau
from stiff import run_odenet
from stiff_holdout import any_problem, both_fields


@pytest.mark.parametrize("name", list(H9.HOLDOUT9))
def test_the_torch_field_is_the_numpy_field(name):
    # scipy's references use f_numpy, odenet's solves use f: they must be one problem
    ours, theirs = both_fields(H9.get(name))
    np.testing.assert_allclose(ours, theirs, rtol=1e-11, atol=1e-11 * np.abs(theirs).max())


def test_cahn_hilliard_keeps_its_mean_and_separates_into_two_phases():
    p = H9.get("cahn_hilliard")
    r = scipy_radau(p, 1e-8, 1e-10)
    u = r.y[:, -1]
    # the periodic second difference sums to zero: the mean is conserved exactly
    assert u.mean() == pytest.approx(p.y0.mean(), abs=1e-9)
    # by t = 0.5 the small initial data has split into phases near the wells ±1 (less
    # the O(ε) interface layers), with a positive excess matching the mean 0.1
    assert u.max() > 0.98 and u.min() < -0.98
    assert np.mean(u > 0) > 0.5
    # and the linearisation at u = 0.1 is the band described: 1 − 3ū² − ε²k² > 0 grows
    J = np.column_stack([(p.f_numpy(0, 0.1 + 1e-7 * e) - p.f_numpy(0, 0.1 + 0 * e)) / 1e-7
                         for e in np.eye(64)])  # fmt: skip
    lam = np.linalg.eigvalsh((J + J.T) / 2)
    k = 2 * np.pi * np.arange(33)
    dx = 1 / 64
    k2 = (2 / dx * np.sin(k * dx / 2)) ** 2  # the second difference's symbol
    band = k2 * (1 - 3 * 0.1**2 - 0.03**2 * k2)  # modes 0 … 32; 1 … 31 twice
    expect = np.sort(np.concatenate([band, band[1:32]]))
    np.testing.assert_allclose(np.sort(lam), expect, rtol=1e-4, atol=1e-3 * np.abs(expect).max())
    assert lam.max() == pytest.approx(0.97**2 / (4 * 0.03**2), rel=0.05)  # ≈ 261


def test_substrate_depletion_follows_lambert_w():
    p = H9.get("substrate_depletion")
    r = scipy_radau(p, 1e-11, 1e-15)
    t = np.array([0.3, 0.99, 1.0, 1.003, 1.007, 1.01])
    np.testing.assert_allclose(r.sol(t).T, H9.depletion_exact(t), rtol=1e-7, atol=1e-14)
    # the corner: S(1) = K W(1e3) ≈ 5.2e-3; once S ≪ K it decays at −V/K = −1e3
    S = H9.depletion_exact([1.0, 1.05, 1.06])[:, 0]
    assert S[0] == pytest.approx(1e-3 * 5.2496028, rel=1e-6)
    assert S[2] / S[1] == pytest.approx(np.exp(-10), rel=1e-6)


def test_critically_damped_follows_its_closed_form():
    p = H9.get("critically_damped")
    # (over [0, 3]: scipy at this tolerance on the whole span takes ~40 s; the sweep's
    # --check-refs compares the closed form with scipy Radau's reference at t = 10)
    r = solve_ivp(p.f_numpy, (0.0, 3.0), p.y0, method="Radau", rtol=1e-10, atol=1e-13,
                  dense_output=True)  # fmt: skip
    t = np.array([1e-5, 1e-4, 5e-4, 0.1, 1.7, 3.0])
    np.testing.assert_allclose(r.sol(t).T, H9.damped_exact(t), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(H9.damped_exact([0.0])[0], p.y0, atol=1e-11)  # (x' ~ 1e4)
    # x' peaks near ω/e in the layer (at t = 1/ω for the homogeneous part)
    assert H9.damped_exact([1e-4])[0, 1] == pytest.approx(-1e4 / np.e, rel=1e-3)
    # the Jacobian is one Jordan block at −ω: a double eigenvalue with one eigenvector
    J = np.column_stack([p.f_numpy(0.0, e) - p.f_numpy(0.0, 0 * e) for e in np.eye(2)])
    np.testing.assert_allclose(np.linalg.eigvals(J), [-1e4, -1e4], rtol=1e-6)
    assert np.linalg.matrix_rank(J + 1e4 * np.eye(2)) == 1


def test_cubic_relaxation_lags_its_manifold_by_the_cube_root():
    # δ = y − cos t solves δ' = −kδ³ + sin t: away from sin t = 0 the lag is quasi-steady,
    # δ ≈ (sin t / k)^{1/3} (to ~k^{-1/3} relative); the slow filter z follows y
    p = H9.get("cubic_relaxation")
    r = scipy_radau(p, 1e-10, 1e-13)
    for t in (1.5, 4.7, 8.0):
        delta = r.sol(t)[0] - np.cos(t)
        assert delta == pytest.approx(np.cbrt(np.sin(t) / 1e6), rel=2e-2)
    # the initial layer is algebraic: δ ≈ (2kt)^{-1/2} once δ ≪ δ(0) = 1
    t = 1e-3
    assert r.sol(t)[0] - np.cos(t) == pytest.approx((2e6 * t) ** -0.5, rel=2e-2)


def test_any_problem_finds_the_ninth_set():
    prob, floors = any_problem("cubic_relaxation")
    assert prob.name == "cubic_relaxation" and floors == prob.atol_ratio == 1e-3


@pytest.mark.parametrize(
    ("name", "method", "rtol"),
    [
        ("cahn_hilliard", "radau_iia5", 1e-5),
        ("cahn_hilliard", "ndf", 1e-3),
        ("substrate_depletion", "bdf", 1e-5),
        ("substrate_depletion", "kvaerno5", 1e-3),
        ("cubic_relaxation", "radau_iia5", 1e-5),
        ("critically_damped", "radau_iia5", 1e-5),
        ("heat_blowup", "radau_iia5", 1e-5),
        ("heat_blowup", "bdf", 1e-3),
    ],
)
def test_a_must_hold_cell(name, method, rtol):
    assert_cell_passes(H9.get(name), method, rtol)


@pytest.mark.parametrize("method", ["bdf", "kvaerno5"])
def test_a_solver_held_by_its_estimate_on_the_defective_mode_says_so(method):
    # critically_damped: bdf and kvaerno5 need more than 20x scipy Radau's steps (their
    # estimates of the stiff velocity do not shrink with h as they assume); cut off by
    # the step budget they must report it, not return the state where they stopped
    p = H9.get("critically_damped")
    r = run_odenet(p, method, 1e-5, p.atol_ratio, max_steps=1000)
    assert r["status"] != "ok" or r["err"] <= 100 * 1e-5, r


def test_the_depletion_check_shows_scipy_stepping_over_the_pole():
    # stiff_holdout9_results.md: with K = 1e-6 scipy's Radau ends on the far side of the
    # pole at rtol 1e-3 (S ≈ S(0) − t1, status ok); with the set's K = 1e-3 it does not
    import stiff_holdout9_checks as C

    rows = {(K, m): row for K, m, row in C.depletion_k([1e-3], ks=(1e-6, 1e-3))}
    assert rows[(1e-6, "Radau")][1e-3] > 1e3
    assert rows[(1e-3, "Radau")][1e-3] < 1


def test_heat_blowup_grows_at_least_as_kaplans_bound_and_stays_symmetric():
    # with φ the grid's first sine mode (eigenvalue μ₁ of −u_xx, Σφ dx = 1) the weighted
    # mean a = Σ φ u dx obeys a' ≥ −μ₁ a + a² (Jensen on the convex u²): it cannot lag
    # the Bernoulli solution a(t) = μ₁ / (1 − (1 − μ₁/a₀) e^{μ₁ t})
    p = H9.get("heat_blowup")
    n = p.y0.size
    dx = 1 / (n + 1)
    x = np.arange(1, n + 1) * dx
    phi = np.sin(np.pi * x)
    phi /= phi.sum() * dx
    mu1 = 4 / dx**2 * np.sin(np.pi * dx / 2) ** 2
    r = scipy_radau(p, 1e-8, 1e-8)
    assert r.success
    a0 = phi @ p.y0 * dx
    for t in (0.05, 0.1, 0.13, 0.14):
        u = r.sol(t)
        bound = mu1 / (1 - (1 - mu1 / a0) * np.exp(mu1 * t))
        assert phi @ u * dx >= bound * (1 - 1e-6)
        assert u.min() > 0
        np.testing.assert_allclose(u, u[::-1], rtol=1e-7)
    assert r.sol(0.14).max() > 400  # blowing up (at t ≈ 0.1423)
