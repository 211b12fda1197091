"""Batches: shape laws, per-sample time grids, and linear problems against matrix_exp."""

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

import odenet

D = torch.float64


def field(t, y):
    # a nonlinear, non-autonomous field that acts elementwise on any shape; with
    # per-sample grids t is [B] and broadcasts over each sample's state
    c = torch.cos(t).reshape(t.shape + (1,) * (y.dim() - t.dim()))
    return -0.5 * y + torch.sin(y) * c


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 3), min_size=0, max_size=3), T=st.integers(1, 4))
def test_output_shape_is_times_by_state_shape(shape, T):
    y0 = torch.ones(shape, dtype=D)
    t = torch.linspace(0, 1, T, dtype=D)
    sol = odenet.solve(field, y0, t, rtol=1e-4, atol=1e-6)
    assert sol.ys.shape == (T, *shape)
    assert torch.equal(sol.ys[0], y0)


@settings(max_examples=10, deadline=None)
@given(
    B=st.integers(1, 3),
    rest=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    T=st.integers(2, 4),
)
def test_per_sample_output_shape_is_batch_by_times_by_rest(B, rest, T):
    y0 = torch.ones(B, *rest, dtype=D)
    t = torch.linspace(0, 1, T, dtype=D).repeat(B, 1) * torch.arange(1, B + 1, dtype=D)[:, None]
    sol = odenet.solve(lambda t, y: -y, y0, t, rtol=1e-6, atol=1e-8)
    assert sol.ys.shape == (B, T, *rest)
    assert sol.stats["accepted"].shape == (B,)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 4))
def test_linear_systems_match_the_matrix_exponential(seed, n):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=D)
    y0 = torch.randn(n, generator=g, dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    sol = odenet.solve(lambda t, y: A @ y, y0, t, rtol=1e-10, atol=1e-12)
    exact = torch.stack([torch.linalg.matrix_exp(A * ti) @ y0 for ti in t])
    scale = 1 + exact.abs()
    assert ((sol.ys - exact).abs() / scale).max() < 1e-7


def irregular_grids(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(B, T, generator=g, dtype=D).cumsum(1)
    return t - t[:, :1] + torch.rand(B, 1, generator=g, dtype=D)  # different starts too


@pytest.mark.parametrize(
    "method, step_size", [("dopri5", None), ("bosh3", None), ("rk4", 0.05), ("radau_iia5", 0.1)]
)
def test_per_sample_grids_equal_solving_each_sample_alone(method, step_size):
    B, T = 4, 5
    t = irregular_grids(B, T)
    y0 = torch.randn(B, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    batched = odenet.solve(field, y0, t, method=method, step_size=step_size, rtol=1e-6, atol=1e-8)
    for b in range(B):
        alone = odenet.solve(
            field, y0[b], t[b], method=method, step_size=step_size, rtol=1e-6, atol=1e-8
        )
        # same steps, same numbers (per-sample error control is independent per row)
        assert torch.allclose(batched.ys[b], alone.ys, rtol=1e-12, atol=1e-12)
        assert int(batched.stats["accepted"][b]) == alone.stats["accepted"]


def test_per_sample_grids_may_run_in_opposite_directions():
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=D)
    y0 = torch.tensor([[1.0], [torch.e]], dtype=D)
    sol = odenet.solve(lambda t, y: y, y0, t, rtol=1e-10, atol=1e-12)
    assert torch.allclose(sol.ys[:, -1, 0], torch.tensor([torch.e, 1.0], dtype=D), rtol=1e-8)


def test_per_sample_field_receives_each_samples_own_time():
    seen = []

    def f(t, y):
        seen.append(t.clone())
        return torch.ones_like(y) * t[:, None]  # y' = t

    t = torch.tensor([[0.0, 1.0], [0.0, 2.0]], dtype=D)
    sol = odenet.solve(f, torch.zeros(2, 1, dtype=D), t, rtol=1e-10, atol=1e-12)
    assert all(s.shape == (2,) for s in seen)
    assert torch.allclose(sol.ys[:, -1, 0], torch.tensor([0.5, 2.0], dtype=D), rtol=1e-9)


def test_padding_does_not_take_a_row_past_what_its_data_reaches():
    """y' = y², y(0) = 1 blows up at t = 1.  Row 1's data ends at 0.5; padding it with
    0.5 + 1, 0.5 + 2 made the whole batch fail at t = 1 "of t_end = 2.5", a time the
    user never gave.  Truth: y = 1/(1 − t) at every valid time."""
    from odenet.batch import IrregularBatch

    D64 = torch.float64
    times = [torch.tensor([0.0, 0.2, 0.5, 0.9], dtype=D64), torch.tensor([0.0, 0.5], dtype=D64)]
    b = IrregularBatch.from_lists(times, [torch.ones(4, 1, dtype=D64), torch.ones(2, 1, dtype=D64)])
    assert float(b.times[1, -1]) < 0.5 + 1e-5
    sol = odenet.solve(
        lambda t, y: y**2, torch.ones(2, 1, dtype=D64), b.times, rtol=1e-8, atol=1e-10
    )
    exact = 1 / (1 - b.times[b.valid])
    torch.testing.assert_close(sol.ys.squeeze(-1)[b.valid], exact, rtol=1e-6, atol=0)
    for dtype in (torch.float32, torch.float64):  # padding stays strictly increasing
        far = IrregularBatch.from_lists(
            [torch.tensor([0.0, 1e6], dtype=dtype), torch.tensor([0.0], dtype=dtype)],
            [torch.ones(2, 1, dtype=dtype), torch.ones(1, 1, dtype=dtype)],
        )
        assert bool((far.times.diff(dim=1) > 0).all())


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_per_sample_rows_across_a_jump_are_each_row_alone(method):
    # y' = −k y before t = 0.5, −2k y after; the rows reach the jump in different
    # iterations.  A row that accepted while another jumped kept its step's *start*
    # slope as the next first stage: dopri5 7.2e-7 where the row alone gives 2.2e-8
    k = torch.tensor([[1.0], [7.0]], dtype=D)
    t = torch.tensor([[0.0, 1.0], [0.2, 1.0]], dtype=D)
    kw = dict(method=method, jump_t=torch.tensor([0.5], dtype=D), rtol=1e-8, atol=1e-12)

    def field(kk):
        return lambda s, y: torch.where((s > 0.5)[:, None], -2 * kk * y, -kk * y)

    both = odenet.solve(field(k), torch.ones(2, 1, dtype=D), t, **kw).ys[:, -1, 0]
    for b in range(2):
        alone = odenet.solve(field(k[b : b + 1]), torch.ones(1, 1, dtype=D), t[b : b + 1], **kw)
        exact = math.exp(-float(k[b]) * (0.5 - float(t[b, 0])) - 2 * float(k[b]) * 0.5)
        assert both[b].item() == pytest.approx(alone.ys[0, -1, 0].item(), rel=1e-12)
        assert both[b].item() == pytest.approx(exact, rel=3e-7)


_T2 = torch.tensor([0.0, 1.0])


@pytest.mark.parametrize(
    "times, values, match",
    [
        # one channel given as [T]: it was read as D = T and broadcast into [1, 3, 3]
        (
            [torch.tensor([0.0, 1.0, 2.0])],
            [torch.tensor([10.0, 20.0, 30.0])],
            r"`values\[0\]` has shape \(3,\); expected \[T_b, D\] = \[3, D\].*unsqueeze",
        ),
        (
            [_T2, _T2],
            [torch.ones(2, 1), torch.ones(2, 2)],
            r"`values\[1\]` has shape \(2, 2\); expected \[T_b, D\] = \[2, 1\]",
        ),
        (
            [_T2, _T2],
            [torch.ones(2, 1), torch.ones(1, 1)],
            r"`values\[1\]` has shape \(1, 1\); expected \[T_b, D\] = \[2, 1\]",
        ),
        (
            [_T2, torch.tensor([])],
            [torch.ones(2, 1), torch.ones(0, 1)],
            r"`times\[1\]` has shape \(0,\).*at least one time",
        ),
    ],
)
def test_from_lists_refuses_rows_that_are_not_t_by_d_naming_the_row(times, values, match):
    from odenet.batch import IrregularBatch

    with pytest.raises(odenet.InputError, match=match):
        IrregularBatch.from_lists(times, values)


def test_from_lists_takes_integer_times_exactly_as_float64():
    """Integer times (timestamps, sample indices) were a raw TypeError; as float32 they
    would move 1_700_000_100 to 1_700_000_128: they become float64, exactly."""
    from odenet.batch import IrregularBatch

    times = [torch.tensor([1_700_000_000, 1_700_000_100]), torch.tensor([0, 5, 7])]
    b = IrregularBatch.from_lists(times, [torch.ones(2, 1), torch.ones(3, 1)])
    assert b.times.dtype == torch.float64
    assert b.times[0, :2].tolist() == [1_700_000_000.0, 1_700_000_100.0]
    assert b.times[1].tolist() == [0.0, 5.0, 7.0]


@pytest.mark.parametrize(
    "method, tight", [("bdf", 1e-8), ("ndf", 1e-8), ("radau_iia5", 1e-8), ("radau_iia3", 1e-5)]
)
def test_a_tight_row_batched_with_a_loose_one_is_as_accurate_as_alone(method, tight):
    """Robertson, a per-sample batch of two equal rows at rtol 1e-2 and 1e-8, against
    scipy's Radau at rtol 1e-12: the 1e-8 row's error is within 2× of the same row
    solved alone (bdf/ndf took κ and the Newton threshold from the largest rtol, and
    the tight row ended 47× less accurate batched: 7.5e-10 against 1.6e-11; radau_iia3's
    κ the same: at 1e-8 2.4e-10 against 4.4e-11)."""
    import numpy as np
    from scipy.integrate import solve_ivp

    def rob(t, y):
        a, b, c = y[..., 0], y[..., 1], y[..., 2]
        return torch.stack(
            [-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b * b, 3e7 * b * b], -1
        )

    T = np.array([0, 0.4, 4, 40, 400.0])

    def rob_np(t, y):
        return rob(t, torch.tensor(y, dtype=D)).numpy()

    ref = solve_ivp(rob_np, (0, 400), [1, 0, 0], method="Radau", rtol=1e-12, atol=1e-16, t_eval=T)
    ref = torch.tensor(ref.y.T, dtype=D)

    def err(ys):
        mask = ref.abs() > 1e-12
        return float(((ys - ref).abs() / ref.abs())[mask].max())

    y0 = torch.tensor([[1.0, 0, 0]] * 2, dtype=D)
    t = torch.tensor(np.stack([T, T]), dtype=D)
    alone = odenet.solve(rob, y0[:1], t[:1], method=method, rtol=tight, atol=1e-14)
    rtol = torch.tensor([[1e-2], [tight]], dtype=D)
    both = odenet.solve(rob, y0, t, method=method, rtol=rtol, atol=1e-14)
    assert both.success
    assert err(both.ys[1]) <= 2 * err(alone.ys[0]) + 1e-3 * tight


@pytest.mark.parametrize("method", ["radau_iia5", "bdf"])
def test_adaptive_implicit_rows_share_a_jacobian_but_keep_their_own_accuracy(method):
    """Point reactor kinetics (studies/benchmarks/stiff_holdout14.py), two per-sample
    rows, the second's initial state scaled by 0.9, against scipy's Radau at rtol 1e-12.
    The batch shares one Jacobian cache (a row whose Newton is slow refreshes every
    row's), so a row's steps differ from its solve alone (bdf: 747 against 761), but
    each row keeps its own accuracy: within 3× its error alone, and within rtol."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
    from stiff_holdout14_checks import batch_rows

    for r in batch_rows(method, rtol=1e-5):  # errors in units of rtol
        assert r["success"]
        assert r["batched"] <= max(3 * r["alone"], 0.01)
        assert r["batched"] <= 1
