"""AMED: approximate mean-direction solvers (Zhou, Chen, Wang, Chen, CVPR 2024, arXiv 2312.00094);
shared/spec/samplers.md section 4. EDM coordinates as in samplers.solvers (sigma grid t_0 > ... > t_{N-1}).

Observation: a sampling trajectory lies nearly in a plane, so over one step the mean direction of the ODE equals a
rescaled tangent at some intermediate time s_n (mean value theorem in two dimensions). A small network g_phi
predicts where, and by how much to rescale:

    (r_n, c_n) = g_phi(t_n, t_{n+1}, h_n),   r in (0, 1),  c in (0.99, 1.01),   s_n = t_{n+1}^{r_n} t_n^{1 - r_n}

`amed` (AMED-Solver, 2 NFE per step):
    y_n = x_n + (s_n - t_n) eps_n;   x_{n+1} = x_n + c_n (t_{n+1} - t_n) eps(y_n, s_n)
With r = 1/2, c = 1 (an untrained predictor: zero-initialised heads) this is the exponential midpoint, order 2.

`amed-plugin:<base>` (AMED-Plugin): s_n is inserted into every interval and the base solver's own rule runs on the
refined grid t_0, s_0, t_1, s_1, ...; c_n scales the model increment of the second sub-step:
    euler:        y_n = x_n + (s_n - t_n) eps_n;  x_{n+1} = y_n + c_n (t_{n+1} - s_n) eps(y_n, s_n)
    ipndm:        the same with Adams-Bashforth combinations of the eps history over the refined grid
    dpmpp-2m:     DPM-Solver++(2M) on the refined grid; x_{n+1} = (t_{n+1}/s_n) y_n + c_n (update - (t_{n+1}/s_n) y_n)
    dpm-solver-2: its intermediate time is s_n (ratio r_n instead of 1/2):
                  x_{n+1} = x_n + c_n (t_{n+1} - t_n) [ eps(u, s_n) / (2 r_n) + (1 - 1/(2 r_n)) eps_n ]
Every variant spends 2 evaluations per interval: N grid points give 2(N-1) NFE, 2(N-1) - 1 with AFS (`afs:` prefix).

Features h_n: the feature vector the model returns with its evaluation at (x_n, t_n) (`eps_and_features`): the
posterior component weights for an exact mixture, the U-Net bottleneck for an image network, zeros when the model
has none. The Model protocol evaluates one scalar level per call, so one (r_n, c_n) is used for the whole batch:
the features enter as their batch mean (documented departure from the paper's per-image prediction). A predictor
built with feature_dim = 0 ignores features and learns a fixed per-step schedule (r_n, c_n); that is the default
for exact targets, where it keeps the sampler a deterministic map of each point (the exact engines need that).

Training (`train_amed`, distillation, no data): a teacher (Heun) runs the grid refined with M extra points per
interval (geometric in sigma; M = 1 for `amed`, 2 for plugins); for every batch of fresh starting noise and every
step n, the student takes one step from the teacher's point at t_n (multistep bases keep the student's own eps
history), loss = batch mean of the squared L2 distance to the teacher's point at t_{n+1}, one Adam step (lr 5e-3)
per n. Gradients flow through the frozen model at the intermediate point (through y_n and through s_n).

Calling it on an image network (another study's Model whose `eps_and_features` returns bottleneck features):

    predictor = train_amed(unet_model, "amed-plugin:ipndm", make_grid("polynomial", 4),
                           x_start=lambda n, g: torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64),
                           features=True, n_draws=10_000, batch_size=64)
    save_predictor(predictor, "cifar-ipndm-T4")
    sampler = get_sampler("amed:cifar-ipndm-T4")        # or AMEDPlugin("ipndm", predictor)

x_start draws VP-coordinate starting points at grid.abar[0] (standard normal for a trained network; q_T exactly
for a mixture, the default when the model is an ExactModel).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from samplers.base import CountingModel, ExactModel, SamplerError, SamplerInfo, as_counting, register
from samplers.solvers import AB_WEIGHTS, CODE_BASE, EDMSolver, EDMView, dpmpp_update
from theory.schedules import DTYPE, Grid

PLUGIN_BASES = ("euler", "dpm-solver-2", "ipndm", "dpmpp-2m")
DEFAULT_ROOT = Path("results") / "amed"
REFERENCE = "Zhou, Chen, Wang, Chen 2024 (CVPR, arXiv 2312.00094); " + CODE_BASE


# ---------------------------------------------------------------------------- the predictor g_phi
class AMEDPredictor(nn.Module):
    """g_phi: sinusoidal embeddings of t_n and t_{n+1} (n_freq frequencies of u = log(t)/4, sin and cos,
    Linear 2 n_freq -> 2 n_freq, SiLU) concatenated with a feature MLP (Linear -> hidden, SiLU, Linear -> 4), then one
    linear head per output through a sigmoid: r = sigmoid(.), c = 1 + c_range (2 sigmoid(.) - 1).
    Heads start at zero, so an untrained predictor gives r = 1/2, c = 1."""

    def __init__(self, feature_dim: int = 0, n_freq: int = 4, hidden: int = 128, bottleneck: int = 4,
                 c_range: float = 0.01):
        super().__init__()
        if feature_dim < 0:
            raise SamplerError(f"feature_dim must be >= 0, got {feature_dim}")
        self.config = {"feature_dim": int(feature_dim), "n_freq": int(n_freq), "hidden": int(hidden),
                       "bottleneck": int(bottleneck), "c_range": float(c_range)}
        self.feature_dim = int(feature_dim)
        self.c_range = float(c_range)
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freq, dtype=DTYPE))
        self.embed_cur = nn.Sequential(nn.Linear(2 * n_freq, 2 * n_freq), nn.SiLU())
        self.embed_next = nn.Sequential(nn.Linear(2 * n_freq, 2 * n_freq), nn.SiLU())
        width = 4 * n_freq
        if self.feature_dim > 0:
            self.features = nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.SiLU(), nn.Linear(hidden, bottleneck))
            width += bottleneck
        self.head_r = nn.Linear(width, 1)
        self.head_c = nn.Linear(width, 1)
        for head in (self.head_r, self.head_c):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.double()

    def _sinusoid(self, t: Tensor) -> Tensor:
        u = torch.log(torch.as_tensor(t, dtype=DTYPE, device=self.freqs.device)).reshape(1) / 4
        return torch.cat([torch.sin(self.freqs * u), torch.cos(self.freqs * u)])

    def forward(self, t_cur, t_next, features: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        parts = [self.embed_cur(self._sinusoid(t_cur)), self.embed_next(self._sinusoid(t_next))]
        if self.feature_dim > 0:
            if features is None:
                h = torch.zeros(self.feature_dim, dtype=DTYPE, device=self.freqs.device)
            else:
                h = features.reshape(features.shape[0], -1).mean(0).to(DTYPE)  # batch mean (one level per call)
                if h.numel() != self.feature_dim:
                    raise SamplerError(f"the predictor expects {self.feature_dim} features, the model gave {h.numel()}")
            parts.append(self.features(h))
        z = torch.cat(parts)
        r = torch.sigmoid(self.head_r(z))[0]
        c = 1 + self.c_range * (2 * torch.sigmoid(self.head_c(z))[0] - 1)
        return r, c


def save_predictor(predictor: AMEDPredictor, name: str, meta: dict | None = None, root: str | Path = DEFAULT_ROOT) -> Path:
    """Save under <root>/<name>.pt (state dict, architecture, meta such as the base solver and the grid)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.pt"
    torch.save({"state_dict": predictor.state_dict(), "config": predictor.config, "meta": meta or {}}, path)
    return path


def load_predictor(name_or_path: str | Path, root: str | Path = DEFAULT_ROOT) -> tuple[AMEDPredictor, dict]:
    """A saved predictor by name (under root) or by path; returns (predictor, meta)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = Path(root) / f"{name_or_path}.pt"
    if not path.is_file():
        raise SamplerError(f"no trained AMED predictor {str(name_or_path)!r} (looked for {path})")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    predictor = AMEDPredictor(**blob["config"])
    predictor.load_state_dict(blob["state_dict"])
    predictor.eval()
    return predictor, blob.get("meta", {})


# ---------------------------------------------------------------------------- one interval of each variant
def _ab(history: list[Tensor]) -> Tensor:
    weights = AB_WEIGHTS[len(history)]
    return sum(w * e for w, e in zip(weights, history))


def amed_interval(base: str, view: EDMView, x: Tensor, t_cur: Tensor, t_next: Tensor, r: Tensor, c: Tensor,
                  eps_cur: Tensor, history: dict) -> Tensor:
    """One interval t_cur -> t_next of AMED (`base` = 'amed') or of a plugin, given eps at (x, t_cur);
    `history` carries the multistep bases' past evaluations (mutated)."""
    s = t_next**r * t_cur ** (1 - r)
    if base == "amed":
        y = x + (s - t_cur) * eps_cur
        return x + c * (t_next - t_cur) * view.eps(y, s)
    if base == "euler":
        y = x + (s - t_cur) * eps_cur
        return y + c * (t_next - s) * view.eps(y, s)
    if base == "dpm-solver-2":
        u = x + (s - t_cur) * eps_cur
        return x + c * (t_next - t_cur) * (view.eps(u, s) / (2 * r) + (1 - 1 / (2 * r)) * eps_cur)
    if base == "ipndm":
        eps_hist = history.setdefault("eps", [])
        eps_hist.insert(0, eps_cur)
        del eps_hist[4:]
        y = x + (s - t_cur) * _ab(eps_hist)
        eps_hist.insert(0, view.eps(y, s))
        del eps_hist[4:]
        return y + c * (t_next - s) * _ab(eps_hist)
    if base == "dpmpp-2m":
        ms, lams = history.setdefault("ms", []), history.setdefault("lams", [])
        ms.append(x - t_cur * eps_cur)
        lams.append(-torch.log(t_cur))
        y = dpmpp_update(x, t_cur, s, ms, lams, min(2, len(ms)))
        ms.append(view.denoiser(y, s))
        lams.append(-torch.log(s))
        del ms[:-2], lams[:-2]
        linear = (t_next / s) * y
        return linear + c * (dpmpp_update(y, s, t_next, ms, lams, 2) - linear)
    raise SamplerError(f"unknown AMED base {base!r}: use amed or one of {', '.join(PLUGIN_BASES)}")


def _detach_history(history: dict) -> None:
    for key, values in history.items():
        history[key] = [v.detach() for v in values]


# ---------------------------------------------------------------------------- the samplers
class AMEDBase(EDMSolver):
    """Shared loop: evaluate at (x_n, t_n) with features, predict (r_n, c_n), take the interval."""

    base = "amed"

    def __init__(self, predictor: AMEDPredictor | None = None, afs: bool = False, name: str | None = None):
        super().__init__(afs)
        self.predictor = predictor if predictor is not None else AMEDPredictor(0)
        if name is not None:
            self.info = SamplerInfo(name, stochastic=False, evals_per_step=2, order=self.info.order,
                                    reference=REFERENCE, notes="trained AMED predictor")

    def solve(self, view, t, x):
        if self.predictor.freqs.device != x.device:  # (never inside a functorch transform on CPU: .to() there crashes)
            self.predictor.to(x.device)
        history: dict = {}
        for n in range(t.numel() - 1):
            eps, features = view.eps_and_features(x, t[n])
            # The predictor's parameters need no graph when sampling; the run itself keeps its derivative in x
            # (the exact engines differentiate it in reverse mode, which torch.no_grad would stop).
            with torch.no_grad():
                r, c = self.predictor(t[n], t[n + 1], features)
            x = amed_interval(self.base, view, x, t[n], t[n + 1], r, c, eps, history)
        return x

    def schedule(self, grid: Grid) -> list[tuple[float, float]]:
        """(r_n, c_n) per step on a grid, with no features (what a feature-free predictor applies)."""
        t = grid.sigma
        with torch.no_grad():
            return [tuple(float(v) for v in self.predictor(t[n], t[n + 1], None)) for n in range(t.numel() - 1)]


@register("amed")
class AMEDSolver(AMEDBase):
    """AMED-Solver (Zhou et al. 2024, arXiv 2312.00094), 2 NFE per step:
    s_n = t_{n+1}^{r_n} t_n^{1 - r_n};  y_n = x_n + (s_n - t_n) eps_n;  x_{n+1} = x_n + c_n (t_{n+1} - t_n) eps(y_n, s_n)."""

    info = SamplerInfo("amed", stochastic=False, evals_per_step=2, order=2.0, reference=REFERENCE,
                       notes="untrained (r = 1/2, c = 1): exponential midpoint; a trained predictor has no order")
    base = "amed"


class AMEDPlugin(AMEDBase):
    """AMED-Plugin on a base solver (euler, dpm-solver-2, ipndm, dpmpp-2m); see the module docstring."""

    def __init__(self, base: str, predictor: AMEDPredictor | None = None, afs: bool = False, name: str | None = None):
        if base not in PLUGIN_BASES:
            raise SamplerError(f"AMED-Plugin supports bases {', '.join(PLUGIN_BASES)}, not {base!r}")
        self.base = base
        order = {"euler": 1.0, "dpm-solver-2": 2.0, "ipndm": 2.0, "dpmpp-2m": 2.0}[base]
        self.info = SamplerInfo(f"amed-plugin:{base}", stochastic=False, evals_per_step=2, order=order,
                                reference=REFERENCE, notes=f"untrained: {base} on the midpoint-refined grid")
        super().__init__(predictor, afs, name)


@register("amed-plugin:")
def amed_plugin_family(base: str) -> AMEDPlugin:
    """`amed-plugin:<base>` with an untrained predictor (r = 1/2, c = 1)."""
    return AMEDPlugin(base)


def load_amed(name_or_path: str | Path, root: str | Path = DEFAULT_ROOT, afs: bool | None = None) -> AMEDBase:
    """A trained AMED sampler from a saved predictor; its meta names the base ('amed' or a plugin base)."""
    predictor, meta = load_predictor(name_or_path, root)
    base = meta.get("base", "amed")
    use_afs = bool(meta.get("afs", False)) if afs is None else afs
    label = f"amed:{Path(str(name_or_path)).stem}"
    if base == "amed":
        return AMEDSolver(predictor, afs=use_afs, name=label)
    return AMEDPlugin(base, predictor, afs=use_afs, name=label)


@register("amed:")
def amed_trained_family(name: str) -> AMEDBase:
    """`amed:<name>`: the trained predictor saved as results/amed/<name>.pt (or a path)."""
    return load_amed(name)


# ---------------------------------------------------------------------------- distillation
def refine_sigmas(t: Tensor, M: int) -> Tensor:
    """The grid with M extra points per interval, geometric in sigma (uniform in lambda)."""
    if M < 0:
        raise SamplerError(f"M must be >= 0, got {M}")
    pieces = [t[:1]]
    for n in range(t.numel() - 1):
        frac = torch.arange(1, M + 2, dtype=t.dtype, device=t.device) / (M + 1)
        pieces.append(t[n + 1] ** frac * t[n] ** (1 - frac))
    out = torch.cat(pieces)
    out[(M + 1)::(M + 1)] = t[1:]
    return out


def heun_teacher(view: EDMView, t: Tensor, x: Tensor, M: int) -> list[Tensor]:
    """Teacher states at every original grid point: Heun on the grid refined with M points per interval."""
    fine = refine_sigmas(t, M)
    states = [x]
    for k in range(fine.numel() - 1):
        dt = fine[k + 1] - fine[k]
        d_cur = view.eps(x, fine[k])
        x_prime = x + dt * d_cur
        x = x + dt * 0.5 * (d_cur + view.eps(x_prime, fine[k + 1]))
        if (k + 1) % (M + 1) == 0:
            states.append(x)
    return states


def _default_x_start(model: CountingModel, grid: Grid):
    inner = model.model
    if isinstance(inner, ExactModel):
        target = inner.target
        level = grid.abar[0]
        return lambda n, gen: target.sample(n, level, gen)
    raise SamplerError("pass x_start(n, generator) -> VP starting points at grid.abar[0] for a model that is not "
                       "an exact mixture")


def train_amed(model, sampler: str, grid: Grid, *, x_start: Callable[[int, torch.Generator], Tensor] | None = None,
               n_draws: int = 10_000, batch_size: int = 128, lr: float = 5e-3, teacher_M: int | None = None,
               features: bool = False, afs: bool = False, seed: int = 0, device: str | torch.device = "cpu",
               progress: bool = False) -> AMEDPredictor:
    """Distil g_phi for `sampler` ('amed' or 'amed-plugin:<base>') on `grid` with any Model (see module docstring).

    n_draws fresh starting points in batches; for each batch and each step one Adam step. `features` uses the
    model's feature vector (its size is read from one probe evaluation); `afs` trains with the analytic first step
    (as it will be sampled). Returns the trained predictor (eval mode)."""
    base = "amed" if sampler == "amed" else sampler.partition("amed-plugin:")[2]
    if base != "amed" and base not in PLUGIN_BASES:
        raise SamplerError(f"train_amed trains 'amed' or 'amed-plugin:<base>' with base in {PLUGIN_BASES}, "
                           f"got {sampler!r}")
    if n_draws < 1 or batch_size < 1:
        raise SamplerError(f"n_draws and batch_size must be positive, got {n_draws}, {batch_size}")
    M = (1 if base == "amed" else 2) if teacher_M is None else int(teacher_M)
    counting = as_counting(model)
    x_start = x_start or _default_x_start(counting, grid)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    t = grid.sigma.to(device)
    feature_dim = 0
    if features:
        probe = x_start(2, torch.Generator().manual_seed(seed + 1)).to(device)
        _, feats = counting.eps_and_features(probe, grid.abar[0].to(device))
        feature_dim = 0 if feats is None else int(feats.reshape(feats.shape[0], -1).shape[1])
    predictor = AMEDPredictor(feature_dim).to(device)
    predictor.train()
    optimiser = torch.optim.Adam(predictor.parameters(), lr=lr)
    scale0 = torch.sqrt(grid.abar[0]).to(device)
    batches = math.ceil(n_draws / batch_size)
    iterator = range(batches)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"train {sampler} T={grid.T}", leave=False)
    for b in iterator:
        n = min(batch_size, n_draws - b * batch_size)
        x0 = x_start(n, gen).to(device=device, dtype=DTYPE) / scale0
        with torch.no_grad():
            teacher = heun_teacher(EDMView(counting), t, x0, M)
        view = EDMView(counting, afs=afs)
        history: dict = {}
        for k in range(t.numel() - 1):
            x = teacher[k]
            with torch.no_grad():
                eps, feats = view.eps_and_features(x, t[k])
            r, c = predictor(t[k], t[k + 1], feats)
            x_next = amed_interval(base, view, x, t[k], t[k + 1], r, c, eps, history)
            loss = ((x_next - teacher[k + 1]) ** 2).reshape(n, -1).sum(1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            _detach_history(history)
    predictor.eval()
    return predictor
