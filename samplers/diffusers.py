"""diffusers schedulers as samplers: the scheduler's own `set_timesteps()` and `step()` on the project's model, in
float64, so that every exact engine, study and figure can measure them.

    get_sampler("diffusers:DPMSolverMultistepScheduler")
    get_sampler("diffusers:DPMSolverMultistepScheduler?solver_order=3&use_karras_sigmas=true")
    get_sampler("diffusers:path/to/scheduler_config.json")            # as written by scheduler.save_config(dir)
    get_sampler("diffusers:path/to/scheduler_config.json?solver_order=1")  # file, then overrides

Options are the scheduler's constructor (config) keys, plus the few step() arguments listed per class below; each
value is read as a JSON literal where it parses (true, 3, 0.5, null, [1, 2], "text") and as a plain string
otherwise. diffusers is a test extra: it is imported inside the factory, never at import time.

The grid. A scheduler builds its own timesteps, so the sampler owns its grid: `own_grid(T)` is the scheduler's grid
with T levels, i.e. `set_timesteps(num_inference_steps = T - 1)` (T counts levels, as everywhere in the project,
and a one-evaluation scheduler then spends T - 1 = num_inference_steps evaluations). Its levels, noisiest first:

- timestep-indexed schedulers (DDIM, DDPM): abar = alphas_cumprod[t] at each timestep, then the level the last step
  lands on (DDIM: alphas_cumprod[t - n_train // n] or final_alpha_cumprod, which is 1 with set_alpha_to_one;
  DDPM: 1);
- sigma schedulers (DPM-Solver, UniPC, DEIS, Euler, LMS, Euler ancestral): the scheduler's `sigmas`, final sigma
  included (0 means abar = 1), abar = 1 / (1 + sigma^2);
- Heun: its sigmas are interleaved (every interior sigma twice): the levels are every other one, then the last.

These are the scheduler's own numbers (diffusers builds betas and sigmas in float32: the grid holds those values
exactly, widened to float64). `run` refuses any other grid with a SamplerError, since the exact engines compare the
output with q at the grid's last level and start from q at its first. Studies obtain the grid through
`samplers.base.sampler_grid(sampler, T, schedule)`, which asks `own_grid` when a sampler has one.

DDIM with timestep_spacing 'linspace' or 'trailing' (not the default 'leading'): step i lands on
alphas_cumprod[t_i - n_train // n] while step i + 1 reads its input as lying at alphas_cumprod[t_(i+1)], a different
level. That is diffusers' own behaviour and part of what is measured; the grid records the step starts and the final
landing level, and `grid.params["landing_mismatches"]` counts the steps where the two differ.

The model. The project's Model answers eps(x, abar) for the VP x at level abar. At each call the scheduler's
`scale_model_input(sample, t)` gives the model input (the VP x for DDPM-family schedulers, whose sample is the VP x;
sample / sqrt(1 + sigma^2) for Karras-style schedulers, whose sample is the VE x = x / sqrt(abar)), and the level is
the one the scheduler's update assumes (alphas_cumprod[t], or 1 / (1 + sigma_i^2) with sigma_i the scheduler's sigma
of that call: not the rounded timestep a trained network would be given). The answer goes back in the scheduler's
prediction_type, with D = (x - sqrt(1 - abar) eps) / sqrt(abar) (Tweedie):
    epsilon: eps;   sample: D;   v_prediction: v = sqrt(abar) eps - sqrt(1 - abar) D.
The VP state handed in is converted to the scheduler's sample at the first level (x / sqrt(abar_0) for Karras-style
schedulers, exactly, rather than diffusers' init_noise_sigma) and back at the last.

float64, per scheduler. After set_timesteps every floating tensor of the scheduler (betas, alphas_cumprod, sigmas,
timesteps, ...) is widened to float64, exactly, so that the coefficients step() computes from them (1 - abar,
square roots, exponentials) are float64 arithmetic; and step() runs under a torch-function mode that turns a
float64 -> float32 cast into a no-op. That cast sits in DPMSolverMultistepScheduler.step, EulerDiscreteScheduler.step
and EulerAncestralDiscreteScheduler.step ("Upcast to avoid precision issues", a downcast for float64 input): left in
place it costs float32 rounding, 2e-7 on mix1d at 10 DPM-Solver++ steps (tests/test_diffusers_samplers.py measures it
and tests/test_diffusers_crosscheck.py documents it). DDIM, DDPM, DPMSolverSinglestep, UniPC, DEIS, Heun and LMS
have no such cast in step(): the widening is all they need. With both, DDIM, DPM-Solver++(2M), UniPC, Euler and Heun
agree with the project's ddim, dpmpp-2m, unipc, euler and heun to 1e-10 on the scheduler's grid. The same mode
replaces every torch.randn inside step(): by a refusal for deterministic schedulers (a scheduler that draws noise in
a run declared deterministic is an error), and by the scripted values below for stochastic ones.

Stochastic schedulers are MarkovSampler transitions x -> map(x) + std Z, which is what the 1-D kernel engine and the
Gaussian engine consume: map is the scheduler's step() with its noise draw replaced by zeros, std its coefficient on
that draw (step with ones minus step with zeros, checked to be the same at a second state: a noise scale that
depends on the state would be refused). The noise Z comes from the injected Noise, never from a generator inside the
scheduler, so runs are reproducible and the engines can script it.

Covered (sample: the scheduler's state, VP x or VE x / sqrt(abar); order: declared, in the step size; NFE per step):

| scheduler | sample | run as | order | NFE |
|---|---|---|---|---|
| DDIMScheduler | VP | deterministic (eta = 0); Markov with the step option eta > 0 | 1 | 1 |
| DDPMScheduler | VP | Markov (fixed_small / fixed_large / fixed_small_log; learned refused) | 1 | 1 |
| DPMSolverMultistepScheduler | VP | deterministic; Markov for sde-* at solver_order 1 (a) | solver_order | 1 |
| DPMSolverSinglestepScheduler | VP | deterministic (sde-dpmsolver++ refused, (a)) | solver_order | 1 |
| UniPCMultistepScheduler | VP | deterministic | solver_order (+1 with UniC) | 1 |
| DEISMultistepScheduler | VP | deterministic | solver_order | 1 |
| EulerDiscreteScheduler | VE | deterministic (s_churn = 0) | 1 | 1 |
| HeunDiscreteScheduler | VE | deterministic | 2 | 2 (1 on the last step, to sigma 0) |
| LMSDiscreteScheduler | VE | deterministic, step option `order` (default 4) (b) | order | 1 |
| EulerAncestralDiscreteScheduler | VE | Markov | 1 | 1 |

(a) a stochastic update that uses earlier model outputs is not a Gaussian transition of the current state alone.
(b) diffusers integrates the LMS coefficients with scipy quad at epsrel 1e-4: the scheme carries that error.

The declared order is that of the scheme in the step size; several defaults lower the last steps (lower_order_final,
a final step to sigma = 0 taken at first order), which the measured errors show. Refused with a one-line
SamplerError: class names that are not diffusers schedulers, schedulers not in the table (a reason where one is
known: torchsde noise, flow matching, consistency models, interpolated sigmas), options that are neither config keys
nor the listed step options, prediction types other than epsilon / sample / v_prediction, flow sigmas, learned
variances, and configs whose sigmas repeat (a zero-length step) or give another number of steps than asked.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch
from torch import Tensor
from torch.autograd import forward_ad
from torch.overrides import TorchFunctionMode

from samplers.base import (CountingModel, MarkovSampler, Sampler, SamplerError, SamplerInfo, Transition, parse_query,
                           register)
from theory.schedules import DTYPE, Grid, ScheduleError

PREDICTIONS = ("epsilon", "sample", "original_sample", "v_prediction")


# ---------------------------------------------------------------------------- float64 steps, scripted noise
class _Float64Steps(TorchFunctionMode):
    """Inside step(): a cast of a float64 tensor to float32 is a no-op, and torch.randn / randn_like give the scripted
    value (`fill`: zeros for the transition's mean, ones for its noise coefficient) or, with fill None, refuse."""

    _CASTS = (torch.Tensor.to, torch.Tensor.type, torch.Tensor.float)
    _DRAWS = (torch.randn, torch.randn_like)

    def __init__(self, what: str, fill: float | None = None):
        super().__init__()
        self.what = what
        self.fill = fill
        self.draws = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._CASTS and args and isinstance(args[0], Tensor) and args[0].dtype == torch.float64:
            if func is torch.Tensor.float:
                return args[0]
            args = tuple(torch.float64 if a is torch.float32 else a for a in args)
            if kwargs.get("dtype") is torch.float32:
                kwargs = {**kwargs, "dtype": torch.float64}
        elif func is torch.Tensor.__array__ and _is_wrapped(args[0]):
            return _numpy_of_constant(args[0], self.what, *args[1:], **kwargs)
        elif func in self._DRAWS:
            if self.fill is None:
                raise SamplerError(f"{self.what} drew random noise inside step() in a run declared deterministic")
            self.draws += 1
            if func is torch.randn_like:
                return torch.full_like(args[0], self.fill, dtype=DTYPE)
            size = kwargs.get("size", args[0] if len(args) == 1 and not isinstance(args[0], int) else args)
            return torch.full(tuple(size), self.fill, dtype=DTYPE, device=kwargs.get("device") or "cpu")
        return func(*args, **kwargs)


def _is_wrapped(tensor: Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(tensor)


def _numpy_of_constant(tensor: Tensor, what: str, *args, **kwargs):
    """numpy's view of a tensor inside a torch.func transform (the 1-D flow engine differentiates runs with jvp, where
    every tensor is wrapped and has no storage). DEIS and LMS call numpy and scipy on their coefficients, which do
    not depend on the state: those are unwrapped. A tensor that carries a tangent (it depends on the state) would
    lose its derivative in numpy, so it is refused."""
    if forward_ad.unpack_dual(tensor).tangent is not None:
        raise SamplerError(f"{what} hands a state-dependent tensor to numpy inside step(): the exact engines cannot "
                           "differentiate through it")
    dtype = kwargs.get("dtype", args[0] if args else None)
    return numpy.asarray(tensor.tolist(), dtype=dtype if dtype is not None else numpy.float64)  # exact for float64


def _widen(scheduler) -> None:
    """Every floating tensor attribute of the scheduler to float64 (exact: float32 values are float64 values)."""
    for name, value in list(vars(scheduler).items()):
        if isinstance(value, Tensor) and value.is_floating_point() and value.dtype != DTYPE:
            setattr(scheduler, name, value.to(DTYPE))


def model_output(eps: Tensor, x: Tensor, abar: Tensor, prediction_type: str) -> Tensor:
    """The exact model's answer in the scheduler's convention, at the VP input x and level abar:
    epsilon -> eps; sample -> D = (x - sqrt(1 - abar) eps) / sqrt(abar); v_prediction -> sqrt(abar) eps -
    sqrt(1 - abar) D (Salimans & Ho 2022, arXiv 2202.00512, section 4)."""
    if prediction_type == "epsilon":
        return eps
    denoised = (x - torch.sqrt(1 - abar) * eps) / torch.sqrt(abar)
    if prediction_type in ("sample", "original_sample"):
        return denoised
    return torch.sqrt(abar) * eps - torch.sqrt(1 - abar) * denoised


# ---------------------------------------------------------------------------- what is covered, and how
def _alphas_level(scheduler, i: int, t) -> Tensor:
    return scheduler.alphas_cumprod[int(t)]


def _sigma_level(scheduler, i: int, t) -> Tensor:
    return 1.0 / (1.0 + scheduler.sigmas[i] ** 2)


def _ddim_landings(scheduler) -> Tensor:
    """The level each DDIM step lands on: alphas_cumprod[t - n_train // n], or final_alpha_cumprod below 0."""
    ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    out = [scheduler.alphas_cumprod[int(t) - ratio] if int(t) - ratio >= 0 else scheduler.final_alpha_cumprod
           for t in scheduler.timesteps]
    return torch.stack([torch.as_tensor(a, dtype=DTYPE) for a in out])


def _ddpm_landings(scheduler) -> Tensor:
    out = []
    for t in scheduler.timesteps:
        prev = int(scheduler.previous_timestep(t))
        out.append(scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.one)
    return torch.stack([torch.as_tensor(a, dtype=DTYPE) for a in out])


def _refuse_sde_multistep(config) -> str | None:
    if str(config.get("algorithm_type", "")).startswith("sde") and int(config.get("solver_order", 1)) > 1:
        return (f"algorithm_type={config['algorithm_type']!r} with solver_order={config['solver_order']} is "
                "stochastic and multistep: each update uses earlier model outputs, so it is not a chain of Gaussian "
                "transitions of the current state (use solver_order=1)")
    return None


def _refuse_order(config) -> str | None:
    if int(config.get("solver_order", 1)) not in (1, 2, 3):
        return f"solver_order={config['solver_order']}: this scheduler implements orders 1, 2 and 3"
    return None


def _refuse_sde(config) -> str | None:
    if str(config.get("algorithm_type", "")).startswith("sde"):
        return (f"algorithm_type={config['algorithm_type']!r}: the singlestep SDE update starts every stage from the "
                "group's first state, so it is not a chain of Gaussian transitions of the current state")
    return None


def _refuse_learned_variance(config) -> str | None:
    if str(config.get("variance_type")).startswith("learned"):
        return f"variance_type={config['variance_type']!r} needs a model that predicts its variance"
    return None


@dataclass(frozen=True)
class Coverage:
    """How one scheduler class is driven: the coordinates of its sample ('vp' or 've'), the level of each model call,
    the grid's levels, and its metadata as functions of the resolved config (and step options)."""

    sample: str  # "vp": the sample is the VP x; "ve": it is x / sqrt(abar) (Karras-style)
    level: Callable  # (scheduler, call index, timestep) -> abar of that model call
    grid: str  # "alphas", "sigmas" or "sigma-pairs"
    order: Callable[[dict, dict], float]
    stochastic: Callable[[dict, dict], bool]
    reference: str
    evals_per_step: int = 1
    multistep: Callable[[dict], bool] = lambda config: False
    landings: Callable | None = None  # for "alphas" grids: the level each step lands on
    refuse: tuple[Callable[[dict], str | None], ...] = ()
    step_options: tuple[str, ...] = ()
    notes: str = ""


COVERED: dict[str, Coverage] = {
    "DDIMScheduler": Coverage(
        "vp", _alphas_level, "alphas", order=lambda c, s: 1.0,
        stochastic=lambda c, s: float(s.get("eta", 0.0)) > 0, landings=_ddim_landings, step_options=("eta",),
        reference="Song, Meng, Ermon 2021 (arXiv 2010.02502); diffusers DDIMScheduler"),
    "DDPMScheduler": Coverage(
        "vp", _alphas_level, "alphas", order=lambda c, s: 1.0, stochastic=lambda c, s: True,
        landings=_ddpm_landings, refuse=(_refuse_learned_variance,),
        reference="Ho, Jain, Abbeel 2020 (arXiv 2006.11239); diffusers DDPMScheduler"),
    "DPMSolverMultistepScheduler": Coverage(
        "vp", _sigma_level, "sigmas",
        order=lambda c, s: 1.0 if str(c["algorithm_type"]).startswith("sde") else float(c["solver_order"]),
        stochastic=lambda c, s: str(c["algorithm_type"]).startswith("sde"),
        multistep=lambda c: int(c["solver_order"]) > 1,
        refuse=(_refuse_order, _refuse_sde_multistep, _refuse_learned_variance),
        reference="Lu et al. 2022 (arXiv 2206.00927, 2211.01095); diffusers DPMSolverMultistepScheduler"),
    "DPMSolverSinglestepScheduler": Coverage(
        "vp", _sigma_level, "sigmas", order=lambda c, s: float(c["solver_order"]), stochastic=lambda c, s: False,
        multistep=lambda c: int(c["solver_order"]) > 1, refuse=(_refuse_order, _refuse_sde, _refuse_learned_variance),
        reference="Lu et al. 2022 (arXiv 2206.00927, 2211.01095); diffusers DPMSolverSinglestepScheduler",
        notes="singlestep: a group's later stages reuse the model outputs taken at the group's earlier grid points"),
    "UniPCMultistepScheduler": Coverage(
        "vp", _sigma_level, "sigmas",
        order=lambda c, s: float(c["solver_order"]) + (0.0 if c.get("disable_corrector") else 1.0),
        stochastic=lambda c, s: False, multistep=lambda c: True,
        reference="Zhao et al. 2023 (arXiv 2302.04867); diffusers UniPCMultistepScheduler",
        notes="UniP-p with UniC: order p + 1 (Zhao et al., Theorem 3.1); no corrector on the last step"),
    "DEISMultistepScheduler": Coverage(
        "vp", _sigma_level, "sigmas", order=lambda c, s: float(c["solver_order"]), stochastic=lambda c, s: False,
        multistep=lambda c: int(c["solver_order"]) > 1, refuse=(_refuse_order,),
        reference="Zhang & Chen 2023 (arXiv 2204.13902), log-rho DEIS; diffusers DEISMultistepScheduler"),
    "EulerDiscreteScheduler": Coverage(
        "ve", _sigma_level, "sigmas", order=lambda c, s: 1.0, stochastic=lambda c, s: False,
        reference="Karras et al. 2022 (arXiv 2206.00364); diffusers EulerDiscreteScheduler"),
    "HeunDiscreteScheduler": Coverage(
        "ve", _sigma_level, "sigma-pairs", order=lambda c, s: 2.0, stochastic=lambda c, s: False, evals_per_step=2,
        reference="Karras et al. 2022 (arXiv 2206.00364), Algorithm 1; diffusers HeunDiscreteScheduler",
        notes="the last step, to sigma = 0, is a plain Euler step: 2 (T - 1) - 1 evaluations"),
    "LMSDiscreteScheduler": Coverage(
        "ve", _sigma_level, "sigmas", order=lambda c, s: float(s.get("order", 4)), stochastic=lambda c, s: False,
        multistep=lambda c: True, step_options=("order",),
        reference="linear multistep in sigma (Karras et al. 2022; k-diffusion); diffusers LMSDiscreteScheduler",
        notes="coefficients integrated by scipy quad at epsrel 1e-4 inside diffusers"),
    "EulerAncestralDiscreteScheduler": Coverage(
        "ve", _sigma_level, "sigmas", order=lambda c, s: 1.0, stochastic=lambda c, s: True,
        reference="Karras et al. 2022 (arXiv 2206.00364), ancestral sampling; diffusers "
                  "EulerAncestralDiscreteScheduler"),
}

# Schedulers known not to fit, with the reason given when they are asked for.
NOT_COVERED = {
    "DPMSolverSDEScheduler": "it draws its noise from a torchsde Brownian tree inside step(), which cannot be "
                             "injected or scripted by the exact engines",
    "KDPM2DiscreteScheduler": "its second model call sits at interpolated sigmas (sigmas_interpol) that this wrapper "
                              "does not read",
    "KDPM2AncestralDiscreteScheduler": "its second model call sits at interpolated sigmas (sigmas_interpol) that this "
                                       "wrapper does not read",
    "PNDMScheduler": "its pseudo Runge-Kutta warm-up and repeated timesteps keep state between calls at half steps",
    "LCMScheduler": "it is built for consistency-distilled models (x_0 in one call, re-noised by its own generator)",
    "TCDScheduler": "it is built for consistency-distilled models (x_0 in one call, re-noised by its own generator)",
    "CMStochasticIterativeScheduler": "it is built for consistency models, not for a noise-prediction model",
    "FlowMatchEulerDiscreteScheduler": "it integrates a flow-matching process x_t = (1 - t) x_0 + t z, not the VP "
                                       "process of the project's models",
    "FlowMatchHeunDiscreteScheduler": "it integrates a flow-matching process x_t = (1 - t) x_0 + t z, not the VP "
                                      "process of the project's models",
    "ScoreSdeVeScheduler": "it is a VE-SDE predictor-corrector with Langevin steps, not covered",
    "SASolverScheduler": "its stochastic multistep updates use earlier model outputs (not Gaussian transitions of the "
                         "current state), not covered",
    "EDMEulerScheduler": "it expects EDM-preconditioned network outputs, not covered",
    "EDMDPMSolverMultistepScheduler": "it expects EDM-preconditioned network outputs, not covered",
}


def _common_refusals(config: dict) -> str | None:
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTIONS:
        return f"prediction_type={kind!r} is not a noise, data or v prediction of the VP process"
    for key in ("use_flow_sigmas", "use_dynamic_shifting"):
        if config.get(key):
            return f"{key}=true belongs to flow matching, not to the VP process"
    if config.get("thresholding"):
        return ("thresholding=true (dynamic thresholding) works per image on (batch, channels, ...) samples; "
                "not covered")
    return None


# ---------------------------------------------------------------------------- parsing a name
def parse_spec(spec: str) -> tuple[str, dict, str]:
    """`Class[?k=v&...]` or `path.json[?k=v&...]` -> (class name, options from the file then the query, source)."""
    base, _, query = spec.partition("?")
    options: dict = {}
    source = base
    if base.endswith(".json") or "/" in base or Path(base).is_file():
        path = Path(base)
        if not path.is_file():
            raise SamplerError(f"diffusers scheduler config {base!r}: no such file")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SamplerError(f"diffusers scheduler config {base!r} is not readable JSON: {err}") from None
        if not isinstance(data, dict) or "_class_name" not in data:
            raise SamplerError(f"diffusers scheduler config {base!r} has no '_class_name' (write it with save_config)")
        class_name = str(data["_class_name"])
        options = {k: v for k, v in data.items() if not k.startswith("_")}
    else:
        class_name = base
    if not class_name:
        raise SamplerError(f"diffusers sampler {spec!r} names no scheduler class (e.g. diffusers:DDIMScheduler)")
    options.update(parse_query(query, spec, "diffusers"))
    return class_name, options, source


def _scheduler_class(class_name: str):
    try:
        import diffusers
    except ImportError:
        raise SamplerError("diffusers samplers need the diffusers package (a test extra: pip install diffusers)") \
            from None
    if class_name in NOT_COVERED:  # before the lookup: some (DPMSolverSDEScheduler) need packages not installed
        raise SamplerError(f"diffusers scheduler {class_name} is not covered: {NOT_COVERED[class_name]}")
    cls = getattr(diffusers, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, diffusers.SchedulerMixin)):
        raise SamplerError(f"unknown diffusers scheduler {class_name!r}: diffusers {diffusers.__version__} has no "
                           "scheduler class of that name")
    if class_name not in COVERED:
        raise SamplerError(f"diffusers scheduler {class_name} is not covered; covered are {', '.join(COVERED)}")
    return cls


def _config_keys(cls) -> list[str]:
    return [name for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@contextlib.contextmanager
def _quiet():
    """diffusers' notices on stderr while a scheduler is built or set (deprecations such as algorithm_type=
    'dpmsolver'; DPMSolverSinglestep's "Changing scheduler ... lower_order_final"): the resolved config, which the
    sampler reads afterwards, already says what they say."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        diffusers_logging.set_verbosity(level)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# ---------------------------------------------------------------------------- the samplers
@dataclass
class _Prepared:
    scheduler: object  # set_timesteps done, tensors widened; deep-copied for every run
    grid: Grid


class DiffusersSampler(Sampler):
    """A diffusers scheduler run by its own set_timesteps() and step() on the project's model (module docstring)."""

    def __init__(self, name: str, class_name: str, scheduler, coverage: Coverage, step_options: dict):
        self.class_name = class_name
        self.scheduler = scheduler  # as constructed, before set_timesteps
        self.coverage = coverage
        self.step_options = dict(step_options)
        config = dict(scheduler.config)
        self.prediction_type = config.get("prediction_type", "epsilon")
        self.info = SamplerInfo(
            name, stochastic=coverage.stochastic(config, step_options), evals_per_step=coverage.evals_per_step,
            order=coverage.order(config, step_options), reference=coverage.reference,
            multistep=coverage.multistep(config), notes=coverage.notes)
        self._prepared: dict[int, _Prepared] = {}

    # ------------------------------------------------------------------ the grid
    def own_grid(self, T: int) -> Grid:
        """The scheduler's grid with T levels: set_timesteps(T - 1), levels as in the module docstring."""
        if isinstance(T, bool) or int(T) != T or T < 2:
            raise SamplerError(f"T must be an integer >= 2 (T levels, T - 1 inference steps), got {T!r}")
        return self._prepare(int(T) - 1).grid

    def _prepare(self, n: int) -> _Prepared:
        if n in self._prepared:
            return self._prepared[n]
        scheduler = copy.deepcopy(self.scheduler)
        try:
            with _quiet():
                scheduler.set_timesteps(n)
        except (ValueError, TypeError, IndexError, NotImplementedError) as err:
            raise SamplerError(f"{self.info.name}: set_timesteps({n}) failed ({_first_line(err)})") from None
        _widen(scheduler)
        abar = self._levels(scheduler)
        if abar.numel() != n + 1:
            raise SamplerError(f"{self.info.name}: num_inference_steps={n} gives {abar.numel() - 1} steps, "
                               f"not {n}, with this config")
        params = {"num_inference_steps": n, "scheduler": self.class_name}
        if self.coverage.landings is not None:
            landings = self.coverage.landings(scheduler)
            params["landing_mismatches"] = int((landings[:-1] != abar[1:-1]).sum())
        try:
            grid = Grid(abar, "scheduler:" + self.class_name, params)
        except ScheduleError as err:
            raise SamplerError(f"{self.info.name}: the scheduler's levels at num_inference_steps={n} are not a grid "
                               f"({err}; e.g. a repeated last sigma, a zero-length step)") from None
        self._prepared[n] = _Prepared(scheduler, grid)
        return self._prepared[n]

    def _levels(self, scheduler) -> Tensor:
        kind = self.coverage.grid
        if kind == "alphas":
            starts = torch.stack([scheduler.alphas_cumprod[int(t)] for t in scheduler.timesteps])
            return torch.cat([starts, self.coverage.landings(scheduler)[-1:]]).to(DTYPE)
        sigmas = scheduler.sigmas.to(DTYPE)
        if kind == "sigma-pairs":
            sigmas = torch.cat([sigmas[0:-1:2], sigmas[-1:]])
        return 1.0 / (1.0 + sigmas**2)

    def _check_grid(self, grid: Grid) -> _Prepared:
        prepared = self._prepare(grid.T - 1)
        own = prepared.grid.abar
        given = grid.abar.detach().to("cpu", DTYPE)
        if not torch.allclose(given, own, rtol=1e-13, atol=0.0):
            raise SamplerError(
                f"{self.info.name} runs on its scheduler's own grid (levels from set_timesteps({grid.T - 1})); the "
                f"grid given ({grid.name}, T={grid.T}) is not it: pass sampler.own_grid(T) "
                "(samplers.base.sampler_grid does)")
        return prepared

    # ------------------------------------------------------------------ one model call and one step
    def _to_sample(self, x: Tensor, abar: Tensor) -> Tensor:
        return x / torch.sqrt(abar) if self.coverage.sample == "ve" else x

    def _from_sample(self, sample: Tensor, abar: Tensor) -> Tensor:
        return sample * torch.sqrt(abar) if self.coverage.sample == "ve" else sample

    def _step(self, scheduler, model: CountingModel, i: int, t, sample: Tensor) -> Tensor:
        """One call of the scheduler: model input by scale_model_input, the exact answer at the scheduler's level in
        its prediction type, then step()."""
        x_in = scheduler.scale_model_input(sample, t)
        abar = self.coverage.level(scheduler, i, t).to(device=sample.device, dtype=sample.dtype)
        out = model_output(model.eps(x_in, abar), x_in, abar, self.prediction_type)
        return self._advance(scheduler, i, t, out, sample)

    def _advance(self, scheduler, i: int, t, out: Tensor, sample: Tensor) -> Tensor:
        new = scheduler.step(out, t, sample, **self.step_options).prev_sample
        index = getattr(scheduler, "step_index", None)
        if index is not None and index != i + 1:
            raise SamplerError(f"{self.info.name}: after call {i} the scheduler's step_index is {index}, not {i + 1} "
                               "(this diffusers version steps differently from the one this wrapper was written for)")
        return new

    def run(self, model: CountingModel, grid: Grid, x: Tensor, noise=None) -> Tensor:
        prepared = self._check_grid(grid)
        scheduler = copy.deepcopy(prepared.scheduler)
        abar = grid.abar.to(device=x.device, dtype=x.dtype)
        with _Float64Steps(self.info.name):
            sample = self._to_sample(x, abar[0])
            for i, t in enumerate(scheduler.timesteps):
                sample = self._step(scheduler, model, i, t, sample)
        return self._from_sample(sample, abar[-1])


class DiffusersMarkovSampler(DiffusersSampler, MarkovSampler):
    """A stochastic diffusers scheduler as Gaussian transitions: map = step() with the noise draw set to zero,
    std = its coefficient on the draw; the noise itself is injected (MarkovSampler.run)."""

    run = MarkovSampler.run

    def transitions(self, model: CountingModel, grid: Grid) -> Iterator[Transition]:
        prepared = self._check_grid(grid)
        scheduler = copy.deepcopy(prepared.scheduler)
        abar = grid.abar
        for i, t in enumerate(prepared.scheduler.timesteps):
            snapshot = copy.deepcopy(scheduler)  # the state before call i; every evaluation of the map starts here
            a_from, a_to = abar[i], abar[i + 1]
            std = self._noise_scale(snapshot, i, t, a_to)

            def mean(x: Tensor, snapshot=snapshot, i=i, t=t, a_from=a_from, a_to=a_to) -> Tensor:
                state = copy.deepcopy(snapshot)
                with _Float64Steps(self.info.name, fill=0.0):
                    sample = self._to_sample(x, a_from.to(x.device, x.dtype))
                    sample = self._step(state, model, i, t, sample)
                return self._from_sample(sample, a_to.to(x.device, x.dtype))

            yield Transition(mean, std)
            with _Float64Steps(self.info.name, fill=0.0):  # move the scheduler on (no model call: the state's
                zero = torch.zeros(1, 1, dtype=DTYPE)      # counters do not depend on the values)
                scheduler.scale_model_input(zero, t)
                self._advance(scheduler, i, t, zero, zero)

    def _noise_scale(self, snapshot, i: int, t, a_to: Tensor) -> Tensor:
        """The coefficient of step i's noise draw, in VP units at the level it lands on: step(draw = 1) - step(draw
        = 0), checked at two states (a state-dependent scale would not be a Gaussian transition)."""
        scales = []
        for value in (0.0, 1.0):
            results = []
            for fill in (0.0, 1.0):
                state = copy.deepcopy(snapshot)
                point = torch.full((1, 1), value, dtype=DTYPE)
                with _Float64Steps(self.info.name, fill=fill) as mode:
                    state.scale_model_input(point, t)
                    results.append(self._advance(state, i, t, point, point))
                if mode.draws > 1:
                    raise SamplerError(f"{self.info.name}: step {i} draws noise {mode.draws} times; not one Gaussian "
                                       "transition")
            scales.append(results[1] - results[0])
        if not torch.allclose(scales[0], scales[1], rtol=1e-12, atol=1e-300):
            raise SamplerError(f"{self.info.name}: the noise scale of step {i} depends on the state; not a Gaussian "
                               "transition")
        std = scales[0].reshape(())
        return std * torch.sqrt(a_to) if self.coverage.sample == "ve" else std


@register("diffusers:")
def diffusers_family(spec: str) -> Sampler:
    """`diffusers:<SchedulerClass>[?key=value&...]` or `diffusers:<scheduler_config.json>[?key=value&...]`."""
    class_name, options, _ = parse_spec(spec)
    cls = _scheduler_class(class_name)
    coverage = COVERED[class_name]
    keys = _config_keys(cls)
    unknown = [k for k in options if k not in keys and k not in coverage.step_options]
    if unknown:
        allowed = keys + [f"{k} (step option)" for k in coverage.step_options]
        raise SamplerError(f"unknown option {unknown[0]!r} for {class_name}: its options are {', '.join(allowed)}")
    step_options = {k: options.pop(k) for k in list(options) if k in coverage.step_options}
    try:
        with _quiet():
            scheduler = cls(**options)
    except (ValueError, TypeError, NotImplementedError, ImportError, KeyError) as err:
        raise SamplerError(f"{class_name} refused its config {options}: {_first_line(err)}") from None
    config = dict(scheduler.config)
    for check in (_common_refusals, *coverage.refuse):
        reason = check(config)
        if reason:
            raise SamplerError(f"diffusers:{spec} is not covered: {reason}")
    if "eta" in step_options and not (isinstance(step_options["eta"], (int, float)) and step_options["eta"] >= 0):
        raise SamplerError(f"DDIM's eta must be a number >= 0, got {step_options['eta']!r}")
    if "order" in step_options and not (isinstance(step_options["order"], int) and step_options["order"] >= 1):
        raise SamplerError(f"LMS's order must be an integer >= 1, got {step_options['order']!r}")
    stochastic = coverage.stochastic(config, step_options)
    kind = DiffusersMarkovSampler if stochastic else DiffusersSampler
    return kind("diffusers:" + spec, class_name, scheduler, coverage, step_options)
