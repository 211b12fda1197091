"""Studies as data: convergence orders and work–precision, each a table you can save.

``convergence(problem, methods=..., n_steps=...)`` measures the error per (method,
step) and fits the observed order; ``work_precision(problem, methods=...)`` measures
error against function evaluations and wall time across tolerances or steps, beside
scipy and torchdiffeq.  Plots live in :mod:`odenet.plotting`; the ``odenet`` command
(:mod:`odenet.cli`) runs both from the terminal with resumable results folders.
"""

from odenet.studies.convergence import (
    DEFAULT_METHODS,
    NORMS,
    ConvergenceResult,
    OrderFit,
    convergence,
    fit_order,
    stage_order,
)
from odenet.studies.sweep import (
    CellStore,
    ExecutorError,
    ResultsError,
    ResultsWarning,
    make_executor,
)
from odenet.studies.work_precision import WorkPrecisionResult, parse_solver, work_precision

__all__ = [
    "DEFAULT_METHODS",
    "NORMS",
    "CellStore",
    "ConvergenceResult",
    "ExecutorError",
    "OrderFit",
    "ResultsError",
    "ResultsWarning",
    "WorkPrecisionResult",
    "convergence",
    "fit_order",
    "make_executor",
    "parse_solver",
    "stage_order",
    "work_precision",
]
