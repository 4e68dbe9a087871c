"""Published experiments, reproduced exactly: each paper's claim beside the measured figure.

    python -m studies.papers
    python -m studies.papers --draws 4 --T 21 41 81 161 321 --out results/papers

Every published experiment that the suite can repeat exactly, with exact scores on a Gaussian target, rerun and
held against what its paper reports (shared/spec/frontier.md sections 1 and 3):

1. Li & Jiao (arXiv 2410.13738 v2), App. A. Target: zero-mean Gaussian in R^d, diagonal covariance, the first k
   variances Uniform[0, 10] (seeded: theory.catalog.appendix_a_gaussian), the other d - k exactly 0; exact score;
   `lijiao-rmp` with K = 10 rounds of N = 2T'/K steps (c0, c1: the sampler's defaults, the paper gives none), started
   from q at its first drawn level; KL(Y_K || q_K) in closed form, per schedule draw (draw r = --seed + r), median and
   worst over --draws draws; (d, k) in {(10, 10), (100, 10), (500, 100)}. Claimed: KL ~ log^4 T / T^3, T = T' the
   paper's T (half the evaluations; the project's T, grid levels, is T' + 1, and K must divide T').
2. Jiao, Zhou & Li (arXiv 2510.27562), App. A. DDPM (the project's `ddpm`: Y_(t-1) = (Y_t + (1 - alpha_t) s_t(Y_t)
   + sqrt(1 - alpha_t) Z) / sqrt(alpha_t)) on the li2023 schedule (Li et al.'s, the type the paper's analysis uses),
   started from q at the first level, on the diagonal Gaussian with every variance Uniform[0, 10] (k = d). Claimed:
   KL ~ log^4 T / T^2 against T (T the number of steps, here grid levels - 1), and KL proportional to d at T = 1000
   steps. Which KL direction the paper plots is not in the notes the project has: both are measured, kl =
   KL(sampler || data), kl_reverse = KL(data || sampler) (the direction Li-type DDPM analyses bound).

Exact route. Both targets are diagonal Gaussians and both samplers act coordinate-wise with the exact score (the
score is coordinate-wise and the noise independent per coordinate; a schedule draw is one grid shared by every
coordinate, which changes nothing given the draw), so the output is N(m, diag(v)), propagated in O(d) per step
(exact.gaussian.diagonal_output_law, the Gaussian engine with a diagonal Jacobian, premise checked at every step),
and KL = sum over coordinates of the 1-D closed form (exact.gaussian.diagonal_kl_terms). The full Gaussian engine
gives the same numbers (tests/test_papers.py) but runs 1 + 2d points a step and updates d x d covariances: measured
on the loaded 2-core machine at T' = 80, 0.29 s against 0.10 s at d = 100 and 6.6 s against 0.17 s at d = 500
(about 40 times dearer; the default sweep's d = 500 draws would take most of an hour that way).

The zero-variance coordinates. There q at the output level has variance tau_1 = 1 - abar_1 (1e-6 .. 1e-10 here)
and the sampler's output nearly the same: the KL terms are formed from the difference of the two variances
(exact in float64 when they are close), never from ratios near 1 or eigenvalues minus 1, and q's variance is taken
as (1 - tau) v + tau from the drawn tau_1 itself (the grid's `tau_end`), not from 1 - abar, which keeps only
-log10(tau_1) fewer digits. tests/test_papers.py holds both against closed forms.

Verdicts. Each claim's order (in T with the claim's log^4 factor divided out; in d for "proportional to d") is a
least-squares fit over the largest points with its 95% interval, read by the suite's one order verdict
(theory.rates.order_verdict, the same rule as studies.rates' declared orders): agree when the whole interval lies
within ORDER_MARGIN (0.25) of the claimed order; disagree when it lies clear of that band; undecided when it
straddles an end of the band, or with fewer than MIN_POINTS (3) points. Writes DIR/papers.csv (one row per measurement, resumable,
keyed by content), DIR/claims.csv and DIR/claims.md (the claim table), DIR/draws.csv (median and worst over
draws), DIR/papers.png (and .pdf, .svg).

Looked for and not found (item 3 of the issue): Jain & Zhang (2508.16306) report no experiments; Li, Cai & Wei
(2504.05300), Wu, Chen & Wei, Li & Cai, Huang, Huang & Lin and Chen et al. (PIADM) are known to the project by
abstract only, and no experiment with exact scores on a Gaussian target is recorded for them in the spec; the seed
papers' published tables (spec/anchors.md) are FID against NFE on trained image models, which exact scores cannot
repeat. So the two experiments above are all the suite can repeat exactly today.
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

import exact.base
import exact.gaussian
from exact import DivergenceError
from exact.base import initial_law
from exact.gaussian import diagonal_kl_terms, diagonal_output_law
from samplers import get_sampler, sampler_grid
from samplers.base import OWN_GRID
from studies.common import Study, StudyParser, add_flags, code_digest, integer, study_parser
from studies.tables import export_tables, to_markdown
from studies.rates import median_and_worst, with_draws
from theory.catalog import appendix_a_gaussian
from theory.rates import RateError, Verdict, fit_order, order_verdict

COLUMNS = ["experiment", "d", "k", "sampler", "draw", "schedule", "T", "paper_T", "nfe", "metric", "value",
           "zero_block", "method", "premise_gap", "variance_seed"]
KEY = ["experiment", "d", "k", "sampler", "schedule", "T", "variance_seed", "metric"]
CLAIM_COLUMNS = ["claim", "source", "setting", "measured", "order", "ci_low", "ci_high", "points", "claimed_order",
                 "verdict", "order_raw", "raw_low", "raw_high"]
METRICS = ("kl", "kl_reverse")
LIJIAO = "lijiao-A"  # experiment 1
DDPM_T = "jzl-A-T"  # experiment 2, against T
DDPM_D = "jzl-A-d"  # experiment 2, against d
LIJIAO_SOURCE = "Li & Jiao, arXiv 2410.13738 v2, App. A"
JZL_SOURCE = "Jiao, Zhou & Li, arXiv 2510.27562, App. A"
METHOD = "gaussian-diagonal"
DEFAULT_DK = ["10,10", "100,10", "500,100"]
DEFAULT_LIJIAO_T = [20 * 2**j + 1 for j in range(8)]  # the paper's T' = 20 .. 2560, K = 10 divides each
DEFAULT_DDPM_T = [2**j + 1 for j in range(4, 12)]  # 16 .. 2048 steps
DEFAULT_DDPM_D = [10, 20, 50, 100, 200, 500]
DDPM_AT = 1001  # levels: the paper's T = 1000 steps
LOG_POWER = 4  # both T claims carry log^4 T


def dk_pair(text: str) -> tuple[int, int]:
    """An argparse type: 'd,k' with 1 <= k <= d."""
    parts = text.split(",")
    try:
        d, k = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected d,k (two integers), got {text!r}") from None
    if not 1 <= k <= d:
        raise argparse.ArgumentTypeError(f"need 1 <= k <= d, got d,k = {text!r}")
    return d, k


def build_parser() -> StudyParser:
    parser = study_parser("papers", __doc__)
    add_flags(parser, T=DEFAULT_LIJIAO_T, seed=0, draws=8, device="cpu", threads=1, out=Path("results/papers"),
              no_plot=False, table=None, scheduler="none", workers=None, fresh=False)
    parser.add_argument("--dk", type=dk_pair, nargs="+", default=[dk_pair(p) for p in DEFAULT_DK],
                        help="Li & Jiao's (d, k) pairs, each d,k (the first k variances Uniform[0, 10], the rest 0)")
    parser.add_argument("--lijiao", default="lijiao-rmp?K=10",
                        help="the Li & Jiao sampler with its options (K = 10 is the paper's; draws come from --seed)")
    parser.add_argument("--ddpm-T", type=integer(3), nargs="+", default=DEFAULT_DDPM_T,
                        help="DDPM grid sizes in levels (steps = levels - 1) for the KL-against-T claim")
    parser.add_argument("--ddpm-dT", type=integer(1), default=10,
                        help="the dimension of the DDPM KL-against-T sweep")
    parser.add_argument("--ddpm-d", type=integer(1), nargs="+", default=DEFAULT_DDPM_D,
                        help="dimensions of the DDPM KL-against-d claim")
    parser.add_argument("--ddpm-at", type=integer(3), default=DDPM_AT,
                        help="grid levels of the KL-against-d claim (the paper's T = 1000 steps: 1001 levels)")
    parser.add_argument("--variance-seed", type=integer(0), default=0, help="seed of the Uniform[0, 10] variances")
    parser.add_argument("--only", choices=["lijiao", "ddpm"], default=None, help="run one paper's experiments only")
    return parser


@dataclass(frozen=True)
class Job:
    """One (experiment, d, k, sampler, T) measurement, as plain values: both KL directions."""

    experiment: str
    d: int
    k: int
    sampler: str
    schedule: str
    T: int
    variance_seed: int
    device: str = "cpu"

    def row_keys(self) -> list[dict]:
        return [{"experiment": self.experiment, "d": self.d, "k": self.k, "sampler": self.sampler,
                 "schedule": self.schedule, "T": self.T, "variance_seed": self.variance_seed, "metric": metric}
                for metric in METRICS]

    def ingredients(self, names: dict) -> dict:
        sampler = get_sampler(self.sampler)
        return {"target": appendix_a_gaussian(self.d, self.k, self.variance_seed).fingerprint(), "sampler": sampler,
                "grid": sampler_grid(sampler, self.T, self.schedule),
                "engine": {"method": METHOD, "init": "exact", "q_level": "tau",
                           "device": torch.device(self.device).type},
                "code": code_digest(sampler, exact.gaussian, exact.base)}


def jobs(args: argparse.Namespace, device: torch.device) -> list[Job]:
    """Every measurement of the command; a bad T (K must divide T - 1) or sampler fails here, before any work."""
    out: list[Job] = []
    if args.only in (None, "lijiao"):
        names = with_draws([args.lijiao], args.seed, args.draws)
        if not hasattr(get_sampler(names[0]), "with_draw"):
            raise DivergenceError(f"--lijiao {args.lijiao!r} is not a Li & Jiao sampler (lijiao-rmp?...)")
        for name in names:
            for T in args.T:
                sampler_grid(get_sampler(name), T, "li2023")
        out += [Job(LIJIAO, d, k, name, OWN_GRID, T, args.variance_seed, str(device))
                for d, k in args.dk for name in names for T in sorted(set(args.T))]
    if args.only in (None, "ddpm"):
        for T in [*args.ddpm_T, args.ddpm_at]:
            sampler_grid(get_sampler("ddpm"), T, "li2023")
        out += [Job(DDPM_T, args.ddpm_dT, args.ddpm_dT, "ddpm", "li2023", T, args.variance_seed, str(device))
                for T in sorted(set(args.ddpm_T))]
        out += [Job(DDPM_D, d, d, "ddpm", "li2023", args.ddpm_at, args.variance_seed, str(device))
                for d in sorted(set(args.ddpm_d))]
    return out


def output_variance_of_q(target, grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variances of q at the grid's last level, from tau = 1 - abar carried exactly where the grid has it
    (Li & Jiao's drawn tau_1, `tau_end`), else from the level."""
    tau = grid.params.get("tau_end")
    tau = float(1 - grid.abar[-1]) if tau is None else float(tau)
    v = torch.diagonal(target.covs[0])
    return math.sqrt(1 - tau) * target.means[0], (1 - tau) * v + tau


def work(job: Job) -> list[dict]:
    device = torch.device(job.device)
    target = appendix_a_gaussian(job.d, job.k, job.variance_seed)
    target = target.to(device) if device.type != "cpu" else target
    sampler = get_sampler(job.sampler)
    grid = sampler_grid(sampler, job.T, job.schedule)
    grid = grid.to(device) if device.type != "cpu" else grid
    start = initial_law(target, grid, "exact")
    mean, var, gap, nfe = diagonal_output_law(target, sampler, grid, start.means[0], torch.diagonal(start.covs[0]))
    mq, vq = output_variance_of_q(target, grid)
    terms = {"kl": diagonal_kl_terms(mean, var, mq, vq), "kl_reverse": diagonal_kl_terms(mq, vq, mean, var)}
    draw = getattr(sampler, "draw", "")
    paper_T = job.T - 1
    rows = []
    for metric, values in terms.items():
        value, zero = float(values.sum()), float(values[job.k:].sum())
        if not (math.isfinite(value) and value >= 0):
            raise DivergenceError(f"{job.sampler} at T={job.T}, d={job.d}: {metric} = {value} is not a KL")
        rows.append({"experiment": job.experiment, "d": job.d, "k": job.k, "sampler": job.sampler, "draw": draw,
                     "schedule": job.schedule, "T": job.T, "paper_T": paper_T, "nfe": nfe,
                     "metric": metric, "value": value, "zero_block": zero, "method": METHOD, "premise_gap": gap,
                     "variance_seed": job.variance_seed})
    return rows


# ---------------------------------------------------------------------------- claims and verdicts
def verdict(order: Verdict) -> str:
    """A claim's word from theory.rates.order_verdict against the claimed order: agree ('agrees': the interval within
    the margin), disagree ('above' or 'below': clear of the band), undecided otherwise (straddling, or too few)."""
    return {"agrees": "agree", "above": "disagree", "below": "disagree"}.get(order.decision, "undecided")


def over_draws(frame: pd.DataFrame) -> pd.DataFrame:
    """Median and worst KL over the schedule draws of each (d, k, T, metric) of Li & Jiao's experiment."""
    return median_and_worst(frame[frame["experiment"] == LIJIAO], ["d", "k", "T", "paper_T", "metric"])


def _claim(claim: str, source: str, setting: str, measured: str, x, y, claimed: float, decreasing: bool = True,
           log_power: int = 0) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    raw = None
    judged = order_verdict(x, y / np.log(x) ** log_power if log_power else y, decreasing=decreasing,
                           expected=claimed)
    fit = judged.fit if judged.fit is not None and judged.fit.has_interval else None
    try:
        raw = fit_order(x, y, decreasing=decreasing)  # the order with the log factor left in, beside it
    except RateError:
        pass
    return {"claim": claim, "source": source, "setting": setting, "measured": measured,
            "order": fit.order if fit else float("nan"), "ci_low": fit.low if fit else float("nan"),
            "ci_high": fit.high if fit else float("nan"), "points": fit.points if fit else len(x),
            "claimed_order": claimed, "verdict": verdict(judged),
            "order_raw": raw.order if raw else float("nan"), "raw_low": raw.low if raw else float("nan"),
            "raw_high": raw.high if raw else float("nan")}


def summarise(frame: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    claims = []
    spread = over_draws(frame)
    for (d, k), rows in spread[spread["metric"] == "kl"].groupby(["d", "k"], sort=False):
        rows = rows.sort_values("paper_T")
        draws = int(rows["draws"].min())
        setting = f"d={d}, k={k}, K=10, T'={int(rows['paper_T'].min())}..{int(rows['paper_T'].max())}, {draws} draws"
        for what in ("median", "worst"):
            claims.append(_claim("KL(Y_K || q_K) ~ log^4 T / T^3", LIJIAO_SOURCE, setting,
                                 f"{what} over draws, order in T' after / log^4 T'", rows["paper_T"], rows[what], 3.0,
                                 log_power=LOG_POWER))
    for metric, label in (("kl", "KL(sampler || data)"), ("kl_reverse", "KL(data || sampler)")):
        rows = frame[(frame["experiment"] == DDPM_T) & (frame["metric"] == metric)].sort_values("T")
        if len(rows):
            setting = f"ddpm, li2023, d={int(rows['d'].iloc[0])}, steps {int(rows['paper_T'].min())}.." \
                      f"{int(rows['paper_T'].max())}"
            claims.append(_claim("KL ~ log^4 T / T^2", JZL_SOURCE, setting, f"{label}, order in T after / log^4 T",
                                 rows["paper_T"], rows["value"], 2.0, log_power=LOG_POWER))
        rows = frame[(frame["experiment"] == DDPM_D) & (frame["metric"] == metric)].sort_values("d")
        if len(rows):
            setting = f"ddpm, li2023, {int(rows['paper_T'].iloc[0])} steps, d={int(rows['d'].min())}.." \
                      f"{int(rows['d'].max())}"
            claims.append(_claim("KL proportional to d at T = 1000", JZL_SOURCE, setting, f"{label}, exponent in d",
                                 rows["d"], rows["value"], 1.0, decreasing=False))
    return pd.DataFrame(claims, columns=CLAIM_COLUMNS)


def _interval(order: float, low: float, high: float) -> str:
    if not math.isfinite(order):
        return "n/a"
    if not math.isfinite(low):
        return f"{order:.2f} [needs 3 points]"
    return f"{order:.2f} [{low:.2f}, {high:.2f}]"


def shown(claims: pd.DataFrame) -> pd.DataFrame:
    """The claim table as printed: the order with its interval in one column."""
    out = claims[["claim", "source", "setting", "measured"]].copy()
    out["measured order [95%]"] = [_interval(r["order"], r["ci_low"], r["ci_high"]) for _, r in claims.iterrows()]
    out["claimed"] = [f"{c:g}" for c in claims["claimed_order"]]
    out["verdict"] = claims["verdict"]
    out["order with logs left in"] = [_interval(r["order_raw"], r["raw_low"], r["raw_high"]) if "log^4" in r["measured"]
                                      else "" for _, r in claims.iterrows()]
    return out


def report(frame: pd.DataFrame, claims: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    spread = over_draws(frame)
    for (d, k), rows in spread[spread["metric"] == "kl"].groupby(["d", "k"], sort=False):
        print(f"\nLi & Jiao App. A, d={d}, k={k}: KL(Y_K || q_K) over schedule draws")
        print(f"{'T_prime':>8} {'NFE':>6} {'median':>11} {'worst':>11} {'draws':>5}")
        for row in rows.itertuples():
            print(f"{row.paper_T:>8} {2 * row.paper_T:>6} {row.median:>11.4e} {row.worst:>11.4e} {row.draws:>5}")
    for experiment, axis, title in ((DDPM_T, "T", "against T"), (DDPM_D, "d", "against d")):
        rows = frame[frame["experiment"] == experiment]
        if rows.empty:
            continue
        print(f"\nJiao, Zhou & Li App. A, ddpm on li2023, {title}")
        wide = rows.pivot_table(index=["d", "paper_T"], columns="metric", values="value").reset_index()
        print(f"{'d':>5} {'steps':>6} {'kl':>11} {'kl_reverse':>11}")
        for row in wide.itertuples():
            print(f"{row.d:>5} {row.paper_T:>6} {row.kl:>11.4e} {row.kl_reverse:>11.4e}")
    table = shown(claims)
    print("\nclaims")
    print(table.to_string(index=False))
    claims.to_csv(args.out / "claims.csv", index=False)
    (args.out / "claims.md").write_text(to_markdown(table))
    spread.to_csv(args.out / "draws.csv", index=False)
    return [args.out / "claims.csv", args.out / "claims.md", args.out / "draws.csv",
            *export_tables({"claims": table}, args)]


METRIC_LABELS = {"kl": r"$\mathrm{KL}(\mathrm{sampler} \,\|\, \mathrm{data})$",
                 "kl_reverse": r"$\mathrm{KL}(\mathrm{data} \,\|\, \mathrm{sampler})$"}


def plot(frame: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    """Each experiment against its claim, one panel each: Li & Jiao's median and worst KL over draws against T',
    Jiao, Zhou & Li's KL against T and against d (both directions), each with the claimed shape in grey. Writes PNG,
    PDF and SVG and prints the caption."""
    from studies.plotting import DOUBLE, caption, legend_below, log_ticks_125, paper_style, save_figure, subplots

    with paper_style():
        fig, axes = subplots(1, 3, width=DOUBLE, height=2.3)
        import matplotlib.pyplot as plt

        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        ax = axes[0][0]
        spread = over_draws(frame)
        pairs = spread[spread["metric"] == "kl"].groupby(["d", "k"], sort=False)
        for i, ((d, k), rows) in enumerate(pairs):
            rows = rows.sort_values("paper_T")
            ax.plot(rows["paper_T"], rows["median"], marker="o", color=colours[i % 10],
                    label=f"$d$ = {d}, $k$ = {k}: median over draws")
            ax.plot(rows["paper_T"], rows["worst"], ls="--", lw=0.8, color=colours[i % 10],
                    label=f"$d$ = {d}, $k$ = {k}: worst draw")
        _reference(ax, spread[spread["metric"] == "kl"], "paper_T", "median", 3,
                   LIJIAO_SOURCE + r" claim: $\log^4 T' \,/\, {T'}^{3}$")
        ax.set_xlabel(r"$T'$ (the paper's $T$; NFE = $2T'$)")
        ax.set_ylabel(r"$\mathrm{KL}(Y_K \,\|\, q_K)$")
        ax.set_title("Li & Jiao App. A\nlijiao-rmp, $K$ = 10")
        offset = pairs.ngroups
        for ax, experiment, axis, claimed, label in (
                (axes[0][1], DDPM_T, "paper_T", 2, JZL_SOURCE + r" claim: $\log^4 T \,/\, T^{2}$"),
                (axes[0][2], DDPM_D, "d", -1, JZL_SOURCE + r" claim: $\mathrm{KL} \propto d$ at $T$ = 1000")):
            rows = frame[frame["experiment"] == experiment]
            for i, metric in enumerate(METRICS):
                sub = rows[rows["metric"] == metric].sort_values(axis)
                if len(sub):
                    ax.plot(sub[axis], sub["value"], marker="o", color=colours[(offset + i) % 10],
                            label=f"ddpm: {METRIC_LABELS[metric]}")
            _reference(ax, rows[rows["metric"] == "kl"], axis, "value", claimed, label)
            ax.set_xlabel("steps $T$" if axis == "paper_T" else "dimension $d$")
            ax.set_ylabel(r"$\mathrm{KL}$")
            steps = int(rows["paper_T"].iloc[0]) if axis == "d" and len(rows) else None
            ax.set_title("Jiao, Zhou & Li App. A\nddpm, li2023, "
                         + ("against $T$" if axis == "paper_T" else f"$T$ = {steps} steps" if steps else "against $d$"))
        for ax in axes[0]:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both")
            log_ticks_125(ax.xaxis)
            log_ticks_125(ax.yaxis)
        legend_below(fig, list(axes[0]), ncol=2)
        written = save_figure(fig, args.out / "papers.png")  # PNG, PDF and SVG
    print(caption(
        "Published experiments rerun with exact scores on their Gaussian targets, each beside its paper's claim. "
        "Left: Li & Jiao (arXiv 2410.13738 v2, App. A), lijiao-rmp with K = 10, KL(Y_K || q_K) in closed form "
        "against the paper's T' (NFE = 2T'), one colour per (d, k): circles and solid lines the median over the "
        "schedule draws, dashed lines the worst draw. Middle and right: Jiao, Zhou & Li (arXiv 2510.27562, App. A), "
        "DDPM on the li2023 schedule, against the number of steps T and against d at the fixed step count in the "
        "title, both KL directions (which one the paper plots is not known to the project). Grey dotted lines: the "
        "claimed shape (log^4 T / T^3, log^4 T / T^2, KL proportional to d), with its paper in the legend, drawn "
        "through the geometric mean of the KL(sampler || data) points (left: the medians); only their slope is "
        "claimed, not their height. The claim table (claims.csv, claims.md) gives the fitted orders, their 95% "
        "intervals and the verdicts."))
    return written


def _reference(ax, rows, axis: str, column: str, order: float, label: str) -> None:
    """The claimed shape through the geometric middle of the data (grey, dotted): order > 0 falls in T as
    log^4 T / T^order, order < 0 rises in d as d^-order."""
    if rows.empty:
        return
    x = np.array(sorted(set(rows[axis])), float)
    if len(x) < 2:
        return
    shape = (np.log(x) ** LOG_POWER / x**order) if order > 0 else x ** (-order)
    middle = math.exp(np.log(rows[column].to_numpy(float)).mean())
    ax.plot(x, shape * middle / math.exp(np.log(shape).mean()), color="0.45", ls=":", lw=1.2, label=label)


STUDY = Study("papers", build_parser, "papers.csv", COLUMNS, KEY, jobs, work, summarise, report, plot)


def main(argv=None) -> int:
    return STUDY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
