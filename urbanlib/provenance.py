"""Where a committed number came from: git state, machine, source hashes and CPU time.

One module for every store that records provenance (the results tier's CSVs, the stored pages,
the cached and archived runs), so that "which code, which machine, how much CPU" means the same
thing everywhere.
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import subprocess
from collections.abc import Iterable
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent  # urbanlib/
REPO_ROOT = PACKAGE_ROOT.parent
SOURCE_SUFFIXES = {".py", ".json", ".csv", ".yml", ".yaml"}  # code and the data files it reads


def files_hash(files: Iterable[Path], root: Path = PACKAGE_ROOT) -> str:
    """sha256 (hex) over the files' paths relative to ``root`` and their bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def source_files(root: Path = PACKAGE_ROOT, suffixes: set[str] = SOURCE_SUFFIXES) -> list[Path]:
    """Every source and data file under ``root`` (``__pycache__`` excluded)."""
    return [p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts]


def source_tree_hash(root: Path = PACKAGE_ROOT) -> str:
    """:func:`files_hash` of every source/data file of urbanlib."""
    return files_hash(source_files(root), root)


def git(*args: str) -> str:
    """Output of ``git <args>`` in the repository, or ``"unknown"`` outside a git checkout."""
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _dirty(paths: tuple[str, ...]) -> str:
    status = git("status", "--porcelain", *paths)
    return "+dirty" if status and status != "unknown" else ""


def git_tree(paths: tuple[str, ...] = ("urbanlib",)) -> str:
    """The git tree hash of HEAD, with ``+dirty`` when ``paths`` have uncommitted edits."""
    tree = git("rev-parse", "HEAD^{tree}")
    return tree if tree == "unknown" else tree + _dirty(paths)


def commit(paths: tuple[str, ...] = ("urbanlib", "notebooks")) -> str:
    """HEAD's short commit id, with ``+dirty`` when ``paths`` have uncommitted edits."""
    head = git("rev-parse", "--short=10", "HEAD")
    return head if head == "unknown" else head + _dirty(paths)


def machine() -> str:
    """A short description of where a run happened: architecture, CPU count, GPU if any."""
    desc = f"{platform.machine()} {os.cpu_count()} cpu"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", {torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover
        pass
    return desc


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (``getrusage``): the unit of the tier's budget."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
