"""Exact targets: the score is the gradient of the log-density, Tweedie's identity, Jacobians, sampling, input checks."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import levels, mixtures
from theory.catalog import get_target
from theory.targets import DTYPE, GaussianMixture, TargetError

settings.register_profile("diffrates", max_examples=30, deadline=None)
settings.load_profile("diffrates")


def _points(target, abar, n=16, seed=0):
    return target.sample(n, abar, torch.Generator().manual_seed(seed))


@given(mixtures(), levels)
def test_score_is_gradient_of_log_density(target, abar):
    x = _points(target, abar).requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_prob(x, abar).sum(), x)
    torch.testing.assert_close(target.score(x.detach(), abar), grad, rtol=1e-9, atol=1e-9)


@given(mixtures(), levels)
def test_denoiser_is_posterior_mean(target, abar):
    """Tweedie: (x + (1 - abar) score) / sqrt(abar) equals E[x0 | x], computed here from the Gaussian posterior of
    each component: E[x0 | x, k] = mu_k + sqrt(abar) Sigma_k C_k^-1 (x - sqrt(abar) mu_k)."""
    x = _points(target, abar)
    eye = torch.eye(target.d, dtype=DTYPE)
    r = target.responsibilities(x, abar)
    posterior = torch.zeros_like(x)
    for k in range(target.K):
        C = abar * target.covs[k] + (1 - abar) * eye
        shift = torch.linalg.solve(C, (x - math.sqrt(abar) * target.means[k]).T).T
        posterior += r[:, k : k + 1] * (target.means[k] + math.sqrt(abar) * shift @ target.covs[k].T)
    torch.testing.assert_close(target.denoiser(x, abar), posterior, rtol=1e-8, atol=1e-8)


@given(mixtures(), levels)
def test_score_jacobian_matches_autograd(target, abar):
    x = _points(target, abar, n=4)
    auto = torch.stack([torch.autograd.functional.jacobian(lambda v: target.score(v[None], abar)[0], xi) for xi in x])
    torch.testing.assert_close(target.score_jacobian(x, abar), auto, rtol=1e-8, atol=1e-8)


@given(mixtures(d=st.just(1)), levels)
def test_cdf_integrates_the_density(target, abar):
    lo, hi = target.support(abar, 10.0)
    grid = torch.linspace(lo, hi, 20001, dtype=DTYPE)
    dens = torch.exp(target.log_prob(grid[:, None], abar))
    cumulative = torch.cumulative_trapezoid(dens, grid)
    torch.testing.assert_close(cumulative[-1], torch.tensor(1.0, dtype=DTYPE), rtol=0, atol=1e-6)
    mid = 10000
    assert abs(float(target.cdf(grid[mid : mid + 1], abar)) - float(cumulative[mid - 1])) < 1e-6


@pytest.mark.parametrize("name,d", [("mix1d", None), ("mix2d", None), ("gaussian", 4)])
def test_sampling_matches_exact_moments(name, d):
    target = get_target(name, d=d)
    abar = 0.6
    x = target.sample(200_000, abar, torch.Generator().manual_seed(3))
    mean, cov = target.mean(abar), target.covariance(abar)
    se = torch.sqrt(torch.diagonal(cov) / x.shape[0])
    assert torch.all((x.mean(0) - mean).abs() < 5 * se)
    assert torch.allclose(torch.cov(x.T).reshape(cov.shape), cov, atol=0.03)


@pytest.mark.parametrize(
    "weights,means,covs,needle",
    [
        ([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "sum to one"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, -0.5]]], "not positive semi-definite"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.3], [0.0, 1.0]]], "not symmetric"),
        ([1.0], [[0.0]], [[[1.0, 0.0], [0.0, 1.0]]], "covs must be"),
        ([-0.5, 1.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "non-negative"),
    ],
)
def test_bad_targets_are_refused_with_the_bad_value_named(weights, means, covs, needle):
    with pytest.raises(TargetError, match=needle):
        GaussianMixture(weights, means, covs)


def test_json_round_trip_and_malformed_file(tmp_path):
    target = get_target("mix2d")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(target.to_dict()))
    again = get_target(str(path))
    torch.testing.assert_close(again.log_prob(torch.zeros(1, 2, dtype=DTYPE), 0.5),
                               target.log_prob(torch.zeros(1, 2, dtype=DTYPE), 0.5))
    bad = tmp_path / "bad.json"
    bad.write_text("{weights: [1.0]")
    with pytest.raises(TargetError, match="malformed JSON"):
        get_target(str(bad))
    with pytest.raises(TargetError, match="unknown target 'nope'"):
        get_target("nope")


def test_singular_target_is_finite_below_the_data_level():
    target = get_target("points1d")
    x = torch.linspace(-3, 3, 7, dtype=DTYPE)[:, None]
    assert torch.all(torch.isfinite(target.score(x, 0.999)))
    with pytest.raises(TargetError, match="singular"):
        target.score(x, 1.0)


def test_without_a_level_the_density_and_the_draws_are_the_data_law():
    """abar defaults to 1 (the data, q_0) in log_prob and sample: on N(3, 4) the log-density is the normal closed
    form, and 40000 seeded draws have mean 3 and variance 4 (at another level, e.g. abar = 2 taken literally, the
    law would be N(3 sqrt 2, 7))."""
    target = GaussianMixture([1.0], [[3.0]], [[[4.0]]])
    x = torch.tensor([[-1.0], [0.5], [3.0], [6.0]], dtype=DTYPE)
    closed = -0.5 * (x[:, 0] - 3.0) ** 2 / 4.0 - 0.5 * math.log(2 * math.pi * 4.0)
    torch.testing.assert_close(target.log_prob(x), closed, rtol=1e-12, atol=1e-12)
    draws = target.sample(40000, generator=torch.Generator().manual_seed(0))[:, 0]
    assert abs(draws.mean().item() - 3.0) < 5 * 2.0 / math.sqrt(40000)
    assert abs(draws.var().item() - 4.0) < 5 * 4.0 * math.sqrt(2 / 40000)
