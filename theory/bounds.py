"""The theorems that measurements are held against (shared/spec/bounds.md), as data.

Each bound is a shape in (T, d) up to a universal constant. Given a measured error e(T, d), the constant the bound
would need on these data is e / shape(T, d): bounded means the bound holds in shape, steady means it is tight,
falling to zero means it is loose (in T), rising means the data contradict the shape (or the theorem's
assumptions are not met); check_bound says each word only where the 95% interval of the constant's slope in log T
settles it (theory.rates.trend_verdict), 'undecided' or 'too few' otherwise. A lower bound (`bound="lower"`) reads the other way: its constant must stay bounded away
from zero, and falling contradicts it. Entries marked `recalled` (log or d powers not verified against the paper's
text) say so; entries checked only against the paper's abstract say so in `source`.
Score-error terms are left out: the studies here use exact scores unless a study injects an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from theory.rates import Verdict, trend_verdict
from theory.schedules import JAINZHANG_DELTA as _JZ_DELTA, JAINZHANG_T_END as _JZ_T_END


@dataclass(frozen=True)
class Theorem:
    id: str
    paper: str
    arxiv: str
    samplers: tuple[str, ...]
    metric: str  # the divergence it bounds: 'tv', 'kl' (KL(sampler || data)) or 'kl_reverse' (KL(data || sampler))
    order: float  # proven order in T (leading term)
    log_power: float  # power of log T on the leading term (0 if none, NaN if only "polylog")
    d_power: float  # power of d on the leading term
    shape: Callable[[float, float], float]
    statement: str
    recalled: bool = False
    bound: str = "upper"  # 'upper', or 'lower' for a lower bound (a rate no sampler of the kind can beat)
    source: str = ""  # what the entry was checked against, where not the full text
    families: tuple[str, ...] = ()  # parametrised families ("picard:") every member of which the theorem covers

    def needed_constant(self, T: float, d: float, value: float) -> float:
        return value / self.shape(T, d)

    @property
    def label(self) -> str:
        mark = " (recalled)" if self.recalled else ""
        kind = " [lower bound]" if self.bound == "lower" else ""
        return f"{self.id}: {self.statement}{kind}{mark}"


def _log(T: float) -> float:
    return math.log(T)


THEOREMS: tuple[Theorem, ...] = (
    Theorem("li2023-ode", "Li, Wei, Chen, Chi 2023", "2306.09251", ("ode", "ddim"), "tv", 1.0, 4.0, 2.0,
            lambda T, d: d**2 * _log(T) ** 4 / T + d**6 * _log(T) ** 6 / T**2,
            "TV <= d^2 log^4 T / T + d^6 log^6 T / T^2", recalled=True),
    Theorem("li2023-ddpm", "Li, Wei, Chen, Chi 2023", "2306.09251", ("ddpm",), "tv", 0.5, float("nan"), 2.0,
            lambda T, d: d**2 / math.sqrt(T), "TV <= d^2 polylog(T) / sqrt(T) (shape without the polylog)",
            recalled=True),
    Theorem("li2023-accel-ode", "Li, Huang, Efimov, Wei, Chi, Chen 2024", "2403.03852", ("ode-accel",), "tv", 2.0,
            float("nan"), 6.0, lambda T, d: d**6 / T**2, "TV <= d^6 polylog(T) / T^2 (shape without the polylog)",
            recalled=True),
    Theorem("li2023-accel-ddpm", "Li, Huang, Efimov, Wei, Chi, Chen 2024", "2403.03852", ("ddpm-accel",), "tv", 1.0,
            float("nan"), 3.0, lambda T, d: d**3 / T, "TV <= d^3 polylog(T) / T (shape without the polylog)",
            recalled=True),
    Theorem("li2024-sharp-ode", "Li, Wei, Chi, Chen 2024", "2408.02320", ("ode", "ddim"), "tv", 1.0, 0.0, 1.0,
            lambda T, d: d / T, "TV <= d / T (for T >> d^2)"),
    Theorem("liyan2024-ddpm", "Li & Yan 2024", "2409.18959", ("ddpm",), "tv", 1.0, 3.0, 1.0,
            lambda T, d: d * _log(T) ** 3 / T, "TV <= d log^3 T / T"),
    Theorem("chen2022-ddpm", "Chen, Chewi, Li, Li, Salim, Zhang 2022", "2209.11215", ("ddpm",), "tv", 0.5, 0.0, 0.5,
            lambda T, d: math.sqrt(d / T), "TV <= L sqrt(d / T) (exponential-integrator DDPM; L absorbed)"),
    Theorem("benton2023-ddpm", "Benton, De Bortoli, Doucet, Deligiannidis 2023", "2308.03686", ("ddpm",), "kl", 1.0,
            0.0, 1.0, lambda T, d: d / T, "KL <= d / T up to logs (exponential-integrator DDPM)"),
    # DDPM, newer theorems (statements checked against the arXiv abstracts).
    Theorem("ddpm2025-kl", "Optimal Convergence Analysis of DDPM for General Distributions (2025)", "2510.27562",
            ("ddpm",), "kl", 2.0, float("nan"), 1.0, lambda T, d: d / T**2,
            "KL <= d min{d, L^2} polylog(T) / T^2 (L: relaxed smoothness constant, absorbed; shape d / T^2 for "
            "d >= L^2, d^2 / T^2 below)", source="abstract"),
    Theorem("ddpm2025-kl-lower", "Optimal Convergence Analysis of DDPM for General Distributions (2025)",
            "2510.27562", ("ddpm",), "kl", 2.0, 0.0, 1.0, lambda T, d: d / T**2,
            "KL >= c d min{d, L^2} / T^2 for a wide array of targets (matching lower bound)", bound="lower",
            source="abstract"),
    Theorem("licaiwei2025-ddpm-gmm", "Li, Cai, Wei 2025", "2504.05300", ("ddpm",), "tv", 1.0, float("nan"), 0.0,
            lambda T, d: 1.0 / T,
            "TV <= polylog(T) / T for (approximately) Gaussian-mixture targets with isotropic components, "
            "independent of d and of the number of components K", source="abstract"),
)

# Samplers since 2024 (samplers.expint, samplers.randomized_midpoint, samplers.renoise, samplers.picard), and theorems
# whose sampler is not implemented because its update rule could not be checked (samplers empty). H_max, the largest
# step in Ornstein-Uhlenbeck time t = -log(abar) / 2, is about c1 log T / (2 T) = 2 log T / T on the li2023 grid: hence
# the log powers below.
FRONTIER: tuple[Theorem, ...] = tuple(
    Theorem(f"huang2025-rk{p}", "Huang, Huang, Lin 2025", "2506.13061", (f"expint:{p}",), "tv", float(p), float(p),
            float(p + 1), (lambda T, d, p=p: d * (d * _log(T) / T) ** p),
            f"TV <= d^(7/4) eps_score^(1/2) + d (d H_max)^p, p = {p}, for p-th order (exponential) Runge-Kutta "
            f"schemes; H_max ~ 2 log T / T on the li2023 grid. The sampler held against it, expint:{p}, is Lawson's "
            f"integrating-factor exponential Runge-Kutta with the classical order-{p} tableau "
            f"({['', 'Euler', 'explicit midpoint', 'Kutta third order', 'classical RK4'][p]}), a scheme the theorem "
            "plausibly covers; the paper's own scheme was not read and expint is not it", source="abstract")
    for p in (1, 2, 3, 4)
) + (
    Theorem("gupta2024-rmp", "Gupta, Cai, Chen 2024", "2406.00924", ("ode-rmp", "ode-rmp-is"), "tv", 1.0,
            float("nan"), 5 / 12, lambda T, d: d ** (5 / 12) / T,
            "TV <= L^(5/3) d^(5/12) polylog / T, for the randomized-midpoint ODE predictor with an "
            "underdamped-Langevin corrector (the samplers here are the predictor alone)", source="abstract"),
    # Li & Jiao (v2, Theorem 1), read in full (shared/spec/frontier.md section 1). The shape keeps the L-free member
    # d^1.5 of min{d^1.5, d L^0.5, d^0.5 L^1.5}, L being unknown per target; the paper's T is half the NFE, i.e. the
    # project's T (grid levels) minus one (samplers.lijiao), and log T is read at T >= 2 (at T = 1 the bound is void).
    # The sampler is a family with options (lijiao-rmp?K=..&draw=..) that runs on its own grid of drawn levels only,
    # so it is named as a family, not in `samplers` (the studies that sweep those run them on a schedule's grid).
    Theorem("lijiao2024-rmp", "Li & Jiao 2024 (v2: Jiao & Li 2025)", "2410.13738", (), "tv", 1.5, 4.0,
            1.5, lambda T, d: d**1.5 * _log(max(T - 1, 2)) ** 4 / max(T - 1, 2) ** 1.5,
            "TV(q_K, p_(Y_K)) <= C min{d^1.5, d L^0.5, d^0.5 L^1.5} log^4 T / T^1.5 + C eps_score log^0.5 T "
            "(Theorem 1, v2), for the randomized-schedule sampler with K = c2 min{d log^2 T, L log T} rounds of "
            "N = 2T/K steps (T half the NFE, the project's T - 1); E|X0|^2 < T^cR, L the non-uniform Lipschitz "
            "constant of (1 - abar) s; it holds with probability >= 1 - T^-100 over the schedule draw, for the law "
            "given the draw (measure per draw); the shape keeps d^1.5 (L-free); the sampler's K is an option "
            "(default 10, the paper's experiment), not the theorem's K",
            families=("lijiao-rmp?",)),
    # Jain & Zhang: the discretisation term d^2 c^3 K with c ~ L / K, L = log(1/delta) + T_end, is d^2 L^3 / K^2. The
    # shape takes L at the jainzhang grid's defaults (theory.schedules: fixed ends, so no log T); on the li2023 grid
    # delta = 1 - abar_1 ~ T^-2 and L grows like 2 log T, i.e. d^2 log^3 T / T^2 there.
    Theorem("jainzhang2025-kl", "Jain & Zhang 2025", "2508.16306", ("ode-renoise",), "kl_reverse", 2.0, 0.0, 2.0,
            lambda T, d: d**2 * (math.log(1 / _JZ_DELTA) + _JZ_T_END) ** 3 / T**2,
            "KL(p_(t_1) || phat_(t_1)), data || sampler (the engines' kl_reverse), <= (d + m2) e^(-T_end) + "
            "d^2 c^3 K + T_end eps_score^2 if K > d (log(1/delta) + T_end), for steps h_k = c min{1, t_k} (schedule "
            "jainzhang) on delta = t_0 < ... < t_(K+1) = T_end: with exact scores, started from q_T, and "
            "c ~ (log(1/delta) + T_end) / K, KL <= d^2 (log(1/delta) + T_end)^3 / K^2 (shape at the jainzhang "
            "defaults; d^2 log^3 T / T^2 on the li2023 grid); each step a frozen-score ODE jump over two intervals, "
            "then the exact forward OU over one",
            source="Algorithm 1 and Theorem 3.1 from notes written from the full text (three that agree), not the "
                   "PDF"),
    Theorem("chen2024-piadm-ode", "Chen, Ren, Ying, Rotskoff 2024", "2405.15986", ("picard",), "tv", 1.0,
            float("nan"), 0.5, lambda T, d: math.sqrt(d) / T,
            "PIADM-ODE (blocks of O(1) length, K ~ log(d / delta) parallel Picard sweeps per block, plus a "
            "parallel underdamped-Langevin corrector): TV <= delta with about sqrt(d) / delta steps per block, "
            "i.e. TV ~ sqrt(d) polylog / T in the total number of steps T, in polylog(d) sequential rounds; the "
            "samplers here are the predictor alone with a fixed K and blocks of a fixed number of steps",
            recalled=True, families=("picard:",),
            source="abstract (polylog(d) rounds only); the TV rate and its d-power are recalled, not checked. "
                   "PIADM-SDE, the paper's SDE variant, has no sampler and no entry: its update is known only from the "
                   "abstract and summaries, which give no rate in T"),
    # DDRaM (samplers.ddram). The abstract gives O~(sqrt(d)) score evaluations under smoothness; the 1/eps in
    # "O~(sqrt(d)/eps) evaluations for KL <= eps^2" is read from a third-party summary of the paper, not from its
    # text, hence recalled: sqrt(KL) = sqrt(d) polylog / T, i.e. KL ~ d / T^2.
    Theorem("zhang2025-ddram", "Zhang, Huan, Huang, Boffi, Chen, Chewi 2025", "2511.04844",
            ("ddpm-rmp", "ddpm-rmp:relative-importance", "ddpm-rmp:relative-uniform", "ddpm-rmp:score-importance",
             "ddpm-rmp:score-uniform"), "kl", 2.0, float("nan"), 1.0, lambda T, d: d / T**2,
            "KL <= d polylog / T^2 (O~(sqrt(d)/eps) score evaluations for KL <= eps^2, score smooth; the eps power "
            "is from a summary of the paper, the sqrt(d) from its abstract)", recalled=True, source="abstract"),
    # Stochastic Runge-Kutta for the reverse SDE: the abstract's statement, checked; its scheme could not be read
    # (neither the paper's algorithm nor code by the authors was reachable), so no sampler implements it.
    Theorem("wu2024-srk", "Wu, Chen, Wei 2024", "2410.04760", (), "kl", 2.0, float("nan"), 3.0,
            lambda T, d: d**3 / T**2,
            "KL <= d^3 polylog / T^2 (O~(d^(3/2)/eps) score evaluations for KL <= eps^2, eps small); no sampler: "
            "the stochastic Runge-Kutta update is known only from the abstract (paper not read, no authors' code)",
            source="abstract"),
    Theorem("liyan2024-adaptive", "Li & Yan 2024", "2405.14861", ("ddpm-posterior",), "tv", 0.5, float("nan"),
            0.0, lambda T, d: 1 / math.sqrt(T),
            "TV <= k^2 polylog / sqrt(T), k the intrinsic dimension, for DDPM with its unique adaptive coefficient "
            "design; no power of the ambient d (d_power 0: the shape leaves out k^2, fixed in a d sweep); that the "
            "design is ddpm-posterior's is recalled and derived, not read", recalled=True, source="abstract"),
    Theorem("licai2024-accel", "Li & Cai 2024", "2410.23285", (), "tv", 2.0, float("nan"), 2.5,
            lambda T, d: d**2.5 / T**2,
            "TV <= eps within O~(d^(5/4) / sqrt(eps)) iterations (for eps <= 1/sqrt(d), L2-accurate scores, finite "
            "second moment only), i.e. TV <= d^(5/2) polylog / T^2; a training-free accelerated stochastic sampler; "
            "no sampler: its update rule is known only from the abstract (paper not read, no authors' code)",
            source="abstract (arXiv HTML v2 abstract; sciencestack summary)"),
)
THEOREMS = THEOREMS + FRONTIER

BY_ID = {t.id: t for t in THEOREMS}


def theorems_for(sampler: str, metric: str | None = None) -> list[Theorem]:
    """The theorems that cover a sampler, by name or as a member of a family the theorem names (optionally only
    those bounding `metric`)."""
    covered = [t for t in THEOREMS if sampler in t.samplers or any(sampler.startswith(f) for f in t.families)]
    return [t for t in covered if metric is None or t.metric == metric]


@dataclass(frozen=True)
class BoundCheck:
    theorem: Theorem
    constants: tuple[float, ...]  # e / shape at each T
    verdict: Verdict  # the constants' trend over the asymptotic window (theory.rates.trend_verdict)

    @property
    def trend(self) -> str:
        """steady / falling / rising, or undecided / too few (theory.rates)."""
        return self.verdict.decision

    @property
    def last(self) -> float:
        return self.constants[-1]


def check_bound(theorem: Theorem, Ts: Sequence[float], d: int, values: Sequence[float],
                window: int | None = None) -> BoundCheck:
    """The constant the theorem would need at each T, and how it moves as T grows (over the asymptotic window; the
    verdict abstains where the window cannot decide)."""
    if len(Ts) != len(values):
        raise ValueError(f"{len(Ts)} values of T against {len(values)} measured values")
    constants = tuple(theorem.needed_constant(T, d, v) for T, v in zip(Ts, values))
    return BoundCheck(theorem, constants, trend_verdict(np.asarray(Ts, float), np.asarray(constants), window))
