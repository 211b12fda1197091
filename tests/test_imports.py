"""The package's import graph has no cycles, every module imports first in a fresh
interpreter, models use the public core API, and the ResNet ↔ Neural ODE conversion
(the methods the cycle used to hide) keeps the interval."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest
import torch

import odenet
from odenet.models import MLPField, NeuralODE, ResNet

ROOT = pathlib.Path(odenet.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _imports(path: pathlib.Path) -> set[str]:
    """Every odenet module ``path`` imports, at the top or inside functions alike."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "odenet")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "odenet":
                continue
            subs = [f"{node.module}.{a.name}" for a in node.names]
            subs = [s for s in subs if s in MODULES]  # `from odenet import sensitivity`
            out.update(subs or [node.module])
    return {m for m in out if m in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycles_even_through_function_level_imports():
    # a function-level import hides a cycle from the interpreter, not from the reader:
    # both kinds of import are edges here (these found _loop<->_loop_one,
    # _solve<->sensitivity and models.convert<->neural_ode/resnet before they were cut)
    edges = {m: _imports(p) - {m} for m, p in MODULES.items()}
    assert _cycles(edges) == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_every_module_imports_first_in_a_fresh_interpreter():
    # one interpreter (torch loads once), odenet's modules dropped before each import:
    # each module is then the first odenet module imported, as in a fresh process.
    # The core (where cycles were): the private modules, sensitivity, models and the
    # stability analyzer's linearization (≈ 0.5 s each: the package loads every time)
    core = ("odenet._", "odenet.sensitivity", "odenet.models", "odenet.stability.linearize")
    names = [m for m in MODULES if m.startswith(core)]
    code = f"""
import sys, importlib, traceback
import torch
failed = []
for name in {names!r}:
    for m in [m for m in sys.modules if m == "odenet" or m.startswith("odenet.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=3))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    env_ok = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert env_ok.returncode == 0, env_ok.stdout + env_ok.stderr


def test_models_use_the_public_core_api():
    private_core = {"odenet._solve", "odenet._loop", "odenet._stepper", "odenet._compat"}
    for name, path in MODULES.items():
        if name.startswith("odenet.models."):
            assert not (_imports(path) & private_core), name


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_resnet_to_neural_ode_and_back_keeps_horizon_and_t0(method):
    torch.manual_seed(0)
    field = MLPField(3, 8).double()
    net = ResNet(field, depth=6, method=method, horizon=2.5, t0=0.3)
    h = torch.randn(4, 3, dtype=torch.float64)
    node = net.to_neural_ode(rtol=1e-9, atol=1e-11)
    assert isinstance(node, NeuralODE) and node.field is field
    back = node.to_resnet(6, method)  # horizon and t0 default to the remembered ones
    assert (back.horizon, back.t0) == (2.5, 0.3)
    assert torch.equal(back(h), net(h))
    # explicit arguments still win
    other = node.to_resnet(3, "euler", 1.0, t0=0.0)
    assert (other.horizon, other.t0, other.depth) == (1.0, 0.0, 3)


def test_no_study_cell_reaches_the_subpackages_left_out_of_the_build_digest():
    # odenet._build.source_digest leaves out subpackages no study cell runs: a change
    # there must not be able to change a cell's numbers.  Every module the studies
    # import, transitively, at the top or in functions, and through the package's lazy
    # names (`from odenet import solve`), must be outside them
    from odenet._build import EXCLUDED_SUBPACKAGES

    def imports(path):
        out = _imports(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "odenet" and not node.level:
                out |= {odenet._LAZY[a.name] for a in node.names if a.name in odenet._LAZY}
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "odenet" and node.attr in odenet._LAZY:
                    out.add(odenet._LAZY[node.attr])
        return out

    seen, todo = set(), ["odenet.studies.convergence", "odenet.studies.work_precision"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # its packages
        todo += sorted(imports(MODULES[name])) if name in MODULES else []
    assert {"odenet._solve", "odenet._newton", "odenet.problems"} <= seen  # (lazy names seen)
    left_out = [f"odenet.{p}" for p in EXCLUDED_SUBPACKAGES]
    assert sorted(m for m in seen for p in left_out if m == p or m.startswith(p + ".")) == []
