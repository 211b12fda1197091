"""A fifth stiff hold-out set for the must-hold of issue 14: the stiff DETEST problems
of Enright, Hull & Lindberg ("Comparing numerical methods for stiff systems of ODEs",
BIT 15 (1975) 10–48) that no other set has (B5 and D4 are in ``stiff_holdout2.py``, E5
in ``stiff_holdout.py``, F4 is the visible set's Oregonator): 26 small problems, linear
and nonlinear, with real, complex, growing and widely spread eigenvalues:

=============  ========================================================================
``detest_a1``  ``y' = diag(−0.5, −1, −100, −90) y``, y(0) = 1, [0, 20].  Closed form.
``detest_a2``  A chain (circuit theory): ``y1' = −1800 y1 + 900 y2``, ``yi' = y(i−1) −
               2 yi + y(i+1)`` (i = 2 … 8), ``y9' = 1000 y8 − 2000 y9 + 1000``, y(0) =
               0, [0, 120]; λ = −0.10 … −3.8, −1801, −2001; slow approach to yi = i/10.
               Closed form (``y* + e^{At}(y0 − y*)``).
``detest_a3``  Upper triangular: ``y1' = −1e4 y1 + 100 y2 − 10 y3 + y4``, ``y2' = −1e3 y2
               + 10 y3 − 10 y4``, ``y3' = −y3 + 10 y4``, ``y4' = −0.1 y4``, y(0) = 1,
               [0, 20]; λ = −1e4, −1e3, −1, −0.1, non-normal (y3 grows to 7.8).
``detest_a4``  ``yi' = −i⁵ yi``, i = 1 … 10, y(0) = 1, [0, 1]; λ from −1 to −1e5.
``detest_b1``  ``y1' = −y1 + y2``, ``y2' = −100 y1 − y2``, ``y3' = −100 y3 + y4``, ``y4' =
               −1e4 y3 − 100 y4``, y(0) = (1, 0, 1, 0), [0, 20]; λ = −1 ± 10i, −100 ±
               100i.
``detest_b2``  ``y1' = −10 y1 + α y2``, ``y2' = −α y1 − 10 y2``, ``y3..6' = −4, −1, −0.5,
  … ``_b4``    −0.1 × y3..6``, y(0) = 1, [0, 20]; λ = −10 ± αi with α = 3, 8, 25 (B5,
               α = 100, is ``stiff_holdout2.py``'s).
``detest_c1``  ``y1' = −y1 + y2² + y3² + y4²``, ``y2' = −10 y2 + 10 (y3² + y4²)``, ``y3' =
               −40 y3 + 40 y4²``, ``y4' = −100 y4 + 2``, y(0) = 1, [0, 20]: the fast
               components drive the slow ones (J triangular, −1, −10, −40, −100).
``detest_c2``  ``y1' = −y1 + 2``, ``y2' = −10 y2 + β y1²``, ``y3' = −40 y3 + 4β (y1² +
  … ``_c5``    y2²)``, ``y4' = −100 y4 + 10β (y1² + y2² + y3²)``, y(0) = 1, [0, 20], β =
               0.1, 1, 10, 20: the slow component drives the fast ones (y4 → 420 for
               β = 10, 37128 for β = 20).
``detest_d1``  Nuclear reactor: ``y1' = 0.2 (y2 − y1)``, ``y2' = 10 y1 − (60 − y3/8) y2 +
               y3/8``, ``y3' = 1``, y(0) = 0, [0, 400]; λ = 0, −0.17, −60 at the start.
``detest_d2``  Chemistry (a scaled Robertson): ``y1' = −0.04 y1 + 0.01 y2 y3``, ``y2' =
               400 y1 − 100 y2 y3 − 3000 y2²``, ``y3' = 30 y2²``, y(0) = (1, 0, 0),
               [0, 40].
``detest_d3``  Chemistry: ``y1' = y3 − 100 y1 y2``, ``y2' = y3 + 2 y4 − 100 y1 y2 − 2e4
               y2²``, ``y3' = −y3 + 100 y1 y2``, ``y4' = −y4 + 1e4 y2²``, y(0) = (1, 1,
               0, 0), [0, 20]; λ = −4e4, −101, 0, 0 at the start.
``detest_d5``  Reactor kinetics: ``s = 0.01 + y1 + y2``, ``y1' = 0.01 − (1 + (y1 + 1000)
               (y1 + 1)) s``, ``y2' = 0.01 − (1 + y2²) s``, y(0) = 0, [0, 100]; λ =
               −1012, −0.0099.
``detest_d6``  Insulator physics: ``a = −y1 + 1e8 y3 (1 − y1)``, ``b = −10 y2 + 3e7 y3
               (1 − y2)``, ``y' = (a, b, −a − b)``, y(0) = (1, 0, 0), [0, 1]; λ = −3e7,
               y3 ≈ 6e-8.
``detest_e1``  Control theory, Γ = 100: ``y1' = y2``, ``y2' = y3``, ``y3' = y4``, ``y4' =
               (y1² − sin y1 − Γ⁴) y1 + (y2 y3/(y1² + 1) − 4Γ³) y2 + (1 − 6Γ²) y3 + (10
               e^{−y4²} − 4Γ) y4 + 1``, y(0) = 0, [0, 1]; λ = −64 ± 22i, −131 ± 69i;
               settles at y1 = 1e-8 with y2 … y4 at rounding level (≤ 2e-15).
``detest_e2``  Van der Pol, ``y1' = y2``, ``y2' = 5 (1 − y1²) y2 − y1``, y(0) = (2, 0),
               [0, 10] (about two cycles).
``detest_e3``  Physics: ``y1' = −(55 + y3) y1 + 65 y2``, ``y2' = 0.0785 (y1 − y2)``,
               ``y3' = 0.1 y1``, y(0) = (1, 1, 0), [0, 500]; λ = 0.0062 ± 0.0102i
               (growing) and −55 at the start.
``detest_e4``  Artificial, rotated: ``z = U y``, ``U = (𝟙𝟙ᵀ − 2I)/2`` (U = Uᵀ = U⁻¹),
               ``y' = U (g(z) − B z)``, ``g = ((z1² − z2²)/2, z1 z2, z3², z4²)``, ``B =
               [[−10, −10], [10, −10]] ⊕ 1000 ⊕ 0.01``, y(0) = (0, −2, −1, −1), [0,
               1000]; λ = 8 ± 10i (unstable), −2.0, −1002 at the start, −10 ± 10i, −1000
               and a slow −0.01 at the end (z = (−20, 20, 0, 0)).
``detest_f1``  Chemical kinetics, Arrhenius ``k = 0.006 e^{20.7 − 1.5e4/y1}``: ``y1' =
               1.3 (y3 − y1) + 1.04e4 k y2``, ``y2' = 1880 (y4 − y2 (1 + k))``, ``y3' =
               1752 − 269 y3 + 267 y1``, ``y4' = 0.1 + 320 y2 − 321 y4``, y(0) = (761,
               0, 600, 0.1), [0, 1000]; λ down to −2226, components 1e-5 … 1211.
``detest_f2``  Chemical kinetics: ``y1' = −y1 − y1 y2 + 294 y2``, ``y2' = y1 (1 − y2)/98 −
               3 y2``, y(0) = (1, 0), [0, 240].
``detest_f3``  Enzyme kinetics, ``r = 1e7 y1 y2``, ``s = 1e7 y2 y5``: ``y1' = −r + 10
               y3``, ``y2' = −r − s + 10 y3 + 10 y4``, ``y3' = r − 1.001e4 y3 + 1e-3
               y4``, ``y4' = 1e4 y3 − 10.001 y4 + s``, ``y5' = 10 y4 − s``, y(0) =
               (4e-6, 1e-6, 0, 0, 0), [0, 100]; concentrations 8e-14 … 4e-6.
``detest_f5``  Chemical kinetics, ``r = 3e11 y1 y2``, ``q = 9e11 y1 y3``: ``y1' = −r −
               q + 1.2e8 y4``, ``y2' = −r + 2e7 y4``, ``y3' = −q + 1e8 y4``, ``y4' = r +
               q − 1.2e8 y4``, y(0) = (3.365e-7, 8.261e-3, 1.642e-3, 9.38e-6), [0,
               100]; λ = −4.1e9 at the start.
=============  ========================================================================

Sources read (facts only; the code here is ours): the problem files
``src/ca.usask/simlab/odeToJava/stiffDETest/A1.java`` … ``F5.java`` of odeToJava
(akroshko/odetojava) for the equations and constants, and that repository's
``referenceSolutions/stiff*Reference.txt`` (first line t0 and y(t0), second line t1 and
DETEST's end value) with its driver ``tests/StiffDETestSet.java`` for the initial values
and spans.  Cross-checked against Enright & Pryce's STDTST (ACM TOMS Algorithm 648,
1987) as transcribed in the DVODE_F90 demonstration program for the Toronto stiff test
set (routines IVALU, FCN, EVALU: the same equations, y(0), spans and end values), MATLAB
5's ``a2ode.m`` (A2) and D. Petcu's EpODE table of the stiff systems (classes A, B).
Discrepancies:

* C1: odeToJava's ``C1.java`` has ``y3³`` in ``y1'``; STDTST has ``y3²``, and the end
  value both give, y1(20) = 4.003223925456179e-4 = y2² + y3² + y4² at the steady state
  (y4 = 0.02, y3 = 4e-4, y2 = 4.0016e-4), holds only with the square (the cube gives
  4.0016e-4).  Here: ``y3²``.
* Petcu's table writes A2's constant as 10000 and B2 … B5's y(0) as (0, 1, 1, 1, 1, 1);
  STDTST, odeToJava and ``a2ode.m`` have 1000 (the end state yi ≈ i/10 is its steady
  state) and y(0) = 1.
* The 1975 paper itself was not read: the spans and initial values are STDTST's (1987)
  and odeToJava's, which agree (A2 120, A4 1, D1 400, D2 40, D3 20, D5 100, D6 1, E1 1,
  E2 10, E3 500, E4 1000, F1 1000, F2 240, F3 100, F5 100, the others 20).
* DETEST's end values for classes A and B are numerical, good to ~1e-13 absolute only
  (A1's y1 is e^{−10} to 1.4e-9 relative; A4's y3 is given as 1.9e-42 for e^{−243}); the
  closed forms here agree with them to 1.2e-10 or better in the error measure.

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``):
for classes A and B the closed form (``_linear_stiff``: eigenvectors or ``expm``); for C
… F scipy Radau at rtol 1e-12, atol = floors·1e-10, checked against scipy BDF and
against DETEST's end value (``--check-refs``).  Floors (``atol_ratio``): 1e-3 of each
component's peak over the span (scipy Radau at rtol 1e-10; values in the code; they
match STDTST's scaling weights, which are the same peaks to three digits), 1e-3 where
every component peaks at O(1).  They also keep the reference's atol above the rounding
noise of E1's y2 … y4 (estimated 1e-22 … 1e-18 after the transient) and of E4 (y ~ 20
enters ``1000 z3``: ~4e-12 in y'); a uniform atol (1e-18 on E1 at rtol 1e-8, 1e-14 on E4)
keeps scipy Radau stepping for minutes.

``detest_f5``'s second reference is LSODA's (``stiff_holdout.SECOND_IS_LSODA``): scipy
BDF at rtol 1e-12 stalls at order 1 with h ≈ 5e-10 on F5's equilibrium (reached by t ≈
1e-3; t = 0.4 of 100 after a minute, the same at rtol 1e-10; at 1e-9 it gets through;
LSODA at 1e-12 takes 0.1 s).

    python studies/benchmarks/stiff_holdout5.py --check-refs
    python studies/benchmarks/stiff_holdout5.py --rtols 1e-3,1e-6 --timeout 60
    python studies/benchmarks/stiff_holdout5.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``, bdf and ndf
included), rtol 1e-3 … 1e-8; cells go to ``results/stiff_holdout5.jsonl``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout2 import _linear_stiff
from stiff_holdout4 import _with_scipy_reference

from odenet import problems as P

# --- class A: linear, real eigenvalues ------------------------------------------------


def _affine_stiff(A, b, y0, t1, name, description) -> P.Problem:
    """``y' = A y + b`` with its closed form ``y* + e^{At}(y0 − y*)``, ``y* = −A⁻¹b``:
    the closed form of ``_linear_stiff`` for the shifted state, the field from the same
    ``A`` and ``b``."""
    A, b, y0 = (np.asarray(a, dtype=np.float64) for a in (A, b, y0))
    y_star = -np.linalg.solve(A, b)
    shifted = _linear_stiff(A, y0 - y_star, t1, name, description)
    At, bt = torch.as_tensor(A), torch.as_tensor(b)
    return dataclasses.replace(
        shifted,
        f=lambda t, y: At.to(y.dtype) @ y + bt.to(y.dtype),
        f_numpy=lambda t, y: A @ y + b,
        y0=y0,
        exact=lambda t: y_star + shifted.exact(t),
    )


def detest_a1() -> P.Problem:
    A = np.diag([-0.5, -1.0, -100.0, -90.0])
    return _linear_stiff(
        A, np.ones(4), 20.0, "detest_a1", "stiff DETEST A1, λ = −0.5, −1, −100, −90"
    )


def detest_a2() -> P.Problem:
    # a chain of nine: the first and last rows couple 900/1800 and 1000/2000, the inner
    # ones are the second difference; the constant 1000 drives it to y_i = i/10
    A = np.diag(-2.0 * np.ones(9)) + np.diag(np.ones(8), 1) + np.diag(np.ones(8), -1)
    A[0, :2] = -1800.0, 900.0
    A[8, 7:] = 1000.0, -2000.0
    b = np.zeros(9)
    b[8] = 1000.0
    p = _affine_stiff(A, b, np.zeros(9), 120.0, "detest_a2", "stiff DETEST A2 (circuit), [0, 120]")
    # 1e-3 of the peaks, y_i → i/10 from below (scipy Radau, rtol 1e-10: 0.1 … 0.9)
    return dataclasses.replace(p, atol_ratio=1e-4 * np.arange(1.0, 10.0))


def detest_a3() -> P.Problem:
    A = np.array([
        [-1e4, 100.0, -10.0, 1.0],
        [0.0, -1e3, 10.0, -10.0],
        [0.0, 0.0, -1.0, 10.0],
        [0.0, 0.0, 0.0, -0.1],
    ])  # fmt: skip
    p = _linear_stiff(
        A, np.ones(4), 20.0, "detest_a3", "stiff DETEST A3, triangular, λ = −1e4, −1e3, −1, −0.1"
    )
    # 1e-3 of the peaks (1, 1, 7.82, 1: y3 grows from 1 to 7.82 at t ≈ 2.45, then decays)
    return dataclasses.replace(p, atol_ratio=np.array([1e-3, 1e-3, 7.82e-3, 1e-3]))


def detest_a4() -> P.Problem:
    A = np.diag(-(np.arange(1.0, 11.0) ** 5))
    return _linear_stiff(A, np.ones(10), 1.0, "detest_a4", "stiff DETEST A4, λ = −i⁵, i = 1 … 10")


# --- class B: linear, non-real eigenvalues --------------------------------------------


def detest_b1() -> P.Problem:
    A = np.zeros((4, 4))
    A[:2, :2] = [[-1.0, 1.0], [-100.0, -1.0]]
    A[2:, 2:] = [[-100.0, 1.0], [-1e4, -100.0]]
    p = _linear_stiff(
        A,
        np.array([1.0, 0.0, 1.0, 0.0]),
        20.0,
        "detest_b1",
        "stiff DETEST B1, λ = −1 ± 10i, −100 ± 100i",
    )
    # 1e-3 of the peaks (1, 8.59, 1, 32.2: y2 swings to −8.59 at t ≈ 0.15, y4 to −32.2 at
    # t ≈ 0.008)
    return dataclasses.replace(p, atol_ratio=np.array([1e-3, 8.59e-3, 1e-3, 3.22e-2]))


def detest_b(alpha: float, name: str) -> P.Problem:
    """B2 … B5: ``−10 ± α i`` and −4, −1, −0.5, −0.1 (B5, α = 100, is stiff_holdout2's)."""
    A = np.zeros((6, 6))
    A[:2, :2] = [[-10.0, alpha], [-alpha, -10.0]]
    A[2:, 2:] = np.diag([-4.0, -1.0, -0.5, -0.1])
    return _linear_stiff(
        A, np.ones(6), 20.0, name, f"stiff DETEST {name[-2:].upper()}, λ = −10 ± {alpha:g}i"
    )


# --- classes C–F: nonlinear (scipy references) ----------------------------------------


def _detest(name, rates, y0, t1, description, floors, published) -> P.Problem:
    """A nonlinear problem of the set: ``stiff_holdout4``'s twin fields and checked scipy
    Radau reference, with DETEST's end value (``published``, compared by
    ``--check-refs``)."""
    return _with_scipy_reference(rates, y0, t1, name, description, floors, published)


def detest_c1() -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3, y4 = y[0], y[1], y[2], y[3]
        return xp.stack([
            -y1 + y2 * y2 + y3 * y3 + y4 * y4,
            -10 * y2 + 10 * (y3 * y3 + y4 * y4),
            -40 * y3 + 40 * y4 * y4,
            -100 * y4 + 2,
        ])  # fmt: skip

    return _detest(
        "detest_c1", rates, np.ones(4), 20.0,
        "stiff DETEST C1, coupling from the fast components to the slow, [0, 20]",
        FLOORS["detest_c1"], PUBLISHED["detest_c1"],
    )  # fmt: skip


def detest_c(beta: float, name: str) -> P.Problem:
    """C2 … C5: coupling from the slow component to the fast ones, strength ``β``."""

    def rates(t, y, xp):
        y1, y2, y3, y4 = y[0], y[1], y[2], y[3]
        return xp.stack([
            -y1 + 2,
            -10 * y2 + beta * y1 * y1,
            -40 * y3 + 4 * beta * (y1 * y1 + y2 * y2),
            -100 * y4 + 10 * beta * (y1 * y1 + y2 * y2 + y3 * y3),
        ])  # fmt: skip

    return _detest(
        name, rates, np.ones(4), 20.0,
        f"stiff DETEST {name[-2:].upper()}, coupling slow → fast, β = {beta:g}, [0, 20]",
        FLOORS[name], PUBLISHED[name],
    )  # fmt: skip


def detest_d1() -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3 = y[0], y[1], y[2]
        return xp.stack([
            0.2 * (y2 - y1),
            10 * y1 - (60 - 0.125 * y3) * y2 + 0.125 * y3,
            xp.ones_like(y1),
        ])  # fmt: skip

    return _detest(
        "detest_d1", rates, np.zeros(3), 400.0,
        "stiff DETEST D1 (nuclear reactor), [0, 400]",
        FLOORS["detest_d1"], PUBLISHED["detest_d1"],
    )  # fmt: skip


def detest_d2() -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3 = y[0], y[1], y[2]
        return xp.stack([
            -0.04 * y1 + 0.01 * y2 * y3,
            400 * y1 - 100 * y2 * y3 - 3000 * y2 * y2,
            30 * y2 * y2,
        ])  # fmt: skip

    return _detest(
        "detest_d2", rates, [1.0, 0.0, 0.0], 40.0,
        "stiff DETEST D2 (chemistry, a scaled Robertson), [0, 40]",
        FLOORS["detest_d2"], PUBLISHED["detest_d2"],
    )  # fmt: skip


def detest_d3() -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3, y4 = y[0], y[1], y[2], y[3]
        r, s = 100 * y1 * y2, 1e4 * y2 * y2
        return xp.stack([y3 - r, y3 + 2 * y4 - r - 2 * s, r - y3, s - y4])

    return _detest(
        "detest_d3", rates, [1.0, 1.0, 0.0, 0.0], 20.0,
        "stiff DETEST D3 (chemistry), [0, 20]",
        FLOORS["detest_d3"], PUBLISHED["detest_d3"],
    )  # fmt: skip


def detest_d5() -> P.Problem:
    def rates(t, y, xp):
        y1, y2 = y[0], y[1]
        s = 0.01 + y1 + y2
        return xp.stack([
            0.01 - (1 + (y1 + 1000) * (y1 + 1)) * s,
            0.01 - (1 + y2 * y2) * s,
        ])  # fmt: skip

    return _detest(
        "detest_d5", rates, np.zeros(2), 100.0,
        "stiff DETEST D5 (reactor kinetics), [0, 100]",
        FLOORS["detest_d5"], PUBLISHED["detest_d5"],
    )  # fmt: skip


def detest_d6() -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3 = y[0], y[1], y[2]
        a = -y1 + 1e8 * y3 * (1 - y1)
        b = -10 * y2 + 3e7 * y3 * (1 - y2)
        return xp.stack([a, b, -a - b])

    return _detest(
        "detest_d6", rates, [1.0, 0.0, 0.0], 1.0,
        "stiff DETEST D6 (insulator physics), [0, 1]",
        FLOORS["detest_d6"], PUBLISHED["detest_d6"],
    )  # fmt: skip


def detest_e1(gamma: float = 100.0) -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3, y4 = y[0], y[1], y[2], y[3]
        y4p = (
            (y1 * y1 - xp.sin(y1) - gamma**4) * y1
            + (y2 * y3 / (y1 * y1 + 1) - 4 * gamma**3) * y2
            + (1 - 6 * gamma**2) * y3
            + (10 * xp.exp(-y4 * y4) - 4 * gamma) * y4
            + 1
        )
        return xp.stack([y2, y3, y4, y4p])

    return _detest(
        "detest_e1", rates, np.zeros(4), 1.0,
        "stiff DETEST E1 (control theory), Γ = 100, [0, 1]",
        FLOORS["detest_e1"], PUBLISHED["detest_e1"],
    )  # fmt: skip


def detest_e2() -> P.Problem:
    def rates(t, y, xp):
        y1, y2 = y[0], y[1]
        return xp.stack([y2, 5 * (1 - y1 * y1) * y2 - y1])

    return _detest(
        "detest_e2", rates, [2.0, 0.0], 10.0,
        "stiff DETEST E2, Van der Pol μ = 5, [0, 10]",
        FLOORS["detest_e2"], PUBLISHED["detest_e2"],
    )  # fmt: skip


def detest_e3() -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3 = y[0], y[1], y[2]
        return xp.stack([-(55 + y3) * y1 + 65 * y2, 0.0785 * (y1 - y2), 0.1 * y1])

    return _detest(
        "detest_e3", rates, [1.0, 1.0, 0.0], 500.0,
        "stiff DETEST E3 (physics), [0, 500]",
        FLOORS["detest_e3"], PUBLISHED["detest_e3"],
    )  # fmt: skip


def detest_e4() -> P.Problem:
    def rates(t, y, xp):
        # z = U y with U = (ones − 2 I)/2 (symmetric, U² = I); y' = U (g(z) − B z)
        half = 0.5 * (y[0] + y[1] + y[2] + y[3])
        z1, z2, z3, z4 = half - y[0], half - y[1], half - y[2], half - y[3]
        v = [
            0.5 * (z1 * z1 - z2 * z2) + 10 * z1 + 10 * z2,
            z1 * z2 - 10 * z1 + 10 * z2,
            z3 * z3 - 1000 * z3,
            z4 * z4 - 0.01 * z4,
        ]
        half_v = 0.5 * (v[0] + v[1] + v[2] + v[3])
        return xp.stack([half_v - v[0], half_v - v[1], half_v - v[2], half_v - v[3]])

    return _detest(
        "detest_e4", rates, [0.0, -2.0, -1.0, -1.0], 1000.0,
        "stiff DETEST E4 (artificial, rotated), [0, 1000]",
        FLOORS["detest_e4"], PUBLISHED["detest_e4"],
    )  # fmt: skip


def detest_f1() -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3, y4 = y[0], y[1], y[2], y[3]
        k = 6e-3 * xp.exp(20.7 - 1.5e4 / y1)
        return xp.stack([
            1.3 * (y3 - y1) + 1.04e4 * k * y2,
            1880 * (y4 - y2 * (1 + k)),
            1752 - 269 * y3 + 267 * y1,
            0.1 + 320 * y2 - 321 * y4,
        ])  # fmt: skip

    return _detest(
        "detest_f1", rates, [761.0, 0.0, 600.0, 0.1], 1000.0,
        "stiff DETEST F1 (chemical kinetics, Arrhenius), [0, 1000]",
        FLOORS["detest_f1"], PUBLISHED["detest_f1"],
    )  # fmt: skip


def detest_f2() -> P.Problem:
    def rates(t, y, xp):
        y1, y2 = y[0], y[1]
        return xp.stack([-y1 - y1 * y2 + 294 * y2, y1 * (1 - y2) / 98 - 3 * y2])

    return _detest(
        "detest_f2", rates, [1.0, 0.0], 240.0,
        "stiff DETEST F2 (chemical kinetics), [0, 240]",
        FLOORS["detest_f2"], PUBLISHED["detest_f2"],
    )  # fmt: skip


def detest_f3() -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3, y4, y5 = y[0], y[1], y[2], y[3], y[4]
        r12, r25 = 1e7 * y1 * y2, 1e7 * y2 * y5
        return xp.stack([
            -r12 + 10 * y3,
            -r12 - r25 + 10 * y3 + 10 * y4,
            r12 - 1.001e4 * y3 + 1e-3 * y4,
            1e4 * y3 - 10.001 * y4 + r25,
            10 * y4 - r25,
        ])  # fmt: skip

    return _detest(
        "detest_f3", rates, [4e-6, 1e-6, 0.0, 0.0, 0.0], 100.0,
        "stiff DETEST F3 (chemical kinetics, enzyme), [0, 100]",
        FLOORS["detest_f3"], PUBLISHED["detest_f3"],
    )  # fmt: skip


def detest_f5() -> P.Problem:
    def rates(t, y, xp):
        y1, y2, y3, y4 = y[0], y[1], y[2], y[3]
        r12, r13 = 3e11 * y1 * y2, 9e11 * y1 * y3
        return xp.stack([
            -r12 + 1.2e8 * y4 - r13,
            -r12 + 2e7 * y4,
            -r13 + 1e8 * y4,
            r12 - 1.2e8 * y4 + r13,
        ])  # fmt: skip

    return _detest(
        "detest_f5", rates, [3.365e-7, 8.261e-3, 1.642e-3, 9.38e-6], 100.0,
        "stiff DETEST F5 (chemical kinetics), [0, 100]",
        FLOORS["detest_f5"], PUBLISHED["detest_f5"],
    )  # fmt: skip


# DETEST's end values (the 'true' solutions of Enright & Pryce's STDTST, the same in
# odeToJava's referenceSolutions/stiff*Reference.txt)
PUBLISHED = {
    "detest_c1": [4.003223925456179e-04, 4.0016e-04, 4.0e-04, 2.0e-02],
    "detest_c2": [1.999999997938994, 3.999999990839974e-02, 4.001599991537078e-02,
                  4.003201271914461e-02],
    "detest_c3": [1.999999997939167, 3.999999990840744e-01, 4.159999990793773e-01,
                  4.333055990159567e-01],
    "detest_c4": [1.999999997938846, 3.999999990839318, 1.999999991637941e01,
                  4.199999965390368e02],
    "detest_c5": [1.999999997938846, 7.999999981678634, 1.359999993817714e02,
                  3.712799965967762e04],
    "detest_d1": [2.224222010616901e01, 2.711071334484136e01, 3.999999999999999e02],
    "detest_d2": [7.158270687193941e-01, 9.185534764557338e-02, 2.841637457458413e01],
    "detest_d3": [6.397604446889910e-01, 5.630850708287990e-03, 3.602395553110090e-01,
                  3.170647969903515e-01],
    "detest_d5": [-9.916420698713913e-01, 9.833363588544478e-01],
    "detest_d6": [8.523995440749948e-01, 1.476003981941319e-01, 5.773087333950041e-08],
    "detest_e1": [1.000000000000012e-08, -1.625323873316817e-19, 2.025953375595861e-17,
                  -1.853149807630002e-15],
    "detest_e2": [-1.158701266031984, 4.304698089780476e-01],
    "detest_e3": [4.253052197643089e-03, 5.317019548450387e-03, 2.627647748753926e01],
    "detest_e4": [1.999999977523654e01, -2.000000022476345e01, -2.247634567084293e-07,
                  2.247634567084293e-07],
    "detest_f1": [1.211129474696585e03, 1.271123619113051e-05, 1.208637804660361e03,
                  3.241981171933418e-04],
    "detest_f2": [3.912699122292088e-01, 1.329964166084866e-03],
    "detest_f3": [3.235910070806680e-13, 2.360679774997897e-07, 7.639319089351045e-14,
                  7.639319461070194e-07, 3.236067653908783e-06],
    "detest_f5": [1.713564284690712e-07, 3.713563071160676e-03, 6.189271785267793e-03,
                  9.545143571530929e-06],
}  # fmt: skip

# floors (atol_ratio): 1e-3 of each component's peak |y_i| over the span (scipy Radau,
# rtol 1e-10; the peaks are also STDTST's scaling weights), 1e-3 where all are O(1):
#   C1 1.02, 1.03, 1, 1; C2, C3 2, 1, 1, 1; C4 2, 4, 20, 420; C5 2, 8, 136, 3.71e4;
#   D1 22.2, 27.1, 400; D2 1, 0.365, 28.4; D3 1, 1, 0.36, 0.485; D5 0.992, 0.983;
#   D6 1, 0.148, 5.77e-8; E1 1.00e-8, 2.24e-7, 1.32e-5, 1.71e-3; E2 2.02, 7.64;
#   E3 1.63, 1.60, 26.3; E4 28.8, 29.5, 15.5, 16.3; F1 1.21e3, 0.0835, 1.21e3, 0.1;
#   F2 1, 2.53e-3; F3 4e-6, 1e-6, 3.89e-9, 7.64e-7, 3.24e-6;
#   F5 3.36e-7, 8.26e-3, 6.19e-3, 9.55e-6
FLOORS = {
    "detest_c1": 1e-3,
    "detest_c2": 1e-3,
    "detest_c3": 1e-3,
    "detest_c4": np.array([2e-3, 4e-3, 2e-2, 0.42]),
    "detest_c5": np.array([2e-3, 8e-3, 0.136, 37.1]),
    "detest_d1": np.array([2.22e-2, 2.71e-2, 0.4]),
    "detest_d2": np.array([1e-3, 3.65e-4, 2.84e-2]),
    "detest_d3": np.array([1e-3, 1e-3, 3.6e-4, 4.85e-4]),
    "detest_d5": 1e-3,
    "detest_d6": np.array([1e-3, 1.48e-4, 5.77e-11]),
    "detest_e1": np.array([1e-11, 2.24e-10, 1.32e-8, 1.71e-6]),
    "detest_e2": np.array([2.02e-3, 7.64e-3]),
    "detest_e3": np.array([1.63e-3, 1.6e-3, 2.63e-2]),
    "detest_e4": np.array([2.88e-2, 2.95e-2, 1.55e-2, 1.63e-2]),
    "detest_f1": np.array([1.21, 8.35e-5, 1.21, 1e-4]),
    "detest_f2": np.array([1e-3, 2.53e-6]),
    "detest_f3": np.array([4e-9, 1e-9, 3.89e-12, 7.64e-10, 3.24e-9]),
    "detest_f5": np.array([3.36e-10, 8.26e-6, 6.19e-6, 9.55e-9]),
}

HOLDOUT5 = {
    "detest_a1": detest_a1,
    "detest_a2": detest_a2,
    "detest_a3": detest_a3,
    "detest_a4": detest_a4,
    "detest_b1": detest_b1,
    "detest_b2": lambda: detest_b(3.0, "detest_b2"),
    "detest_b3": lambda: detest_b(8.0, "detest_b3"),
    "detest_b4": lambda: detest_b(25.0, "detest_b4"),
    "detest_c1": detest_c1,
    "detest_c2": lambda: detest_c(0.1, "detest_c2"),
    "detest_c3": lambda: detest_c(1.0, "detest_c3"),
    "detest_c4": lambda: detest_c(10.0, "detest_c4"),
    "detest_c5": lambda: detest_c(20.0, "detest_c5"),
    "detest_d1": detest_d1,
    "detest_d2": detest_d2,
    "detest_d3": detest_d3,
    "detest_d5": detest_d5,
    "detest_d6": detest_d6,
    "detest_e1": detest_e1,
    "detest_e2": detest_e2,
    "detest_e3": detest_e3,
    "detest_e4": detest_e4,
    "detest_f1": detest_f1,
    "detest_f2": detest_f2,
    "detest_f3": detest_f3,
    "detest_f5": detest_f5,
}
OUT = Path(__file__).parent / "results" / "stiff_holdout5.jsonl"
stiff_holdout.SECOND_IS_LSODA.add("detest_f5")
main = stiff_holdout.register(HOLDOUT5, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
