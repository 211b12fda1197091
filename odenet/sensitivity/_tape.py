"""The forward tape: step ends of every step, states at a few checkpoints, and replay.

Both ``adjoint`` and ``checkpoint`` run the forward once without autograd and keep
only

* the internal time reached by every row after every loop iteration in which some
  row accepted a step (``K`` numbers per step: the accepted step sizes are the
  differences), and
* the state at every ``stride``-th kept iteration, and the final state.  The tape
  starts with ``stride = 1`` and doubles it (dropping every other checkpoint)
  whenever it holds more states than its limit: ``2·stride + 1`` without a budget
  (so after ``N`` steps it holds between ``√(N/2)`` and ``2√(2N)`` states and
  segments of ``stride ≤ √(2N)`` steps: memory ``O(√N)`` states), or a fixed budget
  ``C`` (between ``C/2`` and ``C`` states, segments of ``stride < 2N/C`` steps).

A segment is *replayed* from its checkpoint by the forward's own loop,
:func:`odenet._loop.integrate`, on a fixed grid made of the recorded step ends: the
same method step, dense output and masking, with a recorder that keeps what the
backward pass needs.
"""

from __future__ import annotations

import math

import torch

from odenet._controller import PIDController
from odenet._errors import InputError
from odenet._loop import LoopConfig, integrate, restart_history


class Tape:
    """A list-like recorder passed as ``record=`` to :func:`odenet._loop.integrate`.

    Parameters
    ----------
    s0 : [K] start times (internal); y0 : [K, n] start states.
    every : int, optional
        Fixed checkpoint stride (steps per segment); default adapts (see ``budget``).
    budget : int, optional
        With an adaptive stride, the states kept and recomputed at any time (``≥ 2``;
        the ``√N`` rule beyond ``N ≈ budget²/4``); default ``≈ √N`` alone.
    """

    def __init__(
        self,
        s0: torch.Tensor,
        y0: torch.Tensor,
        every: int | None = None,
        *,
        budget: int | None = None,
    ):
        # step ends in one growing buffer: a tensor per step would cost ~2 kB of
        # bookkeeping each, i.e. memory growing with N
        self._buf = s0.detach().new_empty(64, s0.shape[0])
        self._buf[0] = s0.detach()
        self._n = 1
        self.adaptive = every is None
        self.stride = 1 if every is None else int(every)
        self.budget = budget
        # kept states are copied into one block of slots: kept as the loop's own
        # tensors they would pin the heap between each step's temporaries, and the
        # process's memory would grow by a step's whole footprint per kept state
        cap = 16 if budget is None else budget + 1
        self._slots = y0.detach().new_empty(cap, *y0.shape)
        self._rank: dict[int, int] = {}  # iteration -> slot
        self.ckpt: dict[int, torch.Tensor] = {}
        # a method with memory: its state (history) at every checkpoint, so that a
        # replay continues the forward's history instead of restarting it
        self.mstate: dict[int, tuple] = {}
        self._state: tuple | None = None
        self._put(0, y0.detach())
        self.last = y0.detach()
        self._extra: torch.Tensor | None = None
        # ``jump_t``: the kept iterations that restart one ulp after a discontinuity
        # (no step: see :meth:`mark_jump`), with the rows that moved there ([K] bool)
        self.restarts: dict[int, torch.Tensor] = {}
        self._jump_rows: torch.Tensor | None = None

    def _put(self, i: int, y: torch.Tensor) -> None:
        k = len(self._rank)
        if k == self._slots.shape[0]:
            grown = self._slots.new_empty(2 * k, *self._slots.shape[1:])
            grown[:k] = self._slots
            self._slots = grown
            self.ckpt = {j: grown[r] for j, r in self._rank.items()}
        self._rank[i] = k
        self.ckpt[i] = self._slots[k].copy_(y)

    def _thin(self) -> None:
        """Double the stride: keep every other state, compacted to the first slots."""
        self.stride *= 2
        kept = [j for j in sorted(self._rank) if j % self.stride == 0]
        for r, j in enumerate(kept):  # slot r ≤ the old slot of j: copy in order
            if self._rank[j] != r:
                self._slots[r].copy_(self._slots[self._rank[j]])
        self._rank = {j: r for r, j in enumerate(kept)}
        self.ckpt = {j: self._slots[r] for j, r in self._rank.items()}
        self.mstate = {j: v for j, v in self.mstate.items() if j in self._rank}

    def mark_jump(self, rows: torch.Tensor) -> None:
        """The next iteration appended is no step but the restart after a
        discontinuity (``jump_t``) of the rows ``rows`` [K]: their time moves from the
        landing one ulp before it to one ulp after, their state and a method's memory
        stay, and f is evaluated anew (the other rows stay put)."""
        self._jump_rows = rows.detach().clone()

    def append(self, item) -> None:
        s, y, accept = item
        rows, self._jump_rows = self._jump_rows, None
        if not bool(accept.any()):
            return
        if self._n == self._buf.shape[0]:
            grown = self._buf.new_empty(2 * self._n, self._buf.shape[1])
            grown[: self._n] = self._buf
            self._buf = grown
        self._buf[self._n] = s.detach()
        self._n += 1
        i = self._n - 1
        if rows is not None:
            self.restarts[i] = rows
        self.last = y.detach()
        if i % self.stride == 0:
            self._put(i, y.detach())
        if self.adaptive and len(self._rank) > self._limit():
            self._thin()

    def keep_state(self, state: tuple) -> None:
        """The method's state after the latest iteration (the loop calls this after
        every :meth:`append`): kept for the iterations whose state is checkpointed."""
        self._state = tuple(x.detach() for x in state)
        i = self._n - 1
        if i in self._rank and i not in self.mstate:
            self.mstate[i] = self._state

    def _limit(self) -> int:
        # the √N rule: N/k stored states + k recomputed in a segment -> k ≈ √N.  With
        # a budget C, as many states as leave room for one segment's C − k + 1 (up
        # to N ≈ C²/4 steps; beyond, the √N rule).
        root = 2 * self.stride + 1
        if self.budget is None:
            return root
        return max(self.budget - self.stride + 1, root)

    def finish(self) -> None:
        """Keep the final state too (the last segment then needs no replay to its end)."""
        self.ckpt[self.n_steps] = self.last
        if self._state is not None:
            self.mstate[self.n_steps] = self._state

    def scratch(self, i1: int, m: int) -> torch.Tensor:
        """``m`` slots for the states inside the segment ending at ``i1``, processed
        last first: the slots of the states after ``i1`` are free again (and those
        never used), or else a separate block."""
        top = 1 + max(r for j, r in self._rank.items() if j <= i1)
        if self._slots.shape[0] - top >= m:
            return self._slots[top : top + m]
        if self._extra is None or self._extra.shape[0] < m:
            self._extra = self._slots.new_empty(m, *self._slots.shape[1:])
        return self._extra

    @property
    def s(self) -> torch.Tensor:
        """``[N + 1, K]`` internal time of every row after each kept iteration."""
        return self._buf[: self._n]

    @property
    def n_steps(self) -> int:
        return self._n - 1

    def segments(self) -> list[tuple[int, int]]:
        """``(start, end)`` iteration indices of the segments, last first."""
        starts = sorted(self.ckpt)
        ends = [*starts[1:], self.n_steps]
        return [(a, b) for a, b in zip(starts, ends) if b > a][::-1]


def check_stride(every) -> int | None:
    if every is None:
        return None
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InputError(
            f"`checkpoint_every` must be a positive integer (steps between stored states) "
            f"or None (chosen automatically), got {every!r}."
        )
    return every


def check_budget(checkpoints) -> int | None:
    if checkpoints is None:
        return None
    if isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 2:
        raise InputError(
            "`checkpoints` must be an integer ≥ 2 (the most forward states kept for the "
            f"backward pass) or None (the default), got {checkpoints!r}."
        )
    return checkpoints


class OutputMap:
    """Which kept iteration each output time falls in, grouped into rounds.

    ``rounds[j]`` is a list of ``(mask [K], idx [K], theta [K], at_end [K])``: round
    ``r`` holds, for every row with at least ``r + 1`` outputs inside step ``j``,
    its ``r``-th output (increasing time), its index in ``s_out``, the fraction of
    the step at which it lies, and whether it coincides with the step's end.
    """

    def __init__(self, tape: Tape, s_out: torch.Tensor):
        K, T = s_out.shape
        S = tape.s  # [N + 1, K]
        tdt = s_out.dtype
        eps = torch.finfo(tdt).eps
        # the loop's landing tolerance (odenet._loop.integrate)
        snap = 64 * eps * torch.maximum(s_out[:, -1].abs(), s_out[:, 0].abs()).clamp_min(1.0)
        events: dict[int, list[list[tuple[int, int]]]] = {}
        for k in range(K):
            col = S[:, k].contiguous()
            targets = (s_out[k, 1:] - snap[k]).contiguous()
            js = torch.searchsorted(col, targets).clamp(1, len(col) - 1).tolist()
            per_j: dict[int, list[int]] = {}
            for i, j in enumerate(js, start=1):
                per_j.setdefault(j, []).append(i)
            for j, idxs in per_j.items():
                rounds = events.setdefault(j, [])
                for r, i in enumerate(idxs):
                    if len(rounds) <= r:
                        rounds.append([])
                    rounds[r].append((k, i))
        self.rounds: dict[int, list[tuple]] = {}
        dev = s_out.device
        for j, rounds in events.items():
            s_prev, s_next = S[j - 1], S[j]
            h = s_next - s_prev
            h_div = torch.where(h == 0, torch.ones_like(h), h)
            packed = []
            for members in rounds:
                mask = torch.zeros(K, dtype=torch.bool, device=dev)
                idx = torch.zeros(K, dtype=torch.long, device=dev)
                rows = torch.tensor([k for k, _ in members], device=dev)
                mask[rows] = True
                idx[rows] = torch.tensor([i for _, i in members], device=dev)
                t_ev = s_out.gather(1, idx[:, None])[:, 0]
                # as the loop's emit: only an output on the step's end is its end state
                theta = ((t_ev - s_prev) / h_div).clamp_min(0)
                at_end = s_next == t_ev
                packed.append((mask, idx, theta, at_end))
            self.rounds[j] = packed


class StepData:
    """What one replayed step leaves for dense output (adjoint) or outputs."""

    __slots__ = ("acc", "f0", "f1", "h", "ks", "s", "y", "y1")

    def __init__(self, s, h, y, y1, f0, f1, ks, acc):
        self.s, self.h, self.y, self.y1 = s, h, y, y1
        self.f0, self.f1, self.ks, self.acc = f0, f1, ks, acc

    def at(self, rk, theta: torch.Tensor, g=None) -> torch.Tensor:
        """Dense output ``y(s + θh)`` for ``θ`` [K] in [0, 1]; a missing end slope of
        the Hermite interpolant is evaluated with ``g`` (and kept)."""
        if self.ks is None and rk.has_own_interpolant:
            # a restart after a discontinuity (see _Segment.on_jump): the state stays
            return self.y if theta.dim() == 1 else self.y[:, None].expand(-1, theta.shape[1], -1)
        if not rk.has_own_interpolant:
            if self.f0 is None:
                self.f0 = g(self.s, self.y)
            if self.f1 is None:
                self.f1 = g(self.s + self.h, self.y1)
        return rk.interpolate(theta, self.y, self.y1, self.f0, self.f1, self.h, self.ks)


class _Segment:
    """A recorder for :func:`odenet._loop.integrate` replaying kept iterations
    ``i0 + 1 ..``: the forward's outputs inside them, their :class:`StepData`, or
    their end states copied into ``slots``."""

    def __init__(self, g, rk, i0, *, omap=None, dense=False, slots=None):
        self.g, self.rk, self.j, self.i0 = g, rk, i0, i0
        self.omap, self.dense, self.slots = omap, dense, slots
        self.outputs, self.steps, self.states = [], [], {}

    def append(self, item) -> None:  # the plain record protocol: nothing to keep
        pass

    def on_step(self, s, h, y, trial, f0, f1, accept) -> None:
        rk, g = self.rk, self.g
        self.j += 1
        y1, ks = trial.y1, trial.ks
        rounds = self.omap.rounds.get(self.j, ()) if self.omap is not None else ()
        interior = any(bool((m & ~e).any()) for m, _, _, e in rounds)
        if (
            (interior or self.dense)
            and rk.has_own_interpolant
            and ks.shape[0] == getattr(rk, "S", -1)
        ):
            ks = trial.ks = rk.extra_stages(g, s, y, h, ks)
        if f1 is None and (self.dense or (interior and not rk.has_own_interpolant)):
            f1 = trial.f1 = g(s + h, y1)
        for mask, idx, theta, at_end in rounds:
            if bool((mask & ~at_end).any()):
                value = rk.interpolate(theta, y, y1, f0, f1, h, ks)
                value = torch.where(at_end[:, None], y1, value)
            else:
                value = y1
            self.outputs.append((mask, idx, value))
        if self.dense:  # Hermite needs only the ends: drop the stages to save memory
            kept = ks if rk.has_own_interpolant else None
            self.steps.append(StepData(s, h, y, y1, f0, f1, kept, h > 0))
        if self.slots is not None:
            end = y1 if bool(accept.all()) else torch.where(accept[:, None], y1, y)
            self.states[self.j] = self.slots[self.j - self.i0 - 1].copy_(end)

    def on_jump(self, s, h, y) -> None:
        """The next kept iteration is a restart after a discontinuity: from ``s`` by
        ``h`` (two ulp, or 0 for rows that stayed) with the state ``y`` unchanged."""
        self.j += 1
        for mask, idx, _, _ in self.omap.rounds.get(self.j, ()) if self.omap is not None else ():
            self.outputs.append((mask, idx, y))  # (none: outputs map to the landing)
        if self.dense:  # no stages: its dense output is the constant state (StepData.at)
            self.steps.append(StepData(s, h, y, y, None, None, None, h > 0))
        if self.slots is not None:
            self.states[self.j] = self.slots[self.j - self.i0 - 1].copy_(y)


def _run_segment(g, rk, tape: Tape, i0: int, i1: int, y, recorder: _Segment, state=None):
    """Re-run kept iterations ``i0 + 1 .. i1`` through the one step loop: a fixed grid
    on the recorded step ends (rows that did not move in an iteration, having rejected
    or finished there, take a zero step, which the loop makes a no-op: state,
    derivative and a method's memory unchanged), a method with memory from its state
    at ``i0`` (``state``, default the tape's).  Returns the state after ``i1`` and the
    method's state there.

    A restart after a discontinuity (``jump_t``, :meth:`Tape.mark_jump`) is no step of
    the forward: the loop runs up to the landing one ulp before it, the restart is
    recorded as it happened (state and memory kept), and a new run starts one ulp
    after it, evaluating f there as the forward did.  (One run across it would step
    from the landing to the restart, a step the forward never took — a multistep
    method's history with a step of two ulp —, or, in a run ending at the restart,
    merge the landing into its end, within the loop's snap, and step across the
    discontinuity.)"""
    if state is None:
        state = tape.mstate.get(i0)
    start = i0
    for r in sorted(j for j in tape.restarts if i0 < j <= i1):
        if r - 1 > start:
            y, state = _run_grid(g, rk, tape, start, r - 1, y, recorder, state)
        S = tape.s
        recorder.on_jump(S[r - 1], S[r] - S[r - 1], y)
        if state is not None:  # as the forward did (odenet._loop.restart_history)
            state = restart_history(rk, state, y, g(S[r], y), tape.restarts[r])
        start = r
    if i1 > start:
        y, state = _run_grid(g, rk, tape, start, i1, y, recorder, state)
    return y, state


def _run_grid(g, rk, tape: Tape, i0: int, i1: int, y, recorder: _Segment, state):
    """Kept iterations ``i0 + 1 .. i1`` (none of them a restart) in one loop run."""
    grid = tape.s[i0 : i1 + 1].T.contiguous()  # [K, G]
    cfg = LoopConfig(
        rk=rk,
        rtol=0.0,
        atol=0.0,
        step_size=None,
        max_steps=2**62,
        first_step=None,
        min_step=0.0,
        max_step=math.inf,
        controller=PIDController(),
        grid=grid,
        method_state=state,
    )
    result = integrate(g, grid[:, [0, -1]], y, cfg, record=recorder)
    return result.ys[:, -1], result.method_state


def replay(g, rk, tape: Tape, omap: OutputMap, i0: int, i1: int, y, *, dense: bool, state=None):
    """Re-run kept iterations ``i0 + 1 .. i1`` from the state ``y`` at ``tape.s[i0]``
    (and a method with memory from ``state``, default its state kept at ``i0``).

    Returns ``(y_end, outputs, steps, state_end)``: ``outputs`` a list of ``(mask,
    idx, value)`` (the forward's output values inside the segment), ``steps`` a list of
    :class:`StepData` when ``dense`` (each with a derivative at both ends), ``state_end``
    the method's state after ``i1`` (``None`` without memory).  Differentiable when run
    under ``torch.enable_grad()``, also with respect to ``state``.
    """
    rec = _Segment(g, rk, i0, omap=omap, dense=dense)
    y_end, state_end = _run_segment(g, rk, tape, i0, i1, y, rec, state)
    return y_end, rec.outputs, rec.steps, state_end


def states(g, rk, tape: Tape, i0: int, i1: int, y, slots: torch.Tensor) -> dict:
    """The states after kept iterations ``i0 + 1 .. i1`` (``{j: y_j}``), recomputed
    from the state ``y`` at ``tape.s[i0]`` with the forward's steps and copied into
    ``slots`` ``[≥ i1 − i0, K, n]``; no outputs, no dense output."""
    rec = _Segment(g, rk, i0, slots=slots)
    _run_segment(g, rk, tape, i0, i1, y, rec)
    return rec.states
