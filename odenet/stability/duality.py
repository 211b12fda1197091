"""Error ↔ gradient duality: the same Jacobians `M_n` read forward and backward.

* Forward (numerical error of an integrator): the global error obeys
  `e_{n+1} = M_n e_n + τ_n` to first order, with `τ_n = Φ_h(y(t_n)) − y(t_{n+1})`
  the local error and `M_n = ∂Φ_h/∂y (y(t_n))`; so
  `e_N ≈ Σ_n M_{N-1} ⋯ M_{n+1} τ_n`.
* Backward (backpropagation through a network or a solve): `a_n = M_nᵀ a_{n+1}`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import odenet
from odenet.stability._errors import StabilityInputError, check_positive_int
from odenet.stability.linearize import jacobian


def _stack(Ms) -> torch.Tensor:
    Ms = torch.as_tensor(Ms)
    if Ms.ndim != 3 or Ms.shape[1] != Ms.shape[2]:
        raise StabilityInputError(
            f"`Ms` must be a stack of square Jacobians [N, d, d], got shape {tuple(Ms.shape)}."
        )
    return Ms


def propagate_errors(Ms, taus, e0=None) -> torch.Tensor:
    """Run the linear error recurrence `e_{n+1} = M_n e_n + τ_n`.

    Parameters
    ----------
    Ms : [N, d, d]; taus : [N, d] local errors; e0 : [d] (default 0).

    Returns
    -------
    Tensor `[N + 1, d]`, the predicted global errors `e_0 .. e_N`.
    """
    Ms = _stack(Ms)
    taus = torch.as_tensor(taus, dtype=Ms.dtype)
    if taus.shape != Ms.shape[:2]:
        raise StabilityInputError(
            f"`taus` must be [N, d] = {tuple(Ms.shape[:2])}, got {tuple(taus.shape)}."
        )
    e = torch.zeros(Ms.shape[1], dtype=Ms.dtype) if e0 is None else torch.as_tensor(e0)
    out = [e]
    for M, tau in zip(Ms, taus, strict=True):
        e = M @ e + tau
        out.append(e)
    return torch.stack(out)


def backpropagate(Ms, a_N) -> torch.Tensor:
    """Run the adjoint (gradient) recurrence `a_n = M_nᵀ a_{n+1}` from `a_N`.

    Parameters
    ----------
    Ms : [N, d, d]; a_N : [d], ∂L/∂x_N.

    Returns
    -------
    Tensor `[N + 1, d]`, `a_0 .. a_N` (`a_n = ∂L/∂x_n`).
    """
    Ms = _stack(Ms)
    a = torch.as_tensor(a_N, dtype=Ms.dtype)
    out = [a]
    for M in reversed(Ms):
        a = M.T @ a
        out.append(a)
    return torch.stack(out[::-1])


@dataclass(frozen=True)
class GlobalErrorPrediction:
    """Predicted vs actual global error of a fixed-step solve.

    Attributes
    ----------
    t : Tensor [N + 1]; predicted, actual : Tensor [N + 1, d];
    local_errors : Tensor [N, d]; jacobians : Tensor [N, d, d].
    """

    t: torch.Tensor
    predicted: torch.Tensor
    actual: torch.Tensor
    local_errors: torch.Tensor
    jacobians: torch.Tensor

    @property
    def relative_mismatch(self) -> float:
        """`max_n |predicted − actual| / max_n |actual|`."""
        return float((self.predicted - self.actual).abs().max() / self.actual.abs().max())


def global_error_prediction(
    f: Callable,
    exact: Callable[[torch.Tensor], torch.Tensor],
    t0: float,
    t1: float,
    n_steps: int,
    method: str = "rk4",
) -> GlobalErrorPrediction:
    """Predict a solve's global error from its local errors and step Jacobians.

    Parameters
    ----------
    f : the vector field f(t, y), y of shape [d].
    exact : t -> y(t), the true solution (0-dim tensor in, [d] out).
    t0, t1 : interval; n_steps : number of equal steps h = (t1 − t0)/N.
    method : a method name or ButcherTableau (implicit ones too).

    Returns
    -------
    GlobalErrorPrediction — `predicted` from `e_{n+1} = M_n e_n + τ_n` with
    `M_n` the step Jacobian at the exact state, `actual` the numerical
    solution minus the exact one; they agree to second order in the error.

    Examples
    --------
    The logistic equation with rk4, 50 steps on [0, 5]: the predicted and the actual
    global error at the end agree to a relative 1e-6.

    >>> import torch
    >>> from odenet.stability import global_error_prediction
    >>> exact = lambda t: (0.1 * t.exp() / (0.9 + 0.1 * t.exp())).reshape(1)
    >>> res = global_error_prediction(lambda t, y: y * (1 - y), exact, 0.0, 5.0, 50, "rk4")
    >>> abs(float(res.predicted[-1][0]) / float(res.actual[-1][0]) - 1) < 1e-6
    True
    """
    n = check_positive_int("n_steps", n_steps)
    h = (float(t1) - float(t0)) / n
    t = torch.tensor(float(t0), dtype=torch.float64) + h * torch.arange(n + 1, dtype=torch.float64)
    Y = torch.stack([exact(tk) for tk in t]).to(torch.float64)
    ys = [Y[0]]
    taus, Ms = [], []
    with torch.no_grad():
        for k in range(n):
            ys.append(odenet.step(f, t[k], ys[-1], h, method))
            taus.append(odenet.step(f, t[k], Y[k], h, method) - Y[k + 1])
    for k in range(n):
        tk = t[k]
        Ms.append(jacobian(lambda y, tk=tk: odenet.step(f, tk, y, h, method), Y[k]))
    Ms_ = torch.stack(Ms)
    taus_ = torch.stack(taus)
    return GlobalErrorPrediction(
        t=t,
        predicted=propagate_errors(Ms_, taus_),
        actual=torch.stack(ys) - Y,
        local_errors=taus_,
        jacobians=Ms_,
    )
