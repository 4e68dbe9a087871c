"""The AMED paper's table on exact targets: every practical solver, AMED-Solver and AMED-Plugin at NFE 3..10.

    python -m studies.nfe                                   # mix1d, NFE 3..10, both tables, CSV + figures
    python -m studies.nfe --target mix2d --samples 20000    # d > 1: flow Monte Carlo with standard errors
    python -m studies.nfe --nfe 4 6 --no-grid-table         # a quick look

Table 1 (the paper's layout): each solver on its recommended grid (theory.solver_grids.RECOMMENDED), AMED-Solver
on time_uniform rho 1, AMED-Plugin on its base's grid. A budget of NFE evaluations fixes the grid: one-evaluation
solvers use T = NFE + 1 levels; two-evaluation solvers (heun, dpm-solver-2, AMED) use T = NFE/2 + 1 for even NFE
and the analytic first step (AFS) with T = (NFE + 1)/2 + 1 for odd NFE, as in the AMED paper. The NFE of every row
is counted by the model wrapper (Sampler.nfe) and checked against the budget.

Table 2: every solver on every grid (polynomial rho 7, logsnr, time_uniform rho 1 and 2, li2023-sigma: the seed
paper's spacing between the same end points; the raw li2023 grid ends at sigma ~ 1/T, a blurrier target, so its
errors would not be comparable) at the same NFE.

Errors: exact KL(p || q) and TV against q at the grid's last level, from q_T exactly (init='exact'), with the
engine `measure` picks: grid-1d-flow in 1-D, the Gaussian engine for one-component targets, flow Monte Carlo
('flow-mc', standard errors) for mixtures in d > 1. A deterministic map that is not invertible (a 1-D map that
folds) has no change-of-variables density: the exact engines refuse it and the row records status 'not-invertible'
with no value (never a made-up number).

AMED predictors are trained on the exact target for each (grid, AFS) pair, with the paper's teacher (Heun, M = 1
for the solver, M = 2 for plugins) and fewer noise draws than the paper's 10k by default (--n-draws 4096; a
training takes seconds in 1-D); they are saved under <out>/amed/ and reloaded on a re-run.

Output: <out>/nfe.csv (one row per solver, grid, NFE, resumable), <out>/nfe.png (KL and TV against NFE, table 1),
<out>/nfe_grids.png (table 2), and the tables printed.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

from exact import DivergenceError, measure
from samplers import OWN_GRID, get_sampler, sampler_grid, schedule_label
from samplers.amed import AMEDPlugin, AMEDSolver, load_predictor, save_predictor, train_amed
from samplers.base import ExactModel, SamplerError
from studies.common import ResultsFile, clean_exit, progress, resolve_device
from theory import solver_grids
from theory.catalog import get_target

SOLVERS = ["euler", "heun", "dpm-solver-2", "dpmpp-2m", "dpmpp-3m", "unipc", "deis", "ipndm"]
LABELS = {"euler": "Euler (DDIM)", "heun": "Heun (EDM)", "dpm-solver-2": "DPM-Solver-2", "dpmpp-2m": "DPM-Solver++(2M)",
          "dpmpp-3m": "DPM-Solver++(3M)", "unipc": "UniPC-3", "deis": "DEIS-tAB3", "ipndm": "iPNDM-4",
          "amed": "AMED-Solver"}
GRIDS = {"polynomial": {"rho": 7.0}, "logsnr": {}, "time_uniform-1": {"rho": 1.0}, "time_uniform-2": {"rho": 2.0},
         "li2023-sigma": {}}
COLUMNS = ["table", "sampler", "label", "grid", "T", "nfe", "afs", "status", "kl", "kl_error", "tv", "tv_error",
           "method", "target", "d", "seconds"]
KEY = ["table", "sampler", "grid", "nfe", "target", "d"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m studies.nfe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="mix1d", help="built-in target or JSON file (default mix1d)")
    parser.add_argument("--d", type=int, default=None, help="dimension, for targets that take one")
    parser.add_argument("--nfe", nargs="+", type=int, default=list(range(3, 11)), help="budgets (default 3..10)")
    parser.add_argument("--solvers", nargs="+", default=SOLVERS, help="practical solvers to compare")
    parser.add_argument("--plugins", nargs="+", default=["ipndm"], help="AMED-Plugin bases (default ipndm)")
    parser.add_argument("--no-amed", action="store_true", help="leave AMED out")
    parser.add_argument("--no-grid-table", action="store_true", help="skip table 2 (every solver on every grid)")
    parser.add_argument("--n-draws", type=int, default=4096, help="AMED training draws (paper: 10k)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--teacher-M", type=int, default=None, help="teacher refinement (default: paper's)")
    parser.add_argument("--features", action="store_true", help="AMED uses the model's features (batch mean)")
    parser.add_argument("--samples", type=int, default=10_000, help="flow Monte Carlo draws (d > 1)")
    parser.add_argument("--G", type=int, default=8192, help="nodes of the 1-D flow engine (its KL error estimate "
                        "compares all, every other and every fourth node; default 8192)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/nfe"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    bad = [n for n in args.nfe if n < 2]
    if bad:
        parser.error(f"NFE must be >= 2, got {bad}")
    if args.n_draws < 1 or args.samples < 2:
        parser.error(f"--n-draws and --samples must be positive, got {args.n_draws}, {args.samples}")
    return args


def budget(evals_per_step: int, nfe: int) -> tuple[int, bool]:
    """(T levels, AFS) that spend exactly nfe evaluations."""
    if evals_per_step == 1:
        return nfe + 1, False
    if nfe % 2 == 0:
        return nfe // 2 + 1, False
    return (nfe + 1) // 2 + 1, True


def grid_for(key: str, T: int, sampler=None):
    """The grid of T levels for a grid key; a sampler with its own grid (key OWN_GRID) brings it."""
    schedule = key.split("-")[0] if key.startswith("time_uniform") else key
    return sampler_grid(sampler, T, schedule, **GRIDS.get(key, {}))


def recommended_key(name: str) -> str:
    schedule, params = solver_grids.recommended_grid(name)
    if schedule == "time_uniform":
        return f"time_uniform-{int(params.get('rho', 1))}"
    return schedule


def amed_sampler(args, target, kind: str, grid_key: str, T: int, afs: bool):
    """Train (or reload) the AMED predictor for this grid and AFS choice."""
    grid = grid_for(grid_key, T)
    tag = "amed" if kind == "amed" else "plugin-" + kind.split(":")[1]
    name = (f"{tag}-{target.name}-d{target.d}-{grid_key}-T{T}{'-afs' if afs else ''}-n{args.n_draws}"
            f"-M{args.teacher_M if args.teacher_M is not None else 'p'}{'-feat' if args.features else ''}-s{args.seed}")
    root = args.out / "amed"
    try:
        predictor, _ = load_predictor(name, root)
    except SamplerError:
        predictor = train_amed(ExactModel(target), kind, grid, n_draws=args.n_draws, batch_size=args.batch_size,
                               teacher_M=args.teacher_M, features=args.features, afs=afs, seed=args.seed,
                               device=args.device)
        base = "amed" if kind == "amed" else kind.split(":")[1]
        save_predictor(predictor.cpu(), name, {"base": base, "afs": afs, "grid": grid_key, "T": T,
                                               "target": target.name}, root)
    if kind == "amed":
        return AMEDSolver(predictor, afs=afs)
    return AMEDPlugin(kind.split(":")[1], predictor, afs=afs)


def make_sampler(args, target, name: str, grid_key: str, nfe: int):
    if name == "amed" or name.startswith("amed-plugin:"):
        T, afs = budget(2, nfe)
        return amed_sampler(args, target, name, grid_key, T, afs), T, afs
    base = get_sampler(name)
    T, afs = budget(base.info.evals_per_step, nfe)
    return (get_sampler("afs:" + name) if afs else base), T, afs


def measure_row(args, target, table: str, name: str, grid_key: str, nfe: int) -> dict:
    start = time.time()
    sampler, T, afs = make_sampler(args, target, name, grid_key, nfe)
    grid = grid_for(grid_key, T, sampler)
    counted = sampler.nfe(grid)
    if counted != nfe:
        raise SamplerError(f"{name} on {grid_key} T={T} spends {counted} evaluations, not the budget {nfe}")
    label = LABELS.get(name, "AMED-Plugin (" + name.split(":")[-1] + ")" if name.startswith("amed-plugin:") else name)
    row = {"table": table, "sampler": name, "label": label,
           "grid": grid_key, "T": T, "nfe": counted, "afs": afs, "target": target.name, "d": target.d}
    options = {}
    if target.d > 1 and not target.is_gaussian:
        options = {"method": "flow-mc", "samples": args.samples, "seed": args.seed}
    elif target.d == 1:
        options = {"G": args.G}
    try:
        result = measure(target, sampler, grid, init="exact", **options)
        row.update(status="ok", kl=result["kl"].value, kl_error=result["kl"].numerical_error,
                   tv=result["tv"].value, tv_error=result["tv"].numerical_error, method=result["kl"].method)
    except DivergenceError as err:
        text = str(err)
        row.update(status="not-invertible" if ("not increasing" in text or "determinant" in text
                                               or "diffeomorphism" in text) else "refused",
                   method=text[:120].replace(",", ";"))
    row["seconds"] = round(time.time() - start, 2)
    return row


def jobs(args) -> list[tuple[str, str, str, int]]:
    names = list(args.solvers)
    if not args.no_amed:
        names += ["amed"] + [f"amed-plugin:{b}" for b in args.plugins]
    own = {n for n in args.solvers if schedule_label(get_sampler(n), "") == OWN_GRID}  # e.g. diffusers schedulers
    out = [("recommended", n, OWN_GRID if n in own else recommended_key(n), nfe) for n in names for nfe in args.nfe]
    if not args.no_grid_table:
        out += [("grids", n, g, nfe) for n in args.solvers if n not in own for g in GRIDS for nfe in args.nfe]
    return out


def format_table(frame: pd.DataFrame, metric: str, index: str) -> pd.DataFrame:
    def cell(row) -> str:
        if row["status"] != "ok":
            return "n/i" if row["status"] == "not-invertible" else "—"
        return f"{float(row[metric]):.3g}"

    shown = frame.assign(cell=frame.apply(cell, axis=1))
    return shown.pivot_table(index=index, columns="nfe", values="cell", aggfunc="first").fillna("")


def headline(frame: pd.DataFrame, nfe: int = 5) -> str:
    at = frame[(frame["table"] == "recommended") & (frame["nfe"] == nfe) & (frame["status"] == "ok")]
    if at.empty:
        return f"no measured row at NFE {nfe}"
    at = at.assign(kl=at["kl"].astype(float)).sort_values("kl")
    best, second = at.iloc[0], at.iloc[1] if len(at) > 1 else None
    text = f"NFE {nfe}: {best['label']} wins with KL {best['kl']:.3g}"
    if second is not None:
        text += (f" (+- {float(best['kl_error']):.2g}), {second['kl'] / best['kl']:.2f}x below the runner-up "
                 f"{second['label']} (KL {second['kl']:.3g} +- {float(second['kl_error']):.2g}); "
                 f"TV {float(best['tv']):.4g} against {float(second['tv']):.4g}")
    return text


def plot(frame: pd.DataFrame, path: Path, table: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = frame[(frame["table"] == table) & (frame["status"] == "ok")].copy()
    ok["kl"], ok["tv"] = ok["kl"].astype(float), ok["tv"].astype(float)
    if table == "recommended":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for metric, ax in zip(("kl", "tv"), axes):
            every = sorted(frame["nfe"].unique())
            for label, part in ok.groupby("label"):
                part = part.set_index("nfe").reindex(every).reset_index()  # gaps (n/i) break the line
                style = "-o" if label.startswith("AMED") else "--."
                ax.errorbar(part["nfe"], part[metric], yerr=part[f"{metric}_error"].astype(float), fmt=style,
                            label=label, capsize=2)
            ax.set_yscale("log")
            ax.set_xlabel("NFE")
            ax.set_ylabel("exact KL(p || q)" if metric == "kl" else "exact TV")
            ax.grid(alpha=0.3, which="both")
        axes[1].legend(fontsize=7, ncol=2)
        fig.suptitle(f"Solvers on their recommended grids, target {ok['target'].iloc[0] if len(ok) else ''}")
    else:
        solvers = sorted(ok["sampler"].unique())
        cols = 4
        rows = math.ceil(len(solvers) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False, sharey=True)
        for ax, name in zip(axes.flat, solvers):
            for grid, part in ok[ok["sampler"] == name].groupby("grid"):
                part = part.set_index("nfe").reindex(sorted(frame["nfe"].unique())).reset_index()
                ax.plot(part["nfe"], part["kl"], "-o", ms=3, label=grid)
            ax.set_title(LABELS.get(name, name), fontsize=9)
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        for ax in axes.flat[len(solvers):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6)
        fig.supxlabel("NFE")
        fig.supylabel("exact KL")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def run(args) -> pd.DataFrame:
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    target = get_target(args.target, args.d, device=device)
    for name in args.solvers:
        get_sampler(name)  # unknown names fail before any work
    results = ResultsFile(args.out / "nfe.csv", COLUMNS, KEY)
    todo = [j for j in jobs(args)
            if not results.done(table=j[0], sampler=j[1], grid=j[2], nfe=j[3], target=target.name, d=target.d)]
    for table, name, grid_key, nfe in progress(todo, total=len(todo), desc="studies.nfe"):
        results.append([measure_row(args, target, table, name, grid_key, nfe)])
    frame = pd.read_csv(args.out / "nfe.csv")
    wanted = {(j[0], j[1], j[2]) for j in jobs(args)}
    keep = pd.Series([(t, s, g) in wanted for t, s, g in zip(frame["table"], frame["sampler"], frame["grid"])],
                     index=frame.index, dtype=bool)
    frame = frame[keep & (frame["target"] == target.name) & (frame["d"] == target.d) & frame["nfe"].isin(args.nfe)]
    return frame


def main(argv=None) -> None:
    args = parse_args(argv)
    with clean_exit("studies.nfe"):
        frame = run(args)
    rec = frame[frame["table"] == "recommended"]
    pd.set_option("display.width", 200)
    print(f"Table 1: exact KL(p || q), target {args.target} (d={frame['d'].iloc[0] if len(frame) else '?'}), "
          "each solver on its recommended grid (n/i: the map is not invertible, no exact density)")
    print(format_table(rec, "kl", "label").to_string())
    print("\nExact TV, same runs")
    print(format_table(rec, "tv", "label").to_string())
    grids = frame[frame["table"] == "grids"]
    if not grids.empty:
        print("\nTable 2: exact KL, every solver on every grid")
        print(format_table(grids.assign(row=grids["sampler"] + " / " + grids["grid"]), "kl", "row").to_string())
    print("\n" + headline(frame))
    if not args.no_plot and not frame.empty:
        plot(frame, args.out / "nfe.png", "recommended")
        if not grids.empty:
            plot(frame, args.out / "nfe_grids.png", "grids")
        print(f"figures: {args.out / 'nfe.png'}" + (f", {args.out / 'nfe_grids.png'}" if not grids.empty else ""))
    print(f"results: {args.out / 'nfe.csv'}")


if __name__ == "__main__":
    main()
