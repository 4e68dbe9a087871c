"""Li et al.'s grid and samplers: the schedule formula, evaluation counts, the accelerated coefficient, and the
exact Gaussian output law against actually running each sampler many times."""

import math

import pytest
import torch
from scipy import integrate

from exact import initial_law
from exact.gaussian import gaussian_output_law
from samplers import Noise, SamplerError, get_sampler
from samplers.li2023 import accel_coefficient
from theory.catalog import get_target
from theory.schedules import ScheduleError, make_grid
from theory.targets import DTYPE

LI_SAMPLERS = ["ode", "ddim", "ode-accel", "ddpm", "ddpm-accel"]


@pytest.mark.parametrize("T", [8, 16, 100, 1024])
def test_li2023_grid_follows_the_formula(T):
    grid = make_grid("li2023", T)
    c0, c1 = 2.0, 4.0
    rate = c1 * math.log(T) / T
    beta = [T**-c0] + [rate * min(T**-c0 * (1 + rate) ** t, 1.0) for t in range(1, T)]
    capped = sum(b > 0.5 for b in beta)
    beta = torch.tensor([min(b, 0.5) for b in beta], dtype=DTYPE)
    # grid.beta lists 1 - alpha_t for t = T .. 2; abar_1 = 1 - beta_1 is the last level.
    # 1 - abar_t / abar_{t-1} carries an absolute rounding error of a few ulps of 1
    torch.testing.assert_close(grid.beta, beta[1:].flip(0), rtol=0, atol=4e-16)
    torch.testing.assert_close(grid.abar, torch.cumprod(1 - beta, 0).flip(0), rtol=1e-14, atol=0)
    assert abs(float(grid.abar[-1]) - (1 - T**-c0)) < 1e-15
    assert grid.capped == capped
    assert (grid.capped > 0) == (T <= 16)


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5])
def test_too_few_levels_are_refused(bad):
    with pytest.raises(ScheduleError, match="T must be an integer >= 2"):
        make_grid("li2023", bad)


def test_unknown_names_are_refused():
    with pytest.raises(ScheduleError, match="unknown schedule 'weird'"):
        make_grid("weird", 10)
    with pytest.raises(SamplerError, match="unknown sampler 'nope'"):
        get_sampler("nope")


@pytest.mark.parametrize("name", LI_SAMPLERS)
@pytest.mark.parametrize("schedule", ["li2023", "ddpm-linear", "ddpm-cosine"])
def test_one_evaluation_per_step_counted_by_the_wrapper(name, schedule):
    grid = make_grid(schedule, 20)
    assert get_sampler(name).nfe(grid) == grid.steps == 19


def test_accelerated_coefficient_is_the_integral_it_claims():
    """B_t = -int_{abar_t}^{abar_{t-1}} (a - abar_t) d sigma(a), sigma(a) = sqrt((1 - a)/a)."""
    dsigma = lambda a: -0.5 / (a**1.5 * math.sqrt(1 - a))  # noqa: E731
    for abar_t, abar_prev in [(0.1, 0.2), (0.5, 0.55), (0.9, 0.999), (1e-4, 3e-4)]:
        quad, _ = integrate.quad(lambda a: -(a - abar_t) * dsigma(a), abar_t, abar_prev, epsabs=1e-14, epsrel=1e-12)
        got = float(accel_coefficient(torch.tensor(abar_t, dtype=DTYPE), torch.tensor(abar_prev, dtype=DTYPE)))
        assert abs(got - quad) <= 1e-10 * max(1.0, abs(quad))


def test_accelerated_sampler_starts_with_a_ddim_step():
    target = get_target("mix1d")
    grid = make_grid("li2023", 64)
    two_levels = type(grid)(grid.abar[:2], "first-step")
    x = target.sample(32, grid.abar[0], torch.Generator().manual_seed(0))
    torch.testing.assert_close(get_sampler("ode-accel")(target, two_levels, x),
                               get_sampler("ddim")(target, two_levels, x), rtol=0, atol=0)


def test_stochastic_sampler_needs_a_noise_source():
    target = get_target("mix1d")
    with pytest.raises(SamplerError, match="stochastic"):
        get_sampler("ddpm")(target, make_grid("li2023", 8), torch.zeros(3, 1, dtype=DTYPE))


def test_same_seed_same_output():
    target = get_target("mix1d")
    grid = make_grid("li2023", 32)
    x = target.sample(64, grid.abar[0], torch.Generator().manual_seed(1))
    a = get_sampler("ddpm-accel")(target, grid, x, Noise(seed=7))
    b = get_sampler("ddpm-accel")(target, grid, x, Noise(seed=7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", LI_SAMPLERS)
def test_exact_gaussian_law_matches_running_the_sampler(name):
    """On a Gaussian target every sampler's output is Gaussian with the propagated mean and covariance; 100k runs of
    the sampler itself agree within Monte Carlo error (5 standard errors for means, 3% for covariances)."""
    target = get_target("gaussian", d=2)
    grid = make_grid("li2023", 24)
    p_init = initial_law(target, grid, "exact")
    mean, cov = gaussian_output_law(target, get_sampler(name), grid, p_init.means[0], p_init.covs[0])
    n = 100_000
    x0 = p_init.sample(n, 1.0, torch.Generator().manual_seed(11))
    y = get_sampler(name)(target, grid, x0, Noise(seed=12))
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert torch.all((y.mean(0) - mean).abs() < 5 * se), (y.mean(0), mean)
    emp = torch.cov(y.T)
    assert torch.all((emp - cov).abs() < 0.03 * torch.sqrt(torch.outer(torch.diagonal(cov), torch.diagonal(cov))))
