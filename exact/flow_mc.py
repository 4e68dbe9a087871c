"""Flow Monte Carlo: the exact-density error of a deterministic sampler in any dimension (metrics.md, method 4).

A deterministic sampler is a map F: R^d -> R^d from the initial point to the output. Draw x ~ p_init (q_T itself,
or N(0, I)), push it through the whole run, y = F(x), and get the output density at y by the change of variables

    log p(y) = log p_init(x) - log |det dF/dx (x)|,

with the Jacobian dF/dx taken by forward-mode differentiation through every step (d tangent directions, one per
coordinate; multistep samplers included, since the derivative follows the run as written). With the log ratio
r = log q(y) - log p(y) against the true law q at the grid's last level,

    KL(p || q) = E_p[ e^r - 1 - r ]     (E_p[e^r] = 1, so this is E_p[-r]; the integrand is >= 0 and of
                                         second order in r, hence low variance when p is close to q)
    TV(p, q)   = E_p[ (1 - e^r)_+ ]

and both come with their Monte Carlo standard error std / sqrt(n). The map must be a diffeomorphism for the formula
to hold; a Jacobian with non-positive determinant at a drawn point means it is not one there, and the engine says so.

Cost: d tangent passes per draw, vectorised over the tangents with torch.func.vmap (the primal run is shared),
in chunks of draws sized to a memory budget; a sampler vmap cannot trace falls back to carrying the d tangents in
the batch, so any sampler that runs on a batch runs here unchanged. Every operation is O(d) per point for
diagonal targets, so a draw costs O(d^2 K T); rotated covariances cost O(d^3 K T).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exact.base import DivergenceError, Measurement, initial_draws
from samplers.base import CountingModel, ExactModel, Sampler
from theory.schedules import Grid
from theory.targets import DTYPE

DEFAULT_SAMPLES = 10_000


CHUNK_ELEMENTS = 1 << 20  # points x d x d in one forward-mode pass (8 MB per float64 tensor of that size)


def flow_and_logdet(sampler: Sampler, model, grid: Grid, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """F(x), sign and log|det dF/dx| at points x of shape (n, d), by forward mode with d tangents per point.

    The d tangents e_1..e_d are vectorised with torch.func.vmap (the primal run is shared); a sampler whose code
    vmap cannot trace (data-dependent Python control flow) falls back to carrying the tangents in the batch."""
    n, d = x.shape
    counting = model if isinstance(model, CountingModel) else CountingModel(model)

    def run(points: Tensor) -> Tensor:
        return sampler.run(counting, grid, points, None)

    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    try:
        Y, dY = torch.func.vmap(lambda v: torch.func.jvp(run, (x,), (v,)))(eye[:, None, :].expand(d, n, d))
        J = dY.permute(1, 2, 0)  # J[i, :, j] = dF/dx_j at x_i
        y = Y[0] if Y.ndim == 3 else Y
    except RuntimeError:
        # Row i*d + j carries x_i with tangent e_j, so its tangent output is column j of the Jacobian at x_i.
        Y, dY = torch.func.jvp(run, (x.repeat_interleave(d, 0),), (eye.repeat(n, 1),))
        J = dY.reshape(n, d, d).transpose(1, 2)
        y = Y[::d]
    sign, logdet = torch.linalg.slogdet(J)
    return y, sign, logdet


def flow_mc(target, sampler: Sampler, grid: Grid, init: str = "exact", samples: int = DEFAULT_SAMPLES,
            seed: int = 0, model=None, chunk: int | None = None) -> dict[str, Measurement]:
    """metrics.md method 4. `model` replaces the exact model of `target` (e.g. a perturbed score); the error is
    still measured against `target`'s exact law."""
    if sampler.info.stochastic:
        raise DivergenceError(
            f"flow Monte Carlo needs a deterministic sampler, {sampler.info.name!r} is stochastic "
            "(its output density is not a change of variables)"
        )
    if isinstance(samples, bool) or int(samples) != samples or samples < 2:
        raise DivergenceError(f"flow Monte Carlo needs at least 2 samples, got {samples!r}")
    d = target.d
    gen = torch.Generator(device=target.device).manual_seed(seed)
    x, log_p_init = initial_draws(target, grid, init, int(samples), gen)
    model = CountingModel(model if model is not None else ExactModel(target))
    chunk = chunk or max(1, CHUNK_ELEMENTS // (d * d))
    level = grid.abar[-1]
    ratios = []
    for start in range(0, x.shape[0], chunk):
        xc = x[start : start + chunk]
        y, sign, logdet = flow_and_logdet(sampler, model, grid, xc)
        if not (torch.all(torch.isfinite(y)) and torch.all(torch.isfinite(logdet))):
            raise DivergenceError(f"sampler {sampler.info.name!r} produced non-finite values on {grid.name} T={grid.T}")
        if torch.any(sign <= 0):
            where = xc[torch.nonzero(sign <= 0)[0, 0]].tolist()
            raise DivergenceError(
                f"the map of {sampler.info.name!r} on {grid.name} T={grid.T} has a Jacobian with non-positive "
                f"determinant at x = {where[:4]}{'...' if d > 4 else ''}: the change-of-variables method does not apply"
            )
        log_p = log_p_init[start : start + chunk] - logdet
        ratios.append(target.log_prob(y, level) - log_p)
    r = torch.cat(ratios)
    kl_terms = torch.expm1(r) - r
    tv_terms = (-torch.expm1(r)).clamp_min(0)
    n = r.numel()
    out = {}
    for metric, terms in (("kl", kl_terms), ("tv", tv_terms)):
        value = float(terms.mean())
        se = float(terms.std() / math.sqrt(n))
        rounding = 64 * torch.finfo(DTYPE).eps * grid.T * (1.0 + abs(value))
        out[metric] = Measurement(metric, value, se + rounding, "flow-mc",
                                  {"samples": n, "seed": seed, "standard_error": se, "init": init})
    return out
