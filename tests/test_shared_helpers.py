"""One of each helper: hashes that key cached cities and captions, the seeded generator, sentence splitting, caption
readers, POI columns and the split names, each defined once and giving what the copies it replaced gave.

Literal values were computed with the replaced code (commit 97d0d6b) before the change.
"""

import re

import numpy as np
import pandas as pd
import pytest

from urbanlib.cache import stable_hash
from urbanlib.captions import standins
from urbanlib.data import validate
from urbanlib.data.dataset import poi_columns
from urbanlib.data.report import DataError
from urbanlib.data.sentences import STATEMENT_START, split_sentences
from urbanlib.data.synthcity.captions import scene_hash, seeded_rng
from urbanlib.data.synthcity.config import DEFAULT_PARAMS, GENERATOR_VERSION, cache_key, load_profile
from urbanlib.scales import get_scale

OBJECTS = [{"cls": "house", "bbox": [1, 2, 10, 12], "colour": "red", "floors": 2},
           {"cls": "tree", "bbox": [3, 4, 5, 6]}]


def test_scene_hash_is_unchanged_by_moving_to_stable_hash():
    # every cached caption set is seeded by these hashes: a different string would re-caption every city
    assert scene_hash(OBJECTS, "satellite", 64) == "2138b083586eee66bcd135e27e33130562c65ee9591006fbde037f5405ceb722"
    assert scene_hash([], "street", 32) == "c2a59c24ad60b7c388b6dec0f68166a10ce0dcdcfa23b024caa8b3e9f9752c6e"
    assert (scene_hash([{"cls": "car", "bbox": [0.5, 1.25, 2, 3], "name": "\u00e9"}], "street", 48)
            == "0979bd9e5d8b2ad6c7030cfe4d9bb601e00a12a51c03c91d094515c3b8b2ae3d")
    assert scene_hash(OBJECTS, "satellite", 64) == stable_hash({"kind": "satellite", "size": 64, "objects": OBJECTS},
                                                               n=64)


# full: the folder synth-ring-full-s0-5db2755a1432f77f of the tier's cache
@pytest.mark.parametrize("scale, seed, key", [("default", 0, "1fde96c0b9dc4848"), ("smoke", 1, "abf038180b8c6e6d"),
                                              ("full", 0, "5db2755a1432f77f")])
def test_synthcity_cache_keys_are_unchanged(scale, seed, key):
    assert cache_key(load_profile("synth-ring"), get_scale(scale).data_dict(), seed, DEFAULT_PARAMS) == key


def test_cache_key_cannot_be_stable_hash():
    # why config.cache_key keeps its own hash: stable_hash's compact JSON is another text, so another key
    profile, scale = load_profile("synth-ring"), get_scale("full").data_dict()
    same_fields = {"version": GENERATOR_VERSION, "profile": profile, "scale": scale, "seed": 0,
                   "params": DEFAULT_PARAMS.to_dict()}
    assert stable_hash(same_fields) != cache_key(profile, scale, 0, DEFAULT_PARAMS) == "5db2755a1432f77f"


def test_seeded_rng_draws_what_both_replaced_copies_drew():
    # the captioners' _seed_ints(...) gave these four seed words
    for parts, words in [((0, "abc", "short", "shared"), [3656245435, 3599643605, 730424444, 2976708335]),
                         ((3, "x", "long", "captioner-a"), [1845701488, 1539540577, 2045836600, 1979659561]),
                         ((), [1120186595, 337443992, 3371498394, 616132505])]:
        np.testing.assert_array_equal(seeded_rng(*parts).random(5), np.random.default_rng(words).random(5))
    # the stand-ins' _rng(0, "images/r0c0.png", "segmenter").random(3)
    assert seeded_rng(0, "images/r0c0.png", "segmenter").random(3).tolist() == [
        0.34941041118289884, 0.39985495786911374, 0.09622725545622446]
    assert standins.seeded_rng is seeded_rng


# --- sentences: the three replaced splitters, verbatim ------------------------------------------------------

def _parser_split(text):
    parts = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return [p.strip() for p in parts if p.strip()]


_REFINE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\-\u2013A-Z0-9])|\n+")


def _refine_split(text):
    return [s.strip() for s in _REFINE.split(text.strip()) if s and s.strip()]


def _text_features_split(text):
    parts = [p.strip() for p in re.compile(r"(?<=[.!?])\s+").split(text.strip())]
    return [p for p in parts if p] or [text.strip()]


TEXTS = ["", "  ", "a. b", "a\nb", "A road. Two cars! - Trees: many.\nGrass", "About 3.5 km of road. Fine.",
         "approx. three cars. (Left) side! 'Quoted' x? \u2013 dash", "no end", "Ends.\n\n\nNext line\nlast.",
         "e.g.  multiple   spaces.   Next", "1. item\t2. item", "?!.", "Hi.\r\nThere", "x.\u00a0Y"]


def _random_texts(n=2000):
    rng = np.random.default_rng(0)
    alphabet = list("aB3. !?\n\t'\"(-\u2013xZ,")
    return ["".join(rng.choice(alphabet, size=rng.integers(0, 30))) for _ in range(n)]


def test_each_callers_rule_splits_as_its_own_copy_did():
    for t in TEXTS + _random_texts():
        assert split_sentences(t) == _parser_split(t), t
        assert split_sentences(t, next_starts=STATEMENT_START) == _refine_split(t), t
        assert (split_sentences(t, line_breaks=False) or [t.strip()]) == _text_features_split(t), t


def test_the_rules_differ_where_the_callers_need_them_to():
    assert split_sentences("approx. three cars. Two") == ["approx.", "three cars.", "Two"]
    assert split_sentences("approx. three cars. Two", next_starts=STATEMENT_START) == ["approx. three cars.", "Two"]
    assert split_sentences("a road\nno stop") == ["a road", "no stop"]
    assert split_sentences("a road\nno stop", line_breaks=False) == ["a road\nno stop"]
    assert split_sentences("  ") == []


# --- caption readers ----------------------------------------------------------------------------------------

def test_release_caption_records_read_nested_and_flat_lists(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('[[{"caption": "a", "image": "x"}], [], [{"caption": "b", "image": "y"}, 3]]')
    assert validate.release_caption_records(p) == [(0, 0, {"caption": "a", "image": "x"}),
                                                   (2, 0, {"caption": "b", "image": "y"}), (2, 1, 3)]
    p.write_text('[{"caption": "a", "image": "x"}, {"caption": "b"}]')  # flat: one group
    assert [(g, r) for g, r, _ in validate.release_caption_records(p)] == [(0, 0), (0, 1)]
    p.write_text("[]")
    assert validate.release_caption_records(p) == []
    for bad, msg in [('{"a": 1}', "expected a list of lists"), ('[[{"a": 1}], {"b": 2}]', "expected a list of lists"),
                     ("[[{", "invalid JSON")]:
        p.write_text(bad)
        with pytest.raises(DataError, match=msg):
            validate.release_caption_records(p)


def test_caption_lines_checks_every_non_blank_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"region_id": 1, "caption": "a"}\n\n  \n{"region_id": "r2", "text": null, "x": 1}\n')
    assert validate.caption_lines(p) == [{"region_id": 1, "caption": "a"}, {"region_id": "r2", "text": None, "x": 1}]
    with pytest.raises(DataError, match=r"line 1: needs 'region_id' and 'text'"):
        validate.caption_lines(p, text_keys=("text",))
    p.write_bytes(b'{"region_id": 1, "text": "\xe9"}\n')
    with pytest.raises(DataError, match="not UTF-8 text"):
        validate.caption_lines(p)


# --- the rest -----------------------------------------------------------------------------------------------

def test_poi_columns_keep_the_tables_order():
    regions = pd.DataFrame(columns=["region_id", "poi_cat_shop", "poi_count", "poi_cat_food", "population"])
    assert poi_columns(regions) == ["poi_cat_shop", "poi_cat_food"]  # PG-SimCLR's order: not sorted
    assert poi_columns(pd.DataFrame(columns=["region_id"])) == []


def test_the_split_names_are_the_pipelines():
    from urbanlib.experiments import real_captions
    from urbanlib.pipeline import city

    assert real_captions.SPLITS is city.SPLITS


def test_one_results_folder_split_list_and_parameter_count(tmp_path, monkeypatch):
    from torch import nn

    from urbanlib import cache
    from urbanlib.models.parameters import count_parameters
    from urbanlib.pipeline import city, hparams, runs
    from urbanlib.results import store, tier

    monkeypatch.setenv("URBANLIB_RESULTS", str(tmp_path))
    assert store.results_root is cache.results_root and cache.results_root() == tmp_path
    assert hparams.selected_path() == tmp_path / "selected_lr.json" and runs.archive_dir() == tmp_path / "runs"
    assert tier.SPLITS is city.SPLITS
    m = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))  # 9 + 4 parameters
    m[0].requires_grad_(False)
    assert count_parameters(m) == {"total": 13, "trainable": 4, "frozen": 9}  # what the baselines' tuple held, too
