"""Randomized-midpoint samplers of the probability-flow ODE, `ode-rmp` and `ode-rmp-is` (two evaluations a step).

The randomized midpoint method (Shen & Lee 2019, arXiv 1909.05503) estimates the integral of the drift over a step
by its value at one uniformly random time, which makes the estimate unbiased. Gupta, Cai, Chen (2024, arXiv
2406.00924, "Faster diffusion sampling with randomized midpoints: sequential and parallel") use it as the predictor
for the probability-flow ODE; Zhang, Huan, Huang, Boffi, Chen, Chewi (2025, arXiv 2511.04844, DDRaM) ran the
method on image models. The update below was checked against the DDRaM authors' code (stephen-huan/edm_rmd,
generate.py, `ablation_sampler(solver='midpoint')`, its generic exponential-integrator branch, which cites Gupta et
al.'s equations 7 and 8); that code has both the uniform time and an importance-sampled time, and both are here.
Not implemented: Gupta et al.'s underdamped-Langevin corrector (their theorem is for predictor + corrector) and
DDRaM's stochastic (SDE) update, whose rule could not be read.

Notation. OU time t = -log(abar) / 2; one step goes from grid level abar_n (time t) to abar_(n+1) (time t' < t),
h = t - t' > 0 the elapsed reverse time, and e^h = sqrt(abar_(n+1) / abar_n). In reverse time the VP probability-flow
ODE is dY/dr = Y + s(Y, t - r), so

    Y(h) = e^h Y(0) + int_0^h e^(h - r) s(Y(r), t - r) dr.

One step, with a uniform draw u ~ U[0, 1] (from the injected noise):

    r      = u h                                   (`ode-rmp`: uniform time)
    r      = -log(1 + u (e^(-h) - 1))              (`ode-rmp-is`: density of r proportional to e^(h - r))
    Y_mid  = e^r Y + (e^r - 1) s(Y, t)                           exponential Euler to the random time
    Y_next = e^h Y + h e^(h - r) s(Y_mid, t - r)                 (`ode-rmp`)
    Y_next = e^h Y + (e^h - 1) s(Y_mid, t - r)                   (`ode-rmp-is`)

Both are unbiased estimates of the integral along the exact path; the output law is a mixture over the random
times (exact.randomized_1d integrates it in 1-D). Expected order in the step size: 2 (the midpoint's exponential
Euler error O(h^2) enters multiplied by h; the estimate's fluctuation, O(h^2) per step with mean zero, moves the
law only at second order in it).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from samplers.base import CountingModel, RandomizedSampler, RandomStep, SamplerInfo, register
from samplers.expint import ou_time
from theory.schedules import Grid


class RandomizedMidpointODE(RandomizedSampler):
    """Randomized midpoint for the probability-flow ODE (module docstring), two evaluations per step:
    Y_mid = e^r Y + (e^r - 1) s(Y, t);  Y_next = e^h Y + W(r) s(Y_mid, t - r),
    r = u h and W = h e^(h - r) (uniform), or r = -log(1 + u (e^(-h) - 1)) and W = e^h - 1 (importance-sampled)."""

    def __init__(self, importance: bool = False):
        self.importance = importance
        name = "ode-rmp-is" if importance else "ode-rmp"
        self.info = SamplerInfo(
            name, stochastic=True, evals_per_step=2, order=2.0,
            reference="Shen & Lee 2019 (arXiv 1909.05503); Gupta, Cai, Chen 2024 (arXiv 2406.00924) eqs. 7-8 as "
                      "in the DDRaM authors' code (stephen-huan/edm_rmd); "
                      + ("time drawn with density proportional to e^(h - r)" if importance else "uniform time"),
            theorems=("gupta2024-rmp",),
            notes="randomized: one uniform time per step and sample; predictor only (no Langevin corrector)",
        )

    def random_steps(self, model: CountingModel, grid: Grid) -> Iterator[RandomStep]:
        times = ou_time(grid.abar)
        for n in range(grid.steps):
            t, h = times[n], times[n] - times[n + 1]

            def step(y: Tensor, u: Tensor, t=t, h=h) -> Tensor:
                if self.importance:
                    r = -torch.log1p(u * torch.expm1(-h))
                    weight = torch.expm1(h)
                else:
                    r = u * h
                    weight = h * torch.exp(h - r)
                y_mid = torch.exp(r) * y + torch.expm1(r) * model.score(y, torch.exp(-2 * t))
                # each sample has its own random time: one evaluation at per-sample levels when the times differ
                s_mid = _score_at_times(model, y_mid, t - r)
                return torch.exp(h) * y + weight * s_mid

            yield RandomStep(step)


def _score_at_times(model: CountingModel, y: Tensor, t: Tensor) -> Tensor:
    """s(y_i, t_i) for a batch whose samples sit at their own times t (a scalar, or shape (n, 1, ..., 1)): one
    model evaluation either way (CountingModel.score_per_sample when the times differ)."""
    flat = t.reshape(-1)
    if flat.numel() == 1 or bool(torch.all(flat == flat[0])):
        return model.score(y, torch.exp(-2 * flat[0]))
    return model.score_per_sample(y, torch.exp(-2 * flat))


register("ode-rmp")(lambda: RandomizedMidpointODE(importance=False))
register("ode-rmp-is")(lambda: RandomizedMidpointODE(importance=True))
