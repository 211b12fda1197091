"""The continuous adjoint, solved backward against the forward's states.

In internal time ``s`` (increasing), with ``y' = g(s, y; θ)`` and a loss ``L`` of
the outputs ``y(s_i)``, the adjoint ``a(s) = ∂L/∂y(s)`` solves

    a' = −(∂g/∂y)ᵀ a,      a(s_i⁻) = a(s_i⁺) + ∂L/∂y(s_i),
    ∂L/∂θ = ∫ aᵀ ∂g/∂θ ds,  ∂L/∂y0 = a(s_0),
    ∂L/∂s_i = ⟨∂L/∂y(s_i), g(s_i, y_i)⟩ (i ≥ 1),  ∂L/∂s_0 = −⟨a(s_0), g(s_0, y_0)⟩.

Backward, segment by segment (last first), the forward states of the segment are
recomputed once from its checkpoint without autograd (none when every state was
kept); then ``a`` and the parameter quadrature are integrated backward over each
forward step with a Runge–Kutta method (``adjoint_method``, default the forward's),
the state at each stage time being the forward's own state at the step ends and its
interpolant inside — the cubic Hermite through ``(y_n, g_n), (y_{n+1}, g_{n+1})``,
whose end slopes are the outputs of the linearizations at the step ends, or the
method's own continuous extension (then the segment is replayed with its stages).
Never a backward re-solve of ``y``, which is what makes the textbook backsolve blow
up on contracting dynamics.  The adjoint step starts as the forward step and is
subdivided by its own error control when the method is adaptive; parameter
channels are left out of the error norm (the *seminorm* of Kidger, Chen & Lyons
2021) unless ``adjoint_seminorm=False``.

Costs per forward step, rk4 adjoint of an rk4 forward: one field evaluation with
graph at each distinct stage point (``s_n`` and the midpoint; ``s_{n+1}`` is shared
with the step after), four vector–Jacobian products with respect to ``y`` only,
and — because the parameter gradient is linear in the cotangent — one product with
respect to the parameters per evaluation point, on the sum of the cotangents that
met there (deferred until the point is left; with the seminorm only).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from odenet._controller import PIDController
from odenet._loop import LoopConfig, integrate
from odenet._solution import SUCCESS, Status
from odenet._stepper import (
    StepResult,
    combine,
    hermite_basis,
    runtime,
    stage_input,
)
from odenet.sensitivity._tape import OutputMap, StepData, Tape, replay, states


class Counter:
    def __init__(self):
        self.nfe = 0
        self.vjp = 0


class Linearization:
    """``g`` evaluated with a graph at ``(τ, y)``: vector–Jacobian products on demand.

    ``f`` is the value ``g(τ, y)`` (detached).  Parameter cotangents can be summed
    with :meth:`add_param_cotangent` and pulled back once by :meth:`release`.
    """

    def __init__(self, g, tau, y, params, counter: Counter):
        with torch.enable_grad():
            self.y = y.detach().requires_grad_(True)
            self.out = g(tau, self.y)
        self.f = self.out.detach()
        self.params = params
        self.counter = counter
        self.pending: torch.Tensor | None = None
        counter.nfe += 1

    def vjp(self, cot: torch.Tensor):
        """``(Jᵀ cot [K, n], [(∂g/∂θ)ᵀ cot summed over rows, per parameter])``."""
        self.counter.vjp += 1
        if not self.out.requires_grad:
            return torch.zeros_like(cot), [None] * len(self.params)
        grads = torch.autograd.grad(
            self.out, [self.y, *self.params], cot, retain_graph=True, allow_unused=True
        )
        gy = grads[0] if grads[0] is not None else torch.zeros_like(cot)
        return gy, list(grads[1:])

    def vjp_y(self, cot: torch.Tensor) -> torch.Tensor:
        """``Jᵀ cot`` [K, n] alone: autograd then skips the parameter gradients."""
        self.counter.vjp += 1
        if not self.out.requires_grad:
            return torch.zeros_like(cot)
        (gy,) = torch.autograd.grad(self.out, [self.y], cot, retain_graph=True, allow_unused=True)
        return gy if gy is not None else torch.zeros_like(cot)

    def add_param_cotangent(self, cot: torch.Tensor) -> None:
        self.pending = cot if self.pending is None else self.pending + cot

    def release(self) -> list:
        """``(∂g/∂θ)ᵀ (summed cotangent)`` per parameter (``None`` entries when
        nothing is owed); frees the graph."""
        cot, self.pending = self.pending, None
        if cot is None or not self.params or not self.out.requires_grad:
            return [None] * len(self.params)
        self.counter.vjp += 1
        # retain: a parameter reached through a captured non-leaf tensor (A = 2·W in
        # a closure) shares A's graph with every other evaluation; freeing it here made
        # the next product fail with torch's "backward through the graph a second time"
        return list(
            torch.autograd.grad(self.out, self.params, cot, retain_graph=True, allow_unused=True)
        )

    def jacobian(self) -> torch.Tensor:
        """``J[k] = ∂g_k/∂y_k`` [K, n, n] (rows are independent systems)."""
        K, n = self.y.shape
        if not self.out.requires_grad:
            return self.y.new_zeros(K, n, n)
        eye = torch.eye(n, dtype=self.y.dtype, device=self.y.device)
        basis = eye[:, None, :].expand(n, K, n)
        self.counter.vjp += n
        (rows,) = torch.autograd.grad(
            self.out, self.y, basis, retain_graph=True, is_grads_batched=True, allow_unused=True
        )
        if rows is None:
            return self.y.new_zeros(K, n, n)
        return rows.permute(1, 0, 2)


def _add(acc: list, incr: list, w: float = 1.0) -> list:
    return [a if d is None else (d * w if a is None else a + d * w) for a, d in zip(acc, incr)]


class AdjointField:
    """The adjoint's vector field in reversed time ``σ = −s``: ``da/dσ = J(−σ)ᵀ a``.

    ``J`` is taken at the forward's own states: the states at the ends of the forward
    step in hand (:meth:`at`) and its interpolant inside.  A linearization is kept per
    point while the solve is at it, so stages that meet at one point (rk4's two
    midpoint stages, the end of one step and the start of the next) share one field
    evaluation with graph; the parameter cotangents owed at a point are summed and
    pulled back once, when the solve leaves it (:meth:`leave`).

    ``augmented=True`` (one system, ``adjoint_seminorm=False``): the state is
    ``[a, θ̄]`` with ``dθ̄/dσ = (∂g/∂θ)ᵀ a`` so that the parameter channels join the
    error norm; otherwise the parameter gradient is the quadrature of
    :class:`Quadrature`.
    """

    def __init__(
        self, g, rk_fwd, params, counter: Counter, *, n: int, augmented: bool, split: bool = False
    ):
        self.g, self.rk, self.params, self.counter = g, rk_fwd, list(params), counter
        # ``split``: the field is discontinuous at the forward's step ends (torchdiffeq's
        # perturb), so a point shared by two forward steps is linearized once for each
        self.split = split
        self.n = n
        self.augmented = augmented and bool(self.params)
        self.data: StepData | None = None
        self.host: tuple[float, float] | None = None
        self.points: list = []  # [(σ: float | Tensor [K], Linearization)]
        self.gth: list = [None] * len(self.params)
        self.eps = torch.finfo(torch.float64).eps

    def at(self, data: StepData, host: tuple[float, float] | None = None) -> None:
        """The forward step whose states the field reads next (``host``: its start and
        size as Python floats, one system)."""
        if self.split:
            self.leave(None)
        self.data, self.host = data, host
        # a point kept from the step before is an end of this one: its value is an
        # end slope of the Hermite interpolant
        for key, lin in self.points:
            end = self._where(key)[2]
            if end == 0 and data.f0 is None:
                data.f0 = lin.f
            elif end == 1 and data.f1 is None:
                data.f1 = lin.f

    # --- linearizations by point ------------------------------------------------------
    @staticmethod
    def _key(sigma):
        if isinstance(sigma, float):
            return sigma
        return float(sigma) if sigma.numel() == 1 else sigma.detach()

    def _same(self, k1, k2) -> bool:
        if isinstance(k1, float) != isinstance(k2, float):
            return False
        if isinstance(k1, float):
            return abs(k1 - k2) <= 16 * self.eps * max(1.0, abs(k1))
        return bool(((k1 - k2).abs() <= 16 * self.eps * k1.abs().clamp_min(1.0)).all())

    def lin_at(self, sigma) -> Linearization:
        key = self._key(sigma)
        for k, lin in self.points:
            if self._same(k, key):
                return lin
        lin = self._linearize(key)
        self.points.append((key, lin))
        return lin

    def _where(self, key):
        """``(τ [K], θ, end)``: the forward time of the point ``σ = key``, its fraction
        of the forward step in hand, and 0/1 when it is that step's start/end."""
        data = self.data
        tau = -key
        if not isinstance(tau, float):
            return (tau, *self._theta(data, tau))
        tau_t = data.s.new_full(data.s.shape, tau)
        if self.host is not None:
            sh, hh = self.host
            theta = (tau - sh) / hh
        else:
            theta = float((tau_t - data.s) / torch.where(data.h == 0, 1.0, data.h))
        tol = 64 * self.eps
        end = 0 if abs(theta) <= tol else 1 if abs(theta - 1) <= tol else None
        return tau_t, theta, end

    def _linearize(self, key) -> Linearization:
        data = self.data
        tau_t, theta, end = self._where(key)
        # the states at the step ends live in shared blocks of slots (one version
        # counter for all, see Tape._put): the graph gets its own copy
        if end == 0:
            lin = Linearization(self.g, tau_t, data.y.clone(), self.params, self.counter)
            data.f0 = lin.f if data.f0 is None else data.f0
            return lin
        if end == 1:
            lin = Linearization(self.g, tau_t, data.y1.clone(), self.params, self.counter)
            data.f1 = lin.f if data.f1 is None else data.f1
            return lin
        if not self.rk.has_own_interpolant:
            # the Hermite interpolant's end slopes come from linearizations at the
            # ends, which the solve needs anyway (one of them starts the next step)
            if data.f0 is None:
                self.lin_at(self._end_key(0.0))
            if data.f1 is None:
                self.lin_at(self._end_key(1.0))
        with torch.no_grad():
            if isinstance(theta, float) and not self.rk.has_own_interpolant:
                y = self._hermite(data, theta)
            else:
                th = (
                    theta
                    if isinstance(theta, torch.Tensor)
                    else data.s.new_full(data.s.shape, theta)
                )
                y = data.at(self.rk, th, self._plain)
        return Linearization(self.g, tau_t, y, self.params, self.counter)

    def _end_key(self, theta: float):
        """``σ`` at the start (θ = 0) or end (θ = 1) of the forward step in hand."""
        if self.host is not None:
            sh, hh = self.host
            return -(sh + theta * hh)
        data = self.data
        return -(data.s + theta * data.h)

    @staticmethod
    def _theta(data: StepData, tau: torch.Tensor):
        """Fraction of the forward step at ``tau`` [K], and whether it is (for every
        row) the step's start (0) or end (1), else None."""
        h_div = torch.where(data.h == 0, torch.ones_like(data.h), data.h)
        # not clamped: a stage abscissa c > 1 (kvaerno5 has c = 1.23) lies outside the
        # step, where the interpolant is extrapolated; clamping it would linearize at
        # the wrong state and cost the adjoint its order
        theta = (tau - data.s) / h_div
        tol = 64 * torch.finfo(theta.dtype).eps
        still = data.h == 0  # rows that did not move in this iteration: both ends at once
        if bool(((theta.abs() <= tol) | still).all()):
            return theta, 0
        if bool((((theta - 1).abs() <= tol) | still).all()):
            return theta, 1
        return theta, None

    def _hermite(self, data: StepData, theta: float) -> torch.Tensor:
        """The cubic Hermite interpolant of one system with host weights: four fused adds."""
        if data.f0 is None:
            data.f0 = self._plain(data.s, data.y)
        if data.f1 is None:
            data.f1 = self._plain(data.s + data.h, data.y1)
        hh = self.host[1] if self.host is not None else float(data.h)
        h00, h10, h01, h11 = hermite_basis(theta)
        y = data.y * h00
        y = y.add(data.f0, alpha=h10 * hh)
        y = y.add(data.y1, alpha=h01)
        return y.add(data.f1, alpha=h11 * hh)

    def _plain(self, s, y):
        # an end slope the Hermite interpolant needs and no linearization supplied
        self.counter.nfe += 1
        return self.g(s, y)

    # --- the field --------------------------------------------------------------------
    def __call__(self, sigma, a: torch.Tensor) -> torch.Tensor:
        lin = self.lin_at(sigma)
        if not self.augmented:
            return lin.vjp_y(a)
        gy, gp = lin.vjp(a[:, : self.n])
        flat = [
            torch.zeros(p.numel(), dtype=a.dtype, device=a.device) if d is None else d.reshape(-1)
            for p, d in zip(self.params, gp)
        ]
        return torch.cat([gy, torch.cat(flat).to(a.dtype)[None].expand(a.shape[0], -1)], dim=1)

    def jacobian_T(self, sigma) -> torch.Tensor:
        """``J(−σ)ᵀ`` [K, n, n] (the stage equations of an implicit adjoint method)."""
        return self.lin_at(sigma).jacobian().transpose(1, 2)

    def leave(self, keep=None) -> None:
        """Pull back what is owed at every point the solve is done with; the point
        ``keep`` (where the next step starts) stays."""
        kept = []
        key = None if keep is None else self._key(keep)
        for k, lin in self.points:
            if key is not None and self._same(k, key):
                kept.append((k, lin))
                continue
            if lin.pending is not None:
                for i, d in enumerate(lin.release()):
                    if d is None:
                        continue
                    # in place: one buffer per parameter for the whole backward pass
                    if self.gth[i] is None:
                        self.gth[i] = d
                    else:
                        self.gth[i].add_(d)
        self.points = kept

    def parameter_gradient(self, a: torch.Tensor) -> list:
        """``∂L/∂θ`` per parameter: the quadrature's, or the augmented channels of ``a``."""
        self.leave(None)
        if not self.augmented:
            return self.gth
        flat = a[0, self.n :]
        out, i = [], 0
        for p in self.params:
            out.append(flat[i : i + p.numel()].reshape(p.shape).to(p.dtype))
            i += p.numel()
        return out


def _stage_terms(tab) -> list:
    """``[(j, a_ij), ...]`` per stage over the *full* row of ``A`` (an implicit
    tableau's stage input sums over every stage), for :func:`stage_input`."""
    A = np.asarray(tab.A, dtype=float)
    S = tab.stages
    return [[(j, float(A[i, j])) for j in range(S) if A[i, j] != 0.0] for i in range(S)]


class Quadrature:
    """``∂L/∂θ = ∫ aᵀ ∂g/∂θ ds`` by the adjoint method's own weights, as a recorder of
    the step loop: on every accepted step, stage ``i`` owes ``(∂g/∂θ)ᵀ (b_i H A_i)``
    at its point, ``A_i = a + H Σ_j a_ij k_j`` its stage input (rows that rejected owe
    nothing).  Then the field leaves every point but the next step's start."""

    def __init__(self, field: AdjointField, tab):
        self.terms = _stage_terms(tab)
        self.b = [float(x) for x in tab.b]
        self.c = [float(x) for x in tab.c]
        self.field = field

    def append(self, item) -> None:  # the loop's plain record protocol: nothing to keep
        pass

    def on_step(self, s, h, y, trial, f0, f1, accept) -> None:
        field = self.field
        host = isinstance(h, float)
        all_acc = bool(accept) if host else bool(accept.all())
        any_acc = all_acc or bool(accept.any())
        if any_acc and field.params and not field.augmented:
            hy = h if host else h.to(y.dtype)[:, None]
            m = None if all_acc else accept.to(y.dtype)[:, None]
            ks = trial.ks
            for i, bi in enumerate(self.b):
                if bi == 0.0:
                    continue
                cot = stage_input(self.terms[i], y, hy, ks) * (hy * bi)
                if m is not None:
                    cot = cot * m
                si = s + self.c[i] * h if host else torch.add(s, h, alpha=self.c[i])
                field.lin_at(si).add_param_cotangent(cot)
        if all_acc:
            field.leave(s + h)
        elif not any_acc:
            field.leave(s)
        else:  # rows stand at different points now
            field.leave(None)


class ImplicitAdjoint:
    """The loop's method object for an implicit adjoint tableau.

    The adjoint is linear in ``a``, so its stage equations are a linear system:
    ``k_i = J_iᵀ (a + H Σ_j a_ij k_j)``, i.e. ``(I − H a_ij J_iᵀ) k = J_iᵀ a``, solved
    with the Jacobians at the stage points; the parameter channels of an augmented
    state follow from the stage inputs.
    """

    implicit = True
    newton = None
    has_state = False
    has_own_interpolant = False

    def __init__(self, tab, dtype, time_dtype, device):
        self.tableau = tab
        self.S = tab.stages
        self.c_list = [float(x) for x in tab.c]
        self.A = torch.as_tensor(np.asarray(tab.A, dtype=float), dtype=dtype, device=device)
        self.terms = _stage_terms(tab)
        self.track_grad = False
        self.weights = runtime(tab, dtype, time_dtype, device).weights  # cached tensors

    def step(self, g: AdjointField, s, y, h, f0) -> StepResult:
        K = y.shape[0]
        n, S = g.n, self.S
        a = y[:, :n]
        hy = h.to(y.dtype)[:, None]
        JT = [g.jacobian_T(torch.add(s, h, alpha=c)) for c in self.c_list]  # [K, n, n] each
        eye = torch.eye(n, dtype=y.dtype, device=y.device)
        blocks = []
        for i in range(S):
            row = [
                (eye if i == j else torch.zeros_like(eye))[None]
                - (self.A[i, j] * hy[:, :, None]) * JT[i]
                for j in range(S)
            ]
            blocks.append(torch.cat(row, dim=2))
        L = torch.cat(blocks, dim=1)  # [K, S n, S n]
        rhs = torch.cat([(JT[i] @ a[:, :, None])[:, :, 0] for i in range(S)], dim=1)
        ks = list(torch.linalg.solve(L, rhs).reshape(K, S, n).unbind(1))
        if y.shape[1] > n:  # the parameter channels: (∂g/∂θ)ᵀ A_i at every stage
            full = []
            for i in range(S):
                Ai = stage_input(self.terms[i], a, hy, ks)
                full.append(g(torch.add(s, h, alpha=self.c_list[i]), Ai)[:, n:])
            ks = [torch.cat([k, p], dim=1) for k, p in zip(ks, full)]
        y1, err = combine(self.weights, y, hy, torch.stack(ks))
        return StepResult(y1, err, torch.stack(ks), None, None)


def _step_data(run, tape: Tape, omap: OutputMap):
    """Yield ``(j, StepData)`` for every kept iteration ``j``, last first.

    Segment by segment (last first): with a cubic Hermite interpolant only the states
    are recomputed (once, from the segment's checkpoint) and the end slopes come from
    the adjoint's own linearizations; with a method's own interpolant the segment is
    replayed with its stages.  Only the current segment's states are held.
    """
    rk = run.rk
    own = rk.has_own_interpolant
    for i0, i1 in tape.segments():
        if rk.newton is not None:
            rk.newton.forget()
        if own:
            with torch.no_grad():
                _, _, steps, _ = replay(
                    run.g_count, rk, tape, omap, i0, i1, tape.ckpt[i0], dense=True
                )
            run.segments_replayed += 1
            for j in range(i1, i0, -1):
                yield j, steps[j - i0 - 1]
                steps.pop()
            continue
        ys = {i0: tape.ckpt[i0]}
        last = i1 - 1 if i1 in tape.ckpt else i1
        if last > i0:
            slots = tape.scratch(i1, last - i0)
            with torch.no_grad():
                ys.update(states(run.g_count, rk, tape, i0, last, tape.ckpt[i0], slots))
            run.segments_replayed += 1
        if i1 in tape.ckpt:
            ys[i1] = tape.ckpt[i1]
        S = tape.s
        for j in range(i1, i0, -1):
            h = S[j] - S[j - 1]
            yield j, StepData(S[j - 1], h, ys[j - 1], ys.pop(j), None, None, None, h > 0)


def adjoint_backward(run, grad_ys: torch.Tensor):
    """``(a(s_0) [K, n], [∂L/∂θ])`` for output cotangents ``grad_ys``.

    Forward step by forward step (last first), between the output times inside it
    (where ``∂L/∂y(s_i)`` is added to ``a``): one step of the adjoint method when it
    has no error estimate, else the one step loop (:func:`odenet._loop.integrate`)
    with the forward's controller, on the field :class:`AdjointField`.
    """
    tape: Tape = run.tape
    omap: OutputMap = run.omap
    s_out = run.s_out
    K, n = run.y0_rows.shape
    tab = run.adjoint_tableau
    dtype, tdt, dev = run.y0_rows.dtype, s_out.dtype, s_out.device
    field = AdjointField(
        run.g_lin,
        run.rk,
        run.params,
        run.counter,
        n=n,
        augmented=not run.seminorm,
        split=run.split_nodes,
    )
    quad = Quadrature(field, tab)
    if tab.is_implicit:
        method = ImplicitAdjoint(tab, dtype, tdt, dev)
    else:
        method = runtime(tab, dtype, tdt, dev)
    a = torch.zeros_like(run.y0_rows)
    if field.augmented:
        P = sum(p.numel() for p in field.params)
        a = torch.cat([a, a.new_zeros(K, P)], dim=1)
    if tab.is_adaptive and tab.b_hat is not None:
        march, host = _Looped(field, quad, method, run), False
    else:
        host = K == 1 and not tab.is_implicit  # times as Python floats
        march = _Stepwise(
            field, quad, method, host, run.adjoint_callback, run.adjoint_steps.get("step_size")
        )
    rows = torch.arange(K, device=dev)
    S_host = tape.s[:, 0].tolist() if host else None
    times = s_out[0].tolist() if host else None
    for j, data in _step_data(run, tape, omap):
        host = None if S_host is None else (S_host[j - 1], S_host[j] - S_host[j - 1])
        field.at(data, host)
        p = tape.s[j] if S_host is None else S_host[j]
        for mask, idx, _, at_end in reversed(omap.rounds.get(j, ())):
            # (an output a rounding past the step's end, within the loop's snap, is
            # taken at the end: the backward march never goes forward)
            if S_host is not None:
                q = p if bool(at_end[0]) else min(times[int(idx[0])], p)
            else:
                q = torch.where(mask & ~at_end, torch.minimum(s_out[rows, idx], p), p)
            p, a = march(p, q, a)
            inj = torch.where(mask[:, None], grad_ys[rows, idx], torch.zeros_like(grad_ys[:, 0]))
            a = torch.cat([a[:, :n] + inj, a[:, n:]], dim=1) if field.augmented else a + inj
        p, a = march(p, tape.s[j - 1] if S_host is None else S_host[j - 1], a)
    run.backward_accepted, run.backward_rejected = march.counts(K, dev)
    gth = field.parameter_gradient(a)
    _check_gradients(tab, grad_ys, a, gth, getattr(march, "growth", None))
    return a[:, :n], gth


# a backward step of an explicit method that amplifies the adjoint more than this is
# outside any regime where the method is accurate: |R(hλ)| ≤ e^|hλ|, so |hλ| ≥ 11.5,
# where every explicit method up to order 8 is off by ≥ 50 %
GARBAGE_GROWTH = 1e5


def _check_gradients(tab, grad_ys, a, gth, growth) -> None:
    # a one-step explicit adjoint on a stiff problem leaves its stability region and
    # returned NaN or 1e256 gradients quietly; the forward's loop would have said so,
    # so the backward says so too (the adaptive loop fails with its own status)
    if not bool(torch.isfinite(grad_ys).all()):
        return  # the loss is already non-finite: not the adjoint's doing
    nonfinite = not bool(torch.isfinite(a).all()) or any(
        g is not None and not bool(torch.isfinite(g).all()) for g in gth
    )
    blown = not tab.is_implicit and growth is not None and float(growth) > GARBAGE_GROWTH
    if nonfinite or blown:
        from odenet._errors import NonFiniteError

        what = (
            "returned NaN/inf gradients"
            if nonfinite
            else f"amplified the adjoint by {float(growth):.3g} in one step (its gradient is noise)"
        )
        raise NonFiniteError(
            f"the adjoint solve with adjoint_method={tab.name!r} {what}, although the "
            "forward succeeded and the outputs' cotangents are finite. Either its backward "
            "steps are outside the method's stability region (a stiff problem: use an "
            "implicit `adjoint_method` such as 'kvaerno5', an adaptive one, a smaller "
            "`adjoint_step_size`, or sensitivity='checkpoint'), or the field's derivative "
            "is not finite along the solution (e.g. sqrt at 0)."
        )


class _Stepwise:
    """An adjoint method without an error estimate: one step from ``p`` down to ``q``
    (internal time), ``σ = −p`` forward by ``H = p − q``; with ``step_size``,
    ``⌈H / step_size⌉`` equal steps."""

    def __init__(
        self, field: AdjointField, quad: Quadrature, method, host: bool, callback, step_size=None
    ):
        self.field, self.quad, self.method, self.host = field, quad, method, host
        self.callback = callback
        self.steps = 0
        self.step_size = step_size
        self.growth = None  # the largest one-step amplification of the adjoint

    def __call__(self, p, q, a):
        # adjoint_step_size, torchdiffeq's
        # adjoint_options["step_size"]: no backward step longer than it (a span that is a
        # multiple of it is cut where torchdiffeq's backward grid has its nodes)
        m = 1
        if self.step_size is not None:
            span = p - q if self.host else float((p - q).max())
            m = max(1, math.ceil(span / self.step_size * (1 - 1e-12)))
        if m == 1:
            return self._one(p, q, a)
        p0 = p
        for j in range(1, m + 1):
            p, a = self._one(p, q if j == m else p0 - (p0 - q) * (j / m), a)
        return p, a

    def _one(self, p, q, a):
        if self.host and p - q <= 64 * self.field.eps * max(abs(p), abs(q), 1.0):
            return q, a
        if self.callback is not None:
            sig, H = (-p, p - q) if isinstance(p, torch.Tensor) else _tensors(-p, p - q)
            self.callback("step", sig, a, H, None)
        p, a = self._step(p, q, a)
        if self.callback is not None:
            self.callback("verdict", sig, a, H, torch.ones(sig.shape, dtype=torch.bool))
        return p, a

    def _step(self, p, q, a):
        sigma, H = -p, p - q
        f0 = self.field(sigma, a)
        if self.host:  # Python-float times: the host layout of the same step
            a1, ks, _, _ = self.method.step_one(self.field, sigma, a, H, f0)
            self.quad.on_step(sigma, H, a, _Stages(ks), f0, None, True)
        else:
            out = self.method.step(self.field, sigma, a, H, f0)
            a1 = out.y1
            self.quad.on_step(sigma, H, a, out, f0, None, torch.ones_like(H, dtype=torch.bool))
        self.steps += 1
        self._track_growth(a, a1)
        return q, a1

    def _track_growth(self, a, a1) -> None:
        # one step's amplification of the adjoint (state channels): an explicit step
        # that multiplies it by more than GARBAGE_GROWTH has |hλ| far past where any
        # explicit method is accurate, so its gradient is noise even when still finite
        n = self.field.n
        before = torch.linalg.vector_norm(a[:, :n], dim=1)
        after = torch.linalg.vector_norm(a1[:, :n], dim=1)
        g = torch.where(before > 0, after / before.clamp_min(torch.finfo(a.dtype).tiny), 0.0)
        g = torch.nan_to_num(g, nan=math.inf).max()
        self.growth = g if self.growth is None else torch.maximum(self.growth, g)

    def counts(self, K, dev):
        acc = torch.full((K,), self.steps, dtype=torch.long, device=dev)
        return acc, torch.zeros_like(acc)


def _tensors(sigma: float, H: float):
    return (torch.tensor([sigma], dtype=torch.float64), torch.tensor([H], dtype=torch.float64))


class _Stages:
    __slots__ = ("ks",)

    def __init__(self, ks):
        self.ks = ks


def _pad_tolerance(tol, n: int, extra: int):
    """A tolerance per state component ``[..., n]`` -> ``[..., n + extra]``, the
    ``extra`` channels at its smallest value; numbers and broadcasting shapes unchanged."""
    if not isinstance(tol, torch.Tensor) or tol.dim() == 0 or tol.shape[-1] != n or n == 1:
        return tol
    low = tol.amin(dim=-1, keepdim=True).expand(*tol.shape[:-1], extra)
    return torch.cat([tol, low], dim=-1)


class _Looped:
    """An adjoint method with an error estimate: the one step loop from ``σ = −p`` to
    ``−q`` per row, with the forward's controller; the step size proposed at the end
    of one stretch starts the next."""

    def __init__(self, field: AdjointField, quad: Quadrature, method, run):
        cfg = run.prep.cfg
        self.field, self.quad = field, quad
        # the backward pass's own step controls
        # (adjoint_first_step, adjoint_max_step, ...: torchdiffeq's adjoint_options)
        own = run.adjoint_steps
        self.cfg = LoopConfig(
            rk=method,
            rtol=run.adjoint_rtol,
            atol=run.adjoint_atol,
            step_size=None,
            max_steps=own.get("max_steps", cfg.max_steps),
            first_step=None,  # set per stretch
            min_step=own.get("min_step", 0.0),
            max_step=own.get("max_step", math.inf),
            controller=own.get("controller") or cfg.controller or PIDController(),
            norm=run.adjoint_norm,
            callback=run.adjoint_callback,
            accept_min_step="min_step" in own,
        )
        self.first_step = own.get("first_step")
        # a per-component rtol/atol [K, n] is the state's; the
        # parameter channels of an augmented adjoint [a, θ̄] take its strictest entry
        # (a tuple rtol under odeint_adjoint raised a raw shape error here)
        if field.augmented:
            extra = sum(p.numel() for p in field.params)
            self.cfg.rtol = _pad_tolerance(self.cfg.rtol, field.n, extra)
            self.cfg.atol = _pad_tolerance(self.cfg.atol, field.n, extra)
        self.accepted = self.rejected = self.h = None

    def __call__(self, p, q, a):
        span = p - q
        if bool((span <= 64 * self.field.eps * p.abs().clamp_min(1.0)).all()):
            return q, a  # an output at the step's end: nothing to integrate
        s_out = torch.stack([-p, -q], dim=1)  # [K, 2]: σ increasing
        # the step the last stretch proposed; at first the whole stretch, subdivided
        # by the controller
        first = span if self.h is None else torch.where(self.h > 0, self.h, span)
        if self.h is None and self.first_step is not None:
            first = span.clamp(max=self.first_step)
        self.cfg.first_step = torch.where(first > 0, first, torch.ones_like(first))
        res = integrate(self.field, s_out, a, self.cfg, record=self.quad)
        if not bool((res.status == SUCCESS).all()):
            _raise_adjoint_failure(res, p)
        self.h = res.h_last
        acc, rej = res.accepted, res.rejected
        self.accepted = acc if self.accepted is None else self.accepted + acc
        self.rejected = rej if self.rejected is None else self.rejected + rej
        return q, res.ys[:, -1]

    def counts(self, K, dev):
        if self.accepted is None:
            zero = torch.zeros(K, dtype=torch.long, device=dev)
            return zero, zero.clone()
        return self.accepted, self.rejected


# the backward pass's own step options
ADJOINT_STEP_OPTIONS = {
    "adjoint_step_size": "step_size",
    "adjoint_first_step": "first_step",
    "adjoint_max_step": "max_step",
    "adjoint_min_step": "min_step",
    "adjoint_max_steps": "max_steps",
    "adjoint_controller": "controller",
}


def adjoint_step_options(opts: dict, tab) -> dict:
    """The ``adjoint_*`` step options of a solve, checked -> ``{step_size, first_step,
    max_step, min_step, max_steps, controller}`` (only those given).  ``step_size``
    belongs to an adjoint method without an error estimate (``tab``), the others to
    one with: the wrong kind raises, so that none is silently ignored."""
    from odenet._controller import controller_from
    from odenet._errors import InputError
    from odenet._validate import check_nonnegative, check_positive

    out = {}
    for name, key in ADJOINT_STEP_OPTIONS.items():
        v = opts.get(name)
        if v is None:
            continue
        if key == "controller":
            out[key] = controller_from(v)
        elif key == "min_step":
            if check_nonnegative(name, v) > 0:
                out[key] = float(v)
        elif key == "max_steps":
            out[key] = check_positive(name, v, integer=True)
        else:
            out[key] = check_positive(name, v)
    adaptive = tab.is_adaptive and tab.b_hat is not None
    wrong = ["adjoint_step_size"] if adaptive and "step_size" in out else []
    if not adaptive:
        wrong = [n for n, k in ADJOINT_STEP_OPTIONS.items() if k in out and k != "step_size"]
    if wrong:
        kind = "adaptive" if adaptive else "fixed-step"
        raise InputError(
            f"{wrong} do not apply to the backward pass's {kind} method {tab.name!r}: "
            + (
                "it controls its steps by its error estimate (give adjoint_max_step instead)."
                if adaptive
                else "it takes one step per forward step, or adjoint_step_size-long ones."
            )
        )
    return out


def _raise_adjoint_failure(res, p) -> None:
    k0 = int((res.status != SUCCESS).nonzero()[0, 0])
    status = Status(int(res.status[k0]))
    s_at = -float(res.t_reached[k0])
    hint = (
        "loosen `adjoint_rtol`/`adjoint_atol`, or use an implicit `adjoint_method` for stiff "
        "problems, or sensitivity='checkpoint'."
    )
    raise status.error(
        f"the adjoint solve failed at internal time s = {s_at:.6g} (row {k0}): "
        f"{status.message}; {hint}",
        t=s_at,
    )
