"""diffusers schedulers as registered samplers (samplers/diffusers.py): `get_sampler("diffusers:<Scheduler>?...")`
runs the scheduler's own set_timesteps() and step() on the exact mixture model in float64, on the scheduler's own
grid. diffusers is a test extra; nothing is downloaded (schedulers come from their constructors).

What is asserted: agreement with the project's solvers on the scheduler's grid to 1e-10 (DDIM, DPM-Solver++(2M),
UniPC, Euler, Heun), and that without the float64 mode DPM-Solver's step() is only float32-accurate; the three
prediction types give the same run; the grid is the scheduler's own float32 numbers; DDPM's transitions are the
posterior mean and variance and equal DDIM's at eta = 1; options, JSON configs and refusals; measure() and
studies.rates on mix1d.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is a test-only dependency: pip install diffusers")

import samplers.diffusers as wrapper  # noqa: E402
from exact import measure  # noqa: E402
from samplers import Noise, SamplerError, ZeroNoise, get_sampler, sampler_grid, schedule_label  # noqa: E402
from samplers.base import OWN_GRID, CountingModel, ExactModel  # noqa: E402
from theory.catalog import get_target  # noqa: E402
from theory.schedules import make_grid  # noqa: E402
from theory.targets import DTYPE  # noqa: E402

warnings.filterwarnings("ignore", module="diffusers")
TARGET = get_target("mix1d")
DPM_2M = 'DPMSolverMultistepScheduler?final_sigmas_type="sigma_min"&lower_order_final=false'


def start(grid, seed=0, n=32):
    return TARGET.sample(n, grid.abar[0], torch.Generator().manual_seed(seed))


def max_gap(a, b) -> float:
    return float((a - b).abs().max())


# ---------------------------------------------------------------------------- the same numbers as the project's solvers
@pytest.mark.parametrize("spec,ours", [
    ("DDIMScheduler?clip_sample=false", "ddim"),  # VP sample, timestep-indexed levels, final abar = 1
    (DPM_2M, "dpmpp-2m"),  # solver_order 2 is the default
    ("UniPCMultistepScheduler?solver_order=3&final_sigmas_type=sigma_min&lower_order_final=false", "unipc"),
    ("EulerDiscreteScheduler", "euler"),  # VE sample, ends at sigma = 0
    ("HeunDiscreteScheduler", "heun"),  # interleaved sigmas, Euler on the last step
])
@pytest.mark.parametrize("steps", [4, 10])
def test_scheduler_agrees_with_project_solver_on_its_grid(spec, ours, steps):
    sampler = get_sampler("diffusers:" + spec)
    grid = sampler.own_grid(steps + 1)
    x = start(grid)
    peer = sampler(TARGET, grid, x)
    assert peer.dtype == DTYPE
    assert max_gap(peer, get_sampler(ours)(TARGET, grid, x)) < 1e-10


def test_float32_cast_in_dpm_step_is_what_the_float64_mode_removes(monkeypatch):
    """DPMSolverMultistepScheduler.step casts the sample to float32; with that cast left in place the run agrees with
    dpmpp-2m at float32 rounding only (if diffusers drops the cast, the second assertion says so)."""
    sampler = get_sampler("diffusers:" + DPM_2M)
    grid = sampler.own_grid(11)
    x = start(grid)
    ours = get_sampler("dpmpp-2m")(TARGET, grid, x)
    assert max_gap(sampler(TARGET, grid, x), ours) < 1e-10

    class PassThrough(wrapper._Float64Steps):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(wrapper, "_Float64Steps", PassThrough)
    gap = max_gap(sampler(TARGET, grid, x), ours)
    assert 1e-9 < gap < 1e-5 * float(ours.abs().max()), gap


@pytest.mark.parametrize("name", ["DDIMScheduler?clip_sample=false", "DPMSolverMultistepScheduler",
                                  "EulerDiscreteScheduler", "UniPCMultistepScheduler"])
def test_prediction_types_give_the_same_run(name):
    """The exact model answered as eps, as D (sample) or as v: three conversions, one trajectory."""
    joiner = "&" if "?" in name else "?"
    runs = []
    for kind in ("epsilon", "sample", "v_prediction"):
        if kind == "sample" and name.startswith("Euler"):
            kind = "original_sample"  # Euler accepts both spellings
        sampler = get_sampler(f"diffusers:{name}{joiner}prediction_type={kind}")
        grid = sampler.own_grid(8)
        runs.append(sampler(TARGET, grid, start(grid)))
    assert max_gap(runs[1], runs[0]) < 1e-10
    assert max_gap(runs[2], runs[0]) < 1e-10


@pytest.mark.parametrize("spec", ["DEISMultistepScheduler", "LMSDiscreteScheduler", "DPMSolverSinglestepScheduler",
                                  "UniPCMultistepScheduler"])
def test_forward_derivative_through_step_matches_finite_differences(spec):
    """The 1-D flow engine differentiates a run with torch.func.jvp. DEIS and LMS hand their (state-independent)
    coefficients to numpy / scipy inside step(), which the float64 mode unwraps: F' must still be the derivative."""
    from exact.grid_1d_flow import flow_map_1d

    sampler = get_sampler("diffusers:" + spec)
    grid = sampler.own_grid(7)
    x = torch.linspace(-3.0, 3.0, 5, dtype=DTYPE)
    _, dF = flow_map_1d(sampler, ExactModel(TARGET), grid, x)
    h = 1e-5
    run = lambda points: sampler(TARGET, grid, points[:, None])[:, 0]  # noqa: E731
    central = (run(x + h) - run(x - h)) / (2 * h)
    assert torch.allclose(dF, central, rtol=1e-6, atol=0), (dF, central)


@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")  # numpy 2 on torch
def test_a_state_dependent_tensor_sent_to_numpy_is_refused_under_jvp():
    import numpy

    constant = torch.tensor(2.0, dtype=DTYPE)

    def run(x):
        with wrapper._Float64Steps("probe"):
            assert float(numpy.log(constant * 1.0)) == math.log(2.0)  # a coefficient: unwrapped, exact
            numpy.log(x[0])  # depends on the state: its derivative would be lost
        return x

    with pytest.raises(SamplerError, match="state-dependent tensor to numpy"):
        torch.func.jvp(run, (torch.ones(2, dtype=DTYPE),), (torch.ones(2, dtype=DTYPE),))


# ---------------------------------------------------------------------------- the grid is the scheduler's
def test_grid_holds_the_schedulers_float32_levels_exactly():
    ddim = get_sampler("diffusers:DDIMScheduler").own_grid(11)  # leading spacing: timesteps 900, 800, ..., 0
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    abar32 = torch.cumprod(1 - betas, 0)
    assert torch.equal(ddim.abar[:-1], abar32[torch.arange(900, -1, -100)].to(DTYPE))
    assert float(ddim.abar[-1]) == 1.0  # set_alpha_to_one
    scheduler = diffusers.DPMSolverMultistepScheduler()
    scheduler.set_timesteps(10)
    dpm = get_sampler("diffusers:DPMSolverMultistepScheduler").own_grid(11)
    assert torch.equal(dpm.abar, 1 / (1 + scheduler.sigmas.to(DTYPE) ** 2))
    assert dpm.params["num_inference_steps"] == 10 and dpm.T == 11


def test_ddim_landing_levels_match_the_next_step_only_with_leading_spacing():
    leading = get_sampler("diffusers:DDIMScheduler").own_grid(11)
    linspace = get_sampler("diffusers:DDIMScheduler?timestep_spacing=linspace").own_grid(11)
    assert leading.params["landing_mismatches"] == 0
    assert linspace.params["landing_mismatches"] > 0  # 999 -> 899, but the next step reads its input at 888


def test_run_refuses_a_grid_that_is_not_the_schedulers():
    sampler = get_sampler("diffusers:DPMSolverMultistepScheduler")
    grid = make_grid("logsnr", 11)
    with pytest.raises(SamplerError, match="own grid"):
        sampler(TARGET, grid, start(grid))
    own = sampler_grid(sampler, 11, "logsnr")
    assert torch.equal(own.abar, sampler.own_grid(11).abar)
    assert schedule_label(sampler, "logsnr") == OWN_GRID and schedule_label(get_sampler("ddim"), "logsnr") == "logsnr"
    assert torch.equal(sampler_grid(get_sampler("ddim"), 11, "logsnr").abar, grid.abar)


@pytest.mark.parametrize("spec,nfe", [("DDIMScheduler", 10), ("DPMSolverMultistepScheduler", 10),
                                      ("HeunDiscreteScheduler", 19), ("EulerAncestralDiscreteScheduler", 10)])
def test_nfe_is_counted_on_the_schedulers_grid(spec, nfe):
    sampler = get_sampler("diffusers:" + spec)
    assert sampler.nfe(sampler.own_grid(11)) == nfe


# ---------------------------------------------------------------------------- stochastic schedulers
def test_ddpm_transitions_are_the_posterior_mean_and_variance():
    """DDPM (clip off): map = the project's ddpm mean (x + (1 - alpha) s) / sqrt(alpha); std^2 = the posterior
    variance (1 - abar_prev) / (1 - abar) (1 - alpha) (Ho et al. 2020, eq. 7), zero on the last step."""
    sampler = get_sampler("diffusers:DDPMScheduler?clip_sample=false")
    assert sampler.info.stochastic
    grid = sampler.own_grid(6)
    x = torch.linspace(-3, 3, 7, dtype=DTYPE)[:, None]
    model = CountingModel(ExactModel(TARGET))
    ours = list(get_sampler("ddpm").transitions(model, grid))
    for i, step in enumerate(sampler.transitions(model, grid)):
        abar, abar_prev = grid.abar[i], grid.abar[i + 1]
        assert max_gap(step.map(x), ours[i].map(x)) < 1e-12
        variance = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
        assert abs(float(step.std) ** 2 - float(variance)) <= 1e-12 * float(variance)
    assert float(step.std) == 0.0


def test_ddim_at_eta_one_is_ddpm():
    """DDIM's eta = 1 variance is DDPM's posterior variance and its mean the posterior mean: same transitions."""
    ddpm = get_sampler("diffusers:DDPMScheduler?clip_sample=false")
    ddim = get_sampler("diffusers:DDIMScheduler?clip_sample=false&eta=1")
    assert ddim.info.stochastic and not get_sampler("diffusers:DDIMScheduler").info.stochastic
    grid = ddpm.own_grid(8)
    assert torch.equal(grid.abar, ddim.own_grid(8).abar)
    model = CountingModel(ExactModel(TARGET))
    x = torch.linspace(-3, 3, 7, dtype=DTYPE)[:, None]
    for a, b in zip(ddpm.transitions(model, grid), ddim.transitions(model, grid)):
        assert max_gap(a.map(x), b.map(x)) < 1e-12
        assert abs(float(a.std) - float(b.std)) < 1e-12


def test_stochastic_runs_take_their_noise_from_the_injected_source():
    sampler = get_sampler("diffusers:EulerAncestralDiscreteScheduler")
    grid = sampler.own_grid(8)
    x = start(grid, n=8)
    torch.manual_seed(1)
    first = sampler(TARGET, grid, x, Noise(3))
    torch.manual_seed(2)  # a generator inside the scheduler would see this
    assert torch.equal(sampler(TARGET, grid, x, Noise(3)), first)
    assert max_gap(sampler(TARGET, grid, x, Noise(4)), first) > 1e-3
    with pytest.raises(SamplerError, match="stochastic"):
        sampler(TARGET, grid, x)
    means_only = sampler(TARGET, grid, x, ZeroNoise())
    model = CountingModel(ExactModel(TARGET))
    y = x
    for step in sampler.transitions(model, grid):
        y = step.map(y)
    assert max_gap(means_only, y) < 1e-12


# ---------------------------------------------------------------------------- names, options, JSON configs
def test_options_are_json_literals_or_strings():
    name, options, _ = wrapper.parse_spec(
        'DPMSolverMultistepScheduler?solver_order=3&use_karras_sigmas=true&beta_end=0.012&algorithm_type=dpmsolver++'
        '&trained_betas=null&timestep_spacing="trailing"')
    assert name == "DPMSolverMultistepScheduler"
    assert options == {"solver_order": 3, "use_karras_sigmas": True, "beta_end": 0.012,
                       "algorithm_type": "dpmsolver++", "trained_betas": None, "timestep_spacing": "trailing"}
    sampler = get_sampler("diffusers:DPMSolverMultistepScheduler?solver_order=3&use_karras_sigmas=true")
    assert sampler.scheduler.config.solver_order == 3 and sampler.scheduler.config.use_karras_sigmas is True
    assert sampler.info.order == 3.0 and sampler.info.multistep and not sampler.info.stochastic
    assert get_sampler("diffusers:UniPCMultistepScheduler").info.order == 3.0  # UniP-2 with UniC


def test_json_config_round_trip(tmp_path):
    scheduler = diffusers.DPMSolverMultistepScheduler(solver_order=3, use_karras_sigmas=True, beta_end=0.012)
    scheduler.save_config(tmp_path)
    path = tmp_path / "scheduler_config.json"
    assert json.loads(path.read_text())["_class_name"] == "DPMSolverMultistepScheduler"
    from_file = get_sampler(f"diffusers:{path}")
    options = "solver_order=3&use_karras_sigmas=true&beta_end=0.012"
    from_name = get_sampler("diffusers:DPMSolverMultistepScheduler?" + options)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(from_file.scheduler.config) == public(from_name.scheduler.config)
    grid = from_file.own_grid(9)
    assert torch.equal(grid.abar, from_name.own_grid(9).abar)
    x = start(grid)
    assert torch.equal(from_file(TARGET, grid, x), from_name(TARGET, grid, x))
    overridden = get_sampler(f"diffusers:{path}?solver_order=1")
    assert overridden.scheduler.config.solver_order == 1 and overridden.scheduler.config.beta_end == 0.012


@pytest.mark.parametrize("name,message", [
    ("diffusers:NoSuchScheduler", "unknown diffusers scheduler 'NoSuchScheduler'"),
    ("diffusers:UNet2DModel", "unknown diffusers scheduler"),  # a diffusers class, not a scheduler
    ("diffusers:DPMSolverSDEScheduler", "torchsde"),
    ("diffusers:FlowMatchEulerDiscreteScheduler", "flow-matching"),
    ("diffusers:KDPM2DiscreteScheduler", "not covered"),
    ("diffusers:DDIMScheduler?solver_order=2", "unknown option 'solver_order' for DDIMScheduler"),
    ("diffusers:DDIMScheduler?clip_sample", "not key=value"),
    ("diffusers:DDIMScheduler?eta=1&eta=0", "given twice"),
    ("diffusers:DDIMScheduler?eta=-1", "eta must be a number >= 0"),
    ("diffusers:LMSDiscreteScheduler?order=0", "order must be an integer >= 1"),
    ("diffusers:DDIMScheduler?beta_schedule=cubic", "refused its config"),
    ("diffusers:DPMSolverMultistepScheduler?algorithm_type=sde-dpmsolver++", "not a chain of Gaussian"),
    ("diffusers:DPMSolverMultistepScheduler?prediction_type=flow_prediction", "prediction_type='flow_prediction'"),
    ("diffusers:DPMSolverMultistepScheduler?solver_order=4", "orders 1, 2 and 3"),
    ("diffusers:DDPMScheduler?variance_type=learned_range", "predicts its variance"),
    ("diffusers:missing/scheduler_config.json", "no such file"),
    ("diffusers:", "unknown sampler"),
])
def test_refusals_are_one_line(name, message):
    with pytest.raises(SamplerError, match=message) as err:
        get_sampler(name)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec,T,message", [
    ("DDIMScheduler", 1002, "set_timesteps\\(1001\\) failed"),  # more inference steps than training steps
    ("DEISMultistepScheduler?use_karras_sigmas=true", 8, "not a grid"),  # its last sigma is repeated
    ("DDIMScheduler", 1, "T must be an integer >= 2"),
])
def test_grids_that_cannot_be_built_are_refused(spec, T, message):
    with pytest.raises(SamplerError, match=message) as err:
        get_sampler("diffusers:" + spec).own_grid(T)
    assert "\n" not in str(err.value)


def test_json_config_file_needs_a_class_name(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"solver_order": 2}))
    with pytest.raises(SamplerError, match="_class_name"):
        get_sampler(f"diffusers:{path}")


# ---------------------------------------------------------------------------- the exact engines and a study
def test_measure_on_mix1d_matches_the_project_solver_on_the_same_grid():
    """The 1-D flow engine differentiates through step(): diffusers' DDIM and the project's ddim give the same TV
    and KL on the scheduler's grid."""
    sampler = get_sampler("diffusers:DDIMScheduler?clip_sample=false")
    grid = sampler.own_grid(6)
    peer, ours = measure(TARGET, sampler, grid, G=2048), measure(TARGET, get_sampler("ddim"), grid, G=2048)
    for metric in ("tv", "kl"):
        assert peer[metric].method == "grid-1d-flow"
        assert peer[metric].value > 10 * peer[metric].numerical_error
        assert abs(peer[metric].value - ours[metric].value) < 1e-9 * ours[metric].value


def test_default_ddim_clips_and_the_exact_engine_refuses_it():
    """DDIMScheduler's default clip_sample=True clamps x0 to [-1, 1]; mix1d's modes lie outside, the output has atoms
    at +-1 (KL infinite) and the 1-D map is not invertible: measure() refuses rather than give a number."""
    from exact import DivergenceError

    sampler = get_sampler("diffusers:DDIMScheduler")
    with pytest.raises(DivergenceError, match="not increasing"):
        measure(TARGET, sampler, sampler.own_grid(6), G=1024)


def test_measure_a_stochastic_scheduler_with_the_kernel_engine():
    sampler = get_sampler("diffusers:DDPMScheduler?clip_sample=false")
    result = measure(TARGET, sampler, sampler.own_grid(5), G=2048)
    assert result["kl"].method == "grid-1d-kernel"
    assert 0 < result["tv"].value < 1 and math.isfinite(result["kl"].value) and not result["kl"].flagged


def test_studies_rates_runs_a_diffusers_scheduler(tmp_path, capsys):
    from studies import rates

    rates.main(["--sampler", "diffusers:DPMSolverMultistepScheduler", "--T", "5", "9", "--out", str(tmp_path),
                "--no-plot"])
    rows = (tmp_path / "rates.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2  # header, (tv, kl) at two T
    assert all(",own-grid," in row for row in rows[1:])
    assert "schedule own-grid" in capsys.readouterr().out
