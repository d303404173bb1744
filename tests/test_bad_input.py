"""The bad-input catalogue (issue 18): named defects over the three layouts, and fuzzing that injects them.

Every case writes a small valid dataset under ``tmp_path``, breaks it in one named way, and asserts
what urbanlib promises: a :class:`DataError` whose message names the file (and the row, line,
column or record), or a load that skips the bad item and counts it in the report with the file
named. Never another exception, never a silent load.
"""

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import urbanlib.data as data
from urbanlib.data import DataError
from urbanlib.data.images import MAX_PIXELS, open_rgb

N = 6  # regions in every base dataset (2 rows x 3 columns)
CITY = "Tc"


# ---------------------------------------------------------------- valid base datasets, one per layout

def _png(path: Path, seed: int, size=(16, 16), fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    px = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(px, "RGB").save(path, format=fmt)


def _grid():
    return [(i, i // 3, i % 3) for i in range(N)]  # (index, row, col)


def make_canonical(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    regions, images, caps = [], [], []
    for i, r, c in _grid():
        rid = f"r{i}"
        regions.append({"region_id": rid, "city": CITY, "row": r, "col": c, "lon": 10 + 0.01 * c,
                        "lat": 20 + 0.01 * r, "population": 100.0 + i, "gdp": 5.0 + i})
        _png(root / "images" / "sat" / f"{rid}.png", i)
        images.append({"region_id": rid, "kind": "satellite", "path": f"images/sat/{rid}.png", "lon": np.nan,
                       "lat": np.nan})
        if i < 3:
            _png(root / "images" / "street" / f"{rid}_0.png", 100 + i)
            images.append({"region_id": rid, "kind": "street", "path": f"images/street/{rid}_0.png",
                           "lon": 10 + 0.01 * c, "lat": 20 + 0.01 * r})
        caps.append({"region_id": rid, "image": f"images/sat/{rid}.png", "source": "t", "style": "short",
                     "text": f"a park and a road in region {i}"})
    (root / "meta.json").write_text(json.dumps({"format": "urbanlib", "format_version": 1,
                                                "indicators": ["population", "gdp"]}))
    pd.DataFrame(regions).to_csv(root / "regions.csv", index=False)
    pd.DataFrame(images).to_csv(root / "images.csv", index=False)
    (root / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in caps))
    return root


def _uc_name(i):
    return f"{CITY}/16_{12000 + i % 3}_{4700 + i // 3}_s.jpg"


def make_urbanclip(root: Path) -> Path:
    (root / "labels").mkdir(parents=True)
    (root / "captions").mkdir()
    lines = ["satellite_img_name,BD09 coordinate,WGS84 coordinate,carbon_emissions (ton),population (unit),"
             "gdp (million yuan)"]
    caps = []
    for i, r, c in _grid():
        name = _uc_name(i)
        lines.append(f'{name},"({12000 + c},{4700 + r})","({39.8 + 0.007 * r:.6f}, {116.4 + 0.009 * c:.6f})",'
                     f"{10.0 + i},{200.0 + i},{30.0 + i}")
        _png(root / "images" / name, i, fmt="JPEG")
        caps.append([{"caption": f"Sentence {k} about tile {i}.", "image": name} for k in range(2)])
    (root / "labels" / f"{CITY}.csv").write_text("\n".join(lines) + "\n")
    (root / "captions" / f"{CITY}_captions.json").write_text(json.dumps(caps))
    return root


GENERIC_COLUMNS = {"id": "region_id", "pop": "population", "gdp_m": "gdp", "x": "lon", "y": "lat", "pic": "image"}


def make_generic(root: Path) -> Path:
    rows, caps = [], []
    for i, r, c in _grid():
        rid = f"g{i}"
        rows.append({"id": rid, "pop": 50.0 + i, "gdp_m": 7.0 + i, "x": 121.4 + 0.01 * c, "y": 31.2 + 0.01 * r,
                     "pic": f"{rid}.png"})
        _png(root / "images" / f"{rid}.png", i)
        caps.append({"region_id": rid, "text": f"blocks of houses {i}"})
    pd.DataFrame(rows).to_csv(root / "indicators.csv", index=False)
    (root / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in caps))
    for k in range(2):
        _png(root / "images" / "street" / f"{k}.png", 50 + k)
    pd.DataFrame({"path": ["street/0.png", "street/1.png"], "lon": [121.4, 121.41],
                  "lat": [31.2, 31.21]}).to_csv(root / "street_points.csv", index=False)
    return root


def load(layout: str, root: Path):
    if layout == "urbanlib":
        return data.load(root, layout="urbanlib")
    if layout == "urbanclip":
        return data.load(root, layout="urbanclip", city=CITY, expected_size=None)
    return data.load(root, layout="generic", city=CITY, columns=GENERIC_COLUMNS, street_points="street_points.csv")


MAKERS = {"urbanlib": make_canonical, "urbanclip": make_urbanclip, "generic": make_generic}
REGIONS_FILE = {"urbanlib": "regions.csv", "urbanclip": f"labels/{CITY}.csv", "generic": "indicators.csv"}
INDICATOR = {"urbanlib": "gdp", "urbanclip": "gdp (million yuan)", "generic": "gdp_m"}
CAPTIONS_FILE = {"urbanlib": "captions.jsonl", "urbanclip": f"captions/{CITY}_captions.json",
                 "generic": "captions.jsonl"}
IMAGES_ROOT = {"urbanlib": "", "urbanclip": "images", "generic": "images"}


# ---------------------------------------------------------------- defects (shared by the catalogue and the fuzzer)

def _edit_csv(path: Path, row: int, col: str, value: str):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row % len(df), col] = value
    df.to_csv(path, index=False)


def bad_indicator(layout, root, row, value):
    _edit_csv(root / REGIONS_FILE[layout], row, INDICATOR[layout], value)
    return ("error", Path(REGIONS_FILE[layout]).name, ["column 'gdp'", f"row {row % N}"])


def bad_coordinate(layout, root, row, value, axis="lat"):
    if layout == "urbanclip":
        other = "116.4" if axis == "lat" else "39.8"
        pair = f"({value}, {other})" if axis == "lat" else f"({other}, {value})"
        _edit_csv(root / REGIONS_FILE[layout], row, "WGS84 coordinate", pair)
    else:
        col = {"urbanlib": {"lat": "lat", "lon": "lon"}, "generic": {"lat": "y", "lon": "x"}}[layout][axis]
        _edit_csv(root / REGIONS_FILE[layout], row, col, value)
    return ("error", Path(REGIONS_FILE[layout]).name, [])


def _image_files(layout, root):
    base = root / IMAGES_ROOT[layout] if IMAGES_ROOT[layout] else root / "images"
    return sorted(p for p in base.rglob("*") if p.is_file())


def _secret(root: Path) -> Path:
    secret = root.parent / f"{root.name}-private" / "secret.png"
    _png(secret, 999)
    return secret


def bad_image_path(layout, root, row, how):
    """Point one image row outside the dataset: ``..``, an absolute path, or a symlink inside pointing out."""
    secret = _secret(root)
    images_root = root / IMAGES_ROOT[layout] if IMAGES_ROOT[layout] else root
    if how == "dotdot":
        value = os.path.relpath(secret, images_root)
    elif how == "absolute":
        value = str(secret)
    else:
        link = images_root / f"link{row}.png"
        link.symlink_to(secret)
        value = str(link.relative_to(images_root))
    if layout == "urbanlib":
        _edit_csv(root / "images.csv", row, "path", value)
    elif layout == "urbanclip":
        _edit_csv(root / REGIONS_FILE[layout], row, "satellite_img_name", value)
    else:
        _edit_csv(root / "indicators.csv", row, "pic", value)
    return ("skip", "image_outside_root", value)


def _bomb_bytes(pixels=MAX_PIXELS + 1_000_000):
    side = int(pixels ** 0.5) + 1
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")  # a few kB on disk, 40 M pixels decoded
    return buf.getvalue()


BOMB = None


def bad_image_content(layout, root, row, how):
    global BOMB
    files = [p for p in _image_files(layout, root) if not p.is_symlink()]
    target = files[row % len(files)]
    raw = target.read_bytes()
    if how == "truncated":
        target.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        target.write_bytes(b"")
    elif how == "text":
        target.write_bytes(b"this is not an image\n")
    else:
        BOMB = BOMB or _bomb_bytes()
        target.write_bytes(BOMB)
    kind = "image_too_large" if how == "bomb" else "unreadable_image"
    return ("skip", kind, target.name)


CAPTION_VARIANTS = ["number", "list", "object", "region_dict", "array_line", "bool_region", "style_number"]


def bad_caption(layout, root, row, how):
    path = root / CAPTIONS_FILE[layout]
    if layout == "urbanclip":
        groups = json.loads(path.read_text())
        g = groups[row % len(groups)]
        bad = {"number": 5, "list": ["a", "b"], "object": {"t": 1}}.get(how)
        if bad is not None:
            g[0]["caption"] = bad
        elif how == "array_line":
            g[0] = ["not", "a", "record"]
        else:
            g[0]["image"] = 12  # an image name of the wrong type
        path.write_text(json.dumps(groups))
        return ("error", path.name, ["record ["])
    lines = path.read_text().splitlines()
    n = row % len(lines)
    rec = json.loads(lines[n])
    key = "text"
    if how in ("number", "list", "object"):
        rec[key] = {"number": 5, "list": ["a"], "object": {"t": 1}}[how]
    elif how == "region_dict":
        rec["region_id"] = {"id": 1}
    elif how == "bool_region":
        rec["region_id"] = True
    elif how == "style_number":
        rec["style"] = 3
    lines[n] = "[1, 2]" if how == "array_line" else json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    return ("error", path.name, [f"line {n + 1}"])


def check_outcome(layout, root, expected):
    """Load and check against the injected defects' promises; returns the dataset or the DataError."""
    errors = [e for e in expected if e[0] == "error"]
    if errors:
        with pytest.raises(DataError) as info:
            load(layout, root)
        msg = str(info.value)
        assert any(name in msg and all(t in msg for t in tokens) for _, name, tokens in errors), (msg, errors)
        return info.value
    ds = load(layout, root)
    for _, kind, token in expected:
        entry = [e for e in ds.report if e.kind == kind]
        assert entry and entry[0].count >= 1, (kind, str(ds.report))
        assert any(str(token) in ex for ex in entry[0].examples), (token, entry[0].examples)
    return ds


# ---------------------------------------------------------------- the catalogue

INDICATOR_VALUES = {"inf": "inf", "minus_inf": "-inf", "1e400": "1e400", "Infinity": "Infinity",
                    "text": "12 people", "hex": "0x1A", "decimal_comma": "1,5"}
CASES = []
for _layout in MAKERS:
    for _name, _value in INDICATOR_VALUES.items():
        if _layout != "urbanlib" and _name in ("hex", "decimal_comma"):
            continue
        CASES.append((f"{_layout}-indicator-{_name}", _layout, bad_indicator, 2, _value))
    for _name, _value, _axis in [("lat_text", "north", "lat"), ("lat_95", "95", "lat"), ("lon_text", "east", "lon"),
                                 ("lon_minus_200", "-200", "lon"), ("lat_1e400", "1e400", "lat")]:
        CASES.append((f"{_layout}-coordinate-{_name}", _layout,
                      lambda la, r, row, v, ax=_axis: bad_coordinate(la, r, row, v, ax), 1, _value))
    for _how in ("dotdot", "absolute", "symlink"):
        CASES.append((f"{_layout}-image-path-{_how}", _layout, bad_image_path, 1, _how))
    for _how in ("truncated", "empty", "text", "bomb"):
        CASES.append((f"{_layout}-image-{_how}", _layout, bad_image_content, 1, _how))
    for _how in ("number", "list", "array_line") + (("region_dict", "style_number") if _layout != "urbanclip"
                                                     else ("object",)):
        CASES.append((f"{_layout}-caption-{_how}", _layout, bad_caption, 3, _how))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_catalogue(tmp_path, case):
    name, layout, inject, row, variant = case
    root = MAKERS[layout](tmp_path / layout)
    check_outcome(layout, root, [inject(layout, root, row, variant)])


# ---- cases that are not one of the injectable defects above

def test_catalogue_has_at_least_40_cases():
    assert len(CASES) + len(EXTRA_CASES) >= 40


def _meta(root, **kw):
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, **kw}) if kw else "[1, 2]")


def _rewrite(root, rel, text):
    (root / rel).write_text(text)


EXTRA_CASES = {
    # canonical layout
    "urbanlib-meta-not-object": ("urbanlib", lambda r: _meta(r), "meta.json: expected a JSON object"),
    "urbanlib-meta-version-text": ("urbanlib", lambda r: _meta(r, format_version="1"), "meta.json: format_version"),
    "urbanlib-meta-indicators-not-list": ("urbanlib", lambda r: _meta(r, indicators="gdp"), "meta.json: 'indicators'"),
    "urbanlib-regions-header-only": ("urbanlib", lambda r: _rewrite(r, "regions.csv", "region_id,city,row,col,lon,lat\n"),
                                     "regions.csv: the table has no rows"),
    "urbanlib-regions-empty-file": ("urbanlib", lambda r: _rewrite(r, "regions.csv", ""), "regions.csv: cannot parse"),
    "urbanlib-images-unknown-kind": ("urbanlib", lambda r: _edit_csv(r / "images.csv", 0, "kind", "aerial"),
                                     "images.csv: row 0 kind 'aerial'"),
    "urbanlib-images-street-lat-text": ("urbanlib", lambda r: _edit_csv(r / "images.csv", 1, "lat", "north"),
                                        "images.csv: coordinate column 'lat' row 1"),
    "urbanlib-row-fractional": ("urbanlib", lambda r: _edit_csv(r / "regions.csv", 2, "row", "1.5"),
                                "regions.csv: coordinate column 'row' row 2"),
    "urbanlib-col-negative": ("urbanlib", lambda r: _edit_csv(r / "regions.csv", 2, "col", "-1"),
                              "regions.csv: coordinate column 'col' row 2"),
    "urbanlib-indicator-boolean-text": ("urbanlib", lambda r: _edit_csv(r / "regions.csv", 0, "gdp", "True"),
                                        "regions.csv: column 'gdp' row 0"),
    "urbanlib-captions-invalid-json": ("urbanlib", lambda r: _rewrite(r, "captions.jsonl", '{"region_id": "r0",\n'),
                                       "captions.jsonl: line 1 is not valid JSON"),
    "urbanlib-captions-not-utf8": ("urbanlib", lambda r: (r / "captions.jsonl").write_bytes(b'{"text": "\xff"}\n'),
                                   "captions.jsonl: not UTF-8"),
    # UrbanCLIP release layout
    "urbanclip-bd09-two-dots": ("urbanclip", lambda r: _edit_csv(r / REGIONS_FILE["urbanclip"], 1, "BD09 coordinate",
                                                                 "(12000.1.2, 4700)"),
                                f"{CITY}.csv: row 1 field 'BD09 coordinate'"),
    "urbanclip-bd09-text": ("urbanclip", lambda r: _edit_csv(r / REGIONS_FILE["urbanclip"], 1, "BD09 coordinate",
                                                             "(abc, 4700)"), f"{CITY}.csv: row 1 field 'BD09"),
    "urbanclip-labels-header-only": ("urbanclip", lambda r: _rewrite(r, REGIONS_FILE["urbanclip"], (
        r / REGIONS_FILE["urbanclip"]).read_text().splitlines()[0] + "\n"), f"{CITY}.csv: the labels table has no rows"),
    "urbanclip-labels-empty-file": ("urbanclip", lambda r: _rewrite(r, REGIONS_FILE["urbanclip"], ""),
                                    f"{CITY}.csv: cannot parse CSV"),
    "urbanclip-captions-not-a-list": ("urbanclip", lambda r: _rewrite(r, CAPTIONS_FILE["urbanclip"], '{"a": 1}'),
                                      f"{CITY}_captions.json: expected a list"),
    "urbanclip-image-name-empty": ("urbanclip", lambda r: _edit_csv(r / REGIONS_FILE["urbanclip"], 2,
                                                                    "satellite_img_name", " "),
                                   f"{CITY}.csv: empty satellite_img_name in row 2"),
    # generic layout
    "generic-street-lon-text": ("generic", lambda r: _edit_csv(r / "street_points.csv", 0, "lon", "east"),
                                "street_points.csv: coordinate column 'lon' row 0"),
    "generic-street-lat-out-of-range": ("generic", lambda r: _edit_csv(r / "street_points.csv", 1, "lat", "-95"),
                                        "street_points.csv: coordinate column 'lat' row 1"),
    "generic-captions-not-utf8": ("generic", lambda r: (r / "captions.jsonl").write_bytes(b"\xfe\xff\n"),
                                  "captions.jsonl: not UTF-8"),
    "generic-captions-line-without-text": ("generic", lambda r: _rewrite(r, "captions.jsonl", '{"region_id": "g0"}\n'),
                                           "captions.jsonl: line 1: needs 'region_id' and 'text' or 'caption'"),
    "generic-table-empty-file": ("generic", lambda r: _rewrite(r, "indicators.csv", ""), "indicators.csv: cannot read"),
}


@pytest.mark.parametrize("name", sorted(EXTRA_CASES))
def test_catalogue_extra(tmp_path, name):
    layout, breaker, message = EXTRA_CASES[name]
    root = MAKERS[layout](tmp_path / layout)
    breaker(root)
    with pytest.raises(DataError) as info:
        load(layout, root)
    assert message in str(info.value), str(info.value)


def test_generic_image_table_matching_no_file_is_counted_not_a_keyerror(tmp_path):
    root = make_generic(tmp_path / "g")
    df = pd.read_csv(root / "indicators.csv")
    df.drop(columns=["pic"]).assign(id=[f"other{i}" for i in range(N)]).to_csv(root / "indicators.csv", index=False)
    (root / "captions.jsonl").write_text("")
    columns = {k: v for k, v in GENERIC_COLUMNS.items() if k != "pic"}
    ds = data.load(root, layout="generic", city=CITY, columns=columns)  # images/g0.png ... match no region
    assert (ds.images["kind"] == "satellite").sum() == 0
    assert ds.report.count("region_without_image") == N


def test_canonical_images_of_unknown_regions_and_without_paths_are_counted(tmp_path):
    root = make_canonical(tmp_path / "c")
    _edit_csv(root / "images.csv", 0, "region_id", "nowhere")
    _edit_csv(root / "images.csv", 3, "path", "")
    ds = load("urbanlib", root)
    assert ds.report.count("image_unknown_region") == 1 and ds.report.count("image_without_path") == 1
    assert "nowhere" not in set(ds.images["region_id"])


def test_an_inf_gdp_no_longer_hides_a_cap(tmp_path):
    root = make_urbanclip(tmp_path / "u")
    _edit_csv(root / REGIONS_FILE["urbanclip"], 0, "gdp (million yuan)", "inf")
    with pytest.raises(DataError, match="not finite"):
        load("urbanclip", root)


def test_the_bad_image_is_skipped_and_the_rest_load(tmp_path):
    for layout in MAKERS:
        root = MAKERS[layout](tmp_path / layout)
        before = len(load(layout, root).images)
        bad_image_content(layout, root, 0, "bomb")
        bad_image_content(layout, root, 1, "truncated")
        ds = load(layout, root)
        assert len(ds.images) == before - 2, layout
        assert ds.report.count("image_too_large") == 1 and ds.report.count("unreadable_image") == 1


def test_open_rgb_refuses_a_bomb_and_a_truncated_file_by_name(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_bomb_bytes())
    with pytest.raises(DataError, match="bomb.png: image too large"):
        open_rgb(p)
    q = tmp_path / "cut.png"
    _png(q, 0, size=(32, 32))
    q.write_bytes(q.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.png: cannot read image"):
        open_rgb(q)


def test_synthcity_loads_exactly_as_written(tmp_path):
    from urbanlib.data.synthcity import build

    out = build("synth-ring", scale="smoke", cache_dir=tmp_path, progress=False)
    ds = data.load(out)
    regions = pd.read_csv(out / "regions.csv", dtype={"region_id": str, "city": str})
    for c in ds.indicators:
        regions[c] = regions[c].astype(float)
    pd.testing.assert_frame_equal(ds.regions, regions)
    pd.testing.assert_frame_equal(ds.images, pd.read_csv(out / "images.csv", dtype={"region_id": str}))
    pd.testing.assert_frame_equal(ds.captions, pd.read_json(out / "captions.jsonl", lines=True,
                                                            dtype={"region_id": str}))
    kinds = {e.kind.split("_")[0] for e in ds.report}
    assert kinds <= {"missing", "zero"}, str(ds.report)  # the generator's documented gaps, nothing else


# ---------------------------------------------------------------- fuzzing: random defects on valid datasets

DEFECTS = {
    "indicator": (bad_indicator, list(INDICATOR_VALUES.values())[:5]),
    "lat": (lambda la, r, row, v: bad_coordinate(la, r, row, v, "lat"), ["north", "95", "-91", "1e400", "inf"]),
    "lon": (lambda la, r, row, v: bad_coordinate(la, r, row, v, "lon"), ["east", "181", "-1e400"]),
    "image_path": (bad_image_path, ["dotdot", "absolute", "symlink"]),
    "image_content": (bad_image_content, ["truncated", "empty", "text", "bomb"]),
    "caption": (bad_caption, CAPTION_VARIANTS),
}


@settings(max_examples=60, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(layout=st.sampled_from(sorted(MAKERS)),
       defects=st.lists(st.tuples(st.sampled_from(sorted(DEFECTS)), st.integers(0, N - 1), st.integers(0, 7)),
                        min_size=1, max_size=3))
def test_fuzz_injected_defects_are_refused_or_counted(tmp_path, layout, defects):
    root = tmp_path / "fuzz"
    if root.exists():
        shutil.rmtree(root)
    for extra in tmp_path.glob("fuzz-private"):
        shutil.rmtree(extra)
    MAKERS[layout](root)
    expected, used_rows = [], set()
    for kind, row, pick in defects:
        inject, variants = DEFECTS[kind]
        variant = variants[pick % len(variants)]
        if layout == "urbanclip" and kind == "caption" and variant in ("region_dict", "bool_region", "style_number"):
            variant = "number"  # the release's records have no region_id or style
        if kind.startswith("image"):
            if any(k.startswith("image") for k, _ in used_rows):
                continue  # one image defect per example: a second could hide the first (same row)
            used_rows.add((kind, row))
        expected.append(inject(layout, root, row, variant))
    check_outcome(layout, root, expected)
