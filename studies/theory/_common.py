"""Shared plumbing for the theory studies: where results go, how they are written.

Every study is ``NN_name.py`` with ``compute(quick) -> Result`` (numerics, returns a
dataclass holding a ``table`` DataFrame), ``plot(result, path)`` (matplotlib, never
called by the numerics) and ``main(quick)`` that runs both and writes
``results/<name>.png`` and ``results/<name>.csv``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "theory"
# each study's docs page; a full run into RESULTS refreshes the page's copy of the figure
DOC_PAGES = {
    "01_depth_jacobians": "claim-01-depth-jacobians",
    "02_initialization": "claim-02-initialization",
    "03_spectral_norm": "claim-03-spectral-norm",
    "04_edge_of_chaos": "claim-04-edge-of-chaos",
    "05_error_is_gradient": "claim-05-error-is-gradient",
    "06_scheme_stability": "claim-06-scheme-stability",
    "07_clipping": "claim-07-clipping",
    "08_adam_vs_sgd": "claim-08-adam-vs-sgd",
    "09_memory": "claim-09-memory",
    "10_gershgorin": "claim-10-gershgorin",
    "11_multistep_networks": "claim-11-multistep-networks",
}
# where the current run writes; ``--quick`` runs go to ``results/quick`` so they never
# overwrite the published full-size figures and tables
_current_out: Path | None = None


def write_table(table: pd.DataFrame, name: str, out_dir: Path | None = None) -> Path:
    """Write ``table`` as ``<out_dir>/<name>.csv`` and return the path."""
    out = Path(out_dir or _current_out or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    table.to_csv(path, index=False, float_format="%.6g")
    return path


def figure_path(name: str, out_dir: Path | None = None) -> Path:
    out = Path(out_dir or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{name}.png"


def run_cli(name: str, compute: Callable, plot: Callable, summary: Callable | None = None):
    """Parse ``--quick`` / ``--out``, run ``compute``, write table + figure, print a summary."""
    parser = argparse.ArgumentParser(description=f"theory study {name}")
    parser.add_argument("--quick", action="store_true", help="CI size (writes to results/quick)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    args = parser.parse_args()
    return main_impl(name, compute, plot, summary, quick=args.quick, out_dir=args.out)


def main_impl(name, compute, plot, summary=None, *, quick=False, out_dir=None):
    global _current_out
    if out_dir is None:
        out_dir = RESULTS / "quick" if quick else RESULTS
    _current_out = Path(out_dir)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = compute(quick=quick)
    elapsed = time.perf_counter() - t0
    csv = write_table(result.table, name, out_dir)
    png = figure_path(name, out_dir)
    plot(result, png)
    if Path(out_dir).resolve() == RESULTS and name in DOC_PAGES and DOCS.is_dir():
        shutil.copyfile(png, DOCS / f"{DOC_PAGES[name]}.png")
    print(f"[{name}] compute {elapsed:.1f} s -> {csv.name}, {png.name}")
    if summary is not None:
        for line in summary(result):
            print("  " + line)
    return result
