"""Every Python example on docs/models.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def test_the_page_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_python_example_in_docs_models_runs(index, capsys):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(BLOCKS[index], f"docs/models.md[{index}]", "exec"), {})
    finally:
        torch.set_num_threads(n)
