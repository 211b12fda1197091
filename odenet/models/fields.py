"""Vector fields ``f(t, h)`` as ``torch.nn.Module``: the learnable part of every model.

Every model in :mod:`odenet.models` is a field plus a scheme plus a grid.  A field
is called as ``field(t, h)`` with ``h`` of shape ``[B, dim]`` and ``t`` either a
0-dim tensor (one time for the whole batch: ResNet blocks, shared grids) or a
``[B]`` tensor (per-sample grids of :func:`odenet.solve`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from odenet._errors import InputError

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def activation_module(name: str) -> nn.Module:
    """``"tanh" | "relu" | ...`` -> a fresh activation module."""
    if name not in ACTIVATIONS:
        raise InputError(
            f"`activation` must be one of {', '.join(map(repr, ACTIVATIONS))}, got {name!r}."
        )
    return ACTIVATIONS[name]()


def check_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise InputError(f"`{name}` must be an integer ≥ {minimum}, got {v!r}.")
    return v


class ModelInputError(InputError):
    """An input to a model has the wrong type, shape, dtype or device for that model."""


def parameter_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of the module's first floating-point parameter (``None`` without one)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def parameter_device(module: nn.Module) -> torch.device | None:
    """The device of the module's first parameter (``None`` without parameters)."""
    for p in module.parameters():
        return p.device
    return None


def field_width(field) -> int | None:
    """The state width ``dim`` a field expects, when the field declares it, else ``None``.

    Known: :class:`MLPField` (``dim``), :class:`LayerwiseField` (its first piece),
    :class:`Autonomous` around an ``nn.Linear`` or an ``nn.Sequential`` starting with one,
    and any module with an integer ``dim`` attribute.
    """
    dim = getattr(field, "dim", None)
    if isinstance(dim, int) and not isinstance(dim, bool):
        return dim
    if isinstance(field, LayerwiseField):
        return field_width(field.pieces[0])
    if isinstance(field, Autonomous):
        inner = field.module
        if isinstance(inner, nn.Sequential) and len(inner) > 0:
            inner = inner[0]
        if isinstance(inner, nn.Linear):
            return inner.in_features
    return None


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {str(x.dtype).replace('torch.', '')} tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__module__.split('.')[0]}.{type(x).__name__}".replace("builtins.", "")


def check_model_input(
    name: str,
    x,
    *,
    model: nn.Module,
    shape: str,
    ndim: int | tuple[int, ...] | None = None,
    width: int | None = None,
    width_what: str = "features",
    check_dtype: bool = True,
) -> torch.Tensor:
    """Check a tensor entering ``model``; returns it unchanged or raises :class:`ModelInputError`.

    Parameters
    ----------
    name : str
        The argument's name in the model's signature (quoted in the message).
    x : Tensor
    model : nn.Module
        Its parameters give the expected dtype and device.
    shape : str
        The expected shape as documented, e.g. ``"[B, 3]"``.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    width : int, optional
        Expected size of the last dimension.
    width_what : str
        What the last dimension counts (for the message).
    check_dtype : bool
        Require the parameters' dtype and device (off for user fields, which may
        convert their input themselves).
    """
    kind = type(model).__name__
    if not isinstance(x, torch.Tensor):
        raise ModelInputError(
            f"`{name}` must be a torch.Tensor {shape}, got {_describe(x)}; convert it with "
            "torch.as_tensor(...)."
        )
    if not x.is_floating_point():
        raise ModelInputError(
            f"`{name}` must be a floating-point tensor {shape}, got {_describe(x)}; convert "
            f"it, e.g. `{name}.float()`."
        )
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and x.dim() not in dims:
        raise ModelInputError(f"`{name}` must be {shape}, got {_describe(x)}.")
    if width is not None and (x.dim() == 0 or x.shape[-1] != width):
        raise ModelInputError(
            f"`{name}` must be {shape}: this {kind} expects {width} {width_what} in the last "
            f"dimension, got {_describe(x)}."
        )
    want = parameter_dtype(model) if check_dtype else None
    if want is not None and x.dtype != want:
        short, w = str(x.dtype).replace("torch.", ""), str(want).replace("torch.", "")
        conv = {"float32": "float", "float64": "double", "float16": "half"}
        raise ModelInputError(
            f"`{name}` is {short} but this {kind}'s parameters are {w}; convert the input "
            f"(`{name}.to({want})`) or the model (`model.{conv.get(short, 'to')}()`)."
        )
    device = parameter_device(model) if check_dtype else None
    if device is not None and x.device != device:
        raise ModelInputError(
            f"`{name}` is on {x.device} but this {kind}'s parameters are on {device}; move "
            f"one of them (`{name}.to('{device}')` or `model.to('{x.device}')`)."
        )
    return x


def time_column(t, h: torch.Tensor) -> torch.Tensor:
    """Broadcast ``t`` (0-dim, ``[B]`` or ``[B, 1]``) to a ``[..., 1]`` column matching ``h``."""
    t = torch.as_tensor(t, dtype=h.dtype, device=h.device)
    if t.dim() == 0:
        return t.expand(*h.shape[:-1], 1)
    return t.reshape(*t.shape[:1], *([1] * (h.dim() - 1))).expand(*h.shape[:-1], 1)


class MLPField(nn.Module):
    """``f(t, h) = MLP([h, t])``: a multilayer perceptron vector field.

    Parameters
    ----------
    dim : int
        State dimension (input and output of the field).
    hidden : int
        Width of the hidden layers.
    depth : int
        Number of linear maps (``depth = 2``: ``dim → hidden → dim``).
    activation : str
        Nonlinearity between linear maps (``"tanh"``, ``"relu"``, ``"softplus"``, ...).
    time_dependent : bool
        Feed ``t`` as an extra input to the first layer (a non-autonomous field).
    layer_norm : bool
        ``LayerNorm`` after each hidden linear map (a remedy for exploding activations).

    Shapes
    ------
    ``forward(t, h)``: ``t`` 0-dim or ``[B]``; ``h`` ``[B, dim]`` -> ``[B, dim]``.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        depth: int = 2,
        activation: str = "tanh",
        time_dependent: bool = False,
        layer_norm: bool = False,
    ):
        super().__init__()
        self.dim = check_int("dim", dim)
        check_int("hidden", hidden)
        check_int("depth", depth)
        self.time_dependent = bool(time_dependent)
        sizes = [dim + int(self.time_dependent)] + [hidden] * (depth - 1) + [dim]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < depth - 1:
                if layer_norm:
                    layers.append(nn.LayerNorm(sizes[i + 1]))
                layers.append(activation_module(activation))
        self.net = nn.Sequential(*layers)

    @property
    def output_layer(self) -> nn.Linear:
        """The last linear map (zero it to start as the identity flow)."""
        return self.net[-1]

    def forward(self, t, h: torch.Tensor) -> torch.Tensor:
        if self.time_dependent:
            h = torch.cat([h, time_column(t, h)], dim=-1)
        return self.net(h)


class LayerwiseField(nn.Module):
    """A field whose weights vary with time: ``θ(t) = θ_ℓ`` on ``[t0 + ℓΔ, t0 + (ℓ+1)Δ)``.

    The continuous-time view of a ResNet *without* weight tying: ``L`` pieces of
    length ``Δ = horizon / L``, piece ``ℓ`` holding its own field.  Evaluated at a
    time ``t``, the piece containing ``t`` is used (right-continuous; the last piece
    extends to the right, the first to the left).  A scheme stepping exactly over
    one piece should use :meth:`piece` so all its stages see ``θ_ℓ`` (the smooth
    field on that interval) — :class:`odenet.models.ResNet` does.

    Parameters
    ----------
    pieces : sequence of modules ``f_ℓ(t, h)``
        One field per layer.
    horizon : float
        Total time ``T`` covered by the ``L`` pieces.
    t0 : float
        Start time.

    Use :meth:`mlp` to build ``L`` independent :class:`MLPField`.
    """

    def __init__(self, pieces, *, horizon: float = 1.0, t0: float = 0.0):
        super().__init__()
        pieces = list(pieces)
        if len(pieces) == 0:
            raise InputError("`pieces` is empty; give one field per layer.")
        if not (isinstance(horizon, (int, float)) and horizon > 0 and math.isfinite(horizon)):
            raise InputError(f"`horizon` must be a positive finite number, got {horizon!r}.")
        self.pieces = nn.ModuleList(pieces)
        self.horizon = float(horizon)
        self.t0 = float(t0)

    @classmethod
    def mlp(cls, dim: int, hidden: int, n_layers: int, *, horizon: float = 1.0, **mlp_options):
        """``n_layers`` independent :class:`MLPField` ``(dim, hidden, **mlp_options)``."""
        check_int("n_layers", n_layers)
        return cls([MLPField(dim, hidden, **mlp_options) for _ in range(n_layers)], horizon=horizon)

    @classmethod
    def from_residual_blocks(cls, blocks, *, horizon: float | None = None):
        """The field of an existing ResNet ``h ← h + g_ℓ(h)`` (``blocks`` = the ``g_ℓ``).

        ``f_ℓ(t, h) = g_ℓ(h) / Δt`` with ``Δt = horizon / L``; the default
        ``horizon = L`` gives ``Δt = 1`` and ``f_ℓ = g_ℓ`` exactly, so
        ``ResNet(field, L, "euler", horizon=L)`` reproduces the network bit for bit.
        The blocks are shared, not copied.
        """
        blocks = list(blocks)
        if len(blocks) == 0:
            raise InputError("`blocks` is empty; give the residual branches g_ℓ of the network.")
        T = float(len(blocks)) if horizon is None else horizon
        if not (isinstance(T, (int, float)) and T > 0 and math.isfinite(T)):
            raise InputError(f"`horizon` must be a positive finite number, got {horizon!r}.")
        dt = T / len(blocks)
        return cls([Autonomous(b, scale=1.0 / dt) for b in blocks], horizon=T)

    @property
    def n_layers(self) -> int:
        return len(self.pieces)

    def piece(self, layer: int) -> nn.Module:
        """The field ``f_ℓ`` of layer ``ℓ`` (constant in time over its interval)."""
        return self.pieces[layer]

    def layer_index(self, t) -> torch.Tensor:
        """Index ``ℓ`` of the piece containing ``t`` (0-dim or ``[B]``), long."""
        # times computed as t0 + ℓΔ may land a few roundings of their own dtype below the
        # boundary (float32 t = 0.7 read as piece 6 of 10 with a float64-sized margin)
        own = isinstance(t, torch.Tensor) and t.is_floating_point()
        eps = torch.finfo(t.dtype if own else torch.float64).eps
        t = torch.as_tensor(t, dtype=torch.float64)
        scale = self.n_layers / self.horizon
        x = (t - self.t0) * scale
        margin = 64 * eps * torch.maximum(x.abs(), (t.abs() + abs(self.t0)) * scale).clamp_min(1.0)
        return torch.floor(x + margin).long().clamp(0, self.n_layers - 1)

    def forward(self, t, h: torch.Tensor) -> torch.Tensor:
        idx = self.layer_index(t)
        if idx.dim() == 0:
            return self.pieces[int(idx)](t, h)
        # per-sample times: rows may sit on different pieces; evaluate each piece once
        tt = torch.as_tensor(t)
        out = torch.zeros_like(h)
        for layer in torch.unique(idx).tolist():
            rows = (idx == layer).nonzero()[:, 0].to(h.device)
            out = out.index_put((rows,), self.pieces[layer](tt[rows], h[rows]))
        return out


class Autonomous(nn.Module):
    """``f(t, h) = scale · g(h)``: a time-independent module as a vector field."""

    def __init__(self, module: nn.Module, *, scale: float = 1.0):
        super().__init__()
        self.module = module
        self.scale = float(scale)

    def forward(self, t, h: torch.Tensor) -> torch.Tensor:
        out = self.module(h)
        return out if self.scale == 1.0 else self.scale * out


class InputPath:
    """An input signal ``x(t)`` known at sample times, held or interpolated between them.

    Parameters
    ----------
    times : Tensor ``[N]`` (shared) or ``[B, N]`` (per sample), strictly increasing.
    values : Tensor ``[B, N, input_dim]``
    interpolation : ``"hold"`` (``x(t) = x_k`` on ``[t_k, t_{k+1})``, the RNN convention)
        or ``"linear"``.  Outside ``[t_0, t_{N-1}]`` the end values are held.
    """

    INTERPOLATIONS = ("hold", "linear")

    def __init__(self, times: torch.Tensor, values: torch.Tensor, interpolation: str = "hold"):
        if interpolation not in self.INTERPOLATIONS:
            raise InputError(f"`interpolation` must be 'hold' or 'linear', got {interpolation!r}.")
        if values.dim() != 3:
            raise InputError(
                f"`values` must be [B, N, input_dim], got shape {tuple(values.shape)}."
            )
        if times.dim() not in (1, 2) or times.shape[-1] != values.shape[1]:
            raise InputError(
                f"`times` must be [N] or [B, N] with N = {values.shape[1]}, got shape "
                f"{tuple(times.shape)}."
            )
        if times.shape[-1] > 1 and not bool((times.diff(dim=-1) > 0).all()):
            raise InputError("`times` of an InputPath must be strictly increasing.")
        self.times = times
        self.values = values
        self.interpolation = interpolation

    def __call__(self, t) -> torch.Tensor:
        """``x(t)`` -> ``[B, input_dim]`` for ``t`` 0-dim or ``[B]``."""
        B, N, _ = self.values.shape
        tt = torch.as_tensor(t, dtype=self.times.dtype, device=self.times.device)
        grid = self.times if self.times.dim() == 2 else self.times.expand(B, N)
        tq = tt.expand(B) if tt.dim() == 0 else tt
        eps = 64 * torch.finfo(grid.dtype).eps * grid.abs().clamp_min(1.0)
        # index k with t_k ≤ t (tolerating a rounding error at the sample times)
        k = ((grid <= tq[:, None] + eps).sum(dim=1) - 1).clamp(0, N - 1)
        xk = self.values.gather(1, k[:, None, None].expand(B, 1, self.values.shape[2]))[:, 0]
        if self.interpolation == "hold" or N == 1:
            return xk
        k1 = (k + 1).clamp(max=N - 1)
        x1 = self.values.gather(1, k1[:, None, None].expand(B, 1, self.values.shape[2]))[:, 0]
        t_k, t_k1 = grid.gather(1, k[:, None])[:, 0], grid.gather(1, k1[:, None])[:, 0]
        span = torch.where(k1 > k, t_k1 - t_k, torch.ones_like(t_k))
        w = ((tq - t_k) / span).clamp(0, 1).to(xk.dtype)[:, None]
        return xk + w * (x1 - xk)


class DrivenField(nn.Module):
    """``f(t, h) = drive(t, h, x(t))``: a field driven by an input path.

    Subclasses implement :meth:`drive`; the input path is attached with
    :meth:`bind` (models such as :class:`odenet.models.RNN` do this per call).
    """

    def __init__(self):
        super().__init__()
        self.path: InputPath | None = None

    def bind(self, path) -> DrivenField:
        """Attach the input path: an :class:`InputPath` or any callable ``x(t) -> [B, input_dim]``
        (``t`` 0-dim or ``[B]``); returns ``self``."""
        self.path = path
        return self

    def drive(self, t, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, t, h: torch.Tensor) -> torch.Tensor:
        if self.path is None:
            raise InputError(
                "this DrivenField has no input path; call `field.bind(InputPath(times, xs))` "
                "first (models like RNN do it for you)."
            )
        return self.drive(t, h, self.path(t))


class RNNField(DrivenField):
    """The continuous-time RNN ``dh/dt = −h + σ(W h + U x(t) + b)``.

    One forward-Euler step with ``Δt = 1`` from ``t_k`` (input held) gives
    ``h_{k+1} = σ(W h_k + U x_k + b)``, the vanilla (Elman) RNN.

    Parameters
    ----------
    input_dim, hidden_dim : int
    activation : str
        ``σ`` (default ``"tanh"``).
    """

    def __init__(self, input_dim: int, hidden_dim: int, *, activation: str = "tanh"):
        super().__init__()
        check_int("input_dim", input_dim)
        check_int("hidden_dim", hidden_dim)
        self.W = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.U = nn.Linear(input_dim, hidden_dim, bias=True)  # carries b
        self.sigma = activation_module(activation)

    def cell(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The vanilla RNN map ``σ(W h + U x + b)`` (``[B, H]``, ``[B, I]`` -> ``[B, H]``)."""
        return self.sigma(self.W(h) + self.U(x))

    def drive(self, t, h, x):
        return -h + self.cell(h, x)
