"""Small systems at native speed: odenet (eager and compiled) beside scipy, numpy,
torchdiffeq and lyapynov on the same problems, in one interleaved run, one thread.

1. dopri5 (rtol 1e-6, atol 1e-8) on a 2-state problem (Van der Pol, μ = 1) and a
   10-state one (Lorenz-96, F = 8): µs per step tried (accepted or rejected, both
   tools), ratio to scipy
   ``solve_ivp(method="RK45")`` on the numpy field.  odenet eager is ``odenet.solve``,
   odenet compiled is ``odenet.solve(..., compile=True)`` (the user's path: the
   loop's host backend, the adaptive steps between two outputs in one compiled
   block, a fused step for each step that writes an output), torchdiffeq per 6
   field calls.  One more row puts 201 output times on Van der Pol (all tools
   interpolate them): the blocks then stop after about one step each.
2. Fixed-step rk4 on the same two problems, outputs at 11 times: µs per step,
   ratio to a plain numpy RK4 loop; odenet compiled is ``solve(..., compile=True)``
   (compiled blocks of grid steps between the outputs, one fused step into each).
3. Lorenz, full Lyapunov spectrum along ONE orbit: rk4, dt = 0.01, 20 000 steps
   after 1 000 transient; CPU time and max relative error against
   (0.9056, 0, −14.5723) (Sprott), divided by λ1_ref.
5. Implicit methods (``--only implicit``): radau_iia5 and kvaerno5 on Van der Pol
   μ = 1000, t ∈ [0, 1000], rtol = atol = 1e-6: odenet eager, odenet
   ``compile=True`` (each Newton iteration's residual, LU solves and increment norm
   in one compiled call, the decisions on the host) and scipy ``Radau`` on the
   numpy field; CPU ms per solve, µs per step tried and per Newton iteration, with
   the counts (compiled and eager take the same steps: checked).
4. A 256-unit tanh RNN ``x ↦ tanh(W x)``, W ~ N(0, 1.5²/n), full spectrum (256
   exponents) with QR every step, N steps after 50.

Times are medians over interleaved repetitions of the process's CPU time (one
thread; the shared 2-core machine makes wall time noisy); compile times
(``Solution.stats["compile_time"]`` of the first compiled solve, wall) are reported
apart and excluded from the steady-state times.  Usage::

    python studies/benchmarks/small_systems.py            # reps = 3
    python studies/benchmarks/small_systems.py --quick    # reps = 1, shorter runs
    python studies/benchmarks/small_systems.py --no-compile

Results are printed and written to ``small_systems_results.md`` beside this file.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

# the Lorenz field of the other Lyapunov benchmark (this folder is on sys.path when run)
from lyapunov import lorenz, lorenz_jac_np, lorenz_np

import odenet
from odenet import _compiled
from odenet.stability import flow_map, lyapunov

HERE = Path(__file__).resolve().parent
D = torch.float64
REF = np.array([0.9056, 0.0, -14.5723])


# --- problems: torch and numpy versions of the same fields ----------------------------


def vdp(t, y):
    return torch.stack([y[..., 1], (1.0 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)


def vdp_np(t, y):
    return np.array([y[1], (1.0 - y[0] ** 2) * y[1] - y[0]])


def l96(t, y):
    return (torch.roll(y, -1, -1) - torch.roll(y, 2, -1)) * torch.roll(y, 1, -1) - y + 8.0


def l96_np(t, y):
    return (np.roll(y, -1) - np.roll(y, 2)) * np.roll(y, 1) - y + 8.0


PROBLEMS = {
    "vdp (2)": (vdp, vdp_np, np.array([2.0, 0.0]), 20.0),
    "lorenz96 (10)": (l96, l96_np, 8.0 + 0.01 * np.arange(10), 10.0),
}


def cpu(fn):
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


# --- 1 and 2: dopri5 and fixed-step rk4 ------------------------------------------------


def run_scipy(fnp, y0, T, rtol, atol, n_out=2):
    from scipy.integrate import solve_ivp

    t_eval = None if n_out == 2 else np.linspace(0.0, T, n_out)
    sol = solve_ivp(fnp, (0.0, T), y0, method="RK45", rtol=rtol, atol=atol, t_eval=t_eval)
    # steps tried, accepted or rejected (6 calls each; 2 more for the first step's
    # choice), the unit odenet's stats["steps"] counts
    return (sol.nfev - 2) // 6


def run_odenet(f, y0, T, n_out=2, **kw):
    y = torch.as_tensor(y0, dtype=D)
    sol = odenet.solve(f, y, torch.linspace(0.0, T, n_out, dtype=D), **kw)
    return int(sol.stats["steps"])


def compile_first(label, f, y0, T, compile_times, **kw):
    """The first compiled solve (its compile time reported apart), checked compiled."""
    sol = odenet.solve(f, torch.as_tensor(y0, dtype=D), torch.tensor([0.0, T], dtype=D), **kw)
    if not sol.stats["compiled"]:
        raise SystemExit(f"{label}: not compiled ({sol.stats.get('compile_fallback')})")
    compile_times.append((label, sol.stats["compile_time"]))


def run_tdq(f, y0, T, n_out=2, **kw):
    import torchdiffeq

    nfe = [0]

    def g(t, y):
        nfe[0] += 1
        return f(t, y)

    t = torch.linspace(0.0, T, n_out, dtype=D)
    torchdiffeq.odeint(g, torch.as_tensor(y0, dtype=D), t, **kw)
    return nfe[0]


def rk4_numpy(fnp, y0, h, n):
    y = np.array(y0, dtype=float)
    t = 0.0
    for _ in range(n):
        k1 = fnp(t, y)
        k2 = fnp(t + h / 2, y + h / 2 * k1)
        k3 = fnp(t + h / 2, y + h / 2 * k2)
        k4 = fnp(t + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t += h
    return n


def explicit_benchmarks(reps, quick, use_compile, lines, compile_times):
    rtol, atol = 1e-6, 1e-8
    lines += [
        f"## 1. dopri5, rtol {rtol:g}, atol {atol:g}: µs per step tried (ratio to scipy RK45)",
        "",
        "| problem | scipy RK45 | odenet eager | odenet `compile=True` "
        "| torchdiffeq dopri5 (per 6 nfe) |",
        "|---|---|---|---|---|",
    ]
    # the last row: outputs at 201 times (every tool interpolates them), so each
    # compiled block stops after about one step
    rows = [(name, name, 2) for name in PROBLEMS] + [("vdp (2), 201 outputs", "vdp (2)", 201)]
    for name, problem, n_out in rows:
        f, fnp, y0, T = PROBLEMS[problem]
        T = T / 4 if quick else T
        res = {k: [] for k in ("scipy", "eager", "compiled", "tdq")}
        steps = {}
        # warm-ups (and the compile, timed apart)
        run_odenet(f, y0, T / 10, method="dopri5", rtol=rtol, atol=atol)
        run_scipy(fnp, y0, T / 10, rtol, atol)
        run_tdq(f, y0, T / 10, method="dopri5", rtol=rtol, atol=atol)
        if use_compile and n_out == 2:
            compile_first(
                f"dopri5 fused step + adaptive block, {name}",
                f,
                y0,
                T / 10,
                compile_times,
                method="dopri5",
                rtol=rtol,
                atol=atol,
                compile=True,
            )
        tol = dict(method="dopri5", rtol=rtol, atol=atol, n_out=n_out)
        for _ in range(reps):
            t, steps["scipy"] = cpu(lambda: run_scipy(fnp, y0, T, rtol, atol, n_out))  # noqa: B023
            res["scipy"].append(t)
            t, steps["eager"] = cpu(lambda: run_odenet(f, y0, T, **tol))  # noqa: B023
            res["eager"].append(t)
            if use_compile:
                t, steps["compiled"] = cpu(lambda: run_odenet(f, y0, T, compile=True, **tol))  # noqa: B023
                res["compiled"].append(t)
            t, nfe = cpu(lambda: run_tdq(f, y0, T, **tol))  # noqa: B023
            steps["tdq"] = nfe / 6
            res["tdq"].append(t)
        us = {k: 1e6 * statistics.median(v) / steps[k] for k, v in res.items() if v}
        cell = {k: f"{v:.1f} ({v / us['scipy']:.2f}×)" for k, v in us.items()}
        lines.append(
            f"| {name} | {us['scipy']:.1f} ({steps['scipy']} steps) | {cell['eager']} "
            f"({steps['eager']} steps) | {cell.get('compiled', 'n/a')} | {cell['tdq']} |"
        )

    h = 0.01
    lines += [
        "",
        f"## 2. Fixed-step rk4, h = {h}, outputs at 11 times: µs per step (ratio to the "
        "numpy loop)",
        "",
        "| problem | numpy loop | odenet eager | odenet `compile=True` | torchdiffeq rk4 |",
        "|---|---|---|---|---|",
    ]
    for name, (f, fnp, y0, _) in PROBLEMS.items():
        n = 500 if quick else 2000
        T = n * h
        res = {k: [] for k in ("numpy", "eager", "compiled", "tdq")}
        kw = dict(method="rk4", step_size=h, n_out=11)
        if use_compile:
            compile_first(
                f"rk4 fused step + fixed-grid block, {name}",
                f,
                y0,
                20 * h,
                compile_times,
                method="rk4",
                step_size=h,
                compile=True,
            )
        for _ in range(reps):
            t, _ = cpu(lambda: rk4_numpy(fnp, y0, h, n))  # noqa: B023
            res["numpy"].append(t)
            t, _ = cpu(lambda: run_odenet(f, y0, T, **kw))  # noqa: B023
            res["eager"].append(t)
            if use_compile:
                t, _ = cpu(lambda: run_odenet(f, y0, T, compile=True, **kw))  # noqa: B023
                res["compiled"].append(t)
            t, _ = cpu(lambda: run_tdq(f, y0, T, method="rk4", options={"step_size": h}))  # noqa: B023
            res["tdq"].append(t)
        us = {k: 1e6 * statistics.median(v) / n for k, v in res.items() if v}
        cell = {k: f"{v:.1f} ({v / us['numpy']:.2f}×)" for k, v in us.items()}
        lines.append(
            f"| {name} | {us['numpy']:.1f} | {cell['eager']} | {cell.get('compiled', 'n/a')} "
            f"| {cell['tdq']} |"
        )


# --- 5. implicit methods: fused Newton iterations ---------------------------------------

MU = 1000.0


def vdp_stiff(t, y):
    return torch.stack([y[..., 1], MU * (1.0 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)


def vdp_stiff_np(t, y):
    return np.array([y[1], MU * (1.0 - y[0] ** 2) * y[1] - y[0]])


def run_scipy_radau(T, tol):
    from scipy.integrate import solve_ivp

    sol = solve_ivp(vdp_stiff_np, (0.0, T), [2.0, 0.0], method="Radau", rtol=tol, atol=tol)
    # scipy keeps no count of rejected steps: accepted ones (every one is in sol.t)
    return dict(steps=len(sol.t) - 1, nfe=sol.nfev, njev=sol.njev, nlu=sol.nlu)


def run_odenet_implicit(T, tol, **kw):
    y0 = torch.tensor([2.0, 0.0], dtype=D)
    sol = odenet.solve(vdp_stiff, y0, torch.tensor([0.0, T], dtype=D), rtol=tol, atol=tol, **kw)
    st = sol.stats
    keys = ("steps", "accepted", "nfe", "njev", "nlu", "newton_iterations")
    return {k: st[k] for k in keys} | {"ys": sol.ys, "compiled": st.get("compiled")}


def implicit_benchmarks(reps, quick, use_compile, lines, compile_times):
    T, tol = (300.0 if quick else 1000.0), 1e-6
    lines += [
        f"## 5. Implicit methods, Van der Pol μ = {MU:g}, t ∈ [0, {T:g}], rtol = atol = {tol:g}",
        "",
        "CPU ms per solve; µs per step tried (scipy: per accepted step, it counts no "
        "rejections) and the solve's time divided by its Newton iterations (not the cost "
        "of an iteration alone: `small_systems_newton_calls.py` times that); ratio of the "
        "solve to scipy Radau's (same loop).",
        "",
        "| tool | steps (acc.) | nfe | njev | nlu | Newton it. | ms / solve | µs / step "
        "| solve µs / Newton it. | vs scipy Radau |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in ("radau_iia5", "kvaerno5"):
        kw = dict(method=method)
        run_odenet_implicit(T / 10, tol, **kw)  # warm-up
        if use_compile:
            compile_first(
                f"{method} Newton iteration, Van der Pol μ = {MU:g}",
                vdp_stiff,
                [2.0, 0.0],
                T / 10,
                compile_times,
                compile=True,
                rtol=tol,
                atol=tol,
                **kw,
            )
        res = {k: [] for k in ("scipy", "eager", "compiled")}
        out = {}
        for _ in range(reps):
            t, out["scipy"] = cpu(lambda: run_scipy_radau(T, tol))
            res["scipy"].append(t)
            t, out["eager"] = cpu(lambda: run_odenet_implicit(T, tol, **kw))  # noqa: B023
            res["eager"].append(t)
            if use_compile:
                t, out["compiled"] = cpu(
                    lambda: run_odenet_implicit(T, tol, compile=True, **kw)  # noqa: B023
                )
                res["compiled"].append(t)
        if use_compile:
            e, c = out["eager"], out["compiled"]
            same = all(e[k] == c[k] for k in ("steps", "nfe", "njev", "nlu", "newton_iterations"))
            diff = float((e["ys"] - c["ys"]).abs().max())
            if not (c["compiled"] and same):
                raise SystemExit(f"{method}: compiled != eager steps ({e} vs {c})")
            lines.append(f"<!-- {method}: compiled − eager, max |Δy| = {diff:.1e} -->")
        ms = {k: 1e3 * statistics.median(v) for k, v in res.items() if v}
        labels = {
            "scipy": "scipy Radau",
            "eager": f"odenet {method} eager",
            "compiled": f"odenet {method} `compile=True`",
        }
        shown = ("scipy", "eager", "compiled") if method == "radau_iia5" else ("eager", "compiled")
        for k in shown:
            if k not in ms:
                continue
            o = out[k]
            it = o.get("newton_iterations")
            acc = o.get("accepted", o["steps"])
            per_it = f"{1e3 * ms[k] / it:.0f}" if it else "–"
            lines.append(
                f"| {labels[k]} | {o['steps']} ({acc}) | {o['nfe']} | {o['njev']} | {o['nlu']} "
                f"| {it if it else '–'} | {ms[k]:.1f} | {1e3 * ms[k] / o['steps']:.0f} | {per_it} "
                f"| {ms[k] / ms['scipy']:.1f}× |"
            )
    lines.append("")


# --- 3. Lorenz spectrum along one orbit -------------------------------------------------


def lorenz_lyapynov(n, transient, dt):
    import lyapynov

    ds = lyapynov.ContinuousDS(np.array([1.0, 1.0, 1.0]), 0.0, lorenz_np, lorenz_jac_np, dt)
    return np.asarray(lyapynov.LCE(ds, 3, transient, n, False))


_LORENZ_STEPS: dict = {}


def lorenz_odenet(n, transient, dt, **kw):
    # one step map per dt: the compiled code is cached per step callable
    step = _LORENZ_STEPS.setdefault(dt, flow_map(lorenz, dt))
    res = lyapunov(step, torch.ones(3, dtype=D), n, dt=dt, transient=transient, **kw)
    return res.exponents.numpy()


def rnn(n, g=1.5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, g / np.sqrt(n), (n, n)), rng.normal(0.0, 1.0, n)


def rnn_lyapynov(W, x0, N, transient):
    import lyapynov

    f = lambda x, t: np.tanh(W @ x)  # noqa: E731
    jac = lambda x, t: (1.0 - np.tanh(W @ x) ** 2)[:, None] * W  # noqa: E731
    ds = lyapynov.DiscreteDS(x0.copy(), 0, f, jac)
    return np.asarray(lyapynov.LCE(ds, len(x0), transient, N, False))


def spectra_benchmarks(reps, quick, use_compile, lines, compile_times):
    dt, n, tr = 0.01, 20000, 1000
    qr_c = 10  # QR every 10 steps (λ1 − λ3 ≈ 15.5: a 10-step product has cond ≈ 5)
    err = lambda lam: np.abs(lam - REF).max() / abs(REF[0])  # noqa: E731
    if use_compile:
        t0 = time.perf_counter()
        lorenz_odenet(qr_c * 2, 0, dt, compile=True, qr_every=qr_c)
        compile_times.append(("Lorenz rk4 trajectory loop", time.perf_counter() - t0))
    lorenz_lyapynov(100, 10, dt)
    lorenz_odenet(100, 10, dt)
    res = {k: [] for k in ("lyapynov", "eager", "compiled", "compiled1")}
    lam = {}
    for r in range(reps):
        t, lam["lyapynov"] = cpu(lambda: lorenz_lyapynov(n, tr, dt))
        res["lyapynov"].append(t)
        if r == 0:  # eager one orbit is slow: once
            t, lam["eager"] = cpu(lambda: lorenz_odenet(n, tr, dt, qr_every=qr_c))
            res["eager"].append(t)
        if use_compile:
            t, lam["compiled"] = cpu(lambda: lorenz_odenet(n, tr, dt, compile=True, qr_every=qr_c))
            res["compiled"].append(t)
            t, lam["compiled1"] = cpu(lambda: lorenz_odenet(n, tr, dt, compile=True, qr_every=1))
            res["compiled1"].append(t)
    base = statistics.median(res["lyapynov"])
    labels = {
        "lyapynov": "lyapynov (analytic Jacobian, QR every step)",
        "eager": f"odenet eager (`lyapunov`, qr_every={qr_c})",
        "compiled": f"odenet compiled (`lyapunov(compile=True, qr_every={qr_c})`)",
        "compiled1": "odenet compiled (`lyapunov(compile=True)`, QR every step)",
    }
    lines += [
        "",
        f"## 3. Lorenz, full spectrum along ONE orbit: rk4, dt = {dt}, {n} steps after {tr}",
        "",
        "| tool | λ1 | λ2 | λ3 | max error / λ1_ref | CPU time (s) | speed vs lyapynov |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, ts in res.items():
        if not ts:
            continue
        m = statistics.median(ts)
        v = lam[k]
        lines.append(
            f"| {labels[k]} | {v[0]:.4f} | {v[1]:.4f} | {v[2]:.4f} | {err(v):.3%} | {m:.2f} "
            f"| {base / m:.2f}× |"
        )

    N, trn = (100, 20) if quick else (300, 50)
    W, x0 = rnn(256)
    Wt, xt = torch.as_tensor(W), torch.as_tensor(x0)

    def cell(x):
        return torch.tanh(Wt @ x)

    def rnn_od(**kw):
        return lyapunov(cell, xt, N, transient=trn, **kw).exponents.numpy()

    if use_compile:
        t0 = time.perf_counter()
        lyapunov(cell, xt, 2, compile=True)
        compile_times.append(("RNN-256 orbit loop (QR every step)", time.perf_counter() - t0))
        t0 = time.perf_counter()
        lyapunov(cell, xt, 2, transient=1, compile=True, transient_tangents=False)
        compile_times.append(("RNN-256 state-only loop", time.perf_counter() - t0))
    rnn_lyapynov(W, x0, 3, 1)
    res = {k: [] for k in ("lyapynov", "jacobian", "compiled", "compiled_eq")}
    lam = {}
    for _ in range(reps):
        t, lam["lyapynov"] = cpu(lambda: rnn_lyapynov(W, x0, N, trn))
        res["lyapynov"].append(t)
        t, lam["jacobian"] = cpu(lambda: rnn_od(tangent="jacobian"))
        res["jacobian"].append(t)
        if use_compile:
            t, lam["compiled"] = cpu(lambda: rnn_od(compile=True))
            res["compiled"].append(t)
            t, lam["compiled_eq"] = cpu(lambda: rnn_od(compile=True, transient_tangents=False))
            res["compiled_eq"].append(t)
    base = statistics.median(res["lyapynov"])
    labels = {
        "lyapynov": "lyapynov (analytic Jacobian)",
        "jacobian": "odenet eager (vmapped jacrev Jacobians)",
        "compiled": "odenet compiled (`lyapunov(compile=True)`: jvp on the tangent matrix)",
        "compiled_eq": "odenet compiled, transient without tangents (lyapynov's work)",
    }
    lines += [
        "",
        f"## 4. tanh RNN, n = 256, g = 1.5, full spectrum, QR every step, N = {N} after {trn}",
        "",
        "odenet by default also propagates the tangent vectors through the transient "
        f"(lyapynov does not): {N + trn} tangent steps against lyapynov's {N}; "
        "`transient_tangents=False` does lyapynov's work.",
        "",
        "| tool | λ1 | λ128 | λ256 | max abs diff vs lyapynov | CPU time (s) | speed vs lyapynov |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, ts in res.items():
        if not ts:
            continue
        m = statistics.median(ts)
        v = lam[k]
        lines.append(
            f"| {labels[k]} | {v[0]:.4f} | {v[127]:.4f} | {v[-1]:.4f} "
            f"| {np.abs(v - lam['lyapynov']).max():.1e} | {m:.2f} | {base / m:.2f}× |"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", choices=["explicit", "spectra", "implicit"], default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    reps = a.reps or (1 if a.quick else 3)
    use_compile = not a.no_compile and _compiled.compile_enabled()
    cmd = "python " + " ".join(["studies/benchmarks/small_systems.py", *sys.argv[1:]])
    lines = [
        "# small systems benchmark results",
        "",
        f"Command: `{cmd}` (reps = {reps}, interleaved; medians of process CPU time, "
        f"1 thread; torch {torch.__version__}). The machine is a shared 2-core box under "
        "heavy load from other jobs: absolute times are inflated and noisy, ratios from "
        "the same run are what to read.",
        "",
    ]
    compile_times: list = []
    if a.only in (None, "explicit"):
        explicit_benchmarks(reps, a.quick, use_compile, lines, compile_times)
    if a.only in (None, "spectra"):
        spectra_benchmarks(reps, a.quick, use_compile, lines, compile_times)
    if a.only in (None, "implicit"):
        implicit_benchmarks(reps, a.quick, use_compile, lines, compile_times)
    if compile_times:
        lines += [
            "",
            "## Compile times (wall, first call; excluded above)",
            "",
            "With torch's on-disk inductor cache as earlier runs left it (a warm cache "
            "skips code generation, not tracing); a cold cache costs several times more.",
            "",
            "| compiled function | seconds |",
            "|---|---|",
            *[f"| {w} | {s:.1f} |" for w, s in compile_times],
        ]
        fails = [r for r in _compiled.compile_records() if not r.compiled]
        if fails:
            lines += [
                "",
                "Fell back to eager: " + "; ".join(f"{r.what}: {r.reason}" for r in fails),
            ]
    text = "\n".join(lines)
    print(text)
    name = "small_systems_results.md" if a.only is None else f"small_systems_results_{a.only}.md"
    (HERE / name).write_text(text + "\n")


if __name__ == "__main__":
    main()
