"""Results folders under faults: kills mid-write, races, damaged and tampered cells.

The truth each test checks against is independent of the store: a study computed in
memory (no folder), the bytes a cell was written with, the process table.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odenet import OdenetError
from odenet.studies.convergence import convergence, validate_cell
from odenet.studies.sweep import (
    CellStore,
    ExecutorError,
    ResultsError,
    ResultsWarning,
    atomic_write_text,
    check_scheduler,
    make_executor,
    run_cells,
)

COLS = ["method", "n_steps", "h", "error_final", "error_max", "error_l2", "nfe", "steps", "status"]
STUDY = dict(methods="heun,rk4", n_steps=[4, 8, 16])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ODENET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def truth():
    """The study computed in memory only: what every folder must reproduce."""
    return convergence("cos", **STUDY).table[COLS]


def _cells(folder):
    return sorted((folder / "cells").glob("*.json"))


# --- temp files ---------------------------------------------------------------------------


def test_leftover_temp_files_are_never_loaded_and_are_cleaned(tmp_path, truth):
    out = tmp_path / "r"
    convergence("cos", out=out, **STUDY)
    cells = out / "cells"
    # what a kill -9 during a write leaves: a truncated temp of this version (dead pid)
    # and one of the older naming scheme, which ends in .json and used to be loaded
    dead = cells / ".tmp-999999999-abc.part"
    dead.write_text('{"schema": "odenet.cell/2", "key": {"met')
    old_style = cells / ".tmp-k2j3h4.json"
    old_style.write_text('{"schema": "odenet.cell/1", "ke')
    os.utime(old_style, (time.time() - 3600, time.time() - 3600))
    again = convergence("cos", out=out, **STUDY)
    assert again.counts == {"loaded": 6, "computed": 0}
    assert not dead.exists() and not old_style.exists()
    pd.testing.assert_frame_equal(again.table[COLS], truth)


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    CellStore(tmp_path / "r", {"kind": "x"})
    mine = tmp_path / "r" / "cells" / f".tmp-{os.getppid()}-inflight.part"
    mine.write_text("{")
    CellStore(tmp_path / "r", {"kind": "x"})
    assert mine.exists()  # its writer (our parent process) is alive: not ours to delete


def test_another_hosts_young_temp_file_is_left_alone(tmp_path):
    """A results folder on a file system shared by machines: a writer elsewhere has a pid
    that means nothing here.  Judged by its pid, its file was deleted mid-write."""
    from odenet._tempfiles import host_tag, writer_prefix

    cells = tmp_path / "r" / "cells"
    CellStore(tmp_path / "r", {"kind": "x"})
    other = "0" * 8 if host_tag() != "0" * 8 else "1" * 8
    theirs = cells / f".tmp-999999999-h{other}-inflight.part"  # no such pid here
    ours_dead = cells / f".tmp-999999999-h{host_tag()}-left.part"
    stale = cells / f".tmp-999999998-h{other}-old.part"
    for p in (theirs, ours_dead, stale):
        p.write_text("{")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    CellStore(tmp_path / "r", {"kind": "x"})
    assert theirs.exists() and not ours_dead.exists() and not stale.exists()
    assert writer_prefix() == f".tmp-{os.getpid()}-h{host_tag()}-"


def test_an_interrupted_write_leaves_no_file_behind(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")

    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_files_are_written_with_the_users_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        convergence("cos", out=tmp_path / "r", methods="heun", n_steps=[4, 8])
    finally:
        os.umask(old)
    files = [tmp_path / "r" / "study.json", *_cells(tmp_path / "r")]
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}


def test_reference_cache_files_are_written_with_the_users_umask_not_0600(tmp_path):
    """A cache shared between users (``$ODENET_CACHE`` on a group folder): mkstemp's 0600
    survived the rename, and nobody else could read the reference."""
    from odenet import problems as P

    old = os.umask(0o022)
    try:
        P.reference_solution(P.get_problem("van_der_pol"), np.array([0.5, 1.0]))
    finally:
        os.umask(old)
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}


# --- study.json -------------------------------------------------------------------------------


def _open_racing(folder, problem, barrier, results):
    barrier.wait()
    try:
        store = CellStore(folder, {"kind": "convergence", "problem": problem})
        store.put({"method": "rk4", "n": 8}, {"problem": problem})
        results.put(("ok", problem))
    except ResultsError as e:
        results.put(("refused", str(e)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method")
def test_two_processes_opening_a_fresh_folder_never_disagree(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for trial in range(12):
        folder = tmp_path / f"r{trial}"
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_open_racing, args=(folder, p, barrier, results))
            for p in ("cos", "kepler")
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(20)
        outcome = sorted(results.get(timeout=5) for _ in procs)
        assert [o[0] for o in outcome] == ["ok", "refused"], outcome
        winner = outcome[0][1]
        assert "problem: " in outcome[1][1]  # the refusal names what differs
        meta = json.loads((folder / "study.json").read_text())
        assert meta["identity"]["problem"] == winner
        # the folder stays usable for the winner, and every cell in it is the winner's
        store = CellStore(folder, {"kind": "convergence", "problem": winner})
        assert store.get({"method": "rk4", "n": 8}) == {"problem": winner}


@pytest.mark.parametrize(
    ("first", "second", "named"),
    [
        ({"dtype": "float64"}, {"dtype": "float32"}, "dtype: float64 in the folder, float32 here"),
        ({"repeats": 3}, {"repeats": 5}, "repeats: 3 in the folder, 5 here"),
        ({"params": {"e": 0.5}}, {"params": {"e": 0.3}}, 'params: {"e": 0.5} in the folder'),
    ],
)
def test_the_mismatch_message_names_the_fields_that_differ(tmp_path, first, second, named):
    base = {"kind": "work_precision", "problem": "kepler"}
    CellStore(tmp_path / "r", {**base, **first})
    with pytest.raises(ResultsError, match="what differs") as info:
        CellStore(tmp_path / "r", {**base, **second})
    assert named in str(info.value)
    assert "kind:" not in str(info.value)  # fields that agree are not listed


def test_a_real_study_with_another_dtype_is_refused_naming_dtype(tmp_path):
    convergence("cos", out=tmp_path / "r", methods="heun", n_steps=[4, 8])
    with pytest.raises(ResultsError, match="dtype: float64 in the folder, float32 here"):
        convergence("cos", out=tmp_path / "r", methods="heun", n_steps=[4, 8], dtype="float32")


# --- damaged and tampered cells ----------------------------------------------------------------


def _edit(path, fn):
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


def _with_checksum(rec):
    from odenet.studies.sweep import _checksum

    rec["checksum"] = _checksum(rec["identity_hash"], rec["key"], rec["result"])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda r: r["result"].update(error_max="abc"), "checksum"),
        (lambda r: (r["result"].update(error_max="abc"), _with_checksum(r)), "error_max"),
        (lambda r: (r.update(result={}), _with_checksum(r)), "empty"),
        (lambda r: r["result"].update(error_max=1e-30), "checksum"),  # a tampered value
        (
            lambda r: (r["result"].update(status="ok", error_max=float("inf")), _with_checksum(r)),
            "non-finite",
        ),
        (lambda r: (r["result"].update(n_steps=999), _with_checksum(r)), "does not match"),
        (lambda r: r.update(schema="odenet.cell/1"), "another odenet version"),
        (lambda r: r.update(identity_hash="0" * 16), "different study"),
    ],
)
def test_a_bad_cell_is_reported_by_name_recomputed_and_never_used(tmp_path, truth, damage, reason):
    out = tmp_path / "r"
    convergence("cos", out=out, **STUDY)
    victim = _cells(out)[2]
    _edit(victim, damage)
    with pytest.warns(ResultsWarning, match=rf"{victim.name} \(.*{reason}"):
        again = convergence("cos", out=out, **STUDY)
    assert again.counts == {"loaded": 5, "computed": 1}
    pd.testing.assert_frame_equal(again.table[COLS], truth)
    assert (victim.parent / (victim.name + ".bad")).exists()  # set aside, not deleted
    # and the next run is clean: the recomputed cell replaced it
    third = convergence("cos", out=out, **STUDY)
    assert third.counts == {"loaded": 6, "computed": 0}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_in_a_cell_file_are_set_aside_never_loaded(tmp_path_factory, garbage):
    folder = tmp_path_factory.mktemp("fuzz")
    store = CellStore(folder, {"kind": "x"}, validate_cell)
    key = {"method": "rk4", "n_steps": 8}
    path = store._path(key)
    path.write_bytes(garbage)
    with pytest.warns(ResultsWarning):
        again = CellStore(folder, {"kind": "x"}, validate_cell)
    assert key not in again and len(again) == 0


@settings(max_examples=60, deadline=None)
@given(
    result=st.dictionaries(
        st.sampled_from(
            [
                "h",
                "n_steps",
                "error_final",
                "error_max",
                "error_l2",
                "nfe",
                "steps",
                "wall_s",
                "status",
                "message",
            ]
        ),
        st.none() | st.booleans() | st.integers(-5, 5) | st.floats() | st.text(max_size=5),
    )
)
def test_the_cell_schema_admits_only_well_typed_results(result):
    why = validate_cell({"method": "rk4", "n_steps": result.get("n_steps")}, result)
    if why is None:  # then the table can be built from it and the order fit trusts it
        assert result["status"] in ("ok", "failed")
        for k in ("error_final", "error_max", "error_l2"):
            assert isinstance(result[k], float | int) and result[k] >= 0
        assert result["status"] == "failed" or result["error_max"] < float("inf")


# --- executors ------------------------------------------------------------------------------


def test_workers_beyond_the_cpu_count_are_refused_unless_forced():
    with pytest.raises(OdenetError, match=r"`workers`=100000 is more than the \d+ CPU"):
        with make_executor(100000):
            pass


@pytest.mark.parametrize("address", ["garbage", "tcp://", "http//x:1", "", "host:port"])
def test_a_malformed_scheduler_address_is_refused_before_connecting(address):
    with pytest.raises(OdenetError, match="`scheduler` must be a dask scheduler address"):
        check_scheduler(address)


class _DyingExecutor:
    """Completes the first cell, then loses every other future (a cluster shut down)."""

    def __init__(self, exc):
        self.exc, self.n = exc, 0

    def submit(self, fn, *args):
        fut = Future()
        if self.n == 0:
            fut.set_result(fn(*args))
        else:
            fut.set_exception(self.exc)
        self.n += 1
        return fut


def _cell(x):
    return {"x": x}


class CommClosedError(OSError):
    __module__ = "distributed.comm.core"


@pytest.mark.parametrize(
    "exc",
    [__import__("concurrent.futures").futures.CancelledError(), CommClosedError("scheduler gone")],
)
def test_a_lost_cluster_is_a_clear_error_and_finished_cells_are_kept(tmp_path, exc):
    store = CellStore(tmp_path / "r", {"kind": "x"})
    tasks = [({"x": i}, (i,)) for i in range(4)]
    with pytest.raises(ExecutorError, match=r"1 new cell\(s\) were saved in .*rerun"):
        run_cells(_cell, tasks, store, executor=_DyingExecutor(exc))
    again = CellStore(tmp_path / "r", {"kind": "x"})
    assert again.get({"x": 0}) == {"x": 0} and len(again) == 1


def _die(x):
    if x == 3:
        os._exit(1)
    return {"x": x}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method")
def test_a_worker_process_that_dies_is_a_clear_error(tmp_path):
    store = CellStore(tmp_path / "r", {"kind": "x"})
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        with pytest.raises(ExecutorError, match="BrokenProcessPool"):
            run_cells(_die, [({"x": i}, (i,)) for i in range(5)], store, executor=ex)
    assert len(CellStore(tmp_path / "r", {"kind": "x"})) == 3  # x = 0, 1, 2 kept


def _slow_or_fail(x, folder):
    if x == 0:
        raise ValueError("cell 0 fails")
    time.sleep(0.05)
    open(os.path.join(folder, f"ran-{x}"), "w").close()
    return {"x": x}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method")
def test_a_failing_cell_cancels_the_pending_cells_of_a_pool_the_caller_owns(tmp_path):
    # run_cells leaves its own pools (odenet.studies.sweep.executor) to be killed; a pool
    # the caller passes in keeps running, so its pending cells must be cancelled
    store = CellStore(tmp_path / "r", {"kind": "x"})
    marks = tmp_path / "marks"
    marks.mkdir()
    tasks = [({"x": i}, (i, str(marks))) for i in range(40)]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        with pytest.raises(ValueError, match="cell 0 fails"):
            run_cells(_slow_or_fail, tasks, store, executor=ex)
    # cells already handed to the worker may still run; the other ~38 are cancelled
    assert len(list(marks.iterdir())) < 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="re-parenting on Linux")
def test_pool_workers_exit_when_the_parent_is_killed(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        from odenet.studies.sweep import make_executor
        with make_executor(2, oversubscribe=True) as ex:
            futs = [ex.submit(time.sleep, 60) for _ in range(2)]
            time.sleep(0.3)
            print(" ".join(str(p) for p in ex._processes), flush=True)
            time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 10
        alive = pids
        while alive and time.time() < deadline:
            time.sleep(0.2)
            alive = [p for p in pids if _alive(p)]
        assert not alive, f"orphaned workers {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) is not running
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_a_folder_removed_under_a_running_study_is_not_resurrected_half(tmp_path):
    import shutil

    store = CellStore(tmp_path / "r", {"kind": "x"})
    store.put({"x": 0}, {"x": 0})
    shutil.rmtree(tmp_path / "r")  # another process ran --fresh
    with pytest.raises(FileNotFoundError):
        store.put({"x": 1}, {"x": 1})
    assert not (tmp_path / "r").exists()  # no cells/ without its study.json
    assert len(CellStore(tmp_path / "r", {"kind": "x"})) == 0  # and the folder is usable
