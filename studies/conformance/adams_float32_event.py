"""Why one row of torchdiffeq's event test differs between torchdiffeq and odenet.

The row: ``TestEventHandling.test_odeint``, ``explicit_adams`` (``max_order=12``: an
11-step Adams–Bashforth formula) with ``step_size=0.01`` on the ``sine`` problem in
float32, event time to 7 % (torchdiffeq 6.2 %; odenet 8.9 % while its search stepped on
float64 nodes ``t0 + k·h``, 0.04 % since it steps on torchdiffeq's nodes, ``t <- t + h``
in ``y``'s dtype).  This script measures, on the test's own problem:

1. torchdiffeq as it is, and torchdiffeq with one change at a time: its fixed-step
   event search in float64 time (it steps ``t <- t + step_size`` in ``y``'s dtype), and
   odenet's exact Adams–Bashforth coefficients instead of its own; odenet as it is, and
   odenet on float64 nodes ``t0 + k·h`` (its search before it took torchdiffeq's nodes);
2. how much the miss moves when ``y0`` moves by 0..7 ulps, for both libraries;
3. ``max_order=11`` and float64, for both.

The row measures round-off amplified by an unstable formula: on the same nodes, 1 ulp in
``y0`` moves either library's miss across the 7 % line.

Usage (from the repository root)::

    nice .venv/bin/python studies/conformance/adams_float32_event.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "torchdiffeq_tests"))

import torchdiffeq
from problems import construct_problem
from torchdiffeq._impl import fixed_adams, solvers

import odenet
from odenet import _compat
from odenet._adams import _tables

OPTIONS = {"step_size": 0.01, "interp": "cubic"}


def problem(dtype):
    f, y0, t_points, sol = construct_problem(dtype=dtype, device="cpu", ode="sine")
    target = sol[2].detach()
    return f, y0.detach(), t_points.detach(), (lambda t, y: torch.sum(y - target))


def miss(odeint, dtype=torch.float32, y0=None, **extra):
    """Relative error of the event time, as the test computes it."""
    f, y0_, tp, event_fn = problem(dtype)
    y0 = y0_ if y0 is None else y0
    t, _ = odeint(
        f, y0, tp[0:2], event_fn=event_fn, method="explicit_adams", options={**OPTIONS, **extra}
    )
    return float(((tp[2] - t) / tp[2]).abs()), float(t)


def _search_in_float64_time(self, t0, event_fn):
    """torchdiffeq's ``FixedGridODESolver.integrate_until_event`` with ``t`` kept in
    float64 (``func`` still sees it in ``y``'s dtype): its one change."""
    func = self.func

    class Cast:
        def __call__(self, t, y, **kw):
            return func(t.to(y.dtype), y, **kw)

        def __getattr__(self, name):
            return getattr(func, name)

    self.func = Cast()
    t0, y0, dt = t0.double(), self.y0, self.step_size
    sign0 = torch.sign(event_fn(t0, y0))
    while True:
        t1 = t0 + dt
        dy, f0 = self._step_func(self.func, t0, dt, t1, y0)
        y1 = y0 + dy
        if torch.sign(event_fn(t1, y1)) != sign0:
            f1 = self.func(t1, y1)

            def interp(t, t0=t0, t1=t1, y0=y0, y1=y1, f0=f0, f1=f1):
                return self._cubic_hermite_interp(t0, y0, f0, t1, y1, f1, t)

            t_event, y_event = solvers.find_event(interp, sign0, t0, t1, event_fn, float(self.atol))
            return t_event, torch.stack([self.y0, y_event])
        t0, y0 = t1, y1


def torchdiffeq_variant(time64=False, odenet_coefficients=False):
    original = solvers.FixedGridODESolver.integrate_until_event
    table = list(fixed_adams._BASHFORTH_DIVISOR)
    if time64:
        solvers.FixedGridODESolver.integrate_until_event = _search_in_float64_time
    if odenet_coefficients:
        ab = _tables(11)[0]
        for k in range(1, 12):
            fixed_adams._BASHFORTH_DIVISOR[k] = torch.tensor(ab[k, :k], dtype=torch.float64)
    try:
        return miss(torchdiffeq.odeint)
    finally:
        solvers.FixedGridODESolver.integrate_until_event = original
        fixed_adams._BASHFORTH_DIVISOR[:] = table


def odenet_on_float64_nodes():
    """odenet with its event search on ``t0 + k·h`` in float64 (its nodes before it
    took torchdiffeq's): the one change."""
    original = _compat._event_search_grid

    def float64_nodes(t0, step_size, y0, reverse):
        k = torch.arange(_compat.EVENT_SEARCH_STEPS + 1, dtype=t0.dtype)
        return t0.detach() + (-k if reverse else k) * step_size, ""

    _compat._event_search_grid = float64_nodes
    try:
        return miss(odenet.odeint)
    finally:
        _compat._event_search_grid = original


def main():
    print("1. event-time miss, float32, max_order=12 (the test allows 0.07)")
    rows = [
        ("torchdiffeq", torchdiffeq_variant()),
        ("torchdiffeq, event search in float64 time", torchdiffeq_variant(time64=True)),
        ("torchdiffeq, odenet's AB coefficients", torchdiffeq_variant(odenet_coefficients=True)),
        ("odenet", miss(odenet.odeint)),
        ("odenet, event search on float64 nodes t0 + k*h", odenet_on_float64_nodes()),
    ]
    for label, (err, t) in rows:
        print(f"   {label:48s} {err:.4f}  (t = {t:.8f})")
    print("2. the same with y0 moved by k ulps, k = 0..7")
    y0 = problem(torch.float32)[1]
    for name, odeint in (("torchdiffeq", torchdiffeq.odeint), ("odenet", odenet.odeint)):
        errs, y = [], y0.clone()
        for _ in range(8):
            errs.append(miss(odeint, y0=y)[0])
            y = torch.nextafter(y, torch.tensor(torch.inf))
        over = sum(e >= 0.07 for e in errs)
        print(f"   {name:12s} " + " ".join(f"{e:.3f}" for e in errs) + f"   ({over}/8 >= 0.07)")
    print("3. max_order 11 and float64")
    for dtype in (torch.float32, torch.float64):
        for mo in (11, 12):
            a = miss(torchdiffeq.odeint, dtype, max_order=mo)[0]
            b = miss(odenet.odeint, dtype, max_order=mo)[0]
            print(f"   {dtype!s:14s} max_order {mo}: torchdiffeq {a:.3g}, odenet {b:.3g}")


if __name__ == "__main__":
    main()
