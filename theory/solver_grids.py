"""Time grids of the practical solvers (shared/spec/samplers.md section 3), in EDM sigma between sigma_max and
sigma_min, turned into project grids by `Grid.from_sigmas` (N points = T levels; abar = 1 / (1 + sigma^2)).

- `polynomial` (Karras et al. 2022, EDM, rho = 7):
      t_i = ( smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)) )^rho
- `logsnr` (DPM-Solver): lambda = -log sigma uniform between -log smax and -log smin.
- `time_uniform` (rho = 1 or 2): VP time tau^(1/rho) uniform on [tau_min = 1e-3, 1], mapped by the VP schedule
      sigma(tau) = sqrt( exp(beta_d tau^2 / 2 + beta_min tau) - 1 )
  whose beta_d, beta_min solve sigma(1) = smax, sigma(tau_min) = smin (a 2 x 2 linear system).
- `li2023` (theory.schedules) is the seed paper's grid and already a project grid; every solver runs on it too, but
  its ends move with T (abar_1 = 1 - T^-2, so sigma_min ~ 1/T), so errors on it are not comparable with the others.
- `li2023-sigma`: the li2023 grid's spacing in lambda, rescaled affinely onto [-log smax, -log smin]: the seed
  paper's step-size shape between the common end points.

Recommended pairings (AMED code base): euler, heun, dpm-solver-2, ipndm: polynomial; dpmpp-*, unipc: logsnr;
deis: time_uniform rho 2; amed: time_uniform rho 1. ode-renoise: jainzhang (its paper's grid, theory.schedules).
"""

from __future__ import annotations

import math

import torch

from theory.schedules import DTYPE, Grid, ScheduleError, _check_T, register_schedule

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
TAU_MIN = 1e-3

# The grid each practical solver is usually run on (AMED code base): (schedule, params).
RECOMMENDED = {
    "euler": ("polynomial", {}),
    "heun": ("polynomial", {}),
    "dpm-solver-2": ("polynomial", {}),
    "ipndm": ("polynomial", {}),
    "dpmpp-2m": ("logsnr", {}),
    "dpmpp-3m": ("logsnr", {}),
    "unipc": ("logsnr", {}),
    "deis": ("time_uniform", {"rho": 2.0}),
    "amed": ("time_uniform", {"rho": 1.0}),
    "ddim": ("polynomial", {}),
    "ode": ("li2023", {}),
    "ode-accel": ("li2023", {}),
    "ode-renoise": ("jainzhang", {}),  # Jain & Zhang's own step law, h_k = c min{1, t_k} (theory.schedules)
}


def recommended_grid(sampler_name: str) -> tuple[str, dict]:
    """(schedule, params) recommended for a sampler name (AFS and plugin prefixes resolved to the base)."""
    name = sampler_name
    if name.startswith("afs:"):
        name = name[4:]
    if name.startswith("amed-plugin:"):
        return RECOMMENDED.get(name.split(":", 1)[1], ("polynomial", {}))
    return RECOMMENDED.get(name, ("polynomial", {}))


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not (0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
        raise ScheduleError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")


@register_schedule("polynomial")
def polynomial(T: int, rho: float = 7.0, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> Grid:
    """EDM's polynomial grid: t_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
    T = _check_T(T)
    _check_range(sigma_min, sigma_max)
    if not rho > 0:
        raise ScheduleError(f"rho must be positive, got {rho!r}")
    i = torch.arange(T, dtype=DTYPE) / (T - 1)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (a + i * (b - a)) ** rho
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return Grid.from_sigmas(sigmas, "polynomial", {"rho": rho, "sigma_min": sigma_min, "sigma_max": sigma_max})


@register_schedule("logsnr")
def logsnr(T: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> Grid:
    """lambda = -log sigma uniform (DPM-Solver's 'logSNR' grid)."""
    T = _check_T(T)
    _check_range(sigma_min, sigma_max)
    lam = torch.linspace(-math.log(sigma_max), -math.log(sigma_min), T, dtype=DTYPE)
    return Grid.from_sigmas(torch.exp(-lam), "logsnr", {"sigma_min": sigma_min, "sigma_max": sigma_max})


def vp_constants(sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, tau_min: float = TAU_MIN):
    """(beta_d, beta_min) with sigma(1) = smax and sigma(tau_min) = smin for
    sigma(tau)^2 = exp(beta_d tau^2 / 2 + beta_min tau) - 1."""
    _check_range(sigma_min, sigma_max)
    A1, A0 = math.log1p(sigma_max**2), math.log1p(sigma_min**2)
    # 0.5 beta_d + beta_min = A1 ;  0.5 beta_d tau^2 + beta_min tau = A0
    beta_d = 2 * (A0 - A1 * tau_min) / (tau_min**2 - tau_min)
    beta_min = A1 - 0.5 * beta_d
    return beta_d, beta_min


def vp_sigma(tau, beta_d: float, beta_min: float):
    """sigma(tau) of the VP schedule."""
    tau = torch.as_tensor(tau, dtype=DTYPE)
    return torch.sqrt(torch.expm1(0.5 * beta_d * tau**2 + beta_min * tau))


def vp_tau(sigma, beta_d: float, beta_min: float):
    """The inverse of vp_sigma: the positive root of beta_d tau^2 / 2 + beta_min tau = log(1 + sigma^2)."""
    sigma = torch.as_tensor(sigma, dtype=DTYPE)
    rhs = torch.log1p(sigma**2)
    return 2 * rhs / (beta_min + torch.sqrt(beta_min**2 + 2 * beta_d * rhs))  # stable form of the root


@register_schedule("time_uniform")
def time_uniform(T: int, rho: float = 1.0, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                 tau_min: float = TAU_MIN) -> Grid:
    """tau^(1/rho) uniform in [tau_min, 1] under the VP schedule fitted to (sigma_min, sigma_max)."""
    T = _check_T(T)
    if rho not in (1, 2, 1.0, 2.0):
        raise ScheduleError(f"time_uniform takes rho = 1 or 2, got {rho!r}")
    beta_d, beta_min = vp_constants(sigma_min, sigma_max, tau_min)
    i = torch.arange(T, dtype=DTYPE) / (T - 1)
    tau = (1.0 + i * (tau_min ** (1 / rho) - 1.0)) ** rho
    sigmas = vp_sigma(tau, beta_d, beta_min)
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return Grid.from_sigmas(sigmas, "time_uniform", {"rho": float(rho), "sigma_min": sigma_min,
                                                       "sigma_max": sigma_max, "tau_min": tau_min})


@register_schedule("li2023-sigma")
def li2023_sigma(T: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, c0: float = 2.0,
                 c1: float = 4.0, beta_max: float = 0.5) -> Grid:
    """li2023's lambda spacing mapped affinely onto lambda in [-log sigma_max, -log sigma_min]."""
    from theory.schedules import li2023

    _check_range(sigma_min, sigma_max)
    lam = li2023(T, c0=c0, c1=c1, beta_max=beta_max).lam
    u = (lam - lam[0]) / (lam[-1] - lam[0])
    new = -math.log(sigma_max) + u * (math.log(sigma_max) - math.log(sigma_min))
    sigmas = torch.exp(-new)
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return Grid.from_sigmas(sigmas, "li2023-sigma", {"sigma_min": sigma_min, "sigma_max": sigma_max, "c0": c0,
                                                     "c1": c1, "beta_max": beta_max})
