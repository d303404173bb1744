"""build_city on inputs the tests write themselves: expected aggregates are computed by hand.

Rasters: a count raster in UTM zone 50N (EPSG:32650) and a density raster in EPSG:4326, each with
known pixel values, a nodata pixel and a region that the raster only partly covers. The expected
sum of a region is the sum of pixel value x (share of the pixel inside the region), with the shares
worked out from interval overlaps below, independently of exactextract.
"""

from __future__ import annotations

import json
import sqlite3
from io import BytesIO

import numpy as np
import pytest

pytest.importorskip("rasterio")
pytest.importorskip("exactextract")
import geopandas as gpd  # noqa: E402
import rasterio  # noqa: E402
import shapely  # noqa: E402
from PIL import Image  # noqa: E402
from rasterio.transform import Affine  # noqa: E402

from urbanlib.data import DataError, load  # noqa: E402
from urbanlib.geo import build_city, from_dict, load_config  # noqa: E402

UTM = "EPSG:32650"
X0, Y0 = 440000.0, 4420000.0  # UTM 50N, near Beijing
NODATA = -9999.0


def from_origin(west, north, xres, yres):
    return Affine(xres, 0.0, west, 0.0, -yres, north)


def write_tif(path, values, transform, crs, nodata=None, dtype="float32"):
    values = np.asarray(values)
    if values.ndim == 2:
        values = values[None]
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1], count=values.shape[0],
                       dtype=dtype, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(values.astype(dtype))
    return path


def overlap(a0, a1, n):
    """Share of each unit interval [i, i+1), i < n, inside [a0, a1)."""
    i = np.arange(n)
    return np.clip(np.minimum(a1, i + 1) - np.maximum(a0, i), 0, 1)


def by_hand(values, valid, r0, r1, c0, c1):
    """Sum, mean and coverage of a rectangle given in pixel units (rows r0..r1, cols c0..c1)."""
    h, w = values.shape
    wr, wc = overlap(r0, r1, h), overlap(c0, c1, w)
    weight = np.outer(wr, wc) * valid
    s = float((np.where(valid, values, 0) * weight).sum())
    return s, s / weight.sum() if weight.sum() else np.nan, weight.sum() / ((r1 - r0) * (c1 - c0))


@pytest.fixture
def utm_inputs(tmp_path):
    """A 100 m count raster 7 x 6 px (700 m x 600 m) with one nodata pixel, and an RGB mosaic at 10 m."""
    pop = (np.arange(6)[:, None] * 10 + np.arange(7)[None, :] + 1).astype(float)  # 6 rows x 7 cols
    pop[0, 0] = NODATA
    write_tif(tmp_path / "pop.tif", pop, from_origin(X0, Y0, 100, 100), UTM, nodata=NODATA)
    rgb = np.random.default_rng(0).integers(0, 256, size=(3, 50, 75))
    write_tif(tmp_path / "mosaic.tif", rgb, from_origin(X0, Y0, 10, 10), UTM, dtype="uint8")
    return tmp_path, pop, rgb


def grid_config(tmp_path, **extra):
    d = {"city": "testville", "out": str(tmp_path / "built"),
         "regions": {"kind": "grid", "bbox": [X0, Y0 - 500, X0 + 750, Y0], "bbox_crs": UTM, "cell_m": 250},
         "indicators": [{"name": "population", "path": "pop.tif", "rule": "sum"}]}
    d.update(extra)
    return from_dict(d, base_dir=tmp_path)


def test_grid_sums_means_and_coverage_by_hand(utm_inputs):
    tmp_path, pop, _ = utm_inputs
    cfg = grid_config(tmp_path, indicators=[{"name": "population", "path": "pop.tif", "rule": "sum"},
                                            {"name": "pop_density", "path": "pop.tif", "rule": "mean",
                                             "min_coverage": 0.0}])
    out = build_city(cfg)
    ds = load(out)
    reg = ds.regions.set_index("region_id")
    assert len(reg) == 6  # 2 rows x 3 cols of 250 m
    valid = pop != NODATA
    for r in range(2):
        for c in range(3):
            s, m, cov = by_hand(pop, valid, 2.5 * r, 2.5 * r + 2.5, 2.5 * c, 2.5 * c + 2.5)
            row = reg.loc[f"testville_r{r:03d}c{c:03d}"]
            assert row["population_coverage"] == pytest.approx(cov, abs=1e-6)
            assert row["pop_density"] == pytest.approx(m, rel=1e-6)
            if cov >= 0.5:
                assert row["population"] == pytest.approx(s, rel=1e-6)
    # the nodata pixel: region (0, 0) covers 6.25 px of which one is nodata
    assert reg.loc["testville_r000c000", "population_coverage"] == pytest.approx(5.25 / 6.25)
    # column 2 spans 500-750 m; the raster ends at 700 m: coverage 2/2.5
    assert reg.loc["testville_r001c002", "population_coverage"] == pytest.approx(0.8)
    assert set(ds.indicators) == {"population", "pop_density"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["indicator_rules"] == {"population": "sum", "pop_density": "mean"}
    assert (out / "regions.geojson").is_file() and (out / "build_report.csv").is_file()


def test_min_coverage_sets_nan_and_counts(utm_inputs):
    tmp_path, pop, _ = utm_inputs
    cfg = grid_config(tmp_path, indicators=[{"name": "population", "path": "pop.tif", "rule": "sum",
                                             "min_coverage": 0.9}])
    out = build_city(cfg)
    reg = load(out).regions.set_index("region_id")
    assert np.isnan(reg.loc["testville_r000c002", "population"])  # coverage 0.8
    assert np.isnan(reg.loc["testville_r000c000", "population"])  # coverage 0.84 (nodata pixel)
    assert not np.isnan(reg.loc["testville_r001c001", "population"])
    report = {e["kind"]: e["count"] for e in json.loads((out / "meta.json").read_text())["build_report"]}
    assert report["low_coverage_population"] == 3


def test_region_sums_add_up_to_the_raster_total_across_crs(tmp_path):
    """A count raster in EPSG:4326 under a UTM grid: every pixel is split between regions, none lost."""
    vals = np.random.default_rng(1).uniform(0, 100, size=(20, 30))
    write_tif(tmp_path / "pop4326.tif", vals, from_origin(116.30, 39.92, 0.001, 0.001), "EPSG:4326")
    write_tif(tmp_path / "const4326.tif", np.full((20, 30), 7.5), from_origin(116.30, 39.92, 0.001, 0.001),
              "EPSG:4326")
    cfg = from_dict({"city": "ll", "out": "built",
                     "regions": {"kind": "grid", "bbox": [116.295, 39.895, 116.335, 39.925], "cell_m": 400},
                     "indicators": [{"name": "population", "path": "pop4326.tif", "rule": "sum", "min_coverage": 0},
                                    {"name": "night_light", "path": "const4326.tif", "rule": "mean"}]},
                    base_dir=tmp_path)
    ds = load(build_city(cfg))
    assert ds.regions["population"].sum() == pytest.approx(vals.sum(), rel=1e-6)
    lit = ds.regions["night_light"].dropna()
    assert len(lit) > 0 and np.allclose(lit, 7.5)
    assert json.loads((tmp_path / "built" / "meta.json").read_text())["metric_crs"] == "EPSG:32650"


def test_user_polygons_on_a_4326_density_raster(tmp_path):
    """Mean of a density raster over polygons at half-pixel boundaries; nodata-only and outside regions."""
    d = 0.01
    vals = np.arange(36, dtype=float).reshape(6, 6)
    vals[4:, 4:] = NODATA
    write_tif(tmp_path / "light.tif", vals, from_origin(116.0, 40.0, d, d), "EPSG:4326", nodata=NODATA)
    polys = {"a": shapely.box(116.005, 39.98, 116.02, 40.0),  # cols 0.5-2, rows 0-2
             "b": shapely.box(116.035, 39.95, 116.05, 39.97),  # cols 3.5-5, rows 3-5: (4, 4) is nodata
             "nod": shapely.box(116.04, 39.94, 116.06, 39.96),  # only nodata pixels
             "out": shapely.box(117.0, 41.0, 117.01, 41.01)}  # outside the raster
    gpd.GeoDataFrame({"name": list(polys)}, geometry=list(polys.values()), crs="EPSG:4326").to_file(
        tmp_path / "regions.geojson", driver="GeoJSON")
    cfg = from_dict({"city": "poly", "out": "built",
                     "regions": {"kind": "polygons", "path": "regions.geojson", "id_column": "name"},
                     "indicators": [{"name": "night_light", "path": "light.tif", "rule": "mean"},
                                    {"name": "light_total", "path": "light.tif", "rule": "sum", "min_coverage": 0}]},
                    base_dir=tmp_path)
    out = build_city(cfg)
    reg = load(out).regions.set_index("region_id")
    valid = vals != NODATA
    s, m, cov = by_hand(vals, valid, 0, 2, 0.5, 2)
    assert reg.loc["poly_a", "night_light"] == pytest.approx(m, rel=1e-6)
    assert reg.loc["poly_a", "light_total"] == pytest.approx(s, rel=1e-6)
    s, m, cov = by_hand(vals, valid, 3, 5, 3.5, 5)
    assert reg.loc["poly_b", "night_light"] == pytest.approx(m, rel=1e-6)
    assert reg.loc["poly_b", "night_light_coverage"] == pytest.approx(cov, abs=1e-6)
    assert cov == pytest.approx(2 / 3)
    # nodata only, and outside the raster: no valid pixel and no image, so dropped and counted
    assert "poly_nod" not in reg.index and "poly_out" not in reg.index
    report = {e["kind"]: e["count"] for e in json.loads((out / "meta.json").read_text())["build_report"]}
    assert report["no_valid_night_light"] == 2 and report["empty_region"] == 2


def test_imagery_cut_from_a_utm_mosaic_is_the_source_pixels(utm_inputs):
    tmp_path, _, rgb = utm_inputs
    cfg = grid_config(tmp_path, imagery={"path": "mosaic.tif", "pixel_m": 10})
    ds = load(build_city(cfg))
    sat = ds.satellite_paths()
    assert len(sat) == 6
    for r in range(2):
        for c in range(3):
            tile = np.asarray(Image.open(sat[f"testville_r{r:03d}c{c:03d}"]))
            assert tile.shape == (25, 25, 3)
            want = rgb[:, r * 25:(r + 1) * 25, c * 25:(c + 1) * 25].transpose(1, 2, 0)
            assert np.abs(tile.astype(int) - want).max() <= 1


def test_imagery_reprojected_from_4326_and_tile_px(tmp_path):
    """A mosaic in EPSG:4326 with one colour west and another east of a meridian; tiles at a fixed size."""
    img = np.zeros((3, 100, 100), np.uint8)
    img[0, :, :50] = 200  # red west of 116.325
    img[2, :, 50:] = 150  # blue east of it
    write_tif(tmp_path / "ll.tif", img, from_origin(116.30, 39.92, 0.0005, 0.0005), "EPSG:4326", dtype="uint8")
    cfg = from_dict({"city": "ll", "out": "built",
                     "regions": {"kind": "grid", "bbox": [116.305, 39.885, 116.345, 39.915], "cell_m": 500},
                     "imagery": {"path": "ll.tif", "tile_px": 40}}, base_dir=tmp_path)
    ds = load(build_city(cfg))
    lon = ds.regions.set_index("region_id")["lon"]
    checked = 0
    for rid, p in ds.satellite_paths().items():
        tile = np.asarray(Image.open(p))
        assert tile.shape == (40, 40, 3)
        centre = tile[20, 20]
        if abs(lon[rid] - 116.325) > 0.004:  # cell wholly on one side
            assert (centre[0] > 150) == (lon[rid] < 116.325) and (centre[2] > 100) == (lon[rid] > 116.325)
            checked += 1
    assert checked >= 4


def write_xyz(folder, z, xs, ys, size=32):
    colours = {}
    for x in xs:
        for y in ys:
            c = ((x * 37) % 256, (y * 53) % 256, (x + y) % 256)
            im = np.zeros((size, size, 3), np.uint8)
            im[:] = c
            im[: size // 2, : size // 2] = 255  # a marker in the north-west quarter
            (folder / str(z) / str(x)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(folder / str(z) / str(x) / f"{y}.png")
            colours[(x, y)] = im
    return colours


@pytest.mark.parametrize("store", ["folder", "mbtiles"])
def test_xyz_tiles_cut_onto_the_xyz_region_grid(tmp_path, store):
    import mercantile

    z = 15
    t = mercantile.tile(116.35, 39.90, z)
    colours = write_xyz(tmp_path / "tiles", z, [t.x, t.x + 1], [t.y, t.y + 1])
    path = "tiles"
    if store == "mbtiles":
        path = "tiles.mbtiles"
        db = sqlite3.connect(tmp_path / path)
        db.execute("CREATE TABLE tiles (zoom_level int, tile_column int, tile_row int, tile_data blob)")
        for (x, y), im in colours.items():
            buf = BytesIO()
            Image.fromarray(im).save(buf, format="PNG")
            db.execute("INSERT INTO tiles VALUES (?,?,?,?)", (z, x, (1 << z) - 1 - y, buf.getvalue()))
        db.commit()
        db.close()
    w, _, _, n = mercantile.bounds(t)
    e, s = mercantile.bounds(mercantile.Tile(t.x + 1, t.y + 1, z))[2:0:-1]
    inset = 1e-5
    cfg = from_dict({"city": "tiles", "out": "built",
                     "regions": {"kind": "xyz", "zoom": z, "bbox": [w + inset, s + inset, e - inset, n - inset]},
                     "imagery": {"path": path, "tile_px": 32}}, base_dir=tmp_path)
    ds = load(build_city(cfg))
    reg = ds.regions.set_index("region_id")
    assert len(reg) == 4 and set(zip(reg["row"], reg["col"], strict=True)) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for rid, p in ds.satellite_paths().items():
        tile = np.asarray(Image.open(p)).astype(int)
        want = colours[(int(reg.loc[rid, "tile_x"]), int(reg.loc[rid, "tile_y"]))].astype(int)
        assert np.abs(tile - want).max() <= 1, rid


def test_pois_counted_per_region_and_category(utm_inputs):
    tmp_path, _, _ = utm_inputs
    cx = lambda c: X0 + 125 + 250 * c  # noqa: E731
    cy = lambda r: Y0 - 125 - 250 * r  # noqa: E731
    rows = [(cx(0), cy(0), "food"), (cx(0), cy(0), "food"), (cx(0), cy(0), "shop"), (cx(2), cy(1), "shop"),
            (cx(1), cy(1), "Unknown thing"), (cx(1), cy(0), ""), (X0 + 5000, Y0, "food"), ("", cy(0), "food"),
            (X0 + 250, Y0 - 100, "food")]  # the last one is on the edge between columns 0 and 1
    lines = ["x,y,kind"] + [f"{a},{b},{k}" for a, b, k in rows]
    (tmp_path / "pois.csv").write_text("\n".join(lines) + "\n")
    cfg = grid_config(tmp_path, pois={"path": "pois.csv", "category_column": "kind", "lon_column": "x",
                                      "lat_column": "y", "crs": UTM, "categories": ["food", "shop"]})
    out = build_city(cfg)
    ds = load(out)
    reg = ds.regions.set_index("region_id")
    assert reg.loc["testville_r000c000", "poi_cat_food"] == 3  # two inside, one on the shared edge (first region)
    assert reg.loc["testville_r000c000", "poi_cat_shop"] == 1
    assert reg.loc["testville_r001c002", "poi_cat_shop"] == 1
    assert reg["poi_count"].sum() == 5 and "poi_count" in ds.indicators
    report = {e["kind"]: e["count"] for e in json.loads((out / "meta.json").read_text())["build_report"]}
    assert report["poi_unknown_category"] == 1 and report["poi_without_category"] == 1
    assert report["poi_outside_regions"] == 1 and report["poi_without_coordinates"] == 1


def test_street_views_assigned_and_copied(utm_inputs):
    tmp_path, _, _ = utm_inputs
    (tmp_path / "sv").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "sv" / f"p{i}.jpg")
    (tmp_path / "sv" / "broken.jpg").write_bytes(b"not a jpeg")
    pts = gpd.GeoDataFrame({"path": ["p0.jpg", "p1.jpg", "p2.jpg", "gone.jpg", "broken.jpg"]},
                           geometry=gpd.points_from_xy([X0 + 100, X0 + 120, X0 + 600, X0 + 10, X0 + 10],
                                                       [Y0 - 100] * 2 + [Y0 - 400] + [Y0 - 10] * 2), crs=UTM)
    ll = pts.to_crs("EPSG:4326")
    ll.assign(lon=ll.geometry.x, lat=ll.geometry.y).drop(columns="geometry").to_csv(tmp_path / "sv.csv", index=False)
    cfg = grid_config(tmp_path, street_views={"folder": "sv", "points": "sv.csv"})
    out = build_city(cfg)
    streets = load(out).street_paths()
    assert {k: len(v) for k, v in streets.items()} == {"testville_r000c000": 2, "testville_r001c002": 1}
    assert all(p.is_file() for v in streets.values() for p in v)
    report = {e["kind"]: e["count"] for e in json.loads((out / "meta.json").read_text())["build_report"]}
    assert report["street_view_missing_file"] == 1 and report["street_view_unreadable"] == 1


def test_h3_regions(utm_inputs):
    tmp_path, pop, _ = utm_inputs
    cfg = from_dict({"city": "hex", "out": "built",
                     "regions": {"kind": "h3", "resolution": 10, "bbox": [X0, Y0 - 600, X0 + 700, Y0], "bbox_crs": UTM},
                     "indicators": [{"name": "population", "path": "pop.tif", "rule": "sum", "min_coverage": 0}]},
                    base_dir=tmp_path)
    ds = load(build_city(cfg))
    assert len(ds) > 5 and ds.regions["region_id"].str.startswith("hex_8a").all()
    assert (ds.regions[["row", "col"]] >= 0).all().all()
    # hexagons with centres inside the raster overhang it, so the total is at most the raster's
    assert 0 < ds.regions["population"].sum() <= pop[pop != NODATA].sum() + 1e-6


def test_cli_build_and_check(utm_inputs, capsys):
    from urbanlib.city import main

    tmp_path, _, _ = utm_inputs
    (tmp_path / "city.yml").write_text(
        "city: testville\nout: built\n"
        f"regions: {{kind: grid, bbox: [{X0}, {Y0 - 500}, {X0 + 750}, {Y0}], bbox_crs: '{UTM}', cell_m: 250}}\n"
        "imagery: {path: mosaic.tif, pixel_m: 10}\n"
        "indicators:\n  - {name: population, path: pop.tif, rule: sum}\n")
    assert main(["check", str(tmp_path / "city.yml")]) == 0
    assert main(["build", str(tmp_path / "city.yml")]) == 0
    assert "build seconds" in capsys.readouterr().out
    assert load(tmp_path / "built").regions["population"].notna().sum() == 6
    assert main(["build", str(tmp_path / "city.yml")]) == 2  # exists: needs --force
    assert "already there" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "city.yml"), "--force"]) == 0


# ---- every input checked -------------------------------------------------------------------------

def test_config_refuses_unknown_keys_and_bad_rules(tmp_path):
    with pytest.raises(DataError, match=r"unknown key\(s\) \['cellsize'\]"):
        from_dict({"city": "x", "regions": {"kind": "grid", "bbox": [0, 0, 1, 1], "cellsize": 5}})
    with pytest.raises(DataError, match="rule must be one of"):
        from_dict({"city": "x", "regions": {"kind": "grid", "bbox": [0, 0, 1, 1], "cell_m": 5},
                   "indicators": [{"name": "population", "path": "p.tif", "rule": "median"}]})
    with pytest.raises(DataError, match="needs regions.cell_m"):
        from_dict({"city": "x", "regions": {"kind": "grid", "bbox": [0, 0, 1, 1]}})
    with pytest.raises(DataError, match="exactly one of pixel_m and tile_px"):
        from_dict({"city": "x", "regions": {"kind": "xyz", "zoom": 3, "bbox": [0, 0, 1, 1]}, "imagery": {"path": "a"}})
    (tmp_path / "c.json").write_text(json.dumps({"city": "x", "regions": {"kind": "h3", "resolution": "8",
                                                                        "bbox": [0, 0, 1, 1]}}))
    with pytest.raises(DataError, match="resolution: expected int"):
        load_config(tmp_path / "c.json")


def test_raster_without_crs_is_an_error_naming_it(utm_inputs):
    tmp_path, pop, _ = utm_inputs
    write_tif(tmp_path / "nocrs.tif", pop, from_origin(X0, Y0, 100, 100), None)
    cfg = grid_config(tmp_path, indicators=[{"name": "population", "path": "nocrs.tif", "rule": "sum"}])
    with pytest.raises(DataError, match=r"indicator 'population'.*nocrs.tif has no CRS"):
        build_city(cfg)
    assert not (tmp_path / "built").exists()


def test_a_failed_rebuild_leaves_the_earlier_dataset_and_no_temporary_folder(utm_inputs):
    tmp_path, pop, _ = utm_inputs
    out = build_city(grid_config(tmp_path, indicators=[{"name": "population", "path": "pop.tif", "rule": "sum"}]))
    meta, before = (out / "meta.json").read_bytes(), sorted(p.name for p in tmp_path.iterdir())
    write_tif(tmp_path / "nocrs.tif", pop, from_origin(X0, Y0, 100, 100), None)
    with pytest.raises(DataError, match="has no CRS"):  # raised mid-build, after the temporary folder is made
        build_city(grid_config(tmp_path, indicators=[{"name": "population", "path": "nocrs.tif", "rule": "sum"}]),
                   force=True)
    assert (out / "meta.json").read_bytes() == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "nocrs.tif"])


def test_bbox_outside_the_raster_is_an_error(utm_inputs):
    tmp_path, _, _ = utm_inputs
    cfg = from_dict({"city": "far", "out": "built",
                     "regions": {"kind": "grid", "bbox": [10.0, 50.0, 10.02, 50.02], "cell_m": 500},
                     "indicators": [{"name": "population", "path": "pop.tif", "rule": "sum"}]}, base_dir=tmp_path)
    with pytest.raises(DataError, match=r"no region overlaps .*pop.tif"):
        build_city(cfg)
    cfg = from_dict({"city": "far", "out": "built",
                     "regions": {"kind": "grid", "bbox": [10.0, 50.0, 10.02, 50.02], "cell_m": 500},
                     "imagery": {"path": "mosaic.tif", "pixel_m": 10}}, base_dir=tmp_path)
    with pytest.raises(DataError, match=r"imagery: .*mosaic.tif covers no region"):
        build_city(cfg)


def test_pois_in_the_wrong_crs_are_an_error(utm_inputs):
    tmp_path, _, _ = utm_inputs
    (tmp_path / "pois.csv").write_text(f"lon,lat,category\n{X0 + 100},{Y0 - 100},food\n")
    cfg = grid_config(tmp_path, pois={"path": "pois.csv"})  # projected metres declared as lon/lat
    with pytest.raises(DataError, match="outside lon/lat ranges"):
        build_city(cfg)
    (tmp_path / "pois.csv").write_text("lon,lat,category\n39.9,116.3,food\n")  # swapped lon/lat
    with pytest.raises(DataError, match="outside lon/lat ranges"):
        build_city(cfg)
    (tmp_path / "pois.csv").write_text("lon,lat,category\n10.0,50.0,food\n")  # another city's extract
    with pytest.raises(DataError, match="none of the 1 points"):
        build_city(cfg)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_region_polygons_without_crs_and_empty_areas(tmp_path):
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.gpkg")
    cfg = from_dict({"city": "p", "out": "built", "regions": {"kind": "polygons", "path": "nocrs.gpkg"}},
                    base_dir=tmp_path)
    with pytest.raises(DataError, match="nocrs.gpkg: no CRS"):
        build_city(cfg)
    gpd.GeoDataFrame(geometry=[shapely.Point(116.3, 39.9).buffer(1e-6)], crs="EPSG:4326").to_file(
        tmp_path / "tiny.geojson", driver="GeoJSON")
    cfg = from_dict({"city": "p", "out": "built", "regions": {"kind": "grid", "area": "tiny.geojson", "cell_m": 500}},
                    base_dir=tmp_path)
    with pytest.raises(DataError, match="no region lies inside the area"):
        build_city(cfg)
