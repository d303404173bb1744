"""Where datasets that must not be committed live, so a manifest entry can name one without a path.

``data_dir: urbanclip-release`` in ``notebooks/runs.yml`` means a folder of that name under the
datasets root: ``$URBANLIB_DATASETS`` if set, else ``shared/datasets`` beside the checkout (where a
workplace keeps data whose license forbids committing it). A path that exists is used as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from urbanlib.cache import REPO_ROOT

DATASETS_ENV = "URBANLIB_DATASETS"  # a folder of datasets that data_dir may name


def datasets_root() -> Path:
    """The folder whose sub-folders ``data_dir`` may name."""
    env = os.environ.get(DATASETS_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


def resolve_data_dir(data_dir: str) -> Path:
    """The data folder: ``data_dir`` itself when it exists (or is absolute), else that name under the datasets root."""
    path = Path(data_dir)
    if path.is_dir() or path.is_absolute():
        return path
    return datasets_root() / data_dir
