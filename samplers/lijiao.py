"""Li & Jiao's accelerated ODE sampler with a randomized schedule, `lijiao-rmp` and `lijiao-rmp-parallel`.

Reference: Gen Li, Yuchen Jiao, "Improved convergence rate for diffusion probabilistic models" (arXiv 2410.13738;
v2, June 2025, "Jiao & Li"), section 3 and Appendix E.1, read in full; the project's statement of it is
shared/spec/frontier.md section 1, which this module follows line by line. Theorem: theory.bounds `lijiao2024-rmp`.

    get_sampler("lijiao-rmp")                              # K = 10, c0 = 2, c1 = 5, draw = 0
    get_sampler("lijiao-rmp?K=10&c0=2&c1=5&draw=3")        # the same sampler with schedule draw number 3
    get_sampler("lijiao-rmp-parallel?K=10&M=4")            # App. E.1: M Picard sweeps per round

Notation. Forward X_t = sqrt(alpha_t) X_(t-1) + sqrt(1 - alpha_t) W_t, abar_t = prod alpha_i; the noise index
tau = 1 - abar (X_tau = sqrt(1 - tau) X_0 + sqrt(tau) Z); s_tau = grad log p_(X_tau) = -eps / sqrt(tau). In
u = Y / sqrt(1 - tau) the probability-flow ODE is du / d tau = -s_tau(Y) / (2 (1 - tau)^1.5), integrated as tau
decreases; g = s / (2 (1 - tau)^1.5) is its integrand.

Deterministic grid (T here is the PAPER's T, see "Which T" below). ahat_(T+1) = T^-c0 and
ahat_(t-1) = ahat_t + c1 ahat_t (1 - ahat_t) log T / T for t = T+1, ..., -N/2 + 1: the grid runs N/2 indices below
t = 1. For precision it is carried in tauhat = 1 - ahat by its own recursion,
tauhat_(t-1) = tauhat_t (1 - c1 (1 - tauhat_t) log T / T), so that the small noise levels near the data keep their
relative accuracy.

Randomized schedule. abar_t ~ Uniform(ahat_t, ahat_(t-1)), i.e. tau_t = tauhat_(t-1) + U_t (tauhat_t - tauhat_(t-1)),
drawn independently for each index t = -N/2 + 1, ..., T + 1 and ONCE for the whole run: not per step, not per
round, not per sample. The uniforms U_(T+1), U_T, ..., U_(-N/2+1) (in that order) come from a torch generator
seeded with the option `draw`, so the same draw number gives the same schedule.

Rounds. K rounds of N = 2T/K steps (N even). Round k uses tauhat_(k,n) = tauhat_(T - kN/2 - n) and
tau_(k,n) = tau_(T - kN/2 - n + 1), n = 0..N; consecutive rounds overlap by N/2 cells and reuse the same draws,
tau_(k+1,n) = tau_(k,n+N/2). Inner update of round k, from Y_(k,0) = Y_k, with
g_i = s(Y_(k,i), tau_(k,i)) / (2 (1 - tau_(k,i))^1.5):

    u_n = u_0 + g_0 (tau_(k,0) - tauhat_(k,0)) + sum_(i=1)^(n-1) g_i (tauhat_(k,i-1) - tauhat_(k,i))
              + g_(n-1) (tauhat_(k,n-1) - tau_(k,n)),           Y_(k,n) = sqrt(1 - tau_(k,n)) u_n,   n = 1..N

(each full cell [tauhat_(k,i), tauhat_(k,i-1)] weighted by the score at its uniformly random interior time
tau_(k,i); the leading partial cell by g_0, the trailing one by the previous point's g_(n-1)). One evaluation per
n < N: N per round. Then, after EVERY round, the last one included, noise injection: the exact forward transition
from tau_(k,N) back up to tau_(k+1,0) = tau_(k,N/2), N/2 cells:

    Y_(k+1) = sqrt((1 - tau_(k+1,0)) / (1 - tau_(k,N))) Y_(k,N) + sqrt((tau_(k+1,0) - tau_(k,N)) / (1 - tau_(k,N))) Z_k.

The output Y_K lies at tau_(K,0) = tau_1 = 1 - abar_1 of the draw.

Which T, and the grid the engines see. The paper's T is the number of intervals from index T+1 down to index 1,
and the sampler spends K N = 2T evaluations. The project's T counts grid levels (theory.schedules), so a project T
means the paper's T - 1: the sampler owns its grid (as a diffusers scheduler does, samplers.base.sampler_grid), and
`own_grid(T)` has the T drawn levels abar_(T'+1), ..., abar_1 with T' = T - 1 the paper's T: its first level is
where Y_0 starts (q there, or N(0, I)), its last the drawn abar_1 at which the output is compared with q. This is
the one mechanism by which the engines learn the drawn output level; the N/2 levels below index 1 are used inside
the last rounds and never appear in the grid. `run` refuses any other grid. NFE = 2 (T - 1) = 2T', counted by
running (Sampler.nfe); evals_per_step = 2 (per grid interval). N = 2T'/K even means K divides T' = T - 1: with the
default K = 10 the project's T is 11, 21, 41, 81, 161, 321, 641, 1281, ...

Defaults of c0 and c1 (the paper asks only that they be large enough with c1 / c0 large; its text gives no
values): c0 = 2, c1 = 5. Reasons, over the paper's T' = 20 .. 1280 (K = 10): the first level ahat_(T'+1) = T'^-2 is
2.5e-3 .. 6e-7 (q there is within KL 3e-4 per unit-variance coordinate of N(0, I) at T' = 20, so a start from
N(0, I) costs little); 1 - ahat_1 falls from 5e-6 to 4e-10 (close to the data); the largest relative step
c1 log T' / T' is at most 0.75 (the recursion needs it below 1, or tauhat leaves (0, 1); larger c1 such as 6
reaches 0.9 at T' = 20 and pushes 1 - ahat_1 down to 1e-13, where abar = 1 - tau, the level a model is given,
keeps only 3 digits of tau); and the levels below index 1 stay above 1e-11. c1 / c0 = 2.5.

Given the draw, the sampler is a Markov chain of K Gaussian transitions, each a deterministic map (one round's
inner update, then the scaling of the noise injection) followed by Gaussian noise: a MarkovSampler, which the
Gaussian engine (any d), the 1-D kernel engine, the product and subspace engines measure exactly. That is the
theorem's object: the law of Y_K given the draw (the guarantee holds with high probability over draws); different
draws are different samplers (`draw` option, recorded in the name). The law averaged over draws is a different,
smaller-error object, not measured here: the draws are shared across overlapping rounds, so the averaged chain is
not Markov in the rounds, and the 1-D randomized engine (independent draws per step) does not apply.

Parallel variant (App. E.1). Per round, M Picard sweeps over all n at once: the iterate starts at u_n = u_0 for
every n; sweep m evaluates g_0 at Y_k (once, with sweep 1) and every g_i, i = 1..N-1, at sweep m - 1's
Y_(k,i), all in one parallel round (CountingModel.parallel), then sets every u_n by the formula above; the noise
injection acts on sweep M's Y_(k,N). NFE = K (1 + M (N - 1)), sequential rounds K M, both counted by running. After
sweep m the points n <= m equal the sequential ones, so M >= N reproduces `lijiao-rmp` exactly. The paper takes M of
order log(L d / eps); default M = 4 (no value in the text).

Precision: the sampler works in tau throughout (tau from its own recursion, scores divided by sqrt(tau)); the one
place abar = 1 - tau enters is the model call eps(x, abar), the project's Model seam, and the grid handed to the
engines.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from samplers.base import (
    CountingModel,
    MarkovSampler,
    SamplerError,
    SamplerInfo,
    Transition,
    parse_query,
    register,
)
from theory.schedules import Grid, ScheduleError
from theory.targets import DTYPE

DEFAULT_K = 10  # rounds, as in the paper's experiment (App. A)
DEFAULT_C0 = 2.0  # ahat_(T+1) = T^-c0 (module docstring: why)
DEFAULT_C1 = 5.0  # step c1 ahat (1 - ahat) log T / T
DEFAULT_SWEEPS = 4  # M, Picard sweeps per round of the parallel variant
REFERENCE = "Li & Jiao 2024 / Jiao & Li v2 2025 (arXiv 2410.13738), section 3 and App. E.1, full text"


# ---------------------------------------------------------------------------- the grid and its draw
@dataclass(frozen=True)
class Schedule:
    """The paper's grid for its T (intervals) and one draw of the randomized schedule.

    tauhat[t + N/2] = tauhat_t for t = -N/2 .. T+1; tau[t + N/2] = tau_t = 1 - abar_t (drawn) for
    t = -N/2 + 1 .. T+1 (tau[0] is unused and NaN)."""

    T: int
    K: int
    c0: float
    c1: float
    draw: int
    tauhat: Tensor
    tau: Tensor

    @property
    def N(self) -> int:
        return 2 * self.T // self.K

    def hat(self, t: int) -> Tensor:
        return self.tauhat[t + self.N // 2]

    def drawn(self, t: int) -> Tensor:
        return self.tau[t + self.N // 2]

    def round_levels(self, k: int) -> tuple[Tensor, Tensor]:
        """(tau_(k,n) for n = 0..N, tauhat_(k,n) for n = 0..N-1): tau_(k,n) = tau_(T - kN/2 - n + 1),
        tauhat_(k,n) = tauhat_(T - kN/2 - n)."""
        top = self.T - k * self.N // 2
        taus = torch.stack([self.drawn(top - n + 1) for n in range(self.N + 1)])
        hats = torch.stack([self.hat(top - n) for n in range(self.N)])
        return taus, hats

    def grid_levels(self) -> Tensor:
        """abar_t = 1 - tau_t for t = T+1 down to 1: where Y_0 starts and, last, where Y_K ends."""
        return 1 - torch.stack([self.drawn(t) for t in range(self.T + 1, 0, -1)])


def check_options(T: int, K: int, c0: float, c1: float) -> None:
    """One-line SamplerErrors for options that give no valid grid (T is the paper's T)."""
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise SamplerError(f"lijiao-rmp: K (rounds) must be an integer >= 1, got {K!r}")
    for name, value in (("c0", c0), ("c1", c1)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SamplerError(f"lijiao-rmp: {name} must be a number > 0, got {value!r}")
    if T is None:
        return
    if T < 2:
        raise SamplerError(f"lijiao-rmp needs the paper's T = levels - 1 >= 2 (log T > 0), got T = {T}")
    if T % K:
        raise SamplerError(f"lijiao-rmp: N = 2T/K must be an even integer; the paper's T = {T} (grid levels - 1) and "
                           f"K = {K} give N = {2 * T / K:g} (K must divide T)")
    if c1 * math.log(T) / T >= 1:
        raise SamplerError(f"lijiao-rmp: c1 = {c1:g} is too large for T = {T}: the step c1 log T / T = "
                           f"{c1 * math.log(T) / T:.3g} must stay below 1 (else the grid leaves (0, 1))")


def make_schedule(T: int, K: int, c0: float, c1: float, draw: int) -> Schedule:
    """The deterministic grid tauhat (its own recursion) running N/2 indices below t = 1, and the draw."""
    check_options(T, K, c0, c1)
    N = 2 * T // K
    step = c1 * math.log(T) / T
    tauhat = {T + 1: -math.expm1(-c0 * math.log(T))}  # 1 - T^-c0
    for t in range(T + 1, -N // 2, -1):
        tauhat[t - 1] = tauhat[t] * (1 - step * (1 - tauhat[t]))
    hats = torch.tensor([tauhat[t] for t in range(-N // 2, T + 2)], dtype=DTYPE)
    uniforms = torch.rand(T + N // 2 + 1, dtype=DTYPE, generator=torch.Generator().manual_seed(draw))
    tau = torch.full_like(hats, float("nan"))
    for j, t in enumerate(range(T + 1, -N // 2, -1)):  # U_(T+1) first
        tau[t + N // 2] = hats[t - 1 + N // 2] + uniforms[j] * (hats[t + N // 2] - hats[t - 1 + N // 2])
    return Schedule(T, K, float(c0), float(c1), draw, hats, tau)


# ---------------------------------------------------------------------------- one round
def _integrand(model: CountingModel, y: Tensor, tau: Tensor) -> Tensor:
    """g = s_tau(y) / (2 (1 - tau)^1.5), s = -eps / sqrt(tau): one evaluation."""
    return -model.eps(y, 1 - tau) / (2 * torch.sqrt(tau) * (1 - tau) ** 1.5)


def inner_update(model: CountingModel, y: Tensor, taus: Tensor, hats: Tensor) -> list[Tensor]:
    """Y_(k,1), ..., Y_(k,N) of one round from Y_(k,0) = y (module docstring, the sum form kept as a running
    sum): N evaluations, g_0 .. g_(N-1)."""
    N = hats.numel()
    u0 = y / torch.sqrt(1 - taus[0])
    g = _integrand(model, y, taus[0])  # g_0
    cells = u0 + g * (taus[0] - hats[0])  # u_0 plus the leading partial cell
    states = []
    for n in range(1, N + 1):
        u = cells + g * (hats[n - 1] - taus[n])  # the trailing partial cell, by g_(n-1)
        states.append(torch.sqrt(1 - taus[n]) * u)
        if n < N:
            g = _integrand(model, states[-1], taus[n])  # g_n, at the cell's random interior time
            cells = cells + g * (hats[n - 1] - hats[n])  # the full cell n
    return states


def picard_update(model: CountingModel, y: Tensor, taus: Tensor, hats: Tensor, sweeps: int) -> list[Tensor]:
    """The same round by `sweeps` Picard sweeps over all n at once (App. E.1): each sweep one parallel round."""
    N = hats.numel()
    u0 = y / torch.sqrt(1 - taus[0])
    states = [torch.sqrt(1 - taus[n]) * u0 for n in range(1, N + 1)]  # u_n = u_0 for every n
    g0 = None
    for _ in range(sweeps):
        with model.parallel():
            if g0 is None:
                g0 = _integrand(model, y, taus[0])
            gs = [g0] + [_integrand(model, states[i - 1], taus[i]) for i in range(1, N)]
        cells = u0 + g0 * (taus[0] - hats[0])
        new = []
        for n in range(1, N + 1):
            if n > 1:
                cells = cells + gs[n - 1] * (hats[n - 2] - hats[n - 1])
            new.append(torch.sqrt(1 - taus[n]) * (cells + gs[n - 1] * (hats[n - 1] - taus[n])))
        states = new
    return states


def noise_injection(tau_from: Tensor, tau_to: Tensor) -> tuple[Tensor, Tensor]:
    """(scale, std) of the exact forward transition from tau_from up to tau_to > tau_from."""
    return torch.sqrt((1 - tau_to) / (1 - tau_from)), torch.sqrt((tau_to - tau_from) / (1 - tau_from))


# ---------------------------------------------------------------------------- the samplers
def _number(options: dict, key: str, default, spec: str):
    value = options.pop(key, default)
    if key in ("K", "M", "draw"):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "draw" else 1):
            least = 0 if key == "draw" else 1
            raise SamplerError(f"{spec}: {key} must be an integer >= {least}, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SamplerError(f"{spec}: {key} must be a number > 0, got {value!r}")
    return value


class LiJiaoRMP(MarkovSampler):
    """Li & Jiao's sampler for one draw of its schedule (module docstring): K overlapping rounds of N = 2T/K
    randomized-midpoint steps of the probability-flow ODE in u = Y / sqrt(1 - tau), each followed by the exact forward
    noising back N/2 cells; sweeps None: sequential inner updates, else that many Picard sweeps per round."""

    family = "lijiao-rmp"

    def __init__(self, K: int = DEFAULT_K, c0: float = DEFAULT_C0, c1: float = DEFAULT_C1, draw: int = 0,
                 sweeps: int | None = None):
        check_options(None, K, c0, c1)
        self.K, self.c0, self.c1, self.draw, self.sweeps = K, float(c0), float(c1), draw, sweeps
        self._schedules: dict[int, Schedule] = {}
        parallel = sweeps is not None
        name = (f"{self.family}-parallel?K={K}&M={sweeps}" if parallel else f"{self.family}?K={K}") + \
            f"&c0={self.c0:g}&c1={self.c1:g}&draw={draw}"
        self.info = SamplerInfo(
            name, stochastic=True, evals_per_step=2, order=1.5, reference=REFERENCE + (", App. E.1" if parallel else ""),
            theorems=() if parallel else ("lijiao2024-rmp",),
            notes=("randomized cumulative schedule drawn once per grid index (seeded by draw); K rounds of N = 2T'/K "
                   "steps overlapping by N/2 cells; noise injection after every round; own grid of the drawn "
                   "levels, T' = T - 1 the paper's T, NFE = 2T'" +
                   (f"; {sweeps} Picard sweeps per round, each one parallel round" if parallel else "")),
        )

    def with_draw(self, draw: int) -> "LiJiaoRMP":
        """The same sampler with another schedule draw."""
        return type(self)(self.K, self.c0, self.c1, draw, self.sweeps)

    # ------------------------------------------------------------------ the grid
    def schedule(self, T: int) -> Schedule:
        """The schedule for a project T (grid levels): the paper's T - 1."""
        if isinstance(T, bool) or int(T) != T:
            raise SamplerError(f"T must be an integer (grid levels), got {T!r}")
        T = int(T)
        if T not in self._schedules:
            self._schedules[T] = make_schedule(T - 1, self.K, self.c0, self.c1, self.draw)
        return self._schedules[T]

    def own_grid(self, T: int) -> Grid:
        """The T drawn levels abar_(T'+1), ..., abar_1 (T' = T - 1, the paper's T): the start and the output level."""
        s = self.schedule(T)
        try:
            return Grid(s.grid_levels(), "lijiao-drawn",
                        {"K": s.K, "N": s.N, "c0": s.c0, "c1": s.c1, "draw": s.draw, "paper_T": s.T,
                         "tau_end": float(s.drawn(1))})
        except ScheduleError as err:
            raise SamplerError(f"{self.info.name} at T={T}: the drawn levels are not a grid ({err})") from None

    def _check_grid(self, grid: Grid) -> Schedule:
        own = self.own_grid(grid.T).abar
        if not torch.equal(grid.abar.detach().to("cpu", DTYPE), own):
            raise SamplerError(
                f"{self.info.name} runs on its own grid (the drawn levels of its schedule, draw={self.draw}); the "
                f"grid given ({grid.name}, T={grid.T}) is not it: pass sampler.own_grid(T) "
                "(samplers.base.sampler_grid does)")
        return self.schedule(grid.T)

    # ------------------------------------------------------------------ the chain
    def transitions(self, model: CountingModel, grid: Grid) -> Iterator[Transition]:
        s = self._check_grid(grid)
        device = grid.abar.device
        for k in range(s.K):
            taus, hats = (v.to(device) for v in s.round_levels(k))
            scale, std = noise_injection(taus[-1], taus[s.N // 2])  # up to tau_(k+1,0) = tau_(k,N/2)

            def round_map(y: Tensor, taus=taus, hats=hats, scale=scale) -> Tensor:
                if self.sweeps is None:
                    last = inner_update(model, y, taus.to(y.dtype), hats.to(y.dtype))[-1]
                else:
                    last = picard_update(model, y, taus.to(y.dtype), hats.to(y.dtype), self.sweeps)[-1]
                return scale.to(y.dtype) * last

            yield Transition(round_map, float(std))


@register("lijiao-rmp?")
def _lijiao(query: str) -> LiJiaoRMP:
    spec = "lijiao-rmp" + ("?" + query if query else "")
    options = parse_query(query, spec, "lijiao-rmp")
    K = _number(options, "K", DEFAULT_K, spec)
    c0, c1 = _number(options, "c0", DEFAULT_C0, spec), _number(options, "c1", DEFAULT_C1, spec)
    draw = _number(options, "draw", 0, spec)
    if options:
        raise SamplerError(f"unknown option {next(iter(options))!r} in {spec!r}: its options are K, c0, c1, draw")
    return LiJiaoRMP(K, c0, c1, draw)


@register("lijiao-rmp-parallel?")
def _lijiao_parallel(query: str) -> LiJiaoRMP:
    spec = "lijiao-rmp-parallel" + ("?" + query if query else "")
    options = parse_query(query, spec, "lijiao-rmp-parallel")
    K, M = _number(options, "K", DEFAULT_K, spec), _number(options, "M", DEFAULT_SWEEPS, spec)
    c0, c1 = _number(options, "c0", DEFAULT_C0, spec), _number(options, "c1", DEFAULT_C1, spec)
    draw = _number(options, "draw", 0, spec)
    if options:
        raise SamplerError(f"unknown option {next(iter(options))!r} in {spec!r}: its options are K, M, c0, c1, draw")
    return LiJiaoRMP(K, c0, c1, draw, sweeps=M)
