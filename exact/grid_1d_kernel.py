"""Method 2 (shared/spec/metrics.md): 1-D, stochastic samplers written as Gaussian transitions x -> m(x) + s Z.

The density lives on a uniform grid. A map pushes it forward exactly (p(m^-1(z)) / m'(m^-1(z)), the inverse by
Newton, p between nodes by 8-point Lagrange interpolation; m and m' from one reverse-mode pass each,
exact.base.map_and_slope); the noise is a convolution done in Fourier space, where
it multiplies by exp(-s^2 w^2 / 2): mass-conserving and exact for any s, tiny s in the last steps included.
KL's error estimate: |value(G) - value(G/2)|, the mass defect and the mass outside the grid. TV (kinks where
p = q, an error c h^2) is Richardson-extrapolated from G and G/2, with the size of the correction as its error.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from exact.base import (
    DivergenceError,
    Measurement,
    initial_law,
    map_and_slope,
    trapezoid,
)
from samplers.base import CountingModel, ExactModel, MarkovSampler
from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture


def _lagrange_interpolate(values: Tensor, lo: float, h: float, u: Tensor, order: int = 8) -> Tensor:
    """Interpolate uniform-grid samples at points u with a local Lagrange stencil of `order` nodes (centred, shifted
    inwards at the ends), in barycentric form: with t_j = (u - z_(node_j)) / h and the equispaced weights
    w_j = (-1)^j C(order - 1, j),  p(u) = sum_j (w_j / t_j) values_j / sum_j (w_j / t_j)  (Berrut & Trefethen 2004,
    the second barycentric formula; exact for polynomials of degree < order), and p(u) = values_j where t_j = 0."""
    G = values.numel()
    s = (u - lo) / h
    below = torch.floor(s)
    start = (below - (order // 2 - 1)).long().clamp(0, G - order)
    nodes = start[:, None] + torch.arange(order, device=u.device)  # (n, order)
    t = s[:, None] - nodes.to(s.dtype)  # offsets from each node, in units of h
    hit = s == below  # u on a node: the formula's 0/0 is replaced by that node's value
    weights = _barycentric_weights(order, t) / torch.where(t == 0, torch.ones_like(t), t)
    out = (weights * values[nodes]).sum(-1) / weights.sum(-1)
    return torch.where(hit, values[below.long().clamp(0, G - 1)], out)


def _barycentric_weights(order: int, like: Tensor) -> Tensor:
    """(-1)^j C(order - 1, j), j = 0 .. order - 1: the barycentric weights of equispaced nodes."""
    return torch.tensor([(-1.0) ** j * math.comb(order - 1, j) for j in range(order)], dtype=like.dtype,
                        device=like.device)


def _pushforward(p: Tensor, z: Tensor, lo: float, h: float, m: Callable[[Tensor], Tensor], what: str) -> Tensor:
    """Density of m(X) on the grid z when X has density p on the same grid; m must be increasing."""
    return _pushforward_together([(p, z, lo, h)], m, what)[0]


def _pushforward_together(densities: list[tuple[Tensor, Tensor, float, float]], m: Callable[[Tensor], Tensor],
                          what: str) -> list[Tensor]:
    """_pushforward for several densities (p, z, lo, h) at once, each on its own uniform grid: the map runs once per
    stage on all their points together (it acts on each point alone, so the numbers are those of separate runs),
    which halves the per-operation overhead when the fine and the half-resolution grid travel together.

    For each grid: m, m' at the nodes (one reverse-mode pass), then the inverse at the nodes inside the image,
    started from the cubic Hermite interpolant of the inverse through (m(z_i), z_i) with slopes 1/m'(z_i)
    (error O(h^4)), and refined by Newton. Once a Newton step s is small, the iterate is exact to O(kappa s^2)
    (kappa = max |m''| / m' over the grid) and m' there is m' at the previous iterate minus s m'' (m'' from central
    differences of m' at the nodes, linearly interpolated), exact to O(s^2 + s h^2): one Newton evaluation is then
    enough. Otherwise Newton goes on (at most 8 evaluations) until its step is at rounding level."""
    run = lambda pts: m(pts[:, None])[:, 0]
    sizes = [z.numel() for _, z, _, _ in densities]
    mz_all, dmz_all = map_and_slope(run, torch.cat([z for _, z, _, _ in densities]))
    starts, targets, kappas, corrections = [], [], [], []
    for (p, z, lo, h), mz, dmz in zip(densities, mz_all.split(sizes), dmz_all.split(sizes)):
        if torch.any(dmz <= 0):
            where = float(z[torch.nonzero(dmz <= 0)[0, 0]])
            raise DivergenceError(f"{what}: the transition's mean map is not increasing at x = {where:.4g}")
        # The nodes strictly inside the image (m(z_0), m(z_-1)): a contiguous range, since z increases.
        inside = slice(int(torch.searchsorted(z, mz[0], right=True)), int(torch.searchsorted(z, mz[-1])))
        target_z = z[inside]
        idx = torch.searchsorted(mz, target_z).clamp(1, z.numel() - 1)
        y0, y1, x0, x1 = mz[idx - 1], mz[idx], z[idx - 1], z[idx]
        dy = y1 - y0
        s = (target_z - y0) / dy
        s2, s3 = s * s, s * s * s
        starts.append((2 * s3 - 3 * s2 + 1) * x0 + (s3 - 2 * s2 + s) * dy / dmz[idx - 1]
                      + (3 * s2 - 2 * s3) * x1 + (s3 - s2) * dy / dmz[idx])
        targets.append((inside, target_z))
        curvature = torch.zeros_like(dmz)  # m'' by central differences (one-sided at the ends)
        curvature[1:-1] = (dmz[2:] - dmz[:-2]) / (2 * h)
        curvature[0], curvature[-1] = (dmz[1] - dmz[0]) / h, (dmz[-1] - dmz[-2]) / h
        kappas.append(curvature.abs().max() / dmz.min())
        corrections.append((curvature, z, h))
    u = torch.cat(starts)
    target_all = torch.cat([t for _, t in targets])
    kappa = float(torch.stack(kappas).max())
    for iteration in range(8):
        mu, dmu = map_and_slope(run, u)
        step = (mu - target_all) / dmu
        u = u - step
        largest = float(step.abs().max())
        scale = max(1.0, float(u.abs().max()))
        if largest < 1e-13 * scale:
            break  # the old criterion: m' at the previous iterate is m' at u to rounding
        if largest < 1e-11 * scale and kappa * largest * largest < 1e-16 * scale:
            # m' at u from m' at the previous iterate and the grid's m'' there.
            pieces = []
            for (curvature, z, h), v, s_ in zip(corrections, (u + step).split([t.numel() for _, t in targets]),
                                                step.split([t.numel() for _, t in targets])):
                pos = ((v - z[0]) / h).clamp(0, z.numel() - 1.000001)
                i = pos.floor().long()
                frac = pos - i
                second = (1 - frac) * curvature[i] + frac * curvature[i + 1]
                pieces.append(s_ * second)
            dmu = dmu - torch.cat(pieces)
            break
    out = []
    counts = [t.numel() for _, t in targets]
    for (p, z, lo, h), (inside, _), u_i, dmu_i in zip(densities, targets, u.split(counts), dmu.split(counts)):
        pushed = torch.zeros_like(p)
        pushed[inside] = (_lagrange_interpolate(p, lo, h, u_i) / dmu_i).clamp_min(0.0)
        out.append(pushed)
    return out


def _gaussian_blur(p: Tensor, h: float, std: float) -> Tensor:
    """Convolution with N(0, std^2) on a uniform grid, by FFT with zero padding (no wrap-around)."""
    G = p.numel()
    n = 2 * G
    spectrum = torch.fft.rfft(p, n=n)
    omega = 2 * math.pi * torch.fft.rfftfreq(n, d=h, dtype=p.dtype, device=p.device)
    return torch.fft.irfft(spectrum * torch.exp(-0.5 * (std * omega) ** 2), n=n)[:G].clamp_min(0.0)


def kernel_range(target: GaussianMixture, grid: Grid, p_init: GaussianMixture, width: float) -> tuple[float, float]:
    lo, hi = p_init.support(1.0, width)
    for level in (grid.abar[0], grid.abar[grid.steps // 2], grid.abar[-1]):
        a, b = target.support(level, width)
        lo, hi = min(lo, a), max(hi, b)
    return lo, hi


def kernel_density_1d(target, sampler: MarkovSampler, grid: Grid, p_init: GaussianMixture, G: int,
                      width: float) -> tuple[Tensor, float, Tensor, float]:
    """The output density of a Markov sampler on a uniform grid (the propagation of method 2): nodes z, spacing h,
    the density normalised to mass one, and the mass it had before normalising (its defect is an error term)."""
    return kernel_densities_1d(target, sampler, grid, p_init, [G], width)[0]


def kernel_densities_1d(target, sampler: MarkovSampler, grid: Grid, p_init: GaussianMixture, sizes: list[int],
                        width: float) -> list[tuple[Tensor, float, Tensor, float]]:
    """kernel_density_1d on uniform grids of several sizes over the same range, propagated together (one run of
    the transitions; each map evaluated once per stage on all grids' points)."""
    lo, hi = kernel_range(target, grid, p_init, width)
    grids = []
    for G in sizes:
        z = torch.linspace(lo, hi, G, dtype=DTYPE, device=target.device)
        grids.append([torch.exp(p_init.log_prob(z[:, None], 1.0)), z, lo, (hi - lo) / (G - 1)])
    model = CountingModel(ExactModel(target))
    what = f"{sampler.info.name} on {grid.name} T={grid.T}"
    for step in sampler.transitions(model, grid):
        if step.map is not None:
            for item, pushed in zip(grids, _pushforward_together([tuple(g) for g in grids], step.map, what)):
                item[0] = pushed
        std = float(step.std)
        if std > 0:
            for item in grids:
                item[0] = _gaussian_blur(item[0], item[3], std)
    out = []
    for p, z, _, h in grids:
        mass = float(trapezoid(p, h))
        out.append((z, h, p / mass, mass))
    return out


def _grid_1d_kernel_once(target, grid, z: Tensor, h: float, p: Tensor, mass: float):
    """TV and KL of the density p on the grid z against q at the grid's last level, and the mass error."""
    level = grid.abar[-1]
    q = torch.exp(target.log_prob(z[:, None], level))
    q_out = float(1 - (target.cdf(z[-1:], level) - target.cdf(z[:1], level)))
    tv = 0.5 * _abs_integral(p - q, h) + 0.5 * q_out
    log_ratio = torch.log(p).clamp_min(-745.0) - target.log_prob(z[:, None], level)
    kl = float(trapezoid(_kl_integrand(p, q, log_ratio), h))
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


def default_G(target: GaussianMixture, grid: Grid, p_init: GaussianMixture, width: float, engine: str) -> int:
    """The grid size that resolves the narrowest feature with ~12 nodes per standard deviation (a power of two, at
    least 4096), or a one-line refusal above 2^20 nodes."""
    lo, hi = kernel_range(target, grid, p_init, width)
    G = int(2 ** math.ceil(math.log2(max(4096, 12 * (hi - lo) / min_scale_1d(target, grid)))))
    if G > 2**20:
        raise DivergenceError(
            f"target {target.name!r} at T={grid.T} has features too narrow for {engine} "
            f"(finest scale {min_scale_1d(target, grid):.3g}); use a wider target or smaller T")
    return G


def grid_1d_kernel(target, sampler, grid, init="exact", G: int | None = None, width: float = 11.0):
    """metrics.md method 2, with its error estimate from a half-resolution rerun."""
    if not isinstance(sampler, MarkovSampler):
        raise DivergenceError(f"sampler {sampler.info.name!r} is not written as Gaussian transitions")
    p_init = initial_law(target, grid, init)
    if G is None:
        G = default_G(target, grid, p_init, width, "the 1-D kernel engine")
    # The fine grid and the half-resolution one (the error estimate) travel through the transitions together.
    fine_density, coarse_density = kernel_densities_1d(target, sampler, grid, p_init, [G, G // 2], width)
    fine, defect = _grid_1d_kernel_once(target, grid, *fine_density)
    coarse, _ = _grid_1d_kernel_once(target, grid, *coarse_density)
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
