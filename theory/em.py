"""Expectation-maximisation for a Gaussian mixture (Dempster, Laird, Rubin 1977), in torch float64.

Fitting a mixture to images gives an image-shaped target whose every noised law is known exactly (theory.targets),
so exact errors (KL by flow Monte Carlo) can be reported for the same data a network was trained on.

For data x_1..x_n in R^d and K components, one iteration is

    E-step   r_ik = w_k N(x_i; mu_k, Sigma_k) / sum_j w_j N(x_i; mu_j, Sigma_j)
    M-step   N_k = sum_i r_ik,   w_k = N_k / n,   mu_k = sum_i r_ik x_i / N_k,
             Sigma_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / N_k + reg I

The ridge `reg` keeps Sigma_k invertible where pixels never vary (the corners of a digit are always blank); it is
the usual regularised EM, so the log-likelihood of the regularised model need not be monotone to the last digit,
but with reg fixed it increases up to rounding (Bishop 2006, section 9.2). Initialisation: k-means++ seeding of
the means from a seeded generator, shared covariance of the data, equal weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from theory.targets import DTYPE, GaussianMixture


class EMError(ValueError):
    """Bad input to EM: too few points, K < 1, non-finite data, a negative ridge."""


@dataclass
class EMResult:
    mixture: GaussianMixture
    log_likelihood: list[float] = field(default_factory=list)  # mean log-likelihood per point after each iteration
    iterations: int = 0
    converged: bool = False


def _log_gauss(x: Tensor, means: Tensor, covs: Tensor) -> Tensor:
    """log N(x_i; mu_k, Sigma_k), shape (n, K), through Cholesky factors."""
    L = torch.linalg.cholesky(covs)  # (K, d, d)
    diff = x[None] - means[:, None]  # (K, n, d)
    z = torch.linalg.solve_triangular(L, diff.transpose(1, 2), upper=False)  # (K, d, n)
    quad = (z * z).sum(1)  # (K, n)
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    d = x.shape[1]
    return (-0.5 * (quad + logdet[:, None] + d * math.log(2 * math.pi))).T


def _kmeans_pp(x: Tensor, K: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur, Vassilvitskii 2007): each new centre drawn with probability ~ squared distance."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    dist = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, K):
        probs = dist / dist.sum() if float(dist.sum()) > 0 else torch.full_like(dist, 1.0 / n)
        pick = int(torch.multinomial(probs, 1, generator=generator))
        centres.append(x[pick])
        dist = torch.minimum(dist, ((x - x[pick]) ** 2).sum(1))
    return torch.stack(centres)


def fit_em(x: Tensor, K: int, iterations: int = 100, tol: float = 1e-6, reg: float = 1e-3, seed: int = 0,
           name: str = "em") -> EMResult:
    """Fit a K-component full-covariance mixture to points x of shape (n, d) by EM; float64 throughout."""
    x = torch.as_tensor(x).to(DTYPE)
    if x.ndim != 2:
        raise EMError(f"points must have shape (n, d), got {tuple(x.shape)}")
    if isinstance(K, bool) or int(K) != K or K < 1:
        raise EMError(f"K must be a positive integer, got {K!r}")
    K = int(K)
    n, d = x.shape
    if n < K:
        raise EMError(f"EM needs at least K = {K} points, got n = {n}")
    if not torch.all(torch.isfinite(x)):
        raise EMError("points must be finite")
    if not (reg > 0):
        raise EMError(f"the covariance ridge reg must be positive, got {reg!r}")
    gen = torch.Generator().manual_seed(seed)
    eye = torch.eye(d, dtype=DTYPE)
    means = _kmeans_pp(x, K, gen)
    centred = x - x.mean(0)
    covs = (centred.T @ centred / n + reg * eye).expand(K, d, d).clone()
    log_w = torch.full((K,), -math.log(K), dtype=DTYPE)
    history: list[float] = []
    converged = False
    it = 0
    for it in range(1, iterations + 1):
        # E-step
        joint = _log_gauss(x, means, covs) + log_w
        norm = torch.logsumexp(joint, dim=1, keepdim=True)
        history.append(float(norm.mean()))
        r = torch.exp(joint - norm)  # (n, K)
        # M-step
        Nk = r.sum(0).clamp_min(1e-10)
        log_w = torch.log(Nk / n)
        means = (r.T @ x) / Nk[:, None]
        diff = x[None] - means[:, None]  # (K, n, d)
        covs = torch.einsum("nk,kni,knj->kij", r, diff, diff) / Nk[:, None, None] + reg * eye
        covs = 0.5 * (covs + covs.transpose(1, 2))
        if len(history) >= 2 and abs(history[-1] - history[-2]) < tol * (1 + abs(history[-1])):
            converged = True
            break
    # The log-likelihood of the returned parameters.
    final = torch.logsumexp(_log_gauss(x, means, covs) + log_w, dim=1).mean()
    history.append(float(final))
    weights = torch.exp(log_w)
    weights = weights / weights.sum()
    mixture = GaussianMixture(weights, means, covs, name=name)
    return EMResult(mixture, history, it, converged)


def fit_mixture(x: Tensor, K: int, **options) -> GaussianMixture:
    """The fitted GaussianMixture alone (see fit_em)."""
    return fit_em(x, K, **options).mixture
