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
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from exact import DivergenceError, measure
from samplers import get_sampler
from samplers.perturbed import PerturbedTarget, SineField, score_error_sizes
from studies.common import Skip, Study, StudyParser, add_flags, real, sampler_list, study_parser, with_intervals
from theory.catalog import get_target
from theory.rates import TOO_FEW, order_verdict
from theory.schedules import make_grid

COLUMNS = ["target", "d", "sampler", "stochastic", "schedule", "T", "field", "amplitude", "omega", "eps_score",
           "eps_jacobi", "metric", "value", "numerical_error", "method", "seed", "flagged", "seconds"]
KEY = ["target", "d", "sampler", "schedule", "T", "field", "amplitude", "omega", "seed", "metric"]
METRICS = ("tv", "kl")
FLOOR_COLUMNS = ["target", "d", "sampler", "stochastic", "metric", "sweep", "against", "exponent", "ci_low",
                 "ci_high", "points", "decision", "baseline", "largest_excess"]


def build_parser() -> StudyParser:
    parser = study_parser("score_error", __doc__)
    add_flags(parser, sampler=["ode", "ddim", "ddpm"], target="std-normal", d=1, schedule="li2023", T=128, seed=0,
              device="cpu", threads=1, out=Path("results/score_error"), no_plot=False, scheduler="auto",
              workers=None)
    parser.add_argument("--amplitudes", nargs="+", type=real(0.0), default=[0.01, 0.03, 0.1],
                        help="amplitudes a of the smooth field (omega = 1)")
    parser.add_argument("--hf-amplitude", type=real(0.0), default=0.005, help="amplitude of the high-frequency field")
    parser.add_argument("--omegas", nargs="+", type=real(0.0), default=[4.0, 16.0, 64.0],
                        help="frequencies of the high-frequency field")
    return parser


@dataclass(frozen=True)
class Job:
    """One (sampler, field) measurement at the command's T, as plain values; field 'none' is the exact score."""

    target: str  # as given: the rows' target column
    d: int
    sampler: str
    schedule: str
    T: int
    field: str  # none, smooth or high-frequency
    amplitude: float
    omega: float
    seed: int
    device: str

    def row_keys(self) -> list[dict]:
        return [{"target": self.target, "d": self.d, "sampler": self.sampler, "schedule": self.schedule, "T": self.T,
                 "field": self.field, "amplitude": self.amplitude, "omega": self.omega, "seed": self.seed,
                 "metric": metric} for metric in METRICS]


def fields(args) -> list[tuple[str, SineField | None]]:
    out: list[tuple[str, SineField | None]] = [("none", None)]
    out += [("smooth", SineField(a, 1.0)) for a in args.amplitudes]
    out += [("high-frequency", SineField(args.hf_amplitude, w)) for w in args.omegas]
    return out


def grid_nodes(omega: float) -> int:
    """1-D grid nodes that resolve the field: about 30 per wavelength over a range of about 25 (at least 8192)."""
    return 1 << max(13, math.ceil(math.log2(5 * omega * 25)))


def jobs(args: argparse.Namespace, device: torch.device) -> list[Job]:
    """Every sampler with the exact score, then each smooth and each high-frequency field."""
    get_target(args.target, args.d, device=device)  # bad target or dimension: fails before any work
    make_grid(args.schedule, args.T)
    out = []
    for name in sampler_list(args.sampler):
        for kind, field in fields(args):
            amplitude, omega = (0.0, 0.0) if field is None else (field.amplitude, field.omega)
            out.append(Job(args.target, args.d, name, args.schedule, args.T, kind, amplitude, omega, args.seed,
                           str(device)))
    return out


@functools.lru_cache(maxsize=32)
def _sizes(target: str, d: int, device: str, schedule: str, T: int, amplitude: float, omega: float,
           seed: int) -> dict[str, float]:
    """eps_score and eps_Jacobi of one field (Monte Carlo from `seed`): computed once per field in a process, whichever
    sampler asks."""
    grid = make_grid(schedule, T).to(torch.device(device))
    return score_error_sizes(get_target(target, d, device=torch.device(device)), SineField(amplitude, omega), grid,
                             seed=seed)


def work(job: Job) -> list[dict] | Skip:
    device = torch.device(job.device)
    base = get_target(job.target, job.d, device=device)
    grid = make_grid(job.schedule, job.T).to(device)
    sampler = get_sampler(job.sampler)
    if job.field == "none":
        target, sizes, options = base, {"eps_score": 0.0, "eps_jacobi": 0.0}, {}
    else:
        field = SineField(job.amplitude, job.omega)
        target = PerturbedTarget(base, field)
        sizes = _sizes(job.target, job.d, job.device, job.schedule, job.T, job.amplitude, job.omega, job.seed)
        options = {"G": grid_nodes(field.omega)} if job.d == 1 else {"seed": job.seed}
    start = time.perf_counter()
    try:
        result = measure(target, sampler, grid, init="exact", **options)
    except DivergenceError as err:
        return Skip(f"{job.sampler} {job.field} amplitude={job.amplitude:g} omega={job.omega:g}: {err}")
    seconds = time.perf_counter() - start
    return [{"target": job.target, "d": job.d, "sampler": sampler.info.name, "stochastic": sampler.info.stochastic,
             "schedule": job.schedule, "T": job.T, "field": job.field, "amplitude": job.amplitude,
             "omega": job.omega, "eps_score": sizes["eps_score"], "eps_jacobi": sizes["eps_jacobi"],
             "metric": metric, "value": result[metric].value, "numerical_error": result[metric].numerical_error,
             "method": result[metric].method, "seed": job.seed, "flagged": result[metric].flagged,
             "seconds": round(seconds, 3)} for metric in METRICS]


def floors(frame: pd.DataFrame) -> pd.DataFrame:
    """Exponent of the excess error (value - exact-score value) against eps_score (smooth sweep) and against
    eps_Jacobi (high-frequency sweep), over the points whose excess is clear of the numerical error (at least
    theory.rates.MIN_POINTS of them, else no exponent). decision: the exponent against 1, the power of the size in
    the theorems' score-error terms ('agrees', 'above', 'below', 'undecided'; 'too few' points to decide)."""
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
                   "ci_low": float("nan"), "ci_high": float("nan"), "points": int(ok.sum()), "decision": TOO_FEW,
                   "baseline": baseline, "largest_excess": float(excess.max()) if len(excess) else float("nan")}
            if ok.sum() >= 1:
                verdict = order_verdict(s[against][ok].to_numpy(float), excess[ok].to_numpy(float),
                                        decreasing=False, window=int(ok.sum()), expected=1.0, subject=against)
                row["decision"] = verdict.decision
                if verdict.decision != TOO_FEW and verdict.fit is not None:
                    row.update(exponent=verdict.fit.order, ci_low=verdict.fit.low, ci_high=verdict.fit.high)
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


def summarise(frame: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    return floors(frame)


def report(frame: pd.DataFrame, table: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    table.to_csv(args.out / "floors.csv", index=False)
    pd.set_option("display.width", 200)
    tv = frame[frame["metric"] == "tv"].pivot_table(index=["field", "amplitude", "omega", "eps_score", "eps_jacobi"],
                                                    columns="sampler", values="value")
    print(f"TV at T = {args.T} on {args.target} (d = {args.d}):")
    print(tv.to_string(float_format=lambda v: f"{v:.4g}"))
    print("\nexcess error (minus the exact-score error) ~ size^exponent:")
    print(with_intervals(table).drop(columns=["target", "d"]).to_string(index=False))
    return [args.out / "floors.csv"]


def figures(frame: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    plot(frame, args.out / "score_error.png")
    return [args.out / "score_error.png"]


STUDY = Study("score_error", build_parser, "score_error.csv", COLUMNS, KEY, jobs, work, summarise, report, figures)


def main(argv=None) -> int:
    return STUDY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
