"""torchdiffeq's own test suite, unchanged, against torchdiffeq and against odenet.

The suite (``torchdiffeq_tests/``: api, event, gradient, norm and odeint tests
of torchdiffeq's repository, MIT licensed, see ``torchdiffeq_tests/LICENSE``) is
run once per backend, one test method per subprocess (so a crash or a hang costs
one row, not the study):

* ``torchdiffeq``: the installed package;
* ``odenet``: a temporary directory first on ``sys.path`` holds a package
  ``torchdiffeq`` whose ``odeint``, ``odeint_adjoint`` and ``odeint_event`` are
  odenet's (``odeint_event`` only when odenet has it), so ``import torchdiffeq``
  in the unchanged tests resolves to odenet.

Prints one row per test method: pass/fail per backend and the subtests passed
out of those run (a test whose loop stops at the first failure without
``subTest`` counts as one), plus the first failure's message for odenet.

Usage (from the repository root)::

    nice .venv/bin/python studies/conformance/run.py            # both backends
    nice .venv/bin/python studies/conformance/run.py --backend odenet -k Norms
    nice .venv/bin/python studies/conformance/run.py --json out.json
    .venv/bin/python studies/conformance/run.py merge tde=a.json:torchdiffeq new=b.json:odenet

The test files are not committed (see ``README.md`` beside this file);
``--tests DIR`` points to them (default ``torchdiffeq_tests/`` here) and their
SHA-256 are checked against ``torchdiffeq_tests.sha256``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = ("api_tests", "event_tests", "gradient_tests", "norm_tests", "odeint_tests")
BACKENDS = ("torchdiffeq", "odenet")

SHIM = '''"""torchdiffeq's names, served by odenet (conformance study shim)."""
import odenet
from odenet import odeint, odeint_adjoint

if hasattr(odenet, "odeint_event"):
    from odenet import odeint_event
__version__ = "odenet-shim"
'''

# the worker: runs one test method, reports JSON on its last stdout line
WORKER = r"""
import json, sys, time, traceback, unittest, warnings
warnings.simplefilter("ignore")
name = sys.argv[1]
record = {"subtests_run": 0, "subtests_failed": 0, "errors": [], "status": "pass"}

class Result(unittest.TestResult):
    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        record["subtests_run"] += 1
        if err is not None:
            record["subtests_failed"] += 1
            record["status"] = "fail"
            if len(record["errors"]) < 3:
                record["errors"].append(subtest._subDescription() + ": " + _short(err))
    def addFailure(self, test, err):
        super().addFailure(test, err)
        record["status"] = "fail"
        record["errors"].append(_short(err))
    def addError(self, test, err):
        super().addError(test, err)
        record["status"] = "fail"
        record["errors"].append(_short(err))

def _short(err):
    lines = traceback.format_exception_only(err[0], err[1])
    text = " ".join(x.strip() for x in lines)
    return text[:300]

t0 = time.perf_counter()
suite = unittest.defaultTestLoader.loadTestsFromName(name)
result = Result()
suite.run(result)
record["seconds"] = round(time.perf_counter() - t0, 1)
import torchdiffeq
record["backend"] = getattr(torchdiffeq, "__version__", "?")
print("\n" + json.dumps(record))
"""


def list_methods(tests: Path, pattern: str | None) -> list[str]:
    """``module.Class.method`` for every test method of the suite, in file order."""
    code = (
        "import unittest, json, sys\n"
        f"mods = {list(MODULES)!r}\n"
        "out = []\n"
        "def walk(s):\n"
        "    for x in s:\n"
        "        if isinstance(x, unittest.TestSuite): walk(x)\n"
        "        else: out.append(x.id())\n"
        "for m in mods: walk(unittest.defaultTestLoader.loadTestsFromName(m))\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tests))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tests, env=env, capture_output=True, text=True, check=True
    )
    names = json.loads(proc.stdout.strip().splitlines()[-1])
    if pattern:
        names = [n for n in names if pattern.lower() in n.lower()]
    return names


def check_files(tests: Path) -> None:
    manifest = HERE / "torchdiffeq_tests.sha256"
    bad = []
    for line in manifest.read_text().splitlines():
        digest, fname = line.split()
        path = tests / fname
        if not path.exists():
            bad.append(f"{fname}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(f"{fname}: changed")
    if bad:
        raise SystemExit(
            f"the torchdiffeq test files in {tests} do not match {manifest.name} "
            f"({'; '.join(bad)}); fetch them as README.md says."
        )


def run_one(name: str, backend: str, tests: Path, shim_dir: str, timeout: float, src: Path) -> dict:
    path = [str(tests)]
    if backend == "odenet":
        path.insert(0, shim_dir)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, str(src)]))
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, name],
            cwd=tests,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {
            "status": "timeout",
            "subtests_run": 0,
            "subtests_failed": 0,
            "errors": [f"over {timeout:.0f} s"],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    lines = proc.stdout.strip().splitlines()
    try:
        rec = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        rec = {"status": "crash", "subtests_run": 0, "subtests_failed": 0, "errors": tail}
        rec["seconds"] = round(time.perf_counter() - t0, 1)
    if backend == "torchdiffeq" and rec.get("backend") == "odenet-shim":
        raise SystemExit("the torchdiffeq run imported the shim; check PYTHONPATH")
    if backend == "odenet" and rec.get("backend") not in (None, "odenet-shim"):
        raise SystemExit("the odenet run imported the real torchdiffeq; check the shim")
    return rec


def odenet_location(src: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(src))
    code = "import odenet, os; print(os.path.dirname(odenet.__file__))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=HERE.anchor, env=env, capture_output=True, text=True
    )
    return out.stdout.strip()


def cell(rec: dict | None) -> str:
    if rec is None:
        return "–"
    mark = "pass" if rec["status"] == "pass" else rec["status"].upper()
    n, bad = rec["subtests_run"], rec["subtests_failed"]
    return f"{mark} ({n - bad}/{n})" if n else mark


def table(names, results, backends) -> str:
    head = "| test method | " + " | ".join(backends) + " | odenet: first failure |"
    rows = [head, "|" + "---|" * (len(backends) + 2)]
    for name in names:
        short = name.split(".", 1)[1]
        cells = [cell(results[b].get(name)) for b in backends]
        od = results.get("odenet", {}).get(name)
        why = ""
        if od is not None and od["status"] != "pass" and od["errors"]:
            why = od["errors"][0].replace("|", "\\|").replace("\n", " ")[:160]
        rows.append(f"| {short} | " + " | ".join(cells) + f" | {why} |")
    totals = []
    for b in backends:
        recs = [results[b][n] for n in names if n in results[b]]
        passed = sum(r["status"] == "pass" for r in recs)
        sub_run = sum(r["subtests_run"] for r in recs)
        sub_ok = sum(r["subtests_run"] - r["subtests_failed"] for r in recs)
        secs = sum(r.get("seconds", 0) for r in recs)
        totals.append(f"{passed}/{len(recs)} methods, {sub_ok}/{sub_run} subtests, {secs:.0f} s")
    rows.append("| **total** | " + " | ".join(totals) + " | |")
    return "\n".join(rows)


def merge(specs: list[str]) -> str:
    """One table from several ``--json`` files: ``label=path[:backend]`` each."""
    columns, names = [], []
    for spec in specs:
        label, _, rest = spec.partition("=")
        path, _, backend = rest.partition(":")
        data = json.loads(Path(path).read_text())
        backend = backend or next(iter(data))
        columns.append((label, data[backend]))
        names += [n for n in data[backend] if n not in names]
    rows = ["| test method | " + " | ".join(c for c, _ in columns) + " |"]
    rows.append("|" + "---|" * (len(columns) + 1))
    for name in names:
        rows.append(
            f"| {name.split('.', 1)[1]} | "
            + " | ".join(cell(col.get(name)) for _, col in columns)
            + " |"
        )
    totals = []
    for _, col in columns:
        recs = [col[n] for n in names if n in col]
        ok = sum(r["status"] == "pass" for r in recs)
        run = sum(r["subtests_run"] for r in recs)
        sub_ok = sum(r["subtests_run"] - r["subtests_failed"] for r in recs)
        totals.append(f"**{ok}/{len(recs)}** ({sub_ok}/{run} subtests)")
    rows.append("| **methods passed** | " + " | ".join(totals) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "merge":
        print(merge(argv[1:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    ap.add_argument("-k", dest="pattern", help="only test ids containing this (case-insensitive)")
    ap.add_argument("--tests", type=Path, default=HERE / "torchdiffeq_tests")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per test method")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument(
        "--odenet-src",
        type=Path,
        default=HERE.parents[1],
        help="directory holding the odenet package to test (default: this checkout), "
        "e.g. an export of an older commit: git archive <rev> odenet | tar -x -C DIR",
    )
    args = ap.parse_args(argv)
    tests = args.tests.resolve()
    check_files(tests)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    names = list_methods(tests, args.pattern)
    if "odenet" in backends:
        print(f"odenet from {odenet_location(args.odenet_src.resolve())}", flush=True)
    results: dict[str, dict] = {b: {} for b in backends}
    with tempfile.TemporaryDirectory(prefix="odenet-shim-") as shim_dir:
        pkg = Path(shim_dir) / "torchdiffeq"
        pkg.mkdir()
        (pkg / "__init__.py").write_text(SHIM)
        for name in names:
            for b in backends:
                rec = run_one(name, b, tests, shim_dir, args.timeout, args.odenet_src.resolve())
                results[b][name] = rec
                print(f"{b:12s} {name:60s} {cell(rec)}  {rec.get('seconds', 0)} s", flush=True)
    print()
    print(table(names, results, backends))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
