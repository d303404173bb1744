"""Raw geodata for a worked example, made from a SynthCity city (no downloads).

:func:`write_example_inputs` turns a SynthCity city into the files a user would bring: an RGB
GeoTIFF mosaic and two count rasters in UTM zone 50N, a density raster and a count raster in
EPSG:4326, a POI CSV in lon/lat, and street-view photos with a points table; plus the
``city.yml`` that builds them with ``python -m urbanlib.city build``. The city is placed at
(440 000 m E, 4 420 000 m N) in UTM 50N with 500 m cells, so the built grid coincides with the
generator's and every built value can be compared with the generator's truth:

* ``population`` and ``gdp`` (UTM count rasters, each cell's value split evenly over its pixels)
  sum back exactly;
* ``night_light`` (EPSG:4326 density, each pixel the value of the cell under its centre) and
  ``carbon`` (EPSG:4326 count) come back approximately: 4326 pixels straddle cell edges;
* POI counts per category come back exactly (points drawn inside their cell), except two points of
  a category the config does not declare, which the build report counts;
* the generator's simulated captions come along as ``captions.jsonl`` (a stand-in for captions
  made with a real captioner after a first build).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from ..data import load
from ..data.synthcity import build

UTM = "EPSG:32650"
ORIGIN = (440000.0, 4420000.0)  # north-west corner of the grid, UTM 50N metres (near Beijing)
CELL_M = 500.0
NODATA = -1.0


def write_example_inputs(folder: str | Path, profile: str = "synth-ring", scale: str = "smoke", seed: int = 0,
                         captions: bool = True, progress: bool = False) -> Path:
    """Write the example's raw inputs and ``city.yml`` into ``folder``; returns the config path.

    With ``captions`` the generator's simulated captions are carried along (``captions.jsonl``,
    keyed by the ids the build gives), so the pretraining and benchmark pages run on the result.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = build(profile, scale=scale, seed=seed, progress=progress)
    ds = load(src)
    n = int(ds.regions["row"].max()) + 1
    px = _write_rasters(folder, ds, n)
    cats = _write_pois(folder, ds.regions, seed)
    _write_street_views(folder, ds, src)
    if captions:
        _write_captions(folder, ds)
    else:  # a folder written before with captions keeps no stale copy
        (folder / "captions.jsonl").unlink(missing_ok=True)
    x0, y0 = ORIGIN
    config = {
        "city": "example-city",
        "out": "built",
        "regions": {"kind": "grid", "bbox": [x0, y0 - n * CELL_M, x0 + n * CELL_M, y0], "bbox_crs": UTM,
                    "cell_m": CELL_M},
        "imagery": {"path": "mosaic.tif", "pixel_m": CELL_M / px},
        "indicators": [{"name": "population", "path": "population.tif", "rule": "sum"},
                       {"name": "gdp", "path": "gdp.tif", "rule": "sum"},
                       {"name": "carbon", "path": "carbon.tif", "rule": "sum"},
                       {"name": "night_light", "path": "night_light.tif", "rule": "mean"}],
        "pois": {"path": "pois.csv", "category_column": "category", "categories": cats},
        "street_views": {"folder": "street", "points": "street/points.csv"},
        "captions": "captions.jsonl" if captions else None,
    }
    path = folder / "city.yml"
    path.write_text(f"# raw inputs made from SynthCity {profile} ({scale}, seed {seed}) by urbanlib.geo.example\n"
                    + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _write_raster(path: Path, arr: np.ndarray, transform, crs: str, nodata=NODATA, dtype: str = "float32") -> None:
    """A (bands,) H x W array as a deflated GeoTIFF; NaN becomes ``nodata`` (uint8 arrays are written as they are)."""
    import rasterio

    arr = arr if arr.ndim == 3 else arr[None]
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=dtype, crs=crs, transform=transform, nodata=nodata, compress="deflate") as out:
        out.write(np.where(np.isnan(arr), nodata, arr).astype(dtype) if dtype != "uint8" else arr)


def _write_rasters(folder: Path, ds, n: int) -> int:
    """The two UTM count rasters, the RGB mosaic and the two EPSG:4326 rasters; returns the tile side in pixels."""
    from pyproj import Transformer
    from rasterio.transform import Affine

    reg = ds.regions
    x0, y0 = ORIGIN
    grid = {name: _grid(reg, name, n) for name in ("population", "gdp", "carbon", "night_light")}
    # UTM count rasters: each cell's total split evenly over k x k pixels
    for name, k in (("population", 4), ("gdp", 2)):
        _write_raster(folder / f"{name}.tif", np.kron(grid[name], np.ones((k, k))) / (k * k),
                      Affine(CELL_M / k, 0, x0, 0, -CELL_M / k, y0), UTM)
    # the RGB mosaic: the satellite tiles side by side
    sat = ds.satellite_paths()
    px = Image.open(sat.iloc[0]).size[0]
    mosaic = np.zeros((n * px, n * px, 3), np.uint8)
    for rid, r, c in zip(reg["region_id"], reg["row"], reg["col"], strict=True):
        mosaic[r * px:(r + 1) * px, c * px:(c + 1) * px] = np.asarray(Image.open(sat[rid]).convert("RGB"))
    _write_raster(folder / "mosaic.tif", mosaic.transpose(2, 0, 1), Affine(CELL_M / px, 0, x0, 0, -CELL_M / px, y0),
                  UTM, nodata=None, dtype="uint8")
    # EPSG:4326 rasters over the grid's lon/lat bounds, 0.0002 degree pixels (about 17 m x 22 m here)
    to_ll = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    xs, ys = np.array([x0, x0 + n * CELL_M]), np.array([y0 - n * CELL_M, y0])
    lon, lat = to_ll.transform(*np.meshgrid(xs, ys))
    d = 0.0002
    west, north = np.floor(lon.min() / d) * d, np.ceil(lat.max() / d) * d
    w, h = int(np.ceil((lon.max() - west) / d)), int(np.ceil((north - lat.min()) / d))
    plon, plat = np.meshgrid(west + (np.arange(w) + 0.5) * d, north - (np.arange(h) + 0.5) * d)
    ux, uy = to_utm.transform(plon, plat)
    col, row = np.floor((ux - x0) / CELL_M).astype(int), np.floor((y0 - uy) / CELL_M).astype(int)
    inside = (row >= 0) & (row < n) & (col >= 0) & (col < n)
    r_, c_ = np.clip(row, 0, n - 1), np.clip(col, 0, n - 1)
    light = np.where(inside, grid["night_light"][r_, c_], np.nan)
    ll_tf = Affine(d, 0, west, 0, -d, north)
    _write_raster(folder / "night_light.tif", light, ll_tf, "EPSG:4326")
    share = np.zeros((n, n))
    np.add.at(share, (r_[inside], c_[inside]), 1)  # pixels whose centre lies in each cell
    carbon = np.where(inside, grid["carbon"][r_, c_] / np.maximum(share[r_, c_], 1), np.nan)
    _write_raster(folder / "carbon.tif", carbon, ll_tf, "EPSG:4326")
    return px


def _to_lonlat(x, y) -> tuple[np.ndarray, np.ndarray]:
    """UTM 50N metres -> (lon, lat), rounded to 7 decimals (about 1 cm)."""
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(np.asarray(x), np.asarray(y))
    return np.round(lon, 7), np.round(lat, 7)


def _write_pois(folder: Path, reg: pd.DataFrame, seed: int) -> list[str]:
    """``pois.csv``: each region's per-category counts as points inside its cell, plus two of an undeclared category.

    Returns the declared categories.
    """
    x0, y0 = ORIGIN
    rng = np.random.default_rng(seed)
    cats = sorted(c[len("poi_cat_"):] for c in reg if c.startswith("poi_cat_"))
    rows = []
    for _, g in reg.iterrows():
        for cat in cats:
            for _ in range(int(g[f"poi_cat_{cat}"])):
                u, v = rng.uniform(0.01, 0.99, size=2)
                rows.append((x0 + (g["col"] + u) * CELL_M, y0 - (g["row"] + v) * CELL_M, cat))
    rows += [(x0 + 0.5 * CELL_M, y0 - 0.5 * CELL_M, "atm")] * 2
    lon, lat = _to_lonlat([r[0] for r in rows], [r[1] for r in rows])
    pd.DataFrame({"lon": lon, "lat": lat, "category": [r[2] for r in rows]}).to_csv(folder / "pois.csv", index=False)
    return cats


def _write_street_views(folder: Path, ds, src: Path) -> None:
    """``street/``: the generator's photos, and ``points.csv`` with their SynthCity positions mapped into the UTM cells."""
    x0, y0 = ORIGIN
    (folder / "street").mkdir(exist_ok=True)
    cell_deg = ds.meta["profile"].get("cell_deg", 0.01)
    lon0, lat0 = ds.meta["profile"]["origin_lon"], ds.meta["profile"]["origin_lat"]
    st = ds.images[ds.images["kind"] == "street"]
    names, sx, sy = [], [], []
    for p, lo, la in zip(st["path"], st["lon"], st["lat"], strict=True):
        shutil.copyfile(src / p, folder / "street" / Path(p).name)
        names.append(Path(p).name)
        sx.append(x0 + (lo - lon0) / cell_deg * CELL_M)
        sy.append(y0 - (lat0 - la) / cell_deg * CELL_M)
    lon, lat = _to_lonlat(sx, sy)
    pd.DataFrame({"path": names, "lon": lon, "lat": lat}).to_csv(folder / "street" / "points.csv", index=False)


def _write_captions(folder: Path, ds) -> None:
    """``captions.jsonl``: the generator's captions, keyed by the ids and image paths the build will give them."""
    reg = ds.regions
    built = {rid: f"example-city_r{r:03d}c{c:03d}" for rid, r, c in zip(reg["region_id"], reg["row"], reg["col"],
                                                                        strict=True)}
    caps = ds.captions[["region_id", "image", "source", "style", "text"]].copy()
    caps["image"] = [im.replace(rid, built[rid]) for im, rid in zip(caps["image"], caps["region_id"], strict=True)]
    caps["region_id"] = caps["region_id"].map(built)
    caps.to_json(folder / "captions.jsonl", orient="records", lines=True, force_ascii=False)


def _grid(reg: pd.DataFrame, name: str, n: int) -> np.ndarray:
    g = np.full((n, n), np.nan)
    g[reg["row"].to_numpy(int), reg["col"].to_numpy(int)] = reg[name].to_numpy(float)
    return g
