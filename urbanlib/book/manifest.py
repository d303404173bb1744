"""The experiment manifest: which notebook runs with which parameters, at which scale.

``notebooks/runs.yml`` lists experiments; each has a notebook, a title and parameter sets.
A list value expands into one page per value. ``params`` are executed by every build; ``stored``
parameter sets are executed once by ``python -m urbanlib.book store`` (part of ``make results``) and
the book shows the committed pages (:mod:`urbanlib.book.stored`). ``scales`` restricts an
experiment to some scale presets; ``stored_scales`` the stored sets (default: ``[default]``).
``timeout_s`` (top level or per experiment) bounds how long a page may run in all.

The manifest is checked before anything runs: unknown keys are an error with a "did you mean",
every parameter must be a name the notebook's ``parameters`` cell assigns, and scale names must
be presets (matched exactly).
"""

from __future__ import annotations

import ast
import difflib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from urbanlib.scales import SCALES


class ManifestError(ValueError):
    """The manifest is malformed; the message names the file and the entry."""


TOP_KEYS = ("defaults", "experiments", "timeout_s")
EXPERIMENT_KEYS = ("key", "notebook", "title", "part", "params", "stored", "scales", "stored_scales", "timeout_s")
DEFAULT_TIMEOUT_S = 4 * 3600  # no cell of the book runs anywhere near this long; a hung one must not hang the build


def _unknown(keys, allowed, where: str) -> None:
    for k in keys:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(allowed)}"
            raise ManifestError(f"{where}: unknown key {k!r}{hint}")


def _scale_names() -> list[str]:
    return list(SCALES)


def _scales(value, where: str, name: str) -> list[str]:
    known = _scale_names()
    if not isinstance(value, list):
        raise ManifestError(f"{where}: '{name}' must be a list of scale names, got {value!r}")
    for v in value:
        if v not in known:
            near = difflib.get_close_matches(str(v), known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ManifestError(f"{where}: '{name}' names unknown scale {v!r} (known: {', '.join(known)}){hint}")
    return value


def _timeout(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ManifestError(f"{where}: 'timeout_s' must be a positive number of seconds, got {value!r}")
    return float(value)


def notebook_parameters(notebook: Path) -> set[str] | None:
    """Names assigned in the notebook's ``parameters``-tagged cell; None when it has no such cell."""
    try:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ManifestError(f"{notebook}: cannot read the notebook ({e})") from None
    for cell in nb.get("cells", []):
        if "parameters" in (cell.get("metadata", {}).get("tags") or []):
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            try:
                tree = ast.parse(src)
            except SyntaxError as e:
                raise ManifestError(f"{notebook}: the parameters cell is not Python ({e})") from None
            names = set()
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign) else [])
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            return names
    return None


@dataclass(frozen=True)
class Entry:
    """One notebook execution: a page of the book."""

    experiment: str  # experiment key in the manifest, e.g. "data"
    notebook: Path  # source notebook (no outputs)
    title: str  # page title in the table of contents
    params: dict = field(default_factory=dict)  # papermill parameters (scale included)
    stored: bool = False  # executed by `python -m urbanlib.book store`, shown as stored by the book
    timeout_s: float = DEFAULT_TIMEOUT_S  # longest the page may run, all cells together, before it fails

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

    Raises:
        ManifestError: naming the manifest, the experiment and the key or parameter that is wrong.
    """
    path = Path(path)
    doc = _read_manifest(path)
    _scales([scale], f"{path}", "--scale")
    defaults = doc.get("defaults", {}) or {}
    if not isinstance(defaults, dict):
        raise ManifestError(f"{path}: 'defaults' must be a mapping of parameter -> value, got {defaults!r}")
    top_timeout = _timeout(doc["timeout_s"], str(path)) if "timeout_s" in doc else DEFAULT_TIMEOUT_S
    entries: list[Entry] = []
    for i, exp in enumerate(doc["experiments"]):
        entries += _experiment_entries(exp, f"{path}: experiments[{i}]", path.parent, scale, defaults, top_timeout)
    slugs = [e.slug for e in entries]
    dupes = sorted({s for s in slugs if slugs.count(s) > 1})
    if dupes:
        raise ManifestError(f"{path}: duplicate parameter sets {dupes}")
    return entries


def _read_manifest(path: Path) -> dict:
    """The manifest's YAML as a mapping with an ``experiments`` list and only known top-level keys."""
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(doc, dict) or "experiments" not in doc:
        raise ManifestError(f"{path}: expected a mapping with key 'experiments'")
    _unknown(doc, TOP_KEYS, str(path))
    if not isinstance(doc["experiments"], list):
        raise ManifestError(f"{path}: 'experiments' must be a list, got {doc['experiments']!r}")
    return doc


def _experiment_entries(exp, where: str, root: Path, scale: str, defaults: dict, top_timeout: float) -> list[Entry]:
    """One experiment of the manifest as entries at ``scale``: its live parameter sets, then its stored ones."""
    if not isinstance(exp, dict) or "notebook" not in exp:
        raise ManifestError(f"{where}: each experiment needs a 'notebook'")
    key = exp.get("key") or Path(exp["notebook"]).stem
    where = f"{where} ({key})"
    _unknown(exp, EXPERIMENT_KEYS, where)
    timeout = _timeout(exp["timeout_s"], where) if "timeout_s" in exp else top_timeout
    for field_name in ("params", "stored", "stored_scales", "scales"):
        if field_name in exp and not isinstance(exp[field_name], list):
            raise ManifestError(f"{where}: '{field_name}' must be a list, got {exp[field_name]!r}")
    for field_name in ("scales", "stored_scales"):
        if field_name in exp:
            _scales(exp[field_name], where, field_name)
    nb = (root / exp["notebook"]).resolve()
    if not nb.is_file():
        raise ManifestError(f"{where}: notebook {nb} does not exist")
    declared = notebook_parameters(nb)
    if exp.get("scales") and scale not in exp["scales"]:
        return []
    # no `params` key: one live page without parameters; `params: []` (e.g. only stored sets): none
    live = exp["params"] if "params" in exp else [{}]
    sets = [("params", g, False) for g in (live or [])]
    if scale in exp.get("stored_scales", ["default"]):
        sets += [("stored", g, True) for g in (exp.get("stored") or [])]
    entries = []
    for field_name, grid, stored in sets:
        if not isinstance(grid, dict):
            raise ManifestError(f"{where}.{field_name}: expected a mapping of parameter -> value or list, got {grid!r}")
        _check_parameters([*grid, *defaults], declared, nb, f"{where}.{field_name}")
        axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
        for combo in itertools.product(*axes.values()) if axes else [()]:
            params = {**defaults, **dict(zip(axes, combo, strict=True)), "scale": scale}
            try:
                title = exp.get("title", key).format(**params)
            except KeyError as e:
                raise ManifestError(f"{where} ({key}): title names parameter {e} that {field_name} lacks") from None
            entries.append(Entry(key, nb, title, params, stored, timeout))
    return entries


def _check_parameters(names: list, declared: set | None, nb: Path, where: str) -> None:
    """Every name is ``scale`` or a parameter the notebook's ``parameters`` cell assigns (else a "did you mean")."""
    for name in names:
        if name == "scale" or (declared is not None and name in declared):
            continue
        if declared is None:
            raise ManifestError(f"{where}: parameter {name!r} given, but {nb.name} has no cell tagged 'parameters'")
        near = difflib.get_close_matches(str(name), sorted(declared), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ManifestError(f"{where}: {nb.name} has no parameter {name!r} (its parameters "
                            f"cell assigns {', '.join(sorted(declared))}){hint}")
