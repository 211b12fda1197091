"""The remedies users reach for when gradients explode or vanish, as composable parts.

- :func:`clip_grad_norm` — rescale all gradients by one factor (direction kept);
- :class:`SpectralNorm` / :func:`spectral_normalize` — ``W / σ_max(W)`` by power
  iteration, so a linear map is 1-Lipschitz up to the iteration's lag (``exact=True``:
  by the SVD);
- layer normalisation inside fields — ``MLPField(..., layer_norm=True)``;
- :func:`init_` — He / Xavier / orthogonal initialisation of every linear map;
- :func:`zero_init_` — zero the last map of each residual branch, so a ResNet or a
  Neural ODE starts as the identity (``f ≡ 0``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from odenet._errors import InputError
from odenet.models.fields import check_int


def clip_grad_norm(parameters, max_norm: float, *, eps: float = 1e-12) -> torch.Tensor:
    """Scale every gradient by ``min(1, max_norm / ‖g‖₂)``, ``‖g‖₂`` over all of them.

    One common factor preserves the direction of the full gradient (unlike clipping
    each entry or each tensor separately).

    Parameters
    ----------
    parameters : iterable of Tensors (or one Tensor) with ``.grad``
    max_norm : float
        Largest allowed global 2-norm, > 0.

    Returns
    -------
    Tensor (0-dim): the global norm *before* clipping.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    if not (isinstance(max_norm, (int, float)) and max_norm > 0 and math.isfinite(max_norm)):
        raise InputError(f"`max_norm` must be a positive finite number, got {max_norm!r}.")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    # in float64 before squaring: float16 squares overflow from |g| ≈ 256 (a norm of
    # 3e4 came back inf and every gradient was zeroed)
    total = torch.sqrt(sum(g.detach().to(torch.float64).pow(2).sum() for g in grads))
    factor = min(1.0, max_norm / (float(total) + eps))
    if factor < 1.0:
        for g in grads:
            g.mul_(factor)
    return total


class SpectralNorm(nn.Module):
    """Parametrization ``W ↦ W / σ_max(W)`` with ``σ_max`` from power iteration.

    The singular vectors ``u, v`` persist between calls (warm start), so a few
    iterations per training step track a slowly changing ``W``; in eval mode no
    iteration runs.  Register with :func:`spectral_normalize`.

    The power iteration's ``σ_max`` is a lower bound, so the normalised norm is 1 or
    a little above: ``1 + 4e-12`` after registration (a 16×16 float64 layer), but
    after a large change of ``W`` one iteration per call lags (that layer plus a
    standard normal matrix: 1.14, 1.04, 1.02, 1.01, 1.006 over five training calls),
    as with ``torch.nn.utils.spectral_norm``.  Use ``exact=True`` in
    :func:`spectral_normalize` where the bound must hold.

    Parameters
    ----------
    shape : (out, in) of the weight.
    n_power_iterations : int
        Iterations per forward call in training mode (≥ 1).
    eps : float
        Guards the normalisations.
    exact : bool
        Use ``σ_max`` from an SVD instead (exact, differentiable, ``O(n³)``).
    """

    def __init__(
        self,
        shape,
        *,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
        exact: bool = False,
        dtype=None,
    ):
        super().__init__()
        self.n_power_iterations = check_int("n_power_iterations", n_power_iterations)
        self.eps = eps
        self.exact = bool(exact)
        out_f, in_f = shape
        u = torch.randn(out_f, dtype=dtype)
        v = torch.randn(in_f, dtype=dtype)
        self.register_buffer("u", u / u.norm())
        self.register_buffer("v", v / v.norm())

    @torch.no_grad()
    def power_iteration(self, W: torch.Tensor, n: int, rtol: float = 0.0) -> int:
        """Up to ``n`` steps ``v ← Wᵀu/‖·‖, u ← Wv/‖·‖`` on the stored vectors.

        Stops early once the estimate ``‖Wv‖`` changes by less than ``rtol`` (relative)
        between iterations.  Returns the number of iterations run.
        """
        u, v = self.u.to(W.dtype), self.v.to(W.dtype)
        sigma = None
        k = 0
        while k < n:
            k += 1
            v = W.T @ u
            v = v / v.norm().clamp_min(self.eps)
            u = W @ v
            new = u.norm()
            u = u / new.clamp_min(self.eps)
            if sigma is not None and abs(float(new - sigma)) <= rtol * float(new):
                break
            sigma = new
        self.u.copy_(u)
        self.v.copy_(v)
        return k

    def sigma(self, W: torch.Tensor) -> torch.Tensor:
        """The estimate ``uᵀ W v`` of ``σ_max(W)`` (differentiable in ``W``)."""
        if self.exact:
            return torch.linalg.svdvals(W)[0]
        # clones: a later power iteration updates the buffers in place, which must not
        # invalidate graphs that already used them (several forwards before backward)
        return self.u.clone().to(W.dtype) @ W @ self.v.clone().to(W.dtype)

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        if W.dim() != 2:
            raise InputError(
                f"SpectralNorm acts on a matrix; the weight has shape {tuple(W.shape)}."
            )
        if self.training and not self.exact:
            self.power_iteration(W.detach(), self.n_power_iterations)
        return W / self.sigma(W).clamp_min(self.eps)


def spectral_normalize(
    module: nn.Module,
    name: str = "weight",
    *,
    n_power_iterations: int = 1,
    warmup_iterations: int = 10_000,
    warmup_rtol: float = 1e-10,
    exact: bool = False,
) -> nn.Module:
    """Make ``module.<name>`` the spectrally normalised ``W / σ_max(W)``.

    Uses ``torch.nn.utils.parametrize`` (the raw matrix is
    ``module.parametrizations.<name>.original``).  At registration the power
    iteration runs until the estimate of ``σ_max`` settles to ``warmup_rtol`` (at most
    ``warmup_iterations`` steps), so the first forward is accurate even when the top
    two singular values are close (slow convergence, ratio ``(σ₂/σ₁)²`` per step).
    ``exact=True`` uses the SVD instead.  Returns ``module``.
    """
    W = getattr(module, name, None)
    if not isinstance(W, torch.Tensor) or W.dim() != 2:
        raise InputError(
            f"`{name}` of {type(module).__name__} must be a 2-D weight, got "
            f"{None if W is None else tuple(W.shape)}."
        )
    check_int("warmup_iterations", warmup_iterations, minimum=0)
    sn = SpectralNorm(W.shape, n_power_iterations=n_power_iterations, dtype=W.dtype, exact=exact)
    sn.to(W.device)
    if warmup_iterations and not exact:
        sn.power_iteration(W.detach(), warmup_iterations, rtol=warmup_rtol)
    parametrize.register_parametrization(module, name, sn)
    return module


def _linears(module: nn.Module) -> Iterable[nn.Linear]:
    return (m for m in module.modules() if isinstance(m, nn.Linear))


INITS = ("he", "xavier", "orthogonal")


def init_(module: nn.Module, scheme: str = "he", *, gain: float | None = None) -> nn.Module:
    """Re-initialise every ``nn.Linear`` in ``module`` in place; biases to 0.

    ``"he"``: ``N(0, 2/fan_in)`` (for ReLU); ``"xavier"``: ``U(±gain·√(6/(fan_in+fan_out)))``
    (for tanh, ``gain`` default 1); ``"orthogonal"``: a (semi-)orthogonal matrix times
    ``gain`` (all singular values equal: neither growth nor decay at initialisation).
    Returns ``module``.
    """
    if scheme not in INITS:
        raise InputError(f"`scheme` must be one of {', '.join(map(repr, INITS))}, got {scheme!r}.")
    g = 1.0 if gain is None else float(gain)
    with torch.no_grad():
        for lin in _linears(module):
            if scheme == "he":
                nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
                if gain is not None:
                    lin.weight.mul_(g / math.sqrt(2.0))
            elif scheme == "xavier":
                nn.init.xavier_uniform_(lin.weight, gain=g)
            else:
                nn.init.orthogonal_(lin.weight, gain=g)
            if lin.bias is not None:
                lin.bias.zero_()
    return module


def zero_init_(field: nn.Module) -> nn.Module:
    """Zero the output map of a residual branch, so ``f ≡ 0`` at initialisation.

    Uses ``field.output_layer`` when the field has one (:class:`MLPField`), each
    piece of a :class:`LayerwiseField`, otherwise the last ``nn.Linear`` found.
    The ResNet is then the identity and the Neural ODE the identity flow; gradients
    still reach the zeroed map (its input is non-zero), so training starts.
    Returns ``field``.
    """
    from odenet.models.fields import LayerwiseField

    if isinstance(field, LayerwiseField):
        for piece in field.pieces:
            zero_init_(piece)
        return field
    last = getattr(field, "output_layer", None)
    if last is None:
        lins = list(_linears(field))
        if not lins:
            raise InputError(f"{type(field).__name__} has no nn.Linear to zero-initialise.")
        last = lins[-1]
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
    return field
