"""The jobs that tests/test_distributed.py sends to Dask workers.

A worker imports the module a job function lives in. These live apart from the test module so that a fresh worker
imports only what a job needs (exact, samplers, theory: torch), not pytest, pandas and studies.common as well:
about a second less of start-up per worker on the 2-core machine, where both workers start at once.
"""

from __future__ import annotations

import os
import time

from exact import DivergenceError, measure
from samplers import get_sampler
from theory.catalog import get_target
from theory.schedules import make_grid

# ddpm on a 2-D Gaussian: exact KL, seeded Monte Carlo TV (so the bytes also check that seeds travel with the job);
# this engine needs no torch.func, whose first call costs every fresh process an import of torch._dynamo
JOBS = [(T, seed) for T in (4, 8, 16, 32) for seed in (0, 1)]


def measure_job(job) -> list[dict]:
    T, seed = job
    out = measure(get_target("gaussian", d=2), get_sampler("ddpm"), make_grid("li2023", T), seed=seed,
                  mc_samples=100_000)
    return [{"T": T, "seed": seed, "metric": m, "value": r.value, "numerical_error": r.numerical_error,
             "method": r.method} for m, r in sorted(out.items())]


def failing_job(job) -> list[dict]:
    """Bad input at job 2; every attempt leaves a line in the file named by the job, so retries would show."""
    index, log = job
    with open(log, "a") as fh:
        fh.write(f"{index}\n")
    if index == 2:
        raise DivergenceError(f"job {index} is bad input")
    return [{"T": index, "seed": 0, "metric": "none", "value": 0.0, "numerical_error": 0.0, "method": "none"}]


def pid_job(job) -> list[dict]:
    index, seconds = job
    time.sleep(seconds)
    return [{"T": index, "seed": os.getpid(), "metric": "pid", "value": 0.0, "numerical_error": 0.0,
             "method": "none"}]
