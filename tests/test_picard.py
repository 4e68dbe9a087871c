"""Parallel Picard sampling of the probability-flow ODE (samplers.picard) and the sequential-round counter
(CountingModel.parallel, Sampler.sequential_rounds): the fixed point is DDIM, reached exactly after B sweeps and
approached geometrically before; both costs are counted by running; with PIADM's fixed number of blocks a fixed K
does not converge as T grows. (Declared orders: tests/test_orders.py.)"""

from __future__ import annotations

import math

import pytest
import torch

from exact import measure
from samplers import CountingModel, ExactModel, SamplerError, get_sampler
from samplers.picard import PicardODE
from theory.bounds import theorems_for
from theory.catalog import get_target
from theory.schedules import make_grid


def _start(T: int = 33, n: int = 64):
    target, grid = get_target("mix1d"), make_grid("li2023", T)
    return target, grid, target.sample(n, grid.abar[0], torch.Generator().manual_seed(0))


def test_picard_is_ddim_once_every_block_has_had_as_many_sweeps_as_steps():
    """After sweep k the block's nodes 0 .. k are exact, so K >= B sweeps give sequential DDIM (to rounding), and one
    sweep over one-step blocks is DDIM itself."""
    target, grid, x = _start()
    ddim = get_sampler("ddim")(target, grid, x)
    scale = float(ddim.abs().max())
    for K, B in ((1, 1), (4, 4), (8, 8), (9, 8), (32, 32), (40, 64)):
        gap = float((get_sampler(f"picard:{K},{B}")(target, grid, x) - ddim).abs().max())
        assert gap < 1e-13 * scale, (K, B, gap)


def test_each_sweep_shrinks_the_gap_to_ddim_geometrically():
    """Blocks of 8 steps on the li2023 grid (T = 33): each sweep at least halves the largest gap to DDIM (measured
    ratios 0.41, 0.25, 0.39, 0.08, 0.11, 0.02), and the eighth sweep closes it."""
    target, grid, x = _start()
    ddim = get_sampler("ddim")(target, grid, x)
    gaps = [float((get_sampler(f"picard:{K},8")(target, grid, x) - ddim).abs().max()) for K in range(1, 9)]
    assert gaps[0] > 0.1, gaps  # one sweep is really not DDIM
    for K in range(1, 7):
        assert gaps[K] < 0.5 * gaps[K - 1], (K + 1, gaps)
    assert gaps[7] < 1e-12, gaps


@pytest.mark.parametrize("K,B,T", [(1, 8, 33), (3, 8, 33), (2, 5, 33), (4, 7, 9), (2, 100, 17), (3, 1, 9)])
def test_costs_are_counted_by_running(K, B, T):
    """NFE = K x steps (every node is evaluated in every sweep) and sequential rounds = K x blocks (one round per
    sweep), counted by Sampler.nfe / sequential_rounds and by a real run on a target; a sequential sampler spends
    one round per evaluation."""
    sampler, grid = get_sampler(f"picard:{K},{B}"), make_grid("li2023", T)
    blocks = math.ceil(grid.steps / B)
    assert sampler.nfe(grid) == K * grid.steps
    assert sampler.sequential_rounds(grid) == K * blocks
    target, _, x = _start(T, 3)
    model = CountingModel(ExactModel(target))
    sampler(model, grid, x)
    assert (model.nfe, model.rounds) == (K * grid.steps, K * blocks)
    for name in ("ddim", "heun", "ode-accel"):
        other = get_sampler(name)
        assert other.sequential_rounds(grid) == other.nfe(grid), name


def test_a_parallel_block_is_one_round_and_nests():
    model = CountingModel(ExactModel(get_target("mix1d")))
    x, abar = torch.zeros(2, 1, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    model.eps(x, abar)
    with model.parallel():
        for _ in range(3):
            model.eps(x, abar)
        with model.parallel():  # part of the outer block
            model.score(x, abar)
    with model.parallel():  # nothing evaluated: no round
        pass
    model.eps_and_features(x, abar)
    assert (model.nfe, model.rounds) == (6, 3)


def test_picard_runs_on_batches_of_any_shape_and_is_deterministic():
    target, grid, _ = _start(9)
    model = ExactModel(target)

    class Flat:  # the model sees images (n, 1, 2, 2); the target is 1-D per pixel via the mixture's own eps
        def eps(self, x, abar):
            return model.eps(x.reshape(-1, 1), abar).reshape(x.shape)

    x = torch.randn(3, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sampler = get_sampler("picard")
    a, b = sampler(Flat(), grid, x), sampler(Flat(), grid, x)
    assert a.shape == x.shape and torch.equal(a, b)
    per_pixel = sampler(target, grid, x.reshape(-1, 1)).reshape(x.shape)
    assert torch.allclose(a, per_pixel, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name,named", [
    ("picard:0,4", "0"), ("picard:2,0", "0"), ("picard:-1", "-1"), ("picard:2.5", "2.5"), ("picard:2,x", "x"),
    ("picard:1,2,3", "1,2,3"), ("picard:,4", ""), ("picard:3,", ""),
])
def test_bad_picard_options_are_one_line_naming_the_value(name, named):
    with pytest.raises(SamplerError) as caught:
        get_sampler(name)
    message = str(caught.value)
    assert "\n" not in message and f"got {named!r}" in message, message


def test_bad_constructor_arguments_are_refused():
    for K, B in ((0, 8), (2, 0), (True, 8), (2.0, 8), (2, "8")):
        with pytest.raises(SamplerError, match="positive integer"):
            PicardODE(K, B)


def test_the_piadm_theorem_covers_the_family():
    assert [t.id for t in theorems_for("picard")] == ["chen2024-piadm-ode"]
    assert [t.id for t in theorems_for("picard:5,16", "tv")] == ["chen2024-piadm-ode"]
    assert theorems_for("picard:5,16", "kl") == [] and theorems_for("picardy") == []
    assert get_sampler("picard").info.name == "picard" and get_sampler("picard:3").info.name == "picard:3,8"


def test_a_fixed_number_of_blocks_needs_sweeps_that_grow_with_T():
    """PIADM's regime: 4 blocks whatever T (B = (T - 1) / 4). One sweep does not converge: its TV at T = 129 is
    larger than at T = 17 and 10 times DDIM's; eight sweeps are within 2% of DDIM at T = 129 (measured: K = 1
    0.079 -> 0.229, DDIM 0.0154, K = 8 0.01540; a K x T table is in the README)."""
    target = get_target("mix1d")

    def tv(name, T):
        result = measure(target, get_sampler(name), make_grid("li2023", T), G=2048)["tv"]
        assert result.numerical_error < 1e-3 * result.value
        return result.value

    ddim = tv("ddim", 129)
    one_early, one_late = tv("picard:1,4", 17), tv("picard:1,32", 129)
    assert one_late > one_early and one_late > 10 * ddim, (one_early, one_late, ddim)
    assert abs(tv("picard:8,32", 129) / ddim - 1) < 0.02
