"""Models under bad input: every wrong width, dtype, type or length is a typed error.

Each case is checked two ways: the error is a :class:`ModelInputError` (an
``OdenetError`` and a ``ValueError``) whose message names the argument, what was
received and the fix; and the matching *good* input runs, so the check is not
refusing everything.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from odenet import OdenetError
from odenet.batch import IrregularBatch
from odenet.models import ODERNN, RNN, Autonomous, LatentODE, MLPField, NeuralODE, ResNet
from odenet.models.fields import ModelInputError, field_width

T = torch.linspace(0.0, 1.0, 3)


def batch(channels: int, dtype=torch.float32) -> IrregularBatch:
    g = torch.Generator().manual_seed(0)
    times = [torch.tensor([0.0, 0.4, 1.0], dtype=dtype), torch.tensor([0.0, 0.7], dtype=dtype)]
    values = [torch.randn(len(t), channels, generator=g, dtype=dtype) for t in times]
    return IrregularBatch.from_lists(times, values)


def models():
    torch.manual_seed(0)
    return {
        "NeuralODE": NeuralODE(MLPField(3, 8), method="rk4", step_size=0.25),
        "ResNet": ResNet(MLPField(3, 8), depth=4),
        "RNN": RNN(2, 5),
        "ODERNN": ODERNN(2, 4, 1),
        "LatentODE": LatentODE(2, 3, 4),
    }


M = models()

# (call with the bad input, argument named, phrase in the message, the good call)
CASES = [
    (
        "node-width",
        lambda: M["NeuralODE"](torch.randn(2, 4), T),
        "y0",
        "expects 3 state",
        lambda: M["NeuralODE"](torch.randn(2, 3), T),
    ),
    (
        "node-f64",
        lambda: M["NeuralODE"](torch.randn(2, 3, dtype=torch.float64), T),
        "y0",
        "float64 but this NeuralODE's parameters are float32",
        None,
    ),
    (
        "node-int",
        lambda: M["NeuralODE"](torch.ones(2, 3, dtype=torch.int64), T),
        "y0",
        "floating-point",
        None,
    ),
    ("node-numpy", lambda: M["NeuralODE"](np.zeros((2, 3)), T), "y0", "torch.as_tensor", None),
    (
        "resnet-width",
        lambda: M["ResNet"](torch.randn(2, 4)),
        "h",
        "expects 3 features",
        lambda: M["ResNet"](torch.randn(2, 3)),
    ),
    (
        "resnet-f64",
        lambda: M["ResNet"](torch.randn(2, 3, dtype=torch.float64)),
        "h",
        "model.double()",
        None,
    ),
    (
        "resnet-trajectory",
        lambda: M["ResNet"].trajectory(torch.randn(2, 5)),
        "h",
        "expects 3",
        lambda: M["ResNet"].trajectory(torch.randn(2, 3)),
    ),
    (
        "rnn-width",
        lambda: M["RNN"](torch.randn(2, 4, 3)),
        "xs",
        "expects 2 input channels",
        lambda: M["RNN"](torch.randn(2, 4, 2)),
    ),
    (
        "rnn-f64",
        lambda: M["RNN"](torch.randn(2, 4, 2, dtype=torch.float64)),
        "xs",
        "xs.to(torch.float32)",
        None,
    ),
    (
        "rnn-empty",
        lambda: M["RNN"](torch.randn(2, 0, 2)),
        "xs",
        "no time steps",
        lambda: M["RNN"](torch.randn(2, 1, 2)),
    ),
    (
        "rnn-empty-continuous",
        lambda: M["RNN"].continuous(torch.randn(2, 0, 2), T),
        "xs",
        "no time steps",
        lambda: M["RNN"].continuous(torch.randn(2, 2, 2), T, method="rk4", step_size=0.5),
    ),
    ("rnn-2d", lambda: M["RNN"](torch.randn(4, 2)), "xs", "[B, N, 2]", None),
    (  # a block past the last stepped on from t0 + layer·Δt
        "resnet-block-range",
        lambda: M["ResNet"].block(4, torch.randn(3, 3)),
        "layer",
        "0 … 3",
        lambda: M["ResNet"].block(3, torch.randn(3, 3)),
    ),
    (
        "rnn-h0-f64",
        lambda: M["RNN"](torch.randn(2, 4, 2), torch.zeros(2, 5, dtype=torch.float64)),
        "h0",
        "float64",
        lambda: M["RNN"](torch.randn(2, 4, 2), torch.zeros(2, 5)),
    ),
    (
        "rnn-h0-width",
        lambda: M["RNN"](torch.randn(2, 4, 2), torch.zeros(2, 6)),
        "h0",
        "expects 5 hidden units",
        None,
    ),
    (
        "odernn-width",
        lambda: M["ODERNN"](batch(3)),
        "batch",
        "3 channels",
        lambda: M["ODERNN"](batch(2)),
    ),
    (
        "latent-width",
        lambda: M["LatentODE"](batch(3)),
        "batch",
        "input_dim = 2",
        lambda: M["LatentODE"](batch(2)),
    ),
    (
        "latent-z0-f64",
        lambda: M["LatentODE"].decode(
            torch.zeros(2, 3, dtype=torch.float64), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
        ),
        "z0",
        "float64",
        lambda: M["LatentODE"].decode(torch.zeros(2, 3), torch.tensor([[0.0, 1.0], [0.0, 1.0]])),
    ),
    (
        "latent-z0-width",
        lambda: M["LatentODE"].decode(torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [0.0, 1.0]])),
        "z0",
        "expects 3 latent components",
        None,
    ),
]


@pytest.mark.parametrize(
    ("bad", "arg", "phrase", "good"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_model_input_is_a_typed_error_naming_the_argument(bad, arg, phrase, good):
    with pytest.raises(ModelInputError) as info:
        bad()
    err = info.value
    assert isinstance(err, OdenetError) and isinstance(err, ValueError)
    assert f"`{arg}`" in str(err) and phrase in str(err), str(err)
    if good is not None:
        out = good()
        assert torch.isfinite(out).all()


def test_float64_models_accept_float64_input_and_match_float32():
    torch.manual_seed(1)
    net32 = ResNet(MLPField(3, 8), depth=4)
    net64 = ResNet(MLPField(3, 8), depth=4)
    net64.load_state_dict(net32.state_dict())
    net64.double()
    x = torch.randn(5, 3)
    torch.testing.assert_close(net64(x.double()).float(), net32(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelInputError, match=r"model\.float\(\)"):
        net64(x)


def test_a_user_field_that_converts_its_input_is_not_second_guessed():
    class Casting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3).double()

        def forward(self, t, h):
            return self.lin(h.double()).to(h.dtype)

    assert field_width(Casting()) is None
    node = NeuralODE(Casting(), method="rk4", step_size=0.5)
    assert node(torch.zeros(2, 3), T).dtype == torch.float32


def test_field_width_reads_the_known_fields():
    assert field_width(MLPField(4, 8)) == 4
    assert field_width(Autonomous(nn.Sequential(nn.Linear(6, 6), nn.Tanh()))) == 6
    assert field_width(Autonomous(nn.Tanh())) is None


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(0, 6),
    ndim=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int32, torch.bool]),
)
def test_resnet_input_is_either_run_or_refused_with_a_typed_error(width, ndim, dtype):
    shape = (2,) * (ndim - 1) + (width,)
    x = torch.zeros(shape, dtype=dtype)
    try:
        out = M["ResNet"](x)
    except ModelInputError as e:
        assert "`h`" in str(e)
        assert not (width == 3 and dtype == torch.float32)  # good input is never refused
        return
    assert width == 3 and dtype == torch.float32 and out.shape == shape
