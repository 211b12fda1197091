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
    NeuralCDEForecaster,
    ODERNNForecaster,
    ShootingODE,
    TimeInvariantMLP,
    neural_ode,
)
from odenet.fit.data import (
    DataFormatError,
    Normalizer,
    SeriesData,
    SeriesMismatchError,
    holdout_points,
    load_long,
    select,
    split_series,
    split_tail,
    split_time,
    to_long,
)
from odenet.fit.greybox import (
    GreyBoxField,
    GreyBoxMLE,
    MechanismError,
    OneCompartmentPK,
    relative_error,
)
from odenet.fit.mechanisms import load_mechanism, mechanism
from odenet.fit.parametric import ParametricCurve
from odenet.fit.train import (
    CheckpointError,
    FitResult,
    fit,
    load_checkpoint,
    n_parameters,
    save_checkpoint,
)


def load_fit(path):
    """A :class:`FitResult` rebuilt from a checkpoint of ``odenet fit`` (see
    :func:`odenet.fit.cli.load_fit`)."""
    from odenet.fit.cli import load_fit as _load_fit

    return _load_fit(path)


__all__ = [
    "GRUD",
    "LOCF",
    "CheckpointError",
    "DataFormatError",
    "FitResult",
    "GRUDeltaT",
    "GRUGrid",
    "GreyBoxField",
    "GreyBoxMLE",
    "LatentODEForecaster",
    "LinearInterpolation",
    "MechanismError",
    "NeuralCDEForecaster",
    "Normalizer",
    "ODERNNForecaster",
    "OneCompartmentPK",
    "ParametricCurve",
    "SeriesData",
    "SeriesMismatchError",
    "ShootingODE",
    "TimeInvariantMLP",
    "TrainingMean",
    "datasets",
    "fit",
    "holdout_points",
    "load_checkpoint",
    "load_fit",
    "load_long",
    "load_mechanism",
    "mechanism",
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
