"""The continuous adjoint, solved backward against the forward's dense output.

In internal time ``s`` (increasing), with ``y' = g(s, y; θ)`` and a loss ``L`` of
the outputs ``y(s_i)``, the adjoint ``a(s) = ∂L/∂y(s)`` solves

    a' = −(∂g/∂y)ᵀ a,      a(s_i⁻) = a(s_i⁺) + ∂L/∂y(s_i),
    ∂L/∂θ = ∫ aᵀ ∂g/∂θ ds,  ∂L/∂y0 = a(s_0),
    ∂L/∂s_i = ⟨∂L/∂y(s_i), g(s_i, y_i)⟩ (i ≥ 1),  ∂L/∂s_0 = −⟨a(s_0), g(s_0, y_0)⟩.

Backward, segment by segment (last first), the forward is *replayed* from the
segment's checkpoint without autograd and its dense output kept; then ``a`` and the
parameter quadrature are integrated backward over each forward step with a
Runge–Kutta method (``adjoint_method``, default the forward's), the state at each
stage time taken from the forward's interpolant — never from a backward re-solve
of ``y``, which is what makes the textbook backsolve blow up on contracting
dynamics.  The adjoint step starts as the forward step and is subdivided by its
own error control when the method is adaptive; parameter channels are left out of
the error norm (the *seminorm* of Kidger, Chen & Lyons 2021) unless
``adjoint_seminorm=False``.

Costs per forward step: the replay (one forward step without graph) plus, per
adjoint step, one field evaluation *with* graph per distinct stage time (stages at
equal times, and the last stage of a step with the first of the next, share one)
and one vector–Jacobian product per stage.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from odenet._errors import StepSizeUnderflowError
from odenet.sensitivity._tape import OutputMap, StepData, Tape, replay


class Counter:
    def __init__(self):
        self.nfe = 0
        self.vjp = 0


class Linearization:
    """``g`` evaluated with a graph at ``(τ, y)``: vector–Jacobian products on demand."""

    def __init__(self, g, tau, y, params, counter: Counter):
        with torch.enable_grad():
            self.y = y.detach().requires_grad_(True)
            self.out = g(tau, self.y)
        self.params = params
        self.counter = counter
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
    """

    def __init__(self, tab, rk_fwd, g, params, counter: Counter):
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
        self.adaptive = tab.is_adaptive
        self.implicit = tab.is_implicit
        self.error_order = tab.error_order if self.adaptive else tab.order

    def linearize(self, data: StepData, tau: torch.Tensor) -> Linearization:
        h_div = torch.where(data.h == 0, torch.ones_like(data.h), data.h)
        theta = ((tau - data.s) / h_div).clamp(0, 1)
        with torch.no_grad():
            y = data.at(self.rk, theta)
        return Linearization(self.g, tau, y, self.params, self.counter)

    def step(self, p, H, a, data: StepData, carry: Linearization | None):
        """Returns ``(a_new, err_a, dθ, err_θ, stage_cotangents, lins)``."""
        Hy = H.to(a.dtype)[:, None]
        lins: dict[float, Linearization] = {}
        if carry is not None:
            lins[0.0] = carry
        for ci in self.c:
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
                k_i, p_i = lins[self.c[i]].vjp(cot)
                kap.append(k_i)
                cots.append(cot)
                dth = _add(dth, p_i, self.b[i])
                if self.e is not None:
                    eth = _add(eth, p_i, self.e[i])
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
    """Integrates ``a`` and the parameter gradient backward over the whole tape."""

    def __init__(self, stepper: AdjointStepper, rtol, atol, seminorm: bool, K: int, dev, tdt):
        self.st = stepper
        self.rtol = rtol
        self.atol = atol
        self.seminorm = seminorm
        self.H = torch.full((K,), math.inf, dtype=tdt, device=dev)
        self.eps = torch.finfo(tdt).eps
        self.accepted = torch.zeros(K, dtype=torch.long, device=dev)
        self.rejected = torch.zeros(K, dtype=torch.long, device=dev)
        self.carry: Linearization | None = None

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

    def solve(self, p, q, a, gth, data: StepData):
        """Integrate from ``p`` down to ``q`` (per row, ``q ≤ p``) inside one forward step."""
        st = self.st
        snap = 64 * self.eps * torch.maximum(p.abs(), q.abs())
        while True:
            rem = p - q
            done = rem <= snap
            if bool(done.all()):
                return torch.where(done, q, p), a, gth
            if st.adaptive:
                H = torch.minimum(self.H, rem)
                to_end = H >= rem - snap
                H = torch.where(to_end, rem, H)
            else:
                H = rem
                to_end = torch.ones_like(done)
            H = torch.where(done, torch.zeros_like(H), H)
            a_new, err, dth, eth, cots, lins = st.step(p, H, a, data, self.carry)
            gth_new = _add(gth, dth)
            if st.adaptive:
                ratio = self._ratio(a, a_new, err, gth, gth_new, eth)
                ratio = torch.where(torch.isfinite(ratio), ratio, torch.full_like(ratio, math.inf))
                accept = (ratio <= 1) | done
            else:
                ratio = None
                accept = torch.ones_like(done)
            active = ~done
            all_acc = bool(accept.all())
            if all_acc:
                a, gth = a_new, gth_new
                self.carry = lins.get(1.0)
            elif not bool((accept & active).any()):
                self.carry = lins.get(0.0)  # still at p
            else:
                a = torch.where(accept[:, None], a_new, a)
                m = accept.to(a.dtype)[:, None]
                for i, cot in enumerate(cots):
                    if st.b[i] != 0.0:
                        _, p_i = lins[st.c[i]].vjp(cot * m)
                        gth = _add(gth, p_i, st.b[i])
                self.carry = None
            p = torch.where(accept & active, torch.where(to_end, q, p - H), p)
            self.accepted += (accept & active).long()
            self.rejected += (~accept & active).long()
            if st.adaptive:
                k = st.error_order + 1
                r = ratio.clamp_min(torch.finfo(ratio.dtype).tiny)
                factor = (0.9 * r ** (-1.0 / k)).clamp(0.2, 10.0)
                factor = torch.where(accept, factor, factor.clamp_max(1.0)).to(H.dtype)
                factor = torch.nan_to_num(factor, nan=0.2)
                self.H = torch.where(active, H * factor, self.H)
                tiny = 16 * self.eps * p.abs().clamp_min(1.0)
                bad = active & ~accept & (self.H < tiny)
                if bool(bad.any()):
                    k0 = int(bad.nonzero()[0, 0])
                    raise StepSizeUnderflowError(
                        f"the adjoint solve's step size underflowed at internal time "
                        f"s = {float(p[k0]):.6g} (row {k0}); loosen `adjoint_rtol`/"
                        "`adjoint_atol`, or use an implicit `adjoint_method` for stiff "
                        "problems, or sensitivity='checkpoint'.",
                        t=float(p[k0]),
                    )


def _sub_segments(run, tape: Tape, omap: OutputMap):
    """Yield ``(start, end)`` of sub-segments, last first, keeping their start states
    in ``run.sub_ckpt``: each segment of ``k`` steps is replayed once without dense
    output to store ``√k`` states, then sub-segment by sub-segment with it (so the
    dense output held at any time covers ``≈ √k`` steps, not ``k``)."""
    for i0, i1 in tape.segments():
        L = i1 - i0
        m = max(1, math.isqrt(L)) if tape.levels > 1 else L
        run.sub_ckpt = {i0: tape.ckpt[i0]}
        if m < L:
            with torch.no_grad():
                if run.rk.newton is not None:
                    run.rk.newton.forget()
                *_, kept = replay(
                    run.g_count,
                    run.rk,
                    tape,
                    omap,
                    i0,
                    i1,
                    tape.ckpt[i0],
                    dense=False,
                    keep_every=m,
                )
            run.sub_ckpt.update(kept)
        starts = sorted(run.sub_ckpt)
        ends = [*starts[1:], i1]
        for a, b in reversed(list(zip(starts, ends))):
            yield a, b
            del run.sub_ckpt[a]


def adjoint_backward(run, grad_ys: torch.Tensor):
    """``(∂L/∂y0_rows [K, n], a(s_0) [K, n], [∂L/∂θ])`` for output cotangents ``grad_ys``."""
    tape: Tape = run.tape
    omap: OutputMap = run.omap
    s_out = run.s_out
    K = s_out.shape[0]
    counter = run.counter
    stepper = AdjointStepper(run.adjoint_tableau, run.rk, run.g_lin, run.params, counter)
    solver = AdjointSolver(
        stepper, run.adjoint_rtol, run.adjoint_atol, run.seminorm, K, s_out.device, s_out.dtype
    )
    a = torch.zeros_like(run.y0_rows)
    gth = [None] * len(run.params)
    rows = torch.arange(K, device=a.device)
    for b0, b1 in _sub_segments(run, tape, omap):
        with torch.no_grad():
            if run.rk.newton is not None:
                run.rk.newton.forget()
            _, _, steps = replay(
                run.g_count, run.rk, tape, omap, b0, b1, run.sub_ckpt[b0], dense=True
            )
        run.segments_replayed += 1
        for j in range(b1, b0, -1):
            data = steps[j - b0 - 1]
            p = tape.s[j]
            for mask, idx, _, at_end in reversed(omap.rounds.get(j, ())):
                t_ev = s_out[rows, idx]
                q = torch.where(mask & ~at_end, t_ev, p)
                p, a, gth = solver.solve(p, q, a, gth, data)
                inj = torch.where(mask[:, None], grad_ys[rows, idx], torch.zeros_like(a))
                a = a + inj
            p, a, gth = solver.solve(p, tape.s[j - 1], a, gth, data)
        del steps
    solver.carry = None
    run.sub_ckpt = {}
    run.backward_accepted = solver.accepted
    run.backward_rejected = solver.rejected
    return a, gth
