"""Point tables joined to regions: POIs counted per region and category, street views assigned.

A point belongs to the region that contains it; a point on an edge shared by two regions goes to the
first of them in region order, so each point is counted once. Points in no region, without
coordinates or (POIs) without a declared category are skipped and counted in the report. If a table
has points but none falls in any region, the coordinates or their CRS are wrong: that is an error,
not an empty count.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.images import inspect_image
from ..data.report import DataError, LoadReport
from .config import PoiSpec, StreetSpec
from .regions import Regions, read_vector


def read_points(path: Path, lon: str, lat: str, crs: str, what: str, report: LoadReport, keep: list[str]):
    """A CSV (``lon``/``lat`` columns in ``crs``), GeoParquet or GeoJSON/GeoPackage of points.

    Rows without usable coordinates are skipped (``<what>_without_coordinates``); a CSV missing a
    needed column raises :class:`DataError`. Returns a GeoDataFrame with the ``keep`` columns.
    """
    import geopandas as gpd

    if path is None or not Path(path).is_file():
        raise DataError(f"{what}: {path} not found")
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        try:
            df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise DataError(f"{what}: cannot parse {path} ({e})") from None
        missing = [c for c in [lon, lat, *keep] if c not in df.columns]
        if missing:
            raise DataError(f"{what}: {path} lacks column(s) {missing}; found {list(df.columns)}")
        x = pd.to_numeric(df[lon], errors="coerce").to_numpy(float)
        y = pd.to_numeric(df[lat], errors="coerce").to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        report.add(f"{what}_without_coordinates", "skipped", int((~ok).sum()),
                   f"row of {path.name} with missing or non-numeric {lon}/{lat}",
                   [f"row {i}" for i in np.flatnonzero(~ok)[:5]])
        gdf = gpd.GeoDataFrame(df.loc[ok, keep].reset_index(drop=True), geometry=gpd.points_from_xy(x[ok], y[ok]),
                               crs=crs)
    else:
        gdf = read_vector(path)
        missing = [c for c in keep if c not in gdf.columns]
        if missing:
            raise DataError(f"{what}: {path} lacks column(s) {missing}; found {list(gdf.columns)}")
        geom = gdf.geometry
        ok = (~geom.is_empty & geom.notna()).to_numpy()
        report.add(f"{what}_without_coordinates", "skipped", int((~ok).sum()), f"empty geometry in {path.name}")
        gdf = gdf[ok].reset_index(drop=True)
        not_point = (gdf.geom_type != "Point").to_numpy()
        report.add(f"{what}_not_a_point", "flagged", int(not_point.sum()),
                   f"non-point geometry in {path.name}; its representative point is used")
        if not_point.any():
            gdf.loc[not_point, "geometry"] = gdf.geometry[not_point].representative_point()
        gdf = gdf[[*keep, "geometry"]]
    if crs and gdf.crs is not None and gdf.crs.is_geographic:
        b = gdf.total_bounds
        if len(gdf) and (b[0] < -180 or b[2] > 180 or b[1] < -90 or b[3] > 90):
            raise DataError(f"{what}: {path} coordinates span {b.round(3).tolist()}, outside lon/lat ranges of "
                            f"{gdf.crs.to_string()}; are they projected? set the table's crs")
    return gdf


def assign(points, regions: Regions, what: str, path: Path, report: LoadReport) -> np.ndarray:
    """Region id of each point (``None`` where it is in no region); an error if none is in any."""
    import geopandas as gpd

    if len(points) == 0:
        return np.array([], dtype=object)
    pts = points[["geometry"]].to_crs(regions.gdf.crs).reset_index(drop=True)
    reg = regions.gdf[["region_id", "geometry"]].reset_index(drop=True)
    j = gpd.sjoin(pts, reg, how="left", predicate="intersects")
    j["order"] = j["index_right"].fillna(np.inf)
    j = j.sort_values("order", kind="stable")
    j = j[~j.index.duplicated(keep="first")].sort_index()
    rid = j["region_id"].to_numpy(dtype=object)
    out = pd.isna(rid)
    rid[out] = None
    if out.all():
        b = pts.total_bounds.round(6).tolist()
        raise DataError(f"{what}: none of the {len(pts)} points of {path} falls in a region (points span {b} in "
                        f"{reg.crs.to_string()}, regions {reg.total_bounds.round(6).tolist()}); wrong CRS or "
                        f"swapped lon/lat?")
    report.add(f"{what}_outside_regions", "skipped", int(out.sum()), f"point of {path.name} in no region",
               [f"row {i}" for i in np.flatnonzero(out)[:5]])
    return rid


def slug(category: str) -> str:
    """A category as a column-name suffix: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", str(category).strip().lower()).strip("_")


def count_pois(regions: Regions, spec: PoiSpec, path: Path, report: LoadReport) -> pd.DataFrame:
    """``poi_count`` and one ``poi_cat_<category>`` column per category, indexed by region id."""
    pts = read_points(path, spec.lon_column, spec.lat_column, spec.crs, "poi", report, [spec.category_column])
    cat = pts[spec.category_column]
    blank = (cat.isna() | (cat.astype(str).str.strip() == "")).to_numpy()
    report.add("poi_without_category", "skipped", int(blank.sum()), f"POI of {path.name} with empty "
               f"{spec.category_column!r}", [f"row {i}" for i in np.flatnonzero(blank)[:5]])
    cat = cat.astype(str).str.strip()
    if spec.categories is not None:
        unknown = ~blank & ~cat.isin(spec.categories).to_numpy()
        report.add("poi_unknown_category", "skipped", int(unknown.sum()),
                   f"POI of {path.name} whose category is not in pois.categories",
                   sorted(set(cat[unknown]))[:5])
        categories = list(spec.categories)
    else:
        unknown = np.zeros(len(cat), bool)
        categories = sorted(set(cat[~blank]))
    slugs = [slug(c) for c in categories]
    clash = {s for s in slugs if slugs.count(s) > 1 or not s}
    if clash:
        raise DataError(f"poi: categories {[c for c, s in zip(categories, slugs, strict=True) if s in clash]} "
                        f"map to the same or an empty column name; rename them")
    keep = ~blank & ~unknown
    rid = assign(pts[keep], regions, "poi", path, report)
    ids = regions.gdf["region_id"]
    table = pd.crosstab(pd.Series(rid, name="region_id"), pd.Series(cat[keep].to_numpy(), name="category"))
    table = table.reindex(index=ids, columns=categories, fill_value=0).fillna(0).astype(int)
    table.columns = [f"poi_cat_{s}" for s in slugs]
    table.insert(0, "poi_count", table.sum(axis=1))
    table.index.name = "region_id"
    return table


def assign_street_views(regions: Regions, spec: StreetSpec, folder: Path, points: Path, out_dir: Path,
                        report: LoadReport) -> pd.DataFrame:
    """Copy street-view photos into ``images/street/`` and return their ``images.csv`` rows."""
    if not folder.is_dir():
        raise DataError(f"street_views: folder {folder} not found")
    pts = read_points(points, spec.lon_column, spec.lat_column, spec.crs, "street_view", report, [spec.path_column])
    files = [folder / str(p) for p in pts[spec.path_column]]
    info = [inspect_image(f) for f in files]
    missing = np.array([i["error"] == "missing" for i in info], bool)
    broken = np.array([not i["ok"] and i["error"] != "missing" for i in info], bool)
    report.add("street_view_missing_file", "skipped", int(missing.sum()), f"photo listed in {points.name} not in "
               f"{folder}", [str(f) for f, m in zip(files, missing, strict=True) if m][:5])
    report.add("street_view_unreadable", "skipped", int(broken.sum()), "photo that does not decode",
               [str(f) for f, b in zip(files, broken, strict=True) if b][:5])
    ok = ~missing & ~broken
    pts = pts[ok].reset_index(drop=True)
    files = [f for f, k in zip(files, ok, strict=True) if k]
    rid = assign(pts, regions, "street_view", points, report)
    ll = pts.to_crs("EPSG:4326").geometry
    (out_dir / "images" / "street").mkdir(parents=True, exist_ok=True)
    rows, seen = [], {}
    for f, r, p in zip(files, rid, ll, strict=True):
        if r is None:
            continue
        k = seen.get(r, 0)
        seen[r] = k + 1
        rel = f"images/street/{r}_{k}{f.suffix.lower()}"
        shutil.copyfile(f, out_dir / rel)
        rows.append({"region_id": r, "kind": "street", "path": rel, "lon": round(p.x, 7), "lat": round(p.y, 7)})
    return pd.DataFrame(rows, columns=["region_id", "kind", "path", "lon", "lat"])
