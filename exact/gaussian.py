"""Method 3 (shared/spec/metrics.md): Gaussian target, any d, any sampler.

The score is affine, so the output is exactly Gaussian: its mean and covariance are propagated through the run
(Jacobians by running on basis vectors). KL both ways and W2 in closed form; TV exact in 1-D, by Monte Carlo with
exact densities (standard error) above.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from exact.base import DivergenceError, Measurement, batch_size, initial_law
from samplers.base import CountingModel, ExactModel, MarkovSampler, RandomizedSampler, Sampler, ZeroNoise
from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture


def _basis_images(fn: Callable[[Tensor], Tensor], centre: Tensor, bases: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """fn(centre) and, for each basis, the columns fn(centre + b_j) - fn(centre) of an affine fn (its Jacobian
    times the basis): one call of fn on the centre and every basis's points together."""
    points = torch.cat([centre[None]] + [centre[None] + basis.T for basis in bases], 0)
    images = fn(points)
    columns = (images[1:] - images[0]).T.split([basis.shape[1] for basis in bases], 1)
    return images[0], list(columns)


def gaussian_output_laws(target: GaussianMixture, sampler: Sampler, grid: Grid, init_mean: Tensor,
                         init_cov: Tensor, scales: tuple[float, ...] = (1.0,)) -> list[tuple[Tensor, Tensor]]:
    """Mean and covariance of the (exactly Gaussian) output of any sampler on a Gaussian target, once per basis
    scale (the engine's error estimate compares two), all from one run of the sampler on 1 + len(scales) d points:
    the centre (the mean, the same for every scale) and the centre plus each scaled basis."""
    if not target.is_gaussian:
        raise DivergenceError(f"the Gaussian engine needs a one-component target, {target.name!r} has K={target.K}")
    d = target.d
    eye = torch.eye(d, dtype=DTYPE, device=target.device)
    model = CountingModel(ExactModel(target))
    if isinstance(sampler, MarkovSampler):
        mean, covs = init_mean, [init_cov] * len(scales)
        for step in sampler.transitions(model, grid):
            if step.map is not None:
                mean, columns = _basis_images(step.map, mean, [scale * eye for scale in scales])
                covs = [(A / scale) @ cov @ (A / scale).T for A, scale, cov in zip(columns, scales, covs)]
            covs = [cov + float(step.std) ** 2 * eye for cov in covs]
        return [(mean, 0.5 * (cov + cov.T)) for cov in covs]
    if isinstance(sampler, RandomizedSampler):
        raise DivergenceError(f"randomized sampler {sampler.info.name!r}: its output on a Gaussian target is a mixture "
                              "of Gaussians over its random times, not a Gaussian (use grid-1d-randomized in 1-D)")
    if sampler.info.stochastic:
        raise DivergenceError(f"stochastic sampler {sampler.info.name!r} is not written as Gaussian transitions")
    L = torch.linalg.cholesky(init_cov)
    mean, columns = _basis_images(lambda pts: sampler.run(model, grid, pts, ZeroNoise()), init_mean,
                                  [scale * L for scale in scales])
    laws = []
    for J, scale in zip(columns, scales):
        J = J / scale
        cov = J @ J.T
        laws.append((mean, 0.5 * (cov + cov.T)))
    return laws


def gaussian_output_law(target: GaussianMixture, sampler: Sampler, grid: Grid, init_mean: Tensor, init_cov: Tensor,
                        scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Mean and covariance of the (exactly Gaussian) output of any sampler on a Gaussian target."""
    return gaussian_output_laws(target, sampler, grid, init_mean, init_cov, (scale,))[0]


def gaussian_kl(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor) -> float:
    """KL(N(m1, S1) || N(m2, S2))."""
    L2 = torch.linalg.cholesky(S2)
    M = torch.cholesky_solve(S1, L2)
    diff = (m2 - m1)[:, None]
    maha = float((diff * torch.cholesky_solve(diff, L2)).sum())
    # trace - d - log det(S2^-1 S1) from the eigenvalues of S2^-1 S1: each term (ev - 1 - log ev) >= 0 is second
    # order near equality, so small KLs keep their relative accuracy.
    ev = torch.linalg.eigvals(M).real
    return 0.5 * (float((ev - 1 - torch.log(ev)).sum()) + maha)


def gaussian_w2(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor) -> float:
    def sqrtm(S: Tensor) -> Tensor:
        w, V = torch.linalg.eigh(S)
        return V @ torch.diag(w.clamp_min(0).sqrt()) @ V.T

    r1 = sqrtm(S1)
    cross = sqrtm(r1 @ S2 @ r1)
    sq = float(((m1 - m2) ** 2).sum() + torch.trace(S1 + S2 - 2 * cross))
    return math.sqrt(max(sq, 0.0))


def gaussian_tv_1d(m1: float, s1: float, m2: float, s2: float) -> float:
    """TV between N(m1, s1^2) and N(m2, s2^2), exactly: P1(A) - P2(A) on A = {p1 > p2}."""
    from scipy.stats import norm

    if abs(s1 - s2) <= 1e-15 * max(s1, s2):
        return float(abs(norm.cdf(abs(m1 - m2) / (2 * s1)) - norm.cdf(-abs(m1 - m2) / (2 * s1))))
    # log p1 - log p2 = a x^2 + b x + c
    a = 0.5 / s2**2 - 0.5 / s1**2
    b = m1 / s1**2 - m2 / s2**2
    c = 0.5 * m2**2 / s2**2 - 0.5 * m1**2 / s1**2 + math.log(s2 / s1)
    disc = b * b - 4 * a * c
    if disc <= 0:
        return 0.0
    root = math.sqrt(disc)
    # numerically stable roots of a x^2 + b x + c
    qv = -0.5 * (b + math.copysign(root, b))
    x1, x2 = sorted((qv / a, c / qv))
    P1 = norm.cdf(x2, m1, s1) - norm.cdf(x1, m1, s1)
    P2 = norm.cdf(x2, m2, s2) - norm.cdf(x1, m2, s2)
    # {p1 > p2} is the interval between the roots or its complement; either way TV = |P1 - P2| on the interval.
    return abs(float(P1 - P2))


def gaussian_tv_mc(m1, S1, m2, S2, n: int = 200_000, seed: int = 0, batch: int | None = None) -> tuple[float, float]:
    """TV = E_p[(1 - q/p)_+] by Monte Carlo with exact densities; returns (value, standard error).

    The n draws are taken at once (the numbers do not depend on `batch`); their log densities are evaluated `batch`
    points at a time (None: a memory budget), on the device of m1, with one transfer of the two final scalars."""
    size = batch_size(batch, 4 * m1.numel())
    gen = torch.Generator(device=m1.device).manual_seed(seed)
    L1 = torch.linalg.cholesky(S1)
    L2 = torch.linalg.cholesky(S2)
    z = torch.randn(n, m1.numel(), dtype=DTYPE, device=m1.device, generator=gen)
    p, q = (torch.distributions.MultivariateNormal(m, scale_tril=L, validate_args=False)
            for m, L in ((m1, L1), (m2, L2)))
    vals = torch.empty(n, dtype=DTYPE, device=m1.device)
    for start in range(0, n, size):
        x = m1 + z[start : start + size] @ L1.T
        vals[start : start + size] = (-torch.expm1(q.log_prob(x) - p.log_prob(x))).clamp_min(0)
    mean, std = torch.stack([vals.mean(), vals.std()]).tolist()
    return mean, std / math.sqrt(n)


def gaussian_engine(target, sampler, grid, init="exact", seed: int = 0, mc_samples: int = 200_000,
                    batch: int | None = None):
    """metrics.md method 3. `batch`: points per batch of the Monte Carlo TV (d > 1; None: a memory budget)."""
    p_init = initial_law(target, grid, init)
    m0, S0 = p_init.means[0], p_init.covs[0]
    (mean, cov), (mean_b, cov_b) = gaussian_output_laws(target, sampler, grid, m0, S0, scales=(1.0, 0.5))
    level = grid.abar[-1]
    mq, Sq = target.mean(level), target.covariance(level)
    kl = gaussian_kl(mean, cov, mq, Sq)
    kl_b = gaussian_kl(mean_b, cov_b, mq, Sq)
    rkl = gaussian_kl(mq, Sq, mean, cov)
    rounding = 1e-13 * (1 + float(cov.abs().max()))
    out = {
        "kl": Measurement("kl", kl, abs(kl - kl_b) + rounding, "gaussian"),
        "kl_reverse": Measurement("kl_reverse", rkl, abs(rkl - gaussian_kl(mq, Sq, mean_b, cov_b)) + rounding,
                                  "gaussian"),
        "w2": Measurement("w2", gaussian_w2(mean, cov, mq, Sq), rounding, "gaussian"),
    }
    if target.d == 1:
        tv = gaussian_tv_1d(float(mean[0]), math.sqrt(float(cov[0, 0])), float(mq[0]), math.sqrt(float(Sq[0, 0])))
        tv_b = gaussian_tv_1d(float(mean_b[0]), math.sqrt(float(cov_b[0, 0])), float(mq[0]), math.sqrt(float(Sq[0, 0])))
        out["tv"] = Measurement("tv", tv, abs(tv - tv_b) + rounding, "gaussian")
    else:
        tv, se = gaussian_tv_mc(mean, cov, mq, Sq, n=mc_samples, seed=seed, batch=batch)
        out["tv"] = Measurement("tv", tv, se, "gaussian-mc", {"samples": mc_samples, "standard_error": se})
    for m in out.values():
        m.details.update({"mean": mean.tolist(), "cov": cov.tolist()})
    return out


# ---------------------------------------------------------------------------- diagonal Gaussian targets
def diagonal_output_law(target: GaussianMixture, sampler: Sampler, grid: Grid, init_mean: Tensor,
                        init_var: Tensor) -> tuple[Tensor, Tensor, float, int]:
    """Mean and variances of the output of a coordinate-wise sampler on a DIAGONAL Gaussian target, in O(d) a step.

    On a Gaussian target every map of the run is affine; on a diagonal one with the exact score, a sampler that acts
    coordinate-wise (every sampler of Li et al., Li & Jiao's, DDPM: the score is coordinate-wise and the noise
    independent per coordinate) makes each map y -> a * y + b elementwise, so the output is N(mean, diag(var)) with
    var = a^2 var + std^2 per transition. a comes from running each map on three points (the mean, the mean plus
    ones, the mean plus a probe w of distinct entries and signs); the premise is checked, not assumed: F(c + w) -
    F(c) must equal a * w, which fails for a map that mixes coordinates (then this route refuses and the full
    Gaussian engine applies). This is the Gaussian engine with a diagonal Jacobian: the same numbers up to rounding,
    from 3 points a step instead of 1 + 2d and no d x d covariance. Returns (mean, var, the largest premise gap, the
    evaluations the run made, counted)."""
    if not target.is_gaussian or not target.diagonal:
        raise DivergenceError(f"the diagonal route needs a diagonal one-component target, {target.name!r} is not one")
    d = target.d
    ones = torch.ones(d, dtype=DTYPE, device=target.device)
    w = torch.linspace(0.5, 1.5, d, dtype=DTYPE, device=target.device) * (1 - 2 * (torch.arange(d) % 2)).to(ones)
    model = CountingModel(ExactModel(target))
    worst = 0.0

    def coefficients(images: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal worst
        a = images[1] - images[0]
        gap = float(((images[2] - images[0]) - a * w).abs().max())
        scale = 1e-9 * (1 + float(a.abs().max()))
        worst = max(worst, gap)
        if not gap <= scale:
            raise DivergenceError(f"sampler {sampler.info.name!r} does not act coordinate-wise on {target.name!r} "
                                  f"(a map mixes coordinates by {gap:.3g}): the diagonal route does not apply")
        return images[0], a

    if isinstance(sampler, MarkovSampler):
        mean, var = init_mean, init_var
        for step in sampler.transitions(model, grid):
            if step.map is not None:
                mean, a = coefficients(step.map(torch.stack([mean, mean + ones, mean + w])))
                var = a * a * var
            var = var + float(step.std) ** 2
        return mean, var, worst, model.nfe
    if isinstance(sampler, RandomizedSampler) or sampler.info.stochastic:
        raise DivergenceError(f"sampler {sampler.info.name!r} is not deterministic nor written as Gaussian transitions")
    mean, a = coefficients(sampler.run(model, grid, torch.stack([init_mean, init_mean + ones, init_mean + w]),
                                       ZeroNoise()))
    return mean, a * a * init_var, worst, model.nfe


def diagonal_kl_terms(m1: Tensor, v1: Tensor, m2: Tensor, v2: Tensor) -> Tensor:
    """KL(N(m1, v1) || N(m2, v2)) per coordinate, 1-D Gaussians: (x - log1p(x) + (m1 - m2)^2 / v2) / 2 with
    x = (v1 - v2) / v2.

    Near-singular coordinates (v1, v2 tiny, as for a zero target variance near the data: both about 1 - abar) lose
    nothing: x is formed from the difference of the two variances, which is exact when they are close (Sterbenz), so
    its relative accuracy is that of v1 and v2 themselves whatever their size, and x - log1p(x) (>= 0, about
    x^2 / 2) keeps the relative accuracy of small terms. The general route (gaussian_kl: Cholesky, eigenvalues of
    S2^-1 S1, ev - 1 - log ev) loses the digits of ev - 1 below 1e-16 absolute instead."""
    x = (v1 - v2) / v2
    return 0.5 * (x - torch.log1p(x) + (m1 - m2) ** 2 / v2)
