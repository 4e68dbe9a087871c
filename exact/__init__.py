"""Floor 3: the exact error engines (shared/spec/metrics.md), one module per method.

    from exact import measure
    result = measure(target, sampler, grid)          # {metric: Measurement(value, numerical_error, method)}

`METHODS` is the explicit table of methods: a new engine is a module here and one line in that table (and, if it
should be chosen automatically, a clause in `choose_method`). Nothing registers itself by being imported.
"""

from __future__ import annotations

import math
from typing import Callable

from exact import flow_mc, gaussian, grid_1d_flow, grid_1d_kernel, path_kl, product, randomized_1d, subspace
from exact.base import FLAG_RATIO, METRICS, DivergenceError, Measurement, initial_draws, initial_law  # noqa: F401
from exact.init_error import init_error  # noqa: F401
from samplers.base import MarkovSampler, RandomizedSampler, Sampler
from theory.schedules import Grid
from theory.subspace import SubspaceTarget
from theory.targets import GaussianMixture

# name -> engine(target, sampler, grid, init=..., **options) -> {metric: Measurement}
METHODS: dict[str, Callable[..., dict[str, Measurement]]] = {
    "grid-1d-flow": grid_1d_flow.grid_1d_flow,  # method 1: 1-D, deterministic samplers
    "grid-1d-kernel": grid_1d_kernel.grid_1d_kernel,  # method 2: 1-D, Markov (Gaussian-transition) samplers
    "gaussian": gaussian.gaussian_engine,  # method 3: one-component targets, any d, any sampler
    "flow-mc": flow_mc.flow_mc,  # method 4: deterministic samplers, any d, Monte Carlo with exact densities
    "product": product.product_engine,  # method 5: product targets, every coordinate-wise sampler
    "grid-1d-randomized": randomized_1d.grid_1d_randomized,  # method 6: 1-D, randomized (random-time) samplers
    "subspace": subspace.subspace_engine,  # low-dimensional targets rotated into R^d (theory.subspace), any sampler
    # path KL between the forward process and a Markov sampler's chain (metrics kl_path, kl_path_sampler); only on
    # request, never chosen by choose_method
    "path-kl": path_kl.path_kl_engine,
}

# The methods whose numbers depend on a Monte Carlo seed (they take `seed=`).
SEEDED = ("gaussian", "flow-mc", "product", "subspace", "path-kl")
# The methods that evaluate many points and take `batch=` (points per batch, None: a memory budget of their own;
# the numbers do not depend on it): studies pass --batch to these only.
BATCHED = ("gaussian", "flow-mc", "product")


def choose_method(target, sampler: Sampler) -> str:
    """The exact method that applies to a (target, sampler) pair, or a clear refusal.

    In order: randomized (random-time) samplers have the 1-D randomized engine only; then the subspace engine (a
    theory.subspace target), the 1-D engines (d = 1), the Gaussian engine (one-component target), the product engine
    (a target whose coordinates are independent: theory.product), the subspace engine again (a plain mixture whose
    components share an isotropic floor and whose means and remaining covariance parts span a k < d dimensional
    subspace: theory.subspace.find_subspace), flow Monte Carlo (deterministic samplers)."""
    if isinstance(sampler, RandomizedSampler):
        if target.d == 1:
            return "grid-1d-randomized"
        raise DivergenceError(
            f"no exact method for randomized sampler {sampler.info.name!r} on target {target.name!r} (d={target.d}): "
            "its output law is a mixture over one random time per step, and in d > 1 each time moves every "
            "coordinate, so the law is neither a product (product targets) nor a Gaussian (Gaussian targets); only "
            "1-D targets are measured exactly (grid-1d-randomized)"
        )
    if isinstance(target, SubspaceTarget):
        why = subspace.unsupported(target, sampler)
        if why:
            raise DivergenceError(why)
        return "subspace"
    if target.d == 1 and not sampler.info.stochastic:
        return "grid-1d-flow"
    if target.d == 1 and isinstance(sampler, MarkovSampler):
        return "grid-1d-kernel"
    if target.is_gaussian:
        return "gaussian"
    if getattr(target, "factorises", False):
        return "product"
    found = subspace.as_subspace(target) if isinstance(target, GaussianMixture) else None
    if found is not None:
        why = subspace.unsupported(found, sampler)
        if why is None:
            return "subspace"
        if sampler.info.stochastic:
            raise DivergenceError(why)
    if not sampler.info.stochastic:
        return "flow-mc"
    raise DivergenceError(
        f"no exact method for sampler {sampler.info.name!r} on target {target.name!r} (d={target.d}, K={target.K}): "
        "a stochastic sampler in d > 1 needs a one-component (Gaussian) target or a product target, and the 1-D "
        "kernel engine needs a Markov (Gaussian-transition) sampler"
    )


def measure(target, sampler: Sampler, grid: Grid, init: str = "exact", method: str = "auto",
            **options) -> dict[str, Measurement]:
    """Exact error of `sampler` on `grid` against q at the grid's last level: {metric: Measurement}."""
    name = choose_method(target, sampler) if method == "auto" else method
    if name not in METHODS:
        raise DivergenceError(f"unknown method {name!r}: known methods are {', '.join(METHODS)}")
    result = METHODS[name](target, sampler, grid, init=init, **options)
    for m in result.values():
        if not math.isfinite(m.value) or not math.isfinite(m.numerical_error):
            raise DivergenceError(f"method {name} gave a non-finite {m.metric} for {sampler.info.name} T={grid.T}")
    return result
