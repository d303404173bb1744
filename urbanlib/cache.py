"""Where urbanlib caches what later notebooks reuse (datasets, tensors, checkpoints, embeddings).

``$URBANLIB_CACHE`` if set, else ``.cache/`` under the repository root. Everything under it can be
deleted at any time; it is rebuilt on demand. :func:`file_lock` is the one lock every cache, store
and worker takes, so two processes share them safely.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def file_lock(path: str | Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory ``flock`` on ``path`` for the block.

    With ``wait`` (the default) it blocks until the lock is free and yields True; without, it yields
    False at once when another process holds it. The kernel drops the lock when its holder exits or
    is killed, so no stale lock ever needs cleaning up.
    """
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            held = False
        else:
            held = True
        if not held:  # yielded outside the except, so an error in the caller's block reads as its own
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
