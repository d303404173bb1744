"""The generic layout's options from a dataset config file, UrbanCLIP-style JSON captions, and already-logged indicators."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from urbanlib import data
from urbanlib.data.report import DataError


def _folder(tmp_path, captions_json: bool = True):
    root = tmp_path / "city"
    (root / "images").mkdir(parents=True)
    pd.DataFrame({"id": ["r0", "r1", "r2"], "lon": [10.0, 10.01, 10.02], "lat": [50.0, 50.0, 50.0],
                  "log_pop": np.log1p([100.0, 1000.0, 10.0]), "gdp": [5.0, 6.0, 7.0],
                  "tile": ["t/a.jpg", "t/b.jpg", "t/c.jpg"]}).to_csv(root / "table.csv", index=False)
    records = [[{"caption": "Roads and buildings", "image": "t/a.jpg"}, {"caption": "A park", "image": "t/a.jpg"}],
               [{"caption": "Farmland", "image": "t/c.jpg"}]]
    (root / "caps.json").write_text(json.dumps(records))
    return root


def test_config_file_supplies_options_and_arguments_override_it(tmp_path):
    root = _folder(tmp_path)
    (root / "dataset.yml").write_text(
        "city: Testburg\nindicators: table.csv\ncolumns: {id: region_id, log_pop: population, tile: image}\n"
        "captions: caps.json\ntransforms: {population: log1p}\ncheck_images: false\n")
    ds = data.load(root, layout="generic")
    assert ds.cities == ["Testburg"] and len(ds) == 3
    np.testing.assert_allclose(ds.regions["population"], [100.0, 1000.0, 10.0])  # delogged once
    np.testing.assert_allclose(ds.log_targets(["population"])[:, 0], np.log1p([100.0, 1000.0, 10.0]))
    assert ds.report.count("delogged_population") == 3
    assert ds.captions.groupby("region_id").size().to_dict() == {"r0": 2, "r2": 1}  # matched through the image column
    assert ds.meta["config"].endswith("dataset.yml")
    no_caps = data.load(root, layout="generic", captions=None)  # an argument beats the config
    assert len(no_caps.captions) == 0


def test_release_json_captions_match_region_file_names(tmp_path):
    root = tmp_path / "c"
    (root / "images").mkdir(parents=True)
    pd.DataFrame({"region_id": ["a", "b"], "population": [1.0, 2.0]}).to_csv(root / "indicators.csv", index=False)
    (root / "captions.json").write_text(json.dumps([{"caption": "Houses", "image": "images/a.jpg"},
                                                    {"caption": "Trees", "image": "b.png"}]))
    ds = data.load(root, layout="generic", city="X", captions="captions.json", check_images=False)
    assert sorted(ds.captions["region_id"]) == ["a", "b"] and set(ds.captions["source"]) == {"urbanclip-json"}
    (root / "bad.json").write_text(json.dumps([[{"image": "a.jpg"}]]))
    with pytest.raises(DataError, match=r"record \[0\]\[0\]"):
        data.load(root, layout="generic", city="X", captions="bad.json", check_images=False)


def test_a_log_prefixed_indicator_is_warned_about_not_silently_logged_twice(tmp_path):
    root = _folder(tmp_path)
    cols = {"id": "region_id", "log_pop": "population"}
    with pytest.warns(UserWarning, match="looks already logged"):
        ds = data.load(root, layout="generic", city="T", indicators="table.csv", columns=cols, captions=None,
                       check_images=False)
    assert ds.report.count("looks_logged_population") == 3
    np.testing.assert_allclose(ds.regions["population"], np.log1p([100.0, 1000.0, 10.0]))  # kept as given
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declared raw: no warning
        data.load(root, layout="generic", city="T", indicators="table.csv", columns=cols, captions=None,
                  check_images=False, transforms={"population": "none"})


def test_bad_config_and_transform_are_refused_by_name(tmp_path):
    root = _folder(tmp_path)
    (root / "dataset.yml").write_text("colums: {id: region_id}\n")
    with pytest.raises(DataError, match="unknown option.*colums"):
        data.load(root, layout="generic", city="T")
    (root / "dataset.yml").unlink()
    with pytest.raises(DataError, match=r"transforms\['population'\] = 'exp'"):
        data.load(root, layout="generic", city="T", indicators="table.csv", captions=None, check_images=False,
                  columns={"id": "region_id", "log_pop": "population"}, transforms={"population": "exp"})
