"""The experiment manifest: which notebook runs with which parameters, at which scale.

``notebooks/runs.yml`` lists experiments; each has a notebook, a title and parameter sets.
A list value expands into one page per value. ``params`` are executed by every build; ``stored``
parameter sets are executed once by ``python -m urbanlib.book store`` (part of ``make results``) and
the book shows the committed pages (:mod:`urbanlib.book.stored`). ``scales`` restricts an
experiment to some scale presets; ``stored_scales`` the stored sets (default: ``[default]``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ManifestError(ValueError):
    """The manifest is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Entry:
    """One notebook execution: a page of the book."""

    experiment: str  # experiment key in the manifest, e.g. "data"
    notebook: Path  # source notebook (no outputs)
    title: str  # page title in the table of contents
    params: dict = field(default_factory=dict)  # papermill parameters (scale included)
    stored: bool = False  # executed by `python -m urbanlib.book store`, shown as stored by the book

    @property
    def slug(self) -> str:
        """File-name-safe id, unique per experiment × parameter set."""
        parts = [self.experiment] + [f"{v}" for k, v in sorted(self.params.items()) if k != "scale"]
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", "__".join(parts)).strip("-")


def load_manifest(path: str | Path, scale: str) -> list[Entry]:
    """Expand the manifest into entries for one scale preset.

    Args:
        path: the YAML manifest (``notebooks/runs.yml``).
        scale: scale preset name; it is passed to every notebook as parameter ``scale``.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(doc, dict) or "experiments" not in doc:
        raise ManifestError(f"{path}: expected a mapping with key 'experiments'")
    root = path.parent
    defaults = doc.get("defaults", {}) or {}
    entries: list[Entry] = []
    for i, exp in enumerate(doc["experiments"]):
        where = f"{path}: experiments[{i}]"
        if not isinstance(exp, dict) or "notebook" not in exp:
            raise ManifestError(f"{where}: each experiment needs a 'notebook'")
        key = exp.get("key") or Path(exp["notebook"]).stem
        if exp.get("scales") and scale not in exp["scales"]:
            continue
        nb = (root / exp["notebook"]).resolve()
        if not nb.is_file():
            raise ManifestError(f"{where} ({key}): notebook {nb} does not exist")
        for field_name in ("params", "stored", "stored_scales"):
            if field_name in exp and not isinstance(exp[field_name], list):
                raise ManifestError(f"{where} ({key}): '{field_name}' must be a list, got {exp[field_name]!r}")
        sets = [("params", g, False) for g in (exp.get("params") or [{}])]
        if scale in exp.get("stored_scales", ["default"]):
            sets += [("stored", g, True) for g in (exp.get("stored") or [])]
        for field_name, grid, stored in sets:
            if not isinstance(grid, dict):
                raise ManifestError(f"{where}.{field_name}: expected a mapping of parameter -> value or list, "
                                    f"got {grid!r}")
            axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
            for combo in itertools.product(*axes.values()) if axes else [()]:
                params = {**defaults, **dict(zip(axes, combo, strict=True)), "scale": scale}
                try:
                    title = exp.get("title", key).format(**params)
                except KeyError as e:
                    raise ManifestError(f"{where} ({key}): title names parameter {e} that {field_name} lacks") from None
                entries.append(Entry(key, nb, title, params, stored))
    slugs = [e.slug for e in entries]
    dupes = sorted({s for s in slugs if slugs.count(s) > 1})
    if dupes:
        raise ManifestError(f"{path}: duplicate parameter sets {dupes}")
    return entries
