"""Build a SynthCity city on disk (urbanlib canonical format), cached by content address."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from urbanlib.cache import atomic_write, cache_dir

from ...scales import Scale, get_scale
from .. import canonical, load
from ..dataset import INDICATORS, UrbanDataset, poi_columns
from .captions import caption_scenes
from .config import (
    DEFAULT_PARAMS,
    GENERATOR_VERSION,
    ZONES,
    GeneratorParams,
    cache_key,
    list_profiles,
    load_profile,
)
from .indicators import make_indicators
from .landuse import generate_layout
from .render_satellite import render_tile
from .render_street import render_street, street_view_count

PROFILES = list_profiles()


def default_cache_dir() -> Path:
    """``$URBANLIB_CACHE/synthcity`` if set, else ``.cache/synthcity`` under the repository root."""
    return cache_dir("synthcity")


def city_dir(profile: str, scale: str | Scale = "default", seed: int = 0, cache_dir: str | Path | None = None,
             params: GeneratorParams = DEFAULT_PARAMS) -> Path:
    """Where :func:`build` puts (or finds) a city: ``<cache>/<profile>-<scale>-s<seed>-<hash>``."""
    sc = get_scale(scale)
    key = cache_key(load_profile(profile), sc.data_dict(), seed, params)
    return Path(cache_dir or default_cache_dir()) / f"{profile}-{sc.name}-s{seed}-{key}"


def build(profile: str, scale: str | Scale = "default", seed: int = 0, cache_dir: str | Path | None = None,
          params: GeneratorParams = DEFAULT_PARAMS, force: bool = False, progress: bool = True) -> Path:
    """Generate one city (or reuse the cached copy) and return its folder in urbanlib format.

    Args:
        profile: a name from :data:`PROFILES` (e.g. ``"synth-ring"``).
        scale: a :class:`~urbanlib.scales.Scale` or preset name (grid size, tile/street pixels).
        seed: random seed; equal seeds give byte-identical output.
        cache_dir: cache root (default :func:`default_cache_dir`).
        params: frozen generator parameters (part of the cache key).
        force: rebuild even if a cached copy exists.
        progress: show tqdm bars.

    Returns:
        The city folder (meta.json, regions.csv, images.csv, captions.jsonl, scenes.jsonl, images/).
    """
    sc = get_scale(scale)
    out = city_dir(profile, sc, seed, cache_dir, params)
    if (out / "meta.json").is_file() and not force:
        return out
    t0 = time.perf_counter()
    with atomic_write(out) as tmp:
        ds, scenes = generate(profile, sc, seed, tmp, params, progress)
        with open(tmp / "scenes.jsonl", "w", encoding="utf-8") as f:
            for s in scenes:
                f.write(json.dumps(s, separators=(",", ":")) + "\n")
        ds.meta["generation_seconds"] = round(time.perf_counter() - t0, 2)
        canonical.write(ds, tmp)
        if (out / "meta.json").is_file() and not force:  # another process finished the same city first:
            shutil.rmtree(tmp)  # keep its copy (with nothing at tmp, atomic_write replaces nothing)
    return out


def load_city(profile: str, scale: str | Scale = "default", seed: int = 0, cache_dir: str | Path | None = None,
              params: GeneratorParams = DEFAULT_PARAMS, progress: bool = True) -> UrbanDataset:
    """Build (or reuse) a city and load it with :func:`urbanlib.data.load`."""
    return load(build(profile, scale, seed, cache_dir, params, progress=progress))


def read_scenes(city_path: str | Path) -> list[dict]:
    """The scene descriptions of a built city (one dict per image: image, region_id, kind, size, objects)."""
    path = Path(city_path) / "scenes.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; build the city with synthcity.build first")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def generate(profile_name: str, sc: Scale, seed: int, out: Path, params: GeneratorParams = DEFAULT_PARAMS,
             progress: bool = True) -> tuple[UrbanDataset, list[dict]]:
    """Generate a city into ``out`` (images written there); returns the dataset and scene list."""
    profile = load_profile(profile_name)
    n = sc.grid
    layout = generate_layout(profile, n, seed, params)
    (out / "images" / "satellite").mkdir(parents=True, exist_ok=True)
    (out / "images" / "street").mkdir(parents=True, exist_ok=True)
    d = profile.get("cell_deg", 0.01)
    rows, images, scenes = [], [], []
    zone = layout.zone
    for r, c in tqdm([(r, c) for r in range(n) for c in range(n)], desc=f"render {profile_name}",
                     disable=not progress, leave=False):
        rid = f"{profile_name}_r{r:02d}c{c:02d}"
        lon0, lat0 = profile["origin_lon"] + c * d, profile["origin_lat"] - r * d
        row = {"region_id": rid, "city": profile_name, "row": r, "col": c, "lon": round(lon0 + d / 2, 6),
               "lat": round(lat0 - d / 2, 6), "zone": zone[r, c]}
        row.update({f"latent_{z}": round(float(layout.fractions[r, c, k]), 4) for k, z in enumerate(ZONES)})
        row["latent_urban"] = round(float(layout.urban[r, c]), 4)
        row["latent_road_level"] = int(layout.road_level[r, c])
        rows.append(row)
        img, objs = render_tile(layout, r, c, sc.tile_px, profile, np.random.default_rng([seed, 2, r, c]))
        path = f"images/satellite/{rid}.png"
        img.save(out / path)
        images.append({"region_id": rid, "kind": "satellite", "path": path, "lon": np.nan, "lat": np.nan})
        scenes.append({"image": path, "region_id": rid, "kind": "satellite", "size": sc.tile_px, "objects": objs})
        k = street_view_count(layout, r, c, sc.max_street_views, params.street_view_rate,
                              np.random.default_rng([seed, 3, r, c]), params.street_views_min)
        for i in range(k):
            rng = np.random.default_rng([seed, 4, r, c, i])
            img, objs = render_street(layout, r, c, sc.street_px, profile, rng)
            path = f"images/street/{rid}_{i}.png"
            img.save(out / path)
            u, v = rng.uniform(0.02, 0.98, size=2)  # a point inside the cell
            images.append({"region_id": rid, "kind": "street", "path": path, "lon": round(lon0 + u * d, 6),
                           "lat": round(lat0 - v * d, 6)})
            scenes.append({"image": path, "region_id": rid, "kind": "street", "size": sc.street_px, "objects": objs})
    regions = pd.DataFrame(rows)
    ind = make_indicators(layout, profile, params, seed)
    for name, grid in ind.items():
        regions[name] = grid[regions["row"], regions["col"]]
    first = ["region_id", "city", "row", "col", "lon", "lat"]
    poi = sorted(poi_columns(regions))
    rest = [c for c in regions if c not in first + INDICATORS + poi]
    regions = regions[first + INDICATORS + poi + rest]
    captions = caption_scenes(scenes, params, seed, progress=progress)
    meta = {"generator": "synthcity", "generator_version": GENERATOR_VERSION, "profile": profile,
            "scale": sc.data_dict(), "seed": int(seed), "params": params.to_dict(),
            "note": "latent_* columns and zone are hidden ground truth; never use them as model input"}
    ds = UrbanDataset(regions=regions, images=pd.DataFrame(images), captions=captions, indicators=list(INDICATORS),
                      root=out, meta=meta)
    return ds, scenes
