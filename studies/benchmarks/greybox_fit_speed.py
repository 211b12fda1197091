"""Grey-box maximum-likelihood fits on the CPU: what the sensitivity system costs, in one run.

A `greybox_mle` fit spends its time in the forward sensitivity system (state plus
``D + P`` tangent columns, see ``odenet.fit.greybox._Sensitivities``).  Three parts:

* ``overheads`` (fixed 2026-12-05): shared parameters handed to the stacked call as
  ``[C, 1]`` made every column take a call of its own (reproduced by forcing the
  ``loop`` mode), and ``on_cpu`` ran the fit inside ``with torch.device("cpu")``, a
  torch-function mode every torch call goes through (reproduced by wrapping the fit).
* ``modes`` (2026-12-08): forward mode (one dual call) against reverse mode (one taped
  call on ``D`` copies, one backward) on three mechanisms: the built-in Lotka–Volterra
  (every operand dual), the same written with numeric constants, and the built-in
  damped oscillator (``2 * zeta * omega``).  torch runs an op between a dual and an
  operand without a tangent through a slow path; ``auto`` is the fit's own choice
  (the faster of the two on its first call).
* ``stiff`` (2026-12-08): a stiff mechanism (fast exchange ``a ⇌ b``, rates ~1e2,
  slow elimination) fitted with implicit methods, with the sensitivity system's
  Newton Jacobian and without it (what autograd saw before: zero, so Newton was a
  fixed-point iteration; reproduced by hiding that the method is implicit), and with
  dopri5.

Each configuration fits the same panel from the same guess, repetitions interleaved,
one thread; printed: median seconds, the ratio to the reference row, and the fitted
parameters (the same in every row of a part: the configurations change the cost, not
the arithmetic, beyond round-off).

    python studies/benchmarks/greybox_fit_speed.py [--reps 3] [--parts overheads,modes,stiff]

(the stiff part without the Jacobian takes about two minutes a fit).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from types import SimpleNamespace
from unittest import mock

import torch

import odenet
from odenet.batch import IrregularBatch
from odenet.fit import datasets, greybox
from odenet.fit.greybox import MECHANISMS, GreyBoxField, GreyBoxMLE


def lv_with_constants(t, y, p):
    """The built-in Lotka–Volterra with numeric constants: the same field."""
    x, z = y[..., 0:1], y[..., 1:2]
    dx = 2.0 * (0.5 * p["alpha"]) * x - p["beta"] * x * z * 1.0
    dz = p["delta"] * x * z - p["gamma"] * z + 0.0
    return torch.cat([dx, dz], -1)


def stiff_exchange(t, x, p):
    """``a' = −kf a + kb b``, ``b' = kf a − (kb + kel) b``."""
    a, b = x[..., 0:1], x[..., 1:2]
    return torch.cat([-p["kf"] * a + p["kb"] * b, p["kf"] * a - (p["kb"] + p["kel"]) * b], -1)


def stiff_panel() -> IrregularBatch:
    """Three series of 12 noisy (1 %) times on [0, 10], kf = 400, kb = 200, kel = 0.3."""
    truth = {k: torch.tensor(v, dtype=torch.float64) for k, v in
             {"kf": 400.0, "kb": 200.0, "kel": 0.3}.items()}  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    times, values = [], []
    for s in range(3):
        t = torch.sort(torch.rand(12, generator=gen, dtype=torch.float64) * 10).values
        t[0] = 0.0
        x0 = torch.tensor([1.0 + s, 0.2], dtype=torch.float64)
        y = odenet.solve(lambda tt, x: stiff_exchange(tt, x, truth), x0, t,
                         method="radau_iia5", rtol=1e-10, atol=1e-12).ys  # fmt: skip
        values.append(y * (1 + 0.01 * torch.randn(y.shape, generator=gen, dtype=torch.float64)))
        times.append(t)
    return IrregularBatch.from_lists(times, values)


def lv_panel(mechanism: str):
    oscillator = mechanism == "damped_oscillator"
    make = datasets.damped_oscillator if oscillator else datasets.lotka_volterra
    return make(4, observed=0.8, n_times=15, noise=0.01, seed=1).batch


def fit_once(mechanism, batch, *, mode=None, device_mode=False, method="dopri5",
             hide_implicit=False, max_iter=20):  # fmt: skip
    """Seconds and fitted parameters of one Gauss–Newton fit."""
    if mechanism == "stiff_exchange":
        mech, guess = stiff_exchange, {"kf": 300.0, "kb": 150.0, "kel": 0.5}
    elif mechanism == "lv_with_constants":
        mech, guess = lv_with_constants, MECHANISMS["lotka_volterra"][1]
    else:
        mech, guess = MECHANISMS[mechanism]
    model = GreyBoxMLE(GreyBoxField(mech, guess), method=method, max_steps=20000)
    model._sens_mode = mode  # None: the model decides on its first call
    explicit = SimpleNamespace(is_implicit=False)
    hide = (mock.patch.object(greybox, "resolve_method", lambda *a: explicit)
            if hide_implicit else contextlib.nullcontext())  # fmt: skip
    device = torch.device("cpu") if device_mode else contextlib.nullcontext()
    start = time.perf_counter()
    with hide, device:
        model.gauss_newton(batch, max_iter=max_iter)
    return time.perf_counter() - start, model.values()


def parts(stiff_iters: int) -> dict:
    """part -> (reference row, {row: (mechanism, fit_once keywords)})."""
    lv = "lotka_volterra"
    overheads = {
        "current": (lv, {}),
        "per-column (loop)": (lv, {"mode": "loop"}),
        "device mode": (lv, {"device_mode": True}),
        "both (before 12-05)": (lv, {"mode": "loop", "device_mode": True}),
    }
    modes = {
        f"{m} {mode}": (m, {"mode": None if mode == "auto" else mode})
        for m in (lv, "lv_with_constants", "damped_oscillator")
        for mode in ("auto", "forward", "reverse")
    }
    stiff = {}
    for method in ("radau_iia5", "bdf", "dopri5"):
        kw = {"method": method, "max_iter": stiff_iters}
        stiff[method] = ("stiff_exchange", kw)
        if method != "dopri5":
            stiff[f"{method} no jac"] = ("stiff_exchange", {**kw, "hide_implicit": True})
    # the modes part has no one reference: each mechanism's auto row is its own
    return {"overheads": ("current", overheads), "modes": (None, modes),
            "stiff": ("radau_iia5", stiff)}  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--parts", default="overheads,modes,stiff")
    p.add_argument("--stiff-iters", type=int, default=3,
                   help="Gauss–Newton iterations of the stiff fits (without the Jacobian "
                        "each takes tens of seconds)")  # fmt: skip
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    panels = {}
    for part in args.parts.split(","):
        reference, rows = parts(args.stiff_iters)[part]
        times = {name: [] for name in rows}
        values = {}
        for _ in range(args.reps):
            for name, (mech, kw) in rows.items():
                if mech not in panels:
                    panels[mech] = stiff_panel() if mech == "stiff_exchange" else lv_panel(mech)
                seconds, values[name] = fit_once(mech, panels[mech], **kw)
                times[name].append(seconds)
        print(f"\n## {part}\n")
        print(f"{'configuration':<28} {'median s':>9} {'× reference':>12}  parameters")
        for name in rows:
            med = statistics.median(times[name])
            ref = reference or name.rsplit(" ", 1)[0] + " auto"
            params = ", ".join(f"{k}={v:.6f}" for k, v in values[name].items())
            print(f"{name:<28} {med:9.2f} {med / statistics.median(times[ref]):12.2f}  {params}")


if __name__ == "__main__":
    main()
