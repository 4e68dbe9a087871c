"""The AMED paper's table on exact targets: every practical solver, AMED-Solver and AMED-Plugin at NFE 3..10.

    python -m studies.nfe                                   # mix1d, NFE 3..10, both tables, CSV + figures
    python -m studies.nfe --target mix2d --samples 20000    # d > 1: flow Monte Carlo with standard errors
    python -m studies.nfe --nfe 4 6 --no-grid-table         # a quick look

Table 1 (the paper's layout): each solver on its recommended grid (theory.solver_grids.RECOMMENDED), AMED-Solver
on time_uniform rho 1, AMED-Plugin on its base's grid. A budget of NFE evaluations fixes the grid: one-evaluation
solvers use T = NFE + 1 levels; two-evaluation solvers (heun, dpm-solver-2, AMED) use T = NFE/2 + 1 for even NFE
and the analytic first step (AFS) with T = (NFE + 1)/2 + 1 for odd NFE, as in the AMED paper; a sampler with e
evaluations a step (expint:3, the randomized midpoint samplers, ...) uses T = NFE/e + 1 where e divides the budget.
The NFE of every row is counted by the model wrapper (Sampler.nfe) and checked against the budget; where no grid
spends it exactly, the row says 'off-budget' and carries no value.

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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from exact import SEEDED, DivergenceError, choose_method, measure
from samplers import OWN_GRID, get_sampler, sampler_grid, schedule_label
from samplers.amed import AMEDPlugin, AMEDSolver, load_predictor, save_predictor, train_amed
from samplers.base import ExactModel, SamplerError
from studies.common import (Study, StudyParser, add_flags, code_digest, integer, refuse_unmeasurable, sampler_list,
                            study_parser)
from studies.tables import export_tables
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


def build_parser() -> StudyParser:
    parser = study_parser("nfe", __doc__)
    add_flags(parser, aliases={"sampler": ["--solvers"]}, types={"nfe": integer(2)}, sampler=SOLVERS,
              target="mix1d", d=None, nfe=list(range(3, 11)), seed=0, device="cpu", threads=None,
              out=Path("results/nfe"), no_plot=False, table=None, scheduler="auto", workers=None, fresh=False)
    parser.add_argument("--grid", default="recommended", choices=["recommended", "li2023", *GRIDS],
                        help="table 1's grid: each solver's recommended one, or this one for every solver (li2023: "
                        "the seed paper's grid, as studies.rates uses)")
    parser.add_argument("--plugins", nargs="+", default=["ipndm"], help="AMED-Plugin bases")
    parser.add_argument("--no-amed", action="store_true", help="leave AMED out")
    parser.add_argument("--no-grid-table", action="store_true", help="skip table 2 (every solver on every grid)")
    parser.add_argument("--n-draws", type=integer(1), default=4096, help="AMED training draws (paper: 10k)")
    parser.add_argument("--batch-size", type=integer(1), default=256, help="AMED training batch")
    parser.add_argument("--teacher-M", type=integer(0), default=None,
                        help="teacher refinement: points added in each interval (default: the paper's)")
    parser.add_argument("--features", action="store_true", help="AMED uses the model's features (batch mean)")
    parser.add_argument("--samples", type=integer(2), default=10_000, help="flow Monte Carlo draws (d > 1)")
    parser.add_argument("--G", type=integer(8), default=8192, help="nodes of the 1-D flow engine (its KL error "
                        "estimate compares all, every other and every fourth node)")
    return parser


@dataclass(frozen=True)
class Job:
    """One (table, sampler, grid, NFE) row of a command, as plain values (the AMED settings included)."""

    table: str  # recommended (table 1) or grids (table 2)
    sampler: str
    grid: str
    nfe: int
    target: str  # a built-in name or a JSON path, as given
    d: int | None  # as given
    target_name: str  # the target's own name and dimension: the rows' target and d
    target_d: int
    n_draws: int
    batch_size: int
    teacher_M: int | None
    features: bool
    samples: int
    G: int
    seed: int
    device: str
    out: str  # AMED predictors are saved under out/amed and reloaded from there
    target_key: str = ""  # the target's fingerprint (its parameters, not its name or path)

    def row_keys(self) -> list[dict]:
        return [{"table": self.table, "sampler": self.sampler, "grid": self.grid, "nfe": self.nfe,
                 "target": self.target_name, "d": self.target_d}]

    def ingredients(self, names: dict) -> dict:
        """What decides the row's value (studies.common, content keys): the sampler within its budget (an AMED
        predictor by its training settings: it is trained in the job), its grid, the engine's options."""
        if self.sampler == "amed" or self.sampler.startswith("amed-plugin:"):
            T, afs = budget(2, self.nfe)
            sampler = {"amed": self.sampler, "afs": afs, "n_draws": self.n_draws, "batch_size": self.batch_size,
                       "teacher_M": self.teacher_M, "features": self.features, "seed": self.seed}
            code = code_digest(AMEDSolver, AMEDPlugin, train_amed, get_sampler(self.sampler), choose_method)
        else:
            base = get_sampler(self.sampler)
            T, afs = budget(base.info.evals_per_step, self.nfe, afs=base.info.evals_per_step == 2
                            and has_afs(self.sampler))
            sampler = get_sampler("afs:" + self.sampler) if afs else base
            code = code_digest(sampler, choose_method)  # 'auto': the engine that applies, any of them
        grid = None if T is None else grid_for(self.grid, T, sampler if not isinstance(sampler, dict) else None)
        # the options work() passes: G to the 1-D engines, samples (flow Monte Carlo) in d > 1, the seed to both
        engine = {"method": "auto", "G": self.G if self.target_d == 1 else None,
                  "samples": self.samples if self.target_d > 1 else None, "seed": self.seed, "init": "exact",
                  "device": torch.device(self.device).type}
        return {"target": self.target_key, "sampler": sampler, "grid": grid, "engine": engine, "code": code}


def budget(evals_per_step: int, nfe: int, afs: bool = True) -> tuple[int | None, bool]:
    """(T levels, AFS) that spend exactly nfe evaluations: nfe / e steps when e divides nfe; for a two-evaluation
    solver with an AFS variant and odd nfe, the analytic first step saves one; otherwise (None, False): no grid
    spends exactly this budget (e.g. expint:3 at NFE 4)."""
    if nfe % evals_per_step == 0:
        return nfe // evals_per_step + 1, False
    if evals_per_step == 2 and afs:
        return (nfe + 1) // 2 + 1, True
    return None, False


def has_afs(name: str) -> bool:
    try:
        get_sampler("afs:" + name)
    except SamplerError:
        return False
    return True


def grid_for(key: str, T: int, sampler=None):
    """The grid of T levels for a grid key; a sampler with its own grid (key OWN_GRID) brings it."""
    schedule = key.split("-")[0] if key.startswith("time_uniform") else key
    return sampler_grid(sampler, T, schedule, **GRIDS.get(key, {}))


def recommended_key(name: str) -> str:
    schedule, params = solver_grids.recommended_grid(name)
    if schedule == "time_uniform":
        return f"time_uniform-{int(params.get('rho', 1))}"
    return schedule


def amed_sampler(job: Job, target, kind: str, grid_key: str, T: int, afs: bool):
    """Train (or reload) the AMED predictor for this grid and AFS choice."""
    grid = grid_for(grid_key, T)
    tag = "amed" if kind == "amed" else "plugin-" + kind.split(":")[1]
    name = (f"{tag}-{target.name}-d{target.d}-{grid_key}-T{T}{'-afs' if afs else ''}-n{job.n_draws}"
            f"-M{job.teacher_M if job.teacher_M is not None else 'p'}{'-feat' if job.features else ''}-s{job.seed}")
    root = Path(job.out) / "amed"
    try:
        predictor, _ = load_predictor(name, root)
    except SamplerError:
        predictor = train_amed(ExactModel(target), kind, grid, n_draws=job.n_draws, batch_size=job.batch_size,
                               teacher_M=job.teacher_M, features=job.features, afs=afs, seed=job.seed,
                               device=job.device)
        base = "amed" if kind == "amed" else kind.split(":")[1]
        save_predictor(predictor.cpu(), name, {"base": base, "afs": afs, "grid": grid_key, "T": T,
                                               "target": target.name}, root)
    if kind == "amed":
        return AMEDSolver(predictor, afs=afs)
    return AMEDPlugin(kind.split(":")[1], predictor, afs=afs)


def make_sampler(job: Job, target, name: str, grid_key: str, nfe: int):
    if name == "amed" or name.startswith("amed-plugin:"):
        T, afs = budget(2, nfe)
        return amed_sampler(job, target, name, grid_key, T, afs), T, afs
    base = get_sampler(name)
    T, afs = budget(base.info.evals_per_step, nfe, afs=base.info.evals_per_step == 2 and has_afs(name))
    return (get_sampler("afs:" + name) if afs else base), T, afs


def work(job: Job) -> list[dict]:
    """One row: the sampler within its NFE budget on its grid, its exact KL and TV (or why there are none)."""
    start = time.time()
    torch.manual_seed(job.seed)
    target = get_target(job.target, job.d, device=torch.device(job.device))
    table, name, grid_key, nfe = job.table, job.sampler, job.grid, job.nfe
    sampler, T, afs = make_sampler(job, target, name, grid_key, nfe)
    label = LABELS.get(name, "AMED-Plugin (" + name.split(":")[-1] + ")" if name.startswith("amed-plugin:") else name)
    row = {"table": table, "sampler": name, "label": label, "grid": grid_key, "afs": afs, "target": target.name,
           "d": target.d}
    if T is None:  # no grid spends exactly this budget: a row that says so, with no value
        e = sampler.info.evals_per_step
        row.update(nfe=nfe, status="off-budget", method=f"{e} evaluations a step: no grid spends exactly {nfe}",
                   seconds=round(time.time() - start, 2))
        return [row]
    grid = grid_for(grid_key, T, sampler)
    counted = sampler.nfe(grid)
    row.update(T=T, nfe=counted)
    if counted != nfe:  # e.g. a scheduler whose evaluations are not a multiple of its steps: recorded, not measured
        row.update(status="off-budget", method=f"spends {counted} evaluations on T={T}; not the budget {nfe}",
                   seconds=round(time.time() - start, 2))
        return [row]
    try:
        # the engine that applies (a stochastic sampler on a subspace or product target has one in any d); flow
        # Monte Carlo for deterministic samplers on other mixtures in d > 1
        method = choose_method(target, sampler)
        options = {"method": method}
        if method == "flow-mc":
            options.update(samples=job.samples, seed=job.seed)
        elif method in SEEDED:
            options.update(seed=job.seed)
        elif target.d == 1 and method in ("grid-1d-flow", "grid-1d-kernel", "grid-1d-randomized"):
            options.update(G=job.G)
        result = measure(target, sampler, grid, init="exact", **options)
        row.update(status="ok", kl=result["kl"].value, kl_error=result["kl"].numerical_error,
                   tv=result["tv"].value, tv_error=result["tv"].numerical_error, method=result["kl"].method)
    except DivergenceError as err:
        text = str(err)
        row.update(status="not-invertible" if ("not increasing" in text or "determinant" in text
                                               or "diffeomorphism" in text) else "refused",
                   method=text)  # the reason, whole (the CSV quotes it)
    row["seconds"] = round(time.time() - start, 2)
    return [row]


def jobs(args: argparse.Namespace, device: torch.device) -> list[Job]:
    """Table 1 (every solver, AMED-Solver and each AMED-Plugin on its recommended grid), then table 2 (every solver
    on every grid), each at every NFE; every name and the target checked first."""
    target = get_target(args.target, args.d, device=device)
    solvers = sampler_list(args.sampler, everything=SOLVERS)  # unknown names fail before any work
    names = solvers + ([] if args.no_amed else sampler_list(["amed"] + [f"amed-plugin:{b}" for b in args.plugins]))
    refuse_unmeasurable(target, {n: get_sampler(n) for n in solvers})  # no exact method for some: before any work
    own = {n for n in solvers if schedule_label(get_sampler(n), "") == OWN_GRID}  # e.g. diffusers schedulers
    def table1_grid(name: str) -> str:
        if name in own:
            return OWN_GRID
        return recommended_key(name) if args.grid == "recommended" else args.grid

    cells = [("recommended", n, table1_grid(n), nfe) for n in names for nfe in args.nfe]
    if not args.no_grid_table:
        cells += [("grids", n, g, nfe) for n in solvers if n not in own for g in GRIDS for nfe in args.nfe]
    return [Job(table, name, grid, nfe, args.target, args.d, target.name, target.d, args.n_draws, args.batch_size,
                args.teacher_M, args.features, args.samples, args.G, args.seed, str(device), str(args.out),
                target.fingerprint())
            for table, name, grid, nfe in cells]


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


def plot(frame: pd.DataFrame, path: Path, table: str, grid: str = "recommended") -> tuple[list[Path], str]:
    """Table 1 (each solver on its grid: KL and TV against NFE) or Table 2 (one panel per solver, a line per grid)
    as a figure. Returns the files written and the caption."""
    from studies.plotting import DOUBLE, legend_below, paper_style, save_figure, subplots

    ok = frame[(frame["table"] == table) & (frame["status"] == "ok")].copy()
    ok["kl"], ok["tv"] = ok["kl"].astype(float), ok["tv"].astype(float)
    refused = frame[(frame["table"] == table) & (frame["status"] == "not-invertible")]
    every = sorted(frame["nfe"].unique())
    with paper_style():
        if table == "recommended":
            fig, axes = subplots(1, 2, width=DOUBLE, height=2.4)
            import matplotlib.pyplot as plt

            colours = plt.get_cmap("tab20").colors  # more solvers than the default cycle has colours
            markers = "o.sD^v<>Ph*X"
            for metric, ax in zip(("kl", "tv"), axes[0]):
                for i, (label, part) in enumerate(ok.groupby("label")):
                    part = part.set_index("nfe").reindex(every).reset_index()  # gaps (n/i) break the line
                    line = "-" if label.startswith("AMED") else "--"
                    ax.errorbar(part["nfe"], part[metric], yerr=part[f"{metric}_error"].astype(float), fmt=line,
                                marker=markers[i % len(markers)], color=colours[i % len(colours)], label=label)
                ax.set_yscale("log")
                ax.set_xlabel("NFE")
                ax.set_ylabel(r"exact $\mathrm{KL}(p\,\|\,q)$" if metric == "kl" else r"exact $\mathrm{TV}$")
                ax.grid(True, which="both")
            legend_below(fig, [axes[0][0]])
            where = "their recommended grids" if grid == "recommended" else f"the {grid} grid"
            text = (f"Exact KL (left) and TV (right) of each solver on {where} against the number of model "
                    f"evaluations (NFE), target {ok['target'].iloc[0] if len(ok) else ''}; error bars: the engine's "
                    "numerical error; solid lines: AMED variants, dashed: the other solvers.")
        else:
            solvers = sorted(ok["sampler"].unique())
            cols = 4
            rows = max(1, math.ceil(len(solvers) / cols))
            fig, axes = subplots(rows, cols, width=DOUBLE, height=1.45 * rows + 0.3, sharey=True)
            for ax, name in zip(axes.flat, solvers):
                for grid_name, part in ok[ok["sampler"] == name].groupby("grid"):
                    part = part.set_index("nfe").reindex(every).reset_index()
                    ax.plot(part["nfe"], part["kl"], "-o", label=grid_name)
                ax.set_title(LABELS.get(name, name))
                ax.set_yscale("log")
                ax.grid(True)
            for ax in axes.flat[len(solvers):]:
                ax.axis("off")
            for ax in axes.flat[:len(solvers)]:
                ax.set_xlabel("NFE")
            for ax in axes[:, 0]:
                ax.set_ylabel(r"exact $\mathrm{KL}$")
            legend_below(fig, list(axes.flat))
            text = ("Exact KL against NFE, one panel per solver, one line per step grid (Table 2 as a figure).")
        written = save_figure(fig, path)
    if len(refused):
        text += (" A gap in a line is a budget at which the solver's map is not invertible (n/i in the table: no "
                 "change-of-variables density, so no exact value) or that no grid reaches.")
    return written, text


def summarise(frame: pd.DataFrame, args: argparse.Namespace) -> str:
    # the paper's headline is NFE 5; a run without it is summarised at its smallest budget
    nfes = sorted(set(frame["nfe"].astype(int)))
    return headline(frame, 5 if 5 in nfes or not nfes else nfes[0])


def report(frame: pd.DataFrame, line: str, args: argparse.Namespace) -> list[Path]:
    rec = frame[frame["table"] == "recommended"]
    pd.set_option("display.width", 200)
    print(f"Table 1: exact KL(p || q), target {args.target} (d={frame['d'].iloc[0] if len(frame) else '?'}), "
          + ("each solver on its recommended grid" if args.grid == "recommended"
             else f"every solver on the {args.grid} grid")
          + " (n/i: the map is not invertible, no exact density; -: off budget or refused)")
    print(format_table(rec, "kl", "label").to_string())
    print("\nExact TV, same runs")
    print(format_table(rec, "tv", "label").to_string())
    grids = frame[frame["table"] == "grids"]
    if not grids.empty:
        print("\nTable 2: exact KL, every solver on every grid")
        print(format_table(grids.assign(row=grids["sampler"] + " / " + grids["grid"]), "kl", "row").to_string())
    print("\n" + line)
    tables = {"nfe_kl": format_table(rec, "kl", "label"), "nfe_tv": format_table(rec, "tv", "label")}
    if not grids.empty:
        tables["nfe_grids"] = format_table(grids.assign(row=grids["sampler"] + " / " + grids["grid"]), "kl", "row")
    return export_tables({name: table.reset_index() for name, table in tables.items()}, args)


def figures(frame: pd.DataFrame, args: argparse.Namespace) -> list[Path]:
    from studies.plotting import caption

    written, text = plot(frame, args.out / "nfe.png", "recommended", args.grid)
    print(caption(text))
    if (frame["table"] == "grids").any():
        more, text = plot(frame, args.out / "nfe_grids.png", "grids")
        print(caption(text))
        written += more
    return written


STUDY = Study("nfe", build_parser, "nfe.csv", COLUMNS, KEY, jobs, work, summarise, report, figures)


def main(argv=None) -> int:
    return STUDY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
