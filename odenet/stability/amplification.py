"""Conditioning of a solve: how far a one-tolerance-unit error travels.

An adaptive solver keeps each step's local error within about one *tolerance unit*,
`atol + rtol·|y|` per component.  What the user gets at time `t` is the sum of those
local errors, each carried from the time `s` it was made by the variational
propagator `Φ(t, s) = ∂y(t)/∂y(s)`.  In tolerance units that is the scaled propagator

    Â(t, s) = D(t)⁻¹ Φ(t, s) D(s),    D(s) = diag(atol + rtol·|y(s)|),

and `‖Â(t, s)‖₂` is how many units one unit of error made at `s` is worth at `t`.
Where it stays near 1 the problem does not amplify errors (the global error is about
the sum of the solver's local errors); where it reaches 1e4 or more, errors the solver
was right to accept grow past anything the tolerance promised, and tightening `rtol`
moves the answer by far more than `rtol` (the solution is *ill-conditioned* there,
whichever solver computes it).

[`conditioning`][odenet.stability.conditioning] measures `‖Â(t, s)‖₂` for every pair
of checkpoints `s ≤ t` from the Jacobians of the solver's own flow between them — the
same products of Jacobians that :func:`analyze` reads, and that carry gradients
backward (`∂L/∂y(s) = Φ(t, s)ᵀ ∂L/∂y(t)`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

import odenet
from odenet.stability._errors import StabilityInputError, check_positive_float, check_positive_int

# `‖Â‖` at or above which the verdict is "ill-conditioned" (the default of `ill_conditioned`)
ILL_CONDITIONED = 1e4
# below this the verdict is "well-conditioned"; between the two, "sensitive"
SENSITIVE = 1e2


@dataclass(frozen=True)
class ConditioningReport:
    """What [`conditioning`][odenet.stability.conditioning] found.

    Attributes
    ----------
    times : ndarray ``[m + 1]``
        The checkpoints ``s_0 … s_m`` (the output times merged with an even grid).
    states : Tensor ``[m + 1, *y0.shape]``
        The solution at the checkpoints (each segment restarted from the last state).
    propagators : ndarray ``[m, n, n]``
        ``Φ(s_{i+1}, s_i) = ∂y(s_{i+1})/∂y(s_i)`` of the solver's flow (``n = y0.numel()``).
    log10_amplification : ndarray ``[m + 1, m + 1]``
        ``log10 ‖Â(s_j, s_i)‖₂`` for ``i ≤ j`` (0 on the diagonal), NaN above it.
    scale : ndarray ``[m + 1, n]``
        The tolerance unit ``atol + rtol·|y|`` at each checkpoint, with
        ``|y| = max(|y(s_{j−1})|, |y(s_j)|)`` as the solver's error test reads a step
        ending there (a component crossing zero is not read in units of ``atol`` alone).
    worst : float
        The largest ``‖Â(s_j, s_i)‖₂`` (≥ 1); ``worst_from``, ``worst_to``: its ``s_i, s_j``.
    verdict : ``"well-conditioned"`` (``worst < 100``), ``"sensitive"``, or
        ``"ill-conditioned"`` (``worst ≥ ill_conditioned``); ``reason``: the same in words.
    method, rtol, atol : the solve's settings.  ``stats``: summed ``nfe`` and ``steps``.
    """

    times: np.ndarray
    states: torch.Tensor
    propagators: np.ndarray
    log10_amplification: np.ndarray
    scale: np.ndarray
    worst: float
    worst_from: float
    worst_to: float
    verdict: str
    reason: str
    method: str
    rtol: float
    atol: float | np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def amplification(self) -> np.ndarray:
        """``[m + 1]``: at each checkpoint ``s_j``, ``max_{i ≤ j} ‖Â(s_j, s_i)‖₂`` (≥ 1),
        what the worst one-unit error made so far is worth there (may overflow to inf;
        :attr:`log10_amplification` keeps the exponent)."""
        with np.errstate(over="ignore"):
            return 10.0 ** np.nanmax(self.log10_amplification, axis=1)

    @property
    def digits_lost(self) -> float:
        """``log10(worst)``: decimal digits of the tolerance the problem can amplify away."""
        return math.log10(self.worst) if math.isfinite(self.worst) else math.inf

    def summary(self) -> str:
        """A few lines of text for a terminal."""
        k = max(1, len(self.times) // 6)
        amp = self.amplification
        return "\n".join(
            [
                f"verdict: {self.verdict} — {self.reason}",
                f"method {self.method}, rtol {self.rtol:g}, {len(self.times) - 1} segments "
                f"on [{self.times[0]:g}, {self.times[-1]:g}], state size "
                f"{self.propagators.shape[-1]}",
                "worst so far: "
                + ", ".join(f"t={t:.4g}: {a:.3g}" for t, a in zip(self.times[::k], amp[::k])),
            ]
        )


def _checkpoint_times(t: torch.Tensor, checkpoints: int) -> np.ndarray:
    ts = t.detach().cpu().double().numpy()
    grid = np.linspace(ts[0], ts[-1], checkpoints + 1)
    merged = np.union1d(ts, grid)
    # drop times that round-off alone separates from a neighbour
    span = abs(ts[-1] - ts[0])
    keep = np.concatenate([[True], np.diff(merged) > 1e-12 * span])
    merged = merged[keep]
    merged[-1] = max(ts[0], ts[-1])
    merged[0] = min(ts[0], ts[-1])
    return merged if ts[-1] > ts[0] else merged[::-1].copy()


def _check(y0, t, rtol) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
        raise StabilityInputError(
            "`y0` must be a floating-point torch tensor (one system, any shape), got "
            f"{type(y0).__name__}{'' if not isinstance(y0, torch.Tensor) else ' ' + str(y0.dtype)}."
        )
    t = torch.as_tensor(t)
    if t.ndim != 1 or t.numel() < 2:
        raise StabilityInputError(
            f"`t` must be 1-D with at least two times (the span to study), got shape "
            f"{tuple(t.shape)}; per-sample grids are not supported here."
        )
    tt = t.detach().cpu().double()
    d = torch.diff(tt)
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise StabilityInputError("`t` must be strictly increasing or strictly decreasing.")
    check_positive_float("rtol", rtol)
    return y0, t


def _segment(
    f, y, a: float, b: float, time_dtype, solve_kw
) -> tuple[torch.Tensor, np.ndarray, dict]:
    """``y(b)`` from ``y(a) = y`` by the solver, and ``∂y(b)/∂y(a)`` ``[n, n]``."""
    y_a = y.detach().clone().requires_grad_(True)
    ts = torch.tensor([a, b], dtype=time_dtype, device=y.device)
    with torch.enable_grad():
        sol = odenet.solve(f, y_a, ts, sensitivity="direct", **solve_kw)
        y_b = sol.ys[-1].reshape(-1)
        n = y_b.numel()
        eye = torch.eye(n, dtype=y_b.dtype, device=y_b.device)
        try:
            # all n rows in one vmapped backward pass instead of n passes
            (G,) = torch.autograd.grad(
                y_b, y_a, eye, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
        except RuntimeError:  # an operation of `f` without a batching rule: a row a pass
            G = torch.stack([_row(y_b, y_a, e) for e in eye])
        if G is None:  # y(b) does not depend on y(a)
            G = torch.zeros(n, *y_a.shape, dtype=y_a.dtype, device=y_a.device)
    P = G.reshape(n, -1).detach().cpu().double().numpy()
    stats = {k: int(sol.stats.get(k, 0)) for k in ("nfe", "steps")}
    return sol.ys[-1].detach(), P, stats


def _step_magnitude(flat: np.ndarray) -> np.ndarray:
    """``|y|`` at each checkpoint as the solver's error test reads it at a step ending
    there, ``max(|y(s_{j−1})|, |y(s_j)|)`` (``|y0|`` at the start), ``[m + 1, n]``.

    Read at a zero crossing itself, one unit would be ``atol`` alone, which the solver
    never holds a component to: one Kepler orbit (a component is 0 at the end) would
    read 2.7e5 units instead of 968 (dopri5, rtol 1e-6, atol 1e-9, 50 checkpoints).
    Taking the segment's earlier end, not both neighbours, leaves ``y' = λy`` at
    exactly one unit for ``λ > 0`` (relative errors of growth are not amplified)."""
    y = np.abs(flat)
    out = y.copy()
    out[1:] = np.maximum(y[1:], y[:-1])
    return out


def _row(y_b: torch.Tensor, y_a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``eᵀ ∂y_b/∂y_a`` by one backward pass (zeros where ``y_b`` does not depend on it)."""
    (g,) = torch.autograd.grad(y_b, y_a, e, retain_graph=True, allow_unused=True)
    return torch.zeros_like(y_a) if g is None else g


def _log10_pairs(scaled: np.ndarray) -> np.ndarray:
    """``log10 ‖Â_{j−1} ⋯ Â_i‖₂`` for ``i ≤ j`` (0 on the diagonal, NaN above).

    Each chain from ``s_i`` is kept normalised by its Frobenius norm (cheap) as it grows,
    the logs of the factors summed, so growth past 1e308 stays finite in the log; the
    2-norms of the normalised products are taken in one batched call per chain."""
    m, n = len(scaled), scaled.shape[-1]
    out = np.full((m + 1, m + 1), np.nan)
    for i in range(m + 1):
        out[i, i] = 0.0
        if i == m:
            break
        P, log_s = np.eye(n), 0.0
        chain, logs = np.empty((m - i, n, n)), np.empty(m - i)
        for k, j in enumerate(range(i, m)):
            P = scaled[j] @ P
            s = np.linalg.norm(P)
            if not s > 0:  # an exact zero propagator: nothing carries on
                chain[k:], logs[k:] = 0.0, -np.inf
                break
            log_s += math.log10(s)
            P = P / s
            chain[k], logs[k] = P, log_s
        with np.errstate(divide="ignore"):
            out[i + 1 :, i] = logs + np.log10(np.linalg.norm(chain, 2, axis=(1, 2)))
    return out


def _verdict(worst, s, t, first_ill, rtol, eps, ill) -> tuple[str, str]:
    where = (
        f"an error of one tolerance unit made at t = {s:.6g} is {worst:.3g} units at t = {t:.6g}"
    )
    if worst < SENSITIVE:
        return "well-conditioned", (
            f"an error of one tolerance unit grows to at most {worst:.3g} units (made at "
            f"t = {s:.6g}, at t = {t:.6g}): the problem does not amplify errors, and the "
            f"global error is about the sum of the solver's local errors at rtol = {rtol:g}"
        )
    needed = rtol / worst
    fix = (
        f"rtol and atol {worst:.2g}× smaller (rtol ≈ {needed:.1g}) would bring the error "
        f"there back to ~{rtol:g}"
        if needed > 10 * eps
        else "no rtol above the dtype's round-off would bring it back"
    )
    if worst < ill:
        return "sensitive", f"{where}: expect errors up to ~{worst:.3g}× the tolerance there; {fix}"
    return "ill-conditioned", (
        f"{where}: from t ≈ {first_ill:.6g} on the solution is not determined at this "
        f"tolerance (tightening rtol moves it by far more than rtol, whichever solver runs "
        f"it); {fix}"
    )


def conditioning(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t,
    *,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol=1e-8,
    checkpoints: int = 50,
    ill_conditioned: float = ILL_CONDITIONED,
    **solve_options,
) -> ConditioningReport:
    """How much a solve amplifies errors of one tolerance unit (is the answer determined?).

    The span ``t[0] … t[-1]`` is cut at ``checkpoints`` evenly spaced times and at the
    output times ``t``; the solver runs segment by segment (each restarted from the
    previous segment's end, with ``method``, ``rtol``, ``atol`` and ``solve_options`` as
    :func:`odenet.solve`), and the Jacobian of each segment's flow
    ``Φ(s_{i+1}, s_i) = ∂y(s_{i+1})/∂y(s_i)`` is taken by autograd through it.  Products
    of the scaled Jacobians ``Â = D(s_{i+1})⁻¹ Φ D(s_i)``, ``D = diag(atol + rtol·|y|)``
    (``|y| = max(|y(s_{i−1})|, |y(s_i)|)``, as the error test of a step ending at
    ``s_i``; see ``scale``),
    give ``‖Â(s_j, s_i)‖₂`` for every pair ``s_i ≤ s_j``: what one unit of error made at
    ``s_i`` (a step's local error is at most about one) is worth at ``s_j``.

    These are the Jacobians of the solver's own flow, its step sizes held (they are
    chosen without a graph): the matrices ``M_n`` that carry its local errors,
    ``e_{n+1} = M_n e_n + τ_n`` (:func:`propagate_errors`).  Where the solver resolves
    the dynamics they are the exact propagator; on a component that an explicit method
    holds at its stability limit they are its stability function there (``|R(hλ)| ≈ 1``,
    not ``e^{hλ}``), and the report says how that solve carries errors.

    Cost: one solve over the span with gradients, plus per segment one backward pass
    vmapped over the ``n = y0.numel()`` rows (``n`` passes where ``f`` has an operation
    vmap cannot batch), and ``O(m² n³)`` for the products (``m`` segments: ``checkpoints``
    plus one per interior output time, so pass ``t = [t0, t1]`` for the even grid
    alone) — meant for systems up to a few hundred states.  Amplification between
    checkpoints is not seen: more checkpoints resolve shorter transients.

    Parameters
    ----------
    f : callable ``f(t, y) -> dy/dt`` on torch tensors (as :func:`odenet.solve`).
    y0 : Tensor ``[...]``, one system (float32 or float64).
    t : 1-D times ``[T]``, ``T ≥ 2``, increasing or decreasing: the span and outputs.
    method, rtol, atol : as :func:`odenet.solve` (``atol`` a float or per component).
    checkpoints : int ≥ 1, the number of evenly spaced segments (the output times are
        added to them).
    ill_conditioned : float > 1, the amplification from which the verdict is
        ``"ill-conditioned"`` (1e4: four digits of the tolerance lost).
    **solve_options : passed to every segment's :func:`odenet.solve` (``jac``,
        ``jac_sparsity``, ``max_steps``, ...; not ``sensitivity``, ``events`` or
        ``throw``).

    Returns
    -------
    ConditioningReport
        ``amplification`` ``[m + 1]`` (the worst so far at each checkpoint),
        ``log10_amplification`` ``[m + 1, m + 1]``, ``worst`` and where, ``verdict``
        and ``reason``, ``summary()``.

    Raises
    ------
    StabilityInputError
        For a non-float ``y0``, ``t`` not 1-D and monotone, ``checkpoints < 1``,
        ``ill_conditioned ≤ 1``, or a ``sensitivity``, ``events`` or ``throw`` option.
    odenet.SolverError
        When a segment's solve fails (as :func:`odenet.solve` with ``throw=True``).

    Examples
    --------
    ``y' = λ y`` with ``λ = +5`` on ``[0, 3]``: one unit of relative error is still one
    unit later (a relative error of exponential growth stays put), so it is
    well-conditioned in ``rtol``.  With Prothero–Robinson's forcing,
    ``y' = λ(y − sin t) + cos t``, the same ``λ = +5`` moves neighbouring solutions apart
    like ``e^{5t}`` from the slowly varying ``y = sin t``: ill-conditioned.

    >>> import torch
    >>> from odenet.stability import conditioning
    >>> t = torch.linspace(0, 3, 4, dtype=torch.float64)
    >>> grow = conditioning(lambda t, y: 5.0 * y, torch.tensor([1.0], dtype=torch.float64),
    ...                     t, rtol=1e-8, atol=1e-14, checkpoints=10)
    >>> grow.verdict, round(grow.worst, 3)
    ('well-conditioned', 1.0)
    >>> y0 = torch.tensor([0.0], dtype=torch.float64)
    >>> pr = lambda t, y: 5.0 * (y - torch.sin(t)) + torch.cos(t)
    >>> report = conditioning(pr, y0, t, rtol=1e-8, atol=1e-10, checkpoints=10)
    >>> report.verdict, report.worst > 1e5
    ('ill-conditioned', True)
    """
    refused = {
        "sensitivity": "each segment is differentiated directly",
        "events": "a terminal event would end a segment before its checkpoint",
        "throw": "a failed segment must raise, not leave NaN in the report",
    }
    for key in refused.keys() & solve_options.keys():
        raise StabilityInputError(f"conditioning() takes no `{key}`: {refused[key]}; drop it.")
    m = check_positive_int("checkpoints", checkpoints)
    if not float(ill_conditioned) > 1.0:
        raise StabilityInputError(
            f"`ill_conditioned` must be a factor > 1, got {ill_conditioned!r}."
        )
    y0, t = _check(y0, t, rtol)
    atol_cpu = torch.as_tensor(atol, dtype=torch.float64).cpu()  # (a CUDA atol too)
    scale0 = atol_cpu + float(rtol) * y0.detach().double().cpu().abs()
    if not bool((scale0 > 0).all()):
        raise StabilityInputError(
            "the tolerance unit atol + rtol·|y0| is zero for a component of y0: give atol > 0 "
            "(amplification is measured in units of it)."
        )
    times = _checkpoint_times(t, m)
    time_dtype = t.dtype if t.is_floating_point() else torch.float64
    solve_kw = dict(method=method, rtol=rtol, atol=atol, **solve_options)

    states, Ps = [y0.detach()], []
    stats = {"nfe": 0, "steps": 0}
    for a, b in itertools.pairwise(times):
        y_b, P, st = _segment(f, states[-1], float(a), float(b), time_dtype, solve_kw)
        states.append(y_b)
        Ps.append(P)
        for k in stats:
            stats[k] += st[k]
    Y = torch.stack(states)
    flat = Y.reshape(len(times), -1).detach().cpu().double().numpy()
    atol_np = torch.broadcast_to(atol_cpu, y0.shape).reshape(-1).numpy()
    scale = atol_np + float(rtol) * _step_magnitude(flat)
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise StabilityInputError(
            "the tolerance unit atol + rtol·|y| is zero or not finite at a checkpoint: "
            "give atol > 0 for components that pass through zero."
        )
    propagators = np.stack(Ps)
    scaled = propagators * scale[1:, :, None] ** -1.0 * scale[:-1, None, :]
    logs = _log10_pairs(scaled)
    j, i = np.unravel_index(np.nanargmax(logs), logs.shape)
    worst = float(10.0 ** logs[j, i]) if logs[j, i] < 308 else math.inf
    eps = float(torch.finfo(y0.dtype).eps)
    over = np.nonzero(np.nanmax(logs, axis=1) >= math.log10(float(ill_conditioned)))[0]
    first_ill = float(times[over[0]]) if len(over) else math.nan
    verdict, reason = _verdict(
        worst,
        float(times[i]),
        float(times[j]),
        first_ill,
        float(rtol),
        eps,
        float(ill_conditioned),
    )
    return ConditioningReport(
        times=times,
        states=Y,
        propagators=propagators,
        log10_amplification=logs,
        scale=scale,
        worst=worst,
        worst_from=float(times[i]),
        worst_to=float(times[j]),
        verdict=verdict,
        reason=reason,
        method=str(method),
        rtol=float(rtol),
        atol=atol if isinstance(atol, float | int) else atol_np.copy(),
        stats=stats,
    )
