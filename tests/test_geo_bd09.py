"""BD09 Mercator -> BD09 -> GCJ-02 -> WGS84 offline (urbanlib.data.bd09), and the UrbanCLIP release's cells.

Published fixtures and hand computations need nothing beside the checkout; the tests against the
real release skip without ``../shared/datasets/urbanclip-release``. Measured there (Beijing 4,587
rows, Shanghai 5,168): Baidu's MC -> LL of each tile's corner reproduces the release's
"WGS84 coordinate" column with a median error of 0.0000 m and a maximum of 0.0000 m (under 1e-8 m,
float noise), so that column is BD09 lon/lat, not WGS84; the WGS84 corner from the full chain
lies 1,345 m (median; 1,293-1,381 m) from it in Beijing and 1,130 m (1,090-1,168 m) in Shanghai,
and maps back onto the column (WGS84 -> GCJ-02 -> BD09) within 1e-8 m.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from urbanlib.data import DataError, bd09, load
from urbanlib.data.urbanclip_layout import cell_polygons, regions_geojson

# eviltransform's fixtures (googollee/eviltransform test files): WGS84 (lon, lat) -> GCJ-02 (lon, lat)
WGS_GCJ = [
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),  # Shanghai
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),  # Shenzhen
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),  # Beijing
]
GCJ_BD = ((116.404, 39.915), (116.41036949371029, 39.92133699351021))  # wandergis/coordtransform's test
# Tiananmen in BD09: the centre Baidu-map applications pass as Baidu Mercator metres (12958175, 4825923.77)
BD_MC = ((116.404, 39.915), (12958175.0, 4825923.77))


def test_published_wgs84_gcj02_and_bd09_fixtures():
    for (wlon, wlat), (glon, glat) in WGS_GCJ:
        np.testing.assert_allclose(bd09.wgs84_to_gcj02(wlon, wlat), (glon, glat), rtol=0, atol=1e-9)
        assert bd09.distance_m(*bd09.gcj02_to_wgs84(glon, glat), wlon, wlat) < 1e-4  # exact inverse, not 1-5 m
    np.testing.assert_allclose(bd09.gcj02_to_bd09(*GCJ_BD[0]), GCJ_BD[1], rtol=0, atol=1e-9)
    assert bd09.distance_m(*bd09.bd09_to_gcj02(*GCJ_BD[1]), *GCJ_BD[0]) < 1e-4
    (lon, lat), (x, y) = BD_MC
    mx, my = bd09.bd09_to_mc(lon, lat)
    assert abs(mx - x) < 0.01 and abs(my - y) < 0.01
    assert bd09.distance_m(*bd09.mc_to_bd09(x, y), lon, lat) < 0.02


def test_mc_to_bd09_by_hand_in_two_bands():
    # a Shenzhen tile of the toolkit's README (16_12368_2526): 1678043.12 <= y < 3481989.83, the fifth band
    x, y = 12368 * 1024.0, 2526 * 1024.0
    t = y / 2555164.4
    lat = (6.995724062e-5 + 23.10934304144901 * t - 2.3663490511e-4 * t ** 2 - 0.6321817810242 * t ** 3
           - 0.00663494467273 * t ** 4 + 0.03430082397953 * t ** 5 - 0.00466043876332 * t ** 6)
    lon = 3.09191371068437e-9 + 8.983055096812155e-6 * x
    np.testing.assert_allclose(bd09.mc_to_bd09(x, y), (lon, lat), rtol=0, atol=1e-12)
    assert 113.7 < lon < 113.8 and 22.7 < lat < 22.8
    # a Beijing tile (16_12614_4690): 3481989.83 <= y < 5591021, the fourth band
    x, y = 12614 * 1024.0, 4690 * 1024.0
    t = y / 4482777.06
    lat = (0.03278182852591 + 40.31678527705744 * t + 0.65659298677277 * t ** 2 - 4.44255534477492 * t ** 3
           + 0.85341911805263 * t ** 4 + 0.12923347998204 * t ** 5 - 0.04625736007561 * t ** 6)
    lon = -1.981981304930552e-8 + 8.983055099779535e-6 * x
    np.testing.assert_allclose(bd09.mc_to_bd09(x, y), (lon, lat), rtol=0, atol=1e-12)
    assert 116.0 < lon < 116.1 and 39.7 < lat < 39.8
    # signs are restored after the polynomial (Baidu: T *= sign(x))
    np.testing.assert_allclose(bd09.mc_to_bd09(-x, -y), (-lon, -lat), rtol=0, atol=1e-12)


def test_the_two_independent_baidu_fits_and_every_inverse_agree():
    lon, lat = np.meshgrid(np.linspace(73.5, 135.0, 25), np.linspace(3.9, 53.5, 25))
    mx, my = bd09.bd09_to_mc(lon, lat)
    assert mx.shape == lon.shape
    back = bd09.mc_to_bd09(mx, my)  # MC2LL and LL2MC are separate fits: a few centimetres apart
    assert bd09.distance_m(*back, lon, lat).max() < 0.1
    assert bd09.distance_m(*bd09.gcj02_to_wgs84(*bd09.wgs84_to_gcj02(lon, lat)), lon, lat).max() < 1e-6
    assert bd09.distance_m(*bd09.bd09_to_gcj02(*bd09.gcj02_to_bd09(lon, lat)), lon, lat).max() < 1e-6
    wx, wy = bd09.wgs84_to_mc(lon, lat)
    assert bd09.distance_m(*bd09.mc_to_wgs84(wx, wy), lon, lat).max() < 0.1
    # BD09 lies east-north-east of WGS84 in China, by a few hundred metres to about 1.5 km
    shift = bd09.distance_m(*bd09.wgs84_to_bd09(lon, lat), lon, lat)
    assert 100 < shift.min() and shift.max() < 2000
    assert (bd09.wgs84_to_bd09(lon, lat)[0] > lon).all()


def test_gcj02_is_wgs84_outside_china_but_bd09_is_not():
    lon, lat = np.array([2.35, -74.0]), np.array([48.86, 40.7])  # Paris, New York
    assert bd09.out_of_china(lon, lat).all() and not bd09.out_of_china(116.4, 39.9)
    np.testing.assert_array_equal(bd09.wgs84_to_gcj02(lon, lat), (lon, lat))
    np.testing.assert_array_equal(bd09.gcj02_to_wgs84(lon, lat), (lon, lat))
    assert (bd09.distance_m(*bd09.gcj02_to_bd09(lon, lat), lon, lat) > 500).all()


def test_tile_rings_are_closed_counter_clockwise_and_tile_the_plane():
    xs, ys = np.meshgrid([12659, 12660], [4737, 4738])
    rings = bd09.tile_rings(xs, ys, zoom=16, points_per_edge=2)
    assert rings.shape == (4, 9, 2)
    np.testing.assert_array_equal(rings[:, 0], rings[:, -1])
    area = 0.5 * np.sum(rings[:, :-1, 0] * rings[:, 1:, 1] - rings[:, 1:, 0] * rings[:, :-1, 1], axis=1)
    assert (area > 0).all()  # shoelace: counter-clockwise
    # the south-west corner is tile * 1024 m converted; the east edge of one tile is the west edge of the next
    np.testing.assert_allclose(rings[0, 0], bd09.mc_to_wgs84(12659 * 1024.0, 4737 * 1024.0), rtol=0, atol=1e-12)
    east, west = rings[0, 2:5], rings[1, 6:9][::-1]  # tile (12659, 4737) and (12660, 4737)
    np.testing.assert_allclose(east, west, rtol=0, atol=1e-12)
    # a 1024 m Baidu Mercator tile is about 1024 * cos(lat) ground metres wide and tall
    width = bd09.distance_m(*rings[0, 0], *rings[0, 2])
    height = bd09.distance_m(*rings[0, 2], *rings[0, 4])
    expected = 1024 * np.cos(np.radians(rings[0, 0, 1]))
    assert abs(width / expected - 1) < 0.02 and abs(height / expected - 1) < 0.02
    centre = bd09.tile_centres(12659, 4737)
    assert bd09.distance_m(*centre, *rings[0, :-1].mean(axis=0)) < 2.0


def test_bd09_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="outside Baidu's projection"):
        bd09.bd09_to_mc(0.0, 80.0)
    with pytest.raises(ValueError, match="differ in size"):
        bd09.tile_rings([1, 2], [3])
    with pytest.raises(ValueError, match="points_per_edge"):
        bd09.tile_rings([1], [3], points_per_edge=0)
    with pytest.raises(DataError, match="bd09_x"):
        cell_polygons(pd.DataFrame({"region_id": ["a"]}))


# ---------------------------------------------------------------- the loader's cells


def _labels(root: Path, corners) -> Path:
    """A labels CSV in the release's layout for tiles 12659..12661 x 4737..4738 with the given corner column."""
    (root / "labels").mkdir(parents=True)
    lines = ["satellite_img_name,BD09 coordinate,WGS84 coordinate,carbon_emissions (ton),population (unit),"
             "gdp (million yuan)"]
    tiles = [(x, y) for y in (4737, 4738) for x in (12659, 12660, 12661)]
    for i, (x, y) in enumerate(tiles):
        lon, lat = corners(x * 1024.0, y * 1024.0)
        lines.append(f'Beijing/16_{x}_{y}_s.jpg,"({x},{y})","({float(lat)!r}, {float(lon)!r})",{1.0 + i},'
                     f'{10.0 + i},{100.0 + i}')
    (root / "labels" / "Beijing.csv").write_text("\n".join(lines) + "\n")
    return root


def test_loader_gives_wgs84_centres_and_polygons_and_names_the_bd09_column(tmp_path):
    ds = load(_labels(tmp_path / "bd", bd09.mc_to_bd09), layout="urbanclip", city="Beijing", check_images=False)
    r = ds.regions
    assert ds.report.count("wgs84_column_is_bd09") == 6 and ds.report.count("release_coordinate_mismatch") == 0
    np.testing.assert_allclose(np.c_[r["lon"], r["lat"]], np.c_[bd09.tile_centres(r["bd09_x"], r["bd09_y"])])
    # read as WGS84, the release's corner would sit ~800 m from the true centre (the 1.3 km BD09 shift
    # west-south-west, less half a tile north-east): beyond the cell's half-diagonal of ~550 m
    assert (bd09.distance_m(r["release_lon"], r["release_lat"], r["lon"], r["lat"]) > 700).all()
    rings = cell_polygons(r)
    assert rings.shape == (6, 5, 2)
    inside = (rings[..., 0].min(1) < r["lon"]) & (r["lon"] < rings[..., 0].max(1)) & \
             (rings[..., 1].min(1) < r["lat"]) & (r["lat"] < rings[..., 1].max(1))
    assert inside.all()
    gj = regions_geojson(r, ["population", "gdp"])
    assert [f["properties"]["region_id"] for f in gj["features"]] == list(r["region_id"])
    assert gj["features"][0]["geometry"]["type"] == "Polygon"
    assert gj["features"][2]["properties"]["gdp"] == 102.0
    np.testing.assert_allclose(gj["features"][3]["geometry"]["coordinates"][0], rings[3])
    with pytest.raises(DataError, match="unknown region column"):
        regions_geojson(r, ["no_such_column"])


def test_loader_accepts_a_true_wgs84_column_and_counts_wrong_corners(tmp_path):
    ds = load(_labels(tmp_path / "wgs", bd09.mc_to_wgs84), layout="urbanclip", city="Beijing", check_images=False)
    assert ds.report.count("wgs84_column_is_bd09") == 0 and ds.report.count("release_coordinate_mismatch") == 0
    ds = load(_labels(tmp_path / "off", lambda x, y: (116.0, 39.0)), layout="urbanclip", city="Beijing",
              check_images=False)
    assert ds.report.count("release_coordinate_mismatch") == 6
    # the tile numbers still place every region (the column is only a cross-check)
    np.testing.assert_allclose(ds.regions["lon"], bd09.tile_centres(ds.regions["bd09_x"], ds.regions["bd09_y"])[0])


def test_loader_rejects_an_out_of_range_corner_naming_the_row(tmp_path):
    root = _labels(tmp_path / "bad", bd09.mc_to_bd09)
    path = root / "labels" / "Beijing.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].split(',"(')[0] + ',"(12661,4737)","(39.9, 190.0)",1.0,2.0,3.0'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"Beijing.csv: row 2 field 'WGS84 coordinate'.*outside"):
        load(root, layout="urbanclip", city="Beijing", check_images=False)


# ---------------------------------------------------------------- the real release (skips without ../shared)


def _release() -> Path:
    root = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "urbanclip-release"
    if not (root / "labels" / "Beijing.csv").is_file():
        pytest.skip("the UrbanCLIP release is not beside this checkout (../shared/datasets/urbanclip-release)")
    return root


@pytest.mark.parametrize("city, rows, wgs_median", [("Beijing", 4587, 1345), ("Shanghai", 5168, 1130)])
def test_the_release_column_is_bd09_of_the_tile_corner(city, rows, wgs_median):
    labels = pd.read_csv(_release() / "labels" / f"{city}.csv")
    assert len(labels) == rows
    xy = labels["BD09 coordinate"].str.extract(r"\((\d+),\s*(\d+)\)").astype(float).to_numpy() * 1024.0
    ll = labels["WGS84 coordinate"].str.extract(r"\(([-\d.e]+),\s*([-\d.e]+)\)").astype(float).to_numpy()
    lat, lon = ll[:, 0], ll[:, 1]
    err_bd = bd09.distance_m(*bd09.mc_to_bd09(xy[:, 0], xy[:, 1]), lon, lat)
    # measured: median 0.0000 m, maximum 0.0000 m (< 1e-8 m) in both cities
    assert np.median(err_bd) < 1e-6 and err_bd.max() < 1e-6
    wlon, wlat = bd09.mc_to_wgs84(xy[:, 0], xy[:, 1])
    err_wgs = bd09.distance_m(wlon, wlat, lon, lat)
    # measured: Beijing median 1,345 m (1,293-1,381 m), Shanghai 1,130 m (1,090-1,168 m): the BD09 -> WGS84 shift
    assert abs(np.median(err_wgs) - wgs_median) < 5 and 1000 < err_wgs.min() and err_wgs.max() < 1500
    # and the WGS84 corners go back onto the release's column exactly
    assert bd09.distance_m(*bd09.wgs84_to_bd09(wlon, wlat), lon, lat).max() < 1e-6


def test_the_beijing_release_loads_with_real_cells():
    ds = load(_release(), layout="urbanclip", city="Beijing", check_images=False)
    r = ds.regions
    assert ds.report.count("wgs84_column_is_bd09") == len(r) == 4587
    assert ds.report.count("release_coordinate_mismatch") == 0
    assert r["lon"].between(115.4, 117.6).all() and r["lat"].between(39.4, 41.1).all()
    gj = regions_geojson(r)
    assert len(gj["features"]) == len(r)
    rings = cell_polygons(r)
    # neighbouring cells share their edge: (x, y)'s east edge is (x + 1, y)'s west edge
    index = {(x, y): i for i, (x, y) in enumerate(zip(r["bd09_x"], r["bd09_y"], strict=True))}
    pairs = [(i, index[(x + 1, y)]) for (x, y), i in index.items() if (x + 1, y) in index]
    assert len(pairs) > 1000
    a, b = np.array(pairs).T
    np.testing.assert_allclose(rings[a, 1:3], rings[b][:, [0, 3]], rtol=0, atol=1e-12)  # [SE, NE] == [SW, NW]
