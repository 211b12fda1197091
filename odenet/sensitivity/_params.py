"""Which tensors the vector field's gradient flows to, and a check that none is missed."""

from __future__ import annotations

import torch

from odenet._errors import InputError


def find_params(f, adjoint_params) -> list[torch.Tensor]:
    """``adjoint_params`` if given, else the parameters of ``f`` when it is an
    ``nn.Module`` or a bound method of one; only tensors that require grad.
    (:func:`complete_params` adds what a closure captures.)"""
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


def _foreign_leaves(out, allowed_ids) -> list[torch.Tensor]:
    """Leaf tensors requiring grad that ``out`` depends on, outside ``allowed_ids``."""
    if not isinstance(out, torch.Tensor) or not out.requires_grad or out.grad_fn is None:
        return []
    seen, stack, foreign, found = set(), [out.grad_fn], [], set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if type(fn).__name__ == "SignBackward0":
            continue  # zero derivative (e.g. the sign of the time direction): nothing lost
        var = getattr(fn, "variable", None)
        if var is not None and id(var) not in allowed_ids and id(var) not in found:
            found.add(id(var))
            foreign.append(var)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return foreign


def hidden_leaves(f, t, y, params=()) -> list[torch.Tensor]:
    """The tensors requiring grad that ``f(t, y)`` depends on besides ``params``
    (``t`` and ``y`` are detached first).  Costs one evaluation of ``f``."""
    with torch.enable_grad():
        out = f(t.detach(), y.detach())
    if isinstance(out, tuple | list):
        out = torch.cat([o.reshape(-1) for o in out]) if out else None
    return _foreign_leaves(out, {id(p) for p in params})


def complete_params(g, s0, y0, params, kind: str, *, given: bool) -> list[torch.Tensor]:
    """The adjoint parameters of a solve: ``params`` plus, when the user gave no
    ``adjoint_params``, every tensor requiring grad that the field's output depends
    on (the tensors a closure such as ``lambda t, y: net(y)`` captures, as diffrax
    finds them).  With explicit ``adjoint_params`` nothing is added and a missed
    tensor raises (:func:`check_no_hidden_leaves`).  One evaluation of ``g``.
    """
    if given:
        check_no_hidden_leaves(g, s0, y0, params, kind)
        return params
    return list(params) + hidden_leaves(g, s0, y0, params)


def check_no_hidden_leaves(g, s0, y0, params, kind: str) -> None:
    """Raise if ``g``'s output depends on tensors requiring grad outside ``params``.

    Their gradients would silently be missing: the sensitivity methods only return
    gradients for ``y0``, the times and ``params``.  Costs one evaluation of ``g``
    (not counted) and a walk of its autograd graph.
    """
    foreign = [tuple(v.shape) for v in hidden_leaves(g, s0, y0, params)]
    if foreign:
        shapes = ", ".join(str(s) for s in foreign[:5])
        raise InputError(
            f"sensitivity={kind!r}: the vector field uses {len(foreign)} tensor(s) that "
            f"require grad but are not in `adjoint_params` (shapes {shapes}); their "
            "gradients would be missing. Add them to `adjoint_params=[...]`, or leave "
            "`adjoint_params` out to have them found automatically."
        )
