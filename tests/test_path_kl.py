"""Path KL (exact.path_kl) and the reverse conditionals it rests on (theory.posterior)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from exact import DivergenceError, measure
from exact.gaussian import gaussian_kl
from exact.path_kl import path_kl_gaussian
from samplers import get_sampler
from samplers.base import CountingModel, ExactModel
from tests.strategies import mixtures
from theory.catalog import get_target
from theory.posterior import reverse_log_prob, reverse_mixture_log_prob
from theory.schedules import make_grid
from theory.subspace import SubspaceTarget
from theory.targets import DTYPE, GaussianMixture


# ---------------------------------------------------------------------------- the reverse conditional
@settings(max_examples=20, deadline=None)
@given(mixtures(), st.floats(0.05, 0.9), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_bayes_form_equals_the_explicit_mixture(target, abar_t, ratio, seed):
    """log q(x_s | x_t) by Bayes (B) equals the explicit Gaussian mixture (M) of theory.posterior."""
    abar_s = abar_t + ratio * (1 - abar_t)  # abar_t < abar_s < 1
    gen = torch.Generator().manual_seed(seed)
    x_s = target.sample(6, abar_s, gen)
    alpha = abar_t / abar_s
    x_t = math.sqrt(alpha) * x_s + math.sqrt(1 - alpha) * torch.randn(x_s.shape, dtype=DTYPE, generator=gen)
    bayes = reverse_log_prob(target, x_s, x_t, abar_s, abar_t)
    explicit = reverse_mixture_log_prob(target, x_s, x_t, abar_s, abar_t)
    torch.testing.assert_close(bayes, explicit, rtol=1e-9, atol=1e-9)


def test_reverse_conditional_integrates_to_one():
    """In 1-D the explicit mixture q(. | x_t) has mass one (trapezoid on a fine grid)."""
    target = get_target("mix1d")
    x_s = torch.linspace(-8, 8, 40001, dtype=DTYPE)[:, None]
    for x_t in (-2.0, 0.3, 1.7):
        dens = torch.exp(reverse_mixture_log_prob(target, x_s, torch.full_like(x_s, x_t), 0.8, 0.5))
        assert abs(float(torch.trapezoid(dens, x_s[:, 0])) - 1) < 1e-9


# ---------------------------------------------------------------------------- the Gaussian closed form
def _joint_forward(target: GaussianMixture, grid) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward process's joint law of (X_0, ..., X_N) on the grid's levels, built directly:
    E X_i = sqrt(a_i) mu, Cov(X_i, X_j) = sqrt(a_i / a_j) (a_j Sigma + (1 - a_j) I) for a_i <= a_j."""
    mu, Sigma = target.means[0], target.covs[0]
    d, a = target.d, grid.abar
    eye = torch.eye(d, dtype=DTYPE)
    n = a.numel()
    mean = torch.cat([torch.sqrt(a[i]) * mu for i in range(n)])
    cov = torch.zeros(n * d, n * d, dtype=DTYPE)
    for i in range(n):
        for j in range(i, n):
            block = torch.sqrt(a[i] / a[j]) * (a[j] * Sigma + (1 - a[j]) * eye)
            cov[i * d : (i + 1) * d, j * d : (j + 1) * d] = block
            cov[j * d : (j + 1) * d, i * d : (i + 1) * d] = block.T
    return mean, cov


def _joint_sampler(target: GaussianMixture, sampler, grid, init: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler chain's joint law: each X_i is an affine function of X_0's and every step's standard normals,
    X_i = c_i + L_i W; found by running the chain on the mean input and on each unit input."""
    d, steps = target.d, grid.steps
    if init == "exact":
        level = grid.abar[0]
        m0, S0 = math.sqrt(level) * target.means[0], level * target.covs[0] + (1 - level) * torch.eye(d, dtype=DTYPE)
    else:
        m0, S0 = torch.zeros(d, dtype=DTYPE), torch.eye(d, dtype=DTYPE)
    width = d * (steps + 1)  # the inputs W: X_0's d standard normals, then d per step
    model = CountingModel(ExactModel(target))
    transitions = list(sampler.transitions(model, grid))
    # Rows: the constant input (W = 0) and each unit vector of W; the chain is affine in W.
    W = torch.cat([torch.zeros(1, width, dtype=DTYPE), torch.eye(width, dtype=DTYPE)])
    x = m0 + W[:, :d] @ torch.linalg.cholesky(S0).T
    states = [x]
    for i, step in enumerate(transitions):
        x = step.map(x) + float(step.std) * W[:, d * (i + 1) : d * (i + 2)]
        states.append(x)
    path = torch.cat(states, 1)  # (1 + width, n d)
    mean, L = path[0], (path[1:] - path[0]).T
    return mean, L @ L.T


@pytest.mark.parametrize("init", ["exact", "gaussian"])
def test_closed_form_equals_the_joint_gaussian_kl(init):
    """The closed form (a sum of expected per-step Gaussian KLs) equals the KL between the two joint Gaussian laws of
    the whole path, built independently, in both directions."""
    target = get_target("gaussian", 2)
    grid = make_grid("li2023", 5)
    sampler = get_sampler("ddpm")
    forward, backward = path_kl_gaussian(target, sampler, grid, init)
    mq, Sq = _joint_forward(target, grid)
    mp, Sp = _joint_sampler(target, sampler, grid, init)
    assert abs(forward - gaussian_kl(mq, Sq, mp, Sp)) < 1e-8 * forward
    assert abs(backward - gaussian_kl(mp, Sp, mq, Sq)) < 1e-8 * backward


@pytest.mark.parametrize("init", ["exact", "gaussian"])
def test_monte_carlo_agrees_with_the_closed_form(init):
    """On a Gaussian target, the Monte Carlo path KLs agree with the closed form within 4 standard errors."""
    target = get_target("gaussian", 2)
    grid = make_grid("li2023", 8)
    sampler = get_sampler("ddpm")
    exact = measure(target, sampler, grid, init=init, method="path-kl", compare=False)
    mc = measure(target, sampler, grid, init=init, method="path-kl", mc=True, samples=20_000, seed=3, compare=False)
    for metric in ("kl_path", "kl_path_sampler"):
        assert exact[metric].method == "path-kl-gaussian" and mc[metric].method == "path-kl-mc"
        assert abs(mc[metric].value - exact[metric].value) < 4 * mc[metric].numerical_error, metric
        assert mc[metric].numerical_error < 0.02 * exact[metric].value  # the check has teeth


def test_monte_carlo_on_a_high_dimensional_subspace_target():
    """A Gaussian core rotated into R^64 (Bayes form through SubspaceTarget.log_prob, O(d k) per point): Monte
    Carlo agrees with the closed form computed from the explicit 64-dimensional Gaussian."""
    core = GaussianMixture([1.0], [[0.6, -0.4]], [[[0.5, 0.1], [0.1, 0.3]]])
    target = SubspaceTarget(core, 64, floor=0.2, seed=5)
    grid = make_grid("li2023", 6)
    sampler = get_sampler("ddpm")
    forward, backward = path_kl_gaussian(target.to_mixture(), sampler, grid)
    mc = measure(target, sampler, grid, method="path-kl", mc=True, samples=4000, seed=1, compare=False)
    assert abs(mc["kl_path"].value - forward) < 4 * mc["kl_path"].numerical_error
    assert abs(mc["kl_path_sampler"].value - backward) < 4 * mc["kl_path_sampler"].numerical_error


# ---------------------------------------------------------------------------- mixtures
def test_one_step_path_kl_by_quadrature():
    """One step (T = 2 levels) on a three-mode 1-D target: kl_path = E_{x ~ q_T} KL(q(. | x) || p(. | x)) by a
    two-dimensional trapezoid rule agrees with the Monte Carlo estimate within 4 standard errors."""
    target = get_target("mix1d")
    grid = make_grid("li2023", 2)
    sampler = get_sampler("ddpm")
    a_t, a_s = grid.abar[0], grid.abar[1]
    (step,) = list(sampler.transitions(CountingModel(ExactModel(target)), grid))
    x_t = torch.linspace(-7, 7, 351, dtype=DTYPE)  # converged: 4x the nodes each way moves it by 6e-14
    x_s = torch.linspace(-8, 8, 801, dtype=DTYPE)
    mean, std = step.map(x_t[:, None])[:, 0], float(step.std)
    X_s, X_t = x_s[None, :].expand(len(x_t), -1), x_t[:, None].expand(-1, len(x_s))
    log_q = reverse_mixture_log_prob(target, X_s.reshape(-1, 1), X_t.reshape(-1, 1), a_s, a_t).reshape(X_s.shape)
    log_p = -0.5 * (X_s - mean[:, None]) ** 2 / std**2 - 0.5 * math.log(2 * math.pi * std**2)
    inner = torch.trapezoid(torch.exp(log_q) * (log_q - log_p), x_s, dim=1)
    quadrature = float(torch.trapezoid(torch.exp(target.log_prob(x_t[:, None], a_t)) * inner, x_t))
    mc = measure(target, sampler, grid, method="path-kl", samples=40_000, seed=0, compare=False)["kl_path"]
    assert abs(mc.value - quadrature) < 4 * mc.numerical_error
    assert mc.numerical_error < 0.05 * quadrature


@settings(max_examples=4, deadline=None)
@given(mixtures(d=st.just(1), K=st.integers(1, 3), kinds=("isotropic",), min_var=0.1), st.integers(3, 5))
def test_path_kl_never_below_the_output_kl(target, T):
    """Data processing: kl_path >= KL(q_out || p_out) and kl_path_sampler >= KL(p_out || q_out) (exact 1-D output
    KLs from the tabulated density), up to 4 standard errors of the estimate."""
    out = measure(target, get_sampler("ddpm"), make_grid("li2023", T), method="path-kl", samples=2000, seed=0)
    for metric in ("kl_path", "kl_path_sampler"):
        m = out[metric]
        assert m.details["gap"] + 4 * m.numerical_error + m.details["output_kl_error"] >= 0, (metric, m)


def test_refusals_are_one_line():
    target, grid = get_target("gaussian", 2), make_grid("li2023", 6)
    for name, text in (("ddpm-accel", "one Gaussian transition per grid step"), ("ode", "deterministic")):
        with pytest.raises(DivergenceError, match=text) as err:
            measure(target, get_sampler(name), grid, method="path-kl")
        assert "\n" not in str(err.value)
