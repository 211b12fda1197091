"""Claim 11 — a multistep network is stable exactly where its scheme is.

An :class:`odenet.models.LMResNet` is a linear ``s``-step scheme over depth.  On the
field ``f(x) = λ x`` a layer maps the history ``(x_n, …, x_{n−s+1})`` by the companion
matrix of ``ρ(ζ) − z σ(ζ)`` (``z = Δt λ``), so signals *and* gradients grow per layer
like its largest root ``max|ζ(z)|``: bounded iff ``z`` lies in the scheme's region of
absolute stability and, at ``z = 0``, iff the root condition holds.  We run real
networks (Adams–Bashforth 2 and 3, the LM-ResNet with ``k = −0.5, 0.5`` and leapfrog
``k = 1``) on a grid of complex ``z``, measure the growth of the forward signal and of
the per-layer gradients by autograd, and compare with ``max|ζ|`` from
:mod:`odenet.stability.multistep` reading the network's own ``(ρ, σ)``.  Then: a
``k`` outside ``(−1, 1]`` makes the gradients explode with ``f = 0``; and for an MLP
field the eigenvalues ``Δt λ_i`` of its Jacobian at a fixed point predict the
network's growth.

Run: ``python studies/theory/11_multistep_networks.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from odenet.models import LMResNet, MLPField
from odenet.stability import multistep as M

NAME = "11_multistep_networks"
# scheme label -> LMResNet keyword arguments
SCHEMES = {
    "ab2": {"method": "ab2"},
    "ab3": {"method": "ab3"},
    "lm k=-0.5": {"method": "lm", "k": -0.5},
    "lm k=0.5": {"method": "lm", "k": 0.5},
    "lm k=1 (leapfrog)": {"method": "lm", "k": 1.0},
}
BAND = 0.05  # |max|ζ| − 1| below this: too close to the boundary to classify at this depth
BOUND = 10.0  # "bounded over depth": growth below this factor


@dataclass
class Result:
    table: pd.DataFrame  # per scheme: classification agreement and rate errors on the grid
    grid: pd.DataFrame  # per (scheme, z): predicted max|ζ| vs measured rates (plotted only:
    # 18 605 rows, too large to keep in the repository)
    zero_stability: pd.DataFrame  # per k, f = 0: root condition vs measured gradient growth
    mlp: pd.DataFrame  # per (scheme, Δt): Jacobian eigenvalues' prediction vs the network


class LinearProbe(nn.Module):
    """``f(t, x) = λ_b x_b``: one complex ``λ_b`` per sample (``x_b ∈ ℂ`` as ``(Re, Im)``).

    It keeps the state it was last evaluated at for each layer time ``t_n = n``
    (``Δt = 1``): a multistep layer evaluates ``f(t_n, x_n)`` on the network's state
    ``x_n`` itself, after any starter stage at that time (a stage with ``c = 1`` lands
    on ``t_n`` too, on a stage value), so the gradient of the loss with respect to these
    tensors is the adjoint (backpropagated gradient) ``a_n = ∂loss/∂x_n``.
    """

    def __init__(self, lam: np.ndarray):
        super().__init__()
        self.re = nn.Parameter(torch.as_tensor(lam.real, dtype=torch.float64))
        self.im = nn.Parameter(torch.as_tensor(lam.imag, dtype=torch.float64))
        self.states: dict[int, torch.Tensor] = {}

    def forward(self, t, x):
        if float(t) == round(float(t)):
            self.states[round(float(t))] = x
        a, b = x[:, 0], x[:, 1]
        return torch.stack([self.re * a - self.im * b, self.im * a + self.re * b], dim=-1)


def _window(v: torch.Tensor, s: int) -> np.ndarray:
    """``‖(v_n, …, v_{n+s−1})‖`` for each ``n``: ``v [N, B, 2]`` -> ``[N − s + 1, B]``.

    With ``s`` modes, ``s`` consecutive states determine all their amplitudes (a
    Vandermonde system), so the windowed norm has no cancellations between roots.
    """
    sq = v.pow(2).sum(-1)
    n = sq.shape[0] - s + 1
    return torch.stack([sq[i : i + n] for i in range(s)]).sum(0).sqrt().detach().numpy()


def measure(lam: np.ndarray, depth: int, x0=None, **network) -> dict:
    """Run an LMResNet with ``Δt = 1`` on ``f(x) = λx`` for every ``λ`` of the batch.

    Returns per-sample arrays: ``rate_fwd`` and ``rate_grad`` (growth per layer of the
    signal and of the adjoint over the middle half of the depth), ``growth_fwd =
    max_n X_n / X_{s−1}`` and ``growth_grad = max_n G_n / G_{L−s}`` (``X``, ``G``:
    norms over ``s`` consecutive layers of the states and of the adjoints; references:
    the first state after the starter, the adjoint at the last layers), and
    ``change = ‖x_L − x_0‖ / ‖x_0‖``.
    """
    field = LinearProbe(lam)
    net = LMResNet(field, depth, horizon=float(depth), **network)
    s = net.steps
    if x0 is None:
        x0 = torch.zeros(len(lam), 2, dtype=torch.float64)
        x0[:, 0], x0[:, 1] = 1.0, 0.3
    xs = net.trajectory(x0)
    w = torch.tensor([1.0, -0.7], dtype=torch.float64)
    layers = range(s - 1, depth)  # the multistep layers (the starter's are one-step blocks)
    adj = torch.autograd.grad((xs[-1] * w).sum(), [field.states[n] for n in layers])
    X, G = _window(xs, s), _window(torch.stack(adj), s)
    lo, hi = depth // 4, (3 * depth) // 4
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return {
            "rate_fwd": (X[hi] / X[lo]) ** (1.0 / (hi - lo)),
            "rate_grad": (G[lo - s + 1] / G[hi - s + 1]) ** (1.0 / (hi - lo)),
            "growth_fwd": X[s - 1 :].max(0) / X[s - 1],
            "growth_grad": G.max(0) / G[-1],
            "change": ((xs[-1] - xs[0]).norm(dim=-1) / xs[0].norm(dim=-1)).detach().numpy(),
        }


def predicted_rate(pair, z: complex) -> float:
    """``max|ζ|`` over the roots of ``ρ − zσ`` (the analyzer)."""
    return float(np.abs(M.stability_roots(pair, z)).max())


def grid_table(quick: bool) -> pd.DataFrame:
    n = 21 if quick else 61
    depth = 80 if quick else 160
    re, im = np.meshgrid(np.linspace(-2.5, 0.5, n), np.linspace(-1.5, 1.5, n))
    z = (re + 1j * im).ravel()
    rows = []
    for label, kw in SCHEMES.items():
        pair = LMResNet(MLPField(1, 1), 2, **kw).polynomials()
        meas = measure(z, depth, **kw)
        for i, zi in enumerate(z):
            rows.append(
                {
                    "scheme": label,
                    "z_re": zi.real,
                    "z_im": zi.imag,
                    "predicted_rate": predicted_rate(pair, zi),
                    "predicted_stable": M.is_absolutely_stable(pair, zi),
                    "zero_stable": M.is_zero_stable(pair),
                    **{key: float(v[i]) for key, v in meas.items()},
                }
            )
    t = pd.DataFrame(rows)
    t["bounded_fwd"] = t.growth_fwd <= BOUND
    t["bounded_grad"] = t.growth_grad <= BOUND
    return t


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per scheme: points outside the band, classification agreement, rate errors."""
    rows = []
    for label, g in table.groupby("scheme", sort=False):
        far = (g.predicted_rate - 1).abs() >= BAND
        gf = g[far]
        rows.append(
            {
                "scheme": label,
                "points": len(g),
                "outside_band": int(far.sum()),
                "agree_fwd": float((gf.bounded_fwd == gf.predicted_stable).mean()),
                "agree_grad": float((gf.bounded_grad == gf.predicted_stable).mean()),
                "max_rate_err_fwd": float((g.rate_fwd - g.predicted_rate).abs().max()),
                "max_rate_err_grad": float((g.rate_grad - g.predicted_rate).abs().max()),
                "median_rate_err_fwd": float((g.rate_fwd - g.predicted_rate).abs().median()),
            }
        )
    return pd.DataFrame(rows)


def zero_stability_table(quick: bool) -> pd.DataFrame:
    """LM-ResNet with ``f = 0`` for each ``k``: the root condition against the adjoint's
    growth at depths ``L`` and ``2L`` (bounded: it does not grow with depth), and the
    forward change of random inputs, where only round-off excites the root ``−k``."""
    ks = np.round(np.linspace(-1.6, 1.6, 17 if quick else 33), 10)
    depth = 60 if quick else 120
    x0 = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    zero = np.zeros(len(x0), dtype=complex)
    rows = []
    for k in ks:
        pair = LMResNet(MLPField(1, 1), 2, "lm", k=float(k)).polynomials()
        m1 = measure(zero, depth, x0, method="lm", k=float(k))
        m2 = measure(zero, 2 * depth, x0, method="lm", k=float(k))
        g1, g2 = float(m1["growth_grad"].max()), float(m2["growth_grad"].max())
        rows.append(
            {
                "k": float(k),
                "root_condition": M.is_zero_stable(pair),
                "predicted_rate": predicted_rate(pair, 0.0),
                "measured_rate": float(np.median(m2["rate_grad"])),
                f"grad_growth_L{depth}": g1,
                f"grad_growth_L{2 * depth}": g2,
                "bounded": g2 <= 1.5 * g1,
                f"roundoff_change_L{2 * depth}": float(m2["change"].max()),
            }
        )
    return pd.DataFrame(rows)


def mlp_field(dim: int = 4, seed: int = 0) -> tuple[MLPField, np.ndarray]:
    """``f(x) = W₂ tanh(W₁ x)`` with a random ``W₁`` and ``W₂ = A W₁⁺``, so the Jacobian
    at the fixed point 0 is ``A = Q diag(−1, −3, [−0.5 ± 2i]) Q⁻¹`` (a random ``Q``).
    Returns the field and ``A``'s eigenvalues computed from the field's own weights."""
    gen = torch.Generator().manual_seed(seed)
    field = MLPField(dim, 16).double()
    blocks = torch.zeros(dim, dim, dtype=torch.float64)
    blocks[0, 0], blocks[1, 1] = -1.0, -3.0
    blocks[2:, 2:] = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
    Q = torch.randn(dim, dim, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        for lin in (field.net[0], field.net[2]):
            lin.bias.zero_()
        W1 = field.net[0].weight
        field.net[2].weight.copy_(Q @ blocks @ torch.linalg.inv(Q) @ torch.linalg.pinv(W1))
        J = field.net[2].weight @ W1
    return field, torch.linalg.eigvals(J).numpy()


def mlp_table(quick: bool) -> pd.DataFrame:
    """The MLP field of :func:`mlp_field`: the network's linearized growth per layer at 0
    (autograd through the real network) against ``max_i max|ζ(Δt λ_i)|``."""
    field, lam = mlp_field()
    dim = len(lam)
    depth = 120 if quick else 200
    lo, hi = depth // 4, (3 * depth) // 4
    rows = []
    for label in ("ab2", "lm k=0.5"):
        kw = SCHEMES[label]
        pair = LMResNet(field, 2, **kw).polynomials()
        for dt in np.linspace(0.02, 0.8, 9 if quick else 40):
            net = LMResNet(field, depth, horizon=dt * depth, **kw)
            x0 = torch.zeros(1, dim, dtype=torch.float64, requires_grad=True)
            xs = net.trajectory(x0)
            s = net.steps

            def jac_norm(n, xs=xs, x0=x0, s=s):  # ‖∂(x_n, …, x_{n+s−1})/∂x_0‖_F, by rows
                rows_ = [xs[n + i, 0, j] for i in range(s) for j in range(dim)]
                return float(
                    torch.stack([torch.autograd.grad(r, x0, retain_graph=True)[0] for r in rows_])
                    .norm()
                    .item()
                )

            rows.append(
                {
                    "scheme": label,
                    "dt": float(dt),
                    "predicted_rate": max(predicted_rate(pair, dt * li) for li in lam),
                    "measured_rate": (jac_norm(hi) / jac_norm(lo)) ** (1.0 / (hi - lo)),
                    "predicted_stable": all(M.is_absolutely_stable(pair, dt * li) for li in lam),
                }
            )
    return pd.DataFrame(rows)


def compute(quick: bool = False) -> Result:
    grid = grid_table(quick)
    return Result(summarize(grid), grid, zero_stability_table(quick), mlp_table(quick))


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(SCHEMES)
    fig, axs = plt.subplots(2, 4, figsize=(18, 8.5))
    for ax, label in zip(axs.flat, labels):
        g = res.grid[res.grid.scheme == label]
        n = round(np.sqrt(len(g)))
        re = g.z_re.to_numpy().reshape(n, n)
        im = g.z_im.to_numpy().reshape(n, n)
        rate = np.clip(np.log10(g.rate_fwd.to_numpy().reshape(n, n)), -0.5, 0.5)
        pc = ax.pcolormesh(re, im, rate, cmap="RdBu_r", vmin=-0.5, vmax=0.5, shading="auto")
        ax.contour(re, im, g.predicted_rate.to_numpy().reshape(n, n), [1.0], colors="k")
        bad = g[(g.predicted_rate - 1).abs().ge(BAND) & (g.bounded_fwd != g.predicted_stable)]
        ax.plot(bad.z_re, bad.z_im, "x", color="lime", ms=4)
        ax.set(title=f"{label}", xlabel="Re Δtλ", ylabel="Im Δtλ", aspect="equal")
    fig.colorbar(pc, ax=axs[0, :].tolist(), label="log10 measured growth per layer (forward)")
    fig.suptitle(
        "LMResNet on f(x) = λx, Δt = 1: colour = measured forward growth per layer; black = "
        "analyzer max|ζ(Δtλ)| = 1; green x = bounded/unbounded disagreement outside the band"
    )
    ax = axs[1, 1]
    for i, (label, g) in enumerate(res.grid.groupby("scheme", sort=False)):
        ax.loglog(g.predicted_rate, g.rate_grad, ".", ms=2, color=f"C{i}", label=label)
    lim = [res.grid.predicted_rate.min(), res.grid.predicted_rate.max()]
    ax.loglog(lim, lim, "k-", lw=0.8)
    ax.set(xlabel="analyzer max|ζ|", ylabel="measured gradient growth per layer")
    ax.legend(fontsize=7, markerscale=4)
    ax = axs[1, 2]
    zs = res.zero_stability
    cols = [c for c in zs.columns if c.startswith("grad_growth")]
    for c in cols:
        ax.semilogy(zs.k, zs[c], "o-", ms=3, label=c.replace("grad_growth_", "gradient growth, "))
    ax.axvspan(-1, 1, color="0.9", label="root condition holds (−1, 1]")
    ax.set(xlabel="k (f = 0)", ylabel="max_n ‖a_n‖ / ‖a_L‖ (adjoints)", title="zero stability")
    ax.legend(fontsize=7)
    ax = axs[1, 3]
    for i, (label, g) in enumerate(res.mlp.groupby("scheme", sort=False)):
        ax.plot(g.dt, g.measured_rate, "o", color=f"C{i}", ms=4, label=f"{label}: network")
        ax.plot(g.dt, g.predicted_rate, "-", color=f"C{i}", label=f"{label}: max|ζ(Δtλ_i)|")
    ax.axhline(1.0, color="k", ls=":")
    ax.set(xlabel="Δt", ylabel="growth per layer", title="MLP field, Jacobian eigenvalues at 0")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _summary_lines(res: Result):
    yield res.table.to_string(index=False, float_format=lambda x: f"{x:.3g}")
    zs = res.zero_stability
    yield f"zero stability: bounded == root condition for {int((zs.bounded == zs.root_condition).sum())}/{len(zs)} values of k"  # noqa: E501
    m = res.mlp
    yield f"MLP: max |measured − predicted rate| = {(m.measured_rate - m.predicted_rate).abs().max():.3g}"  # noqa: E501


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl, write_table

    res = main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)
    for suffix in ("zero_stability", "mlp"):
        write_table(getattr(res, suffix), f"{NAME}_{suffix}", out_dir)
    return res


if __name__ == "__main__":
    from _common import run_cli, write_table

    res = run_cli(NAME, compute, plot, _summary_lines)
    for suffix in ("zero_stability", "mlp"):
        write_table(getattr(res, suffix), f"{NAME}_{suffix}")
