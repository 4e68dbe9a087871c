"""How tight is each bound? The largest constant a theorem needs over its class of targets, as T grows.

    python -m studies.tightness
    python -m studies.tightness --sampler all --T 32 128 512 --budget 64

A theorem bounds a sampler's error by C * shape(T, d) for every target of its class; on one hand-picked target the
constant it needs (measured / shape) says little about the worst case. This study searches the class for the target
that needs the largest constant, at each T.

The class searched: 1-D Gaussian mixtures of K components with second moment E x^2 = 1 (the usual normalisation
E|x|^2 <= d taken at its boundary) and component variances at least `--min-var` (a theorem whose bound carries a
smoothness constant, such as chen2022's L, absorbs it into C only on a class where it is bounded; the floor is that
bound); with `--d` > 1, d independent copies of such a mixture (E|x|^2 = d; the product engine measures them
exactly: KL as a sum of exact 1-D KLs, TV by Monte Carlo with exact densities and its standard error), where a
theorem's d-power meets data. A point of the search is theta = (weight logits, means, log variances); the mixture
it stands for is rescaled to the second moment, so every theta is admissible.

At fixed (T, d) every theorem that bounds the same metric of the same sampler has the same worst target, the one
with the largest error, since shape(T, d) is then a number: one search per (sampler, metric, T) serves them all.
The search is seeded: a scrambled Sobol set of starts, then Nelder-Mead on -log(error) from the best starts, until
`--budget` exact evaluations are spent (exact/: each evaluation is the method's value with its numerical error).
Then the worst target found at each T is evaluated at every other T, so that a fixed target's constant can be
followed in T as well.

For each theorem the table gives the worst constant found at each T, the constant on mix1d rescaled into the class
(E x^2 = 1; it is also the first start of every search with K = 3) for comparison, and the
slope of log(worst constant) in log T with its 95% interval: 'falling' (the interval below -0.1) means the bound is
loose in T even at the worst target found, 'steady' (within +-0.1) tight, 'rising' (above 0.1) that the bound's shape
is contradicted on its own class, and an interval that straddles +-0.1 is reported as undecided; with fewer than 3 T
(theory.rates.MIN_POINTS) there is no interval and the verdict says too few T to decide (the search
gives a lower bound on the worst constant, so a rising lower bound is evidence against the theorem's shape, or
against this class meeting its assumptions). Writes DIR/tightness.csv (one row per search and T at which its
winner is measured: source_T = T is the search's own), DIR/worst-<sampler>-<metric>-T<T>.json (target files that
--target accepts), DIR/constants.csv and DIR/tightness.png.
"""

from __future__ import annotations

import json
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
from studies.common import (
    Skip,
    Study,
    add_flags,
    code_digest,
    integer,
    real,
    refuse_unmeasurable,
    sampler_list,
    study_parser,
)
from studies.tables import export_tables
from theory.bounds import THEOREMS, theorems_for
from theory.catalog import get_target
from theory.product import product_of
from theory.rates import TOO_FEW, UNDECIDED, RateError, Verdict, fit_order, trend_verdict
from theory.schedules import make_grid
from theory.targets import GaussianMixture

DEFAULT_T = [16, 64, 256]
# The seed paper's samplers by default (under 15 minutes on 2 cores); --sampler all: every sampler with a theorem
DEFAULT_SAMPLERS = ["ode", "ddim", "ode-accel", "ddpm", "ddpm-accel"]
KEY = ["sampler", "metric", "schedule", "source_T", "T", "d", "K", "min_var", "budget", "seed"]
COLUMNS = KEY + ["value", "numerical_error", "method", "evaluations", "refused", "weights", "means", "variances",
                 "seconds"]
CONSTANT_COLUMNS = ["theorem", "sampler", "metric", "T", "shape", "worst_value", "worst_constant",
                    "mix1d_constant", "slope", "points", "trend", "verdict"]


@dataclass(frozen=True)
class Job:
    """One search (sampler, metric, source_T) and the T values its winner is measured at, as plain values."""

    sampler: str
    metric: str
    schedule: str
    source_T: int
    Ts: tuple[int, ...]
    d: int
    K: int
    min_var: float
    budget: int
    starts: int
    G: int
    seed: int

    def row_keys(self) -> list[dict]:
        return [{"sampler": self.sampler, "metric": self.metric, "schedule": self.schedule, "source_T": self.source_T,
                 "T": T, "d": self.d, "K": self.K, "min_var": self.min_var, "budget": self.budget, "seed": self.seed}
                for T in self.Ts]

    def ingredients(self, names: dict) -> dict:
        """What decides a row's value (studies.common, content keys): the searched class (its first start is mix1d
        rescaled), the sampler, the search's grid and the grid its winner is measured on, the search's settings,
        and the search's own code with the engines it calls ('auto': whichever applies)."""
        sampler = get_sampler(self.sampler)
        target = {"class": "1-D mixtures, E x^2 = 1", "K": self.K, "min_var": self.min_var, "d": self.d,
                  "first_start": get_target("mix1d").fingerprint()}
        grids = [make_grid(self.schedule, self.source_T), make_grid(self.schedule, int(names["T"]))]
        engine = {"method": "auto", "budget": self.budget, "starts": self.starts, "G": self.G, "seed": self.seed}
        code = code_digest(sampler, choose_method, product_of, GaussianMixture, work, _error, mixture_from_params,
                           reference_theta, class_target)
        return {"target": target, "sampler": sampler, "grid": grids, "engine": engine, "code": code}


def samplers_with_theorems() -> list[str]:
    return list(dict.fromkeys(s for t in THEOREMS for s in t.samplers))


def build_parser():
    parser = study_parser("tightness", __doc__)
    add_flags(parser, sampler=DEFAULT_SAMPLERS, d=1, schedule="li2023", T=DEFAULT_T, seed=0, device="cpu",
              threads=1, out=Path("results/tightness"), no_plot=False, table=None, scheduler="auto", workers=None,
              fresh=False)
    parser.add_argument("--budget", type=integer(1), default=32,
                        help="exact evaluations per search (Sobol starts plus Nelder-Mead)")
    parser.add_argument("--starts", type=integer(1), default=16, help="Sobol starts (at most the budget)")
    parser.add_argument("--components", type=integer(1), default=3, help="K, the components of the searched mixtures")
    parser.add_argument("--min-var", type=real(0.0), default=0.01, help="smallest component variance of the class")
    parser.add_argument("--G", type=integer(64), default=2048,
                        help="nodes of the 1-D engines in the search (the winners are re-measured at the engines' own "
                        "default, 8192 for the flow engine, 4096 or more for the kernel engine)")
    return parser


# ---------------------------------------------------------------------------- the class of targets
def mixture_from_params(theta: np.ndarray, K: int, min_var: float, second_moment: float = 1.0,
                        name: str = "searched") -> GaussianMixture:
    """The 1-D mixture a search point stands for: weights softmax(logits), then means and standard deviations
    rescaled so that E x^2 = second_moment, with every variance at least min_var (the rescaling applies to the
    part above the floor, so the floor holds exactly and the moment too)."""
    theta = np.asarray(theta, float)
    logits, means, log_var = theta[:K], theta[K:2 * K], theta[2 * K:3 * K]
    w = np.exp(logits - logits.max())
    w /= w.sum()
    excess = np.exp(np.clip(log_var, -30, 30))
    # E x^2 = sum w (c^2 mu^2 + min_var + c^2 excess) = second_moment  =>  c^2 = (second_moment - min_var) / m
    m = float(np.sum(w * (means**2 + excess)))
    if second_moment <= min_var:
        raise DivergenceError(f"the variance floor {min_var} leaves no room under E x^2 = {second_moment}")
    c2 = (second_moment - min_var) / max(m, 1e-300)
    return GaussianMixture(w.tolist(), (math.sqrt(c2) * means)[:, None].tolist(),
                           (min_var + c2 * excess)[:, None, None].tolist(), name)


def reference_theta(mixture: GaussianMixture, min_var: float) -> np.ndarray:
    """The search point of a 1-D mixture rescaled to E x^2 = 1 (variances below the floor are raised to it)."""
    w = mixture.weights.numpy()
    mu, var = mixture.means[:, 0].numpy(), mixture.covs[:, 0, 0].numpy()
    s2 = 1.0 / float(np.sum(w * (mu**2 + var)))
    excess = np.maximum(var - min_var / s2, 1e-6)
    return np.concatenate([np.log(w), mu, np.log(excess)])


def reference(min_var: float) -> GaussianMixture:
    """mix1d rescaled into the searched class: the comparison point of every search, and its first start."""
    return mixture_from_params(reference_theta(get_target("mix1d"), min_var), 3, min_var, name="mix1d-rescaled")


def class_target(marginal: GaussianMixture, d: int):
    """The searched class at dimension d: d independent copies of a 1-D mixture with E x^2 = 1, so E|x|^2 = d."""
    return marginal if d == 1 else product_of(marginal, d, f"{marginal.name}-x{d}")


def _error(theta, job: Job, T: int, G: int | None) -> tuple[float, float, str]:
    """(value, numerical error, method) of the job's sampler and metric at T on the class target of theta (G: the
    1-D engines' nodes, None for their default; a coarser G ranks candidates at a fraction of the cost). In d > 1
    the product engine measures it (KL exact, TV by Monte Carlo seeded by the job's seed)."""
    target = class_target(mixture_from_params(theta, job.K, job.min_var), job.d)
    sampler = get_sampler(job.sampler)
    options = {"G": G} if G is not None else {}
    if job.d > 1:
        options["seed"] = job.seed
    m = measure(target, sampler, make_grid(job.schedule, T), **options)[job.metric]
    return m.value, m.numerical_error, m.method


def work(job: Job) -> list[dict] | Skip:
    """One seeded search for the target of largest error at source_T, and its winner measured at every T."""
    from scipy.optimize import minimize
    from scipy.stats import qmc

    torch.set_num_threads(1)
    started = time.perf_counter()
    K, budget = job.K, job.budget
    starts = min(job.starts, budget)
    box_low = np.concatenate([np.full(K, -2.0), np.full(K, -3.0), np.full(K, math.log(1e-3))])
    box_high = np.concatenate([np.full(K, 2.0), np.full(K, 3.0), np.full(K, math.log(2.0))])
    sobol = qmc.Sobol(3 * K, scramble=True, seed=job.seed)
    # A power-of-two Sobol set keeps its balance; the first `starts` of it are used.
    points = qmc.scale(sobol.random_base2(math.ceil(math.log2(starts)))[:starts], box_low, box_high)
    if K == 3:  # the first start is mix1d rescaled into the class, so a search never ends below it
        points[0] = reference_theta(get_target("mix1d"), job.min_var)
    log = {"evaluations": 0, "refused": 0}
    best = {"value": -math.inf, "theta": None}

    def objective(theta) -> float:
        if log["evaluations"] >= budget:
            return math.inf  # out of budget: the optimiser stops improving on this point
        log["evaluations"] += 1
        try:
            value, _, _ = _error(theta, job, job.source_T, job.G)
        except DivergenceError:  # e.g. a map that folds at this T: no exact number, no candidate
            log["refused"] += 1
            return math.inf
        if value > best["value"]:
            best.update(value=value, theta=np.array(theta, float))
        return -math.log(max(value, 1e-300))

    scores = [objective(p) for p in points]
    for i in np.argsort(scores)[:2]:
        if log["evaluations"] >= budget or not math.isfinite(scores[i]):
            break
        minimize(objective, points[i], method="Nelder-Mead",
                 options={"maxfev": budget - log["evaluations"], "xatol": 1e-3, "fatol": 1e-4})
    if best["theta"] is None:
        return Skip(f"{job.sampler} {job.metric} T={job.source_T}: every evaluated target was refused")
    target = mixture_from_params(best["theta"], K, job.min_var)
    found = {"evaluations": log["evaluations"], "refused": log["refused"],
             "weights": json.dumps(target.weights.tolist()), "means": json.dumps(target.means[:, 0].tolist()),
             "variances": json.dumps(target.covs[:, 0, 0].tolist())}
    rows = []
    for key in job.row_keys():
        # The winner, measured with the engine's default (finer) grid: these values and errors are the reported ones.
        try:
            value, error, method = _error(best["theta"], job, key["T"], None)
        except DivergenceError as err:
            print(f"studies.tightness: the winner of {job.sampler} {job.metric} T={job.source_T} at T={key['T']}: "
                  f"{err}", file=sys.stderr)
            continue
        rows.append({**key, "value": value, "numerical_error": error, "method": method, **found,
                     "seconds": round(time.perf_counter() - started, 2)})
    return rows


def target_of(row) -> GaussianMixture:
    """The worst target of a results row, as a mixture (and a JSON file through `to_dict`)."""
    weights = json.loads(row["weights"])
    return GaussianMixture(weights, [[m] for m in json.loads(row["means"])],
                           [[[v]] for v in json.loads(row["variances"])],
                           f"worst-{row['sampler']}-{row['metric']}-T{int(row['source_T'])}")


# ---------------------------------------------------------------------------- the study
def jobs(args, device) -> list[Job]:
    """A search per (sampler, metric its theorems bound, T); every input checked first."""
    names = sampler_list(args.sampler, everything=samplers_with_theorems())
    for name in names:
        if not theorems_for(name):
            raise DivergenceError(f"sampler {name!r} has no theorem in theory.bounds: nothing to be tight against")
    # every sampler that no exact method measures on the class (randomized samplers in d > 1), named at once
    refuse_unmeasurable(class_target(reference(0.01), args.d), {name: get_sampler(name) for name in names})
    for T in args.T:
        make_grid(args.schedule, T)
    if args.min_var >= 1.0:
        raise DivergenceError(f"--min-var {args.min_var:g} leaves no room under the second moment E x^2 = 1")
    Ts = tuple(sorted(set(args.T)))
    return [Job(name, metric, args.schedule, T, Ts, args.d, args.components, args.min_var, args.budget, args.starts,
                args.G, args.seed)
            for name in names for metric in dict.fromkeys(t.metric for t in theorems_for(name)) for T in Ts]


def classify(Ts, constants) -> Verdict:
    """The worst constant's trend in T: the least-squares slope of log constant against log T with its 95% interval
    over every T (theory.rates.trend_verdict): 'rising' or 'falling' when the interval clears +-TREND_MARGIN,
    'steady' when it lies within it, otherwise undecided; too few T (below theory.rates.MIN_POINTS) to decide is
    said so, never called steady."""
    return trend_verdict(np.asarray(Ts, float), np.asarray(constants, float), window=len(Ts))


VERDICTS = {"rising": "the worst constant grows with T: the shape is contradicted on its class",
            "steady": "tight in shape at the worst target found",
            "falling": "loose in T even at the worst target found"}


def verdict_text(verdict: Verdict, bound: str = "upper") -> str:
    """What the table says of a theorem's trend: a sentence for a decided trend, the abstention and its reason
    otherwise (a lower bound is listed but not judged)."""
    if verdict.decision in VERDICTS:
        text = VERDICTS[verdict.decision]
    elif verdict.decision == UNDECIDED and verdict.fit is not None:
        text = f"undecided: slope {verdict.fit} in log T"
    else:
        text = str(verdict)
    if bound == "lower":
        text = "a lower bound: a worst-case search does not test it (" + text + ")"
    return text


def summarise(frame: pd.DataFrame, args) -> pd.DataFrame:
    """Per theorem and T: the worst constant found (the largest error at T among every search's winner), mix1d's
    constant, and the worst constant's trend in T."""
    compare = class_target(reference(args.min_var), args.d)
    rows = []
    for theorem in THEOREMS:
        for name in theorem.samplers:
            mine = frame[(frame["sampler"] == name) & (frame["metric"] == theorem.metric)]
            if mine.empty:
                continue
            per_T = []
            for T in sorted(set(mine["T"])):
                worst = float(mine[mine["T"] == T]["value"].max())
                shape = theorem.shape(T, args.d)
                options = {"seed": args.seed} if args.d > 1 else {}
                ref = measure(compare, get_sampler(name), make_grid(args.schedule, int(T)), **options)[theorem.metric]
                per_T.append((T, shape, worst, worst / shape, ref.value / shape))
            moving = classify([p[0] for p in per_T], [p[3] for p in per_T])
            slope = str(moving.fit) if moving.decision != TOO_FEW and moving.fit is not None else ""
            verdict = verdict_text(moving, getattr(theorem, "bound", "upper"))
            for T, shape, worst, constant, ref_constant in per_T:
                rows.append({"theorem": theorem.id, "sampler": name, "metric": theorem.metric, "T": int(T),
                             "shape": shape, "worst_value": worst, "worst_constant": constant,
                             "mix1d_constant": ref_constant, "slope": slope, "points": moving.points,
                             "trend": moving.decision, "verdict": verdict})
    return pd.DataFrame(rows, columns=CONSTANT_COLUMNS)


def report(frame: pd.DataFrame, constants: pd.DataFrame, args) -> list[Path]:
    """The table on stdout, constants.csv, and each search's winner as a JSON target file."""
    written = [args.out / "constants.csv"]
    constants.to_csv(written[0], index=False)
    for _, row in frame[frame["source_T"] == frame["T"]].iterrows():
        path = args.out / f"worst-{row['sampler']}-{row['metric']}-T{int(row['T'])}.json"
        marginal = target_of(row).to_dict()
        spec = marginal if int(row["d"]) == 1 else {"product": marginal, "d": int(row["d"])}
        path.write_text(json.dumps(spec))
        written.append(path)
    print_table(constants)
    return written + export_tables({"constants": constants}, args)


def print_table(constants: pd.DataFrame, out=None) -> None:
    out = sys.stdout if out is None else out
    if constants.empty:
        print("no constants: every search was refused", file=out)
        return
    for (theorem, name), rows in constants.groupby(["theorem", "sampler"], sort=False):
        cells = ", ".join(f"T={r.T}: {r.worst_constant:.3g} (rescaled mix1d {r.mix1d_constant:.3g})"
                          for r in rows.itertuples())
        slope = rows["slope"].iloc[0]
        slope = slope if isinstance(slope, str) and slope else "n/a"
        print(f"{theorem} on {name} ({rows['metric'].iloc[0].upper()}): worst constant {cells}; slope in log T "
              f"{slope} ({rows['points'].iloc[0]} T); {rows['verdict'].iloc[0]}", file=out)


def figures(frame: pd.DataFrame, args) -> list[Path]:
    """The worst constant each theorem needs against T (solid), the rescaled mix1d's (dotted), and the fitted slope
    of log(worst constant) in log T that classify() reads (a broad translucent line over every T, where it has an
    interval). Prints the caption."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from studies.plotting import (DOUBLE, FIT_LINE, caption, drawable, legend_below, paper_style, save_figure,
                                  subplots, theorem_label)

    constants = pd.read_csv(args.out / "constants.csv")  # written by report, which runs first
    by_id = {theorem.id: theorem for theorem in THEOREMS}
    fitted = 0
    with paper_style():
        fig, axes = subplots(1, 1, width=DOUBLE, height=2.6)
        ax = axes[0][0]
        colours = plt.get_cmap("tab20").colors  # more theorems than the default cycle has colours
        markers = "osD^v<>Ph*X"
        for i, ((theorem, name), rows) in enumerate(constants.groupby(["theorem", "sampler"], sort=False)):
            rows = rows.sort_values("T")
            colour = colours[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
            Ts, worst = rows["T"].to_numpy(float), rows["worst_constant"].to_numpy(float)
            fit = None
            if len(Ts) >= 3:
                try:
                    fit = fit_order(Ts, worst, decreasing=False, window=len(Ts))
                except RateError:
                    fit = None
            label = theorem_label(by_id[theorem], name) if theorem in by_id else f"{theorem} ({name})"
            if drawable(fit):
                grid = np.geomspace(Ts.min(), Ts.max(), 32)
                ax.plot(grid, np.exp(fit.intercept) * grid**fit.order, color=colour, **FIT_LINE)
                label += f"; slope {fit.order:.2f} [{fit.low:.2f}, {fit.high:.2f}]"
                fitted += 1
            ax.plot(Ts, worst, marker=markers[i % len(markers)], color=colour, label=label)
            ax.plot(Ts, rows["mix1d_constant"], ls=":", color=colour)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(r"$T$ (grid levels)")
        ax.set_ylabel(r"needed constant (error / shape)")
        ax.grid(True, which="both")
        extra = ([Line2D([], [], color="0.4", ls=":")], ["mix1d rescaled to $E x^2 = 1$"])
        legend_below(fig, [ax], extra=extra)
        path = args.out / "tightness.png"
        written = save_figure(fig, path)
    text = ("The largest constant each theorem needs (measured error / the theorem's shape) over 1-D Gaussian "
            f"mixtures with E x^2 = 1 and component variances at least {args.min_var:g}"
            + (f" (d = {args.d} independent copies)" if args.d > 1 else "")
            + ", found by a seeded search at each T (solid, one marker per theorem: its theory.bounds id, the "
            "sampler and the shape in the legend), and on mix1d rescaled into the class (dotted, same colour). "
            "The search gives a lower bound on the worst constant. Broad translucent lines: the least-squares "
            "power of the worst constant in T over every T, whose slope and 95% interval, in the legend, decide "
            "the trend (rising, steady, falling, or undecided)"
            + ("; with fewer than three T no slope is fitted and none is drawn" if fitted == 0 else "") + ".")
    print(caption(text))
    return written


STUDY = Study("tightness", build_parser, "tightness.csv", COLUMNS, KEY, jobs, work, summarise, report, figures)


def main(argv=None) -> int:
    return STUDY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
