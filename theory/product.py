"""Product targets and their exact error engine (shared/spec/metrics.md, method 5).

A product target is a law whose coordinates are independent,

    q_0(x) = prod_j q_0^(j)(x_j),   each q_0^(j) = sum_k w_jk N(mu_jk, s_jk^2) a 1-D mixture.

The VP forward process x = sqrt(abar) x_0 + sqrt(1 - abar) z adds independent noise per coordinate, so every level
factorises too: q_abar = prod_j q_abar^(j). The score is the vector of 1-D scores, s_j(x) = (d/dx_j) log
q_abar^(j)(x_j), and its Jacobian is diagonal. As a single mixture it would have prod_j K_j components (3^256 for
256 copies of a three-mode law); nothing here expands it: every quantity is a sum or a vector over coordinates.

The exact error engine for these targets (metrics.md method 5) is exact.product.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from theory.fingerprint import digest
from theory.targets import DTYPE, GaussianMixture, ScoreDerived, TargetError

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

    def fingerprint(self) -> str:
        """A digest of the law (theory.fingerprint): every coordinate's marginal in order, hence d; not the name."""
        return digest("ProductTarget", [m.fingerprint() for m in self.marginals])

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
