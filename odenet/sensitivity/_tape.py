"""The forward tape: step ends of every step, states at a few checkpoints, and replay.

Both ``adjoint`` and ``checkpoint`` run the forward once without autograd and keep
only

* the internal time reached by every row after every loop iteration in which some
  row accepted a step (``K`` numbers per step: the accepted step sizes are the
  differences), and
* the state at every ``stride``-th kept iteration.  Without a user stride the tape
  starts with ``stride = 1`` and doubles it (dropping every other checkpoint)
  whenever it holds more than ``2·stride + 1`` checkpoints, so after ``N`` steps it
  holds between ``√(N/2)`` and ``2√(2N)`` states and segments of ``stride ≤ √(2N)``
  steps: memory ``O(√N)`` states.

A segment is *replayed* from its checkpoint by applying the same method step
(:meth:`RungeKutta.step`) with the recorded step sizes, the same dense output and the
same masking as the forward loop in :func:`odenet._loop.integrate`.
"""

from __future__ import annotations

import math

import torch

from odenet._errors import InputError


class Tape:
    """A list-like recorder passed as ``record=`` to :func:`odenet._loop.integrate`.

    Parameters
    ----------
    s0 : [K] start times (internal); y0 : [K, n] start states.
    every : int, optional
        Fixed checkpoint stride (steps per segment); default adapts to ``≈ √N``.
    """

    def __init__(
        self, s0: torch.Tensor, y0: torch.Tensor, every: int | None = None, *, levels: int = 1
    ):
        # step ends in one growing buffer: a tensor per step would cost ~2 kB of
        # bookkeeping each, i.e. memory growing with N
        self._buf = s0.detach().new_empty(64, s0.shape[0])
        self._buf[0] = s0.detach()
        self._n = 1
        self.ckpt = {0: y0.detach()}
        self.adaptive = every is None
        self.stride = 1 if every is None else int(every)
        self.levels = levels

    def append(self, item) -> None:
        s, y, accept = item
        if not bool(accept.any()):
            return
        if self._n == self._buf.shape[0]:
            grown = self._buf.new_empty(2 * self._n, self._buf.shape[1])
            grown[: self._n] = self._buf
            self._buf = grown
        self._buf[self._n] = s.detach()
        self._n += 1
        i = self._n - 1
        if i % self.stride == 0:
            self.ckpt[i] = y.detach()
        if self.adaptive and len(self.ckpt) > self._limit():
            self.stride *= 2
            self.ckpt = {j: v for j, v in self.ckpt.items() if j % self.stride == 0}

    def _limit(self) -> int:
        # one level: N/k stored states + k recomputed -> k ≈ √N.  Two levels (the
        # adjoint re-splits each segment into √k sub-segments): N/k + 2√k -> k ≈ N^⅔,
        # O(N^⅓) states in all.
        if self.levels == 1:
            return 2 * self.stride + 1
        return max(8, 2 * math.isqrt(self.stride)) + 1

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
            f"or None (≈ √N, chosen automatically), got {every!r}."
        )
    return every


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
                theta = ((t_ev - s_prev) / h_div).clamp(0, 1)
                at_end = (s_next - t_ev).abs() <= snap
                packed.append((mask, idx, theta, at_end))
            self.rounds[j] = packed


class StepData:
    """What one replayed step leaves for dense output (adjoint) or outputs."""

    __slots__ = ("acc", "f0", "f1", "h", "ks", "s", "y", "y1")

    def __init__(self, s, h, y, y1, f0, f1, ks, acc):
        self.s, self.h, self.y, self.y1 = s, h, y, y1
        self.f0, self.f1, self.ks, self.acc = f0, f1, ks, acc

    def at(self, rk, theta: torch.Tensor) -> torch.Tensor:
        """Dense output ``y(s + θh)`` for ``θ`` [K] in [0, 1]."""
        return rk.interpolate(theta, self.y, self.y1, self.f0, self.f1, self.h, self.ks)


def replay(
    g, rk, tape: Tape, omap: OutputMap, i0: int, i1: int, y, *, dense: bool, keep_every=None
):
    """Re-run kept iterations ``i0 + 1 .. i1`` from the state ``y`` at ``tape.s[i0]``.

    Returns ``(y_end, outputs, steps)``: ``outputs`` a list of ``(mask, idx, value)``
    (the forward's output values inside the segment), ``steps`` a list of
    :class:`StepData` when ``dense`` (each with a derivative at both ends).
    Differentiable when run under ``torch.enable_grad()``.  With ``keep_every=m``
    the states after iterations ``i0 + m, i0 + 2m, … < i1`` are returned too, as a
    fourth item (a dict).
    """
    s = tape.s[i0]
    f0 = g(s, y)
    outputs, steps, kept = [], [], {}
    for j in range(i0 + 1, i1 + 1):
        s1 = tape.s[j]
        h = s1 - s
        acc = h > 0
        res = rk.step(g, s, y, h, f0)
        y1, f1, ks = res.y1, res.f1, res.ks
        rounds = omap.rounds.get(j, ())
        interior = any(bool((m & ~e).any()) for m, _, _, e in rounds)
        if (interior or dense) and rk.has_own_interpolant:
            ks = rk.extra_stages(g, s, y, h, ks)
        if f1 is None and (j < tape.n_steps or dense or (interior and not rk.has_own_interpolant)):
            f1 = g(s1, y1)
        for mask, idx, theta, at_end in rounds:
            if bool((mask & ~at_end).any()):
                value = rk.interpolate(theta, y, y1, f0, f1, h, ks)
                value = torch.where(at_end[:, None], y1, value)
            else:
                value = y1
            outputs.append((mask, idx, value))
        if dense:  # Hermite needs only the ends: drop the stages to save memory
            kept = ks if rk.has_own_interpolant else None
            steps.append(StepData(s, h, y, y1, f0, f1, kept, acc))
        if bool(acc.all()):
            y = y1
            f0 = f1 if f1 is not None else f0
        else:
            y = torch.where(acc[:, None], y1, y)
            if f1 is not None:
                f0 = torch.where(acc[:, None], f1, f0)
        if rk.newton is not None:
            rk.newton.state_changed()
        s = s1
        if keep_every and j < i1 and (j - i0) % keep_every == 0:
            kept[j] = y
    if keep_every:
        return y, outputs, steps, kept
    return y, outputs, steps
