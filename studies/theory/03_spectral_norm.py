"""Claim 3 — spectral radius vs spectral norm.

A linear RNN ``h_{k+1} = W h_k`` with ``ρ(W) = 0.9 < 1`` still amplifies transiently
when ``W = 0.9 I + a N`` is non-normal (``N`` the shift): ``‖W^k‖`` peaks far above 1
before it decays, and a product of two non-normal matrices each with spectral radius
0.5 can grow without bound.  The analyzer (``odenet.stability.analyze``) estimates
the peak from the Jacobian chain; we measure it by running ``odenet.models.RNN``
from the identity batch.  Spectral normalisation (``W / σ_max``) makes ``‖W‖ = 1``,
so ``‖W^k‖ ≤ 1``: no transient, no explosion.

Run: ``python studies/theory/03_spectral_norm.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from odenet.models import RNN, spectral_normalize
from odenet.stability import analyze, kreiss_constant

NAME = "03_spectral_norm"
RHO = 0.9


@dataclass
class Result:
    table: pd.DataFrame  # per non-normality a: ρ, ‖W‖, analyzer peak, measured peak, SN peak
    curves: dict  # a -> (measured ‖W^k‖ [N+1], spectral-normalised ‖W^k‖ [N+1])
    alternating: pd.DataFrame  # product of two ρ=0.5 matrices: growth per pair
    dim: int


def jordan_like(d: int, a: float) -> torch.Tensor:
    """``0.9 I + a N`` (``N`` ones on the superdiagonal): ``ρ = 0.9``, non-normal for a > 0."""
    return RHO * torch.eye(d, dtype=torch.float64) + a * torch.diag(
        torch.ones(d - 1, dtype=torch.float64), 1
    )


def linear_rnn(W: torch.Tensor) -> RNN:
    """``odenet.models.RNN`` with identity activation, no input: ``h_{k+1} = W h_k``."""
    d = W.shape[0]
    rnn = RNN(1, d, activation="identity").double()
    with torch.no_grad():
        rnn.field.W.weight.copy_(W)
        rnn.field.U.weight.zero_()
        rnn.field.U.bias.zero_()
    return rnn


def measured_power_norms(rnn: RNN, n: int) -> np.ndarray:
    """``‖W^k‖₂`` for ``k = 0..n`` measured by running the RNN on the identity batch."""
    d = rnn.hidden_dim
    with torch.no_grad():
        hs = rnn(torch.zeros(d, n, 1, dtype=torch.float64), h0=torch.eye(d, dtype=torch.float64))
    # hs[b, k] = W^{k+1} e_b, so the matrix with columns hs[:, k] is W^{k+1}
    norms = torch.linalg.matrix_norm(hs.permute(1, 2, 0), ord=2)
    return np.concatenate([[1.0], norms.numpy()])


def compute(quick: bool = False) -> Result:
    d = 8 if quick else 16
    n = 200 if quick else 500
    avals = [0.0, 0.25, 0.5, 1.0, 2.0] if quick else [0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]
    rows, curves = [], {}
    for a in avals:
        W = jordan_like(d, a)
        rep = analyze(W, n_steps=n)
        rnn = linear_rnn(W)
        meas = measured_power_norms(rnn, n)
        spectral_normalize(rnn.field.W)  # W ← W / σ_max(W) (power iteration)
        rnn.eval()
        sn = measured_power_norms(rnn, n)
        rows.append(
            {
                "a": a,
                "spectral_radius": float(rep.spectral_radius[0]),
                "spectral_norm": float(rep.spectral_norm[0]),
                "kreiss_constant": float(kreiss_constant(W.numpy())),
                "analyzer_peak": float(rep.transient_peak),
                "analyzer_peak_step": int(rep.transient_peak_step),
                "measured_peak": float(meas.max()),
                "measured_peak_step": int(meas.argmax()),
                "verdict": rep.verdict,
                "spectral_normalized_peak_after_step_0": float(sn[1:].max()),
                "sn_factor": float(1.0 / rep.spectral_norm[0]),
            }
        )
        curves[a] = (meas, sn)
    # a product of two non-normal matrices, each with spectral radius 0.5
    A = torch.tensor([[0.5, 2.0], [0.0, 0.5]], dtype=torch.float64)
    B = A.T.clone()
    alt = []
    rho_pair = max(abs(np.linalg.eigvals((B @ A).numpy())))  # ρ(BA) > 1 although ρ(A) = ρ(B) = 0.5
    for pairs in (5, 10, 20, 40):
        rep = analyze(torch.stack([A, B] * pairs))
        alt.append(
            {
                "steps": 2 * pairs,
                "rho_each": float(rep.spectral_radius.max()),
                "log_end_to_end_growth": float(rep.log_forward_growth[-1]),
                "predicted_log_growth": pairs * float(np.log(rho_pair)),
                "verdict": rep.verdict,
            }
        )
    return Result(pd.DataFrame(rows), curves, pd.DataFrame(alt), d)


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(15, 4.3))
    for i, (a, (meas, sn)) in enumerate(res.curves.items()):
        axs[0].semilogy(meas, color=f"C{i % 10}", label=f"a = {a}")
        axs[1].semilogy(sn, color=f"C{i % 10}")
    axs[0].axhline(1, color="k", ls=":")
    axs[0].set(
        xlabel="k (time steps)",
        ylabel="‖W^k‖ (measured on the RNN)",
        title="ρ(W) = 0.9 for every a: transient growth",
    )
    axs[0].legend(fontsize=7)
    axs[1].axhline(1, color="k", ls=":")
    axs[1].set(xlabel="k", ylabel="‖(W/σ_max)^k‖", title="after spectral normalization")
    t = res.table
    axs[2].loglog(t.kreiss_constant, t.measured_peak, "o", label="measured peak")
    axs[2].loglog(t.kreiss_constant, t.analyzer_peak, "x", label="analyzer peak")
    k = np.geomspace(1, t.kreiss_constant.max(), 50)
    axs[2].fill_between(k, k, np.e * res.dim * k, color="0.9", label="Kreiss: K ≤ peak ≤ e d K")
    axs[2].set(xlabel="Kreiss constant K", ylabel="sup_k ‖W^k‖", title="peak vs Kreiss bound")
    axs[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_lines(res: Result):
    yield res.table.to_string(index=False, float_format=lambda x: f"{x:.5g}")
    yield res.alternating.to_string(index=False, float_format=lambda x: f"{x:.5g}")


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    from _common import run_cli, write_table

    res = run_cli(NAME, compute, plot, _summary_lines)
    write_table(res.alternating, NAME + "_alternating")
