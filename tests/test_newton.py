"""The simplified Newton iteration for implicit stages (odenet._newton)."""

import pytest
import torch

from odenet._errors import VectorFieldError
from odenet._jacobian import user_jacobian
from odenet._newton import Newton, batched_jacobian, error_safety
from odenet._radau import RadauIIA, RadauNewton
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
    tab = tableau("kvaerno5")
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
