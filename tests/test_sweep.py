"""Resumable sweeps: cells are saved as they finish, reruns resume, executors agree."""

from __future__ import annotations

import importlib
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


# --- cells of another build ------------------------------------------------------------------


def _counting(monkeypatch, module, name, marker):
    """Replace ``module.name`` (a study's cell function) by one that counts its calls
    and writes ``marker`` into each cell's message."""
    real = getattr(module, name)
    calls = []

    def cell(*args):
        calls.append(args)
        return {**real(*args), "message": marker}

    monkeypatch.setattr(module, name, cell)
    return calls


def _run_converge(out):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResultsWarning)
        res = convergence("exponential", methods=["rk4"], n_steps=[8, 16], out=out)
    return res, [str(w.message) for w in caught if issubclass(w.category, ResultsWarning)]


def test_a_cell_of_another_odenet_build_is_recomputed_with_a_warning(tmp_path, monkeypatch):
    # cells were keyed by method, its coefficients and the setting: a folder computed
    # before a change to the step loop, the controller or the study's error measure
    # kept serving its cells as current after an upgrade, with nothing said
    import odenet._build as build

    conv = importlib.import_module("odenet.studies.convergence")  # (the name is a function)

    calls = _counting(monkeypatch, conv, "convergence_cell", "old build")
    monkeypatch.setattr(build, "source_digest", lambda: "0123456789abcdef")
    res, said = _run_converge(tmp_path / "c")
    assert len(calls) == 2 and not said
    key = json.loads(next((tmp_path / "c" / "cells").glob("*.json")).read_text())["key"]
    assert key["build"] == build.cell_build() and key["build"]["odenet"] == "0123456789abcdef"
    assert {"torch", "numpy", "scipy"} <= set(key["build"])

    # the same build: served, nothing recomputed, nothing said
    res, said = _run_converge(tmp_path / "c")
    assert len(calls) == 2 and not said and res.counts == {"loaded": 2, "computed": 0}

    # another odenet (its code changed): recomputed, said once, old files kept
    calls = _counting(monkeypatch, conv, "convergence_cell", "new build")
    monkeypatch.setattr(build, "source_digest", lambda: "fedcba9876543210")
    res, said = _run_converge(tmp_path / "c")
    assert len(calls) == 2 and res.counts == {"loaded": 0, "computed": 2}
    assert len(said) == 1
    assert "2 cell(s)" in said[0] and "another build" in said[0]
    assert "odenet code changed (2)" in said[0] and "old files are kept" in said[0]
    assert len(list((tmp_path / "c" / "cells").glob("*.json"))) == 4
    # the table holds the requested cells of this build only
    assert len(res.table) == 2 and (res.table["message"] == "new build").all()

    # once recomputed, the old files are no news: served, no warning
    res, said = _run_converge(tmp_path / "c")
    assert len(calls) == 2 and not said and res.counts == {"loaded": 2, "computed": 0}
    assert (res.table["message"] == "new build").all()


def test_cells_of_a_folder_written_before_keys_held_the_build_are_recomputed(tmp_path):
    # a folder of an earlier odenet: keys (method, method_data, n_steps), or (method,
    # n_steps) before the method digest; its cells must count as another build's
    from odenet.problems import get_problem
    from odenet.studies.convergence import identity, validate_cell

    res, _ = _run_converge(tmp_path / "new")
    store = CellStore(tmp_path / "old", identity(get_problem("exponential"), "float64"))
    for path in sorted((tmp_path / "new" / "cells").glob("*.json")):
        rec = json.loads(path.read_text())
        key = {k: v for k, v in rec["key"].items() if k != "build"}
        if key["n_steps"] == 16:
            del key["method_data"]
        assert validate_cell(key, rec["result"]) is None  # a valid cell, not a damaged one
        store.put(key, {**rec["result"], "message": "stored by an older odenet"})
    res, said = _run_converge(tmp_path / "old")
    assert res.counts == {"loaded": 0, "computed": 2}
    assert len(said) == 1 and "2 cell(s)" in said[0]
    assert "stored before cells recorded their build (2)" in said[0]
    assert not (res.table["message"] == "stored by an older odenet").any()
    assert len(list((tmp_path / "old" / "cells").glob("*.json"))) == 4  # the old ones kept
    assert not list((tmp_path / "old" / "cells").glob("*.bad"))


def test_the_source_digest_sees_odenet_code_but_not_fit_or_models(tmp_path, monkeypatch):
    import odenet._build as build

    pkg = tmp_path / "odenet"
    for rel in ("_build.py", "_loop.py", "studies/convergence.py", "fit/train.py",
                "models/net.py"):  # fmt: skip
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(f"# {rel}\n")
    monkeypatch.setattr(build, "__file__", str(pkg / "_build.py"))

    def digest():
        build.source_digest.cache_clear()
        return build.source_digest()

    try:
        first = digest()
        (pkg / "fit" / "train.py").write_text("changed = 1\n")
        (pkg / "models" / "net.py").write_text("changed = 1\n")
        assert digest() == first  # no study cell runs them
        (pkg / "studies" / "convergence.py").write_text("changed = 1\n")
        second = digest()
        assert second != first  # the study's own code is in it
        (pkg / "_controller.py").write_text("new = 1\n")
        assert digest() != second  # and a new module
        assert build.source_digest() == build.source_digest()  # computed once, kept
    finally:
        build.source_digest.cache_clear()
