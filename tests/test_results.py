import numpy as np
import pandas as pd
import pytest

from urbanlib.results import registry
from urbanlib.results.runner import pending_units, run_all, verify_unit
from urbanlib.results.store import PROVENANCE_COLUMNS, read_results


@pytest.fixture
def toy(monkeypatch):
    calls = []

    def run(config, seed, scale):
        calls.append(seed)
        rng = np.random.default_rng(seed)
        return [{"city": "c", "model": "m", "task": "t", "metric": "r2", "value": float(rng.normal() * config["k"])}]

    exp = registry.Experiment("toy", run=run, plan=lambda scale: [(f"s{s}", {"k": 2}, s) for s in range(3)])
    monkeypatch.setattr(registry, "EXPERIMENTS", {"toy": exp})
    import urbanlib.results.runner as runner

    monkeypatch.setattr(runner, "load_all", lambda: registry.EXPERIMENTS)
    return exp, calls


def test_run_is_resumable_and_rows_carry_provenance(toy, tmp_path):
    exp, calls = toy
    assert run_all("full", results_dir=tmp_path, log=lambda *_: None) == 3
    rows = read_results("toy", tmp_path)
    assert len(rows) == 3 and set(PROVENANCE_COLUMNS) <= set(rows.columns)
    assert rows["git_tree"].notna().all() and (rows["wall_s"] >= 0).all()
    assert rows["machine"].str.endswith("torch thread(s)").all()  # the thread count sets the last bits too
    assert run_all("full", results_dir=tmp_path, log=lambda *_: None) == 0  # nothing pending
    assert calls == [0, 1, 2]
    assert pending_units(exp, "full", tmp_path) == []


def test_rows_name_the_code_the_worker_imported_not_files_edited_since(toy, tmp_path, monkeypatch):
    import subprocess
    import sys

    import urbanlib.provenance as provenance

    code = "import urbanlib.results.store, urbanlib.provenance as p; print(p.code_at_start.cache_info().currsize)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "1"  # taken at import, before any row is stored
    provenance.code_at_start.cache_clear()
    monkeypatch.setattr(provenance, "source_tree_hash", lambda *a, **k: "a" * 64)
    provenance.code_at_start()  # what the results store does at import
    monkeypatch.setattr(provenance, "source_tree_hash", lambda *a, **k: "b" * 64)  # a file edited while it runs
    try:
        run_all("full", results_dir=tmp_path, log=lambda *_: None)
        assert set(read_results("toy", tmp_path)["source_hash"]) == {"a" * 16}
    finally:
        provenance.code_at_start.cache_clear()


def test_until_starts_no_unit_that_would_outlast_it(toy, tmp_path):
    import time

    from urbanlib.results.store import append_rows

    exp, calls = toy
    said = []
    assert run_all("full", results_dir=tmp_path, log=said.append, until=time.time() - 1) == 0  # already past
    assert sum("--until reached" in line for line in said) == 1  # said once, not once per unit
    said.clear()
    assert run_all("full", results_dir=tmp_path, log=said.append, until=time.time() + 3600) == 0
    assert any("length is unknown" in line for line in said)  # nothing stored to guess from: not started
    append_rows("toy", "s0", exp.run({"k": 2}, 0, "full"), {"k": 2}, 0, "full", 7200.0, tmp_path)  # s0 took 2 h
    said.clear()
    assert run_all("full", results_dir=tmp_path, log=said.append, until=time.time() + 3600) == 0
    assert any("s1 left pending: it takes about 120 min" in line for line in said)
    assert run_all("full", results_dir=tmp_path, log=lambda *_: None, until=time.time() + 3 * 3600) == 2


def test_until_guesses_each_unit_from_stored_units_of_its_own_kind(monkeypatch, tmp_path):
    import time

    import urbanlib.results.runner as runner
    from urbanlib.results.store import append_rows

    ran = []

    def run(config, seed, scale):
        ran.append(f"{config['kind']}-s{seed}")
        return [{"city": "c", "model": "m", "task": "t", "metric": "r2", "value": 1.0}]

    plan = lambda scale: [(f"c-s{s}-{k}", {"kind": k}, s) for s in range(3) for k in ("fast", "slow")]  # noqa: E731
    exp = registry.Experiment("kinds", run=run, plan=plan)
    monkeypatch.setattr(runner, "load_all", lambda: {"kinds": exp})
    row = [{"city": "c", "model": "m", "task": "t", "metric": "r2", "value": 1.0}]
    for kind, wall in (("fast", 60.0), ("slow", 7200.0)):
        append_rows("kinds", f"c-s0-{kind}", row, {"kind": kind}, 0, "full", wall, tmp_path)
    assert run_all("full", results_dir=tmp_path, log=lambda *_: None, until=time.time() + 1800) == 2
    assert ran == ["fast-s1", "fast-s2"]  # the slow kind's 2 h would outlast the half hour left


def test_a_unit_that_restored_its_pretraining_is_guessed_at_what_training_it_cost(tmp_path):
    from urbanlib.results.runner import expected_wall_s
    from urbanlib.results.store import PRETRAINING_COLUMNS, append_rows

    trained = {c: None for c in PRETRAINING_COLUMNS} | {"table": "pretraining", "model": "UrbanLN stage 0",
                                                      "city": "all", "seed": 0, "train_cpu_s": 815.0}
    row = {"city": "all", "model": "UrbanLN stage 0", "task": "pretraining", "metric": "steps", "value": 1.0}
    append_rows("benchmark", "all-s0-stage0", [row, trained], {"city": "all", "group": "stage0"}, 0, "full", 23.0,
                tmp_path)  # 23 s: the run came from the archive
    assert expected_wall_s("benchmark", "all-s1-stage0", tmp_path) == 815.0  # seed 1 has to train it


def test_until_reads_a_clock_time_or_minutes_and_refuses_anything_else(monkeypatch):
    import time

    from urbanlib.results.runner import parse_until, unit_kind

    now = time.mktime((2026, 12, 7, 10, 0, 0, 0, 0, -1))
    assert parse_until("+90", now) == now + 5400
    assert parse_until("11:30", now) == now + 5400
    assert time.localtime(parse_until("09:00", now))[2:5] == (8, 9, 0)  # already past today: tomorrow
    for bad in ("25:00", "soon", "90", "+-5"):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_until(bad, now)
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:  # the night the clocks go forward: tomorrow 09:00 is 23 hours away, not 24
        before = time.mktime((2026, 3, 28, 10, 0, 0, 0, 0, -1))
        assert time.localtime(parse_until("09:00", before))[2:5] == (29, 9, 0)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert [unit_kind(u) for u in ("synth-ring-s0-urbanln-a", "synth-ring-s2", "all-s1-stage0",
                                   "synth-ring-random-s0", "UrbanLN_stage_0-lr0.0002", "READ-lr1e-05")] == \
        ["urbanln-a", "", "stage0", "", "UrbanLN_stage_0", "READ"]


def test_the_command_line_refuses_a_bad_until_and_prints_the_budget(capsys):
    from urbanlib.results.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["run", "--until", "soon"])
    assert stop.value.code == 2 and "HH:MM" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["budget", "--scale", "fulll"])
    assert stop.value.code == 2 and "unknown scale 'fulll'" in capsys.readouterr().err
    assert main(["budget"]) == 0
    out = capsys.readouterr().out
    assert "tier CPU-h (projected)" in out and "budget: 40 CPU-h" in out


def test_units_glob_runs_only_matching_units(toy, tmp_path):
    exp, calls = toy
    assert run_all("full", results_dir=tmp_path, log=lambda *_: None, units="s[02]") == 2
    assert calls == [0, 2] and [u for u, _, _ in pending_units(exp, "full", tmp_path)] == ["s1"]


def test_a_unit_stored_meanwhile_by_another_worker_is_skipped(toy, tmp_path):
    from urbanlib.results.store import append_rows

    exp, calls = toy
    inner = exp.run

    def run(config, seed, scale):  # while this worker runs s0, another one stores s1
        if seed == 0:
            append_rows("toy", "s1", inner(config, 1, scale), config, 1, scale, 0.0, tmp_path)
        return inner(config, seed, scale)

    exp.run = run
    log = []
    assert run_all("full", results_dir=tmp_path, log=log.append) == 2
    assert calls == [1, 0, 2]  # s1 ran once, in the "other worker"
    assert any("s1 was stored meanwhile" in m for m in log) and pending_units(exp, "full", tmp_path) == []


def test_a_unit_another_worker_is_running_is_skipped_and_free_again_when_it_ends(toy, tmp_path):
    from urbanlib.results.runner import claim

    exp, calls = toy
    log = []
    with claim("toy", "s1", tmp_path) as mine:  # "another worker" holds s1's claim
        assert mine
        assert run_all("full", results_dir=tmp_path, log=log.append) == 2
    assert calls == [0, 2] and any("s1 is running in another worker" in m for m in log)
    assert run_all("full", results_dir=tmp_path, log=lambda *_: None) == 1 and calls == [0, 2, 1]


def test_a_unit_that_is_not_ready_is_left_pending_and_the_others_run(toy, tmp_path):
    exp, calls = toy
    inner = exp.run

    def run(config, seed, scale):
        if seed == 1:
            raise registry.NotReady("needs s0's result")
        return inner(config, seed, scale)

    exp.run = run
    log = []
    assert run_all("full", results_dir=tmp_path, log=log.append) == 2
    assert [u for u, _, _ in pending_units(exp, "full", tmp_path)] == ["s1"]
    assert any("s1 not ready (needs s0's result)" in m for m in log)


def test_redefining_a_scale_preset_marks_its_units_pending(toy, tmp_path, monkeypatch):
    from dataclasses import replace

    from urbanlib import scales

    exp, _ = toy
    run_all("full", results_dir=tmp_path, log=lambda *_: None)
    assert pending_units(exp, "full", tmp_path) == []
    monkeypatch.setitem(scales.SCALES, "full", replace(scales.SCALES["full"], grid=24))
    assert len(pending_units(exp, "full", tmp_path)) == 3  # stored rows were computed on another grid


def test_verify_accepts_faithful_and_catches_drift(toy, tmp_path):
    run_all("full", results_dir=tmp_path, log=lambda *_: None)
    table = verify_unit("toy", "s1", results_dir=tmp_path)
    assert table["match"].all()
    path = tmp_path / "toy.csv"
    df = pd.read_csv(path)
    df.loc[df["unit"] == "s1", "value"] += 0.5  # a committed number that no longer matches the code
    df.to_csv(path, index=False)
    with pytest.raises(AssertionError, match="drifted"):
        verify_unit("toy", "s1", results_dir=tmp_path)


def test_verify_compares_the_metrics_and_not_the_side_table_rows(tmp_path, monkeypatch):
    import urbanlib.results.runner as runner

    rows = [{"city": "c", "model": "m", "task": "gdp/random", "metric": "R2_mean", "value": 0.5},
            {"table": "not_available", "model": "n", "city": "c", "seed": 0, "split": "random", "reason": "n/a: no x"}]
    exp = registry.Experiment("side", run=lambda config, seed, scale: rows, plan=lambda scale: [("u", {}, 0)])
    monkeypatch.setattr(runner, "load_all", lambda: {"side": exp})
    run_all("full", results_dir=tmp_path, log=lambda *_: None)
    table = verify_unit("side", "u", results_dir=tmp_path)
    assert table[["model", "metric"]].values.tolist() == [["m", "R2_mean"]] and table["match"].all()


def test_a_rerun_may_differ_within_the_probe_seed_noise_but_not_beyond_it():
    from urbanlib.results.runner import compare_rerun

    def unit(r2_mean, r2_std, n_test):
        return pd.DataFrame([{"city": "c", "model": "m", "task": "gdp/random", "metric": k, "value": v}
                             for k, v in (("R2_mean", r2_mean), ("R2_std", r2_std), ("n_test", n_test))])

    stored = unit(0.700, 0.010, 200.0)  # 5 probe seeds: standard error 0.010 / sqrt(5) = 0.0045
    close = compare_rerun(stored, unit(0.705, 0.012, 200.0), 1e-4, 1e-5, 5).set_index("metric")
    assert not close.loc["R2_mean", "match"]  # beyond rtol ...
    assert close["within_noise"].all() and close.loc["R2_mean", "z"] == pytest.approx(1.118, abs=1e-3)  # ... not noise
    far = compare_rerun(stored, unit(0.715, 0.010, 200.0), 1e-4, 1e-5, 5).set_index("metric")
    assert not far.loc["R2_mean", "within_noise"]  # 0.015 is more than three standard errors
    count = compare_rerun(stored, unit(0.700, 0.010, 199.0), 1e-4, 1e-5, 5).set_index("metric")
    assert not count.loc["n_test", "within_noise"] and count.loc["R2_mean", "within_noise"]  # counts must match
    wide = compare_rerun(stored, unit(0.700, 0.022, 200.0), 1e-4, 1e-5, 5).set_index("metric")
    assert not wide.loc["R2_std", "within_noise"]  # a std off by more than three of its standard errors (0.0035)


def test_verify_fails_when_every_mean_moves_a_little_the_same_way(toy, tmp_path, monkeypatch):
    import urbanlib.results.runner as runner

    rows = [{"city": "c", "model": "m", "task": f"t{i}", "metric": m, "value": v}
            for i in range(25) for m, v in (("R2_mean", 0.5 + 0.01 * i), ("R2_std", 0.01))]
    exp = registry.Experiment("shift", run=lambda config, seed, scale: rows, plan=lambda scale: [("u", {}, 0)])
    monkeypatch.setattr(runner, "load_all", lambda: {"shift": exp})
    run_all("full", results_dir=tmp_path, log=lambda *_: None)
    assert verify_unit("shift", "u", results_dir=tmp_path)["match"].all()
    shifted = [{**r, "value": r["value"] + 0.004} if r["metric"] == "R2_mean" else r for r in rows]
    exp.run = lambda config, seed, scale: shifted  # every mean up by 0.9 standard errors: each within noise ...
    with pytest.raises(AssertionError, match="moved together"):  # ... but together a change of the code
        verify_unit("shift", "u", results_dir=tmp_path)


def _verify_random_unit(cheap: bool):
    import os
    import random

    from urbanlib.results.tier import load_all

    names = [n for n, e in load_all().items() if e.verify_in_ci == cheap and not read_results(n).empty]
    if not names:
        pytest.skip("no committed results yet")
    rng = random.Random(os.environ.get("URBANLIB_VERIFY_SEED"))
    name = rng.choice(sorted(names))
    table = verify_unit(name, rng_seed=rng.randrange(2**31))
    assert table["match"].all()


def test_a_committed_unit_reproduces(committed_results):
    """CI's drift check: re-run one randomly drawn committed unit of a cheap experiment."""
    _verify_random_unit(cheap=True)


@pytest.mark.slow
def test_a_committed_training_unit_reproduces(committed_results):
    """The same for experiments that train models (minutes per unit on a CPU)."""
    _verify_random_unit(cheap=False)


def _append_many(args):
    from urbanlib.results.store import append_rows

    worker, folder = args
    for i in range(15):
        rows = [{"city": "c", "model": "m", "task": "t", "metric": "R2", "value": float(i)}]
        append_rows("concurrent", f"w{worker}-u{i}", rows, {"w": worker, "i": i}, 0, "smoke", 0.0, folder)


def test_two_workers_appending_together_lose_no_unit(tmp_path):
    import multiprocessing as mp

    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_append_many, [(0, tmp_path), (1, tmp_path)])
    units = set(read_results("concurrent", tmp_path)["unit"])
    assert units == {f"w{w}-u{i}" for w in (0, 1) for i in range(15)}


def test_pretraining_rows_go_to_their_own_table_and_replace_their_unit(tmp_path):
    from urbanlib.results.store import PRETRAINING_COLUMNS, append_rows

    metric = {"city": "c", "model": "m", "task": "t/random", "metric": "R2_mean", "value": 0.5}
    pre = {"table": "pretraining", "model": "UrbanCLIP", "variant": "", "city": "c", "seed": 1, "protocol": "all-tiles",
           "lr": 5e-4, "steps": 300, "best_step": 240, "step_cap": 1000, "best_val_loss": 2.5,
           "stopped_by": "patience", "cka_to_init": 0.4, "train_cpu_s": 100.0}
    for _ in range(2):  # a re-run of the unit replaces its rows
        append_rows("benchmark", "c-s1-urbanclip", [metric, pre], {"city": "c"}, 1, "smoke", 3.0, tmp_path, cpu_s=2.5)
    bench = read_results("benchmark", tmp_path)
    assert len(bench) == 1 and bench["cpu_s"].iloc[0] == 2.5 and "table" not in bench
    table = pd.read_csv(tmp_path / "pretraining.csv")
    assert len(table) == 1 and set(PRETRAINING_COLUMNS) <= set(table.columns)
    assert table["stopped_by"].iloc[0] == "patience" and table["unit"].iloc[0] == "c-s1-urbanclip"
    assert {"git_tree", "source_hash", "config_hash", "machine"} <= set(table.columns)
    with pytest.raises(ValueError, match="cka_to_init"):
        bad = {k: v for k, v in pre.items() if k != "cka_to_init"}
        append_rows("benchmark", "c-s2-urbanclip", [metric, bad], {"city": "c"}, 2, "smoke", 3.0, tmp_path)


def test_full_tier_plan_has_one_pretraining_unit_per_city_seed_and_group():
    from urbanlib.results.tier import ABLATION_GROUPS, BENCHMARK_GROUPS, BOOK_CITY, ONE_CITY_GROUPS, load_all

    exps = load_all()
    plan = exps["benchmark"].plan("full")
    assert len(plan) == 3 * (1 + 5 * len(BENCHMARK_GROUPS))  # per seed: the shared stage 0, then city x group
    assert plan[0][0] == "all-s0-stage0" and len({u for u, _, _ in plan}) == len(plan)
    ablations = exps["ablations"].plan("full")
    per_city = len(ABLATION_GROUPS) - len(ONE_CITY_GROUPS)
    assert len(ablations) == 3 * (5 * per_city + len(ONE_CITY_GROUPS))  # one-city sweeps: the book's city only
    assert {c["city"] for _, c, _ in ablations if c["group"] in ONE_CITY_GROUPS} == {BOOK_CITY}


def test_grouped_experiments_interleave_by_seed_and_city_after_the_ungrouped_ones(monkeypatch, tmp_path):
    import urbanlib.results.runner as runner

    order = []

    def make(name, cities, group=True):
        def run(config, seed, scale):
            order.append(f"{name}:{config['city']}-s{seed}")
            return [{"city": config["city"], "model": "m", "task": "t", "metric": "r2", "value": 1.0}]

        plan = lambda scale: [(f"{c}-s{s}", {"city": c}, s) for s in range(2) for c in cities]  # noqa: E731
        key = (lambda config, seed: (seed, cities.index(config["city"]))) if group else None
        return registry.Experiment(name, run=run, plan=plan, group=key)

    exps = {"first": make("first", ["x"], group=False), "train": make("train", ["a", "b"]),
            "consume": make("consume", ["a", "b"])}
    monkeypatch.setattr(runner, "load_all", lambda: exps)
    assert run_all("full", results_dir=tmp_path, log=lambda *_: None) == 10
    assert order == ["first:x-s0", "first:x-s1",
                     "train:a-s0", "consume:a-s0", "train:b-s0", "consume:b-s0",
                     "train:a-s1", "consume:a-s1", "train:b-s1", "consume:b-s1"]


def test_not_available_rows_go_to_their_side_table_and_unknown_tables_are_refused(tmp_path):
    from urbanlib.results.store import append_rows
    from urbanlib.results.views import not_available_reasons

    rows = [{"city": "c", "model": "m", "task": "t", "metric": "r2", "value": 0.5},
            {"table": "not_available", "model": "MuseCL", "city": "c", "seed": 0, "split": "random",
             "reason": "n/a: needs human-mobility flows"}]
    append_rows("benchmark", "c-s0", rows, {"city": "c"}, 0, "full", 1.0, tmp_path)
    assert len(read_results("benchmark", tmp_path)) == 1  # the side row is not a result row
    assert not_available_reasons("c", "random", tmp_path) == {"MuseCL": "n/a: needs human-mobility flows"}
    assert not_available_reasons("c", "blocked", tmp_path) == {}
    with pytest.raises(ValueError, match="unknown table"):
        append_rows("benchmark", "c-s1", [{**rows[0], "table": "nope"}], {"city": "c"}, 1, "full", 1.0, tmp_path)


def test_the_benchmark_groups_hold_every_benchmark_model_once():
    from urbanlib.experiments.benchmark import BENCHMARK_MODELS
    from urbanlib.results.tier import BENCHMARK_GROUPS

    grouped = [m for models in BENCHMARK_GROUPS.values() for m in models]
    assert sorted(grouped) == sorted(BENCHMARK_MODELS)  # none left out, none run twice


def test_a_background_worker_lowers_its_priority_and_its_autogroup_only_when_it_leads_its_session(tmp_path):
    import subprocess
    import sys

    group = tmp_path / "autogroup"
    group.write_text("0")
    code = ("import os, pathlib; from urbanlib.results.runner import yield_cpu; "
            f"print(yield_cpu(pathlib.Path({str(group)!r}))); print(os.nice(0))")
    shared = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert shared[0].startswith("nice 19; autogroup shared with the calling session") and shared[1] == "19"
    assert group.read_text() == "0"  # the caller's terminal is left alone
    own = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.split("\n")
    assert own[0].startswith("nice 19") and own[1] == "19" and group.read_text() == "19"
