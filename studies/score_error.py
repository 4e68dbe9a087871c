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

import numpy as np
import pandas as pd
import torch

from exact import DivergenceError, choose_method, measure
from samplers import get_sampler
from samplers.perturbed import PerturbedTarget, SineField, score_error_sizes
from studies.common import (Skip, Study, StudyParser, add_flags, code_digest, real, refuse_unmeasurable,
                            sampler_list, study_parser, with_intervals)
from studies.tables import export_tables
from theory.catalog import get_target
from theory.rates import TOO_FEW, RateError, fit_order, order_verdict
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
              device="cpu", threads=1, out=Path("results/score_error"), no_plot=False, table=None, scheduler="auto",
              workers=None, fresh=False)
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
    target_key: str = ""  # the target's fingerprint (its parameters, not its name or path)

    def row_keys(self) -> list[dict]:
        return [{"target": self.target, "d": self.d, "sampler": self.sampler, "schedule": self.schedule, "T": self.T,
                 "field": self.field, "amplitude": self.amplitude, "omega": self.omega, "seed": self.seed,
                 "metric": metric} for metric in METRICS]

    def ingredients(self, names: dict) -> dict:
        """What decides the rows' values (studies.common, content keys): the target with its field, the engine
        'auto' chooses with the options work() passes."""
        sampler = get_sampler(self.sampler)
        field = None if self.field == "none" else SineField(self.amplitude, self.omega)
        options = {} if field is None else {"G": grid_nodes(field.omega)} if self.d == 1 else {"seed": self.seed}
        engine = {"method": "auto", **options, "sizes_seed": self.seed, "init": "exact",
                  "device": torch.device(self.device).type}
        return {"target": {"exact": self.target_key, "field": field}, "sampler": sampler,
                "grid": make_grid(self.schedule, self.T), "engine": engine,
                "code": code_digest(sampler, choose_method, PerturbedTarget, score_error_sizes)}


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
    base = get_target(args.target, args.d, device=device)  # bad target or dimension: fails before any work
    target_key = base.fingerprint()
    make_grid(args.schedule, args.T)
    samplers = {name: get_sampler(name) for name in sampler_list(args.sampler)}
    refuse_unmeasurable(base, samplers)  # a sampler no exact method measures here: refused before any work
    for _, field in fields(args):
        if field is not None:  # the perturbed target, as the engines will see it
            refuse_unmeasurable(PerturbedTarget(base, field), samplers)
            break
    out = []
    for name in sampler_list(args.sampler):
        for kind, field in fields(args):
            amplitude, omega = (0.0, 0.0) if field is None else (field.amplitude, field.omega)
            out.append(Job(args.target, args.d, name, args.schedule, args.T, kind, amplitude, omega, args.seed,
                           str(device), target_key))
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


def plot(frame: pd.DataFrame, path: Path) -> tuple[list[Path], str]:
    """TV against the score error's size, one panel per sweep; per sampler its points, its exact-score level and
    the fitted exponent of the excess error (floors) over the points it was fitted on. Returns the files written and
    the caption."""
    from studies.plotting import (DOUBLE, FIT_LINE, drawable, fit_label, legend_below, log_ticks_125, mark_handles,
                                  mark_points, paper_style, save_figure, subplots)

    marks: list[str] = []
    with paper_style():
        fig, axes = subplots(1, 2, width=DOUBLE, height=2.3)
        tv = frame[frame["metric"] == "tv"]
        for ax, (sweep, against, label) in zip(axes[0], (
                ("smooth", "eps_score", r"smooth field ($\omega = 1$): $\varepsilon_{\mathrm{score}}$"),
                ("high-frequency", "eps_jacobi",
                 r"high-frequency field (fixed amplitude): $\varepsilon_{\mathrm{Jacobi}}$"))):
            for j, (sampler, g) in enumerate(tv.groupby("sampler")):
                colour = f"C{j % 10}"
                s = g[g["field"] == sweep].sort_values(against)
                base = g[g["field"] == "none"]
                stochastic = bool(g["stochastic"].iloc[0])
                style = "--" if stochastic else "-"
                ax.errorbar(s[against], s["value"], yerr=s["numerical_error"], fmt="none", color=colour)
                ax.plot(s[against], s["value"], marker="o", ls=style, color=colour,
                        label=f"{sampler}{' (stochastic)' if stochastic else ''}")
                flagged = s["flagged"].astype(str).str.lower().eq("true").to_numpy()
                if mark_points(ax, s[against], s["value"], flagged, "flagged", colour):
                    marks.append("flagged")
                if not base.empty:
                    baseline = float(base["value"].iloc[0])
                    ax.axhline(baseline, color=colour, lw=0.6, ls=":")
                    excess = (s["value"] - baseline).to_numpy(float)
                    ok = excess > 3 * (s["numerical_error"].to_numpy(float) + float(base["numerical_error"].iloc[0]))
                    x = s[against].to_numpy(float)[ok]
                    fit = None
                    if ok.sum() >= 2:  # the fit of floors(): the excess error ~ size^a on these points
                        try:
                            fit = fit_order(x, excess[ok], decreasing=False, window=int(ok.sum()))
                        except RateError:
                            fit = None
                    if drawable(fit):  # baseline + C size^a over the sizes it was fitted on
                        grid = np.geomspace(x.min(), x.max(), 32)
                        symbol = r"\varepsilon_{\mathrm{score}}" if against == "eps_score" else \
                            r"\varepsilon_{\mathrm{Jacobi}}"
                        ax.plot(grid, baseline + np.exp(fit.intercept) * grid**fit.order, color=colour, **FIT_LINE,
                                label=fit_label(fit, symbol, f"{sampler} excess fit"))
            ax.set_xscale("log")
            ax.set_yscale("log")
            log_ticks_125(ax.xaxis)
            ax.set_xlabel(label)
            ax.set_ylabel(r"$\mathrm{TV}$")
            ax.grid(True, which="both")
        legend_below(fig, list(axes[0]), extra=mark_handles(marks, {"flagged": "numerical error not small"}))
        written = save_figure(fig, path)
    first = frame.iloc[0]
    text = (f"Exact TV of each sampler on {first['target']} (d = {first['d']}), {first['schedule']} grid, "
            f"T = {first['T']}, with a perturbed score: left, a smooth perturbation of growing size eps_score; right, "
            "a high-frequency one of fixed amplitude whose Jacobian error eps_Jacobi grows. Solid: deterministic "
            "samplers, dashed: stochastic ones; thin dotted horizontal lines: each sampler's error with the exact "
            "score. Broad translucent lines: the fitted power law of the excess error (TV minus the exact-score TV) "
            "over the sizes where the excess is at least three numerical errors, with its exponent and 95% "
            "interval in the legend; no line where fewer than three such sizes give an interval.")
    if "flagged" in marks:
        text += " Crosses: the numerical error is not well below the value."
    return written, text


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
    tables = {"score_error": tv.reset_index(), "floors": with_intervals(table)}
    return [args.out / "floors.csv", *export_tables(tables, args)]


def figures(frame: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    from studies.plotting import caption

    written, text = plot(frame, args.out / "score_error.png")
    print(caption(text))
    return written


STUDY = Study("score_error", build_parser, "score_error.csv", COLUMNS, KEY, jobs, work, summarise, report, figures)


def main(argv=None) -> int:
    return STUDY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
