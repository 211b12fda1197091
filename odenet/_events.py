"""Events: zero crossings of user functions of ``(t, y)``, located on the dense output.

Between accepted steps the loop evaluates every event function at the step's end;
a sign change (in the event's direction) between the step's start and end is a
crossing, located by the Illinois variant of regula falsi on the step's
interpolant — no extra solver steps, only interpolant and event evaluations.  A
terminal event ends its row's integration at the crossing.

The crossing time ``t*`` solves ``c(t*, y(t*)) = 0``; its derivative with respect
to anything ``y`` depends on follows from the implicit function theorem,
``dt* = −(∂c/∂y · dy) / (∂c/∂t + ∂c/∂y · f)`` (see :func:`reroute_event_gradient`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from odenet._errors import InputError

# Illinois iterations: superlinear, so 60 reach round-off from any bracket
_MAX_ITER = 60
# each step is searched for crossings in this many equal pieces of its interpolant
SUBSTEPS = 4


@dataclass(frozen=True)
class Event:
    """An event function and what to do when it crosses zero.

    Parameters
    ----------
    fn : callable ``fn(t, y) -> Tensor``
        With the user's layout: ``t`` 0-dim and ``y`` of ``y0``'s shape (a shared
        grid; returns a scalar), or ``t [B]`` and ``y [B, ...]`` (per-sample grids;
        returns ``[B]``).
    direction : int
        ``+1`` rising crossings only (negative to positive), ``−1`` falling only, ``0`` both.
    terminal : bool or int
        ``True`` (or 1) stops the row's integration at the first crossing, an int
        ``k`` at the ``k``-th; ``False`` records every crossing and goes on.
    """

    fn: Callable
    direction: int = 0
    terminal: bool | int = False

    def __post_init__(self):
        if not callable(self.fn):
            raise InputError(f"an event function must be callable as fn(t, y), got {self.fn!r}.")
        if self.direction not in (-1, 0, 1):
            raise InputError(
                f"event `direction` must be -1 (falling), 0 (both) or +1 (rising), got "
                f"{self.direction!r}."
            )
        t = self.terminal
        if isinstance(t, bool):
            return
        if not isinstance(t, int) or t < 0:
            raise InputError(
                f"event `terminal` must be a bool or a non-negative int (stop at the k-th "
                f"crossing), got {t!r}."
            )

    @property
    def stop_after(self) -> float:
        """How many crossings end the row (``inf`` for a non-terminal event)."""
        if self.terminal is True:
            return 1
        if self.terminal is False or self.terminal == 0:
            return math.inf
        return int(self.terminal)


def as_events(events) -> list[Event]:
    """Validate ``events``: an :class:`Event`, a callable (terminal, both
    directions) or a list of them."""
    if events is None:
        return []
    if isinstance(events, Event) or callable(events):
        events = [events]
    try:
        items = list(events)
    except TypeError:
        raise InputError(
            f"`events` must be an odenet.Event, a callable fn(t, y) or a list of them, got "
            f"{type(events).__name__}."
        ) from None
    return [e if isinstance(e, Event) else Event(e, terminal=True) for e in items]


@dataclass
class EventLog:
    """Every crossing found, in the order found: per row ``k`` the lists
    ``t[k]`` (internal time), ``y[k]`` (state ``[n]``) and ``which[k]`` (index of
    the event function)."""

    K: int
    t: list = field(default_factory=list)
    y: list = field(default_factory=list)
    which: list = field(default_factory=list)

    def __post_init__(self):
        self.t = [[] for _ in range(self.K)]
        self.y = [[] for _ in range(self.K)]
        self.which = [[] for _ in range(self.K)]


class EventTracker:
    """Evaluates the events of ``K`` rows and locates their crossings in a step.

    ``fn_rows(e, s [K], y [K, n]) -> [K]`` evaluates event ``e`` in the loop's
    layout (the caller wraps the user's functions).
    """

    def __init__(self, events: list[Event], fn_rows, K: int, device, dtype):
        self.events = events
        self.fn_rows = fn_rows
        self.K = K
        self.log = EventLog(K)
        self.counts = torch.zeros(K, len(events), dtype=torch.long, device=device)
        self.terminal_state: dict[int, torch.Tensor] = {}  # row -> state, with graph
        self.stop_after = torch.tensor(
            [e.stop_after for e in events], dtype=torch.float64, device=device
        )
        self.direction = torch.tensor([e.direction for e in events], device=device)
        self.values: torch.Tensor | None = None  # [K, E] at the current step's start
        # the field g(s [K], y [K, n]) in the loop's layout: the crossings' derivatives
        self.field: Callable | None = None

    def _all(self, s, y) -> torch.Tensor:
        with torch.no_grad():
            vals = [self.fn_rows(e, s, y).reshape(self.K) for e in range(len(self.events))]
        return torch.stack(vals, dim=1).to(torch.float64)

    def start(self, s, y) -> None:
        self.values = self._all(s, y)
        # an event exactly 0 at t0 that leaves zero in its direction happened at t0
        # (scipy reports it there, and a terminal one stops the solve at once)
        self.zero_at_t0 = self.values == 0

    def step(
        self, s, s1, accept, state_at, y1=None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crossings inside the accepted step ``(s, s1]`` of each row.

        ``state_at(theta [K]) -> y [K, n]`` is the step's interpolant, ``y1`` [K, n]
        the state at its end (default: the interpolant there).  Returns
        ``(theta_stop [K], y_stop [K, n] or None, stop [K] bool)``: rows whose
        terminal event fired stop at ``theta_stop`` with state ``y_stop``.
        Non-terminal crossings are logged; later values become the next step's start.
        """
        K = self.K
        v0, v1, y1, crossed, thetas = self._crossings(s, s1, accept, state_at, y1)
        self.zero_at_t0 = self.zero_at_t0 & ~accept[:, None]
        theta_stop = torch.ones(K, dtype=s.dtype, device=s.device)
        stop = torch.zeros(K, dtype=torch.bool, device=s.device)
        if thetas is None:
            self.values = torch.where(accept[:, None], v1, v0)
            return theta_stop, None, stop
        # in time order within the step; a terminal one cuts off the later ones
        order = thetas.argsort(dim=1)
        y_stop = y1.clone()
        for k in crossed.flatten(1).any(dim=1).nonzero()[:, 0].tolist():
            for i in order[k].tolist():
                e = i // SUBSTEPS
                th = float(thetas[k, i])
                if not math.isfinite(th):
                    break
                t_k = float(s[k] + th * (s1[k] - s[k]))
                # with the interpolant's graph: a terminal state stays differentiable
                # with respect to y0 and the parameters (the time's own derivative is
                # added by the implicit function theorem, see odenet.odeint_event)
                y_all = state_at(torch.full((K,), th, dtype=s.dtype, device=s.device))
                y_k = y_all[k]
                if self.field is not None and torch.is_grad_enabled() and y_all.requires_grad:
                    t_log, y_log = self._attach(e, k, t_k, y_all, s.dtype)
                else:
                    t_log, y_log = t_k, y_k.detach().clone()
                self.log.t[k].append(t_log)
                self.log.y[k].append(y_log)
                self.log.which[k].append(e)
                self.counts[k, e] += 1
                if float(self.counts[k, e]) >= float(self.stop_after[e]):
                    stop[k] = True
                    theta_stop[k] = th
                    y_stop[k] = y_k
                    self.terminal_state[k] = y_k
                    break
        self.values = torch.where(accept[:, None], v1, v0)
        return theta_stop, y_stop, stop

    def crossing_times(self, s, s1, rows, state_at, y1):
        """``[K, E·J]`` internal times of the crossings the events would log in the
        step ``(s, s1]`` of ``rows`` (``inf`` where none; see :meth:`_crossings`),
        located as :meth:`step` locates them but logging nothing: the loop checks the
        interpolant there before the step is accepted (:mod:`odenet._dense_check`)."""
        thetas = self._crossings(s, s1, rows, state_at, y1)[-1]
        if thetas is None:
            return None
        return s[:, None] + thetas.to(s.dtype) * (s1 - s)[:, None]

    def _crossings(self, s, s1, accept, state_at, y1):
        """``(v0, v1, y1, crossed, thetas)``: the event values at the step's start (a
        root on it replaced by the value just after) and end, the state at the end,
        which events cross in each of the step's :data:`SUBSTEPS` pieces on the
        accepting rows ``[K, E, J]``, and where (θ in [0, 1], ``[K, E·J]`` with event
        ``i // J`` at column ``i``, ``inf`` where none; ``None`` when no row crosses).

        The event functions are also evaluated on the interpolant inside the step: a
        long step over two crossings shows no sign change at its ends (radau_iia9 on a
        stiff oscillation logged 6 of 18 crossings), and two crossings in one step are
        two events (Julia's ``interp_points`` does the same with 10 points).
        """
        K, J = self.K, SUBSTEPS
        v0 = self.values
        if y1 is None:
            with torch.no_grad():
                y1 = state_at(torch.ones(K, dtype=s.dtype, device=s.device))
        v1 = self._all(s1, y1)
        grid = [j / J for j in range(J + 1)]
        with torch.no_grad():
            inner = [self._all(s + th * (s1 - s), state_at(torch.full_like(s, th)))
                     for th in grid[1:-1]]  # fmt: skip
        V = torch.stack([v0, *inner, v1], dim=2)  # [K, E, J + 1]
        zero = (v0 == 0) & accept[:, None]
        crossed = self._crossed(V[..., :-1], V[..., 1:], accept)
        any_zero, any_crossed = torch.stack([zero.any(), crossed.any()]).tolist()  # one sync
        born = None
        if any_zero:
            # exactly 0 where the step starts (a root on the last step's end): its sign
            # just after decides, or a crossing later in this step goes unseen
            # ((t − 1)(t − 1.2) with a node on t = 1 lost the root at 1.2)
            th = torch.full((K,), math.sqrt(torch.finfo(s.dtype).eps), dtype=s.dtype,
                            device=s.device)  # fmt: skip
            with torch.no_grad():
                v_in = self._all(s + th * (s1 - s), state_at(th))
            d = self.direction[None, :]
            leaves = torch.where(d > 0, v_in > 0, torch.where(d < 0, v_in < 0, v_in != 0))
            born = zero & self.zero_at_t0 & leaves
            v0 = torch.where(zero, v_in, v0)
            V = torch.cat([v0[..., None], V[..., 1:]], dim=2)
            crossed = self._crossed(V[..., :-1], V[..., 1:], accept)
            crossed[..., 0] |= born
            any_crossed = bool(crossed.any())
        if not any_crossed:
            return v0, v1, y1, crossed, None
        E = len(self.events)
        thetas = torch.full((K, E, J), math.inf, dtype=torch.float64, device=s.device)
        if born is not None:
            crossed_located = crossed.clone()
            crossed_located[..., 0] &= ~born
        else:
            crossed_located = crossed
        pieces = crossed_located.any(dim=0).tolist()  # [E][J]: one sync
        with torch.no_grad():
            for e in range(E):
                for j in range(J):
                    if not pieces[e][j]:
                        continue
                    rows = crossed_located[:, e, j]
                    theta = self._locate(
                        e, s, s1, V[:, e, j], V[:, e, j + 1], rows, state_at, grid[j], grid[j + 1]
                    )
                    thetas[:, e, j] = torch.where(rows, theta, math.inf)
            if born is not None:
                thetas[..., 0] = torch.where(born, 0.0, thetas[..., 0])
        return v0, v1, y1, crossed, thetas.reshape(K, E * J)

    def _attach(self, e, k, t_k, y_all, s_dtype):
        """The crossing ``(t*, y(t*))`` of row ``k`` with autograd graphs (internal time).

        Values ``t_k`` and ``y_all[k]``; the time's derivative is the implicit function
        theorem's, ``dt* = −dc / (∂c/∂t + ∂c/∂y · f)`` (``dc``: the event function's
        change at the fixed time, through the interpolated state and its own
        parameters), and the state's ``dy(t*) = dy|_t + f dt*``.
        """
        K = self.K
        s_k = torch.full((K,), t_k, dtype=s_dtype, device=y_all.device)
        y_d = y_all.detach()
        with torch.enable_grad():
            s_v = s_k.clone().requires_grad_(True)
            y_v = y_d.clone().requires_grad_(True)
            c = self.fn_rows(e, s_v, y_v).reshape(K)[k]
            if not c.requires_grad:  # not a differentiable function of (t, y)
                return t_k, y_all[k].detach().clone()
            dc_ds, dc_dy = torch.autograd.grad(c, (s_v, y_v), allow_unused=True)
        with torch.no_grad():
            f_k = self.field(s_k, y_d)[k]
            slope = torch.zeros((), dtype=f_k.dtype, device=f_k.device)
            if dc_dy is not None:
                slope = slope + (dc_dy[k] * f_k).sum()
            if dc_ds is not None:
                slope = slope + dc_ds[k].to(slope.dtype)
        if not bool(torch.isfinite(slope)) or float(slope) == 0:
            # a tangential crossing: t* has no derivative
            return t_k, y_all[k].detach().clone()
        c = self.fn_rows(e, s_k, y_all).reshape(K)[k]
        dt = -(c - c.detach()).to(y_all.dtype) / slope.to(y_all.dtype)
        t_star = torch.as_tensor(t_k, dtype=s_dtype, device=y_all.device) + dt.to(s_dtype)
        return t_star, y_all[k] + f_k * dt

    def _crossed(self, v0, v1, accept) -> torch.Tensor:
        """``[K, E, ...]``: a sign change from ``v0`` to ``v1`` (``[K, E, ...]``) in each
        event's direction, on the accepting rows."""
        rising = (v0 < 0) & (v1 >= 0)
        falling = (v0 > 0) & (v1 <= 0)
        tail = [1] * (v0.dim() - 2)
        d = self.direction.reshape(1, -1, *tail)
        crossed = torch.where(d > 0, rising, torch.where(d < 0, falling, rising | falling))
        return crossed & accept.reshape(-1, 1, *tail)

    def _locate(self, e, s, s1, va, vb, rows, state_at, lo=0.0, hi=1.0) -> torch.Tensor:
        """θ in ``(lo, hi]`` of the crossing of event ``e`` on ``rows`` (Illinois);
        ``va``, ``vb``: its values at ``θ = lo, hi``.

        The bracket ``[a, b]`` keeps ``v(a)`` and ``v(b)`` of opposite signs; the end
        past the root is returned, so the event has happened at the reported time
        (as scipy does).
        """
        dt = s.dtype
        a, b = torch.full_like(va, lo), torch.full_like(vb, hi)
        fa, fb = va.clone(), vb.clone()
        side = torch.zeros_like(va)
        tol = 4 * torch.finfo(dt).eps * torch.maximum(s.abs(), s1.abs()).clamp_min(1.0)
        width = (s1 - s).abs().to(torch.float64).clamp_min(1e-300)
        done = ~rows | (fb == 0)
        for _ in range(_MAX_ITER):
            if bool(done.all()):
                break
            denom = fb - fa
            c = torch.where(denom != 0, b - fb * (b - a) / denom.where(denom != 0, 1.0), a)
            c = torch.where((c <= a) | (c >= b), 0.5 * (a + b), c)
            s_c = s + c.to(dt) * (s1 - s)
            with torch.no_grad():
                fc = self.fn_rows(e, s_c, state_at(c.to(dt))).reshape(self.K).to(torch.float64)
            upper = (fc * fb < 0) & ~done  # root in [c, b]
            lower = (fc * fa < 0) & ~done & ~upper  # root in [a, c]
            exact = (fc == 0) & ~done
            fb = torch.where(upper & (side < 0), 0.5 * fb, fb)
            fa = torch.where(lower & (side > 0), 0.5 * fa, fa)
            a, fa = torch.where(upper, c, a), torch.where(upper, fc, fa)
            b, fb = torch.where(lower | exact, c, b), torch.where(lower | exact, fc, fb)
            side = torch.where(upper, -1.0, torch.where(lower, 1.0, side))
            done = done | exact | ((b - a) * width <= tol)
        return b
