"""The samplers since 2024 (samplers.expint, samplers.randomized_midpoint, samplers.renoise) and the randomized 1-D
engine (exact.randomized_1d): the tableaux's order conditions, reproducible per-sample random times, the engine's
mixture against an independent integration over the random times, and Jain & Zhang's ODE-then-noise step.
(samplers.picard has its own file, tests/test_picard.py.)
(The declared orders are checked in tests/test_orders.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from exact import DivergenceError, choose_method, measure
from exact.base import initial_law
from samplers import (
    CountingModel,
    ExactModel,
    Noise,
    SamplerError,
    ScriptedNoise,
    ZeroNoise,
    get_sampler,
)
from samplers.base import (
    RandomizedSampler,
    RandomStep,
    SamplerInfo,
    gauss_hermite_normal,
    gauss_legendre_unit,
)
from samplers.expint import TABLEAUX
from theory.catalog import get_target
from theory.schedules import Grid, make_grid

RANDOMIZED = ("ode-rmp", "ode-rmp-is")


# ---------------------------------------------------------------------------- noise and quadrature
def test_uniform_draws_are_seeded_scripted_and_zero_at_the_mean():
    like = torch.zeros(5, 1, dtype=torch.float64)
    a, b = Noise(3).uniform(like), Noise(3).uniform(like)
    assert torch.equal(a, b) and bool(((a >= 0) & (a < 1)).all())
    assert not torch.equal(a, Noise(4).uniform(like))
    assert torch.equal(ZeroNoise().uniform(like), torch.full_like(like, 0.5))
    scripted = ScriptedNoise([], uniforms=[0.25, torch.tensor(0.75)])
    assert float(scripted.uniform(like)[3, 0]) == 0.25 and float(scripted.uniform(like)[0, 0]) == 0.75
    with pytest.raises(ValueError, match="ran out of uniform draws"):
        scripted.uniform(like)


@pytest.mark.parametrize("nodes", [1, 3, 6])
def test_gauss_legendre_on_the_unit_interval_is_exact_to_degree_2m_minus_1(nodes):
    u, w = gauss_legendre_unit(nodes)
    for k in range(2 * nodes):
        assert abs(sum(wi * ui**k for ui, wi in zip(u, w)) - 1 / (k + 1)) < 1e-14, k
    # and not one degree further (the rule is Gaussian, not exact for everything)
    k = 2 * nodes
    assert abs(sum(wi * ui**k for ui, wi in zip(u, w)) - 1 / (k + 1)) > 1e-8


@pytest.mark.parametrize("nodes", [1, 3, 6])
def test_gauss_hermite_matches_the_normal_moments_to_degree_2m_minus_1(nodes):
    z, w = gauss_hermite_normal(nodes)
    moments = [1.0, 0.0, 1.0, 0.0, 3.0, 0.0, 15.0, 0.0, 105.0, 0.0, 945.0, 0.0, 10395.0, 0.0]
    for k in range(2 * nodes):
        assert abs(sum(wi * zi**k for zi, wi in zip(z, w)) - moments[k]) < 1e-10 * max(1.0, moments[k]), k
    k = 2 * nodes  # and not one degree further
    assert abs(sum(wi * zi**k for zi, wi in zip(z, w)) - moments[k]) > 1e-6


class _NoisedStage(RandomizedSampler):
    """A test sampler whose normal draw enters before the score evaluation: x' = x + a z, then a DDIM step from x'
    plus Gaussian noise of std s. On a Gaussian target eps is affine, so one step is affine in (x, z, Z)."""

    info = SamplerInfo("noised-stage", stochastic=True, evals_per_step=1, order=1.0, reference="test")

    def __init__(self, a: float = 0.4, s: float = 0.3):
        self.a, self.s = a, s

    def random_steps(self, model, grid):
        for n in range(grid.steps):
            a0, a1 = grid.abar[n], grid.abar[n + 1]

            def step(x, z, a0=a0, a1=a1):
                moved = x + self.a * z
                eps = model.eps(moved, a0)
                x0 = (moved - torch.sqrt(1 - a0) * eps) / torch.sqrt(a0)
                return torch.sqrt(a1) * x0 + torch.sqrt(1 - a1 - self.s**2) * eps

            yield RandomStep(step, std=self.s, uniforms=0, normals=1)


@settings(max_examples=8, deadline=None)
@given(st.floats(0.05, 0.6), st.floats(0.1, 0.5), st.floats(0.1, 0.5), st.floats(0.6, 0.95))
def test_normal_draws_before_the_score_are_integrated_by_gauss_hermite(a, s, first, last):
    """One step of _NoisedStage on a Gaussian target: the output is N(A m0 + B, A^2 s0^2 + C^2 + S^2) with A, B,
    C, S read off the sampler's own `run` (scripted normals); the engine's TV (4 Gauss-Hermite nodes) agrees with
    the closed form within its own error estimate, and its quadrature estimate is not zero."""
    target = get_target("gaussian", d=1)
    if 1 - last <= s**2:  # the step's deterministic part needs 1 - abar_next > s^2
        last = 1 - 1.5 * s**2
    if last <= first + 0.05:
        return
    grid = Grid(torch.tensor([first, last], dtype=torch.float64), "one-step")
    sampler = _NoisedStage(a, s)
    start = initial_law(target, grid, "exact")
    m0, s0 = float(start.means[0, 0]), math.sqrt(float(start.covs[0, 0, 0]))
    points = torch.tensor([[0.0], [1.0]], dtype=torch.float64)

    def out(z, noise):
        one = torch.ones(1, 1, dtype=torch.float64)
        return sampler(target, grid, points, ScriptedNoise([z * one, noise * one]))[:, 0]

    base = out(0.0, 0.0)
    A, B = float(base[1] - base[0]), float(base[0])
    C, S = float(out(1.0, 0.0)[0]) - B, float(out(0.0, 1.0)[0]) - B
    assert abs(S - sampler.s) < 1e-14 and abs(C) > 0.01  # the stage noise really moves the output
    mean, std = A * m0 + B, math.sqrt(A**2 * s0**2 + C**2 + S**2)
    y = torch.linspace(-12.0, 13.0, 250_001, dtype=torch.float64)
    p = torch.exp(-0.5 * ((y - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    q = torch.exp(target.log_prob(y[:, None], grid.abar[-1]))
    direct = 0.5 * float(torch.trapezoid((p - q).abs(), y))
    result = measure(target, sampler, grid, method="grid-1d-randomized")["tv"]
    assert result.details["quadrature_error"]["tv"] > 0
    assert abs(result.value - direct) < 1e-7 + 3 * result.numerical_error, (result.value, direct, result)


# ---------------------------------------------------------------------------- expint
@pytest.mark.parametrize("p", sorted(TABLEAUX))
def test_runge_kutta_tableaux_satisfy_the_order_conditions(p):
    """Butcher's order conditions up to order p (and c_i = sum_j a_ij), and the first one of order p + 1 fails."""
    c, A, b = (np.array(TABLEAUX[p][0]), TABLEAUX[p][1], np.array(TABLEAUX[p][2]))
    s = len(c)
    a = np.zeros((s, s))
    for i, row in enumerate(A):
        a[i, : len(row)] = row
    assert np.allclose(a.sum(1), c) and np.allclose(np.triu(a), 0)
    conditions = {
        1: [(b.sum(), 1.0)],
        2: [(b @ c, 1 / 2)],
        3: [(b @ c**2, 1 / 3), (b @ a @ c, 1 / 6)],
        4: [(b @ c**3, 1 / 4), (b @ (c * (a @ c)), 1 / 8), (b @ a @ c**2, 1 / 12), (b @ a @ a @ c, 1 / 24)],
        5: [(b @ c**4, 1 / 5), (b @ a @ a @ a @ c, 1 / 120)],
    }
    for order in range(1, p + 1):
        for value, expected in conditions[order]:
            assert abs(value - expected) < 1e-14, (order, value, expected)
    assert any(abs(value - expected) > 1e-3 for value, expected in conditions[p + 1])


def test_expint_spends_p_evaluations_a_step_and_rejects_bad_orders():
    grid = make_grid("li2023", 9)
    for p in (1, 2, 3, 4):
        assert get_sampler(f"expint:{p}").nfe(grid) == p * grid.steps
    for bad in ("expint:5", "expint:0", "expint:two"):
        with pytest.raises(ValueError, match="expint"):
            get_sampler(bad)


# ---------------------------------------------------------------------------- randomized midpoint
def test_randomized_runs_are_reproducible_and_cost_two_evaluations_a_step():
    target, grid = get_target("mix1d"), make_grid("li2023", 9)
    x = target.sample(6, grid.abar[0], torch.Generator().manual_seed(0))
    for name in RANDOMIZED:
        sampler = get_sampler(name)
        assert sampler.nfe(grid) == 2 * grid.steps
        first, again = sampler(target, grid, x, Noise(7)), sampler(target, grid, x, Noise(7))
        assert torch.equal(first, again)
        assert not torch.allclose(first, sampler(target, grid, x, Noise(8)))
        with pytest.raises(ValueError, match="stochastic"):
            sampler(target, grid, x)


def test_per_sample_times_cost_one_evaluation_per_batched_call():
    """A batch whose samples sit at different times is one evaluation (a network takes a level per sample), and
    each sample gets the score at its own level."""
    target = get_target("mix1d")
    model = CountingModel(ExactModel(target))
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)[:, None]
    levels = torch.tensor([0.2, 0.5, 0.2, 0.9, 0.5], dtype=torch.float64)
    together = model.score_per_sample(x, levels)
    assert model.nfe == 1
    for i in range(5):
        assert torch.allclose(together[i], target.score(x[i : i + 1], levels[i])[0], rtol=1e-14, atol=0)
    grid = make_grid("li2023", 7)
    counter = CountingModel(ExactModel(target))
    get_sampler("ode-rmp")(counter, grid, target.sample(8, grid.abar[0], torch.Generator().manual_seed(0)), Noise(1))
    assert counter.nfe == get_sampler("ode-rmp").nfe(grid) == 2 * grid.steps


def test_choose_method_routes_randomized_samplers_and_refuses_where_no_engine_applies():
    sampler = get_sampler("ode-rmp")
    assert choose_method(get_target("mix1d"), sampler) == "grid-1d-randomized"
    for target in (get_target("product-mix1d", d=3), get_target("gaussian", d=2)):
        with pytest.raises(DivergenceError, match="mixture"):
            choose_method(target, sampler)
    grid = make_grid("li2023", 5)
    with pytest.raises(DivergenceError, match="mixture"):
        measure(get_target("product-mix1d", d=3), sampler, grid, method="product")
    with pytest.raises(DivergenceError, match="mixture"):
        measure(get_target("gaussian", d=1), sampler, grid, method="gaussian")


def _two_step_setting():
    target = get_target("gaussian", d=1)  # N(0.7, 0.5)
    grid = Grid(torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64), "two-steps")
    return target, grid


@pytest.mark.parametrize("name", RANDOMIZED)
def test_engine_equals_an_independent_integration_over_the_random_times(name):
    """On a Gaussian target each step is affine given its time, so the output is the mixture over (u1, u2) of
    N(A m0 + B, A^2 s0^2). Integrate that mixture with a 16 x 16 Gauss-Legendre rule, A and B read off the
    sampler's own `run` (scripted uniforms), and compare its TV with the engine's."""
    target, grid = _two_step_setting()
    sampler = get_sampler(name)
    start = initial_law(target, grid, "exact")
    m0, s0 = float(start.means[0, 0]), math.sqrt(float(start.covs[0, 0, 0]))
    nodes, weights = gauss_legendre_unit(16)
    points = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.linspace(-9.0, 10.0, 190_001, dtype=torch.float64)
    density = torch.zeros_like(y)
    for u1, w1 in zip(nodes, weights):
        for u2, w2 in zip(nodes, weights):
            out = sampler(target, grid, points, ScriptedNoise([], uniforms=[u1, u2]))[:, 0]
            A, B = float(out[1] - out[0]), float(out[0])
            mean, std = A * m0 + B, abs(A) * s0
            density += w1 * w2 * torch.exp(-0.5 * ((y - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    q = torch.exp(target.log_prob(y[:, None], grid.abar[-1]))
    direct = 0.5 * float(torch.trapezoid((density - q).abs(), y))
    result = measure(target, sampler, grid)["tv"]
    assert result.method == "grid-1d-randomized"
    assert direct > 1e-3  # the two steps are coarse: a TV well above the integration's own error
    assert abs(result.value - direct) < 1e-6 + 3 * result.numerical_error, (result.value, direct, result)
    assert not result.flagged, result


@pytest.mark.parametrize("name", RANDOMIZED)
def test_each_sample_gets_its_own_random_time_in_every_step(name):
    """A batch run with per-sample uniform draws equals the runs of each sample alone with its own draws: the
    sampler's draws are one per sample and step (independent samples of the mixture), not one per batch."""
    target, grid = get_target("mix1d"), make_grid("li2023", 6)
    sampler = get_sampler(name)
    x = target.sample(4, grid.abar[0], torch.Generator().manual_seed(1))
    u = torch.rand(grid.steps, 4, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    batch = sampler(target, grid, x, ScriptedNoise([], uniforms=list(u)))
    for i in range(4):
        alone = sampler(target, grid, x[i : i + 1], ScriptedNoise([], uniforms=[float(v) for v in u[:, i, 0]]))
        assert torch.allclose(batch[i], alone[0], rtol=0, atol=1e-13)
    same_time = sampler(target, grid, x, ScriptedNoise([], uniforms=[float(v) for v in u[:, 0, 0]]))
    assert not torch.allclose(batch[1:], same_time[1:], atol=1e-6)


def test_randomized_engine_refuses_bad_node_counts_and_other_samplers():
    target, grid = get_target("mix1d"), make_grid("li2023", 5)
    with pytest.raises(DivergenceError, match="quadrature nodes"):
        measure(target, get_sampler("ode-rmp"), grid, nodes=1)
    with pytest.raises(DivergenceError, match="no random times"):
        measure(target, get_sampler("ddpm"), grid, method="grid-1d-randomized")


# ---------------------------------------------------------------------------- ODE overshoot + forward noising
def test_renoise_step_is_the_two_stage_rule_in_ou_time():
    """Each transition of ode-renoise equals, written afresh in OU time t = -log(abar)/2 with the target's own score:
    y = e^(t_i - t_o) x + (e^(t_i - t_o) - 1) s(x, t_i) (the ODE to t_o = t_(i+2)), then
    x' = e^(-(t_(i+1) - t_o)) y + sqrt(1 - e^(-2 (t_(i+1) - t_o))) z; the last step overshoots to t_N^2 / t_(N-1)."""
    target, grid = get_target("mix1d"), make_grid("li2023", 6)
    t = -0.5 * torch.log(grid.abar)
    overshoot = torch.cat([t[2:], (t[-1] ** 2 / t[-2]).reshape(1)])
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    z = torch.linspace(-1, 2, 7, dtype=torch.float64)[:, None]
    steps = list(get_sampler("ode-renoise").transitions(CountingModel(ExactModel(target)), grid))
    assert len(steps) == grid.steps
    for i, step in enumerate(steps):
        H, h = t[i] - overshoot[i], t[i + 1] - overshoot[i]
        assert H > h > 0
        y = torch.exp(H) * x + torch.expm1(H) * target.score(x, torch.exp(-2 * t[i]))
        want = torch.exp(-h) * y + torch.sqrt(-torch.expm1(-2 * h)) * z
        got = step.map(x) + step.std * z
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), i


def test_renoise_keeps_the_stationary_law_exactly_and_ddpm_does_not():
    """On N(0, 1) data every q_abar is N(0, 1) and s(x) = -x: the ODE stage is the identity and the noising stage
    preserves N(0, 1), so the output law is exact (Gaussian engine: KL at rounding level), unlike DDPM's."""
    target, grid = get_target("std-normal", 1), make_grid("li2023", 9)
    renoise = measure(target, get_sampler("ode-renoise"), grid, method="gaussian")
    ddpm = measure(target, get_sampler("ddpm"), grid, method="gaussian")
    assert renoise["kl"].value < 1e-13 and ddpm["kl"].value > 1e-4, (renoise["kl"], ddpm["kl"])


def test_renoise_engines_agree_and_costs_one_round_per_evaluation():
    """A Gaussian-transition sampler: the 1-D kernel engine and the closed-form Gaussian engine agree on a 1-D
    Gaussian target; the product engine measures it on a product target; one evaluation (one round) per step."""
    sampler, grid = get_sampler("ode-renoise"), make_grid("li2023", 9)
    assert choose_method(get_target("mix1d"), sampler) == "grid-1d-kernel"
    assert choose_method(get_target("product-mix1d", d=3), sampler) == "product"
    target = get_target("gaussian", 1)
    kernel = measure(target, sampler, grid, method="grid-1d-kernel")
    closed = measure(target, sampler, grid, method="gaussian")
    for metric in ("tv", "kl"):
        gap = abs(kernel[metric].value - closed[metric].value)
        assert gap < 1e-9 + 3 * (kernel[metric].numerical_error + closed[metric].numerical_error), metric
        assert closed[metric].value > 1e-4
    assert measure(get_target("product-mix1d", d=3), sampler, grid, samples=2000)["kl"].method == "product"
    assert sampler.nfe(grid) == sampler.sequential_rounds(grid) == grid.steps


def test_renoise_kl_is_second_order_and_tv_first_order_in_the_step():
    """Jain & Zhang's KL ~ 1/T^2 (theory.bounds jainzhang2025-kl): on mix1d (li2023 grid, 1-D kernel engine) the
    local orders in the largest step between T = 128 and 256 are 2 for KL and 1 for TV, within 0.1
    (measured 1.94 and 0.97)."""
    target, grids = get_target("mix1d"), [make_grid("li2023", T) for T in (128, 256)]
    values = [measure(target, get_sampler("ode-renoise"), g) for g in grids]
    step_ratio = math.log(grids[1].max_step / grids[0].max_step)
    for metric, order in (("kl", 2.0), ("tv", 1.0)):
        local = math.log(values[1][metric].value / values[0][metric].value) / step_ratio
        assert abs(local - order) < 0.1, (metric, local)


def test_renoise_needs_a_grid_that_ends_below_one():
    grid = Grid(torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64), "ends-at-data")
    with pytest.raises(SamplerError, match="below 1") as caught:
        get_sampler("ode-renoise").nfe(grid)
    assert "\n" not in str(caught.value) and "1.0" in str(caught.value)
