"""Linearization of step maps: `M_n = ∂Φ_n/∂x` along a trajectory.

A *step map* is any callable `x ↦ Φ(x)` on a torch tensor (an integrator step
of a vector field, a ResNet block, an RNN cell with its input closed over).  The
Jacobians are taken with `torch.func` (`jacrev` vmapped over many states,
`jvp` vmapped over many tangent vectors); steps that torch.func cannot trace
(e.g. implicit methods whose Newton solve calls autograd) fall back to
`torch.autograd.functional.jacobian`, one state at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.func import jacrev, jvp, vjp, vmap

import odenet
from odenet._stepper import RungeKutta, explicit_step
from odenet._validate import call_field, check_callable, check_field_output
from odenet.stability._errors import StabilityInputError, check_positive_int

Step = Callable[..., torch.Tensor]


def flow_map(f: Callable, dt: float, method: str = "rk4") -> Step:
    """The step map `x ↦ Φ_dt(x)` of one step of `method` on the field `f`.

    Parameters
    ----------
    f : callable f(t, x) -> dx/dt of an **autonomous** field.  Every step starts at
        t = 0 (a step map has no clock), so a field that depends on t is frozen at
        [0, dt]: x' = (t − 1)x iterated 50 times gives 0.0087 for x(5) = 1808.  For a
        non-autonomous field make time a state component, `x̃ = (x, t)`,
        `f̃(t, x̃) = (f(x̃[-1], x̃[:-1]), 1)`.
    dt : float, the step (time units; negative integrates backward).
    method : str or ButcherTableau

    Returns
    -------
    callable `step(x) -> Tensor` with the shape of `x`, differentiable; its
    Jacobian is the tangent map of the discretized flow.  Implicit methods call
    `odenet.step(f, 0.0, x, dt, method)`.  Explicit methods call the stepper's
    explicit step (`odenet._stepper.explicit_step`: `k_i = f(c_i dt, x + dt Σ_j
    A_ij k_j)`, `Φ = x + dt Σ b_i k_i`), the stages `odenet.step` and the solver
    run, without `odenet.step`'s per-call set-up and validation, which dominate on
    small states, and traceable by `torch.func` (so Jacobians of many states are
    one vmapped call).

    Examples
    --------
    >>> import torch
    >>> from odenet.stability import flow_map
    >>> step = flow_map(lambda t, x: -x, 0.1)          # one rk4 step of x' = -x
    >>> step(torch.ones(2, dtype=torch.float64))        # ≈ e^{-0.1} = 0.904837
    tensor([0.9048, 0.9048], dtype=torch.float64)
    """
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        dt = float("nan")
    if not math.isfinite(dt) or dt == 0.0:
        raise StabilityInputError(f"`dt` must be a finite non-zero number, got {dt!r}.")
    check_callable("f", f, "f(t, x)", error=StabilityInputError)
    tab = odenet.tableau(method)

    if tab.is_explicit:
        # the stepper's own explicit step (odenet._stepper.explicit_step), traceable by
        # torch.func; the coefficient tensors are built once per dtype and device
        runtimes: dict = {}

        def step(x: torch.Tensor) -> torch.Tensor:
            key = (x.dtype, x.device)
            if key not in runtimes:
                tdt = x.real.dtype if x.is_complex() else x.dtype
                t0 = torch.zeros((), dtype=tdt, device=x.device)
                runtimes[key] = (RungeKutta(tab, x.dtype, tdt, x.device), t0)
            rk, t0 = runtimes[key]
            # the first stage is checked as odenet.step checks it (shapes only: traceable)
            f0 = check_field_output(call_field(f, t0, x), x, t0, dtype=False, finite=False)
            return explicit_step(f, t0, x, dt, rk, f0=f0, error=False)[0]

    else:

        def step(x: torch.Tensor) -> torch.Tensor:
            return odenet.step(f, 0.0, x, dt, tab)

    step.dt = dt  # type: ignore[attr-defined]
    step.method = tab.name  # type: ignore[attr-defined]
    return step


def _flat(step: Step, shape: torch.Size) -> Callable:
    """`step` on flat vectors `[d]` (with an optional extra input `u`)."""

    def g(v, *u):
        return step(v.reshape(shape), *u).reshape(-1)

    return g


def jacobian(step: Step, x: torch.Tensor, *inputs) -> torch.Tensor:
    """The Jacobian `∂step(x, *inputs)/∂x` as a `[d, d]` matrix (`d = x.numel()`)."""
    x = _check_state(x)
    g = _flat(step, x.shape)
    v = x.detach().reshape(-1)
    try:
        return jacrev(g)(v, *inputs)
    except RuntimeError:  # torch.func cannot trace it (e.g. Newton with autograd inside)
        return torch.autograd.functional.jacobian(lambda w: g(w, *inputs), v)


def jacobians(step: Step, xs: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
    """Jacobians at many states at once: `xs [n, *shape] -> [n, d, d]`.

    `inputs` (optional, `[n, ...]`) is passed as `step(x, u)` row by row.
    """
    shape = xs.shape[1:]
    g = _flat(step, shape)
    flat = xs.detach().reshape(xs.shape[0], -1)
    args = (flat,) if inputs is None else (flat, inputs)
    try:
        return vmap(jacrev(g))(*args)
    except RuntimeError:
        extra = [()] * len(xs) if inputs is None else [(u,) for u in inputs]
        return torch.stack([jacobian(step, xs[i], *extra[i]) for i in range(len(xs))])


def tangent_step(step: Step, x: torch.Tensor, V: torch.Tensor, *inputs) -> torch.Tensor:
    """Push tangent vectors through the step, matrix-free: `[d, k] -> M(x) V` by vmapped jvp."""
    g = _flat(step, x.shape)
    v = x.detach().reshape(-1)
    try:
        return vmap(lambda w: jvp(lambda y: g(y, *inputs), (v,), (w,))[1], in_dims=1, out_dims=1)(V)
    except RuntimeError:
        return jacobian(step, x, *inputs) @ V


def cotangent_step(step: Step, x: torch.Tensor, A: torch.Tensor, *inputs) -> torch.Tensor:
    """Pull covectors back through the step, matrix-free: `[d, k] -> M(x)ᵀ A` by vmapped vjp."""
    g = _flat(step, x.shape)
    v = x.detach().reshape(-1)
    try:
        _, pull = vjp(lambda y: g(y, *inputs), v)
        return vmap(lambda a: pull(a)[0], in_dims=1, out_dims=1)(A)
    except RuntimeError:
        return jacobian(step, x, *inputs).T @ A


def trajectory(
    step: Step, x0: torch.Tensor, n_steps: int, inputs: torch.Tensor | None = None
) -> torch.Tensor:
    """States `x_0 .. x_n` of `x_{k+1} = step(x_k[, u_k])` as `[n + 1, *shape]` (no grad)."""
    n_steps = check_positive_int("n_steps", n_steps, allow_zero=True)
    x = _check_state(x0).detach()
    out = [x]
    with torch.no_grad():
        for k in range(n_steps):
            x = step(x) if inputs is None else step(x, inputs[k])
            out.append(x)
    return torch.stack(out)


def step_jacobians(
    step: Step, x0: torch.Tensor, n_steps: int, inputs: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The trajectory and the step Jacobians along it.

    Returns
    -------
    xs : Tensor [n + 1, *shape], the states.
    Ms : Tensor [n, d, d], M_k = ∂Φ/∂x (x_k).

    Examples
    --------
    >>> import torch
    >>> from odenet.stability import flow_map, step_jacobians
    >>> step = flow_map(lambda t, x: -x, 0.1)
    >>> xs, Ms = step_jacobians(step, torch.ones(2, dtype=torch.float64), 5)
    >>> xs.shape, Ms.shape                        # M_k ≈ e^{-0.1} I for x' = -x
    (torch.Size([6, 2]), torch.Size([5, 2, 2]))
    """
    xs = trajectory(step, x0, n_steps, inputs)
    return xs, jacobians(step, xs[:-1], inputs)


def _check_state(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise StabilityInputError(
            f"`x0` must be a torch.Tensor (the state), got {type(x).__name__}; "
            "wrap it with torch.as_tensor(x, dtype=torch.float64)."
        )
    if not (x.is_floating_point() or x.is_complex()):
        raise StabilityInputError(
            f"`x0` must be a floating-point tensor, got dtype {x.dtype}; use .double()."
        )
    if not bool(torch.isfinite(x).all()):
        # a NaN state took whichever branch of a piecewise map NaN selects, and its
        # exponents came out finite
        raise StabilityInputError("`x0` has NaN or infinite entries; start from a finite state.")
    return x
