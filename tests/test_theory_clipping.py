"""Claim 7 (studies/theory/07_clipping.py): clipping keeps direction, bounds the step,
and turns divergent SGD on an exploding RNN into convergent SGD."""

import importlib
import math
import sys
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("07_clipping")
torch.set_num_threads(1)


@settings(max_examples=40, deadline=None)
@given(
    scale=st.floats(1e-4, 1e4),
    max_norm=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_clipping_is_a_rescaling_by_min_1_c_over_norm(scale, max_norm, seed):
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.float64)) for _ in range(2)]
    for p in ps:
        p.grad = scale * torch.randn(p.shape, generator=gen, dtype=torch.float64)
    raw = torch.cat([p.grad.flatten() for p in ps]).clone()
    study.clip_grad_norm(ps, max_norm)
    new = torch.cat([p.grad.flatten() for p in ps])
    expected = min(raw.norm().item(), max_norm)  # closed form
    assert math.isclose(new.norm().item(), expected, rel_tol=1e-9)
    cos = torch.dot(raw, new) / (raw.norm() * new.norm())
    assert abs(cos.item() - 1.0) < 1e-12


def test_clip_direction_table_has_unit_cosine_and_bounded_norm():
    d = study.clip_direction_check(n_grads=50, max_norm=1.0)
    assert (d.cosine - 1.0).abs().max() < 1e-6  # float32 gradients
    assert d.clipped_norm.max() <= 1.0 + 1e-5
    small = d.raw_norm < 1.0
    assert ((d.clipped_norm[small] - d.raw_norm[small]).abs() < 1e-5 * d.raw_norm[small]).all()


def test_clipping_turns_divergent_rnn_training_into_convergent():
    res = study.compute(quick=True)
    s = study.summarize(res).set_index("clipped")
    raw, clipped = s.loc[False], s.loc[True]
    # unclipped SGD on the exploding RNN: the loss blows up (non-finite or above its start)
    assert not math.isfinite(raw.final) or raw.final > raw.initial
    # the same SGD with norm clipping at 1: the loss falls below a fifth of its start
    assert clipped.final < 0.2 * clipped.initial
    assert math.isfinite(clipped.max_grad_norm)
