"""Flow Monte Carlo (metrics.md method 4) agrees with the exact engines where their domains overlap."""

from __future__ import annotations

import math

import pytest
import torch

from exact import DivergenceError, choose_method, measure
from exact import flow_mc as flow
from samplers import get_sampler
from samplers.base import CountingModel, ExactModel, MarkovSampler
from theory.catalog import get_target
from theory.schedules import make_grid
from theory.targets import DTYPE


def test_logdet_matches_the_full_jacobian():
    """Forward mode with d tangents gives the same log|det dF/dx| as the Jacobian built column by column."""
    target = get_target("mixture-diag", 3)
    grid = make_grid("li2023", 8)
    sampler = get_sampler("ode-accel")
    x = target.sample(5, grid.abar[0], torch.Generator().manual_seed(1))
    y, sign, logdet = flow.flow_and_logdet(sampler, ExactModel(target), grid, x)
    model = CountingModel(ExactModel(target))
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda p: sampler.run(model, grid, p[None], None)[0], x[i])
        s, ld = torch.linalg.slogdet(J)
        assert float(s) == float(sign[i]) == 1.0
        assert abs(float(ld - logdet[i])) < 1e-10
        assert torch.allclose(y[i], sampler.run(model, grid, x[i : i + 1], None)[0], atol=1e-12)


@pytest.mark.parametrize("sampler", ["ddim", "ode-accel"])
def test_agrees_with_the_gaussian_engine(sampler):
    """On a Gaussian target in d = 3 the flow MC KL lies within 4 standard errors of the closed form."""
    target = get_target("gaussian", 3)
    grid = make_grid("li2023", 16)
    exact = measure(target, get_sampler(sampler), grid, method="gaussian", mc_samples=20_000)
    mc = measure(target, get_sampler(sampler), grid, method="flow-mc", samples=4000, seed=3)
    assert mc["kl"].method == "flow-mc"
    assert abs(mc["kl"].value - exact["kl"].value) < 4 * mc["kl"].numerical_error
    tv_noise = mc["tv"].numerical_error + exact["tv"].numerical_error
    assert abs(mc["tv"].value - exact["tv"].value) < 4 * tv_noise


def test_agrees_with_the_1d_grid_engine():
    """In d = 1 on a three-mode mixture the flow MC KL and TV lie within 4 standard errors of method 1."""
    target = get_target("mix1d")
    grid = make_grid("li2023", 16)
    exact = measure(target, get_sampler("ode"), grid)
    mc = measure(target, get_sampler("ode"), grid, method="flow-mc", samples=8000, seed=5)
    assert exact["kl"].method == "grid-1d-flow"
    for metric in ("kl", "tv"):
        assert abs(mc[metric].value - exact[metric].value) < 4 * mc[metric].numerical_error, metric


def test_standard_error_shrinks_as_one_over_root_n():
    """Quadrupling the draws halves the standard error (ratio within [0.4, 0.62])."""
    target = get_target("mixture-diag", 2)
    grid = make_grid("li2023", 8)
    small = flow.flow_mc(target, get_sampler("ddim"), grid, samples=1000, seed=11)
    large = flow.flow_mc(target, get_sampler("ddim"), grid, samples=4000, seed=12)
    for metric in ("tv", "kl"):
        ratio = large[metric].details["standard_error"] / small[metric].details["standard_error"]
        assert 0.4 < ratio < 0.62, (metric, ratio)


def test_same_seed_same_numbers():
    target = get_target("mixture-diag", 2)
    grid = make_grid("li2023", 8)
    a = flow.flow_mc(target, get_sampler("ode"), grid, samples=500, seed=7)
    b = flow.flow_mc(target, get_sampler("ode"), grid, samples=500, seed=7)
    assert a["kl"].value == b["kl"].value and a["tv"].value == b["tv"].value


def test_refuses_stochastic_samplers():
    with pytest.raises(DivergenceError, match="deterministic"):
        flow.flow_mc(get_target("mixture-diag", 2), get_sampler("ddpm"), make_grid("li2023", 8), samples=10)


def test_choose_method():
    """'auto' keeps the 1-D and Gaussian choices, then product, then flow-mc, and refuses clearly otherwise."""
    ode, ddpm = get_sampler("ode"), get_sampler("ddpm")
    assert choose_method(get_target("mix1d"), ode) == "grid-1d-flow"
    assert choose_method(get_target("mix1d"), ddpm) == "grid-1d-kernel"
    assert choose_method(get_target("gaussian", 4), ddpm) == "gaussian"
    assert choose_method(get_target("product-bimodal", 4), ddpm) == "product"
    assert choose_method(get_target("mixture-diag", 4), ode) == "flow-mc"
    assert isinstance(ddpm, MarkovSampler)
    with pytest.raises(DivergenceError, match="no exact method for sampler 'ddpm'"):
        choose_method(get_target("mixture-diag", 4), ddpm)


def test_initial_draws_gaussian_init_density():
    """The N(0, I) start has the standard normal log-density."""
    target = get_target("mixture-diag", 3)
    x, lp = flow.initial_draws(target, make_grid("li2023", 8), "gaussian", 7, torch.Generator().manual_seed(0))
    ref = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=DTYPE), torch.eye(3, dtype=DTYPE)).log_prob(x)
    assert torch.allclose(lp, ref, atol=1e-12)
    with pytest.raises(DivergenceError, match="unknown init"):
        flow.initial_draws(target, make_grid("li2023", 8), "uniform", 7, torch.Generator())


def test_mixture_diag_target():
    t = get_target("mixture-diag", 5)
    assert t.d == 5 and t.K == 4 and t.diagonal
    assert math.isclose(float(torch.linalg.norm(t.means[0])), 2.0, rel_tol=1e-12)


def test_a_folding_map_is_refused_at_a_point_where_its_jacobian_determinant_is_not_positive():
    """The map F(x) = (x_1^3 - x_1, x_2) has det dF/dx = 3 x_1^2 - 1, negative on |x_1| < 1/sqrt(3), a band that
    draws from q_T hit often: the engine refuses, and the point it names lies in that band (det <= 0 there)."""
    import re

    from samplers.base import Sampler, SamplerInfo

    class Folds(Sampler):
        info = SamplerInfo("folds-in-a-band", False, 0, 1.0, "test only")

        def run(self, model, grid, x, noise):
            return torch.stack([x[:, 0] ** 3 - x[:, 0], x[:, 1]], dim=1)

    target = get_target("mixture-diag", 2)
    for seed in range(5):
        with pytest.raises(DivergenceError, match="non-positive determinant") as refusal:
            flow.flow_mc(target, Folds(), make_grid("li2023", 4), samples=64, seed=seed)
        named = [float(v) for v in re.search(r"at x = \[([^\]]*)\]", str(refusal.value)).group(1).split(",")]
        assert 3 * named[0] ** 2 - 1 <= 0, (seed, named)
