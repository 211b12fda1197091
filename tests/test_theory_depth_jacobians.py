"""Claim 1 (studies/theory/01_depth_jacobians.py): gradient norms through depth follow
the product of layer Jacobians: ρ^L for plain nets, (1+ε)^L for small-branch ResNets."""

import importlib
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("01_depth_jacobians")
torch.set_num_threads(1)


def test_scalar_checks_from_the_theory():
    s = study.scalar_checks()
    assert s["1.1^100"] == pytest.approx(13780.6, rel=1e-5)
    assert s["0.9^100"] == pytest.approx(2.656e-5, rel=1e-3)


def test_measured_gradient_growth_follows_the_analyzer():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = study.compute(quick=True).table
    plain = t[(t.arch == "plain") & (t.activation == "relu")]
    # He × c: the product of Jacobians grows like c per layer (Lyapunov rate of the chain)
    for c, g in plain.groupby("gain_or_eps"):
        assert g.analyzer_top_lyapunov_rate.mean() == pytest.approx(c, rel=0.03)
        assert g.analyzer_rate.mean() == pytest.approx(c, rel=0.03)
    # autograd's per-layer growth agrees with the analyzer's within 10 % for plain nets
    ratio = t.measured_rate / t.analyzer_top_lyapunov_rate
    assert ((ratio > 0.9) & (ratio < 1.1)).all()
    res = t[t.arch == "resnet"]
    # small branches: growth per layer stays within (1 ± 3ε), i.e. (1+ε)^L over depth
    assert ((res.measured_rate - 1).abs() <= 3 * res.gain_or_eps).all()
    assert ((res.analyzer_top_lyapunov_rate - 1).abs() <= 3 * res.gain_or_eps).all()
