"""Jacobians ``J = ∂f/∂y`` for the implicit methods, and the LU factors built from them.

One place for everything the Newton iterations (:mod:`odenet._newton`, RADAU5 in
:mod:`odenet._radau`, the DIRKs and the multistep methods through them) need to know
about ``J``:

* **Autograd** (the default): :func:`batched_jacobian`, ``[K, n, n]`` with one
  ``n × n`` block per independent row of the state.  The mode rule: a Jacobian
  costs one product per *column group* in forward mode and one per *row group* in
  reverse mode.  A dense square ``J`` needs ``n`` products either way and is taken
  in reverse mode (one taped evaluation of ``f`` and one batched backward of ``n``
  cotangents; it also works for fields whose ops lack forward derivatives).  With a
  sparsity pattern the rows and the columns fall into ``c ≪ n`` groups
  (:func:`group_columns`; Curtis, Powell & Reid 1974, as scipy's ``num_jac`` but
  with exact derivatives instead of differences) and :func:`compressed_jacobian`
  takes one product per group: reverse mode unless the rows need several times as
  many groups as the columns (:data:`FORWARD_PRODUCT_COST`), because torch's forward
  mode is slow where it should be cheap: an op between a dual tensor and an operand
  without a tangent (a Python number, a constant tensor, a layer's weight) goes
  through torch's Python reference kernels (torch 2.13, 500 entries: 70–155 µs for
  ``z + 1.0``, ``2.0 * z`` or ``c * z`` against 1–1.5 µs plain and 4 µs for ``z * z``
  with its tangent; ``W @ z`` with ``W`` 500 × 500 215 µs against 31 µs), and fields
  are full of them: a Jacobian of the 1-D Brusselator with 500 states (6 groups
  either way) took 9.7–10.5 ms in forward mode and 0.36–0.47 ms in reverse
  (``studies/benchmarks/sparse_jacobian.py``, two runs).
* **A user Jacobian** ``jac(t, y)`` (:func:`user_jacobian`): a dense tensor/array,
  a ``scipy.sparse`` matrix or a torch sparse tensor.  It is used for the Newton
  iteration only; gradients of the solution still come from ``f``.
* **The linear algebra**: :func:`lu_shifted` (``σI − J``, RADAU5's real and
  complex systems) and :func:`lu_kron` (``I − hA ⊗ J``, the stage systems of the
  other implicit methods), each returning an object with ``solve(rhs)``.  Dense
  ``J``: batched torch LU (``lu_factor_ex``).  Sparse ``J`` (one system on the CPU,
  ``n`` ≥ :data:`SPARSE_MIN_N` with a pattern): SuperLU (``scipy.sparse.linalg.splu``),
  as scipy's Radau/BDF do with ``jac_sparsity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.autograd.forward_ad as fwAD
from scipy.sparse.linalg import splu

from odenet._errors import VectorFieldError

# Below this size a dense torch LU beats SuperLU even on a banded pattern (splu's
# per-call overhead and the numpy round trip dominate).  Measured on a 1-D
# Brusselator-like pattern, one real + one complex factorisation and 6 solves each,
# SuperLU / dense time: 2.0 at n = 128, 1.1 at n = 192, 0.10 at n = 256.
SPARSE_MIN_N = 200

# What one forward-mode product (an evaluation of f on dual numbers) costs in reverse-mode
# products (one cotangent of a batched backward) when choosing the mode of a compressed
# Jacobian.  Measured per product on the Brusselators (sparse_jacobian.py, two runs):
# 1.6–1.7 ms against 0.06–0.08 ms in 1-D, 1.8–1.9 ms against 0.09–0.1 ms in 2-D,
# 18–27× (torch's slow path for ops between a dual tensor and an operand without a
# tangent, module docstring); a field without such ops costs about the same either
# way.  4 leans to reverse without ruling forward out: a dense column (2 column groups,
# n row groups) still goes forward.
FORWARD_PRODUCT_COST = 4

# --- autograd --------------------------------------------------------------------------


def batched_jacobian(g, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``J[k] = ∂g(s, y)[k] / ∂y[k]`` for a field whose rows are independent systems.

    Parameters
    ----------
    g : callable ``(s [K], y [K, n]) -> [K, n]``
    s : [K] times; y : [K, n] states.

    Returns
    -------
    Tensor [K, n, n] (no autograd history).  Reverse mode: one evaluation of ``g``
    and one batched vector–Jacobian product per state component (see the module
    docstring for the mode rule).
    """
    K, n = y.shape
    eye = torch.eye(n, dtype=y.dtype, device=y.device)
    return vector_jacobian_products(g, s, y, eye[:, None, :].expand(n, K, n)).permute(1, 0, 2)


def vector_jacobian_products(g, s: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor):
    """``seeds[c, k] · ∂g(s, y)[k] / ∂y[k]`` for every seed ``c`` and row ``k``.

    Parameters
    ----------
    g : callable ``(s [K], y [K, n]) -> [K, n]``, rows independent systems.
    s : [K]; y : [K, n]; seeds : [C, K, n] cotangents.

    Returns
    -------
    Tensor [C, K, n] (no autograd history): one taped evaluation of ``g`` and one
    batched backward of the ``C`` cotangents (one backward each where an op of ``g``
    has no batching rule).
    """
    C, K, n = seeds.shape
    with torch.enable_grad():
        yv = y.detach().requires_grad_(True)
        out = g(s.detach(), yv)
        if not out.requires_grad:  # g does not depend on y at all
            return torch.zeros(C, K, n, dtype=y.dtype, device=y.device)
        try:
            (products,) = torch.autograd.grad(out, yv, seeds, is_grads_batched=True)
        except RuntimeError:  # an op in g without a batching rule: one vjp per seed
            products = torch.stack(
                [torch.autograd.grad(out, yv, seeds[c], retain_graph=True)[0] for c in range(C)]
            )
    return products.detach()


# --- sparsity: row and column groups, compressed Jacobians ---------------------------


def group_columns(pattern) -> np.ndarray:
    """Greedy column colouring: ``groups[j]`` such that no two columns of one group
    have a nonzero in the same row (structurally orthogonal columns).

    Columns are taken in order and each gets the smallest group not used by a
    column it shares a row with (the greedy distance-2 colouring; scipy's
    ``group_columns`` is the same Curtis–Powell–Reid idea).  A banded pattern with
    ``l`` sub- and ``u`` super-diagonals gets at most ``l + u + 1`` groups.

    Parameters
    ----------
    pattern : bool array-like or scipy.sparse matrix, [m, n]

    Returns
    -------
    int ndarray [n], groups numbered ``0 … c−1``.
    """
    P = sp.csc_matrix(pattern, dtype=bool)
    P.eliminate_zeros()
    R = P.tocsr()
    n = P.shape[1]
    groups = np.full(n, -1, dtype=np.int64)
    for j in range(n):
        rows = P.indices[P.indptr[j] : P.indptr[j + 1]]
        if rows.size:
            nbrs = np.concatenate([R.indices[R.indptr[i] : R.indptr[i + 1]] for i in rows])
            used = np.unique(groups[nbrs])
            used = used[used >= 0]
            # the smallest group number not in `used` (sorted, non-negative)
            free = np.nonzero(used != np.arange(used.size))[0]
            groups[j] = free[0] if free.size else used.size
        else:  # an all-zero column fits any group
            groups[j] = 0
    return groups


@dataclass
class Sparsity:
    """A validated pattern ``[n, n]`` with its column and row groups (built once per
    solve)."""

    n: int
    indptr: np.ndarray  # CSC structure of the pattern
    indices: np.ndarray  # row of each stored entry
    cols: np.ndarray  # column of each stored entry
    groups: np.ndarray  # [n] column group (forward mode)
    n_groups: int
    row_groups: np.ndarray  # [n] row group (reverse mode): the column groups of Pᵀ
    n_row_groups: int

    @classmethod
    def from_pattern(cls, pattern) -> Sparsity:
        P = sp.csc_matrix(pattern, dtype=bool)
        P.eliminate_zeros()
        P.sort_indices()
        n = P.shape[1]
        groups = group_columns(P)
        row_groups = group_columns(P.T)
        cols = np.repeat(np.arange(n), np.diff(P.indptr))

        def count(g):
            return int(g.max()) + 1 if n else 0

        return cls(
            n, P.indptr.copy(), P.indices.copy(), cols,
            groups, count(groups), row_groups, count(row_groups),
        )  # fmt: skip

    @property
    def reverse(self) -> bool:
        """Whether :func:`compressed_jacobian` takes reverse mode: unless the column
        groups, weighted by :data:`FORWARD_PRODUCT_COST`, are still fewer than the row
        groups."""
        return self.n_row_groups <= FORWARD_PRODUCT_COST * self.n_groups

    @property
    def products(self) -> int:
        """Reverse-mode products per Jacobian (:func:`compressed_jacobian`; 0 in forward
        mode, whose dual evaluations of ``f`` count as evaluations)."""
        return self.n_row_groups if self.reverse else 0

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def sparse_lu(self, K: int, device) -> bool:
        """Whether this solve factorises with SuperLU (one system on the CPU, large n)."""
        return K == 1 and torch.device(device).type == "cpu" and self.n >= SPARSE_MIN_N


class SparseJac:
    """``J`` of one system as a scipy CSC matrix (the layout SuperLU factorises)."""

    def __init__(self, A):
        self.A = sp.csc_matrix(A)
        n = self.A.shape[0]
        self.shape = (1, n, n)

    def dense(self, dtype, device) -> torch.Tensor:
        return torch.as_tensor(self.A.toarray(), dtype=dtype, device=device)[None]


def _forward_compressed(g, s, y, sparsity: Sparsity, rows, cols) -> torch.Tensor:
    """The pattern's entries [K, nnz] from one dual evaluation of ``g`` per column group
    (:func:`batched_jacobian`'s where an op of ``g`` has no forward derivative)."""
    K, n = y.shape
    sd, yd = s.detach(), y.detach()
    groups = torch.as_tensor(sparsity.groups, device=y.device)
    try:
        # one dual evaluation per group (not vmap over the seeds: batching the
        # tangents of ops such as torch.cat goes through decompositions that import
        # torch._dynamo, seconds on first use)
        JV = torch.empty(sparsity.n_groups, K, n, dtype=y.dtype, device=y.device)
        with torch.no_grad(), fwAD.dual_level():
            for c in range(sparsity.n_groups):
                seed = (groups == c).to(y.dtype).expand(K, n)
                out = g(sd, fwAD.make_dual(yd, seed))
                tangent = fwAD.unpack_dual(out).tangent
                JV[c] = 0.0 if tangent is None else tangent  # None: g ignores y
        # entry (i, j) of J is row i of the product with j's group seed
        return JV[groups[cols], :, rows].T  # [K, nnz]
    except (RuntimeError, NotImplementedError):  # an op without a forward derivative
        return batched_jacobian(g, s, y)[:, rows, cols]


def _reverse_compressed(g, s, y, sparsity: Sparsity, rows, cols) -> torch.Tensor:
    """The pattern's entries [K, nnz] from one taped evaluation of ``g`` and one
    vector–Jacobian product per row group."""
    K, n = y.shape
    groups = torch.as_tensor(sparsity.row_groups, device=y.device)
    seeds = groups == torch.arange(sparsity.n_row_groups, device=y.device)[:, None]
    VJ = vector_jacobian_products(g, s, y, seeds.to(y.dtype)[:, None, :].expand(-1, K, n))
    # entry (i, j) is entry j of the product with i's group seed: no other row of that
    # group has a nonzero in column j
    return VJ[groups[rows], :, cols].T  # [K, nnz]


def compressed_jacobian(g, s: torch.Tensor, y: torch.Tensor, sparsity: Sparsity):
    """``J`` from one product per row group (reverse mode) or per column group
    (forward mode) of ``sparsity``, whichever costs less (:attr:`Sparsity.reverse`).

    Parameters
    ----------
    g : callable ``(s [K], y [K, n]) -> [K, n]``; s [K]; y [K, n].
    sparsity : :class:`Sparsity` of the per-row ``[n, n]`` Jacobian.

    Returns
    -------
    :class:`SparseJac` when :meth:`Sparsity.sparse_lu` says so, else a dense
    Tensor [K, n, n] (entries outside the pattern are zero).  Reverse mode costs one
    taped evaluation of ``g`` and ``sparsity.n_row_groups`` vector–Jacobian products;
    forward mode ``sparsity.n_groups`` evaluations of ``g`` on dual numbers (a field
    that forward mode cannot differentiate falls back to :func:`batched_jacobian`).
    """
    K, n = y.shape
    rows = torch.as_tensor(sparsity.indices, device=y.device)
    cols = torch.as_tensor(sparsity.cols, device=y.device)
    mode = _reverse_compressed if sparsity.reverse else _forward_compressed
    values = mode(g, s, y, sparsity, rows, cols).detach()
    if sparsity.sparse_lu(K, y.device):
        A = sp.csc_matrix(
            (values[0].cpu().numpy(), sparsity.indices, sparsity.indptr), shape=(n, n)
        )
        return SparseJac(A)
    J = torch.zeros(K, n, n, dtype=y.dtype, device=y.device)
    J[:, rows, cols] = values
    return J


# --- a user Jacobian ----------------------------------------------------------------------


def user_jacobian(
    jac, *, shape, per_sample: bool, direction: torch.Tensor, sparsity, time_dtype=None
):
    """Wrap the user's ``jac(t, y)`` as ``jac(s [K], y [K, n])`` in the internal layout.

    ``jac`` receives what ``f`` receives (user time, user-shaped ``y``) and returns the
    ``[n, n]`` matrix ``∂f/∂y`` of the flattened state (per-sample grids: ``[B, n, n]``)
    as a tensor, a numpy array, a ``scipy.sparse`` matrix or a torch sparse tensor; a
    constant matrix may be given instead of a callable.  Backward integration
    (``s = −t``) flips its sign as it flips ``f``'s.  ``time_dtype``: the dtype of the
    ``t`` that ``f`` receives (None: the internal time's).

    Returns a callable giving a dense Tensor [K, n, n] or a :class:`SparseJac` (one
    system on the CPU with a sparse result or a large ``sparsity`` pattern).
    """
    K = direction.shape[0]
    n = int(np.prod(shape[1:])) if per_sample else int(np.prod(shape))
    row_shape = (K, *shape[1:]) if per_sample else tuple(shape)
    flip = bool((direction < 0).any())
    const = None if callable(jac) else jac

    def call(s, y):
        if const is not None:
            out = const
        else:
            t = s * direction if flip else s
            if time_dtype is not None:
                t = t.to(time_dtype)
            out = jac(t if per_sample else t[0], y.reshape(row_shape))
        sparse_lu = (
            K == 1
            and y.device.type == "cpu"
            and (
                sp.issparse(out)
                or (isinstance(out, torch.Tensor) and out.layout != torch.strided)
                or (sparsity is not None and sparsity.sparse_lu(K, y.device))
            )
        )
        if isinstance(out, torch.Tensor) and out.layout != torch.strided:
            out = out.to_dense() if not sparse_lu else _torch_sparse_to_scipy(out)
        if sp.issparse(out):
            if out.shape != (n, n):
                raise VectorFieldError(
                    f"the Jacobian `jac` returned a sparse matrix of shape {out.shape}; "
                    f"expected {(n, n)} (n = {n} state components)."
                )
            if sparse_lu:
                return SparseJac(out * (-1.0 if flip else 1.0))
            out = out.toarray()
        J = _as_real_matrix(out)
        want = (K, n, n) if per_sample else (n, n)
        if tuple(J.shape) != want and not (not per_sample and tuple(J.shape) == (1, n, n)):
            raise VectorFieldError(
                f"the Jacobian `jac` returned shape {tuple(J.shape)}; expected {want} "
                f"(∂f/∂y of the flattened state, n = {n})."
            )
        J = J.detach().to(dtype=y.dtype, device=y.device).reshape(K, n, n)
        if not bool(torch.isfinite(J).all()):
            raise VectorFieldError(
                "the Jacobian `jac` returned NaN or inf at t = "
                f"{(s * direction).tolist()}; check it against f (or drop `jac`)."
            )
        if flip:
            J = J * direction.to(J.dtype)[:, None, None]
        if sparse_lu:
            return SparseJac(sp.csc_matrix(J[0].cpu().numpy()))
        return J

    return call


def _as_real_matrix(out) -> torch.Tensor:
    """The user's Jacobian as a real tensor, or a :class:`VectorFieldError` saying what
    came back instead (None, a complex or non-numeric array)."""
    if not isinstance(out, torch.Tensor):
        arr = np.asarray(out) if out is not None else None
        if arr is None or arr.dtype.kind not in "biufc":
            raise VectorFieldError(
                f"the Jacobian `jac` returned {type(out).__name__}"
                f"{'' if arr is None else f' of dtype {arr.dtype}'}; it must return the "
                "matrix ∂f/∂y (a tensor, a numpy array or a scipy sparse matrix)."
            )
        out = torch.as_tensor(arr)
    if out.is_complex():
        raise VectorFieldError(
            "the Jacobian `jac` returned a complex matrix; odenet solves real systems "
            "(split a complex state into its real and imaginary parts)."
        )
    return out


def _torch_sparse_to_scipy(T: torch.Tensor):
    C = T.detach().to_sparse_coo().coalesce().cpu()
    i = C.indices().numpy()
    return sp.csc_matrix((C.values().double().numpy(), (i[0], i[1])), shape=tuple(C.shape))


# --- LU factors ---------------------------------------------------------------------------


class DenseLU:
    """LU factors of a batch ``M [K, m, m]`` (torch).  A singular ``M`` (``I − hγJ`` at
    an eigenvalue of ``J`` equal to ``1/(hγ)``) is not an error here: its solves give
    inf/NaN, which fails that row's Newton iteration, and the step is retried smaller."""

    def __init__(self, M: torch.Tensor):
        self.LU, self.pivots, _ = torch.linalg.lu_factor_ex(M)
        self.shape = (M.shape[0], M.shape[-1])

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ rhs`` for ``rhs`` [K, m] (same dtype as ``M``)."""
        return torch.linalg.lu_solve(self.LU, self.pivots, rhs.unsqueeze(-1)).squeeze(-1)


# The share of a sparse matrix's entries whose transpose is missing below which its
# structure counts as symmetric for the fill-reducing ordering (see SparseLU)
ASYMMETRY = 0.05


class SparseLU:
    """SuperLU factors of one sparse ``M [m, m]``; a singular ``M`` solves to NaN
    (a Newton failure, as :class:`DenseLU`).

    The fill-reducing ordering is SuperLU's minimum degree on ``Mᵀ + M`` for a
    structurally symmetric ``M`` (the usual stencil / reaction–diffusion pattern:
    about half the fill of scipy's default COLAMD, and half the factorisation time, on
    the 2-D Brusselator), COLAMD otherwise.  Nearly symmetric counts: at most
    :data:`ASYMMETRY` of the entries without their transpose, because a Jacobian's
    exact zeros leave the matrix (the 2-D Brusselator at t = 0: 64 of 12256, and
    COLAMD's ordering there doubled the fill of 20 of 126 factorisations at rtol 1e-6:
    ``studies/benchmarks/sparse_complex_lu.py --n 32 --orderings 1e-6``).
    """

    def __init__(self, M, pivot_threshold: float = 1.0):
        M = sp.csc_matrix(M)
        self.shape = (1, M.shape[0])
        S = M.copy()
        S.data[:] = 1
        symmetric = (S != S.T).nnz <= ASYMMETRY * S.nnz
        spec = "MMD_AT_PLUS_A" if symmetric else "COLAMD"
        try:
            self.lu = splu(M, permc_spec=spec, diag_pivot_thresh=pivot_threshold)
        except RuntimeError:  # "Factor is exactly singular"
            self.lu = None

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ rhs`` for ``rhs`` [1, m]."""
        if self.lu is None:
            return torch.full_like(rhs, float("nan"))
        x = self.lu.solve(rhs[0].detach().cpu().numpy())
        return torch.as_tensor(x, dtype=rhs.dtype, device=rhs.device)[None]


class SparseComplexLU:
    """SuperLU factors of ``σ I − J`` for a complex ``σ = a + ib`` (RADAU5's complex
    system), in complex arithmetic (``zgstrf``, what scipy's Radau calls).

    Threshold pivoting (a diagonal pivot is kept while it is at least half the
    column's largest entry), so the fill-reducing symmetric ordering survives: the
    diagonal ``σ − J_ii`` has modulus at least ``b``.

    Until session 46 this system was factorised as the real ``2n × 2n`` block
    ``[[aI − J, −bI], [bI, aI − J]]``, after a measurement that put ``zgstrf`` 90×
    slower.  Not so on scipy 1.10.1 or 1.17.1: on the 2-D Brusselator (n = 2048, ``J``
    at t = 0 and 1.5, h = 1e-1 … 1e-5) the complex factorisation takes 6.4–8.0 ms with
    this ordering, the real block 18–20 ms, for residuals of 1e-15–1e-14
    (``studies/benchmarks/stiff_results.md``, session 46).
    """

    def __init__(self, J, sigma: complex):
        n = J.shape[0]
        self.lu = SparseLU(complex(sigma) * sp.identity(n, format="csc") - J, pivot_threshold=0.5)
        self.shape = (1, n)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ rhs`` for complex ``rhs`` [1, n]."""
        return self.lu.solve(rhs)


def lu_shifted(J, shift: torch.Tensor):
    """LU factors of ``σ_k I − J_k``: ``J`` [K, n, n] or :class:`SparseJac`, ``shift``
    [K] real or complex (the result has ``shift``'s dtype)."""
    if isinstance(J, SparseJac):
        n = J.A.shape[0]
        if shift.is_complex():
            return SparseComplexLU(J.A, complex(shift[0]))
        return SparseLU(float(shift[0]) * sp.identity(n, format="csc") - J.A)
    n = J.shape[-1]
    eye = torch.eye(n, dtype=shift.dtype, device=J.device)
    return DenseLU(shift[:, None, None] * eye - J.to(shift.dtype))


def lu_kron(hA: torch.Tensor, J):
    """LU factors of ``I − (hA ⊗ J)`` for ``hA`` [K, S, S] and ``J`` [K, n, n], per-stage
    ``[K, S, n, n]`` (block ``(i, j)`` = ``hA_ij J(Z_j)``) or :class:`SparseJac`."""
    K, S, _ = hA.shape
    if isinstance(J, SparseJac):
        n = J.A.shape[0]
        M = sp.identity(S * n, format="csc") - sp.kron(hA[0].detach().cpu().numpy(), J.A)
        return SparseLU(M)
    n = J.shape[-1]
    if J.dim() == 3:
        blocks = hA[:, :, :, None, None] * J[:, None, None, :, :]
    else:
        blocks = hA[:, :, :, None, None] * J[:, None, :, :, :]
    M = -blocks.permute(0, 1, 3, 2, 4).reshape(K, S * n, S * n)
    return DenseLU(M + torch.eye(S * n, dtype=M.dtype, device=M.device))


__all__ = [
    "FORWARD_PRODUCT_COST",
    "SPARSE_MIN_N",
    "DenseLU",
    "SparseComplexLU",
    "SparseJac",
    "SparseLU",
    "Sparsity",
    "batched_jacobian",
    "compressed_jacobian",
    "group_columns",
    "lu_kron",
    "lu_shifted",
    "user_jacobian",
    "vector_jacobian_products",
]
