"""What a local Dask cluster costs a sweep (run on demand: `python -m benchmarks.sweeps [--workers 2] [--repeats 3]`).

Prints, per repeat, the parts of a cluster's overhead that `studies.distributed.STARTUP_SECONDS` stands for:
start (LocalCluster and its Client up), warm-up (the first job on every worker, less the same job in a warm
process: imports of torch and the engines, first-call set-up), close; and once, the import of dask.distributed here.
Wall time on a loaded machine says little about an idle one, so it also prints the CPU seconds the cluster cost per
worker (this process and the workers together, less the jobs' own work): about the wall time on an idle machine
with a core per worker.
With --T, it also times one sweep of ddim on mix1d at those T under scheduler none, local and auto, in this order,
and prints the ratios to none (the CSVs must be the same bytes; the script says so or fails).

Timings depend on the machine and on what else runs on it: quote the load average that the script prints with them.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from studies.common import ResultsFile, sweep
from studies.distributed import cores

SMALL_JOB = 4  # T of the warm-up job: ddim on mix1d, G = 1024


def one_job(T: int) -> list[dict]:
    """ddim on mix1d at T levels (G = 1024): the job of this benchmark's sweeps."""
    from exact import measure
    from samplers import get_sampler
    from theory.catalog import get_target
    from theory.schedules import make_grid

    out = measure(get_target("mix1d"), get_sampler("ddim"), make_grid("li2023", T), G=1024)
    return [{"T": T, "metric": m, "value": out[m].value} for m in ("tv", "kl")]


def timed_job(T: int) -> float:
    started = time.perf_counter()
    one_job(T)
    return time.perf_counter() - started


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the workers, once the cluster is closed)."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def overhead(workers: int) -> dict[str, float]:
    import logging

    from dask.distributed import Client, LocalCluster

    cpu = cpu_seconds()
    started = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(workers)
    up = time.perf_counter()
    first = client.run(timed_job, SMALL_JOB)  # every worker, at once
    warm = time.perf_counter()
    client.close()
    cluster.close()
    closed = time.perf_counter()
    return {"start": up - started, "first jobs": warm - up, "first job (max over workers)": max(first.values()),
            "close": closed - warm, "cpu": cpu_seconds() - cpu}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweeps")
    parser.add_argument("--workers", type=int, default=cores())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--T", nargs="*", type=int, default=[], help="also time a sweep at these T")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"cores {cores()}, workers {args.workers}, load average at start {os.getloadavg()}")
    started = time.perf_counter()
    import dask.distributed  # noqa: F401

    print(f"import dask.distributed here: {time.perf_counter() - started:.2f} s")
    timed_job(SMALL_JOB)
    warm_job = statistics.median(timed_job(SMALL_JOB) for _ in range(3))
    print(f"warm job (T={SMALL_JOB}) in this process: {warm_job:.2f} s")
    totals, idle = [], []
    for _ in range(args.repeats):
        parts = overhead(args.workers)
        total = parts["first jobs"] - warm_job + parts["start"] + parts["close"]
        totals.append(total)
        # on an idle machine with a core per worker the workers' parts run side by side: about cpu / workers
        idle.append((parts["cpu"] - args.workers * warm_job) / args.workers)
        print("  ".join(f"{k} {v:.2f} s" for k, v in parts.items()) + f"  -> overhead {total:.2f} s wall, "
              f"{idle[-1]:.2f} s of CPU per worker")
    if totals:
        print(f"cluster overhead: wall median {statistics.median(totals):.2f} s (range {min(totals):.2f}-"
              f"{max(totals):.2f}), CPU per worker median {statistics.median(idle):.2f} s; load average at end "
              f"{os.getloadavg()}")
    if args.T:
        with tempfile.TemporaryDirectory() as folder:
            seconds, files = {}, {}
            for scheduler in ("none", "local", "auto"):
                path = Path(folder) / f"{scheduler}.csv"
                results = ResultsFile(path, ["T", "metric", "value"], ["T", "metric"])
                started = time.perf_counter()
                sweep(args.T, one_job, results, scheduler=scheduler, workers=args.workers)
                seconds[scheduler] = time.perf_counter() - started
                files[scheduler] = path.read_bytes()
            for scheduler, value in seconds.items():
                print(f"sweep T={args.T} scheduler {scheduler}: {value:.2f} s ({value / seconds['none']:.2f} x none)")
            if len(set(files.values())) != 1:
                raise SystemExit("the three results files differ")
            print("the three results files are the same bytes")


if __name__ == "__main__":
    main()
