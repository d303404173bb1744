"""Where urbanlib caches what later notebooks reuse (datasets, tensors, checkpoints, embeddings).

``$URBANLIB_CACHE`` if set, else ``.cache/`` under the repository root. Everything under it can be
deleted at any time; it is rebuilt on demand. :func:`file_lock` is the one lock every cache, store
and worker takes, so two processes share them safely; :func:`atomic_write` is the one way a file (or a
folder) is put in place whole, so a kill never leaves half of one.

:data:`REPO_ROOT` (the repository root) and :func:`results_root` (the committed results folder,
``$URBANLIB_RESULTS`` if set) are here for every module that needs them (this is the lowest layer that does).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the folder holding urbanlib/, notebooks/, results/


def cache_root() -> Path:
    """The cache folder (created on first use)."""
    env = os.environ.get("URBANLIB_CACHE")
    root = Path(env) if env else REPO_ROOT / ".cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


def results_root() -> Path:
    """The results folder: ``$URBANLIB_RESULTS`` if set, else the repository's ``results/``.

    Read at each call, not at import, so a test (or a worker) that points ``URBANLIB_RESULTS``
    elsewhere after importing urbanlib is obeyed.
    """
    return Path(os.environ.get("URBANLIB_RESULTS", REPO_ROOT / "results"))


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


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Put ``path`` in place whole or not at all: the block writes a temporary path, which then replaces it.

    The temporary path is ``.<stem>.tmp<pid><suffix>`` in ``path``'s folder: the same file system, so
    :func:`os.replace` moves it in one step, and the same suffix, for writers that pick a format by it
    (``np.save`` adds ``.npy`` to a name without it). The block may write a file there or create a folder;
    a folder already at ``path`` is removed just before the replace (a folder cannot be swapped in one
    step, so a reader may briefly find none, never a partial one).

    An exception in the block removes the temporary file or folder and leaves ``path`` as it was. A block
    that leaves nothing at the temporary path replaces nothing: how a writer gives up, e.g. when another
    process put ``path`` in place meanwhile.

    Example::

        with atomic_write(folder / "table.csv") as tmp:
            df.to_csv(tmp, index=False)

    Yields:
        The temporary path to write.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    _remove(tmp)  # left by a killed process that had this process id
    try:
        yield tmp
        if tmp.exists() or tmp.is_symlink():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    """Delete a file, link or folder at ``path`` if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
