"""The error hierarchy: every failure odenet reports is an :class:`OdenetError`.

Each error is also a ``ValueError`` (the input was wrong) or a ``RuntimeError``
(the computation failed), so code that catches the builtin classes keeps working.
Messages name the argument, what was received, and how to fix it.
"""

from __future__ import annotations

import os
import sys
import warnings


class OdenetError(Exception):
    """Base class of every error raised by odenet."""


# --- bad input -------------------------------------------------------------------


class InputError(OdenetError, ValueError):
    """An argument has the wrong type, shape, dtype or value."""


class UnknownMethodError(InputError, KeyError):
    """A method name is not registered (the message lists the valid names)."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class InvalidTableauError(InputError):
    """A Butcher tableau violates an invariant (row sums, weights, shapes)."""


class VectorFieldError(InputError):
    """The vector field returned the wrong shape or dtype, or raised on the first call."""


class UnsupportedDerivativeError(OdenetError, NotImplementedError):
    """A kind of differentiation the solve cannot give correctly: forward-mode AD
    under the ``adjoint``/``checkpoint`` modes or with respect to the output times,
    ``torch.func`` transforms with those modes, with implicit methods or ``vmap``,
    and second derivatives through ``adjoint``/``checkpoint``.  Raised instead of a
    silently wrong derivative; the message names what works."""


# --- failed computation ----------------------------------------------------------


class SolverError(OdenetError, RuntimeError):
    """The integration failed after it started.

    Attributes
    ----------
    t : float or None
        The time the solver had reached (for the first failing sample).
    solution : Solution or None
        The partial solution: outputs not reached are NaN.
    """

    def __init__(self, message: str, *, t: float | None = None, solution=None):
        super().__init__(message)
        self.t = t
        self.solution = solution


class StepSizeUnderflowError(SolverError):
    """The adaptive step size fell below ``min_step`` or below round-off of ``t``."""


class MaxStepsError(SolverError):
    """More than ``max_steps`` steps were attempted."""


class NonFiniteError(SolverError):
    """The state or the vector field became NaN or infinite."""


class NewtonConvergenceError(SolverError):
    """The implicit stage equations could not be solved, even with smaller steps."""


__all__ = [
    "InputError",
    "InvalidTableauError",
    "MaxStepsError",
    "NewtonConvergenceError",
    "NonFiniteError",
    "OdenetError",
    "OdenetWarning",
    "SolverError",
    "StabilityWarning",
    "StepSizeUnderflowError",
    "ToleranceWarning",
    "UnknownMethodError",
    "UnsupportedDerivativeError",
    "VectorFieldError",
]


# --- warnings ----------------------------------------------------------------------


class OdenetWarning(UserWarning):
    """Base class of the warnings odenet issues."""


class ToleranceWarning(OdenetWarning):
    """The requested ``rtol`` is too close to the state dtype's round-off for the
    method's error control to honour it: the solve runs, but its error may exceed
    ``rtol`` by 100× or more.  The message names the smallest ``rtol`` the method
    honours in that dtype and the ways out (a larger ``rtol``, float64, radau_iia5)."""


class StabilityWarning(OdenetWarning, RuntimeWarning):
    """A fixed-step solve left its method's region of absolute stability: the state
    grows where the field does not make it grow, so the result is probably garbage
    although no error was raised (a fixed step has no error control to notice).  The
    message names the way out (a smaller step, a lower order)."""


class StepSplitWarning(OdenetWarning):
    """A fixed-step solve of an implicit method could not take some of its steps:
    Newton's iteration on their stage equations did not converge, and the loop split
    them, as an adaptive solve does.  The result is that of a finer grid than the one
    asked for (more accurate, but not the scheme at that step size: a convergence study
    must not read it as one).  ``stats["rejected"]`` counts the failed trials."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def warn_user(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first caller outside odenet: the user's line
    is what the warning shows, and what the default filter shows it once per."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of warn_user
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
