"""The practical ODE solvers of the AMED paper's code base (shared/spec/samplers.md section 3).

All of them work in EDM coordinates: the time variable is sigma = sqrt((1 - abar) / abar), the state is
xt = x / sqrt(abar), and the probability-flow ODE reads

    d xt / d sigma = eps(xt; sigma),    eps(xt; sigma) = eps_VP(xt / sqrt(1 + sigma^2), abar = 1 / (1 + sigma^2)),

with the denoiser (data prediction) D = xt - sigma eps and lambda = -log sigma. The grid's levels give the time
points t_0 = sigma_max > ... > t_{N-1} = sigma_min; the state handed in and out is the VP x at grid.abar[0] and
grid.abar[-1] (converted at the boundary). Step n goes t_n -> t_{n+1}, h = lambda_{n+1} - lambda_n.

| name           | update                                                                                  | order |
|----------------|-----------------------------------------------------------------------------------------|-------|
| euler (=DDIM)  | x_{n+1} = x_n + (t_{n+1} - t_n) eps_n                                                    | 1 |
| heun           | x' = x_n + dt eps_n;  x_{n+1} = x_n + dt (eps_n + eps(x', t_{n+1})) / 2                  | 2 |
| dpm-solver-2   | s = t_{n+1}^r t_n^(1-r), u = x_n + (s - t_n) eps_n,                                      | 2 |
|                | x_{n+1} = x_n + dt [ eps(u, s) / (2r) + (1 - 1/(2r)) eps_n ]   (r = 1/2)                 |   |
| dpmpp-2m / 3m  | DPM-Solver++ multistep in data prediction (Lu et al. 2022, arXiv 2211.01095)             | 2, 3 |
| unipc          | UniP-p predictor + UniC corrector, bh2 (Zhao et al. 2023, arXiv 2302.04867), p = 3       | see info |
| deis           | tAB-p: x_{n+1} = x_n + sum_j C_{n,j} eps_{n-j}, Lagrange basis in VP time (arXiv 2204.13902) | 3 |
| ipndm          | fixed-step Adams-Bashforth on the sigma grid, warm start by lower orders (arXiv 2204.13902) | 4 nominal |

AFS (analytical first step, Dockhorn et al. 2022 / AMED code base): the first model output at t_0 is replaced by
eps = x_0 / sqrt(1 + t_0^2), saving one evaluation. Ask for it with the prefix `afs:` (e.g.
`get_sampler("afs:dpm-solver-2")`, also `afs:amed-plugin:ipndm`) or the constructor flag `afs=True`.

NFE is always counted by the CountingModel the sampler is handed; a solver never counts for itself.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from samplers.base import REGISTRY, CountingModel, Sampler, SamplerError, SamplerInfo, get_sampler, register
from theory import solver_grids
from theory.schedules import Grid

CODE_BASE = "Zhou et al. 2024 AMED code base (diff-sampler)"


# ---------------------------------------------------------------------------- the EDM view of a model
class EDMView:
    """A counting model seen in EDM coordinates: eps(xt; sigma), D(xt; sigma) and the model's features.

    With `afs`, the first request (it is always at t_0 on x_0) is answered analytically, eps = xt / sqrt(1 + t_0^2),
    without calling the model."""

    def __init__(self, model: CountingModel, afs: bool = False):
        self.model = model
        self.afs_pending = afs
        self.last_features = None

    @staticmethod
    def level(sigma) -> Tensor:
        return 1.0 / (1.0 + torch.as_tensor(sigma) ** 2)

    def eps(self, xt: Tensor, sigma) -> Tensor:
        return self.eps_and_features(xt, sigma)[0]

    def eps_and_features(self, xt: Tensor, sigma) -> tuple[Tensor, Tensor | None]:
        sigma = torch.as_tensor(sigma, dtype=xt.dtype, device=xt.device)
        if self.afs_pending:
            self.afs_pending = False
            self.last_features = None
            return xt / torch.sqrt(1 + sigma**2), None
        abar = 1.0 / (1.0 + sigma**2)
        eps, features = self.model.eps_and_features(xt * torch.sqrt(abar), abar)
        self.last_features = features
        return eps, features

    def denoiser(self, xt: Tensor, sigma) -> Tensor:
        """D(xt; sigma) = xt - sigma eps."""
        sigma = torch.as_tensor(sigma, dtype=xt.dtype, device=xt.device)
        return xt - sigma * self.eps(xt, sigma)


class EDMSolver(Sampler):
    """Base class: converts the VP state to EDM coordinates, runs `solve`, converts back."""

    needs_positive_sigma = False  # solvers working in lambda cannot end at sigma = 0

    def __init__(self, afs: bool = False):
        self.afs = afs
        if afs:
            self.info = replace(self.info, name="afs:" + self.info.name,
                                notes=(self.info.notes + " AFS: first model output analytic.").strip())

    def run(self, model: CountingModel, grid: Grid, x: Tensor, noise=None) -> Tensor:
        sigma = grid.sigma.to(x.device)
        if self.needs_positive_sigma and float(sigma[-1]) <= 0:
            raise SamplerError(f"{self.info.name} works in lambda = -log sigma and cannot end at sigma = 0 "
                               f"(grid {grid.name} ends at abar = 1)")
        view = EDMView(model, afs=self.afs)
        xt = x / torch.sqrt(grid.abar[0].to(x.device))
        xt = self.solve(view, sigma, xt)
        return xt * torch.sqrt(grid.abar[-1].to(x.device))

    def solve(self, view: EDMView, t: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError  # abstract: each solver implements its loop


# ---------------------------------------------------------------------------- one-step solvers
@register("euler")
class Euler(EDMSolver):
    """Euler in sigma (Karras et al. 2022), the same map as DDIM: x_{n+1} = x_n + (t_{n+1} - t_n) eps_n."""

    info = SamplerInfo("euler", stochastic=False, evals_per_step=1, order=1.0,
                       reference="Song et al. 2021 (DDIM); Karras et al. 2022 (arXiv 2206.00364); " + CODE_BASE)

    def solve(self, view, t, x):
        for n in range(t.numel() - 1):
            x = x + (t[n + 1] - t[n]) * view.eps(x, t[n])  # Euler step
        return x


@register("heun")
class Heun(EDMSolver):
    """EDM's Heun (Karras et al. 2022, Algorithm 1 without churn), second order, 2 evaluations every step:
    x' = x_n + dt eps_n;  x_{n+1} = x_n + dt (eps_n + eps(x', t_{n+1})) / 2  (plain Euler if t_{n+1} = 0)."""

    info = SamplerInfo("heun", stochastic=False, evals_per_step=2, order=2.0,
                       reference="Karras et al. 2022 (arXiv 2206.00364), Algorithm 1; " + CODE_BASE)

    def solve(self, view, t, x):
        for n in range(t.numel() - 1):
            dt = t[n + 1] - t[n]
            d_cur = view.eps(x, t[n])
            x_prime = x + dt * d_cur  # Euler predictor
            if float(t[n + 1]) > 0:
                x = x + dt * 0.5 * (d_cur + view.eps(x_prime, t[n + 1]))  # trapezoidal corrector
            else:
                x = x_prime
        return x


@register("dpm-solver-2")
class DPMSolver2(EDMSolver):
    """DPM-Solver-2 (Lu et al. 2022, arXiv 2206.00927) in EDM form, intermediate time at ratio r (1/2):
    s = t_{n+1}^r t_n^(1-r); u = x_n + (s - t_n) eps_n; x_{n+1} = x_n + dt [eps(u, s)/(2r) + (1 - 1/(2r)) eps_n]."""

    info = SamplerInfo("dpm-solver-2", stochastic=False, evals_per_step=2, order=2.0,
                       reference="Lu et al. 2022 (arXiv 2206.00927); " + CODE_BASE)
    r = 0.5

    def solve(self, view, t, x):
        r = self.r
        for n in range(t.numel() - 1):
            dt = t[n + 1] - t[n]
            d_cur = view.eps(x, t[n])
            if float(t[n + 1]) <= 0:
                x = x + dt * d_cur
                continue
            s = t[n + 1] ** r * t[n] ** (1 - r)  # geometric intermediate time
            u = x + (s - t[n]) * d_cur
            x = x + dt * (view.eps(u, s) / (2 * r) + (1 - 1 / (2 * r)) * d_cur)
        return x


# ---------------------------------------------------------------------------- multistep solvers
def dpmpp_update(x: Tensor, t_cur: Tensor, t_next: Tensor, ms: list[Tensor], lams: list[Tensor], order: int,
                 d2_factor: float = 1.0) -> Tensor:
    """One DPM-Solver++ multistep update of the given order from t_cur (lambda = lams[-1], data prediction ms[-1])
    to t_next, with phi1 = e^{-h} - 1, phi2 = phi1/h + 1, phi3 = phi2/h - 1/2:
      order 1: x = (t_next/t_cur) x - phi1 m_n
      order 2: ... - phi1 D1_0 / 2,                    D1_0 = (m_n - m_{n-1}) / r0
      order 3: ... + phi2 D1 - phi3 D2,                D1 = D1_0 + r0/(r0+r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0+r1)
    with h = lambda_{n+1} - lambda_n, r0 = h0/h, r1 = h1/h (h0, h1 the previous two lambda steps).

    Finding (tests/test_orders.py): with m(lambda) = m_n + m' u + m'' u^2 / 2, D1 = h m' + O(h^3) but
    D2 = h^2 m'' / 2 + O(h^3), while the exact integral needs -phi3 h^2 m''. The reference coefficient (kept as the
    default, d2_factor = 1, so outputs match the reference code and diffusers) thus leaves an h^3 local error and
    the scheme is second order; d2_factor = 2 is the Taylor-consistent third-order scheme."""
    h = -torch.log(t_next) - lams[-1]
    phi1 = torch.expm1(-h)
    x_new = (t_next / t_cur) * x - phi1 * ms[-1]
    if order == 1:
        return x_new
    r0 = (lams[-1] - lams[-2]) / h
    D1_0 = (ms[-1] - ms[-2]) / r0
    if order == 2:
        return x_new - 0.5 * phi1 * D1_0
    r1 = (lams[-2] - lams[-3]) / h
    D1_1 = (ms[-2] - ms[-3]) / r1
    D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)
    D2 = (D1_0 - D1_1) / (r0 + r1)
    phi2 = phi1 / h + 1
    phi3 = phi2 / h - 0.5
    return x_new + phi2 * D1 - d2_factor * phi3 * D2


class DPMSolverPP(EDMSolver):
    """DPM-Solver++(kM) (Lu et al. 2022, arXiv 2211.01095), data prediction m = D(x; t), thresholding off.
    Warm start: step n uses order min(k, n + 1). `lower_order_final` (off by default, so the declared order holds)
    lowers the last steps to orders 1, 2 as the reference code does for short runs."""

    needs_positive_sigma = True
    max_order = 2

    def __init__(self, afs: bool = False, lower_order_final: bool = False, d2_factor: float = 1.0):
        super().__init__(afs)
        self.lower_order_final = lower_order_final
        self.d2_factor = d2_factor

    def solve(self, view, t, x):
        steps = t.numel() - 1
        ms, lams = [], []
        for n in range(steps):
            ms.append(view.denoiser(x, t[n]))
            lams.append(-torch.log(t[n]))
            order = min(self.max_order, n + 1)
            if self.lower_order_final:
                order = min(order, steps - n)
            x = dpmpp_update(x, t[n], t[n + 1], ms, lams, order, self.d2_factor)
            ms, lams = ms[-3:], lams[-3:]
        return x


@register("dpmpp-2m")
class DPMSolverPP2M(DPMSolverPP):
    __doc__ = DPMSolverPP.__doc__
    info = SamplerInfo("dpmpp-2m", stochastic=False, evals_per_step=1, order=2.0, multistep=True,
                       reference="Lu et al. 2022 (arXiv 2211.01095), DPM-Solver++(2M); " + CODE_BASE)
    max_order = 2


@register("dpmpp-3m")
class DPMSolverPP3M(DPMSolverPP):
    __doc__ = DPMSolverPP.__doc__
    info = SamplerInfo("dpmpp-3m", stochastic=False, evals_per_step=1, order=3.0, multistep=True,
                       reference="Lu et al. 2022 (arXiv 2211.01095), DPM-Solver++(3M); " + CODE_BASE,
                       notes="nominal order 3; the reference D2 term is half its Taylor value, so the measured "
                             "order is 2 (d2_factor=2 restores order 3; tests/test_orders.py)")
    max_order = 3


def _unipc_coefficients(rks: Tensor, hh: Tensor, order: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """R (order x order, rows rks^(i-1)), b_i = h phi_{i+1}(hh) i! / B(h), B(h) = e^{hh} - 1 (variant bh2),
    and phi_1 = e^{hh} - 1; hh = -h for data prediction."""
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    B_h = torch.expm1(hh)
    factorial = 1
    R, b = [], []
    for i in range(1, order + 1):
        R.append(rks ** (i - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(R), torch.stack(b), h_phi_1, B_h


def _unipc_differences(t_to, ms, lams, order):
    """What UniP and UniC share for a step from lams[-1] to sigma t_to: h, the scaled differences
    D1_k = (m_{n-k} - m_n) / r_k with r_k = (lambda_{n-k} - lambda_n) / h, and the bh2 coefficients."""
    h = -torch.log(t_to) - lams[-1]
    rks, D1s = [], []
    for i in range(1, order):
        rk = (lams[-(i + 1)] - lams[-1]) / h
        rks.append(rk)
        D1s.append((ms[-(i + 1)] - ms[-1]) / rk)
    rks.append(torch.ones_like(h))
    R, b, h_phi_1, B_h = _unipc_coefficients(torch.stack(rks), -h, order)
    return D1s, R, b, h_phi_1, B_h


def unipc_predict(x, t_cur, t_next, ms, lams, order):
    """UniP-p (bh2): x_{n+1} = (t_{n+1}/t_n) x_n - phi1 m_n - B(h) sum_k rho_k D1_k, D1_k = (m_{n-k} - m_n)/r_k,
    r_k = (lambda_{n-k} - lambda_n)/h; rho = 1/2 for p = 2, else R[:-1,:-1] rho = b[:-1]."""
    D1s, R, b, h_phi_1, B_h = _unipc_differences(t_next, ms, lams, order)
    x_new = (t_next / t_cur) * x - h_phi_1 * ms[-1]
    if not D1s:
        return x_new
    rhos = torch.tensor([0.5], dtype=x.dtype, device=x.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
    return x_new - B_h * sum(rho * D1 for rho, D1 in zip(rhos, D1s))


def unipc_correct(x_prev, t_prev, t_cur, m_cur, ms, lams, order):
    """UniC-p (bh2): corrects the predicted state at t_cur with the model output m_cur evaluated there,
    x_c = (t_cur/t_prev) x_prev - phi1 m_prev - B(h) ( sum_k rho_k D1_k + rho_p (m_cur - m_prev) ),
    rho solving R rho = b (rho = 1/2 for p = 1). ms, lams end at the previous point."""
    D1s, R, b, h_phi_1, B_h = _unipc_differences(t_cur, ms, lams, order)
    rhos = torch.tensor([0.5], dtype=x_prev.dtype, device=x_prev.device) if order == 1 else torch.linalg.solve(R, b)
    x_new = (t_cur / t_prev) * x_prev - h_phi_1 * ms[-1]
    corr = sum((rho * D1 for rho, D1 in zip(rhos[:-1], D1s)), torch.zeros_like(x_prev))
    return x_new - B_h * (corr + rhos[-1] * (m_cur - ms[-1]))


@register("unipc")
class UniPC(EDMSolver):
    """UniPC (Zhao et al. 2023, arXiv 2302.04867), data prediction, variant bh2, predictor order p = 3 with warm
    start min(p, n + 1). At each new point the model output m_{n+1} (taken at the predicted state) first drives the
    UniC corrector of that state, then is stored and reused by the next predictor step, so the corrector costs no
    evaluation; the last step has no corrector. `lower_order_final` as for DPM-Solver++ (off by default)."""

    info = SamplerInfo("unipc", stochastic=False, evals_per_step=1, order=4.0, multistep=True,
                       reference="Zhao et al. 2023 (arXiv 2302.04867), UniPC-3 bh2; " + CODE_BASE,
                       notes="UniP-3 with UniC: order p + 1 = 4 (Zhao et al., Theorem 3.1).")
    needs_positive_sigma = True
    max_order = 3

    def __init__(self, afs: bool = False, lower_order_final: bool = False):
        super().__init__(afs)
        self.lower_order_final = lower_order_final

    def solve(self, view, t, x):
        steps = t.numel() - 1
        ms, lams = [], []
        x_prev, order_prev = None, None
        for n in range(steps):
            m = view.denoiser(x, t[n])
            if x_prev is not None:
                x = unipc_correct(x_prev, t[n - 1], t[n], m, ms, lams, order_prev)  # UniC, free
            ms.append(m)
            lams.append(-torch.log(t[n]))
            order = min(self.max_order, n + 1)
            if self.lower_order_final:
                order = min(order, steps - n)
            x_prev, order_prev = x, order
            x = unipc_predict(x, t[n], t[n + 1], ms, lams, order)  # UniP
            ms, lams = ms[-3:], lams[-3:]
        return x


_GAUSS_NODES, _GAUSS_WEIGHTS = (torch.tensor(a, dtype=torch.float64) for a in
                                __import__("numpy").polynomial.legendre.leggauss(48))


def deis_coefficients(t: Tensor, max_order: int = 3) -> list[Tensor]:
    """tAB coefficients C_{n,j} = int_{tau_n}^{tau_{n+1}} (d sigma / d tau) l_{n,j}(tau) d tau, j = 0..p-1,
    with l_{n,j} the Lagrange basis on tau_n, tau_{n-1}, ..., tau_{n-p+1}, p = min(max_order, n + 1), and tau the
    VP time of the schedule fitted to (sigma_min, sigma_max) = (0.002, 80) (theory.solver_grids). Gauss-Legendre
    quadrature (48 nodes) on each interval."""
    beta_d, beta_min = solver_grids.vp_constants()
    tau = solver_grids.vp_tau(t.cpu(), beta_d, beta_min)

    def dsigma_dtau(s: Tensor) -> Tensor:
        arg = 0.5 * beta_d * s**2 + beta_min * s
        return (beta_d * s + beta_min) * torch.exp(arg) / (2 * torch.sqrt(torch.expm1(arg)))

    coeffs = []
    for n in range(t.numel() - 1):
        a, b = tau[n], tau[n + 1]
        s = 0.5 * (b - a) * _GAUSS_NODES + 0.5 * (a + b)
        w = 0.5 * (b - a) * _GAUSS_WEIGHTS * dsigma_dtau(s)
        p = min(max_order, n + 1)
        nodes = [tau[n - j] for j in range(p)]
        row = []
        for j in range(p):
            basis = torch.ones_like(s)
            for k in range(p):
                if k != j:
                    basis = basis * (s - nodes[k]) / (nodes[j] - nodes[k])
            row.append((w * basis).sum())
        coeffs.append(torch.stack(row))
    return coeffs


@register("deis")
class DEIS(EDMSolver):
    """DEIS tAB-3 (Zhang & Chen 2023, arXiv 2204.13902): x_{n+1} = x_n + sum_j C_{n,j} eps_{n-j}, the exact integral
    of d sigma/d tau times the Lagrange extrapolation of eps in VP time tau; warm start by lower orders."""

    info = SamplerInfo("deis", stochastic=False, evals_per_step=1, order=3.0, multistep=True,
                       reference="Zhang & Chen 2023 (arXiv 2204.13902), tAB3; " + CODE_BASE)
    max_order = 3

    def solve(self, view, t, x):
        coeffs = [c.to(x.device) for c in deis_coefficients(t, self.max_order)]
        history: list[Tensor] = []
        for n in range(t.numel() - 1):
            history.insert(0, view.eps(x, t[n]))
            history = history[: self.max_order]
            x = x + sum(c * e for c, e in zip(coeffs[n], history))
        return x


AB_WEIGHTS = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@register("ipndm")
class IPNDM(EDMSolver):
    """iPNDM (Zhang & Chen 2023, arXiv 2204.13902; AMED code base): Adams-Bashforth weights for equal steps applied
    on the (unequal) sigma grid, order min(4, n + 1): x_{n+1} = x_n + (t_{n+1} - t_n) sum_j w_{p,j} eps_{n-j}.
    The weights ignore the varying step sizes, so on a smooth non-uniform grid the local error keeps a term of size
    h^3 (the steps' ratio differs from one by O(h)): the nominal order 4 is reached on uniform sigma grids only."""

    info = SamplerInfo("ipndm", stochastic=False, evals_per_step=1, order=4.0, multistep=True,
                       reference="Zhang & Chen 2023 (arXiv 2204.13902), iPNDM; " + CODE_BASE,
                       notes="nominal order 4 on uniform steps; fixed weights on non-uniform grids")
    max_order = 4

    def solve(self, view, t, x):
        history: list[Tensor] = []
        for n in range(t.numel() - 1):
            history.insert(0, view.eps(x, t[n]))
            history = history[: self.max_order]
            weights = AB_WEIGHTS[len(history)]
            x = x + (t[n + 1] - t[n]) * sum(w * e for w, e in zip(weights, history))
        return x


# ---------------------------------------------------------------------------- AFS
@register("afs:")
def afs_family(base: str) -> Sampler:
    """`afs:<name>`: the solver `name` with its first model output replaced analytically (one NFE fewer)."""
    sampler = get_sampler(base)
    if not isinstance(sampler, EDMSolver):
        raise SamplerError(f"AFS applies to the EDM-coordinate solvers, not to {base!r}")
    sampler.afs = True
    sampler.info = replace(sampler.info, name="afs:" + sampler.info.name,
                           notes=(sampler.info.notes + " AFS: first model output analytic.").strip())
    return sampler


SOLVERS = ("euler", "heun", "dpm-solver-2", "dpmpp-2m", "dpmpp-3m", "unipc", "deis", "ipndm")
assert all(name in REGISTRY for name in SOLVERS)
