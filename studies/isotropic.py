"""Isotropic Gaussian mixtures in R^d: does T^2 KL grow like d (Jiao-Zhou-Li) or stay flat in d (Li-Cai-Wei)?

    python -m studies.isotropic
    python -m studies.isotropic --target "isotropic:16?sigma2=0.05" --d 2 64 4096 --T 64 256 1024 --max-stochastic-T 1024

Each target `isotropic:<H>[?k=&sigma2=&scale=&seed=]` (theory.subspace.isotropic_mixture) is (1/H) sum_h
N(mu_h, sigma^2 I_d), means in a seeded k-dimensional span: exactly a k-dimensional core plus the isotropic floor
sigma^2 on the other d - k directions, so exact.subspace measures it in any d, with

    KL(d) = KL_core + (d - k) KL_1      (KL_1: one complement coordinate N(0, sigma^2), the same at every d),

an identity, not a fit: the rows record KL_core and KL_1. The d-exponent of T^2 KL therefore runs from 0 (while
KL_core dominates) to 1 (once d KL_1 does), unless the sampler is exact on N(0, sigma^2); TV follows while small.
Defaults: the sharp mixture (H = 4, sigma^2 = 0.05, well-separated narrow components), the unit-variance mixture
(H = 4, sigma^2 = 1, the components N(mu_h, I) of Li-Cai-Wei-type analyses) and Jiao-Zhou-Li's lower-bound case
(H = 1, sigma^2 = 2: N(mu, 2 I)). Cost, nearly independent of d (the complement is one 1-D Gaussian law
counted d - k times): about 0.05 s per step for the stochastic samplers (the 1-D core's kernel engine: 14 s at
T = 256, 60 s at T = 1024, per d, on an idle core; three times that on a loaded one) and 0.01 s per step for the
deterministic ones, so the defaults stop at T = 256 (about 9 minutes on an idle 2-core machine); add --T 1024 for
the full sweep (about 25 minutes more), or cap only the stochastic samplers with --max-stochastic-T.

Fitted: the exponent a of error ~ d^a at each (target, sampler, metric, T), over all usable d and over the three
largest ("large d"), with 95% intervals (theory.rates.fit_order), beside each theorem's d-power (theory.bounds) and
its conditions. `kl` is KL(sampler || data); `kl_reverse` is KL(data || sampler), the direction the DDPM theorems
bound, given by the engine for the stochastic samplers. TV at or above 0.5 (saturating) is left out of the fits.

Writes DIR/isotropic.csv (rows appended as they finish; a re-run skips them), DIR/exponents.csv and
DIR/isotropic.png (and .pdf, .svg), and prints the figure's caption.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from exact import METHODS, DivergenceError, measure
from samplers import get_sampler
from studies.common import (Skip, Study, StudyParser, add_flags, code_digest, integer, refuse_unmeasurable,
                            sampler_list, study_parser, with_intervals)
from studies.tables import export_tables
from theory.bounds import BY_ID, theorems_for
from theory.catalog import get_target
from theory.rates import RateError, fit_order
from theory.schedules import make_grid
from theory.targets import TargetError

DEFAULT_SAMPLERS = ["ddpm", "ddpm-posterior", "ddim", "ode-accel"]
DEFAULT_TARGETS = ["isotropic:4?sigma2=0.05", "isotropic:4?sigma2=1", "isotropic:1?sigma2=2"]
DEFAULT_D = [2, 16, 128, 1024, 4096]
DEFAULT_T = [16, 64, 256]
DEFAULT_MAX_STOCHASTIC_T = 1024
METHOD = "subspace"
METRICS = ("tv", "kl", "kl_reverse")
COLUMNS = ["target", "H", "sigma2", "k", "sampler", "schedule", "d", "T", "metric", "value", "numerical_error",
           "scaled", "kl_core", "kl_1", "method", "samples", "seed", "seconds"]
KEY = ["target", "sampler", "schedule", "d", "T", "seed", "metric"]
EXPONENT_COLUMNS = ["target", "sampler", "metric", "T", "fit", "exponent", "ci_low", "ci_high", "points", "d_range",
                    "predicted"]
SATURATED_TV = 0.5
LARGE_D_POINTS = 3

# What each theorem predicts for the d-exponent of T^2 KL (metric kl) or T TV (metric tv), with its conditions.
# KL theorems enter TV through Pinsker (TV <= sqrt(KL / 2): half the exponent, an upper bound only).
PREDICTIONS = {
    "jiaozhouli2025-kl-lower": "1 (T^2 KL >= c d; DDPM, exact score, N(0, lambda I), lambda >= 2)",
    "jiaozhouli2025-kl": "<= 1 (d >= L^2; L polylog for isotropic mixtures) [2 for d < L^2]",
    "jiaozhouli2025-tv": "<= 0.5 (d >= L^2)",
    "licaiwei2025-ddpm-gmm": "0 (TV, DDPM, (approximately) isotropic GMM; abstract only)",
    "liyan2024-adaptive": "0 in the ambient d (TV, intrinsic dimension k fixed; rate 1/sqrt(T))",
}


def build_parser() -> StudyParser:
    parser = study_parser("isotropic", __doc__)
    add_flags(parser, sampler=DEFAULT_SAMPLERS, target=DEFAULT_TARGETS, d=DEFAULT_D, schedule="li2023", T=DEFAULT_T,
              seed=0, device="cpu", threads=1, out=Path("results/isotropic"), no_plot=False, table=None,
              scheduler="auto", workers=None, fresh=False)
    parser.add_argument("--max-stochastic-T", type=integer(2), default=DEFAULT_MAX_STOCHASTIC_T,
                        help="largest T for the stochastic samplers (about 0.05 s per step and per d on a loaded "
                             "core); the deterministic ones run every --T")
    parser.add_argument("--samples", type=integer(2), default=2000, help="Monte Carlo draws for TV")
    return parser


@dataclass(frozen=True)
class Job:
    """One (target, sampler, T, d) measurement, as plain values."""

    target: str  # a catalog name, isotropic:<H>?...
    sampler: str
    schedule: str
    T: int
    d: int
    samples: int
    seed: int
    device: str
    target_key: str = ""  # the target's fingerprint at d
    reverse: bool = False  # does the engine give kl_reverse (Markov sampler, or a Gaussian core: H = 1)?

    def row_keys(self) -> list[dict]:
        return [{"target": self.target, "sampler": self.sampler, "schedule": self.schedule, "d": self.d,
                 "T": self.T, "seed": self.seed, "metric": metric} for metric in METRICS
                if metric != "kl_reverse" or self.reverse]

    def ingredients(self, names: dict) -> dict:
        """What decides the rows' values (studies.common, content keys)."""
        sampler = get_sampler(self.sampler)
        engine = {"method": METHOD, "seed": self.seed, "samples": self.samples, "init": "exact",
                  "device": torch.device(self.device).type}
        return {"target": self.target_key, "sampler": sampler, "grid": make_grid(self.schedule, self.T),
                "engine": engine, "code": code_digest(sampler, METHODS[METHOD])}


def _isotropic(name: str, d: int, device="cpu"):
    target = get_target(name, d=d, device=device)
    if not name.startswith("isotropic:"):
        raise TargetError(f"studies.isotropic measures the isotropic:<H> family, got target {name!r}")
    return target


def jobs(args: argparse.Namespace, device: torch.device) -> list[Job]:
    for T in args.T:
        make_grid(args.schedule, T)  # a bad T or schedule fails before any work
    # 'all': every registered sampler; a job the engine refuses (a randomized sampler in d > 1) is skipped with its
    # reason; samplers named one by one are refused before any work when the engine cannot measure them
    samplers = {name: get_sampler(name) for name in sampler_list(args.sampler)}
    out = []
    for name in args.target:
        keys, gaussian_core = {}, False
        for d in args.d:
            target = _isotropic(name, d, device)  # a d the family refuses (d <= k) fails here
            keys[d] = target.fingerprint()
            gaussian_core = target.core.is_gaussian
            if args.sampler != ["all"]:
                refuse_unmeasurable(target, samplers, METHOD)
        for sampler_name, sampler in samplers.items():
            Ts = [T for T in args.T if not sampler.info.stochastic or T <= args.max_stochastic_T]
            reverse = sampler.info.stochastic or gaussian_core
            out += [Job(name, sampler_name, args.schedule, T, d, args.samples, args.seed, str(device), keys[d],
                        reverse) for T in Ts for d in args.d]
    return out


def work(job: Job) -> list[dict] | Skip:
    device = torch.device(job.device)
    target = _isotropic(job.target, job.d, device)
    grid = make_grid(job.schedule, job.T).to(device)
    start = time.perf_counter()
    try:
        result = measure(target, get_sampler(job.sampler), grid, init="exact", method=METHOD, samples=job.samples,
                         seed=job.seed)
    except DivergenceError as err:
        return Skip(f"{job.target} {job.sampler} d={job.d} T={job.T}: {err}")
    seconds = time.perf_counter() - start
    details = result["kl"].details
    n = job.d - target.k
    kl_1 = details["kl_gaussian_part"] / n if n else float("nan")
    rows = []
    for metric in METRICS:
        if metric not in result:
            continue
        m = result[metric]
        scale = job.T if metric == "tv" else job.T**2
        rows.append({"target": job.target, "H": target.K, "sigma2": target.floor, "k": target.k,
                     "sampler": job.sampler, "schedule": job.schedule, "d": job.d, "T": job.T, "metric": metric,
                     "value": m.value, "numerical_error": m.numerical_error, "scaled": scale * m.value,
                     "kl_core": details["kl_core"], "kl_1": kl_1, "method": m.method,
                     "samples": m.details.get("samples", ""), "seed": job.seed, "seconds": round(seconds, 3)})
    return rows


def predicted(sampler: str, metric: str) -> str:
    """What the theorems covering `sampler` say about the d-exponent of this metric, with their conditions."""
    wanted = "tv" if metric == "tv" else "kl"
    parts = []
    for t in theorems_for(sampler):
        mark = " (recalled)" if t.recalled else ""
        if t.metric == wanted:
            side = ">=" if t.bound == "lower" else "<="
            parts.append(f"{t.id}: {PREDICTIONS.get(t.id, f'{side} {t.d_power:g}{mark}')}")
        elif t.metric == "kl" and wanted == "tv" and t.bound == "upper":
            parts.append(f"{t.id} via Pinsker: <= {t.d_power / 2:g}{mark}")
    return "; ".join(parts) or "no theorem on this metric"


def _usable(pts: pd.DataFrame, metric: str) -> pd.DataFrame:
    keep = pts["value"] > 0
    if metric == "tv":
        keep &= pts["value"] < SATURATED_TV
    return pts[keep]


def fit_exponents(frame: pd.DataFrame) -> pd.DataFrame:
    """error ~ d^a at each fixed (target, sampler, metric, T): over all usable d, and over the largest three."""
    rows = []
    for (target, sampler, metric, T), group in frame.groupby(["target", "sampler", "metric", "T"], sort=False):
        pts = _usable(group, metric).sort_values("d")
        for fit_name, chosen in (("all d", pts), ("large d", pts.tail(LARGE_D_POINTS))):
            if chosen["d"].nunique() < 3 or (fit_name == "large d" and len(chosen) == len(pts)):
                continue
            try:
                fit = fit_order(chosen["d"].astype(float), chosen["value"], decreasing=False, window=len(chosen))
            except RateError:
                continue
            rows.append({"target": target, "sampler": sampler, "metric": metric, "T": T, "fit": fit_name,
                         "exponent": fit.order, "ci_low": fit.low, "ci_high": fit.high, "points": fit.points,
                         "d_range": f"{int(chosen['d'].min())}-{int(chosen['d'].max())}",
                         "predicted": predicted(sampler, metric)})
    return pd.DataFrame(rows, columns=EXPONENT_COLUMNS)


def summarise(frame: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    return fit_exponents(frame)


def report(frame: pd.DataFrame, exponents: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    exponents.to_csv(args.out / "exponents.csv", index=False)
    pd.set_option("display.width", 220)
    pd.set_option("display.max_colwidth", 60)
    print("d-exponents of the error at fixed T (error ~ d^a; the same as the exponent of T^2 KL or T TV):")
    shown = exponents.drop(columns=["predicted"])
    print(with_intervals(shown).to_string(index=False) if len(shown) else "(too few usable points for any fit)")
    kl = frame[frame["metric"] == "kl"]
    if len(kl):
        print("\nthe exact split KL(d) = KL_core + (d - k) KL_1 at the largest T of each sampler:")
        last = kl[kl["T"] == kl.groupby(["target", "sampler"])["T"].transform("max")]
        split = last.groupby(["target", "sampler", "T"], sort=False)[["kl_core", "kl_1"]].first().reset_index()
        split["d_cross"] = split["kl_core"] / split["kl_1"].where(split["kl_1"] > 0)
        print(split.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("\nwhat the theorems predict for the d-exponent, and their conditions:")
    for sampler in dict.fromkeys(frame["sampler"]):
        for metric in ("kl", "tv"):
            print(f"  {sampler} {metric}: {predicted(sampler, metric)}")
    for tid in ("jiaozhouli2025-kl", "jiaozhouli2025-tv", "jiaozhouli2025-kl-lower", "licaiwei2025-ddpm-gmm"):
        print(f"  [{tid}] {BY_ID[tid].statement} (source: {BY_ID[tid].source or 'full text'})")
    print("  kl = KL(sampler || data); kl_reverse = KL(data || sampler), the direction of the DDPM theorems")
    return [args.out / "exponents.csv", *export_tables({"exponents": shown}, args)]


# What each reference line of the figure is: the d-power from theory.bounds and the theorems that predict it.
REFERENCE_LINES = {"kl": ("jiaozhouli2025-kl", "jiaozhouli2025-kl-lower"), "tv": ("jiaozhouli2025-tv",)}
D_FREE = "licaiwei2025-ddpm-gmm"
MARKS = {"capped": r"saturated: $\mathrm{TV} \geq 0.5$ (not fitted)"}
LINE_STYLES = {"kl": ":", "tv": "-."}


def _reference_label(ids: tuple[str, ...], power: float) -> str:
    return f"{', '.join(ids)}: $d^{{{power:g}}}$"


def _drawn_fit(points: pd.DataFrame, metric: str):
    """The d-exponent the exponents table gives at this (target, sampler, metric, T), refitted on the plotted column
    (T^2 KL or T TV: the same order and interval, a shifted intercept): the large-d fit where the table has one, else
    the all-d fit; (name, fit), or (None, None) where it fits nothing."""
    pts = _usable(points, metric).sort_values("d")
    large = pts.tail(LARGE_D_POINTS)
    for name, chosen in (("large-$d$", large), ("all-$d$", pts)):
        if chosen["d"].nunique() < 3 or (name == "large-$d$" and len(chosen) == len(pts)):
            continue
        try:
            return name, fit_order(chosen["d"].astype(float), chosen["scaled"], decreasing=False,
                                   window=len(chosen))
        except RateError:
            continue
    return None, None


def plot(frame: pd.DataFrame, path: Path) -> tuple[list[Path], str]:
    """T^2 KL and T TV against d at each sampler's largest T, one row of panels per target: the points, the fitted
    d-exponent over its window, the theorems' d-powers and the d-free line; saturated TV marked. Returns the files
    written (PNG, PDF, SVG) and the caption."""
    from studies.plotting import (DOUBLE, draw_fit, legend_below, log_ticks_125, mark_handles, mark_points,
                                  paper_style, save_figure, subplots)

    targets = list(dict.fromkeys(frame["target"]))
    samplers = list(dict.fromkeys(frame["sampler"]))
    colours = {name: f"C{i % 10}" for i, name in enumerate(samplers)}
    marks: list[str] = []
    fitted, abstained = False, False
    with paper_style():
        fig, axes = subplots(len(targets), 2, width=DOUBLE, height=2.0 * len(targets))
        for row, target in enumerate(targets):
            sub = frame[frame["target"] == target]
            first = sub.iloc[0]
            tag = rf"$H$ = {int(first['H'])}, $\sigma^2$ = {first['sigma2']:g}"
            for col, (metric, ylabel) in enumerate((("kl", r"$T^2\,\mathrm{KL}$"), ("tv", r"$T\,\mathrm{TV}$"))):
                ax = axes[row, col]
                rows = sub[sub["metric"] == metric]
                for sampler in samplers:
                    g = rows[rows["sampler"] == sampler]
                    if not len(g):
                        continue
                    T_max = int(g["T"].max())
                    g = g[(g["T"] == T_max) & (g["value"] > 0)].sort_values("d")
                    ax.plot(g["d"], g["scaled"], marker="o", color=colours[sampler], label=f"{sampler}, $T$ = {T_max}")
                    if metric == "tv" and mark_points(ax, g["d"], g["scaled"], (g["value"] >= SATURATED_TV).to_numpy(),
                                                      "capped", colours[sampler]):
                        marks.append("capped")
                    name, fit = _drawn_fit(g, metric)
                    line = draw_fit(ax, fit, decreasing=False, symbol="d", color=colours[sampler],
                                    prefix=f"{tag}: {sampler} {metric.upper()} {name} fit")
                    fitted |= line is not None
                    abstained |= line is None
                d = np.array(sorted(rows["d"].unique()), float)
                start = rows[(rows["d"] == d.min()) & (rows["value"] > 0)]["scaled"] if len(d) else []
                if len(start):  # the theorems' d-powers and the d-free line, through the median at the smallest d
                    anchor = float(np.median(start))
                    powers: dict[float, list[str]] = {}
                    for tid in REFERENCE_LINES[metric]:
                        powers.setdefault(float(BY_ID[tid].d_power), []).append(tid)
                    for power, ids in powers.items():
                        ax.plot(d, anchor * (d / d.min()) ** power, color="0.25", lw=0.8, ls=LINE_STYLES[metric],
                                label=_reference_label(tuple(ids), power))
                    free = BY_ID[D_FREE].d_power
                    ax.plot(d, anchor * (d / d.min()) ** free, color="0.5", lw=0.8, ls="--",
                            label=_reference_label((D_FREE,), free) + " (d-free)")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("dimension $d$")
                ax.set_ylabel(ylabel)
                ax.set_title(f"{tag}, $k$ = {int(first['k'])}")
                ax.grid(True, which="both")
                log_ticks_125(ax.yaxis)
        # one legend, grouped: the samplers, the theorems' lines, the fits (by target, metric, sampler), the marks
        entries: dict[str, object] = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                entries.setdefault(label, handle)
        order = sorted(entries, key=lambda label: (" fit: " in label, ": $d^{" in label))
        handles, labels = mark_handles(marks, MARKS)
        legend_below(fig, [], extra=([entries[label] for label in order] + handles, order + labels))
        written = save_figure(fig, path)
    text = ("T^2 KL(sampler || data) (left) and T TV (right) against the dimension d at each sampler's largest T, "
            "one row per target (H components of variance sigma^2, means in a k-dimensional span); points joined "
            "by thin lines, one colour per sampler. Broad translucent lines: the least-squares d-exponent "
            "(error ~ d^a) over the d it was fitted on (the three largest d where the sweep has more, else every "
            "usable d), with its 95% interval in the legend; the exponents table lists both fits at every T.")
    if abstained:
        text += " No broad line where too few d are usable for a fit with an interval."
    text += (" Dark grey lines, through the median at the smallest d: the d-power the theorems predict (theory.bounds "
             "ids in the legend): d^1 in KL (jiaozhouli2025-kl, an upper bound for d >= L^2, and "
             "jiaozhouli2025-kl-lower, a lower bound for N(mu, lambda I), lambda >= 2) and d^0.5 in TV "
             "(jiaozhouli2025-tv); light grey dashed: the d-free line of licaiwei2025-ddpm-gmm (a TV theorem; "
             "in the KL panels it shows what a d-free T^2 KL would look like). All of these theorems are about "
             "DDPM with the exact score; the other samplers are drawn against the same lines for comparison.")
    if "capped" in marks:
        text += " Hollow squares: TV at or above 0.5, in its saturating regime, left out of the fits."
    return written, text


def figures(frame: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    from studies.plotting import caption

    written, text = plot(frame, args.out / "isotropic.png")
    print(caption(text))
    return written


STUDY = Study("isotropic", build_parser, "isotropic.csv", COLUMNS, KEY, jobs, work, summarise, report, figures)


def main(argv=None) -> int:
    return STUDY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
