"""The third stiff hold-out set (studies/benchmarks/stiff_holdout3.py): its problem
definitions against independent truths (the Bari test set's published end values, finite
differences of the numpy twin), and a cheap cell of issue 14's must-hold."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
import stiff_holdout3 as H3
from stiff_holdout import both_fields, mixed_error, scipy_end

import odenet


@pytest.mark.parametrize(("name", "rtol", "bound"), [("beam", 1e-6, 1e-3), ("medakzo", 1e-6, 1e-5)])
def test_beam_and_medakzo_reach_the_published_end_values(name, rtol, bound):
    # typed in from the Fortran: a wrong sign, index or coefficient moves the end state
    # far beyond scipy Radau's error at this rtol (measured: beam 5.9e-5, medakzo 9.8e-7)
    p = H3.get(name)
    kw = {"jac_sparsity": p.jac_sparsity} if p.jac_sparsity is not None else {}
    assert mixed_error(p, scipy_end(p, rtol, **kw), H3.stiff_holdout.PUBLISHED[name]) < bound


@pytest.mark.parametrize("name", list(H3.HOLDOUT3))
def test_the_torch_field_is_the_numpy_field(name):
    # scipy's references use f_numpy, odenet's solves use f: they must be one problem
    ours, theirs = both_fields(H3.get(name))
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-13 * np.abs(theirs).max())


def _jacobian(p, t, y):
    return torch.func.jacrev(lambda z: p.f(torch.tensor(t, dtype=torch.float64), z))(
        torch.as_tensor(y)
    ).numpy()


def test_ringmod_jacobian_is_the_circuit_equations():
    # RINGMOD's published value needs minutes of scipy Radau (the full span [0, 1e-3]
    # at rtol 1e-6: 118 s, error 6.3e-6 against it, measured once); here its
    # coefficients are checked entry by entry against the test set's circuit equations
    # at the origin, where every diode conducts γδ (Bari ringmod description)
    p = H3.get("ringmod")
    J = _jacobian(p, 0.0, np.zeros(15))
    c, cs, cp, r, rp, lh, ls1, ls2 = 1.6e-8, 2e-12, 1e-8, 25e3, 50.0, 4.45, 2e-3, 5e-4
    g = 40.67286402e-9 * 17.7493332  # a diode's conductance at U = 0
    expected = {
        (0, 0): -1 / (r * c), (0, 7): 1 / c, (0, 9): -0.5 / c, (0, 10): 0.5 / c,
        (0, 13): 1 / c, (2, 2): -2 * g / cs, (2, 9): 1 / cs, (2, 4): g / cs,
        (2, 5): -g / cs, (6, 6): (-1 / rp - 4 * g) / cp, (7, 0): -1 / lh,
        (9, 0): 0.5 / ls2, (9, 2): -1 / ls2, (9, 9): -17.3 / ls2,
        (13, 13): -(50.0 + 36.3) / ls1, (14, 14): -(600.0 + 36.3) / ls1,
    }  # fmt: skip
    for (i, j), value in expected.items():
        assert J[i, j] == pytest.approx(value, rel=1e-12), (i, j)
    # rows 8 (y9' = −y2/L_h) and 3 (the mirror of row 2) have the same structure
    assert J[8, 1] == pytest.approx(-1 / lh) and J[3, 3] == pytest.approx(-2 * g / cs)


@pytest.mark.parametrize("name", list(H3.HOLDOUT3))
def test_the_autograd_jacobian_matches_finite_differences(name):
    # the solvers differentiate f by autograd; the scipy references difference f_numpy.
    # Central differences of f_numpy at a state off the origin (diodes, sines and the
    # reaction all nonlinear there) must match
    p = H3.get(name)
    rng = np.random.default_rng(0)
    y = p.y0 + 0.05 * rng.standard_normal(p.y0.size)
    t = 0.37 * p.span[1]
    J = _jacobian(p, t, y)
    fn = p.numpy_field()
    cols = rng.choice(p.y0.size, size=min(p.y0.size, 12), replace=False)
    for j in cols:
        h = 1e-6 * max(1.0, abs(y[j]))
        e = np.zeros_like(y)
        e[j] = h
        fd = (fn(t, y + e) - fn(t, y - e)) / (2 * h)
        scale = np.abs(J).max()
        np.testing.assert_allclose(J[:, j], fd, rtol=1e-5, atol=1e-6 * scale, err_msg=str(j))


def test_a_must_hold_cell_beam_radau_iia5_rtol_1e3():
    # issue 14: status ok means an error within 100·rtol, and within 10x scipy Radau's.
    # The reference is Hairer's published y(5) (scipy Radau at rtol 1e-12, the sweep's
    # reference, agrees with it to 7.6e-10 in this measure).  In the study the cell
    # passes: 74 steps, error 4.5e-3 against scipy Radau's 5.7e-3, so a failure status
    # here is a regression too
    p = H3.get("beam")
    rtol = 1e-3
    published = H3.stiff_holdout.PUBLISHED["beam"]
    sol = odenet.solve(
        p.f,
        p.y0_tensor(),
        torch.tensor(p.span, dtype=torch.float64),
        method="radau_iia5",
        rtol=rtol,
        atol=torch.as_tensor(p.atol_ratio * rtol),
        max_steps=2000,
        throw=False,
    )
    assert bool(sol.success), int(sol.status.flatten()[0])
    err = mixed_error(p, sol.ys[-1].numpy(), published)
    assert err <= 100 * rtol, err
    radau_err = mixed_error(p, scipy_end(p, rtol), published)
    assert err <= 10 * radau_err, (err, radau_err)
