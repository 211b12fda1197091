"""Non-stiff DETEST: odenet's adaptive explicit methods against scipy's on the same cells.

The non-stiff DETEST problems (Hull, Enright, Fellen & Sedgwick, SIAM J. Numer. Anal. 9
(1972); classes A, B, D, E as in Hairer, Nørsett & Wanner I, Sec. II.10), each on
[0, 20], scored at t = 20 by ``max_i |y_i − ref_i| / (0.01 + |ref_i|)`` against scipy's
DOP853 at rtol 3e-14, with ``atol = rtol/100``.  Each odenet method is run beside the
scipy method of the same order (heun, fehlberg2, bosh3: ``RK23``; dopri5, tsit5:
``RK45``; dop853: ``DOP853``; adams: ``LSODA``) and the table gives both errors in units
of rtol and both f-evaluation counts.  On non-stiff problems no local-error control
bounds the global error by rtol (Kepler's orbits D1–D5 grow it linearly), so the
verdict is against the peer, not against rtol: ``worse`` marks an odenet error above
10× the peer's (and above rtol/10).

    python studies/benchmarks/detest_nonstiff.py                      # rtol 1e-3, 1e-6
    python studies/benchmarks/detest_nonstiff.py --methods fehlberg2,bosh3 --rtols 1e-3

The numbers behind the ``fehlberg2`` note in ``docs/methods.md`` come from this script.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

import odenet

PEER = {
    "heun": "RK23",
    "fehlberg2": "RK23",
    "bosh3": "RK23",
    "dopri5": "RK45",
    "tsit5": "RK45",
    "dop853": "DOP853",
    "adams": "LSODA",
}
T1 = 20.0


def _kepler(e):
    def f(t, y, m):
        r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
        return [y[2], y[3], -y[0] / r3, -y[1] / r3]

    return f, [1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e))]


# f(t, y, m) with m the math module of y (numpy or torch), so one definition serves both
PROBLEMS = {
    "A1": (lambda t, y, m: [-y[0]], [1.0]),
    "A2": (lambda t, y, m: [-(y[0] ** 3) / 2], [1.0]),
    "A3": (lambda t, y, m: [y[0] * m.cos(t)], [1.0]),
    "A4": (lambda t, y, m: [y[0] / 4 * (1 - y[0] / 20)], [1.0]),
    "A5": (lambda t, y, m: [(y[0] - t) / (y[0] + t)], [4.0]),
    "B1": (lambda t, y, m: [2 * (y[0] - y[0] * y[1]), -(y[1] - y[0] * y[1])], [1.0, 3.0]),
    "B2": (
        lambda t, y, m: [-y[0] + y[1], y[0] - 2 * y[1] + y[2], y[1] - y[2]],
        [2.0, 0.0, 1.0],
    ),
    "B3": (lambda t, y, m: [-y[0], y[0] - y[1] ** 2, y[1] ** 2], [1.0, 0.0, 0.0]),
    "B4": (
        lambda t, y, m: [
            -y[1] - y[0] * y[2] / m.sqrt(y[0] ** 2 + y[1] ** 2),
            y[0] - y[1] * y[2] / m.sqrt(y[0] ** 2 + y[1] ** 2),
            y[0] / m.sqrt(y[0] ** 2 + y[1] ** 2),
        ],
        [3.0, 0.0, 0.0],
    ),
    "B5": (lambda t, y, m: [y[1] * y[2], -y[0] * y[2], -0.51 * y[0] * y[1]], [0.0, 1.0, 1.0]),
    "D1": _kepler(0.1),
    "D3": _kepler(0.5),
    "D5": _kepler(0.9),
    "E1": (
        lambda t, y, m: [y[1], -(y[1] / (t + 1)) - (1 - 0.25 / (t + 1) ** 2) * y[0]],
        [0.6713967071418030, 0.09540051444747446],
    ),
    "E2": (lambda t, y, m: [y[1], (1 - y[0] ** 2) * y[1] - y[0]], [2.0, 0.0]),
    "E3": (lambda t, y, m: [y[1], y[0] ** 3 / 6 - y[0] + 2 * m.sin(2.78535 * t)], [0.0, 0.0]),
    "E4": (lambda t, y, m: [y[1], 0.032 - 0.4 * y[1] ** 2], [30.0, 0.0]),
    "E5": (lambda t, y, m: [y[1], m.sqrt(1 + y[1] ** 2) / (25 - t)], [0.0, 0.0]),
}


def _numpy_field(f):
    return lambda t, y: np.asarray(f(t, y, np), dtype=float)


def _torch_field(f):
    def g(t, y):
        return torch.stack([torch.as_tensor(c, dtype=y.dtype) for c in f(t, y, torch)])

    return g


def cells(methods, rtols, problems):
    """Yield one dict per (problem, rtol, method): errors in units of rtol, nfe, status."""
    for name in problems:
        f, y0 = PROBLEMS[name]
        fn = _numpy_field(f)
        ref = solve_ivp(fn, (0.0, T1), y0, method="DOP853", rtol=3e-14, atol=1e-16).y[:, -1]
        scale = 0.01 + np.abs(ref)
        for rtol in rtols:
            atol = rtol / 100
            peers = {}
            for peer in sorted({PEER[m] for m in methods}):
                r = solve_ivp(fn, (0.0, T1), y0, method=peer, rtol=rtol, atol=atol)
                peers[peer] = (float(np.max(np.abs(r.y[:, -1] - ref) / scale)), r.nfev)
            for m in methods:
                sol = odenet.solve(
                    _torch_field(f),
                    torch.tensor(y0, dtype=torch.float64),
                    torch.tensor([0.0, T1], dtype=torch.float64),
                    method=m,
                    rtol=rtol,
                    atol=atol,
                    max_steps=200_000,
                    throw=False,
                )
                ok = sol.success
                err = float(np.max(np.abs(sol.ys[-1].numpy() - ref) / scale)) if ok else math.nan
                p_err, p_nfe = peers[PEER[m]]
                worse = ok and err > 10 * max(p_err, rtol / 10)
                yield dict(
                    problem=name,
                    rtol=rtol,
                    method=m,
                    peer=PEER[m],
                    ok=ok,
                    err=err / rtol,
                    peer_err=p_err / rtol,
                    nfe=sol.stats["nfe"],
                    peer_nfe=p_nfe,
                    verdict="worse" if worse else ("ok" if ok else f"status {int(sol.status[0])}"),
                )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(PEER))
    ap.add_argument("--rtols", default="1e-3,1e-6")
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    a = ap.parse_args(argv)
    methods = a.methods.split(",")
    unknown = [m for m in methods if m not in PEER]
    if unknown:
        ap.error(f"no scipy peer for {unknown}; choose from {sorted(PEER)}")
    rtols = [float(r) for r in a.rtols.split(",")]
    print(
        "| problem | rtol | method | peer | error/rtol | peer error/rtol | nfe | peer nfe "
        "| verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    worse = 0
    for c in cells(methods, rtols, a.problems.split(",")):
        worse += c["verdict"] == "worse"
        print(
            f"| {c['problem']} | {c['rtol']:.0e} | {c['method']} | {c['peer']} | {c['err']:.3g} "
            f"| {c['peer_err']:.3g} | {c['nfe']} | {c['peer_nfe']} | {c['verdict']} |",
            flush=True,
        )
    print(f"\n{worse} cells worse than 10× the peer's error")


if __name__ == "__main__":
    main()
