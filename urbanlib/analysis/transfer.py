"""Transfer heatmaps: probe on a source city, test on a target city (UrbanCLIP Fig. 5, UrbanLN Fig. 5).

The input is a tidy results table, one row per (source, target, indicator[, seed]) with a score
column (R² by default), or the long ``metric``/``value`` rows of
:func:`urbanlib.experiments.transfer.transfer_scores`. Repeated rows (probe seeds) are averaged. All panels of a figure share one
colour scale so colours compare across indicators and models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from urbanlib import style as house

__all__ = ["compare_transfer", "plot_transfer_comparison", "plot_transfer_heatmap", "plot_transfer_heatmaps",
           "transfer_difference", "transfer_limits"]


def _check(df: pd.DataFrame, columns: Sequence[str], what: str = "transfer table") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {list(df.columns)}")


def _means(df: pd.DataFrame, value: str, source_col: str, target_col: str, indicator_col: str) -> pd.DataFrame:
    """Mean score per (indicator, source, target), with the number of rows averaged.

    Accepts a wide table with a ``value`` column (e.g. ``R2``) or the long rows of
    :func:`urbanlib.experiments.transfer.transfer_scores` (``metric``/``value`` columns), whose
    ``metric == value`` rows are used.
    """
    if value not in df.columns and {"metric", "value"} <= set(df.columns):
        if value not in set(df["metric"]):
            raise ValueError(f"transfer table has no metric {value!r}; has {sorted(df['metric'].unique())}")
        df = df[df["metric"] == value].rename(columns={"value": value})
    _check(df, [value, source_col, target_col, indicator_col])
    return (df.groupby([indicator_col, source_col, target_col], sort=False)[value]
            .agg(["mean", "count"]).reset_index())


def transfer_limits(*frames: pd.DataFrame, value: str = "R2", source_col: str = "source",
                    target_col: str = "target", indicator_col: str = "indicator") -> tuple[float, float]:
    """One (vmin, vmax) over the seed-averaged cells of every table given: the shared colour scale."""
    cells = np.concatenate([_means(f, value, source_col, target_col, indicator_col)["mean"].to_numpy()
                            for f in frames])
    cells = cells[np.isfinite(cells)]
    if len(cells) == 0:
        raise ValueError(f"no finite {value!r} values to scale the heatmaps")
    lo, hi = float(cells.min()), float(cells.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _cities(m: pd.DataFrame, source_col: str, target_col: str, cities: Sequence[str] | None) -> list[str]:
    if cities is not None:
        return list(cities)
    return list(dict.fromkeys([*m[source_col], *m[target_col]]))


def plot_transfer_heatmap(
    df: pd.DataFrame,
    value: str = "R2",
    source_col: str = "source",
    target_col: str = "target",
    indicator: str | None = None,
    indicator_col: str = "indicator",
    vmin: float | None = None,
    vmax: float | None = None,
    cities: Sequence[str] | None = None,
    cmap: str = "viridis",
    title: str | None = None,
    ax=None,
    cbar_label: str | None = None,
):
    """Annotated source x target heatmap of one indicator (seaborn).

    Args:
        df: tidy transfer results; rows repeated over seeds are averaged.
        value: score column (``"R2"``).
        source_col: column naming the city the probe was trained on (rows of the heatmap).
        target_col: column naming the city it was tested on (columns).
        indicator: which indicator to draw; may be None only if the table holds one.
        indicator_col: column naming the indicator.
        vmin: lower colour limit; default: over ALL indicators of ``df`` (consistent panels).
        vmax: upper colour limit; default likewise.
        cities: row/column order (default: order of appearance).
        cmap: colour map.
        title: axes title (default: the indicator).
        ax: draw into this Axes instead of a new figure.
        cbar_label: colour bar label (default: ``value``).

    Returns:
        matplotlib Figure (the one holding ``ax`` if given).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    m = _means(df, value, source_col, target_col, indicator_col)
    indicators = list(dict.fromkeys(m[indicator_col]))
    if indicator is None:
        if len(indicators) != 1:
            raise ValueError(f"the table holds indicators {indicators}; name one with indicator=")
        indicator = indicators[0]
    if indicator not in indicators:
        raise ValueError(f"indicator {indicator!r} not in the table; has {indicators}")
    if vmin is None or vmax is None:
        lo, hi = transfer_limits(df, value=value, source_col=source_col, target_col=target_col,
                                 indicator_col=indicator_col)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    order = _cities(m, source_col, target_col, cities)
    sub = m[m[indicator_col] == indicator]
    grid = sub.pivot(index=source_col, columns=target_col, values="mean").reindex(index=order, columns=order)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(order), 0.6 + 0.8 * len(order)))
    else:
        fig = ax.figure
    sns.heatmap(grid, annot=True, fmt=".2f", cmap=cmap, vmin=vmin, vmax=vmax, square=True, ax=ax,
                cbar_kws={"label": cbar_label or value}, annot_kws={"fontsize": 8})
    ax.set_xlabel("target city (test)")
    ax.set_ylabel("source city (train)")
    n = int(sub["count"].max()) if len(sub) else 0
    ax.set_title(title or (f"{indicator}" + (f" (mean of {n})" if n > 1 else "")), fontsize=9)
    return fig


def plot_transfer_comparison(
    frames: Mapping[str, pd.DataFrame],
    indicators: Sequence[str] | None = None,
    value: str = "R2",
    source_col: str = "source",
    target_col: str = "target",
    indicator_col: str = "indicator",
    cities: Sequence[str] | None = None,
    show_difference: bool = True,
):
    """Models side by side: one row of heatmaps per model, one column per indicator.

    For UrbanCLIP Fig. 5 pass ``{"UrbanCLIP": .., "PG-SimCLR": ..}``; for UrbanLN Fig. 5
    ``{"UrbanLN street view": .., "UrbanLN satellite": ..}``. All model panels share one colour
    scale; with two models and ``show_difference`` a last row shows first minus second on a
    diverging scale centred at 0.

    Args:
        frames: model label -> tidy transfer table (as :func:`plot_transfer_heatmap`).
        indicators: columns of the grid (default: every indicator of the first table).
        value: score column.
        source_col: source city column.
        target_col: target city column.
        indicator_col: indicator column.
        cities: row/column order of every panel.
        show_difference: add the difference row (two models only).

    Returns:
        matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if not frames:
        raise ValueError("plot_transfer_comparison needs at least one table")
    labels = list(frames)
    first = _means(frames[labels[0]], value, source_col, target_col, indicator_col)
    indicators = list(indicators) if indicators is not None else list(dict.fromkeys(first[indicator_col]))
    restricted = {k: f[f[indicator_col].isin(indicators)] for k, f in frames.items()}
    vmin, vmax = transfer_limits(*restricted.values(), value=value, source_col=source_col,
                                 target_col=target_col, indicator_col=indicator_col)
    order = list(cities) if cities is not None else list(dict.fromkeys(
        c for f in restricted.values() for c in [*f[source_col], *f[target_col]]))
    diff = show_difference and len(labels) == 2
    n_rows = len(labels) + int(diff)
    side = 0.9 * len(order) + 1.2
    fig, axes = plt.subplots(n_rows, len(indicators), figsize=(side * len(indicators), 0.85 * side * n_rows),
                             squeeze=False)
    kw = {"value": value, "source_col": source_col, "target_col": target_col, "indicator_col": indicator_col,
          "cities": order}
    for r, label in enumerate(labels):
        for c, ind in enumerate(indicators):
            plot_transfer_heatmap(restricted[label], indicator=ind, vmin=vmin, vmax=vmax, ax=axes[r][c],
                                  title=f"{label}: {ind}", **kw)
    if diff:
        a, b = (_means(restricted[k], value, source_col, target_col, indicator_col) for k in labels)
        key = [indicator_col, source_col, target_col]
        d = a.merge(b, on=key, suffixes=("_a", "_b"))
        d[value] = d["mean_a"] - d["mean_b"]
        lim = float(np.nanmax(np.abs(d[value]))) if len(d) else 1.0
        lim = lim if lim > 0 else 1.0
        for c, ind in enumerate(indicators):
            plot_transfer_heatmap(d[key + [value]], indicator=ind, vmin=-lim, vmax=lim, cmap="RdBu",
                                  ax=axes[-1][c], title=f"{labels[0]} − {labels[1]}: {ind}",
                                  cbar_label=f"Δ {value}", **kw)
    fig.tight_layout()
    return fig


def transfer_difference(df_a: pd.DataFrame, df_b: pd.DataFrame, value: str = "R2", source_col: str = "source",
                        target_col: str = "target", indicator_col: str = "indicator") -> pd.DataFrame:
    """Cell-wise ``a - b`` of two models' seed-averaged transfer scores (cells both have), as a tidy table."""
    key = [indicator_col, source_col, target_col]
    a, b = (_means(f, value, source_col, target_col, indicator_col) for f in (df_a, df_b))
    d = a.merge(b, on=key, suffixes=("_a", "_b"))
    d[value] = d["mean_a"] - d["mean_b"]
    return d[key + [value]]


def plot_transfer_heatmaps(
    df: pd.DataFrame,
    indicators: Sequence[str],
    title: str,
    value: str = "R2",
    source_col: str = "source",
    target_col: str = "target",
    indicator_col: str = "indicator",
    cities: Sequence[str] | None = None,
    vrange: tuple[float, float] = house.R2_RANGE,
    cmap: str = "viridis",
):
    """One readable heatmap for one model and one group of indicators (the book's transfer figure).

    Rows are (source city, indicator) for the sources the table holds (no empty rows), columns the
    target cities. The colour scale is clipped to ``vrange`` so that one very negative R² does
    not flatten every positive one; a cell outside it is drawn in the edge colour, hatched, and its
    annotation (the true value) carries a ``<`` or ``>`` mark.

    Args:
        df: tidy transfer results (as :func:`plot_transfer_heatmap`); repeated rows are averaged.
        indicators: the group of indicators to draw, in order.
        title: figure title (say which model and what the cells are).
        value: score column.
        source_col: source city column.
        target_col: target city column.
        indicator_col: indicator column.
        cities: target order (default: order of appearance); sources follow the same order.
        vrange: (low, high) of the colour scale; use ``(-d, d)`` with ``cmap="RdBu"`` for differences.
        cmap: colour map.

    Returns:
        matplotlib Figure at the book's width.
    """
    import matplotlib.pyplot as plt

    m = _means(df, value, source_col, target_col, indicator_col)
    indicators = [i for i in house.order_indicators(indicators) if i in set(m[indicator_col])]
    if not indicators:
        raise ValueError(f"none of the indicators is in the table; it has {sorted(set(m[indicator_col]))}")
    order = _cities(m, source_col, target_col, cities)
    sources = [c for c in order if c in set(m[source_col])]
    grid = (m.set_index([source_col, indicator_col, target_col])["mean"]
            .reindex(pd.MultiIndex.from_product([sources, indicators, order])).to_numpy()
            .reshape(len(sources) * len(indicators), len(order)))
    lo, hi = vrange
    shown = np.clip(grid, lo, hi)
    fig, ax = plt.subplots(figsize=house.figsize(1, 1, panel_height=1.0 + 0.34 * grid.shape[0]))
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
    norm = im.norm
    for (r, c), v in np.ndenumerate(grid):
        if not np.isfinite(v):
            ax.text(c, r, house.DASH, ha="center", va="center", fontsize=8, color="0.4")
            continue
        out = "<" if v < lo else ">" if v > hi else ""
        if out:
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.85", lw=0))
        dark = norm(np.clip(v, lo, hi)) < 0.55 if cmap == "viridis" else abs(norm(np.clip(v, lo, hi)) - 0.5) > 0.3
        ax.text(c, r, f"{out}{v:.2f}", ha="center", va="center", fontsize=8.5,
                color="white" if dark else "black", fontweight="bold" if out else None)
    ax.set_xticks(range(len(order)), order)
    ax.set_yticks(range(grid.shape[0]), [f"{s} · {i}" for s in sources for i in indicators])
    for k in range(1, len(sources)):  # a line between source cities
        ax.axhline(k * len(indicators) - 0.5, color="white", lw=2)
    ax.set_xlabel("target city (test)")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, extend="both")
    cb.set_label(f"{value} (colour clipped to [{lo:g}, {hi:g}]; hatched: outside)", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def compare_transfer(
    df_a: pd.DataFrame,
    df_b: pd.DataFrame,
    value: str = "R2",
    source_col: str = "source",
    target_col: str = "target",
    indicator_col: str = "indicator",
    include_diagonal: bool = False,
) -> pd.DataFrame:
    """Per-indicator summary of two models' transfer scores (UrbanCLIP's "36/36 pairs" claim).

    Cells are seed means, paired on (indicator, source, target); by default only cross-city
    pairs (source != target) count, as in the paper.

    Returns:
        DataFrame with one row per indicator plus ``"all"``: ``mean_a``, ``mean_b``,
        ``n_pairs`` and ``n_a_better`` (pairs where a scores strictly higher).
    """
    key = [indicator_col, source_col, target_col]
    a = _means(df_a, value, source_col, target_col, indicator_col)
    b = _means(df_b, value, source_col, target_col, indicator_col)
    d = a.merge(b, on=key, suffixes=("_a", "_b"))
    if not include_diagonal:
        d = d[d[source_col] != d[target_col]]
    if d.empty:
        raise ValueError("the two transfer tables share no (indicator, source, target) cells")
    rows = []
    for name, g in [*d.groupby(indicator_col, sort=False), ("all", d)]:
        rows.append({indicator_col: name, "mean_a": float(g["mean_a"].mean()), "mean_b": float(g["mean_b"].mean()),
                     "n_pairs": len(g), "n_a_better": int((g["mean_a"] > g["mean_b"]).sum())})
    return pd.DataFrame(rows)
