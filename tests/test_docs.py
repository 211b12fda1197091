"""Every ```python block in README.md and docs/**/*.md runs as written.

Blocks of one page run in order in one fresh namespace (a later block may use names
an earlier one defined, as a reader following the page would), inside a temporary
working directory so that files a page writes do not land in the repository.

A block preceded by the line ``<!-- skip-doctest: <reason> -->`` is not run; keep
these rare (a block that needs a file the reader brings, say) and give the reason.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_FENCE = re.compile(r"(?P<skip><!--\s*skip-doctest:(?P<why>[^>]*)-->\s*\n)?```python\n(?P<code>.*?)```", re.S)

# A page's blocks together should stay small; the whole file must fit the CI's budget.
PAGE_BUDGET_S = 20.0


def blocks(page: Path) -> list[tuple[str, str | None]]:
    """(code, skip reason or None) for each python block of the page, in order."""
    out = []
    for m in _FENCE.finditer(page.read_text()):
        why = m.group("why")
        out.append((m.group("code"), why.strip() if why is not None else None))
    return out


PAGES_WITH_CODE = [p for p in PAGES if blocks(p)]


def test_the_extractor_finds_blocks_and_skip_markers():
    text = "a\n```python\nx = 1\n```\n<!-- skip-doctest: needs a file -->\n```python\nopen('f')\n```\n"
    page = Path(pytest.importorskip("tempfile").mkdtemp()) / "p.md"
    page.write_text(text)
    assert blocks(page) == [("x = 1\n", None), ("open('f')\n", "needs a file")]


def test_skips_are_rare_and_explained():
    skipped = [(p, why) for p in PAGES_WITH_CODE for _, why in blocks(p) if why is not None]
    assert all(why for _, why in skipped), "every skip-doctest marker needs a reason"
    assert len(skipped) <= 3, f"too many skipped doc blocks: {skipped}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_on_the_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__doctest__"}
    start = time.perf_counter()
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, (code, why) in enumerate(blocks(page)):
            if why is not None:
                continue
            name = f"{page.relative_to(ROOT)}[block {i}]"
            exec(compile(code, name, "exec"), namespace)
    finally:
        torch.set_num_threads(n_threads)
        try:
            import matplotlib.pyplot as plt

            plt.close("all")
        except ImportError:
            pass
    elapsed = time.perf_counter() - start
    assert elapsed < PAGE_BUDGET_S, f"{page.name}: doc blocks took {elapsed:.1f}s; use smaller problems"
