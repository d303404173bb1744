"""Adapter for a plain folder: an indicator table, an images folder, JSONL captions, street-view points.

Expected layout (every part can be renamed by argument)::

    data_dir/
      indicators.csv | indicators.parquet   one row per region; map its columns with columns={src: canonical}
      images/                               satellite images, {region_id}.jpg|.jpeg|.png|.tif, or the path
                                            given in an ``image`` column of the table (relative to images/)
      captions.jsonl                        {"region_id": ..., "text" | "caption": ..., ["style", "source",
                                            "image"]} one JSON object per line
      street_points.csv (optional)          path (relative to images/), lon, lat: one street-view photo each

Street views are assigned to grid cells. The regions' centres (``lon``/``lat``, WGS84 degrees) are
taken to lie on a regular lon/lat grid whose cell size is ``cell_size=(dlon, dlat)`` or, by default,
the smallest gap between distinct centre longitudes (latitudes). A point belongs to the region whose
cell (centre +- half a cell on both axes) contains it; a point on a shared edge goes to the cell to
its east/north. Points inside no region's cell are skipped and counted (``street_outside_grid``).

Validation is the shared one (:mod:`urbanlib.data.validate`, :mod:`urbanlib.data.images`): image
paths (the ``image`` column, street points) must stay inside ``images/``; text or out-of-range
coordinates and caption lines of the wrong type are a :class:`DataError` naming ``file:line``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import images as image_checks
from . import validate
from .dataset import CAPTION_COLUMNS, IMAGE_COLUMNS, INDICATORS, UrbanDataset
from .report import DataError, LoadReport

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def read(data_dir: str | Path, city: str | None = None, indicators: str | Path = "indicators.csv",
         columns: dict[str, str] | None = None, images: str | Path = "images/",
         captions: str | Path | None = "captions.jsonl", street_points: str | Path | None = None,
         cell_size: tuple[float, float] | None = None, check_images: bool = True,
         expected_size: tuple[int, int] | None = None) -> UrbanDataset:
    """Read a generic folder into an :class:`UrbanDataset`.

    Args:
        data_dir: the folder; relative paths below are resolved against it.
        city: keep this city; also the city of every row when the table has no city column.
        indicators: CSV or Parquet table, one row per region.
        columns: ``{source column: canonical name}``, e.g. ``{"id": "region_id", "pop": "population"}``.
            Canonical names: ``region_id``, ``city``, ``row``, ``col``, ``lon``, ``lat``, ``image`` and
            the indicators in :data:`urbanlib.data.INDICATORS`. Unmapped columns are kept as extras.
        images: folder of satellite (and street-view) images.
        captions: JSONL captions file, or None for none.
        street_points: CSV of street-view photos (``path``, ``lon``, ``lat``), or None.
        cell_size: (dlon, dlat) of the region grid in degrees (default inferred, see module doc).
        check_images: decode every image (drops missing/unreadable ones, counted).
        expected_size: (width, height) to flag when different; None accepts any size.
    """
    data_dir = Path(data_dir)
    report = LoadReport(source=f"{data_dir} (generic)")
    table_path = _resolve(data_dir, indicators)
    regions = _read_table(table_path, columns or {})
    if "city" not in regions.columns:
        if not city:
            raise DataError(f"{table_path}: no 'city' column; pass city= (or map a column onto 'city')")
        regions["city"] = city
    regions["city"] = regions["city"].astype(str)
    if city is not None:
        if city not in set(regions["city"]):
            raise DataError(f"{table_path}: city {city!r} not found; cities: {sorted(set(regions['city']))}")
        regions = regions[regions["city"] == city].reset_index(drop=True)
    for c in ("row", "col", "lon", "lat"):
        if c not in regions.columns:
            regions[c] = np.nan
    no_coords = (regions["lon"].isna() | regions["lat"].isna()).to_numpy()
    report.add("missing_coordinates", "flagged", int(no_coords.sum()), f"region without lon/lat in {table_path}",
               list(regions["region_id"].astype(str)[no_coords][:5]))
    regions = validate.check_regions(regions, report, source=str(table_path))
    front = ["region_id", "city", "row", "col", "lon", "lat"]
    regions = regions[front + [c for c in regions.columns if c not in front]]

    images_root = _resolve(data_dir, images)
    image_rows = _satellite_rows(regions, images_root, report)
    if street_points is not None:
        image_rows = pd.concat([image_rows, _street_rows(_resolve(data_dir, street_points), regions, cell_size,
                                                         report)], ignore_index=True)
    caps = pd.DataFrame(columns=CAPTION_COLUMNS)
    if captions is not None:
        cap_path = _resolve(data_dir, captions)
        if cap_path.is_file():
            caps = validate.check_captions(_read_jsonl(cap_path), report, region_ids=regions["region_id"],
                                           source=str(cap_path))
        else:
            report.add("captions_file_missing", "flagged", 1, f"{cap_path} not found; dataset has no captions")
    ds = UrbanDataset(regions=regions.drop(columns=["image"], errors="ignore"), images=image_rows, captions=caps,
                      root=images_root, report=report,
                      meta={"layout": "generic", "indicators_table": str(table_path), "images": str(images_root)})
    if check_images:
        image_checks.check_images(ds, report, expected_size=expected_size)
    validate.check_coverage(ds, report)
    return ds


def _resolve(data_dir: Path, path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else data_dir / path


def _read_table(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: indicator table not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read table ({type(e).__name__}: {e})") from None
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise DataError(f"{path}: columns {absent} named in columns= are not in the table; found {list(df.columns)}")
    allowed = {"region_id", "city", "row", "col", "lon", "lat", "image", *INDICATORS}
    unknown = sorted(set(columns.values()) - allowed)
    if unknown:
        raise DataError(f"columns= maps onto unknown canonical name(s) {unknown}; allowed: {sorted(allowed)}")
    df = df.rename(columns=columns)
    if "region_id" not in df.columns:
        raise DataError(f"{path}: no 'region_id' column; map one with columns={{'<your id column>': 'region_id'}}")
    df["region_id"] = df["region_id"].astype(str)
    return df


def _satellite_rows(regions: pd.DataFrame, root: Path, report: LoadReport) -> pd.DataFrame:
    if "image" in regions.columns:
        have = regions["image"].notna().to_numpy()
        paths = regions["image"].astype(str).to_numpy()[have]
        ids = regions["region_id"].to_numpy()[have]
    else:
        by_stem = {}
        if root.is_dir():
            for p in sorted(root.iterdir()):
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    by_stem.setdefault(p.stem, p.name)
        else:
            report.add("images_folder_missing", "flagged", 1, f"{root} not found; dataset has no images")
        ids = [r for r in regions["region_id"] if r in by_stem]
        paths = [by_stem[r] for r in ids]
    return pd.DataFrame({"region_id": list(ids), "kind": "satellite", "path": list(paths),
                         "lon": np.nan, "lat": np.nan}, columns=IMAGE_COLUMNS)


def grid_cells(lon, lat, lon0: float, lat0: float, cell_size: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Integer (i, j) cell of points on the regular grid with a cell centred at (lon0, lat0)."""
    dlon, dlat = cell_size
    i = np.floor((np.asarray(lon, dtype=float) - lon0) / dlon + 0.5)
    j = np.floor((np.asarray(lat, dtype=float) - lat0) / dlat + 0.5)
    return i, j


def infer_cell_size(regions: pd.DataFrame) -> tuple[float, float]:
    """Smallest gap between distinct centre longitudes and latitudes of the regions, in degrees."""
    out = []
    for c in ("lon", "lat"):
        v = np.unique(np.round(regions[c].dropna().to_numpy(dtype=float), 9))
        gaps = np.diff(v)
        if len(gaps) == 0:
            raise DataError(f"cannot infer grid cell size: regions have fewer than two distinct {c} values; "
                            f"pass cell_size=(dlon, dlat)")
        out.append(float(gaps.min()))
    return out[0], out[1]


def _street_rows(path: Path, regions: pd.DataFrame, cell_size, report: LoadReport) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: street-view points file not found")
    try:
        pts = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse CSV ({type(e).__name__}: {e})") from None
    missing = [c for c in ("path", "lon", "lat") if c not in pts.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(pts.columns)}")
    if pts.empty:
        return pd.DataFrame(columns=IMAGE_COLUMNS)
    validate.check_coordinates(pts, str(path), columns=("lon", "lat"))
    bad = pts["lon"].isna() | pts["lat"].isna() | pts["path"].isna()
    report.add("street_without_coordinates", "skipped", int(bad.sum()),
               f"street-view point without lon/lat or path in {path}",
               list(pts.loc[bad, "path"].astype(str)[:5]))
    pts = pts[~bad].reset_index(drop=True)
    located = regions.dropna(subset=["lon", "lat"])
    cell_size = tuple(cell_size) if cell_size is not None else infer_cell_size(located)
    lon0, lat0 = float(located["lon"].min()), float(located["lat"].min())
    ri, rj = grid_cells(located["lon"], located["lat"], lon0, lat0, cell_size)
    cell_to_region = {(int(a), int(b)): r for a, b, r in zip(ri, rj, located["region_id"], strict=True)}
    pi, pj = grid_cells(pts["lon"], pts["lat"], lon0, lat0, cell_size)
    rid = [cell_to_region.get((int(a), int(b))) for a, b in zip(pi, pj, strict=True)]
    outside = np.array([r is None for r in rid], dtype=bool)
    report.add("street_outside_grid", "skipped", int(outside.sum()),
               f"street-view point in no region's grid cell ({path})", list(pts.loc[outside, "path"].astype(str)[:5]))
    keep = ~outside
    return pd.DataFrame({"region_id": np.asarray(rid, dtype=object)[keep], "kind": "street",
                         "path": pts.loc[keep, "path"].astype(str).to_numpy(),
                         "lon": pts.loc[keep, "lon"].to_numpy(dtype=float),
                         "lat": pts.loc[keep, "lat"].to_numpy(dtype=float)}, columns=IMAGE_COLUMNS)


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        rec = validate.caption_record(line, path, n, text_keys=("text", "caption"))
        rows.append({"region_id": str(rec["region_id"]), "image": rec.get("image"),
                     "source": rec.get("source") or "generic", "style": rec.get("style") or "short",
                     "text": rec.get("text", rec.get("caption"))})
    return pd.DataFrame(rows, columns=CAPTION_COLUMNS)
