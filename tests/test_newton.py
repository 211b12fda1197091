"""The simplified Newton iteration for implicit stages (odenet._newton)."""

import numpy as np
import pytest
import torch

import odenet
from odenet._errors import VectorFieldError
from odenet._jacobian import user_jacobian
from odenet._newton import Newton, batched_jacobian, error_safety
from odenet._radau import RadauIIA, RadauNewton
from odenet._stepper import RungeKutta
from odenet.tableaus import tableau

D = torch.float64
MU = 1000.0


def vdp(s, y):
    return torch.stack([y[:, 1], MU * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], dim=1)


def stage_problem():
    # Van der Pol μ = 1000 just after a relaxation jump, one SDIRK-like stage with
    # h·a_ii = 21.2 (the numbers of the step that used to be accepted with a 64 % error)
    y = torch.tensor([[-1.98204575, 6.66400246e-04]], dtype=D)
    s = torch.zeros(1, dtype=D)
    hA = torch.full((1, 1, 1), 21.2077855, dtype=D)
    base = y[:, None]

    def G(Z):
        return vdp(s, Z[:, 0])[:, None]

    return s, y, hA, base, G


def exact_stage(s, y, hA, base, G):
    nw = Newton(tol=1e-6, max_iter=50, atol=1e-14, rtol=1e-14)
    Z, ok = nw.stages(vdp, s, y, base, hA, base.clone(), G)
    assert bool(ok.all())
    return Z


def test_a_stale_jacobian_from_the_jump_cannot_fake_convergence():
    s, y, hA, base, G = stage_problem()
    truth = exact_stage(s, y, hA, base, G)
    atol, rtol = 1e-6, 1e-3
    nw = Newton(tol=0.03, max_iter=8, atol=atol, rtol=rtol)
    # the Jacobian of the jump (x' ≈ −5): ∂f2/∂x = −1.48e6 instead of −2.6
    nw.J = torch.tensor([[[0.0, 1.0], [-1.47679526e06, -2.43496823e03]]], dtype=D)
    nw.J_fresh, nw.J_version = False, 1
    Z, ok = nw.stages(vdp, s, y, base, hA, base.clone(), G)
    scale = atol + rtol * y.abs()
    if bool(ok.all()):  # converged (after refreshing J): then to the tolerance
        assert float(((Z - truth)[:, 0] / scale).abs().max()) <= 1.0
    assert nw.stats.jacobians >= 1  # the stale Jacobian was found out and refreshed


def test_a_fresh_jacobian_converges_on_a_linear_problem_in_one_iteration():
    A = torch.tensor([[-1000.0, 1.0], [0.0, -0.5]], dtype=D)

    def g(s, y):
        return y @ A.T

    y = torch.ones(1, 2, dtype=D)
    s = torch.zeros(1, dtype=D)
    hA = torch.full((1, 1, 1), 0.1, dtype=D)
    nw = Newton(tol=0.03, max_iter=8, atol=1e-10, rtol=1e-10)
    Z, ok = nw.stages(g, s, y, y[:, None], hA, y[:, None].clone(), lambda Z: g(s, Z[:, 0])[:, None])
    exact = torch.linalg.solve(torch.eye(2, dtype=D) - 0.1 * A, y[0])
    assert bool(ok.all()) and torch.allclose(Z[0, 0], exact, rtol=1e-12)
    assert nw.stats.iterations <= 2


def test_the_filtered_estimate_is_the_resolvent_applied_to_the_raw_one():
    A = torch.tensor([[-1000.0, 1.0], [0.0, -0.5]], dtype=D)

    def g(s, y):
        return y @ A.T

    y = torch.ones(1, 2, dtype=D)
    s = torch.zeros(1, dtype=D)
    hA = torch.full((1, 1, 1), 0.1, dtype=D)
    nw = Newton(tol=0.03, max_iter=8, atol=1e-10, rtol=1e-10)
    nw.stages(g, s, y, y[:, None], hA, y[:, None].clone(), lambda Z: g(s, Z[:, 0])[:, None])
    err = torch.tensor([[1.0, 1.0]], dtype=D)
    filtered = nw.filter_error(err)
    expected = torch.linalg.solve(torch.eye(2, dtype=D) - 0.1 * A, err[0])
    assert torch.allclose(filtered[0], expected, rtol=1e-12)
    # the stiff component is damped by ~1/(1 + 100), the slow one kept
    assert float(filtered[0, 0]) < 0.02 and float(filtered[0, 1]) > 0.9


def test_batched_jacobian_is_per_row():
    y = torch.tensor([[2.0, 0.5], [-1.0, 0.1]], dtype=D)
    J = batched_jacobian(vdp, torch.zeros(2, dtype=D), y)
    for k in range(2):
        x, v = y[k]
        expected = torch.tensor([[0.0, 1.0], [-2 * MU * x * v - 1, MU * (1 - x**2)]], dtype=D)
        assert torch.allclose(J[k], expected)


def test_a_user_jacobian_replaces_autograd():
    calls = []

    def jac(s, y):
        calls.append(1)
        x, v = y[:, 0], y[:, 1]
        row0 = torch.stack([torch.zeros_like(x), torch.ones_like(x)], dim=1)
        row1 = torch.stack([-2 * MU * x * v - 1, MU * (1 - x**2)], dim=1)
        return torch.stack([row0, row1], dim=1)

    y = torch.tensor([[2.0, 0.0]], dtype=D)
    s = torch.zeros(1, dtype=D)
    h = torch.full((1,), 0.01, dtype=D)
    out = []
    for j in (None, jac):
        nw = RadauNewton(tol=0.03, max_iter=8, atol=1e-10, rtol=1e-8, jac=j)
        rk = RadauIIA(tableau("radau_iia5"), D, D, "cpu", nw)
        out.append(rk.step(vdp, s, y, h, vdp(s, y)).y1)
        assert nw.stats.jacobians == 1
    assert calls and torch.allclose(out[0], out[1], rtol=1e-12, atol=1e-14)
    # the user's jac(t, y) is wrapped into this layout, with its shape checked
    wrapped = user_jacobian(
        lambda t, y: torch.eye(3), shape=(2,), per_sample=False, direction=s + 1, sparsity=None
    )
    bad = Newton(tol=0.03, max_iter=8, atol=1e-8, rtol=1e-8, jac=wrapped)
    with pytest.raises(VectorFieldError, match="expected"):
        bad.jacobian(vdp, s, y)


# --- the DIRK pairs' error safety κ (odenet._newton.error_safety) --------------------


@pytest.mark.parametrize("method", ["kvaerno3", "kvaerno5", "sdirk4", "trbdf2"])
def test_error_safety_grows_like_rtol_to_the_minus_one_over_p(method):
    tab = tableau(method)
    S, p = tab.error_safety, tab.order
    assert error_safety(tab, 1e-2) == pytest.approx(S) and error_safety(tab, 0.5) == S
    # one decade of rtol below 1e-2 multiplies κ by 10^(1/p): the steps, N ∝ rtol^(-1/p)
    for rtol in (1e-3, 1e-6, 1e-8):
        assert error_safety(tab, rtol) == pytest.approx(S * (1e-2 / rtol) ** (1 / p), rel=1e-12)
    per_row = error_safety(tab, torch.tensor([[1e-3], [1e-6]], dtype=D))
    assert torch.allclose(
        per_row[:, 0], torch.tensor([error_safety(tab, 1e-3), error_safety(tab, 1e-6)], dtype=D)
    )


@pytest.mark.parametrize("method", ["radau_iia5", "sdirk2", "dopri5", "backward_euler"])
def test_methods_without_an_embedded_dirk_pair_have_no_error_safety(method):
    assert error_safety(tableau(method), 1e-8) == 1.0
    assert error_safety(None, 1e-8) == 1.0


def test_the_reported_estimate_is_kappa_times_the_filtered_one_and_newton_stops_inside_it():
    A = torch.tensor([[-1000.0, 1.0], [0.0, -0.5]], dtype=D)

    def g(s, y):
        return y @ A.T

    y = torch.ones(1, 2, dtype=D)
    s = torch.zeros(1, dtype=D)
    hA = torch.full((1, 1, 1), 0.1, dtype=D)
    # sdirk4, whose embedded solution is no stage, is
    # filtered; kvaerno3/5's estimates no longer are (tests/test_stiff_holdout.py)
    tab = tableau("sdirk4")
    nw = Newton(tol=0.03, max_iter=8, atol=1e-9, rtol=1e-6, tableau=tab)
    kappa = error_safety(tab, 1e-6)
    assert nw.safety == kappa > 1
    nw.stages(g, s, y, y[:, None], hA, y[:, None].clone(), lambda Z: g(s, Z[:, 0])[:, None])
    err = torch.tensor([[1.0, 1.0]], dtype=D)
    expected = torch.linalg.solve(torch.eye(2, dtype=D) - 0.1 * A, err[0]) * kappa
    assert torch.allclose(nw.filter_error(err, tab)[0], expected, rtol=1e-12)
    # TR-BDF2 propagates its lower-order solution: κ times the raw estimate, unfiltered
    tr = tableau("trbdf2")
    nw_tr = Newton(tol=0.03, max_iter=8, atol=1e-9, rtol=1e-6, tableau=tr)
    nw_tr.stages(g, s, y, y[:, None], hA, y[:, None].clone(), lambda Z: g(s, Z[:, 0])[:, None])
    assert torch.allclose(nw_tr.filter_error(err, tr), err * error_safety(tr, 1e-6), rtol=1e-12)


def test_kappa_never_asks_for_an_error_per_step_the_dtype_cannot_resolve():
    tab = tableau("kvaerno3")
    eps32 = torch.finfo(torch.float32).eps
    # float64: the cap (rtol / 100 eps) is far above κ and changes nothing
    eps64 = torch.finfo(torch.float64).eps
    assert error_safety(tab, 1e-8, eps64) == error_safety(tab, 1e-8)
    # float32 at rtol 1e-4: κ = 12·100^(1/3) ≈ 56 would ask for 1.8e-6 per step
    assert error_safety(tab, 1e-4) > 50
    assert error_safety(tab, 1e-4, eps32) == pytest.approx(1e-4 / (100 * eps32))
    assert error_safety(tab, 1e-6, eps32) == 1.0
    rows = error_safety(tab, torch.tensor([[1e-4], [1e-6]]), eps32)
    assert torch.allclose(rows[:, 0], torch.tensor([1e-4 / (100 * eps32), 1.0]))
    # and the DIRK Newton threshold (in units of tol/κ) stays above round-off
    nw = Newton(tol=None, max_iter=8, atol=1e-6, rtol=1e-4, tableau=tab, eps=eps32)
    assert nw.tol * 1e-4 / nw.safety >= 10 * eps32 * (1 - 1e-6)


def test_per_component_rtol_with_a_dirk_pair():
    # (found by the fuzz test: a per-component rtol made κ a tensor and the default
    # Newton threshold compared it with 1.0)
    y0 = torch.tensor([1.0, 5.0], dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    sol = odenet.solve(
        lambda t, y: -y, y0, t, method="kvaerno3", rtol=torch.tensor([1e-6, 1e-5]), atol=1e-8
    )
    exact = y0 * torch.exp(-t[-1])
    assert torch.allclose(sol.ys[-1], exact, rtol=1e-5, atol=0)


def test_float32_at_a_tolerance_near_its_resolution_ends_quickly_with_an_answer_or_a_status():
    # Van der Pol mu = 100 in float32 at rtol 1e-6 (8 eps): an uncapped κ made the
    # steps shrink for minutes; now each DIRK pair succeeds within 1e-3 or fails typed
    mu = 100.0

    def vdp(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    y0 = torch.tensor([2.0, 0.0])
    ref = odenet.solve(
        vdp,
        y0.double(),
        torch.tensor([0.0, 20.0], dtype=D),
        method="radau_iia5",
        rtol=1e-10,
        atol=1e-10,
    ).ys[-1]
    for method in ("kvaerno3", "kvaerno5", "sdirk4", "trbdf2"):
        sol = odenet.solve(
            vdp,
            y0,
            torch.tensor([0.0, 20.0]),
            method=method,
            rtol=1e-6,
            atol=1e-6,
            max_steps=20_000,
            throw=False,
        )
        if sol.status == 0:
            assert (sol.ys[-1].double() - ref).abs().max() < 1e-3 * ref.abs().max(), method
        else:
            assert sol.status in (1, 2, 4), (method, sol.status)


@pytest.mark.parametrize("method", ["gauss_legendre4", "radau_iia5", "sdirk4", "kvaerno5"])
def test_fixed_step_float32_stage_equations_are_solved_below_the_schemes_error(method):
    # y' = y cos t, exact e^{sin t}, 16 steps on [0, 4]: the scheme's own error is
    # 1e-6 … 3e-5 (float64).  Newton at 100·eps of float32 (1.2e-5 per step) set the
    # float32 error instead: gauss_legendre4 1.4e-4, sdirk4 4.0e-4, radau_iia5 5.0e-5,
    # kvaerno5 6.5e-5.
    import numpy as np

    f = lambda t, y: y * torch.cos(t)  # noqa: E731
    errs = {}
    for dt in (torch.float32, torch.float64):
        t = torch.linspace(0, 4, 17, dtype=dt)
        sol = odenet.solve(f, torch.ones(1, dtype=dt), t, method=method, grid_on_outputs=True)
        exact = np.exp(np.sin(t.double().numpy()))
        errs[dt] = float(np.abs(sol.ys[:, 0].double().numpy() - exact).max())
    # (1e-5 ≈ 80 eps: float32 round-off over 16 steps; radau_iia5 ends at 9.5e-6)
    assert errs[torch.float32] < 1.5 * errs[torch.float64] + 1e-5, errs


def _vdp_step(rows, h, max_iter):
    """One kvaerno5 step of Van der Pol μ = 1000 for ``rows`` [K, 2] with steps ``h``
    [K]; returns the result and the set of times (offsets from 0) f was called at."""
    seen = []

    def g(s, y):
        seen.extend(float(v) for v in s)
        return vdp(s, y)

    nw = Newton(tol=3e-4, max_iter=max_iter, atol=1e-6, rtol=1e-3)
    rk = RungeKutta(tableau("kvaerno5"), D, D, torch.device("cpu"), newton=nw)
    s = torch.zeros(len(rows), dtype=D)
    out = rk.step(g, s, rows, h, vdp(s, rows))
    return out, {round(t / float(h.max()), 12) for t in seen}


def test_a_dirk_step_whose_every_row_failed_evaluates_no_later_stage():
    # a step 100 times what Newton can take after the jump: the first implicit stage
    # fails; the later five would be evaluated for a step that is rejected anyway
    y = torch.tensor([[-1.98204575, 6.66400246e-04]], dtype=D)
    out, times = _vdp_step(y, torch.tensor([50.0], dtype=D), max_iter=2)
    c = tableau("kvaerno5").c
    assert not bool(out.ok.any())
    assert times <= {0.0, round(float(c[1]), 12)}  # the start and the first implicit stage
    assert torch.isfinite(out.y1).all()


def test_a_batch_with_one_solved_row_solves_every_stage_of_it():
    # row 0 fails at its first implicit stage, row 1 (a small step) does not: row 1's
    # step is the one it takes alone
    y = torch.tensor([[-1.98204575, 6.66400246e-04]], dtype=D).repeat(2, 1)
    h = torch.tensor([50.0, 1e-3], dtype=D)
    both, _ = _vdp_step(y, h, max_iter=8)
    alone, _ = _vdp_step(y[1:], h[1:], max_iter=8)
    assert both.ok.tolist() == [False, True] and bool(alone.ok.all())
    torch.testing.assert_close(both.y1[1], alone.y1[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(both.error[1], alone.error[0], rtol=1e-9, atol=1e-14)


def _f5(y, k=(3e11, 9e11, 1.2e8, 2e7, 1e8), xp=torch):
    # DETEST F5's rates (stiff_holdout5.py), on [K, 4] rows of torch or numpy arrays
    y1, y2, y3, y4 = y[:, 0], y[:, 1], y[:, 2], y[:, 3]
    r12, r13 = k[0] * y1 * y2, k[1] * y1 * y3
    return xp.stack(
        [-r12 + k[2] * y4 - r13, -r12 + k[3] * y4, -r13 + k[4] * y4, r12 - k[2] * y4 + r13], 1
    )


@pytest.mark.skipif(
    np.finfo(np.longdouble).eps >= 1e-17, reason="needs an extended-precision longdouble"
)
def test_the_stage_round_off_noise_bounds_the_residuals_own_round_off():
    # Newton.stage_roundoff_floor believes an increment within (I − hγJ)⁻¹·noise: the
    # noise must cover what float64 loses in the residual Z − base − hγ f(Z).  The truth:
    # the same residual from the same float64 numbers in extended precision.  Near F5's
    # equilibrium f ≈ 0 is a balance of terms 1e3–1e10 times larger, which eps·|Z| alone
    # misses by orders of magnitude
    rng = np.random.default_rng(0)
    equilibrium = np.array([3.365e-7, 8.261e-3, 1.642e-3, 9.38e-6])
    kl = tuple(np.longdouble(x) for x in (3e11, 9e11, 1.2e8, 2e7, 1e8))

    class Capture:  # an identity "LU" that keeps what it was asked to solve
        def solve(self, rhs):
            self.rhs = rhs
            return rhs

    worst = worst_naive = 0.0
    for _ in range(200):
        y = torch.tensor(equilibrium * np.exp(rng.normal(0, 0.5, 4)), dtype=D)[None]
        hg = 10 ** rng.uniform(-4, 1)
        base = y[:, None] * (1 + torch.tensor(rng.normal(0, 1e-9, (1, 1, 4)), dtype=D))
        Z = base + y[:, None] * torch.tensor(rng.normal(0, 1e-9, (1, 1, 4)), dtype=D)
        hA = torch.full((1, 1, 1), hg, dtype=D)
        nw = Newton(tol=None, max_iter=8, atol=1e-12, rtol=1e-6)
        nw.jacobian(lambda s, yy: _f5(yy), torch.zeros(1, dtype=D), Z[:, 0])
        G = _f5(Z[:, 0])[:, None]
        ours = (Z - base - hA @ G)[0, 0].numpy().astype(np.longdouble)
        Zl, bl = Z[0].numpy().astype(np.longdouble), base[0].numpy().astype(np.longdouble)
        exact = (Zl - bl - np.longdouble(hg) * _f5(Zl, kl, xp=np))[0]
        lost = np.abs(ours - exact).astype(np.float64)
        cap = Capture()
        nw.stage_roundoff_floor(cap, hA, Z, G, base, torch.ones(1, 1, 4, dtype=D), 1.0)
        noise = cap.rhs[0].numpy()
        naive = np.finfo(np.float64).eps * (Zl.astype(np.float64) + bl.astype(np.float64))[0]
        worst = max(worst, float((lost / noise).max()))
        worst_naive = max(worst_naive, float((lost / naive).max()))
    assert worst <= 1.0, worst  # measured 0.50
    assert worst_naive > 1e6, worst_naive  # measured 1.3e10
