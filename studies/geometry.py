"""The AMED paper's geometric observation on exact targets: does a sampling trajectory lie in a 2-D subspace?

    python -m studies.geometry                          # gaussian and a K=8 mixture, d = 8, 32, 128
    python -m studies.geometry --target mixture --d 16 --trajectories 128

For each target and dimension, accurate probability-flow trajectories are computed with the exact model (Heun,
`--steps` steps on EDM's polynomial grid, sigma 80 -> 0.002, q_T exactly as the start), recorded at every grid
point in EDM coordinates xt = x / sqrt(abar) (as in the paper; `--coords vp` uses x itself). Each trajectory is a
point cloud of steps + 1 points in R^d; PCA of it (centred at its own mean) gives the share of variance explained
by the top 1, 2 and 3 components. Reported per (target, d): the mean share over trajectories, a 95% interval of the
mean (normal approximation, mean +- 1.96 standard errors) and the 2.5% and 97.5% quantiles across trajectories.

Targets: `gaussian` (theory.targets, spread spectrum in a rotated basis), `mixture` (K = 8 Gaussians, means 1.5 N(0, I),
diagonal variances uniform in [0.05, 0.5], fixed seed), or any registered target name that takes d.

Output: <out>/geometry.csv (resumable, one row per target, d, k), <out>/geometry.png (explained variance against d,
and one trajectory of each target projected on its top two components).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from samplers.base import CountingModel, ExactModel
from samplers.solvers import EDMView
from studies.common import Study, StudyParser, add_flags, code_digest, integer, study_parser
from studies.tables import export_tables
from theory import solver_grids  # noqa: F401  (registers the polynomial grid)
from theory.catalog import get_target
from theory.schedules import make_grid
from theory.targets import DTYPE, GaussianMixture

COLUMNS = ["target", "d", "coords", "k", "mean", "ci_low", "ci_high", "q025", "q975", "trajectories", "steps",
           "seconds"]
KEY = ["target", "d", "coords", "k", "trajectories", "steps"]


def mixture_target(d: int, K: int = 8, seed: int = 1234) -> GaussianMixture:
    gen = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(K, d, dtype=DTYPE, generator=gen)
    variances = 0.05 + 0.45 * torch.rand(K, d, dtype=DTYPE, generator=gen)
    covs = torch.diag_embed(variances)
    weights = torch.full((K,), 1.0 / K, dtype=DTYPE)
    return GaussianMixture(weights, means, covs, name="mixture")


def build_target(name: str, d: int, device) -> GaussianMixture:
    if name == "mixture":
        return mixture_target(d).to(device)
    return get_target(name, d, device=device)


def trajectories(target: GaussianMixture, n: int, steps: int, seed: int, coords: str = "edm") -> torch.Tensor:
    """Heun trajectories of the exact probability-flow ODE: shape (steps + 1, n, d)."""
    grid = make_grid("polynomial", steps + 1).to(target.device)
    gen = torch.Generator(device=target.device).manual_seed(seed)
    x = target.sample(n, grid.abar[0], gen) / torch.sqrt(grid.abar[0])
    view = EDMView(CountingModel(ExactModel(target)))
    t = grid.sigma
    states = [x]
    for i in range(steps):
        dt = t[i + 1] - t[i]
        d_cur = view.eps(x, t[i])
        x_prime = x + dt * d_cur
        x = x + dt * 0.5 * (d_cur + view.eps(x_prime, t[i + 1]))
        states.append(x)
    out = torch.stack(states)
    if coords == "vp":
        out = out * torch.sqrt(grid.abar)[:, None, None]
    return out


def explained_variance(paths: torch.Tensor, kmax: int = 3) -> torch.Tensor:
    """Share of each trajectory's variance in its top 1..kmax principal components: shape (n, kmax)."""
    X = paths.permute(1, 0, 2)  # (n, points, d)
    X = X - X.mean(1, keepdim=True)
    s = torch.linalg.svdvals(X)  # (n, min(points, d))
    var = s**2
    share = torch.cumsum(var, 1) / var.sum(1, keepdim=True)
    k = min(kmax, share.shape[1])
    out = torch.ones(share.shape[0], kmax, dtype=share.dtype, device=share.device)
    out[:, :k] = share[:, :k]
    return out


def build_parser() -> StudyParser:
    parser = study_parser("geometry", __doc__)
    add_flags(parser, aliases={"target": ["--targets"]},
              types={"d": integer(3, why="in d <= 2 a trajectory is trivially planar")}, target=["gaussian", "mixture"],
              d=[8, 32, 128], seed=0, device="cpu", threads=None, out=Path("results/geometry"), no_plot=False,
              scheduler="auto", workers=None, table=None, fresh=False)
    parser.add_argument("--trajectories", type=integer(2), default=256, help="trajectories per target and d")
    parser.add_argument("--steps", type=integer(2), default=256, help="Heun steps of the accurate trajectories")
    parser.add_argument("--coords", choices=["edm", "vp"], default="edm",
                        help="EDM coordinates x / sqrt(abar) (as in the AMED paper) or the VP state x")
    parser.extra_names = {"target": ["mixture"]}  # a target of this study's own (build_target), besides the catalog's
    return parser


@dataclass(frozen=True)
class Job:
    """One (target, d): its trajectories' explained-variance shares, as plain values."""

    target: str  # 'mixture' or a registered target name
    d: int
    coords: str
    trajectories: int
    steps: int
    seed: int
    device: str
    target_key: str = ""  # the target's fingerprint (its parameters, not its name)

    def row_keys(self) -> list[dict]:
        return [{"target": self.target, "d": self.d, "coords": self.coords, "k": k, "trajectories": self.trajectories,
                 "steps": self.steps} for k in (1, 2, 3)]

    def ingredients(self, names: dict) -> dict:
        """What decides the rows' values (studies.common, content keys): the target, Heun on EDM's grid, the
        trajectories' settings and the code that draws and measures them."""
        engine = {"coords": self.coords, "trajectories": self.trajectories, "seed": self.seed,
                  "device": torch.device(self.device).type}
        code = code_digest(trajectories, explained_variance, work, EDMView, ExactModel, GaussianMixture)
        return {"target": self.target_key, "sampler": "heun (exact probability-flow trajectories)",
                "grid": make_grid("polynomial", self.steps + 1), "engine": engine, "code": code}


def jobs(args: argparse.Namespace, device: torch.device) -> list[Job]:
    # an unknown target or a dimension it refuses fails here, before any work
    keys = {(name, d): build_target(name, d, device).fingerprint() for name in args.target for d in args.d}
    return [Job(name, d, args.coords, args.trajectories, args.steps, args.seed, str(device), keys[name, d])
            for name in args.target for d in args.d]


def work(job: Job) -> list[dict]:
    start = time.time()
    target = build_target(job.target, job.d, torch.device(job.device))
    share = explained_variance(trajectories(target, job.trajectories, job.steps, job.seed, job.coords)).cpu()
    n = share.shape[0]
    rows = []
    for k in (1, 2, 3):
        values = share[:, k - 1]
        mean, se = float(values.mean()), float(values.std() / math.sqrt(n))
        rows.append({"target": job.target, "d": job.d, "coords": job.coords, "k": k, "mean": mean,
                     "ci_low": mean - 1.96 * se, "ci_high": min(1.0, mean + 1.96 * se),
                     "q025": float(torch.quantile(values, 0.025)), "q975": float(torch.quantile(values, 0.975)),
                     "trajectories": n, "steps": job.steps, "seconds": round(time.time() - start, 2)})
    return rows


def plot(frame: pd.DataFrame, args, path: Path) -> tuple[list[Path], str]:
    """Left: the variance left outside the top k principal components against d; then, per target, a few
    trajectories projected on their own top two components. Returns the files written and the caption."""
    from studies.plotting import DOUBLE, mark_points, paper_style, save_figure, subplots

    names = list(dict.fromkeys(frame["target"]))
    floored = False
    with paper_style():
        fig, axes = subplots(1, 1 + len(names), width=DOUBLE, height=DOUBLE / (1 + len(names)) + 0.3)
        axes = list(axes[0])
        ax = axes[0]
        for (name, k), part in frame.groupby(["target", "k"]):
            part = part.sort_values("d")
            residual = (1 - part["mean"]).clip(lower=1e-16)
            ax.errorbar(part["d"], residual, yerr=[(part["ci_high"] - part["mean"]).clip(upper=residual * 0.999),
                                                   part["mean"] - part["ci_low"]],
                        fmt="-o", label=f"{name}, top {k}")
            if mark_points(ax, part["d"], residual, (1 - part["mean"]).to_numpy() <= 1e-16, "capped", "k"):
                floored = True
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dimension $d$")
        ax.set_ylabel(r"variance outside the top $k$ PCs")
        ax.legend()
        ax.grid(True, which="both")
        for ax, name in zip(axes[1:], names):
            d = int(frame[frame["target"] == name]["d"].max())
            target = build_target(name, d, "cpu")
            paths = trajectories(target, 4, args.steps, args.seed, args.coords)
            for j in range(paths.shape[1]):
                X = paths[:, j, :] - paths[:, j, :].mean(0)
                _, _, V = torch.linalg.svd(X, full_matrices=False)
                proj = X @ V[:2].T
                ax.plot(proj[:, 0], proj[:, 1], "-")
                ax.plot(proj[0, 0], proj[0, 1], "k.")
            ax.set_title(f"{name}, $d$ = {d}: top-2 PCs")
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
        written = save_figure(fig, path)
    text = (f"Left: share of each sampling trajectory's variance left outside its top k principal components "
            f"(1 - share; mean over {args.trajectories} trajectories of {args.steps} Heun steps in {args.coords} "
            "coordinates, with the 95% interval of the mean), against the dimension d, one line per target and k. "
            "Other panels: four trajectories of each target at its largest d, projected on their own top two "
            "principal components; a black dot marks each start.")
    if floored:
        text += (" Hollow squares: no variance left at all (k = d, or below rounding), drawn at 1e-16 so that the "
                 "log scale can show them.")
    return written, text


def summarise(frame: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    return frame.sort_values(["target", "d", "k"])


def report(frame: pd.DataFrame, table: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    print(f"Share of trajectory variance in the top k principal components ({args.coords} coordinates, "
          f"{args.trajectories} trajectories, {args.steps} Heun steps): mean [95% CI of the mean]; "
          "residual = 1 - mean, the share left outside")
    for _, row in table.iterrows():
        print(f"  {row['target']:>9s} d={int(row['d']):4d} top {int(row['k'])}: {row['mean']:.8f} "
              f"[{row['ci_low']:.8f}, {row['ci_high']:.8f}]  residual {1 - row['mean']:.2e}  "
              f"quantiles [{row['q025']:.8f}, {row['q975']:.8f}]")
    return export_tables({"geometry": table}, args)


def figures(frame: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    from studies.plotting import caption

    written, text = plot(frame, args, args.out / "geometry.png")
    print(caption(text))
    return written


STUDY = Study("geometry", build_parser, "geometry.csv", COLUMNS, KEY, jobs, work, summarise, report, figures)


def main(argv=None) -> int:
    return STUDY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
