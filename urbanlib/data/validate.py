"""Table checks shared by every layout: ids, indicator values, captions, coverage.

Each check either raises :class:`DataError` naming the file, row or field, or applies a documented
policy and counts it in the :class:`LoadReport`. Nothing is dropped or changed silently.

Policies (rows are 0-based data rows of the source table):

* missing ``region_id`` -> DataError (we cannot key anything on it).
* duplicate ``region_id``: identical rows are dropped (``duplicate_region``, skipped); rows that
  disagree -> DataError naming both rows.
* indicator that is not numeric -> DataError naming column and row.
* NaN indicator -> kept as NaN (``missing_<indicator>``, flagged); downstream code masks it.
* negative indicator -> set to NaN (``negative_<indicator>``, flagged): every canonical indicator
  is a count or an amount, so a negative value is an error in the source, not a measurement.
* zero indicator -> kept (``zero_<indicator>``, flagged): zeros are legitimate (empty land) but
  dominate some real releases, so users should see how many there are.
* capped indicator: when the maximum value occurs in at least ``cap_min_share`` of rows, it is a
  ceiling of the source (UrbanCLIP's GDP is 10000.0 in ~20% of rows); rows are kept, a boolean
  column ``<indicator>_capped`` marks them (``capped_<indicator>``, flagged).
* empty caption -> skipped (``empty_caption``); caption longer than ``max_caption_chars`` ->
  truncated at a word boundary (``caption_truncated``); caption of an unknown region -> skipped
  (``caption_unknown_region``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import INDICATORS
from .report import DataError, LoadReport

MAX_CAPTION_CHARS = 4000  # ~10x the longest LLaMA-Adapter caption we know of; longer is a broken file
CAP_MIN_SHARE = 0.05  # a maximum repeated in >= 5% of rows is treated as a ceiling


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
    df["region_id"] = df["region_id"].astype(str)
    df = _drop_duplicate_ids(df, report, source)
    cols = indicators if indicators is not None else [c for c in INDICATORS if c in df.columns]
    for col in cols:
        if col not in df.columns:
            raise DataError(f"{source}: indicator column {col!r} not found; found {list(df.columns)}")
        df[col] = _numeric(df, col, source)
        values = df[col].to_numpy(dtype=float)
        nan = np.isnan(values)
        report.add(f"missing_{col}", "flagged", int(nan.sum()), f"{col} is NaN/empty in {source}; kept as NaN",
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


def _numeric(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    blank = raw.astype(str).str.strip().str.lower().isin(["", "nan", "na", "none", "null"])
    bad = num.isna() & raw.notna() & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{source}: column {col!r} row {i} ({df['region_id'].iloc[i]}) is not a number: "
                        f"{raw.iloc[i]!r}")
    return num.astype(float)


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
