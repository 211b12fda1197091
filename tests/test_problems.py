"""The problem library: exact solutions solve their ODEs, references are accurate and cached."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch

import odenet.problems as P
from odenet._errors import InputError

CLOSED_FORM = [n for n in P.problems() if P.get_problem(n).has_exact]
REFERENCE = [n for n in P.problems() if not P.get_problem(n).has_exact]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ODENET_CACHE", str(tmp_path / "cache"))


def test_library_has_the_issue_problems():
    for name in [
        "exponential",
        "cos",
        "linear",
        "harmonic",
        "kepler",
        "lotka_volterra",
        "lorenz",
        "van_der_pol",
        "van_der_pol_stiff",
        "robertson",
        "prothero_robinson",
        "heat",
        "advection",
    ]:
        assert name in P.problems()


@pytest.mark.parametrize("name", CLOSED_FORM)
def test_exact_solution_starts_at_y0_and_satisfies_the_ode(name):
    # (brusselator_2d's reference is a sparse BDF solve at 1e-12: a small grid here)
    prob = P.get_problem(name, **({"n": 8} if name == "brusselator_2d" else {}))
    t0, t1 = prob.span
    ts = np.linspace(t0, t1, 7)[1:-1]
    d = 1e-5 * (t1 - t0)
    # every time at once: a solver-made "exact" (brusselator_2d) solves once, then caches
    prob.solution(np.concatenate([[t0], ts - d, ts, ts + d]))
    np.testing.assert_allclose(prob.solution([t0])[0], prob.y0, atol=1e-12)
    # central differences of the closed form against f: an independent check of both
    dydt = (prob.solution(ts + d) - prob.solution(ts - d)) / (2 * d)
    f = np.stack(
        [
            prob.f(torch.tensor(t, dtype=torch.float64), torch.as_tensor(y)).numpy()
            for t, y in zip(ts, prob.solution(ts))
        ]
    )
    scale = np.abs(f).max() + 1
    np.testing.assert_allclose(dydt, f, atol=1e-6 * scale, rtol=1e-6)


@pytest.mark.parametrize("name", P.problems())
def test_numpy_field_matches_torch_field(name):
    prob = P.get_problem(name)
    y = prob.y0 + 0.1
    a = prob.f(torch.tensor(0.3, dtype=torch.float64), torch.as_tensor(y)).numpy()
    np.testing.assert_allclose(prob.numpy_field()(0.3, y), a, rtol=1e-12, atol=1e-12)


def test_kepler_exact_conserves_energy_and_angular_momentum():
    prob = P.get_problem("kepler", eccentricity=0.7)
    y = prob.solution(np.linspace(*prob.span, 50))
    np.testing.assert_allclose(prob.invariants["energy"](y), -0.5, atol=1e-13)
    L = prob.invariants["angular_momentum"](y)
    np.testing.assert_allclose(L, np.sqrt(1 - 0.7**2), atol=1e-13)
    # after one period the body is back at perihelion
    np.testing.assert_allclose(y[-1], prob.y0, atol=1e-12)


def test_reference_lotka_volterra_agrees_with_an_independent_solver_and_invariant():
    from scipy.integrate import solve_ivp

    prob = P.get_problem("lotka_volterra", t1=1.0)
    ts = np.linspace(0, 1, 5)
    ref = prob.solution(ts)
    other = solve_ivp(
        prob.f_numpy, prob.span, prob.y0, method="Radau", rtol=1e-11, atol=1e-13, t_eval=ts
    ).y.T
    np.testing.assert_allclose(ref, other, atol=1e-8)
    inv = prob.invariants["first_integral"](ref)
    np.testing.assert_allclose(inv, inv[0], atol=1e-11)


def test_reference_robertson_conserves_mass():
    prob = P.get_problem("robertson", t1=1.0)
    y = prob.solution(np.linspace(0, 1, 4))
    np.testing.assert_allclose(prob.invariants["mass"](y), 1.0, atol=1e-12)


def test_reference_is_cached_under_odenet_cache(tmp_path, monkeypatch):
    prob = P.get_problem("van_der_pol", t1=1.0)
    ts = np.linspace(0, 1, 3)
    first = prob.solution(ts)
    files = list((tmp_path / "cache" / "references").glob("*.npz"))
    assert len(files) == 1
    import scipy.integrate

    def boom(*a, **k):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(scipy.integrate, "solve_ivp", boom)
    np.testing.assert_array_equal(prob.solution(ts), first)


def test_a_reference_cached_by_another_scipy_is_not_served(monkeypatch):
    prob = P.get_problem("van_der_pol", t1=1.0)
    ts = np.linspace(0, 1, 3)
    prob.solution(ts)
    folder = P.cache_dir() / "references"
    assert len(list(folder.glob("*.npz"))) == 1
    monkeypatch.setattr(P, "library_version", lambda name: "0.0-another")
    prob.solution(ts)  # recomputed under its own key: the first file is not read
    assert len(list(folder.glob("*.npz"))) == 2


def test_corrupted_cache_file_is_recomputed_with_a_warning(tmp_path):
    prob = P.get_problem("van_der_pol", t1=1.0)
    ts = np.linspace(0, 1, 3)
    first = prob.solution(ts)
    (path,) = (tmp_path / "cache" / "references").glob("*.npz")
    path.write_bytes(b"not an npz file")
    with pytest.warns(RuntimeWarning, match="unreadable.*recomputing"):
        again = prob.solution(ts)
    np.testing.assert_allclose(again, first, rtol=0, atol=0)


def test_user_problem_is_one_small_object():
    prob = P.Problem(
        lambda t, y: -2 * y, y0=[1.0], span=(0, 1), exact=lambda t: np.exp(-2 * t)[:, None]
    )
    np.testing.assert_allclose(prob.solution([1.0]), [[np.exp(-2)]])
    assert prob.dim == 1 and prob.has_exact


def test_user_problem_without_exact_gets_a_reference():
    prob = P.Problem(lambda t, y: -2 * y, y0=[1.0], span=(0, 1))
    np.testing.assert_allclose(prob.solution([1.0]), [[np.exp(-2)]], rtol=1e-11)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(f=1, y0=[1.0], span=(0, 1)), "`f` must be callable"),
        (dict(f=lambda t, y: y, y0=[[1.0]], span=(0, 1)), "`y0` must be a non-empty finite 1-D"),
        (dict(f=lambda t, y: y, y0=[np.nan], span=(0, 1)), "`y0` must be a non-empty finite"),
        (dict(f=lambda t, y: y, y0=[1.0], span=(1, 1)), "`span` must be two different finite"),
        (dict(f=lambda t, y: y, y0=[1.0], span=(0, np.inf)), "`span` must be two different"),
        (dict(f=lambda t, y: y, y0=[1.0], span=3), r"`span` must be a pair"),
        (dict(f=lambda t, y: y, y0=[1.0], span=(0, 1), exact=3), "`exact` must be callable"),
    ],
)
def test_problem_validation_messages(kwargs, match):
    with pytest.raises(InputError, match=match):
        P.Problem(**kwargs)


def test_unknown_problem_lists_the_names():
    with pytest.raises(
        P.UnknownProblemError, match=r"unknown problem .nope.; choose one of: .*kepler"
    ):
        P.get_problem("nope")


def test_bad_problem_parameters():
    with pytest.raises(
        InputError, match="problem 'cos' has no parameter 'omega'; its parameters are t1"
    ):
        P.get_problem("cos", omega=3)
    with pytest.raises(InputError, match="`eccentricity` must be in"):
        P.get_problem("kepler", eccentricity=1.5)


def test_solution_outside_span_is_rejected():
    with pytest.raises(InputError, match="inside span"):
        P.get_problem("cos").solution([5.0])


def test_as_problem_needs_y0_and_span_with_a_field():
    with pytest.raises(InputError, match="needs `y0` and `span"):
        P.as_problem(lambda t, y: y)
    with pytest.raises(InputError, match="expected a Problem, a problem name"):
        P.as_problem(3)
    with pytest.raises(InputError, match="only used with a vector field"):
        P.as_problem(P.get_problem("cos"), y0=[1.0])


def test_editing_a_user_field_changes_its_identity():
    a = P.Problem(lambda t, y: -y, y0=[1.0], span=(0, 1))
    b = P.Problem(lambda t, y: -2 * y, y0=[1.0], span=(0, 1))
    lam = 3.0
    c = P.Problem(lambda t, y: -lam * y, y0=[1.0], span=(0, 1))
    assert len({a.key(), b.key(), c.key()}) == 3
    assert a.key() == P.Problem(lambda t, y: -y, y0=[1.0], span=(0, 1)).key()
    # and so a cached reference of one is never served for the other
    np.testing.assert_allclose(a.solution([1.0]), [[np.exp(-1)]], rtol=1e-11)
    np.testing.assert_allclose(b.solution([1.0]), [[np.exp(-2)]], rtol=1e-11)


def test_identity_sees_which_attribute_or_global_function_a_field_calls():
    """`y.exp()` and `y.sin()` (or `torch.exp` and `torch.sin`) compile to the same bytes,
    naming the function by an index into co_names; they shared a key before co_names was
    hashed, so an edit from one to the other reused the old reference."""
    keys = {P.Problem(f, y0=[1.0], span=(0, 1)).key() for f in (
        lambda t, y: y.exp(), lambda t, y: y.sin(),
        lambda t, y: torch.exp(y), lambda t, y: torch.sin(y))}  # fmt: skip
    assert len(keys) == 4


def test_identity_sees_which_torch_function_a_closure_or_default_holds():
    """`torch.sin` and `torch.cos` have reprs that differ only in an address; a closure
    or default argument holding one of them hashed as the bare type, so `y' = cos y` was
    served `y' = sin y`'s cached reference (1.16 off).  Truth: scipy on `cos y`."""
    from scipy.integrate import solve_ivp

    def held(op):
        return P.Problem(lambda t, y: op(y), y0=[1.0], span=(0.0, 2.0), name="mine")

    def default(op):
        return P.Problem(lambda t, y, op=op: op(y), y0=[1.0], span=(0.0, 2.0), name="mine")

    for make in (held, default):
        assert make(torch.sin).key() != make(torch.cos).key()
        assert make(torch.sin).key() == make(torch.sin).key()
    t = np.linspace(0.0, 2.0, 5)
    held(torch.sin).solution(t)  # cached first
    truth = solve_ivp(lambda t, y: np.cos(y), (0, 2), [1.0], t_eval=t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(held(torch.cos).solution(t)[:, 0], truth.y[0], rtol=1e-8)


def test_identity_sees_the_jacobian_pattern_whatever_its_storage():
    """A results folder made with a wrong `jac_sparsity` was loaded again after the
    pattern was fixed (error 2e-5 and 20640 evaluations instead of 6e-7 and 264)."""
    from scipy import sparse

    diag, tri = np.eye(4), np.eye(4) + np.eye(4, k=1) + np.eye(4, k=-1)

    def make(pattern):
        return P.Problem(lambda t, y: -y, y0=np.ones(4), span=(0, 1), jac_sparsity=pattern)

    assert make(diag).key() != make(tri).key()
    assert make(tri).key() == make(sparse.csr_matrix(tri)).key() == make(tri.astype(bool)).key()
    assert make(None).key() != make(tri).key()


def test_identity_sees_what_a_repr_elides():
    # numpy's repr elides a 50×50 array ("..."), and a field may read a module global or
    # a network's weights: two problems that differ there are two problems.  Before the
    # fix both 50×50 systems shared a key, and the second was scored against the first's
    # cached reference (error 0.38 with status ok).
    A = -np.eye(50)
    B = A.copy()
    B[20, 20] = -2.0

    def system(M):
        Mt = torch.as_tensor(M)
        return P.Problem(lambda t, y: Mt @ y, y0=np.ones(50), span=(0, 1))

    assert system(A).key() != system(B).key()
    assert system(A).key() == system(A.copy()).key()
    nets = [torch.nn.Linear(2, 2).double() for _ in range(2)]
    keys = {P.Problem(lambda t, y, n=n: n(y), y0=[1.0, 0.0], span=(0, 1)).key() for n in nets}
    assert len(keys) == 2


FILE_V1 = """
import torch
from odenet.problems import Problem
K = 1.0

def decay(lam: float = -2.0):
    return Problem(lambda t, y: lam * K * y, y0=[1.0], span=(0.0, 1.0), name="decay")
"""


def test_editing_a_problem_file_changes_its_identity_in_this_process_and_the_next(
    tmp_path, monkeypatch
):
    import os
    import subprocess
    import sys

    path = tmp_path / "edit_me.py"
    path.write_text(FILE_V1)
    spec = f"{path}:decay"
    first = P.get_problem(spec).key()
    # another process (a worker, a rerun) computes the same identity
    code = f"import odenet.problems as P; print(P.get_problem({spec!r}).key())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.stdout.strip() == first, other.stderr
    # a module constant the field reads, then the field's body
    v2 = FILE_V1.replace("K = 1.0", "K = 1.5")
    keys = {first}
    for edit in (v2, v2.replace("* K *", "* K * K *")):
        path.write_text(edit)
        stat = path.stat()  # the same size and second would hide the edit from a cache
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        p = P.get_problem(spec)
        keys.add(p.key())
    assert len(keys) == 3
    np.testing.assert_allclose(p.solution([1.0]), [[np.exp(-2.0 * 1.5 * 1.5)]], rtol=1e-9)


# --- Jacobians, atol per component, error measures, problems from a file -----------------

WITH_JAC = [n for n in P.problems() if P.get_problem(n).jac_numpy is not None]


def test_the_stiff_set_provides_jacobians():
    assert set(P.STIFF_SUITE) <= set(WITH_JAC)


@pytest.mark.parametrize("name", WITH_JAC)
def test_jacobian_matches_autograd_of_the_field_and_its_sparsity_covers_it(name):
    prob = P.get_problem(name, n=7) if name == "brusselator_1d" else P.get_problem(name)
    rng = np.random.default_rng(1)
    y = prob.y0 + 0.3 * np.abs(rng.normal(size=prob.dim)) + 0.1
    J = prob.jac_numpy(0.7, y)
    J = J.toarray() if hasattr(J, "toarray") else np.asarray(J)
    want = torch.autograd.functional.jacobian(
        lambda z: prob.f(torch.tensor(0.7, dtype=torch.float64), z), torch.from_numpy(y)
    ).numpy()
    np.testing.assert_allclose(J, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    if prob.jac_sparsity is not None:
        pattern = prob.jac_sparsity
        pattern = pattern.toarray() if hasattr(pattern, "toarray") else np.asarray(pattern)
        assert np.all(pattern[want != 0])
        # and it is sparse: Brusselator rows couple 3 u's and 1 v (or the reverse)
        assert pattern.sum() <= 4 * prob.dim


def test_atol_is_the_problems_ratio_times_rtol_per_component():
    p = P.Problem(lambda t, y: -y, y0=[1.0, 2.0], span=(0, 1), atol_ratio=[1e-3, 1e-6])
    np.testing.assert_allclose(p.atol(1e-4), [1e-7, 1e-10])
    assert P.get_problem("cos").atol(1e-4) == pytest.approx(1e-7)  # the default 1e-3·rtol
    assert P.get_problem("robertson_long").atol(1e-4) == pytest.approx(1e-10)
    for name, floor in P.STIFF_SUITE.items():
        assert P.get_problem(name).atol_ratio == floor


def test_error_measures():
    p = P.Problem(lambda t, y: -y, y0=[1.0, 1.0], span=(0, 1), atol_ratio=[1.0, 1e-3])
    ref = np.array([[2.0, 0.0], [-4.0, 1e-3]])
    y = np.array([[2.2, 1e-4], [-4.0, 2e-3]])
    np.testing.assert_allclose(p.error(y, ref, "abs"), [[0.2, 1e-4], [0, 1e-3]], atol=1e-15)
    rel = p.error(y, ref, "rel")
    assert rel[0, 1] == np.inf and rel[1, 0] == 0
    np.testing.assert_allclose(rel[[0, 1], [0, 1]], [0.1, 1.0])
    np.testing.assert_allclose(
        p.error(y, ref, "mixed"), [[0.2 / 3, 1e-4 / 1e-3], [0, 1e-3 / 2e-3]], atol=1e-15
    )
    with pytest.raises(InputError, match="unknown error measure 'square'"):
        p.error(y, ref, "square")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(atol_ratio=[1e-3]), r"`atol_ratio` must be a positive number or one per"),
        (dict(atol_ratio=0.0), "`atol_ratio` must be positive"),
        (dict(atol_ratio="x"), "`atol_ratio` must be a positive number"),
        (dict(jac_numpy=3), "`jac_numpy` must be callable"),
        (dict(jac_sparsity=np.ones((3, 3))), r"`jac_sparsity` must have shape \(n, n\)"),
    ],
)
def test_jacobian_and_atol_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        P.Problem(lambda t, y: -y, y0=[1.0, 2.0], span=(0, 1), **kwargs)


PROBLEM_FILE = '''
import math
import os
import time

import numpy as np
import torch
from odenet.problems import Problem

def decay(lam: float = -2.0, t1: float = 1.0):
    """y' = lam y."""
    return Problem(lambda t, y: lam * y, y0=[1.0], span=(0.0, t1),
                   exact=lambda t: np.exp(lam * t)[:, None], name="decay")

def not_a_problem():
    return 3
'''


def test_a_problem_from_a_file(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(PROBLEM_FILE)
    monkeypatch.chdir(tmp_path)
    p = P.get_problem("mine.py:decay", lam=-3.0)
    assert p.name == "decay" and p.spec == (f"{tmp_path / 'mine.py'}:decay", {"lam": -3.0})
    assert P.parameters("mine.py:decay") == {"lam": -2.0, "t1": 1.0}
    np.testing.assert_allclose(p.solution([1.0]), [[np.exp(-3.0)]])
    # the spec rebuilds it anywhere (a worker process, another folder)
    monkeypatch.chdir("/")
    again = P.get_problem(p.spec[0], **p.spec[1])
    assert again.key() == p.key()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("missing.py:decay", "problem file .*missing.py does not exist"),
        ("mine.py:nothing", "has no function 'nothing'; it defines: .*decay"),
        ("mine.py:not_a_problem", "returned int, not an odenet.problems.Problem"),
        ("mine.py:decay-2", "is not PATH.py:FUNCTION"),
        ("broken.py:f", "cannot import problem file .*broken.py: SyntaxError"),
    ],
)
def test_a_bad_problem_file_spec_says_what_is_wrong(tmp_path, monkeypatch, spec, match):
    (tmp_path / "mine.py").write_text(PROBLEM_FILE)
    (tmp_path / "broken.py").write_text("def f(:\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=match):
        P.get_problem(spec)
    with pytest.raises(InputError, match="has no parameter 'mu'"):
        P.get_problem("mine.py:decay", mu=1.0)


def test_the_2d_brusselator_reference_is_as_accurate_as_its_label():
    """Its BDF reference at 1e-10 was ~3e-8 off at n = 32 (5e-10 at n = 8 to t = 2)
    while labelled 1e-10, so compare's errors below ~1e-6 were polluted.  Truth: scipy
    Radau at 1e-12, restarted at the forcing's switch-on t = 1.1."""
    from scipy.integrate import solve_ivp

    b2d = P.get_problem("brusselator_2d", n=8, t1=2.0)
    pattern = P.brusselator_2d_sparsity(8)
    kw = dict(method="Radau", rtol=1e-12, atol=1e-12, jac_sparsity=pattern)
    a = solve_ivp(b2d.f_numpy, (0.0, 1.1), b2d.y0, **kw)
    b = solve_ivp(b2d.f_numpy, (1.1, 2.0), a.y[:, -1], **kw)
    ref = b2d.solution([2.0])[0]
    assert np.max(np.abs(b.y[:, -1] - ref) / (1 + np.abs(ref))) < b2d.exact_rtol


def test_a_stored_numerical_reference_is_called_one_and_floors_convergence_errors():
    """brusselator_2d's `exact` is scipy BDF at 1e-12 (accurate to about 1e-10), not a
    closed form: listings say "reference" and a convergence study's error floor is that
    reference's accuracy."""
    from odenet.studies.convergence import error_floor

    b2d = P.get_problem("brusselator_2d", n=4)
    assert b2d.has_exact and b2d.exact_rtol == 1e-10
    assert b2d.solution_kind == "reference" and "reference" in repr(b2d)
    assert error_floor(b2d, "float64") >= 1e-7
    closed = P.get_problem("kaps")
    assert closed.solution_kind == "exact" and error_floor(closed, "float64") < 1e-11


def test_a_stiff_reference_uses_the_problems_jacobian_pattern():
    """Radau's reference of a stiff problem with `jac_sparsity` took n difference
    quotients per Jacobian (a dense pattern); with the tridiagonal one it takes 3.
    Truth: the matrix exponential of the linear system."""
    from scipy.linalg import expm

    n = 40
    A = -50.0 * (2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)) - np.eye(n)
    calls = []

    def f_numpy(t, y):
        calls.append(1)
        return A @ y

    At = torch.as_tensor(A)

    def make(pattern):
        return P.Problem(
            lambda t, y: At @ y, y0=np.linspace(0, 1, n), span=(0.0, 0.1), stiff=True,
            f_numpy=f_numpy, jac_sparsity=pattern,
        )  # fmt: skip

    counts = {}
    for name, pattern in [("dense", np.ones((n, n))), ("tridiagonal", A != 0)]:
        calls.clear()
        y = P.reference_solution(make(pattern), np.array([0.1]), use_cache=False)[0]
        counts[name] = len(calls)
        np.testing.assert_allclose(y, expm(0.1 * A) @ np.linspace(0, 1, n), rtol=1e-9, atol=1e-12)
    assert counts["tridiagonal"] < counts["dense"] - 30, counts


def test_identity_sees_class_constants_module_attributes_and_network_attributes(tmp_path):
    """A field reading `Rates.k` (a class attribute), `consts.K` (an attribute of an
    imported user module) or `self.k` (a float attribute of an nn.Module) kept its key
    when that value was edited: a class counted by its repr, a module by its name, a
    network by forward and state_dict only.  `odenet converge` then loaded the cells
    (and the cached reference) of the old problem: 0 computed, error 5e-2 for 2.2e-1."""
    import importlib
    import sys

    def key(f):
        return P.Problem(f, y0=[1.0], span=(0, 1), name="p").key()

    class Rates:
        k = 1.0

        @staticmethod
        def scale():
            return 1.0

    f = lambda t, y: -Rates.k * Rates.scale() * y  # noqa: E731
    before = key(f)
    assert key(f) == before
    Rates.k = 3.0
    assert key(f) != before
    Rates.k = 1.0
    assert key(f) == before
    Rates.scale = staticmethod(lambda: 2.0)
    assert key(f) != before

    (tmp_path / "hh_user_consts.py").write_text("K = 1.0\nJ = 5.0\n")
    sys.path.insert(0, str(tmp_path))
    try:
        consts = importlib.import_module("hh_user_consts")
        g = lambda t, y: -consts.K * y  # noqa: E731
        before = key(g)
        consts.J = 6.0  # not read by the field: the same problem
        assert key(g) == before
        consts.K = 3.0
        assert key(g) != before
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("hh_user_consts", None)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = 1.0
            self.register_buffer("c", torch.ones(1, dtype=torch.float64), persistent=False)

        def forward(self, t, y):
            return -self.k * self.c * y

    net = Net()
    before = key(net)
    assert key(Net()) == before
    net.k = 3.0
    assert key(net) != before
    net.k = 1.0
    net.c.fill_(2.0)  # a non-persistent buffer is not in the state dict
    assert key(net) != before


def test_identity_of_self_referencing_classes_and_sets_is_finite_and_stable():
    import subprocess
    import sys

    code = """
import odenet.problems as P
class Node:
    names = {"alpha", "beta", "gamma", "delta"}
Node.me = Node
loop = []
loop.append(loop)
print(P.Problem(lambda t, y: -len(Node.names) * len(loop) * Node.me.names.__len__() * y,
                y0=[1.0], span=(0, 1), name="p").key())
"""
    keys = set()
    for seed in ("0", "1", "2"):
        env = dict(__import__("os").environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        keys.add(r.stdout.strip())
    assert len(keys) == 1  # a set's order (string hashing) does not change the key


def test_a_problem_file_edited_within_the_second_is_read_again(tmp_path, monkeypatch):
    """The import system's bytecode cache trusts a file's size and whole second of
    modification: K = 1.0 edited to K = 3.0 within the second (a script's sed, then the
    rerun) ran the old code, under the old key, so the old cells were loaded."""
    import os
    import sys

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "same_second.py"
    spec = f"{path}:decay"
    second = 1_700_000_000 * 10**9
    values = []
    for k, ns in (("1.0", 100_000_000), ("3.0", 700_000_000)):
        path.write_text(FILE_V1.replace("K = 1.0", f"K = {k}"))
        os.utime(path, ns=(second + ns, second + ns))
        p = P.get_problem(spec)
        values.append((float(p.f(0.0, torch.ones(1, dtype=torch.float64))), p.key()))
    assert values[0][0] == -2.0 and values[1][0] == -6.0
    assert values[0][1] != values[1][1]


DATACLASS_FILE = """
import dataclasses
from odenet.problems import Problem


@dataclasses.dataclass
class Rates:
    k: float = {k}
    tags: list = dataclasses.field(default_factory=list)


class Slotted:
    __slots__ = ("w",)

    def __init__(self):
        self.w = 2.0


def decay():
    rates, s = Rates(), Slotted()
    return Problem(lambda t, y: -Rates.k * rates.k * s.w * y, y0=[1.0], span=(0.0, 1.0))
"""


def test_a_dataclass_or_slotted_object_has_the_same_key_in_every_process(tmp_path):
    """A dataclass's fields (slotted, unpicklable objects) and a slotted instance of a
    class in a problem file are hashed by their slots' values: equal in two processes
    (else no results folder would be resumed), and another value is another problem."""
    import subprocess
    import sys

    path = tmp_path / "dc.py"
    code = f"import odenet.problems as P; print(P.get_problem({str(path) + ':decay'!r}).key())"

    def keys(k):
        path.write_text(DATACLASS_FILE.format(k=k))
        out = set()
        for seed in ("1", "2"):
            env = dict(__import__("os").environ, PYTHONHASHSEED=seed)
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env=env)  # fmt: skip
            assert r.returncode == 0, r.stderr
            out.add(r.stdout.strip())
        return out

    one = keys("1.0")
    assert len(one) == 1
    assert keys("1.5") != one


def test_the_brusselator_2d_key_does_not_change_when_its_reference_is_computed():
    # its reference states are cached in a module dict that the key's fingerprint of
    # `exact` read: the key changed once a reference was computed, so a study resumed
    # in the same process was refused as a different one
    p = P.get_problem("brusselator_2d", n=4, t1=0.5)
    before = p.key()
    p.exact(np.array([0.5]))
    assert p.key() == before


class _Layer:
    def __init__(self, W):
        self.W = np.asarray(W, dtype=float)


class _Net:
    def __init__(self, layers):
        self.layers = layers


class _Model:
    def __init__(self, W):
        self.net = _Net([_Layer(W)])

    def rhs(self, t, y):
        return torch.as_tensor(self.net.layers[0].W, dtype=y.dtype) @ y


def test_weights_nested_in_objects_are_part_of_the_key_and_the_cached_reference():
    # audit M F1: a field `model.rhs` reading `model.net.layers[0].W` is 7 levels deep;
    # the fingerprint hashed that deep only by type name, so after W changed the old
    # problem's cached reference (e^{-2t}) was served for the new one (e^{-3t}).
    t = np.array([0.5, 1.0])
    for lam in (-2.0, -3.0):
        p = P.Problem(_Model(np.diag([lam, -1.0])).rhs, y0=[1.0, 1.0], span=(0.0, 1.0),
                      name="nested")  # fmt: skip
        exact = np.stack([np.exp(lam * t), np.exp(-t)], axis=1)
        np.testing.assert_allclose(P.reference_solution(p, t), exact, rtol=1e-9)


NESTED_FILE = """
from odenet.problems import Problem
CFG = {"a": {"b": {"c": {"d": {"e": {"f": {"g": [RATE]}}}}}}}

def rate():
    return CFG["a"]["b"]["c"]["d"]["e"]["f"]["g"][0]

def prob():
    return Problem(lambda t, y: -rate() * y, y0=[1.0], span=(0.0, 1.0), name="nested")
"""


def test_a_constant_deep_in_a_problem_files_config_is_part_of_its_key(tmp_path):
    # audit M F2 repro: editing a constant 7 dict levels deep in the problem file kept
    # the key; the next process must still compute the same key for the same file
    import os
    import subprocess
    import sys

    path = tmp_path / "nested.py"
    spec = f"{path}:prob"
    path.write_text(NESTED_FILE.replace("RATE", "2.0"))
    first = P.get_problem(spec).key()
    code = f"import odenet.problems as P; print(P.get_problem({spec!r}).key())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.stdout.strip() == first, other.stderr
    path.write_text(NESTED_FILE.replace("RATE", "3.0"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    p = P.get_problem(spec)
    assert p.key() != first
    np.testing.assert_allclose(p.solution([1.0]), [[np.exp(-3.0)]], rtol=1e-9)


class _Box:
    def __init__(self, inner):
        self.inner = inner


def test_content_past_the_depth_limit_is_never_counted_equal():
    # objects nested past the limit are not read: they must not hash alike (before
    # they counted by their type name, so the innermost value was invisible)
    def chain(value):
        box = value
        for _ in range(P._FINGERPRINT_DEPTH + 5):
            box = _Box(box)
        return P.Problem(lambda t, y, b=box: -y, y0=[1.0], span=(0, 1))

    assert chain(np.array([1.0])).key() != chain(np.array([2.0])).key()
    # plain data is read at any nesting: equal content, equal key; other content, other
    nested = lambda v: P.Problem(lambda t, y, c=[[[[[[[[[[[[[[[v]]]]]]]]]]]]]]]: -y,  # noqa: E731
                                 y0=[1.0], span=(0, 1))  # fmt: skip
    assert nested(1.0).key() == nested(1.0).key() != nested(2.0).key()


def _kepler_by_bisection(t, e):
    """Independent truth: E - e sin E = M by scipy's brentq on [0, 2π] per time."""
    from scipy.optimize import brentq

    s, out = math.sqrt(1 - e * e), []
    for M in t:
        Mm = math.fmod(M, 2 * math.pi)
        E = 0.0 if Mm == 0 else brentq(lambda x, Mm=Mm: x - e * math.sin(x) - Mm, 0,
                                       2 * math.pi, xtol=1e-15, rtol=1e-15)  # fmt: skip
        E += M - Mm
        d = 1 - e * math.cos(E)
        out.append([math.cos(E) - e, s * math.sin(E), -math.sin(E) / d, s * math.cos(E) / d])
    return np.array(out)


@pytest.mark.parametrize("e", [0.995, 0.998, 0.999, 0.9999])
def test_kepler_exact_solution_near_perihelion_of_very_eccentric_orbits(e):
    # audit M F4: plain Newton from M + e sin M did not converge near perihelion for
    # e >= 0.995 and its last iterate was returned as the exact state (e = 0.999 at
    # t = 0.0644: off by 1.8; 1 to 17 wrong times of 4001 over one orbit)
    p = P.get_problem("kepler", eccentricity=e)
    t = np.linspace(0, 2 * math.pi, 4001)
    y = p.solution(t)
    truth = _kepler_by_bisection(t, e)
    scale = np.abs(truth).max(axis=1, keepdims=True)
    assert np.abs(y - truth).max() < 1e-9 * scale.max()
    energy = p.invariants["energy"](y)
    np.testing.assert_allclose(energy, -0.5, rtol=1e-8)
    np.testing.assert_allclose(p.invariants["angular_momentum"](y), math.sqrt(1 - e * e),
                               rtol=1e-8)  # fmt: skip


def test_kepler_exact_matches_an_integration_from_perihelion():
    # the report's states, from scipy DOP853 at rtol 1e-13 started at y0 (6 digits)
    for e, t, want in [
        (0.999, 0.06440265, [-0.255403, 0.029894, -2.600185, 0.129290]),
        (0.9999, 0.01727876, [-0.108831, 0.006418, -4.163160, 0.115587]),
    ]:
        y = P.get_problem("kepler", eccentricity=e).solution([t])[0]
        np.testing.assert_allclose(y, want, atol=2e-6)


@pytest.mark.parametrize("name", ["heat", "advection", "brusselator_1d", "brusselator_2d"])
@pytest.mark.parametrize("n", [0, -2, 2.5, True])
def test_a_grid_size_that_is_not_a_positive_integer_is_an_input_error(name, n):
    # audit M F7: n <= 0 crashed in numpy ("negative dimensions are not allowed") or
    # divided by zero; n = 2.5 was silently truncated
    from odenet import OdenetError

    with pytest.raises(InputError, match=r"`n` \(the number of grid points of .*\) must be a "
                       r"positive integer, got") as exc:  # fmt: skip
        P.get_problem(name, n=n)
    assert isinstance(exc.value, OdenetError)


def test_the_smallest_heat_grid_is_its_closed_form():
    # n = 1: one interior point at x = 1/2, u' = -8u (dx = 1/2): u = e^{-8t} u0
    p = P.get_problem("heat", n=1, t1=0.1)
    u0 = 0.5 * 0.5 * math.exp(0.5)
    np.testing.assert_allclose(p.solution([0.0, 0.1]), [[u0], [math.exp(-0.8) * u0]],
                               rtol=1e-12)  # fmt: skip


def test_the_problem_listing_prints_defaults_that_give_the_same_problem():
    # audit M F10: `odenet problems` printed t1=321.8 for HIRES's 321.8122 and 6.283 for
    # 2π; the truth is each factory's own default
    import inspect

    for row in P.describe():
        if row["parameters"] == "-":
            continue
        shown = dict(item.split("=") for item in row["parameters"].split(", "))
        defaults = {k: v.default for k, v in
                    inspect.signature(P._REGISTRY[row["name"]]).parameters.items()}  # fmt: skip
        for k, text in shown.items():
            assert type(defaults[k])(text) == defaults[k], (row["name"], k, text)


def test_the_lorenz_description_names_its_parameters():
    # audit M F10: the description was hard-coded to σ=10, ρ=28, β=8/3
    assert "σ=3, ρ=10, β=8/3" in P.get_problem("lorenz", rho=10, sigma=3).description
    assert "σ=10, ρ=28, β=2 " in P.get_problem("lorenz", beta=2.0).description


def test_the_brusselator_2d_sparsity_docstring_counts_the_nonzeros_of_its_jacobian():
    # audit M F10: the docstring said 7 nonzeros per row; the truth is the autograd
    # Jacobian's pattern (5-point stencil + the other species at the same point)
    import re

    n = 4
    p = P.get_problem("brusselator_2d", n=n)
    y = 1 + torch.rand(2 * n * n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    J = torch.autograd.functional.jacobian(lambda y: p.f(torch.tensor(2.0), y), y)
    per_row = set((J != 0).sum(dim=1).tolist())
    said = int(re.search(r"(\d+) nonzeros per row", P.brusselator_2d_sparsity.__doc__)[1])
    assert per_row == {said}


def test_a_killed_writers_temp_file_in_the_reference_cache_is_removed(tmp_path):
    """A kill -9 during the cache write left `.tmp-*.npz` files that nothing removed
    (audit M S1); a live writer's temp file must survive."""
    refs = tmp_path / "cache" / "references"
    refs.mkdir(parents=True)
    dead = refs / ".tmp-999999999-abc123.npz"  # a pid that is not running
    dead.write_bytes(b"PK\x03\x04 half an npz")
    old_style = refs / ".tmp-k2j3h4.npz"  # written before the pid was in the name
    old_style.write_bytes(b"PK")
    old = time.time() - 3600
    os.utime(old_style, (old, old))
    live = refs / f".tmp-{os.getppid()}-inflight.npz"  # our parent is alive: writing
    live.write_bytes(b"PK")
    P.get_problem("van_der_pol", t1=1.0).solution(np.linspace(0, 1, 3))
    assert not dead.exists() and not old_style.exists()
    assert live.exists()
    assert [p.name for p in refs.glob("*.npz")] != []  # the reference itself was written
    assert sorted(p.name for p in refs.glob(".tmp-*")) == [live.name]


def _exp_sin(t):
    """``y = exp(sin t)``, the solution of ``y' = cos(t) y``, ``y(0) = 1``: not symmetric
    in time, so a sign lost in a backward span shows."""
    return np.exp(np.sin(np.asarray(t, dtype=np.float64)))[:, None]


def test_a_backward_span_is_a_problem_whose_solution_lives_on_it():
    def f(t, y):
        return torch.cos(t) * y

    exact = P.Problem(f, y0=[1.0], span=(0.0, -3.0), exact=_exp_sin, name="exp_sin_back")
    assert exact.span == (0.0, -3.0)
    t = np.array([-3.0, -1.2, 0.0])
    np.testing.assert_allclose(exact.solution(t), _exp_sin(t), rtol=1e-15)
    with pytest.raises(InputError, match="inside span"):
        exact.solution([0.5])
    # the generic reference integrates backward too, whatever the order of the times asked
    ref = P.Problem(f, y0=[1.0], span=(0.0, -3.0), name="exp_sin_back_ref")
    t = np.array([-1.2, -3.0, 0.0, -0.4])
    np.testing.assert_allclose(ref.solution(t), _exp_sin(t), rtol=1e-10)
