"""Benchmark: irregularly subsampled cubic spirals, every model and baseline, same budget.

    python studies/fit_irregular/spirals.py --observed 0.3 0.5 0.7 --seeds 0 1 2 --iters 200

Data: ``y' = y³ A``, ``A = [[−0.1, 2], [−2, −0.1]]`` (torchdiffeq's demo system), initial
states on a ring of radius 0.9–1.2, 100-point grid on [0, 10], a random 30 / 50 / 70 %
observed per series, noise σ = 0.02 (scipy DOP853 truth).  Grey-box: the same field with
``A = [[−a, r], [−r, −a]]``, (a, r) unknown (start (0.5, 1)), recovery against (0.1, 2).
Vector-field error of the data-space fits: mean ‖f̂(y) − f(y)‖² over the noise-free states.

Protocol and budgets: common.py.  Writes results/spirals.csv (one row per run, appended)
and results/spirals.md (medians over seeds).
"""

from __future__ import annotations

import torch
from common import RESULTS, make_models, protocol, run_models, study_parser, table

from odenet.fit import datasets

TRUE = {"a": 0.1, "r": 2.0}  # datasets.SPIRAL_A = [[-a, r], [-r, -a]]
GUESS = {"a": 0.5, "r": 1.0}


def spiral_mechanism(t, y, p):
    """``y' = y³ A`` with ``A = [[−a, r], [−r, −a]]`` (torch; last dim 2)."""
    c = y**3
    return torch.stack([-p["a"] * c[..., 0] - p["r"] * c[..., 1],
                        p["r"] * c[..., 0] - p["a"] * c[..., 1]], -1)  # fmt: skip


def main(argv=None):
    ap = study_parser(__doc__, "spirals")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    csv_path = RESULTS / f"{args.out}.csv"
    for obs in args.observed:
        for seed in args.seeds:
            data = datasets.spirals(
                args.n_series,
                observed=obs,
                noise=0.02,
                seed=seed,
                channel_observed=args.channel_observed,
            )
            parts = protocol(data, seed)
            clean = data.meta["clean"]
            truth = (spiral_mechanism, TRUE, clean.values[clean.valid])
            zoo = make_models(2, spiral_mechanism, GUESS, which=args.models, mle=True)
            run_models(zoo, parts, args, seed=seed, truth=truth, csv_path=csv_path,
                       dataset="spirals", observed=obs)  # fmt: skip
    (RESULTS / f"{args.out}.md").write_text(table(csv_path) + "\n")
    print(table(csv_path))


if __name__ == "__main__":
    main()
