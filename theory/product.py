"""Product targets and their exact error engine (shared/spec/metrics.md, method 5).

A product target is a law whose coordinates are independent,

    q_0(x) = prod_j q_0^(j)(x_j),   each q_0^(j) = sum_k w_jk N(mu_jk, s_jk^2) a 1-D mixture.

The VP forward process x = sqrt(abar) x_0 + sqrt(1 - abar) z adds independent noise per coordinate, so every level
factorises too: q_abar = prod_j q_abar^(j). The score is the vector of 1-D scores, s_j(x) = (d/dx_j) log
q_abar^(j)(x_j), and its Jacobian is diagonal. As a single mixture it would have prod_j K_j components (3^256 for
256 copies of a three-mode law); nothing here expands it: every quantity is a sum or a vector over coordinates.

Method 5. A sampler that, given the exact score, updates each coordinate from that coordinate alone (every
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
from typing import Sequence

import torch
from torch import Tensor

from samplers.base import CountingModel, ExactModel, MarkovSampler, Noise, Sampler, ScriptedNoise
from theory import divergences as dv
from theory.divergences import ENGINES, DivergenceError, Measurement
from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture, ScoreDerived, TargetError, register_target

EXPAND_LIMIT = 4096  # the largest number of components the explicit mixture form (weights, means, covs) may have


class ProductTarget(ScoreDerived):
    """A law on R^d with independent coordinates, coordinate j distributed as the 1-D mixture `marginals[j]`.

    It answers what samplers and engines ask of a target (d, eps, score, denoiser, score_jacobian, log_prob,
    sample, responsibilities, mean, covariance, marginal, device) without expanding into prod_j K_j components.
    Coordinates given the same marginal object (or equal ones) form one group and are computed together.
    """

    factorises = True
    diagonal = True

    def __init__(self, marginals: Sequence[GaussianMixture], name: str = "product"):
        marginals = list(marginals)
        if not marginals:
            raise TargetError("a product target needs at least one marginal")
        for j, m in enumerate(marginals):
            if not isinstance(m, GaussianMixture) or m.d != 1:
                raise TargetError(f"marginal {j} must be a 1-D GaussianMixture, got {m!r}")
        devices = {str(m.device) for m in marginals}
        if len(devices) != 1:
            raise TargetError(f"all marginals must live on one device, got {sorted(devices)}")
        self.name = name
        self.marginals = marginals
        # Group coordinates by equal marginals (same weights, means and covs).
        groups: list[tuple[GaussianMixture, list[int]]] = []
        for j, m in enumerate(marginals):
            for rep, idx in groups:
                if rep is m or _same_mixture(rep, m):
                    idx.append(j)
                    break
            else:
                groups.append((m, [j]))
        device = marginals[0].device
        self.groups = [(rep, torch.tensor(idx, dtype=torch.long, device=device)) for rep, idx in groups]

    # ------------------------------------------------------------------ basic facts
    @property
    def d(self) -> int:
        return len(self.marginals)

    @property
    def device(self) -> torch.device:
        return self.marginals[0].device

    @property
    def K(self) -> int:
        """Components of the expanded mixture, prod_j K_j (never built unless small)."""
        return math.prod(m.K for m in self.marginals)

    @property
    def is_gaussian(self) -> bool:
        return all(m.is_gaussian for m in self.marginals)

    def factor_groups(self) -> list[tuple[GaussianMixture, Tensor]]:
        """[(1-D marginal, coordinate indices)] with one entry per distinct marginal."""
        return self.groups

    def marginal(self, j: int) -> GaussianMixture:
        return self.marginals[j]

    def to(self, device) -> "ProductTarget":
        return ProductTarget([m.to(device) for m in self.marginals], self.name)

    def __repr__(self) -> str:
        return f"ProductTarget(name={self.name!r}, d={self.d}, distinct marginals={len(self.groups)})"

    # ------------------------------------------------------------------ coordinate-wise evaluation
    def _per_coordinate(self, x: Tensor, fn) -> Tensor:
        """Apply fn(marginal, column points of shape (m, 1)) -> (m,) to every coordinate; result (n, d)."""
        if x.ndim != 2 or x.shape[1] != self.d:
            raise TargetError(f"points must have shape (n, {self.d}), got {tuple(x.shape)}")
        out = torch.empty_like(x)
        for rep, idx in self.groups:
            cols = x[:, idx]
            out[:, idx] = fn(rep, cols.reshape(-1, 1)).reshape(cols.shape)
        return out

    def log_prob(self, x: Tensor, abar: float | Tensor = 1.0) -> Tensor:
        """log q_abar(x) = sum_j log q_abar^(j)(x_j)."""
        return self._per_coordinate(x, lambda m, c: m.log_prob(c, abar)).sum(-1)

    def score(self, x: Tensor, abar) -> Tensor:
        return self._per_coordinate(x, lambda m, c: m.score(c, abar)[:, 0])

    def score_jacobian(self, x: Tensor, abar) -> Tensor:
        """Diagonal: d s_j / d x_j on the diagonal, shape (n, d, d)."""
        diag = self._per_coordinate(x, lambda m, c: m.score_jacobian(c, abar)[:, 0, 0])
        return torch.diag_embed(diag)

    def responsibilities(self, x: Tensor, abar) -> Tensor:
        """Features: every coordinate's posterior component weights, concatenated (n, sum_j K_j)."""
        if x.ndim != 2 or x.shape[1] != self.d:
            raise TargetError(f"points must have shape (n, {self.d}), got {tuple(x.shape)}")
        return torch.cat([m.responsibilities(x[:, j : j + 1], abar) for j, m in enumerate(self.marginals)], -1)

    def sample(self, n: int, abar: float | Tensor = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws from q_abar, coordinate by coordinate (group by group, in a fixed order)."""
        out = torch.empty(n, self.d, dtype=DTYPE, device=self.device)
        for rep, idx in self.groups:
            out[:, idx] = rep.sample(n * idx.numel(), abar, generator).reshape(n, idx.numel())
        return out

    def mean(self, abar: float | Tensor = 1.0) -> Tensor:
        return torch.cat([m.mean(abar) for m in self.marginals])

    def covariance(self, abar: float | Tensor = 1.0) -> Tensor:
        return torch.diag(torch.cat([m.covariance(abar)[0] for m in self.marginals]))

    # ------------------------------------------------------------------ 1-D and small cases
    def _single(self, what: str) -> GaussianMixture:
        if self.d != 1:
            raise TargetError(f"{what} needs a 1-D target, this product has d = {self.d}")
        return self.marginals[0]

    def cdf(self, x: Tensor, abar: float | Tensor = 1.0) -> Tensor:
        return self._single("cdf").cdf(x, abar)

    def support(self, abar: float | Tensor, width: float = 12.0) -> tuple[float, float]:
        return self._single("support").support(abar, width)

    def level_variances(self, abar: float | Tensor) -> Tensor:
        return self._single("level_variances").level_variances(abar)

    def to_mixture(self) -> GaussianMixture:
        """The explicit mixture (prod_j K_j components); refused above EXPAND_LIMIT components."""
        if self.K > EXPAND_LIMIT:
            raise TargetError(
                f"product target {self.name!r} has {self.K} components as a mixture (limit {EXPAND_LIMIT}): "
                "use its coordinate-wise methods instead"
            )
        weights = torch.ones(1, dtype=DTYPE, device=self.device)
        means = torch.zeros(1, 0, dtype=DTYPE, device=self.device)
        variances = torch.zeros(1, 0, dtype=DTYPE, device=self.device)
        for m in self.marginals:
            weights = (weights[:, None] * m.weights[None]).reshape(-1)
            means = torch.cat([means.repeat_interleave(m.K, 0), m.means[:, 0].repeat(means.shape[0])[:, None]], 1)
            variances = torch.cat(
                [variances.repeat_interleave(m.K, 0), m.covs[:, 0, 0].repeat(variances.shape[0])[:, None]], 1
            )
        return GaussianMixture(weights, means, torch.diag_embed(variances), f"{self.name}(expanded)", self.device)

    # The explicit-mixture attributes, for small products only (initial laws and the Gaussian engine use them).
    @property
    def weights(self) -> Tensor:
        return self.to_mixture().weights

    @property
    def means(self) -> Tensor:
        return self.to_mixture().means

    @property
    def covs(self) -> Tensor:
        return self.to_mixture().covs


def _same_mixture(a: GaussianMixture, b: GaussianMixture) -> bool:
    return (
        a.K == b.K
        and torch.equal(a.weights, b.weights)
        and torch.equal(a.means, b.means)
        and torch.equal(a.covs, b.covs)
    )


def product_of(marginal: GaussianMixture, d: int, name: str) -> ProductTarget:
    """d independent copies of one 1-D mixture (one group, one 1-D computation)."""
    if isinstance(d, bool) or int(d) != d or d < 1:
        raise TargetError(f"a product target needs a dimension d >= 1, got {d!r}")
    return ProductTarget([marginal] * int(d), name)


# ---------------------------------------------------------------------------- named product targets
def _bimodal_1d() -> GaussianMixture:
    # Two unequal modes of unequal widths: the simplest non-Gaussian marginal.
    return GaussianMixture([0.4, 0.6], [[-1.0], [1.0]], [[[0.16]], [[0.36]]], "bimodal1d")


@register_target("product-bimodal")
def _product_bimodal(d: int | None) -> ProductTarget:
    """d copies of a two-mode 1-D mixture (2^d modes in all)."""
    return product_of(_bimodal_1d(), 1 if d is None else d, "product-bimodal")


@register_target("product-mix1d")
def _product_mix1d(d: int | None) -> ProductTarget:
    """d copies of mix1d, the three-mode 1-D target (3^d modes in all)."""
    from theory.targets import get_target

    return product_of(get_target("mix1d"), 1 if d is None else d, "product-mix1d")


@register_target("std-normal")
def _std_normal(d: int | None) -> ProductTarget:
    """N(0, I_d): the stationary law of the VP process (the exact probability-flow velocity is zero)."""
    return product_of(GaussianMixture([1.0], [[0.0]], [[[1.0]]], "N(0,1)"), 1 if d is None else d, "std-normal")


# ---------------------------------------------------------------------------- method 5
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
    return dv.initial_law(rep, grid, init)


def _flow_density(rep, sampler: Sampler, grid: Grid, init: str, G: int, width: float) -> tuple[Tensor, Tensor]:
    """The output density of a deterministic sampler on a uniform grid z over the image of the initial support:
    p(z) = p_init(x) / F'(x) at x = F^-1(z), with F and F' exact at G nodes (forward mode) and F^-1, F' between
    nodes by linear interpolation of the increasing map (error O(h^2))."""
    p_init = _initial_marginal(rep, grid, init)
    lo, hi = p_init.support(1.0, width)
    x = torch.linspace(lo, hi, G, dtype=DTYPE, device=rep.device)
    F, dF = dv.flow_map_1d(sampler, ExactModel(rep), grid, x)
    if not (torch.all(torch.isfinite(F)) and torch.all(dF > 0)):
        raise DivergenceError(f"the 1-D map of {sampler.info.name!r} on {grid.name} T={grid.T} is not increasing")
    z = torch.linspace(float(F[0]), float(F[-1]), G, dtype=DTYPE, device=rep.device)
    idx = torch.searchsorted(F, z).clamp(1, G - 1)
    frac = ((z - F[idx - 1]) / (F[idx] - F[idx - 1])).clamp(0, 1)
    x_of_z = x[idx - 1] + frac * (x[idx] - x[idx - 1])
    dF_of_z = dF[idx - 1] + frac * (dF[idx] - dF[idx - 1])
    p = torch.exp(p_init.log_prob(x_of_z[:, None], 1.0)) / dF_of_z
    return z, p / float(dv._trapezoid(p, float(z[1] - z[0])))


def _kernel_density(rep, sampler: MarkovSampler, grid: Grid, init: str, G: int, width: float):
    """The output density of a Markov sampler on a uniform grid (the propagation of method 2), normalised."""
    z, _, p, _ = dv.kernel_density_1d(rep, sampler, grid, _initial_marginal(rep, grid, init), G, width)
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
    name = dv.choose_method(rep, sampler)
    options = {} if G is None or name not in ("grid-1d-kernel", "grid-1d-flow") else {"G": G}
    one_d = ENGINES[name](rep, sampler, grid, init=init, **options)
    if name == "grid-1d-kernel":
        z, p = _kernel_density(rep, sampler, grid, init, one_d["tv"].details.get("G", 1 << 13), width)
    elif name == "grid-1d-flow":
        z, p = _flow_density(rep, sampler, grid, init, max(one_d["tv"].details.get("G", 0), 1 << 14), width)
    else:
        raise DivergenceError(
            f"no 1-D output density for sampler {sampler.info.name!r} by method {name!r}: the product engine needs "
            "a deterministic or a Markov (Gaussian-transition) sampler"
        )
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (sampler, one_d, (z, p), name)
    return one_d, (z, p), name


def _draws_piecewise_linear(z: Tensor, p: Tensor, m: int, gen) -> tuple[Tensor, Tensor]:
    """m exact draws from the piecewise-linear density through the nodes (z, p), and its log density there.
    One uniform picks the cell (inverse of the cumulative cell masses) and, conditionally uniform, the place in it:
    within a cell of end values a, b the mass up to fraction t is a t + (b - a) t^2 / 2, inverted in closed form."""
    h = float(z[1] - z[0])
    a, b = p[:-1], p[1:]
    cumulative = torch.cumsum(0.5 * (a + b), 0)
    total = cumulative[-1]
    u = torch.rand(m, dtype=DTYPE, device=z.device, generator=gen) * total
    cell = torch.searchsorted(cumulative, u).clamp_max(a.numel() - 1)
    c = u - (cumulative[cell] - 0.5 * (a[cell] + b[cell]))  # mass into the cell
    a, b = a[cell], b[cell]
    t = (2 * c / (a + torch.sqrt((a * a + 2 * (b - a) * c).clamp_min(0)))).clamp(0, 1)
    y = z[cell] + t * h
    return y, torch.log((a + (b - a) * t) / (float(total) * h))


def product_engine(target, sampler: Sampler, grid: Grid, init: str = "exact", samples: int = 20_000,
                   seed: int = 0, width: float = 11.0, G: int | None = None, check: bool = True):
    """metrics.md method 5: KL as a sum of exact 1-D KLs, TV by Monte Carlo with exact 1-D densities."""
    if not getattr(target, "factorises", False):
        raise DivergenceError(f"the product engine needs a product target, {target!r} is not one")
    if check:
        check_coordinatewise(target, sampler, grid)
    level = grid.abar[-1]
    gen = torch.Generator(device=target.device).manual_seed(seed)
    kl, kl_err, tv_grid_err = 0.0, 0.0, 0.0
    log_ratio = torch.zeros(samples, dtype=DTYPE, device=target.device)
    methods = set()
    for rep, idx in target.factor_groups():
        copies = idx.numel()
        one_d, (z, p), name = _one_d(rep, sampler, grid, init, G, width)
        methods.add(name)
        kl += copies * one_d["kl"].value
        kl_err += copies * one_d["kl"].numerical_error
        tv_grid_err += copies * one_d["tv"].numerical_error
        # Draws from the piecewise-linear output density and its exact log there; q exactly.
        y, log_p = _draws_piecewise_linear(z, p, samples * copies, gen)
        log_q = rep.log_prob(y[:, None], level)
        log_ratio += (log_q - log_p).reshape(samples, copies).sum(-1)
    terms = (-torch.expm1(log_ratio)).clamp_min(0)
    tv = float(terms.mean())
    se = float(terms.std() / math.sqrt(samples))
    used = "+".join(sorted(methods))
    details = {"one_d": used, "groups": len(target.factor_groups()), "samples": samples, "seed": seed}
    return {
        "kl": Measurement("kl", kl, kl_err, "product", dict(details)),
        "tv": Measurement("tv", tv, se + min(tv_grid_err, 1.0), "product-mc",
                          dict(details, standard_error=se, grid_error=tv_grid_err)),
    }


ENGINES["product"] = product_engine
