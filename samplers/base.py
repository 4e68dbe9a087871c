"""The seams every sampler is written against (shared/DESIGN.md).

- Model: anything with `eps(x, abar)` for a batch x (shape (n, ...)) at a scalar level abar; score and denoiser
  derive from it (shared/spec/samplers.md section 1). A model may also offer `eps_and_features(x, abar)`.
- CountingModel: wraps a model and counts evaluations (NFE) and sequential rounds (batches of evaluations that can
  run at once: every evaluation is its own round, except those a sampler makes inside `model.parallel()`, which
  together are one); samplers never count for themselves.
- Noise: an injected source of standard normals, so runs are reproducible and exact engines can script it.
- Sampler: `(model, grid, x_start, noise) -> x_end` with declared metadata (SamplerInfo).
- MarkovSampler: a stochastic sampler written as a chain of Gaussian transitions x -> map(x) + std * Z, which is
  the form the exact 1-D density engine and the Gaussian engine consume.
- RandomizedSampler: a sampler whose randomness is a few auxiliary draws per step and sample (a random time, e.g. a
  randomized midpoint, or normals that enter before a score evaluation), given which each step is a Gaussian
  transition; its output law is a mixture over the draws, which the 1-D randomized engine (exact.randomized_1d)
  integrates by quadrature.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from theory.fingerprint import digest
from theory.schedules import Grid, make_grid
from theory.targets import GaussianMixture


class SamplerError(ValueError):
    """An unknown sampler, or a sampler asked to run where it cannot."""


# ---------------------------------------------------------------------------- models
@runtime_checkable
class Model(Protocol):
    def eps(self, x: Tensor, abar: Tensor) -> Tensor: ...


class ExactModel:
    """The exact noise prediction of a Gaussian-mixture target; its features are the responsibilities."""

    def __init__(self, target: GaussianMixture):
        self.target = target

    def eps(self, x: Tensor, abar: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        return self.target.eps(flat, abar).reshape(x.shape)

    def eps_and_features(self, x: Tensor, abar: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.reshape(x.shape[0], -1)
        return self.target.eps(flat, abar).reshape(x.shape), self.target.responsibilities(flat, abar)


class CountingModel:
    """Counts model evaluations: one per call on a batch, whatever the batch size; and sequential rounds: one per
    evaluation, except that the evaluations made inside one `parallel()` block count as a single round (they do not
    depend on each other, so with enough devices they run at once: e.g. a Picard sweep over a block's nodes)."""

    def __init__(self, model: Model):
        self.model = model.model if isinstance(model, CountingModel) else model
        self.nfe = 0
        self.rounds = 0
        self._parallel = False

    def _count(self) -> None:
        self.nfe += 1
        if not self._parallel:
            self.rounds += 1

    @contextmanager
    def parallel(self) -> Iterator[None]:
        """The evaluations made inside are independent of each other: together they are one sequential round (none
        if there are none). A nested block is part of the outer one."""
        if self._parallel:
            yield
            return
        self._parallel, before = True, self.nfe
        try:
            yield
        finally:
            self._parallel = False
            if self.nfe > before:
                self.rounds += 1

    def eps(self, x: Tensor, abar) -> Tensor:
        self._count()
        return self.model.eps(x, torch.as_tensor(abar, dtype=x.dtype, device=x.device))

    def eps_and_features(self, x: Tensor, abar) -> tuple[Tensor, Tensor | None]:
        """eps and the model's feature vector (None when the model has none); one evaluation."""
        self._count()
        abar = torch.as_tensor(abar, dtype=x.dtype, device=x.device)
        if hasattr(self.model, "eps_and_features"):
            return self.model.eps_and_features(x, abar)
        return self.model.eps(x, abar), None

    def score(self, x: Tensor, abar) -> Tensor:
        """s = -eps / sqrt(1 - abar)."""
        abar = torch.as_tensor(abar, dtype=x.dtype, device=x.device)
        return -self.eps(x, abar) / torch.sqrt(1 - abar)

    def score_per_sample(self, x: Tensor, abar: Tensor) -> Tensor:
        """s(x_i, abar_i) for a batch whose samples sit at their own levels (abar of shape (n,)): one evaluation,
        as a network that takes a noise level per sample spends; a model that answers one level at a time is asked
        once per distinct level."""
        abar = torch.as_tensor(abar, dtype=x.dtype, device=x.device).reshape(-1)
        if abar.numel() != x.shape[0]:
            raise SamplerError(f"one level per sample: got {abar.numel()} levels for a batch of {x.shape[0]}")
        self._count()
        out = torch.empty_like(x)
        levels, index = torch.unique(abar, return_inverse=True)
        for k, level in enumerate(levels):
            rows = index == k
            out[rows] = -self.model.eps(x[rows], level) / torch.sqrt(1 - level)
        return out

    def denoiser(self, x: Tensor, abar) -> Tensor:
        """Tweedie: D = (x - sqrt(1 - abar) eps) / sqrt(abar)."""
        abar = torch.as_tensor(abar, dtype=x.dtype, device=x.device)
        return (x - torch.sqrt(1 - abar) * self.eps(x, abar)) / torch.sqrt(abar)


def as_counting(model: Model | GaussianMixture) -> CountingModel:
    if isinstance(model, GaussianMixture):
        model = ExactModel(model)
    return model if isinstance(model, CountingModel) else CountingModel(model)


# ---------------------------------------------------------------------------- noise
class Noise:
    """Standard normal draws from a seeded generator, one tensor shaped like x per call; `uniform` draws U[0, 1)
    from the same generator (randomized samplers take their random times from it)."""

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu"):
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=self.generator)

    def uniform(self, like: Tensor) -> Tensor:
        return torch.rand(like.shape, dtype=like.dtype, device=like.device, generator=self.generator)


class ZeroNoise:
    """No noise at all: a stochastic sampler run on its means (normal draws 0, uniform draws 1/2)."""

    def __call__(self, like: Tensor) -> Tensor:
        return torch.zeros_like(like)

    def uniform(self, like: Tensor) -> Tensor:
        return torch.full_like(like, 0.5)


class ScriptedNoise:
    """Replays given draws in order (exact engines run samplers on basis vectors this way); uniform draws replay
    from their own list."""

    def __init__(self, draws: list[Tensor], uniforms: list[Tensor] | None = None):
        self.draws = list(draws)
        self.uniforms = list(uniforms or [])
        self.used = 0
        self.used_uniforms = 0

    def __call__(self, like: Tensor) -> Tensor:
        if self.used >= len(self.draws):
            raise SamplerError(f"scripted noise ran out after {self.used} draws")
        draw = self.draws[self.used]
        self.used += 1
        return draw.expand_as(like)

    def uniform(self, like: Tensor) -> Tensor:
        if self.used_uniforms >= len(self.uniforms):
            raise SamplerError(f"scripted noise ran out of uniform draws after {self.used_uniforms}")
        draw = self.uniforms[self.used_uniforms]
        self.used_uniforms += 1
        return torch.as_tensor(draw, dtype=like.dtype, device=like.device).expand_as(like)


class RecordingNoise:
    """Seeded standard normal draws (as Noise) that are also kept, so that a run can be replayed on transformed
    coordinates (exact engines check a sampler's premises this way)."""

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu"):
        self.noise = Noise(seed, device)
        self.draws: list[Tensor] = []

    def __call__(self, like: Tensor) -> Tensor:
        draw = self.noise(like)
        self.draws.append(draw)
        return draw


# ---------------------------------------------------------------------------- samplers
@dataclass(frozen=True)
class SamplerInfo:
    name: str
    stochastic: bool
    evals_per_step: int
    order: float  # the order in the step size that the sampler is expected to reach (TV, exact scores)
    reference: str
    theorems: tuple[str, ...] = ()  # ids in theory.bounds that cover the sampler
    multistep: bool = False
    notes: str = ""


@dataclass
class Transition:
    """One Gaussian transition x -> map(x) + std * Z (map None means the identity)."""

    map: Callable[[Tensor], Tensor] | None
    std: Tensor | float


class Sampler:
    """A sampler: grid in, sample out. Subclasses set `info` and implement `run`."""

    info: SamplerInfo

    def __call__(self, model, grid: Grid, x_start: Tensor, noise=None) -> Tensor:
        model = as_counting(model)
        if self.info.stochastic and noise is None:
            raise SamplerError(f"sampler {self.info.name!r} is stochastic: pass a noise source (e.g. Noise(seed))")
        return self.run(model, grid, x_start, noise)

    def run(self, model: CountingModel, grid: Grid, x: Tensor, noise) -> Tensor:
        raise NotImplementedError  # abstract: every registered sampler overrides it

    def nfe(self, grid: Grid) -> int:
        """Evaluations spent on a grid, by running on one point with a fresh counter (never by arithmetic)."""
        return self._counted_run(grid).nfe

    def sequential_rounds(self, grid: Grid) -> int:
        """Sequential rounds spent on a grid (CountingModel: evaluations made inside one `parallel()` block count
        once), by running on one point with a fresh counter; equal to nfe for a sampler that never evaluates in
        parallel."""
        return self._counted_run(grid).rounds

    def _counted_run(self, grid: Grid) -> CountingModel:
        model = CountingModel(_NullModel())
        self.run(model, grid, torch.zeros(1, 1, dtype=grid.abar.dtype), ZeroNoise())
        return model

    def fingerprint(self) -> str:
        """A digest of what this sampler object is (theory.fingerprint): its class, its declared metadata and its
        options, i.e. the public attributes its constructor set (a tableau, a block size, a trained predictor's
        weights, a diffusers scheduler's configuration); not its registry name, and not its code (studies key that
        apart, by the source text of the modules its class rests on)."""
        options = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return digest("Sampler", type(self), self.info, options)

    def __repr__(self) -> str:
        return f"<sampler {self.info.name}>"


class _NullModel:
    def eps(self, x: Tensor, abar: Tensor) -> Tensor:
        return torch.zeros_like(x)


class MarkovSampler(Sampler):
    """A stochastic sampler given as Gaussian transitions; `run` applies them with injected noise."""

    def transitions(self, model: CountingModel, grid: Grid) -> Iterator[Transition]:
        raise NotImplementedError  # abstract

    def run(self, model: CountingModel, grid: Grid, x: Tensor, noise) -> Tensor:
        for step in self.transitions(model, grid):
            if step.map is not None:
                x = step.map(x)
            x = x + step.std * noise(x)
        return x


@dataclass
class RandomStep:
    """One step of a randomized sampler, x -> step(x, *draws) + std * Z (std 0: no Gaussian noise added last).

    The step's draws are `uniforms` uniform variables on [0, 1] (random times: one per sample, shape
    (n, 1, ..., 1), shared by every coordinate) followed by `normals` standard normal variables (one per sample and
    coordinate, shaped like x: noise that enters before a score evaluation, e.g. a stochastic Runge-Kutta stage),
    in that order; in a quadrature each draw is a scalar node instead. The draws of different steps are independent.
    Noise that is added last should go in `std`, not in `normals`: conditional on the draws the step is then a
    Gaussian transition, which keeps the averaged kernel smooth (a mixture of blurred push-forwards, not of point
    masses). When the variance of that last noise depends on the random times (a Brownian increment split at a
    random time: its part after the time), `std` is a function of the step's uniform draws, `std(*uniforms)`,
    returning one std per sample (shape (n, 1, ..., 1)) in a run, and a scalar at a quadrature node."""

    step: Callable[..., Tensor]
    std: Tensor | float | Callable[..., Tensor] = 0.0
    uniforms: int = 1
    normals: int = 0

    def std_at(self, uniforms) -> Tensor | float:
        """The std of the noise added last, given the step's uniform draws."""
        return self.std(*uniforms) if callable(self.std) else self.std


class RandomizedSampler(Sampler):
    """A sampler whose steps depend on a few auxiliary draws each (random times, and normals that enter before a
    score evaluation); `run` takes them from the injected noise (noise.uniform for times, one per sample; noise()
    for normals, one per coordinate), so runs are reproducible.

    The output law is a mixture over the draws. Because the draws of different steps are independent, the chain is
    Markov with each step's kernel averaged over its own draws: `transition_mixture` gives that average as a
    tensor-product quadrature, [(weight, map, std), ...] per step (Gauss-Legendre nodes for each uniform,
    Gauss-Hermite nodes for each normal), which is what the 1-D randomized engine pushes a density through.
    Subclasses implement `random_steps`."""

    def random_steps(self, model: CountingModel, grid: Grid) -> Iterator[RandomStep]:
        raise NotImplementedError  # abstract

    def run(self, model: CountingModel, grid: Grid, x: Tensor, noise) -> Tensor:
        for step in self.random_steps(model, grid):
            per_sample = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1))
            times = [noise.uniform(per_sample) for _ in range(step.uniforms)]
            draws = times + [noise(x) for _ in range(step.normals)]
            x = step.step(x, *draws)
            std = step.std_at(times)
            if bool(torch.any(torch.as_tensor(std) > 0)):
                x = x + std * noise(x)
        return x

    def transition_mixture(self, model: CountingModel, grid: Grid, nodes: int
                           ) -> Iterator[list[tuple[float, Callable[[Tensor], Tensor], float]]]:
        """Per step, the kernel averaged over its draws by a tensor-product rule with `nodes` points per draw
        (Gauss-Legendre on U[0, 1], Gauss-Hermite on N(0, 1)): [(w_j, x -> step(x, *draws_j), std), ...], weights
        summing to one."""
        u_nodes, u_weights = gauss_legendre_unit(nodes)
        z_nodes, z_weights = gauss_hermite_normal(nodes)
        dtype, device = grid.abar.dtype, grid.abar.device
        # Each node is a plain scalar (no tie to x), so forward-mode derivatives in x never flow through the draws.
        u_rule = [(torch.tensor(u, dtype=dtype, device=device), w) for u, w in zip(u_nodes, u_weights)]
        z_rule = [(torch.tensor(z, dtype=dtype, device=device), w) for z, w in zip(z_nodes, z_weights)]
        for step in self.random_steps(model, grid):
            rules = [u_rule] * step.uniforms + [z_rule] * step.normals
            mixture = []
            for combination in itertools.product(*rules):
                weight = math.prod(w for _, w in combination)
                draws = tuple(v for v, _ in combination)
                std = float(step.std_at(draws[: step.uniforms]))
                mixture.append((weight, (lambda x, draws=draws, s=step.step: s(x, *draws)), std))
            yield mixture


def gauss_legendre_unit(nodes: int) -> tuple[list[float], list[float]]:
    """Gauss-Legendre nodes and weights for the uniform law on [0, 1] (weights sum to one)."""
    if isinstance(nodes, bool) or int(nodes) != nodes or nodes < 1:
        raise SamplerError(f"the number of quadrature nodes must be a positive integer, got {nodes!r}")
    x, w = np.polynomial.legendre.leggauss(int(nodes))
    return [float(v) for v in (x + 1) / 2], [float(v) for v in w / 2]


def gauss_hermite_normal(nodes: int) -> tuple[list[float], list[float]]:
    """Gauss-Hermite nodes and weights for the standard normal law (probabilists' Hermite; weights sum to one)."""
    if isinstance(nodes, bool) or int(nodes) != nodes or nodes < 1:
        raise SamplerError(f"the number of quadrature nodes must be a positive integer, got {nodes!r}")
    x, w = np.polynomial.hermite_e.hermegauss(int(nodes))
    return [float(v) for v in x], [float(v) for v in w / w.sum()]


REGISTRY: dict[str, Callable[[], Sampler]] = {}


def register(name: str):
    """Class decorator: add a sampler (constructed without arguments) to the registry."""

    def decorate(factory):
        REGISTRY[name] = factory
        return factory

    return decorate


def get_sampler(name: str) -> Sampler:
    """A sampler by registry name; parametrised names (`family:arg`) go to the family's factory, and so do names
    with options in query form (`family?key=value&...`, the family registered as "family?"; the bare family name
    means every option at its default)."""
    if name in REGISTRY and not name[-1:] in (":", "?"):  # a bare family name ("afs:") has no argument to pass
        return REGISTRY[name]()
    family, _, query = name.partition("?")
    if family + "?" in REGISTRY:
        return REGISTRY[family + "?"](query)
    family, _, arg = name.partition(":")
    if arg and family + ":" in REGISTRY:
        return REGISTRY[family + ":"](arg)
    raise SamplerError(f"unknown sampler {name!r}: known samplers are {', '.join(known_sampler_names())}")


def known_sampler_names() -> list[str]:
    """The registered names as a refusal lists them: sorted, a query-form family as name[?options], the
    parametrised families (name:) left out."""
    return sorted(n if not n.endswith("?") else n[:-1] + "[?options]" for n in REGISTRY if not n.endswith(":"))


def parse_query(query: str, spec: str, family: str) -> dict:
    """The options of `spec`'s query part, `key=value&...` -> {key: value}, each value a JSON literal where it
    parses (true, 3, 0.5, null, [1, 2], "text") and the plain text otherwise; a malformed or repeated option raises
    a one-line SamplerError naming it."""
    options: dict = {}
    for item in filter(None, query.split("&")):
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise SamplerError(f"{family} option {item!r} in {spec!r} is not key=value")
        if key in options:
            raise SamplerError(f"{family} option {key!r} is given twice in {spec!r}")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def sampler_names(stochastic: bool | None = None) -> list[str]:
    names = [n for n in REGISTRY if not n.endswith((":", "?"))]
    if stochastic is None:
        return names
    return [n for n in names if get_sampler(n).info.stochastic == stochastic]


# ---------------------------------------------------------------------------- the grid a sampler runs on
OWN_GRID = "own-grid"  # the schedule label of a sampler that builds its own grid (e.g. a diffusers scheduler)


def sampler_grid(sampler: Sampler | None, T: int, schedule: str, **params) -> Grid:
    """The grid of T levels that `sampler` runs on: its own when it builds one (`own_grid(T)`: a diffusers scheduler's
    timesteps), else the schedule's, make_grid(schedule, T, **params). Studies that may run such samplers ask here."""
    own = getattr(sampler, "own_grid", None)
    if own is not None:
        return own(T)
    return make_grid(schedule, T, **params)


def schedule_label(sampler: Sampler | None, schedule: str) -> str:
    """What a results row records as the schedule: OWN_GRID for a sampler with its own grid, else the schedule."""
    return OWN_GRID if getattr(sampler, "own_grid", None) is not None else schedule
