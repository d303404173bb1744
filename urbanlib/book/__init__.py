"""The book pipeline: manifest -> papermill -> _toc.yml -> jupyter-book (strict)."""

from .manifest import Entry, ManifestError, load_manifest
from .runner import NotebookFailed, run_entries

__all__ = ["Entry", "ManifestError", "NotebookFailed", "load_manifest", "run_entries"]
