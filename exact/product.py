"""Method 5 (shared/spec/metrics.md): product targets (theory.product), every sampler that acts coordinate-wise.

A sampler that, given the exact score, updates each coordinate from that coordinate alone (every
sampler of Li et al. does: the score is coordinate-wise and the injected noise is independent per coordinate)
turns a product input into a product output p = prod_j p^(j), where p^(j) is the output of the same sampler run on
the 1-D target q^(j). Hence

    KL(p || q) = sum_j KL(p^(j) || q^(j))          (exact: each term from the 1-D engines, methods 1 and 2)
    TV(p, q)   = E_{y ~ p}[ (1 - prod_j q^(j)(y_j) / p^(j)(y_j))_+ ]   (Monte Carlo with exact 1-D densities).

For the TV draws each distinct p^(j) is tabulated once on a fine uniform grid (the density propagation of method 2
for Markov samplers; p_init(F^-1(z)) / F'(F^-1(z)) with F, F' exact at the nodes for deterministic ones) and
sampled exactly as the piecewise-linear density through the nodes, whose distance to p^(j) is O(h^2); the TV's
numerical error is the standard error plus the 1-D engines' TV error estimates summed over coordinates (TV of a
product moves by at most the sum of the marginals' moves). The 1-D work does not depend on d and is cached.

Coordinates that share a marginal share one 1-D computation. The engine checks the coordinate-wise premise on the
given sampler by running it once in d dimensions and once per distinct marginal on the same inputs and noises, and
refuses when the two disagree (a sampler that mixes coordinates, e.g. through a learned step size, is not covered).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exact.base import DivergenceError, Measurement, batch_size, initial_law, trapezoid
from exact.grid_1d_flow import flow_map_1d, grid_1d_flow
from exact.grid_1d_kernel import grid_1d_kernel, kernel_density_1d
from samplers.base import (CountingModel, ExactModel, MarkovSampler, Noise, RandomizedSampler, Sampler,
                           ScriptedNoise)
from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture


class _RecordingNoise:
    """Standard normal draws from a seeded source, kept so that they can be replayed per coordinate."""

    def __init__(self, seed: int):
        self.noise = Noise(seed)
        self.draws: list[Tensor] = []

    def __call__(self, like: Tensor) -> Tensor:
        draw = self.noise(like)
        self.draws.append(draw)
        return draw


def check_coordinatewise(target, sampler: Sampler, grid: Grid, points: int = 4, seed: int = 0) -> float:
    """Run the sampler on `target` in d dimensions and on each distinct marginal in 1-D with the same inputs and
    noises; return the largest difference, or raise DivergenceError when the sampler mixes coordinates."""
    gen = torch.Generator(device=target.device).manual_seed(seed)
    x = target.sample(points, grid.abar[0], gen)
    recorder = _RecordingNoise(seed)
    full = sampler.run(CountingModel(ExactModel(target)), grid, x, recorder)
    worst = 0.0
    for rep, idx in target.factor_groups():
        j = int(idx[0])
        replay = ScriptedNoise([draw[:, j : j + 1] for draw in recorder.draws])
        alone = sampler.run(CountingModel(ExactModel(rep)), grid, x[:, j : j + 1], replay)
        gap = float((alone[:, 0] - full[:, j]).abs().max())
        scale = 1.0 + float(full[:, j].abs().max())
        worst = max(worst, gap)
        if not gap <= 1e-9 * scale:
            raise DivergenceError(
                f"sampler {sampler.info.name!r} does not act coordinate-wise on product target {target.name!r} "
                f"(coordinate {j} differs by {gap:.3g} from the 1-D run): the product method does not apply"
            )
    return worst


def _initial_marginal(rep: GaussianMixture, grid: Grid, init: str) -> GaussianMixture:
    return initial_law(rep, grid, init)


def _flow_density(rep, sampler: Sampler, grid: Grid, init: str, G: int, width: float) -> tuple[Tensor, Tensor]:
    """The output density of a deterministic sampler on a uniform grid z over the image of the initial support:
    p(z) = p_init(x) / F'(x) at x = F^-1(z), with F and F' exact at G nodes (forward mode) and F^-1, F' between
    nodes by linear interpolation of the increasing map (error O(h^2))."""
    p_init = _initial_marginal(rep, grid, init)
    lo, hi = p_init.support(1.0, width)
    x = torch.linspace(lo, hi, G, dtype=DTYPE, device=rep.device)
    F, dF = flow_map_1d(sampler, ExactModel(rep), grid, x)
    if not (torch.all(torch.isfinite(F)) and torch.all(dF > 0)):
        raise DivergenceError(f"the 1-D map of {sampler.info.name!r} on {grid.name} T={grid.T} is not increasing")
    z = torch.linspace(float(F[0]), float(F[-1]), G, dtype=DTYPE, device=rep.device)
    idx = torch.searchsorted(F, z).clamp(1, G - 1)
    frac = ((z - F[idx - 1]) / (F[idx] - F[idx - 1])).clamp(0, 1)
    x_of_z = x[idx - 1] + frac * (x[idx] - x[idx - 1])
    dF_of_z = dF[idx - 1] + frac * (dF[idx] - dF[idx - 1])
    p = torch.exp(p_init.log_prob(x_of_z[:, None], 1.0)) / dF_of_z
    return z, p / float(trapezoid(p, float(z[1] - z[0])))


def _kernel_density(rep, sampler: MarkovSampler, grid: Grid, init: str, G: int, width: float):
    """The output density of a Markov sampler on a uniform grid (the propagation of method 2), normalised."""
    z, _, p, _ = kernel_density_1d(rep, sampler, grid, _initial_marginal(rep, grid, init), G, width)
    return z, p


# The 1-D work of a (marginal, sampler, grid) does not depend on d: studies that sweep d reuse it.
_CACHE: dict[tuple, tuple] = {}


_CACHE_SIZE = 64


def _marginal_key(rep) -> tuple:
    if isinstance(rep, GaussianMixture):
        return (rep.weights.tolist(), rep.means.tolist(), rep.covs.tolist(), str(rep.device))
    return (_marginal_key(rep.base), repr(rep.field))  # a perturbed marginal (samplers.perturbed)


def _one_d(rep, sampler: Sampler, grid: Grid, init: str, G: int | None, width: float):
    """The 1-D engine's measurements for one marginal and the output density on a grid (cached)."""
    key = (str(_marginal_key(rep)), id(sampler), tuple(grid.abar.tolist()), init, G, width)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is sampler:
        return hit[1], hit[2], hit[3]
    if not sampler.info.stochastic:
        name = "grid-1d-flow"
        one_d = grid_1d_flow(rep, sampler, grid, init=init, **({} if G is None else {"G": G}))
        z, p = _flow_density(rep, sampler, grid, init, max(one_d["tv"].details.get("G", 0), 1 << 14), width)
    elif isinstance(sampler, MarkovSampler):
        name = "grid-1d-kernel"
        one_d = grid_1d_kernel(rep, sampler, grid, init=init, **({} if G is None else {"G": G}))
        z, p = _kernel_density(rep, sampler, grid, init, one_d["tv"].details.get("G", 1 << 13), width)
    else:
        raise DivergenceError(
            f"no 1-D output density for sampler {sampler.info.name!r}: the product engine needs a deterministic "
            "or a Markov (Gaussian-transition) sampler"
        )
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (sampler, one_d, (z, p), name)
    return one_d, (z, p), name


def _draws_piecewise_linear(z: Tensor, p: Tensor, m: int, gen) -> tuple[Tensor, Tensor]:
    """m exact draws from the piecewise-linear density through the nodes (z, p), and its log density there.
    One uniform picks the cell (inverse of the cumulative cell masses) and, conditionally uniform, the place in it:
    within a cell of end values a, b the mass up to fraction t is a t + (b - a) t^2 / 2, inverted in closed form."""
    h = z[1] - z[0]  # a tensor, like everything here: nothing goes to the host
    a, b = p[:-1], p[1:]
    cumulative = torch.cumsum(0.5 * (a + b), 0)
    total = cumulative[-1]
    u = torch.rand(m, dtype=DTYPE, device=z.device, generator=gen) * total
    cell = torch.searchsorted(cumulative, u).clamp_max(a.numel() - 1)
    c = u - (cumulative[cell] - 0.5 * (a[cell] + b[cell]))  # mass into the cell
    a, b = a[cell], b[cell]
    t = (2 * c / (a + torch.sqrt((a * a + 2 * (b - a) * c).clamp_min(0)))).clamp(0, 1)
    y = z[cell] + t * h
    return y, torch.log((a + (b - a) * t) / (total * h))


def product_engine(target, sampler: Sampler, grid: Grid, init: str = "exact", samples: int = 20_000,
                   seed: int = 0, width: float = 11.0, G: int | None = None, check: bool = True,
                   batch: int | None = None):
    """metrics.md method 5: KL as a sum of exact 1-D KLs, TV by Monte Carlo with exact 1-D densities.

    `batch`: draws whose exact 1-D log densities are evaluated at once (None: a memory budget). The draws themselves
    are taken at once, so the numbers do not depend on it; every tensor stays on the target's device, and the only
    transfers to the host are the final scalars."""
    if not getattr(target, "factorises", False):
        raise DivergenceError(f"the product engine needs a product target, {target!r} is not one")
    if isinstance(sampler, RandomizedSampler):
        raise DivergenceError(
            f"randomized sampler {sampler.info.name!r}: one random time per step moves every coordinate, so its "
            "output on a product target is a mixture of product laws, not a product; the product method does not "
            "apply")
    if check:
        check_coordinatewise(target, sampler, grid)
    level = grid.abar[-1]
    gen = torch.Generator(device=target.device).manual_seed(seed)
    kl, kl_err, tv_grid_err = 0.0, 0.0, 0.0
    log_ratio = torch.zeros(samples, dtype=DTYPE, device=target.device)
    methods = set()
    for rep, idx in target.factor_groups():
        copies = idx.numel()
        size = batch_size(batch, 4 * rep.K)
        one_d, (z, p), name = _one_d(rep, sampler, grid, init, G, width)
        methods.add(name)
        kl += copies * one_d["kl"].value
        kl_err += copies * one_d["kl"].numerical_error
        tv_grid_err += copies * one_d["tv"].numerical_error
        # Draws from the piecewise-linear output density and its exact log there; q exactly.
        y, log_p = _draws_piecewise_linear(z, p, samples * copies, gen)
        log_q = torch.cat([rep.log_prob(y[start : start + size, None], level) for start in range(0, y.numel(), size)])
        log_ratio += (log_q - log_p).reshape(samples, copies).sum(-1)
    terms = (-torch.expm1(log_ratio)).clamp_min(0)
    tv, std = torch.stack([terms.mean(), terms.std()]).tolist()
    se = std / math.sqrt(samples)
    used = "+".join(sorted(methods))
    details = {"one_d": used, "groups": len(target.factor_groups()), "samples": samples, "seed": seed}
    return {
        "kl": Measurement("kl", kl, kl_err, "product", dict(details)),
        "tv": Measurement("tv", tv, se + min(tv_grid_err, 1.0), "product-mc",
                          dict(details, standard_error=se, grid_error=tv_grid_err)),
    }
