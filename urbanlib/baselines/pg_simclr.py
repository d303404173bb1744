"""PG-SimCLR (Xi et al., WWW'22): SimCLR whose positives are POI-similar and geographically adjacent regions.

Two NT-Xent terms share each anchor view: the positive of ``poi_loss`` is drawn from the anchor's
``positives_k`` training regions with the most similar POI mix (cosine of the ``poi_cat_*`` count
vectors), the positive of ``geo_loss`` from its grid neighbours (8-neighbourhood on ``row``/``col``
within the same city; the nearest training regions when no neighbour is in the training set).
``loss`` is their mean. Other tiles of the batch are the negatives.

Encoder: UrbanCLIP's ViT, not the CNN of the original, so that PG-SimCLR, Text-SimCLR and UrbanViT
differ only in their positives and all give the probe the same kind of feature (mean-pooled final ViT
tokens); epochs, views and schedule are UrbanViT's (:mod:`~urbanlib.baselines.simclr`).

Two regions without any POI have identical (empty) POI mixes: their similarity is 1, and 0 to any
region with POIs. Regions with a missing POI count or grid cell are not trained on (they still get
features). POI counts also underlie the ``poi_count`` indicator; PG-SimCLR uses them by design, and
only for training regions, whose labels the probe sees anyway.
"""

from __future__ import annotations

import numpy as np

from urbanlib.data.dataset import poi_columns

from ._common import train_positions, val_positions
from .base import BaselineInputs, FittedEncoder, NotAvailable
from .simclr import SimCLRConfig, SimCLRViT, fit_pairs, top_k_neighbours, train_pairs

NAME = "PG-SimCLR"


def poi_similarity(counts: np.ndarray) -> np.ndarray:
    """Cosine similarity (n, n) of POI count vectors (n, C); two empty vectors count as identical."""
    counts = np.asarray(counts, dtype=np.float64)
    norm = np.linalg.norm(counts, axis=1)
    unit = counts / np.where(norm > 0, norm, 1.0)[:, None]
    sim = unit @ unit.T
    empty = norm == 0
    sim[np.ix_(empty, empty)] = 1.0
    return sim


def geo_neighbours(rows: np.ndarray, cols: np.ndarray, cities: np.ndarray) -> list[np.ndarray]:
    """Per region, the other regions in its 8-neighbourhood (same city), or the nearest ones if it has none."""
    rows, cols = np.asarray(rows, float), np.asarray(cols, float)
    d = np.hypot(rows[:, None] - rows[None], cols[:, None] - cols[None])  # (n, n) grid units
    d[np.asarray(cities)[:, None] != np.asarray(cities)[None]] = np.inf
    np.fill_diagonal(d, np.inf)
    out = []
    for i in range(len(d)):
        reach = max(np.sqrt(2.0), d[i].min()) + 1e-9
        cand = np.flatnonzero(np.isfinite(d[i]) & (d[i] <= reach))
        if len(cand) == 0:  # the only region of its city: its own other view (plain SimCLR)
            cand = np.array([i])
        out.append(cand)
    return out


def _usable(inputs: BaselineInputs) -> tuple[np.ndarray, list[str]] | NotAvailable:
    reg = inputs.ds.regions
    cols = poi_columns(reg)
    if not cols:
        return NotAvailable(NAME, "n/a: needs per-category POI counts (poi_cat_* columns), which this dataset lacks")
    if not {"row", "col"} <= set(reg.columns):
        return NotAvailable(NAME, "n/a: needs grid cells (row/col columns) for geographic adjacency")
    ok = reg[cols + ["row", "col"]].notna().all(axis=1).to_numpy() & inputs.tensors.satellite_mask
    return ok, cols


def positives(inputs: BaselineInputs, train_pos: np.ndarray, cols: list[str], k: int) -> dict[str, list[np.ndarray]]:
    """``{"poi": ..., "geo": ...}`` candidate lists (indices into ``train_pos``) for each training region."""
    reg = inputs.ds.regions.iloc[train_pos]
    city = reg["city"].to_numpy() if "city" in reg else np.zeros(len(reg))
    return {"poi": top_k_neighbours(poi_similarity(reg[cols].to_numpy()), k),
            "geo": geo_neighbours(reg["row"].to_numpy(), reg["col"].to_numpy(), city)}


def train(inputs: BaselineInputs, config: SimCLRConfig | None = None) -> tuple[SimCLRViT, list[dict]]:
    """Train PG-SimCLR; returns the model and its per-step history."""
    usable = _usable(inputs)
    if isinstance(usable, NotAvailable):
        raise ValueError(f"{NAME}: {usable.reason}")
    cfg = config or SimCLRConfig.for_scale(inputs.scale)
    pos = train_positions(inputs, usable[0], NAME)
    return train_pairs(inputs, cfg, lambda p: positives(inputs, p, usable[1], cfg.positives_k), pos, NAME,
                       val_positions(inputs, usable[0]))


def fit(inputs: BaselineInputs, config: SimCLRConfig | None = None) -> FittedEncoder | NotAvailable:
    """Train on training regions with a tile, POI counts and a grid cell; features for every region's tile."""
    usable = _usable(inputs)
    if isinstance(usable, NotAvailable):
        return usable
    cfg = config or SimCLRConfig.for_scale(inputs.scale)
    pos = train_positions(inputs, usable[0], NAME)
    return fit_pairs(inputs, cfg, lambda p: positives(inputs, p, usable[1], cfg.positives_k), pos, NAME,
                     {"objective": f"mean of NT-Xent with a POI-similar (top-{cfg.positives_k}) and with a "
                                   "grid-adjacent positive", "poi_columns": usable[1]},
                     val_positions(inputs, usable[0]))
