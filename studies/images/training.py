"""Training the image denoiser, and its checkpoints (Karras et al. 2022, EDM section 5).

    ln sigma ~ N(P_mean, P_std^2),   loss = lambda(sigma) |D(x0 + sigma n; sigma) - x0|^2,
    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,

Adam with a linear warm-up of the learning rate, an exponential moving average of the weights (the EMA model is the
one that samples), bfloat16 autocast on CUDA. A checkpoint holds the optimiser and the generator state, so a resumed
run equals an uninterrupted one step for step.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from samplers.unet import EDMDenoiser, UNetConfig, parameter_count
from studies.common import progress
from studies.images.data import ImageData

PROG = "python -m studies.images"
P_MEAN, P_STD = -1.2, 1.2  # EDM's training noise distribution
WARMUP_STEPS = 200

# Network and training defaults per data set: small enough for a CPU run of a few minutes on digits.
# Exact KL by flow Monte Carlo costs d forward-mode tangents per sample: on by default for d = 64 only.
PRESETS = {
    "digits": dict(config=dict(size=8, base=16, mults=(1, 2, 2)), steps=1500, batch=128, lr=2e-3, kl_samples=64),
    "mnist": dict(config=dict(size=28, base=32, mults=(1, 2, 2)), steps=20000, batch=128, lr=1e-3, kl_samples=0),
    "fashion": dict(config=dict(size=28, base=32, mults=(1, 2, 2)), steps=40000, batch=128, lr=1e-3, kl_samples=0),
}
TINY = dict(config=dict(base=8, mults=(1, 2)), steps=30, batch=32)


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not match the requested configuration."""


def checkpoint_path(args) -> Path:
    return Path(args.out) / args.data / "checkpoint.pt"


def config_for(args, data: ImageData) -> UNetConfig:
    """The U-Net of the data set's preset (the tiny one with --tiny), --base if given, shaped to the images."""
    preset = dict(PRESETS[args.data]["config"])
    if args.tiny:
        preset.update(TINY["config"])
    if args.base is not None:
        preset["base"] = args.base
    preset["size"] = data.shape[1]
    preset["channels"] = data.shape[0]
    return UNetConfig(**preset)


def save_atomic(path: Path, state: dict) -> None:
    """torch.save through a temporary file: an interrupted save never leaves a broken file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train(args, data: ImageData, device: torch.device, log=print) -> tuple[EDMDenoiser, dict]:
    """Train (or resume) the denoiser up to args.steps; returns the EMA model and the checkpoint's facts."""
    config = config_for(args, data)
    path = checkpoint_path(args)
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
        # Warm-up of the learning rate (EDM uses a linear ramp too).
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / WARMUP_STEPS)
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
            save_atomic(path, snapshot(step + 1))
            last_save = time.time()
    step = args.steps
    state = snapshot(step)
    save_atomic(path, state)
    facts.update(step=step, seconds=state["seconds"], loss=running)
    log(f"trained {step} steps in {state['seconds']:.0f} s total, loss {running:.4f}; checkpoint {path}")
    return ema.eval(), facts


def load_trained(args, data: ImageData, device: torch.device) -> tuple[EDMDenoiser, dict]:
    """The EMA model of an existing checkpoint (the `study` command), with the checkpoint's facts."""
    path = checkpoint_path(args)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: run `{PROG} train` first (or `{PROG}` to do both)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = UNetConfig(**state["config"])
    model = EDMDenoiser(config, amp=device.type == "cuda")
    model.load_state_dict(state["ema"])
    facts = {"parameters": parameter_count(model), "config": state["config"], "step": state["step"],
             "seconds": state["seconds"], "loss": state.get("loss")}
    return model.to(device).eval(), facts
