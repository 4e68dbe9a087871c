"""A small U-Net denoiser with EDM preconditioning, exposed as a Model so every registered sampler runs on it.

EDM (Karras, Aittala, Aila, Laine 2022, arXiv 2206.00364, table 1) writes the denoiser in VE coordinates
xt = x0 + sigma n as

    D(xt; sigma) = c_skip(sigma) xt + c_out(sigma) F( c_in(sigma) xt ; c_noise(sigma) )
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)      c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2)              c_noise = ln(sigma) / 4

with F the network. The project's samplers speak VP coordinates (shared/spec/samplers.md section 1): a state x at
level abar is xt = x / sqrt(abar) at sigma = sqrt((1 - abar) / abar), and Tweedie's D = (x - sqrt(1-abar) eps) /
sqrt(abar) gives

    eps(x, abar) = (xt - D(xt; sigma)) / sigma
                 = sigma / (sigma^2 + sigma_data^2) xt  -  sigma_data / sqrt(sigma^2 + sigma_data^2) F,

the second form with the 1/sigma cancelled, so eps stays well conditioned as sigma -> 0.

Features (for AMED, Zhou et al. CVPR 2024, arXiv 2312.00094): the channel means of the bottleneck block's output,
which the evaluation computes anyway.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class UNetConfig:
    channels: int = 1  # image channels
    size: int = 8  # image height = width
    base: int = 32  # channels at the first level
    mults: tuple[int, ...] = (1, 2, 2)  # channel multiplier per level; len(mults) - 1 downsamplings
    blocks: int = 1  # residual blocks per level on the way down
    dropout: float = 0.0
    sigma_data: float = 0.5  # pixels in [-1, 1]

    def __post_init__(self):
        self.mults = tuple(int(m) for m in self.mults)
        if self.size % (2 ** (len(self.mults) - 1)) != 0:
            raise ValueError(
                f"image size {self.size} is not divisible by 2^{len(self.mults) - 1}, as mults={self.mults} needs"
            )
        if self.base < 8 or self.base % 8 != 0:
            raise ValueError(f"base channels must be a positive multiple of 8, got {self.base}")


def _groups(ch: int) -> int:
    return min(8, ch)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the noise embedding added in between, a 1x1 skip when channels change."""

    def __init__(self, c_in: int, c_out: int, emb: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return (h + self.skip(x)) / math.sqrt(2)


class UNet(nn.Module):
    """F(c_in xt; c_noise) -> (output shaped like xt, bottleneck features (n, base * mults[-1]))."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config.base
        emb = 4 * c
        self.freqs = c // 2
        self.embed = nn.Sequential(nn.Linear(c, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(config.channels, c, 3, padding=1)
        chans = [c * m for m in config.mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [c]
        prev = c
        for level, ch in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(config.blocks):
                blocks.append(ResBlock(prev, ch, emb, config.dropout))
                prev = ch
                skips.append(ch)
            self.down.append(blocks)
            if level < len(chans) - 1:
                self.downsample.append(nn.Conv2d(prev, prev, 3, stride=2, padding=1))
                skips.append(prev)
        self.mid1 = ResBlock(prev, prev, emb, config.dropout)
        self.mid2 = ResBlock(prev, prev, emb, config.dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, ch in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(config.blocks + 1):
                blocks.append(ResBlock(prev + skips.pop(), ch, emb, config.dropout))
                prev = ch
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv2d(prev, prev, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(prev), prev)
        self.conv_out = nn.Conv2d(prev, config.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def feature_dim(self) -> int:
        return self.config.base * self.config.mults[-1]

    def _noise_embedding(self, c_noise: Tensor) -> Tensor:
        k = torch.arange(self.freqs, device=c_noise.device, dtype=torch.float32)
        angles = c_noise.float()[:, None] * (1000.0 * (1e-4 ** (k / self.freqs)))[None] / 4
        return self.embed(torch.cat([angles.cos(), angles.sin()], dim=1))

    def forward(self, x: Tensor, c_noise: Tensor) -> tuple[Tensor, Tensor]:
        emb = self._noise_embedding(c_noise)
        h = self.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid2(self.mid1(h, emb), emb)
        features = h.float().mean(dim=(2, 3))
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h))), features


class EDMDenoiser(nn.Module):
    """The preconditioned network, answering in EDM coordinates (`denoise`) and as a VP Model (`eps`)."""

    def __init__(self, config: UNetConfig | None = None, amp: bool = False):
        super().__init__()
        self.config = config or UNetConfig()
        self.net = UNet(self.config)
        self.amp = amp  # bfloat16 autocast on CUDA

    @property
    def feature_dim(self) -> int:
        return self.net.feature_dim

    def _param(self) -> Tensor:
        return next(self.net.parameters())

    def _raw(self, xt: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(F, features, c_a, c_b) with eps = c_a xt - c_b F, all float32 on the network's device."""
        p = self._param()
        xt = xt.to(device=p.device, dtype=p.dtype)
        sigma = torch.as_tensor(sigma, device=p.device, dtype=p.dtype).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(xt.shape[0])
        if torch.any(sigma <= 0):
            raise ValueError(f"sigma must be positive, got minimum {float(sigma.min())}")
        sd = self.config.sigma_data
        norm = torch.sqrt(sigma**2 + sd**2)
        c_in = (1.0 / norm)[:, None, None, None]
        c_noise = torch.log(sigma) / 4
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp and p.device.type == "cuda"):
            out, features = self.net(c_in * xt, c_noise)
        c_a = (sigma / norm**2)[:, None, None, None]
        c_b = (sd / norm)[:, None, None, None]
        return out.float(), features.float(), c_a, c_b

    def denoise(self, xt: Tensor, sigma: Tensor) -> Tensor:
        """D(xt; sigma) = c_skip xt + c_out F(c_in xt; c_noise), with sigma a scalar or one per image."""
        out, _, _, _ = self._raw(xt, sigma)
        sd = self.config.sigma_data
        sigma = torch.as_tensor(sigma, device=out.device, dtype=out.dtype).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(out.shape[0])
        sigma = sigma[:, None, None, None]
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
        return c_skip * xt.to(out) + c_out * out

    def eps_and_features(self, x: Tensor, abar: Tensor) -> tuple[Tensor, Tensor]:
        """eps(x, abar) in VP coordinates and the bottleneck channel means, in x's dtype and device."""
        abar = torch.as_tensor(abar, dtype=torch.float64)
        if abar.ndim != 0 or not (0.0 < float(abar.detach()) < 1.0):
            raise ValueError(f"a level abar must be a scalar in (0, 1), got {abar.tolist()!r}")
        sigma = torch.sqrt((1 - abar) / abar)
        xt = x / torch.sqrt(abar).to(x)
        out, features, c_a, c_b = self._raw(xt, sigma.float())
        eps = c_a * xt.to(out) - c_b * out
        return eps.to(x.dtype), features.to(x.dtype)

    def eps(self, x: Tensor, abar: Tensor) -> Tensor:
        return self.eps_and_features(x, abar)[0]

    def forward(self, x: Tensor, abar: Tensor) -> Tensor:
        return self.eps(x, abar)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_denoiser(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> EDMDenoiser:
    """A trained denoiser from a checkpoint written by `python -m studies.images train` (EMA weights by default)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=False)
    model = EDMDenoiser(UNetConfig(**state["config"]))
    model.load_state_dict(state["ema" if ema else "model"])
    return model.to(device).eval()


def config_dict(config: UNetConfig) -> dict:
    return asdict(config)
