"""Mean-field signal propagation through a deep random network (initialization).

For `h_{l+1} = W_l φ(h_l) + b_l` with `W_ij ~ N(0, σ_w²/n)`, `b_i ~ N(0, σ_b²)`,
wide layers make the pre-activations Gaussian with variance `q_l`:

    q_{l+1} = σ_w² E_{z~N(0,1)}[φ(√q_l z)²] + σ_b²,
    χ_l     = σ_w² E_{z~N(0,1)}[φ'(√q_l z)²],

and the backpropagated gradient `δ_l = ∂L/∂h_l` obeys
`E‖δ_l‖² = χ_l E‖δ_{l+1}‖²`: per-layer gradient-norm ratio `√χ_l`.
`χ = 1` is the critical line (edge of chaos): ReLU with σ_w² = 2 (He) and tanh
with σ_w² = 1, σ_b = 0 (Xavier-like; fixed point q* = 0).
Expectations are quadratures (:func:`gaussian_mean`): Gauss–Hermite for `q ≤ 1`,
composite Gauss–Legendre in `u = √q z` above, where the integrands' features are
narrower than the Hermite nodes' spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from odenet.stability._errors import StabilityInputError, check_positive_int

_ACT = {
    "tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2, torch.tanh),
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float), torch.relu),
    "linear": (lambda x: x, lambda x: np.ones_like(x), lambda x: x),
}


def _activation(name: str):
    if name not in _ACT:
        raise StabilityInputError(f"`activation` must be one of {sorted(_ACT)}, got {name!r}.")
    return _ACT[name]


_Z, _W = np.polynomial.hermite_e.hermegauss(150)  # even: no node at the kink z = 0 of ReLU
_W = _W / _W.sum()  # E[g(z)] = Σ w_i g(z_i), z ~ N(0, 1)
_X, _V = np.polynomial.legendre.leggauss(10)  # one Gauss–Legendre panel on [−1, 1]


def _panels(a: float, b: float, width: float):
    """Nodes and weights of composite 10-point Gauss–Legendre on ``[a, b]``."""
    n = max(1, int(np.ceil((b - a) / width)))
    left = a + (b - a) * np.arange(n) / n
    half = (b - a) / (2 * n)
    return (left[:, None] + half * (_X + 1)).ravel(), np.tile(half * _V, n)


def gaussian_mean(g, q: float) -> float:
    """``E[g(√q z)]``, ``z ~ N(0, 1)``, for ``g`` whose features lie at ``|u| ≲ 1``
    (tanh, ReLU's kink, ...).

    For ``q ≤ 1`` Gauss–Hermite in ``z``.  For larger ``q`` the integrand in ``z``
    has features of width ``1/√q`` (tanh's sech⁴ spike), which 150 Hermite nodes
    spaced ~0.18 apart near 0 miss (χ of tanh was 37 % low at q = 50, 73 % at
    q = 100); it is integrated in ``u = √q z`` instead, against the density of
    ``N(0, q)``: panels of width 1/4 on ``|u| ≤ 30``, of width ``√q/4`` out to
    ``9√q`` (where the density is below 1e-17 of its peak).
    """
    s = float(np.sqrt(_variance("q", q)))
    if s <= 1.0:
        return float(_W @ g(s * _Z))
    inner = min(30.0, 9.0 * s)
    u, w = _panels(0.0, inner, 0.25)
    if inner < 9.0 * s:
        uo, wo = _panels(inner, 9.0 * s, s / 4)
        u, w = np.concatenate([u, uo]), np.concatenate([w, wo])
    # mirrored: u = 0 (ReLU's kink) is a panel end
    u, w = np.concatenate([-u[::-1], u]), np.concatenate([w[::-1], w])
    density = np.exp(-0.5 * (u / s) ** 2) / (s * np.sqrt(2 * np.pi))
    return float((w * density) @ g(u))


def variance_map(activation: str, sigma_w2: float, sigma_b2: float = 0.0):
    """The layer-to-layer variance map `q -> σ_w² E[φ(√q z)²] + σ_b²`."""
    phi, _, _ = _activation(activation)
    sigma_w2 = _variance("sigma_w2", sigma_w2, positive=True)
    sigma_b2 = _variance("sigma_b2", sigma_b2)
    return lambda q: sigma_w2 * gaussian_mean(lambda u: phi(u) ** 2, q) + sigma_b2


def chi(activation: str, sigma_w2: float, q: float) -> float:
    """`χ = σ_w² E[φ'(√q z)²]`: squared gradient-norm ratio of one layer."""
    _, dphi, _ = _activation(activation)
    sigma_w2 = _variance("sigma_w2", sigma_w2, positive=True)
    return sigma_w2 * gaussian_mean(lambda u: dphi(u) ** 2, q)


@dataclass(frozen=True)
class MeanField:
    """Mean-field prediction through `depth` layers.

    Attributes
    ----------
    q : ndarray [depth + 1], pre-activation variance per layer.
    chi : ndarray [depth], χ_l.
    gradient_ratio : ndarray [depth], predicted ‖δ_l‖ / ‖δ_{l+1}‖ = √χ_l.
    """

    q: np.ndarray
    chi: np.ndarray

    @property
    def gradient_ratio(self) -> np.ndarray:
        return np.sqrt(self.chi)


def _variance(name: str, v, positive: bool = False) -> float:
    """``v`` as a float if it is a finite variance (``> 0`` with ``positive``), else raise."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not (np.isfinite(x) and (x > 0 if positive else x >= 0)):
        bound = "> 0" if positive else "≥ 0"
        raise StabilityInputError(f"`{name}` must be a finite variance {bound}, got {v!r}.")
    return x


def mean_field(
    activation: str, sigma_w2: float, depth: int, q0: float = 1.0, sigma_b2: float = 0.0
) -> MeanField:
    """Iterate the variance map `depth` times from `q0` and record `χ` per layer.

    Layer `l` (0-based) maps `h_l` (variance `q_l`) to `h_{l+1}`; `χ_l` uses `q_l`.

    Examples
    --------
    >>> from odenet.stability import mean_field
    >>> mf = mean_field("tanh", 1.0, depth=10)     # σ_w² = 1: the variance shrinks with depth
    >>> round(float(mf.q[-1]), 4), round(float(mf.chi[-1]), 4)
    (0.0522, 0.9028)
    """
    depth = check_positive_int("depth", depth)
    sigma_w2 = _variance("sigma_w2", sigma_w2, positive=True)
    q0, sigma_b2 = _variance("q0", q0), _variance("sigma_b2", sigma_b2)
    V = variance_map(activation, sigma_w2, sigma_b2)
    q = [float(q0)]
    for _ in range(depth):
        q.append(V(q[-1]))
    c = [chi(activation, sigma_w2, ql) for ql in q[:-1]]
    return MeanField(np.array(q), np.array(c))


def measured_gradient_ratios(
    activation: str,
    sigma_w2: float,
    depth: int,
    width: int,
    *,
    q0: float = 1.0,
    sigma_b2: float = 0.0,
    n_nets: int = 4,
    seed: int = 0,
) -> MeanField:
    """Measure `q_l` and the gradient-norm ratios of random nets by autograd.

    `n_nets` random networks (float64) with input `h_0 ~ N(0, q0)`; the loss is
    `g · h_depth` with `g ~ N(0, I)`; returns the averages of `mean(h_l²)`
    and of `‖δ_l‖² / ‖δ_{l+1}‖²` (as `chi`) per layer.
    """
    depth = check_positive_int("depth", depth)
    width = check_positive_int("width", width)
    n_nets = check_positive_int("n_nets", n_nets)
    sigma_w2 = _variance("sigma_w2", sigma_w2, positive=True)
    q0, sigma_b2 = _variance("q0", q0), _variance("sigma_b2", sigma_b2)
    _, _, act = _activation(activation)
    gen = torch.Generator().manual_seed(seed)
    qs = np.zeros(depth + 1)
    ratios = np.zeros(depth)
    for _ in range(n_nets):
        h = torch.randn(width, generator=gen, dtype=torch.float64) * q0**0.5
        hs = [h.requires_grad_()]
        for _ in range(depth):
            W = torch.randn(width, width, generator=gen, dtype=torch.float64)
            b = torch.randn(width, generator=gen, dtype=torch.float64)
            h = (sigma_w2 / width) ** 0.5 * W @ act(h) + sigma_b2**0.5 * b
            h.retain_grad()
            hs.append(h)
        g = torch.randn(width, generator=gen, dtype=torch.float64)
        (g @ h).backward()
        norms = np.array([float(x.grad.pow(2).sum()) for x in hs])
        qs += np.array([float(x.detach().pow(2).mean()) for x in hs]) / n_nets
        ratios += norms[:-1] / norms[1:] / n_nets
    return MeanField(qs, ratios)
