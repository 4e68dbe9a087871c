"""Test-wide settings: one intra-op thread (the tensors here are small; threads only contend), float64 by default.

The BLAS and OpenMP pools of numpy and scipy get one thread too (unless the environment says otherwise): the suite
runs on one pytest-xdist worker per core, and a pool per worker sized to every core would only oversubscribe them.
These variables are read when the libraries load, so they are set before torch (and with it numpy) is imported.
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import torch  # noqa: E402

torch.set_num_threads(1)
