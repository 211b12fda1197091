"""Lyapunov exponents of maps and flows by QR re-orthonormalization (Benettin / Geist).

For a map `x_{n+1} = Φ(x_n)` with Jacobians `M_n`, `k` tangent vectors
`Q` are pushed through the linearization and re-orthonormalized:

    Q_{n+1} R_{n+1} = M_n Q_n,        λ_j = (1 / (N dt)) Σ_n log |R_{n,jj}|.

A flow's spectrum is the spectrum of the map "one integrator step of `dt`"
divided by `dt` (`flow_map`); the same loop serves both.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from odenet._compiled import CompileFailed
from odenet.stability._errors import (
    StabilityInputError,
    check_positive_float,
    check_positive_int,
)
from odenet.stability.linearize import Step, _check_state, jacobians, tangent_step


@dataclass(frozen=True)
class LyapunovResult:
    """Output of [`lyapunov`][odenet.stability.lyapunov.lyapunov].

    Attributes
    ----------
    exponents : Tensor [k], descending, per unit time.
    running : ndarray [n_qr, k], the running averages after each QR step
        (their flattening shows convergence).
    local : ndarray [n_qr, k], finite-time exponents of each QR interval
        (`log|R_jj| / (qr_every dt)`): the local expansion rates along the orbit.
    stderr : ndarray [k], standard error of the exponents from batch means of
        `local` (20 batches): a convergence estimate.
    times : ndarray [n_qr], the time at each QR step (from the end of the transient).
    final_state : Tensor, the state after the run (to continue it).
    """

    exponents: torch.Tensor
    running: np.ndarray
    local: np.ndarray
    stderr: np.ndarray
    times: np.ndarray
    final_state: torch.Tensor

    @property
    def kaplan_yorke_dimension(self) -> float:
        """Kaplan–Yorke dimension of the exponents.

        See [`kaplan_yorke_dimension`][odenet.stability.kaplan_yorke_dimension].
        """
        return kaplan_yorke_dimension(self.exponents)

    def finite_time(self, window: int) -> np.ndarray:
        """Finite-time exponents over windows of `window` QR intervals, `[n_qr // window, k]`.

        Watch these along a training run to see the edge of chaos (local λ_1 ≈ 0).
        """
        window = check_positive_int("window", window)
        m = (len(self.local) // window) * window
        if m == 0:
            raise StabilityInputError(
                f"`window` = {window} is longer than the run ({len(self.local)} QR intervals); "
                "use a smaller window or more steps."
            )
        return self.local[:m].reshape(-1, window, self.local.shape[1]).mean(axis=1)


def kaplan_yorke_dimension(exponents) -> float:
    """Kaplan–Yorke dimension `D_KY = j + (λ_1 + … + λ_j) / |λ_{j+1}|`.

    `j` is the largest index whose partial sum is ≥ 0.

    `0` if `λ_1 < 0`; the number of exponents if every partial sum is ≥ 0.
    """
    if isinstance(exponents, torch.Tensor):
        exponents = exponents.detach().cpu().to(torch.float64).numpy()
    # float64 throughout (torch.as_tensor of a list would be float32: 2.2999999970 for 2.3)
    lam = np.sort(np.asarray(exponents, dtype=np.float64).reshape(-1))[::-1]
    S = np.cumsum(lam)
    if lam[0] < 0:
        return 0.0
    j = int(np.nonzero(S >= 0)[0].max()) + 1  # number of exponents in the non-negative sum
    if j == len(lam):
        return float(j)
    return j + S[j - 1] / abs(lam[j])


def lyapunov(
    step: Step,
    x0: torch.Tensor,
    n_steps: int,
    *,
    dt: float = 1.0,
    transient: int = 0,
    k: int | None = None,
    qr_every: int = 1,
    inputs: torch.Tensor | None = None,
    tangent: str = "jacobian",
    ensemble: bool = False,
    vectorized: bool = False,
    chunk: int | None = None,
    compile: bool = False,
    record_every: int | None = None,
    transient_tangents: bool = True,
) -> LyapunovResult:
    """Lyapunov spectrum with convergence data.

    The full form of [`lyapunov_spectrum`][odenet.stability.lyapunov_spectrum].

    Parameters
    ----------
    step : callable x -> next x (or (x, u) -> next x with inputs).
    x0 : Tensor, the initial state (any shape; d = x0.numel()); use float64.
        With `ensemble=True`: `[B, *shape]`, `B` initial states whose orbits
        are run side by side (one vmapped step) and averaged.
    n_steps : int, steps averaged over (after the transient), per orbit.
    dt : float, time per step (exponents are per unit time: divided by dt).
    transient : int, steps run first and discarded (to reach the attractor and
        align the tangent vectors).
    k : int, number of exponents (the k largest); default d.
    qr_every : int, re-orthonormalize every qr_every steps (products of a few
        Jacobians stay well conditioned when exponents are moderate; fewer QRs).
    inputs : Tensor [transient + n_steps, ...], optional driving inputs, passed
        as `step(x, inputs[n])` (RNN cells); with `ensemble` `[T, B, ...]`.
    tangent : "jacobian" (vmapped Jacobians of a chunk of states, then
        matrix products) or `"jvp"` (matrix-free: k tangent vectors by vmapped
        jvp each step; for states too large for a `[d, d]` matrix).
    ensemble : bool, treat x0's first dimension as independent orbits.  For
        an ergodic system `B` orbits of `N` steps average like one orbit of
        `B N` steps but cost about `N` sequential steps.  Each orbit needs its
        own `transient` to reach the attractor.
    vectorized : bool, with ensemble: step already maps a batch
        `[B, *shape]` row by row (e.g. a field written with `x[..., i]`), so it
        is called on the batch directly instead of through `torch.func.vmap`.
    chunk : int, steps whose Jacobians are formed in one vmapped call (default:
        as many as fit in ~64 MB).
    compile : bool, one orbit at native speed (no ensemble, no inputs), through
        `torch.compile` (`odenet._compiled`, cached per step, shape, dtype).
        States of up to 64 numbers with `tangent="jacobian"`: only the
        sequential part, the trajectory, is compiled (a `while_loop`, 1000 steps
        per call); the Jacobians of those states are one vmapped call and their
        products between QRs batched matmuls, so the QR schedule and the results
        are the eager path's to round-off.  Larger states (or `tangent="jvp"`):
        the whole loop — step, tangent propagation as a vmapped `jvp` of the
        step on the `[d, k]` tangent matrix, QR every `qr_every` steps (those
        steps unrolled in the loop body, so the compile grows with it) and the
        `log|R_jj|` sums — is one compiled call per `record_every` steps.  The
        compile (seconds to minutes, see `odenet._compiled.compile_records()`)
        pays off over long orbits only.  If the step cannot be compiled (graph
        breaks, no compiler, `ODENET_COMPILE=0`), the eager path runs.
    transient_tangents : bool, push the tangent vectors through the transient too
        (default; removes the start-up bias of tangents that start as the
        identity).  False: the transient advances the state only (cheaper: no
        Jacobians there; lyapynov's convention).
    record_every : int, steps per record with compile on states larger than
        64 (default: `n_steps` split into about 200 records, rounded to a multiple
        of `qr_every`); elsewhere records are per QR.

    Returns
    -------
    LyapunovResult

    Examples
    --------
    A diagonal map stretches by 2 and shrinks by 1/2 each step: exponents ±log 2.

    >>> import torch
    >>> from odenet.stability import lyapunov
    >>> scale = torch.tensor([2.0, 0.5], dtype=torch.float64)
    >>> res = lyapunov(lambda x: scale * x, torch.ones(2, dtype=torch.float64), 20)
    >>> res.exponents
    tensor([ 0.6931, -0.6931], dtype=torch.float64)
    """
    x = _check_state(x0).detach()
    n_steps = check_positive_int("n_steps", n_steps)
    transient = check_positive_int("transient", transient, allow_zero=True)
    qr_every = check_positive_int("qr_every", qr_every)
    if tangent not in ("jacobian", "jvp"):
        raise StabilityInputError(f"`tangent` must be 'jacobian' or 'jvp', got {tangent!r}.")
    if ensemble and tangent == "jvp":
        raise StabilityInputError("`tangent='jvp'` runs one orbit; use ensemble=False.")
    if not ensemble:
        x = x.unsqueeze(0)
    B = x.shape[0]
    shape = x.shape[1:]
    d = shape.numel()
    k = d if k is None else check_positive_int("k", k)
    if k > d:
        raise StabilityInputError(f"`k` = {k} exceeds the state dimension d = {d}; use k <= {d}.")
    if inputs is not None and len(inputs) < transient + n_steps:
        raise StabilityInputError(
            f"`inputs` has {len(inputs)} rows but transient + n_steps = {transient + n_steps}; "
            "pass one input per step."
        )
    chunk = max(1, (8 << 20) // max(1, B * d * d)) if chunk is None else chunk
    chunk = check_positive_int("chunk", chunk)
    dt = check_positive_float("dt", dt)
    if not transient_tangents and transient:
        x = _advance_only(step, x, transient, inputs, ensemble, vectorized, compile)
        inputs = None if inputs is None else inputs[transient:]
        transient = 0
    traj = None
    if record_every is not None:
        record_every = check_positive_int("record_every", record_every)
    if compile and not ensemble and inputs is None:
        if tangent == "jvp" or d > _JACOBIAN_MAX:
            # large states: the whole orbit loop (jvp on the tangent matrix + QR) compiled
            if record_every is None:
                record_every = max(1, n_steps // (200 * qr_every)) * qr_every
            out = _orbit_compiled(step, x[0], n_steps, transient, k, record_every, qr_every)
            if out is not None:
                log_r, ends, x_end = out
                return _result(log_r, ends, dt, x_end[None], ensemble=False)
        else:
            # small states: only the sequential part (the trajectory) is compiled; the
            # Jacobians of a chunk of states are one vmapped call, their products one
            # batched matmul per step of a QR interval
            from odenet._compiled import compile_enabled, compiled_trajectory

            if compile_enabled():
                traj = compiled_trajectory(step, x[0], strict=True)
                chunk = min(chunk, _TRAJECTORY_CHUNK)
    many = (step if vectorized else _batched(step)) if ensemble else None

    def advance(x, n):
        u = () if inputs is None else (inputs[n] if ensemble else inputs[n].unsqueeze(0),)
        if ensemble:
            return many(x, *u)
        return step(x[0], *(v[0] for v in u)).unsqueeze(0)

    def qr_point(j):
        return (j - transient) % qr_every == 0 or j == transient or j == total

    with torch.no_grad():  # a step that changes the state's shape has no square Jacobian
        got = advance(x, 0).shape
    if got != x.shape:
        raise StabilityInputError(
            f"the step maps a state of shape {tuple(x.shape[1:])} to one of shape "
            f"{tuple(got[1:])}: Lyapunov exponents need a map of a space into itself "
            "(x_{n+1} = step(x_n) of x_n's shape)."
        )

    # The transient evolves the tangent vectors too (aligning them with the
    # most expanding directions removes the O(1/T) start-up bias) but records nothing.
    total = transient + n_steps
    Q = torch.eye(d, dtype=torch.float64)[:, :k].expand(B, d, k).contiguous()
    log_r, ends = [], []  # log|R_jj| [B, k] per recorded QR, and the step count there
    n = 0
    buf = None
    while n < total:
        m = min(chunk, total - n)
        states = None
        with torch.no_grad():
            if traj is not None:
                if buf is None:
                    buf = x.new_empty(chunk, d)
                try:
                    after = traj(torch.tensor(m), x[0], buf)[:m].reshape(m, 1, *shape)
                    states = torch.cat([x[None], after[:-1]])
                    x_next = after[-1]
                except CompileFailed:
                    traj = None
            if states is None:
                xs = [x]
                for i in range(m):
                    xs.append(advance(xs[-1], n + i))
                states = torch.stack(xs[:-1])  # [m, B, *shape]
                x_next = xs[-1]
        if tangent == "jacobian":
            u = None
            if inputs is not None:
                u = inputs[n : n + m]
                u = u.reshape(m * B, *u.shape[2:]) if ensemble else u
            flat = states.reshape(m * B, *shape)
            Ms = jacobians(step, flat, u).detach().to(torch.float64).reshape(m, B, d, d)
            # the products of the Jacobians between consecutive QRs (or chunk ends),
            # segments of equal length batched together
            cuts = [n] + [j for j in range(n + 1, n + m + 1) if qr_point(j)]
            if cuts[-1] != n + m:
                cuts.append(n + m)
            segs = list(itertools.pairwise(cuts))
            prods = {}
            for L in {b - a for a, b in segs}:
                starts = [a - n for a, b in segs if b - a == L]
                idx = torch.as_tensor(starts)[:, None] + torch.arange(L)[None]
                sel = Ms[idx]  # [n_seg, L, B, d, d]
                P = sel[:, 0]
                for l_ in range(1, L):
                    P = sel[:, l_] @ P
                prods.update(zip(starts, P.unbind(0), strict=True))
            for a, b in segs:
                Q = prods[a - n] @ Q
                if qr_point(b):
                    Q, R = torch.linalg.qr(Q)  # re-orthonormalize; R's diagonal is the growth
                    if b > transient:
                        log_r.append(torch.diagonal(R, dim1=-2, dim2=-1).abs().log())
                        ends.append(b - transient)
        else:
            for i in range(m):
                j = n + i + 1  # steps taken after this one
                args = () if inputs is None else (inputs[n + i],)
                V = Q[0].to(x.dtype)
                Q = tangent_step(step, states[i, 0], V, *args).detach().to(torch.float64)[None]
                if qr_point(j):
                    Q, R = torch.linalg.qr(Q)
                    if j > transient:
                        log_r.append(torch.diagonal(R, dim1=-2, dim2=-1).abs().log())
                        ends.append(j - transient)
        x = x_next
        n += m
    return _result(log_r, ends, dt, x, ensemble)


def _advance_only(step, x, n, inputs, ensemble, vectorized, compile):
    """``x [B, *shape]`` after ``n`` steps, without tangents (compiled when asked)."""
    from odenet._compiled import compile_enabled, compiled_orbit

    with torch.no_grad():
        if compile and not ensemble and inputs is None and compile_enabled():
            run = compiled_orbit(step, x[0], k=None, strict=True)
            if run.compiled:
                try:
                    return run(torch.tensor(n), x[0], x.new_zeros(1, 1), x.new_zeros(1))[0][None]
                except CompileFailed:
                    pass
        many = (step if vectorized else _batched(step)) if ensemble else None
        for i in range(n):
            u = () if inputs is None else (inputs[i] if ensemble else inputs[i].unsqueeze(0),)
            x = many(x, *u) if ensemble else step(x[0], *(v[0] for v in u)).unsqueeze(0)
    return x


# compile=True: states up to this size form their Jacobians (one vmapped call per chunk
# of the compiled trajectory); larger ones push the tangent matrix through the
# compiled orbit loop by jvp (a d x d Jacobian would cost an extra d^3 product per step)
_JACOBIAN_MAX = 64
# compiled trajectory: steps per call (the loop writes each state into a buffer of
# this many rows)
_TRAJECTORY_CHUNK = 1000


def _orbit_compiled(step, x, n_steps, transient, k, record_every, qr_every):
    """One orbit through the compiled orbit loop; `None` if it cannot compile.

    Returns `(log_r, ends, x)` in `_result`'s terms, one record per
    `record_every` steps (the sum of `log|R_jj|` over those steps).  The loop
    runs `qr_every` steps per QR; steps that do not fill a whole group (the ends
    of the transient and of the run, not multiples of `qr_every`) go through a
    second compiled loop with one step per QR.
    """
    from odenet._compiled import compiled_orbit

    d = x.numel()
    fn = compiled_orbit(step, x, k=k, qr=True, unroll=qr_every, strict=True)
    one = fn if qr_every == 1 else None
    if not fn.compiled:
        return None
    Q = torch.eye(d, dtype=x.dtype, device=x.device)[:, :k].contiguous()
    zero = torch.zeros(k, dtype=x.dtype, device=x.device)
    log_r, ends = [], []
    spans = [transient] if transient else []
    done = 0
    while done < n_steps:
        m = min(record_every, n_steps - done)
        spans.append(m)
        done += m
    try:
        with torch.no_grad():
            for i, m in enumerate(spans):
                groups, rest = divmod(m, qr_every)
                acc = zero
                if groups:
                    x, Q, acc = fn(torch.tensor(groups), x, Q, acc)
                if rest:
                    if one is None:
                        one = compiled_orbit(step, x, k=k, qr=True, strict=True)
                    x, Q, acc = one(torch.tensor(rest), x, Q, acc)
                if transient and i == 0:
                    continue
                log_r.append(acc.to(torch.float64)[None])
                ends.append((ends[-1] if ends else 0) + m)
    except CompileFailed:
        return None
    return log_r, ends, x


def _result(log_r, ends, dt, x, ensemble) -> LyapunovResult:
    """The result from the `log|R_jj|` records `[B, k]` and their step counts."""
    L = torch.stack(log_r).cpu().numpy()  # [n_qr, B, k]
    bad = ~np.isfinite(L).all(axis=(1, 2))
    if bad.any():  # (the exponents came out NaN, with no word)
        at = int(ends[int(np.argmax(bad))])
        raise StabilityInputError(
            f"the tangent vectors' growth became inf/NaN by step {at}: the orbit overflowed "
            "or left the map's domain (a diverging orbit has no Lyapunov spectrum). "
            "Look at the orbit (odenet.stability.trajectory(step, x0, n_steps)), start "
            "from a state whose orbit stays bounded, or take fewer steps."
        )
    B = L.shape[1]
    ends_ = np.asarray(ends, dtype=float)
    spans = np.diff(np.concatenate([[0.0], ends_])) * dt
    times = ends_ * dt
    running = np.cumsum(L.mean(1), axis=0) / times[:, None]
    local = L.mean(1) / spans[:, None]
    if B >= 2:
        per_orbit = L.sum(0) / times[-1]  # [B, k]
        stderr = per_orbit.std(axis=0, ddof=1) / np.sqrt(B)
    else:
        stderr = _batch_stderr(L[:, 0], spans)
    order = np.argsort(-running[-1])  # QR gives them descending already, up to noise
    return LyapunovResult(
        exponents=torch.as_tensor(running[-1][order].copy(), dtype=torch.float64),
        running=running[:, order],
        local=local[:, order],
        stderr=stderr[order],
        times=times,
        final_state=x if ensemble else x[0],
    )


def _batched(step: Step):
    """`step` applied to a batch of states: vmapped, or a loop if torch.func cannot trace it."""
    vm = torch.func.vmap(step)

    def many(x, *u):
        try:
            return vm(x, *u)
        except RuntimeError:
            return torch.stack([step(x[b], *(v[b] for v in u)) for b in range(x.shape[0])])

    return many


def _batch_stderr(log_r: np.ndarray, spans: np.ndarray, n_batches: int = 20) -> np.ndarray:
    """Standard error of the time average from the means of `n_batches` consecutive batches."""
    nb = min(n_batches, len(log_r))
    if nb < 2:
        return np.full(log_r.shape[1], np.nan)
    groups = np.array_split(np.arange(len(log_r)), nb)
    means = np.stack([log_r[g].sum(0) / spans[g].sum() for g in groups])
    return means.std(axis=0, ddof=1) / np.sqrt(nb)


def lyapunov_spectrum(
    step: Step,
    x0: torch.Tensor,
    n_steps: int,
    *,
    dt: float = 1.0,
    transient: int = 0,
    k: int | None = None,
    **options,
) -> torch.Tensor:
    """The `k` largest Lyapunov exponents of `x ↦ step(x)`, descending, per unit time.

    A flow's spectrum: `lyapunov_spectrum(flow_map(f, dt), x0, n, dt=dt)`.

    Parameters
    ----------
    step, x0, n_steps, dt, transient, k
        See [`lyapunov`][odenet.stability.lyapunov.lyapunov]; `options` (`qr_every`, `inputs`,
        `tangent`, `chunk`) are passed on.

    Returns
    -------
    Tensor `[k]`.

    Examples
    --------
    >>> import torch
    >>> from odenet.stability import lyapunov_spectrum
    >>> M = torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64))
    >>> lyapunov_spectrum(lambda x: M @ x, torch.ones(2, dtype=torch.float64), 10)
    tensor([ 0.6931, -0.6931], dtype=torch.float64)
    """
    res = lyapunov(step, x0, n_steps, dt=dt, transient=transient, k=k, **options)
    return res.exponents
