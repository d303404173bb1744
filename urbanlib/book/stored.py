"""Stored pages: manifest entries executed once by ``make results`` and shown as stored by the book.

A 2-core CPU cannot run every SynthCity profile's UrbanLN, benchmark and analysis pages inside
``make book``'s 45 minutes. The manifest therefore splits each such experiment into ``params``
(executed live by every build) and ``stored`` (executed by ``python -m urbanlib.book store``, the
executed notebook committed under ``results/pages/<scale>/``). The book copies a stored page in
unchanged, under a banner that says when, at which commit and on which machine it ran, and whether
the notebook or the library has changed since. A stored page that was never executed becomes a
page saying so; nothing is filled in.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pandas as pd

from urbanlib.cache import atomic_write
from urbanlib.provenance import PACKAGE_ROOT, SOURCE_SUFFIXES, commit, files_hash, machine

from .manifest import Entry, load_manifest
from .reading import prepare_page
from .runner import NotebookFailed, PageResult, execute_entry

META_KEY = "urbanlib_stored"


def stored_dir(root: Path, scale: str) -> Path:
    """Where the stored pages of one scale preset live (committed)."""
    return Path(root) / "results" / "pages" / scale


def import_closure(notebook: Path, root: Path = PACKAGE_ROOT) -> list[Path]:
    """The urbanlib source files a notebook can run: its ``urbanlib`` imports, followed transitively.

    Static (every ``import`` statement, also those inside functions), so it over-approximates what
    one execution loads. A file that calls ``import_module`` (a lazy registry) pulls in every module
    of its package. Parent packages' ``__init__.py`` are included, as Python runs them.
    """
    def module_file(name: str) -> Path | None:
        parts = name.split(".")
        if parts[0] != root.name:
            return None
        base = root.joinpath(*parts[1:])
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.is_file():
                return cand
        return None

    def imports(tree: ast.AST, package: str) -> set[str]:
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                names.add(mod)
                names |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import submodule`
        return names

    nb = nbformat.read(notebook, as_version=4)
    todo, seen = [], set()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or cell.source.lstrip().startswith("%%"):  # cell magics: not Python
            continue
        src = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            todo += imports(ast.parse(src), "")
        except SyntaxError as e:
            raise ValueError(f"{notebook}: code cell {i} is not plain Python ({e.msg}, line {e.lineno}); "
                             "stored pages need cells whose imports can be read statically") from None
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the module and every parent package
            mod = ".".join(parts[:i])
            path = module_file(mod)
            if path is None or path in seen:
                continue
            seen.add(path)
            package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
            text = path.read_text()
            todo += imports(ast.parse(text), package)
            if "import_module(" in text:  # a lazy registry: any module beside it may run
                todo += [f"{package}.{q.stem}" for q in path.parent.glob("*.py")]
    return sorted(seen)


def library_hash(notebook: Path, root: Path = PACKAGE_ROOT) -> str:
    """Hash of the urbanlib code a page's numbers depend on.

    The files of the notebook's :func:`import_closure`, plus the data files (profiles, paper tables,
    caption rules) in the folders of those modules: editing code or data the page cannot reach does
    not make it stale.
    """
    files = set(import_closure(notebook, root))
    dirs = {f.parent for f in files if f.parent != root}
    files |= {p for p in root.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES - {".py"}
              and "__pycache__" not in p.parts
              and (p.parent == root or any(p.parent == d or d in p.parent.parents for d in dirs))}
    return files_hash(files, root)[:16]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _provenance(entry: Entry) -> dict:
    threads = os.environ.get("URBANLIB_NUM_THREADS", "all")
    return {"commit": commit(("urbanlib", "notebooks")),
            "executed": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(threads),
            "params": entry.params, "notebook_sha": _sha(entry.notebook.read_bytes()),
            "library": library_hash(entry.notebook)}


def store_entries(entries: list[Entry], root: Path, scale: str, force: bool = False,
                  kernel_name: str = "python3", log=print) -> list[Path]:
    """Execute stored entries one at a time into ``results/pages/<scale>/<slug>.ipynb``.

    A failing page does not stop the others; NotebookFailed lists every failure at the end.
    Resumable: a page already stored for the same notebook bytes, parameters and library code
    (:func:`library_hash`) is kept unless ``force``. Returns the paths written or kept.
    """
    out_dir = stored_dir(root, scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, failures = [], []
    for entry in entries:
        path = out_dir / f"{entry.slug}.ipynb"
        meta = read_provenance(path)
        same = (meta and meta.get("notebook_sha") == _sha(entry.notebook.read_bytes())
                and meta.get("params") == json.loads(json.dumps(entry.params))
                and meta.get("library") == library_hash(entry.notebook))
        if same and not force:
            log(f"kept {entry.slug} (stored {meta['executed']} at {meta['commit']})")
            paths.append(path)
            continue
        running = out_dir / f".{entry.slug}.running.ipynb"  # kept when the page fails, for its traceback
        prov = _provenance(entry)  # before the run: what it runs with, even if files change meanwhile
        t0 = time.perf_counter()
        try:
            execute_entry(entry, running, kernel_name)
        except NotebookFailed as e:  # go on with the other pages; report every failure at the end
            failures.append(str(e))
            log(f"FAILED {entry.slug}: {e}")
            continue
        nb = nbformat.read(running, as_version=4)
        nb.metadata[META_KEY] = {**prov, "seconds": round(time.perf_counter() - t0, 1)}
        strip_machine_paths(nb, root)
        with atomic_write(path) as tmp:
            nbformat.write(nb, tmp)
        running.unlink()
        log(f"stored {entry.slug} in {time.perf_counter() - t0:.0f} s")
        paths.append(path)
    if failures:
        raise NotebookFailed(f"{len(failures)} of {len(entries)} stored page(s) failed; the others are stored:\n"
                             + "\n".join(failures))
    return paths


def strip_machine_paths(nb, root: Path) -> None:
    """Papermill's ``input_path``/``output_path`` relative to the book root, so a committed page names no machine path."""
    meta = nb.metadata.get("papermill") or {}
    for key in ("input_path", "output_path"):
        if meta.get(key):
            path = Path(meta[key])
            try:
                meta[key] = str(path.resolve().relative_to(Path(root).resolve()))
            except ValueError:
                meta[key] = path.name


def read_provenance(path: Path) -> dict | None:
    """The provenance a stored page carries, or None if the file is missing or was not stored by us."""
    if not Path(path).is_file():
        return None
    try:
        return nbformat.read(path, as_version=4).metadata.get(META_KEY)
    except Exception as e:  # a damaged file is an error the user must see, with its name
        raise ValueError(f"{path}: not a readable stored notebook ({e})") from None


def banner(meta: dict, entry: Entry, library: str | None = None) -> str:
    """The note shown at the top of a stored page: what ran, where, when, and what changed since."""
    changed = []
    if meta["notebook_sha"] != _sha(entry.notebook.read_bytes()):
        changed.append(f"the notebook `{entry.notebook.name}` has changed since")
    if library is not None and meta.get("library") != library:
        changed.append("urbanlib code this notebook imports has changed since (re-run `make pages` to refresh)")
    params = ", ".join(f"{k}={v}" for k, v in meta["params"].items())
    text = (f"`python -m urbanlib.book store` ran it at commit `{meta['commit']}` on {meta['executed']} "
            f"({meta['machine']}, {meta['seconds']:.0f} s), with {params}. Every number below comes from that "
            f"run. The book runs its live pages for a subset of the cities so that `make book` fits its time "
            f"budget; the rest are stored.")
    if changed:
        text += "\n\n**Note:** " + "; ".join(changed) + "."
    kind = "warning" if changed else "note"
    return f"```{{admonition}} Stored page, not executed by this build\n:class: {kind}\n\n{text}\n```"


def place_stored(entries: list[Entry], root: Path, scale: str, out_dir: Path) -> list[PageResult]:
    """Copy each stored entry's page into ``out_dir`` with its banner (or a page saying it is missing).

    Status per page: ``stored``; ``stale`` when the notebook or code it imports changed since it ran
    (the banner says so); ``missing`` when it was never stored.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for entry in entries:
        src = stored_dir(root, scale) / f"{entry.slug}.ipynb"
        dst = out_dir / f"{entry.slug}.ipynb"
        meta = read_provenance(src)
        if meta is None:
            nb = nbformat.v4.new_notebook()
            nb.cells = [nbformat.v4.new_markdown_cell(
                f"# {entry.title} (stored)\n\n**Not stored yet.** This page is not executed by `make book` at the "
                f"`{scale}` scale; `make results` stores it (`python -m urbanlib.book store --scale {scale}`), "
                f"and no result of it exists in this checkout.")]
            status = "missing"
        else:
            nb = prepare_page(copy.deepcopy(nbformat.read(src, as_version=4)), f"{entry.title} (stored)")
            text = banner(meta, entry, library_hash(entry.notebook))
            nb.cells.insert(_after_title(nb), nbformat.v4.new_markdown_cell(text))
            status = "stale" if "**Note:**" in text else "stored"
        nbformat.write(nb, dst)
        results.append(PageResult(entry, dst, status, 0.0))
    return results


def _after_title(nb) -> int:
    """Index just after the first markdown cell that opens with a heading (so the banner sits under it)."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("#"):
            return i + 1
    return 0


def stored_index(manifest: str | Path, root: Path, scale: str = "default"):
    """One row per stored page of the manifest: whether it is stored, and its provenance.

    Columns: page, stored (bool), commit, executed, seconds, notebook changed since, library
    changed since. Shown on the Results page so a reader sees what the book copies in.
    """
    rows = []
    for entry in (e for e in load_manifest(manifest, scale) if e.stored):
        meta = read_provenance(stored_dir(root, scale) / f"{entry.slug}.ipynb")
        row = {"page": entry.title, "stored": meta is not None}
        if meta:
            row.update(commit=meta["commit"], executed=meta["executed"], seconds=meta["seconds"],
                       **{"notebook changed since": meta["notebook_sha"] != _sha(entry.notebook.read_bytes()),
                          "library changed since": meta.get("library") != library_hash(entry.notebook)})
        rows.append(row)
    return pd.DataFrame(rows, columns=["page", "stored", "commit", "executed", "seconds",
                                       "notebook changed since", "library changed since"])
