"""Benchmark: irregularly subsampled Lotka–Volterra, every model and baseline, same budget.

    python studies/fit_irregular/lotka_volterra.py --observed 0.3 0.5 0.7 --seeds 0 1 \
        --iters 200

Writes results/lotka_volterra.csv (one row per run, appended) and
results/lotka_volterra.md (medians over seeds).  See common.py for the protocol.
"""

from __future__ import annotations

import torch
from common import (
    RESULTS,
    append_rows,
    make_models,
    protocol,
    run_one,
    study_parser,
    table,
    target_check,
)

from odenet.fit import datasets
from odenet.fit.greybox import MECHANISMS


def main(argv=None):
    ap = study_parser(__doc__, "lotka_volterra", seeds=(0,))
    ap.add_argument("--model-iters", nargs="*", default=[], metavar="NAME=ITERS",
                    help="per-model budget overriding --iters, e.g. latent_ode=1000")  # fmt: skip
    ap.add_argument("--merge", nargs="*", default=None, metavar="PART",
                    help="only merge results/PART.csv files into results/OUT.csv and "
                         "write the tables (for runs split over processes)")  # fmt: skip
    ap.add_argument("--profile-latent", action="store_true",
                    help="only time latent-ODE steps, encoder 'adaptive' vs 'rk4'")  # fmt: skip
    args = ap.parse_args(argv)
    if args.profile_latent:
        return profile_latent(args.observed)
    if args.merge is not None:
        import pandas as pd

        parts = [pd.read_csv(RESULTS / f"{p}.csv") for p in args.merge]
        pd.concat(parts, ignore_index=True).to_csv(RESULTS / f"{args.out}.csv", index=False)
        return write_tables(RESULTS / f"{args.out}.csv", RESULTS / f"{args.out}.md")
    torch.set_num_threads(1)
    budget = {k: int(v) for k, v in (a.split("=") for a in args.model_iters)}
    mech, guess = MECHANISMS["lotka_volterra"]
    csv_path = RESULTS / f"{args.out}.csv"
    for obs in args.observed:
        for seed in args.seeds:
            data = datasets.lotka_volterra(args.n_series, observed=obs, noise=0.02, seed=seed,
                                           channel_observed=args.channel_observed)  # fmt: skip
            parts = protocol(data, seed)
            clean = data.meta["clean"]
            states = clean.values[clean.valid]
            truth = (mech, data.meta["params"], states)
            for name, ctor in make_models(2, mech, guess, which=args.models, mle=True).items():
                iters = budget.get(name, args.iters)
                curves = RESULTS / f"{args.out}_curves" / f"observed{obs:g}"
                row = run_one(name, ctor, parts, seed=seed, iters=iters, batch=args.batch,
                              truth=truth, max_seconds=args.max_seconds, curves=curves)  # fmt: skip
                row.update(dataset="lotka_volterra", observed=obs)
                append_rows(csv_path, [row])
                print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()},
                      flush=True)  # fmt: skip
    write_tables(csv_path, RESULTS / f"{args.out}.md")


def profile_latent(observed, reps: int = 3):
    """Seconds per latent-ODE training step (loss + backward, 16 training series),
    one adaptive solve per observation vs one RK4 step per gap in the encoder;
    interleaved repetitions, medians."""
    import statistics
    import time

    from odenet.fit import LatentODEForecaster, Normalizer
    from odenet.fit.train import _rows

    torch.set_num_threads(1)
    for obs in observed:
        data = datasets.lotka_volterra(40, observed=obs, noise=0.02, seed=0)
        trw = protocol(data, 0)[0]
        mb = _rows(Normalizer.fit(trw).transform(trw), torch.arange(16))
        times = {"adaptive": [], "rk4": []}
        for _ in range(reps):
            for enc in times:
                torch.manual_seed(0)
                m = LatentODEForecaster(2, 4, 16, obs_std=0.1, rtol=1e-3, atol=1e-4, encoder=enc)
                m.double()
                t = time.perf_counter()
                m.loss(mb).backward()
                times[enc].append(time.perf_counter() - t)
        a, r = (statistics.median(times[k]) for k in ("adaptive", "rk4"))
        print(f"observed {obs}: {mb.times.shape[1]} points/series, adaptive {a:.3f} s/step, "
              f"rk4 {r:.3f} s/step, ratio {a / r:.1f}x")  # fmt: skip


def write_tables(csv_path, md_path):
    text = table(csv_path) + "\n\nTarget check (medians over seeds):\n\n" + target_check(csv_path)
    md_path.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
