"""Where a committed number came from: git state, machine, source hashes and CPU time.

One module for every store that records provenance (the results tier's CSVs, the stored pages,
the cached and archived runs), so that "which code, which machine, how much CPU" means the same
thing everywhere.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import resource
import subprocess
from collections.abc import Iterable
from pathlib import Path

from urbanlib.cache import REPO_ROOT

PACKAGE_ROOT = Path(__file__).resolve().parent  # urbanlib/
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


def machine(threads: int | str | None = None) -> str:
    """Where a run happened: architecture, CPU count, GPU if any, CPU model, and torch's thread count when given.

    The CPU model and thread count set a number's last bits: another CPU's kernels or another thread
    count round differently, and a trained probe carries that into the third decimal, so a re-run that
    differs there can be told from a code change.
    """
    desc = f"{platform.machine()} {os.cpu_count()} cpu"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", {torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover
        pass
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
        desc += f", {model}" if model else ""
    return desc + (f", {threads} torch thread(s)" if threads is not None else "")


@functools.cache
def code_at_start() -> dict[str, str]:
    """The git tree and source hash of urbanlib when this process first asked, then the same answer for its life.

    A long worker stores rows hours after it started; hashing the tree at that point would credit its
    numbers to whatever was edited on disk meanwhile, so a worker asks once at start (the results store
    does at import). A module the worker imports only later is read from disk then: edit nothing under
    ``urbanlib/`` while a worker runs.
    """
    return {"git_tree": git_tree(), "source_hash": source_tree_hash()[:16]}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (``getrusage``): the unit of the tier's budget."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
