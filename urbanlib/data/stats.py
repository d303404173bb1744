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


def morans_i(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    """Moran's I of values on a grid with rook (4-neighbour) binary weights; NaNs are dropped.

    I = (n / W) * sum_ij w_ij z_i z_j / sum_i z_i^2 with z = x - mean(x). Positive means similar
    values cluster in space; it is ~ -1/(n-1) for spatially random values.
    """
    values, rows, cols = (np.asarray(a, dtype=float) for a in (values, rows, cols))
    ok = ~(np.isnan(values) | np.isnan(rows) | np.isnan(cols))
    x, r, c = values[ok], rows[ok].astype(int), cols[ok].astype(int)
    n = x.size
    if n < 3 or np.allclose(x, x[0]):
        return float("nan")
    z = x - x.mean()
    index = {(ri, ci): k for k, (ri, ci) in enumerate(zip(r, c, strict=True))}
    num, w = 0.0, 0
    for k, (ri, ci) in enumerate(zip(r, c, strict=True)):
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            j = index.get((ri + dr, ci + dc))
            if j is not None:
                num += z[k] * z[j]
                w += 1
    if w == 0:
        return float("nan")
    return float(n / w * num / (z @ z))


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
