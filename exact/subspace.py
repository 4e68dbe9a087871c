"""Subspace targets (theory.subspace): the exact error of every sampler, stochastic ones included, in any d.

The target is x = B y + w: y ~ core in R^k, w ~ N(s, sigma^2 P) on the complement of range(B). Write Q = [B, u, R]
for an orthogonal matrix whose first k columns are B, whose next column is u = s / |s| (when s != 0) and whose
other columns R span the rest of the complement; in the frame x' = Q^T x the target is the product

    q_0' = core(y) * N(|s|, sigma^2)(x'_(k+1)) * prod_{j > k+1} N(0, sigma^2)(x'_j),

and so is every level q_abar' (the forward noise is isotropic).

Why the sampler's output factorises the same way. (1) Rotation: every sampler here updates its state by linear
combinations, with coefficients that depend on the levels only (or on rotation-invariant features such as the
posterior component weights), of the state, the model's eps and injected N(0, I) noise. The exact eps of the
rotated target is eps'(Q^T x) rotated back, and Q^T Z ~ N(0, I) again, so the run on the rotated target is the run
on the frame target, rotated: the output law is p = Q_# p'. TV and KL are invariant under the bijection Q, so the
error on the rotated target equals the error on the frame target. (2) Factorisation in the frame: the frame
target's eps is coordinate-block-wise (core eps on y, a 1-D Gaussian eps on each complement coordinate) and the
injected noise is independent across coordinates, so for deterministic samplers the output map is a product of
maps, and for Markov samplers every Gaussian transition N(map(x), std^2 I) factorises over the blocks; started from
a product initial law (q_T itself, or N(0, I)) the output is the product p' = p_core * prod_j p_j. Both premises
are checked on the given sampler by `check_equivariance` (a full d-dimensional run against the block runs with
the same inputs and noises); a sampler that mixes coordinates, or whose step parameters depend on the state beyond
the core, is refused.

Then, exactly:

    KL(p || q) = KL(p_core || q_core) + sum_j KL(p_j || q_j)                     (chain rule: both factorise)
               = KL_core + n_s KL(N-part along u) + (d - k - n_s) KL(one centred complement coordinate)

(n_s = 1 if s != 0, else 0), since all centred complement coordinates carry the same 1-D law and the same map.
Each 1-D Gaussian KL comes from the Gaussian engine (method 3, closed form, its numerical error a rounding bound);
KL_core from, in this order:
  - the Gaussian engine (method 3) when the core is one Gaussian (any k, any sampler);
  - the 1-D engines (methods 1, 2) when k = 1, summed over the core's factors when the core is a product;
  - flow Monte Carlo (method 4) in k dimensions for deterministic samplers (standard error);
  - otherwise (stochastic sampler, k > 1, core neither product nor Gaussian): refused.
The same decomposition gives KL(q || p) ("kl_reverse") when both parts have it: Gaussian cores (closed form) and
1-D or product cores of Markov samplers (exact.density_1d.reverse_kl_1d).

TV does not split, so it is a Monte Carlo average with exact densities, TV = E_p[(1 - e^r)_+],
r = log q - log p = r_core + r_gauss for draws from p:
  - core: Gaussian cores draw from the (exactly Gaussian) output law with its density; deterministic samplers push
    initial draws through the flow with log p = log p_init - log|det dF| (exact.flow_mc.flow_and_logdet, k tangent
    directions); Markov samplers with 1-D (or product) cores draw by running the sampler (exact draws) and evaluate
    log p from the tabulated output density (exact.density_1d; its numerical error is estimated by re-evaluating
    on a tabulation at half the resolution, same draws);
  - Gaussian part: each of the n_c i.i.d. centred coordinates z_j = m + s_out g_j contributes a log ratio of two
    1-D normals, and the sum depends on g only through S1 = sum g_j = sqrt(n_c) U and S2 = sum g_j^2 = U^2 + X with
    U ~ N(0, 1), X ~ chi^2(n_c - 1) independent, so it is drawn exactly in O(1) per draw whatever d is.
The reported TV error is the standard error plus that tabulation difference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from exact.base import DivergenceError, Measurement, initial_draws
from exact.density_1d import reverse_kl_from, tabulate_pair
from exact.flow_mc import flow_and_logdet, flow_mc
from exact.gaussian import gaussian_engine
from exact.grid_1d_flow import grid_1d_flow
from exact.grid_1d_kernel import grid_1d_kernel
from samplers.base import (
    CountingModel,
    ExactModel,
    MarkovSampler,
    Noise,
    RecordingNoise,
    Sampler,
    SamplerError,
    ScriptedNoise,
)
from theory.product import ProductTarget
from theory.schedules import Grid
from theory.subspace import SubspaceTarget, find_subspace
from theory.targets import DTYPE, GaussianMixture, TargetError

CHUNK_ELEMENTS = 1 << 20  # draws x k x k in one forward-mode pass of the core flow


def as_subspace(target) -> SubspaceTarget | None:
    """The target itself if it is a SubspaceTarget, the recognised structure of a plain mixture, else None."""
    if isinstance(target, SubspaceTarget):
        return target
    if isinstance(target, GaussianMixture) and target.d > 1:
        return find_subspace(target)
    return None


def _one_d_factors(core) -> list[tuple[GaussianMixture, int]] | None:
    """The core as 1-D factors [(law, copies)] when it has them (k = 1, or a product), else None."""
    if isinstance(core, ProductTarget):
        return [(rep, idx.numel()) for rep, idx in core.factor_groups()]
    if core.d == 1:
        return [(core, 1)]
    return None


def unsupported(target: SubspaceTarget, sampler: Sampler) -> str | None:
    """Why the subspace engine cannot measure this pair (one line), or None when it can."""
    name = sampler.info.name
    if sampler.info.stochastic and not isinstance(sampler, MarkovSampler):
        return f"stochastic sampler {name!r} is not written as Gaussian transitions: no exact method on {target.name!r}"
    if target.core.is_gaussian or not sampler.info.stochastic or _one_d_factors(target.core) is not None:
        return None
    return (f"no exact method for stochastic sampler {name!r} on subspace target {target.name!r}: its k = {target.k} "
            "dimensional part is neither one-dimensional, a product nor one Gaussian (only deterministic samplers "
            "are measured there, by flow Monte Carlo)")


# ---------------------------------------------------------------------------- the premise
def check_equivariance(target: SubspaceTarget, sampler: Sampler, grid: Grid, points: int = 4, seed: int = 0) -> float:
    """Run the sampler on the d-dimensional target, and the block runs (core on B^T x, the 1-D Gaussian laws on
    the complement coordinates) with the same inputs and noises; return the largest difference, or raise
    DivergenceError when they disagree (the sampler is not rotation-equivariant and block-wise)."""
    gen = torch.Generator(device=target.device).manual_seed(seed)
    x = target.sample(points, grid.abar[0], gen)
    recorder = RecordingNoise(seed, target.device)
    full = sampler.run(CountingModel(ExactModel(target)), grid, x, recorder)
    B = target.basis
    y0, perp0 = target.split(x)
    try:
        core_out = sampler.run(CountingModel(ExactModel(target.core)), grid, y0,
                               ScriptedNoise([draw @ B for draw in recorder.draws]))
        predicted = core_out @ B.T
        noise_perp = [draw - (draw @ B) @ B.T for draw in recorder.draws]
        rest0, noise_rest = perp0, noise_perp
        parts = target.gaussian_part()
        if target.shift_norm > 0:  # the first part is the 1-D law along u = s / |s|
            (law, _), parts = parts[0], parts[1:]
            u = target.shift / target.shift_norm
            a0 = perp0 @ u
            out = sampler.run(CountingModel(ExactModel(law)), grid, a0[:, None],
                              ScriptedNoise([(draw @ u)[:, None] for draw in noise_perp]))
            predicted = predicted + out * u
            rest0 = perp0 - a0[:, None] * u
            noise_rest = [draw - (draw @ u)[:, None] * u for draw in noise_perp]
        for law, _ in parts:
            # The centred complement coordinates: the 1-D map is linear with scalar coefficients, so it acts on the
            # complement vector coordinate by coordinate in any orthonormal basis, the original one included.
            out = sampler.run(CountingModel(ExactModel(law)), grid, rest0.reshape(-1, 1),
                              ScriptedNoise([draw.reshape(-1, 1) for draw in noise_rest]))
            predicted = predicted + out.reshape(rest0.shape)
    except (RuntimeError, SamplerError, TargetError) as err:
        raise DivergenceError(f"sampler {sampler.info.name!r} cannot be replayed block by block on subspace target "
                              f"{target.name!r} ({err}): the subspace method does not apply") from None
    gap = float((full - predicted).abs().max())
    scale = 1.0 + float(full.abs().max())
    if not gap <= 1e-9 * scale:
        raise DivergenceError(
            f"sampler {sampler.info.name!r} is not rotation-equivariant and block-wise on subspace target "
            f"{target.name!r} (the d-dimensional run differs by {gap:.3g} from the block runs): the subspace method "
            "does not apply"
        )
    return gap


# ---------------------------------------------------------------------------- the Gaussian part
def _gaussian_part(target: SubspaceTarget, sampler: Sampler, grid: Grid, init: str) -> list[dict]:
    """Per distinct complement law: copies, the Gaussian engine's KLs and the output / true 1-D normal laws."""
    level = grid.abar[-1]
    parts = []
    for law, copies in target.gaussian_part():
        out = gaussian_engine(law, sampler, grid, init=init)
        parts.append({
            "copies": copies, "kl": out["kl"], "kl_reverse": out["kl_reverse"],
            "mean": out["kl"].details["mean"][0], "var": out["kl"].details["cov"][0][0],
            "mean_q": float(law.mean(level)[0]), "var_q": float(law.covariance(level)[0, 0]),
        })
    return parts


def _gaussian_part_log_ratio(parts: list[dict], n: int, seed: int, device) -> Tensor:
    """Draws of r_gauss = sum_j log q_j(z_j) - log p_j(z_j), z ~ p, from the sufficient statistics (S1, S2)."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n)
    for part in parts:
        c, m, s2, mq, vq = part["copies"], part["mean"], part["var"], part["mean_q"], part["var_q"]
        U = rng.standard_normal(n)
        S2 = U * U + (rng.chisquare(c - 1, n) if c > 1 else 0.0)
        S1 = math.sqrt(c) * U
        delta = m - mq
        # sum_j [ -1/2 log(vq/s2) - (delta + s g_j)^2 / (2 vq) + g_j^2 / 2 ], arranged so that s2 ~ vq cancels early
        r += (0.5 * c * math.log(s2 / vq) + 0.5 * S2 * (vq - s2) / vq
              - (c * delta * delta + 2 * delta * math.sqrt(s2) * S1) / (2 * vq))
    return torch.as_tensor(r, dtype=DTYPE, device=device)


# ---------------------------------------------------------------------------- the k-dimensional part
def _core_kl(core, sampler: Sampler, grid: Grid, init: str, samples: int, seed: int, tables: dict):
    """(KL Measurement, KL(q||p) Measurement or None, method, Gaussian-engine output or None) for the core.
    `tables` receives the tabulated output densities (G, G/2) of each 1-D factor of a Markov sampler."""
    if core.is_gaussian:
        out = gaussian_engine(core, sampler, grid, init=init, seed=seed)
        return out["kl"], out["kl_reverse"], "gaussian", out
    factors = _one_d_factors(core)
    if factors is not None:
        one_d_engine = grid_1d_kernel if sampler.info.stochastic else grid_1d_flow
        kl = kl_err = 0.0
        rev, rev_err = (0.0, 0.0) if isinstance(sampler, MarkovSampler) else (None, None)
        methods = set()
        for law, copies in factors:
            one = one_d_engine(law, sampler, grid, init=init)["kl"]
            kl, kl_err = kl + copies * one.value, kl_err + copies * one.numerical_error
            methods.add(one.method)
            if rev is not None:
                tables[id(law)] = tabulate_pair(law, sampler, grid, init)
                back = reverse_kl_from(tables[id(law)])
                rev, rev_err = rev + copies * back.value, rev_err + copies * back.numerical_error
        method = "+".join(sorted(methods))
        kl_m = Measurement("kl", kl, kl_err, method)
        rev_m = None if rev is None else Measurement("kl_reverse", rev, rev_err, "grid-1d-kernel")
        return kl_m, rev_m, method, None
    if not sampler.info.stochastic:
        return flow_mc(core, sampler, grid, init=init, samples=samples, seed=seed)["kl"], None, "flow-mc", None
    raise DivergenceError(f"no exact method for stochastic sampler {sampler.info.name!r} on a {core.d}-dimensional "
                          "core that is neither one-dimensional, a product nor one Gaussian")


def _core_log_ratios(core, sampler: Sampler, grid: Grid, init: str, n: int, seed: int, gaussian_out, tables: dict):
    """Draws y ~ p_core and r_core = log q_core(y) - log p_core(y): (r, r at half tabulation resolution or None,
    how log p_core was obtained)."""
    level = grid.abar[-1]
    gen = torch.Generator(device=core.device).manual_seed(seed)
    if gaussian_out is not None:
        mean = torch.as_tensor(gaussian_out["kl"].details["mean"], dtype=DTYPE, device=core.device)
        cov = torch.as_tensor(gaussian_out["kl"].details["cov"], dtype=DTYPE, device=core.device)
        L = torch.linalg.cholesky(cov)
        y = mean + torch.randn(n, mean.numel(), dtype=DTYPE, device=core.device, generator=gen) @ L.T
        log_p = torch.distributions.MultivariateNormal(mean, scale_tril=L).log_prob(y)
        return core.log_prob(y, level) - log_p, None, "gaussian output law"
    x, log_p_init = initial_draws(core, grid, init, n, gen)
    if not sampler.info.stochastic:
        model = CountingModel(ExactModel(core))
        chunk = max(1, CHUNK_ELEMENTS // (core.d * core.d))
        ratios = []
        for start in range(0, n, chunk):
            y, sign, logdet = flow_and_logdet(sampler, model, grid, x[start : start + chunk])
            if not (torch.all(torch.isfinite(y)) and torch.all(torch.isfinite(logdet))) or torch.any(sign <= 0):
                raise DivergenceError(f"the map of {sampler.info.name!r} on {grid.name} T={grid.T} is not a "
                                      "diffeomorphism at a drawn point: the change-of-variables method does not apply")
            ratios.append(core.log_prob(y, level) - (log_p_init[start : start + chunk] - logdet))
        return torch.cat(ratios), None, "flow change of variables"
    # Markov sampler, 1-D factors: exact draws by running it, log p from the tabulated densities (G and G/2).
    y = sampler.run(CountingModel(ExactModel(core)), grid, x, Noise(seed + 1, core.device))
    log_p, log_p_half = torch.zeros(n, dtype=DTYPE, device=core.device), torch.zeros(n, dtype=DTYPE, device=core.device)
    groups = core.factor_groups() if isinstance(core, ProductTarget) else [(core, torch.tensor([0]))]
    for law, idx in groups:
        fine, coarse = tables[id(law)] if id(law) in tables else tabulate_pair(law, sampler, grid, init)
        cols = y[:, idx.to(y.device)]
        log_p += fine.log_density()(cols).sum(-1)
        log_p_half += coarse.log_density()(cols).sum(-1)
    log_q = core.log_prob(y, level)
    return log_q - log_p, log_q - log_p_half, "sampler draws, tabulated 1-D output densities"


def _tv(r: Tensor) -> tuple[float, float]:
    terms = (-torch.expm1(r)).clamp_min(0)
    return float(terms.mean()), float(terms.std() / math.sqrt(r.numel()))


# ---------------------------------------------------------------------------- the engine
def subspace_engine(target, sampler: Sampler, grid: Grid, init: str = "exact", samples: int = 20_000,
                    seed: int = 0, check: bool = True, tv: bool = True) -> dict[str, Measurement]:
    """KL (and KL(q || p) where both parts have it) as core + Gaussian part, TV by Monte Carlo with exact densities
    (see the module docstring; tv=False skips it). A plain mixture with the structure is accepted
    (theory.subspace.find_subspace)."""
    found = as_subspace(target)
    if found is None:
        raise DivergenceError(f"target {getattr(target, 'name', target)!r} has no subspace structure (k < d, shared "
                              "isotropic floor): the subspace method does not apply")
    target = found
    why = unsupported(target, sampler)
    if why:
        raise DivergenceError(why)
    if isinstance(samples, bool) or int(samples) != samples or samples < 2:
        raise DivergenceError(f"the subspace engine needs at least 2 samples, got {samples!r}")
    samples = int(samples)
    gap = check_equivariance(target, sampler, grid, seed=seed) if check else float("nan")
    core = target.core
    tables: dict = {}
    kl_core, rev_core, core_method, gaussian_out = _core_kl(core, sampler, grid, init, samples, seed, tables)
    parts = _gaussian_part(target, sampler, grid, init)
    kl_gauss = sum(p["copies"] * p["kl"].value for p in parts)
    kl_gauss_err = sum(p["copies"] * p["kl"].numerical_error for p in parts)
    details = {
        "d": target.d, "k": target.k, "floor": target.floor, "core_method": core_method,
        "gaussian_part_method": "gaussian", "kl_core": kl_core.value, "kl_core_error": kl_core.numerical_error,
        "kl_gaussian_part": kl_gauss, "kl_gaussian_part_error": kl_gauss_err, "samples": samples, "seed": seed,
        "equivariance_gap": gap, "structure_residual": target.structure_residual,
    }
    out = {"kl": Measurement("kl", kl_core.value + kl_gauss, kl_core.numerical_error + kl_gauss_err, "subspace",
                             dict(details))}
    if tv:
        r_core, r_core_half, how = _core_log_ratios(core, sampler, grid, init, samples, seed, gaussian_out, tables)
        r_gauss = _gaussian_part_log_ratio(parts, samples, seed + 2, target.device)
        value, se = _tv(r_core + r_gauss)
        tabulation = abs(_tv(r_core_half + r_gauss)[0] - value) if r_core_half is not None else 0.0
        rounding = 64 * torch.finfo(DTYPE).eps * grid.T * (1 + value)
        out["tv"] = Measurement("tv", value, se + tabulation + rounding, "subspace-mc",
                                dict(details, standard_error=se, tabulation_error=tabulation, core_density=how))
    if rev_core is not None:
        rev = rev_core.value + sum(p["copies"] * p["kl_reverse"].value for p in parts)
        rev_err = rev_core.numerical_error + sum(p["copies"] * p["kl_reverse"].numerical_error for p in parts)
        out["kl_reverse"] = Measurement("kl_reverse", rev, rev_err, "subspace",
                                        dict(details, direction="KL(q || p)"))
    return out
