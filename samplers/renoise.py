"""Probability-flow ODE jump over two intervals, then the forward OU process back over one: `ode-renoise`, Jain &
Zhang (2025, arXiv 2508.16306, "A sharp KL-convergence analysis for diffusion models under minimal assumptions"),
their Algorithm 1.

Provenance. The rule was checked against notes written from the paper's full text (three that agree), not against
the PDF itself; an earlier version of this module rested on one third-party summary, and its rule was already this
one (the jump and the re-noise); what changed is the grid (below) and the point below the output time.

The paper's algorithm. Forward OU dX = -X dt + sqrt(2) dB, so abar = e^(-2t) (OU time t = -log(abar) / 2); the
score s(x, t) = -eps / sqrt(1 - abar). Grid delta = t_0 < t_1 < ... < t_(K+1) = T_end with h_k = t_k - t_(k-1) =
c min{1, t_k} (constant steps above t = 1, geometric below: the `jainzhang` schedule, this sampler's recommended
grid). Start x_(K+1) ~ N(0, I); for k = K+1 down to 2:

    x_(k-1/2) = e^(h_k + h_(k-1)) x_k + (e^(h_k + h_(k-1)) - 1) s(x_k, t_k)     ODE, score frozen, t_k -> t_(k-2)
    x_(k-1)   = e^(-h_(k-1)) x_(k-1/2) + sqrt(1 - e^(-2 h_(k-1))) eta_k          exact forward OU, t_(k-2) -> t_(k-1)

one evaluation a step; the output x_1 is compared with p_(t_1). Given x_k the step is one Gaussian transition:

    x_(k-1) ~ N( e^(-h_(k-1)) (e^H x_k + (e^H - 1) s(x_k, t_k)),  (1 - e^(-2 h_(k-1))) I ),   H = h_k + h_(k-1),

and since the exact step (the true flow over the same two intervals, then the same OU) has the same covariance,
the step's KL is e^(-2 h_(k-1)) |x_(k-1/2) - xhat_(k-1/2)|^2 / (2 (1 - e^(-2 h_(k-1)))), O(h^3).

Here, line by line. A grid is the levels sampled, t_(K+1) (level 0) to t_1 (the last level, returned), so step i
runs from level i (t_k, k = K+1-i) to level i+1 (t_(k-1)), overshooting to level i+2 (t_(k-2)): the jump and the
re-noise are the paper's, on whatever grid is given. The extra point t_0 = delta below the output time is not a
level of the grid (a grid ends at the level returned, shared/DESIGN.md): the last step recovers it by the paper's
step law, with c read off the grid's last step, c = (t_2 - t_1) / min{1, t_2} and t_0 = t_1 - c min{1, t_1}. On a
`jainzhang` grid this is exactly the paper's delta (a test checks it); on another grid it is this module's
continuation of that grid's last step (geometric, t_0 = t_1^2 / t_2, when t_2 <= 1). The start N(0, I) is the
engines' init="gaussian"; init="exact" (q at the first level) removes the theorem's (d + m2) e^(-T_end) term and
leaves the discretisation term alone.

Theorem 3.1 (theory.bounds, `jainzhang2025-kl`): for K > d (log(1/delta) + T_end),
KL(p_(t_1) || phat_(t_1)) <~ (d + m2) e^(-T_end) + d^2 c^3 K + T_end eps^2; with c ~ (log(1/delta) + T_end) / K and
exact scores, d^2 (log(1/delta) + T_end)^3 / K^2. The direction is KL(data || sampler): the engines' "kl_reverse".
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from samplers.base import CountingModel, MarkovSampler, SamplerError, SamplerInfo, Transition, register
from samplers.expint import ou_time
from theory.schedules import Grid


def below_output_time(times: Tensor) -> Tensor:
    """t_0, the point below the output time t_1 = times[-1] that the last step overshoots to, by the paper's step
    law h_1 = c min{1, t_1} with c from the grid's last step h_2 = t_2 - t_1 = c min{1, t_2} (t_2 = times[-2])."""
    t1, t2 = times[-1], times[-2]
    c = (t2 - t1) / torch.clamp(t2, max=1.0)
    t0 = t1 - c * torch.clamp(t1, max=1.0)
    if float(t0) <= 0:
        raise SamplerError(f"ode-renoise: the grid's last step (OU times {float(t2)!r} -> {float(t1)!r}) has step "
                           f"constant c = {float(c)!r}, which continues below the output time to t_0 = {float(t0)!r} "
                           "<= 0; it needs c min{1, t_1} < t_1")
    return t0


def overshoot_levels(grid: Grid) -> Tensor:
    """abar at t_(k-2) for each step: the grid's level i + 2, and for the last step abar = e^(-2 t_0) at the point
    below the output time (`below_output_time`)."""
    abar = grid.abar
    t = ou_time(abar)
    if float(t[-1]) <= 0:
        raise SamplerError(f"ode-renoise overshoots past the grid's last level, which must lie below 1: got abar = "
                           f"{float(abar[-1])!r}")
    beyond = torch.exp(-2 * below_output_time(t))
    return torch.cat([abar[2:], beyond.reshape(1)])


@register("ode-renoise")
class ODERenoise(MarkovSampler):
    """Jain & Zhang (2025), Algorithm 1 (module docstring), one evaluation per step: the frozen-score ODE jump from
    t_k over two intervals to t_(k-2), then the exact forward OU over one interval back to t_(k-1):
    x_(k-1) = e^(-h_(k-1)) (e^H x_k + (e^H - 1) s(x_k, t_k)) + sqrt(1 - e^(-2 h_(k-1))) eta, H = h_k + h_(k-1);
    in levels, sqrt(abar_(k-1)/abar_(k-2)) (sqrt(abar_(k-2)/abar_k) x_k + (sqrt(abar_(k-2)/abar_k) - 1) s)
    + sqrt(1 - abar_(k-1)/abar_(k-2)) eta. Recommended grid: `jainzhang` (h_k = c min{1, t_k})."""

    info = SamplerInfo(
        "ode-renoise", stochastic=True, evals_per_step=1, order=1.0,
        reference="Jain & Zhang 2025 (arXiv 2508.16306), Algorithm 1: frozen-score ODE jump over two intervals, "
                  "exact forward OU over one, steps h_k = c min{1, t_k} (schedule jainzhang); checked against notes "
                  "from the full text, not the PDF",
        theorems=("jainzhang2025-kl",),
        notes="the point t_0 below the output time is not a grid level: the last step continues the grid's last "
              "step by h = c min{1, t} (exactly the paper's delta on a jainzhang grid)",
    )

    def transitions(self, model: CountingModel, grid: Grid) -> Iterator[Transition]:
        overshoot = overshoot_levels(grid)
        for i in range(grid.steps):
            abar_k, abar_next, abar_jump = grid.abar[i], grid.abar[i + 1], overshoot[i]
            grow = torch.sqrt(abar_jump / abar_k)  # e^(h_k + h_(k-1)): the ODE jump t_k -> t_(k-2)
            shrink = torch.sqrt(abar_next / abar_jump)  # e^(-h_(k-1)): the OU step t_(k-2) -> t_(k-1)

            def mean(x: Tensor, abar_k=abar_k, grow=grow, shrink=shrink) -> Tensor:
                return shrink * (grow * x + (grow - 1) * model.score(x, abar_k))

            yield Transition(mean, torch.sqrt(1 - abar_next / abar_jump))
