"""Linear multistep methods: exact coefficients, observed order, stiffness, state.

Truths: textbook coefficients (Hairer–Nørsett–Wanner I, III.1 and Butcher 2016),
closed-form solutions, each sample solved alone, finite differences.
"""

from __future__ import annotations

import math
from fractions import Fraction as Fr

import numpy as np
import pytest
import torch

import odenet
from odenet._multistep import MULTISTEP, adams_bashforth, adams_moulton, bdf

D = torch.float64


def test_coefficients_are_the_textbook_ones():
    assert adams_bashforth(2) == [Fr(3, 2), Fr(-1, 2)]
    assert adams_bashforth(4) == [Fr(55, 24), Fr(-59, 24), Fr(37, 24), Fr(-9, 24)]
    assert adams_moulton(1) == [Fr(1, 2), Fr(1, 2)]  # the trapezoidal rule
    assert adams_moulton(3) == [Fr(9, 24), Fr(19, 24), Fr(-5, 24), Fr(1, 24)]
    assert bdf(2) == [Fr(3, 2), Fr(-2), Fr(1, 2)]
    a = bdf(6)  # normalised: 147/60 y_{n+1} − 6 y_n + 15/2 y_{n−1} − …
    assert [x / a[0] * Fr(147, 60) for x in a] == [
        Fr(147, 60),
        Fr(-6),
        Fr(15, 2),
        Fr(-20, 3),
        Fr(15, 4),
        Fr(-6, 5),
        Fr(1, 6),
    ]


def _oscillator_error(method, h):
    f = lambda t, y: torch.stack([y[1], -y[0]])  # noqa: E731
    y0 = torch.tensor([1.0, 0.0], dtype=D)
    sol = odenet.solve(f, y0, torch.tensor([0.0, 3.0], dtype=D), method=method, step_size=h)
    exact = torch.tensor([math.cos(3.0), -math.sin(3.0)], dtype=D)
    return float((sol.ys[-1] - exact).abs().max())


@pytest.mark.parametrize("name", sorted(MULTISTEP))
def test_observed_order_is_the_classical_order(name):
    hs = np.array([0.04, 0.02, 0.01])
    errs = np.array([_oscillator_error(name, h) for h in hs])
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - MULTISTEP[name].order) < 0.15, (name, slope, errs)


def test_bdf_is_stable_on_a_stiff_problem_where_adams_is_not():
    f = lambda t, y: -1000.0 * (y - torch.cos(t))  # noqa: E731
    y0, t = torch.zeros(1, dtype=D), torch.tensor([0.0, 2.0], dtype=D)
    sol = odenet.solve(f, y0, t, method="bdf2", step_size=0.05)
    # the slow manifold y ≈ cos t + sin t / 1000
    assert abs(float(sol.ys[-1, 0]) - (math.cos(2.0) + math.sin(2.0) / 1000)) < 1e-4
    # AB2 at h λ = −50 is far outside its stability interval (−1, 0): it explodes
    bad = odenet.solve(f, y0, t, method="ab2", step_size=0.05, throw=False)
    assert not bad.success or float(bad.ys[-1].abs().max()) > 1e10


@pytest.mark.parametrize(
    "name, R",
    [("am1", lambda z: 1 / (1 - z)), ("am2", lambda z: (1 + z / 2) / (1 - z / 2))],
)
def test_the_one_step_adams_moulton_formulas_are_their_stability_functions(name, R):
    # y' = λy, hλ = −50: backward Euler damps the mode at once, the trapezoidal rule
    # (A- but not L-stable) keeps it ringing at R(−50) = −24/26 per step; both exactly
    z, n = -50.0, 40
    t = torch.tensor([0.0, float(n)], dtype=D)
    sol = odenet.solve(lambda t, y: z * y, torch.ones(1, dtype=D), t, method=name, step_size=1.0)
    assert float(sol.ys[-1, 0]) == pytest.approx(R(z) ** n, rel=1e-10)


def test_adams_moulton_is_the_implicit_corrector_that_pece_evaluates_once():
    # on y' = λy the implicit formula is linear: am3's step solves it exactly, while
    # abm3 applies the corrector to the AB3 prediction; at hλ = −2 (inside am3's
    # interval (−6, 0), outside AB3's and the PECE pair's) one is stable, the other not
    f = lambda t, y: -2.0 * y  # noqa: E731
    y0, t = torch.ones(1, dtype=D), torch.tensor([0.0, 200.0], dtype=D)
    good = odenet.solve(f, y0, t, method="am3", step_size=1.0)
    assert abs(float(good.ys[-1, 0])) < 1e-10
    bad = odenet.solve(f, y0, t, method="abm3", step_size=1.0, throw=False)
    assert not bad.success or abs(float(bad.ys[-1, 0])) > 1e3


def test_per_sample_grids_equal_each_sample_alone():
    f = lambda t, y: -y * (1 + 0.5 * torch.sin(t)[..., None])  # noqa: E731
    ts = torch.tensor([[0.0, 0.7, 1.5], [0.2, 0.9, 1.1], [0.0, 1.3, 2.0]], dtype=D)
    y0 = torch.tensor([[1.0], [2.0], [-1.0]], dtype=D)
    for m in ("ab4", "abm3", "am3", "bdf3"):
        batch = odenet.solve(f, y0, ts, method=m, step_size=0.05).ys
        for b in range(3):
            alone = odenet.solve(
                lambda t, y: -y * (1 + 0.5 * torch.sin(t)), y0[b], ts[b], method=m, step_size=0.05
            ).ys
            torch.testing.assert_close(batch[b], alone, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["ab3", "abm3", "am3", "bdf2"])
def test_direct_gradient_passes_gradcheck(name):
    A = torch.tensor([[-0.3, 1.0], [-1.2, -0.1]], dtype=D, requires_grad=True)

    def run(y0, A):
        return odenet.solve(
            lambda t, y: A @ y,
            y0,
            torch.tensor([0.0, 0.33, 1.0], dtype=D),
            method=name,
            step_size=0.05,
        ).ys

    y0 = torch.tensor([1.0, -0.5], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, A), atol=1e-6, rtol=1e-5)


def test_bad_uses_raise_typed_errors():
    f = lambda t, y: -y  # noqa: E731
    y0, t = torch.ones(1, dtype=D), torch.tensor([0.0, 1.0], dtype=D)
    for name in ("bdf2", "am3"):
        with pytest.raises(odenet.InputError, match="fixed-step multistep"):
            odenet.solve(f, y0, t, method=name)


def _linear_gradients(method, sensitivity, **options):
    A = torch.tensor([[-1.0, 0.5], [-0.5, -0.2]], dtype=D, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.7, 2.0], dtype=D)
    if sensitivity != "direct":
        options["adjoint_params"] = [A]
    sol = odenet.solve(
        lambda s, y: A @ y, y0, t, method=method, step_size=0.05, sensitivity=sensitivity,
        **options,
    )  # fmt: skip
    got = torch.autograd.grad(sol.ys[1:].sum(), [A, y0])
    exact = torch.autograd.grad(sum(torch.matrix_exp(A * ti) @ y0 for ti in t[1:]).sum(), [A, y0])
    return got, exact, sol


@pytest.mark.parametrize("method", ["ab3", "abm4", "am4", "bdf2"])
def test_checkpoint_gradient_of_a_multistep_method_is_the_direct_one(method):
    # three kept states for 40 steps: the replays start mid-history, which they must
    # continue (the tape keeps the method's state beside each checkpoint) — a restart
    # with the starter would give another discrete solution and another gradient
    direct, _, _ = _linear_gradients(method, "direct")
    ckpt, _, sol = _linear_gradients(method, "checkpoint", checkpoints=3)
    assert sol.stats["backward_segments"] >= 2
    for a, b in zip(ckpt, direct):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", ["ab3", "abm4", "am4", "bdf2"])
def test_adjoint_of_a_multistep_method_is_the_exact_gradient_to_its_accuracy(method):
    # the continuous adjoint (an RK method on the forward's steps) differentiates the
    # exact solution: its error is the forward's discretization error, no more
    direct, exact, _ = _linear_gradients(method, "direct")
    adj, _, _ = _linear_gradients(method, "adjoint", checkpoints=3)
    err_direct = max(float((a - b).abs().max()) for a, b in zip(direct, exact))
    err_adj = max(float((a - b).abs().max()) for a, b in zip(adj, exact))
    assert err_adj <= 2 * err_direct


def test_convergence_study_measures_the_order_of_multistep_methods():
    res = odenet.convergence("cos", methods=["ab3", "bdf2"], n_steps=[16, 32, 64])
    orders = res.orders.set_index("method")
    for name in ("ab3", "bdf2"):
        assert orders.loc[name, "verdict"] == "ok"
        assert abs(orders.loc[name, "observed_order"] - MULTISTEP[name].order) < 0.4


def test_one_lookup_finds_both_kinds_and_names_both_when_it_fails():
    from odenet._errors import UnknownMethodError
    from odenet._registry import method, method_names, registered
    from odenet.tableaus import methods, tableau

    assert method("ndf") is registered()["ndf"]
    assert method("rk4") is tableau("rk4")
    assert method(tableau("rk4")) is tableau("rk4")
    assert method_names() == sorted([*methods(), *registered()])
    with pytest.raises(UnknownMethodError) as e:
        method("bdf9")
    assert "ndf" in str(e.value) and "rk4" in str(e.value)


@pytest.mark.parametrize("method", ["ab2", "abm3", "am3", "bdf2", "bdf4"])
@pytest.mark.parametrize("t_end", [1.0, 1.05])  # on a grid node, between nodes
def test_time_gradients_of_a_fixed_step_multistep_solve(method, t_end):
    # the formula holds on equal steps only (an unequal last step is the starter's), so
    # y(T) is not a smooth function of T; its derivative is the flow's, f(T, y(T)), as
    # for the adjoint.  Before the fix direct mode differentiated bdf2's formula in
    # its last step size: ∂y(1)/∂T = 0.62·f on T = 1.0, a node.
    a, b = -0.8, 0.6
    f = lambda t, y: a * y + b * torch.sin(t)  # noqa: E731
    t = torch.tensor([0.2, 0.63, t_end], dtype=D, requires_grad=True)
    y0 = torch.tensor([1.3], dtype=D)
    grads = {}
    for mode in ("direct", "checkpoint"):
        sol = odenet.solve(f, y0, t, method=method, step_size=0.01, sensitivity=mode)
        grads[mode] = torch.autograd.grad(sol.ys[1:, 0].sum(), t)[0]
    ys = sol.ys.detach()[:, 0]
    slopes = a * ys + b * torch.sin(t.detach())
    torch.testing.assert_close(grads["direct"][1:], slopes[1:], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads["direct"], grads["checkpoint"], rtol=1e-10, atol=1e-13)
    # closed form: ∂/∂t0 of Σ_i y(t_i) = −Σ_i Φ(t_i, t0) f(t0, y0), Φ = e^{a (t_i − t0)}
    t0, f0 = 0.2, a * 1.3 + b * math.sin(0.2)
    exact_t0 = -sum(math.exp(a * (ti - t0)) for ti in (0.63, t_end)) * f0
    assert abs(float(grads["direct"][0]) - exact_t0) < 1e-3 * abs(exact_t0)


@pytest.mark.parametrize("method", ["ab2", "bdf2"])
def test_equal_steps_are_equal_to_the_round_off_of_the_times(method):
    # far from t = 0 (float64) or on a float32 linspace the spacings differ in their last
    # bits; before the fix each such step went to the starter (dop853 / radau_iia5):
    # ab2 took 7348 evaluations instead of 1012 at t0 = 1e5 and was no longer ab2
    f = lambda t, y: -y  # noqa: E731
    y0 = torch.ones(1, dtype=D)
    near = odenet.solve(f, y0, torch.tensor([0.0, 1.0], dtype=D), method=method, step_size=1e-3)
    t_far = torch.tensor([1e5, 1e5 + 1.0], dtype=D)
    far = odenet.solve(f, y0, t_far, method=method, step_size=1e-3)
    assert far.stats["nfe"] == near.stats["nfe"]
    torch.testing.assert_close(far.ys[-1], near.ys[-1], rtol=1e-9, atol=0)
    g = lambda t, y: -y + torch.sin(t)  # noqa: E731
    runs = {
        dt: odenet.solve(
            g, torch.ones(1, dtype=dt), torch.linspace(0, 2, 21, dtype=dt), method=method,
            grid_on_outputs=True,
        )
        for dt in (torch.float64, torch.float32)
    }  # fmt: skip
    assert runs[torch.float32].stats["nfe"] == runs[torch.float64].stats["nfe"]
    assert abs(float(runs[torch.float32].ys[-1, 0]) - float(runs[torch.float64].ys[-1, 0])) < 1e-6


def test_odeint_takes_every_method_name_and_solve_names_them_all_when_one_is_unknown():
    f = lambda t, y: -y + torch.sin(t)  # noqa: E731
    y0, t = torch.ones(1, dtype=D), torch.tensor([0.0, 0.5, 1.0], dtype=D)
    fixed = {"step_size": 0.05}
    for name, options in (("bdf2", fixed), ("abm3", fixed), ("ndf", {})):
        kw = {"step_size": 0.05} if options else {"rtol": 1e-7, "atol": 1e-9}
        ys = odenet.odeint(f, y0, t, method=name, options=options, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(ys, odenet.solve(f, y0, t, method=name, **kw).ys)
    with pytest.raises(odenet.UnknownMethodError, match=r"abm2.*bdf1.*dopri5.*ndf"):
        odenet.solve(f, y0, t, method="ab7", step_size=0.1)


def test_stability_of_a_variable_step_family_points_to_its_own_fixed_members():
    from odenet.stability import multistep as M

    with pytest.raises(odenet.OdenetError, match="ab1–ab6") as e:
        M.a_alpha("adams")
    assert "bdf1" not in str(e.value)
    with pytest.raises(odenet.OdenetError, match="ndf1–ndf5"):
        M.a_alpha("ndf")


def _deformed_grid(n, dtype=D):
    """``n`` steps on [0, 2], each a little shorter than the one before (ratio ≈ 1 − 0.6/n)."""
    u = torch.linspace(0, 1, n + 1, dtype=dtype)
    return 2 * (u + 0.3 * u * (1 - u))


@pytest.mark.parametrize("name", sorted(MULTISTEP))
def test_observed_order_on_a_non_uniform_grid_is_the_classical_order(name):
    # before: every step of unequal size was the starter's (dop853 / radau_iia5), so ab3
    # on this grid ended at 1e-16 and a convergence study measured no order at all
    if MULTISTEP[name].steps == 1:
        pytest.skip("one step: no history, nothing varies")
    f = lambda t, y: -y + torch.sin(t)  # noqa: E731
    exact = 1.5 * math.exp(-2.0) + 0.5 * (math.sin(2.0) - math.cos(2.0))
    ns = np.array([80, 160, 320])
    errs = []
    for n in ns:
        sol = odenet.solve(f, torch.ones(1, dtype=D), _deformed_grid(n), method=name,
                           grid_on_outputs=True)  # fmt: skip
        errs.append(abs(float(sol.ys[-1, 0]) - exact))
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert abs(slope - MULTISTEP[name].order) < 0.35, (name, slope, errs)


@pytest.mark.parametrize("method", ["ab3", "abm4", "am4", "bdf3"])
def test_non_uniform_grids_per_sample_and_in_every_sensitivity_mode(method):
    A = torch.tensor([[-1.0, 0.5], [-0.5, -0.2]], dtype=D, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5], dtype=D, requires_grad=True)
    t = _deformed_grid(30)

    def grads(sensitivity, **kw):
        if sensitivity != "direct":
            kw["adjoint_params"] = [A]
        sol = odenet.solve(lambda s, y: A @ y, y0, t, method=method, grid_on_outputs=True,
                           sensitivity=sensitivity, **kw)  # fmt: skip
        return sol, torch.autograd.grad(sol.ys[1:].sum(), [A, y0])

    sol, direct = grads("direct")
    # the replays continue the history (its past times too): the same discrete gradient
    _, ckpt = grads("checkpoint", checkpoints=3)
    for a, b in zip(ckpt, direct):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    exact = torch.autograd.grad(sum(torch.matrix_exp(A * ti) @ y0 for ti in t[1:]).sum(), [A, y0])
    _, adjoint = grads("adjoint")
    for a, b in zip(adjoint, exact):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-4)
    # a batch of grids, one of them uniform: each row as when solved alone
    ts = torch.stack([t, torch.linspace(0, 2, 31, dtype=D), _deformed_grid(30).flip(0).neg() + 2])
    f = lambda s, y: y @ A.detach().T  # noqa: E731
    batch = odenet.solve(f, y0.detach().expand(3, 2), ts, method=method, grid_on_outputs=True).ys
    for b in range(3):
        alone = odenet.solve(f, y0.detach(), ts[b], method=method, grid_on_outputs=True).ys
        torch.testing.assert_close(batch[b], alone, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(batch[0], sol.ys.detach(), rtol=1e-12, atol=1e-14)


def test_bdf_growth_limits_are_where_the_self_similar_grid_loses_zero_stability():
    from odenet._multistep import BDF_GROWTH_LIMIT, lagrange_slopes

    def extraneous_radius(k, w):  # nodes 1, 0, −1/w, −1/w − 1/w², … in units of h
        z, width, t = [1.0, 0.0], 1.0, 0.0
        for _ in range(1, k):
            width /= w
            t -= width
            z.append(t)
        a = lagrange_slopes(torch.tensor([z], dtype=D))[0].numpy()
        roots = sorted(np.roots(a), key=lambda r: abs(r - 1))
        return max(abs(r) for r in roots[1:])

    for k in range(2, 7):
        limit = BDF_GROWTH_LIMIT[k]
        assert extraneous_radius(k, limit * 0.999) < 1 < extraneous_radius(k, limit * 1.001), k
    assert BDF_GROWTH_LIMIT[2] == pytest.approx(1 + math.sqrt(2))  # Grigorieff's BDF2 bound


def test_bdf_on_a_grid_growing_too_fast_warns():
    f = lambda t, y: -y  # noqa: E731
    y0 = torch.ones(1, dtype=D)
    growing = torch.cumsum(
        torch.cat([torch.zeros(1, dtype=D), 1e-3 * 1.4 ** torch.arange(20, dtype=D)]), 0
    )
    with pytest.warns(odenet.StabilityWarning, match="bdf4: .* grew by more than 1.28"):
        odenet.solve(f, y0, growing, method="bdf4", grid_on_outputs=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", odenet.StabilityWarning)
        odenet.solve(f, y0, growing, method="bdf2", grid_on_outputs=True)  # 1.4 < 2.41
        odenet.solve(f, y0, _deformed_grid(40), method="bdf6", grid_on_outputs=True)
