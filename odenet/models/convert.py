"""ResNet (and LM-ResNet) ↔ Neural ODE with the same parameters.

A ResNet of depth ``L`` with step ``Δt = T/L`` is a discretization of the Neural ODE
``dh/dt = f(t, h)`` on ``[t0, t0 + T]``; the conversion shares the *same* field
module (no copy), so training one trains the other.  :func:`discretization_gap`
answers "how far is my network from its continuous limit?".

Both directions live here, and are also the methods ``ResNet.to_neural_ode`` and
``NeuralODE.to_resnet`` (installed at the end of this module, which ``odenet.models``
always imports): ``resnet.py`` and ``neural_ode.py`` do not import each other.  The
same holds for the multistep network: ``LMResNet.to_neural_ode`` and
``NeuralODE.to_lm_resnet``.
"""

from __future__ import annotations

import math

import torch

from odenet._errors import InputError
from odenet.models.lm_resnet import NETWORK_METHODS, LMResNet
from odenet.models.neural_ode import NeuralODE
from odenet.models.resnet import ResNet


def resnet_to_neural_ode(resnet: ResNet, **solver) -> NeuralODE:
    """The Neural ODE ``dh/dt = f(t, h)`` whose forward-Euler (or ``resnet.method``)
    discretization is ``resnet``; it shares ``resnet.field``.

    The returned module remembers the ResNet's interval as ``t0`` and ``horizon``
    attributes and its scheme as ``block_method``; ``node.flow(h, node.t0, node.t0 +
    node.horizon)`` is the continuous counterpart of ``resnet(h)``.  ``solver`` goes to
    :class:`NeuralODE` (``method``, ``rtol``, ``atol``, ``sensitivity``, ...).
    """
    node = NeuralODE(resnet.field, **solver)
    node.t0 = resnet.t0
    node.horizon = resnet.horizon
    node.block_method = resnet.tableau
    return node


def neural_ode_to_resnet(
    node: NeuralODE, depth: int, method=None, horizon: float | None = None, *, t0=None
) -> ResNet:
    """A ResNet of ``depth`` blocks stepping ``node.field`` by ``method`` (shared parameters).

    ``method``, ``horizon`` and ``t0`` default to those remembered by
    :func:`resnet_to_neural_ode` (else ``"euler"``, ``1.0`` and ``0.0``), so a round
    trip keeps the blocks' scheme.
    """
    if method is None:
        method = getattr(node, "block_method", "euler")
    if horizon is None:
        horizon = getattr(node, "horizon", 1.0)
    if t0 is None:
        t0 = getattr(node, "t0", 0.0)
    return ResNet(node.field, depth, method, horizon, t0=t0)


def discretization_gap(
    resnet: ResNet, h: torch.Tensor, *, rtol: float = 1e-8, atol: float = 1e-10
) -> torch.Tensor:
    """Per-sample ``‖ResNet(h) − φ_T(h)‖₂ / ‖φ_T(h)‖₂``: distance to the continuous limit.

    ``φ_T`` is the adaptive solve of the same field over the ResNet's interval
    (dopri5 at ``rtol``/``atol``).  Small: the network behaves like its Neural ODE
    (deeper/other schemes change it little); large: it is far from any continuous
    flow at this depth.  ``h [B, dim]`` -> ``[B]``.
    """
    node = resnet_to_neural_ode(resnet, rtol=rtol, atol=atol)
    exact = node.flow(h, resnet.t0, resnet.t0 + resnet.horizon)
    return (resnet(h) - exact).norm(dim=-1) / exact.norm(dim=-1).clamp_min(1e-300)


def lm_resnet_to_neural_ode(net: LMResNet, **solver) -> NeuralODE:
    """The Neural ODE ``dh/dt = f(t, h)`` that the multistep network ``net`` discretizes;
    it shares ``net.field``.

    For ``net.method = "ab2"`` … ``"ab6"`` the solver defaults to that method with
    ``step_size = net.dt`` (the fixed grid of the network's layers), so
    ``node.flow(h, node.t0, node.t0 + node.horizon)`` equals ``net(h)`` to round-off;
    the LM scheme (``"lm"``) is no integrator method, so it gets :class:`NeuralODE`'s
    adaptive default.  ``solver`` (``method``, ``step_size``, ``rtol``, ...) overrides.
    The horizon, ``t0`` and depth are remembered as attributes for the way back
    (:func:`neural_ode_to_lm_resnet`).
    """
    if net.method != "lm" and "method" not in solver:
        solver = {"method": net.method, "step_size": net.dt, **solver}
    node = NeuralODE(net.field, **solver)
    node.t0, node.horizon, node.depth = net.t0, net.horizon, net.depth
    return node


def neural_ode_to_lm_resnet(
    node: NeuralODE,
    depth: int | None = None,
    method: str | None = None,
    horizon: float | None = None,
    *,
    t0: float | None = None,
    **network,
) -> LMResNet:
    """An :class:`LMResNet` stepping ``node.field`` (shared parameters).

    ``horizon`` and ``t0`` default to those remembered by a conversion (else ``1.0``
    and ``0.0``); ``depth`` to the remembered one, else ``horizon / node.step_size``
    (which must then be a whole number); ``method`` to ``node.method`` when that is a
    network method (``"ab1"`` … ``"ab6"``).  ``network`` goes to :class:`LMResNet`
    (``k``, ``learn_k``, ``starter``).
    """
    if horizon is None:
        horizon = getattr(node, "horizon", 1.0)
    if t0 is None:
        t0 = getattr(node, "t0", 0.0)
    if method is None:
        if node.method not in NETWORK_METHODS:
            raise InputError(
                f"the Neural ODE's method {node.method!r} is not a multistep network scheme; "
                f"pass `method` (one of {', '.join(map(repr, NETWORK_METHODS))})."
            )
        method = node.method
    if depth is None:
        depth = getattr(node, "depth", None)
    if depth is None:
        steps = horizon / node.step_size if node.step_size else math.nan
        if not (math.isfinite(steps) and abs(steps - round(steps)) <= 1e-9 * steps):
            raise InputError(
                f"pass `depth`: it cannot be read from the Neural ODE (step_size="
                f"{node.step_size!r} does not divide the horizon {horizon!r})."
            )
        depth = round(steps)
    return LMResNet(node.field, depth, method, horizon, t0=t0, **network)


# the methods of the classes (see the module docstring)
ResNet.to_neural_ode = resnet_to_neural_ode
NeuralODE.to_resnet = neural_ode_to_resnet
LMResNet.to_neural_ode = lm_resnet_to_neural_ode
NeuralODE.to_lm_resnet = neural_ode_to_lm_resnet
