"""Test-suite settings: single-threaded torch (2-core CI; threads only add contention)."""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
