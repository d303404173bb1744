"""The worked example end to end: SynthCity -> raw geodata -> build_city -> the generator's truth back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rasterio")
pytest.importorskip("exactextract")
from PIL import Image  # noqa: E402

from urbanlib.data import load, synthcity  # noqa: E402
from urbanlib.geo import build_city  # noqa: E402
from urbanlib.geo.example import write_example_inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    folder = tmp_path_factory.mktemp("example")
    out = build_city(write_example_inputs(folder))
    return load(out), synthcity.load_city("synth-ring", scale="smoke", progress=False)


def test_built_example_recovers_the_generators_values(example):
    built, truth = example
    t = truth.regions.set_index(["row", "col"])
    b = built.regions.set_index(["row", "col"]).loc[t.index]
    for name in ("population", "gdp"):  # UTM count rasters aligned with the cells: exact
        assert np.array_equal(np.isnan(b[name]), np.isnan(t[name]))
        assert np.allclose(b[name].dropna(), t[name].dropna(), rtol=1e-6)
    cats = [c for c in t.columns if c.startswith("poi_cat_")]
    assert (b[cats].to_numpy() == t[cats].to_numpy()).all() and (b["poi_count"] == t["poi_count"]).all()
    for name, tol in (("night_light", 0.01), ("carbon", 0.05)):  # EPSG:4326 rasters: pixels straddle cell edges
        ok = b[name].notna() & t[name].notna()
        rel = (b.loc[ok, name] - t.loc[ok, name]).abs() / t.loc[ok, name].abs()
        assert ok.sum() >= 55 and rel.median() < tol, (name, rel.describe())
    assert len(built.street_paths()) == len(truth.street_paths())
    tsat, bsat = truth.satellite_paths(), built.satellite_paths()
    for (r, c), rid in list(zip(t.index, t["region_id"], strict=True))[::9]:
        a = np.asarray(Image.open(tsat[rid]).convert("RGB")).astype(int)
        assert np.abs(a - np.asarray(Image.open(bsat[b.loc[(r, c), "region_id"]])).astype(int)).max() <= 1
    report = {e["kind"]: e["count"] for e in built.meta["build_report"]}
    assert report["poi_unknown_category"] == 2


def test_example_without_captions_writes_none(tmp_path):
    config = write_example_inputs(tmp_path)
    assert (tmp_path / "captions.jsonl").exists() and "captions.jsonl" in config.read_text()
    bare = write_example_inputs(tmp_path, captions=False)  # the same folder again, now without
    assert not (tmp_path / "captions.jsonl").exists() and "captions: null" in bare.read_text()


@pytest.mark.notebooks
def test_own_city_guide_runs_on_the_example(tmp_path):
    import nbformat
    import papermill as pm

    out = tmp_path / "own_city.ipynb"
    pm.execute_notebook(str(REPO / "notebooks/own_city.ipynb"), str(out), kernel_name="python3", progress_bar=False,
                        parameters={"scale": "smoke", "work_dir": str(tmp_path / "work")}, cwd=str(REPO / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    warnings = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr" and "Warning" in o.text]
    assert not warnings, warnings[:2]
    from urbanlib.book.check import NAN  # the rendered page must pass the book's browser check
    shown = [o.get("text", "") + o.get("data", {}).get("text/html", "") + o.get("data", {}).get("text/plain", "")
             for o in outputs]
    assert not [t for t in shown if NAN.search(t)], [NAN.search(t).group(0) for t in shown if NAN.search(t)]
    assert (tmp_path / "work" / "inputs" / "built" / "meta.json").is_file()
    assert sum(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs) >= 4


FAST_MODELS = ["PCA", "UrbanCLIP", "UrbanCLIP (random init)"]  # a baseline, ours and its random-init twin


@pytest.mark.notebooks
def test_book_pages_run_on_the_built_example(example, tmp_path, monkeypatch):
    """The Done-when check, in ``make test``: on the city built from the synthetic inputs, the data page
    runs, UrbanCLIP pretrains and the benchmark probes it, at smoke scale, with a few of the table's
    rows (the slow test below runs all of them).

    The benchmark reuses the pretraining page's run from the shared cache. Measured on one thread,
    kernel starts included: 50-65 s for the three pages (data 8 s), plus 6 s to write the inputs and
    build the city (the module's fixture).
    """
    import nbformat
    import pandas as pd
    import papermill as pm

    built, _ = example
    cache = tmp_path / "cache"
    monkeypatch.setenv("URBANLIB_CACHE", str(cache))
    monkeypatch.setenv("URBANLIB_NUM_THREADS", "1")
    common = {"data_dir": str(built.root), "city": "example-city", "scale": "smoke"}
    pages = {}
    for notebook, extra in (("data.ipynb", {}), ("pretrain_urbanclip.ipynb", {}),
                            ("benchmark.ipynb", {"models": FAST_MODELS})):
        out = tmp_path / notebook
        pm.execute_notebook(str(REPO / "notebooks" / notebook), str(out), kernel_name="python3", progress_bar=False,
                            parameters={**common, **extra}, cwd=str(REPO / "notebooks"))
        nb = nbformat.read(out, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "error"], notebook
        pages[notebook] = json.dumps([o.get("text", "") or o.get("data", {}).get("text/markdown", "")
                                      or o.get("data", {}).get("text/plain", "") for o in outputs])
    assert "64 regions," in pages["data.ipynb"]  # the data page's opening line counts the built city's regions
    assert "example-city" in pages["pretrain_urbanclip.ipynb"]
    assert "UrbanCLIP (trained)" in pages["pretrain_urbanclip.ipynb"]  # the retrieval table against random init
    # the benchmark's tidy rows: every requested model probed on every indicator of the built city
    metrics = pd.read_csv(cache / "results" / "benchmark-example-city-smoke-random.csv")
    assert set(metrics["model"]) == set(FAST_MODELS)
    assert set(built.indicators) <= set(metrics["indicator"])
    r2 = metrics[metrics["metric"] == "R2"]
    assert len(r2) == len(FAST_MODELS) * len(built.indicators) * 2 and np.isfinite(r2["value"]).all()  # 2 probe seeds
    # one UrbanCLIP run in the cache: the benchmark's row is the pretraining page's encoder, not a second run
    assert len(list((cache / "runs").glob("urbanclip-example-city-*"))) == 1


@pytest.mark.slow
@pytest.mark.notebooks
def test_benchmark_page_runs_every_model_on_the_built_example(example, tmp_path):
    """Measured: 150 s at smoke scale, one thread (every row of the table)."""
    import nbformat
    import papermill as pm

    built, _ = example
    out = tmp_path / "benchmark.ipynb"
    pm.execute_notebook(str(REPO / "notebooks/benchmark.ipynb"), str(out), kernel_name="python3",
                        progress_bar=False,
                        parameters={"data_dir": str(built.root), "city": "example-city", "scale": "smoke"},
                        cwd=str(REPO / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
