"""Wall-clock cost of the exact engines and of the study jobs that use them, with the speed-up over the plain
reference kept in benchmarks/reference.py (the engines' inner steps before issue 9), both measured in this run.

    python -m benchmarks                          # every job (the reference of the long jobs is left out, see below)
    python -m benchmarks --jobs main ddpm-1024    # a subset; --list names them
    python -m benchmarks --quick                  # the in-process engine jobs only, one run each
    python -m benchmarks --reference all          # also time the reference of the long jobs (tens of minutes)

Study jobs are timed as whole processes (`python -m studies.rates ...` into a fresh folder, interpreter start and
the figure included), engine jobs in this process (`exact.measure`). Each job runs --repeats times (3) and reports
the median; its reference runs --reference-repeats times (1). The speed-up is reference median / median. Other
programs on the machine slow both sides alike, so the ratio is the figure to compare across machines; absolute
times hold for the load shown in the header (1-minute load average before and after). Both sides' numbers are
compared and the largest relative difference printed (they agree to rounding, tests/test_pinned.py). Nothing in the
test suite asserts a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.reference import reference_engines

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Job:
    name: str
    what: str
    study: list[str] | None = None  # arguments of python -m studies.rates (a whole-process job)
    engine: dict | None = None  # arguments of exact.measure (an in-process job)
    reference: str = "default"  # "default": timed unless --no-reference; "long": only with --reference all
    note: str = ""
    quick: bool = False


JOBS = [
    Job("main", "studies.rates --sampler ode-accel (mix1d, T 8..1024, grid-1d-flow)",
        study=["--sampler", "ode-accel"]),
    Job("ddpm-1024", "studies.rates --sampler ddpm --T 1024 (grid-1d-kernel)",
        study=["--sampler", "ddpm", "--T", "1024"]),
    Job("all-short", "studies.rates --sampler all --T 8 16 32 64 (14 samplers)",
        study=["--sampler", "all", "--T", "8", "16", "32", "64"]),
    Job("all", "studies.rates --sampler all (14 samplers, T 8..1024)", study=["--sampler", "all"], reference="long"),
    Job("flow-mc-64", "studies.rates --sampler ode-accel --target mixture-diag --d 64 --T 64 (flow-mc, 1e4 draws)",
        study=["--sampler", "ode-accel", "--target", "mixture-diag", "--d", "64", "--T", "64"], reference="long",
        note="ratio: see engine flow-mc"),
    Job("grid-1d-flow", "measure mix1d ode-accel T=256", quick=True,
        engine=dict(target="mix1d", sampler="ode-accel", T=256)),
    Job("grid-1d-kernel", "measure mix1d ddpm T=256", quick=True, engine=dict(target="mix1d", sampler="ddpm", T=256)),
    Job("gaussian", "measure gaussian d=16 ddpm T=256 (MC TV, 2e5 draws)", quick=True,
        engine=dict(target="gaussian", d=16, sampler="ddpm", T=256)),
    Job("product", "measure product-bimodal d=64 ddpm T=64 (2e4 draws)", quick=True,
        engine=dict(target="product-bimodal", d=64, sampler="ddpm", T=64)),
    Job("flow-mc", "measure mixture-diag d=64 ode-accel T=64, 500 draws", quick=True,
        engine=dict(target="mixture-diag", d=64, sampler="ode-accel", T=64, samples=500)),
]


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    values: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} intra-op thread), "
            f"Python {platform.python_version()}")


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def _study_once(args: list[str], reference: bool) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="bench-") as out:
        module = ["benchmarks.reference", "rates"] if reference else ["studies.rates"]
        command = [sys.executable, "-m", *module, *args, "--out", out]
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
        import pandas as pd

        frame = pd.read_csv(Path(out) / "rates.csv")
        values = {(r.sampler, r.T, r.metric): r.value for r in frame.itertuples()}
    return seconds, values


def _engine_once(options: dict, reference: bool) -> tuple[float, dict]:
    from exact import measure
    from samplers import get_sampler
    from theory.catalog import get_target
    from theory.schedules import make_grid

    options = dict(options)
    target = get_target(options.pop("target"), d=options.pop("d", None))
    sampler = get_sampler(options.pop("sampler"))
    grid = make_grid("li2023", options.pop("T"))
    context = reference_engines() if reference else _nothing()
    with context:
        started = time.perf_counter()
        result = measure(target, sampler, grid, **options)
        seconds = time.perf_counter() - started
    return seconds, {k: m.value for k, m in result.items()}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_job(job: Job, repeats: int, reference_repeats: int) -> tuple[Timing, Timing | None]:
    def once(reference: bool) -> tuple[float, dict]:
        return _study_once(job.study, reference) if job.study is not None else _engine_once(job.engine, reference)

    new = Timing()
    for _ in range(repeats):
        seconds, new.values = once(False)
        new.seconds.append(seconds)
    if reference_repeats <= 0:
        return new, None
    ref = Timing()
    for _ in range(reference_repeats):
        seconds, ref.values = once(True)
        ref.seconds.append(seconds)
    return new, ref


def agreement(a: dict, b: dict) -> float:
    """Largest relative difference between two runs' values (same keys)."""
    gaps = [abs(a[k] - b[k]) / abs(b[k]) for k in a if k in b and b[k] != 0]
    return max(gaps) if gaps else float("nan")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", nargs="+", default=None, help="job names (default: all; --list shows them)")
    parser.add_argument("--list", action="store_true", help="list the jobs and exit")
    parser.add_argument("--quick", action="store_true", help="the in-process engine jobs only, one run each")
    parser.add_argument("--repeats", type=int, default=3, help="runs per job (the median is reported)")
    parser.add_argument("--reference-repeats", type=int, default=1, help="runs of each job's reference")
    parser.add_argument("--no-reference", action="store_true", help="time the current engines only")
    parser.add_argument("--reference", choices=["default", "all"], default="default",
                        help="'all' also times the reference of the long jobs (tens of minutes each)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the in-process jobs")
    args = parser.parse_args(argv)
    names = [job.name for job in JOBS]
    for name in args.jobs or []:
        if name not in names:
            parser.error(f"unknown job {name!r}: known jobs are {', '.join(names)}")
    if args.repeats < 1 or args.reference_repeats < 0 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1, --reference-repeats >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.list:
        for job in JOBS:
            print(f"{job.name:<15} {job.what}")
        return
    torch.set_num_threads(args.threads)
    jobs = [job for job in JOBS if (args.jobs is None or job.name in args.jobs) and (not args.quick or job.quick)]
    repeats = 1 if args.quick else args.repeats
    print(f"machine: {machine()}")
    print(f"load average (1 min) at start: {load()}")
    print(f"{'job':<15} {'seconds':>8} {'runs':>4} {'reference':>9} {'speed-up':>8} {'same to':>8}  what")
    for job in jobs:
        reference_repeats = 0 if args.no_reference else args.reference_repeats
        skipped = ""
        if job.reference == "long" and args.reference != "all" and reference_repeats:
            reference_repeats, skipped = 0, "reference left out (long; --reference all)"
        try:
            new, ref = run_job(job, repeats, reference_repeats)
        except RuntimeError as err:  # a failing job is reported in its row; the others still run
            print(f"{job.name:<15} failed: {str(err).strip().splitlines()[-1]}", flush=True)
            continue
        if ref is None:
            ref_text, ratio, same = "-", "-", "-"
        else:
            ref_text, ratio = f"{ref.median:.2f}", f"{ref.median / new.median:.1f}x"
            same = f"{agreement(new.values, ref.values):.0e}"
        note = "; ".join(part for part in (skipped, job.note) if part)
        print(f"{job.name:<15} {new.median:>8.2f} {len(new.seconds):>4} {ref_text:>9} {ratio:>8} {same:>8}  {job.what}"
              + (f" [{note}]" if note else ""), flush=True)
    print(f"load average (1 min) at end: {load()}")


if __name__ == "__main__":
    main()
