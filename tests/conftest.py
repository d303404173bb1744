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
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
