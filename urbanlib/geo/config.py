"""What ``python -m urbanlib.city build`` reads: one config file describing a city's raw inputs.

The file is YAML or JSON; every key maps onto a field of the dataclasses below and an unknown key
is an error (a typo such as ``cellsize`` must not silently fall back to a default). Relative paths
are resolved against the config file's folder.

Example (YAML)::

    city: mytown
    out: built/mytown                 # where the canonical dataset is written
    regions: {kind: grid, bbox: [116.30, 39.85, 116.45, 39.95], cell_m: 500}
    imagery: {path: mosaic.tif, pixel_m: 10}
    indicators:
      - {name: population, path: worldpop.tif, rule: sum}
      - {name: night_light, path: viirs.tif, rule: mean}
    pois: {path: pois.csv, category_column: category}
    street_views: {folder: street, points: street/points.csv}
    captions: captions.jsonl          # optional: captions made earlier, keyed by the built region ids
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from ..data.report import DataError

REGION_KINDS = ("grid", "xyz", "h3", "polygons")
IMAGERY_KINDS = ("auto", "geotiff", "xyz", "mbtiles")
RULES = ("sum", "mean")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class RegionsSpec:
    """How the city is cut into regions."""

    kind: str = "grid"  # grid (metric cells), xyz (Web-Mercator tiles), h3 (hexagons) or polygons (a file)
    bbox: list[float] | None = None  # [min_x, min_y, max_x, max_y] of the area, in bbox_crs
    bbox_crs: str = "EPSG:4326"  # CRS of bbox (lon/lat by default)
    area: str | None = None  # GeoJSON/GeoPackage polygon(s) of the area, instead of bbox
    cell_m: float | None = None  # grid: cell side in metres
    crs: str | None = None  # grid: metric CRS the cells are square in; default bbox_crs if metric, else local UTM
    zoom: int | None = None  # xyz: tile zoom level
    resolution: int | None = None  # h3: H3 resolution (0-15; 8 is about 0.74 km^2 a cell)
    path: str | None = None  # polygons: GeoJSON/GeoPackage of the regions themselves
    id_column: str | None = None  # polygons: column holding region ids (default: row number)
    layer: str | None = None  # polygons/area: layer of a GeoPackage


@dataclass
class ImagerySpec:
    """The satellite imagery each region's tile is cut from."""

    path: str = ""  # a GeoTIFF mosaic, a folder of XYZ tiles ({z}/{x}/{y}.png|jpg) or an .mbtiles file
    kind: str = "auto"  # auto (from the path), geotiff, xyz or mbtiles
    pixel_m: float | None = None  # ground size of one output pixel in metres (of the regions' metric CRS)
    tile_px: int | None = None  # or a fixed tile size in pixels (the region's square is resampled to it)
    bands: list[int] = field(default_factory=lambda: [1, 2, 3])  # GeoTIFF bands used as R, G, B (1-based)
    value_range: list[float] | None = None  # [low, high] stretched to 0-255 for non-uint8 GeoTIFFs
    zoom: int | None = None  # xyz/mbtiles: zoom level to read (default: the only or highest one present)
    min_coverage: float = 0.5  # a tile whose share of valid pixels is below this is not written (counted)


@dataclass
class IndicatorSpec:
    """One indicator raster and how it is aggregated over a region."""

    name: str = ""  # column name in regions.csv (e.g. population, carbon, night_light, gdp)
    path: str = ""  # the raster (GeoTIFF or anything GDAL reads), in its own CRS
    rule: str = ""  # sum (counts and totals: people, tonnes) or mean (densities, radiances)
    band: int = 1  # raster band (1-based)
    min_coverage: float = 0.5  # regions with a smaller share of valid raster under them get NaN (counted)


@dataclass
class PoiSpec:
    """Points of interest counted per region and category."""

    path: str = ""  # CSV (lon/lat columns), GeoParquet or GeoJSON of points
    category_column: str = "category"  # column with each point's category
    lon_column: str = "lon"  # CSV: x column (longitude in crs)
    lat_column: str = "lat"  # CSV: y column (latitude in crs)
    crs: str = "EPSG:4326"  # CSV: CRS of the coordinates; files with their own CRS use theirs
    categories: list[str] | None = None  # the declared categories; other values are counted and skipped


@dataclass
class StreetSpec:
    """Street-view photos with their positions, assigned to the region they fall in."""

    folder: str = ""  # folder of images
    points: str = ""  # CSV with one row per photo: path (relative to folder), lon, lat
    path_column: str = "path"  # column of the image path
    lon_column: str = "lon"  # x column
    lat_column: str = "lat"  # y column
    crs: str = "EPSG:4326"  # CRS of the coordinates


@dataclass
class CityConfig:
    """A whole city build: regions, then optional imagery, indicators, POIs and street views."""

    city: str = ""  # city name (the ``city`` column; also the region id prefix)
    out: str = ""  # output folder (relative to the config file)
    regions: RegionsSpec = field(default_factory=RegionsSpec)  # how regions are drawn
    imagery: ImagerySpec | None = None  # satellite tiles (optional: indicator-only datasets load too)
    indicators: list[IndicatorSpec] = field(default_factory=list)  # indicator rasters
    pois: PoiSpec | None = None  # POI points: poi_count and poi_cat_* columns
    street_views: StreetSpec | None = None  # street-view photos
    captions: str | None = None  # JSONL of captions already made for this city (region_id, text, style, source, image)
    base_dir: str = ""  # folder relative paths are resolved against (set by load_config)

    def resolve(self, p: str | None) -> Path | None:
        """An input path resolved against :attr:`base_dir` (absolute paths unchanged)."""
        if p is None or p == "":
            return None
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(self.base_dir or ".") / q

    def check(self, source: str = "config") -> CityConfig:
        """Raise :class:`DataError` naming the field if a value is out of range or inconsistent."""
        if not self.city or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", self.city):
            raise DataError(f"{source}: city must be a non-empty name of letters, digits, '_', '-' or '.'; "
                            f"got {self.city!r}")
        r = self.regions
        if r.kind not in REGION_KINDS:
            raise DataError(f"{source}: regions.kind {r.kind!r} unknown; choose one of {REGION_KINDS}")
        if r.kind in ("grid", "xyz", "h3") and r.bbox is None and r.area is None:
            raise DataError(f"{source}: regions.kind {r.kind!r} needs regions.bbox or regions.area")
        if r.bbox is not None and (len(r.bbox) != 4 or r.bbox[0] >= r.bbox[2] or r.bbox[1] >= r.bbox[3]):
            raise DataError(f"{source}: regions.bbox must be [min_x, min_y, max_x, max_y] with min < max; got {r.bbox}")
        need = {"grid": "cell_m", "xyz": "zoom", "h3": "resolution", "polygons": "path"}[r.kind]
        if getattr(r, need) is None:
            raise DataError(f"{source}: regions.kind {r.kind!r} needs regions.{need}")
        if r.kind == "grid" and not r.cell_m > 0:
            raise DataError(f"{source}: regions.cell_m must be > 0; got {r.cell_m}")
        if r.kind == "h3" and not 0 <= r.resolution <= 15:
            raise DataError(f"{source}: regions.resolution must be in 0..15; got {r.resolution}")
        if r.kind == "xyz" and not 0 <= r.zoom <= 24:
            raise DataError(f"{source}: regions.zoom must be in 0..24; got {r.zoom}")
        im = self.imagery
        if im is not None:
            if not im.path:
                raise DataError(f"{source}: imagery.path is required")
            if im.kind not in IMAGERY_KINDS:
                raise DataError(f"{source}: imagery.kind {im.kind!r} unknown; choose one of {IMAGERY_KINDS}")
            if (im.pixel_m is None) == (im.tile_px is None):
                raise DataError(f"{source}: imagery needs exactly one of pixel_m and tile_px")
            if len(im.bands) != 3:
                raise DataError(f"{source}: imagery.bands must name 3 bands (R, G, B); got {im.bands}")
        seen = set()
        for i, ind in enumerate(self.indicators):
            where = f"{source}: indicators[{i}]"
            if not _NAME.match(ind.name or ""):
                raise DataError(f"{where}.name must be lower_snake_case; got {ind.name!r}")
            if ind.name in seen or ind.name == "poi_count" and self.pois is not None:
                raise DataError(f"{where}.name {ind.name!r} is defined twice (poi_count comes from pois)")
            seen.add(ind.name)
            if ind.rule not in RULES:
                raise DataError(f"{where} ({ind.name}): rule must be one of {RULES} (sum for counts and "
                                f"totals, mean for densities and radiances); got {ind.rule!r}")
            if not ind.path:
                raise DataError(f"{where} ({ind.name}): path is required")
        for name, spec, req in (("pois", self.pois, ("path",)), ("street_views", self.street_views,
                                                                 ("folder", "points"))):
            for k in req if spec is not None else ():
                if not getattr(spec, k):
                    raise DataError(f"{source}: {name}.{k} is required")
        return self


def from_dict(d: dict, source: str = "config", base_dir: str | Path = ".") -> CityConfig:
    """Build a checked :class:`CityConfig` from plain data; unknown keys raise :class:`DataError`."""
    cfg = _build(CityConfig, d, source)
    cfg.base_dir = str(base_dir)
    return cfg.check(source)


def load_config(path: str | Path) -> CityConfig:
    """Read a YAML (``.yml``/``.yaml``) or JSON config file; paths in it are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        d = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot parse ({e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a mapping at the top level, got {type(d).__name__}")
    return from_dict(d, source=str(path), base_dir=path.resolve().parent)


def to_dict(cfg: CityConfig) -> dict:
    """The config as plain data (what meta.json records), without ``base_dir``."""
    d = dataclasses.asdict(cfg)
    d.pop("base_dir", None)
    return d


def _build(cls, d: Any, where: str):
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a mapping for {cls.__name__}, got {d!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "base_dir"]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown} in {cls.__name__}; known: {names}")
    kwargs = {}
    for k, v in d.items():
        kwargs[k] = _value(hints[k], v, f"{where}: {k}")
    return cls(**kwargs)


def _value(tp, v, where: str):
    spec = {RegionsSpec, ImagerySpec, IndicatorSpec, PoiSpec, StreetSpec}
    args = [a for a in get_args(tp) if a is not type(None)]
    if v is None:
        return None
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        if not isinstance(v, list):
            raise DataError(f"{where}: expected a list, got {v!r}")
        return [_value(item, x, f"{where}[{i}]") for i, x in enumerate(v)]
    if args and len(args) == 1 and tp not in spec:  # X | None
        return _value(args[0], v, where)
    if tp in spec:
        return _build(tp, v, where)
    if tp is float and isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if tp in (int, str) and isinstance(v, tp) and not isinstance(v, bool):
        return v
    raise DataError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {v!r}")
