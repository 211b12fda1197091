"""Every way to call the core wrongly, and every way it can fail, says so clearly."""

import math
import re
import warnings

import pytest
import torch

import odenet
from odenet import (
    InputError,
    MaxStepsError,
    NewtonConvergenceError,
    NonFiniteError,
    OdenetError,
    StepSizeUnderflowError,
    UnknownMethodError,
    VectorFieldError,
)

D = torch.float64
Y0 = torch.ones(2, dtype=D)
T = torch.linspace(0, 1, 3, dtype=D)


def decay(t, y):
    return -y


@pytest.mark.parametrize(
    "t, match",
    [
        (
            torch.tensor([0.0, 1.0, 0.5], dtype=D),
            r"strictly increasing or strictly decreasing.*index 2",
        ),
        (torch.tensor([0.0, 0.0, 1.0], dtype=D), r"strictly increasing"),
        (torch.tensor([0.0, math.nan], dtype=D), r"`t` contains NaN"),
        (torch.zeros(2, 2, 2, dtype=D), r"`t` must be 1-D"),
        (torch.zeros(0, dtype=D), r"`t` is empty"),
    ],
)
def test_bad_time_grids_are_named_with_the_fix(t, match):
    with pytest.raises(InputError, match=match):
        odenet.solve(decay, Y0, t)


def test_per_sample_times_need_one_row_per_sample():
    with pytest.raises(InputError, match=r"need `y0` of shape \[3, \.\.\.\]"):
        odenet.solve(decay, torch.ones(2, 2, dtype=D), torch.rand(3, 4).cumsum(1))


def test_a_non_monotone_row_of_per_sample_times_is_named():
    t = torch.tensor([[0.0, 1.0, 2.0], [0.0, 2.0, 1.0]], dtype=D)
    with pytest.raises(InputError, match=r"row 1 of `t`"):
        odenet.solve(decay, torch.ones(2, 1, dtype=D), t)


@pytest.mark.parametrize(
    "y0, match",
    [
        (torch.tensor([1.0, math.inf], dtype=D), r"`y0` contains NaN or inf"),
        (torch.tensor([1, 2]), r"`y0` must have a floating dtype.*double"),
        (torch.tensor([1j, 2.0]), r"`y0` is complex.*view_as_real"),
        (torch.zeros(0, dtype=D), r"`y0` is empty"),
    ],
)
def test_bad_initial_states(y0, match):
    with pytest.raises(InputError, match=match):
        odenet.solve(decay, y0, T)


def test_vector_field_with_wrong_shape_dtype_or_nan():
    with pytest.raises(
        VectorFieldError, match=r"returned shape \(3,\) for a state of shape \(2,\)"
    ):
        odenet.solve(lambda t, y: torch.zeros(3, dtype=D), Y0, T)
    with pytest.raises(VectorFieldError, match=r"returned dtype torch.float32"):
        odenet.solve(lambda t, y: torch.zeros(2), Y0, T)
    with pytest.raises(VectorFieldError, match=r"NaN or inf at the initial time"):
        odenet.solve(lambda t, y: y / 0, Y0, T)
    with pytest.raises(VectorFieldError, match=r"must return a torch.Tensor"):
        odenet.solve(lambda t, y: 1.0, Y0, T)
    with pytest.raises(InputError, match=r"`f` must be callable"):
        odenet.solve(3, Y0, T)


def test_unknown_method_lists_valid_names():
    with pytest.raises(UnknownMethodError, match=r"unknown method 'rk99'.*dopri5.*rk4"):
        odenet.solve(decay, Y0, T, method="rk99")
    # still a KeyError and a ValueError for code that catches builtins
    with pytest.raises(KeyError):
        odenet.tableau("nope")


def test_fixed_step_method_without_or_with_bad_step_size():
    with pytest.raises(InputError, match=r"'rk4' has no embedded error estimate.*`step_size=h`"):
        odenet.solve(decay, Y0, T, method="rk4")
    for bad in (0.0, -0.1, math.inf):
        with pytest.raises(InputError, match=r"`step_size` must be a positive finite number"):
            odenet.solve(decay, Y0, T, method="rk4", step_size=bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rtol": -1.0}, r"`rtol` must be a finite non-negative number"),
        ({"rtol": 0.0, "atol": 0.0}, r"both 0"),
        ({"max_steps": 0}, r"`max_steps` must be a positive integer"),
        ({"max_steps": 2.5}, r"`max_steps` must be a positive integer"),
        ({"sensitivity": "magic"}, r"`sensitivity` must be one of"),
        ({"controller": "P"}, r"`controller` must be 'I', 'PI', 'PID'"),
        ({"bogus_option": 1}, r"unknown option\(s\) 'bogus_option'"),
        ({"min_step": -1.0}, r"`min_step` must be a non-negative number"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        odenet.solve(decay, Y0, T, **kwargs)


def test_max_steps_exceeded_reports_how_far_it_got():
    with pytest.raises(
        MaxStepsError, match=r"increase `max_steps`.*reached t = 0\.\d+ of t_end = 10"
    ) as e:
        odenet.solve(
            lambda t, y: torch.cos(10 * t) * y,
            Y0,
            torch.tensor([0.0, 10.0], dtype=D),
            max_steps=5,
            rtol=1e-10,
            atol=1e-12,
        )
    assert 0 < e.value.t < 10
    assert torch.isnan(e.value.solution.ys[-1]).all()


def test_an_rtol_below_the_dtypes_round_off_is_named_when_the_steps_run_out():
    # float32 Robertson at rtol 1e-8: the error estimates are round-off (eps 1.2e-7), so
    # the steps shrink until max_steps; the message must say the cause is the dtype
    rob = odenet.problems.robertson_long()
    t = torch.tensor([0.0, 40.0])
    with pytest.raises(MaxStepsError, match=r"round-off of torch\.float32.*or use float64") as e:
        odenet.solve(
            rob.f, rob.y0_tensor().float(), t, method="bdf", rtol=1e-8, atol=1e-14, max_steps=300
        )
    assert e.value.t < 1.0
    # the same solve in float64 gets there, so the note named the real cause
    sol = odenet.solve(rob.f, rob.y0_tensor(), t.double(), method="bdf", rtol=1e-8, atol=1e-14)
    assert sol.success
    # an rtol float32 can honour: no note, whatever ended the solve
    with pytest.raises(MaxStepsError) as e:
        odenet.solve(rob.f, rob.y0_tensor().float(), t, method="bdf", rtol=1e-4, max_steps=5)
    assert "round-off" not in str(e.value)


@pytest.mark.parametrize(
    "method", ["kvaerno5", "kvaerno3", "sdirk4", "trbdf2", "radau_iia3", "bdf", "ndf"]
)
def test_an_rtol_the_dtype_leaves_no_room_for_is_warned_with_the_floor(method):
    # in float32 at rtol 1e-5 (84·eps) the dtype's cap on the error safety κ (DIRK pairs,
    # radau_iia3) or the round-off carried over a multistep method's steps (bdf, ndf) let
    # kvaerno5, sdirk4, trbdf2 and bdf end at 180–280·rtol with status ok on random
    # linear systems (test_honesty_property.py; the measurements: odenet/_newton.py
    # UNRESOLVED_GROWTH, odenet/_bdf.py ROUNDOFF_FLOOR)
    t = torch.tensor([0.0, 1.0])
    y0 = torch.ones(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", odenet.ToleranceWarning)
        sol = odenet.solve(lambda s, y: -y, y0, t, method=method, rtol=1e-5)
    assert sol.success  # a warning, not a failure: the solve still runs
    # two warnings: rtol is below 100·eps (every adaptive method), and below this one's floor
    general, (w,) = (
        [w for w in caught if "below 100·eps" in str(w.message)],
        [w for w in caught if "radau_iia5 (its" in str(w.message)],
    )
    assert len(general) == 1 and issubclass(w.category, odenet.OdenetWarning)
    message = str(w.message)
    assert method in message and "float32" in message and "radau_iia5" in message
    floor = float(re.search(r"Use rtol ≥ (\S+) or float64", message).group(1))
    # trbdf2's κ constant (500) needs the widest margin: 3.4e-3; bdf/ndf's floor is
    # 5000·eps (6e-4; odenet/_bdf.py ROUNDOFF_FLOOR)
    assert 1e-5 < floor <= {"trbdf2": 4e-3, "bdf": 7e-4, "ndf": 7e-4}.get(method, 4e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", odenet.ToleranceWarning)
        # at the floor it names, and in float64 at everyday tolerances: no warning
        odenet.solve(lambda s, y: -y, y0, t, method=method, rtol=floor * 1.01)
        odenet.solve(lambda s, y: -y, y0.double(), t.double(), method=method, rtol=1e-8)


@pytest.mark.parametrize("method", ["kvaerno5", "kvaerno3", "sdirk4"])
def test_a_float32_dirk_solve_honours_rtol_or_warns_that_it_does_not(method):
    """Prothero–Robinson (λ = −1e4, exact y = cos t) in float32 at rtol 3e-5, above
    100·eps: the dtype's cap on κ held the error per step at 1.2e-5 for every rtol, and
    kvaerno5, kvaerno3, sdirk4 ended at 69, 36 and 11·rtol with status ok and no
    warning.  Status ok now means within 5·rtol of the closed form, or a warning."""
    t = torch.linspace(0, 2, 5)
    rtol = 3e-5

    def f(s, y):
        return -1e4 * (y - torch.cos(s)) - torch.sin(s)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", odenet.ToleranceWarning)
        sol = odenet.solve(f, torch.ones(1), t, method=method, rtol=rtol, atol=rtol * 1e-3)
    assert sol.success
    err = float((sol.ys[:, 0].double() - torch.cos(t.double())).abs().max())
    warned = [str(w.message) for w in caught if "radau_iia5 (its" in str(w.message)]
    named = len(warned) == 1 and "float64" in warned[0] and method in warned[0]
    assert err <= 5 * rtol or named, f"{method}: {err / rtol:.3g}·rtol, status ok, no warning"


def test_an_rtol_below_100_eps_is_warned_for_every_adaptive_method():
    # float32 at rtol = eps on random linear systems: dop853 117·rtol, radau_iia9 177·rtol,
    # radau_iia5 222·rtol with status ok (at 100·eps at most 23·rtol): scipy's floor
    t, y0 = torch.tensor([0.0, 1.0]), torch.ones(3)
    for method in ("dopri5", "dop853", "radau_iia5", "adams"):
        with pytest.warns(
            odenet.ToleranceWarning, match=r"below 100·eps.*rtol ≥ 1.2e-05 or use float64"
        ) as record:
            odenet.solve(lambda s, y: -y, y0, t, method=method, rtol=1e-7)
        # attributed to the caller's line, not to odenet's internals
        assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", odenet.ToleranceWarning)
        # pure absolute control, a fixed grid, float64 at rtol 1e-12: nothing to warn about
        odenet.solve(lambda s, y: -y, y0, t, rtol=0.0, atol=1e-6)
        odenet.solve(lambda s, y: -y, y0, t, method="rk4", step_size=0.1, rtol=1e-9)
        odenet.solve(lambda s, y: -y, y0.double(), t.double(), method="dop853", rtol=1e-12)


def test_methods_whose_error_control_needs_no_margin_do_not_warn_near_round_off():
    # radau_iia5 (κ = 1) and the explicit pairs ended within 25·rtol at 100·eps in float32
    with warnings.catch_warnings():
        warnings.simplefilter("error", odenet.ToleranceWarning)
        for method in ("radau_iia5", "dopri5", "tsit5"):
            odenet.solve(
                lambda s, y: -y, torch.ones(3), torch.tensor([0.0, 1.0]), method=method, rtol=1.2e-5
            )


@pytest.mark.parametrize("method", ["dopri5", "radau_iia5"])
def test_an_underflow_hint_fits_the_method(method):
    """y' = y² blows up at t = 1.  An explicit method is pointed to the implicit ones;
    an implicit one (radau_iia5 was told to "try an implicit method") to the field:
    a blow-up, a state leaving its domain (`isoutofdomain`), a jump (`jump_t`).  The
    span starts at 0, so shifting the times is not advised."""
    with pytest.raises(StepSizeUnderflowError) as e:
        odenet.solve(lambda t, y: y**2, torch.ones(1, dtype=D), torch.tensor([0.0, 2.0], dtype=D),
                     method=method)  # fmt: skip
    msg = str(e.value)
    assert "shift the times" not in msg
    if method == "dopri5":
        assert "an implicit method takes steps" in msg and "isoutofdomain" not in msg
    else:
        assert "radau_iia5 is implicit" in msg and "try an implicit" not in msg
        assert "`isoutofdomain`" in msg and "`jump_t`" in msg


def test_step_size_underflow_at_a_finite_time_blow_up():
    # y' = y², y(0) = 1 has y = 1/(1 - t): no solution past t = 1
    with pytest.raises(
        StepSizeUnderflowError, match=r"step size underflow.*reached t = (0\.99|1 of)"
    ) as e:
        odenet.solve(lambda t, y: y**2, torch.ones(1, dtype=D), torch.tensor([0.0, 2.0], dtype=D))
    assert 0.99 < e.value.t < 1.001


def test_explicit_fixed_step_outside_the_stability_region_reports_non_finite():
    with pytest.raises(NonFiniteError, match=r"NaN/inf.*reduce `step_size`"):
        odenet.solve(
            lambda t, y: -1e4 * y,
            Y0,
            torch.tensor([0.0, 50.0], dtype=D),
            method="euler",
            step_size=0.01,
        )


def test_implicit_method_whose_stage_equations_have_no_solution():
    # backward Euler on y' = -1 (y > 0), +1 (y <= 0): Z = y + h f(Z) has no root once
    # y <= h, so halving the step chases y -> 0 until round-off: a Newton failure
    with pytest.raises(NewtonConvergenceError, match=r"Newton's method.*reached t = (0\.99|1 of)"):
        odenet.solve(
            lambda t, y: torch.where(y > 0, -1.0, 1.0).to(D),
            torch.ones(1, dtype=D),
            torch.tensor([0.0, 2.0], dtype=D),
            method="backward_euler",
            step_size=0.3,
        )


def test_throw_false_reports_status_and_keeps_what_was_reached():
    sol = odenet.solve(
        lambda t, y: y**2,
        torch.ones(1, dtype=D),
        torch.tensor([0.0, 0.5, 2.0], dtype=D),
        throw=False,
    )
    assert not sol.success
    assert "underflow" in sol.message
    assert math.isclose(float(sol.ys[1, 0]), 2.0, rel_tol=1e-5)
    assert math.isnan(float(sol.ys[2, 0]))


def test_per_sample_failure_names_the_sample_and_keeps_the_others():
    y0 = torch.tensor([[0.5], [1.0], [0.2]], dtype=D)  # blow-up at t = 2, 1, 5
    t = torch.tensor([0.0, 1.5], dtype=D).expand(3, 2)
    sol = odenet.solve(lambda t, y: y**2, y0, t, throw=False)
    assert sol.status.tolist()[0] == 0 and sol.status.tolist()[2] == 0
    assert sol.status.tolist()[1] != 0
    assert torch.allclose(sol.ys[[0, 2], 1, 0], 1 / (1 / y0[[0, 2], 0] - 1.5), rtol=1e-5)
    with pytest.raises(StepSizeUnderflowError, match=r"sample 1 \(1 of 3 samples failed\)"):
        odenet.solve(lambda t, y: y**2, y0, t)


def test_every_error_is_an_odenet_error():
    for cls in (
        InputError,
        VectorFieldError,
        MaxStepsError,
        StepSizeUnderflowError,
        NonFiniteError,
        NewtonConvergenceError,
        UnknownMethodError,
    ):
        assert issubclass(cls, OdenetError)
    assert issubclass(InputError, ValueError)
    assert issubclass(MaxStepsError, RuntimeError)


def test_every_warning_odenet_issues_is_an_odenet_warning():
    from odenet._compiled import CompileFallbackWarning

    for w in (odenet.ToleranceWarning, CompileFallbackWarning):
        assert issubclass(w, odenet.OdenetWarning) and issubclass(w, UserWarning)
    assert issubclass(CompileFallbackWarning, RuntimeWarning)  # what it was before


def test_zero_tolerances_and_zero_rtol_say_what_is_wrong():
    """rtol = 0 with radau_iia5 raised a bare OverflowError (the Newton threshold
    divided by max(rtol, 1e-300)); all-zero tensor tolerances passed validation; and
    atol = 0 with a component at 0 blamed f, the norm or the dtype."""
    D64 = torch.float64

    def f(t, y):
        return torch.stack([-y[0], -1000 * y[1]])

    sol = odenet.solve(
        f,
        torch.ones(2, dtype=D64),
        torch.tensor([0.0, 1.0], dtype=D64),
        method="radau_iia5",
        rtol=0.0,
        atol=1e-10,
    )
    assert sol.success and abs(float(sol.ys[-1, 0]) - math.exp(-1)) < 1e-8
    with pytest.raises(odenet.InputError, match="both 0 for some component"):
        odenet.solve(
            f,
            torch.ones(2, dtype=D64),
            torch.tensor([0.0, 1.0], dtype=D64),
            rtol=torch.zeros(2, dtype=D64),
            atol=torch.tensor([1e-6, 0.0], dtype=D64),
        )

    def still(t, y):
        return torch.stack([0 * y[0], -y[1]])

    with pytest.raises(odenet.OdenetError, match="error scale atol"):
        odenet.solve(
            still,
            torch.tensor([0.0, 1.0], dtype=D64),
            torch.tensor([0.0, 1.0], dtype=D64),
            rtol=1e-6,
            atol=0.0,
        )


def test_running_out_of_steps_with_a_low_order_method_at_a_tight_rtol_names_better_ones():
    A = torch.tensor([[-20.0, 1.0, 0.0], [0.5, -1.0, 2.0], [0.0, -2.0, -0.5]], dtype=torch.float64)

    def f(t, y):
        return A @ y + torch.sin(y) * torch.cos(t)

    y0, t = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64), torch.tensor([0.0, 2.0])
    with pytest.raises(odenet.MaxStepsError, match=r"trapezoid is of order 2.*radau_iia5"):
        odenet.solve(f, y0, t, method="trapezoid", rtol=1e-7, atol=1e-9, max_steps=2000)
    with pytest.raises(odenet.MaxStepsError, match=r"heun is of order 2.*dopri5"):
        odenet.solve(f, y0, t, method="heun", rtol=1e-7, atol=1e-9, max_steps=2000)
    # the higher-order pairs it names finish well within that budget
    assert odenet.solve(f, y0, t, method="kvaerno5", rtol=1e-7, atol=1e-9).stats["steps"] < 2000
    # an order-8 method that runs out of steps gets no such note
    with pytest.raises(odenet.MaxStepsError) as info:
        odenet.solve(f, y0, t, method="dop853", rtol=1e-7, atol=1e-9, max_steps=3)
    assert "is of order" not in str(info.value)


def test_a_fixed_step_split_after_a_newton_failure_says_so():
    """Backward Euler on y' = t·y, one step of 0.55 from t = 0.35: the stage equation
    is linear, Y = 0.4 / (1 − 0.55·0.9).  Newton on the Jacobian at the step's start
    (0.35, not 0.9) fails, the loop splits the step, and the result is two half
    steps' (0.4 / ((1 − 0.275·0.625)(1 − 0.275·0.9))): said with a StepSplitWarning.
    With the stage time's Jacobian Newton converges and the step is the one asked for."""
    t = torch.tensor([0.35, 0.9], dtype=D)
    y0 = torch.tensor([0.4], dtype=D)
    with pytest.warns(odenet.StepSplitWarning, match=r"1 fixed step\(s\) of h = 0.55"):
        sol = odenet.solve(lambda t, y: t * y, y0, t, method="backward_euler", step_size=0.55)
    halves = 0.4 / ((1 - 0.275 * 0.625) * (1 - 0.275 * 0.9))
    assert float(sol.ys[-1, 0]) == pytest.approx(halves, rel=1e-12)
    assert sol.stats["rejected"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", odenet.StepSplitWarning)
        sol = odenet.solve(lambda t, y: t * y, y0, t, method="backward_euler", step_size=0.55,
                           jac=lambda t, y: torch.full((1, 1), 0.9, dtype=D))  # fmt: skip
    assert float(sol.ys[-1, 0]) == pytest.approx(0.4 / (1 - 0.55 * 0.9), rel=1e-12)
