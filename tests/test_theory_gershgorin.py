"""Claim 10 (studies/theory/10_gershgorin.py): Gershgorin discs certify an RNN fixed
point's stability without eigenvalues, and agree with the eigenvalues."""

import importlib
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("10_gershgorin")
torch.set_num_threads(1)


def test_gershgorin_certificate_is_sound_and_conservative():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = study.compute(quick=True)
    t = res.table
    assert (t.eigs_in_discs).all()  # Gershgorin's theorem, checked against np eigenvalues
    assert not (t.certified & ~t.stable).any()  # never certifies an unstable point
    assert (t.gershgorin_bound >= t.rate - 1e-12).all()  # the discs bound the spectrum
    s = study.summarize(res).set_index("kind")
    for kind in ("map", "flow"):
        assert s.loc[kind, "max_eps_certified"] >= 0.25
        assert s.loc[kind, "max_eps_certified"] < s.loc[kind, "max_eps_stable"]


def test_diagonal_coupling_discs_are_points_and_equal_the_eigenvalues():
    field = study.make_rnn(8, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp = study.analyze_case(field, "map")
    # J = diag(1 - h*^2) D: the discs have radius 0 and the centers are the eigenvalues
    assert np.allclose(fp.gershgorin_radii, 0.0)
    h = fp.point.detach().numpy()
    d = torch.diagonal(field.W.weight).detach().numpy()
    expected = np.sort((1 - h**2) * d)
    assert np.allclose(np.sort(fp.eigenvalues.real), expected, atol=1e-12)
    assert fp.certified
