"""The paper figures and the study commands that make them: `python -m figures [name ...]`.

    python -m figures                      # list the figures: name, study command, measured time (runs nothing)
    python -m figures rates nfe            # run those studies; figures under results/figures/<name>/
    python -m figures rates --out DIR      # ... under DIR/<name>/
    python -m figures rates --update-docs  # ... and copy the PNGs into figures/, which the README shows
    python -m figures all                  # every figure (hours on a 2-core CPU)

Each figure is a study run with its paper configuration; the study writes PNG, PDF and SVG side by side. The
tracked files in figures/ (PNG only, to keep the repository small) change only with --update-docs. A figure's time
is stored below with the machine it was measured on, from a fresh clone (an empty results folder: nothing resumed),
or says 'not measured'.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent  # the tracked figures the README shows
RESULTS = Path("results/figures")
FORMATS = ("png", "pdf", "svg")


@dataclass(frozen=True)
class Figure:
    """One paper figure: the study and its arguments, the PNGs it writes (relative to its --out) and the names
    they have under figures/, and its measured time with the machine it was measured on (None: not measured)."""

    module: str
    args: tuple[str, ...]
    outputs: dict[str, str]
    seconds: float | None = None
    machine: str = ""

    def command(self, out: Path) -> str:
        return shlex.join(["python", "-m", self.module, *self.args, "--out", str(out)])

    def timing(self) -> str:
        if self.seconds is None:
            return "not measured"
        minutes = self.seconds / 60
        shown = f"{self.seconds:.0f} s" if self.seconds < 120 else f"{minutes:.0f} min"
        return f"{shown} ({self.machine})" if self.machine else shown


FRONTIER = ("ddim", "ode-accel", "ddpm", "ddpm-posterior", "ddpm-accel", "expint:1", "expint:2", "expint:3",
            "expint:4", "ode-rmp", "ode-rmp-is", "ddpm-rmp", "lijiao-rmp?K=3&c0=1&c1=3", "picard", "picard:2,8",
            "ode-renoise")
SEED_SAMPLERS = ("ode", "ddim", "ode-accel", "ddpm", "ddpm-accel")

# A time is the wall time of `python -m figures NAME` in a fresh clone (Python start-up and imports included), with
# the machine it ran on; the others are to be filled in the same way, never estimated.
SHARED = "fresh clone; the 2-core machine at load average 3-5 (other jobs running), not idle; 2026-12-08"
PAIRED = "fresh clone; the 2-core machine running this and one other study side by side; 2026-12-08"
FIGURES: dict[str, Figure] = {
    "rates": Figure("studies.rates", ("--sampler", *SEED_SAMPLERS), {"rates.png": "rates.png"}, 91, SHARED),
    "rates-gaussian-init": Figure("studies.rates", ("--sampler", *SEED_SAMPLERS, "--init", "gaussian"),
                                  {"rates.png": "rates-gaussian-init.png"}, 79, SHARED),
    "dimension": Figure("studies.dimension", (), {"dimension.png": "dimension.png"}, 261, PAIRED),
    "dimension-subspace": Figure("studies.dimension", ("--family", "subspace"),
                                 {"dimension.png": "dimension-subspace.png"}, 275, PAIRED),
    "tightness": Figure("studies.tightness", (), {"tightness.png": "tightness.png"}, 178, PAIRED),
    # the samplers proven since 2024 against the seed ones at equal NFE, every sampler on the li2023 grid
    "frontier-mix1d": Figure("studies.nfe", ("--sampler", *FRONTIER, "--grid", "li2023", "--nfe", "12", "24", "48",
                                             "96", "--no-grid-table", "--no-amed"), {"nfe.png": "frontier-mix1d.png"}),
    "frontier-subspace16": Figure("studies.nfe", ("--sampler", *FRONTIER, "--grid", "li2023", "--nfe", "12", "24",
                                                  "48", "96", "--target", "subspace-product:2", "--d", "16",
                                                  "--no-grid-table", "--no-amed"),
                                  {"nfe.png": "frontier-subspace16.png"}),
    "score-error": Figure("studies.score_error", (), {"score_error.png": "score_error.png"}, 24, PAIRED),
    "nfe": Figure("studies.nfe", (), {"nfe.png": "nfe.png", "nfe_grids.png": "nfe_grids.png"}),
    "geometry": Figure("studies.geometry", (), {"geometry.png": "geometry.png"}, 29, PAIRED),
    "isotropic": Figure("studies.isotropic", (), {"isotropic.png": "isotropic.png"}, 200, PAIRED),
    "papers": Figure("studies.papers", (), {"papers.png": "papers.png"}, 199, PAIRED),
    "images": Figure("studies.images", (), {"digits/images.png": "images.png",
                                            "digits/grids/reference.png": "images-reference.png",
                                            "digits/grids/deis_nfe5.png": "images-deis-nfe5.png",
                                            "digits/grids/ddim_nfe5.png": "images-ddim-nfe5.png"}),
}


class FigureParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit status 2 (as the studies' parsers)
        self.exit(2, f"{self.prog}: error: {message}\n")


def listing(out: Path = RESULTS) -> str:
    """Every figure with the command that makes it and its measured time."""
    lines = [f"python -m figures NAME ... (figures under {out}/<name>/; --update-docs also copies the PNGs into "
             "figures/):"]
    for name, figure in FIGURES.items():
        lines.append(f"  {name}: {figure.timing()}\n      {figure.command(out / name)}")
    return "\n".join(lines)


def build(name: str, out: Path = RESULTS, update_docs: bool = False) -> list[Path]:
    """Run figure `name`'s study into out/<name>/; its figure files (every format the study wrote) and, with
    `update_docs`, the PNGs copied into figures/ (HERE). Nothing under figures/ changes otherwise."""
    figure = FIGURES[name]
    folder = Path(out) / name
    study = importlib.import_module(figure.module)
    started = time.perf_counter()
    status = study.main([*figure.args, "--out", str(folder)])
    if status:
        raise SystemExit(status)
    seconds = time.perf_counter() - started
    written = []
    for source in figure.outputs:
        png = folder / source
        if not png.is_file():
            raise SystemExit(f"python -m figures: error: {name}: the study wrote no {png}")
        written += [png.with_suffix("." + kind) for kind in FORMATS if png.with_suffix("." + kind).is_file()]
    if update_docs:
        for source, target in figure.outputs.items():
            shutil.copyfile(folder / source, HERE / target)
            written.append(HERE / target)
    print(f"[figures] {name}: {', '.join(str(path) for path in written)} ({seconds:.0f} s; record it in "
          "figures/__main__.py FIGURES only if this was a fresh clone)", file=sys.stderr)
    return written


def main(argv=None) -> int:
    parser = FigureParser(prog="python -m figures", description=__doc__.split("\n\n")[0],
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"figures to make ('all' for every one): {', '.join(FIGURES)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="parent folder of each figure's results folder")
    parser.add_argument("--update-docs", action="store_true",
                        help="copy each PNG into figures/ (the tracked files the README shows)")
    args = parser.parse_args(argv)
    if not args.names:
        print(listing(args.out))
        return 0
    names = list(FIGURES) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure {unknown[0]!r}; known: {', '.join(FIGURES)} (or 'all')")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {str(args.out)!r} is a file, not a folder")
    for name in dict.fromkeys(names):
        build(name, args.out, args.update_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
