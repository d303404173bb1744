"""From tidy metric rows to the papers' results table and prediction scatter.

* :func:`summarize` - mean ± std per model × indicator × metric over every seed (probe and
  pretraining seeds alike, so the spread includes pretraining variance when there are several).
* :func:`benchmark_table` - UrbanCLIP Table 2 / UrbanLN Table 1 layout: rows are models, columns
  indicator × (R², RMSE, MAE); best in bold, second underlined; an "Improvement" row under each of
  "our" models; explicit "n/a" rows (with the reason) for baselines that cannot run.
* :func:`plot_pred_vs_truth` - UrbanLN Fig. 2: predicted vs true ln(y + 1), R² on test and on all regions.

The Improvement row follows the papers: the relative gain (%) of our model over the best baseline
*on that column*, ``(ours - best) / best`` for R² and ``(best - ours) / best`` for RMSE and MAE
(checked against UrbanLN Table 1, where the printed row matches this to rounding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from urbanlib import style

from .metrics import HIGHER_IS_BETTER, METRICS, r2

BOLD = "font-weight: bold"
UNDERLINE = "text-decoration: underline"
ITALIC = "font-style: italic"
MISSING = "–"
SETTING_COLUMNS = ("city", "split", "scale", "experiment", "layout")  # must be constant within one table


def _task_col(df: pd.DataFrame) -> str:
    for col in ("indicator", "task"):
        if col in df.columns:
            return col
    raise ValueError(f"metric rows need an 'indicator' (or 'task') column; got {list(df.columns)}")


def summarize(metrics: pd.DataFrame, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """Mean, sample std and count of ``value`` per ``by`` × indicator × metric.

    Args:
        metrics: tidy rows with ``value``, ``metric``, an ``indicator`` (or ``task``) column and the
            ``by`` columns; all other columns (seeds) are averaged over.
        by: grouping columns besides indicator and metric, e.g. ``["model"]`` or ``["model", "split"]``.

    Returns:
        DataFrame with columns ``*by, indicator, metric, mean, std, n`` (std is NaN when n == 1).
    """
    task = _task_col(metrics)
    keys = [*by, task, "metric"]
    missing = [c for c in [*keys, "value"] if c not in metrics.columns]
    if missing:
        raise ValueError(f"metric rows lack columns {missing}; have {list(metrics.columns)}")
    out = (metrics.groupby(keys, sort=False)["value"].agg(mean="mean", std="std", n="count").reset_index())
    return out


def improvement(ours: float, best_baseline: float, metric: str) -> float:
    """Relative gain (%) of ours over the best baseline, positive when ours is better.

    NaN when undefined: no baseline value, or a best-baseline R² <= 0 (a percentage of a non-positive
    R² has no meaning).
    """
    if not np.isfinite(best_baseline) or not np.isfinite(ours):
        return np.nan
    if HIGHER_IS_BETTER[metric]:
        return np.nan if best_baseline <= 0 else 100.0 * (ours - best_baseline) / best_baseline
    return np.nan if best_baseline == 0 else 100.0 * (best_baseline - ours) / best_baseline


@dataclass
class BenchmarkTable:
    """The table's content before styling (handy for tests and for other renderers).

    Attributes:
        means: (rows, columns) floats: model means, then Improvement rows in %; NaN where empty.
        cells: the same shape as display strings ("0.512 ± 0.013", "8.1%", "n/a").
        styles: CSS per cell (bold best, underlined second, optional italic third).
        tooltips: per-cell hover text (n/a reasons, run counts).
        notes: footnotes shown under the table.
    """

    means: pd.DataFrame
    cells: pd.DataFrame
    styles: pd.DataFrame
    tooltips: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def styler(self, caption: str | None = None):
        """A pandas Styler (HTML in notebooks and the book)."""
        text = "<br>".join(filter(None, [caption, *self.notes]))
        st = (self.cells.style.apply(lambda _: self.styles, axis=None).set_tooltips(self.tooltips)
              .set_table_styles(style.TABLE_CSS, overwrite=False))
        return st.set_caption(text) if text else st


def _unavailable(not_available) -> dict[str, str]:
    if not_available is None:
        return {}
    if isinstance(not_available, Mapping):
        return {str(k): str(v) for k, v in not_available.items()}
    return {item.name: item.reason for item in not_available}  # NotAvailable objects


def _checked_summary(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The per-(model, task, metric) summary of ``df`` and its task column; a clear error for mixed or duplicate rows."""
    if "model" not in df.columns:
        raise ValueError(f"results need a 'model' column; got {list(df.columns)}")
    mixed = [c for c in SETTING_COLUMNS if c in df.columns and df[c].nunique() > 1]
    if mixed:
        raise ValueError(f"results mix several settings in columns {mixed}; one table shows one setting, "
                         "so filter them first (e.g. df[df.split == 'random'])")
    summary = df if "mean" in df.columns else summarize(df, by=["model"])
    task = _task_col(summary)
    dup = summary.duplicated(["model", task, "metric"])
    if dup.any():
        raise ValueError(f"{int(dup.sum())} duplicate (model, {task}, metric) rows in the summary, e.g. "
                         f"{summary.loc[dup, ['model', task, 'metric']].iloc[0].tolist()}")
    return summary, task


def _table_models(summary: pd.DataFrame, models_order: Sequence[str], na: dict, ours: Sequence[str]) -> list[str]:
    """The table's rows: ``models_order`` then the n/a ones; every row needs results or a reason."""
    models = list(dict.fromkeys([*models_order, *[m for m in na if m not in models_order]]))
    present = set(summary["model"])
    lacking = [m for m in models if m not in present and m not in na]
    if lacking:
        raise ValueError(f"no results for models {lacking}; pass them in not_available with a reason, "
                         f"or drop them from models_order. Models with results: {sorted(present)}")
    unknown_ours = [m for m in ours if m not in models]
    if unknown_ours:
        raise ValueError(f"ours={unknown_ours} are not in models_order {list(models)}")
    return models


def _grids(summary: pd.DataFrame, task: str, models: list[str], columns: pd.MultiIndex):
    """(mean, std, count) frames, models x (task, metric), NaN where a model has no row."""
    s = summary.set_index(["model", task, "metric"])
    mean = pd.DataFrame(np.nan, index=models, columns=columns)
    std, count = mean.copy(), mean.copy()
    for model in models:
        for col in columns:
            if (model, *col) in s.index:
                row = s.loc[(model, *col)]
                mean.loc[model, col], std.loc[model, col], count.loc[model, col] = row["mean"], row["std"], row["n"]
    return mean, std, count


def _rank_styles(shown: pd.DataFrame, ranked: list[str], columns: pd.MultiIndex, italic_third: bool) -> pd.DataFrame:
    """Bold / underline (/ italic) of the best, second (and third) displayed value of each column."""
    styles = pd.DataFrame("", index=shown.index, columns=columns)
    for col in columns:
        vals = shown.loc[ranked, col].dropna()
        distinct = sorted(set(vals), reverse=HIGHER_IS_BETTER[col[1]])
        for rank, css in enumerate([BOLD, UNDERLINE, ITALIC if italic_third else ""]):
            if rank < len(distinct) and css:
                styles.loc[vals.index[vals == distinct[rank]], col] = css
    return styles


def _with_improvements(mean: pd.DataFrame, shown: pd.DataFrame, models: list[str], baselines: list[str],
                       ours: Sequence[str], columns: pd.MultiIndex) -> pd.DataFrame:
    """The means with an "Improvement" row (relative gain over the best baseline) under each of ours."""
    rows, labels = [], []
    for model in models:
        rows.append(mean.loc[model])
        labels.append(model)
        if model in ours:
            best = {c: (shown.loc[baselines, c].max() if HIGHER_IS_BETTER[c[1]] else shown.loc[baselines, c].min())
                    if baselines else np.nan for c in columns}
            rows.append(pd.Series({c: improvement(shown.loc[model, c], best[c], c[1]) for c in columns}))
            labels.append("Improvement" if len(ours) == 1 else f"Improvement ({model})")
    means = pd.DataFrame(rows, index=labels, columns=columns)
    means.index.name = "Model"
    return means


def benchmark_frame(df: pd.DataFrame, models_order: Sequence[str], indicators: Sequence[str],
                    metrics: Sequence[str] = METRICS, ours: Sequence[str] = ("UrbanCLIP",),
                    not_available=None, decimals: int = 3, italic_third: bool = False,
                    unranked: Sequence[str] = (), tagged: Mapping[str, tuple[str, str]] | None = None
                    ) -> BenchmarkTable:
    """Lay out a results table in the papers' format (see :func:`benchmark_table`)."""
    summary, task = _checked_summary(df)
    na = _unavailable(not_available)
    models = _table_models(summary, models_order, na, ours)
    columns = pd.MultiIndex.from_tuples([(i, m) for i in indicators for m in metrics], names=["task", "metric"])
    mean, std, count = _grids(summary, task, models, columns)
    shown = mean.round(decimals)  # rank on the displayed (rounded) values so that printed ties share a style
    ranked = [m for m in models if m not in na and m not in unranked]
    styles = _rank_styles(shown, ranked, columns, italic_third)
    means = _with_improvements(mean, shown, models, [m for m in ranked if m not in ours], ours, columns)

    cells = pd.DataFrame("", index=means.index, columns=columns)
    tips = pd.DataFrame("", index=means.index, columns=columns)
    out_styles = pd.DataFrame("", index=means.index, columns=columns)
    for label in means.index:
        for col in columns:
            v = means.loc[label, col]
            if label in na:
                cells.loc[label, col], tips.loc[label, col] = "n/a", na[label]
            elif label in mean.index:
                sd, n = std.loc[label, col], count.loc[label, col]
                if not np.isfinite(v):
                    cells.loc[label, col] = MISSING
                else:
                    cells.loc[label, col] = style.mean_std(v, sd, decimals)
                    tips.loc[label, col] = f"mean ± std over {int(n)} runs" if np.isfinite(n) else ""
                out_styles.loc[label, col] = styles.loc[label, col]
            else:
                cells.loc[label, col] = f"{v:.1f}%" if np.isfinite(v) else MISSING
    notes = []
    for i, (model, reason) in enumerate(na.items(), 1):
        cells.loc[model] = f"n/a[{i}]"
        notes.append(f"[{i}] {model}: {reason}.")
    if any(means.loc[lbl].isna().any() for lbl in means.index if lbl.startswith("Improvement")):
        notes.append(f"Improvement {MISSING}: undefined (no baseline value, or the best baseline's R² ≤ 0).")
    notes.insert(0, f"Best in bold, second underlined{', third italic' if italic_third else ''}; "
                    "Improvement: relative gain over the best baseline per column.")
    shown_unranked = [m for m in models if m in unranked and m not in na]
    if shown_unranked:
        notes.insert(1, f"Shown for reference, neither ranked nor baselines of Improvement: {', '.join(shown_unranked)}.")
    tags = {m: t for m, t in (tagged or {}).items() if m in means.index}
    notes += [f"{m} ({tag}): {why}." for m, (tag, why) in tags.items()]
    label = {m: f"{m} ({tag})" for m, (tag, _) in tags.items()}
    means, cells, out_styles, tips = (t.rename(index=label) for t in (means, cells, out_styles, tips))
    return BenchmarkTable(means=means, cells=cells, styles=out_styles, tooltips=tips, notes=notes)


def benchmark_table(df: pd.DataFrame, models_order: Sequence[str], indicators: Sequence[str],
                    metrics: Sequence[str] = METRICS, ours: Sequence[str] = ("UrbanCLIP",),
                    not_available=None, decimals: int = 3, italic_third: bool = False,
                    caption: str | None = None, unranked: Sequence[str] = (),
                    tagged: Mapping[str, tuple[str, str]] | None = None):
    """The papers' main results table as a pandas Styler.

    Args:
        df: tidy metric rows (``model``, ``indicator``/``task``, ``metric``, ``value``, seeds...) or the
            output of :func:`summarize`.
        models_order: row order; baselines first, then ours, as in the papers.
        indicators: column groups, in order.
        metrics: metrics per indicator (R2 higher is better; RMSE, MAE lower).
        ours: models that get an Improvement row below them; every other ranked row is a baseline.
        not_available: ``{model: reason}`` or a list of :class:`urbanlib.baselines.base.NotAvailable`;
            shown as "n/a" rows with the reason as tooltip and footnote.
        decimals: digits shown (ranking uses the shown values).
        italic_third: also italicise the third best (UrbanLN Table 1 does).
        caption: text above the footnotes.
        unranked: rows shown for reference (controls, caption probes): neither ranked nor baselines.
        tagged: ``{model: (tag, why)}``: the row reads "model (tag)" and a footnote says why, e.g. a
            supervised baseline (:data:`urbanlib.experiments.benchmark.SUPERVISED`).

    Returns:
        A ``pandas.io.formats.style.Styler``; ``benchmark_frame`` gives the unstyled parts.
    """
    table = benchmark_frame(df, models_order, indicators, metrics, ours, not_available, decimals, italic_third,
                            unranked, tagged)
    return table.styler(caption)


def plot_pred_vs_truth(truth, pred, test_mask, indicator: str, ax=None) -> Figure:
    """Predicted vs true ln(y + 1) for every region, test regions highlighted (UrbanLN Fig. 2).

    Args:
        truth: (N,) ln(y + 1) truth, NaN where unknown.
        pred: (N,) predictions, NaN where the model had no input.
        test_mask: (N,) bool, True for test regions.
        indicator: name shown in the title.
        ax: draw into this Axes (its Figure is returned); a new Figure otherwise.

    Returns:
        The Figure; the title gives R² on the test regions and on all regions with both values.
    """
    truth, pred = np.asarray(truth, dtype=float), np.asarray(pred, dtype=float)
    test_mask = np.asarray(test_mask, dtype=bool)
    if not truth.shape == pred.shape == test_mask.shape or truth.ndim != 1:
        raise ValueError(f"truth, pred and test_mask must be equal (N,) arrays; got {truth.shape}, "
                         f"{pred.shape}, {test_mask.shape}")
    ok = np.isfinite(truth) & np.isfinite(pred)
    test = ok & test_mask
    if ax is None:
        fig = Figure(figsize=(4, 4))
        ax = fig.subplots()
    else:
        fig = ax.figure
    ax.scatter(truth[ok], pred[ok], marker="x", s=12, color="tab:blue", alpha=0.5, label="all regions")
    ax.scatter(truth[test], pred[test], marker="o", s=12, color="tab:purple", alpha=0.8, label="test regions")
    if ok.any():
        lo = min(truth[ok].min(), pred[ok].min())
        hi = max(truth[ok].max(), pred[ok].max())
        ax.plot([lo, hi], [lo, hi], ls=":", color="k", lw=1)
    r2_test = r2(truth[test], pred[test]) if test.any() else np.nan
    r2_all = r2(truth[ok], pred[ok]) if ok.any() else np.nan
    ax.set_title(f"{indicator}\n$R^2$ test {style.number(r2_test)}, all {style.number(r2_all)}", fontsize=9)
    ax.set_xlabel("true ln(y + 1)")
    ax.set_ylabel("predicted ln(y + 1)")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return fig


def plot_predictions(result, targets, seed_index: int = 0, ncols: int = 3) -> Figure:
    """:func:`plot_pred_vs_truth` for every indicator of a :class:`~urbanlib.eval.probe.ProbeResult`.

    Args:
        result: a probe result (predictions for all regions).
        targets: (N, T) ln(y + 1) truth, the array the probe was fitted on.
        seed_index: which probe seed's heads to show.
        ncols: panels per row.
    """
    targets = np.asarray(targets, dtype=float)
    T = len(result.indicators)
    nrows = int(np.ceil(T / ncols))
    fig = Figure(figsize=style.figsize(min(T, ncols), nrows, panel_height=2.5, max_height=12), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, min(T, ncols))).ravel()
    mask = result.test_mask()
    for j, name in enumerate(result.indicators):
        plot_pred_vs_truth(targets[:, j], result.predictions[seed_index, :, j], mask, name, ax=axes[j])
    for ax in axes[T:]:
        ax.set_visible(False)
    return fig
