"""odenet.fit.data: long-format loading, malformed-file errors, normalisation, splits."""

import numpy as np
import pandas as pd
import pytest
import torch

import odenet
from odenet.fit import (
    DataFormatError,
    Normalizer,
    holdout_points,
    load_long,
    split_series,
    split_tail,
    to_long,
)
from odenet.fit._common import fill_locf, last_index, merge_queries


def table():
    return pd.DataFrame(
        {
            "id": ["a", "a", "a", "b", "b", "c", "c", "c", "c"],
            "time": [0.0, 0.5, 2.0, 0.1, 0.7, 0.2, 0.3, 1.1, 4.0],
            "x": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0, 7.0, np.nan, 9.0],
            "y": [0.1, 0.2, np.nan, np.nan, 0.5, 0.6, 0.7, 0.8, 0.9],
        }
    )


def test_per_series_grids_are_padded_to_the_longest_series_not_the_union_of_times():
    d = load_long(table())
    assert d.batch.times.shape == (3, 4)  # union of times would be 9 columns
    assert d.ids == ["a", "b", "c"] and d.channels == ["x", "y"]
    assert d.batch.lengths.tolist() == [3, 2, 4]
    assert d.batch.mask[0, 1].tolist() == [0.0, 1.0]  # x missing at t = 0.5
    assert d.batch.values[0, 1, 0] == 0.0


def test_long_table_round_trips_through_csv(tmp_path):
    df = table()
    p = tmp_path / "d.csv"
    df.to_csv(p, index=False)
    d = load_long(p)
    back = to_long(d)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)


BAD = [
    (lambda df: df.drop(columns=["time"]), r"column\(s\) \['time'\] not found"),
    (lambda df: df.assign(x=df.x.astype(object).where(df.index != 4, "abc")),
     r"row 4, column 'x': 'abc' is not a number"),
    (lambda df: df.assign(time=df.time.where(df.index != 1, 0.0)),
     r"series 'a': duplicate time 0.0 at row 1, column 'time'"),
    (lambda df: df.assign(time=df.time.where(df.index != 2, 0.25)),
     r"series 'a': times not sorted at row 2, column 'time'"),
    (lambda df: df.assign(id=df.id.where(df.index != 8, "z")), r"series 'z' has a single point \(row 8\)"),  # noqa: E501
    (lambda df: df.assign(time=df.time.where(df.index != 6, np.nan)), r"row 6, column 'time': missing value"),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize("corrupt, message", BAD)
def test_every_malformed_table_raises_naming_row_and_column(corrupt, message):
    with pytest.raises(DataFormatError, match=message):
        load_long(corrupt(table()))


def test_csv_errors_name_the_file_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("id,time,x\na,0,1\na,1,oops\n")
    with pytest.raises(DataFormatError, match=r"line 3 of the CSV, column 'x': 'oops'"):
        load_long(p)
    with pytest.raises(DataFormatError, match="does not exist"):
        load_long(tmp_path / "nope.csv")
    with pytest.raises(DataFormatError, match=r"column\(s\) \['w'\] not found"):
        load_long(table(), channels=["w"])


def test_normalizer_uses_observed_values_only():
    df = table()
    norm = Normalizer.fit(load_long(df).batch)
    np.testing.assert_allclose(norm.mean.numpy(), df[["x", "y"]].mean().to_numpy())
    np.testing.assert_allclose(norm.std.numpy(), df[["x", "y"]].std(ddof=0).to_numpy())
    b = load_long(df).batch
    z = norm.transform(b)
    back = norm.inverse(z.values)
    assert torch.allclose(back[b.mask > 0], b.values[b.mask > 0])


def test_fill_locf_matches_pandas_ffill_causal_by_default():
    """Default: ffill, then 0 (the mean) before a channel's first observation — never a
    later value; ``backward=True``: ffill then bfill (starting guesses, constants)."""
    df = table()
    d = load_long(df)
    filled, both = fill_locf(d.batch), fill_locf(d.batch, backward=True)
    for i, s in enumerate(d.ids):
        one = df[df.id == s][["x", "y"]]
        np.testing.assert_allclose(filled[i, : len(one)].numpy(), one.ffill().fillna(0).to_numpy())
        np.testing.assert_allclose(both[i, : len(one)].numpy(), one.ffill().bfill().to_numpy())
    assert (filled != both).any()  # the table has a leading gap (series 0, channel y)


def test_last_index_and_merge_queries():
    d = load_long(table())
    q = torch.tensor([[0.6, 2.5], [0.1, 0.8], [0.0, 5.0]], dtype=torch.float64)
    assert last_index(d.batch.times, d.batch.lengths, q).tolist() == [[1, 2], [0, 1], [0, 3]]
    merged, pos = merge_queries(d.batch, q)
    assert torch.allclose(merged.times.gather(1, pos), q, atol=1e-8)
    assert (merged.mask.gather(1, pos[..., None].expand(3, 2, 2)) == 0).all()
    assert merged.lengths.tolist() == [5, 4, 6]


def test_splits_partition_series_and_points():
    from odenet.fit import datasets

    d = datasets.lotka_volterra(10, observed=0.5, seed=3)
    tr, va, te = split_series(d, (0.6, 0.2, 0.2), seed=1)
    ids = tr.ids + va.ids + te.ids
    assert sorted(ids) == list(range(10)) and len(set(ids)) == 10
    past, future = split_tail(d.batch, 0.25)
    assert (past.lengths + future.lengths == d.batch.lengths).all()
    t_end = d.batch.times.gather(1, (d.batch.lengths - 1)[:, None])[:, 0]
    span = t_end - d.batch.times[:, 0]
    last_past = past.times.gather(1, (past.lengths - 1)[:, None])[:, 0]
    assert (last_past <= t_end - 0.25 * span + 1e-12).all()
    assert (future.times[:, 0] > t_end - 0.25 * span).all()
    kept, held = holdout_points(past, 0.3, seed=0)
    assert (
        kept.lengths + held.valid.logical_and(held.mask[..., 0] > 0).sum(1) == past.lengths
    ).all()
    assert (kept.times[:, 0] == past.times[:, 0]).all()  # ends kept: held-out points are inside


def test_split_errors():
    from odenet._errors import InputError
    from odenet.fit import datasets

    d = datasets.lotka_volterra(2, seed=0)
    with pytest.raises(InputError, match="at least 3 series"):
        split_series(d)
    with pytest.raises(InputError, match="summing to 1"):
        split_series(datasets.lotka_volterra(5), (0.5, 0.5, 0.5))
    with pytest.raises(InputError, match=r"`fraction` must be in \(0, 1\)"):
        split_tail(d.batch, 1.5)


def test_damped_oscillator_generator_matches_the_closed_form():
    from odenet.fit import datasets

    d = datasets.damped_oscillator(5, observed=0.5, noise=0.0, omega=2.0, zeta=0.1, seed=4)
    c = d.meta["clean"]
    for b in range(5):
        n = int(c.lengths[b])
        exact = datasets.damped_oscillator_exact(c.times[b, :n].numpy(), d.meta["y0"][b], 2.0, 0.1)
        np.testing.assert_allclose(c.values[b, :n].numpy(), exact, atol=1e-9)
        np.testing.assert_allclose(d.batch.values[b, :n].numpy(), exact, atol=1e-9)  # σ = 0


@pytest.mark.parametrize("name", ["lotka_volterra", "damped_oscillator", "spirals"])
def test_channel_observed_masks_channels_of_the_same_data(name):
    """The same times and noisy values as with every channel observed, each channel kept
    with the given probability, at least one per time."""
    from odenet.fit import datasets

    full = datasets.SYNTHETIC[name](20, observed=0.5, seed=3).batch
    part = datasets.SYNTHETIC[name](20, observed=0.5, seed=3, channel_observed=0.4).batch
    assert torch.equal(full.times, part.times)
    assert bool((full.mask[full.valid] == 1).all())
    m = part.mask[part.valid]
    assert (m.sum(-1) >= 1).all()
    # P(kept) = p + (1 − p)²/2 with the one-per-time rule: 0.58 for two channels
    assert abs(float(m.mean()) - 0.58) < 0.04
    torch.testing.assert_close(part.values, full.values * part.mask)
    with pytest.raises(odenet.InputError, match="channel_observed"):
        datasets.SYNTHETIC[name](2, channel_observed=0.0)


def test_damped_oscillator_closed_form_rejects_overdamping():
    from odenet._errors import InputError
    from odenet.fit import datasets

    with pytest.raises(InputError, match=r"`zeta` must be in \[0, 1\) \(underdamped\)"):
        datasets.damped_oscillator_exact([0.0, 1.0], [1.0, 0.0], zeta=1.5)


def test_a_batch_split_across_devices_is_refused_naming_them():
    """Values on one device and times on another failed later, as a raw device error inside
    a model's solve ("meta" stands in for a GPU)."""
    from odenet._errors import InputError
    from odenet.batch import IrregularBatch

    b = load_long(table(), id_col="id", time_col="time").batch
    with pytest.raises(InputError, match=r"must be on one device, got cpu, meta.*\.to\(device\)"):
        IrregularBatch(b.times, b.values.to("meta"), b.mask.to("meta"), b.lengths)


def test_co2_time_is_julian_years_from_j2000_uniform_across_new_years():
    """A week is 7/365.25 time units everywhere.  The calendar-year fraction
    ``year + (day_of_year - 1) / 365.25`` restarted at every 1 January, so a step across a
    new year was 6.25 or 7.25 days' worth; the truth here is the date arithmetic of
    ``datetime`` (whole weeks between samples) and Julian Dates (Meeus, ch. 7)."""
    import datetime

    from odenet.fit import datasets

    sm = pytest.importorskip("statsmodels.datasets")
    dates = [d.date() for d in sm.co2.load_pandas().data.dropna().index]
    b = datasets.co2().batch
    n = int(b.lengths[0])
    assert n == len(dates) == 2225
    t = b.times[0, :n].numpy()
    assert b.times.dtype == torch.float64
    days = np.diff([d.toordinal() for d in dates])
    assert (days % 7 == 0).all() and (days > 0).all()
    np.testing.assert_allclose(np.diff(t), days / 365.25, rtol=0, atol=1e-12)
    # every new year, 1959 to 2001 (43): 42 fall between two samples one week apart
    new_year = [i for i in range(n - 1) if dates[i + 1].year != dates[i].year]
    assert len(new_year) == 43 and sum(days[i] == 7 for i in new_year) == 42
    for i in new_year:
        assert abs((t[i + 1] - t[i]) - days[i] / 365.25) < 1e-12, dates[i + 1]
    # J2000 is JD 2451545.0 = 2000-01-01 12:00; a sample falls on 2000-01-01 00:00
    # (JD 2451544.5) and the first on 1958-03-29 00:00 (JD 2436291.5)
    i2000 = dates.index(datetime.date(2000, 1, 1))
    assert abs(t[i2000] - (2000 - 0.5 / 365.25)) < 1e-12
    assert abs(t[0] - (2000 + (2436291.5 - 2451545.0) / 365.25)) < 1e-12
