"""Read the committed ``full`` tier back as the tidy frames the book's tables and plots take.

A stored row is one unit's (pretraining seed's) mean or std over probe seeds, with its task packed
as ``<indicator>/<split>`` (benchmark, ablations) or ``<target>/<indicator>`` (transfer). These
helpers unpack that, keep the probe-seed means, and say which units exist, so a page can show
"mean ± std over pretraining seeds" and exactly what it rests on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from urbanlib.analysis.paired import paired_test
from urbanlib.experiments.caption_probes import CAPTION_PROBE_MODELS, chosen_table
from urbanlib.pipeline.hparams import GRIDS, candidate_scores, selected

from .runner import pending_units, unit_kind
from .store import read_results, results_path
from .tier import PROTOCOL_MODELS, load_all


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
    """:func:`coverage` as a city (× split or group) by seed grid of ✓ / · marks, for a glance."""
    cov = coverage(experiment, scale, results_dir)
    index = [c for c in ("city", "source", "split", "group", "family") if c in cov.columns]
    cov["mark"] = cov["stored"].map({True: "✓", False: "·"})
    return cov.pivot_table(index=index, columns="seed", values="mark", aggfunc="first")


TIER_BUDGET_CPU_H = 40.0  # issue 14, item 8: the whole `full` tier, process CPU time (getrusage)


def cpu_budget(scale: str = "full", results_dir: Path | None = None) -> pd.DataFrame:
    """The tier's CPU time per experiment: what the stored units took and a projection for the pending ones.

    Each pending unit is projected at the mean CPU time of the stored units of its kind (the same
    experiment and :func:`~urbanlib.results.runner.unit_kind`: the benchmark's UrbanLN group on
    other cities and seeds, say), else of its experiment. The stored figures are what ``getrusage``
    measured; the projection inherits their spread: a unit that found its pretraining in the cache
    cost less than one that trained it.

    Returns:
        One row per experiment and a ``total`` row: ``units``, ``stored``, ``stored CPU-h``,
        ``pending CPU-h (projected)``, ``tier CPU-h (projected)``; ``unprojected`` counts pending
        units with nothing stored to project from.
    """
    rows = []
    for name, exp in load_all().items():
        plan = exp.plan(scale)
        pending = [u for u, _, _ in pending_units(exp, scale, results_dir)]
        stored = read_results(name, results_dir)
        cpu = stored.groupby("unit")["cpu_s"].first().astype(float) if not stored.empty else pd.Series(dtype=float)
        cpu = cpu[cpu.index.isin({u for u, _, _ in plan} - set(pending))].dropna()  # stale-config rows are pending
        kinds = cpu.groupby([unit_kind(u) for u in cpu.index]).mean() if len(cpu) else pd.Series(dtype=float)
        guesses = [kinds.get(unit_kind(u), cpu.mean() if len(cpu) else float("nan")) for u in pending]
        rows.append({"experiment": name, "units": len(plan), "stored": len(plan) - len(pending),
                     "stored CPU-h": cpu.sum() / 3600, "pending CPU-h (projected)": np.nansum(guesses) / 3600,
                     "unprojected": int(np.isnan(guesses).sum()) if guesses else 0})
    out = pd.DataFrame(rows).set_index("experiment")
    out.loc["total"] = out.sum()
    out["tier CPU-h (projected)"] = out["stored CPU-h"] + out["pending CPU-h (projected)"]
    return out.round(2)


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


def pretraining_summary(results_dir: Path | None = None) -> pd.DataFrame:
    """Per model (and variant): how many runs ``results/pretraining.csv`` holds, why they stopped, how far they moved.

    Columns: runs, stopped by patience (share), median steps, median best step, median step cap,
    median linear CKA to initialisation, training CPU-hours (sum). Empty when no row is stored.
    """
    path = results_path("pretraining", results_dir)
    if not path.is_file():
        return pd.DataFrame()
    t = pd.read_csv(path, dtype={"variant": "string"})  # all-empty reads as float otherwise
    t["variant"] = t["variant"].fillna("")
    g = t.groupby(["model", "variant"], sort=False)
    return pd.DataFrame({
        "runs": g.size(),
        "stopped by patience": g["stopped_by"].apply(lambda s: f"{(s == 'patience').mean():.0%}"),
        "median steps": g["steps"].median(), "median best step": g["best_step"].median(),
        "median step cap": g["step_cap"].median(), "median CKA to init": g["cka_to_init"].median().round(3),
        "training CPU-h": (g["train_cpu_s"].sum() / 3600).round(2),
    })


def selection_table(results_dir: Path | None = None) -> pd.DataFrame:
    """The learning-rate candidates per family: validation R² of each, and which one was chosen.

    Rows family × lr with ``val_r2`` (the probe's R² on validation regions, mean over indicators and
    probe seeds), the run's steps and stopping reason, and ``chosen`` from ``results/selected_lr.json``.
    """
    rows = read_results("selection", results_dir)
    if rows.empty:
        return pd.DataFrame()
    scores = candidate_scores(rows)
    extra = rows[rows["metric"].isin(["steps", "stopped_by_patience"])].assign(
        lr=lambda d: d["task"].str.replace("lr=", "", regex=False).astype(float)).pivot_table(
        index=["model", "lr"], columns="metric", values="value").rename_axis(index=["family", "lr"])
    out = scores.set_index(["family", "lr"])[["val_r2"]].join(extra).reset_index()
    choice = {(s, f): lr for s, fams in selected().items() for f, lr in fams.items()}
    scale = rows["scale"].iloc[0]
    out["chosen"] = [choice.get((scale, f)) == lr for f, lr in zip(out["family"], out["lr"], strict=True)]
    return out


# learning-rate family -> (the run its candidates train on the development city, the rows that train
# with its choice); a family's choice is used by every row here, on every city and seed
LR_FAMILIES: dict[str, tuple[str, str]] = {
    "UrbanCLIP": ("UrbanCLIP", "UrbanCLIP; its ablation variants (w/o refined text, w/o L_LM, w/o L_Con)"),
    "UrbanLN stage 0": ("the stage-0 CLIP on every profile", "the stage-0 CLIP every UrbanLN row starts from"),
    "UrbanLN": ("UrbanLN (satellite), from the chosen stage 0",
                "UrbanLN (satellite, street); its ablation variants and the mu sweep"),
    "SimCLR ViT": ("UrbanViT", "UrbanViT, PG-SimCLR, Text-SimCLR (one ViT and SimCLR recipe)"),
    "Autoencoder": ("Autoencoder", "Autoencoder"),
    "Tile2Vec": ("Tile2Vec", "Tile2Vec"),
    "READ": ("READ (teacher and student)", "READ (supervised)"),
    "ResNet-18 land-use": ("the land-use stand-in's supervised training", "ResNet-18 (land-use stand-in)"),
    "UrbanVLP": ("UrbanVLP", "UrbanVLP"),
}


def chosen_rates(results_dir: Path | None = None) -> pd.DataFrame:
    """Per family, the learning rate chosen on validation, its grid, and the table rows that use it.

    ``at grid edge`` marks a choice at the smallest or largest candidate: the best rate may lie
    outside the grid, which the reader should know.
    """
    table = selection_table(results_dir)
    if table.empty:
        return pd.DataFrame()
    out = []
    for family, rows in table.groupby("family", sort=False):
        grid = GRIDS.get(family, tuple(sorted(rows["lr"])))
        chosen = rows.loc[rows["chosen"], "lr"]
        lr = float(chosen.iloc[0]) if len(chosen) else np.nan
        trains, users = LR_FAMILIES.get(family, (family, family))
        out.append({"family": family, "candidates": ", ".join(f"{g:g}" for g in grid),
                    "chosen": f"{lr:g}" if np.isfinite(lr) else "-",
                    "at grid edge": bool(np.isfinite(lr) and lr in (min(grid), max(grid))),
                    "candidates train": trains, "used by": users})
    return pd.DataFrame(out)


def not_available_reasons(city: str, split: str, results_dir: Path | None = None) -> dict[str, str]:
    """Why each model that could not run on ``city``'s ``split`` did not: the reason its own code gave.

    Read from ``results/not_available.csv`` (the benchmark units write it); one reason per model, the
    reasons of its seeds joined if they differ.
    """
    path = results_path("not_available", results_dir)
    if not path.exists():
        return {}
    t = pd.read_csv(path, dtype=str)
    t = t[(t["city"] == city) & (t["split"] == split)]
    return {m: "; ".join(dict.fromkeys(g["reason"])) for m, g in t.groupby("model", sort=False)}


def caption_probe_summary(results_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The caption-probes experiment in two tables: test R² and which candidate validation chose.

    Returns:
        ``(r2, chosen)``: mean over indicators, cities and seeds of each representation's test R²
        (rows model, columns (caption style, split)), with the unit count; and how often validation
        chose each candidate, per caption style and split. Both empty before any unit is stored.
    """
    rows = tier_rows("caption_probes", results_dir)
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame()
    r2 = rows[rows["metric"] == "R2"]
    parts = [CAPTION_PROBE_MODELS[m] for m in r2["model"]]
    r2 = r2.assign(representation=[rep for rep, _ in parts], style=[style for _, style in parts])
    table = r2.pivot_table(index="representation", columns=["style", "split"], values="value", aggfunc="mean")
    table[("units", "")] = r2.groupby("representation")["unit"].nunique()
    picks = chosen_table(read_results("caption_probes", results_dir))
    chosen = picks.groupby(["style", "split"])["chosen"].value_counts().unstack(fill_value=0)
    return table, chosen


def protocol_effect(results_dir: Path | None = None) -> pd.DataFrame:
    """What pretraining only on the probe's train regions changes: the papers' "all-tiles" R² minus "train-only".

    The `protocol` experiment re-runs UrbanCLIP and its random-init twin under "train-only" on the
    book's city and the random split, one unit per pretraining seed; the benchmark holds the same
    models, city, split and seeds under "all-tiles". Paired over those seeds, per indicator and pooled
    over indicators (``mean``). The twin never trains, so its difference must be nil: a check that
    the two experiments probed the same regions the same way.

    Returns:
        One row per (model, indicator): ``n`` (pairs: city, split and seed), ``all-tiles``, ``train-only`` (mean test R²),
        ``difference`` with its paired 95% interval ``ci_low``/``ci_high`` and ``p``. Empty when
        either experiment has no stored rows for those seeds.
    """
    strict = tier_rows("protocol", results_dir)
    if strict.empty:
        return pd.DataFrame()
    benchmark_row = {stored: model for model, stored in PROTOCOL_MODELS.items()}
    strict = strict[strict["metric"] == "R2"].assign(model=lambda d: d["model"].map(benchmark_row))
    bench = tier_rows("benchmark", results_dir)
    cities, splits = set(strict["city"]), set(strict["split"])
    bench = bench[(bench["metric"] == "R2") & bench["model"].isin(list(PROTOCOL_MODELS)) & bench["city"].isin(cities)
                  & bench["split"].isin(splits)] if not bench.empty else bench
    if bench.empty:
        return pd.DataFrame()
    key = ["city", "split", "seed"]  # a pair: the same city, split and pretraining seed under either protocol
    out = []
    for model in PROTOCOL_MODELS:
        a = bench[bench["model"] == model].set_index([*key, "indicator"])["value"]
        b = strict[strict["model"] == model].set_index([*key, "indicator"])["value"]
        both = a.index.intersection(b.index)
        for indicator in [*sorted(set(both.get_level_values("indicator"))), "mean"]:
            if indicator == "mean":  # pooled: each pair's mean over the indicators both hold
                pa, pb = a[both].groupby(level=key).mean(), b[both].groupby(level=key).mean()
            else:
                pa, pb = a.xs(indicator, level="indicator"), b.xs(indicator, level="indicator")
            test = paired_test(pa.to_dict(), pb.to_dict())
            if not test["n"]:
                continue
            pairs = test["units"]
            out.append({"model": model, "indicator": indicator, "n": test["n"],
                        "all-tiles": float(pa[pairs].mean()), "train-only": float(pb[pairs].mean()),
                        "difference": test["mean_diff"], "ci_low": test["ci_low"], "ci_high": test["ci_high"],
                        "p": test["p"]})
    return pd.DataFrame(out)
