"""Flow Monte Carlo: the exact-density error of a deterministic sampler in any dimension (metrics.md, method 4).

A deterministic sampler is a map F: R^d -> R^d from the initial point to the output. Draw x ~ p_init (q_T itself,
or N(0, I)), push it through the whole run, y = F(x), and get the output density at y by the change of variables

    log p(y) = log p_init(x) - log |det dF/dx (x)|,

with the Jacobian dF/dx taken by automatic differentiation through every step (multistep samplers included, since
the derivative follows the run as written). With the log ratio r = log q(y) - log p(y) against the true law q at the
grid's last level,

    KL(p || q) = E_p[ e^r - 1 - r ]     (E_p[e^r] = 1, so this is E_p[-r]; the integrand is >= 0 and of
                                         second order in r, hence low variance when p is close to q)
    TV(p, q)   = E_p[ (1 - e^r)_+ ]

and both come with their Monte Carlo standard error std / sqrt(n). The map must be a diffeomorphism for the formula
to hold; a Jacobian with non-positive determinant at a drawn point means it is not one there, and the engine says so.

Cost: one forward pass per batch of draws and d backward passes (exact.base.map_and_jacobian: one at a time up to
d = 16, batched into one above), the batch sized to a memory budget (`batch` points per batch overrides it). The mixture score's derivative is written out
(theory.targets), so a draw costs O(K d^2 T) for diagonal targets, O(K d^3 T) for rotated ones. The draws are taken
at once, so the numbers do not depend on the batch size; every tensor stays on the target's device, and the only
transfers to the host are the final scalars (and, for a refusal, the point it names).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exact.base import DivergenceError, Measurement, batch_size, initial_draws, map_and_jacobian
from samplers.base import CountingModel, ExactModel, Sampler
from theory.schedules import Grid
from theory.targets import DTYPE

DEFAULT_SAMPLES = 10_000

# Per point in a batch the backward passes hold d x d numbers for each saved tensor of the run; a budget of 2^20
# of them keeps a batch's Jacobian work in the cache-sized range (256 points at d = 64) where it ran fastest.
BATCH_BUDGET = 1 << 20


def flow_and_logdet(sampler: Sampler, model, grid: Grid, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """F(x), sign and log|det dF/dx| at points x of shape (n, d)."""
    counting = model if isinstance(model, CountingModel) else CountingModel(model)
    y, J = map_and_jacobian(lambda points: sampler.run(counting, grid, points, None), x)
    sign, logdet = torch.linalg.slogdet(J)
    return y, sign, logdet


def flow_mc(target, sampler: Sampler, grid: Grid, init: str = "exact", samples: int = DEFAULT_SAMPLES,
            seed: int = 0, model=None, batch: int | None = None) -> dict[str, Measurement]:
    """metrics.md method 4. `model` replaces the exact model of `target` (e.g. a perturbed score); the error is
    still measured against `target`'s exact law. `batch`: draws per batch (None: a memory budget)."""
    if sampler.info.stochastic:
        raise DivergenceError(
            f"flow Monte Carlo needs a deterministic sampler, {sampler.info.name!r} is stochastic "
            "(its output density is not a change of variables)"
        )
    if isinstance(samples, bool) or int(samples) != samples or samples < 2:
        raise DivergenceError(f"flow Monte Carlo needs at least 2 samples, got {samples!r}")
    d = target.d
    size = batch_size(batch, d * d, BATCH_BUDGET)
    gen = torch.Generator(device=target.device).manual_seed(seed)
    x, log_p_init = initial_draws(target, grid, init, int(samples), gen)
    model = CountingModel(model if model is not None else ExactModel(target))
    level = grid.abar[-1]
    ratios, signs = [], []
    for start in range(0, x.shape[0], size):
        y, sign, logdet = flow_and_logdet(sampler, model, grid, x[start : start + size])
        log_p = log_p_init[start : start + size] - logdet
        ratios.append(target.log_prob(y, level) - log_p)
        signs.append(sign)
    r, sign = torch.cat(ratios), torch.cat(signs)
    # One check at the end (a host transfer of two flags), not one per batch.
    finite, positive = (bool(v) for v in torch.stack([torch.isfinite(r).all(), (sign > 0).all()]).cpu())
    if not positive:
        where = x[torch.nonzero(sign <= 0)[0, 0]].tolist()
        raise DivergenceError(
            f"the map of {sampler.info.name!r} on {grid.name} T={grid.T} has a Jacobian with non-positive "
            f"determinant at x = {where[:4]}{'...' if d > 4 else ''}: the change-of-variables method does not apply"
        )
    if not finite:
        raise DivergenceError(f"sampler {sampler.info.name!r} produced non-finite values on {grid.name} T={grid.T}")
    kl_terms = torch.expm1(r) - r
    tv_terms = (-torch.expm1(r)).clamp_min(0)
    n = r.numel()
    moments = torch.stack([kl_terms.mean(), kl_terms.std(), tv_terms.mean(), tv_terms.std()]).tolist()
    out = {}
    for metric, (value, std) in (("kl", moments[0:2]), ("tv", moments[2:4])):
        se = std / math.sqrt(n)
        rounding = 64 * torch.finfo(DTYPE).eps * grid.T * (1.0 + abs(value))
        out[metric] = Measurement(metric, value, se + rounding, "flow-mc",
                                  {"samples": n, "seed": seed, "standard_error": se, "init": init, "batch": size})
    return out
