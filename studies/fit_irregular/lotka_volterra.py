"""Benchmark: irregularly subsampled Lotka–Volterra, every model and baseline, same budget.

    python studies/fit_irregular/lotka_volterra.py --observed 0.3 0.5 0.7 --seeds 0 1 \
        --iters 200

Writes results/lotka_volterra.csv (one row per run, appended) and
results/lotka_volterra.md (medians over seeds).  See common.py for the protocol.
"""

from __future__ import annotations

import argparse

import torch
from common import RESULTS, append_rows, make_models, protocol, run_one, table

from odenet.fit import datasets
from odenet.fit.greybox import MECHANISMS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--observed", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--model-iters", nargs="*", default=[], metavar="NAME=ITERS",
                    help="per-model budget overriding --iters, e.g. latent_ode=1000")  # fmt: skip
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n-series", type=int, default=40)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--out", default="lotka_volterra")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    budget = {k: int(v) for k, v in (a.split("=") for a in args.model_iters)}
    mech, guess = MECHANISMS["lotka_volterra"]
    csv_path = RESULTS / f"{args.out}.csv"
    for obs in args.observed:
        for seed in args.seeds:
            data = datasets.lotka_volterra(args.n_series, observed=obs, noise=0.02, seed=seed)
            parts = protocol(data, seed)
            clean = data.meta["clean"]
            states = clean.values[clean.valid]
            truth = (mech, data.meta["params"], states)
            for name, ctor in make_models(2, mech, guess, which=args.models).items():
                iters = budget.get(name, args.iters)
                row = run_one(name, ctor, parts, seed=seed, iters=iters, batch=args.batch,
                              truth=truth, max_seconds=args.max_seconds)  # fmt: skip
                row.update(dataset="lotka_volterra", observed=obs)
                append_rows(csv_path, [row])
                print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()},
                      flush=True)  # fmt: skip
    (RESULTS / f"{args.out}.md").write_text(table(csv_path) + "\n")
    print(table(csv_path))


if __name__ == "__main__":
    main()
