"""Issue 14's must-hold on one hold-out cell, as the sweeps run it; and the scipy
solve, finite-difference Jacobian and closed-form check the hold-out sets' tests check
their problems with.

The sweep's own runner (``stiff.run_odenet``: atol = floors·rtol, the mixed error at the
end against the set's reference).  Status ok must mean an error within 100·rtol; the
cells the set tests pin pass in their sweep, well inside that (``within``·rtol), so a
failure status or a larger error is a regression.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies" / "benchmarks"))
from stiff import run_odenet


def assert_cell_passes(
    p, method: str, rtol: float, *, within: float = 10.0, max_steps=20000, **options
):
    """Solve hold-out problem ``p`` with ``method`` at ``rtol`` (``options`` go to
    ``odenet.solve``: ``step_t``, ``max_step``, ...): status ok and an error at most
    ``within``·rtol.  Returns the sweep's row."""
    r = run_odenet(p, method, rtol, p.atol_ratio, max_steps=max_steps, **options)
    assert r["status"] == "ok", r["status"]
    assert r["err"] <= within * rtol, r["err"] / rtol
    return r


def scipy_radau(p, rtol, atol, span=None, **kw):
    """scipy's Radau on hold-out problem ``p`` (its numpy field) over ``span`` (default
    the problem's), with dense output."""
    y0 = np.asarray(p.y0, dtype=np.float64)
    span = span or p.span
    return solve_ivp(
        p.f_numpy, span, y0, method="Radau", rtol=rtol, atol=atol, dense_output=True, **kw
    )


def fd_jacobian(p, t, y, h=1e-7):
    """``∂f/∂y`` of ``p``'s numpy field at ``(t, y)`` by central differences [n, n]."""
    return np.column_stack(
        [(p.f_numpy(t, y + h * e) - p.f_numpy(t, y - h * e)) / (2 * h) for e in np.eye(y.size)]
    )


def obeys_its_equation(p, exact, times, h=1e-6, rtol=1e-6):
    """The closed form solves the ODE: its central difference is ``f`` at ``times``."""
    for t in times:
        slope = (exact([t + h])[0] - exact([t - h])[0]) / (2 * h)
        f = p.f_numpy(t, exact([t])[0])
        np.testing.assert_allclose(slope, f, rtol=rtol, atol=rtol * np.abs(f).max())
