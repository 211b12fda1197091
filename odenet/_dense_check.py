"""Outputs inside an implicit step: the dense output's own error, checked.

An implicit Runge–Kutta step's error control reads its *end*: on a stiff problem
with slow forcing an L-stable step lands on the slow solution whatever its length, so
the estimate stays small and the steps grow long.  The interpolant between the ends
(Radau IIA's collocation polynomial, a DIRK pair's dense output or the Hermite cubic)
is not what the estimate measured; with every component stiff it strays from the slow
solution between the collocation points, and an output there was off by thousands
of tolerance units, status ok (``studies/benchmarks/stiff_fuzz.py --case 200002001
--like 200002``: radau_iia5 5730, kvaerno5 108, scipy's Radau 112).

Event crossings are located on the same interpolant (a crossing of ``y₀ = c`` inside
such a step was 1.9e3 tolerance units off in ``y₀``, ``tests/test_events.py``), so
they are checked as outputs are.

The check, at each output strictly inside an accepted step: the interpolant ``u`` has
the defect ``d = u′(t) − f(t, u(t))``; its error ``e = u − y`` obeys ``e′ ≈ J e + d``.
The estimate ``ê = (I − hγJ)⁻¹ hγ d`` is ``≈ hγ·d`` where ``hJ`` is small (the defect
over a fraction of the step) and ``≈ −J⁻¹ d`` where it is large (a stiff component
sits at its quasi-steady error), with the step's own factors (one f-call and one
solve per output, no new LU).  Where ``‖ê‖`` exceeds the tolerance the step is
rejected and retried to end on the first such output (:func:`landing`), which makes
that output a step end, whose value the step's estimate controls.

BDF needs no check: its interpolant is the polynomial its error estimate reads.
Explicit methods are not checked: their steps are bounded by stability, and their
continuous extensions are of order ``p − 1`` or ``p`` over a step of the same
accuracy.
"""

from __future__ import annotations

import torch

# at most this many outputs of one step are checked, spread over its interior: on a
# dense output grid (many outputs per step) the defect at a few of them is the
# interpolant's error over the step, and each check costs an f-call and a solve
MAX_CHECKED = 3


def checks_outputs(rk, cfg) -> bool:
    """Whether the loop checks the interpolant at outputs inside steps: adaptive steps
    of an implicit Runge–Kutta method that has the factors to filter with."""
    return (
        not cfg.fixed
        and rk.implicit
        and not getattr(rk, "has_state", False)
        and rk.newton is not None
    )


def pick(t_req: torch.Tensor, valid: torch.Tensor):
    """At most :data:`MAX_CHECKED` of each row's interior outputs ``t_req`` [K, m]
    (``valid`` [K, m]), spread evenly: ``(t [K, c], valid [K, c])``."""
    m = t_req.shape[1]
    if m <= MAX_CHECKED:
        return t_req, valid
    count = valid.sum(dim=1, keepdim=True)  # [K, 1]
    j = torch.arange(MAX_CHECKED, device=t_req.device)[None, :]
    # a row with more: the first, the last and ones evenly between of its own interior
    # outputs; a row with at most MAX_CHECKED: all of them
    spread = (j * (count - 1).clamp_min(0)) // max(MAX_CHECKED - 1, 1)
    idx = torch.where(count > MAX_CHECKED, spread, j).clamp(max=m - 1)
    return t_req.gather(1, idx), valid.gather(1, idx) & (j < count)


def output_errors(rk, g, s, h, y, y1, f0, f1, ks, t_req, valid, atol, rtol, norm):
    """The interpolant's estimated error at the outputs ``t_req`` [K, c] of a step
    ``(s [K], h [K])`` from ``y`` [K, n] to ``y1``, in the tolerance's units: [K, c]
    (0 where not ``valid``).  ``ks`` holds every stage the interpolant needs;
    ``f1 = f(s + h, y1)``; ``g(s [K], y [K, n])`` is the field."""
    K, c = t_req.shape
    h_div = torch.where(h == 0, torch.ones_like(h), h)
    theta = ((t_req - s[:, None]) / h_div[:, None]).clamp(0.0, 1.0)
    theta = torch.where(valid, theta, torch.ones_like(theta))
    with torch.no_grad():
        u = rk.interpolate(theta, y, y1, f0, f1, h, ks)  # [K, c, n]
        du = rk.interpolate(theta, y, y1, f0, f1, h, ks, derivative=True)
        du = du / h_div.to(y.dtype)[:, None, None]
        reference = torch.maximum(y.abs(), y1.abs())
        ratios = []
        for j in range(c):
            t_j = torch.where(valid[:, j], t_req[:, j], s + h)
            defect = du[:, j] - g(t_j, u[:, j])
            e = rk.interpolant_filter(defect)
            if e is None:  # no factors of the form to filter with: nothing to check
                return torch.zeros_like(t_req, dtype=y.dtype)
            # the step's own scale (max of |y|, |y1|), and |u| where the interpolant is
            # larger: a component passing through 0 at an output (atol = 0) is not
            # measured against a vanishing tolerance there
            scale = atol + rtol * torch.maximum(reference, u[:, j].abs())
            ratios.append(norm(e / scale))
        r = torch.stack(ratios, dim=1)
        return torch.where(valid & torch.isfinite(r), r, torch.where(valid, torch.inf, 0.0))


def landing(t_req: torch.Tensor, r: torch.Tensor, s: torch.Tensor):
    """``(worst [K], h_land [K])``: each row's largest ratio and the step that ends on
    its first output whose ratio is above 1 (``inf`` where none is)."""
    worst = r.max(dim=1).values
    over = r > 1
    first = torch.where(over, t_req, torch.full_like(t_req, torch.inf)).min(dim=1).values
    return worst, first - s
