"""Claim 4 (studies/theory/04_edge_of_chaos.py): tanh RNNs with W ~ N(0, g²/N) are
ordered (λ₁ = log g < 0, vanishing gradients) for g < 1 and chaotic (λ₁ > 0, exploding
gradients) for g > 1; orthogonal linear RNNs preserve norms; the rate network
ḣ = −h + gJ tanh(h) is ordered with λ₁ = g − 1 below g = 1
and chaotic (λ₁ > 0, averaged over draws of J) at g = 2."""

import importlib
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("04_edge_of_chaos")
torch.set_num_threads(1)
N = 60


@pytest.fixture(scope="module")
def setup():
    J = study.gaussian_J(N, 0)
    h0 = torch.randn(N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return J, h0


def test_lyapunov_exponent_changes_sign_across_g_equal_one(setup):
    J, h0 = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lam = {
            g: float(
                study.lyapunov_spectrum(
                    study.cell_map(study.rnn_with(g * J)), h0, 150, transient=150, k=1
                )[0]
            )
            for g in (0.5, 2.0)
        }
    # ordered: the origin attracts and λ₁ = log ρ(gJ)·(1 + o(1)) ≈ log g
    assert lam[0.5] == pytest.approx(math.log(0.5), abs=0.1)
    assert lam[2.0] > 0.05  # chaos


def test_gradients_vanish_below_and_explode_above_g_one(setup):
    J, h0 = setup
    T = 50
    small = study.gradient_norm(study.rnn_with(0.5 * J), h0, T)
    large = study.gradient_norm(study.rnn_with(2.0 * J), h0, T)
    assert small < 1e-8
    assert large > 1e2


def test_orthogonal_linear_rnn_preserves_norms(setup):
    _, h0 = setup
    Q, _ = torch.linalg.qr(study.gaussian_J(N, 2))
    rep = study.analyze(study.cell_map(study.rnn_with(Q, "identity")), h0, 40)
    assert np.allclose(rep.singular_values, 1.0, atol=1e-10)
    g = study.gradient_norm(study.rnn_with(Q, "identity"), h0, 40)
    assert g == pytest.approx(1.0, abs=1e-10)  # ‖Qᵀ⁴⁰ 1‖/‖1‖ = 1


def test_rate_network_is_ordered_below_g_one_with_rate_g_minus_one(setup):
    J, h0 = setup
    g = 0.5
    gJ = g * J

    def scs(t, h):
        return -h + gJ @ torch.tanh(h)

    lam = study.lyapunov_spectrum(
        study.flow_map(scs, 0.25, "rk4"), h0, 80, dt=0.25, transient=120, k=1
    )
    # at the origin the linearisation is −I + gJ: λ₁ = max Re eig = g·max Re eig(J) − 1
    expected = g * float(np.linalg.eigvals(J.numpy()).real.max()) - 1
    assert float(lam[0]) == pytest.approx(expected, abs=0.02)


def test_rate_network_is_chaotic_at_g_two_on_average():
    # SCS: for N → ∞ the rate network is chaotic for every g > 1 (λ₁ > 0); at finite N a
    # single draw can settle on a fixed point or limit cycle, so average independent
    # draws of (J, h_0) at N = 200, as the study does
    lam = np.array(
        [
            study.rate_network_lyapunov(2.0, 200, 100 + 2 * s, dt=0.5, transient=100, n_steps=200)
            for s in range(2)
        ]
    )
    assert lam.mean() > 0.02
    # and below g = 1 the same estimator gives the origin's rate g·max Re eig(J) − 1 < 0
    below = study.rate_network_lyapunov(0.75, 200, 100, dt=0.5, transient=60, n_steps=60)
    J = study.gaussian_J(200, 100).numpy()
    assert below == pytest.approx(0.75 * np.linalg.eigvals(J).real.max() - 1, abs=0.03)
