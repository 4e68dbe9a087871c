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

import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from theory.fingerprint import digest
from theory.target_file import TargetError, read_target_file  # noqa: F401  (TargetError: re-exported here)

DTYPE = torch.float64
LOG_2PI = math.log(2.0 * math.pi)
LEVEL_CACHE_SIZE = 4096  # levels whose constants a mixture keeps (GaussianMixture._level_constants)


def _as_level(abar: float | Tensor, like: Tensor) -> Tensor:
    level = torch.as_tensor(abar, dtype=like.dtype, device=like.device)
    if level.ndim != 0:
        raise TargetError(f"a level abar must be a scalar, got shape {tuple(level.shape)}")
    if level.device.type == "cpu":
        value = float(level.detach())
        if not (0.0 < value <= 1.0):
            raise TargetError(f"a level abar must lie in (0, 1], got {value!r}")
    else:
        # On an accelerator a Python-side check would copy the level to the host at every call: check on the device.
        torch._assert_async((level > 0) & (level <= 1), "a level abar must lie in (0, 1]")
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


def _as_data(values, field: str, device) -> Tensor:
    """A tensor of float64 values, or a TargetError naming the field (ragged lists, strings where numbers belong)."""
    try:
        return torch.as_tensor(values, dtype=DTYPE, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TargetError(f"{field} must be numbers in a K x ... array, got {str(values)[:60]!r} ({err})") from None


class GaussianMixture(ScoreDerived):
    """A mixture of K Gaussians in R^d, known exactly at every noise level of the VP forward process."""

    def __init__(self, weights, means, covs, name: str = "custom", device: str | torch.device = "cpu"):
        weights, means, covs = (_as_data(weights, "weights", device), _as_data(means, "means", device),
                                _as_data(covs, "covs", device))
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
        self._level_cache: dict[tuple, tuple[Tensor, ...]] = {}

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

    def fingerprint(self) -> str:
        """A digest of the law itself (theory.fingerprint): its float64 weights, means and (symmetrised) covariances,
        hence K and d; not its name, file or device. Two mixtures with the same parameters share it."""
        return digest("GaussianMixture", self.weights, self.means, self.covs)

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
        if c.device.type == "cpu":
            if torch.any(c <= 0):
                raise TargetError(f"q_abar is singular at abar = {float(level)!r}: evaluate below abar = 1")
        else:
            torch._assert_async(torch.all(c > 0), "q_abar is singular at abar = 1: evaluate below abar = 1")
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
        """grad log q_abar(x) = sum_k r_k(x) g_k(x),  g_k = -C_k^{-1} (x - m_k), in one pass over the components
        (_MixtureScore), whose derivatives in x and abar are written out (score_jvp) rather than traced op by op."""
        x = self._check_points(x)
        return _MixtureScore.apply(x, _as_level(abar, x), self, False)[0]

    def eps(self, x: Tensor, abar) -> Tensor:
        """The ideal noise prediction eps = -sqrt(1 - abar) * score, as one autograd node with the score."""
        x = self._check_points(x)
        return _MixtureScore.apply(x, _as_level(abar, x), self, True)[0]

    def _level_constants(self, level: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """What the score needs of a level alone: sqrt(abar) mu_k (K, 1, d), 1/c = eigenvalues of C_k^{-1} (K, d),
        the logits' offset log w_k - log det(C_k) / 2 (K,) and eps's factor -sqrt(1 - abar). On the CPU they are
        kept per level value (samplers and engines ask for the same levels again and again; a lookup replaces a
        dozen small tensor operations); on an accelerator they are recomputed (a key would need the host)."""
        key = None
        if level.device.type == "cpu":
            try:
                key = (float(level), id(self.means), id(self.eigvals), self.diagonal)
            except RuntimeError:  # a level under vmap has no single value
                key = None
            hit = self._level_cache.get(key) if key is not None else None
            if hit is not None:
                return hit
        c = self.level_variances(level)
        constants = (torch.sqrt(level) * self.means[:, None, :], 1.0 / c,
                     self.log_weights - 0.5 * torch.log(c).sum(-1), -torch.sqrt(1 - level))
        if key is not None:
            if len(self._level_cache) >= LEVEL_CACHE_SIZE:
                self._level_cache.clear()
            self._level_cache[key] = constants
        return constants

    def score_parts(self, x: Tensor, level: Tensor) -> "ScoreParts":
        """The score and what its derivatives reuse, components first (K-major, so that the sums over components
        run along contiguous memory): r (K, n) responsibilities, g (K, n, d) the g_k, ge (K, n, d) the g_k in each
        component's eigenbasis, inv_c (K, d) the eigenvalues of C_k^{-1}. The Gaussian normalisation d log(2 pi)
        is left out of the logits: softmax does not see it."""
        scaled_means, inv_c, offset, _ = self._level_constants(level)
        if self.d == 1:
            # (K, n) throughout: no reductions over a dimension of size one.
            towards = scaled_means[:, :, 0] - x[:, 0]  # m_k - x
            ge = towards * inv_c  # g_k = -(x - m_k) / c_k
            logits = torch.addcmul(offset[:, None], ge, towards, value=-0.5)  # log w_k - (log c_k + y^2 / c_k) / 2
            e = torch.exp(logits - logits.amax(0))
            r = e / e.sum(0)
            g = ge[..., None]
            return ScoreParts((r * ge).sum(0)[:, None], r, g, g, inv_c)
        diff = x[None] - scaled_means  # (K, n, d)
        y = diff if self.diagonal else torch.einsum("kni,kij->knj", diff, self.eigvecs)
        ge = -y * inv_c[:, None, :]
        # log w_k - (log det C_k + (x - m_k)^T C_k^{-1} (x - m_k)) / 2
        logits = offset[:, None] + 0.5 * (y * ge).sum(-1)
        e = torch.exp(logits - logits.amax(0))
        r = e / e.sum(0)
        g = ge if self.diagonal else torch.einsum("kij,knj->kni", self.eigvecs, ge)
        score = (r[..., None] * g).sum(0)
        return ScoreParts(score, r, g, ge, inv_c)

    def score_jvp(self, parts: "ScoreParts", level: Tensor, v: Tensor | None, dlevel: Tensor | None,
                  scale: Tensor | float = 1.0) -> Tensor:
        """The derivative of the score along (v, dlevel), times `scale`: J v + (d score / d abar) dlevel, with

            J v = -sum_k r_k C_k^{-1} v + sum_k r_k g_k (g_k . v) - s (s . v)        (J = score_jacobian, symmetric)

        (from d g_k / dx = -C_k^{-1} and d r_k / dx = r_k (g_k - s)), and, in each eigenbasis, with
        y_k = U_k^T (x - sqrt(abar) mu_k) = -c_k g_k, dy_k = -U_k^T mu_k / (2 sqrt(abar)), dc_k = lam_k - 1:

            d g_k = -(dy_k + g_k dc_k) / c_k,   d logit_k = sum (g_k dy_k + g_k^2 dc_k / 2 - dc_k / (2 c_k)),
            d score / d abar = sum_k r_k U_k d g_k + sum_k r_k (d logit_k - sum_j r_j d logit_j) g_k."""
        r, g, score = parts.r, parts.g, parts.score
        out = None
        if v is not None and self.d == 1:
            # One number per point: J = sum_k r_k (g_k^2 - 1/c_k) - s^2.
            slope = (r * (g[..., 0] * g[..., 0] - parts.inv_c)).sum(0) - score[:, 0] * score[:, 0]
            out = (scale * slope)[:, None] * v
        elif v is not None:
            scale = torch.as_tensor(scale, dtype=score.dtype, device=score.device)
            out = _ScoreJacobianProduct.apply(v, r, g, score, parts.inv_c, scale, self)
        if dlevel is not None:
            means = self.means if self.diagonal else torch.einsum("ki,kij->kj", self.means, self.eigvecs)
            dy = (-0.5 / torch.sqrt(level)) * means[:, None, :]  # (K, 1, d) per unit dlevel
            dc = (self.eigvals - 1)[:, None, :]
            ge = parts.ge
            dge = -(dy + ge * dc) * parts.inv_c[:, None, :]
            dlogit = (ge * dy + 0.5 * ge * ge * dc).sum(-1) - 0.5 * (parts.inv_c * (self.eigvals - 1)).sum(-1)[:, None]
            dr = r * (dlogit - (r * dlogit).sum(0))
            dg = dge if self.diagonal else torch.einsum("kij,knj->kni", self.eigvecs, dge)
            along_level = (scale * dlevel) * (dr[..., None] * g + r[..., None] * dg).sum(0)
            out = along_level if out is None else out + along_level
        return torch.zeros_like(score) if out is None else out

    def jacobian_product(self, v: Tensor, r: Tensor, g: Tensor, score: Tensor, inv_c: Tensor,
                         scale: Tensor | float = 1.0) -> Tensor:
        """scale J v, J v = -sum_k r_k C_k^{-1} v + sum_k r_k g_k (g_k . v) - s (s . v), from the parts of
        score_parts. Every argument may carry leading batch dimensions (broadcast), so that many v at once are
        matrix products; the rank-(K + 1) part is one product with [g_1 .. g_K, s], so that a batch of v costs two
        passes over its size (the product and one fused multiply-add) for diagonal targets."""
        gv = torch.einsum("...knd,...nd->...kn", g, v)
        sv = torch.einsum("...nd,...nd->...n", score, v)
        coefficients = torch.cat([r * gv, -sv[..., None, :]], -2) * scale  # (..., K + 1, n)
        directions = torch.cat([g, score[..., None, :, :]], -3)  # (..., K + 1, n, d)
        out = torch.einsum("...kn,...knd->...nd", coefficients, directions)
        if self.diagonal:
            return out.addcmul_(torch.einsum("...kn,...kd->...nd", r, inv_c) * scale, v, value=-1)
        ve = torch.einsum("...ni,kij->...knj", v, self.eigvecs)
        return out - scale * torch.einsum("kij,...knj->...ni", self.eigvecs, (r[..., None] * inv_c[..., None, :]) * ve)

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


class ScoreParts(NamedTuple):
    """GaussianMixture.score_parts: the score and the per-component pieces its derivatives reuse."""

    score: Tensor  # (n, d)
    r: Tensor  # (K, n) responsibilities
    g: Tensor  # (K, n, d) g_k = -C_k^{-1} (x - m_k)
    ge: Tensor  # (K, n, d) g_k in the eigenbasis of C_k
    inv_c: Tensor  # (K, d) eigenvalues of C_k^{-1}


class _QuickFunction(torch.autograd.Function):
    """An autograd.Function whose apply skips, outside functorch transforms, the default-argument binding that
    Function.apply redoes through inspect.signature at every call (~60 us; the forward methods here have no
    defaults): the mixture score is called once per sampler step, so that binding would cost more than its maths
    on small batches. Under functorch transforms apply is Function.apply unchanged."""

    @classmethod
    def apply(cls, *args):
        if torch._C._are_functorch_transforms_active():
            return super().apply(*args)
        return super(torch.autograd.Function, cls).apply(*torch._functorch.utils.unwrap_dead_wrappers(args))


class _ScoreJacobianProduct(_QuickFunction):
    """v -> J v for the mixture score's Jacobian at given parts (GaussianMixture.jacobian_product), as a Function of
    its own for one reason: its vmap rule. Many v at once (autograd's batched backward passes, vmap of jvp) then run
    as one batched product instead of vmap's generic batching, which copies the parts once per v. Second derivatives
    are refused: the parts are treated as constants here."""

    @staticmethod
    def forward(v, r, g, score, inv_c, scale, target):
        return target.jacobian_product(v, r, g, score, inv_c, scale)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("second derivatives of the mixture score are not implemented")

    @staticmethod
    def vmap(info, in_dims, v, r, g, score, inv_c, scale, target):
        # Batch dimensions go first; jacobian_product broadcasts leading dimensions (a batched scale gets room for
        # the dimensions it multiplies).
        args = [a if dim is None else a.movedim(dim, 0) for a, dim in zip((v, r, g, score, inv_c), in_dims)]
        if in_dims[5] is not None:
            scale = scale.movedim(in_dims[5], 0)[:, None, None]
        return target.jacobian_product(*args, scale), 0


class _MixtureScore(_QuickFunction):
    """The mixture score (or eps = -sqrt(1 - abar) score, with `as_eps`) as one autograd node: forward evaluates it
    in one pass (score_parts); forward mode (jvp), reverse mode (backward) and functorch (vmap of jvp, vjp, ...) use
    the written-out derivative score_jvp instead of tracing the dozen tensor operations of the forward pass. The
    score Jacobian is symmetric (a Hessian of log q), so backward applies the same J to the incoming gradient; the
    level's derivative is included, so gradients through the level (AMED's trained intermediate times) stay exact.
    Outputs: the score or eps, then the parts (non-differentiable)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, level: Tensor, target: "GaussianMixture", as_eps: bool):
        parts = target.score_parts(x, level)
        # The differentiable output is a tensor of its own (the parts that follow are marked non-differentiable).
        out = target._level_constants(level)[3] * parts.score if as_eps else parts.score.clone()
        return (out, *parts)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, level, target, as_eps = inputs
        ctx.target, ctx.as_eps = target, as_eps
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_forward(level, *output[1:])
        ctx.save_for_backward(level, *output[1:])

    @staticmethod
    def _derivative(ctx, dx, dlevel):
        """d out along (dx, dlevel); eps = f s with f = -sqrt(1 - abar), f' = 1 / (2 sqrt(1 - abar)) = -1 / (2 f)."""
        level, *parts = ctx.saved_tensors
        parts = ScoreParts(*parts)
        if not ctx.as_eps:
            return ctx.target.score_jvp(parts, level, dx, dlevel)
        factor = -torch.sqrt(1 - level)
        out = ctx.target.score_jvp(parts, level, dx, dlevel, scale=factor)
        if dlevel is not None:
            out = out - (dlevel / (2 * factor)) * parts.score
        return out

    @staticmethod
    def jvp(ctx, dx, dlevel, *_):
        return (_MixtureScore._derivative(ctx, dx, dlevel), None, None, None, None, None)

    @staticmethod
    def backward(ctx, grad, *_):
        grad_x = _MixtureScore._derivative(ctx, grad, None) if ctx.needs_input_grad[0] else None
        grad_level = None
        if ctx.needs_input_grad[1]:
            level = ctx.saved_tensors[0]
            grad_level = (grad * _MixtureScore._derivative(ctx, None, torch.ones_like(level))).sum()
        return grad_x, grad_level, None, None


# ---------------------------------------------------------------------- construction helpers
def gaussian(mean, cov, name: str = "gaussian") -> GaussianMixture:
    mean = torch.as_tensor(mean, dtype=DTYPE)
    return GaussianMixture([1.0], mean[None], torch.as_tensor(cov, dtype=DTYPE)[None], name)


def from_json(path: str | Path) -> GaussianMixture:
    """Read {"weights": [...], "means": [[...]], "covs": [[[...]]]}, every field checked (theory.target_file)."""
    path = Path(path)
    spec = read_target_file(path)
    if spec["kind"] != "mixture":
        raise TargetError(f"target file {str(path)!r} holds a product: read it with theory.catalog.get_target")
    try:
        return GaussianMixture(spec["weights"], spec["means"], spec["covs"], name=path.stem)
    except TargetError as err:  # what only an eigendecomposition sees (a covariance that is not PSD)
        raise TargetError(f"target file {str(path)!r}: {err}") from None
