"""Perturbed scores of known size (samplers.perturbed) and the score-error study's plumbing."""

from __future__ import annotations

import math

import pytest
import torch

from exact import choose_method, measure
from exact.flow_mc import flow_mc
from samplers import get_sampler
from samplers.base import ExactModel, SamplerError
from samplers.perturbed import PerturbedModel, PerturbedTarget, SineField, score_error_sizes
from theory.catalog import get_target
from theory.schedules import make_grid
from theory.targets import DTYPE, GaussianMixture


def test_sizes_of_a_high_frequency_field():
    """At high frequency E sin^2 = 1/2 and E|cos| = 2/pi under any smooth law: eps_score = a / sqrt(2) and
    eps_Jacobi = 2 a omega / pi in d = 1, within 3%."""
    a, omega = 0.01, 200.0
    sizes = score_error_sizes(get_target("mix1d"), SineField(a, omega), make_grid("li2023", 16), samples=20_000)
    assert abs(sizes["eps_score"] / (a / math.sqrt(2)) - 1) < 0.03
    assert abs(sizes["eps_jacobi"] / (2 * a * omega / math.pi) - 1) < 0.03


def test_perturbed_model_and_target_agree():
    """eps_hat = eps - sqrt(1 - abar) delta, the same through the Model wrapper and the target proxy; the law
    (log_prob) is the exact one; the score Jacobian gains the field's derivative."""
    target = get_target("mixture-diag", 3)
    field = SineField(0.05, 7.0)
    proxy = PerturbedTarget(target, field)
    model = PerturbedModel(ExactModel(target), field)
    x = torch.randn(9, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    abar = torch.tensor(0.4, dtype=DTYPE)
    expected = target.eps(x, abar) - math.sqrt(0.6) * field(x)
    assert torch.allclose(model.eps(x, abar), expected, atol=1e-14)
    assert torch.allclose(proxy.eps(x, abar), expected, atol=1e-14)
    assert torch.equal(proxy.log_prob(x, abar), target.log_prob(x, abar))
    jac = proxy.score_jacobian(x, abar) - target.score_jacobian(x, abar)
    assert torch.allclose(torch.diagonal(jac, dim1=-2, dim2=-1), 0.35 * torch.cos(7.0 * x + 0.3), atol=1e-13)


def test_engines_refuse_the_gaussian_shortcut():
    """A perturbed score is not affine: the Gaussian engine must not be chosen for a perturbed Gaussian."""
    proxy = PerturbedTarget(get_target("gaussian", 3), SineField(0.01))
    assert choose_method(proxy, get_sampler("ode")) == "flow-mc"
    assert choose_method(PerturbedTarget(get_target("std-normal", 3), SineField(0.01)), get_sampler("ddpm")) == "product"


def test_flow_mc_through_either_wrapper_gives_the_same_numbers():
    target = get_target("mixture-diag", 2)
    grid = make_grid("li2023", 8)
    field = SineField(0.05, 3.0)
    via_model = flow_mc(target, get_sampler("ddim"), grid, samples=400, seed=1,
                        model=PerturbedModel(ExactModel(target), field))
    via_target = flow_mc(PerturbedTarget(target, field), get_sampler("ddim"), grid, samples=400, seed=1)
    assert via_model["kl"].value == pytest.approx(via_target["kl"].value, rel=1e-12)


def test_zero_field_reproduces_the_exact_error():
    target = get_target("mix1d")
    grid = make_grid("li2023", 12)
    exact = measure(target, get_sampler("ddpm"), grid)
    zero = measure(PerturbedTarget(target, SineField(0.0)), get_sampler("ddpm"), grid)
    assert zero["tv"].value == pytest.approx(exact["tv"].value, rel=1e-12)


def test_error_grows_with_a_smooth_field():
    """DDIM is exact for a point mass (its denoiser is constant), so with a perturbed score all of the error is the
    perturbation's: KL of second order in the amplitude, doubling a multiplies it by 4 (within 10%)."""
    target = GaussianMixture([1.0], [[0.0]], [[[0.0]]], "point")
    grid = make_grid("li2023", 12)
    sampler = get_sampler("ddim")
    assert measure(target, sampler, grid)["kl"].value < 1e-20
    kl = [measure(PerturbedTarget(target, SineField(a)), sampler, grid)["kl"].value for a in (0.01, 0.02)]
    assert kl[0] > 0
    assert 3.6 < kl[1] / kl[0] < 4.4


def test_bad_fields_are_refused():
    with pytest.raises(SamplerError, match="amplitude"):
        SineField(-1.0)
    with pytest.raises(SamplerError, match="omega"):
        SineField(0.1, omega=0.0)


def test_study_cli_rejects_bad_input(tmp_path):
    from studies import dimension, score_error

    with pytest.raises(SystemExit) as err:
        score_error.main(["--T", "1", "--out", str(tmp_path)])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        dimension.main(["--d", "0", "--out", str(tmp_path)])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        score_error.main(["--target", "nope", "--out", str(tmp_path), "--no-plot"])
    assert err.value.code == 2


def test_the_perturbed_target_keeps_tweedie_and_eps_consistent_with_its_score():
    """For the perturbed law, eps = -sqrt(1 - abar) score and the denoiser (x + (1 - abar) score) / sqrt(abar) =
    (x - sqrt(1 - abar) eps) / sqrt(abar), with the perturbed score (the exact one plus the field)."""
    target = PerturbedTarget(get_target("mix1d"), SineField(0.1, 2.0))
    x = torch.linspace(-3, 3, 11, dtype=torch.float64)[:, None]
    for abar in (0.05, 0.5, 0.97):
        score = target.base.score(x, abar) + target.field(x, abar)
        torch.testing.assert_close(target.score(x, abar), score, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(target.eps(x, abar), -math.sqrt(1 - abar) * score, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(target.denoiser(x, abar), (x + (1 - abar) * score) / math.sqrt(abar),
                                   rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(target.denoiser(x, abar),
                                   (x - math.sqrt(1 - abar) * target.eps(x, abar)) / math.sqrt(abar),
                                   rtol=1e-13, atol=1e-13)
