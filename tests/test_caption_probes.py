"""The caption-probes results experiment: the real-captions candidates and choice on a SynthCity city."""

import pandas as pd
import pytest

from urbanlib.experiments.caption_probes import STYLES, caption_probe_rows, chosen_table, model_name
from urbanlib.experiments.real_captions import CANDIDATES, SELECTED
from urbanlib.pipeline.city import open_city
from urbanlib.results.registry import EXPERIMENTS
from urbanlib.results.tier import load_all


@pytest.fixture(scope="module")
def rows():
    cities = {split: open_city("synth-ring", "smoke", 0, split=split, progress=False) for split in ("random", "blocked")}
    return pd.DataFrame(caption_probe_rows(cities))


def test_every_candidate_and_the_choice_on_both_splits_and_styles(rows):
    models = set(rows["model"])
    for style in STYLES:
        for candidate in (*CANDIDATES, SELECTED):
            assert model_name(candidate, style) in models
    splits = set(rows["task"].str.split("/").str[1])
    assert splits == {"random", "blocked"}
    assert {"R2_mean", "R2_std", "RMSE_mean", "MAE_mean", "n_test", "chosen_index"} <= set(rows["metric"])


def test_the_chosen_probe_scores_what_its_candidate_scores(rows):
    chosen = chosen_table(rows)
    r2 = rows[rows["metric"] == "R2_mean"].set_index(["model", "task"])["value"]
    assert len(chosen) == 2 * 2 * 7  # styles x splits x indicators
    for c in chosen.itertuples():
        task = f"{c.indicator}/{c.split}"
        assert r2[(model_name(SELECTED, c.style), task)] == r2[(model_name(c.chosen, c.style), task)]


def test_registered_as_a_cheap_unit_per_profile_and_seed():
    load_all()
    exp = EXPERIMENTS["caption_probes"]
    assert not exp.needs_selection and exp.group is None
    plan = exp.plan("full")
    assert len(plan) == 15 and {c["city"] for _, c, _ in plan} == {"synth-ring", "synth-delta", "synth-coast",
                                                                     "synth-canals", "synth-grid"}


def test_results_page_summary_reads_the_stored_rows(rows, tmp_path):
    from urbanlib.results.store import append_rows
    from urbanlib.results.views import caption_probe_summary

    assert all(t.empty for t in caption_probe_summary(tmp_path))
    append_rows("caption_probes", "synth-ring-s0", rows.assign(city="synth-ring").to_dict("records"), {"city": "synth-ring"}, 0, "smoke", 1.0,
                results_dir=tmp_path)
    r2, chosen = caption_probe_summary(tmp_path)
    assert ("short", "blocked") in r2.columns and r2.loc["TF-IDF + ridge", ("units", "")] == 1
    mean = rows[(rows["model"] == "TF-IDF + ridge (long)") & (rows["metric"] == "R2_mean")
                & rows["task"].str.endswith("/random")]["value"].mean()
    assert r2.loc["TF-IDF + ridge", ("long", "random")] == pytest.approx(mean)
    assert chosen.to_numpy().sum() == 2 * 2 * 7  # one choice per style, split and indicator
