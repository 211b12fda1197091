"""Linear multistep methods as data, run by the one loop with their history as state.

A k-step method ``Σ_{j=0..k} α_j y_{n+1−j} = h Σ_{j=0..k} β_j f_{n+1−j}`` (``α_0 = 1``)
is its coefficients, derived here exactly (rational arithmetic) from the
interpolation polynomial that defines each family:

* Adams–Bashforth ``ab1 … ab6`` (explicit, order k): ``∫`` of the polynomial
  through ``f_n, …, f_{n−k+1}``;
* Adams–Moulton ``am1 … am6`` (implicit, order p, solved by Newton): ``∫`` of the
  polynomial through ``f_{n+1}, f_n, …, f_{n+2−p}`` (``am1`` is backward Euler, ``am2``
  the trapezoidal rule; ``p − 1`` steps from order 2 on);
* the same correctors in predictor–corrector pairs ``abm2 … abm6`` (PECE: AB_k
  predicts, the (k−1)-step AM of order k corrects once, explicitly);
* BDF ``bdf1 … bdf6`` (implicit, order k, for stiff problems): the derivative at
  ``t_{n+1}`` of the polynomial through ``y_{n+1}, …, y_{n+1−k}``.

The history (past ``y`` and ``f``) is *method state*: the loop carries it, commits
it on acceptance and keeps the old one on rejection (see ``docs/contributing.md``).
Fixed grids only (no error control): the first ``k − 1`` steps are taken by a
one-step starter of at least the method's order (``dop853`` for the explicit Adams
formulas, ``radau_iia5`` for the implicit ones: Adams–Moulton and BDF).  On a grid
of unequal steps (``t`` itself as the grid, the last step shortened to land on an
output) the coefficients are those of the same interpolation polynomial through the
actual past times (:func:`lagrange_integrals`, :func:`lagrange_slopes`), so the order
holds on any grid; on equal steps they are the exact rational ones.  Adams formulas
are zero-stable on every grid; BDFk only while the steps grow no faster than
:data:`BDF_GROWTH_LIMIT` (a ``StabilityWarning`` says when a grid does).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from odenet._errors import InputError, StabilityWarning, warn_user
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


# Gauss–Legendre points on [0, 1] of the variable-step coefficients: exact for the
# Lagrange polynomials of degree ≤ 13 (the Adams formulas on up to 14 nodes)
GAUSS_POINTS = 7


@functools.cache
def _gauss01():
    x, w = np.polynomial.legendre.leggauss(GAUSS_POINTS)
    return (x + 1) / 2, w / 2


def lagrange_integrals(z: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``β_j = ∫_0^1 L_j(x) dx`` for the Lagrange basis on the active nodes.

    Parameters
    ----------
    z : ``[K, N]`` nodes in units of the step (``0`` the step's start, ``1`` its end,
        ``−1`` one step back on an equal-step grid); differentiable.
    active : ``[K, N]`` bool, the nodes of each row's polynomial (the others get 0).

    Returns
    -------
    ``[K, N]`` in ``z``'s dtype: ``∫_{t_n}^{t_n+h} p = h Σ_j β_j p(t_n + z_j h)`` for
    every polynomial ``p`` of degree below the number of active nodes.
    """
    u, w = (torch.as_tensor(a, dtype=z.dtype, device=z.device) for a in _gauss01())
    N = z.shape[-1]
    eye = torch.eye(N, dtype=torch.bool, device=z.device)
    skip = eye | ~active[:, None, :]  # [K, j, i]: factors left out of L_j
    one = torch.ones((), dtype=z.dtype, device=z.device)
    # products, not expanded polynomials: no cancellation, exact for equal nodes' limits
    den = torch.where(skip, one, z[:, :, None] - z[:, None, :]).prod(-1)  # [K, j]
    num = torch.where(skip[:, None], one, (u[:, None] - z[:, None, :])[:, :, None, :])
    L = num.prod(-1) / torch.where(active, den, one)[:, None, :]  # [K, q, j]
    beta = (w[:, None] * L).sum(1)
    return torch.where(active, beta, torch.zeros_like(beta))


def lagrange_slopes(z: torch.Tensor) -> torch.Tensor:
    """``a_j = L_j'(z_0)``: the derivative at the first node of the Lagrange basis.

    ``z [K, N]`` distinct nodes in units of the step; returns ``[K, N]`` with
    ``p'(z_0) = Σ_j a_j p(z_j)`` for every polynomial of degree below ``N`` (the
    variable-step BDF formula, ``z_0 = 1`` the new point).
    """
    N = z.shape[-1]
    eye = torch.eye(N, dtype=torch.bool, device=z.device)
    one = torch.ones((), dtype=z.dtype, device=z.device)
    diff = z[:, :, None] - z[:, None, :]  # [K, j, m] = z_j − z_m
    d0 = diff[:, 0]  # z_0 − z_m
    a0 = torch.where(eye[0], 0.0, 1.0 / torch.where(eye[0], one, d0)).sum(-1)
    # j ≥ 1: Π_{m≠0,j} (z_0 − z_m) / Π_{m≠j} (z_j − z_m)
    num = torch.where(eye | eye[0], one, d0[:, None, :]).prod(-1)
    den = torch.where(eye, one, diff).prod(-1)
    a = num / den
    return torch.cat([a0[:, None], a[:, 1:]], dim=1)


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
    name : str; family : ``"ab" | "abm" | "am" | "bdf"``; steps : k, the past values
        the formula reaches back to.
    order : the classical order: ``k`` (the default, 0), but for Adams–Moulton, whose
        order ``p`` formula takes ``p − 1`` steps (``am1``, backward Euler, one).
    """

    name: str
    family: str
    steps: int
    order: int = 0

    def __post_init__(self):
        if not self.order:
            object.__setattr__(self, "order", self.steps)

    @property
    def error_order(self) -> int:
        return self.order

    @property
    def is_implicit(self) -> bool:
        return self.family in ("am", "bdf")

    @property
    def is_explicit(self) -> bool:
        return not self.is_implicit

    is_adaptive = False

    @property
    def adjoint_method(self) -> str:
        """The Runge–Kutta method of the continuous adjoint on the forward's steps (a
        history cannot run backward): implicit for the implicit formulas (Adams–Moulton,
        BDF), which may be run on stiff problems."""
        return "radau_iia5" if self.is_implicit else "rk4"

    @property
    def starter(self) -> str:
        # an implicit formula may be run on a stiff problem, where an explicit starter
        # at the formula's step would blow up
        return "radau_iia5" if self.is_implicit else "dop853"

    def __repr__(self) -> str:
        kind = {
            "ab": "Adams–Bashforth",
            "abm": "Adams–Bashforth–Moulton PECE",
            "am": "Adams–Moulton",
            "bdf": "BDF",
        }
        return f"LinearMultistep({self.name!r}: {kind[self.family]}, {self.steps} steps)"

    def runtime(self, dtype, time_dtype, device, newton=None, *, fixed: bool = True):
        """The loop's method object (history as method state) for one solve."""
        return MultistepRuntime(self, dtype, time_dtype, device, newton)

    def check_use(self, *, fixed: bool | None = None, sensitivity: str = "direct") -> None:
        """Raise :class:`InputError` unless the method can run this way (``fixed=None``:
        the step mode was checked already)."""
        check_multistep_use(self, fixed=True if fixed is None else fixed, sensitivity=sensitivity)


# the largest steady step growth ω = h_{n+1}/h_n under which the variable-step BDFk
# formula is zero-stable: beyond it an extraneous root of the self-similar grid's
# difference equation leaves the unit circle (recomputed in tests/test_multistep.py)
BDF_GROWTH_LIMIT = {1: math.inf, 2: 1 + math.sqrt(2), 3: 1.618, 4: 1.2807, 5: 1.1271, 6: 1.0443}

MULTISTEP = {
    **{f"ab{k}": LinearMultistep(f"ab{k}", "ab", k) for k in range(1, 7)},
    **{f"abm{k}": LinearMultistep(f"abm{k}", "abm", k) for k in range(2, 7)},
    **{f"am{p}": LinearMultistep(f"am{p}", "am", max(p - 1, 1), p) for p in range(1, 7)},
    **{f"bdf{k}": LinearMultistep(f"bdf{k}", "bdf", k) for k in range(1, 7)},
}


class MultistepRuntime:
    """The method protocol of the loop for a :class:`LinearMultistep`, with state.

    State ``(F [k, K, n], Y [k, K, n], count [K], S [k, K])``: the past derivatives,
    states and step-start times, newest first, and how many of them there are.

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
        self._ratios_seen = [0, 0]  # variable BDF steps, those above the growth limit
        self._warned = False
        if lm.family == "bdf":
            a = bdf(k)
            self.beta_h = float(1 / a[0])  # y_{n+1} = base + h β f_{n+1}
            self.alpha = [float(-a[j] / a[0]) for j in range(1, k + 1)]  # on y_n, y_{n−1}, …
        else:
            if lm.family != "am":
                self.b = [float(x) for x in adams_bashforth(k)]
            if lm.family in ("abm", "am"):  # the corrector of order p: p − 1 steps
                self.c = [float(x) for x in adams_moulton(lm.order - 1)]

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
        past_s = torch.full((self.k, K), math.nan, dtype=s.dtype, device=s.device)
        return hist, hist.clone(), count, past_s

    @staticmethod
    def commit_state(old, new, accept):
        if bool(accept.all()):
            return new
        return tuple(torch.where(_expand(accept, n), n, o) for n, o in zip(new, old))

    # --- the step -----------------------------------------------------------------------
    def step(self, g, s, y, h, f0, state):
        F, Y, count, S = state
        k = self.k
        frozen = h == 0
        usable = (count >= k - 1) | frozen
        y1 = None
        ok = None
        if bool(usable.any()):
            y1, ok = self._multistep(g, s, y, h, f0, F, Y, S, usable & ~frozen)
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
        S_new = torch.cat([s.detach()[None], S[:-1]])
        count_new = (count + 1).clamp(max=k)
        return StepResult(y1, None, f0[None], None, ok), (F_new, Y_new, count_new, S_new)

    def _nodes(self, s, h, S, rows):
        """The past step starts in units of this step, ``x_j = (t_{n−j} − t_n)/h`` for
        ``j < k`` (``[K, k]`` float64, ``x_0 = 0``), and which rows lie on equal steps.

        Rows outside ``rows`` (too little history, frozen) get the equal-step nodes, so
        their discarded coefficients stay finite (a NaN there would reach the gradient
        through ``torch.where``'s zero).  Two nodes are equal when they differ by no
        more than the round-off of the times they come from (``time_eps``)."""
        k = self.k
        wide = torch.float64
        equal_x = -torch.arange(k, dtype=wide, device=s.device)
        sw, hw = s.detach().to(wide), h.detach().to(wide)
        h_safe = torch.where(hw == 0, torch.ones_like(hw), hw)
        x = torch.cat([torch.zeros_like(sw)[None], (S[: k - 1].to(wide) - sw) / h_safe]).T
        x = torch.where(rows[:, None], x, equal_x)
        slack = 4 * self.time_eps * torch.maximum(sw.abs(), (sw + hw).abs()) / h_safe.abs()
        equal = ((x - equal_x).abs() <= equal_x.abs() * (1e-9 + slack[:, None])).all(dim=1)
        return x, equal | ~rows

    def _watch_ratios(self, x, rows):
        """Warn once per solve (:class:`StabilityWarning`) when many steps of a variable
        BDF grid grow faster than the formula's zero stability allows: a grid whose
        steps grow steadily by ``ω`` is zero-stable only for ``ω ≤`` :data:`BDF_GROWTH_LIMIT`
        (an isolated jump in the step size is harmless)."""
        if self._warned:
            return
        with torch.no_grad():
            ends = torch.cat([torch.ones_like(x[:, :1]), x], dim=1)  # 1, 0, x_1, ...
            widths = ends[:, :-1] - ends[:, 1:]  # this step first, then the past ones
            growth = torch.where(rows[:, None], widths[:, :-1] / widths[:, 1:], 0.0).amax()
        limit = BDF_GROWTH_LIMIT[self.k]
        seen = self._ratios_seen
        seen[0] += 1
        if float(growth) > limit:
            seen[1] += 1
        if seen[1] >= 5 and seen[1] > seen[0] / 4:
            self._warned = True
            warn_user(
                f"{self.lm.name}: {seen[1]} of {seen[0]} steps so far grew by more than "
                f"{limit:.3g}× over the step before (the latest by {float(growth):.3g}×): a "
                f"grid of steps growing steadily faster than that is not zero-stable for "
                f"BDF{self.k}, so errors may be amplified from step to step. Use a grid "
                "whose steps change more slowly, a lower order (BDF2 tolerates steady "
                "growth up to 2.41×), or the adaptive 'bdf'.",
                StabilityWarning,
            )

    def _multistep(self, g, s, y, h, f0, F, Y, S, rows):
        hy = h.to(y.dtype)[:, None]
        fam = self.lm.family
        x, equal = self._nodes(s, h, S, rows)
        # unequal steps (a shortened last step, a non-uniform grid): the coefficients of
        # the interpolation polynomial through the actual past times, so the order holds
        vary = self.k > 1 and not bool(equal.all())
        past_f = [f0] + [F[j] for j in range(self.k - 1)]
        if fam in ("ab", "abm"):
            if vary:
                b = lagrange_integrals(x, torch.ones_like(x, dtype=torch.bool))
                b = torch.where(equal[:, None], b.new_tensor(self.b), b).to(y.dtype)
                incr = torch.einsum("kj,jkn->kn", b, torch.stack(past_f))
            else:
                incr = sum(b * fj for b, fj in zip(self.b, past_f))
            y_pred = y + hy * incr
            if fam == "ab":
                return y_pred, None
            f_pred = g(s + h, y_pred)  # PECE: evaluate, correct (the loop evaluates again)
            c = self._moulton(x, equal, vary, y.dtype)
            terms = [f_pred, *past_f[: len(self.c) - 1]]
            if vary:
                return y + hy * torch.einsum("kj,jkn->kn", c, torch.stack(terms)), None
            return y + hy * sum(cj * fj for cj, fj in zip(c, terms)), None
        if fam == "am":
            # y_{n+1} = y_n + h Σ_{j≥1} c_j f_{n+1−j} + h c_0 f(t_{n+1}, y_{n+1}), by Newton
            c = self._moulton(x, equal, vary, y.dtype)
            terms = past_f[: len(self.c) - 1]
            if vary:
                c0 = c[:, 0]
                base = y + hy * torch.einsum("kj,jkn->kn", c[:, 1:], torch.stack(terms))
            else:
                c0 = c[0]
                base = y + hy * sum(cj * fj for cj, fj in zip(c[1:], terms)) if terms else y
            return self._implicit(g, s, y, h, f0, base, c0)
        # BDF: y_{n+1} = Σ α_j y_{n+1−j} + h β f(t_{n+1}, y_{n+1}), by Newton
        past = [y] + [Y[j] for j in range(self.k - 1)]
        if vary:
            a = lagrange_slopes(torch.cat([torch.ones_like(x[:, :1]), x], dim=1))
            alpha = torch.where(equal[:, None], a.new_tensor(self.alpha), -a[:, 1:] / a[:, :1])
            beta_h = torch.where(equal, self.beta_h, 1 / a[:, 0])
            self._watch_ratios(x, rows)
            base = torch.einsum("kj,jkn->kn", alpha.to(y.dtype), torch.stack(past))
        else:
            beta_h = self.beta_h
            base = sum(a * yj for a, yj in zip(self.alpha, past))
        return self._implicit(g, s, y, h, f0, base, beta_h)

    def _moulton(self, x, equal, vary, dtype):
        """The Adams–Moulton weights ``c_j`` on ``f_{n+1}, f_n, …`` (``len(self.c)`` of
        them): the exact ones on equal steps, else ``∫`` of the Lagrange basis through
        the actual times (``[K, m]``; a list of floats when no row varies)."""
        if not vary:
            return self.c
        m = len(self.c)
        z = torch.cat([torch.ones_like(x[:, :1]), x[:, : m - 1]], dim=1)
        c = lagrange_integrals(z, torch.ones_like(z, dtype=torch.bool))
        return torch.where(equal[:, None], c.new_tensor(self.c), c).to(dtype)

    def _implicit(self, g, s, y, h, f0, base, beta_h):
        """``y_{n+1} = base + h β f(t_{n+1}, y_{n+1})`` by Newton (``β`` a float or
        ``[K]``), started from the explicit Euler step; joined to the graph by the
        Newton's implicit-function attach when one is recorded."""
        hy = h.to(y.dtype)[:, None]
        t1 = s + h
        hA = (h * beta_h).to(y.dtype)[:, None, None]
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
    """``mask [K]`` broadcast against a state entry (``[K]``, ``[k, K]`` or ``[k, K, n]``)."""
    return mask[(None,) * (like.dim() > 1) + (slice(None),) + (None,) * (like.dim() > 2)]


def check_multistep_use(lm: LinearMultistep, *, fixed: bool, sensitivity: str) -> None:
    """Every sensitivity works (the tapes keep the history beside their checkpoints, so
    a replay continues it); only the step mode is checked."""
    if not fixed:
        raise InputError(
            f"method {lm.name!r} is a fixed-step multistep method: pass `step_size=h` (or "
            "grid_on_outputs=True), or use the adaptive 'bdf'/'ndf'."
        )
