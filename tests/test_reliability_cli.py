"""The `odenet` command under bad input and faults: one line, status 2, nothing lost.

Also the results a newcomer reads first: blown-up cells are failures, stage orders
match the literature, `methods` / `problems` / `--version` tell the truth.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import odenet
from odenet.cli import build_parser, main

FAST = ["--quiet", "--no-plot"]


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ODENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _one_line_error(capsys, argv) -> str:
    """Run ``odenet argv``; it must fail with status 2 and exactly one stderr line."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors exit from inside parse_args
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("odenet: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _prepare(tmp_path):
    (tmp_path / "cells_file").mkdir()
    (tmp_path / "cells_file" / "cells").write_text("not a folder")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "bad.json").write_text("{not json")


BAD = [
    (["converge", "--workers", "100000"], r"`workers`=100000 is more than the \d+ CPU"),
    (["converge", "--workers", "0"], "positive integer"),
    (["converge", "--scheduler", "garbage"], "dask scheduler address"),
    (["converge", "--out", "a_file"], "a_file exists and is not a folder"),
    (["converge", "--out", ""], "--out is empty"),
    (["converge", "--out", "cells_file"], "cells exists and is not a folder"),
    (["converge", "--problem", "kepler", "--param", "e=0.3"], "eccentricity=0.5"),
    (["converge", "--problem", "heat", "--param", "n=3.5"], "must be an integer"),
    (["converge", "--param", "t1"], "expected KEY=VALUE"),
    (["converge", "--methods", "rk4,nope"], "unknown method"),
    (["converge", "--steps", "8"], "at least two"),
    (["converge", "--steps", "a,b"], "comma-separated integers"),
    (["converge", "--config", "missing.json"], "cannot read --config missing.json"),
    (["converge", "--config", "bad.json"], "cannot read --config bad.json"),
    (["converge", "--problem", "nope"], "unknown problem 'nope'"),
    (["converge", "--steps", "8,100000000"], "beyond the 10,000,000 a study allows"),
    (["converge", "--step-sizes", "0.1,1e-12"], "beyond the 10,000,000 a study allows"),
    (["compare", "--steps", "8,100000000"], "`n_steps` up to 10,000,000"),
    (["compare", "--tols", "2"], "tolerances"),
    (["compare", "--repeats", "1000000000"], "`repeats` must be a positive integer up to 100"),
    (["compare", "--methods", "scipy:nope"], "unknown scipy method"),
    (["stability", "--grid", "0"], "--grid: expected 2 to"),
    (["stability", "--grid", "x"], "--grid: expected an integer"),
    (["stability", "--plot", "missing/regions.png"], "the folder missing does not exist"),
    (["stability", "--plot", "regions.nope"], "unknown image format 'nope'"),
    (["stability", "--plot", "."], "is a folder"),
    (["stability", "--method", "rk4,nope"], "unknown method 'nope'"),
    (["stability", "--re", "1", "-1"], "--re MIN MAX needs finite MIN < MAX"),
    (["nope"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_with_status_2(tmp_path, capsys, argv, message):
    _prepare(tmp_path)
    line = _one_line_error(capsys, argv + (FAST if argv[0] in ("converge", "compare") else []))
    assert message in line or __import__("re").search(message, line), line


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a read-only /proc")
def test_an_unwritable_results_folder_names_the_path(capsys):
    line = _one_line_error(capsys, ["converge", "--out", "/proc/odenet-results", *FAST])
    assert "/proc/odenet-results" in line


def test_a_full_disk_mid_study_is_one_line_and_keeps_finished_cells(tmp_path, capsys, monkeypatch):
    from odenet.studies import sweep

    argv = ["converge", "--methods", "heun,rk4", "--steps", "4,8,16", "--workers", "1", *FAST]
    real, writes = sweep._write_tmp, []

    def full_disk(folder, text):
        writes.append(folder)
        if len(writes) > 3:  # study.json and two cells fit on the disk
            raise OSError(errno.ENOSPC, "No space left on device", str(folder))
        return real(folder, text)

    monkeypatch.setattr(sweep, "_write_tmp", full_disk)
    line = _one_line_error(capsys, [*argv, "--out", "r"])
    assert "No space left on device" in line and "cells" in line
    monkeypatch.setattr(sweep, "_write_tmp", real)
    assert main([*argv, "--out", "r"]) == 0
    assert "4 computed, 2 loaded" in capsys.readouterr().out
    assert main([*argv, "--out", "clean"]) == 0
    a, b = (
        pd.read_csv(tmp_path / "r" / "results.csv"),
        pd.read_csv(tmp_path / "clean" / "results.csv"),
    )
    cols = ["method", "n_steps", "h", "error", "nfe", "status"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=30))
def test_any_param_text_is_a_problem_or_a_one_line_error(capsys, text):
    from odenet.cli import _problem

    try:
        args = build_parser("converge").parse_args(
            ["converge", "--problem", "kepler", "--param", text]
        )
    except SystemExit as e:
        assert e.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("odenet: error: argument --param")
        return
    args.problem_given = True
    try:
        problem, _, params = _problem(args, {})
    except odenet.OdenetError as e:
        assert "eccentricity" in str(e) or "kepler" in str(e)
        return
    assert problem.name == "kepler" and set(params) <= {"eccentricity", "t1"}


# --- results a newcomer reads -----------------------------------------------------------------


def test_heat_cells_that_blew_up_are_failures_not_huge_errors(capsys):
    argv = ["converge", "--problem", "heat", "--methods", "euler", "--steps", "8,64", "--out", "h"]
    assert main([*argv, *FAST]) == 0
    table = pd.read_csv("h/results.csv").set_index("n_steps")
    # independent truth: forward Euler amplifies the stiffest mode by |1 + h λ| per step
    A = np.diag(-2 * np.ones(16)) + np.diag(np.ones(15), 1) + np.diag(np.ones(15), -1)
    lam = np.linalg.eigvalsh(A * 17**2)
    growth = {n: np.abs(1 + 0.1 / n * lam).max() for n in (8, 64)}
    assert growth[8] > 10 and growth[64] < 1
    assert table.loc[8, "status"] == "failed" and np.isinf(table.loc[8, "error"])
    assert "blew up" in table.loc[8, "message"]
    assert table.loc[64, "status"] == "ok" and table.loc[64, "error"] < 1e-2


def test_orders_csv_stage_orders_match_the_literature(capsys):
    argv = ["converge", "--methods", "euler,rk4,radau_iia5,gauss_legendre4", "--steps", "4,8"]
    assert main([*argv, "--out", "o", *FAST]) == 0
    orders = pd.read_csv("o/orders.csv").set_index("method")["stage_order"].to_dict()
    # Hairer & Wanner II, IV.5: explicit methods have stage order 1, Radau IIA (s=3) 3,
    # Gauss (s=2) 2
    assert orders == {"euler": 1, "rk4": 1, "radau_iia5": 3, "gauss_legendre4": 2}


def test_methods_lists_every_method_with_its_true_properties(capsys):
    assert main(["methods", "--json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    from odenet._registry import registered

    assert set(rows) == set(odenet.methods()) | set(registered())
    assert rows["bdf3"]["order"] == 3 and not rows["bdf3"]["adaptive"]
    assert rows["bdf3"]["kind"] == "implicit multistep (3 steps)"
    assert rows["euler"] == {
        "method": "euler",
        "order": 1,
        "embedded_order": None,
        "estimator": None,
        "stages": 1,
        "kind": "explicit",
        "adaptive": False,
    }
    # the trapezoid's embedded Euler is data; adaptive solves use its Milne estimate
    assert rows["trapezoid"]["embedded_order"] == 1 and rows["trapezoid"]["estimator"] == "milne"
    assert rows["radau_iia5"]["estimator"] == "radau5" and rows["bdf3"]["estimator"] is None
    assert rows["dopri5"]["order"] == 5 and rows["dopri5"]["adaptive"]
    assert rows["dopri5"]["embedded_order"] == 4 and rows["dopri5"]["stages"] == 7
    assert rows["radau_iia5"]["kind"] == "implicit" and rows["radau_iia5"]["stages"] == 3
    assert rows["sdirk2"]["kind"] == "diagonally implicit"
    assert main(["methods"]) == 0
    assert "dopri5" in capsys.readouterr().out


def test_problems_show_the_parameter_names_param_accepts(capsys):
    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    assert "eccentricity=0.5" in out and "lam=-1e+06" in out and "--param NAME=VALUE" in out
    assert (
        main(
            [
                "converge",
                "--problem",
                "kepler",
                "--param",
                "eccentricity=0.3",
                "--methods",
                "rk4",
                "--steps",
                "64,128",
                "--out",
                "k",
                *FAST,
            ]
        )
        == 0
    )
    assert json.loads(open("k/config.json").read())["params"] == {"eccentricity": 0.3}


def test_stability_takes_comma_lists_like_converge(capsys):
    assert main(["stability", "--method", "rk4,dopri5", "--method", "euler", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [d["method"] for d in info] == ["rk4", "dopri5", "euler"]
    assert info[2]["real_interval"] == pytest.approx(-2.0)  # |1 + z| <= 1


def test_python_dash_m_odenet_prints_the_version():
    r = subprocess.run(
        [sys.executable, "-m", "odenet", "--version"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and r.stdout.strip() == f"odenet {odenet.__version__}", r.stderr


def test_building_the_parser_for_one_command_loads_no_other_plugin():
    parser = build_parser("converge")
    sub = next(a for a in parser._actions if a.dest == "command")
    # the stub for `fit` has no options of its own: its module was not imported for it
    assert [a.dest for a in sub.choices["fit"]._actions] == []


# --- plots with many methods ----------------------------------------------------------------


def test_a_convergence_plot_of_many_methods_keeps_every_curve_distinct_and_the_legend_outside():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from odenet.plotting import plot_convergence
    from odenet.studies import convergence

    methods = [m for m in odenet.methods() if odenet.tableau(m).is_explicit][:14]
    assert len(methods) > 10  # more than tab10 has colours
    fig = plot_convergence(convergence("cos", methods=methods, n_steps=[4, 8, 16]))
    ax = fig.axes[0]
    leg = ax.get_legend()
    assert len(leg.get_texts()) == len(methods)
    fig.canvas.draw()
    # the legend lies right of the axes, not on top of the curves
    assert leg.get_window_extent().x0 >= ax.get_window_extent().x1
    styles = {(matplotlib.colors.to_hex(h.get_color()), h.get_marker()) for h in leg.legend_handles}
    assert len(styles) == len(methods)
    plt.close(fig)


def test_the_comparison_plot_tells_fixed_step_from_tolerance_sweeps_and_labels_points():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from odenet.plotting import plot_work_precision
    from odenet.studies import work_precision

    res = work_precision(
        "exponential",
        methods="dopri5,rk4",
        tolerances=[1e-3, 1e-6],
        n_steps=[8, 16],
        repeats=1,
    )
    fig = plot_work_precision(res)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert lines["dopri5 (rtol sweep)"].get_linestyle() == "-"
    assert lines["rk4 (fixed steps, N sweep)"].get_linestyle() == "--"
    assert lines["rk4 (fixed steps, N sweep)"].get_marker() == "s"
    labels = {t.get_text() for t in ax.texts}
    assert {"1e-03", "1e-06", "N=8", "N=16"} <= labels
    plt.close(fig)


def test_the_work_precision_plot_shows_the_work_the_table_ranks_by():
    """odenet's autograd Jacobians cost vector–Jacobian products that are not f
    evaluations (scipy's finite differences are): the plot showed nfe alone, 9x in
    odenet's favour on brusselator_1d where the table's work said even."""
    import matplotlib.pyplot as plt

    from odenet.plotting import plot_work_precision
    from odenet.studies import work_precision

    res = work_precision("kaps", methods="radau_iia5", tolerances=[1e-3, 1e-5], repeats=1)
    table = res.table
    assert (table["jac_products"] > 0).all()
    fig = plot_work_precision(res)
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("radau_iia5")]
    assert sorted(line.get_xdata()) == sorted(table["nfe"] + table["jac_products"])
    assert "Jacobian products" in ax.get_xlabel() and res.error in ax.get_ylabel()
    plt.close(fig)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=80, deadline=None)
@given(
    cfg=st.fixed_dictionaries(
        {},
        optional={
            k: JSON | st.just(v)
            for k, v in {
                "problem": "cos",
                "params": {"t1": 2.0},
                "methods": ["rk4", "heun"],
                "n_steps": [4, 8],
                "norm": "max",
                "dtype": "float64",
            }.items()
        },
    )
)
def test_any_saved_config_is_refused_in_one_line_or_passes_every_validator(cfg):
    """A hand-edited config.json never reaches the study as a raw TypeError."""
    from odenet.cli import CLIError, check_config
    from odenet.problems import get_problem
    from odenet.studies.convergence import check_dtype, check_methods, check_norm, steps_from

    try:
        check_config(cfg, "config.json")
    except CLIError as e:
        assert str(e).startswith("--config config.json: ") and "\n" not in str(e)
        return
    try:
        problem = get_problem(cfg.get("problem", "cos"), **cfg.get("params", {}))
        check_methods(cfg.get("methods"))
        steps_from(problem, None, cfg.get("n_steps"))
        check_norm(cfg.get("norm", "max"))
        check_dtype(cfg.get("dtype", "float64"))
    except odenet.OdenetError:
        pass  # a typed, one-line error in the CLI


# `python -m odenet` as a terminal starts it: SIGINT at its default.  A test run started in
# the background of a non-interactive shell (`pytest ... &`) has SIGINT ignored, and a child
# inherits that: it would never see the Ctrl-C these tests send
_AS_FROM_A_TERMINAL = [
    sys.executable,
    "-c",
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'odenet'; runpy.run_module('odenet', run_name='__main__', alter_sys=True)",
]


def _study_with_saved_cells(tmp_path, argv, n_saved: int):
    """Start the CLI study ``argv`` (in its own process group, output folder ``o``) and
    return ``(process, cells folder)`` once ``n_saved`` cells are on disk."""
    import time

    proc = subprocess.Popen(
        [*_AS_FROM_A_TERMINAL, *argv, "--out", "o", *FAST],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    cells = tmp_path / "o" / "cells"
    deadline = time.time() + 120
    while (
        time.time() < deadline
        and len(list(cells.glob("*.json")) if cells.is_dir() else []) < n_saved
    ):
        time.sleep(0.05)
    assert proc.poll() is None, "the study finished before it could be interrupted"
    return proc, cells


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups, fork")
def test_ctrl_c_with_worker_processes_is_one_line_and_keeps_finished_cells(tmp_path):
    import signal

    steps = ",".join(str(n) for n in range(200, 4200, 100))
    argv = ["converge", "--problem", "kepler", "--methods", "rk4,radau_iia5", "--steps", steps]
    proc, cells = _study_with_saved_cells(tmp_path, [*argv, "--workers", "2", "--oversubscribe"], 2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130
    assert err.strip().splitlines() == [
        "odenet: interrupted; finished cells are saved, rerun the same command to resume."
    ]
    assert len(list(cells.glob("*.json"))) >= 2


_TGKILL = {"x86_64": 234, "aarch64": 131}.get(__import__("platform").machine())


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or _TGKILL is None, reason="Linux tgkill, fork"
)
def test_ctrl_c_does_not_wait_for_the_cells_the_workers_are_running(tmp_path):
    # Two ways Ctrl-C used to wait for the workers' running cells (here 4e5 implicit
    # fixed steps each, minutes): the kernel may deliver the terminal's SIGINT to any
    # thread of the parent, and one delivered to the executor's thread left the main
    # thread blocked in its wait for the next finished cell; and the parent's exit joined
    # the workers, which ignore SIGINT.  Before the fixes: no exit within 30 s; after ~1 s.
    import ctypes
    import signal

    argv = ["converge", "--problem", "kepler", "--methods", "radau_iia5,kvaerno5"]
    argv += ["--steps", "200,300,400000", "--workers", "2", "--oversubscribe"]
    # the four small cells are saved: both workers are inside a 4e5-step cell now
    proc, cells = _study_with_saved_cells(tmp_path, argv, 4)
    threads = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
    assert threads, "the parent runs an executor thread beside its main thread"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_TGKILL, proc.pid, max(threads), signal.SIGINT) == 0
    children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
    for pid in children:  # the rest of the process group, as a terminal signals it
        os.kill(int(pid), signal.SIGINT)
    try:
        err = proc.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        err = proc.communicate()[1]
        raise AssertionError(f"Ctrl-C waited for the workers' running cells: {err}") from None
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("odenet: interrupted")
    assert len(list(cells.glob("*.json"))) == 4
