"""Adapter for the UrbanCLIP data release (one city per call).

Expected layout (explicit paths override each part)::

    data_dir/
      labels/{City}.csv                      (or integrate/output/{City}/{City}.csv, the toolkit's output)
      captions/{City}_captions.json          [[{"caption": str, "image": "{City}/16_{x}_{y}_s.jpg"}, ...]]
      images/{City}/16_{x}_{y}_s.jpg         256x256 RGB JPEG Baidu tiles

Labels columns: ``satellite_img_name``, ``BD09 coordinate`` ("(x,y)": Baidu zoom-16 tile indices),
``WGS84 coordinate`` ("(lat, lon)" of the tile's south-west corner), ``carbon_emissions (ton)``,
``population (unit)``, ``gdp (million yuan)``, mapped to ``carbon``, ``population``, ``gdp``.

Geometry. A Baidu tile at zoom 16 covers 256 px x 4 m/px = 1024 metres of Baidu Mercator, so
tile x/y are a regular grid: ``col = x - min(x)``, ``row = max(y) - y`` (row 0 is the northern
edge, as in an image). The region centre is approximated from the south-west WGS84 corner by
adding half a tile: ``dlon = 1024 / 111319.49`` degrees (Mercator metres per degree of longitude
on the equator) and ``dlat = dlon * cos(lat)`` (Mercator's north-south stretch). This ignores the
BD09 -> WGS84 warp inside one tile (metres, far below the 1 km tile size); the exact corners are
kept in ``sw_lat``/``sw_lon`` and the tile indices in ``bd09_x``/``bd09_y``.

Problems in real releases (regions without images or captions, zero indicators, GDP capped at
10000.0) are kept and counted in the report (see :mod:`urbanlib.data.validate`); image names that
leave the images folder, oversized or undecodable images are skipped and counted
(:mod:`urbanlib.data.images`); malformed coordinates, non-finite indicators and caption records of
the wrong type are a :class:`DataError` naming the file and the row or record.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import images as image_checks
from . import validate
from .dataset import CAPTION_COLUMNS, IMAGE_COLUMNS, UrbanDataset
from .report import DataError, LoadReport

TILE_METRES = 1024.0  # Baidu zoom 16: 256 px * 4 m/px
METRES_PER_DEGREE = 111319.49  # Mercator metres per degree of longitude (equatorial radius 6378137 m)
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
        ``lon``, ``lat`` (approximate centre), ``population``, ``gdp``, ``carbon``, ``bd09_x``,
        ``bd09_y``, ``sw_lat``, ``sw_lon``, ``satellite_img_name``; image paths relative to the
        images root.
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
    if "wgs84" in df.columns:
        ll = [_pair(v, path, i, "WGS84 coordinate", allow_nan=True) for i, v in enumerate(df["wgs84"])]
        sw_lat = np.array([a for a, _ in ll], dtype=float)
        sw_lon = np.array([b for _, b in ll], dtype=float)
        swapped = np.nan_to_num(np.abs(sw_lat)) > 90  # "(lon, lat)" instead of "(lat, lon)"
        if swapped.any():
            sw_lat[swapped], sw_lon[swapped] = sw_lon[swapped].copy(), sw_lat[swapped].copy()
            report.add("wgs84_swapped", "flagged", int(swapped.sum()),
                       f"WGS84 coordinate looked like (lon, lat) in {path}; swapped", list(np.flatnonzero(swapped)))
        report.add("missing_wgs84", "flagged", int(np.isnan(sw_lat).sum()),
                   f"no WGS84 coordinate in {path}; centre lon/lat NaN")
    else:
        sw_lat = sw_lon = np.full(len(df), np.nan)
        report.add("missing_wgs84", "flagged", len(df), f"{path} has no 'WGS84 coordinate' column; lon/lat NaN")
    out["sw_lat"], out["sw_lon"] = sw_lat, sw_lon
    out["lon"], out["lat"] = tile_centre(sw_lat, sw_lon)
    for c in ("population", "gdp", "carbon"):
        out[c] = df[c].to_numpy()
    out["satellite_img_name"] = df["satellite_img_name"].astype(str).str.strip().to_numpy()
    return out[["region_id", "city", "row", "col", "lon", "lat", "population", "gdp", "carbon",
                "bd09_x", "bd09_y", "sw_lat", "sw_lon", "satellite_img_name"]]


def tile_centre(sw_lat, sw_lon, tile_metres: float = TILE_METRES):
    """Approximate WGS84 centre (lon, lat) of tiles from their south-west corners (see module doc)."""
    sw_lat = np.asarray(sw_lat, dtype=float)
    sw_lon = np.asarray(sw_lon, dtype=float)
    dlon = tile_metres / METRES_PER_DEGREE
    dlat = dlon * np.cos(np.radians(sw_lat))
    return sw_lon + dlon / 2, sw_lat + dlat / 2


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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None
    if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
        data = [data]  # tolerate a flat list of records
    if not isinstance(data, list) or not all(isinstance(g, list) for g in data):
        raise DataError(f"{path}: expected a list of lists of {{'caption', 'image'}} records")
    rows = []
    for gi, group in enumerate(data):
        for ri, rec in enumerate(group):
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
