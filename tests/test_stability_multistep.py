"""Stability of linear multistep methods against textbook values and real runs.

Values: Hairer & Wanner II, Table V.2.1 (BDF A(α)); Hairer, Nørsett & Wanner I,
Sec. III.3 (Adams real intervals); Dahlquist's root condition (BDF7).
"""

from __future__ import annotations

import math

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


def test_bdf7_is_not_zero_stable():
    assert not M.is_zero_stable("bdf7")
    assert M.order("bdf7") == 7  # consistent of order 7, yet useless


@pytest.mark.parametrize("k, left", [(1, -2.0), (2, -1.0), (3, -6 / 11), (4, -3 / 10)])
def test_adams_bashforth_real_intervals(k, left):
    assert abs(M.real_stability_interval(f"ab{k}") - left) < 1e-6


@pytest.mark.parametrize("name", ["ab1", "ab4", "abm3", "abm6", "bdf2", "bdf5"])
def test_order_conditions_give_the_classical_order(name):
    assert M.order(name) == odenet._multistep.MULTISTEP[name].order


def test_boundary_locus_points_are_marginally_stable():
    for name in ("ab3", "bdf4"):
        for z in M.boundary_locus(name, 37)[1:]:
            if math.isfinite(abs(z)):
                assert max(abs(M.stability_roots(name, z))) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", ["ab3", "abm4"])
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
