"""The one step loop of odenet: fixed or adaptive steps, dense output, per-row status.

It integrates ``K`` independent systems at once (``K = 1`` for one system on a
shared grid; ``K = B`` for per-sample time grids), each with its own time, step
size, acceptance, output cursor and status, using masked tensor updates.  Time is
*internal* time ``s``, increasing for every row (the caller flips the sign of
decreasing grids).  Each step makes a few host synchronisations (whether rows
accepted, how many outputs fall in the step, whether every row has finished);
failure bookkeeping runs only on steps with a rejection.

Roles are separate (see ``../shared/conventions.md``): the method step
(``RungeKutta.step``) proposes ``y1`` and an error estimate, the controller
(``PIDController``) accepts and proposes the next ``h``, the interpolant
(``RungeKutta.interpolate``) produces outputs; this loop only sequences them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from odenet._controller import PIDController
from odenet._loop_one import integrate_one
from odenet._solution import (
    MAX_STEPS,
    NEWTON_FAILED,
    NON_FINITE,
    STEP_UNDERFLOW,
    SUCCESS,
)
from odenet._stepper import RungeKutta


@dataclass
class LoopConfig:
    rk: RungeKutta
    rtol: float | torch.Tensor
    atol: float | torch.Tensor
    step_size: float | None
    max_steps: int
    first_step: float | None
    min_step: float
    max_step: float
    controller: PIDController
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None
    # fixed steps on explicit nodes [K, G] (internal time) instead of t0 + k·step_size
    grid: torch.Tensor | None = None


@dataclass
class LoopResult:
    ys: torch.Tensor  # [K, T, n], NaN where not reached
    status: torch.Tensor  # [K] long
    t_reached: torch.Tensor  # [K] internal time reached
    accepted: torch.Tensor  # [K]
    rejected: torch.Tensor  # [K]
    steps_record: list = field(default_factory=list)


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over everything but the first (row) dimension: ``[K, ...] -> [K]``."""
    return x.pow(2).flatten(1).mean(dim=1).sqrt()


def initial_step(g, s, y, f0, s_end, rk: RungeKutta, rtol, atol, norm) -> torch.Tensor:
    """Hairer, Nørsett & Wanner I, Sec. II.4 (as scipy's ``select_initial_step``). One f-call."""
    with torch.no_grad():
        scale = atol + rtol * y.abs()
        d0 = norm(y / scale)
        d1 = norm(f0 / scale)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        h0 = torch.minimum(h0.to(s.dtype), s_end - s)
        y1 = y + h0.to(y.dtype)[:, None] * f0
        f1 = g(s + h0, y1)
        d2 = norm((f1 - f0) / scale) / h0.to(y.dtype)
        dmax = torch.maximum(d1, d2)
        q = rk.tableau.error_order
        h1 = torch.where(
            dmax <= 1e-15,
            torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
            ((0.01 / dmax) ** (1.0 / (q + 1))).to(s.dtype),
        )
        return torch.minimum(100 * h0, h1)


def integrate(g, s_out: torch.Tensor, y0: torch.Tensor, cfg: LoopConfig, *, record=None):
    """Integrate ``dy/ds = g(s, y)`` from ``s_out[:, 0]`` through the output times ``s_out``.

    Parameters
    ----------
    g : callable ``(s [K], y [K, n]) -> [K, n]``
    s_out : [K, T] increasing internal output times per row (``s_out[:, 0]`` is the start).
    y0 : [K, n]
    record : list, optional
        If given, ``(s [K], y [K, n], accepted [K])`` is appended after every step,
        for sensitivity methods that checkpoint the forward trajectory.

    Returns
    -------
    LoopResult
    """
    rk = cfg.rk
    K, n = y0.shape
    if K == 1 and not rk.implicit and hasattr(g, "host") and not s_out.requires_grad:
        return integrate_one(g, s_out, y0, cfg, record=record)
    T = s_out.shape[1]
    dev, tdt = y0.device, s_out.dtype
    eps = torch.finfo(tdt).eps
    norm = cfg.norm or rms_norm
    fixed = cfg.step_size is not None or cfg.grid is not None
    # adaptive solves take the derivative with respect to t outside the loop (see
    # odenet._solve.run_direct): here only fixed grids may carry it
    t_grad = fixed and s_out.requires_grad and torch.is_grad_enabled()
    if not t_grad:
        s_out = s_out.detach()

    s = s_out[:, 0]
    s_end = s_out[:, -1]
    y = y0
    f0 = g(s, y)
    # implicit stages are attached to the autograd graph only when someone needs it
    rk.track_grad = torch.is_grad_enabled() and (f0.requires_grad or s.requires_grad)
    status = torch.zeros(K, dtype=torch.long, device=dev)
    accepted = torch.zeros(K, dtype=torch.long, device=dev)
    rejected = torch.zeros(K, dtype=torch.long, device=dev)
    cursor = torch.ones(K, dtype=torch.long, device=dev)
    outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    done = cursor >= T
    ctrl_state = cfg.controller.init_state(K, y0.dtype, dev)
    error_order = rk.tableau.error_order

    if fixed:
        h_nominal = math.inf if cfg.step_size is None else float(cfg.step_size)
        h_fix = torch.full((K,), h_nominal, dtype=tdt, device=dev)
        h = h_fix.clone()
        node = torch.zeros(K, dtype=torch.long, device=dev)
    elif cfg.first_step is not None:
        h = torch.full((K,), float(cfg.first_step), dtype=tdt, device=dev)
    else:
        h = initial_step(g, s, y, f0, s_end, rk, cfg.rtol, cfg.atol, norm)
    h = h.detach()

    # times closer than this are the same time (grid nodes, outputs on step ends)
    snap = 64 * eps * torch.maximum(s_end.detach().abs(), s_out[:, 0].detach().abs()).clamp_min(1.0)

    n_iter = n_all_accepted = 0
    n_done = int(done.sum())
    while n_done < K:
        any_done = n_done > 0
        active = ~done
        # --- the step size to try -----------------------------------------------
        # fixed grids are functions of the output times: with ``t_grad`` the node times
        # (and so the step sizes and interpolation weights) carry their gradient, and
        # autograd gives the exact derivative of the discrete solution
        with torch.set_grad_enabled(t_grad):
            remaining = (s_end - s).detach()
            if fixed:
                if cfg.grid is None:
                    target = s_out[:, 0] + (node + 1).to(tdt) * h_fix
                else:
                    last = cfg.grid.shape[1] - 1
                    target = cfg.grid.gather(1, (node + 1).clamp(max=last)[:, None])[:, 0]
                target = torch.where((s_end - target).detach() <= snap, s_end, target)
                gap = target - s
                to_node = h >= gap.detach() - snap
                h_try = torch.where(to_node, gap, h)
            else:
                h_try = h if math.isinf(cfg.max_step) else h.clamp(max=cfg.max_step)
                to_node = h_try >= remaining - snap
                h_try = torch.where(to_node, remaining, h_try)
            if any_done:  # finished rows take zero steps
                h_try = torch.where(active, h_try, torch.zeros_like(h_try))

        out = rk.step(g, s, y, h_try, f0)
        y1 = out.y1
        with torch.no_grad():
            if fixed:
                finite = torch.isfinite(y1).all(dim=1)
                ok = finite if out.ok is None else finite & out.ok
                accept = ok
                ratio = None
            else:
                scale = cfg.atol + cfg.rtol * torch.maximum(y.abs(), y1.abs())
                if isinstance(out.error, tuple):  # Hairer's DOP853 estimate
                    r5 = norm(out.error[0] / scale).square()
                    r3 = norm(out.error[1] / scale).square()
                    ratio = r5 / (r5 + 0.01 * r3).sqrt().clamp_min(torch.finfo(r5.dtype).tiny)
                else:
                    ratio = norm(out.error / scale)
                # a non-finite trial has a non-finite error estimate: rejected here
                ratio = torch.nan_to_num(ratio, nan=math.inf)
                accept = ratio <= 1
                if out.ok is not None:
                    accept = accept & out.ok
            if any_done:
                accept = accept & active
        all_accept = bool(accept.all())
        any_accept = all_accept or bool(accept.any())

        # --- the end of the step; outputs inside it ----------------------------------
        s_node = s_end if not fixed else target
        if all_accept:
            s1 = torch.where(to_node, s_node, s + h_try)
        else:
            s1 = torch.where(to_node & accept, s_node, s + h_try)
            s1 = torch.where(accept, s1, s)
        f1 = out.f1
        ks = out.ks
        if any_accept:
            # every output time in (s, s1] of each accepting row, evaluated at once
            n_in = ((s_out <= (s1 + snap)[:, None]).sum(dim=1) - cursor).clamp_min(0)
            if not all_accept:
                n_in = torch.where(accept, n_in, torch.zeros_like(n_in))
            m = int(n_in.max())
            if m > 0:
                offsets = torch.arange(m, device=dev)
                cols = cursor[:, None] + offsets  # [K, m]
                valid = offsets[None, :] < n_in[:, None]
                t_req = s_out.gather(1, cols.clamp(max=T - 1))
                at_end = (s1[:, None] - t_req).abs() <= snap[:, None]
                interior = bool((valid & ~at_end).any())
            else:
                interior = False
            needs_f1 = (interior and not rk.has_own_interpolant) or (t_grad and m > 0)
            if f1 is None and (needs_f1 or not bool((s1 >= s_end)[active].all())):
                f1 = g(s1, y1)  # also the next step's first stage
            if m > 0:
                if interior:
                    if rk.has_own_interpolant:
                        ks = rk.extra_stages(g, s, y, h_try, ks)
                    h_div = torch.where(h_try == 0, torch.ones_like(h_try), h_try)
                    theta = ((t_req - s[:, None]) / h_div[:, None]).clamp(0, 1)
                    values = rk.interpolate(theta, y, y1, f0, f1, h_try, ks)
                    values = torch.where(at_end[:, :, None], y1[:, None], values)
                else:
                    values = y1[:, None].expand(K, m, n)
                if t_grad:
                    # an output on a node is the interpolant at θ = 1: to first order
                    # y1 + (t_req − s1)·f1, whose value is y1 exactly
                    lag = t_req - s1[:, None]
                    lag = (lag - lag.detach()).to(y1.dtype)[:, :, None]
                    values = torch.where(at_end[:, :, None], values + lag * f1[:, None], values)
                outputs.append((cols, valid, values))
                cursor = cursor + n_in

        # --- commit -------------------------------------------------------------------
        # Python-level branching when every row agrees keeps rejected (possibly
        # non-finite) trials out of the autograd graph and saves two ops per step.
        if all_accept:
            y = y1
            f0 = f1 if f1 is not None else f0
        elif any_accept:
            acc2 = accept[:, None]
            y = torch.where(acc2, y1, y)
            if f1 is not None:
                f0 = torch.where(acc2, f1, f0)
        s = s1
        if all_accept:  # the common case costs no tensor bookkeeping
            n_all_accepted += 1
        else:
            accepted = accepted + accept.long()
            rejected = rejected + (active & ~accept).long()
        n_iter += 1
        if record is not None:
            record.append((s, y, accept))
        if rk.newton is not None and any_accept:
            rk.newton.state_changed()

        with torch.no_grad():
            if fixed:
                node = torch.where(accept & to_node, node + 1, node)
                # after a failure-forced halving, grow back towards the nominal step
                h = torch.where(
                    accept & to_node,
                    h_fix,
                    torch.where(accept, torch.minimum(2 * h, h_fix), h_try / 2),
                )
            else:
                h, ctrl_state = cfg.controller.propose(
                    h_try, ratio, accept, ctrl_state, error_order
                )
            done = cursor >= T
            # failures need a rejected (or failed) step, or the step budget used up
            if not all_accept or n_iter >= cfg.max_steps:
                fresh_done = done
                if not fixed:
                    finite = torch.isfinite(y1).all(dim=1)
                    ok = finite if out.ok is None else finite & out.ok
                if fixed:
                    min_h = 16 * eps * s.detach().abs().clamp_min(1.0)
                    failure_code = torch.where(~finite, NON_FINITE, NEWTON_FAILED)
                    underflow = active & (~finite | (h < min_h))
                else:
                    min_h = torch.maximum(
                        16 * eps * s.detach().abs(), torch.full_like(h, float(cfg.min_step))
                    )
                    failure_code = torch.where(
                        ~finite, NON_FINITE, torch.where(ok, STEP_UNDERFLOW, NEWTON_FAILED)
                    )
                    underflow = active & ~accept & (h < min_h)
                steps_taken = accepted + rejected + n_all_accepted
                too_many = active & ~fresh_done & (steps_taken >= cfg.max_steps)
                new_status = torch.where(
                    underflow, failure_code, torch.where(too_many, MAX_STEPS, SUCCESS)
                )
                status = torch.where(active & (status == SUCCESS), new_status, status)
                done = fresh_done | (status != SUCCESS)
        n_done = int(done.sum())

    accepted = accepted + n_all_accepted
    ys = _assemble(y0, outputs, K, T, n)
    return LoopResult(ys, status, s, accepted, rejected, record if record is not None else [])


def _assemble(y0, outputs, K, T, n) -> torch.Tensor:
    """Outputs in the order recorded -> ``[K, T, n]`` (NaN where never written)."""
    if K == 1 and sum(v.shape[1] for _, _, v in outputs) == T - 1:
        return torch.cat([y0[:, None]] + [v for _, _, v in outputs], dim=1)
    ys = torch.full((K, T, n), math.nan, dtype=y0.dtype, device=y0.device)
    ys[:, 0] = y0
    for cols, valid, values in outputs:
        rows, j = valid.nonzero(as_tuple=True)
        ys[rows, cols[rows, j]] = values[rows, j]
    return ys
