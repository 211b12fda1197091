"""The training loop: Adam + schedule, early stopping, clipping, seeds, checkpoints, resume.

A checkpoint is a dict of tensors, numbers, strings and lists only, written to a
temporary file and renamed into place (atomic on POSIX), so it loads with
``torch.load(path, weights_only=True)`` (a file holding arbitrary Python objects is
refused, never executed) and an interrupted run never leaves a half-written file.
It is versioned (``format``/``version``) and carries ``meta``: the model kind, its
hyperparameters, the channels and covariates — what :func:`load_fit` needs to rebuild
the model — and a resumed run must match it.  Resuming restores the model, optimiser, schedule, the
minibatch random generator and the early-stopping state, so an interrupted and
resumed run ends with the same parameters as an uninterrupted one (to the bit); it
refuses a checkpoint written for other training data (a fingerprint of the split).
A fit holds a lock on its checkpoint (:func:`checkpoint_lock`), so two processes never
save into one file in turn.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from odenet._errors import InputError
from odenet._tempfiles import file_mode
from odenet.batch import IrregularBatch
from odenet.fit._common import model_device
from odenet.fit.data import Normalizer, SeriesData, SeriesMismatchError

CHECKPOINT_FORMAT = "odenet.fit.checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, unsafe, from another version, or does not
    match the model / data it is loaded for (the message says what differs)."""


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model : nn.Module
        The fitted model, at the best validation loss (or the last iterate without
        validation data).  Works in normalised units.
    normalizer : Normalizer
        Maps physical ↔ normalised values; :meth:`predict` applies it.
    history : dict
        ``"iteration"``, ``"train_loss"``, ``"val_loss"`` lists (one entry per evaluation).
    best_val : float
        Best validation loss (``nan`` without validation data).
    iterations : int
        Iterations run (early stopping may end before ``iters``).
    train_time : float
        Seconds of training (summed over resumed runs).
    stopped_early : bool
        Whether early stopping ended training.
    stop_reason : str
        Why training ended: ``"early_stopping"`` (no validation improvement for
        ``patience`` evaluations), ``"max_iters"``, ``"max_seconds"``,
        ``"nothing_to_train"`` (a fixed baseline), or the least-squares solver's
        ``"converged"`` / ``"no_decrease"`` / ``"max_iter"`` with ``gauss_newton``.
    meta : dict
        What the checkpoint stores about the model (kind, hyperparameters, channels).
    """

    model: nn.Module
    normalizer: Normalizer
    history: dict = field(default_factory=dict)
    best_val: float = math.nan
    iterations: int = 0
    train_time: float = 0.0
    stopped_early: bool = False
    stop_reason: str = ""
    meta: dict = field(default_factory=dict)

    def predict(self, context, query_times: torch.Tensor) -> torch.Tensor:
        """[B, Q, D] predictions in physical units at ``query_times [B, Q]``.

        ``context`` (SeriesData or IrregularBatch in physical units) holds the
        observations to condition on; row ``b`` of ``query_times`` is asked of its series
        ``b``.  Raises :class:`~odenet.fit.data.SeriesMismatchError` when the row counts
        differ (a context of all series with the query rows of a few was scored against
        the first rows of the context).  The model runs on its own device (context and
        queries are moved there); the predictions come back on the context's device.
        """
        ctx = _batch_of(context, "context")
        if not isinstance(query_times, torch.Tensor) or query_times.dim() != 2:
            raise InputError(
                "`query_times` must be a [B, Q] tensor (one row of times per context series), "
                f"got {getattr(query_times, 'shape', type(query_times).__name__)}."
            )
        if query_times.shape[0] != ctx.times.shape[0]:
            raise SeriesMismatchError(
                f"the context has {ctx.times.shape[0]} series but `query_times` has "
                f"{query_times.shape[0]} rows; row b of the queries is asked of context series "
                "b — give one row per context series (or subset the context the same way)."
            )
        home = ctx.times.device
        dev = model_device(self.model) or home
        # a normaliser loaded on the CPU serves a model moved to the GPU afterwards
        norm = self.normalizer.to(dev)
        ctx = ctx.to(dev)
        self.model.eval()
        with torch.no_grad():
            z = self.model.predict(
                norm.transform(ctx), query_times.to(device=dev, dtype=ctx.times.dtype)
            )
        return norm.inverse(z).to(home)

    def mse(self, context, target) -> float:
        """MSE (physical units) of predictions at ``target``'s observed points (nan if none).

        Only the model's output channels are scored (covariate channels, which follow
        them in the batch, are inputs)."""
        return self.errors(context, target)["mse"]

    def errors(self, context, target) -> dict:
        """Squared errors at ``target``'s observed points, broken down.

        Target series ``b`` is predicted from its own context: when both are
        :class:`SeriesData` they are paired by series id (the context may hold more
        series); otherwise row by row, and the row counts must agree.  Anything else
        raises :class:`~odenet.fit.data.SeriesMismatchError`.

        Returns
        -------
        dict
            ``mse`` (all scored points), ``n_points`` (scored values),
            ``per_channel`` ``[D]`` and ``per_series`` ``[B]`` MSEs (nan where nothing
            was scored), ``n_per_channel``, ``n_per_series``.
        """
        ctx, tgt = _paired(context, target, getattr(self.model, "series_by_row", False))
        D = self.n_outputs(tgt)
        m = tgt.mask[..., :D]
        n = float(m.sum())
        B = tgt.times.shape[0]
        if n == 0:
            nan = [math.nan] * D
            return {"mse": math.nan, "n_points": 0, "per_channel": nan,
                    "per_series": [math.nan] * B, "n_per_channel": [0] * D,
                    "n_per_series": [0] * B}  # fmt: skip
        pred = self.predict(ctx, tgt.times)[..., :D].to(tgt.values.device)
        se = (pred - tgt.values[..., :D]) ** 2 * m
        nc, ns = m.sum(dim=(0, 1)), m.sum(dim=(1, 2))

        def ratio(a, b):
            return [float(x / y) if y > 0 else math.nan for x, y in zip(a, b)]

        return {
            "mse": float(se.sum() / n),
            "n_points": int(n),
            "per_channel": ratio(se.sum(dim=(0, 1)), nc),
            "per_series": ratio(se.sum(dim=(1, 2)), ns),
            "n_per_channel": [int(x) for x in nc],
            "n_per_series": [int(x) for x in ns],
        }

    def n_outputs(self, batch) -> int:
        """Channels the model predicts: all but the trailing covariate channels."""
        field_ = getattr(self.model, "field", None)
        cov = getattr(field_, "covariates", None) or []
        return batch.values.shape[-1] - len(cov)


def n_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _batch_of(data, name: str = "data") -> IrregularBatch:
    if isinstance(data, SeriesData):
        return data.batch
    if isinstance(data, IrregularBatch):
        return data
    raise InputError(f"{name} must be SeriesData or IrregularBatch, got {type(data).__name__}.")


def _paired(context, target, by_row: bool = False) -> tuple[IrregularBatch, IrregularBatch]:
    """``(context, target)`` batches whose row ``b`` is the same series.

    ``by_row``: the model keys per-series data (doses) by context row, so the context
    cannot be subset or reordered to the target's series."""
    if isinstance(context, SeriesData) and isinstance(target, SeriesData):
        if list(context.ids) != list(target.ids):
            where = {s: i for i, s in enumerate(context.ids)}
            missing = [s for s in target.ids if s not in where]
            if missing:
                raise SeriesMismatchError(
                    f"target series {missing[:5]} are not in the context (ids "
                    f"{list(context.ids)[:5]}…); give each target series its own context."
                )
            if by_row:
                raise SeriesMismatchError(
                    "the target's series (ids "
                    f"{list(target.ids)[:5]}…) are not the context's, in its order ("
                    f"{list(context.ids)[:5]}…), and this model keys its per-series data "
                    "(doses) by row: give the target in the context's series order."
                )
            context = context.subset([where[s] for s in target.ids])
    ctx, tgt = _batch_of(context, "context"), _batch_of(target, "target")
    if ctx.times.shape[0] != tgt.times.shape[0]:
        raise SeriesMismatchError(
            f"the context has {ctx.times.shape[0]} series but the target has "
            f"{tgt.times.shape[0]}; rows are paired by position, so subset both the same way "
            "(or pass both as SeriesData to pair them by series id)."
        )
    return ctx, tgt


def _rows(batch: IrregularBatch, idx: torch.Tensor) -> IrregularBatch:
    """Series ``idx`` of ``batch``, trimmed to their own longest length."""
    idx = idx.to(batch.times.device)
    T = int(batch.lengths[idx].max())
    return IrregularBatch(batch.times[idx, :T], batch.values[idx, :T], batch.mask[idx, :T],
                          batch.lengths[idx])  # fmt: skip


def _masked_rows(batch: IrregularBatch, idx: torch.Tensor) -> IrregularBatch:
    """All rows of ``batch`` in place, observed only in series ``idx``: the minibatch of a
    model that keys per-series data (doses) by row (``series_by_row``).  A masked MSE
    over it equals the one over :func:`_rows`."""
    keep = torch.zeros(batch.times.shape[0], dtype=batch.mask.dtype, device=batch.mask.device)
    keep[idx] = 1
    return IrregularBatch(batch.times, batch.values, batch.mask * keep[:, None, None],
                          batch.lengths)  # fmt: skip


def save_checkpoint(path, state: dict) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename (atomic).

    The format tag and version are added to ``state``."""
    path = Path(path)
    state = {**state, "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path))
    except OSError as e:
        raise CheckpointError(
            f"cannot write the checkpoint {str(path)!r}: {e.strerror or e}; choose a writable "
            "--checkpoint path."
        ) from None
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.chmod(tmp, file_mode())  # mkstemp creates 0600; a checkpoint is shared like any result
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError(
            f"cannot write the checkpoint {str(path)!r}: {e.strerror or e}."
        ) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _tmp_prefix(path: Path) -> str:
    # exact to this checkpoint: the temp files of "fit.pt2" never match "fit.pt"'s
    return f".{path.name}.tmp-"


@contextlib.contextmanager
def checkpoint_lock(path) -> Iterator[None]:
    """Hold ``path``'s checkpoint for this process while the block runs.

    The lock is an ``flock`` on the hidden file ``.<name>.lock`` beside the checkpoint:
    the kernel releases it when the process dies, even by ``kill -9``, so it is never
    stale.  Holding it, the temp files of earlier writers that were killed mid-save are
    removed (no live process can be writing them).  ``None`` locks nothing; so does a
    platform without ``fcntl``.

    Raises
    ------
    CheckpointError
        Another process holds the lock (two ``odenet fit`` on one checkpoint would
        overwrite each other's saves), or the lock file cannot be created.
    """
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CheckpointError(
            f"cannot write the checkpoint {str(path)!r}: {e.strerror or e} ({lock}); choose a "
            "writable --checkpoint path."
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise CheckpointError(
                f"checkpoint {str(path)!r} is being written by another running fit (pid "
                f"{holder}); wait for it to finish (then --resume continues it), or choose "
                "another --checkpoint path."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        for stale in path.parent.glob(_tmp_prefix(path) + "*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        yield
    finally:
        os.close(fd)  # releases the flock


def _locks_checkpoint(fn):
    """Run ``fn`` holding the lock of its ``checkpoint=`` keyword (see checkpoint_lock)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with checkpoint_lock(kwargs.get("checkpoint")):
            return fn(*args, **kwargs)

    return wrapper


def load_checkpoint(path, *, expect: dict | None = None) -> dict:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or Path
    expect : dict, optional
        Entries of ``meta`` the checkpoint must match (model kind, hyperparameters,
        channels…); every differing entry is named in the error.

    Raises
    ------
    CheckpointError
        Missing, empty, truncated or garbage file; a pickle with arbitrary Python
        objects (refused, not executed); not a dict; another format or a newer
        version; ``meta`` differing from ``expect``.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    if not path.is_file():
        raise CheckpointError(f"{where} does not exist (or is not a file).")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{where} is empty; delete it or pass --force to overwrite it.")
    try:
        # tensors saved from a GPU load on a CPU-only machine; load_state_dict and the
        # optimiser's load_state_dict move them to the model's device
        ck = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        text = str(e)
        if "GLOBAL" in text or "Unsupported global" in text or "unsupported global" in text:
            raise CheckpointError(
                f"{where} holds arbitrary Python objects and was refused (never executed); "
                "only checkpoints written by odenet fit can be loaded."
            ) from None
        # e.g. a plain pickle (odenet writes torch's zip format): refused before any of
        # it ran, as unsafe as one with arbitrary objects
        raise CheckpointError(
            f"{where} is corrupt or not a checkpoint (a pickle the safe loader refused; "
            "nothing in it was executed); delete it or pass --force to overwrite it."
        ) from None
    except Exception as e:  # truncated zips, random bytes: torch raises many kinds
        raise CheckpointError(
            f"{where} is truncated, corrupt or not a checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else ''}); delete it or pass --force."
        ) from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{where} holds a {type(ck).__name__}, not an odenet.fit checkpoint.")
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{where} is not an odenet.fit checkpoint (format {ck.get('format')!r}, or written "
            "by an older odenet without a format tag); refit, or pass --force to overwrite."
        )
    if not isinstance(ck.get("version"), int) or ck["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{where} has version {ck.get('version')!r}; this odenet reads up to "
            f"{CHECKPOINT_VERSION}: upgrade odenet."
        )
    if "model" not in ck or not isinstance(ck["model"], dict):
        raise CheckpointError(f"{where} has no model state; it is incomplete.")
    if expect:
        check_meta(ck.get("meta") or {}, expect, where)
    return ck


# what a differing fingerprint means (the bare hashes say nothing to the reader)
_META_NOTES = {
    "mechanism_fingerprint": "the mechanism's code or declaration changed",
    "doses_fingerprint": "the training series' doses (--doses) changed",
}


def check_meta(found: dict, expect: dict, where: str) -> None:
    """Raise :class:`CheckpointError` naming every entry where ``found`` ≠ ``expect``."""

    def note(k):
        if k not in _META_NOTES:
            return ""
        if found.get(k) is None:
            return " (not recorded by the odenet that wrote the checkpoint)"
        return f" ({_META_NOTES[k]})"

    diff = [f"{k}: checkpoint {found.get(k)!r} vs now {v!r}{note(k)}" for k, v in expect.items()
            if found.get(k) != v]  # fmt: skip
    if diff:
        raise CheckpointError(
            f"{where} was written for another model or data — "
            + "; ".join(diff)
            + ". Use the same options, another --checkpoint path, or --force to overwrite."
        )


def load_state(model: nn.Module, state: dict, where: str = "the checkpoint") -> None:
    """``model.load_state_dict(state)`` with a typed error naming the mismatched tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
              and own[k].numel() > 0]  # fmt: skip
    # buffers sized by the data (normaliser, per-series) load whatever their size
    shapes = [s for s in shapes if s.split()[0].split(".")[-1] not in _DATA_SIZED]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if extra:
            parts.append(f"unexpected {extra[:5]}")
        if shapes:
            parts.append("shapes differ (checkpoint vs model): " + ", ".join(shapes[:5]))
        raise CheckpointError(
            f"{where} does not fit this model ({type(model).__name__}): "
            + "; ".join(parts)
            + " — another --model, --hidden or channel set wrote it."
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{where} does not fit this model: {msg}") from None


_DATA_SIZED = {"norm_mean", "norm_std", "series_raw", "x0", "mean", "std", "dt"}


def data_fingerprint(batch: IrregularBatch) -> str:
    """A short hash of a batch's exact contents (times, values, mask, lengths).

    Stored in a checkpoint as ``data``: resuming on other training data (another
    CSV, or another ``--seed``/``--split``/``--tail``/``--holdout`` selecting other
    points) would silently continue a fit of something else."""
    import hashlib

    h = hashlib.sha256()
    for t in (batch.times, batch.values, batch.mask, batch.lengths):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:20]


def _resume_from(checkpoint, meta: dict | None, ztrain: IrregularBatch) -> dict:
    """The checkpoint to resume, checked against ``meta`` and the training data."""
    ck = load_checkpoint(checkpoint, expect=meta or None)
    stored = ck.get("data")
    if stored is not None and stored != data_fingerprint(ztrain):
        raise CheckpointError(
            f"checkpoint {str(checkpoint)!r} was written for other training data (another "
            "data file, or another --seed, --split, --tail or --holdout selecting other "
            "points); use the same data and options, another --checkpoint, or --force."
        )
    return ck


def _check_training(ck: dict, training: dict, where: str) -> None:
    """Refuse to resume a run with other optimiser settings, naming every one.

    A resume continues the stored run: its optimiser state and its learning-rate
    schedule, planned for its ``iters`` (cosine annealing reaches ``lr · lr_min_factor``
    at the last step; past it the cosine would climb again), which is what makes an
    interrupted run end as the uninterrupted one.  A checkpoint of an older odenet
    (without ``training``) resumes unchecked, with a warning."""
    from odenet._errors import OdenetWarning, warn_user

    stored = ck.get("training")
    if not isinstance(stored, dict):
        warn_user(f"{where} does not record its optimiser settings (an older odenet): "
                  "resuming keeps its stored learning rate and schedule whatever is passed "
                  "now.", OdenetWarning)  # fmt: skip
        return
    flags = {"lr": "--lr", "batch_size": "--batch-size", "iters": "--iters",
             "optimizer": "--optimizer"}  # fmt: skip
    diff = [f"{k}: checkpoint {stored.get(k)!r} vs now {v!r}" for k, v in training.items()
            if stored.get(k) != v]  # fmt: skip
    if diff:
        same = [f"{flags[k]} {stored[k]}" for k, v in training.items()
                if stored.get(k) != v and k in flags and stored.get(k) is not None]  # fmt: skip
        raise CheckpointError(
            f"{where} was trained with other optimiser settings — "
            + "; ".join(diff)
            + ". A resume continues that run (its optimiser state and its learning-rate "
            "schedule, planned for its iters): pass the checkpoint's values"
            + (f" ({' '.join(same)})" if same else "")
            + ", or start a new fit with "
            "--force or another --checkpoint path (a longer run is a new run: the schedule "
            "of the shorter one has already annealed)."
        )


def _storable(x):
    """``x`` with numpy values turned into tensors and Python scalars, which
    ``torch.load(weights_only=True)`` reads back (it refuses numpy objects)."""
    import numpy as np

    if isinstance(x, dict):
        return {k: _storable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_storable(v) for v in x)
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x.copy())
    if isinstance(x, np.generic):
        return x.item()
    return x


def _restored(x):
    """Inverse of :func:`_storable` (tensors back to numpy arrays)."""
    if isinstance(x, dict):
        return {k: _restored(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_restored(v) for v in x)
    if isinstance(x, torch.Tensor):
        return x.numpy()
    return x


def _fit_gauss_newton(model, ztrain, zval, norm, iters, checkpoint, resume, meta) -> FitResult:
    """``optimizer="gauss_newton"``: one call of the model's own least-squares solver.

    The checkpoint is written once, when the solver has finished, with the solver's
    report.  Resuming it with the same ``iters`` returns that result as it was — a
    rerun after a kill equals the uninterrupted run to the bit; with another ``iters``
    the solver restarts from the checkpoint's estimates (it converges at once if they
    were the optimum)."""
    if not hasattr(model, "gauss_newton"):
        raise InputError(
            f"optimizer='gauss_newton' needs a model with a `gauss_newton(batch, max_iter)` "
            f"method (e.g. odenet.fit.GreyBoxMLE); {type(model).__name__} has none."
        )
    elapsed0, warm, max_iter = 0.0, False, max(iters, 1)
    if resume and checkpoint is not None and Path(checkpoint).exists():
        ck = _resume_from(checkpoint, meta, ztrain)
        load_state(model, ck["model"], f"checkpoint {str(checkpoint)!r}")
        elapsed0, warm = float(ck.get("train_time", 0.0)), True
        solved = ck.get("solved")
        if isinstance(solved, dict) and solved.get("max_iter") == max_iter:
            model.info = _restored(solved["info"])
            return FitResult(model, norm, ck["history"], solved["best_val"], ck["iteration"],
                             elapsed0, False, ck.get("stop_reason", ""),
                             dict(meta or {}))  # fmt: skip
    t0 = time.perf_counter()
    if warm:  # the stored estimates are the start: no multiple-shooting stage
        info = model.gauss_newton(ztrain, max_iter=max_iter, multiple_shooting=False)
    else:
        info = model.gauss_newton(ztrain, max_iter=max_iter)
    history = {"iteration": [info["iterations"]], "train_loss": [2 * info["cost"]],
               "val_loss": []}  # fmt: skip
    best = math.nan
    if zval is not None:
        model.eval()
        best = float(model.loss(zval))
        history["val_loss"].append(best)
    elapsed = elapsed0 + time.perf_counter() - t0
    if checkpoint is not None:
        save_checkpoint(checkpoint, {"model": model.state_dict(), "iteration": info["iterations"],
                                     "history": history, "train_time": elapsed,
                                     "normalizer": norm.state_dict(),
                                     "model_class": type(model).__name__,
                                     "meta": dict(meta or {}),
                                     "data": data_fingerprint(ztrain),
                                     "stop_reason": info.get("stop_reason", ""),
                                     "solved": {"max_iter": max_iter, "best_val": best,
                                                "info": _storable(info)}})  # fmt: skip
    return FitResult(model, norm, history, best, info["iterations"], elapsed, False,
                     info.get("stop_reason", ""), dict(meta or {}))  # fmt: skip


@_locks_checkpoint
def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    iters: int = 500,
    lr: float = 1e-2,
    batch_size: int | None = 16,
    lr_min_factor: float = 0.05,
    weight_decay: float = 0.0,
    clip: float | None = 1.0,
    eval_every: int = 25,
    patience: int | None = 8,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool = False,
    normalize: bool = True,
    callback: Callable | None = None,
    max_seconds: float | None = None,
    optimizer: str = "adam",
    meta: dict | None = None,
    overwrite: bool = True,
) -> FitResult:
    """Fit ``model`` to irregular series with Adam.

    Parameters
    ----------
    model : nn.Module
        Anything with ``loss(batch)`` and ``predict(context, query_times)`` (see
        :mod:`odenet.fit.continuous`, :mod:`odenet.fit.baselines`, :mod:`odenet.fit.greybox`).
        Training runs on the model's device (that of its parameters, else its buffers;
        a model without either runs where the data are): move it first, e.g.
        ``model.to("cuda")``.
    train, val : SeriesData or IrregularBatch
        Training and (optional) validation series in physical units, on any device.
        The normalising statistics and the normalised series are computed on the CPU
        (the same bits whatever device trains) and moved to the model's device once,
        up front; the returned :class:`FitResult`'s normaliser lives there too.
    iters : int
        Maximum number of optimiser steps.
    lr, lr_min_factor : float
        Adam learning rate, cosine-annealed to ``lr · lr_min_factor``.
    batch_size : int or None
        Series per minibatch (None: all).  A model with ``series_by_row = True`` (its
        per-series data, e.g. doses, are keyed by batch row) gets every row each step,
        with the series outside the minibatch masked out of the loss.
    clip : float or None
        Gradient-norm clipping threshold.
    eval_every, patience : int
        Validation every ``eval_every`` steps; stop after ``patience`` evaluations
        without improvement (None: never stop early).  The best model is returned.
    seed : int
        Seeds parameter initialisation-independent randomness: the minibatch order
        (``torch.manual_seed`` is also set, for stochastic models).
    checkpoint, checkpoint_every, resume :
        Path of the checkpoint file, written every ``checkpoint_every`` steps (default
        ``eval_every``) and at the end; with ``resume=True`` an existing checkpoint is
        loaded and training continues from its iteration.  A checkpoint loads onto the
        CPU first and then into the model wherever it is, so one written by a GPU fit
        resumes on a CPU-only machine and the other way round (the minibatch order and
        the models' random draws come from the CPU generator, which the checkpoint
        stores).  The checkpoint is locked
        for the duration (:func:`checkpoint_lock`): a second process fitting into the
        same file fails with :class:`CheckpointError` instead of overwriting its saves.
    overwrite : bool
        ``False`` refuses (:class:`CheckpointError`) to start over an existing
        checkpoint without ``resume`` — checked under the lock, so a file written by
        a process that finished a moment ago is not lost (``odenet fit`` without
        ``--force``).
    progress : bool
        Show a tqdm progress bar.
    normalize : bool
        Standardise each channel with training statistics (kept with the model).
        ``False`` only centres each channel (subtracts its training mean, scale 1): the
        models read 0 as the channel mean (:class:`~odenet.fit.baselines.TrainingMean`,
        LOCF and GRU-D before a channel's first observation), which in data units is
        the training mean (with the identity map they predicted 0).  A model with
        ``trains_in_physical_units`` always sees the data unchanged.
    callback : callable ``(iteration, loss) -> None``, optional
        Called after each step (raising from it interrupts training, e.g. in tests).
    max_seconds : float, optional
        Wall-clock training budget; training stops when it is exceeded.
    optimizer : {"adam", "lbfgs", "gauss_newton"}
        ``"lbfgs"`` (full batch, strong-Wolfe line search, no schedule) suits
        grey-box fits with few parameters; each of the ``iters`` steps is then one
        round of up to 20 L-BFGS iterations.  ``"gauss_newton"`` hands the whole
        training set to the model's own ``gauss_newton(batch, max_iter=iters)``
        (:class:`~odenet.fit.greybox.GreyBoxMLE`: Levenberg–Marquardt over the
        parameters and every series' initial state); ``iters`` is then the cap on
        its iterations per stage, and the validation loss is evaluated once at the end.
    meta : dict, optional
        JSON-like description of the model (kind, hyperparameters, channels) stored
        in the checkpoint; resuming checks that the checkpoint's ``meta`` matches.

    Returns
    -------
    FitResult
    """
    if not hasattr(model, "loss") or not hasattr(model, "predict"):
        raise InputError(
            f"`model` ({type(model).__name__}) needs `loss(batch)` and `predict(context, "
            "query_times)` methods; see odenet.fit.continuous for examples."
        )
    if not isinstance(iters, int) or iters < 0:
        raise InputError(f"`iters` must be a non-negative integer, got {iters!r}.")
    if checkpoint is not None and not (resume or overwrite) and Path(checkpoint).exists():
        raise CheckpointError(
            f"checkpoint {str(checkpoint)!r} exists; pass --resume to continue it, --force "
            "to overwrite it, or another --checkpoint path."
        )
    tb = _batch_of(train)
    learns = getattr(model, "trainable", True) and not getattr(model, "trains_in_physical_units",
                                                                False)  # fmt: skip
    if learns and int(tb.lengths.max()) < 2:
        # the data-driven models learn how a series moves between its observations; with
        # one point per series gru_grid crashed (a NaN grid step), ode_rnn blamed `y0`,
        # and latent_ode / neural_cde trained on nothing without a word
        raise InputError(
            "training needs series with at least two observation times, but every training "
            "series has one; give longer series (with `odenet fit`, the --tail and --holdout "
            "points leave each training window: lower them)."
        )
    model.to(tb.values.dtype)
    device = model_device(model) or tb.times.device
    # statistics and normalised data are computed on the CPU, then moved once: the same
    # bits on any device, so a checkpoint's data fingerprint matches on another machine
    tb = tb.to("cpu")
    vb = _batch_of(val).to("cpu") if val is not None else None
    if getattr(model, "trains_in_physical_units", False):
        # identity: the model sees the data as is
        norm = Normalizer(tb.values.shape[-1], device=tb.values.device)
    else:
        norm = Normalizer.fit(tb)
        if not normalize:  # centred, not scaled: 0 stays the training mean (see docstring)
            norm.std.fill_(1.0)
    # the data's dtype: float64 statistics turned float32 data into float64 inputs of a
    # float32 model (a dtype error blamed on the vector field's signature)
    norm.to(tb.values.dtype)
    ztrain = norm.transform(tb).to(device)
    zval = norm.transform(vb).to(device) if vb is not None else None
    tb = tb.to(device)
    norm.to(device)
    if hasattr(model, "attach_normalizer"):
        model.attach_normalizer(norm)
    if hasattr(model, "set_grid"):
        model.set_grid(tb)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = bool(params) and getattr(model, "trainable", True)
    if optimizer not in ("adam", "lbfgs", "gauss_newton"):
        raise InputError(
            f"`optimizer` must be 'adam', 'lbfgs' or 'gauss_newton', got {optimizer!r}."
        )
    if optimizer == "gauss_newton":
        return _fit_gauss_newton(model, ztrain, zval, norm, iters, checkpoint, resume, meta)
    lbfgs = optimizer == "lbfgs"
    # what the optimiser state and schedule were built from: resuming restores them
    # (load_state_dict puts the stored lr, weight decay and cosine T_max/eta_min back), so
    # a resume with other values would silently keep the old ones — refused instead
    training = {"optimizer": optimizer}
    if not lbfgs:
        training.update(lr=lr, weight_decay=weight_decay, lr_min_factor=lr_min_factor,
                        batch_size=batch_size, iters=iters)  # fmt: skip
    if not trainable:
        opt = None
    elif lbfgs:
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=20, history_size=20, tolerance_grad=1e-12,
                                tolerance_change=1e-15,
                                line_search_fn="strong_wolfe")  # fmt: skip
        batch_size = None
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1), eta_min=lr * lr_min_factor)  # noqa: E501
        if trainable else None
    )  # fmt: skip
    history = {"iteration": [], "train_loss": [], "val_loss": []}
    best_val, best_state, bad_evals, start, elapsed = math.inf, None, 0, 0, 0.0
    stopped = False
    if resume and checkpoint is not None and Path(checkpoint).exists():
        where = f"checkpoint {str(checkpoint)!r}"
        ck = _resume_from(checkpoint, meta, ztrain)
        if trainable:
            _check_training(ck, training, where)
        load_state(model, ck["model"], where)
        try:
            if trainable:
                opt.load_state_dict(ck["optimizer"])
                sched.load_state_dict(ck["scheduler"])
            gen.set_state(ck["generator"])
            torch.set_rng_state(ck["torch_rng"])
            history = {k: list(v) for k, v in ck["history"].items()}
            best_val, bad_evals, start = ck["best_val"], ck["bad_evals"], ck["iteration"]
            best_state = ck.get("best_model")
            elapsed = ck["train_time"]
            stopped = ck.get("stopped_early", False)
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as e:
            raise CheckpointError(
                f"{where} lacks the training state needed to resume ({type(e).__name__}: "
                f"{e}); it was written by another optimizer or is incomplete — pass --force "
                "to start over."
            ) from None
    every = checkpoint_every or eval_every
    fingerprint = data_fingerprint(ztrain)

    def state(it: int) -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict() if trainable else {},
            "scheduler": sched.state_dict() if trainable else {},
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "best_val": best_val,
            "bad_evals": bad_evals,
            "iteration": it,
            "best_model": best_state,
            "train_time": elapsed,
            "stopped_early": stopped,
            "normalizer": norm.state_dict(),
            "model_class": type(model).__name__,
            "meta": dict(meta or {}),
            "data": fingerprint,
            "training": training,
            # a periodic save is a fit in progress: predict warns, --resume finishes it
            "finished": False,
            "total_iters": iters,
        }

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=iters, initial=start, desc=type(model).__name__, leave=False)
        except ImportError:  # pragma: no cover
            bar = None
    B = tb.times.shape[0]
    it = start
    t_begin = time.perf_counter() - elapsed
    timed_out = False
    while trainable and it < iters and not stopped:
        model.train()
        if batch_size is None or batch_size >= B:
            mb = ztrain
        else:
            pick = _masked_rows if getattr(model, "series_by_row", False) else _rows
            # drawn on the CPU generator: one order on any device, resumed from "generator"
            mb = pick(ztrain, torch.randperm(B, generator=gen, device="cpu")[:batch_size])
        if lbfgs:

            def closure():
                opt.zero_grad()
                value = model.loss(mb)  # noqa: B023
                value.backward()
                return value

            loss = opt.step(closure).detach()
        else:
            opt.zero_grad()
            loss = model.loss(mb)
            loss.backward()
            loss = loss.detach()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
        it += 1
        elapsed = time.perf_counter() - t_begin
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3g}")
        if it % eval_every == 0 or it == iters:
            history["iteration"].append(it)
            history["train_loss"].append(float(loss))
            if zval is not None:
                model.eval()
                with torch.no_grad():
                    v = float(model.loss(zval))
                history["val_loss"].append(v)
                if v < best_val:
                    best_val, bad_evals = v, 0
                    best_state = {k: t.clone() for k, t in model.state_dict().items()}
                else:
                    bad_evals += 1
                    if patience is not None and bad_evals >= patience:
                        stopped = True
        if checkpoint is not None and (it % every == 0 or it == iters or stopped):
            save_checkpoint(checkpoint, state(it))
        if callback is not None:
            callback(it, float(loss))
        if max_seconds is not None and elapsed > max_seconds:
            timed_out = True
            break
    if bar is not None:
        bar.close()
    unfinished = timed_out and it < iters
    reason = ("nothing_to_train" if not trainable else "early_stopping" if stopped
              else "max_seconds" if unfinished else "max_iters")  # fmt: skip
    if checkpoint is not None and unfinished:
        # stopped by the clock: saved like a periodic save (the last iterate with its
        # optimiser state, the best validation weights in "best_model"), so --resume
        # continues exactly the uninterrupted run; it used to save the best weights as
        # "model" beside the last iterate's optimiser state, a run no one had made
        save_checkpoint(checkpoint, {**state(it), "stop_reason": reason})
    if best_state is not None:
        model.load_state_dict(best_state)
    if checkpoint is not None and not unfinished:
        save_checkpoint(checkpoint, {**state(it), "finished": True, "stop_reason": reason})
    best = best_val if zval is not None and math.isfinite(best_val) else math.nan
    return FitResult(model, norm, history, best, it, elapsed, stopped, reason,
                     dict(meta or {}))  # fmt: skip
