"""Exact error of a sampler's output law p against the true law q at the grid's last level.

shared/spec/metrics.md. Every value carries the method that produced it and an estimate of its own numerical error:

- `grid-1d-flow` (method 1): 1-D, deterministic samplers. The run is a map F; on a uniform grid over the initial
  law we get F and F' by forward-mode differentiation through the whole run, and with r = log q(F) + log F' -
  log p_init (the log ratio q/p at y = F(x)) we integrate
      KL(p||q) = int p_init (expm1(r) - r) dx - (Q_in - P_in),
  where the last term (q and p_init mass over the covered intervals, from exact CDFs) makes the integrand
  non-negative and second order in r; the trapezoid rule is spectrally accurate on it. TV = 1/2 int p_init
  |expm1(r)| has kinks, so instead TV = P_init(A) - Q(F(A)) on A = {r < 0}, a union of intervals whose ends (the
  roots of r, refined by regula falsi) go through the exact CDFs. Error estimates: the larger of KL's changes
  from every fourth to every other node to all nodes; TV between the last two root refinements; plus the mass
  left outside the grid.
- `grid-1d-kernel` (method 2): 1-D, stochastic samplers written as Gaussian transitions x -> m(x) + s Z. The
  density lives on a uniform grid. A map pushes it forward exactly (p(m^-1(z)) / m'(m^-1(z)), the inverse by Newton,
  p between nodes by 8-point Lagrange interpolation); the noise is a convolution done in Fourier space, where it
  multiplies by exp(-s^2 w^2 / 2): mass-conserving and exact for any s, tiny s in the last steps included.
  KL's error estimate: |value(G) - value(G/2)|, the mass defect and the mass outside the grid. TV (kinks where
  p = q, an error c h^2) is Richardson-extrapolated from G and G/2, with the size of the correction as its error.
- `gaussian` (method 3): Gaussian target, any d, any sampler. The score is affine, so the output is exactly
  Gaussian: its mean and covariance are propagated through the run (Jacobians by running on basis vectors).
  KL both ways and W2 in closed form; TV exact in 1-D, by Monte Carlo with exact densities (standard error) above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from samplers.base import CountingModel, ExactModel, MarkovSampler, Sampler, ZeroNoise
from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture, gaussian

METRICS = ("tv", "kl")
FLAG_RATIO = 0.1  # a value whose numerical error exceeds this fraction of it is flagged


class DivergenceError(ValueError):
    """No exact method applies, or the one that does cannot stand behind a number (e.g. a non-monotone map)."""


@dataclass
class Measurement:
    metric: str
    value: float
    numerical_error: float
    method: str
    details: dict = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """True when the numerical error is not well below the value itself."""
        return not (self.numerical_error < FLAG_RATIO * abs(self.value))


# ---------------------------------------------------------------------------- initial laws
def initial_law(target: GaussianMixture, grid: Grid, init: str) -> GaussianMixture:
    """q_T exactly ('exact') or the theory's N(0, I) ('gaussian')."""
    if init == "exact":
        level = grid.abar[0]
        # q_T as a mixture in its own right (its level-1 form), so the same code evaluates it.
        return GaussianMixture(
            target.weights,
            torch.sqrt(level) * target.means,
            level * target.covs + (1 - level) * torch.eye(target.d, dtype=DTYPE, device=target.device),
            f"q_T({target.name})",
            target.device,
        )
    if init == "gaussian":
        return gaussian(
            torch.zeros(target.d, dtype=DTYPE), torch.eye(target.d, dtype=DTYPE), name="N(0,I)"
        ).to(target.device)
    raise DivergenceError(f"unknown init {init!r}: use 'exact' (q_T) or 'gaussian' (N(0, I))")


def _trapezoid(values: Tensor, h: float) -> Tensor:
    return h * (values.sum(-1) - 0.5 * (values[..., 0] + values[..., -1]))


# ---------------------------------------------------------------------------- method 1
def flow_map_1d(sampler: Sampler, model, grid: Grid, x: Tensor) -> tuple[Tensor, Tensor]:
    """F(x) and F'(x) for a deterministic sampler on 1-D points x (shape (n,)), by forward-mode differentiation."""
    counting = CountingModel(model)

    def run(points: Tensor) -> Tensor:
        return sampler.run(counting, grid, points[:, None], None)[:, 0]

    F, dF = torch.func.jvp(run, (x,), (torch.ones_like(x),))
    return F, dF


def _grid_1d_flow_pass(target, sampler, grid, p_init: GaussianMixture, G: int, width: float):
    """One pass on G + 1 nodes; the half-resolution estimate reuses every other node (no second run)."""
    lo, hi = p_init.support(1.0, width)
    G = 4 * (G // 4)  # nested: every other and every fourth node are grids of their own
    x = torch.linspace(lo, hi, G + 1, dtype=DTYPE, device=target.device)
    h = (hi - lo) / G
    model = ExactModel(target)
    level = grid.abar[-1]
    what = f"{sampler.info.name!r} on {grid.name} T={grid.T}"

    def log_ratio(points: Tensor) -> tuple[Tensor, Tensor]:
        """F and r = log q(F) + log F' - log p_init at the points."""
        F, dF = flow_map_1d(sampler, model, grid, points)
        if not torch.all(torch.isfinite(F)) or not torch.all(torch.isfinite(dF)):
            raise DivergenceError(f"sampler {what} produced non-finite values")
        if torch.any(dF <= 0):
            where = float(points[torch.nonzero(dF <= 0)[0, 0]])
            raise DivergenceError(
                f"the 1-D map of {what} is not increasing (F'(x) <= 0 at x = {where:.4g}): "
                "the change-of-variables method does not apply"
            )
        log_p = p_init.log_prob(points[:, None], 1.0)
        return F, target.log_prob(F[:, None], level) + torch.log(dF) - log_p

    F, r = log_ratio(x)
    p = torch.exp(p_init.log_prob(x[:, None], 1.0))
    q_in = target.cdf(F[-1:], level) - target.cdf(F[:1], level)
    p_in = p_init.cdf(x[-1:], 1.0) - p_init.cdf(x[:1], 1.0)
    tails = float((1 - q_in) + (1 - p_in))
    integrand = p * (torch.expm1(r) - r)
    # KL on all nodes, every other node and every fourth node: the two differences must both be small, since a
    # sharp feature (F' near zero somewhere) can make two under-resolved sums agree by accident.
    kl_fine, kl_half, kl_quarter = (float(_trapezoid(integrand[::k], k * h)) - float(q_in - p_in) for k in (1, 2, 4))
    tv, tv_previous = _tv_on_roots(x, r, log_ratio, lambda u: p_init.cdf(u, 1.0), lambda y: target.cdf(y, level))
    return {
        "tv": Measurement("tv", tv, abs(tv - tv_previous) + tails, "grid-1d-flow"),
        "kl": Measurement("kl", kl_fine, max(abs(kl_fine - kl_half), abs(kl_half - kl_quarter)) + tails,
                          "grid-1d-flow"),
    }


def _tv_on_roots(x: Tensor, r: Tensor, log_ratio, cdf_init, cdf_target, refinements: int = 3) -> tuple[float, float]:
    """TV = P_init(A) - Q(F(A)) on A = {r < 0} (where the output density exceeds q), from exact CDFs.

    A is a union of intervals whose ends are the sign changes of r, located on the grid and refined by regula falsi
    (each refinement runs the sampler on the roots only). An error delta in a root moves TV by O(delta^2): the
    integrand vanishes there. Returns TV at the last two root estimates (their difference is the error estimate)."""
    negative = r < 0
    cross = torch.nonzero(negative[1:] != negative[:-1]).flatten()
    a, b = x[cross], x[cross + 1]
    ra, rb = r[cross], r[cross + 1]
    one = torch.ones(1, dtype=x.dtype, device=x.device)
    mask = torch.tensor([(k % 2 == 0) == bool(negative[0]) for k in range(cross.numel() + 1)], device=x.device)

    def tv_at(roots: Tensor, F_roots: Tensor) -> float:
        P = torch.cat([0 * one, cdf_init(roots), one])
        Q = torch.cat([0 * one, cdf_target(F_roots), one])
        return float(((P[1:] - P[:-1]) - (Q[1:] - Q[:-1]))[mask].sum())

    if cross.numel() == 0:
        value = tv_at(x[:0], x[:0])
        return value, value
    values = []
    for _ in range(refinements):
        roots = a - ra * (b - a) / (rb - ra)
        F_roots, rr = log_ratio(roots)
        values.append(tv_at(roots, F_roots))
        left = torch.sign(rr) == torch.sign(ra)
        a, ra = torch.where(left, roots, a), torch.where(left, rr, ra)
        b, rb = torch.where(left, b, roots), torch.where(left, rb, rr)
    return values[-1], values[-2]


def grid_1d_flow(target, sampler, grid, init="exact", G: int = 8192, width: float = 11.0) -> dict[str, Measurement]:
    """metrics.md method 1. Error estimates: KL's changes across nested node sets (all, every other, every fourth),
    TV at the last two root refinements, plus the mass outside the grid."""
    p_init = initial_law(target, grid, init)
    out = _grid_1d_flow_pass(target, sampler, grid, p_init, G, width)
    for m in out.values():
        m.numerical_error += 64 * torch.finfo(DTYPE).eps * grid.T * abs(m.value)
        m.details.update({"G": G, "width": width})
    return out


# ---------------------------------------------------------------------------- method 2
def _lagrange_interpolate(values: Tensor, lo: float, h: float, u: Tensor, order: int = 8) -> Tensor:
    """Interpolate uniform-grid samples at points u with a centred local Lagrange stencil of `order` nodes."""
    G = values.numel()
    s = (u - lo) / h
    start = (torch.floor(s) - (order // 2 - 1)).long().clamp(0, G - order)
    nodes = start[:, None] + torch.arange(order, device=u.device)  # (n, order)
    t = s[:, None] - nodes.to(s.dtype)  # offsets from each node, in units of h
    weights = torch.ones_like(t)
    for j in range(order):
        for k in range(order):
            if j != k:
                weights[:, j] *= t[:, k] / (j - k)
    return (weights * values[nodes]).sum(-1)


def _pushforward(p: Tensor, z: Tensor, lo: float, h: float, m: Callable[[Tensor], Tensor], what: str) -> Tensor:
    """Density of m(X) on the grid z when X has density p on the same grid; m must be increasing."""
    run = lambda pts: m(pts[:, None])[:, 0]  # noqa: E731
    mz, dmz = torch.func.jvp(run, (z,), (torch.ones_like(z),))
    if torch.any(dmz <= 0):
        where = float(z[torch.nonzero(dmz <= 0)[0, 0]])
        raise DivergenceError(f"{what}: the transition's mean map is not increasing at x = {where:.4g}")
    inside = (z > mz[0]) & (z < mz[-1])
    target_z = z[inside]
    # Start from the inverse of the piecewise-linear interpolant of (z, m(z)), then Newton.
    idx = torch.searchsorted(mz, target_z).clamp(1, z.numel() - 1)
    frac = (target_z - mz[idx - 1]) / (mz[idx] - mz[idx - 1])
    u = z[idx - 1] + frac * (z[idx] - z[idx - 1])
    for _ in range(8):
        mu, dmu = torch.func.jvp(run, (u,), (torch.ones_like(u),))
        step = (mu - target_z) / dmu
        u = u - step
        # Newton converges quadratically: once the step is at rounding level, m' at the previous iterate equals
        # m' at u to within that step times m'', far below the interpolation error.
        if float(step.abs().max()) < 1e-13 * max(1.0, float(u.abs().max())):
            break
    out = torch.zeros_like(p)
    out[inside] = (_lagrange_interpolate(p, lo, h, u) / dmu).clamp_min(0.0)
    return out


def _gaussian_blur(p: Tensor, h: float, std: float) -> Tensor:
    """Convolution with N(0, std^2) on a uniform grid, by FFT with zero padding (no wrap-around)."""
    G = p.numel()
    n = 2 * G
    spectrum = torch.fft.rfft(p, n=n)
    omega = 2 * math.pi * torch.fft.rfftfreq(n, d=h, dtype=p.dtype, device=p.device)
    return torch.fft.irfft(spectrum * torch.exp(-0.5 * (std * omega) ** 2), n=n)[:G].clamp_min(0.0)


def _kernel_range(target: GaussianMixture, grid: Grid, p_init: GaussianMixture, width: float) -> tuple[float, float]:
    lo, hi = p_init.support(1.0, width)
    for level in (grid.abar[0], grid.abar[grid.steps // 2], grid.abar[-1]):
        a, b = target.support(level, width)
        lo, hi = min(lo, a), max(hi, b)
    return lo, hi


def kernel_density_1d(target, sampler: MarkovSampler, grid: Grid, p_init: GaussianMixture, G: int,
                      width: float) -> tuple[Tensor, float, Tensor, float]:
    """The output density of a Markov sampler on a uniform grid (the propagation of method 2): nodes z, spacing h,
    the density normalised to mass one, and the mass it had before normalising (its defect is an error term)."""
    lo, hi = _kernel_range(target, grid, p_init, width)
    z = torch.linspace(lo, hi, G, dtype=DTYPE, device=target.device)
    h = (hi - lo) / (G - 1)
    p = torch.exp(p_init.log_prob(z[:, None], 1.0))
    model = CountingModel(ExactModel(target))
    what = f"{sampler.info.name} on {grid.name} T={grid.T}"
    for step in sampler.transitions(model, grid):
        if step.map is not None:
            p = _pushforward(p, z, lo, h, step.map, what)
        std = float(step.std)
        if std > 0:
            p = _gaussian_blur(p, h, std)
    mass = float(_trapezoid(p, h))
    return z, h, p / mass, mass


def _grid_1d_kernel_once(target, sampler: MarkovSampler, grid, p_init, G: int, width: float):
    z, h, p, mass = kernel_density_1d(target, sampler, grid, p_init, G, width)
    level = grid.abar[-1]
    q = torch.exp(target.log_prob(z[:, None], level))
    q_out = float(1 - (target.cdf(z[-1:], level) - target.cdf(z[:1], level)))
    tv = 0.5 * _abs_integral(p - q, h) + 0.5 * q_out
    log_ratio = torch.log(p).clamp_min(-745.0) - target.log_prob(z[:, None], level)
    kl = float(_trapezoid(_kl_integrand(p, q, log_ratio), h))
    return {"tv": tv, "kl": kl}, abs(mass - 1) + q_out


def _abs_integral(g: Tensor, h: float) -> float:
    """int |g| on a uniform grid: the trapezoid rule, except that a cell where g changes sign gets the exact integral
    of |linear interpolant|, h (g_i^2 + g_(i+1)^2) / (2 (|g_i| + |g_(i+1)|)), so that kinks cost O(h^3), not O(h^2)."""
    a, b = g[:-1], g[1:]
    cell = 0.5 * h * (a.abs() + b.abs())
    kink = 0.5 * h * (a * a + b * b) / (a.abs() + b.abs()).clamp_min(torch.finfo(g.dtype).tiny)
    return float(torch.where(a * b < 0, kink, cell).sum())


def _kl_integrand(p: Tensor, q: Tensor, u: Tensor) -> Tensor:
    """p log(p/q) - p + q >= 0 with u = log(p/q): equal to q f(u), f(u) = e^u (u - 1) + 1. Near u = 0 the series
    f = sum_n u^(n+2) / (n! (n+2)) keeps small divergences accurate; elsewhere p (u - 1) + q avoids e^u, which
    overflows where q underflows (narrow targets, far tails)."""
    series = q * (u**2 / 2 + u**3 / 3 + u**4 / 8 + u**5 / 30 + u**6 / 144)
    return torch.where(u.abs() < 1e-2, series, p * (u - 1) + q)


def min_scale_1d(target: GaussianMixture, grid: Grid) -> float:
    """The narrowest component standard deviation met along the grid (the density's finest feature)."""
    return float(torch.sqrt(target.level_variances(grid.abar[-1])).min())


def grid_1d_kernel(target, sampler, grid, init="exact", G: int | None = None, width: float = 11.0):
    """metrics.md method 2, with its error estimate from a half-resolution rerun."""
    if not isinstance(sampler, MarkovSampler):
        raise DivergenceError(f"sampler {sampler.info.name!r} is not written as Gaussian transitions")
    p_init = initial_law(target, grid, init)
    if G is None:
        lo, hi = _kernel_range(target, grid, p_init, width)
        # Resolve the narrowest feature with ~12 nodes per standard deviation; at least 4096 nodes.
        G = int(2 ** math.ceil(math.log2(max(4096, 12 * (hi - lo) / min_scale_1d(target, grid)))))
        if G > 2**20:
            raise DivergenceError(
                f"target {target.name!r} at T={grid.T} has features too narrow for the 1-D kernel engine "
                f"(finest scale {min_scale_1d(target, grid):.3g}); use a wider target or smaller T"
            )
    fine, defect = _grid_1d_kernel_once(target, sampler, grid, p_init, G, width)
    coarse, _ = _grid_1d_kernel_once(target, sampler, grid, p_init, G // 2, width)
    # KL's integrand is smooth: the fine value stands, the coarse one bounds its error. TV's |p - q| has kinks,
    # whose Euler-Maclaurin end terms leave an error c h^2 (observed ratio 4.0 per halving of h): Richardson
    # extrapolation removes it, and the size of that correction is reported as TV's error.
    kl_error = abs(fine["kl"] - coarse["kl"]) + defect
    tv_correction = (fine["tv"] - coarse["tv"]) / 3
    details = {"G": G, "width": width}
    return {
        "tv": Measurement("tv", fine["tv"] + tv_correction, abs(tv_correction) + defect, "grid-1d-kernel", details),
        "kl": Measurement("kl", fine["kl"], kl_error, "grid-1d-kernel", dict(details)),
    }


# ---------------------------------------------------------------------------- method 3
def _basis_images(fn: Callable[[Tensor], Tensor], centre: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """fn(centre) and the columns fn(centre + b_j) - fn(centre) of an affine fn (its Jacobian times basis)."""
    points = torch.cat([centre[None], centre[None] + basis.T], 0)
    images = fn(points)
    return images[0], (images[1:] - images[0]).T


def gaussian_output_law(target: GaussianMixture, sampler: Sampler, grid: Grid, init_mean: Tensor, init_cov: Tensor,
                        scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Mean and covariance of the (exactly Gaussian) output of any sampler on a Gaussian target."""
    if not target.is_gaussian:
        raise DivergenceError(f"the Gaussian engine needs a one-component target, {target.name!r} has K={target.K}")
    d = target.d
    eye = torch.eye(d, dtype=DTYPE, device=target.device)
    model = CountingModel(ExactModel(target))
    if isinstance(sampler, MarkovSampler):
        mean, cov = init_mean, init_cov
        for step in sampler.transitions(model, grid):
            if step.map is not None:
                mean, A = _basis_images(step.map, mean, scale * eye)
                A = A / scale
                cov = A @ cov @ A.T
            cov = cov + float(step.std) ** 2 * eye
        return mean, 0.5 * (cov + cov.T)
    if sampler.info.stochastic:
        raise DivergenceError(f"stochastic sampler {sampler.info.name!r} is not written as Gaussian transitions")
    L = torch.linalg.cholesky(init_cov)
    mean, J = _basis_images(lambda pts: sampler.run(model, grid, pts, ZeroNoise()), init_mean, scale * L)
    J = J / scale
    cov = J @ J.T
    return mean, 0.5 * (cov + cov.T)


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


def gaussian_tv_mc(m1, S1, m2, S2, n: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """TV = E_p[(1 - q/p)_+] by Monte Carlo with exact densities; returns (value, standard error)."""
    gen = torch.Generator(device=m1.device).manual_seed(seed)
    L1 = torch.linalg.cholesky(S1)
    x = m1 + torch.randn(n, m1.numel(), dtype=DTYPE, device=m1.device, generator=gen) @ L1.T
    lp = torch.distributions.MultivariateNormal(m1, scale_tril=L1).log_prob(x)
    lq = torch.distributions.MultivariateNormal(m2, covariance_matrix=S2).log_prob(x)
    vals = (-torch.expm1(lq - lp)).clamp_min(0)
    return float(vals.mean()), float(vals.std() / math.sqrt(n))


def gaussian_engine(target, sampler, grid, init="exact", seed: int = 0, mc_samples: int = 200_000):
    """metrics.md method 3."""
    p_init = initial_law(target, grid, init)
    m0, S0 = p_init.means[0], p_init.covs[0]
    mean, cov = gaussian_output_law(target, sampler, grid, m0, S0)
    mean_b, cov_b = gaussian_output_law(target, sampler, grid, m0, S0, scale=0.5)
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
        tv, se = gaussian_tv_mc(mean, cov, mq, Sq, n=mc_samples, seed=seed)
        out["tv"] = Measurement("tv", tv, se, "gaussian-mc", {"samples": mc_samples, "standard_error": se})
    for m in out.values():
        m.details.update({"mean": mean.tolist(), "cov": cov.tolist()})
    return out


# ---------------------------------------------------------------------------- initialisation error
def init_error(target: GaussianMixture, grid: Grid, init: str) -> dict[str, float]:
    """TV and KL between the initial law and q_T (zero for the exact start)."""
    if init == "exact":
        return {"tv": 0.0, "kl": 0.0}
    p_init = initial_law(target, grid, init)
    q_T = initial_law(target, grid, "exact")
    if target.d == 1:
        lo, hi = _kernel_range(target, grid, p_init, 12.0)
        x = torch.linspace(lo, hi, 1 << 15, dtype=DTYPE, device=target.device)[:, None]
        h = float(x[1, 0] - x[0, 0])
        lp, lq = p_init.log_prob(x, 1.0), q_T.log_prob(x, 1.0)
        p = torch.exp(lp)
        return {
            "tv": 0.5 * float(_trapezoid((p - torch.exp(lq)).abs(), h)),
            "kl": float(_trapezoid(p * (torch.expm1(lq - lp) - (lq - lp)), h)),
        }
    if target.is_gaussian:
        mq, Sq = q_T.means[0], q_T.covs[0]
        mp, Sp = p_init.means[0], p_init.covs[0]
        return {"tv": gaussian_tv_mc(mp, Sp, mq, Sq)[0], "kl": gaussian_kl(mp, Sp, mq, Sq)}
    return {"tv": float("nan"), "kl": float("nan")}


# ---------------------------------------------------------------------------- the engine
ENGINES: dict[str, Callable[..., dict[str, Measurement]]] = {
    "grid-1d-flow": grid_1d_flow,
    "grid-1d-kernel": grid_1d_kernel,
    "gaussian": gaussian_engine,
}


def choose_method(target: GaussianMixture, sampler: Sampler) -> str:
    """The exact method that applies to a (target, sampler) pair, or a clear refusal.

    In order: the 1-D engines (d = 1), the Gaussian engine (one-component target), the product engine (a target
    whose coordinates are independent: theory.product), flow Monte Carlo (deterministic samplers: theory.flow)."""
    from theory import flow, product  # noqa: F401  (they register 'flow-mc' and 'product' in ENGINES)

    if target.d == 1 and not sampler.info.stochastic:
        return "grid-1d-flow"
    if target.d == 1 and isinstance(sampler, MarkovSampler):
        return "grid-1d-kernel"
    if target.is_gaussian:
        return "gaussian"
    if getattr(target, "factorises", False):
        return "product"
    if not sampler.info.stochastic:
        return "flow-mc"
    raise DivergenceError(
        f"no exact method for sampler {sampler.info.name!r} on target {target.name!r} (d={target.d}, K={target.K}): "
        "a stochastic sampler in d > 1 needs a one-component (Gaussian) target or a product target, and the 1-D "
        "kernel engine needs a Markov (Gaussian-transition) sampler"
    )


def measure(target: GaussianMixture, sampler: Sampler, grid: Grid, init: str = "exact", method: str = "auto",
            **options) -> dict[str, Measurement]:
    """Exact error of `sampler` on `grid` against q at the grid's last level: {metric: Measurement}."""
    from theory import flow, product  # noqa: F401  (they register 'flow-mc' and 'product' in ENGINES)

    name = choose_method(target, sampler) if method == "auto" else method
    if name not in ENGINES:
        raise DivergenceError(f"unknown method {name!r}: known methods are {', '.join(ENGINES)}")
    result = ENGINES[name](target, sampler, grid, init=init, **options)
    for m in result.values():
        if not math.isfinite(m.value) or not math.isfinite(m.numerical_error):
            raise DivergenceError(f"method {name} gave a non-finite {m.metric} for {sampler.info.name} T={grid.T}")
    return result
