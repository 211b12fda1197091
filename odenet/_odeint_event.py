"""Integrate until an event, with the event time differentiable (torchdiffeq's API).

``odeint(func, y0, t, event_fn=...)`` and ``odeint_event(func, y0, t0, event_fn=...)``
integrate from ``t[0]`` (``t0``) until ``event_fn(t, y)`` crosses zero and return
``(event_t, solution)`` with ``solution = [y0, y(event_t)]``.

The event time ``t*`` solves ``c(t*, y(t*)) = 0``.  For a loss ``L(t*, y(t*))`` the
implicit function theorem gives, with ``f* = f(t*, y*)`` and
``ċ = ∂c/∂t + ∂c/∂y · f*``,

    ∂L/∂y(t*) (at fixed time) = g_y − (g_t + g_y · f*) ∂c/∂y / ċ,
    ∂L/∂θ_c = −(g_t + g_y · f*) ∂c/∂θ_c / ċ,

where ``g_t, g_y`` are the incoming gradients and ``θ_c`` the event function's own
parameters; the first flows on into the solve's graph (direct, or the adjoint).
"""

from __future__ import annotations

import torch

from odenet._errors import InputError, SolverError
from odenet._events import Event
from odenet.sensitivity._params import hidden_leaves

# integrate "until the event": a horizon far beyond any event the tests or users meet
_HORIZON = 1e6


def _params_of(fn) -> list[torch.Tensor]:
    owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        return [p for p in owner.parameters() if p.requires_grad]
    return []


class _EventTime(torch.autograd.Function):
    """Identity on ``(t*, y*)`` whose backward adds the event time's dependence."""

    @staticmethod
    def forward(ctx, func, event_fn, t_star, y_star, *params):
        ctx.func, ctx.event_fn = func, event_fn
        ctx.save_for_backward(t_star, y_star, *params)
        return t_star.detach().clone(), y_star.detach().clone()

    @staticmethod
    def backward(ctx, g_t, g_y):
        t_star, y_star, *params = ctx.saved_tensors
        with torch.enable_grad():
            t = t_star.detach().requires_grad_(True)
            y = y_star.detach().requires_grad_(True)
            c = ctx.event_fn(t, y)
            # retain: tensors the event function captures may be differentiated again
            grads = torch.autograd.grad(c, [t, y, *params], allow_unused=True, retain_graph=True)
        dc_dt = grads[0] if grads[0] is not None else torch.zeros_like(t)
        dc_dy = grads[1] if grads[1] is not None else torch.zeros_like(y)
        with torch.no_grad():
            f = ctx.func(t_star.detach(), y_star.detach())
            c_dot = dc_dt + (dc_dy * f).sum()
            if g_t is None:
                g_t = torch.zeros_like(t_star)
            if g_y is None:
                g_y = torch.zeros_like(y_star)
            pull = (g_t + (g_y * f).sum()) / c_dot
            grad_y = g_y - pull * dc_dy
            grad_params = [None if d is None else -pull * d for d in grads[2:]]
        return (None, None, None, grad_y, *grad_params)


def until_event(
    func,
    y0,
    t0,
    event_fn,
    *,
    reverse_time: bool,
    sensitivity: str,
    solve_kw: dict,
    adjoint_kw: dict | None = None,
    grid: torch.Tensor | None = None,
    horizon: str | None = None,
):
    """``(event_t, solution [2, ...])`` for a tensor state; see the module docstring.

    ``solve_kw`` go to every :func:`odenet.solve` call; ``adjoint_kw`` (``adjoint_params``,
    ``adjoint_options``, ...) only to the solve up to the event that a non-direct
    ``sensitivity`` differentiates.  ``grid`` (``[G]``, from ``t0`` in the direction of
    integration, in ``t0``'s dtype): fixed steps on these nodes, the search ending at
    the last one; the re-solve for the adjoint takes the same steps up to the event and
    a last, shorter one onto it.  ``horizon`` then describes that search (in words) for
    the error raised when no event is found."""
    from odenet._solve import solve

    if not callable(event_fn):
        raise InputError(f"`event_fn` must be callable as event_fn(t, y), got {event_fn!r}.")
    t0 = torch.as_tensor(t0).reshape(())
    if grid is None:
        span = _HORIZON * max(1.0, abs(float(t0.detach())))
        t_end = t0.detach() - span if reverse_time else t0.detach() + span
        t = torch.stack([t0.detach(), t_end.to(t0.dtype)])
        horizon = horizon or f"the search ends {span:g} time units from t0"
    else:
        t = grid.detach().to(t0.dtype)
        solve_kw = {**solve_kw, "grid_on_outputs": True}
        horizon = horizon or f"the search ends at the last node of its grid, {float(t[-1]):g}"
    dt0 = t0 - t0.detach()  # zero, with t0's gradient
    y_search = y0
    if sensitivity == "direct" and dt0.requires_grad:
        # The state at a fixed time depends on t0 as the exact flow does,
        # ∂y(t)/∂t0 = −Φ(t, t0) f(t0, y0): it enters through y0 (a term whose value is
        # zero), the search's times staying detached, so the event state carries it
        # whether the steps are adaptive or fixed (a fixed grid's terminal state is
        # interpolated at a detached event time: moving its nodes with t0 gave 0)
        with torch.no_grad():
            f0 = func(t0.detach(), y0.detach())
        y_search = y0 - dt0.to(y0.dtype) * f0
    event = Event(event_fn, terminal=True)
    with torch.no_grad() if sensitivity != "direct" else torch.enable_grad():
        sol = solve(func, y_search, t, events=[event], throw=False, **solve_kw)
    if sol.events is None or sol.events.terminal_state is None:
        if not sol.success:
            raise SolverError(f"the solve failed before any event: {sol.message}")
        raise SolverError(f"no event: `event_fn` never crossed zero ({horizon}).")
    # (detached: _EventTime below gives t* its implicit-function-theorem derivative)
    t_star = sol.events.t[-1].detach().to(device=y0.device)
    if sensitivity == "direct":
        y_star = sol.events.terminal_state
    else:
        # the adjoint differentiates a solve on a fixed span: re-solve to the event
        # (the adjoint differentiates with respect to its first time: t0 itself)
        t_end = t_star.to(t0.dtype).reshape(1)
        if grid is None:
            t_span = torch.cat([t0.reshape(1), t_end])
        else:  # the search's nodes before the event, then the event time
            before = (t < t_end) if not reverse_time else (t > t_end)
            before[0] = True
            t_span = torch.cat([t0.reshape(1), t[before][1:], t_end])
        y_star = solve(
            func, y0, t_span, sensitivity=sensitivity, **solve_kw, **(adjoint_kw or {})
        ).ys[-1]
    # t*'s dependence on everything, t0 included, comes from y_star in _EventTime
    t_star = t_star.to(t0.dtype)
    params = _params_of(event_fn)
    if torch.is_grad_enabled():
        # tensors a closure captures (``lambda t, y: net(y)[0]``) count as parameters too
        params += hidden_leaves(event_fn, t_star.to(t0.dtype), y_star, params)
    t_out, y_out = _EventTime.apply(func, event_fn, t_star, y_star, *params)
    return t_out, torch.stack([y0.expand_as(y_out), y_out])
