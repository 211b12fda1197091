"""Per-step time of the one-system (host) path: this tree against another revision.

Runs a 2-state Van der Pol problem with dopri5 (adaptive, rtol 1e-8) and fixed-step rk4
(h = 0.01) in alternating subprocesses — one importing this tree's odenet, one a
revision checked out in a temporary git worktree — and prints µs per step (best of 5
solves per process, best over processes) and the ratio new/old.

    python studies/benchmarks/per_step.py --old d6d4588 --rounds 6

(d6d4588 is the last commit with the two separate step loops.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys, time, json, torch
sys.path.insert(0, sys.argv[1])
import odenet
torch.set_num_threads(1)
f = lambda t, y: torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])
y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
t = torch.linspace(0, 20, 21, dtype=torch.float64)
out = {}
for name, kw in [("dopri5", dict(method="dopri5", rtol=1e-8, atol=1e-10)),
                 ("rk4", dict(method="rk4", step_size=0.01))]:
    odenet.solve(f, y0, t, **kw)
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        sol = odenet.solve(f, y0, t, **kw)
        best = min(best, (time.perf_counter() - t0) / sol.stats["steps"])
    out[name] = best * 1e6
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="d6d4588", help="git revision to compare against")
    ap.add_argument("--rounds", type=int, default=6, help="alternating subprocess pairs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.old],
            check=True,
        )
        try:
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                for label, path in (("old", old), ("new", ROOT)):
                    r = subprocess.run(
                        [sys.executable, "-c", CHILD, str(path)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    runs[label].append(json.loads(r.stdout))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)])
    for k in ("dopri5", "rk4"):
        o = min(r[k] for r in runs["old"])
        n = min(r[k] for r in runs["new"])
        print(f"{k:7s} old {o:7.1f} us/step  new {n:7.1f} us/step  new/old {n / o:.2f}")


if __name__ == "__main__":
    main()
