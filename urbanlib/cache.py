"""Where urbanlib caches what later notebooks reuse (datasets, tensors, checkpoints, embeddings).

``$URBANLIB_CACHE`` if set, else ``.cache/`` under the repository root. Everything under it can be
deleted at any time; it is rebuilt on demand.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """The cache folder (created on first use)."""
    env = os.environ.get("URBANLIB_CACHE")
    root = Path(env) if env else REPO_ROOT / ".cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(kind: str) -> Path:
    """A sub-folder of the cache for one kind of artefact (``"tensors"``, ``"runs"``, ...)."""
    d = cache_root() / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


def stable_hash(obj, n: int = 16) -> str:
    """Short sha256 of a JSON-serialisable object (keys sorted), for cache keys."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:n]
