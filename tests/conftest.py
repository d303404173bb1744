"""Shared test setup: headless plots, fixed seeds, few threads, nothing written into the repository."""

import os
import random
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Hypothesis keeps its examples and caches in $HYPOTHESIS_STORAGE_DIRECTORY, else ./.hypothesis (the repo).
# It reads the variable on first use, after this; `database=None` alone would still leave its caches there.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "urbanlib-hypothesis"))


@pytest.fixture(autouse=True, scope="session")
def _cache_and_results_in_temporary_folders(tmp_path_factory):
    """Every test's cache (cities, tensors, runs, features) and results live in temporary folders, never the repo's.

    The cache is shared by the session, so a city built by one test is reused by the next; under
    pytest-xdist (``make test``) the workers share one, as the book and the results workers share
    theirs (the caches write atomically under locks). Tests that need an empty cache of their own
    point ``URBANLIB_CACHE`` elsewhere with ``monkeypatch``; tests that read the committed tier ask
    for :func:`committed_results`.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "urbanlib-cache"  # the run's folder, above each worker's
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("urbanlib-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("URBANLIB_CACHE", str(cache))
        mp.setenv("URBANLIB_RESULTS", str(tmp_path_factory.mktemp("urbanlib-results")))
        yield


@pytest.fixture
def committed_results(monkeypatch):
    """The repository's ``results/``, as ``URBANLIB_RESULTS`` for this test: for tests that read the committed tier."""
    path = Path(__file__).resolve().parents[1] / "results"
    monkeypatch.setenv("URBANLIB_RESULTS", str(path))
    return path


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
