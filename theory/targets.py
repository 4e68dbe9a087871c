"""Gaussian-mixture targets with exact noised densities, scores, denoisers and Jacobians.

Notation (shared/spec/metrics.md, "Targets"): the data law is

    q_0 = sum_k w_k N(mu_k, Sigma_k)

and the variance-preserving forward process x = sqrt(abar) x_0 + sqrt(1 - abar) z blurs it to

    q_abar = sum_k w_k N(m_k, C_k),   m_k = sqrt(abar) mu_k,   C_k = abar Sigma_k + (1 - abar) I.

Each Sigma_k = U_k diag(lam_k) U_k^T is diagonalised once, so C_k = U_k diag(abar lam_k + 1 - abar) U_k^T at every
level and every inverse or log-determinant costs O(d) per component. Singular Sigma_k (point masses included) are
fine at every abar < 1.

The JSON format a user writes by hand: {"weights": [...], "means": [[...], ...], "covs": [[[...]], ...]}.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

DTYPE = torch.float64
LOG_2PI = math.log(2.0 * math.pi)


class TargetError(ValueError):
    """A target that cannot be built: bad weights, covariance, shape, name or file."""


def _as_level(abar: float | Tensor, like: Tensor) -> Tensor:
    level = torch.as_tensor(abar, dtype=like.dtype, device=like.device)
    if level.ndim != 0:
        raise TargetError(f"a level abar must be a scalar, got shape {tuple(level.shape)}")
    if not (0.0 < float(level) <= 1.0):
        raise TargetError(f"a level abar must lie in (0, 1], got {float(level)!r}")
    return level


class ScoreDerived:
    """eps and the denoiser of any law given by its score (shared/spec/samplers.md section 1)."""

    def score(self, x: Tensor, abar) -> Tensor:
        raise NotImplementedError  # abstract: targets provide the exact score

    def eps(self, x: Tensor, abar) -> Tensor:
        """The ideal noise prediction eps = -sqrt(1 - abar) * score."""
        level = _as_level(abar, x)
        return -torch.sqrt(1 - level) * self.score(x, level)

    def denoiser(self, x: Tensor, abar) -> Tensor:
        """Tweedie: E[x_0 | x_abar = x] = (x + (1 - abar) score) / sqrt(abar)."""
        level = _as_level(abar, x)
        return (x + (1 - level) * self.score(x, level)) / torch.sqrt(level)


class GaussianMixture(ScoreDerived):
    """A mixture of K Gaussians in R^d, known exactly at every noise level of the VP forward process."""

    def __init__(self, weights, means, covs, name: str = "custom", device: str | torch.device = "cpu"):
        weights = torch.as_tensor(weights, dtype=DTYPE, device=device)
        means = torch.as_tensor(means, dtype=DTYPE, device=device)
        covs = torch.as_tensor(covs, dtype=DTYPE, device=device)
        if weights.ndim != 1 or weights.numel() == 0:
            raise TargetError(f"weights must be a non-empty list, got shape {tuple(weights.shape)}")
        if not torch.all(torch.isfinite(weights)) or torch.any(weights < 0):
            raise TargetError(f"weights must be finite and non-negative, got {weights.tolist()}")
        total = float(weights.sum())
        if abs(total - 1.0) > 1e-9:
            raise TargetError(f"weights must sum to one, got sum {total!r} for {weights.tolist()}")
        K = weights.numel()
        if means.ndim == 1 and K == 1:
            means = means[None]
        if means.ndim != 2 or means.shape[0] != K:
            raise TargetError(f"means must be a K x d list with K = {K}, got shape {tuple(means.shape)}")
        d = means.shape[1]
        if covs.shape != (K, d, d):
            raise TargetError(f"covs must be K d x d matrices (K = {K}, d = {d}), got shape {tuple(covs.shape)}")
        if not (torch.all(torch.isfinite(means)) and torch.all(torch.isfinite(covs))):
            raise TargetError("means and covs must be finite")
        asym = (covs - covs.transpose(-1, -2)).abs().amax(dim=(-1, -2))
        scale = covs.abs().amax(dim=(-1, -2)).clamp_min(1.0)
        for k in range(K):
            if asym[k] > 1e-10 * scale[k]:
                raise TargetError(f"covariance {k} is not symmetric (max asymmetry {float(asym[k]):.3g})")
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        eye = torch.eye(d, dtype=DTYPE, device=device)
        if torch.all(covs * (1 - eye) == 0):
            # Diagonal covariances: keep the coordinate basis (eigh may permute it), so scores stay O(d).
            lam, U = torch.diagonal(covs, dim1=-2, dim2=-1).clone(), eye.expand(K, d, d).clone()
        else:
            lam, U = torch.linalg.eigh(covs)
        for k in range(K):
            if lam[k].min() < -1e-10 * scale[k]:
                raise TargetError(
                    f"covariance {k} is not positive semi-definite (smallest eigenvalue {float(lam[k].min()):.3g})"
                )
        self.name = name
        self.weights = weights
        self.log_weights = torch.log(weights)
        self.means = means
        self.covs = covs
        self.eigvals = lam.clamp_min(0.0)  # (K, d)
        self.eigvecs = U  # (K, d, d), columns are eigenvectors
        self.diagonal = bool(torch.all((U.abs() - eye).abs() < 1e-14)) if d > 0 else True

    # ------------------------------------------------------------------ basic facts
    @property
    def d(self) -> int:
        return self.means.shape[1]

    @property
    def K(self) -> int:
        return self.weights.numel()

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def is_gaussian(self) -> bool:
        return self.K == 1

    @property
    def singular(self) -> bool:
        return bool(self.eigvals.min() <= 0.0)

    def to(self, device) -> "GaussianMixture":
        return GaussianMixture(self.weights, self.means, self.covs, self.name, device=device)

    def __repr__(self) -> str:
        return f"GaussianMixture(name={self.name!r}, K={self.K}, d={self.d})"

    def mean(self, abar: float | Tensor = 1.0) -> Tensor:
        """Mean of q_abar."""
        level = _as_level(abar, self.means)
        return torch.sqrt(level) * (self.weights @ self.means)

    def covariance(self, abar: float | Tensor = 1.0) -> Tensor:
        """Covariance of q_abar (law of total variance)."""
        level = _as_level(abar, self.means)
        m = self.mean(level)
        centred = torch.sqrt(level) * self.means - m
        within = level * self.covs + (1 - level) * torch.eye(self.d, dtype=DTYPE, device=self.device)
        return torch.einsum("k,kij->ij", self.weights, within) + torch.einsum("k,ki,kj->ij", self.weights, centred, centred)

    # ------------------------------------------------------------------ the noised law
    def level_variances(self, abar: float | Tensor) -> Tensor:
        """Eigenvalues of C_k = abar Sigma_k + (1 - abar) I, shape (K, d)."""
        level = _as_level(abar, self.means)
        c = level * self.eigvals + (1 - level)
        if torch.any(c <= 0):
            raise TargetError(f"q_abar is singular at abar = {float(level)!r}: evaluate below abar = 1")
        return c

    def _whitened(self, x: Tensor, abar) -> tuple[Tensor, Tensor]:
        """Coordinates y = U_k^T (x - m_k) of x in every component's eigenbasis, and the variances c = eig(C_k)."""
        level = _as_level(abar, x)
        c = self.level_variances(level)
        diff = x[:, None, :] - torch.sqrt(level) * self.means[None]  # (n, K, d)
        y = diff if self.diagonal else torch.einsum("nki,kij->nkj", diff, self.eigvecs)
        return y, c

    def _from_eigenbasis(self, v: Tensor) -> Tensor:
        """Rotate per-component vectors (n, K, d) back from each eigenbasis."""
        return v if self.diagonal else torch.einsum("kij,nkj->nki", self.eigvecs, v)

    def component_log_prob(self, x: Tensor, abar) -> Tensor:
        """log w_k + log N(x; m_k, C_k), shape (n, K)."""
        x = self._check_points(x)
        y, c = self._whitened(x, abar)
        quad = (y * y / c).sum(-1)
        logdet = torch.log(c).sum(-1)
        return self.log_weights - 0.5 * (quad + logdet + self.d * LOG_2PI)

    def log_prob(self, x: Tensor, abar: float | Tensor = 1.0) -> Tensor:
        """Exact log-density of q_abar at points x of shape (n, d)."""
        return torch.logsumexp(self.component_log_prob(x, abar), dim=-1)

    def responsibilities(self, x: Tensor, abar) -> Tensor:
        """Posterior component weights r_k(x) at level abar, shape (n, K): the model's features."""
        return torch.softmax(self.component_log_prob(x, abar), dim=-1)

    def score(self, x: Tensor, abar) -> Tensor:
        """grad log q_abar(x) = sum_k r_k(x) ( -C_k^{-1} (x - m_k) )."""
        x = self._check_points(x)
        y, c = self._whitened(x, abar)
        logits = self.log_weights - 0.5 * ((y * y / c).sum(-1) + torch.log(c).sum(-1))
        r = torch.softmax(logits, dim=-1)
        per_component = self._from_eigenbasis(-y / c)  # (n, K, d)
        return torch.einsum("nk,nkd->nd", r, per_component)

    def score_jacobian(self, x: Tensor, abar) -> Tensor:
        """d score / d x, shape (n, d, d): sum_k r_k (-C_k^{-1}) + Cov_r[g_k], g_k = -C_k^{-1}(x - m_k)."""
        x = self._check_points(x)
        y, c = self._whitened(x, abar)
        logits = self.log_weights - 0.5 * ((y * y / c).sum(-1) + torch.log(c).sum(-1))
        r = torch.softmax(logits, dim=-1)
        g = self._from_eigenbasis(-y / c)  # (n, K, d)
        if self.diagonal:
            hess = torch.diag_embed(-1.0 / c)  # (K, d, d)
        else:
            hess = -torch.einsum("kij,kj,klj->kil", self.eigvecs, 1.0 / c, self.eigvecs)
        mean_g = torch.einsum("nk,nkd->nd", r, g)
        second = torch.einsum("nk,nki,nkj->nij", r, g, g) - mean_g[:, :, None] * mean_g[:, None, :]
        return torch.einsum("nk,kij->nij", r, hess) + second

    def sample(self, n: int, abar: float | Tensor = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws from q_abar."""
        level = _as_level(abar, self.means)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.d, dtype=DTYPE, device=self.device, generator=generator)
        c = self.level_variances(level)[comp]
        y = z * torch.sqrt(c)
        x = y if self.diagonal else torch.einsum("nij,nj->ni", self.eigvecs[comp], y)
        return x + torch.sqrt(level) * self.means[comp]

    # ------------------------------------------------------------------ one dimension
    def cdf(self, x: Tensor, abar: float | Tensor = 1.0) -> Tensor:
        """Exact CDF of q_abar in d = 1, at points of shape (n,) or (n, 1)."""
        if self.d != 1:
            raise TargetError(f"cdf needs a 1-D target, this one has d = {self.d}")
        level = _as_level(abar, self.means)
        x = x.reshape(-1, 1).to(DTYPE)
        sd = torch.sqrt(self.level_variances(level)[:, 0])
        z = (x - torch.sqrt(level) * self.means[:, 0]) / sd
        return (self.weights * torch.special.ndtr(z)).sum(-1)

    def support(self, abar: float | Tensor, width: float = 12.0) -> tuple[float, float]:
        """An interval outside which q_abar has mass below about exp(-width^2 / 2) (d = 1)."""
        level = _as_level(abar, self.means)
        sd = torch.sqrt(self.level_variances(level)[:, 0])
        centre = torch.sqrt(level) * self.means[:, 0]
        return float((centre - width * sd).min()), float((centre + width * sd).max())

    # ------------------------------------------------------------------ structure
    def marginal(self, j: int) -> "GaussianMixture":
        """The law of coordinate j (a 1-D mixture)."""
        return GaussianMixture(
            self.weights, self.means[:, j : j + 1], self.covs[:, j : j + 1, j : j + 1], f"{self.name}[{j}]", self.device
        )

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "covs": self.covs.tolist()}

    def _check_points(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.d:
            raise TargetError(f"points must have shape (n, {self.d}), got {tuple(x.shape)}")
        return x


# ---------------------------------------------------------------------- construction helpers
def gaussian(mean, cov, name: str = "gaussian") -> GaussianMixture:
    mean = torch.as_tensor(mean, dtype=DTYPE)
    return GaussianMixture([1.0], mean[None], torch.as_tensor(cov, dtype=DTYPE)[None], name)


def from_json(path: str | Path) -> GaussianMixture:
    """Read {"weights": [...], "means": [[...]], "covs": [[[...]]]} and validate it."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise TargetError(f"target file not found: {str(path)!r}") from None
    except json.JSONDecodeError as err:
        raise TargetError(f"malformed JSON in target file {str(path)!r}: {err}") from None
    if not isinstance(spec, dict):
        raise TargetError(f"target file {str(path)!r} must hold an object with weights, means, covs")
    missing = [key for key in ("weights", "means", "covs") if key not in spec]
    if missing:
        raise TargetError(f"target file {str(path)!r} lacks {', '.join(missing)}")
    try:
        return GaussianMixture(spec["weights"], spec["means"], spec["covs"], name=path.stem)
    except (TypeError, RuntimeError) as err:  # ragged lists, strings where numbers belong
        raise TargetError(f"target file {str(path)!r} is not numeric K x d data: {err}") from None
