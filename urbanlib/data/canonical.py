"""urbanlib's own on-disk format: three tables and a meta.json in one folder.

Layout (format version 1)::

    data_dir/
      meta.json        {"format": "urbanlib", "format_version": 1, "indicators": [...], ...}
      regions.csv      region_id, city, row, col, lon, lat, <indicator columns>, <extra columns>
      images.csv       region_id, kind (satellite|street), path (relative to data_dir), lon, lat
      captions.jsonl   {"region_id", "image", "source", "style", "text", ...} one JSON object per line
      images/...       the image files

SynthCity writes this format; the UrbanCLIP and generic adapters map onto it.

Reading validates like every layout (:mod:`urbanlib.data.validate`): typed, finite indicators and
coordinates, image rows of known kinds and regions, caption records typed line by line, and every
image decoded once, inside the folder and under the pixel limit (:func:`urbanlib.data.images.check_images`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from urbanlib.cache import atomic_write

from . import images as image_checks
from . import validate
from .dataset import CAPTION_COLUMNS, IMAGE_COLUMNS, REGION_COLUMNS, UrbanDataset
from .report import DataError, LoadReport

FORMAT_VERSION = 1


def write(ds: UrbanDataset, data_dir: str | Path) -> Path:
    """Write ``ds``'s tables and meta.json into ``data_dir`` (image files must already be there).

    Files are written to a temporary name and renamed, so a kill never leaves half a table.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": "urbanlib", "format_version": FORMAT_VERSION, "indicators": list(ds.indicators),
            **{k: v for k, v in ds.meta.items() if k not in ("format", "format_version", "indicators")}}
    _atomic_text(data_dir / "meta.json", json.dumps(meta, indent=2, default=str))
    _atomic_text(data_dir / "regions.csv", ds.regions.to_csv(index=False))
    _atomic_text(data_dir / "images.csv", ds.images.to_csv(index=False))
    _atomic_text(data_dir / "captions.jsonl", ds.captions.to_json(orient="records", lines=True, force_ascii=False))
    return data_dir


def read(data_dir: str | Path, city: str | None = None, check_images: bool = True) -> UrbanDataset:
    """Read a folder in urbanlib format; ``city`` keeps one city of a multi-city folder.

    Args:
        data_dir: the folder (meta.json, regions.csv, images.csv, captions.jsonl, images/).
        city: keep this city.
        check_images: decode every image once (bad ones are skipped and counted in the report).
    """
    data_dir = Path(data_dir)
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not found; is {data_dir} a folder in urbanlib format?")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{meta_path}: invalid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object, found a {type(meta).__name__}")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise DataError(f"{meta_path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise DataError(f"{meta_path}: format_version {version} is newer than this urbanlib "
                        f"reads ({FORMAT_VERSION}); upgrade urbanlib")
    listed = meta.get("indicators", [])
    if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
        raise DataError(f"{meta_path}: 'indicators' must be a list of column names, got {listed!r}")
    report = LoadReport(source=str(data_dir))
    regions = _read_csv(data_dir / "regions.csv", REGION_COLUMNS, dtype={"region_id": str, "city": str})
    images = _read_csv(data_dir / "images.csv", ["region_id", "kind", "path"], dtype={"region_id": str})
    for c in IMAGE_COLUMNS:
        if c not in images:
            images[c] = float("nan")
    cap_path = data_dir / "captions.jsonl"
    captions = _read_captions(cap_path)
    indicators = [c for c in listed if c in regions.columns]
    regions = validate.check_regions(regions, report, source=str(data_dir / "regions.csv"), indicators=indicators)
    images = validate.check_image_rows(images, regions["region_id"], report, source=str(data_dir / "images.csv"))
    if len(captions):
        captions = validate.check_captions(captions, report, region_ids=regions["region_id"], source=str(cap_path))
    ds = UrbanDataset(regions=regions, images=images, captions=captions, indicators=indicators,
                      root=data_dir, report=report, meta=meta)
    if check_images:
        image_checks.check_images(ds, report, expected_size=None, annotate=False)
    validate.check_coverage(ds, report)
    return ds.subset(city=city) if city is not None else ds


def _read_captions(path: Path) -> pd.DataFrame:
    """``captions.jsonl`` as a table, each line checked first (:func:`validate.caption_lines`)."""
    if not path.is_file() or path.stat().st_size == 0 or not validate.caption_lines(path, text_keys=("text",)):
        return pd.DataFrame(columns=CAPTION_COLUMNS)
    try:  # read again by pandas, which keeps every field (SynthCity's statements) with its own types
        return pd.read_json(path, lines=True, dtype={"region_id": str})
    except ValueError as e:
        raise DataError(f"{path}: cannot read as JSON lines ({e})") from None


def _read_csv(path: Path, required: list[str], dtype=None) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found")
    try:
        df = pd.read_csv(path, dtype=dtype)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse CSV ({type(e).__name__}: {e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def _atomic_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
