"""Remedies (clipping, spectral normalisation, initialisation, zero-init) and every
error message of odenet.models."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from odenet import InputError, OdenetError
from odenet.batch import IrregularBatch
from odenet.models import (
    ODERNN,
    RNN,
    DrivenField,
    InputPath,
    LatentODE,
    LayerwiseField,
    MLPField,
    NeuralODE,
    ResNet,
    RNNField,
    SpectralNorm,
    clip_grad_norm,
    init_,
    spectral_normalize,
    zero_init_,
)

F64 = torch.float64


# --- gradient clipping -------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    max_norm=st.floats(1e-3, 1e3),
    scale=st.floats(1e-3, 1e3),
)
def test_clip_grad_norm_preserves_direction_and_caps_the_global_norm(seed, max_norm, scale):
    g = torch.Generator().manual_seed(seed)
    params = [torch.zeros(s, dtype=F64, requires_grad=True) for s in [(3, 4), (5,), (2, 2, 2)]]
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=F64)
    before = torch.cat([p.grad.flatten() for p in params]).clone()
    total = clip_grad_norm(params, max_norm)
    after = torch.cat([p.grad.flatten() for p in params])
    assert math.isclose(float(total), float(before.norm()), rel_tol=1e-12)
    cos = torch.dot(before, after) / (before.norm() * after.norm())
    assert abs(float(cos) - 1) < 1e-12
    assert float(after.norm()) <= max_norm * (1 + 1e-12) or torch.equal(after, before)
    if float(before.norm()) > max_norm:
        assert math.isclose(float(after.norm()), max_norm, rel_tol=1e-9)
    else:
        assert torch.equal(after, before)


def test_clip_grad_norm_of_float16_gradients_agrees_with_torch():
    # squares summed in float16 overflowed from |g| ≈ 256: a norm of 3e4 came back inf
    # and every gradient was zeroed
    grads = [
        torch.full((9,), 1e4, dtype=torch.float16),
        torch.full((4,), 10.0, dtype=torch.float16),
    ]
    ours = [torch.zeros_like(g, requires_grad=True) for g in grads]
    theirs = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for a, b, g in zip(ours, theirs, grads):
        a.grad, b.grad = g.clone(), g.clone()
    total = clip_grad_norm(ours, 1.0)
    ref = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert math.isclose(float(total), float(ref), rel_tol=1e-3)
    norm = math.sqrt(sum(float(a.grad.double().pow(2).sum()) for a in ours))
    assert math.isclose(norm, 1.0, rel_tol=2e-3)


# --- spectral normalisation --------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), m=st.integers(1, 12))
def test_spectral_normalize_gives_unit_largest_singular_value(seed, n, m):
    torch.manual_seed(seed)
    lin = spectral_normalize(nn.Linear(m, n).double())
    sigma = torch.linalg.matrix_norm(lin.weight.detach(), ord=2)
    assert abs(float(sigma) - 1) < 1e-3


def test_spectral_normalize_converges_when_the_top_singular_values_are_close():
    # σ₁ = 0.8817, σ₂ = 0.8757: 50 plain power iterations leave σ_max ≈ 1.004
    torch.manual_seed(0)
    W = nn.Linear(7, 8).double().weight.detach()
    s = torch.linalg.svdvals(W)
    assert float(s[1] / s[0]) > 0.99
    for exact in (False, True):
        lin = nn.Linear(7, 8).double()
        with torch.no_grad():
            lin.weight.copy_(W)
        spectral_normalize(lin, exact=exact)
        sigma = torch.linalg.matrix_norm(lin.weight.detach(), ord=2)
        assert abs(float(sigma) - 1) < 1e-6


def test_spectral_norm_tracks_the_weight_during_training():
    torch.manual_seed(0)
    lin = spectral_normalize(nn.Linear(6, 6).double(), n_power_iterations=1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.05)
    x = torch.randn(16, 6, dtype=F64)
    for _ in range(15):
        opt.zero_grad()
        y = lin(x)
        # the matrix this forward used: one warm-started power iteration per call
        W = lin.weight.detach()
        assert abs(float(torch.linalg.matrix_norm(W, ord=2)) - 1) < 1e-3
        y.pow(2).sum().backward()  # reading the weight twice did not break the graph
        opt.step()
    # the raw matrix did move: the normalisation is not a frozen copy
    raw = lin.parametrizations.weight.original.detach()
    assert abs(float(torch.linalg.matrix_norm(raw, ord=2)) - 1) > 1e-2


def test_spectrally_normalized_field_is_one_lipschitz_so_euler_blocks_are_bounded():
    torch.manual_seed(1)
    f = MLPField(4, 16, depth=3).double()
    for lin in f.modules():
        if isinstance(lin, nn.Linear):
            spectral_normalize(lin)
    x, y = torch.randn(200, 4, dtype=F64), torch.randn(200, 4, dtype=F64)
    t = torch.tensor(0.0, dtype=F64)
    f.eval()  # the power iterations have converged at registration
    with torch.no_grad():
        ratio = (f(t, x) - f(t, y)).norm(dim=1) / (x - y).norm(dim=1)
        net = ResNet(f, 8, "euler", horizon=1.0)
        growth = (net(x) - net(y)).norm(dim=1) / (x - y).norm(dim=1)
    assert float(ratio.max()) <= 1 + 1e-3  # tanh is 1-Lipschitz, each map has σ_max = 1
    assert float(growth.max()) <= (1 + 1 / 8 * (1 + 1e-3)) ** 8  # ≤ e^T


# --- initialisation ----------------------------------------------------------------


def test_orthogonal_init_gives_all_singular_values_equal_to_the_gain():
    torch.manual_seed(2)
    f = init_(MLPField(8, 8, depth=3).double(), "orthogonal", gain=0.7)
    for lin in f.modules():
        if isinstance(lin, nn.Linear):
            s = torch.linalg.svdvals(lin.weight.detach())
            torch.testing.assert_close(s, torch.full_like(s, 0.7), rtol=1e-12, atol=1e-12)
            assert torch.equal(lin.bias, torch.zeros_like(lin.bias))


@pytest.mark.parametrize(
    "scheme, variance",
    [("he", lambda fi, fo: 2 / fi), ("xavier", lambda fi, fo: 2 / (fi + fo))],
)
def test_he_and_xavier_init_have_their_variances(scheme, variance):
    torch.manual_seed(3)
    lin = init_(nn.Linear(400, 300).double(), scheme)
    var = float(lin.weight.detach().var())
    # 120 000 samples: the sample variance is within a few percent
    assert abs(var / variance(400, 300) - 1) < 0.03


def test_zero_init_makes_every_scheme_the_identity_and_still_trains():
    torch.manual_seed(4)
    f = zero_init_(MLPField(3, 8, time_dependent=True).double())
    h = torch.randn(5, 3, dtype=F64)
    for method in ["euler", "rk4", "backward_euler"]:
        assert torch.equal(ResNet(f, 4, method, horizon=1.0)(h), h)
    assert torch.equal(NeuralODE(f).flow(h, 0.0, 1.0), h)
    ResNet(f, 4, "euler")(h).pow(2).sum().backward()
    assert f.output_layer.weight.grad.abs().sum() > 0
    lw = zero_init_(LayerwiseField.mlp(3, 8, 2).double())
    assert torch.equal(ResNet(lw, 2)(h), h)


def test_layer_norm_inside_the_field_normalises_hidden_activations():
    torch.manual_seed(5)
    f = MLPField(3, 32, layer_norm=True, activation="identity").double()
    assert any(isinstance(m, nn.LayerNorm) for m in f.modules())
    h = 1e6 * torch.randn(4, 3, dtype=F64)  # huge inputs: the normalised layer stays O(1)
    pre = f.net[1](f.net[0](h))
    torch.testing.assert_close(pre.mean(-1), torch.zeros(4, dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(
        pre.std(-1, unbiased=False), torch.ones(4, dtype=F64), atol=1e-6, rtol=0
    )


# --- every error message ----------------------------------------------------------


def small_batch(D=2):
    return IrregularBatch.from_lists(
        [torch.tensor([0.0, 1.0]), torch.tensor([0.5])],
        [torch.ones(2, D), torch.ones(1, D)],
    )


ERRORS = [
    (lambda: MLPField(3, 8, activation="swish7"), "`activation` must be one of"),
    (lambda: MLPField(0, 8), r"`dim` must be an integer ≥ 1, got 0"),
    (lambda: MLPField(3, 8, depth=1.5), r"`depth` must be an integer ≥ 1"),
    (lambda: LayerwiseField([]), "`pieces` is empty"),
    (lambda: LayerwiseField.from_residual_blocks([]), "`blocks` is empty"),
    (
        lambda: LayerwiseField.from_residual_blocks([nn.Identity()], horizon=0),
        "`horizon` must be a positive finite number, got 0",
    ),
    (lambda: LayerwiseField([MLPField(2, 2)], horizon=-1.0), "`horizon` must be a positive"),
    (lambda: LayerwiseField.mlp(2, 2, 0), r"`n_layers` must be an integer ≥ 1"),
    (lambda: InputPath(torch.arange(3.0), torch.zeros(1, 3, 2), "cubic"), "`interpolation`"),
    (lambda: InputPath(torch.arange(3.0), torch.zeros(3, 2)), r"`values` must be \[B, N"),
    (lambda: InputPath(torch.arange(4.0), torch.zeros(1, 3, 2)), r"`times` must be \[N\]"),
    (
        lambda: InputPath(torch.tensor([0.0, 2.0, 1.0]), torch.zeros(1, 3, 2)),
        "strictly increasing",
    ),
    (lambda: RNNField(2, 3)(0.0, torch.zeros(1, 3)), "has no input path"),
    (lambda: ResNet(3, 4), "`field` must be callable"),
    (lambda: ResNet(MLPField(2, 2), 0), r"`depth` must be an integer ≥ 1"),
    (lambda: ResNet(MLPField(2, 2), 2, horizon=0.0), "`horizon` must be a positive"),
    (lambda: ResNet(LayerwiseField.mlp(2, 2, 3), 4), "not a multiple of the field's n_layers"),
    (
        lambda: ResNet(LayerwiseField.mlp(2, 2, 2, horizon=2.0), 2, horizon=1.0),
        "use the same `horizon` and `t0`",
    ),
    (lambda: NeuralODE("f"), "`field` must be callable"),
    (lambda: NeuralODE(MLPField(2, 2)).flow(torch.zeros(1, 2), 1.0, 1.0), "must be finite and"),
    (lambda: RNN(2, 3, dt=0), "`dt` must be a positive"),
    (lambda: RNN(2, 3, interpolation="spline"), "`interpolation` must be 'hold' or 'linear'"),
    (lambda: RNN(2, 3, field=MLPField(3, 3)), "`field` must be a DrivenField"),
    (lambda: RNN(2, 3)(torch.zeros(1, 4, 5)), r"`xs` must be \[B, N, 2\]"),
    (lambda: RNN(2, 3)(torch.zeros(1, 4, 2), torch.zeros(2, 3)), r"`h0` must be \[1, 3\]"),
    (lambda: ODERNN(2, 4, 1)(torch.zeros(2, 3)), "must be an odenet.batch.IrregularBatch"),
    (lambda: ODERNN(3, 4, 1)(small_batch()), "has 2 channels but the model was built with"),
    (
        lambda: ODERNN(2, 4, 1).predict(small_batch(), torch.tensor([2.0, 3.0])),
        r"must be a \[B, Q\] tensor",
    ),
    (
        lambda: ODERNN(2, 4, 1).predict(small_batch(), torch.tensor([[2.0], [3.0], [4.0]])),
        "has 3 rows but the batch has 2 samples",
    ),
    (
        lambda: ODERNN(2, 4, 1).predict(small_batch(), torch.tensor([[3.0, 2.0], [3.0, 4.0]])),
        "strictly increasing along each row",
    ),
    (
        lambda: ODERNN(2, 4, 1).predict(small_batch(), torch.tensor([[0.5], [3.0]])),
        "must start after each sample's last observation time; sample 0 has 0.5 vs 1",
    ),
    (lambda: LatentODE(2, 2, 4, obs_std=0.0), "`obs_std` must be a positive"),
    (lambda: LatentODE(2, 2, 4).decode(torch.zeros(2, 3), torch.zeros(2, 2)), r"`z0` must be"),
    (lambda: LatentODE(2, 2, 4).decode(torch.zeros(2, 2), torch.zeros(3, 2)), r"`times` must"),
    (lambda: LatentODE(2, 2, 4).elbo(small_batch(), n_samples=0), "`n_samples` must be"),
    (
        lambda: LatentODE(2, 2, 4).sample_predictions(
            small_batch(), torch.tensor([[0.0, 1.0], [0.7, 1.0]])
        ),
        "either start at every sample's first time t0 or after it",
    ),
    (
        lambda: LatentODE(2, 2, 4).sample_predictions(
            small_batch(), torch.tensor([[-1.0, 1.0], [0.7, 1.0]])
        ),
        "must start at or after each sample's first time t0; sample 0",
    ),
    (lambda: clip_grad_norm([], -1.0), "`max_norm` must be a positive"),
    (lambda: SpectralNorm((2, 2))(torch.zeros(2, 2, 2)), "SpectralNorm acts on a matrix"),
    (lambda: spectral_normalize(nn.Conv1d(1, 1, 3)), "must be a 2-D weight"),
    (lambda: spectral_normalize(nn.Linear(2, 2), warmup_iterations=-1), "`warmup_iterations`"),
    (lambda: init_(nn.Linear(2, 2), "lecun"), "`scheme` must be one of"),
    (lambda: zero_init_(nn.Tanh()), "has no nn.Linear to zero-initialise"),
]


@pytest.mark.parametrize("make, match", ERRORS, ids=[m for _, m in ERRORS])
def test_error_messages_name_the_argument_and_the_fix(make, match):
    with pytest.raises(InputError, match=match) as info:
        make()
    assert isinstance(info.value, OdenetError) and isinstance(info.value, ValueError)


def test_driven_field_subclass_must_implement_drive():
    class Bare(DrivenField):
        pass

    with pytest.raises(NotImplementedError):
        Bare().bind(lambda t: torch.zeros(1, 1))(0.0, torch.zeros(1, 1))


def test_spectral_norm_lags_a_large_weight_change_as_documented():
    # the docstring's numbers: power iteration gives a lower bound of σ_max, so the
    # normalised norm overshoots 1 after a large change and settles within a few calls
    import itertools

    from odenet.models.remedies import spectral_normalize

    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 16).double()
    spectral_normalize(lin)
    assert abs(torch.linalg.matrix_norm(lin.weight, 2).item() - 1) < 1e-10
    with torch.no_grad():
        lin.parametrizations.weight.original.add_(torch.randn(16, 16, dtype=torch.float64))
    norms = [torch.linalg.matrix_norm(lin.weight, 2).item() for _ in range(5)]
    assert norms[0] > 1.1 and all(a > b > 1 for a, b in itertools.pairwise(norms))
    assert norms[-1] < 1.01
