"""Measuring the samplers on the trained network: one row per sampler and NFE.

For each sampler the grid T is the one on which its counted NFE equals the target (two-evaluation solvers at odd NFE
use AFS where it is registered). AMED's predictor is distilled on the network's bottleneck features for each grid
(samplers.amed.train_amed). Quality: the classifier-FD against the data, the RMS distance from a many-step Heun
reference started from the same noise, optionally Inception FID; beside them the exact KL(p_T || q) of the same
sampler and grid on a Gaussian mixture fitted to the images by EM (theory.em), by flow Monte Carlo.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path

import torch

from exact import METHODS, DivergenceError, measure
from samplers import amed, get_sampler, sampler_names
from samplers.base import REGISTRY, CountingModel, ExactModel, Noise, Sampler, SamplerError
from samplers.solvers import EDMView
from studies.common import KEY_COLUMN, ResultsFile, code_digest, content_key, progress
from studies.geometry import explained_variance
from studies.images.data import ImageData
from studies.images.quality import (
    Classifier,
    InceptionFeatures,
    classifier_features,
    frechet_distance,
    frechet_distance_stats,
    gaussian_stats,
    recognisability,
    reference_error,
    train_classifier,
)
from studies.images.report import figure, format_tables, table_frames, write_geometry, write_grid, write_summary
from studies.images.training import save_atomic
from studies.plotting import caption
from studies.tables import export_tables
from theory.em import fit_em
from theory.fingerprint import digest
from theory.schedules import SCHEDULES, Grid, ScheduleError, make_grid
from theory.solver_grids import recommended_grid
from theory.targets import GaussianMixture

NAME = "images"
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
REFERENCE_SAMPLER = "heun"
NOT_MEASURED = ResultsFile.NOT_MEASURED

COLUMNS = ["data", "sampler", "nfe", "afs", "schedule", "T", "samples", "seed", "train_steps", "classifier_fd",
           "ref_error", "inception_fid", "exact_kl", "exact_kl_se", "kl_method", "note", "seconds"]
KEY = ["data", "sampler", "nfe", "schedule", "samples", "seed", "train_steps"]


# ============================================================================ grids and samplers
def sigma_grid(name: str, T: int, **params) -> Grid:
    """A sigma grid from sigma_max = 80 to sigma_min = 0.002; EDM's polynomial (rho 7) when the schedule is absent:
    sigma_i = (sigma_max^(1/rho) + i/(T-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho (Karras et al. 2022, eq. 5)."""
    if name in SCHEDULES:
        return make_grid(name, T, **params)
    if name != "polynomial":
        raise ScheduleError(f"unknown schedule {name!r}: known schedules are {', '.join(sorted(SCHEDULES))}")
    rho = params.get("rho", 7.0)
    i = torch.arange(T, dtype=torch.float64) / (T - 1)
    a, b = SIGMA_MAX ** (1 / rho), SIGMA_MIN ** (1 / rho)
    return Grid.from_sigmas((a + i * (b - a)) ** rho, "polynomial", {"rho": rho})


def check_schedule(name: str | None) -> None:
    """A forced --schedule must be a registered schedule or EDM's polynomial."""
    if name is not None and name not in SCHEDULES and name != "polynomial":
        raise ScheduleError(f"unknown schedule {name!r}: known schedules are {', '.join(sorted(SCHEDULES))}")


def schedule_for(sampler: str, forced: str | None) -> tuple[str, dict]:
    """The sampler's usual grid (AMED code base pairings, theory.solver_grids) or the forced one.
    The seed paper's li2023 grid does not reach high noise at NFE <= 10, so its samplers run on EDM's grid here."""
    if forced:
        return forced, {}
    name, params = recommended_grid(sampler)
    if name == "li2023" or name not in SCHEDULES:
        return "polynomial", {}
    return name, dict(params)


def schedule_label(schedule: str, params: dict) -> str:
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


def study_samplers(requested: list[str]) -> list[str]:
    """['all']: every registered sampler but AMED (trained per grid, see --amed); else the names, checked."""
    if requested == ["all"]:
        return [n for n in sampler_names() if not n.startswith("amed")]
    for name in requested:
        get_sampler(name)  # raises a clear error for an unknown name
    return list(requested)


def amed_for_nfe(args, model, name: str, nfe: int, schedule: str, params: dict, shape: tuple[int, ...],
                 train_steps: int):
    """A trained AMED sampler ('amed' = AMED-Solver or 'amed-plugin:<base>') and the grid on which it spends `nfe`
    evaluations: N points give 2(N - 1) NFE, odd NFE with AFS (2(N - 1) - 1). The predictor reads the network's
    bottleneck features and is distilled on this grid from a Heun teacher (samplers.amed.train_amed); it is cached
    under <out>/<data>/amed/. Returns (sampler, grid, afs) or None when NFE is not reachable."""
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


def sampler_for_nfe(name: str, nfe: int, schedule: str, params: dict) -> tuple[Sampler, Grid, bool] | None:
    """The registered sampler (or its AFS variant) and the grid on which it spends exactly `nfe` evaluations, with
    whether AFS was needed; None when no grid gives this NFE."""
    sampler = get_sampler(name)
    grid = grid_for_nfe(sampler, nfe, schedule, params)
    if grid is not None:
        return sampler, grid, False
    if "afs:" in REGISTRY:
        with contextlib.suppress(SamplerError):
            used = get_sampler("afs:" + name)
            grid = grid_for_nfe(used, nfe, schedule, params)
            if grid is not None:
                return used, grid, True
    return None


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


# ============================================================================ what every row is compared with
def reference_solution(model, z: torch.Tensor, steps: int, cache: Path | None) -> tuple[torch.Tensor, float]:
    """Heun (second order) on EDM's grid with `steps` steps from the same noise, and its own error estimate (the RMS
    distance to the solution with half the steps, which bounds the error of the finer one for a 2nd-order method)."""
    if cache is not None and cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=False)
        if saved["steps"] == steps and saved["n"] == z.shape[0]:
            return saved["x"].to(z.device), saved["self_error"]
    heun = get_sampler(REFERENCE_SAMPLER)
    fine = run_sampler(heun, model, sigma_grid("polynomial", steps + 1), z, 0)
    coarse = run_sampler(heun, model, sigma_grid("polynomial", steps // 2 + 1), z, 0)
    self_error = reference_error(coarse, fine)
    if cache is not None:
        save_atomic(cache, {"steps": steps, "n": z.shape[0], "x": fine.cpu(), "self_error": self_error})
    return fine, self_error


def feature_classifier(args, data: ImageData, device, log=print) -> tuple[Classifier, float]:
    """The CNN whose features carry the classifier-FD (cached in <out>/<data>/classifier.pt), and its held-out
    accuracy."""
    path = Path(args.out) / args.data / "classifier.pt"
    epochs = 2 if args.tiny else args.classifier_epochs
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved["epochs"] == epochs and saved["n"] == len(data):
            clf = Classifier(data.shape[0], data.classes)
            clf.load_state_dict(saved["state"])
            return clf.to(device).eval(), saved["accuracy"]
    t0 = time.time()
    clf, accuracy = train_classifier(data.images, data.labels, data.classes, epochs=epochs, seed=args.seed,
                                     device=device, progress=progress)
    log(f"feature classifier: held-out accuracy {accuracy:.3f} ({time.time() - t0:.0f} s)")
    save_atomic(path, {"state": clf.state_dict(), "accuracy": accuracy, "epochs": epochs, "n": len(data)})
    return clf, accuracy


def em_mixture(args, data: ImageData, log=print) -> GaussianMixture | None:
    """The EM mixture fitted to the flattened images (cached); None when --kl-samples is 0."""
    if args.kl_samples <= 0:
        return None
    iterations = 2 if args.tiny else 200
    path = Path(args.out) / args.data / (f"mixture_K{args.mixture_k}_reg{args.mixture_reg:g}_it{iterations}_"
                                         f"n{min(len(data), args.em_images)}_s{args.seed}.pt")
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
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
    save_atomic(path, {"weights": mix.weights, "means": mix.means, "covs": mix.covs})
    return mix


def exact_kl(mixture: GaussianMixture, sampler: Sampler, grid: Grid, samples: int, seed: int) -> dict:
    """KL(p || q) of the sampler on the mixture's exact scores, by flow Monte Carlo: the row's cells exact_kl,
    exact_kl_se (the Monte Carlo standard error), kl_method and note; NOT_MEASURED where flow-mc does not apply
    (a stochastic sampler) or refuses (a map that is not a diffeomorphism at a drawn point)."""
    absent = {"exact_kl": NOT_MEASURED, "exact_kl_se": NOT_MEASURED}
    if sampler.info.stochastic:
        return {**absent, "kl_method": "", "note": "exact KL: flow-mc needs a deterministic sampler"}
    try:
        result = measure(mixture, sampler, grid, init="exact", method="flow-mc", samples=samples, seed=seed)
    except DivergenceError as err:
        return {**absent, "kl_method": "flow-mc", "note": f"exact KL refused: {err}"}
    kl = result["kl"]
    return {"exact_kl": kl.value, "exact_kl_se": kl.numerical_error, "kl_method": kl.method, "note": ""}


# ============================================================================ AMED's geometric observation
def trajectory_geometry(model, z: torch.Tensor, steps: int) -> torch.Tensor:
    """The AMED paper's observation on this model: Heun probability-flow trajectories from xt = sigma_max z on EDM's
    grid, in EDM coordinates, each a cloud of steps + 1 points in R^d; the share of its variance in the top 1, 2, 3
    principal components (studies.geometry.explained_variance), shape (n, 3)."""
    grid = sigma_grid("polynomial", steps + 1).to(z.device)
    t = grid.sigma
    view = EDMView(CountingModel(model))
    x = t[0] * z
    states = [x]
    with torch.no_grad():
        for i in range(steps):
            # Heun: an Euler predictor, then the trapezoidal corrector (Karras et al. 2022, Algorithm 1)
            d_cur = view.eps(x, t[i])
            x_prime = x + (t[i + 1] - t[i]) * d_cur
            x = x + (t[i + 1] - t[i]) * 0.5 * (d_cur + view.eps(x_prime, t[i + 1]))
            states.append(x)
    paths = torch.stack(states).reshape(steps + 1, z.shape[0], -1)
    return explained_variance(paths)


def geometry_rows(shares: torch.Tensor, label: str, steps: int) -> list[dict]:
    """Mean share per k over trajectories, with a normal 95% interval of the mean and the 2.5%, 97.5% quantiles."""
    rows = []
    for k in range(shares.shape[1]):
        v = shares[:, k].double()
        half = 1.96 * float(v.std()) / math.sqrt(v.numel())
        rows.append({"model": label, "k": k + 1, "mean": float(v.mean()), "ci_low": float(v.mean()) - half,
                     "ci_high": float(v.mean()) + half, "q025": float(torch.quantile(v, 0.025)),
                     "q975": float(torch.quantile(v, 0.975)), "trajectories": v.numel(), "steps": steps})
    return rows


# ============================================================================ the study
def run_study(args, data: ImageData, model, facts: dict, device: torch.device, log=print) -> list[dict]:
    """Every sampler (and AMED variant) at every NFE, appended to <out>/<data>/images.csv as each finishes (a
    restart skips rows present); then the summary, the geometry, the table and (unless --no-plot) the figures.
    Returns the rows of this configuration, read back from the CSV."""
    out = Path(args.out) / args.data
    results = ResultsFile(out / f"{NAME}.csv", [*COLUMNS, KEY_COLUMN], [*KEY, KEY_COLUMN],
                          fresh=getattr(args, "fresh", False))
    plot = not args.no_plot
    model.amp = False  # sampling in float32: bfloat16 would swamp the reference error
    model.requires_grad_(False)  # AMED's distillation differentiates through the network's input, not its weights
    n = args.samples
    clf, accuracy = feature_classifier(args, data, device, log)
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
    write_summary(summary, out / f"{NAME}_summary.json")
    if plot:
        write_grid(reference[:64], out / "grids" / "reference.png", "reference (many-step Heun)")
        write_grid(data.images[:64], out / "grids" / "data.png", f"{data.name} data")
    mixture = em_mixture(args, data, log)
    names = study_samplers(args.sampler)
    amed_names = list(args.amed)
    tasks = [(name, nfe) for name in names + amed_names for nfe in args.nfe]
    # What every row rests on besides its sampler and grid (studies.common, content keys): the network's weights,
    # the data, the feature classifier, the EM mixture and the settings of the measurement.
    shared = {"target": {"network": digest(model), "data": (data.name, len(data)), "classifier": digest(clf),
                         "mixture": mixture},
              "engine": {"reference_steps": args.reference_steps, "inception": inception is not None,
                         "kl_samples": args.kl_samples, "method": "flow-mc", "device": device.type}}
    code = code_digest(run_sampler, reference_solution, exact_kl, frechet_distance, classifier_features,
                       reference_error, METHODS["flow-mc"], model)
    keyed = []
    for name, nfe in tasks:
        schedule, params = schedule_for(name, args.schedule)
        key = dict(data=args.data, sampler=name, nfe=nfe, schedule=schedule_label(schedule, params), samples=n,
                   seed=args.seed, train_steps=facts["step"])
        if name in amed_names:  # trained in the loop below: keyed by its training settings
            afs = nfe % 2 == 1
            points = (nfe + (1 if afs else 0)) // 2 + 1
            sampler = {"amed": name, "afs": afs, "draws": args.amed_draws, "batch": args.amed_batch}
            grid = sigma_grid(schedule, points, **params) if points >= 2 else None
            found, ingredients_code = None, digest(code, code_digest(amed.train_amed, get_sampler(name)))
        else:
            found = sampler_for_nfe(name, nfe, schedule, params)
            sampler, grid = (None, None) if found is None else found[:2]
            ingredients_code = digest(code, code_digest(sampler))
        ingredients = {**shared, "sampler": sampler, "grid": grid, "code": ingredients_code}
        keyed.append((name, nfe, {**key, KEY_COLUMN: content_key(ingredients)}, found))
    results.report_others(key for _, _, key, _ in keyed)
    bar = progress(keyed, total=len(keyed), desc="samplers x NFE")
    for name, nfe, key, found in bar:
        bar.set_postfix(sampler=name, nfe=nfe)
        schedule, params = schedule_for(name, args.schedule)
        if results.done(**key):
            continue
        t1 = time.time()
        if name in amed_names:
            found = amed_for_nfe(args, model, name, nfe, schedule, params, data.shape, facts["step"])
            if found is None:
                continue
            used, grid, afs = found
        else:
            if found is None:
                continue  # no grid gives this NFE (a two-evaluation solver at odd NFE without AFS): "-" in the table
            used, grid, afs = found
        samples = run_sampler(used, model, grid, z, args.seed)
        row = dict(key, afs=int(afs), T=grid.T, note="")
        # The cells this run asks for; the others stay empty (not requested).
        asked = ["classifier_fd", "ref_error"] + (["inception_fid"] if inception is not None else []) + (
            ["exact_kl", "exact_kl_se"] if mixture is not None else [])
        if not torch.all(torch.isfinite(samples)):
            row.update({column: NOT_MEASURED for column in asked})
            row.update(note="non-finite samples", seconds=round(time.time() - t1, 2))
            results.append([row])
            continue
        row["classifier_fd"] = frechet_distance(classifier_features(clf, samples), data_features)
        # The reference follows the probability-flow ODE from the same noise: a stochastic sampler has no distance
        # to it that measures its discretisation error.
        row["ref_error"] = NOT_MEASURED if used.info.stochastic else reference_error(samples, reference)
        if inception is not None:
            row["inception_fid"] = frechet_distance(inception(samples), inception_data)
        if mixture is not None:
            if name in amed_names:
                row.update(exact_kl=NOT_MEASURED, exact_kl_se=NOT_MEASURED,
                           note="exact KL: the AMED predictor is distilled on the network, not on the mixture")
            else:
                row.update(exact_kl(mixture, used, grid, args.kl_samples, args.seed))
        row["seconds"] = round(time.time() - t1, 2)
        results.append([row])
        if plot and nfe in args.grid_nfe:
            write_grid(samples[:64], out / "grids" / f"{name.replace(':', '-')}_nfe{nfe}.png",
                              f"{used.info.name}, NFE {nfe}")
    geometry_note = ""
    if args.geometry > 0:
        z_geo = z[: args.geometry]
        found = {"network": trajectory_geometry(model, z_geo, args.reference_steps)}
        if mixture is not None:
            found[f"em-mixture-K{args.mixture_k}"] = trajectory_geometry(
                ExactModel(mixture), z_geo.reshape(z_geo.shape[0], -1).cpu(), args.reference_steps)
        geo_rows = [row for label, sh in found.items() for row in geometry_rows(sh, label, args.reference_steps)]
        geometry_note = write_geometry(geo_rows, out / f"{NAME}_geometry.csv")
        log(geometry_note)
    current = {key[KEY_COLUMN] for _, _, key, _ in keyed}  # this command's rows, not those measured otherwise
    labels = {name: schedule_label(*schedule_for(name, args.schedule)) for name in names + amed_names}
    rows = [r for r in results.rows() if r["samples"] == str(n) and r["seed"] == str(args.seed)
            and r["train_steps"] == str(facts["step"]) and labels.get(r["sampler"]) == r["schedule"]
            and int(r["nfe"]) in args.nfe and r[KEY_COLUMN] in current]
    table = format_tables(rows, args.nfe, floor, accuracy, ref_self, facts)
    table = table.replace("\n\n", f" Reference (many-step Heun) classifier-FD {reference_fd:.2f}; "
                          f"{100 * recognised['confident']:.0f}% of its samples classified with probability > 0.9."
                          "\n\n", 1)
    if geometry_note:
        table += "\n" + geometry_note + "\n"
    (out / f"{NAME}_table.md").write_text(table)
    print(table)
    export_tables(table_frames(rows, args.nfe), argparse.Namespace(out=out, table=args.table))
    if plot:
        _, text = figure(rows, out / f"{NAME}.png", floor)
        print(caption(text))
    return rows
