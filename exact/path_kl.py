"""Path KL: the KL divergence between the forward process and a sampler's Markov chain, on the sampler's grid.

Ask for it with `measure(target, sampler, grid, method="path-kl")` (metric names "kl_path" and "kl_path_sampler").

The paths. A grid has levels a_0 < a_1 < ... < a_N (grid.abar, noisiest first); the sampler's states are
X_0 (at a_0 = abar_T), ..., X_N (at a_N, the output level: the grid's last level, not the data). Both laws live on
(X_0, ..., X_N), exactly the levels the sampler walks:

    Q (forward process):  X_N ~ q_(a_N),  X_i | X_(i+1) ~ N( sqrt(a_i / a_(i+1)) X_(i+1), (1 - a_i / a_(i+1)) I ),
                          the noised data at the grid's levels; its marginal at a_0 is q_T, and read in the
                          sampler's direction its transitions are the exact reverse conditionals q(x_(i+1) | x_i)
                          of theory.posterior (a mixture of Gaussians for a mixture target, formula (M) there);
    P (sampler's chain):  X_0 ~ p_init (q_T for init="exact", N(0, I) for init="gaussian"),
                          X_(i+1) | X_i ~ N( map_i(X_i), std_i^2 I )  (samplers.base.MarkovSampler.transitions).

By the chain rule for KL over the Markov factorisations,

    kl_path         = KL(Q || P) = KL(q_T || p_init) + sum_i E_Q[ log q(X_(i+1) | X_i) - log p(X_(i+1) | X_i) ],
    kl_path_sampler = KL(P || Q) = KL(p_init || q_T) + sum_i E_P[ log p(X_(i+1) | X_i) - log q(X_(i+1) | X_i) ],

and by data processing (marginalise onto X_N) each bounds the output divergence IN ITS OWN DIRECTION:

    kl_path         >= KL(q_(a_N) || p_out)   (the engines' "kl_reverse"; the direction Girsanov-type proofs bound)
    kl_path_sampler >= KL(p_out || q_(a_N))   (the engines' "kl", the project's headline KL).

kl_path does NOT bound the project's "kl" in general; the engine reports each path KL's gap to the exact output KL
of the matching direction wherever that is exact (1-D, Gaussian, product, subspace targets).

Estimation. Monte Carlo with exact densities on both sides: draw paths under Q (forward noising from exact draws of
q_(a_N)) for kl_path, under P (running the chain) for kl_path_sampler; log q(x_(i+1) | x_i) by Bayes from the
target's exact noised log-densities (theory.posterior, formula (B): works for mixtures, products and subspace
targets alike), log p from the transition's Gaussian density. With u_i the per-step log ratio (first law over
second), E[e^(-u_i) | X_i] = 1 (the second law's transition density integrates to one), so e^(-u) - 1 + u >= 0 has
the same mean as u and, being second order in u, a smaller variance when the laws are close; the engine reports
whichever of the two estimators has the smaller standard error (both are in the details), with that standard error.

For a Gaussian target the reverse conditionals are Gaussian, N(M x + c, V), the sampler's transitions affine,
N(A x + b, S), and every X_i Gaussian, so both path KLs are sums of expected Gaussian KLs in closed form:

    E_(x ~ N(m, C)) KL( N(F1 x + g1, S1) || N(F2 x + g2, S2) )
        = KL( N(D m + e, S1) || N(0, S2) ) + tr( S2^-1 D C D^T ) / 2,     D = F1 - F2, e = g1 - g2,

with x ~ q_(a_i) under Q and x ~ the sampler's own (propagated) Gaussian marginal under P (`path_kl_gaussian`;
the engine uses it for Gaussian targets up to d = CLOSED_FORM_MAX_D unless mc=True).

Refused (one line): samplers that are not Markov chains of Gaussian transitions, and Markov samplers whose chain
does not take one Gaussian transition per grid step. ddpm-accel is one of those: it takes two per step (half the
noise, a score step, the other half), so its kernel from one grid level to the next, int N(x'; map(x + a z), a^2 I)
N(z; 0, I) dz, is not Gaussian and has no closed-form density.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from exact.base import DivergenceError, Measurement, initial_draws, initial_law
from exact.density_1d import reverse_kl_1d
from exact.gaussian import gaussian_kl, gaussian_output_law
from exact.grid_1d_kernel import grid_1d_kernel
from exact.subspace import as_subspace, subspace_engine
from samplers.base import CountingModel, ExactModel, MarkovSampler, Sampler, Transition
from theory.posterior import forward_log_prob
from theory.schedules import Grid
from theory.subspace import SubspaceTarget
from theory.targets import DTYPE, GaussianMixture

CLOSED_FORM_MAX_D = 512  # Gaussian targets up to this d use the closed form (d x d matrices per step)
LOG_2PI = math.log(2 * math.pi)


def gaussian_transitions(sampler: Sampler, model, grid: Grid) -> list[Transition]:
    """The sampler's transitions, one Gaussian per grid step, or a one-line refusal."""
    name = sampler.info.name
    if not isinstance(sampler, MarkovSampler):
        raise DivergenceError(f"kl_path needs a sampler written as Gaussian transitions; {name!r} is "
                              f"{'stochastic but not a Markov chain of Gaussians' if sampler.info.stochastic else 'deterministic (its path law is singular)'}")
    steps = list(sampler.transitions(model, grid))
    if len(steps) != grid.steps:
        raise DivergenceError(f"kl_path needs one Gaussian transition per grid step; {name!r} takes {len(steps)} on "
                              f"{grid.steps} steps, so its kernel from one grid level to the next is not Gaussian")
    for i, step in enumerate(steps):
        if not float(step.std) > 0:
            raise DivergenceError(f"kl_path needs noise in every transition; {name!r} has std {float(step.std)!r} "
                                  f"at step {i}")
    return steps


# ---------------------------------------------------------------------------- Monte Carlo with exact densities
def _estimate(terms: list[Tensor]) -> dict:
    """Both estimators from the per-step log ratios u_i (first law over second), one tensor (n,) per term."""
    u = torch.stack(terms)  # (terms, n)
    n = u.shape[1]
    plain = u.sum(0)
    out = {"plain": float(plain.mean()), "plain_se": float(plain.std() / math.sqrt(n)),
           "per_term": u.mean(1).tolist()}
    second_order = (torch.expm1(-u) + u).sum(0)
    if torch.all(torch.isfinite(second_order)):
        out.update(second_order=float(second_order.mean()), second_order_se=float(second_order.std() / math.sqrt(n)))
    use = "second_order" if out.get("second_order_se", math.inf) < out["plain_se"] else "plain"
    out.update(estimator=use, value=out[use], se=out[f"{use}_se"])
    return out


def _gaussian_log_density(residual: Tensor, variance: float) -> Tensor:
    return -0.5 * ((residual * residual).sum(-1) / variance + residual.shape[-1] * (LOG_2PI + math.log(variance)))


def path_kl_forward_mc(target, sampler: Sampler, grid: Grid, init: str = "exact", samples: int = 4000,
                       seed: int = 0) -> dict:
    """kl_path = KL(Q || P) by Monte Carlo under the forward process."""
    model = CountingModel(ExactModel(target))
    steps = gaussian_transitions(sampler, model, grid)
    gen = torch.Generator(device=target.device).manual_seed(seed)
    abar = grid.abar.to(target.device)
    x = target.sample(samples, abar[-1], gen)  # X_N
    log_q_level = target.log_prob(x, abar[-1])
    terms = [None] * grid.steps
    for i in reversed(range(grid.steps)):
        alpha = abar[i] / abar[i + 1]
        noise = torch.randn(x.shape, dtype=DTYPE, device=x.device, generator=gen)
        x_t = torch.sqrt(alpha) * x + torch.sqrt(1 - alpha) * noise  # X_i, forward-noised from X_(i+1)
        log_q_t = target.log_prob(x_t, abar[i])
        step = steps[i]
        mean = step.map(x_t) if step.map is not None else x_t
        variance = float(step.std) ** 2
        # log q(X_(i+1) | X_i) - log p(X_(i+1) | X_i), with the forward density from the noise drawn
        log_forward = -0.5 * (noise * noise).sum(-1) - 0.5 * x.shape[1] * (LOG_2PI + torch.log(1 - alpha))
        terms[i] = log_q_level + log_forward - log_q_t - _gaussian_log_density(x - mean, variance)
        x, log_q_level = x_t, log_q_t
    if init == "gaussian":  # KL(q_T || N(0, I)), X_0 being a draw from q_T
        terms.insert(0, log_q_level + 0.5 * (x * x).sum(-1) + 0.5 * x.shape[1] * LOG_2PI)
    elif init != "exact":
        raise DivergenceError(f"unknown init {init!r}: use 'exact' (q_T) or 'gaussian' (N(0, I))")
    return _estimate(terms)


def path_kl_sampler_mc(target, sampler: Sampler, grid: Grid, init: str = "exact", samples: int = 4000,
                       seed: int = 0) -> dict:
    """kl_path_sampler = KL(P || Q) by Monte Carlo under the sampler's chain."""
    model = CountingModel(ExactModel(target))
    steps = gaussian_transitions(sampler, model, grid)
    gen = torch.Generator(device=target.device).manual_seed(seed)
    abar = grid.abar.to(target.device)
    x, log_p_init = initial_draws(target, grid, init, samples, gen)  # X_0
    log_q_level = target.log_prob(x, abar[0])
    terms = [] if init == "exact" else [log_p_init - log_q_level]  # KL(p_init || q_T)
    for i, step in enumerate(steps):
        mean = step.map(x) if step.map is not None else x
        std = float(step.std)
        noise = torch.randn(x.shape, dtype=DTYPE, device=x.device, generator=gen)
        x_new = mean + std * noise
        log_q_new = target.log_prob(x_new, abar[i + 1])
        log_p = -0.5 * (noise * noise).sum(-1) - 0.5 * x.shape[1] * (LOG_2PI + 2 * math.log(std))
        log_q = log_q_new + forward_log_prob(x, x_new, abar[i] / abar[i + 1]) - log_q_level
        terms.append(log_p - log_q)
        x, log_q_level = x_new, log_q_new
    return _estimate(terms)


# ---------------------------------------------------------------------------- the Gaussian closed form
def _affine(fn, d: int, device) -> tuple[Tensor, Tensor]:
    """A and b of an affine map x -> A x + b, from its images of 0 and the unit vectors."""
    points = torch.cat([torch.zeros(1, d, dtype=DTYPE, device=device), torch.eye(d, dtype=DTYPE, device=device)])
    images = fn(points)
    return (images[1:] - images[0]).T, images[0]


def expected_gaussian_kl(D: Tensor, e: Tensor, S1: Tensor, S2: Tensor, m: Tensor, C: Tensor) -> float:
    """E_(x ~ N(m, C)) KL(N(F1 x + g1, S1) || N(F2 x + g2, S2)) with D = F1 - F2, e = g1 - g2."""
    trace = float(torch.trace(torch.linalg.solve(S2, D @ C @ D.T)))
    return gaussian_kl(D @ m + e, S1, torch.zeros_like(m), S2) + 0.5 * trace


def path_kl_gaussian(target, sampler: Sampler, grid: Grid, init: str = "exact") -> tuple[float, float]:
    """(kl_path, kl_path_sampler) in closed form for a one-component target (see the module docstring)."""
    if not target.is_gaussian:
        raise DivergenceError(f"the closed-form path KL needs a one-component target, {target.name!r} has K={target.K}")
    d, device = target.d, target.device
    eye = torch.eye(d, dtype=DTYPE, device=device)
    mu, Sigma = target.means[0], target.covs[0]
    steps = gaussian_transitions(sampler, CountingModel(ExactModel(target)), grid)
    abar = grid.abar.to(device)
    p_init = initial_law(target, grid, init)
    m_p, C_p = p_init.means[0], p_init.covs[0]  # the sampler's marginal, propagated
    m_T, C_T = math.sqrt(abar[0]) * mu, abar[0] * Sigma + (1 - abar[0]) * eye
    forward = 0.0 if init == "exact" else gaussian_kl(m_T, C_T, m_p, C_p)
    backward = 0.0 if init == "exact" else gaussian_kl(m_p, C_p, m_T, C_T)
    for i, step in enumerate(steps):
        a_t, a_s = abar[i], abar[i + 1]
        alpha = a_t / a_s
        C_t, C_s = a_t * Sigma + (1 - a_t) * eye, a_s * Sigma + (1 - a_s) * eye
        m_t, m_s = torch.sqrt(a_t) * mu, torch.sqrt(a_s) * mu
        gain = torch.linalg.solve(C_t, C_s).T  # C_s C_t^-1 (C_t, C_s symmetric)
        M, V = torch.sqrt(alpha) * gain, (1 - alpha) * gain
        V = 0.5 * (V + V.T)
        c = m_s - M @ m_t
        A, b = _affine(step.map, d, device) if step.map is not None else (eye, torch.zeros(d, dtype=DTYPE))
        S = float(step.std) ** 2 * eye
        forward += expected_gaussian_kl(M - A, c - b, V, S, m_t, C_t)
        backward += expected_gaussian_kl(A - M, b - c, S, V, m_p, C_p)
        m_p, C_p = A @ m_p + b, A @ C_p @ A.T + S
    return forward, backward


# ---------------------------------------------------------------------------- the output KLs, for the gaps
def _one_d_kls(law: GaussianMixture, sampler: Sampler, grid: Grid, init: str) -> tuple[Measurement, Measurement]:
    return grid_1d_kernel(law, sampler, grid, init=init)["kl"], reverse_kl_1d(law, sampler, grid, init)


def exact_output_kls(target, sampler: Sampler, grid: Grid, init: str = "exact") -> dict[str, Measurement]:
    """The exact output divergences KL(p || q) ("kl") and KL(q || p) ("kl_reverse") of a Markov sampler, where an
    exact method gives them (1-D, Gaussian, product, subspace targets); an empty dict elsewhere."""
    sub = target if isinstance(target, SubspaceTarget) else None
    if sub is None and isinstance(target, GaussianMixture) and target.d > 1 and not target.is_gaussian:
        sub = as_subspace(target)
    if sub is not None:
        out = subspace_engine(sub, sampler, grid, init=init, tv=False)
        return {k: out[k] for k in ("kl", "kl_reverse") if k in out}
    if isinstance(target, GaussianMixture) and target.d == 1:
        kl, rev = _one_d_kls(target, sampler, grid, init)
        return {"kl": kl, "kl_reverse": rev}
    if target.is_gaussian and target.d <= CLOSED_FORM_MAX_D:
        p_init = initial_law(target, grid, init)
        level = grid.abar[-1]
        mq, Sq = target.mean(level), target.covariance(level)
        out = {}
        laws = [gaussian_output_law(target, sampler, grid, p_init.means[0], p_init.covs[0], scale=s) for s in (1, 0.5)]
        for metric, fn in (("kl", lambda m, S: gaussian_kl(m, S, mq, Sq)), ("kl_reverse", lambda m, S: gaussian_kl(mq, Sq, m, S))):
            value, half = fn(*laws[0]), fn(*laws[1])
            out[metric] = Measurement(metric, value, abs(value - half) + 1e-13 * (1 + abs(value)), "gaussian")
        return out
    if getattr(target, "factorises", False):
        kl = kl_err = rev = rev_err = 0.0
        for law, idx in target.factor_groups():
            one, back = _one_d_kls(law, sampler, grid, init)
            kl, kl_err = kl + idx.numel() * one.value, kl_err + idx.numel() * one.numerical_error
            rev, rev_err = rev + idx.numel() * back.value, rev_err + idx.numel() * back.numerical_error
        return {"kl": Measurement("kl", kl, kl_err, "product"),
                "kl_reverse": Measurement("kl_reverse", rev, rev_err, "product")}
    return {}


# ---------------------------------------------------------------------------- the engine
def path_kl_engine(target, sampler: Sampler, grid: Grid, init: str = "exact", samples: int = 4000, seed: int = 0,
                   mc: bool = False, compare: bool = True) -> dict[str, Measurement]:
    """{"kl_path": KL(Q || P), "kl_path_sampler": KL(P || Q)}, each with the gap to the exact output KL of its
    direction in the details (compare=True) where one exists. Gaussian targets (d <= CLOSED_FORM_MAX_D) get the
    closed form unless mc=True; everything else Monte Carlo with `samples` paths."""
    if init not in ("exact", "gaussian"):
        raise DivergenceError(f"unknown init {init!r}: use 'exact' (q_T) or 'gaussian' (N(0, I))")
    if isinstance(samples, bool) or int(samples) != samples or samples < 2:
        raise DivergenceError(f"path KL needs at least 2 samples, got {samples!r}")
    gaussian_transitions(sampler, CountingModel(ExactModel(target)), grid)  # refuse before any work
    closed = target.is_gaussian and target.d <= CLOSED_FORM_MAX_D and not mc
    results = {}
    if closed:
        forward, backward = path_kl_gaussian(target, sampler, grid, init)
        for metric, value in (("kl_path", forward), ("kl_path_sampler", backward)):
            results[metric] = Measurement(metric, value, 1e-12 * (1 + abs(value)) * grid.T, "path-kl-gaussian",
                                          {"init": init})
    else:
        for metric, fn in (("kl_path", path_kl_forward_mc), ("kl_path_sampler", path_kl_sampler_mc)):
            est = fn(target, sampler, grid, init, int(samples), seed)
            rounding = 64 * torch.finfo(DTYPE).eps * grid.T * target.d * (1 + abs(est["value"]))
            details = {k: est[k] for k in ("estimator", "plain", "plain_se", "second_order", "second_order_se",
                                           "per_term") if k in est}
            results[metric] = Measurement(metric, est["value"], est["se"] + rounding, "path-kl-mc",
                                          dict(details, samples=int(samples), seed=seed, init=init,
                                               standard_error=est["se"]))
    results["kl_path"].details.update(direction="KL(Q_path || P_path)", bounds="kl_reverse")
    results["kl_path_sampler"].details.update(direction="KL(P_path || Q_path)", bounds="kl")
    if compare:
        output = exact_output_kls(target, sampler, grid, init)
        for metric, bound in (("kl_path", "kl_reverse"), ("kl_path_sampler", "kl")):
            if bound in output:
                m = output[bound]
                results[metric].details.update(output_kl=m.value, output_kl_error=m.numerical_error,
                                               output_kl_method=m.method, gap=results[metric].value - m.value)
    return results
