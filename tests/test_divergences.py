"""The exact engines: agreement with closed forms, error estimates that cover the actual deviation, refusals."""

import math

import pytest
import torch
from scipy import integrate, optimize, stats

from exact import DivergenceError, measure
from exact.gaussian import gaussian_kl, gaussian_tv_1d
from samplers import Sampler, SamplerInfo, get_sampler
from theory.catalog import get_target
from theory.schedules import make_grid
from theory.targets import DTYPE

DETERMINISTIC = ["ode", "ddim", "ode-accel"]
STOCHASTIC = ["ddpm", "ddpm-accel"]


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("T", [8, 64])
def test_flow_engine_matches_gaussian_closed_form(name, T):
    """metrics.md method 1 against method 3 on a 1-D Gaussian target: 1e-8 relative, covered by its estimate."""
    target, grid = get_target("gaussian"), make_grid("li2023", T)
    grid_result = measure(target, get_sampler(name), grid)
    closed = measure(target, get_sampler(name), grid, method="gaussian")
    for metric in ("tv", "kl"):
        got, ref = grid_result[metric], closed[metric]
        assert got.method == "grid-1d-flow" and ref.method == "gaussian"
        deviation = abs(got.value - ref.value)
        assert deviation <= 1e-8 * ref.value, (metric, got.value, ref.value)
        assert deviation <= got.numerical_error + ref.numerical_error, (metric, deviation, got.numerical_error)


@pytest.mark.parametrize("name", STOCHASTIC)
@pytest.mark.parametrize("T", [8, 64])
def test_kernel_engine_matches_gaussian_closed_form(name, T):
    """metrics.md method 2 against method 3: 1e-4 relative, covered by its own error estimate."""
    target, grid = get_target("gaussian"), make_grid("li2023", T)
    grid_result = measure(target, get_sampler(name), grid)
    closed = measure(target, get_sampler(name), grid, method="gaussian")
    for metric in ("tv", "kl"):
        got, ref = grid_result[metric], closed[metric]
        assert got.method == "grid-1d-kernel"
        deviation = abs(got.value - ref.value)
        assert deviation <= 1e-4 * ref.value, (metric, got.value, ref.value)
        assert deviation <= got.numerical_error + ref.numerical_error, (metric, deviation, got.numerical_error)


def test_gaussian_initialisation_matches_closed_form_too():
    target, grid = get_target("gaussian"), make_grid("li2023", 32)
    for name in ("ddim", "ddpm"):
        got = measure(target, get_sampler(name), grid, init="gaussian")["kl"]
        ref = measure(target, get_sampler(name), grid, init="gaussian", method="gaussian")["kl"]
        assert abs(got.value - ref.value) <= 1e-4 * ref.value


def test_closed_form_gaussian_divergences_against_quadrature():
    m1, s1, m2, s2 = 0.3, 0.8, -0.1, 1.3
    gap = lambda x: stats.norm.pdf(x, m1, s1) - stats.norm.pdf(x, m2, s2)  # noqa: E731
    xs = [-30 + 0.01 * i for i in range(6001)]
    kinks = [optimize.brentq(gap, a, b, xtol=1e-15) for a, b in zip(xs, xs[1:]) if gap(a) * gap(b) < 0]
    edges = [-30.0, *kinks, 30.0]
    tv_quad = sum(0.5 * abs(integrate.quad(gap, a, b, epsabs=1e-14, epsrel=1e-13)[0]) for a, b in zip(edges, edges[1:]))
    assert abs(gaussian_tv_1d(m1, s1, m2, s2) - tv_quad) < 1e-9
    kl_quad, _ = integrate.quad(lambda x: stats.norm.pdf(x, m1, s1) * (stats.norm.logpdf(x, m1, s1)
                                                                       - stats.norm.logpdf(x, m2, s2)), -30, 30)
    kl = gaussian_kl(torch.tensor([m1], dtype=DTYPE), torch.tensor([[s1**2]], dtype=DTYPE),
                     torch.tensor([m2], dtype=DTYPE), torch.tensor([[s2**2]], dtype=DTYPE))
    assert abs(kl - kl_quad) < 1e-10


@pytest.mark.parametrize("name", DETERMINISTIC + STOCHASTIC)
def test_errors_fall_as_T_doubles_once_T_is_moderate(name):
    target, sampler = get_target("mix1d"), get_sampler(name)
    values = {T: measure(target, sampler, make_grid("li2023", T)) for T in (64, 128, 256)}
    for metric in ("tv", "kl"):
        series = [values[T][metric].value for T in (64, 128, 256)]
        assert series[0] > series[1] > series[2], (metric, series)


class _Fold(Sampler):
    """A deliberately decreasing 1-D map (x -> -x): the change-of-variables method must refuse it."""

    info = SamplerInfo("fold", stochastic=False, evals_per_step=0, order=0.0, reference="test")

    def run(self, model, grid, x, noise=None):
        return -x


def test_non_monotone_map_is_refused_by_name():
    with pytest.raises(DivergenceError, match="not increasing"):
        measure(get_target("mix1d"), _Fold(), make_grid("li2023", 8))


def test_no_method_for_a_multimodal_stochastic_run_in_two_dimensions():
    with pytest.raises(DivergenceError, match="no exact method"):
        measure(get_target("mix2d"), get_sampler("ddpm"), make_grid("li2023", 8), method="auto")


def test_gaussian_engine_in_several_dimensions_reports_its_monte_carlo_error():
    target, grid = get_target("gaussian", d=3), make_grid("li2023", 32)
    out = measure(target, get_sampler("ddim"), grid, method="gaussian")
    assert out["tv"].method == "gaussian-mc" and 0 < out["tv"].numerical_error < 0.1 * out["tv"].value
    # Pinsker: TV <= sqrt(KL / 2), allowing for the Monte Carlo error of TV
    assert out["tv"].value - 3 * out["tv"].numerical_error <= math.sqrt(out["kl"].value / 2)


def test_kernel_engine_on_a_point_mass_matches_closed_form():
    """A singular target (q_1 is a Gaussian of width 1/T): the engine refines its grid and stays finite and exact."""
    from theory.targets import GaussianMixture

    target, grid = GaussianMixture([1.0], [[0.5]], [[[0.0]]], "point"), make_grid("li2023", 16)
    got = measure(target, get_sampler("ddpm"), grid)
    ref = measure(target, get_sampler("ddpm"), grid, method="gaussian")
    for metric in ("tv", "kl"):
        assert abs(got[metric].value - ref[metric].value) <= 1e-4 * ref[metric].value
