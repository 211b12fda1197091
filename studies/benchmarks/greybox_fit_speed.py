"""Grey-box maximum-likelihood fits on the CPU: the cost of two overheads, in one run.

A `greybox_mle` fit spends its time in the forward sensitivity system (state plus
``D + P`` tangent columns, one forward-mode call of the mechanism).  Two overheads
made it 3–4× slower than it needs to be (fixed 2026-12-05):

* ``per-column``: shared parameters were handed to the stacked call as ``[C, 1]``
  against states ``[C, K, D]``; the one-call path failed its check and every column
  took a call of its own.  Reproduced by forcing ``_stacked = False`` on the model.
* ``device mode``: ``on_cpu`` ran the fit inside ``with torch.device("cpu")``, a
  torch-function mode that every torch call then goes through, also where the
  default device is the CPU already.  Reproduced by wrapping the fit in that mode.

Each configuration fits the same Lotka–Volterra panel (4 series, 15 times, noise
0.01, the built-in mechanism, 20 iterations), repetitions interleaved, one thread;
printed: median seconds and the ratio to the current code, and the fitted parameters
(equal in all four: the overheads change the cost, not the arithmetic).

    python studies/benchmarks/greybox_fit_speed.py [--reps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from odenet.fit import datasets
from odenet.fit.greybox import MECHANISMS, GreyBoxField, GreyBoxMLE

CONFIGS = {
    "current": (False, False),
    "per-column": (True, False),
    "device mode": (False, True),
    "both (before)": (True, True),
}


def fit_once(per_column: bool, device_mode: bool) -> tuple[float, dict]:
    data = datasets.lotka_volterra(4, observed=0.8, n_times=15, noise=0.01, seed=1)
    mech, guess = MECHANISMS["lotka_volterra"]
    model = GreyBoxMLE(GreyBoxField(mech, guess))
    if per_column:
        model._stacked = False  # the sensitivity system's decision, taken before its check
    mode = torch.device("cpu") if device_mode else contextlib.nullcontext()
    start = time.perf_counter()
    with mode:
        model.gauss_newton(data.batch, max_iter=20)
    return time.perf_counter() - start, model.values()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    times = {name: [] for name in CONFIGS}
    values = {}
    for _ in range(args.reps):
        for name, (per_column, device_mode) in CONFIGS.items():
            seconds, values[name] = fit_once(per_column, device_mode)
            times[name].append(seconds)
    base = statistics.median(times["current"])
    print(f"{'configuration':<16} {'median s':>9} {'× current':>10}  parameters")
    for name in CONFIGS:
        med = statistics.median(times[name])
        params = ", ".join(f"{k}={v:.6f}" for k, v in values[name].items())
        print(f"{name:<16} {med:9.2f} {med / base:10.2f}  {params}")


if __name__ == "__main__":
    main()
