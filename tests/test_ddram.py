"""DDRaM (samplers.ddram, `ddpm-rmp` and its variants): the split Brownian increment, reproducible per-sample draws,
two evaluations a step, and the randomized engine against an independent closed form on a Gaussian target.
(The declared order in the step size is checked in tests/test_orders.py, opt-in.)"""

from __future__ import annotations

import math

import pytest
import torch

from exact import DivergenceError, choose_method, measure
from exact.base import initial_law
from samplers import CountingModel, ExactModel, Noise, SamplerError, ScriptedNoise, get_sampler
from samplers.base import gauss_legendre_unit
from samplers.expint import ou_time
from theory.catalog import get_target
from theory.schedules import Grid, make_grid
from theory.targets import GaussianMixture

VARIANTS = ("ddpm-rmp", "ddpm-rmp:relative-uniform", "ddpm-rmp:score-importance", "ddpm-rmp:score-uniform")
ONE = torch.ones(1, 1, dtype=torch.float64)


def _one_step(sampler, model, grid, y, u, xi, z):
    """The sampler's own run on points y with scripted draws (time u, stage normal xi, end normal z)."""
    return sampler(model, grid, y, ScriptedNoise([xi * ONE, z * ONE], uniforms=[u]))[:, 0]


def _affine_parts(sampler, model, grid, u):
    """On a Gaussian target one step is affine given u: y -> A y + B + C xi + S Z; read A, B, C, S off `run`."""
    points = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    base = _one_step(sampler, model, grid, points, u, 0.0, 0.0)
    A, B = float(base[1] - base[0]), float(base[0])
    C = float(_one_step(sampler, model, grid, points, u, 1.0, 0.0)[0]) - B
    S = float(_one_step(sampler, model, grid, points, u, 0.0, 1.0)[0]) - B
    return A, B, C, S


@pytest.mark.parametrize("name", ["ddpm-rmp", "ddpm-rmp:relative-uniform"])
def test_relative_linear_part_is_exact_for_the_stationary_law(name):
    """With data N(0, 1) every q_t is N(0, 1) and the relative score s + y vanishes, so a step is y -> e^(-H) y plus
    the noise of the whole Brownian increment: the law N(0, 1) is kept exactly for every random time, which holds
    only if the midpoint's noise and the independent rest add up to variance 1 - e^(-2H) (the split is right)."""
    target = GaussianMixture([1.0], [[0.0]], [[[1.0]]], "standard")
    grid = Grid(torch.tensor([0.2, 0.7], dtype=torch.float64), "one-step")
    H = float(ou_time(grid.abar)[0] - ou_time(grid.abar)[1])
    sampler = get_sampler(name)
    for u in (0.05, 0.3, 0.7, 0.99):
        A, B, C, S = _affine_parts(sampler, target, grid, u)
        assert abs(A - math.exp(-H)) < 1e-13 and abs(B) < 1e-13, (u, A, B)
        assert abs(C) > 0.1 and S > 0  # both parts of the increment are there
        assert abs(A**2 + C**2 + S**2 - 1) < 1e-13, (u, A, C, S)


def test_score_linear_part_carries_the_whole_increment_with_a_null_score():
    """With a zero score the `score` variant is y -> e^H y + N(H), N(H) the noise of the whole step: the stage part
    and the independent part add up to v(H) = e^(2H) - 1 for every time, and the end std is v(H - r) (r = u H)."""

    class Null:
        def eps(self, x, abar):
            return torch.zeros_like(x)

    grid = Grid(torch.tensor([0.3, 0.8], dtype=torch.float64), "one-step")
    H = float(ou_time(grid.abar)[0] - ou_time(grid.abar)[1])
    sampler = get_sampler("ddpm-rmp:score-uniform")
    for u in (0.1, 0.5, 0.9):
        A, B, C, S = _affine_parts(sampler, Null(), grid, u)
        assert abs(A - math.exp(H)) < 1e-13 and abs(B) < 1e-14
        assert abs(C**2 + S**2 - math.expm1(2 * H)) < 1e-13, (u, C, S)
        assert abs(S**2 - math.expm1(2 * (H - u * H))) < 1e-13, (u, S)


@pytest.mark.parametrize("name", VARIANTS)
def test_runs_are_reproducible_and_cost_two_evaluations_a_step(name):
    target, grid = get_target("mix1d"), make_grid("li2023", 9)
    x = target.sample(6, grid.abar[0], torch.Generator().manual_seed(0))
    sampler = get_sampler(name)
    assert sampler.info.name == name and sampler.info.theorems == ("zhang2025-ddram",)
    assert sampler.info.evals_per_step == 2 and sampler.nfe(grid) == 2 * grid.steps
    counter = CountingModel(ExactModel(target))
    first = sampler(counter, grid, x, Noise(7))
    assert counter.nfe == 2 * grid.steps  # per-sample times: still one batched call per evaluation
    assert torch.equal(first, sampler(target, grid, x, Noise(7)))
    assert not torch.allclose(first, sampler(target, grid, x, Noise(8)))
    with pytest.raises(ValueError, match="stochastic"):
        sampler(target, grid, x)


@pytest.mark.parametrize("name", ["ddpm-rmp", "ddpm-rmp:score-uniform"])
def test_each_sample_gets_its_own_time_and_noise(name):
    """A batch run with per-sample draws (time, stage normal, end normal, whose std depends on the time) equals each
    sample run alone with its own draws."""
    target, grid = get_target("mix1d"), make_grid("li2023", 5)
    sampler = get_sampler(name)
    x = target.sample(4, grid.abar[0], torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    u = torch.rand(grid.steps, 4, 1, dtype=torch.float64, generator=gen)
    normals = torch.randn(grid.steps, 2, 4, 1, dtype=torch.float64, generator=gen)
    draws = [normals[k, j] for k in range(grid.steps) for j in range(2)]
    batch = sampler(target, grid, x, ScriptedNoise(draws, uniforms=list(u)))
    for i in range(4):
        own = [d[i : i + 1] for d in draws]
        alone = sampler(target, grid, x[i : i + 1], ScriptedNoise(own, uniforms=[float(v) for v in u[:, i, 0]]))
        assert torch.allclose(batch[i], alone[0], rtol=0, atol=1e-13)


def test_ddpm_rmp_is_the_relative_importance_variant():
    """`ddpm-rmp` is the authors' default (relative score, importance-sampled time) under a short name."""
    target, grid = get_target("mix1d"), make_grid("li2023", 6)
    x = target.sample(5, grid.abar[0], torch.Generator().manual_seed(3))
    short = get_sampler("ddpm-rmp")(target, grid, x, Noise(4))
    assert torch.equal(short, get_sampler("ddpm-rmp:relative-importance")(target, grid, x, Noise(4)))
    assert not torch.allclose(short, get_sampler("ddpm-rmp:relative-uniform")(target, grid, x, Noise(4)))


def test_bad_variants_raise_one_line_naming_the_value():
    for bad in ("ddpm-rmp:relative", "ddpm-rmp:scor-uniform", "ddpm-rmp:score-sobol"):
        with pytest.raises(SamplerError) as caught:
            get_sampler(bad)
        message = str(caught.value)
        assert "\n" not in message and repr(bad.partition(":")[2]) in message, message


def test_no_exact_method_in_d_above_one():
    """One random time per step moves every coordinate: no product or Gaussian engine, refused with the reason."""
    sampler = get_sampler("ddpm-rmp")
    assert choose_method(get_target("mix1d"), sampler) == "grid-1d-randomized"
    for target in (get_target("product-mix1d", d=3), get_target("gaussian", d=2)):
        with pytest.raises(DivergenceError, match="random time"):
            choose_method(target, sampler)


@pytest.mark.parametrize("name", ["ddpm-rmp", "ddpm-rmp:score-uniform"])
def test_engine_equals_an_independent_closed_form(name):
    """Two coarse steps on the 1-D Gaussian target: given the two times each step is affine in (y, xi, Z), so the
    output is the mixture over (u1, u2) of N(A2 (A1 m0 + B1) + B2, A2^2 (A1^2 s0^2 + C1^2 + S1^2) + C2^2 + S2^2),
    A, B, C, S read off the sampler's own `run`. Integrate that mixture over the times with a 16 x 16 Gauss-Legendre
    rule (the normals in closed form) and compare its TV with the engine's, whose Gauss-Hermite rule integrates the
    stage normal numerically."""
    target = get_target("gaussian", d=1)  # N(0.7, 0.5)
    abar = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    sampler = get_sampler(name)
    start = initial_law(target, Grid(abar, "two-steps"), "exact")
    m0, s0 = float(start.means[0, 0]), math.sqrt(float(start.covs[0, 0, 0]))
    first, second = Grid(abar[:2], "first"), Grid(abar[1:], "second")
    nodes, weights = gauss_legendre_unit(16)
    parts1 = [_affine_parts(sampler, target, first, u) for u in nodes]
    parts2 = [_affine_parts(sampler, target, second, u) for u in nodes]
    y = torch.linspace(-9.0, 10.0, 190_001, dtype=torch.float64)
    density = torch.zeros_like(y)
    for (A1, B1, C1, S1), w1 in zip(parts1, weights):
        for (A2, B2, C2, S2), w2 in zip(parts2, weights):
            mean = A2 * (A1 * m0 + B1) + B2
            std = math.sqrt(A2**2 * (A1**2 * s0**2 + C1**2 + S1**2) + C2**2 + S2**2)
            density += w1 * w2 * torch.exp(-0.5 * ((y - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    q = torch.exp(target.log_prob(y[:, None], abar[-1]))
    direct = 0.5 * float(torch.trapezoid((density - q).abs(), y))
    result = measure(target, sampler, Grid(abar, "two-steps"))["tv"]
    assert result.method == "grid-1d-randomized" and result.details["nodes"] == 6
    assert direct > 1e-3  # coarse steps: a TV well above the integration's own error
    assert abs(result.value - direct) < 1e-6 + 3 * result.numerical_error, (result.value, direct, result)
    assert result.numerical_error < 0.01 * result.value, result
