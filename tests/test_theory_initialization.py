"""Claim 2 (studies/theory/02_initialization.py): He/ReLU keeps gradient norms per
layer (ratio 1), Xavier/ReLU shrinks them by 1/√2, Xavier/tanh near 0 keeps them;
zero-initialised residual branches start as the identity."""

import importlib
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("02_initialization")
torch.set_num_threads(1)

# closed forms: χ = σ_w² E[φ'²]; ReLU: E[φ'²] = 1/2; tanh at q → 0: φ'(0)² = 1
EXPECTED = {("relu", "he"): 1.0, ("relu", "xavier"): 2**-0.5, ("tanh", "xavier"): 1.0}


@pytest.mark.parametrize(("act", "scheme", "s2", "q0"), study.CASES)
def test_mean_field_ratio_matches_closed_form_and_autograd(act, scheme, s2, q0):
    depth = 20
    pred = study.mean_field(act, s2, depth, q0=q0).gradient_ratio
    assert pred.mean() == pytest.approx(EXPECTED[(act, scheme)], rel=0.02)
    meas = study.measured_gradient_ratios(act, s2, depth, 128, q0=q0, n_nets=3)
    assert (meas.chi.mean() ** 0.5) == pytest.approx(pred.mean(), rel=0.05)
    mlp = study.mlp_ratio(act, scheme, depth, 128, q0, 3)  # odenet.models.MLPField + init_
    assert mlp == pytest.approx(EXPECTED[(act, scheme)], rel=0.05)


def test_zero_initialised_residual_branches_start_as_identity():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ident = study.zero_init_identity(("euler", "rk4"), depth=3)
    assert (ident.max_abs_out_minus_in == 0.0).all()
    assert (ident.max_abs_J_minus_I == 0.0).all()
