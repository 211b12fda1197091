"""Kill any `odenet` command at a random moment, rerun it, compare with an uninterrupted run.

The must-hold of issue 17: "Killing any CLI command at a random moment, then rerunning
it, yields results identical to an uninterrupted run; two processes on one folder never
leave it unusable."  This script checks it for every command that writes results
(``converge``, ``compare``, ``stability --plot``, ``fit`` — neural and grey-box —
and ``predict --out``) on the tiniest problems:

1. an uninterrupted run gives the reference outputs;
2. a fresh run is started as a separate process and SIGKILLed after a random delay
   (uniform over the reference's wall time, so kills land in imports, in the middle of
   cells, of training, of checkpoint saves and of output writes);
3. right after the kill, every output present on disk must be complete (equal to the
   reference) or absent; a fit checkpoint must load; no worker process may outlive
   its parent;
4. the command is rerun (``fit``: with ``--resume``, the documented way) and its
   outputs must equal the reference.

Races: two processes are started at once on one folder, with the same settings and
with different ones; afterwards every process either succeeded or gave a one-line
error with exit status 2, and the folder gives the reference again when rerun.

"Identical" means bit-identical, except wall-clock measurements (``wall_s``, the
``N / T ms`` entries of a comparison summary, a fit's ``train_seconds`` / ``train_time``),
which are measurements of this run and not results.

Run ``python studies/reliability/kill_random.py --trials 60`` (add ``--races 10``);
``tests/test_reliability_kill.py`` imports the same cases with fixed kill points.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PY = sys.executable
_TIMING = re.compile(r"(\d+ / )[0-9.eE+-]+ ?(?:ns|µs|us|ms|s)\b")


# --- the cases ----------------------------------------------------------------------------


def prepare(work: Path) -> None:
    """Write the data files the ``fit``/``predict`` cases read (physical units, CSV)."""
    from odenet.fit import datasets, to_long

    work.mkdir(parents=True, exist_ok=True)
    lv = datasets.lotka_volterra(6, observed=0.5, n_times=30, t_end=10.0, noise=0.02, seed=0)
    to_long(lv).to_csv(work / "lv.csv", index=False)
    gb = datasets.lotka_volterra(3, observed=0.8, n_times=12, noise=0.0, seed=1)
    to_long(gb).to_csv(work / "gb.csv", index=False)


def _csv_rows(path: Path, drop=("wall_s",)) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh)]


def _untimed(text: str) -> str:
    return _TIMING.sub(r"\1T", text)


def _summary(text: str) -> str:
    """A study's summary.json without ``cells`` (how many cells this run loaded vs
    computed: a record of the run, which a resumed run changes by design)."""
    d = json.loads(text)
    d.pop("cells", None)
    return _untimed(json.dumps(d, indent=1, sort_keys=True))


def _study_outputs(folder: Path, files: tuple[str, ...]) -> dict:
    out = {}
    for name in files:
        p = folder / name
        if not p.exists():
            out[name] = None
        elif name.endswith(".csv") and name != "summary.csv":
            out[name] = _csv_rows(p)
        elif name == "summary.json":
            out[name] = _summary(p.read_text(encoding="utf-8"))
        else:
            out[name] = _untimed(p.read_text(encoding="utf-8"))
    return out


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def checkpoint_content(path: Path):
    """The checkpoint as nested plain data (tensors as dtype, shape and exact bytes),
    without ``train_time`` (a wall-clock measurement)."""
    import torch

    from odenet.fit.train import load_checkpoint

    def plain(x):
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().contiguous()
            return ("tensor", str(x.dtype), tuple(x.shape), x.numpy().tobytes().hex())
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [plain(v) for v in x]
        if isinstance(x, float) and x != x:
            return "nan"
        return x

    ck = load_checkpoint(path)
    return plain({k: v for k, v in ck.items() if k != "train_time"})


def _fit_json(stdout: str) -> dict | None:
    try:
        d = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    d.pop("train_seconds", None)
    d.pop("checkpoint", None)  # the path: each trial has its own folder
    return d


@dataclass
class Case:
    """One command: how to run it in folder ``d`` and what its results are."""

    name: str
    argv: Callable[[Path, Path], list[str]]  # (work, d) -> argv
    outputs: Callable[[Path, str], dict]  # (d, stdout) -> results, wall-clock removed
    resume: tuple[str, ...] = ()  # what the documented rerun adds
    complete: Callable[[Path, dict], list[str]] | None = None  # checks right after a kill
    marker: str | None = None  # a file in d that appears when the real work starts


def _converge(work, d):
    return ["converge", "--problem", "cos", "--methods", "euler,heun,rk4", "--steps",
            "8,16,32", "--workers", "1", "--no-plot", "--quiet", "--out", str(d)]  # fmt: skip


def _converge_pool(work, d):
    """Two worker processes: a kill of the parent must not leave them running."""
    return ["converge", "--problem", "cos", "--methods", "euler,heun,rk4,dopri5", "--steps",
            "8,16,32", "--workers", "2", "--oversubscribe", "--no-plot", "--quiet", "--out",
            str(d)]  # fmt: skip


def _compare(work, d):
    return ["compare", "--problem", "cos", "--methods", "rk4,dopri5,bosh3", "--tols",
            "1e-3,1e-5", "--steps", "8,16", "--repeats", "1", "--no-plot", "--quiet",
            "--out", str(d)]  # fmt: skip


def _stability(work, d):
    return ["stability", "--method", "rk4,dopri5", "--grid", "101", "--plot",
            str(d / "regions.png")]  # fmt: skip


def _fit(work, d):
    # saves at iterations 25 and 30 (the schedule's), then the final one
    return ["fit", str(work / "lv.csv"), "--iters", "30", "--hidden", "4", "--json",
            "--no-progress", "--checkpoint", str(d / "fit.pt")]  # fmt: skip


def _greybox(work, d):
    return ["fit", str(work / "gb.csv"), "--model", "greybox_mle", "--mechanism",
            "lotka_volterra", "--iters", "20", "--json", "--no-progress", "--checkpoint",
            str(d / "fit.pt")]  # fmt: skip


def _predict(work, d):
    return ["predict", str(work / "ref-fit" / "fit.pt"), "--data", str(work / "lv.csv"),
            "--times", "0.5,1,2,4,8", "--out", str(d / "pred.csv")]  # fmt: skip


CONVERGE_FILES = ("config.json", "results.csv", "orders.csv", "summary.json")
COMPARE_FILES = ("config.json", "results.csv", "summary.csv", "summary.json")


def _fit_outputs(d, stdout):
    ck = d / "fit.pt"
    return {"json": _fit_json(stdout), "checkpoint": checkpoint_content(ck) if ck.exists()
            else None}  # fmt: skip


def _fit_complete(d, ref):
    """Right after a kill the checkpoint is absent or loads (never half-written)."""
    ck = d / "fit.pt"
    if not ck.exists():
        return []
    try:
        checkpoint_content(ck)
    except Exception as e:  # any failure to load is the finding
        return [f"checkpoint unreadable after the kill: {type(e).__name__}: {e}"]
    return []


def _files_complete(names):
    def check(d, ref):
        bad = []
        for name in names:
            p = d / name
            if p.exists() and _study_outputs(d, (name,))[name] != ref[name]:
                bad.append(f"{name} exists but differs from the complete file")
        return bad

    return check


def _bytes_complete(key, name):
    def check(d, ref):
        p = d / name
        return [f"{name} is partial"] if p.exists() and _sha(p) != ref[key] else []

    return check


CASES = {
    "converge": Case("converge", _converge, lambda d, out: _study_outputs(d, CONVERGE_FILES),
                     complete=_files_complete(CONVERGE_FILES), marker="study.json"),
    "converge_pool": Case("converge_pool", _converge_pool,
                          lambda d, out: _study_outputs(d, CONVERGE_FILES),
                          complete=_files_complete(CONVERGE_FILES), marker="study.json"),
    "dask": Case("dask", lambda work, d: [*_dask_study(d), "--workers", "1"],
                 lambda d, out: _study_outputs(d, CONVERGE_FILES)),
    "compare": Case("compare", _compare, lambda d, out: _study_outputs(d, COMPARE_FILES),
                    complete=_files_complete(COMPARE_FILES), marker="study.json"),
    "stability": Case("stability", _stability,
                      lambda d, out: {"stdout": out.replace(str(d), "<out>"),
                                      "png": _sha(d / "regions.png")},
                      complete=_bytes_complete("png", "regions.png")),
    "fit": Case("fit", _fit, _fit_outputs, resume=("--resume",), complete=_fit_complete,
                marker=".fit.pt.lock"),
    "fit_greybox": Case("fit_greybox", _greybox, _fit_outputs, resume=("--resume",),
                        complete=_fit_complete, marker=".fit.pt.lock"),
    "predict": Case("predict", _predict, lambda d, out: {"csv": _sha(d / "pred.csv")},
                    complete=_bytes_complete("csv", "pred.csv")),
}  # fmt: skip


# --- running ------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(argv: list[str], cwd: Path | None = None, timeout: float = 300) -> tuple[int, str, str]:
    """``python -m odenet ARGV`` in a fresh process: (exit status, stdout, stderr)."""
    p = subprocess.run([PY, "-m", "odenet", *argv], cwd=cwd, env=_env(), capture_output=True,
                       text=True, timeout=timeout)  # fmt: skip
    return p.returncode, p.stdout, p.stderr


def run_inprocess(argv: list[str]) -> tuple[int, str, str]:
    """``odenet.cli.main(ARGV)`` in this process (no interpreter start-up)."""
    from odenet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_after(argv: list[str], cwd: Path, delay: float, marker: Path | None = None) -> dict:
    """Start ``odenet ARGV``, SIGKILL the process (not its workers) after ``delay`` s —
    counted from the moment ``marker`` appears when given (so that the kills land in the
    work, not in the interpreter's start-up, whatever the machine's load).

    Returns ``finished`` (it ended before the kill), ``work_s`` (when it finished: its
    time from the marker to the end), and ``orphans``: whether any process of its group
    (pool workers) was still alive 5 s after the kill.
    """
    proc = subprocess.Popen([PY, "-m", "odenet", *argv], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    t0 = time.monotonic()
    while marker is not None and not marker.exists() and proc.poll() is None:
        time.sleep(0.02)
    t0 = time.monotonic() if marker is not None else t0
    try:
        proc.wait(delay)
        return {"finished": True, "orphans": False, "work_s": time.monotonic() - t0}
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = _group_alive(proc.pid)
    if orphans:  # do not leave them running whatever the verdict
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return {"finished": False, "orphans": orphans}


def _die_at_nth_replace(argv, n, ready):
    """Child: run ``main(argv)`` and SIGKILL itself at the ``n``-th ``os.replace``, i.e.
    with the ``n``-th file (cell, checkpoint, output) fully written to its temp file but
    not yet renamed into place — the latest moment a kill can interrupt a write."""
    calls = [0]
    real = os.replace

    def replace(src, dst, **kw):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, **kw)

    os.replace = replace
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if ready is not None:
        ready.wait()
    from odenet.cli import main

    os._exit(main(list(argv)))


def kill_at_write(argv: list[str], n: int) -> bool:
    """Run ``odenet ARGV`` in a forked child killed at its ``n``-th file rename.

    Returns whether the kill happened (``False``: the run made fewer renames and ended).
    """
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_die_at_nth_replace, args=(argv, n, None))
    p.start()
    p.join(300)
    return p.exitcode == -signal.SIGKILL


def _race_child(argv, barrier, queue):
    out, err = io.StringIO(), io.StringIO()
    barrier.wait()
    from odenet.cli import main

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    queue.put((tuple(argv), rc, out.getvalue(), err.getvalue()))


def race(argvs: list[list[str]]) -> list[tuple[list[str], int, str, str]]:
    """Start one forked process per ``argv`` at the same instant; (argv, rc, out, err) each."""
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(len(argvs)), ctx.Queue()
    procs = [ctx.Process(target=_race_child, args=(a, barrier, queue)) for a in argvs]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    return [(list(a), rc, out, err) for a, rc, out, err in results]


def one_line_error(rc: int, err: str) -> bool:
    """Exit status 2, exactly one ``odenet: error:`` line and no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("odenet: error:")]
    return rc == 2 and len(lines) == 1 and "Traceback" not in err


# --- trials -------------------------------------------------------------------------------


def references(work: Path, names, runner=run_cli) -> dict:
    """The uninterrupted run of every case (``predict`` needs the neural fit's checkpoint)."""
    refs = {}
    for name in sorted(names, key=lambda n: n == "predict"):
        if name == "predict" and not (work / "ref-fit" / "fit.pt").exists():
            refs.setdefault("fit", references(work, ["fit"], runner)["fit"])
        d = work / f"ref-{name}"
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        rc, out, err = runner(CASES[name].argv(work, d))
        if rc != 0:
            raise RuntimeError(f"reference run of {name} failed ({rc}): {err[-2000:]}")
        refs[name] = {"outputs": CASES[name].outputs(d, out),
                      "seconds": time.perf_counter() - t0}  # fmt: skip
    return refs


def check_after_kill(case: Case, work: Path, d: Path, ref: dict, runner=run_cli) -> list[str]:
    """The checks after an interrupted run in ``d``: partial files, rerun, comparison."""
    problems = case.complete(d, ref["outputs"]) if case.complete else []
    rc, out, err = runner([*case.argv(work, d), *case.resume])
    if rc != 0:
        problems.append(f"rerun failed with status {rc}: {err.strip()[-300:]}")
        return problems
    got = case.outputs(d, out)
    for key, want in ref["outputs"].items():
        if got.get(key) != want:
            problems.append(f"{key} differs from the uninterrupted run")
    return problems


def trial(work: Path, name: str, delay: float, refs: dict, index: int) -> dict:
    case = CASES[name]
    d = work / f"t{index:04d}-{name}"
    d.mkdir(parents=True)
    kill = kill_after(case.argv(work, d), work, delay, case.marker and d / case.marker)
    if kill["finished"] and case.marker:  # the next delays are drawn over the real work
        refs[name]["seconds"] = kill["work_s"]
    problems = ["pool workers outlived the killed parent"] if kill["orphans"] else []
    problems += check_after_kill(case, work, d, refs[name])
    state = sorted(p.name for p in d.rglob("*") if p.is_file())
    return {"case": name, "delay": round(delay, 3), "killed": not kill["finished"],
            "on_disk": len(state), "problems": problems}  # fmt: skip


def race_trial(work: Path, index: int, refs: dict) -> dict:
    """Two processes at once on one folder: same settings, then different ones."""
    problems = []
    d = work / f"r{index:04d}-same"
    for name in ("converge", "fit"):
        sub = d / name
        sub.mkdir(parents=True)
        results = race([CASES[name].argv(work, sub)] * 2)
        for _, rc, _, err in results:
            if rc != 0 and not one_line_error(rc, err):
                problems.append(f"{name} same settings: status {rc} {err.strip()[-200:]}")
        after = check_after_kill(CASES[name], work, sub, refs[name], run_inprocess)
        problems += [f"{name} same settings: {p}" for p in after]
    # different settings on one folder / one checkpoint
    d = work / f"r{index:04d}-different"
    d.mkdir(parents=True)
    a = _converge(work, d / "c")
    b = list(a)
    b[b.index("--steps") + 1] = "8,16"
    b += ["--dtype", "float32"]
    c = [*_fit(work, d / "f")]
    c[c.index("--hidden") + 1] = "5"
    (d / "f").mkdir()
    for argvs, label in (([a, b], "converge float64/float32"), ([_fit(work, d / "f"), c],
                                                                "fit hidden 4/5")):  # fmt: skip
        results = race(argvs)
        ok = [r for r in results if r[1] == 0]
        for _, rc, _, err in results:
            if rc != 0 and not one_line_error(rc, err):
                problems.append(f"{label}: status {rc} {err.strip()[-200:]}")
        if not ok:
            problems.append(f"{label}: neither process succeeded")
            continue
        winner = ok[0][0]
        rerun = [*winner, "--resume"] if winner[0] == "fit" else winner
        rc, _, err = run_inprocess(rerun)
        if rc != 0:
            problems.append(f"{label}: the folder is unusable afterwards: {err.strip()}")
    return {"case": "race", "index": index, "problems": problems}


def _dask_study(d: Path) -> list[str]:
    """36 cells: long enough for the cluster to die in the middle."""
    return ["converge", "--problem", "cos", "--methods", "euler,heun,rk3,rk4,dopri5,midpoint",
            "--steps", "8,16,32,64,128,256", "--no-plot", "--quiet", "--out", str(d)]  # fmt: skip


def dask_trial(work: Path, index: int, refs: dict, cells_before_kill: int) -> dict:
    """Kill a whole local Dask cluster (scheduler and worker) once the study has saved
    ``cells_before_kill`` cells: one line, status 2, no traceback, the cells kept, and a
    serial rerun equal to the reference."""
    port = 8790 + index % 100
    code = ("import time\nfrom distributed import LocalCluster\n"
            f"c = LocalCluster(n_workers=1, threads_per_worker=1, scheduler_port={port}, "
            "dashboard_address=None)\nprint('up', flush=True)\ntime.sleep(1e6)")  # fmt: skip
    cluster = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True, env=_env(),
                               start_new_session=True)  # fmt: skip
    problems = []
    try:
        cluster.stdout.readline()
        d = work / f"d{index:04d}-dask"
        argv = _dask_study(d)
        proc = subprocess.Popen([PY, "-m", "odenet", *argv, "--scheduler",
                                 f"tcp://127.0.0.1:{port}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
        while proc.poll() is None and len(list(d.glob("cells/*.json"))) < cells_before_kill:
            time.sleep(0.05)
        os.killpg(cluster.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
        if proc.returncode != 0 and not one_line_error(proc.returncode, err):
            problems.append(f"status {proc.returncode}: {err.strip()[:300]}")
        kept = len(list(d.glob("cells/*.json")))
        if kept < cells_before_kill:
            problems.append(f"{kept} cells kept of the {cells_before_kill} saved")
        if "dask" not in refs:  # the same study, serial and uninterrupted
            refs["dask"] = references(work, ["dask"])["dask"]
        problems += check_after_kill(CASES["dask"], work, d, refs["dask"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait()
    return {"case": "dask", "index": index, "killed_after_cells": cells_before_kill,
            "status": proc.returncode, "problems": problems}  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=30, help="random kills (cases in turn)")
    ap.add_argument("--races", type=int, default=3, help="race rounds")
    ap.add_argument(
        "--dask", type=int, default=0, help="kills of a whole local Dask cluster under `converge`"
    )
    ap.add_argument(
        "--cases",
        default=",".join(c for c in CASES if c != "dask"),
        help="comma-separated case names",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--report", default=None, help="write the trials as JSON here")
    args = ap.parse_args(argv)
    import tempfile

    names = [n for n in args.cases.split(",") if n and n != "dask"]
    work = Path(args.work or tempfile.mkdtemp(prefix="odenet-kill-")).resolve()
    prepare(work)
    os.environ["ODENET_CACHE"] = str(work / "cache")
    refs = references(work, set(names) | ({"converge", "fit"} if args.races else set()))
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.trials):
        name = names[i % len(names)]
        delay = rng.uniform(0.0, 1.1 * refs[name]["seconds"])
        rows.append(trial(work, name, delay, refs, i))
        r = rows[-1]
        print(f"{i:4d} {name:<12} kill at {delay:6.2f}s killed={r['killed']!s:<5} "
              f"files={r['on_disk']:<3} {'OK' if not r['problems'] else r['problems']}",
              flush=True)  # fmt: skip
    for i in range(args.races):
        rows.append(race_trial(work, i, refs))
        print(f"race {i}: {'OK' if not rows[-1]['problems'] else rows[-1]['problems']}", flush=True)
    for i in range(args.dask):
        rows.append(dask_trial(work, i, refs, cells_before_kill=rng.randint(1, 30)))
        r = rows[-1]
        print(f"dask {i}: killed after {r['killed_after_cells']} cells, status {r['status']}: "
              f"{'OK' if not r['problems'] else r['problems']}", flush=True)  # fmt: skip
    failed = [r for r in rows if r["problems"]]
    killed = sum(1 for r in rows if r.get("killed"))
    print(f"\n{len(rows)} trials ({killed} killed mid-run, {args.races} race rounds): "
          f"{len(failed)} failed")  # fmt: skip
    if args.report:
        Path(args.report).write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
