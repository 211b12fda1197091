"""Which tensors the vector field's gradient flows to, and a check that none is missed."""

from __future__ import annotations

import torch

from odenet._errors import InputError


def find_params(f, adjoint_params) -> list[torch.Tensor]:
    """``adjoint_params`` if given, else the parameters of ``f`` when it is an
    ``nn.Module`` or a bound method of one; only tensors that require grad."""
    if adjoint_params is None:
        owner = f if isinstance(f, torch.nn.Module) else getattr(f, "__self__", None)
        if isinstance(owner, torch.nn.Module):
            adjoint_params = list(owner.parameters())
        else:
            adjoint_params = []
    elif isinstance(adjoint_params, torch.Tensor):
        adjoint_params = [adjoint_params]
    else:
        try:
            adjoint_params = list(adjoint_params)
        except TypeError:
            raise InputError(
                "`adjoint_params` must be an iterable of tensors (e.g. "
                f"`model.parameters()`), got {type(adjoint_params).__name__}."
            ) from None
    out, seen = [], set()
    for i, p in enumerate(adjoint_params):
        if not isinstance(p, torch.Tensor):
            raise InputError(
                f"`adjoint_params` item {i} is a {type(p).__name__}, not a tensor; pass "
                "tensors such as `model.parameters()`."
            )
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def check_no_hidden_leaves(g, s0, y0, params, kind: str) -> None:
    """Raise if ``g``'s output depends on tensors requiring grad outside ``params``.

    Their gradients would silently be missing: the sensitivity methods only return
    gradients for ``y0``, the times and ``params``.  Costs one evaluation of ``g``
    (not counted) and a walk of its autograd graph.
    """
    with torch.enable_grad():
        out = g(s0.detach(), y0.detach())
    if not out.requires_grad:
        return
    allowed = {id(p) for p in params}
    seen, stack, foreign = set(), [out.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if type(fn).__name__ == "SignBackward0":
            continue  # zero derivative (e.g. the sign of the time direction): nothing lost
        var = getattr(fn, "variable", None)
        if var is not None and id(var) not in allowed:
            foreign.append(tuple(var.shape))
        stack.extend(nxt for nxt, _ in fn.next_functions)
    if foreign:
        shapes = ", ".join(str(s) for s in foreign[:5])
        raise InputError(
            f"sensitivity={kind!r}: the vector field uses {len(foreign)} tensor(s) that "
            f"require grad but are not adjoint parameters (shapes {shapes}); their "
            "gradients would be missing. Pass them with `adjoint_params=[...]` (an "
            "nn.Module's own parameters are found automatically)."
        )
