"""Ensemble bands for black-box models: the same model trained from several seeds.

A black-box model (neural ODE, ODE-RNN, GRU baselines) has no likelihood-based standard
errors; the spread of independently initialised and trained members is the usual proxy
for its epistemic uncertainty (Lakshminarayanan et al. 2017, *Simple and scalable
predictive uncertainty estimation using deep ensembles*).  The band adds the observation
noise, estimated on calibration points that no member was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from odenet._errors import InputError
from odenet.fit.data import SeriesData, holdout_points
from odenet.fit.train import FitResult, fit


@dataclass
class EnsembleFit(FitResult):
    """:class:`FitResult` of an ensemble: predictions are the members' mean.

    Attributes
    ----------
    members : list of FitResult
        The trained members (``model``/``normalizer`` of this object are the first
        member's, for :meth:`errors`' channel count).
    sigma : Tensor [D]
        Per-channel noise level (physical units), from the calibration points: the
        residual variance of the ensemble mean there less the part the members' spread
        accounts for (:func:`calibrated_noise`); the noise term of prediction bands.
    n_calibration : int
        Values the noise level was estimated from.
    """

    members: list = field(default_factory=list)
    sigma: torch.Tensor | None = None
    n_calibration: int = 0

    def member_predictions(self, context, query_times: torch.Tensor) -> torch.Tensor:
        """``[M, B, Q, D]`` every member's prediction (physical units)."""
        return torch.stack([m.predict(context, query_times) for m in self.members])

    def predict(self, context, query_times: torch.Tensor) -> torch.Tensor:
        """[B, Q, D] mean of the members' predictions (physical units)."""
        return self.member_predictions(context, query_times).mean(0)

    def band(self, context, query_times: torch.Tensor, *, level: float = 0.95,
             prediction: bool = True):  # fmt: skip
        """Gaussian band ``(lower, mean, upper)`` [B, Q, D] at ``query_times``.

        Variance = the true curve's about the members' mean (:func:`curve_variance`)
        plus, with ``prediction``, the calibrated noise ``sigma²`` (an interval for a
        new observation); without it, a band for the curve alone.
        """
        if not 0 < level < 1:
            raise InputError(f"`level` must be in (0, 1), got {level!r}.")
        P = self.member_predictions(context, query_times)
        mean = P.mean(0)
        spread = curve_variance(P)
        # sigma stays where calibration computed it; the band is on the context's device
        noise = (self.sigma[: spread.shape[-1]].to(spread.device) ** 2 if prediction
                 else torch.zeros(()))  # fmt: skip
        half = student_quantile(spread, noise, P.shape[0], level) * (spread + noise).sqrt()
        return mean - half, mean, mean + half


def student_quantile(spread, noise, members: int, level: float) -> torch.Tensor:
    """The two-sided ``level`` quantile for ``(f̄ − y)/sqrt(spread + noise)``.

    ``spread`` is an estimate with ``M − 1`` degrees of freedom, ``noise`` one from many
    calibration points (taken as exact): Student's t with the Welch–Satterthwaite
    degrees of freedom ``(spread + noise)² (M − 1) / spread²``.  With a Gaussian
    quantile an ideal 4-member ensemble's 90 % band covered 80 % where the noise is
    small (t with 3 degrees of freedom is exact there).
    """
    from scipy.stats import t

    spread, noise = torch.broadcast_tensors(spread, torch.as_tensor(noise, dtype=spread.dtype))
    dof = (spread + noise) ** 2 * (members - 1) / spread.clamp_min(1e-300) ** 2
    dof = dof.clamp(max=1e6)  # beyond, t is the Gaussian to seven digits
    q = t.ppf(0.5 + level / 2, dof.detach().cpu().numpy())
    return torch.as_tensor(q, dtype=spread.dtype, device=spread.device)


def curve_variance(P: torch.Tensor) -> torch.Tensor:
    """``[B, Q, D]`` variance of the true curve about the mean of ``M`` members ``P``
    ``[M, B, Q, D]``, for a truth exchangeable with the members: ``(1 + 1/M) s²``, with
    ``s²`` the members' unbiased variance (``1/M`` of it is the mean's own scatter)."""
    M = P.shape[0]
    return (1 + 1 / M) * P.var(0, unbiased=True)


def calibrated_noise(P: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel noise level ``σ_ε`` ``[D]`` from calibration points.

    By the law of total variance a residual of the ensemble mean has
    ``E[(f̄ − y)²] = σ_ε² + E[(f̄ − f)²]``: the noise plus the mean's own error, which
    :func:`curve_variance` estimates from the spread.  So ``σ_ε² = mean (f̄ − y)² −
    mean curve_variance``, clipped at 0; taking the whole residual as the noise and
    adding the spread again counted the mean's error twice (an ideal ensemble's 90 %
    band covered 95–96 %).  ``P [M, B, Q, D]``, ``values``, ``mask [B, Q, D]``.
    """
    n = mask.sum(dim=(0, 1))
    residual = ((P.mean(0) - values) ** 2 * mask).sum(dim=(0, 1)) / n
    explained = (curve_variance(P) * mask).sum(dim=(0, 1)) / n
    return (residual - explained).clamp_min(0.0).sqrt()


def fit_ensemble(make_model: Callable, train, val=None, *, members: int = 5, seed: int = 0,
                 calibration: float = 0.2, **fit_kwargs) -> EnsembleFit:  # fmt: skip
    """Train ``members`` copies of ``make_model()`` with seeds ``seed, seed+1, …``.

    Parameters
    ----------
    make_model : callable ``() -> nn.Module``
        Builds one untrained member (called after ``torch.manual_seed``, so each member
        starts from its own initialisation).
    train, val : SeriesData or IrregularBatch
        As for :func:`odenet.fit.fit` (physical units).  The noise level is calibrated on
        points no member trained on or was selected by: a random ``calibration``
        fraction of ``val``'s points (conditioned on the rest of ``val``, which is also
        what the members early-stop on) when ``val`` is given, else a ``calibration``
        fraction of ``train``'s points, held out of training.
    members : int
        Ensemble size (≥ 2: one member has no spread).
    **fit_kwargs
        Passed to :func:`odenet.fit.fit` (``iters``, ``lr``, …; no ``checkpoint``).

    Returns
    -------
    EnsembleFit
        ``predict`` (members' mean), ``band`` (spread + calibrated noise), ``errors``.
    """
    if not isinstance(members, int) or members < 2:
        raise InputError(f"`members` must be an integer ≥ 2, got {members!r}.")
    if not 0 < calibration < 1:
        raise InputError(f"`calibration` must be in (0, 1), got {calibration!r}.")
    if fit_kwargs.get("checkpoint") is not None:
        raise InputError("fit_ensemble writes no checkpoint; drop `checkpoint=`.")
    batch = train.batch if isinstance(train, SeriesData) else train
    if val is None:
        train_b, cal = holdout_points(batch, calibration, seed=seed)
        cal_ctx, stop_on = train_b, None
    else:
        vb = val.batch if isinstance(val, SeriesData) else val
        cal_ctx, cal = holdout_points(vb, calibration, seed=seed)
        train_b = batch
        # early stopping picks each member by its validation loss: on the calibration
        # points too, it would pick members that fit them, and σ̂ would come out small
        stop_on = replace(val, batch=cal_ctx) if isinstance(val, SeriesData) else cal_ctx
    results = []
    for m in range(members):
        torch.manual_seed(seed + m)
        results.append(fit(make_model(), train_b, stop_on, seed=seed + m, **fit_kwargs))
    first = results[0]
    ens = EnsembleFit(model=first.model, normalizer=first.normalizer, members=results,
                      iterations=sum(r.iterations for r in results),
                      train_time=sum(r.train_time for r in results),
                      stop_reason=first.stop_reason, meta=dict(first.meta))  # fmt: skip
    D = ens.n_outputs(cal)
    m = cal.mask[..., :D]
    n = m.sum(dim=(0, 1))
    if bool((n == 0).any()):
        raise InputError(
            "no calibration points in some channel: raise `calibration` or give more data."
        )
    P = ens.member_predictions(cal_ctx, cal.times)[..., :D]
    ens.sigma = calibrated_noise(P, cal.values[..., :D].to(P.device), m.to(P.device))
    ens.n_calibration = int(n.sum())
    if not math.isfinite(float(ens.sigma.sum())):
        raise InputError("the ensemble's calibration predictions are not finite.")
    return ens


def save_ensemble(path, ens: EnsembleFit, meta: dict) -> None:
    """One checkpoint for a whole ensemble: every member's state, the shared data
    scaling, the calibrated noise ``sigma`` and ``meta`` (with ``ensemble = M``), so
    :func:`load_ensemble` (``odenet predict --band``) needs nothing else.

    The members were trained on the same data, so they share one normaliser."""
    from odenet.fit.train import save_checkpoint

    save_checkpoint(path, {
        "model": ens.members[0].model.state_dict(),
        "members": [m.model.state_dict() for m in ens.members],
        "normalizer": ens.members[0].normalizer.state_dict(),
        "sigma": ens.sigma.detach().clone(),
        "n_calibration": ens.n_calibration,
        "iteration": ens.iterations,
        "history": {},
        "train_time": ens.train_time,
        "stop_reason": ens.stop_reason,
        "model_class": type(ens.members[0].model).__name__,
        "meta": {**meta, "ensemble": len(ens.members)},
    })  # fmt: skip


def load_ensemble(ck: dict, build: Callable, normalizer, where: str) -> EnsembleFit:
    """The :class:`EnsembleFit` of a checkpoint dict written by :func:`save_ensemble`.

    ``build()`` makes one untrained member; ``normalizer`` is the loaded data scaling."""
    from odenet.fit.train import CheckpointError, load_state

    states, sigma = ck.get("members"), ck.get("sigma")
    n = (ck.get("meta") or {}).get("ensemble")
    if not isinstance(states, list) or len(states) != n or not isinstance(sigma, torch.Tensor):
        raise CheckpointError(
            f"{where} says it is an ensemble of {n} members but does not hold their states "
            "and noise level; it is incomplete — refit with `odenet fit --ensemble`."
        )
    members = []
    for k, state in enumerate(states):
        model = build()
        model.to(torch.float64)
        load_state(model, state, f"{where} (member {k})")
        members.append(FitResult(model, normalizer, meta=dict(ck["meta"])))
    first = members[0]
    return EnsembleFit(model=first.model, normalizer=normalizer, members=members,
                       iterations=int(ck.get("iteration", 0)),
                       train_time=float(ck.get("train_time", 0.0)),
                       stop_reason=str(ck.get("stop_reason", "")), meta=dict(ck["meta"]),
                       sigma=sigma, n_calibration=int(ck.get("n_calibration", 0)))  # fmt: skip
