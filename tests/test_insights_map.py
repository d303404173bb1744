"""Urban Insights (UrbanCLIP §4.5): the map's data and errors, and the page in a real headless Chromium."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import need_browser

from urbanlib.analysis.insights_map import LEAFLET_DIR, Geometry, InsightsMap, MapLayer
from urbanlib.book.browser import OfflineBrowser, is_blank, is_local
from urbanlib.data.dataset import UrbanDataset

REPO = Path(__file__).resolve().parents[1]
READY = "document.querySelector('.urban-insights[data-ready], .urban-insights[data-error]')"


def _toy(n_side: int = 3, **kw) -> InsightsMap:
    n = n_side * n_side
    rng = np.random.default_rng(0)
    rows, cols = np.divmod(np.arange(n), n_side)
    truth = rng.uniform(1, 100, (n, 2))
    pred = truth * 1.1
    layers = [MapLayer("population", "Indicators", np.log1p(truth[:, 0])),
              MapLayer("gdp", "Indicators", np.log1p(truth[:, 1])),
              MapLayer("m: population residual", "Residuals: m", np.log1p(pred[:, 0]) - np.log1p(truth[:, 0]),
                       kind="diverging")]
    args = dict(title="toy", region_ids=[f"r{i}" for i in range(n)], geometry=Geometry("grid", rows, cols),
                layers=layers, indicators=["population", "gdp"], truth=truth, predictions={"m": pred},
                captions={"caption": [f"caption {i}" for i in range(n)]},
                satellite=rng.integers(0, 255, (n, 3, 8, 8), dtype=np.uint8),
                street=rng.integers(0, 255, (n, 2, 3, 8, 8), dtype=np.uint8))
    return InsightsMap(**{**args, **kw})


def test_layers_get_their_colour_ranges_and_refuse_an_unknown_kind():
    v = np.array([-3.0, -1.0, 0.5, np.nan, 2.0])
    div = MapLayer("r", "Residuals", v, kind="diverging")
    assert div.vmin == -div.vmax and 2.0 <= div.vmax <= 3.0  # symmetric about 0: a residual of 0 is the middle
    seq = MapLayer("s", "Indicators", np.arange(101.0))
    assert (seq.vmin, seq.vmax) == (2.0, 98.0)  # 2nd-98th percentile: one outlier does not flatten the map
    cat = MapLayer("c", "Clusters", [0, 2, 1, -1], kind="categorical")
    assert cat.categories == ["cluster 0", "cluster 1", "cluster 2"]
    assert cat.to_json()["values"] == [0, 2, 1, -1] and seq.to_json()["values"][:3] == [0, 1.0, 2.0]
    assert div.to_json()["values"][3] is None  # NaN -> null: JSON has no NaN
    with pytest.raises(ValueError, match="kind must be one of"):
        MapLayer("x", "g", [1.0], kind="rainbow")


def test_map_checks_its_inputs_and_names_unknown_layers():
    m = _toy()
    assert m.layer("gdp").name == "gdp"
    with pytest.raises(KeyError, match="no layer 'carbon'; layers: .*population"):
        m.layer("carbon")
    with pytest.raises(KeyError, match="initial layer 'carbon' is not a layer"):
        _toy(initial_layer="carbon")
    with pytest.raises(ValueError, match="layer names must be unique; repeated: \\['gdp'\\]"):
        _toy(layers=[MapLayer("gdp", "a", np.zeros(9)), MapLayer("gdp", "b", np.zeros(9))])
    with pytest.raises(ValueError, match="layer 'short' has 4 values for 9 regions"):
        _toy(layers=[MapLayer("short", "a", np.zeros(4))])
    with pytest.raises(ValueError, match="geometry has 4 cells for 9 regions"):
        _toy(geometry=Geometry("grid", np.zeros(4), np.zeros(4)))
    with pytest.raises(ValueError, match="predictions of 'm' have shape"):
        _toy(predictions={"m": np.zeros((9, 3))})
    with pytest.raises(ValueError, match="geometry kind must be"):
        Geometry("mercator", np.zeros(2), np.zeros(2))


def test_the_page_loads_nothing_from_the_network():
    m = _toy()
    with pytest.raises(ValueError, match="book's own files"):
        m.to_html(leaflet="https://unpkg.com/leaflet@1.9.4/dist")
    with pytest.raises(ValueError, match="element_id"):
        m.to_html(element_id="map\"><script>")
    frag = m.to_html(leaflet="../../_static/leaflet")
    assert '<script src="../../_static/leaflet/leaflet.js">' in frag
    assert not re.search(r"https?://|//[a-z0-9.-]+\.(?:com|org|net|io)/|@import|@font-face|url\(http", frag, re.I)
    inline = m.to_html(leaflet="inline")
    assert 'version="1.9.4"' in inline and "<script src=" not in inline and "<link" not in inline
    data = m.data()
    assert data["mosaic"]["src"].startswith("data:image/jpeg;base64,") and data["mosaic"]["rows"] == 3
    assert data["street"]["count"] == [2] * 9 and all(s.startswith("data:image/jpeg") for s in data["street"]["src"])
    # the vendored Leaflet is the release it says it is, with its licence
    assert (LEAFLET_DIR / "LICENSE").read_text().startswith("BSD 2-Clause License")
    assert 't.version="1.9.4"' in (LEAFLET_DIR / "leaflet.js").read_text()


def test_a_caption_cannot_close_the_data_script():
    m = _toy(captions={"caption": ["</script><script>alert(1)</script>"] * 9})
    frag = m.to_html()
    data = frag.split('class="ui-data">', 1)[1].split("</script>", 1)[0]
    assert "<\\/script>" in data  # escaped inside the JSON: the data element ends where it should


def _regions(**cols) -> UrbanDataset:
    base = {"region_id": ["a", "b", "c", "d"], "city": "X", "row": [0, 0, 1, 1], "col": [0, 1, 0, 1],
            "lon": [116.0, 116.01, 116.0, 116.01], "lat": [40.01, 40.01, 40.0, 40.0], "population": [1.0, 2, 3, 4]}
    return UrbanDataset(regions=pd.DataFrame({**base, **cols}))


def test_real_regions_use_polygons_then_corners_then_centres():
    from urbanlib.experiments.insights import region_geometry

    square = [(116.0, 40.0), (116.01, 40.0), (116.01, 40.01), (116.0, 40.01)]
    g = region_geometry(_regions(geometry=[f"POLYGON(({', '.join(f'{a} {b}' for a, b in square)}, 116 40))"] * 4))
    assert g.kind == "wgs84" and g.polygons[0][1] == [40.0, 116.01]  # WKT (lon lat) -> Leaflet [lat, lon]
    g = region_geometry(_regions(sw_lat=[40.0] * 4, sw_lon=[116.0] * 4, ne_lat=[40.01] * 4, ne_lon=[116.01] * 4))
    assert g.polygons[0] == [[40.0, 116.0], [40.0, 116.01], [40.01, 116.01], [40.01, 116.0]]
    g = region_geometry(_regions())
    assert "no cell polygons" in g.note
    lats = [p[0] for p in g.polygons[0]]
    assert np.isclose(max(lats) - min(lats), 0.01)  # squares as wide as the centre spacing
    with pytest.raises(ValueError, match=r"regions.polygon\[0\]: a polygon needs at least 3 corners"):
        region_geometry(_regions(polygon=[[(116.0, 40.0)]] * 4))
    bad = _regions()
    bad.regions.loc[0, "lon"] = np.nan
    with pytest.raises(ValueError, match="no lon/lat centre"):
        region_geometry(bad)


def test_an_unknown_model_or_city_is_refused():
    from urbanlib.experiments.insights import build_insights
    from urbanlib.pipeline.city import open_city

    with pytest.raises(ValueError, match="not a SynthCity profile"):
        open_city("synth-nowhere", "smoke", progress=False)
    city = open_city("synth-ring", "smoke", progress=False)
    with pytest.raises(KeyError, match="unknown model 'GPT-9'"):
        build_insights(city, ["GPT-9"], log=lambda *_: None)


# ---------------------------------------------------------------- the page in headless Chromium


@pytest.fixture(scope="module")
def smoke_map():
    from urbanlib.experiments.insights import build_insights
    from urbanlib.pipeline.city import open_city

    city = open_city("synth-ring", "smoke", progress=False)
    return build_insights(city, ["UrbanCLIP", "PCA"], log=lambda *_: None)


def _fills(b) -> list[str]:
    return b.js("return Array.from(document.querySelectorAll('path.ui-cell'))"
                ".map(p => p.getAttribute('fill') + '/' + p.getAttribute('fill-opacity'));")


def test_the_map_in_headless_chromium_offline(smoke_map, tmp_path):
    need_browser()
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    m = smoke_map
    page = m.write_page(tmp_path / "site" / "map.html")
    n = len(m.region_ids)
    with OfflineBrowser() as b:
        seconds = b.open(page, ready=READY)
        root = b.find(".urban-insights")
        assert root.get_attribute("data-error") is None, root.get_attribute("data-error")
        assert seconds < 25  # a loose bound (open() itself gives up at 30 s): CPU-rendered Chromium on a loaded box
        box = b.find(".leaflet-container").rect
        assert box["width"] > 400 and box["height"] > 400  # the map container renders
        assert b.find_all("img.ui-base")  # the tile mosaic is the base layer
        assert len(b.find_all("path.ui-cell")) == n == 64  # one cell per region

        before = _fills(b)
        assert {f.split("/")[1] for f in before} == {"0"}  # tiles and grid only: no fill
        Select(b.find("select.ui-layer")).select_by_value("population")
        population = _fills(b)
        assert population != before and len({f.split("/")[0] for f in population}) > 10
        assert "ln(1 + population)" in b.find(".ui-legend").text
        Select(b.find("select.ui-layer")).select_by_value("UrbanCLIP: population residual")
        assert _fills(b) != population and "prediction - truth" in b.find(".ui-legend").text
        assert root.get_attribute("data-layer") == "UrbanCLIP: population residual"
        options = [o.get_attribute("value") for o in b.find_all("select.ui-layer option")]
        assert options == ["", *m.layer_names] and "PCA: latent clusters" in options

        i = 27
        rid = m.region_ids[i]
        b.find(f"path.ui-cell[data-region='{rid}']").click()
        panel = b.find(".ui-panel")
        assert panel.is_displayed() and root.get_attribute("data-selected") == rid
        text = panel.text.replace("\n", " ")
        assert rid in text
        for name in m.indicators:
            assert name in text
        for title, texts in m.captions.items():
            assert texts[i] and texts[i] in text, title
        low = text.lower()  # section titles are upper-cased by CSS
        assert "generated by the trained urbanclip decoder" in low and "pois by category" in low
        food = int(m.poi_counts[i, m.poi_categories.index("food")])
        assert f"food {food} " in low  # POI counts shown as integers
        b.wait("document.querySelector('.ui-panel img.ui-street').naturalWidth > 0", timeout_s=10)  # they decode
        assert b.find(".ui-panel .ui-tile").rect["width"] > 100

        other = m.region_ids[5]
        search = b.find("input.ui-search")
        search.send_keys(other, Keys.ENTER)
        assert root.get_attribute("data-selected") == other and other in b.find(".ui-panel").text
        search.clear()
        search.send_keys("no-such-region", Keys.ENTER)
        assert "no region matches" in b.find(".ui-status").text

        shot = b.screenshot(tmp_path / "map.png")
        assert not is_blank(shot)
        severe = [e for e in b.console() if e.get("level") == "SEVERE"]
        assert not severe, severe
        asked = b.requests()
        assert any(u.endswith("/leaflet/leaflet.js") for u in asked)  # the log sees the page's requests
        assert all(is_local(u) for u in asked) and not b.external_requests()  # nothing left the machine

        # the harness blocks the network: an image from elsewhere is refused and recorded
        b.js("const i = new Image(); i.id = 'probe'; i.onerror = () => i.dataset.failed = '1';"
             "i.src = 'http://urbanlib.invalid/x.png'; document.body.appendChild(i);")
        b.wait("document.getElementById('probe').dataset.failed === '1'", timeout_s=10)
        assert b.external_requests() == ["http://urbanlib.invalid/x.png"]


def test_screenshots_of_nothing_are_blank(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (255, 255, 255)).save(tmp_path / "white.png")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    assert is_blank(tmp_path / "white.png") and not is_blank(tmp_path / "noise.png")


@pytest.mark.notebooks
def test_the_notebook_draws_the_map_and_saves_a_standalone_page(tmp_path, monkeypatch):
    import nbformat
    import papermill as pm

    monkeypatch.setenv("URBANLIB_NUM_THREADS", "1")
    out, html = tmp_path / "urban_insights.ipynb", tmp_path / "map.html"
    pm.execute_notebook(str(REPO / "notebooks" / "urban_insights.ipynb"), str(out), kernel_name="python3",
                        parameters={"scale": "smoke", "models": ["UrbanCLIP", "PCA"], "save_html": str(html)},
                        progress_bar=False, cwd=str(REPO / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    pages = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any('class="urban-insights"' in p and "../../_static/leaflet/leaflet.js" in p for p in pages)
    assert 'version="1.9.4"' in html.read_text()  # the saved page carries Leaflet inline
    warnings = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr" and "Warning" in o.text]
    assert not warnings, warnings[:2]
