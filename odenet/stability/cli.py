"""``odenet stability``: a scheme's stability function, intervals, A/L-stability, region plot.

The numerics are imported when the command runs, not when the parser is built, so
``odenet --help`` does not pay for them.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

MAX_GRID = 4001


def describe(method) -> dict:
    """Linear-stability facts of one method as a JSON-ready dict."""
    import numpy as np

    import odenet
    from odenet.stability.regions import (
        imaginary_stability_interval,
        is_a_stable,
        is_l_stable,
        r_infinity,
        real_stability_interval,
        stability_polynomials,
    )

    try:
        tab = odenet.tableau(method)
    except odenet.UnknownMethodError:
        from odenet._registry import registered
        from odenet.tableaus import methods as rk_methods

        if method not in registered():
            raise
        # a method `odenet methods` lists, but with memory: "unknown method" was wrong
        raise odenet.UnknownMethodError(
            f"`odenet stability` covers the Runge–Kutta methods (Butcher tableaus); {method!r} "
            "is a multistep method: analyse it in Python with odenet.stability.multistep "
            f"(is_zero_stable, boundary_locus, a_alpha), e.g. a_alpha({method!r}). "
            f"Runge–Kutta methods: {', '.join(rk_methods())}."
        ) from None
    P, Q = stability_polynomials(tab)
    rinf = r_infinity(tab)
    return {
        "method": tab.name,
        "order": tab.order,
        "stages": tab.stages,
        "explicit": bool(tab.is_explicit),
        "P": [float(v) for v in np.trim_zeros(P, "b")],
        "Q": [float(v) for v in np.trim_zeros(Q, "b")],
        "real_interval": float(real_stability_interval(tab)),
        "imaginary_interval": float(imaginary_stability_interval(tab)),
        "A_stable": bool(is_a_stable(tab)),
        "L_stable": bool(is_l_stable(tab)),
        "R_infinity": None if np.isinf(abs(rinf)) else float(rinf.real),
    }


def _poly(c: list[float]) -> str:
    terms = []
    for k, v in enumerate(c):
        if v == 0:
            continue
        z = "" if k == 0 else ("z" if k == 1 else f"z^{k}")
        coef = f"{v:.6g}" if (k == 0 or abs(v) != 1) else ("" if v > 0 else "-")
        terms.append(f"{coef}{'·' if coef not in ('', '-') and z else ''}{z}")
    return " + ".join(terms).replace("+ -", "- ") or "0"


def _interval(r: float, sign: str, unit: str) -> str:
    if sign == "-":
        return "(-∞, 0]" if math.isinf(r) else f"[{-r:.6g}, 0]"
    return "±∞i (whole axis)" if math.isinf(r) else f"[-{r:.6g}{unit}, {r:.6g}{unit}]"


def _text(d: dict) -> str:
    kind = "explicit" if d["explicit"] else "implicit"
    rinf = "∞" if d["R_infinity"] is None else f"{d['R_infinity']:.6g}"
    return "\n".join(
        [
            f"{d['method']}: order {d['order']}, {d['stages']} stages, {kind}",
            f"  R(z) = P(z)/Q(z),  P = {_poly(d['P'])},  Q = {_poly(d['Q'])}",
            f"  real interval {_interval(-d['real_interval'], '-', '')},  "
            f"imaginary interval {_interval(d['imaginary_interval'], '±', 'i')}",
            f"  A-stable: {'yes' if d['A_stable'] else 'no'},  "
            f"L-stable: {'yes' if d['L_stable'] else 'no'},  R(∞) = {rinf}",
        ]
    )


def _check_plot(args) -> None:
    """Refuse a bad --plot path or window before any work (one-line errors, status 2)."""
    from odenet.cli import CLIError

    for flag, (lo, hi) in (("--re", args.re), ("--im", args.im)):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise CLIError(f"{flag} MIN MAX needs finite MIN < MAX, got {lo:g} {hi:g}.")
    if not args.plot:
        return
    path = Path(args.plot)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(
            f"--plot {args.plot}: the folder {parent} does not exist; create it first or "
            "choose another path."
        )
    if path.is_dir():
        raise CLIError(f"--plot {args.plot} is a folder; give a file name such as regions.png.")
    ext = path.suffix.lstrip(".").lower()
    try:
        import matplotlib
    except ImportError:
        raise CLIError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from None

    matplotlib.use("Agg")
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise CLIError(
            f"--plot {args.plot}: unknown image format {ext or '(no extension)'!r}; use one of "
            f"{', '.join(sorted(formats))}."
        )


def run(args) -> int:
    methods = list(dict.fromkeys(args.method or ["rk4"]))
    _check_plot(args)
    info = [describe(m) for m in methods]
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(_text(d) for d in info))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from odenet.stability.plotting import plot_stability_regions

        ax = plot_stability_regions(methods, re=tuple(args.re), im=tuple(args.im), n=args.grid)
        from odenet.studies.sweep import atomic_path

        with atomic_path(args.plot) as tmp:  # a kill mid-draw leaves no half-written image
            ax.figure.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
        print(f"region plot written to {args.plot}")
    return 0


def _method_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected method names, got {text!r}")
    return names


def _grid(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 2 <= n <= MAX_GRID:
        raise argparse.ArgumentTypeError(f"expected 2 to {MAX_GRID} points per axis, got {n}")
    return n


def register(subparsers) -> None:
    """Add the ``stability`` subcommand to the ``odenet`` command's subparsers."""
    p = subparsers.add_parser(
        "stability",
        help="linear stability of a scheme: R(z), intervals, A/L-stability, region plot",
        description="Print the stability function R(z) = P(z)/Q(z) of Runge–Kutta methods, "
        "the real and imaginary stability intervals and the A-/L-stability flags; "
        "optionally save the stability regions |R(z)| <= 1 as a plot.",
    )
    p.add_argument(
        "--method",
        "--methods",
        dest="method",
        action="extend",
        type=_method_list,
        metavar="NAME[,NAME...]",
        help="method name(s), comma-separated or repeated (default rk4); see `odenet methods`",
    )
    p.add_argument("--plot", metavar="FILE", help="save the regions' contour plot (PNG, PDF...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--re",
        type=float,
        nargs=2,
        default=[-5.0, 2.0],
        metavar=("MIN", "MAX"),
        help="real-axis window of the plot (default -5 2)",
    )
    p.add_argument(
        "--im",
        type=float,
        nargs=2,
        default=[-4.0, 4.0],
        metavar=("MIN", "MAX"),
        help="imaginary-axis window of the plot (default -4 4)",
    )
    p.add_argument(
        "--grid",
        type=_grid,
        default=401,
        help=f"grid points per axis of the plot (2 to {MAX_GRID}; default 401)",
    )
    p.set_defaults(func=run)


# --- odenet conditioning --------------------------------------------------------------------


def run_conditioning(args) -> int:
    """``odenet conditioning``: :func:`odenet.stability.conditioning` on a problem."""
    import torch

    from odenet.cli import _problem
    from odenet.stability import conditioning

    problem, name, _ = _problem(args, {})
    method = args.method or ("radau_iia5" if problem.stiff else "dopri5")
    t0, t1 = problem.span
    report = conditioning(
        problem.f,
        problem.y0_tensor(),
        torch.tensor([t0, t1], dtype=torch.float64),
        method=method,
        rtol=args.rtol,
        atol=args.atol if args.atol is not None else problem.atol(args.rtol),
        checkpoints=args.checkpoints,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "problem": name,
                    "method": method,
                    "rtol": args.rtol,
                    "verdict": report.verdict,
                    "reason": report.reason,
                    "worst": report.worst,
                    "worst_from": report.worst_from,
                    "worst_to": report.worst_to,
                    "times": report.times.tolist(),
                    "amplification": report.amplification.tolist(),
                    "stats": report.stats,
                },
                indent=2,
            )
        )
    else:
        print(f"problem {name} on [{t0:g}, {t1:g}]")
        print(report.summary())
    return 0


def register_conditioning(subparsers) -> None:
    """Add the ``conditioning`` subcommand to the ``odenet`` command's subparsers."""
    from odenet.cli import _positive_float, _positive_int, problem_arguments

    p = subparsers.add_parser(
        "conditioning",
        help="is a problem's answer determined at a tolerance? error amplification",
        description="How many tolerance units (atol + rtol·|y|) one unit of error made at "
        "one time is worth at a later one, for a built-in or your own problem, from the "
        "Jacobians of the solver's flow between checkpoints; verdict well-conditioned "
        "(< 100), sensitive, or ill-conditioned (>= 1e4).",
    )
    problem_arguments(p, problem="lorenz", example="t1=20 for a longer span")
    p.add_argument(
        "--method", default=None, help="default radau_iia5 for a stiff problem, else dopri5"
    )
    p.add_argument("--rtol", type=_positive_float, default=1e-6, help="default 1e-6")
    p.add_argument(
        "--atol",
        type=_positive_float,
        default=None,
        help="default: the problem's atol_ratio times rtol",
    )
    p.add_argument(
        "--checkpoints", type=_positive_int, default=50, help="segments of the span (default 50)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run_conditioning)
