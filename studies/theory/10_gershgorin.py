"""Claim 10 — fixed points and Gershgorin.

An RNN's fixed point ``h* = tanh(W h* + b)`` is stable if every Gershgorin disc of
the Jacobian ``J = diag(1 − h*²) W`` lies inside the unit disc (``|J_ii| + Σ_{j≠i}
|J_ij| < 1``) — a certificate from row sums alone, no eigenvalues.  For the
continuous-time RNN ``dh/dt = −h + tanh(W h + b)`` the discs must lie in the left
half-plane.  We sweep the off-diagonal coupling ``ε`` of ``W = D + ε R`` and check
the certificate against the eigenvalues: it never certifies an unstable point and is
conservative (it stops certifying before the eigenvalues leave).

Run: ``python studies/theory/10_gershgorin.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from odenet.models import RNNField
from odenet.stability.fixed_points import find_fixed_point, fixed_point_stability

NAME = "10_gershgorin"


@dataclass
class Result:
    table: pd.DataFrame  # one row per (kind, eps)
    example: dict  # discs + eigenvalues of one certified and one uncertified map case


def make_rnn(hidden: int, eps: float, seed: int = 0) -> RNNField:
    """``RNNField`` with ``W = D + ε R``: ``D`` diagonal in [-0.8, 0.8], ``R_ij ~ N(0, 1/N²)``."""
    gen = torch.Generator().manual_seed(seed)
    field = RNNField(1, hidden).double()
    with torch.no_grad():
        d = 1.6 * torch.rand(hidden, generator=gen, dtype=torch.float64) - 0.8
        r = torch.randn(hidden, hidden, generator=gen, dtype=torch.float64) / hidden
        r.fill_diagonal_(0.0)
        field.W.weight.copy_(torch.diag(d) + eps * r)
        field.U.weight.zero_()
        field.U.bias.copy_(0.3 * torch.randn(hidden, generator=gen, dtype=torch.float64))
    return field


def analyze_case(field: RNNField, kind: str):
    """Find the fixed point of the map (vanilla RNN) or the flow (continuous RNN); classify."""
    x = torch.zeros(1, 1, dtype=torch.float64)

    def cell(h):  # vanilla RNN map h -> tanh(W h + b), input 0
        return field.cell(h[None], x)[0]

    def flow(t, h):  # continuous RNN dh/dt = -h + tanh(W h + b)
        return field.drive(t, h[None], x)[0]

    g = cell if kind == "map" else flow
    h0 = torch.zeros(field.W.weight.shape[0], dtype=torch.float64)
    h_star = find_fixed_point(g, h0, kind=kind)
    return fixed_point_stability(g, h_star, kind=kind)


def compute(quick: bool = False) -> Result:
    hidden = 16 if quick else 64
    eps_grid = np.linspace(0.0, 6.0, 13 if quick else 61)
    seeds = [0] if quick else [0, 1, 2]
    rows, example = [], {}
    for seed in seeds:
        for eps in eps_grid:
            field = make_rnn(hidden, float(eps), seed)
            for kind in ("map", "flow"):
                fp = analyze_case(field, kind)
                c, r = fp.gershgorin_centers, fp.gershgorin_radii
                bound = np.max(np.abs(c) + r) if kind == "map" else np.max(c.real + r)
                lam = fp.eigenvalues
                # every eigenvalue lies in the union of the discs (Gershgorin's theorem)
                inside = all(np.any(np.abs(mu - c) <= r + 1e-9) for mu in lam)
                rows.append(
                    {
                        "seed": seed,
                        "eps": float(eps),
                        "kind": kind,
                        "gershgorin_bound": float(bound),
                        "rate": float(fp.rate),
                        "certified": bool(fp.certified),
                        "stable": fp.verdict == "stable",
                        "eigs_in_discs": inside,
                    }
                )
                if seed == 0 and kind == "map":
                    example[float(eps)] = (c, r, lam)
    return Result(pd.DataFrame(rows), example)


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(15, 4.5))
    t = res.table
    for ax, kind, limit in ((axs[0], "map", 1.0), (axs[1], "flow", 0.0)):
        for seed, grp in t[t.kind == kind].groupby("seed"):
            lab = seed == 0
            ax.plot(grp.eps, grp.gershgorin_bound, "C1-", label="Gershgorin bound" if lab else None)
            ax.plot(grp.eps, grp.rate, "C0-", label="eigenvalues" if lab else None)
        ax.axhline(limit, color="k", ls=":")
        what = "max(|c|+r) vs ρ(J)" if kind == "map" else "max(Re c+r) vs max Re λ"
        ax.set(xlabel="coupling ε", title=f"{kind}: {what}")
        ax.legend()
    eps_list = sorted(res.example)
    eps_show = [
        e
        for e in eps_list
        if res.table.query("kind=='map' and seed==0 and eps==@e").certified.iloc[0]
    ][-1]
    c, r, lam = res.example[eps_show]
    ax = axs[2]
    for ci, ri in zip(c, r):
        ax.add_patch(plt.Circle((ci.real, ci.imag), ri, fill=False, color="C1", lw=0.8))
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="k", ls=":"))
    ax.plot(lam.real, lam.imag, "C0.", label="eigenvalues")
    ax.set_aspect("equal")
    ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), title=f"map, ε = {eps_show:.2f}: discs certify")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize(res: Result) -> pd.DataFrame:
    """Per kind: largest ε certified, largest ε stable by eigenvalues, violations."""
    out = []
    for kind, g in res.table.groupby("kind"):
        out.append(
            {
                "kind": kind,
                "max_eps_certified": g[g.certified].eps.max(),
                "max_eps_stable": g[g.stable].eps.max(),
                "certified_but_unstable": int((g.certified & ~g.stable).sum()),
                "eigs_outside_discs": int((~g.eigs_in_discs).sum()),
            }
        )
    return pd.DataFrame(out)


def _summary_lines(res: Result):
    yield summarize(res).to_string(index=False)


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    from _common import run_cli

    run_cli(NAME, compute, plot, _summary_lines)
