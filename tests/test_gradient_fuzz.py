"""Gradients through stiff solves against the closed form (``studies/benchmarks/
gradient_fuzz.py``): the study's truth is checked here, and one drawn case per
sensitivity mode runs through radau_iia5 and bdf."""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
import gradient_fuzz as G
import stiff_fuzz as F

SEED = 3  # a linear drawn case (n = 2, rtol 8.9e-6) that solves in well under a second


def test_the_closed_form_gradients_match_finite_differences_of_the_closed_form():
    c = F.draw(SEED)
    assert c.s == 0
    w = np.random.default_rng(0).standard_normal(len(c.y0))
    g_y0, g_A = G.exact_gradients(c, w)

    def loss(case):
        return float((case.exact(case.t_out) @ w).sum())

    eps = 1e-4
    for name, truth in (("y0", g_y0), ("A", g_A)):
        fd = np.zeros_like(truth)
        for idx in np.ndindex(truth.shape):
            plus, minus = copy.deepcopy(c), copy.deepcopy(c)
            getattr(plus, name)[idx] += eps
            getattr(minus, name)[idx] -= eps
            fd[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        assert np.abs(fd - truth).max() < 1e-6 * np.abs(truth).max(), name


@pytest.mark.parametrize("method", ["radau_iia5", "bdf"])
@pytest.mark.parametrize("mode", ["direct", "checkpoint", "adjoint"])
def test_the_gradients_of_a_stiff_solve_predict_the_loss_within_its_tolerance(method, mode):
    c = F.draw(SEED)
    w = np.random.default_rng(0).standard_normal(len(c.y0))
    truth = G.exact_gradients(c, w)
    got = G.one(c, method, mode, limit=60, w=w)
    assert not isinstance(got, str), got
    for units, in_rtol in G.error_units(c, w, got, truth):
        assert units < 1 and in_rtol < 100
