"""odenet: ODE integrators and neural networks as one thing.

A ResNet block, an RNN cell and one Runge–Kutta step are all a step map
``x_{n+1} = Φ_n(x_n)`` discretizing a vector field; odenet has one integrator
core, networks built from it, and one stability analyzer for both.
"""

from odenet._compat import odeint, odeint_adjoint
from odenet._controller import PIDController
from odenet._errors import (
    InputError,
    InvalidTableauError,
    MaxStepsError,
    NewtonConvergenceError,
    NonFiniteError,
    OdenetError,
    SolverError,
    StepSizeUnderflowError,
    UnknownMethodError,
    VectorFieldError,
)
from odenet._solution import Solution
from odenet._solve import solve, step
from odenet.tableaus import ButcherTableau, DenseOutput, methods, tableau

__version__ = "0.1.0"

__all__ = [
    "ButcherTableau",
    "DenseOutput",
    "InputError",
    "InvalidTableauError",
    "MaxStepsError",
    "NewtonConvergenceError",
    "NonFiniteError",
    "OdenetError",
    "PIDController",
    "Solution",
    "SolverError",
    "StepSizeUnderflowError",
    "UnknownMethodError",
    "VectorFieldError",
    "__version__",
    "methods",
    "odeint",
    "odeint_adjoint",
    "solve",
    "step",
    "tableau",
]
