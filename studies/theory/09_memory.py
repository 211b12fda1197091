"""Claim 9 — memory of training vs inference vs adjoint.

Peak memory, measured in a fresh subprocess per configuration (``ru_maxrss`` after
the model and data are built, subtracted from the peak after the pass):

- inference (``torch.no_grad``): ``O(P + B d)`` — independent of the depth ``L``;
- backprop training (``sensitivity="direct"``): ``O(P + B L d)`` — every block's
  activations are kept for the backward pass, linear in ``L``;
- adjoint training (``sensitivity="adjoint"``): the backward pass re-solves the ODE
  backward in time, so memory does not grow with the number of steps.

Models: ``odenet.models.NeuralODE`` with an ``MLPField`` on a fixed Euler grid of
``L`` steps (``L`` steps of Euler = a weight-tied ResNet of depth ``L``).

Run: ``python studies/theory/09_memory.py`` (``--quick`` for CI size; ``--saved`` only
prints what autograd saves per step, :func:`saved_per_step`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

NAME = "09_memory"
B, D, HIDDEN = 256, 128, 256
MODES = ("inference", "direct", "adjoint")


@dataclass
class Result:
    table: pd.DataFrame  # per (mode, L): peak memory increase in MB


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: ``5`` to ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child(mode: str, L: int) -> dict:
    """Run one configuration in this process; return the peak-RSS increase in MB.

    On Linux the peak mark is reset just before the pass and the increase is
    ``VmHWM − VmRSS(before)``, so earlier peaks (imports, warm-up) cannot hide it;
    elsewhere it falls back to the difference of ``ru_maxrss``.
    """
    import resource

    import torch

    from odenet.models import MLPField, NeuralODE

    torch.set_num_threads(1)
    torch.manual_seed(0)
    field = MLPField(D, HIDDEN, depth=2, activation="tanh")
    sens = "adjoint" if mode == "adjoint" else "direct"
    node = NeuralODE(field, method="euler", step_size=1.0 / L, sensitivity=sens)
    x = torch.randn(B, D)
    t = torch.tensor([0.0, 1.0])
    # warm-up on a 1-step grid so one-time allocations are not counted
    NeuralODE(field, method="euler", step_size=1.0, sensitivity=sens)(x, t)[-1].sum()
    exact = _reset_peak()
    before = _status_kb("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "inference":
        with torch.no_grad():
            node(x, t)[-1].sum()
    else:
        node(x, t)[-1].pow(2).sum().backward()
    after = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "L": L, "peak_increase_MB": (after - before) / 1024.0}


def measure(mode: str, L: int) -> dict:
    """Run :func:`child` in a fresh interpreter (peak RSS is per process)."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(L)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compute(quick: bool = False) -> Result:
    Ls = [20, 160] if quick else [25, 50, 100, 200, 400]
    rows = [measure(mode, L) for mode in MODES for L in Ls]
    t = pd.DataFrame(rows)
    # what autograd saves per Euler step (float32): the step's input, kept by the first
    # linear layer, and the tanh output (counted with torch.autograd.graph.saved_tensors_hooks)
    t["activation_MB_per_step"] = B * (D + HIDDEN) * 4 / 2**20
    return Result(t)


def saved_per_step(L1: int = 25, L2: int = 50) -> float:
    """MiB that autograd saves per Euler step of the study's field (float32): the bytes of
    the distinct tensors passed to ``torch.autograd.graph.saved_tensors_hooks`` in a
    ``sensitivity="direct"`` forward pass over ``L2`` steps, less over ``L1``, per step.
    ``python studies/theory/09_memory.py --saved`` prints it (nothing written)."""
    import torch

    from odenet.models import MLPField, NeuralODE

    def saved_mib(L: int) -> float:
        torch.manual_seed(0)
        field = MLPField(D, HIDDEN, depth=2, activation="tanh")
        node = NeuralODE(field, method="euler", step_size=1.0 / L)
        x = torch.randn(B, D)
        seen, alive = {}, []

        def pack(t):
            alive.append(t)  # a freed tensor's address could be reused and counted once
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            seen[key] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            node(x, torch.tensor([0.0, 1.0]))
        return sum(seen.values()) / 2**20

    return (saved_mib(L2) - saved_mib(L1)) / (L2 - L1)


def growth_per_step(res: Result, mode: str) -> float:
    """Least-squares slope of peak memory (MB) against the number of steps L."""
    import numpy as np

    g = res.table[res.table["mode"] == mode]
    return float(np.polyfit(g.L, g.peak_increase_MB, 1)[0])


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    for mode, g in res.table.groupby("mode", sort=False):
        ax.plot(
            g.L, g.peak_increase_MB, "o-", label=f"{mode}: {growth_per_step(res, mode):.3f} MB/step"
        )
    ax.set(
        xlabel="Euler steps L (= ResNet depth)",
        ylabel="peak memory increase (MB)",
        title=f"NeuralODE, B={B}, d={D}, hidden={HIDDEN}",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_lines(res: Result):
    yield res.table.to_string(index=False, float_format=lambda x: f"{x:.2f}")
    for mode in MODES:
        yield f"{mode}: {growth_per_step(res, mode):.3f} MB per step"


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
    elif sys.argv[1:] == ["--saved"]:
        print(f"autograd saves {saved_per_step():.4g} MiB per Euler step "
              f"(B(d + hidden)·4 bytes = {B * (D + HIDDEN) * 4 / 2**20:.4g} MiB)")  # fmt: skip
    else:
        from _common import run_cli

        run_cli(NAME, compute, plot, _summary_lines)
