"""Indicator rasters aggregated per region: exact area-weighted zonal statistics (exactextract).

The rule is declared per indicator, never guessed:

* ``sum``: counts and totals (people, tonnes of CO2). Each pixel contributes its value times the
  share of the pixel inside the region, so a pixel cut by a border is split between neighbours and
  region sums add up to the raster's total.
* ``mean``: densities and radiances (night light, people per km^2 as a density layer). The
  coverage-weighted mean of the valid pixels under the region.

The statistic is computed in the raster's own CRS: region polygons are densified and transformed
into it, and the raster is never resampled (resampling a count raster changes its total). Nodata
pixels (the raster's nodata value, or NaN) are left out of both rules. ``coverage`` is the share of
the region's area covered by valid pixels (1.0: fully covered; pixels outside the raster count as
missing). A region whose coverage is below the indicator's ``min_coverage`` gets NaN, counted in the
report, because a partial sum of a count would read as a low value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.report import DataError, LoadReport
from .config import IndicatorSpec
from .regions import Regions, to_crs


def open_raster(path: Path, what: str):
    """Open a raster with rasterio; a missing file or CRS raises :class:`DataError` naming ``what``."""
    import rasterio

    if path is None or not Path(path).exists():
        raise DataError(f"{what}: raster {path} not found")
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise DataError(f"{what}: cannot open {path} as a raster ({e})") from None
    if ds.crs is None:
        ds.close()
        raise DataError(f"{what}: {path} has no CRS; assign one (gdal_edit.py -a_srs EPSG:...) so it is not "
                        f"guessed")
    if ds.transform.b != 0 or ds.transform.d != 0:
        ds.close()
        raise DataError(f"{what}: {path} has a rotated geotransform; warp it to a north-up grid first")
    return ds


def zonal(regions: Regions, spec: IndicatorSpec, path: Path, report: LoadReport) -> pd.DataFrame:
    """One indicator per region: columns ``<name>`` (per the rule) and ``<name>_coverage``.

    Raises:
        DataError: the raster is missing, has no CRS, lacks the band, or no region overlaps it.
    """
    import shapely
    from exactextract import exact_extract
    from exactextract.raster import RasterioRasterSource

    what = f"indicator {spec.name!r}"
    ds = open_raster(path, what)
    try:
        if not 1 <= spec.band <= ds.count:
            raise DataError(f"{what}: {path} has {ds.count} band(s); band {spec.band} asked")
        gdf = to_crs(regions.gdf[["region_id", "geometry"]], ds.crs)
        _check_overlap(gdf, ds, what, path)
        stats = exact_extract(RasterioRasterSource(ds, spec.band), gdf, [spec.rule, "count"],
                              include_cols=["region_id"], output="pandas")
        pixel_area = abs(ds.transform.a * ds.transform.e)
    finally:
        ds.close()
    stats = stats.set_index("region_id").reindex(regions.gdf["region_id"])
    area = pd.Series(shapely.area(gdf.geometry.to_numpy()), index=gdf["region_id"].to_numpy())  # raster CRS units
    area = area.reindex(stats.index).to_numpy()
    coverage = np.clip(stats["count"].to_numpy(float) * pixel_area / np.where(area > 0, area, np.nan), 0, 1)
    value = stats[spec.rule].to_numpy(float)
    ids = stats.index.to_numpy()
    nodata_only = coverage == 0
    low = ~nodata_only & (coverage < spec.min_coverage)
    report.add(f"no_valid_{spec.name}", "flagged", int(nodata_only.sum()),
               f"region with no valid pixel of {path.name} (outside it or nodata only); {spec.name} left empty (missing)",
               list(ids[nodata_only][:5]))
    report.add(f"low_coverage_{spec.name}", "flagged", int(low.sum()),
               f"{path.name} covers less than min_coverage={spec.min_coverage:g} of the region; {spec.name} "
               f"left empty (missing)", list(ids[low][:5]))
    value = np.where(nodata_only | low, np.nan, value)
    return pd.DataFrame({spec.name: value, f"{spec.name}_coverage": np.round(coverage, 6)},
                        index=pd.Index(ids, name="region_id"))


def _check_overlap(gdf, ds, what: str, path: Path) -> None:
    import shapely

    b = ds.bounds
    extent = shapely.box(b.left, b.bottom, b.right, b.top)
    if not shapely.intersects(gdf.geometry.to_numpy(), extent).any():
        x0, y0, x1, y1 = gdf.total_bounds
        raise DataError(f"{what}: no region overlaps {path} (regions span [{x0:.6g}, {y0:.6g}, {x1:.6g}, {y1:.6g}] "
                        f"in its CRS {ds.crs.to_string()}, the raster covers [{b.left:.6g}, {b.bottom:.6g}, "
                        f"{b.right:.6g}, {b.top:.6g}]); is the bbox right, or the raster's CRS wrong?")
