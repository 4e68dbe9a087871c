"""The exact reverse conditional of the forward process between two levels: q(x_s | x_t), abar_t < abar_s.

On a sampler's grid, t is the noisier level (abar_t = grid.abar[i]) and s the next, cleaner one (abar_s =
grid.abar[i + 1]); in Li et al.'s indexing s = t - 1. The forward process restricted to the two levels is

    x_t | x_s ~ N( sqrt(alpha) x_s, (1 - alpha) I ),      alpha = abar_t / abar_s,

so by Bayes, for ANY target whose noised densities q_abar are known,

    log q(x_s | x_t) = log q_s(x_s) + log N(x_t; sqrt(alpha) x_s, (1 - alpha) I) - log q_t(x_t).        (B)

For a mixture q_0 = sum_k w_k N(mu_k, Sigma_k) the conditional is itself a mixture of Gaussians. Per component k
the pair (x_s, x_t) is jointly Gaussian with Var(x_s) = C_k^s, Cov(x_s, x_t) = sqrt(alpha) C_k^s and
Var(x_t) = alpha C_k^s + (1 - alpha) I = C_k^t (where C_k^a = a Sigma_k + (1 - a) I, m_k^a = sqrt(a) mu_k), and the
component's posterior weight given x_t is its responsibility at level abar_t. Gaussian conditioning gives

    q(x_s | x_t) = sum_k r_k(x_t) N( x_s; mhat_k(x_t), V_k ),
    r_k(x_t)     = w_k N(x_t; m_k^t, C_k^t) / q_t(x_t),
    mhat_k(x_t)  = m_k^s + sqrt(alpha) C_k^s (C_k^t)^-1 (x_t - m_k^t),
    V_k          = C_k^s - alpha C_k^s (C_k^t)^-1 C_k^s = (1 - alpha) C_k^s (C_k^t)^-1.                   (M)

C_k^s and C_k^t share Sigma_k's eigenvectors U_k, so in that basis V_k is diagonal with entries
(1 - alpha) c^s_j / c^t_j (c^a_j = a lambda_j + 1 - a) and the mean gain is sqrt(alpha) c^s_j / c^t_j: O(d) per
component and point. (B) is what the path-KL engine evaluates (it works for product and subspace targets too);
(M) is its explicit form for plain mixtures, and the tests hold the two against each other.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from theory.targets import LOG_2PI, GaussianMixture, TargetError, _as_level


def _levels(abar_s, abar_t, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s, t = _as_level(abar_s, like), _as_level(abar_t, like)
    if not t < s:
        raise TargetError(f"the reverse conditional needs abar_t < abar_s, got abar_t = {float(t)!r}, "
                          f"abar_s = {float(s)!r}")
    return s, t, t / s


def forward_log_prob(x_t: Tensor, x_s: Tensor, alpha: Tensor) -> Tensor:
    """log N(x_t; sqrt(alpha) x_s, (1 - alpha) I), one value per row."""
    r = x_t - torch.sqrt(alpha) * x_s
    return -0.5 * ((r * r).sum(-1) / (1 - alpha) + x_t.shape[-1] * (LOG_2PI + torch.log(1 - alpha)))


def reverse_log_prob(target, x_s: Tensor, x_t: Tensor, abar_s, abar_t) -> Tensor:
    """log q(x_s | x_t) by Bayes (B), for any target with exact noised log-densities."""
    s, t, alpha = _levels(abar_s, abar_t, x_t)
    return target.log_prob(x_s, s) + forward_log_prob(x_t, x_s, alpha) - target.log_prob(x_t, t)


def reverse_mixture(target: GaussianMixture, x_t: Tensor, abar_s, abar_t) -> tuple[Tensor, Tensor, Tensor]:
    """The explicit mixture (M): log r_k(x_t) (n, K), the means mhat_k(x_t) (n, K, d) and the eigenvalues of V_k
    (K, d) in the eigenbases target.eigvecs."""
    s, t, alpha = _levels(abar_s, abar_t, x_t)
    log_r = torch.log_softmax(target.component_log_prob(x_t, t), dim=-1)
    c_s, c_t = target.level_variances(s), target.level_variances(t)  # (K, d)
    y, _ = target._whitened(x_t, t)  # U_k^T (x_t - m_k^t), (n, K, d)
    gain = torch.sqrt(alpha) * c_s / c_t
    means = torch.sqrt(s) * target.means[None] + target._from_eigenbasis(gain * y)
    return log_r, means, (1 - alpha) * c_s / c_t


def reverse_mixture_log_prob(target: GaussianMixture, x_s: Tensor, x_t: Tensor, abar_s, abar_t) -> Tensor:
    """log q(x_s | x_t) from the explicit mixture (M)."""
    log_r, means, v = reverse_mixture(target, x_t, abar_s, abar_t)
    diff = x_s[:, None, :] - means
    y = diff if target.diagonal else torch.einsum("nki,kij->nkj", diff, target.eigvecs)
    log_normal = -0.5 * ((y * y / v).sum(-1) + torch.log(v).sum(-1) + target.d * math.log(2 * math.pi))
    return torch.logsumexp(log_r + log_normal, dim=-1)
