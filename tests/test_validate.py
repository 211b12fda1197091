"""odenet._validate: every bad argument is an OdenetError naming the argument, the
value and the fix, at the boundary, before any step; and a fuzz of solve's arguments
never ends in a raw error or a hang."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import odenet
from odenet import InputError, OdenetError, VectorFieldError

D = torch.float64
Y0 = torch.tensor([1.0, 5.0], dtype=D)
T = torch.linspace(0, 1, 3, dtype=D)


def decay(t, y):
    return -y


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_step": math.nan}, r"`min_step` must be a non-negative number, and finite; got nan"),
        ({"min_step": math.inf}, r"`min_step` must be a non-negative number, and finite; got inf"),
        ({"min_step": "x"}, r"`min_step` must be a non-negative number.*got 'x'"),
        ({"newton_max_iter": "x"}, r"`newton_max_iter` must be a positive integer.*got 'x'"),
        ({"newton_max_iter": 2.5}, r"`newton_max_iter` must be a positive integer.*got 2.5"),
        ({"newton_max_iter": 0}, r"`newton_max_iter` must be at least 1.*got 0"),
        ({"newton_tol": -1}, r"`newton_tol` must be a positive finite number, got -1"),
        ({"newton_tol": "x"}, r"`newton_tol` must be a positive finite number, got 'x'"),
        ({"newton_tol": math.nan}, r"`newton_tol` must be a positive finite number, got nan"),
        (
            {"rtol": torch.ones(3)},
            r"`rtol` of shape \(3,\) does not broadcast to the state's shape \(2,\)",
        ),
        ({"atol": torch.ones(3, 2)}, r"`atol` of shape \(3, 2\) does not broadcast"),
        ({"atol": torch.tensor([1e-8, -1.0])}, r"`atol` must be finite and non-negative"),
        ({"rtol": True}, r"`rtol` must be a finite non-negative number, got True"),
        ({"max_steps": 2.5}, r"`max_steps` must be a positive integer, got 2.5"),
        ({"first_step": -0.1}, r"`first_step` must be a positive finite number"),
        ({"norm": 3}, r"`norm` must be callable"),
        ({"sensitivity": "backprop"}, r"`sensitivity` must be one of 'direct', 'adjoint'"),
    ],
)
def test_bad_solve_arguments_are_input_errors_naming_them(kwargs, match):
    method = "kvaerno5" if any(k.startswith("newton") for k in kwargs) else "dopri5"
    with pytest.raises(InputError, match=match):
        odenet.solve(decay, Y0, T, method=method, **{"max_steps": 50, **kwargs})


def test_per_component_tolerances_that_broadcast_are_accepted():
    y0 = torch.ones(4, 2, dtype=D)
    sol = odenet.solve(decay, y0, T, rtol=torch.tensor([1e-6, 1e-7], dtype=D), atol=1e-9)
    torch.testing.assert_close(sol.ys[-1], y0 * math.exp(-1), rtol=1e-5, atol=0)


@pytest.mark.parametrize("as_given", [np.array, list, tuple])
def test_per_component_tolerances_as_scipy_takes_them_equal_a_tensor(as_given):
    """scipy's ``solve_ivp`` takes array-like ``atol``/``rtol``: so does ``solve``, with
    the same steps as the equal tensor."""
    y0 = torch.ones(2, dtype=D)
    tensor = odenet.solve(decay, y0, T, atol=torch.tensor([1e-8, 1e-12], dtype=D))
    given = odenet.solve(decay, y0, T, atol=as_given([1e-8, 1e-12]), rtol=as_given([1e-6, 1e-6]))
    assert given.stats["nfe"] == tensor.stats["nfe"]
    torch.testing.assert_close(given.ys, tensor.ys, rtol=0, atol=0)
    with pytest.raises(InputError, match=r"`atol` of shape \(3,\) does not broadcast"):
        odenet.solve(decay, y0, T, atol=as_given([1e-8, 1e-8, 1e-8]))
    with pytest.raises(InputError, match=r"`atol` must be finite and non-negative"):
        odenet.solve(decay, y0, T, atol=as_given([1e-8, -1.0]))


def test_numpy_float32_tolerances_compute_as_python_floats():
    """``rtol=np.float32(1e-6)`` is the number 1e-6: a float64 state of 1e39 is solved
    (closed form e⁻¹·y0) as with ``rtol=1e-6``, not refused as overflowing float32's
    3.4e38, and no numpy overflow warning is emitted."""
    y0 = torch.tensor([1e39, 2e39], dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sol = odenet.solve(decay, y0, T, rtol=np.float32(1e-6), atol=np.float32(1e-8))
    torch.testing.assert_close(sol.ys[-1], y0 * math.exp(-1), rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "per_sample, norm, match",
    [
        (False, lambda e: -e.abs().max(), r"`norm` returned -.*a norm must be ≥ 0"),
        (True, lambda e: -e.abs().max(), r"`norm` returned -.*a norm must be ≥ 0"),
        (False, lambda e: e.abs(), r"`norm` returned shape \(2,\).*one element"),
        (True, lambda e: e.abs(), r"`norm` returned \(2,\) for a row's scaled error"),
        (True, lambda e: float(e.abs().max()), r"torch.vmap: it must use torch operations"),
        (True, lambda e: np.abs(e.numpy()).max(), r"torch.vmap: it must use torch operations"),
    ],
)
def test_a_norm_that_is_negative_or_not_one_number_is_an_input_error(per_sample, norm, match):
    """A negative norm made every trial acceptable (y' = −y at rtol 1e-6 ended 500·rtol
    from e⁻¹ with status ok); a vector or a host-side per-sample norm was a raw torch
    error.  Each is refused before a step is taken."""
    y0 = torch.stack([Y0, 2 * Y0]) if per_sample else Y0
    t = torch.stack([T, 2 * T]) if per_sample else T
    with pytest.raises(InputError, match=match):
        odenet.solve(decay, y0, t, norm=norm)


@pytest.mark.parametrize(
    "option",
    [{"first_step": 0.01}, {"max_step": 0.01}, {"min_step": 0.05}, {"controller": "PI"}],
)
@pytest.mark.parametrize("grid", [{"step_size": 0.1}, {"grid_on_outputs": True}])
def test_adaptive_step_options_on_a_fixed_grid_are_input_errors(option, grid):
    """rk4 with step_size=0.1 and max_step=0.01 took 10 steps of 0.1 (the closed form's
    error of h = 0.1, not of 0.01) and said nothing: each adaptive option is refused."""
    (name,) = option
    with pytest.raises(InputError, match=rf"`{name}` controls adaptive steps; a fixed grid"):
        odenet.solve(decay, Y0, T, method="rk4", **grid, **option)


def test_a_min_step_above_max_step_is_an_input_error():
    with pytest.raises(InputError, match=r"`min_step` = 0.5 exceeds `max_step` = 0.01"):
        odenet.solve(decay, Y0, T, min_step=0.5, max_step=0.01)
    # equal bounds are one step size, and allowed
    sol = odenet.solve(decay, Y0, T, min_step=0.01, max_step=0.01, accept_min_step=True)
    torch.testing.assert_close(sol.ys[-1], Y0 * math.exp(-1), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused_with_the_fix(dtype):
    with pytest.raises(InputError, match=rf"`y0` has dtype {dtype}.*Compute in float32"):
        odenet.solve(decay, Y0.to(dtype), T.float())
    with pytest.raises(InputError, match=rf"`t` has dtype {dtype}.*Compute in float32"):
        odenet.solve(decay, Y0.float(), T.to(dtype))
    with pytest.raises(InputError, match=r"float32"):
        odenet.odeint(decay, Y0.to(dtype), T.float())


def test_a_state_near_overflow_is_named_at_once():
    t0 = time.perf_counter()
    with pytest.raises(
        InputError, match=r"`y0` has values up to 5e\+305.*error scale atol \+ rtol"
    ):
        odenet.solve(decay, Y0 * 1e305, T)
    with pytest.raises(InputError, match=r"`y0` contains NaN or inf \(inf at index \[1\]"):
        odenet.solve(decay, Y0 * 1e308, T)
    with pytest.raises(InputError, match=r"up to 5e\+35.*largest torch.float32.*or use float64"):
        odenet.solve(decay, (Y0 * 1e35).float(), T.float())
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    "as_given",
    [
        lambda t: torch.tensor(t, dtype=torch.int64),
        lambda t: list(t),
        lambda t: [float(x) for x in t],
        lambda t: np.array(t, dtype=np.int64),
    ],
    ids=["int64 tensor", "int list", "float list", "numpy int64"],
)
def test_exact_times_keep_their_value_beside_a_float32_state(as_given):
    # unix timestamps 100 s apart were rounded to float32 (the state's dtype) before the
    # float64 clock saw them: 128 s apart, y(t1) = 0.278 for e^−1, status ok
    t = as_given([1_700_000_000, 1_700_000_100])
    sol = odenet.solve(lambda t, y: -y / 100, torch.ones(1), t, rtol=1e-4, atol=1e-7)
    assert sol.ts[-1].item() == 1_700_000_100
    assert sol.ys[-1].item() == pytest.approx(math.exp(-1.0), rel=1e-3)


def test_a_field_that_overflows_on_a_huge_state_says_so():
    with pytest.raises(VectorFieldError, match=r"NaN or inf at the initial time.*\|y\| = 5e\+200"):
        odenet.solve(lambda t, y: y * y, Y0 * 1e200, T)


def test_a_time_span_the_dtype_cannot_resolve_is_named_at_once():
    t0 = time.perf_counter()
    with pytest.raises(
        InputError, match=r"time span of `t`.*resolved only to eps·\|t\| = 0.000222"
    ):
        odenet.solve(decay, Y0, 1e12 + T * 1e-3)
    # float32 times that round to one value: the message says why
    with pytest.raises(
        InputError, match=r"In torch.float32 times near 1e\+12 are resolved only to"
    ):
        odenet.solve(decay, Y0.float(), (1e12 + T).float())
    assert time.perf_counter() - t0 < 5
    # a long span far from 0 is fine (to the round-off of t: eps·1e12 = 2e-4)
    sol = odenet.solve(decay, Y0, 1e12 + T * 10, rtol=1e-6)
    torch.testing.assert_close(sol.ys[-1], Y0 * math.exp(-10), rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("kw", [{}, {"step_size": 0.1}, {"sensitivity": "adjoint"}])
def test_a_field_that_raises_on_its_first_call_is_a_vector_field_error(kw):
    def f(t, y):
        return y.no_such_attribute

    with pytest.raises(VectorFieldError, match=r"raised AttributeError on its first call") as info:
        odenet.solve(f, Y0.clone().requires_grad_(bool(kw)), T, **kw)
    assert isinstance(info.value.__cause__, AttributeError)


def test_per_sample_fields_that_raise_are_chained_too():
    with pytest.raises(VectorFieldError, match=r"ZeroDivisionError") as info:
        odenet.solve(lambda t, y: 1 / 0, torch.ones(2, 3, dtype=D), torch.stack([T, T + 1]))
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_odenet_errors_raised_inside_f_keep_their_type():
    def f(t, y):
        raise odenet.NonFiniteError("inner")

    with pytest.raises(odenet.NonFiniteError, match="inner"):
        odenet.solve(f, Y0, T)


def test_odeint_validates_through_the_same_module():
    with pytest.raises(InputError, match=r"`rtol` of shape \(3,\) does not broadcast"):
        odenet.odeint(decay, Y0, T, rtol=torch.ones(3))
    with pytest.raises(VectorFieldError, match=r"returned shape \(1,\)"):
        odenet.odeint(lambda t, y: -y[:1], Y0, T)


# --- fuzz: any combination either works or raises an OdenetError ----------------------

_BAD_NUMBERS = [0, -1.0, math.nan, math.inf, "x", True]

# each argument: (valid values, invalid values); an example takes valid values for all
# and then spoils at most two, so that most examples reach the loop
SPACE = {
    "f": (
        [lambda t, y: -y, lambda t, y: y * y, lambda t, y: torch.sin(t) * y],
        [
            lambda t, y: -y[:1],
            lambda t, y: (-y).float(),
            lambda t, y: y * math.nan,
            lambda t, y: 1.0,
            lambda t, y: y.no_such_attribute,
        ],
    ),
    "y0": (
        [torch.tensor([1.0, 5.0], dtype=D), torch.tensor([1.0, 5.0]), [1.0, 5.0]],
        [
            torch.tensor([math.nan, 1.0]),
            torch.ones(2, dtype=torch.float16),
            torch.tensor([1, 5]),
            "y0",
            torch.ones(0),
            torch.tensor([1e305, 1.0], dtype=D),
        ],
    ),
    "t": (
        [
            torch.linspace(0, 1, 3, dtype=D),
            torch.linspace(1, 0, 4, dtype=D),
            torch.tensor([0.0], dtype=D),
            torch.linspace(0, 1, 3),
            [0.0, 1.0],
        ],
        [
            torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=D),
            torch.zeros(2, 2, dtype=D),
            torch.tensor([0.0, math.inf]),
            1e12 + torch.linspace(0, 1e-3, 3, dtype=D),
        ],
    ),
    "method": (
        ["dopri5", "bosh3", "tsit5", "kvaerno3", "sdirk2", "rk4", "backward_euler"],
        ["nope", 3],
    ),
    "rtol": ([1e-6, 1e-3, 0.0, torch.tensor([1e-6, 1e-5])], [-1e-6, math.nan, "x", None]),
    "atol": ([1e-8, 1e-3, torch.tensor([1e-8, 1e-7])], [-1e-6, math.inf, torch.ones(3)]),
    "step_size": ([None, None, 0.1, 0.3, 1e-3], _BAD_NUMBERS),
    "max_steps": ([1, 5, 40], [0, -3, 2.5, "x"]),
    "min_step": ([0.0, 1e-3, 0.5], _BAD_NUMBERS[1:]),
    "max_step": ([None, 0.05, 1.0], _BAD_NUMBERS),
    "first_step": ([None, 1e-3, 0.5, 10.0], _BAD_NUMBERS),
    "newton_tol": ([None, 1e-3, 1.0], _BAD_NUMBERS),
    "newton_max_iter": ([None, 1, 3], [0, "x", 2.5]),
    "controller": (["I", "PI", "PID"], ["bogus", 3]),
    "sensitivity": (["direct", "adjoint", "checkpoint"], ["nope"]),
    "throw": ([True, False], [True, False]),
}


@st.composite
def solve_arguments(draw) -> dict:
    args = {k: draw(st.sampled_from(valid)) for k, (valid, _) in SPACE.items()}
    for k in draw(st.lists(st.sampled_from(sorted(SPACE)), max_size=2, unique=True)):
        args[k] = draw(st.sampled_from(SPACE[k][1]))
    return args


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(kw=solve_arguments())
def test_fuzz_solve_either_works_or_raises_an_odenet_error(kw):
    f, y0, t = kw.pop("f"), kw.pop("y0"), kw.pop("t")
    t0 = time.perf_counter()
    try:
        sol = odenet.solve(f, y0, t, **kw)
    except OdenetError:
        pass
    else:
        assert isinstance(sol, odenet.Solution)
        assert sol.success or not kw["throw"]
    assert time.perf_counter() - t0 < 10  # never a hang: max_steps is at most 40


# found by the fuzz: a singular Newton iteration matrix I − hJ (backward Euler,
# h·f'(y) = 1) raised torch's raw RuntimeError from lu_factor
def test_a_singular_newton_iteration_matrix_is_a_newton_failure():
    with pytest.raises(odenet.NewtonConvergenceError):
        odenet.solve(lambda t, y: y * y, Y0, T, method="backward_euler", step_size=0.1)


def test_a_fixed_step_the_times_cannot_resolve_names_the_shift():
    # at t = 1e12 float64 resolves 2.2e-4: a step of 1e-3 would be off by 22 %; the
    # message said "t + h == t", which is false there, and advised float64 times
    t = 1e12 + torch.linspace(0, 0.1, 3, dtype=D)
    with pytest.raises(InputError, match=r"off by up to 22%.*t − t\[0\]"):
        odenet.solve(lambda t, y: -y, torch.ones(1, dtype=D), t, method="rk4", step_size=1e-3)


def test_an_underflow_at_the_times_resolution_says_so():
    # at t = 1e12 the adaptive steps underflow at a few round-offs of t: the message
    # advised an implicit method and printed "reached t = 1e+12 of t_end = 1e+12"
    t = 1e12 + torch.linspace(0, 0.1, 7, dtype=D)
    with pytest.raises(odenet.StepSizeUnderflowError) as info:
        odenet.solve(lambda t, y: -50 * y, torch.ones(1, dtype=D), t, rtol=1e-10, atol=1e-14)
    msg = str(info.value)
    assert "of t_end = 1000000000000.1" in msg and "shift the times to start near 0" in msg


def test_a_literally_repeated_time_is_called_a_duplicate_not_round_off():
    # float64 times a third of a unit apart cannot have rounded to one value: the
    # round-off hint was a red herring for t = [0, 1, 1, 2]
    t = torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    with pytest.raises(InputError, match=r"The time 1\.0 is given twice") as info:
        odenet.solve(decay, torch.ones(1, dtype=torch.float64), t)
    assert "resolved only" not in str(info.value)


@pytest.mark.parametrize(
    "field",
    [
        lambda t, y: y.neg_(),  # y' = -y, written in place: ended at 0.441, status ok
        lambda t, y: y.mul_(-1.0).clone(),
        lambda t, y: (y.__setitem__((..., 0), -y[..., 0]), y)[1].clone(),
    ],
)
@pytest.mark.parametrize("call", ["solve", "odeint", "step", "per_sample"])
def test_a_field_that_writes_into_y_is_refused_and_y0_is_kept(field, call):
    D = torch.float64
    y0 = torch.ones(2, 2, dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    with pytest.raises(VectorFieldError, match="modified its argument `y` in place"):
        if call == "solve":
            odenet.solve(field, y0, t)
        elif call == "odeint":
            odenet.odeint(field, y0, t, method="rk4", options=dict(step_size=0.1))
        elif call == "step":
            odenet.step(field, t[0], y0, 0.1, method="rk4")
        else:
            odenet.solve(field, y0, t.expand(2, 2).contiguous())
    assert bool((y0 == 1).all())  # the caller's initial state is untouched


def test_a_field_that_writes_into_its_own_copy_runs_to_the_exact_solution():
    def field(t, y):
        z = y.clone()
        z.mul_(-1.0)
        return z

    y1 = odenet.solve(field, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0])).ys[-1]
    assert float((y1 - math.exp(-1.0)).abs().max()) < 1e-5


# --- a vector field that changes its output after the first call ----------------------

_LATER = {
    # the number of elements changes at t = 0.5: it went on to a torch error in the stepper
    "shape": (lambda t, y: -y if t < 0.5 else -y[:1], r"returned shape \(1,\) at t = 0\.5"),
    # same number of elements, another shape: reshaped silently before
    "layout": (lambda t, y: -y if t < 0.5 else (-y)[:, None], r"returned shape \(2, 1\) at t = 1"),
    # float32 in a float64 solve: a torch error in rk4/radau, silently promoted in dopri5
    "dtype": (lambda t, y: -y if t < 0.5 else (-y).float(), r"returned dtype torch.float32 at t"),
    # another device (meta stands in for a GPU here): a torch error where stages combine
    "device": (lambda t, y: -y if t < 0.5 else (-y).to("meta"), r"returned device meta at t = "),
}


@pytest.mark.parametrize("change", sorted(_LATER))
@pytest.mark.parametrize("how", ["dopri5", "rk4", "radau_iia5", "odeint"])
def test_a_field_that_changes_its_output_later_is_a_vector_field_error_naming_t(change, how):
    f, match = _LATER[change]
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    with pytest.raises(VectorFieldError, match=match) as info:
        if how == "odeint":
            odenet.odeint(f, y0, t)
        else:
            odenet.solve(f, y0, t, method=how, **({"step_size": 0.1} if how == "rk4" else {}))
    msg = str(info.value)
    assert "the state's" in msg and "on every call" in msg
    assert "(2,)" in msg  # the expected shape beside the one it got


def test_a_per_sample_batch_that_loses_a_row_later_names_both_shapes():
    y0 = torch.ones(3, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)[None].expand(3, -1)  # per-sample grids
    match = r"returned shape \(2, 2\) at t = .*shape \(3, 2\)"
    for method in ("dopri5", "radau_iia5"):
        with pytest.raises(VectorFieldError, match=match):
            odenet.solve(lambda t, y: -y if t[0] < 0.5 else -y[:2], y0, t, method=method)
