import re

import numpy as np
import pandas as pd
import pytest

from urbanlib.analysis.ablations import ablation_summary, plot_ablation_bars
from urbanlib.results.store import append_rows
from urbanlib.results.views import coverage, coverage_grid, cpu_budget, provenance_summary, tier_rows


def _unit_rows(city, split, seed, r2):
    rows = []
    for model, v in r2.items():
        for ind in ("population", "gdp"):
            rows += [{"city": city, "model": model, "task": f"{ind}/{split}", "metric": "R2_mean", "value": v + seed},
                     {"city": city, "model": model, "task": f"{ind}/{split}", "metric": "R2_std", "value": 0.01}]
    return rows


@pytest.fixture
def stored(tmp_path):
    for seed in (0, 2):
        append_rows("benchmark", f"synth-ring-s{seed}-urbanclip", _unit_rows("synth-ring", "random", seed, {"UrbanCLIP": 0.5, "PCA": 0.25}),
                    {"city": "synth-ring", "group": "urbanclip"}, seed, "full", 10.0, tmp_path)
    tr = [{"city": "synth-ring", "model": "A", "task": "synth-grid/gdp", "metric": "R2_mean", "value": 0.3}]
    append_rows("transfer", "synth-ring-s0", tr, {"source": "synth-ring"}, 0, "full", 5.0, tmp_path)
    return tmp_path


def test_tier_rows_unpack_tasks_and_keep_probe_means(stored):
    b = tier_rows("benchmark", stored)
    assert set(b["metric"]) == {"R2"} and set(b["split"]) == {"random"}
    assert sorted(b["seed"].unique()) == [0, 2] and set(b["indicator"]) == {"population", "gdp"}
    assert b[(b["seed"] == 2) & (b["model"] == "PCA")]["value"].tolist() == [2.25, 2.25]
    t = tier_rows("transfer", stored)
    assert t.loc[0, ["city", "target", "indicator", "value"]].tolist() == ["synth-ring", "synth-grid", "gdp", 0.3]
    assert tier_rows("ablations", stored).empty


def test_coverage_marks_exactly_the_stored_units(stored):
    cov = coverage("benchmark", results_dir=stored).set_index("unit")
    assert cov["stored"].sum() == 2
    assert cov.loc["synth-ring-s0-urbanclip", "stored"] and not cov.loc["synth-ring-s1-urbanclip", "stored"]
    assert cov.loc["synth-ring-s2-urbanclip", "wall_s"] == 10.0
    grid = coverage_grid("benchmark", results_dir=stored)
    assert grid.loc[("synth-ring", "urbanclip")].tolist() == ["✓", "·", "✓"]
    assert grid.loc[("synth-grid", "baselines")].tolist() == ["·", "·", "·"]
    with pytest.raises(KeyError, match="registered"):
        coverage("benchmarks", results_dir=stored)
    prov = provenance_summary("benchmark", stored)
    assert prov["units stored"] == 2 and prov["total wall time (h)"] == round(20 / 3600, 2)


def test_cpu_budget_sums_stored_units_and_projects_pending_ones_by_kind(tmp_path):
    one = [{"city": "synth-ring", "model": "m", "task": "gdp/random", "metric": "R2_mean", "value": 0.5}]
    for unit, cpu in (("synth-ring-s0-urbanclip", 360.0), ("synth-grid-s0-urbanclip", 1080.0),
                      ("synth-ring-s0-baselines", 3600.0)):
        append_rows("benchmark", unit, one, {"city": unit[:10], "group": unit.split("-s0-")[1]}, 0, "full", 1.0,
                    tmp_path, cpu_s=cpu)
    b = cpu_budget(results_dir=tmp_path)
    assert b.loc["benchmark", "stored"] == 3 and b.loc["benchmark", "stored CPU-h"] == 1.4
    # pending: 15 - 2 urbanclip units at 720 s, 15 - 1 baselines units at 3600 s; the other groups at the mean, 1680 s
    from urbanlib.results.tier import BENCHMARK_GROUPS

    groups = {"stage0": 3, **{g: 15 for g in BENCHMARK_GROUPS if g not in ("urbanclip", "baselines")}}
    expected = (13 * 720 + 14 * 3600 + sum(groups.values()) * 1680) / 3600
    assert b.loc["benchmark", "pending CPU-h (projected)"] == round(expected, 2)
    assert b.loc["transfer", "stored"] == 0 and b.loc["transfer", "unprojected"] == 15
    assert b.loc["total", "tier CPU-h (projected)"] == round(b.loc["benchmark", "tier CPU-h (projected)"], 2)


def test_ablation_summary_averages_indicators_then_seeds():
    rows = pd.DataFrame([{"model": m, "indicator": i, "metric": "R2", "value": v, "seed": s}
                         for m, base in (("full", 0.6), ("w/o x", 0.4)) for s in range(3)
                         for i, v in (("a", base + 0.1 * s), ("b", base - 0.1 * s + 0.2))])
    g = ablation_summary(rows, ["full", "w/o x", "missing"])
    assert np.isclose(g.loc["full", "mean"], 0.7) and np.isclose(g.loc["w/o x", "mean"], 0.5)
    assert g.loc["full", "n"] == 3 and np.isclose(g.loc["full", "std"], 0.0)
    assert np.isnan(g.loc["missing", "mean"])
    fig = plot_ablation_bars(rows, ["full", "w/o x"])
    assert len(fig.axes[0].patches) == 2
    with pytest.raises(ValueError, match="seed"):
        ablation_summary(rows.drop(columns="seed"), ["full"])


@pytest.mark.notebooks
def test_results_page_renders_stored_units(stored, tmp_path, monkeypatch):
    """The book's results page shows the stored benchmark table and ablation bars and no errors."""
    from pathlib import Path

    import nbformat
    import papermill as pm

    from urbanlib.analysis.ablations import FIGURES

    for seed in (0, 1, 2):
        rows = _unit_rows("synth-ring", "random", seed, {m: 0.5 - 0.01 * k for k, m in
                                                         enumerate(FIGURES["UrbanCLIP (Fig. 4)"])})
        append_rows("ablations", f"synth-ring-s{seed}", rows, {"city": "synth-ring"}, seed, "full", 1.0, stored)
    monkeypatch.setenv("URBANLIB_RESULTS", str(stored))
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "results.ipynb"
    pm.execute_notebook(str(repo / "notebooks" / "results.ipynb"), str(out), parameters={"scale": "smoke"},
                        kernel_name="python3", progress_bar=False, cwd=str(repo / "notebooks"))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "synth-ring, random split, full tier" in html  # the benchmark table of the stored city
    assert "median gain" in html
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1  # the ablation bars
    md = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    from urbanlib.book.manifest import load_manifest

    n_stored = sum(e.stored for e in load_manifest(repo / "notebooks" / "runs.yml", "default"))
    assert re.search(rf"\d+ of {n_stored} stored pages present", md)  # the stored-page index of the real manifest


def test_pretraining_summary_and_selection_table(tmp_path, monkeypatch):
    import json

    from urbanlib.pipeline.hparams import GRIDS
    from urbanlib.results.store import append_rows
    from urbanlib.results.views import LR_FAMILIES, chosen_rates, pretraining_summary, selection_table

    monkeypatch.setenv("URBANLIB_RESULTS", str(tmp_path))
    pre = {"table": "pretraining", "model": "UrbanCLIP", "variant": "", "city": "c", "seed": 0, "protocol": "all-tiles",
           "lr": 5e-4, "steps": 300, "best_step": 240, "step_cap": 1000, "best_val_loss": 2.5, "cka_to_init": 0.4,
           "train_cpu_s": 3600.0}
    metric = {"city": "c", "model": "m", "task": "t/random", "metric": "R2_mean", "value": 0.5}
    for seed, stop in ((0, "patience"), (1, "cap"), (2, "patience"), (3, "patience")):
        append_rows("benchmark", f"c-s{seed}", [metric, {**pre, "seed": seed, "stopped_by": stop}], {"s": seed}, seed,
                    "smoke", 1.0, tmp_path)
    summary = pretraining_summary(tmp_path)
    row = summary.loc[("UrbanCLIP", "")]
    assert row["runs"] == 4 and row["stopped by patience"] == "75%" and row["training CPU-h"] == 4.0
    for lr, r2 in ((2e-4, 0.3), (5e-4, 0.5)):
        rows = [{"city": "c", "model": "UrbanCLIP", "task": f"lr={lr:g}", "metric": k, "value": v}
                for k, v in (("val_r2", r2), ("steps", 100.0), ("stopped_by_patience", 1.0))]
        append_rows("selection", f"UrbanCLIP-lr{lr:g}", rows, {"lr": lr}, 0, "full", 1.0, tmp_path)
    (tmp_path / "selected_lr.json").write_text(json.dumps({"full": {"UrbanCLIP": 5e-4}}))
    table = selection_table(tmp_path).set_index("lr")
    assert table.loc[5e-4, "chosen"] and not table.loc[2e-4, "chosen"] and table.loc[2e-4, "val_r2"] == 0.3
    rates = chosen_rates(tmp_path).set_index("family")
    assert rates.loc["UrbanCLIP", "chosen"] == "0.0005" and not rates.loc["UrbanCLIP", "at grid edge"]
    assert rates.loc["UrbanCLIP", "candidates"] == "0.0002, 0.0005, 0.001"  # the family's whole grid
    assert "w/o L_LM" in rates.loc["UrbanCLIP", "used by"]
    (tmp_path / "selected_lr.json").write_text(json.dumps({"full": {"UrbanCLIP": 2e-4}}))
    assert chosen_rates(tmp_path).set_index("family").loc["UrbanCLIP", "at grid edge"]  # the grid's smallest
    assert set(LR_FAMILIES) == set(GRIDS)  # every family says which rows use its choice


def test_protocol_effect_pairs_the_two_protocols_over_seeds(tmp_path):
    from urbanlib.results.views import protocol_effect

    assert protocol_effect(tmp_path).empty
    for seed, strict in ((0, 0.45), (1, 0.52), (2, 0.40)):
        tier = {"UrbanCLIP": 0.5, "UrbanCLIP (random init)": 0.3, "PCA": 0.2}
        append_rows("benchmark", f"synth-ring-s{seed}-urbanclip", _unit_rows("synth-ring", "random", 0, tier),
                    {"city": "synth-ring", "group": "urbanclip"}, seed, "full", 1.0, tmp_path)
        rows = _unit_rows("synth-ring", "random", 0, {"UrbanCLIP [train-only]": strict,
                                                     "UrbanCLIP (random init) [train-only]": 0.3})
        append_rows("protocol", f"synth-ring-random-s{seed}", rows, {"city": "synth-ring", "split": "random"}, seed,
                    "full", 1.0, tmp_path)
    # another city's rows, and the blocked split's, are not what the protocol units re-ran
    append_rows("benchmark", "synth-grid-s0-urbanclip", _unit_rows("synth-grid", "random", 0, {"UrbanCLIP": 0.9}),
                {"city": "synth-grid", "group": "urbanclip"}, 0, "full", 1.0, tmp_path)
    append_rows("benchmark", "synth-ring-s0-urbanclip-b", _unit_rows("synth-ring", "blocked", 0, {"UrbanCLIP": 0.9}),
                {"city": "synth-ring", "group": "urbanclip", "split": "blocked"}, 0, "full", 1.0, tmp_path)
    e = protocol_effect(tmp_path).set_index(["model", "indicator"])
    assert set(e.index.get_level_values(1)) == {"gdp", "population", "mean"}
    ours = e.loc[("UrbanCLIP", "mean")]
    assert ours["n"] == 3 and ours["train-only"] == pytest.approx(np.mean([0.45, 0.52, 0.40]))
    assert ours["difference"] == pytest.approx(0.5 - np.mean([0.45, 0.52, 0.40]))
    assert ours["ci_low"] < ours["difference"] < ours["ci_high"]
    twin = e.loc[("UrbanCLIP (random init)", "gdp")]
    assert twin["difference"] == 0 and twin["all-tiles"] == 0.3
