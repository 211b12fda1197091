"""Stability of linear multistep methods against textbook values and real runs.

Values: Hairer & Wanner II, Table V.2.1 (BDF A(α)); Hairer, Nørsett & Wanner I,
Sec. III.3 (Adams real intervals); Dahlquist's root condition (BDF7).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import odenet
from odenet.stability import multistep as M

D = torch.float64


@pytest.mark.parametrize(
    "k, alpha", [(1, 90.0), (2, 90.0), (3, 86.03), (4, 73.35), (5, 51.84), (6, 17.84)]
)
def test_bdf_a_alpha_angles(k, alpha):
    assert M.is_zero_stable(f"bdf{k}")
    assert abs(M.a_alpha(f"bdf{k}") - alpha) < 0.01


# Shampine & Reichelt 1997, Table 1: the NDF stability angles, to the degree
@pytest.mark.parametrize("k, alpha", [(1, 90), (2, 90), (3, 80), (4, 66), (5, 51)])
def test_ndf_a_alpha_angles_and_orders(k, alpha):
    assert M.is_zero_stable(f"ndf{k}")
    assert M.order(f"ndf{k}") == k
    assert abs(M.a_alpha(f"ndf{k}") - alpha) < 1.0
    # NDF is BDF plus κ_k γ_k ∇^{k+1}: the same at order 5 (κ_5 = 0), otherwise one step more
    rho, _ = M.characteristic_polynomials(f"ndf{k}")
    assert len(rho) == (k + 1 if k == 5 else k + 2)


def test_ndf3_leaves_out_a_point_of_the_lobe_that_bdf3_keeps():
    """``z = −0.3 + 2i`` (81.5° from the negative real axis, |z| 2.0): inside BDF3's
    sector (86.03°), in NDF3's lobe (80.4°, reaching |z| 3.47); the principal root of
    NDF3 follows ``e^z`` to its order near 0."""
    z = -0.07
    roots = M.stability_roots("ndf3", z)
    assert np.min(np.abs(roots - np.exp(z))) < 10 * abs(z) ** 4
    assert not M.is_absolutely_stable("ndf3", -0.3 + 2j)
    assert M.is_absolutely_stable("bdf3", -0.3 + 2j)


def test_ndf_beyond_order_5_is_an_error():
    with pytest.raises(odenet.OdenetError, match="ndf1–ndf5"):
        M.a_alpha("ndf6")


@pytest.mark.parametrize(
    "rho, sigma",
    [
        ([1, 0, -1], [0, 2, 0]),  # leapfrog (explicit midpoint rule)
        ([1, 0, -1], [Fraction(1, 3), Fraction(4, 3), Fraction(1, 3)]),  # Milne–Simpson
    ],
)
def test_weakly_stable_methods_have_no_a_alpha_sector(rho, sigma):
    # The whole boundary locus lies on the imaginary axis (angle 90°), but both sides
    # are unstable: the region is a segment of the imaginary axis (HNW I §III.3), α = 0.
    # Leapfrog in closed form: the roots of ζ² − 2zζ − 1 are z ± √(z² + 1), and at
    # z = −0.01 one has modulus 0.01 + √1.0001 > 1.
    assert M.is_zero_stable((rho, sigma))
    assert M.a_alpha((rho, sigma)) == 0.0
    if sigma[0] == 0:
        z = -0.01
        assert max(abs(M.stability_roots((rho, sigma), z))) == pytest.approx(
            -z + math.sqrt(z * z + 1), rel=1e-12
        )


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_adams_bashforth_bounded_regions_have_alpha_zero(k):
    # A bounded region contains no infinite sector (the locus grid used to give 0.0005°).
    assert M.a_alpha(f"ab{k}") == 0.0


def test_bdf7_is_not_zero_stable():
    assert not M.is_zero_stable("bdf7")
    assert M.order("bdf7") == 7  # consistent of order 7, yet useless


@pytest.mark.parametrize("k, left", [(1, -2.0), (2, -1.0), (3, -6 / 11), (4, -3 / 10)])
def test_adams_bashforth_real_intervals(k, left):
    assert abs(M.real_stability_interval(f"ab{k}") - left) < 1e-6


# Adams–Moulton of order 3 … 6 (k = 2 … 5 steps): the interval ends where the root
# ζ = −1 crosses, z = ρ(−1)/σ(−1) = 2(−1)^k / Σ_j c_j (−1)^(k−j) with the textbook
# weights (HNW I, Table III.1.2: 5/12 8/12 −1/12; 9 19 −5 1 /24; 251 646 −264 106 −19
# /720; 475 1427 −798 482 −173 27 /1440): −6, −3, −90/49, −45/38 (the integrator's
# interval is found by scanning the roots, not from this formula)
@pytest.mark.parametrize("p, left", [(3, -6.0), (4, -3.0), (5, -90 / 49), (6, -45 / 38)])
def test_adams_moulton_real_intervals(p, left):
    assert M.real_stability_interval(f"am{p}") == pytest.approx(left, abs=1e-6)
    assert M.a_alpha(f"am{p}") == 0.0  # bounded regions


def test_the_first_two_adams_moulton_formulas_are_a_stable():
    # backward Euler and the trapezoidal rule: ρ = ζ − 1, σ = ζ and (ζ + 1)/2
    assert M.characteristic_polynomials("am1") == ([1, -1], [1, 0])
    assert M.characteristic_polynomials("am2") == ([1, -1], [Fraction(1, 2), Fraction(1, 2)])
    for p in (1, 2):
        assert M.a_alpha(f"am{p}") == pytest.approx(90.0)
        assert M.real_stability_interval(f"am{p}") == -math.inf


@pytest.mark.parametrize(
    "name", ["ab1", "ab4", "abm3", "abm6", "am1", "am4", "am6", "bdf2", "bdf5"]
)
def test_order_conditions_give_the_classical_order(name):
    assert M.order(name) == odenet._multistep.MULTISTEP[name].order


def test_boundary_locus_points_are_marginally_stable():
    for name in ("ab3", "bdf4"):
        for z in M.boundary_locus(name, 37)[1:]:
            if math.isfinite(abs(z)):
                assert max(abs(M.stability_roots(name, z))) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", ["ab3", "abm4", "am4"])
def test_analytic_interval_agrees_with_the_integrator(name):
    # y' = λ y with h λ just inside and just outside the interval, 400 real steps
    left = M.real_stability_interval(name)
    for z, grows in ((0.9 * left, False), (1.1 * left, True)):
        sol = odenet.solve(
            lambda t, y, z=z: z * y,
            torch.ones(1, dtype=D),
            torch.tensor([0.0, 400.0], dtype=D),
            method=name,
            step_size=1.0,
        )
        assert (abs(float(sol.ys[-1, 0])) > 1.0) == grows, (name, z)


def test_bad_method_raises():
    with pytest.raises(odenet.OdenetError, match="linear multistep"):
        M.a_alpha("rk4")
    with pytest.raises(odenet.OdenetError, match="PECE"):
        M.boundary_locus("abm3")


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_a_pece_pair_has_no_a_alpha_sector(k):
    # explicit as a whole: a bounded region (the boundary locus, which a_alpha reads,
    # is not defined for it and raised)
    assert M.a_alpha(f"abm{k}") == 0.0
    assert math.isfinite(M.real_stability_interval(f"abm{k}"))


@pytest.mark.parametrize("name", ["bdf2", "am3", "abm4"])
def test_runge_kutta_functions_send_a_multistep_name_to_the_multistep_module(name):
    from odenet.stability import real_stability_interval

    with pytest.raises(odenet.OdenetError, match=r"odenet.stability.multistep"):
        real_stability_interval(name)
