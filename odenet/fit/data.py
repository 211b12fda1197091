"""Long-format tables → :class:`~odenet.batch.IrregularBatch`; normalisation; splits.

A *long-format* table has one row per (series, time) with one column per channel;
a missing value means "this channel was not observed at this time".  Each series
keeps its own time grid: the batch is padded only to the longest series, never to
the union of all times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from odenet._errors import InputError
from odenet.batch import IrregularBatch

DTYPE = torch.float64


class DataFormatError(InputError):
    """A long-format table is malformed; the message names the row and the column."""


class SeriesMismatchError(InputError):
    """Two things that must describe the same series, row for row, do not: a context
    and a target / query with different numbers of series, or a batch whose rows are
    not the series a model holds per-series data (doses) for."""


@dataclass
class SeriesData:
    """A batch of irregular series in physical units, with their names.

    Attributes
    ----------
    batch : IrregularBatch
        ``times [B, T]``, ``values [B, T, D]`` (0 where missing), ``mask [B, T, D]``.
    ids : list
        Series identifiers, one per batch row.
    channels : list of str
        Channel names, one per value column ``D``.
    meta : dict
        Free-form extras (true parameters, covariates such as doses), never tensors
        that the loader relies on.
    """

    batch: IrregularBatch
    ids: list
    channels: list
    meta: dict = field(default_factory=dict)

    @property
    def n_series(self) -> int:
        return self.batch.times.shape[0]

    def subset(self, index) -> SeriesData:
        """The series at positions ``index`` (a list of ints), repacked tightly."""
        index = list(index)
        b = self.batch
        times, values, masks = [], [], []
        for i in index:
            n = int(b.lengths[i])
            times.append(b.times[i, :n])
            values.append(b.values[i, :n])
            masks.append(b.mask[i, :n])
        return SeriesData(
            IrregularBatch.from_lists(times, values, masks),
            [self.ids[i] for i in index],
            list(self.channels),
            dict(self.meta),
        )


# --- loading -------------------------------------------------------------------------


def _line(row: int, from_csv: bool) -> str:
    # CSV users think in file lines (header is line 1); DataFrame users in row labels.
    return f"line {row + 2} of the CSV" if from_csv else f"row {row}"


def load_long(
    source,
    *,
    id_col: str = "id",
    time_col: str = "time",
    channels: list | None = None,
    min_points: int = 2,
) -> SeriesData:
    """Read a long-format table into a batch of per-series time grids.

    Parameters
    ----------
    source : str, Path or pandas.DataFrame
        A CSV file or a DataFrame with one row per observation time of a series.
    id_col, time_col : str
        Names of the series-id column and the time column (time in data units).
    channels : list of str, optional
        Value columns; default: every column except ``id_col`` and ``time_col``
        (and a pandas ``rownames`` column).
    min_points : int
        The fewest observation times a series may have: 2 to fit (one point has no
        dynamics to learn from), 1 for the context of a prediction (conditioning on a
        single observation is meaningful).

    Returns
    -------
    SeriesData
        Batch in float64, series in order of first appearance; times strictly
        increasing in each series; missing values masked.

    Raises
    ------
    DataFormatError
        Missing columns, missing series ids, non-numeric values, missing times,
        duplicate or unsorted times within a series, a series with fewer than
        ``min_points`` points; a series with a channel that is never observed is allowed
        (masked).
    """
    import pandas as pd

    from_csv = not isinstance(source, pd.DataFrame)
    if from_csv:
        path = Path(source)
        if not path.exists():
            raise DataFormatError(f"data file {str(path)!r} does not exist.")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as e:  # pandas raises many kinds of parse errors
            raise DataFormatError(f"could not parse {str(path)!r} as CSV: {e}") from None
    else:
        df = source.reset_index(drop=True)
    missing = [c for c in (id_col, time_col) if c not in df.columns]
    if channels is not None:
        missing += [c for c in channels if c not in df.columns]
    if missing:
        raise DataFormatError(
            f"column(s) {missing} not found; the table has columns {list(df.columns)}. "
            f"Pass `id_col=`, `time_col=` and `channels=` to name them."
        )
    if channels is None:
        channels = [c for c in df.columns if c not in (id_col, time_col, "rownames")]
    if not channels:
        raise DataFormatError(
            f"no value columns: the table has only {list(df.columns)}; add at least one "
            "channel column next to the id and time columns."
        )
    if len(df) == 0:
        raise DataFormatError("the table has no rows.")

    def numeric(col: str, allow_missing: bool) -> np.ndarray:
        raw = df[col]
        out = np.empty(len(raw))
        for r, v in enumerate(raw.tolist()):
            if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
                if not allow_missing:
                    raise DataFormatError(
                        f"{_line(r, from_csv)}, column {col!r}: missing value; every "
                        f"observation needs a {col}."
                    )
                out[r] = np.nan
                continue
            try:
                out[r] = float(v)
            except (TypeError, ValueError):
                raise DataFormatError(
                    f"{_line(r, from_csv)}, column {col!r}: {v!r} is not a number."
                ) from None
            if not math.isfinite(out[r]) and not (allow_missing and math.isnan(out[r])):
                raise DataFormatError(f"{_line(r, from_csv)}, column {col!r}: {v!r} is not finite.")
        return out

    t_all = numeric(time_col, allow_missing=False)
    vals = np.stack([numeric(c, allow_missing=True) for c in channels], axis=1)
    ids = df[id_col].tolist()
    for r, s in enumerate(ids):
        # an empty cell made one series of every id-less row (a CSV), a NaN one series
        # per row (a DataFrame)
        if (
            s is None
            or (isinstance(s, float) and math.isnan(s))
            or (isinstance(s, str) and not s.strip())
        ):
            raise DataFormatError(
                f"{_line(r, from_csv)}, column {id_col!r}: missing series id; every row needs "
                "the id of its series."
            )
    order: dict = {}
    for r, s in enumerate(ids):
        order.setdefault(s, []).append(r)
    times, values = [], []
    for s, rows in order.items():
        t = t_all[rows]
        d = np.diff(t)
        if (d == 0).any():
            k = int(np.nonzero(d == 0)[0][0])
            raise DataFormatError(
                f"series {s!r}: duplicate time {t[k + 1]} at {_line(rows[k + 1], from_csv)}, "
                f"column {time_col!r} (also at {_line(rows[k], from_csv)}); merge or drop "
                "repeated observations."
            )
        if (d < 0).any():
            k = int(np.nonzero(d < 0)[0][0])
            raise DataFormatError(
                f"series {s!r}: times not sorted at {_line(rows[k + 1], from_csv)}, column "
                f"{time_col!r} ({t[k + 1]} comes after {t[k]}); sort by ({id_col}, {time_col})."
            )
        if len(rows) < min_points:
            raise DataFormatError(
                f"series {s!r} has a single point ({_line(rows[0], from_csv)}); a series needs "
                "at least two observation times — drop it or merge it with another series."
            )
        times.append(torch.tensor(t, dtype=DTYPE))
        values.append(torch.tensor(vals[rows], dtype=DTYPE))
    return SeriesData(IrregularBatch.from_lists(times, values), list(order), list(channels))


def to_long(data: SeriesData, *, id_col: str = "id", time_col: str = "time"):
    """Inverse of :func:`load_long`: a pandas DataFrame with NaN for missing values."""
    import pandas as pd

    b = data.batch
    rows = []
    for i, s in enumerate(data.ids):
        for k in range(int(b.lengths[i])):
            v = torch.where(b.mask[i, k] > 0, b.values[i, k], torch.nan).tolist()
            rows.append([s, float(b.times[i, k]), *v])
    return pd.DataFrame(rows, columns=[id_col, time_col, *data.channels])


# --- normalisation -------------------------------------------------------------------


class Normalizer(torch.nn.Module):
    """Per-channel affine map ``z = (x − mean) / std`` learnt from observed values only.

    A module (buffers only), so it is saved in the model's checkpoint.
    """

    def __init__(self, dim: int, device: torch.device | str | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=DTYPE, device=device))
        self.register_buffer("std", torch.ones(dim, dtype=DTYPE, device=device))

    @staticmethod
    def fit(batch: IrregularBatch) -> Normalizer:
        """Masked mean and standard deviation of each channel (std floored at 1e-8), on
        the batch's device."""
        m = batch.mask
        n = m.sum(dim=(0, 1)).clamp_min(1)
        mean = (batch.values * m).sum(dim=(0, 1)) / n
        var = (((batch.values - mean) ** 2) * m).sum(dim=(0, 1)) / n
        norm = Normalizer(batch.values.shape[-1], device=batch.values.device)
        norm.mean.copy_(mean)
        norm.std.copy_(var.sqrt().clamp_min(1e-8))
        return norm

    def transform(self, batch: IrregularBatch) -> IrregularBatch:
        """Batch with normalised values (0 stays at missing positions)."""
        v = (batch.values - self.mean) / self.std * batch.mask
        return IrregularBatch(batch.times, v, batch.mask, batch.lengths)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Physical values from normalised ones; ``z [..., D]``."""
        return z * self.std + self.mean


# --- selecting points and splitting ----------------------------------------------------


def select(batch: IrregularBatch, keep: torch.Tensor) -> IrregularBatch:
    """Repack the points where ``keep [B, T]`` is true into a tight padded batch.

    Series keep their row.  A series with no kept point gets one dummy point just
    after its last time with ``mask = 0`` (so rows stay aligned with other batches).
    """
    keep = keep & batch.valid
    times, values, masks = [], [], []
    for b in range(batch.times.shape[0]):
        k = keep[b]
        if bool(k.any()):
            times.append(batch.times[b, k])
            values.append(batch.values[b, k])
            masks.append(batch.mask[b, k])
        else:
            n = int(batch.lengths[b])
            times.append(batch.times[b, n - 1 : n] + 1e-6)
            values.append(torch.zeros_like(batch.values[b, :1]))
            masks.append(torch.zeros_like(batch.mask[b, :1]))
    return IrregularBatch.from_lists(times, values, masks)


def concat(a: IrregularBatch, b: IrregularBatch) -> IrregularBatch:
    """Stack two batches with the same channels along the series dimension."""
    times, values, masks = [], [], []
    for x in (a, b):
        for i in range(x.times.shape[0]):
            n = int(x.lengths[i])
            times.append(x.times[i, :n])
            values.append(x.values[i, :n])
            masks.append(x.mask[i, :n])
    return IrregularBatch.from_lists(times, values, masks)


def split_series(
    data: SeriesData, fractions=(0.7, 0.15, 0.15), *, seed: int = 0
) -> tuple[SeriesData, SeriesData, SeriesData]:
    """Train / validation / test split by series (a random permutation, reproducible).

    ``fractions`` must sum to 1; each part gets at least one series when possible.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise InputError(
            f"`fractions` must be three non-negative numbers summing to 1, got {fractions}."
        )
    n = data.n_series
    if n < 3:
        raise InputError(
            f"split by series needs at least 3 series, got {n}; split by time instead."
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).tolist()
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise InputError(f"fractions {fractions} leave no training series out of {n}.")
    parts = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    return tuple(data.subset(sorted(p)) for p in parts)


def split_time(batch: IrregularBatch, t_split) -> tuple[IrregularBatch, IrregularBatch]:
    """Split every series at time ``t_split`` (a number or a [B] tensor).

    Returns ``(past, future)``: points with ``t ≤ t_split`` and points after it.  Use
    ``past`` as training/conditioning data and ``future`` to score extrapolation.
    """
    ts = torch.as_tensor(t_split, dtype=batch.times.dtype, device=batch.times.device)
    ts = ts.reshape(-1, 1) if ts.dim() == 1 else ts
    past = batch.times <= ts
    return select(batch, past), select(batch, ~past)


def split_tail(
    batch: IrregularBatch, fraction: float = 0.2
) -> tuple[IrregularBatch, IrregularBatch]:
    """Hold out the last ``fraction`` of each series' time span (extrapolation target)."""
    if not 0 < fraction < 1:
        raise InputError(f"`fraction` must be in (0, 1), got {fraction}.")
    n = batch.lengths - 1
    t0 = batch.times[:, 0]
    t1 = batch.times.gather(1, n[:, None])[:, 0]
    return split_time(batch, t1 - fraction * (t1 - t0))


def holdout_points(
    batch: IrregularBatch, fraction: float = 0.2, *, seed: int = 0, keep_ends: bool = True
) -> tuple[IrregularBatch, IrregularBatch]:
    """Hold out a random ``fraction`` of each series' observation times (interpolation target).

    Returns ``(kept, held_out)``.  With ``keep_ends`` the first and last point of each
    series stay in ``kept``, so held-out times lie strictly inside the window.
    """
    if not 0 < fraction < 1:
        raise InputError(f"`fraction` must be in (0, 1), got {fraction}.")
    g = torch.Generator().manual_seed(seed)
    # drawn on the CPU: the same points held out whatever device holds the batch
    u = torch.rand(batch.times.shape, generator=g, dtype=DTYPE, device="cpu")
    out = (u.to(batch.times.device) < fraction) & batch.valid
    if keep_ends:
        out[:, 0] = False
        out[torch.arange(out.shape[0], device=out.device), batch.lengths - 1] = False
    return select(batch, ~out), select(batch, out)
