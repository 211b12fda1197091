"""Claim 4 — RNNs at the edge of chaos.

For ``h_{t+1} = tanh(W h_t)``, ``W ~ N(0, g²/N)`` (``odenet.models.RNN``, no input),
the largest Lyapunov exponent (``odenet.stability.lyapunov_spectrum``) crosses 0
near ``g = 1``: order (``λ₁ = log g < 0``, the origin attracts) below, chaos above.
Gradients over long horizons (autograd through the RNN) vanish for ``g < 1`` and
explode for ``g > 1``; an orthogonal ``W`` (linear RNN) keeps every singular value of
``∂h_T/∂h_0`` at 1.  The continuous-time rate network ``dh/dt = −h + g J tanh(h)``
(``flow_map`` with RK4, ``N = 200``, λ₁ averaged over independent draws of ``J`` and
``h_0``) shows the same transition at ``g = 1`` (Sompolinsky–Crisanti–Sommers 1988).

Run: ``python studies/theory/04_edge_of_chaos.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from odenet.models import RNN
from odenet.stability import analyze, flow_map, lyapunov_spectrum

NAME = "04_edge_of_chaos"


@dataclass
class Result:
    table: pd.DataFrame  # per g: λ₁ (map), λ₁ (flow), gradient norm over T
    orthogonal: dict  # singular values of ∂h_T/∂h_0 for orthogonal W (linear RNN)


def gaussian_J(N: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(N, N, generator=gen, dtype=torch.float64) / N**0.5


def rnn_with(W: torch.Tensor, activation: str = "tanh") -> RNN:
    """``odenet.models.RNN`` with recurrent matrix ``W``, no input: ``h ↦ σ(W h)``."""
    N = W.shape[0]
    rnn = RNN(1, N, activation=activation).double()
    with torch.no_grad():
        rnn.field.W.weight.copy_(W)
        rnn.field.U.weight.zero_()
        rnn.field.U.bias.zero_()
    return rnn


def cell_map(rnn: RNN):
    x = torch.zeros(1, 1, dtype=torch.float64)
    return lambda h: rnn.field.cell(h[None], x)[0]


def gradient_norm(rnn: RNN, h0: torch.Tensor, T: int) -> float:
    """``‖∂(g·h_T)/∂h_0‖ / ‖g‖`` by autograd through ``T`` RNN steps."""
    h0 = h0.clone()[None].requires_grad_()
    hs = rnn(torch.zeros(1, T, 1, dtype=torch.float64), h0=h0)
    g = torch.ones(h0.shape[1], dtype=torch.float64)
    (hs[0, -1] @ g).backward()
    return float(h0.grad.norm() / g.norm())


def rate_network_lyapunov(
    g: float, N: int, seed: int, dt: float = 0.5, transient: int = 200, n_steps: int = 400
) -> float:
    """Largest Lyapunov exponent (per unit time) of ``ḣ = −h + g J tanh(h)``.

    One draw: ``J ~ N(0, 1/N)`` from ``seed`` (``[N, N]``), ``h_0 ~ N(0, I)`` from
    ``seed + 1``; RK4 flow map with step ``dt`` (time units), ``transient`` steps
    discarded (reach the attractor, align the tangent vector), then ``n_steps`` averaged.
    """
    gJ = g * gaussian_J(N, seed)
    h0 = torch.randn(N, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)

    def scs(t, h):  # Sompolinsky–Crisanti–Sommers rate network
        return -h + gJ @ torch.tanh(h)

    step = flow_map(scs, dt, "rk4")
    return float(lyapunov_spectrum(step, h0, n_steps, dt=dt, transient=transient, k=1)[0])


def compute(quick: bool = False) -> Result:
    N = 50 if quick else 100
    gs = [0.5, 2.0] if quick else [0.5, 0.75, 0.9, 1.1, 1.25, 1.5, 2.0, 2.5]
    n_map = 200 if quick else 1000
    # rate network: N = 200 (at N = 100 single draws often settle on a fixed point or
    # limit cycle for g = 1.5–2), averaged over independent draws of (J, h_0);
    # dt = 0.5 is well inside RK4's stability region for |eig(−I + gJ)| ≲ 3.5
    N_flow, draws, dt = 200, (2 if quick else 3), 0.5
    transient, n_flow = (100, 200) if quick else (200, 400)
    T = 50 if quick else 100
    J = gaussian_J(N, 0)
    gen = torch.Generator().manual_seed(1)
    h0 = torch.randn(N, generator=gen, dtype=torch.float64)
    rows = []
    for g in gs:
        rnn = rnn_with(g * J)
        lam_map = lyapunov_spectrum(cell_map(rnn), h0, n_map, transient=200, k=1)
        lam_flow = np.array(
            [
                rate_network_lyapunov(g, N_flow, 100 + 2 * s, dt, transient, n_flow)
                for s in range(draws)
            ]
        )
        rows.append(
            {
                "g": float(g),
                "lyapunov_map": float(lam_map[0]),
                "log_g": float(np.log(g)),
                "lyapunov_flow": float(lam_flow.mean()),
                "lyapunov_flow_se": float(lam_flow.std(ddof=1) / np.sqrt(draws)),
                "lyapunov_flow_min": float(lam_flow.min()),
                "lyapunov_flow_max": float(lam_flow.max()),
                "flow_draws": draws,
                "flow_N": N_flow,
                "grad_norm_T": gradient_norm(rnn, h0, T),
                "T": T,
            }
        )
    # orthogonal W, linear RNN: ∂h_T/∂h_0 = W^T, all singular values exactly 1
    Q, _ = torch.linalg.qr(gaussian_J(N, 2))
    rep = analyze(cell_map(rnn_with(Q, "identity")), h0, T)
    orth = {
        "singular_values": rep.singular_values,
        "grad_norm_T": gradient_norm(rnn_with(Q, "identity"), h0, T),
    }
    return Result(pd.DataFrame(rows), orth)


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = res.table
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.3))
    axs[0].plot(t.g, t.lyapunov_map, "o-", label="discrete RNN h ↦ tanh(W h)")
    axs[0].errorbar(
        t.g,
        t.lyapunov_flow,
        yerr=t.lyapunov_flow_se,
        fmt="s-",
        capsize=3,
        label=f"rate network ḣ = −h + gJ tanh(h), N = {int(t.flow_N.iloc[0])}, "
        f"mean ± s.e. of {int(t.flow_draws.iloc[0])} draws",
    )
    axs[0].plot(t.g, np.minimum(t.log_g, 0), "k:", lw=1, label="log g (origin, g < 1)")
    axs[0].plot(t.g, np.minimum(t.g - 1, 0), "k--", lw=1, label="g − 1 (origin, flow)")
    axs[0].axhline(0, color="0.5", lw=0.8)
    axs[0].axvline(1, color="0.5", lw=0.8)
    axs[0].set(xlabel="gain g", ylabel="largest Lyapunov exponent λ₁", title="order → chaos")
    axs[0].legend(fontsize=7)
    axs[1].semilogy(t.g, t.grad_norm_T, "o-", label="tanh RNN, W ~ N(0, g²/N)")
    axs[1].axhline(res.orthogonal["grad_norm_T"], color="C2", label="orthogonal W, linear")
    axs[1].axvline(1, color="0.5", lw=0.8)
    axs[1].set(
        xlabel="gain g",
        ylabel=f"‖∂L/∂h_0‖ / ‖∂L/∂h_T‖, T = {int(t['T'].iloc[0])}",
        title="gradients over a long horizon",
    )
    axs[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_lines(res: Result):
    yield res.table.to_string(index=False, float_format=lambda x: f"{x:.4g}")
    sv = res.orthogonal["singular_values"]
    yield f"orthogonal W: singular values of ∂h_T/∂h_0 in [{sv.min():.12f}, {sv.max():.12f}]"


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    from _common import run_cli

    run_cli(NAME, compute, plot, _summary_lines)
