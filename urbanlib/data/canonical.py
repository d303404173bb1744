"""urbanlib's own on-disk format: three tables and a meta.json in one folder.

Layout (format version 1)::

    data_dir/
      meta.json        {"format": "urbanlib", "format_version": 1, "indicators": [...], ...}
      regions.csv      region_id, city, row, col, lon, lat, <indicator columns>, <extra columns>
      images.csv       region_id, kind (satellite|street), path (relative to data_dir), lon, lat
      captions.jsonl   {"region_id", "image", "source", "style", "text", ...} one JSON object per line
      images/...       the image files

SynthCity writes this format; the UrbanCLIP and generic adapters map onto it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

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


def read(data_dir: str | Path, city: str | None = None) -> UrbanDataset:
    """Read a folder in urbanlib format; ``city`` keeps one city of a multi-city folder."""
    data_dir = Path(data_dir)
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not found; is {data_dir} a folder in urbanlib format?")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path}: invalid JSON ({e})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"{meta_path}: format_version {meta['format_version']} is newer than this urbanlib "
                        f"reads ({FORMAT_VERSION}); upgrade urbanlib")
    report = LoadReport(source=str(data_dir))
    regions = _read_csv(data_dir / "regions.csv", REGION_COLUMNS, dtype={"region_id": str, "city": str})
    images = _read_csv(data_dir / "images.csv", ["region_id", "kind", "path"], dtype={"region_id": str})
    for c in IMAGE_COLUMNS:
        if c not in images:
            images[c] = float("nan")
    cap_path = data_dir / "captions.jsonl"
    captions = (pd.read_json(cap_path, lines=True, dtype={"region_id": str}) if cap_path.is_file()
                and cap_path.stat().st_size > 0 else pd.DataFrame(columns=CAPTION_COLUMNS))
    indicators = [c for c in meta.get("indicators", []) if c in regions.columns]
    regions = validate.check_regions(regions, report, source=str(data_dir / "regions.csv"), indicators=indicators)
    if len(captions):
        captions = validate.check_captions(captions, report, region_ids=regions["region_id"], source=str(cap_path))
    ds = UrbanDataset(regions=regions, images=images, captions=captions, indicators=indicators,
                      root=data_dir, report=report, meta=meta)
    return ds.subset(city=city) if city is not None else ds


def _read_csv(path: Path, required: list[str], dtype=None) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found")
    try:
        df = pd.read_csv(path, dtype=dtype)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse CSV ({e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
