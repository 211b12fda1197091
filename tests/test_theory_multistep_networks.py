"""Claim 11 (studies/theory/11_multistep_networks.py): a multistep network (LMResNet) is
stable exactly where its scheme is — measured growth of signals and gradients against
the multistep analyzer, and against closed-form roots."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("11_multistep_networks")
torch.set_num_threads(1)


def one(z, depth=120, **network):
    m = study.measure(np.array([complex(z)]), depth, **network)
    return {key: float(v[0]) for key, v in m.items()}


@pytest.fixture(scope="module")
def res():
    return study.compute(quick=True)


def test_bounded_exactly_where_the_analyzer_says_on_the_grid(res):
    a = res.table.set_index("scheme")
    assert (a.outside_band >= 0.85 * a.points).all()
    assert (a.agree_grad == 1.0).all()  # the gradient sees every unstable root
    # the forward signal misses only a weakly excited root (leapfrog near z = 0)
    assert (a.agree_fwd >= 0.99).all()
    assert (a.median_rate_err_fwd < 1e-6).all() and (a.max_rate_err_grad < 0.05).all()


def test_root_condition_decides_gradient_growth_with_a_zero_field(res):
    zs = res.zero_stability
    assert (zs.bounded == zs.root_condition).all()
    assert set(zs.k[zs.root_condition].round(6)) == {round(k, 6) for k in zs.k if -1 < k <= 1}
    unstable = zs[zs.k.abs() > 1]
    assert np.allclose(unstable.measured_rate, unstable.k.abs(), rtol=1e-3)  # root −k


def test_mlp_jacobian_eigenvalues_predict_the_network(res):
    m = res.mlp
    unstable = m.predicted_rate > 1.05
    assert np.allclose(m.measured_rate[unstable], m.predicted_rate[unstable], rtol=1e-2)
    # stable: the rate over 60 layers carries the field's non-normal transient
    assert (m.measured_rate - m.predicted_rate).abs().max() < 0.05
    far = (m.predicted_rate - 1).abs() > 0.05
    assert ((m.measured_rate < 1) == m.predicted_stable)[far].all()
    assert m.predicted_stable.any() and (~m.predicted_stable).any()


def lm_max_root(k, z):
    # ζ² − (1 − k + (1 + k) z) ζ − k = 0, by the quadratic formula
    p = 1 - k + (1 + k) * z
    d = np.sqrt(complex(p * p + 4 * k))
    return max(abs((p + d) / 2), abs((p - d) / 2))


@pytest.mark.parametrize("k", [-0.5, 0.0, 0.5])
def test_lm_real_interval_limit_on_the_network(k):
    # closed form: ζ = −1 solves ρ − zσ at z* = −2(1 − k)/(1 + k)
    z_star = -2 * (1 - k) / (1 + k)
    assert lm_max_root(k, z_star) == pytest.approx(1.0)
    inside, outside = one(0.97 * z_star, method="lm", k=k), one(1.1 * z_star, method="lm", k=k)
    assert inside["growth_grad"] <= study.BOUND and inside["growth_fwd"] <= study.BOUND
    assert outside["rate_grad"] == pytest.approx(lm_max_root(k, 1.1 * z_star), rel=1e-3)
    assert outside["growth_grad"] > 1e3 and outside["growth_fwd"] > 1e2


def test_leapfrog_is_marginal_on_the_imaginary_segment_only():
    # ζ = z ± sqrt(z² + 1): |ζ| = 1 for z = iy, |y| ≤ 1; grows by |z| + sqrt(z² + 1) for z < 0
    for y in (0.3, 0.9):
        m = one(1j * y, depth=400, method="lm", k=1.0)  # two roots on the circle: bounded
        assert m["growth_fwd"] < study.BOUND and m["growth_grad"] < study.BOUND
    z = -0.05
    m = one(z, method="lm", k=1.0)
    assert m["rate_grad"] == pytest.approx(abs(z) + np.sqrt(z * z + 1), rel=1e-3)


def test_ab2_growth_is_its_largest_root():
    # AB2 on y' = λy: ζ² − (1 + 3z/2) ζ + z/2 = 0
    for z in (-0.5, -1.2, 0.3 + 0.9j):
        expected = np.abs(np.roots([1, -(1 + 1.5 * z), 0.5 * z])).max()
        m = one(z, method="ab2")
        assert m["rate_grad"] == pytest.approx(expected, rel=2e-3)
        assert m["rate_fwd"] == pytest.approx(expected, rel=2e-3)
