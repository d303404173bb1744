"""Table checks shared by every layout: ids, indicator values, captions, coverage.

Each check either raises :class:`DataError` naming the file, row or field, or applies a documented
policy and counts it in the :class:`LoadReport`. Nothing is dropped or changed silently.

Policies (rows are 0-based data rows of the source table):

* missing ``region_id`` -> DataError (we cannot key anything on it).
* duplicate ``region_id``: identical rows are dropped (``duplicate_region``, skipped); rows that
  disagree -> DataError naming both rows.
* indicator that is not numeric, not finite (``inf``, ``1e400``, ``"Infinity"``) or boolean ->
  DataError naming file, column and row.
* coordinate (``lon``, ``lat``, ``row``, ``col``) that is not numeric or not finite, a longitude
  outside [-180, 180], a latitude outside [-90, 90], a negative or fractional grid row/col ->
  DataError naming file, column and row; NaN coordinates are allowed (real data may lack them).
* a table without rows -> DataError.
* NaN indicator -> kept as NaN (``missing_<indicator>``, flagged); downstream code masks it.
* negative indicator -> set to NaN (``negative_<indicator>``, flagged): every canonical indicator
  is a count or an amount, so a negative value is an error in the source, not a measurement.
* zero indicator -> kept (``zero_<indicator>``, flagged): zeros are legitimate (empty land) but
  dominate some real releases, so users should see how many there are.
* capped indicator: when the maximum value occurs in at least ``cap_min_share`` of rows, it is a
  ceiling of the source; rows are kept, a boolean column ``<indicator>_capped`` marks them
  (``capped_<indicator>``, flagged).
* fill value: a single non-zero value below the maximum held by at least ``cap_min_share`` of the
  rows, and at least three times as often as the next most common value, is a fill value of the
  source wherever it sits in the distribution (UrbanCLIP's Beijing GDP is exactly 10000.0 in 20.5% of
  the rows while its maximum is 49,851); rows are kept, ``<indicator>_fill`` marks them
  (``fill_<indicator>``, flagged), and models should exclude or model them. Count indicators with
  naturally common small values do not trigger it (their top values are about as frequent).
* caption text that is not a string (a number, list, object) -> DataError naming file and row;
  the readers check this first and name the line.
* empty caption -> skipped (``empty_caption``); caption longer than ``max_caption_chars`` ->
  truncated at a word boundary (``caption_truncated``); caption of an unknown region -> skipped
  (``caption_unknown_region``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import INDICATORS
from .report import DataError, LoadReport

MAX_CAPTION_CHARS = 4000  # ~10x the longest LLaMA-Adapter caption we know of; longer is a broken file
CAP_MIN_SHARE = 0.05  # a maximum repeated in >= 5% of rows is treated as a ceiling
COORDINATE_RANGES = {"lon": (-180.0, 180.0), "lat": (-90.0, 90.0)}  # WGS84 degrees
IMAGE_KINDS = ("satellite", "street")


def _examples(df: pd.DataFrame, mask, col: str = "region_id", n: int = 5) -> list[str]:
    idx = np.flatnonzero(np.asarray(mask))[:n]
    if col in df.columns:
        return [f"row {i} ({df[col].iloc[i]})" for i in idx]
    return [f"row {i}" for i in idx]


def check_regions(regions: pd.DataFrame, report: LoadReport, source: str = "regions",
                  indicators: list[str] | None = None, cap_min_share: float = CAP_MIN_SHARE,
                  detect_caps: bool = True) -> pd.DataFrame:
    """Validate a regions table and return the cleaned copy (see module policies).

    Args:
        regions: one row per region; must have ``region_id`` and ``city``.
        report: receives one counted entry per kind of problem.
        source: file name used in error messages.
        indicators: indicator columns to check; default all canonical ones present.
        cap_min_share: share of rows at the maximum above which the maximum counts as a cap.
        detect_caps: set False to skip cap detection (e.g. synthetic data with known ranges).
    """
    df = regions.reset_index(drop=True).copy()
    for col in ("region_id", "city"):
        if col not in df.columns:
            raise DataError(f"{source}: missing column {col!r}; found {list(df.columns)}")
    bad = df["region_id"].isna() | (df["region_id"].astype(str).str.strip() == "")
    if bad.any():
        raise DataError(f"{source}: empty region_id in {', '.join(_examples(df, bad, col='city'))}")
    if df.empty:
        raise DataError(f"{source}: the table has no rows")
    df["region_id"] = df["region_id"].astype(str)
    cols = indicators if indicators is not None else [c for c in INDICATORS if c in df.columns]
    for col in cols:  # typed before duplicates are compared, so rows are numbered as in the source
        if col not in df.columns:
            raise DataError(f"{source}: indicator column {col!r} not found; found {list(df.columns)}")
        df[col] = _numeric(df, col, source)
    check_coordinates(df, source)
    df = _drop_duplicate_ids(df, report, source)
    for col in cols:
        values = df[col].to_numpy(dtype=float)
        nan = np.isnan(values)
        report.add(f"missing_{col}", "flagged", int(nan.sum()), f"{col} is missing or empty in {source}; kept as missing",
                   _examples(df, nan))
        neg = ~nan & (values < 0)
        report.add(f"negative_{col}", "flagged", int(neg.sum()),
                   f"{col} < 0 in {source}; set to NaN (indicators are counts/amounts)", _examples(df, neg))
        df.loc[neg, col] = np.nan
        zero = ~nan & (values == 0)
        report.add(f"zero_{col}", "flagged", int(zero.sum()), f"{col} == 0 in {source}; kept",
                   _examples(df, zero))
        if detect_caps:
            flag_capped(df, col, report, source, cap_min_share)
            flag_fill(df, col, report, source, cap_min_share)
    return df


def flag_capped(df: pd.DataFrame, col: str, report: LoadReport, source: str = "regions",
                min_share: float = CAP_MIN_SHARE) -> float | None:
    """Mark rows sitting at a repeated maximum of ``col`` with a ``<col>_capped`` column.

    Returns:
        The cap value, or None when the maximum is not repeated often enough to be a ceiling.
    """
    values = df[col].to_numpy(dtype=float)
    ok = ~np.isnan(values)
    if ok.sum() < 2:
        return None
    top = values[ok].max()
    at_top = ok & (values == top)
    if at_top.sum() < 2 or at_top.sum() < min_share * ok.sum():
        return None
    df[f"{col}_capped"] = at_top
    report.add(f"capped_{col}", "flagged", int(at_top.sum()),
               f"{col} equals its maximum {top:g} in {at_top.sum()}/{ok.sum()} rows of {source}: a ceiling of "
               f"the source, true values are >= {top:g}; kept, marked in column {col}_capped",
               _examples(df, at_top))
    return float(top)


def flag_fill(df: pd.DataFrame, col: str, report: LoadReport, source: str = "regions",
              min_share: float = CAP_MIN_SHARE, dominance: float = 3.0) -> float | None:
    """Mark rows holding a fill value of ``col`` (module policies) with a ``<col>_fill`` column.

    Returns:
        The fill value, or None when no single non-zero value below the maximum is common enough.
    """
    values = df[col].to_numpy(dtype=float)
    ok = ~np.isnan(values)
    nonzero = values[ok & (values != 0)]
    if len(nonzero) < 2:
        return None
    uniq, counts = np.unique(nonzero, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    value, n = float(uniq[order[0]]), int(counts[order[0]])
    runner_up = int(counts[order[1]]) if len(order) > 1 else 0
    if value == nonzero.max() or n < 2 or n < min_share * ok.sum() or n < dominance * runner_up:
        return None  # the maximum is flag_capped's case
    at = ok & (values == value)
    df[f"{col}_fill"] = at
    report.add(f"fill_{col}", "flagged", int(at.sum()),
               f"{col} is exactly {value:g} in {n}/{ok.sum()} rows ({n / ok.sum():.1%}) of {source}, below its "
               f"maximum {nonzero.max():g}: a fill value of the source; kept, marked in column {col}_fill",
               _examples(df, at))
    return value


def _numeric(df: pd.DataFrame, col: str, source: str, what: str = "") -> pd.Series:
    """``df[col]`` as finite-or-NaN floats; DataError naming file, column, row and value otherwise."""
    raw = df[col]

    def where(i: int) -> str:
        rid = f" ({df['region_id'].iloc[i]})" if "region_id" in df.columns else ""
        return f"{source}: {what}column {col!r} row {i}{rid}"

    if pd.api.types.is_bool_dtype(raw) and len(raw):
        raise DataError(f"{where(0)} is a boolean ({raw.iloc[0]!r}), not a number")
    if raw.dtype == object:
        is_bool = raw.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy()
        if is_bool.any():
            i = int(np.flatnonzero(is_bool)[0])
            raise DataError(f"{where(i)} is a boolean ({raw.iloc[i]!r}), not a number")
    num = pd.to_numeric(raw, errors="coerce")
    blank = raw.astype(str).str.strip().str.lower().isin(["", "nan", "na", "none", "null", "<na>"])
    bad = num.isna() & raw.notna() & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{where(i)} is not a number: {raw.iloc[i]!r}")
    num = num.astype(float)
    inf = np.isinf(num.to_numpy())
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        raise DataError(f"{where(i)} is not finite: {raw.iloc[i]!r} (inf, overflowing numbers such as 1e400 "
                        f"and 'Infinity' are refused; leave the cell empty for a missing value)")
    return num


def check_coordinates(df: pd.DataFrame, source: str, columns=("lon", "lat", "row", "col")) -> None:
    """Refuse coordinates that are text, infinite or out of range (NaN passes); converts text columns in place.

    Numeric columns keep their dtype (an integer grid stays integer); a column read as text whose
    cells are all numbers or blanks becomes float.
    """
    for col in columns:
        if col not in df.columns:
            continue
        num = _numeric(df, col, source, what="coordinate ")
        v = num.to_numpy()
        ok = ~np.isnan(v)
        if col in COORDINATE_RANGES:
            lo, hi = COORDINATE_RANGES[col]
            bad = ok & ((v < lo) | (v > hi))
            why = f"outside [{lo:g}, {hi:g}] degrees"
        else:
            bad = ok & ((v < 0) | (v != np.round(v)))
            why = "not a non-negative whole number (a grid position)"
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            rid = f" ({df['region_id'].iloc[i]})" if "region_id" in df.columns else ""
            raise DataError(f"{source}: coordinate column {col!r} row {i}{rid} = {df[col].iloc[i]!r} is {why}")
        if df[col].dtype == object:
            df[col] = num


def _drop_duplicate_ids(df: pd.DataFrame, report: LoadReport, source: str) -> pd.DataFrame:
    dup = df["region_id"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return df
    for rid, g in df[dup].groupby("region_id", sort=False):
        first = g.iloc[[0]].reset_index(drop=True)
        for i in range(1, len(g)):
            other = g.iloc[[i]].reset_index(drop=True)
            if not first.equals(other):
                raise DataError(f"{source}: duplicate region_id {rid!r} in rows {g.index[0]} and {g.index[i]} "
                                f"with different values; fix the source or drop one row")
    extra = df["region_id"].duplicated(keep="first").to_numpy()
    report.add("duplicate_region", "skipped", int(extra.sum()),
               f"identical duplicate rows in {source}; first kept", _examples(df, extra))
    return df.loc[~extra].reset_index(drop=True)


def check_captions(captions: pd.DataFrame, report: LoadReport, region_ids=None, source: str = "captions",
                   max_chars: int = MAX_CAPTION_CHARS) -> pd.DataFrame:
    """Drop empty captions and captions of unknown regions, truncate huge ones; all counted."""
    df = captions.reset_index(drop=True).copy()
    if df.empty:
        return df
    for col in ("region_id", "text"):
        if col not in df.columns:
            raise DataError(f"{source}: missing field {col!r}; found {list(df.columns)}")
    df["region_id"] = df["region_id"].astype(str)
    typed = df["text"].map(lambda t: t is None or isinstance(t, str) or (isinstance(t, float) and np.isnan(t)))
    if not typed.all():
        i = int(np.flatnonzero(~typed.to_numpy())[0])
        raise DataError(f"{source}: row {i} ({df['region_id'].iloc[i]}) caption text is a "
                        f"{type(df['text'].iloc[i]).__name__}, not a string: {str(df['text'].iloc[i])[:60]!r}")
    text = df["text"].where(df["text"].notna(), "").astype(str).str.strip()
    empty = (text == "").to_numpy()
    report.add("empty_caption", "skipped", int(empty.sum()), f"empty caption text in {source}",
               _examples(df, empty))
    long = ~empty & (text.str.len() > max_chars).to_numpy()
    report.add("caption_truncated", "flagged", int(long.sum()),
               f"caption longer than {max_chars} characters in {source}; truncated at a word boundary",
               _examples(df, long))
    df["text"] = [_truncate(t, max_chars) if lg else t for t, lg in zip(text, long, strict=True)]
    keep = ~empty
    if region_ids is not None:
        unknown = keep & ~df["region_id"].isin(set(map(str, region_ids))).to_numpy()
        report.add("caption_unknown_region", "skipped", int(unknown.sum()),
                   f"caption for a region not in the regions table ({source})", _examples(df, unknown))
        keep &= ~unknown
    return df.loc[keep].reset_index(drop=True)


def _truncate(text: str, max_chars: int) -> str:
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


def check_coverage(ds, report: LoadReport) -> None:
    """Count regions that have no satellite image or no caption (kept, flagged)."""
    ids = ds.regions["region_id"].astype(str)
    sat = set(ds.images.loc[ds.images["kind"] == "satellite", "region_id"].astype(str))
    no_img = ~ids.isin(sat).to_numpy()
    report.add("region_without_image", "flagged", int(no_img.sum()),
               "region has no (readable) satellite image; kept for indicator-only use",
               list(ids[no_img][:5]))
    cap = set(ds.captions["region_id"].astype(str)) if len(ds.captions) else set()
    no_cap = ~ids.isin(cap).to_numpy()
    report.add("region_without_caption", "flagged", int(no_cap.sum()), "region has no caption; kept",
               list(ids[no_cap][:5]))


def check_image_rows(images: pd.DataFrame, region_ids, report: LoadReport, source: str = "images") -> pd.DataFrame:
    """Validate an image table (``region_id``, ``kind``, ``path``, ``lon``, ``lat``) before any file is opened.

    An unknown ``kind`` or a text/out-of-range street-view coordinate -> DataError naming file and
    row; a row without a path (``image_without_path``) or for a region not in the regions table
    (``image_unknown_region``) -> skipped and counted. Whether the path stays inside the dataset
    and decodes is :func:`urbanlib.data.images.check_images`' job.
    """
    df = images.reset_index(drop=True).copy()
    if df.empty:
        return df
    kind = df["kind"].astype(str)
    odd = ~kind.isin(IMAGE_KINDS).to_numpy()
    if odd.any():
        i = int(np.flatnonzero(odd)[0])
        raise DataError(f"{source}: row {i} kind {df['kind'].iloc[i]!r} is not one of {IMAGE_KINDS}")
    check_coordinates(df, source, columns=("lon", "lat"))
    path = df["path"]
    no_path = (path.isna() | (path.astype(str).str.strip() == "")).to_numpy()
    report.add("image_without_path", "skipped", int(no_path.sum()), f"image row without a path in {source}",
               _examples(df, no_path))
    keep = ~no_path
    if region_ids is not None:
        unknown = keep & ~df["region_id"].astype(str).isin(set(map(str, region_ids))).to_numpy()
        report.add("image_unknown_region", "skipped", int(unknown.sum()),
                   f"image of a region not in the regions table ({source})", _examples(df, unknown))
        keep &= ~unknown
    return df if keep.all() else df.loc[keep].reset_index(drop=True)


def caption_record(line: str, path: Path, n: int, text_keys=("text", "caption")) -> dict:
    """Parse one JSONL caption line; DataError ``<file>: line <n> ...`` unless it is a well-typed record.

    A record is a JSON object with ``region_id`` (string or integer) and one of ``text_keys``
    (a string, or null for a missing caption, which is then counted as empty); ``image``, ``source``
    and ``style`` are strings or null when present.
    """
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
    if not isinstance(rec, dict):
        raise DataError(f"{path}: line {n}: expected a JSON object, found a {type(rec).__name__}")
    rid = rec.get("region_id")
    if "region_id" not in rec or isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise DataError(f"{path}: line {n}: 'region_id' must be a string or an integer, got {rid!r}")
    keys = [k for k in text_keys if k in rec]
    if not keys:
        raise DataError(f"{path}: line {n}: needs 'region_id' and {' or '.join(repr(k) for k in text_keys)}")
    for k in (*keys, "image", "source", "style"):
        v = rec.get(k)
        if v is not None and not isinstance(v, str):
            raise DataError(f"{path}: line {n}: {k!r} must be a string, got a {type(v).__name__}: {str(v)[:60]!r}")
    return rec


def caption_lines(path: Path, text_keys=("text", "caption")) -> list[dict]:
    """The records of a JSONL caption file: every non-blank line, checked by :func:`caption_record`.

    Raises:
        DataError: the file is not UTF-8 text, or a line is not a well-typed record (``<file>: line <n> ...``).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    return [caption_record(line, path, n, text_keys) for n, line in enumerate(lines, start=1) if line.strip()]


def release_caption_records(path: Path) -> list[tuple[int, int, object]]:
    """The records of the UrbanCLIP release's caption JSON, ``[[{"caption", "image"}, ...], ...]``, in file order.

    A flat list of records reads as one group. Each item is ``(group index, index in group, record)``; what
    a record must hold is the reader's rule (the release adapter and the generic one accept different keys),
    so records are returned unchecked.

    Raises:
        DataError: the file is not UTF-8 JSON, or not a list of lists (or a flat list of objects).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: invalid JSON ({e})") from None
    if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
        data = [data]  # tolerate a flat list of records
    if not isinstance(data, list) or not all(isinstance(g, list) for g in data):
        raise DataError(f"{path}: expected a list of lists of {{'caption', 'image'}} records")
    return [(gi, ri, rec) for gi, group in enumerate(data) for ri, rec in enumerate(group)]
