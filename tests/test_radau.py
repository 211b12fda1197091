"""Adaptive Radau IIA of orders 3, 5 and 9 (Hairer's RADAU5 / RADAU, ``odenet._radau``)."""

import functools
import math

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from _scipy_radau import radau_error
from hypothesis import given, settings
from scipy.integrate import solve_ivp
from scipy.integrate._ivp import radau as scipy_radau

import odenet
from odenet import problems as P
from odenet._newton import Newton
from odenet._radau import RadauIIA, RadauNewton, radau_constants, runtime_for

D = torch.float64
RADAU = ["radau_iia3", "radau_iia5", "radau_iia9"]


def span(t0, t1):
    return torch.tensor([t0, t1], dtype=D)


def test_the_derived_constants_of_three_stages_are_scipys():
    # scipy's Radau hard-codes Hairer's radau5.f constants: an independent source
    k = radau_constants(odenet.tableau("radau_iia5"))
    assert np.allclose(k.T, scipy_radau.T, rtol=0, atol=1e-15)
    assert np.allclose(k.TI, scipy_radau.TI, rtol=0, atol=1e-14)
    assert np.allclose(k.E, scipy_radau.E, rtol=0, atol=1e-14)
    assert np.allclose(k.P, scipy_radau.P, rtol=0, atol=1e-14)
    assert math.isclose(k.mu_real, scipy_radau.MU_REAL, rel_tol=1e-15)
    assert abs(k.mu_complex[0] - scipy_radau.MU_COMPLEX) < 1e-14


def test_the_derived_constants_of_five_stages_are_radau_f():
    # radau.f (Hairer & Wanner), SUBROUTINE COERCV, NS = 5: nodes, DD, U1, ALPH, BETA
    tab = odenet.tableau("radau_iia9")
    c = [0.05710419611451768219312, 0.27684301363812382768, 0.5835904323689168200567,
         0.8602401356562194478479, 1.0]  # fmt: skip
    dd = [-27.78093394406463730479, 3.641478498049213152712, -1.252547721169118720491,
          0.5920031671845428725662, -0.2]  # fmt: skip
    assert np.allclose(tab.c, c, rtol=0, atol=1e-15)
    k = radau_constants(tab)
    assert np.allclose(k.E, dd, rtol=1e-14, atol=0)
    assert math.isclose(k.mu_real, 6.286704751729276645173, rel_tol=1e-15)
    pairs = sorted((m.real, -m.imag) for m in k.mu_complex)
    ref = sorted([(3.655694325463572258243, 6.543736899360077294021),
                  (5.70095329867178941917, 3.210265600308549888425)])  # fmt: skip
    assert np.allclose(pairs, ref, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", RADAU)
def test_the_transformation_block_diagonalises_the_inverse_of_A(name):
    tab = odenet.tableau(name)
    k = radau_constants(tab)
    s = tab.stages
    assert np.allclose(k.TI @ k.T, np.eye(s), atol=1e-13)
    L = k.TI @ np.linalg.inv(tab.A) @ k.T
    expected = np.zeros((s, s))
    r = 0 if k.mu_real is None else 1
    if r:
        expected[0, 0] = k.mu_real
    for p, mu in enumerate(k.mu_complex):
        i = r + 2 * p
        expected[i : i + 2, i : i + 2] = [[mu.real, -mu.imag], [mu.imag, mu.real]]
    assert np.allclose(L, expected, atol=1e-11)
    # one real eigenvalue exactly when s is odd; ⌊s/2⌋ complex pairs
    assert (k.mu_real is not None) == (s % 2 == 1) and len(k.mu_complex) == s // 2
    assert np.allclose(
        sorted(np.linalg.eigvals(np.linalg.inv(tab.A)), key=lambda z: (z.real, z.imag)),
        sorted(
            ([k.mu_real] if r else []) + [m for mu in k.mu_complex for m in (mu, mu.conjugate())],
            key=lambda z: (z.real, z.imag),
        ),
        atol=1e-11,
    )


@pytest.mark.parametrize("name", RADAU)
def test_the_embedded_weights_make_an_order_s_estimate(name):
    # Σ e_i Z_i / h + f0 vanishes for y(t) = t^k, k ≤ s (Z_i = (c_i h)^k, f0 = [k = 1]):
    # the embedded solution y0 + h (γ0 f0 + Σ b̂_i k_i) integrates degree s − 1 exactly
    tab = odenet.tableau(name)
    E, c, s = radau_constants(tab).E, tab.c, tab.stages
    for k in range(1, s + 1):
        assert abs(E @ c**k + (1.0 if k == 1 else 0.0)) < 1e-11 * max(1.0, np.abs(E).sum())
    # and not degree s + 1: the estimate is not identically zero
    assert abs(E @ c ** (s + 1)) > 1e-3


@pytest.mark.parametrize("name", RADAU)
def test_dense_output_is_the_collocation_polynomial(name):
    tab = odenet.tableau(name)
    k = radau_constants(tab)
    s = tab.stages
    # the polynomial passes through the stage values: at θ = c_i it returns y0 + Z_i
    for i, ci in enumerate(tab.c):
        w = k.P @ ci ** np.arange(1, s + 1)  # weights of Z_j at θ = c_i
        assert np.allclose(w, np.eye(s)[i], atol=1e-11)
    assert np.allclose(tab.A.T @ k.P @ np.ones(s), tab.b, atol=1e-12)


def test_runtime_for_picks_radau_iia_only_for_adaptive_radau_iia():
    nw = Newton(tol=0.03, max_iter=8, atol=1e-8, rtol=1e-6)
    for name, order in zip(RADAU, (2, 3, 5), strict=True):
        tab = odenet.tableau(name)
        assert isinstance(runtime_for(tab, D, D, "cpu", nw, fixed=False), RadauIIA)
        assert not isinstance(runtime_for(tab, D, D, "cpu", nw, fixed=True), RadauIIA)
        # the controller's exponent 1/(s + 1): an estimate of order h^(s+1)
        assert tab.is_adaptive and tab.error_order == order
    other = odenet.tableau("gauss_legendre4")
    assert not isinstance(runtime_for(other, D, D, "cpu", nw, fixed=False), RadauIIA)


def _vdp(t, y):
    return torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])


def _one_step(name, f, y0, t0, h, tol=1e-14):
    """One RadauIIA step of ``f`` from ``(t0, y0)``: the StepResult and the method."""
    tab = odenet.tableau(name)
    rk = RadauIIA(tab, D, D, "cpu", RadauNewton(tol=0.03, max_iter=30, atol=tol, rtol=tol))

    def g(s, y):
        return f(s[0], y[0])[None]

    s = torch.full((1,), t0, dtype=D)
    hh = torch.full((1,), h, dtype=D)
    y = y0[None]
    return rk.step(g, s, y, hh, g(s, y)), rk


@pytest.mark.parametrize("name", RADAU)
def test_one_step_matches_the_fixed_step_stages(name):
    # the same collocation solution as the generic fully implicit stepper
    y0 = torch.tensor([2.0, 0.0], dtype=D)
    fixed = odenet.solve(_vdp, y0, span(0.0, 0.1), method=name, step_size=0.1).ys[-1]
    res, rk = _one_step(name, _vdp, y0, 0.0, 0.1)
    assert bool(res.ok.all())
    assert torch.allclose(res.y1[0], fixed, rtol=0, atol=1e-13)
    # dense output at θ = 1 is the step's end
    h = torch.full((1,), 0.1, dtype=D)
    end = rk.interpolate(torch.ones(1, dtype=D), y0[None], res.y1, None, None, h, res.ks)
    assert torch.allclose(end, res.y1, atol=1e-13)


def _exp_sin(t, y):
    return y * torch.cos(t)  # y = exp(sin t)


@pytest.mark.parametrize(("name", "order", "steps"), [
    ("radau_iia3", 3, (8, 16, 32, 64)),
    ("radau_iia5", 5, (4, 8, 16, 32)),
    ("radau_iia9", 9, (2, 3, 4, 6)),
])  # fmt: skip
def test_observed_order_on_a_closed_form(name, order, steps):
    # fixed steps of the adaptive machinery (RadauIIA.step), y' = y cos t on [0, 3]
    errs = []
    for N in steps:
        h = 3.0 / N
        y = torch.ones(1, dtype=D)
        for i in range(N):
            res, _ = _one_step(name, _exp_sin, y, i * h, h)
            assert bool(res.ok.all())
            y = res.y1[0]
        errs.append(abs(float(y[0]) - math.exp(math.sin(3.0))))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.4, (errs, slope)


@pytest.mark.parametrize("name", RADAU)
def test_the_error_estimate_has_order_s_plus_1_and_bounds_the_local_error(name):
    s = odenet.tableau(name).stages
    hs = [0.2 / 2**j for j in range(4)] if s < 5 else [0.4 / 2**j for j in range(4)]
    est, true = [], []
    for h in hs:
        # from t0 = 0.5: at 0, y''' = 0 and the order-2 estimate's leading term vanishes
        y0 = torch.full((1,), math.exp(math.sin(0.5)), dtype=D)
        res, _ = _one_step(name, _exp_sin, y0, 0.5, h)
        est.append(float(res.error.abs().max()))
        true.append(abs(float(res.y1[0, 0]) - math.exp(math.sin(0.5 + h))))
    slope = np.polyfit(np.log(hs), np.log(est), 1)[0]
    assert abs(slope - (s + 1)) < 0.3, (est, slope)
    # the method's own local error is O(h^(2s)): the estimate is conservative
    assert all(e > t for e, t in zip(est, true, strict=True)), (est, true)


@pytest.mark.parametrize("name", RADAU)
def test_the_filtered_estimate_stays_bounded_on_a_stiff_component(name):
    # y' = λ y with hλ = −1e6: the raw estimate γ0 h f0 grows like hλ, the filtered one
    # is damped (Hairer & Wanner IV.8); the step itself is L-stable
    lam = -1e7
    res, _ = _one_step(name, lambda t, y: lam * y, torch.ones(1, dtype=D), 0.0, 0.1)
    assert abs(float(res.y1[0, 0])) < 1e-5
    assert float(res.error.abs().max()) < 2.0


@pytest.mark.parametrize("name", RADAU)
def test_gradcheck_of_one_step(name):
    def run(a, y0):
        def f(t, y):
            return torch.stack([y[1], a * (1 - y[0] ** 2) * y[1] - y[0]])

        tab = odenet.tableau(name)
        rk = RadauIIA(tab, D, D, "cpu", RadauNewton(tol=0.03, max_iter=30, atol=1e-13, rtol=1e-13))
        rk.track_grad = True

        def g(s, y):
            return torch.stack([f(s[k], y[k]) for k in range(y.shape[0])])

        s = torch.zeros(1, dtype=D)
        h = torch.full((1,), 0.2, dtype=D)
        y = y0[None]
        return rk.step(g, s, y, h, g(s, y)).y1

    a = torch.tensor(3.0, dtype=D, requires_grad=True)
    y0 = torch.tensor([1.5, -0.5], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(run, (a, y0), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rtol", [1e-4, 1e-8])
def test_adaptive_radau_meets_the_tolerance_on_a_closed_form(rtol):
    # at the step ends (the stiff component's error is damped by the stiffness, so the
    # steps grow fast; dense output between them is the order-3 collocation polynomial)
    prob = P.get_problem("prothero_robinson", lam=-1e6)
    t = span(*prob.span)
    sol = odenet.solve(prob.f, prob.y0_tensor(), t, method="radau_iia5", rtol=rtol, atol=rtol)
    err = np.abs(sol.ys.numpy() - prob.solution(t.numpy())).max()
    assert err <= 10 * rtol
    # a stiff problem is integrated in steps set by accuracy, not stability
    assert sol.stats["steps"] < 60


def test_a_linear_problem_needs_one_jacobian():
    A = torch.tensor([[-1000.0, 1.0], [0.0, -0.5]], dtype=D)
    sol = odenet.solve(
        lambda t, y: A @ y, torch.ones(2, dtype=D), span(0, 10), method="radau_iia5", rtol=1e-6
    )
    exact = torch.linalg.matrix_exp(10 * A) @ torch.ones(2, dtype=D)
    assert torch.allclose(sol.ys[-1], exact, rtol=1e-5, atol=1e-8)
    assert sol.stats["jacobians"] == 1


def test_dense_output_between_steps_is_accurate():
    prob = P.get_problem("van_der_pol", mu=5.0, t1=6.0)
    t = torch.linspace(0, 6, 61, dtype=D)
    sol = odenet.solve(prob.f, prob.y0_tensor(), t, method="radau_iia5", rtol=1e-8, atol=1e-10)
    ref = solve_ivp(
        prob.f_numpy, (0, 6), prob.y0, t_eval=t.numpy(), rtol=1e-12, atol=1e-12, method="Radau"
    )
    assert np.abs(sol.ys.numpy() - ref.y.T).max() < 1e-5


def test_gradient_through_an_adaptive_radau_solve():
    a = torch.tensor(-0.7, dtype=D, requires_grad=True)
    y0 = torch.tensor([1.5], dtype=D)
    yT = odenet.solve(
        lambda t, y: a * y, y0, span(0.0, 2.0), method="radau_iia5", rtol=1e-10, atol=1e-12
    ).ys[-1, 0]
    yT.backward()
    assert math.isclose(float(a.grad), 2.0 * 1.5 * math.exp(-1.4), rel_tol=1e-6)


def test_a_too_large_first_step_ends_in_a_bounded_number_of_steps():
    prob = P.get_problem("van_der_pol_stiff", t1=1.0)
    sol = odenet.solve(
        prob.f, prob.y0_tensor(), span(0, 1), method="radau_iia5", rtol=1e-6, first_step=1.0
    )
    assert sol.stats["steps"] < 200
    ref = prob.solution([1.0])[0]
    assert np.abs(sol.ys[-1].numpy() - ref).max() / np.abs(ref).max() < 1e-4


def test_per_sample_rows_run_together():
    def f(t, y):
        return torch.stack([y[:, 1], 50 * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], dim=1)

    y0 = torch.tensor([[2.0, 0.0], [1.0, 0.5], [-1.5, 0.1]], dtype=D)
    t = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.5, 1.5]], dtype=D)
    sol = odenet.solve(f, y0, t, method="radau_iia5", rtol=1e-7, atol=1e-9)
    for b in range(3):

        def fn(tt, y):
            return [y[1], 50 * (1 - y[0] ** 2) * y[1] - y[0]]

        ref = solve_ivp(fn, t[b].tolist(), y0[b].tolist(), method="Radau", rtol=1e-12, atol=1e-12)
        assert np.abs(sol.ys[b, -1].numpy() - ref.y[:, -1]).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("rtol", [1e-3, 1e-6])
def test_work_against_scipy_radau_on_van_der_pol_relaxation(rtol):
    # the targets: error within 10x of scipy's Radau, f-evaluations ≤ 1.2x and
    # no more Jacobians (scipy's nfev leaves out its finite-difference Jacobian calls,
    # odenet's nfe counts one per autograd Jacobian).  Measured: Jacobians 83/98 and
    # 185/309, f-evaluations 0.98x and 1.07x (radau_trace.py grid)
    name = "van_der_pol_relaxation"
    prob, d = P.get_problem(name), P.STIFF_SUITE[name]
    sol = odenet.solve(
        prob.f, prob.y0_tensor(), span(*prob.span), method="radau_iia5", rtol=rtol, atol=d * rtol
    )
    ours = P.stiff_error(prob, sol.ys[-1], d)
    theirs, ref = radau_error(
        prob.f_numpy, prob.span, prob.y0, rtol, d * rtol, lambda y: P.stiff_error(prob, y, d)
    )
    assert ours <= 10 * theirs, (ours, theirs)
    assert sol.stats["nfe"] <= 1.2 * ref.nfev
    assert sol.stats["jacobians"] <= ref.njev


def _errors_beside_scipy_radau(name, problem, rtol):
    """``name``'s and scipy Radau's errors (``stiff_error``) at the end of a stiff-suite
    problem, same rtol and atol; the solve must succeed."""
    prob, d = P.get_problem(problem), P.STIFF_SUITE[problem]
    sol = odenet.solve(
        prob.f, prob.y0_tensor(), span(*prob.span), method=name, rtol=rtol, atol=d * rtol
    )
    assert bool(sol.success)
    ours = P.stiff_error(prob, sol.ys[-1], d)
    theirs, _ = radau_error(
        prob.f_numpy, prob.span, prob.y0, rtol, d * rtol, lambda y: P.stiff_error(prob, y, d)
    )
    return ours, theirs


@pytest.mark.parametrize(
    ("problem", "rtol"),
    [
        ("hires", 1e-3),
        ("van_der_pol_relaxation", 1e-3),
        pytest.param("hires", 1e-6, marks=pytest.mark.slow),
    ],
)
def test_radau_iia3_error_is_within_10x_of_scipy_radau(problem, rtol):
    # the must-hold for every stiff method, against scipy's Radau (order 5) on
    # the same problem, rtol and atol; the reference is scipy Radau at rtol 1e-13.
    # Before the estimate's safety factor κ and the tighter Newton stop (radau_error_safety)
    # these ended at 54x, 27x and 31x scipy's error (3.2x, 2.7x, 1.2x with S = 5); Robertson at
    # 1e-6 (14x before): test_adaptive_variants_against_scipy_radau_at_rtol_1e_6
    ours, theirs = _errors_beside_scipy_radau("radau_iia3", problem, rtol)
    assert ours <= 10 * theirs, (ours, theirs)


def test_radau_error_safety_follows_the_derived_exponent():
    # κ = S·rtol^(−1/8) for two stages (the local error of y1 matched to RADAU5's at the
    # same rtol), exactly 1 for three and more stages (RADAU5 itself, radau.f's estimate)
    from odenet._radau import ERROR_SAFETY_S2, radau_error_safety

    assert radau_error_safety(3, 1e-6) == 1.0 and radau_error_safety(5, 1e-10) == 1.0
    assert math.isclose(radau_error_safety(2, 1e-8), ERROR_SAFETY_S2 * 10.0, rel_tol=1e-12)
    ratio = radau_error_safety(2, 1e-3) / radau_error_safety(2, 1e-6)
    assert math.isclose(ratio, 1e3 ** (-1 / 8), rel_tol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("radau_iia9", "van_der_pol_relaxation"),
        ("radau_iia9", "robertson_long"),
        ("radau_iia3", "robertson_long"),
    ],
)
def test_adaptive_variants_against_scipy_radau_at_rtol_1e_6(name, problem):
    # a tight reference (scipy Radau at 1e-13); error within 10x of scipy Radau's at the
    # same rtol (radau_iia3: 0.48x measured here, 14x before radau_error_safety)
    ours, theirs = _errors_beside_scipy_radau(name, problem, 1e-6)
    assert ours <= 10 * theirs, (ours, theirs)


@pytest.mark.parametrize("batched", [False, True])
def test_the_predictive_controller_does_not_keep_h_when_a_jacobian_is_due(batched):
    # scipy's Radau: a factor in [1, 1.2] keeps h (the LU is reused) unless the method
    # recomputes its Jacobian after this step; then h grows by the factor itself
    from odenet._controller import PredictiveController
    from odenet._ops import HostOps, TensorOps

    ctrl = PredictiveController()
    ops = TensorOps if batched else HostOps
    like = torch.ones(2, dtype=D) if batched else None
    mem = ctrl.init_memory(ops, like)
    h = torch.full((2,), 0.1, dtype=D) if batched else 0.1
    r = torch.full((2,), 0.5, dtype=D) if batched else 0.5  # factor 0.9·0.5^(−1/4) ≈ 1.07
    _, kept, _ = ctrl.judge(ops, h, r, None, mem, 3)
    _, grown, _ = ctrl.judge(ops, h, r, None, mem, 3, refresh=True)
    expect = 0.1 * ctrl.safety * 0.5 ** (-1 / 4)
    assert np.allclose(np.asarray(kept, dtype=float), 0.1, rtol=0, atol=0)
    assert np.allclose(np.asarray(grown, dtype=float), expect, rtol=1e-14)
    assert 1.0 < expect / 0.1 < ctrl.keep_max


def test_a_second_rejection_at_a_jump_shrinks_by_the_observed_order():
    """y' = −50(y − H(t − t_d)) has the closed form 1 − exp(−50(t − t_d)) after t_d.
    A step across the jump has an error falling like h^0.5 … h^2, not h^4: with the
    observed-order rule radau_iia5 reaches the same accuracy with far fewer rejections
    than with the classical factor alone (rule off), over jump positions that fall
    anywhere in a step (measured: 25 positions, rejections 182 -> 107, nfe −17 %)."""
    from odenet._controller import PredictiveController

    lam, T, rtol = 50.0, 3.0, 1e-3
    rejected = {}
    for observed in (0.0, 0.5):
        rejected[observed] = 0
        for td in np.linspace(1.0, 1.2, 9):

            def f(t, y, td=td):
                return -lam * (y - (t >= td).to(y.dtype))

            sol = odenet.solve(
                f,
                torch.zeros(1, dtype=D),
                span(0.0, T),
                method="radau_iia5",
                rtol=rtol,
                atol=rtol,
                controller=PredictiveController(observed_order=observed),
            )
            assert sol.success
            exact = 1 - math.exp(-lam * (T - td))
            assert abs(float(sol.ys[-1, 0]) - exact) < rtol
            rejected[observed] += int(sol.stats["rejected"])
    assert rejected[0.5] < 0.75 * rejected[0.0], rejected


def test_radau_iia3_kappa_is_capped_at_the_dtype_resolution_and_float32_ends_quickly():
    from odenet._radau import radau_error_safety

    eps32 = torch.finfo(torch.float32).eps
    assert radau_error_safety(2, 1e-6) > 40  # 8·rtol^(-1/8)
    assert radau_error_safety(2, 1e-6, eps32) == 1.0
    eps64 = torch.finfo(torch.float64).eps
    assert radau_error_safety(2, 1e-8, eps64) == radau_error_safety(2, 1e-8)
    mu = 100.0

    def vdp(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    ref = odenet.solve(
        vdp,
        torch.tensor([2.0, 0.0], dtype=torch.float64),
        torch.tensor([0.0, 20.0], dtype=torch.float64),
        method="radau_iia5",
        rtol=1e-10,
        atol=1e-10,
    ).ys[-1]
    sol = odenet.solve(
        vdp,
        torch.tensor([2.0, 0.0]),
        torch.tensor([0.0, 20.0]),
        method="radau_iia3",
        rtol=1e-6,
        atol=1e-6,
        max_steps=20_000,
        throw=False,
    )
    if sol.status == 0:
        assert (sol.ys[-1].double() - ref).abs().max() < 1e-3 * ref.abs().max()
    else:
        assert sol.status in (1, 2, 4)


@pytest.mark.parametrize(
    ("problem", "rtol", "jacobians"),
    [("oregonator", 1e-3, 1.0), ("oregonator", 1e-4, 1.0), ("robertson_long", 1e-5, 0.8)],
)
def test_radau_iia5_evaluates_fewer_jacobians_than_scipy_radau(problem, rtol, jacobians):
    # issue 14's must-hold: Jacobians ≤ scipy Radau's, f-evaluations ≤ 1.2x, error within
    # 10x, same rtol and atol.  With scipy's rule alone (J again after every slow accepted
    # step, no kept current J) the Oregonator took 139 vs 135 and 190 vs 187 Jacobians
    # and Robertson 59 vs 59; with a kept J below θ = 0.2 123, 146 and 40; with
    # kept_jacobian_converges 114, 139 and 40 (radau_trace.py grid)
    prob, d = P.get_problem(problem), P.STIFF_SUITE[problem]
    sol = odenet.solve(
        prob.f, prob.y0_tensor(), span(*prob.span), method="radau_iia5", rtol=rtol, atol=d * rtol
    )
    assert bool(sol.success)
    theirs, ref = radau_error(
        prob.numpy_field(), prob.span, prob.y0, rtol, d * rtol, lambda y: P.stiff_error(prob, y, d)
    )
    assert sol.stats["jacobians"] <= jacobians * ref.njev, (sol.stats["jacobians"], ref.njev)
    assert sol.stats["nfe"] <= 1.2 * ref.nfev, (sol.stats["nfe"], ref.nfev)
    ours = P.stiff_error(prob, sol.ys[-1], d)
    assert ours <= 10 * theirs, (ours, theirs)


def test_only_radau_iia5_keeps_a_current_jacobian_after_a_slow_iteration():
    # radau_iia3/9 keep scipy's rule (their measured tables)
    keeps = {}
    for name in ("radau_iia3", "radau_iia5", "radau_iia9"):
        nw = RadauNewton(tol=1e-6, max_iter=8, atol=1e-6, rtol=1e-3)
        rk = runtime_for(odenet.tableau(name), D, D, "cpu", nw, fixed=False)
        keeps[name] = rk.keep_current_jacobian
    assert keeps == {"radau_iia3": False, "radau_iia5": True, "radau_iia9": False}


@settings(max_examples=200, deadline=None)
@given(
    n_iter=st.integers(3, 8),
    rate=st.floats(1e-6, 0.6, allow_nan=False),
    cap=st.integers(4, 12),
)
def test_a_kept_jacobian_is_kept_when_the_aged_iteration_fits_the_cap(n_iter, rate, cap):
    # a second method: iterate the aged rate 2θ until it has contracted as much as the
    # slow step's θ^(n − 1), counting iterations (the first one sets the scale)
    from odenet._radau import kept_jacobian_converges

    target = (n_iter - 1) * math.log(rate)
    m, reached = 1, 0.0
    while 2 * rate < 1 and m < 100 and reached > target * (1 + 1e-12):
        m, reached = m + 1, reached + math.log(2 * rate)
    fits = 2 * rate < 1 and m <= cap
    assert kept_jacobian_converges(n_iter, rate, cap) == fits


def test_the_kept_jacobian_rule_reads_the_iteration_count():
    # θ = 0.19 after five iterations (DETEST D5, rtol 1e-6) cannot reach θ⁴ at ~0.38 in six
    # iterations: J is refreshed (a fixed θ < 0.2 kept it, and the next step failed);
    # θ = 0.25 after three reaches θ² at 0.5 in five: J is kept (θ < 0.2 refreshed it)
    from odenet._radau import kept_jacobian_converges

    assert not kept_jacobian_converges(5, 0.19, 6)
    assert kept_jacobian_converges(3, 0.25, 6)
    assert not kept_jacobian_converges(3, 0.5, 100)


def test_the_kept_jacobian_rule_reads_the_measured_aging():
    # Burgers (stiff_holdout6.py, rtol 1e-3): three iterations at θ = 0.088 on a current
    # J are kept at twice the rate (θ² at 0.18 in 3.8 iterations) and, after kept ones
    # failed twice, refreshed at eight times (0.70: 14.8 iterations)
    from odenet._radau import kept_jacobian_converges

    assert kept_jacobian_converges(3, 0.088, 6, aging=2.0)
    assert kept_jacobian_converges(3, 0.088, 6, aging=4.0)
    assert not kept_jacobian_converges(3, 0.088, 6, aging=8.0)
    assert not kept_jacobian_converges(2, 0.2, 6, aging=5.0)  # aged rate 1: never


# --- issue 14 hold-out (H5): Prothero–Robinson and a finite-time blow-up ---------------


@pytest.mark.parametrize("t0, h", [(3.7449, 6.255), (1.1111, 6.958), (0.4681, 3.277)])
def test_one_radau_iia5_step_is_scipy_radaus_step_on_prothero_robinson(t0, h):
    # the hold-out cell Prothero–Robinson λ = −1e4, rtol 1e-3 (62× scipy Radau's error) is
    # not inside the step: from the same (t0, y0, h) both give the same y1 (measured bit-equal);
    # the gap is where each grid puts its last step (stiff_holdout_results.md, 2026-12-02)
    lam = -1e4
    y0 = math.sin(t0) + 1e-7
    r = solve_ivp(
        lambda t, y: lam * (y - np.sin(t)) + np.cos(t),
        (t0, t0 + h), [y0], method="Radau", rtol=1e-3, atol=1e-6, first_step=h,
    )  # fmt: skip
    assert r.success and len(r.t) == 2  # one step, as below
    sol = odenet.solve(
        lambda t, y: lam * (y - torch.sin(t)) + torch.cos(t),
        torch.tensor([y0], dtype=D), span(t0, t0 + h), method="radau_iia5",
        rtol=1e-3, atol=1e-6, first_step=h,
    )  # fmt: skip
    assert int(sol.stats["accepted"]) == 1 and int(sol.stats["rejected"]) == 0
    y_ode, y_sp = float(sol.ys[-1, 0]), float(r.y[0, -1])
    # the step's own error is ~1e-4 here: agreement to 1e-12 is the same computation
    assert abs(y_ode - y_sp) <= 1e-12 * abs(y_sp)
    assert abs(y_sp - math.sin(t0 + h)) > 1e-6


@pytest.mark.parametrize("t1", [8.0, 10.0, 12.5])
def test_radau_iia5_f_evaluations_on_prothero_robinson_within_1_2x_scipy_radau(t1):
    # issue 14 must-hold (f-evaluations ≤ 1.2× scipy Radau's).  Before the controller's
    # `refiltered` rule every end of [6, 15] at rtol 1e-8 was above it (t1 = 10: 701 against
    # 532): the near-zero estimate of a retry's second filtering entered Gustafsson's
    # prediction and cut h by ~2.5 twice per cycle (stiff_results.md)
    lam, rtol, atol = -1e4, 1e-8, 1e-11
    r = solve_ivp(
        lambda t, y: lam * (y - np.sin(t)) + np.cos(t), (0.0, t1), [0.0], method="Radau",
        rtol=rtol, atol=atol,
    )  # fmt: skip
    sol = odenet.solve(
        lambda t, y: lam * (y - torch.sin(t)) + torch.cos(t), torch.zeros(1, dtype=D),
        span(0.0, t1), method="radau_iia5", rtol=rtol, atol=atol,
    )  # fmt: skip
    # scipy's nfev leaves out its finite-difference Jacobian's calls; one autograd
    # Jacobian is one f-call here
    own = int(sol.stats["nfe"]) - int(sol.stats["njev"])
    assert own <= 1.2 * r.nfev
    assert abs(float(sol.ys[-1, 0]) - math.sin(t1)) <= 10 * rtol


def test_a_finite_time_blow_up_ends_in_an_underflow_as_scipy_radau():
    # y' = y², y(0) = 1 blows up at t = 1.  scipy's Radau stops after ~160 steps ("step size
    # less than spacing between numbers"); radau_iia5 accepted ~1300 steps with t + h == t
    # (h down to 1e-155) and ended in a Newton failure after 1399 steps.  A second row
    # (y0 = 0.1, blow-up at t = 10) in the same batch still ends at the closed form.
    r = solve_ivp(lambda t, y: y**2, (0, 2), [1.0], method="Radau", rtol=1e-3, atol=1e-6)
    assert r.status == -1 and "spacing" in r.message
    sol = odenet.solve(
        lambda t, y: y**2, torch.ones(1, dtype=D), span(0.0, 2.0), method="radau_iia5",
        rtol=1e-3, atol=1e-6, throw=False, max_steps=3000,
    )  # fmt: skip
    assert int(sol.status) == int(odenet.Status.STEP_UNDERFLOW)
    assert int(sol.stats["steps"]) <= 1.5 * len(r.t)
    with pytest.raises(odenet.StepSizeUnderflowError, match="underflow"):
        odenet.solve(
            lambda t, y: y**2, torch.ones(1, dtype=D), span(0.0, 2.0), method="radau_iia5",
            rtol=1e-3, atol=1e-6, max_steps=3000,
        )  # fmt: skip
    tb = torch.tensor([[0.0, 2.0], [0.0, 2.0]], dtype=D)
    sol = odenet.solve(
        lambda t, y: y**2, torch.tensor([[1.0], [0.1]], dtype=D), tb, method="radau_iia5",
        rtol=1e-3, atol=1e-6, throw=False, max_steps=3000,
    )  # fmt: skip
    assert sol.status.tolist() == [int(odenet.Status.STEP_UNDERFLOW), 0]
    assert abs(float(sol.ys[1, -1, 0]) - 1 / (1 / 0.1 - 2)) < 1e-3 * 0.125


def _radau_trace():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
    import radau_trace

    return radau_trace


def test_radau_traces_scipy_rules_controller_takes_scipy_radaus_steps():
    # radau_trace.py's `controllers` study (stiff_results.md, H1 2026-12-02) compares
    # odenet's controller with scipy Radau's rules; its "scipy" variant must take scipy's
    # own steps where the step itself is the same computation (Prothero–Robinson: exact
    # and finite-difference Jacobians agree), and its "current" one odenet's default's
    rt = _radau_trace()
    lam, rtol, atol = -1e4, 1e-5, 1e-8
    ref = solve_ivp(
        lambda t, y: lam * (y - np.sin(t)) + np.cos(t), (0.0, 10.0), [0.0], method="Radau",
        rtol=rtol, atol=atol,
    )  # fmt: skip

    def accepted_times(variant):
        ctrl = None if variant is None else rt.ScipyRules(**rt.VARIANTS[variant])
        sol = odenet.solve(
            lambda t, y: lam * (y - torch.sin(t)) + torch.cos(t), torch.zeros(1, dtype=D),
            span(0.0, 10.0), method="radau_iia5", rtol=rtol, atol=atol, controller=ctrl,
        )  # fmt: skip
        return sol, (None if ctrl is None else [h for h, _, acc in ctrl.log if acc])

    sol, hs = accepted_times("scipy")
    t = np.cumsum(hs)
    # the same 13 steps, with scipy's two rejections on the way (its rules for those too)
    assert len(t) == len(ref.t) - 1 and int(sol.stats["rejected"]) == 2
    assert np.allclose(t, ref.t[1:], rtol=1e-4, atol=0)
    default, _ = accepted_times(None)
    current, hs_current = accepted_times("current")
    assert current.stats == default.stats and torch.equal(current.ys, default.ys)
    assert len(hs_current) != len(hs)  # RADAU5's rules take other steps here


# --- issue 14 hold-out (stiff_holdout4): a Newton stopped on a fast component's rate ---


def test_remaining_error_is_the_classic_one_when_every_component_contracts_alike():
    from odenet._radau import _remaining

    prev = torch.tensor([[4.0, 1.0, 0.25]], dtype=D)
    theta = 0.3
    a2 = prev * theta**2
    classic = theta / (1 - theta) * a2.mean(dim=1).sqrt()
    left, stalled, _ = _remaining(a2, prev, 0.03, 4)
    assert torch.allclose(left, classic, rtol=1e-12)
    assert float(stalled) == 0.0
    # one slow component hidden under a fast one: the aggregate ratio reads 0.1, the
    # slow one contracts at 0.7 and what is left is dominated by it
    prev = torch.tensor([[100.0, 0.25]], dtype=D)
    a2 = torch.tensor([[100.0 * 0.05**2, 0.25 * 0.7**2]], dtype=D)
    aggregate = (a2.sum() / prev.sum()).sqrt()
    assert aggregate < 0.1
    slow = 0.7 / 0.3 * math.sqrt(a2[0, 1] / 2)
    assert float(_remaining(a2, prev, 0.03, 4)[0]) >= slow
    # a round-off component is ignored whatever its ratio
    tiny = torch.tensor([[1e-2, 1e-20]], dtype=D)
    left, stalled, _ = _remaining(tiny * torch.tensor([[0.01, 4.0]], dtype=D), tiny, 0.03, 4)
    assert math.isfinite(float(left)) and float(stalled) == 0.0


@pytest.mark.parametrize("iterations_left, counted", [(4, 4), (1, 1), (0, 1)])
def test_a_component_that_does_not_contract_counts_its_increment_per_iteration_left(
    iterations_left, counted
):
    # no geometric tail: its increment once per iteration left (at least once), in both
    # values; a large one that grows makes them large, a small one does not block the stop
    from odenet._radau import _remaining

    prev = torch.tensor([[1e-2, 1e-4]], dtype=D)
    a2 = prev * torch.tensor([[0.1, 1.5]], dtype=D) ** 2  # θ = 0.1, 1.5
    left, stalled, _ = _remaining(a2, prev, 0.03, iterations_left)
    own = counted * math.sqrt(float(a2[0, 1]) / 2)
    assert float(stalled) == pytest.approx(own, rel=1e-12)
    fast = 0.1 / 0.9 * math.sqrt(float(a2[0, 0]) / 2)
    assert float(left) == pytest.approx(math.hypot(fast, own), rel=1e-12)
    grown = _remaining(a2 * 1e6, prev * 1e6, 0.03, iterations_left)
    assert float(grown[1]) == pytest.approx(own * 1e3, rel=1e-12)


def test_the_doubtful_part_is_the_share_of_components_at_the_first_ratio_bound_or_slower():
    # the third value: what the contracting components with θ ≥ FIRST_RATIO_DOUBT leave
    # (radau_iia5 does not take the looser stop on their first ratio)
    from odenet._radau import FIRST_RATIO_DOUBT, _remaining

    prev = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=D)
    th = torch.tensor([[0.1, FIRST_RATIO_DOUBT, 0.72, 1.5]], dtype=D)
    a2 = prev * th**2
    left, stalled, doubtful = _remaining(a2, prev, 1e-6, 3)
    share = [t / (1 - t) * t for t in (FIRST_RATIO_DOUBT, 0.72)]  # η |ΔW|, |ΔW| = θ
    assert float(doubtful) == pytest.approx(math.sqrt(sum(x * x for x in share) / 4))
    assert float(stalled) == pytest.approx(3 * 1.5 / 2)
    assert float(doubtful) < float(left)
    # all below the bound: nothing doubtful
    assert float(_remaining(prev * 0.49**2, prev, 1e-6, 3)[2]) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    prev=st.lists(st.floats(1e-4, 1e4), min_size=1, max_size=6),
    theta=st.floats(0.01, 0.95),
    slower=st.integers(0, 5),
    bump=st.floats(0.0, 0.04),
)
def test_remaining_error_laws(prev, theta, slower, bump):
    # every component at one rate: the classic θ/(1 − θ)‖ΔW‖; one component slower: never
    # less than that, and at least that component's own share
    from odenet._radau import _remaining

    p = torch.tensor([prev], dtype=D)
    tol = 1e-6  # far below every increment: all components significant
    same = p * theta**2
    classic = theta / (1 - theta) * same.mean(dim=1).sqrt()
    left, stalled, _ = _remaining(same, p, tol, 3)
    assert torch.allclose(left, classic, rtol=1e-9, atol=1e-300)
    assert float(stalled) == 0.0
    j = slower % p.shape[1]
    th = torch.full_like(p, theta)
    th[0, j] = theta + bump
    a2 = p * th**2
    mixed = float(_remaining(a2, p, tol, 3)[0])
    assert mixed >= float(theta / (1 - theta) * a2.mean(dim=1).sqrt()) * (1 - 1e-12)
    own = (theta + bump) / (1 - theta - bump) * math.sqrt(float(a2[0, j]) / p.shape[1])
    assert mixed >= own * (1 - 1e-12)


def _stick_slip(t, y, xp=torch):
    # a mass on a spring dragged by a belt (speed 0.2) through smoothed Coulomb friction
    # with a Stribeck drop (studies/benchmarks/stiff_holdout4.py): stuck, the Jacobian has
    # −μ/ε ≈ −4e3; slipping, it is a harmonic oscillator
    eps = 1e-4
    x, v = y[..., 0], y[..., 1]
    vr = 0.2 - v
    mu = 0.3 + 0.1 * xp.exp(-xp.sqrt(vr * vr + eps * eps) / 0.1)
    return xp.stack([v, -x + mu * xp.tanh(vr / eps)], -1)


@functools.cache
def _stick_slip_reference():
    """scipy Radau at rtol 1e-11 on the 201 outputs of [0, 50] (from rest)."""
    ts = np.linspace(0.0, 50.0, 201)
    ref = solve_ivp(
        lambda t, y: _stick_slip(t, y, np),
        (0.0, 50.0),
        [0.0, 0.0],
        method="Radau",
        rtol=1e-11,
        atol=1e-14,
        t_eval=ts,
    ).y.T
    return ts, ref


def _stick_slip_error(name, rtol):
    """Largest error over the outputs over ``rtol`` (``atol = 1e-3·rtol``)."""
    ts, ref = _stick_slip_reference()
    sol = odenet.solve(
        _stick_slip,
        torch.zeros(2, dtype=D),
        torch.tensor(ts, dtype=D),
        method=name,
        rtol=rtol,
        atol=1e-3 * rtol,
    )
    assert bool(sol.success)
    return np.abs(sol.ys.numpy() - ref).max() / rtol


@pytest.mark.parametrize("name", ["radau_iia3", "radau_iia9"])
def test_radau_does_not_step_over_a_stick_to_slip_fold(name):
    # rtol 1e-3: radau_iia5 took a step of 2.3 from the stuck phase across the fold at
    # t ≈ 29.3 on a Jacobian stiff at its start and not over it; Newton stopped after two
    # iterations on the total contraction rate (0.11) while the velocity contracted at
    # 0.5–0.7, the slip was missed and the end error was 0.2 with status ok (scipy's
    # Radau, same rule: 0.09).  Reference: scipy Radau at rtol 1e-11
    assert _stick_slip_error(name, 1e-3) < 10


def test_radau_iia5_does_not_step_over_stick_to_slip_folds_across_tolerances():
    """radau_iia5 on the same folds at seven rtols in [6e-4, 2e-3]: none above
    100·rtol (the issue's bound for status ok) in the largest error over the outputs.

    One rtol is not a test here: a fold is a saddle-node, where the slip's onset
    depends on perturbations far below the tolerance, so which steps straddle it, and
    the error after it, change with every step before it.  In the hold-out sets' end
    error (``studies/benchmarks/rtol_scan.py --problem stick_slip --lo 3e-4 --hi 3e-3
    --points 40``) radau_iia5 ends above 100·rtol at 12 of 40 rtols, 14 before RADAU5's
    Newton shrink (``newton_shrink``) and scipy's Radau at 24; that library's pass of
    the old single-rtol test (< 10·rtol at 1e-3) was luck.  What this guards is the
    per-component Newton test (``_remaining``): without it three of these seven rtols
    end 369, 523 and 473·rtol off (studies/benchmarks/stiff_results.md, session 40)."""
    errors = [_stick_slip_error("radau_iia5", r) for r in np.geomspace(6e-4, 2e-3, 7)]
    assert max(errors) <= 100, errors


def test_radau_iia5_rejects_a_step_across_which_a_filtered_mode_loses_its_stiffness():
    """Stuck, the velocity's Jacobian entry is ≈ −4e3 and the filter ``(I − hγ₀J₀)⁻¹``
    damps its error hundreds of times; a step from the stuck state over the fold, where
    that entry is −11 or positive, was accepted on such an estimate while 2–141 units
    off (``studies/benchmarks/local_error_audit.py``).  The stiffness-loss test
    (``RadauIIA._stiffness_lost``) rejects it.  Largest error over the outputs in units
    of rtol at the first three rtols, without the test 4.9, 6.5 and 65 (a /tmp run with
    ``stiffness_loss_limit = None``), with it 0.2, 1.4 and 0.3.  The last two are fold
    steps that session 42's thresholds let through (points of 16- and 40-rtol geometric
    grids in [3e-4, 3e-3], solved over the span alone; stiff_results.md, session 43): a
    free look of 1.83 where it asked for 2, an end report of 1.7e-3 units where it asked
    for 1e-2.  Here, with each threshold as it was before its change, 19.5 and 38; now
    0.4 and 0.3.  The counter counts the test's f-evaluations.

    One rtol is not a test at a fold (see above): on session 45's machine, the same
    commit, the five read 0.27, 0.57, 0.15, 0.18 and 14.95 (the last a step from the
    stuck state whose stages all stay stuck while the true flow slips: no filter sees
    it, and over the span alone it ends at 154·rtol, status ok, stiff_results.md
    session 45), and without the test 6.2, 11.3, 10.7, 7.4 and 17.7.  So the test
    asserts the median below 3 (without the stiffness-loss test 10.7 there) and each
    below the issue's 100."""
    calls = [0]

    def field(t, y):
        calls[0] += 1
        return _stick_slip(t, y)

    ts, ref = _stick_slip_reference()
    errors = []
    for rtol in (8.544e-4, 1.974e-3, 3e-3, 1.8928720334405796e-3, 2.463223574033268e-3):
        calls[0] = 0
        sol = odenet.solve(
            field,
            torch.zeros(2, dtype=D),
            torch.tensor(ts, dtype=D),
            method="radau_iia5",
            rtol=rtol,
            atol=1e-3 * rtol,
        )
        assert bool(sol.success)
        assert sol.stats["nfe"] == calls[0]
        errors.append(np.abs(sol.ys.numpy() - ref).max() / rtol)
    assert np.median(errors) < 3 and max(errors) < 100, errors


def test_radau_iia5_does_not_stop_newton_on_a_first_slow_ratio_at_a_fold():
    """The last stick_slip cell of session 43's scans above 100·rtol (1.096e-3, over the
    span alone, 102·rtol with status ok): Newton stopped after two increments on the
    one-rate test while a component's first ratio read 0.5 or slower, its stages off
    the collocation solution (a stagnating component's increments are small; hertz_bounce
    at rtol 1e-4, tests/test_stiff_holdout8.py, stopped 13 units off).  On a kept
    Jacobian such a ratio now holds every stop until the next is read: 0.15·rtol."""
    ts, ref = _stick_slip_reference()
    rtol = 1.0959888973069121e-3
    sol = odenet.solve(
        _stick_slip,
        torch.zeros(2, dtype=D),
        torch.tensor([0.0, 50.0], dtype=D),
        method="radau_iia5",
        rtol=rtol,
        atol=1e-3 * rtol,
    )
    assert bool(sol.success)
    end = sol.ys[-1].numpy()
    assert (np.abs(end - ref[-1]) / (1e-3 + np.abs(ref[-1]))).max() / rtol < 10


def test_rows_run_together_do_not_step_over_a_stick_to_slip_fold():
    # the batched Newton decides per row ([K] tensors): three rows from different starts,
    # rtol 1e-3; before the per-component test row 3 ended 0.16 off (row 1 0.013)
    y0 = torch.tensor([[0.0, 0.0], [0.1, 0.0], [-0.2, 0.1]], dtype=D)
    ts = np.linspace(0.0, 50.0, 201)
    rtol = 1e-3
    sol = odenet.solve(
        _stick_slip, y0, torch.tensor(ts, dtype=D), method="radau_iia5", rtol=rtol, atol=1e-3 * rtol
    )
    assert bool(sol.success)
    for b in range(3):
        ref = solve_ivp(
            lambda t, y: _stick_slip(t, y, np),
            (0.0, 50.0),
            y0[b].tolist(),
            method="Radau",
            rtol=1e-11,
            atol=1e-14,
            t_eval=ts,
        ).y.T
        err = np.abs(sol.ys[:, b].numpy() - ref).max()
        assert err < 10 * rtol, (b, err)


@pytest.mark.parametrize("method", ["radau_iia3", "radau_iia5", "radau_iia9"])
def test_adjoint_after_an_adaptive_radau_forward_controls_its_steps(method):
    # y' = λ(y − cos t), λ = −1e4, y(0) = 2: dy(1)/dλ in closed form.  Radau as its own
    # adjoint took one uncontrolled step per forward step: radau_iia5 33 % off at rtol
    # 1e-6 (direct: 6e-4).  The default backward method is now kvaerno5, controlled.
    def closed(lam):
        a, b = lam**2 / (1 + lam**2), -lam / (1 + lam**2)
        one = torch.tensor(1.0, dtype=torch.float64)
        return a * torch.cos(one) + b * torch.sin(one) + torch.exp(lam) * (2.0 - a)

    lam0 = torch.tensor(-1e4, dtype=torch.float64, requires_grad=True)
    truth = torch.autograd.grad(closed(lam0), lam0)[0].item()
    lam = torch.tensor(-1e4, dtype=torch.float64, requires_grad=True)
    sol = odenet.solve(
        lambda t, y: lam * (y - torch.cos(t)),
        torch.tensor([2.0], dtype=torch.float64),
        torch.tensor([0.0, 1.0], dtype=torch.float64),
        method=method, rtol=1e-6, atol=1e-8, sensitivity="adjoint",
    )  # fmt: skip
    (g,) = torch.autograd.grad(sol.ys[-1, 0], lam)
    assert abs(g.item() - truth) < 1e-2 * abs(truth)


@pytest.mark.parametrize("sensitivity", ["direct", "checkpoint"])
def test_per_sample_gradients_of_radau_equal_each_row_alone(sensitivity):
    # Van der Pol μ = 10, two rows of different lengths of work (70 and 139 steps):
    # the first row sits at its end (h = 0) while the other goes on.  Its stages were
    # iterated with a stand-in h = 1 and could diverge: NaN gradients for that row and
    # for μ, while the outputs were right.
    mu = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)

    def f(t, y):
        return torch.stack([y[..., 1], mu * ((1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0])], -1)

    y0 = torch.tensor([[2.0, 0.0], [1.5, -1.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    kw = dict(method="radau_iia5", rtol=1e-6, atol=1e-8, sensitivity=sensitivity)
    sol = odenet.solve(f, y0, t, **kw)
    g_y0, g_mu = torch.autograd.grad(sol.ys[:, -1].sum(), [y0, mu])
    alone_mu = 0.0
    for k in range(2):
        yk = y0[k].detach().clone().requires_grad_(True)
        one = odenet.solve(f, yk, t[k], **kw)
        gk, gm = torch.autograd.grad(one.ys[-1].sum(), [yk, mu])
        torch.testing.assert_close(g_y0[k], gk, rtol=1e-5, atol=1e-8)
        alone_mu += float(gm)
    assert abs(float(g_mu) - alone_mu) < 1e-5 * abs(alone_mu)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(RADAU),
    h1=st.floats(0.05, 0.5),
    ratio=st.floats(0.3, 3.0),
    t0=st.floats(-1.0, 1.0),
)
def test_each_row_starts_from_its_own_last_step(name, h1, ratio, t0):
    # y' = 2(t − t0) + 1 (y a quadratic): the collocation polynomial of every s ≥ 2 is
    # the solution itself, so extrapolating the last accepted step gives the next step's
    # stages exactly.  In a batch the loop's verdict differs per row: rows that
    # accepted start at their step's end and get that guess, a row that retries gets
    # zeros (with a batch-wide test, one retrying row took every row's guess away).
    rk = RadauIIA(odenet.tableau(name), D, D, "cpu", RadauNewton(tol=0.03, max_iter=30,
                  atol=1e-13, rtol=1e-13))  # fmt: skip

    def exact(t):
        return (t - t0) ** 2 + t

    def g(s, y):
        return (2 * (s - t0) + 1)[:, None].expand_as(y).clone()

    s = torch.full((3,), t0, dtype=D)
    h = torch.tensor([h1, h1 / 2, 2 * h1], dtype=D)
    y = exact(s)[:, None]
    out = rk.step(g, s, y, h, g(s, y))
    assert torch.allclose(out.y1[:, 0], exact(s + h), atol=1e-12)
    accept = torch.tensor([True, False, True])
    rk.last_step.verdict(accept, False)
    assert rk.last_step.rejected(s).tolist() == [False, True, False]
    s2 = torch.where(accept, s + h, s)
    h2 = h * ratio
    guess = rk._starting_guess(s2, h2, exact(s2)[:, None])  # [S, K, 1]
    c = torch.as_tensor(odenet.tableau(name).c, dtype=D)
    stages = exact(s2[None] + c[:, None] * h2[None]) - exact(s2)[None]  # [S, K]
    for k in (0, 2):
        assert torch.allclose(guess[:, k, 0], stages[:, k], atol=1e-11)
    assert torch.equal(guess[:, 1], torch.zeros_like(guess[:, 1]))
    # a trial of another batch (two rows, starting where rows 0 and 2 ended): the record
    # of three rows is not theirs — zeros and "retrying", not three rows' guesses
    # broadcast onto two or a shape error
    s3 = s2[[0, 2]]
    assert rk.last_step.rows_of(s3) is None
    assert rk.last_step.rejected(s3).tolist() == [True, True]
    guess = rk._starting_guess(s3, h2[[0, 2]], exact(s3)[:, None])
    assert torch.equal(guess, torch.zeros_like(guess))


@pytest.mark.parametrize("name", RADAU)
def test_a_step_tells_the_controller_its_newton_safety_and_jacobian_due(name):
    # the loop reads a step's advice from its result (RadauStepResult), as it reads
    # BDF's: safety = (2M + 1)/(2M + n) after n iterations of at most M (radau5.f,
    # scipy); a new Jacobian is due only after a slow iteration (> 2 at a rate > 1e-3)
    def run(f, y0, h):
        res, rk = _one_step(name, f, y0, 0.0, h, tol=1e-6)
        n, M = rk.newton.stats.iterations, rk.max_iter
        assert res.safety == pytest.approx((2 * M + 1) / (2 * M + n))
        return res, n, rk

    # linear: the simplified Newton on the exact Jacobian converges at once
    res, n, _ = run(lambda t, y: -2.0 * y, torch.ones(1, dtype=D), 0.1)
    assert n <= 2 and res.refresh is False
    # Van der Pol μ = 1000 from a large step: slow iterations on a Jacobian of the step's
    # start; radau_iia3/9 ask for a new one, radau_iia5 keeps it where the same iteration
    # on a Jacobian one step older is predicted to fit the cap (kept_jacobian_converges)
    mu = 1000.0
    res, n, rk = run(
        lambda t, y: torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]),
        torch.tensor([2.0, -0.66], dtype=D),
        0.5,
    )
    assert n > 2
    assert res.refresh is (not rk.keep_current_jacobian)
    assert rk._kept_pending is rk.keep_current_jacobian


def _radau5_hhfac(theta, dyno, fnewt, nit, newt):
    """RADAU5's step-size factor after a predicted Newton failure, transcribed from the
    Fortran (Hairer & Wanner, radau5.f): ``DYTH = θ/(1 − θ)·DYNO·θ^(NIT−1−NEWT)/FNEWT``;
    if ``DYTH ≥ 1``, ``HHFAC = 0.8·QNEWT^(−1/(4 + NIT − 1 − NEWT))`` with ``QNEWT =
    max(1e-4, min(20, DYTH))``; None where the iteration goes on (``DYTH < 1``) or has
    diverged (``θ ≥ 0.99``: RADAU5 halves)."""
    if theta >= 0.99:
        return None
    dyth = theta / (1 - theta) * dyno * theta ** (nit - 1 - newt) / fnewt
    if dyth < 1:
        return None
    qnewt = max(1e-4, min(20.0, dyth))
    return 0.8 * qnewt ** (-1.0 / (4 + nit - 1 - newt))


@settings(max_examples=300, deadline=None)
@given(
    theta=st.floats(0.01, 0.985),
    dyno=st.floats(1e-3, 1e4),
    k=st.integers(1, 5),
)
def test_newton_shrink_is_radau5s_factor(theta, dyno, k):
    """``newton_shrink`` at our iteration ``k`` (0-based, cap 6, the error left after the
    cap ``θ^(6 − k)/(1 − θ)·‖ΔW‖`` in units of tol) is RADAU5's ``HHFAC`` at ``NEWT = k +
    1`` increments of ``NIT = 7`` (scipy's cap of 6 is RADAU5's test with NIT = 7); on
    floats and [K] tensors alike, NaN where the iteration diverged or is not finite."""
    from odenet._ops import HostOps, TensorOps
    from odenet._radau import newton_shrink

    cap = 6
    predicted = theta ** (cap - k) / (1 - theta) * dyno
    expect = _radau5_hhfac(theta, dyno, 1.0, cap + 1, k + 1)
    got = newton_shrink(HostOps, predicted, theta, cap - k)
    t = newton_shrink(TensorOps, torch.tensor([predicted], dtype=D), torch.tensor([theta]), cap - k)
    if expect is None:  # not a failure: the factor is not used, but stays in (0.8, 1]
        assert predicted < 1 and 0.8 <= got <= 1.0
    else:
        assert got == pytest.approx(expect, rel=1e-12)
        assert 0.8 * 20 ** (-1 / 3) <= got <= 0.8
    assert float(t[0]) == pytest.approx(got, rel=1e-12)


def test_newton_shrink_defers_to_the_controller_where_newton_diverged():
    from odenet._ops import HostOps, TensorOps
    from odenet._radau import newton_shrink

    assert math.isnan(newton_shrink(HostOps, 5.0, 1.0, 4))
    assert math.isnan(newton_shrink(HostOps, math.nan, 0.3, 4))
    assert math.isnan(newton_shrink(HostOps, math.inf, 0.3, 4))
    pred = torch.tensor([5.0, 5.0, math.nan, 1e9], dtype=D)
    rate = torch.tensor([0.3, 1.5, 0.3, 0.3], dtype=D)
    got = newton_shrink(TensorOps, pred, rate, 4)
    assert torch.isnan(got[1:3]).all()
    assert float(got[0]) == pytest.approx(0.8 * 5 ** (-1 / 7), rel=1e-12)
    assert float(got[3]) == pytest.approx(0.8 * 20 ** (-1 / 7), rel=1e-12)  # clamped at 20


def test_a_failed_step_gets_no_second_filtering():
    # the first step counts as a retry (Hairer's second filtering, f(y0 + err), is due
    # where the first estimate rejects); where Newton failed the estimate is replaced by
    # one that rejects, so that f would be spent on nothing.  y' = y² from 1 (a blow-up
    # at t = 1), one step of h = 5: the stage equations have no real solution
    calls = []

    def g(s, y):
        calls.append((s.detach().clone(), y.detach().clone()))
        return y * y

    nw = RadauNewton(tol=0.03, max_iter=7, atol=1e-6, rtol=1e-3)
    rk = RadauIIA(odenet.tableau("radau_iia5"), D, D, "cpu", nw)
    y = torch.ones(1, 1, dtype=D)
    s = torch.zeros(1, dtype=D)
    f0 = g(s, y)
    calls.clear()
    out = rk.step(g, s, y, torch.tensor([5.0], dtype=D), f0)
    assert not bool(out.ok.any())
    # at the step's start f is evaluated only at y0 (by the Jacobian), never at y0 + err
    at_start = [yy for t, yy in calls if bool((t == 0).all())]
    assert at_start and all(torch.equal(yy, y) for yy in at_start)
