"""DDRaM, the denoising diffusion randomized midpoint method: a randomized-midpoint integrator of the reverse (DDPM)
SDE, `ddpm-rmp` and its variants (two evaluations a step).

Zhang, Huan, Huang, Boffi, Chen, Chewi (2025, arXiv 2511.04844, "Sublinear iterations can suffice even for DDPMs")
prove that O~(sqrt(d)) score evaluations suffice (KL, under smoothness of the score); the paper's algorithm box could
not be read here. The update below was checked line by line against the authors' code (stephen-huan/edm_rmd,
generate.py, `ablation_sampler(solver='midpoint', schedule='ou', scaling='ou', S_churn > 0)`, the stochastic branch
of the randomized midpoint, with its own sanity checks of every weight for the OU schedule). That code offers two
choices of the linear part that is integrated exactly (its README: the "score" and "relative score" choices of the
paper's appendix C.2.2) and two laws of the random time (uniform, or importance-sampled); its defaults are the
relative score and the importance-sampled time, which is `ddpm-rmp` here. The ODE counterpart is
samplers.randomized_midpoint (`ode-rmp`).

Notation. OU time t = -log(abar) / 2; one step goes from grid level abar_n (time t) to abar_(n+1) (time t - H),
H > 0 the elapsed reverse time. In reverse time r the VP reverse SDE is

    dY = (Y + 2 s(Y, t - r)) dr + sqrt(2) dW.

Linear part, two choices (with data N(0, I), the forward process's stationary law, the relative one has g = 0 and
is exact):
    relative (authors' default): dY = (-Y + 2 g(Y, t - r)) dr + sqrt(2) dW,  g = s + Y (the score relative to
                                 N(0, I)'s), integrating factor e^(-r): a = -1;
    score:                       dY = ( Y + 2 s(Y, t - r)) dr + sqrt(2) dW,  g = s, integrating factor e^(r): a = +1.
Then, exactly, Y(r) = e^(a r) Y(0) + 2 int_0^r e^(a (r - p)) g(Y(p), t - p) dp + N(r), with the Gaussian noise
N(r) = sqrt(2) int_0^r e^(a (r - p)) dW(p), Var N(r) = v(r) := (e^(2 a r) - 1) / a (per coordinate).

One step, with a time r in [0, H] drawn from u ~ U[0, 1] (noise.uniform) and two independent normals xi, Z:

    Y_mid  = e^(a r) Y + 2 (e^(a r) - 1) / a * g(Y, t) + sqrt(v(r)) xi          exponential Euler to the random time
    Y_next = e^(a H) Y + 2 W g(Y_mid, t - r) + N(H)                              randomized estimate of the integral

with N(H) the same Brownian path's noise over the whole step. Split at r it is N(H) = e^(a (H - r)) N(r) + N'(H - r),
the two parts independent (disjoint increments of W), N(r) = sqrt(v(r)) xi the midpoint's own noise. The joint law
of (midpoint noise, end noise) is Gaussian with covariance e^(a (H - r)) v(r); conditionally on xi the end noise is
    N(H) = e^(a (H - r)) sqrt(v(r)) xi + sqrt(v(H - r)) Z,        v(H) - e^(2 a (H - r)) v(r) = v(H - r),
so xi is the step's normal draw (it enters before the second score evaluation) and std = sqrt(v(H - r)) is the
independent end noise, > 0 for r < H (a function of the random time). The time and weight W:
    uniform:    r = u H,                                      W = H e^(a (H - r))
    importance: r with density proportional to e^(a (H - r)), W = (e^(a H) - 1) / a
                (a = -1: r = log(1 + u (e^H - 1));  a = +1: r = -log(1 + u (e^(-H) - 1))).
Either way E_r[W g(Y(r), t - r)] = int_0^H e^(a (H - p)) g(Y(p), t - p) dp along a given path: evaluated at the
true Y(r) the estimate would be unbiased, and Y_mid stands in for Y(r), as in Shen & Lee's randomized midpoint
(arXiv 1909.05503).

Expected order in the step size: 2 in law (TV) for exact, smooth scores. Per step the midpoint's error is the
drift's change over [0, r], of mean O(r^2) (its Brownian part has mean zero), so the mean of the update is off by
O(H^3); the randomized estimate's fluctuation around the path integral has variance O(H^3); both add up to O(H^2)
over the O(1/H) steps. Measured through the randomized engine (tests/test_orders.py: 1-D Gaussian target, uniform
sigma grid in [0.5, 5], fit of log TV on log h with a 95% Student interval): `ddpm-rmp` 2.11 [1.77, 2.45] on
T = 17, 33, 65 (2.26 [1.54, 2.97] on T = 9, 17, 33: pre-asymptotic at T = 9). The variants on T = 9, 17, 33 (not in
the order test, measured once): relative-uniform 2.44 [1.35, 3.53]; score-uniform 4.14 [2.07, 6.22] and
score-importance 3.60 [-3.93, 11.13], whose local slopes (4.4 then 3.9; 4.6 then 2.6) are not settled at these
sizes. The paper's gain is in the dimension (sqrt(d) evaluations rather than d), which a 1-D measurement cannot
show; its theorem (zhang2025-ddram) is a KL bound, d / T^2 up to logs.

Exact engines: in 1-D the randomized engine (exact.randomized_1d) integrates the output law over the time (Gauss-
Legendre) and the stage normal (Gauss-Hermite); in d > 1 there is none (one random time moves every coordinate,
so the law is a mixture of non-product laws; choose_method refuses). On coarse grids a quadrature node's map can
fold (mix1d, li2023 T = 8: steps 3-5, nodes with a late time u >= 0.83 and a stage normal xi >= 1.9: the
midpoint lands where the score is steep), and the 1-D engine then refuses the run as not increasing.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from samplers.base import CountingModel, RandomizedSampler, RandomStep, SamplerError, SamplerInfo, register
from samplers.expint import ou_time
from samplers.randomized_midpoint import _score_at_times
from theory.schedules import Grid

LINEAR_PARTS = {"relative": -1.0, "score": 1.0}  # the integrating factor's exponent a
TIME_LAWS = ("importance", "uniform")


def _noise_variance(a: float, r: Tensor) -> Tensor:
    """v(r) = (e^(2 a r) - 1) / a, the variance of sqrt(2) int_0^r e^(a (r - p)) dW(p)."""
    return torch.expm1(2 * a * r) / a


class RandomizedMidpointSDE(RandomizedSampler):
    """DDRaM (module docstring), two evaluations per step, with a = -1 (relative score g = s + Y) or +1 (g = s):
    Y_mid = e^(a r) Y + 2 (e^(a r) - 1)/a g(Y, t) + sqrt(v(r)) xi;
    Y_next = e^(a H) Y + 2 W g(Y_mid, t - r) + e^(a (H - r)) sqrt(v(r)) xi + sqrt(v(H - r)) Z,  v(r) = (e^(2ar) - 1)/a;
    W = H e^(a (H - r)) for r = u H, or W = (e^(a H) - 1)/a for r drawn with density proportional to e^(a (H - r))."""

    def __init__(self, linear: str = "relative", time: str = "importance", name: str | None = None):
        if linear not in LINEAR_PARTS:
            raise SamplerError(f"ddpm-rmp linear part must be one of {', '.join(LINEAR_PARTS)}; got {linear!r}")
        if time not in TIME_LAWS:
            raise SamplerError(f"ddpm-rmp time law must be one of {', '.join(TIME_LAWS)}; got {time!r}")
        self.linear, self.time, self.a = linear, time, LINEAR_PARTS[linear]
        name = name or f"ddpm-rmp:{linear}-{time}"
        self.info = SamplerInfo(
            name, stochastic=True, evals_per_step=2, order=2.0,
            reference="Zhang, Huan, Huang, Boffi, Chen, Chewi 2025 (arXiv 2511.04844), DDRaM, as in the authors' code "
                      f"(stephen-huan/edm_rmd, generate.py, OU schedule, S_churn > 0); {linear} linear part, "
                      f"{time} time",
            theorems=("zhang2025-ddram",),
            notes="randomized: one time per step and sample, the Brownian increment split exactly at it (normal "
                  "draw before the second evaluation, the independent rest added last)",
        )

    def _time_and_weight(self, u: Tensor, H: Tensor) -> tuple[Tensor, Tensor]:
        a = self.a
        if self.time == "uniform":
            r = u * H
            return r, H * torch.exp(a * (H - r))
        # density of r proportional to e^(a (H - r)): invert its distribution function
        r = -torch.log1p(u * torch.expm1(-a * H)) / a
        return r, torch.expm1(a * H) / a

    def _drift(self, score: Tensor, y: Tensor) -> Tensor:
        """g: the score relative to N(0, I)'s (s + y) for the relative linear part, the score itself otherwise."""
        return score + y if self.linear == "relative" else score

    def random_steps(self, model: CountingModel, grid: Grid) -> Iterator[RandomStep]:
        times = ou_time(grid.abar)
        a = self.a
        for n in range(grid.steps):
            t, H = times[n], times[n] - times[n + 1]

            def step(y: Tensor, u: Tensor, xi: Tensor, t=t, H=H) -> Tensor:
                r, weight = self._time_and_weight(u, H)
                stage_noise = torch.sqrt(_noise_variance(a, r)) * xi
                g = self._drift(model.score(y, torch.exp(-2 * t)), y)
                y_mid = torch.exp(a * r) * y + 2 * torch.expm1(a * r) / a * g + stage_noise
                # each sample has its own random time: one evaluation at per-sample levels when the times differ
                g_mid = self._drift(_score_at_times(model, y_mid, t - r), y_mid)
                return torch.exp(a * H) * y + 2 * weight * g_mid + torch.exp(a * (H - r)) * stage_noise

            def std(u: Tensor, H=H) -> Tensor:
                r, _ = self._time_and_weight(u, H)
                return torch.sqrt(_noise_variance(a, H - r))

            yield RandomStep(step, std=std, uniforms=1, normals=1)


register("ddpm-rmp")(lambda: RandomizedMidpointSDE(name="ddpm-rmp"))  # the authors' defaults


@register("ddpm-rmp:")
def _ddpm_rmp_family(arg: str) -> RandomizedMidpointSDE:
    """`ddpm-rmp:<linear>-<time>`, linear in {relative, score}, time in {importance, uniform}."""
    linear, _, time = arg.partition("-")
    if linear not in LINEAR_PARTS or time not in TIME_LAWS:
        raise SamplerError(f"ddpm-rmp variant must be <linear>-<time> with linear in {{{', '.join(LINEAR_PARTS)}}} "
                           f"and time in {{{', '.join(TIME_LAWS)}}}; got {arg!r}")
    return RandomizedMidpointSDE(linear, time)
