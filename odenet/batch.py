"""Irregularly sampled time series as one padded batch with per-sample time grids."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from odenet._errors import InputError


@dataclass
class IrregularBatch:
    """A batch of `B` series, each with its own observation times and missing channels.

    Sample `b` owns the first `lengths[b]` columns; columns beyond are padding.
    Padding times continue *strictly increasing* past the sample's last time (so each
    row is a valid per-sample grid for [`odenet.solve`][odenet.solve]), with `mask = 0`;
    `from_lists` places them `1e-6 · max(1, max|t|)` apart (`1024 ε` relative in float32),
    so that a solve does not go on far past a row's data.
    Models must give outputs at valid positions that do not depend on the padding.

    Attributes
    ----------
    times : Tensor [B, T]
        Observation times, strictly increasing along each row (units of the data).
    values : Tensor [B, T, D]
        Observations; 0 where unobserved.
    mask : Tensor [B, T, D]
        1.0 where a channel was observed, 0.0 where missing or padding.
    lengths : Tensor [B] (long)
        Number of valid time points of each sample (≥ 1).
    """

    times: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor

    def __post_init__(self) -> None:
        B, T = self.times.shape if self.times.dim() == 2 else (None, None)
        if B is None:
            raise InputError(f"`times` must be [B, T], got shape {tuple(self.times.shape)}.")
        if self.values.shape[:2] != (B, T) or self.mask.shape != self.values.shape:
            raise InputError(
                f"`values` and `mask` must be [B, T, D] = [{B}, {T}, D] with equal shapes; got "
                f"{tuple(self.values.shape)} and {tuple(self.mask.shape)}."
            )
        if (
            self.lengths.shape != (B,)
            or bool((self.lengths < 1).any())
            or bool((self.lengths > T).any())
        ):
            raise InputError(f"`lengths` must be [B] = [{B}] with 1 ≤ length ≤ {T}.")
        devices = {t.device for t in (self.times, self.values, self.mask, self.lengths)}
        if len(devices) > 1:
            # caught here, not as a device error deep inside a model's solve
            raise InputError(
                "`times`, `values`, `mask` and `lengths` must be on one device, got "
                f"{self.times.device}, {self.values.device}, {self.mask.device} and "
                f"{self.lengths.device}; move them together (`IrregularBatch.to(device)`)."
            )
        if T > 1 and not bool((self.times.diff(dim=1) > 0).all()):
            raise InputError(
                "`times` must be strictly increasing along each row, padding included "
                "(pad by continuing just past the last time, as `IrregularBatch.from_lists` does)."
            )

    @property
    def valid(self) -> torch.Tensor:
        """[B, T] bool: True at a sample's own (non-padding) time points."""
        T = self.times.shape[1]
        return torch.arange(T, device=self.times.device)[None, :] < self.lengths[:, None]

    def to(self, *args, **kwargs) -> IrregularBatch:
        """Move/cast like `Tensor.to` (`lengths` only moves device).

        `batch.to("cuda")` moves all four tensors; `batch.to(model_param)` takes a
        tensor's device and dtype, as `Tensor.to` does."""
        times = self.times.to(*args, **kwargs)
        return IrregularBatch(
            times,
            self.values.to(*args, **kwargs),
            self.mask.to(*args, **kwargs),
            self.lengths.to(times.device),
        )

    @staticmethod
    def from_lists(times: list, values: list, masks: list | None = None) -> IrregularBatch:
        """Pad per-sample `times[b]` [T_b] and `values[b]` [T_b, D] into one batch.

        Every row needs at least one time and the same `D` (one channel: `[T_b, 1]`);
        an InputError names the row otherwise.  The times of all rows take one floating
        dtype (the rows' promoted; integer times become float64, exact up to 2^53).
        The batch is built on the device of ``times[0]`` (rows elsewhere are copied there).

        Examples
        --------
        Two series of different lengths, padded to the longest:

        >>> import torch
        >>> from odenet.batch import IrregularBatch
        >>> b = IrregularBatch.from_lists([torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 0.5])],
        ...                               [torch.ones(3, 1), torch.ones(2, 1)])
        >>> b.lengths
        tensor([3, 2])
        """
        if len(times) == 0 or len(times) != len(values):
            raise InputError("`times` and `values` must be non-empty lists of equal length.")
        times, values = _checked_rows(times, values)
        B = len(times)
        T = max(len(t) for t in times)
        D = values[0].shape[-1]
        dtype = values[0].dtype
        # the rows' device: a model's merged context (queries added) stays on its GPU
        dev = times[0].device
        tt = torch.zeros(B, T, dtype=times[0].dtype, device=dev)
        vv = torch.zeros(B, T, D, dtype=dtype, device=dev)
        mm = torch.zeros(B, T, D, dtype=dtype, device=dev)
        lengths = torch.tensor([len(t) for t in times], device=dev)
        # padding times follow a row's last one closely (a solve goes on through
        # them): +1, +2, ... took a row past a blow-up that no data of it reaches
        scale = max(1.0, max(float(t.abs().max()) for t in times if len(t)))
        gap = max(1e-6, 1024 * torch.finfo(tt.dtype).eps) * scale
        for b in range(B):
            n = len(times[b])
            tt[b, :n] = times[b]
            last = times[b][-1]
            tt[b, n:] = last + gap * torch.arange(1, T - n + 1, dtype=tt.dtype, device=dev)
            vals = torch.nan_to_num(values[b], nan=0.0)
            vv[b, :n] = vals
            if masks is None:
                mm[b, :n] = (~torch.isnan(values[b])).to(dtype)
            else:
                mm[b, :n] = masks[b].to(dtype)
        return IrregularBatch(tt, vv, mm, lengths)


def _checked_rows(times: list, values: list) -> tuple[list, list]:
    """Each row as ``times[b]`` ``[T_b]`` (≥ 1 point) and ``values[b]`` ``[T_b, D]``, one
    ``D``; an InputError naming the row otherwise (a ``[T]`` values row was read as
    ``D = T`` and broadcast into a ``[B, T, T]`` batch).  The times of every row in one
    floating dtype: the rows' own, promoted; integer times (sample indices,
    timestamps) become float64, which holds them exactly up to 2^53 (float32 moved
    1_700_000_100 by 28)."""
    # tensors stay where they are (as_tensor would take them to a default device)
    times = [t if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in times]
    values = [v if isinstance(v, torch.Tensor) else torch.as_tensor(v) for v in values]
    floats = [t.dtype for t in times if t.is_floating_point()]
    tdt = torch.float64 if len(floats) < len(times) else floats[0]
    for dt in floats:
        tdt = torch.promote_types(tdt, dt)
    D = values[0].shape[-1] if values[0].dim() == 2 else None
    for b, (t, v) in enumerate(zip(times, values, strict=True)):
        if t.dim() != 1 or len(t) == 0:
            raise InputError(
                f"`times[{b}]` has shape {tuple(t.shape)}; each row's times must be a 1-D "
                "tensor [T_b] with at least one time (leave out a series with no data)."
            )
        if t.dtype == torch.bool or t.is_complex():
            raise InputError(f"`times[{b}]` must be real numbers, got dtype {t.dtype}.")
        want = f"[{len(t)}, {'D' if D is None else D}]"
        if v.dim() != 2 or v.shape[0] != len(t) or (D is not None and v.shape[1] != D):
            hint = " (one channel: `values.unsqueeze(-1)`)" if v.dim() == 1 else ""
            raise InputError(
                f"`values[{b}]` has shape {tuple(v.shape)}; expected [T_b, D] = {want}: one "
                f"row per time of `times[{b}]`, the same D channels in every row{hint}."
            )
    return [t.to(tdt) for t in times], values
