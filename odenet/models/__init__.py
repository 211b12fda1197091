"""Networks as discretizations: ResNet, RNN, Neural ODE, ODE-RNN and latent ODE.

The same vector field stepped by different schemes is a ResNet (forward Euler
over depth), an RNN (a driven ODE stepped once per input) or a Neural ODE (the
adaptive solve).  Every model here is a field plus a scheme plus a grid, built on
:func:`odenet.step` and :func:`odenet.solve`, never a new integrator.
"""

from odenet.models.fields import (
    DrivenField,
    InputPath,
    LayerwiseField,
    MLPField,
    RNNField,
)
from odenet.models.odernn import ODERNN, LatentODE

__all__ = [
    "ODERNN",
    "DrivenField",
    "InputPath",
    "LatentODE",
    "LayerwiseField",
    "MLPField",
    "RNNField",
]
