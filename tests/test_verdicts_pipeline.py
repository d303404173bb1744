"""From full-tier rows to verdicts, and the caption sets the models train on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from urbanlib.analysis.findings import findings_markdown
from urbanlib.analysis.verdicts import verdict_table
from urbanlib.experiments.caption_quality import caption_rates
from urbanlib.paper import load_claims
from urbanlib.results.store import append_rows
from urbanlib.results.verdicts import load_measures, measurements


def _bench_rows(seed: int, gap: float) -> list[dict]:
    rows = []
    for city in ("synth-ring", "synth-grid"):
        for model, base in (("UrbanCLIP", 0.5 + gap), ("PG-SimCLR", 0.5), ("UrbanViT", 0.45)):
            for ind in ("population", "gdp", "carbon"):
                r2 = base + 0.01 * seed
                for metric, value in (("R2_mean", r2), ("RMSE_mean", 1 - r2)):
                    rows.append({"city": city, "model": model, "task": f"{ind}/random", "metric": metric,
                                 "value": value})
    return rows


def test_verdicts_follow_the_committed_rows(tmp_path):
    claims = load_claims()
    for seed, gap in enumerate((0.05, 0.07, 0.06)):  # UrbanCLIP ahead of PG-SimCLR on every seed
        append_rows("benchmark", f"s{seed}", _bench_rows(seed, gap), {"city": "x"}, seed, "full", 1.0, tmp_path)
    m = measurements(claims, tmp_path)
    table = verdict_table(claims, m).set_index("claim_id")
    assert len(table) == len(claims)  # every claim, always
    assert table.loc["UC01", "verdict"] == "supported"  # R2: a > b on 3 seeds
    assert table.loc["UC06", "verdict"] == "supported"  # RMSE: a < b
    assert table.loc["UC14", "verdict"] == "supported"  # UrbanViT below UrbanCLIP
    assert table.loc["UC01", "mean_diff"] == pytest.approx(0.06, abs=1e-9)
    assert table.loc["UC18", "verdict"] == "not testable here"  # no ablation rows committed
    assert "ablations" in table.loc["UC18", "reason"]
    assert table.loc["UC02", "verdict"] == "not testable here"  # Beijing: a real city
    assert table.loc["UC02", "reason"].startswith("about Beijing")  # why, alone: the verdict is its own column


def test_an_untestable_claim_carries_its_reason_as_written(tmp_path):
    claims = load_claims()
    why = load_measures()["claims"]["UC02"]["untestable"]
    m = measurements(claims, tmp_path).set_index("claim_id")
    assert m.loc["UC02", "reason"] == why and m.loc["UC02", "a"] is None
    table = verdict_table(claims, m.reset_index())
    assert table.set_index("claim_id").loc["UC02", "reason"] == why
    cannot = findings_markdown(table).split("What cannot be tested here, and why")[1]
    assert f": {why}." in cannot and "not testable here" not in cannot


def test_units_pair_on_city_and_seed(tmp_path):
    """A unit counts as soon as both sides of a comparison are stored; a one-sided unit is left out."""
    claims = load_claims()
    for seed, gap in enumerate((0.05, 0.07, 0.06)):
        append_rows("benchmark", f"s{seed}", _bench_rows(seed, gap), {"city": "x"}, seed, "full", 1.0, tmp_path)
    late = [{**r, "city": "synth-coast", "value": -r["value"]} for r in _bench_rows(0, 0.05)
            if r["model"] == "UrbanCLIP"]  # a third city's seed 0 without its PG-SimCLR rows yet
    append_rows("benchmark", "coast-s0", late, {"city": "synth-coast"}, 0, "full", 1.0, tmp_path)
    table = verdict_table(claims, measurements(claims, tmp_path)).set_index("claim_id")
    assert table.loc["UC01", "verdict"] == "supported"
    assert table.loc["UC01", "n_units"] == 6 and table.loc["UC01", "n_cities"] == 2  # 2 cities x 3 seeds
    assert table.loc["UC01", "mean_diff"] == pytest.approx(0.06, abs=1e-9)


def test_a_reversed_effect_is_contradicted(tmp_path):
    claims = load_claims()
    for seed, gap in enumerate((-0.05, -0.07, -0.06)):
        append_rows("benchmark", f"s{seed}", _bench_rows(seed, gap), {"city": "x"}, seed, "full", 1.0, tmp_path)
    table = verdict_table(claims, measurements(claims, tmp_path)).set_index("claim_id")
    assert table.loc["UC01", "verdict"] == "contradicted"


def test_two_units_are_not_enough(tmp_path):
    claims = load_claims()
    for seed in (0, 1):
        rows = [r for r in _bench_rows(seed, 0.05) if r["city"] == "synth-ring"]  # one city, two seeds
        append_rows("benchmark", f"s{seed}", rows, {"city": "x"}, seed, "full", 1.0, tmp_path)
    table = verdict_table(claims, measurements(claims, tmp_path))
    row = table.set_index("claim_id").loc["UC01"]
    assert row["verdict"] == "not testable here" and row["reason"].startswith("needs ≥3 paired units")
    assert "not testable here" not in findings_markdown(table).split("What cannot be tested here, and why")[1]


def test_caption_rates_count_false_statements():
    caps = pd.DataFrame([{
        "image": "a.png", "source": "s", "style": "long", "omissions": 1,
        "statements": [{"kind": "fact", "true": True}, {"kind": "hallucination", "true": False},
                       {"kind": "filler", "true": True}, {"kind": "wrong_quantity", "true": False}]}])
    r = caption_rates(caps).iloc[0]
    assert r["hallucination"] == 0.5 and r["omission"] == 0.5 and r["n_statements"] == 4


def test_caption_sets_one_caption_per_image(tmp_path, monkeypatch):
    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path))
    from urbanlib.data.synthcity import load_city
    from urbanlib.pipeline.caption_sets import select_long_captions, urbanclip_texts

    ds = load_city("synth-ring", scale="smoke", progress=False)
    refined, raw = urbanclip_texts(ds), urbanclip_texts(ds, refined=False)
    assert [len(x) for x in refined] == [len(x) for x in raw]
    assert sum(a != b for ra, rb in zip(refined, raw, strict=True) for a, b in zip(ra, rb, strict=True)) > 0
    assert not any("In this satellite image," in t for x in refined for t in x)  # the framing rule ran
    long = ds.captions[ds.captions["style"] == "long"].iloc[:40]
    a = select_long_captions(long, consensus=False, seed=0)
    b = select_long_captions(long, consensus=False, seed=1)
    assert a["image"].is_unique and set(a["image"]) == set(long["image"])
    assert not np.array_equal(a.index, b.index)  # the random choice follows the seed


def _transfer_rows(seed: int, gap: dict) -> list[dict]:
    rows = []
    for target in ("synth-ring", "synth-grid", "synth-coast"):
        for ind in ("population", "gdp", "carbon"):
            for model in ("UrbanCLIP", "PG-SimCLR"):
                g = gap.get((target, ind), 0.05) if model == "UrbanCLIP" else 0.0
                rows.append({"city": "synth-ring", "model": model, "task": f"{target}/{ind}", "metric": "R2_mean",
                             "value": 0.3 + g + 0.01 * seed + {"carbon": 0.2, "population": 0.1, "gdp": 0}[ind]})
    return rows


def test_transfer_claims_compare_every_cross_city_pair(tmp_path):
    claims = load_claims()
    for seed in range(3):
        append_rows("transfer", f"s{seed}", _transfer_rows(seed, {("synth-grid", "gdp"): -0.04 - 0.001 * seed}),
                    {"source": "synth-ring"}, seed, "full", 1.0, tmp_path)
    table = verdict_table(claims, measurements(claims, tmp_path)).set_index("claim_id")
    comps = table.loc["UC21", "comparisons"]
    assert comps.count("synth-ring->") == 6 and "synth-ring->synth-ring" not in comps  # 2 targets x 3 indicators
    assert table.loc["UC21", "verdict"] == "contradicted"  # one pair reversed on every seed (6 x p < 0.05)
    assert "one (source, target) pair" in table.loc["UC21", "reason"]
    assert table.loc["UC26", "verdict"] == "supported"  # carbon > population > GDP for both models
    assert table.loc["LN27", "verdict"] == "not testable here" and "248" in table.loc["LN27", "reason"]


def test_an_incomplete_tier_gives_no_verdict_and_says_how_many_units_are_in(tmp_path):
    from urbanlib.results.verdicts import verdicts

    for seed, gap in enumerate((0.05, 0.07, 0.06)):  # 2 cities x 3 seeds of the 15 units planned
        append_rows("benchmark", f"s{seed}", _bench_rows(seed, gap), {"city": "x"}, seed, "full", 1.0, tmp_path)
    t = verdicts(tmp_path).set_index("claim_id")
    assert t.loc["UC01", "verdict"] == "not testable here" and t.loc["UC01", "n_units"] == 6
    assert "6 of 15 planned units" in t.loc["UC01", "reason"] and "so far the test reads 'supported'" in \
        t.loc["UC01", "reason"]
    assert (t["verdict"] == "not testable here").all()  # nothing is judged on a third of the units


def test_the_tier_plan_gives_each_model_its_units():
    from urbanlib.results.verdicts import tier_plan

    plan = tier_plan()
    ring = {f"synth-ring:{s}" for s in range(3)}
    assert len(plan["benchmark"][""]) == 15 and len(plan["benchmark"]["UrbanCLIP"]) == 15
    assert plan["ablations"]["mu=0.3"] == ring and len(plan["ablations"]["UrbanLN"]) == 15  # the one-city sweep
    assert len(plan["transfer"][""]) == 15 and "all:0" not in plan["benchmark"][""]  # stage 0 is no unit


def test_the_best_baseline_is_chosen_on_the_units_it_is_paired_on(tmp_path):
    values = {"synth-ring": {"UrbanCLIP": 0.6, "X": 0.40, "Y": 0.50}, "synth-grid": {"UrbanCLIP": 0.6, "X": 0.41, "Y": 0.52},
              "synth-coast": {"X": 0.99}}  # X leads only on a city where UrbanCLIP has no rows
    for seed in range(3):
        rows = [{"city": city, "model": model, "task": "gdp/random", "metric": "R2_mean", "value": v + 0.01 * seed}
                for city, models in values.items() for model, v in models.items()]
        append_rows("benchmark", f"s{seed}", rows, {"city": "x"}, seed, "full", 1.0, tmp_path)
    measures = {"indicator_sets": {"g": ["gdp"]}, "groups": {"base": ["X", "Y"]}, "questions": {},
                "claims": {"UC01": {"measures": [{"a": "UrbanCLIP", "b": "best(base)", "indicators": "g"}]}}}
    claims = load_claims()
    m = measurements(claims[claims["claim_id"] == "UC01"], tmp_path, measures=measures).iloc[0]
    assert "Y (best of base" in m["comparison"] and len(m["a"]) == len(m["b"]) == 6


def test_every_model_the_claim_mapping_names_is_one_the_tier_runs():
    import re

    from urbanlib.results.tier import ABLATION_GROUPS, BENCHMARK_GROUPS
    from urbanlib.results.verdicts import load_measures

    doc = load_measures()
    runs = {m for ms in BENCHMARK_GROUPS.values() for m in ms} | {m for uc, ln in ABLATION_GROUPS.values() for m in uc + ln}
    named = set()
    for entry in doc["claims"].values():
        for m in entry.get("measures", []):
            for side in (m["a"], m["b"]):
                for name in str(side).partition(" @ ")[0].split(" - "):
                    group = re.fullmatch(r"(?:best|each)\((\w+)\)", name.strip())
                    named |= set(doc["groups"][group.group(1)]) if group else {name.strip()}
    assert named - runs == set(), "the mapping names models no tier unit stores (its claims could never be measured)"
