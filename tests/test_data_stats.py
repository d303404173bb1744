import numpy as np
import pandas as pd
import pytest

from urbanlib.data import UrbanDataset
from urbanlib.data.stats import caption_table, image_table, indicator_table, morans_i


def test_morans_i_hand_computed():
    # 1x4 line: values 1,2,3,4 -> z = -1.5,-.5,.5,1.5 ; rook pairs (both directions): 6 ; sum w z z = 2*(.75-.25+.75)=2.5
    v = np.array([1.0, 2, 3, 4])
    assert morans_i(v, np.zeros(4), np.arange(4)) == pytest.approx(4 / 6 * 2.5 / 5.0)
    # checkerboard is perfectly negatively autocorrelated
    r, c = np.divmod(np.arange(16), 4)
    assert morans_i(((r + c) % 2).astype(float), r, c) == pytest.approx(-1.0)


def test_tables_count_missing_and_truth():
    regions = pd.DataFrame({"region_id": ["a", "b", "c"], "city": "x", "row": [0, 0, 1], "col": [0, 1, 0],
                            "lon": 0.0, "lat": 0.0, "population": [1.0, np.nan, 3.0]})
    images = pd.DataFrame({"region_id": ["a", "b", "c", "a"], "kind": ["satellite"] * 3 + ["street"],
                           "path": ["1", "2", "3", "4"], "lon": np.nan, "lat": np.nan})
    captions = pd.DataFrame({"region_id": ["a", "b"], "image": ["1", "2"], "source": "s", "style": "short",
                             "text": ["one two three", "four five"],
                             "statements": [[{"true": True, "kind": "fact"}, {"true": False, "kind": "hallucination"}],
                                            [{"true": True, "kind": "fact"}]]})
    ds = UrbanDataset(regions, images, captions)
    t = indicator_table(ds).iloc[0]
    assert (t["regions"], t["missing"], t["mean"]) == (2, 1, 2.0)
    it = image_table(ds).iloc[0]
    assert (it["satellite_images"], it["street_views"], it["regions_without_street_views"]) == (3, 1, 2)
    ct = caption_table(ds).iloc[0]
    assert ct["mean_words"] == 2.5 and ct["false_statement_rate"] == pytest.approx(1 / 3)
