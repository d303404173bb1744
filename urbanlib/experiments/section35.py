"""UrbanCLIP §3.5's two options measured on one city, on the benchmark's split, seeds and probe.

Rows (:data:`ROWS`), all scored on the same test regions with the same probe seeds:

- ``UrbanCLIP``: the benchmark's row, the frozen image encoder + the MLP probe;
- ``UrbanCLIP + POI/road infusion``: the same recipe with the third modality on
  (:mod:`urbanlib.experiments.infusion`), its frozen image encoder probed the same way;
- ``POI counts + road density (raw)``: the third modality's own vector under the probe, for scale;
- ``Prompt-guided (fixed prompt)``, ``Prompt-guided (start token only)`` and
  ``Prompt-guided (learned prompt)``: UrbanCLIP's decoder read at the prompt's next token
  (:mod:`urbanlib.experiments.prompted`); the start-token row is the control without indicator words.

Rows that read POI counts are marked for the targets the counts are an input of
(:data:`~urbanlib.experiments.infusion.SEES_TARGET_INPUTS`): ``sees_target_inputs`` is True there.
The paper reports no numbers for either option, so none of this is a verdict claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from urbanlib import style
from urbanlib.eval.probe import ProbeConfig, fit_probes
from urbanlib.models.urbanclip import UrbanCLIP
from urbanlib.pipeline.city import City
from urbanlib.pipeline.features import run_features

from .benchmark import common_split, encoder_features
from .infusion import SEES_TARGET_INPUTS, modality_inputs, pretrain_infused, standardise
from .prompted import (
    START_ONLY,
    PromptTuning,
    fixed_prompt_probes,
    learned_prompt_probes,
    prompt_features,
    prompt_for,
    unknown_words,
)

URBANCLIP = "UrbanCLIP"
INFUSED = "UrbanCLIP + POI/road infusion"
RAW = "POI counts + road density (raw)"
FIXED = "Prompt-guided (fixed prompt)"
START = "Prompt-guided (start token only)"
LEARNED = "Prompt-guided (learned prompt)"
ROWS = [URBANCLIP, INFUSED, RAW, FIXED, START, LEARNED]
READS_POIS = {INFUSED, RAW}  # rows whose model saw the POI counts


@dataclass
class Section35Result:
    """What :func:`run_section35` measured.

    Attributes:
        metrics: tidy rows (model, indicator, probe_seed, metric, value, n_test, sees_target_inputs,
            pretrain_seed, split, city).
        wall_s: seconds per row on this call (training or loading, features, probes).
        info: per row facts (training run info, prompt-tuning epochs, unknown prompt words).
        predictions: per row (S, N, T) ln(y + 1) predictions of every region.
        split: the split every row was scored on.
        runs: the training runs (UrbanCLIP and the infused one).
    """

    metrics: pd.DataFrame
    wall_s: dict[str, float] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    split: object = None
    runs: dict = field(default_factory=dict)


def run_section35(city: City, rows: list[str] | None = None, lambda_modality: float = 1.0,
                  tuning: PromptTuning | None = None, progress: bool = False, log=print) -> Section35Result:
    """Measure the §3.5 rows (``rows``, default all of :data:`ROWS`) on the city's split.

    Args:
        city: the city (its scale sets the models, the pretraining cap and the probe seeds).
        rows: which rows to run.
        lambda_modality: the infused run's weight of the third modality's loss.
        tuning: prompt-tuning settings of the learned-prompt row.
        progress: progress bars of the training runs.
        log: one line per row.
    """
    rows = list(rows or ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise KeyError(f"unknown rows {unknown}; choose from {ROWS}")
    targets, names = city.ds.log_targets(), list(city.ds.indicators)
    seeds = list(range(city.scale.probe_seeds))
    config = ProbeConfig.for_scale(city.scale)
    has_tile = np.where(city.tensors.satellite_mask, 0.0, np.nan)[:, None]
    split = common_split(city.split, [has_tile], log)
    out = Section35Result(pd.DataFrame(), split=split)
    start = time.perf_counter()
    base = encoder_features(city, URBANCLIP, progress) if any(r != RAW and r != INFUSED for r in rows) else None
    base_s = time.perf_counter() - start  # UrbanCLIP's training (or loading) and features, counted in its row
    if base is not None:
        out.runs[URBANCLIP] = base.run
    images = city.tensors.satellite_tensor()
    frames = []

    def add(name: str, metrics: pd.DataFrame, predictions: np.ndarray, start: float, info: dict | None = None):
        m = metrics.rename(columns={"seed": "probe_seed"})
        m.insert(0, "model", name)
        m["sees_target_inputs"] = (name in READS_POIS) & m["indicator"].isin(SEES_TARGET_INPUTS)
        frames.append(m)
        out.predictions[name] = predictions
        out.wall_s[name] = time.perf_counter() - start
        out.info[name] = info or {}
        log(f"{name}: {out.wall_s[name]:.1f} s")

    def probe(name, features, start, info=None):
        res = fit_probes(features, targets, split, seeds, config, indicators=names)
        add(name, res.metrics, res.predictions, start, info)

    for name in rows:
        start = time.perf_counter()
        if name == URBANCLIP:
            probe(name, base.features, start - base_s, {"cached": base.info.get("cached"), "run": base.run.info})
        elif name == INFUSED:
            run = pretrain_infused(city, lambda_modality=lambda_modality, progress=progress)
            out.runs[INFUSED] = run
            probe(name, run_features(run, city.tensors), start, {"cached": run.cached, "run": run.info,
                                                                   "train_wall_s": run.wall_s})
        elif name == RAW:
            raw, cols = modality_inputs(city)
            probe(name, standardise(raw, city.pretrain_idx), start, {"columns": cols})
        elif name in (FIXED, START):
            model: UrbanCLIP = base.run.model
            prompts = [prompt_for(i) if name == FIXED else START_ONLY for i in names]
            with torch.no_grad():
                feats = prompt_features(model, images, prompts)
            feats[~city.tensors.satellite_mask] = np.nan
            metrics, preds = fixed_prompt_probes(feats, targets, split, seeds, names, config)
            add(name, metrics, preds, start, {"prompts": dict(zip(names, prompts, strict=True)),
                                              "unknown_words": {i: unknown_words(model, p)
                                                                for i, p in zip(names, prompts, strict=True)}})
        else:  # LEARNED
            metrics, preds, info = learned_prompt_probes(base.run.model, images, targets, split, seeds, names,
                                                         config, tuning)
            add(name, metrics, preds, start, info)
    metrics = pd.concat(frames, ignore_index=True)
    metrics["pretrain_seed"], metrics["split"], metrics["city"] = city.seed, split.name, city.name
    out.metrics = metrics
    return out


def r2_table(metrics: pd.DataFrame, rows: list[str] | None = None) -> pd.DataFrame:
    """R² per row × indicator as ``mean ± std`` over probe seeds, a dagger where the row sees the target's inputs.

    Returns:
        A DataFrame (rows × indicators in the book's order) of strings.
    """
    r = metrics[metrics["metric"] == "R2"]
    g = r.groupby(["model", "indicator"], sort=False).agg(mean=("value", "mean"), std=("value", "std"),
                                                           sees=("sees_target_inputs", "any")).reset_index()
    order = [m for m in (rows or ROWS) if m in set(g["model"])]
    table = pd.DataFrame(index=order, columns=style.order_indicators(g["indicator"]), dtype=object)
    for _, x in g.iterrows():
        table.loc[x["model"], x["indicator"]] = style.mean_std(x["mean"], x["std"]) + (" †" if x["sees"] else "")
    return table


def paired_gains(metrics: pd.DataFrame, against: str = URBANCLIP) -> pd.DataFrame:
    """Each row's R² minus ``against``'s per indicator, over probe seeds paired by seed (same test regions).

    Returns:
        Rows ``model, indicator, gain, std, n`` (gain: mean over probe seeds).
    """
    r = metrics[metrics["metric"] == "R2"].pivot_table(index=["indicator", "probe_seed"], columns="model",
                                                         values="value")
    out = []
    for model in [c for c in r.columns if c != against]:
        d = (r[model] - r[against]).groupby(level="indicator")
        out.append(pd.DataFrame({"model": model, "gain": d.mean(), "std": d.std(), "n": d.count()}))
    return pd.concat(out).reset_index()[["model", "indicator", "gain", "std", "n"]] if out else pd.DataFrame()


def plot_r2(metrics: pd.DataFrame, rows: list[str] | None = None):
    """R² per indicator (mean ± std over probe seeds) of every row; hollow markers where a row sees the target's inputs.

    Returns:
        A matplotlib Figure (not shown).
    """
    from matplotlib.figure import Figure

    r = metrics[metrics["metric"] == "R2"]
    order = [m for m in (rows or ROWS) if m in set(r["model"])]
    inds = style.order_indicators(r["indicator"])
    fig = Figure(figsize=style.figsize(1, 1, panel_height=3.4))
    ax = fig.subplots()
    width = 0.8 / max(len(order), 1)
    for k, model in enumerate(order):
        g = r[r["model"] == model].groupby("indicator").agg(mean=("value", "mean"), std=("value", "std"),
                                                             sees=("sees_target_inputs", "any"))
        g = g.reindex(inds)
        x = np.arange(len(inds)) + (k - (len(order) - 1) / 2) * width
        line = ax.errorbar(x, g["mean"], yerr=g["std"], fmt="o", ms=4, capsize=2, label=model)
        sees = g["sees"].fillna(False).to_numpy(bool)
        if sees.any():
            ax.plot(x[sees], g["mean"].to_numpy()[sees], "o", ms=7, mfc="white", mec=line[0].get_color())
    g = r.groupby(["model", "indicator"])["value"].agg(["mean", "std"]).fillna(0.0)
    low = float((g["mean"] - g["std"]).min()) - 0.05
    if low < 0:
        ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(np.arange(len(inds)), inds, rotation=20)
    ax.set_ylabel("test R² (ln(y + 1))")
    ax.set_ylim(max(low, -0.5), 1.0)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    fig.tight_layout()
    return fig


def plot_terms(history: pd.DataFrame, terms: list[str], title: str = "", smooth: int = 5):
    """A training log's loss terms, one panel each at the book's width (thin: per step; thick: running mean).

    Returns:
        A matplotlib Figure (not shown).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=style.figsize(len(terms), 1, panel_height=2.4))
    axes = fig.subplots(1, len(terms), squeeze=False)[0]
    for ax, term in zip(axes, terms, strict=True):
        y = history[term].to_numpy(float)
        ax.plot(history["step"], y, lw=0.6, alpha=0.4, color="C0")
        ax.plot(history["step"], pd.Series(y).rolling(smooth, min_periods=1).mean(), lw=2, color="C0")
        ax.set_xlabel("step")
        ax.set_title(term.replace("_", " "))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
