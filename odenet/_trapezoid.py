"""The adaptive trapezoidal rule with a Milne-device estimate of its local error.

The trapezoid ``y1 = y0 + h/2 (f0 + f1)`` has the local error ``−h³ y'''/12``.  Its
embedded forward Euler (``b̂ = [1, 0]``) estimates ``h/2 (f1 − f0) ≈ h² y''/2``, the
error of Euler, not of the trapezoid: the steps followed ``y''`` with the exponent
``1/2``, and the global error did not follow ``rtol`` (HIRES, Oregonator at rtol 1e-3:
3.3 and 3.1·``rtol``, 130× and 26× scipy Radau's, status ok).  One step's data cannot
do better: ``y0, f0, y1, f1`` of a trapezoid step lie on a quadratic, whose third
derivative is zero.  The estimate here takes the previous accepted step too, as circuit
simulators and DifferentialEquations.jl's ``Trapezoid`` do (they by divided
differences of the solution; here by Milne's device):

* the **predictor** is the previous step's quadratic (the trapezoid's own dense
  solution through ``y_{−1}, f_{−1}, f0`` over ``H``) extrapolated by ``h``, which is
  the variable-step second-order Adams–Bashforth formula
  ``y_p = y0 + h ((1 + ω/2) f0 − (ω/2) f_{−1})``, ``ω = h/H``, whose local error is
  ``h³ y''' (1/6 + 1/(4ω))``;
* so ``y1 − y_p = h³ y''' (1 + ω)/(4ω)`` and the trapezoid's local error is
  ``−ω/(3(1 + ω)) · (y1 − y_p)`` (1/6 of the difference at ``ω = 1``).

The estimate is then what every diagonally implicit pair's is
(:meth:`odenet._newton.Newton.filter_error`): filtered by ``(I − (h/2) J)⁻¹`` so that a
stiff component is damped (the trapezoid is A- but not L-stable: a stiff transient
rings, ``δ → −δ``, and the filtered estimate sees the ringing's size ``~δ``, not
``hλδ``), and multiplied by ``κ = error_safety · max(1, 1e-2/rtol)^(1/2)``, with the
tableau's measured constant (:data:`odenet.tableaus.TRAPEZOID_SAFETY`).  The controller's
exponent is ``1/3`` (``estimator_order = 2``).

A step with no previous accepted step of its row that ends where it starts with the
same derivative (the first step, a restart after a jump, an event that changed ``f``)
pays one more ``f``, at its midpoint, for an estimate of the same ``h³ y'''/12``
(:func:`midpoint_estimate`).  The Euler estimate there, times a κ measured for
``h³``, made such steps tiny: after a jump in ``f`` it cost 15 rejections where this
costs none (``tests/test_trapezoid.py``).
"""

from __future__ import annotations

import torch

from odenet._stepper import LastStep, RungeKutta, StepResult


def midpoint_estimate(f0, f1, f_mid, h) -> torch.Tensor:
    """The trapezoid's local error from its own step and one more ``f``:
    ``(2h/3) (f_mid − (f0 + f1)/2)``, ``f_mid = f(t + h/2, y0 + h (3 f0 + f1)/8)`` (the
    step's quadratic at its midpoint).

    The quadratic's slope there is ``(f0 + f1)/2 = y' + h y''/2 + h² y'''/4`` against
    the solution's ``y' + h y''/2 + h² y'''/8``, and its value is ``h³ y'''/24`` off,
    so ``f_mid − (f0 + f1)/2 = −(h²/8) (I − hJ/3) y'''``: the estimate is
    ``−(h³/12) (I − hJ/3) y'''``, exact where ``hJ`` is small, and on a stiff component
    at most 2/3 of ``h³ y'''/12`` after the filter ``(I − (h/2) J)⁻¹``.

    Parameters
    ----------
    f0, f1 : [K, n] ``f`` at the step's start and end; f_mid : [K, n] as above;
    h : [K] the step in time units.

    Returns
    -------
    [K, n], exact when ``f`` depends on ``t`` alone and ``y`` is a cubic.
    """
    hy = h.to(f0.dtype)[:, None]
    return (2 / 3) * hy * (f_mid - (f0 + f1) / 2)


def milne_estimate(y0, f0, f_prev, y1, h, h_prev) -> torch.Tensor:
    """The trapezoid's local error ``−h³ y'''/12`` from the step and its predecessor.

    Parameters
    ----------
    y0, f0 : [K, n] the state and ``f`` at the step's start.
    f_prev : [K, n] ``f`` at the start of the previous accepted step.
    y1 : [K, n] the trapezoid's solution at the end of the step.
    h, h_prev : [K] this step and the previous one, in time units (same sign).

    Returns
    -------
    [K, n], exact when ``y`` is a cubic in ``t`` (then both local errors are their
    ``h³ y'''`` terms).
    """
    w = (h / h_prev).to(y0.dtype)[:, None]
    hy = h.to(y0.dtype)[:, None]
    predicted = y0 + hy * ((1 + w / 2) * f0 - (w / 2) * f_prev)
    return -(w / (3 * (1 + w))) * (y1 - predicted)


class MilneTrapezoid(RungeKutta):
    """The trapezoid on adaptive solves (built by :func:`odenet._radau.runtime_for` for
    a tableau with ``estimator = "milne"``): the generic diagonally implicit step with
    the error estimate of :func:`milne_estimate` where its row has a previous step, and
    of :func:`midpoint_estimate` (one more ``f``) where it has none.

    It keeps, per row, the last accepted step (``[K]`` end time and length, ``[K, n]``
    ``f`` at its start and end) in a :class:`~odenet._stepper.LastStep`, which the loop
    tells every verdict.
    """

    def __init__(self, tableau, dtype, time_dtype, device, newton):
        super().__init__(tableau, dtype, time_dtype, device, newton)
        # (s_end [K], h [K], f_start [K, n], f_end [K, n])
        self.last_step = LastStep()

    def _previous(self, s, f0):
        """``(valid [K], h_prev [K], f_prev [K, n])`` of the rows' last accepted steps,
        valid where the row starts at its end with its end derivative (no jump or event
        in between); None before the first accepted step."""
        last = self.last_step.rows_of(s)
        if last is None:
            return None
        ls, lh, lf0, lf1 = last
        valid = (ls == s) & (lh != 0) & (lf1 == f0).all(dim=1)
        return valid, torch.where(valid, lh, torch.ones_like(lh)), lf0

    def step(self, g, s, y, h, f0) -> StepResult:
        with torch.no_grad():
            previous = self._previous(s.detach(), f0.detach())
        out = self._dirk_stages(g, s, y, h, f0)
        with torch.no_grad():
            y_, f0_, f1, h_ = y.detach(), f0.detach(), out.f1.detach(), h.detach()
            # the one read of the device per step: does every row have a previous step?
            every = previous is not None and bool(previous[0].all())
            if not every:
                # rows with no previous step: one more f, at the step's midpoint
                hy = h_.to(y_.dtype)[:, None]
                f_mid = g(s.detach() + h_ / 2, y_ + hy * (3 * f0_ + f1) / 8)
                err = midpoint_estimate(f0_, f1, f_mid, h_)
            if previous is not None:
                valid, h_prev, f_prev = previous
                milne = milne_estimate(y_, f0_, f_prev, out.y1.detach(), h_, h_prev)
                err = milne if every else torch.where(valid[:, None], milne, err)
            out.error = self.newton.filter_error(err, self.tableau)
            self.last_step.offer(s.detach() + h_, h_, f0_, f1)
        return out


__all__ = ["MilneTrapezoid", "midpoint_estimate", "milne_estimate"]
