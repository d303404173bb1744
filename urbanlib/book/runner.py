"""Execute manifest entries with papermill, skipping those whose inputs did not change.

The cache key hashes the notebook, its parameters and the whole urbanlib source tree, so a code
edit re-runs everything that could depend on it and no page ever shows stale results.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .manifest import Entry

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # urbanlib/
SOURCE_SUFFIXES = {".py", ".json", ".csv", ".yml", ".yaml"}


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message names the notebook, parameters, cell and error."""


@dataclass
class RunResult:
    """What happened to one entry."""

    entry: Entry
    output: Path
    status: str  # "ran" or "cached"
    seconds: float


def source_tree_hash(root: Path = PACKAGE_ROOT) -> str:
    """sha256 over every source/data file of urbanlib (path and bytes), in sorted order."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts:
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(entry: Entry, tree_hash: str) -> str:
    """Hash of notebook bytes + parameters + urbanlib source tree."""
    h = hashlib.sha256()
    h.update(entry.notebook.read_bytes())
    h.update(json.dumps(entry.params, sort_keys=True, default=str).encode())
    h.update(tree_hash.encode())
    return h.hexdigest()


def run_entries(entries: list[Entry], out_dir: Path, cache_dir: Path, force: bool = False,
                kernel_name: str = "python3", log=print) -> list[RunResult]:
    """Execute each entry into ``out_dir/<slug>.ipynb``; raise NotebookFailed on the first failure."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tree = source_tree_hash()
    results = []
    bar = tqdm(entries, desc="notebooks", unit="nb")
    for entry in bar:
        bar.set_postfix_str(entry.slug)
        output = out_dir / f"{entry.slug}.ipynb"
        key = cache_key(entry, tree)
        stamp = cache_dir / f"{entry.slug}.key"
        if not force and output.is_file() and stamp.is_file() and stamp.read_text() == key:
            results.append(RunResult(entry, output, "cached", 0.0))
            continue
        stamp.unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(entry.notebook), str(output), parameters=entry.params,
                                kernel_name=kernel_name, progress_bar=False, cwd=str(entry.notebook.parent))
        except pm.PapermillExecutionError as e:
            first = (e.source or "").strip().splitlines()[:1]
            raise NotebookFailed(
                f"{entry.notebook.name} with parameters {entry.params} failed in cell {e.cell_index} "
                f"(execution count {e.exec_count}: {first[0] if first else ''!r}): {e.ename}: {e.evalue}\n"
                f"The executed notebook with the traceback is {output}"
            ) from None
        dt = time.perf_counter() - t0
        stamp.write_text(key)
        log(f"ran {entry.slug} in {dt:.1f} s")
        results.append(RunResult(entry, output, "ran", dt))
    return results
