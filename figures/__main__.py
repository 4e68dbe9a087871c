"""Rebuild every paper figure from the studies: `python -m figures [name ...]`.

Each entry runs a study with its paper configuration (results under results/figures/<name>/) and copies the
figure it writes into figures/<name>.png, which the README shows. Without names, every figure is rebuilt.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = Path("results/figures")

FRONTIER = ["ddim", "ode-accel", "ddpm", "ddpm-posterior", "ddpm-accel", "expint:1", "expint:2", "expint:3",
            "expint:4", "ode-rmp", "ode-rmp-is", "ddpm-rmp", "lijiao-rmp?K=3&c0=1&c1=3", "picard", "picard:2,8", "ode-renoise"]

# name -> (study module, arguments, {PNG the study writes, relative to its --out: file name under figures/})
FIGURES: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "rates": ("studies.rates", ["--sampler", "ode", "ddim", "ode-accel", "ddpm", "ddpm-accel"],
              {"rates.png": "rates.png"}),
    "rates-gaussian-init": ("studies.rates", ["--sampler", "ode", "ddim", "ode-accel", "ddpm", "ddpm-accel",
                                              "--init", "gaussian"], {"rates.png": "rates-gaussian-init.png"}),
    "dimension": ("studies.dimension", [], {"dimension.png": "dimension.png"}),
    "dimension-subspace": ("studies.dimension", ["--family", "subspace"], {"dimension.png": "dimension-subspace.png"}),
    "tightness": ("studies.tightness", [], {"tightness.png": "tightness.png"}),
    # the samplers proven since 2024 against the seed ones at equal NFE, every sampler on the li2023 grid
    "frontier-mix1d": ("studies.nfe", ["--sampler", *FRONTIER, "--grid", "li2023", "--nfe", "12", "24", "48", "96",
                                       "--no-grid-table", "--no-amed"], {"nfe.png": "frontier-mix1d.png"}),
    "frontier-subspace16": ("studies.nfe", ["--sampler", *FRONTIER, "--grid", "li2023", "--nfe", "12", "24", "48",
                                            "96", "--target", "subspace-product:2", "--d", "16", "--no-grid-table",
                                            "--no-amed"], {"nfe.png": "frontier-subspace16.png"}),
    "score-error": ("studies.score_error", [], {"score_error.png": "score_error.png"}),
    "nfe": ("studies.nfe", [], {"nfe.png": "nfe.png", "nfe_grids.png": "nfe_grids.png"}),
    "geometry": ("studies.geometry", [], {"geometry.png": "geometry.png"}),
    "images": ("studies.images", [], {"digits/images.png": "images.png",
                                      "digits/grids/reference.png": "images-reference.png",
                                      "digits/grids/deis_nfe5.png": "images-deis-nfe5.png",
                                      "digits/grids/ddim_nfe5.png": "images-ddim-nfe5.png"}),
}


def build(name: str) -> list[Path]:
    module, args, pngs = FIGURES[name]
    out = RESULTS / name
    study = importlib.import_module(module)
    started = time.time()
    status = study.main([*args, "--out", str(out)])
    if status:
        raise SystemExit(status)
    written = []
    for source, target in pngs.items():
        shutil.copyfile(out / source, HERE / target)
        written.append(HERE / target)
    print(f"[figures] {name}: {', '.join(str(w) for w in written)} ({time.time() - started:.0f} s)", file=sys.stderr)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"figures to rebuild (default all): {', '.join(FIGURES)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in FIGURES]
    if unknown:
        parser.exit(2, f"python -m figures: error: unknown figure {unknown[0]!r}; known: {', '.join(FIGURES)}\n")
    for name in args.names or list(FIGURES):
        build(name)


if __name__ == "__main__":
    main()
