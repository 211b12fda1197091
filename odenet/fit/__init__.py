"""Fitting irregularly sampled time series: data, models, baselines, training.

``load_long`` reads a long-format table into per-series time grids; ``fit`` trains
any model with ``loss(batch)`` / ``predict(context, query_times)``; see
``docs/fitting.md``.
"""

import sys
import types

from odenet.fit import datasets
from odenet.fit.baselines import GRUD, LOCF, GRUDeltaT, GRUGrid, LinearInterpolation, TrainingMean
from odenet.fit.continuous import (
    LatentODEForecaster,
    ODERNNForecaster,
    ShootingODE,
    TimeInvariantMLP,
    neural_ode,
)
from odenet.fit.data import (
    DataFormatError,
    Normalizer,
    SeriesData,
    holdout_points,
    load_long,
    select,
    split_series,
    split_tail,
    split_time,
    to_long,
)
from odenet.fit.greybox import GreyBoxField, GreyBoxMLE, OneCompartmentPK, relative_error
from odenet.fit.train import FitResult, fit, load_checkpoint, n_parameters, save_checkpoint

__all__ = [
    "GRUD",
    "LOCF",
    "DataFormatError",
    "FitResult",
    "GRUDeltaT",
    "GRUGrid",
    "GreyBoxField",
    "GreyBoxMLE",
    "LatentODEForecaster",
    "LinearInterpolation",
    "Normalizer",
    "ODERNNForecaster",
    "OneCompartmentPK",
    "SeriesData",
    "ShootingODE",
    "TimeInvariantMLP",
    "TrainingMean",
    "datasets",
    "fit",
    "holdout_points",
    "load_checkpoint",
    "load_long",
    "n_parameters",
    "neural_ode",
    "relative_error",
    "save_checkpoint",
    "select",
    "split_series",
    "split_tail",
    "split_time",
    "to_long",
]


class _CallableModule(types.ModuleType):
    """``odenet.fit(...)`` trains (the issue's API) while ``odenet.fit.<name>`` stays a
    namespace: the package module itself forwards calls to :func:`odenet.fit.train.fit`."""

    def __call__(self, *args, **kwargs):
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
