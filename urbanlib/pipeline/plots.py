"""Figures of pretraining runs: loss curves and images beside their captions."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def plot_losses(history: pd.DataFrame, terms: list[str] | None = None, title: str = "",
                smooth: int = 10) -> Figure:
    """Per-step loss terms (thin) and their running mean over ``smooth`` steps (thick), one panel each.

    Args:
        history: the trainer's log (``step`` plus one column per term).
        terms: columns to plot (default: every column ending in ``loss``).
        title: figure title.
        smooth: window of the running mean.
    """
    terms = terms or [c for c in history.columns if c.endswith("loss")]
    missing = [t for t in terms if t not in history]
    if missing:
        raise KeyError(f"loss terms {missing} not in the log (columns: {list(history.columns)})")
    fig, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3), squeeze=False)
    for ax, term in zip(axes[0], terms, strict=True):
        y = history[term].to_numpy(float)
        ax.plot(history["step"], y, lw=0.6, alpha=0.4, color="C0")
        ax.plot(history["step"], pd.Series(y).rolling(smooth, min_periods=1).mean(), lw=2, color="C0")
        ax.set_xlabel("step")
        ax.set_title(term)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_validation(curve: pd.DataFrame, info: dict, title: str = "") -> Figure:
    """The validation loss over training: where it was best, where the lr was cut, why the run stopped.

    Args:
        curve: :func:`~urbanlib.pipeline.runs.validation_curve` (step, epoch, val_loss, best_val_loss, lr_scale).
        info: the run's facts (``best_step``, ``steps``, ``step_cap``, ``stopped_by``).
        title: figure title.
    """
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if curve.empty:
        ax.text(0.5, 0.5, "this run evaluated no validation loss", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    ax.plot(curve["step"], curve["val_loss"], marker="o", ms=3, lw=1.2, label="validation loss")
    ax.plot(curve["step"], curve["best_val_loss"], lw=1, ls="--", color="0.4", label="best so far")
    best = info.get("best_step")
    if best is not None:
        ax.axvline(best, color="C2", lw=1, label=f"best, step {best} (the weights kept)")
    cuts = curve["step"][curve["lr_scale"].diff().fillna(0) < 0]
    for k, step in enumerate(cuts):
        ax.axvline(step, color="C3", lw=0.6, alpha=0.6, label="lr halved" if k == 0 else None)
    lo, hi = curve["val_loss"].min(), curve["val_loss"].quantile(0.9)
    ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))  # the plateau, not the first steps
    ax.set_xlabel("step")
    ax.set_ylabel("held-out loss")
    ax.set_title(title or f"stopped by {info.get('stopped_by')} at step {info.get('steps')} "
                          f"(cap {info.get('step_cap')})")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def describe_stopping(info: dict) -> str:
    """One sentence on how long a run trained and why it stopped (for the pretraining pages)."""
    stop = info.get("stopped_by")
    if stop is None:
        return "This run evaluated no validation loss; it trained for its fixed length."
    still = " (its validation loss was still improving at the end)" if info.get("best_step") == info.get("steps") else ""
    why = ("its validation loss had stopped improving (patience)" if stop == "patience" else
           f"it reached its step cap before its patience ran out{still}")
    return (f"The run trained {info.get('steps')} of at most {info.get('step_cap')} steps "
            f"({info.get('epochs_run', float('nan')):.1f} epochs) and stopped because {why}; the weights kept are "
            f"those of step {info.get('best_step')}, validation loss {info.get('best_val_loss', float('nan')):.3f}.")


def plot_image_captions(images: np.ndarray, columns: dict[str, list[str]], region_ids=None,
                        width: int = 60, max_chars: int = 400) -> Figure:
    """One row per image: the image, then one wrapped text per column (e.g. training vs generated).

    Args:
        images: (n, 3, H, W) uint8.
        columns: column title -> n texts.
        region_ids: optional row labels.
        width: wrap width in characters.
        max_chars: texts are cut here (with "...") so long captions stay readable.
    """
    n = len(images)
    fig, axes = plt.subplots(n, 1 + len(columns), figsize=(3 + 4.5 * len(columns), 2.6 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1] + [3] * len(columns)})
    for i in range(n):
        axes[i, 0].imshow(images[i].transpose(1, 2, 0))
        axes[i, 0].set_axis_off()
        if region_ids is not None:
            axes[i, 0].set_title(str(region_ids[i]), fontsize=8)
        for j, (name, texts) in enumerate(columns.items(), start=1):
            text = texts[i] if len(texts[i]) <= max_chars else texts[i][:max_chars] + "..."
            ax = axes[i, j]
            ax.text(0, 1, textwrap.fill(text, width), va="top", ha="left", fontsize=8, family="serif",
                    transform=ax.transAxes)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name, fontsize=10, loc="left")
    fig.tight_layout()
    return fig
