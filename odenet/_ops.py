"""Two number types for one set of control rules: Python floats or ``[K]`` tensors.

The step loop and the controller decide with a handful of operations — select,
clip, min/max, finiteness, reductions to a host bool.  Written against one of these
namespaces, a rule is written once and runs either on Python floats (one system:
no tensor dispatch at all, which is what makes small systems fast) or on ``[K]``
tensors (independent rows with their own steps, masked updates).  Arithmetic and
comparisons (``+ * ** <= &``) are the same on both and need no wrapper.
"""

from __future__ import annotations

import math

import torch


class HostOps:
    """Scalars and bools of one system."""

    @staticmethod
    def where(cond, a, b):
        return a if cond else b

    @staticmethod
    def clip(x, lo=None, hi=None):
        if lo is not None and x < lo:
            x = lo
        if hi is not None and x > hi:
            x = hi
        return x

    @staticmethod
    def minimum(a, b):
        return a if a <= b else b

    @staticmethod
    def maximum(a, b):
        return a if a >= b else b

    @staticmethod
    def isfinite(x) -> bool:
        return math.isfinite(x)

    @staticmethod
    def sqrt(x):
        return math.sqrt(x)

    @staticmethod
    def log(x):
        return math.log(x)

    @staticmethod
    def not_(x) -> bool:
        return not x

    @staticmethod
    def all(x) -> bool:
        return bool(x)

    @staticmethod
    def any(x) -> bool:
        return bool(x)

    @staticmethod
    def full(value, like=None):
        return value


class TensorOps:
    """``[K]`` tensors, one entry per independent row."""

    @staticmethod
    def where(cond, a, b):
        return torch.where(cond, a, b)

    @staticmethod
    def clip(x, lo=None, hi=None):
        return x.clamp(lo, hi)

    @staticmethod
    def minimum(a, b):
        return torch.minimum(a, b) if isinstance(b, torch.Tensor) else a.clamp_max(b)

    @staticmethod
    def maximum(a, b):
        return torch.maximum(a, b) if isinstance(b, torch.Tensor) else a.clamp_min(b)

    @staticmethod
    def isfinite(x):
        return torch.isfinite(x)

    @staticmethod
    def sqrt(x):
        return x.sqrt()

    @staticmethod
    def log(x):
        return x.log()

    @staticmethod
    def not_(x):
        return ~x

    @staticmethod
    def all(x) -> bool:
        return bool(x.all())

    @staticmethod
    def any(x) -> bool:
        return bool(x.any())

    @staticmethod
    def full(value, like):
        return torch.full_like(like, value)
