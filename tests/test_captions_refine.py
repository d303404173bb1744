"""UrbanCLIP rule-based caption refinement and its measurement on SynthCity (issue 7, part A)."""

import json

import numpy as np
import pandas as pd
import pytest

from urbanlib.captions.refine_rules import (
    RefineRules,
    Rule,
    evaluate_refinement,
    label_statements,
    plot_refinement,
    refine,
    refine_captions,
    removals_by_kind,
)
from urbanlib.data.report import DataError
from urbanlib.data.sentences import STATEMENT_START, split_sentences

FACT = "Three grey office buildings stand along the main road."


@pytest.fixture(scope="module")
def rules():
    return RefineRules.default()


@pytest.mark.parametrize("rule, sentence", [
    ("assistant_chatter", "Sure, here is a detailed description of the satellite image."),
    ("assistant_chatter", "As an AI, I cannot see the buildings in detail."),
    ("about_the_image", "The image is slightly blurry in the upper corner."),
    ("about_the_image", "The perspective of the image is from a car, giving the viewer a sense of motion."),
    ("hedge", "It is likely to be a new campus of a university."),
    ("hedge", "The large building might be a shopping mall."),
    ("hedge", "There are possibly some warehouses near the river."),
    ("hedge", "The roads seem to be congested."),
    ("subjective", "The harmonious mix of buildings and trees delights visitors."),
    ("subjective", "Tall buildings give the street a vibrant feel."),
    ("unobservable", "Leafless trees along the road hint at winter."),
    ("vague_summary", "Overall, the street is full of buildings and cars."),
    ("off_topic", "It is a typical example of modern urban planning."),
    ("off_topic", "The sky above is a clear blue."),
])
def test_each_removal_rule_removes_its_case_and_keeps_a_fact(rules, rule, sentence):
    res = refine(f"{sentence} {FACT}", rules)
    assert res.removed == [(sentence, rule)]
    assert res.text == FACT and res.kept == [FACT]


@pytest.mark.parametrize("rule, sentence, expected", [
    ("framing_prefix", "In this satellite image, there are four crop fields near the river.",
     "There are four crop fields near the river."),
    ("framing_prefix", "Looking at the region from above, the houses have red roofs.", "The houses have red roofs."),
    ("image_as_subject", "The image depicts a large industrial area with several buildings.",
     "A large industrial area with several buildings."),
    ("image_as_subject", "The scene also features a bridge over the river.", "A bridge over the river."),
    ("inference_clause", "There are multiple vehicles parked around the area, indicating ongoing activities.",
     "There are multiple vehicles parked around the area."),
    ("inference_clause", "The area is surrounded by trees and grass, giving it a somewhat rural appearance.",
     "The area is surrounded by trees and grass."),
])
def test_rewrite_rules_keep_the_observation(rules, rule, sentence, expected):
    res = refine(sentence, rules)
    assert res.kept == [expected] and not res.removed
    assert [name for *_, name in res.rewritten] == [rule]


def test_rewrites_chain_and_stubs_are_dropped(rules):
    res = refine("Seen from above, this aerial view reveals the following scene. " + FACT, rules)
    # framing prefix, then image-as-subject, leave "The following scene." which names nothing urban
    assert [n for *_, n in res.rewritten] == ["framing_prefix", "image_as_subject"]
    assert res.removed == [("Seen from above, this aerial view reveals the following scene.", "off_topic")]
    assert res.text == FACT
    res = refine("The image shows trees.", RefineRules(rules.rules, min_words=3))
    assert res.removed == [("The image shows trees.", "image_as_subject:too_short")]


def test_paper_example_caption(rules):
    # the UrbanCLIP caption printed in UrbanLN Figure 7
    text = ("The image depicts a large industrial area with several buildings, including a factory and a power plant. "
            "The area is surrounded by a mix of trees and grass, giving it a somewhat rural appearance. "
            "There are multiple vehicles, such as cars and trucks, parked or moving around the area, indicating "
            "ongoing activities. A train can be seen passing through the industrial area, further emphasizing the "
            "industrial nature of the location. The scene also features a bridge, which connects the industrial "
            "area to another part of the city.")
    res = refine(text, rules)
    assert not res.removed and len(res.kept) == 5
    assert "rural appearance" not in res.text and "ongoing activities" not in res.text
    assert "emphasizing" not in res.text and res.kept[0].startswith("A large industrial area")
    assert "factory" in res.text and "bridge" in res.text


def test_rules_are_configurable_and_validated(tmp_path, rules):
    custom = RefineRules([Rule("no_colours", "remove", keywords=["red"], why="test")])
    assert refine("A red house. A grey house.", custom).text == "A grey house."
    assert refine("Red houses line the road.", custom).removed == [("Red houses line the road.", "no_colours")]
    fewer = rules.without("hedge")
    assert refine("It is likely a school.", fewer).removed == []
    with pytest.raises(KeyError, match="nope"):
        rules.without("nope")
    # JSON round trip
    p = tmp_path / "r.json"
    p.write_text(json.dumps(rules.to_dict()))
    again = RefineRules.from_json(p)
    assert [r.name for r in again.rules] == [r.name for r in rules.rules]
    bad = rules.to_dict()
    bad["rules"][1]["patterns"] = ["(unclosed"]
    p.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"r\.json: rule #1 \(framing_prefix\).*regular expression"):
        RefineRules.from_json(p)
    with pytest.raises(ValueError, match="action"):
        Rule("x", "delete", keywords=["a"])
    p.write_text("{broken")
    with pytest.raises(DataError, match="invalid JSON"):
        RefineRules.from_json(p)


def test_split_sentences():
    def split(text):
        return split_sentences(text, next_starts=STATEMENT_START)  # refinement's rule

    assert split("A road. Two cars! - Trees: many.\nGrass") == ["A road.", "Two cars!", "- Trees: many.", "Grass"]
    assert split("About 3.5 km of road. Fine.") == ["About 3.5 km of road.", "Fine."]
    assert split("Approx. three cars. Fine.") == ["Approx. three cars.", "Fine."]
    assert refine("Approx. three cars park here. Fine.").kept[0] == "Approx. three cars park here."


def test_refine_captions_report_counts(rules):
    df = pd.DataFrame({"source": ["a", "b", "c"], "text": [
        f"The image shows a park. It seems busy. {FACT}", f"Perhaps a school. {FACT}", "It might be a school."]})
    refined, report = refine_captions(df, rules)
    assert refined["text"].tolist() == [f"A park. {FACT}", FACT, "It might be a school."]  # last: emptied, raw kept
    assert refined["raw_text"].tolist() == df["text"].tolist() and refined["n_removed"].tolist() == [1, 1, 1]
    counts = report.set_index("rule")
    assert counts.loc["hedge", "sentences"] == 3 and counts.loc["hedge", "captions"] == 3
    assert counts.loc["image_as_subject", "sentences"] == 1 and counts.loc["emptied_kept_raw", "captions"] == 1
    refined, _ = refine_captions(df, rules, on_empty="empty")
    assert refined["text"].iloc[2] == ""


def _labelled():
    st = lambda t, kind: {"text": t, "true": kind in ("fact", "filler"), "kind": kind}  # noqa: E731
    return pd.DataFrame({
        "source": ["x", "x"], "style": ["long", "long"], "omissions": [2, 0],
        "statements": [
            [st("This satellite image shows the following scene.", "filler"), st(FACT, "fact"),
             st("There are two swimming pools near the centre.", "hallucination"),
             st("It is a common sight in many cities.", "filler")],
            [st("There are probably nine cars on the road.", "wrong_quantity"), st("The sky is blue.", "fact"),
             st("A river runs along the park.", "fact")],
        ]})


def test_evaluate_refinement_hand_computed():
    caps = _labelled()
    ev = evaluate_refinement(caps, by=()).iloc[0]
    # before: 7 statements, 2 false; after: intro, 'common sight', 'probably' and 'sky' removed -> 3 kept, 1 false
    assert ev["statements"] == 7 and ev["statements_kept"] == 3
    assert ev["hallucination_before"] == pytest.approx(2 / 7) and ev["hallucination_after"] == pytest.approx(1 / 3)
    assert ev["false_removed"] == pytest.approx(0.5)
    # omissions 2, facts 3 (one removed: the sky)
    assert ev["omission_before"] == pytest.approx(2 / 5) and ev["omission_after"] == pytest.approx(3 / 5)
    assert ev["filler_before"] == pytest.approx(2 / 7) and ev["filler_after"] == 0
    lab = label_statements(caps)
    assert lab["rule"].fillna("").tolist() == ["off_topic", "", "", "off_topic", "hedge", "off_topic", ""]
    by = removals_by_kind(caps)
    assert by.loc["off_topic", "filler"] == 2 and by.loc["hedge", "wrong_quantity"] == 1


def test_refinement_on_synthcity_smoke():
    from urbanlib.data.synthcity import load_city

    caps = load_city("synth-ring", scale="smoke", progress=False).captions
    # the truth unit (statement) is exactly the unit refine() works on (sentence)
    assert all(split_sentences(t, next_starts=STATEMENT_START) == [s["text"] for s in st]
               for t, st in zip(caps["text"], caps["statements"], strict=True))
    ev = evaluate_refinement(caps)
    assert len(ev) == 8  # 4 captioners x 2 styles
    rates = ev[["hallucination_before", "hallucination_after", "omission_before", "omission_after"]].to_numpy()
    assert np.all((rates >= 0) & (rates <= 1))
    assert (ev["omission_after"] >= ev["omission_before"]).all()
    long = ev[ev["style"] == "long"]
    assert (long["filler_after"] < long["filler_before"]).all()
    fig = plot_refinement(ev[ev["style"] == "long"])
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 8  # 4 captioners x (raw, refined)
    with pytest.raises(ValueError, match="repeated"):
        plot_refinement(ev)
    with pytest.raises(DataError, match="statements"):
        evaluate_refinement(caps.drop(columns="statements"))
