"""Claim 3 (studies/theory/03_spectral_norm.py): spectral radius < 1 does not prevent
transient growth or explosion of non-normal products; spectral normalization does."""

import importlib
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("03_spectral_norm")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def res():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return study.compute(quick=True)


def test_transient_peak_despite_spectral_radius_below_one(res):
    t = res.table
    assert np.allclose(t.spectral_radius, 0.9)
    # analyzer's estimate == peak measured by running the RNN
    assert np.allclose(t.analyzer_peak, t.measured_peak, rtol=1e-8)
    # Kreiss matrix theorem: K ≤ sup‖W^k‖ ≤ e d K
    assert (t.kreiss_constant <= t.measured_peak * (1 + 1e-6)).all()
    assert (t.measured_peak <= math.e * res.dim * t.kreiss_constant).all()
    assert t[t.a >= 0.5].measured_peak.min() > 1e3  # "explodes" transiently
    # closed form for a = 1: ‖W^k‖ ≥ |(W^k)_{1,d}| = C(k, d-1) 0.9^{k-d+1}
    k = int(t[t.a == 1.0].measured_peak_step.iloc[0])
    d = res.dim
    assert t[t.a == 1.0].measured_peak.iloc[0] >= math.comb(k, d - 1) * 0.9 ** (k - d + 1)


def test_spectral_normalization_removes_the_growth(res):
    assert (res.table.spectral_normalized_peak_after_step_0 <= 1 + 1e-6).all()
    lin = torch.nn.Linear(3, 3, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.diag(torch.tensor([1.3, 0.5, -0.2], dtype=torch.float64)))
    raw = lin.weight.detach().clone()
    study.spectral_normalize(lin)
    lin.eval()
    assert torch.allclose(lin.weight, raw * 0.7692307692307692, atol=1e-10)  # 1/1.3


def test_product_of_two_stable_nonnormal_matrices_explodes(res):
    alt = res.alternating
    assert np.allclose(alt.rho_each, 0.5)
    # ρ(BA) for A = [[.5, 2], [0, .5]], B = Aᵀ: BA = [[.25, 1], [1, 4.25]]
    rho = (4.5 + math.sqrt(4.0**2 + 4)) / 2  # largest eigenvalue of [[.25,1],[1,4.25]]
    pairs = alt.steps / 2
    assert np.allclose(alt.log_end_to_end_growth, pairs * math.log(rho), rtol=1e-6)
    assert (alt.verdict == "unstable").all()
