"""Resumable, lossless sweeps: a folder of finished cells and an executor to fill it.

A study is a set of *cells* (one problem × method × step size or tolerance).  Each
finished cell is written to its own JSON file the moment it completes, with an
atomic ``write-to-temp + rename``, so a study killed at any instant leaves only
whole cells behind; rerunning the same study loads them and computes only the
rest.  A folder holds one study *identity* (the settings that change a cell's
value: kind of study, problem, dtype, ...), recorded in ``study.json``, which is
created exclusively so two processes opening a fresh folder cannot both claim it.

Every cell file carries a checksum and is checked against the study's schema when
it is loaded: a truncated, tampered, foreign or outdated cell is never used — it is
renamed to ``<name>.json.bad`` (nothing is deleted), reported by name, and
recomputed.  Temporary files (``.tmp-<pid>-*.part``) never match the cell pattern
and those left by a killed process are removed when the folder is opened.

A study's cell keys hold the build that computes them (:func:`odenet._build.cell_build`):
a stored cell equal to a requested one but for its build (:data:`PROVENANCE_FIELDS`)
is another build's, so it is not served; :func:`warn_other_builds` says how many there
are and what changed, and they are recomputed beside the old files.

Cells run serially, on local processes (``workers > 1``) or on a Dask cluster
(``scheduler="tcp://host:port"``); the cell function is a plain top-level
function, so every executor computes bit-identical values.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import pickle
import re
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    CancelledError,
    Executor,
    ProcessPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from odenet._errors import InputError, OdenetError
from odenet._tempfiles import clean_temp_files, file_mode, temp_file, writer_prefix

STUDY_SCHEMA = "odenet.study/1"
# /2 added the checksum; /1 cells may hold blown-up solutions marked "ok", so they are
# recomputed rather than trusted.
CELL_SCHEMA = "odenet.cell/2"
_TMP_SUFFIX = ".part"
#: seconds: the longest the main thread waits on the workers before it looks for a Ctrl-C
POLL = 0.25
#: the local pools of :func:`executor`, whose workers are killed on Ctrl-C or a failure
#: (a pool the caller passes to :func:`run_cells` has its pending cells cancelled instead)
_KILLED_ON_ERROR: weakref.WeakSet = weakref.WeakSet()


class ResultsError(OdenetError, ValueError):
    """A results folder or file is unusable, or belongs to another study."""


class ExecutorError(OdenetError, RuntimeError):
    """The worker processes or the Dask cluster failed; finished cells are kept."""


class ResultsWarning(UserWarning):
    """Damaged result files were set aside, or cells computed by another build were
    found, and those cells are recomputed."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def digest(obj: Any, n: int = 16) -> str:
    """Short stable hash of a JSON-serializable object."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:n]


def _tmp_file(folder: Path) -> tuple[int, str]:
    """A temp file in ``folder`` named so that no ``*.json`` pattern matches it."""
    return temp_file(folder, _TMP_SUFFIX)


def _write_tmp(folder: Path, text: str) -> str:
    fd, tmp = _tmp_file(folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _naming(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its file name when it has none: a full disk or an I/O
    error raised by write()/fsync() names no file, and the user needs to know which."""
    if e.filename is None:
        e.filename = str(path)
    return e


def atomic_write_text(path: Path, text: str, *, make_parents: bool = True) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half.

    ``make_parents=False`` fails (``FileNotFoundError``) when the folder is gone instead of
    recreating it.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = _write_tmp(path.parent, text)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` if the block
    succeeds, removed if it fails.  For writers that want a file name (``savefig``):
    the temp name keeps the suffix (so the format is still inferred from it) and
    starts with the temp prefix, so a copy left by a killed process is cleaned up.
    """
    path = Path(path)
    tmp = path.with_name(f"{writer_prefix()}{path.name}")
    try:
        yield tmp
        with contextlib.suppress(OSError):
            os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` unless it exists; ``True`` if this call created it.

    The file appears complete or not at all (a hard link of a finished temp file), so a
    concurrent reader never sees half of it and exactly one of several racing writers wins.
    """
    path = Path(path)
    try:
        tmp = _write_tmp(path.parent, text)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        # no hard links on this file system: O_EXCL still elects one writer
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def folder_lock(folder: Path, name: str = ".outputs.lock") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/name`` while the block runs (waits for it).

    The kernel drops the lock when its holder dies, even by ``kill -9``, so it is never
    stale.  Without ``fcntl`` (not POSIX) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(Path(folder) / name, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_outputs(folder: Path, files: dict[str, str], *, stale: tuple[str, ...] = ()) -> None:
    """Replace a study's output files (tables, summary) as one set.

    The earlier set and the ``stale`` names (a plot drawn from it) are removed first,
    then each file is written atomically in the order given — put the summary last.
    So whenever the process is killed, the folder holds outputs of one run only (some
    perhaps missing, none half-written, none left from a run with other settings), and
    two processes finishing at once on one folder write their sets one after the other.
    """
    folder = Path(folder)
    with folder_lock(folder):
        for name in (*files, *stale):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        for name, text in files.items():
            atomic_write_text(folder / name, text, make_parents=False)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(
            f"{what} {path} is corrupted and cannot be read ({type(e).__name__}: {e}); "
            "delete that file to recompute it, or write the study to another folder."
        ) from None


def _checksum(identity_hash: str, key: Any, result: Any) -> str:
    return digest({"identity_hash": identity_hash, "key": key, "result": result}, 32)


def _differences(old: Any, new: dict) -> str:
    """``field: value in folder → value here`` for every setting that differs."""
    if not isinstance(old, dict):
        return "the folder's settings are unreadable"
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if a != b:
            diffs.append(f"{k}: {_brief(a)} in the folder, {_brief(b)} here")
    return "; ".join(diffs) or "the settings hash differs"


def _brief(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_result(result: dict, fields: dict[str, str]) -> str | None:
    """Why ``result`` does not match ``fields`` (``name -> kind``), or ``None``.

    Kinds: ``"int"`` (non-negative integer), ``"error"`` (non-negative number or
    ``inf``), ``"number"`` (any number, NaN allowed), ``"str"``, ``"status"``
    (``"ok"`` or ``"failed"``), ``"numbers"`` (list of numbers).
    """
    for name, kind in fields.items():
        if name not in result:
            return f"field {name!r} is missing"
        v = result[name]
        if kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        elif kind in ("error", "error or inf"):  # ("error": finite in an `ok` cell)
            ok = _is_number(v) and v >= 0  # NaN fails the comparison on purpose
        elif kind == "number":
            ok = _is_number(v)
        elif kind == "str":
            ok = isinstance(v, str)
        elif kind == "status":
            ok = v in ("ok", "failed")
        elif kind == "numbers":
            ok = isinstance(v, list) and all(_is_number(x) for x in v)
        else:  # pragma: no cover - a programming error in a schema
            raise ValueError(kind)
        if not ok:
            return f"field {name!r} has the invalid value {_brief(v)}"
    if result.get("status") == "ok":
        bad = [k for k, kind in fields.items() if kind == "error" and not math.isfinite(result[k])]
        if bad:
            return f"status 'ok' with a non-finite {bad[0]!r}"
    return None


Validator = Callable[[dict, dict], "str | None"]

#: the fields of a cell's key that say what computed it rather than what it is: the
#: build (:func:`odenet._build.cell_build`) and the digest of an odenet method's data
#: (:func:`odenet._registry.method_digest`)
PROVENANCE_FIELDS = ("build", "method_data")


def check_key(key: dict, name: str, setting: str) -> str | None:
    """Why a stored cell's key is not ``(name, [method_data,] setting[, build])`` with a
    string ``name`` and a well-formed build, or ``None`` (a key without a build, stored
    before keys recorded one, is valid: it is another build's)."""
    if set(key) - set(PROVENANCE_FIELDS) != {name, setting} or not isinstance(key[name], str):
        return f"its key is not ({name}, [method_data,] {setting}[, build])"
    return check_build(key)


def check_build(key: dict) -> str | None:
    """Why the ``"build"`` of a cell's key is malformed, or ``None`` (also when it has
    none: a cell stored before keys recorded one is valid, and of another build)."""
    build = key.get("build")
    if build is None and "build" not in key:
        return None
    if not isinstance(build, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in build.items()
    ):
        return f"its build {_brief(build)} is not a mapping of names to versions"
    return None


def _without_provenance(key: dict) -> dict:
    return {k: v for k, v in key.items() if k not in PROVENANCE_FIELDS}


def build_changes(old: dict, new: dict) -> list[str]:
    """How the stored key ``old`` was computed differently from the requested ``new``
    (two keys equal but for :data:`PROVENANCE_FIELDS`), one phrase per difference."""
    if "build" not in old and "build" in new:
        return ["stored before cells recorded their build"]
    a, b = old.get("build"), new.get("build")
    changes = []
    if isinstance(a, dict) and isinstance(b, dict):
        for name in dict.fromkeys([*b, *a]):
            if a.get(name) == b.get(name):
                continue
            if name == "odenet":
                changes.append("odenet code changed")
            else:
                changes.append(f"{name} {a.get(name, '?')} → {b.get(name, '?')}")
    elif a != b:
        changes.append("another build")
    if old.get("method_data") != new.get("method_data"):
        name = next((v for v in new.values() if isinstance(v, str)), "the method")
        changes.append(f"{name}'s coefficients changed")
    return changes or ["another build"]


class CellStore:
    """Finished cells of one study, in memory or in a folder (``<folder>/cells/*.json``).

    Parameters
    ----------
    folder : path or None
        ``None`` keeps the cells in memory only.
    identity : dict
        JSON-serializable settings that determine every cell's value.  A folder that
        already holds a different identity raises :class:`ResultsError` naming the
        settings that differ.
    validate : callable, optional
        ``validate(key, result) -> reason or None``: the schema of one cell.  A loaded
        cell it rejects (or one whose checksum does not match) is renamed to
        ``*.json.bad``, listed in :attr:`rejected` and reported with a
        :class:`ResultsWarning`; it is then missing, so the study recomputes it.

    Attributes
    ----------
    rejected : list of (str, str)
        ``(file name, reason)`` of every cell file set aside when the folder was opened.
    """

    def __init__(
        self,
        folder: str | os.PathLike | None,
        identity: dict,
        validate: Validator | None = None,
    ):
        self.folder = None if folder is None else Path(folder)
        self.identity = identity
        self.identity_hash = digest(identity)
        self.validate = validate
        self.rejected: list[tuple[str, str]] = []
        self._cells: dict[str, dict] = {}
        self._keys: dict[str, dict] = {}
        if self.folder is not None:
            try:
                self._open()
            except OSError as e:
                where = e.filename or self.folder
                raise ResultsError(
                    f"cannot use the results folder {self.folder}: {e.strerror or e} "
                    f"({where}); choose a writable folder (--out) or fix its permissions."
                ) from None

    # --- folder handling ---------------------------------------------------------------

    def _open(self) -> None:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise ResultsError(
                f"results path {folder} exists and is not a folder; choose another output folder."
            )
        cells = folder / "cells"
        if cells.exists() and not cells.is_dir():
            raise ResultsError(
                f"{cells} exists and is not a folder, so no cell can be saved there; move "
                "that file away or choose another output folder."
            )
        folder.mkdir(parents=True, exist_ok=True)
        study = folder / "study.json"
        meta = {
            "schema": STUDY_SCHEMA,
            "identity_hash": self.identity_hash,
            "identity": self.identity,
        }
        if not study.exists():
            has_cells = cells.is_dir() and any(
                p.suffix == ".json" and not p.name.startswith(".") for p in cells.iterdir()
            )
            # another process creates study.json before cells/, so re-check after looking
            if has_cells and not study.exists():
                raise ResultsError(
                    f"{folder} has result cells but no study.json: it is damaged or not an "
                    "odenet study; choose another output folder."
                )
            create_exclusive(study, json.dumps(meta, indent=2, sort_keys=True))
        self._check_study(study)
        cells.mkdir(exist_ok=True)
        clean_temp_files(folder)
        clean_temp_files(cells)
        for path in sorted(cells.iterdir()):
            if path.name.startswith(".") or path.suffix != ".json" or not path.is_file():
                continue
            reason, rec = self._load_cell(path)
            if reason is None:
                self._cells[digest(rec["key"])] = rec["result"]
                self._keys[digest(rec["key"])] = rec["key"]
            else:
                self._set_aside(path, reason)
        if self.rejected:
            listed = "; ".join(f"{name} ({why})" for name, why in self.rejected[:10])
            more = f" and {len(self.rejected) - 10} more" if len(self.rejected) > 10 else ""
            warnings.warn(
                f"{len(self.rejected)} result file(s) in {cells} could not be used and will be "
                f"recomputed (kept as *.json.bad): {listed}{more}",
                ResultsWarning,
                stacklevel=3,
            )

    def _check_study(self, study: Path) -> None:
        meta = None
        for attempt in range(5):
            try:
                meta = _read_json(study, "study file")
                break
            except ResultsError:
                # the O_EXCL fallback writes in place: give a racing writer a moment
                if attempt == 4:
                    raise
                time.sleep(0.05)
        if not isinstance(meta, dict) or meta.get("schema") != STUDY_SCHEMA:
            raise ResultsError(
                f"{study} is not an odenet study file (expected schema {STUDY_SCHEMA!r}); "
                "choose another output folder."
            )
        if meta.get("identity_hash") != self.identity_hash:
            raise ResultsError(
                f"{self.folder} holds results of a different study "
                f"({_short(meta.get('identity'))}); what differs: "
                f"{_differences(meta.get('identity'), self.identity)}. Choose another output "
                "folder, or start over with --fresh."
            )

    def _load_cell(self, path: Path) -> tuple[str | None, Any]:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"unreadable: {type(e).__name__}", None
        if not isinstance(rec, dict):
            return "not an odenet cell", None
        if rec.get("schema") != CELL_SCHEMA:
            schema = rec.get("schema")
            if isinstance(schema, str) and schema.startswith("odenet.cell/"):
                return f"written by another odenet version ({schema})", None
            return "not an odenet cell", None
        key, result = rec.get("key"), rec.get("result")
        if not isinstance(key, dict) or not isinstance(result, dict) or not result:
            return "missing or empty 'key'/'result'", None
        if rec.get("identity_hash") != self.identity_hash:
            return "belongs to a different study", None
        if rec.get("checksum") != _checksum(self.identity_hash, key, result):
            return "checksum mismatch (edited or damaged)", None
        if self.validate is not None:
            why = self.validate(key, result)
            if why:
                return why, None
        return None, rec

    def _set_aside(self, path: Path, reason: str) -> None:
        target = path.with_name(path.name + ".bad")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.{n}.bad")
            n += 1
        # a concurrent opener may have moved it already
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, target)
        self.rejected.append((path.name, reason))

    def _path(self, key: dict) -> Path:
        # (a build's mapping of versions would only clutter the name: the digest has it)
        label = "-".join(str(v) for v in key.values() if not isinstance(v, dict | list))
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[:60].lstrip(".")
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
            # the checksum is over the JSON round trip, which is what a reader will see
            key, result = json.loads(json.dumps(key)), json.loads(json.dumps(result))
            rec = {
                "schema": CELL_SCHEMA,
                "identity_hash": self.identity_hash,
                "key": key,
                "result": result,
                "checksum": _checksum(self.identity_hash, key, result),
            }
            # never recreate cells/ here: if another process removed the folder (--fresh),
            # a bare cells/ without its study.json would make the folder look damaged
            atomic_write_text(self._path(key), json.dumps(rec, sort_keys=True), make_parents=False)
        self._cells[digest(key)] = result
        self._keys[digest(key)] = key

    def other_builds(self, keys: list[dict]) -> list[tuple[dict, dict]]:
        """``(requested, stored)`` for each of ``keys`` missing from the store and each
        stored key equal to it but for :data:`PROVENANCE_FIELDS`: a cell computed by
        another build (or stored before keys recorded one), which is not served."""
        index: dict[str, list[dict]] = {}
        for stored in self._keys.values():
            index.setdefault(digest(_without_provenance(stored)), []).append(stored)
        return [
            (key, stored)
            for key in keys
            if key not in self
            for stored in index.get(digest(_without_provenance(key)), ())
        ]


def warn_other_builds(store: CellStore, keys: list[dict], *, stacklevel: int = 3) -> int:
    """Warn (:class:`ResultsWarning`, once) when ``store`` holds cells of ``keys``
    computed by another build: they are recomputed, their files kept.  Returns how many
    of ``keys`` that is."""
    pairs = store.other_builds(keys)
    if not pairs:
        return 0
    stale: dict[str, None] = {}
    reasons: dict[str, dict[str, None]] = {}
    for key, stored in pairs:
        stale[digest(key)] = None
        for why in build_changes(stored, key):
            reasons.setdefault(why, {})[digest(key)] = None
    listed = "; ".join(f"{why} ({len(cells)})" for why, cells in reasons.items())
    where = store.folder / "cells" if store.folder is not None else "the store"
    warnings.warn(
        f"{len(stale)} cell(s) in {where} were computed by another build of odenet or of "
        f"the libraries it runs on — {listed} — and are being recomputed; their old files "
        "are kept (to keep old and new results apart, write new runs to another folder).",
        ResultsWarning,
        stacklevel=stacklevel,
    )
    return len(stale)


def _short(identity: Any) -> str:
    if not isinstance(identity, dict):
        return "unknown"
    return ", ".join(f"{k}={identity[k]}" for k in ("kind", "problem") if k in identity) or "?"


# --- executors ------------------------------------------------------------------------------


def _watch_parent(parent: int) -> None:
    # A worker whose parent was killed (-9) is re-parented; without this it would wait
    # for work forever holding its memory.
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _init_worker(parent: int) -> None:
    import signal

    import torch

    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group; the parent handles it (saved cells stay,
    # one message), so workers must not each print a KeyboardInterrupt traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_workers(workers: Any, *, oversubscribe: bool = False) -> int:
    """``workers`` as an int in ``[1, CPUs]`` (``None``/``0`` mean 1; more CPUs if forced)."""
    if workers is None:
        return 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise InputError(f"`workers` must be a positive integer, got {workers!r}.")
    cpus = available_cpus()
    if workers > cpus and not oversubscribe:
        raise InputError(
            f"`workers`={workers} is more than the {cpus} CPU(s) available here; use at most "
            f"{cpus} (or force it: --oversubscribe on the command line, oversubscribe=True)."
        )
    return max(1, workers)


# [scheme://]host:port, or an in-process cluster's inproc://... address
_SCHEDULER = re.compile(
    r"^(?:inproc://\S+|(?:[a-z][a-z0-9+.-]*://)?(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5})$"
)


def check_scheduler(address: Any) -> str:
    """A Dask scheduler address ``[scheme://]host:port``, checked before any connection."""
    if not isinstance(address, str) or not _SCHEDULER.match(address.strip()):
        raise InputError(
            f"`scheduler` must be a dask scheduler address like tcp://host:8786, got {address!r}."
        )
    return address.strip()


def _executor_failure(e: BaseException) -> bool:
    """Is ``e`` the executor failing (dead workers, lost cluster) rather than a cell's bug?"""
    if isinstance(e, (CancelledError, asyncio.CancelledError, BrokenProcessPool)):
        return True
    return (type(e).__module__ or "").startswith(("distributed", "tornado"))


def _succeeded(fut) -> bool:
    try:
        return fut.done() and not fut.cancelled() and fut.exception(timeout=0) is None
    except BaseException:  # a lost cluster may fail even to report on a future
        return False


@contextlib.contextmanager
def make_executor(
    workers: int | None = 1, scheduler: str | None = None, *, oversubscribe: bool = False
) -> Iterator[Executor | None]:
    """An executor for the cells: ``None`` (serial), local processes, or a Dask cluster.

    Parameters
    ----------
    workers : int or None
        Local worker processes; ``1`` (or ``0``/``None``) runs in this process.  At most
        the number of available CPUs unless ``oversubscribe``.
    scheduler : str, optional
        Address of a running ``dask.distributed`` scheduler (``tcp://host:port``); needs
        the ``dask`` extra (``pip install "dask[distributed]"``).
    oversubscribe : bool
        Allow more workers than CPUs.

    Notes
    -----
    Local workers exit on their own when this process dies (even by ``kill -9``).
    """
    if scheduler is not None:
        scheduler = check_scheduler(scheduler)
        try:
            from distributed import Client
        except ImportError:
            raise InputError(
                "`scheduler` needs dask.distributed, which is not installed: "
                'pip install "dask[distributed]" (or odenet[dask]).'
            ) from None
        try:
            client = Client(scheduler, timeout=10, set_as_default=False)
        except Exception as e:  # distributed raises builtins, asyncio and its own types
            raise InputError(
                f"cannot connect to the dask scheduler at {scheduler!r} "
                f"({type(e).__name__}: {e or 'no answer within 10 s'}); check the address "
                "(tcp://host:port) and that the scheduler is running."
            ) from None
        try:
            yield client.get_executor()
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=5)
        return
    workers = check_workers(workers, oversubscribe=oversubscribe)
    if workers <= 1:
        yield None
        return
    # fork shares the already imported torch with the workers (spawning would
    # re-import it in every process, seconds each).
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    ex = ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
    )
    _KILLED_ON_ERROR.add(ex)
    try:
        yield ex
    except BaseException:
        # do not wait for running cells on Ctrl-C or a failure: their results are lost
        # either way, and the finished ones are already on disk.  shutdown(wait=False)
        # alone is not enough: concurrent.futures' exit hook still joins the workers,
        # whose running cells (they ignore SIGINT) would hold the exit until they end
        running = list((getattr(ex, "_processes", None) or {}).values())
        for proc in running:
            with contextlib.suppress(Exception):
                proc.terminate()
        # the pool's own thread now finds it broken and fails the pending futures; let it
        # finish first (a future cancelled before that makes it crash with a traceback on
        # Python 3.11: InvalidStateError in terminate_broken)
        manager = getattr(ex, "_executor_manager_thread", None)
        if running and manager is not None:
            manager.join(timeout=5)
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        ex.shutdown(wait=True)


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
            futures = {}
            try:
                futures = {executor.submit(fn, *args): key for key, args in todo}
                pending = set(futures)
                while pending:
                    # waits of at most POLL seconds: a Ctrl-C that the kernel delivered to
                    # another thread (the executor's) raises KeyboardInterrupt only when
                    # the main thread is back in the interpreter; a wait without a
                    # timeout held it until the next cell ended (minutes for a long cell)
                    done, pending = wait(pending, timeout=POLL, return_when=FIRST_COMPLETED)
                    for fut in done:
                        store.put(futures[fut], fut.result())
                        counts["computed"] += 1
                        if bar is not None:
                            bar.update()
            except BaseException as e:
                if executor not in _KILLED_ON_ERROR:
                    # (a pool of `executor` is stopped there by killing its workers:
                    # cancelling its futures here first would race with that)
                    for fut in futures:
                        fut.cancel()
                if isinstance(e, Exception | asyncio.CancelledError) and _executor_failure(e):
                    # cells that finished before the failure are results: keep them
                    for fut, key in futures.items():
                        if key not in store and _succeeded(fut):
                            store.put(key, fut.result())
                            counts["computed"] += 1
                    where = f" in {store.folder}" if store.folder is not None else ""
                    raise ExecutorError(
                        f"the workers stopped before the study finished ({type(e).__name__}"
                        f"{': ' + str(e) if str(e) else ''}); {counts['computed']} new cell(s) "
                        f"were saved{where}. Check the workers or the dask cluster and rerun "
                        "the same command to resume."
                    ) from None
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
    from odenet.problems import _absolute_spec, get_problem, is_file_spec

    name, params = value
    key = _canonical([name, params])
    if is_file_spec(name):
        # a problem file edited since (a notebook's second study) is another problem:
        # the file's stamp is part of the key, as in problems._factory
        try:
            st = os.stat(_absolute_spec(name).rpartition(":")[0])
            key += f"|{st.st_mtime_ns}|{st.st_size}"
        except OSError:
            pass  # get_problem says what is wrong with the file
    if key not in _PROBLEM_CACHE:
        _PROBLEM_CACHE[key] = get_problem(name, **params)
    return _PROBLEM_CACHE[key]
