"""Differential fuzz of odenet's torchdiffeq drop-in against torchdiffeq 0.2.5 itself.

One drawn :class:`Case` (method, dtypes of ``y`` and ``t``, direction, 1–6 irregular
output times, a tensor or tuple state with 0-dim parts, the method family's options,
tolerances, and optionally a gradient through ``odeint`` or ``odeint_adjoint``) is run
through both ``torchdiffeq.odeint*`` and ``odenet.odeint*`` on the same inputs and
judged by :func:`check`:

* fixed-step methods (torchdiffeq's ``euler`` … ``rk4``, the Adams family on an
  equal-step grid) must agree with torchdiffeq to round-off: same grid, same scheme;
* adaptive methods (and Adams on an uneven grid, where odenet's variable-step
  coefficients differ by design) are measured against an independent reference —
  scipy ``solve_ivp`` (DOP853, rtol = atol = 1e-12, float64) for values; torchdiffeq's
  ``dopri8`` at 1e-12 in float64, differentiated directly, for ``∂L/∂y0`` and the
  parameters; and the closed forms ``∂L/∂t_j = w_j·f(t_j, y_j)`` (j ≥ 1),
  ``∂L/∂t_0 = −(∂L/∂y0 − w_0)·f(t_0, y_0)`` for the times — in units of the tolerance,
  and flagged only when odenet is both outside a tolerance-proportional bound and
  clearly worse than torchdiffeq on the same input;
* an input torchdiffeq accepts must be accepted by odenet or refused with an
  :class:`odenet.OdenetError`; anything else is a crash.

Run (from the repository root)::

    nice .venv/bin/python studies/conformance/fuzz.py --examples 400 --seed 0

It prints a table of outcomes per method and, for each kind of finding, the minimal
reproducer that hypothesis shrank it to.  ``tests/test_compat_fuzz.py`` draws the
same cases with a modest ``max_examples``.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from hypothesis import strategies as st

import odenet

FIXED_RK = ("euler", "midpoint", "heun2", "heun3", "rk4")
ADAMS = ("explicit_adams", "implicit_adams", "fixed_adams")
ADAPTIVE = ("dopri5", "bosh3", "adaptive_heun", "fehlberg2", "dopri8")
METHODS = ADAPTIVE + FIXED_RK + ADAMS + ("scipy_solver",)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# parts of a tuple state; () is a 0-dim tensor
PART_SHAPES = ((), (1,), (2,), (1, 2))


@dataclass(frozen=True)
class Case:
    """One drawn input, plain data so that hypothesis can shrink and print it.

    ``times`` are the output times (already ordered in the direction of
    integration); ``shapes`` is ``None`` for a tensor state of shape ``tensor_shape``,
    else the shapes of a tuple state.  ``options`` holds only picklable values:
    ``norm`` is a name (see :func:`_norm`), ``grid_constructor`` a node count.
    """

    method: str
    dtype: str
    t_dtype: str
    times: tuple[float, ...]
    shapes: tuple[tuple[int, ...], ...] | None
    tensor_shape: tuple[int, ...]
    seed: int
    rtol: float | tuple[float, ...]
    atol: float | tuple[float, ...]
    options: tuple[tuple[str, object], ...] = ()
    grad: str | None = None  # None | "odeint" | "adjoint"

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def n(self) -> int:
        shapes = self.shapes if self.shapes is not None else (self.tensor_shape,)
        return int(sum(math.prod(s) for s in shapes))


# --- drawing ------------------------------------------------------------------------------

_round = st.floats(-1.0, 1.0).map(lambda x: round(x, 3))


@st.composite
def cases(draw, methods=METHODS, grads=(None, "odeint", "adjoint")) -> Case:
    """A :class:`Case`: every field drawn from the ranges a user might plausibly give."""
    method = draw(st.sampled_from(methods))
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    t_dtype = draw(st.sampled_from([dtype, "float64"]))
    t0 = draw(_round)
    n_times = draw(st.integers(1, 6))
    steps = draw(
        st.lists(
            st.floats(0.05, 0.8).map(lambda x: round(x, 3)),
            min_size=n_times - 1,
            max_size=n_times - 1,
        )
    )
    sign = -1.0 if draw(st.booleans()) else 1.0
    times = tuple(float(x) for x in t0 + sign * np.concatenate([[0.0], np.cumsum(steps)]))
    if draw(st.booleans()):
        shapes = None
        tensor_shape = draw(st.sampled_from([(1,), (3,), (2, 2)]))
    else:
        shapes = tuple(draw(st.lists(st.sampled_from(PART_SHAPES), min_size=1, max_size=3)))
        tensor_shape = ()
    seed = draw(st.integers(0, 2**16))
    low = 1e-7 if dtype == "float32" else 1e-10
    rtol = draw(st.sampled_from([r for r in (1e-3, 1e-5, 1e-7, 1e-9) if r >= low]))
    atol = draw(st.sampled_from([a for a in (1e-4, 1e-6, 1e-8, 1e-10) if a >= low / 10]))
    if shapes is not None and draw(st.integers(0, 3)) == 0:  # one tolerance per tensor
        rtol = tuple(rtol * 10.0 ** -draw(st.integers(0, 2)) for _ in shapes)
        atol = tuple(atol * 10.0 ** -draw(st.integers(0, 2)) for _ in shapes)
    span = (min(times), max(times))
    opts: dict = {}
    if method in ADAPTIVE:
        if draw(st.booleans()):
            opts["first_step"] = draw(st.sampled_from([1e-3, 0.05, 0.3, 2.0]))
        if draw(st.booleans()):
            opts["max_step"] = draw(st.sampled_from([0.05, 0.2, math.inf]))
        if draw(st.integers(0, 3)) == 0:
            opts["min_step"] = draw(st.sampled_from([1e-4, 1e-2]))
        for key in ("jump_t", "step_t"):
            if draw(st.integers(0, 2)) == 0:
                k = draw(st.integers(0, 3))
                opts[key] = tuple(
                    round(draw(st.floats(span[0] - 0.2, span[1] + 0.2)), 4) for _ in range(k)
                )
        if draw(st.booleans()):
            opts["norm"] = draw(st.sampled_from(["max", "rms_sum"]))
        if draw(st.integers(0, 3)) == 0:
            opts["dtype"] = draw(st.sampled_from(["float32", "float64"]))
        if draw(st.integers(0, 3)) == 0:
            opts["safety"] = draw(st.sampled_from([0.5, 0.95]))
            opts["ifactor"] = draw(st.sampled_from([2.0, 10.0]))
            opts["dfactor"] = draw(st.sampled_from([0.1, 0.5]))
        if draw(st.integers(0, 7)) == 0:
            opts["max_num_steps"] = draw(st.sampled_from([3, 30]))
    elif method == "scipy_solver":
        opts["solver"] = draw(st.sampled_from(["LSODA", "RK45", "DOP853", "Radau", "BDF", "RK23"]))
        if draw(st.booleans()):
            opts["max_step"] = draw(st.sampled_from([0.1, math.inf]))
    else:
        grid = draw(st.sampled_from(["t", "step_size", "grid_constructor"]))
        if grid == "step_size":
            opts["step_size"] = draw(st.sampled_from([0.03, 0.1, 0.25, 0.7, 3.0]))
        elif grid == "grid_constructor":
            opts["grid_constructor"] = draw(st.integers(2, 12))
        if draw(st.booleans()):
            opts["perturb"] = True
        if draw(st.integers(0, 3)) == 0:
            opts["interp"] = "cubic"
        if method in ADAMS and draw(st.booleans()):
            opts["max_order"] = draw(st.integers(1, 12))
    grad = draw(st.sampled_from(grads)) if method != "scipy_solver" else None
    return Case(
        method=method,
        dtype=dtype,
        t_dtype=t_dtype,
        times=times,
        shapes=shapes,
        tensor_shape=tensor_shape,
        seed=seed,
        rtol=rtol,
        atol=atol,
        options=tuple(sorted(opts.items())),
        grad=grad,
    )


# --- building the inputs ----------------------------------------------------------------


class Field(torch.nn.Module):
    """``f(t, y) = A y + tanh(B y + c t + d)`` on the flattened state (a tuple state is
    split back into its parts): linear + tanh, time-dependent, with parameters."""

    def __init__(self, n: int, shapes, dtype, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        s = 1.0 / math.sqrt(n)

        def p(*shape, scale):
            return torch.nn.Parameter((torch.randn(*shape, generator=g) * scale).to(dtype))

        self.A = p(n, n, scale=0.6 * s)
        self.B = p(n, n, scale=1.2 * s)
        self.c = p(n, scale=1.0)
        self.d = p(n, scale=0.5)
        self.shapes = shapes

    def forward(self, t, y):
        flat = torch.cat([p.reshape(-1) for p in y]) if self.shapes is not None else y.reshape(-1)
        out = self.A @ flat + torch.tanh(self.B @ flat + self.c * t + self.d)
        if self.shapes is None:
            return out.reshape(y.shape)
        parts, i = [], 0
        for s in self.shapes:
            k = math.prod(s)
            parts.append(out[i : i + k].reshape(s))
            i += k
        return tuple(parts)


def _norm(name: str, tuple_state: bool):
    """A user norm that differs from the default RMS (torchdiffeq hands it the tuple)."""
    if name == "max":
        if tuple_state:
            return lambda ys: torch.stack([y.abs().max() for y in ys]).max()
        return lambda y: y.abs().max()
    if tuple_state:  # "rms_sum"
        return lambda ys: sum(y.pow(2).mean().sqrt() for y in ys)
    return lambda y: y.pow(2).mean().sqrt() * 1.5


@dataclass
class Inputs:
    func: Field
    y0: torch.Tensor | tuple
    t: torch.Tensor
    kwargs: dict
    weights: torch.Tensor  # [T, n]: L = Σ weights · y


def build(case: Case, dtype=None, t_dtype=None) -> Inputs:
    """Fresh tensors for one run (a backward accumulates into the leaves)."""
    dtype = DTYPES[case.dtype] if dtype is None else dtype
    t_dtype = DTYPES[case.t_dtype] if t_dtype is None else t_dtype
    n = case.n
    func = Field(n, case.shapes, dtype, case.seed)
    g = torch.Generator().manual_seed(case.seed + 1)
    flat = torch.randn(n, generator=g).to(dtype)
    weights = torch.randn(len(case.times), n, generator=g).to(dtype)
    if case.shapes is None:
        y0 = flat.reshape(case.tensor_shape).clone()
    else:
        y0, i = [], 0
        for s in case.shapes:
            k = math.prod(s)
            y0.append(flat[i : i + k].reshape(s).clone())
            i += k
        y0 = tuple(y0)
    t = torch.tensor(case.times, dtype=t_dtype)
    if case.grad is not None:
        t.requires_grad_(True)
        for y in y0 if isinstance(y0, tuple) else (y0,):
            y.requires_grad_(True)
    opts = {}
    for k, v in case.options:
        if k == "norm":
            v = _norm(v, case.shapes is not None)
        elif k in ("jump_t", "step_t"):
            v = torch.tensor(v, dtype=t_dtype)
        elif k == "grid_constructor":
            v = _linspace_grid(v)
        elif k == "dtype":
            v = DTYPES[v]
        opts[k] = v
    kwargs = dict(method=case.method, rtol=case.rtol, atol=case.atol)
    if opts:
        kwargs["options"] = opts
    return Inputs(func, y0, t, kwargs, weights)


def _linspace_grid(k: int):
    def grid_constructor(func, y0, t):
        return torch.linspace(float(t[0].detach()), float(t[-1].detach()), k, dtype=t.dtype)

    return grid_constructor


def flat_ys(ys, n_times: int) -> torch.Tensor:
    """A solution (tensor or tuple) -> ``[T, n]``."""
    if isinstance(ys, tuple | list):
        return torch.cat([y.reshape(n_times, -1) for y in ys], dim=1)
    return ys.reshape(n_times, -1)


# --- running ------------------------------------------------------------------------------


@dataclass
class Outcome:
    ys: np.ndarray | None = None  # [T, n] float64
    grads: dict = field(default_factory=dict)  # "y0" [n], "t" [T], "params" [P]
    error: BaseException | None = None
    seconds: float = 0.0


def run(backend: str, case: Case) -> Outcome:
    """Solve ``case`` with ``backend`` ("odenet" | "torchdiffeq"); errors are caught."""
    if backend == "odenet":
        fwd, adj = odenet.odeint, odenet.odeint_adjoint
    else:
        import torchdiffeq

        fwd, adj = torchdiffeq.odeint, torchdiffeq.odeint_adjoint
    inp = build(case)
    out = Outcome()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            solver = adj if case.grad == "adjoint" else fwd
            ys = flat_ys(solver(inp.func, inp.y0, inp.t, **inp.kwargs), len(case.times))
            out.ys = ys.detach().double().numpy()
            if case.grad is not None:
                loss = (inp.weights * ys).sum()
                y0s = inp.y0 if isinstance(inp.y0, tuple) else (inp.y0,)
                params = list(inp.func.parameters())
                gs = torch.autograd.grad(loss, [*y0s, inp.t, *params], allow_unused=True)
                gs = [
                    torch.zeros_like(x) if g is None else g
                    for g, x in zip(gs, [*y0s, inp.t, *params])
                ]
                k = len(y0s)
                out.grads = {
                    "y0": torch.cat([g.reshape(-1) for g in gs[:k]]).double().numpy(),
                    "t": gs[k].double().numpy(),
                    "params": torch.cat([g.reshape(-1) for g in gs[k + 1 :]]).double().numpy(),
                }
    except Exception as e:  # every failure is an outcome to judge
        out.error = e
    out.seconds = time.perf_counter() - start
    return out


_REF_CACHE: dict = {}


def reference(case: Case) -> Outcome:
    """The true solution (scipy DOP853 at 1e-12, float64) and, if ``case.grad``, the
    true gradients: ``y0``/parameters from torchdiffeq ``dopri8`` at 1e-12 differentiated
    directly, ``t`` from the closed forms (module docstring)."""
    key = (case.dtype, case.times, case.shapes, case.tensor_shape, case.seed, case.grad is None)
    if key in _REF_CACHE:
        return _REF_CACHE[key]
    from scipy.integrate import solve_ivp

    inp = build(case, torch.float64, torch.float64)
    if case.dtype == "float32":  # the float32 problem's own parameters and y0, in float64
        low = build(case)
        with torch.no_grad():
            for p, q in zip(inp.func.parameters(), low.func.parameters()):
                p.copy_(q.double())
        y0s_low = low.y0 if isinstance(low.y0, tuple) else (low.y0,)
        y0s = inp.y0 if isinstance(inp.y0, tuple) else (inp.y0,)
        with torch.no_grad():
            for a, b in zip(y0s, y0s_low):
                a.copy_(b.double())
        inp.weights = low.weights.double()
    y0s = inp.y0 if isinstance(inp.y0, tuple) else (inp.y0,)
    flat0 = torch.cat([y.detach().reshape(-1) for y in y0s])

    def as_state(flat):
        if case.shapes is None:
            return flat.reshape(case.tensor_shape)
        return tuple(
            p.reshape(s)
            for p, s in zip(torch.split(flat, [math.prod(s) for s in case.shapes]), case.shapes)
        )

    def f_np(s, y):
        with torch.no_grad():
            out = inp.func(torch.tensor(s, dtype=torch.float64), as_state(torch.from_numpy(y)))
            return flat_ys(out, 1).reshape(-1).numpy()

    times = np.array(case.times)
    ref = Outcome()
    if len(times) == 1:
        ref.ys = flat0.numpy()[None]
    else:
        sol = solve_ivp(
            f_np,
            (times[0], times[-1]),
            flat0.numpy(),
            method="DOP853",
            t_eval=times,
            rtol=1e-12,
            atol=1e-12,
        )
        assert sol.status == 0, sol.message
        ref.ys = sol.y.T
    if case.grad is not None:
        import torchdiffeq

        t = torch.tensor(case.times, dtype=torch.float64)
        ys = flat_ys(
            torchdiffeq.odeint(inp.func, inp.y0, t, rtol=1e-12, atol=1e-12, method="dopri8"),
            len(times),
        )
        loss = (inp.weights * ys).sum()
        params = list(inp.func.parameters())
        gs = torch.autograd.grad(loss, [*y0s, *params], allow_unused=True)
        gs = [torch.zeros_like(x) if g is None else g for g, x in zip(gs, [*y0s, *params])]
        gy0 = torch.cat([g.reshape(-1) for g in gs[: len(y0s)]])
        with torch.no_grad():
            f = torch.stack(
                [
                    flat_ys(inp.func(t[j], as_state(torch.from_numpy(ref.ys[j]))), 1).reshape(-1)
                    for j in range(len(times))
                ]
            )
            gt = (inp.weights * f).sum(dim=1)
            # y(t_0) = y0 whatever t_0: the w_0 term of ∂L/∂y0 does not move with t_0
            gt[0] = -((gy0 - inp.weights[0]) * f[0]).sum()
        ref.grads = {
            "y0": gy0.double().numpy(),
            "t": gt.numpy(),
            "params": torch.cat([g.reshape(-1) for g in gs[len(y0s) :]]).numpy(),
        }
    _REF_CACHE[key] = ref
    return ref


# --- judging ------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str  # see KINDS
    detail: str


KINDS = {
    "crash": "odenet raised a non-OdenetError where torchdiffeq solved it",
    "refused": "odenet refused (OdenetError) where torchdiffeq solved it",
    "fixed_mismatch": "fixed-step values differ from torchdiffeq's beyond round-off",
    "inaccurate": "adaptive values outside the tolerance bound and worse than torchdiffeq",
    "grad_mismatch": "fixed-step direct gradient differs from torchdiffeq's beyond round-off",
    "grad_inaccurate": "gradient outside the bound and worse than torchdiffeq's",
    "silent_nonfinite": "odenet returned non-finite values without raising",
    "adams_uneven": "information: Adams where odenet's formula is another than torchdiffeq's "
    "(uneven steps; d/dt of the variable-step coefficients) and off by more than its bound",
}


def _round_off(case: Case, n_steps: int) -> float:
    eps = torch.finfo(DTYPES[case.dtype]).eps
    return 200 * eps * max(n_steps, 1)


def equal_step_grid(case: Case) -> bool:
    """Whether the fixed grid has equal steps (Adams matches torchdiffeq only there)."""
    opts = case.opts
    if "grid_constructor" in opts:
        return True
    if "step_size" in opts:
        span = abs(case.times[-1] - case.times[0])
        k = span / opts["step_size"]
        return span == 0 or abs(k - round(k)) < 1e-9 or k < 1
    d = np.diff(case.times)
    return len(d) == 0 or bool(np.allclose(d, d[0], rtol=1e-12))


def n_grid_steps(case: Case) -> int:
    opts = case.opts
    span = abs(case.times[-1] - case.times[0])
    if "step_size" in opts:
        return math.ceil(span / opts["step_size"])
    if "grid_constructor" in opts:
        return opts["grid_constructor"] - 1
    return len(case.times) - 1


def _scaled(err, scale):
    return float(np.max(np.abs(err) / scale)) if err.size else 0.0


def check(case: Case, od: Outcome | None = None, td: Outcome | None = None) -> list[Finding]:
    """Every finding of ``case`` (empty: odenet behaved)."""
    od = run("odenet", case) if od is None else od
    td = run("torchdiffeq", case) if td is None else td
    if td.error is not None and case.method in ADAMS and case.opts.get("max_order", 12) < 4:
        # below order 4 every Adams step is the 3/8 rule; torchdiffeq's Adams fails
        # outright for small max_order (IndexError), its rk4 is the same scheme
        plain = tuple((k, v) for k, v in case.options if k != "max_order")
        td = run("torchdiffeq", replace(case, method="rk4", options=plain))
    found: list[Finding] = []
    if od.error is not None:
        if td.error is None:
            kind = "refused" if isinstance(od.error, odenet.OdenetError) else "crash"
            found.append(Finding(kind, f"{type(od.error).__name__}: {od.error}"[:300]))
        elif not isinstance(od.error, odenet.OdenetError):
            found.append(
                Finding(
                    "crash", f"both failed; odenet with {type(od.error).__name__}: {od.error}"[:300]
                )
            )
        return found
    if not np.isfinite(od.ys).all() or any(not np.isfinite(g).all() for g in od.grads.values()):
        found.append(Finding("silent_nonfinite", "non-finite values or gradients with status ok"))
        return found
    method = case.method
    same_scheme = method in FIXED_RK or (method in ADAMS and equal_step_grid(case))
    if method == "scipy_solver":
        same_scheme = True
    if same_scheme and td.error is None:
        tol = _round_off(case, n_grid_steps(case) + 1)
        if method == "implicit_adams" or method == "fixed_adams":
            # the corrector's stopping test amplifies round-off into a tolerance-sized
            # difference
            tol = max(tol, 10 * max(np.atleast_1d(case.rtol)))
        if method == "scipy_solver":
            # the same solve_ivp call, not bit-identical (torchdiffeq hands scipy torch
            # tensors for t_span/t_eval and min_step=0): agreement within the tolerance
            tol = max(tol, 10 * max(*np.atleast_1d(case.rtol), *np.atleast_1d(case.atol)))
        scale = 1.0 + np.abs(td.ys)
        e = _scaled(od.ys - td.ys, scale * tol)
        if e > 1:
            found.append(Finding("fixed_mismatch", f"max |Δy|/(round-off bound) = {e:.3g}"))
        if case.grad == "odeint":
            # odenet's Adams coefficients depend on the times (variable-step formula),
            # torchdiffeq's are constants: their d/dt differ by design, judged below
            names = ("y0", "params") if method in ADAMS else ("y0", "t", "params")
            for name in names:
                g, h = od.grads[name], td.grads[name]
                if name == "t" and bool((h[1:-1] == 0).any()):
                    # an output on an inner grid node: torchdiffeq's linear interpolant
                    # returns the node's state itself, whose t-gradient (and its share
                    # of t0's) is exactly 0; odenet gives the flow's slope there
                    # (tests/test_compat.py checks it against the closed form)
                    continue
                e = _scaled(g - h, (1.0 + np.abs(h)) * tol * 10)
                if e > 1:
                    found.append(
                        Finding(
                            "grad_mismatch",
                            f"d/d{name}: max |Δ| / bound = {e:.3g}; "
                            f"odenet {np.round(g, 6).tolist()[:6]} torchdiffeq "
                            f"{np.round(h, 6).tolist()[:6]}",
                        )
                    )
        if case.grad is None or (case.grad == "odeint" and method not in ADAMS):
            return found
    ref = reference(case)
    eps = torch.finfo(DTYPES[case.dtype]).eps
    rtol = max(min(np.atleast_1d(case.rtol)), 100 * eps)
    atol = max(min(np.atleast_1d(case.atol)), 100 * eps)
    if not same_scheme:
        scale = atol + rtol * np.abs(ref.ys)
        e_od = _scaled(od.ys - ref.ys, scale)
        e_td = _scaled(td.ys - ref.ys, scale) if td.error is None else math.inf
        # the global error of a tolerance-controlled solve is a modest multiple of the
        # tolerance; with `min_step` (steps at the minimum accepted whatever their error)
        # and on fixed grids (Adams on uneven steps) only torchdiffeq's error is a yardstick
        bound = 100.0 if method in ADAPTIVE and "min_step" not in case.opts else 10.0
        # Adams on an uneven grid is another formula than torchdiffeq's (far more accurate
        # over many steps, within a few times either way over a handful)
        factor = 3.0 if method in ADAPTIVE else 10.0
        if e_od > max(bound, factor * e_td):
            # Adams on uneven steps converges at its order (fuzz_results.md) but over a
            # handful of steps may lose to torchdiffeq's formula by chance
            kind = "inaccurate" if method in ADAPTIVE else "adams_uneven"
            found.append(Finding(kind, f"error {e_od:.3g} tol units (torchdiffeq {e_td:.3g})"))
    if case.grad is not None:
        td_direct = None
        if case.grad == "adjoint" and method not in ADAPTIVE:
            # a fixed grid's adjoint is a discretization of the continuous adjoint; its
            # error is of the order of the forward's grid: the direct gradient's on it
            td_direct = run("torchdiffeq", replace(case, grad="odeint"))
        names = ("y0", "t", "params")
        if same_scheme and case.grad == "odeint":
            names = ("t",)  # Adams: y0 and θ were compared with torchdiffeq above
        for name in names:
            g, r = od.grads[name], ref.grads[name]
            gscale = atol + rtol * max(float(np.abs(r).max(initial=0)), 1.0)
            e_od = _scaled(g - r, gscale)
            e_td = _scaled(td.grads[name] - r, gscale) if td.error is None else math.inf
            if td_direct is not None and td_direct.error is None:
                e_td = max(e_td, _scaled(td_direct.grads[name] - r, gscale))
            bound = 1000.0 if method in ADAPTIVE and "min_step" not in case.opts else 10.0
            factor = 5.0 if method in ADAPTIVE or same_scheme else 10.0
            if e_od > max(bound, factor * e_td, 1e-30) and np.abs(g - r).max() > 10 * eps * (
                1 + np.abs(r).max()
            ):
                adams = method in ADAMS and (not same_scheme or name == "t")
                found.append(
                    Finding(
                        "adams_uneven" if adams else "grad_inaccurate",
                        f"{case.grad} d/d{name}: error {e_od:.3g} tol units "
                        f"(torchdiffeq {e_td:.3g}); "
                        f"odenet {np.round(g, 5).tolist()[:5]} true {np.round(r, 5).tolist()[:5]}",
                    )
                )
    return found


# --- the study ----------------------------------------------------------------------------


def explore(n_examples: int, seed: int, methods=METHODS):
    """Draw ``n_examples`` cases (reproducibly) and judge each; returns the rows."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    rows = []

    @hseed(seed)
    @settings(
        max_examples=n_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=["generate"],
    )
    @given(cases(methods))
    def one(case):
        od, td = run("odenet", case), run("torchdiffeq", case)
        rows.append((case, check(case, od, td), od, td))

    one()
    return rows


def shrink(kind: str, methods=METHODS, max_examples: int = 300):
    """The smallest case hypothesis finds with a finding of ``kind`` (or None)."""
    from hypothesis import HealthCheck, find, settings
    from hypothesis.errors import NoSuchExample

    try:
        return find(
            cases(methods),
            lambda c: any(f.kind == kind for f in check(c)),
            settings=settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    except NoSuchExample:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--no-shrink", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = explore(args.examples, args.seed, tuple(args.methods))
    table: dict = defaultdict(Counter)
    for case, found, od, td in rows:
        c = table[case.method]
        c["cases"] += 1
        c["torchdiffeq failed"] += td.error is not None
        c["only odenet ok"] += td.error is not None and od.error is None
        c["both ok, no finding"] += not found and od.error is None and td.error is None
        for kind in {f.kind for f in found}:
            c[kind] += 1
    cols = ["cases", "both ok, no finding", "torchdiffeq failed", "only odenet ok", *KINDS]
    print(f"{len(rows)} cases, seed {args.seed}, {time.perf_counter() - start:.0f} s\n")
    print("| method | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for m in args.methods:
        if m in table:
            print(f"| {m} | " + " | ".join(str(table[m][k]) for k in cols) + " |")
    total = Counter()
    for c in table.values():
        total.update(c)
    print("| **all** | " + " | ".join(str(total[k]) for k in cols) + " |")
    same = [
        (c, od, td)
        for c, _, od, td in rows
        if od.error is None
        and td.error is None
        and (c.method in FIXED_RK or (c.method in ADAMS and equal_step_grid(c)))
    ]
    if same:
        ulps = [
            np.max(np.abs(od.ys - td.ys) / (1 + np.abs(td.ys))) / torch.finfo(DTYPES[c.dtype]).eps
            for c, od, td in same
        ]
        print(
            f"\nfixed grids, same scheme ({len(same)} cases both solved): largest "
            f"|y_odenet - y_torchdiffeq| / (1 + |y|) = {max(ulps):.3g} eps of the state's dtype "
            f"(median {np.median(ulps):.3g})"
        )
    fails = Counter(
        f"{c.method}: {type(td.error).__name__}: {str(td.error)[:90]}"
        for c, _, _, td in rows
        if td.error is not None
    )
    print("\ntorchdiffeq's failures:")
    for msg, n in fails.most_common():
        print(f"- {n}x {msg}")
    kinds = sorted({f.kind for _, found, _, _ in rows for f in found})
    for kind in kinds:
        print(f"\n## {kind}: {KINDS[kind]}")
        examples = [(c, f) for c, found, _, _ in rows for f in found if f.kind == kind]
        if kind == "refused":  # each distinct message once (they are the finding)
            for msg, n in Counter(f.detail[:160] for _, f in examples).most_common():
                print(f"- {n}x {msg}")
        for c, f in examples[:3]:
            print(f"- {c}\n  {f.detail}")
        if not args.no_shrink:
            ms = tuple(sorted({c.method for c, _ in examples}))
            small = shrink(kind, ms)
            print(f"  minimal: {small}")
            if small is not None:
                print(f"  -> {[f.detail for f in check(small) if f.kind == kind]}")


if __name__ == "__main__":
    main()
