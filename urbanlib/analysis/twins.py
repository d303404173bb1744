"""Each model's gain over its random-init twin: the same architecture, untrained, probed the same way.

A pretraining method is only worth its name if its features beat those of the same encoder at random
initialisation. :func:`gains_over_twin` pairs each model with its twin on the units (city x
pretraining seed) both were probed on and gives the mean gain with a paired 95% t interval, per
indicator and split and pooled over the indicators (:mod:`urbanlib.analysis.paired`), and the median
gain beside it: a twin whose probe fails on a few units (a random ResNet's heavy-tailed features)
would otherwise decide the mean alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .paired import paired_test

__all__ = ["GAIN_COLUMNS", "RANDOM_INIT_TWIN", "STAGE0_TWIN", "WITHOUT_TWIN", "gains_over_twin", "probe_seed_gains"]

_VIT = "UrbanCLIP (random init)"  # UrbanCLIP's ViT at initialisation
_CLIP_SAT, _CLIP_SV = "CLIP (random init, satellite)", "CLIP (random init, street)"
_RESNET = "ResNet-18 (random)"
_URBANLN_VARIANTS = ["UrbanLN", "w/o Refinement", "w/o Consensus", "w/o IPSI", "w/o MSD", "one captioner (sim-qwen)",
                     "mu=0.3", "mu=0.4", "mu=0.5", "mu=0.6", "stage 0 only (reference)"]  # ablations (satellite)

# model -> its random-init twin, for the benchmark and ablation tables
RANDOM_INIT_TWIN: dict[str, str] = {
    # everything built on UrbanCLIP's ViT; the fusion probe adds caption features to UrbanCLIP's, so
    # its gain includes them
    **dict.fromkeys(["UrbanCLIP", "UrbanViT", "PG-SimCLR", "Text-SimCLR", "MuseCL",
                     "UrbanCLIP + captions (fusion)", "w/o refined text", "w/o L_LM", "w/o L_Con"], _VIT),
    "UrbanLN (satellite)": _CLIP_SAT,
    "UrbanLN (street)": _CLIP_SV,
    "UrbanLN stage 0 (satellite)": _CLIP_SAT,
    "UrbanLN stage 0 (street)": _CLIP_SV,
    **dict.fromkeys(_URBANLN_VARIANTS, _CLIP_SAT),
    **dict.fromkeys(["ResNet-18 (land-use stand-in)", "ResNet-18 (ImageNet)"], _RESNET),
    # the baselines trained from scratch: the very run's weights at initialisation
    "Autoencoder": "Autoencoder (random init)",
    "Tile2Vec": "Tile2Vec (random init)",
    "READ": "READ (random init)",  # the student's small conv net
    "UrbanVLP": "UrbanVLP (random init)",  # both towers, satellite and street
}

# the benchmark's rows that no training of ours produced, so there is no training to isolate
WITHOUT_TWIN: dict[str, str] = {
    "PCA": "a linear projection of the pixels, fitted, not trained",
    "ResNet-18 (random)": "itself the random-init twin of the ResNet-18 baselines",
    "RemoteCLIP": "published weights (opt-in download), not trained here",
    "Captions only (MiniLM, short)": "a pretrained sentence encoder's embeddings of the captions",
    "Captions only (MiniLM, long)": "a pretrained sentence encoder's embeddings of the captions",
}

# UrbanLN -> the stage-0 CLIP it was fine-tuned from (what fine-tuning adds), same function, other mapping
STAGE0_TWIN: dict[str, str] = {
    "UrbanLN (satellite)": "UrbanLN stage 0 (satellite)",
    "UrbanLN (street)": "UrbanLN stage 0 (street)",
    **dict.fromkeys([v for v in _URBANLN_VARIANTS if v != "stage 0 only (reference)"], "stage 0 only (reference)"),
}

GAIN_COLUMNS = ["model", "twin", "indicator", "split", "n_units", "gain", "ci_low", "ci_high", "p", "mde",
                "twin_mean", "relative_gain_pct", "median_gain"]
POOLED = "mean"  # the indicator label of the rows pooled over indicators
FAILED_R2 = -1.0  # a probe whose test R2 is below this errs by more than twice the spread of the truth


def _per_unit(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Wide table: index (model, indicator, split), columns unit 'city:seed', values ``<metric>_mean``."""
    r = rows[rows["metric"] == f"{metric}_mean"]
    task = r["task"].astype(str).str.split("/", n=1, expand=True)
    split = task[1] if task.shape[1] > 1 else pd.Series("random", index=r.index)
    r = r.assign(indicator=task[0], split=split.fillna("random"),
                 unit=r["city"].astype(str) + ":" + r["seed"].astype(int).astype(str))
    return r.pivot_table(index=["model", "indicator", "split"], columns="unit", values="value", aggfunc="mean")


def _n_test(rows: pd.DataFrame) -> pd.Series:
    """Test regions each model was scored on: (model, split, unit) -> n, from the ``n_test`` rows ("all/<split>")."""
    r = rows[rows["metric"] == "n_test"]
    if r.empty:
        return pd.Series(dtype=float)
    split = r["task"].astype(str).str.split("/", n=1).str[1].fillna("random")
    unit = r["city"].astype(str) + ":" + r["seed"].astype(int).astype(str)
    return pd.Series(r["value"].to_numpy(float), index=pd.MultiIndex.from_arrays([r["model"], split, unit])).sort_index()


def _scored_apart(n_test: pd.Series, model: str, twin: str, split: str) -> set[str]:
    """Units on which ``model`` and ``twin`` were scored on different numbers of test regions (not paired)."""
    if n_test.empty:
        return set()
    try:
        a, b = n_test.loc[(model, split)], n_test.loc[(twin, split)]
    except KeyError:
        return set()
    both = a.index.intersection(b.index)
    return set(both[a[both].to_numpy() != b[both].to_numpy()])


def gains_over_twin(frame: pd.DataFrame, twins: Mapping[str, str] | None = None, metric: str = "R2",
                    level: float = 0.95, pooled: bool = True, twin_frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each model's gain over its twin, per indicator and split, with a paired t interval over units.

    Args:
        frame: tidy benchmark or ablation rows (``results/benchmark.csv`` schema: ``city``, ``seed``,
            ``model``, ``task`` = ``"<indicator>/<split>"``, ``metric``, ``value``).
        twins: ``{model: twin model}``; default :data:`RANDOM_INIT_TWIN`.
        metric: ``"R2"``, ``"RMSE"`` or ``"MAE"``; the ``<metric>_mean`` rows (mean over probe seeds)
            are compared. A positive gain is model minus twin (for RMSE/MAE, lower is better).
        level: confidence level of the intervals.
        pooled: also give, per split, the gain on the mean over the indicators both models have
            (indicator :data:`POOLED`).
        twin_frame: where to find the twins' rows when they are not in ``frame`` (e.g. the benchmark's
            random-init rows for an ablation table; same units). Default: ``frame`` itself.

    Returns:
        DataFrame with columns :data:`GAIN_COLUMNS`, one row per (model, indicator, split) with
        both sides present. Pairs that cannot be formed (a model without its twin's rows, a task
        the twin lacks, a unit where the stored ``n_test`` rows show the two were scored on
        different test regions) are skipped; ``.attrs["notes"]`` says which, in words.
    """
    twins = RANDOM_INIT_TWIN if twins is None else twins
    notes: list[str] = []
    out = pd.DataFrame(columns=GAIN_COLUMNS)
    out.attrs["notes"] = notes
    if frame.empty:
        notes.append("the frame has no rows")
        return out
    wide = _per_unit(frame, metric)
    other = wide if twin_frame is None or twin_frame.empty else _per_unit(twin_frame, metric)
    present = list(dict.fromkeys(wide.index.get_level_values("model")))
    n_test = _n_test(frame if twin_frame is None else pd.concat([frame, twin_frame]))
    twins_present = set(other.index.get_level_values("model"))
    rows, orphans = [], {}
    for model in present:
        twin = twins.get(model)
        if twin is None or twin == model:
            continue
        if twin not in twins_present:
            orphans.setdefault(twin, []).append(model)
            continue
        tasks = _paired_tasks(model, wide.loc[model], other.loc[twin], pooled, notes)
        tasks = _drop_scored_apart(tasks, n_test, model, twin, notes)
        rows += [_gain_row(model, twin, ind, split, a, b, level) for ind, split, a, b in tasks]
    notes[:0] = [f"no '{twin}' {metric} rows: skipped {', '.join(models)}" for twin, models in orphans.items()]
    if metric == "R2":
        notes += _failed_probe_notes(other, {twins[m] for m in present if twins.get(m) in twins_present})
    if rows:
        out = pd.DataFrame(rows, columns=GAIN_COLUMNS)
    out.attrs["notes"] = notes
    return out


def _paired_tasks(model: str, mine: pd.DataFrame, theirs: pd.DataFrame, pooled: bool, notes: list[str]) -> list:
    """(indicator, split, model's values, twin's values) per task both have, and per split pooled over them.

    ``mine`` and ``theirs`` are the model's and the twin's rows of :func:`_per_unit` (index indicator,
    split; columns units). Tasks only the model has are skipped with a note.
    """
    missing = sorted(set(mine.index) - set(theirs.index))
    if missing:
        notes.append(f"{model}: skipped {len(missing)} task(s) the twin lacks "
                     f"({', '.join('/'.join(t) for t in missing[:3])}{', ...' if len(missing) > 3 else ''})")
    common = [t for t in mine.index if t in theirs.index]
    tasks = [(ind, split, mine.loc[(ind, split)], theirs.loc[(ind, split)]) for ind, split in common]
    if pooled:
        for split in dict.fromkeys(s for _, s in common):
            inds = [(ind, s) for ind, s in common if s == split]
            tasks.append((POOLED, split, mine.loc[inds].mean(skipna=False), theirs.loc[inds].mean(skipna=False)))
    return tasks


def _drop_scored_apart(tasks: list, n_test: pd.Series, model: str, twin: str, notes: list[str]) -> list:
    """``tasks`` without the units where model and twin were scored on different test regions (not paired)."""
    for split in dict.fromkeys(s for _, s, _, _ in tasks):
        apart = _scored_apart(n_test, model, twin, split)
        if apart:
            notes.append(f"{model}: {len(apart)} unit(s) of the {split} split left out, scored on other test "
                         f"regions than {twin} ({', '.join(sorted(apart))})")
            tasks = [(i, s, a.drop(list(apart), errors="ignore"), b.drop(list(apart), errors="ignore"))
                     if s == split else (i, s, a, b) for i, s, a, b in tasks]
    return tasks


def _gain_row(model: str, twin: str, indicator: str, split: str, a: pd.Series, b: pd.Series, level: float) -> dict:
    """One row of :data:`GAIN_COLUMNS`: the paired test of the model's values ``a`` against the twin's ``b``."""
    r = paired_test(a.dropna().to_dict(), b.dropna().to_dict(), level=level)
    rel = 100 * r["mean_diff"] / abs(r["mean_b"]) if r["n"] and r["mean_b"] else np.nan
    diffs = (a - b).dropna()
    return {"model": model, "twin": twin, "indicator": indicator, "split": split, "n_units": r["n"],
            "gain": r["mean_diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p": r["p"],
            "mde": r["mde"], "twin_mean": r["mean_b"], "relative_gain_pct": rel,
            "median_gain": float(diffs.median()) if len(diffs) else np.nan}


def _failed_probe_notes(wide: pd.DataFrame, twins: set[str]) -> list[str]:
    """A note per twin whose probe failed on some cells (test R2 below :data:`FAILED_R2`).

    Such a twin's features are degenerate for the probe (heavy-tailed: a few test regions far outside
    the train range, which the MLP extrapolates), so a mean gain over it is dominated by those cells.
    """
    notes = []
    for twin in sorted(twins):
        cells = wide.loc[twin].stack().dropna()
        failed = cells[cells < FAILED_R2]
        if len(failed):
            notes.append(f"{twin}: its probe fails on {len(failed)} of {len(cells)} (indicator, split, unit) cells "
                         f"(test R² below {FAILED_R2:g}, worst {failed.min():.1f}); the mean gains over it and their "
                         f"intervals are dominated by those cells, so read the median gain")
    return notes


def probe_seed_gains(metrics: pd.DataFrame, twins: Mapping[str, str] | None = None, metric: str = "R2",
                     level: float = 0.95) -> pd.DataFrame:
    """Gains over the twin on one city and pretraining seed, paired over *probe* seeds.

    For a page that ran one pretraining seed: ``metrics`` are :func:`~urbanlib.experiments.benchmark.run_benchmark`
    rows (model, indicator, probe_seed, metric, value, split, city). The interval covers the probe's
    seed noise only, not pretraining seeds or cities (the ``full`` tier's gains do).
    """
    m = metrics[metrics["metric"] == metric]
    rows = m.assign(task=m["indicator"] + "/" + m["split"].astype(str).str.split("(").str[0],
                    metric=f"{metric}_mean", seed=m["probe_seed"].astype(int))
    out = gains_over_twin(rows[["city", "seed", "model", "task", "metric", "value"]], twins, metric, level)
    return out.rename(columns={"n_units": "n_probe_seeds"})
