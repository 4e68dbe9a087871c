"""Hypothesis strategies: random Gaussian mixtures of every covariance kind."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from theory.targets import DTYPE, GaussianMixture

COV_KINDS = ("full", "diagonal", "isotropic", "singular")


@st.composite
def mixtures(draw, d=st.integers(1, 3), K=st.integers(1, 3), kinds=COV_KINDS, min_var: float = 0.05):
    """A random mixture: d, K drawn; each component's covariance of a random kind (singular = rank deficient)."""
    d, K = draw(d), draw(K)
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    raw = torch.rand(K, dtype=DTYPE, generator=gen) + 0.2
    weights = raw / raw.sum()
    means = 2.5 * torch.randn(K, d, dtype=DTYPE, generator=gen)
    covs = []
    for _ in range(K):
        kind = draw(st.sampled_from(kinds))
        if kind == "isotropic":
            cov = (min_var + torch.rand(1, dtype=DTYPE, generator=gen)) * torch.eye(d, dtype=DTYPE)
        elif kind == "diagonal":
            cov = torch.diag(min_var + torch.rand(d, dtype=DTYPE, generator=gen))
        else:
            A = torch.randn(d, d, dtype=DTYPE, generator=gen)
            Q, _ = torch.linalg.qr(A)
            ev = min_var + torch.rand(d, dtype=DTYPE, generator=gen)
            if kind == "singular":
                ev[0] = 0.0  # rank deficient; with d = 1 a point mass
            cov = Q @ torch.diag(ev) @ Q.T
        covs.append(cov)
    return GaussianMixture(weights, means, torch.stack(covs), name=f"random-{seed}")


levels = st.floats(0.02, 0.98)
