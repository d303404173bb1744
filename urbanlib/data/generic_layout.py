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

Options can also live in a small config file, ``dataset.yml`` (or ``dataset.json``) in the folder,
or any file passed as ``config=``: its keys are this reader's arguments (``columns``, ``captions``,
``caption_format``, ``street_points``, ``cell_size``, ``transforms``, ...), and arguments given
to :func:`read` override it. A notebook that passes only ``data_dir`` and ``layout="generic"``
thus reads the folder as its config says.

Captions: JSONL (one object per line, above) or the UrbanCLIP release's JSON
(``[[{"caption", "image"}, ...]]`` or a flat list of such records; ``caption_format="urbanclip"``,
inferred from a ``.json`` suffix), whose ``image`` is matched to the table's ``image`` column or to
a ``{region_id}.<ext>`` file name (a record may also carry ``region_id``).

Indicators already on a log scale: urbanlib logs every indicator itself (``ln(y + 1)``), so
``transforms={"population": "log1p"}`` (or ``"log"``) declares a column already logged and the
reader converts it back to original units (reported ``delogged_<indicator>``); ``"none"`` declares
it raw. A source column named ``log_*`` mapped onto an indicator without a declared transform is
kept as given, with a warning and a ``looks_logged_<indicator>`` report entry, because it would be
logged twice.

Validation is the shared one (:mod:`urbanlib.data.validate`, :mod:`urbanlib.data.images`): image
paths (the ``image`` column, street points) must stay inside ``images/``; text or out-of-range
coordinates and caption lines of the wrong type are a :class:`DataError` naming ``file:line``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import images as image_checks
from . import validate
from .dataset import CAPTION_COLUMNS, IMAGE_COLUMNS, INDICATORS, UrbanDataset
from .report import DataError, LoadReport

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
CONFIG_NAMES = ("dataset.yml", "dataset.yaml", "dataset.json")  # read from data_dir when present
CAPTION_FORMATS = ("jsonl", "urbanclip")
TRANSFORMS = {"log1p": np.expm1, "log": np.exp, "none": None}  # declared scale of a column -> back to original units
_UNSET = object()  # an argument not given, so the config file's value (or the default) applies
DEFAULTS = {"indicators": "indicators.csv", "columns": None, "images": "images/", "captions": "captions.jsonl",
            "caption_format": None, "street_points": None, "cell_size": None, "transforms": None,
            "check_images": True, "expected_size": None}


def read_config(path: str | Path) -> dict:
    """A dataset config file (YAML or JSON mapping of :func:`read`'s arguments); DataError on unknown keys."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: dataset config file not found")
    try:
        doc = (json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text()))
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot parse the dataset config ({e})") from None
    doc = doc or {}
    if not isinstance(doc, dict):
        raise DataError(f"{path}: the dataset config must be a mapping of option -> value")
    unknown = sorted(set(doc) - set(DEFAULTS) - {"city"})
    if unknown:
        raise DataError(f"{path}: unknown option(s) {unknown}; known: {sorted([*DEFAULTS, 'city'])}")
    if isinstance(doc.get("cell_size"), list):
        doc["cell_size"] = tuple(doc["cell_size"])
    if isinstance(doc.get("expected_size"), list):
        doc["expected_size"] = tuple(doc["expected_size"])
    return doc


def read(data_dir: str | Path, city: str | None = None, indicators=_UNSET, columns=_UNSET, images=_UNSET,
         captions=_UNSET, street_points=_UNSET, cell_size=_UNSET, check_images=_UNSET, expected_size=_UNSET,
         caption_format=_UNSET, transforms=_UNSET, config: str | Path | None = None) -> UrbanDataset:
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
        caption_format: ``"jsonl"`` or ``"urbanclip"`` (the release's JSON); default from the suffix.
        transforms: ``{indicator: "log1p" | "log" | "none"}``, the scale a column is given in (module doc).
        config: a dataset config file (default: ``dataset.yml``/``.json`` in ``data_dir`` if present);
            arguments given here override its values.

    Every option left out takes the config file's value, else the default shown in :data:`DEFAULTS`.
    """
    data_dir = Path(data_dir)
    given = {"indicators": indicators, "columns": columns, "images": images, "captions": captions,
             "street_points": street_points, "cell_size": cell_size, "check_images": check_images,
             "expected_size": expected_size, "caption_format": caption_format, "transforms": transforms}
    cfg_path = _resolve(data_dir, config) if config is not None else next(
        (data_dir / n for n in CONFIG_NAMES if (data_dir / n).is_file()), None)
    cfg = read_config(cfg_path) if cfg_path is not None else {}
    opts = {k: (v if v is not _UNSET else cfg.get(k, DEFAULTS[k])) for k, v in given.items()}
    city = city if city is not None else cfg.get("city")
    indicators, columns, images, captions = opts["indicators"], opts["columns"], opts["images"], opts["captions"]
    street_points, cell_size, check_images = opts["street_points"], opts["cell_size"], opts["check_images"]
    expected_size = opts["expected_size"]
    report = LoadReport(source=f"{data_dir} (generic)")
    table_path = _resolve(data_dir, indicators)
    regions = _read_regions(table_path, columns or {}, opts["transforms"] or {}, city, report)
    images_root = _resolve(data_dir, images)
    image_rows = _satellite_rows(regions, images_root, report)
    if street_points is not None:
        image_rows = pd.concat([image_rows, _street_rows(_resolve(data_dir, street_points), regions, cell_size,
                                                         report)], ignore_index=True)
    caps = pd.DataFrame(columns=CAPTION_COLUMNS)
    if captions is not None:
        caps = _read_captions(_resolve(data_dir, captions), opts["caption_format"], regions, image_rows, report)
    ds = UrbanDataset(regions=regions.drop(columns=["image"], errors="ignore"), images=image_rows, captions=caps,
                      root=images_root, report=report,
                      meta={"layout": "generic", "indicators_table": str(table_path), "images": str(images_root),
                            "config": str(cfg_path) if cfg_path is not None else None})
    if check_images:
        image_checks.check_images(ds, report, expected_size=expected_size)
    validate.check_coverage(ds, report)
    return ds


def _read_regions(table_path: Path, columns: dict, transforms: dict, city: str | None, report: LoadReport) -> pd.DataFrame:
    """The indicator table as checked regions of ``city``: canonical columns, scales undone, coordinates flagged."""
    regions = _read_table(table_path, columns)
    _apply_transforms(regions, columns, transforms, report, table_path)
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
    return regions[front + [c for c in regions.columns if c not in front]]


def _read_captions(cap_path: Path, caption_format: str | None, regions: pd.DataFrame, image_rows: pd.DataFrame,
                   report: LoadReport) -> pd.DataFrame:
    """The checked captions of ``cap_path`` (JSONL or the release's JSON); none, flagged, when the file is missing."""
    fmt = caption_format or ("urbanclip" if cap_path.suffix.lower() == ".json" else "jsonl")
    if fmt not in CAPTION_FORMATS:
        raise DataError(f"caption_format must be one of {CAPTION_FORMATS}, got {fmt!r}")
    if cap_path.is_file():
        raw = _read_jsonl(cap_path) if fmt == "jsonl" else _read_release_json(cap_path, regions, image_rows)
        return validate.check_captions(raw, report, region_ids=regions["region_id"], source=str(cap_path))
    report.add("captions_file_missing", "flagged", 1, f"{cap_path} not found; dataset has no captions")
    return pd.DataFrame(columns=CAPTION_COLUMNS)


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
    rows = [{"region_id": str(rec["region_id"]), "image": rec.get("image"), "source": rec.get("source") or "generic",
             "style": rec.get("style") or "short", "text": rec.get("text", rec.get("caption"))}
            for rec in validate.caption_lines(path, text_keys=("text", "caption"))]
    return pd.DataFrame(rows, columns=CAPTION_COLUMNS)


def _apply_transforms(regions: pd.DataFrame, columns: dict[str, str], transforms: dict, report: LoadReport,
                      source: Path) -> None:
    """Declared log-scale indicators back to original units; undeclared ``log_*`` sources warned about."""
    if not isinstance(transforms, dict):
        raise DataError(f"transforms must be a mapping of indicator -> one of {sorted(TRANSFORMS)}, got {transforms!r}")
    for ind, how in transforms.items():
        if how not in TRANSFORMS:
            raise DataError(f"transforms[{ind!r}] = {how!r}; choose one of {sorted(TRANSFORMS)}")
        if ind not in regions.columns:
            raise DataError(f"transforms names {ind!r}, which is not a column of {source} after columns= mapping")
        if TRANSFORMS[how] is not None:
            values = pd.to_numeric(regions[ind], errors="coerce").to_numpy(dtype=float)
            regions[ind] = TRANSFORMS[how](values)
            report.add(f"delogged_{ind}", "flagged", int(np.isfinite(values).sum()),
                       f"{ind} declared as {how}(y) in {source}; converted back to original units (urbanlib logs "
                       f"indicators itself, so it is not logged twice)")
    source_of = {dst: src for src, dst in columns.items()}
    for ind in INDICATORS:
        src = source_of.get(ind, ind)
        if ind in regions.columns and str(src).lower().startswith("log_") and ind not in transforms:
            msg = (f"{source}: column {src!r} (mapped onto {ind!r}) looks already logged; urbanlib takes ln(y + 1) "
                   f"of every indicator, so it would be logged twice. Declare transforms={{{ind!r}: 'log1p'}} "
                   f"(or 'log', or 'none' if it is raw)")
            warnings.warn(msg, stacklevel=3)
            report.add(f"looks_logged_{ind}", "flagged", len(regions), msg)


def _read_release_json(path: Path, regions: pd.DataFrame, image_rows: pd.DataFrame) -> pd.DataFrame:
    """UrbanCLIP-release captions (``[[{"caption", "image"}]]`` or a flat list) as a captions table.

    A record's region: its ``region_id`` if given, else its ``image`` matched to the satellite image
    paths (the table's ``image`` column or ``{region_id}.<ext>`` files), else the image's file stem.
    """
    by_image = dict(zip(image_rows["path"].astype(str), image_rows["region_id"].astype(str), strict=True))
    rows = []
    for gi, ri, rec in validate.release_caption_records(path):
        text_key = next((k for k in ("caption", "text") if isinstance(rec, dict) and k in rec), None)
        if text_key is None or not ("image" in rec or "region_id" in rec):
            raise DataError(f"{path}: record [{gi}][{ri}] needs 'caption' and 'image' (or 'region_id'): "
                            f"{str(rec)[:80]!r}")
        text, image = rec[text_key], rec.get("image")
        if (text is not None and not isinstance(text, str)) or (image is not None and not isinstance(image, str)):
            raise DataError(f"{path}: record [{gi}][{ri}]: 'caption' and 'image' must be strings: {str(rec)[:80]!r}")
        rid = rec.get("region_id")
        if rid is None:
            image = image.strip()
            rid = by_image.get(image, by_image.get(Path(image).name, Path(image).stem))
        rows.append({"region_id": str(rid), "image": image, "source": rec.get("source") or "urbanclip-json",
                     "style": rec.get("style") or "short", "text": text})
    return pd.DataFrame(rows, columns=CAPTION_COLUMNS)
