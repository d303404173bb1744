"""Execute manifest entries with papermill, skipping those whose inputs did not change.

The cache key hashes the notebook, its parameters and the whole urbanlib source tree, so a code
edit re-runs everything that could depend on it and no page ever shows stale results.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat
import papermill as pm
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from tqdm import tqdm

from urbanlib.dataset_paths import resolve_data_dir
from urbanlib.provenance import source_tree_hash

from .manifest import Entry
from .reading import prepare_page

# ipykernel >= 7 logs "Kernel is running over TCP without encryption" at every start (26 lines per
# build); its own log below ERROR is infrastructure, while a cell's warnings still reach the page.
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message names the notebook, parameters, cell and error."""


@dataclass
class PageResult:
    """What happened to one entry."""

    entry: Entry
    output: Path
    status: str  # "ran", "cached", "stored" (copied from results/pages), "stale" (stored, older code) or "missing"
    seconds: float


def data_absent(entry: Entry) -> str | None:
    """Why a page that names a dataset (parameter ``data_dir``) cannot run here, or None.

    A live page on data that is not committed (the UrbanCLIP release) is built only where that data
    is present; elsewhere the book leaves it out and says so.
    """
    name = entry.params.get("data_dir")
    if not name or resolve_data_dir(str(name)).is_dir():
        return None
    return (f"its data folder {name!r} is not present (looked for {resolve_data_dir(str(name))}; "
            "set $URBANLIB_DATASETS to the folder that holds it)")


def with_data_path(entry: Entry) -> Entry:
    """The entry with a dataset name in ``data_dir`` replaced by the folder it names, for papermill."""
    name = entry.params.get("data_dir")
    if not name:
        return entry
    return replace(entry, params={**entry.params, "data_dir": str(resolve_data_dir(str(name)))})


def cache_key(entry: Entry, tree_hash: str) -> str:
    """Hash of notebook bytes + parameters + urbanlib source tree."""
    h = hashlib.sha256()
    h.update(entry.notebook.read_bytes())
    h.update(json.dumps(entry.params, sort_keys=True, default=str).encode())
    h.update(tree_hash.encode())
    return h.hexdigest()


def run_entries(entries: list[Entry], out_dir: Path, cache_dir: Path, force: bool = False,
                kernel_name: str = "python3", log=print, jobs: int = 1) -> list[PageResult]:
    """Execute each entry into ``out_dir/<slug>.ipynb``; raise NotebookFailed on the first failure.

    Experiments run in manifest order, one after another (later pages reuse what earlier ones
    cached); the pages of one experiment run ``jobs`` at a time, each kernel with
    ``cpu_count // jobs`` torch threads (``$URBANLIB_NUM_THREADS``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tree = source_tree_hash()
    jobs = max(1, int(jobs))
    os.environ["URBANLIB_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    results: dict[str, PageResult] = {}
    bar = tqdm(total=len(entries), desc="notebooks", unit="nb")
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.experiment, []).append(e)
    try:
        for group in groups.values():
            if jobs == 1 or len(group) == 1:
                for entry in group:
                    results[entry.slug] = _run_one(entry, out_dir, cache_dir, tree, force, kernel_name, log)
                    bar.update(1)
                continue
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(_run_one, e, out_dir, cache_dir, tree, force, kernel_name, log): e
                           for e in group}
                for fut in as_completed(futures):
                    try:
                        results[futures[fut].slug] = fut.result()
                    except NotebookFailed:
                        for f in futures:
                            f.cancel()
                        raise
                    bar.update(1)
    finally:
        bar.close()
    return [results[e.slug] for e in entries]


def execute_entry(entry: Entry, output: Path, kernel_name: str = "python3", timeout_s: float | None = None) -> None:
    """Execute one entry with papermill into ``output``.

    Every way a page can fail is a :class:`NotebookFailed` naming the notebook and its parameters:
    a cell that raises (with the cell), a page that runs longer than ``timeout_s`` in all (default:
    the entry's, from the manifest; each cell gets what the cells before it left), a kernel that dies (a crash, out of memory, ``os._exit``) or one
    that never starts.
    """
    timeout = float(timeout_s or entry.timeout_s)
    what = f"{entry.notebook.name} with parameters {entry.params}"
    deadline = time.monotonic() + timeout

    def time_left(cell) -> int:  # the page's budget: each cell may run for what the cells before it left
        return max(1, int(deadline - time.monotonic()))

    try:
        pm.execute_notebook(str(entry.notebook), str(output), parameters=entry.params,
                            kernel_name=kernel_name, progress_bar=False, cwd=str(entry.notebook.parent),
                            execution_timeout=timeout, timeout_func=time_left, extra_arguments=KERNEL_ARGS)
    except pm.PapermillExecutionError as e:
        first = (e.source or "").strip().splitlines()[:1]
        raise NotebookFailed(
            f"{what} failed in cell {e.cell_index} "
            f"(execution count {e.exec_count}: {first[0] if first else ''!r}): {e.ename}: {e.evalue}\n"
            f"The executed notebook with the traceback is {output}"
        ) from None
    except (CellTimeoutError, TimeoutError) as e:
        raise NotebookFailed(f"{what} timed out: the page ran longer than {timeout:g} s (timeout_s in the manifest) "
                             f"and was stopped ({type(e).__name__}: {str(e)[:200]})") from None
    except DeadKernelError as e:
        raise NotebookFailed(f"{what} failed: the kernel died (a crash, out of memory or an exit inside a cell): "
                             f"{str(e)[:200]}") from None
    except Exception as e:  # noqa: BLE001  (a kernel that does not start, a broken notebook file ...)
        raise NotebookFailed(f"{what} failed before finishing: {type(e).__name__}: {str(e)[:300]}") from None


def write_reader_page(path: Path, title: str) -> None:
    """Rewrite an executed notebook as the book shows it (:func:`urbanlib.book.reading.prepare_page`)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.write(prepare_page(nb, title), path)


def _run_one(entry: Entry, out_dir: Path, cache_dir: Path, tree: str, force: bool, kernel_name: str,
             log) -> PageResult:
    output = out_dir / f"{entry.slug}.ipynb"
    runnable = with_data_path(entry)  # the slug keeps the dataset's name; papermill gets its folder
    key = cache_key(runnable, tree)
    stamp = cache_dir / f"{entry.slug}.key"
    if not force and output.is_file() and stamp.is_file() and stamp.read_text() == key:
        return PageResult(entry, output, "cached", 0.0)
    stamp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    execute_entry(runnable, output, kernel_name)
    dt = time.perf_counter() - t0
    write_reader_page(output, entry.title)
    stamp.write_text(key)
    log(f"ran {entry.slug} in {dt:.1f} s")
    return PageResult(entry, output, "ran", dt)
