"""Cross-city similarity of region representations (UrbanCLIP §4.4.2, Fig. 6).

The paper takes one randomly chosen Beijing tile, finds the most cosine-similar tile in each other
city and observes that their indicators are "very close". Here queries are drawn by seed, never
picked, and the closeness is measured: the absolute gap in ln(y + 1) between each query and its
top match in every other city, against random regions of those cities and against other models'
matches, with bootstrap confidence intervals over queries.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from urbanlib import style as house

__all__ = [
    "cosine_similarity",
    "cross_city_matches",
    "draw_queries",
    "match_gap",
    "plot_matches",
    "top_matches",
]

RANDOM = "random pairs"  # the model name of the random-pairs baseline in match_gap's table


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity between the rows of ``a`` (Q, F) and ``b`` (T, F) -> (Q, T).

    Rows with NaN give NaN similarities; an all-zero row gives 0.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (Q, F) and (T, F) with the same F, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na > 0, na, 1.0)) @ (b / np.where(nb > 0, nb, 1.0)).T  # (Q, T)


def top_matches(query_feats: np.ndarray, target_feats: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar targets of every query.

    Args:
        query_feats: (Q, F) query features.
        target_feats: (T, F) candidate features; NaN rows (no image) are never matched.
        k: matches per query.

    Returns:
        indices (Q, k) into ``target_feats`` and similarities (Q, k), best first; ties go to the
        lower target index. A query with NaN features gets indices -1 and NaN similarities.
    """
    sim = cosine_similarity(query_feats, target_feats)
    target_ok = np.isfinite(np.asarray(target_feats, dtype=float)).all(axis=1)
    if k < 1 or k > target_ok.sum():
        raise ValueError(f"k={k} must be between 1 and the {int(target_ok.sum())} targets with finite features")
    sim = np.where(target_ok[None, :], sim, -np.inf)
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # (Q, k)
    top = np.take_along_axis(sim, idx, axis=1)
    bad = ~np.isfinite(top).all(axis=1)
    idx[bad], top[bad] = -1, np.nan
    return idx, top


def draw_queries(n: int, n_regions: int, seed: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Query regions drawn at random without replacement (never hand-picked).

    Args:
        n: number of queries.
        n_regions: N, the size of the region table.
        seed: the draw's seed.
        eligible: (N,) bool, regions that may be drawn (e.g. one city, with an image).

    Returns:
        (n,) sorted region positions.
    """
    pool = np.arange(n_regions) if eligible is None else np.flatnonzero(np.asarray(eligible, dtype=bool))
    if eligible is not None and len(eligible) != n_regions:
        raise ValueError(f"eligible has {len(eligible)} entries, expected n_regions={n_regions}")
    if not 0 < n <= len(pool):
        raise ValueError(f"cannot draw n={n} queries from {len(pool)} eligible regions")
    return np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=False))


def cross_city_matches(features: np.ndarray, cities: np.ndarray, queries: np.ndarray, k: int = 1) -> pd.DataFrame:
    """Top-``k`` cosine matches of every query in each *other* city.

    Args:
        features: (N, F) representations of all regions of all cities.
        cities: (N,) city of each region.
        queries: positions of the query regions.
        k: matches per (query, target city).

    Returns:
        Tidy DataFrame: ``query``, ``query_city``, ``target_city``, ``rank`` (1 = best),
        ``match`` (region position), ``similarity``.
    """
    features, cities, queries = np.asarray(features, dtype=float), np.asarray(cities), np.asarray(queries, dtype=int)
    if len(features) != len(cities):
        raise ValueError(f"{len(features)} feature rows but {len(cities)} cities")
    names = list(pd.unique(cities))
    if len(names) < 2:
        raise ValueError(f"cross-city matching needs at least two cities, got {names}")
    if not np.isfinite(features[queries]).all():
        bad = queries[~np.isfinite(features[queries]).all(axis=1)]
        raise ValueError(f"query regions {bad.tolist()} have NaN features (no image); draw them from valid regions")
    rows = []
    for city in names:
        pos = np.flatnonzero(cities == city)
        qs = queries[cities[queries] != city]
        if len(qs) == 0:
            continue
        idx, sim = top_matches(features[qs], features[pos], k)
        for q, i_row, s_row in zip(qs, idx, sim, strict=True):
            for r, (i, s) in enumerate(zip(i_row, s_row, strict=True), start=1):
                rows.append({"query": int(q), "query_city": cities[q], "target_city": city, "rank": r,
                             "match": int(pos[i]), "similarity": float(s)})
    return pd.DataFrame(rows).sort_values(["query", "target_city", "rank"], ignore_index=True)


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Column means skipping NaN; all-NaN columns (a missing indicator) stay NaN without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=0)


def _bootstrap_mean_ci(values: np.ndarray, resamples: np.ndarray, level: float) -> tuple[float, float, float]:
    """Mean of ``values`` (NaN skipped) and its percentile CI over precomputed index resamples."""
    if not np.isfinite(values).any():
        return np.nan, np.nan, np.nan
    boot = _nanmean(values[resamples].T)  # (n_boot,)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(boot, [alpha, 1 - alpha])
    return float(np.nanmean(values)), float(lo), float(hi)


def _matched_gaps(f: np.ndarray, cities: np.ndarray, y: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, I): per query, the gap to its top-``k`` matches in each other city, averaged over ranks then cities."""
    m = cross_city_matches(f, cities, queries, k)
    gaps = np.abs(y[m["query"].to_numpy()] - y[m["match"].to_numpy()])  # (rows, I)
    g = pd.DataFrame(gaps).assign(query=m["query"].to_numpy(), target_city=m["target_city"].to_numpy())
    by_city = g.groupby(["query", "target_city"]).mean()  # mean over the k ranks (NaN skipped)
    return by_city.groupby(level="query").mean().reindex(queries).to_numpy()


def _random_gaps(cities: np.ndarray, y: np.ndarray, queries: np.ndarray, usable: np.ndarray, n_random: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(Q, I): the same gap with ``n_random`` usable regions drawn uniformly from each other city as matches."""
    rand = np.full((len(queries), y.shape[1]), np.nan)
    for qi, q in enumerate(queries):
        per_city = []
        for city in pd.unique(cities):
            if city == cities[q]:
                continue
            pool = np.flatnonzero((cities == city) & usable)
            draws = rng.choice(pool, size=n_random, replace=True)
            per_city.append(_nanmean(np.abs(y[q] - y[draws])))
        rand[qi] = _nanmean(np.vstack(per_city))
    return rand


def match_gap(
    features: Mapping[str, np.ndarray],
    cities: np.ndarray,
    log_indicators: pd.DataFrame,
    queries: np.ndarray,
    k: int = 1,
    n_random: int = 10,
    n_boot: int = 1000,
    level: float = 0.95,
    reference: str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Gap in log indicators between queries and their cross-city matches, per model.

    For each query and each other city, the gap is ``|y_query - y_match|`` (averaged over the
    top ``k`` matches), where ``y`` is ln(y + 1) of an indicator; a query's gap is the mean over
    target cities. The random baseline replaces the matches by ``n_random`` uniformly drawn
    regions of each target city (regions with finite features in every model). Confidence
    intervals are percentile bootstraps over queries; one set of resamples is shared by all
    models, so the differences are paired.

    Args:
        features: model name -> (N, F) features of all regions (e.g. ``{"UrbanCLIP": ..,
            "UrbanViT": ..}``).
        cities: (N,) city of each region.
        log_indicators: (N, I) DataFrame of ln(y + 1) indicators (NaN = missing), e.g.
            ``pd.DataFrame(ds.log_targets(), columns=ds.indicators)``.
        queries: query positions (:func:`draw_queries`).
        k: matches averaged per (query, target city).
        n_random: random regions per (query, target city) for the baseline.
        n_boot: bootstrap resamples.
        level: confidence level.
        reference: optional model name; adds the paired difference to its gap.
        seed: seeds the random pairs and the bootstrap.

    Returns:
        Tidy DataFrame, one row per (model, indicator), models in the given order followed by
        ``"random pairs"``: ``mean_gap``, ``ci_low``, ``ci_high``, ``n_queries`` (queries with
        a finite gap), ``diff_vs_random`` with ``diff_ci_low``/``diff_ci_high`` (negative =
        closer than random), and with ``reference``: ``diff_vs_reference``,
        ``ref_ci_low``/``ref_ci_high``.
    """
    if not features:
        raise ValueError("match_gap needs at least one model's features")
    if reference is not None and reference not in features:
        raise ValueError(f"reference {reference!r} is not one of the models {list(features)}")
    cities, queries = np.asarray(cities), np.asarray(queries, dtype=int)
    y = log_indicators.to_numpy(dtype=float)  # (N, I)
    n = len(cities)
    for name, f in features.items():
        if np.shape(f)[0] != n:
            raise ValueError(f"features of {name!r} have {np.shape(f)[0]} rows, cities has {n}")
    if y.shape[0] != n:
        raise ValueError(f"log_indicators has {y.shape[0]} rows, cities has {n}")
    rng = np.random.default_rng(seed)

    per_query = {name: _matched_gaps(f, cities, y, queries, k) for name, f in features.items()}  # (Q, I) each
    usable = np.ones(n, bool)
    for f in features.values():
        usable &= np.isfinite(np.asarray(f, dtype=float)).all(axis=1)
    per_query[RANDOM] = rand = _random_gaps(cities, y, queries, usable, n_random, rng)

    resamples = rng.integers(0, len(queries), size=(n_boot, len(queries)))
    rows = []
    for name, gap in per_query.items():
        for j, indicator in enumerate(log_indicators.columns):
            mean, lo, hi = _bootstrap_mean_ci(gap[:, j], resamples, level)
            d_mean, d_lo, d_hi = (_bootstrap_mean_ci(gap[:, j] - rand[:, j], resamples, level) if name != RANDOM
                                  else (np.nan,) * 3)
            row = {"model": name, "indicator": indicator, "mean_gap": mean, "ci_low": lo, "ci_high": hi,
                   "n_queries": int(np.isfinite(gap[:, j]).sum()),
                   "diff_vs_random": d_mean, "diff_ci_low": d_lo, "diff_ci_high": d_hi}
            if reference is not None and name == reference:
                row.update(diff_vs_reference=np.nan, ref_ci_low=np.nan, ref_ci_high=np.nan)
            elif reference is not None:
                r_mean, r_lo, r_hi = _bootstrap_mean_ci(gap[:, j] - per_query[reference][:, j], resamples, level)
                row.update(diff_vs_reference=r_mean, ref_ci_low=r_lo, ref_ci_high=r_hi)
            rows.append(row)
    return pd.DataFrame(rows)


def _short(text: str, max_chars: int, width: int) -> str:
    """Caption shortened to ``max_chars`` (on a word boundary) and wrapped at ``width``."""
    text = " ".join(str(text).split())
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0] + " …"
    return textwrap.fill(text, width=width)


def plot_matches(
    matches: pd.DataFrame,
    images: np.ndarray,
    indicators: pd.DataFrame,
    captions: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    max_caption_chars: int = 140,
    wrap: int = 24,
):
    """One query and its cross-city matches: image, caption, indicators, similarity.

    Args:
        matches: rows of :func:`cross_city_matches` for ONE query (e.g. ``rank == 1``).
        images: (N, 3, H, W) uint8 images of all regions.
        indicators: (N, I) DataFrame of indicator values to print (original units).
        captions: (N,) one caption per region (None: no captions).
        labels: (N,) region names for panel titles (default: the position).
        max_caption_chars: captions are cut at this length and wrapped at ``wrap`` characters.
        wrap: characters per caption line.

    Returns:
        matplotlib Figure with the query in the first column.
    """
    import matplotlib.pyplot as plt

    if matches.empty or matches["query"].nunique() != 1:
        raise ValueError("plot_matches needs the rows of exactly one query")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {images.shape}")
    q = int(matches["query"].iloc[0])
    panels = [(q, str(matches["query_city"].iloc[0]) + " (query)", None)]
    panels += [(int(r.match), f"{r.target_city} #{r.rank}", float(r.similarity)) for r in matches.itertuples()]
    fig, axes = plt.subplots(2, len(panels), figsize=house.figsize(len(panels), 1, panel_height=6.0),
                             gridspec_kw={"height_ratios": [1, 1.5]}, squeeze=False)
    for j, (pos, head, sim) in enumerate(panels):
        ax_img, ax_txt = axes[0][j], axes[1][j]
        ax_img.imshow(images[pos].transpose(1, 2, 0))  # (H, W, 3)
        ax_img.axis("off")
        name = labels[pos] if labels is not None else f"region {pos}"
        ax_img.set_title(f"{head}\n{name}" + (f"\ncos = {sim:.3f}" if sim is not None else ""), fontsize=8)
        lines = [f"{c}: {v:.3g}" if np.isfinite(v) else f"{c}: {house.DASH}"
                 for c, v in indicators.iloc[pos].items()]
        text = "\n".join(lines)
        if captions is not None:
            text = _short(captions[pos], max_caption_chars, wrap) + "\n\n" + text
        ax_txt.axis("off")
        ax_txt.text(0, 1, text, va="top", ha="left", fontsize=7, family="monospace", transform=ax_txt.transAxes)
    fig.tight_layout()
    return fig
