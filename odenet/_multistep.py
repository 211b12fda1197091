"""Linear multistep methods as data, run by the one loop with their history as state.

A k-step method ``Σ_{j=0..k} α_j y_{n+1−j} = h Σ_{j=0..k} β_j f_{n+1−j}`` (``α_0 = 1``)
is its coefficients, derived here exactly (rational arithmetic) from the
interpolation polynomial that defines each family:

* Adams–Bashforth ``ab1 … ab6`` (explicit, order k): ``∫`` of the polynomial
  through ``f_n, …, f_{n−k+1}``;
* Adams–Moulton correctors (order k + 1), used in predictor–corrector pairs
  ``abm2 … abm6`` (PECE: AB_k predicts, the (k−1)-step AM of order k corrects);
* BDF ``bdf1 … bdf6`` (implicit, order k, for stiff problems): the derivative at
  ``t_{n+1}`` of the polynomial through ``y_{n+1}, …, y_{n+1−k}``.

The history (past ``y`` and ``f``) is *method state*: the loop carries it, commits
it on acceptance and keeps the old one on rejection (see ``docs/contributing.md``).
Fixed steps only: the first ``k − 1`` steps, and any step whose size differs from
the one before (the last step shortened to land on an output), are taken by a
one-step starter of at least the method's order (``dop853`` for Adams,
``radau_iia5`` for BDF), so the order is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from odenet._errors import InputError
from odenet._stepper import RungeKutta, StepResult, hermite_basis
from odenet.tableaus import tableau as _tableau


def _poly_mul(p, q):
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def _lagrange(nodes, j):
    """Coefficients (lowest first) of the Lagrange basis polynomial ``L_j``."""
    p = [Fraction(1)]
    for m, u in enumerate(nodes):
        if m != j:
            p = _poly_mul(p, [-u / (nodes[j] - u), 1 / (nodes[j] - u)])
    return p


def _integral01(p):
    return sum(c / (i + 1) for i, c in enumerate(p))


def _derivative_at(p, x):
    return sum(i * c * x ** (i - 1) for i, c in enumerate(p) if i)


def adams_bashforth(k: int) -> list[Fraction]:
    """``b_j`` of ``y_{n+1} = y_n + h Σ_{j<k} b_j f_{n−j}`` (order k)."""
    nodes = [Fraction(-m) for m in range(k)]
    return [_integral01(_lagrange(nodes, j)) for j in range(k)]


def adams_moulton(k: int) -> list[Fraction]:
    """``c_j`` of ``y_{n+1} = y_n + h Σ_{j≤k} c_j f_{n+1−j}`` (k steps, order k + 1)."""
    nodes = [Fraction(1 - m) for m in range(k + 1)]
    return [_integral01(_lagrange(nodes, j)) for j in range(k + 1)]


def bdf(k: int) -> list[Fraction]:
    """``a_j`` of ``Σ_{j≤k} a_j y_{n+1−j} = h f_{n+1}`` (order k), unnormalised."""
    nodes = [Fraction(1 - m) for m in range(k + 1)]
    return [_derivative_at(_lagrange(nodes, j), Fraction(1)) for j in range(k + 1)]


@dataclass(frozen=True)
class LinearMultistep:
    """A linear multistep method: its family, step count and (derived) coefficients.

    Attributes
    ----------
    name : str; family : ``"ab" | "abm" | "bdf"``; steps : k.
    order : the classical order (k for every family here).
    """

    name: str
    family: str
    steps: int

    @property
    def order(self) -> int:
        return self.steps

    @property
    def error_order(self) -> int:
        return self.steps

    @property
    def is_implicit(self) -> bool:
        return self.family == "bdf"

    @property
    def is_explicit(self) -> bool:
        return not self.is_implicit

    is_adaptive = False

    @property
    def adjoint_method(self) -> str:
        """The Runge–Kutta method of the continuous adjoint on the forward's steps (a
        history cannot run backward): implicit for the stiff BDF family."""
        return "radau_iia5" if self.family == "bdf" else "rk4"

    @property
    def starter(self) -> str:
        return "radau_iia5" if self.family == "bdf" else "dop853"

    def __repr__(self) -> str:
        kind = {"ab": "Adams–Bashforth", "abm": "Adams–Bashforth–Moulton PECE", "bdf": "BDF"}
        return f"LinearMultistep({self.name!r}: {kind[self.family]}, {self.steps} steps)"

    def runtime(self, dtype, time_dtype, device, newton=None, *, fixed: bool = True):
        """The loop's method object (history as method state) for one solve."""
        return MultistepRuntime(self, dtype, time_dtype, device, newton)

    def check_use(self, *, fixed: bool | None = None, sensitivity: str = "direct") -> None:
        """Raise :class:`InputError` unless the method can run this way (``fixed=None``:
        the step mode was checked already)."""
        check_multistep_use(self, fixed=True if fixed is None else fixed, sensitivity=sensitivity)


MULTISTEP = {
    **{f"ab{k}": LinearMultistep(f"ab{k}", "ab", k) for k in range(1, 7)},
    **{f"abm{k}": LinearMultistep(f"abm{k}", "abm", k) for k in range(2, 7)},
    **{f"bdf{k}": LinearMultistep(f"bdf{k}", "bdf", k) for k in range(1, 7)},
}


class MultistepRuntime:
    """The method protocol of the loop for a :class:`LinearMultistep`, with state.

    State ``(F [k, K, n], Y [k, K, n], count [K], h_prev [K])``: the past derivatives
    and states, newest first, how many of them lie on the current step spacing, and
    that spacing.

    Two steps are equal when they differ by no more than the round-off of the times
    they were computed from: ``time_eps`` is the machine epsilon of the user's ``t``
    (set by :func:`odenet.solve`; float64's by default), so a float32 ``linspace`` or a
    grid far from ``t = 0`` keeps the multistep formula instead of the starter.
    """

    time_eps = float(torch.finfo(torch.float64).eps)

    has_state = True
    has_own_interpolant = False

    def __init__(self, lm: LinearMultistep, dtype, time_dtype, device, newton=None):
        self.tableau = lm
        self.lm = lm
        self.k = lm.steps
        self.implicit = lm.is_implicit
        self.newton = newton
        self.dtype = dtype
        k = self.k
        starter_tab = _tableau(lm.starter)
        self.starter = RungeKutta(starter_tab, dtype, time_dtype, device, newton)
        if lm.family == "bdf":
            a = bdf(k)
            self.beta_h = float(1 / a[0])  # y_{n+1} = base + h β f_{n+1}
            self.alpha = [float(-a[j] / a[0]) for j in range(1, k + 1)]  # on y_n, y_{n−1}, …
        else:
            self.b = [float(x) for x in adams_bashforth(k)]
            if lm.family == "abm":
                self.c = [float(x) for x in adams_moulton(k - 1)]

    @property
    def track_grad(self) -> bool:
        return self.starter.track_grad

    @track_grad.setter
    def track_grad(self, value: bool) -> None:
        # the starter's implicit stages must join the graph too
        self.starter.track_grad = value

    # --- state ------------------------------------------------------------------------
    def init_state(self, s, y, f0):
        K = y.shape[0]
        hist = y.new_zeros(self.k, *y.shape)
        count = torch.zeros(K, dtype=torch.long, device=y.device)
        return hist, hist.clone(), count, torch.full_like(s, math.nan)

    @staticmethod
    def commit_state(old, new, accept):
        if bool(accept.all()):
            return new
        F, Y, count, h = (torch.where(_expand(accept, n), n, o) for n, o in zip(new, old))
        return F, Y, count, h

    # --- the step -----------------------------------------------------------------------
    def step(self, g, s, y, h, f0, state):
        F, Y, count, h_prev = state
        k = self.k
        # the spacing's round-off: 2 ulps of the larger end time in the user's dtype
        slack = 4 * self.time_eps * torch.maximum(s.abs(), (s + h).abs())
        same = (h - h_prev).abs() <= 1e-9 * h.abs() + slack
        usable = same & (count >= k - 1) if k > 1 else torch.ones_like(same)
        frozen = h == 0
        usable = usable | frozen
        y1 = None
        ok = None
        if bool(usable.any()):
            y1, ok = self._multistep(g, s, y, h, f0, F, Y)
        if not bool(usable.all()):
            start = self.starter.step(g, s, y, h, f0)
            if y1 is None:
                y1, ok = start.y1, start.ok
            else:
                y1 = torch.where(usable[:, None], y1, start.y1)
                if start.ok is not None or ok is not None:
                    ok_ms = ok if ok is not None else torch.ones_like(usable)
                    ok_st = start.ok if start.ok is not None else torch.ones_like(usable)
                    ok = torch.where(usable, ok_ms, ok_st)
        F_new = torch.cat([f0[None], F[:-1]])
        Y_new = torch.cat([y[None], Y[:-1]])
        count_new = torch.where(same, (count + 1).clamp(max=k), torch.ones_like(count))
        h_new = torch.where(frozen, h_prev, h.detach())
        return StepResult(y1, None, f0[None], None, ok), (F_new, Y_new, count_new, h_new)

    def _multistep(self, g, s, y, h, f0, F, Y):
        hy = h.to(y.dtype)[:, None]
        fam = self.lm.family
        if fam in ("ab", "abm"):
            past = [f0] + [F[j] for j in range(self.k - 1)]
            incr = sum(b * fj for b, fj in zip(self.b, past))
            y_pred = y + hy * incr
            if fam == "ab":
                return y_pred, None
            f_pred = g(s + h, y_pred)  # PECE: evaluate, correct (the loop evaluates again)
            terms = [f_pred, *past[: len(self.c) - 1]]
            return y + hy * sum(c * fj for c, fj in zip(self.c, terms)), None
        # BDF: y_{n+1} = Σ α_j y_{n+1−j} + h β f(t_{n+1}, y_{n+1}), by Newton
        past = [y] + [Y[j] for j in range(self.k - 1)]
        base = sum(a * yj for a, yj in zip(self.alpha, past))
        t1 = s + h
        hA = (h * self.beta_h).to(y.dtype)[:, None, None]
        guess = (y + hy * f0)[:, None]

        def G(Z, t1=t1):
            return g(t1, Z[:, 0])[:, None]

        Z, ok = self.newton.stages(g, s, y, base[:, None], hA, guess, G)
        if self.track_grad and torch.is_grad_enabled():
            Z = self.newton.attach(g, t1[:, None], base[:, None], hA, Z, G)
        return Z[:, 0], ok

    # --- dense output: cubic Hermite through the step's ends ---------------------------
    def extra_stages(self, g, s, y, h, ks):
        return ks

    def interpolate(self, theta, y0, y1, f0, f1, h, ks, derivative=False):
        if theta.dim() == 1:
            return self.interpolate(theta[:, None], y0, y1, f0, f1, h, ks, derivative)[:, 0]
        th = theta.to(y0.dtype)[:, :, None]
        hy = h.to(y0.dtype)[:, None, None]
        h00, h10, h01, h11 = hermite_basis(th, derivative)
        return (
            h00 * y0[:, None] + h10 * hy * f0[:, None] + h01 * y1[:, None] + h11 * hy * f1[:, None]
        )


def _expand(mask, like):
    """``mask [K]`` broadcast against a state entry (``[K]`` or ``[k, K, n]``)."""
    if like.dim() == 1:
        return mask
    return mask[None, :, None]


def check_multistep_use(lm: LinearMultistep, *, fixed: bool, sensitivity: str) -> None:
    """Every sensitivity works (the tapes keep the history beside their checkpoints, so
    a replay continues it); only the step mode is checked."""
    if not fixed:
        raise InputError(
            f"method {lm.name!r} is a fixed-step multistep method: pass `step_size=h` (or "
            "grid_on_outputs=True), or use the adaptive 'bdf'/'ndf'."
        )
