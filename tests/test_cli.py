"""The `odenet` command end to end: files written, one-line errors, interrupt and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from odenet.cli import main

ODENET = [sys.executable, "-m", "odenet.cli"]


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ODENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def run(args, cwd, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        ODENET + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.slow
def test_converge_with_defaults_writes_table_plot_and_config(tmp_path):
    r = run(["converge"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "odenet-results" / "converge-cos"
    for name in [
        "config.json",
        "results.csv",
        "orders.csv",
        "summary.json",
        "convergence.png",
        "study.json",
    ]:
        assert (out / name).is_file(), name
    orders = pd.read_csv(out / "orders.csv")
    assert list(orders["method"]) == ["euler", "heun", "rk3", "rk4", "dopri5", "radau_iia5"]
    assert (abs(orders["observed_order"] - orders["expected_order"]) < 0.3).all()
    assert "observed" in r.stdout and "radau_iia5" in r.stdout
    assert "42 computed, 0 loaded" in r.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "converge" and config["problem"] == "cos"
    assert config["n_steps"] == [8, 11, 16, 23, 32, 45, 64]


def test_converge_with_options_and_rerun_from_its_config(tmp_path):
    args = [
        "converge",
        "--problem",
        "kepler",
        "--param",
        "eccentricity=0.1",
        "--methods",
        "heun,rk4",
        "--steps",
        "8,16,32",
        "--norm",
        "l2",
        "--out",
        "a",
        "--workers",
        "1",
        "--no-plot",
        "--quiet",
    ]
    assert main(args) == 0
    a = tmp_path / "a"
    assert not (a / "convergence.png").exists()
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["params"] == {"eccentricity": 0.1} and cfg["norm"] == "l2"
    from odenet._build import cell_build

    assert json.loads((a / "summary.json").read_text())["build"] == cell_build()
    assert main(["converge", "--config", str(a / "config.json"), "--out", "b", "--quiet"]) == 0
    ta, tb = pd.read_csv(a / "results.csv"), pd.read_csv(tmp_path / "b" / "results.csv")
    cols = ["method", "n_steps", "error", "error_l2", "nfe"]
    pd.testing.assert_frame_equal(ta[cols], tb[cols])


def test_compare_with_options_writes_its_files(tmp_path, capsys):
    args = [
        "compare",
        "--problem",
        "cos",
        "--methods",
        "dopri5,rk4,scipy:RK45,torchdiffeq:dopri5",
        "--tols",
        "1e-4,1e-6",
        "--steps",
        "8,16",
        "--repeats",
        "1",
        "--out",
        "c",
    ]
    assert main(args) == 0
    c = tmp_path / "c"
    for name in ["config.json", "results.csv", "summary.csv", "summary.json", "work_precision.png"]:
        assert (c / name).is_file(), name
    table = pd.read_csv(c / "results.csv")
    assert set(table["label"]) == {"dopri5", "rk4", "scipy:RK45", "torchdiffeq:dopri5"}
    assert "Work–precision" in capsys.readouterr().out


def test_compare_in_float32_says_the_scipy_rows_ran_in_float64(tmp_path, capsys):
    # audit M S3: scipy's solve_ivp always runs in float64, but a float32 comparison
    # printed, saved and plotted its rows as if they were float32 ones
    args = ["compare", "--problem", "cos", "--methods", "dopri5,scipy:RK45,torchdiffeq:dopri5",
            "--tols", "1e-3", "--repeats", "1", "--dtype", "float32", "--out", "c"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "c" / "results.csv")
    assert dict(zip(table["label"], table["dtype"])) == {
        "dopri5": "float32",
        "scipy:RK45 (float64)": "float64",
        "torchdiffeq:dopri5": "float32",
    }
    assert "scipy:RK45 (float64)" in out and "are float64 solves" in out
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert "scipy:RK45 (float64)" in [row["solver"] for row in summary["summary"]]
    # the build the numbers came from, torchdiffeq's version included for its rows
    from odenet._build import cell_build

    assert summary["build"] == cell_build("torchdiffeq")


@pytest.mark.slow
def test_compare_with_defaults_subprocess(tmp_path):
    r = run(["compare", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "odenet-results" / "compare-kepler"
    assert (out / "work_precision.png").is_file()
    table = pd.read_csv(out / "results.csv")
    assert {"scipy:RK45", "torchdiffeq:dopri5", "dopri5"} <= set(table["label"])


def test_problems_lists_the_library(capsys):
    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    assert "kepler" in out and "prothero_robinson" in out and "reference" in out


def test_methods_names_each_adaptive_methods_estimate(capsys):
    assert main(["methods"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:] if ln.strip()}
    assert lines["kvaerno5"].endswith("adaptive (embedded order 4)")
    assert lines["radau_iia5"].endswith("adaptive")
    # the trapezoid's embedded Euler is data; its adaptive solves use Milne's device
    assert lines["trapezoid"].endswith("adaptive (milne estimate)")
    assert lines["rk4"].rstrip().endswith("fixed (give step_size / --steps)")


def test_bad_option_is_one_line_and_nonzero_exit_in_a_subprocess(tmp_path):
    r = run(["converge", "--norm", "sup"], tmp_path, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("odenet: error:") and "sup" in lines[0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["converge", "--methods", "rk4,nope"], "unknown method(s) ['nope']"),
        (["converge", "--problem", "nope"], "unknown problem 'nope'"),
        (["converge", "--steps", "a,b"], "expected comma-separated integers"),
        (["converge", "--steps", "8"], "at least two positive integers"),
        (["converge", "--steps", "8,16", "--step-sizes", "0.1,0.2"], "not both"),
        (["converge", "--param", "eccentricity"], "expected KEY=VALUE"),
        (["converge", "--workers", "0"], "expected a positive integer"),
        (["converge", "--config", "missing.json"], "cannot read --config missing.json"),
        (["compare", "--methods", "scipy:Nope"], "unknown scipy method 'Nope'"),
        (["compare", "--tols", "5"], "`tolerances` must be numbers in (0, 1)"),
        # audit M F10: `odenet methods` lists ab3; "unknown method 'ab3'" was wrong
        (["stability", "--methods", "ab3"], "Runge–Kutta methods (Butcher tableaus); 'ab3' is a"),
        # audit M F7: grid sizes n <= 0 were raw numpy / ZeroDivisionError tracebacks
        (["converge", "--problem", "heat", "--param", "n=0"], "`n` (the number of grid"),
        (["converge", "--problem", "brusselator_1d", "--param", "n=-2"], "positive integer"),
        (["compare", "--problem", "advection", "--param", "n=0"], "got 0; e.g. n=32"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_options_give_one_line_errors(args, match, capsys):
    with pytest.raises(SystemExit) as exc:
        sys.exit(main([*args, "--quiet"] if args[0] in ("converge", "compare") else args))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("odenet: error:")
    assert match in err[0]


def test_foreign_results_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "study.json").write_text("{broken")
    assert main(["converge", "--out", "x", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is corrupted" in err[0]


@pytest.mark.slow
def test_killed_sweep_resumes_losslessly_without_recomputing(tmp_path):
    args = [
        "converge",
        "--problem",
        "cos",
        "--methods",
        "radau_iia5,gauss_legendre4,rk4",
        "--steps",
        "8,11,16,23,32,45",
        "--workers",
        "1",
        "--quiet",
        "--no-plot",
    ]
    cells = tmp_path / "killed" / "cells"
    proc = subprocess.Popen(
        [*ODENET, *args, "--out", "killed"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if cells.is_dir() and len(list(cells.glob("*.json"))) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in cells.glob("*.json")}
    assert 3 <= len(before) < 18

    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main([*args, "--out", "killed"]) == 0
    assert f"{18 - len(before)} computed, {len(before)} loaded" in buf.getvalue()
    for p in cells.glob("*.json"):
        if p.name in before:  # finished cells were neither recomputed nor rewritten
            assert (p.read_bytes(), p.stat().st_mtime_ns) == before[p.name]
    with redirect_stdout(io.StringIO()):
        assert main([*args, "--out", "clean"]) == 0
    cols = ["method", "n_steps", "h", "error", "error_final", "error_max", "error_l2", "nfe"]
    resumed = pd.read_csv(tmp_path / "killed" / "results.csv")[cols]
    clean = pd.read_csv(tmp_path / "clean" / "results.csv")[cols]
    pd.testing.assert_frame_equal(resumed, clean)
    o1 = pd.read_csv(tmp_path / "killed" / "orders.csv")
    o2 = pd.read_csv(tmp_path / "clean" / "orders.csv")
    pd.testing.assert_frame_equal(o1, o2)


def test_stability_and_fit_commands_exist_or_say_they_are_unavailable(capsys):
    from odenet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"converge", "compare", "problems", "stability", "fit"} <= set(sub.choices)


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "converge" in capsys.readouterr().out


def test_plots_are_written_and_stability_function_matches_the_closed_form(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from odenet.plotting import (
        _stability_function,
        plot_convergence,
        plot_stability_regions,
        plot_work_precision,
    )
    from odenet.studies import convergence, work_precision

    res = convergence("cos", methods="euler,rk4", n_steps=[4, 8, 16])
    plot_convergence(res, path=tmp_path / "c.png")
    wp = work_precision("cos", methods="dopri5,scipy:RK45", tolerances=[1e-3, 1e-5], repeats=1)
    plot_work_precision(wp, path=tmp_path / "w.png")
    plot_stability_regions(["euler", "rk4", "radau_iia5"], path=tmp_path / "s.png", n=61)
    for name in ["c.png", "w.png", "s.png"]:
        assert (tmp_path / name).stat().st_size > 1000
    z = np.array([-2.5 + 0.5j, -1.0, 0.3j])
    np.testing.assert_allclose(
        _stability_function("rk4")(z), 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24, rtol=1e-12
    )
    np.testing.assert_allclose(_stability_function("backward_euler")(z), 1 / (1 - z), rtol=1e-12)


@pytest.mark.parametrize("fresh", [[], ["--fresh"]])
def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path, capsys, fresh):
    # --fresh moved the user's file aside (to .NAME.deleting-PID) and exited 0
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    assert main(["converge", "--out", str(target), "--quiet", *fresh]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists and is not a folder" in err[0]
    assert target.read_text() == "my notes"


RATES_FILE = """
import torch
from odenet.problems import Problem


class Rates:
    k = {k}.0


def decay():
    return Problem(f=lambda t, y: -Rates.k * y, y0=torch.tensor([1.0], dtype=torch.float64),
                   span=(0.0, 2.0), name="decay_noexact")
"""


def test_an_edited_class_constant_is_a_new_problem_for_results_and_references(tmp_path, capsys):
    """The rate held as a class attribute, edited from 1 to 3 between runs: the same
    --out answered "0 computed, 2 loaded" with the old problem's errors, and a new --out
    (even --fresh) was scored against the cached reference of k = 1 (rk4 error 3.8e-1
    at h = 0.25 for the true 1.75e-3)."""
    import numpy as np

    path = tmp_path / "rates.py"

    def write(k):
        path.write_text(RATES_FILE.format(k=k))
        stat = path.stat()  # the same size and second would hide the edit (bytecode cache)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000 * k))

    def converge(out, *extra):
        return main(["converge", "--problem", f"{path}:decay", "--methods", "rk4",
                     "--steps", "8,16", "--out", out, "--workers", "1", "--no-plot",
                     "--quiet", *extra])  # fmt: skip

    write(1)
    assert converge("a") == 0
    write(3)
    capsys.readouterr()
    assert converge("a") == 2
    err = capsys.readouterr().err
    assert "problem_key" in err and "different study" in err, err
    assert converge("b", "--fresh") == 0
    row = pd.read_csv(tmp_path / "b" / "results.csv").iloc[0]
    # truth: rk4's stability polynomial R(z)^n against e^{zn}, z = -k h
    z = -3.0 * 0.25
    R = 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24
    n = np.arange(9)
    assert row["n_steps"] == 8
    assert row["error"] == pytest.approx(np.abs(R**n - np.exp(z * n)).max(), rel=1e-6)
