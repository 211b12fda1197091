"""odenet: ODE integrators and neural networks as one thing.

A ResNet block, an RNN cell and one Runge–Kutta step are all a step map
``x_{n+1} = Φ_n(x_n)`` discretizing a vector field; odenet has one integrator
core, networks built from it, and one stability analyzer for both.
"""

from odenet._errors import (
    InputError,
    InvalidTableauError,
    MaxStepsError,
    NewtonConvergenceError,
    NonFiniteError,
    OdenetError,
    OdenetWarning,
    SolverError,
    StabilityWarning,
    StepSizeUnderflowError,
    StepSplitWarning,
    ToleranceWarning,
    UnknownMethodError,
    UnsupportedDerivativeError,
    VectorFieldError,
)

__version__ = "0.1.0"

# Everything that needs torch loads on first use (PEP 562): `import odenet` costs
# only the error classes, so the command line answers `--help` without torch.
_SUBMODULES = {
    "stability",
    "models",
    "sensitivity",
    "studies",
    "problems",
    "fit",
    "plotting",
    "order_conditions",
    "batch",
    "cli",
}
_LAZY = {
    "odeint": "odenet._compat",
    "odeint_adjoint": "odenet._compat",
    "odeint_event": "odenet._compat",
    "PIDController": "odenet._controller",
    "Event": "odenet._events",
    "Solution": "odenet._solution",
    "EventRecord": "odenet._solution",
    "Status": "odenet._solution",
    "solve": "odenet._solve",
    "step": "odenet._solve",
    "ButcherTableau": "odenet.tableaus",
    "DenseOutput": "odenet.tableaus",
    "methods": "odenet.tableaus",
    "tableau": "odenet.tableaus",
    "convergence": "odenet.studies",
    "work_precision": "odenet.studies",
    "ConvergenceResult": "odenet.studies",
    "WorkPrecisionResult": "odenet.studies",
    "Problem": "odenet.problems",
    "NeuralODE": "odenet.models",
    "ResNet": "odenet.models",
    "RNN": "odenet.models",
    "ODERNN": "odenet.models",
    "LatentODE": "odenet.models",
    "MLPField": "odenet.models",
    "IrregularBatch": "odenet.batch",
    "verify_order": "odenet.order_conditions",
    "VariableBDF": "odenet._bdf",
}


def __getattr__(name: str):
    import importlib

    if name in _SUBMODULES:
        value = importlib.import_module(f"odenet.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'odenet' has no attribute {name!r}")
    # cached: the next `odenet.step` (a ResNet calls it per layer) is a plain lookup
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | _SUBMODULES | set(_LAZY))


__all__ = [
    "ODERNN",
    "RNN",
    "ButcherTableau",
    "ConvergenceResult",
    "DenseOutput",
    "Event",
    "EventRecord",
    "InputError",
    "InvalidTableauError",
    "IrregularBatch",
    "LatentODE",
    "MLPField",
    "MaxStepsError",
    "NeuralODE",
    "NewtonConvergenceError",
    "NonFiniteError",
    "OdenetError",
    "OdenetWarning",
    "PIDController",
    "Problem",
    "ResNet",
    "Solution",
    "SolverError",
    "StabilityWarning",
    "Status",
    "StepSizeUnderflowError",
    "StepSplitWarning",
    "ToleranceWarning",
    "UnknownMethodError",
    "UnsupportedDerivativeError",
    "VariableBDF",
    "VectorFieldError",
    "WorkPrecisionResult",
    "__version__",
    "convergence",
    "methods",
    "odeint",
    "odeint_adjoint",
    "odeint_event",
    "solve",
    "step",
    "tableau",
    "verify_order",
    "work_precision",
]
