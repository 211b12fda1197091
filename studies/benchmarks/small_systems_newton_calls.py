"""What one fused Newton iteration costs against the eager computation it replaces.

``solve(..., compile=True)`` on an implicit method makes one compiled call per Newton
iteration (:class:`odenet._compiled.FusedNewton`: the field at the stage times, the LU
solve(s), the increment and its norm).  This script times, inside one solve of Van der
Pol μ = 1000 on t ∈ [0, 300] (rtol = atol = 1e-6), every compiled call and, right
after it on the same arguments, the eager function that was compiled (the same
operations as the eager iteration); process CPU time, one thread.  Usage::

    python studies/benchmarks/small_systems_newton_calls.py [--python-wrapper]

``--python-wrapper``: inductor's generated Python wrapper instead of its C++ one.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import time
import warnings

import torch

import odenet
from odenet import _compiled

D = torch.float64


def vdp(t, y):
    return torch.stack([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python-wrapper", action="store_true")
    ap.add_argument("--methods", nargs="+", default=["radau_iia5", "kvaerno5"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # inductor's note on complex operators
    if a.python_wrapper:
        compile_ = _compiled._compile
        _compiled._compile = lambda fn, options=None: compile_(fn, None)
    acc: dict = {}
    call = _compiled.FusedNewton._call

    def timed(self, *args):
        t0 = time.process_time()
        out = call(self, *args)
        t1 = time.process_time()
        self.fn.fn(*args)  # the eager function, same arguments
        t2 = time.process_time()
        n = acc.setdefault(self.fn.record.what, [0, 0.0, 0.0])
        n[0] += 1
        n[1] += t1 - t0
        n[2] += t2 - t1
        return out

    y0 = torch.tensor([2.0, 0.0], dtype=D)
    t = torch.tensor([0.0, 300.0], dtype=D)
    for m in a.methods:
        kw = dict(method=m, rtol=1e-6, atol=1e-6, compile=True)
        first = odenet.solve(vdp, y0, t / 100, **kw)  # the compile
        print(f"{m}: compile {first.stats['compile_time']:.1f} s")
        _compiled.FusedNewton._call = timed
        odenet.solve(vdp, y0, t, **kw)
        _compiled.FusedNewton._call = call
    for what, (n, c, e) in acc.items():
        print(
            f"{what}: {n} calls, compiled {1e6 * c / n:.0f} µs/call, "
            f"eager {1e6 * e / n:.0f} µs/call ({c / e:.2f}×)"
        )


if __name__ == "__main__":
    main()
