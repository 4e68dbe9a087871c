"""Low-dimensional targets in a high-dimensional space: a k-dimensional mixture embedded in R^d by a rotation.

Notation. B is a d x k matrix with orthonormal columns (the subspace), P = I - B B^T the projector onto its
orthogonal complement, s a vector in the complement (B^T s = 0; zero unless a JSON mixture asks for it). The data
law is that of

    x = B y + w,    y ~ core = sum_k w_k N(m_k, S_k)  (a mixture in R^k),    w ~ N(s, sigma^2 P)  independent,

i.e. the mixture sum_k w_k N(B m_k + s, B S_k B^T + sigma^2 P) in R^d. The named family adds an isotropic floor
sigma^2 to every core covariance, so that each component is (a rank-<=k part) + sigma^2 I; with sigma^2 = 0 the
data lie exactly on the affine subspace s + range(B).

The VP forward process adds isotropic noise, which splits along range(B) and its complement, so every level keeps
the structure:

    q_abar(x) = q_abar^core(B^T x) * N(P x; sqrt(abar) s, v P),     v = abar sigma^2 + 1 - abar,

where q_abar^core is the core blurred in R^k and the second factor is the (d - k)-dimensional isotropic Gaussian on
the complement. Hence, with y = B^T x and r = P x - sqrt(abar) s (both O(d k) per point, never O(d^2)):

    log q_abar(x) = log q_abar^core(y) - |r|^2 / (2 v) - (d - k)/2 log(2 pi v)
    score(x)      = B score^core(y) - r / v

and the responsibilities of the d-dimensional mixture are the core's (the complement factor is common to all
components). Rotating the axis-aligned target (B = the first k unit vectors) by an orthogonal Q moves B to Q B; Q's
other d - k columns do not matter, because the complement law is isotropic. A seeded random rotation is therefore
drawn as its first k columns only: B = the Q factor of a d x k standard normal matrix with the signs of R's diagonal
taken out, a Haar-distributed orthonormal frame, in O(d k^2) (a full d x d Haar matrix costs O(d^3)).

The exact error engine for these targets is exact.subspace; `find_subspace` recognises the structure in a plain
mixture (e.g. from a JSON file).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from theory.fingerprint import digest
from theory.product import ProductTarget
from theory.targets import DTYPE, LOG_2PI, GaussianMixture, ScoreDerived, TargetError, _as_level

ORTHOGONALITY_TOL = 1e-10  # max |Q^T Q - I| accepted for a user-given rotation
EXPAND_ELEMENTS = 1 << 24  # K d^2 entries at most in the explicit mixture form (128 MB of float64)


def random_basis(d: int, k: int, seed: int = 0, device: str | torch.device = "cpu") -> Tensor:
    """The first k columns of a Haar-random d x d rotation: QR of a seeded d x k standard normal matrix, with the
    signs of R's diagonal moved into Q (Mezzadri 2007, "How to generate random matrices from the classical compact
    groups", section 5), so that the frame is uniformly distributed."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(d, k, dtype=DTYPE, generator=gen)
    Q, R = torch.linalg.qr(A)
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1.0
    return (Q * signs).to(device)


def _check_dims(k: int, d) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, float)) or int(d) != d:
        raise TargetError(f"a subspace target needs an integer dimension d, got {d!r}")
    d = int(d)
    if k < 1:
        raise TargetError(f"a subspace target needs a subspace dimension k >= 1, got k = {k!r}")
    if k > d:
        raise TargetError(f"a subspace target needs k <= d, got k = {k} > d = {d}")
    return d


class SubspaceTarget(ScoreDerived):
    """The law of x = B y + w with y ~ `core` (a k-dimensional GaussianMixture or ProductTarget) and
    w ~ N(shift, floor * P) on the complement of range(B); see the module docstring.

    Give the subspace as `rotation` (a d x d orthogonal matrix whose first k columns span it; a matrix that is not
    orthogonal is refused), or as `basis` (d x k, orthonormal columns), or neither: then a Haar-random frame drawn
    from `seed`. `shift` (default 0) must lie in the complement.
    """

    subspace = True  # exact.choose_method sends these targets to the subspace engine
    factorises = False
    diagonal = False

    def __init__(self, core, d: int, floor: float = 0.0, rotation=None, basis=None, shift=None, seed: int = 0,
                 name: str = "subspace"):
        if not isinstance(core, (GaussianMixture, ProductTarget)):
            raise TargetError(f"the core of a subspace target must be a GaussianMixture or ProductTarget, got {core!r}")
        k = core.d
        d = _check_dims(k, d)
        floor = float(floor)
        if not (math.isfinite(floor) and floor >= 0):
            raise TargetError(f"the isotropic floor sigma^2 must be finite and >= 0, got {floor!r}")
        device = core.device
        if rotation is not None and basis is not None:
            raise TargetError("give either a rotation (d x d) or a basis (d x k), not both")
        if rotation is not None:
            Q = torch.as_tensor(rotation, dtype=DTYPE, device=device)
            if Q.shape != (d, d):
                raise TargetError(f"the rotation must be a d x d matrix (d = {d}), got shape {tuple(Q.shape)}")
            _check_orthonormal(Q, "the rotation is not orthogonal: max |Q^T Q - I|")
            B = Q[:, :k].clone()
        elif basis is not None:
            B = torch.as_tensor(basis, dtype=DTYPE, device=device)
            if B.shape != (d, k):
                raise TargetError(f"the basis must be a d x k matrix (d = {d}, k = {k}), got shape {tuple(B.shape)}")
            _check_orthonormal(B, "the basis columns are not orthonormal: max |B^T B - I|")
        else:
            B = random_basis(d, k, seed, device)
        if shift is None:
            s = torch.zeros(d, dtype=DTYPE, device=device)
        else:
            s = torch.as_tensor(shift, dtype=DTYPE, device=device).reshape(-1)
            if s.numel() != d or not torch.all(torch.isfinite(s)):
                raise TargetError(f"the shift must be a finite vector of length d = {d}")
            inside = float((B.T @ s).abs().max()) if k else 0.0
            if inside > 1e-9 * max(1.0, float(s.abs().max())):
                raise TargetError(f"the shift must lie in the complement of the subspace (|B^T shift| = {inside:.3g})")
            s = s - B @ (B.T @ s)
        if d == k:  # no complement: neither a floor nor a shift has anywhere to live
            floor, s = 0.0, torch.zeros_like(s)
        self.core = core
        self.basis = B
        self.shift = s
        self.floor = floor
        self.name = name
        self.structure_residual = 0.0  # set by find_subspace: how far the given mixture is from this structure

    # ------------------------------------------------------------------ basic facts
    @property
    def d(self) -> int:
        return self.basis.shape[0]

    @property
    def k(self) -> int:
        return self.basis.shape[1]

    @property
    def K(self) -> int:
        return self.core.K

    @property
    def device(self) -> torch.device:
        return self.basis.device

    @property
    def is_gaussian(self) -> bool:
        return self.core.is_gaussian

    @property
    def shift_norm(self) -> float:
        return float(torch.linalg.vector_norm(self.shift))

    def fingerprint(self) -> str:
        """A digest of the law (theory.fingerprint): the core's, the basis B (d x k), the shift and the floor;
        not the name. The same law written with another basis of the same subspace has another fingerprint (a
        conservative miss: it is measured again, never confused)."""
        return digest("SubspaceTarget", self.core.fingerprint(), self.basis, self.shift, self.floor)

    def to(self, device) -> "SubspaceTarget":
        out = SubspaceTarget(self.core.to(device), self.d, self.floor, basis=self.basis.to(device),
                             shift=self.shift.to(device), name=self.name)
        out.structure_residual = self.structure_residual
        return out

    def __repr__(self) -> str:
        return (f"SubspaceTarget(name={self.name!r}, d={self.d}, k={self.k}, K={self.K}, floor={self.floor:g}, "
                f"|shift|={self.shift_norm:.3g})")

    # ------------------------------------------------------------------ the split x = B y + (P x)
    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(y, P x): core coordinates y = B^T x (n, k) and the complement part P x (n, d)."""
        if x.ndim != 2 or x.shape[1] != self.d:
            raise TargetError(f"points must have shape (n, {self.d}), got {tuple(x.shape)}")
        y = x @ self.basis
        return y, x - y @ self.basis.T

    def complement_variance(self, abar) -> Tensor:
        """v = abar sigma^2 + 1 - abar, the variance of every complement direction at level abar."""
        level = _as_level(abar, self.basis)
        v = level * self.floor + (1 - level)
        if self.d > self.k and v <= 0:
            raise TargetError(f"q_abar is singular at abar = {float(level)!r} (floor 0): evaluate below abar = 1")
        return v

    def gaussian_part(self) -> list[tuple[GaussianMixture, int]]:
        """The complement in an axis-aligned frame, as [(1-D law at level 1, number of coordinates)]: first one
        coordinate N(|s|, sigma^2) along the shift (if s != 0), then the others N(0, sigma^2). Empty when k = d."""
        n = self.d - self.k
        if n == 0:
            return []
        var = [[[self.floor]]]
        parts = []
        if self.shift_norm > 0:
            parts.append((GaussianMixture([1.0], [[self.shift_norm]], var, "shift-direction", self.device), 1))
            n -= 1
        if n > 0:
            parts.append((GaussianMixture([1.0], [[0.0]], var, "complement", self.device), n))
        return parts

    # ------------------------------------------------------------------ the noised law
    def log_prob(self, x: Tensor, abar: float | Tensor = 1.0) -> Tensor:
        """log q_abar^core(B^T x) - |P x - sqrt(abar) s|^2 / (2 v) - (d - k)/2 log(2 pi v)."""
        y, perp = self.split(x)
        level = _as_level(abar, x)
        out = self.core.log_prob(y, level)
        if self.d > self.k:
            v = self.complement_variance(level)
            r = perp - torch.sqrt(level) * self.shift
            out = out - 0.5 * ((r * r).sum(-1) / v + (self.d - self.k) * (LOG_2PI + torch.log(v)))
        return out

    def score(self, x: Tensor, abar) -> Tensor:
        """B score^core(B^T x) - (P x - sqrt(abar) s) / v."""
        y, perp = self.split(x)
        level = _as_level(abar, x)
        out = self.core.score(y, level) @ self.basis.T
        if self.d > self.k:
            out = out - (perp - torch.sqrt(level) * self.shift) / self.complement_variance(level)
        return out

    def score_jacobian(self, x: Tensor, abar) -> Tensor:
        """B J^core B^T - P / v, shape (n, d, d) (O(d^2) memory: for small d and checks)."""
        y, _ = self.split(x)
        level = _as_level(abar, x)
        B = self.basis
        out = B @ self.core.score_jacobian(y, level) @ B.T
        if self.d > self.k:
            P = torch.eye(self.d, dtype=DTYPE, device=self.device) - B @ B.T
            out = out - P / self.complement_variance(level)
        return out

    def responsibilities(self, x: Tensor, abar) -> Tensor:
        """The core's posterior component weights (the complement factor is shared by every component)."""
        y, _ = self.split(x)
        return self.core.responsibilities(y, abar)

    def sample(self, n: int, abar: float | Tensor = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws from q_abar: B y + sqrt(v) P g + sqrt(abar) s with y ~ q_abar^core, g ~ N(0, I_d)."""
        level = _as_level(abar, self.basis)
        y = self.core.sample(n, level, generator)
        x = y @ self.basis.T
        if self.d > self.k:
            g = torch.randn(n, self.d, dtype=DTYPE, device=self.device, generator=generator)
            g = g - (g @ self.basis) @ self.basis.T
            x = x + torch.sqrt(self.complement_variance(level)) * g + torch.sqrt(level) * self.shift
        return x

    def mean(self, abar: float | Tensor = 1.0) -> Tensor:
        level = _as_level(abar, self.basis)
        return self.basis @ self.core.mean(level) + torch.sqrt(level) * self.shift

    def covariance(self, abar: float | Tensor = 1.0) -> Tensor:
        level = _as_level(abar, self.basis)
        B = self.basis
        P = torch.eye(self.d, dtype=DTYPE, device=self.device) - B @ B.T
        v = self.complement_variance(level) if self.d > self.k else 0.0
        return B @ self.core.covariance(level) @ B.T + v * P

    # ------------------------------------------------------------------ the explicit mixture (small d only)
    def to_mixture(self) -> GaussianMixture:
        """sum_k w_k N(B m_k + s, B S_k B^T + sigma^2 P), refused above EXPAND_ELEMENTS covariance entries."""
        core = self.core.to_mixture() if isinstance(self.core, ProductTarget) else self.core
        if core.K * self.d * self.d > EXPAND_ELEMENTS:
            raise TargetError(f"subspace target {self.name!r} as an explicit mixture needs {core.K} x {self.d}^2 "
                              f"covariance entries (limit {EXPAND_ELEMENTS}): use its own methods instead")
        B = self.basis
        P = torch.eye(self.d, dtype=DTYPE, device=self.device) - B @ B.T
        means = core.means @ B.T + self.shift
        covs = B @ core.covs @ B.T + self.floor * P
        return GaussianMixture(core.weights, means, 0.5 * (covs + covs.transpose(-1, -2)), f"{self.name}(expanded)",
                               self.device)

    # What initial laws and the Gaussian engine read, for small d only.
    @property
    def weights(self) -> Tensor:
        return self.core.weights if isinstance(self.core, GaussianMixture) else self.to_mixture().weights

    @property
    def means(self) -> Tensor:
        return self.to_mixture().means

    @property
    def covs(self) -> Tensor:
        return self.to_mixture().covs


def _check_orthonormal(M: Tensor, what: str) -> None:
    """Refuse (one line) a matrix whose columns are not orthonormal within ORTHOGONALITY_TOL."""
    deviation = float((M.T @ M - torch.eye(M.shape[1], dtype=M.dtype, device=M.device)).abs().max())
    if not deviation <= ORTHOGONALITY_TOL:
        raise TargetError(f"{what} = {deviation:.3g} (tolerance {ORTHOGONALITY_TOL:g})")


# ---------------------------------------------------------------------------- recognising the structure
def find_subspace(mixture: GaussianMixture, tol: float = 1e-9) -> SubspaceTarget | None:
    """The subspace structure of a plain mixture, or None when it has none (with k < d, k >= 1).

    The floor sigma^2 is the smallest covariance eigenvalue over all components (every component is a PSD part
    plus sigma^2 I). The subspace is the range of

        M = sum_k w_k (mu_k - mu_bar)(mu_k - mu_bar)^T + sum_k w_k (Sigma_k - sigma^2 I)^2,

    a PSD matrix whose range is the span of the mean deviations and of every covariance's non-floor part; its
    eigenvectors with eigenvalue above 1e-12 of the largest give an orthonormal basis B (k columns). The structure
    is accepted only if it reproduces the mixture: |Sigma_k - (B B^T Sigma_k B B^T + sigma^2 P)| and
    |P (mu_k - mu_bar)| below tol * scale entrywise, scale = max(1, largest |Sigma| or |mu - mu_bar|); the residual
    is kept as `structure_residual`. The core is the law of B^T x: means B^T mu_k, covariances B^T Sigma_k B; the
    shift is P mu_bar.
    """
    if not isinstance(mixture, GaussianMixture):
        return None
    d = mixture.d
    if d < 2:
        return None
    w = mixture.weights
    mu_bar = w @ mixture.means
    dev = mixture.means - mu_bar
    floor = float(mixture.eigvals.min().clamp_min(0.0))
    eye = torch.eye(d, dtype=DTYPE, device=mixture.device)
    excess = mixture.covs - floor * eye
    M = torch.einsum("k,ki,kj->ij", w, dev, dev) + torch.einsum("k,kij,kjl->il", w, excess, excess)
    lam, V = torch.linalg.eigh(0.5 * (M + M.T))
    top = float(lam[-1])
    if top <= 0:
        return None  # identical components: a Gaussian, not a subspace structure
    keep = lam > 1e-12 * top
    k = int(keep.sum())
    if k >= d:
        return None
    B = V[:, keep]
    P = eye - B @ B.T
    scale = max(1.0, float(mixture.covs.abs().max()), float(dev.abs().max()))
    core_covs = B.T @ mixture.covs @ B
    rebuilt = B @ core_covs @ B.T + floor * P
    residual = max(float((rebuilt - mixture.covs).abs().max()), float((dev @ P).abs().max()))
    if not residual <= tol * scale:
        return None
    core = GaussianMixture(w, mixture.means @ B, 0.5 * (core_covs + core_covs.transpose(-1, -2)),
                           f"{mixture.name}/core", mixture.device)
    shift = P @ mu_bar
    if float(shift.abs().max()) <= tol * scale:
        shift = torch.zeros_like(shift)  # rounding, not a shift: keep the complement one group of equal coordinates
    target = SubspaceTarget(core, d, floor, basis=B, shift=shift, name=f"{mixture.name}(subspace k={k})")
    target.structure_residual = residual
    return target


# ---------------------------------------------------------------------------- the named family
def _core_mixture(k: int, floor: float) -> GaussianMixture:
    """Three components in R^k: k = 1 a two-width, three-mode line; k > 1 means 1.5 apart on seeded random
    directions, anisotropic seeded covariances with eigenvalues in [0.05, 0.35]; each plus the floor."""
    if k == 1:
        return GaussianMixture([0.3, 0.5, 0.2], [[-1.5], [0.4], [1.8]],
                               [[[0.15 + floor]], [[0.05 + floor]], [[0.25 + floor]]], "subspace-core")
    gen = torch.Generator().manual_seed(1000 + k)
    directions = torch.randn(3, k, dtype=DTYPE, generator=gen)
    means = 1.5 * directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
    covs = []
    for _ in range(3):
        Q, _ = torch.linalg.qr(torch.randn(k, k, dtype=DTYPE, generator=gen))
        ev = 0.05 + 0.3 * torch.rand(k, dtype=DTYPE, generator=gen)
        covs.append(Q @ torch.diag(ev) @ Q.T + floor * torch.eye(k, dtype=DTYPE))
    return GaussianMixture([0.3, 0.5, 0.2], means, torch.stack(covs), "subspace-core")


def _core_product(k: int, floor: float) -> ProductTarget:
    """k copies of a two-mode line (2^k modes), plus the floor."""
    line = GaussianMixture([0.4, 0.6], [[-1.0], [1.0]], [[[0.16 + floor]], [[0.36 + floor]]], "subspace-line")
    return ProductTarget([line] * k, "subspace-product-core")


FAMILY_FLOOR = 0.01  # the named families' isotropic floor sigma^2
FAMILY_SEED = 7  # and their rotation seed


def subspace_family(d: int | None, k: int = 1, product_core: bool = False, floor: float = FAMILY_FLOOR,
                    seed: int = FAMILY_SEED) -> SubspaceTarget:
    """The named targets `subspace:<k>` (a three-component k-dimensional mixture, not a product for k > 1) and
    `subspace-product:<k>` (k copies of a two-mode line), embedded in R^d by a seeded random rotation, every
    component plus the isotropic floor sigma^2 I (default 0.01). d defaults to k + 1."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise TargetError(f"a subspace target needs a subspace dimension k >= 1, got k = {k!r}")
    k = int(k)
    d = k + 1 if d is None else d
    _check_dims(k, d)
    core = _core_product(k, floor) if product_core else _core_mixture(k, floor)
    name = f"subspace{'-product' if product_core else ''}:{k}"
    return SubspaceTarget(core, d, floor, seed=seed, name=name)


# ---------------------------------------------------------------------------- isotropic mixtures in R^d
ISOTROPIC_SIGMA2 = 0.1  # `isotropic:<H>` defaults: the shared component variance sigma^2,
ISOTROPIC_K = 1  # the dimension of the span of the means,
ISOTROPIC_SCALE = 2.0  # the spread of the means (standard deviation of each core coordinate of a mean),
ISOTROPIC_SEED = 11  # and the seed of the means and of the span


def isotropic_mixture(d: int | None, H: int, k: int = ISOTROPIC_K, sigma2: float = ISOTROPIC_SIGMA2,
                      scale: float = ISOTROPIC_SCALE, seed: int = ISOTROPIC_SEED) -> SubspaceTarget:
    """The isotropic Gaussian mixture (1/H) sum_h N(mu_h, sigma^2 I_d) in R^d (the named target `isotropic:<H>`).

    Parameters: H >= 1 components with equal weights, one shared variance sigma^2 > 0, means mu_h = B m_h in a
    seeded k-dimensional span (1 <= k < d; B a Haar-random d x k frame from `seed`), with core means m_h = scale *
    g_h, g_h ~ N(0, I_k) drawn from `seed`. d defaults to k + 1.

    Why it is the subspace form: with P = I - B B^T, sigma^2 I_d = B (sigma^2 I_k) B^T + sigma^2 P, so each component
    N(B m_h, sigma^2 I_d) is the law of B y + w with y ~ N(m_h, sigma^2 I_k) and w ~ N(0, sigma^2 P) independent,
    and w's law does not depend on h. The mixture is therefore SubspaceTarget(core = (1/H) sum_h N(m_h, sigma^2 I_k),
    d, floor = sigma^2, basis = B): exactly, not approximately, and exact.subspace measures it in any d (stochastic
    samplers need k = 1, where the core is a 1-D mixture; deterministic ones take any k through flow Monte Carlo).
    """
    for name, value, low in (("H", H, 1), ("k", k, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
            raise TargetError(f"isotropic mixture: {name} must be an integer >= {low}, got {value!r}")
    H, k, seed = int(H), int(k), int(seed)
    for name, value in (("sigma2", sigma2), ("scale", scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise TargetError(f"isotropic mixture: {name} must be a finite number > 0, got {value!r}")
    d = k + 1 if d is None else d
    if isinstance(d, bool) or not isinstance(d, (int, float)) or int(d) != d or not k < d:
        raise TargetError(f"isotropic mixture: needs an integer dimension d > k = {k}, got d = {d!r}")
    gen = torch.Generator().manual_seed(seed)
    means = float(scale) * torch.randn(H, k, dtype=DTYPE, generator=gen)
    covs = float(sigma2) * torch.eye(k, dtype=DTYPE).expand(H, k, k).clone()
    core = GaussianMixture(torch.full((H,), 1.0 / H, dtype=DTYPE), means, covs, f"isotropic-core:{H}")
    name = f"isotropic:{H}" + ("" if (k, sigma2, scale, seed) == (ISOTROPIC_K, ISOTROPIC_SIGMA2, ISOTROPIC_SCALE,
                                                                  ISOTROPIC_SEED)
                               else f"?k={k}&sigma2={sigma2:g}&scale={scale:g}&seed={seed}")
    return SubspaceTarget(core, int(d), float(sigma2), seed=seed + 1, name=name)
