"""The step loop for one system with an explicit method: control on the host.

:func:`odenet._loop.integrate` runs ``K`` rows with masked tensor updates.  For one
system (a shared time grid, ``K = 1``) every control quantity — the time, the step
size, acceptance, the controller's memory, the output cursor — is a single number.
Kept as Python floats they cost no tensor operations at all, while on small states
each tensor operation costs a dispatch of microseconds: a dopri5 step here makes
about 40 tensor calls besides the field instead of several hundred.  The price is
one host synchronisation per step (the error norm, or the finiteness check for
fixed steps); the masked loop pays that too (whether rows accepted).

The rules are those of :func:`odenet._loop.integrate` — step sizes, snapping to
nodes and outputs, controller, failure codes, the ``record`` protocol — so the two
loops are interchangeable; the tests run both on the same problems.
"""

from __future__ import annotations

import math

import torch

from odenet._solution import MAX_STEPS, NEWTON_FAILED, NON_FINITE, STEP_UNDERFLOW, SUCCESS


def integrate_one(g, s_out: torch.Tensor, y0: torch.Tensor, cfg, *, record=None):
    """Integrate one system ``y0 [1, n]`` through ``s_out [1, T]`` (see ``integrate``).

    ``g.host(s: float, y [1, n]) -> [1, n]`` is the field on host time; ``g`` itself
    (tensor time ``[1]``) is used once, for the automatic initial step.
    """
    from odenet._loop import LoopResult, initial_step, rms_norm

    rk = cfg.rk
    gh = g.host
    n = y0.shape[1]
    T = s_out.shape[1]
    dev, tdt, ydt = y0.device, s_out.dtype, y0.dtype
    eps = torch.finfo(tdt).eps
    times = s_out[0].detach().tolist()
    s0, s_end = times[0], times[-1]
    s = s0
    snap = 64 * eps * max(abs(s_end), abs(s0), 1.0)
    fixed = cfg.step_size is not None or cfg.grid is not None
    root_n = math.sqrt(n)

    y = y0
    f0 = gh(s, y)
    if fixed:
        h_fix = math.inf if cfg.step_size is None else float(cfg.step_size)
        h = h_fix
        grid = None if cfg.grid is None else cfg.grid[0].detach().tolist()
        node = 0
    elif cfg.first_step is not None:
        h = float(cfg.first_step)
    else:
        norm = cfg.norm or rms_norm
        h = float(initial_step(g, s_out[:, 0], y, f0, s_out[:, -1], rk, cfg.rtol, cfg.atol, norm))
    if not fixed:
        rtol = torch.as_tensor(cfg.rtol, dtype=ydt, device=dev)
        atol = torch.as_tensor(cfg.atol, dtype=ydt, device=dev)
        abs_y = y.detach().abs()
    ctrl = cfg.controller
    ctrl_state = (1.0, 1.0)
    error_order = rk.tableau.error_order

    outputs = [y0]
    cursor = 1
    accepted = rejected = n_iter = 0
    status = SUCCESS
    while cursor < T:
        # --- the step size to try -----------------------------------------------
        if fixed:
            if grid is None:
                target = s0 + (node + 1) * h_fix
            else:
                target = grid[min(node + 1, len(grid) - 1)]
            if s_end - target <= snap:
                target = s_end
            gap = target - s
            to_node = h >= gap - snap
            h_try = gap if to_node else h
            s_node = target
        else:
            h_try = min(h, cfg.max_step)
            to_node = h_try >= (s_end - s) - snap
            if to_node:
                h_try = s_end - s
            s_node = s_end

        y1, K, rates, f1 = rk.step_one(gh, s, y, h_try, f0)
        with torch.no_grad():
            if fixed:
                finite = bool(torch.isfinite(y1).all())
                accept = finite
                ratio = None
            else:
                abs_y1 = y1.detach().abs()
                scale = torch.addcmul(atol, rtol, torch.maximum(abs_y, abs_y1))
                ratio = _error_ratio(rates / scale, abs(h_try), cfg.norm, root_n)
                accept = ratio <= 1

        # --- the end of the step; outputs inside it ----------------------------------
        if accept:
            s1 = s_node if to_node else s + h_try
            hi = cursor
            while hi < T and times[hi] <= s1 + snap:
                hi += 1
            if f1 is None and s1 < s_end:
                f1 = gh(s1, y1)  # also the next step's first stage
            if hi > cursor:
                at_end = [abs(s1 - times[j]) <= snap for j in range(cursor, hi)]
                n_interior = at_end.index(True) if True in at_end else len(at_end)
                if n_interior:
                    if f1 is None and not rk.has_own_interpolant:
                        f1 = gh(s1, y1)
                    hd = h_try if h_try != 0 else 1.0
                    theta = [
                        min(max((times[j] - s) / hd, 0.0), 1.0)
                        for j in range(cursor, cursor + n_interior)
                    ]
                    outputs.append(rk.interpolate_one(gh, s, y, y1, f0, f1, h_try, K, theta))
                if n_interior < len(at_end):
                    outputs.append(y1.expand(len(at_end) - n_interior, n))
                cursor = hi
            y, s = y1, s1
            if f1 is not None:
                f0 = f1
            if not fixed:
                abs_y = abs_y1
            accepted += 1
        else:
            rejected += 1
        n_iter += 1
        if record is not None:
            record.append(
                (
                    torch.full((1,), s, dtype=tdt, device=dev),
                    y,
                    torch.tensor([accept], device=dev),
                )
            )

        # --- the next step size; failures ----------------------------------------------
        if fixed:
            if accept and to_node:
                node += 1
                h = h_fix
            else:  # after a failure-forced halving, grow back towards the nominal step
                h = min(2 * h, h_fix) if accept else h_try / 2
        else:
            h, ctrl_state = ctrl.propose_one(h_try, ratio, accept, ctrl_state, error_order)
        if not accept or n_iter >= cfg.max_steps:
            if fixed:
                underflow = not finite or h < 16 * eps * max(abs(s), 1.0)
                code = NEWTON_FAILED if finite else NON_FINITE
            else:
                finite = bool(torch.isfinite(y1).all())
                underflow = not accept and h < max(16 * eps * abs(s), cfg.min_step)
                code = STEP_UNDERFLOW if finite else NON_FINITE
            if underflow:
                status = code
            elif cursor < T and accepted + rejected >= cfg.max_steps:
                status = MAX_STEPS
            if status != SUCCESS:
                break

    ys = torch.cat(outputs)
    if ys.shape[0] < T:
        ys = torch.cat([ys, ys.new_full((T - ys.shape[0], n), math.nan)])

    def one(v, dtype):
        return torch.tensor([v], dtype=dtype, device=dev)

    return LoopResult(
        ys[None],
        one(status, torch.long),
        one(s, tdt),
        one(accepted, torch.long),
        one(rejected, torch.long),
        record if record is not None else [],
    )


def _error_ratio(q: torch.Tensor, h: float, norm, root_n: float) -> float:
    """The controller's ratio from the scaled error rates ``q [E, n]`` (``E`` = 1 or 2).

    The RMS norm (or the user's) times ``|h|``; two estimates combine as Hairer's
    DOP853 does.  ``inf`` for a non-finite trial, so that it is rejected.
    """
    if norm is None:
        r = [h * v / root_n for v in torch.linalg.vector_norm(q, dim=1).tolist()]
    else:
        r = [h * float(norm(q[e : e + 1])) for e in range(q.shape[0])]
    if len(r) == 1:
        ratio = r[0]
    else:
        r5, r3 = r[0] ** 2, r[1] ** 2
        ratio = r5 / max(math.sqrt(r5 + 0.01 * r3), 1e-300)
    return ratio if not math.isnan(ratio) else math.inf
