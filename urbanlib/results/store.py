"""Tidy result rows with provenance, appended to committed CSVs under ``results/``.

One row per run × city × model × task × metric. Every row carries where it came from: the git tree,
the urbanlib source hash, a hash of the run's config, seed, scale, wall time and machine, so a
number in the book can always be traced to the code and settings that produced it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

from urbanlib.cache import atomic_write, file_lock, results_root  # results_root: re-exported for callers
from urbanlib.provenance import code_at_start, machine
from urbanlib.scales import get_scale

ROW_COLUMNS = ["experiment", "unit", "city", "model", "task", "metric", "value"]
PROVENANCE_COLUMNS = ["config_hash", "seed", "scale", "git_tree", "source_hash", "wall_s", "cpu_s", "machine",
                      "config"]
PRETRAINING_COLUMNS = ["model", "variant", "city", "seed", "protocol", "lr", "steps", "best_step", "step_cap",
                       "best_val_loss", "stopped_by", "cka_to_init", "train_cpu_s"]  # results/pretraining.csv
NOT_AVAILABLE_COLUMNS = ["model", "city", "seed", "split", "reason"]  # results/not_available.csv: models that could not run


code_at_start()  # at import: a long worker's rows name the code it started with, not later edits on disk


SIDE_TABLES = {"pretraining": PRETRAINING_COLUMNS, "not_available": NOT_AVAILABLE_COLUMNS}  # "table" of a row -> columns


def config_hash(config: dict, scale: str | None = None) -> str:
    """Short stable hash of a unit's config and, when given, of its scale preset's fields.

    The preset's fields (not just its name) are hashed so that redefining a preset (say a new grid
    for ``full``) marks every stored unit of it as pending instead of silently keeping stale rows.
    """
    obj: dict = config
    if scale is not None:
        obj = {"config": config, "scale": get_scale(scale).to_dict()}
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def results_path(experiment: str, results_dir: Path | None = None) -> Path:
    """The CSV file of one experiment."""
    return Path(results_dir or results_root()) / f"{experiment}.csv"


_CONFLICT = ("<<<<<<< ", "=======", ">>>>>>> ", "|||||||")  # git's merge-conflict lines


def _refuse_conflict_markers(path: Path) -> None:
    """ValueError naming file and line when ``path`` holds git merge-conflict markers (never read as rows)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            text = line.rstrip("\r\n")
            if text == "=======" or any(text.startswith(m) for m in _CONFLICT if m != "======="):
                raise ValueError(f"{path}:{n}: git conflict marker {text[:40]!r}; resolve the merge (keep one "
                                 f"side's rows, or both) before reading or appending results")


def read_results(experiment: str, results_dir: Path | None = None) -> pd.DataFrame:
    """All committed rows of an experiment (empty frame if none yet).

    Raises:
        ValueError: the file holds git conflict markers (the message names file and line).
    """
    path = results_path(experiment, results_dir)
    if not path.is_file():
        return pd.DataFrame(columns=ROW_COLUMNS + PROVENANCE_COLUMNS)
    _refuse_conflict_markers(path)
    return pd.read_csv(path, dtype={"unit": str, "config_hash": str})


def append_rows(experiment: str, unit: str, rows: list[dict], config: dict, seed: int, scale: str,
                wall_s: float, results_dir: Path | None = None, cpu_s: float = float("nan")) -> pd.DataFrame:
    """Append one unit's rows (each with city, model, task, metric, value) with provenance.

    Rows of the same unit already present are replaced, so re-running a unit never duplicates it.
    Rows with a ``"table"`` go to that side table under the same provenance (:data:`SIDE_TABLES`):
    ``"pretraining"`` (one per pretraining run the unit's rows probe, :data:`PRETRAINING_COLUMNS`) to
    ``results/pretraining.csv``, ``"not_available"`` (a model that could not run, with the reason
    its code gave, :data:`NOT_AVAILABLE_COLUMNS`) to ``results/not_available.csv``.
    """
    prov = {"config_hash": config_hash(config, scale), "seed": seed, "scale": scale, **code_at_start(),
            "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2),
            "machine": machine(_torch_threads()), "config": json.dumps(config, sort_keys=True, default=str)}
    unknown = {r["table"] for r in rows if r.get("table") is not None} - set(SIDE_TABLES)
    if unknown:
        raise ValueError(f"rows of {experiment}/{unit} name unknown table(s) {sorted(unknown)}; known: {sorted(SIDE_TABLES)}")
    side = {t: [r for r in rows if r.get("table") == t] for t in SIDE_TABLES}
    rows = [r for r in rows if r.get("table") is None]
    new = pd.DataFrame([{"experiment": experiment, "unit": unit, **r, **prov} for r in rows])
    missing = [c for c in ROW_COLUMNS if c not in new.columns]
    if missing:
        raise ValueError(f"result rows of {experiment}/{unit} lack column(s) {missing}")
    for table, cols in SIDE_TABLES.items():
        if not side[table]:
            continue
        bad = [c for c in cols if any(c not in r for r in side[table])]
        if bad:
            raise ValueError(f"{table} rows of {experiment}/{unit} lack column(s) {bad}")
        frame = pd.DataFrame([{"experiment": experiment, "unit": unit, **{c: r[c] for c in cols},
                               **{k: v for k, v in prov.items() if k != "seed"}} for r in side[table]])
        _replace_unit(table, experiment, unit, frame, results_dir)
    return _replace_unit(experiment, experiment, unit, new[ROW_COLUMNS + PROVENANCE_COLUMNS], results_dir)


def _replace_unit(table: str, experiment: str, unit: str, new: pd.DataFrame, results_dir: Path | None):
    """Swap the rows of (experiment, unit) in ``results/<table>.csv`` for ``new``, locked and atomically."""
    path = results_path(table, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    # two `make results` workers finishing units together: the second waits, then re-reads, so
    # neither drops the other's unit
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():
            _refuse_conflict_markers(path)
        old = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=new.columns)
        old = old[~((old["experiment"] == experiment) & (old["unit"].astype(str) == unit))]
        out = pd.concat([old, new], ignore_index=True) if len(old) else new
        with atomic_write(path) as tmp:  # a kill never leaves half a CSV
            out.to_csv(tmp, index=False)
    return out


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")  # a unit that never imported torch did not use it
    return torch.get_num_threads() if torch is not None else None
