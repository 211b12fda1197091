"""Claims about the tableau data: invariants, derived structure, validation messages.

Every registered method is checked (one registry-driven parametrization), so adding
a method is adding data plus one row of ``EXPECTED`` below (its structure as stated
in the literature: the independent truth the derived flags are compared with).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import odenet
from odenet._errors import InvalidTableauError, UnknownMethodError
from odenet.tableaus import ButcherTableau, DenseOutput, methods, tableau

# name: (kind, FSAL, stiffly accurate, stages) as published
EXPECTED = {
    "euler": ("explicit", False, False, 1),
    "midpoint": ("explicit", False, False, 2),
    "heun": ("explicit", False, False, 2),
    "ralston": ("explicit", False, False, 2),
    "fehlberg2": ("explicit", False, False, 3),
    "rk3": ("explicit", False, False, 3),
    "heun3": ("explicit", False, False, 3),
    "ssprk3": ("explicit", False, False, 3),
    "rk4": ("explicit", False, False, 4),
    "rk38": ("explicit", False, False, 4),
    "bosh3": ("explicit", True, True, 4),
    "dopri5": ("explicit", True, True, 7),
    "tsit5": ("explicit", True, True, 7),
    "dop853": ("explicit", True, True, 13),
    "backward_euler": ("dirk", False, True, 1),
    "implicit_midpoint": ("dirk", False, False, 1),
    "trapezoid": ("dirk", True, True, 2),
    "sdirk2": ("dirk", False, True, 2),
    "trbdf2": ("dirk", True, True, 3),
    "kvaerno3": ("dirk", True, True, 4),
    "kvaerno5": ("dirk", True, True, 7),
    "sdirk4": ("dirk", True, True, 6),  # stage 0 is f(t0, y0), for the estimate
    "gauss_legendre4": ("implicit", False, False, 2),
    "gauss_legendre6": ("implicit", False, False, 3),
    "radau_iia3": ("implicit", False, True, 2),
    "radau_iia5": ("implicit", False, True, 3),
    "radau_iia9": ("implicit", False, True, 5),
    "lobatto_iiia4": ("implicit", True, True, 3),
    "lobatto_iiic4": ("implicit", False, True, 3),
}

ALL = methods()


def test_every_registered_method_has_an_expected_row():
    assert set(ALL) == set(EXPECTED)


@pytest.mark.parametrize("name", ALL)
def test_nodes_are_row_sums_and_weights_sum_to_one(name):
    tab = tableau(name)
    s = tab.stages
    assert tab.A.shape == (s, s) and tab.b.shape == (s,) and tab.c.shape == (s,)
    np.testing.assert_allclose(tab.A.sum(axis=1), tab.c, rtol=0, atol=1e-13)
    assert tab.b.sum() == pytest.approx(1.0, abs=1e-13)
    for w in (tab.b_hat, tab.b_hat2):
        if w is not None:
            assert w.shape == (s,)
            assert w.sum() == pytest.approx(1.0, abs=1e-13)
            assert not np.allclose(w, tab.b)  # an embedded pair, not a copy
    if tab.b_hat is not None:
        assert tab.is_adaptive and tab.embedded_order >= 1
        if tab.estimator_order is not None:  # a named estimator replaces b_hat's (milne)
            assert tab.error_order == tab.estimator_order
        elif tab.b_hat2 is None:
            assert tab.error_order == min(tab.order, tab.embedded_order)
        else:  # Hairer's combined |e5|²/sqrt(|e5|² + 0.01|e3|²) estimate: O(h^order)
            assert tab.error_order == tab.order - 1


@pytest.mark.parametrize("name", ALL)
def test_float_arrays_are_the_exact_coefficients_rounded(name):
    tab = tableau(name)
    A = np.array([[float(sympy.N(x, 30)) for x in r] for r in tab.A_exact])
    np.testing.assert_array_equal(tab.A, A)
    np.testing.assert_array_equal(tab.b, [float(sympy.N(x, 30)) for x in tab.b_exact])
    np.testing.assert_array_equal(tab.c, [float(sympy.N(x, 30)) for x in tab.c_exact])


@pytest.mark.parametrize("name", ALL)
def test_derived_structure_matches_the_literature(name):
    kind, fsal, stiffly_accurate, stages = EXPECTED[name]
    tab = tableau(name)
    assert tab.stages == stages
    assert tab.is_explicit == (kind == "explicit")
    assert tab.is_diagonally_implicit == (kind == "dirk")
    assert tab.is_fully_implicit == (kind == "implicit")
    assert tab.is_implicit == (kind != "explicit")
    assert tab.is_fsal == fsal
    assert tab.is_stiffly_accurate == stiffly_accurate
    assert name in repr(tab)


@pytest.mark.parametrize("name", ALL)
def test_reference_is_given_and_factories_are_cached(name):
    tab = tableau(name)
    assert tab.reference
    assert tableau(name) is tab
    assert tableau(tab) is tab
    assert tableau(name.upper()) is tab


@pytest.mark.parametrize(
    "alias, name",
    [
        ("rk45", "dopri5"),
        ("crank_nicolson", "trapezoid"),
        ("radau5", "radau_iia5"),
        ("gl6", "gauss_legendre6"),
        ("implicit_euler", "backward_euler"),
        ("hairer4", "sdirk4"),
    ],
)
def test_aliases_resolve(alias, name):
    assert tableau(alias) is tableau(name)


def test_unknown_method_lists_the_valid_names():
    with pytest.raises(
        UnknownMethodError, match=r"unknown method 'rk5'; valid names are: .*dop853.*tsit5"
    ):
        tableau("rk5")
    with pytest.raises(
        UnknownMethodError, match="must be a method name or a ButcherTableau, got int"
    ):
        tableau(4)
    with pytest.raises(UnknownMethodError, match="valid names are"):
        odenet.solve(lambda t, y: -y, np.ones(1), np.array([0.0, 1.0]), method="nope")


# --- validation -------------------------------------------------------------------------


def _euler(**kw):
    args = dict(A=[[0]], b=[1], c=[0], order=1)
    args.update(kw)
    return ButcherTableau("bad", **args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(A=[[0, 0], ["1/2", 0]], b=[0, 1], c=[0, "1/3"], order=2),
            r"row 1 of `A` sums to 0\.5.*c\[1\]",
        ),
        (dict(b=["1/2"]), r"weights `b` sum to 0\.5, not 1"),
        (dict(c=[0, 1]), r"`A` must be \[s, s\] and `c` \[s\]"),
        (dict(A=[[0, 0], [0]], b=[1, 0], c=[0, 0]), "rows of different lengths"),
        (dict(b=[[1]]), "must be a vector"),
        (dict(order=0), "`order` must be a positive integer, got 0"),
        (dict(order=1.5), "`order` must be a positive integer"),
        (dict(b_hat=["1/2"], embedded_order=1), r"embedded weights `b_hat` sum to 0\.5, not 1"),
        (dict(b_hat=[1, 0]), r"`b_hat` has 2 entries, expected 1"),
        (dict(b_hat=[1]), "`b_hat` given without `embedded_order`"),
        (dict(embedded_order=1), "`embedded_order` given without `b_hat`"),
        (dict(b_hat=[1], embedded_order=0), "`embedded_order` must be a positive integer"),
        (dict(b_hat2=[1], embedded_order2=1), "`b_hat2` given without `b_hat`"),
        (dict(A=[["x"]]), "could not read the coefficient 'x' as a real number"),
        (dict(A=[["1/0"]]), "could not read the coefficient '1/0'"),
        (dict(A=[[True]]), "a coefficient must be a number"),
        (
            dict(dense=DenseOutput(P=[[1], [0]], order=1)),
            r"dense output has 2 rows, expected s \+ extra stages = 1",
        ),
        (
            dict(dense=DenseOutput(P=[["1/2"]], order=1)),
            r"dense output weight b_0\(1\) = 0\.5 but it must equal b\[0\]",
        ),
        (dict(dense="hermite"), "`dense` must be an odenet.DenseOutput, got str"),
    ],
)
def test_invalid_tableaus_raise_with_a_message(kwargs, match):
    with pytest.raises(InvalidTableauError, match=match):
        _euler(**kwargs)


def test_invalid_dense_output_extra_stages():
    with pytest.raises(InvalidTableauError, match="give both `extra_A` and `extra_c`"):
        DenseOutput(P=[[1]], order=1, extra_A=[[0]])
    with pytest.raises(InvalidTableauError, match="`extra_A` has 1 rows but `extra_c` has 2"):
        DenseOutput(P=[[1]], order=1, extra_A=[[0, 0]], extra_c=[0, 1])
    with pytest.raises(
        InvalidTableauError, match=r"row 0 of `extra_A` sums to 0\.5.*extra_c\[0\] = 1"
    ):
        DenseOutput(P=[[1]], order=1, extra_A=[["1/2", 0]], extra_c=[1])
    d = DenseOutput(P=[[1], [0]], order=1, extra_A=[["1/2", 0]], extra_c=["1/2"])
    with pytest.raises(
        InvalidTableauError, match=r"`extra_A` must be \[E, s \+ E\] = \[1, 2\], got \[1, 3\]"
    ):
        _euler(dense=DenseOutput(P=[[1], [0]], order=1, extra_A=[["1/2", 0, 0]], extra_c=["1/2"]))
    assert _euler(dense=d).dense.n_extra == 1


def test_decimal_coefficients_are_compared_to_their_published_precision():
    # a 17-digit float rounding of 1/3 is accepted as a node ...
    tab = ButcherTableau("f", A=[[0, 0], [1 / 3, 0]], b=[0, 1], c=[0, "1/3"], order=1)
    assert tab.c[1] == 1 / 3
    # ... a 30-digit decimal is held to 30 digits: an error in the 20th digit is caught
    good = "0.333333333333333333333333333333"
    bad = "0.333333333333333333330000000000"
    ButcherTableau("d", A=[[0, 0], [good, 0]], b=[0, 1], c=[0, "1/3"], order=1)
    with pytest.raises(InvalidTableauError, match="row 1 of `A`"):
        ButcherTableau("d", A=[[0, 0], [bad, 0]], b=[0, 1], c=[0, "1/3"], order=1)


def test_surd_coefficients_are_compared_exactly():
    g = "1 - sqrt(2)/2"
    tab = ButcherTableau("s", A=[[g, 0], ["sqrt(2)/2", g]], b=["sqrt(2)/2", g], c=[g, 1], order=2)
    assert tab.is_stiffly_accurate
    # an exact rational 16 digits close to √2/2 is not √2/2
    near = "7071067811865476/10000000000000000"
    with pytest.raises(InvalidTableauError, match="row 1"):
        ButcherTableau("s", A=[[g, 0], [near, g]], b=["sqrt(2)/2", g], c=[g, 1], order=2)


# --- laws -------------------------------------------------------------------------------

fractions = st.fractions(min_value=-3, max_value=3, max_denominator=20)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 4).flatmap(
        lambda s: st.tuples(
            st.just(s),
            st.lists(fractions, min_size=s * s, max_size=s * s),
            st.lists(fractions, min_size=s - 1, max_size=s - 1),
            st.booleans(),
        )
    )
)
def test_any_consistent_rational_tableau_is_accepted_and_classified(data):
    s, entries, bfree, implicit = data
    A = [
        [entries[i * s + j] if (j < i or (implicit and j == i)) else Fraction(0) for j in range(s)]
        for i in range(s)
    ]
    c = [sum(r, Fraction(0)) for r in A]
    b = [*bfree, 1 - sum(bfree, Fraction(0))]
    tab = ButcherTableau("random", A=A, b=b, c=c, order=1)
    has_diag = any(A[i][i] != 0 for i in range(s))
    assert tab.is_explicit == (not has_diag)
    assert tab.is_diagonally_implicit == has_diag
    assert not tab.is_fully_implicit
    np.testing.assert_allclose(tab.A, np.array(A, dtype=float), rtol=1e-15)
    # moving one node off its row sum is always caught
    c_bad = list(c)
    c_bad[-1] += Fraction(1, 7)
    with pytest.raises(InvalidTableauError, match=f"row {s - 1} of `A`"):
        ButcherTableau("random", A=A, b=b, c=c_bad, order=1)
