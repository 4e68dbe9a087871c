"""The theorems that measurements are held against (shared/spec/bounds.md), as data.

Each bound is a shape in (T, d) up to a universal constant. Given a measured error e(T, d), the constant the bound
would need on these data is e / shape(T, d): bounded means the bound holds in shape, steady means it is tight,
falling to zero means it is loose (in T), rising means the data contradict the shape (or the theorem's
assumptions are not met). Entries marked `recalled` (log or d powers not verified against the paper's PDF) say so.
Score-error terms are left out: the studies here use exact scores unless a study injects an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from theory.rates import trend


@dataclass(frozen=True)
class Theorem:
    id: str
    paper: str
    arxiv: str
    samplers: tuple[str, ...]
    metric: str  # the divergence it bounds: 'tv' or 'kl'
    order: float  # proven order in T (leading term)
    log_power: float  # power of log T on the leading term (0 if none, NaN if only "polylog")
    d_power: float  # power of d on the leading term
    shape: Callable[[float, float], float]
    statement: str
    recalled: bool = False

    def needed_constant(self, T: float, d: float, value: float) -> float:
        return value / self.shape(T, d)

    @property
    def label(self) -> str:
        mark = " (recalled)" if self.recalled else ""
        return f"{self.id}: {self.statement}{mark}"


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
)

BY_ID = {t.id: t for t in THEOREMS}


def theorems_for(sampler: str, metric: str | None = None) -> list[Theorem]:
    """The theorems that cover a sampler (optionally only those bounding `metric`)."""
    return [t for t in THEOREMS if sampler in t.samplers and (metric is None or t.metric == metric)]


@dataclass(frozen=True)
class BoundCheck:
    theorem: Theorem
    constants: tuple[float, ...]  # e / shape at each T
    trend: str  # steady / falling / rising

    @property
    def last(self) -> float:
        return self.constants[-1]


def check_bound(theorem: Theorem, Ts: Sequence[float], d: int, values: Sequence[float],
                window: int | None = None) -> BoundCheck:
    """The constant the theorem would need at each T, and how it moves as T grows (over the asymptotic window)."""
    constants = tuple(theorem.needed_constant(T, d, v) for T, v in zip(Ts, values))
    moving = trend(np.asarray(Ts, float), np.asarray(constants), window) if len(Ts) >= 2 else "n/a"
    return BoundCheck(theorem, constants, moving)
