"""Every script in examples/ runs with --quick and reaches its own checks.

Each example validates its result in --quick mode (training lowers the loss, observed
orders match the expected ones, exponents sum to the divergence, stiff solvers hit
the reference) and exits non-zero otherwise, so a pass here means more than "it ran".
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# script -> (extra arguments, a line fragment its output must contain, a file it writes)
RUNS = {
    "ode_demo.py": (["--viz", "spiral.png"], "final test loss", "spiral.png"),
    "latent_ode.py": ([], "held-out reconstruction MSE", None),
    "convergence_study.py": (["--plot", "conv.png"], "observed", "conv.png"),
    "stiff_vs_scipy.py": ([], "scipy Radau", None),
    "lorenz_lyapunov.py": ([], "Kaplan–Yorke dimension", None),
}


def test_every_example_is_run_here():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(RUNS)


@pytest.mark.parametrize("script", sorted(RUNS))
def test_example_uses_only_the_public_api(script):
    tree = ast.parse((EXAMPLES / script).read_text())
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("odenet"):
            names = [node.module, *(a.name for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        else:
            continue
        private += [n for n in names if any(part.startswith("_") for part in n.split("."))
                    and not n.startswith("__")]  # fmt: skip
    assert not private, f"{script} uses private names {private}"


@pytest.mark.parametrize("script", sorted(RUNS))
def test_example_runs_quick(script, tmp_path):
    extra, expected, writes = RUNS[script]
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        # small tensors: one thread per process is fastest (pytest -n 2 fills both cores)
        "OMP_NUM_THREADS": "1",
        "ODENET_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    assert expected in proc.stdout, proc.stdout
    if writes:
        assert (tmp_path / writes).stat().st_size > 0
