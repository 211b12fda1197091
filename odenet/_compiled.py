"""Compiled small-system steps: a field fused with a tableau's explicit step.

On small systems (2–50 states) the cost of a step is Python and dispatch overhead,
not arithmetic: an eager rk4 step of the Lorenz field is ~60 tensor operations of
3 numbers each.  ``torch.compile`` traces the field *together with* the method's
stages (the stepper's own :func:`odenet._stepper.explicit_step` — no second copy of
the stages is written here) into one fused kernel.  What remains per call is the
compiled wrapper's own overhead (guards, the generated Python wrapper: tens of µs),
so a *block* of several steps per call amortizes it.

Two compiled objects, both cached per (callable, tableau, shape, dtype, device,
block, variant) and both falling back to the identical eager computation when the
compiler is unavailable or fails (``ODENET_COMPILE=0`` forces the fallback):

* :func:`compiled_map` — a step map ``x -> step(x)`` (any traceable callable, e.g.
  :func:`odenet.stability.flow_map`) advanced ``block`` steps per call, optionally
  with a tangent matrix ``Q [d, k]`` pushed through the same steps as a vmapped
  ``jvp`` (``Q <- M(x) Q``): the one-orbit Lyapunov path.
* :func:`compiled_rk_step` — one explicit Runge–Kutta step of ``f(t, y)`` with the
  outputs of the host loop's step ``(y1, K, rates, f1)`` but tensor ``s`` and ``h``
  (so a new step size does not recompile).

Compile time is recorded per cached entry (:func:`compile_records`) and is not
hidden in the first step's timing by the benchmarks.  When compiling does not
pay: the first call costs seconds to minutes (tens of seconds for an rk4 block of
10 Lorenz steps on an idle core), so runs of fewer than ~10⁴–10⁵ steps lose;
every new shape, dtype or device is a new compile (``dynamic=False``: dynamic
shapes would put the guards and symbolic sizes back on the per-call path); fields
that graph-break (data-dependent Python control flow, ``.item()``, numpy calls) do
not compile with ``fullgraph=True`` and fall back to eager.

The one loop uses it through ``solve(..., compile=True)``: :class:`FusedHost`
builds :func:`host_step` (the step of :func:`rk_step_one` plus the RMS error norm
and ``f(t1, y1)``, so the host backend ``_Host`` makes one compiled call and one
``.tolist()`` per step), on uniform fixed grids :func:`host_block` (the grid steps
between two outputs in one ``while_loop`` call), and for adaptive steps
:func:`host_adaptive_block` (the loop's steps up to the next one it must take itself,
in one ``while_loop`` call, the steps that hold outputs buffered for the loop's
interpolant).  All use inductor's C++ wrapper (see ``_HOST_OPTIONS``).  The loop keeps
its rules: inside a block the controller's own code judges every trial, and the
loop takes the steps a block stops at (the end, failures) and writes every output.
Opt-in, because the compile (seconds, per field, method, shape and dtype) exceeds a
whole solve of fewer than ~10⁴ steps; and never with a gradient through the solve
(the loop then steps eagerly).

Implicit methods under ``compile=True`` run on the loop's masked backend (eagerly,
one system runs on the host backend); there :class:`FusedNewton` gives
the Newton solver one compiled call per iteration (:func:`newton_iteration` for the
DIRKs, :func:`radau_iteration` for Radau IIA: the field at the stage times, the LU
solve(s) and the increment norm) and leaves every decision on the host.  Measured, it
does not pay (a call costs 0.67–0.87× the eager operations it replaces, the solve
0.95–1.05×: ``studies/benchmarks/small_systems_results.md``, section 5).
"""

from __future__ import annotations

import functools
import math
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import jvp, vmap

from odenet._errors import OdenetWarning
from odenet._jacobian import SPARSE_MIN_N, DenseLU
from odenet._stepper import RungeKutta, explicit_step, stage_input
from odenet.tableaus import ButcherTableau
from odenet.tableaus import tableau as _tableau


@dataclass
class CompileRecord:
    """One cached compiled function.

    Attributes
    ----------
    what : str, a description (kind, method, shape, dtype, block).
    compile_time : float, seconds of the first call (trace + compile + one run);
        ``nan`` until the first call.
    compiled : bool, False when the eager fallback runs instead.
    reason : str, why the fallback was taken ("" when compiled).
    calls : int, calls so far.
    """

    what: str
    compile_time: float = float("nan")
    compiled: bool = True
    reason: str = ""
    calls: int = 0


_RECORDS: list[CompileRecord] = []
# per callable (weakly held where possible) -> {key: CompiledFunction}
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_STRONG_CACHE: dict = {}


def compile_records() -> list[CompileRecord]:
    """Every compiled function built in this process, with its compile time."""
    return list(_RECORDS)


def compile_enabled() -> bool:
    """False when ``ODENET_COMPILE=0`` or ``torch.compile`` is missing."""
    if os.environ.get("ODENET_COMPILE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return hasattr(torch, "compile")


@functools.cache
def compiler_works() -> bool:
    """Whether ``torch.compile`` really compiles here (enabled, and inductor's C++
    toolchain present): one trivial compile, once per process."""
    if not compile_enabled():
        return False
    try:
        torch.compile(lambda x: x + 1, fullgraph=True)(torch.zeros(1))
    except Exception:
        return False
    return True


def clear_cache() -> None:
    """Forget every cached compiled function (and torch's compiled code)."""
    _CACHE.clear()
    _STRONG_CACHE.clear()
    _RECORDS.clear()
    try:
        torch._dynamo.reset()
    except Exception:  # pragma: no cover - older torch
        pass


def _compile(fn: Callable, options: dict | None = None) -> Callable:
    """The compiler (one place; tests substitute it to check the wiring fast)."""
    return torch.compile(fn, fullgraph=True, dynamic=False, options=options)


# The loop's fused steps and blocks: inductor's C++ wrapper instead of its generated
# Python one.  Measured on a dopri5 step of a 2-state field (CPU time per call, one
# thread): 57 µs against 90 µs; a fixed-grid rk4 block 6.7 µs per step against 22 µs
# (the while_loop itself then runs in C++).  Compiling takes a little longer.
_HOST_OPTIONS = {"cpp_wrapper": True}


class CompileFailed(RuntimeError):
    """Raised by a ``strict`` :class:`CompiledFunction` whose compile failed."""


class CompiledFunction:
    """``fn`` compiled on its first call; the eager ``fn`` itself if that fails.

    The first call's wall time is the compile time (``record.compile_time``).
    A failure to compile (no C++ compiler, a graph break under ``fullgraph``) is
    recorded in ``record.reason`` and every later call runs ``fn`` eagerly, so the
    results are the eager ones exactly (``strict``: the failing first call raises
    :class:`CompileFailed` instead, for callers with a faster eager route).
    """

    def __init__(
        self,
        fn: Callable,
        what: str,
        *,
        compile: bool = True,
        strict: bool = False,
        options: dict | None = None,
    ):
        self.fn = fn
        self.strict = strict
        self.record = CompileRecord(what)
        _RECORDS.append(self.record)
        self._compiled = None
        if compile and compile_enabled():
            self._compiled = _compile(fn, options)
        else:
            self.record.compiled = False
            self.record.reason = "compilation disabled"
            self.record.compile_time = 0.0

    @property
    def compile_time(self) -> float:
        return self.record.compile_time

    @property
    def compiled(self) -> bool:
        return self.record.compiled

    def __call__(self, *args):
        rec = self.record
        rec.calls += 1
        if self._compiled is None:
            return self.fn(*args)
        if rec.calls == 1:
            t0 = time.perf_counter()
            try:
                out = self._compiled(*args)
            except Exception as exc:  # the compiler is unavailable or cannot trace fn
                self._compiled = None
                rec.compiled = False
                rec.reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                rec.compile_time = time.perf_counter() - t0
                if self.strict:
                    raise CompileFailed(rec.reason) from exc
                return self.fn(*args)
            rec.compile_time = time.perf_counter() - t0
            return out
        return self._compiled(*args)


def tableau_key(tab: ButcherTableau) -> tuple:
    """What a compiled step bakes in: the exact coefficients, not only the name (two
    tableaus named "mine", or a user's "rk4" with the 3/8 rule, ran each other's
    compiled steps).  Not ``id(tab)``: a collected tableau's id is reused."""
    return (tab.name, tab.A_exact, tab.b_exact, tab.c_exact, tab.b_hat_exact, tab.estimator)


def _cached(owner, key, build: Callable[[], CompiledFunction]) -> CompiledFunction:
    try:
        table = _CACHE.setdefault(owner, {})
    except TypeError:  # not weak-referenceable
        table = _STRONG_CACHE.setdefault(id(owner), {})
    fn = table.get(key)
    if fn is None:
        fn = table[key] = build()
    return fn


def _warm(step: Callable, x: torch.Tensor) -> None:
    """One eager call, so that a step's own lazy set-up (e.g. ``flow_map`` building
    its coefficient tensors for this dtype) is not a side effect inside the trace
    (``while_loop`` bodies must be free of them)."""
    with torch.no_grad():
        step(x)


# --- step maps, with an optional tangent matrix -----------------------------------------


def map_block(step: Callable, shape: torch.Size, block: int, k: int | None) -> Callable:
    """The eager block: ``block`` steps of ``step`` (and of ``Q [d, k]`` when ``k``).

    ``x -> x_block`` or ``(x, Q) -> (x_block, M_{block-1} ⋯ M_0 Q)`` with ``M_i``
    the Jacobian of ``step`` at the i-th state, applied as a vmapped ``jvp`` (no
    Jacobian matrix is formed).  This is the exact function that gets compiled.
    """

    if k is None:

        def run(x):
            for _ in range(block):
                x = step(x)
            return x

        return run

    def flat(v):
        return step(v.reshape(shape)).reshape(-1)

    def tangent(v, Q):
        def one(w):
            return jvp(flat, (v,), (w,))

        return vmap(one, in_dims=1, out_dims=(None, 1))(Q)

    def run_tangent(x, Q):
        v = x.reshape(-1)
        for _ in range(block):
            v, Q = tangent(v, Q)
        return v.reshape(shape), Q

    return run_tangent


def compiled_map(
    step: Callable,
    x: torch.Tensor,
    *,
    block: int = 1,
    k: int | None = None,
    compile: bool = True,
) -> CompiledFunction:
    """``step`` advanced ``block`` steps per call, compiled and cached.

    Parameters
    ----------
    step : callable x -> next x, traceable by ``torch.compile`` and ``torch.func``
        (e.g. :func:`odenet.stability.flow_map` of an explicit method, an RNN cell).
    x : Tensor, a state of the shape, dtype and device the calls will use.
    block : int, steps per call (larger amortizes the per-call overhead but
        compiles longer: the steps are unrolled).
    k : int, optional; with it the call is ``(x, Q [d, k]) -> (x', M Q)``.
    compile : bool, False gives the eager function (same results).

    Returns
    -------
    CompiledFunction (``.compile_time``, ``.compiled``, ``.record``).
    """
    _warm(step, x)
    key = ("map", tuple(x.shape), x.dtype, x.device, int(block), k)
    what = f"map block={block} tangent k={k} shape={tuple(x.shape)} {x.dtype}"
    return _cached(
        step,
        (*key, bool(compile) and compile_enabled()),
        lambda: CompiledFunction(map_block(step, x.shape, block, k), what, compile=compile),
    )


def _while_loop():
    try:
        from torch._higher_order_ops.while_loop import while_loop
    except ImportError:  # pragma: no cover - torch without while_loop
        return None
    return while_loop


def orbit_loop(
    step: Callable,
    shape: torch.Size,
    k: int | None,
    qr: bool = True,
    unroll: int = 1,
    python_loop: bool = False,
) -> Callable:
    """The eager orbit loop: ``(n, x, Q, acc) -> (x_n, Q_n, acc_n)``, ``n`` a 0-dim tensor.

    Each of the ``n`` steps advances ``x`` and pushes ``Q [d, k]`` through the
    step's Jacobian (vmapped ``jvp``); with ``qr`` it then re-orthonormalizes
    ``Q`` and adds ``log |R_jj|`` to ``acc [k]`` (Benettin's algorithm, QR every
    step).  Written with ``torch``'s ``while_loop``, so under ``torch.compile`` the
    loop is one compiled call whose trip count is a tensor: it is not unrolled
    (compile time independent of ``n``) and a new ``n`` does not recompile.  With
    ``k=None`` only ``x`` is advanced (``Q`` and ``acc`` pass through).

    ``unroll``: steps per loop iteration (the iteration's own overhead, a few
    kernel launches from the generated wrapper, is shared by ``unroll`` steps); the
    QR then runs once per iteration, on the product of ``unroll`` tangent maps, and
    ``n`` counts iterations.  Safe while ``exp((λ_1 − λ_k) · unroll · dt)`` stays
    far from ``1/eps`` (a few steps for any moderate spectrum).

    ``python_loop``: a plain Python loop instead (the eager form: an eager
    ``while_loop`` is itself traced by dynamo, seconds per call).
    """
    while_loop = None if python_loop else _while_loop()

    def flat(v):
        return step(v.reshape(shape)).reshape(-1)

    def one(v, Q, acc):
        if k is None:
            for _ in range(unroll):
                v = flat(v)
            return v, Q, acc
        for _ in range(unroll):
            v, Q = vmap(lambda w, v=v: jvp(flat, (v,), (w,)), in_dims=1, out_dims=(None, 1))(Q)
        if qr:
            Q, R = torch.linalg.qr(Q)
            acc = acc + torch.diagonal(R).abs().log()
        # the loop's carried values must keep their layout (QR returns column-major Q)
        return v, Q.contiguous(), acc

    def run(n, x, Q, acc):
        v = x.reshape(-1)
        if while_loop is None:
            for _ in range(int(n)):
                v, Q, acc = one(v, Q, acc)
        else:
            if k is None:  # carry the state only (outputs may not alias inputs)

                def body1(i, v):
                    return i - 1, one(v, None, None)[0]

                _, v = while_loop(lambda i, v: i > 0, body1, (n, v))
                return v.reshape(shape), Q, acc

            def cond(i, v, Q, acc):
                return i > 0

            def body(i, v, Q, acc):
                v, Q, acc = one(v, Q, acc)
                return i - 1, v, Q, acc

            _, v, Q, acc = while_loop(cond, body, (n, v, Q, acc))
        return v.reshape(shape), Q, acc

    return run


def trajectory_loop(step: Callable, shape: torch.Size, python_loop: bool = False) -> Callable:
    """The eager trajectory loop: ``(n, x, buf [m, d]) -> buf`` with row ``i`` the
    state after ``i + 1`` steps, for ``i < n`` (rows from ``n`` on are left as they
    are).  A ``while_loop`` like :func:`orbit_loop`: not unrolled under
    ``torch.compile``, ``n`` a 0-dim tensor (``python_loop``: a Python loop)."""
    while_loop = None if python_loop else _while_loop()

    def flat(v):
        return step(v.reshape(shape)).reshape(-1)

    def run(n, x, buf):
        v = x.reshape(-1)
        if while_loop is None:
            buf = buf.clone()
            for i in range(int(n)):
                v = flat(v)
                buf[i] = v
            return buf

        def cond(i, v, buf):
            return i < n

        def body(i, v, buf):
            v = flat(v)
            return i + 1, v, buf.index_copy(0, i.reshape(1), v[None])

        _, _, buf = while_loop(cond, body, (torch.zeros_like(n), v, buf))
        return buf

    return run


def compiled_trajectory(
    step: Callable, x: torch.Tensor, *, compile: bool = True, strict: bool = False
) -> CompiledFunction:
    """:func:`trajectory_loop` compiled and cached: ``(n, x, buf [m, d]) -> buf``."""
    _warm(step, x)
    key = ("trajectory", tuple(x.shape), x.dtype, x.device)
    what = f"trajectory loop shape={tuple(x.shape)} {x.dtype}"
    return _cached(
        step,
        (*key, bool(compile) and compile_enabled()),
        lambda: CompiledFunction(
            trajectory_loop(step, x.shape, python_loop=not (compile and compile_enabled())),
            what,
            compile=compile,
            strict=strict,
        ),
    )


def compiled_orbit(
    step: Callable,
    x: torch.Tensor,
    *,
    k: int | None,
    qr: bool = True,
    unroll: int = 1,
    compile: bool = True,
    strict: bool = False,
) -> CompiledFunction:
    """:func:`orbit_loop` compiled and cached: ``(n, x, Q [d, k], acc [k]) -> (x, Q, acc)``.

    ``n`` must be a 0-dim integer tensor (its value is not compiled in): the
    number of loop iterations, ``unroll`` steps each.  The tangent ``Q`` and
    ``acc`` have ``x``'s dtype.
    """
    _warm(step, x)
    key = ("orbit", tuple(x.shape), x.dtype, x.device, k, bool(qr), int(unroll))
    what = f"orbit loop k={k} qr={qr} unroll={unroll} shape={tuple(x.shape)} {x.dtype}"
    return _cached(
        step,
        (*key, bool(compile) and compile_enabled()),
        lambda: CompiledFunction(
            orbit_loop(
                step, x.shape, k, qr, unroll, python_loop=not (compile and compile_enabled())
            ),
            what,
            compile=compile,
            strict=strict,
        ),
    )


# --- one explicit Runge–Kutta step for the host loop ------------------------------------


def host_field(f: Callable, shape: torch.Size, direction: float = 1.0) -> Callable:
    """The loop's internal field of one system, ``g(t [], y [1, n]) -> [1, n]``.

    ``f(t, y)`` is the user's field in the user's layout ``shape``; ``direction = -1``:
    ``t`` is the internal time ``s = -t`` and ``g`` is ``-f(-s, y)`` (as ``_solve``'s
    field, so that the fused and eager steps make the same floating-point operations).
    """
    if direction == 1.0:

        def g(t, y):
            return f(t, y.reshape(shape)).reshape(1, -1)

    else:

        def g(t, y):
            return -f(-t, y.reshape(shape)).reshape(1, -1)

    return g


def rk_step_one(f: Callable, shape: torch.Size, rk: RungeKutta, direction: float = 1.0) -> Callable:
    """The eager function the loop's host backend needs, with tensor ``s`` and ``h``.

    ``(s [], y [1, n], h [], f0 [1, n]) -> (y1 [1, n], K [S, n], rates [E, n] | None,
    f1 [1, n] | None)`` — the outputs of :meth:`RungeKutta.step_one`.  ``f(t, y)`` is
    the user's field in the user's layout ``shape`` (``t`` a 0-dim tensor).  The
    stages are the stepper's :func:`explicit_step`.  ``direction = -1``: ``s`` is the
    loop's internal time ``s = -t`` and the field is ``-f(-s, y)`` (as ``_solve``'s
    host field).
    """
    E = rk.E_rows
    # a Python bool, decided here: the tableau's flag is a numpy bool, which dynamo
    # would trace as a tensor (a data-dependent branch)
    fsal = bool(rk.stiffly_accurate)
    last_row = rk.row_terms[-1]

    g = host_field(f, shape, direction)

    def step(s, y, h, f0):
        y1, _, ks = explicit_step(g, s, y, h, rk, f0=f0, error=False)
        K = ks.reshape(rk.S, -1)
        f1 = None
        if fsal:
            # FSAL: the last stage input is the solution (as in step_one), so that
            # f1 = f(s + h, y1) exactly
            y1 = stage_input(last_row, y, h, list(ks.unbind(0)))
            f1 = ks[-1]
        rates = None if E is None else E @ K
        return y1, K, rates, f1

    step.field = g  # the internal field, for callers that need one more stage
    return step


def compiled_rk_step(
    f: Callable,
    method: str | ButcherTableau,
    y: torch.Tensor,
    *,
    shape: torch.Size | None = None,
    time_dtype: torch.dtype | None = None,
    direction: float = 1.0,
    compile: bool = True,
) -> CompiledFunction:
    """One explicit step of ``method`` on ``f``, fused and cached.

    Parameters
    ----------
    f : callable f(t, y) -> dy/dt on the user's layout.
    method : name or ButcherTableau (explicit).
    y : Tensor ``[1, n]``, a state row of the dtype and device the calls will use.
    shape : the user's state shape (default ``y.shape``); ``f`` sees ``y`` reshaped.
    time_dtype : dtype of ``s`` (default ``y``'s).
    direction : ``-1`` when the loop runs in internal time ``s = -t`` (decreasing
        output times): the step is then of ``-f(-s, y)``.

    Returns
    -------
    CompiledFunction ``(s [], y [1, n], h [], f0 [1, n]) -> (y1, K, rates, f1)``; pass
    ``s`` and ``h`` as 0-dim tensors (Python floats would be specialized on and
    recompile for every new step size).  It makes ``S - 1`` calls of ``f``.
    """
    tab = _tableau(method) if not isinstance(method, ButcherTableau) else method
    if tab.is_implicit:
        raise ValueError(f"compiled_rk_step needs an explicit tableau, got {tab.name!r}.")
    shape = y.shape if shape is None else torch.Size(shape)
    tdt = y.dtype if time_dtype is None else time_dtype
    direction = -1.0 if direction < 0 else 1.0
    key = ("rk", tableau_key(tab), tuple(shape), tuple(y.shape), y.dtype, tdt, y.device,
           direction)  # fmt: skip
    what = f"rk step {tab.name} shape={tuple(shape)} {y.dtype}"

    def build():
        rk = RungeKutta(tab, y.dtype, tdt, y.device)
        return CompiledFunction(rk_step_one(f, shape, rk, direction), what, compile=compile)

    return _cached(f, (*key, bool(compile) and compile_enabled()), build)


# --- the fused step of the one loop's host backend (``solve(..., compile=True)``) -------


class CompileFallbackWarning(OdenetWarning, RuntimeWarning):
    """``compile=True`` could not be honoured; the eager path ran (same results)."""


def host_step(f: Callable, shape: torch.Size, rk: RungeKutta, direction: float, adaptive: bool):
    """The eager function the loop's host backend calls per step under ``compile=True``.

    ``(sh [2], y [1, n], f0 [1, n], tol [2, n]) -> (y1 [1, n], K [S, n], check [E], f1 [1, n])``
    with ``sh = (s, h)`` the step's internal start time and size (time dtype),
    ``tol = (atol, rtol)`` per component.  Beyond :func:`rk_step_one` it does in the
    fused kernel what the host loop would otherwise do with a dozen eager tensor
    operations per step:

    * ``check``: adaptive, the RMS norm of each embedded error estimate scaled by
      ``atol + rtol·max(|y|, |y1|)`` (what ``_Host.error_norms`` computes, ``E`` = 1,
      or 2 for DOP853); fixed, ``[1.0]`` if ``y1`` is finite else ``[0.0]``.  One
      ``.tolist()`` per step is then the only host synchronisation.
    * ``f1 = f(s + h, y1)`` always: free for FSAL tableaux (their last stage), one
      more stage in the kernel otherwise (the loop needs it as the next step's first
      stage).
    """
    step = rk_step_one(f, shape, rk, direction)
    fsal = bool(rk.stiffly_accurate)
    g = step.field

    def run(sh, y, f0, tol):
        s, h = sh[0], sh[1]
        y1, K, rates, f1 = step(s, y, h.to(y.dtype), f0)
        if not fsal:
            f1 = g(s + h, y1)
        if adaptive:
            scale = tol[0] + tol[1] * torch.maximum(y.abs(), y1.abs())
            q = (h.to(y.dtype) * rates) / scale
            check = q.pow(2).mean(dim=1).sqrt()
        else:
            check = torch.isfinite(y1).all().to(y.dtype).reshape(1)
        return y1, K, check, f1

    return run


def host_block(
    f: Callable,
    shape: torch.Size,
    rk: RungeKutta,
    direction: float,
    unroll: int,
    python_loop: bool = False,
):
    """The eager fixed-grid block: ``n · unroll`` grid steps in one call.

    ``(n [] int64, k [] int64, grid [2], s [], y [1, n], f0 [1, n]) -> (y, f, finite [1])``:
    from node ``k`` at time ``s`` with ``f0 = f(s, y)``, the steps to the nodes
    ``grid[0] + (k + j)·grid[1]``, ``j = 1 … n·unroll`` (``grid = (s0, h)``), each of
    size ``node − s`` as the loop's own fixed steps (the same floating-point
    operations), returning the state and ``f`` on the last node and whether that
    state is finite.  A ``while_loop`` of ``n`` iterations of ``unroll`` steps:
    compiled, its trip count is a tensor (no recompile for a new ``n``) and the
    iteration's own overhead is shared by ``unroll`` steps.  It is the loop's
    method step over several nodes: the loop still decides where a block ends
    (before the next output) and accepts it.  ``python_loop``: the eager form.
    """
    step = rk_step_one(f, shape, rk, direction)
    g = step.field
    fsal = bool(rk.stiffly_accurate)
    while_loop = None if python_loop else _while_loop()

    def one(k, s, y, f0, grid):
        k = k + 1
        node = grid[0] + k.to(grid.dtype) * grid[1]
        y1, _, _, f1 = step(s, y, (node - s).to(y.dtype), f0)
        if not fsal:
            f1 = g(node, y1)
        return k, node, y1, f1

    def run(n, k, grid, s, y, f0):
        def cond(i, k, s, y, f):
            return i > 0

        def body(i, k, s, y, f):
            for _ in range(unroll):
                k, s, y, f = one(k, s, y, f, grid)
            return i - 1, k, s, y, f

        if while_loop is None:
            carry = (n, k, s, y, f0)
            while bool(carry[0] > 0):
                carry = body(*carry)
            y, f = carry[3], carry[4]
        else:
            y, f = while_loop(cond, body, (n, k, s, y, f0))[3:]
        return y, f, torch.isfinite(y).all().to(y.dtype).reshape(1)

    return run


def host_adaptive_block(
    f: Callable,
    shape: torch.Size,
    rk: RungeKutta,
    direction: float,
    spec: tuple,
    python_loop: bool = False,
):
    """The eager block of adaptive steps: the one loop's steps, up to the first one
    the loop must take itself, with the steps that write outputs kept for the loop.

    ``spec = (controller, error_order, kinds, M, W)`` (``kinds``: which entries of the
    controller's memory are bools; ``M``: buffer rows; ``W``: output times seen per
    call).  The call is ``(n [] int64, y [1, n], f0 [1, n], tol [2, n], c [6 + m] float64,
    outs [W] float64) -> (y, f0, y1, K, check, f1, steps [M, 2] float64, states [M, 4, n],
    Ks [M, S, n], info [7 + m] float64)`` with ``c = (s_end, snap, max_step, min_step, s,
    h, *memory)`` and ``outs`` the next ``W`` output times (``+inf`` past the last), all
    in the loop's internal time, and ``info = (go, accepted, rejected, s, h, h_try, j,
    *memory)``.  Every shape is fixed by the state and the controller, so no call
    recompiles for another number of output times.

    Each of at most ``n`` trials is the loop's adaptive step, computed as the loop
    does: ``h_try = min(h, max_step)``, cut to land on ``s_end`` within ``snap``; the
    fused step of :func:`host_step`; the controller's own ``error_ratio``, ``judge``,
    ``min_step`` and ``failure`` (run on :class:`odenet._ops.TensorOps`, so the rules
    are the loop's, written once).  A trial is *committed* here unless the loop has
    more to do with it than commit and write outputs: accepted and not landing on
    ``s_end``, or rejected without failing.  The first other trial stops the block
    uncommitted (``go`` = 0): its ``(y1, K, check, f1)`` and ``h_try`` are returned
    for the loop to judge, emit and commit itself.  The first ``j`` rows of the
    buffers hold the committed steps with output times in them — ``(s, h)``,
    ``(y, f0, y1, f1)`` and the stages — for the loop to interpolate the outputs
    from, in order; the block stops when the buffer is full or a step passes the
    last of the ``W`` output times it was given.  ``go`` = 1: it ran
    out of trials or buffer.  Compiled, the loop is a ``while_loop`` (its trip count
    a tensor: not unrolled, no recompile for a new ``n``); ``python_loop``: the
    eager form.
    """
    from odenet._loop import _clock_step
    from odenet._ops import TensorOps as ops
    from odenet._solution import SUCCESS

    ctrl, error_order, kinds, M, W = spec
    ctrl.betas  # noqa: B018 - the cached property is set up before any trace
    step = host_step(f, shape, rk, direction, adaptive=True)
    tdt = rk.c.dtype
    eps = torch.finfo(tdt).eps
    m = len(kinds)
    while_loop = None if python_loop else _while_loop()
    f64 = torch.float64

    def run(n, y, f0, tol, c, outs):
        # separate tensors, not views of ``c``: while_loop rejects aliased inputs
        s_end, snap, max_step, min_step, s, h, *mem = (v.clone() for v in c.unbind(0))
        mem = tuple(v != 0 if k else v for v, k in zip(mem, kinds, strict=True))

        def cond(i, go, j, cur, *_):
            # cur == W: a step went past the window of output times (its own outputs
            # are the loop's to write; where the next one is, the next call sees)
            return (i > 0) & go & (j < M) & (cur < W)

        def body(i, go, j, cur, acc, rej, s, h, y, f0, steps, states, Ks, *rest):
            mem = rest[:m]
            gap = s_end - s
            h_try = torch.minimum(h, max_step)
            to_node = h_try >= gap - snap
            h_try = torch.where(to_node, gap, _clock_step(ops, s, h_try))
            y1, K, check, f1 = step(torch.stack([s, h_try]).to(tdt), y, f0, tol)
            f1 = f1.clone()  # FSAL: a view of K's last row (carried values may not alias)
            ratio = ctrl.error_ratio(ops, list(check.to(f64).unbind(0)))
            accept, h_next, mem2 = ctrl.judge(
                ops, h_try, ratio, None, mem, error_order, h_prev=h, to_node=to_node
            )
            min_h = ctrl.min_step(ops, s, eps, min_step)
            finite = torch.isfinite(y1).all()
            code = ctrl.failure(
                ops, accept=accept, finite=finite, ok=None, h_next=h_next, min_h=min_h
            )
            # an accepted step below the round-off of s is the loop's to judge (it fails
            # it as an underflow, past a finite-time blow-up): the block stops before it
            stalled = h_try < ctrl.min_step(ops, s, eps, 0.0)
            quiet = torch.where(accept, ~to_node & ~stalled, code == SUCCESS)
            commit = quiet & accept
            s1 = s + h_try
            # outputs in (s, s1]: the loop's own test, times[k] <= s1 + snap
            reached = (outs <= s1 + snap).sum()
            keep = commit & (reached > cur)
            # row j is free (j < M): written every trial, kept when j moves on
            row = j.reshape(1)
            steps = steps.index_copy(0, row, torch.stack([s, h_try])[None])
            states = states.index_copy(0, row, torch.stack([y, f0, y1, f1], dim=1))
            Ks = Ks.index_copy(0, row, K[None])
            mem = tuple(torch.where(quiet, a, b) for a, b in zip(mem2, mem, strict=True))
            return (
                i - 1,
                quiet,
                j + keep.to(j.dtype),
                torch.where(keep, reached, cur),
                acc + commit.to(acc.dtype),
                rej + (quiet & ~accept).to(rej.dtype),
                torch.where(commit, s1, s),
                torch.where(quiet, h_next, h),
                torch.where(commit, y1, y),
                torch.where(commit, f1, f0),
                steps,
                states,
                Ks,
                *mem,
                y1,
                K,
                check,
                f1,
                h_try,
            )

        zero = torch.zeros((), dtype=torch.int64)
        S, E = rk.S, 1 if rk.E_rows is None else rk.E_rows.shape[0]
        n_y = y.shape[1]
        buffers = (h.new_zeros(M, 2), y.new_zeros(M, 4, n_y), y.new_zeros(M, S, n_y))
        pending = (
            torch.zeros_like(y),
            y.new_zeros(S, n_y),
            y.new_zeros(E),
            torch.zeros_like(f0),
            torch.zeros_like(h),
        )
        go = torch.ones((), dtype=torch.bool)
        carry = (n, go, zero, zero.clone(), zero.clone(), zero.clone(), s, h, y, f0)
        carry = (*carry, *buffers, *mem, *pending)
        if while_loop is None:
            while bool(cond(*carry)):
                carry = body(*carry)
        else:
            carry = while_loop(cond, body, carry)
        _, go, j, _, acc, rej, s, h, y, f0, steps, states, Ks = carry[:13]
        mem = carry[13 : 13 + m]
        y1, K, check, f1, h_try = carry[13 + m :]
        info = torch.stack([v.to(f64) for v in (go, acc, rej, s, h, h_try, j, *mem)])
        return y, f0, y1, K, check, f1, steps, states, Ks, info

    return run


class FusedHost:
    """What ``solve(..., compile=True)`` gives the loop's host backend.

    It builds (cached per field, tableau, shape, dtype, device, direction and
    fixed/adaptive) the fused step of :func:`host_step`, counts the field
    evaluations it makes into the solve's counter, and records what happened for
    ``Solution.stats``: ``compiled`` (bool), ``compile_time`` (seconds spent
    compiling in this solve: 0 when the compiled code came from the cache) and,
    when the eager path ran instead, ``compile_fallback`` (why).
    """

    def __init__(self, f: Callable, tableau: ButcherTableau, shape, time_dtype, direction, nfe):
        self.f, self.tableau, self.shape = f, tableau, torch.Size(shape)
        self.tdt, self.direction, self.nfe = time_dtype, -1.0 if direction < 0 else 1.0, nfe
        self.used = False
        self.fn: CompiledFunction | None = None
        self.reason = ""
        self._time_before = 0.0
        self.block: CompiledFunction | None = None
        self._block_before = 0.0
        self.block_reason = ""
        # adaptive blocks: the compiled block (False: not to be used in this solve),
        # its compile time before this solve, and the trial it stopped at
        self.ablock: CompiledFunction | bool | None = None
        self._ablock_before = 0.0
        self.pending = None
        self.newton: FusedNewton | None = None  # implicit methods (install_newton)

    def _get_compiled(self, kind: str, make: Callable, y: torch.Tensor, extra):
        """``make(f, shape, rk, direction, extra)`` compiled and cached per (field,
        kind, tableau, shapes, dtypes, device, direction, extra); with its compile
        time so far (NaN: it compiles in this solve)."""
        key = (kind, tableau_key(self.tableau), tuple(self.shape), tuple(y.shape), y.dtype,
               self.tdt)  # fmt: skip
        key = (*key, y.device, self.direction, extra)
        what = f"{kind} {self.tableau.name} ({extra}) shape={tuple(self.shape)} {y.dtype}"

        def build():
            own = RungeKutta(self.tableau, y.dtype, self.tdt, y.device)
            fn = make(self.f, self.shape, own, self.direction, extra)
            return CompiledFunction(fn, what, strict=True, options=_HOST_OPTIONS)

        fn = _cached(self.f, key, build)
        return fn, (fn.compile_time if fn.record.calls else float("nan"))

    def build(self, rk: RungeKutta, y: torch.Tensor, adaptive: bool) -> CompiledFunction | None:
        """The fused step for state rows like ``y [1, n]`` (``None``: not compilable,
        the reason recorded)."""
        self.used = True
        if not compile_enabled():
            return self.decline("compilation is disabled (ODENET_COMPILE=0 or no torch.compile)")
        kind = "host step, adaptive" if adaptive else "host step, fixed"
        self.fn, self._time_before = self._get_compiled(kind, host_step, y, bool(adaptive))
        if not self.fn.compiled:  # an earlier solve found it not compilable
            return self.decline(self.fn.record.reason)
        # stages per step, all in the kernel (FSAL: the last one is the next first)
        self.per_call = rk.S - 1 if rk.stiffly_accurate else rk.S
        return self.fn

    def build_block(self, rk: RungeKutta, y: torch.Tensor, unroll: int) -> CompiledFunction | None:
        """The compiled fixed-grid block of :func:`host_block` (``None``: unavailable;
        the loop then takes its fixed steps one fused step at a time)."""
        if not compile_enabled():
            return None
        self.block, self._block_before = self._get_compiled(
            "fixed-grid block", host_block, y, unroll
        )
        if not self.block.compiled:
            self.block = None
        return self.block

    def _block_args(self, n_steps, unroll, node, grid, s, y, f0):
        i64 = torch.int64
        n = torch.scalar_tensor(n_steps // unroll, dtype=i64)
        k = torch.scalar_tensor(node, dtype=i64)
        return n, k, grid, torch.scalar_tensor(s, dtype=self.tdt, device=y.device), y, f0

    def call_block(self, n_steps: int, unroll: int, node: int, grid, s, y, f0):
        """``n_steps`` (a multiple of ``unroll``) fixed grid steps from ``node``:
        ``(y, f, finite [1])``; ``None`` when the block failed to compile (the caller
        then takes these steps one fused step at a time, and no more blocks)."""
        try:
            out = self.block(*self._block_args(n_steps, unroll, node, grid, s, y, f0))
        except CompileFailed as exc:
            self.block, self.block_reason = None, str(exc)
            return None
        self.nfe[0] += self.per_call * n_steps  # (built after build(): per_call is set)
        return out

    # buffer rows of an adaptive block: steps with outputs in them per call
    ADAPTIVE_ROWS = 32

    def advance(self, B, s: float, y, f0, h: float, memory, ctrl, error_order, h_floor):
        """The loop's adaptive steps up to the next one it must take itself (the one
        landing on the end, or a failing one), in compiled blocks
        (:func:`host_adaptive_block`); ``B`` is the loop's host backend.

        Returns the loop's ``(s, y, f0, h, memory)`` after the committed steps (the
        inputs unchanged when no block applies: before the first fused step, after
        a fallback, with ``h_floor``, a controller that is not hashable or a block
        that failed to compile).  The outputs in the committed steps are written
        with the loop's own ``B.emit`` from the block's buffer; the counts, the
        field evaluations and the step budget (``B._skip``: steps beyond the loop's
        own iterations) are booked here; the trial the block stopped at is kept for
        the next :meth:`call`.
        """
        same = s, y, f0, h, memory
        if self.ablock is False or self.fn is None or self.reason or h_floor > 0:
            return same
        budget = B.cfg.max_steps - B.steps_taken()
        if budget <= 0:
            return same
        if self.ablock is None:
            kinds = tuple(isinstance(v, bool) for v in memory)
            try:
                hash(ctrl)
            except TypeError:
                self.ablock = False
                self.block_reason = (
                    "the controller is not hashable (blocks are cached per controller)"
                )
                return same
            rows = self.ADAPTIVE_ROWS
            spec = (ctrl, error_order, kinds, rows, 4 * rows)
            self.ablock, self._ablock_before = self._get_compiled(
                "adaptive block", host_adaptive_block, y, spec
            )
            self._kinds = kinds
            if not self.ablock.compiled:  # an earlier solve found it not compilable
                self.ablock = False
                return same
            # the output times padded so that every window [cursor, cursor + W) exists
            self._window = 4 * rows
            pad = [math.inf] * self._window
            self._outs = torch.tensor(B.times + pad, dtype=torch.float64, device=B.dev)
        cfg = B.cfg
        c = [B.s_end, B.snap, cfg.max_step, cfg.min_step, s, h]
        c = torch.tensor(c + [float(v) for v in memory], dtype=torch.float64, device=B.dev)
        n = torch.scalar_tensor(budget, dtype=torch.int64)
        outs = self._outs[B.cursor : B.cursor + self._window].clone()
        try:
            out = self.ablock(n, y, f0, B._tol, c, outs)
        except CompileFailed as exc:
            self.ablock, self.block_reason = False, str(exc)
            return same
        y, f0, y1, K, check, f1, steps, states, Ks, info = out
        go, acc, rej, s, h, h_try, j, *mem = info.tolist()  # the block's one synchronisation
        if j:  # the outputs inside the committed steps, by the loop's interpolant
            from odenet._loop import _Trial

            for i, (si, hi) in enumerate(steps[: int(j)].tolist()):
                st = states[i]
                trial = _Trial(st[2:3], Ks[i], st[3:4], None)
                B.emit(si, si + hi, hi, st[0:1], trial, st[1:2], True, True, False)
        memory = tuple(bool(v) if k else v for v, k in zip(mem, self._kinds, strict=True))
        acc, rej = int(acc), int(rej)
        B.accepted += acc
        B.rejected += rej
        B._skip += acc + rej
        self.nfe[0] += self.per_call * (acc + rej + (go == 0))
        if go == 0:
            key = [s, h_try]
            if B.tdt != torch.float64:  # as the loop will round them
                key = torch.tensor(key, dtype=B.tdt).tolist()
            self.pending = (y, key, (y1, K, check, f1))
        return s, y, f0, h, memory

    def call(self, sh, y, f0, tol):
        """One fused step; ``None`` when its first call failed to compile (the
        caller then steps eagerly from the same state).  The trial an adaptive block
        stopped at is returned as it is when the loop asks for it (same ``y``, ``s``
        and ``h``); its field evaluations were counted by :meth:`advance`."""
        pending, self.pending = self.pending, None
        if pending is not None and y is pending[0] and sh.tolist() == pending[1]:
            return pending[2]
        try:
            out = self.fn(sh, y, f0, tol)
        except CompileFailed as exc:
            self.decline(str(exc))
            return None
        self.nfe[0] += self.per_call
        return out

    def install_newton(self, rk: RungeKutta) -> None:
        """Give an implicit method's Newton solver its fused iteration (:class:`FusedNewton`)."""
        if getattr(rk, "newton", None) is not None:
            self.newton = rk.newton.fused = FusedNewton(self, rk)

    def decline(self, reason: str) -> None:
        """Record why the eager path runs and warn (once per solve)."""
        import warnings

        self.used, self.reason = True, reason
        warnings.warn(
            f"solve(compile=True) runs eagerly: {reason}. Results are the eager ones; "
            "pass compile=False to silence this.",
            CompileFallbackWarning,
            stacklevel=4,
        )
        return None

    def stats(self) -> dict:
        """``compiled``, ``compile_time`` (and ``compile_fallback``) for Solution.stats."""
        fused_newton = None if self.newton is None or self.reason else self.newton.stats()
        if fused_newton is not None:  # an implicit method's Newton iterations ran fused
            return fused_newton
        if not self.used:  # the loop chose its masked backend: no host step to fuse
            self.decline(
                "the solve runs on the masked backend (per-sample time grids, an implicit "
                "or multistep method, events, step_t/jump_t, callbacks, or gradients with "
                "respect to the times of a fixed grid)"
            )
        ok = not self.reason and self.fn is not None and self.fn.compiled
        out = {"compiled": ok, "compile_time": 0.0}
        if ok and math.isnan(self._time_before):  # compiled in this solve
            out["compile_time"] = self.fn.compile_time
        blk = self.block
        if ok and blk is not None and math.isnan(self._block_before) and blk.record.calls:
            out["compile_time"] += blk.compile_time
        ablk = self.ablock
        if ok and isinstance(ablk, CompiledFunction) and math.isnan(self._ablock_before):
            out["compile_time"] += ablk.compile_time
        if not ok:
            out["compile_fallback"] = self.reason
        elif self.block_reason:
            kind = "adaptive" if self.ablock is False else "fixed-grid"
            out["compile_fallback"] = (
                f"{kind} blocks ran as single fused steps: {self.block_reason}"
            )
        return out


# --- implicit methods: the Newton iterations of one system ------------------------------


def _lu_solve(LU: torch.Tensor, pivots: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    # DenseLU.solve on the factors as tensors (a traced function takes tensors)
    return torch.linalg.lu_solve(LU, pivots, rhs.unsqueeze(-1)).squeeze(-1)


def newton_iteration(f: Callable, shape: torch.Size, rk: RungeKutta, direction: float, S: int):
    """One simplified Newton iteration of :meth:`odenet._newton.Newton._iterate`, eager.

    ``(times [1, S], Z [1, S, n], base [1, S, n], hA [1, S, S], LU [1, Sn, Sn],
    pivots [1, Sn], scale [1, 1, n]) -> (dZ [1, S, n], dnorm [1])``: the stage
    residual ``F = Z − base − (hA ⊗ I) G(Z)`` with ``G_j = f(times_j, Z_j)`` (``S``
    field calls), the increment ``dZ = −M⁻¹ F`` from the LU factors of ``M`` and its
    RMS norm in units of ``scale`` — the operations of the eager iteration, in its
    order.  The decisions on the increment (rates, convergence, divergence) stay
    with the caller.
    """
    g = host_field(f, shape, direction)

    def run(times, Z, base, hA, LU, pivots, scale):
        K, _, n = Z.shape
        G = torch.stack([g(times[0, j], Z[:, j]) for j in range(S)], dim=1)
        F = Z - base - torch.einsum("kij,kjn->kin", hA, G)
        dZ = -_lu_solve(LU, pivots, F.reshape(K, S * n)).reshape(K, S, n)
        dnorm = (dZ / scale).pow(2).mean(dim=(1, 2)).sqrt()
        return dZ, dnorm

    return run


def radau_iteration(f: Callable, shape: torch.Size, rk: RungeKutta, direction: float, extra):
    """One Newton iteration of :meth:`odenet._radau.RadauIIA._iterate`, eager.

    ``(times [1, s], y [1, n], Z [s, 1, n], W [s, 1, n], hy [1], scale [1, n], LU_0,
    pivots_0, …) -> (dW [s, 1, n], dnorm [1], finite [1])``: the field at the ``s``
    stage times, the transformed residual solved with the real LU (``γ̂/h − J``, odd
    ``s``) and one complex LU per eigenvalue pair (``μ_k/h − J``), the increment of
    the eigen-variables ``W = T⁻¹ Z`` and its RMS norm — the eager iteration's
    operations in its order (the constants from :func:`odenet._radau.radau_constants`).
    """
    from odenet._radau import radau_constants

    k = radau_constants(rk.tableau)
    S, r, mus = k.s, 0 if k.mu_real is None else 1, k.mu_complex
    dt, dev = rk.dtype, rk.c.device
    cdt = torch.complex128 if dt == torch.float64 else torch.complex64
    TI = torch.as_tensor(k.TI, dtype=dt, device=dev)
    TI_pairs = torch.as_tensor(k.TI[r::2] + 1j * k.TI[r + 1 :: 2], dtype=cdt, device=dev)
    g = host_field(f, shape, direction)

    def run(times, y, Z, W, hy, scale, *lus):
        F = torch.stack([g(times[0, i], y + Z[i]) for i in range(S)])
        finite_F = torch.isfinite(F).all(dim=2).all(dim=0)
        F = torch.nan_to_num(F)
        dW = torch.empty_like(W)
        if r:
            f_real = torch.einsum("i,ikn->kn", TI[0], F) - (k.mu_real / hy)[:, None] * W[0]
            dW[0] = _lu_solve(lus[0], lus[1], f_real)
        hc = hy.to(cdt)[:, None]
        Fc = torch.einsum("pi,ikn->pkn", TI_pairs, F.to(cdt))
        for p, mu in enumerate(mus):
            Wc = W[r + 2 * p] + 1j * W[r + 2 * p + 1]
            d = _lu_solve(lus[2 * (r + p)], lus[2 * (r + p) + 1], Fc[p] - (mu / hc) * Wc)
            dW[r + 2 * p], dW[r + 2 * p + 1] = d.real, d.imag
        dnorm = (dW / scale[None]).pow(2).mean(dim=(0, 2)).sqrt()
        return dW, dnorm, finite_F

    return run


class FusedNewton:
    """The Newton iterations of an implicit solve under ``solve(compile=True)``.

    Installed as ``newton.fused`` on the solve's :class:`~odenet._newton.Newton` (or
    :class:`~odenet._radau.RadauNewton`); their ``_iterate`` asks it for each
    iteration's residual, linear solves and increment norm (:func:`newton_iteration`,
    :func:`radau_iteration`: one compiled call, cached per field, tableau, shape,
    dtype and direction) and keeps the decisions — contraction rate, convergence,
    divergence, ``max_iter``, Jacobian refreshes — on the host, so the accepted and
    rejected steps and the counts (``nfe``, ``njev``, ``nlu``, linear solves) are the
    eager ones.  A call answers ``None`` where the eager iteration is to run: one
    system with dense LU factors and no gradient through the solve is fused; per-sample
    solves, the sparse (SuperLU) path, gradients, a failed compile and stage functions
    without stage times (the generic fully implicit solver: fixed-step Radau IIA, Gauss,
    Lobatto) run eagerly, the reason in ``stats["compile_fallback"]``.
    """

    def __init__(self, host: FusedHost, rk: RungeKutta):
        self.host, self.rk = host, rk
        self.fn: CompiledFunction | None = None
        self.before = 0.0
        self.reason = ""

    def _ready(self, kind: str, make: Callable, y: torch.Tensor, S: int, lus) -> bool:
        if self.reason:
            return False
        if self.fn is not None and all(isinstance(lu, DenseLU) for lu in lus):
            return True
        why = ""
        if self.rk.track_grad:
            why = (
                "gradients are needed through the solve (the compiled Newton iteration "
                "keeps no autograd graph); use it under torch.no_grad() or for inference"
            )
        elif y.shape[0] != 1:
            why = "the implicit iterations of a batch of systems (per-sample times) run eagerly"
        elif not all(isinstance(lu, DenseLU) for lu in lus):
            why = (
                f"the sparse LU path (SuperLU, n >= {SPARSE_MIN_N} with a sparsity pattern) "
                "runs its Newton iterations eagerly"
            )
        if why:
            self.reason = why
            self.host.decline(why)
            return False
        self.fn, self.before = self.host._get_compiled(kind, make, y[:1], S)
        if not self.fn.compiled:  # an earlier solve found it not compilable
            self.reason = self.fn.record.reason
            self.host.decline(self.reason)
            return False
        return True

    def _call(self, *args):
        try:
            return self.fn(*args)
        except CompileFailed as exc:
            self.reason = str(exc)
            self.host.decline(self.reason)
            return None

    def iteration(self, newton, g_of_stages, Z, base, hA, scale, lu):
        """``(dZ, dnorm)`` of one iteration of :meth:`Newton._iterate` (``None``: eager)."""
        times = getattr(g_of_stages, "times", None)  # [K, S], set by the stepper
        if times is None:
            if not self.reason:
                self.reason = (
                    "the generic fully implicit stage solver (fixed-step Radau IIA, Gauss, "
                    "Lobatto) iterates eagerly; the fused Newton iteration serves adaptive "
                    "Radau IIA and diagonally implicit methods"
                )
                self.host.decline(self.reason)
            return None
        S = Z.shape[1]
        if not self._ready("newton iteration", newton_iteration, Z[:, 0], S, [lu]):
            return None
        out = self._call(times, Z, base, hA, lu.LU, lu.pivots, scale)
        if out is not None:
            self.host.nfe[0] += S
            newton.stats.linear_solves += 1
        return out

    def radau(self, rk, times, y, hy, Z, W, scale, lus):
        """``(dW, dnorm, finite)`` of one iteration of :meth:`RadauIIA._iterate`
        (``None``: eager)."""
        if not self._ready("radau iteration", radau_iteration, y, "radau", lus):
            return None
        factors = [t for lu in lus for t in (lu.LU, lu.pivots)]
        out = self._call(times, y, Z, W, hy, scale, *factors)
        if out is not None:
            self.host.nfe[0] += rk.S
            rk.newton.stats.linear_solves += len(lus)
        return out

    def stats(self) -> dict | None:
        """The solve's ``compiled`` / ``compile_time`` when iterations were fused."""
        if self.reason or self.fn is None or not self.fn.record.calls:
            return None
        out = {"compiled": self.fn.compiled, "compile_time": 0.0}
        if math.isnan(self.before):
            out["compile_time"] = self.fn.compile_time
        return out
