"""Samplers held against laws computed here from their update rules, independently of the samplers' own code and of
the exact engines (added for what mutation testing showed unguarded: tests/mutation.py, tests/mutation_survivors.md).

- Gaussian in, Gaussian out: on data N(0, s^2) the noised law at level abar is N(0, v(abar)), v = abar s^2 + 1 - abar,
  the score is -x / v, and the exact probability-flow map from level a to level b is x -> sqrt(v(b) / v(a)) x. A
  deterministic sampler's map is linear, x -> c x, so c converges to that ratio at the sampler's order, on grids that
  are far from uniform in lambda (where a multistep solver's step ratios differ from 1). The DDPM variants map
  N(0, w) to N(0, c^2 w + sigma^2) each step: their output variance is a two-line recursion.
- The randomized-midpoint samplers' random times: from the probes' second evaluation we read the time r each uniform
  draw u gave, and check it against the law's quantile (its distribution function by quadrature of the density,
  uniform or proportional to e^(h - r)); and the step's estimate of the drift integral is unbiased: its mean over u
  (Gauss-Legendre) equals the integral by scipy quadrature.
- Schedules: every grid ends where its schedule says it ends, for every T.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from samplers import Noise, get_sampler
from samplers.base import CountingModel, ExactModel, gauss_legendre_unit
from theory import solver_grids
from theory.schedules import Grid, make_grid
from theory.targets import DTYPE, gaussian

S2 = 0.25  # data variance


def v(abar) -> float:
    return float(abar) * S2 + 1 - float(abar)


def flow_ratio(grid) -> float:
    return math.sqrt(v(grid.abar[-1]) / v(grid.abar[0]))


def map_coefficient(name: str, grid) -> float:
    target = gaussian([0.0], [[S2]])
    return float(get_sampler(name)(target, grid, torch.ones(1, 1, dtype=DTYPE)))


def observed_order(name: str, schedule: str, Ts: list[int]) -> float:
    """log2 of the error ratio at the last doubling of T (the error of the map's coefficient, relative)."""
    errors = []
    for T in Ts:
        grid = make_grid(schedule, T)
        errors.append(abs(map_coefficient(name, grid) / flow_ratio(grid) - 1))
    return math.log2(errors[-2] / errors[-1])


@pytest.mark.parametrize("schedule", ["polynomial", "time_uniform"])
@pytest.mark.parametrize("name, order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpm-solver-2", 2),
                                         ("dpmpp-2m", 2)])
def test_deterministic_maps_converge_to_the_gaussian_flow_at_their_order(name, order, schedule):
    lam_steps = torch.diff(make_grid(schedule, 64).lam)
    assert float(lam_steps.max() / lam_steps.min()) > 1.5  # the grid is far from uniform in lambda
    assert abs(observed_order(name, schedule, [64, 128]) - order) < 0.3


def test_dpmpp_2m_uses_the_step_ratio_on_a_non_uniform_grid():
    """On a grid whose lambda steps alternate between h and 3h the multistep difference must be divided by the step
    ratio: the map still converges at order 2 (a solver that took the ratio as 1 would be first order there)."""
    def alternating(T):
        lam = [-math.log(80.0)]
        for i in range(T - 1):
            lam.append(lam[-1] + (1.0 if i % 2 == 0 else 3.0))
        lam = torch.tensor(lam, dtype=DTYPE)
        lam = -math.log(80.0) + (lam - lam[0]) / (lam[-1] - lam[0]) * (math.log(80.0) - math.log(0.002))
        return Grid.from_sigmas(torch.exp(-lam), "alternating")

    errors = [abs(map_coefficient("dpmpp-2m", alternating(T)) / flow_ratio(alternating(T)) - 1) for T in (65, 129)]
    assert abs(math.log2(errors[0] / errors[1]) - 2) < 0.3


@pytest.mark.parametrize("schedule", ["li2023", "ddpm-linear"])
def test_exact_sampler_maps_agree_with_the_flow_ratio_as_steps_shrink(schedule):
    """ddim, the Taylor ODE and the accelerated ODE all converge to the same exact flow coefficient."""
    for name in ("ddim", "ode", "ode-accel"):
        coarse, fine = (abs(map_coefficient(name, make_grid(schedule, T)) / flow_ratio(make_grid(schedule, T)) - 1)
                        for T in (100, 400))
        assert fine < coarse / 2.5


def _ddpm_variance(name: str, grid, w: float) -> float:
    """The output variance of one of the DDPM variants on N(0, S2) data, from their published update rules."""
    abar = [float(a) for a in grid.abar]
    for i in range(grid.steps):
        a_t, a_prev = abar[i], abar[i + 1]
        alpha = a_t / a_prev
        c = (1 - (1 - alpha) / v(a_t)) / math.sqrt(alpha)  # (x + (1 - alpha) s(x)) / sqrt(alpha), s(x) = -x / v
        if name == "ddpm":
            w = c * c * w + (1 - alpha) / alpha
        elif name == "ddpm-posterior":
            w = c * c * w + (1 - alpha) * (1 - a_prev) / (1 - a_t)
        elif name == "ddpm-accel":  # half the noise, the step at the half-noised point, the other half
            w = c * c * (w + (1 - alpha) / 2) + (1 - alpha) / 2
    return w


@pytest.mark.parametrize("name", ["ddpm", "ddpm-posterior", "ddpm-accel"])
@pytest.mark.parametrize("schedule, T", [("li2023", 12), ("ddpm-cosine", 7)])
def test_ddpm_variants_output_variance_follows_the_gaussian_recursion(name, schedule, T):
    grid = make_grid(schedule, T)
    start = v(grid.abar[0])
    expected = _ddpm_variance(name, grid, start)
    n = 200_000
    x = math.sqrt(start) * torch.randn(n, 1, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    out = get_sampler(name)(gaussian([0.0], [[S2]]), grid, x, Noise(seed=2))
    assert abs(float(out.mean())) < 5 * math.sqrt(expected / n)
    # sample variance: standard error sqrt(2 / n) relative
    assert abs(float(out.var()) / expected - 1) < 5 * math.sqrt(2 / n)
    # and the recursion is not trivially the exact law: DDPM misses v(abar_end) by more than the tolerance
    if name == "ddpm" and schedule == "li2023":
        assert abs(expected / v(grid.abar[-1]) - 1) > 10 * math.sqrt(2 / n)


# ---------------------------------------------------------------------------- the randomized midpoint's times
def g(t):
    return torch.cos(3 * t) + t * t


class TimeOnlyScore:
    """A model whose score depends on the time only: s(x, t) = g(t) with t = -log(abar) / 2."""

    def eps(self, x, abar):
        abar = torch.as_tensor(abar, dtype=DTYPE)
        t = -0.5 * torch.log(abar)
        return -torch.sqrt(1 - abar) * g(t) * torch.ones_like(x)


class RecordingScore(TimeOnlyScore):
    def __init__(self):
        self.levels = []

    def eps(self, x, abar):
        self.levels.append(torch.as_tensor(abar, dtype=DTYPE).reshape(-1).clone())
        return super().eps(x, abar)


def _density(importance: bool, h: float):
    return (lambda r: math.exp(h - r)) if importance else (lambda r: 1.0)


@pytest.mark.parametrize("name", ["ode-rmp", "ode-rmp-is"])
def test_random_time_follows_its_law(name):
    grid = make_grid("li2023", 6)
    u = torch.tensor([0.05, 0.3, 0.5, 0.71, 0.97], dtype=DTYPE)
    for step_index in range(grid.steps):
        t = -0.5 * math.log(float(grid.abar[step_index]))
        h = t + 0.5 * math.log(float(grid.abar[step_index + 1]))
        model = RecordingScore()
        step = list(get_sampler(name).random_steps(CountingModel(model), grid))[step_index]
        step.step(torch.zeros(5, 1, dtype=DTYPE), u[:, None])
        # the second evaluation is at the random times, one level per sample (a distinct level each)
        second = torch.cat(model.levels[1:])
        assert second.numel() == 5
        r = np.sort(t + 0.5 * np.log(second.numpy()))
        density = _density(name == "ode-rmp-is", h)
        total = integrate.quad(density, 0, h)[0]
        cdf = np.array([integrate.quad(density, 0, ri)[0] / total for ri in r])
        assert np.allclose(cdf, np.sort(u.numpy()), atol=1e-9)


@pytest.mark.parametrize("name", ["ode-rmp", "ode-rmp-is"])
def test_randomized_midpoint_estimate_of_the_drift_integral_is_unbiased(name):
    """With a score that depends on the time only, one step is e^h y + W(r) g(t - r): its mean over the random time
    is e^h y + int_0^h e^(h - r) g(t - r) dr exactly (the midpoint's state does not enter)."""
    grid = make_grid("li2023", 5, c1=2.0)
    nodes, weights = gauss_legendre_unit(60)
    u = torch.tensor(nodes, dtype=DTYPE)[:, None]
    weights = torch.tensor(weights, dtype=DTYPE)
    y = 0.7
    steps = list(get_sampler(name).random_steps(CountingModel(TimeOnlyScore()), grid))
    for n, step in enumerate(steps):
        t = -0.5 * math.log(float(grid.abar[n]))
        h = t + 0.5 * math.log(float(grid.abar[n + 1]))
        out = step.step(torch.full((u.shape[0], 1), y, dtype=DTYPE), u)[:, 0]
        mean = float((weights * out).sum())
        integral = integrate.quad(lambda r: math.exp(h - r) * float(g(torch.tensor(t - r))), 0, h, epsabs=1e-12)[0]
        assert abs(mean - (math.exp(h) * y + integral)) < 1e-9 * (1 + abs(integral))


@pytest.mark.parametrize("name", ["ode-rmp", "ode-rmp-is"])
def test_randomized_midpoint_stage_on_the_stationary_law(name):
    """On data N(0, 1) the score is -y at every time, the exact flow is the identity, the midpoint stage returns y
    itself and the step is y (e^h - W(r)): the importance-sampled weight makes it exactly y, the uniform one has
    mean y and second moment y^2 (e^(2h) - 2 e^h (e^h - 1) + h (e^(2h) - 1) / 2)."""
    grid = make_grid("li2023", 5, c1=2.0)
    target = gaussian([0.0], [[1.0]])
    nodes, weights = gauss_legendre_unit(60)
    u = torch.tensor(nodes, dtype=DTYPE)[:, None]
    weights = torch.tensor(weights, dtype=DTYPE)
    y = 1.3
    for n, step in enumerate(get_sampler(name).random_steps(CountingModel(ExactModel(target)), grid)):
        h = 0.5 * math.log(float(grid.abar[n + 1] / grid.abar[n]))
        out = step.step(torch.full((u.shape[0], 1), y, dtype=DTYPE), u)[:, 0]
        if name == "ode-rmp-is":
            assert torch.allclose(out, torch.full_like(out, y), atol=1e-12)
        else:
            assert abs(float((weights * out).sum()) - y) < 1e-10
            second = y * y * (math.exp(2 * h) - 2 * math.exp(h) * (math.exp(h) - 1) + h * (math.exp(2 * h) - 1) / 2)
            assert abs(float((weights * out * out).sum()) - second) < 1e-10


# ---------------------------------------------------------------------------- the schedules' end levels
@pytest.mark.parametrize("T", [2, 3, 10, 57])
def test_every_schedule_ends_where_it_says(T):
    c0 = 2.0
    li = make_grid("li2023", T, c0=c0)
    assert abs(float(li.abar[-1]) - (1 - T ** (-c0))) < 1e-14  # abar_1 = 1 - beta_1 = 1 - T^-c0
    assert li.T == T
    for kind, betas in (("linear", torch.linspace(1e-4, 0.02, 1000, dtype=DTYPE)), ("cosine", None)):
        grid = make_grid(f"ddpm-{kind}", T)
        assert grid.T == T
        if betas is not None:
            abar = torch.cumprod(1 - betas, 0)
            assert torch.allclose(grid.abar[[0, -1]], abar[[999, 0]], rtol=0, atol=1e-15)
        else:
            f = lambda k: math.cos(((k / 1000 + 0.008) / 1.008) * math.pi / 2) ** 2  # noqa: E731
            assert abs(float(grid.abar[-1]) - f(1) / f(0)) < 1e-14
    for name in ("polynomial", "logsnr", "time_uniform", "li2023-sigma"):
        grid = make_grid(name, T)
        assert grid.T == T
        assert abs(float(grid.sigma[0]) / solver_grids.SIGMA_MAX - 1) < 1e-9, name
        assert abs(float(grid.sigma[-1]) / solver_grids.SIGMA_MIN - 1) < 1e-9, name


# ---------------------------------------------------------------------------- refusals of the diffusers family
@pytest.mark.parametrize("option", ["self", "kwargs"])
def test_diffusers_family_refuses_options_that_are_not_config_fields(option):
    from samplers import SamplerError
    with pytest.raises(SamplerError, match=f"unknown option '{option}'"):
        get_sampler(f"diffusers:DDIMScheduler?{option}=1")


def test_ddim_eta_is_any_number_at_least_zero():
    from samplers import SamplerError
    for eta in ("0", "0.5", "1", "2"):
        assert get_sampler(f"diffusers:DDIMScheduler?eta={eta}").info.stochastic == (float(eta) > 0)
    with pytest.raises(SamplerError, match="eta must be a number >= 0"):
        get_sampler("diffusers:DDIMScheduler?eta=-0.5")


def test_a_grid_from_sigmas_keeps_its_levels_and_parameters():
    sigmas = torch.tensor([80.0, 3.0, 0.5, 0.002], dtype=DTYPE)
    grid = Grid.from_sigmas(sigmas, "given", {"rho": 7.0})
    assert grid.params == {"rho": 7.0}
    assert Grid.from_sigmas(sigmas, "bare").params == {}
    assert torch.allclose(grid.sigma, sigmas, rtol=1e-8, atol=0)  # 1 - abar cancels at small sigma


def test_lms_declares_the_order_diffusers_uses_by_default():
    import inspect

    from diffusers import LMSDiscreteScheduler

    default = inspect.signature(LMSDiscreteScheduler.step).parameters["order"].default
    assert get_sampler("diffusers:LMSDiscreteScheduler").info.order == default
    assert get_sampler("diffusers:LMSDiscreteScheduler?order=2").info.order == 2


@pytest.mark.parametrize("rho", [None, 1.0, 2.0])
def test_time_uniform_is_uniform_in_tau_to_the_one_over_rho(rho):
    """The grid is uniform in tau^(1/rho) under the fitted VP schedule (by default rho = 1: uniform in VP time)."""
    grid = make_grid("time_uniform", 9) if rho is None else make_grid("time_uniform", 9, rho=rho)
    beta_d, beta_min = solver_grids.vp_constants()
    tau = solver_grids.vp_tau(grid.sigma, beta_d, beta_min) ** (1 / (rho or 1.0))
    steps = torch.diff(tau)
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-6, atol=0)


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_exponential_runge_kutta_converges_to_the_gaussian_flow_at_its_order(p):
    assert abs(observed_order(f"expint:{p}", "polynomial", [64, 128]) - p) < 0.4


@pytest.mark.parametrize("schedule", ["polynomial", "logsnr", "time_uniform"])
def test_solver_grids_refuse_a_zero_or_inverted_noise_range(schedule):
    from theory.schedules import ScheduleError
    for sigma_min, sigma_max in ((0.0, 80.0), (1.0, 0.5), (0.002, float("inf"))):
        with pytest.raises(ScheduleError, match="need 0 < sigma_min < sigma_max < inf"):
            make_grid(schedule, 5, sigma_min=sigma_min, sigma_max=sigma_max)


def test_samplers_with_their_own_grid_are_labelled_so_and_named_as_the_registry_spells_them():
    """A sampler that builds its own grid (lijiao-rmp: the drawn levels) records OWN_GRID as its schedule, any other
    the schedule it ran on; an unknown name's refusal spells a query-form family as name[?options]."""
    from samplers.base import OWN_GRID, SamplerError, schedule_label

    assert schedule_label(get_sampler("lijiao-rmp"), "li2023") == OWN_GRID
    assert schedule_label(get_sampler("ddim"), "li2023") == "li2023"
    assert schedule_label(None, "li2023") == "li2023"
    with pytest.raises(SamplerError) as err:
        get_sampler("no-such-sampler")
    assert "lijiao-rmp[?options]" in str(err.value) and "lijiao-rmp-parallel[?options]" in str(err.value)


def test_the_randomized_midpoint_default_is_the_uniform_time():
    """RandomizedMidpointODE() with no argument is the registry's uniform-time ode-rmp: the same output on the same
    draws (the importance-sampled time would move every step)."""
    from samplers.randomized_midpoint import RandomizedMidpointODE

    target = gaussian(torch.tensor([0.4], dtype=DTYPE), torch.tensor([[0.3]], dtype=DTYPE))
    grid = make_grid("li2023", 12)
    x = torch.linspace(-2, 2, 7, dtype=DTYPE)[:, None]
    outs = [sampler.run(CountingModel(ExactModel(target)), grid, x.clone(), Noise(3))
            for sampler in (RandomizedMidpointODE(), get_sampler("ode-rmp"), get_sampler("ode-rmp-is"))]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert float((outs[0] - outs[2]).abs().max()) > 1e-6
