"""Drop-in replacements for ``torchdiffeq.odeint`` and ``torchdiffeq.odeint_adjoint``.

Same argument names, defaults and return shape as torchdiffeq (0.2.x): tuples of
tensors as state, torchdiffeq's method names, and torchdiffeq's ``options`` keys
with torchdiffeq's meaning.  Everything here is translation around
:func:`odenet.solve`; nothing integrates on its own except the ``scipy_solver``
wrapper.  Where odenet cannot honour an argument yet, it raises an
:class:`~odenet.InputError` that says so: no argument is silently ignored.

What torchdiffeq does, and so does this module:

* ``func`` is called with ``t`` in ``y``'s dtype (times may be float64 for a
  float32 model, e.g. ``torch.from_numpy(np.linspace(...))``); adaptive methods keep
  their internal time in ``options["dtype"]`` (default float64) or finer;
* a tuple state is flattened; a user ``norm`` receives the tuple, and the default
  norm of a tuple is the largest RMS norm of its parts (torchdiffeq's mixed norm);
* fixed-step methods step on ``t`` itself, on ``t0 + k·step_size`` (the last step
  shortened) or on ``options["grid_constructor"](func, y0, t)``, and read outputs
  between grid nodes by linear (default) or cubic Hermite interpolation
  (``options["interp"]``); with ``event_fn`` they search on torchdiffeq's nodes, ``t``
  advanced by ``step_size`` in ``y``'s dtype, at most 20000 steps;
* ``method="scipy_solver"`` wraps :func:`scipy.integrate.solve_ivp`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import warnings
from collections.abc import Callable

import numpy as np
import torch

from odenet._controller import PIDController
from odenet._errors import InputError
from odenet._odeint_event import until_event
from odenet.sensitivity._params import hidden_leaves

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
# torchdiffeq's Adams methods (odenet._adams), fixed-grid too, with two options of their own
MULTISTEP = ("explicit_adams", "implicit_adams", "fixed_adams")
TORCHDIFFEQ_FIXED |= set(MULTISTEP)
ADAMS_OPTIONS = {"max_order", "max_iters"}
SCIPY_SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")

# torchdiffeq 0.2.5's options, per family of solver
ADAPTIVE_OPTIONS = {
    "first_step",
    "safety",
    "ifactor",
    "dfactor",
    "max_num_steps",
    "dtype",
    "norm",
    "min_step",
    "max_step",
    "step_t",
    "jump_t",
}
FIXED_OPTIONS = {"step_size", "grid_constructor", "interp", "perturb"}
SCIPY_OPTIONS = {"solver", "min_step", "max_step"}
# odenet's own extras, accepted by both families
ODENET_OPTIONS = {"controller", "newton_tol", "newton_max_iter"}
# torchdiffeq's names for callbacks, looked up as attributes of `func`
CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")
ADJOINT_CALLBACKS = tuple(name + "_adjoint" for name in CALLBACKS)


def _not_yet(what: str, fix: str) -> InputError:
    return InputError(f"{what} is not supported by odenet's torchdiffeq interface yet; {fix}")


def _method_name(method):
    """torchdiffeq name -> odenet name (or tableau); ``None`` means dopri5."""
    if method is None:
        return "dopri5"
    if not isinstance(method, str):
        return method  # a ButcherTableau
    key = method.lower()
    return TORCHDIFFEQ_METHODS.get(key, method)


def _adams_method(method, options, rtol, atol, adjoint):
    """An Adams name -> ``(method object with its options and odeint's tolerances for
    the corrector, the options without max_order/max_iters)``; else ``(None, options)``.

    Under ``odeint_adjoint`` (``adjoint`` not None: its keyword arguments, updated here)
    the backward pass integrates with a Runge–Kutta method on the forward's grid:
    ``adjoint_method`` if that is one, else torchdiffeq's ``rk4`` (the 3/8 rule).
    """
    if not (isinstance(method, str) and method.lower() in MULTISTEP):
        return None, options
    from odenet._adams import METHODS

    options = dict(options or {})
    own = {k: options.pop(k) for k in ADAMS_OPTIONS if k in options}
    if adjoint is not None:
        rk = adjoint.get("adjoint_method")
        if rk is None or (isinstance(rk, str) and rk.lower() in MULTISTEP):
            rk = "rk38"
        adjoint["adjoint_method"] = own["adjoint_method"] = rk
    return METHODS[method.lower()].with_options(rtol=rtol, atol=atol, **own), options


@functools.cache
def _fixed_step_copy(name):
    """The tableau ``name`` without its embedded pair or named estimator (one object
    per name, so runtime caches keep it), or None when it has no pair."""
    from odenet._registry import method

    if not isinstance(name, str):
        return None
    tab = method(name)
    if getattr(tab, "b_hat", None) is None:  # no pair (a multistep method has none)
        return None
    return dataclasses.replace(
        tab,
        name=f"{tab.name} (fixed steps)",
        b_hat=None,
        embedded_order=None,
        estimator=None,
        estimator_order=None,
    )


def _is_fixed(method, name) -> bool:
    from odenet._registry import method as lookup

    if isinstance(method, str) and method.lower() in TORCHDIFFEQ_FIXED:
        return True
    return not lookup(name).is_adaptive


# --- tuple states ---------------------------------------------------------------------


class _TupleState:
    """Flatten a tuple state into one vector and back (torchdiffeq's `_TupleFunc`)."""

    def __init__(self, y0s):
        for i, y in enumerate(y0s):
            if not isinstance(y, torch.Tensor):
                raise InputError(
                    f"`y0` item {i} is a {type(y).__name__}; a tuple state must hold tensors."
                )
        if len(y0s) == 0:
            raise InputError("`y0` is an empty tuple; give at least one tensor.")
        self.shapes = [tuple(y.shape) for y in y0s]
        self.sizes = [y.numel() for y in y0s]

    def flat(self, ys):
        if not isinstance(ys, tuple | list) or len(ys) != len(self.shapes):
            got = f"a tuple of {len(ys)}" if isinstance(ys, tuple | list) else type(ys).__name__
            raise InputError(
                f"`func` must return a tuple of {len(self.shapes)} tensors for a tuple state "
                f"(one derivative per state tensor), got {got}."
            )
        return torch.cat([y.reshape(-1) for y in ys])

    def split(self, y, lead=()):
        parts = torch.split(y, self.sizes, dim=-1)
        return tuple(p.reshape(tuple(lead) + s) for p, s in zip(parts, self.shapes))

    def tol(self, name, v, like):
        """A tuple of per-tensor tolerances -> one flat tensor (torchdiffeq's `_tuple_tol`)."""
        if not isinstance(v, tuple | list):
            return v
        if len(v) != len(self.shapes):
            raise InputError(
                f"`{name}` is a tuple of {len(v)} tolerances for a state of {len(self.shapes)} "
                "tensors; give one per tensor or a single number."
            )
        return torch.cat(
            [
                torch.as_tensor(x, dtype=like.dtype, device=like.device).expand(n)
                for x, n in zip(v, self.sizes)
            ]
        )


def _mixed_norm(parts):
    """torchdiffeq's default norm of a tuple state: the largest RMS norm of its parts."""
    return torch.stack([p.abs().pow(2).mean().sqrt() for p in parts]).max()


def _rms(x):
    """torchdiffeq's default norm of a tensor state (``_rms_norm``)."""
    return x.abs().pow(2).mean().sqrt()


# --- the adjoint's norm ---------------------------------------------------------------------


def _state_norm(user_norm, packer):
    """The forward's norm of one (flat) state, torchdiffeq's ``options["norm"]``: the
    user's (given the tuple for a tuple state), else RMS (the mixed norm for a tuple)."""
    if packer is None:
        return _rms if user_norm is None else user_norm
    norm = _mixed_norm if user_norm is None else user_norm
    return lambda y: norm(packer.split(y))


def _default_adjoint_norm(state_norm, seminorm: bool):
    """torchdiffeq's default adjoint norm on ``(t, y, adj_y, *adj_params)`` (each scaled
    error of the backward step): ``max(|t|, norm(y), norm(adj_y), RMS of each
    adj_param)`` with the forward's ``norm``; ``seminorm`` leaves the parameters out.
    Returns a 0-dim tensor in ``adj_y``'s dtype."""

    def norm(parts):
        t, y, adj_y, *params = parts
        terms = [t.abs(), state_norm(y), state_norm(adj_y)]
        if not seminorm:
            terms += [_rms(p) for p in params]
        like = adj_y
        return torch.stack(
            [torch.as_tensor(x, dtype=like.dtype, device=like.device).reshape(()) for x in terms]
        ).max()

    return norm


def _unflattening(norm, packer):
    """A user's adjoint norm for a tuple state: torchdiffeq hands it
    ``(t, *y_parts, *adj_y_parts, *adj_params)``, the flat state split into the tuple."""

    def unflat(parts):
        t, y, adj_y, *params = parts
        return norm((t, *packer.split(y), *packer.split(adj_y), *params))

    return unflat


def _adjoint_options(given, user_norm, packer):
    """torchdiffeq's ``adjoint_options`` -> ``(exposed, for_solve)``.

    ``exposed`` is a new dict (the user's is not modified) whose ``"norm"`` is a
    callable on torchdiffeq's tuple ``(t, y, adj_y, *adj_params)`` with ``y`` flat:
    the default (torchdiffeq's mixed norm, also for ``"default"``), its seminorm
    (``"seminorm"``) or the user's (unflattened for a tuple state).  The solution's
    ``grad_fn`` carries ``exposed``, and the backward pass reads its ``"norm"`` only
    then (``for_solve``'s norm looks it up), so a norm set there after the forward is
    the one used — as torchdiffeq's ``xs.grad_fn.adjoint_options``.
    """
    if given is not None and not isinstance(given, dict):
        raise InputError(
            f"`adjoint_options` must be a dict such as {{'norm': 'seminorm'}}, got "
            f"{type(given).__name__}."
        )
    exposed = dict(given or {})
    norm = exposed.get("norm")
    if norm is None or norm in ("default", "seminorm"):
        exposed["norm"] = _default_adjoint_norm(
            _state_norm(user_norm, packer), seminorm=norm == "seminorm"
        )
    elif not callable(norm):
        raise InputError(
            "`adjoint_options['norm']` must be 'seminorm', 'default' or a callable "
            f"norm(tensor_tuple), got {norm!r}."
        )
    elif packer is not None:
        exposed["norm"] = _unflattening(norm, packer)
    return exposed, {**exposed, "norm": _NormAtBackward(exposed)}


def _backward_steps(given, copied, *, fixed, label, forward, forward_grid, time_dtype):
    """torchdiffeq's ``adjoint_options`` but ``norm`` -> odenet's ``adjoint_*`` solve options.

    ``copied``: they are the forward's ``options`` (torchdiffeq's default when
    ``adjoint_options`` is not given).  odenet's backward pass integrates within each
    forward step (never across one), so options that place steps (``step_t``,
    ``jump_t``, ``perturb``, ``grid_constructor``, the forward's ``dtype`` of time)
    are the forward's; given for the backward pass alone, they must equal the
    forward's or raise.  ``step_size``, ``first_step``, ``max_step``, ``min_step``,
    ``max_num_steps`` and ``safety``/``ifactor``/``dfactor`` steer the backward steps;
    ``interp`` does nothing backward (as in torchdiffeq: its backward outputs are grid
    nodes).
    """
    given = {k: v for k, v in given.items() if k != "norm"}

    def refuse(keys, why):
        raise InputError(
            f"`adjoint_options` {sorted(keys)} {why} (odenet's backward pass steps within "
            "each forward step); leave them out of `adjoint_options`."
        )

    adams = set(given) & ADAMS_OPTIONS
    if adams and not copied:
        refuse(adams, f"do not apply: the backward pass of an Adams method runs {label!r}")
    given = {k: v for k, v in given.items() if k not in ADAMS_OPTIONS}
    kw, grid, tdt = _translate(given, fixed=fixed, method_label=label)
    out = {}
    for key, flat in (
        ("first_step", "adjoint_first_step"),
        ("max_step", "adjoint_max_step"),
        ("min_step", "adjoint_min_step"),
        ("max_steps", "adjoint_max_steps"),
        ("controller", "adjoint_controller"),
    ):
        if key in kw:
            out[flat] = kw.pop(key)
    kw.pop("accept_min_step", None)  # a positive min_step always has torchdiffeq's meaning
    if "step_size" in grid:
        out["adjoint_step_size"] = _step_size(grid["step_size"])
    if copied:
        return out  # the rest are the forward's own: its steps already follow them
    for key in ("step_t", "jump_t"):
        mine, theirs = kw.pop(key, None), forward.get(key)
        if mine is not None and (
            theirs is None or mine.shape != theirs.shape or not torch.equal(mine.to(theirs), theirs)
        ):
            refuse([key], "differ from the forward's `options`")
    if tdt is not None and tdt != time_dtype:
        refuse(["dtype"], f"differ from the forward's time dtype {time_dtype}")
    if "grid_constructor" in grid and grid["grid_constructor"] is not forward_grid.get(
        "grid_constructor"
    ):
        refuse(["grid_constructor"], "differ from the forward's `options`")
    if bool(grid.get("perturb")) != bool(forward_grid.get("perturb")):
        refuse(["perturb"], "differ from the forward's `options`")
    newton = set(kw) & {"newton_tol", "newton_max_iter"}
    if newton:
        refuse(
            newton, "do not apply: the adjoint is linear, its implicit stages are solved directly"
        )
    kw.pop("norm", None)
    if kw:  # e.g. an odenet extra that has no backward meaning
        refuse(kw, "have no meaning for the backward pass")
    return out


class _NormAtBackward:
    """``options["norm"]`` looked up when the backward pass measures a step, not when
    the forward runs: the user may replace it in between (torchdiffeq's contract)."""

    def __init__(self, options: dict):
        self.options = options

    def __call__(self, parts):
        norm = self.options.get("norm")
        if not callable(norm):
            raise InputError(
                "`adjoint_options['norm']` (read from the solution's grad_fn at backward "
                f"time) must be a callable norm(tensor_tuple), got {norm!r}."
            )
        return norm(parts)


class _CarryAdjointOptions(torch.autograd.Function):
    """Identity on the solution whose autograd node holds torchdiffeq's
    ``adjoint_options`` (``xs.grad_fn.adjoint_options``, the dict the backward pass
    reads).  It returns a copy: a view could not be modified in place, which
    torchdiffeq's solution can."""

    @staticmethod
    def forward(ctx, options, ys):
        ctx.adjoint_options = options
        return ys.clone()

    @staticmethod
    def backward(ctx, grad):
        return None, grad


# --- options ----------------------------------------------------------------------------


def _positive_or_inf(name, v):
    """``inf`` (torchdiffeq's default ``max_step``) means no limit -> ``None``."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, numbers.Real) and not isinstance(v, bool) and v == math.inf:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0 < v < math.inf):
        raise InputError(f"`options['{name}']` must be a positive number or inf, got {v!r}.")
    return float(v)


def _translate(options, *, fixed: bool, method_label: str):
    """torchdiffeq ``options`` -> keyword arguments of :func:`odenet.solve`.

    Returns ``(kwargs, grid_options, time_dtype)``: ``grid_options`` holds the fixed
    solvers' ``step_size``, ``grid_constructor`` and ``interp``, handled by
    :func:`_odeint` itself; ``time_dtype`` is the adaptive solvers' ``dtype``.
    """
    options = dict(options or {})
    family = FIXED_OPTIONS if fixed else ADAPTIVE_OPTIONS
    allowed = family | ODENET_OPTIONS
    unknown = sorted(set(options) - allowed)
    if unknown:
        other = (ADAPTIVE_OPTIONS | FIXED_OPTIONS) - family
        misplaced = [k for k in unknown if k in other]
        kind = "fixed-step" if fixed else "adaptive"
        hint = ""
        if misplaced:
            hint = (
                f" {misplaced} belong to {'adaptive' if fixed else 'fixed-step'} methods "
                f"(method {method_label!r} is {kind})."
            )
        elif set(unknown) & {"grid_points", "eps"}:
            hint = " `grid_points`/`eps` were renamed `step_t`/`jump_t` in torchdiffeq 0.2."
        raise InputError(
            f"unknown `options` key(s) {unknown} for the {kind} method {method_label!r}; "
            f"it takes {sorted(allowed)}.{hint}"
        )
    kwargs = {}
    grid = {}
    time_dtype = None
    if fixed:
        for k in ("step_size", "grid_constructor", "interp"):
            if options.get(k) is not None:
                grid[k] = options.pop(k)
            options.pop(k, None)
        interp = grid.get("interp", "linear")
        if interp not in ("linear", "cubic"):
            raise InputError(
                f"`options['interp']` must be 'linear' or 'cubic' (how fixed-step methods "
                f"read outputs between grid nodes), got {interp!r}."
            )
        if "step_size" in grid and "grid_constructor" in grid:
            raise InputError(
                "`options['step_size']` and `options['grid_constructor']` are mutually "
                "exclusive; give one (or neither, to step on `t`)."
            )
        perturb = options.pop("perturb", False)
        if not isinstance(perturb, bool):
            raise InputError(f"`options['perturb']` must be True or False, got {perturb!r}.")
        if perturb:
            grid["perturb"] = True
    else:
        if "max_num_steps" in options:
            kwargs["max_steps"] = options.pop("max_num_steps")
        if "dtype" in options:
            time_dtype = options.pop("dtype")
            if not isinstance(time_dtype, torch.dtype) or not time_dtype.is_floating_point:
                raise InputError(
                    f"`options['dtype']` (the dtype of time) must be a floating torch.dtype, "
                    f"got {time_dtype!r}."
                )
        if "max_step" in options:
            kwargs["max_step"] = _positive_or_inf("max_step", options.pop("max_step"))
        if "min_step" in options:
            v = options.pop("min_step")
            v = v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0:
                raise InputError(f"`options['min_step']` must be a number >= 0, got {v!r}.")
            if v > 0:  # torchdiffeq's meaning: steps at the minimum are accepted
                kwargs["min_step"] = float(v)
                kwargs["accept_min_step"] = True
        for k in ("step_t", "jump_t"):
            v = options.pop(k, None)
            if v is None:
                continue
            if not isinstance(v, torch.Tensor) or v.dim() > 1 or not v.is_floating_point():
                raise InputError(
                    f"`options['{k}']` must be a 1-D floating tensor of times, got "
                    f"{type(v).__name__}"
                    + (
                        f" {v.dtype} of shape {tuple(v.shape)}"
                        if isinstance(v, torch.Tensor)
                        else ""
                    )
                    + "."
                )
            if v.numel() > 0:
                kwargs[k] = v
        ctrl = {k: options.pop(k) for k in ("safety", "ifactor", "dfactor") if k in options}
        if ctrl:
            if "controller" in options:
                raise InputError(
                    "give either `options['controller']` or torchdiffeq's `safety`/"
                    "`ifactor`/`dfactor`, not both."
                )
            kwargs["controller"] = PIDController(
                safety=float(ctrl.get("safety", 0.9)),
                factor_max=float(ctrl.get("ifactor", 10.0)),
                factor_min=float(ctrl.get("dfactor", 0.2)),
            )
    kwargs.update(options)
    return kwargs, grid, time_dtype


# --- fixed grids -----------------------------------------------------------------------


def _step_size(step_size) -> float:
    """``options['step_size']`` checked: a positive finite number (or 1-element tensor)."""
    if isinstance(step_size, torch.Tensor) and step_size.numel() == 1:
        step_size = step_size.item()
    if isinstance(step_size, bool) or not isinstance(step_size, numbers.Real):
        raise InputError(f"`options['step_size']` must be a positive number, got {step_size!r}.")
    if not (0 < step_size < math.inf):
        raise InputError(f"`options['step_size']` must be positive and finite, got {step_size!r}.")
    return float(step_size)


def _grid_from_step_size(t, step_size):
    """torchdiffeq's grid: ``t0 + k·h`` up to the last time, which replaces the last node."""
    step_size = _step_size(step_size)
    d = 1.0 if t.shape[0] < 2 or bool(t[-1] >= t[0]) else -1.0
    u0, u1 = t[0] * d, t[-1] * d
    n = math.ceil(float((u1 - u0).detach()) / step_size + 1)
    if n > 10_000_000:
        raise InputError(
            f"`options['step_size']` = {step_size:g} makes {n} steps over the span "
            f"{float(u1 - u0):g}; use a larger step."
        )
    nodes = torch.arange(0, n, dtype=t.dtype, device=t.device) * step_size + u0
    nodes = torch.cat([nodes[:-1], u1.reshape(1)]) * d
    return nodes


# torchdiffeq's fixed-step event search gives up after this many steps
EVENT_SEARCH_STEPS = 20_000
_NUMPY_FLOAT = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _event_search_grid(t0, step_size, y0, reverse: bool):
    """The nodes of torchdiffeq's fixed-step event search from ``t0``: ``(nodes [G], note)``.

    torchdiffeq (``FixedGridODESolver.integrate_until_event``) rounds ``t0`` to ``y``'s
    real dtype and adds ``step_size`` in that dtype, once per step, at most
    ``EVENT_SEARCH_STEPS`` times; backward in time it does so on the negated time.  In
    float32 the steps so drift from ``step_size`` by up to an ulp of ``t`` each, and
    that drift is part of its answer (an unstable formula such as 11-step
    Adams–Bashforth amplifies it), so odenet steps on the same nodes, bit for bit.  The
    first node is ``t0`` itself (torchdiffeq's is ``t0`` rounded), the rest are exact
    in ``t0``'s dtype (float64), and they stop where the time no longer advances in
    ``y``'s dtype; ``note`` then says where, for the no-event error.
    """
    h = _step_size(step_size)
    d = -1.0 if reverse else 1.0
    dtype = y0.dtype.to_real() if y0.is_complex() else y0.dtype
    u0 = float(t0.detach()) * d
    np_dtype = _NUMPY_FLOAT.get(dtype)
    if np_dtype is not None:  # numpy's accumulate adds in order, in np_dtype
        steps = np.full(EVENT_SEARCH_STEPS + 1, h, dtype=np_dtype)
        steps[0] = u0
        u = torch.from_numpy(np.cumsum(steps, dtype=np_dtype))
    else:  # e.g. bfloat16, which numpy lacks: torchdiffeq's own additions
        u = [torch.tensor(u0, dtype=dtype)]
        for _ in range(EVENT_SEARCH_STEPS):
            u.append(u[-1] + h)
        u = torch.stack(u)
    u = u.to(device=t0.device, dtype=t0.dtype)
    u[0] = u0
    stuck = (u[1:] <= u[:-1]).nonzero()
    note = ""
    if stuck.numel():
        k = int(stuck[0, 0])
        if k == 0:
            raise InputError(
                f"`options['step_size']` = {h:g} is below the resolution of time in {dtype} "
                f"at t0 = {float(t0):g} (torchdiffeq's event search adds it to t in y's "
                "dtype, where t + step_size == t); use a larger step or a float64 state."
            )
        u = u[: k + 1]
        note = (
            f"; time stops advancing in {dtype} at t = {d * float(u[-1]):g} (step_size "
            "below its resolution there)"
        )
    return u * d, note


def _check_grid(grid, t):
    if not isinstance(grid, torch.Tensor) or grid.dim() != 1 or grid.shape[0] < 1:
        raise InputError(
            "`options['grid_constructor'](func, y0, t)` must return a 1-D tensor of grid "
            f"times, got {type(grid).__name__}"
            + (f" of shape {tuple(grid.shape)}" if isinstance(grid, torch.Tensor) else "")
            + "."
        )
    if bool(grid[0] != t[0]) or bool(grid[-1] != t[-1]):
        raise InputError(
            "the grid from `options['grid_constructor']` must start at t[0] and end at t[-1] "
            f"(got {float(grid[0]):g} .. {float(grid[-1]):g} for t from {float(t[0]):g} to "
            f"{float(t[-1]):g})."
        )
    return grid.to(t.dtype)


def _ends_of(t, grid):
    """``grid`` with ``t``'s own first and last times (equal values) as its ends."""
    if grid.shape[0] < 2:
        return t[:1]
    return torch.cat([t[:1], grid[1:-1], t[-1:]])


def _strictly_monotone(grid):
    """Drop zero-length steps (repeated nodes); the last node, which is ``t[-1]``, stays."""
    if grid.shape[0] < 2:
        return grid
    keep = torch.ones(grid.shape[0], dtype=torch.bool, device=grid.device)
    keep[:-1] = grid[:-1] != grid[1:]
    return grid[keep]


def _interp_on_grid(t, grid, ys, interp, f):
    """torchdiffeq's outputs of a fixed grid solve: ``ys [G, n]`` at ``grid`` -> ``[T, n]``.

    Output ``j ≥ 1`` comes from the first step ``(g_k, g_{k+1})`` with ``g_{k+1} ≥ t_j``
    (in the direction of integration): exactly ``y_k``/``y_{k+1}`` at its ends, else
    the linear (or cubic Hermite, with ``f`` at both ends) interpolant.
    """
    d = 1.0 if grid.shape[0] < 2 or bool(grid[-1] >= grid[0]) else -1.0
    gu = (grid * d).detach()
    tu = (t[1:] * d).detach()
    k1 = torch.searchsorted(gu[1:].contiguous(), tu.contiguous(), side="left") + 1
    k1 = k1.clamp(max=grid.shape[0] - 1)
    k0 = k1 - 1
    t0, t1, tj = grid[k0], grid[k1], t[1:]
    y0, y1 = ys[k0], ys[k1]
    w = ((tj - t0) / (t1 - t0)).to(ys.dtype)[:, None]
    if interp == "linear":
        mid = y0 + w * (y1 - y0)
    else:
        f0 = torch.stack([f(grid[k], ys[k]) for k in k0.tolist()])
        f1 = torch.stack([f(grid[k], ys[k]) for k in k1.tolist()])
        dt = (t1 - t0).to(ys.dtype)[:, None]
        h00 = (1 + 2 * w) * (1 - w) * (1 - w)
        h10 = w * (1 - w) * (1 - w)
        h01 = w * w * (3 - 2 * w)
        h11 = w * w * (w - 1)
        mid = h00 * y0 + h10 * dt * f0 + h01 * y1 + h11 * dt * f1
    if interp == "linear":
        # an output on a node is the node's state itself, with the flow's slope f there
        # as t's gradient (as odenet.solve's): torchdiffeq returns the state alone, whose
        # gradient 0 neither the flow (−0.529 for y' = −0.7 y at t = 0.4) nor the
        # discrete solution has, and the linear pieces' slopes differ on either side
        at1 = tj == t1
        # (the grid's last node is t[-1] itself, whose gradient the last step carries)
        inner = at1 & (k1 < grid.shape[0] - 1)
        if tj.requires_grad and torch.is_grad_enabled() and bool(inner.any()):
            nodes = inner.nonzero()[:, 0].tolist()
            slope = torch.zeros_like(mid)
            with torch.no_grad():
                for j in nodes:
                    slope[j] = f(t1[j].detach(), y1[j].detach())
            lag = tj - t1  # 0, with the derivatives of both (the grid moves with t0)
            lag = (lag - lag.detach()).to(ys.dtype)[:, None]
            mid = torch.where(at1[:, None], y1 + lag * slope, mid)  # slope 0 off `inner`
        else:
            mid = torch.where(at1[:, None], y1, mid)
    return torch.cat([ys[:1], mid])


# --- perturb ----------------------------------------------------------------------------


def _beside(t, toward):
    """The float next to ``t`` toward ``toward``, with ``t``'s gradient (torchdiffeq's
    ``_nextafter``)."""
    td = t.detach()
    return t + (torch.nextafter(td, toward.to(td.dtype)) - td)


class _Perturbed:
    """torchdiffeq's ``perturb=True``: ``func`` seen from inside each step of the grid.

    A field discontinuous at the grid nodes is evaluated at a step's start one float
    after it and at the step's end one float before it (torchdiffeq's ``Perturb.NEXT``
    / ``Perturb.PREV``), times in ``y``'s dtype; other stage times are untouched.  The
    loop's ``callback`` says which step is under way: between steps (the slope that
    starts the next step) a call at ``t`` is made one float after it.
    """

    def __init__(self, func, direction: float):
        self.func = func
        self.d = direction
        self.span = None  # (t0, t1) of the step under way

    def callback(self, kind, t, y, dt):
        if kind != "step":
            self.span = None
            return
        t0, t1 = t.detach(), (t + dt).detach()
        # the adjoint's steps run against the forward's direction: the same step, whose
        # start (in the forward's direction) is its end
        self.span = (t1, t0) if bool(dt * self.d < 0) else (t0, t1)

    def __call__(self, t, y):
        d = self.d
        td = t.detach()
        if self.span is None:
            t = _beside(t, td + d)
        else:
            t0, t1 = (x.to(td.dtype) for x in self.span)
            if bool((td - t0) * d <= 0):
                t = _beside(t0 + (t - td), t1)
            elif bool((t1 - td) * d <= 0):
                t = _beside(t1 + (t - td), t0)
        return self.func(t, y)


# --- scipy ------------------------------------------------------------------------------


class _NoGradient(torch.autograd.Function):
    """Passes ``out`` through; asking for a gradient through it raises."""

    @staticmethod
    def forward(ctx, out, *inputs):
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        raise InputError(
            "method='scipy_solver' has no gradients (scipy integrates numpy arrays); "
            "differentiate through an odenet method instead, e.g. method='dopri5', or "
            "odenet.solve(..., method='radau_iia5') for stiff problems."
        )


def _scipy_solve(func, y0, t, rtol, atol, options):
    """torchdiffeq's ``scipy_solver``: :func:`scipy.integrate.solve_ivp` on numpy copies."""
    import numpy as np
    from scipy.integrate import solve_ivp

    options = dict(options or {})
    unknown = sorted(set(options) - SCIPY_OPTIONS)
    if unknown:
        raise InputError(
            f"unknown `options` key(s) {unknown} for method='scipy_solver'; it takes "
            f"{sorted(SCIPY_OPTIONS)} (`solver` one of {', '.join(SCIPY_SOLVERS)})."
        )
    solver = options.get("solver", "LSODA")
    if solver not in SCIPY_SOLVERS:
        raise InputError(
            f"`options['solver']` must be one of {', '.join(SCIPY_SOLVERS)}, got {solver!r}."
        )
    # passed on only when given: scipy warns where a solver ignores `min_step`
    extra = {}
    if "min_step" in options:
        extra["min_step"] = float(options["min_step"])
    max_step = _positive_or_inf("max_step", options.get("max_step", math.inf))
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, torch.Tensor):
            if tol.requires_grad:
                raise InputError(f"`{name}` cannot require gradient.")
    shape, dtype, device = y0.shape, y0.dtype, y0.device
    tt = t.detach()
    if tt.shape[0] == 1:
        out = y0.detach()[None].clone()
    else:

        def np_func(s, y):
            with torch.no_grad():
                ts = torch.tensor(s, dtype=dtype, device=device)
                yy = torch.as_tensor(y, dtype=dtype, device=device).reshape(shape)
                return func(ts, yy).detach().reshape(-1).cpu().numpy().astype(np.float64)

        t_np = tt.cpu().double().numpy()

        def np_tol(v):
            if isinstance(v, torch.Tensor):
                return v.detach().expand(shape).reshape(-1).cpu().double().numpy()
            return v

        rtol_np = np_tol(rtol)
        if solver in ("Radau", "BDF") and np.ndim(rtol_np) > 0:
            # their Newton tolerance is a function of one rtol: scipy fails on an array
            # with a raw "truth value of an array is ambiguous"
            if np.ptp(rtol_np) > 0:
                raise InputError(
                    f"scipy's {solver} takes one `rtol` (its Newton tolerance depends on "
                    f"it), got one per component; give a number, a per-component `atol`, "
                    "or options['solver'] = 'LSODA'/'RK45'."
                )
            rtol_np = float(rtol_np[0])
        sol = solve_ivp(
            np_func,
            (t_np[0], t_np[-1]),
            y0.detach().reshape(-1).cpu().double().numpy(),
            method=solver,
            t_eval=t_np,
            rtol=rtol_np,
            atol=np_tol(atol),
            max_step=math.inf if max_step is None else max_step,
            **extra,
        )
        if sol.status != 0 or sol.y.shape[1] != t_np.shape[0]:
            from odenet._errors import SolverError

            raise SolverError(f"scipy's solve_ivp (method {solver!r}) failed: {sol.message}")
        out = torch.as_tensor(sol.y.T, device=device).to(dtype).reshape(-1, *shape)
    inputs = [x for x in (y0, t) if x.requires_grad]
    if torch.is_grad_enabled():
        with torch.enable_grad():
            inputs += hidden_leaves(func, t[0].detach().to(dtype), y0.detach())
    if torch.is_grad_enabled() and inputs:
        return _NoGradient.apply(out, *inputs)
    return out


# --- the entry points ---------------------------------------------------------------------


def odeint(
    func: Callable,
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    t: torch.Tensor,
    *,
    rtol: float | tuple = 1e-7,
    atol: float | tuple = 1e-9,
    method: str | None = None,
    options: dict | None = None,
    event_fn: Callable | None = None,
):
    """Solve ``dy/dt = func(t, y)`` like ``torchdiffeq.odeint`` and return ``y`` at ``t``.

    Parameters
    ----------
    func : callable ``func(t, y)``; ``y`` a Tensor or a tuple of Tensors.
        Called with ``t`` in ``y``'s dtype, as torchdiffeq does.
    y0 : Tensor or tuple of Tensors.
    t : Tensor ``[T]`` of output times (increasing or decreasing), any floating dtype.
    rtol, atol : tolerances (torchdiffeq's defaults 1e-7, 1e-9); per-tensor tuples for a
        tuple state.
    method : torchdiffeq name (``"dopri5"``, ``"rk4"`` = 3/8 rule, ``"dopri8"`` ->
        ``dop853``, ``"scipy_solver"``, ...) or any odenet method or tableau.
    options : dict of torchdiffeq's keys for the method's family.  Adaptive:
        ``first_step``, ``safety``, ``ifactor``, ``dfactor``, ``max_num_steps``,
        ``dtype`` (of time, default float64), ``norm``, ``max_step`` (``inf`` = no
        limit), ``min_step`` (torchdiffeq's meaning: no smaller step, and a step of
        that size is accepted whatever its error), ``step_t``, ``jump_t``.  Fixed-step:
        ``step_size``,
        ``grid_constructor``, ``interp`` (``"linear"``/``"cubic"``), ``perturb``
        (False only, for now); without ``step_size``/``grid_constructor`` they step
        on ``t``.  ``scipy_solver``: ``solver`` (``"LSODA"``, ``"RK45"``, ...),
        ``min_step``, ``max_step`` — no gradients through it (a backward raises).
        odenet's extras: ``controller``, ``newton_tol``, ``newton_max_iter``.
        Unknown keys raise :class:`~odenet.InputError`.
    event_fn : callable ``event_fn(t, y) -> scalar Tensor``, optional
        Integrate from ``t[0]`` until it crosses zero (``t[1]`` gives only the
        direction; ``t`` must have 2 elements).  Fixed-step methods need
        ``options["step_size"]`` and step as torchdiffeq's search does: ``t`` advanced
        by ``step_size`` in ``y``'s dtype, at most 20000 steps (then
        :class:`~odenet.SolverError`).

    Returns
    -------
    Tensor ``[T, *y0.shape]`` (or a tuple of them); with ``event_fn``, the pair
    ``(event_t, solution [2, *y0.shape])`` of torchdiffeq (states at ``t[0]`` and at
    the event, the event time differentiable: see :func:`odenet.odeint_event`).

    See ``docs/guide/torchdiffeq.md`` for every argument and option.
    """
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, "direct", {})


def odeint_adjoint(
    func: Callable,
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    t: torch.Tensor,
    *,
    rtol: float | tuple = 1e-7,
    atol: float | tuple = 1e-9,
    method: str | None = None,
    options: dict | None = None,
    event_fn: Callable | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict | None = None,
    adjoint_params=None,
):
    """``torchdiffeq.odeint_adjoint`` with odenet's checkpointed continuous adjoint.

    Gradients with respect to ``y0``, ``t`` and ``adjoint_params`` come from the
    adjoint ODE solved backward in time against the forward's own states (see
    :mod:`odenet.sensitivity`).  ``adjoint_params`` defaults to the parameters of
    ``func`` when it is an ``nn.Module``; otherwise (a closure such as
    ``lambda t, y: net(y)``) to every tensor requiring grad that ``func``'s output
    depends on — where torchdiffeq would raise.  ``adjoint_options`` (default, as
    torchdiffeq's: ``options`` but ``norm``, when ``adjoint_method`` is the forward's)
    takes the backward steps' options (``step_size``; ``first_step``, ``max_step``,
    ``min_step``, ``max_num_steps``, ``safety``/``ifactor``/``dfactor``; those that place
    steps must be the forward's: ``docs/guide/torchdiffeq.md``) and
    ``"norm": "seminorm" | "default" | callable``; the default norm is torchdiffeq's,
    ``max(|t|, norm(y), norm(adj_y), RMS of each adj_param)`` on the backward step's
    scaled errors (``t`` and ``y`` are not integrated backward here: theirs are 0), and
    the solution's ``grad_fn.adjoint_options`` is the dict whose ``"norm"`` the
    backward pass calls.  Fixed-step methods use the forward's grid backward (a
    ``grid_constructor`` is called once, for the forward).
    """
    if adjoint_params is not None and not isinstance(adjoint_params, torch.Tensor):
        try:
            adjoint_params = tuple(adjoint_params)  # a generator is read once
        except TypeError:
            pass  # not iterable: the solve's check names it
        else:
            norm = (
                (adjoint_options or {}).get("norm") if isinstance(adjoint_options, dict) else None
            )
            frozen = [isinstance(p, torch.Tensor) and not p.requires_grad for p in adjoint_params]
            if callable(norm) and any(frozen):
                warnings.warn(  # torchdiffeq's warning: the norm gets fewer tensors
                    f"`adjoint_params` item(s) {[i for i, x in enumerate(frozen) if x]} do not "
                    "require grad: they are left out of the adjoint pass and of the tuple your "
                    "`adjoint_options['norm']` receives.",
                    stacklevel=2,
                )
    adj = {
        "adjoint_rtol": adjoint_rtol,
        "adjoint_atol": adjoint_atol,
        "adjoint_method": _method_name(adjoint_method) if adjoint_method else None,
        "adjoint_options": adjoint_options,
        "adjoint_params": adjoint_params,
    }
    adj = {k: v for k, v in adj.items() if v is not None}
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, "adjoint", adj)


def _callback_from(func, fixed: bool, split, names=CALLBACKS):
    """torchdiffeq's ``func.callback_*`` methods (or their ``*_adjoint`` forms, ``names``)
    as one ``callback(kind, t, y, dt)``."""
    found = {n: getattr(func, n, None) for n in names}
    found = {n: c for n, c in found.items() if callable(c)}
    step, accept, reject = names
    if fixed:
        unused = sorted(set(found) - {step})
        if unused:  # torchdiffeq warns the same way: fixed grids have no verdicts
            warnings.warn(
                f"fixed-step solvers call only `{step}`; {unused} will not be called.",
                stacklevel=4,
            )
        found = {n: c for n, c in found.items() if n == step}
    if not found:
        return None
    by_kind = {"step": found.get(step), "accept": found.get(accept), "reject": found.get(reject)}

    def callback(kind, t, y, dt):
        fn = by_kind[kind]
        if fn is not None:
            # torchdiffeq passes its solver's internal step, positive in either direction
            # of time (forward and backward pass alike); odenet's loop signs it
            fn(t, split(y), abs(dt))

    return callback


def _adjoint_is_fixed(adjoint: dict, fixed: bool) -> bool:
    """Whether the backward pass steps without error control (torchdiffeq then calls
    only ``callback_step_adjoint``): its method's, by default the forward's."""
    from odenet._registry import method

    name = adjoint.get("adjoint_method")
    if name is None:
        return fixed
    return not method(name).is_adaptive


def _odeint(func, y0, t, rtol, atol, method, options, event_fn, sensitivity, adjoint):
    if not callable(func):
        raise InputError(f"`func` must be callable as func(t, y), got {type(func).__name__}.")
    if options is not None and not isinstance(options, dict):
        raise InputError(
            f"`options` must be a dict such as {{'step_size': 0.1}}, got {type(options).__name__}."
        )
    label = method if isinstance(method, str) else "dopri5" if method is None else "tableau"
    user_func = func
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if not t.is_floating_point():
        raise InputError(f"`t` must have a floating dtype, got {t.dtype}.")
    if t.dim() != 1:
        raise InputError(
            f"`t` must be 1-D for odeint (got shape {tuple(t.shape)}); odenet.solve takes "
            "per-sample times [B, T]."
        )
    if isinstance(y0, torch.Tensor) and y0.is_complex():
        return _complex_odeint(
            func, y0, t, rtol, atol, method, options, event_fn, sensitivity, adjoint
        )

    # torchdiffeq's default adjoint parameters: the module's, taken here because the
    # wrappers below hide the module (tensors it captures besides them are added below)
    module_params = None
    if sensitivity == "adjoint" and "adjoint_params" not in adjoint:
        if isinstance(func, torch.nn.Module):
            module_params = tuple(func.parameters())

    if event_fn is not None and callable(event_fn) and t.shape[0] == 2:
        event_fn = _vector_event(event_fn, t[0], y0)
    tuple_state = isinstance(y0, tuple | list)
    packer = None
    user_norm = (options or {}).get("norm")
    if tuple_state:
        packer = _TupleState(y0)

        def func(tt, y):
            return packer.flat(user_func(tt, packer.split(y)))

        y0 = packer.flat(y0)
        rtol = packer.tol("rtol", rtol, y0)
        atol = packer.tol("atol", atol, y0)
        if event_fn is not None and callable(event_fn):
            event_fn = _EventOf(event_fn, split=packer.split)
    exposed = backward = None
    if sensitivity == "adjoint":
        given = adjoint.get("adjoint_options")
        same_method = adjoint.get("adjoint_method") in (None, _method_name(method))
        if given is None and not same_method and options:
            # torchdiffeq raises here too: another method's options cannot be inferred
            raise InputError(
                f"`adjoint_method` differs from `method` and `options` {sorted(options)} "
                "was given, so the backward pass's options "
                "cannot be taken from it: pass `adjoint_options` too (`{}` for the "
                "backward method's defaults)."
            )
        if given is None and same_method:
            # torchdiffeq's default: the forward's options (but its norm) also steer the
            # backward pass
            given = {k: v for k, v in (options or {}).items() if k != "norm"}
            backward = (given, True)
        else:
            backward = (given or {}, False)
        exposed, solve_opts = _adjoint_options(given, user_norm, packer)
        adjoint = {**adjoint, "adjoint_options": {"norm": solve_opts["norm"]}}

    if isinstance(method, str) and method.lower() == "scipy_solver":
        if event_fn is not None:
            raise InputError(
                "`event_fn` with method='scipy_solver' is not supported (nor by "
                "torchdiffeq); use an odenet method such as 'dopri5'."
            )
        if any(callable(getattr(user_func, n, None)) for n in CALLBACKS):
            warnings.warn("method='scipy_solver' calls no callbacks.", stacklevel=3)
        if sensitivity != "direct":
            raise InputError(
                "method='scipy_solver' has no gradients, so odeint_adjoint cannot use it; "
                "call odeint (the result is detached from autograd) or use an odenet method."
            )
        ys = _scipy_solve(_cast_time(func), y0, t, rtol, atol, options)
        return packer.split(ys, lead=(ys.shape[0],)) if tuple_state else ys

    name = _method_name(method)
    fixed = _is_fixed(method, name)
    adams, options = _adams_method(
        method, options, rtol, atol, adjoint if sensitivity == "adjoint" else None
    )
    kwargs, grid_opts, time_dtype = _translate(options, fixed=fixed, method_label=str(label))
    if isinstance(kwargs.get("max_steps"), numbers.Integral) and t.dim() == 1:
        # torchdiffeq's max_num_steps bounds the attempts per output interval, odenet's
        # max_steps the whole solve: a solve torchdiffeq finishes stays within this
        kwargs["max_steps"] = int(kwargs["max_steps"]) * max(1, t.shape[0] - 1)
    if adams is not None:
        name = adams
    if not fixed:
        if tuple_state:
            kwargs["norm"] = _state_norm(user_norm, packer)
        # torchdiffeq keeps adaptive time in float64 (options["dtype"]) or finer
        tdt = torch.promote_types(time_dtype or torch.float64, t.dtype)
        t_solve = t.to(tdt)
    else:
        t_solve = t
    if sensitivity == "adjoint" and fixed and adams is None and not adjoint.get("adjoint_method"):
        # torchdiffeq's backward pass steps a fixed-step method (heun2) fixed too; odenet's
        # tableau for it carries an embedded pair, which would make the backward adaptive
        fixed_tab = _fixed_step_copy(name)
        if fixed_tab is not None:
            adjoint = {**adjoint, "adjoint_method": fixed_tab}
    if backward is not None:
        adjoint = {
            **adjoint,
            **_backward_steps(
                *backward,
                fixed=_adjoint_is_fixed(adjoint, fixed),
                label=str(adjoint.get("adjoint_method") or label),
                forward=kwargs,
                forward_grid=grid_opts,
                time_dtype=t_solve.dtype,
            ),
        }
    raw_func = func
    func = _cast_time(func)

    grid = None
    if fixed and ("step_size" in grid_opts or "grid_constructor" in grid_opts):
        if "step_size" in grid_opts:
            grid = _grid_from_step_size(t, grid_opts["step_size"])
        else:
            grid = _check_grid(grid_opts["grid_constructor"](func, y0, t), t)
            if sensitivity != "direct":
                # the adjoint gives the gradients with respect to its outputs' times (the
                # grid's) by the flow's formula, as torchdiffeq's does for t: through
                # t's own ends, which a grid built from floats would cut off.  (Direct
                # autograd differentiates the grid as the user built it, as torchdiffeq.)
                grid = _ends_of(t, grid)
        grid = _strictly_monotone(grid)
    perturbed = None
    if grid_opts.get("perturb"):
        if sensitivity != "direct":
            # the backward pass sees a jump at a node from both sides too: it linearizes
            # there once per forward step that meets it (shared, the gradient errors were
            # first order: 2 % / 1 % / 0.5 % at h = 0.25 / 0.125 / 0.0625 with rk4), each
            # evaluation told its step by the adjoint's callback
            adjoint = {**adjoint, "adjoint_split_nodes": True}
        d = 1.0 if t.shape[0] < 2 or bool(t[-1] >= t[0]) else -1.0
        perturbed = _Perturbed(raw_func, d)
        func = _cast_time(perturbed)

    split = (lambda y: packer.split(y)) if tuple_state else (lambda y: y)
    callback = _callback_from(user_func, fixed, split)
    if sensitivity == "adjoint":
        # the backward pass calls func.callback_*_adjoint(t, a, dt) with the adjoint
        # a = ∂L/∂y(t) in y's structure (torchdiffeq passes its augmented state)
        adj_callback = _callback_from(
            user_func, _adjoint_is_fixed(adjoint, fixed), split, ADJOINT_CALLBACKS
        )
        if perturbed is not None:  # the perturbed field learns each backward step too
            adj_callback = _both(perturbed.callback, adj_callback)
        if adj_callback is not None:
            adjoint = {**adjoint, "adjoint_callback": adj_callback}
    if perturbed is not None:  # the loop tells the perturbed field which step is under way
        callback = _both(perturbed.callback, callback)
    if callback is not None:
        kwargs["callback"] = callback
    if module_params is not None:
        # all of the module's parameters (unused ones get zero gradients, as in
        # torchdiffeq) and whatever else requiring grad its output depends on
        extra = hidden_leaves(func, t[0], y0, module_params) if torch.is_grad_enabled() else []
        adjoint = {**adjoint, "adjoint_params": module_params + tuple(extra)}
    if event_fn is not None:
        event_t, sol = _until_event(
            func,
            y0,
            t,
            event_fn,
            name,
            rtol,
            atol,
            fixed,
            grid_opts,
            kwargs,
            sensitivity,
            adjoint,
        )
        if exposed is not None and sol.requires_grad:
            sol = _CarryAdjointOptions.apply(exposed, sol)
        return event_t, packer.split(sol, lead=(2,)) if tuple_state else sol
    kwargs.setdefault("max_steps", 2**31 - 1)
    flow_t = None
    if grid is not None and sensitivity != "direct" and t.requires_grad and torch.is_grad_enabled():
        # torchdiffeq's adjoint gives every output time the flow's derivative,
        # ∂L/∂t_i = ⟨∂L/∂y_i, f(t_i, y_i)⟩ and ∂L/∂t_0 = −⟨a(t_0), f(t_0, y_0)⟩.  Through
        # the grid, an output on a node had none (the node's went to t_0 instead, which
        # all nodes move): the grid is cut from t, and t enters by terms of value zero,
        # y0 − δt_0·f_0 at the start and δt_i·f_i at each output, as in odenet.solve
        flow_t, t, grid = t, t.detach(), grid.detach()
        slope = _cast_time(raw_func)
        with torch.no_grad():
            f0 = slope(t[0], y0)
        y0 = y0 - (flow_t[0] - t[0]).to(y0.dtype) * f0
    t_run = t_solve if grid is None else grid
    ys = _run(func, y0, t_run, name, rtol, atol, fixed, sensitivity, kwargs, adjoint)
    if grid is not None:
        if t.shape[0] == 1:
            ys = ys[:1]
        else:
            n = y0.numel()
            ys = _interp_on_grid(
                t,
                grid,
                ys.reshape(ys.shape[0], n),
                grid_opts.get("interp", "linear"),
                lambda tt, yy: func(tt, yy.reshape(y0.shape)).reshape(n),
            ).reshape(t.shape[0], *y0.shape)
    if flow_t is not None:
        with torch.no_grad():
            slopes = torch.stack([slope(t[j], ys[j]) for j in range(ys.shape[0])])
        dt = (flow_t[: ys.shape[0]] - t[: ys.shape[0]]).to(ys.dtype)
        ys = ys + dt.reshape(-1, *[1] * y0.dim()) * slopes
    if exposed is not None and ys.requires_grad:
        ys = _CarryAdjointOptions.apply(exposed, ys)
    if tuple_state:
        return packer.split(ys, lead=(ys.shape[0],))
    return ys


def _complex_of(y):
    """The complex tensor of a real view ``[..., 2]``.  New tensors both ways, not
    ``view_as_complex``/``view_as_real`` views: their backward passes refuse the
    slices with odd storage offsets that the adjoint's cotangents are."""
    return torch.complex(y[..., 0], y[..., 1])


def _real_of(z):
    """``[..., 2]`` real and imaginary parts of a complex tensor (see :func:`_complex_of`)."""
    return torch.stack((z.real, z.imag), dim=-1)


class _RealView(torch.nn.Module):
    """A field of a complex state seen on its real view ``[..., 2]``: a module holding the
    user's ``func`` (so the adjoint finds its parameters, or a closure's tensors as for any
    field) and passing torchdiffeq's ``callback_*`` methods on with the complex state."""

    def __init__(self, func):
        super().__init__()
        self.func = func
        for name in CALLBACKS + ADJOINT_CALLBACKS:
            cb = getattr(func, name, None)
            if callable(cb):
                setattr(self, name, _complex_callback(cb))

    def forward(self, t, y):
        return _real_of(self.func(t, _complex_of(y)))


def _complex_callback(cb):
    def callback(t, y, dt):
        return cb(t, _complex_of(y), dt)

    return callback


def _complex_odeint(func, y0, t, rtol, atol, method, options, event_fn, sensitivity, adjoint):
    """torchdiffeq's complex states: solved on their real view, the real and imaginary
    parts as separate components of the error norm (torchdiffeq takes |z| per entry, so
    step counts can differ slightly); results, gradients and ``event_fn`` in complex."""

    def real(tol):  # a per-entry tolerance applies to both parts
        if isinstance(tol, torch.Tensor) and tol.dim() > 0:
            return tol.unsqueeze(-1).expand(*tol.shape, 2)
        return tol

    opts = dict(options or {})
    if callable(opts.get("norm")):
        user_norm = opts["norm"]
        opts["norm"] = lambda y: user_norm(_complex_of(y))
    ev = None
    if event_fn is not None:

        def ev(tt, y):
            return event_fn(tt, _complex_of(y))

    field = _RealView(func)  # a module: the adjoint finds a module's parameters in it
    out = _odeint(
        field,
        _real_of(y0),
        t,
        real(rtol),
        real(atol),
        method,
        opts or options,
        ev,
        sensitivity,
        adjoint,
    )
    if event_fn is not None:
        event_t, sol = out
        return event_t, _complex_of(sol)
    return _complex_of(out)


def _both(first, second):
    """``callback(kind, t, y, dt)`` calling ``first`` then ``second`` (if any)."""
    if second is None:
        return first

    def callback(kind, t, y, dt):
        first(kind, t, y, dt)
        second(kind, t, y, dt)

    return callback


class _EventOf(torch.nn.Module):
    """``event_fn`` seen through ``split`` (a flat state -> the user's tuple) and/or
    reduced by ``signs`` (torchdiffeq's vector events); a module, so that the event
    time's gradient still finds the user's event parameters (``fn`` itself or the
    module of a bound method)."""

    def __init__(self, fn, *, split=None, signs=None):
        super().__init__()
        self.fn = fn
        owner = getattr(fn, "__self__", None)
        self.owner = owner if isinstance(owner, torch.nn.Module) else None
        self.split = split
        self.signs = signs

    def forward(self, t, y):
        c = self.fn(t, y if self.split is None else self.split(y))
        if self.signs is None:
            return c
        return torch.min(c.reshape(-1) * self.signs)


def _vector_event(event_fn, t0, y0):
    """torchdiffeq's ``event_fn`` returning several values: the event is the first
    zero crossing of any of them.  Each is signed to start positive and the minimum
    taken (torchdiffeq's ``combine_event_functions``); a scalar ``event_fn`` stays."""
    with torch.no_grad():
        c0 = event_fn(t0, y0)
    if not isinstance(c0, torch.Tensor) or c0.numel() <= 1:
        return event_fn
    signs = torch.sign(c0.detach()).reshape(-1)
    if bool((signs == 0).any()):
        zero = (signs == 0).nonzero()[:, 0].tolist()
        raise InputError(
            f"`event_fn` is zero at t[0] in component(s) {zero}: an event function "
            "with several values must start away from zero in each (their signs at "
            "t[0] tell which way each one crosses)."
        )
    return _EventOf(event_fn, signs=signs)


def _until_event(func, y0, t, event_fn, name, rtol, atol, fixed, grid_opts, kwargs, sens, adjoint):
    """torchdiffeq's ``odeint(..., event_fn=...)``: ``(event_t, [y0, y(event_t)])`` for
    the flat state (``event_fn`` already sees the user's tuple); ``adjoint`` holds the
    ``adjoint_*`` options of the solve the gradient goes through."""

    if t.shape[0] != 2:
        raise InputError(
            f"`t` must have 2 elements with `event_fn` (t[0] the start, t[1] only the "
            f"direction), got {t.shape[0]}."
        )
    # float64 time (torchdiffeq's adaptive default): the search horizon is far beyond
    # t0, where float32 could not resolve a fixed step
    t0 = t[0].to(torch.promote_types(t.dtype, torch.float64))
    reverse = bool(t[1] < t[0])
    grid = None
    if fixed:
        if "step_size" not in grid_opts:
            raise InputError(
                "events with a fixed-step method need `options['step_size']` (the grid "
                "cannot come from `t`, which only gives the direction)."
            )
        # torchdiffeq's nodes; the crossing is located on the method's dense output
        # (cubic Hermite for methods without their own), whatever `interp` says
        nodes, note = _event_search_grid(t0, grid_opts["step_size"], y0, reverse)
        grid = dict(
            grid=nodes,
            horizon=(
                f"torchdiffeq's fixed-step event search takes at most {EVENT_SEARCH_STEPS} "
                f"steps of `options['step_size']` = {_step_size(grid_opts['step_size']):g}"
                f"{note}; use a larger `step_size`, or an adaptive method such as 'dopri5'"
            ),
        )
    event_t, sol = until_event(
        func,
        y0,
        t0,
        event_fn,
        reverse_time=reverse,
        sensitivity=sens,
        solve_kw=dict(method=name, rtol=rtol, atol=atol, **kwargs),
        adjoint_kw=adjoint,
        **(grid or {}),
    )
    return event_t.to(t.dtype), sol


def _cast_time(func):
    """Call ``func`` with ``t`` in ``y``'s dtype, as torchdiffeq does."""

    def f(t, y):
        if t.dtype != y.dtype:
            t = t.to(y.dtype)
        return func(t, y)

    return f


def _run(func, y0, t, name, rtol, atol, fixed, sensitivity, kwargs, adjoint):
    from odenet._solve import solve

    return solve(
        func,
        y0,
        t,
        method=name,
        rtol=rtol,
        atol=atol,
        sensitivity=sensitivity,
        grid_on_outputs=fixed,
        **kwargs,
        **adjoint,
    ).ys


def odeint_event(
    func: Callable,
    y0: torch.Tensor | tuple[torch.Tensor, ...],
    t0: float | torch.Tensor,
    *,
    event_fn: Callable,
    reverse_time: bool = False,
    odeint_interface: Callable | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate from ``t0`` until ``event_fn(t, y)`` crosses zero (torchdiffeq's API).

    Parameters
    ----------
    func : callable ``func(t, y)``; y0 : Tensor (or tuple of Tensors); t0 : scalar time.
    event_fn : callable ``event_fn(t, y) -> scalar Tensor``
    reverse_time : bool
        Integrate backward in time from ``t0``.
    odeint_interface : ``odenet.odeint`` (default) or ``odenet.odeint_adjoint``
    **kwargs
        Passed to ``odeint_interface`` (``rtol``, ``atol``, ``method``, ``options``,
        ``adjoint_params``...).

    Returns
    -------
    (event_t, solution)
        ``event_t`` 0-dim, differentiable with respect to ``y0``, ``t0``, the field's
        and the event function's parameters (implicit function theorem);
        ``solution`` ``[2, *y0.shape]``: the states at ``t0`` and at ``event_t``.
    """
    interface = odeint if odeint_interface is None else odeint_interface
    t0 = torch.as_tensor(t0)
    direction = -1.0 if reverse_time else 1.0
    t = torch.stack([t0.reshape(()), t0.reshape(()).detach() + direction])
    return interface(func, y0, t, event_fn=event_fn, **kwargs)
