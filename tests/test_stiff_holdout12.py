"""The twelfth stiff hold-out set (studies/benchmarks/stiff_holdout12.py): its problems
are the ones described (the Kelvin–Voigt string's closed form against scipy and its
own equation, its spectrum with the defective critically damped mode, its energy
decay; Kuramoto–Sivashinsky's linear rates, its invariant and its growth to travelling
cells), and must-hold cells of both problems."""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import odenet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
import stiff_holdout12 as H12
from _must_hold import assert_cell_passes, obeys_its_equation, scipy_radau
from stiff_holdout import any_problem, both_fields


@pytest.mark.parametrize("name", list(H12.HOLDOUT12))
def test_the_torch_field_is_the_numpy_field(name):
    # scipy's references use f_numpy, odenet's solves use f: they must be one problem
    ours, theirs = both_fields(H12.get(name))
    np.testing.assert_allclose(ours, theirs, rtol=1e-11, atol=1e-11 * np.abs(theirs).max())


def test_kelvin_voigt_follows_its_closed_form():
    p = H12.get("kelvin_voigt")
    exact = H12.kelvin_voigt_exact
    np.testing.assert_allclose(exact([0.0])[0], p.y0, atol=1e-14)
    obeys_its_equation(p, exact, [0.05, 1.3, 5.0], rtol=1e-5)
    # and scipy Radau agrees with it along the span
    r = scipy_radau(p, 1e-10, 1e-13)
    t = np.array([0.01, 0.7, 2.5, 6.0])
    np.testing.assert_allclose(r.sol(t).T, exact(t), rtol=1e-7, atol=1e-9)


def test_kelvin_voigt_has_a_defective_mode_between_oscillation_and_stiff_relaxation():
    p = H12.get("kelvin_voigt")
    L, S, mu = H12.kelvin_voigt_laplacian()
    c, nu, m = H12.KELVIN_VOIGT["c"], H12.kelvin_voigt_nu(), H12.KELVIN_VOIGT["critical_mode"]
    # S is the orthonormal eigenbasis of the second differences, L S = −S diag(μ)
    np.testing.assert_allclose(S.T @ S, np.eye(S.shape[0]), atol=1e-12)
    np.testing.assert_allclose(L @ S, -S * mu, atol=1e-9 * mu.max())
    # each mode's roots solve λ² + νμλ + c²μ = 0: the discriminant is zero at mode 20
    # (a double root −c√μ₂₀), negative below (oscillation), positive above (relaxation)
    disc = (nu * mu) ** 2 - 4 * c * c * mu
    assert abs(disc[m - 1]) < 1e-9 * (nu * mu[m - 1]) ** 2
    assert (disc[: m - 1] < 0).all() and (disc[m:] > 0).all()
    # the Jacobian's eigenvalues: the slowest decays at νμ₁/2, the stiffest at νμ_max
    J = np.column_stack([p.f_numpy(0.0, e) for e in np.eye(p.y0.size)])
    ev = np.linalg.eigvals(J)
    assert ev.real.max() == pytest.approx(-nu * mu[0] / 2, rel=1e-6)
    assert ev.real.min() == pytest.approx(-(nu * mu[-1] + np.sqrt(disc[-1])) / 2, rel=1e-6)
    assert ev.real.min() < -600
    # at the double root J − λI has a one-dimensional kernel in that mode's plane (a
    # Jordan block): the block [[0, 1], [−c²μ, −νμ]] + (c√μ) I has rank 1, not 0
    lam = -c * np.sqrt(mu[m - 1])
    B = np.array([[0.0, 1.0], [-c * c * mu[m - 1], -nu * mu[m - 1]]]) - lam * np.eye(2)
    assert np.linalg.matrix_rank(B, tol=1e-8 * np.abs(B).max()) == 1
    # the energy ½|u_t|² + ½c²⟨u, −L u⟩ decays (damping ν⟨u_t, L u_t⟩ ≤ 0)
    n = S.shape[0]
    Y = H12.kelvin_voigt_exact(np.linspace(0.0, 6.0, 61))
    u, v = Y[:, :n], Y[:, n:]
    energy = 0.5 * (v * v).sum(1) + 0.5 * c * c * np.einsum("ti,ij,tj->t", u, -L, u)
    assert (np.diff(energy) < 0).all()


def test_kuramoto_sivashinsky_has_its_linear_rates_and_invariant():
    p = H12.get("kuramoto_sivashinsky")
    D1, D2, D4 = (H12.ks_derivative(m) for m in (1, 2, 4))
    # spectral differentiation: exact on the grid's Fourier modes, D2 = D1² but for the
    # Nyquist mode (dropped from the odd derivative), zero column sums (Σu invariant)
    n, length = H12.KS["n"], H12.KS["length"]
    x = length * np.arange(n) / n
    w = 2 * np.pi * 3 / length
    np.testing.assert_allclose(D1 @ np.sin(w * x), w * np.cos(w * x), atol=1e-11)
    np.testing.assert_allclose(D4 @ np.sin(w * x), w**4 * np.sin(w * x), atol=1e-10)
    for D in (D1, D2, D4):
        np.testing.assert_allclose(D.sum(0), 0.0, atol=1e-9)
    # the linear part's rates are k² − k⁴, k = 2πj/22: six grow (j = ±1, ±2, ±3)
    A = -(D2 + D4)
    k = H12.ks_wavenumbers(odd=False)
    np.testing.assert_allclose(
        np.sort(np.linalg.eigvals(A).real), np.sort(k**2 - k**4), atol=1e-8 * (k**4).max()
    )
    assert (k**2 - k**4 > 0).sum() == 6
    assert (k**2 - k**4).min() < -6e3
    # along a solve, Σu stays 0 and the long waves grow from |u| ≤ 1.3 to cells of ~2
    r = solve_ivp(
        p.f_numpy, (0.0, 10.0), p.y0, method="BDF", rtol=1e-9, atol=1e-12, dense_output=True
    )
    ts = np.linspace(0.0, 10.0, 11)
    U = r.sol(ts)
    np.testing.assert_allclose(U.sum(0), 0.0, atol=1e-8)
    assert np.abs(U[:, 0]).max() < 1.3 < np.abs(U[:, -1]).max() < 3


def test_any_problem_finds_the_twelfth_set():
    for name in H12.HOLDOUT12:
        p, floors = any_problem(name)
        assert p.name == name and np.all(floors == 1e-3)


@functools.cache
def _ks_over(t1: float):
    """Kuramoto–Sivashinsky over [0, t1] against scipy BDF at rtol 1e-10 (the set's own
    reference over [0, 30], scipy Radau at 1e-12, takes minutes)."""
    p = H12.get("kuramoto_sivashinsky")
    r = solve_ivp(p.f_numpy, (0.0, t1), p.y0, method="BDF", rtol=1e-10, atol=1e-13)
    end = r.y[:, -1]

    def exact(t):
        return np.repeat(end[None], np.atleast_1d(t).size, axis=0)

    return dataclasses.replace(p, span=(0.0, t1), exact=exact)


@pytest.mark.parametrize(
    ("method", "rtol"),
    [("radau_iia5", 1e-3), ("radau_iia5", 1e-6), ("bdf", 1e-4), ("kvaerno5", 1e-5)],
)
def test_a_kelvin_voigt_must_hold_cell(method, rtol):
    assert_cell_passes(H12.get("kelvin_voigt"), method, rtol)


@pytest.mark.parametrize(
    ("method", "rtol"), [("radau_iia5", 1e-5), ("ndf", 1e-3), ("sdirk4", 1e-4)]
)
def test_a_kuramoto_sivashinsky_must_hold_cell(method, rtol):
    assert_cell_passes(_ks_over(10.0), method, rtol)


@functools.cache
def ks_reference_at_3():
    p = H12.get("kuramoto_sivashinsky")
    return solve_ivp(p.f_numpy, (0.0, 3.0), p.y0, method="BDF", rtol=1e-12, atol=1e-14).y[:, -1]


def test_radau_iia5_newton_stops_at_the_round_off_of_a_spectral_field():
    # Kuramoto–Sivashinsky's dense differentiation matrices (entries to 7e3) make f's
    # round-off, through the iteration matrix, larger than the Newton tolerance at rtol
    # 1e-9 (3e-5 of the tolerance): increments stall at ratios about 1 there.  Taken as
    # divergence, 135 of 389 steps over [0, 3] were rejected (RadauIIA._at_roundoff_floor)
    p = H12.get("kuramoto_sivashinsky")
    ref = ks_reference_at_3()
    sol = odenet.solve(
        p.f,
        torch.tensor(p.y0),
        torch.tensor([0.0, 3.0], dtype=torch.float64),
        method="radau_iia5",
        rtol=1e-9,
        atol=1e-12,
    )
    assert bool(sol.success)
    assert int(sol.stats["rejected"]) <= 5, int(sol.stats["rejected"])
    err = np.abs(sol.ys[-1].numpy() - ref) / (1e-3 + np.abs(ref))
    assert err.max() <= 10 * 1e-9, err.max() / 1e-9


@pytest.mark.parametrize("method, rtol", [("bdf", 1e-8), ("radau_iia5", 1e-9)])
def test_a_kept_jacobian_that_contracted_is_believed_at_the_round_off_floor(method, rtol):
    # KS's field is nearly linear, so a kept Jacobian is as good as a fresh one: each
    # kept J's iteration contracted, then stalled at f's round-off, and was refreshed to
    # give the same increments (FLOOR_TRUST_RATE): bdf 116 Jacobians in 444 steps,
    # radau_iia5 92 in 173, where one J serves the span
    p = H12.get("kuramoto_sivashinsky")
    sol = odenet.solve(
        p.f,
        torch.tensor(p.y0),
        torch.tensor([0.0, 3.0], dtype=torch.float64),
        method=method,
        rtol=rtol,
        atol=1e-3 * rtol,
    )
    assert bool(sol.success)
    assert int(sol.stats["jacobians"]) <= 10, int(sol.stats["jacobians"])
    ref = ks_reference_at_3()
    err = np.abs(sol.ys[-1].numpy() - ref) / (1e-3 + np.abs(ref))
    assert err.max() <= 10 * rtol, err.max() / rtol
