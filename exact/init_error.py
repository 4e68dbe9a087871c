"""The initialisation error: the distance between the initial law (N(0, I) in the theory) and q_T, reported on
its own so that it is never confused with the discretisation error."""

from __future__ import annotations

import torch

from exact.base import initial_law, trapezoid
from exact.gaussian import gaussian_kl, gaussian_tv_mc
from exact.grid_1d_kernel import kernel_range
from theory.schedules import Grid
from theory.targets import DTYPE, GaussianMixture


def init_error(target: GaussianMixture, grid: Grid, init: str) -> dict[str, float]:
    """TV and KL between the initial law and q_T (zero for the exact start)."""
    if init == "exact":
        return {"tv": 0.0, "kl": 0.0}
    p_init = initial_law(target, grid, init)
    q_T = initial_law(target, grid, "exact")
    if target.d == 1:
        lo, hi = kernel_range(target, grid, p_init, 12.0)
        x = torch.linspace(lo, hi, 1 << 15, dtype=DTYPE, device=target.device)[:, None]
        h = float(x[1, 0] - x[0, 0])
        lp, lq = p_init.log_prob(x, 1.0), q_T.log_prob(x, 1.0)
        p = torch.exp(lp)
        return {
            "tv": 0.5 * float(trapezoid((p - torch.exp(lq)).abs(), h)),
            "kl": float(trapezoid(p * (torch.expm1(lq - lp) - (lq - lp)), h)),
        }
    if target.is_gaussian:
        mq, Sq = q_T.means[0], q_T.covs[0]
        mp, Sp = p_init.means[0], p_init.covs[0]
        return {"tv": gaussian_tv_mc(mp, Sp, mq, Sq)[0], "kl": gaussian_kl(mp, Sp, mq, Sq)}
    return {"tv": float("nan"), "kl": float("nan")}
