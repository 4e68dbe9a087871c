"""The AMED paper's geometric observation on exact targets: does a sampling trajectory lie in a 2-D subspace?

    python -m studies.geometry                          # gaussian and a K=8 mixture, d = 8, 32, 128
    python -m studies.geometry --targets mixture --d 16 --trajectories 128

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
import time
from pathlib import Path

import pandas as pd
import torch

from samplers.base import CountingModel, ExactModel
from samplers.solvers import EDMView
from studies.common import ResultsFile, clean_exit, progress, resolve_device
from theory import solver_grids  # noqa: F401  (registers the polynomial grid)
from theory.catalog import get_target
from theory.schedules import make_grid
from theory.targets import DTYPE, GaussianMixture, TargetError

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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m studies.geometry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", default=["gaussian", "mixture"])
    parser.add_argument("--d", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--trajectories", type=int, default=256)
    parser.add_argument("--steps", type=int, default=256, help="Heun steps of the accurate trajectories")
    parser.add_argument("--coords", choices=["edm", "vp"], default="edm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/geometry"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if any(d < 3 for d in args.d):
        parser.error(f"dimensions must be >= 3 (in d <= 2 a trajectory is trivially planar), got {args.d}")
    if args.trajectories < 2 or args.steps < 2:
        parser.error(f"--trajectories and --steps must be >= 2, got {args.trajectories}, {args.steps}")
    return args


def run(args) -> pd.DataFrame:
    device = resolve_device(args.device)
    results = ResultsFile(args.out / "geometry.csv", COLUMNS, KEY)
    combos = [(name, d) for name in args.targets for d in args.d]
    for name, d in progress(combos, total=len(combos), desc="studies.geometry"):
        if results.done(target=name, d=d, coords=args.coords, k=3, trajectories=args.trajectories, steps=args.steps):
            continue
        start = time.time()
        target = build_target(name, d, device)
        share = explained_variance(trajectories(target, args.trajectories, args.steps, args.seed, args.coords)).cpu()
        n = share.shape[0]
        rows = []
        for k in (1, 2, 3):
            values = share[:, k - 1]
            mean, se = float(values.mean()), float(values.std() / math.sqrt(n))
            rows.append({"target": name, "d": d, "coords": args.coords, "k": k, "mean": mean,
                         "ci_low": mean - 1.96 * se, "ci_high": min(1.0, mean + 1.96 * se),
                         "q025": float(torch.quantile(values, 0.025)), "q975": float(torch.quantile(values, 0.975)),
                         "trajectories": n, "steps": args.steps, "seconds": round(time.time() - start, 2)})
        results.append(rows)
    frame = pd.read_csv(args.out / "geometry.csv")
    return frame[frame["coords"] == args.coords]


def plot(frame: pd.DataFrame, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(frame["target"]))
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.2 * (1 + len(names)), 3.8))
    ax = axes[0]
    for (name, k), part in frame.groupby(["target", "k"]):
        part = part.sort_values("d")
        residual = (1 - part["mean"]).clip(lower=1e-16)
        ax.errorbar(part["d"], residual, yerr=[(part["ci_high"] - part["mean"]).clip(upper=residual * 0.999),
                                               part["mean"] - part["ci_low"]],
                    fmt="-o", ms=3, capsize=2, label=f"{name}, top {k}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("variance left outside the top k PCs")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    for ax, name in zip(axes[1:], names):
        d = int(frame[frame["target"] == name]["d"].max())
        target = build_target(name, d, "cpu")
        paths = trajectories(target, 4, args.steps, args.seed, args.coords)
        for j in range(paths.shape[1]):
            X = paths[:, j, :] - paths[:, j, :].mean(0)
            _, _, V = torch.linalg.svd(X, full_matrices=False)
            proj = X @ V[:2].T
            ax.plot(proj[:, 0], proj[:, 1], "-", lw=1)
            ax.plot(proj[0, 0], proj[0, 1], "k.", ms=4)
        ax.set_title(f"{name}, d={d}: trajectories on their top-2 PCs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    with clean_exit("studies.geometry"):
        frame = run(args)
        print(f"Share of trajectory variance in the top k principal components ({args.coords} coordinates, "
              f"{args.trajectories} trajectories, {args.steps} Heun steps): mean [95% CI of the mean]; "
              "residual = 1 - mean, the share left outside")
        for _, row in frame.sort_values(["target", "d", "k"]).iterrows():
            print(f"  {row['target']:>9s} d={int(row['d']):4d} top {int(row['k'])}: {row['mean']:.8f} "
                  f"[{row['ci_low']:.8f}, {row['ci_high']:.8f}]  residual {1 - row['mean']:.2e}  "
                  f"quantiles [{row['q025']:.8f}, {row['q975']:.8f}]")
        if not args.no_plot and not frame.empty:
            plot(frame, args, args.out / "geometry.png")
            print(f"figure: {args.out / 'geometry.png'}")
        print(f"results: {args.out / 'geometry.csv'}")


if __name__ == "__main__":
    main()
