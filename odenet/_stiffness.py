"""Stiffness detection for explicit Runge–Kutta methods (Hairer's test).

Two stages at the same node, ``k_i = f(t + c h, Y_i)`` and ``k_j = f(t + c h, Y_j)``
(DOPRI5's and Tsit5's last two, at ``c = 1``), give

    ρ = ‖k_j − k_i‖ / ‖Y_j − Y_i‖,   Y_j − Y_i = h Σ_l (a_jl − a_il) k_l,

the growth of ``f`` along one direction of its Jacobian: ``|λ|`` on ``y' = λy``, at
most ``‖J‖`` in general (Hairer & Wanner, *Solving ODEs II*, §IV.2; DOPRI5's and
DOP853's ``HLAMB``).  Where ``h·ρ`` stays near the method's real stability boundary
(3.31 for dopri5; above :data:`BOUNDARY_FRACTION` of it) step after step, the step
size is set by stability, not by accuracy: the problem is stiff for this method, and
more steps will not help.

The test reads the accepted rows (a few operations on the stages the step already
has; nothing in the solve changes) every :data:`CHECK_EVERY` loop iterations, and on
every iteration while a row has a test above the limit counted (DOPRI5's schedule,
with its NSTIFF of 1000 here 10).  A row is declared stiff after :data:`STIFF_AFTER`
tests above the limit with never :data:`CALM_AFTER` in a row below it (Hairer's
counts); it is reported from the first test of that run.
"""

from __future__ import annotations

import functools
import math

import torch

CHECK_EVERY = 10
STIFF_AFTER = 15
CALM_AFTER = 6
# of the method's real stability boundary.  DOPRI5 takes 3.25 of 3.3066 (0.98), about
# which its controller oscillates on a stiff problem; odenet's steps can settle at a
# fixed fraction below it instead (y' = −500(y − cos t) − sin t at rtol 1e-6: 0.71
# dopri5, 0.78 tsit5, 0.89 dop853), while the 90 % quantile of non-stiff problems'
# steps at rtol ≤ 1e-3 stays below 0.5 (studies/benchmarks/stiffness_detection.py)
BOUNDARY_FRACTION = 0.7
# the stage states' difference, in units of y's round-off, below which h·ρ is not read
READABLE = 100.0


@functools.cache
def stability_limit(tableau) -> float:
    """``BOUNDARY_FRACTION`` times the length of the method's real stability interval
    (the analyzer's exact value: 3.31 for dopri5, 3.51 for tsit5, 6.39 for dop853)."""
    from odenet.stability.regions import real_stability_interval  # the analyzer sits above

    return BOUNDARY_FRACTION * abs(real_stability_interval(tableau))


@functools.cache
def stability_polynomial(tableau) -> tuple[float, ...]:
    """``R(z) = Σ_k P_k z^k`` of the explicit tableau, ``P_0`` first (the analyzer's
    exact coefficients, rounded)."""
    from odenet.stability.regions import stability_polynomials

    return tuple(float(p) for p in stability_polynomials(tableau)[0])


def stage_pair(tableau) -> tuple[int, int] | None:
    """The last two stages ``i < j`` at the same node ``c`` (``i ≥ 1``, different rows
    of ``A``): the pair the test reads; None where the tableau has none (bosh3,
    heun, fehlberg2)."""
    c, A = tableau.c_exact, tableau.A_exact
    for j in range(tableau.stages - 1, 1, -1):
        for i in range(j - 1, 0, -1):
            if c[i] == c[j] and A[i] != A[j]:
                return i, j
    return None


class StiffnessMonitor:
    """Hairer's stiffness test on the accepted steps of one solve (see the module).

    ``since``: per row, the internal time from which the row was found stiff
    (``inf``: never); a Python float on the host backend, ``[K]`` otherwise.
    """

    def __init__(self, rk, pair: tuple[int, int], ops, like):
        i, j = pair
        self.i, self.j = i, j
        self.dA = (rk.A[j] - rk.A[i])[None]  # [1, S]: Y_j − Y_i = h (dA · k)
        self.limit = stability_limit(rk.tableau)
        self.ops = ops
        self.zero = ops.full(0.0, like)
        self.above = self.calm = self.zero
        self.start = self.since = ops.full(math.inf, like)
        self.calls = 0
        self.suspect = False  # a row has a test above the limit counted: test every step
        # Σ log|R(−h·ρ)| over the tested steps: the growth of a perturbation with the
        # steps held fixed, which is what backpropagation through the steps follows
        self.frozen_growth = self.zero
        self.P = stability_polynomial(rk.tableau)

    @classmethod
    def of(cls, rk, ops, like) -> StiffnessMonitor | None:
        """A monitor for an adaptive explicit Runge–Kutta ``rk``; None for methods the
        test does not apply to (implicit, multistep, no two stages at one node)."""
        if rk.implicit or getattr(rk, "has_state", False):
            return None
        pair = stage_pair(rk.tableau)
        return None if pair is None else cls(rk, pair, ops, like)

    def h_rho(self, ks: torch.Tensor, h, y: torch.Tensor) -> torch.Tensor:
        """``h·ρ = ‖k_j − k_i‖ / ‖dA · k‖`` per row (the step's ``h`` cancels): ``[K]``
        from stages ``[S, K, n]`` and ``y [K, n]``, 0-dim from ``[S, n]`` and ``[1, n]``;
        NaN where it cannot be read.

        The stages were evaluated at the *rounded* stage states, whose difference
        carries the round-off of ``y``: where ``‖Y_j − Y_i‖ = |h|·‖dA · k‖`` is below
        :data:`READABLE` times that round-off the quotient is noise over a tiny
        number (a smooth solve at rtol 1e-13, or in float32), not a rate of ``f``."""
        S = ks.shape[0]
        num = (ks[self.j] - ks[self.i]).norm(dim=-1)
        den = (self.dA @ ks.reshape(S, -1)).reshape(ks.shape[1:]).norm(dim=-1)
        gap = den * (abs(h) if isinstance(h, float) else h.abs().to(den.dtype))
        noise = torch.finfo(den.dtype).eps * y.norm(dim=-1).reshape(gap.shape)
        readable = (gap > READABLE * noise) & (den > 0)
        return torch.where(readable, num / torch.where(readable, den, 1.0), math.nan)

    def check(self, s, h, y: torch.Tensor, ks: torch.Tensor, accept) -> None:
        """After a verdict: count the accepted rows' ``h·ρ`` against the limit (on the
        schedule of the module's docstring).  ``s`` the step's start and ``h`` its size
        (floats on the host backend, ``[K]`` otherwise), ``y`` its start state, ``ks``
        the trial's stages.  A row whose ``h·ρ`` cannot be read counts neither way."""
        self.calls += 1
        if self.calls % CHECK_EVERY and not self.suspect:
            return
        ops = self.ops
        with torch.no_grad():
            hrho = self.h_rho(ks.detach(), h, y.detach())
            if isinstance(accept, bool):
                hrho = float(hrho)
            hit = accept & (hrho > self.limit)
            quiet = accept & (hrho <= self.limit)  # (NaN is neither)
            # a run of tests above the limit starts where none was counted
            self.start = ops.where(hit & (self.above == 0), s, self.start)
            self.above = ops.where(hit, self.above + 1, self.above)
            self.calm = ops.where(hit, self.zero, ops.where(quiet, self.calm + 1, self.calm))
            self.above = ops.where(self.calm >= CALM_AFTER, self.zero, self.above)
            found = (self.above >= STIFF_AFTER) & (self.since == math.inf)
            self.since = ops.where(found, self.start, self.since)
            self.suspect = ops.any(self.above > 0)  # (one read of the device per test)
            gain = self._log_gain(hrho)
            read = accept & ops.isfinite(gain)
            self.frozen_growth = ops.where(read, self.frozen_growth + gain, self.frozen_growth)

    def _log_gain(self, hrho):
        """``log|R(−h·ρ)|`` (NaN where ``h·ρ`` was not read): the step's amplification
        along the direction the test read, as if its eigenvalue were real."""
        z, r = -hrho, 0.0
        for p in reversed(self.P):  # Horner
            r = r * z + p
        if isinstance(r, float):
            return math.log(max(abs(r), 1e-300)) if r == r else r
        return r.abs().clamp_min(1e-300).log()
