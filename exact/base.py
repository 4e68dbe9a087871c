"""What every exact engine shares: a Measurement (value, numerical error, method), the refusal error, the
initial laws (q_T exactly or N(0, I)) as densities and as draws, and the trapezoid rule.

shared/spec/metrics.md: every number carries the method that produced it and an estimate of its own numerical
error; a value whose numerical error is not well below the value is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture, gaussian

METRICS = ("tv", "kl")


FLAG_RATIO = 0.1  # a value whose numerical error exceeds this fraction of it is flagged


class DivergenceError(ValueError):
    """No exact method applies, or the one that does cannot stand behind a number (e.g. a non-monotone map)."""


@dataclass
class Measurement:
    metric: str
    value: float
    numerical_error: float
    method: str
    details: dict = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """True when the numerical error is not well below the value itself."""
        return not (self.numerical_error < FLAG_RATIO * abs(self.value))


# ---------------------------------------------------------------------------- initial laws
def initial_law(target: GaussianMixture, grid: Grid, init: str) -> GaussianMixture:
    """q_T exactly ('exact') or the theory's N(0, I) ('gaussian')."""
    if init == "exact":
        level = grid.abar[0]
        # q_T as a mixture in its own right (its level-1 form), so the same code evaluates it.
        return GaussianMixture(
            target.weights,
            torch.sqrt(level) * target.means,
            level * target.covs + (1 - level) * torch.eye(target.d, dtype=DTYPE, device=target.device),
            f"q_T({target.name})",
            target.device,
        )
    if init == "gaussian":
        return gaussian(
            torch.zeros(target.d, dtype=DTYPE), torch.eye(target.d, dtype=DTYPE), name="N(0,I)"
        ).to(target.device)
    raise DivergenceError(f"unknown init {init!r}: use 'exact' (q_T) or 'gaussian' (N(0, I))")


def initial_draws(target, grid: Grid, init: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n draws from the initial law and their log-density: q_T exactly ('exact') or N(0, I) ('gaussian')."""
    if init == "exact":
        x = target.sample(n, grid.abar[0], generator)
        return x, target.log_prob(x, grid.abar[0])
    if init == "gaussian":
        x = torch.randn(n, target.d, dtype=DTYPE, device=target.device, generator=generator)
        return x, -0.5 * (x * x).sum(-1) - 0.5 * target.d * math.log(2 * math.pi)
    raise DivergenceError(f"unknown init {init!r}: use 'exact' (q_T) or 'gaussian' (N(0, I))")


def trapezoid(values: Tensor, h: float) -> Tensor:
    return h * (values.sum(-1) - 0.5 * (values[..., 0] + values[..., -1]))
