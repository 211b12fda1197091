"""Claim 8 (studies/theory/08_adam_vs_sgd.py): Adam's per-layer update ignores a
per-layer gradient scale, SGD's is proportional to it; natural gradient (Fisher)
changes the model's outputs independently of the parametrisation."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("08_adam_vs_sgd")
torch.set_num_threads(1)


def test_adam_update_independent_of_gradient_scale_sgd_proportional():
    rows = []
    for opt in ("sgd", "adam"):
        rows += study.per_layer_updates(opt, 6, 8, gain=1.0, decade_per_layer=0.5, lr=1e-3)
    import pandas as pd

    t = pd.DataFrame(rows)
    g = t[t.optimizer == "sgd"]
    assert g.grad_norm.max() / g.grad_norm.min() > 1e2  # scales span > 2 decades
    assert study.slope(t, "sgd") == pytest.approx(1.0, abs=1e-6)  # Δθ = −η g exactly
    assert np.allclose(g.update_norm, 1e-3 * g.grad_norm, rtol=1e-6)
    assert abs(study.slope(t, "adam")) < 0.02
    # Adam's first step is η·sign(g) per entry (bias-corrected m/√v): ‖Δθ_ℓ‖ ≈ η √(#entries)
    a = t[t.optimizer == "adam"]
    # (every map of MLPField(8, 8) is 8 × 8; ε = 1e-8 in √v + ε trims it slightly)
    assert np.allclose(a.update_norm, 1e-3 * np.sqrt(64), rtol=2e-3)


def test_natural_gradient_step_is_reparametrisation_invariant():
    nat = study.natural_gradient_invariance([1.0, 0.1, 0.01])
    p = nat.pivot(index="scale", columns="optimizer", values="output_change")
    assert p["natural"].max() / p["natural"].min() - 1 < 1e-5  # pinv round-off
    assert p["sgd"].max() / p["sgd"].min() - 1 > 1e-3  # SGD depends on the parametrisation
