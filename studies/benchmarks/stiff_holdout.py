"""The stiff must-hold of issue 14 on stiff problems nobody tuned on (a hold-out sweep).

The error-safety constants of the DIRK pairs (``tableau.error_safety``), radau_iia3's
``κ = 8·rtol^(−1/8)`` and the DIRK Newton threshold were chosen on the visible set
(:data:`odenet.problems.STIFF_SUITE`: Robertson [0, 1e5], Van der Pol μ = 1000, HIRES,
the Oregonator, the 1-D Brusselator).  This study runs every adaptive stiff method on
problems from the standard test sets that none of them was tuned on, with the machinery
of ``stiff_accuracy.py`` (per-cell time limit, step budget, verdicts ``pass`` / ``fail``
/ ``LOOSE`` / ``SILENT`` / ``timeout``, cells appended to a JSON-lines file):

=====================  =============================================================
``kaps``               Kaps' singular perturbation problem, ε = 1e-6 (:func:`odenet.
                       problems.kaps`, Hairer & Wanner II, Sec. VI.3); closed form.
``prothero_robinson``  ``y' = λ(y − sin t) + cos t`` (:func:`odenet.problems.
_1e4, _1e6``           prothero_robinson`), λ = −1e4 and −1e6 on [0, 10]; closed form.
``linear_nonnormal``   ``y' = A y``, ``A = −(D + N)`` with ``D`` eigenvalues 1 … 1e6
                       (log-spaced, n = 8) and a strictly upper ``N`` of size 1e3: a
                       stiff non-normal system (transient growth ≈ 1e3·‖y0‖) on
                       [0, 5]; closed form ``expm(A t) y0``.
``e5``                 E5 (Enright, Hull & Lindberg, BIT 15 (1975), stiff DETEST
                       class E; Bari test set ``e5``): chemical pyrolysis on [0, 1e13]
                       with concentrations down to 1e-22 — one absolute floor per
                       component (below).  Published reference at 1e13 (Bari).
``pollution``          POLL (Verwer, SIAM J. Sci. Comput. 15 (1994); Bari test set
                       ``pollu``): 20 species, 25 reactions, [0, 60].  Published
                       reference at 60 (Bari).
``akzo_nobel``         Chemical Akzo Nobel (Bari test set ``chemakzo``) in its ODE
                       form: the index-1 algebraic equation ``y6 = Ks·y1·y4`` is
                       substituted, leaving 5 ODEs on [0, 180].  Published reference
                       at 180 (Bari, y1 … y5).
``robertson_1e11``     Robertson on [0, 1e11] (Bari ``rober``'s span; the classical
                       failure by negative concentrations); floors 1e-8 / 1e-14 /
                       1e-8 so that y1 ≈ 2e-8 and y2 ≈ 8e-14 at the end count.
                       Published reference at 1e11 (Bari).
``van_der_pol_1e6``    Van der Pol in Hairer's scaled form (VDPOL, Hairer & Wanner
                       II, Sec. IV.10) ``y2' = ((1 − y1²) y2 − y1)/ε``, ε = 1e-6,
                       y0 = (2, 0), [0, 2] (Bari ``vdpol`` is the same problem
                       unscaled, μ = 1e3 on [0, 2000]).  Published reference at 2:
                       Hairer's (1.706167732170483, −0.8928097010247975).
=====================  =============================================================

Reference: the closed form where there is one; otherwise scipy Radau at rtol 1e-12
with atol = the problem's floors × 1e-10, checked against scipy BDF at the same
tolerances and against the published value (``python stiff_holdout.py --check-refs``
prints the three-way agreement; a problem whose references disagree by more than
1e-7 in the error measure is not used).

Error measure and tolerance as in ``stiff_accuracy.py``: ``atol = floors·rtol`` and
``max_i |y_i − ref_i| / (floor_i + |ref_i|)`` at the final time.  Each method gets
``max_steps = max(--min-steps, --budget × scipy Radau's steps)``.

    python studies/benchmarks/stiff_holdout.py --check-refs
    python studies/benchmarks/stiff_holdout.py --rtols 1e-3,1e-6 --timeout 60
    python studies/benchmarks/stiff_holdout.py --report
    python studies/benchmarks/stiff_holdout.py --scipy --problems kaps --rtols 1e-6
    python studies/benchmarks/stiff_holdout.py --trajectory --problems kaps \
        --methods radau_iia5 --rtols 1e-3     # the error at 20 times, beside scipy Radau's

Cells go to ``results/stiff_holdout.jsonl``; the committed table is
``stiff_holdout_results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).parent))
from stiff import run_scipy
from stiff_accuracy import RTOLS, sweep, sweep_options

from odenet import problems as P

METHODS = (
    "radau_iia3",
    "radau_iia5",
    "radau_iia9",
    "kvaerno3",
    "kvaerno5",
    "sdirk4",
    "trbdf2",
    "bdf",
    "ndf",
)
OUT = Path(__file__).parent / "results" / "stiff_holdout.jsonl"

# --- the problems -------------------------------------------------------------------


def prothero_robinson(lam: float) -> P.Problem:
    p = P.prothero_robinson(lam=lam, t1=10.0)
    return dataclasses.replace(p, name=f"prothero_robinson_{-lam:.0e}")


def linear_nonnormal(n: int = 8, t1: float = 5.0) -> P.Problem:
    """``y' = −(D + N) y`` with eigenvalues ``−1 … −1e6`` and a non-normal coupling."""
    d = np.logspace(0, 6, n)
    N = np.triu(np.full((n, n), 1e3), 1)
    return dataclasses.replace(
        P._linear(
            -(np.diag(d) + N),
            np.ones(n),
            (0.0, t1),
            "linear_nonnormal",
            "stiff non-normal linear system; exact expm",
            stiff=True,
        ),
        atol_ratio=1e-3,
    )


def _with_reference(p: P.Problem, published: np.ndarray | None) -> P.Problem:
    """``p`` whose ``exact`` is the checked scipy reference at its final time."""

    def exact(t):
        t = np.asarray(t, dtype=np.float64)
        if not np.allclose(t, p.span[1], rtol=1e-12, atol=0):
            raise ValueError("the hold-out references exist at the final time only")
        radau = scipy_reference(p.name, second=False)["Radau"]
        return np.repeat(radau[None], t.shape[0], axis=0)

    out = dataclasses.replace(p, exact=exact)
    PUBLISHED[p.name] = published
    return out


PUBLISHED: dict[str, np.ndarray | None] = {}


def e5() -> P.Problem:
    A, B, C, M = 7.89e-10, 1.1e7, 1.13e3, 1e6

    def rates(y):
        p1, p2, p3, p4 = A * y[0], B * y[0] * y[2], M * C * y[1] * y[2], C * y[3]
        return [-p1 - p2, p1 - p3, p1 - p2 - p3 + p4, p2 - p4]

    f, f_numpy = P._twin(rates)
    # floors: 1e-3 of each component's peak over [0, 1e13] (measured with scipy Radau:
    # y1 1.76e-3, y2 1.46e-10, y3 8.3e-12, y4 1.38e-10)
    return _with_reference(
        P.Problem(
            f=f,
            y0=[1.76e-3, 0.0, 0.0, 0.0],
            span=(0.0, 1e13),
            name="e5",
            description="E5 chemical pyrolysis (Enright–Hull–Lindberg), [0, 1e13]",
            stiff=True,
            f_numpy=f_numpy,
            atol_ratio=np.array([1.76e-6, 1.46e-13, 8.3e-15, 1.38e-13]),
        ),
        np.array([0.1152903278711829e-290, 0.8867655517642120e-22, 0.8854814626268838e-22, 0.0]),
    )


_POLL_K = (
    0.35, 0.266e2, 0.123e5, 0.86e-3, 0.82e-3, 0.15e5, 0.13e-3, 0.24e5, 0.165e5, 0.9e4,
    0.22e-1, 0.12e5, 0.188e1, 0.163e5, 0.48e7, 0.35e-3, 0.175e-1, 0.1e9, 0.444e12, 0.124e4,
    0.21e1, 0.578e1, 0.474e-1, 0.178e4, 0.312e1,
)  # fmt: skip


def _poll_rates(y):
    k = _POLL_K
    r = [
        k[0] * y[0], k[1] * y[1] * y[3], k[2] * y[4] * y[1], k[3] * y[6], k[4] * y[6],
        k[5] * y[6] * y[5], k[6] * y[8], k[7] * y[8] * y[5], k[8] * y[10] * y[1],
        k[9] * y[10] * y[0], k[10] * y[12], k[11] * y[9] * y[1], k[12] * y[13],
        k[13] * y[0] * y[5], k[14] * y[2], k[15] * y[3], k[16] * y[3], k[17] * y[15],
        k[18] * y[15], k[19] * y[16] * y[5], k[20] * y[18], k[21] * y[18],
        k[22] * y[0] * y[3], k[23] * y[18] * y[0], k[24] * y[19],
    ]  # fmt: skip
    r = [None, *r]  # r[1] … r[25] as in Verwer's paper and the test set
    return [
        -r[1] - r[10] - r[14] - r[23] - r[24] + r[2] + r[3] + r[9] + r[11] + r[12] + r[22]
        + r[25],
        -r[2] - r[3] - r[9] - r[12] + r[1] + r[21],
        -r[15] + r[1] + r[17] + r[19] + r[22],
        -r[2] - r[16] - r[17] - r[23] + r[15],
        -r[3] + 2 * r[4] + r[6] + r[7] + r[13] + r[20],
        -r[6] - r[8] - r[14] - r[20] + r[3] + 2 * r[18],
        -r[4] - r[5] - r[6] + r[13],
        r[4] + r[5] + r[6] + r[7],
        -r[7] - r[8],
        -r[12] + r[7] + r[9],
        -r[9] - r[10] + r[8] + r[11],
        r[9],
        -r[11] + r[10],
        -r[13] + r[12],
        r[14],
        -r[18] - r[19] + r[16],
        -r[20],
        r[20],
        -r[21] - r[22] - r[24] + r[23] + r[25],
        -r[25] + r[24],
    ]  # fmt: skip


def pollution() -> P.Problem:
    f, f_numpy = P._twin(_poll_rates)
    y0 = np.zeros(20)
    y0[[1, 3, 6, 7, 8, 16]] = 0.2, 0.04, 0.1, 0.3, 0.01, 0.007
    published = np.array([
        0.5646255480022769e-1, 0.1342484130422339, 0.4139734331099427e-8,
        0.5523140207484359e-2, 0.2018977262302196e-6, 0.1464541863493966e-6,
        0.7784249118997964e-1, 0.3245075353396018, 0.7494013383880406e-2,
        0.1622293157301561e-7, 0.1135863833257075e-7, 0.2230505975721359e-2,
        0.2087162882798630e-3, 0.1396921016840158e-4, 0.8964884856898295e-2,
        0.4352846369330103e-17, 0.6899219696263405e-2, 0.1007803037365946e-3,
        0.1772146513969984e-5, 0.5682943292316392e-4,
    ])  # fmt: skip
    return _with_reference(
        P.Problem(
            f=f,
            y0=y0,
            span=(0.0, 60.0),
            name="pollution",
            description="POLL air pollution kinetics (Verwer 1994), 20 species, [0, 60]",
            stiff=True,
            f_numpy=f_numpy,
            # the test set's atol for POLL is the rtol itself (concentrations in ppm);
            # 1e-6 of it keeps the small radicals (1e-7) in the relative range
            atol_ratio=1e-6,
        ),
        published,
    )


# Bari's chemakzo reference at t = 180 (PSIDE, Cray C90, rtol = atol = 1e-19), y1 … y5
_AKZO_REFERENCE = np.array([
    0.1150794920661702, 0.1203831471567715e-2, 0.1611562887407974, 0.3656156421249283e-3,
    0.1708010885264404e-1,
])  # fmt: skip


def akzo_nobel() -> P.Problem:
    k1, k2, k3, k4, K, klA, Ks, pCO2, H = 18.7, 0.58, 0.09, 0.42, 34.4, 3.3, 115.83, 0.9, 737.0

    def rates(y):
        y6 = Ks * y[0] * y[3]  # the algebraic equation of the DAE, substituted
        sq = y[1] ** 0.5
        r1 = k1 * y[0] ** 4 * sq
        r2 = k2 * y[2] * y[3]
        r3 = k2 / K * y[0] * y[4]
        r4 = k3 * y[0] * y[3] ** 2
        r5 = k4 * y6**2 * sq
        fin = klA * (pCO2 / H - y[1])
        return [
            -2 * r1 + r2 - r3 - r4,
            -0.5 * r1 - r4 - 0.5 * r5 + fin,
            r1 - r2 + r3,
            -r2 + r3 - 2 * r4,
            r2 - r3 + r5,
        ]

    f, f_numpy = P._twin(rates)
    return _with_reference(
        P.Problem(
            f=f,
            y0=[0.444, 0.00123, 0.0, 0.007, 0.0],
            span=(0.0, 180.0),
            name="akzo_nobel",
            description="Chemical Akzo Nobel (Bari test set), ODE form, [0, 180]",
            stiff=True,
            f_numpy=f_numpy,
            atol_ratio=1e-6,
        ),
        _AKZO_REFERENCE,
    )


def robertson_1e11() -> P.Problem:
    p = P.robertson(t1=1e11)
    return _with_reference(
        dataclasses.replace(p, name="robertson_1e11", atol_ratio=np.array([1e-8, 1e-14, 1e-8])),
        np.array([0.2083340149701255e-7, 0.8333360770334713e-13, 0.9999999791665050]),
    )


def van_der_pol_1e6() -> P.Problem:
    eps = 1e-6

    def rates(y):
        return [y[1], ((1 - y[0] ** 2) * y[1] - y[0]) / eps]

    f, f_numpy = P._twin(rates)
    return _with_reference(
        P.Problem(
            f=f,
            y0=[2.0, 0.0],
            span=(0.0, 2.0),
            name="van_der_pol_1e6",
            description="Van der Pol, scaled form, ε = 1e-6 (Hairer VDPOL), [0, 2]",
            stiff=True,
            f_numpy=f_numpy,
            # y2 ≈ −0.67 on the slow branches, ~1e6 in the jumps
            atol_ratio=1e-3,
        ),
        np.array([0.1706167732170483e1, -0.8928097010247975]),
    )


HOLDOUT = {
    "kaps": lambda: P.get_problem("kaps"),
    "prothero_robinson_1e4": lambda: prothero_robinson(-1e4),
    "prothero_robinson_1e6": lambda: prothero_robinson(-1e6),
    "linear_nonnormal": linear_nonnormal,
    "e5": e5,
    "pollution": pollution,
    "akzo_nobel": akzo_nobel,
    "robertson_1e11": robertson_1e11,
    "van_der_pol_1e6": van_der_pol_1e6,
}


@functools.cache
def get(name: str) -> P.Problem:
    return HOLDOUT[name]()


def any_problem(name: str) -> tuple[P.Problem, object]:
    """``(problem, floors)`` for a problem of the stiff set (``P.STIFF_SUITE``'s floor) or
    of any hold-out set (``stiff_holdout.py`` … ``stiff_holdout15.py``, its
    ``atol_ratio``), by name: ``atol = floors·rtol``."""
    if name in P.STIFF_SUITE:
        return P.get_problem(name), P.STIFF_SUITE[name]
    # importing the further sets registers their problems in HOLDOUT
    import stiff_holdout2  # noqa: F401
    import stiff_holdout3  # noqa: F401
    import stiff_holdout4  # noqa: F401
    import stiff_holdout5  # noqa: F401
    import stiff_holdout6  # noqa: F401
    import stiff_holdout7  # noqa: F401
    import stiff_holdout8  # noqa: F401
    import stiff_holdout9  # noqa: F401
    import stiff_holdout10  # noqa: F401
    import stiff_holdout11  # noqa: F401
    import stiff_holdout12  # noqa: F401
    import stiff_holdout13  # noqa: F401
    import stiff_holdout14  # noqa: F401
    import stiff_holdout15  # noqa: F401

    if name not in HOLDOUT:
        known = sorted(P.STIFF_SUITE) + sorted(HOLDOUT)
        raise SystemExit(f"unknown problem {name!r}; known: {', '.join(known)}")
    prob = get(name)
    return prob, prob.atol_ratio


def scipy_end(
    p: P.Problem, rtol: float, method: str = "Radau", atol_rtol: float | None = None, **kw
) -> np.ndarray:
    """The end state of scipy's ``method`` on ``p`` at ``rtol``, ``atol = floors·atol_rtol``
    (default ``atol_rtol = rtol``; ``kw`` goes to ``solve_ivp``); a failed solve raises
    ReferenceSolutionError."""
    atol_rtol = rtol if atol_rtol is None else atol_rtol
    r = solve_ivp(
        p.numpy_field(),
        p.span,
        p.y0,
        method=method,
        rtol=rtol,
        atol=np.broadcast_to(p.atol_ratio * atol_rtol, p.y0.shape),
        **kw,
    )
    if not r.success:
        raise P.ReferenceSolutionError(f"{p.name}: scipy {method} at rtol {rtol:g}: {r.message}")
    return r.y[:, -1]


def mixed_error(p: P.Problem, y, ref) -> float:
    """``max_i |y_i − ref_i| / (floor_i + |ref_i|)`` with the problem's floors."""
    return float(np.max(np.abs(np.asarray(y) - ref) / (p.atol_ratio + np.abs(ref))))


def trajectory_errors(p: P.Problem, method: str, rtol: float, points: int = 20) -> dict:
    """The mixed error (:func:`mixed_error`) of ``method`` — odenet's, or ``"scipy Radau"``
    — at ``points`` equally spaced times of the span (the last is the end) against scipy
    Radau at rtol 1e-12, atol floors·1e-10 there: whether an end-point verdict (LOOSE)
    is the solver's accuracy or a point where the other code is luckier than its own
    curve.  Returns ``{"times": [points], "errors": [points]}``."""
    ts = np.linspace(p.span[0], p.span[1], points + 1)[1:]
    fn = p.numpy_field()
    # its own reference solve: a hold-out problem's `solution` exists at the end only, and
    # P.reference_solution's one atol ignores the per-component floors (E5's are 1e-15)
    ref = solve_ivp(
        fn, p.span, p.y0, method="Radau", rtol=1e-12, atol=p.atol_ratio * 1e-10, t_eval=ts
    ).y.T
    atol = np.broadcast_to(np.asarray(p.atol_ratio) * rtol, p.y0.shape).copy()
    if method == "scipy Radau":
        ys = solve_ivp(fn, p.span, p.y0, method="Radau", rtol=rtol, atol=atol, t_eval=ts).y.T
    else:
        import odenet

        t = torch.tensor(np.r_[p.span[0], ts], dtype=torch.float64)
        sol = odenet.solve(
            p.f, torch.as_tensor(p.y0, dtype=torch.float64), t, method=method, rtol=rtol,
            atol=torch.as_tensor(atol), max_steps=200_000,
        )  # fmt: skip
        ys = sol.ys.numpy()[1:]
    errors = [mixed_error(p, y, r) for y, r in zip(ys, ref, strict=True)]
    return {"times": ts.tolist(), "errors": errors}


def both_fields(p: P.Problem) -> tuple[np.ndarray, np.ndarray]:
    """``(f, f_numpy)`` of ``p`` at one point off the initial state, t = 0.37·t1: the torch
    field odenet solves and the numpy twin scipy's references use must be one problem."""
    y = p.y0 + 0.01 * np.cos(np.arange(p.y0.size))
    t = 0.37 * p.span[1]
    ours = p.f(torch.tensor(t, dtype=torch.float64), torch.as_tensor(y)).numpy()
    return ours, p.numpy_field()(t, y)


def per_sample_field(p: P.Problem):
    """``f(t [B], y [B, n]) -> [B, n]``: ``p``'s field for a per-sample batch.  The
    hold-out fields index ``y[i]`` and are for one system, so a batch runs them row by
    row (a check of the batched solve, not of its speed)."""

    def f(t, y):
        t = torch.as_tensor(t, dtype=y.dtype).expand(y.shape[0])
        return torch.stack([p.f(t[i], y[i]) for i in range(y.shape[0])])

    return f


# Problems whose second reference is LSODA's from the start: scipy's BDF at rtol 1e-12
# does not finish them (stiff_holdout5's detest_f5: order 1, steps of ~5e-10 at its
# equilibrium, t ≈ 0.4 of 100 after a minute)
SECOND_IS_LSODA: set[str] = set()


@functools.cache
def scipy_reference(name: str, second: bool = True) -> dict[str, np.ndarray]:
    """The final state by scipy Radau and a second method (``"BDF"``: BDF, or LSODA
    where BDF fails or is listed in :data:`SECOND_IS_LSODA`) at rtol 1e-12, atol =
    floors·1e-10.  ``second=False``: Radau only (what a sweep needs; BDF at 1e-12 takes
    minutes on stiff_holdout3's BEAM)."""
    p = _raw(name)
    if not second:
        return {"Radau": scipy_end(p, 1e-12, atol_rtol=1e-10)}
    out = dict(scipy_reference(name, second=False))
    try:
        if name in SECOND_IS_LSODA:
            raise P.ReferenceSolutionError("BDF does not finish this problem")
        out["BDF"] = scipy_end(p, 1e-12, "BDF", atol_rtol=1e-10)
    except P.ReferenceSolutionError:
        out["BDF"] = scipy_end(p, 1e-12, "LSODA", atol_rtol=1e-10)
    return out


def _raw(name: str) -> P.Problem:
    # the problem before _with_reference replaced its `exact` (which reads this cache)
    p = get(name)
    return dataclasses.replace(p, exact=None)


def check_refs(names):
    """Agreement of the references, in the error measure (floor + |ref|): the lines of a
    markdown table, yielded one problem at a time (a slow problem does not hold back the
    rows already computed)."""
    yield "| problem | Radau vs BDF | Radau vs published | closed form vs Radau |"
    yield "|---|---|---|---|"
    for name in names:
        p = get(name)
        floor = p.atol_ratio

        def dist(a, b, floor=floor):
            return float(np.max(np.abs(a - b) / (floor + np.abs(b))))

        refs = scipy_reference(name) if p.exact is None or name in PUBLISHED else None
        if name in PUBLISHED:
            pub = PUBLISHED[name]
            # stiff_holdout2's D4 and Allen–Cahn have no published value (None)
            n = 0 if pub is None else len(pub)
            vs_pub = "-" if pub is None else f"{dist(refs['Radau'][:n], pub):.1e}"
            yield f"| {name} | {dist(refs['Radau'], refs['BDF']):.1e} | {vs_pub} | - |"
        else:
            exact = p.solution([p.span[1]])[0]
            radau = scipy_end(p, 1e-12, atol_rtol=1e-10)
            yield f"| {name} | - | - | {dist(radau, exact):.1e} |"


def register(problems: dict, out: Path, rtols=RTOLS):
    """Add a further hold-out set's ``problems`` to :data:`HOLDOUT` (the reference, the
    check and the sweep look them up there) and return that set's ``main``: this
    module's, with the set's problems, every adaptive stiff method, ``rtols`` and ``out``
    as defaults; any option given overrides them."""
    from stiff_accuracy import stiff_methods

    HOLDOUT.update(problems)

    def set_main(argv=None) -> int:
        defaults = [
            "--problems", ",".join(problems),
            "--methods", ",".join(stiff_methods()),
            "--rtols", ",".join(f"{r:.0e}" for r in rtols),
            "--out", str(out),
        ]  # fmt: skip
        return main(defaults + list(sys.argv[1:] if argv is None else argv))

    return set_main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sweep_options(ap, list(HOLDOUT), METHODS, timeout=60.0, out=OUT, rtols=RTOLS)
    ap.add_argument("--check-refs", action="store_true")
    ap.add_argument(
        "--scipy", action="store_true", help="only scipy Radau, BDF, LSODA's errors per cell"
    )
    ap.add_argument(
        "--trajectory",
        action="store_true",
        help="per cell, the error at 20 times over the span beside scipy Radau's (the "
        "largest and the end's): is a LOOSE end point the solver or scipy's luck",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = args.problems.split(",")
    if args.check_refs:
        for line in check_refs(names):
            print(line, flush=True)
        return 0
    if args.trajectory:
        print("| problem | rtol | solver | largest error over 20 times (at t) | at the end |")
        print("|---|---|---|---|---|")
        for name in names:
            p = get(name)
            for rtol in (float(x) for x in args.rtols.split(",")):
                for m in [*args.methods.split(","), "scipy Radau"]:
                    r = trajectory_errors(p, m, rtol)
                    i = int(np.argmax(r["errors"]))
                    print(
                        f"| {name} | {rtol:.0e} | {m} | {r['errors'][i]:.2e} "
                        f"({r['times'][i]:.3g}) | {r['errors'][-1]:.2e} |",
                        flush=True,
                    )
        return 0
    if args.scipy:
        print("| problem | rtol | scipy Radau | scipy BDF | scipy LSODA |\n|---|---|---|---|---|")
        for name in names:
            p = get(name)
            for rtol in (float(x) for x in args.rtols.split(",")):
                errs = [
                    run_scipy(p, m, rtol, p.atol_ratio)["err"] for m in ("Radau", "BDF", "LSODA")
                ]
                print(f"| {name} | {rtol:.0e} | " + " | ".join(f"{e:.2e}" for e in errs) + " |")
        return 0
    return sweep(args, get, names)


if __name__ == "__main__":
    sys.exit(main())
