"""A fourth stiff hold-out set for the must-hold of issue 14: four problems in none of the
other sets (the visible one, ``stiff_holdout.py``, ``stiff_holdout2.py``,
``stiff_holdout3.py``).

Chosen for ways to fail the other sets do not have: a long quiescent phase that ends in a
sudden ignition (a controller that grows ``h`` on the flat part steps over the front, or
jitters after it), a Jacobian that switches between two regimes many times (stick and
slip), a relaxation oscillator whose fast variable has a cubic nullcline (not Van der
Pol's shape, several cycles) and a stiff linear system with a *growing* mode (an
L-stable method's stability function damps what should grow if its estimate lets it):

=================  ===============================================================
``flame``          Shampine's flame propagation model (Shampine, Gladwell & Thompson,
                   *Solving ODEs with MATLAB*, 2003, Sec. 2.3; MATLAB's ``ode23s``
                   example): ``y' = y² − y³``, ``y(0) = δ = 1e-4``, [0, 2/δ].
                   Closed form ``y = 1/(W(a e^(a − t)) + 1)``, ``a = 1/δ − 1``
                   (Lambert W, evaluated from the logarithm of its argument).  At
                   2/δ the state is 1 to the last bit: this cell checks the status,
                   the steps and the post-ignition phase, not the accuracy.
``flame_front``    The same with ``δ = 1e-2``, ending where ``y = 1/2`` (in the front,
                   ``t = a + ln a − 1``): the end value measures the ignition time.
``stick_slip``     A mass on a spring dragged by a belt (speed 0.2) through smoothed
                   Coulomb friction with a Stribeck drop, ``x' = v``,
                   ``v' = −x + μ(v_r) tanh(v_r/ε)``, ``v_r = 0.2 − v``,
                   ``μ = 0.3 + 0.1 exp(−√(v_r² + ε²)/0.1)``, ``ε = 1e-4``, y(0) = 0,
                   [0, 50]: three stick–slip cycles; while stuck the Jacobian has
                   ``−μ/ε ≈ −4e3``, while slipping it is a harmonic oscillator.
``fitzhugh_nagumo``  FitzHugh–Nagumo with a fast voltage, ``v' = (v − v³/3 − w +
                   0.5)/ε``, ``w' = (v + 0.7 − 0.8 w)/12.5``, ``ε = 1e-3``,
                   ``y(0) = (−1, 1)``, [0, 200]: five relaxation cycles.
``unstable_stiff``  ``y' = Q B Qᵀ y``, ``B`` with eigenvalues ``+0.3`` (a mode that
                   grows by e⁶), −1, −1e4, −1e2 ± 1e3 i, −1e6, ``Q`` a Householder
                   reflection (every component sees every mode), ``y(0) = 1``,
                   [0, 20].  Closed form.
=================  ===============================================================

The first three are written here from the formulas above (our code; the parameters
of ``stick_slip`` and ``fitzhugh_nagumo`` are ours, chosen so that the problems
oscillate over the span); ``flame`` and ``unstable_stiff`` are checked against their
closed forms, the other two against scipy BDF (``--check-refs``).

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``).
Floors (``atol_ratio``): 1e-3 for every component (all of them are O(1) at some time over
the span; ``flame`` sits at 1e-4 on its flat part, where the floor makes the test one of
absolute accuracy 1e-3·rtol).

    python studies/benchmarks/stiff_holdout4.py --check-refs
    python studies/benchmarks/stiff_holdout4.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout4.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``), rtol
1e-3 … 1e-8; cells go to ``results/stiff_holdout4.jsonl``; the committed table is
``stiff_holdout4_results.md``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from scipy.special import lambertw

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout2 import _linear_stiff, _twin_xp

from odenet import problems as P

OUT = Path(__file__).parent / "results" / "stiff_holdout4.jsonl"


def lambert_w_of_exp(L: np.ndarray) -> np.ndarray:
    """``W(e^L)`` (principal branch) for real ``L``, also where ``e^L`` overflows: for
    large ``L`` Newton's method on ``w + ln w = L`` from ``w = L − ln L``."""
    L = np.asarray(L, dtype=np.float64)
    out = np.empty_like(L)
    small = L <= 500.0
    out[small] = lambertw(np.exp(L[small])).real
    big = L[~small]
    w = big - np.log(big)
    for _ in range(8):  # quadratic convergence from an error below 1e-2
        w = w - (w + np.log(w) - big) / (1.0 + 1.0 / w)
    out[~small] = w
    return out


def flame(delta: float = 1e-4, t1: float | None = None) -> P.Problem:
    a = 1.0 / delta - 1.0
    t1 = 2.0 / delta if t1 is None else t1

    def rates(t, y, xp):
        return y * y - y * y * y

    f, f_numpy = _twin_xp(rates)

    def exact(t):
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return (1.0 / (lambert_w_of_exp(np.log(a) + a - t) + 1.0))[:, None]

    return P.Problem(
        f=f,
        y0=np.array([delta]),
        span=(0.0, t1),
        exact=exact,
        name="flame" if t1 == 2.0 / delta else "flame_front",
        description=f"flame propagation y' = y² − y³, y(0) = {delta:g}, [0, {t1:g}]",
        stiff=True,
        f_numpy=f_numpy,
        atol_ratio=1e-3,
    )


def _with_scipy_reference(
    rates, y0, t1: float, name: str, description: str, floors=1e-3, published=None
) -> P.Problem:
    """A hold-out problem without a closed form: torch and numpy fields of one formula
    ``rates(t, y, xp)``, scipy Radau's checked reference (``stiff_holdout._with_reference``),
    floors ``floors`` (1e-3 for every component by default) and, when known, a published
    end value for ``--check-refs`` (also ``stiff_holdout5.py``'s)."""
    return stiff_holdout._with_reference(
        _twin_problem(rates, y0, t1, name, description, atol_ratio=floors),
        None if published is None else np.asarray(published, dtype=np.float64),
    )


def _with_closed_form(rates, y0, t1: float, exact, name: str, description: str) -> P.Problem:
    """A hold-out problem with a closed form ``exact(t [m]) -> [m, n]``: the torch and
    numpy fields of ``rates(t, y, xp)``, floors 1e-3, measured against ``exact``."""
    return _twin_problem(rates, y0, t1, name, description, exact=exact, atol_ratio=1e-3)


def _twin_problem(rates, y0, t1: float, name: str, description: str, **extra) -> P.Problem:
    """The stiff problem on ``[0, t1]`` whose torch and numpy fields are one formula
    ``rates(t, y, xp)`` (``extra``: further :class:`~odenet.problems.Problem` fields)."""
    f, f_numpy = _twin_xp(rates)
    return P.Problem(
        f=f,
        y0=np.asarray(y0, dtype=np.float64),
        span=(0.0, t1),
        name=name,
        description=description,
        stiff=True,
        f_numpy=f_numpy,
        **extra,
    )


def stick_slip(eps: float = 1e-4, belt: float = 0.2, t1: float = 50.0) -> P.Problem:
    def rates(t, y, xp):
        x, v = y[0], y[1]
        vr = belt - v
        mu = 0.3 + 0.1 * xp.exp(-xp.sqrt(vr * vr + eps * eps) / 0.1)
        return xp.stack([v, -x + mu * xp.tanh(vr / eps)])

    return _with_scipy_reference(
        rates, [0.0, 0.0], t1, "stick_slip",
        f"stick–slip friction oscillator, ε = {eps:g}, [0, {t1:g}]",
    )  # fmt: skip


def fitzhugh_nagumo(eps: float = 1e-3, t1: float = 200.0) -> P.Problem:
    def rates(t, y, xp):
        v, w = y[0], y[1]
        return xp.stack([(v - v * v * v / 3 - w + 0.5) / eps, (v + 0.7 - 0.8 * w) / 12.5])

    return _with_scipy_reference(
        rates, [-1.0, 1.0], t1, "fitzhugh_nagumo",
        f"FitzHugh–Nagumo relaxation oscillator, ε = {eps:g}, [0, {t1:g}]",
    )  # fmt: skip


def unstable_stiff() -> P.Problem:
    B = np.zeros((6, 6))
    B[0, 0], B[1, 1], B[2, 2] = 0.3, -1.0, -1e4
    B[3:5, 3:5] = [[-1e2, 1e3], [-1e3, -1e2]]
    B[5, 5] = -1e6
    v = np.arange(6.0, 0.0, -1.0)
    Q = np.eye(6) - 2 * np.outer(v, v) / (v @ v)
    p = _linear_stiff(
        Q @ B @ Q.T,
        np.ones(6),
        20.0,
        "unstable_stiff",
        "linear, eigenvalues +0.3, −1, −1e4, −1e2 ± 1e3i, −1e6 in a rotated basis",
    )
    return dataclasses.replace(p, name="unstable_stiff")


HOLDOUT4 = {
    "flame": flame,
    # δ = 1e-2, ending where y = 1/2 (W = 1: t = a + ln a − 1): in the middle of the
    # front, where the end value measures the ignition time (its condition number is
    # ~0.25/δ: a relative error ε of y on the flat part moves the front by ~ε/δ)
    "flame_front": lambda: flame(1e-2, 99.0 + np.log(99.0) - 1.0),
    "stick_slip": stick_slip,
    "fitzhugh_nagumo": fitzhugh_nagumo,
    "unstable_stiff": unstable_stiff,
}
main = stiff_holdout.register(HOLDOUT4, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
