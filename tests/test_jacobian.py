"""Jacobians for the implicit methods (odenet._jacobian): autograd, compressed
reverse and forward mode on a sparsity pattern, user Jacobians, sparse LU, and their
counts."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odenet
from odenet import InputError
from odenet._errors import VectorFieldError
from odenet._jacobian import (
    SPARSE_MIN_N,
    DenseLU,
    SparseJac,
    SparseLU,
    Sparsity,
    batched_jacobian,
    compressed_jacobian,
    group_columns,
    lu_kron,
    lu_shifted,
    vector_jacobian_products,
)
from odenet.problems import brusselator_2d_sparsity, get_problem

D = torch.float64


def robertson(t, y):
    return torch.stack(
        [
            -0.04 * y[0] + 1e4 * y[1] * y[2],
            0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
            3e7 * y[1] ** 2,
        ]
    )


def robertson_jac(t, y):  # the closed form
    return torch.tensor(
        [
            [-0.04, 1e4 * y[2], 1e4 * y[1]],
            [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
            [0.0, 6e7 * y[1], 0.0],
        ],
        dtype=y.dtype,
    )


def rows(f):
    """A user-layout field as the internal ``g(s [K], y [K, n])`` of one system."""
    return lambda s, y: f(s[0], y[0])[None]


def masked_field(P: np.ndarray, seed: int):
    """A field whose Jacobian has exactly the pattern ``P`` (per row of a batch):
    ``f_i = Σ_j P_ij w_ij sin(y_j + b_ij)``, so ``J_ij = P_ij w_ij cos(y_j + b_ij)``."""
    rng = np.random.default_rng(seed)
    n = P.shape[0]
    W = torch.as_tensor(P * rng.uniform(0.5, 2.0, (n, n)))
    B = torch.as_tensor(rng.uniform(-1, 1, (n, n)))

    def g(s, y):  # y [K, n]
        return (W * torch.sin(y[:, None, :] + B)).sum(-1)

    def exact(y):
        return W * torch.cos(y[:, None, :] + B)

    return g, exact


# --- autograd ---------------------------------------------------------------------------


def test_autograd_jacobian_matches_the_closed_form_and_finite_differences():
    y = torch.tensor([0.7, 3e-5, 0.3], dtype=D)
    J = batched_jacobian(rows(robertson), torch.zeros(1, dtype=D), y[None])[0]
    assert torch.allclose(J, robertson_jac(0.0, y), rtol=1e-14, atol=0)
    # central differences, step scaled per component (truncation ~ h², round-off ~ ε/h)
    fd = torch.empty(3, 3, dtype=D)
    for j in range(3):
        h = 1e-6 * max(abs(float(y[j])), 1e-6)
        e = torch.zeros(3, dtype=D)
        e[j] = h
        fd[:, j] = (robertson(0.0, y + e) - robertson(0.0, y - e)) / (2 * h)
    assert torch.allclose(J, fd, rtol=1e-6, atol=1e-6)


def test_autograd_jacobian_is_per_row_of_a_batch():
    P = np.ones((4, 4), dtype=bool)
    g, exact = masked_field(P, 0)
    y = torch.randn(3, 4, dtype=D, generator=torch.Generator().manual_seed(1))
    J = batched_jacobian(g, torch.zeros(3, dtype=D), y)
    assert J.shape == (3, 4, 4) and torch.allclose(J, exact(y), rtol=1e-14)


# --- column groups and compressed Jacobians -----------------------------------------------


def _structurally_orthogonal(P: np.ndarray, groups: np.ndarray) -> bool:
    for c in np.unique(groups):
        if (P[:, groups == c].sum(axis=1) > 1).any():
            return False
    return True


@pytest.mark.parametrize("lower,upper", [(1, 1), (2, 1), (0, 3)])
def test_a_banded_pattern_needs_at_most_its_bandwidth_in_groups(lower, upper):
    n = 40
    P = sp.diags([np.ones(n - abs(k)) for k in range(-lower, upper + 1)], range(-lower, upper + 1))
    groups = group_columns(P)
    assert groups.max() + 1 <= lower + upper + 1
    assert _structurally_orthogonal(P.toarray() != 0, groups)


def test_a_tridiagonal_pattern_takes_three_groups_and_the_2d_brusselator_few():
    n = 50
    P = sp.diags([np.ones(n - 1), np.ones(n), np.ones(n - 1)], [-1, 0, 1])
    assert group_columns(P).max() + 1 == 3
    # periodic five-point stencil per species + u-v coupling: 2048 columns, a dozen groups
    assert Sparsity.from_pattern(brusselator_2d_sparsity(32)).n_groups <= 12


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 10),
    K=st.integers(1, 3),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_the_compressed_jacobian_equals_the_dense_one(n, K, density, seed):
    rng = np.random.default_rng(seed)
    P = rng.random((n, n)) < density
    g, exact = masked_field(P, seed)
    sparsity = Sparsity.from_pattern(P)
    assert _structurally_orthogonal(P, sparsity.groups)
    assert _structurally_orthogonal(P.T, sparsity.row_groups)
    y = torch.as_tensor(rng.standard_normal((K, n)))
    J = compressed_jacobian(g, torch.zeros(K, dtype=D), y, sparsity)
    dense = batched_jacobian(g, torch.zeros(K, dtype=D), y)
    assert torch.allclose(J, dense, rtol=1e-13, atol=1e-15)
    assert torch.allclose(J, exact(y), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dense_line", ["row", "column"])
def test_the_mode_with_fewer_groups_is_taken_and_gives_the_jacobian(dense_line):
    # an arrow: the diagonal and one dense line.  A dense last row puts every column in
    # one row (n column groups) but takes 2 row groups; a dense last column the reverse.
    n, K = 9, 2
    P = np.eye(n, dtype=bool)
    if dense_line == "row":
        P[-1, :] = True
    else:
        P[:, -1] = True
    g, exact = masked_field(P, seed=3)
    calls = []

    def counted(s, y):
        calls.append(1)
        return g(s, y)

    sparsity = Sparsity.from_pattern(P)
    y = torch.as_tensor(np.random.default_rng(1).standard_normal((K, n)))
    J = compressed_jacobian(counted, torch.zeros(K, dtype=D), y, sparsity)
    assert torch.allclose(J, exact(y), rtol=1e-13, atol=1e-15)
    if dense_line == "row":
        assert (sparsity.n_row_groups, sparsity.n_groups) == (2, n)
        # reverse: one taped call and one product per row group
        assert sparsity.reverse and sparsity.products == 2 and len(calls) == 1
    else:
        assert (sparsity.n_row_groups, sparsity.n_groups) == (n, 2)
        # forward: one dual call per column group, counted as evaluations
        assert not sparsity.reverse and sparsity.products == 0 and len(calls) == 2
        # a dual call costs several reverse products (FORWARD_PRODUCT_COST): with one row
        # fewer, 8 row groups against 2 column groups still go to reverse mode
        assert Sparsity.from_pattern(P[1:, 1:]).reverse


def test_a_field_with_numeric_constants_gets_its_sparse_jacobian_in_reverse_mode():
    # the 1-D Brusselator's stencil, written with Python numbers as fields are: a
    # structurally symmetric pattern ties (6 row groups, 6 column groups) and goes to
    # reverse mode, one taped call
    prob = get_problem("brusselator_1d", n=20)
    sparsity = Sparsity.from_pattern(prob.jac_sparsity)
    assert sparsity.n_row_groups == sparsity.n_groups == 6 and sparsity.reverse
    calls = []

    def g(s, z):
        calls.append(1)
        return prob.f(s[0], z[0])[None]

    y = prob.y0_tensor()[None] * 1.1
    J = compressed_jacobian(g, torch.zeros(1, dtype=D), y, sparsity)
    assert len(calls) == 1
    exact = sp.csr_matrix(prob.jac_numpy(0.0, y[0].numpy())).toarray()  # the closed form
    np.testing.assert_allclose(J[0].numpy(), exact, rtol=1e-13, atol=1e-12)


def test_without_a_batching_rule_the_products_are_taken_one_seed_at_a_time(monkeypatch):
    # a field op without a vmap rule makes the batched backward raise; the products
    # then come from one backward per seed and must be the same
    rng = np.random.default_rng(5)
    P = rng.random((7, 7)) < 0.4
    g, exact = masked_field(P, seed=5)
    y = torch.as_tensor(rng.standard_normal((2, 7)))
    seeds = torch.as_tensor(rng.standard_normal((3, 2, 7)))
    s = torch.zeros(2, dtype=D)
    batched = vector_jacobian_products(g, s, y, seeds)
    grad = torch.autograd.grad
    loops = []

    def no_batching(*args, **kw):
        if kw.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented")
        loops.append(1)
        return grad(*args, **kw)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    looped = vector_jacobian_products(g, s, y, seeds)
    assert len(loops) == 3
    assert torch.allclose(looped, batched, rtol=1e-14, atol=1e-15)
    # and both are seedᵀ J per row, against the closed form
    assert torch.allclose(batched, torch.einsum("ckn,knm->ckm", seeds, exact(y)), rtol=1e-12)


def test_a_large_single_system_gets_a_sparse_jacobian_and_sparse_lu():
    N = 10  # 2·10² = 200 states
    prob = get_problem("brusselator_2d", n=N)
    assert prob.dim >= SPARSE_MIN_N
    sparsity = Sparsity.from_pattern(brusselator_2d_sparsity(N))
    y = prob.y0_tensor()[None] + 0.1
    t = torch.tensor(2.0, dtype=D)  # inside the forcing's window

    def g(s, z):
        return prob.f(t, z[0])[None]

    J = compressed_jacobian(g, torch.zeros(1, dtype=D), y, sparsity)
    assert isinstance(J, SparseJac)
    dense = batched_jacobian(g, torch.zeros(1, dtype=D), y)
    assert torch.allclose(J.dense(D, "cpu"), dense, rtol=1e-13, atol=1e-13)
    # the sparse factors solve what the dense ones do
    rhs = torch.randn(1, prob.dim, dtype=D, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([37.5], dtype=D)
    assert torch.allclose(lu_shifted(J, shift).solve(rhs), lu_shifted(dense, shift).solve(rhs))
    cshift = torch.tensor([20.0 + 9.0j], dtype=torch.complex128)
    crhs = rhs.to(torch.complex128) * (1 - 2j)
    assert torch.allclose(lu_shifted(J, cshift).solve(crhs), lu_shifted(dense, cshift).solve(crhs))
    hA = torch.tensor([[[0.1, -0.02], [0.3, 0.1]]], dtype=D)
    rhs2 = torch.cat([rhs, 2 * rhs], dim=1)
    assert torch.allclose(lu_kron(hA, J).solve(rhs2), lu_kron(hA, dense).solve(rhs2))


def test_a_singular_matrix_solves_to_nan_in_both_backends():
    rhs = torch.ones(1, 2, dtype=D)
    assert not bool(torch.isfinite(SparseLU(sp.csc_matrix((2, 2))).solve(rhs)).any())
    assert not bool(torch.isfinite(DenseLU(torch.zeros(1, 2, 2, dtype=D)).solve(rhs)).all())


# --- through solve --------------------------------------------------------------------------


def _robertson_solve(**kw):
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    t = torch.tensor([0.0, 4.0], dtype=D)
    return odenet.solve(robertson, y0, t, rtol=1e-6, atol=1e-10, **kw)


@pytest.mark.parametrize("method", ["radau_iia5", "kvaerno5"])
def test_a_user_jacobian_gives_the_same_answer_with_fewer_field_calls(method):
    calls = []

    def jac(t, y):
        calls.append(float(t))
        return robertson_jac(t, y)

    auto = _robertson_solve(method=method)
    user = _robertson_solve(method=method, jac=jac)
    # same Jacobians (to round-off): same steps, same answer
    assert torch.allclose(user.ys, auto.ys, rtol=1e-9, atol=1e-14)
    assert user.stats["steps"] == auto.stats["steps"]
    # each autograd Jacobian costs one field call; the user's costs none
    assert user.stats["nfe"] == auto.stats["nfe"] - auto.stats["njev"]
    assert user.stats["njev"] == len(calls) > 0


def test_njev_and_nlu_count_the_calls(monkeypatch):
    import odenet._jacobian as J

    calls, lus = [], []
    init = J.DenseLU.__init__

    def counting_init(self, M):
        lus.append(1)
        init(self, M)

    monkeypatch.setattr(J.DenseLU, "__init__", counting_init)

    def jac(t, y):
        calls.append(1)
        return robertson_jac(t, y)

    for method in ("radau_iia5", "kvaerno5", "trbdf2"):
        calls.clear(), lus.clear()
        sol = _robertson_solve(method=method, jac=jac)
        assert sol.stats["njev"] == len(calls) == sol.stats["jacobians"]
        assert sol.stats["nlu"] == len(lus) == sol.stats["factorizations"]


def test_gradients_come_from_the_field_whatever_the_jacobian():
    k = torch.tensor(0.04, dtype=D, requires_grad=True)

    def f(t, y):
        return torch.stack(
            [
                -k * y[0] + 1e4 * y[1] * y[2],
                k * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                3e7 * y[1] ** 2,
            ]
        )

    def rough_jac(t, y):  # 30 % off: Newton still converges, a gradient through it would not
        return 1.3 * robertson_jac(t, y)

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    for sensitivity in ("direct", "adjoint"):
        grads = []
        for jac in (None, robertson_jac, rough_jac):
            sol = odenet.solve(
                f,
                y0,
                t,
                method="radau_iia5",
                rtol=1e-8,
                atol=1e-12,
                jac=jac,
                sensitivity=sensitivity,
            )
            (gk,) = torch.autograd.grad(sol.ys[-1, 0], k)
            grads.append(gk)
        assert torch.allclose(grads[0], grads[1], rtol=1e-6)
        assert torch.allclose(grads[0], grads[2], rtol=1e-5)


def test_sparse_jacobians_give_the_dense_answer_on_the_2d_brusselator(monkeypatch):
    import odenet._jacobian as J

    sparse_lus = []
    init = J.SparseLU.__init__

    def counting_init(self, M, **kw):
        sparse_lus.append(M.shape)
        init(self, M, **kw)

    monkeypatch.setattr(J.SparseLU, "__init__", counting_init)
    N = 10
    prob = get_problem("brusselator_2d", n=N, t1=0.5)
    y0, t = prob.y0_tensor(), torch.tensor([0.0, 0.5], dtype=D)
    pattern = brusselator_2d_sparsity(N)
    dense = odenet.solve(prob.f, y0, t, method="radau_iia5", rtol=1e-6, atol=1e-6)
    sparse = odenet.solve(
        prob.f, y0, t, method="radau_iia5", rtol=1e-6, atol=1e-6, jac_sparsity=pattern
    )
    assert torch.allclose(sparse.ys, dense.ys, rtol=1e-10, atol=1e-12)
    # RADAU5's real system and its complex one, both of the state's size
    assert {2 * N * N} == {m for m, _ in sparse_lus}
    assert len(sparse_lus) == sparse.stats["nlu"]
    assert sparse.stats["steps"] == dense.stats["steps"]
    # the work: n reverse products per dense Jacobian, one per row group per sparse one
    groups = Sparsity.from_pattern(pattern).n_row_groups
    assert sparse.stats["jac_products"] == groups * sparse.stats["njev"] > 0
    assert dense.stats["jac_products"] == 2 * N * N * dense.stats["njev"]
    ref = prob.solution([0.5])[0]
    assert np.abs(sparse.ys[-1].numpy() - ref).max() / np.abs(ref).max() < 1e-5

    # a user Jacobian returning a scipy.sparse matrix, through an SDIRK's S = 1 systems
    def jac(t, y):
        J = batched_jacobian(lambda s, z: prob.f(t, z[0])[None], t[None], y[None])[0]
        return sp.csr_matrix(J.numpy())

    kv = odenet.solve(prob.f, y0, t, method="kvaerno5", rtol=1e-6, atol=1e-6)
    kv_user = odenet.solve(prob.f, y0, t, method="kvaerno5", rtol=1e-6, atol=1e-6, jac=jac)
    assert torch.allclose(kv_user.ys, kv.ys, rtol=1e-10, atol=1e-12)


def test_backward_integration_flips_the_users_jacobian():
    # y' = 20 y is stiff and stable backward in time: a Jacobian of the wrong sign
    # would make Newton diverge
    lam = 20.0
    y1 = torch.tensor([1.0], dtype=D)
    t = torch.tensor([1.0, 0.0], dtype=D)
    calls = []

    def jac(t, y):
        calls.append(1)
        return torch.tensor([[lam]], dtype=D)

    for method in ("radau_iia5", "kvaerno5"):
        kw = dict(method=method, rtol=1e-6, atol=1e-14)
        sol = odenet.solve(lambda t, y: lam * y, y1, t, jac=jac, **kw)
        auto = odenet.solve(lambda t, y: lam * y, y1, t, **kw)
        assert sol.stats["steps"] == auto.stats["steps"]
        assert abs(float(sol.ys[-1, 0]) / np.exp(-lam) - 1) < 1e-3
        assert sol.stats["newton_failures"] == 0
    assert calls


def test_a_constant_jacobian_and_per_sample_jacobians():
    A = torch.tensor([[-100.0, 1.0], [0.0, -0.5]], dtype=D)
    y0 = torch.tensor([1.0, 1.0], dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    exact = torch.linalg.matrix_exp(A) @ y0
    sol = odenet.solve(lambda t, y: A @ y, y0, t, method="radau_iia5", rtol=1e-8, jac=A)
    assert torch.allclose(sol.ys[-1], exact, rtol=1e-6) and sol.stats["njev"] == 1
    # per-sample grids: jac(t [B], y [B, n]) -> [B, n, n]
    B = 3
    ts = torch.stack([torch.linspace(0, 1 + 0.5 * b, 2, dtype=D) for b in range(B)])

    def jac_b(t, y):
        assert t.shape == (B,) and y.shape == (B, 2)
        return A.expand(B, 2, 2)

    per = odenet.solve(lambda t, y: y @ A.T, y0.expand(B, 2), ts, method="kvaerno5", jac=jac_b)
    for b in range(B):
        e = torch.linalg.matrix_exp(A * (1 + 0.5 * b)) @ y0
        assert torch.allclose(per.ys[b, -1], e, rtol=1e-4, atol=1e-8)


# --- validation -----------------------------------------------------------------------------


def test_bad_jacobian_arguments_are_input_errors():
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    with pytest.raises(InputError, match=r"unused.*explicit"):
        odenet.solve(robertson, y0, t, method="dopri5", jac=robertson_jac)
    with pytest.raises(InputError, match=r"`jac_sparsity`.*unused"):
        odenet.solve(robertson, y0, t, method="rk4", step_size=0.1, jac_sparsity=np.eye(3))
    with pytest.raises(InputError, match="must be callable"):
        odenet.solve(robertson, y0, t, method="radau_iia5", jac="robertson_jac")
    with pytest.raises(InputError, match=r"\[3, 3\] pattern"):
        odenet.solve(robertson, y0, t, method="radau_iia5", jac_sparsity=np.eye(4, dtype=bool))
    with pytest.raises(InputError, match="boolean pattern"):
        odenet.solve(robertson, y0, t, method="radau_iia5", jac_sparsity=[["a"] * 3] * 3)
    with pytest.raises(VectorFieldError, match=r"returned shape \(2, 2\)"):
        odenet.solve(robertson, y0, t, method="radau_iia5", jac=lambda t, y: torch.eye(2))
    with pytest.raises(VectorFieldError, match="NaN"):
        odenet.solve(
            robertson, y0, t, method="kvaerno5", jac=lambda t, y: torch.full((3, 3), np.nan)
        )
    # before: a raw TypeError from numpy (None) and a dropped imaginary part (complex)
    with pytest.raises(VectorFieldError, match="returned NoneType"):
        odenet.solve(robertson, y0, t, method="bdf", jac=lambda t, y: None)
    with pytest.raises(VectorFieldError, match="complex"):
        odenet.solve(robertson, y0, t, method="radau_iia5", jac=lambda t, y: np.eye(3) * 1j)


def test_a_wrong_jacobian_fails_loudly_and_the_failure_names_it():
    # a sign-flipped J: Newton diverges step after step (never a wrong answer with
    # status ok); the step-budget failure then says where to look
    f = lambda t, y: torch.stack([-1e4 * y[0] + y[1], -y[1]])  # noqa: E731
    J = torch.tensor([[-1e4, 1.0], [0.0, -1.0]], dtype=D)
    y0, t = torch.ones(2, dtype=D), torch.tensor([0.0, 10.0], dtype=D)
    with pytest.raises(odenet.MaxStepsError, match=r"Newton failed \d+ times .* your `jac`"):
        odenet.solve(f, y0, t, method="radau_iia5", jac=lambda t, y: -J, max_steps=500)
    with pytest.raises(odenet.MaxStepsError) as plain:
        odenet.solve(f, y0, t, method="radau_iia5", rtol=1e-12, atol=1e-14, max_steps=5)
    assert "jac" not in str(plain.value)
    good = odenet.solve(f, y0, t, method="radau_iia5", jac=lambda t, y: J)
    assert good.success
