"""Test-wide settings: one intra-op thread (the tensors here are small; threads only contend), float64 by default."""

import torch

torch.set_num_threads(1)
