"""Networks as discretizations: ResNet, RNN, Neural ODE, ODE-RNN and latent ODE.

The same vector field stepped by different schemes is a ResNet (forward Euler
over depth), an LM-ResNet (a linear multistep scheme over depth), an RNN (a driven
ODE stepped once per input) or a Neural ODE (the adaptive solve).  Every model here
is a field plus a scheme plus a grid, built on :func:`odenet.step` and
:func:`odenet.solve`, never a new integrator.
"""

from odenet.models.convert import (
    discretization_gap,
    lm_resnet_to_neural_ode,
    neural_ode_to_lm_resnet,
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
from odenet.models.lm_resnet import LMResNet, lm_polynomials
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
    "LMResNet",
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
    "lm_polynomials",
    "lm_resnet_to_neural_ode",
    "neural_ode_to_lm_resnet",
    "neural_ode_to_resnet",
    "resnet_to_neural_ode",
    "spectral_normalize",
    "zero_init_",
]
