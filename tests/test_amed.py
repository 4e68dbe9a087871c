"""AMED-Solver, AMED-Plugin and the distillation trainer (samplers.amed)."""

from __future__ import annotations

import pytest
import torch

from samplers import get_sampler
from samplers.amed import (
    PLUGIN_BASES,
    AMEDPlugin,
    AMEDPredictor,
    AMEDSolver,
    heun_teacher,
    load_amed,
    refine_sigmas,
    save_predictor,
    train_amed,
)
from samplers.base import CountingModel, ExactModel, SamplerError
from samplers.solvers import EDMView
from theory.catalog import get_target
from theory.schedules import Grid, make_grid
from theory.targets import DTYPE

TARGET = get_target("mix1d")
X = torch.linspace(-2.5, 2.5, 9, dtype=DTYPE)[:, None]


def test_untrained_amed_is_the_exponential_midpoint():
    """r = 1/2, c = 1: AMED-Solver is DPM-Solver-2 with r = 1/2 (same map)."""
    grid = make_grid("time_uniform", 6, rho=1.0)
    assert torch.allclose(get_sampler("amed")(TARGET, grid, X), get_sampler("dpm-solver-2")(TARGET, grid, X),
                          rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("base", ["euler", "ipndm", "dpmpp-2m"])
def test_untrained_plugin_is_the_base_on_the_refined_grid(base):
    grid = make_grid("polynomial", 5)
    refined = Grid.from_sigmas(refine_sigmas(grid.sigma, 1), "refined")
    plugin = get_sampler(f"amed-plugin:{base}")(TARGET, grid, X)
    assert torch.allclose(plugin, get_sampler(base)(TARGET, refined, X), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", ["amed"] + [f"amed-plugin:{b}" for b in PLUGIN_BASES])
def test_two_evaluations_per_interval(name):
    grid = make_grid("polynomial", 5)
    assert get_sampler(name).nfe(grid) == 8
    assert get_sampler("afs:" + name).nfe(grid) == 7


def test_refined_grid_keeps_the_original_points():
    t = make_grid("polynomial", 4).sigma
    fine = refine_sigmas(t, 2)
    assert fine.numel() == 10 and torch.equal(fine[::3], t)
    assert torch.all(torch.diff(fine) < 0)


@pytest.fixture(scope="module")
def trained():
    grid = make_grid("time_uniform", 4, rho=1.0)
    predictor = train_amed(ExactModel(TARGET), "amed", grid, n_draws=2048, batch_size=128, seed=0)
    return grid, predictor


def _step_loss(predictor, grid, seed=7, n=2000):
    """The distillation objective on fresh noise: sum over steps of the mean squared distance between one student
    step from the teacher's point at t_n and the teacher's point at t_{n+1} (teacher: Heun, M = 1)."""
    from samplers.amed import amed_interval

    gen = torch.Generator().manual_seed(seed)
    view = EDMView(CountingModel(ExactModel(TARGET)))
    t = grid.sigma
    teacher = heun_teacher(view, t, TARGET.sample(n, grid.abar[0], gen) / torch.sqrt(grid.abar[0]), 1)
    total = 0.0
    with torch.no_grad():
        for k in range(t.numel() - 1):
            eps, feats = view.eps_and_features(teacher[k], t[k])
            r, c = predictor(t[k], t[k + 1], feats)
            step = amed_interval("amed", view, teacher[k], t[k], t[k + 1], r, c, eps, {})
            total += float(((step - teacher[k + 1]) ** 2).sum(1).mean())
    return total


def test_training_lowers_the_distillation_loss(trained):
    """Distillation lowers its own objective on fresh noise, and the predicted (r, c) stay in their ranges."""
    grid, predictor = trained
    before = _step_loss(AMEDPredictor(0), grid)
    after = _step_loss(predictor, grid)
    assert after < 0.9 * before, (before, after)
    for r, c in AMEDSolver(predictor).schedule(grid):
        assert 0 < r < 1 and 0.99 < c < 1.01


def test_save_and_reload_by_name_and_path(trained, tmp_path):
    grid, predictor = trained
    path = save_predictor(predictor, "mix1d-amed-T4", {"base": "amed"}, root=tmp_path)
    assert path.stat().st_size < 200_000
    reloaded = load_amed("mix1d-amed-T4", root=tmp_path)
    assert torch.equal(reloaded(TARGET, grid, X), AMEDSolver(predictor)(TARGET, grid, X))
    by_path = get_sampler(f"amed:{path}")
    assert torch.equal(by_path(TARGET, grid, X), reloaded(TARGET, grid, X))
    with pytest.raises(SamplerError, match="no trained AMED predictor"):
        load_amed("missing", root=tmp_path)


def test_plugin_training_and_features():
    """A plugin trains with the model's features (posterior weights, K = 3) and runs with them; a model without
    features gets zeros."""
    grid = make_grid("polynomial", 3)
    predictor = train_amed(ExactModel(TARGET), "amed-plugin:ipndm", grid, n_draws=256, batch_size=128,
                           features=True, seed=1)
    assert predictor.feature_dim == TARGET.K
    out = AMEDPlugin("ipndm", predictor)(TARGET, grid, X)
    assert torch.all(torch.isfinite(out))

    class NoFeatures:
        def eps(self, x, abar):
            return TARGET.eps(x, abar)

    assert torch.all(torch.isfinite(AMEDPlugin("ipndm", predictor)(NoFeatures(), grid, X)))


def test_bad_input_is_named():
    with pytest.raises(SamplerError, match="heun"):
        get_sampler("amed-plugin:heun")
    with pytest.raises(SamplerError, match="n_draws"):
        train_amed(ExactModel(TARGET), "amed", make_grid("polynomial", 3), n_draws=0)
    with pytest.raises(SamplerError, match="x_start"):
        train_amed(object.__new__(type("M", (), {"eps": lambda self, x, a: x})), "amed", make_grid("polynomial", 3))
    with pytest.raises(SamplerError, match="feature_dim"):
        AMEDPredictor(-1)


def test_a_predictor_with_one_feature_reads_it():
    """With feature_dim = 1 the predictor's (r, c) depend on the feature (here with heads set away from their zero
    start, which would hide any input), and r stays in (0, 1), c within 1 +- c_range."""
    from samplers.amed import AMEDPredictor

    torch.manual_seed(0)
    predictor = AMEDPredictor(feature_dim=1)
    for head in (predictor.head_r, predictor.head_c):
        torch.nn.init.normal_(head.weight)
    outputs = [predictor(1.0, 0.5, torch.full((3, 1), value, dtype=torch.float64)) for value in (-2.0, 3.0)]
    (r1, c1), (r2, c2) = outputs
    assert float((r1 - r2).abs()) > 1e-6 and float((c1 - c2).abs()) > 1e-9
    for r, c in outputs:
        assert 0 < float(r) < 1 and abs(float(c) - 1) <= predictor.c_range
