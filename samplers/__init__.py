"""Samplers, one small module per family, registered by name (shared/spec/samplers.md).

    from samplers import get_sampler
    x_end = get_sampler("ode-accel")(model, grid, x_start, noise)
"""

from samplers import (
    amed,  # noqa: F401  (registers amed, amed-plugin:<base>, amed:<trained name>)
    ddram,  # noqa: F401  (registers ddpm-rmp, ddpm-rmp:<linear>-<time>)
    diffusers,  # noqa: F401  (registers the family diffusers:<Scheduler>; diffusers imported lazily)
    expint,  # noqa: F401  (registers expint:<p>, order-p exponential Runge-Kutta)
    li2023,  # noqa: F401  (registers ode, ddim, ddpm, ddpm-posterior, ode-accel, ddpm-accel)
    lijiao,  # noqa: F401  (registers the families lijiao-rmp[?K=..&c0=..&c1=..&draw=..] and lijiao-rmp-parallel[?...])
    picard,  # noqa: F401  (registers picard, picard:K,B: parallel Picard sweeps of the probability-flow ODE)
    randomized_midpoint,  # noqa: F401  (registers ode-rmp, ode-rmp-is)
    renoise,  # noqa: F401  (registers ode-renoise: ODE step past the next level, then forward noising back)
    solvers,  # noqa: F401  (registers euler, heun, dpm-solver-2, dpmpp-2m/3m, unipc, deis, ipndm, afs:)
)
from samplers.base import (  # noqa: F401
    OWN_GRID,
    REGISTRY,
    CountingModel,
    ExactModel,
    MarkovSampler,
    Model,
    Noise,
    RandomizedSampler,
    RandomStep,
    RecordingNoise,
    Sampler,
    SamplerError,
    SamplerInfo,
    ScriptedNoise,
    Transition,
    ZeroNoise,
    as_counting,
    get_sampler,
    register,
    sampler_grid,
    sampler_names,
    schedule_label,
)
