"""Shared test setup: headless plots, fixed seeds, few threads."""

import os
import random

import matplotlib
import numpy as np
import pytest

matplotlib.use("agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    import torch

    torch.manual_seed(0)
    # One intra-op thread: tests use tiny tensors, and on a busy 2-core box two OpenMP threads
    # next to another process thrash (measured: a tiny training step went from 0.08 s to 4 s).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    import matplotlib.pyplot as plt

    plt.close("all")
