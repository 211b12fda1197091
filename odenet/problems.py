"""Test problems with closed-form or high-accuracy reference solutions.

A [`Problem`][odenet.problems.Problem] is one small object: a vector field `f(t, y)` on
torch tensors, an initial state `y0`, a time span, and (optionally) an exact solution.  Problems
without an exact solution get a *reference* solution from a high-accuracy scipy
solve (DOP853, or Radau for stiff problems, at `rtol = 1e-13` in float64), cached
on disk under `$ODENET_CACHE` (default `~/.cache/odenet`).

Built-in problems are made by name:

    >>> import odenet.problems as P
    >>> "kepler" in P.problems()
    True
    >>> prob = P.get_problem("kepler", eccentricity=0.5)
    >>> prob.solution([0.0, 1.0]).shape
    (2, 4)

A user's own problem:

    >>> import numpy as np
    >>> prob = P.Problem(lambda t, y: -y, y0=[1.0], span=(0.0, 1.0),
    ...                  exact=lambda t: np.exp(-t)[:, None])
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import math
import os
import pickle
import sys
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odenet._build import library_version
from odenet._errors import InputError, SolverError
from odenet._tempfiles import clean_temp_files, temp_file

REFERENCE_RTOL = 1e-13
REFERENCE_ATOL = 1e-15
_CACHE_SCHEMA = "odenet.reference/1"

# The stiff test set with each problem's absolute floor ``d`` (per problem, from the
# scales of its components; each problem's ``atol_ratio``): solve with ``atol = d·rtol``
# and measure the error as ``max_i |y_i − ref_i| / (d + |ref_i|)`` at the final time
# (the "mixed" measure of Problem.error).
STIFF_SUITE: dict[str, float] = {
    "robertson_long": 1e-6,
    "van_der_pol_relaxation": 1e-3,
    "hires": 1e-4,
    "oregonator": 1e-6,
    "brusselator_1d": 1.0,
}


class UnknownProblemError(InputError, KeyError):
    """A problem name is not registered (the message lists the valid names)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ReferenceSolutionError(SolverError):
    """The high-accuracy reference solve failed."""


# --- the problem object ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Problem:
    """An initial value problem `dy/dt = f(t, y)`, `y(t0) = y0` on `span = (t0, t1)`.

    Parameters
    ----------
    f : callable
        `f(t, y) -> dy/dt` on torch tensors; `t` is a 0-dim tensor, `y` has the
        shape of `y0` (1-D `[n]` here).
    y0 : array-like, shape [n]
        Initial state.
    span : (float, float)
        Start and end time `(t0, t1)`, finite and different: `t1 < t0` integrates
        backward in time (a terminal value problem), as `solve` and scipy's
        `solve_ivp` do; studies then grid and measure the span in that direction.
    exact : callable, optional
        `exact(t) -> y` with `t` a numpy array `[T]` and `y` `[T, n]`: the closed
        form solution.  Without it, `solution` computes a cached reference solve.
    name : str
    description : str
    stiff : bool
        Use Radau (implicit) instead of DOP853 for the reference solve.
    f_numpy : callable, optional
        `f_numpy(t, y)` on float and `[n]` numpy arrays; used by the scipy reference
        and scipy comparisons (otherwise `f` is wrapped).
    invariants : mapping of str to callable, optional
        `name -> g(y [T, n]) -> [T]`, quantities conserved by the exact flow.
    spec : (str, dict), optional
        `(registered name, parameters)` that rebuilds the problem with
        [`get_problem`][odenet.problems.get_problem] (set by the registry; lets worker
        processes rebuild built-in problems instead of pickling closures).
    atol_ratio : float or array-like [n]
        The absolute tolerance in units of `rtol`: comparisons solve with
        `atol = atol_ratio · rtol` (one number, or one per component, in the units of
        `y`), and the *mixed* error measure treats components below `atol_ratio` as
        absolute.  Default `1e-3`; a stiff problem whose components span decades sets
        the scale below which a component is noise (Robertson's `y2` ~ 1e-5: 1e-6).
    jac_numpy : callable, optional
        `jac_numpy(t, y) -> [n, n]` (numpy array or scipy sparse matrix), the exact
        Jacobian `∂f/∂y`, passed to scipy as `jac` by the `scipy:NAME+jac` comparison rows.
    jac_sparsity : array-like or scipy sparse [n, n], optional
        Nonzero pattern of `∂f/∂y`, passed to scipy as `jac_sparsity` by the
        `scipy:NAME+sparsity` rows (grouped finite differences, sparse LU).
    exact_rtol : float, optional
        Set when `exact` is itself a numerical reference (a problem too large for the
        generic one, such as `brusselator_2d`): the relative tolerance it was computed
        at.  Listings then call it a reference, and convergence studies put their error
        floor at `1e3 · exact_rtol` instead of round-off (None: `exact` is a closed form).
    """

    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    y0: Any
    span: tuple[float, float]
    exact: Callable[[np.ndarray], np.ndarray] | None = None
    name: str = "custom"
    description: str = ""
    stiff: bool = False
    f_numpy: Callable[[float, np.ndarray], np.ndarray] | None = None
    invariants: Mapping[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    spec: tuple[str, dict] | None = None
    atol_ratio: Any = 1e-3
    jac_numpy: Callable[[float, np.ndarray], Any] | None = None
    jac_sparsity: Any = None
    exact_rtol: float | None = None

    def __post_init__(self) -> None:
        if not callable(self.f):
            raise InputError(f"`f` must be callable as f(t, y), got {type(self.f).__name__}.")
        try:
            y0 = np.asarray(
                self.y0.detach().cpu().numpy() if isinstance(self.y0, torch.Tensor) else self.y0,
                dtype=np.float64,
            )
        except (TypeError, ValueError) as e:
            raise InputError(f"`y0` must be an array of numbers: {e}") from None
        if y0.ndim == 0:
            y0 = y0.reshape(1)
        if y0.ndim != 1 or y0.size == 0 or not np.all(np.isfinite(y0)):
            raise InputError(
                f"`y0` must be a non-empty finite 1-D array [n], got shape {y0.shape}; "
                "flatten a structured state into one vector."
            )
        try:
            t0, t1 = (float(s) for s in self.span)
        except (TypeError, ValueError):
            raise InputError(
                f"`span` must be a pair (t0, t1) of numbers, got {self.span!r}."
            ) from None
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 != t0):
            raise InputError(
                f"`span` must be two different finite times (t0, t1), got {(t0, t1)} "
                "(t1 < t0 integrates backward)."
            )
        if self.exact is not None and not callable(self.exact):
            raise InputError("`exact` must be callable as exact(t [T]) -> y [T, n], or None.")
        object.__setattr__(self, "y0", y0)
        object.__setattr__(self, "span", (t0, t1))
        object.__setattr__(self, "atol_ratio", _check_atol_ratio(self.atol_ratio, y0.size))
        if self.jac_numpy is not None and not callable(self.jac_numpy):
            raise InputError("`jac_numpy` must be callable as jac(t, y [n]) -> [n, n], or None.")
        if self.jac_sparsity is not None:
            shape = getattr(self.jac_sparsity, "shape", None) or np.shape(self.jac_sparsity)
            if tuple(shape) != (y0.size, y0.size):
                raise InputError(
                    f"`jac_sparsity` must have shape (n, n) = {(y0.size, y0.size)}, got "
                    f"{tuple(shape)}."
                )

    # --- convenience -----------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Number of state components `n`."""
        return int(self.y0.shape[0])

    @property
    def has_exact(self) -> bool:
        """Whether `exact` gives the solution (a closed form or a stored reference)."""
        return self.exact is not None

    @property
    def solution_kind(self) -> str:
        """`"exact"` (a closed form) or `"reference"` (a numerical one, generic or stored)."""
        return "exact" if self.has_exact and self.exact_rtol is None else "reference"

    def atol(self, rtol: float) -> float | np.ndarray:
        """The absolute tolerance that goes with `rtol`: `atol_ratio · rtol` (a number, or
        `[n]` when the problem sets one scale per component)."""
        return self.atol_ratio * rtol

    def error(self, y, ref, measure: str = "abs") -> np.ndarray:
        """Per-component error of `y` against `ref` (numpy, same shape `[..., n]`).

        `measure`: `"abs"` `|y − ref|`; `"rel"` `|y − ref| / |ref|` (infinite where
        `ref = 0` and `y ≠ 0`); `"mixed"` `|y − ref| / (atol_ratio + |ref|)`, relative for
        components above their absolute scale and absolute (in units of it) below.
        """
        diff = np.abs(np.asarray(y, dtype=np.float64) - ref)
        if measure == "abs":
            return diff
        if measure == "rel":
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(diff == 0, 0.0, diff / np.abs(ref))
        if measure == "mixed":
            return diff / (self.atol_ratio + np.abs(ref))
        raise InputError(f"unknown error measure {measure!r}; use one of {', '.join(MEASURES)}.")

    def y0_tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """`y0` as a torch tensor `[n]`."""
        return torch.as_tensor(self.y0, dtype=dtype)

    def numpy_field(self) -> Callable[[float, np.ndarray], np.ndarray]:
        """`f` as `f(t: float, y: ndarray [n]) -> ndarray [n]` for scipy."""
        if self.f_numpy is not None:
            return self.f_numpy
        f = self.f

        def fn(t, y):
            with torch.no_grad():
                out = f(torch.tensor(float(t), dtype=torch.float64), torch.from_numpy(y))
            return out.detach().numpy().reshape(-1)

        return fn

    def solution(self, t: Sequence[float] | np.ndarray) -> np.ndarray:
        """The true solution at times `t` (numpy `[T]`, inside `span`, either
        direction) → `[T, n]`.

        Exact when the problem has a closed form; otherwise a reference solve cached
        on disk (see [`reference_solution`][odenet.problems.reference_solution]).
        """
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        lo, hi = sorted(self.span)
        slack = 1e-12 * max(1.0, abs(lo), abs(hi))
        if t.ndim != 1 or np.any(t < lo - slack) or np.any(t > hi + slack):
            raise InputError(
                f"`t` must be a 1-D array of times inside span {self.span}, got "
                f"[{t.min():g}, {t.max():g}]."
            )
        if self.exact is not None:
            y = np.asarray(self.exact(t), dtype=np.float64)
            return y.reshape(t.shape[0], self.dim)
        return reference_solution(self, t)

    def key(self) -> str:
        """A stable identity: spec (built-ins and files) or name, y0, span and a
        fingerprint of what the solution depends on.

        The fingerprint covers `f`, `f_numpy`, `exact` and `jac_numpy` with everything
        they compute from (code, constants, defaults, closure values, the module globals
        they name, the attributes of a user's module they read, a user's class's
        constants and methods, a network's parameters, buffers and plain attributes;
        arrays by their bytes, not their repr) and the
        nonzero pattern `jac_sparsity`, so a cached reference or a results folder is never
        reused after a user problem, or the file it comes from, was edited.
        """
        ident = {
            "name": self.name,
            "spec": list(self.spec) if self.spec is not None else None,
            "y0": self.y0.tolist(),
            "span": list(self.span),
            "f": _fingerprint(self.f),
            "f_numpy": _fingerprint(self.f_numpy),
            "exact": _fingerprint(self.exact),
            "jac_numpy": _fingerprint(self.jac_numpy),
        }
        if self.jac_sparsity is not None:  # (absent, keys made before it counted hold)
            ident["jac_sparsity"] = _pattern_fingerprint(self.jac_sparsity)
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Problem({self.name!r}, n={self.dim}, span={self.span}, {self.solution_kind})"


MEASURES = ("abs", "rel", "mixed")


def _check_atol_ratio(ratio, n: int):
    """A positive finite number, or an array `[n]` of them (returned as a float array)."""
    try:
        arr = np.asarray(ratio, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.array(np.nan)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != n) or not np.all(np.isfinite(arr)):
        raise InputError(
            f"`atol_ratio` must be a positive number or one per component ([{n}]), got {ratio!r}."
        )
    if not np.all(arr > 0):
        raise InputError(
            f"`atol_ratio` must be positive (atol = atol_ratio · rtol), got {ratio!r}."
        )
    return float(arr) if arr.ndim == 0 else arr


# functions calling functions, objects holding objects: deep enough for a problem file.
# Containers and arrays (plain data) do not count towards it; past it an object counts
# as this process's token (``_OPAQUE``): its key is never equal to another run's, so a
# cached reference or a results folder is recomputed, never wrongly reused
_FINGERPRINT_DEPTH = 12


def _fingerprint(obj) -> str | None:
    """A hash of ``obj`` and everything a call of it computes from (see :func:`_feed`);
    equal across processes for equal content."""
    if obj is None:
        return None
    h = hashlib.sha256()
    try:
        _feed(h, obj, 0, {})
    except RecursionError:  # data nested past Python's recursion limit: unknown content
        h = hashlib.sha256(f"too deep {_OPAQUE}".encode())
    return h.hexdigest()[:16]


def _pattern_fingerprint(pattern) -> str | None:
    """A hash of a Jacobian's nonzero pattern (dense or scipy sparse) by its shape and
    the positions of its nonzeros, whatever the storage."""
    if pattern is None:
        return None
    from scipy import sparse

    csr = sparse.csr_matrix(pattern if sparse.issparse(pattern) else np.asarray(pattern) != 0)
    csr.eliminate_zeros()
    csr.sort_indices()
    h = hashlib.sha256(repr(tuple(csr.shape)).encode())
    for a in (csr.indptr, csr.indices):
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _put(h, tag: str, data) -> None:
    h.update(tag.encode() + b"\0" + (data if isinstance(data, bytes) else str(data).encode()))
    h.update(b"\1")


def _feed(h, obj, depth: int, seen: dict, names: tuple[str, ...] | None = None) -> None:
    """Feed the content of ``obj`` into the hash ``h``.

    Scalars and strings by value; arrays and tensors by dtype, shape and bytes (a repr
    elides large arrays); containers item by item (sets in a canonical order); a Python
    function by its code (nested code too), constants, defaults, closure values and the
    module globals its code names; a C function (``torch.sin``) by its qualified name;
    a class of the user's (or odenet's) by its name, bases and the values in its
    ``__dict__`` (methods by their code, class constants by value); a
    ``torch.nn.Module`` by its class, its parameters and buffers and its plain
    attributes (``self.k = 1.0``); another object by its class and attributes.  A
    library's module or class counts by name; a user module by the values of the
    attributes the code reading it names (``names``: a function's ``co_names``), or all
    its public attributes when reached otherwise.  Anything whose repr is only an
    address counts by its pickled bytes, or, where it does not pickle, by a token of
    this process (a cache is then not reused by the next run: in doubt, recompute).
    Plain data (containers, arrays) is read whatever its nesting; an object more than
    ``_FINGERPRINT_DEPTH`` functions or objects deep counts by that token too.
    """
    if obj is None or isinstance(obj, bool | int | float | complex | str | bytes):
        _put(h, "v", repr(obj))
        return
    if depth > _FINGERPRINT_DEPTH:
        # content not read: never equal to another run's (a type name alone would let
        # an edit this deep reuse the old problem's cached reference and results)
        # (and by its id, so that two such objects of one process differ too)
        _put(h, "deep", f"{type(obj).__qualname__} {_OPAQUE} {id(obj)}")
        return
    # a module is read through different names by different functions: it is seen
    # once per set of names
    user_module = isinstance(obj, types.ModuleType) and not _by_name(obj.__name__)
    mark = (id(obj), names) if user_module else id(obj)
    if mark in seen:  # (its content was fed where it was first met)
        _put(h, "deep", type(obj).__qualname__)
        return
    # the object is kept alive with its id: a temporary (``dict(vars(obj))``) freed
    # while hashing would leave its id to the next one, wrongly taken as seen
    seen[mark] = obj
    deeper = depth + 1
    if isinstance(obj, types.ModuleType):
        _put(h, "module", obj.__name__)
        if user_module:
            _feed_user_module(h, obj, deeper, seen, names)
    elif isinstance(obj, torch.Tensor):
        x = obj.detach().cpu()
        _put(h, "tensor", f"{x.dtype}{tuple(x.shape)}")
        h.update(x.contiguous().view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    elif isinstance(obj, np.ndarray) and obj.dtype != object:
        _put(h, "array", f"{obj.dtype}{obj.shape}")
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, list | tuple):  # plain data: its items are no deeper
        _put(h, type(obj).__name__, len(obj))
        for x in obj:
            _feed(h, x, depth, seen)
    elif isinstance(obj, dict):
        _put(h, "dict", len(obj))
        for k, v in obj.items():
            _feed(h, k, depth, seen)
            _feed(h, v, depth, seen)
    elif isinstance(obj, set | frozenset):
        # a set's order (and so its repr) varies with the process's string hashing
        _put(h, type(obj).__name__, len(obj))
        for part in sorted(_fingerprint_in(x, depth, seen) for x in obj):
            _put(h, "item", part)
    elif isinstance(obj, functools.partial):
        _put(h, "partial", "")
        for x in (obj.func, obj.args, obj.keywords):
            _feed(h, x, deeper, seen)
    elif isinstance(obj, types.MethodType):
        _put(h, "method", "")
        _feed(h, obj.__func__, deeper, seen)
        _feed(h, obj.__self__, deeper, seen)
    elif isinstance(obj, types.FunctionType) and _library_module(obj.__module__):
        # a library's function is its name: its internals (caches, registries) are not
        # the user's problem, and need not hash alike in two processes
        _put(h, "library function", f"{obj.__module__}.{obj.__qualname__}")
    elif isinstance(obj, types.FunctionType):
        _feed_function(h, obj, deeper, seen)
    elif isinstance(obj, types.BuiltinFunctionType):
        # ``torch.sin`` and ``torch.cos`` have reprs that differ only in an address:
        # a C function is its qualified name, and a bound one also its object's content
        _put(h, "builtin", f"{obj.__module__}.{getattr(obj, '__qualname__', obj.__name__)}")
        owner = getattr(obj, "__self__", None)
        if not isinstance(owner, types.ModuleType | type):
            _feed(h, owner, deeper, seen)
    elif isinstance(obj, type):
        if _by_name(getattr(obj, "__module__", None)):
            _put(h, "repr", repr(obj))  # a library's (or odenet's) class is its name
        else:
            _feed_user_class(h, obj, deeper, seen)
    elif isinstance(obj, torch.nn.Module):
        _put(h, "nn.Module", type(obj).__qualname__)
        _feed(h, type(obj).forward, deeper, seen)
        _feed(h, dict(obj.state_dict()), deeper, seen)
        # what forward reads beside the state dict: its class (methods, constants),
        # plain attributes (``self.k = 1.0``), non-persistent buffers, submodules
        if not _by_name(type(obj).__module__):
            _feed(h, type(obj), deeper, seen)
        _put(h, "buffers", "")
        _feed(h, dict(obj.named_buffers()), deeper, seen)
        plain = {k: v for k, v in vars(obj).items() if k not in _MODULE_MACHINERY}
        _put(h, "attributes", "")
        _feed(h, plain, deeper, seen)
        _feed(h, dict(obj.named_children()), deeper, seen)
    elif not isinstance(obj, type) and hasattr(obj, "__dict__"):
        _put(h, "object", type(obj).__qualname__)
        if _by_name(type(obj).__module__):
            call = inspect.getattr_static(type(obj), "__call__", None)
            if isinstance(call, types.FunctionType):
                _feed(h, call, deeper, seen)
        else:  # its methods and class attributes (``self.k`` may be one)
            _feed(h, type(obj), deeper, seen)
        _feed(h, dict(vars(obj)), deeper, seen)
    elif slots := _slot_names(type(obj)):  # no __dict__: its slots hold its content
        _put(h, "slots", type(obj).__qualname__)
        if not _by_name(type(obj).__module__):
            _feed(h, type(obj), deeper, seen)
        for name in slots:
            try:
                value = getattr(obj, name)
            except AttributeError:  # an unset slot
                _put(h, "unset", name)
                continue
            _put(h, "slot", name)
            _feed(h, value, deeper, seen)
    else:
        r = repr(obj)
        if " at 0x" in r:  # the repr names an address: the content, where it pickles
            try:
                r = hashlib.sha256(pickle.dumps(obj)).hexdigest()
            except Exception:  # unpicklable: unknown content, never equal to another run's
                r = f"{type(obj).__qualname__} {_OPAQUE}"
        _put(h, "repr", r)


# an object whose content cannot be read counts as this token: a key holding one is
# shared by this process and its forked workers, never by a later run
_OPAQUE = os.urandom(16).hex()

# torch.nn.Module's own bookkeeping, what a bare module holds (its parameters, buffers
# and children are fed apart)
_MODULE_MACHINERY = frozenset(vars(torch.nn.Module()))

# a class's __dict__ entries that are machinery, not what its methods compute from
_CLASS_MACHINERY = frozenset({
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__firstlineno__",
    "__static_attributes__", "__annotations__", "__annotate__", "__orig_bases__",
    "__parameters__", "__type_params__",
})  # fmt: skip


def _slot_names(cls) -> list[str]:
    """The ``__slots__`` a Python class and its bases declare (none for C types)."""
    names: list[str] = []
    for klass in cls.__mro__:
        declared = vars(klass).get("__slots__", ())
        for name in (declared,) if isinstance(declared, str) else declared:
            if name not in ("__dict__", "__weakref__") and name not in names:
                names.append(name)
    return names


def _fingerprint_in(obj, depth: int, seen: dict) -> str:
    h = hashlib.sha256()
    _feed(h, obj, depth, seen)
    return h.hexdigest()


def _feed_user_class(h, cls: type, depth: int, seen: dict) -> None:
    """A class by its name, bases and the values of its own ``__dict__``: methods by
    their code, static and class methods and properties by their functions, class
    constants by value (``Rates.k = 3.0`` is another problem than ``Rates.k = 1.0``)."""
    _put(h, "class", cls.__qualname__)  # (its module's name may differ between processes)
    _feed(h, cls.__bases__, depth, seen)
    for k, v in vars(cls).items():
        if k in _CLASS_MACHINERY or isinstance(
            v, types.MemberDescriptorType | types.GetSetDescriptorType
        ):
            continue
        _put(h, "attr", k)
        if isinstance(v, staticmethod | classmethod):
            _put(h, type(v).__name__, "")
            v = v.__func__
        elif isinstance(v, property):
            _put(h, "property", "")
            v = (v.fget, v.fset, v.fdel)
        _feed(h, v, depth, seen)


def _feed_user_module(h, module, depth: int, seen: dict, names) -> None:
    """A user's module by the values of the attributes ``names`` (what the code reading
    it names; a submodule read through them the same way), or by all its public
    attributes, in name order, when no code says which it reads."""
    content = vars(module)
    if names is None:
        names = sorted(k for k in content if not k.startswith("_"))
    for name in names:
        if name in content:
            _put(h, "attr", name)
            value = content[name]
            if isinstance(value, types.ModuleType):
                _feed(h, value, depth, seen, tuple(names))
            else:
                _feed(h, value, depth, seen)


def _library_module(name) -> bool:
    """Whether the module called ``name`` is the standard library's or an installed
    package's other than odenet (counted by name); unknown modules are not."""
    top = (name or "").partition(".")[0]
    if not top or top == "odenet":
        return False
    if top in sys.stdlib_module_names:
        return True
    path = getattr(sys.modules.get(name), "__file__", None) or ""
    return "site-packages" in path or "dist-packages" in path


def _by_name(module_name) -> bool:
    """Whether a module, or a class of the module, called ``module_name`` counts by its
    name: a library's or odenet's own (odenet's problem functions are data, its classes
    and modules are not the user's to edit)."""
    return (module_name or "").partition(".")[0] == "odenet" or _library_module(module_name)


def _feed_function(h, fn, depth: int, seen: dict) -> None:
    names: list[str] = []

    def code(c):
        _put(h, "code", c.co_code.hex())
        # the bytecode refers to attribute and global names by index: `y.exp()` and
        # `y.sin()` compile to the same bytes, only co_names tells them apart
        _put(h, "names", " ".join(c.co_names))
        names.extend(c.co_names)
        for k in c.co_consts:
            if isinstance(k, types.CodeType):
                code(k)
            else:
                _put(h, "const", repr(k))

    code(fn.__code__)
    # a module the function holds is read through the attribute names of its code
    read = tuple(dict.fromkeys(names))
    for x in (fn.__defaults__, fn.__kwdefaults__):
        _feed(h, x, depth, seen)
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            _put(h, "cell", "<empty>")
            continue
        _feed(h, value, depth, seen, read if isinstance(value, types.ModuleType) else None)
    glob = fn.__globals__
    for name in read:
        if name in glob:
            _put(h, "global", name)
            value = glob[name]
            _feed(h, value, depth, seen, read if isinstance(value, types.ModuleType) else None)


# --- the reference-solution cache -------------------------------------------------------


def cache_dir() -> Path:
    """Where reference solutions are cached: `$ODENET_CACHE` or `~/.cache/odenet`."""
    env = os.environ.get("ODENET_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "odenet"


#: reference folders already swept of stale temp files by this process
_SWEPT: set[Path] = set()


def _clean_reference_temps(folder: Path, *, always: bool = False) -> None:
    """Remove the temp files that writers killed mid-write left in ``folder``.

    The same rule as a results folder's (:func:`odenet._tempfiles.clean_temp_files`:
    the writer's pid is gone, or the file is over ten minutes old); done before every
    write and on the first read of a folder in this process, so a kill -9 during a write
    leaves nothing that lasts.
    """
    if not always and folder in _SWEPT:
        return
    with contextlib.suppress(OSError):
        if folder.is_dir():
            clean_temp_files(folder)
            _SWEPT.add(folder)


def _atomic_write_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_reference_temps(path.parent, always=True)
    # the writer's pid in the name tells a live writer's file from a killed one's
    fd, tmp = temp_file(path.parent, ".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def reference_solution(problem: Problem, t: np.ndarray, *, use_cache: bool = True) -> np.ndarray:
    """High-accuracy solution `[T, n]` at times `t [T]` (scipy, float64, rtol 1e-13).

    DOP853 for non-stiff problems, Radau for stiff ones (given the problem's
    `jac_numpy`, or else its `jac_sparsity`, where it has one).  Results are cached in
    [`cache_dir`][odenet.problems.cache_dir] under a key made of the problem identity, the
    requested times, scipy's version and the reference tolerances; a cache file that
    cannot be read is recomputed and replaced (with a warning naming it).  Temp files
    that a writer killed mid-write left in the cache folder are removed (see
    :func:`_clean_reference_temps`).
    """
    from scipy.integrate import solve_ivp

    t = np.asarray(t, dtype=np.float64)
    method = "Radau" if problem.stiff else "DOP853"
    # a stiff problem's own Jacobian, or its pattern, spares Radau n difference
    # quotients per Jacobian (a large sparse system was out of reach without them)
    jacobian = {}
    if problem.stiff and problem.jac_numpy is not None:
        jacobian["jac"] = problem.jac_numpy
    elif problem.stiff and problem.jac_sparsity is not None:
        jacobian["jac_sparsity"] = problem.jac_sparsity
    h = hashlib.sha256()
    h.update(problem.key().encode())
    h.update(method.encode())
    h.update(np.ascontiguousarray(t).tobytes())
    # what else decides the numbers: the solver's code and its tolerances
    h.update(f"scipy {library_version('scipy')} {REFERENCE_RTOL!r} {REFERENCE_ATOL!r}".encode())
    path = cache_dir() / "references" / f"{problem.name}-{h.hexdigest()[:20]}.npz"
    if use_cache:
        _clean_reference_temps(path.parent)
    if use_cache and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["schema"]) != _CACHE_SCHEMA or not np.array_equal(z["t"], t):
                    raise ValueError("schema or times do not match")
                y = np.array(z["y"])
            if y.shape == (t.shape[0], problem.dim) and np.all(np.isfinite(y)):
                return y
            raise ValueError(f"stored array has shape {y.shape}")
        except Exception as e:  # any unreadable file: recompute, don't crash
            warnings.warn(
                f"reference cache file {path} is unreadable ({e}); recomputing it.",
                RuntimeWarning,
                stacklevel=2,
            )
    t0, t1 = problem.span
    # solve_ivp takes t_eval sorted in the direction of integration
    order = np.argsort(t if t1 > t0 else -t, kind="stable")
    ts_clip = np.clip(t[order], min(t0, t1), max(t0, t1))
    sol = solve_ivp(
        problem.numpy_field(),
        (t0, t1),
        problem.y0,
        method=method,
        t_eval=ts_clip,
        rtol=REFERENCE_RTOL,
        atol=REFERENCE_ATOL,
        **jacobian,
    )
    if not sol.success:
        raise ReferenceSolutionError(
            f"reference solve of problem {problem.name!r} with scipy {method} failed: "
            f"{sol.message}; give the problem an `exact` solution or mark it `stiff=True`."
        )
    y = np.empty((t.shape[0], problem.dim))
    y[order] = sol.y.T
    if use_cache:
        _atomic_write_npz(path, schema=np.array(_CACHE_SCHEMA), t=t, y=y)
    return y


# --- the registry -----------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., Problem]] = {}


def register_problem(name: str):
    """Decorator: register `factory(**params) -> Problem` under `name`."""

    def deco(factory):
        _REGISTRY[name] = factory
        return factory

    return deco


def problems() -> list[str]:
    """Names of the built-in problems, sorted."""
    return sorted(_REGISTRY)


def get_problem(name: str | Problem, **params) -> Problem:
    """Build the built-in problem `name` with optional parameters (see each factory)."""
    if isinstance(name, Problem):
        if params:
            raise InputError("parameters can only be given with a problem *name*.")
        return name
    if is_file_spec(name):
        name = _absolute_spec(name)
    elif name not in _REGISTRY:
        raise UnknownProblemError(
            f"unknown problem {name!r}; choose one of: {', '.join(problems())} "
            "(or pass your own odenet.problems.Problem, or PATH.py:FUNCTION)."
        )
    known = parameters(name)
    unknown = [k for k in params if k not in known]
    if unknown:
        raise InputError(
            f"problem {name!r} has no parameter {', '.join(map(repr, unknown))}; its "
            f"parameters are {_param_list(known) or 'none'}."
        )
    try:
        prob = _factory(name)(**params)
    except TypeError as e:
        raise InputError(f"bad parameters for problem {name!r}: {e}") from None
    if not isinstance(prob, Problem):
        raise InputError(
            f"{name} returned {type(prob).__name__}, not an odenet.problems.Problem; make the "
            "function return Problem(f, y0=..., span=..., ...)."
        )
    object.__setattr__(prob, "spec", (name, dict(params)))
    return prob


# --- problems defined in a user's file: PATH.py:FUNCTION -----------------------------------


def is_file_spec(name) -> bool:
    """Whether `name` names a problem factory in a file, `PATH.py:FUNCTION`."""
    return isinstance(name, str) and ".py:" in name


def _absolute_spec(spec: str) -> str:
    path, _, func = spec.rpartition(":")
    if not path.endswith(".py") or not func.isidentifier():
        raise InputError(
            f"problem {spec!r} is not PATH.py:FUNCTION; write e.g. my_problems.py:stiff_decay "
            "(a function in that file returning an odenet.problems.Problem)."
        )
    return f"{os.path.abspath(os.path.expanduser(path))}:{func}"


_FILE_MODULES: dict[str, Any] = {}


def exec_source(module, path) -> None:
    """Run the file ``path`` in ``module``, compiled from its source now: the import
    system's bytecode cache (``__pycache__``) trusts a file's size and whole second of
    modification, so an edit within the second that keeps the size ran the old code."""
    with open(path, "rb") as fh:
        source = fh.read()
    exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)


def _factory(name: str) -> Callable[..., Problem]:
    """The registered factory, or the function `FUNCTION` of the file in `PATH.py:FUNCTION`.

    A file is imported once per process and again when it changed on disk (worker
    processes import it again, so its problems need not be picklable).
    """
    if not is_file_spec(name):
        return _REGISTRY[name]
    import importlib.util

    path, _, func = _absolute_spec(name).rpartition(":")
    if not os.path.isfile(path):
        raise InputError(f"problem file {path} does not exist; check the PATH in PATH.py:FUNCTION.")
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size)
    module, loaded = _FILE_MODULES.get(path, (None, None))
    if module is None or loaded != stamp:  # first use, or the file was edited since
        mod_name = "odenet_user_problem_" + hashlib.sha256(path.encode()).hexdigest()[:12]
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        try:
            exec_source(module, path)
        except Exception as e:  # the user's file: any error is a bad problem spec
            raise InputError(
                f"cannot import problem file {path}: {type(e).__name__}: {e}"
            ) from None
        _FILE_MODULES[path] = (module, stamp)
    fn = getattr(module, func, None)
    if not callable(fn):
        defined = sorted(
            k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
        )
        raise InputError(
            f"problem file {path} has no function {func!r}; it defines: "
            f"{', '.join(defined) or 'no functions'}."
        )
    return fn


def parameters(name: str) -> dict[str, Any]:
    """Parameters of the built-in problem `name` and their defaults, in order.

    >>> parameters("kepler")["eccentricity"]
    0.5
    """
    import inspect

    if not is_file_spec(name) and name not in _REGISTRY:
        raise UnknownProblemError(
            f"unknown problem {name!r}; choose one of: {', '.join(problems())}."
        )
    sig = inspect.signature(_factory(name))
    return {
        k: v.default
        for k, v in sig.parameters.items()
        if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)
    }


def _param_list(params: Mapping[str, Any]) -> str:
    # a float with 4 significant digits or as many more as give it back (`-1e+06`,
    # `321.8122`): a rounded default (`t1=321.8` for HIRES's span) copied back would be
    # another problem
    from odenet.plotting import exact_text

    return ", ".join(
        f"{k}={exact_text(v, 'g', 4)}" if isinstance(v, float) else f"{k}={v}"
        for k, v in params.items()
    )


def describe() -> list[dict]:
    """One row per built-in problem: name, dimension, span, exact/reference, stiff,
    parameters (`name=default`), text."""
    rows = []
    for name in problems():
        p = get_problem(name)
        rows.append(
            {
                "name": name,
                "parameters": _param_list(parameters(name)) or "-",
                "dim": p.dim,
                "span": p.span,
                "solution": p.solution_kind,
                "stiff": p.stiff,
                "invariants": ",".join(p.invariants) or "-",
                "description": p.description,
            }
        )
    return rows


# --- closed-form problems ---------------------------------------------------------------


@register_problem("exponential")
def exponential(lam: float = -1.0, t1: float = 2.0) -> Problem:
    """`y' = λ y`, `y(0) = 1`; exact `y = e^{λt}`."""
    return Problem(
        f=lambda t, y: lam * y,
        y0=[1.0],
        span=(0.0, t1),
        exact=lambda t: np.exp(lam * t)[:, None],
        name="exponential",
        description=f"y' = {lam:g} y, y(0) = 1; exact e^(λt)",
        f_numpy=lambda t, y: lam * y,
    )


@register_problem("cos")
def cos_problem(t1: float = 4.0) -> Problem:
    """`y' = y cos t`, `y(0) = 1`; exact `y = e^{sin t}` (non-autonomous)."""
    return Problem(
        f=lambda t, y: y * torch.cos(t),
        y0=[1.0],
        span=(0.0, t1),
        exact=lambda t: np.exp(np.sin(t))[:, None],
        name="cos",
        description="y' = y cos t, y(0) = 1; exact e^(sin t)",
        f_numpy=lambda t, y: y * np.cos(t),
    )


def _linear(A: np.ndarray, y0: np.ndarray, span, name: str, description: str, stiff=False):
    from scipy.linalg import expm

    A = np.asarray(A, dtype=np.float64)
    At = torch.as_tensor(A)
    t0 = span[0]
    # A = V Λ V^{-1} when V is well conditioned (cheap for many output times);
    # otherwise expm at each time.
    w, V = np.linalg.eig(A)
    use_eig = np.linalg.cond(V) < 1e6
    if use_eig:
        c = np.linalg.solve(V, y0.astype(complex))

    def exact(t):
        if use_eig:
            return np.real((V[None] * (np.exp(np.outer(t - t0, w)) * c)[:, None, :]).sum(-1))
        return np.stack([expm(A * (s - t0)) @ y0 for s in t])

    return Problem(
        f=lambda t, y: At.to(y.dtype) @ y,
        y0=y0,
        span=span,
        exact=exact,
        name=name,
        description=description,
        stiff=stiff,
        f_numpy=lambda t, y: A @ y,
    )


@register_problem("linear")
def linear(t1: float = 2.0) -> Problem:
    """`y' = A y` with a fixed non-normal 3×3 `A`; exact `y = e^{At} y0`."""
    A = np.array([[-1.0, 2.0, 0.0], [-2.0, -1.0, 1.0], [0.0, 0.0, -0.5]])
    return _linear(
        A, np.array([1.0, 0.0, 1.0]), (0.0, t1), "linear", "y' = A y (3×3); exact e^(At) y0"
    )


@register_problem("harmonic")
def harmonic(omega: float = 1.0, t1: float = 2 * math.pi) -> Problem:
    """`x'' = -ω² x` as `(x, v)`; exact `x = cos ωt`; energy conserved."""
    w = float(omega)
    return Problem(
        f=lambda t, y: torch.stack([y[1], -(w**2) * y[0]]),
        y0=[1.0, 0.0],
        span=(0.0, t1),
        exact=lambda t: np.stack([np.cos(w * t), -w * np.sin(w * t)], axis=1),
        name="harmonic",
        description=f"harmonic oscillator x'' = -{w:g}² x; exact cos(ωt)",
        f_numpy=lambda t, y: np.array([y[1], -(w**2) * y[0]]),
        invariants={"energy": lambda y: 0.5 * y[:, 1] ** 2 + 0.5 * w**2 * y[:, 0] ** 2},
    )


def _kepler_anomaly(M: np.ndarray, e: float) -> np.ndarray:
    """The eccentric anomaly ``E`` with ``E - e sin E = M`` (vectorised).

    ``g(E) = E - e sin E - M`` increases (``g' = 1 - e cos E >= 1 - e > 0``) and
    ``|E - M| = e |sin E| <= e``: the root lies in ``[M - e, M + e]``.  Newton steps
    that leave the bracket (near perihelion for ``e`` close to 1, where ``g'`` is
    ``~1 - e``, plain Newton from ``M + e sin M`` wandered off: ``e = 0.999`` gave a state
    1.8 off) are replaced by bisection, so every root is found.
    """
    # M reduced to [-π, π]: E - M is 2π-periodic in M
    k = np.round(M / (2 * math.pi))
    m = M - 2 * math.pi * k
    lo, hi = m - e, m + e
    tiny = 4 * np.finfo(np.float64).eps
    E = np.clip(m + e * np.sin(m), lo, hi)
    for _ in range(200):
        g = E - e * np.sin(E) - m
        lo = np.where(g < 0, E, lo)
        hi = np.where(g > 0, E, hi)
        # 1 - e cos E without the cancellation of two numbers near 1
        dg = (1 - e) + 2 * e * np.sin(E / 2) ** 2
        newton = E - g / dg
        inside = (newton > lo) & (newton < hi)
        E_next = np.where(g == 0, E, np.where(inside, newton, 0.5 * (lo + hi)))
        done = np.all((E_next == E) | (hi - lo <= tiny * np.maximum(1, np.abs(E))))
        E = E_next
        if done:
            break
    g = E - e * np.sin(E) - m
    if not np.all(np.abs(g) <= 1e-14 * np.maximum(1.0, np.abs(m))):
        raise ReferenceSolutionError(
            f"Kepler's equation E - e sin E = M did not converge for e = {e} (largest "
            f"residual {np.max(np.abs(g)):.3g}); this is a bug in odenet, please report it."
        )
    return E + 2 * math.pi * k


def _kepler_exact(t: np.ndarray, e: float) -> np.ndarray:
    # Mean anomaly M = t (period 2π, semi-major axis 1, GM = 1); solve E - e sin E = M.
    E = _kepler_anomaly(np.asarray(t, dtype=np.float64), e)
    s = math.sqrt(1 - e * e)
    d = (1 - e) + 2 * e * np.sin(E / 2) ** 2  # 1 - e cos E, accurate near perihelion
    return np.stack([np.cos(E) - e, s * np.sin(E), -np.sin(E) / d, s * np.cos(E) / d], axis=1)


@register_problem("kepler")
def kepler(eccentricity: float = 0.5, t1: float = 2 * math.pi) -> Problem:
    """Two-body problem `q'' = -q/|q|³` from perihelion; exact via Kepler's equation.

    Invariants: energy `|p|²/2 - 1/|q| = -1/2` and angular momentum `q × p`.
    """
    e = float(eccentricity)
    if not 0 <= e < 1:
        raise InputError(f"`eccentricity` must be in [0, 1), got {e}.")

    def f(t, y):
        r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
        return torch.stack([y[2], y[3], -y[0] / r3, -y[1] / r3])

    def fn(t, y):
        r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
        return np.array([y[2], y[3], -y[0] / r3, -y[1] / r3])

    return Problem(
        f=f,
        y0=_kepler_exact(np.zeros(1), e)[0],
        span=(0.0, t1),
        exact=lambda t: _kepler_exact(t, e),
        name="kepler",
        description=f"Kepler two-body, eccentricity {e:g}; exact via Kepler's equation",
        f_numpy=fn,
        invariants={
            "energy": lambda y: (
                0.5 * (y[:, 2] ** 2 + y[:, 3] ** 2) - 1 / np.hypot(y[:, 0], y[:, 1])
            ),
            "angular_momentum": lambda y: y[:, 0] * y[:, 3] - y[:, 1] * y[:, 2],
        },
    )


@register_problem("prothero_robinson")
def prothero_robinson(lam: float = -1e6, t1: float = 1.0) -> Problem:
    """`y' = λ (y - sin t) + cos t`, `y(0) = 0`; exact `y = sin t`.

    For `h|λ| ≫ 1` implicit Runge–Kutta methods converge with their *stage order*
    (plus one for stiffly accurate methods) instead of their classical order.
    """
    return Problem(
        f=lambda t, y: lam * (y - torch.sin(t)) + torch.cos(t),
        y0=[0.0],
        span=(0.0, t1),
        exact=lambda t: np.sin(t)[:, None],
        name="prothero_robinson",
        description=f"Prothero–Robinson y' = λ(y - sin t) + cos t, λ = {lam:g}; exact sin t",
        stiff=True,
        f_numpy=lambda t, y: lam * (y - np.sin(t)) + np.cos(t),
    )


@register_problem("kaps")
def kaps(eps: float = 1e-6, t1: float = 1.0) -> Problem:
    """Kaps' singular perturbation problem (Hairer & Wanner II, Sec. VI.3):
    `y1' = −(2 + 1/ε) y1 + y2²/ε`, `y2' = y1 − y2 − y2²`, `y(0) = (1, 1)`; exact
    `(e^{−2t}, e^{−t})` for every ε (stiff for small ε; the solution stays on `y1 = y2²`)."""
    f, f_numpy = _twin(lambda y: [-(2 + 1 / eps) * y[0] + y[1] ** 2 / eps, y[0] - y[1] - y[1] ** 2])
    return Problem(
        f=f,
        y0=[1.0, 1.0],
        span=(0.0, t1),
        exact=lambda t: np.stack([np.exp(-2 * t), np.exp(-t)], axis=1),
        name="kaps",
        description=f"Kaps' singular perturbation problem, ε = {eps:g}; exact (e^(-2t), e^(-t))",
        stiff=True,
        f_numpy=f_numpy,
    )


def _grid_points(n, problem: str, default: int) -> int:
    """The grid size ``n`` of a method-of-lines problem, checked: a positive integer
    (``n = 0`` crashed in numpy, "negative dimensions are not allowed", or divided by 0)."""
    ok = isinstance(n, int | float | np.integer | np.floating) and not isinstance(n, bool)
    if not ok or not math.isfinite(n) or n != int(n) or n < 1:
        raise InputError(
            f"`n` (the number of grid points of {problem}) must be a positive integer, got "
            f"{n!r}; e.g. n={default}."
        )
    return int(n)


@register_problem("heat")
def heat(n: int = 16, t1: float = 0.1) -> Problem:
    """Method of lines for `u_t = u_xx` on (0, 1), `u = 0` at both ends.

    Second-order central differences on `n` interior points; initial
    `u = x(1-x)e^x`.  The semi-discrete system is linear, so its exact solution is
    `e^{At} u0` (stiff: `|λ_max| ≈ 4 (n+1)²`).
    """
    n = _grid_points(n, "heat", 16)
    dx = 1.0 / (n + 1)
    x = dx * np.arange(1, n + 1)
    A = (
        np.diag(-2 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    ) / dx**2
    return _linear(
        A,
        x * (1 - x) * np.exp(x),
        (0.0, t1),
        "heat",
        f"heat equation, method of lines, {n} points; exact e^(At) u0",
        stiff=True,
    )


@register_problem("advection")
def advection(n: int = 32, t1: float = 1.0) -> Problem:
    """Method of lines for `u_t + u_x = 0` on the periodic unit interval.

    Second-order central differences on `n` points (purely imaginary spectrum);
    initial `u = exp(sin 2πx)`; exact semi-discrete solution `e^{At} u0`.
    """
    n = _grid_points(n, "advection", 32)
    dx = 1.0 / n
    x = dx * np.arange(n)
    A = (np.roll(np.eye(n), 1, axis=1) - np.roll(np.eye(n), -1, axis=1)) / (2 * dx)
    A = -A
    return _linear(
        A,
        np.exp(np.sin(2 * np.pi * x)),
        (0.0, t1),
        "advection",
        f"linear advection, central differences, {n} periodic points; exact e^(At) u0",
    )


# --- reference-solution problems --------------------------------------------------------


@register_problem("lotka_volterra")
def lotka_volterra(
    alpha: float = 1.5, beta: float = 1.0, gamma: float = 3.0, delta: float = 1.0, t1: float = 10.0
) -> Problem:
    """Predator–prey `x' = αx - βxy`, `y' = δxy - γy`.

    Invariant `δx - γ ln x + βy - α ln y`; reference DOP853.
    """
    a, b, g, d = alpha, beta, gamma, delta
    return Problem(
        f=lambda t, y: torch.stack([a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - g * y[1]]),
        y0=[1.0, 1.0],
        span=(0.0, t1),
        name="lotka_volterra",
        description="Lotka–Volterra predator–prey; reference DOP853 1e-13",
        f_numpy=lambda t, y: np.array([a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - g * y[1]]),
        invariants={
            "first_integral": lambda y: (
                d * y[:, 0] - g * np.log(y[:, 0]) + b * y[:, 1] - a * np.log(y[:, 1])
            )
        },
    )


@register_problem("lorenz")
def lorenz(sigma: float = 10.0, rho: float = 28.0, beta: float = 8 / 3, t1: float = 1.0) -> Problem:
    """Lorenz system over a short horizon (before chaos amplifies round-off)."""
    s, r, b = sigma, rho, beta

    def f(t, y):
        return torch.stack([s * (y[1] - y[0]), y[0] * (r - y[2]) - y[1], y[0] * y[1] - b * y[2]])

    return Problem(
        f=f,
        y0=[1.0, 1.0, 1.0],
        span=(0.0, t1),
        name="lorenz",
        description=(
            f"Lorenz σ={s:g}, ρ={r:g}, β={'8/3' if b == 8 / 3 else f'{b:g}'} on a short "
            "horizon; reference DOP853 1e-13"
        ),
        f_numpy=lambda t, y: np.array(
            [s * (y[1] - y[0]), y[0] * (r - y[2]) - y[1], y[0] * y[1] - b * y[2]]
        ),
    )


def _vdp(mu: float, t1: float, name: str) -> Problem:
    return Problem(
        f=lambda t, y: torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]),
        y0=[2.0, 0.0],
        span=(0.0, t1),
        name=name,
        description=f"Van der Pol x'' - μ(1 - x²)x' + x = 0, μ = {mu:g}",
        stiff=mu > 10,
        f_numpy=lambda t, y: np.array([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]),
        jac_numpy=lambda t, y: np.array(
            [[0.0, 1.0], [-2 * mu * y[0] * y[1] - 1, mu * (1 - y[0] ** 2)]]
        ),
    )


@register_problem("van_der_pol")
def van_der_pol(mu: float = 1.0, t1: float = 5.0) -> Problem:
    """Van der Pol oscillator, `μ = 1` (non-stiff); reference DOP853."""
    return _vdp(mu, t1, "van_der_pol")


@register_problem("van_der_pol_stiff")
def van_der_pol_stiff(mu: float = 1000.0, t1: float = 1.0) -> Problem:
    """Van der Pol oscillator, `μ = 1000` (stiff); reference Radau."""
    return _vdp(mu, t1, "van_der_pol_stiff")


@register_problem("robertson")
def robertson(t1: float = 40.0) -> Problem:
    """Robertson's stiff chemical kinetics; invariant `y1 + y2 + y3 = 1`; reference Radau."""
    k1, k2, k3 = 0.04, 3e7, 1e4

    def f(t, y):
        return torch.stack(
            [
                -k1 * y[0] + k3 * y[1] * y[2],
                k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2,
                k2 * y[1] ** 2,
            ]
        )

    def fn(t, y):
        return np.array(
            [
                -k1 * y[0] + k3 * y[1] * y[2],
                k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2,
                k2 * y[1] ** 2,
            ]
        )

    def jac(t, y):
        return np.array(
            [
                [-k1, k3 * y[2], k3 * y[1]],
                [k1, -k3 * y[2] - 2 * k2 * y[1], -k3 * y[1]],
                [0.0, 2 * k2 * y[1], 0.0],
            ]
        )

    return Problem(
        f=f,
        y0=[1.0, 0.0, 0.0],
        span=(0.0, t1),
        name="robertson",
        description="Robertson chemical kinetics (stiff); reference Radau 1e-13",
        stiff=True,
        f_numpy=fn,
        invariants={"mass": lambda y: y.sum(axis=1)},
        # y2 peaks at 3.7e-5 and decays like 1/t: the test set's floor 1e-6 (Hairer)
        atol_ratio=STIFF_SUITE["robertson_long"],
        jac_numpy=jac,
    )


def as_problem(problem_or_f, y0=None, span=None, exact=None, name: str = "custom") -> Problem:
    """Accept a [`Problem`][odenet.problems.Problem], a built-in name, or `f`, `y0`, `span`."""
    if isinstance(problem_or_f, Problem):
        if y0 is not None or span is not None or exact is not None:
            raise InputError(
                "`y0`, `span` and `exact` are only used with a vector field `f`; "
                "a Problem already has them."
            )
        return problem_or_f
    if isinstance(problem_or_f, str):
        return get_problem(problem_or_f)
    if callable(problem_or_f):
        if y0 is None or span is None:
            raise InputError(
                "a vector field `f` needs `y0` and `span=(t0, t1)` (and optionally "
                "`exact`); or pass an odenet.problems.Problem."
            )
        return Problem(problem_or_f, y0=y0, span=span, exact=exact, name=name)
    raise InputError(
        f"expected a Problem, a problem name or a vector field f(t, y), got "
        f"{type(problem_or_f).__name__}."
    )


# --- the stiff test set (Hairer & Wanner II, Sec. IV.10) ------------------------------------


@register_problem("robertson_long")
def robertson_long(t1: float = 1e5) -> Problem:
    """Robertson's kinetics on `[0, 1e5]` (the span of Hairer & Wanner's figures; the
    IVP test set's ROBER runs to 1e11); reference Radau."""
    p = robertson(t1=t1)
    object.__setattr__(p, "name", "robertson_long")
    return p


@register_problem("van_der_pol_relaxation")
def van_der_pol_relaxation(mu: float = 1000.0, t1: float = 3000.0) -> Problem:
    """Van der Pol `μ = 1000` over several relaxation cycles (period ≈ 1614, a jump every
    half period: three in `[0, 3000]`, at t ≈ 807, 1614 and 2421); reference Radau."""
    return _vdp(mu, t1, "van_der_pol_relaxation")


def _twin(rates):
    """The torch field and the numpy field (for the scipy reference) of one formula.

    ``rates(y)`` lists the components with arithmetic only, so it runs on a tensor and
    on an array alike: the reference solves exactly the problem odenet solves.
    """

    def f(t, y):
        return torch.stack(rates(y))

    def f_numpy(t, y):
        return np.array(rates(y))

    return f, f_numpy


def _hires_rates(y):
    return [
        -1.71 * y[0] + 0.43 * y[1] + 8.32 * y[2] + 0.0007,
        1.71 * y[0] - 8.75 * y[1],
        -10.03 * y[2] + 0.43 * y[3] + 0.035 * y[4],
        8.32 * y[1] + 1.71 * y[2] - 1.12 * y[3],
        -1.745 * y[4] + 0.43 * y[5] + 0.43 * y[6],
        -280.0 * y[5] * y[7] + 0.69 * y[3] + 1.71 * y[4] - 0.43 * y[5] + 0.69 * y[6],
        280.0 * y[5] * y[7] - 1.81 * y[6],
        -280.0 * y[5] * y[7] + 1.81 * y[6],
    ]


@register_problem("hires")
def hires(t1: float = 321.8122) -> Problem:
    """HIRES: 8 species of plant photomorphogenesis (Schäfer 1975); reference Radau.

    Hairer & Wanner II, Sec. IV.10 (test set span `[0, 321.8122]`).
    """

    f, f_numpy = _twin(_hires_rates)

    def jac(t, y):
        J = np.zeros((8, 8))
        J[0, :3] = -1.71, 0.43, 8.32
        J[1, :2] = 1.71, -8.75
        J[2, 2:5] = -10.03, 0.43, 0.035
        J[3, 1:4] = 8.32, 1.71, -1.12
        J[4, 4:7] = -1.745, 0.43, 0.43
        J[5, 3:8] = 0.69, 1.71, -280.0 * y[7] - 0.43, 0.69, -280.0 * y[5]
        J[6, 5:8] = 280.0 * y[7], -1.81, 280.0 * y[5]
        J[7, 5:8] = -280.0 * y[7], 1.81, -280.0 * y[5]
        return J

    return Problem(
        f=f,
        y0=[1.0, 0, 0, 0, 0, 0, 0, 0.0057],
        span=(0.0, t1),
        name="hires",
        description="HIRES photomorphogenesis kinetics, 8 species (stiff); reference Radau 1e-13",
        stiff=True,
        f_numpy=f_numpy,
        atol_ratio=STIFF_SUITE["hires"],
        jac_numpy=jac,
    )


@register_problem("oregonator")
def oregonator(t1: float = 360.0) -> Problem:
    """The Oregonator (Field–Noyes Belousov–Zhabotinskii model), Hairer's OREGO;
    reference Radau.  Components range over six decades."""
    s, w, q = 77.27, 0.161, 8.375e-6

    f, f_numpy = _twin(
        lambda y: [
            s * (y[1] + y[0] * (1 - q * y[0] - y[1])),
            (y[2] - (1 + y[0]) * y[1]) / s,
            w * (y[0] - y[2]),
        ]
    )

    def jac(t, y):
        return np.array(
            [
                [s * (1 - 2 * q * y[0] - y[1]), s * (1 - y[0]), 0.0],
                [-y[1] / s, -(1 + y[0]) / s, 1 / s],
                [w, 0.0, -w],
            ]
        )

    return Problem(
        f=f,
        y0=[1.0, 2.0, 3.0],
        span=(0.0, t1),
        name="oregonator",
        description="Oregonator (Belousov–Zhabotinskii), stiff; reference Radau 1e-13",
        stiff=True,
        f_numpy=f_numpy,
        atol_ratio=STIFF_SUITE["oregonator"],
        jac_numpy=jac,
    )


@register_problem("brusselator_1d")
def brusselator_1d(n: int = 100, alpha: float = 0.02, t1: float = 10.0) -> Problem:
    """1-D Brusselator reaction–diffusion, method of lines on `n` interior points
    (Hairer & Wanner II, Sec. IV.1/IV.10, BRUSS): state `[u_1..u_n, v_1..v_n]`,

    `u' = 1 + u²v − 4u + α(n+1)² Δu`, `v' = 3u − u²v + α(n+1)² Δv`, boundary values
    `u = 1, v = 3`; `u(0) = 1 + sin 2πx`, `v(0) = 3`.  Reference Radau.
    """
    n = _grid_points(n, "brusselator_1d", 100)
    c = alpha * (n + 1) ** 2
    x = np.arange(1, n + 1) / (n + 1)

    def rates(y, cat):  # `cat` is torch.cat or np.concatenate: one formula for both
        u, v = y[:n], y[n:]
        uuv = u * u * v

        def lap(z, edge):
            e = z[:1] * 0 + edge
            zp = cat([e, z, e])
            return zp[:-2] - 2 * z + zp[2:]

        return cat([1 + uuv - 4 * u + c * lap(u, 1.0), 3 * u - uuv + c * lap(v, 3.0)])

    def f(t, y):
        return rates(y, torch.cat)

    def f_numpy(t, y):
        return rates(y, np.concatenate)

    def jac(t, y):  # [[∂u'/∂u, ∂u'/∂v], [∂v'/∂u, ∂v'/∂v]], tridiagonal and diagonal blocks
        from scipy import sparse

        u, v = y[:n], y[n:]
        side = np.full(n - 1, c)
        return sparse.bmat(
            [
                [
                    sparse.diags([side, 2 * u * v - 4 - 2 * c, side], [-1, 0, 1]),
                    sparse.diags(u * u),
                ],
                [
                    sparse.diags(3 - 2 * u * v),
                    sparse.diags([side, -u * u - 2 * c, side], [-1, 0, 1]),
                ],
            ],
            format="csc",
        )

    return Problem(
        f=f,
        y0=np.concatenate([1 + np.sin(2 * np.pi * x), np.full(n, 3.0)]),
        span=(0.0, t1),
        name="brusselator_1d",
        description=f"1-D Brusselator, {n} points, α = {alpha:g} (stiff); reference Radau 1e-13",
        stiff=True,
        f_numpy=f_numpy,
        atol_ratio=STIFF_SUITE["brusselator_1d"],
        jac_numpy=jac,
        jac_sparsity=jac(0.0, np.ones(2 * n)) != 0,
    )


def stiff_error(problem: Problem, y_end, floor: float) -> float:
    """`max_i |y_i − ref_i| / (floor + |ref_i|)` at the end of the span (see STIFF_SUITE)."""
    ref = problem.solution([problem.span[1]])[0]
    y = np.asarray(y_end.detach().cpu().numpy() if isinstance(y_end, torch.Tensor) else y_end)
    return float(np.max(np.abs(y.reshape(-1) - ref) / (floor + np.abs(ref))))


__all__ = [
    "STIFF_SUITE",
    "Problem",
    "ReferenceSolutionError",
    "UnknownProblemError",
    "as_problem",
    "cache_dir",
    "describe",
    "get_problem",
    "is_file_spec",
    "problems",
    "reference_solution",
    "register_problem",
    "stiff_error",
]


# --- the 2-D Brusselator (issue 14: sparse Jacobians) ------------------------------------


def brusselator_2d_sparsity(n: int = 32):
    """The nonzero pattern `[2n², 2n²]` (scipy CSR, bool) of `∂f/∂y` of
    `brusselator_2d`: the periodic five-point stencil in
    each species and the local coupling of `u` and `v` (6 nonzeros per row: five
    stencil points and the other species at the same point)."""
    from scipy import sparse

    n = _grid_points(n, "brusselator_2d", 32)
    i = np.arange(n * n).reshape(n, n)
    rows, cols = [], []
    for shift in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        rows.append(i.ravel())
        cols.append(np.roll(i, shift, axis=(0, 1)).ravel())
    r, c = np.concatenate(rows), np.concatenate(cols)
    m = n * n
    diag = np.arange(m)
    r = np.concatenate([r, r + m, diag, diag + m])
    c = np.concatenate([c, c + m, diag + m, diag])
    return sparse.csr_matrix((np.ones(r.size, dtype=bool), (r, c)), shape=(2 * m, 2 * m))


_BRUSSELATOR_2D_REFERENCES: dict = {}
# its rtol = atol: a dense reference at REFERENCE_RTOL would take hours
# scipy BDF's tolerance for the 2-D Brusselator's reference, and the accuracy that
# reaches (against BDF at 1e-11 and 1e-12; at 1e-10 the reference was 3e-8 off)
_B2D_REFERENCE_TOL = 1e-12
_B2D_REFERENCE_ACCURACY = 1e-10


def _brusselator_2d_cache(key) -> dict:
    """The reference states computed so far for ``key``.  (Looked up by name: a
    problem's key fingerprints the globals its functions name, and the cache's
    contents must not change the key of the problem they belong to.)"""
    store = getattr(sys.modules[__name__], "_BRUSSELATOR_2D_REFERENCES")  # noqa: B009
    return store.setdefault(key, {})


@register_problem("brusselator_2d")
def brusselator_2d(n: int = 32, alpha: float = 0.1, t1: float = 11.5) -> Problem:
    """2-D Brusselator reaction–diffusion on the periodic unit square, `n × n` grid
    (Hairer & Wanner II, Sec. IV.10, the two-dimensional BRUSS with `α = 0.1`):

    `u' = 1 + u²v − 4.4u + α Δu + φ(x, y, t)`, `v' = 3.4u − u²v + α Δv`, with
    `φ = 5` inside the disc `(x − 0.3)² + (y − 0.6)² ≤ 0.1²` for `t ≥ 1.1` (else 0),
    `u(0) = 22 y (1 − y)^{3/2}`, `v(0) = 27 x (1 − x)^{3/2}`, grid `x_i = i/n`,
    `y_j = j/n` (`i, j = 0 … n−1`), `Δ` the periodic five-point Laplacian.  State
    `[u (n×n, row j = y_j), v (n×n)]`, `2n²` components; the Jacobian pattern is
    `brusselator_2d_sparsity`.

    The "exact" solution is a reference computed on first use (scipy BDF with that
    `jac_sparsity`, rtol = atol = 1e-12, about 1e-10 accurate; `exact_rtol = 1e-10`)
    and cached in memory for the process: a dense reference solve at rtol 1e-13 would
    take hours.  (At rtol 1e-10 it was 3e-8 off, which polluted errors below 1e-6.)
    """
    n = _grid_points(n, "brusselator_2d", 32)
    m = n * n
    grid = np.arange(n) / n
    X, Y = np.meshgrid(grid, grid)  # X[j, i] = x_i, Y[j, i] = y_j
    disc = ((X - 0.3) ** 2 + (Y - 0.6) ** 2 <= 0.01).astype(np.float64)
    disc_t = torch.as_tensor(disc)
    c = alpha * n * n  # α / Δx²

    def rates(t, y, roll, cat, src):  # one formula for torch and numpy
        u, v = y[:m].reshape(n, n), y[m:].reshape(n, n)
        uuv = u * u * v

        def lap(z):
            return roll(z, 1, 0) + roll(z, -1, 0) + roll(z, 1, 1) + roll(z, -1, 1) - 4 * z

        du = 1 + uuv - 4.4 * u + c * lap(u) + 5.0 * src * (t >= 1.1)
        dv = 3.4 * u - uuv + c * lap(v)
        return cat([du.reshape(-1), dv.reshape(-1)])

    def f(t, y):
        return rates(t, y, torch.roll, torch.cat, disc_t.to(y.dtype))

    def f_numpy(t, y):
        return rates(t, y, np.roll, np.concatenate, disc)

    y0 = np.concatenate(
        [(22 * Y * (1 - Y) ** 1.5).reshape(-1), (27 * X * (1 - X) ** 1.5).reshape(-1)]
    )
    key = (n, float(alpha), float(t1))

    def reference(t):
        from scipy.integrate import solve_ivp

        t = np.asarray(t, dtype=np.float64)
        cache = _brusselator_2d_cache(key)
        cache.setdefault(0.0, y0)
        missing = sorted({float(s) for s in t} - set(cache))
        if missing:
            # scipy's BDF at rtol 1e-10 (one factorisation per Jacobian or step change)
            # to the last time asked, not to t1: each call with new times is a new solve
            sol = solve_ivp(
                f_numpy,
                (0.0, missing[-1]),
                y0,
                method="BDF",
                t_eval=missing,
                rtol=_B2D_REFERENCE_TOL,
                atol=_B2D_REFERENCE_TOL,
                jac_sparsity=brusselator_2d_sparsity(n),
            )
            if not sol.success:
                raise ReferenceSolutionError(f"brusselator_2d reference failed: {sol.message}")
            cache.update({s: sol.y[:, k] for k, s in enumerate(missing)})
        return np.stack([cache[float(s)] for s in t])

    return Problem(
        f=f,
        y0=y0,
        span=(0.0, t1),
        exact=reference,
        exact_rtol=_B2D_REFERENCE_ACCURACY,
        name="brusselator_2d",
        description=(
            f"2-D Brusselator, {n}×{n} periodic grid, α = {alpha:g} (stiff, sparse); "
            "reference scipy BDF + jac_sparsity 1e-12, cached in memory"
        ),
        stiff=True,
        f_numpy=f_numpy,
        jac_sparsity=brusselator_2d_sparsity(n),
    )
