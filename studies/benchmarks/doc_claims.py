"""Small measurements quoted in the guides that no other study prints, one function each.

    python studies/benchmarks/doc_claims.py adams_vs_dopri5      # choosing.md: adams
    python studies/benchmarks/doc_claims.py radau3_vs_radau5     # choosing.md: radau_iia3
    python studies/benchmarks/doc_claims.py kvaerno5_without_kappa  # solving.md: κ ≡ 1
    python studies/benchmarks/doc_claims.py kvaerno3_newton      # solving.md: Newton 3e-4
    python studies/benchmarks/doc_claims.py e5_isoutofdomain     # solving.md: E5
    python studies/benchmarks/doc_claims.py implicit_adams_jump  # torchdiffeq.md
    python studies/benchmarks/doc_claims.py sdirk4_jump          # events.md: sdirk4
    python studies/benchmarks/doc_claims.py low_order_jump       # test_stiff.py: trbdf2
    python studies/benchmarks/doc_claims.py adjoint_fixed_stiff  # sensitivity.md
    python studies/benchmarks/doc_claims.py explicit_adams_growth  # torchdiffeq.md
    python studies/benchmarks/doc_claims.py bdf_round_off_test   # methods.md: BDF Newton
    python studies/benchmarks/doc_claims.py jump_t_float32       # events.md: jump_t, float32
    python studies/benchmarks/doc_claims.py explicit_stiff_gradients  # sensitivity.md: 1.4e87
    python studies/benchmarks/doc_claims.py                      # all of them

Stiff problems use ``stiff.run_odenet`` (``atol = floors·rtol``, the error of
:func:`odenet.problems.stiff_error` against the stiff set's reference), as
``stiff_accuracy.py`` does.  Nothing is written.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
from pathlib import Path

import torch

import odenet
import odenet.problems as P
from odenet import _newton

sys.path.insert(0, str(Path(__file__).parent))
from stiff import run_odenet
from stiff_holdout import get as holdout

D = torch.float64


def adams_vs_dopri5() -> None:
    """adams's f-calls against dopri5's at rtol 1e-10 (choosing.md), error against dop853
    at rtol 1e-13."""
    print("problem\tatol\tdopri5 nfe\tadams nfe\tratio\tdopri5 err\tadams err")
    for name in ("kepler", "lotka_volterra", "van_der_pol"):
        p = P.get_problem(name)
        t = torch.tensor(p.span, dtype=D)
        ref = odenet.solve(p.f, p.y0_tensor(), t, method="dop853", rtol=1e-13, atol=1e-15)
        for atol in (1e-10, 1e-12):
            n, e = {}, {}
            for m in ("dopri5", "adams"):
                s = odenet.solve(p.f, p.y0_tensor(), t, method=m, rtol=1e-10, atol=atol)
                n[m] = int(s.stats["nfe"])
                e[m] = float((s.ys[-1] - ref.ys[-1]).abs().max())
            ratio = n["dopri5"] / n["adams"]
            print(f"{name}\t{atol:g}\t{n['dopri5']}\t{n['adams']}\t{ratio:.2f}\t"
                  f"{e['dopri5']:.1e}\t{e['adams']:.1e}")  # fmt: skip


def radau3_vs_radau5() -> None:
    """radau_iia3's f-evaluations against radau_iia5's on HIRES and Robertson (choosing.md)."""
    RADAU = ("radau_iia5", "radau_iia3")
    print("problem\trtol\tradau_iia5 nfe\tradau_iia3 nfe\tratio\terr5/rtol\terr3/rtol")
    for name in ("hires", "robertson_long"):
        p = P.get_problem(name)
        for rtol in (1e-3, 1e-6):
            r5, r3 = (run_odenet(p, m, rtol, p.atol_ratio, 20000) for m in RADAU)
            print(f"{name}\t{rtol:g}\t{r5['nfe']}\t{r3['nfe']}\t{r3['nfe'] / r5['nfe']:.2f}\t"
                  f"{r5['err'] / rtol:.3g}\t{r3['err'] / rtol:.3g}")  # fmt: skip


@contextlib.contextmanager
def kappa_one():
    """Solves inside take κ ≡ 1 for every DIRK pair (the error estimate at face value)."""
    saved = _newton.error_safety
    _newton.error_safety = lambda tableau, rtol, eps=0.0: 1.0
    try:
        yield
    finally:
        _newton.error_safety = saved


def kvaerno5_without_kappa() -> None:
    """kvaerno5 on Robertson with κ ≡ 1 and with its default κ (solving.md)."""
    p = P.get_problem("robertson_long")
    print("rtol\tkappa\terr/rtol\tnfe")
    for rtol in (1e-3, 1e-8):
        for label in ("1", "default"):
            with kappa_one() if label == "1" else contextlib.nullcontext():
                r = run_odenet(p, "kvaerno5", rtol, p.atol_ratio, 100000)
            print(f"{rtol:g}\t{label}\t{r['err'] / rtol:.3g}\t{r['nfe']}\t{r['status']}")


def kvaerno3_newton() -> None:
    """kvaerno3 on HIRES at rtol 1e-3 with its Newton threshold (3e-4) and Hairer's 0.03,
    with the default κ and with κ ≡ 1 (solving.md)."""
    p = P.get_problem("hires")
    print("kappa\tnewton_tol\terr/rtol\tnfe")
    for label in ("default", "1"):
        for kw in ({}, {"newton_tol": 0.03}):
            with kappa_one() if label == "1" else contextlib.nullcontext():
                r = run_odenet(p, "kvaerno3", 1e-3, p.atol_ratio, 20000, **kw)
            print(f"{label}\t{kw.get('newton_tol', '3e-4')}\t{r['err'] / 1e-3:.3g}\t{r['nfe']}")


def trapezoid_estimates() -> None:
    """The adaptive trapezoid with its Milne-device estimate and with the forward Euler
    one it had before (κ constant 1), on the harmonic oscillator over [0, 5] (atol = rtol)
    and on ``y' = t`` over [0, 4] (methods.md, tests/test_trapezoid.py)."""
    euler = dataclasses.replace(
        odenet.tableau("trapezoid"), estimator=None, estimator_order=None, error_safety=1.0
    )

    def harmonic(t, y):
        return torch.stack([y[..., 1], -y[..., 0]], -1)

    exact = torch.tensor([math.cos(5.0), -math.sin(5.0)], dtype=torch.float64)
    print("estimate\tproblem\trtol\terr/rtol\tsteps")
    for label, tab in (("milne", "trapezoid"), ("euler", euler)):
        for rtol in (1e-3, 1e-5):
            y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
            t = torch.tensor([0.0, 5.0], dtype=torch.float64)
            sol = odenet.solve(harmonic, y0, t, method=tab, rtol=rtol, atol=rtol)
            err = float((sol.ys[-1] - exact).abs().max())
            print(f"{label}\tharmonic\t{rtol:g}\t{err / rtol:.3g}\t{int(sol.stats['steps'])}")
        sol = odenet.solve(
            lambda t, y: t * torch.ones_like(y),
            torch.zeros(1, dtype=torch.float64),
            torch.tensor([0.0, 4.0], dtype=torch.float64),
            method=tab,
            rtol=1e-4,
            atol=1e-4,
        )
        err = abs(float(sol.ys[-1, 0]) - 8.0)
        print(f"{label}\ty' = t\t1e-4\t{err / 1e-4:.3g}\t{int(sol.stats['steps'])}")


def e5_isoutofdomain() -> None:
    """E5 (stiff_holdout.py) with radau_iia5 at rtol 1e-6: steps with no domain test,
    with ``y < −atol`` and with ``y < 0`` (solving.md)."""
    p = holdout("e5")
    atol = torch.as_tensor(p.atol_ratio) * 1e-6
    tests = {
        "none": None,
        "y < -atol": lambda t, y: bool((y < -atol).any()),
        "y < 0": lambda t, y: bool((y < 0).any()),
    }
    for label, test in tests.items():
        kw = {} if test is None else {"isoutofdomain": test}
        r = run_odenet(p, "radau_iia5", 1e-6, p.atol_ratio, 20000, **kw)
        print(f"{label}\t{r['status']}\tsteps {r.get('steps')}")


def implicit_adams_jump() -> None:
    """``y' = −y + u(t)``, ``u = 1`` before t = 5 and 0 after, y(0) = 1 on [0, 10]:
    implicit_adams with step_size 0.1 at max_order 12 and 8 (torchdiffeq.md)."""
    import math
    import warnings

    exact = math.exp(-5.0)  # y = 1 up to t = 5, then exp(−(t − 5))
    print(f"exact y(10) = {exact:.3g}")
    for dtype in (torch.float64, torch.float32):
        for mo in (12, 8):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the corrector's
                ys = odenet.odeint(
                    lambda t, y, dt=dtype: -y + (t < 5).to(dt), torch.tensor([1.0], dtype=dtype),
                    torch.tensor([0.0, 10.0], dtype=dtype), method="implicit_adams",
                    options=dict(step_size=0.1, max_order=mo),
                )  # fmt: skip
            print(f"{str(dtype)[6:]}\tmax_order {mo}\ty(10) = {float(ys[-1, 0]):.3g}")


def jump_worst(method: str, rtol: float) -> tuple[float, int]:
    """Worst relative error at t = 2 over rtol of ``y' = −y`` switching to ``y' = 2`` at 14 jump
    times τ in [0.5, 1.45] (y(0) = 1, atol 1e-10, no ``jump_t``), and at how many τ it
    passes 100·rtol.  ``tests/test_stiff.py`` asserts on the same loop."""
    import math

    worst, bad = 0.0, 0
    for tau in [0.5 + 0.0731 * i for i in range(14)]:
        sol = odenet.solve(
            lambda t, y, tau=tau: torch.where(t < tau, -y, torch.full_like(y, 2.0)),
            torch.ones(1, dtype=D), torch.tensor([0.0, 2.0], dtype=D),
            method=method, rtol=rtol, atol=1e-10,
        )  # fmt: skip
        exact = math.exp(-tau) + 2 * (2 - tau)
        e = abs(float(sol.ys[-1, 0]) - exact) / exact / rtol
        worst, bad = max(worst, e), bad + (e > 100)
    return worst, bad


def sdirk4_jump() -> None:
    """:func:`jump_worst` at rtol 1e-7 (events.md)."""
    print("method\tworst err/rtol\tτ above 100·rtol")
    for method in ("sdirk4", "kvaerno5", "radau_iia5", "dopri5"):
        worst, bad = jump_worst(method, 1e-7)
        print(f"{method}\t{worst:.2g}\t{bad}/14")


def low_order_jump() -> None:
    """:func:`jump_worst` for the order-2 and -3 pairs at rtol 1e-7, 1e-6, 1e-5: how far
    under rtol they end (tests/test_stiff.py's jump test runs them at 1e-5 and 1e-6)."""
    print("method\trtol\tworst err/rtol")
    for method in ("trbdf2", "kvaerno3"):
        for rtol in (1e-7, 1e-6, 1e-5):
            print(f"{method}\t{rtol:g}\t{jump_worst(method, rtol)[0]:.2g}")


def adjoint_fixed_stiff() -> None:
    """``y' = A y + b`` with a fast mode (λ = −1000) excited at t0, ``L = Σ W·y`` at five
    times: ``dL/dA``'s relative error against autograd through ``matrix_exp``, per
    sensitivity mode, on fixed grids (sensitivity.md: the adjoint's Hermite state)."""
    A0 = torch.tensor([[-1000.0, 999.0, 0.0], [0.0, -1.0, 0.5], [0.0, -0.5, -1.0]], dtype=D)
    b0 = torch.tensor([0.3, -0.2, 0.5], dtype=D)
    y0 = torch.tensor([1.0, 0.5, -0.7], dtype=D)
    t = torch.tensor([0.2, 0.7, 1.3, 2.0, 3.1], dtype=D)
    W = torch.randn(5, 3, dtype=D, generator=torch.Generator().manual_seed(0))

    def exact(A, b):
        c = torch.linalg.solve(A, b)
        E = torch.linalg.matrix_exp(A[None] * (t - t[0])[:, None, None])
        return (E @ (y0 + c)[:, None])[..., 0] - c

    A = A0.clone().requires_grad_()
    truth = torch.autograd.grad((W * exact(A, b0)).sum(), A)[0]
    print("method\tstep\tforward err\tdirect dA\tcheckpoint dA\tadjoint dA")
    for method, h in (("radau_iia5", 0.02), ("radau_iia5", 0.005), ("rk4", 0.002)):
        row = []
        for sens in ("direct", "checkpoint", "adjoint"):
            A = A0.clone().requires_grad_()
            sol = odenet.solve(
                lambda s, y, A=A: y @ A.T + b0, y0, t, method=method, step_size=h,
                sensitivity=sens,
            )  # fmt: skip
            g = torch.autograd.grad((W * sol.ys).sum(), A)[0]
            row.append(f"{float((g - truth).norm() / truth.norm()):.2g}")
        err = float((sol.ys.detach() - exact(A0, b0)).abs().max())
        print(f"{method}\t{h}\t{err:.2g}\t" + "\t".join(row))


def explicit_adams_growth() -> None:
    """explicit_adams at max_order 12, 8, 5 and steps 0.1 … 0.003 on five problems: the
    relative error at the end against dop853 at rtol 1e-12, and whether the solve issued
    its StabilityWarning (torchdiffeq.md; the `_SPURIOUS_GROWTH` threshold in _adams.py)."""
    import warnings

    problems = {
        "decay": (lambda t, y: -y, [1.0], 3.0),
        "oscillator": (lambda t, y: torch.stack([y[..., 1], -y[..., 0]], -1), [1.0, 0.0], 20.0),
        "growth": (lambda t, y: y, [1.0], 3.0),
        "van_der_pol": (
            lambda t, y: torch.stack([y[..., 1], (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1),
            [2.0, 0.0], 6.0,
        ),
        "cos_forcing": (lambda t, y: torch.cos(t) * torch.ones_like(y), [0.0], 20.0),
    }  # fmt: skip
    print("problem\tmax_order\tstep\trel. error\twarned")
    worst_quiet, best_warned = 0.0, math.inf
    for name, (f, y0, t1) in problems.items():
        y0 = torch.tensor(y0, dtype=D)
        t = torch.tensor([0.0, t1], dtype=D)
        ref = odenet.solve(f, y0, t, method="dop853", rtol=1e-12, atol=1e-14).ys[-1]
        for mo in (12, 8, 5):
            for h in (0.1, 0.03, 0.01, 0.003):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        y1 = odenet.odeint(f, y0, t, method="explicit_adams",
                                           options=dict(step_size=h, max_order=mo))[-1]  # fmt: skip
                        err = float(((y1 - ref).abs() / (ref.abs() + 1)).max())
                    except odenet.NonFiniteError:
                        err = math.inf
                warned = any(issubclass(w.category, odenet.StabilityWarning) for w in caught)
                if warned:
                    best_warned = min(best_warned, err)
                else:
                    worst_quiet = max(worst_quiet, err)
                print(f"{name}\t{mo}\t{h}\t{err:.3g}\t{'yes' if warned else 'no'}")
    print(f"largest error without a warning {worst_quiet:.3g}; smallest with one {best_warned:.3g}")


def bdf_round_off_test() -> None:
    """bdf on stiff DETEST F5 (tests/test_bdf.py's field, floors and end value) at rtol
    1e-3 … 1e-8, and on Robertson over [0, 1e11] (floors 1e-8, 1e-14, 1e-8) at 1e-6:
    status, steps, Jacobians, error (methods.md, the round-off test of a stalled Newton
    iteration; run on a commit and on its parent to compare)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from test_bdf import F5_END, detest_f5

    from odenet.problems import robertson

    f64 = torch.float64
    y0 = torch.tensor([3.365e-7, 8.261e-3, 1.642e-3, 9.38e-6], dtype=f64)
    floors = torch.tensor([3.36e-10, 8.26e-6, 6.19e-6, 9.55e-9], dtype=f64)
    cases = [("F5", detest_f5, y0, (0.0, 100.0), floors, torch.tensor(F5_END, dtype=f64), r)
             for r in (1e-3, 1e-6, 1e-8)]  # fmt: skip
    rob = robertson(t1=1e11)
    ref = torch.tensor([0.2083340149701255e-7, 0.8333360770334713e-13, 0.9999999791665050])
    cases.append(("robertson_1e11", rob.f, rob.y0_tensor(), rob.span,
                  torch.tensor([1e-8, 1e-14, 1e-8], dtype=f64), ref.to(f64), 1e-6))  # fmt: skip
    for name, f, y0_, span, fl, ref_, rtol in cases:
        sol = odenet.solve(f, y0_, torch.tensor(span, dtype=f64), method="bdf", rtol=rtol,
                           atol=fl * rtol, max_steps=20000, throw=False)  # fmt: skip
        err = float(((sol.ys[-1] - ref_).abs() / (fl + ref_.abs())).max())
        st = sol.stats
        print(
            f"{name}\trtol {rtol:g}\t{sol.message}\tsteps {st['steps']}\t"
            f"njev {st['njev']}\terror {err:.3g}"
        )


def jump_t_float32() -> None:
    """torchdiffeq's jump_t field (``−x/2`` before t = 0.5, ``x²`` after; x0 = (1, 2) on
    [0, 1]), dopri5 at rtol = atol = 1e-6 with ``jump_t = [0.5]``, float32 and float64:
    f-evaluations and rejected steps of ``odenet.solve`` (events.md, ``_loop._jump_side``;
    run on a commit and on its parent to compare)."""
    import warnings

    def f(t, x):
        return -0.5 * x if t < 0.5 else x**2

    for dtype in (torch.float32, torch.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", odenet.ToleranceWarning)
            x0, t = torch.tensor([1.0, 2.0], dtype=dtype), torch.tensor([0.0, 1.0], dtype=dtype)
            sol = odenet.solve(f, x0, t, method="dopri5", rtol=1e-6, atol=1e-6,
                               jump_t=torch.tensor([0.5], dtype=dtype))  # fmt: skip
        print(f"{str(dtype)[6:]}\tnfe {sol.stats['nfe']}\trejected {sol.stats['rejected']}")


def explicit_stiff_gradients() -> None:
    """y' = λ(y − cos t) − sin t, y(0) = 2 on [0, 2], rtol 1e-6, atol 1e-9: dy(2)/dλ in
    direct, checkpoint and adjoint mode (exactly 2e^(2λ) ≈ 0), whether a
    StabilityWarning was raised, and for dopri5 Σ log|R(h_n λ)| over the accepted steps
    (the growth backpropagation follows with the steps held fixed; sensitivity.md,
    odenet._stiffness)."""
    import warnings

    import numpy as np

    from odenet.stability import stability_function

    D = torch.float64
    y0, t = torch.full((1,), 2.0, dtype=D), torch.tensor([0.0, 2.0], dtype=D)

    def field(lam):
        return lambda t, y: lam * (y - torch.cos(t)) - torch.sin(t)

    for lam0 in (-50.0, -500.0, -5000.0):
        for method in ("dopri5", "tsit5", "bosh3", "radau_iia5"):
            row = []
            for mode in ("direct", "checkpoint", "adjoint"):
                lam = torch.tensor(lam0, dtype=D, requires_grad=True)
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always", odenet.StabilityWarning)
                    sol = odenet.solve(field(lam), y0, t, method=method, rtol=1e-6, atol=1e-9,
                                       sensitivity=mode)  # fmt: skip
                    (g,) = torch.autograd.grad(sol.ys[-1, 0], lam)
                warned = any(issubclass(w.category, odenet.StabilityWarning) for w in seen)
                row.append(f"{mode} {float(g):.3g}{' (warned)' if warned else ''}")
            print(f"λ = {lam0:g}\t{method}\t" + "\t".join(row))
        hs: list[float] = []

        def log_step(kind, t_, y, dt, hs=hs):
            if kind == "accept":
                hs.append(float(dt))

        sol = odenet.solve(field(lam0), y0, t, method="dopri5", rtol=1e-6, atol=1e-9,
                           callback=log_step)  # fmt: skip
        r = np.abs(stability_function("dopri5")(lam0 * np.array(hs)))
        err = float(sol.ys[-1, 0]) - math.cos(2.0)
        print(f"λ = {lam0:g}\tdopri5\t{len(hs)} accepted steps, Σ log|R(hλ)| = "
              f"{np.log(r).sum():.1f}, max |R| {r.max():.2f}, |R| > 1 on "
              f"{100 * (r > 1).mean():.0f} %, end error {err:.2g}")  # fmt: skip


CLAIMS = {
    f.__name__: f
    for f in (
        adams_vs_dopri5,
        radau3_vs_radau5,
        kvaerno5_without_kappa,
        kvaerno3_newton,
        trapezoid_estimates,
        e5_isoutofdomain,
        implicit_adams_jump,
        sdirk4_jump,
        low_order_jump,
        adjoint_fixed_stiff,
        explicit_adams_growth,
        bdf_round_off_test,
        jump_t_float32,
        explicit_stiff_gradients,
    )
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("claims", nargs="*", help=f"any of {', '.join(CLAIMS)} (default: all)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.claims) - set(CLAIMS))
    if unknown:
        ap.error(f"unknown claims {unknown}; choose from {list(CLAIMS)}")
    for name in args.claims or CLAIMS:
        print(f"## {name}")
        CLAIMS[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
