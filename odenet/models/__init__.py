"""Networks as discretizations: ResNet, RNN, Neural ODE, ODE-RNN and latent ODE.

The same vector field stepped by different schemes is a ResNet (forward Euler
over depth), an RNN (a driven ODE stepped once per input) or a Neural ODE (the
adaptive solve).  Every model here is a field plus a scheme plus a grid, built on
:func:`odenet.step` and :func:`odenet.solve`, never a new integrator.
"""

from odenet.models.convert import (
    discretization_gap,
    neural_ode_to_resnet,
    resnet_to_neural_ode,
)
from odenet.models.fields import (
    Autonomous,
    DrivenField,
    InputPath,
    LayerwiseField,
    MLPField,
    ModelInputError,
    RNNField,
)
from odenet.models.neural_ode import NeuralODE
from odenet.models.odernn import ODERNN, LatentODE
from odenet.models.remedies import (
    SpectralNorm,
    clip_grad_norm,
    init_,
    spectral_normalize,
    zero_init_,
)
from odenet.models.resnet import ResNet
from odenet.models.rnn import RNN

__all__ = [
    "ODERNN",
    "RNN",
    "Autonomous",
    "DrivenField",
    "InputPath",
    "LatentODE",
    "LayerwiseField",
    "MLPField",
    "ModelInputError",
    "NeuralODE",
    "RNNField",
    "ResNet",
    "SpectralNorm",
    "clip_grad_norm",
    "discretization_gap",
    "init_",
    "neural_ode_to_resnet",
    "resnet_to_neural_ode",
    "spectral_normalize",
    "zero_init_",
]
