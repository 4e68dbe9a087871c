"""What every exact engine shares: a Measurement (value, numerical error, method), the refusal error, the
initial laws (q_T exactly or N(0, I)) as densities and as draws, the trapezoid rule, the derivatives of a sampler's
map (one reverse-mode pass, see map_and_slope and map_and_jacobian) and the batch size of the Monte Carlo engines.

shared/spec/metrics.md: every number carries the method that produced it and an estimate of its own numerical
error; a value whose numerical error is not well below the value is flagged.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture, gaussian

METRICS = ("tv", "kl")


FLAG_RATIO = 0.1  # a value whose numerical error exceeds this fraction of it is flagged


class DivergenceError(ValueError):
    """No exact method applies, or the one that does cannot stand behind a number (e.g. a non-monotone map)."""


@dataclass
class Measurement:
    metric: str
    value: float
    numerical_error: float
    method: str
    details: dict = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """True when the numerical error is not well below the value itself."""
        return not (self.numerical_error < FLAG_RATIO * abs(self.value))


# ---------------------------------------------------------------------------- initial laws
def initial_law(target: GaussianMixture, grid: Grid, init: str) -> GaussianMixture:
    """q_T exactly ('exact') or the theory's N(0, I) ('gaussian')."""
    if init == "exact":
        level = grid.abar[0]
        # q_T as a mixture in its own right (its level-1 form), so the same code evaluates it.
        return GaussianMixture(
            target.weights,
            torch.sqrt(level) * target.means,
            level * target.covs + (1 - level) * torch.eye(target.d, dtype=DTYPE, device=target.device),
            f"q_T({target.name})",
            target.device,
        )
    if init == "gaussian":
        return gaussian(
            torch.zeros(target.d, dtype=DTYPE), torch.eye(target.d, dtype=DTYPE), name="N(0,I)"
        ).to(target.device)
    raise DivergenceError(f"unknown init {init!r}: use 'exact' (q_T) or 'gaussian' (N(0, I))")


def initial_draws(target, grid: Grid, init: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n draws from the initial law and their log-density: q_T exactly ('exact') or N(0, I) ('gaussian')."""
    if init == "exact":
        x = target.sample(n, grid.abar[0], generator)
        return x, target.log_prob(x, grid.abar[0])
    if init == "gaussian":
        x = torch.randn(n, target.d, dtype=DTYPE, device=target.device, generator=generator)
        return x, -0.5 * (x * x).sum(-1) - 0.5 * target.d * math.log(2 * math.pi)
    raise DivergenceError(f"unknown init {init!r}: use 'exact' (q_T) or 'gaussian' (N(0, I))")


def trapezoid(values: Tensor, h: float) -> Tensor:
    return h * (values.sum(-1) - 0.5 * (values[..., 0] + values[..., -1]))


# ---------------------------------------------------------------------------- derivatives of a sampler's map
# A sampler's run is a map acting on each point of the batch alone, so derivatives need no tangent per point:
# reverse mode gives F' of a 1-D map from one backward pass of sum_i F(x_i), and the d x d Jacobian of a map of
# R^d from d backward passes batched into one (autograd's is_grads_batched). Reverse mode costs a few microseconds
# per tensor operation here; torch 2.13's forward mode (torch.func.jvp) routes every operation between a dual and
# a plain tensor, i.e. most of a sampler's arithmetic, through a Python decomposition costing ~0.5 ms each.
def map_and_slope(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """F(x) and F'(x) at points x of shape (n,) for a map F acting on each point alone (d/dx_i sum_j F(x_j) =
    F'(x_i)), by one reverse-mode pass. A map whose output has no reverse-mode history (a sampler that runs under
    torch.no_grad, which stops reverse mode but not forward mode) is differentiated in forward mode instead."""
    with torch.enable_grad():
        points = x.detach().requires_grad_(True)
        values = fn(points)
        if values.requires_grad:
            (slope,) = torch.autograd.grad(values.sum(), points, allow_unused=True)
            return values.detach(), torch.zeros_like(x) if slope is None else slope
    return torch.func.jvp(fn, (x.detach(),), (torch.ones_like(x),))


BATCHED_ROWS_FROM = 17  # dimension from which map_and_jacobian batches its backward passes (see there)


def map_and_jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """F(x) and the Jacobian dF/dx (shape (n, d_out, d)) at points x of shape (n, d) for a map F acting on each row
    alone: one forward pass, then the d_out backward passes of the rows e_i^T dF/dx.

    From d_out = BATCHED_ROWS_FROM on, the backward passes run as one, batched by torch.func.vmap over the pullback
    of torch.func.vjp (the forward pass is not vmapped, so samplers with Python control flow run unchanged; the
    mixture score brings its own batching rule): about twice as fast at d = 32 to 64. Below, they run one at a time
    on plain autograd: as fast there, and free of the one-time import of torch._dynamo (about 2.5 s) that functorch's
    vjp triggers in a fresh process. Should some backward formula refuse vmap, the rows go one at a time too; a map
    whose output has no reverse-mode history (a sampler under torch.no_grad) gets its columns by forward mode."""
    with torch.enable_grad():
        points = x.detach().requires_grad_(True)
        values = fn(points)
    n, d_out = values.shape
    if not values.requires_grad:
        # No reverse-mode history (a sampler under torch.no_grad): the columns by forward mode, d tangents.
        d = x.shape[1]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)[:, None, :].expand(d, n, d)
        _, columns = torch.func.vmap(lambda v: torch.func.jvp(fn, (x.detach(),), (v,)))(eye)
        return values.detach(), columns.permute(1, 2, 0)
    if d_out >= BATCHED_ROWS_FROM:
        # One more forward pass, under functorch (a small price next to d backward passes).
        basis = torch.eye(d_out, dtype=values.dtype, device=values.device)[:, None, :].expand(d_out, n, d_out)
        try:
            primal, backward = torch.func.vjp(fn, x.detach())
            (rows,) = torch.func.vmap(backward)(basis)
            return primal, rows.transpose(0, 1)  # J[n, i, j] = dF_i/dx_j at x_n
        except RuntimeError:
            pass
    rows = []
    for i in range(d_out):
        (row,) = torch.autograd.grad(values[:, i].sum(), points, retain_graph=i < d_out - 1, allow_unused=True)
        rows.append(torch.zeros_like(x) if row is None else row)
    return values.detach(), torch.stack(rows, 1)


# ---------------------------------------------------------------------------- batches
def batch_size(batch: int | None, per_point: int, budget: int = 1 << 22) -> int:
    """Points per batch for an engine that evaluates many points: `batch` as given (an integer >= 1), or, for None,
    as many as keep about `budget` float64 numbers (32 MB) of per-point work in memory at once, `per_point` numbers
    per point."""
    if batch is None:
        return max(1, budget // max(1, per_point))
    try:
        size = operator.index(batch)
    except TypeError:
        size = None
    if isinstance(batch, bool) or size is None or size < 1:
        raise DivergenceError(f"batch must be an integer >= 1 (points per batch), got {batch!r}")
    return size
