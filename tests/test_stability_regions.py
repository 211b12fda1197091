"""Linear stability of schemes: R(z) from the tableau agrees with closed forms,
with one real integrator step on y' = zy, and with literature intervals and flags."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import odenet
from odenet.stability import (
    empirical_stability_function,
    imaginary_stability_interval,
    is_a_stable,
    is_l_stable,
    r_infinity,
    real_stability_interval,
    stability_function,
    stability_polynomials,
    stability_region,
)

Z = np.array([-1.0 + 1.0j, -2.5 + 0.3j, 0.4 - 1.7j, -0.1 + 2.9j, -4.0 + 0.0j, 0.7 + 0.2j])


def test_rk4_stability_function_is_the_degree4_taylor_polynomial():
    R = stability_function("rk4")
    expected = 1 + Z + Z**2 / 2 + Z**3 / 6 + Z**4 / 24
    np.testing.assert_allclose(R(Z), expected, rtol=1e-14)
    P, Q = stability_polynomials("rk4")
    np.testing.assert_allclose(P, [1, 1, 1 / 2, 1 / 6, 1 / 24], rtol=1e-13)
    np.testing.assert_allclose(Q, [1, 0, 0, 0, 0], atol=1e-15)


def test_backward_euler_and_trapezoid_closed_forms():
    np.testing.assert_allclose(stability_function("backward_euler")(Z), 1 / (1 - Z), rtol=1e-14)
    np.testing.assert_allclose(
        stability_function("trapezoid")(Z), (1 + Z / 2) / (1 - Z / 2), rtol=1e-14
    )


def test_stability_function_keeps_the_shape_of_z():
    z = Z.reshape(2, 3)
    assert stability_function("dopri5")(z).shape == (2, 3)


@pytest.mark.parametrize("method", odenet.methods())
def test_analytic_R_equals_one_real_step_on_the_test_equation(method):
    analytic = stability_function(method)(Z)
    measured = empirical_stability_function(method, Z)
    np.testing.assert_allclose(measured, analytic, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", [m for m in odenet.methods() if odenet.tableau(m).is_explicit])
def test_explicit_R_matches_exp_to_the_order_of_the_method(method):
    # R(z) − e^z = O(z^{p+1}): the first p+1 Taylor coefficients are 1/k!
    tab = odenet.tableau(method)
    P, _ = stability_polynomials(method)
    k = np.arange(tab.order + 1)
    np.testing.assert_allclose(P[: tab.order + 1], 1 / np.array([math.factorial(i) for i in k]))


@pytest.mark.parametrize(
    "method, left",
    [
        ("euler", -2.0),
        ("heun", -2.0),
        ("midpoint", -2.0),
        ("rk3", -2.5127453266183),  # Hairer–Wanner I, Fig. IV.2.1
        ("rk4", -2.7852935634053),
        ("rk38", -2.7852935634053),  # same polynomial as rk4
    ],
)
def test_real_stability_interval_literature(method, left):
    assert real_stability_interval(method) == pytest.approx(left, abs=1e-9)


@pytest.mark.parametrize("method", odenet.methods())
def test_real_interval_is_the_largest_stable_segment_by_brute_force(method):
    R = stability_function(method)
    left = real_stability_interval(method)
    if np.isinf(left):
        x = -np.logspace(-4, 6, 4000)
        assert np.all(np.abs(R(x)) <= 1 + 1e-9)
        return
    inside = np.linspace(left, 0, 2001)[:-1] * (1 - 1e-9)
    assert np.all(np.abs(R(inside)) <= 1 + 1e-9)
    assert np.abs(R(left * (1 + 1e-4))) > 1


def test_imaginary_intervals():
    assert imaginary_stability_interval("euler") == 0.0
    assert imaginary_stability_interval("heun") == 0.0  # |R(iy)|² = 1 + y⁴/4
    assert imaginary_stability_interval("rk4") == pytest.approx(2 * math.sqrt(2), abs=1e-10)
    assert imaginary_stability_interval("rk3") == pytest.approx(math.sqrt(3), abs=1e-10)
    assert imaginary_stability_interval("trapezoid") == math.inf


@pytest.mark.parametrize("method", odenet.methods())
def test_imaginary_interval_by_brute_force(method):
    R = stability_function(method)
    y_end = imaginary_stability_interval(method)
    if np.isinf(y_end):
        y = np.logspace(-4, 6, 4000)
        assert np.all(np.abs(R(1j * y)) <= 1 + 1e-9)
        return
    if y_end > 0:
        inside = np.linspace(0, y_end, 2001) * (1 - 1e-9)
        assert np.all(np.abs(R(1j * inside)) <= 1 + 1e-9)
    assert np.abs(R(1j * (y_end * (1 + 1e-3) + 1e-3))) > 1


A_STABLE = {"backward_euler", "trapezoid", "implicit_midpoint", "gauss_legendre4", "radau_iia5"}
L_STABLE = {"backward_euler", "radau_iia5", "sdirk2"}


def test_a_and_l_stability_flags_match_the_literature():
    for m in A_STABLE | L_STABLE:
        assert is_a_stable(m), m
        assert np.isinf(real_stability_interval(m)), m
    for m in L_STABLE:
        assert is_l_stable(m), m
    for m in ("trapezoid", "implicit_midpoint", "gauss_legendre4"):  # |R(∞)| = 1
        assert not is_l_stable(m), m
        assert abs(r_infinity(m)) == pytest.approx(1.0, abs=1e-12)
    for m in odenet.methods():
        if odenet.tableau(m).is_explicit:
            assert not is_a_stable(m) and np.isfinite(real_stability_interval(m)), m


@pytest.mark.parametrize("method", odenet.methods())
def test_a_stability_flag_agrees_with_sampling_the_left_half_plane(method):
    R = stability_function(method)
    r = np.logspace(-3, 4, 120)
    th = np.linspace(np.pi / 2, 3 * np.pi / 2, 121)
    z = (r[:, None] * np.exp(1j * th[None, :])).ravel()
    sampled = bool(np.all(np.abs(R(z)) <= 1 + 1e-9))
    if is_a_stable(method):
        assert sampled
    else:  # not A-stable: somewhere in the left half-plane |R| > 1
        assert not sampled


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["rk4", "dopri5", "radau_iia5", "sdirk2", "gauss_legendre4"]),
    st.floats(-5, 1),
    st.floats(-4, 4),
)
def test_R_commutes_with_conjugation(method, a, b):
    R = stability_function(method)
    z = np.array(a + 1j * b)
    assert R(np.conj(z)) == pytest.approx(np.conj(R(z)), rel=1e-12, abs=1e-12)


def test_stability_region_data_for_a_contour_plot():
    reg = stability_region("euler", re=(-3, 1), im=(-2, 2), n=201)
    assert reg.abs_R.shape == (201, 201)
    # Euler's region is the unit disc around -1: area π
    assert reg.area() == pytest.approx(math.pi, rel=0.02)


def test_unknown_method_is_reported():
    with pytest.raises(odenet.UnknownMethodError, match="unknown method 'nope'"):
        stability_function("nope")


def _damped_chebyshev_tableau(s, eps):
    """Explicit s-stage tableau with R(z) = T_s(w0 + w1 z) / T_s(w0), w0 = 1 + eps/s²,
    w1 = T_s(w0)/T_s'(w0) (first-order damped Runge–Kutta–Chebyshev), built as a nested
    bidiagonal tableau from the exact rational coefficients a_k of R."""
    import sympy as sp

    w, z = sp.symbols("w z")
    w0 = 1 + sp.Rational(eps) / s**2
    Ts = sp.chebyshevt(s, w)
    w1 = Ts.subs(w, w0) / sp.diff(Ts, w).subs(w, w0)
    R = sp.Poly(sp.expand(Ts.subs(w, w0 + w1 * z) / Ts.subs(w, w0)), z)
    a = list(reversed(R.all_coeffs()))  # a_0 = a_1 = 1
    d = [a[k + 1] / a[k] for k in range(1, s)]
    A = [[0] * s for _ in range(s)]
    for i in range(1, s):
        A[i][i - 1] = d[s - i - 1]
    tab = odenet.ButcherTableau(
        f"cheb{s}", A=A, b=[0] * (s - 1) + [1], c=[sum(r) for r in A], order=1
    )
    return tab, [float(x) for x in a], float(-2 * w0 / w1)  # |R| = 1 where w0 + w1 x = -w0


@pytest.mark.parametrize("s, eps", [(10, "1/20"), (5, 0), (10, 0), (20, "1/20")])
def test_chebyshev_methods_long_real_interval_closed_form(s, eps):
    # The coefficients of R fall off by 10+ orders of magnitude; sampling R on a circle
    # lost them (s = 10, eps = 1/20 gave -110.7).  Truth: the closed form -2 w0/w1
    # (= -2 s² undamped), and a brute-force scan of the exact polynomial.
    tab, a, truth = _damped_chebyshev_tableau(s, eps)
    P, Q = stability_polynomials(tab)
    np.testing.assert_allclose(P, a, rtol=1e-15)
    np.testing.assert_array_equal(Q, [1.0] + [0.0] * s)
    if eps == 0:
        assert truth == pytest.approx(-2 * s**2, rel=1e-14)
    left = real_stability_interval(tab)
    assert left == pytest.approx(truth, rel=1e-10)
    if s <= 10:  # the float64 determinant form is accurate enough here
        R = stability_function(tab)
        inside = np.linspace(truth, 0, 20001)[1:]
        assert np.all(np.abs(R(inside)) <= 1 + 1e-9)
        assert np.abs(R(truth * (1 + 1e-3))) > 1
