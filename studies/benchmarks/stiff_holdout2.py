"""A second stiff hold-out set for the must-hold of issue 14 (none of these problems is in
the visible set, :data:`odenet.problems.STIFF_SUITE`, or in ``stiff_holdout.py``).

Chosen for different ways an adaptive stiff method can end with status ok and a wrong
answer: an error estimate fooled by eigenvalues near the imaginary axis, a stiff mode
that an A- but not L-stable method keeps alive, a start from discontinuous data, a
metastable state that collapses suddenly, a forced damped oscillator, a stiff
reaction–diffusion ring and a chemistry problem whose third species stays tiny and
negative:

======================  ===========================================================
``detest_b5``           Stiff DETEST B5 (Enright, Hull & Lindberg, BIT 15 (1975);
                        Hairer & Wanner II, Sec. IV.10): ``y1' = −10 y1 + 100 y2``,
                        ``y2' = −100 y1 − 10 y2``, ``y3..6' = −4, −1, −0.5, −0.1 ×
                        y3..6``, ``y(0) = 1``, [0, 20]; eigenvalues −10 ± 100i:
                        the classical trap for error estimators near the imaginary
                        axis.  Closed form (``expm``).
``linear_oscillatory``  ``y' = Q B Qᵀ y`` with ``B`` = blocks −0.5 ± 50i (alive over
                        [0, 4]), −1e4 ± 1e5i (stiff and oscillatory: ``|R(hλ)| → 1``
                        for the trapezoid rule), −1e6 and −1, ``Q`` a fixed
                        Householder reflection (every component sees every mode),
                        ``y(0) = 1``.  Closed form.
``heat_step``           ``u_t = u_xx`` on (0, 1), ``u = 0`` at the ends, 63 interior
                        points (``|λ_max| ≈ 1.6e4``), ``u(0) = 1`` on (1/4, 3/4) and 0
                        elsewhere: every mode is excited at the start; [0, 0.1].
                        Closed form of the semi-discrete system.
``detest_d4``           Stiff DETEST D4 (Enright, Hull & Lindberg 1975; also Press et
                        al., Numerical Recipes, Sec. 16.6): ``y1' = −0.013 y1 −
                        1000 y1 y3``, ``y2' = −2500 y2 y3``, ``y3' = −0.013 y1 −
                        1000 y1 y3 − 2500 y2 y3``, ``y(0) = (1, 1, 0)``, [0, 50];
                        ``y3`` stays ≈ −1e-6.
``cusp``                CUSP (Hairer & Wanner II, Sec. IV.10; ``cusp_equation.f`` of
                        Hairer's test drivers): Zeeman's cusp catastrophe on a ring
                        of 32 cells with diffusion ``D = 32²/144``, 96 equations,
                        [0, 1.1].  Published reference at 1.1 (Hairer's data
                        ``cusp_exact.txt``).
``plate``               PLATE (Hairer & Wanner II, Sec. IV.10; ``plate_equation.f``):
                        a clamped plate (8 × 5 grid, biharmonic stencil, stiffness
                        100, damping ω = 1000) driven by two moving Gaussian loads,
                        80 equations, linear and time dependent, [0, 7], y(0) = 0.
                        Published reference at 7 (``plate_exact.txt``).
``allen_cahn``          ``u_t = 0.01 u_xx + u − u³`` on (−1, 1), ``u(±1) = ±1``,
                        ``u(0) = 0.53 x + 0.47 sin(−1.5πx)`` (Trefethen, Spectral
                        Methods in MATLAB, program 34), central differences on 99
                        interior points, [0, 38]: two interfaces drift slowly, then
                        the negative hump collapses; t = 38 is the middle of the
                        collapse (max ``|u'|`` 0.38 there, 0.06 at t = 30, 0.11 at 40).
======================  ===========================================================

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``):
the closed form where there is one; otherwise scipy Radau at rtol 1e-12, atol =
floors·1e-10, checked against scipy BDF and against the published value
(``--check-refs``).  Floors (``atol_ratio``): 1e-3 of each component's peak over the span
(measured with scipy Radau at rtol 1e-10 and written below), 1e-3 for the problems whose
components all peak at O(1).

    python studies/benchmarks/stiff_holdout2.py --check-refs
    python studies/benchmarks/stiff_holdout2.py --rtols 1e-3,1e-6 --timeout 60
    python studies/benchmarks/stiff_holdout2.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``, bdf and ndf
included), rtol 1e-3 … 1e-8 and the off-grid 3e-4, 2e-7, 8e-9; cells go to
``results/stiff_holdout2.jsonl``; the committed table is ``stiff_holdout2_results.md``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_accuracy import RTOLS

from odenet import problems as P

OFF_GRID_RTOLS = (3e-4, 2e-7, 8e-9)
OUT = Path(__file__).parent / "results" / "stiff_holdout2.jsonl"


def _twin_xp(rates):
    """Torch and numpy fields of one formula ``rates(t, y, xp)`` (``xp`` is ``torch`` or
    ``numpy``; the formula uses only functions both modules spell alike)."""

    def f(t, y):
        return rates(t, y, torch)

    def f_numpy(t, y):
        return rates(t, y, np)

    return f, f_numpy


def _linear_stiff(A, y0, t1, name, description) -> P.Problem:
    return dataclasses.replace(
        P._linear(A, y0, (0.0, t1), name, description, stiff=True), atol_ratio=1e-3
    )


def detest_b5() -> P.Problem:
    A = np.zeros((6, 6))
    A[:2, :2] = [[-10.0, 100.0], [-100.0, -10.0]]
    A[2:, 2:] = np.diag([-4.0, -1.0, -0.5, -0.1])
    return _linear_stiff(A, np.ones(6), 20.0, "detest_b5", "stiff DETEST B5, λ = −10 ± 100i")


def linear_oscillatory() -> P.Problem:
    B = np.zeros((6, 6))
    B[:2, :2] = [[-0.5, 50.0], [-50.0, -0.5]]
    B[2:4, 2:4] = [[-1e4, 1e5], [-1e5, -1e4]]
    B[4, 4], B[5, 5] = -1e6, -1.0
    v = np.arange(1.0, 7.0)
    Q = np.eye(6) - 2 * np.outer(v, v) / (v @ v)
    return _linear_stiff(
        Q @ B @ Q.T,
        np.ones(6),
        4.0,
        "linear_oscillatory",
        "linear, eigenvalues −0.5 ± 50i, −1e4 ± 1e5i, −1e6, −1 in a rotated basis",
    )


def heat_step(n: int = 63) -> P.Problem:
    dx = 1.0 / (n + 1)
    x = dx * np.arange(1, n + 1)
    A = np.diag(-2 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    u0 = ((x > 0.25) & (x < 0.75)).astype(float)
    return _linear_stiff(
        A / dx**2, u0, 0.1, "heat_step", f"heat equation, {n} points, step initial data"
    )


def detest_d4() -> P.Problem:
    def rates(y):
        r1, r2 = 1000 * y[0] * y[2], 2500 * y[1] * y[2]
        return [-0.013 * y[0] - r1, -r2, -0.013 * y[0] - r1 - r2]

    f, f_numpy = P._twin(rates)
    # 1e-3 of the peaks over [0, 50] (scipy Radau, rtol 1e-8): |y1| 1, |y2| 1.40, |y3| 3.7e-6
    return stiff_holdout._with_reference(
        P.Problem(
            f=f,
            y0=[1.0, 1.0, 0.0],
            span=(0.0, 50.0),
            name="detest_d4",
            description="stiff DETEST D4 (chemistry), [0, 50]",
            stiff=True,
            f_numpy=f_numpy,
            atol_ratio=np.array([1e-3, 1.4e-3, 3.7e-9]),
        ),
        None,
    )


# Hairer's cusp_exact.txt (RADAU5 at tight tolerance), y(1.1), cells 1 … 32 as (x, a, b)
_CUSP_REFERENCE = np.array([
    -1.335038235173363825, -0.141920661299976116, 2.189999851122752954,
    -1.290165517136865728, 0.292210513241939329, 2.524498007953815718,
    -1.206268463248866837, 0.702876002804259450, 2.603037671957832137,
    -1.081173370722796200, 1.054547339698463687, 2.403900155664309457,
    -0.922551477213655165, 1.326991956338080918, 2.009305096775369514,
    -0.743049818521982534, 1.516881284521938182, 1.537256339189765457,
    -0.555201077072863929, 1.632603197056899916, 1.077437487481636876,
    -0.369158363066035655, 1.687674223256960258, 0.673204001909134905,
    -0.192671593795137051, 1.695724385342398648, 0.333758479535656796,
    -0.030615931836238017, 1.667262708083148298, 0.050978698243957534,
    0.117513584875619235, 1.607508563419502269, -0.190604748914752998,
    0.259898961244445617, 1.514823442340568479, -0.411323787318084589,
    0.411809029672400558, 1.379804789392094260, -0.638121744946811883,
    0.590441346230457812, 1.185589061664514451, -0.905945997151089418,
    0.803741778414404449, 0.910756427168161885, -1.251345457775128863,
    1.037877442048335801, 0.545036626743780133, -1.683821753687386274,
    1.239043542405442416, 0.169981336507011738, -2.112958754094543822,
    1.406385681620871097, -0.235380986562835855, -2.450796096861493262,
    1.524334200774267799, -0.633461856049010260, -2.576413161518578492,
    1.588649099727842025, -0.986582203794960052, -2.442161394270367795,
    1.606022353430074771, -1.269240297385074114, -2.104018859237057304,
    1.588788794126354791, -1.473056296837721718, -1.670122571729852451,
    1.549115780473624505, -1.603417743271582846, -1.233609811984700428,
    1.495889929838369103, -1.672805947347039028, -0.844976238622025912,
    1.434154221021214460, -1.695067644864453216, -0.518751841694241591,
    1.365334914988092461, -1.681659890115195530, -0.249120054639391870,
    1.286403800980685275, -1.639285126097438457, -0.019980596158691364,
    1.184974025791693888, -1.567910985925968939, 0.194039539947058944,
    1.011140518164431143, -1.455860565434940201, 0.436843623543739620,
    -1.349821324547813729, -1.223845158570813537, 0.809099908070360854,
    -1.355008974443540401, -0.926131110369012061, 1.232945832067604962,
    -1.352261107347051711, -0.559070645046367311, 1.716745798614099647,
])  # fmt: skip


def cusp(cells: int = 32) -> P.Problem:
    diffusion = cells**2 / 144.0

    def rates(t, y, xp):
        x, a, b = y[0::3], y[1::3], y[2::3]
        u = (x - 0.7) * (x - 1.3)
        v = u / (u + 0.1)
        local = (
            -1e4 * (b + x * (a + x * x)),
            b + 0.07 * v,
            (1 - a * a) * b - a - 0.4 * x + 0.035 * v,
        )
        # the cells form a ring: neighbours by a periodic shift
        out = [
            g + diffusion * (xp.roll(z, 1) - 2 * z + xp.roll(z, -1))
            for g, z in zip(local, (x, a, b), strict=True)
        ]
        return xp.stack(out, 1).reshape(-1)

    f, f_numpy = _twin_xp(rates)
    i = np.arange(1, cells + 1) * 2 * math.pi / cells
    return stiff_holdout._with_reference(
        P.Problem(
            f=f,
            y0=np.stack([np.zeros(cells), -2 * np.cos(i), 2 * np.sin(i)], 1).reshape(-1),
            span=(0.0, 1.1),
            name="cusp",
            description=f"CUSP (Hairer & Wanner), {cells} cells, {3 * cells} equations, [0, 1.1]",
            stiff=True,
            f_numpy=f_numpy,
            atol_ratio=1e-3,  # every component peaks at 0.5 … 2.6
        ),
        _CUSP_REFERENCE if cells == 32 else None,
    )


# Hairer's plate_exact.txt, y(7): 40 displacements then 40 velocities (grid order i + 8 j)
_PLATE_REFERENCE = np.array([
    0.000490143813851336, 0.000980081485560611, 0.001462893811482190, 0.001915822464411935,
    0.002285152533727002, 0.002461353376688549, 0.002254597413097122, 0.001438312591933600,
    0.000849025149228402, 0.001697885005625757, 0.002535239886068847, 0.003323989552181772,
    0.003977902193560667, 0.004320231736082990, 0.004025679955083897, 0.002643206356123840,
    0.000980287627702671, 0.001960162971121222, 0.002925787622964379, 0.003831644928823870,
    0.004570305067454005, 0.004922706753377098, 0.004509194826194244, 0.002876625183867201,
    0.000849025149228402, 0.001697885005625757, 0.002535239886068847, 0.003323989552181772,
    0.003977902193560667, 0.004320231736082990, 0.004025679955083897, 0.002643206356123840,
    0.000490143813851336, 0.000980081485560611, 0.001462893811482190, 0.001915822464411935,
    0.002285152533727002, 0.002461353376688549, 0.002254597413097122, 0.001438312591933600,
    -0.001177590304545409, -0.002409005827992214, -0.003722140831656533, -0.005078780056048207,
    -0.006302661811097914, -0.006973399942926759, -0.006394575120415784, -0.003960464551310118,
    -0.002040148244040460, -0.004174829877953482, -0.006456510337516159, -0.008832503276738242,
    -0.011029624807177369, -0.012352389570141255, -0.011524177328690540, -0.007253301886026949,
    -0.002355180609090818, -0.004818011655984428, -0.007444281663313065, -0.010157560112096413,
    -0.012605323622195828, -0.013946799885853517, -0.012789150240831569, -0.007920929102620235,
    -0.002040148244040460, -0.004174829877953482, -0.006456510337516159, -0.008832503276738242,
    -0.011029624807177369, -0.012352389570141255, -0.011524177328690540, -0.007253301886026949,
    -0.001177590304545409, -0.002409005827992214, -0.003722140831656533, -0.005078780056048207,
    -0.006302661811097914, -0.006973399942926759, -0.006394575120415784, -0.003960464551310118,
])  # fmt: skip


def _plate_operator(nx: int, ny: int) -> np.ndarray:
    """The plate's biharmonic stencil ``K`` [nx·ny, nx·ny] (``plate_equation.f``: 20 at
    the centre less one per missing neighbour, −8 next to it, 2 diagonally, 1 two away;
    clamped edges)."""
    n = nx * ny
    K = np.zeros((n, n))
    for j in range(ny):
        for i in range(nx):
            k = i + nx * j
            K[k, k] = 16.0
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= i + di < nx and 0 <= j + dj < ny:
                    K[k, k] += 1.0
                    K[k, k + di + nx * dj] = -8.0
            for di, dj in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
                if 0 <= i + di < nx and 0 <= j + dj < ny:
                    K[k, k + di + nx * dj] = 2.0
            for di, dj in ((-2, 0), (2, 0), (0, -2), (0, 2)):
                if 0 <= i + di < nx and 0 <= j + dj < ny:
                    K[k, k + di + nx * dj] = 1.0
    return K


def plate(nx: int = 8, ny: int = 5) -> P.Problem:
    omega, stiffness, weight = 1000.0, 100.0, 200.0
    dx = 2.0 / (nx + 1)
    m = nx * ny
    K = stiffness / dx**4 * _plate_operator(nx, ny)
    # the two loads move along grid rows 2 and 4 (1-based, as in the Fortran)
    loaded = np.zeros(m)
    xi = np.zeros(m)
    for j in (1, 3):
        loaded[nx * j : nx * (j + 1)] = weight
        xi[nx * j : nx * (j + 1)] = dx * np.arange(1, nx + 1)
    Kt, loaded_t, xi_t = (torch.as_tensor(a) for a in (K, loaded, xi))

    def rates(t, y, xp, K, loaded, xi):
        u, v = y[:m], y[m:]
        force = loaded * (xp.exp(-5 * (t - xi - 2) ** 2) + xp.exp(-5 * (t - xi - 5) ** 2))
        return xp.concatenate([v, -omega * v - K @ u + force])

    def f(t, y):
        return rates(t, y, torch, Kt.to(y.dtype), loaded_t.to(y.dtype), xi_t.to(y.dtype))

    def f_numpy(t, y):
        return rates(t, y, np, K, loaded, xi)

    return stiff_holdout._with_reference(
        P.Problem(
            f=f,
            y0=np.zeros(2 * m),
            span=(0.0, 7.0),
            name="plate",
            description=f"PLATE (Hairer & Wanner), {nx}x{ny} grid, {2 * m} equations, [0, 7]",
            stiff=True,
            f_numpy=f_numpy,
            # 1e-3 of the peaks over [0, 7] (scipy Radau, rtol 1e-8): displacements
            # 1.3e-2, velocities 1.5e-2
            atol_ratio=np.repeat([1.3e-5, 1.5e-5], m),
        ),
        _PLATE_REFERENCE if (nx, ny) == (8, 5) else None,
    )


def allen_cahn(n: int = 99, t1: float = 38.0) -> P.Problem:
    dx = 2.0 / (n + 1)
    x = -1 + dx * np.arange(1, n + 1)
    c = 0.01 / dx**2

    def rates(t, y, xp):
        edge = y[:1] * 0
        up = xp.concatenate([edge - 1, y, edge + 1])
        return c * (up[:-2] - 2 * y + up[2:]) + y - y**3

    f, f_numpy = _twin_xp(rates)
    return stiff_holdout._with_reference(
        P.Problem(
            f=f,
            y0=0.53 * x + 0.47 * np.sin(-1.5 * math.pi * x),
            span=(0.0, t1),
            name="allen_cahn",
            description=f"Allen–Cahn ε = 0.01, {n} points, [0, {t1:g}]",
            stiff=True,
            f_numpy=f_numpy,
            atol_ratio=1e-3,  # |u| ≤ 1
        ),
        None,
    )


HOLDOUT2 = {
    "detest_b5": detest_b5,
    "linear_oscillatory": linear_oscillatory,
    "heat_step": heat_step,
    "detest_d4": detest_d4,
    "cusp": cusp,
    "plate": plate,
    "allen_cahn": allen_cahn,
}
main = stiff_holdout.register(HOLDOUT2, OUT, sorted({*RTOLS, *OFF_GRID_RTOLS}, reverse=True))
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
