"""Mean-field signal propagation through a deep random network (initialization).

For `h_{l+1} = W_l φ(h_l) + b_l` with `W_ij ~ N(0, σ_w²/n)`, `b_i ~ N(0, σ_b²)`,
wide layers make the pre-activations Gaussian with variance `q_l`:

    q_{l+1} = σ_w² E_{z~N(0,1)}[φ(√q_l z)²] + σ_b²,
    χ_l     = σ_w² E_{z~N(0,1)}[φ'(√q_l z)²],

and the backpropagated gradient `δ_l = ∂L/∂h_l` obeys
`E‖δ_l‖² = χ_l E‖δ_{l+1}‖²`: per-layer gradient-norm ratio `√χ_l`.
`χ = 1` is the critical line (edge of chaos): ReLU with σ_w² = 2 (He) and tanh
with σ_w² = 1, σ_b = 0 (Xavier-like; fixed point q* = 0).
Expectations are Gauss–Hermite quadratures.
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


def variance_map(activation: str, sigma_w2: float, sigma_b2: float = 0.0):
    """The layer-to-layer variance map `q -> σ_w² E[φ(√q z)²] + σ_b²`."""
    phi, _, _ = _activation(activation)
    return lambda q: sigma_w2 * float(_W @ phi(np.sqrt(q) * _Z) ** 2) + sigma_b2


def chi(activation: str, sigma_w2: float, q: float) -> float:
    """`χ = σ_w² E[φ'(√q z)²]`: squared gradient-norm ratio of one layer."""
    _, dphi, _ = _activation(activation)
    return sigma_w2 * float(_W @ dphi(np.sqrt(q) * _Z) ** 2)


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
