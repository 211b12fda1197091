"""Re-check every bad input and fault listed in issue 17, each in a fresh process.

For the command line a case passes when the process exits with status 2, prints exactly
one ``odenet: error:`` line (warnings aside) with the expected words, no traceback, and
ends within the time limit; cases that must succeed are checked for the right result
instead (strict JSON, a failed status, file modes, a resumed greybox fit).  For the
Python API each case must raise a subclass of ``odenet.OdenetError`` whose message has
the expected words, within the time limit (``SIGALRM``: a hang is a failure).

Run ``python studies/reliability/bad_inputs.py`` (``--only WORD`` to filter); it
prints one line per case and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

PY = sys.executable
LIMIT_S = 120


@dataclass
class CliCase:
    """``odenet ARGV`` run in the scratch folder; ``expect`` words in the error line, or
    ``check(rc, out, err, work)`` returning a problem (``None``: fine) for runs that
    must succeed."""

    bullet: str
    argv: list[str]
    expect: list[str] = field(default_factory=list)
    check: object = None
    prelude: str = ""  # Python run before main() (fault injection)


def _prepare(work: Path) -> None:
    import torch

    from odenet.fit import datasets, to_long

    lv = datasets.lotka_volterra(6, observed=0.5, n_times=30, t_end=10.0, noise=0.02, seed=0)
    to_long(lv).to_csv(work / "lv.csv", index=False)
    df = to_long(datasets.lotka_volterra(4, observed=0.8, n_times=10, seed=0))
    df["third"] = df["prey"] * 2
    df.to_csv(work / "three.csv", index=False)
    to_long(datasets.lotka_volterra(1, observed=1.0, n_times=12, seed=0)).to_csv(
        work / "one.csv", index=False
    )
    gb = datasets.lotka_volterra(3, observed=0.8, n_times=12, noise=0.0, seed=1)
    to_long(gb).to_csv(work / "gb.csv", index=False)
    ck = work / "ck"
    ck.mkdir()
    (ck / "empty.pt").write_bytes(b"")
    (ck / "garbage.pt").write_bytes(os.urandom(4096))
    torch.save([1, 2, 3], ck / "list.pt")
    (ck / "cells_file").mkdir()
    (ck / "cells_file" / "cells").write_text("not a folder")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {work / 'PWNED'}",))

    import pickle

    (ck / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}))  # a plain pickle
    torch.save({"model": Evil()}, ck / "evil_zip.pt")  # torch's own format


def _fit_argv(work, *extra, data="lv.csv", ck="fit.pt"):
    return ["fit", str(work / data), "--iters", "2", "--hidden", "4", "--no-progress",
            "--checkpoint", str(work / "ck" / ck), *extra]  # fmt: skip


def _strict_json(rc, out, err, work):
    if rc != 0:
        return f"status {rc}: {err.strip()[-200:]}"
    try:
        json.loads(out, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError as e:
        return f"not strict JSON: {e}"
    return None


def _heat_failed(rc, out, err, work):
    if rc != 0:
        return f"status {rc}"
    import csv

    with open(work / "heat" / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    bad = [r for r in rows if r["status"] == "ok" and float(r["error"]) > 1e3]
    return f"{len(bad)} blown-up cells with status ok" if bad else None


def _euler_stage_order(rc, out, err, work):
    if rc != 0:
        return f"status {rc}"
    import csv

    with open(work / "orders" / "orders.csv", newline="") as fh:
        rows = {r["method"]: r for r in csv.DictReader(fh)}
    got = rows["euler"]["stage_order"]
    return None if got == "1" else f"euler's stage order is {got}, not 1"


def _modes(rc, out, err, work):
    if rc != 0:
        return f"status {rc}"
    files = [p for p in (work / "modes").rglob("*") if p.is_file()]
    bad = [f"{p.name} {oct(p.stat().st_mode & 0o777)}" for p in files
           if p.stat().st_mode & 0o044 != 0o044]  # fmt: skip
    return f"not readable by others: {bad}" if bad else None


def _leftover_tmp(rc, out, err, work):
    if rc != 0:
        return f"status {rc}: {err.strip()[-200:]}"
    left = list((work / "tmpleft" / "cells").glob(".tmp-*"))
    return f"temp files left: {left}" if left else None


def _set_aside(rc, out, err, work):
    if rc != 0:
        return f"status {rc}: {err.strip()[-200:]}"
    bad = list((work / "tampered" / "cells").glob("*.bad"))
    return None if len(bad) == 3 and "could not be used" in err else f"{len(bad)} set aside"


def _greybox_resume(rc, out, err, work):
    if rc != 0:
        return f"status {rc}: {err.strip()[-200:]}"
    first = json.loads((work / "gb-first.json").read_text())
    again = json.loads(out)
    for d in (first, again):
        d.pop("train_seconds", None)
    return None if first == again else "the resumed result differs from the finished run"


FAST = ["--methods", "euler,rk4", "--steps", "8,16", "--no-plot", "--quiet", "--workers", "1"]


def cli_cases(work: Path) -> list[CliCase]:
    w = str(work)
    ck = work / "ck"
    c = [
        # --- results folders
        CliCase("results: a leftover truncated cells/.tmp-*.json is never loaded, cleaned",
                ["converge", *FAST, "--out", f"{w}/tmpleft"], check=_leftover_tmp,
                prelude=f"import os; os.makedirs('{w}/tmpleft', exist_ok=True)"),
        CliCase("results: cells with error='abc', an empty result, a tampered value",
                ["converge", *FAST, "--out", f"{w}/tampered"], check=_set_aside),
        CliCase("results: another dtype in an existing folder names what differs",
                ["converge", *FAST, "--dtype", "float32", "--out", f"{w}/study64"],
                ["dtype: float64 in the folder, float32 here"]),
        CliCase("results: other repeats in an existing folder names what differs",
                ["compare", "--methods", "rk4", "--steps", "8", "--repeats", "2", "--no-plot",
                 "--quiet", "--out", f"{w}/cmp"], ["repeats: 1 in the folder, 2 here"]),
        # --- checkpoints
        CliCase("checkpoint: fit without --resume over an existing checkpoint",
                _fit_argv(work, ck="good.pt"), ["exists", "--resume", "--force"]),
        *[CliCase(f"checkpoint: {name} checkpoint with --resume", _fit_argv(
            work, "--resume", ck=f"{name}.pt"), words) for name, words in (
            ("empty", ["is empty"]), ("garbage", ["corrupt"]), ("list", ["holds a list"]),
            ("truncated", ["truncated"]), ("evil", ["refused"]),
            ("evil_zip", ["refused (never executed)"]))],
        *[CliCase(f"checkpoint: {name} checkpoint given to predict", [
            "predict", str(ck / f"{name}.pt"), "--data", f"{w}/lv.csv", "--times", "1"], words)
          for name, words in (("empty", ["is empty"]), ("garbage", ["corrupt"]),
                              ("truncated", ["truncated"]),
                              ("evil", ["refused"]),
                              ("evil_zip", ["refused (never executed)"]))],
        CliCase("checkpoint: another --model", _fit_argv(work, "--resume", "--model", "gru_d",
                                                          ck="good.pt"), ["kind"]),
        CliCase("checkpoint: another --hidden", _fit_argv(work, "--resume", "--hidden", "5",
                                                           ck="good.pt"), ["hidden"]),
        CliCase("checkpoint: another channel count", _fit_argv(
            work, "--resume", "--channels", "prey", ck="good.pt"), ["n_channels"]),
        CliCase("checkpoint: --resume with another --seed (other training points)",
                _fit_argv(work, "--resume", "--seed", "1", ck="good.pt"),
                ["other training data"]),
        CliCase("checkpoint: greybox_mle --resume is honoured (same result)",
                ["fit", f"{w}/gb.csv", "--model", "greybox_mle", "--mechanism",
                 "lotka_volterra", "--iters", "20", "--json", "--no-progress", "--checkpoint",
                 str(ck / "gb.pt"), "--resume"], check=_greybox_resume),
        # --- CLI and processes
        CliCase("cli: --workers 100000", ["converge", *FAST[:-2], "--workers", "100000",
                                          "--out", f"{w}/x"], ["more than the"]),
        CliCase("cli: --scheduler garbage", ["converge", *FAST[:-2], "--scheduler", "garbage",
                                             "--out", f"{w}/x"], ["dask scheduler address"]),
        CliCase("cli: --scheduler nobody listens", ["converge", *FAST[:-2], "--scheduler",
                                                    "tcp://127.0.0.1:9", "--out", f"{w}/x"],
                ["cannot connect"]),
        CliCase("cli: a read-only output folder", ["converge", *FAST, "--out",
                                                   "/proc/self/odenet"], ["/proc/self"]),
        CliCase("cli: a full disk mid-study", ["converge", *FAST, "--out", f"{w}/full"],
                ["No space left", f"{w}/full"], prelude=textwrap.dedent("""
                    import errno, os
                    _n = [0]
                    _real = os.fsync
                    def _fsync(fd):
                        _n[0] += 1
                        if _n[0] > 2:
                            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                        return _real(fd)
                    os.fsync = _fsync
                    """)),
        CliCase("cli: cells/ is a file", ["converge", *FAST, "--out", str(ck / "cells_file")],
                ["is not a folder"]),
        CliCase("cli: fit --plot into a missing folder", _fit_argv(
            work, "--plot", f"{w}/no/such/p.png", ck="p.pt"), ["does not exist"]),
        CliCase("cli: stability --plot into a missing folder",
                ["stability", "--plot", f"{w}/no/such/r.png"], ["does not exist"]),
        CliCase("cli: stability --grid 0", ["stability", "--grid", "0"], ["--grid"]),
        CliCase("cli: fit --batch-size 0", _fit_argv(work, "--batch-size", "0", ck="b.pt"),
                ["--batch-size"]),
        CliCase("cli: fit --lr nan", _fit_argv(work, "--lr", "nan", ck="b.pt"), ["--lr"]),
        CliCase("cli: fit --hidden 0", _fit_argv(work, "--hidden", "0", ck="b.pt"),
                ["--hidden"]),
        CliCase("cli: fit --iters 0", _fit_argv(work, "--iters", "0", ck="b.pt"), ["--iters"]),
        CliCase("cli: grey-box on 3-channel data",
                ["fit", f"{w}/three.csv", "--model", "greybox_mle", "--mechanism",
                 "lotka_volterra", "--checkpoint", str(ck / "g3.pt")], ["3 channel(s)"]),
        CliCase("cli: a single series gives strict JSON", _fit_argv(
            work, "--json", data="one.csv", ck="one.pt"), check=_strict_json),
        CliCase("cli: heat with euler/rk4 at 8-16 steps: blow-ups are failures",
                ["converge", "--problem", "heat", "--methods", "euler,rk4", "--steps", "8,16",
                 "--no-plot", "--quiet", "--workers", "1", "--out", f"{w}/heat"],
                check=_heat_failed),
        CliCase("cli: orders.csv gives euler's true stage order",
                ["converge", *FAST, "--out", f"{w}/orders"], check=_euler_stage_order),
        CliCase("cli: results files are readable by others (umask 022)",
                ["converge", *FAST, "--out", f"{w}/modes"], check=_modes,
                prelude="import os; os.umask(0o022)"),
    ]  # fmt: skip
    return c


def _setup_folders(work: Path) -> None:
    """Folders and checkpoints the cases above act on (built with the real commands)."""
    w = str(work)
    tmpleft = work / "tmpleft" / "cells"
    _run(["converge", *FAST, "--out", f"{w}/tmpleft"])
    (tmpleft / ".tmp-abc.json").write_text('{"schema": "odenet.cell/2", "key": {"meth')
    _run(["converge", *FAST, "--out", f"{w}/tampered"])
    cells = sorted((work / "tampered" / "cells").glob("*.json"))
    rec = json.loads(cells[0].read_text())
    rec["result"]["error"] = "abc"
    cells[0].write_text(json.dumps(rec))
    rec = json.loads(cells[1].read_text())
    rec["result"] = {}
    cells[1].write_text(json.dumps(rec))
    rec = json.loads(cells[2].read_text())
    rec["result"]["error_max"] *= 0.5  # a plausible value: only the checksum tells
    cells[2].write_text(json.dumps(rec))
    _run(["converge", *FAST, "--out", f"{w}/study64"])
    _run(["compare", "--methods", "rk4", "--steps", "8", "--repeats", "1", "--no-plot",
          "--quiet", "--out", f"{w}/cmp"])  # fmt: skip
    _run(_fit_argv(work, ck="good.pt"))
    good = (work / "ck" / "good.pt").read_bytes()
    (work / "ck" / "truncated.pt").write_bytes(good[: len(good) // 2])
    rc, out, err = _run(["fit", f"{w}/gb.csv", "--model", "greybox_mle", "--mechanism",
                         "lotka_volterra", "--iters", "20", "--json", "--no-progress",
                         "--checkpoint", str(work / "ck" / "gb.pt")])  # fmt: skip
    (work / "gb-first.json").write_text(out)


def _run(argv, prelude="", timeout=LIMIT_S):
    code = f"{prelude}\nimport sys\nfrom odenet.cli import main\nsys.exit(main({argv!r}))"
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    try:
        p = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=timeout,
                           env=env)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, "", f"no answer within {timeout} s"
    return p.returncode, p.stdout, p.stderr


def judge_cli(case: CliCase, work: Path) -> str | None:
    """``None`` if ``case`` behaved, else what went wrong."""
    rc, out, err = _run(case.argv, case.prelude)
    if rc is None:
        return err  # a hang
    if "Traceback" in err:
        return "raw traceback: " + err.strip().splitlines()[-1][:200]
    if case.check is not None:
        return case.check(rc, out, err, work)
    lines = [ln for ln in err.splitlines() if ln.startswith("odenet: error:")]
    if not case.expect and rc == 0:
        return None  # allowed to succeed (e.g. a folder created on the way)
    if rc != 2 or len(lines) != 1:
        return f"status {rc}, {len(lines)} error line(s): {err.strip()[-200:]}"
    missing = [x for x in case.expect if x not in lines[0]]
    return f"message lacks {missing}: {lines[0][:200]}" if missing else None


# --- the Python API ------------------------------------------------------------------------

API = r"""
import math, signal, sys, time, torch, odenet
from odenet import OdenetError
from odenet.batch import IrregularBatch
from odenet.models import MLPField, NeuralODE, ResNet, RNN, ODERNN, LatentODE

def alarm(*_):
    raise TimeoutError("no answer within the limit")
signal.signal(signal.SIGALRM, alarm)
T = torch.linspace(0, 1, 5)
torch.manual_seed(0)
node = NeuralODE(MLPField(3, 8), method="rk4", step_size=0.25)
f = lambda t, y: -y
def boom(t, y):
    raise ZeroDivisionError("user bug")
def batch(channels):
    times = [torch.tensor([0.0, 0.4, 1.0]), torch.tensor([0.0, 0.7])]
    return IrregularBatch.from_lists(times, [torch.randn(len(t), channels) for t in times])
h16 = dict(dtype=torch.float16)
big = torch.ones(2, dtype=torch.float64) * 1e300 * 1e10
CASES = {
  "models: NeuralODE wrong width": (lambda: node(torch.randn(2, 4), T), "y0"),
  "models: NeuralODE float64 input": (
      lambda: node(torch.randn(2, 3, dtype=torch.float64), T), "float64"),
  "models: ResNet wrong width": (lambda: ResNet(MLPField(3, 8), depth=2)(torch.randn(2, 5)), "3"),
  "models: RNN wrong width": (lambda: RNN(2, 5)(torch.randn(4, 3, 3)), "2"),
  "models: RNN zero-length sequence": (lambda: RNN(2, 5)(torch.randn(3, 0, 2)), "xs"),
  "models: ODERNN wrong width": (lambda: ODERNN(2, 4, 1)(batch(3)), "2"),
  "models: LatentODE wrong width": (lambda: LatentODE(2, 3, 4)(batch(3)), "2"),
  "api: f raising at the first call": (
      lambda: odenet.solve(boom, torch.ones(2), T), "ZeroDivisionError"),
  "api: values x1e300 (inf)": (lambda: odenet.solve(f, big, T.double()), "y0"),
  "api: values x1e300 (finite, overflows on scaling)": (
      lambda: odenet.solve(lambda t, y: y * y, torch.ones(2, dtype=torch.float64) * 1e300,
                           T.double()), "overflow"),
  "api: times 1e12 + [0, 1] in float32 (not resolvable)": (
      lambda: odenet.solve(f, torch.ones(2), 1e12 + T), "resolved only to"),
  "api: a 1e12 time span (3e11 stable steps) with max_steps=2000": (
      lambda: odenet.solve(f, torch.ones(2), T * 1e12, max_steps=2000), "max_steps"),
  "api: float16 explicit": (lambda: odenet.solve(f, torch.ones(2, **h16), T.half()), "float16"),
  "api: float16 implicit": (
      lambda: odenet.solve(f, torch.ones(2, **h16), T.half(), method="radau_iia5"), "float16"),
}
only = (sys.argv[1] if len(sys.argv) > 1 else "").split(",")
for name, (call, word) in CASES.items():
    if not any(w in name for w in only):
        continue
    t0 = time.perf_counter()
    signal.alarm(60)
    try:
        call()
        verdict = "no error (silent result?)"
    except OdenetError as e:
        msg = " ".join(str(e).split())
        verdict = None if word.lower() in msg.lower() else f"message lacks {word!r}: {msg[:160]}"
        if name.startswith("api: f raising") and not isinstance(e.__cause__, ZeroDivisionError):
            verdict = "the user's exception is not chained"
    except BaseException as e:
        verdict = f"raw {type(e).__name__}: {str(e)[:160]}"
    finally:
        signal.alarm(0)
    print(f"{name}\t{time.perf_counter() - t0:.2f}\t{verdict or 'ok'}", flush=True)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only",
        default="",
        help="run only cases whose name contains one of these comma-separated words",
    )
    ap.add_argument("--work", default=None)
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="odenet-bad-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["ODENET_CACHE"] = str(work / "cache")
    _prepare(work)
    _setup_folders(work)
    failed = 0
    for case in cli_cases(work):
        if not any(w in case.bullet for w in args.only.split(",")):
            continue
        t0 = time.perf_counter()
        why = judge_cli(case, work)
        failed += why is not None
        print(f"{'FAIL' if why else 'ok  '} {time.perf_counter() - t0:6.1f}s  {case.bullet}"
              + (f"\n      {why}" if why else ""), flush=True)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([PY, "-c", API, args.only], capture_output=True, text=True,
                       timeout=30 * LIMIT_S, env=env)  # fmt: skip
    if p.returncode != 0:
        failed += 1
        print("FAIL the API cases crashed:", p.stderr.strip()[-500:])
    for line in p.stdout.splitlines():
        name, secs, verdict = line.split("\t")
        failed += verdict != "ok"
        print(f"{'ok  ' if verdict == 'ok' else 'FAIL'} {float(secs):6.1f}s  {name}"
              + ("" if verdict == "ok" else f"\n      {verdict}"), flush=True)  # fmt: skip
    print(f"\n{failed} case(s) failed; PWNED file: {(work / 'PWNED').exists()}")
    return 1 if failed or (work / "PWNED").exists() else 0


if __name__ == "__main__":
    sys.exit(main())
