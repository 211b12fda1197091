"""Equilibria (eigenvalues vs Gershgorin certificates), mean-field initialization theory
vs measured random networks, and the `odenet stability` command."""

import json
import math

import numpy as np
import pytest
import torch

from odenet.stability import StabilityInputError
from odenet.stability.fixed_points import (
    find_fixed_point,
    fixed_point_stability,
    gershgorin_discs,
)
from odenet.stability.meanfield import chi, mean_field, measured_gradient_ratios, variance_map

D = torch.float64


def test_damped_oscillator_equilibrium_is_stable_with_the_closed_form_eigenvalues():
    c = 0.5

    def f(t, x):
        return torch.stack([x[1], -x[0] - c * x[1]])

    res = fixed_point_stability(f, torch.zeros(2), kind="flow")
    expected = np.roots([1, c, 1])
    np.testing.assert_allclose(np.sort_complex(res.eigenvalues), np.sort_complex(expected))
    assert res.verdict == "stable" and res.rate == pytest.approx(-c / 2)
    assert not res.certified  # discs of [[0, 1], [-1, -0.5]] touch Re z ≥ 0


def test_saddle_and_center():
    saddle = fixed_point_stability(
        lambda t, x: torch.stack([x[0], -x[1]]), torch.zeros(2), kind="flow"
    )
    assert saddle.verdict == "unstable"
    center = fixed_point_stability(
        lambda t, x: torch.stack([x[1], -x[0]]), torch.zeros(2), kind="flow"
    )
    assert center.verdict == "marginal"


def test_gershgorin_certificate_implies_eigenvalue_stability():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        M = torch.randn(5, 5, dtype=D, generator=gen) * 0.08 + torch.diag(
            torch.rand(5, dtype=D, generator=gen) * 0.6
        )
        res = fixed_point_stability(lambda x, M=M: M @ x, torch.zeros(5))
        if res.certified:
            assert res.stable and res.rate < 1
    c, r = gershgorin_discs(np.array([[0.5, 0.1], [0.2, 0.3]]))
    np.testing.assert_allclose(c, [0.5, 0.3])
    np.testing.assert_allclose(r, [0.1, 0.2])
    # every eigenvalue lies in the union of the discs
    A = np.array([[2.0, 0.5, 0.1], [0.3, -1.0, 0.4], [0.0, 0.2, 0.5]])
    c, r = gershgorin_discs(A)
    for lam in np.linalg.eigvals(A):
        assert np.any(np.abs(lam - c) <= r + 1e-12)


def test_fixed_point_of_a_map_by_newton_and_its_stability():
    # x = cos x: x* = 0.739085..., g'(x*) = −sin x* ≈ −0.674: stable
    x = find_fixed_point(torch.cos, torch.tensor([1.0], dtype=D))
    assert float(x) == pytest.approx(0.7390851332151607, abs=1e-12)
    res = fixed_point_stability(torch.cos, x)
    assert res.stable and res.rate == pytest.approx(math.sin(float(x)))
    # logistic map r = 3.2: x* = 1 − 1/r has multiplier 2 − r = −1.2: unstable
    r = 3.2
    res = fixed_point_stability(lambda x: r * x * (1 - x), torch.tensor([1 - 1 / r]))
    assert res.verdict == "unstable" and res.rate == pytest.approx(1.2)


def test_fixed_point_errors_are_reported():
    with pytest.raises(StabilityInputError, match="`x_star` is not an equilibrium"):
        fixed_point_stability(torch.cos, torch.tensor([1.0]))
    with pytest.raises(StabilityInputError, match="`kind` must be 'map' or 'flow'"):
        fixed_point_stability(torch.cos, torch.tensor([1.0]), kind="ode")
    with pytest.raises(StabilityInputError, match="did not find an equilibrium"):
        # Newton on atan diverges from |x0| > 1.39
        find_fixed_point(lambda t, x: torch.atan(x), torch.tensor([1.5]), kind="flow", max_iter=5)
    with pytest.raises(StabilityInputError, match="singular Jacobian"):
        find_fixed_point(lambda x: x + 1.0, torch.tensor([0.0]))
    with pytest.raises(StabilityInputError, match=r"`M` must be a square matrix"):
        gershgorin_discs(np.ones((2, 3)))
    # a NaN point or tol passed the residual test (NaN compares False) and came back
    # "stable", certified, for a map whose only fixed point (x = 1, slope 2) is unstable
    g = lambda x: torch.where(x < 5.0, 2.0 * x - 1.0, 0.1 * x + 0.4)  # noqa: E731
    with pytest.raises(StabilityInputError, match="`x_star` has NaN"):
        fixed_point_stability(g, torch.tensor([math.nan]))
    with pytest.raises(StabilityInputError, match="`tol` must be a finite number"):
        fixed_point_stability(lambda x: 2.0 * x + 1.0, torch.tensor([0.0]), tol=math.nan)
    assert fixed_point_stability(g, torch.tensor([1.0])).verdict == "unstable"


def test_he_and_xavier_are_the_critical_initializations():
    # ReLU with σ_w² = 2: q is preserved and χ = 1 (He et al. 2015)
    V = variance_map("relu", 2.0)
    assert V(1.7) == pytest.approx(1.7)
    assert chi("relu", 2.0, 1.7) == pytest.approx(1.0)
    # tanh with σ_w² = 1: q* = 0 and χ → 1 as q → 0 (Glorot & Bengio 2010 / Poole et al. 2016)
    assert chi("tanh", 1.0, 1e-8) == pytest.approx(1.0, abs=1e-6)
    mf = mean_field("tanh", 1.0, 200)
    assert mf.q[-1] < 0.02 and mf.chi[-1] == pytest.approx(1.0, abs=0.03)
    # closed form for tanh's variance map at small q: q' ≈ q − 2q² (E[tanh(√q z)²])
    assert V(1e-3) == pytest.approx(2 * 1e-3 / 2)  # relu: σ_w² q / 2
    assert variance_map("tanh", 1.0)(1e-4) == pytest.approx(1e-4 - 2e-8, rel=1e-6)


@pytest.mark.parametrize("act, s2", [("relu", 2.0), ("relu", 1.5), ("tanh", 1.0), ("tanh", 2.5)])
def test_predicted_vs_measured_per_layer_gradient_ratios(act, s2):
    depth = 8
    pred = mean_field(act, s2, depth)
    # finite width: q_l of one net fluctuates by ~sqrt(2 l / width); average 12 nets
    meas = measured_gradient_ratios(act, s2, depth, width=300, n_nets=12, seed=1)
    np.testing.assert_allclose(meas.q, pred.q, rtol=0.2)
    np.testing.assert_allclose(meas.gradient_ratio, pred.gradient_ratio, rtol=0.08)


@pytest.mark.parametrize("q", [0.5, 10.0, 50.0, 100.0, 1e4])
def test_tanh_expectations_at_large_variance_match_adaptive_quadrature(q):
    # E[sech⁴(√q z)] has a spike of width 1/√q that 150 Hermite nodes missed: χ was
    # 37 % low at q = 50, 73 % at q = 100, and σ_w² = 400 read as "ordered"
    from scipy.integrate import quad

    s = math.sqrt(q)

    def mean(g):  # E[g(u)], u ~ N(0, q), adaptively
        dens = lambda u: math.exp(-u * u / (2 * q)) / (s * math.sqrt(2 * math.pi))  # noqa: E731
        return quad(lambda u: g(u) * dens(u), -12 * s, 12 * s, points=[0.0], limit=1000)[0]

    assert chi("tanh", 1.0, q) == pytest.approx(
        mean(lambda u: (1 - math.tanh(u) ** 2) ** 2), rel=1e-9
    )
    assert variance_map("tanh", 2.0, 0.1)(q) == pytest.approx(
        2 * mean(lambda u: math.tanh(u) ** 2) + 0.1, rel=1e-9
    )


def test_meanfield_errors_are_reported():
    with pytest.raises(StabilityInputError, match="`activation` must be one of"):
        chi("gelu", 1.0, 1.0)
    with pytest.raises(StabilityInputError, match="`depth` must be a positive integer"):
        mean_field("tanh", 1.0, 0)
    # a negative or NaN variance gave χ = −1 or NaN quietly
    for kw, name in [
        ({"sigma_w2": -2.0}, "sigma_w2"),
        ({"q0": -1.0}, "q0"),
        ({"sigma_b2": math.nan}, "sigma_b2"),
    ]:
        with pytest.raises(StabilityInputError, match=f"`{name}` must be a finite variance"):
            mean_field("tanh", kw.pop("sigma_w2", 1.0), 3, **kw)
    # the public pieces too: variance_map("tanh", −2)(1) was a variance of −0.79
    for call, name in [
        (lambda: variance_map("tanh", -2.0), "sigma_w2"),
        (lambda: chi("tanh", -1.0, 1.0), "sigma_w2"),
        (lambda: chi("tanh", 1.0, -1.0), "q"),
        (lambda: measured_gradient_ratios("tanh", -1.0, 3, 10), "sigma_w2"),
    ]:
        with pytest.raises(StabilityInputError, match=f"`{name}` must be a finite variance"):
            call()
    with pytest.raises(StabilityInputError, match="`n_nets` must be a positive integer"):
        measured_gradient_ratios("tanh", 1.0, 3, 10, n_nets=0)  # returned zeros


def test_cli_prints_intervals_and_flags(capsys, tmp_path):
    from odenet.cli import main

    assert main(["stability", "--method", "rk4", "--method", "radau_iia5", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info[0]["method"] == "rk4"
    assert info[0]["real_interval"] == pytest.approx(-2.785293563405282, abs=1e-9)
    assert info[1]["A_stable"] and info[1]["L_stable"]
    plot = tmp_path / "regions.png"
    assert main(["stability", "--method", "euler", "--plot", str(plot), "--grid", "81"]) == 0
    out = capsys.readouterr().out
    assert "real interval [-2, 0]" in out and plot.stat().st_size > 1000
    assert main(["stability", "--method", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
