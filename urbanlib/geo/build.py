"""``build_city(config)``: raw geodata in, urbanlib's canonical dataset folder out.

Steps, each timed in ``meta.json`` (``build_seconds``): draw the regions; aggregate every indicator
raster over them (:mod:`urbanlib.geo.zonal`); count POIs per category and assign street views
(:mod:`urbanlib.geo.points`); cut one satellite tile per region (:mod:`urbanlib.geo.imagery`); write
the tables with :func:`urbanlib.data.canonical.write`, plus ``regions.geojson`` (the polygons in
WGS84) and ``build_report.csv``. A region left with no image and no indicator value is dropped
(``empty_region``); regions a raster covers too little keep their row with NaN. The folder is assembled under a temporary name, loaded back with
:func:`urbanlib.data.load` as a check, then renamed into place, so a failed build leaves nothing
half-written.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import atomic_write
from ..data import canonical
from ..data.dataset import CAPTION_COLUMNS, IMAGE_COLUMNS, UrbanDataset
from ..data.report import DataError, LoadReport
from .config import CityConfig, load_config, to_dict
from .imagery import cut_tiles, imagery_kind
from .points import assign_street_views, count_pois
from .regions import make_regions
from .zonal import zonal

BUILDER_VERSION = 1  # bump when the same config would produce different output


def build_city(config: CityConfig | str | Path, out: str | Path | None = None, force: bool = False,
               progress: bool = False) -> Path:
    """Build a city dataset from a config (a :class:`CityConfig` or a YAML/JSON file).

    Args:
        config: the config or its file; relative paths in a file are relative to the file.
        out: output folder; default the config's ``out``.
        force: replace an existing folder (otherwise an existing dataset is an error).
        progress: show a tqdm bar while cutting tiles.

    Returns:
        The folder, loadable with ``urbanlib.data.load(path)``; its ``meta.json`` holds the config,
        the build report and the timings.

    Raises:
        DataError: an input is missing or unusable; the message names it.
    """
    cfg = config if isinstance(config, CityConfig) else load_config(config)
    out = Path(out) if out is not None else cfg.resolve(cfg.out)
    if out is None:
        raise DataError("build_city: no output folder; set `out` in the config or pass out=")
    if (out / "meta.json").exists() and not force:
        raise DataError(f"{out}: a dataset is already there; pass force=True (--force) to rebuild it")
    with atomic_write(out) as tmp:  # a failed or killed build leaves any earlier dataset at ``out`` as it was
        tmp.mkdir(parents=True)
        ds = _build(cfg, tmp, progress)
        canonical.write(ds, tmp)
        ds.report.to_frame().to_csv(tmp / "build_report.csv", index=False)
        canonical.read(tmp, check_images=False)  # the check: the tables load (images were written or decoded here)
    return out


def _build(cfg: CityConfig, tmp: Path, progress: bool) -> UrbanDataset:
    report = LoadReport(source=f"build_city({cfg.city})")
    times: dict[str, float] = {}
    t = time.perf_counter()
    regions = make_regions(cfg, report)
    times["regions"] = time.perf_counter() - t

    t = time.perf_counter()
    columns: list[pd.DataFrame] = []
    coverage: list[pd.DataFrame] = []
    for spec in cfg.indicators:
        z = zonal(regions, spec, cfg.resolve(spec.path), report)
        columns.append(z[[spec.name]])
        coverage.append(z[[f"{spec.name}_coverage"]])
    times["indicators"] = time.perf_counter() - t

    t = time.perf_counter()
    poi_cats = None
    if cfg.pois is not None:
        pois = count_pois(regions, cfg.pois, cfg.resolve(cfg.pois.path), report)
        columns.append(pois[["poi_count"]])
        poi_cats = pois.drop(columns="poi_count")
    times["pois"] = time.perf_counter() - t

    t = time.perf_counter()
    tiles = {}
    if cfg.imagery is not None:
        tiles = cut_tiles(regions, cfg.imagery, cfg.resolve(cfg.imagery.path), tmp, report, progress)
    times["imagery"] = time.perf_counter() - t

    t = time.perf_counter()
    street = pd.DataFrame(columns=IMAGE_COLUMNS)
    if cfg.street_views is not None:
        sv = cfg.street_views
        street = assign_street_views(regions, sv, cfg.resolve(sv.folder), cfg.resolve(sv.points), tmp, report)
    times["street_views"] = time.perf_counter() - t

    table = _region_table(cfg, regions, [*columns, *coverage, *([poi_cats] if poi_cats is not None else [])], tiles)
    indicators = [s.name for s in cfg.indicators] + (["poi_count"] if cfg.pois is not None else [])
    table = _drop_empty_regions(cfg, table, tiles, street, report)
    keep = set(table["region_id"])
    sat = pd.DataFrame([{"region_id": r, "kind": "satellite", "path": w["path"], "lon": np.nan, "lat": np.nan}
                        for r, w in tiles.items() if r in keep], columns=IMAGE_COLUMNS)
    for r in set(tiles) - keep:  # pragma: no cover - a region with a tile is never empty
        (tmp / tiles[r]["path"]).unlink(missing_ok=True)
    images = pd.concat([sat, street[street["region_id"].isin(keep)]], ignore_index=True)

    captions = _captions(cfg, images, report) if cfg.captions else pd.DataFrame(columns=CAPTION_COLUMNS)

    wgs = regions.wgs84()
    wgs = wgs[wgs["region_id"].isin(keep)]
    wgs[["region_id", "geometry"]].to_file(tmp / "regions.geojson", driver="GeoJSON")
    times["total"] = sum(times.values())
    meta = _meta(cfg, regions, times, report, captions)
    return UrbanDataset(regions=table, images=images, captions=captions,
                        indicators=indicators, root=tmp, report=report, meta=meta)


def _region_table(cfg: CityConfig, regions, blocks: list[pd.DataFrame], tiles: dict) -> pd.DataFrame:
    """One row per region: id, city, grid cell, centre, then the per-region ``blocks`` and the regions' own columns."""
    base = regions.gdf.drop(columns="geometry").set_index("region_id")
    extra = [c for c in base.columns if c not in ("row", "col")]
    table = pd.concat([base[["row", "col"]], *blocks, base[extra]], axis=1).reindex(regions.gdf["region_id"])
    centres = regions.centres()
    table.insert(0, "lon", centres["lon"].to_numpy())
    table.insert(1, "lat", centres["lat"].to_numpy())
    table = table.reset_index()
    table.insert(1, "city", cfg.city)
    first = ["region_id", "city", "row", "col", "lon", "lat"]
    table = table[first + [c for c in table.columns if c not in first]]
    table["satellite_coverage"] = table["region_id"].map({r: w["coverage"] for r, w in tiles.items()})
    return table


def _drop_empty_regions(cfg: CityConfig, table: pd.DataFrame, tiles: dict, street: pd.DataFrame,
                        report: LoadReport) -> pd.DataFrame:
    """The regions that some indicator raster covers or that have an image; the others are counted in the report.

    Raises:
        DataError: every region is empty (the regions lie outside every input).
    """
    cov = [f"{s.name}_coverage" for s in cfg.indicators]
    covered = (table[cov] > 0).any(axis=1).to_numpy() if cov else np.zeros(len(table), bool)
    has_image = table["region_id"].isin(tiles).to_numpy() | table["region_id"].isin(set(street["region_id"])).to_numpy()
    empty = ~covered & ~has_image if cov or cfg.imagery is not None else np.zeros(len(table), bool)
    report.add("empty_region", "skipped", int(empty.sum()),
               "region that no indicator raster covers and that has no image (outside every input); dropped",
               list(table["region_id"][empty][:5]))
    if empty.all():
        raise DataError(f"build_city({cfg.city}): every region is empty (no input covers any); check the "
                        f"regions' bbox against the inputs")
    return table[~empty].reset_index(drop=True)


def _meta(cfg: CityConfig, regions, times: dict[str, float], report: LoadReport, captions: pd.DataFrame) -> dict:
    """The built dataset's ``meta``: how it was built, from which inputs, how long each stage took, what was dropped."""
    return {"builder": "urbanlib.geo.build_city", "builder_version": BUILDER_VERSION, "city": cfg.city,
            "regions_kind": regions.kind, "regions_crs": str(regions.gdf.crs), "metric_crs": str(regions.metric_crs),
            "grid_note": regions.note,
            "indicator_rules": {s.name: s.rule for s in cfg.indicators} | ({"poi_count": "count"} if cfg.pois else {}),
            "imagery_kind": imagery_kind(cfg.resolve(cfg.imagery.path), cfg.imagery) if cfg.imagery else None,
            "config": to_dict(cfg), "inputs": _inputs(cfg),
            "build_seconds": {k: round(v, 3) for k, v in times.items()},
            "build_report": report.to_frame().to_dict(orient="records"),
            "captions": (f"{len(captions)} from {cfg.resolve(cfg.captions)}" if cfg.captions else
                         "none: caption the tiles with urbanlib.captions.batch.caption_dataset (an "
                         "OpenAI-compatible server such as vLLM or Ollama, or a transformers VLM)"),
            "note": "<indicator>_coverage is the share of the region covered by valid raster pixels; "
                    "satellite_coverage the share of valid pixels in its tile"}


def _captions(cfg: CityConfig, images: pd.DataFrame, report: LoadReport) -> pd.DataFrame:
    """Captions made earlier (JSONL keyed by built region ids); an image defaults to the region's tile."""
    path = cfg.resolve(cfg.captions)
    if not path.is_file():
        raise DataError(f"captions: {path} not found")
    try:
        caps = pd.read_json(path, lines=True, dtype={"region_id": str})
    except ValueError as e:
        raise DataError(f"captions: cannot parse {path} as JSON lines ({e})") from None
    missing = [c for c in ("region_id", "text") if c not in caps.columns]
    if missing:
        raise DataError(f"captions: {path} lacks field(s) {missing}; found {list(caps.columns)}")
    sat = images[images["kind"] == "satellite"].set_index("region_id")["path"]
    if "image" not in caps:
        caps["image"] = np.nan
    caps["image"] = caps["image"].where(caps["image"].notna(), caps["region_id"].map(sat))
    caps["source"] = caps["source"].fillna("user") if "source" in caps else "user"
    caps["style"] = caps["style"].fillna("long") if "style" in caps else "long"
    bad_style = ~caps["style"].isin(["short", "long"])
    if bad_style.any():
        raise DataError(f"captions: {path} line {int(np.flatnonzero(bad_style)[0]) + 1}: style must be short or "
                        f"long, got {caps['style'][bad_style].iloc[0]!r}")
    unknown = ~caps["image"].isin(set(images["path"])).to_numpy()
    report.add("caption_unknown_image", "skipped", int(unknown.sum()),
               f"caption in {path.name} whose region or image is not in the built dataset",
               [f"line {i + 1}" for i in np.flatnonzero(unknown)[:5]])
    return caps[~unknown].reset_index(drop=True)


def _inputs(cfg: CityConfig) -> list[dict]:
    """Every input file with its size: provenance for meta.json."""
    paths = [("regions.area", cfg.regions.area), ("regions.path", cfg.regions.path)]
    paths += [(f"indicators.{s.name}", s.path) for s in cfg.indicators]
    if cfg.imagery:
        paths.append(("imagery", cfg.imagery.path))
    if cfg.pois:
        paths.append(("pois", cfg.pois.path))
    if cfg.street_views:
        paths.append(("street_views.points", cfg.street_views.points))
    paths.append(("captions", cfg.captions))
    rows = []
    for what, p in paths:
        q = cfg.resolve(p)
        if q is not None:
            rows.append({"input": what, "path": str(q), "bytes": q.stat().st_size if q.is_file() else None})
    return rows
