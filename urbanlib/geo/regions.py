"""Drawing a city's regions: a metric grid, the XYZ tile grid, H3 cells, or a user's polygons.

Every kind returns :class:`Regions`: a GeoDataFrame in the CRS the regions are *defined* in (their
edges are straight there, so transforming them elsewhere densifies first), with ``region_id``,
integer grid ``row``/``col`` (what urbanlib's maps, Moran's I and blocked splits use), and the metric
CRS in which each region's imagery square is cut.

``row``/``col`` per kind: grid and xyz are the tile grid itself (row 0 at the north); H3 uses the
cells' local IJ coordinates (axial, 120 degrees apart); user polygons are binned by centroid on a
square grid whose step is the square root of the median region area (an approximation, reported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.report import DataError, LoadReport
from .config import CityConfig

WGS84 = "EPSG:4326"
WEB_MERCATOR = "EPSG:3857"


@dataclass
class Regions:
    """The regions of one city and the CRSs they live in."""

    gdf: object  # geopandas.GeoDataFrame: region_id, row, col, geometry (in its defining CRS)
    metric_crs: object  # pyproj.CRS in which imagery squares are cut (metres, or Web-Mercator metres)
    kind: str  # grid | xyz | h3 | polygons
    note: str = ""  # how row/col were obtained

    def wgs84(self):
        """The regions in EPSG:4326, edges densified so curved images of straight edges stay close."""
        return to_crs(self.gdf, WGS84)

    def centres(self) -> pd.DataFrame:
        """Region centres (centroid in the metric CRS) as WGS84 ``lon``/``lat``."""
        import geopandas as gpd

        c = to_crs(self.gdf, self.metric_crs).geometry.centroid
        ll = gpd.GeoSeries(c, crs=self.metric_crs).to_crs(WGS84)
        return pd.DataFrame({"lon": ll.x.round(7).to_numpy(), "lat": ll.y.round(7).to_numpy()})


def to_crs(gdf, crs, points_per_edge: int = 16):
    """``gdf`` in ``crs``; polygon edges get ``points_per_edge`` vertices first unless the CRS is the same.

    Shared edges of neighbouring regions receive identical vertices, so regions that tile the plane
    in their own CRS still tile it (no gaps, no overlaps) after the transform.
    """
    import shapely
    from pyproj import CRS

    if CRS.from_user_input(crs) == CRS.from_user_input(gdf.crs):
        return gdf
    geom = gdf.geometry.to_numpy()
    bounds = shapely.bounds(geom)
    size = np.nanmax(np.c_[bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]], axis=1)
    step = np.where(size > 0, size / points_per_edge, 1.0)
    out = gdf.copy()
    out.geometry = shapely.segmentize(geom, step)
    return out.to_crs(crs)


def make_regions(cfg: CityConfig, report: LoadReport) -> Regions:
    """Draw the regions the config asks for; raises :class:`DataError` when there are none."""
    r = cfg.regions
    maker = {"grid": _grid, "xyz": _xyz, "h3": _h3, "polygons": _polygons}[r.kind]
    regions = maker(cfg, report)
    gdf = regions.gdf
    if len(gdf) == 0:
        raise DataError(f"regions ({r.kind}): no region lies inside the area "
                        f"{r.bbox if r.bbox is not None else cfg.resolve(r.area) or cfg.resolve(r.path)}; "
                        f"check the bbox/area and its CRS ({r.bbox_crs})")
    gdf["region_id"] = gdf["region_id"].astype(str)
    regions.gdf = gdf.reset_index(drop=True)
    return regions


def utm_crs(lon: float, lat: float):
    """The WGS84 UTM zone CRS containing a point (north or south)."""
    from pyproj import CRS

    zone = int((lon + 180) // 6) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def _area(cfg: CityConfig):
    """The area as one shapely geometry and its CRS (from regions.area or regions.bbox)."""
    import geopandas as gpd
    import shapely

    r = cfg.regions
    if r.area is not None:
        path = cfg.resolve(r.area)
        g = read_vector(path, layer=r.layer)
        geom = shapely.union_all(g.geometry.to_numpy())
        if geom.is_empty:
            raise DataError(f"{path}: regions.area has no geometry")
        return geom, g.crs
    return shapely.box(*r.bbox), gpd.GeoSeries([], crs=r.bbox_crs).crs


def _area_in(cfg: CityConfig, crs):
    import geopandas as gpd

    geom, src = _area(cfg)
    return to_crs(gpd.GeoDataFrame(geometry=[geom], crs=src), crs).geometry.iloc[0]


def _grid(cfg: CityConfig, report: LoadReport) -> Regions:
    import geopandas as gpd
    import shapely
    from pyproj import CRS

    r = cfg.regions
    geom, src = _area(cfg)
    if r.crs is not None:
        crs = CRS.from_user_input(r.crs)
    elif src.is_projected and src.axis_info[0].unit_name in ("metre", "meter"):
        crs = src
    else:
        c = to_crs(gpd.GeoDataFrame(geometry=[geom], crs=src), WGS84).geometry.iloc[0].centroid
        crs = utm_crs(c.x, c.y)
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise DataError(f"regions.crs {crs.to_string()} is not a metric projected CRS; a grid of "
                        f"{r.cell_m} m cells needs one (e.g. the local UTM zone)")
    area = _area_in(cfg, crs)
    x0, y0, x1, y1 = area.bounds
    s = float(r.cell_m)
    ncol, nrow = max(1, math.ceil((x1 - x0) / s - 1e-9)), max(1, math.ceil((y1 - y0) / s - 1e-9))
    rows, cols = np.divmod(np.arange(nrow * ncol), ncol)
    boxes = shapely.box(x0 + cols * s, y1 - (rows + 1) * s, x0 + (cols + 1) * s, y1 - rows * s)
    keep = shapely.contains_xy(area, x0 + (cols + 0.5) * s, y1 - (rows + 0.5) * s) if r.area is not None \
        else np.ones(len(boxes), bool)
    gdf = gpd.GeoDataFrame({"region_id": [f"{cfg.city}_r{a:03d}c{b:03d}" for a, b in zip(rows, cols, strict=True)],
                            "row": rows, "col": cols}, geometry=boxes, crs=crs)[keep]
    report.add("grid_cell_outside_area", "skipped", int((~keep).sum()),
               "grid cell whose centre lies outside regions.area")
    return Regions(gdf, crs, "grid", f"{nrow} x {ncol} grid of {s:g} m cells in {crs.to_string()}")


def _xyz(cfg: CityConfig, report: LoadReport) -> Regions:
    import geopandas as gpd
    import mercantile
    import shapely

    z = cfg.regions.zoom
    area = _area_in(cfg, WGS84)
    w, s, e, n = area.bounds
    tiles = list(mercantile.tiles(w, s, e, n, zooms=[z]))
    if not tiles:
        return Regions(gpd.GeoDataFrame({"region_id": [], "row": [], "col": []}, geometry=[], crs=WEB_MERCATOR),
                       None, "xyz")
    xs, ys = np.array([t.x for t in tiles]), np.array([t.y for t in tiles])
    b = [mercantile.xy_bounds(t) for t in tiles]
    gdf = gpd.GeoDataFrame({"region_id": [f"{cfg.city}_z{z}_{t.x}_{t.y}" for t in tiles],
                            "row": ys - ys.min(), "col": xs - xs.min(), "tile_x": xs, "tile_y": ys, "tile_z": z},
                           geometry=[shapely.box(q.left, q.bottom, q.right, q.top) for q in b], crs=WEB_MERCATOR)
    if cfg.regions.area is not None:
        keep = _centres_in(gdf, _area_in(cfg, WEB_MERCATOR))
        report.add("tile_outside_area", "skipped", int((~keep).sum()), "XYZ tile whose centre lies outside regions.area")
        gdf = gdf[keep]
    from pyproj import CRS

    return Regions(gdf, CRS.from_user_input(WEB_MERCATOR), "xyz",
                   f"XYZ tiles at zoom {z}; row/col are tile y/x minus their minimum")


def _h3(cfg: CityConfig, report: LoadReport) -> Regions:
    import geopandas as gpd
    import h3
    import shapely

    res = cfg.regions.resolution
    area = _area_in(cfg, WGS84)
    cells = sorted(h3.geo_to_cells(area, res))
    c = area.centroid
    if not cells:
        return Regions(gpd.GeoDataFrame({"region_id": [], "row": [], "col": []}, geometry=[], crs=WGS84), None, "h3")
    origin = h3.latlng_to_cell(c.y, c.x, res)
    ij = []
    for cell in cells:
        try:
            ij.append(h3.cell_to_local_ij(origin, cell))
        except h3.H3BaseException as e:  # pentagon distortion or too far from the origin
            raise DataError(f"regions (h3): cell {cell} has no local IJ coordinate from {origin} ({e}); "
                            f"use a smaller area or the metric grid") from None
    ij = np.array(ij)
    polys = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]) for cell in cells]
    gdf = gpd.GeoDataFrame({"region_id": [f"{cfg.city}_{cell}" for cell in cells], "row": ij[:, 0] - ij[:, 0].min(),
                            "col": ij[:, 1] - ij[:, 1].min(), "h3": cells}, geometry=polys, crs=WGS84)
    return Regions(gdf, utm_crs(c.x, c.y), "h3", f"H3 resolution {res}; row/col are local IJ coordinates (axial)")


def _polygons(cfg: CityConfig, report: LoadReport) -> Regions:
    import shapely

    r = cfg.regions
    path = cfg.resolve(r.path)
    gdf = read_vector(path, layer=r.layer)
    if r.id_column is not None:
        if r.id_column not in gdf.columns:
            raise DataError(f"{path}: id_column {r.id_column!r} not found; columns: {list(gdf.columns)}")
        ids = gdf[r.id_column]
        blank = (ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy()
        if blank.any():
            raise DataError(f"{path}: empty {r.id_column!r} in row {int(np.flatnonzero(blank)[0])}")
        dup = ids.astype(str).duplicated()
        if dup.any():
            raise DataError(f"{path}: duplicate {r.id_column!r} {ids[dup].iloc[0]!r}; region ids must be unique")
        ids = ids.astype(str).to_numpy()
    else:
        ids = np.array([f"{i:04d}" for i in range(len(gdf))])
    geom = gdf.geometry.to_numpy()
    empty = shapely.is_empty(geom) | pd.isna(geom)
    types = np.array([g.geom_type if g is not None else "" for g in geom])
    bad_type = ~empty & ~np.isin(types, ["Polygon", "MultiPolygon"])
    report.add("empty_region_polygon", "skipped", int(empty.sum()), f"empty geometry in {path}", list(ids[empty][:5]))
    report.add("non_polygon_region", "skipped", int(bad_type.sum()), f"geometry that is not a polygon in {path}",
               list(ids[bad_type][:5]))
    keep = ~empty & ~bad_type
    gdf = gdf[keep].copy()
    ids = ids[keep]
    invalid = ~shapely.is_valid(gdf.geometry.to_numpy())
    report.add("invalid_region_polygon", "flagged", int(invalid.sum()),
               f"self-intersecting or otherwise invalid polygon in {path}; repaired with shapely.make_valid",
               list(ids[invalid][:5]))
    if invalid.any():
        gdf.loc[invalid, "geometry"] = shapely.make_valid(gdf.geometry.to_numpy()[invalid])
    out = gdf[[]].copy()
    out["region_id"] = [f"{cfg.city}_{i}" for i in ids]
    out = out.set_geometry(gdf.geometry)
    if len(out) == 0:
        return Regions(out.assign(row=[], col=[]), None, "polygons")
    c = to_crs(out, WGS84).geometry.union_all().centroid
    metric = utm_crs(c.x, c.y)
    m = to_crs(out, metric)
    step = math.sqrt(float(np.median(m.geometry.area)))
    cx, cy = m.geometry.centroid.x.to_numpy(), m.geometry.centroid.y.to_numpy()
    out["row"] = np.floor((cy.max() - cy) / step + 0.5).astype(int)
    out["col"] = np.floor((cx - cx.min()) / step + 0.5).astype(int)
    shared = out.duplicated(["row", "col"], keep="first").to_numpy()
    report.add("regions_sharing_grid_cell", "flagged", int(shared.sum()),
               f"user polygons binned onto a {step:.0f} m grid for maps and blocked splits share a row/col "
               f"with another region; maps show one of them", list(out["region_id"][shared][:5]))
    return Regions(out, metric, "polygons", f"row/col: centroids binned on a {step:.0f} m grid in {metric.to_string()}")


def _centres_in(gdf, area) -> np.ndarray:
    import shapely

    c = gdf.geometry.centroid
    return shapely.contains_xy(area, c.x.to_numpy(), c.y.to_numpy())


def read_vector(path: Path, layer: str | None = None):
    """A GeoJSON/GeoPackage/GeoParquet file as a GeoDataFrame; a file without a CRS is an error."""
    import geopandas as gpd

    if path is None or not Path(path).exists():
        raise DataError(f"{path}: vector file not found")
    try:
        if str(path).endswith((".parquet", ".geoparquet")):
            gdf = gpd.read_parquet(path)
        else:
            gdf = gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
    except Exception as e:  # pyogrio/pyarrow raise many types; the message names the file
        raise DataError(f"{path}: cannot read as a vector file ({type(e).__name__}: {e})") from None
    if gdf.crs is None:
        raise DataError(f"{path}: no CRS; set one in the file (e.g. ogr2ogr -a_srs EPSG:4326) so its "
                        f"coordinates are not guessed")
    return gdf
