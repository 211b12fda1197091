"""Lyapunov spectra against exactly known values (linear maps, logistic map,
linear flows) and the published Lorenz spectrum; one code path for maps and flows."""

import math

import numpy as np
import pytest
import torch

from odenet._compiled import compiler_works  # noqa: F401  (the skipif string calls it)
from odenet.stability import (
    StabilityInputError,
    flow_map,
    kaplan_yorke_dimension,
    lyapunov,
    lyapunov_spectrum,
)
from odenet.stability.regions import stability_function

D = torch.float64


def lorenz(t, x, sigma=10.0, rho=28.0, beta=8.0 / 3.0):
    return torch.stack(
        [
            sigma * (x[..., 1] - x[..., 0]),
            x[..., 0] * (rho - x[..., 2]) - x[..., 1],
            x[..., 0] * x[..., 1] - beta * x[..., 2],
        ],
        dim=-1,
    )


def test_diagonal_linear_map_has_log_of_its_entries():
    a = torch.tensor([3.0, -1.5, 0.5, 0.1], dtype=D)
    lam = lyapunov_spectrum(lambda x: a * x, torch.ones(4, dtype=D), 50)
    np.testing.assert_allclose(lam, np.sort(np.log(np.abs(a.numpy())))[::-1], atol=1e-12)


def test_orthogonal_map_has_zero_exponents():
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=D, generator=torch.Generator().manual_seed(0)))
    lam = lyapunov_spectrum(lambda x: q @ x, torch.ones(5, dtype=D), 200)
    np.testing.assert_allclose(lam, 0.0, atol=1e-12)


def test_non_normal_linear_map_exponents_are_log_eigenvalue_moduli():
    # upper-triangular: the exponents are log|diagonal| despite the large shear
    M = torch.tensor([[1.2, 50.0], [0.0, 0.7]], dtype=D)
    lam = lyapunov_spectrum(lambda x: M @ x, torch.ones(2, dtype=D), 2000)
    np.testing.assert_allclose(lam, [math.log(1.2), math.log(0.7)], atol=5e-3)


def test_logistic_map_at_r4_has_exponent_ln2():
    res = lyapunov(lambda x: 4.0 * x * (1.0 - x), torch.tensor([0.3], dtype=D), 5000, transient=100)
    assert float(res.exponents[0]) == pytest.approx(math.log(2), abs=3 * res.stderr[0] + 5e-3)


def test_the_k_largest_and_dt_scaling():
    a = torch.tensor([2.0, 0.5, 0.25], dtype=D)
    lam = lyapunov_spectrum(lambda x: a * x, torch.ones(3, dtype=D), 10, k=2, dt=0.5)
    np.testing.assert_allclose(lam, [2 * math.log(2), 2 * math.log(0.5)], atol=1e-12)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_linear_flow_and_its_step_map_from_the_same_test(method):
    # flow x' = diag(a) x stepped by `method`: exact exponents of the discrete
    # map are log|R(a dt)| / dt, which tend to a as dt -> 0
    a = np.array([0.3, -0.2, -1.0])
    dt = 0.05
    A = torch.tensor(a, dtype=D)
    step = flow_map(lambda t, x: A * x, dt, method)
    flow = lyapunov_spectrum(step, torch.ones(3, dtype=D), 100, dt=dt)
    exact_map = np.log(np.abs(stability_function(method)(a * dt))) / dt
    np.testing.assert_allclose(flow, exact_map, atol=1e-12)
    tol = 0.03 if method == "euler" else 1e-5
    np.testing.assert_allclose(flow, a, atol=tol)
    # the same spectrum from the step as an explicit map with known Jacobian
    R = torch.tensor(stability_function(method)(a * dt).real, dtype=D)
    as_map = lyapunov_spectrum(lambda x: R * x, torch.ones(3, dtype=D), 100, dt=dt)
    np.testing.assert_allclose(as_map, flow, atol=1e-12)


def test_lorenz_spectrum_matches_the_published_values():
    # Sprott (2003): λ = (0.9056, 0, −14.5723); the sum is −(σ + 1 + β) exactly
    dt = 0.02
    # (1, 1, 1) starts near the saddle at the origin: 20 time units of transient
    res = lyapunov(
        flow_map(lorenz, dt),
        torch.tensor([1.0, 1.0, 1.0], dtype=D),
        8000,
        dt=dt,
        transient=1000,
        qr_every=2,
    )
    lam = res.exponents.numpy()
    assert lam.sum() == pytest.approx(-(10 + 1 + 8 / 3), rel=2e-4)
    assert lam[0] == pytest.approx(0.9056, abs=max(0.05, 3 * res.stderr[0]))
    assert abs(lam[1]) < 0.03
    assert lam[2] == pytest.approx(-14.5723, rel=0.01)
    assert res.kaplan_yorke_dimension == pytest.approx(2.062, abs=0.01)
    assert res.running.shape == (4000, 3) and np.all(res.stderr < 0.2)


def test_ensemble_of_orbits_matches_the_published_values():
    dt = 0.02
    x0 = torch.tensor([1.0, 1.0, 1.0], dtype=D) + torch.randn(
        32, 3, dtype=D, generator=torch.Generator().manual_seed(1)
    )
    # 32 orbits × 30 time units (after 20 each), the field is written for batches
    res = lyapunov(
        flow_map(lorenz, dt),
        x0,
        1500,
        dt=dt,
        transient=1000,
        ensemble=True,
        vectorized=True,
        qr_every=5,
    )
    lam = res.exponents.numpy()
    assert lam.sum() == pytest.approx(-13.6667, rel=1e-3)
    assert lam[0] == pytest.approx(0.9056, abs=max(0.03, 4 * res.stderr[0]))
    assert abs(lam[1]) < 0.02
    assert lam[2] == pytest.approx(-14.5723, rel=0.005)


def test_ensemble_equals_separate_orbits_vmapped_or_vectorized():
    dt = 0.02
    x0 = torch.tensor([[1.0, 2.0, 20.0], [-3.0, 1.0, 25.0]], dtype=D)
    step = flow_map(lorenz, dt)
    sep = [lyapunov(step, x, 400, dt=dt, transient=100).running[-1] for x in x0]
    for vec in (False, True):
        ens = lyapunov(step, x0, 400, dt=dt, transient=100, ensemble=True, vectorized=vec)
        np.testing.assert_allclose(ens.exponents, np.mean(sep, axis=0), rtol=1e-10)


def test_matrix_free_jvp_tangents_equal_the_jacobian_path():
    dt = 0.02
    x0 = torch.tensor([1.0, 2.0, 20.0], dtype=D)
    a = lyapunov(flow_map(lorenz, dt), x0, 60, dt=dt, transient=10)
    b = lyapunov(flow_map(lorenz, dt), x0, 60, dt=dt, transient=10, tangent="jvp")
    np.testing.assert_allclose(a.exponents, b.exponents, rtol=1e-10)


def test_driven_map_with_inputs():
    # x_{n+1} = u_n x_n: exponent = mean log|u_n|
    u = torch.tensor([2.0, 0.5, 3.0, 1.0] * 25, dtype=D).reshape(100, 1)
    lam = lyapunov_spectrum(lambda x, v: v * x, torch.ones(1, dtype=D), 100, inputs=u)
    assert float(lam[0]) == pytest.approx(float(torch.log(u.abs()).mean()), abs=1e-12)


def test_finite_time_exponents_of_a_switching_map():
    # the local rate switches from log 2 to log 0.5 half way: finite-time windows see it
    def step(x, v):
        return v * x

    u = torch.cat([torch.full((50, 1), 2.0), torch.full((50, 1), 0.5)]).to(D)
    res = lyapunov(step, torch.ones(1, dtype=D), 100, inputs=u)
    ft = res.finite_time(50)
    np.testing.assert_allclose(ft[:, 0], [math.log(2), math.log(0.5)], atol=1e-12)


def test_kaplan_yorke_dimension_formula():
    assert kaplan_yorke_dimension([0.9056, 0.0, -14.5723]) == pytest.approx(2 + 0.9056 / 14.5723)
    assert kaplan_yorke_dimension([-0.1, -1.0]) == 0.0
    assert kaplan_yorke_dimension([0.5, 0.1]) == 2.0


def test_kaplan_yorke_dimension_is_float64_for_lists_and_tensors():
    # 2 + (0.5 − 0.2)/1 = 2.3 exactly in float64 arithmetic; a list used to go through
    # torch's default float32 (2.2999999970).
    truth = 2 + (0.5 - 0.2) / 1.0
    assert kaplan_yorke_dimension([0.5, -0.2, -1.0]) == truth
    assert kaplan_yorke_dimension(torch.tensor([0.5, -0.2, -1.0], dtype=torch.float64)) == truth
    assert kaplan_yorke_dimension(np.array([0.5, -0.2, -1.0])) == truth


def test_bad_arguments_are_reported():
    step = lambda x: 2 * x  # noqa: E731
    x0 = torch.ones(2, dtype=D)
    with pytest.raises(StabilityInputError, match="`k` = 3 exceeds the state dimension d = 2"):
        lyapunov_spectrum(step, x0, 10, k=3)
    with pytest.raises(StabilityInputError, match="`n_steps` must be a positive integer"):
        lyapunov_spectrum(step, x0, 0)
    with pytest.raises(StabilityInputError, match="`tangent` must be 'jacobian' or 'jvp'"):
        lyapunov(step, x0, 10, tangent="fd")
    with pytest.raises(StabilityInputError, match="`inputs` has 3 rows"):
        lyapunov(lambda x, u: u * x, x0, 10, inputs=torch.ones(3, 1, dtype=D))
    with pytest.raises(StabilityInputError, match=r"`x0` must be a torch\.Tensor"):
        lyapunov_spectrum(step, [1.0, 2.0], 10)
    with pytest.raises(StabilityInputError, match="`window` = 50 is longer than the run"):
        lyapunov(step, x0, 10).finite_time(50)
    with pytest.raises(StabilityInputError, match="`dt` must be a finite non-zero number"):
        flow_map(lorenz, 0.0)
    with pytest.raises(StabilityInputError, match="`dt` must be a positive finite number"):
        lyapunov_spectrum(step, x0, 10, dt=0.0)
    with pytest.raises(StabilityInputError, match="runs one orbit"):
        lyapunov(step, x0[None], 10, tangent="jvp", ensemble=True)
    # a NaN start took the branch NaN selects of a piecewise map: a finite log(0.1)
    piecewise = lambda x: torch.where(x > 0, 2 * x, 0.1 * x)  # noqa: E731
    with pytest.raises(StabilityInputError, match="`x0` has NaN"):
        lyapunov_spectrum(piecewise, torch.tensor([math.nan], dtype=D), 10)


def test_implicit_scheme_flow_uses_the_autograd_fallback_and_gives_log_R():
    # torch.func cannot trace the Newton solve; the Jacobians fall back to autograd
    a = np.array([-1.0, -30.0])
    dt = 0.1
    A = torch.tensor(a, dtype=D)
    step = flow_map(lambda t, x: A * x, dt, "backward_euler")
    lam = lyapunov_spectrum(step, torch.ones(2, dtype=D), 15, dt=dt)
    np.testing.assert_allclose(lam, np.log(np.abs(1 / (1 - a * dt))) / dt, rtol=1e-8)


# --- the compiled one-orbit path (odenet._compiled.compiled_orbit) -----------------------


def test_compile_falls_back_to_the_eager_path_with_the_same_result(monkeypatch):
    monkeypatch.setenv("ODENET_COMPILE", "0")
    a = torch.tensor([2.0, 0.5], dtype=D)

    def step(x):
        return a * x

    x0 = torch.ones(2, dtype=D)
    eager = lyapunov(step, x0, 30, transient=3)
    fallback = lyapunov(step, x0, 30, transient=3, compile=True)
    torch.testing.assert_close(fallback.exponents, eager.exponents, rtol=0, atol=0)
    np.testing.assert_array_equal(fallback.running, eager.running)
    with pytest.raises(StabilityInputError, match="record_every"):
        lyapunov(step, x0, 30, compile=True, record_every=0)


@pytest.mark.slow
@pytest.mark.skipif("not compiler_works()", reason="torch.compile unavailable")
def test_compiled_orbit_diagonal_flow_is_exact_and_lorenz_within_published_tolerance():
    # diagonal linear flow, rk4: exponents log|R(a dt)|/dt exactly, through the
    # compiled trajectory (Jacobian route) and the compiled orbit loop (jvp route,
    # QR every 2 steps)
    a = np.array([0.3, -0.2, -1.0])
    dt = 0.05
    A = torch.tensor(a, dtype=D)
    step = flow_map(lambda t, x: A * x, dt)
    exact = np.log(np.abs(stability_function("rk4")(a * dt))) / dt
    x0 = torch.ones(3, dtype=D)
    res = lyapunov(step, x0, 41, dt=dt, transient=3, compile=True, qr_every=2)
    np.testing.assert_allclose(res.exponents, exact, atol=1e-12)
    assert res.times[-1] == pytest.approx(41 * dt)
    eager = lyapunov(step, x0, 41, dt=dt, transient=3, qr_every=2)
    np.testing.assert_allclose(res.running, eager.running, rtol=1e-12, atol=1e-12)
    res = lyapunov(step, x0, 40, dt=dt, transient=4, compile=True, qr_every=2, tangent="jvp")
    np.testing.assert_allclose(res.exponents, exact, atol=1e-12)
    # Lorenz on a short orbit, the published spectrum within its usual tolerance
    dt = 0.02
    res = lyapunov(
        flow_map(lorenz, dt), torch.ones(3, dtype=D), 4000, dt=dt, transient=1000, compile=True
    )
    lam = res.exponents.numpy()
    assert lam.sum() == pytest.approx(-(10 + 1 + 8 / 3), rel=2e-4)
    assert lam[0] == pytest.approx(0.9056, abs=0.06)
    assert abs(lam[1]) < 0.04
    assert lam[2] == pytest.approx(-14.5723, rel=0.01)


def test_transient_without_tangents_equals_starting_after_it():
    M = torch.tensor([[1.1, 0.4], [0.0, 0.6]], dtype=D)

    def step(x):
        return M @ x + 0.05 * torch.sin(x)

    x0 = torch.tensor([0.3, -0.1], dtype=D)
    skipped = lyapunov(step, x0, 40, transient=7, transient_tangents=False)
    x7 = x0
    for _ in range(7):
        x7 = step(x7)
    direct = lyapunov(step, x7, 40)
    torch.testing.assert_close(skipped.exponents, direct.exponents, rtol=0, atol=1e-14)


def test_a_diverging_orbit_or_a_map_that_changes_shape_is_an_error_not_nan():
    # x² + 1 from (2, 3) overflows by step 11: the exponents came out [nan, nan]
    with pytest.raises(StabilityInputError, match=r"inf/NaN by step 1[01]"):
        lyapunov_spectrum(lambda x: x**2 + 1.0, torch.tensor([2.0, 3.0], dtype=D), 20)
    with pytest.raises(StabilityInputError, match=r"shape \(2,\) to one of shape \(1,\)"):
        lyapunov_spectrum(lambda x: x[:1] * 0.5, torch.tensor([2.0, 3.0], dtype=D), 20)
    # a linear map that grows without overflow keeps its exact exponents log 3, log 2.5
    W = torch.tensor([[3.0, 1.0], [0.0, 2.5]], dtype=D)
    got = lyapunov_spectrum(lambda x: W @ x, torch.ones(2, dtype=D), 100)
    assert torch.allclose(got, torch.tensor([math.log(3.0), math.log(2.5)], dtype=D), atol=1e-2)
