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

from odenet._errors import StepSizeUnderflowError
from odenet._ops import TensorOps
from odenet._stepper import hermite_basis
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
        return list(torch.autograd.grad(self.out, self.params, cot, allow_unused=True))

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


class AdjointStepper:
    """One backward step ``s → s − H`` of the adjoint with a Runge–Kutta tableau.

    In reversed time ``σ = −s`` the adjoint is ``da/dσ = Jᵀ a``.  With ``κ_i = H Jᵢᵀ Aᵢ``
    (``Jᵢ`` at ``s − c_i H``) and ``Aᵢ = a + Σ_j A_ij κ_j``: ``a⁺ = a + Σ b_i κ_i``;
    the parameter quadrature adds ``Σ b_i (∂g/∂θ)ᵀ (H Aᵢ)``.  Implicit tableaux solve
    the (linear) stage equations with explicit Jacobians.

    ``deferred=True`` (the seminorm, explicit tableaux): the stages take products
    with respect to ``y`` only and the parameter cotangents are left to the caller,
    who adds the accepted ones to their linearization and pulls them back once per
    evaluation point.
    """

    def __init__(self, tab, rk_fwd, g, params, counter: Counter, deferred: bool):
        self.tab = tab
        self.rk = rk_fwd
        self.g = g
        self.params = params
        self.counter = counter
        self.S = tab.stages
        self.A = np.asarray(tab.A, dtype=float)
        self.b = [float(x) for x in tab.b]
        self.c = [float(x) for x in tab.c]
        self.e = None if tab.b_hat is None else [float(x) for x in (tab.b - tab.b_hat)]
        # an embedded pair subdivides the adjoint step by its own error control; a
        # method whose estimator is not a tableau row (RADAU5's) steps with the forward
        self.adaptive = tab.is_adaptive and tab.b_hat is not None
        self.implicit = tab.is_implicit
        self.deferred = deferred and not self.implicit
        self.error_order = tab.error_order if self.adaptive else tab.order
        # the step's ends first: their values are the interpolant's end slopes
        self.order = sorted(set(self.c), key=lambda ci: ci not in (0.0, 1.0))
        self.rows = [
            [(j, float(self.A[i, j])) for j in range(i) if self.A[i, j]] for i in range(self.S)
        ]
        self.eps = torch.finfo(torch.float64).eps

    def _theta(self, data: StepData, tau: torch.Tensor):
        """Fraction of the forward step at ``tau`` [K], and whether it is (for every
        row) the step's start (0) or end (1), else None."""
        h_div = torch.where(data.h == 0, torch.ones_like(data.h), data.h)
        # not clamped: a stage abscissa c > 1 (kvaerno5 has c = 1.23) lies outside the
        # step, where the interpolant is extrapolated; clamping it would linearize at
        # the wrong state and cost the adjoint its order
        theta = (tau - data.s) / h_div
        tol = 64 * torch.finfo(theta.dtype).eps
        if bool((theta.abs() <= tol).all()):
            return theta, 0
        if bool(((theta - 1).abs() <= tol).all()):
            return theta, 1
        return theta, None

    def linearize(self, data: StepData, tau: torch.Tensor) -> Linearization:
        theta, end = self._theta(data, tau)
        # the states at the step ends live in shared blocks of slots (one version
        # counter for all, see Tape._put): the graph gets its own copy
        if end == 0:
            lin = Linearization(self.g, tau, data.y.clone(), self.params, self.counter)
            data.f0 = lin.f if data.f0 is None else data.f0
        elif end == 1:
            lin = Linearization(self.g, tau, data.y1.clone(), self.params, self.counter)
            data.f1 = lin.f if data.f1 is None else data.f1
        else:
            with torch.no_grad():
                y = data.at(self.rk, theta, self._plain)
            lin = Linearization(self.g, tau, y, self.params, self.counter)
        return lin

    def _plain(self, s, y):
        # an end slope the Hermite interpolant needs and no linearization supplied
        self.counter.nfe += 1
        return self.g(s, y)

    def step(self, p, H, a, data: StepData, carry: Linearization | None):
        """Returns ``(a_new, err_a, dθ, err_θ, stage_cotangents, lins)`` (``dθ``,
        ``err_θ`` lists of None when deferred)."""
        Hy = H.to(a.dtype)[:, None]
        lins: dict[float, Linearization] = {}
        if carry is not None:
            lins[0.0] = carry
            _, end = self._theta(data, p)
            if end == 1 and data.f1 is None:
                data.f1 = carry.f
            elif end == 0 and data.f0 is None:
                data.f0 = carry.f
        for ci in self.order:
            if ci not in lins:
                lins[ci] = self.linearize(data, p - ci * H)
        kap: list[torch.Tensor] = []
        cots: list[torch.Tensor] = []
        dth = [None] * len(self.params)
        eth = [None] * len(self.params)
        if not self.implicit:
            for i in range(self.S):
                Ai = a
                for j in range(i):
                    if self.A[i, j] != 0.0:
                        Ai = Ai + self.A[i, j] * kap[j]
                cot = Hy * Ai
                if self.deferred:
                    k_i = lins[self.c[i]].vjp_y(cot)
                else:
                    k_i, p_i = lins[self.c[i]].vjp(cot)
                    dth = _add(dth, p_i, self.b[i])
                    if self.e is not None:
                        eth = _add(eth, p_i, self.e[i])
                kap.append(k_i)
                cots.append(cot)
        else:
            kap, cots, dth, eth = self._implicit_stages(a, Hy, lins)
        a_new = a
        err = torch.zeros_like(a) if self.e is not None else None
        for i in range(self.S):
            if self.b[i] != 0.0:
                a_new = a_new + self.b[i] * kap[i]
            if self.e is not None and self.e[i] != 0.0:
                err = err + self.e[i] * kap[i]
        return a_new, err, dth, eth, cots, lins

    # --- one system, fixed adjoint steps: times as Python floats ---------------------
    def _lin_host(self, data: StepData, sh: float, hh: float, tau: float) -> Linearization:
        theta = (tau - sh) / hh
        tol = 64 * self.eps
        tau_t = data.s.new_full((1,), tau)
        if abs(theta) <= tol:
            lin = Linearization(self.g, tau_t, data.y.clone(), self.params, self.counter)
            data.f0 = lin.f if data.f0 is None else data.f0
        elif abs(theta - 1) <= tol:
            lin = Linearization(self.g, tau_t, data.y1.clone(), self.params, self.counter)
            data.f1 = lin.f if data.f1 is None else data.f1
        elif self.rk.has_own_interpolant:
            with torch.no_grad():
                y = data.at(self.rk, data.s.new_full((1,), theta))
            lin = Linearization(self.g, tau_t, y, self.params, self.counter)
        else:  # the cubic Hermite with host weights: four fused adds
            with torch.no_grad():
                if data.f0 is None:
                    data.f0 = self._plain(data.s, data.y)
                if data.f1 is None:
                    data.f1 = self._plain(data.s + data.h, data.y1)
                h00, h10, h01, h11 = hermite_basis(theta)
                y = data.y * h00
                y = y.add(data.f0, alpha=h10 * hh)
                y = y.add(data.y1, alpha=h01)
                y = y.add(data.f1, alpha=h11 * hh)
            lin = Linearization(self.g, tau_t, y, self.params, self.counter)
        return lin

    def step_host(self, p: float, H: float, a, data: StepData, sh: float, hh: float, carry):
        """An explicit, deferred step of one system (``K = 1``) from ``p`` to ``p − H``;
        returns ``(a_new, stage_cotangents, lins)``."""
        lins: dict[float, Linearization] = {}
        if carry is not None:
            lins[0.0] = carry
            theta = (p - sh) / hh
            if theta >= 1 - 64 * self.eps and data.f1 is None:
                data.f1 = carry.f
            elif theta <= 64 * self.eps and data.f0 is None:
                data.f0 = carry.f
        for ci in self.order:
            if ci not in lins:
                lins[ci] = self._lin_host(data, sh, hh, p - ci * H)
        kap: list[torch.Tensor] = []
        cots: list[torch.Tensor] = []
        for i in range(self.S):
            Ai = a
            for j, aij in self.rows[i]:
                Ai = torch.add(Ai, kap[j], alpha=aij)
            cot = Ai * H
            kap.append(lins[self.c[i]].vjp_y(cot))
            cots.append(cot)
        a_new = a
        for i, bi in enumerate(self.b):
            if bi != 0.0:
                a_new = torch.add(a_new, kap[i], alpha=bi)
        return a_new, cots, lins

    def _implicit_stages(self, a, Hy, lins):
        K, n = a.shape
        S = self.S
        JT = [lins[c].jacobian().transpose(1, 2) for c in self.c]  # [K, n, n] each
        A = torch.as_tensor(self.A, dtype=a.dtype, device=a.device)
        eye = torch.eye(n, dtype=a.dtype, device=a.device)
        blocks = []
        for i in range(S):
            row = [
                (eye if i == j else torch.zeros_like(eye))[None]
                - (A[i, j] * Hy[:, :, None]) * JT[i]
                for j in range(S)
            ]
            blocks.append(torch.cat(row, dim=2))
        L = torch.cat(blocks, dim=1)  # [K, S n, S n]
        rhs = torch.cat([Hy * (JT[i] @ a[:, :, None])[:, :, 0] for i in range(S)], dim=1)
        kap_all = torch.linalg.solve(L, rhs).reshape(K, S, n)
        kap = list(kap_all.unbind(1))
        cots, dth, eth = [], [None] * len(self.params), [None] * len(self.params)
        for i in range(S):
            Ai = a + sum(float(self.A[i, j]) * kap[j] for j in range(S))
            cot = Hy * Ai
            cots.append(cot)
            _, p_i = lins[self.c[i]].vjp(cot)
            dth = _add(dth, p_i, self.b[i])
            if self.e is not None:
                eth = _add(eth, p_i, self.e[i])
        return kap, cots, dth, eth


class AdjointSolver:
    """Integrates ``a`` and the parameter gradient ``gth`` backward over the tape."""

    def __init__(
        self, stepper: AdjointStepper, controller, rtol, atol, seminorm: bool, K: int, dev, tdt
    ):
        self.st = stepper
        # the forward's controller decides the adjoint's steps too: one rule set
        self.ctrl = controller
        self.memory = controller.init_memory(TensorOps, torch.zeros(K, dtype=tdt, device=dev))
        self.rtol = rtol
        self.atol = atol
        self.seminorm = seminorm
        self.H = torch.full((K,), math.inf, dtype=tdt, device=dev)
        self.eps = torch.finfo(tdt).eps
        self.accepted = torch.zeros(K, dtype=torch.long, device=dev)
        self.rejected = torch.zeros(K, dtype=torch.long, device=dev)
        self.carry: Linearization | None = None
        self.gth: list = [None] * len(stepper.params)
        self.n_host = 0  # steps taken by solve_host (all accepted)

    def _ratio(self, a, a_new, err, gth, gth_new, eth):
        scale = self.atol + self.rtol * torch.maximum(a.abs(), a_new.abs())
        sq = (err / scale).pow(2).sum(dim=1)
        count = a.shape[1]
        if not self.seminorm:  # K == 1: the parameter channels join the norm
            for g0, g1, e in zip(gth, gth_new, eth):
                if e is None:
                    continue
                g0 = torch.zeros_like(e) if g0 is None else g0
                g1 = torch.zeros_like(e) if g1 is None else g1
                sc = self.atol + self.rtol * torch.maximum(g0.abs(), g1.abs())
                sq = sq + (e / sc).pow(2).sum()
                count += e.numel()
        return (sq / count).sqrt()

    def _leave(self, lins: dict, keep: Linearization | None) -> None:
        """Pull back what is owed at every point the solve is done with."""
        for lin in {id(x): x for x in lins.values()}.values():
            if lin is not keep and lin.pending is not None:
                for i, d in enumerate(lin.release()):
                    if d is None:
                        continue
                    # in place: one buffer per parameter for the whole backward pass
                    if self.gth[i] is None:
                        self.gth[i] = d
                    else:
                        self.gth[i].add_(d)

    def finish(self) -> None:
        if self.carry is not None:
            self._leave({0.0: self.carry}, None)
        self.carry = None

    def solve_host(self, p: float, q: float, a, data: StepData, sh: float, hh: float):
        """:meth:`solve` for one system and a fixed-step explicit tableau, deferred."""
        if p - q <= 64 * self.eps * max(abs(p), abs(q)):
            return q, a
        st = self.st
        a, cots, lins = st.step_host(p, p - q, a, data, sh, hh, self.carry)
        for i, cot in enumerate(cots if st.params else ()):
            if st.b[i] != 0.0:
                lins[st.c[i]].add_param_cotangent(cot * st.b[i])
        keep = lins.get(1.0)
        self._leave(lins, keep)
        self.carry = keep
        self.n_host += 1
        return q, a

    def solve(self, p, q, a, data: StepData):
        """Integrate from ``p`` down to ``q`` (per row, ``q ≤ p``) inside one forward step."""
        st = self.st
        snap = 64 * self.eps * torch.maximum(p.abs(), q.abs())
        while True:
            rem = p - q
            done = rem <= snap
            if bool(done.all()):
                return torch.where(done, q, p), a
            if st.adaptive:
                H = torch.minimum(self.H, rem)
                to_end = H >= rem - snap
                H = torch.where(to_end, rem, H)
            else:
                H = rem
                to_end = torch.ones_like(done)
            H = torch.where(done, torch.zeros_like(H), H)
            a_new, err, dth, eth, cots, lins = st.step(p, H, a, data, self.carry)
            gth_new = self.gth if st.deferred else _add(self.gth, dth)
            if st.adaptive:
                ratio = self._ratio(a, a_new, err, self.gth, gth_new, eth).to(H.dtype)
                accept, H_next, memory = self.ctrl.judge(
                    TensorOps, H, ratio, None, self.memory, st.error_order
                )
                accept = accept | done
            else:
                ratio = None
                accept = torch.ones_like(done)
            active = ~done
            all_acc = bool(accept.all())
            any_acc = all_acc or bool((accept & active).any())
            if all_acc:
                a = a_new
                keep = lins.get(1.0)
            elif not any_acc:
                keep = lins.get(0.0)  # still at p
            else:
                a = torch.where(accept[:, None], a_new, a)
                keep = None
            if st.deferred and any_acc:
                m = None if all_acc else accept.to(a.dtype)[:, None]
                for i, cot in enumerate(cots):
                    if st.b[i] != 0.0:
                        w = cot * st.b[i] if m is None else cot * (st.b[i] * m)
                        lins[st.c[i]].add_param_cotangent(w)
            elif all_acc:
                self.gth = gth_new
            elif any_acc:
                m = accept.to(a.dtype)[:, None]
                for i, cot in enumerate(cots):
                    if st.b[i] != 0.0:
                        _, p_i = lins[st.c[i]].vjp(cot * m)
                        self.gth = _add(self.gth, p_i, st.b[i])
            self._leave(lins, keep)
            self.carry = keep
            p = torch.where(accept & active, torch.where(to_end, q, p - H), p)
            self.accepted += (accept & active).long()
            self.rejected += (~accept & active).long()
            if st.adaptive:
                self.H = torch.where(active, H_next, self.H)
                self.memory = tuple(
                    torch.where(active, new, old) for new, old in zip(memory, self.memory)
                )
                min_h = self.ctrl.min_step(TensorOps, p.clamp_min(1.0), self.eps, 0.0)
                bad = active & ~accept & (self.H < min_h)
                if bool(bad.any()):
                    k0 = int(bad.nonzero()[0, 0])
                    raise StepSizeUnderflowError(
                        f"the adjoint solve's step size underflowed at internal time "
                        f"s = {float(p[k0]):.6g} (row {k0}); loosen `adjoint_rtol`/"
                        "`adjoint_atol`, or use an implicit `adjoint_method` for stiff "
                        "problems, or sensitivity='checkpoint'.",
                        t=float(p[k0]),
                    )


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
                _, _, steps = replay(run.g_count, rk, tape, omap, i0, i1, tape.ckpt[i0], dense=True)
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
    """``(a(s_0) [K, n], [∂L/∂θ])`` for output cotangents ``grad_ys``."""
    tape: Tape = run.tape
    omap: OutputMap = run.omap
    s_out = run.s_out
    K = s_out.shape[0]
    counter = run.counter
    deferred = run.seminorm
    stepper = AdjointStepper(run.adjoint_tableau, run.rk, run.g_lin, run.params, counter, deferred)
    solver = AdjointSolver(
        stepper,
        run.prep.cfg.controller,
        run.adjoint_rtol,
        run.adjoint_atol,
        run.seminorm,
        K,
        s_out.device,
        s_out.dtype,
    )
    a = torch.zeros_like(run.y0_rows)
    if K == 1 and stepper.deferred and not stepper.adaptive:
        S = tape.s[:, 0].tolist()
        times = s_out[0].tolist()
        for j, data in _step_data(run, tape, omap):
            p, sh, hh = S[j], S[j - 1], S[j] - S[j - 1]
            for _, idx, _, at_end in reversed(omap.rounds.get(j, ())):
                i = int(idx[0])
                p, a = solver.solve_host(p, p if bool(at_end[0]) else times[i], a, data, sh, hh)
                a = a + grad_ys[:, i]
            p, a = solver.solve_host(p, sh, a, data, sh, hh)
        solver.finish()
        run.backward_accepted = solver.accepted + solver.n_host
        run.backward_rejected = solver.rejected
        return a, solver.gth
    rows = torch.arange(K, device=a.device)
    for j, data in _step_data(run, tape, omap):
        p = tape.s[j]
        for mask, idx, _, at_end in reversed(omap.rounds.get(j, ())):
            t_ev = s_out[rows, idx]
            q = torch.where(mask & ~at_end, t_ev, p)
            p, a = solver.solve(p, q, a, data)
            inj = torch.where(mask[:, None], grad_ys[rows, idx], torch.zeros_like(a))
            a = a + inj
        p, a = solver.solve(p, tape.s[j - 1], a, data)
    solver.finish()
    run.backward_accepted = solver.accepted
    run.backward_rejected = solver.rejected
    return a, solver.gth
