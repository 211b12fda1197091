"""Claim 9 (studies/theory/09_memory.py): peak memory of backprop training grows
linearly with the number of steps; inference and adjoint training do not."""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "theory"))
study = importlib.import_module("09_memory")


def test_memory_direct_grows_with_depth_adjoint_and_inference_do_not():
    res = study.compute(quick=True)  # one fresh subprocess per configuration
    per_step = study.B * (study.D + study.HIDDEN) * 4 / 2**20  # ≥ state + hidden, float32
    direct = study.growth_per_step(res, "direct")
    assert direct > per_step  # O(B L d): at least one state and one hidden layer per step
    assert abs(study.growth_per_step(res, "adjoint")) < 0.1 * direct
    assert abs(study.growth_per_step(res, "inference")) < 0.1 * direct


def test_saved_per_step_is_the_steps_input_and_tanh_output():
    # the 0.375 MiB docs/theory/claim-09-memory.md quotes (`09_memory.py --saved`)
    assert study.saved_per_step(4, 8) == study.B * (study.D + study.HIDDEN) * 4 / 2**20
