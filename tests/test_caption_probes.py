"""The caption-probes results experiment: the real-captions candidates and choice on a SynthCity city."""

import numpy as np
import pandas as pd
import pytest

from urbanlib.eval.caption_candidates import CANDIDATES, FIXED_CANDIDATES, SELECTED, TFIDF
from urbanlib.experiments.caption_probes import STYLES, caption_probe_rows, chosen_table, model_name
from urbanlib.pipeline.city import open_city
from urbanlib.results.registry import EXPERIMENTS
from urbanlib.results.tier import _caption_probes, load_all

SPLITS = ("random", "blocked")


@pytest.fixture(scope="module")
def cities():
    return {split: open_city("synth-ring", "smoke", 0, split=split, progress=False) for split in SPLITS}


@pytest.fixture(scope="module")
def rows():
    return pd.DataFrame(_caption_probes({"city": "synth-ring"}, 0, "smoke"))  # the tier's own unit


def test_every_candidate_and_the_choice_on_both_splits_and_styles(rows):
    assert set(rows["city"]) == {"synth-ring"}
    models = set(rows["model"])
    for style in STYLES:
        for candidate in (*FIXED_CANDIDATES, SELECTED):
            assert model_name(candidate, style) in models
    assert set(rows["task"].str.split("/").str[1]) == set(SPLITS)
    assert {"R2_mean", "R2_std", "RMSE_mean", "MAE_mean", "n_test", "chosen_index"} <= set(rows["metric"])


def test_std_is_over_probe_seeds(rows):
    std = rows[rows["metric"] == "R2_std"].set_index("model")["value"]
    assert (std[model_name(TFIDF, "short")] == 0).all()  # ridge is deterministic: one value per seed
    assert (std[model_name("MiniLM + MLP probe", "short")] > 0).any()  # two smoke seeds, two MLP heads


def test_the_choice_never_reads_the_test_regions(cities):
    one = {"random": cities["random"]}  # one split: another split's test regions train this one
    targets = one["random"].ds.log_targets()
    test = one["random"].split.test
    scrambled = targets.copy()
    noise = np.random.default_rng(0).normal(np.nanmean(targets[test], 0), 3 * np.nanstd(targets[test], 0),
                                            size=targets[test].shape)
    scrambled[test] = np.where(np.isnan(targets[test]), np.nan, noise)  # missing stays missing
    a = pd.DataFrame(caption_probe_rows(one, styles=("short",))).assign(city="synth-ring")
    b = pd.DataFrame(caption_probe_rows(one, styles=("short",), targets=scrambled)).assign(city="synth-ring")
    pd.testing.assert_frame_equal(chosen_table(a), chosen_table(b))
    r2 = "R2_mean"
    assert not np.allclose(a[a["metric"] == r2]["value"], b[b["metric"] == r2]["value"])


def test_registered_as_a_cheap_unit_per_profile_and_seed():
    load_all()
    exp = EXPERIMENTS["caption_probes"]
    assert not exp.needs_selection and exp.group is None and not exp.verify_in_ci
    plan = exp.plan("full")
    assert len(plan) == 15 and {c["city"] for _, c, _ in plan} == {"synth-ring", "synth-delta", "synth-coast",
                                                                     "synth-canals", "synth-grid"}


def test_results_page_summary_reads_the_stored_rows(rows, tmp_path):
    from urbanlib.results.store import append_rows
    from urbanlib.results.views import caption_probe_summary

    assert all(t.empty for t in caption_probe_summary(tmp_path))
    append_rows("caption_probes", "synth-ring-s0", rows.to_dict("records"), {"city": "synth-ring"}, 0, "smoke", 1.0,
                results_dir=tmp_path)
    r2, chosen = caption_probe_summary(tmp_path)
    assert ("short", "blocked") in r2.columns and r2.loc["TF-IDF + ridge", ("units", "")] == 1
    mean = rows[(rows["model"] == "TF-IDF + ridge (long)") & (rows["metric"] == "R2_mean")
                & rows["task"].str.endswith("/random")]["value"].mean()
    assert r2.loc["TF-IDF + ridge", ("long", "random")] == pytest.approx(mean)
    picks = rows[rows["metric"] == "chosen_index"]
    short_random = picks[picks["model"].str.endswith("(short)") & picks["task"].str.endswith("/random")]
    expected = pd.Series([CANDIDATES[int(v)] for v in short_random["value"]]).value_counts()
    got = chosen.loc[("short", "random")]
    assert got[got > 0].sort_index().to_dict() == expected.sort_index().to_dict()


def test_a_city_without_captions_is_refused_by_name(cities):
    from dataclasses import replace

    from urbanlib.data.report import DataError

    city = cities["random"]
    bare = replace(city, ds=replace(city.ds, captions=city.ds.captions.iloc[:0]))
    with pytest.raises(DataError, match="synth-ring.*no non-empty captions"):
        caption_probe_rows({"random": bare})
