"""The output density of a Markov sampler in one dimension, tabulated, as two other engines need it.

The density propagation of method 2 (exact.grid_1d_kernel.kernel_density_1d: mass-conserving pushforward and
Fourier convolution on a uniform grid) gives the sampler's output density p on G nodes (`Tabulated1D`; engines
tabulate at G and G/2 once, `tabulate_pair`, and take both uses below from the same pair). From it:

- `LogDensity1D`: log p anywhere on the grid, by local Lagrange interpolation of log p (log p of a blurred mixture
  is smooth, nearly quadratic, so a 6-node stencil is accurate to about (h / scale)^6 where h resolves the
  narrowest component with >= 12 nodes). Engines that draw y by running the sampler itself (exact draws) and need
  log p(y) for Monte Carlo with exact densities use this (exact.subspace's TV).
- `reverse_kl_from` / `reverse_kl_1d`: KL(q || p), the divergence with the true law first (the direction that path KL bounds, see
  exact.path_kl), on the same grid: int p f(u), u = log(q / p), f(u) = e^u (u - 1) + 1 >= 0 (equal to
  q log(q/p) - q + p), with the series of f near u = 0 so that small divergences keep their relative accuracy.
  Error estimate: |value(G) - value(G/2)| plus the mass defect and the mass of q outside the grid.

G defaults to the kernel engine's rule: >= 4096 nodes and >= 12 per narrowest standard deviation met on the grid.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exact.base import DivergenceError, Measurement, initial_law, trapezoid
from exact.grid_1d_kernel import kernel_density_1d, kernel_range, min_scale_1d
from samplers.base import MarkovSampler, Sampler
from theory.schedules import Grid
from theory.targets import GaussianMixture

MAX_G = 1 << 20
LOG_TINY = -745.0  # log of the smallest positive double: where the tabulated density underflows


def default_G(target: GaussianMixture, grid: Grid, init: str, width: float = 11.0) -> int:
    """The kernel engine's resolution rule: a power of two, >= 4096, >= 12 nodes per narrowest deviation."""
    lo, hi = kernel_range(target, grid, initial_law(target, grid, init), width)
    G = int(2 ** math.ceil(math.log2(max(4096, 12 * (hi - lo) / min_scale_1d(target, grid)))))
    if G > MAX_G:
        raise DivergenceError(
            f"target {target.name!r} at T={grid.T} has features too narrow for a tabulated 1-D density "
            f"(finest scale {min_scale_1d(target, grid):.3g})"
        )
    return G


def _require_markov(sampler: Sampler) -> MarkovSampler:
    if not isinstance(sampler, MarkovSampler):
        raise DivergenceError(f"sampler {sampler.info.name!r} is not written as Gaussian transitions: "
                              "no tabulated 1-D output density")
    return sampler


class LogDensity1D:
    """log p of a density tabulated on a uniform grid, by 6-node Lagrange interpolation of log p."""

    ORDER = 6

    def __init__(self, z: Tensor, p: Tensor):
        self.lo = float(z[0])
        self.h = float(z[1] - z[0])
        self.log_p = torch.log(p).clamp_min(LOG_TINY)
        self.G = p.numel()
        self.hi = float(z[-1])

    def outside(self, y: Tensor) -> int:
        """How many points lie off the tabulated interval (they get the nearest stencil's extrapolation)."""
        return int(((y < self.lo) | (y > self.hi)).sum())

    def __call__(self, y: Tensor) -> Tensor:
        s = (y - self.lo) / self.h
        m = self.ORDER
        start = (torch.floor(s) - (m // 2 - 1)).long().clamp(0, self.G - m)
        nodes = start[..., None] + torch.arange(m, device=y.device)
        t = s[..., None] - nodes.to(s.dtype)  # offsets from each node, in units of h
        weights = torch.ones_like(t)
        for j in range(m):
            for k in range(m):
                if j != k:
                    weights[..., j] *= t[..., k] / (j - k)
        return (weights * self.log_p[nodes]).sum(-1)


class Tabulated1D:
    """A Markov sampler's output density on G uniform nodes (kernel_density_1d, normalised), with the mass defect."""

    def __init__(self, target: GaussianMixture, sampler: Sampler, grid: Grid, init: str, G: int, width: float = 11.0):
        self.target, self.grid, self.G = target, grid, G
        self.z, self.h, self.p, mass = kernel_density_1d(target, _require_markov(sampler), grid,
                                                         initial_law(target, grid, init), G, width)
        self.defect = abs(mass - 1)

    def log_density(self) -> LogDensity1D:
        return LogDensity1D(self.z, self.p)

    def reverse_kl(self) -> tuple[float, float]:
        """KL(q || p) on the nodes, and its defect term (mass defect + mass of q off the grid)."""
        target, level, z, p = self.target, self.grid.abar[-1], self.z, self.p
        log_q = target.log_prob(z[:, None], level)
        q = torch.exp(log_q)
        u = log_q - torch.log(p).clamp_min(LOG_TINY)
        # p f(u) = q log(q/p) - q + p; where p underflows (u large) the second form avoids e^u overflowing.
        integrand = torch.where(u < 30.0, p * _f(u.clamp_max(30.0)), q * (u - 1) + p)
        q_out = float(1 - (target.cdf(z[-1:], level) - target.cdf(z[:1], level)))
        return float(trapezoid(integrand, self.h)), self.defect + q_out


def _f(u: Tensor) -> Tensor:
    """f(u) = e^u (u - 1) + 1 >= 0, by its series near 0 (sum_n u^(n+2) / (n! (n+2)))."""
    series = u**2 / 2 + u**3 / 3 + u**4 / 8 + u**5 / 30 + u**6 / 144
    return torch.where(u.abs() < 1e-2, series, torch.exp(u) * (u - 1) + 1)


def tabulate_pair(target: GaussianMixture, sampler: Sampler, grid: Grid, init: str = "exact", G: int | None = None,
                  width: float = 11.0) -> tuple[Tabulated1D, Tabulated1D]:
    """The output density at resolution G (default: the kernel engine's rule) and G/2, for error estimates."""
    G = default_G(target, grid, init, width) if G is None else G
    return Tabulated1D(target, sampler, grid, init, G, width), Tabulated1D(target, sampler, grid, init, G // 2, width)


def reverse_kl_from(pair: tuple[Tabulated1D, Tabulated1D]) -> Measurement:
    """KL(q || p) from a (G, G/2) pair: the fine value, |fine - coarse| + defects as its error."""
    fine, defect = pair[0].reverse_kl()
    coarse, _ = pair[1].reverse_kl()
    return Measurement("kl_reverse", fine, abs(fine - coarse) + defect, "grid-1d-kernel",
                       {"G": pair[0].G, "direction": "KL(q || p)"})


def reverse_kl_1d(target: GaussianMixture, sampler: Sampler, grid: Grid, init: str = "exact", G: int | None = None,
                  width: float = 11.0) -> Measurement:
    """KL(q || p) of a Markov sampler's output p against the true law q at the grid's last level (1-D)."""
    return reverse_kl_from(tabulate_pair(target, sampler, grid, init, G, width))
