"""Urban Insights for one city: the map of UrbanCLIP §4.5 filled from the city and its benchmark.

``build_insights(city)`` probes the chosen benchmark models exactly as the benchmark page does
(:func:`~urbanlib.experiments.benchmark.run_benchmark`: cached encoders, the same split, probe
seeds and heads), clusters each model's features with K-means (UrbanLN Fig. 6), generates a
caption per tile with the trained UrbanCLIP decoder and returns an
:class:`~urbanlib.analysis.insights_map.InsightsMap` (:meth:`~InsightsMap.to_html` draws it).

Geometry: SynthCity is drawn in its own grid (:func:`region_geometry`); a real dataset in WGS84,
from cell polygons when the dataset has them (a ``geometry`` or ``polygon`` column, or corner
columns) and otherwise from its grid of cell centres. A dataset without tiles (the UrbanCLIP
release ships none) gets the indicator choropleth as base layer and only the rows that can exist.
A map of real data embeds every region's labels: build it from ``data_dir`` and keep it local.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from urbanlib.analysis.clusters import latent_clusters
from urbanlib.analysis.insights_map import Geometry, InsightsMap, MapLayer
from urbanlib.baselines import NotAvailable
from urbanlib.data import urbanclip_layout
from urbanlib.data.dataset import POI_PREFIX, poi_columns
from urbanlib.pipeline.caption_sets import urbanclip_texts
from urbanlib.pipeline.city import City
from urbanlib.pipeline.urbanclip import captions_for

from .benchmark import OURS, encoder_features, run_benchmark

DEFAULT_MODELS = list(OURS)  # UrbanCLIP and UrbanLN (satellite, street): the models the papers propose
CORNER_COLUMNS = [("sw_lat", "sw_lon", "ne_lat", "ne_lon"), ("min_lat", "min_lon", "max_lat", "max_lon")]


def build_insights(city: City, models: list[str] | None = None, k: int = 3, generated: bool = True,
                   initial_layer: str = "", log=print) -> InsightsMap:
    """The Urban Insights map of ``city``: indicators, each model's predictions and residuals, clusters.

    Args:
        city: the city (:func:`~urbanlib.pipeline.city.open_city`).
        models: benchmark rows to draw (table names); default :data:`DEFAULT_MODELS`. A model the
            data cannot feed is left out and logged (e.g. UrbanCLIP without tiles).
        k: K-means clusters per model (:func:`~urbanlib.analysis.clusters.latent_clusters`).
        generated: add the trained UrbanCLIP decoder's caption of every tile (needs tiles).
        initial_layer: the layer shown first ("" = tiles and grid only; without tiles, the first
            indicator).
        log: where progress lines go.

    Returns:
        An :class:`InsightsMap`; predictions are the mean of the benchmark's probe heads, in
        original units, for every region (train and validation regions are in-sample).
    """
    names = list(models) if models else list(DEFAULT_MODELS)
    ds, tensors = city.ds, city.tensors
    _, feats, probes = run_benchmark(city, names, log=log)
    drawn = [m for m in names if m in probes]
    for m in names:
        if m not in probes:
            log(f"{m}: not drawn ({getattr(feats.get(m), 'reason', 'no probe')})")
    ind = list(ds.indicators)
    layers, predictions = _layers(ds, {m: probes[m] for m in drawn}, feats, k, city.seed)
    has_tiles = bool(tensors.satellite_mask.any())
    if not initial_layer and not has_tiles:
        initial_layer = ind[0] if ind else ""
    captions = _captions(city, feats, generated and has_tiles, log)
    first = probes[drawn[0]] if drawn else None
    poi_cols = poi_columns(ds.regions)
    geometry = region_geometry(ds)
    notes = _notes(city, has_tiles)
    return InsightsMap(
        title=f"Urban Insights: {city.name}", region_ids=ds.region_ids, geometry=geometry, layers=layers,
        indicators=ind, truth=ds.regions[ind].to_numpy(float), predictions=predictions,
        prediction_note=(f"Predictions: mean of the benchmark's {len(first.seeds)} probe heads per model (an MLP on "
                         f"frozen features trained on the {len(first.split.train)} train regions); only test "
                         "regions are out of sample." if first else ""),
        captions=captions, poi_categories=[c.removeprefix(POI_PREFIX) for c in poi_cols] or None,
        poi_counts=ds.regions[poi_cols].to_numpy(float) if poi_cols else None,
        facts=_facts(city, first), names=_place_names(ds.regions),
        satellite=tensors.satellite if has_tiles else None, satellite_mask=tensors.satellite_mask if has_tiles else None,
        street=tensors.street if tensors.has_street.any() else None,
        street_mask=tensors.street_mask if tensors.has_street.any() else None,
        initial_layer=initial_layer, notes=notes)


def _layers(ds, probes: dict, feats: dict, k: int, seed: int) -> tuple[list[MapLayer], dict[str, np.ndarray]]:
    """The map's layers and each model's predictions in original units.

    Layers: the indicators, then every model's predictions, then every model's residuals, then every
    model's latent clusters; ``probes`` holds the drawn models' probe results in drawing order.
    """
    ind = list(ds.indicators)
    log_truth = ds.log_targets()  # (N, T)
    layers = [MapLayer(name, "Indicators", log_truth[:, j], label=f"ln(1 + {name})") for j, name in enumerate(ind)]
    limits = {layer.name: (layer.vmin, layer.vmax) for layer in layers}
    predictions, preds_ln = {}, {}
    for m, probe in probes.items():
        p = np.asarray(probe.predictions, dtype=float).mean(axis=0)  # (S, N, T) -> (N, T), ln scale
        preds_ln[m] = p
        predictions[m] = np.expm1(p)
        for j, name in enumerate(ind):
            lo, hi = limits[name]
            layers.append(MapLayer(f"{m}: {name}", f"Predictions: {m}", p[:, j], vmin=lo, vmax=hi,
                                   label=f"{m}'s prediction, ln(1 + {name})"))
    for m in probes:
        for j, name in enumerate(ind):
            layers.append(MapLayer(f"{m}: {name} residual", f"Residuals: {m}", preds_ln[m][:, j] - log_truth[:, j],
                                   kind="diverging", label=f"{m}: prediction - truth, ln(1 + {name})"))
    for m in probes:
        f = feats[m].features
        if np.isfinite(f).all(1).sum() >= k:
            labels = latent_clusters(f, k=k, seed=seed)
            layers.append(MapLayer(f"{m}: latent clusters", "Latent clusters (K-means)", labels, kind="categorical",
                                   label=f"K-means (k={k}) of {m}'s features",
                                   categories=[f"cluster {c} ({int((labels == c).sum())} regions)" for c in range(k)]))
    return layers, predictions


def _notes(city: City, has_tiles: bool) -> list[str]:
    """Warnings shown on the map: real labels embedded, or no tiles to draw."""
    notes = []
    if not city.is_synthetic:
        notes.append("Real labels: this map embeds every region's indicators. Built from data_dir; "
                     "do not store, publish or commit it.")
    if not has_tiles:
        notes.append("This dataset has no satellite tiles: the base layer is the indicator choropleth, and only "
                     "models that need no tiles are drawn.")
    return notes


def _captions(city: City, feats: dict, generated: bool, log) -> dict[str, list[str]]:
    """Panel captions: one training caption per region and, with tiles, the decoder's own."""
    out = {}
    caps = city.ds.captions
    if caps is not None and not caps.empty and (caps["style"] == "short").any():
        texts = urbanclip_texts(city.ds, refined=True)
        out["Training caption (rule-refined; one of the region's)"] = [t[0] if t else "" for t in texts]
    if generated:
        f = feats.get("UrbanCLIP")
        if f is None:
            f = encoder_features(city, "UrbanCLIP")
        if isinstance(f, NotAvailable) or getattr(f, "run", None) is None:
            log("UrbanCLIP: no generated captions (no trained decoder)")
            return out
        model = f.run.model.eval()
        idx = np.flatnonzero(city.tensors.satellite_mask)
        gen = [""] * len(city.ds.regions)
        for s in range(0, len(idx), 128):  # batches: the decoder's activations stay small
            for i, text in zip(idx[s:s + 128], captions_for(model, city.tensors, idx[s:s + 128]), strict=True):
                gen[i] = text
        out["Generated by the trained UrbanCLIP decoder (greedy)"] = gen
    return out


def _facts(city: City, probe) -> dict[str, list]:
    r = city.ds.regions
    facts = {}
    if r["row"].notna().all() and r["col"].notna().all():
        facts["cell"] = [f"row {int(a)}, col {int(b)}" for a, b in zip(r["row"], r["col"], strict=True)]
    facts["centre"] = [f"{lon:.4f}, {lat:.4f}" if np.isfinite(lon) and np.isfinite(lat) else None
                       for lon, lat in zip(r["lon"].astype(float), r["lat"].astype(float), strict=True)]
    if probe is not None:
        side = np.full(len(r), "not probed", dtype=object)
        for name in ("train", "val", "test"):
            side[probe.split[name]] = name
        facts["probe split"] = side.tolist()
    return facts


def _place_names(regions: pd.DataFrame) -> list[str] | None:
    for col in ("name", "place", "district"):
        if col in regions.columns:
            return [str(v) if pd.notna(v) else "" for v in regions[col]]
    return None


def region_geometry(ds) -> Geometry:
    """How the regions are drawn: SynthCity's own grid, or WGS84 cells (polygons, corners, or centres).

    Order of preference for a real dataset: the UrbanCLIP release's Baidu tile numbers
    (``bd09_x``/``bd09_y``, converted by ``urbanclip_layout.cell_polygons``), a ``geometry``/``polygon`` column (shapely polygons,
    WKT, or rings of ``(lon, lat)``), corner columns (``sw_lat, sw_lon, ne_lat, ne_lon``), then
    squares around the cell centres, half the median centre spacing wide.
    """
    r = ds.regions
    has_grid = r["row"].notna().all() and r["col"].notna().all() and len(r) > 0
    rows = r["row"].to_numpy(int) if has_grid else None
    cols = r["col"].to_numpy(int) if has_grid else None
    if ds.meta.get("generator") == "synthcity":
        prof = ds.meta.get("profile", {})
        cell = prof.get("cell_deg", "?")
        return Geometry("grid", rows, cols, note=(
            f"Drawn in SynthCity's own grid: x = column, y = row (north up), one map unit = one cell of {cell} degrees "
            f"(a synthetic plate carrée from lon {prof.get('origin_lon', '?')}, lat {prof.get('origin_lat', '?')}); "
            "no real place, no basemap."))
    polygons = _polygons_from_columns(r)
    if polygons is not None:
        return Geometry("wgs84", rows, cols, polygons, note="Cells: the dataset's WGS84 polygons, drawn in Web "
                                                            "Mercator without a basemap.")
    lon, lat = r["lon"].to_numpy(float), r["lat"].to_numpy(float)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise ValueError("cannot draw the regions: no cell polygons, and some regions have no lon/lat centre")
    half_lon, half_lat = _half_spacing(lon), _half_spacing(lat)
    polys = [[[b - half_lat, a - half_lon], [b - half_lat, a + half_lon], [b + half_lat, a + half_lon],
              [b + half_lat, a - half_lon]] for a, b in zip(lon, lat, strict=True)]
    return Geometry("wgs84", rows, cols, polys, note=(
        f"Cells: squares around the WGS84 centres ({2 * half_lon:.5f} x {2 * half_lat:.5f} degrees, the median "
        "centre spacing); the dataset has no cell polygons. Web Mercator, no basemap."))


def _polygons_from_columns(r: pd.DataFrame) -> list | None:
    release_polygons = getattr(urbanclip_layout, "cell_polygons", None)  # WGS84 outlines from the Baidu tiles
    if release_polygons is not None and {"bd09_x", "bd09_y"} <= set(r.columns):
        return [_ring(ring, "bd09_x/bd09_y", i) for i, ring in enumerate(release_polygons(r))]
    for col in ("geometry", "polygon", "wgs84_polygon"):
        if col in r.columns:
            return [_ring(v, col, i) for i, v in enumerate(r[col])]
    for s, w, n, e in CORNER_COLUMNS:
        if all(c in r.columns for c in (s, w, n, e)):
            q = r[[s, w, n, e]].to_numpy(float)
            if np.isfinite(q).all():
                return [[[a, b], [a, d], [c, d], [c, b]] for a, b, c, d in q]
    return None


def _ring(value, col: str, i: int) -> list[list[float]]:
    """One region's outline as ``[[lat, lon], ...]`` from a shapely polygon, WKT or ``(lon, lat)`` pairs."""
    if isinstance(value, str):
        import shapely

        value = shapely.from_wkt(value)
    if hasattr(value, "exterior"):
        coords = list(value.exterior.coords)
    elif hasattr(value, "geoms"):  # a multipolygon: its largest part
        coords = list(max(value.geoms, key=lambda g: g.area).exterior.coords)
    else:
        coords = list(value)
    try:
        ring = [[float(lat), float(lon)] for lon, lat in coords]
    except (TypeError, ValueError):
        raise ValueError(f"regions.{col}[{i}]: not a polygon of (lon, lat) pairs: {value!r}") from None
    if len(ring) < 3:
        raise ValueError(f"regions.{col}[{i}]: a polygon needs at least 3 corners, got {len(ring)}")
    return ring


def _half_spacing(values: np.ndarray) -> float:
    u = np.unique(np.round(values, 9))
    d = np.diff(u)
    d = d[d > 1e-9]
    return float(np.median(d)) / 2 if d.size else 0.005
