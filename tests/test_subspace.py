"""Subspace targets (theory.subspace) and their engine (exact.subspace)."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from scipy.stats import chi2

from exact import METHODS, DivergenceError, choose_method, measure
from exact.grid_1d_kernel import grid_1d_kernel
from exact.subspace import check_equivariance
from samplers import get_sampler
from samplers.base import Sampler, SamplerInfo
from theory.catalog import get_target
from theory.product import ProductTarget
from theory.schedules import make_grid
from theory.subspace import SubspaceTarget, find_subspace
from theory.targets import DTYPE, GaussianMixture, TargetError


def _shifted_gaussian_core_target(d: int) -> SubspaceTarget:
    """A Gaussian core in a random plane of R^d, floor 0.05, and a shift off the plane."""
    core = GaussianMixture([1.0], [[0.5, -0.3]], [[[0.4, 0.1], [0.1, 0.2]]], "plane")
    base = SubspaceTarget(core, d, 0.05, seed=3)
    shift = torch.randn(d, dtype=DTYPE, generator=torch.Generator().manual_seed(9))
    shift = 0.8 * (shift - base.basis @ (base.basis.T @ shift))
    return SubspaceTarget(core, d, 0.05, basis=base.basis, shift=shift)


# ---------------------------------------------------------------------------- the target
@pytest.mark.parametrize("name,d", [("subspace", 3), ("subspace:2", 5), ("subspace-product:2", 4), ("subspace:3", 3)])
def test_matches_the_explicit_mixture(name, d):
    """log_prob, score, eps, denoiser and the score Jacobian (O(d k) formulas) equal those of the explicit rotated
    mixture; so do the mean and covariance."""
    target = get_target(name, d)
    mixture = target.to_mixture()
    x = mixture.sample(8, 0.5, torch.Generator().manual_seed(1))
    for abar in (0.2, 0.7, 1 - 1e-4):
        for fn in ("log_prob", "score", "eps", "denoiser", "score_jacobian"):
            torch.testing.assert_close(getattr(target, fn)(x, abar), getattr(mixture, fn)(x, abar),
                                       rtol=1e-9, atol=1e-9, msg=fn)
    torch.testing.assert_close(target.mean(0.4), mixture.mean(0.4))
    torch.testing.assert_close(target.covariance(0.4), mixture.covariance(0.4))


def test_shifted_target_and_its_draws():
    """With a shift off the subspace: densities match the explicit mixture, and 40k draws have its mean and
    covariance (5 standard errors; covariance to 3%)."""
    target = _shifted_gaussian_core_target(6)
    mixture = target.to_mixture()
    x = target.sample(40_000, 0.6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(target.log_prob(x[:50], 0.6), mixture.log_prob(x[:50], 0.6), rtol=1e-10, atol=1e-10)
    cov = mixture.covariance(0.6)
    assert torch.all((x.mean(0) - mixture.mean(0.6)).abs() < 5 * torch.sqrt(torch.diagonal(cov) / 40_000))
    assert float((torch.cov(x.T) - cov).abs().max()) < 0.03 * float(torch.diagonal(cov).max())


def test_bad_input_names_the_value():
    core = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [[[0.2, 0.0], [0.0, 0.1]]] * 2)
    with pytest.raises(TargetError, match="k = 2 > d = 1"):
        SubspaceTarget(core, 1)
    with pytest.raises(TargetError, match="k = 3 > d = 2"):
        get_target("subspace:3", 2)
    with pytest.raises(TargetError, match="k >= 1, got k = 0"):
        get_target("subspace:0", 4)
    with pytest.raises(TargetError, match="k >= 1, got k = -2"):
        get_target("subspace:-2", 4)
    with pytest.raises(TargetError, match="must be an integer, got 'two'"):
        get_target("subspace:two", 4)
    shear = torch.eye(3, dtype=DTYPE)
    shear[0, 1] = 0.25
    with pytest.raises(TargetError, match=r"rotation is not orthogonal: max \|Q\^T Q - I\| = 0.25"):
        SubspaceTarget(core, 3, rotation=shear)
    with pytest.raises(TargetError, match="not orthonormal"):
        SubspaceTarget(core, 3, basis=2 * torch.eye(3, dtype=DTYPE)[:, :2])
    with pytest.raises(TargetError, match="complement"):
        SubspaceTarget(core, 3, basis=torch.eye(3, dtype=DTYPE)[:, :2], shift=[1.0, 0.0, 0.0])
    with pytest.raises(TargetError, match="floor"):
        SubspaceTarget(core, 3, floor=-0.1)


def test_a_given_rotation_is_used():
    """A user-given orthogonal matrix: its first k columns are the subspace."""
    Q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(2)))
    target = SubspaceTarget(get_target("mix1d"), 4, 0.1, rotation=Q)
    torch.testing.assert_close(target.basis, Q[:, :1])
    x = target.sample(5, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(target.log_prob(x, 0.5), target.to_mixture().log_prob(x, 0.5), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------- recognising plain mixtures
def test_json_mixture_is_recognised(tmp_path):
    """A plain JSON mixture with the structure (shared floor, k-dimensional span, a shift) goes to the subspace
    engine on its own, and measures as the SubspaceTarget it came from."""
    core = GaussianMixture([0.4, 0.6], [[-1.0], [1.2]], [[[0.2]], [[0.35]]], "line")
    basis = torch.tensor([[0.6], [0.0], [0.8]], dtype=DTYPE)
    original = SubspaceTarget(core, 3, 0.05, basis=basis, shift=[0.8, 0.5, -0.6])
    path = tmp_path / "rotated.json"
    path.write_text(json.dumps(original.to_mixture().to_dict()))
    plain = get_target(str(path))
    assert isinstance(plain, GaussianMixture)
    found = find_subspace(plain)
    assert found is not None and found.k == 1 and abs(found.floor - 0.05) < 1e-12
    assert abs(found.shift_norm - math.sqrt(0.8**2 + 0.5**2 + 0.6**2)) < 1e-12
    grid = make_grid("li2023", 8)
    for name in ("ddim", "ddpm"):
        assert choose_method(plain, get_sampler(name)) == "subspace"
    got = measure(plain, get_sampler("ddim"), grid, samples=2000)
    want = measure(original, get_sampler("ddim"), grid, samples=2000)
    assert got["kl"].method == "subspace"
    assert abs(got["kl"].value - want["kl"].value) < 1e-9 * want["kl"].value


def test_structure_that_is_not_there_is_not_recognised():
    """No subspace in a full-rank mixture; none when one covariance breaks the structure by 1e-6; a k = 2 mixture
    is recognised but a stochastic sampler is refused there with a one-line reason."""
    assert find_subspace(get_target("mix2d")) is None
    assert find_subspace(get_target("mixture-diag", 6)) is None
    mixture = get_target("subspace:2", 5).to_mixture()
    covs = mixture.covs.clone()
    covs[0, 0, 4] += 1e-6
    covs[0, 4, 0] += 1e-6
    assert find_subspace(GaussianMixture(mixture.weights, mixture.means, covs)) is None
    assert find_subspace(mixture).k == 2
    assert choose_method(mixture, get_sampler("ode")) == "subspace"
    with pytest.raises(DivergenceError, match="neither one-dimensional, a product nor one Gaussian"):
        choose_method(mixture, get_sampler("ddpm"))


# ---------------------------------------------------------------------------- the rotation argument
def test_rotation_argument_against_flow_monte_carlo():
    """d = 3, k = 1: flow Monte Carlo on the explicit rotated 3-D mixture agrees with the factorised engine (1-D
    grid engine + Gaussian closed form; TV by its own Monte Carlo) within 4 combined standard errors."""
    target = get_target("subspace", 3)
    grid = make_grid("li2023", 16)
    sampler = get_sampler("ddim")
    fact = measure(target, sampler, grid, samples=20_000)
    flow = measure(target.to_mixture(), sampler, grid, method="flow-mc", samples=20_000, seed=4)
    assert fact["kl"].details["core_method"] == "grid-1d-flow"
    for metric in ("kl", "tv"):
        noise = fact[metric].numerical_error + flow[metric].numerical_error
        assert abs(fact[metric].value - flow[metric].value) < 4 * noise, metric
        assert noise < 0.05 * fact[metric].value  # the comparison has teeth


def test_k2_deterministic_core_by_flow_monte_carlo():
    """k = 2 (not a product): KL = flow Monte Carlo in 2-D + Gaussian part; agrees with flow Monte Carlo on the
    explicit 4-D mixture."""
    target = get_target("subspace:2", 4)
    grid = make_grid("li2023", 16)
    sampler = get_sampler("ode-accel")
    fact = measure(target, sampler, grid, samples=10_000)
    flow = measure(target.to_mixture(), sampler, grid, method="flow-mc", samples=10_000, seed=7)
    assert fact["kl"].details["core_method"] == "flow-mc"
    for metric in ("kl", "tv"):
        noise = fact[metric].numerical_error + flow[metric].numerical_error
        assert abs(fact[metric].value - flow[metric].value) < 4 * noise, metric


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm-accel", "ode"])
def test_gaussian_core_agrees_with_the_gaussian_engine(sampler):
    """A Gaussian plane in R^24 with a shift: the whole target is one Gaussian, so the Gaussian engine on the
    explicit 24-D law is exact too. KL both ways to 1e-9 relative; TV within 4 combined standard errors."""
    target = _shifted_gaussian_core_target(24)
    grid = make_grid("li2023", 12)
    got = measure(target, get_sampler(sampler), grid, samples=40_000)
    exact = measure(target.to_mixture(), get_sampler(sampler), grid, method="gaussian", mc_samples=40_000)
    for metric in ("kl", "kl_reverse"):
        assert abs(got[metric].value - exact[metric].value) <= 1e-9 * exact[metric].value, metric
    noise = got["tv"].numerical_error + exact["tv"].numerical_error
    assert abs(got["tv"].value - exact["tv"].value) < 4 * noise
    assert noise < 0.05 * exact["tv"].value


def test_markov_sampler_on_a_mixture_line_matches_the_product_engine():
    """k = 1 with a three-mode core and ddpm: in the frame the target is the product core x N(0, s^2) x N(0, s^2),
    so the product engine on that product measures the same law (KL to 1e-8 relative: the Gaussian coordinates
    go through its 1-D kernel engine here and through the closed form there; TV within 4 combined errors)."""
    target = get_target("subspace", 3)
    grid = make_grid("li2023", 6)
    sampler = get_sampler("ddpm")
    got = measure(target, sampler, grid, samples=20_000)
    law = target.gaussian_part()[0][0]
    frame = measure(ProductTarget([target.core, law, law]), sampler, grid, method="product", samples=20_000, seed=5)
    assert abs(got["kl"].value - frame["kl"].value) <= 1e-8 * frame["kl"].value
    noise = got["tv"].numerical_error + frame["tv"].numerical_error
    assert abs(got["tv"].value - frame["tv"].value) < 4 * noise
    assert got["tv"].details["tabulation_error"] < 1e-4 * got["tv"].value


class _MixingSampler(Sampler):
    """Not rotation-equivariant: each step adds a multiple of the coordinate mean."""

    info = SamplerInfo("mixing", stochastic=False, evals_per_step=1, order=1.0, reference="test only")

    def run(self, model, grid, x, noise=None):
        for i in range(grid.steps):
            x = x + 0.01 * x.mean(-1, keepdim=True) + 0.0 * model.eps(x, grid.abar[i])
        return x


def test_refuses_a_sampler_that_is_not_rotation_equivariant():
    target = get_target("subspace", 4)
    grid = make_grid("li2023", 8)
    assert check_equivariance(target, get_sampler("ddpm"), grid) < 1e-12
    with pytest.raises(DivergenceError, match="not rotation-equivariant"):
        METHODS["subspace"](target, _MixingSampler(), grid)


# ---------------------------------------------------------------------------- high dimension
def _isotropic_gaussian_tv(n: int, var_p: float, var_q: float) -> float:
    """TV between N(0, var_p I_n) and N(0, var_q I_n): {p > q} is a ball |z|^2 < c, so both masses are chi^2 CDFs."""
    c = n * math.log(var_q / var_p) / (1 / var_p - 1 / var_q)
    return abs(chi2.cdf(c / var_p, n) - chi2.cdf(c / var_q, n))


@pytest.mark.parametrize("d", [64, 4096])
@pytest.mark.parametrize("sampler", ["ddpm", "ddpm-accel"])
def test_stochastic_samplers_in_high_dimension(sampler, d):
    """d up to 4096, k = 1: the premise holds in d dimensions (the full run equals the block runs), KL is the core's
    plus d - 1 equal Gaussian terms, and TV of the product lies between the larger of its two factors' TVs (core:
    1-D kernel engine; complement: chi^2 closed form) and their sum (TV of a product is subadditive). At d = 4096
    and T = 5 every TV here is 1 to rounding (KL ~ 300 to 2700); d = 64 with ddpm-accel is the informative case."""
    target = get_target("subspace", d)
    grid = make_grid("li2023", 5)
    s = get_sampler(sampler)
    out = measure(target, s, grid, samples=4000)
    assert out["kl"].details["equivariance_gap"] < 1e-9
    core = grid_1d_kernel(target.core, s, grid)
    gauss = measure(target.gaussian_part()[0][0], s, grid, method="gaussian")
    assert abs(out["kl"].value - (core["kl"].value + (d - 1) * gauss["kl"].value)) < 1e-9 * out["kl"].value
    var_p, var_q = gauss["kl"].details["cov"][0][0], float(target.complement_variance(grid.abar[-1]))
    tv_gauss = _isotropic_gaussian_tv(d - 1, var_p, var_q)
    tv = out["tv"]
    lower = max(core["tv"].value, tv_gauss)
    upper = min(1.0, core["tv"].value + tv_gauss)
    slack = 4 * tv.numerical_error + core["tv"].numerical_error + 1e-12
    assert lower - slack <= tv.value <= upper + slack


@functools.cache
def _kl_on_a_line(name: str, dim: int):
    """KL of `name` at T = 32 on data that lie exactly on a line in R^dim (floor 0). Cached: the d = 8 baseline is
    the same measurement for both cases below (a deterministic engine), so it runs once, not once per case."""
    from theory.subspace import subspace_family

    return measure(subspace_family(dim, 1, product_core=True, floor=0.0), get_sampler(name),
                   make_grid("li2023", 32))["kl"]


@pytest.mark.parametrize("d", [64, 1024])
def test_posterior_variance_ddpm_transports_empty_directions_exactly(d):
    """On data that lie exactly on a line (floor 0), ddpm-posterior's output law in each empty direction is the
    exact one, so its KL does not depend on d at all; ddpm's (variance (1 - alpha) / alpha) adds a fixed KL per
    empty direction."""
    kls = {name: [_kl_on_a_line(name, dim) for dim in (8, d)] for name in ("ddpm-posterior", "ddpm")}
    low, high = kls["ddpm-posterior"]
    assert abs(high.value - low.value) <= 1e-9 * low.value + high.numerical_error + low.numerical_error, (low, high)
    assert kls["ddpm"][1].value > (d / 8) * 0.5 * kls["ddpm"][0].value  # about linear in d


def test_the_named_families_are_what_their_docstrings_state():
    """subspace:<k> for k > 1 has its three core means at distance 1.5 from the origin (1.5 times unit random
    directions); without a dimension the subspace and isotropic families live in R^(k+1)."""
    from theory.subspace import isotropic_mixture, subspace_family

    for k in (2, 3):
        core = subspace_family(k + 2, k).core
        torch.testing.assert_close(torch.linalg.vector_norm(core.means, dim=-1),
                                   torch.full((3,), 1.5, dtype=torch.float64), rtol=1e-12, atol=1e-12)
        assert subspace_family(None, k).d == k + 1
        assert isotropic_mixture(None, 2, k=k).d == k + 1
