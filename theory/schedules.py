"""Step grids: decreasing-noise sequences of levels abar_(0) < abar_(1) < ... < abar_(N).

A schedule makes a grid; a sampler walks it and never builds its own (shared/DESIGN.md, "Grid"). T counts grid
levels, as in Li et al.: a grid of T levels has T - 1 steps, and a one-evaluation sampler spends T - 1 evaluations.

Li, Wei, Chen, Chi (2023, arXiv 2306.09251), the step-size schedule (natural log):

    beta_1 = T^(-c0)
    beta_{t+1} = (c1 log T / T) * min( beta_1 (1 + c1 log T / T)^t , 1 ),   t = 1 .. T-1
    alpha_t = 1 - beta_t,   abar_t = prod_{i <= t} alpha_i

with beta capped at beta_max (the formula exceeds one for small T) and the number of capped steps recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from theory.fingerprint import digest

DTYPE = torch.float64


class ScheduleError(ValueError):
    """A grid that cannot be built: bad T, unknown schedule, levels out of order."""


@dataclass(frozen=True)
class Grid:
    """Levels abar, strictly increasing (noisiest first), in (0, 1]; the sampler ends at abar[-1]."""

    abar: Tensor
    name: str
    params: dict = field(default_factory=dict)
    capped: int = 0  # steps whose step size had to be capped (li2023 at small T)

    def __post_init__(self):
        abar = torch.as_tensor(self.abar, dtype=DTYPE)
        object.__setattr__(self, "abar", abar)
        if abar.ndim != 1 or abar.numel() < 2:
            raise ScheduleError(f"a grid needs at least two levels, got {abar.numel()}")
        if not torch.all(torch.isfinite(abar)) or abar.min() <= 0 or abar.max() > 1:
            raise ScheduleError(f"grid levels must lie in (0, 1], got range [{float(abar.min())}, {float(abar.max())}]")
        if torch.any(abar[1:] <= abar[:-1]):
            bad = int(torch.nonzero(abar[1:] <= abar[:-1])[0])
            raise ScheduleError(f"grid levels must increase strictly (noisiest first); level {bad + 1} does not")

    @property
    def T(self) -> int:
        """Number of levels."""
        return self.abar.numel()

    @property
    def steps(self) -> int:
        return self.abar.numel() - 1

    @property
    def sigma(self) -> Tensor:
        """EDM noise levels sigma = sqrt((1 - abar) / abar), decreasing."""
        return torch.sqrt((1 - self.abar) / self.abar)

    @property
    def lam(self) -> Tensor:
        """Half log-SNR lambda = -log sigma, increasing."""
        return -torch.log(self.sigma)

    @property
    def beta(self) -> Tensor:
        """Per-step 1 - alpha_t = 1 - abar_(i) / abar_(i+1) (Li et al.'s step sizes)."""
        return 1 - self.abar[:-1] / self.abar[1:]

    @property
    def max_step(self) -> float:
        """The largest step size max_t (1 - alpha_t): the h that orders are measured against."""
        return float(self.beta.max())

    def fingerprint(self) -> str:
        """A digest of the levels themselves (theory.fingerprint: their float64 values), so that a changed schedule
        parameter changes it even where the grid's name does not; the name, parameters and capped steps only label
        them."""
        return digest("Grid", self.abar)

    def to(self, device) -> "Grid":
        return Grid(self.abar.to(device), self.name, dict(self.params), self.capped)

    @classmethod
    def from_sigmas(cls, sigmas, name: str, params: dict | None = None) -> "Grid":
        """A grid from decreasing EDM sigmas (sigma = 0 is not a level: it is abar = 1)."""
        sigmas = torch.as_tensor(sigmas, dtype=DTYPE)
        if torch.any(sigmas < 0):
            raise ScheduleError("sigmas must be non-negative")
        return cls(1.0 / (1.0 + sigmas**2), name, params or {})


SCHEDULES: dict[str, Callable[..., Grid]] = {}


def register_schedule(name: str):
    def decorate(fn: Callable[..., Grid]):
        SCHEDULES[name] = fn
        return fn

    return decorate


def _check_T(T: int) -> int:
    if isinstance(T, bool) or int(T) != T or T < 2:
        raise ScheduleError(f"T must be an integer >= 2 (T levels, T - 1 steps), got {T!r}")
    return int(T)


@register_schedule("li2023")
def li2023(T: int, c0: float = 2.0, c1: float = 4.0, beta_max: float = 0.5) -> Grid:
    """Li et al. (2023) section 2 step sizes; levels abar_T < ... < abar_1 = 1 - T^(-c0)."""
    T = _check_T(T)
    if not (0 < beta_max < 1):
        raise ScheduleError(f"beta_max must lie in (0, 1), got {beta_max!r}")
    rate = c1 * math.log(T) / T
    beta = [T ** (-c0)]
    for t in range(1, T):
        beta.append(rate * min(T ** (-c0) * (1 + rate) ** t, 1.0))
    beta_t = torch.tensor(beta, dtype=DTYPE)
    capped = int((beta_t > beta_max).sum())
    beta_t = beta_t.clamp(max=beta_max)
    abar = torch.cumprod(1 - beta_t, 0)  # abar_1, ..., abar_T
    return Grid(abar.flip(0), "li2023", {"c0": c0, "c1": c1, "beta_max": beta_max}, capped)


def _ddpm_train_abar(kind: str, n_train: int) -> Tensor:
    if kind == "linear":
        # Ho et al. (2020): beta linear from 1e-4 to 0.02 over 1000 training steps.
        betas = torch.linspace(1e-4, 0.02, n_train, dtype=DTYPE)
        return torch.cumprod(1 - betas, 0)
    # Nichol & Dhariwal (2021): abar(t) = f(t) / f(0), f(t) = cos^2(((t/N + s)/(1 + s)) pi/2), betas <= 0.999.
    s = 0.008
    steps = torch.arange(n_train + 1, dtype=DTYPE)
    f = torch.cos(((steps / n_train + s) / (1 + s)) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def _skip(kind: str, T: int, n_train: int) -> Grid:
    T = _check_T(T)
    if T > n_train:
        raise ScheduleError(f"T = {T} exceeds the {n_train} training steps of the ddpm-{kind} schedule")
    abar_train = _ddpm_train_abar(kind, n_train)
    # Step skipping: T training indices spread evenly from the last (noisiest) to the first.
    idx = torch.round(torch.linspace(n_train - 1, 0, T, dtype=DTYPE)).long()
    return Grid(abar_train[idx], f"ddpm-{kind}", {"n_train": n_train})


@register_schedule("ddpm-linear")
def ddpm_linear(T: int, n_train: int = 1000) -> Grid:
    """DDPM's linear training schedule, T levels chosen evenly among its n_train steps."""
    return _skip("linear", T, n_train)


@register_schedule("ddpm-cosine")
def ddpm_cosine(T: int, n_train: int = 1000) -> Grid:
    """The cosine schedule of Nichol & Dhariwal, T levels chosen evenly among its n_train steps."""
    return _skip("cosine", T, n_train)


def get_schedule(name: str) -> Callable[..., Grid]:
    if name not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {name!r}: known schedules are {', '.join(sorted(SCHEDULES))}")
    return SCHEDULES[name]


def make_grid(name: str, T: int, **params) -> Grid:
    """The grid of schedule `name` with T levels."""
    return get_schedule(name)(T, **params)


# Jain & Zhang (2025, arXiv 2508.16306), section 3: steps h_k = t_k - t_(k-1) = c min{1, t_k} in the OU time t of
# dX = -X dt + sqrt(2) dB (abar = e^(-2t)) on delta = t_0 < t_1 < ... < t_(K+1) = T_end. Default end points: those of
# the project's practical grids (theory.solver_grids, EDM's sigma_min = 0.002 and sigma_max = 80, t = log(1 +
# sigma^2) / 2), so that errors on this grid sit beside theirs: delta = 2.0e-6, T_end = 4.38. The start error
# KL(q_(T_end) || N(0, I)) is then of order e^(-2 T_end) ~ 1.6e-4 times the data's second moment, which is why the
# studies start from q_T exactly when they measure the discretisation term.
JAINZHANG_DELTA = 0.5 * math.log1p(0.002**2)
JAINZHANG_T_END = 0.5 * math.log1p(80.0**2)


def jainzhang_times(K: int, c: float, delta: float) -> list[float]:
    """t_0 = delta, ..., t_(K+1) for the step constant c: each t_k solves t_k - t_(k-1) = c min{1, t_k}, i.e.
    t_k = t_(k-1) / (1 - c) while that stays <= 1 (t_(k-1) <= 1 - c) and t_k = t_(k-1) + c above."""
    times = [delta]
    for _ in range(K + 1):
        t = times[-1]
        times.append(t / (1 - c) if t <= 1 - c else t + c)
    return times


@register_schedule("jainzhang")
def jainzhang(T: int, delta: float = JAINZHANG_DELTA, T_end: float = JAINZHANG_T_END) -> Grid:
    """Jain & Zhang's grid: h_k = c min{1, t_k} (constant above t = 1, geometric below) with t_0 = delta and
    t_(K+1) = T_end; c solved by bisection (t_(K+1) increases continuously with c). The grid's T = K + 1 levels are
    t_(K+1), ..., t_1 (noisiest first): the sampler returns x_1 at t_1, and t_0 = delta, the level its last step
    overshoots to, is not a level (samplers.renoise recovers it from the last step, t_0 = t_1 - c min{1, t_1})."""
    T = _check_T(T)
    if not (isinstance(delta, (int, float)) and 0 < delta < T_end and math.isfinite(T_end)):
        raise ScheduleError(f"jainzhang needs 0 < delta < T_end < inf, got delta={delta!r}, T_end={T_end!r}")
    K = T - 1
    low, high = 0.0, 1.0 - 1e-15  # t_(K+1) -> delta as c -> 0, and -> infinity as c -> 1
    if jainzhang_times(K, high, delta)[-1] < T_end:
        raise ScheduleError(f"jainzhang: T = {T} levels cannot reach T_end = {T_end!r} from delta = {delta!r}")
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if jainzhang_times(K, mid, delta)[-1] < T_end else (low, mid)
        if high - low <= 1e-16 * high:
            break
    c = 0.5 * (low + high)
    times = torch.tensor(jainzhang_times(K, c, delta)[1:], dtype=DTYPE).flip(0)
    times[0] = T_end  # the bisection's last rounding
    return Grid(torch.exp(-2 * times), "jainzhang", {"delta": delta, "T_end": T_end, "c": c})
