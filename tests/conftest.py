"""Test-wide settings: one intra-op thread (the tensors here are small; threads only contend), float64 by default.

The BLAS and OpenMP pools of numpy and scipy get one thread too (unless the environment says otherwise): the suite
runs on one pytest-xdist worker per core, and a pool per worker sized to every core would only oversubscribe them.
These variables are read when the libraries load, so they are set before torch (and with it numpy) is imported.
"""

import os
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import torch  # noqa: E402

torch.set_num_threads(1)

# The files whose tests take longest, longest first (measured on the 2-core machine with --durations). With
# --dist loadfile and --no-loadscope-reorder (pyproject.toml), pytest-xdist hands out whole files in collection
# order, so starting with the long ones and ending with the many short ones lets the workers finish together
# (xdist's own reordering, by number of tests, would leave three-test files that take 15 s for last). Only the
# order of files changes, never the order of tests within a file; a file not listed keeps its place after these.
LONGEST_FIRST = [
    "test_orderings.py",
    "test_images.py",
    "test_orders.py",
    "test_divergences.py",
    "test_distributed.py",
    "test_rates.py",
    "test_li2023_orders.py",
    "test_subspace.py",
    "test_diffusers_crosscheck.py",
    "test_diffusers_samplers.py",
    "test_frontier.py",
    "test_cli.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: order within a file kept


def pytest_xdist_auto_num_workers(config):
    """Workers for `-n auto` (pyproject.toml's addopts): with --dist loadfile a file never runs on two workers, so a
    run of named files gets no more workers than files, and a run of one file none (pytest runs it in this process:
    each worker would import torch only to wait). A folder, or no argument (testpaths), leaves xdist's own count,
    one per core, capped by --maxprocesses; PYTEST_XDIST_AUTO_NUM_WORKERS, where set, decides."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    files = set()
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0])
        if path.is_dir():
            return None
        files.add(path.resolve())
    return min(len(files), os.cpu_count() or 1) if len(files) > 1 else 0
