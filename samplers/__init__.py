"""Samplers, one small module per family, registered by name (shared/spec/samplers.md).

    from samplers import get_sampler
    x_end = get_sampler("ode-accel")(model, grid, x_start, noise)
"""

from samplers.base import (  # noqa: F401
    REGISTRY,
    CountingModel,
    ExactModel,
    OWN_GRID,
    MarkovSampler,
    Model,
    Noise,
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
from samplers import li2023  # noqa: F401  (registers ode, ddim, ddpm, ode-accel, ddpm-accel)
from samplers import solvers  # noqa: F401  (registers euler, heun, dpm-solver-2, dpmpp-2m/3m, unipc, deis, ipndm, afs:)
from samplers import amed  # noqa: F401  (registers amed, amed-plugin:<base>, amed:<trained name>)
from samplers import diffusers  # noqa: F401  (registers the family diffusers:<Scheduler>; diffusers imported lazily)
