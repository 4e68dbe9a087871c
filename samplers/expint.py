"""Order-p exponential Runge-Kutta samplers of the probability-flow ODE, `expint:p` (p = 1, 2, 3, 4).

The scheme used: Lawson's integrating-factor exponential Runge-Kutta (Lawson 1967, SIAM J. Numer. Anal. 4:372) with
the classical explicit tableau of order p (Butcher, "Numerical Methods for Ordinary Differential Equations", 3rd
ed. 2016, section 23): p = 1 Euler, p = 2 the explicit midpoint rule, p = 3 Kutta's third-order rule, p = 4 the
classical fourth-order rule (TABLEAUX below).

The theorem it is held against: Huang, Huang, Lin, "Fast convergence for high-order ODE solvers in diffusion
probabilistic models" (2025, arXiv 2506.13061) bound the TV error of p-th order (exponential) Runge-Kutta schemes for
the probability-flow ODE by O(d^(7/4) eps_score^(1/2) + d (d H_max)^p), H_max the largest step; their earlier paper
(arXiv 2404.09730) proves O(d^(3/4) delta^(1/2) + d (d h)^p) for p-th order Runge-Kutta. Both statements are read from
the papers' abstracts only. Their own scheme (its tableaux, and whether it is of Lawson type) was not read: the
scheme here is a textbook one that their theorem plausibly covers, not their scheme.

Notation. Ornstein-Uhlenbeck time t = -log(abar) / 2 (so abar = e^(-2t), and the li2023 grid's step
1 - alpha is about 2 dt). In reverse time the probability-flow ODE of the VP process reads dY/dr = Y + s(Y, t - r);
its linear part is removed exactly by the integrating factor (Lawson's exponential Runge-Kutta, Lawson 1967,
SIAM J. Numer. Anal. 4:372): with the Lawson variable xt = x / sqrt(abar) = e^t x,

    d xt / dt = f(t, xt) = -e^t s(e^(-t) xt, t) = e^t eps(x, abar) / sqrt(1 - abar),

which is the EDM ODE d xt / d sigma = eps written in the time t. One step from grid level abar_n (time t_n) to
abar_(n+1) (time t_(n+1) < t_n), h = t_(n+1) - t_n < 0, with a Butcher tableau (c, A, b):

    k_i      = f( t_n + c_i h,  xt_n + h sum_(j<i) A_ij k_j ),    i = 1 .. s
    xt_(n+1) = xt_n + h sum_i b_i k_i

s = p model evaluations per step (p <= 4). The state handed in and out is the VP x at the grid's first and last
levels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from samplers.base import CountingModel, Sampler, SamplerError, SamplerInfo, register
from theory.schedules import Grid

# Classical explicit Runge-Kutta tableaux (c, A, b) of order p = number of stages (Butcher 2016, section 23):
# Euler; the explicit midpoint rule; Kutta's third-order rule; the classical fourth-order rule.
TABLEAUX: dict[int, tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    1: ((0.0,), ((),), (1.0,)),
    2: ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    3: ((0.0, 0.5, 1.0), ((), (0.5,), (-1.0, 2.0)), (1 / 6, 2 / 3, 1 / 6)),
    4: ((0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}


TABLEAU_NAMES = {1: "Euler", 2: "explicit midpoint", 3: "Kutta's third-order rule", 4: "classical fourth-order rule"}


def ou_time(abar: Tensor) -> Tensor:
    """Ornstein-Uhlenbeck time t = -log(abar) / 2."""
    return -0.5 * torch.log(abar)


class ExponentialRungeKutta(Sampler):
    """`expint:p`: Lawson exponential Runge-Kutta of order p in OU time (module docstring):
    k_i = f(t_n + c_i h, xt_n + h sum_j A_ij k_j), xt_(n+1) = xt_n + h sum_i b_i k_i, f = e^t eps / sqrt(1 - abar),
    xt = x / sqrt(abar); p evaluations per step."""

    def __init__(self, p: int):
        if p not in TABLEAUX:
            raise SamplerError(f"expint order must be one of {sorted(TABLEAUX)}, got {p!r}")
        self.p = p
        self.tableau = TABLEAUX[p]
        self.info = SamplerInfo(
            f"expint:{p}", stochastic=False, evals_per_step=p, order=float(p),
            reference=f"Lawson 1967 exponential Runge-Kutta with the classical order-{p} tableau (Butcher 2016); "
                      "held against Huang, Huang, Lin 2025 (arXiv 2506.13061), whose own scheme was not read",
            theorems=(f"huang2025-rk{p}",),
            notes=f"tableau: {TABLEAU_NAMES[p]}; not Huang, Huang & Lin's scheme (theirs was not read), a textbook "
                  "scheme of the same order that their theorem plausibly covers",
        )

    @staticmethod
    def _field(model: CountingModel, t: Tensor, xt: Tensor) -> Tensor:
        """f(t, xt) = e^t eps(e^(-t) xt, abar) / sqrt(1 - abar), abar = e^(-2t)."""
        abar = torch.exp(-2 * t)
        return torch.exp(t) * model.eps(xt * torch.exp(-t), abar) / torch.sqrt(-torch.expm1(-2 * t))

    def run(self, model: CountingModel, grid: Grid, x: Tensor, noise=None) -> Tensor:
        c, A, b = self.tableau
        times = ou_time(grid.abar.to(x.device))
        xt = x * torch.exp(times[0])
        for n in range(grid.steps):
            t, h = times[n], times[n + 1] - times[n]
            k: list[Tensor] = []
            for i in range(len(c)):
                stage = xt
                for j, a in enumerate(A[i]):
                    if a != 0.0:
                        stage = stage + h * a * k[j]
                k.append(self._field(model, t + c[i] * h, stage))
            xt = xt + h * sum(bi * ki for bi, ki in zip(b, k) if bi != 0.0)
        return xt * torch.exp(-times[-1])


@register("expint:")
def _expint_family(arg: str) -> ExponentialRungeKutta:
    try:
        p = int(arg)
    except ValueError:
        raise SamplerError(f"expint takes an integer order, e.g. expint:3; got {arg!r}") from None
    return ExponentialRungeKutta(p)
