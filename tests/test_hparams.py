"""Learning rates chosen on validation: the split never scores on test, the choice is the argmax, gates hold."""

import json

import numpy as np
import pandas as pd
import pytest

from urbanlib.data.splits import Split
from urbanlib.pipeline import hparams
from urbanlib.scales import get_scale


def test_selection_split_scores_on_validation_and_never_sees_test():
    rng = np.random.default_rng(0)
    perm = rng.permutation(100)
    split = Split(train=np.sort(perm[:60]), val=np.sort(perm[60:80]), test=np.sort(perm[80:]), name="random")
    sel = hparams.selection_split(split)
    assert np.array_equal(sel.test, split.val)  # scored on the probe's validation regions
    used = np.concatenate([sel.train, sel.val, sel.test])
    assert set(used.tolist()).isdisjoint(split.test.tolist()) and len(used) == len(set(used.tolist())) == 80
    assert len(sel.val) == 12 and set(sel.train.tolist()) | set(sel.val.tolist()) == set(split.train.tolist())


def test_choose_takes_the_best_mean_validation_r2_per_family():
    scores = pd.DataFrame({"family": ["A"] * 3 + ["B"] * 3, "lr": [1e-4, 5e-4, 1e-3] * 2,
                           "val_r2": [0.5, 0.7, 0.6, 0.2, 0.1, 0.3], "scale": "full"})
    other = scores.assign(scale="paper", val_r2=[9, 0, 0, 9, 0, 0])
    assert hparams.choose(pd.concat([scores, other]), "full") == {"A": 5e-4, "B": 1e-3}


def test_candidate_scores_read_the_selection_rows():
    rows = pd.DataFrame({"model": ["UrbanCLIP", "UrbanCLIP", "UrbanCLIP"], "task": ["lr=0.0002", "lr=0.0005", "lr=0.0005"],
                         "metric": ["val_r2", "val_r2", "steps"], "value": [0.4, 0.6, 300.0], "scale": "full"})
    out = hparams.candidate_scores(rows)
    assert out["lr"].tolist() == [2e-4, 5e-4] and out["val_r2"].tolist() == [0.4, 0.6]


def test_chosen_lr_defaults_below_full_and_refuses_without_a_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("URBANLIB_RESULTS", str(tmp_path))
    assert hparams.chosen_lr("UrbanLN", get_scale("default")) == hparams.DEFAULT_LR["UrbanLN"]
    with pytest.raises(LookupError, match="selection"):
        hparams.chosen_lr("UrbanCLIP", get_scale("full"))
    scores = pd.DataFrame({"family": ["UrbanCLIP"] * 3, "lr": [2e-4, 5e-4, 1e-3], "val_r2": [0.1, 0.2, 0.3],
                           "scale": "full"})
    assert hparams.write_selected(scores, "full") == {"UrbanCLIP": 1e-3}
    assert json.loads((tmp_path / "selected_lr.json").read_text()) == {"full": {"UrbanCLIP": 1e-3}}
    assert hparams.chosen_lr("UrbanCLIP", get_scale("full")) == 1e-3
    with pytest.raises(KeyError, match="family"):
        hparams.chosen_lr("Nope", get_scale("full"))


def test_training_experiments_wait_for_the_selection(tmp_path, monkeypatch):
    from urbanlib.results import registry, runner

    ran = []
    exp = registry.Experiment("needs", run=lambda c, s, sc: ran.append(s) or [], needs_selection=True,
                              plan=lambda scale: [("u0", {"k": 1}, 0)])
    monkeypatch.setattr(runner, "load_all", lambda: {"needs": exp})
    monkeypatch.setenv("URBANLIB_RESULTS", str(tmp_path))
    logs = []
    assert runner.run_all("full", results_dir=tmp_path, log=logs.append) == 0 and ran == []
    assert "waits for the learning-rate selection" in logs[0]


def test_candidates_with_an_explicit_lr_need_no_choice(tmp_path, monkeypatch):
    from urbanlib.baselines.simclr import SimCLRConfig
    from urbanlib.pipeline.urbanclip import train_config

    monkeypatch.setenv("URBANLIB_RESULTS", str(tmp_path))  # no selected_lr.json here
    full = get_scale("full")
    assert train_config(full, 0, lr=1e-3).lr == 1e-3
    assert SimCLRConfig.for_scale(full, lr=2e-4).lr == 2e-4
    with pytest.raises(LookupError):
        train_config(full, 0)


def test_get_scale_is_the_one_place_a_scale_is_resolved():
    full = get_scale("full")
    assert get_scale(full) is full and get_scale(None) is get_scale("default")
    assert get_scale(full, grid=8).grid == 8 and full.grid == 32  # overrides never touch the preset
    with pytest.raises(KeyError, match="unknown scale 'huge'"):
        get_scale("huge")
