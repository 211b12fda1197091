"""Validation of user input: one named validator per kind of argument.

Every public entry point (:func:`odenet.solve`, :func:`odenet.step`,
:func:`odenet.odeint`, the models, the stability API's step maps) cleans its
arguments here.  Each validator returns the cleaned value or raises an
:class:`~odenet.OdenetError` subclass whose message quotes the argument in
backticks, says what was received and how to fix it (scipy ``_ivp``'s style).

Nothing here depends on the loop, the stepper or the sensitivity package, so any
module may import it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch

from odenet._errors import (
    InputError,
    OdenetError,
    ToleranceWarning,
    VectorFieldError,
    warn_user,
)
from odenet._registry import method as lookup_method
from odenet._registry import multistep
from odenet.tableaus import ButcherTableau, methods, tableau

SENSITIVITIES = ("direct", "adjoint", "checkpoint")

_FULL = (torch.float32, torch.float64)

# dtypes too short for error control: an rtol below their eps (1e-3) cannot be met and
# Hairer's initial-step estimate underflows to NaN
_HALF = (torch.float16, torch.bfloat16)

# a state within this factor of the dtype's largest number overflows in the first
# stages (h·k, the error scale atol + rtol·|y|, the RMS norm's squares)
_OVERFLOW_HEADROOM = 1e6

# fewer distinct representable times than this in the span cannot be integrated
_MIN_RESOLVED_TIMES = 100


def _wider(dtype) -> str:
    """The advice "or use float64" where there is a wider dtype to use."""
    return "" if dtype == torch.float64 else " or use float64"


def is_traced(x) -> bool:
    """True under a ``torch.func`` transform (vmap/jacrev/jvp/grad), where a value
    check (``bool(tensor)``) is not allowed: checks that read values are skipped."""
    return isinstance(x, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(x)


# --- callables -------------------------------------------------------------------------


def check_callable(name: str, f, how: str = "f(t, y)", *, error=InputError) -> Callable:
    if not callable(f):
        raise error(f"`{name}` must be callable as {how}, got {type(f).__name__}.")
    return f


# --- states ----------------------------------------------------------------------------


def check_y0(y0, name: str = "y0") -> torch.Tensor:
    """A float32/float64 tensor, non-empty and finite (array-likes are converted)."""
    if (
        type(y0) is torch.Tensor  # the common case first, cheaply (odenet.step per layer)
        and y0.dtype in _FULL
        and y0.numel() > 0
        and not is_traced(y0)
        and math.isfinite(float(y0.detach().sum()))
    ):
        return y0
    if not isinstance(y0, torch.Tensor):
        try:
            y0 = torch.as_tensor(y0)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(
                f"`{name}` must be a torch.Tensor (or array-like of numbers), got "
                f"{type(y0).__name__}: {e}"
            ) from None
        if not y0.is_floating_point():
            y0 = y0.to(torch.get_default_dtype())
    if y0.is_complex():
        # .double() would drop the imaginary part: say how to keep it
        raise InputError(
            f"`{name}` is complex ({y0.dtype}); odenet integrates real states. Solve for "
            f"the real and imaginary parts, `torch.view_as_real({name})` (shape [..., 2]), "
            "with a field that returns `torch.view_as_real(f(t, torch.view_as_complex(y)))`."
        )
    if not y0.is_floating_point():
        raise InputError(
            f"`{name}` must have a floating dtype, got {y0.dtype}; convert it, "
            f"e.g. `{name}.double()`."
        )
    check_precision(name, y0.dtype)
    if y0.numel() == 0:
        raise InputError(f"`{name}` is empty (shape {tuple(y0.shape)}); give at least one state.")
    # one reduction first: NaN and inf propagate through a sum (a sum that overflows
    # from finite values is re-checked element-wise), at a third of isfinite().all()'s
    # cost, which matters for odenet.step called once per ResNet layer
    if not is_traced(y0) and not math.isfinite(float(y0.detach().sum())):
        check_finite_state(name, y0)
    return y0


def check_precision(name: str, dtype) -> None:
    if dtype in _HALF:
        raise InputError(
            f"`{name}` has dtype {dtype}: its precision (eps = {torch.finfo(dtype).eps:.1g}) is "
            "too low for error control and Newton solves, and its range overflows in the "
            f"error norm. Compute in float32 (`{name}.float()`; autocast may still run `f` in "
            "half precision) and cast the result back."
        )


def check_finite_state(name: str, y: torch.Tensor) -> None:
    finite = torch.isfinite(y)
    if bool(finite.all()):
        return
    nan = torch.isnan(y)
    bad = nan if bool(nan.any()) else ~finite
    idx = [int(i) for i in bad.nonzero()[0]]
    where = f" at index {idx}" if y.dim() else ""
    if bool(nan.any()):
        raise InputError(f"`{name}` contains NaN or inf (NaN{where}); the state must be finite.")
    raise InputError(
        f"`{name}` contains NaN or inf (inf{where}: a value beyond the largest {y.dtype}, "
        f"{torch.finfo(y.dtype).max:.3g}); the state must be finite. Rescale it "
        f"(nondimensionalize){_wider(y.dtype)}."
    )


def check_state_scale(y0: torch.Tensor, rtol, atol, name: str = "y0") -> None:
    """The error scale ``atol + rtol·|y|`` and the first stages must not overflow."""
    if is_traced(y0):
        return
    big = torch.finfo(y0.dtype).max
    m = float(y0.detach().abs().max())
    r = rtol if not isinstance(rtol, torch.Tensor) else float(rtol.detach().abs().max())
    a = atol if not isinstance(atol, torch.Tensor) else float(atol.detach().abs().max())
    scale = a + r * m
    if m > big / _OVERFLOW_HEADROOM or not math.isfinite(scale) or scale > big:
        raise InputError(
            f"`{name}` has values up to {m:.3g}, within a factor {_OVERFLOW_HEADROOM:.0e} of "
            f"the largest {y0.dtype} ({big:.3g}): the error scale atol + rtol·|y| "
            f"(= {scale:.3g}) and the Runge–Kutta stages overflow to inf. Rescale the state "
            f"(solve for y / c with f scaled accordingly){_wider(y0.dtype)}."
        )


# --- times -----------------------------------------------------------------------------


def exact_time_dtype(device) -> torch.dtype:
    """The dtype times are kept in when nothing narrower was asked for: float64, the
    clock's, except on MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def check_t(t, y0: torch.Tensor) -> torch.Tensor:
    """1-D ``[T]`` or per-sample ``[B, T]`` strictly monotone finite times."""
    # Times given exactly (Python numbers, numpy arrays, integer tensors) are kept in
    # float64, the clock's dtype: rounding them to a float32 state's dtype moved unix
    # timestamps 100 s apart to 128 s apart (y 24 % off, status ok).  A floating tensor
    # keeps its own dtype (the user chose it).
    exact = exact_time_dtype(y0.device)
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t, dtype=exact)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"`t` must be a 1-D or 2-D tensor of times: {e}") from None
    if not t.is_floating_point() and not t.is_complex():
        t = t.to(exact)
    check_precision("t", t.dtype)
    if t.dim() not in (1, 2):
        raise InputError(
            f"`t` must be 1-D [T] (shared times) or 2-D [B, T] (per-sample times), "
            f"got shape {tuple(t.shape)}."
        )
    if t.shape[-1] < 1:
        raise InputError("`t` is empty; give at least the initial time.")
    if not bool(torch.isfinite(t).all()):
        raise InputError("`t` contains NaN or inf; output times must be finite.")
    if t.dim() == 2:
        if y0.dim() == 0 or y0.shape[0] != t.shape[0]:
            raise InputError(
                f"per-sample times `t` of shape {tuple(t.shape)} need `y0` of shape "
                f"[{t.shape[0]}, ...] (one row per sample), got {tuple(y0.shape)}."
            )
    if t.shape[-1] > 1:
        dt = t.diff(dim=-1)
        increasing = (dt > 0).all(dim=-1)
        decreasing = (dt < 0).all(dim=-1)
        bad = ~(increasing | decreasing)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0]) if t.dim() == 2 else None
            tt = t[row] if row is not None else t
            d = tt.diff()
            where = int(((d <= 0) if bool(d[0] > 0) else (d >= 0)).nonzero()[0, 0]) + 1
            which = f"row {row} of `t`" if row is not None else "`t`"
            a, b = float(tt[where - 1]), float(tt[where])
            hint = "Sort the times and remove duplicates."
            if a == b:
                hint = (
                    f"The time {a!r} is given twice: give each output time once (index the "
                    "result to repeat an output)."
                )
                res = torch.finfo(t.dtype).eps * abs(a)
                # round-off is the likely cause only where the times' spacing is near it
                # (a duplicate 1.0 among float64 times a third apart was a plain duplicate)
                spacing = float((tt[-1] - tt[0]).abs()) / (tt.shape[-1] - 1)
                if a != 0.0 and spacing <= 1e6 * res:
                    hint = (
                        f"In {t.dtype} times near {abs(a):.3g} are resolved only to "
                        f"{res:.3g}: distinct times may have rounded to one. Shift the times "
                        f"to start near 0 (t − t[0]){_wider(t.dtype)}; otherwise sort them "
                        "and remove duplicates."
                    )
            raise InputError(
                f"{which} must be strictly increasing or strictly decreasing; at index "
                f"{where} it goes from {a!r} to {b!r}. {hint}"
            )
    return t


def check_time_resolution(s_rows: torch.Tensor) -> None:
    """The dtype must resolve the span ``[t0, t_end]`` into enough distinct times.

    A step ``h < eps·|t|`` leaves ``t + h == t``: when the whole span holds fewer than
    ``_MIN_RESOLVED_TIMES`` such quanta no step-size sequence can cross it, and the
    solve would only stall or fail after ``max_steps`` calls of ``f``.
    """
    if s_rows.shape[1] < 2 or is_traced(s_rows):
        return
    s = s_rows.detach()
    span = (s[:, -1] - s[:, 0]).abs()
    quantum = torch.finfo(s.dtype).eps * s.abs().amax(dim=1)
    resolved = span / quantum.clamp_min(torch.finfo(s.dtype).tiny)
    bad = resolved < _MIN_RESOLVED_TIMES
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        t0, t1 = float(s[k, 0]), float(s[k, -1])
        raise InputError(
            f"the time span of `t` ([{abs(t0):.12g}, {abs(t1):.12g}], length {float(span[k]):.3g}) "
            f"is too short for its magnitude in {s.dtype}: times are resolved only to "
            f"eps·|t| = {float(quantum[k]):.3g}, so at most {float(resolved[k]):.0f} distinct "
            "steps fit and t + h == t for smaller steps. Shift the times to start near 0 "
            f"(pass t − t[0] and f(t + t[0], y)){_wider(s.dtype)}."
        )


# --- tolerances and step controls -------------------------------------------------------


def warn_rtol_below_round_off(rtol, dtype) -> None:
    """A :class:`~odenet.ToleranceWarning` for an adaptive solve whose ``rtol`` (its
    smallest positive entry) is below ``100·eps`` of the state's dtype, scipy's floor
    (scipy raises such an rtol to it): there the error estimates are mostly round-off
    and the error may end far above ``rtol`` with status ok.  Measured on the random
    linear systems of tests/test_honesty_property.py in float32 at rtol = eps: dop853
    56·rtol, radau_iia9 133·rtol, radau_iia5 202·rtol (at 100·eps 2.5, 6.3, 6.6·rtol;
    studies/benchmarks/round_off_floor_results.md)."""
    # a host-side check: on the CPU whatever the default device (or rtol's) is
    r = torch.as_tensor(rtol, dtype=torch.float64, device="cpu").detach().abs().reshape(-1)
    r = r[r > 0]
    floor = 100 * torch.finfo(dtype).eps
    if r.numel() == 0 or float(r.min()) >= floor:
        return
    warn_user(
        f"rtol = {float(r.min()):.3g} is below 100·eps of {dtype} ({floor:.2g}): no error "
        "estimate resolves it, and the error may end 100× or more above rtol while the "
        f"solve reports success (scipy raises such an rtol to 100·eps). Use rtol ≥ "
        f"{floor:.2g}{_wider(dtype)}.",
        ToleranceWarning,
    )


def check_tolerances(rtol, atol, y0: torch.Tensor | None = None):
    """Finite non-negative numbers, or tensors broadcastable to ``y0``'s shape (a numpy
    array or a list of numbers, as scipy's ``solve_ivp`` takes, becomes such a tensor)."""
    rtol, atol = (_as_tolerance_tensor(v, y0) for v in (rtol, atol))
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, torch.Tensor):
            if not v.is_floating_point() and v.dtype not in (torch.int32, torch.int64):
                raise InputError(f"`{name}` must be a real tensor, got dtype {v.dtype}.")
            if y0 is not None:
                try:
                    ok = torch.broadcast_shapes(v.shape, y0.shape) == y0.shape
                except RuntimeError:
                    ok = False
                if not ok:
                    raise InputError(
                        f"`{name}` of shape {tuple(v.shape)} does not broadcast to the state's "
                        f"shape {tuple(y0.shape)}; give a number or a tensor of shape "
                        f"{tuple(y0.shape)} (or one that broadcasts to it, such as "
                        f"{tuple(y0.shape[-1:])})."
                    )
            if bool((v < 0).any()) or not bool(torch.isfinite(v).all()):
                raise InputError(f"`{name}` must be finite and non-negative, got {v!r}.")
        elif (
            isinstance(v, bool)
            or not isinstance(v, numbers.Real)
            or not (v >= 0)
            or not math.isfinite(v)
        ):
            raise InputError(f"`{name}` must be a finite non-negative number, got {v!r}.")
    # a numpy scalar becomes a Python float: np.float32(1e-6) carried float32 arithmetic
    # into atol + rtol·|y| (check_state_scale refused a float64 y0 of 1e39 as overflowing)
    rtol, atol = (v if isinstance(v, torch.Tensor) else float(v) for v in (rtol, atol))
    if not isinstance(rtol, torch.Tensor) and not isinstance(atol, torch.Tensor):
        if rtol == 0 and atol == 0:
            raise InputError("`rtol` and `atol` are both 0; at least one must be positive.")
    elif _no_tolerance_somewhere(rtol, atol):
        # a component with no tolerance at all: its error scale is 0 once it is 0
        raise InputError(
            "`rtol` and `atol` are both 0 for some component; each component needs a "
            "positive `rtol` or `atol`."
        )
    return rtol, atol


def _no_tolerance_somewhere(rtol, atol) -> bool:
    try:
        return bool(((torch.as_tensor(rtol) == 0) & (torch.as_tensor(atol) == 0)).any())
    except RuntimeError:  # shapes that do not broadcast are refused against y0's
        return False


def _as_tolerance_tensor(v, y0):
    """A per-component tolerance given as a numpy array or a list -> a tensor in ``y0``'s
    dtype and device (numbers and tensors pass through)."""
    if isinstance(v, (np.ndarray, list, tuple)):
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            return v  # not numbers: the checks below say what is wrong
        if arr.ndim == 0:
            return float(arr)
        like = {} if y0 is None else dict(dtype=y0.dtype, device=y0.device)
        return torch.as_tensor(arr, **like)
    return v


def check_positive(name: str, v, *, allow_none: bool = False, integer: bool = False):
    """A positive finite number (``integer=True``: a positive int) or ``None`` if allowed."""
    if v is None and allow_none:
        return None
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(v, bool) or not isinstance(v, kind) or not (v > 0) or not math.isfinite(v):
        what = "a positive integer" if integer else "a positive finite number"
        raise InputError(f"`{name}` must be {what}, got {v!r}.")
    return int(v) if integer else float(v)


def check_nonnegative(name: str, v) -> float:
    """A finite number ``≥ 0`` (e.g. ``min_step``)."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if (
        isinstance(v, bool)
        or not isinstance(v, numbers.Real)
        or not (v >= 0)
        or not math.isfinite(v)
    ):
        raise InputError(f"`{name}` must be a non-negative number, and finite; got {v!r}.")
    return float(v)


def check_newton(newton_tol, newton_max_iter):
    """``newton_tol`` > 0 finite and ``newton_max_iter`` ≥ 1 integer (each or ``None``)."""
    tol = check_positive("newton_tol", newton_tol, allow_none=True)
    if newton_max_iter is not None:
        if isinstance(newton_max_iter, bool) or not isinstance(newton_max_iter, numbers.Integral):
            raise InputError(
                f"`newton_max_iter` must be a positive integer (the cap on Newton iterations "
                f"per stage solve, e.g. 8), got {newton_max_iter!r}."
            )
        if newton_max_iter < 1:
            raise InputError(
                f"`newton_max_iter` must be at least 1 (Newton needs one iteration to solve "
                f"the stage equations), got {newton_max_iter!r}."
            )
        newton_max_iter = int(newton_max_iter)
    return tol, newton_max_iter


def check_jac(jac, jac_sparsity, y0: torch.Tensor, tab, per_sample: bool):
    """``jac`` (callable ``jac(t, y)`` or a constant ``[n, n]`` matrix) and
    ``jac_sparsity`` (an ``[n, n]`` pattern) for an implicit method, or an error.

    Returns ``(jac, sparsity)`` with the pattern as :class:`odenet._jacobian.Sparsity`.
    """
    import numpy as np
    import scipy.sparse as sp

    from odenet._jacobian import Sparsity

    if jac is None and jac_sparsity is None:
        return None, None
    given = (
        "`jac`"
        if jac_sparsity is None
        else "`jac_sparsity`"
        if jac is None
        else ("`jac` and `jac_sparsity`")
    )
    if not getattr(tab, "is_implicit", False):
        raise InputError(
            f"{given} would be unused: method {tab.name!r} is explicit and never forms a "
            "Jacobian. Drop it, or pick an implicit method (e.g. 'radau_iia5', 'kvaerno5')."
        )
    n = int(y0[0].numel()) if per_sample else int(y0.numel())
    if jac is not None and not callable(jac):
        shape = getattr(jac, "shape", None)
        if shape is None or tuple(shape) != (n, n):
            raise InputError(
                f"`jac` must be callable as jac(t, y) -> [n, n] (or a constant [n, n] "
                f"matrix), n = {n}; got {type(jac).__name__}"
                + (f" of shape {tuple(shape)}." if shape is not None else ".")
            )
        if per_sample:
            raise InputError(
                "a constant `jac` matrix needs a shared time grid; with per-sample times "
                "give jac(t [B], y [B, ...]) -> [B, n, n]."
            )
    sparsity = None
    if jac_sparsity is not None:
        pat = jac_sparsity
        if isinstance(pat, torch.Tensor):
            pat = (pat.to_dense() if pat.layout != torch.strided else pat).detach().cpu().numpy()
        if not sp.issparse(pat):
            pat = np.asarray(pat)
            if not (pat.dtype == bool or np.issubdtype(pat.dtype, np.number)):
                raise InputError(
                    "`jac_sparsity` must be an [n, n] boolean pattern (array, tensor or "
                    f"scipy.sparse matrix), got an array of {pat.dtype}."
                )
        if tuple(pat.shape) != (n, n):
            raise InputError(
                f"`jac_sparsity` has shape {tuple(pat.shape)}; the state has n = {n} "
                f"components, so give an [{n}, {n}] pattern (entry (i, j) true where f_i "
                "depends on y_j)."
            )
        sparsity = Sparsity.from_pattern(pat)
    return jac, sparsity


def check_sensitivity(sensitivity) -> str:
    if sensitivity not in SENSITIVITIES:
        raise InputError(
            f"`sensitivity` must be one of {', '.join(map(repr, SENSITIVITIES))}, "
            f"got {sensitivity!r}."
        )
    return sensitivity


def check_flag(name: str, v) -> bool:
    """A plain ``True``/``False`` (e.g. ``compile``): truthy strings like ``"no"`` are refused."""
    if not isinstance(v, bool):
        raise InputError(f"`{name}` must be True or False, got {v!r}.")
    return v


def check_norm(norm):
    if norm is not None and not callable(norm):
        raise InputError(f"`norm` must be callable on a tensor, got {type(norm).__name__}.")
    return norm


def resolve_method(method, fixed: bool) -> ButcherTableau:
    """The tableau of ``method``; an adaptive solve needs an embedded error estimate.

    A multistep name gives its method object (:class:`odenet._multistep.LinearMultistep`
    or a family of its own module, see :func:`odenet._registry.registered`).
    """
    lm = multistep(method)
    if lm is not None:
        lm.check_use(fixed=fixed, sensitivity="direct")
        return lm
    tab = lookup_method(method)  # an unknown name: the error lists both kinds
    if not fixed and not tab.is_adaptive:
        adaptive = [m for m in methods() if tableau(m).is_adaptive]
        raise InputError(
            f"method {tab.name!r} has no embedded error estimate, so it cannot choose its "
            f"own steps: pass `step_size=h` for a fixed grid, or use an adaptive method "
            f"({', '.join(adaptive)})."
        )
    return tab


def check_step_size(name: str, h) -> torch.Tensor | float:
    """A finite step or time: a real number or a one-element tensor (a negative step
    integrates backward)."""
    if type(h) is float and math.isfinite(h):
        return h
    if isinstance(h, torch.Tensor):
        if h.numel() != 1:
            raise InputError(
                f"`{name}` must be a number or a 0-dim tensor, got shape {tuple(h.shape)}."
            )
        if not is_traced(h) and not bool(torch.isfinite(h).all()):
            raise InputError(f"`{name}` must be finite, got {h.item()!r}.")
        return h
    if isinstance(h, bool) or not isinstance(h, numbers.Real) or not math.isfinite(h):
        raise InputError(f"`{name}` must be a finite number, got {h!r}.")
    return h


# --- the vector field ---------------------------------------------------------------------


def call_field(f: Callable, t, y: torch.Tensor):
    """``f(t, y)`` on the first call: the user's exception comes back as a
    :class:`VectorFieldError` chained to it (odenet's own errors pass unchanged), and
    an ``f`` that writes into its argument ``y`` is refused."""
    version = _version(y)
    if version is not None:
        # f sees a copy on this one call: a field that writes into it is refused below
        # with the caller's y0 untouched
        y = y.clone()
        version = _version(y)
    try:
        out = f(t, y)
    except (OdenetError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        if is_traced(y) or isinstance(e, torch.OutOfMemoryError):
            raise
        when = t.detach().flatten()[0].item() if isinstance(t, torch.Tensor) else t
        raise VectorFieldError(
            f"the vector field `f` raised {type(e).__name__} on its first call "
            f"f(t = {when:.6g}, y of shape {tuple(y.shape)}): {e}. Check that `f` accepts "
            "(t, y) in that order, with a 0-dim tensor t (per-sample grids: t of shape [B])."
        ) from e
    if version is not None and _version(y) != version:
        # the state (and y0 at the first call) is the solver's, read again after f:
        # y' = -y written as `return y.neg_()` ended at 0.441 for e^{-1} = 0.368,
        # status ok, and left y0 negated
        raise VectorFieldError(
            "the vector field `f` modified its argument `y` in place (an in-place op such "
            "as `y.mul_(...)`, `y += ...` or `y[...] = ...`); the solver reads that state "
            "again after calling f, so the solution would be wrong. Compute on a new tensor "
            "(`-y` instead of `y.neg_()`, `y = y.clone()` first if f must write into it)."
        )
    return out


def _version(y: torch.Tensor):
    """``y``'s in-place version counter; None where there is none to read (traced or
    functorch-wrapped tensors)."""
    if is_traced(y):
        return None
    try:
        return y._version
    except Exception:  # a tensor subclass or transform wrapper without one
        return None


def check_field_output(out, y: torch.Tensor, t, *, dtype: bool = True, finite: bool = True):
    """``f``'s first output must be a tensor of the state's shape (and dtype), finite."""
    if not isinstance(out, torch.Tensor):
        raise VectorFieldError(
            f"the vector field `f` must return a torch.Tensor, got {type(out).__name__}."
        )
    if out.shape != y.shape:
        raise VectorFieldError(
            f"the vector field `f` returned shape {tuple(out.shape)} for a state of shape "
            f"{tuple(y.shape)}; dy/dt must have the state's shape (it would otherwise be "
            "broadcast silently)."
        )
    if dtype and out.dtype != y.dtype:
        raise VectorFieldError(
            f"the vector field `f` returned dtype {out.dtype} for a state of dtype {y.dtype}; "
            "return the state's dtype (e.g. build constants with dtype=y.dtype)."
        )
    if finite and not is_traced(out) and not bool(torch.isfinite(out).all()):
        when = t.detach().flatten()[0].item() if isinstance(t, torch.Tensor) else float(t)
        m = float(y.detach().abs().max())
        hint = ""
        if m > math.sqrt(torch.finfo(y.dtype).max):
            hint = (
                f" The state reaches |y| = {m:.3g}, beyond the square root of the largest "
                f"{y.dtype}: products in `f` overflow. Rescale the state{_wider(y.dtype)}."
            )
        raise VectorFieldError(
            f"the vector field `f` returned NaN or inf at the initial time t = "
            f"{when:.6g} for a finite initial state.{hint}"
        )
    return out


def field_changed(t, out, expected: tuple, dtype: torch.dtype, device) -> VectorFieldError | None:
    """The error for an ``f`` whose output at ``t`` is not of the ``expected`` shape,
    ``dtype`` or ``device`` that its first (checked) call returned; None if it is.

    The solve checks the first call only (:func:`check_field_output`); later calls are
    not checked one by one (that would cost every call), so this is asked where a later
    call's output fails to combine with the others, and once at the end of a solve.
    """
    when = t.detach().flatten()[0].item() if isinstance(t, torch.Tensor) else t
    try:
        when = f"{float(when):.6g}"
    except (TypeError, ValueError):
        when = repr(when)
    fix = (
        "`f` must return dy/dt of the state's shape, dtype and device on every call (look "
        "for a branch on t or y that returns something else)."
    )
    if not isinstance(out, torch.Tensor):
        return VectorFieldError(
            f"the vector field `f` returned {type(out).__name__} at t = {when}, where its "
            f"first call returned a tensor of shape {expected}; {fix}"
        )
    if is_traced(out):
        return None
    got = tuple(out.shape)
    for what, first, now in (
        ("shape", expected, got),
        ("dtype", dtype, out.dtype),
        ("device", torch.device(device), out.device),
    ):
        if first != now:
            shapes = "" if what == "shape" else f" (shape {got}, expected {expected})"
            return VectorFieldError(
                f"the vector field `f` returned {what} {now} at t = {when}{shapes}, but the "
                f"state's {what} {first} on its first call; {fix}"
            )
    return None
