"""Method 6: 1-D, randomized samplers (one uniform random time per step, samplers.base.RandomizedSampler).

The output law of a randomized sampler is a mixture over its random times u_1, ..., u_N. The times of different
steps are independent of each other and of the state, so the chain is Markov with the kernel of step k averaged
over u_k:

    p_k = int_0^1 ( T_(k, u) p_(k-1) ) du,        T_(k, u) p = (density of step_k(X, u) + std_k Z when X ~ p),

and the mixture is integrated exactly up to quadrature error, never by fixing one draw. Each step's integral over
u is an M-node Gauss-Legendre rule, and over each normal drawn before a score evaluation an M-node Gauss-Hermite
rule (the sampler's `transition_mixture`; M = 4, or 6 when a step draws normals: default_nodes); each node's
transition is the 1-D kernel engine's exact push-forward through the (increasing) map and FFT Gaussian blur (its std
may depend on the node's time), on a uniform grid of G nodes.

Error estimates: the quadrature error |value(M) - value(M - 1)| (both at half resolution; the rule converges
geometrically in M, since each node's push-forward is analytic in u, so the difference bounds the M-node error
with room to spare), the grid error as in the kernel engine (TV Richardson-extrapolated from G and G/2 with the
correction as its error, KL's change from G/2 to G), the mass defect and the target mass outside the grid. The
reported value uses M nodes and G points.

Only 1-D targets: in d > 1 one random time moves every coordinate, so even on a product target the output law is
a mixture over the N-dimensional vector of times of product laws, not a product, and on a Gaussian target a
mixture of Gaussians; neither the product nor the Gaussian engine applies and this engine refuses.

Depends on exact.grid_1d_kernel: _pushforward, _gaussian_blur, kernel_range, default_G and _grid_1d_kernel_once
(the TV and KL of a tabulated density) (imported, not copied).
"""

from __future__ import annotations

import torch
from torch import Tensor

from exact.base import DivergenceError, Measurement, initial_law, trapezoid
from exact.grid_1d_kernel import (
    _gaussian_blur,
    _grid_1d_kernel_once,
    _pushforward,
    default_G,
    kernel_range,
)
from samplers.base import CountingModel, ExactModel, RandomizedSampler
from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture

DEFAULT_NODES = 4  # M Gauss-Legendre nodes per step; the quadrature error estimate compares with M - 1
# M per draw when a step also draws normals before a score evaluation (a split Brownian increment): the end noise is
# then mostly carried by that normal near the end of the step (ddpm-rmp with r near H), each node's push-forward is a
# narrow bump in the normal's value, and Gauss-Hermite needs more nodes. Measured on ddpm-rmp, mix1d, li2023 T = 16:
# TV at M = 4, 6, 8, 12 is 4.19678e-3, 4.20511e-3, 4.20415e-3, 4.20406e-3 (M = 6: 1e-6 from the M = 12 value).
DEFAULT_NODES_WITH_NORMALS = 6


def randomized_density_1d(target, sampler: RandomizedSampler, grid: Grid, p_init: GaussianMixture, G: int,
                          width: float, nodes: int) -> tuple[Tensor, float, Tensor, float]:
    """The output density of a randomized sampler on a uniform grid: nodes z, spacing h, the density normalised to
    mass one, and its mass before normalising. Each step averages the push-forwards over the quadrature nodes."""
    lo, hi = kernel_range(target, grid, p_init, width)
    z = torch.linspace(lo, hi, G, dtype=DTYPE, device=target.device)
    h = (hi - lo) / (G - 1)
    p = torch.exp(p_init.log_prob(z[:, None], 1.0))
    model = CountingModel(ExactModel(target))
    what = f"{sampler.info.name} on {grid.name} T={grid.T}"
    for mixture in sampler.transition_mixture(model, grid, nodes):
        averaged = torch.zeros_like(p)
        for weight, step_map, std in mixture:
            pushed = _pushforward(p, z, lo, h, step_map, what)
            if std > 0:
                pushed = _gaussian_blur(pushed, h, std)
            averaged = averaged + weight * pushed
        p = averaged
    mass = float(trapezoid(p, h))
    return z, h, p / mass, mass


def default_nodes(target, sampler: RandomizedSampler, grid: Grid) -> int:
    """Quadrature nodes per draw when none are asked for: DEFAULT_NODES, or DEFAULT_NODES_WITH_NORMALS when some
    step draws normals (the steps are only built here, no model is evaluated)."""
    steps = sampler.random_steps(CountingModel(ExactModel(target)), grid)
    return DEFAULT_NODES_WITH_NORMALS if any(step.normals > 0 for step in steps) else DEFAULT_NODES


def grid_1d_randomized(target, sampler, grid: Grid, init: str = "exact", G: int | None = None, width: float = 11.0,
                       nodes: int | None = None) -> dict[str, Measurement]:
    """Method 6 (module docstring): the exact TV and KL of a randomized sampler's output mixture in 1-D; `nodes`
    per draw (None: default_nodes)."""
    if not isinstance(sampler, RandomizedSampler):
        raise DivergenceError(f"sampler {sampler.info.name!r} has no random times: the randomized engine needs a "
                              "RandomizedSampler (use grid-1d-flow or grid-1d-kernel)")
    if target.d != 1:
        raise DivergenceError(
            f"the randomized engine is 1-D only, target {target.name!r} has d={target.d}: one random time moves "
            "every coordinate, so the output law is a mixture of product laws, not a product")
    p_init = initial_law(target, grid, init)
    if G is None:
        G = default_G(target, grid, p_init, width, "the randomized 1-D engine")  # as the kernel engine
    if nodes is None:
        nodes = default_nodes(target, sampler, grid)
    if isinstance(nodes, bool) or int(nodes) != nodes or nodes < 2:
        raise DivergenceError(f"the randomized engine needs at least 2 quadrature nodes per step, got {nodes!r}")
    metrics = _grid_1d_kernel_once  # TV and KL of a tabulated density against q, as the kernel engine
    fine, defect = metrics(target, grid, *randomized_density_1d(target, sampler, grid, p_init, G, width, nodes))
    coarse, _ = metrics(target, grid, *randomized_density_1d(target, sampler, grid, p_init, G // 2, width, nodes))
    coarse_few, _ = metrics(target, grid, *randomized_density_1d(target, sampler, grid, p_init, G // 2, width,
                                                                 nodes - 1))
    tv_correction = (fine["tv"] - coarse["tv"]) / 3  # the kernel engine's Richardson step for TV's kinks
    tv_quadrature = abs(coarse["tv"] - coarse_few["tv"])
    kl_quadrature = abs(coarse["kl"] - coarse_few["kl"])
    details = {"G": G, "width": width, "nodes": nodes,
               "quadrature_error": {"tv": tv_quadrature, "kl": kl_quadrature}}
    return {
        "tv": Measurement("tv", fine["tv"] + tv_correction, abs(tv_correction) + tv_quadrature + defect,
                          "grid-1d-randomized", details),
        "kl": Measurement("kl", fine["kl"], abs(fine["kl"] - coarse["kl"]) + kl_quadrature + defect,
                          "grid-1d-randomized", dict(details)),
    }
