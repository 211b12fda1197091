"""LM-ResNet: a network whose layers are the steps of an explicit linear multistep method.

Lu, Zhong, Li & Dong (2018), *Beyond finite layer neural networks: bridging deep
architectures and numerical differential equations* (ICML), read a ResNet as forward
Euler and proposed the two-step layer ``u_{n+1} = (1 − k_n) u_n + k_n u_{n−1} +
f_n(u_n)``.  Here that layer, and the layers of the Adams–Bashforth methods the
integrator runs (``ab1`` … ``ab6``), are one form

``x_{n+1} = Σ_j a_j x_{n−j} + Δt Σ_j b_j f(t_{n−j}, x_{n−j})``,  ``j = 0 … s−1``,

a linear ``s``-step scheme for the same field ``dx/dt = f(t, x)`` as
:class:`~odenet.models.ResNet` and :class:`~odenet.models.NeuralODE`.  The first
``s − 1`` layers, which lack a history, are one-step blocks (the *starter*).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import torch
from torch import nn

from odenet import step
from odenet._errors import InputError
from odenet._multistep import MULTISTEP, adams_bashforth
from odenet.models.fields import parameter_dtype
from odenet.models.resnet import ResNet
from odenet.tableaus import ButcherTableau

#: the names :class:`LMResNet` accepts as ``method``
NETWORK_METHODS = ("lm", *(n for n, m in MULTISTEP.items() if m.family == "ab"))


def lm_polynomials(k) -> tuple[list[Fraction], list[Fraction]]:
    """``(ρ, σ)`` of the LM-ResNet's two-step scheme, highest power of ``ζ`` first.

    ``x_{n+1} − (1 − k) x_n − k x_{n−1} = Δt (1 + k) f_n``: ``ρ(ζ) = (ζ − 1)(ζ + k)``,
    ``σ(ζ) = (1 + k) ζ``.  Consistent for every ``k ≠ −1`` (the factor ``1 + k`` makes
    ``σ(1) = ρ'(1)``), order 2 only at ``k = 1`` (the leapfrog rule), zero-stable iff
    ``−1 < k ≤ 1``.  ``k`` is read exactly (a float as its shortest decimal), so the
    analyzer's order conditions in :mod:`odenet.stability.multistep` hold exactly.
    """
    K = Fraction(k) if isinstance(k, (int, Fraction)) else Fraction(repr(float(k)))
    return [Fraction(1), -(1 - K), -K], [Fraction(0), 1 + K, Fraction(0)]


class LMResNet(nn.Module):
    """``L`` layers, each one step of an explicit linear multistep scheme over depth.

    With ``Δt = T / L``, ``t_n = t0 + n Δt`` and ``f_n = f(t_n, x_n)``, layer ``n``
    (``n ≥ s − 1``) maps the history ``x_n, x_{n−1}, …`` to

    - ``method="lm"`` (Lu et al. 2018, ``s = 2``):
      ``x_{n+1} = (1 − k_n) x_n + k_n x_{n−1} + (1 + k_n) Δt f_n``.  The paper's
      residual branch ``f_n(u)`` is ``(1 + k_n) Δt f(t_n, u)`` here, the scaling under
      which every ``k_n`` discretizes the *same* ODE ``dx/dt = f`` (``k = 0``: the Euler
      ResNet; ``k = 1``: leapfrog, order 2);
    - ``method="ab2"`` … ``"ab6"`` (``s`` steps): ``x_{n+1} = x_n + Δt Σ_j b_j f_{n−j}``
      with the coefficients the integrator uses (:func:`odenet._multistep.adams_bashforth`),
      so the network equals ``odenet.solve(field, x0, [t0, t0 + T], method=method,
      step_size=Δt)``.

    Layers ``0 … s − 2`` are one step of ``starter`` (:func:`odenet.step`).  Each
    layer evaluates the field once (starter layers: once more for the history).

    Parameters
    ----------
    field : nn.Module ``f(t, x)``
        Weight-tied, or a :class:`~odenet.models.LayerwiseField` (multistep layer ``n``
        then evaluates ``f_n`` with the piece of ``[t_n, t_{n+1})``; a starter layer's
        stages look the field up by time, as ``odenet.solve`` does, so a stage on
        ``t_{n+1}`` takes the next piece and the network equals the solve).
    depth : int
        Number of layers ``L``.
    method : ``"lm"`` or ``"ab1"`` … ``"ab6"``
        The scheme (see :data:`NETWORK_METHODS`).
    horizon : float
        Total time ``T``.
    k : float or sequence of ``L − 1`` floats (``method="lm"`` only, required there)
        The LM coefficient, shared or one per two-step layer ``n = 1 … L − 1``.
        Zero-stable (bounded for ``f = 0``) iff ``−1 < k ≤ 1``.
    learn_k : bool
        Make ``k`` a trainable parameter (else a buffer).
    starter : str or ButcherTableau, optional
        One-step scheme of the first ``s − 1`` layers; default: the integrator's
        starter for ``ab*`` (``"dop853"``, so the network equals ``odenet.solve``) and
        ``"euler"`` for ``"lm"`` (the paper's first residual block).
    t0 : float
        Initial time.

    Shapes
    ------
    ``forward(x)``: ``[B, dim]`` -> ``[B, dim]``; ``trajectory(x)`` -> ``[L + 1, B, dim]``.
    """

    def __init__(
        self,
        field: nn.Module,
        depth: int,
        method: str = "lm",
        horizon: float = 1.0,
        *,
        k: float | Sequence[float] | torch.Tensor | None = None,
        learn_k: bool = False,
        starter: str | ButcherTableau | None = None,
        t0: float = 0.0,
    ):
        super().__init__()
        name = method.lower() if isinstance(method, str) else method
        if name not in NETWORK_METHODS:
            implicit = isinstance(name, str) and name in MULTISTEP
            raise InputError(
                f"`method` must be one of {', '.join(map(repr, NETWORK_METHODS))}, got "
                f"{method!r}"
                + (
                    " (implicit and predictor–corrector multistep layers are not networks "
                    "here; use odenet.solve for them, or ResNet(method='backward_euler'))."
                    if implicit
                    else "."
                )
            )
        self.method = name
        self.steps = 2 if name == "lm" else MULTISTEP[name].steps
        if starter is None:
            starter = "euler" if name == "lm" else MULTISTEP[name].starter
        # The starter layers are ResNet blocks of the same field over the same grid; the
        # ResNet also validates depth, horizon, t0 and a LayerwiseField.  It is kept out of
        # the module tree (it holds no parameters of its own; `field` is registered here)
        # so the state dict has one copy of the field.
        object.__setattr__(self, "_blocks", ResNet(field, depth, starter, horizon, t0=t0))
        self.field = field
        self.depth, self.horizon, self.t0 = depth, self._blocks.horizon, self._blocks.t0
        self.starter = self._blocks.method
        self.learn_k = bool(learn_k)
        if name == "lm":
            self._set_k(k)
        else:
            if k is not None:
                raise InputError(
                    f"`k` belongs to method='lm' (the LM-ResNet); {name!r} has fixed "
                    "coefficients. Drop `k`, or use method='lm'."
                )
            self.b = [float(x) for x in adams_bashforth(self.steps)]

    def _set_k(self, k) -> None:
        n_two_step = max(self.depth - 1, 0)
        if k is None:
            raise InputError(
                "method='lm' needs `k` (a float, or one per layer 1 … L − 1); "
                "−1 < k ≤ 1 is zero-stable, k = 0 is the Euler ResNet."
            )
        # a field without parameters says nothing of the dtype: keep k in float64 (a 0-dim
        # k does not promote the state, and float32 read k = 0.3 as 0.30000001192, which
        # a float64 network and polynomials() then carried)
        dtype = parameter_dtype(self.field) or torch.float64
        try:
            kt = torch.as_tensor(k, dtype=dtype).detach().clone()
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"`k` must be a float or a sequence of floats, got {k!r}.") from None
        if kt.dim() > 1 or (kt.dim() == 1 and kt.shape[0] != n_two_step):
            raise InputError(
                f"`k` must be a float or hold one value per two-step layer (depth − 1 = "
                f"{n_two_step}), got shape {tuple(kt.shape)}."
            )
        if not bool(torch.isfinite(kt).all()):
            raise InputError(f"`k` must be finite, got {k!r}.")
        if self.learn_k:
            self.k = nn.Parameter(kt)
        else:
            self.register_buffer("k", kt)

    @property
    def dt(self) -> float:
        """Step ``Δt = T / L`` (time per layer)."""
        return self._blocks.dt

    def times(self) -> torch.Tensor:
        """Layer boundaries ``t_0 … t_L`` ([L + 1], float64)."""
        return self._blocks.times()

    def k_at(self, layer: int):
        """``k_n`` of two-step layer ``layer`` (``1 ≤ layer < L``), a 0-dim tensor."""
        if self.k.dim() == 0:
            return self.k
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer < self.depth:
            raise InputError(
                f"`layer` must be a two-step layer 1 … {self.depth - 1} (layer 0 is the "
                f"starter), got {layer!r}."
            )
        return self.k[layer - 1]

    def coefficients(self, layer: int) -> tuple[list, list]:
        """``(a, b)`` of multistep layer ``layer`` (``≥ s − 1``): ``x_{n+1} = Σ_j a_j
        x_{n−j} + Δt Σ_j b_j f_{n−j}``, ``j = 0 … s−1`` (floats, or 0-dim tensors for
        ``"lm"``, differentiable in ``k``)."""
        if self.method == "lm":
            k = self.k_at(layer)
            return [1 - k, k], [1 + k, 0.0]
        return [1.0] + [0.0] * (self.steps - 1), self.b

    def polynomials(self, layer: int | None = None) -> tuple[list[Fraction], list[Fraction]]:
        """``(ρ, σ)`` of the scheme of layer ``layer`` (any layer for ``ab*`` or a shared
        ``k``), highest power first: the input of :mod:`odenet.stability.multistep`
        (``is_zero_stable``, ``stability_roots``, ``real_stability_interval``, …)."""
        if self.method != "lm":
            return [Fraction(1), Fraction(-1)] + [Fraction(0)] * (self.steps - 1), [
                Fraction(0),
                *adams_bashforth(self.steps),
            ]
        if self.k.dim() == 1 and layer is None:
            raise InputError(
                "this LMResNet has one k per layer: pass `layer` (1 … depth − 1) to polynomials()."
            )
        return lm_polynomials(self.k_at(layer if layer is not None else 1).item())

    def _layer(self, n: int, past, f) -> torch.Tensor:
        """``x_{n+1}`` of multistep layer ``n``, from ``past(j) = x_{n−j}``, ``f(j) = f_{n−j}``."""
        a, b = self.coefficients(n)
        # zero terms are skipped, so an ab layer is x_n + Δt Σ b_j f_{n−j} exactly as the
        # integrator forms it (same rounding)
        lin = sum(aj * past(j) if not _is(aj, 1.0) else past(j)
                  for j, aj in enumerate(a) if not _is(aj, 0.0))  # fmt: skip
        incr = sum(bj * f(j) for j, bj in enumerate(b) if not _is(bj, 0.0))
        return lin + self.dt * incr

    def _starter(self, n: int, x: torch.Tensor) -> torch.Tensor:
        """Starter layer ``n``: one ``starter`` step of the field from ``t_n``.

        Unlike a ResNet block, whose stages all use its layer's piece, the field is looked
        up by time at each stage, as the integrator's starter does: dop853 has stages on
        ``t_{n+1}``, where a LayerwiseField's next piece begins (stepping piece ``n``
        alone put the network 5e-3 off ``odenet.solve`` and its own Neural ODE).
        """
        blocks = self._blocks
        return step(self.field, blocks.t0 + n * blocks.dt, x, blocks.dt, blocks.tableau,
                    batched=True)  # fmt: skip

    def _f(self, n: int, x: torch.Tensor) -> torch.Tensor:
        """``f_n = f(t_n, x)`` with the field of layer ``n``."""
        t = torch.as_tensor(self.t0 + n * self.dt, dtype=x.dtype, device=x.device)
        return self._blocks.block_field(n)(t, x)

    def trajectory(self, x: torch.Tensor) -> torch.Tensor:
        """States after every layer, ``[L + 1, B, dim]`` (``[0]`` is the input).

        Raises :class:`~odenet.models.ModelInputError` for a non-tensor, a width other
        than the field's, or a dtype/device other than the parameters'.
        """
        # the ResNet's input check reads only `field`, and names this model's class
        ResNet._check(self, x)
        xs = [x]
        fs: dict[int, torch.Tensor] = {}

        def f(m):  # f_m, evaluated once, only if a layer uses it
            if m not in fs:
                fs[m] = self._f(m, xs[m])
            return fs[m]

        for n in range(self.depth):
            if n < self.steps - 1:
                xs.append(self._starter(n, xs[n]))
            else:
                xs.append(self._layer(n, lambda j, n=n: xs[n - j], lambda j, n=n: f(n - j)))
        return torch.stack(xs)

    def history_map(self, layer: int | None = None):
        """Multistep layer ``layer`` as a one-step map of the stacked history.

        ``X_n = [x_n, x_{n−1}, …, x_{n−s+1}]`` (concatenated features, ``[s·dim]`` or
        ``[B, s·dim]``) ``↦ X_{n+1}``: the form every tool of :mod:`odenet.stability`
        takes (``analyze``, ``lyapunov_spectrum``, ``jacobian``).  On ``f(x) = λx`` its
        Jacobian is the companion matrix of ``ρ − Δtλσ``, whose spectral radius is
        ``max|ζ|`` of :func:`odenet.stability.multistep.stability_roots`.  ``layer``
        defaults to the first multistep layer ``s − 1`` (every layer of a weight-tied
        autonomous field with a shared ``k`` is the same map).
        """
        s = self.steps
        n = s - 1 if layer is None else layer
        if isinstance(n, bool) or not isinstance(n, int) or not s - 1 <= n < self.depth:
            raise InputError(
                f"`layer` must be a multistep layer {s - 1} … {self.depth - 1} (the first "
                f"{s - 1} are starter blocks), got {layer!r}."
            )

        def step(X: torch.Tensor) -> torch.Tensor:
            if X.shape[-1] % s:
                raise InputError(
                    f"the history must stack {s} states on the last axis ([s·dim]), got "
                    f"shape {tuple(X.shape)}."
                )
            one = X.dim() == 1
            parts = (X[None] if one else X).chunk(s, dim=-1)  # x_n, x_{n−1}, …
            x1 = self._layer(n, lambda j: parts[j], lambda j: self._f(n - j, parts[j]))
            out = torch.cat([x1, *parts[:-1]], dim=-1)
            return out[0] if one else out

        return step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, dim]`` through the ``L`` layers -> ``[B, dim]``."""
        return self.trajectory(x)[-1]

    # ``to_neural_ode(**solver)`` is :func:`odenet.models.convert.lm_resnet_to_neural_ode`,
    # installed as a method by that module (see odenet.models.convert).

    def extra_repr(self) -> str:
        k = ""
        if self.method == "lm":
            vals = [self.k.item()] if self.k.dim() == 0 else self.k.tolist()
            k = ", k=" + ("[" * (self.k.dim() > 0)) + ", ".join(f"{v:.4g}" for v in vals)
            k += "]" * (self.k.dim() > 0)
            k += ", learn_k=True" if self.learn_k else ""
        return (
            f"depth={self.depth}, method={self.method!r}{k}, starter={self.starter!r}, "
            f"horizon={self.horizon}, t0={self.t0}"
        )


def _is(c, value: float) -> bool:
    """``c`` is the python number ``value`` (a tensor coefficient never is: it may train)."""
    return isinstance(c, (int, float)) and c == value
