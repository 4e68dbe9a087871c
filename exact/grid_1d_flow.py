"""Method 1 (shared/spec/metrics.md): 1-D, deterministic samplers.

The run is a map F; on a uniform grid over the initial law we get F and F' by differentiating through the whole run
(one reverse-mode pass: F acts on each node alone, exact.base.map_and_slope), and with r = log q(F) + log F' -
log p_init (the log ratio q/p at y = F(x)) we integrate

    KL(p||q) = int p_init (expm1(r) - r) dx - (Q_in - P_in),

where the last term (q and p_init mass over the covered intervals, from exact CDFs) makes the integrand
non-negative and second order in r; the trapezoid rule is spectrally accurate on it. TV = 1/2 int p_init
|expm1(r)| has kinks, so instead TV = P_init(A) - Q(F(A)) on A = {r < 0}, a union of intervals whose ends (the
roots of r, located by cubic interpolation of r through the nodes around each sign change; one more run of the
sampler gives F and r there, and the second-order term that the roots' error leaves out of TV is added) go through
the exact CDFs. Error estimates: the larger of KL's changes from every fourth to every other node to all nodes;
the size of TV's second-order correction; plus the mass left outside the grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

from exact.base import DivergenceError, Measurement, initial_law, map_and_slope, trapezoid
from samplers.base import CountingModel, ExactModel, Sampler
from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture


def flow_map_1d(sampler: Sampler, model, grid: Grid, x: Tensor) -> tuple[Tensor, Tensor]:
    """F(x) and F'(x) for a deterministic sampler on 1-D points x (shape (n,)), by one reverse-mode pass."""
    counting = CountingModel(model)
    return map_and_slope(lambda points: sampler.run(counting, grid, points[:, None], None)[:, 0], x)


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
    kl_fine, kl_half, kl_quarter = (float(trapezoid(integrand[::k], k * h)) - float(q_in - p_in) for k in (1, 2, 4))
    tv, tv_previous = _tv_on_roots(x, r, log_ratio, lambda u: p_init.cdf(u, 1.0), lambda y: target.cdf(y, level),
                                   lambda u: torch.exp(p_init.log_prob(u[:, None], 1.0)))
    return {
        "tv": Measurement("tv", tv, abs(tv - tv_previous) + tails, "grid-1d-flow"),
        "kl": Measurement("kl", kl_fine, max(abs(kl_fine - kl_half), abs(kl_half - kl_quarter)) + tails,
                          "grid-1d-flow"),
    }


def _tv_on_roots(x: Tensor, r: Tensor, log_ratio, cdf_init, cdf_target, density_init) -> tuple[float, float]:
    """TV = P_init(A) - Q(F(A)) on A = {r < 0} (where the output density exceeds q), from exact CDFs.

    A is a union of intervals whose ends are the sign changes of r, each located as the root rho_c of the cubic
    through the four nodes around it (error O(h^4)); one run of the sampler on the roots gives F and the true r
    there. The integrand of TV, f = p_init (1 - e^r), vanishes at each true root rho with slope -p_init r', so ending
    an interval at rho_c instead leaves out p_init |r'| delta^2 / 2 (whichever side, delta = rho_c - rho), and one
    Newton step, delta = r(rho_c) / r'(rho_c) with the cubic's slope, gives that second-order term: the value is TV
    at the cubic roots plus sum p_init r(rho_c)^2 / (2 |r'(rho_c)|) (third-order error), and the size of that
    correction (the error of the uncorrected value) is its generous error estimate.
    Returns (the corrected TV, TV at the cubic roots)."""
    negative = r < 0
    cross = torch.nonzero(negative[1:] != negative[:-1]).flatten()
    one = torch.ones(1, dtype=x.dtype, device=x.device)
    mask = torch.tensor([(k % 2 == 0) == bool(negative[0]) for k in range(cross.numel() + 1)], device=x.device)

    def tv_at(roots: Tensor, F_roots: Tensor) -> float:
        P = torch.cat([0 * one, cdf_init(roots), one])
        Q = torch.cat([0 * one, cdf_target(F_roots), one])
        return float(((P[1:] - P[:-1]) - (Q[1:] - Q[:-1]))[mask].sum())

    if cross.numel() == 0:
        value = tv_at(x[:0], x[:0])
        return value, value
    cubic, slope = _interpolated_roots(x, r, cross, 4)
    F_cubic, r_cubic = log_ratio(cubic)
    tv = tv_at(cubic, F_cubic)
    left_out = density_init(cubic) * r_cubic * r_cubic / (2 * slope.abs())
    correction = float(torch.where(torch.isfinite(left_out), left_out, torch.zeros_like(left_out)).sum())
    return tv + correction, tv


def _interpolated_roots(x: Tensor, r: Tensor, cross: Tensor, nodes: int, halvings: int = 60) -> tuple[Tensor, Tensor]:
    """For each i in `cross` (r changes sign between nodes i and i + 1 of the uniform grid x), the root in
    [x_i, x_(i+1)] of the polynomial through `nodes` consecutive nodes around the cell (shifted inwards at the ends),
    by bisection on the polynomial itself (its ends have the signs of r_i and r_(i+1); `halvings` = 60 resolves the
    cell to below rounding), and the polynomial's slope d/dx there (a central difference, exact to rounding for a
    cubic but for its third derivative times 1e-6)."""
    G = x.numel()
    first = (cross - (nodes // 2 - 1)).clamp(0, G - nodes)
    stencil = first[:, None] + torch.arange(nodes, device=x.device)  # (m, nodes)
    values = r[stencil]
    offsets = torch.arange(nodes, dtype=x.dtype, device=x.device)
    h = x[1] - x[0]

    def polynomial(t: Tensor) -> Tensor:  # the interpolant at t (in units of h from the stencil's start)
        total = torch.zeros_like(t)
        for j in range(nodes):
            term = values[:, j]
            for k in range(nodes):
                if k != j:
                    term = term * (t - offsets[k]) / (offsets[j] - offsets[k])
            total = total + term
        return total

    lo = (cross - first).to(x.dtype)  # the cell [lo, lo + 1] in stencil units
    hi = lo + 1
    lo_negative = r[cross] < 0
    for _ in range(halvings):
        mid = 0.5 * (lo + hi)
        same = (polynomial(mid) < 0) == lo_negative
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    t = 0.5 * (lo + hi)
    slope = (polynomial(t + 1e-3) - polynomial(t - 1e-3)) / (2e-3 * h)
    return x[first] + t * h, slope


def grid_1d_flow(target, sampler, grid, init="exact", G: int = 8192, width: float = 11.0) -> dict[str, Measurement]:
    """metrics.md method 1. Error estimates: KL's changes across nested node sets (all, every other, every fourth),
    the size of TV's second-order root correction, plus the mass outside the grid."""
    p_init = initial_law(target, grid, init)
    out = _grid_1d_flow_pass(target, sampler, grid, p_init, G, width)
    for m in out.values():
        m.numerical_error += 64 * torch.finfo(DTYPE).eps * grid.T * abs(m.value)
        m.details.update({"G": G, "width": width})
    return out
