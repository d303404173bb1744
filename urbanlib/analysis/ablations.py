"""Ablation bar charts (UrbanCLIP Fig. 4, UrbanLN Fig. 3, Table 4) with the spread they rest on.

One bar per variant: the metric averaged over indicators, then mean ± std over the replicate
column the caller names: probe seeds on a single-run page, pretraining seeds for the results
tier. Each replicate is also drawn as a dot, since three seeds are too few for a bar to summarise.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd

# The papers' figures as bar orders (the full model first); names as the ablation runs label them.
FIGURES: dict[str, list[str]] = {
    "UrbanCLIP (Fig. 4)": ["UrbanCLIP", "UrbanViT", "w/o refined text", "Text-SimCLR", "w/o L_LM", "w/o L_Con"],
    "UrbanLN (Fig. 3)": ["UrbanLN", "w/o Refinement", "w/o Consensus", "w/o IPSI", "w/o MSD",
                         "one captioner (sim-qwen)"],
    "UrbanLN mu sweep (Table 4)": ["mu=0.5", "mu=0.3", "mu=0.4", "mu=0.6"],
}


def ablation_summary(rows: pd.DataFrame, order: Sequence[str], replicate: str = "seed",
                     metric: str = "R2") -> pd.DataFrame:
    """Per-variant mean, std and n over replicates of the indicator-averaged ``metric``.

    Args:
        rows: tidy rows with ``model``, ``indicator``, ``metric``, ``value`` and ``replicate``.
        order: the variants to keep, in display order (missing ones become NaN rows).
        replicate: the column whose values are independent repeats (``probe_seed``, ``seed``).
        metric: which metric to average.
    """
    for col in ("model", "indicator", "metric", "value", replicate):
        if col not in rows.columns:
            raise ValueError(f"ablation rows lack column {col!r}; have {list(rows.columns)}")
    r = rows[(rows["metric"] == metric) & rows["model"].isin(order)]
    per_rep = r.groupby(["model", replicate])["value"].mean().rename("value").reset_index()
    g = per_rep.groupby("model")["value"].agg(mean="mean", std="std", n="count").reindex(list(order))
    g["values"] = per_rep.groupby("model")["value"].agg(list).reindex(list(order))
    return g


def plot_ablation_bars(rows: pd.DataFrame, order: Sequence[str], replicate: str = "seed", metric: str = "R2",
                       title: str = "", ax=None):
    """Bar chart of :func:`ablation_summary`; the first variant (the full model) is coloured."""
    g = ablation_summary(rows, order, replicate, metric)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 * len(order) + 2, 3.2))
    else:
        fig = ax.figure
    x = range(len(order))
    ax.bar(x, g["mean"], yerr=g["std"].fillna(0), capsize=4, color=["C0"] + ["C7"] * (len(order) - 1), alpha=0.85)
    for i, vals in enumerate(g["values"]):
        if isinstance(vals, list):
            ax.scatter([i] * len(vals), vals, s=12, color="k", zorder=3)
    ax.set_xticks(list(x), list(order), rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (mean over indicators)")
    n = int(g["n"].max()) if g["n"].notna().any() else 0
    ax.set_title(title or f"error bars: std over {n} {replicate.replace('_', ' ')}s; dots: each")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
