"""Wall-clock cost of the exact engines (run on demand: `python -m benchmarks.engines [--T 64 256 1024]`).

Timings depend on the machine and on what else runs on it; the README quotes a run of this script on an idle
2-core CPU. Nothing in the test suite asserts a time.
"""

from __future__ import annotations

import argparse
import time

import torch

from exact import measure
from samplers import get_sampler
from theory.catalog import get_target
from theory.schedules import make_grid


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines")
    parser.add_argument("--T", nargs="+", type=int, default=[64, 256, 1024])
    parser.add_argument("--samplers", nargs="+", default=["ddim", "ode-accel", "ddpm", "ddpm-accel"])
    parser.add_argument("--target", default="mix1d")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    target = get_target(args.target)
    print(f"{'sampler':<12} {'T':>6} {'method':<16} {'seconds':>8} {'TV':>11} {'TV err':>8} {'KL':>11} {'KL err':>8}")
    for name in args.samplers:
        for T in args.T:
            started = time.perf_counter()
            out = measure(target, get_sampler(name), make_grid("li2023", T))
            seconds = time.perf_counter() - started
            tv, kl = out["tv"], out["kl"]
            print(f"{name:<12} {T:>6} {tv.method:<16} {seconds:>8.2f} {tv.value:>11.4e} {tv.numerical_error:>8.1e} "
                  f"{kl.value:>11.4e} {kl.numerical_error:>8.1e}", flush=True)


if __name__ == "__main__":
    main()
