"""Claim 7 — clipping keeps direction.

Norm clipping ``g ← g · min(1, c/‖g‖)`` rescales the gradient but keeps its
direction (cosine 1 with the raw gradient) and bounds the step by ``lr·c``. On an
exploding tanh RNN (recurrent weight ``1.5·Q``, ``Q`` orthogonal) plain SGD spikes and
fails to learn; the same SGD with clipping converges.

Run: ``python studies/theory/07_clipping.py`` (``--quick`` for CI size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from odenet.models import RNN, clip_grad_norm

NAME = "07_clipping"


@dataclass
class Result:
    table: pd.DataFrame  # one row per (seed, clipped, step): loss, grad_norm
    direction: pd.DataFrame  # one row per random gradient: raw norm, clipped norm, cosine
    max_norm: float
    lr: float


def clip_direction_check(n_grads: int = 200, max_norm: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Clip random multi-tensor gradients of log-uniform scale; report norm and cosine.

    Returns a DataFrame with columns ``raw_norm``, ``clipped_norm``, ``cosine``.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_grads):
        scale = 10 ** (torch.rand((), generator=gen).item() * 6 - 3)  # 1e-3 .. 1e3
        ps = [torch.nn.Parameter(torch.zeros(s)) for s in [(7, 5), (5,), (3, 3, 2)]]
        for p in ps:
            p.grad = scale * torch.randn(p.shape, generator=gen, dtype=p.dtype)
        raw = torch.cat([p.grad.flatten() for p in ps]).clone()
        clip_grad_norm(ps, max_norm)
        new = torch.cat([p.grad.flatten() for p in ps])
        cos = torch.dot(raw.double(), new.double()) / (raw.double().norm() * new.double().norm())
        rows.append(
            {"raw_norm": raw.norm().item(), "clipped_norm": new.norm().item(), "cosine": cos.item()}
        )
    return pd.DataFrame(rows)


def train_rnn(
    clip: float | None,
    *,
    gain: float = 1.5,
    lr: float = 0.3,
    steps: int = 150,
    T: int = 40,
    H: int = 32,
    batch: int = 64,
    seed: int = 0,
) -> tuple[list[float], list[float]]:
    """Train a tanh RNN to output the sum of its first 5 inputs; return (losses, grad norms).

    The recurrent matrix starts at ``gain·Q`` (``Q`` Haar orthogonal), so with
    ``gain > 1`` the backward products ``∏ Wᵀ diag(1 − h²)`` can explode.
    Training stops early (loss recorded as ``inf``) if the loss becomes non-finite.
    """
    torch.manual_seed(seed)
    rnn = RNN(1, H, method="euler", dt=1.0, activation="tanh")  # h' = tanh(W h + U x + b)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(H, H))
        rnn.field.W.weight.copy_(gain * q)
    head = torch.nn.Linear(H, 1)
    params = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=lr)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, T, 1, generator=gen)
    y = x[:, :5, 0].sum(1, keepdim=True)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad()
        out = rnn(x)  # [B, T, H]
        loss = ((head(out[:, -1]) - y) ** 2).mean()
        if not math.isfinite(loss.item()):
            losses.append(math.inf)
            norms.append(math.inf)
            break
        loss.backward()
        if clip is None:
            norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in params))
        else:
            norm = clip_grad_norm(params, clip)  # returns the norm before clipping
        losses.append(loss.item())
        norms.append(float(norm))
        opt.step()
    return losses, norms


def compute(quick: bool = False) -> Result:
    seeds = [0] if quick else [0, 1, 2]
    size = {"T": 30, "batch": 32, "steps": 40} if quick else {"T": 40, "batch": 64, "steps": 150}
    max_norm, lr = 1.0, 0.3
    rows = []
    for seed in seeds:
        for clip in (None, max_norm):
            losses, norms = train_rnn(clip, lr=lr, seed=seed, **size)
            for k, (lo, gn) in enumerate(zip(losses, norms)):
                rows.append(
                    {
                        "seed": seed,
                        "clipped": clip is not None,
                        "step": k,
                        "loss": lo,
                        "grad_norm": gn,
                    }
                )
    return Result(pd.DataFrame(rows), clip_direction_check(max_norm=max_norm), max_norm, lr)


def summarize(res: Result) -> pd.DataFrame:
    """Per (seed, clipped): initial, final and maximal loss, and maximal raw gradient norm."""
    g = res.table.groupby(["seed", "clipped"])
    return pd.DataFrame(
        {
            "initial": g["loss"].first(),
            "final": g["loss"].last(),
            "max_loss": g["loss"].max(),
            "max_grad_norm": g["grad_norm"].max(),
        }
    ).reset_index()


def plot(res: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(14, 4))
    d = res.direction
    axs[0].loglog(d.raw_norm, d.clipped_norm, ".", ms=3)
    axs[0].axhline(res.max_norm, color="k", ls=":", label=f"c = {res.max_norm}")
    axs[0].set(xlabel="‖g‖", ylabel="‖clip(g)‖", title=f"min cos = {d.cosine.min():.12f}")
    axs[0].legend()
    for (seed, clipped), grp in res.table.groupby(["seed", "clipped"]):
        style = "-" if clipped else "--"
        color = "C0" if clipped else "C3"
        lab = ("clipped" if clipped else "unclipped") if seed == 0 else None
        axs[1].semilogy(grp.step, grp.loss.clip(upper=1e6), style, color=color, label=lab)
        axs[2].semilogy(grp.step, grp.grad_norm.clip(upper=1e6), style, color=color, label=lab)
    axs[1].set(xlabel="SGD step", ylabel="training loss", title=f"tanh RNN, W = 1.5 Q, lr={res.lr}")
    axs[2].set(xlabel="SGD step", ylabel="raw gradient norm")
    axs[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_lines(res: Result):
    d = res.direction
    yield f"direction: min cosine {d.cosine.min():.15f}, max |clip(g)| {d.clipped_norm.max():.6f}"
    yield summarize(res).to_string(index=False)


def main(quick: bool = False, out_dir=None) -> Result:
    from _common import main_impl

    return main_impl(NAME, compute, plot, _summary_lines, quick=quick, out_dir=out_dir)


if __name__ == "__main__":
    from _common import run_cli

    run_cli(NAME, compute, plot, _summary_lines)
