"""Von Neumann amplification factors against the textbook symbols of finite-difference
schemes and of a circular convolution block."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odenet.stability import (
    NotTranslationInvariantError,
    StabilityInputError,
    cfl_search,
    von_neumann,
)


def ftcs_heat(r):
    return lambda u: u + r * (torch.roll(u, 1) - 2 * u + torch.roll(u, -1))


def upwind(c):
    return lambda u: u - c * (u - torch.roll(u, 1))


@settings(max_examples=25, deadline=None)
@given(st.floats(0.01, 1.5))
def test_ftcs_heat_symbol_and_stability(r):
    res = von_neumann(ftcs_heat(r), 64)
    th = res.theta[0]
    np.testing.assert_allclose(res.symbol, 1 - 4 * r * np.sin(th / 2) ** 2, atol=1e-13)
    # 64 points include θ = π, so the maximum is attained exactly
    assert res.max_amplification == pytest.approx(max(1.0, abs(1 - 4 * r)), rel=1e-12)
    assert res.stable == (r <= 0.5 + 1e-12)


def test_ftcs_heat_most_dangerous_mode_is_the_sawtooth():
    res = von_neumann(ftcs_heat(0.6), 32)
    assert abs(res.most_dangerous[0]) == pytest.approx(math.pi)


@settings(max_examples=20, deadline=None)
@given(st.floats(0.05, 1.8))
def test_upwind_advection_stable_iff_cfl_at_most_one(c):
    res = von_neumann(upwind(c), 48)
    th = res.theta[0]
    np.testing.assert_allclose(res.symbol, 1 - c + c * np.exp(-1j * th), atol=1e-13)
    assert res.stable == (c <= 1 + 1e-12)


def test_cfl_search_finds_the_textbook_limits():
    assert cfl_search(ftcs_heat, 32, 0.05, 2.0, rtol=1e-8) == pytest.approx(0.5, rel=1e-6)
    assert cfl_search(upwind, 32, 0.05, 3.0, rtol=1e-8) == pytest.approx(1.0, rel=1e-6)


def test_two_dimensional_heat_limit_is_one_quarter():
    def heat2(r):
        def step(u):
            lap = sum(torch.roll(u, s, a) for s in (1, -1) for a in (0, 1)) - 4 * u
            return u + r * lap

        return step

    res = von_neumann(heat2(0.3), (16, 16))
    assert res.theta.shape == (2, 16, 16)
    assert res.max_amplification == pytest.approx(abs(1 - 8 * 0.3))
    assert cfl_search(heat2, (16, 16), 0.05, 1.0, rtol=1e-8) == pytest.approx(0.25, rel=1e-6)


def test_convolutional_residual_block_symbol_is_one_plus_h_times_kernel_dft():
    gen = torch.Generator().manual_seed(0)
    kernel = torch.randn(3, 3, dtype=torch.float64, generator=gen)
    h = 0.1

    def block(u):  # x + h * circular conv(x), a linear ResNet block
        out = torch.zeros_like(u)
        for i in range(3):
            for j in range(3):
                out = out + kernel[i, j] * torch.roll(u, (i - 1, j - 1), (0, 1))
        return u + h * out

    res = von_neumann(block, (8, 8))
    th1, th2 = res.theta
    expected = 1 + h * sum(
        kernel[i, j].item() * np.exp(1j * ((i - 1) * -th1 + (j - 1) * -th2))
        for i in range(3)
        for j in range(3)
    )
    # roll by +s moves u_{m-s} to m: the mode picks up e^{-iθ s}
    np.testing.assert_allclose(res.symbol, expected, atol=1e-12)


def test_nonlinear_step_is_linearized_about_the_base_state():
    # u + r Δ tanh(u): about u = 0 it is FTCS with r; about u = 1 with r (1 − tanh²1)
    r = 0.45

    def step(u):
        v = torch.tanh(u)
        return u + r * (torch.roll(v, 1) - 2 * v + torch.roll(v, -1))

    res0 = von_neumann(step, 16)
    res1 = von_neumann(step, 16, x0=torch.ones(16, dtype=torch.float64))
    assert res0.max_amplification == pytest.approx(1.0)
    s = 1 - math.tanh(1.0) ** 2
    np.testing.assert_allclose(res1.symbol.real, 1 - 4 * r * s * np.sin(res1.theta[0] / 2) ** 2)


def test_two_channel_system_amplification_is_the_symbol_spectral_radius():
    # leapfrog-free wave system p' = q_x, q' = p_x by forward Euler: |G| = sqrt(1 + ...)> 1
    c = 0.5

    def step(u):
        p, q = u[0], u[1]
        return torch.stack([p + c * (torch.roll(q, -1) - q), q + c * (p - torch.roll(p, 1))])

    res = von_neumann(step, 32, channels=2)
    th = res.theta[0]
    a = c * (np.exp(1j * th) - 1)
    b = c * (1 - np.exp(-1j * th))
    lam = 1 + np.sqrt(a * b + 0j)
    expected = np.maximum(np.abs(lam), np.abs(2 - lam))
    np.testing.assert_allclose(res.amplification, expected, atol=1e-10)
    assert not res.stable


def test_errors_are_reported():
    with pytest.raises(NotTranslationInvariantError, match="not a translation-invariant"):
        von_neumann(lambda u: u * torch.linspace(0, 1, 16, dtype=u.dtype), 16)
    with pytest.raises(StabilityInputError, match="`shape` must be a tuple of positive"):
        von_neumann(ftcs_heat(0.1), (0,))
    with pytest.raises(StabilityInputError, match="`x0` must have shape"):
        von_neumann(ftcs_heat(0.1), 8, x0=torch.zeros(9, dtype=torch.float64))
    with pytest.raises(StabilityInputError, match="already unstable at `lo`"):
        cfl_search(ftcs_heat, 16, 0.9, 2.0)
    with pytest.raises(StabilityInputError, match="need `lo` < `hi`"):
        cfl_search(ftcs_heat, 16, 2.0, 1.0)


def test_a_step_that_drops_grid_points_is_named():
    with pytest.raises(StabilityInputError, match=r"grid of shape \(8,\) to one of shape \(7,\)"):
        von_neumann(lambda u: u[:-1], 8)
