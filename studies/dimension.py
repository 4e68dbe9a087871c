"""How does a sampler's exact error grow with the dimension d?

    python -m studies.dimension
    python -m studies.dimension --family gaussian product --d 1 2 4 8 16 32 64 128 256 --T 16 64 256

For each target family, sampler, T and d it measures the error exactly (shared/spec/metrics.md), then fits
(1) the d-exponent a of the error at fixed T (error ~ d^a, over the d where TV has not saturated), and
(2) the d-exponent b of the T needed to reach a fixed error (T* ~ d^b, T* from a power-law fit in T at each d),
and prints them next to each theorem's d-power (theory.bounds). Families:

- gaussian: the rotated Gaussian `gaussian` (every sampler, Gaussian engine: KL exact, TV by exact-density MC);
- product: `product-bimodal`, d copies of a two-mode law (every sampler, product engine: KL = sum of exact 1-D KLs);
- mixture: `mixture-diag`, four components that do not factorise (deterministic samplers, flow Monte Carlo);
- subspace: data of intrinsic dimension k in R^d (`subspace-product:<k>`: k copies of a two-mode line on a seeded
  random k-dimensional subspace, plus an isotropic floor --floor, default 0: the data lie exactly on the subspace).
  Every sampler, stochastic ones included, is exact on it at any d (exact.subspace): the error splits into the
  k-dimensional part and d - k Gaussian directions. Swept over --k and --subspace-d, with the exponents of the error
  in k (at fixed d) and in d (at fixed k) fitted separately: does a sampler's error grow with k or with d?

Writes DIR/dimension.csv (rows appended as they finish; a re-run skips them), DIR/exponents.csv and
DIR/dimension.png.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from exact import BATCHED, METHODS, DivergenceError, measure
from samplers import get_sampler
from studies.common import (Skip, Study, StudyParser, add_flags, code_digest, integer, real, refuse_unmeasurable,
                            sampler_list, study_parser, with_intervals)
from studies.tables import export_tables
from theory.bounds import theorems_for
from theory.catalog import get_target
from theory.rates import MIN_POINTS, RateError, fit_order
from theory.schedules import make_grid

# family -> (target, exact method, samplers it covers by default)
FAMILIES = {
    "gaussian": ("gaussian", "gaussian", ("ode", "ddim", "ode-accel", "ddpm", "ddpm-accel")),
    "product": ("product-bimodal", "product", ("ode", "ddim", "ode-accel", "ddpm", "ddpm-accel")),
    "mixture": ("mixture-diag", "flow-mc", ("ode", "ddim", "ode-accel")),
    # the seed samplers and the samplers proven since 2024 that the subspace engine measures (the randomized ones
    # are refused in d > 1: one random time moves every coordinate)
    "subspace": ("subspace-product", "subspace", ("ddpm", "ddpm-posterior", "ddpm-accel", "ddim", "ode-accel",
                                                  "ode-renoise", "expint:2", "picard")),
}
DEFAULT_FAMILIES = ["gaussian", "product", "mixture"]  # subspace has its own sweep: ask for it by name
DEFAULT_K = [1, 2, 4, 8]
DEFAULT_SUBSPACE_D = [16, 256, 4096]
DEFAULT_SUBSPACE_T = [64]
DEFAULT_D = [1, 2, 4, 8, 16, 32, 64, 128, 256]
DEFAULT_T = [16, 32, 64, 128]
COLUMNS = ["family", "target", "sampler", "schedule", "k", "d", "T", "metric", "value", "numerical_error", "method",
           "samples", "seed", "flagged", "seconds"]
KEY = ["family", "sampler", "schedule", "k", "d", "T", "seed", "metric"]
EXPONENT_COLUMNS = ["family", "sampler", "metric", "kind", "T_or_level", "exponent", "ci_low", "ci_high", "points",
                    "d_range", "proven"]
METRICS = ("tv", "kl")
SATURATED_TV = 0.5  # TV above this is in its saturating regime, not in the small-error regime the theorems shape


def build_parser() -> StudyParser:
    parser = study_parser("dimension", __doc__)
    add_flags(parser, several=["sampler"], sampler=None, d=DEFAULT_D, schedule="li2023", T=DEFAULT_T, seed=0,
              device="cpu", threads=1, out=Path("results/dimension"), no_plot=False, table=None, scheduler="auto",
              workers=None,
              batch=None, fresh=False)
    parser.add_argument("--family", nargs="+", default=DEFAULT_FAMILIES, choices=list(FAMILIES),
                        help="target families (samplers default to each family's list)")
    parser.add_argument("--k", nargs="+", type=integer(1), default=DEFAULT_K,
                        help="intrinsic dimensions of the subspace family")
    parser.add_argument("--subspace-d", nargs="+", type=integer(1), default=DEFAULT_SUBSPACE_D,
                        help="ambient dimensions of the subspace family (each k < d is measured)")
    parser.add_argument("--subspace-T", nargs="+", type=integer(2), default=DEFAULT_SUBSPACE_T,
                        help="grid sizes of the subspace family")
    parser.add_argument("--floor", type=real(0.0, inclusive=True), default=0.0,
                        help="isotropic variance floor sigma^2 of the subspace family (0: exactly k-dimensional)")
    parser.add_argument("--mixture-max-d", type=integer(1), default=16,
                        help="largest d for the mixture family (flow Monte Carlo costs d forward passes per draw)")
    parser.add_argument("--samples", type=integer(2), default=10_000,
                        help="Monte Carlo draws for TV (Gaussian, product)")
    parser.add_argument("--flow-samples", type=integer(2), default=1000, help="draws for flow Monte Carlo (mixture)")
    parser.add_argument("--tv-level", type=real(0.0), default=0.05, help="the fixed TV whose T* is fitted against d")
    parser.add_argument("--kl-level", type=real(0.0), default=0.005, help="the fixed KL whose T* is fitted against d")
    return parser


@dataclass(frozen=True)
class Job:
    """One (family, sampler, T, d) measurement, as plain values."""

    family: str
    sampler: str
    schedule: str
    T: int
    d: int
    k: int | None  # the subspace family's intrinsic dimension (None for the other families)
    floor: float
    samples: int  # Monte Carlo draws of the engine: --samples, or --flow-samples for flow Monte Carlo
    seed: int
    device: str
    batch: int | None = None  # --batch: points per engine batch (methods in exact.BATCHED)
    target_key: str = ""  # the family target's fingerprint at (d, k, floor)

    def row_keys(self) -> list[dict]:
        k = "" if self.k is None else self.k
        return [{"family": self.family, "sampler": self.sampler, "schedule": self.schedule, "k": k, "d": self.d,
                 "T": self.T, "seed": self.seed, "metric": metric} for metric in METRICS]

    def ingredients(self, names: dict) -> dict:
        """What decides the rows' values (studies.common, content keys); --batch does not."""
        method = FAMILIES[self.family][1]
        sampler = get_sampler(self.sampler)
        engine = {"method": method, "seed": self.seed, "samples": self.samples, "init": "exact",
                  "device": torch.device(self.device).type}
        return {"target": self.target_key, "sampler": sampler, "grid": make_grid(self.schedule, self.T),
                "engine": engine, "code": code_digest(sampler, METHODS[method])}


def family_target(family: str, d: int, k: int | None, floor: float, device):
    """The target of a family at (d, k)."""
    if family == "subspace":
        from theory.subspace import subspace_family

        return subspace_family(d, k, product_core=True, floor=floor).to(device)
    return get_target(FAMILIES[family][0], d, device=device)


def jobs(args: argparse.Namespace, device: torch.device) -> list[Job]:
    """(family, sampler, T, d) in the order that lets the product engine reuse its 1-D work across d."""
    for T in [*args.T, *args.subspace_T]:
        make_grid(args.schedule, T)  # a bad T or schedule fails before any work
    out = []
    for family in args.family:
        target_name, method, default_samplers = FAMILIES[family]
        if family == "subspace":
            shapes = [(d, k) for k in args.k for d in args.subspace_d if k < d]
            if not shapes:
                raise DivergenceError(f"the subspace family needs some k < d: got --k {args.k} and --subspace-d "
                                      f"{args.subspace_d}")
            Ts = args.subspace_T
        else:
            shapes = [(d, None) for d in args.d if family != "mixture" or d <= args.mixture_max_d]
            Ts = args.T
        samplers = {name: get_sampler(name)
                    for name in (sampler_list(args.sampler) if args.sampler else default_samplers)}
        # no exact method for stochastic samplers on a non-product mixture: the mixture family leaves them out
        samplers = {name: s for name, s in samplers.items() if not (family == "mixture" and s.info.stochastic)}
        keys = {}
        for d, k in shapes:
            target = family_target(family, d, k, args.floor, device)  # a dimension the family refuses fails here
            keys[d, k] = target.fingerprint()
            if args.sampler and args.sampler != ["all"]:
                # samplers named on the command line that the family's method cannot measure: refused before any
                # work ('all' keeps every sampler, and a job the method refuses is skipped with its reason)
                refuse_unmeasurable(target, samplers, method)
        for name in samplers:
            samples = args.flow_samples if method == "flow-mc" else args.samples
            out += [Job(family, name, args.schedule, T, d, k, args.floor if family == "subspace" else 0.0, samples,
                        args.seed, str(device), args.batch, keys[d, k])
                    for T in Ts for d, k in shapes]
    return out


def work(job: Job) -> list[dict] | Skip:
    device = torch.device(job.device)
    target_name, method, _ = FAMILIES[job.family]
    target = family_target(job.family, job.d, job.k, job.floor, device)
    grid = make_grid(job.schedule, job.T).to(device)
    options = {"seed": job.seed, "mc_samples" if method == "gaussian" else "samples": job.samples}
    if job.batch is not None and method in BATCHED:
        options["batch"] = job.batch
    start = time.perf_counter()
    try:
        result = measure(target, get_sampler(job.sampler), grid, init="exact", method=method, **options)
    except DivergenceError as err:
        return Skip(f"{job.family} {job.sampler} k={job.k} d={job.d} T={job.T}: {err}")
    seconds = time.perf_counter() - start
    return [{"family": job.family, "target": target.name, "sampler": job.sampler, "schedule": job.schedule,
             "k": "" if job.k is None else job.k, "d": job.d, "T": job.T, "metric": metric,
             "value": result[metric].value,
             "numerical_error": result[metric].numerical_error, "method": result[metric].method,
             "samples": result[metric].details.get("samples", ""), "seed": job.seed,
             "flagged": result[metric].flagged, "seconds": round(seconds, 3)} for metric in METRICS]


def _proven(sampler: str, metric: str, kind: str) -> str:
    """The theorems' d-powers for this sampler: for the error at fixed T, d^a; for T* at fixed error, d^(a/p)
    (error ~ d^a / T^p). KL-based theorems enter the TV column through Pinsker (TV ~ sqrt(KL))."""
    parts = []
    for th in theorems_for(sampler):
        a, p = th.d_power, th.order
        if th.metric == metric:
            power = a if kind == "error" else a / p
        elif th.metric == "kl" and metric == "tv":
            power = a / 2 if kind == "error" else a / p
        else:
            continue
        parts.append(f"{th.id}: {power:g}{' (recalled)' if th.recalled else ''}")
    return "; ".join(parts)


def _usable(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    keep = ~frame["flagged"].astype(str).str.lower().eq("true") & (frame["value"] > 0)
    if metric == "tv":
        keep &= frame["value"] < SATURATED_TV
    return frame[keep]


def fit_subspace_exponents(frame: pd.DataFrame) -> list[dict]:
    """The subspace family: error ~ d^a at each fixed (T, k), and error ~ k^c at each fixed (T, d)."""
    rows = []
    sub = frame[frame["family"] == "subspace"]
    for (sampler, metric), group in sub.groupby(["sampler", "metric"]):
        for (across, held, kind) in (("d", "k", "error_in_d_at_T_k"), ("k", "d", "error_in_k_at_T_d")):
            for (T, fixed), pts in group.groupby(["T", held]):
                pts = _usable(pts, metric).sort_values(across)
                if pts[across].nunique() < MIN_POINTS:  # no interval below it
                    continue
                try:
                    fit = fit_order(pts[across].astype(float), pts["value"], decreasing=False, window=len(pts))
                except RateError:
                    continue
                rows.append({"family": "subspace", "sampler": sampler, "metric": metric, "kind": kind,
                             "T_or_level": f"T={T}, {held}={int(fixed)}", "exponent": fit.order, "ci_low": fit.low,
                             "ci_high": fit.high, "points": fit.points,
                             "d_range": f"{across} {int(pts[across].min())}-{int(pts[across].max())}",
                             "proven": _proven(sampler, metric, "error")})
    return rows


def fit_exponents(frame: pd.DataFrame, tv_level: float, kl_level: float) -> pd.DataFrame:
    rows = fit_subspace_exponents(frame)
    others = frame[frame["family"] != "subspace"]
    for (family, sampler, metric), group in others.groupby(["family", "sampler", "metric"]):
        # (1) error ~ d^a at each fixed T
        for T, at_T in group.groupby("T"):
            pts = _usable(at_T, metric).sort_values("d")
            if pts["d"].nunique() < MIN_POINTS:  # no interval below it
                continue
            try:
                fit = fit_order(pts["d"], pts["value"], decreasing=False, window=len(pts))
            except RateError:
                continue
            rows.append({"family": family, "sampler": sampler, "metric": metric, "kind": "error_at_T",
                         "T_or_level": T, "exponent": fit.order, "ci_low": fit.low, "ci_high": fit.high,
                         "points": fit.points, "d_range": f"{pts['d'].min()}-{pts['d'].max()}",
                         "proven": _proven(sampler, metric, "error")})
        # (2) T* ~ d^b: at each d a power law in T (all usable T) solved for the fixed error level
        level = tv_level if metric == "tv" else kl_level
        d_star, T_star = [], []
        for d, at_d in group.groupby("d"):
            pts = _usable(at_d, metric).sort_values("T")
            if len(pts) < 2:
                continue
            try:
                fit = fit_order(pts["T"], pts["value"], window=len(pts))
            except RateError:
                continue
            if fit.order <= 0:
                continue
            t_star = math.exp((fit.intercept - math.log(level)) / fit.order)
            # keep T* within a factor 4 of the measured range (a short extrapolation at most)
            if pts["T"].min() / 4 <= t_star <= pts["T"].max() * 4:
                d_star.append(d)
                T_star.append(t_star)
        if len(set(d_star)) >= MIN_POINTS:
            fit = fit_order(d_star, T_star, decreasing=False, window=len(d_star))
            rows.append({"family": family, "sampler": sampler, "metric": metric, "kind": "T_star",
                         "T_or_level": level, "exponent": fit.order, "ci_low": fit.low, "ci_high": fit.high,
                         "points": fit.points, "d_range": f"{min(d_star)}-{max(d_star)}",
                         "proven": _proven(sampler, metric, "T_star")})
    return pd.DataFrame(rows, columns=EXPONENT_COLUMNS)


MARKS = {"capped": r"saturated: $\mathrm{TV} \geq 0.5$ (not fitted)",
         "flagged": "numerical error not small (not fitted)"}


POWER_STYLES = [":", "--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 3))]


def theorem_powers(samplers, metric: str) -> dict[float, list[str]]:
    """The d-power of the error at fixed T that each theorem covering these samplers proves (as _proven: a KL
    theorem enters the TV panel through Pinsker, d^(a/2)), power -> theorem ids, smallest power first."""
    powers: dict[float, list[str]] = {}
    for sampler in samplers:
        for th in theorems_for(sampler):
            if th.metric == metric:
                power = th.d_power
            elif th.metric == "kl" and metric == "tv":
                power = th.d_power / 2
            else:
                continue
            if math.isfinite(power):
                ids = powers.setdefault(float(power), [])
                if th.id not in ids:
                    ids.append(th.id)
    return dict(sorted(powers.items()))


def _d_fit(points: pd.DataFrame, metric: str):
    """The d-exponent fit of fit_exponents at one T (error ~ d^a over the usable points), or None where it refuses."""
    pts = _usable(points, metric).sort_values("d")
    if pts["d"].nunique() < 3:
        return None
    try:
        return fit_order(pts["d"], pts["value"], decreasing=False, window=len(pts))
    except RateError:
        return None


def plot(frame: pd.DataFrame, path: Path) -> tuple[list[Path], str]:
    """Error against d at the largest T, one row of panels (TV, KL) per family; per sampler its points and its
    fitted d-exponent over the d it was fitted on. Returns the files written and the caption."""
    from studies.plotting import DOUBLE, draw_fit, legend_below, mark_handles, mark_points, paper_style, save_figure, \
        subplots

    families = [f for f in FAMILIES if f in set(frame["family"])]
    colours = {name: f"C{i % 10}" for i, name in enumerate(sorted(frame["sampler"].unique()))}
    marks: list[str] = []
    every_power = {p for metric in ("tv", "kl") for p in theorem_powers(sorted(frame["sampler"].unique()), metric)}
    with paper_style():
        fig, axes = subplots(len(families), 2, width=DOUBLE, height=2.0 * len(families))
        for row, family in enumerate(families):
            sub = frame[frame["family"] == family]
            T_max = sub["T"].max()
            for col, metric in enumerate(("tv", "kl")):
                ax = axes[row, col]
                at_T = sub[(sub["metric"] == metric) & (sub["T"] == T_max)]
                ks = sorted(at_T["k"].dropna().unique())
                groups = at_T.groupby(["sampler", "k"]) if family == "subspace" else \
                    ((key, g) for key, g in at_T.groupby("sampler"))
                for key, g in groups:
                    sampler, k = key if family == "subspace" else (key, None)
                    g = g.sort_values("d")
                    # the subspace family: one line per (sampler, k), darker for larger k
                    shade = 1.0 if k is None else 0.35 + 0.65 * (ks.index(k) + 1) / len(ks)
                    last = k is None or k == ks[-1]
                    ax.errorbar(g["d"], g["value"], yerr=g["numerical_error"], fmt="none", color=colours[sampler],
                                alpha=shade)
                    ax.plot(g["d"], g["value"], marker="o", color=colours[sampler], alpha=shade,
                            label=sampler if last else None)
                    flagged = g["flagged"].astype(str).str.lower().eq("true").to_numpy()
                    if mark_points(ax, g["d"], g["value"], flagged, "flagged", colours[sampler]):
                        marks.append("flagged")
                    if metric == "tv" and mark_points(ax, g["d"], g["value"], (g["value"] >= SATURATED_TV).to_numpy()
                                                      & ~flagged, "capped", colours[sampler]):
                        marks.append("capped")
                    if last:
                        what = (f"{family}: " if len(families) > 1 else "") + f"{sampler} {metric.upper()}" \
                            + ("" if k is None else f" k={int(k)}")
                        draw_fit(ax, _d_fit(g, metric), decreasing=False, symbol="d", prefix=f"{what} fit",
                                 color=colours[sampler])
                d = np.array(sorted(sub["d"].unique()), float)
                ref = at_T[at_T["d"] == d.min()]["value"] if len(d) else []
                if len(ref):  # each d-power a theorem proves here, through the median error at the smallest d
                    for power, ids in theorem_powers(sorted(at_T["sampler"].unique()), metric).items():
                        ax.plot(d, float(np.median(ref)) * (d / d.min()) ** power, color="0.35", lw=0.7,
                                ls=POWER_STYLES[sorted(every_power).index(power) % len(POWER_STYLES)],
                                label=f"{metric.upper()} $d^{{{power:g}}}$: "
                                + ",\n    ".join(", ".join(ids[i : i + 2]) for i in range(0, len(ids), 2)))
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                values = at_T["value"][at_T["value"] > 0]
                if len(values):  # the data set the scale; a steep theorem line leaves the panel instead of hiding them
                    ax.set_ylim(float(values.min()) / 3, float(values.max()) * 30)
                ax.set_xlabel("dimension $d$")
                ax.set_ylabel(r"$\mathrm{TV}$" if metric == "tv" else r"$\mathrm{KL}$")
                methods = "/".join(sorted(sub[sub["metric"] == metric]["method"].unique()))
                what = ("$k$ = " + ", ".join(str(int(k)) for k in ks)) if family == "subspace" \
                    else sub["target"].iloc[0]
                ax.set_title(f"{family} ({what}), $T$ = {T_max}, {methods}")
                ax.grid(True, which="both")
        legend_below(fig, list(axes.flat), extra=mark_handles(marks, MARKS))
        written = save_figure(fig, path)
    text = ("Exact error against the dimension d at the largest T of each family (rows: "
            + ", ".join(families) + "; left TV, right KL), with the engine's numerical error as error bars. "
            "Broad translucent lines: the least-squares d-exponent (error ~ d^a) over the d it was fitted on, "
            "with its 95% interval in the legend (the exponents table lists them at every T, next to each "
            "theorem's d-power); no line where too few d are usable. Grey lines: the d-power each theorem covering "
            "these samplers proves for this metric (d^a; a KL theorem's d^(a/2) in the TV panels, through Pinsker), "
            "with the theorems' theory.bounds ids in the legend, drawn through the median error at the smallest d.")
    if "subspace" in families:
        text += (" Subspace family: one line per intrinsic dimension k, darker for larger k; the fit drawn is the "
                 "largest k's.")
    if "capped" in marks:
        text += (" Hollow squares: TV at or above 0.5, in its saturating regime, left out of the fits.")
    if "flagged" in marks:
        text += " Crosses: the numerical error is not well below the value; left out of the fits."
    return written, text


def summarise(frame: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    return fit_exponents(frame, args.tv_level, args.kl_level)


def report(frame: pd.DataFrame, exponents: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    exponents.to_csv(args.out / "exponents.csv", index=False)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 80)
    print(f"d-exponents (error ~ d^a at fixed T; T* ~ d^b at TV = {args.tv_level}, KL = {args.kl_level}), "
          "next to the theorems' d-powers:")
    print(with_intervals(exponents).to_string(index=False) if len(exponents) else "(too few usable points for any fit)")
    return [args.out / "exponents.csv", *export_tables({"exponents": with_intervals(exponents)}, args)]


def figures(frame: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    from studies.plotting import caption

    written, text = plot(frame, args.out / "dimension.png")
    print(caption(text))
    return written


STUDY = Study("dimension", build_parser, "dimension.csv", COLUMNS, KEY, jobs, work, summarise, report, figures)


def main(argv=None) -> int:
    return STUDY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
