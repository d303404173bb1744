"""Read the committed ``full`` tier back as the tidy frames the book's tables and plots take.

A stored row is one unit's (pretraining seed's) mean or std over probe seeds, with its task packed
as ``<indicator>/<split>`` (benchmark, ablations) or ``<target>/<indicator>`` (transfer). These
helpers unpack that, keep the probe-seed means, and say which units exist, so a page can show
"mean ± std over pretraining seeds" and exactly what it rests on.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .registry import load_all
from .store import read_results


def tier_rows(experiment: str, results_dir: Path | None = None) -> pd.DataFrame:
    """Per-pretraining-seed probe means of one experiment, as tidy rows.

    Returns:
        Columns ``city, model, metric, value, seed, unit`` plus ``indicator`` and ``split``
        (benchmark, ablations) or ``target`` and ``indicator`` (transfer; ``city`` is the source).
        Empty frame when nothing is stored.
    """
    rows = read_results(experiment, results_dir)
    if rows.empty:
        return pd.DataFrame(columns=["city", "model", "indicator", "metric", "value", "seed", "unit"])
    rows = rows[rows["metric"].astype(str).str.endswith("_mean")].copy()
    rows["metric"] = rows["metric"].str.removesuffix("_mean")
    parts = rows["task"].astype(str).str.split("/", n=1, expand=True)
    if experiment == "transfer":
        rows["target"], rows["indicator"] = parts[0], parts[1]
    else:
        rows["indicator"] = parts[0]
        rows["split"] = parts[1] if parts.shape[1] > 1 else "random"
    rows["seed"] = rows["seed"].astype(int)
    keep = ["city", "model", "indicator", "metric", "value", "seed", "unit"]
    keep += ["target"] if experiment == "transfer" else ["split"]
    return rows[keep].reset_index(drop=True)


def coverage(experiment: str, scale: str = "full", results_dir: Path | None = None) -> pd.DataFrame:
    """Which planned units are stored: one row per planned unit, with its config, seed and status."""
    from .runner import pending_units

    known = load_all()
    if experiment not in known:
        raise KeyError(f"no results-tier experiment {experiment!r}; registered: {sorted(known)}")
    exp = known[experiment]
    pending = {u for u, _, _ in pending_units(exp, scale, results_dir)}
    stored = read_results(experiment, results_dir)
    wall = stored.groupby("unit")["wall_s"].first().to_dict() if not stored.empty else {}
    out = [{"unit": u, **config, "seed": s, "stored": u not in pending, "wall_s": wall.get(u) if u not in pending
            else None} for u, config, s in exp.plan(scale)]
    return pd.DataFrame(out)


def coverage_grid(experiment: str, scale: str = "full", results_dir: Path | None = None) -> pd.DataFrame:
    """:func:`coverage` as a city (× split) by seed grid of ✓ / · marks, for a glance."""
    cov = coverage(experiment, scale, results_dir)
    index = [c for c in ("city", "source", "split") if c in cov.columns]
    cov["mark"] = cov["stored"].map({True: "✓", False: "·"})
    return cov.pivot_table(index=index, columns="seed", values="mark", aggfunc="first")


def provenance_summary(experiment: str, results_dir: Path | None = None) -> pd.Series:
    """Where the stored units of an experiment came from: code versions, machines, total wall time."""
    rows = read_results(experiment, results_dir)
    if rows.empty:
        return pd.Series({"units stored": 0})
    units = rows.groupby("unit").first()
    return pd.Series({
        "units stored": len(units),
        "git trees": ", ".join(sorted(units["git_tree"].astype(str).str[:12].unique())),
        "urbanlib source hashes": ", ".join(sorted(units["source_hash"].astype(str).unique())),
        "machines": ", ".join(sorted(units["machine"].astype(str).unique())),
        "scale": ", ".join(sorted(units["scale"].astype(str).unique())),
        "total wall time (h)": round(float(units["wall_s"].sum()) / 3600, 2),
    })
