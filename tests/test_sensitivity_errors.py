"""Every error the sensitivity package raises, with its message."""

from __future__ import annotations

import pytest
import torch

from odenet._errors import InputError, NonFiniteError, SolverError, StepSizeUnderflowError
from odenet._solve import prepare, solve
from odenet.sensitivity import solve_with

DT = torch.float64
T = torch.tensor([0.0, 1.0], dtype=DT)


def lin(a):
    return lambda t, y: a * y


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(InputError, match=r"unknown option\(s\) 'adjoint_rtol' for sens"):
        solve(lin(1.0), torch.ones(2, dtype=DT), T, sensitivity="checkpoint", adjoint_rtol=1e-3)


def test_checkpoints_must_be_an_integer_of_at_least_two():
    with pytest.raises(InputError, match="`checkpoints` must be an integer ≥ 2"):
        solve(lin(1.0), torch.ones(2, dtype=DT), T, sensitivity="adjoint", checkpoints=1)


def test_checkpoints_and_checkpoint_every_are_exclusive():
    with pytest.raises(InputError, match="give one of `checkpoint_every`"):
        solve(
            lin(1.0),
            torch.ones(2, dtype=DT),
            T,
            sensitivity="adjoint",
            checkpoints=8,
            checkpoint_every=2,
        )


def test_checkpoint_every_must_be_positive_integer():
    with pytest.raises(InputError, match="`checkpoint_every` must be a positive integer"):
        solve(lin(1.0), torch.ones(2, dtype=DT), T, sensitivity="adjoint", checkpoint_every=0)


def test_adjoint_options_validated():
    y0 = torch.ones(2, dtype=DT)
    with pytest.raises(InputError, match="`adjoint_options` must be a dict"):
        solve(lin(1.0), y0, T, sensitivity="adjoint", adjoint_options="seminorm")
    with pytest.raises(InputError, match=r"unknown `adjoint_options` key\(s\) \['step_size'\]"):
        solve(lin(1.0), y0, T, sensitivity="adjoint", adjoint_options={"step_size": 0.1})
    with pytest.raises(InputError, match=r"`adjoint_options\['norm'\]` must be 'seminorm'"):
        solve(lin(1.0), y0, T, sensitivity="adjoint", adjoint_options={"norm": "l2"})
    with pytest.raises(InputError, match="disagree; give one"):
        solve(
            lin(1.0),
            y0,
            T,
            sensitivity="adjoint",
            adjoint_options={"norm": "seminorm"},
            adjoint_seminorm=False,
        )


@pytest.mark.parametrize(
    "options, match",
    [
        ({"adjoint_norm": "rms"}, r"`adjoint_norm` must be callable as norm\(parts\)"),
        ({"adjoint_callback": 3}, r"`adjoint_callback` must be callable"),
        ({"adjoint_split_nodes": "yes"}, r"`adjoint_split_nodes` must be True or False"),
        (
            {"adjoint_norm": lambda p: p[0].abs().max(), "adjoint_options": {"norm": max}},
            r"give one of `adjoint_norm` and `adjoint_options\['norm'\]`",
        ),
    ],
)
def test_adjoint_norm_callback_and_split_nodes_validated(options, match):
    a = torch.tensor(1.0, dtype=DT, requires_grad=True)
    with pytest.raises(InputError, match=match):
        solve(lin(a), torch.ones(2, dtype=DT), T, sensitivity="adjoint", **options)


def test_full_norm_needs_shared_grid():
    y0 = torch.ones(2, 1, dtype=DT)
    tt = torch.tensor([[0.0, 1.0], [0.0, 2.0]], dtype=DT)
    with pytest.raises(InputError, match="needs a shared time grid"):
        solve(lin(1.0), y0, tt, sensitivity="adjoint", adjoint_seminorm=False)


def test_adjoint_params_validated():
    y0 = torch.ones(2, dtype=DT)
    with pytest.raises(InputError, match="`adjoint_params` must be an iterable of tensors"):
        solve(lin(1.0), y0, T, sensitivity="adjoint", adjoint_params=3)
    with pytest.raises(InputError, match="`adjoint_params` item 0 is a float, not a tensor"):
        solve(lin(1.0), y0, T, sensitivity="adjoint", adjoint_params=[1.0])


@pytest.mark.parametrize("kind", ["adjoint", "checkpoint"])
def test_closure_tensor_missing_from_explicit_adjoint_params_is_refused(kind):
    # without `adjoint_params` a closure's tensors are found (tests/test_compat_conformance.py);
    # an explicit list that misses one would lose its gradient: refused
    a = torch.tensor(0.5, dtype=DT, requires_grad=True)
    b = torch.tensor(0.1, dtype=DT, requires_grad=True)
    with pytest.raises(InputError, match=r"uses 1 tensor\(s\) that require grad but are not"):
        solve(
            lambda t, y: lin(a)(t, y) * b,
            torch.ones(2, dtype=DT),
            T,
            sensitivity=kind,
            adjoint_params=[a],
        )
    # passing it fixes it
    solve(lin(a), torch.ones(2, dtype=DT), T, sensitivity=kind, adjoint_params=[a])


def test_backward_of_failed_solve_raises():
    a = torch.tensor(1.0, dtype=DT, requires_grad=True)
    sol = solve(
        lin(a),
        torch.ones(2, dtype=DT),
        torch.tensor([0.0, 10.0], dtype=DT),
        sensitivity="adjoint",
        adjoint_params=[a],
        max_steps=3,
        throw=False,
    )
    assert not sol.success
    with pytest.raises(SolverError, match="the forward solve failed"):
        sol.ys[-1].nan_to_num().sum().backward()


def test_adjoint_step_underflow_is_reported():
    a = torch.tensor(-1.0, dtype=DT, requires_grad=True)
    sol = solve(
        lin(a),
        torch.ones(2, dtype=DT),
        T,
        sensitivity="adjoint",
        adjoint_params=[a],
        adjoint_rtol=0.0,
        adjoint_atol=1e-300,
    )
    with pytest.raises(StepSizeUnderflowError, match=r"adjoint solve failed.*step size underflow"):
        sol.ys[-1].sum().backward()


def test_solve_with_rejects_unknown_kind():
    prep, tab = prepare(
        lin(1.0),
        torch.ones(1, dtype=DT),
        T,
        method="rk4",
        rtol=1e-6,
        atol=1e-8,
        step_size=0.1,
        max_steps=100,
        first_step=None,
        min_step=0.0,
        max_step=None,
        controller=None,
        norm=None,
        newton_tol=None,
        newton_max_iter=None,
    )
    with pytest.raises(InputError, match="kind must be one of"):
        solve_with("direct", prep, tab, throw=True)


@pytest.mark.parametrize("T", [2.0, 5.0])
def test_explicit_adjoint_leaving_its_stability_region_raises_instead_of_noise(T):
    # y' = λ(y − cos t), λ = −1e4: kvaerno5 takes steps with hλ ~ −1e3, where one rk4
    # backward step multiplies the adjoint by ~(hλ)⁴/24.  The gradient came back as
    # −5.8e256 (T = 2) or NaN (T = 5) without a word; the kvaerno5 adjoint gives the
    # direct gradient.
    lam = torch.tensor(-1e4, dtype=DT, requires_grad=True)

    def f(t, y):
        return lam * (y - torch.cos(t))

    y0, t = torch.tensor([0.5], dtype=DT), torch.tensor([0.0, T], dtype=DT)

    def grad(**opts):
        sol = solve(f, y0, t, method="kvaerno5", rtol=1e-5, atol=1e-8, **opts)
        return torch.autograd.grad(sol.ys[-1].sum(), lam)[0]

    with pytest.raises(NonFiniteError, match=r"adjoint_method='rk4'.*stability region"):
        grad(sensitivity="adjoint", adjoint_method="rk4")
    direct = grad(sensitivity="direct")
    assert torch.isfinite(direct)
    torch.testing.assert_close(
        grad(sensitivity="adjoint", adjoint_method="kvaerno5"), direct, rtol=1e-3, atol=1e-15
    )


@pytest.mark.parametrize("kind", ["checkpoint", "adjoint"])
def test_a_closure_over_a_non_leaf_tensor_gets_the_exact_gradient(kind):
    # A = 2·W captured by the field: its graph is shared by every evaluation, and the
    # backward pass freed it after the first parameter product (torch's "backward
    # through the graph a second time")
    W = torch.tensor([[-1.0, 0.5], [0.0, -2.0]], dtype=DT, requires_grad=True)
    y0 = torch.tensor([1.0, 1.0], dtype=DT)

    def grad(mode):
        A = 2 * W
        sol = solve(
            lambda t, y: y @ A.T, y0, T, method="dopri5", rtol=1e-8, atol=1e-10, sensitivity=mode
        )
        return torch.autograd.grad(sol.ys[-1].sum(), W)[0]

    # exact: y(1) = exp(2W) y0, differentiated through torch's matrix exponential
    exact = torch.autograd.grad((torch.linalg.matrix_exp(2 * W) @ y0).sum(), W)[0]
    torch.testing.assert_close(grad(kind), exact, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("sensitivity", ["adjoint", "checkpoint"])
def test_a_tensor_the_field_uses_only_after_t0_is_refused_or_differentiated(sensitivity):
    # the parameters are found from one evaluation of f at t0: b, used only after the
    # switch, got no gradient (b.grad None) with status ok, also with adjoint_params=[a]
    import math

    dt = torch.float64

    def run(pick):
        a = torch.tensor(-1.0, dtype=dt, requires_grad=True)
        b = torch.tensor(0.5, dtype=dt, requires_grad=True)
        kw = {} if pick is None else {"adjoint_params": pick(a, b)}
        sol = solve(
            lambda s, y: (a if float(s) <= 0.6 else b) * y, torch.tensor([1.0], dtype=dt),
            torch.tensor([0.1, 1.4], dtype=dt), rtol=1e-10, atol=1e-12,
            sensitivity=sensitivity, **kw,
        )  # fmt: skip
        sol.ys[-1, 0].backward()
        return a, b

    with pytest.raises(InputError, match="did not use at t0"):
        run(None)
    with pytest.raises(InputError, match="did not use at t0"):
        run(lambda a, b: [a])
    a, b = run(lambda a, b: [a, b])
    y_end = math.exp(-0.5 + 0.4)  # y' = −y on [0.1, 0.6], y' = 0.5 y on [0.6, 1.4]
    assert abs(a.grad.item() - 0.5 * y_end) < 1e-6
    assert abs(b.grad.item() - 0.8 * y_end) < 1e-6


def test_a_nan_cotangent_is_not_zeroed():
    # a NaN in the loss's gradient was replaced by 0 (nan_to_num): finite gradients where
    # direct's are NaN.  checkpoint now carries the NaN as direct does; adjoint refuses
    dt = torch.float64
    w = torch.tensor([[0.0, 0.0], [1.0, float("nan")], [1.0, 1.0]], dtype=dt)

    def grads(sensitivity):
        k = torch.tensor(0.7, dtype=dt, requires_grad=True)
        y0 = torch.tensor([1.0, 2.0], dtype=dt, requires_grad=True)
        sol = solve(lambda s, y: -k * y, y0, torch.tensor([0.0, 1.0, 2.0], dtype=dt),
                    rtol=1e-10, atol=1e-12, sensitivity=sensitivity)  # fmt: skip
        (sol.ys * w).nansum().backward()
        return k.grad, y0.grad

    for sensitivity in ("direct", "checkpoint"):
        k_grad, y0_grad = grads(sensitivity)
        assert torch.isnan(k_grad) and torch.isnan(y0_grad[1]), sensitivity
    with pytest.raises(NonFiniteError, match="loss's gradient"):
        grads("adjoint")
