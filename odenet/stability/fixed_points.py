"""Stability of equilibria: eigenvalues of the Jacobian, and Gershgorin discs as a certificate.

* Map `x ↦ g(x)`, fixed point `g(x*) = x*`: asymptotically stable if the
  spectral radius of `J = ∂g/∂x (x*)` is < 1.
* Field `x' = f(t, x)`, equilibrium `f(x*) = 0`: stable if every eigenvalue of
  `J = ∂f/∂x (x*)` has negative real part.

Every eigenvalue lies in the union of the Gershgorin discs
`{z : |z − J_ii| ≤ Σ_{j≠i} |J_ij|}` (rows; the same with columns), so discs inside
the unit disc (map) or the open left half-plane (field) certify stability
without computing a single eigenvalue.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from odenet.stability._errors import StabilityInputError, check_positive_int
from odenet.stability.linearize import jacobian


def gershgorin_discs(M) -> tuple[np.ndarray, np.ndarray]:
    """Row Gershgorin discs of a square matrix: `centers [d]` (complex), `radii [d]`."""
    M = np.asarray(torch.as_tensor(M).detach().cpu()) if isinstance(M, torch.Tensor) else M
    M = np.asarray(M)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise StabilityInputError(f"`M` must be a square matrix, got shape {M.shape}.")
    c = np.diagonal(M).astype(complex)
    r = np.abs(M).sum(axis=1) - np.abs(np.diagonal(M))
    return c, r


def _certified(M: np.ndarray, kind: str) -> bool:
    for A in (M, M.T):  # rows or columns: either set of discs contains the spectrum
        c, r = gershgorin_discs(A)
        ok = np.all(np.abs(c) + r < 1.0) if kind == "map" else np.all(c.real + r < 0.0)
        if ok:
            return True
    return False


@dataclass(frozen=True)
class FixedPointStability:
    """Stability of an equilibrium.

    Attributes
    ----------
    point : Tensor; jacobian : ndarray [d, d]; eigenvalues : ndarray [d] complex;
    kind : "map" or "flow";
    rate : spectral radius (map) or spectral abscissa max Re λ (flow);
    verdict : "stable" | "marginal" | "unstable";
    gershgorin_centers, gershgorin_radii : row discs;
    certified : bool, the Gershgorin discs alone prove stability.
    """

    point: torch.Tensor
    jacobian: np.ndarray
    eigenvalues: np.ndarray
    kind: str
    rate: float
    verdict: str
    gershgorin_centers: np.ndarray
    gershgorin_radii: np.ndarray
    certified: bool

    @property
    def stable(self) -> bool:
        return self.verdict == "stable"


def fixed_point_stability(
    g: Callable, x_star: torch.Tensor, *, kind: str = "map", tol: float = 1e-8
) -> FixedPointStability:
    """Classify an equilibrium of a map `g(x)` or a vector field `g(t, x)`.

    Parameters
    ----------
    g : map x -> x' (kind="map") or field (t, x) -> dx/dt (kind="flow").
    x_star : Tensor, the equilibrium (checked: residual ≤ tol (1 + |x*|)).
    kind : "map" or "flow".
    tol : float, residual tolerance and the width of the "marginal" band.

    Returns
    -------
    FixedPointStability

    Examples
    --------
    >>> import torch
    >>> from odenet.stability import fixed_point_stability
    >>> fp = fixed_point_stability(lambda t, x: -x + x**3, torch.zeros(1, dtype=torch.float64),
    ...                            kind="flow")
    >>> fp.verdict, fp.rate
    ('stable', -1.0)
    """
    if kind not in ("map", "flow"):
        raise StabilityInputError(f"`kind` must be 'map' or 'flow', got {kind!r}.")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise StabilityInputError(f"`tol` must be a finite number ≥ 0, got {tol!r}.")
    x = torch.as_tensor(x_star, dtype=torch.float64).detach()
    if not bool(torch.isfinite(x).all()):
        raise StabilityInputError(
            "`x_star` has NaN or infinite entries; pass a finite fixed point "
            "(e.g. from find_fixed_point)."
        )
    h = g if kind == "map" else (lambda y: g(torch.zeros((), dtype=y.dtype), y))
    with torch.no_grad():
        res = h(x) - x if kind == "map" else h(x)
    resid = float(res.abs().max())
    # written so that a NaN residual fails the test too
    if not resid <= tol * (1.0 + float(x.abs().max())):
        what = "g(x*) − x*" if kind == "map" else "f(x*)"
        raise StabilityInputError(
            f"`x_star` is not an equilibrium: max |{what}| = {resid:.3g} > tol = {tol:g}; "
            "pass a fixed point (e.g. from find_fixed_point) or a larger `tol`."
        )
    J = jacobian(h, x).detach().cpu().numpy().reshape(x.numel(), x.numel())
    lam = np.linalg.eigvals(J)
    if kind == "map":
        rate = float(np.abs(lam).max())
        verdict = "stable" if rate < 1 - tol else ("unstable" if rate > 1 + tol else "marginal")
    else:
        rate = float(lam.real.max())
        verdict = "stable" if rate < -tol else ("unstable" if rate > tol else "marginal")
    c, r = gershgorin_discs(J)
    return FixedPointStability(x, J, lam, kind, rate, verdict, c, r, _certified(J, kind))


def find_fixed_point(
    g: Callable, x0: torch.Tensor, *, kind: str = "map", tol: float = 1e-12, max_iter: int = 50
) -> torch.Tensor:
    """Newton's method for `g(x) = x` (map) or `f(x) = 0` (flow), Jacobian by autodiff.

    Examples
    --------
    >>> import torch
    >>> from odenet.stability import find_fixed_point
    >>> find_fixed_point(torch.cos, torch.tensor([1.0], dtype=torch.float64))   # x = cos x
    tensor([0.7391], dtype=torch.float64)
    """
    if kind not in ("map", "flow"):
        raise StabilityInputError(f"`kind` must be 'map' or 'flow', got {kind!r}.")
    max_iter = check_positive_int("max_iter", max_iter)
    x = torch.as_tensor(x0, dtype=torch.float64).detach().clone()
    shape = x.shape

    def F(y):
        if kind == "map":
            return g(y) - y
        return g(torch.zeros((), dtype=y.dtype), y)

    for _ in range(max_iter):
        with torch.no_grad():
            r = F(x).reshape(-1)
        if float(r.abs().max()) <= tol * (1.0 + float(x.detach().abs().max())):
            return x
        J = jacobian(F, x).reshape(r.numel(), r.numel())
        try:
            x = x - torch.linalg.solve(J, r).reshape(shape)
        except RuntimeError:  # torch.linalg.LinAlgError
            raise StabilityInputError(
                "Newton's method met a singular Jacobian of the equilibrium equation at "
                f"x = {x.tolist()}; start from another `x0`."
            ) from None
    raise StabilityInputError(
        f"Newton's method did not find an equilibrium in {max_iter} iterations from `x0`; "
        "start closer to it or raise `max_iter`."
    )
