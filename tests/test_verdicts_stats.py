"""The statistics of the verdicts: paired t against scipy, MDE against simulation, BH by hand, the decision rule,
gains over random-init twins, the claim mapping as data, and the generated findings."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from urbanlib.analysis import findings, paired, twins, verdicts
from urbanlib.paper import load_claims
from urbanlib.results import verdicts as pv

# ------------------------------------------------------------------------------------------ paired t


def test_paired_test_matches_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a = rng.normal(0.7, 0.05, 15)
    b = a - rng.normal(0.01, 0.02, 15)
    r = paired.paired_test(a, b)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert r["n"] == 15
    assert r["t"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high))
    # keyed values pair on keys, not on order
    ka = {f"c{i}:0": v for i, v in enumerate(a)}
    kb = {f"c{i}:0": v for i, v in reversed(list(enumerate(b)))}
    assert paired.paired_test(ka, kb)["p"] == pytest.approx(ref.pvalue)


def test_claimed_and_opposite_p_are_the_two_sided_p_on_their_side():
    a, b = [0.5, 0.62, 0.55, 0.58, 0.6], [0.5, 0.55, 0.52, 0.5, 0.54]
    up = verdicts.paired_difference_ci(a, b, "a>b")
    two = stats.ttest_rel(a, b).pvalue
    assert up["p_claimed"] == pytest.approx(two) and up["p_opposite"] == pytest.approx(1.0)
    down = verdicts.paired_difference_ci(a, b, "a<b")
    assert down["p_opposite"] == pytest.approx(two) and down["p_claimed"] == pytest.approx(1.0)
    assert up["n_units"] == up["n_seeds"] == 5


# ------------------------------------------------------------------------------------------ MDE


def test_mde_has_the_stated_power_in_simulation():
    n, sd = 15, 0.02
    delta = paired.mde(sd, n)
    rng = np.random.default_rng(1)
    d = rng.normal(delta, sd, size=(40_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert power == pytest.approx(0.8, abs=0.01)
    half = rng.normal(delta / 2, sd, size=(40_000, n))  # half the MDE: clearly less power
    t_half = half.mean(1) / (half.std(1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(t_half) > stats.t.ppf(0.975, n - 1)) < 0.4


def test_mde_known_values_and_large_n_limit():
    assert paired.mde_standardised(15) == pytest.approx(0.778, abs=1e-3)  # G*Power / statsmodels: d_z = 0.778
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert paired.mde_standardised(5000) * math.sqrt(5000) == pytest.approx(z, rel=1e-3)
    assert paired.mde_standardised(3) > paired.mde_standardised(15) > paired.mde_standardised(30)
    assert paired.mde(0.0, 15) == 0.0 and math.isnan(paired.mde(0.1, 1))


# ------------------------------------------------------------------------------------------ BH


def test_bh_adjust_by_hand_and_against_scipy():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4p/rank 0.02, 0.02, 0.04, 0.04 -> step-up minimum: the same
    assert paired.bh_adjust(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    q = paired.bh_adjust([0.2, np.nan, 0.01, 0.9])  # NaN stays NaN and is not counted (m = 3)
    assert math.isnan(q[1]) and q[2] == pytest.approx(0.03) and q[0] == pytest.approx(0.3) and q[3] == 0.9
    rng = np.random.default_rng(2)
    many = rng.uniform(size=40) ** 3
    assert paired.bh_adjust(many) == pytest.approx(stats.false_discovery_control(many))


# ------------------------------------------------------------------------------------------ decision rule


def _claims(*ids):
    c = load_claims()
    return c[c["claim_id"].isin(ids)].reset_index(drop=True)


def _units(values):
    return {f"synth-{i % 5}:{i // 5}": v for i, v in enumerate(values)}


def test_underpowered_against_not_supported():
    rng = np.random.default_rng(3)
    b = rng.normal(0.7, 0.02, 15)
    noisy = b + rng.normal(0, 0.05, 15)  # MDE about 0.04
    tight = b + rng.normal(0, 0.002, 15) - np.mean(rng.normal(0, 0.002, 15))  # MDE about 0.002
    m = pd.DataFrame([
        {"claim_id": "UC01", "a": _units(noisy), "b": _units(b), "paper_effect": 6.1, "paper_units": "%",
         "baseline": 0.436, "metric": "R2"},  # paper effect 0.027 < MDE: underpowered
        {"claim_id": "UC10", "a": _units(tight), "b": _units(b), "paper_effect": 12.07, "paper_units": "%",
         "baseline": 0.605, "metric": "R2"},  # paper effect 0.073 >> MDE: not supported
        {"claim_id": "UC14", "a": _units(noisy), "b": _units(b)},  # no effect size in the paper: not supported
    ])
    t = verdicts.verdict_table(_claims("UC01", "UC10", "UC14"), m).set_index("claim_id")
    assert t.loc["UC01", "verdict"] == "underpowered" and t.loc["UC01", "mde"] > 0.436 * 0.061
    assert t.loc["UC01", "paper_effect_abs"] == pytest.approx(0.436 * 0.061)
    assert t.loc["UC01", "mde_paper"] == pytest.approx(100 * t.loc["UC01", "mde"] / 0.436)
    assert t.loc["UC10", "verdict"] == "not supported" and "could have seen" in t.loc["UC10", "reason"]
    assert t.loc["UC14", "verdict"] == "not supported"
    ref = stats.ttest_rel(noisy, b)
    assert t.loc["UC14", "p"] == pytest.approx(ref.pvalue)
    assert t.loc["UC14", "mde"] == pytest.approx(paired.mde(np.std(noisy - b, ddof=1), 15))
    assert t["p_bh"].to_numpy() == pytest.approx(paired.bh_adjust(t["p"].to_numpy()))


def test_a_contradiction_among_several_comparisons_is_bonferroni_corrected():
    rng = np.random.default_rng(4)
    b = rng.normal(0.5, 0.02, 15)
    up = b + 0.05 + rng.normal(0, 0.01, 15)
    e = rng.normal(size=15)
    e = (e - e.mean()) / e.std(ddof=1) * 0.015
    slight = b + e - stats.t.ppf(0.99, 14) * 0.015 / math.sqrt(15)  # two-sided p = 0.02: alone yes, x 6 no
    p_slight = stats.ttest_rel(slight, b).pvalue
    assert 0.05 / 6 < p_slight < 0.05
    alone = pd.DataFrame([{"claim_id": "UC08", "a": _units(slight), "b": _units(b), "direction": "a>b"}])
    assert verdicts.verdict_table(_claims("UC08"), alone).loc[0, "verdict"] == "contradicted"
    six = pd.DataFrame([{"claim_id": "UC08", "a": _units(up), "b": _units(b), "direction": "a>b",
                         "comparison": f"vs {i}"} for i in range(5)]
                       + [{"claim_id": "UC08", "a": _units(slight), "b": _units(b), "direction": "a>b",
                           "comparison": "vs the slight one"}])
    row = verdicts.verdict_table(_claims("UC08"), six).loc[0]
    assert row["verdict"] == "not supported" and row["p"] == pytest.approx(min(1, 6 * p_slight))
    assert "6 comparisons" in row["reason"]
    all_up = pd.DataFrame([{"claim_id": "UC08", "a": _units(up + 0.001 * i), "b": _units(b), "direction": "a>b",
                            "comparison": f"vs {i}"} for i in range(3)])
    row = verdicts.verdict_table(_claims("UC08"), all_up).loc[0]
    ps = [stats.ttest_rel(up + 0.001 * i, b).pvalue for i in range(3)]
    assert row["verdict"] == "supported" and row["p"] == pytest.approx(max(ps))  # intersection-union


def test_one_city_and_untestable_rows_say_why():
    one_city = {f"synth-ring:{s}": v for s, v in enumerate([0.6, 0.62, 0.61])}
    base = {f"synth-ring:{s}": v for s, v in enumerate([0.5, 0.5, 0.52])}
    m = pd.DataFrame([{"claim_id": "UC14", "a": base, "b": one_city, "cities": ["synth-ring"]},
                      {"claim_id": "UC02", "a": None, "b": None, "reason": "about Beijing"}])
    t = verdicts.verdict_table(_claims("UC14", "UC02", "UC29"), m).set_index("claim_id")
    assert t.loc["UC14", "verdict"] == "supported" and "one city only (synth-ring)" in t.loc["UC14", "reason"]
    shown = verdicts.readable_table(t.reset_index()).set_index("claim")
    for cid in ("UC02", "UC29"):
        row = shown[shown.index.str.startswith(cid)].iloc[0]
        assert row["verdict"] == "not testable here" and row["reason"] and row["effect [95% CI]"] == ""
        assert not row.isna().any()
    assert "[" in shown[shown.index.str.startswith("UC14")].iloc[0]["effect [95% CI]"]


def test_each_measurement_row_is_tested_or_says_why_not():
    claim = SimpleNamespace(claim_id="X", direction="a>b")
    up, base = [0.6, 0.62, 0.61, 0.64, 0.6], [0.5, 0.5, 0.52, 0.51, 0.49]

    def measure(claim=claim, i=7, **row):
        return verdicts._measure(i, pd.Series({"a": None, "b": None, **row}), claim, 0.95, verdicts.POWER)

    assert measure(reason="about Beijing") == verdicts._Measured(["about Beijing"])
    chain = SimpleNamespace(claim_id="X", direction="a>b>c")
    assert measure(chain, a=up, b=base).notes == [verdicts._NOT_PAIRWISE.format(direction="a>b>c")]
    with pytest.raises(ValueError, match=r"measurements row 7 \(X\)"):
        measure(a=up, b=base, direction="a>b>c")  # the row's own direction must be a comparison
    assert measure(a=up) == verdicts._Measured(["not measured in this run"])
    assert measure(a=up[:2], b=base[:2], reason="members absent") == verdicts._Measured(
        ["members absent", verdicts.NEEDS_UNITS])
    tested = measure(a=up, b=base, cities=["synth-ring"], planned_units=15.0, metric="R2")
    assert tested.notes == ["", "one city only (synth-ring): a one-city sweep, its units are the pretraining seeds"]
    r = tested.result
    assert (r["label"], r["n_cities"], r["metric"], r["planned_units"], r["n_units"]) == ("", 1, "R2", 15.0, 5)
    assert r["mean_diff"] == pytest.approx(np.mean(np.subtract(up, base)))
    assert measure(a=up, b=base, scope="one transfer pair").notes[1] == "one transfer pair (n = 5)"
    assert measure(a=up, b=base, direction="a<b").result["direction"] == "a<b"  # the row's own beats the claim's


def test_a_claim_is_judged_untestable_until_its_tier_is_complete_and_every_comparison_tested():
    claim = SimpleNamespace(claim_id="X", direction="a>b")
    up, base = [0.6, 0.62, 0.61, 0.64, 0.6], [0.5, 0.5, 0.52, 0.51, 0.49]

    def result(a, label, planned=math.nan):
        row = pd.Series({"a": a, "b": base, "comparison": label, "planned_units": planned})
        return verdicts._measure(0, row, claim, 0.95, verdicts.POWER).result

    verdict, shown, p, notes = verdicts._judge([result(up, "vs B")], False, 0.05)
    assert verdict == "supported" and shown["label"] == "vs B" and 0 < p < 0.05 and notes == []
    verdict, _, p, notes = verdicts._judge([result(up, "vs B", planned=15.0)], False, 0.05)
    assert verdict == "not testable here" and math.isnan(p)
    assert notes == ["tier incomplete, no verdict yet (vs B: 5 of 15 planned units); so far the test reads 'supported'"]
    assert verdicts._judge([result(up, "vs B")], True, 0.05)[0] == "not testable here"  # another row untested
    down = list(np.subtract(base, 0.1) + [0.0, 0.01, -0.01, 0.02, 0.0])
    verdict, shown, p, notes = verdicts._judge([result(up, "vs B"), result(down, "vs C")], True, 0.05)
    assert verdict == "contradicted" and shown["label"] == "vs C" and p < 0.05  # an untested row cannot undo it
    assert notes == ["2 comparisons; shown: vs C"]


# ------------------------------------------------------------------------------------------ twins


def _frame(gains: dict, twin="UrbanCLIP (random init)", seeds=3, cities=5, noise=0.01):
    rng = np.random.default_rng(5)
    rows = []
    for c in range(cities):
        for s in range(seeds):
            for ind in ("carbon", "population"):
                base = 0.6 + rng.normal(0, 0.05)
                for model, g in {twin: 0.0, **gains}.items():
                    rows.append({"city": f"synth-{c}", "seed": s, "model": model, "task": f"{ind}/random",
                                 "metric": "R2_mean", "value": base + g + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_gain_over_twin_is_a_paired_interval_over_units():
    frame = _frame({"UrbanCLIP": 0.05, "UrbanViT": 0.0})
    g = twins.gains_over_twin(frame)
    row = g[(g["model"] == "UrbanCLIP") & (g["indicator"] == "carbon")].iloc[0]
    wide = frame[frame["task"] == "carbon/random"].pivot_table(index=["city", "seed"], columns="model", values="value")
    ref = stats.ttest_rel(wide["UrbanCLIP"], wide["UrbanCLIP (random init)"])
    assert row["n_units"] == 15 and row["twin"] == "UrbanCLIP (random init)"
    assert row["gain"] == pytest.approx((wide["UrbanCLIP"] - wide["UrbanCLIP (random init)"]).mean())
    ci = ref.confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high)) and row["p"] == pytest.approx(ref.pvalue)
    pooled = g[(g["model"] == "UrbanCLIP") & (g["indicator"] == twins.POOLED)].iloc[0]
    assert pooled["gain"] == pytest.approx(0.05, abs=0.01) and pooled["ci_low"] > 0
    vit = g[(g["model"] == "UrbanViT") & (g["indicator"] == twins.POOLED)].iloc[0]
    assert vit["ci_low"] < 0 < vit["ci_high"]
    assert set(g["model"]) == {"UrbanCLIP", "UrbanViT"}  # the twin is not compared with itself


def test_missing_twins_and_tasks_are_skipped_with_a_note():
    frame = _frame({"UrbanCLIP": 0.05})
    frame = pd.concat([frame, _frame({"UrbanLN (satellite)": 0.1}, twin="UrbanCLIP (random init)")
                       .query("model == 'UrbanLN (satellite)'")])
    extra = frame[(frame["model"] == "UrbanCLIP") & (frame["task"] == "carbon/random")].assign(task="gdp/random")
    g = twins.gains_over_twin(pd.concat([frame, extra]))
    assert set(g["model"]) == {"UrbanCLIP"}
    notes = " ".join(g.attrs["notes"])
    assert "CLIP (random init, satellite)" in notes and "UrbanLN (satellite)" in notes
    assert "gdp/random" in notes
    empty = twins.gains_over_twin(frame.iloc[:0])
    assert empty.empty and empty.attrs["notes"]
    assert twins.RANDOM_INIT_TWIN["READ"] == "READ (random init)"  # the student's conv net, not a ResNet
    assert twins.RANDOM_INIT_TWIN["UrbanVLP"] == "UrbanVLP (random init)"  # both towers
    assert twins.RANDOM_INIT_TWIN["UrbanLN (street)"] == "CLIP (random init, street)"


def test_units_where_model_and_twin_were_scored_on_other_regions_are_left_out():
    frame = _frame({"UrbanCLIP": 0.05})
    n = [{"city": f"synth-{c}", "seed": s, "model": m, "task": "all/random", "metric": "n_test",
          "value": 199.0 if (m, c, s) == ("UrbanCLIP", 0, 1) else 205.0}
         for c in range(5) for s in range(3) for m in ("UrbanCLIP", "UrbanCLIP (random init)")]
    g = twins.gains_over_twin(pd.concat([frame, pd.DataFrame(n)]))
    assert set(g["n_units"]) == {14}  # synth-0:1 was scored on 199 regions against the twin's 205
    assert any("synth-0:1" in note and "other test regions" in note for note in g.attrs["notes"])
    assert set(twins.gains_over_twin(frame)["n_units"]) == {15}  # no n_test rows: nothing to check


def test_every_trained_encoder_of_the_benchmark_has_a_twin():
    from urbanlib.experiments.benchmark import BENCHMARK_MODELS, CONTROLS

    twin_names = set(twins.RANDOM_INIT_TWIN.values())
    for model in BENCHMARK_MODELS:
        if model in CONTROLS:
            continue  # a control itself
        assert (model in twins.RANDOM_INIT_TWIN) != (model in twins.WITHOUT_TWIN), model
    assert twin_names <= set(CONTROLS) | set(twins.WITHOUT_TWIN)  # every twin is a row we probe
    assert twins.RANDOM_INIT_TWIN["Tile2Vec"] == "Tile2Vec (random init)" in CONTROLS


def test_a_twin_whose_probe_fails_on_a_few_units_is_named_and_the_median_gain_shown():
    frame = _frame({"UrbanCLIP": 0.05})
    assert not any("probe fails" in n for n in twins.gains_over_twin(frame).attrs["notes"])
    twin = frame["model"] == "UrbanCLIP (random init)"
    bad = twin & (frame["city"] == "synth-0") & (frame["seed"] == 0) & (frame["task"] == "carbon/random")
    frame.loc[bad, "value"] = -20.0  # one unit whose probe extrapolated wildly
    g = twins.gains_over_twin(frame)
    row = g[(g["model"] == "UrbanCLIP") & (g["indicator"] == "carbon")].iloc[0]
    assert row["gain"] > 1 and row["median_gain"] == pytest.approx(0.05, abs=0.02)  # the mean is that one unit's
    note = next(n for n in g.attrs["notes"] if "probe fails" in n)
    assert note.startswith("UrbanCLIP (random init)") and "1 of 30" in note and "-20.0" in note


# ------------------------------------------------------------------------------------------ mapping as data


def test_the_mapping_covers_every_claim_with_known_questions():
    doc = pv.load_measures()
    claims = load_claims()
    assert set(doc["claims"]) == set(claims["claim_id"])
    for cid, entry in doc["claims"].items():
        assert entry["short"] and entry["question"] in doc["questions"], cid
        assert ("untestable" in entry) != ("measures" in entry), cid


def test_paper_effects_and_baselines_come_from_the_papers():
    assert pv.parse_paper_effect("6.1%") == (6.1, "%")
    assert pv.parse_paper_effect("-10.45%") == (10.45, "%")
    assert pv.parse_paper_effect("0.411 vs 0.365") == pytest.approx((0.046, "abs"))
    assert pv.parse_paper_effect("26.45% vs 10.45%") == pytest.approx((16.0, "%"))
    assert pv.parse_paper_effect("12.07% / 5.83% / 0.52%") is None and pv.parse_paper_effect("") is None
    value, label = pv.paper_baseline({"paper": "urbanclip", "table": "2", "model": "PG-SimCLR", "metric": "R2"})
    assert value == pytest.approx(np.mean([0.613, 0.362, 0.317, 0.597, 0.410, 0.319])) and "PG-SimCLR" in label
    best, _ = pv.paper_baseline({"paper": "urbanln", "table": "8", "model": "best", "metric": "R2",
                                 "task": ["crime"]})
    assert best == pytest.approx(0.467)  # UrbanVLP, the best non-UrbanLN row on NY crime


def test_measurements_on_a_synthetic_tier_use_city_seed_units():
    rng = np.random.default_rng(6)
    rows = []
    for c in range(5):
        for s in range(3):
            for ind in ("carbon", "population", "gdp"):
                base = 0.5 + rng.normal(0, 0.05)
                for model, g in (("UrbanCLIP", 0.03), ("PG-SimCLR", 0.0)):
                    rows.append({"experiment": "benchmark", "city": f"synth-{c}", "seed": s, "model": model,
                                 "task": f"{ind}/random", "metric": "R2_mean", "value": base + g + rng.normal(0, 0.005)})
    bench = pd.DataFrame(rows)
    claims = pv.labelled_claims()
    m = pv.measurements(claims, frames={"benchmark": bench})
    uc01 = m[m["claim_id"] == "UC01"].iloc[0]
    assert len(uc01["a"]) == 15 and len(uc01["cities"]) == 5 and uc01["paper_units"] == "%"
    t = pv.verdicts(frames={"benchmark": bench}).set_index("claim_id")
    assert t.loc["UC01", "verdict"] == "supported" and t.loc["UC01", "n_units"] == 15
    assert t.loc["UC01", "mean_diff"] == pytest.approx(0.03, abs=0.005)
    assert t.loc["UC16", "verdict"] == "not testable here" and "ablations" in t.loc["UC16", "reason"]
    assert len(t) == len(claims)


# ------------------------------------------------------------------------------------------ findings


def test_findings_are_generated_from_the_table():
    m = pd.DataFrame([
        {"claim_id": "UC14", "a": _units(np.linspace(0.6, 0.7, 15) ** 2), "b": _units(np.linspace(0.5, 0.6, 15) ** 2)},
        {"claim_id": "UC15", "a": _units(np.linspace(0.5, 0.6, 15) + 0.1), "b": _units(np.linspace(0.5, 0.6, 15))},
    ])
    claims = pv.labelled_claims()
    table = verdicts.verdict_table(claims, m)
    text = findings.findings_markdown(table, pv.load_measures()["questions"])
    t = table.set_index("claim_id")
    assert t.loc["UC15", "verdict"] == "supported" and t.loc["UC14", "verdict"] == "contradicted"
    for heading in ("What holds here", "contradicted", "Underpowered", "cannot be tested here"):
        assert heading in text
    assert f"{t.loc['UC15', 'mean_diff']:+.3f}" in text and "not measured in this run" in text
    sentences = findings.question_sentences(table, pv.load_measures()["questions"])
    assert len(sentences) == len(set(claims["question"]))
    assert any("Does text help UrbanCLIP?" in s and "UC14" in s for s in sentences)
    assert findings.summary_sentence(table).startswith(f"Of the {len(claims)} claims")
    assert "tier does not yet hold" not in findings.summary_sentence(table)
    waiting = table.assign(reason=table["reason"].where(table["claim_id"] != "UC01", "tier incomplete, no verdict yet"))
    assert "(1 of them because the `full` tier does not yet hold every unit it plans)" in \
        findings.summary_sentence(waiting)


def test_probe_seed_gains_pair_models_with_their_twin_over_probe_seeds():
    import pandas as pd

    from urbanlib.analysis.twins import probe_seed_gains

    rows = []
    for seed in range(5):
        for ind, base in (("carbon", 0.5), ("gdp", 0.3)):
            rows.append({"model": "UrbanCLIP", "indicator": ind, "probe_seed": seed, "metric": "R2",
                         "value": base + 0.1 + 0.01 * seed, "split": "blocked(4)", "city": "c"})
            rows.append({"model": "UrbanCLIP (random init)", "indicator": ind, "probe_seed": seed, "metric": "R2",
                         "value": base + 0.005 * seed, "split": "blocked(4)", "city": "c"})
    g = probe_seed_gains(pd.DataFrame(rows))
    pooled = g[g["indicator"] == "mean"].iloc[0]
    assert pooled["twin"] == "UrbanCLIP (random init)" and pooled["split"] == "blocked"
    assert pooled["n_probe_seeds"] == 5 and pooled["gain"] == pytest.approx(0.1 + 0.005 * 2)
    assert pooled["ci_low"] < pooled["gain"] < pooled["ci_high"]
