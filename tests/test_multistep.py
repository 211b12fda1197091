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


def test_per_sample_grids_equal_each_sample_alone():
    f = lambda t, y: -y * (1 + 0.5 * torch.sin(t)[..., None])  # noqa: E731
    ts = torch.tensor([[0.0, 0.7, 1.5], [0.2, 0.9, 1.1], [0.0, 1.3, 2.0]], dtype=D)
    y0 = torch.tensor([[1.0], [2.0], [-1.0]], dtype=D)
    for m in ("ab4", "abm3", "bdf3"):
        batch = odenet.solve(f, y0, ts, method=m, step_size=0.05).ys
        for b in range(3):
            alone = odenet.solve(
                lambda t, y: -y * (1 + 0.5 * torch.sin(t)), y0[b], ts[b], method=m, step_size=0.05
            ).ys
            torch.testing.assert_close(batch[b], alone, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["ab3", "abm3", "bdf2"])
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
    with pytest.raises(odenet.InputError, match="fixed-step multistep"):
        odenet.solve(f, y0, t, method="bdf2")


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


@pytest.mark.parametrize("method", ["ab3", "abm4", "bdf2"])
def test_checkpoint_gradient_of_a_multistep_method_is_the_direct_one(method):
    # three kept states for 40 steps: the replays start mid-history, which they must
    # continue (the tape keeps the method's state beside each checkpoint) — a restart
    # with the starter would give another discrete solution and another gradient
    direct, _, _ = _linear_gradients(method, "direct")
    ckpt, _, sol = _linear_gradients(method, "checkpoint", checkpoints=3)
    assert sol.stats["backward_segments"] >= 2
    for a, b in zip(ckpt, direct):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", ["ab3", "abm4", "bdf2"])
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
