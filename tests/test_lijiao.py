"""Li & Jiao's randomized-midpoint blocks with forward re-noising (samplers.lijiao): evaluations per interval,
seeded runs, per-sample random times, the re-noising size as a function of the last random time, and the 1-D
randomized engine against an independent integration over the draws on a Gaussian target (closed form per draw).
(The declared order is checked, slowly, in tests/test_orders.py.)"""

from __future__ import annotations

import math

import pytest
import torch

from exact import DivergenceError, choose_method, measure
from exact.base import initial_law
from samplers import (
    CountingModel,
    ExactModel,
    Noise,
    SamplerError,
    ScriptedNoise,
    get_sampler,
)
from samplers.base import gauss_legendre_unit
from theory.bounds import BY_ID, theorems_for
from theory.catalog import get_target
from theory.schedules import Grid, make_grid


@pytest.mark.parametrize("name", ["lijiao-rmp", "lijiao-rmp:1", "lijiao-rmp:3"])
def test_one_evaluation_per_interval_whatever_the_block_length(name):
    for T in (2, 5, 9, 10):  # every remainder of the last block
        grid = make_grid("li2023", T)
        assert get_sampler(name).nfe(grid) == grid.steps, (name, T)
    assert get_sampler(name).info.evals_per_step == 1


def test_bad_block_lengths_raise_one_line_naming_the_value():
    for bad, shown in (("lijiao-rmp:0", "0"), ("lijiao-rmp:two", "'two'"), ("lijiao-rmp:-1", "-1")):
        with pytest.raises(SamplerError, match=shown) as info:
            get_sampler(bad)
        assert "\n" not in str(info.value)


def test_runs_are_seeded_and_each_sample_has_its_own_times():
    target, grid = get_target("mix1d"), make_grid("li2023", 40)
    sampler = get_sampler("lijiao-rmp")
    x = target.sample(4, grid.abar[0], torch.Generator().manual_seed(0))
    first, again = sampler(target, grid, x, Noise(5)), sampler(target, grid, x, Noise(5))
    assert torch.equal(first, again)
    assert not torch.allclose(first, sampler(target, grid, x, Noise(6)))
    with pytest.raises(ValueError, match="stochastic"):
        sampler(target, grid, x)
    # a batch with per-sample draws equals each sample run alone with its own draws
    steps = list(sampler.random_steps(CountingModel(ExactModel(target)), grid))
    gen = torch.Generator().manual_seed(2)
    uniforms = [torch.rand(4, 1, dtype=torch.float64, generator=gen) for s in steps for _ in range(s.uniforms)]
    normals = [torch.randn(4, 1, dtype=torch.float64, generator=gen) for s in steps if callable(s.std)]
    batch = sampler(target, grid, x, ScriptedNoise(normals, uniforms=uniforms))
    for i in range(4):
        alone = sampler(target, grid, x[i : i + 1], ScriptedNoise([z[i : i + 1] for z in normals],
                                                                   uniforms=[float(u[i, 0]) for u in uniforms]))
        assert torch.allclose(batch[i], alone[0], rtol=0, atol=1e-12)


def _small_setting():
    """Gaussian target, levels abar = 0.3, 0.5, 0.7, 0.9 (tau = 0.7, 0.5, 0.3, 0.1): with N = 2 one regular block
    (random times t1 in (0.3, 0.5), t2 in (0.1, 0.3), re-noised back to tau = 0.3), then one Euler interval."""
    return get_target("gaussian", d=1), Grid(torch.tensor([0.3, 0.5, 0.7, 0.9], dtype=torch.float64), "three-steps")


def test_the_re_noising_is_the_forward_kernel_from_the_last_random_time():
    """The block's noise has variance (tau_next - t2) / (1 - t2), t2 = 0.1 + 0.2 u2 the last random time, and it
    reaches the output multiplied by the (affine) last interval's slope."""
    target, grid = _small_setting()
    sampler = get_sampler("lijiao-rmp")
    steps = list(sampler.random_steps(CountingModel(ExactModel(target)), grid))
    assert [s.uniforms for s in steps] == [2, 0] and callable(steps[0].std) and float(steps[1].std) == 0.0
    points = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    last = steps[1].step(points)[:, 0]
    slope = float(last[1] - last[0])
    one = torch.ones(1, 1, dtype=torch.float64)
    for u1, u2 in ((0.2, 0.9), (0.7, 0.1)):
        t2 = 0.1 + 0.2 * u2
        expected = math.sqrt((0.3 - t2) / (1 - t2))
        assert abs(float(steps[0].std(torch.tensor(u1, dtype=torch.float64), torch.tensor(u2, dtype=torch.float64))) - expected) < 1e-14
        outs = [sampler(target, grid, points[:1], ScriptedNoise([z * one], uniforms=[u1, u2]))[0, 0] for z in (0, 1)]
        assert abs(float(outs[1] - outs[0]) - expected * slope) < 1e-12


def test_engine_equals_an_independent_integration_over_the_draws():
    """Given its two uniforms (u1, u2) and its normal Z, the run on a Gaussian target is affine in the start and Z:
    out = A x + B + C Z with A, B, C read off the sampler's own `run` (scripted draws). The output law is the
    mixture over (u1, u2) of N(A m0 + B, A^2 s0^2 + C^2); integrate it with a 16 x 16 Gauss-Legendre rule and
    compare its TV with the engine's (4 nodes per uniform, the noise's size a function of u2)."""
    target, grid = _small_setting()
    sampler = get_sampler("lijiao-rmp")
    start = initial_law(target, grid, "exact")
    m0, s0 = float(start.means[0, 0]), math.sqrt(float(start.covs[0, 0, 0]))
    nodes, weights = gauss_legendre_unit(16)
    points = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    one = torch.ones(1, 1, dtype=torch.float64)
    y = torch.linspace(-9.0, 10.0, 190_001, dtype=torch.float64)
    density = torch.zeros_like(y)
    for u1, w1 in zip(nodes, weights):
        for u2, w2 in zip(nodes, weights):
            base = sampler(target, grid, points, ScriptedNoise([0 * one], uniforms=[u1, u2]))[:, 0]
            noised = sampler(target, grid, points, ScriptedNoise([one], uniforms=[u1, u2]))[:, 0]
            A, B, C = float(base[1] - base[0]), float(base[0]), float(noised[0] - base[0])
            mean, std = A * m0 + B, math.sqrt(A**2 * s0**2 + C**2)
            density += w1 * w2 * torch.exp(-0.5 * ((y - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    q = torch.exp(target.log_prob(y[:, None], grid.abar[-1]))
    direct = 0.5 * float(torch.trapezoid((density - q).abs(), y))
    result = measure(target, sampler, grid)["tv"]
    assert result.method == "grid-1d-randomized"
    assert direct > 1e-3  # three coarse intervals: an error far above the integration's own
    assert result.details["quadrature_error"]["tv"] > 0
    assert abs(result.value - direct) < 1e-6 + 3 * result.numerical_error, (result.value, direct, result)
    assert not result.flagged, result


def test_no_exact_method_in_higher_dimension_and_the_theorem_entries():
    sampler = get_sampler("lijiao-rmp")
    assert choose_method(get_target("mix1d"), sampler) == "grid-1d-randomized"
    with pytest.raises(DivergenceError, match="random time"):
        choose_method(get_target("gaussian", d=2), sampler)
    assert [t.id for t in theorems_for("lijiao-rmp")] == ["lijiao2024-rmp"]
    assert sampler.info.theorems == ("lijiao2024-rmp",)
    theorem = BY_ID["licai2024-accel"]
    assert theorem.samplers == () and theorem.order == 2.0 and theorem.d_power == 2.5
    # the shape is d^(5/2) / T^2: quadrupling T divides it by 16, doubling d multiplies it by 2^(5/2)
    assert abs(theorem.shape(64, 3) / theorem.shape(256, 3) - 16) < 1e-12
    assert abs(theorem.shape(64, 6) / theorem.shape(64, 3) - 2**2.5) < 1e-12
