"""Scores with a known error: the exact model plus a perturbation field of controlled size.

The theorems carry score-error terms (shared/spec/bounds.md). Li, Wei, Chen, Chi (2023, arXiv 2306.09251) measure
a learned score s_hat_t against the true s_t by

    eps_score^2  = (1/T) sum_t E_{x ~ q_t} || s_hat_t(x) - s_t(x) ||^2
    eps_Jacobi   = (1/T) sum_t E_{x ~ q_t} || J_{s_hat_t}(x) - J_{s_t}(x) ||      (spectral norm)

and prove that the deterministic sampler needs both small (TV <~ ... + sqrt(d) eps_score + d eps_Jacobi, in the
sharp form of 2408.02320) while the stochastic sampler needs only eps_score. Here the error is a field added to
the exact score,

    s_hat_t(x) = s_t(x) + delta(x),    delta(x)_j = a sin(omega x_j + phase),

so eps_hat_t = eps_t - sqrt(1 - abar_t) delta. Its L2 size is about a sqrt(d / 2) whatever omega, its Jacobian
diag(a omega cos(omega x_j + phase)) has spectral norm up to a omega: omega = 1 gives a smooth error (both sizes ~
a), a large omega with a small amplitude gives a high-frequency error with tiny L2 size and large Jacobian size.
The field is separable and the same in every coordinate, so a product target stays a product under it.

Two wrappers: `PerturbedModel` is a Model (for samplers and flow Monte Carlo); `PerturbedTarget` keeps the exact
law of a target but answers eps/score with the perturbation, so every engine that builds the exact model from the
target (the 1-D engines, the product engine) measures the perturbed sampler against the true law unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from samplers.base import SamplerError
from theory.fingerprint import digest
from theory.schedules import Grid


class SineField:
    """delta(x)_j = amplitude * sin(omega * x_j + phase), the same at every level."""

    def __init__(self, amplitude: float, omega: float = 1.0, phase: float = 0.3):
        if not (math.isfinite(amplitude) and amplitude >= 0):
            raise SamplerError(f"a perturbation amplitude must be finite and >= 0, got {amplitude!r}")
        if not (math.isfinite(omega) and omega > 0):
            raise SamplerError(f"a perturbation frequency omega must be finite and > 0, got {omega!r}")
        self.amplitude = float(amplitude)
        self.omega = float(omega)
        self.phase = float(phase)

    def __call__(self, x: Tensor, abar=None) -> Tensor:
        return self.amplitude * torch.sin(self.omega * x + self.phase)

    def jacobian_diagonal(self, x: Tensor, abar=None) -> Tensor:
        """d delta_j / d x_j (the Jacobian is diagonal)."""
        return self.amplitude * self.omega * torch.cos(self.omega * x + self.phase)

    def __repr__(self) -> str:
        return f"SineField(amplitude={self.amplitude:g}, omega={self.omega:g}, phase={self.phase:g})"


class PerturbedModel:
    """A Model whose score is the wrapped model's plus a field: eps_hat = eps - sqrt(1 - abar) delta."""

    def __init__(self, model, field: SineField):
        self.model = model
        self.field = field

    def eps(self, x: Tensor, abar: Tensor) -> Tensor:
        abar = torch.as_tensor(abar, dtype=x.dtype, device=x.device)
        return self.model.eps(x, abar) - torch.sqrt(1 - abar) * self.field(x, abar)


class PerturbedTarget:
    """The law of `target` (log_prob, sample, cdf, ... unchanged) with the score s + delta (eps, score, denoiser,
    score_jacobian perturbed). Never Gaussian for the engines: the perturbed score is not affine."""

    is_gaussian = False

    def __init__(self, target, field: SineField):
        self.base = target
        self.field = field
        self.name = f"{target.name}+{field!r}"

    def __getattr__(self, attr):
        # Everything about the law itself comes from the exact target.
        return getattr(self.base, attr)

    def score(self, x: Tensor, abar) -> Tensor:
        return self.base.score(x, abar) + self.field(x, abar)

    def eps(self, x: Tensor, abar) -> Tensor:
        level = torch.as_tensor(abar, dtype=x.dtype, device=x.device)
        return -torch.sqrt(1 - level) * self.score(x, level)

    def denoiser(self, x: Tensor, abar) -> Tensor:
        level = torch.as_tensor(abar, dtype=x.dtype, device=x.device)
        return (x + (1 - level) * self.score(x, level)) / torch.sqrt(level)

    def score_jacobian(self, x: Tensor, abar) -> Tensor:
        return self.base.score_jacobian(x, abar) + torch.diag_embed(self.field.jacobian_diagonal(x, abar))

    def marginal(self, j: int) -> "PerturbedTarget":
        return PerturbedTarget(self.base.marginal(j), self.field)

    def factor_groups(self):
        return [(PerturbedTarget(rep, self.field), idx) for rep, idx in self.base.factor_groups()]

    def fingerprint(self) -> str:
        """The exact law's fingerprint with the field's parameters (theory.fingerprint): not the exact target's
        alone, which `__getattr__` would hand out."""
        return digest("PerturbedTarget", self.base.fingerprint(), self.field)

    def __repr__(self) -> str:
        return f"PerturbedTarget({self.base!r}, {self.field!r})"


def score_error_sizes(target, field: SineField, grid: Grid, samples: int = 4096, seed: int = 0) -> dict[str, float]:
    """Li et al.'s eps_score and eps_Jacobi of `field` over the grid's levels (the levels the sampler evaluates,
    all but the last), by Monte Carlo over exact draws from each q_t; also the largest per-level values."""
    gen = torch.Generator(device=target.device).manual_seed(seed)
    sq, jac = [], []
    for level in grid.abar[:-1]:
        x = target.sample(samples, level, gen)
        sq.append(float((field(x, level) ** 2).sum(-1).mean()))
        jac.append(float(field.jacobian_diagonal(x, level).abs().amax(-1).mean()))
    return {
        "eps_score": math.sqrt(sum(sq) / len(sq)),
        "eps_jacobi": sum(jac) / len(jac),
        "eps_score_max": math.sqrt(max(sq)),
        "eps_jacobi_max": max(jac),
    }
