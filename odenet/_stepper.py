"""One Runge–Kutta step of any tableau, on a batch of independent systems.

The state is a ``[K, n]`` tensor of ``K`` independent systems (``K = 1`` for one
system on a shared time grid), times and step sizes are ``[K]`` tensors.  The
vector field ``g(s [K], y [K, n]) -> [K, n]``.  A step returns the new state, the
embedded error estimate, the stage derivatives (for dense output), the derivative
at the end of the step when it comes for free, and a per-row success flag (False
when the implicit stage equations could not be solved).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from odenet.tableaus import ButcherTableau


def hermite_basis(theta, derivative: bool = False):
    """Cubic Hermite basis ``(h00, h10, h01, h11)`` at ``θ`` (numbers, numpy or torch),
    or its ``d/dθ`` with ``derivative``.

    ``y(s + θh) ≈ h00 y0 + h10 h f0 + h01 y1 + h11 h f1`` through ``(y0, f0), (y1, f1)``.
    """
    t2 = theta * theta
    if derivative:
        return 6 * t2 - 6 * theta, 3 * t2 - 4 * theta + 1, 6 * theta - 6 * t2, 3 * t2 - 2 * theta
    t3 = t2 * theta
    return 2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + theta, 3 * t2 - 2 * t3, t3 - t2


def interpolant_slope(rk, theta, y0, y1, f0, f1, h, ks) -> torch.Tensor:
    """``d/dt`` of a step's dense output at ``s + θh``: ``theta [K, m]`` -> ``[K, m, n]``
    (detached), for ``rk.interpolate``'s arguments (``ks`` with any extra stages).

    The derivative of the interpolant itself (each ``interpolate`` differentiates its
    own polynomial in ``θ``).  It is what an output's gradient with respect to its time
    needs: ``f(t, ŷ(t))`` at an interpolated ``ŷ`` magnifies the interpolant's error by
    a stiff Jacobian (kvaerno5 on Robertson at rtol 1e-6: 6–23 % off), while the
    interpolant's own slope errs by about its error over the step.
    """
    args = [None if v is None else v.detach() for v in (y0, y1, f0, f1, h, ks)]
    with torch.no_grad():
        d_theta = rk.interpolate(theta.detach(), *args, derivative=True)
        h_div = torch.where(h == 0, torch.ones_like(h), h).detach().to(y0.dtype)
        return d_theta / h_div.reshape(-1, *([1] * (d_theta.dim() - 1)))


def stage_input(terms, y, hy, ks):
    """``y + h Σ_j a_ij k_j`` for one row's nonzero ``terms = [(j, a_ij), ...]``.

    A chain of fused scalar adds: far fewer dispatches than stack + matmul for the small
    states that dominate solver overhead.
    """
    if not terms:
        return y
    j0, a0 = terms[0]
    incr = ks[j0] * a0
    for j, a in terms[1:]:
        incr = torch.add(incr, ks[j], alpha=a)
    return y + hy * incr


def combine(weights, y, hy, ks: torch.Tensor):
    """``y1 = y + h Σ b_i k_i`` and the error estimate(s) ``h Σ (b_i − b̂_i) k_i``.

    ``weights [W, S]`` (row 0: ``b``; further rows: ``b − b̂``), ``ks [S, *y.shape]``.
    """
    S = ks.shape[0]
    comb = (weights @ ks.reshape(S, -1)).reshape(-1, *y.shape)
    # not addcmul: a fused multiply-add would round once, and a ResNet block must be
    # bit for bit the textbook h + Δt·f(h)
    y1 = y + hy * comb[0]
    if comb.shape[0] == 1:
        return y1, None
    if comb.shape[0] == 3:
        return y1, (hy * comb[1], hy * comb[2])
    return y1, hy * comb[1]


def explicit_step(f, t, y, h, rk: RungeKutta, *, f0=None, hy=None, error: bool = True):
    """One step of an explicit tableau: ``(y1, error estimate, stages [S, *y.shape])``.

    The only place the explicit stages ``k_i = f(t + c_i h, y + h Σ_j a_ij k_j)`` are
    written; a pure function of its inputs (no state is read or written on ``rk``,
    which only supplies the tableau's coefficients), so it runs under ``torch.func``
    transforms (``jacrev``, ``jvp``, ``vmap``).

    Two layouts of the same recursion: tensor times (``t`` 0-dim or ``[K]``) combine
    the stages by chains of fused scalar adds; Python-float ``t`` and ``h`` (one
    system ``y [1, n]``, the loop's host backend) combine each row of ``A`` with one
    ``addmm`` on the stages so far, and a stiffly accurate tableau's solution is its
    last stage input, so that an FSAL derivative is ``f(t + h, y1)`` exactly.

    Parameters
    ----------
    f : callable ``f(t, y)`` in whatever layout ``y`` has.
    t : Tensor, the time at the start (0-dim, or ``[K]`` for rows of systems); or a
        Python float with ``h`` a float too.
    y : Tensor, the state.
    h : float or Tensor broadcastable with ``t``: the step in time.
    rk : RungeKutta of an explicit tableau (its ``row_terms``, ``c_list``, ``weights``).
    f0 : ``f(t, y)`` if the caller has it.
    hy : the step in the state's layout (default ``h``), e.g. ``h[:, None]`` for rows.
    error : also form the embedded error estimate(s) (``None`` when False).
    """
    if isinstance(t, float):
        return _explicit_step_host(f, t, y, h, rk, f0, error)
    hy = h if hy is None else hy
    ks = [f(t, y) if f0 is None else f0]
    for i in range(1, rk.S):
        ti = torch.add(t, h, alpha=rk.c_list[i])
        ks.append(f(ti, stage_input(rk.row_terms[i], y, hy, ks)))
    ks_t = torch.stack(ks)
    y1, err = combine(rk.weights if error else rk.weights[:1], y, hy, ks_t)
    return y1, err, ks_t


def _explicit_step_host(f, t: float, y, h: float, rk: RungeKutta, f0, error: bool):
    """:func:`explicit_step` of one system ``y [1, n]`` at Python-float ``t``, ``h``;
    the stages come back as ``[S, n]`` and the error estimate as ``[E, n]``."""
    ks = [f(t, y) if f0 is None else f0]
    yi = y
    for i in range(1, rk.S):
        row = rk.A_rows[i]
        yi = y if row is None else torch.addmm(y, row, torch.cat(ks), alpha=h)
        ks.append(f(t + rk.c_list[i] * h, yi))
    K = torch.cat(ks)
    y1 = yi if rk.stiffly_accurate else torch.addmm(y, rk.b_row, K, alpha=h)
    err = None if not error or rk.E_rows is None else torch.mm(rk.E_rows, K).mul_(h)
    return y1, err, K


def tolerance_unit(atol, rtol, y: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
    """``atol + rtol·max(|y|, |y₁|)`` [K, n]: one tolerance unit of a step from ``y`` to
    ``y₁`` (both [K, n]; ``atol`` a number or a tensor broadcasting to them), the scale
    every error estimate is measured in."""
    return atol + rtol * torch.maximum(y.abs(), y1.abs())


@dataclass
class StepResult:
    y1: torch.Tensor  # [K, n]
    # [K, n], h Σ (b_i − b̂_i) k_i; a pair (e5, e3) for tableaux with two embedded solutions
    error: torch.Tensor | tuple | None
    ks: torch.Tensor  # [S, K, n] stage derivatives
    f1: torch.Tensor | None  # [K, n] f(t + h, y1) when free (FSAL / stiffly accurate)
    ok: torch.Tensor | None  # [K] bool; None means every row succeeded (explicit methods)


class RungeKutta:
    """A tableau made concrete for one dtype and device.

    Parameters
    ----------
    tableau : ButcherTableau
    dtype : the state's dtype; time_dtype : the dtype of ``t``; device.
    newton : Newton, optional
        Required for implicit tableaux.
    """

    def __init__(self, tableau: ButcherTableau, dtype, time_dtype, device, newton=None):
        self.tableau = tableau
        self.S = tableau.stages
        self.dtype = dtype

        def T(x, dt=dtype):
            return torch.as_tensor(np.asarray(x), dtype=dt, device=device)

        self.c = T(tableau.c, time_dtype)
        self.c_list = [float(x) for x in tableau.c]
        self.A = T(tableau.A)
        # stage combinations as (j, a_ij) pairs: a chain of fused scalar adds
        # costs far fewer dispatches than stack + matmul for the small states that
        # dominate solver overhead
        self.row_terms = [
            [(j, float(tableau.A[i, j])) for j in range(i) if tableau.A[i, j] != 0]
            for i in range(self.S)
        ]
        weights = [tableau.b]
        if tableau.b_hat is not None:
            weights.append(tableau.b - tableau.b_hat)
        if tableau.b_hat2 is not None:  # a second estimate (DOP853's 3rd order one)
            weights.append(tableau.b - tableau.b_hat2)
        self.weights = T(np.stack(weights))  # [1 or 2, S]
        self.newton = newton
        # set by the caller when the solve must be differentiable (implicit stages then
        # get attached to the graph by the implicit function theorem)
        self.track_grad = False
        # a method that reads its rows' last accepted steps keeps a LastStep here, and
        # the loop tells it every verdict
        self.last_step: LastStep | None = None
        self.implicit = tableau.is_implicit
        self.fully_implicit = tableau.is_fully_implicit
        A = tableau.A
        self.A_inv = None
        if self.fully_implicit and abs(np.linalg.det(A)) > 1e-12:
            self.A_inv = T(np.linalg.inv(A))
        self.stiffly_accurate = tableau.is_stiffly_accurate
        self.first_explicit = tableau.first_stage_explicit
        # one system with Python-float h (the host loop): every stage input and the
        # solution are one addmm each, ``y + h · (A_i,:i @ K)``
        self.A_rows = [
            T(tableau.A[i : i + 1, :i]) if np.any(tableau.A[i, :i]) else None for i in range(self.S)
        ]
        self.b_row = T(tableau.b[None])
        self.E_rows = T(np.stack(weights[1:])) if len(weights) > 1 else None
        if tableau.dense is not None:
            d = tableau.dense
            self.P_np = np.asarray(d.P, dtype=np.float64)
            self.extra_A_rows = (
                []
                if d.extra_A is None
                else [T(d.extra_A[e : e + 1, : self.S + e]) for e in range(len(d.extra_c))]
            )
            self.P = T(d.P)  # [S + E, degree]
            self.extra_A = None if d.extra_A is None else T(d.extra_A)
            self.extra_c = [] if d.extra_c is None else [float(x) for x in d.extra_c]
        else:
            self.P = None

    # ------------------------------------------------------------------------------
    def step(self, g, s, y, h, f0) -> StepResult:
        """Advance ``y`` at ``s`` by ``h`` (rows with ``h = 0`` stay put).

        ``f0 = g(s, y)`` is passed in because every caller already has it.
        """
        if not self.implicit:
            return self._explicit(g, s, y, h, f0)
        if self.fully_implicit:
            return self._fully_implicit(g, s, y, h, f0)
        return self._diagonally_implicit(g, s, y, h, f0)

    def _combine(self, y, hy, ks: torch.Tensor):
        return combine(self.weights, y, hy, ks)

    def _stage_input(self, i, y, hy, ks):
        """``y + h Σ_{j<i} A_ij k_j`` (the lower-triangular part of row ``i``)."""
        return stage_input(self.row_terms[i], y, hy, ks)

    def _explicit(self, g, s, y, h, f0) -> StepResult:
        hy = h.to(y.dtype)[:, None]
        y1, err, ks_t = explicit_step(g, s, y, h, self, f0=f0, hy=hy)
        f1 = ks_t[-1] if self.stiffly_accurate else None
        return StepResult(y1, err, ks_t, f1, None)

    # --- one system, host-side step size --------------------------------------------
    def step_one(self, g, s: float, y, h: float, f0):
        """An explicit step of one system ``y [1, n]`` with Python-float ``s`` and ``h``
        (:func:`explicit_step`'s host layout).

        ``g(s: float, y [1, n]) -> [1, n]``.  Returns ``y1 [1, n]``, the stage
        derivatives ``K [S, n]``, the error *rates* ``Σ_i (b_i − b̂_i) k_i`` ``[E, n]``
        (the caller multiplies their norm by ``|h|``; ``None`` without an embedded
        method) and ``f(s + h, y1)`` when it comes free (FSAL), else ``None``.
        """
        y1, _, K = explicit_step(g, s, y, h, self, f0=f0, error=False)
        rates = None if self.E_rows is None else torch.mm(self.E_rows, K)
        return y1, K, rates, (K[-1:] if self.stiffly_accurate else None)

    def interpolate_one(self, g, s: float, y0, y1, f0, f1, h: float, K, theta):
        """States ``[m, n]`` of one system at ``s + θh`` for ``θ`` (a list of m floats).

        The weights are polynomials in ``θ`` evaluated on the host, so the output is
        one matrix product.  Extra stages of the continuous extension (DOP853) are
        evaluated here, only for steps that have an output inside.
        """
        th = np.asarray(theta, dtype=np.float64)[:, None]
        if self.P is not None:
            for e, row in enumerate(self.extra_A_rows):
                yi = torch.addmm(y0, row, K, alpha=h)
                K = torch.cat([K, g(s + self.extra_c[e] * h, yi)])
            W = (th ** np.arange(1, self.P_np.shape[1] + 1)) @ self.P_np.T
            W = torch.as_tensor(W, dtype=y0.dtype).to(y0.device)
            return torch.addmm(y0, W, K, alpha=h)
        h00, h10, h01, h11 = hermite_basis(th)
        W = torch.as_tensor(np.hstack([h00, h10 * h, h01, h11 * h]), dtype=y0.dtype).to(y0.device)
        return torch.mm(W, torch.cat([y0, f0, y1, f1]))

    # --- implicit -----------------------------------------------------------------
    def _diagonally_implicit(self, g, s, y, h, f0) -> StepResult:
        out = self._dirk_stages(g, s, y, h, f0)
        out.error = self.newton.filter_error(out.error, self.tableau)  # see Newton.filter_error
        return out

    def _dirk_stages(self, g, s, y, h, f0) -> StepResult:
        """The stages and solution of a diagonally implicit step, with the embedded
        estimate ``h Σ (b_i − b̂_i) k_i`` as it is (not yet filtered or scaled by κ)."""
        K, n = y.shape
        hy = h.to(y.dtype)[:, None]
        h_safe = torch.where(h == 0, torch.ones_like(h), h).to(y.dtype)
        ks: list[torch.Tensor] = []
        ok = torch.ones(K, dtype=torch.bool, device=y.device)
        for i in range(self.S):
            a_ii = float(self.tableau.A[i, i])
            ti = torch.add(s, h, alpha=self.c_list[i])
            base = self._stage_input(i, y, hy, ks)
            if a_ii == 0.0:
                ks.append(f0 if (i == 0 and self.c_list[0] == 0.0) else g(ti, base))
                continue
            hA = (h * a_ii).to(y.dtype)[:, None, None]  # [K, 1, 1]
            # predictor: the stage's explicit part plus h·a_ii times the last stage slope
            k_prev = ks[-1] if ks else f0
            guess = (base + (h * a_ii).to(y.dtype)[:, None] * k_prev)[:, None]

            def G(Z, ti=ti):
                return g(ti, Z[:, 0])[:, None]

            G.times = ti[:, None]  # for odenet._compiled.FusedNewton
            Z, ok_i = self.newton.stages(g, s, y, base[:, None], hA, guess, G)
            if self.track_grad and torch.is_grad_enabled():
                Z = self.newton.attach(g, ti[:, None], base[:, None], hA, Z, G)
            ok = ok & ok_i
            ks.append((Z[:, 0] - base) / (h_safe[:, None] * a_ii))
            if i + 1 < self.S and not bool(ok.any()):
                # every row failed: the step is rejected whatever the later stages give
                # (kvaerno5 on set 14's ring spent a quarter of its iterations on them)
                ks += [ks[-1]] * (self.S - 1 - i)
                break
        ks_t = torch.stack(ks)
        y1, err = self._combine(y, hy, ks_t)
        f1 = ks[-1] if self.stiffly_accurate else None
        return StepResult(y1, err, ks_t, f1, ok)

    def _fully_implicit(self, g, s, y, h, f0) -> StepResult:
        K, n = y.shape
        S = self.S
        hy = h.to(y.dtype)[:, None]
        times = s[:, None] + self.c[None, :] * h[:, None]  # [K, S]
        hA = h.to(y.dtype)[:, None, None] * self.A[None]  # [K, S, S]
        base = y[:, None, :].expand(K, S, n)
        guess = y[:, None, :] + (self.c[None, :, None] * h[:, None, None]).to(y.dtype) * f0[:, None]

        def G(Z):
            return torch.stack([g(times[:, j], Z[:, j]) for j in range(S)], dim=1)

        Z, ok = self.newton.stages(g, s, y, base, hA, guess, G)
        if self.track_grad and torch.is_grad_enabled():
            Z = self.newton.attach(g, times, base, hA, Z, G)
        if self.A_inv is not None:
            h_safe = torch.where(h == 0, torch.ones_like(h), h).to(y.dtype)
            ks = torch.einsum("ij,kjn->ikn", self.A_inv, Z - y[:, None]) / h_safe[None, :, None]
        else:
            ks = G(Z).transpose(0, 1)
        y1, err = self._combine(y, hy, ks)
        if self.stiffly_accurate:  # y1 is the last stage exactly: no round-off from A⁻¹
            y1 = Z[:, -1]
        f1 = ks[-1] if self.stiffly_accurate else None
        return StepResult(y1, err, ks, f1, ok)

    # --- dense output ---------------------------------------------------------------
    def interpolant_filter(self, defect: torch.Tensor):
        """``hγ (I − hγJ)⁻¹ defect`` [K, n] with the last step's factors: the error
        estimate of the dense output for its defect (:mod:`odenet._dense_check`);
        ``None`` where the step has no such factors."""
        return None if self.newton is None else self.newton.filtered(defect)

    @property
    def has_own_interpolant(self) -> bool:
        return self.P is not None

    def extra_stages(self, g, s, y, h, ks: torch.Tensor) -> torch.Tensor:
        """Stages needed only by the continuous extension (e.g. DOP853's three); ``ks``
        that already hold them pass through (events and outputs both ask for them)."""
        if self.P is None or self.extra_A is None or ks.shape[0] >= self.S + len(self.extra_c):
            return ks
        S0, K, n = ks.shape
        hy = h.to(y.dtype)[:, None]
        all_ks = list(ks.unbind(0))
        for e, ce in enumerate(self.extra_c):
            m = len(all_ks)
            row = self.extra_A[e, :m]
            yi = y + hy * (row @ torch.stack(all_ks).reshape(m, K * n)).reshape(K, n)
            all_ks.append(g(s + ce * h, yi))
        return torch.stack(all_ks)

    def interpolate(self, theta, y0, y1, f0, f1, h, ks, derivative=False) -> torch.Tensor:
        """States at ``s + θh`` for ``θ`` [K, m] in [0, 1]: returns [K, m, n]
        (``θ`` [K] gives [K, n]); their ``d/dθ`` with ``derivative``.

        The method's own continuous extension when it has one (``ks`` must then
        include any extra stages), cubic Hermite through ``(y0, f0), (y1, f1)``
        otherwise.
        """
        if theta.dim() == 1:
            return self.interpolate(theta[:, None], y0, y1, f0, f1, h, ks, derivative)[:, 0]
        th = theta.to(y0.dtype)[:, :, None]  # [K, m, 1]
        hy = h.to(y0.dtype)[:, None, None]
        y0_ = y0[:, None]
        if self.P is not None:
            k = torch.arange(1, self.P.shape[1] + 1, dtype=y0.dtype, device=y0.device)
            powers = k * th ** (k - 1) if derivative else th**k
            W = powers @ self.P.T  # [K, m, S + E]
            step = hy * torch.einsum("kms,skn->kmn", W, ks)
            return step if derivative else y0_ + step
        h00, h10, h01, h11 = hermite_basis(th, derivative)
        return h00 * y0_ + h10 * hy * f0[:, None] + h01 * y1[:, None] + h11 * hy * f1[:, None]


class LastStep:
    """Each row's last accepted step, for a method that reads it: Radau IIA extrapolates
    its collocation polynomial into the next starting guess, the adaptive trapezoid
    estimates its local error from it (Milne's device).

    The method offers each trial's record (:meth:`offer`: tensors whose first dimension
    is the row, the first of them the trial's end time); the loop tells the verdict on
    every trial (:meth:`verdict`), and the accepted rows' records become :attr:`last`.
    A row with no accepted step yet has NaN for its end time, which no start equals.
    (The loop knows each verdict; inferring it from where the next trial starts took
    each such method its own copy of this bookkeeping and reads of the device.)
    """

    def __init__(self):
        self.trial = None  # the last trial's record
        self.last = None  # the last accepted record of each row
        self.accepted = None  # the last verdict: [K] bool, a bool (one system), None

    def offer(self, *record) -> None:
        self.trial = record

    def verdict(self, accept, every: bool) -> None:
        """``accept``: [K] bool, or a bool on the loop's one-system backend; ``every``:
        whether every row accepted."""
        self.accepted = accept
        trial, self.trial = self.trial, None
        if trial is None:
            return
        if every:
            self.last = trial
            return
        if not isinstance(accept, torch.Tensor):  # one system, rejected
            return
        last = self.last
        if last is None or last[0].shape != trial[0].shape:
            last = (torch.full_like(trial[0], float("nan")), *trial[1:])

        def rows(x):
            return accept.view(-1, *(1,) * (x.dim() - 1))

        self.last = tuple(torch.where(rows(new), new, old) for new, old in zip(trial, last))

    def rows_of(self, s: torch.Tensor):
        """:attr:`last` where it has a record per row of ``s`` [K], else None (a record
        of another batch: none of it belongs to these rows)."""
        last = self.last
        return last if last is not None and last[0].shape == s.shape else None

    def rejected(self, s: torch.Tensor) -> torch.Tensor:
        """``[K]`` bool: the rows (``s`` [K], the trial's start) whose last trial was
        rejected, so that this one retries from the same start; every row at first (and
        after a verdict on another batch's rows)."""
        a = self.accepted
        if isinstance(a, torch.Tensor):
            if a.shape == s.shape:
                return ~a
            a = None
        return torch.full_like(s, a is None or not a, dtype=torch.bool)


# --- the runtimes of tableaux, cached -------------------------------------------------
_STEP_CACHE: dict = {}


def runtime(tab: ButcherTableau, dtype, time_dtype, device) -> RungeKutta:
    """A tableau's tensors, built once per (tableau, dtypes, device).

    A ResNet calls ``step`` once per layer and a training loop calls ``solve`` once per
    batch: rebuilding tensors from numpy each time would dominate small problems.
    The cache keeps a template that is never handed out: each call gets a shallow copy
    (sharing the template's tensors, which nothing modifies), so the per-call state —
    the Newton solver and ``track_grad`` — belongs to that call alone.
    """
    return own_copy(cached_runtime(tab, dtype, time_dtype, device))


def cached_runtime(tab: ButcherTableau, dtype, time_dtype, device) -> RungeKutta:
    """The cached template (never to be modified: copy it with :func:`own_copy`)."""
    key = (id(tab), dtype, time_dtype, str(device))
    rk = _STEP_CACHE.get(key)
    if rk is None or rk.tableau is not tab:
        if len(_STEP_CACHE) > 64:
            _STEP_CACHE.clear()
        rk = _STEP_CACHE[key] = RungeKutta(tab, dtype, time_dtype, device, None)
    return rk


def own_copy(rk: RungeKutta) -> RungeKutta:
    """A shallow copy: shares the template's tensors, owns its per-call attributes."""
    own = RungeKutta.__new__(RungeKutta)
    own.__dict__.update(rk.__dict__)
    return own
