"""Mechanisms for grey-box fits: the built-in registry and the user's own Python files.

A mechanism is a function ``f(t, x, p) -> dx/dt`` on torch tensors with metadata
attached as attributes (set them directly or with the :func:`mechanism` decorator):

``params``
    ``{name: initial guess}`` of the unknown parameters (required).
``states``
    Names of the state components; data channels are matched to them by name, the
    others are latent (default: the data channels, in order).
``covariates``
    Names of covariate columns ``p`` also carries (static per series or time-varying).
``positive``
    ``True`` (default), ``False`` or the names learnt as logarithms (kept > 0).
``x0``
    Starting guesses of latent initial states.

From the shell: ``odenet fit data.csv --model greybox_mle --mechanism my.py:growth``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
from pathlib import Path

from odenet.fit.datasets import damped_oscillator_field, lotka_volterra_field
from odenet.fit.greybox import GreyBoxField, MechanismError

_LV_GUESS = {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "delta": 1.0}
BUILTIN = {
    "lotka_volterra": dict(fn=lotka_volterra_field, params=_LV_GUESS, states=["x", "y"]),
    "damped_oscillator": dict(
        fn=damped_oscillator_field, params={"omega": 1.0, "zeta": 0.5}, states=["x", "v"]
    ),
}


def mechanism(*, params: dict, states=None, covariates=(), positive=True, x0=None):
    """Decorator attaching grey-box metadata to a mechanism function.

    Examples
    --------
    >>> @mechanism(params={"r": 0.5, "K": 10.0}, states=["y"])
    ... def logistic(t, x, p):
    ...     return p["r"] * x * (1 - x / p["K"])
    """

    def wrap(fn):
        fn.params = dict(params)
        fn.states = None if states is None else list(states)
        fn.covariates = list(covariates)
        fn.positive = positive
        fn.x0 = dict(x0 or {})
        return fn

    return wrap


def _parse_spec(spec: str):
    if spec in BUILTIN:
        return None, spec
    if ":" not in spec:
        raise MechanismError(
            f"--mechanism {spec!r} is neither a built-in ({sorted(BUILTIN)}) nor PATH.py:NAME; "
            "write the function in a Python file and pass e.g. --mechanism my_model.py:growth."
        )
    path, name = spec.rsplit(":", 1)
    return Path(path), name


def load_mechanism(spec: str) -> dict:
    """Resolve ``spec`` (a built-in name or ``path.py:function``) to its description.

    Returns
    -------
    dict
        ``fn``, ``params``, ``states``, ``covariates``, ``positive``, ``x0``, ``spec``.

    Raises
    ------
    MechanismError
        Unknown name, missing file, import failure, missing function or metadata.
    """
    path, name = _parse_spec(spec)
    if path is None:
        d = dict(BUILTIN[name])
        d.setdefault("covariates", [])
        d.setdefault("positive", True)
        d.setdefault("x0", {})
        d["spec"] = spec
        return d
    if not path.is_file():
        raise MechanismError(f"--mechanism {spec!r}: file {str(path)!r} does not exist.")
    # a name equal in every process (``hash`` of a str is salted per process): a class
    # in the file must fingerprint alike in the fit and a later predict or --resume
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    mod_name = f"_odenet_mechanism_{digest}"
    from odenet.problems import exec_source

    try:
        loader = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[mod_name] = module
        exec_source(module, path)  # not a cached bytecode of an older edit
    except Exception as e:  # the user's file may raise anything while importing
        raise MechanismError(
            f"--mechanism {spec!r}: importing {str(path)!r} failed with {type(e).__name__}: {e}"
        ) from e
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if callable(v) and hasattr(v, "params"))
        raise MechanismError(
            f"--mechanism {spec!r}: {str(path)!r} has no function {name!r}; functions with "
            f"`params` there: {found or 'none'}."
        )
    params = getattr(fn, "params", None)
    if not isinstance(params, dict) or not params:
        raise MechanismError(
            f"--mechanism {spec!r}: give the function its parameters and guesses, e.g. "
            f"`{name}.params = {{'k': 0.1}}` or the odenet.fit.mechanism decorator."
        )
    return dict(fn=fn, params=dict(params), states=getattr(fn, "states", None),
                covariates=list(getattr(fn, "covariates", []) or []),
                positive=getattr(fn, "positive", True), x0=dict(getattr(fn, "x0", {}) or {}),
                spec=spec)  # fmt: skip


def mechanism_fingerprint(desc: dict) -> str:
    """A short hash of a mechanism: its function — code, constants, defaults, closure
    values, the module globals it reads and the classes and user modules behind them
    (their constants and methods; :func:`odenet.problems._fingerprint`, the
    identity of a user problem) — and its declaration (``params`` guesses, ``states``,
    ``covariates``, ``positive``, ``x0``).

    Stored in a checkpoint (``meta["mechanism_fingerprint"]``): a checkpoint stores the
    mechanism's path, not its code, so resuming or predicting after the file was edited
    would silently pair the old parameters with the new vector field.  Equal across
    processes for equal content."""
    from odenet.problems import _fingerprint

    keys = ("fn", "params", "states", "covariates", "positive", "x0")
    return _fingerprint({k: desc.get(k) for k in keys})


def parse_assignments(items, what: str) -> dict:
    """``["a=1", "b=2.5"]`` → ``{"a": 1.0, "b": 2.5}``; ``what`` names the option."""
    out = {}
    for item in items or []:
        for part in str(item).split(","):
            if not part:
                continue
            key, eq, val = part.partition("=")
            try:
                v = float(val)
            except ValueError:
                v = math.nan
            if not eq or not key or not math.isfinite(v):
                raise MechanismError(
                    f"{what} expects NAME=NUMBER (finite), got {part!r}; e.g. {what} k=0.5."
                )
            out[key.strip()] = v
    return out


def build_field(desc: dict, *, guesses: dict | None = None, fixed: dict | None = None,
                channels=None) -> GreyBoxField:  # fmt: skip
    """A :class:`GreyBoxField` from a mechanism description.

    ``guesses`` override initial guesses; ``fixed`` parameters are removed from the
    unknowns and passed to the mechanism as constants (use it for a parameter the data
    cannot determine).  ``channels`` are the data's channel names (the default states).
    """
    import torch

    params = dict(desc["params"])
    for what, d in (("--param", guesses or {}), ("--fix", fixed or {})):
        bad = sorted(set(d) - set(params))
        if bad:
            raise MechanismError(
                f"{what} names {bad}, which are not parameters of {desc['spec']!r} "
                f"({sorted(params)})."
            )
    params.update(guesses or {})
    fixed = dict(fixed or {})
    for k in fixed:
        params.pop(k)
    if not params:
        raise MechanismError("--fix fixes every parameter: leave at least one to estimate.")
    fn = desc["fn"]
    if fixed:
        inner = fn

        def fn(t, x, p):
            consts = {k: torch.as_tensor(v, dtype=x.dtype, device=x.device)
                      for k, v in fixed.items()}  # fmt: skip
            return inner(t, x, {**p, **consts})

    positive = desc.get("positive", True)
    if not isinstance(positive, bool):
        positive = [k for k in positive if k in params]
    states = desc.get("states")
    return GreyBoxField(fn, params, positive=positive, states=states,
                        covariates=desc.get("covariates", []),
                        x0_guess=desc.get("x0", {}))  # fmt: skip
