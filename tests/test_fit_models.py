"""odenet.fit models: batch invariance, closed forms, grey-box recovery, PK, causality."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm

import odenet._errors as odenet_errors
from odenet._errors import InputError
from odenet.batch import IrregularBatch
from odenet.fit import (
    GRUD,
    LOCF,
    GreyBoxField,
    GRUDeltaT,
    GRUGrid,
    LinearInterpolation,
    OneCompartmentPK,
    ShootingODE,
    TrainingMean,
    datasets,
    fit,
    neural_ode,
    relative_error,
)
from odenet.fit.greybox import MECHANISMS


def small_lv(n=4, noise=0.02, seed=0):
    return datasets.lotka_volterra(n, observed=0.4, noise=noise, n_times=25, t_end=8.0, seed=seed)


def repad(batch: IrregularBatch, perm, extra: int) -> IrregularBatch:
    """The same series in order ``perm`` with ``extra`` more padding columns."""
    B, T, D = batch.values.shape
    times = batch.times[perm]
    last = times.gather(1, (batch.lengths[perm] - 1)[:, None])
    cols = torch.arange(T + extra)[None, :]
    n = batch.lengths[perm][:, None]
    t = torch.cat([times, times.new_zeros(B, extra)], 1)
    t = torch.where(cols < n, t, last + (cols - n + 1))
    z = batch.values.new_zeros(B, extra, D)
    return IrregularBatch(t, torch.cat([batch.values[perm], z], 1), torch.cat([batch.mask[perm], z], 1),  # noqa: E501
                          batch.lengths[perm])  # fmt: skip


@pytest.mark.parametrize(
    "make",
    [lambda: GRUD(2, 8, horizon=3), lambda: neural_ode(2, 8, horizon=3, rtol=1e-4, atol=1e-6)],
)
def test_fit_is_independent_of_batch_order_and_padding(make):
    data = small_lv()
    perm = torch.tensor([2, 0, 3, 1])
    results = []
    for batch in (data.batch, repad(data.batch, perm, extra=3)):
        torch.manual_seed(0)
        model = make()
        fit(model, batch, iters=3, batch_size=None, eval_every=3)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-9, atol=1e-11)


class Linear(torch.nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = torch.as_tensor(A, dtype=torch.float64)

    def forward(self, t, x):
        return x @ self.A.T


def test_shooting_ode_predicts_the_flow_from_the_last_past_observation():
    A = np.array([[-0.1, 1.0], [-1.0, -0.2]])
    model = ShootingODE(Linear(A), physical=True, rtol=1e-10, atol=1e-12)
    ctx = IrregularBatch.from_lists([torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)],
                                    [torch.tensor([[1.0, 0.0], [0.3, -0.5], [0.2, 0.4]], dtype=torch.float64)])  # fmt: skip  # noqa: E501
    q = torch.tensor([[1.0, 2.5, 4.0]], dtype=torch.float64)
    pred = model.predict(ctx, q)[0].numpy()
    ref = [expm(A * 0.3) @ [0.3, -0.5], expm(A * 1.0) @ [0.2, 0.4], expm(A * 2.5) @ [0.2, 0.4]]
    np.testing.assert_allclose(pred, np.array(ref), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_shooting_ode_forecasts_a_channel_missing_at_the_start_observation(bidirectional):
    """With the true field and exact data, a prediction is the flow itself even where a
    channel is missing at the observation it starts from: that channel is the model's
    forecast there, not its last observed value held (off by 1.03, 0.69 two-sided, and a
    loss of 0.118 on the code before)."""
    A = np.array([[-0.1, 1.0], [-1.0, -0.2]])
    x0 = np.array([1.0, 0.0])
    ts = np.array([0.0, 0.7, 1.5, 2.2, 3.1])
    mask = np.ones((5, 2))
    mask[1, 1] = mask[2, 0] = mask[3, 0] = 0
    vals = np.array([expm(A * t) @ x0 for t in ts]) * mask
    ctx = IrregularBatch.from_lists([torch.tensor(ts)], [torch.tensor(vals)], [torch.tensor(mask)])
    model = ShootingODE(Linear(A), physical=True, rtol=1e-10, atol=1e-12,
                        bidirectional=bidirectional)  # fmt: skip
    q = np.array([0.3, 1.0, 1.8, 2.5, 2.9, 4.0])
    pred = model.predict(ctx, torch.tensor(q)[None])[0].numpy()
    np.testing.assert_allclose(pred, [expm(A * t) @ x0 for t in q], rtol=1e-8, atol=1e-9)
    # training sees the same starts: the true field's multiple-shooting loss is zero
    assert float(model.loss(ctx)) < 1e-18


def test_shooting_ode_assimilate_is_the_data_where_every_channel_is_observed():
    A = np.array([[-0.1, 1.0], [-1.0, -0.2]])
    model = ShootingODE(Linear(A), physical=True)
    calls = []
    model._solve = lambda *a: calls.append(a)  # must not be called
    batch = IrregularBatch.from_lists([torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5, 2.0])],
                                      [torch.randn(2, 2, dtype=torch.float64),
                                       torch.randn(3, 2, dtype=torch.float64)])  # fmt: skip
    states = model.assimilate(batch)
    assert not calls
    torch.testing.assert_close(states[batch.valid], batch.values[batch.valid])


def lv_mle(node_every=4):
    from odenet.fit.greybox import GreyBoxMLE

    mech, guess = MECHANISMS["lotka_volterra"]
    return GreyBoxMLE(GreyBoxField(mech, guess), node_every=node_every, rtol=1e-6, atol=1e-8)


def test_grey_box_mle_recovers_noiseless_lotka_volterra_parameters_tightly():
    """Parameters and initial states by Gauss–Newton from the guess (1, 1, 1, 1)."""
    data = datasets.lotka_volterra(2, observed=1.0, noise=0.0, n_times=20, t_end=8.0, seed=0)
    model = lv_mle()
    res = fit(model, data, iters=50, optimizer="gauss_newton")
    err = relative_error(model.values(), datasets.LV_PARAMS)
    assert max(err.values()) < 1e-5, err
    np.testing.assert_allclose(model.info["x0"], data.meta["y0"], rtol=1e-5)
    assert res.iterations == model.info["iterations"] > 0


def test_grey_box_mle_error_on_noisy_data_is_within_its_gauss_newton_standard_errors():
    """σ = 0.02: σ̂ estimates the noise and each error is a few standard errors at most."""
    data = datasets.lotka_volterra(2, observed=1.0, noise=0.02, n_times=20, t_end=8.0, seed=0)
    model = lv_mle()
    info = model.gauss_newton(data.batch)
    assert 0.014 < info["sigma"] < 0.026
    se = model.std_errors()
    for k, v in model.values().items():
        truth = datasets.LV_PARAMS[k]
        assert abs(v - truth) < 4 * se[k], (k, v, se[k])
        assert 0 < se[k] < 0.05 * truth


def test_variational_sensitivities_match_finite_differences_of_the_flow():
    """The Jacobian behind Gauss–Newton (and its standard errors) against central
    differences of odenet.solve in the initial state and the log-parameters."""
    import odenet

    data = datasets.lotka_volterra(2, observed=1.0, noise=0.0, n_times=5, t_end=2.0, seed=0)
    model = lv_mle()
    model.solver = dict(method="dopri5", rtol=1e-10, atol=1e-12)
    x0 = data.batch.values[:, 0].clone()
    raw = model.field.raw.detach().clone()
    X, S = model._solve_rows(data.batch.times, x0, raw.expand(2, -1).clone(), None)

    def flow(x0, raw):
        model.field.raw.data.copy_(raw)
        with torch.no_grad():
            return odenet.solve(model.field, x0, data.batch.times, rtol=1e-10, atol=1e-12).ys

    h = 1e-5
    for j in range(2 + 4):
        dx, dr = torch.zeros_like(x0), torch.zeros_like(raw)
        if j < 2:
            dx[:, j] = h
        else:
            dr[j - 2] = h
        fd = (flow(x0 + dx, raw + dr) - flow(x0 - dx, raw - dr)) / (2 * h)
        torch.testing.assert_close(S[:, :5, :, j], fd, rtol=1e-5, atol=1e-7)


def lv_with_constants(t, y, p):
    """Lotka–Volterra written with numeric constants (forward mode's slow operands)."""
    x, z = y[..., 0:1], y[..., 1:2]
    dx = 2.0 * (0.5 * p["alpha"]) * x - p["beta"] * x * z * 1.0
    dz = p["delta"] * x * z - p["gamma"] * z + 0.0
    return torch.cat([dx, dz], -1)


def lv_sensitivity_rhs(x, S, raw):
    """``S' = J_x S + [0 | J_raw]`` of Lotka–Volterra in closed form; ``raw`` the
    log-parameters ``[K, 4]`` (alpha, beta, gamma, delta), ``x [K, 2]``, ``S [K, 2, 6]``."""
    a, b, g, d = raw.exp().unbind(-1)
    u, v = x.unbind(-1)
    Jx = torch.stack([torch.stack([a - b * v, -b * u], -1),
                      torch.stack([d * v, d * u - g], -1)], -2)  # fmt: skip
    zero = torch.zeros_like(u)
    # d/d log p = p · d/dp
    Jr = torch.stack([torch.stack([a * u, -b * u * v, zero, zero], -1),
                      torch.stack([zero, zero, -g * v, d * u * v], -1)], -2)  # fmt: skip
    dS = Jx @ S
    dS[:, :, 2:] += Jr
    return dS


@pytest.mark.parametrize("columnar", [False, True], ids=["shared", "per_series"])
@pytest.mark.parametrize("mechanism", ["builtin", "constants"])
@pytest.mark.parametrize("mode", ["reverse", "forward", "loop"])
def test_each_sensitivity_mode_gives_the_closed_form_variational_equations(
    mode, mechanism, columnar
):
    """Reverse mode (one taped call on D stacked copies, one backward), forward mode
    (one dual call on D + P stacked columns) and the column loop all give the
    Lotka–Volterra variational equations' closed form, per row: with shared
    parameters the reverse copies must not sum the rows' J_raw."""
    from odenet.fit.greybox import _Rows, _Sensitivities

    mech, guess = MECHANISMS["lotka_volterra"]
    field = GreyBoxField(mech if mechanism == "builtin" else lv_with_constants, guess).double()
    K, D, P = 3, 2, 4
    gen = torch.Generator().manual_seed(0)
    if columnar:
        raw = field.raw.detach() + 0.1 * torch.randn(K, P, generator=gen, dtype=torch.float64)
    else:
        raw = field.raw.detach().expand(K, P).clone()
    system = _Sensitivities(field, D, _Rows(raw), columnar)
    x = torch.rand(K, D, generator=gen, dtype=torch.float64) + 0.5
    S = torch.randn(K, D, D + P, generator=gen, dtype=torch.float64)
    f, dS = system._columns(torch.tensor(0.3, dtype=torch.float64), x, S, mode)
    torch.testing.assert_close(f, mech(0.3, x, dict(zip(field.names, raw.exp().T[..., None]))))
    torch.testing.assert_close(dS, lv_sensitivity_rhs(x, S, raw), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("columnar", [False, True], ids=["shared", "per_series"])
@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_a_builtin_mechanism_runs_its_sensitivities_in_one_call(name, columnar):
    """Every built-in mechanism broadcasts over a stacked leading axis, so the first
    call picks a one-call mode (forward or reverse, whichever it timed faster), whose
    columns equal the one-at-a-time loop's.  Shared parameters were once served as
    [C, 1] against states [C, K, D]: the check failed and each column took its own call
    (3.7x a greybox fit)."""
    from odenet.fit.greybox import _Rows, _Sensitivities

    mech, guess = MECHANISMS[name]
    field = GreyBoxField(mech, guess).double()
    K, D, P = 3, 2, len(guess)
    gen = torch.Generator().manual_seed(0)
    raw = field.raw.detach() + 0.1 * torch.randn(K, P, generator=gen, dtype=torch.float64)
    system = _Sensitivities(field, D, _Rows(raw), columnar)
    x = torch.rand(K, D, generator=gen, dtype=torch.float64) + 0.5
    S = torch.randn(K, D, D + P, generator=gen, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    out = system(t, torch.cat([x, S.reshape(K, -1)], 1))
    assert system.mode in ("forward", "reverse")
    f_loop, dS_loop = system._columns(t, x, S, "loop")
    for mode in ("forward", "reverse", system.mode):
        f, dS = system._columns(t, x, S, mode)
        torch.testing.assert_close(f, f_loop, rtol=1e-13, atol=0)
        torch.testing.assert_close(dS, dS_loop, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(out[:, D:].reshape(K, D, D + P), dS_loop, rtol=1e-13, atol=1e-15)


def test_the_sensitivity_mode_is_the_faster_one_that_passes_its_check(monkeypatch):
    """The first call keeps the faster one-call mode (by the timings it measured); a
    mechanism that only handles [K, D] states falls back to the loop."""
    from odenet.fit import greybox

    mech = MECHANISMS["lotka_volterra"][0]
    for slow in ("forward", "reverse"):
        timed = lambda fn, t, x, S, mode, slow=slow: 1.0 + (mode == slow)  # noqa: E731
        monkeypatch.setattr(greybox, "_seconds", timed)
        system, t, y = sensitivity_system(mech, 2, 0)
        system(t, y)
        assert system.mode == {"forward": "reverse", "reverse": "forward"}[slow]

    def rows_only(t, x, p):  # indexes the states' axis as the second: [K, D] only
        u, v = x[:, 0], x[:, 1]
        return torch.stack([p["alpha"] * u - p["beta"] * u * v,
                            p["delta"] * u * v - p["gamma"] * v], 1)  # fmt: skip

    system, t, y = sensitivity_system(rows_only, 2, 0)
    system(t, y)
    assert system.mode == "loop"
    # the loop's Newton Jacobian takes the plain call too
    assert system.jacobian(t, y).shape == (2, y.shape[1], y.shape[1])


def sensitivity_system(mechanism, K: int, seed: int, *, perturb: bool = False,
                       columnar: bool = False):  # fmt: skip
    """``_Sensitivities`` of ``mechanism`` with Lotka–Volterra's parameters, ``K`` rows,
    and a random state ``y [K, N]`` (states in [0.5, 1.5), normal S) at ``t = 0``; with
    ``perturb`` each row's parameters differ (0.1 normal in log space)."""
    from odenet.fit.greybox import _Rows, _Sensitivities

    field = GreyBoxField(mechanism, MECHANISMS["lotka_volterra"][1]).double()
    D, P = 2, 4
    gen = torch.Generator().manual_seed(seed)
    raw = field.raw.detach().expand(K, P)
    if perturb:
        raw = raw + 0.1 * torch.randn(K, P, generator=gen, dtype=torch.float64)
    system = _Sensitivities(field, D, _Rows(raw), columnar)
    y = torch.cat([torch.rand(K, D, generator=gen, dtype=torch.float64) + 0.5,
                   torch.randn(K, D * (D + P), generator=gen, dtype=torch.float64)], 1)  # fmt: skip
    return system, torch.zeros(K, dtype=torch.float64), y


def row_central_differences(f, t, y, h=1e-6):
    """``[K, N, N]``: ∂f(t, y)[k]/∂y[k] by central differences, one row perturbed at a
    time (so a row that read another row's state or parameters would show)."""
    K, N = y.shape
    J = torch.empty(K, N, N, dtype=y.dtype)
    for k in range(K):
        for j in range(N):
            e = torch.zeros_like(y)
            e[k, j] = h
            J[k, :, j] = ((f(t, y + e) - f(t, y - e)) / (2 * h))[k]
    return J


@pytest.mark.parametrize("columnar", [False, True], ids=["shared", "per_series"])
@pytest.mark.parametrize("mode", ["reverse", "forward", "loop"])
def test_the_sensitivity_systems_newton_jacobian_against_central_differences(mode, columnar):
    """``jacobian`` (autograd through reverse mode's taped J_x, J_raw: second
    derivatives of the mechanism; for the loop one row at a time in the plain layout)
    equals central differences of the system, ∂S'/∂x included."""
    system, t, y = sensitivity_system(MECHANISMS["lotka_volterra"][0], 2, 1, perturb=True,
                                      columnar=columnar)  # fmt: skip
    system.mode = mode
    D = system.D
    J = system.jacobian(t, y)
    fd = row_central_differences(system, t, y)
    assert fd[:, D:, :D].abs().max() > 0.1  # ∂S'/∂x: what a block diagonal would drop
    torch.testing.assert_close(J, fd, rtol=1e-7, atol=1e-8)


def test_a_mechanism_without_a_double_backward_gets_the_block_diagonal_newton_jacobian(
    monkeypatch,
):
    """Where the second derivatives raise (monkeypatched: an op without a double
    backward), ``jacobian`` falls back to ``diag(J_x, J_x ⊗ I)``, equal to central
    differences on those blocks and zero on ∂S'/∂x, which it drops."""
    from odenet.fit import greybox

    def no_double_backward(*args):
        raise RuntimeError("trying to differentiate twice")

    monkeypatch.setattr(greybox, "batched_jacobian", no_double_backward)
    system, t, y = sensitivity_system(MECHANISMS["lotka_volterra"][0], 2, 3)
    D, N = system.D, y.shape[1]
    system(t, y)
    J = system.jacobian(t, y)
    fd = row_central_differences(system, t, y)
    kept = torch.ones(N, N, dtype=torch.bool)
    kept[D:, :D] = False
    assert (J[:, ~kept] == 0).all() and fd[:, ~kept].abs().max() > 0.1
    torch.testing.assert_close(J[:, kept], fd[:, kept], rtol=1e-7, atol=1e-8)


def test_newton_takes_reverse_mode_only_where_it_passed_its_check():
    """A mechanism that reduces a parameter over the rows axis (all rows equal, so the
    value is right in every layout) gives reverse mode's per-row copies a share of the
    parameter's derivative each: reverse fails the first call's check, forward runs,
    and the Newton Jacobian must not come from reverse mode either (it comes from the
    plain layout, one row at a time)."""
    mech = MECHANISMS["lotka_volterra"][0]

    def pooled_alpha(t, x, p):
        alpha = p["alpha"].expand_as(x[..., :1]).amax(dim=-2, keepdim=True)
        return mech(t, x, {**p, "alpha": alpha})

    system, t, y = sensitivity_system(pooled_alpha, 3, 2)
    system(t, y)
    assert system.mode == "forward"
    J = system.jacobian(t, y)
    assert system._reverse_ok is False
    torch.testing.assert_close(J, row_central_differences(system, t, y), rtol=1e-7, atol=1e-8)


def stiff_exchange(t, x, p):
    """Fast reversible exchange a ⇌ b (rates kf, kb ~ 1e2) and slow elimination of b."""
    a, b = x[..., 0:1], x[..., 1:2]
    return torch.cat([-p["kf"] * a + p["kb"] * b, p["kf"] * a - (p["kb"] + p["kel"]) * b], -1)


def test_an_implicit_method_solves_a_stiff_grey_box_sensitivity_system_in_few_steps():
    """A stiff mechanism with radau_iia5: the sensitivities equal central differences
    of the flow, within a step budget that Newton on autograd's view of the system
    (zero: it cannot see through the sensitivities' own differentiation, so Newton was
    a fixed-point iteration, h·|λ| < 1) runs out of: 72 steps and one Jacobian against
    2750 steps and 1612 Newton failures (one run)."""
    import odenet
    from odenet.fit.greybox import GreyBoxMLE

    guess = {"kf": 300.0, "kb": 150.0, "kel": 0.3}
    model = GreyBoxMLE(GreyBoxField(stiff_exchange, guess), method="radau_iia5",
                       rtol=1e-6, atol=1e-8, max_steps=300)  # fmt: skip
    grid = torch.tensor([[0.0, 0.5, 1.0, 2.0, 4.0]], dtype=torch.float64)
    x0 = torch.tensor([[1.0, 0.2]], dtype=torch.float64)
    raw = model.field.raw.detach().clone()
    X, S = model._solve_rows(grid, x0, raw[None].clone(), None)

    def flow(x0, raw):
        vals = dict(zip(model.field.names, raw.exp()))
        return odenet.solve(lambda t, x: stiff_exchange(t, x, vals), x0, grid[0],
                            method="radau_iia5", rtol=1e-11, atol=1e-13).ys  # fmt: skip

    torch.testing.assert_close(X[0], flow(x0[0], raw), rtol=1e-5, atol=1e-8)
    h = 1e-6
    for j in range(2 + 3):
        dx, dr = torch.zeros(2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        if j < 2:
            dx[j] = h
        else:
            dr[j - 2] = h
        fd = (flow(x0[0] + dx, raw + dr) - flow(x0[0] - dx, raw - dr)) / (2 * h)
        torch.testing.assert_close(S[0, :, :, j], fd, rtol=1e-4, atol=1e-6)


def test_grey_box_mle_argument_errors():
    from odenet.fit.greybox import GreyBoxMLE

    mech, guess = MECHANISMS["lotka_volterra"]
    with pytest.raises(InputError, match="without a neural correction"):
        GreyBoxMLE(GreyBoxField(mech, guess, correction=torch.nn.Linear(2, 2)))
    with pytest.raises(InputError, match="`node_every` must be an integer ≥ 2 or None"):
        GreyBoxMLE(GreyBoxField(mech, guess), node_every=1)
    with pytest.raises(InputError, match="needs a model with a `gauss_newton"):
        fit(GRUD(2, 4), small_lv(), iters=1, optimizer="gauss_newton")
    blow_up = GreyBoxField(lambda t, x, p: x * p["a"] / 0.0, {"a": 1.0})
    with pytest.raises(odenet_errors.SolverError, match="initial guess makes the ODE fail"):
        GreyBoxMLE(blow_up).gauss_newton(small_lv().batch)


def bateman(t, dose, ka, ke, V):
    return dose * ka / (V * (ka - ke)) * (np.exp(-ke * t) - np.exp(-ka * t))


def test_pk_model_with_dose_jumps_matches_bateman_superposition():
    ka, ke, V = 1.5, 0.2, 0.5
    doses = [[(0.0, 4.0)], [(0.0, 3.0), (6.0, 2.0)]]
    model = OneCompartmentPK(doses, ka=ka, ke=ke, V=V, rtol=1e-10, atol=1e-12)
    t = torch.tensor([0.5, 1.0, 5.0, 6.5, 12.0], dtype=torch.float64)
    c0 = model.concentration(0, t).detach().numpy()
    c1 = model.concentration(1, t).detach().numpy()
    tn = t.numpy()
    np.testing.assert_allclose(c0, bateman(tn, 4.0, ka, ke, V), rtol=1e-7)
    ref1 = bateman(tn, 3.0, ka, ke, V) + np.where(
        tn > 6, bateman(np.maximum(tn - 6, 0), 2.0, ka, ke, V), 0
    )
    np.testing.assert_allclose(c1, ref1, rtol=1e-7)
    with pytest.raises(InputError, match="at least one dose"):
        OneCompartmentPK([[]])


def test_pk_fit_recovers_parameters_from_noiseless_concentrations():
    ka, ke, V = 1.5, 0.2, 0.5
    t = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 7.0, 12.0, 24.0])
    times = [torch.tensor(t), torch.tensor(t[1:])]
    vals = [torch.tensor(bateman(t, 4.0, ka, ke, V))[:, None],
            torch.tensor(bateman(t[1:], 5.0, ka, ke, V))[:, None]]  # fmt: skip
    batch = IrregularBatch.from_lists(times, vals)
    model = OneCompartmentPK([[(0.0, 4.0)], [(0.0, 5.0)]], ka=1.0, ke=0.1, V=1.0)
    single = model.concentration(1, times[1]).detach()  # the dose-by-dose path
    torch.testing.assert_close(model._all(batch.times, batch.lengths)[1, :7].detach(), single)
    fit(model, batch, iters=2, optimizer="lbfgs")
    err = relative_error(model.values(), {"ka": ka, "ke": ke, "V": V})
    assert max(err.values()) < 1e-4, err


def test_linear_interpolation_and_locf_match_numpy():
    d = small_lv(3)
    q = torch.sort(torch.rand(3, 7, dtype=torch.float64) * 8, dim=1).values
    q[:, 0] = -0.5  # before every series' first time: LOCF has nothing to carry (the mean)
    lin = LinearInterpolation().predict(d.batch, q)
    locf = LOCF().predict(d.batch, q)
    for b in range(3):
        n = int(d.batch.lengths[b])
        t, v = d.batch.times[b, :n].numpy(), d.batch.values[b, :n].numpy()
        for ch in range(2):
            np.testing.assert_allclose(lin[b, :, ch], np.interp(q[b].numpy(), t, v[:, ch]))
            idx = np.searchsorted(t, q[b].numpy(), side="right") - 1
            ref = np.where(idx >= 0, v[np.clip(idx, 0, None), ch], 0.0)
            np.testing.assert_allclose(locf[b, :, ch], ref)
    assert (TrainingMean().predict(d.batch, q) == 0).all()


@pytest.mark.parametrize(
    "make",
    [lambda: GRUD(2, 8), lambda: GRUDeltaT(2, 8), lambda: GRUGrid(2, 8, dt=0.5),
     lambda: neural_ode(2, 8), lambda: LOCF()],
)  # fmt: skip
def test_predictions_use_only_observations_before_the_query(make):
    torch.manual_seed(0)
    model = make().double()
    d = small_lv(2)
    q = torch.tensor([[3.0, 3.7], [2.2, 5.0]], dtype=torch.float64)
    p1 = model.predict(d.batch, q)
    later = d.batch.times > 5.0  # only the second row's query 5.0 is affected by those
    changed = IrregularBatch(d.batch.times, d.batch.values + 10.0 * later[..., None],
                             d.batch.mask, d.batch.lengths)  # fmt: skip
    p2 = model.predict(changed, q)
    torch.testing.assert_close(p1, p2)
    future = (d.batch.times > 2.2) & d.batch.valid
    changed = IrregularBatch(d.batch.times, d.batch.values + 10.0 * future[..., None],
                             d.batch.mask, d.batch.lengths)  # fmt: skip
    torch.testing.assert_close(model.predict(changed, q)[1, 0], p1[1, 0])


def test_ode_rnn_and_latent_ode_adapters_predict_at_arbitrary_times():
    from odenet.fit import LatentODEForecaster, ODERNNForecaster

    torch.manual_seed(0)
    d = small_lv(2)
    q = torch.tensor([[1.0, 3.0, 9.0], [0.5, 7.9, 8.5]], dtype=torch.float64)
    for model in (ODERNNForecaster(2, 4, horizon=2), LatentODEForecaster(2, 2, 4)):
        model.double()
        assert math.isfinite(float(model.loss(d.batch).detach()))
        assert model.predict(d.batch, q).shape == (2, 3, 2)
    lo, mid, hi = model.band(d.batch, q, n_samples=5)
    assert (lo <= mid + 1e-12).all() and (mid <= hi + 1e-12).all()


def test_model_argument_errors():
    with pytest.raises(InputError, match="`horizon` must be a positive integer"):
        neural_ode(2, horizon=0)
    with pytest.raises(InputError, match=r"must be > 0: they are positive"):
        GreyBoxField(MECHANISMS["lotka_volterra"][0], {"alpha": -1.0})
    with pytest.raises(InputError, match="at least one unknown parameter"):
        GreyBoxField(MECHANISMS["lotka_volterra"][0], {})


def test_latent_ode_rk4_encoder_is_independent_of_batch_order_and_padding():
    from odenet.fit import LatentODEForecaster

    torch.manual_seed(0)
    model = LatentODEForecaster(2, 2, 4).double().eval()  # eval: z0 = posterior mean
    d = small_lv()
    perm = torch.tensor([2, 0, 3, 1])
    other = repad(d.batch, perm, extra=3)
    # the decoder is one batched adaptive solve (rtol 1e-3): rows agree to far below that
    torch.testing.assert_close(model.loss(d.batch), model.loss(other), rtol=1e-7, atol=0)
    q = torch.tensor([[1.0, 3.0, 9.0]] * 4, dtype=torch.float64)
    torch.testing.assert_close(model.predict(d.batch, q)[perm], model.predict(other, q),
                               rtol=1e-9, atol=1e-11)  # fmt: skip


def test_one_rescaled_rk4_step_per_gap_is_the_degree_4_taylor_polynomial():
    """The latent encoder's per-row gap step on a linear field, against the closed form
    ``Σ_{k≤4} (Δt A)^k / k!`` (what one classical RK4 step of y' = Ay computes)."""
    import odenet
    from odenet.fit.continuous import _GapField

    A = torch.tensor([[-0.3, 1.0], [-1.0, -0.1]], dtype=torch.float64)
    dt = torch.tensor([0.2, 0.7, 1.5], dtype=torch.float64)
    h0 = torch.randn(3, 2, dtype=torch.float64)
    gap = _GapField(Linear(A), torch.zeros(3, dtype=torch.float64), dt)
    h1 = odenet.step(gap, torch.zeros((), dtype=torch.float64), h0, 1.0, "rk4")
    for b in range(3):
        M = sum(torch.linalg.matrix_power(dt[b] * A, k) / math.factorial(k) for k in range(5))
        torch.testing.assert_close(h1[b], M @ h0[b], rtol=1e-13, atol=1e-14)
    with pytest.raises(InputError, match="`encoder` must be 'rk4' or 'adaptive'"):
        from odenet.fit import LatentODEForecaster

        LatentODEForecaster(2, encoder="euler")


@pytest.mark.parametrize("encoder", ["rk4", "adaptive"])
def test_latent_ode_eval_loss_is_the_posterior_means(encoder):
    # eval mode scores z0 = μ (validation and early stopping read it); the adaptive
    # path drew a sample every call (178–1041 around 309)
    from odenet.fit import LatentODEForecaster
    from odenet.models.odernn import gaussian_loglik

    torch.manual_seed(0)
    model = LatentODEForecaster(2, 2, 4, encoder=encoder).double().eval()
    batch = small_lv().batch
    with torch.no_grad():
        losses = [model.loss(batch) for _ in range(3)]
        mu, logvar = model.encode(batch)
        xhat = model.net.decode(mu, batch.times, lengths=batch.lengths)
        loglik = gaussian_loglik(batch.values, xhat, batch.mask, model.net.obs_std)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)
    for loss in losses:
        torch.testing.assert_close(loss, -(loglik - kl).mean(), rtol=1e-5, atol=0)


# --- causal LOCF fill; queries before a series' first observation ------------------


class Decay(torch.nn.Module):
    """``x' = −k x``: flow ``e^{−k Δt}`` in either direction of time."""

    def __init__(self, k=0.5):
        super().__init__()
        self.k = k

    def forward(self, t, x):
        return -self.k * x


def leading_gap(v3=7.0, later=0.0):
    """One series at t = 0 … 5: channel 0 observed throughout, channel 1 first at t = 3
    (value ``v3``) and missing again at t = 4; ``later`` is added to every value at t ≥ 3."""
    t = torch.arange(6, dtype=torch.float64)
    ch1 = torch.tensor([0.0, 0.0, 0.0, v3, 0.0, 0.3], dtype=torch.float64)
    v = torch.stack([torch.linspace(0.1, 0.6, 6, dtype=torch.float64), ch1], -1)
    v = v + later * (t >= 3)[:, None]
    m = torch.ones(6, 2, dtype=torch.float64)
    m[:3, 1] = m[4, 1] = 0
    return IrregularBatch.from_lists([t], [v], [m])


@pytest.mark.parametrize(
    "make",
    [lambda: GRUD(2, 8), lambda: GRUDeltaT(2, 8), lambda: GRUGrid(2, 8, dt=1.0),
     lambda: neural_ode(2, 8), lambda: LOCF()],
)  # fmt: skip
def test_predictions_before_a_channels_first_observation_do_not_see_it(make):
    """Channel 1 is first observed at t = 3: predictions at t < 3 must not change with the
    values observed at t ≥ 3 (the backward fill put that first value into the inputs of
    GRUDeltaT/GRUGrid and into the start states of ShootingODE and LOCF)."""
    torch.manual_seed(0)
    model = make().double().eval()
    q = torch.tensor([[0.5, 2.0, 2.5]], dtype=torch.float64)
    with torch.no_grad():
        p1 = model.predict(leading_gap(7.0), q)
        p2 = model.predict(leading_gap(100.0, later=10.0), q)
    torch.testing.assert_close(p1, p2, rtol=0, atol=0)


def test_shooting_loss_scores_no_shot_from_a_start_filled_from_the_future():
    """The multiple-shooting MSE against its shots enumerated by hand with the exact flow
    ``e^{−kΔt}``: a channel is scored in a shot only if it was observed at or before the
    shot's start, whose value is then the flow from its last observation (a channel
    missing there is forecast, not held).  The backward fill started the shots from
    t = 0, 1, 2 at channel 1's first value, the target they were scored on."""
    k, b = 0.5, leading_gap(7.0)
    model = ShootingODE(Decay(k), horizon=2, rtol=1e-11, atol=1e-13)
    t, v, m = b.times[0], b.values[0], b.mask[0]
    terms = []
    for i in range(5):  # the last observation starts no shot
        for j in range(i + 1, min(i + 2, 5) + 1):
            for d in range(2):
                seen = [s for s in range(i + 1) if m[s, d] > 0]
                if m[j, d] > 0 and seen:
                    pred = v[seen[-1], d] * math.exp(-k * float(t[j] - t[seen[-1]]))
                    terms.append((pred - v[j, d]) ** 2)
    torch.testing.assert_close(model.loss(b), torch.stack(terms).mean(), rtol=1e-9, atol=0)


def decay_context(k=0.5):
    """Exact ``e^{−kt}`` observed at t = 1 … 5 (the series starts at t0 = 1)."""
    t = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    return IrregularBatch.from_lists([t], [torch.exp(-k * t)[:, None]])


# unsorted, a duplicate, one at t0 = 1 and three before it
Q_BEFORE = torch.tensor([[2.0, 0.0, 0.5, 1.0, -1.0, 0.5, 4.5]], dtype=torch.float64)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_shooting_ode_backcasts_queries_before_the_first_observation(bidirectional):
    """Exact field: predictions at every query, before t0 too, are ``e^{−kq}`` (they were
    clamped to the value at t0)."""
    model = ShootingODE(Decay(0.5), bidirectional=bidirectional, rtol=1e-11, atol=1e-13)
    pred = model.predict(decay_context(), Q_BEFORE)[0, :, 0]
    torch.testing.assert_close(pred, torch.exp(-0.5 * Q_BEFORE[0]), rtol=1e-8, atol=0)


def test_grey_box_mle_backcasts_queries_before_the_first_observation():
    """Fitted on exact ``e^{−kt}`` from k = 0.7: ``predict`` and ``band`` at queries before
    the series' first time are the backcast ``e^{−kq}``, not the value at t0."""
    from odenet.fit.greybox import GreyBoxMLE

    field = GreyBoxField(lambda t, x, p: -p["k"] * x, {"k": 0.7})
    model = GreyBoxMLE(field, node_every=None, rtol=1e-11, atol=1e-13)
    model.gauss_newton(decay_context(), max_iter=30)
    assert abs(model.values()["k"] - 0.5) < 1e-7
    exact = torch.exp(-0.5 * Q_BEFORE[0])
    torch.testing.assert_close(model.predict(decay_context(), Q_BEFORE)[0, :, 0], exact,
                               rtol=1e-6, atol=0)  # fmt: skip
    lo, mid, hi = model.band(decay_context(), Q_BEFORE)
    torch.testing.assert_close(mid[0, :, 0], exact, rtol=1e-6, atol=0)
    assert torch.isfinite(lo).all() and (lo <= mid).all() and (mid <= hi).all()


def test_latent_ode_decodes_queries_in_any_order_and_before_its_first_time():
    """Decoder field ``z' = −kz``, so the decoded mean is ``W e^{−k(q − t0)} μ + c``
    exactly, at unsorted and repeated queries and before t0 (clamped to t0 — or, with two
    queries at or before t0, an error about time units)."""
    from odenet.fit import LatentODEForecaster

    torch.manual_seed(0)
    model = LatentODEForecaster(1, 2, 4, rtol=1e-11, atol=1e-13).double().eval()
    model.net.dec_field = Decay(0.5)
    ctx = decay_context()
    with torch.no_grad():
        mu, _ = model.encode(ctx)
        z = mu[0] * torch.exp(-0.5 * (Q_BEFORE[0] - 1.0))[:, None]
        ref = model.net.to_obs(z)
        torch.testing.assert_close(model.predict(ctx, Q_BEFORE)[0], ref, rtol=1e-8, atol=1e-12)
        lo, mid, hi = model.band(ctx, Q_BEFORE, n_samples=8)
    assert (lo <= mid).all() and (mid <= hi).all()
    torch.testing.assert_close(mid[0, 2], mid[0, 5], rtol=0, atol=0)  # the duplicate 0.5


def test_on_cpu_runs_on_the_cpu_and_enters_a_device_mode_only_where_it_changes_something():
    """`with torch.device("cpu")` is a torch-function mode every torch call then goes
    through (half a greybox fit's time): entered only when the default device is another
    one (here "meta", which needs no GPU), where the method's own tensors must still land
    on the CPU."""
    from torch.overrides import _get_current_function_mode_stack

    from odenet.fit._common import on_cpu

    class Model(torch.nn.Module):
        @on_cpu
        def work(self, x):
            return torch.zeros(1).device, len(_get_current_function_mode_stack()), x.device

    m = Model()
    assert m.work(torch.ones(1)) == (torch.device("cpu"), 0, torch.device("cpu"))
    torch.set_default_device("meta")
    try:
        dev, modes, x_dev = m.work(torch.ones(1, device="cpu"))
    finally:
        torch.set_default_device(None)
    assert dev == torch.device("cpu") and x_dev == torch.device("cpu") and modes >= 1
