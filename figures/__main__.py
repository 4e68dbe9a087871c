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

# name -> (study module, arguments, the PNG the study writes relative to its --out)
FIGURES: dict[str, tuple[str, list[str], str]] = {
    "rates": ("studies.rates", ["--sampler", "ode", "ddim", "ode-accel", "ddpm", "ddpm-accel"], "rates.png"),
    "rates-gaussian-init": ("studies.rates", ["--sampler", "ode", "ddim", "ode-accel", "ddpm", "ddpm-accel",
                                              "--init", "gaussian"], "rates.png"),
}


def register_figure(name: str, module: str, args: list[str], png: str) -> None:
    FIGURES[name] = (module, args, png)


def build(name: str) -> Path:
    module, args, png = FIGURES[name]
    out = RESULTS / name
    study = importlib.import_module(module)
    started = time.time()
    study.main([*args, "--out", str(out)])
    target = HERE / f"{name}.png"
    shutil.copyfile(out / png, target)
    print(f"[figures] {name}: {target} ({time.time() - started:.0f} s)", file=sys.stderr)
    return target


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
