"""Claim 6 (studies/theory/06_scheme_stability.py): a ResNet is stable iff hλ lies in
its scheme's stability region; switching the scheme moves the limit as R(z) predicts."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("06_scheme_stability")
torch.set_num_threads(1)

CLOSED_FORM_R = {
    "euler": lambda z: 1 + z,
    "rk4": lambda z: 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24,
    "backward_euler": lambda z: 1 / (1 - z),
}
RK4_REAL_LEFT = -2.785293563405282  # root of 1 + z + z²/2 + z³/6 + z⁴/24 = 1, published


@pytest.mark.parametrize("method", list(CLOSED_FORM_R))
@pytest.mark.parametrize("h", [0.2, 0.45, 0.55, 0.8])
def test_resnet_growth_per_block_is_abs_R_of_h_lambda(method, h):
    measured = study.measured_factor(method, h, 20)
    assert measured == pytest.approx(abs(CLOSED_FORM_R[method](h * study.LAM)), rel=1e-10)


def test_network_stability_limit_moves_with_the_scheme():
    assert study.real_stability_interval("euler") == pytest.approx(-2.0, abs=1e-10)
    assert study.real_stability_interval("rk4") == pytest.approx(RK4_REAL_LEFT, abs=1e-8)
    for m, h_max in [("euler", 2.0 / 4.0), ("rk4", RK4_REAL_LEFT / study.LAM)]:
        assert study.measured_factor(m, 0.99 * h_max, 60) <= 1.0
        assert study.measured_factor(m, 1.01 * h_max, 60) > 1.0
    assert study.measured_factor("backward_euler", 50.0, 60) < 1.0  # A-stable


def test_diffusion_resnet_von_neumann_limits():
    n = 16
    r_euler = study.cfl_search(lambda r: study.diffusion_step("euler", r, n), (n,), 0.01, 2.0)
    assert r_euler == pytest.approx(0.5, rel=1e-5)  # D Δt/Δx² ≤ 1/2
    r_rk4 = study.cfl_search(lambda r: study.diffusion_step("rk4", r, n), (n,), 0.01, 2.0)
    assert r_rk4 == pytest.approx(RK4_REAL_LEFT / -4.0, rel=1e-5)
    vn = study.von_neumann(study.diffusion_step("backward_euler", 5.0, n), (n,))
    theta = vn.theta[0]
    expected = 1.0 / (1.0 + 4 * 5.0 * np.sin(theta / 2) ** 2)  # G(θ) of backward Euler
    assert vn.stable
    assert np.allclose(vn.amplification, expected, atol=1e-8)
