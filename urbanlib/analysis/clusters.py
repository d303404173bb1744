"""Latent clusters of region representations (UrbanLN Fig. 6).

The paper projects Shenzhen's street-view representations with PCA, partitions them with K-means
into three clusters and reads the clusters off a map, population KDEs and sample images. The
paper's reading is qualitative; here two numbers make it checkable: the NMI of the clusters
against SynthCity's hidden land-use ``zone`` (with a label-permutation null) and how strongly
ln population separates between clusters (η², Kruskal-Wallis H).

Regions without an image have NaN feature rows; they get cluster label -1 and are left out of
every statistic and drawn blank on the map.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

from urbanlib import style as house

__all__ = [
    "cluster_quality",
    "images_from_tensors",
    "latent_clusters",
    "plot_cluster_map",
    "plot_cluster_samples",
    "plot_population_kde",
    "plot_umap",
    "umap_embedding",
]

NO_CLUSTER = -1  # label of regions without features


def _valid_rows(features: np.ndarray) -> np.ndarray:
    """(N,) bool: the feature row is finite everywhere."""
    features = np.asarray(features, dtype=float)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {features.shape}")
    return np.isfinite(features).all(axis=1)


def latent_clusters(features: np.ndarray, k: int = 3, n_pca: int = 10, seed: int = 0) -> np.ndarray:
    """Standardise, project with PCA and cluster with K-means, as UrbanLN Fig. 6.

    Cluster ids are renumbered by decreasing size (ties: the cluster holding the lower region
    index first), so the ids do not depend on K-means' arbitrary numbering.

    Args:
        features: (N, F) region representations; rows with NaN (no image) are not clustered.
        k: number of clusters (paper: 3).
        n_pca: principal components kept (capped at the number of valid rows and features).
        seed: seeds K-means' initialisation (10 restarts).

    Returns:
        (N,) int labels in ``0..k-1``; -1 for rows with NaN.
    """
    x = np.asarray(features, dtype=float)
    valid = _valid_rows(x)
    n_valid = int(valid.sum())
    if n_valid < k:
        raise ValueError(f"latent_clusters: {n_valid} regions with finite features, need at least k={k}")
    z = StandardScaler().fit_transform(x[valid])
    n_comp = max(1, min(n_pca, z.shape[0], z.shape[1]))
    z = PCA(n_components=n_comp, random_state=seed).fit_transform(z)  # (n_valid, n_comp)
    raw = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)
    sizes = np.bincount(raw, minlength=k)
    first = np.array([np.flatnonzero(raw == c)[0] if sizes[c] else n_valid for c in range(k)])
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    labels = np.full(len(x), NO_CLUSTER, dtype=int)
    labels[valid] = remap[raw]
    return labels


def cluster_quality(
    labels: np.ndarray,
    zones: np.ndarray | None,
    population_density: np.ndarray,
    n_permutations: int = 200,
    seed: int = 0,
) -> dict:
    """How well clusters match land use and separate population density.

    Args:
        labels: (N,) cluster ids; -1 = not clustered (ignored).
        zones: (N,) land-use zone per region (SynthCity's hidden ``zone`` column) or None
            for real data without zones (the NMI entries are then NaN).
        population_density: (N,) population per region (SynthCity cells have equal area, so
            population is density up to a constant); NaN = missing. Analysed as ln(y + 1),
            the transform of :meth:`UrbanDataset.log_targets`.
        n_permutations: label shuffles for the NMI null distribution.
        seed: seeds the shuffles.

    Returns:
        dict with ``nmi`` and ``ami`` (sklearn, arithmetic normalisation) against the zones,
        ``nmi_null_mean`` and ``nmi_p`` (share of shuffled labelings with NMI >= observed, with
        the +1 correction), ``eta2`` (between-cluster share of the variance of ln population),
        ``kruskal_h``/``kruskal_p`` (Kruskal-Wallis over clusters), ``n_regions`` used, and
        ``per_cluster``: DataFrame (cluster, n, median_population, median_ln_population,
        top_zone, top_zone_share) sorted by cluster.
    """
    labels = np.asarray(labels)
    pop = np.asarray(population_density, dtype=float)
    if pop.shape != labels.shape:
        raise ValueError(f"population_density shape {pop.shape} != labels shape {labels.shape}")
    if zones is not None:
        zones = np.asarray(zones)
        if zones.shape != labels.shape:
            raise ValueError(f"zones shape {zones.shape} != labels shape {labels.shape}")
    if np.any(pop[np.isfinite(pop)] < 0):
        raise ValueError("population_density has negative values; expected counts or densities >= 0")
    clustered = labels != NO_CLUSTER
    out: dict = {"nmi": np.nan, "ami": np.nan, "nmi_null_mean": np.nan, "nmi_p": np.nan}
    if zones is not None and clustered.sum() > 1:
        lab, zon = labels[clustered], zones[clustered]
        nmi = normalized_mutual_info_score(zon, lab)
        rng = np.random.default_rng(seed)
        null = np.array([normalized_mutual_info_score(zon, rng.permutation(lab)) for _ in range(n_permutations)])
        out.update(nmi=float(nmi), ami=float(adjusted_mutual_info_score(zon, lab)),
                   nmi_null_mean=float(null.mean()), nmi_p=float((1 + (null >= nmi).sum()) / (1 + len(null))))

    use = clustered & np.isfinite(pop)
    ln_pop, lab = np.log1p(pop[use]), labels[use]
    clusters = np.unique(lab)
    groups = [ln_pop[lab == c] for c in clusters]
    ss_total = float(((ln_pop - ln_pop.mean()) ** 2).sum()) if len(ln_pop) else 0.0
    ss_between = float(sum(len(g) * (g.mean() - ln_pop.mean()) ** 2 for g in groups))
    out["eta2"] = ss_between / ss_total if ss_total > 0 else np.nan
    if len(groups) >= 2 and len(np.unique(ln_pop)) > 1:
        h, p = stats.kruskal(*groups)
        out["kruskal_h"], out["kruskal_p"] = float(h), float(p)
    else:
        out["kruskal_h"], out["kruskal_p"] = np.nan, np.nan
    out["n_regions"] = int(use.sum())

    rows = []
    for c in np.unique(labels[clustered]):
        members = labels == c
        g = pop[members & np.isfinite(pop)]
        row = {"cluster": int(c), "n": int(members.sum()),
               "median_population": float(np.median(g)) if len(g) else np.nan,
               "median_ln_population": float(np.median(np.log1p(g))) if len(g) else np.nan}
        if zones is not None:
            counts = pd.Series(zones[members]).value_counts()
            row["top_zone"], row["top_zone_share"] = counts.index[0], float(counts.iloc[0] / members.sum())
        rows.append(row)
    out["per_cluster"] = pd.DataFrame(rows)
    return out


# ----------------------------------------------------------------------------------- plots
def _palette(k: int) -> list:
    import seaborn as sns

    return sns.color_palette("tab10", max(k, 1))


def plot_cluster_map(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, title: str = "Latent clusters"):
    """Clusters drawn on one city's grid (regions at their ``row``/``col``); -1 stays blank.

    Args:
        labels: (N,) cluster ids.
        rows: (N,) grid row of each region (``ds.regions["row"]``).
        cols: (N,) grid column.
        title: axes title.

    Returns:
        matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels = np.asarray(labels)
    rows, cols = np.asarray(rows, dtype=float), np.asarray(cols, dtype=float)
    if not (labels.shape == rows.shape == cols.shape):
        raise ValueError(f"labels {labels.shape}, rows {rows.shape}, cols {cols.shape} must have the same shape")
    if not (np.isfinite(rows).all() and np.isfinite(cols).all()):
        raise ValueError("plot_cluster_map needs grid row/col for every region (real data may lack them)")
    ks = sorted(int(c) for c in np.unique(labels) if c != NO_CLUSTER)
    grid = np.full((int(rows.max()) + 1, int(cols.max()) + 1), np.nan)
    grid[rows.astype(int), cols.astype(int)] = np.where(labels == NO_CLUSTER, np.nan, labels)
    colours = _palette(max(ks) + 1 if ks else 1)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(grid, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest")
    ax.set_xlabel("col")
    ax.set_ylabel("row")
    ax.set_title(title)
    ax.legend(handles=[Patch(color=colours[c], label=f"cluster {c}") for c in ks],
              loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.tight_layout()
    return fig


def plot_population_kde(labels: np.ndarray, population: np.ndarray, title: str = "Population by cluster"):
    """KDE of ln(population + 1) per cluster (seaborn), the curves of UrbanLN Fig. 6.

    Args:
        labels: (N,) cluster ids (-1 ignored).
        population: (N,) population per region; NaN ignored.
        title: axes title.

    Returns:
        matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    labels, pop = np.asarray(labels), np.asarray(population, dtype=float)
    use = (labels != NO_CLUSTER) & np.isfinite(pop)
    df = pd.DataFrame({"cluster": labels[use], "ln(population + 1)": np.log1p(pop[use])})
    ks = sorted(df["cluster"].unique())
    colours = _palette(max(ks) + 1 if ks else 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c in ks:
        sub = df[df["cluster"] == c]["ln(population + 1)"]
        if sub.nunique() > 1:  # a KDE of one value is undefined; draw a rug instead
            sns.kdeplot(x=sub, ax=ax, color=colours[c], fill=True, alpha=0.25, label=f"cluster {c} (n={len(sub)})")
        else:
            sns.rugplot(x=sub, ax=ax, color=colours[c], label=f"cluster {c} (n={len(sub)})")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def images_from_tensors(tensors, kind: str = "satellite") -> tuple[np.ndarray, np.ndarray]:
    """One uint8 image per region from :class:`~urbanlib.pipeline.tensors.RegionTensors`.

    Args:
        tensors: the dataset's RegionTensors.
        kind: ``"satellite"`` (the tile) or ``"street"`` (the region's first valid street view).

    Returns:
        images (N, 3, H, W) uint8 and valid (N,) bool.
    """
    if kind == "satellite":
        return tensors.satellite, np.asarray(tensors.satellite_mask, dtype=bool)
    if kind == "street":
        if tensors.street.shape[1] == 0:
            raise ValueError("these RegionTensors hold no street views (max_views=0)")
        first = np.argmax(tensors.street_mask, axis=1)  # first valid view (0 if none)
        return tensors.street[np.arange(len(first)), first], tensors.has_street
    raise ValueError(f"kind must be 'satellite' or 'street', got {kind!r}")


def plot_cluster_samples(
    images: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    n_per_cluster: int = 4,
    seed: int = 0,
    title: str = "Sample images per cluster",
):
    """A row of randomly drawn images for each cluster.

    Args:
        images: (N, 3, H, W) uint8 (see :func:`images_from_tensors`).
        labels: (N,) cluster ids (-1 never drawn).
        valid: (N,) bool, the region has an image (default: all).
        n_per_cluster: images per row (fewer if a cluster is smaller).
        seed: which images are drawn (never hand-picked).
        title: figure title.

    Returns:
        matplotlib Figure; each panel is titled with its region index.
    """
    import matplotlib.pyplot as plt

    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    valid = np.ones(len(labels), bool) if valid is None else np.asarray(valid, dtype=bool)
    ks = sorted(int(c) for c in np.unique(labels) if c != NO_CLUSTER)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(ks), n_per_cluster, figsize=house.figsize(n_per_cluster, len(ks), panel_height=1.7, max_height=14), squeeze=False)
    for r, c in enumerate(ks):
        pool = np.flatnonzero((labels == c) & valid)
        pick = np.sort(rng.choice(pool, size=min(n_per_cluster, len(pool)), replace=False)) if len(pool) else []
        for j, ax in enumerate(axes[r]):
            ax.axis("off")
            if j < len(pick):
                ax.imshow(images[pick[j]].transpose(1, 2, 0))  # (H, W, 3)
                ax.set_title(f"#{pick[j]}", fontsize=7)
        axes[r][0].text(-0.1, 0.5, f"cluster {c}", transform=axes[r][0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def umap_embedding(features: np.ndarray, n_neighbors: int = 10, seed: int = 0) -> np.ndarray:
    """2-D UMAP of standardised features (umap-learn, seeded, hence single-threaded).

    Returns:
        (N, 2) coordinates; NaN rows for regions with NaN features.
    """
    import umap

    x = np.asarray(features, dtype=float)
    valid = _valid_rows(x)
    if valid.sum() < 3:
        raise ValueError(f"umap_embedding: {int(valid.sum())} regions with finite features, need at least 3")
    z = StandardScaler().fit_transform(x[valid])
    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, int(valid.sum()) - 1), min_dist=0.1,
                        random_state=seed, n_jobs=1)
    out = np.full((len(x), 2), np.nan)
    out[valid] = reducer.fit_transform(z)
    return out


def plot_umap(features: np.ndarray, labels: np.ndarray, n_neighbors: int = 10, seed: int = 0,
              title: str = "UMAP of region features"):
    """Scatter of a 2-D UMAP of the features, coloured by cluster (an extra view of Fig. 6).

    Args:
        features: (N, F) region representations (NaN rows skipped).
        labels: (N,) cluster ids.
        n_neighbors: UMAP neighbourhood (small keeps it fast and local).
        seed: UMAP random state.
        title: axes title.

    Returns:
        matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    xy = umap_embedding(features, n_neighbors=n_neighbors, seed=seed)
    ks = sorted(int(c) for c in np.unique(labels) if c != NO_CLUSTER)
    colours = _palette(max(ks) + 1 if ks else 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for c in ks:
        m = (labels == c) & np.isfinite(xy[:, 0])
        ax.scatter(xy[m, 0], xy[m, 1], s=12, color=colours[c], label=f"cluster {c}")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
