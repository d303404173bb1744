"""The trained baselines stop on their own validation loss (issue 14 items 2 and 3).

On the smoke city, with ``val_idx`` each baseline trains through the shared Trainer with the
scale's early stopping, keeps its best weights and reports its training facts and CKA to its
initialisation; without ``val_idx`` it runs its fixed epochs as before. READ reads no label
outside ``label_idx``. Learning rates come from the family's choice.
"""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from urbanlib.baselines import BaselineInputs, NotAvailable, resnet, run_baseline, tile2vec, urbanvlp
from urbanlib.baselines import autoencoder as ae
from urbanlib.baselines import read as read_mod
from urbanlib.pipeline import hparams
from urbanlib.pipeline.city import open_city

FACTS = {"lr", "steps", "best_step", "step_cap", "best_val_loss", "stopped_by", "cpu_s"}


@pytest.fixture(scope="module")
def city():
    return open_city("synth-ring", "smoke", 0, progress=False)


def inputs_of(city, validate=True, supervised=False, **kw) -> BaselineInputs:
    inputs = BaselineInputs.from_city(city, supervised=supervised)
    return dataclasses.replace(inputs, val_idx=inputs.val_idx if validate else None, **kw)


def check_stopped(facts: dict, n_val: int) -> None:
    """The run stopped by patience or at the cap, evaluated ``n_val`` held-out samples, and says so."""
    assert FACTS <= set(facts), facts
    assert facts["stopped_by"] in ("patience", "cap")
    if facts["stopped_by"] == "cap":
        assert facts["steps"] == facts["step_cap"]
    else:
        assert facts["steps"] <= facts["step_cap"] and facts["best_step"] < facts["steps"]
    assert 0 <= facts["best_step"] <= facts["steps"] and facts["steps"] > 0
    assert math.isfinite(facts["best_val_loss"]) and facts["cpu_s"] > 0
    assert facts["val_samples"] == n_val > 0


def check_fixed(facts: dict, steps: int) -> None:
    """The old path: no validation, the fixed number of steps."""
    assert FACTS <= set(facts)
    assert facts["stopped_by"] == "cap" and facts["best_val_loss"] is None and facts["val_samples"] == 0
    assert facts["steps"] == facts["step_cap"] == facts["best_step"] == steps


def n_val_tiles(city) -> int:
    v = city.pretrain_val_idx
    return int(city.tensors.satellite_mask[v].sum())


def check_info(out) -> None:
    assert 0 < out.info["cka_to_init"] <= 1 + 1e-9
    assert out.info["training"]["lr"] > 0


# ---- autoencoder -----------------------------------------------------------------------------------
def test_autoencoder_stops_on_held_out_reconstruction_and_keeps_its_best_weights(city):
    inputs = inputs_of(city)
    cfg = ae.AutoencoderConfig.for_scale(city.scale)
    model, history, facts, _ = ae._train(inputs, cfg)
    check_stopped(facts, n_val_tiles(city))
    assert len(history) == facts["steps"]
    # the returned weights are those of the best evaluation: its loss is the held-out tiles' MSE
    val = city.pretrain_val_idx[city.tensors.satellite_mask[city.pretrain_val_idx]]
    size = min(cfg.batch_size, len(val))
    assert ae.reconstruction_mse(model, city.tensors.satellite[val[:size]]) == pytest.approx(
        facts["best_val_loss"], rel=1e-5)
    out = ae.fit(inputs, cfg)
    check_info(out)
    assert out.info["training"]["best_val_loss"] == pytest.approx(facts["best_val_loss"], rel=1e-6)


def test_autoencoder_without_val_idx_runs_its_fixed_epochs(city):
    cfg = ae.AutoencoderConfig.for_scale("smoke", epochs=2)
    out = ae.fit(inputs_of(city, validate=False), cfg)
    n_train = int(city.tensors.satellite_mask[city.pretrain_idx].sum())
    check_fixed(out.info["training"], 2 * (n_train // cfg.batch_size))
    assert len(out.history) == out.info["training"]["steps"]


# ---- Tile2Vec --------------------------------------------------------------------------------------
def test_tile2vec_stops_on_held_out_triplets(city):
    out = tile2vec.fit(inputs_of(city))
    check_stopped(out.info["training"], n_val_tiles(city))
    check_info(out)
    assert np.isfinite(out.features[city.tensors.satellite_mask]).all()


def test_tile2vec_validation_triplets_are_fixed_and_never_anchor_on_training_tiles(city):
    inputs = inputs_of(city)
    cfg = tile2vec.Tile2VecConfig.for_scale(city.scale)
    train_pos = np.asarray(city.pretrain_idx)
    val_pos = np.asarray(city.pretrain_val_idx)
    both = np.union1d(train_pos, val_pos)
    val = tile2vec.TripletDataset(city.tensors.satellite, val_pos,
                                  tile2vec.neighbour_sets(city.ds.regions, val_pos, both, cfg.k_nearest), 1,
                                  pool=both, augment=False)
    a, b = val[0], val[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not set(val.idx.tolist()) & set(train_pos.tolist())
    assert tile2vec.fit(inputs, dataclasses.replace(cfg, epochs=1)).info["training"]["val_samples"] == len(val_pos)


def test_tile2vec_without_val_idx_runs_its_fixed_epochs(city):
    cfg = tile2vec.Tile2VecConfig.for_scale("smoke", epochs=1)
    out = tile2vec.fit(inputs_of(city, validate=False), cfg)
    check_fixed(out.info["training"], int(city.tensors.satellite_mask[city.pretrain_idx].sum()) // cfg.batch_size)


# ---- READ ------------------------------------------------------------------------------------------
def test_read_teacher_and_student_stop_on_held_out_labelled_tiles(city):
    inputs = inputs_of(city, supervised=True)
    _, _, info = read_mod.train_read(inputs, read_mod.READConfig.for_scale(city.scale))
    val, labelled = info["validation_positions"], info["labelled_positions"]
    assert len(val) == info["n_labelled_validation"] > 0
    assert set(val) <= set(labelled) <= set(city.label_idx)  # validation: READ's own labelled tiles
    check_stopped(info["teacher_training"], len(val))
    check_stopped(info["training"], len(val))
    # both nets improve on their initialisation (before PreciseBN and soft pseudo-labels the student's
    # best validation loss was its step 0, so READ's features were a random-init net's)
    assert info["teacher_training"]["best_step"] > 0 and info["training"]["best_step"] > 0
    # held-out labelled tiles are trained on by neither net (nor pseudo-labelled)
    n_teacher = len(labelled) - len(val)
    assert info["teacher_training"]["train_samples"] == n_teacher
    assert info["training"]["train_samples"] == n_teacher + info["n_pseudo_labelled"]
    out = read_mod.fit(inputs)
    check_info(out)
    assert FACTS <= set(out.info["teacher_training"])


def test_read_never_reads_a_label_outside_label_idx(city):
    inputs = inputs_of(city, supervised=True)
    regions = city.ds.regions.copy()
    outside = np.setdiff1d(np.arange(len(regions)), city.label_idx)
    cols = [c for c in (*city.ds.indicators, *read_mod.LABEL_FALLBACKS) if c in regions.columns]
    garbage = np.where(np.arange(len(outside)) % 2 == 0, np.nan, 1e9)  # missing and absurd labels alike
    for c in cols:
        regions[c] = regions[c].astype(float)
        regions.loc[regions.index[outside], c] = garbage
    hidden = dataclasses.replace(inputs, ds=dataclasses.replace(city.ds, regions=regions))
    cfg = read_mod.READConfig.for_scale(city.scale)
    a, b = read_mod.fit(inputs, cfg), read_mod.fit(hidden, cfg)
    np.testing.assert_array_equal(a.features, b.features)
    for key in ("training", "teacher_training"):
        assert {k: v for k, v in a.info[key].items() if k != "cpu_s"} == \
               {k: v for k, v in b.info[key].items() if k != "cpu_s"}
    assert a.info["class_edges_log1p"] == b.info["class_edges_log1p"]


def test_read_without_val_idx_trains_on_every_labelled_tile(city):
    cfg = read_mod.READConfig.for_scale("smoke", teacher_epochs=1, student_epochs=1)
    _, _, info = read_mod.train_read(inputs_of(city, validate=False, supervised=True), cfg)
    assert info["n_labelled_validation"] == 0
    assert info["teacher_training"]["train_samples"] == info["n_labelled"]
    check_fixed(info["teacher_training"], info["n_labelled"] // min(cfg.batch_size, info["n_labelled"]))
    assert info["training"]["val_samples"] == 0 and info["training"]["stopped_by"] == "cap"


# ---- ResNet-18 land-use stand-in ---------------------------------------------------------------------
def test_landuse_stand_in_stops_on_its_source_holdout(city):
    out = resnet.fit_landuse(inputs_of(city))
    check_stopped(out.info["training"], out.info["source_holdout_regions"])
    check_info(out)


def test_landuse_stand_in_without_val_idx_runs_its_fixed_epochs(city):
    cfg = resnet.ResNetConfig.for_scale("smoke", epochs=1)
    out = resnet.fit_landuse(inputs_of(city, validate=False), cfg)
    check_fixed(out.info["training"], out.info["source_train_regions"] // cfg.batch_size)


# ---- UrbanVLP --------------------------------------------------------------------------------------
def test_urbanvlp_stops_on_held_out_regions(city):
    out = urbanvlp.fit(inputs_of(city))
    assert not isinstance(out, NotAvailable)
    check_stopped(out.info["training"], out.info["training"]["val_samples"])
    assert out.info["training"]["step_cap"] == city.scale.pretrain_epochs * (
        out.info["training"]["train_samples"] // min(16, out.info["training"]["train_samples"]))
    check_info(out)


def test_urbanvlp_without_val_idx_runs_its_fixed_epochs(city):
    cfg = urbanvlp.UrbanVLPConfig.for_scale("smoke", epochs=1)
    out = urbanvlp.fit(inputs_of(city, validate=False), cfg)
    check_fixed(out.info["training"], out.info["training"]["train_samples"] // cfg.batch_size)


# ---- learning rates, selection, pretraining rows ------------------------------------------------------
CONFIGS = {"Autoencoder": ae.AutoencoderConfig, "Tile2Vec": tile2vec.Tile2VecConfig, "READ": read_mod.READConfig,
           "ResNet-18 land-use": resnet.ResNetConfig, "UrbanVLP": urbanvlp.UrbanVLPConfig}


def test_each_baseline_family_has_three_candidates_around_its_default(tmp_path, monkeypatch):
    monkeypatch.setenv("URBANLIB_RESULTS", str(tmp_path))
    from urbanlib.scales import get_scale

    for family, cls in CONFIGS.items():
        grid = hparams.GRIDS[family]
        assert len(grid) == 3 and min(grid) < hparams.DEFAULT_LR[family] < max(grid)
        assert cls.for_scale("default").lr == hparams.DEFAULT_LR[family]
        with pytest.raises(LookupError):
            cls.for_scale("full")  # a selected scale trains only with its choice
        assert cls.for_scale("full", lr=grid[0]).lr == grid[0]  # a candidate needs no choice
    scores = pd.DataFrame({"family": ["Tile2Vec"] * 3, "lr": list(hparams.GRIDS["Tile2Vec"]),
                           "val_r2": [0.1, 0.3, 0.2], "scale": "full"})
    hparams.write_selected(scores, "full")
    assert tile2vec.Tile2VecConfig.for_scale(get_scale("full")).lr == hparams.GRIDS["Tile2Vec"][1]
    # the cap: the scale's pretrain_epochs, or the preset's where larger
    assert tile2vec.Tile2VecConfig.for_scale(get_scale("full")).epochs == get_scale("full").pretrain_epochs
    assert tile2vec.Tile2VecConfig.for_scale("smoke").epochs == 12


def test_selection_plan_covers_the_baseline_families():
    from urbanlib.results.tier import BASELINE_FAMILIES, _selection_plan

    assert {family: cls for family, (_, cls) in BASELINE_FAMILIES.items()} == CONFIGS  # the classes, not their names
    plan = _selection_plan("full")
    families = [c["family"] for _, c, _ in plan]
    assert set(families) == set(hparams.GRIDS) and set(BASELINE_FAMILIES) <= set(families)
    assert families.index("UrbanLN stage 0") < families.index("UrbanLN")
    for family in BASELINE_FAMILIES:
        assert sorted(c["lr"] for _, c, _ in plan if c["family"] == family) == sorted(hparams.GRIDS[family])


def test_selection_runs_a_baseline_candidate_on_validation():
    from urbanlib.results import tier

    rows = tier._selection({"family": "Autoencoder", "lr": 4e-3, "city": "synth-ring"}, 0, "smoke")
    by = {r["metric"]: r["value"] for r in rows}
    assert {r["task"] for r in rows} == {"lr=0.004"} and {r["model"] for r in rows} == {"Autoencoder"}
    assert math.isfinite(by["val_r2"]) and by["steps"] > 0 and by["stopped_by_patience"] in (0.0, 1.0)
    assert by["best_val_loss"] > 0 and by["cpu_s"] > 0


def test_pretraining_rows_of_trained_baselines(city):
    from urbanlib.experiments.benchmark import Features
    from urbanlib.results.store import PRETRAINING_COLUMNS
    from urbanlib.results.tier import _pretraining_rows

    facts = {"lr": 2e-3, "steps": 40, "best_step": 30, "step_cap": 240, "best_val_loss": 0.5,
             "stopped_by": "patience", "cpu_s": 3.0}
    feats = {"Autoencoder": Features("Autoencoder", np.zeros((2, 2)), {"training": facts, "cka_to_init": 0.4}),
             "READ": Features("READ", np.zeros((2, 2)), {"training": facts, "cka_to_init": 0.7}),
             "PCA": Features("PCA", np.zeros((2, 2)), {"config": {}}),
             "MuseCL": NotAvailable("MuseCL", "n/a")}
    rows = _pretraining_rows(city, feats, 0)
    assert [r["model"] for r in rows] == ["Autoencoder", "READ"]
    for r in rows:
        assert set(PRETRAINING_COLUMNS) <= set(r) and r["table"] == "pretraining"
        assert r["stopped_by"] == "patience" and r["train_cpu_s"] == 3.0 and r["lr"] == 2e-3
    assert rows[0]["cka_to_init"] == 0.4 and rows[0]["variant"] == ""
    assert "random" in rows[1]["variant"]  # READ's run depends on the split's labels


def test_benchmark_baseline_features_carry_the_facts(city):
    from urbanlib.experiments.benchmark import baseline_features

    fresh = baseline_features(city, "Tile2Vec")
    cached = baseline_features(city, "Tile2Vec")
    assert cached.info["cached"] and cached.info["training"] == fresh.info["training"]
    assert cached.info["cka_to_init"] == fresh.info["cka_to_init"]
    assert run_baseline("MuseCL", inputs_of(city)).__class__ is NotAvailable


def test_simclr_family_reports_its_training_and_cka(city):
    from urbanlib.baselines import run_baseline

    out = run_baseline("UrbanViT", inputs_of(city))
    t = out.info["training"]
    assert t["stopped_by"] in ("patience", "cap") and 0 < t["steps"] <= t["step_cap"] and t["val_samples"] > 0
    assert 0.0 <= out.info["cka_to_init"] <= 1.0 + 1e-9
