"""Resumable, lossless sweeps: a folder of finished cells and an executor to fill it.

A study is a set of *cells* (one problem × method × step size or tolerance).  Each
finished cell is written to its own JSON file the moment it completes, with an
atomic ``write-to-temp + rename``, so a study killed at any instant leaves only
whole cells behind; rerunning the same study loads them and computes only the
rest.  A folder holds one study *identity* (the settings that change a cell's
value: kind of study, problem, dtype, ...); a folder written by another study,
another program or a damaged file raises :class:`ResultsError` naming the file.

Cells run serially, on local processes (``workers > 1``) or on a Dask cluster
(``scheduler="tcp://host:port"``); the cell function is a plain top-level
function, so every executor computes bit-identical values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from odenet._errors import InputError, OdenetError

STUDY_SCHEMA = "odenet.study/1"
CELL_SCHEMA = "odenet.cell/1"


class ResultsError(OdenetError, ValueError):
    """A results folder or file is corrupted, foreign, or belongs to another study."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def digest(obj: Any, n: int = 16) -> str:
    """Short stable hash of a JSON-serializable object."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:n]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(
            f"{what} {path} is corrupted and cannot be read ({type(e).__name__}: {e}); "
            "delete that file to recompute it, or write the study to another folder."
        ) from None


class CellStore:
    """Finished cells of one study, in memory or in a folder (``<folder>/cells/*.json``).

    Parameters
    ----------
    folder : path or None
        ``None`` keeps the cells in memory only.
    identity : dict
        JSON-serializable settings that determine every cell's value.  A folder that
        already holds a different identity raises :class:`ResultsError`.
    """

    def __init__(self, folder: str | os.PathLike | None, identity: dict):
        self.folder = None if folder is None else Path(folder)
        self.identity = identity
        self.identity_hash = digest(identity)
        self._cells: dict[str, dict] = {}
        if self.folder is not None:
            self._open()

    # --- folder handling ---------------------------------------------------------------

    def _open(self) -> None:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise ResultsError(f"results path {folder} exists and is not a folder.")
        study = folder / "study.json"
        if study.exists():
            meta = _read_json(study, "study file")
            if not isinstance(meta, dict) or meta.get("schema") != STUDY_SCHEMA:
                raise ResultsError(
                    f"{study} is not an odenet study file (expected schema {STUDY_SCHEMA!r}); "
                    "choose another output folder."
                )
            if meta.get("identity_hash") != self.identity_hash:
                raise ResultsError(
                    f"{folder} holds results of a different study "
                    f"({_short(meta.get('identity'))}); "
                    f"this study is ({_short(self.identity)}). Choose another output folder, "
                    "or start over with --fresh."
                )
        else:
            if folder.exists() and any(p for p in folder.iterdir() if not p.name.startswith(".")):
                if (folder / "cells").exists():
                    raise ResultsError(
                        f"{folder} has a cells/ folder but no study.json: it is damaged or "
                        "not an odenet study; choose another output folder."
                    )
            atomic_write_text(
                study,
                json.dumps(
                    {
                        "schema": STUDY_SCHEMA,
                        "identity_hash": self.identity_hash,
                        "identity": self.identity,
                    },
                    indent=2,
                    sort_keys=True,
                ),
            )
        cells = folder / "cells"
        cells.mkdir(parents=True, exist_ok=True)
        for path in sorted(cells.glob("*.json")):
            rec = _read_json(path, "results file")
            if (
                not isinstance(rec, dict)
                or rec.get("schema") != CELL_SCHEMA
                or not isinstance(rec.get("key"), dict)
                or not isinstance(rec.get("result"), dict)
            ):
                raise ResultsError(
                    f"results file {path} is not an odenet cell (expected schema "
                    f"{CELL_SCHEMA!r} with 'key' and 'result'); delete it or choose another folder."
                )
            if rec.get("identity_hash") != self.identity_hash:
                raise ResultsError(
                    f"results file {path} belongs to a different study; delete it or choose "
                    "another folder."
                )
            self._cells[digest(rec["key"])] = rec["result"]

    def _path(self, key: dict) -> Path:
        label = "-".join(str(v) for v in key.values())
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[:60]
        return self.folder / "cells" / f"{safe}-{digest(key, 10)}.json"

    # --- cells -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._cells)

    def __contains__(self, key: dict) -> bool:
        return digest(key) in self._cells

    def get(self, key: dict) -> dict | None:
        return self._cells.get(digest(key))

    def put(self, key: dict, result: dict) -> None:
        """Record a finished cell (atomically on disk when the store has a folder)."""
        if self.folder is not None:
            rec = {
                "schema": CELL_SCHEMA,
                "identity_hash": self.identity_hash,
                "key": key,
                "result": result,
            }
            atomic_write_text(self._path(key), json.dumps(rec, sort_keys=True))
        self._cells[digest(key)] = result


def _short(identity: Any) -> str:
    if not isinstance(identity, dict):
        return "unknown"
    return ", ".join(f"{k}={identity[k]}" for k in ("kind", "problem") if k in identity) or "?"


# --- executors ------------------------------------------------------------------------------


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def make_executor(
    workers: int | None = 1, scheduler: str | None = None
) -> Iterator[Executor | None]:
    """An executor for the cells: ``None`` (serial), local processes, or a Dask cluster.

    Parameters
    ----------
    workers : int or None
        Local worker processes; ``1`` (or ``0``/``None``) runs in this process.
    scheduler : str, optional
        Address of a running ``dask.distributed`` scheduler (``tcp://host:port``); needs
        the ``dask`` extra (``pip install "dask[distributed]"``).
    """
    if scheduler is not None:
        try:
            from distributed import Client
        except ImportError:
            raise InputError(
                "`scheduler` needs dask.distributed, which is not installed: "
                'pip install "dask[distributed]" (or odenet[dask]).'
            ) from None
        try:
            client = Client(scheduler, timeout=10, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise InputError(
                f"cannot connect to the dask scheduler at {scheduler!r} ({e}); check the "
                "address (tcp://host:port) and that the scheduler is running."
            ) from None
        try:
            yield client.get_executor()
        finally:
            client.close()
        return
    if workers is None or workers <= 1:
        yield None
        return
    # fork shares the already imported torch with the workers (spawning would
    # re-import it in every process, seconds each).
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    with ProcessPoolExecutor(int(workers), mp_context=ctx, initializer=_init_worker) as ex:
        yield ex


def picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:
        return False


def run_cells(
    fn: Callable[..., dict],
    tasks: list[tuple[dict, tuple]],
    store: CellStore,
    *,
    executor: Executor | None = None,
    progress: bool = False,
    desc: str = "cells",
) -> dict[str, int]:
    """Compute every task whose key is not in ``store`` and save each as it finishes.

    Parameters
    ----------
    fn : callable
        Top-level function ``fn(*args) -> dict`` (picklable for process/Dask executors).
    tasks : list of (key, args)
        ``key`` a JSON-serializable dict naming the cell, ``args`` the arguments of ``fn``.
    store : CellStore
    executor : concurrent.futures.Executor, optional
        ``None`` runs serially in this process.
    progress : bool
        A tqdm progress bar on stderr.

    Returns
    -------
    dict
        ``{"loaded": n, "computed": m}``.
    """
    todo = [(k, a) for k, a in tasks if k not in store]
    counts = {"loaded": len(tasks) - len(todo), "computed": 0}
    if not todo:
        return counts
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # the bar is a nicety, never a requirement
            tqdm = None
        if tqdm is not None:
            bar = tqdm(total=len(todo), desc=desc, file=sys.stderr, unit="cell", leave=False)
    try:
        if executor is None:
            for key, args in todo:
                store.put(key, fn(*args))
                counts["computed"] += 1
                if bar is not None:
                    bar.update()
        else:
            futures = {executor.submit(fn, *args): key for key, args in todo}
            try:
                for fut in as_completed(futures):
                    store.put(futures[fut], fut.result())
                    counts["computed"] += 1
                    if bar is not None:
                        bar.update()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        if bar is not None:
            bar.close()
    return counts


def problem_payload(problem, executor: Executor | None):
    """What to send to a worker: the registry spec of a built-in problem, else the object."""
    if problem.spec is not None:
        return ("spec", problem.spec)
    if isinstance(executor, ProcessPoolExecutor) and not picklable(problem):
        warnings.warn(
            f"problem {problem.name!r} cannot be pickled (a lambda or closure?), so it cannot "
            "be sent to worker processes; define f at module level. Running serially.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return ("object", problem)


_PROBLEM_CACHE: dict[str, Any] = {}


def resolve_problem(payload):
    """Inverse of :func:`problem_payload` (built-ins are rebuilt once per process)."""
    kind, value = payload
    if kind == "object":
        return value
    from odenet.problems import get_problem

    name, params = value
    key = _canonical([name, params])
    if key not in _PROBLEM_CACHE:
        _PROBLEM_CACHE[key] = get_problem(name, **params)
    return _PROBLEM_CACHE[key]
