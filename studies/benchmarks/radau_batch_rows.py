"""Radau IIA and the adaptive trapezoid on a batch of rows with their own time grids:
f-evaluations and steps of the batch against the same rows solved one by one.

A batch shares each step's Newton iterations and Jacobian decisions among its rows;
what a row remembers of its own last accepted step (Radau's starting guess, the
trapezoid's Milne estimate: ``odenet._stepper.LastStep``) is per row.  The problem is
Van der Pol with μ = 10, 100, 1000 as three rows, each on its own grid.

    python studies/benchmarks/radau_batch_rows.py

Prints, per method and rtol, the batch's f-evaluations (every row's calls, counted once
per batched call) and each row's accepted/rejected steps, beside the sum of the single
solves'.  Measuring a change: run it once with a worktree of the base commit first on
``PYTHONPATH`` and once without (``stiff_results.md``, session 36).
"""

from __future__ import annotations

import torch

import odenet

D = torch.float64
MU = (10.0, 100.0, 1000.0)
T = ((0.0, 1.0, 3.0), (0.0, 2.0, 4.0), (0.0, 1.5, 2.5))


def van_der_pol(mu):
    def f(t, y):
        return torch.stack([y[..., 1], mu * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)

    return f


def main() -> None:
    mus = torch.tensor(MU, dtype=D)
    y0 = torch.tensor([[2.0, 0.0]] * len(MU), dtype=D)
    t = torch.tensor(T, dtype=D)
    print(odenet.__file__)
    print("| method | rtol | batch nfe | singles' nfe | batch acc/rej per row | single acc/rej |")
    print("|---|---|---|---|---|---|")
    for method in ("radau_iia5", "radau_iia3", "radau_iia9", "trapezoid"):
        for rtol in (1e-3, 1e-6):
            if method == "trapezoid" and rtol < 1e-4:
                continue  # a second-order method at 1e-6: 1e5 steps on μ = 1000
            kw = dict(method=method, rtol=rtol, atol=rtol)
            batch = odenet.solve(van_der_pol(mus), y0, t, **kw)
            singles = [odenet.solve(van_der_pol(m), y0[k], t[k], **kw) for k, m in enumerate(MU)]
            b = batch.stats
            acc_rej = ", ".join(
                f"{int(a)}/{int(r)}" for a, r in zip(b["accepted"], b["rejected"], strict=True)
            )
            one = ", ".join(
                f"{int(s.stats['accepted'])}/{int(s.stats['rejected'])}" for s in singles
            )
            nfe_singles = sum(int(s.stats["nfe"]) for s in singles)
            print(f"| {method} | {rtol:g} | {int(b['nfe'])} | {nfe_singles} | {acc_rej} | {one} |")


if __name__ == "__main__":
    main()
