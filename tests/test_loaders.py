"""UrbanCLIP-release and generic adapters, image checks and table validation, on tiny generated fixtures."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import urbanlib.data as data
from urbanlib.data import DataError, LoadReport, bd09, canonical, images, validate
from urbanlib.data.dataset import UrbanDataset

HERE = Path(__file__).parent / "data"


def _module(name):
    spec = importlib.util.spec_from_file_location(f"{name}_fixture", HERE / name / "make_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


uc = _module("urbanclip")
gen = _module("generic")


@pytest.fixture
def uc_dir(tmp_path):
    return uc.make(tmp_path / "release")


@pytest.fixture
def gen_dir(tmp_path):
    return gen.make(tmp_path / "generic")


# ---------------------------------------------------------------- UrbanCLIP release layout


def test_urbanclip_regions_indicators_and_geometry(uc_dir):
    ds = data.load(uc_dir, layout="urbanclip", city="Beijing")
    r = ds.regions
    assert len(r) == uc.N_REGIONS and r["region_id"].is_unique
    assert ds.indicators == ["population", "gdp", "carbon"]
    labels = pd.read_csv(uc_dir / "labels" / "Beijing.csv")
    np.testing.assert_allclose(r["gdp"], labels["gdp (million yuan)"])
    np.testing.assert_allclose(r["carbon"], labels["carbon_emissions (ton)"])
    np.testing.assert_allclose(r["population"], labels["population (unit)"])
    # tile x/y kept; grid col = x - min x, row = max y - y (north at row 0)
    assert r["bd09_x"].min() == min(uc.XS) and r["bd09_y"].max() == max(uc.YS)
    np.testing.assert_array_equal(r["col"], r["bd09_x"] - min(uc.XS))
    np.testing.assert_array_equal(r["row"], max(uc.YS) - r["bd09_y"])
    # centre = the tile's BD09 Mercator centre converted to WGS84 (tests/test_geo_bd09.py); the fixture's
    # corner column is made up, so the loader keeps it as release_lon/lat and counts every row as a mismatch
    np.testing.assert_allclose(np.c_[r["lon"], r["lat"]], np.c_[bd09.tile_centres(r["bd09_x"], r["bd09_y"])])
    assert r["lat"].between(40.07, 40.09).all() and r["lon"].between(116.43, 116.47).all()
    np.testing.assert_allclose(r["release_lat"], labels["WGS84 coordinate"].str.extract(r"\(([\d.]+),")[0].astype(float))
    assert ds.report.count("release_coordinate_mismatch") == uc.N_REGIONS


def test_urbanclip_real_release_problems_are_counted_not_hidden(uc_dir):
    ds = data.load(uc_dir, layout="urbanclip", city="Beijing")
    rep = ds.report
    assert len(ds.regions) == uc.N_REGIONS  # rows are kept
    assert rep.count("missing_image") == len(uc.MISSING_IMAGES)
    assert rep.count("region_without_image") == len(uc.MISSING_IMAGES)
    assert rep.count("region_without_caption") == len(uc.NO_CAPTION)
    assert rep.count("capped_gdp") == len(uc.CAPPED_GDP)
    assert rep.count("zero_carbon") == len(uc.ZERO_CARBON)
    assert ds.regions["gdp_capped"].sum() == len(uc.CAPPED_GDP)
    capped_ids = {f"Beijing_16_{x}_{y}" for x, y in uc.CAPPED_GDP}
    assert set(ds.regions.loc[ds.regions["gdp_capped"], "region_id"]) == capped_ids
    assert len(ds.satellite_paths()) == uc.N_REGIONS - len(uc.MISSING_IMAGES)
    assert all(p.is_file() for p in ds.satellite_paths())
    assert "missing_image" in str(rep)


def test_urbanclip_captions_one_row_per_sentence(uc_dir):
    ds = data.load(uc_dir, layout="urbanclip", city="Beijing")
    caps = ds.captions
    assert len(caps) == 3 * (uc.N_REGIONS - len(uc.NO_CAPTION))
    assert set(caps["style"]) == {"short"} and set(caps["source"]) == {"urbanclip-release"}
    assert caps.groupby("region_id").size().eq(3).all()
    # caption text of a region mentions its own tile
    row = caps[caps["region_id"] == "Beijing_16_12659_4736"].iloc[0]
    assert "12659 4736" in row["text"] and row["image"] == "Beijing/16_12659_4736_s.jpg"


def test_urbanclip_toolkit_and_explicit_paths(uc_dir, tmp_path):
    toolkit = uc_dir / "integrate" / "output" / "Beijing"
    toolkit.mkdir(parents=True)
    (uc_dir / "labels" / "Beijing.csv").rename(toolkit / "Beijing.csv")
    ds = data.load(uc_dir, layout="urbanclip", city="Beijing")
    assert len(ds.regions) == uc.N_REGIONS and ds.meta["labels"].endswith("integrate/output/Beijing/Beijing.csv")
    moved = tmp_path / "elsewhere"
    (uc_dir / "images").rename(moved)
    ds2 = data.load(uc_dir, layout="urbanclip", city="Beijing", labels=toolkit / "Beijing.csv", images=moved,
                    captions=uc_dir / "captions" / "Beijing_captions.json")
    assert len(ds2.satellite_paths()) == uc.N_REGIONS - len(uc.MISSING_IMAGES)
    with pytest.raises(DataError, match="nope.json"):
        data.load(uc_dir, layout="urbanclip", city="Beijing", labels=toolkit / "Beijing.csv", images=moved,
                  captions=tmp_path / "nope.json")


def test_urbanclip_missing_files_and_bad_fields(uc_dir):
    with pytest.raises(DataError, match="city= is required"):
        data.load(uc_dir, layout="urbanclip")
    with pytest.raises(DataError, match="no labels CSV for 'Shanghai'"):
        data.load(uc_dir, layout="urbanclip", city="Shanghai")
    path = uc_dir / "labels" / "Beijing.csv"
    text = path.read_text()
    path.write_text(text.replace('"(12660,4737)"', '"12660;4737"'))
    with pytest.raises(DataError, match=r"Beijing.csv: row 5 field 'BD09 coordinate'"):
        data.load(uc_dir, layout="urbanclip", city="Beijing")
    path.write_text(text.replace("gdp (million yuan)", "GDP_total"))
    with pytest.raises(DataError, match="gdp \\(million yuan\\)"):
        data.load(uc_dir, layout="urbanclip", city="Beijing")
    path.write_text(text)
    (uc_dir / "captions" / "Beijing_captions.json").write_text("[[{\"caption\": \"x\"")
    with pytest.raises(DataError, match="Beijing_captions.json: invalid JSON"):
        data.load(uc_dir, layout="urbanclip", city="Beijing")


def test_urbanclip_without_captions_file_is_flagged(uc_dir):
    (uc_dir / "captions" / "Beijing_captions.json").unlink()
    ds = data.load(uc_dir, layout="urbanclip", city="Beijing")
    assert len(ds.captions) == 0 and ds.report.count("captions_file_missing") == 1
    assert ds.report.count("region_without_caption") == uc.N_REGIONS


def test_urbanclip_empty_huge_and_unknown_captions(uc_dir):
    path = uc_dir / "captions" / "Beijing_captions.json"
    caps = json.loads(path.read_text())
    caps[0][0]["caption"] = "   "
    caps[1][0]["caption"] = "word " * 2000  # 10000 characters
    caps.append([{"caption": "a tile we have no labels for", "image": "Beijing/16_1_1_s.jpg"}])
    path.write_text(json.dumps(caps))
    ds = data.load(uc_dir, layout="urbanclip", city="Beijing")
    assert ds.report.count("empty_caption") == 1
    assert ds.report.count("caption_truncated") == 1
    assert ds.report.count("caption_unknown_region") == 1
    assert len(ds.captions) == 3 * (uc.N_REGIONS - 1) - 1
    assert ds.captions["text"].str.len().max() <= validate.MAX_CAPTION_CHARS
    assert (ds.captions["text"].str.strip() != "").all()


# ---------------------------------------------------------------- images


def _write_images(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "ok.jpg")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")  # mode L
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(folder / "rgba.png")  # mode RGBA
    Image.fromarray(rgb[:100, :120]).save(folder / "small.jpg")
    full = (folder / "ok.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (folder / "garbage.jpg").write_bytes(b"not an image at all")


def test_open_rgb_converts_resizes_and_names_bad_files(tmp_path):
    _write_images(tmp_path)
    rep = LoadReport()
    for name in ("ok.jpg", "gray.png", "rgba.png"):
        im = images.open_rgb(tmp_path / name, report=rep)
        assert im.mode == "RGB" and im.size == (256, 256)
    assert rep.count("non_rgb_image") == 2
    gray = np.asarray(images.open_rgb(tmp_path / "gray.png"))
    assert (gray[..., 0] == gray[..., 1]).all()  # grey replicated to 3 channels
    assert images.open_rgb(tmp_path / "small.jpg", size=(256, 256)).size == (256, 256)
    for name in ("truncated.jpg", "garbage.jpg", "absent.jpg"):
        with pytest.raises(DataError, match=name):
            images.open_rgb(tmp_path / name)


def test_check_images_drops_counts_and_flags(tmp_path):
    _write_images(tmp_path / "img")
    names = ["ok.jpg", "gray.png", "rgba.png", "small.jpg", "truncated.jpg", "garbage.jpg", "absent.jpg"]
    regions = pd.DataFrame({"region_id": [f"r{i}" for i in range(len(names))], "city": "X"})
    imgs = pd.DataFrame({"region_id": regions["region_id"], "kind": "satellite", "path": names,
                         "lon": np.nan, "lat": np.nan})
    ds = UrbanDataset(regions=regions, images=imgs, root=tmp_path / "img")
    images.check_images(ds, expected_size=(256, 256))
    rep = ds.report
    assert rep.count("missing_image") == 1
    assert rep.count("unreadable_image") == 2
    assert rep.count("non_rgb_image") == 2
    assert rep.count("unexpected_image_size") == 1
    assert list(ds.images["path"]) == ["ok.jpg", "gray.png", "rgba.png", "small.jpg"]
    assert ds.images.loc[ds.images["path"] == "small.jpg", ["width", "height"]].values.tolist() == [[120, 100]]


def test_urbanclip_corrupt_and_grey_images_in_release(uc_dir):
    folder = uc_dir / "images" / "Beijing"
    victim = folder / "16_12659_4736_s.jpg"
    victim.write_bytes(victim.read_bytes()[:300])
    grey = folder / "16_12661_4736_s.jpg"
    Image.open(grey).convert("L").save(grey)
    ds = data.load(uc_dir, layout="urbanclip", city="Beijing")
    assert ds.report.count("unreadable_image") == 1 and ds.report.count("non_rgb_image") == 1
    assert "Beijing_16_12659_4736" not in ds.satellite_paths().index
    assert len(ds.regions) == uc.N_REGIONS


# ---------------------------------------------------------------- table validation


def _table(**cols):
    base = {"region_id": ["a", "b", "c", "d"], "city": "X", "population": [1.0, 2.0, 3.0, 4.0]}
    base.update(cols)
    return pd.DataFrame(base)


def test_validate_nan_negative_zero():
    rep = LoadReport()
    out = validate.check_regions(_table(population=[np.nan, -5.0, 0.0, 7.0]), rep, source="t.csv")
    assert rep.count("missing_population") == 1
    assert rep.count("negative_population") == 1
    assert rep.count("zero_population") == 1
    assert np.isnan(out.loc[1, "population"]) and out.loc[2, "population"] == 0  # negative -> NaN, zero kept


def test_validate_duplicates_and_non_numbers():
    rep = LoadReport()
    dup = pd.concat([_table(), _table().iloc[[2]]], ignore_index=True)
    out = validate.check_regions(dup, rep)
    assert len(out) == 4 and rep.count("duplicate_region") == 1
    clash = dup.copy()
    clash.loc[4, "population"] = 99.0
    with pytest.raises(DataError, match=r"t.csv: duplicate region_id 'c' in rows 2 and 4"):
        validate.check_regions(clash, LoadReport(), source="t.csv")
    with pytest.raises(DataError, match=r"t.csv: column 'population' row 1 \(b\) is not a number: 'lots'"):
        validate.check_regions(_table(population=[1, "lots", 2, 3]), LoadReport(), source="t.csv")
    with pytest.raises(DataError, match="empty region_id"):
        validate.check_regions(_table(region_id=["a", None, "c", "d"]), LoadReport(), source="t.csv")


def test_validate_cap_detection_needs_a_repeated_maximum():
    rep = LoadReport()
    out = validate.check_regions(_table(population=[5.0, 10.0, 10.0, 1.0]), rep)
    assert rep.count("capped_population") == 2 and out["population_capped"].tolist() == [False, True, True, False]
    rep2 = LoadReport()
    out2 = validate.check_regions(_table(population=[5.0, 10.0, 9.0, 1.0]), rep2)
    assert rep2.count("capped_population") == 0 and "population_capped" not in out2


def test_canonical_read_goes_through_validation(tmp_path):
    regions = _table(population=[1.0, -2.0, 3.0, 4.0]).assign(row=0, col=[0, 1, 2, 3], lon=0.0, lat=0.0)
    canonical.write(UrbanDataset(regions=regions), tmp_path)
    back = canonical.read(tmp_path)
    assert back.report.count("negative_population") == 1 and np.isnan(back.regions.loc[1, "population"])
    pd.concat([regions, regions.iloc[[0]].assign(population=50.0)]).to_csv(tmp_path / "regions.csv", index=False)
    with pytest.raises(DataError, match="regions.csv: duplicate region_id 'a'"):
        canonical.read(tmp_path)


# ---------------------------------------------------------------- generic layout


def test_generic_csv_mapping_images_captions(gen_dir):
    ds = data.load(gen_dir, layout="generic", city="Shanghai", columns=gen.COLUMNS)
    r = ds.regions
    assert len(r) == gen.ROWS * gen.COLS and list(r.columns[:6]) == ["region_id", "city", "row", "col", "lon", "lat"]
    assert ds.indicators == ["population", "gdp"] and "landuse" in r.columns  # extras kept
    table = pd.read_csv(gen_dir / "indicators.csv")
    np.testing.assert_allclose(r["population"], table["pop"])
    assert ds.report.count("region_without_image") == 1
    assert gen.MISSING_IMAGE not in ds.satellite_paths().index
    assert ds.report.count("region_without_caption") == 1 and len(ds.captions) == len(r) - 1


def test_generic_parquet_matches_csv(tmp_path):
    a = data.load(gen.make(tmp_path / "a", fmt="csv"), layout="generic", city="Shanghai", columns=gen.COLUMNS)
    b = data.load(gen.make(tmp_path / "b", fmt="parquet"), layout="generic", city="Shanghai",
                  columns=gen.COLUMNS, indicators="indicators.parquet")
    pd.testing.assert_frame_equal(a.regions, b.regions)


def test_generic_street_points_land_in_their_cells(gen_dir):
    ds = data.load(gen_dir, layout="generic", city="Shanghai", columns=gen.COLUMNS,
                   street_points="street_points.csv")
    street = ds.images[ds.images["kind"] == "street"]
    assert street["region_id"].tolist() == [rid for _, rid in gen.STREET_TRUTH]
    assert ds.report.count("street_outside_grid") == 1
    assert {k: len(v) for k, v in ds.street_paths().items()} == {rid: 1 for _, rid in gen.STREET_TRUTH}
    # the true grid position agrees with row/col: sh-06 is row 1, col 2
    assert tuple(ds.regions.set_index("region_id").loc["sh-06", ["row", "col"]]) == (1, 2)


def test_generic_bad_inputs(gen_dir):
    with pytest.raises(DataError, match="no 'region_id' column"):
        data.load(gen_dir, layout="generic", city="Shanghai")
    with pytest.raises(DataError, match=r"\['nope'\] named in columns="):
        data.load(gen_dir, layout="generic", city="Shanghai", columns={"nope": "gdp"})
    with pytest.raises(DataError, match="unknown canonical name"):
        data.load(gen_dir, layout="generic", city="Shanghai", columns={"id": "region_id", "pop": "people"})
    with pytest.raises(DataError, match="missing.csv: indicator table not found"):
        data.load(gen_dir, layout="generic", city="Shanghai", indicators="missing.csv")
    table = pd.read_csv(gen_dir / "indicators.csv").assign(town="Shanghai")
    table.to_csv(gen_dir / "with_city.csv", index=False)
    with pytest.raises(DataError, match="city 'Paris' not found"):
        data.load(gen_dir, layout="generic", city="Paris", indicators="with_city.csv",
                  columns={**gen.COLUMNS, "town": "city"})
    with (gen_dir / "captions.jsonl").open("a") as f:
        f.write("{broken\n")
    with pytest.raises(DataError, match="captions.jsonl: line 12 is not valid JSON"):
        data.load(gen_dir, layout="generic", city="Shanghai", columns=gen.COLUMNS)


def test_urbanclip_duplicate_tiles(uc_dir):
    path = uc_dir / "labels" / "Beijing.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[3]]) + "\n")  # identical copy of data row 2
    ds = data.load(uc_dir, layout="urbanclip", city="Beijing")
    assert len(ds.regions) == uc.N_REGIONS and ds.report.count("duplicate_region") == 1
    changed = lines[3].rsplit(",", 1)[0] + ",1.5"  # same tile, different GDP
    path.write_text("\n".join([*lines, changed]) + "\n")
    with pytest.raises(DataError, match=r"Beijing.csv: duplicate region_id 'Beijing_16_12661_4736' in rows 2 and 12"):
        data.load(uc_dir, layout="urbanclip", city="Beijing")


def test_fixtures_are_deterministic(tmp_path):
    a, b = uc.make(tmp_path / "a"), uc.make(tmp_path / "b")
    for rel in ("labels/Beijing.csv", "captions/Beijing_captions.json", "images/Beijing/16_12659_4738_s.jpg"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    c = uc.make(tmp_path / "c", seed=1)
    assert (a / "labels/Beijing.csv").read_bytes() != (c / "labels/Beijing.csv").read_bytes()
    g1, g2 = gen.make(tmp_path / "g1"), gen.make(tmp_path / "g2")
    assert (g1 / "indicators.csv").read_bytes() == (g2 / "indicators.csv").read_bytes()


def test_a_fill_value_is_found_wherever_it_sits_in_the_distribution():
    rng = np.random.default_rng(0)
    n = 400
    gdp = rng.lognormal(8, 1, n)
    gdp[rng.choice(n, 80, replace=False)] = 10000.0  # 20%, below the maximum (as in the Beijing release)
    gdp[:3] = 0.0
    table = pd.DataFrame({"region_id": [f"r{i}" for i in range(n)], "city": "c", "gdp": gdp,
                          "crime": rng.poisson(2.0, n).astype(float)})  # counts: common small values, no fill
    rep = LoadReport()
    out = validate.check_regions(table, rep, indicators=["gdp", "crime"])
    assert gdp.max() > 10000.0 and rep.count("fill_gdp") == 80 and out["gdp_fill"].sum() == 80
    assert (out.loc[out["gdp_fill"], "gdp"] == 10000.0).all() and rep.count("zero_gdp") == 3
    assert rep.count("capped_gdp") == 0 and rep.count("fill_crime") == 0 and "crime_fill" not in out
    few = table.assign(gdp=np.where(np.arange(n) < 10, 10000.0, rng.lognormal(8, 1, n)))  # 2.5%: not a fill value
    assert validate.check_regions(few, LoadReport(), indicators=["gdp"]).get("gdp_fill") is None


def _release():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "urbanclip-release"
    if not (root / "labels" / "Beijing.csv").is_file():
        pytest.skip("the UrbanCLIP release is not beside this checkout (../shared/datasets/urbanclip-release)")
    return root


def test_the_beijing_release_loads_with_its_fill_value_flagged():
    from urbanlib.data import load

    ds = load(_release(), layout="urbanclip", city="Beijing")
    assert len(ds.regions) == 4587 and ds.report.count("fill_gdp") == 940
    assert int(ds.regions["gdp_fill"].sum()) == 940 and (ds.regions.loc[ds.regions["gdp_fill"], "gdp"] == 10000).all()
    assert not ds.captions.empty and ds.captions["region_id"].nunique() > 0


def test_shanghai_loads_with_labels_only_and_says_so():
    from urbanlib.data import load

    ds = load(_release(), layout="urbanclip", city="Shanghai")
    assert len(ds.regions) == 5168 and (ds.captions is None or ds.captions.empty)
    assert ds.report.count("captions_file_missing") == 1 and ds.report.count("region_without_caption") == 5168
