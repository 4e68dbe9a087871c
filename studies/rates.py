"""How fast does a sampler's exact error fall as the number of steps T grows?

    python -m studies.rates --sampler ode-accel
    python -m studies.rates --sampler all --T 16 32 64 128 256 512 1024 --out results/rates

For each sampler and T it measures the exact TV and KL of the sampler's output against q at the grid's last level
(exact/, the method is chosen per target and sampler and recorded), prints a table and a verdict line
(measured order with its 95% interval, against T and against the largest step size, next to every theorem that
covers the sampler and the constant that theorem would need on these data), and writes DIR/rates.csv (one row per
measurement, appended as it finishes: an interrupted run resumes where it stopped), DIR/orders.csv and
DIR/rates.png.

The verdicts are theory.rates.Verdict objects (metric_verdicts), which the line, orders.csv and the figure all read:
each says how many points its fit used and over which window; the step-size order is read against the declared
order ('agrees', 'above', 'below'), each theorem's needed constant as 'steady', 'falling' or 'rising', each word
only where the 95% interval excludes the others ('undecided' otherwise); with fewer than theory.rates.MIN_POINTS
trustworthy T the verdict says "too few T to decide", with no order and no trend word. orders.csv: one row per fit,
with its points, window (window_low, window_high), intercept (log C of the fitted line) and decision.

Path metrics: `--metric kl_path` (KL of the forward process's path law against the sampler's chain on the grid's
levels, the quantity Girsanov-type proofs bound; an upper bound on the output's kl_reverse) and `kl_path_sampler`
(the other direction, an upper bound on the output's kl) come from the path-KL engine (exact.path_kl: closed form
on Gaussian targets, Monte Carlo with exact densities and its standard error otherwise, seeded by --seed), for
samplers written as one Gaussian transition per step (ddpm and the like); any other sampler is refused before any
work. Their verdicts are held against the KL theorems, which bound exactly this path KL.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from exact import (
    BATCHED,
    METHODS,
    SEEDED,
    DivergenceError,
    Measurement,
    choose_method,
    init_error,
    measure,
)
from exact.path_kl import gaussian_transitions
from samplers import (
    CountingModel,
    ExactModel,
    get_sampler,
    sampler_grid,
    schedule_label,
)
from studies.common import (
    ResultsFile,
    Study,
    StudyParser,
    add_flags,
    code_digest,
    integer,
    powers_of_two,
    refuse_unmeasurable,
    sampler_list,
    study_parser,
)
from studies.tables import export_tables
from theory.bounds import BoundCheck, Theorem, check_bound, theorems_for
from theory.catalog import get_target
from theory.rates import TOO_FEW, RateError, Verdict, fit_order, local_slopes, order_verdict

COLUMNS = ["sampler", "schedule", "target", "d", "T", "nfe", "metric", "value", "numerical_error", "method", "init",
           "init_error", "max_step", "capped", "seed", "flagged"]
KEY = ["sampler", "schedule", "target", "d", "T", "init", "seed", "metric"]
ORDER_COLUMNS = ["sampler", "metric", "against", "order", "ci_low", "ci_high", "points", "window_low", "window_high",
                 "intercept", "decision", "proven_order", "theorem", "needed_constant_last", "constant_trend"]
DEFAULT_T = powers_of_two(8, 1024)
KNOWN_METRICS = ("tv", "kl", "kl_reverse", "w2", "kl_path", "kl_path_sampler")
PATH_METRICS = ("kl_path", "kl_path_sampler")  # from the path-KL engine, not the output engines
PATH_SAMPLES = 4000  # Monte Carlo paths per path-KL measurement (the engine's default)


def build_parser() -> StudyParser:
    parser = study_parser("rates", __doc__)
    add_flags(parser, sampler=["ode-accel"], target="mix1d", d=None, schedule="li2023", T=DEFAULT_T,
              metric=["tv", "kl"], seed=0, draws=1, device="cpu", threads=1, out=Path("results/rates"), no_plot=False,
              scheduler="auto", workers=None,
              batch=None, table=None, fresh=False)
    parser.add_argument("--init", default="exact", choices=["exact", "gaussian"],
                        help="start from q_T exactly or from N(0, I)")
    parser.add_argument("--method", default="auto", choices=["auto", *METHODS],
                        help="error method ('auto': chosen per target and sampler)")
    parser.add_argument("--window", type=integer(2), default=None,
                        help="points in the asymptotic fit window (default: half the points, at least 3)")
    return parser


@dataclass(frozen=True)
class Job:
    """One (sampler, T) measurement of a command, as plain values."""

    sampler: str
    target: str  # a built-in name or a JSON path, as given
    d: int | None  # as given
    target_name: str  # the target's own name and dimension: the rows' target and d
    target_d: int
    schedule: str
    T: int
    init: str
    method: str
    metrics: tuple[str, ...]
    seed: int
    device: str
    batch: int | None = None  # --batch: points per engine batch (methods in exact.BATCHED)
    target_key: str = ""  # the target's fingerprint (its parameters, not its name or path)
    engine: str = ""  # the method that measures the output metrics: --method, or the one 'auto' chooses

    def row_keys(self) -> list[dict]:
        return [{"sampler": self.sampler, "schedule": self.schedule, "target": self.target_name, "d": self.target_d,
                 "T": self.T, "init": self.init, "seed": self.seed, "metric": metric} for metric in self.metrics]

    def ingredients(self, names: dict) -> dict:
        """What decides the value of the row of these names (studies.common, content keys); --batch does not."""
        sampler = get_sampler(self.sampler)
        path = names["metric"] in PATH_METRICS
        method = "path-kl" if path else self.engine
        engine = {"method": method, "init": self.init, "seed": self.seed if method in SEEDED else None,
                  "samples": PATH_SAMPLES if path else None, "device": torch.device(self.device).type}
        return {"target": self.target_key, "sampler": sampler, "grid": sampler_grid(sampler, self.T, self.schedule),
                "engine": engine, "code": code_digest(sampler, METHODS.get(method), init_error)}


def jobs(args: argparse.Namespace, device: torch.device) -> list[Job]:
    """Every (sampler, T) of the command, once each input has been checked."""
    names = with_draws(sampler_list(args.sampler), args.seed, args.draws)
    target = get_target(args.target, d=args.d, device=device)
    samplers = {name: get_sampler(name) for name in names}
    for sampler in samplers.values():
        for T in args.T:
            sampler_grid(sampler, T, args.schedule)  # a bad T or schedule fails before any work
    for metric in args.metric:
        if metric not in KNOWN_METRICS:
            raise DivergenceError(f"metric {metric!r} is not available: known metrics are {', '.join(KNOWN_METRICS)}")
    if any(metric not in PATH_METRICS for metric in args.metric):
        refuse_unmeasurable(target, samplers, args.method)  # every sampler the method cannot measure, before any work
    if any(metric in PATH_METRICS for metric in args.metric):
        refuse_without_transitions(target, samplers, min(args.T), args.schedule, device)
    # A sampler with its own grid (a diffusers scheduler) records OWN_GRID as its schedule.
    return [Job(name, args.target, args.d, target.name, target.d, schedule_label(samplers[name], args.schedule), T,
                args.init, args.method,
                tuple(args.metric), args.seed, str(device), args.batch, target.fingerprint(),
                _engine(target, samplers[name], args.method))
            for name in names for T in sorted(set(args.T))]


def _engine(target, sampler, method: str) -> str:
    """The method that will measure the output metrics ('auto' where none applies: the job's work says why)."""
    if method != "auto":
        return method
    try:
        return choose_method(target, sampler)
    except DivergenceError:
        return "auto"


def refuse_without_transitions(target, samplers: dict, T: int, schedule: str, device) -> None:
    """Refuse, before any work, the samplers that are not one Gaussian transition a step (the path metrics need
    that): one line naming every one of them and why."""
    model = CountingModel(ExactModel(target))
    bad = {}
    for name, sampler in samplers.items():
        try:
            gaussian_transitions(sampler, model, sampler_grid(sampler, T, schedule).to(device))
        except DivergenceError as err:
            bad[name] = str(err)
    if bad:
        raise DivergenceError(f"cannot measure {', '.join(bad)} with the path metrics ({', '.join(PATH_METRICS)}): "
                              + "; ".join(f"{name}: {why}" for name, why in bad.items()))


def with_draws(names: list[str], seed: int, draws: int) -> list[str]:
    """Each sampler whose schedule is random (it has `with_draw`: lijiao-rmp) once per draw, named with every option
    and its draw (draw r = seed + r, or the draw the name gives + r); the other names as given."""
    out = []
    for name in names:
        sampler = get_sampler(name)
        if not hasattr(sampler, "with_draw"):
            out.append(name)
            continue
        first = sampler.draw if "draw=" in name else seed
        out += [sampler.with_draw(first + r).info.name for r in range(draws)]
    return out


def over_draws(frame: pd.DataFrame) -> pd.DataFrame:
    """Median and worst (largest) value over the schedule draws of each sampler, T and metric: the theorem holds per
    draw with high probability, so these two are its objects (rows of samplers without draws are left out)."""
    rows = frame[frame["sampler"].str.contains("&draw=", regex=False)].copy()
    rows["sampler"] = rows["sampler"].str.replace(r"&draw=\d+", "", regex=True)
    return median_and_worst(rows, ["sampler", "T", "metric"], sort=False)


def median_and_worst(rows: pd.DataFrame, by: list[str], sort: bool = True) -> pd.DataFrame:
    """Per group of `by`: the number of draws, the median and the worst (largest) value (an empty table with those
    columns when there are no rows)."""
    if rows.empty:
        return pd.DataFrame(columns=[*by, "draws", "median", "worst"])
    return rows.groupby(by, sort=sort)["value"].agg(draws="count", median="median", worst="max").reset_index()


def work(job: Job) -> list[dict]:
    """One (sampler, T) measurement: a row per requested metric, nothing if any value is unusable."""
    device = torch.device(job.device)
    target = get_target(job.target, d=job.d, device=device)
    sampler = get_sampler(job.sampler)
    grid = sampler_grid(sampler, job.T, job.schedule).to(device)  # a diffusers scheduler brings its own
    torch.manual_seed(job.seed)
    result = {}
    try:
        _measure_job(job, target, sampler, grid, result)
    except DivergenceError as err:
        if not folds(err):
            raise
        # A map that folds at this T (a property of the sampler at this step size, not bad input): the rows say
        # "not measured" with the reason, and the sweep goes on to the other T.
        print(f"studies.rates: {job.sampler} at T={job.T}: not measured: {err}", file=sys.stderr)
        return [_row(job, target, grid, sampler.nfe(grid), metric, ResultsFile.NOT_MEASURED, ResultsFile.NOT_MEASURED,
                     "not measured: " + str(err), {}, True) for metric in job.metrics]  # the reason, whole
    start_error = init_error(target, grid, job.init)
    nfe = sampler.nfe(grid)
    rows = []
    for metric in job.metrics:
        m: Measurement = result[metric]
        rows.append(_row(job, target, grid, nfe, metric, m.value, m.numerical_error, m.method, start_error,
                         m.flagged))
    return rows


FOLD_MARKERS = ("not increasing", "determinant", "diffeomorphism")


def folds(err: Exception) -> bool:
    """Whether an engine refused because the sampler's map is not invertible at this T (it folds)."""
    return any(marker in str(err) for marker in FOLD_MARKERS)


def _row(job: Job, target, grid, nfe: int, metric: str, value, error, method: str, start_error: dict,
         flagged: bool) -> dict:
    row = {
        "sampler": job.sampler, "schedule": job.schedule, "target": target.name, "d": target.d, "T": job.T,
        "nfe": nfe, "metric": metric, "value": value, "numerical_error": error, "method": method,
        "init": job.init, "init_error": start_error.get(metric, float("nan")) if job.init != "exact" else 0.0,
        "max_step": grid.max_step, "capped": grid.capped, "seed": job.seed, "flagged": flagged,
    }
    if not math.isfinite(row["init_error"]):
        row["init_error"] = ""  # not computable for this target: left empty, never NaN
    return row


def _measure_job(job: Job, target, sampler, grid, result: dict) -> None:
    """The job's measurements into `result`: the output metrics from the chosen engine, the path metrics from the
    path-KL engine."""
    if any(metric not in PATH_METRICS for metric in job.metrics):
        method = choose_method(target, sampler) if job.method == "auto" else job.method
        # Monte Carlo parts (Gaussian TV in d > 1, flow Monte Carlo, product TV) draw from --seed.
        options = {"seed": job.seed} if method in SEEDED else {}
        if job.batch is not None and method in BATCHED:
            options["batch"] = job.batch
        result.update(measure(target, sampler, grid, init=job.init, method=method, **options))
        for metric in job.metrics:
            if metric not in result and metric not in PATH_METRICS:
                raise DivergenceError(f"metric {metric!r} is not available from method "
                                      f"{next(iter(result.values())).method}: it gives {', '.join(result)}")
    if any(metric in PATH_METRICS for metric in job.metrics):
        # compare=False: the output KLs, where asked for, are rows of their own
        result.update(measure(target, sampler, grid, init=job.init, method="path-kl", seed=job.seed,
                              samples=PATH_SAMPLES, compare=False))


@dataclass(frozen=True)
class TheoremVerdict:
    """A theorem held against one sampler's metric: the constant it needs and its trend (check.verdict), the
    order after dividing the theorem's log factor (against: 'T' or 'T/log^k'), and any polylog note."""

    theorem: Theorem
    check: BoundCheck
    order: Verdict
    against: str
    note: str = ""


@dataclass(frozen=True)
class MetricVerdict:
    """Everything the verdict line, orders.csv and the figure say about one sampler's metric."""

    sampler: str
    metric: str
    d: int
    Ts: tuple[float, ...]  # the trustworthy T (unflagged, positive value)
    in_T: Verdict
    in_step: Verdict  # against the largest step size, compared with the declared order
    declared: float
    theorems: tuple[TheoremVerdict, ...] = ()


def metric_verdicts(frame: pd.DataFrame, window: int | None) -> list[MetricVerdict]:
    """The verdicts of every sampler and metric of a measured frame (rows with a value)."""
    out = []
    for sampler_name, group in frame.groupby("sampler", sort=False):
        d = int(group["d"].iloc[0])
        declared_tv = get_sampler(sampler_name).info.order
        for metric, rows in group.groupby("metric", sort=False):
            rows = rows.sort_values("T")
            usable = rows[(~rows["flagged"].astype(str).str.lower().eq("true")) & (rows["value"] > 0)]
            Ts, values = usable["T"].to_numpy(float), usable["value"].to_numpy(float)
            # The declared order is TV's; KLs behave like TV^2 for smooth discrepancies, so they expect twice that.
            declared = declared_tv if metric in ("tv", "w2") else 2 * declared_tv
            in_T = order_verdict(Ts, values, window=window)
            in_step = order_verdict(usable["max_step"].to_numpy(float), values, decreasing=False, window=window,
                                    expected=declared, subject="h")
            theorems = []
            if in_T.decision != TOO_FEW:
                for theorem in theorems_for(sampler_name, "kl" if metric == "kl_path" else metric):
                    if metric == "kl_path" and theorem.bound == "lower":
                        continue  # a lower bound on the output KL says nothing about the path KL's shape
                    theorems.append(_theorem_verdict(theorem, Ts, d, values, in_T, window))
            out.append(MetricVerdict(sampler_name, metric, d, tuple(Ts), in_T, in_step, declared, tuple(theorems)))
    return out


def _theorem_verdict(theorem: Theorem, Ts, d: int, values, in_T: Verdict, window) -> TheoremVerdict:
    check = check_bound(theorem, Ts, d, values, window=window)
    logs = theorem.log_power
    if math.isfinite(logs) and logs > 0:
        stripped = order_verdict(Ts, values / np.log(Ts) ** logs, window=window)
        return TheoremVerdict(theorem, check, stripped, f"T/log^{logs:g}",
                              f" ({stripped.fit} after dividing log^{logs:g} T)")
    note = ""
    if math.isnan(logs) and check.trend == "rising":
        # "polylog": how many powers of log T the shape would need for a steady constant (a rising trend is a
        # decided one, so the window holds enough points for this fit too).
        needed = fit_order(np.log(Ts), check.constants, decreasing=False, window=window, asymptotic="large")
        note = f" (polylog: the data need log^{needed.order:.1f} T)"
    return TheoremVerdict(theorem, check, in_T, "T", note)


def _order_row(base: dict, against: str, verdict: Verdict, **extra) -> dict:
    """An orders.csv row: the fit's order and interval only where it has one (no number from too few points)."""
    fit = verdict.fit  # a fit from too few points has no interval, so no order either
    shown = fit is not None and fit.has_interval
    return {**base, "against": against, "order": fit.order if shown else "", "ci_low": fit.low if shown else "",
            "ci_high": fit.high if shown else "", "points": verdict.points,
            "window_low": verdict.window[0] if verdict.window else "",
            "window_high": verdict.window[-1] if verdict.window else "",
            "intercept": fit.intercept if shown else "", "decision": verdict.decision, **extra}


def fit_orders(frame: pd.DataFrame, window: int | None) -> tuple[pd.DataFrame, list[str]]:
    """Orders per sampler and metric (against T, against step size, log factors divided out) and verdict lines,
    both read from metric_verdicts."""
    order_rows, lines, parts = [], [], {}
    for v in metric_verdicts(frame, window):
        base = {"sampler": v.sampler, "metric": v.metric}
        order_rows.append(_order_row(base, "T", v.in_T, proven_order="", theorem=""))
        if v.in_T.decision == TOO_FEW or v.in_T.fit is None:
            parts.setdefault(v.sampler, []).append(f"{v.metric.upper()}: {v.in_T}")
            continue
        order_rows.append(_order_row(base, "max_step", v.in_step, proven_order=v.declared, theorem="declared"))
        if v.in_step.decision == TOO_FEW:
            in_step = f"in step size {v.in_step}"
        elif v.in_step.fit is None:
            in_step = f"no order in step size ({v.in_step.reason})"
        else:
            in_step = f"{v.in_step.fit} in step size (declared {v.declared:g}: {v.in_step.word})"
        text = f"{v.metric.upper()} order {v.in_T.fit} in T ({v.in_T.span}), {in_step}"
        claims = []
        for t in v.theorems:
            check = t.check
            # a theorem's row is decided by its constant's trend
            order_rows.append(_order_row(base, t.against, t.order, proven_order=t.theorem.order, theorem=t.theorem.id,
                                         needed_constant_last=check.last, constant_trend=check.trend,
                                         decision=check.trend))
            if t.theorem.bound == "lower":
                claims.append(f"{t.theorem.id} proves no sampler of its kind beats order {t.theorem.order:g} (a "
                              f"lower bound){t.note}, its constant {check.last:.3g} ({check.verdict.word}; falling "
                              "would contradict it)")
            else:
                claims.append(f"{t.theorem.id} proves {t.theorem.order:g}{t.note}, needed constant {check.last:.3g} "
                              f"({check.verdict.word})")
        if claims:
            text += "; " + "; ".join(claims)
        parts.setdefault(v.sampler, []).append(text)
    for sampler_name, texts in parts.items():
        lines.append(f"verdict {sampler_name}: " + " | ".join(texts))
    return pd.DataFrame(order_rows, columns=ORDER_COLUMNS), lines


def print_table(frame: pd.DataFrame, out=None) -> None:
    out = sys.stdout if out is None else out  # looked up at call time (a test may have replaced it)
    for sampler_name, group in frame.groupby("sampler", sort=False):
        first = group.iloc[0]
        print(f"\n{sampler_name} on {first['target']} (d={first['d']}), schedule {first['schedule']}, "
              f"init {first['init']}, method {first['method']}", file=out)
        metrics = list(dict.fromkeys(group["metric"]))
        header = f"{'T':>6} {'NFE':>5} {'capped':>6}" + "".join(
            f" {m.upper():>11} {'+-err':>8} {'slope':>6}" for m in metrics)
        print(header, file=out)
        wide = {m: group[group["metric"] == m].set_index("T").sort_index() for m in metrics}
        Ts = sorted(set(group["T"]))
        slopes = {}
        for m in metrics:
            vals = wide[m]["value"].reindex(Ts).to_numpy(float)
            slopes[m] = [float("nan")] + (list(local_slopes(Ts, vals)) if len(Ts) > 1 and (vals > 0).all()
                                          else [float("nan")] * (len(Ts) - 1))
        for i, T in enumerate(Ts):
            row0 = wide[metrics[0]].loc[T]
            line = f"{T:>6} {int(row0['nfe']):>5} {int(row0['capped']):>6}"
            for m in metrics:
                r = wide[m].loc[T]
                flag = "!" if str(r["flagged"]).lower() == "true" else " "
                slope = "" if math.isnan(slopes[m][i]) else f"{slopes[m][i]:.2f}"
                line += f" {r['value']:>11.4e} {r['numerical_error']:>7.1e}{flag} {slope:>6}"
            print(line, file=out)
    if (frame["flagged"].astype(str).str.lower() == "true").any():
        print("(! : numerical error not well below the value; left out of the fits)", file=out)


# p: the sampler's output law, q: the true law at the grid's last level (shared/spec/metrics.md)
METRIC_LABELS = {"tv": r"$\mathrm{TV}$", "kl": r"$\mathrm{KL}(p\,\|\,q)$", "kl_reverse": r"$\mathrm{KL}(q\,\|\,p)$",
                 "w2": r"$W_2$", "kl_path": r"path $\mathrm{KL}$", "kl_path_sampler": r"path $\mathrm{KL}$ (sampler)"}
THEOREM_STYLES = [":", (0, (1, 1)), (0, (4, 1, 1, 1)), (0, (1, 2, 1, 2, 4, 2))]  # one per theorem of a sampler
MARKS = {"capped": r"$\beta$ capped at 0.5 (small $T$)", "flagged": "numerical error not small (not fitted)"}


def _is_flagged(rows: pd.DataFrame) -> np.ndarray:
    return rows["flagged"].astype(str).str.lower().eq("true").to_numpy()


def _fit(x, values, decreasing: bool, window: int | None):
    """The fit the verdict reports (theory.rates.fit_order on the trustworthy points), or None where it refuses."""
    try:
        return fit_order(x, values, decreasing=decreasing, window=window)
    except RateError:
        return None


def plot(frame: pd.DataFrame, path: Path, window: int | None = None) -> tuple[list[Path], str]:
    """Exact errors against T (one panel per metric) and the first metric against the largest step size h; per
    sampler its points, its fitted order over the fit window, and each theorem's shape scaled by the constant it
    needs at the largest T. Returns the files written and the caption."""
    from studies.plotting import (DOUBLE, draw_fit, legend_below, log_ticks_125, mark_handles, mark_points, paper_style,
                                  save_figure, subplots, theorem_label)

    metrics = list(dict.fromkeys(frame["metric"]))
    marks: list[str] = []
    fitted = abstained = 0
    with paper_style():
        panels = len(metrics) + 1
        fig, axes = subplots(1, panels, width=DOUBLE, height=2.1)
        axes = list(axes[0])
        colours = [f"C{i}" for i in range(10)]
        names = list(dict.fromkeys(frame["sampler"]))
        for ax, metric in zip(axes, metrics):
            sub = frame[frame["metric"] == metric]
            all_T = np.array(sorted(set(sub["T"])), float)
            for name, rows in sub.groupby("sampler", sort=False):
                rows = rows.sort_values("T")
                colour = colours[names.index(name) % len(colours)]
                ax.errorbar(rows["T"], rows["value"], yerr=rows["numerical_error"], fmt="none", color=colour)
                ax.plot(rows["T"], rows["value"], marker="o", color=colour, label=name)
                flagged = _is_flagged(rows)
                capped = rows["capped"].to_numpy(float) > 0
                if mark_points(ax, rows["T"], rows["value"], capped, "capped", colour):
                    marks.append("capped")
                if mark_points(ax, rows["T"], rows["value"], flagged, "flagged", colour):
                    marks.append("flagged")
                usable = rows[~flagged & (rows["value"] > 0).to_numpy()]
                fit = _fit(usable["T"].to_numpy(float), usable["value"].to_numpy(float), True, window) \
                    if len(usable) >= 2 else None
                if draw_fit(ax, fit, decreasing=True, symbol="T", prefix=f"{name} {metric.upper()} fit",
                            color=colour):
                    fitted += 1
                else:
                    abstained += 1
                d = int(rows["d"].iloc[0])
                Ts, vals = rows["T"].to_numpy(float), rows["value"].to_numpy(float)
                if (vals <= 0).any():
                    continue
                for j, theorem in enumerate(theorems_for(name, metric)):
                    c = check_bound(theorem, Ts, d, vals).last
                    ax.plot(all_T, [c * theorem.shape(T, d) for T in all_T], ls=THEOREM_STYLES[j % 4], lw=0.8,
                            color=colour, label=theorem_label(theorem, name))
            pos = sub["value"][sub["value"] > 0]
            if len(pos) and len(all_T) > 1:  # reference slopes through the middle of the data
                mid_T, mid_v = math.sqrt(all_T[0] * all_T[-1]), math.exp(np.log(pos).mean())
                for p, style, text in ((0.5, (0, (1, 4)), "1/2"), (1.0, "--", "1"), (2.0, "-.", "2")):
                    ax.plot(all_T, mid_v * (all_T / mid_T) ** (-p), color="0.5", lw=0.6, ls=style,
                            label=f"slope $T^{{-{text}}}$")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(r"$T$ (grid levels)")
            ax.set_ylabel(f"exact {METRIC_LABELS.get(metric, metric)}")
            ax.grid(True, which="both")
        # The same errors against the largest step size h = max_t (1 - alpha_t): log factors of the grid drop out.
        ax, metric = axes[-1], metrics[0]
        sub = frame[frame["metric"] == metric]
        for name, rows in sub.groupby("sampler", sort=False):
            rows = rows.sort_values("max_step")
            colour = colours[names.index(name) % len(colours)]
            ax.plot(rows["max_step"], rows["value"], marker="o", color=colour)
            flagged = _is_flagged(rows)
            mark_points(ax, rows["max_step"], rows["value"], rows["capped"].to_numpy(float) > 0, "capped", colour)
            mark_points(ax, rows["max_step"], rows["value"], flagged, "flagged", colour)
            usable = rows[~flagged & (rows["value"] > 0).to_numpy()]
            fit = _fit(usable["max_step"].to_numpy(float), usable["value"].to_numpy(float), False, window) \
                if len(usable) >= 2 else None
            draw_fit(ax, fit, decreasing=False, symbol="h", prefix=f"{name} {metric.upper()} fit", color=colour)
        hs, pos = np.array(sorted(set(sub["max_step"])), float), sub["value"][sub["value"] > 0]
        if len(pos) and len(hs) > 1:
            mid_h, mid_v = math.sqrt(hs[0] * hs[-1]), math.exp(np.log(pos).mean())
            for p, style in ((1.0, "--"), (2.0, "-.")):
                ax.plot(hs, mid_v * (hs / mid_h) ** p, color="0.5", lw=0.6, ls=style, label=f"slope $h^{{{p:g}}}$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        log_ticks_125(ax.xaxis)
        ax.set_xlabel(r"largest step $h = \max\,(1 - \alpha_t)$")
        ax.set_ylabel(f"exact {METRIC_LABELS.get(metric, metric)}")
        ax.grid(True, which="both")
        legend_below(fig, axes, extra=mark_handles(marks, MARKS))
        written = save_figure(fig, path)
    first = frame.iloc[0]
    text = (f"Exact error of {', '.join(names)} on {first['target']} (d = {first['d']}), {first['schedule']} grid, "
            f"init {first['init']}, against the number of grid levels $T$ (one panel per metric: "
            f"{', '.join(m.upper() for m in metrics)}) and, in the last panel, {metrics[0].upper()} against the "
            "largest step size h. Points with error bars: measured values and the engine's numerical error. "
            "Broad translucent lines: the least-squares order over its fit window only (the largest T, or the "
            "smallest h), with its 95% interval and window in the legend"
            + (f"; {abstained} sampler-metric fits abstain (too few points for an interval) and show points only"
               if abstained else "")
            + ". Thin dotted and dash-dotted lines in a sampler's colour: each theorem's shape (its theory.bounds id "
            "in the legend), "
            "scaled by the constant it needs at the largest T. Grey lines: reference slopes.")
    if "capped" in marks:
        text += (" Hollow squares: T at which Li et al.'s schedule caps beta at 0.5 (the formula exceeds it for "
                 "small T): every step there has h = 0.5, which makes the hook at h = 0.5 in the last panel; these "
                 "points lie outside the regime the theorems describe.")
    if "flagged" in marks:
        text += " Crosses: the numerical error is not well below the value; these points are left out of the fits."
    return written, text


def measured(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with a value (rows whose map folded at their T say "not measured" and are left out), numeric."""
    values = pd.to_numeric(frame["value"], errors="coerce")
    keep = values.notna()
    out = frame[keep].copy()
    out["value"] = values[keep].astype(float)
    out["numerical_error"] = pd.to_numeric(out["numerical_error"], errors="coerce")
    return out


def summarise(frame: pd.DataFrame, args: argparse.Namespace) -> tuple[pd.DataFrame, list[str]]:
    return fit_orders(measured(frame), args.window)


def report(frame: pd.DataFrame, summary: tuple[pd.DataFrame, list[str]], args: argparse.Namespace) -> list[Path]:
    orders, verdicts = summary
    orders.to_csv(args.out / "orders.csv", index=False)
    print_table(measured(frame))
    spread = over_draws(measured(frame))
    if not spread.empty:
        spread.to_csv(args.out / "draws.csv", index=False)
        print("\nover schedule draws (each draw's rows above):")
        for row in spread.itertuples():
            print(f"{row.sampler} T={row.T} {row.metric}: median {row.median:.4e}, worst {row.worst:.4e} "
                  f"over {row.draws} draws")
    missing = frame[pd.to_numeric(frame["value"], errors="coerce").isna()]
    for (name, T), rows in missing.groupby(["sampler", "T"], sort=False):
        print(f"{name} at T={T}: {rows['method'].iloc[0]}")
    print()
    for line in verdicts:
        print(line)
    return [args.out / "orders.csv", *([args.out / "draws.csv"] if not spread.empty else []),
            *export_tables({"rates": value_table(measured(frame)), "orders": orders}, args)]


def value_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The measured values for a paper: one row per (sampler, T) with NFE, capped steps and, per metric, the value
    and the engine's numerical error."""
    metrics = list(dict.fromkeys(frame["metric"]))
    rows = []
    for (name, T), group in frame.groupby(["sampler", "T"], sort=False):
        first = group.iloc[0]
        row = {"sampler": name, "T": int(T), "NFE": int(first["nfe"]), "capped": int(first["capped"])}
        for metric in metrics:
            at = group[group["metric"] == metric]
            row[metric.upper()] = float(at["value"].iloc[0]) if len(at) else None
            row[f"{metric.upper()} error"] = float(at["numerical_error"].iloc[0]) if len(at) else None
        rows.append(row)
    return pd.DataFrame(rows)


def figures(frame: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    from studies.plotting import caption

    written, text = plot(measured(frame), args.out / "rates.png", args.window)
    print(caption(text))
    return written


STUDY = Study("rates", build_parser, "rates.csv", COLUMNS, KEY, jobs, work, summarise, report, figures)


def main(argv=None) -> int:
    return STUDY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
