"""Adapter for the UrbanCLIP data release (one city per call).

Expected layout (explicit paths override each part)::

    data_dir/
      labels/{City}.csv                      (or integrate/output/{City}/{City}.csv, the toolkit's output)
      captions/{City}_captions.json          [[{"caption": str, "image": "{City}/16_{x}_{y}_s.jpg"}, ...]]
      images/{City}/16_{x}_{y}_s.jpg         256x256 RGB JPEG Baidu tiles

Labels columns: ``satellite_img_name``, ``BD09 coordinate`` ("(x,y)": Baidu zoom-16 tile numbers),
``WGS84 coordinate`` ("(lat, lon)" of the tile's south-west corner, see below),
``carbon_emissions (ton)``, ``population (unit)``, ``gdp (million yuan)``, mapped to ``carbon``,
``population``, ``gdp``.

Geometry. Baidu tile numbers count 1024-metre squares of Baidu Mercator (BD09MC) at zoom 16, so
tile x/y are a regular grid: ``col = x - min(x)``, ``row = max(y) - y`` (row 0 is the northern
edge, as in an image). Each tile's WGS84 outline and centre are computed offline from its tile
numbers by :mod:`urbanlib.data.bd09` (Baidu's MC -> LL polynomial, then BD09 -> GCJ-02 -> WGS84):
``lon``/``lat`` are the WGS84 centre and :func:`cell_polygons` / :func:`regions_geojson` give the
cells' WGS84 polygons for a map. The release's ``WGS84 coordinate`` column is in fact **BD09**
lon/lat of the south-west corner (the toolkit's Baidu ``geoconv`` call converts "from 6 to 5",
BD09MC -> BD09); :func:`urbanlib.data.bd09.mc_to_bd09` reproduces it to floating-point precision
on every row of Beijing and Shanghai, and the true WGS84 corner lies 1.1-1.4 km away. The column
is kept as ``release_lon``/``release_lat``, cross-checked against the tile numbers and reported
(``wgs84_column_is_bd09``; rows that match neither BD09 nor WGS84: ``release_coordinate_mismatch``).

Problems in real releases (regions without images or captions, zero indicators, GDP capped at
10000.0) are kept and counted in the report (see :mod:`urbanlib.data.validate`); image names that
leave the images folder, oversized or undecodable images are skipped and counted
(:mod:`urbanlib.data.images`); malformed coordinates, non-finite indicators and caption records of
the wrong type are a :class:`DataError` naming the file and the row or record.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import bd09, validate
from . import images as image_checks
from .dataset import CAPTION_COLUMNS, IMAGE_COLUMNS, UrbanDataset
from .report import DataError, LoadReport

ZOOM = 16  # the release's Baidu zoom level: 1024 m tiles (256 px * 4 m/px)
MATCH_M = 5.0  # the release's corner agrees with a conversion of the tile numbers when this close (metres)
LABEL_COLUMNS = {  # release column -> canonical name
    "satellite_img_name": "satellite_img_name",
    "bd09 coordinate": "bd09",
    "wgs84 coordinate": "wgs84",
    "carbon_emissions (ton)": "carbon",
    "population (unit)": "population",
    "gdp (million yuan)": "gdp",
}
REQUIRED = ["satellite_img_name", "bd09", "carbon", "population", "gdp"]
_PAIR = re.compile(r"^\s*[\(\[]?\s*(-?[\d.]+(?:e-?\d+)?)\s*,\s*(-?[\d.]+(?:e-?\d+)?)\s*[\)\]]?\s*$", re.I)


def read(data_dir: str | Path, city: str | None = None, labels: str | Path | None = None,
         captions: str | Path | None = None, images: str | Path | None = None,
         check_images: bool = True, expected_size: tuple[int, int] | None = (256, 256)) -> UrbanDataset:
    """Read one city of the UrbanCLIP release into an :class:`UrbanDataset`.

    Args:
        data_dir: release root (see module docstring).
        city: city name as in the file names, e.g. ``"Beijing"`` (required).
        labels: explicit labels CSV path (default: searched under ``data_dir``).
        captions: explicit captions JSON path (default ``captions/{city}_captions.json``).
        images: explicit images root holding ``{city}/16_x_y_s.jpg`` (default ``images/``).
        check_images: decode every image (drops missing/unreadable ones, counted).
        expected_size: (width, height) flagged when different; None disables the check.

    Returns:
        Dataset with regions ``region_id`` (``{city}_16_{x}_{y}``), ``city``, ``row``, ``col``,
        ``lon``, ``lat`` (WGS84 centre of the tile, from its tile numbers), ``population``, ``gdp``,
        ``carbon``, ``bd09_x``, ``bd09_y`` (tile numbers), ``release_lon``, ``release_lat`` (the
        release's corner column as given: BD09 degrees), ``satellite_img_name``; image paths
        relative to the images root. Cell polygons: :func:`cell_polygons`, :func:`regions_geojson`.
    """
    if not city:
        raise DataError("urbanclip layout: city= is required (the release stores one city per file)")
    data_dir = Path(data_dir)
    report = LoadReport(source=f"{data_dir} (urbanclip, {city})")
    labels_path = _find_labels(data_dir, city, labels)
    regions = _read_labels(labels_path, city, report)
    regions = validate.check_regions(regions, report, source=str(labels_path),
                                     indicators=["population", "gdp", "carbon"])

    images_root = Path(images) if images is not None else data_dir / "images"
    if images is not None and not images_root.is_dir():
        raise DataError(f"{images_root}: images folder not found")
    if not images_root.is_dir():
        report.add("images_folder_missing", "flagged", 1, f"{images_root} not found; dataset has no images")
    image_rows = pd.DataFrame({"region_id": regions["region_id"], "kind": "satellite",
                               "path": regions["satellite_img_name"], "lon": np.nan, "lat": np.nan},
                              columns=IMAGE_COLUMNS)

    cap_path = Path(captions) if captions is not None else data_dir / "captions" / f"{city}_captions.json"
    if captions is not None and not cap_path.is_file():
        raise DataError(f"{cap_path}: captions file not found")
    if cap_path.is_file():
        caps = _read_captions(cap_path, regions, report)
    else:
        report.add("captions_file_missing", "flagged", 1, f"{cap_path} not found; dataset has no captions")
        caps = pd.DataFrame(columns=CAPTION_COLUMNS)

    ds = UrbanDataset(regions=regions, images=image_rows, captions=caps,
                      indicators=["population", "gdp", "carbon"], root=images_root, report=report,
                      meta={"layout": "urbanclip", "city": city, "labels": str(labels_path),
                            "captions": str(cap_path), "images": str(images_root)})
    if check_images:
        image_checks.check_images(ds, report, expected_size=expected_size)
    validate.check_coverage(ds, report)
    return ds


def _find_labels(data_dir: Path, city: str, labels) -> Path:
    if labels is not None:
        path = Path(labels)
        if not path.is_file():
            raise DataError(f"{path}: labels file not found")
        return path
    candidates = [data_dir / "labels" / f"{city}.csv", data_dir / "integrate" / "output" / city / f"{city}.csv",
                  data_dir / f"{city}.csv"]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"no labels CSV for {city!r} under {data_dir}; looked for "
                    f"{', '.join(str(c.relative_to(data_dir)) for c in candidates)} (or pass labels=)")


def _read_labels(path: Path, city: str, report: LoadReport) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype={"satellite_img_name": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse CSV ({type(e).__name__}: {e})") from None
    if raw.empty:
        raise DataError(f"{path}: the labels table has no rows")
    rename = {c: LABEL_COLUMNS[c.strip().lower()] for c in raw.columns if c.strip().lower() in LABEL_COLUMNS}
    df = raw.rename(columns=rename)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        inverse = {v: k for k, v in LABEL_COLUMNS.items()}
        raise DataError(f"{path}: missing column(s) {[inverse[c] for c in missing]}; found {list(raw.columns)}")
    df = df[[c for c in LABEL_COLUMNS.values() if c in df.columns]].reset_index(drop=True)

    bad_name = df["satellite_img_name"].isna() | (df["satellite_img_name"].astype(str).str.strip() == "")
    if bad_name.any():
        raise DataError(f"{path}: empty satellite_img_name in row {int(np.flatnonzero(bad_name)[0])}")
    xy = [_pair(v, path, i, "BD09 coordinate") for i, v in enumerate(df["bd09"])]
    x = np.array([int(round(a)) for a, _ in xy])
    y = np.array([int(round(b)) for _, b in xy])
    out = pd.DataFrame({"region_id": [f"{city}_16_{a}_{b}" for a, b in zip(x, y, strict=True)], "city": city,
                        "row": y.max() - y if len(y) else [], "col": x - x.min() if len(x) else []})
    out["bd09_x"], out["bd09_y"] = x, y
    out["lon"], out["lat"] = bd09.tile_centres(x, y, ZOOM)
    if "wgs84" in df.columns:
        ll = [_pair(v, path, i, "WGS84 coordinate", allow_nan=True) for i, v in enumerate(df["wgs84"])]
        rel_lat = np.array([a for a, _ in ll], dtype=float)
        rel_lon = np.array([b for _, b in ll], dtype=float)
        swapped = np.nan_to_num(np.abs(rel_lat)) > 90  # "(lon, lat)" instead of "(lat, lon)"
        if swapped.any():
            rel_lat[swapped], rel_lon[swapped] = rel_lon[swapped].copy(), rel_lat[swapped].copy()
            report.add("wgs84_swapped", "flagged", int(swapped.sum()),
                       f"WGS84 coordinate looked like (lon, lat) in {path}; swapped", list(np.flatnonzero(swapped)))
        bad = (np.abs(np.nan_to_num(rel_lat)) > 90) | (np.abs(np.nan_to_num(rel_lon)) > 180)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: row {i} field 'WGS84 coordinate' = {df['wgs84'].iloc[i]!r} is outside "
                            f"latitude [-90, 90] / longitude [-180, 180]")
        report.add("missing_wgs84", "flagged", int(np.isnan(rel_lat).sum()),
                   f"no WGS84 coordinate in {path}; the tile numbers alone place these regions")
        _cross_check(x, y, rel_lon, rel_lat, path, report)
    else:
        rel_lat = rel_lon = np.full(len(df), np.nan)
        report.add("missing_wgs84", "flagged", len(df),
                   f"{path} has no 'WGS84 coordinate' column; the tile numbers alone place the regions")
    out["release_lon"], out["release_lat"] = rel_lon, rel_lat
    for c in ("population", "gdp", "carbon"):
        out[c] = df[c].to_numpy()
    out["satellite_img_name"] = df["satellite_img_name"].astype(str).str.strip().to_numpy()
    return out[["region_id", "city", "row", "col", "lon", "lat", "population", "gdp", "carbon",
                "bd09_x", "bd09_y", "release_lon", "release_lat", "satellite_img_name"]]


def _cross_check(x, y, rel_lon, rel_lat, path: Path, report: LoadReport) -> None:
    """Compare the release's corner column with the tile numbers' south-west corner, in BD09 and WGS84."""
    s = bd09.tile_size_m(ZOOM)
    have = ~np.isnan(rel_lat)
    d_bd = bd09.distance_m(*bd09.mc_to_bd09(x * s, y * s), rel_lon, rel_lat)
    d_wgs = bd09.distance_m(*bd09.mc_to_wgs84(x * s, y * s), rel_lon, rel_lat)
    is_bd = have & (d_bd <= MATCH_M)
    report.add("wgs84_column_is_bd09", "flagged", int(is_bd.sum()),
               f"'WGS84 coordinate' in {path} holds BD09 lon/lat of the tile's south-west corner (Baidu geoconv "
               f"'from 6 to 5' is BD09MC -> BD09), within {MATCH_M:g} m of urbanlib.data.bd09.mc_to_bd09; "
               f"lon/lat are the WGS84 centres computed from the tile numbers, the column is kept as "
               f"release_lon/release_lat")
    other = have & ~is_bd & (d_wgs > MATCH_M)
    worst = np.flatnonzero(other)[np.argsort(-np.minimum(d_bd, d_wgs)[other])][:5]
    report.add("release_coordinate_mismatch", "flagged", int(other.sum()),
               f"'WGS84 coordinate' in {path} is more than {MATCH_M:g} m from the tile's south-west corner in both "
               f"BD09 and WGS84; the tile numbers are used",
               [f"row {i}: {min(d_bd[i], d_wgs[i]):.0f} m" for i in worst])


def cell_polygons(regions: pd.DataFrame, points_per_edge: int = 1) -> np.ndarray:
    """WGS84 outlines of the release's cells, from their Baidu tile numbers.

    Args:
        regions: a regions table with ``bd09_x``/``bd09_y`` (as :func:`read` returns).
        points_per_edge: vertices per tile edge (1: the four corners; BD09's wobble bends a 1 km
            tile's edges by up to about 1.2 m from straight lines between them in Beijing, so 4 is
            enough for anything finer).

    Returns:
        Array ``(len(regions), 4 * points_per_edge + 1, 2)`` of closed (lon, lat) rings,
        counter-clockwise from the south-west corner, in table order.
    """
    missing = [c for c in ("bd09_x", "bd09_y") if c not in regions.columns]
    if missing:
        raise DataError(f"cell_polygons: the regions table has no {missing} column (not an UrbanCLIP-release city)")
    return bd09.tile_rings(regions["bd09_x"].to_numpy(), regions["bd09_y"].to_numpy(), ZOOM, points_per_edge)


def regions_geojson(regions: pd.DataFrame, properties: list[str] | None = None) -> dict:
    """The release's cells as a GeoJSON FeatureCollection (WGS84 polygons), ready for a map.

    Args:
        regions: a regions table with ``region_id``, ``bd09_x``, ``bd09_y``.
        properties: region columns to copy into each feature (default: ``region_id`` only).

    Returns:
        ``{"type": "FeatureCollection", "features": [...]}``, one Polygon feature per region, in table order.
    """
    cols = ["region_id", *[c for c in (properties or []) if c != "region_id"]]
    unknown = [c for c in cols if c not in regions.columns]
    if unknown:
        raise DataError(f"regions_geojson: unknown region column(s) {unknown}")
    rings = cell_polygons(regions)
    records = regions[cols].to_dict("records")
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]},
                 "properties": {k: _json_value(v) for k, v in rec.items()}}
                for ring, rec in zip(rings, records, strict=True)]
    return {"type": "FeatureCollection", "features": features}


def _json_value(v):
    """A table cell as plain JSON: numpy scalars unwrapped, NaN as null (JSON has no NaN)."""
    v = v.item() if isinstance(v, np.generic) else v
    return None if isinstance(v, float) and math.isnan(v) else v


def _pair(value, path: Path, row: int, field: str, allow_nan: bool = False) -> tuple[float, float]:
    if allow_nan and (value is None or (isinstance(value, float) and math.isnan(value))):
        return (math.nan, math.nan)
    m = _PAIR.match(str(value))
    try:
        pair = (float(m.group(1)), float(m.group(2))) if m else None
    except ValueError:  # "1.2.3" matches the digits-and-dots pattern but is no number
        pair = None
    if pair is None or not all(math.isfinite(v) for v in pair):
        raise DataError(f"{path}: row {row} field {field!r} = {value!r} is not a pair of finite numbers like "
                        f"'(a, b)'")
    return pair


def _read_captions(path: Path, regions: pd.DataFrame, report: LoadReport) -> pd.DataFrame:
    rows = []
    for gi, ri, rec in validate.release_caption_records(path):
        if not isinstance(rec, dict) or "image" not in rec or "caption" not in rec:
            raise DataError(f"{path}: record [{gi}][{ri}] lacks 'caption' or 'image': {str(rec)[:80]!r}")
        for key in ("image", "caption"):
            if not isinstance(rec[key], str) and not (key == "caption" and rec[key] is None):
                raise DataError(f"{path}: record [{gi}][{ri}] {key!r} must be a string, got a "
                                f"{type(rec[key]).__name__}: {str(rec[key])[:60]!r}")
        rows.append((rec["image"].strip(), rec["caption"]))
    by_image = dict(zip(regions["satellite_img_name"], regions["region_id"], strict=True))
    caps = pd.DataFrame({"region_id": [by_image.get(img, f"?{img}") for img, _ in rows],
                         "image": [img for img, _ in rows], "source": "urbanclip-release", "style": "short",
                         "text": [t for _, t in rows]}, columns=CAPTION_COLUMNS)
    return validate.check_captions(caps, report, region_ids=regions["region_id"], source=str(path))
