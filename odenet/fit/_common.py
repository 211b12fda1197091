"""Small tensor helpers shared by the fitted models (masked losses, LOCF, look-ups)."""

from __future__ import annotations

import contextlib
import functools

import torch

from odenet.batch import IrregularBatch


def model_device(model: torch.nn.Module) -> torch.device | None:
    """The device of ``model``'s parameters (of its buffers for a parameter-free model);
    None for a model that holds no tensor (a fixed baseline runs where its data are)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def placed(
    model: torch.nn.Module, context: IrregularBatch, query_times: torch.Tensor
) -> tuple[IrregularBatch, torch.Tensor]:
    """``context`` on ``model``'s device and ``query_times`` there in the context's time
    dtype: what every ``predict`` works on.  Queries (or a context) built on the CPU for
    a GPU model are moved, as :func:`odenet.solve` moves ``t`` to ``y0``'s device."""
    dev = model_device(model) or context.times.device
    if context.times.device != dev:
        context = context.to(dev)
    return context, query_times.to(device=dev, dtype=context.times.dtype)


def on_cpu(method):
    """Run a model method whose arithmetic is numpy/scipy (least squares, curve fits) on
    the CPU, whatever device the model and its inputs are on.

    The module is moved to the CPU for the call and back after it (parameters keep their
    identity: ``Module.to`` swaps their data), tensor and :class:`IrregularBatch`
    arguments are copied to the CPU, and tensors in the result (also inside tuples,
    lists and dicts) go to the model's device, or the inputs' for a model without
    tensors.  The method runs with the CPU as the default device, so its own tensors
    land there under ``torch.set_default_device("cuda")`` too."""

    def _where(x, dev):
        if isinstance(x, torch.Tensor | IrregularBatch):
            return x.to(dev)
        if isinstance(x, tuple | list):
            return type(x)(_where(v, dev) for v in x)
        if isinstance(x, dict):
            return {k: _where(v, dev) for k, v in x.items()}
        return x

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        home = model_device(self)
        if home is None:
            for a in args:
                if isinstance(a, torch.Tensor | IrregularBatch):
                    home = a.times.device if isinstance(a, IrregularBatch) else a.device
                    break
        cpu = torch.device("cpu")
        # `with cpu:` is a torch-function mode that every torch call then goes through
        # (half of a greybox fit's time on the CPU): entered only where it changes a
        # default device that is not the CPU
        default = cpu if torch.empty(0).device.type != "cpu" else contextlib.nullcontext()
        if home is None or home.type == "cpu":
            with default:
                return method(self, *args, **kwargs)
        self.to(cpu)
        try:
            with default:
                out = method(self, *_where(args, cpu), **_where(kwargs, cpu))
        finally:
            self.to(home)
        return _where(out, home)

    return wrapper


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(pred − target)²`` over observed entries (``mask = 1``)."""
    return (((pred - target) ** 2) * mask).sum() / mask.sum().clamp_min(1)


def observed_yet(batch: IrregularBatch) -> torch.Tensor:
    """[B, T, D] bool: channel ``d`` of series ``b`` observed at or before ``t_i``."""
    return (batch.mask > 0).to(torch.uint8).cummax(dim=1).values > 0


def fill_locf(batch: IrregularBatch, *, backward: bool = False) -> torch.Tensor:
    """[B, T, D] values with each missing channel carried forward from its last observation.

    Before a channel's first observation there is nothing to carry: the value is 0, the
    channel mean once the data are normalised, and the mask says it is unobserved (as in
    GRU-D).  The fill is causal — entry ``i`` depends on observations at or before ``t_i``
    only — so a model fed it never sees a value before it was observed (a backward fill
    put a channel's first observation into the shots and inputs that are scored on it).

    ``backward=True`` fills the leading gap with the channel's first observation instead:
    for uses that predict nothing (a starting guess for a fit, a per-series constant).
    """
    v, m = batch.values, batch.mask > 0
    B, T, D = v.shape
    ar = torch.arange(T, device=v.device)[None, :, None].expand(B, T, D)
    idx = torch.where(m, ar, torch.full_like(ar, -1)).cummax(dim=1).values
    if backward:
        first = torch.where(m, ar, torch.full_like(ar, T)).min(dim=1, keepdim=True).values
        idx = torch.where(idx >= 0, idx, torch.where(first < T, first, -1).expand(B, T, D))
    out = v.gather(1, idx.clamp_min(0))
    return torch.where(idx >= 0, out, torch.zeros_like(out))


def last_index(times: torch.Tensor, lengths: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """[B, Q] index of the last valid context time ``≤ query`` (0 if none)."""
    T = times.shape[1]
    valid = torch.arange(T, device=times.device)[None, :] < lengths[:, None]
    le = (times[:, None, :] <= query[:, :, None]) & valid[:, None, :]
    idx = le.to(torch.long).cumsum(-1).argmax(-1)  # last True (first max of cumsum)
    return torch.where(le.any(-1), idx, torch.zeros_like(idx))


def merge_queries(
    context: IrregularBatch, query: torch.Tensor
) -> tuple[IrregularBatch, torch.Tensor]:
    """Context observations plus unobserved (``mask = 0``) points at ``query [B, Q]``.

    Returns the merged batch (each row sorted in time) and ``pos [B, Q]``, the column
    of each query in it.  Repeated queries of a row share one point (both read it).  A
    query equal to a context time is moved by 1e-9 (relative, at least four float
    spacings) so times stay strictly increasing; it sits *after* that observation.
    """
    B, Q = query.shape
    D = context.values.shape[-1]
    times, values, masks, poss = [], [], [], []
    for b in range(B):
        n = int(context.lengths[b])
        tc = context.times[b, :n]
        tq, back = torch.unique(query[b].to(tc.dtype), sorted=True, return_inverse=True)
        clash = torch.isin(tq, tc)
        ulp = torch.nextafter(tq, torch.full_like(tq, float("inf"))) - tq
        tq = torch.where(clash, tq + torch.maximum(1e-9 * (1 + tq.abs()), 4 * ulp), tq)
        t = torch.cat([tc, tq])
        order = torch.argsort(t, stable=True)
        inv = torch.empty_like(order)
        inv[order] = torch.arange(len(order), device=order.device)
        k = len(tq)
        times.append(t[order])
        values.append(torch.cat([context.values[b, :n], context.values.new_zeros(k, D)])[order])
        masks.append(torch.cat([context.mask[b, :n], context.mask.new_zeros(k, D)])[order])
        poss.append(inv[n:][back])
    return IrregularBatch.from_lists(times, values, masks), torch.stack(poss)


class QueryGrid:
    """Solve grids from each series' initial time ``t0`` to queries on either side of it.

    Rows ``0 … B−1`` run forward from ``t0[b]`` through series ``b``'s distinct queries
    after it (ascending); then one row per series with queries *before* ``t0`` runs
    backward from ``t0`` through those (descending): the model's backcast.  A query is
    never moved to ``t0`` — clamping returned the state at ``t0`` for every earlier time
    and made two such queries collide.  A query at ``t0`` reads the initial state
    (column 0).  Rows are padded to one length by steps of 1e-6 (relative) past their
    last time, so every row is strictly monotone.

    ``grid [R, M]``, ``series [R]`` (the series of each row); :meth:`take` maps a
    solution on these rows back to the queries in the caller's order, duplicates included.
    """

    def __init__(self, query: torch.Tensor, t0: torch.Tensor):
        B, Q = query.shape
        dev = t0.device  # the grid and its index maps live with the context's times
        query = query.to(dev)
        fwd, bwd, series_b, at = [], [], [], []  # at: per series, (row, col) of its unique queries
        for b in range(B):
            s = t0[b]
            u, inv = torch.unique(query[b], sorted=True, return_inverse=True)
            n_before = int((u < s).sum())
            after = u[n_before:]
            starts = bool(after.numel()) and bool(after[0] == s)  # a query exactly at t0
            fwd.append(torch.cat([s[None], after[int(starts) :]]))
            col_f = torch.arange(len(after), device=dev) + 1 - int(starts)
            row_b = B + len(bwd)
            if n_before:
                bwd.append(torch.cat([s[None], u[:n_before].flip(0)]))
                series_b.append(b)
            col_b = n_before - torch.arange(n_before, device=dev)  # u ascending, the row descending
            rows = torch.cat([torch.full((n_before,), row_b, device=dev),
                              torch.full((len(after),), b, device=dev)])  # fmt: skip
            at.append((rows[inv], torch.cat([col_b, col_f])[inv]))
        M = max(2, max(len(g) for g in fwd + bwd))
        grid = [_pad(g, M, +1) for g in fwd] + [_pad(g, M, -1) for g in bwd]
        self.grid = torch.stack(grid)
        self.series = torch.cat(
            [torch.arange(B, device=dev), torch.tensor(series_b, dtype=torch.long, device=dev)]
        )
        self._flat = torch.stack([r * M + c for r, c in at])  # [B, Q] into [R·M]

    def take(self, out: torch.Tensor) -> torch.Tensor:
        """``out [R, M, ...]`` on :attr:`grid` → ``[B, Q, ...]`` at the queries."""
        R, M = out.shape[:2]
        B, Q = self._flat.shape
        return out.reshape(R * M, *out.shape[2:])[self._flat.reshape(-1)].reshape(
            B, Q, *out.shape[2:])  # fmt: skip


def _pad(g: torch.Tensor, M: int, sign: int) -> torch.Tensor:
    """``g`` continued to length ``M`` by steps of 1e-6 (relative) in direction ``sign``."""
    last = g[-1]
    k = torch.arange(1, M - len(g) + 1, dtype=g.dtype, device=g.device)
    return torch.cat([g, last + sign * 1e-6 * (1 + last.abs()) * k])
