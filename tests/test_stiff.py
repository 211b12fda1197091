"""Implicit methods on stiff problems, and gradients through implicit stages."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _scipy_radau import radau_error

import odenet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
from doc_claims import jump_worst

D = torch.float64
LAM = -1e4


def prothero_robinson(t, y):
    # y' = λ (y − cos t) − sin t, exact solution y = cos t for y(0) = 1
    return LAM * (y - torch.cos(t)) - torch.sin(t)


T_OUT = torch.tensor([0.0, 1.0], dtype=D)


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
def test_explicit_methods_blow_up_at_a_step_far_outside_their_stability_region(method):
    with pytest.raises(odenet.NonFiniteError):
        # |R(hλ)| ≥ 99 per step: overflow well within 500 steps
        odenet.solve(
            prothero_robinson,
            torch.ones(1, dtype=D),
            torch.tensor([0.0, 5.0], dtype=D),
            method=method,
            step_size=0.01,
        )


@pytest.mark.parametrize(
    "method, tol",
    [
        ("backward_euler", 1e-5),
        ("sdirk2", 1e-6),
        ("radau_iia5", 1e-8),
        ("trapezoid", 1e-5),
        ("gauss_legendre4", 1e-5),
    ],
)
def test_implicit_methods_stay_accurate_at_the_same_step(method, tol):
    sol = odenet.solve(
        prothero_robinson, torch.ones(1, dtype=D), T_OUT, method=method, step_size=0.01
    )
    assert abs(float(sol.ys[-1, 0]) - math.cos(1.0)) < tol


def test_backward_euler_step_on_a_linear_system_is_the_resolvent():
    A = torch.tensor([[-1000.0, 1.0], [0.0, -0.5]], dtype=D)
    y0 = torch.tensor([1.0, 1.0], dtype=D)
    sol = odenet.solve(
        lambda t, y: A @ y,
        y0,
        torch.tensor([0.0, 1.0], dtype=D),
        method="backward_euler",
        step_size=0.25,
    )
    R = torch.linalg.inv(torch.eye(2, dtype=D) - 0.25 * A)
    assert torch.allclose(sol.ys[-1], torch.linalg.matrix_power(R, 4) @ y0, rtol=1e-12)
    # a linear problem: one Jacobian, Newton converges at once, and the Jacobian is reused
    assert sol.stats["jacobians"] == 1


@pytest.mark.parametrize("method", ["backward_euler", "gauss_legendre4", "radau_iia5", "sdirk2"])
def test_direct_gradients_through_implicit_stages_pass_gradcheck(method):
    # d/d(a, y0) of y(1) for y' = -a y + sin(t y): implicit function theorem vs finite differences
    def run(a, y0):
        f = lambda t, y: -a * y + torch.sin(t * y)  # noqa: E731
        return odenet.solve(
            f, y0, torch.tensor([0.0, 0.6], dtype=D), method=method, step_size=0.2
        ).ys[-1]

    a = torch.tensor(2.0, dtype=D, requires_grad=True)
    y0 = torch.tensor([0.7, -0.3], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(run, (a, y0), eps=1e-6, atol=1e-6)


def test_direct_gradient_of_an_adaptive_solve_matches_the_closed_form():
    # y' = a y: dy(T)/da = T y0 e^{aT}
    a = torch.tensor(-0.7, dtype=D, requires_grad=True)
    y0 = torch.tensor([1.5], dtype=D)
    yT = odenet.solve(
        lambda t, y: a * y, y0, torch.tensor([0.0, 2.0], dtype=D), rtol=1e-10, atol=1e-12
    ).ys[-1, 0]
    yT.backward()
    assert math.isclose(float(a.grad), 2.0 * 1.5 * math.exp(-1.4), rel_tol=1e-7)


# --- the stiff test set: status ok must mean the tolerance was honoured -------------------

from odenet import problems as P  # noqa: E402

STIFF_METHODS = ["radau_iia5", "kvaerno3", "kvaerno5", "sdirk4", "trbdf2"]


def stiff_solve(name, method, rtol, max_steps, **params):
    """Solve a STIFF_SUITE problem; return (status ok?, error in the suite's measure)."""
    prob, d = P.get_problem(name, **params), P.STIFF_SUITE[name]
    sol = odenet.solve(
        prob.f,
        prob.y0_tensor(),
        torch.tensor(prob.span, dtype=D),
        method=method,
        rtol=rtol,
        atol=d * rtol,
        max_steps=max_steps,
        throw=False,
    )
    ok = bool(sol.success)
    return ok, (P.stiff_error(prob, sol.ys[-1], d) if ok else math.nan), sol


def assert_honest(name, method, rtol, max_steps, *, finish=False, **params):
    """``finish``: the cell must succeed, or its error check would never run."""
    ok, err, sol = stiff_solve(name, method, rtol, max_steps, **params)
    if finish:
        assert ok, int(sol.status.flatten()[0])
    # a failure (max_steps, step underflow, Newton) is an honest answer; ok with an
    # error beyond 100·rtol is not
    assert not ok or err <= 100 * rtol, f"{method} status ok with error {err:.2e} at rtol {rtol}"
    if method == "radau_iia5":  # the reference stiff solver must also finish, accurately
        assert ok and err <= 10 * rtol, (ok, err)
    return sol


@pytest.mark.parametrize(
    "rtol", [1e-3, pytest.param(1e-5, marks=pytest.mark.slow)], ids=["1e-3", "1e-5"]
)
@pytest.mark.parametrize("method", STIFF_METHODS)
@pytest.mark.parametrize("name", ["robertson_long", "hires"])
def test_status_ok_means_the_tolerance_was_honoured(name, method, rtol):
    # at 1e-3 every method finishes within 1000 steps (trbdf2 takes 680 and 772), so the
    # error check is exercised for each; at 1e-5 kvaerno3, sdirk4 (HIRES) and trbdf2 end
    # at the 400-step budget, an honest failure
    assert_honest(name, method, rtol, max_steps=1000 if rtol == 1e-3 else 400, finish=rtol == 1e-3)


@pytest.mark.parametrize(
    "method",
    ["kvaerno3", "sdirk4", "trbdf2", pytest.param("radau_iia5", marks=pytest.mark.slow)],
)
def test_van_der_pol_through_one_relaxation_jump_is_honest(method):
    # μ = 1000 up to just past the first jump (t ≈ 807): the case that returned status
    # ok with a 64 % error when a Jacobian from the jump was reused after it.  Each method
    # must get past the jump, or the error check never runs (kvaerno3 takes 602 steps,
    # trbdf2 1778)
    assert_honest("van_der_pol_relaxation", method, 1e-3, max_steps=2500, finish=True, t1=900.0)


# The cells of the three longer problems that each method finishes within 1000 steps
# (radau_iia5: 1500), measured with stiff_solve (steps in the comments).  The other 14
# cells (kvaerno3 and trbdf2 on Van der Pol and the Oregonator, kvaerno5 and sdirk4 on
# them at 1e-6, kvaerno3 and trbdf2 on the Brusselator at 1e-6) ended at a 700-step
# budget: they checked nothing but took ~2 min of wall time, so they are gone;
# the benchmark (stiff_accuracy.py) runs them to the end.
FINISHING = [
    ("van_der_pol_relaxation", "radau_iia5", 1e-3),  # 309
    ("van_der_pol_relaxation", "radau_iia5", 1e-6),  # 1353
    ("van_der_pol_relaxation", "kvaerno5", 1e-3),  # 588
    ("van_der_pol_relaxation", "sdirk4", 1e-3),  # 655
    ("oregonator", "radau_iia5", 1e-3),  # 265
    ("oregonator", "radau_iia5", 1e-6),  # 1100
    ("oregonator", "kvaerno5", 1e-3),  # 570
    ("oregonator", "sdirk4", 1e-3),  # 547
    ("brusselator_1d", "radau_iia5", 1e-3),  # 27
    ("brusselator_1d", "radau_iia5", 1e-6),  # 124
    ("brusselator_1d", "kvaerno3", 1e-3),  # 127
    ("brusselator_1d", "kvaerno5", 1e-3),  # 45
    ("brusselator_1d", "kvaerno5", 1e-6),  # 133
    ("brusselator_1d", "sdirk4", 1e-3),  # 42
    ("brusselator_1d", "sdirk4", 1e-6),  # 291
    ("brusselator_1d", "trbdf2", 1e-3),  # 372
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "method", "rtol"), FINISHING)
def test_status_ok_means_the_tolerance_was_honoured_slow(name, method, rtol):
    budget = 1500 if method == "radau_iia5" else 1000
    assert_honest(name, method, rtol, max_steps=budget, finish=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "name", "rtol", "max_steps"),
    [("sdirk4", "brusselator_1d", 1e-7, 1500), ("kvaerno3", "brusselator_1d", 1e-6, 3500)],
)
def test_dirk_methods_at_tight_tolerance_are_honest(method, name, rtol, max_steps):
    # cells these low orders finish (596 and 2519 steps), so the error is checked; on
    # HIRES at 1e-7 all three DIRK pairs ended at the step budget and checked nothing.
    # trbdf2 (order 2) needs more than 3000 steps at 1e-6 on the 1-D Brusselator and
    # more than 4000 at 1e-5 on Robertson and HIRES: its honesty is checked at 1e-3 above
    assert_honest(name, method, rtol, max_steps=max_steps, finish=True)


# --- the must-hold against scipy Radau (studies/benchmarks/stiff_accuracy.py measures it all)


def scipy_radau_error(name, rtol):
    prob = P.get_problem(name)
    return radau_error(
        prob.numpy_field(), prob.span, prob.y0, rtol, prob.atol(rtol),
        lambda y: P.stiff_error(prob, y, prob.atol_ratio),
    )[0]  # fmt: skip


def test_radau_iia5_is_within_10x_of_scipy_radau_on_hires():
    ok, err, _ = stiff_solve("hires", "radau_iia5", 1e-3, max_steps=400)
    assert ok and err <= 10 * scipy_radau_error("hires", 1e-3), err


@pytest.mark.parametrize(
    "name, method",
    [("hires", "kvaerno3"), ("hires", "sdirk4"), ("robertson_long", "kvaerno5"),
     ("robertson_long", "trbdf2")],
)  # fmt: skip
def test_dirk_pairs_within_10x_of_scipy_radau_at_rtol_1e_3(name, method):
    # the must-hold's bar on cells that run in seconds (the whole matrix, rtol 1e-3 …
    # 1e-8 on five problems: studies/benchmarks/stiff_accuracy.py); before the error
    # safety κ and the tighter Newton threshold kvaerno3 ended at 32x and sdirk4 at 41x
    # Radau's error on HIRES, kvaerno5 at 19x and trbdf2 at 78x on Robertson
    ok, err, _ = stiff_solve(name, method, 1e-3, max_steps=2000)
    assert ok and err <= 10 * scipy_radau_error(name, 1e-3), err


@pytest.mark.parametrize(
    "method, rtol",
    # the order-2 and -3 pairs at looser rtols: trbdf2 at 1e-7 took 52 s (it ends at
    # 0.005·rtol there, at 1e-5 too: doc_claims.py low_order_jump)
    [("sdirk4", 1e-7), ("kvaerno5", 1e-7), ("radau_iia5", 1e-7), ("kvaerno3", 1e-6),
     ("trbdf2", 1e-5)],
)  # fmt: skip
def test_a_jump_early_in_a_step_is_seen_by_every_stiff_pair(method, rtol):
    # y' = −y switching to y' = 2 at τ, no jump_t.  sdirk4's stages sit at c ≥ 1/4: with
    # Hairer & Wanner's b̂ a jump in a step's first quarter changed neither its solution
    # nor its estimate, and it ended 5e4·rtol off at every τ with status ok; its b̂ now
    # weighs f(t0, y0), which the jump makes disagree with the stages
    # (14 jump times τ in [0.5, 1.45]; the loop doc_claims.py prints from)
    worst, _ = jump_worst(method, rtol)  # relative error at t = 2, over rtol
    assert worst < 10, (method, worst)


def test_sdirk4_embedded_weights_are_order_3_and_put_weight_on_the_step_start():
    tab = odenet.tableau("sdirk4")
    assert tab.c[0] == 0 and not tab.A[0].any() and tab.b[0] == 0  # stage 0 is f(t0, y0)
    assert abs(tab.b_hat[0]) >= 1 / 16
    # HW's b̂ plus a part orthogonal to the order conditions up to 3: their estimate on
    # smooth problems, plus a term that sees f(t0, y0)
    hw = np.array([0, 59 / 48, -17 / 96, 225 / 32, -85 / 12, 0])
    delta = tab.b_hat - hw
    c, Ac = tab.c, tab.A @ tab.c
    for condition in (np.ones_like(c), c, c**2, Ac):
        assert abs(delta @ condition) < 1e-14
    # and its order-4 defects (the estimate's leading term on smooth problems) are
    # nearly HW's: the norms the tableau's docstring quotes
    A = tab.A
    order4 = np.stack([c**3, c * Ac, A @ c**2, A @ Ac])
    exact = np.array([1 / 4, 1 / 8, 1 / 12, 1 / 24])
    assert np.linalg.norm(order4 @ hw - exact) == pytest.approx(0.0249, abs=5e-5)
    assert np.linalg.norm(order4 @ tab.b_hat - exact) == pytest.approx(0.0256, abs=5e-5)
    assert odenet.verify_order(tab) == 4
    embedded = odenet.ButcherTableau("sdirk4_embedded", A=tab.A, b=tab.b_hat, c=tab.c, order=3)
    assert odenet.verify_order(embedded) == 3
