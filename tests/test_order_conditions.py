"""Claims about Butcher's order conditions and about the order of every method.

The truths are independent of the code under test: the number of rooted trees
(OEIS A000081), the textbook order conditions up to order 4 written out by hand, the
declared (published) orders of the methods, and Runge's one-parameter family of
second-order methods.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odenet._errors import InputError
from odenet.order_conditions import (
    density,
    order_conditions,
    stage_order,
    tree_order,
    tree_str,
    trees,
    trees_up_to,
    verify_dense_order,
    verify_order,
)
from odenet.tableaus import ButcherTableau, methods, tableau

ALL = methods()


def test_number_of_rooted_trees_is_oeis_a000081():
    assert [len(trees(p)) for p in range(1, 11)] == [1, 1, 2, 4, 9, 20, 48, 115, 286, 719]
    assert len(trees_up_to(8)) == 200
    for p in range(1, 9):
        assert len(set(trees(p))) == len(trees(p))  # each tree once
        assert all(tree_order(t) == p for t in trees(p))


def test_densities_of_small_trees():
    leaf = ()
    assert density(leaf) == 1
    assert density((leaf,)) == 2
    assert density((leaf, leaf)) == 3
    assert density(((leaf,),)) == 6
    assert tree_str(((leaf,), leaf)) in {"[[τ], τ]", "[τ, [τ]]"}
    # the tall tree [[[[[τ]]]]] with 6 nodes has γ = 6!
    tall = leaf
    for _ in range(5):
        tall = (tall,)
    assert density(tall) == 720


def _hand_written_conditions(A, b):
    """Hairer–Nørsett–Wanner I, Table II.2.2: {γ: Φ} for the trees of order ≤ 4."""
    c = A.sum(axis=1)
    return {
        (1, 1): b.sum(),
        (2, 2): b @ c,
        (3, 3): b @ c**2,
        (3, 6): b @ A @ c,
        (4, 4): b @ c**3,
        (4, 8): b @ (c * (A @ c)),
        (4, 12): b @ A @ c**2,
        (4, 24): b @ A @ A @ c,
    }


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_elementary_weights_match_the_hand_written_conditions(s, seed):
    rng = np.random.default_rng(seed)
    A = rng.integers(-5, 6, size=(s, s)) / rng.integers(1, 9, size=(s, s))
    b = rng.integers(-5, 6, size=s) / 7
    b[-1] = 1 - b[:-1].sum()
    A_q = [[Fraction(x).limit_denominator(1000) for x in r] for r in A]
    b_q = [Fraction(x).limit_denominator(1000) for x in b]
    tab = ButcherTableau("rand", A=A_q, b=b_q, c=[sum(r) for r in A_q], order=1)
    expected = _hand_written_conditions(tab.A, tab.b)
    got = {
        (tree_order(t), density(t)): float(r) + 1 / density(t) for t, r in order_conditions(tab, 4)
    }
    assert set(got) == set(expected)
    for key, phi in expected.items():
        assert got[key] == pytest.approx(phi, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_order_conditions_hold_to_the_declared_order(name):
    tab = tableau(name)
    assert verify_order(tab) == tab.order


@pytest.mark.parametrize("name", [m for m in ALL if tableau(m).b_hat is not None])
def test_embedded_solutions_have_the_declared_order(name):
    tab = tableau(name)
    assert verify_order(tab, weights="b_hat") == tab.embedded_order
    if tab.b_hat2 is not None:
        assert verify_order(tab, weights="b_hat2") == tab.embedded_order2


@pytest.mark.parametrize("name", [m for m in ALL if tableau(m).dense is not None])
def test_own_continuous_extensions_have_the_declared_order(name):
    tab = tableau(name)
    assert verify_dense_order(tab) == tab.dense.order


def test_dop853_dense_output_is_order_7_only_with_its_extra_stages():
    tab = tableau("dop853")
    d = tab.dense
    assert d.n_extra == 3 and d.P.shape == (16, 7)
    np.testing.assert_allclose(d.extra_c, [0.1, 0.2, 7 / 9], rtol=1e-15)


def test_rational_methods_satisfy_their_conditions_exactly():
    conds = order_conditions("rk4")
    assert len(conds) == 8
    assert all(isinstance(r, Fraction) and r == 0 for _, r in conds)
    # the fifth-order conditions are not all met, with exact nonzero residuals
    fifth = [r for t, r in order_conditions("rk4", 5) if tree_order(t) == 5]
    assert len(fifth) == 9 and any(r != 0 for r in fifth)
    assert [c.order for c in conds] == [1, 2, 3, 3, 4, 4, 4, 4]
    assert sorted(c.gamma for c in conds if c.order == 4) == [4, 8, 12, 24]


def test_a_perturbed_coefficient_lowers_the_order():
    rk4 = tableau("rk4")
    A = [list(r) for r in rk4.A_exact]
    # shift weight from a_42 to a_43: c, Σbc, Σb(Ac), Σb(Ac²) are unchanged (c_2 = c_3)
    # but Σ b A A c = 1/24 is broken, so the order drops to exactly 3
    A[3][1], A[3][2] = A[3][1] + Fraction(1, 1000), A[3][2] - Fraction(1, 1000)
    bad = ButcherTableau("rk4'", A=A, b=rk4.b_exact, c=rk4.c_exact, order=4)
    assert verify_order(bad) == 3
    b = list(rk4.b_exact)
    # moving 1e-9 of weight between the stages with c = 1/2 keeps Σbc and Σbc² but
    # breaks Σ b A c = 1/6 (exact arithmetic sees a change of 1e-9)
    b[1], b[2] = b[1] + Fraction(1, 10**9), b[2] - Fraction(1, 10**9)
    assert verify_order(ButcherTableau("rk4''", A=rk4.A_exact, b=b, c=rk4.c_exact, order=4)) == 2


def test_decimal_tableaus_are_checked_to_their_precision():
    # DOP853's 30-digit coefficients: order 8 holds to ~28 digits, order 9 fails grossly
    conds = order_conditions("dop853", 9)
    worst8 = max(abs(float(r)) for t, r in conds if tree_order(t) <= 8)
    worst9 = max(abs(float(r)) for t, r in conds if tree_order(t) == 9)
    assert worst8 < 1e-24 < 1e-6 < worst9


@pytest.mark.parametrize(
    "name, q",
    [
        ("gauss_legendre4", 2),
        ("gauss_legendre6", 3),
        ("radau_iia3", 2),
        ("radau_iia5", 3),
        ("lobatto_iiia4", 3),
        ("lobatto_iiic4", 2),
        ("implicit_midpoint", 1),
        ("trapezoid", 2),
        ("rk4", 1),
        ("dopri5", 1),
        ("kvaerno3", 2),
        ("trbdf2", 2),
    ],
)
def test_stage_orders_of_collocation_and_other_families(name, q):
    # Hairer & Wanner II, Sec. IV.5: Gauss s, Radau IIA s, Lobatto IIIA s, IIIC s − 1
    assert stage_order(name) == q


@settings(max_examples=25, deadline=None)
@given(st.fractions(min_value=Fraction(1, 10), max_value=3, max_denominator=50))
def test_runge_family_is_exactly_second_order(alpha):
    tab = ButcherTableau(
        "runge",
        A=[[0, 0], [alpha, 0]],
        b=[1 - 1 / (2 * alpha), 1 / (2 * alpha)],
        c=[0, alpha],
        order=2,
    )
    assert verify_order(tab) == 2


def test_weights_argument_is_validated():
    with pytest.raises(InputError, match="`weights` must be 'b', 'b_hat' or 'b_hat2', got 'c'"):
        verify_order("rk4", weights="c")
    with pytest.raises(InputError, match="has no embedded weights `b_hat`"):
        verify_order("rk4", weights="b_hat")
    with pytest.raises(InputError, match="has no second embedded weights `b_hat2`"):
        order_conditions("dopri5", weights="b_hat2")
    assert verify_dense_order("rk4") == -1
