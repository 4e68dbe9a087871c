"""The samplers of Li, Wei, Chen, Chi (2023, arXiv 2306.09251) and their accelerated forms
(Li, Huang, Efimov, Wei, Chi, Chen, ICML 2024, arXiv 2403.03852). shared/spec/samplers.md section 2.

Grid indexing: grid.abar = [abar_T, ..., abar_1]; step i goes from level t (abar_t = grid.abar[i]) to level t - 1
(abar_{t-1} = grid.abar[i + 1]), with alpha_t = abar_t / abar_{t-1}. The run returns Y_1, the state at the last
level; one model evaluation per step.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from samplers.base import CountingModel, MarkovSampler, Sampler, SamplerInfo, Transition, register
from theory.schedules import Grid


def _levels(grid: Grid, i: int) -> tuple[Tensor, Tensor, Tensor]:
    """(abar_t, abar_{t-1}, alpha_t) for step i."""
    abar_t, abar_prev = grid.abar[i], grid.abar[i + 1]
    return abar_t, abar_prev, abar_t / abar_prev


def ddim_step(x: Tensor, eps: Tensor, abar_t: Tensor, abar_prev: Tensor) -> Tensor:
    """Exponential-integrator step with eps frozen:
    Y_{t-1} = Y_t / sqrt(alpha_t) + ( sqrt(1 - abar_{t-1}) - sqrt(1 - abar_t) / sqrt(alpha_t) ) eps_t."""
    root_alpha = torch.sqrt(abar_t / abar_prev)
    return x / root_alpha + (torch.sqrt(1 - abar_prev) - torch.sqrt(1 - abar_t) / root_alpha) * eps


@register("ode")
class ODE(Sampler):
    """Li et al. (2023) probability-flow ODE sampler:
    Y_{t-1} = ( Y_t + (1 - alpha_t)/2 * s_t(Y_t) ) / sqrt(alpha_t)."""

    info = SamplerInfo(
        "ode", stochastic=False, evals_per_step=1, order=1.0,
        reference="Li, Wei, Chen, Chi 2023 (arXiv 2306.09251), deterministic sampler",
        theorems=("li2023-ode", "li2024-sharp-ode"),
    )

    def run(self, model: CountingModel, grid: Grid, x: Tensor, noise=None) -> Tensor:
        for i in range(grid.steps):
            abar_t, _, alpha = _levels(grid, i)
            x = (x + (1 - alpha) / 2 * model.score(x, abar_t)) / torch.sqrt(alpha)
        return x


@register("ddim")
class DDIM(Sampler):
    """DDIM (Song, Meng, Ermon 2021), the exponential-integrator form of the ODE sampler:
    Y_{t-1} = Y_t / sqrt(alpha_t) + ( sqrt(1 - abar_{t-1}) - sqrt(1 - abar_t)/sqrt(alpha_t) ) eps_t(Y_t)."""

    info = SamplerInfo(
        "ddim", stochastic=False, evals_per_step=1, order=1.0,
        reference="Song, Meng, Ermon 2021 (arXiv 2010.02502); Li et al. 2023 section 2",
        theorems=("li2023-ode", "li2024-sharp-ode"),
    )

    def run(self, model: CountingModel, grid: Grid, x: Tensor, noise=None) -> Tensor:
        for i in range(grid.steps):
            abar_t, abar_prev, _ = _levels(grid, i)
            x = ddim_step(x, model.eps(x, abar_t), abar_t, abar_prev)
        return x


def accel_coefficient(abar_t: Tensor, abar_prev: Tensor) -> Tensor:
    """B_t = abar_t sqrt(1-abar_{t-1})/sqrt(abar_{t-1}) + arcsin(sqrt(abar_{t-1}))
           - abar_t sqrt(1-abar_t)/sqrt(abar_t) - arcsin(sqrt(abar_t)),
    i.e. -int_{abar_t}^{abar_{t-1}} (a - abar_t) d sigma(a) with sigma(a) = sqrt((1 - a)/a)."""
    sigma = lambda a: torch.sqrt((1 - a) / a)  # noqa: E731
    return (abar_t * sigma(abar_prev) + torch.asin(torch.sqrt(abar_prev))
            - abar_t * sigma(abar_t) - torch.asin(torch.sqrt(abar_t)))


@register("ode-accel")
class ODEAccel(Sampler):
    """Accelerated deterministic sampler (Li et al. 2024, arXiv 2403.03852), one evaluation per step:
    Y_{t-1} = DDIM(Y_t, eps_t) + sqrt(abar_{t-1}) / (abar_t - abar_{t+1}) * B_t * (eps_{t+1}(Y_{t+1}) - eps_t(Y_t)),
    the exact integral of eps extrapolated linearly in abar; the first step is plain DDIM."""

    info = SamplerInfo(
        "ode-accel", stochastic=False, evals_per_step=1, order=2.0,
        reference="Li, Huang, Efimov, Wei, Chi, Chen 2024 (arXiv 2403.03852), accelerated deterministic sampler",
        theorems=("li2023-accel-ode",), multistep=True,
    )

    def run(self, model: CountingModel, grid: Grid, x: Tensor, noise=None) -> Tensor:
        eps_next = None  # eps_{t+1}(Y_{t+1}) from the previous (noisier) step
        for i in range(grid.steps):
            abar_t, abar_prev, _ = _levels(grid, i)
            eps = model.eps(x, abar_t)
            x_new = ddim_step(x, eps, abar_t, abar_prev)
            if eps_next is not None:
                abar_next = grid.abar[i - 1]
                B = accel_coefficient(abar_t, abar_prev)
                x_new = x_new + torch.sqrt(abar_prev) / (abar_t - abar_next) * B * (eps_next - eps)
            x, eps_next = x_new, eps
        return x


@register("ddpm")
class DDPM(MarkovSampler):
    """DDPM (Ho et al. 2020) as in Li et al. (2023):
    Y_{t-1} = ( Y_t + (1 - alpha_t) s_t(Y_t) + sqrt(1 - alpha_t) Z_t ) / sqrt(alpha_t)."""

    info = SamplerInfo(
        "ddpm", stochastic=True, evals_per_step=1, order=1.0,
        reference="Ho, Jain, Abbeel 2020; Li, Wei, Chen, Chi 2023 (arXiv 2306.09251), stochastic sampler",
        theorems=("li2023-ddpm", "liyan2024-ddpm", "chen2022-ddpm", "benton2023-ddpm", "ddpm2025-kl",
                  "ddpm2025-kl-lower", "licaiwei2025-ddpm-gmm"),
    )

    def transitions(self, model: CountingModel, grid: Grid) -> Iterator[Transition]:
        for i in range(grid.steps):
            abar_t, _, alpha = _levels(grid, i)

            def mean(x: Tensor, abar_t=abar_t, alpha=alpha) -> Tensor:
                return (x + (1 - alpha) * model.score(x, abar_t)) / torch.sqrt(alpha)

            yield Transition(mean, torch.sqrt((1 - alpha) / alpha))


@register("ddpm-posterior")
class DDPMPosterior(MarkovSampler):
    """DDPM with the posterior variance (Ho et al. 2020's second variance choice, sigma_t^2 = beta~_t): the same mean
    as `ddpm`, less noise,
        Y_{t-1} = ( Y_t + (1 - alpha_t) s_t(Y_t) ) / sqrt(alpha_t) + sigma_t Z_t,
        sigma_t^2 = (1 - alpha_t) (1 - abar_{t-1}) / (1 - abar_t).

    Why it matters on low-dimensional data: along a direction in which the data are a point mass, q_t is the centred
    normal of variance 1 - abar_t and the score is -y / (1 - abar_t); the step maps N(0, 1 - abar_t) to a centred
    normal of variance (alpha_t - abar_t)^2 / ((1 - abar_t) alpha_t) + sigma_t^2, which equals 1 - abar_{t-1}
    exactly for this sigma_t and no other: with the drift coefficient 1 - alpha_t fixed, it is the one variance
    that transports the empty directions without error, so the error cannot grow with the ambient dimension d on
    data that lie on a subspace (`ddpm`, with sigma_t^2 = (1 - alpha_t) / alpha_t, adds a fixed KL per empty
    direction). Li & Yan 2024 (arXiv 2405.14861) prove that a unique coefficient design makes DDPM adapt to the
    intrinsic dimension k (TV <= k^2 polylog / sqrt(T), abstract); that their design is this one is recalled, not
    read from their text: the derivation above is this project's."""

    info = SamplerInfo(
        "ddpm-posterior", stochastic=True, evals_per_step=1, order=1.0,
        reference="Ho, Jain, Abbeel 2020 (posterior variance beta~_t); the coefficient design of Li & Yan 2024 "
                  "(arXiv 2405.14861, recalled), derived in the docstring",
        theorems=("liyan2024-adaptive",),
    )

    def transitions(self, model: CountingModel, grid: Grid) -> Iterator[Transition]:
        for i in range(grid.steps):
            abar_t, abar_prev, alpha = _levels(grid, i)

            def mean(x: Tensor, abar_t=abar_t, alpha=alpha) -> Tensor:
                return (x + (1 - alpha) * model.score(x, abar_t)) / torch.sqrt(alpha)

            yield Transition(mean, torch.sqrt((1 - alpha) * (1 - abar_prev) / (1 - abar_t)))


@register("ddpm-accel")
class DDPMAccel(MarkovSampler):
    """Accelerated stochastic sampler (Li et al. 2024, arXiv 2403.03852): the noise in two halves, the score taken
    at the half-noised point with the level-t model:
        Y+      = Y_t + sqrt((1 - alpha_t)/2) Z_t
        Y_{t-1} = ( Y+ + (1 - alpha_t) s_t(Y+) ) / sqrt(alpha_t) + sqrt((1 - alpha_t)/2) Z+_t."""

    info = SamplerInfo(
        "ddpm-accel", stochastic=True, evals_per_step=1, order=1.0,
        reference="Li, Huang, Efimov, Wei, Chi, Chen 2024 (arXiv 2403.03852), accelerated stochastic sampler",
        theorems=("li2023-accel-ddpm",),
    )

    def transitions(self, model: CountingModel, grid: Grid) -> Iterator[Transition]:
        for i in range(grid.steps):
            abar_t, _, alpha = _levels(grid, i)
            half = torch.sqrt((1 - alpha) / 2)
            yield Transition(None, half)

            def mean(x: Tensor, abar_t=abar_t, alpha=alpha) -> Tensor:
                return (x + (1 - alpha) * model.score(x, abar_t)) / torch.sqrt(alpha)

            yield Transition(mean, half)
