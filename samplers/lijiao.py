"""Li & Jiao's randomized-midpoint sampler, `lijiao-rmp` (N = 2 inner points) and `lijiao-rmp:N`.

Reference: Gen Li, Yuchen Jiao, "Improved convergence rate for diffusion probabilistic models" (ICLR 2025, arXiv
2410.13738), section 3.1, equations (11a)-(11b): a probability-flow ODE discretised by randomized midpoints over
blocks of N sub-intervals, each block ending with a forward (re-)noising step. Their theorem: TV of order
L^(3/2) d^(1/2) / T^(3/2) up to logs (iteration complexity L d^(1/3) eps^(-2/3)); theory.bounds `lijiao2024-rmp`.

What was checked, and what was not. The paper's full text could not be opened; the update was read from the text
of section 3.1 as extracted on the ICLR reproducibility page (acmrep2026.k117.org, "improved convergence rate for
diffusion probabilistic models"), whose formulas lost their layout. Read from it, and implemented as read:
- the noise variable tau = 1 - abar (the state is sqrt(1 - tau) X_0 + sqrt(tau) noise), the ODE written for
  Y / sqrt(1 - tau) with the score weighted by d tau / (2 (1 - tau)^(3/2));
- the inner recursion (11b): Y_(k,n) at time tau_(k,n) sums the block's first score over [tau^_(k,0), tau_(k,0)],
  the score at Y_(k,i) over the whole piece [tau^_(k,i), tau^_(k,i-1)] for i < n, and the latest score, at
  Y_(k,n-1), over the partial piece [tau_(k,n), tau^_(k,n-1)];
- the outer step (11a): the forward Ornstein-Uhlenbeck noising of Y_(k,N) from tau_(k,N) up to tau_(k+1,0), with
  a fresh Z_k ~ N(0, I).
NOT read (the "randomized schedule" paragraph is elided on that page), and chosen here: which times are random and
how. The choice below is the one that makes (11b) a randomized-midpoint rule (each piece's integral estimated
without bias by its integrand at a uniform time inside it) and keeps (11a) a noising step (tau_(k+1,0) above every
possible tau_(k,N)); it is a reconstruction, and the paper's schedule may differ (e.g. in the block length N as a
function of T, or in which times are random).

Notation (this module). tau = 1 - abar; the grid's levels tau^0 > tau^1 > ... > tau^M (M = T - 1 intervals);
c(tau) = 1 / (2 (1 - tau)^(3/2)); w = Y / sqrt(1 - tau) (the Lawson variable, in which the ODE reads
dw / d tau = -c(tau) s(Y, tau)). A block starts at grid index j with Y_k at tau_0 = tau^j; its fixed points are
b_n = tau^(j+n+1) (b_n is the paper's tau^_(k,n)), its random times t_n = b_n + u_n (b_(n-1) - b_n), u_n ~ U[0, 1]
(the paper's tau_(k,n), n = 1..N). With S_0 = c(tau_0) s(Y_k, tau_0) and S_i = c(t_i) s(Y_(k,i), t_i):

    w_n      = w_0 + S_0 (tau_0 - b_0) + sum_(i=1)^(n-1) S_i (b_(i-1) - b_i) + S_(n-1) (b_(n-1) - t_n)     (11b)
    Y_(k,n)  = sqrt(1 - t_n) w_n
    Y_(k+1)  = sqrt(1 - b_(N-1)) w_N + sqrt((b_(N-1) - t_N) / (1 - t_N)) Z_k                               (11a)

so a block advances N grid intervals (tau_(k+1,0) = b_(N-1) = tau^(j+N)), spends N evaluations (at Y_k and
Y_(k,1..N-1)), and overshoots into the next interval before re-noising back to its upper end. The last block, with
r <= N intervals left, ends on the grid's last level without noise:
Y_end = sqrt(1 - b_(r-1)) (w_0 + S_0 (tau_0 - b_0) + sum_(i=1)^(r-1) S_i (b_(i-1) - b_i)), r evaluations.
Total: T - 1 evaluations on a grid of T levels, one per interval.

Randomized-engine form: a block is one RandomStep with N uniforms (r - 1 in the last block); the noise of (11a) is
added last with a standard deviation that depends on u_N (RandomStep.std as a function of the draws), so each
quadrature node's transition is a blurred push-forward. Expected order in the step size, for fixed N: 1 (the
first piece of every block, [b_0, tau_0], is an Euler piece with an O(h^2) local error, one per block).
Measured (exact randomized 1-D engine, 4 Gauss-Legendre nodes per uniform; fits with 95% intervals from
theory.rates.fit_order):
- 1-D Gaussian target, uniform sigma grid in [0.5, 5], T = 33, 65, 129 (tests/test_orders.py, slow): order in the
  step size 0.97 [0.87, 1.07] (N = 2), 0.98 [0.76, 1.20] (N = 3). At T = 9, 17 the TV is 0.067, 0.069: not yet
  falling. At T = 33, 65, 129 the TV is 0.0789, 0.0385, 0.0190 (N = 1), 0.0384, 0.0198, 0.0100 (N = 2) and 0.0291,
  0.0151, 0.0075 (N = 3): halved from N = 1 to 2 (one Euler piece per block, half as many blocks), cut by a further
  quarter from 2 to 3.
- mix1d, li2023 grid, T = 32, 64, 128, 256: TV 0.148, 0.135, 0.0865, 0.0518 (N = 2), order in T over the last three
  0.69 [0.33, 1.05], not the theorem's 1.5 at these T. With fixed N the K = T / N Euler pieces cost about K h^2, so
  order 1 is the most a fixed N can reach; a T^(-3/2) rate is consistent with N growing like sqrt(T) (then
  K h^2 ~ T^(-3/2)), which this reading of the paper cannot confirm, and which the tensor-product quadrature
  (4^N nodes per block) cannot measure exactly for large N.
- Monotone maps: the Euler-in-tau piece multiplies the state's deviation by about 1 - (abar_t / abar_0 - 1) / 2 at
  early, nearly Gaussian times, so a block whose level abar grows more than about threefold folds the density. On
  the li2023 grid at T = 8 and 16 (1 - alpha up to 0.5 per interval, a block reaching into a third interval) the
  first block's map is not increasing and the 1-D engines refuse (studies.rates stops there); T >= 32 is measured.

d > 1: the random times are shared by all coordinates of a sample, so no exact engine applies (exact.choose_method
refuses randomized samplers there, with the reason).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from samplers.base import (
    CountingModel,
    RandomizedSampler,
    RandomStep,
    SamplerError,
    SamplerInfo,
    register,
)
from samplers.expint import ou_time
from samplers.randomized_midpoint import _score_at_times
from theory.schedules import Grid

DEFAULT_INNER = 2  # N, the number of inner (randomized) points per block


def _weight(tau: Tensor) -> Tensor:
    """c(tau) = 1 / (2 (1 - tau)^(3/2)), the weight of the score in dw / d tau (module docstring)."""
    return 0.5 / (1 - tau) ** 1.5


def _score_at_levels(model: CountingModel, y: Tensor, tau: Tensor) -> Tensor:
    """s(y_i, tau_i) at per-sample noise levels tau (scalar or shape (n, 1, ..., 1)): one evaluation."""
    return _score_at_times(model, y, ou_time(1 - tau))


def _inner_points(model: CountingModel, y: Tensor, tau0: Tensor, b: Tensor, u: tuple[Tensor, ...],
                  evaluate_last: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The recursion (11b) over m = len(u) random times: returns (w_m, t_m, base), where base is the block's sum
    w_0 + S_0 (tau_0 - b_0) + sum_(i=1)^(m') S_i (b_(i-1) - b_i) with m' = m if `evaluate_last`, else m - 1 (the
    regular block never evaluates at its last point, the final block evaluates at every one)."""
    score = _weight(tau0) * _score_at_levels(model, y, tau0)  # S_0
    base = y / torch.sqrt(1 - tau0) + score * (tau0 - b[0])
    w, t = base, tau0
    for n in range(1, len(u) + 1):
        t = b[n] + u[n - 1] * (b[n - 1] - b[n])
        w = base + score * (b[n - 1] - t)  # the latest score over the partial piece [t_n, b_(n-1)]
        if n < len(u) or evaluate_last:
            score = _weight(t) * _score_at_levels(model, torch.sqrt(1 - t) * w, t)  # S_n at Y_(k,n)
            base = base + score * (b[n - 1] - b[n])
    return w, t, base


class LiJiaoRMP(RandomizedSampler):
    """Li & Jiao (2024) randomized-midpoint ODE blocks with forward re-noising (module docstring), N inner points:
    w_n = w_0 + S_0 (tau_0 - b_0) + sum_(i<n) S_i (b_(i-1) - b_i) + S_(n-1) (b_(n-1) - t_n), t_n ~ U(b_n, b_(n-1));
    Y_(k+1) = sqrt(1 - b_(N-1)) w_N + sqrt((b_(N-1) - t_N) / (1 - t_N)) Z_k. One evaluation per grid interval."""

    def __init__(self, inner: int = DEFAULT_INNER):
        if isinstance(inner, bool) or int(inner) != inner or inner < 1:
            raise SamplerError(f"lijiao-rmp takes a positive number of inner points N, got {inner!r}")
        self.inner = int(inner)
        name = "lijiao-rmp" if self.inner == DEFAULT_INNER else f"lijiao-rmp:{self.inner}"
        self.info = SamplerInfo(
            name, stochastic=True, evals_per_step=1, order=1.0,
            reference="Li & Jiao 2024 (arXiv 2410.13738, ICLR 2025) eqs. 11a-11b, read from the section 3.1 text on "
                      "the ICLR reproducibility page; randomized schedule reconstructed (not read)",
            theorems=("lijiao2024-rmp",),
            notes=f"randomized: blocks of N = {self.inner} grid intervals, one uniform time per inner point and "
                  "sample, forward re-noising at the end of each block; the paper's schedule could not be read",
        )

    def random_steps(self, model: CountingModel, grid: Grid) -> Iterator[RandomStep]:
        tau = 1 - grid.abar
        M, N, j = grid.steps, self.inner, 0
        while j < M:
            tau0 = tau[j]
            if M - j > N:  # a regular block: N intervals, the (N+1)-th overshot into and re-noised back
                b = tau[j + 1 : j + N + 2]

                def step(y: Tensor, *u: Tensor, tau0=tau0, b=b) -> Tensor:
                    w, _, _ = _inner_points(model, y, tau0, b, u, evaluate_last=False)
                    return torch.sqrt(1 - b[N - 1]) * w

                def std(*u: Tensor, b=b) -> Tensor:
                    t = b[N] + u[N - 1] * (b[N - 1] - b[N])
                    return torch.sqrt((b[N - 1] - t) / (1 - t))

                yield RandomStep(step, std=std, uniforms=N)
                j += N
            else:  # the last block ends on the grid's last level, without noise
                b = tau[j + 1 : M + 1]
                r = M - j

                def last(y: Tensor, *u: Tensor, tau0=tau0, b=b, r=r) -> Tensor:
                    _, _, base = _inner_points(model, y, tau0, b, u, evaluate_last=True)
                    return torch.sqrt(1 - b[r - 1]) * base

                yield RandomStep(last, uniforms=r - 1)
                j = M


register("lijiao-rmp")(lambda: LiJiaoRMP(DEFAULT_INNER))


@register("lijiao-rmp:")
def _lijiao_family(arg: str) -> LiJiaoRMP:
    try:
        inner = int(arg)
    except ValueError:
        raise SamplerError(f"lijiao-rmp takes an integer number of inner points, e.g. lijiao-rmp:3; got {arg!r}") from None
    return LiJiaoRMP(inner)
