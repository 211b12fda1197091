"""Killing a CLI command, then rerunning it, gives the results of an uninterrupted run;
two processes on one folder never leave it unusable.

The kills are deterministic: a forked child runs the command and SIGKILLs itself at
its n-th ``os.replace`` — a cell, checkpoint or output file fully written to its temp
file but not yet renamed, the latest moment a kill can interrupt a write.  The truth
is the same command run once without interruption; "identical" is to the bit except
wall-clock measurements (see ``studies/reliability/kill_random.py``, which holds the
cases and runs many random-time kills of real processes).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, flock")

_SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "reliability" / "kill_random.py"
_spec = importlib.util.spec_from_file_location("kill_random", _SCRIPT)
kr = importlib.util.module_from_spec(_spec)
sys.modules["kill_random"] = kr  # dataclasses look their module up there
_spec.loader.exec_module(kr)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = tmp_path_factory.mktemp("kill")
    kr.prepare(w)
    return w


@pytest.fixture(scope="module")
def refs(work):
    mp = pytest.MonkeyPatch()
    mp.setenv("ODENET_CACHE", str(work / "cache"))
    yield kr.references(
        work, ["converge", "compare", "stability", "fit", "predict"], kr.run_inprocess
    )
    mp.undo()


def _killed_then_rerun(work, refs, name, n, tag):
    case = kr.CASES[name]
    d = work / f"{name}-{tag}"
    d.mkdir()
    assert kr.kill_at_write(case.argv(work, d), n), f"{name} made fewer than {n} writes"
    problems = kr.check_after_kill(case, work, d, refs[name], kr.run_inprocess)
    assert not problems, problems
    return d


@pytest.mark.parametrize(
    ("name", "n", "what"),
    [
        ("converge", 2, "the second cell's write"),
        ("converge", 11, "results.csv's write, config.json already in place"),
        ("compare", 3, "a cell's write"),
        ("fit", 1, "the first checkpoint save: there is no checkpoint yet"),
        ("fit", 3, "the final save: the checkpoint holds the last iterate"),
        ("predict", 1, "the --out file's write"),
        ("stability", 1, "the region plot's write"),
    ],
)
def test_a_command_killed_mid_write_and_rerun_equals_the_uninterrupted_run(
    work, refs, name, n, what
):
    _killed_then_rerun(work, refs, name, n, f"k{n}")


def test_a_fit_resumed_mid_run_reproduces_the_checkpoint_to_the_bit(work, refs):
    """Killed at the save of iteration 30, --resume continues from iteration 25: not
    only the printed scores are the same, but model, Adam moments, schedule, generator,
    early-stopping state and history."""
    d = _killed_then_rerun(work, refs, "fit", 2, "bits")
    want = refs["fit"]["outputs"]["checkpoint"]
    assert kr.checkpoint_content(d / "fit.pt") == want
    assert want["iteration"] == 30 and want["optimizer"]["state"]


def test_a_finished_greybox_fit_resumed_is_the_same_result_not_a_new_solve(work, capsys):
    """A kill after the Levenberg–Marquardt checkpoint is written (while scoring or
    printing) is rerun with --resume: it must report the run's own estimates, iteration
    count and standard errors, not those of a warm restart (which differ in the last
    digits and in the iteration count)."""
    case = kr.CASES["fit_greybox"]
    d = work / "greybox"
    d.mkdir()
    rc, out, err = kr.run_inprocess(case.argv(work, d))
    assert rc == 0, err
    first = case.outputs(d, out)
    rc, out, err = kr.run_inprocess([*case.argv(work, d), "--resume"])
    assert rc == 0, err
    again = case.outputs(d, out)
    assert again == first
    assert first["json"]["iterations"] > 3 and first["json"]["std_errors"]


def test_two_runs_of_one_study_at_once_both_give_the_uninterrupted_results(work, refs):
    d = work / "race-same"
    argv = kr.CASES["converge"].argv(work, d)
    results = kr.race([argv, argv])
    assert [r[1] for r in results] == [0, 0], [r[3] for r in results]
    assert kr.CASES["converge"].outputs(d, "") == refs["converge"]["outputs"]


def test_two_studies_racing_for_one_folder_one_wins_the_other_is_one_line(work, refs):
    d = work / "race-dtype"
    a = kr.CASES["converge"].argv(work, d)
    results = kr.race([a, [*a, "--dtype", "float32"]])
    codes = sorted(r[1] for r in results)
    assert codes == [0, 2], [r[3] for r in results]
    winner, loser = sorted(results, key=lambda r: r[1])
    assert kr.one_line_error(loser[1], loser[3]) and "dtype:" in loser[3]
    rc, _, err = kr.run_inprocess(winner[0])  # the folder is still the winner's, usable
    assert rc == 0, err
    if winner[0] == a:
        assert kr.CASES["converge"].outputs(d, "") == refs["converge"]["outputs"]


def test_two_fits_into_one_checkpoint_at_once_never_mix_their_saves(work, refs):
    """Different --hidden: without a lock both would save into one file in turn and
    leave a checkpoint the winner's --resume refuses.  One fit owns the file; the
    other stops with a one-line error; --resume then gives the owner's result."""
    d = work / "race-fit"
    d.mkdir()
    a = kr.CASES["fit"].argv(work, d)
    b = list(a)
    b[b.index("--hidden") + 1] = "5"
    results = kr.race([a, b])
    ok = [r for r in results if r[1] == 0]
    assert len(ok) == 1, [r[3] for r in results]
    loser = next(r for r in results if r[1] != 0)
    assert kr.one_line_error(loser[1], loser[3]), loser[3]
    assert "another running fit" in loser[3] or "exists" in loser[3]
    rc, out, err = kr.run_inprocess([*ok[0][0], "--resume"])
    assert rc == 0, err
    if ok[0][0] == a:
        assert kr.CASES["fit"].outputs(d, out) == refs["fit"]["outputs"]
    else:
        assert json.loads(out)["iterations"] == 30


def test_a_rerun_with_other_settings_killed_while_writing_outputs_leaves_no_mixed_set(work):
    """The earlier run's tables are removed before the new ones are written: after a kill
    between config.json and results.csv the folder holds the new config and no table,
    never the new config beside the old run's results."""
    import csv

    d = work / "mixed"
    first = kr.CASES["converge"].argv(work, d)
    assert kr.run_inprocess(first)[0] == 0
    second = list(first)
    second[second.index("--methods") + 1] = "euler,heun"  # all cells already computed
    assert kr.kill_at_write(second, 2)  # 1: config.json, 2: results.csv
    assert json.loads((d / "config.json").read_text())["methods"] == ["euler", "heun"]
    assert not (d / "results.csv").exists() and not (d / "orders.csv").exists()
    assert kr.run_inprocess(second)[0] == 0
    with open(d / "results.csv", newline="") as fh:
        assert {r["method"] for r in csv.DictReader(fh)} == {"euler", "heun"}
