"""The theorems' shapes (theory/bounds.py) against the exponents each theorem declares: as T grows the shape falls
like T^-order log^log_power T (no log power where the statement has only a polylog, which the shape leaves out), and
in the regime where its leading term dominates it grows like d^d_power. Added for what mutation testing showed
unguarded (tests/mutation.py): a shape is data typed from a paper, and nothing held it to its declared rate."""

from __future__ import annotations

import math

import pytest

from theory.bounds import THEOREMS

LARGE_T = 1e40  # far past every lower-order term of every shape


def _slope(f, x: float, factor: float = 1.01) -> float:
    return math.log(f(x * factor) / f(x)) / math.log(factor)


@pytest.mark.parametrize("theorem", THEOREMS, ids=lambda t: t.id)
def test_shape_falls_at_the_declared_order_in_T(theorem):
    log_power = 0.0 if math.isnan(theorem.log_power) else theorem.log_power
    for d in (1.0, 16.0):
        slope = _slope(lambda T: theorem.shape(T, d), LARGE_T)
        assert abs(slope - (-theorem.order + log_power / math.log(LARGE_T))) < 2e-3, (theorem.id, d, slope)


@pytest.mark.parametrize("theorem", THEOREMS, ids=lambda t: t.id)
def test_shape_grows_at_the_declared_power_of_d(theorem):
    for d in (4.0, 64.0):
        slope = _slope(lambda dd: theorem.shape(LARGE_T, dd), d)
        assert abs(slope - theorem.d_power) < 2e-3, (theorem.id, d, slope)


# ---------------------------------------------------------------------------- the catalog's refusals and files
@pytest.mark.parametrize("name, fixed", [("mix1d", 1), ("mix2d", 2), ("points1d", 1)])
def test_a_fixed_dimension_target_refuses_another_d(name, fixed):
    from theory.catalog import get_target
    from theory.targets import TargetError

    assert get_target(name, d=fixed).d == fixed
    with pytest.raises(TargetError, match=f"fixed dimension {fixed}, not d = {fixed + 2}"):
        get_target(name, d=fixed + 2)


def test_a_target_file_is_read_by_path_whatever_its_suffix(tmp_path):
    import json

    from theory.catalog import get_target
    from theory.targets import TargetError

    path = tmp_path / "two-modes.target"
    path.write_text(json.dumps({"weights": [0.4, 0.6], "means": [[-1.0], [2.0]], "covs": [[[0.5]], [[0.2]]]}))
    target = get_target(str(path))
    assert target.K == 2 and target.d == 1
    with pytest.raises(TargetError, match="not found: .*missing.json"):
        get_target(str(tmp_path / "missing.json"))


def test_a_product_expands_up_to_the_limit_and_is_refused_past_it():
    from theory.catalog import get_target
    from theory.product import EXPAND_LIMIT
    from theory.targets import TargetError

    d = int(math.log2(EXPAND_LIMIT))  # a product of d bimodal factors has 2^d components
    at_limit = get_target("product-bimodal", d=d)
    assert at_limit.K == EXPAND_LIMIT and at_limit.to_mixture().K == EXPAND_LIMIT
    with pytest.raises(TargetError, match=f"limit {EXPAND_LIMIT}"):
        get_target("product-bimodal", d=d + 1).to_mixture()


def test_order_fits_refuse_arrays_that_are_not_one_dimensional():
    from theory.rates import RateError, fit_order

    with pytest.raises(RateError, match="must be 1-D"):
        fit_order([[1.0, 2.0], [4.0, 8.0]], [[1.0, 0.5], [0.25, 0.125]])
    with pytest.raises(RateError, match="must be 1-D"):
        fit_order([1.0, 2.0, 4.0], [1.0, 0.5])


@pytest.mark.parametrize("iterations", [1, 2, 5])
def test_em_runs_the_iterations_it_is_asked_for_when_it_cannot_converge(iterations):
    """With tol = 0 the stopping rule never fires: EM takes exactly `iterations` steps, records one mean
    log-likelihood before each M-step plus the final one, and does not claim convergence."""
    import torch

    from theory.em import fit_em

    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 2, generator=gen, dtype=torch.float64) - 2,
                   torch.randn(300, 2, generator=gen, dtype=torch.float64) + 2])
    result = fit_em(x, 2, iterations=iterations, tol=0.0)
    assert result.iterations == iterations and not result.converged
    assert len(result.log_likelihood) == iterations + 1


def test_em_kmeans_pp_seeds_fall_one_in_each_of_far_apart_tight_clusters():
    """k-means++ draws each new centre with probability proportional to the squared distance to the nearest
    centre so far: a point already chosen has weight 0, and on three tight clusters (spread 1e-3) a distance 100
    apart the chance that a new seed lands in an already-seeded cluster is about (1e-3 / 100)^2 per point, so over
    many seeds the three centres always fall one in each cluster."""
    import torch

    from theory.em import _kmeans_pp

    gen = torch.Generator().manual_seed(1)
    offsets = torch.tensor([[-100.0, 0.0], [0.0, 100.0], [100.0, 0.0]], dtype=torch.float64)
    x = torch.cat([o + 1e-3 * torch.randn(40, 2, generator=gen, dtype=torch.float64) for o in offsets])
    for seed in range(50):
        centres = _kmeans_pp(x, 3, torch.Generator().manual_seed(seed))
        cluster = torch.cdist(centres, offsets).argmin(1)
        assert sorted(cluster.tolist()) == [0, 1, 2], (seed, centres)
