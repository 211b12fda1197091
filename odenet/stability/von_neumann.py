"""Von Neumann analysis: amplification of each Fourier mode by a translation-invariant step.

A linear step `L` on a periodic grid that commutes with shifts acts on the
Fourier mode `e^{i θ·j}` by multiplication with its *symbol*

    G(θ) = Σ_j L(δ)_j e^{-i θ·j},        θ_k = 2πk / N (per axis),

the discrete Fourier transform of the step's impulse response `L(δ)`.  For a
nonlinear step the same is done for its linearization about a constant state
(`jvp` at `x0`).  With `C` channels (systems of PDEs, convolutional blocks)
`G(θ)` is a `C × C` matrix per mode and the amplification is its spectral
radius.  The step is stable in the von Neumann sense iff `max_θ |G(θ)| ≤ 1`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import jvp

from odenet.stability._errors import (
    NotTranslationInvariantError,
    StabilityInputError,
    check_positive_int,
)


@dataclass(frozen=True)
class VonNeumannResult:
    """Amplification factors of a translation-invariant step.

    Attributes
    ----------
    theta : ndarray [ndim, *shape], the wavenumbers θ ∈ (−π, π] of each mode
        (radians per grid cell, per axis).
    symbol : ndarray [*shape] complex ([*shape, C, C] with channels), G(θ).
    amplification : ndarray [*shape], |G(θ)| (spectral radius with channels).
    max_amplification : float
    stable : bool, max_amplification ≤ 1 + tol.
    most_dangerous : tuple of float, the θ (per axis) of the largest |G|.
    """

    theta: np.ndarray
    symbol: np.ndarray
    amplification: np.ndarray
    max_amplification: float
    stable: bool
    most_dangerous: tuple


def _wavenumbers(shape: tuple[int, ...]) -> np.ndarray:
    axes = [2 * np.pi * np.fft.fftfreq(n) for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def von_neumann(
    step: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, ...] | int,
    *,
    channels: int | None = None,
    x0: torch.Tensor | None = None,
    tol: float = 1e-10,
    check: bool = True,
    dtype: torch.dtype = torch.float64,
) -> VonNeumannResult:
    """Amplification factor of each Fourier mode of a (linearized) periodic step.

    Parameters
    ----------
    step : callable on tensors [*shape] (or [C, *shape] with channels).
    shape : the periodic grid, e.g. (64,) or (32, 32); any dimension.
    channels : int, optional; the state is [C, *shape].
    x0 : Tensor, optional base state to linearize about (default zeros: exact for
        linear steps).
    tol : float, slack in the stability test max |G| ≤ 1 + tol.
    check : bool, verify on a random field that the step really is the
        convolution its impulse response predicts (else raise
        [`NotTranslationInvariantError`][odenet.stability.NotTranslationInvariantError]).

    Returns
    -------
    VonNeumannResult

    Examples
    --------
    Explicit Euler for the heat equation is stable for `r = dt/dx² ≤ 1/2`:

    >>> import torch
    >>> from odenet.stability import von_neumann
    >>> def heat(r):
    ...     return lambda u: u + r * (torch.roll(u, 1) - 2 * u + torch.roll(u, -1))
    >>> von_neumann(heat(0.4), (32,)).stable, von_neumann(heat(0.6), (32,)).stable
    (True, False)
    >>> round(float(von_neumann(heat(0.6), (32,)).max_amplification), 2)   # |1 − 4r|
    1.4
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape or any(not isinstance(n, int) or n < 1 for n in shape):
        raise StabilityInputError(f"`shape` must be a tuple of positive grid sizes, got {shape!r}.")
    C = 1 if channels is None else check_positive_int("channels", channels)
    full = shape if channels is None else (C, *shape)
    base = torch.zeros(full, dtype=dtype) if x0 is None else x0.detach().to(dtype)
    if tuple(base.shape) != full:
        raise StabilityInputError(f"`x0` must have shape {full}, got {tuple(base.shape)}.")

    def lin(v):
        try:
            return jvp(step, (base,), (v,))[1]
        except RuntimeError:  # not traceable by torch.func: autograd's double-vjp jvp
            return torch.autograd.functional.jvp(step, base, v)[1]

    resp = []
    for c in range(C):  # impulse at the origin of channel c
        delta = torch.zeros(full, dtype=dtype)
        delta[(c,) + (0,) * len(shape) if channels is not None else (0,) * len(shape)] = 1.0
        r = lin(delta).detach().cpu().numpy()
        if r.shape != tuple(full):  # (numpy's broadcasting error said nothing of why)
            raise StabilityInputError(
                f"the step maps a grid of shape {tuple(full)} to one of shape {r.shape}: von "
                "Neumann analysis needs a step of the periodic grid onto itself (same "
                "shape; a boundary that drops points is not translation invariant)."
            )
        resp.append(r if channels is not None else r[None])
    H = np.stack(resp, axis=1)  # [C_out, C_in, *shape]
    axes = tuple(range(2, 2 + len(shape)))
    G = np.fft.fftn(H, axes=axes)  # symbol per mode
    G = np.moveaxis(G, (0, 1), (-2, -1))  # [*shape, C, C]

    if check:
        _check_convolution(lin, G, full, channels is not None, dtype)

    if channels is None:
        sym = G[..., 0, 0]
        amp = np.abs(sym)
    else:
        sym = G
        amp = np.abs(np.linalg.eigvals(G)).max(axis=-1)
    theta = _wavenumbers(shape)
    idx = np.unravel_index(int(np.argmax(amp)), amp.shape)
    mx = float(amp[idx])
    return VonNeumannResult(
        theta=theta,
        symbol=sym,
        amplification=amp,
        max_amplification=mx,
        stable=bool(mx <= 1.0 + tol),
        most_dangerous=tuple(float(theta[(a, *idx)]) for a in range(len(shape))),
    )


def _check_convolution(lin, G, full, has_channels, dtype) -> None:
    gen = torch.Generator().manual_seed(1234)
    v = torch.randn(full, dtype=dtype, generator=gen)
    got = lin(v).detach().cpu().numpy()
    vv = v.numpy() if has_channels else v.numpy()[None]
    axes = tuple(range(1, vv.ndim))
    V = np.moveaxis(np.fft.fftn(vv, axes=axes), 0, -1)[..., None]  # [*shape, C, 1]
    pred = np.fft.ifftn(np.moveaxis((G @ V)[..., 0], -1, 0), axes=axes).real
    pred = pred if has_channels else pred[0]
    err = np.abs(pred - got).max()
    scale = max(np.abs(got).max(), 1e-300)
    if err > 1e-8 * scale + 1e-12:
        raise NotTranslationInvariantError(
            "the step is not a translation-invariant linear map on the periodic grid "
            f"(its action on a random field differs from the convolution by its impulse "
            f"response by {err:.3g}, relative {err / scale:.3g}); von Neumann analysis needs "
            "periodic boundaries and coefficients that do not depend on position "
            "(pass check=False to get the symbol anyway)."
        )


def cfl_search(
    make_step: Callable[[float], Callable],
    shape: tuple[int, ...] | int,
    lo: float,
    hi: float,
    *,
    rtol: float = 1e-6,
    **options,
) -> float:
    """Largest parameter `p ∈ [lo, hi]` (a step size, a CFL number) with a stable step.

    Bisection on `von_neumann(make_step(p), shape).stable`; assumes the step is
    stable for `p ≤ p*` and unstable above (the usual CFL picture).

    Parameters
    ----------
    make_step : callable p -> step.
    lo, hi : bracket; make_step(lo) must be stable.
    rtol : relative width of the final bracket.
    options : passed to [von_neumann][odenet.stability.von_neumann.von_neumann].

    Returns
    -------
    float, the stability limit `p*` (`hi` if the whole bracket is stable).

    Examples
    --------
    The largest stable ratio `r = dt/dx²` of explicit Euler for the heat equation is 1/2:

    >>> import torch
    >>> from odenet.stability import cfl_search
    >>> def heat(r):
    ...     return lambda u: u + r * (torch.roll(u, 1) - 2 * u + torch.roll(u, -1))
    >>> round(cfl_search(heat, 64, 0.05, 2.0), 4)
    0.5
    """
    lo, hi = float(lo), float(hi)
    if not lo < hi:
        raise StabilityInputError(f"need `lo` < `hi`, got lo={lo}, hi={hi}.")

    def ok(p):
        return von_neumann(make_step(p), shape, **options).stable

    if not ok(lo):
        raise StabilityInputError(
            f"the step is already unstable at `lo` = {lo}; pass a smaller lower bracket."
        )
    if ok(hi):
        return hi
    while hi - lo > rtol * max(abs(hi), 1e-300):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo
