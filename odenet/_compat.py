"""Drop-in replacements for ``torchdiffeq.odeint`` and ``torchdiffeq.odeint_adjoint``.

Same argument names, defaults and return shape as torchdiffeq (0.2.x): tuples of
tensors as state, torchdiffeq's method names, and the ``options`` keys that make
sense for a Runge–Kutta core.  Unknown options raise instead of being ignored.
"""

from __future__ import annotations

import torch

from odenet._controller import PIDController
from odenet._errors import InputError
from odenet._solve import prepare, run_direct

# torchdiffeq name -> odenet tableau.  torchdiffeq's "rk4" is Kutta's 3/8 rule.
TORCHDIFFEQ_METHODS = {
    "dopri8": "dop853",
    "dopri5": "dopri5",
    "bosh3": "bosh3",
    "fehlberg2": "fehlberg2",
    "adaptive_heun": "heun",
    "euler": "euler",
    "midpoint": "midpoint",
    "heun2": "heun",
    "heun3": "heun3",
    "rk4": "rk38",
    "implicit_euler": "backward_euler",
    "implicit_midpoint": "implicit_midpoint",
    "trapezoid": "trapezoid",
    "gl4": "gauss_legendre4",
    "gl6": "gauss_legendre6",
    "radauiia3": "radau_iia3",
    "radauiia5": "radau_iia5",
    "sdirk2": "sdirk2",
    "trbdf2": "trbdf2",
}
# torchdiffeq's fixed-grid solvers (they step on `t` unless given a step_size),
# whatever odenet's tableau could do adaptively
TORCHDIFFEQ_FIXED = {
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "implicit_euler",
    "implicit_midpoint",
    "trapezoid",
    "gl4",
    "gl6",
    "radauiia3",
    "radauiia5",
    "sdirk2",
    "trbdf2",
}
_NOT_RUNGE_KUTTA = ("explicit_adams", "implicit_adams", "fixed_adams", "scipy_solver")

_ADAPTIVE_KEYS = {"first_step", "safety", "ifactor", "dfactor", "max_num_steps", "dtype", "norm"}
_FIXED_KEYS = {"step_size", "interp"}
_ODENET_KEYS = {"min_step", "max_step", "controller", "newton_tol", "newton_max_iter"}


def _method_name(method):
    if method is None:
        return "dopri5"
    if not isinstance(method, str):
        return method  # a ButcherTableau
    key = method.lower()
    if key in _NOT_RUNGE_KUTTA:
        raise InputError(
            f"method {method!r} (a torchdiffeq multistep/scipy wrapper) is not available in "
            "odenet, which is Runge–Kutta based; use e.g. 'dopri5', 'dop853', 'radau_iia5'."
        )
    return TORCHDIFFEQ_METHODS.get(key, method)


class _TupleState:
    """Flatten a tuple state into one vector and back (torchdiffeq's `_TupleFunc`)."""

    def __init__(self, y0s):
        self.shapes = [y.shape for y in y0s]
        self.sizes = [y.numel() for y in y0s]

    def flat(self, ys):
        return torch.cat([y.reshape(-1) for y in ys])

    def split(self, y, lead=()):
        parts = torch.split(y, self.sizes, dim=-1)
        return tuple(p.reshape(*lead, *s) for p, s in zip(parts, self.shapes))


def _translate(options):
    options = dict(options or {})
    kwargs = {}
    unknown = set(options) - _ADAPTIVE_KEYS - _FIXED_KEYS - _ODENET_KEYS
    if unknown:
        raise InputError(
            f"unknown `options` key(s) {sorted(unknown)}; supported: "
            f"{sorted(_ADAPTIVE_KEYS | _FIXED_KEYS | _ODENET_KEYS)}."
        )
    if "max_num_steps" in options:
        kwargs["max_steps"] = options.pop("max_num_steps")
    options.pop("dtype", None)  # odenet keeps time in the promoted dtype of t and y0
    options.pop("interp", None)  # odenet always uses the method's (Hermite) dense output
    ctrl = {k: options.pop(k) for k in ("safety", "ifactor", "dfactor") if k in options}
    if ctrl:
        kwargs["controller"] = PIDController(
            safety=ctrl.get("safety", 0.9),
            factor_max=ctrl.get("ifactor", 10.0),
            factor_min=ctrl.get("dfactor", 0.2),
        )
    kwargs.update(options)
    return kwargs


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None):
    """Solve ``dy/dt = func(t, y)`` like ``torchdiffeq.odeint`` and return ``y`` at ``t``.

    Parameters
    ----------
    func : callable ``func(t, y)``; ``y`` a Tensor or a tuple of Tensors.
    y0 : Tensor or tuple of Tensors.
    t : Tensor ``[T]`` of output times (increasing or decreasing).
    rtol, atol : tolerances (torchdiffeq's defaults 1e-7, 1e-9).
    method : torchdiffeq name (``"dopri5"``, ``"rk4"`` = 3/8 rule, ``"dopri8"`` ->
        ``dop853``, ``"implicit_euler"``, ...) or any odenet method or tableau.
    options : dict with torchdiffeq keys (``step_size``, ``first_step``, ``safety``,
        ``ifactor``, ``dfactor``, ``max_num_steps``, ``norm``) or odenet's
        (``min_step``, ``max_step``, ``controller``, ``newton_tol``, ``newton_max_iter``).
        Fixed-step methods without ``step_size`` step on the grid ``t``.

    Returns
    -------
    Tensor ``[T, *y0.shape]`` (or a tuple of them).
    """
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, "direct", {})


def odeint_adjoint(
    func,
    y0,
    t,
    *,
    rtol=1e-7,
    atol=1e-9,
    method=None,
    options=None,
    event_fn=None,
    adjoint_rtol=None,
    adjoint_atol=None,
    adjoint_method=None,
    adjoint_options=None,
    adjoint_params=None,
):
    """``torchdiffeq.odeint_adjoint`` with odenet's checkpointed continuous adjoint.

    Gradients with respect to ``y0``, ``t`` and ``adjoint_params`` (default: the
    parameters of ``func`` when it is an ``nn.Module``) come from the adjoint ODE
    solved backward in time, restarted from forward checkpoints so that it stays
    accurate on contracting dynamics (see :mod:`odenet.sensitivity`).
    """
    adj = {
        "adjoint_rtol": adjoint_rtol,
        "adjoint_atol": adjoint_atol,
        "adjoint_method": _method_name(adjoint_method) if adjoint_method else None,
        "adjoint_options": adjoint_options,
        "adjoint_params": adjoint_params,
    }
    adj = {k: v for k, v in adj.items() if v is not None}
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, "adjoint", adj)


def _odeint(func, y0, t, rtol, atol, method, options, event_fn, sensitivity, adjoint):
    if event_fn is not None:
        raise InputError(
            "`event_fn` (event handling) is not supported by odenet yet; integrate to a "
            "fixed end time instead."
        )
    name = _method_name(method)
    kwargs = _translate(options)
    if sensitivity == "adjoint" and "adjoint_params" not in adjoint:
        # torchdiffeq's default; found here because a tuple state wraps `func` below
        if isinstance(func, torch.nn.Module):
            adjoint = {**adjoint, "adjoint_params": tuple(func.parameters())}
    tuple_state = isinstance(y0, tuple | list)
    if tuple_state:
        packer = _TupleState(y0)
        user_func = func

        def func(tt, y):
            return packer.flat(user_func(tt, packer.split(y)))

        y0 = packer.flat(y0)
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    from odenet.tableaus import tableau as _tab

    tab = _tab(name)
    fixed = (isinstance(method, str) and method.lower() in TORCHDIFFEQ_FIXED) or not tab.is_adaptive
    on_outputs = fixed and kwargs.get("step_size") is None
    if sensitivity == "direct":
        prep, tab = prepare(
            func,
            y0,
            t,
            method=name,
            rtol=rtol,
            atol=atol,
            step_size=kwargs.pop("step_size", None),
            max_steps=kwargs.pop("max_steps", 2**31 - 1),
            first_step=kwargs.pop("first_step", None),
            min_step=kwargs.pop("min_step", 0.0),
            max_step=kwargs.pop("max_step", None),
            controller=kwargs.pop("controller", "I"),
            norm=kwargs.pop("norm", None),
            newton_tol=kwargs.pop("newton_tol", None),
            newton_max_iter=kwargs.pop("newton_max_iter", None),
            grid_on_outputs=on_outputs,
        )
        ys = run_direct(prep, tab, throw=True).ys
    else:
        from odenet._solve import solve

        kwargs.setdefault("max_steps", 2**31 - 1)
        ys = solve(
            func,
            y0,
            t,
            method=name,
            rtol=rtol,
            atol=atol,
            sensitivity=sensitivity,
            grid_on_outputs=on_outputs,
            **kwargs,
            **adjoint,
        ).ys
    if tuple_state:
        return packer.split(ys, lead=(ys.shape[0],))
    return ys
