"""Probability-flow ODE step past the next level, then forward noising back to it: `ode-renoise` (Jain & Zhang 2025).

Jain & Zhang (2025, arXiv 2508.16306, "A sharp KL-convergence analysis for diffusion models under minimal
assumptions") write each step of the sampler as a reverse (probability-flow) ODE step followed by a smaller
noising step along the forward process: the ODE step's error is controlled in a Wasserstein sense, and the noise
turns it into a KL bound (the abstract says this much). The rule below, their Algorithm 1, was checked against a
third-party summary of the paper (asimfish/awesome_diffusion_OT, reports/2508.16306.md), not against the paper's
own text, which could not be read here: the ODE step is the exponential integrator with the score frozen at the
step's start and runs over two grid intervals (to the level after the next one); the forward Ornstein-Uhlenbeck
process then noises for one interval, back to the next level.

Notation. OU time t = -log(abar) / 2 (forward dX = -X dt + sqrt(2) dB, so abar = e^(-2t)); the score
s = -eps / sqrt(1 - abar). One step from grid level abar_i (time t_i) to abar_(i+1), overshooting to abar_o
(time t_o < t_(i+1)), with H = t_i - t_o and h = t_(i+1) - t_o:

    Y_o     = e^H Y_i + (e^H - 1) s(Y_i, abar_i)                         reverse ODE, score frozen
    Y_(i+1) = e^(-h) Y_o + sqrt(1 - e^(-2h)) Z                           forward noising, Z ~ N(0, I)

i.e. Y_(i+1) = sqrt(abar_(i+1) / abar_i) Y_i + sqrt(abar_(i+1) / abar_o) (sqrt(abar_o / abar_i) - 1) s(Y_i, abar_i)
+ sqrt(1 - abar_(i+1) / abar_o) Z: one Gaussian transition and one evaluation per step.

The overshoot level abar_o is the grid's level i + 2. The paper's grid has one level more than the levels sampled
(its last step overshoots to delta = t_0 and the output is at t_1); a grid here ends at the level returned, so the
last step overshoots to a level added past the grid's end by continuing the last two levels geometrically in OU
time, t_o = t_N^2 / t_(N-1) (the paper's steps h_k = c min(1, t_k) are geometric near the end). This choice is this
module's, not the paper's; it needs the grid's last level below 1.

Expected order: the analysis gives KL <~ d^2 c^3 K with steps c ~ (log(1/delta) + horizon) / K, i.e. KL of order
1/K^2 in the number of steps K, hence TV of order 1 (theory.bounds, `jainzhang2025-kl`).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from samplers.base import CountingModel, MarkovSampler, SamplerError, SamplerInfo, Transition, register
from samplers.expint import ou_time
from theory.schedules import Grid


def overshoot_levels(grid: Grid) -> Tensor:
    """abar_o for each step: the grid's level i + 2, and for the last step the level past the grid's end at OU time
    t_N^2 / t_(N-1) (geometric continuation)."""
    abar = grid.abar
    t = ou_time(abar)
    if float(t[-1]) <= 0:
        raise SamplerError(f"ode-renoise overshoots past the grid's last level, which must lie below 1: got abar = "
                           f"{float(abar[-1])!r}")
    beyond = torch.exp(-2 * t[-1] ** 2 / t[-2])
    return torch.cat([abar[2:], beyond.reshape(1)])


@register("ode-renoise")
class ODERenoise(MarkovSampler):
    """Jain & Zhang (2025) (module docstring), one evaluation per step: an exponential-integrator ODE step from
    abar_i to abar_o (two levels on), then the forward process from abar_o back to abar_(i+1):
    Y_(i+1) = sqrt(abar_(i+1)/abar_i) Y_i + sqrt(abar_(i+1)/abar_o) (sqrt(abar_o/abar_i) - 1) s(Y_i, abar_i)
              + sqrt(1 - abar_(i+1)/abar_o) Z."""

    info = SamplerInfo(
        "ode-renoise", stochastic=True, evals_per_step=1, order=1.0,
        reference="Jain & Zhang 2025 (arXiv 2508.16306), Algorithm 1 (ODE step over two intervals, then forward "
                  "noising over one), as summarised in asimfish/awesome_diffusion_OT reports/2508.16306.md",
        theorems=("jainzhang2025-kl",),
        notes="rule checked against a third-party summary, not the paper's text; the last step overshoots to a "
              "level continued geometrically in OU time past the grid's end (this project's choice)",
    )

    def transitions(self, model: CountingModel, grid: Grid) -> Iterator[Transition]:
        overshoot = overshoot_levels(grid)
        for i in range(grid.steps):
            abar_i, abar_next, abar_o = grid.abar[i], grid.abar[i + 1], overshoot[i]
            grow = torch.sqrt(abar_o / abar_i)  # e^H
            shrink = torch.sqrt(abar_next / abar_o)  # e^(-h)

            def mean(x: Tensor, abar_i=abar_i, grow=grow, shrink=shrink) -> Tensor:
                return shrink * (grow * x + (grow - 1) * model.score(x, abar_i))

            yield Transition(mean, torch.sqrt(1 - abar_next / abar_o))
