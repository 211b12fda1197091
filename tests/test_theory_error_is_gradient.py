"""Claim 5 (studies/theory/05_error_is_gradient.py): the integrator's global-error
recurrence and the network's backprop recurrence use the same amplification matrices,
and propagated local errors predict the global error."""

import importlib
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("05_error_is_gradient")
torch.set_num_threads(1)


def test_resnet_block_jacobian_is_forward_euler_amplification_matrix():
    f = study.linear_field()
    A = f.net[0].weight.detach()
    n = 8
    net = study.ResNet(f, n, "euler", horizon=study.T_END)
    y = torch.randn(1, 4, dtype=torch.float64)
    M = study.jacobians(lambda x: net.block(3, x[None])[0], y)[0]
    assert torch.allclose(M, torch.eye(4, dtype=torch.float64) + (study.T_END / n) * A, atol=1e-14)


def test_error_and_gradient_recurrences_coincide():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = study.compute(quick=True).table
    assert t.max_M_difference.max() <= 1e-14  # the same matrices
    assert t.gradient_mismatch.max() < 1e-12  # autograd == M^T recurrence
    lin = t[t.field == "linear"]
    assert lin.error_prediction_mismatch.max() < 1e-8  # exact for a linear field
    eu = t[(t.field == "nonlinear") & (t.method == "euler")].sort_values("h")
    # second order in the error: the relative mismatch shrinks ∝ h (≈ halves per halving)
    assert eu.error_prediction_mismatch.iloc[-1] < 1e-3
    ratios = eu.error_prediction_mismatch.values[1:] / eu.error_prediction_mismatch.values[:-1]
    assert ((ratios > 1.6) & (ratios < 2.4)).all()
