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


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory):
    """Every test's cache (cities, tensors, runs, features) lives in one temporary folder, never in the repo's.

    Shared by the session, so a city built by one test is reused by the next; under pytest-xdist
    (``make test``) the workers share one, as the book and the results workers share theirs (the
    caches write atomically under locks). Tests that need an empty cache of their own point
    ``URBANLIB_CACHE`` elsewhere with ``monkeypatch``.
    """
    old = os.environ.get("URBANLIB_CACHE")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "urbanlib-cache"  # the run's folder, above each worker's
        shared.mkdir(exist_ok=True)
        os.environ["URBANLIB_CACHE"] = str(shared)
    else:
        os.environ["URBANLIB_CACHE"] = str(tmp_path_factory.mktemp("urbanlib-cache"))
    yield
    if old is None:
        os.environ.pop("URBANLIB_CACHE", None)
    else:
        os.environ["URBANLIB_CACHE"] = old


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


def need_browser():
    """Skip where headless Chromium (and selenium) is missing; in CI, which runs `make install`, fail instead."""
    from urbanlib.book.browser import BrowserUnavailable, find_chromium

    try:
        find_chromium()
        import selenium  # noqa: F401
    except (BrowserUnavailable, ImportError) as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))
