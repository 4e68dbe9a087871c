"""Samplers, one small module per family, registered by name (shared/spec/samplers.md).

    from samplers import get_sampler
    x_end = get_sampler("ode-accel")(model, grid, x_start, noise)
"""

from samplers.base import (  # noqa: F401
    REGISTRY,
    CountingModel,
    ExactModel,
    MarkovSampler,
    Model,
    Noise,
    RandomizedSampler,
    RandomStep,
    Sampler,
    SamplerError,
    SamplerInfo,
    ScriptedNoise,
    Transition,
    ZeroNoise,
    as_counting,
    get_sampler,
    register,
    sampler_names,
)
from samplers import li2023  # noqa: F401  (registers ode, ddim, ddpm, ode-accel, ddpm-accel)
from samplers import solvers  # noqa: F401  (registers euler, heun, dpm-solver-2, dpmpp-2m/3m, unipc, deis, ipndm, afs:)
from samplers import amed  # noqa: F401  (registers amed, amed-plugin:<base>, amed:<trained name>)
from samplers import expint  # noqa: F401  (registers expint:<p>, order-p exponential Runge-Kutta)
from samplers import randomized_midpoint  # noqa: F401  (registers ode-rmp, ode-rmp-is)
