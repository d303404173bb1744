"""Cutting one satellite tile per region from a GeoTIFF mosaic, an XYZ tile folder or an MBTiles file.

Each region's tile is the square (in the regions' metric CRS) centred on the region's centroid whose
side is the larger side of the region's bounding box there; for the metric grid and the XYZ grid
that is exactly the cell. The square is sampled at ``pixel_m`` metres a pixel (or ``tile_px``
pixels a side) by GDAL's warper (bilinear: imagery, not counts), from the mosaic in whatever CRS it
is in. Pixels the source does not cover are black and counted; a tile with less than
``min_coverage`` valid pixels is not written and its region has no image (counted).

XYZ folders are ``{z}/{x}/{y}.png`` (or .jpg/.jpeg/.webp) in the XYZ (Google/OSM) row order; MBTiles
files store TMS rows, flipped on reading. Both are stitched into a Web-Mercator mosaic per region.
"""

from __future__ import annotations

import sqlite3
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.report import DataError, LoadReport
from .config import ImagerySpec
from .regions import WEB_MERCATOR, Regions, to_crs
from .zonal import open_raster

TILE_EXTS = (".png", ".jpg", ".jpeg", ".webp")


def imagery_kind(path: Path, spec: ImagerySpec) -> str:
    """``geotiff``, ``xyz`` or ``mbtiles`` from the spec or the path."""
    if spec.kind != "auto":
        return spec.kind
    if path.is_dir():
        return "xyz"
    if path.suffix.lower() == ".mbtiles":
        return "mbtiles"
    return "geotiff"


def cut_tiles(regions: Regions, spec: ImagerySpec, path: Path, out_dir: Path, report: LoadReport,
              progress: bool = False) -> dict[str, dict]:
    """Write ``images/satellite/<region_id>.png`` under ``out_dir`` for every region the imagery covers.

    Returns:
        ``{region_id: {"path": relative path, "coverage": share of valid pixels}}`` for written tiles.

    Raises:
        DataError: the imagery is missing or unreadable, or covers no region at all.
    """
    if not path.exists():
        raise DataError(f"imagery: {path} not found")
    kind = imagery_kind(path, spec)
    source = {"geotiff": _GeoTiff, "xyz": _XyzFolder, "mbtiles": _MbTiles}[kind](path, spec)
    metric = to_crs(regions.gdf[["region_id", "geometry"]], regions.metric_crs)
    (out_dir / "images" / "satellite").mkdir(parents=True, exist_ok=True)
    written, low, ids = {}, [], metric["region_id"].to_numpy()
    try:
        for rid, geom in tqdm(zip(ids, metric.geometry, strict=True), total=len(ids), desc="imagery",
                              disable=not progress, leave=False):
            x0, y0, x1, y1 = geom.bounds
            side = max(x1 - x0, y1 - y0)
            n = spec.tile_px or max(1, round(side / spec.pixel_m))
            cx, cy = geom.centroid.x, geom.centroid.y
            rgb, valid = source.warp(cx - side / 2, cy + side / 2, side / n, n, regions.metric_crs)
            cov = float(valid.mean())
            if cov < spec.min_coverage:
                low.append(rid)
                continue
            rel = f"images/satellite/{rid}.png"
            Image.fromarray(rgb).save(out_dir / rel)
            written[rid] = {"path": rel, "coverage": round(cov, 6)}
    finally:
        source.close()
    if not written:
        raise DataError(f"imagery: {path} covers no region (best coverage below min_coverage="
                        f"{spec.min_coverage:g}); is the bbox right, or the imagery's CRS/zoom wrong?")
    report.add("region_without_imagery", "flagged", len(low),
               f"{path.name} covers less than min_coverage={spec.min_coverage:g} of the region's square; "
               f"no tile written, region kept", low[:5])
    partial = [r for r, w in written.items() if w["coverage"] < 1]
    report.add("imagery_partly_covered", "flagged", len(partial),
               f"tile written with black pixels where {path.name} has no data", partial[:5])
    return written


class _GeoTiff:
    """A GeoTIFF (or any GDAL raster) in its own CRS; bands stretched to 0-255 unless uint8."""

    def __init__(self, path: Path, spec: ImagerySpec):
        self.ds = open_raster(path, "imagery")
        self.bands = list(spec.bands)
        if max(self.bands) > self.ds.count or min(self.bands) < 1:
            raise DataError(f"imagery: {path} has {self.ds.count} band(s); bands {self.bands} asked")
        dtype = self.ds.dtypes[self.bands[0] - 1]
        if dtype != "uint8" and spec.value_range is None:
            raise DataError(f"imagery: {path} is {dtype}, not uint8; give imagery.value_range [low, high] to "
                            f"stretch it to 0-255")
        self.value_range = spec.value_range

    def warp(self, left: float, top: float, res: float, n: int, crs):
        """RGB (n, n, 3) uint8 and a validity mask (n, n) of the square at ``left, top`` in ``crs``."""
        import rasterio
        from rasterio.warp import Resampling, reproject

        dst = np.zeros((4, n, n), np.float32)
        reproject(rasterio.band(self.ds, self.bands), dst[:3], dst_transform=_transform(left, top, res),
                  dst_crs=crs, resampling=Resampling.bilinear, dst_nodata=np.nan, init_dest_nodata=True)
        valid = ~np.isnan(dst[:3]).any(axis=0)
        return _to_uint8(dst[:3], valid, self.value_range), valid

    def close(self):
        self.ds.close()


class _Tiles:
    """A pyramid of 256 px (or any square size) XYZ tiles, stitched per region in Web Mercator."""

    zoom: int

    def warp(self, left: float, top: float, res: float, n: int, crs):
        import mercantile
        from pyproj import Transformer
        from rasterio.warp import Resampling, reproject

        tf = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        right, bottom = left + res * n, top - res * n
        xs, ys = np.linspace(left, right, 9), np.linspace(bottom, top, 9)
        lon, lat = tf.transform(*[a.ravel() for a in np.meshgrid(xs, ys)])
        w, s, e, nn = max(min(lon), -180), max(min(lat), -85.05), min(max(lon), 180), min(max(lat), 85.05)
        tiles = list(mercantile.tiles(w, s, e, nn, zooms=[self.zoom]))
        if not tiles:
            return np.zeros((n, n, 3), np.uint8), np.zeros((n, n), bool)
        tx0, ty0 = min(t.x for t in tiles), min(t.y for t in tiles)
        tx1, ty1 = max(t.x for t in tiles), max(t.y for t in tiles)
        size = None
        mosaic = None
        for t in tiles:
            im = self.read(self.zoom, t.x, t.y)
            if im is None:
                continue
            if size is None:
                size = im.shape[0]
                mosaic = np.full((4, (ty1 - ty0 + 1) * size, (tx1 - tx0 + 1) * size), np.nan, np.float32)
            if im.shape[:2] != (size, size):
                raise DataError(f"imagery: tile {self.zoom}/{t.x}/{t.y} is {im.shape[1]}x{im.shape[0]} px, "
                                f"others {size}x{size}")
            r0, c0 = (t.y - ty0) * size, (t.x - tx0) * size
            mosaic[:3, r0:r0 + size, c0:c0 + size] = im.transpose(2, 0, 1)
        if mosaic is None:
            return np.zeros((n, n, 3), np.uint8), np.zeros((n, n), bool)
        ul = mercantile.xy_bounds(mercantile.Tile(tx0, ty0, self.zoom))
        src_res = (ul.right - ul.left) / size
        dst = np.zeros((3, n, n), np.float32)
        reproject(mosaic[:3], dst, src_transform=_transform(ul.left, ul.top, src_res), src_crs=WEB_MERCATOR,
                  src_nodata=np.nan, dst_transform=_transform(left, top, res), dst_crs=crs,
                  resampling=Resampling.bilinear, dst_nodata=np.nan, init_dest_nodata=True)
        valid = ~np.isnan(dst).any(axis=0)
        return _to_uint8(dst, valid, None), valid

    def read(self, z: int, x: int, y: int) -> np.ndarray | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self):
        pass


class _XyzFolder(_Tiles):
    def __init__(self, path: Path, spec: ImagerySpec):
        self.path = path
        zooms = sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
        if not zooms:
            raise DataError(f"imagery: {path} has no zoom folders; expected {{z}}/{{x}}/{{y}}.png tiles")
        self.zoom = spec.zoom if spec.zoom is not None else zooms[-1]
        if self.zoom not in zooms:
            raise DataError(f"imagery: {path} has no zoom {self.zoom}; found {zooms}")

    def read(self, z, x, y):
        for ext in TILE_EXTS:
            p = self.path / str(z) / str(x) / f"{y}{ext}"
            if p.is_file():
                return _decode(p.read_bytes(), p)
        return None


class _MbTiles(_Tiles):
    def __init__(self, path: Path, spec: ImagerySpec):
        self.path = path
        try:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            zooms = [r[0] for r in self.db.execute("SELECT DISTINCT zoom_level FROM tiles ORDER BY zoom_level")]
        except sqlite3.Error as e:
            raise DataError(f"imagery: {path} is not a readable MBTiles file ({e})") from None
        if not zooms:
            raise DataError(f"imagery: {path} holds no tiles")
        self.zoom = spec.zoom if spec.zoom is not None else zooms[-1]
        if self.zoom not in zooms:
            raise DataError(f"imagery: {path} has no zoom {self.zoom}; found {zooms}")

    def read(self, z, x, y):
        row = self.db.execute("SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                              (z, x, (1 << z) - 1 - y)).fetchone()  # MBTiles rows are TMS (south up)
        return None if row is None else _decode(row[0], f"{self.path} tile {z}/{x}/{y}")

    def close(self):
        self.db.close()


def _decode(data: bytes, where) -> np.ndarray:
    try:
        with Image.open(BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32)
    except OSError as e:
        raise DataError(f"imagery: cannot decode tile {where} ({e})") from None


def _transform(left: float, top: float, res: float):
    from rasterio.transform import Affine

    return Affine(res, 0.0, left, 0.0, -res, top)


def _to_uint8(bands: np.ndarray, valid: np.ndarray, value_range) -> np.ndarray:
    """(3, n, n) float -> (n, n, 3) uint8; invalid pixels black; ``value_range`` stretched to 0-255."""
    x = np.where(valid, bands, 0.0)
    if value_range is not None:
        lo, hi = value_range
        x = (x - lo) / (hi - lo if hi != lo else 1.0) * 255.0
        x = np.where(valid, x, 0.0)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(1, 2, 0)

