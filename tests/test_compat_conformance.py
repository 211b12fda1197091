"""odenet.odeint / odeint_adjoint against torchdiffeq itself, on the same inputs.

One test per behaviour of torchdiffeq that odenet's interface reproduces (issue 13):
the dtype ``f`` receives for ``t``, tuple states (0-dim parts, the norm), closures
as fields of the adjoint, ``scipy_solver``, ``max_step=inf``, fixed grids
(``step_size``, ``grid_constructor``, ``interp``), and the arguments odenet cannot
honour yet, which must raise instead of being ignored.
"""

import math

import numpy as np
import pytest
import torch
import torchdiffeq
from torchdiffeq._impl.misc import _mixed_norm

import odenet
from odenet import InputError

D = torch.float64


def spring(t, y):
    return torch.stack([y[1], -y[0] + 0.1 * torch.sin(t) * y[1]])


Y0 = torch.tensor([1.0, 0.5], dtype=D)
T = torch.linspace(0, 3, 7, dtype=D)


def both(call):
    """``call(odeint_like)`` with odenet's and torchdiffeq's odeint."""
    return call(odenet.odeint), call(torchdiffeq.odeint)


# --- the dtype of time -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dopri5", "rk4", "euler"])
def test_float64_times_with_a_float32_state_call_f_with_float32_t_as_torchdiffeq(method):
    t64 = torch.from_numpy(np.linspace(0.0, 2.0, 5))
    y32 = torch.tensor([1.0, -0.5])
    seen = {odenet.odeint: set(), torchdiffeq.odeint: set()}

    def run(odeint):
        def f(t, y):
            seen[odeint].add(t.dtype)
            return -y * (1 + t)

        return odeint(f, y32, t64, method=method)

    ours, theirs = both(run)
    assert seen[odenet.odeint] == seen[torchdiffeq.odeint] == {torch.float32}
    assert ours.dtype == theirs.dtype == torch.float32
    assert ours.shape == theirs.shape == (5, 2)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_float32_times_and_state_keep_float64_internal_time_for_adaptive_methods():
    # torchdiffeq steps in float64 time (options dtype) even for float32 inputs: a
    # long span in float32 time would lose the step to round-off
    t = torch.tensor([1e4, 1e4 + 1.0])
    y0 = torch.tensor([1.0])
    ours = odenet.odeint(lambda t, y: -y, y0, t, rtol=1e-6, atol=1e-8)
    assert ours.dtype == torch.float32
    assert abs(float(ours[-1, 0]) - math.exp(-1.0)) < 1e-5


# --- tuple states -------------------------------------------------------------------------


def test_tuple_state_with_a_0_dim_part_matches_torchdiffeq():
    x0 = (torch.tensor(1.0, dtype=D), torch.tensor([[0.5, 0.5], [0.1, 0.1]], dtype=D))

    def f(t, s):
        a, b = s
        return -a * b.mean(), b * torch.cos(t)

    ours, theirs = both(lambda odeint: odeint(f, x0, T, rtol=1e-10, atol=1e-12))
    assert [o.shape for o in ours] == [th.shape for th in theirs] == [(7,), (7, 2, 2)]
    for o, th in zip(ours, theirs):
        assert torch.allclose(o, th, rtol=1e-8, atol=1e-10)


def test_a_user_norm_receives_the_tuple_as_in_torchdiffeq():
    x0 = (torch.tensor(1.0), torch.tensor([[0.5, 0.5], [0.1, 0.1]]))
    seen = {}

    def run(odeint):
        calls = seen[odeint] = []

        def norm(state):
            calls.append(tuple(tuple(s.shape) for s in state) if isinstance(state, tuple) else 0)
            return state[0].abs()

        return odeint(lambda t, x: x, x0, torch.tensor([0.0, 1.0]), options=dict(norm=norm))

    both(run)
    assert seen[odenet.odeint] and seen[torchdiffeq.odeint]
    assert set(seen[odenet.odeint]) == set(seen[torchdiffeq.odeint]) == {((), (2, 2))}


def test_the_default_norm_of_a_tuple_is_torchdiffeqs_mixed_norm():
    x0 = (torch.tensor([1.0, 1e-3], dtype=D), torch.tensor([30.0], dtype=D))

    def f(t, s):
        return -s[0] * torch.tensor([1.0, 50.0], dtype=D), -0.1 * s[1]

    default = odenet.odeint(f, x0, T, rtol=1e-5, atol=1e-8)
    explicit = odenet.odeint(f, x0, T, rtol=1e-5, atol=1e-8, options=dict(norm=_mixed_norm))
    for a, b in zip(default, explicit):
        assert torch.equal(a, b)


def test_per_tensor_tolerances_of_a_tuple_state():
    x0 = (torch.tensor([1.0], dtype=D), torch.tensor([2.0, 3.0], dtype=D))
    f = lambda t, s: (-s[0], -2 * s[1])  # noqa: E731
    kw = dict(rtol=(1e-9, 1e-6), atol=(1e-11, 1e-8))
    ours, theirs = both(lambda odeint: odeint(f, x0, T, **kw))
    for o, th in zip(ours, theirs):
        assert torch.allclose(o, th, rtol=1e-5)
    with pytest.raises(InputError, match=r"`rtol` is a tuple of 3 tolerances for a state of 2"):
        odenet.odeint(f, x0, T, rtol=(1e-9, 1e-6, 1.0))


# --- closures as fields of the adjoint -----------------------------------------------------


def _net():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(D)


@pytest.mark.parametrize("kind", ["adjoint", "checkpoint"])
def test_solve_with_a_closure_differentiates_the_captured_module(kind):
    net = _net()
    y0 = Y0.clone().requires_grad_(True)
    f = lambda t, y: net(y)  # noqa: E731  (the commonest way to write a field)
    kw = dict(rtol=1e-10, atol=1e-12)
    sol = odenet.solve(f, y0, T, sensitivity=kind, **kw)
    ours = torch.autograd.grad(sol.ys.pow(2).sum(), [y0, *net.parameters()])
    # truth: torchdiffeq's adjoint with the parameters given explicitly
    ys = torchdiffeq.odeint_adjoint(f, y0, T, adjoint_params=tuple(net.parameters()), **kw)
    theirs = torch.autograd.grad(ys.pow(2).sum(), [y0, *net.parameters()])
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)


def test_odeint_adjoint_with_a_closure_where_torchdiffeq_needs_adjoint_params():
    net = _net()
    f = lambda t, y: net(y)  # noqa: E731
    with pytest.raises(ValueError, match="adjoint_params"):
        torchdiffeq.odeint_adjoint(f, Y0, T)
    ours = torch.autograd.grad(odenet.odeint_adjoint(f, Y0, T).sum(), list(net.parameters()))
    ys = torchdiffeq.odeint_adjoint(f, Y0, T, adjoint_params=tuple(net.parameters()))
    theirs = torch.autograd.grad(ys.sum(), list(net.parameters()))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)


def test_explicit_adjoint_params_override_and_a_missed_tensor_raises():
    net = _net()
    a = torch.tensor(0.3, dtype=D, requires_grad=True)
    f = lambda t, y: a * net(y)  # noqa: E731
    with pytest.raises(InputError, match=r"uses 4 tensor\(s\) that require grad but are not"):
        odenet.solve(f, Y0, T, sensitivity="adjoint", adjoint_params=[a])
    # all of them given: the same gradient as found automatically
    found = odenet.solve(f, Y0, T, sensitivity="adjoint")
    (g_auto,) = torch.autograd.grad(found.ys.sum(), [a])
    given = odenet.solve(f, Y0, T, sensitivity="adjoint", adjoint_params=[a, *net.parameters()])
    (g_given,) = torch.autograd.grad(given.ys.sum(), [a])
    assert torch.allclose(g_auto, g_given, rtol=1e-12)


# --- scipy_solver ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["RK45", "LSODA", "Radau"])
@pytest.mark.filterwarnings("ignore:The following arguments have no effect")
def test_scipy_solver_matches_torchdiffeqs_wrapper(solver):
    f = lambda t, y: -0.5 * y  # noqa: E731
    y0 = torch.tensor([1.0, 2.0], dtype=D)
    kw = dict(method="scipy_solver", options=dict(solver=solver), rtol=1e-8, atol=1e-10)
    ours, theirs = both(lambda odeint: odeint(f, y0, T, **kw))
    assert ours.shape == theirs.shape == (7, 2) and ours.dtype == theirs.dtype
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    # backward in time too (against the closed form: torchdiffeq's wrapper starts
    # decreasing grids at min(t))
    back = odenet.odeint(f, y0, T.flip(0), **kw)
    exact = y0 * torch.exp(-0.5 * (T.flip(0) - T[-1]))[:, None]
    assert torch.allclose(back, exact, rtol=1e-6)


def test_scipy_solver_has_no_gradients_and_says_so():
    y0 = torch.tensor([1.0], dtype=D, requires_grad=True)
    out = odenet.odeint(lambda t, y: -y, y0, T, method="scipy_solver")
    with pytest.raises(InputError, match="scipy_solver' has no gradients"):
        out.sum().backward()
    a = torch.tensor(1.0, dtype=D, requires_grad=True)  # a captured parameter, too
    out = odenet.odeint(lambda t, y: -a * y, y0.detach(), T, method="scipy_solver")
    with pytest.raises(InputError, match="scipy_solver' has no gradients"):
        out.sum().backward()
    with pytest.raises(InputError, match="odeint_adjoint cannot use it"):
        odenet.odeint_adjoint(lambda t, y: -y, y0, T, method="scipy_solver", adjoint_params=())
    with pytest.raises(InputError, match=r"`options\['solver'\]` must be one of"):
        odenet.odeint(lambda t, y: -y, y0, T, method="scipy_solver", options=dict(solver="X"))


# --- options ------------------------------------------------------------------------------


def test_max_step_inf_is_no_limit_and_a_finite_max_step_is_honoured():
    plain = odenet.odeint(spring, Y0, T)
    inf = odenet.odeint(spring, Y0, T, options=dict(max_step=float("inf")))
    assert torch.equal(plain, inf)
    steps = []
    odenet.odeint(lambda t, y: steps.append(float(t)) or spring(t, y), Y0, T,
                  options=dict(max_step=0.01))  # fmt: skip
    assert len(steps) > 300  # ≥ 300 steps of ≤ 0.01 over a span of 3


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("dopri5", {"bogus": 1}, r"unknown `options` key\(s\) \['bogus'\]"),
        ("dopri5", {"step_size": 0.1}, r"\['step_size'\] belong to fixed-step methods"),
        ("rk4", {"first_step": 0.1}, r"\['first_step'\] belong to adaptive methods"),
        ("rk4", {"norm": lambda x: x.abs().max()}, r"\['norm'\] belong to adaptive"),
        ("dopri5", {"grid_points": torch.tensor([0.5])}, r"renamed `step_t`/`jump_t`"),
        ("rk4", {"interp": "quadratic"}, r"must be 'linear' or 'cubic'"),
        ("rk4", {"step_size": 0.1, "grid_constructor": lambda f, y, t: t}, "mutually exclusive"),
        ("dopri5", {"max_step": -1.0}, r"positive number or inf"),
        ("dopri5", {"dtype": torch.int32}, r"floating torch.dtype"),
    ],
)
def test_bad_or_misplaced_options_raise_naming_the_key(method, options, match):
    with pytest.raises(InputError, match=match):
        odenet.odeint(spring, Y0, T, method=method, options=options)


class _LinearField(torch.nn.Module):
    """``dy/dt = a·y`` (a = −0.5, a parameter) with a ``log`` for its callbacks."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(-0.5, dtype=D))
        self.log = []

    def forward(self, t, y):
        return self.a * y


class _StepLog(_LinearField):
    """Logs (pass, t, dt) of its forward and backward step callbacks."""

    def callback_step(self, t, y, dt):
        self.log.append(("forward", round(float(t), 12), round(float(dt), 12)))

    def callback_step_adjoint(self, t, y, dt):
        self.log.append(("backward", round(float(t), 12), round(float(dt), 12)))


@pytest.mark.parametrize("reverse", [False, True])
def test_step_callbacks_see_torchdiffeqs_positive_step_in_both_directions(reverse):
    t = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=D)
    logs = []
    for lib in (odenet, torchdiffeq):
        f = _StepLog()
        ys = lib.odeint_adjoint(f, Y0, t, method="rk4", options=dict(step_size=0.25))
        ys[-1].sum().backward()
        logs.append(f.log)
    ours, theirs = logs
    assert [e for e in ours if e[0] == "forward"] == [e for e in theirs if e[0] == "forward"]
    # the backward steps: torchdiffeq's step lengths (its times are negated when the
    # forward ran backward in time, odenet's are the true times)
    assert [e[2] for e in ours if e[0] == "backward"] == [
        e[2] for e in theirs if e[0] == "backward"
    ]
    assert all(e[2] > 0 for e in ours)


def test_what_the_step_loop_cannot_do_yet_raises_instead_of_being_ignored():
    with pytest.raises(InputError, match=r"`options\['perturb'\]` must be True or False"):
        odenet.odeint(spring, Y0, T, method="rk4", options=dict(step_size=0.5, perturb="yes"))
    # their neutral values are accepted
    odenet.odeint(spring, Y0, T, method="rk4", options=dict(step_size=0.5, perturb=False))
    odenet.odeint(spring, Y0, T, options=dict(min_step=0.0, jump_t=torch.tensor([], dtype=D)))


class _Logged(_LinearField):
    """Its adjoint callbacks log (kind, t, dt, a)."""

    def callback_step_adjoint(self, t, y, dt):
        self.log.append(("step", float(t), float(dt), y.clone()))

    def callback_accept_step_adjoint(self, t, y, dt):
        self.log.append(("accept", float(t), float(dt), y.clone()))

    def callback_reject_step_adjoint(self, t, y, dt):
        self.log.append(("reject", float(t), float(dt), y.clone()))


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_adjoint_callbacks_are_called_by_the_backward_pass_only(method):
    f = _Logged()
    if method == "rk4":  # torchdiffeq warns the same way: fixed grids have no verdicts
        with pytest.warns(UserWarning, match="call only `callback_step_adjoint`"):
            ys = odenet.odeint_adjoint(f, Y0, T, method=method)
    else:
        ys = odenet.odeint_adjoint(f, Y0, T, method=method)
    assert f.log == []  # the forward does not call them
    ys[-1].sum().backward()
    kinds = [e[0] for e in f.log]
    steps = [e for e in f.log if e[0] == "step"]
    # backward in time, with a positive step length as torchdiffeq passes it
    assert steps and all(e[2] > 0 for e in steps)
    times = [e[1] for e in steps]
    assert times[0] == pytest.approx(3.0) and times == sorted(times, reverse=True)
    if method == "rk4":  # a fixed grid calls callback_step alone, as torchdiffeq's
        assert set(kinds) == {"step"}
    else:
        assert kinds.count("accept") + kinds.count("reject") == len(steps)
    # the adjoint at the last time is ∂L/∂y(3) = 1 (L = sum of y(3))
    torch.testing.assert_close(steps[0][3], torch.ones(2, dtype=D))


class _JumpF:
    """torchdiffeq's discontinuous field of its jump_t test, counting evaluations."""

    def __init__(self):
        self.nfe = 0

    def __call__(self, t, x):
        self.nfe += 1
        return -0.5 * x if t < 0.5 else x**2


class _Sided:
    """A field with jumps at 0.5 (left-valued there) and 0.75 (right-valued there),
    recording each call's time: a step from the wrong side of either shows."""

    def __init__(self):
        self.ts = []

    def __call__(self, t, x):
        self.ts.append(t.item())
        if t <= 0.5:
            return -0.5 * x
        return x**2 if t < 0.75 else -x


@pytest.mark.parametrize(
    "method", ["euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams"]
)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.filterwarnings("ignore:.*converge")  # both correctors stop unconverged alike
def test_perturb_evaluates_each_step_from_inside_as_torchdiffeq(method, reverse):
    """A field that jumps at a grid node: with ``perturb=True`` a step's start is seen
    from after it and its end from before it; the solution is torchdiffeq's."""
    x0 = torch.tensor([0.4, 0.8], dtype=D)
    t = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=D)
    opts = dict(step_size=0.125, perturb=True)
    ours, theirs, plain = _Sided(), _Sided(), _Sided()
    got = odenet.odeint(ours, x0, t, method=method, options=opts)
    ref = torchdiffeq.odeint(theirs, x0, t, method=method, options=opts)
    assert float((got - ref).abs().max()) < 1e-13
    assert sorted(set(ours.ts)) == sorted(set(theirs.ts))
    nodes = [k / 8 for k in range(9)]
    assert not set(ours.ts) & set(nodes)
    # the test can fail: stepping across the jump from the wrong side changes y(1)
    off = odenet.odeint(plain, x0, t, method=method, options=dict(step_size=0.125))
    assert set(plain.ts) & set(nodes)
    assert float((off - got).abs().max()) > 1e-3


def test_perturb_gradients_are_those_of_the_perturbed_forward():
    x0 = torch.tensor([0.4, 0.8], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=D)
    opts = dict(step_size=0.25, perturb=True)
    (got,) = torch.autograd.grad(
        odenet.odeint(_Sided(), x0, t, method="rk4", options=opts).sum(), x0
    )
    # torchdiffeq's adjoint sees each step from inside too; converged to 1e-6 here
    ref = torchdiffeq.odeint_adjoint(_Sided(), x0, t, method="rk4", options=opts, adjoint_params=())
    (ref,) = torch.autograd.grad(ref.sum(), x0)
    assert torch.allclose(got, ref, rtol=1e-5)
    # odenet's adjoint too: it linearizes at a node once for each step that meets it,
    # each evaluation from inside its step (a shared linearization was 2 % off here)
    adj = odenet.odeint_adjoint(_Sided(), x0, t, method="rk4", options=opts, adjoint_params=())
    (adj,) = torch.autograd.grad(adj.sum(), x0)
    assert torch.allclose(adj, ref, rtol=1e-5)


@pytest.mark.parametrize("odeint", [odenet.odeint, odenet.odeint_adjoint])
def test_jump_t_lands_on_the_discontinuity_with_fewer_evaluations_as_torchdiffeq(odeint):
    x0 = torch.tensor([1.0, 2.0], dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    kw = dict(rtol=1e-8, atol=1e-10) | (
        {"adjoint_params": ()} if odeint is not odenet.odeint else {}
    )
    plain, jump = _JumpF(), _JumpF()
    odeint(plain, x0, t, **kw)
    ours = odeint(jump, x0, t, options=dict(jump_t=torch.tensor([0.5], dtype=D)), **kw)
    assert jump.nfe < plain.nfe
    # exact: x(0.5) = x0 e^{-1/4}, then x' = x^2: x(1) = x(0.5) / (1 - 0.5 x(0.5))
    xh = x0 * math.exp(-0.25)
    assert torch.allclose(ours[-1], xh / (1 - 0.5 * xh), rtol=1e-6)
    theirs = torchdiffeq.odeint(_JumpF(), x0, t, options=dict(jump_t=torch.tensor([0.5])), **{
        k: v for k, v in kw.items() if k != "adjoint_params"})  # fmt: skip
    assert torch.allclose(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("entry", ["solve", "odeint", "odeint_adjoint"])
def test_jump_t_with_float32_times_lands_on_the_near_side(entry):
    """f receives t in float32 (odenet.solve with float32 times; odeint casts t to y's
    dtype, as torchdiffeq): the clock's one-ulp-before-0.5 reached f as 0.5, the far
    side, and every step landing on the jump was rejected (dopri5: 297 evaluations and
    17 rejections against 123 and 8 with float64; the adjoint's backward pass then cost
    more with `jump_t` than without, failing torchdiffeq's test_odeint_jump_t).  Now
    the float32 solve takes the float64 solve's steps, and f sees the far side only from
    the restart on."""
    import warnings

    seen = []

    class Sided(_JumpF):
        def __call__(self, t, x):
            seen.append((float(t), float(x[0])))
            return super().__call__(t, x)

    def run(dtype):
        x0 = torch.tensor([1.0, 2.0], dtype=dtype, requires_grad=entry == "odeint_adjoint")
        t, jump = torch.tensor([0.0, 1.0], dtype=dtype), torch.tensor([0.5], dtype=dtype)
        f = Sided()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", odenet.ToleranceWarning)
            if entry == "solve":
                odenet.solve(f, x0, t, method="dopri5", rtol=1e-6, atol=1e-6, jump_t=jump)
            else:
                kw = {"adjoint_params": ()} if entry == "odeint_adjoint" else {}
                getattr(odenet, entry)(f, x0, t, rtol=1e-6, atol=1e-6, method="dopri5",
                                       options=dict(jump_t=jump), **kw)  # fmt: skip
        return f.nfe

    n64 = run(D)
    seen.clear()
    n32 = run(torch.float32)
    assert n32 <= n64 + 2, (n32, n64)
    # once f has been called at t ≥ 0.5 (the restart past the jump), never again before it
    first = next(i for i, (tt, _) in enumerate(seen) if tt >= 0.5)
    assert all(tt >= 0.5 for tt, _ in seen[first:])


def test_torchdiffeq_callbacks_on_func_are_called_as_torchdiffeq_calls_them():
    counts = {}

    def run(odeint, method, **kw):
        calls = counts[(odeint, method)] = {"step": 0, "accept": 0, "reject": 0}

        class F(torch.nn.Module):
            def forward(self, t, y):
                return -y * torch.cos(3 * t)

            def callback_step(self, t0, y0, dt):
                calls["step"] += 1

            def callback_accept_step(self, t0, y0, dt):
                calls["accept"] += 1

            def callback_reject_step(self, t0, y0, dt):
                calls["reject"] += 1

        with pytest.warns(UserWarning) if method == "rk4" else _no_warning():
            odeint(F(), Y0, T, method=method, **kw)
        return calls

    for odeint in (odenet.odeint, torchdiffeq.odeint):
        run(odeint, "dopri5")
        run(odeint, "rk4", options=dict(step_size=0.1))
    for key in counts:
        c = counts[key]
        if key[1] == "dopri5":
            assert c["step"] > 0 and c["step"] == c["accept"] + c["reject"]
        else:  # fixed grids: callback_step once per step only (30 steps of 0.1 over [0, 3])
            assert c == {"step": 30, "accept": 0, "reject": 0}


class _no_warning:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def test_min_step_has_torchdiffeqs_meaning_steps_at_the_minimum_are_accepted():
    nfe = {}
    for min_step in (0.0, 2.0):
        calls = [0]

        def f(t, y, calls=calls):
            calls[0] += 1
            return spring(t, y)

        odenet.odeint(f, Y0, torch.tensor([0.0, 10.0], dtype=D), options=dict(min_step=min_step))
        nfe[min_step] = calls[0]
    assert nfe[2.0] < 50 < nfe[0.0]  # torchdiffeq's TestMinMaxStep bound


@pytest.mark.parametrize("method, options", [("dopri5", {}), ("rk4", {"step_size": 0.01})])
@pytest.mark.parametrize("reverse", [False, True])
def test_event_fn_stops_where_torchdiffeq_stops(method, options, reverse):
    # y' = -y from y0 = 1 until y = 0.5: t* = ln 2 (backward: y grows, until y = 2)
    y0 = torch.tensor([1.0], dtype=D)
    target = 2.0 if reverse else 0.5
    t = torch.tensor([0.0, -1.0 if reverse else 1.0], dtype=D)
    ev = lambda t, y: y.sum() - target  # noqa: E731
    kw = dict(method=method, options=options, event_fn=ev, rtol=1e-10, atol=1e-12)
    (t_ours, ys_ours), (t_theirs, ys_theirs) = both(
        lambda odeint: odeint(lambda t, y: -y, y0, t, **kw)
    )
    assert ys_ours.shape == ys_theirs.shape == (2, 1) and t_ours.shape == t_theirs.shape == ()
    exact = -math.log(target)
    # torchdiffeq's fixed-step events read the crossing off a linear interpolant
    tol, tol_theirs = (1e-8, 1e-6) if method == "dopri5" else (1e-7, 1e-4)
    assert abs(float(t_ours) - exact) < tol and abs(float(t_theirs) - exact) < tol_theirs
    assert abs(float(ys_ours[-1, 0]) - target) < tol


def test_a_callable_adjoint_norm_sees_torchdiffeqs_augmented_state():
    # (the adjoint's hook since 4c40d0c; this test said "raises" before it)
    y0 = Y0.clone().requires_grad_(True)
    seen = []

    def norm(parts):
        seen.append(tuple(p.shape for p in parts))
        return max(p.abs().max() for p in parts)

    ys = odenet.odeint_adjoint(
        lambda t, y: -y, y0, T, adjoint_params=(), adjoint_options=dict(norm=norm)
    )
    (grad,) = torch.autograd.grad(ys.sum(), y0)
    assert seen and all(s == ((), (2,), (2,)) for s in seen)  # (t, y, adj_y)
    assert torch.allclose(grad, torch.exp(-T).sum().expand(2), rtol=1e-6)


# --- fixed grids ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("reverse", [False, True])
def test_step_size_grids_and_their_interpolation_match_torchdiffeq(method, interp, reverse):
    t = torch.tensor([0.0, 0.25, 0.6, 1.0, 1.37], dtype=D)
    t = t.flip(0) if reverse else t
    kw = dict(method=method, options=dict(step_size=0.1, interp=interp))
    ours, theirs = both(lambda odeint: odeint(spring, Y0, t, **kw))
    assert torch.allclose(ours, theirs, rtol=1e-13, atol=1e-14)


def test_grid_constructor_is_called_as_torchdiffeq_calls_it():
    calls = {odenet.odeint: [], torchdiffeq.odeint: []}
    t = torch.tensor([1.0, 0.0], dtype=D)  # decreasing: the constructor sees the user's t

    def run(odeint):
        def grid(f, y0, tt):
            calls[odeint].append((tt.tolist(), tuple(y0.shape), f(tt[0], y0).shape))
            return torch.linspace(1.0, 0.0, 11, dtype=D) ** 2

        return odeint(spring, Y0, t, method="rk4", options=dict(grid_constructor=grid))

    ours, theirs = both(run)
    assert calls[odenet.odeint] == calls[torchdiffeq.odeint] == [([1.0, 0.0], (2,), (2,))]
    assert torch.allclose(ours, theirs, rtol=1e-13, atol=1e-14)


def test_euler_on_a_constructed_grid_has_the_closed_form_and_gradient():
    # x' = x by Euler on 10 steps of 0.1: x1 = 1.1^10 x0, d x1 / d x0 = 1.1^10
    for odeint, kw in ((odenet.odeint, {}), (odenet.odeint_adjoint, {"adjoint_params": ()})):
        x0 = torch.tensor(1.0, dtype=D, requires_grad=True)
        grid = lambda f, y, t: torch.linspace(0, 1, 11, dtype=D)  # noqa: E731
        t = torch.tensor([0.0, 1.0], dtype=D)
        xs = odeint(
            lambda t, x: x, x0, t, method="euler", options=dict(grid_constructor=grid), **kw
        )
        assert abs(float(xs[1].detach()) - 1.1**10) < 1e-12
        xs[1].backward()
        assert abs(float(x0.grad) - 1.1**10) < 1e-12


def test_a_grid_that_misses_the_ends_of_t_raises():
    with pytest.raises(InputError, match=r"must start at t\[0\] and end at t\[-1\]"):
        grid = lambda f, y, t: torch.linspace(0, 1, 5)  # noqa: E731
        odenet.odeint(spring, Y0, T, method="rk4", options=dict(grid_constructor=grid))


def test_odeint_adjoint_of_a_module_that_captures_another_tensor_differentiates_both():
    # torchdiffeq takes only the module's parameters (the captured tensor's gradient is
    # silently missing); odenet adds what the field's output depends on
    net = _net()
    scale = torch.tensor(0.7, dtype=D, requires_grad=True)

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.unused = torch.nn.Linear(2, 3).to(D)

        def forward(self, t, y):
            return scale * self.net(y)

    f = Field()
    params = [scale, *net.parameters()]
    ours = torch.autograd.grad(odenet.odeint_adjoint(f, Y0, T).sum(), params)
    direct = torch.autograd.grad(odenet.odeint(f, Y0, T).sum(), params)
    for a, b in zip(ours, direct):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    odenet.odeint_adjoint(f, Y0, T).sum().backward()
    assert torch.equal(f.unused.weight.grad, torch.zeros_like(f.unused.weight))


# --- the adjoint's norm: torchdiffeq's `adjoint_options` on the solution's grad_fn -----------


def _torchdiffeqs_adjoint_norm(y0, adjoint_options):
    """torchdiffeq's own default adjoint norm for ``y0`` (its ``_check_inputs`` and
    ``handle_adjoint_norm_``): the truth odenet's is checked against."""
    from torchdiffeq._impl.adjoint import handle_adjoint_norm_
    from torchdiffeq._impl.misc import _check_inputs
    from torchdiffeq._impl.odeint import SOLVERS

    t = torch.tensor([0.0, 1.0], dtype=D)
    shapes, *_, options, _, _ = _check_inputs(
        lambda t, y: y, y0, t, 1e-7, 1e-9, None, None, None, SOLVERS
    )
    opts = dict(adjoint_options)
    handle_adjoint_norm_(opts, shapes, options["norm"])
    return opts["norm"]


def _adjoint_node(xs):
    """The autograd node torchdiffeq's own test reads ``adjoint_options`` from: the
    solution's ``grad_fn``; for a tuple state, behind the view and the split of the
    first part."""
    if isinstance(xs, tuple):
        return xs[0].grad_fn.next_functions[0][0].next_functions[0][0]
    return xs.grad_fn


TUPLE_Y0 = (torch.tensor(1.0, dtype=D), torch.tensor([[0.5, 0.5], [0.1, 0.1]], dtype=D))
# fixed values (torch.rand at import made the backward-evaluation count below depend on
# the draw: a decay rate PARAMS[1] of about 0.35 or less gave less than the 2x it asserts)
_GEN = torch.Generator().manual_seed(1)
PARAMS = (
    torch.rand(7, dtype=D, generator=_GEN).requires_grad_(True),
    torch.rand((), dtype=D, generator=_GEN).requires_grad_(True),
)


def _field(t, x):
    # the parameters enter the field, so their adjoint channels are not zero
    if isinstance(x, tuple):
        return -x[0] * PARAMS[1], -x[1] * PARAMS[0][:4].reshape(2, 2)
    return -x * PARAMS[1] + PARAMS[0][:2].sum() * 0.1


@pytest.mark.parametrize("state", ["tensor", "tuple"])
@pytest.mark.parametrize("given", [None, {}, {"norm": "seminorm"}])
def test_the_solutions_grad_fn_carries_adjoint_options_with_torchdiffeqs_default_norm(state, given):
    y0 = TUPLE_Y0 if state == "tuple" else Y0
    kw = {} if given is None else {"adjoint_options": given}
    xs = odenet.odeint_adjoint(_field, y0, T[:3], adjoint_params=PARAMS, **kw)
    options = _adjoint_node(xs).adjoint_options
    assert isinstance(options, dict) and callable(options["norm"])
    assert given in (None, {}, {"norm": "seminorm"})  # the user's dict is not modified
    theirs = _torchdiffeqs_adjoint_norm(y0, given or {})
    n = 5 if state == "tuple" else 2
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        # (t, y, adj_y, *adj_params) as the backward step measures them: scaled errors,
        # y flat for a tuple state; one component at a time made the largest
        parts = [torch.randn(s, dtype=D, generator=gen) for s in [(), (n,), (n,), (7,), ()]]
        parts[int(torch.randint(5, (), generator=gen))] *= 50
        ours, ref = options["norm"](tuple(parts)), theirs(tuple(parts))
        assert ours.shape == ()
        assert torch.allclose(ours, torch.as_tensor(ref, dtype=D), rtol=1e-12)


def test_the_seminorm_leaves_the_parameters_out_and_the_default_does_not():
    seminorm = odenet.odeint_adjoint(
        _field, Y0, T[:3], adjoint_params=PARAMS, adjoint_options={"norm": "seminorm"}
    ).grad_fn.adjoint_options["norm"]
    default = odenet.odeint_adjoint(_field, Y0, T[:3], adjoint_params=PARAMS)
    default = default.grad_fn.adjoint_options["norm"]
    small = [torch.full(s, 0.1, dtype=D) for s in [(), (2,), (2,)]]
    big_param = (torch.full((7,), 3.0, dtype=D), torch.tensor(-4.0, dtype=D))
    assert float(seminorm((*small, *big_param))) == pytest.approx(0.1)
    assert float(default((*small, *big_param))) == pytest.approx(4.0)
    assert float(default((*small, torch.full((7,), 3.0, dtype=D), torch.tensor(0.0)))) == (
        pytest.approx(3.0)
    )


@pytest.mark.parametrize("state", ["tensor", "tuple"])
def test_a_norm_set_on_the_grad_fn_after_the_forward_is_the_one_the_backward_uses(state):
    y0 = TUPLE_Y0 if state == "tuple" else Y0
    y0 = tuple(p.clone().requires_grad_(True) for p in y0) if state == "tuple" else y0.clone()
    leaves = y0 if state == "tuple" else (y0.requires_grad_(True),)
    counts = {}

    def backward_evaluations(scale):
        """Field evaluations of the backward pass, its norm replaced after the forward
        by ``scale`` times the default; also the gradient and the tuples it saw."""
        nfe = [0]

        def f(t, x):
            nfe[0] += 1
            return _field(t, x)

        xs = odenet.odeint_adjoint(f, y0, T, adjoint_params=PARAMS, rtol=1e-6, atol=1e-8)
        options = _adjoint_node(xs).adjoint_options
        default, seen = options["norm"], []

        def spy(parts):
            seen.append(tuple(p.shape for p in parts))
            return scale * default(parts)

        options["norm"] = spy
        loss = (xs[0] if state == "tuple" else xs).sum()
        before = nfe[0]
        grads = torch.autograd.grad(loss, [*leaves, *PARAMS])
        counts[scale] = nfe[0] - before
        return grads, seen

    grads, seen = backward_evaluations(1.0)
    shape = (5,) if state == "tuple" else (2,)
    assert seen and set(seen) == {((), shape, shape, (7,), ())}
    strict, _ = backward_evaluations(1e4)  # as if the tolerances were 1e4 times tighter
    assert counts[1e4] > 2 * counts[1.0]
    # the gradient of the replaced norm is the gradient (to the looser tolerance)
    direct = torch.autograd.grad(
        (lambda xs: xs[0] if state == "tuple" else xs)(
            odenet.odeint(_field, y0, T, rtol=1e-10, atol=1e-12)
        ).sum(),
        [*leaves, *PARAMS],
        allow_unused=True,
    )
    for a, b, c in zip(grads, strict, direct):
        c = torch.zeros_like(a) if c is None else c
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-6)
        assert torch.allclose(b, c, rtol=1e-7, atol=1e-9)


def test_a_norm_replaced_by_something_not_callable_raises_at_the_backward():
    xs = odenet.odeint_adjoint(_field, Y0, T[:3], adjoint_params=PARAMS)
    xs.grad_fn.adjoint_options["norm"] = "seminorm"
    with pytest.raises(InputError, match=r"read from the solution's grad_fn at backward time"):
        xs.sum().backward()


def test_a_user_adjoint_norm_of_a_tuple_state_gets_the_parts_as_torchdiffeq_gives_them():
    seen = {}

    def run(odeint_adjoint):
        calls = seen[odeint_adjoint] = set()

        def norm(parts):
            calls.add(tuple(tuple(p.shape) for p in parts))
            return torch.stack([p.abs().max() for p in parts]).max()

        xs = odeint_adjoint(
            _field, TUPLE_Y0, T[:3], adjoint_params=PARAMS, adjoint_options={"norm": norm}
        )
        xs[1].sum().backward()

    run(odenet.odeint_adjoint)
    run(torchdiffeq.odeint_adjoint)
    want = {((), (), (2, 2), (), (2, 2), (7,), ())}  # (t, *y parts, *adj_y parts, *params)
    assert seen[odenet.odeint_adjoint] == seen[torchdiffeq.odeint_adjoint] == want


def test_odeint_adjoint_with_an_event_uses_the_adjoint_options_it_is_given():
    # y' = -w y from 1 reaches 1/2 at t* = ln 2 / w: dt*/dw = -ln 2 / w², dy*/dw = 0
    w = torch.tensor(0.5, dtype=D, requires_grad=True)
    calls = []

    def norm(parts):
        calls.append(tuple(p.shape for p in parts))
        return torch.stack([p.abs().max() for p in parts]).max()

    t_star, sol = odenet.odeint_adjoint(
        lambda t, y: -w * y,
        torch.tensor([1.0], dtype=D),
        torch.tensor([0.0, 1.0], dtype=D),
        event_fn=lambda t, y: y[0] - 0.5,
        adjoint_params=(w,),
        adjoint_options={"norm": norm},
    )
    assert sol.grad_fn.adjoint_options["norm"] is norm
    (g,) = torch.autograd.grad(t_star + sol[-1, 0], w)
    assert calls and set(calls) == {((), (1,), (1,), ())}
    assert float(g) == pytest.approx(-math.log(2) / 0.25, rel=1e-6)
    with pytest.raises(InputError, match=r"not in `adjoint_params`"):
        odenet.odeint_adjoint(
            lambda t, y: -w * y,
            torch.tensor([1.0], dtype=D),
            torch.tensor([0.0, 1.0], dtype=D),
            event_fn=lambda t, y: y[0] - 0.5,
            adjoint_params=(),
        )


def test_a_frozen_adjoint_parameter_with_a_callable_norm_warns_as_torchdiffeq():
    frozen = (PARAMS[0], torch.tensor(0.3, dtype=D))
    seen = {}

    def run(odeint_adjoint):
        sizes = seen[odeint_adjoint] = set()

        def norm(parts):
            sizes.add(len(parts))
            return torch.stack([p.abs().max() for p in parts]).max()

        with pytest.warns(UserWarning, match=r"requir\w* grad"):
            xs = odeint_adjoint(
                lambda t, y: -y * PARAMS[0][0],
                Y0,
                T[:3],
                adjoint_params=iter(frozen),
                adjoint_options={"norm": norm},
            )
        xs.sum().backward()

    run(odenet.odeint_adjoint)
    run(torchdiffeq.odeint_adjoint)
    assert seen[odenet.odeint_adjoint] == seen[torchdiffeq.odeint_adjoint] == {4}


# --- gradients through perturb under the adjoint and through user grids ----------------------


class _Quadrature(torch.nn.Module):
    """y' = c t²: ∂y(t1)/∂c = (t1³ − t0³)/3, which rk4 (Simpson) integrates exactly."""

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(1.0, dtype=D))

    def forward(self, t, y):
        return self.c * t**2 * torch.ones_like(y)


@pytest.mark.parametrize("reverse", [False, True])
def test_perturb_under_the_adjoint_keeps_each_stage_at_its_own_time(reverse):
    # the backward pass steps against the forward's direction: its perturbed field must
    # still see each stage at its time (it saw them all at one end: 0.75 for 1/3)
    f = _Quadrature()
    t = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=D)
    y = odenet.odeint_adjoint(
        f, torch.zeros(1, dtype=D), t, method="rk4", options={"perturb": True, "step_size": 0.5}
    )
    y[-1].sum().backward()
    assert float(f.c.grad) == pytest.approx(-1 / 3 if reverse else 1 / 3, rel=1e-12)


def _detached_linspace(k):
    """A user grid built from floats: no autograd path back to t."""
    return lambda func, y0, t: torch.linspace(
        float(t[0].detach()), float(t[-1].detach()), k, dtype=t.dtype
    )


@pytest.mark.parametrize("t_out", [[0.0, 0.5, 1.0], [0.0, 0.3, 1.0]])
def test_cubic_outputs_on_a_user_grid_have_torchdiffeqs_time_gradient(t_out):
    # an output on a grid node (0.5) or inside a step (0.3): the cubic Hermite
    # interpolant's slope, as torchdiffeq's, which has no shortcut at the nodes
    def run(odeint):
        t = torch.tensor(t_out, dtype=D, requires_grad=True)
        y = odeint(
            lambda s, y: -y * torch.cos(s),
            torch.ones(1, dtype=D),
            t,
            method="euler",
            options={"grid_constructor": _detached_linspace(5), "interp": "cubic"},
        )
        return torch.autograd.grad(y[1:].sum(), t)[0]

    ours, theirs = run(odenet.odeint), run(torchdiffeq.odeint)
    assert float(theirs[1].abs()) > 0.1  # the output's slope, not a zero
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_the_adjoint_differentiates_the_ends_of_t_through_a_user_grid():
    # y' = -y: y(t1) = exp(-(t1 - t0)), ∂/∂t0 = y(t1), ∂/∂t1 = -y(t1) (torchdiffeq: a·f)
    w = torch.tensor(1.0, dtype=D, requires_grad=True)
    grads = []
    for odeint in (odenet.odeint_adjoint, torchdiffeq.odeint_adjoint):
        t = torch.tensor([0.0, 1.0], dtype=D, requires_grad=True)
        y = odeint(
            lambda s, y: -w * y,
            torch.ones(1, dtype=D),
            t,
            method="rk4",
            options={"grid_constructor": _detached_linspace(11)},
            adjoint_params=(w,),
        )
        grads.append(torch.autograd.grad(y[-1].sum(), t)[0])
    e = math.exp(-1.0)
    torch.testing.assert_close(grads[0], torch.tensor([e, -e], dtype=D), rtol=1e-6, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=0)


def test_another_adjoint_method_with_options_needs_adjoint_options_as_in_torchdiffeq():
    y0 = Y0.clone().requires_grad_(True)
    kw = dict(method="dopri5", adjoint_method="rk4", adjoint_params=())
    opts = dict(first_step=0.1)
    with pytest.raises(ValueError, match="cannot infer `adjoint_options`"):
        torchdiffeq.odeint_adjoint(spring, y0, T, options=opts, **kw)
    with pytest.raises(InputError, match="pass `adjoint_options` too"):
        odenet.odeint_adjoint(spring, y0, T, options=opts, **kw)
    # given, both run; and the backward then uses the backward method's own options
    ours = odenet.odeint_adjoint(spring, y0, T, options=opts, adjoint_options={}, **kw)
    theirs = torchdiffeq.odeint_adjoint(spring, y0, T, options=opts, adjoint_options={}, **kw)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_max_num_steps_bounds_each_output_interval_as_in_torchdiffeq():
    """torchdiffeq counts max_num_steps per output interval: whatever it finishes, odenet
    finishes (it caps the whole solve at max_num_steps per interval), and a cap far
    below the work fails in both."""
    t = torch.linspace(0, 20, 11, dtype=D)
    finished = []
    for m in (5, 20, 25, 28, 29, 40):
        opts = dict(max_num_steps=m)
        try:
            torchdiffeq.odeint(spring, Y0, t, rtol=1e-8, atol=1e-10, options=opts)
        except AssertionError:
            if m == 5:  # far too few: odenet's whole-solve cap fails as well
                with pytest.raises(odenet.MaxStepsError):
                    odenet.odeint(spring, Y0, t, rtol=1e-8, atol=1e-10, options=opts)
            continue
        finished.append(m)
        ours = odenet.odeint(spring, Y0, t, rtol=1e-8, atol=1e-10, options=opts)
        assert bool(torch.isfinite(ours).all())
    assert finished  # the comparison above ran at least once
