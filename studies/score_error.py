"""What error floor does an inexact score leave, and do deterministic samplers need an accurate score Jacobian?

    python -m studies.score_error
    python -m studies.score_error --target mix1d --sampler ode ddim ode-accel ddpm ddpm-accel --T 256

The exact score is replaced by s + delta with a known field delta(x)_j = a sin(omega x_j + phase)
(samplers.perturbed): its L2 size eps_score is about a / sqrt(2) per coordinate whatever omega, its Jacobian size
eps_Jacobi about a omega (both measured over the grid's levels as Li et al. define them). Two sweeps at a fixed T:

- smooth (omega = 1): the amplitude grows, eps_score and eps_Jacobi together;
- high-frequency (fixed small amplitude, omega grows): eps_score stays tiny while eps_Jacobi grows.

Li et al. (2306.09251, 2408.02320) prove TV <~ ... + sqrt(d) eps_score + d eps_Jacobi for the deterministic
sampler and TV <~ ... + eps_score (no Jacobian term) for DDPM. The study measures the error exactly (1-D engines,
or the product engine in d > 1 on a product target) and reports, per sampler, the exponent of the excess error
(error minus the exact-score error at the same T) against eps_score in the smooth sweep and against eps_Jacobi in
the high-frequency sweep: about 1 means the error follows that size, about 0 means it ignores it.

Writes DIR/score_error.csv (rows appended as they finish; a re-run skips them), DIR/floors.csv, DIR/score_error.png.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from exact import DivergenceError, measure
from samplers import get_sampler
from samplers.perturbed import PerturbedTarget, SineField, score_error_sizes
from studies.common import ResultsFile, clean_exit, progress, resolve_device, with_intervals
from theory.catalog import get_target
from theory.rates import RateError, fit_order
from theory.schedules import make_grid

COLUMNS = ["target", "d", "sampler", "stochastic", "schedule", "T", "field", "amplitude", "omega", "eps_score",
           "eps_jacobi", "metric", "value", "numerical_error", "method", "seed", "flagged", "seconds"]
KEY = ["target", "d", "sampler", "schedule", "T", "field", "amplitude", "omega", "seed", "metric"]
FLOOR_COLUMNS = ["target", "d", "sampler", "stochastic", "metric", "sweep", "against", "exponent", "ci_low",
                 "ci_high", "points", "baseline", "largest_excess"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m studies.score_error", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="std-normal", help="target (default std-normal: zero exact ODE velocity)")
    parser.add_argument("--d", type=int, default=1, help="dimension (d > 1 needs a product target)")
    parser.add_argument("--sampler", nargs="+", default=["ode", "ddim", "ddpm"])
    parser.add_argument("--T", type=int, default=128, help="grid size (levels)")
    parser.add_argument("--schedule", default="li2023")
    parser.add_argument("--amplitudes", nargs="+", type=float, default=[0.01, 0.03, 0.1],
                        help="amplitudes a of the smooth field (omega = 1)")
    parser.add_argument("--hf-amplitude", type=float, default=0.005, help="amplitude of the high-frequency field")
    parser.add_argument("--omegas", nargs="+", type=float, default=[4.0, 16.0, 64.0],
                        help="frequencies of the high-frequency field")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/score_error"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.T < 2:
        parser.exit(2, f"{parser.prog}: error: bad --T value {args.T!r} (need >= 2)\n")
    if args.d < 1:
        parser.exit(2, f"{parser.prog}: error: bad --d value {args.d!r} (need >= 1)\n")
    bad = [a for a in args.amplitudes + [args.hf_amplitude] if not (math.isfinite(a) and a > 0)]
    if bad:
        parser.exit(2, f"{parser.prog}: error: bad amplitude {bad[0]!r} (need > 0)\n")
    bad = [w for w in args.omegas if not (math.isfinite(w) and w > 0)]
    if bad:
        parser.exit(2, f"{parser.prog}: error: bad omega {bad[0]!r} (need > 0)\n")
    if args.threads < 1:
        parser.exit(2, f"{parser.prog}: error: --threads must be >= 1\n")
    return args


def fields(args) -> list[tuple[str, SineField | None]]:
    out: list[tuple[str, SineField | None]] = [("none", None)]
    out += [("smooth", SineField(a, 1.0)) for a in args.amplitudes]
    out += [("high-frequency", SineField(args.hf_amplitude, w)) for w in args.omegas]
    return out


def grid_nodes(omega: float) -> int:
    """1-D grid nodes that resolve the field: about 30 per wavelength over a range of about 25 (at least 8192)."""
    return 1 << max(13, math.ceil(math.log2(5 * omega * 25)))


def run(args) -> pd.DataFrame:
    device = resolve_device(args.device)
    base = get_target(args.target, args.d, device=device)
    grid = make_grid(args.schedule, args.T).to(device)
    results = ResultsFile(args.out / "score_error.csv", COLUMNS, KEY)
    todo = []
    for name in args.sampler:
        sampler = get_sampler(name)
        for kind, field in fields(args):
            amplitude = 0.0 if field is None else field.amplitude
            omega = 0.0 if field is None else field.omega
            if not all(results.done(target=args.target, d=args.d, sampler=name, schedule=args.schedule, T=args.T,
                                    field=kind, amplitude=amplitude, omega=omega, seed=args.seed, metric=m)
                       for m in ("tv", "kl")):
                todo.append((sampler, kind, field))
    sizes_cache: dict[str, dict] = {}
    for sampler, kind, field in progress(todo, desc="score_error"):
        if field is None:
            target, sizes, options = base, {"eps_score": 0.0, "eps_jacobi": 0.0}, {}
        else:
            target = PerturbedTarget(base, field)
            if repr(field) not in sizes_cache:
                sizes_cache[repr(field)] = score_error_sizes(base, field, grid, seed=args.seed)
            sizes = sizes_cache[repr(field)]
            options = {"G": grid_nodes(field.omega)} if args.d == 1 else {"seed": args.seed}
        start = time.perf_counter()
        try:
            result = measure(target, sampler, grid, init="exact", **options)
        except DivergenceError as err:
            print(f"skipped {sampler.info.name} {kind} {field!r}: {err}", file=sys.stderr)
            continue
        seconds = time.perf_counter() - start
        rows = []
        for metric in ("tv", "kl"):
            m = result[metric]
            rows.append({"target": args.target, "d": args.d, "sampler": sampler.info.name,
                         "stochastic": sampler.info.stochastic, "schedule": args.schedule, "T": args.T,
                         "field": kind, "amplitude": 0.0 if field is None else field.amplitude,
                         "omega": 0.0 if field is None else field.omega, "eps_score": sizes["eps_score"],
                         "eps_jacobi": sizes["eps_jacobi"], "metric": metric, "value": m.value,
                         "numerical_error": m.numerical_error, "method": m.method, "seed": args.seed,
                         "flagged": m.flagged, "seconds": round(seconds, 3)})
        results.append(rows)
    return pd.read_csv(args.out / "score_error.csv")


def floors(frame: pd.DataFrame) -> pd.DataFrame:
    """Exponent of the excess error (value - exact-score value) against eps_score (smooth sweep) and against
    eps_Jacobi (high-frequency sweep)."""
    rows = []
    for (target, d, sampler, metric), g in frame.groupby(["target", "d", "sampler", "metric"]):
        base = g[g["field"] == "none"]
        if base.empty:
            continue
        baseline = float(base["value"].iloc[0])
        base_err = float(base["numerical_error"].iloc[0])
        for sweep, against in (("smooth", "eps_score"), ("high-frequency", "eps_jacobi")):
            s = g[g["field"] == sweep].sort_values(against)
            excess = s["value"] - baseline
            noise = s["numerical_error"] + base_err
            ok = excess > 3 * noise
            row = {"target": target, "d": d, "sampler": sampler, "stochastic": bool(g["stochastic"].iloc[0]),
                   "metric": metric, "sweep": sweep, "against": against, "exponent": float("nan"),
                   "ci_low": float("nan"), "ci_high": float("nan"), "points": int(ok.sum()), "baseline": baseline,
                   "largest_excess": float(excess.max()) if len(excess) else float("nan")}
            if ok.sum() >= 2:
                try:
                    fit = fit_order(s[against][ok], excess[ok], decreasing=False, window=int(ok.sum()))
                    row.update(exponent=fit.order, ci_low=fit.low, ci_high=fit.high)
                except RateError:
                    pass
            rows.append(row)
    return pd.DataFrame(rows, columns=FLOOR_COLUMNS)


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    tv = frame[frame["metric"] == "tv"]
    for ax, (sweep, against, label) in zip(axes, (("smooth", "eps_score", "smooth field (omega = 1): eps_score"),
                                                  ("high-frequency", "eps_jacobi",
                                                   "high-frequency field (fixed amplitude): eps_Jacobi"))):
        for sampler, g in tv.groupby("sampler"):
            s = g[g["field"] == sweep].sort_values(against)
            base = g[g["field"] == "none"]
            style = "--" if bool(g["stochastic"].iloc[0]) else "-"
            line = ax.errorbar(s[against], s["value"], yerr=s["numerical_error"], marker="o", ms=3, ls=style,
                               capsize=2, label=f"{sampler}{' (stochastic)' if g['stochastic'].iloc[0] else ''}")
            if not base.empty:
                ax.axhline(float(base["value"].iloc[0]), color=line[0].get_color(), lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("TV (dotted: exact score)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    first = frame.iloc[0]
    fig.suptitle(f"score error on {first['target']} (d = {first['d']}), {first['schedule']} T = {first['T']}")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with clean_exit("python -m studies.score_error"):
        start = time.perf_counter()
        frame = run(args)
        frame = frame[(frame["target"] == args.target) & (frame["d"] == args.d) & (frame["T"] == args.T)
                      & (frame["schedule"] == args.schedule) & (frame["seed"] == args.seed)]
        table = floors(frame)
        table.to_csv(args.out / "floors.csv", index=False)
        pd.set_option("display.width", 200)
        tv = frame[frame["metric"] == "tv"].pivot_table(index=["field", "amplitude", "omega", "eps_score",
                                                               "eps_jacobi"], columns="sampler", values="value")
        print(f"TV at T = {args.T} on {args.target} (d = {args.d}):")
        print(tv.to_string(float_format=lambda v: f"{v:.4g}"))
        print("\nexcess error (minus the exact-score error) ~ size^exponent:")
        print(with_intervals(table).drop(columns=["target", "d"]).to_string(index=False))
        if not args.no_plot and len(frame):
            plot(frame, args.out / "score_error.png")
        print(f"wrote {args.out / 'score_error.csv'}, {args.out / 'floors.csv'}"
              f"{'' if args.no_plot else ', ' + str(args.out / 'score_error.png')} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
