"""Every ```python block in README.md and docs/**/*.md runs as written.

Blocks of one page run in order in one fresh namespace (a later block may use names
an earlier one defined, as a reader following the page would), inside a temporary
working directory so that files a page writes do not land in the repository.

A block preceded by the line ``<!-- skip-doctest: <reason> -->`` is not run; keep
these rare (a block that needs a file the reader brings, say) and give the reason.
A ```text block preceded by ``<!-- doctest-output -->`` is the exact output of the
python block before it, and is checked.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import inspect
import io
import os
import re
import subprocess
import sys
import textwrap
import time
from html import unescape
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# fences may be indented (inside a list item); the code is dedented before it runs
_FENCE = re.compile(
    r"(?P<skip><!--\s*skip-doctest:(?P<why>[^>]*)-->[ \t]*\n)?[ \t]*```python\n(?P<code>.*?)```",
    re.S,
)

# A page's blocks together should stay small; the whole file must fit the CI's budget.
# CPU seconds of this process (one torch thread), so a loaded machine does not fail it.
PAGE_BUDGET_S = 20.0


_OUTPUT = re.compile(r"<!--\s*doctest-output\s*-->[ \t]*\n[ \t]*```text\n(?P<out>.*?)```", re.S)


def blocks(page: Path) -> list[tuple[str, str | None]]:
    """(code, skip reason or None) for each python block of the page, in order."""
    out = []
    for m in _FENCE.finditer(page.read_text()):
        why = m.group("why")
        out.append((textwrap.dedent(m.group("code")), why.strip() if why is not None else None))
    return out


def expected_outputs(page: Path) -> dict[int, str]:
    """Index of a python block -> the checked output printed under it."""
    text = page.read_text()
    starts = [m.start() for m in _FENCE.finditer(text)]
    found = {}
    for m in _OUTPUT.finditer(text):
        before = [i for i, s in enumerate(starts) if s < m.start()]
        if before:
            found[before[-1]] = textwrap.dedent(m.group("out"))
    return found


PAGES_WITH_CODE = [p for p in PAGES if blocks(p)]


def test_the_extractor_finds_blocks_and_skip_markers(tmp_path):
    text = (
        "a\n```python\nx = 1\n```\n<!-- skip-doctest: needs a file -->\n```python\nopen('f')\n```\n"
    )
    page = tmp_path / "p.md"
    page.write_text(text)
    assert blocks(page) == [("x = 1\n", None), ("open('f')\n", "needs a file")]
    page.write_text("```python\nprint(1)\n```\n<!-- doctest-output -->\n```text\n1\n```\n")
    assert expected_outputs(page) == {0: "1\n"}


def test_skips_are_rare_and_explained():
    skipped = [(p, why) for p in PAGES_WITH_CODE for _, why in blocks(p) if why is not None]
    assert all(why for _, why in skipped), "every skip-doctest marker needs a reason"
    assert len(skipped) <= 3, f"too many skipped doc blocks: {skipped}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_on_the_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__doctest__"}
    expected = expected_outputs(page)
    start = time.process_time()
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, (code, why) in enumerate(blocks(page)):
            if why is not None:
                continue
            name = f"{page.relative_to(ROOT)}[block {i}]"
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(code, name, "exec"), namespace)
            if i in expected:
                assert printed.getvalue().strip() == expected[i].strip(), (
                    f"{name} printed\n{printed.getvalue()}\nbut the page shows\n{expected[i]}"
                )
    finally:
        torch.set_num_threads(n_threads)
        try:
            import matplotlib.pyplot as plt

            plt.close("all")
        except ImportError:
            pass
    elapsed = time.process_time() - start
    assert elapsed < PAGE_BUDGET_S, f"{page.name}: {elapsed:.1f} CPU s; use smaller problems"


# --- the API reference ---------------------------------------------------------------

# Public modules whose names must each have an entry in the built API reference: their
# `__all__`, or (without one) the functions and classes they define.
API_MODULES = [
    "odenet", "odenet.tableaus", "odenet.order_conditions", "odenet.batch", "odenet.models",
    "odenet.sensitivity", "odenet.stability", "odenet.studies", "odenet.problems",
    "odenet.plotting", "odenet.fit", "odenet.fit.datasets",
]  # fmt: skip


def public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return [n for n in module.__all__ if n != "__version__"]
    return [
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and v.__module__ == module.__name__
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
                   cwd=ROOT, env=env, check=True)  # fmt: skip
    return out


def test_every_public_name_has_an_api_entry(site):
    anchors: set[str] = set()
    for html in (site / "api").rglob("*.html"):
        anchors |= set(re.findall(r'id="(odenet[\w.]*)"', html.read_text()))
    # an object may be documented under any public path that exports it, or where defined
    paths: dict[int, set[str]] = {}
    for m in API_MODULES:
        mod = importlib.import_module(m)
        for n in public_names(mod):
            obj = getattr(mod, n)
            paths.setdefault(id(obj), set()).add(f"{m}.{n}")
            if inspect.isfunction(obj) or inspect.isclass(obj):
                paths[id(obj)].add(f"{obj.__module__}.{obj.__qualname__}")
    missing = []
    for m in API_MODULES:
        mod = importlib.import_module(m)
        missing += [
            f"{m}.{n}" for n in public_names(mod) if not paths[id(getattr(mod, n))] & anchors
        ]
    assert not missing, f"public names without an API entry: {missing}"


def test_api_pages_show_no_raw_restructuredtext(site):
    # roles (:func:`x`) and ``literals`` left in a docstring would show verbatim
    raw = {}
    for page in (site / "api").rglob("*.html"):
        text = unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        found = re.findall(r":(?:func|class|mod|meth|attr|data|exc|obj):|``", text)
        if found:
            raw[str(page.relative_to(site))] = len(found)
    assert not raw, f"raw reStructuredText on the API pages: {raw}"


def _parameter_defaults(html: str, anchor: str) -> dict[str, str]:
    """name -> rendered default in the Parameters table of the object at `anchor`."""
    start = html.index(f'id="{anchor}"')
    section = html[start:].split("<h2", 1)[0]  # objects are level-2 headings on the page
    if "<tbody>" not in section:
        return {}
    table = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    out = {}
    for row in re.findall(r"<tr.*?</tr>", table, re.S):
        cells = re.findall(r"<td.*?</td>", row, re.S)
        cells = [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells]
        if cells:
            out[cells[0]] = cells[-1]
    return out


@pytest.mark.parametrize("anchor", ["odenet.solve", "odenet.odeint"])
def test_api_parameter_tables_show_the_signature_defaults(site, anchor):
    # docstrings group parameters ("rtol, atol : float"); the page must still show each
    # parameter's own default, which is the signature's
    html = (site / "api" / "core" / "index.html").read_text()
    shown = _parameter_defaults(html, anchor)
    sig = inspect.signature(getattr(importlib.import_module("odenet"), anchor.split(".")[1]))
    checked = 0
    for name, p in sig.parameters.items():
        if name in shown and p.default is not inspect.Parameter.empty:
            assert shown[name] == repr(p.default), (anchor, name, shown[name], p.default)
            checked += 1
    assert checked >= 2, shown


# --- Examples sections of docstrings ---------------------------------------------------

DOCTEST_MODULES = [
    "odenet.tableaus", "odenet.order_conditions", "odenet.problems", "odenet.batch",
    "odenet.stability.regions", "odenet.stability.linearize", "odenet.stability.propagation",
    "odenet.stability.lyapunov", "odenet.stability.von_neumann", "odenet.stability.fixed_points",
    "odenet.stability.meanfield", "odenet.stability.duality", "odenet.stability.amplification",
]  # fmt: skip


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_print_what_they_show(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False
    )
    assert result.attempted > 0, f"{name} has no Examples"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (see above)"
