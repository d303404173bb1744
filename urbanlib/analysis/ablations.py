"""Ablation bar charts (UrbanCLIP Fig. 4, UrbanLN Fig. 3, Table 4) with the spread they rest on.

One bar per variant: the metric averaged over indicators, then mean ± std over the replicate
column the caller names: probe seeds on a single-run page, pretraining seeds for the results
tier. Each replicate is also drawn as a dot, since three seeds are too few for a bar to summarise.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from urbanlib import style as house

from .paired import paired_test

# The papers' figures as bar orders (the full model first); names as the ablation runs label them.
FIGURES: dict[str, list[str]] = {
    "UrbanCLIP (Fig. 4)": ["UrbanCLIP", "UrbanViT", "w/o refined text", "Text-SimCLR", "w/o L_LM", "w/o L_Con"],
    "UrbanLN (Fig. 3)": ["UrbanLN", "w/o Refinement", "w/o Consensus", "w/o IPSI", "w/o MSD",
                         "one captioner (sim-qwen)", "stage 0 only (reference)"],
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
        fig, ax = plt.subplots(figsize=house.figsize(len(order), 1, panel_height=3.4))
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


def ablation_differences(rows: pd.DataFrame, order: Sequence[str], replicate: str = "seed",
                         metric: str = "R2", level: float = 0.95) -> pd.DataFrame:
    """Each variant minus the reference (``order[0]``, the full model), paired over replicates.

    Bars of variants that all sit near the same value hide what matters: how far each is from
    the full model, and whether that gap is more than noise. Here each replicate (a probe or
    pretraining seed) gives one difference of the indicator-averaged ``metric``, and the rows carry
    the mean difference with its paired t interval (:func:`urbanlib.analysis.paired.paired_test`).

    Returns:
        One row per variant after the reference, indexed by variant: ``diff``, ``ci_low``,
        ``ci_high``, ``n`` (paired replicates), ``p``; NaN where a variant has no paired replicate.
    """
    g = ablation_summary(rows, order, replicate, metric)
    r = rows[(rows["metric"] == metric) & rows["model"].isin(order)]
    per = r.groupby(["model", replicate])["value"].mean()
    ref = order[0]
    out = []
    for variant in order[1:]:
        if ref not in g.index or variant not in per.index.get_level_values(0) or ref not in per.index.get_level_values(0):
            out.append({"variant": variant, "diff": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0, "p": np.nan})
            continue
        t = paired_test(per.loc[variant].to_dict(), per.loc[ref].to_dict(), level=level)
        out.append({"variant": variant, "diff": t["mean_diff"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
                    "n": t["n"], "p": t["p"]})
    return pd.DataFrame(out).set_index("variant")


def plot_ablation_differences(rows: pd.DataFrame, order: Sequence[str], replicate: str = "seed",
                              metric: str = "R2", title: str = "", ax=None):
    """Each variant's paired difference from the full model (``order[0]``) with its 95% interval.

    A dot per variant at its mean difference, a line for the interval (none with fewer than two
    replicates), and a line at 0: left of it the variant is worse than the full model.
    """
    d = ablation_differences(rows, order, replicate, metric)
    if ax is None:
        fig, ax = plt.subplots(figsize=house.figsize(1, 1, panel_height=0.9 + 0.38 * len(d)))
    else:
        fig = ax.figure
    y = np.arange(len(d))[::-1]
    ok = d["ci_low"].notna().to_numpy()
    ax.errorbar(d["diff"][ok], y[ok], xerr=[(d["diff"] - d["ci_low"])[ok], (d["ci_high"] - d["diff"])[ok]],
                fmt="o", color="C0", ecolor="C0", capsize=3)
    ax.plot(d["diff"][~ok], y[~ok], "o", color="C7")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [f"{v} (n={int(n)})" for v, n in zip(d.index, d["n"], strict=True)])
    ax.set_xlabel(f"{metric} of the variant − {order[0]} (mean over indicators; 95% CI over "
                  f"{replicate.replace('_', ' ')}s)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"paired differences from {order[0]}")
    fig.tight_layout()
    return fig


def plot_msd_noise_sweep(metrics: pd.DataFrame, metric: str = "R2"):
    """MSD's benefit against caption noise: R² with and without MSD per noise level, and their gap.

    Args:
        metrics: tidy probe rows of :func:`urbanlib.experiments.msd_sweeps.msd_noise_sweep` (``noise``,
            ``rho``, ``model``, ``indicator``, ``probe_seed``, ``metric``, ``value``).
        metric: which metric to plot.
    """
    r = metrics[metrics["metric"] == metric]
    per = r.groupby(["noise", "rho", "model", "probe_seed"])["value"].mean().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=house.figsize(2, 1, panel_height=3.4))
    for model, color in (("with MSD", "C0"), ("w/o MSD", "C7")):
        g = per[per["model"] == model].groupby(["noise", "rho"])["value"].agg(["mean", "std"]).reset_index()
        for rho, gg in g.groupby("rho"):
            style = "-o" if len(gg) > 1 else "s"
            axes[0].errorbar(gg["noise"], gg["mean"], yerr=gg["std"], fmt=style, color=color, capsize=3,
                             label=f"{model} (ρ={rho:g})")
    axes[0].set_xlabel("caption noise (× each captioner's error rates)")
    axes[0].set_ylabel(f"{metric} (mean over indicators)")
    axes[0].legend(fontsize=8)
    wide = per.pivot_table(index=["noise", "rho", "probe_seed"], columns="model", values="value").reset_index()
    wide["gap"] = wide["with MSD"] - wide["w/o MSD"]
    g = wide.groupby(["noise", "rho"])["gap"].agg(["mean", "std"]).reset_index()
    for rho, gg in g.groupby("rho"):
        axes[1].errorbar(gg["noise"], gg["mean"], yerr=gg["std"], fmt="-o" if len(gg) > 1 else "s", capsize=3,
                         label=f"ρ={rho:g}")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xlabel("caption noise (× each captioner's error rates)")
    axes[1].set_ylabel(f"{metric}: with MSD − w/o MSD")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("MSD against caption noise (error bars: std over probe seeds)")
    fig.tight_layout()
    return fig
