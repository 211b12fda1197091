"""Suite-wide settings: one intra-op thread per test process (pytest -n 2 already uses
both cores; oversubscribed small matmuls are orders of magnitude slower)."""

import os

import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)
