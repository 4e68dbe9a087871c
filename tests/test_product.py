"""Product targets and the product engine (metrics.md method 5)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from exact import METHODS, DivergenceError, measure
from exact.product import check_coordinatewise
from samplers import get_sampler
from samplers.base import Sampler, SamplerInfo
from theory.catalog import get_target
from theory.product import ProductTarget, product_of
from theory.schedules import make_grid
from theory.targets import DTYPE, GaussianMixture, TargetError


def _marginals():
    a = GaussianMixture([0.3, 0.7], [[-1.0], [0.8]], [[[0.2]], [[0.5]]], "a")
    b = GaussianMixture([1.0], [[0.4]], [[[1.7]]], "b")
    c = GaussianMixture([0.2, 0.5, 0.3], [[-2.0], [0.0], [1.5]], [[[0.1]], [[0.3]], [[0.05]]], "c")
    return a, b, c


@settings(max_examples=15, deadline=None)
@given(st.floats(0.05, 1.0), st.integers(0, 2**31 - 1))
def test_matches_the_expanded_mixture(abar, seed):
    """log_prob, score, eps, denoiser, score Jacobian equal those of the explicit prod_j K_j mixture."""
    a, b, c = _marginals()
    product = ProductTarget([a, b, c, a])
    mixture = product.to_mixture()
    assert mixture.K == product.K == 2 * 1 * 3 * 2
    x = torch.randn(6, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(seed)) * 2
    for name in ("log_prob", "score", "eps", "denoiser", "score_jacobian"):
        assert torch.allclose(getattr(product, name)(x, abar), getattr(mixture, name)(x, abar), atol=1e-10), name
    assert torch.allclose(product.mean(abar), mixture.mean(abar), atol=1e-12)
    assert torch.allclose(product.covariance(abar), mixture.covariance(abar), atol=1e-12)


def test_groups_share_equal_marginals():
    a, b, _ = _marginals()
    product = ProductTarget([a, b, a, GaussianMixture(a.weights, a.means, a.covs)])
    assert len(product.factor_groups()) == 2
    assert product_of(a, 256, "big").K == 2**256  # never expanded
    with pytest.raises(TargetError, match="components as a mixture"):
        product_of(a, 256, "big").to_mixture()
    with pytest.raises(TargetError, match="1-D GaussianMixture"):
        ProductTarget([get_target("mix2d")])


def test_sample_has_the_marginal_laws():
    """Draws of each coordinate have the marginal's mean and variance (within 5 standard errors)."""
    a, b, c = _marginals()
    product = ProductTarget([a, b, c])
    x = product.sample(40_000, 0.6, torch.Generator().manual_seed(0))
    mean, var = product.mean(0.6), torch.diag(product.covariance(0.6))
    assert torch.all((x.mean(0) - mean).abs() < 5 * torch.sqrt(var / 40_000))
    assert torch.all((x.var(0) / var - 1).abs() < 0.03)


@pytest.mark.parametrize("sampler", ["ode", "ddpm"])
def test_kl_is_the_sum_of_the_marginal_kls(sampler):
    """The product identity: the engine's KL equals the sum of the 1-D engines' KLs over coordinates, to rounding."""
    a, b, _ = _marginals()
    product = ProductTarget([a, b, a])
    grid = make_grid("li2023", 12)
    s = get_sampler(sampler)
    got = measure(product, s, grid, method="product", samples=2000)["kl"]
    kl_a, kl_b = (measure(m, s, grid)["kl"].value for m in (a, b))
    one_d = 2 * kl_a + kl_b
    assert got.method == "product"
    assert abs(got.value - one_d) <= 1e-12 * one_d


@pytest.mark.parametrize("sampler", ["ddim", "ddpm-accel"])
def test_agrees_with_the_gaussian_engine(sampler):
    """A product of Gaussians is Gaussian: KL equal to 1e-9 relative, TV within 4 combined standard errors."""
    marginals = [GaussianMixture([1.0], [[0.3]], [[[0.5]]]), GaussianMixture([1.0], [[-0.2]], [[[1.5]]])]
    product = ProductTarget(marginals)
    grid = make_grid("li2023", 16)
    exact = measure(product, get_sampler(sampler), grid, method="gaussian", mc_samples=40_000)
    got = measure(product, get_sampler(sampler), grid, method="product", samples=40_000)
    assert abs(got["kl"].value - exact["kl"].value) <= 1e-9 * exact["kl"].value
    noise = got["tv"].numerical_error + exact["tv"].numerical_error
    assert abs(got["tv"].value - exact["tv"].value) < 4 * noise


def test_agrees_with_flow_monte_carlo():
    """For a deterministic sampler on a two-mode product the two methods agree within 4 standard errors."""
    target = get_target("product-bimodal", 2)
    grid = make_grid("li2023", 16)
    prod = measure(target, get_sampler("ode-accel"), grid, samples=20_000)
    mc = measure(target, get_sampler("ode-accel"), grid, method="flow-mc", samples=4000, seed=2)
    assert prod["kl"].method == "product"
    assert abs(mc["kl"].value - prod["kl"].value) < 4 * (mc["kl"].numerical_error + prod["kl"].numerical_error)
    assert abs(mc["tv"].value - prod["tv"].value) < 4 * (mc["tv"].numerical_error + prod["tv"].numerical_error)


class _MixingSampler(Sampler):
    """A deliberately non-coordinate-wise sampler: each step adds a multiple of the coordinate mean."""

    info = SamplerInfo("mixing", stochastic=False, evals_per_step=1, order=1.0, reference="test only")

    def run(self, model, grid, x, noise=None):
        for i in range(grid.steps):
            x = x + 0.01 * x.mean(-1, keepdim=True) + 0.0 * model.eps(x, grid.abar[i])
        return x


def test_refuses_a_sampler_that_mixes_coordinates():
    target = get_target("product-bimodal", 3)
    grid = make_grid("li2023", 8)
    assert check_coordinatewise(target, get_sampler("ddpm"), grid) < 1e-12
    with pytest.raises(DivergenceError, match="does not act coordinate-wise"):
        METHODS["product"](target, _MixingSampler(), grid)


def test_piecewise_linear_draws():
    """Draws from a tabulated density have its moments (within 5 standard errors) and its log density."""
    from exact.product import _draws_piecewise_linear

    z = torch.linspace(-3.0, 5.0, 801, dtype=DTYPE)
    p = torch.exp(-0.5 * (z - 1) ** 2 / 0.64) + 0.3 * torch.exp(-0.5 * (z + 1.5) ** 2 / 0.09)
    y, log_p = _draws_piecewise_linear(z, p, 100_000, torch.Generator().manual_seed(0))
    h = float(z[1] - z[0])
    weights = p / (p.sum() * h)  # fine grid: Riemann moments are accurate to O(h^2)
    mean = float((z * weights).sum() * h)
    var = float(((z - mean) ** 2 * weights).sum() * h)
    assert abs(float(y.mean()) - mean) < 5 * (var / 100_000) ** 0.5
    assert abs(float(y.var()) / var - 1) < 0.02
    idx = ((y - z[0]) / h).floor().long()
    t = (y - z[idx]) / h
    linear = p[idx] + (p[idx + 1] - p[idx]) * t
    total = float((0.5 * (p[:-1] + p[1:])).sum()) * h
    assert torch.allclose(log_p, torch.log(linear / total), atol=1e-10)
