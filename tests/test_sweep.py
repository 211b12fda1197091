"""Resumable sweeps: cells are saved as they finish, reruns resume, executors agree."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from odenet.studies.convergence import convergence
from odenet.studies.sweep import CellStore, ResultsError, ResultsWarning

torch.set_num_threads(1)
COLS = ["method", "n_steps", "h", "error_final", "error_max", "error_l2", "nfe", "steps", "status"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ODENET_CACHE", str(tmp_path / "cache"))


def test_cells_round_trip_through_the_folder(tmp_path):
    store = CellStore(tmp_path / "r", {"kind": "x", "problem": "p"})
    store.put({"method": "rk4", "n": 8}, {"error": 1.5, "inf": float("inf")})
    assert not list((tmp_path / "r" / "cells").glob(".tmp-*"))  # atomic: no leftovers
    again = CellStore(tmp_path / "r", {"kind": "x", "problem": "p"})
    assert len(again) == 1
    assert again.get({"method": "rk4", "n": 8}) == {"error": 1.5, "inf": float("inf")}
    assert {"method": "rk4", "n": 9} not in again


def test_a_folder_of_another_study_is_refused(tmp_path):
    CellStore(tmp_path / "r", {"kind": "convergence", "problem": "cos"})
    with pytest.raises(ResultsError, match=r"holds results of a different study.*problem=cos"):
        CellStore(tmp_path / "r", {"kind": "convergence", "problem": "kepler"})


def test_a_corrupted_cell_file_is_set_aside_reported_and_not_used(tmp_path):
    store = CellStore(tmp_path / "r", {"kind": "x"})
    store.put({"m": "a"}, {"v": 1})
    (path,) = (tmp_path / "r" / "cells").glob("*.json")
    path.write_text('{"schema": "odenet.cell/2", "key": {"m"')  # truncated
    with pytest.warns(ResultsWarning, match=rf"{path.name} \(unreadable"):
        again = CellStore(tmp_path / "r", {"kind": "x"})
    assert len(again) == 0 and {"m": "a"} not in again
    assert again.rejected == [(path.name, "unreadable: JSONDecodeError")]
    assert (path.parent / (path.name + ".bad")).exists()  # kept, not deleted


def test_a_foreign_file_among_the_cells_is_set_aside(tmp_path):
    CellStore(tmp_path / "r", {"kind": "x"})
    (tmp_path / "r" / "cells" / "notes.json").write_text(json.dumps([1, 2, 3]))
    with pytest.warns(ResultsWarning, match=r"notes.json \(not an odenet cell\)"):
        store = CellStore(tmp_path / "r", {"kind": "x"})
    assert len(store) == 0


def test_a_foreign_study_file_is_a_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "study.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ResultsError, match="is not an odenet study file"):
        CellStore(tmp_path / "r", {"kind": "x"})
    (tmp_path / "r" / "study.json").write_text("\x00\x01garbage")
    with pytest.raises(ResultsError, match=r"study file .* is corrupted"):
        CellStore(tmp_path / "r", {"kind": "x"})


def test_rerun_loads_finished_cells_and_computes_only_new_ones(tmp_path):
    out = tmp_path / "study"
    first = convergence("cos", methods="euler,rk4", n_steps=[4, 8, 16], out=out)
    assert first.counts == {"loaded": 0, "computed": 6}
    again = convergence("cos", methods="euler,rk4", n_steps=[4, 8, 16], out=out)
    assert again.counts == {"loaded": 6, "computed": 0}
    pd.testing.assert_frame_equal(first.table, again.table)
    wider = convergence("cos", methods="euler,rk4,heun", n_steps=[4, 8, 16, 32], out=out)
    assert wider.counts == {"loaded": 6, "computed": 6}


def test_local_processes_give_the_serial_table(tmp_path):
    kw = dict(methods="heun,rk4,backward_euler", n_steps=[4, 8, 16])
    serial = convergence("harmonic", **kw)
    parallel = convergence("harmonic", workers=2, oversubscribe=True, **kw)
    pd.testing.assert_frame_equal(serial.table[COLS], parallel.table[COLS])
    pd.testing.assert_frame_equal(serial.orders, parallel.orders)


def test_dask_cluster_gives_the_serial_table():
    distributed = pytest.importorskip("distributed")
    kw = dict(methods="heun,rk4,radau_iia5", n_steps=[4, 8, 16])
    serial = convergence("harmonic", **kw)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        dask = convergence("harmonic", scheduler=cluster.scheduler_address, **kw)
    pd.testing.assert_frame_equal(serial.table[COLS], dask.table[COLS])
    pd.testing.assert_frame_equal(serial.orders, dask.orders)
    assert np.isfinite(dask.table["error"]).all()


def test_unpicklable_user_problem_falls_back_to_serial_with_a_warning():
    with pytest.warns(RuntimeWarning, match="cannot be pickled.*Running serially"):
        res = convergence(
            lambda t, y: -y,
            y0=[1.0],
            span=(0, 1),
            exact=lambda t: np.exp(-t)[:, None],
            methods="heun",
            n_steps=[4, 8],
            workers=2,
            oversubscribe=True,
        )
    assert len(res.table) == 2


def test_cli_scheduler_option_gives_the_local_table(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from odenet.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["converge", "--methods", "heun,rk4", "--steps", "4,8,16", "--quiet", "--no-plot"]
    assert main([*args, "--out", "local", "--workers", "2", "--oversubscribe"]) == 0
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        assert main([*args, "--out", "dask", "--scheduler", cluster.scheduler_address]) == 0
    a = pd.read_csv(tmp_path / "local" / "results.csv")
    b = pd.read_csv(tmp_path / "dask" / "results.csv")
    cols = ["method", "n_steps", "h", "error", "error_final", "error_max", "error_l2", "nfe"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
