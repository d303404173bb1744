"""Dataset statistics any layout supports: UrbanLN Table 5-style summaries and caption statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import UrbanDataset


def indicator_table(ds: UrbanDataset) -> pd.DataFrame:
    """One row per indicator: regions with a value, missing, mean, std, min, median, max (original units).

    This is the layout of UrbanLN Table 5 (dataset statistics), per city.
    """
    rows = []
    for city, g in ds.regions.groupby("city", sort=False):
        for ind in ds.indicators:
            v = g[ind].astype(float)
            ok = v.dropna()
            rows.append({"city": city, "indicator": ind, "regions": int(ok.size), "missing": int(v.isna().sum()),
                         "mean": ok.mean(), "std": ok.std(), "min": ok.min(), "median": ok.median(),
                         "max": ok.max()})
    return pd.DataFrame(rows)


def image_table(ds: UrbanDataset) -> pd.DataFrame:
    """Per city: regions, satellite images, street views, regions without street views, captions."""
    rows = []
    for city, g in ds.regions.groupby("city", sort=False):
        ids = set(g["region_id"])
        img = ds.images[ds.images["region_id"].isin(ids)]
        cap = ds.captions[ds.captions["region_id"].isin(ids)]
        street_regions = img.loc[img["kind"] == "street", "region_id"].nunique()
        rows.append({"city": city, "regions": len(g),
                     "satellite_images": int((img["kind"] == "satellite").sum()),
                     "street_views": int((img["kind"] == "street").sum()),
                     "regions_without_street_views": len(g) - int(street_regions),
                     "captions": len(cap)})
    return pd.DataFrame(rows)


def caption_table(ds: UrbanDataset) -> pd.DataFrame:
    """Per captioner and style: captions, mean/min/max words, and (if truth labels exist) noise rates.

    ``statements`` (SynthCity) is a list of dicts with ``true`` and ``kind``; the share of false
    statements is reported as ``false_statement_rate`` and per error kind.
    """
    cap = ds.captions.copy()
    if cap.empty:
        return pd.DataFrame()
    cap["words"] = cap["text"].astype(str).str.split().str.len()
    has_truth = "statements" in cap.columns
    rows = []
    for (source, style), g in cap.groupby(["source", "style"], sort=True):
        row = {"source": source, "style": style, "captions": len(g), "mean_words": g["words"].mean(),
               "min_words": int(g["words"].min()), "max_words": int(g["words"].max())}
        if has_truth:
            stmts = [s for lst in g["statements"] if isinstance(lst, list) for s in lst]
            n = max(len(stmts), 1)
            row["statements"] = len(stmts)
            row["false_statement_rate"] = sum(not s.get("true", True) for s in stmts) / n
            for kind in ("hallucination", "wrong_quantity", "filler"):
                row[f"{kind}_rate"] = sum(s.get("kind") == kind for s in stmts) / n
        rows.append(row)
    return pd.DataFrame(rows)


def log_correlations(ds: UrbanDataset, method: str = "spearman") -> pd.DataFrame:
    """Pairwise correlation of ln(y+1) indicators over regions where both are present."""
    logs = pd.DataFrame(ds.log_targets(), columns=ds.indicators)
    return logs.corr(method=method)


def morans_i(values: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> float:
    """Global Moran's I with binary rook (4-neighbour) weights on a grid.

    I = (N / W) · Σ_ij w_ij z_i z_j / Σ_i z_i², with z the deviations from the mean and W the sum of
    weights. Regions with NaN values are dropped together with their links.

    Args:
        values: a (rows, cols) grid, or a flat array together with integer ``rows`` and ``cols``.
        rows: grid rows of a flat ``values`` array.
        cols: grid columns of a flat ``values`` array.

    Returns:
        Moran's I (positive: neighbours alike; about -1/(N-1) under no autocorrelation); NaN if
        fewer than two linked regions remain or the values are constant.
    """
    values = np.asarray(values, dtype=float)
    if rows is None:
        if values.ndim != 2:
            raise ValueError(f"morans_i: expected a 2-D grid or flat values with rows/cols, got shape {values.shape}")
        grid = values
    else:
        rows, cols = np.asarray(rows, float), np.asarray(cols, float)
        keep = ~(np.isnan(rows) | np.isnan(cols))  # real data may lack grid coordinates
        values, rows, cols = values[keep], rows[keep].astype(int), cols[keep].astype(int)
        if values.size == 0:
            return float("nan")
        grid = np.full((rows.max() + 1, cols.max() + 1), np.nan)
        grid[rows, cols] = values
    ok = ~np.isnan(grid)
    if ok.sum() < 2:
        return float("nan")
    z = np.where(ok, grid - np.nanmean(grid), 0.0)
    denom = (z[ok] ** 2).sum()
    if denom == 0:
        return float("nan")
    num, w = 0.0, 0
    # each unordered neighbour pair appears twice in Σ_ij (i→j and j→i)
    for a, b, oa, ob in ((z[1:, :], z[:-1, :], ok[1:, :], ok[:-1, :]), (z[:, 1:], z[:, :-1], ok[:, 1:], ok[:, :-1])):
        link = oa & ob
        num += 2 * (a * b)[link].sum()
        w += 2 * int(link.sum())
    if w == 0:
        return float("nan")
    return float(ok.sum() / w * num / denom)


def morans_table(ds: UrbanDataset) -> pd.DataFrame:
    """Moran's I of every ln(y+1) indicator, per city (needs grid ``row``/``col``)."""
    rows = []
    for city, g in ds.regions.groupby("city", sort=False):
        for ind in ds.indicators:
            rows.append({"city": city, "indicator": ind,
                         "morans_i": morans_i(np.log1p(g[ind].astype(float)), g["row"], g["col"])})
    return pd.DataFrame(rows)


def plot_correlations(ds: UrbanDataset, method: str = "spearman"):
    """Heatmap of indicator correlations (ln(y+1)); returns a Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    corr = log_correlations(ds, method)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sns.heatmap(corr, annot=True, fmt=".2f", cmap="RdBu_r", vmin=-1, vmax=1, square=True, ax=ax,
                annot_kws={"fontsize": 7})
    ax.set_title(f"{method.title()} correlation of ln(y+1) indicators")
    fig.tight_layout()
    return fig
