"""The glue the notebooks stand on: tensors, pairs, cached runs, features, retrieval."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from urbanlib.eval.retrieval import recall_at_k
from urbanlib.pipeline.city import open_city
from urbanlib.pipeline.features import run_features
from urbanlib.pipeline.pairs import AugmentedPairs
from urbanlib.pipeline.tensors import load_tensors
from urbanlib.pipeline.texts import region_texts, street_texts


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    old = os.environ.get("URBANLIB_CACHE")
    os.environ["URBANLIB_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("URBANLIB_CACHE")
    else:
        os.environ["URBANLIB_CACHE"] = old


@pytest.fixture(scope="module")
def city(cache):
    return open_city("synth-ring", "smoke", seed=0, progress=False)


def test_tensors_follow_region_order_and_cache(city):
    t = city.tensors
    assert t.satellite.shape == (64, 3, 32, 32) and t.satellite.dtype == np.uint8
    assert list(t.region_ids) == list(city.ds.region_ids)
    # the slot count of each region equals its street views (capped at max_views)
    counts = city.ds.images[city.ds.images["kind"] == "street"].groupby("region_id").size()
    for i, rid in enumerate(t.region_ids):
        assert t.street_mask[i].sum() == min(int(counts.get(rid, 0)), t.street_mask.shape[1])
    again = load_tensors(city.ds, 32, 32, 2, progress=False)
    assert again.key == t.key and np.array_equal(again.satellite, t.satellite)
    # normalisation is CLIP's: a mid-grey pixel maps to (0.5 - mean) / std
    x = t.satellite_tensor([0])
    ref = (t.satellite[0].astype(np.float32) / 255 - 0.48145466) / 0.26862954
    assert torch.allclose(x[0, 0], torch.from_numpy(ref[0]), atol=1e-5)


def test_changed_image_changes_the_key(city, tmp_path):
    import shutil

    from urbanlib.data import load

    root = tmp_path / "copy"
    shutil.copytree(city.ds.root, root)
    ds = load(root)
    k1 = load_tensors(ds, 32, 32, 2, progress=False).key
    img = root / ds.images["path"].iloc[0]
    img.write_bytes(img.read_bytes())  # same bytes, new mtime
    os.utime(img, (1, 1))
    assert load_tensors(ds, 32, 32, 2, progress=False).key != k1


def test_street_texts_align_with_slots(city):
    texts = street_texts(city.ds, 2, "long")
    st = city.ds.images[city.ds.images["kind"] == "street"]
    cap = city.ds.captions[city.ds.captions["style"] == "long"]
    for i, rid in enumerate(city.ds.region_ids[:20]):
        paths = list(st.loc[st["region_id"] == rid, "path"])[:2]
        assert len(texts[i]) == len(paths)
        for j, p in enumerate(paths):
            assert sorted(texts[i][j]) == sorted(cap.loc[cap["image"] == p, "text"])
    sat = region_texts(city.ds, "short")
    assert all(len(x) == 4 for x in sat)  # four simulated captioners


def test_pairs_are_pure_functions_of_seed_epoch_index(city):
    texts = region_texts(city.ds, "short")
    tok = lambda ts: torch.tensor([[len(t), hash(t) % 1000] for t in ts])  # noqa: E731
    a = AugmentedPairs(city.tensors.satellite, texts, np.arange(64), tok, seed=3)
    b = AugmentedPairs(city.tensors.satellite, texts, np.arange(64), tok, seed=3)
    for ep in (0, 2):
        a.set_epoch(ep)
        b.set_epoch(ep)
        for i in (0, 5, 63):
            assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["text"], b[i]["text"])
    a.set_epoch(0)
    t0 = a.tokens.clone()
    views0 = torch.stack([a[i]["image"] for i in range(64)])
    a.set_epoch(1)
    assert not torch.equal(t0, a.tokens)  # a new caption draw
    assert not torch.equal(views0, torch.stack([a[i]["image"] for i in range(64)]))  # new augmentation


def test_urbanclip_run_is_cached_and_trains_on_the_protocol_tiles(city):
    from urbanlib.pipeline.runs import validation_curve
    from urbanlib.pipeline.urbanclip import pretrain_urbanclip, retrieval

    run = pretrain_urbanclip(city, progress=False)
    assert not run.cached and len(run.history) == run.info["steps"]
    key = json.loads((run.run_dir / "done.json").read_text())["key"]
    # "all-tiles": every tile but the held-out validation tiles, test tiles included (label-free)
    assert set(key["regions"]) == set(city.pretrain_idx.tolist())
    assert set(key["regions"]).isdisjoint(key["val_regions"]) and key["val_regions"] == city.pretrain_val_idx.tolist()
    assert set(city.split.test.tolist()) & set(key["regions"])
    curve = validation_curve(run)
    assert curve["step"].iloc[0] == 0 and len(curve) >= 2 and run.info["stopped_by"] in ("cap", "patience")
    assert run.info["best_val_loss"] == curve["val_loss"].min()
    f1 = run_features(run, city.tensors)
    again = pretrain_urbanclip(city, progress=False)
    assert again.cached and again.run_dir == run.run_dir
    assert np.array_equal(run_features(again, city.tensors), f1)
    other = pretrain_urbanclip(city, progress=False, lambda_lm=0.0)
    assert other.run_dir != run.run_dir  # an ablation is a different run
    r = retrieval(run.model, city.tensors, region_texts(city.ds), city.split.test)
    assert r["n_images"] == len(city.split.test) and 0 <= r["i2t_R@1"] <= r["i2t_R@5"] <= r["i2t_R@10"] <= 100


def test_protocols_choose_the_pretraining_tiles(city):
    from dataclasses import replace

    blocked = open_city("synth-ring", "smoke", seed=0, split="blocked", progress=False)
    # "all-tiles": one pretraining set per seed, whatever the split
    assert np.array_equal(city.pretrain_idx, blocked.pretrain_idx)
    assert np.array_equal(city.pretrain_val_idx, blocked.pretrain_val_idx)
    n = len(city.ds.regions)
    assert len(city.pretrain_val_idx) == round(0.15 * n)
    assert np.array_equal(np.union1d(city.pretrain_idx, city.pretrain_val_idx), np.arange(n))
    strict = replace(city, protocol="train-only")
    assert set(strict.pretrain_idx.tolist()).isdisjoint(city.split.test.tolist())
    assert np.array_equal(strict.pretrain_val_idx, city.split.val)
    assert np.array_equal(city.label_idx, city.split.train)  # supervised baselines: probe train labels only
    with pytest.raises(ValueError, match="protocol"):
        replace(city, protocol="everything")


def test_urbanln_street_run_reports_truncation_and_queue(city):
    from urbanlib.data.synthcity import PROFILES
    from urbanlib.pipeline.urbanln import pretrain_urbanln

    run = pretrain_urbanln(city, imagery="street", progress=False)
    assert run.info["context_length"] == 248
    assert run.info["captions_truncated"] >= 1 and run.info["max_caption_tokens"] > 248
    assert run.info["pairs"] == len(np.unique(city.pretrain_idx))  # one street view per region per epoch
    assert run.info["view_pairs"] > run.info["pairs"]
    assert run.info["queue_size"] <= run.info["pairs"] // 2 < run.info["queue_size_requested"]
    assert run.info["stage0"]["profiles"] == list(PROFILES)  # all-tiles: one stage 0 for every city
    assert 0.5 < run.info["momentum"] < 0.995  # scaled to the run: a half-life of one epoch
    f = run_features(run, city.tensors, imagery="street")
    assert city.tensors.has_street.all()  # SynthCity 1.2: every region has street views
    assert not np.isnan(f).any()


# Run folders of stage 0 (code hash pinned), computed at 3dbbddf with its positional
# pretrain_stage0(target_city, scale, seed, progress, protocol=...): a stage 0 keeps its folder, and so
# its cached and archived run (results/runs/stage0-*), whichever signature asks for it
STAGE0_FOLDERS = {"shared": "stage0-all-709740f1041979e6", "shared, seed 1, lr 1e-3": "stage0-all-a2d5496e4a99f4e3",
                  "train-only": "stage0-synth-ring-d02d73339e803f4d"}


def test_stage0_run_keys_are_unchanged(city, monkeypatch):
    from dataclasses import replace

    from urbanlib.pipeline import runs
    from urbanlib.pipeline.urbanln import pretrain_stage0, pretrain_urbanln

    class Keyed(Exception):
        pass

    def stop(name, run_dir, *args, **kwargs):
        raise Keyed(run_dir.name)

    monkeypatch.setattr(runs, "code_hash", lambda dirs=None: "pinned")
    monkeypatch.setattr(runs, "_train_or_load", stop)  # the folder is named; nothing trains

    def folder(call) -> str:
        with pytest.raises(Keyed) as e:
            call()
        return str(e.value)

    strict = replace(city, protocol="train-only")
    assert folder(lambda: pretrain_stage0(scale="smoke", seed=0, progress=False)) == STAGE0_FOLDERS["shared"]
    assert folder(lambda: pretrain_stage0(city, progress=False)) == STAGE0_FOLDERS["shared"]  # an all-tiles city's
    assert (folder(lambda: pretrain_stage0(scale="smoke", seed=1, progress=False, lr=1e-3))
            == STAGE0_FOLDERS["shared, seed 1, lr 1e-3"])
    assert folder(lambda: pretrain_stage0(strict, progress=False)) == STAGE0_FOLDERS["train-only"]
    assert folder(lambda: pretrain_urbanln(strict, progress=False)) == STAGE0_FOLDERS["train-only"]  # UrbanLN's own
    with pytest.raises(TypeError, match="the city's"):
        pretrain_stage0(city, scale="smoke")
    with pytest.raises(TypeError, match="needs scale"):
        pretrain_stage0(seed=0)


def test_recall_at_k_hand_case():
    img = torch.eye(3)
    txt = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1], [0.9, 0.1, 0]])
    txt = torch.nn.functional.normalize(txt, dim=-1)
    owner = np.array([0, 1, 2, 0])  # image 0 owns texts 0 and 3
    r = recall_at_k(img, txt, owner, ks=(1, 2))
    # image 0: text 1 (owner 1) 1.0, then own text 3 (0.99): miss at 1, hit at 2
    # image 1: text 0 (owner 0) 1.0, text 3 0.11, own text 1 0.0 -> rank 3: miss at 1 and 2
    # image 2: own text 2 first: hit at 1
    assert r["i2t_R@1"] == pytest.approx(100 / 3, rel=1e-5) and r["i2t_R@2"] == pytest.approx(200 / 3, rel=1e-5)
    # text 0 -> image 1 (owner 0): miss@1; text 1 -> image 0 (owner 1): miss; text 2 hit; text 3 -> image 0 hit
    assert r["t2i_R@1"] == pytest.approx(50.0, rel=1e-5)


def test_validation_plot_and_sentence_say_why_a_run_stopped():
    import pandas as pd
    from matplotlib.figure import Figure

    from urbanlib.pipeline.plots import describe_stopping, plot_validation

    curve = pd.DataFrame({"step": [0, 10, 20, 30, 40], "epoch": [0, 0.5, 1, 1.5, 2],
                          "val_loss": [5.0, 3.0, 2.5, 2.6, 2.7], "best_val_loss": [5.0, 3.0, 2.5, 2.5, 2.5],
                          "lr_scale": [1, 1, 1, 1, 0.5]})
    info = {"best_step": 20, "steps": 40, "step_cap": 100, "stopped_by": "patience", "epochs_run": 2.0,
            "best_val_loss": 2.5}
    fig = plot_validation(curve, info)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) >= 4  # curve, best so far, best step, one lr cut
    text = describe_stopping(info)
    assert "40 of at most 100 steps" in text and "patience" in text and "step 20" in text
    assert "cap" in describe_stopping({**info, "stopped_by": "cap"})
    assert "no validation loss" in describe_stopping({})


def test_teacher_student_curve_probes_both_towers_at_each_snapshot(city):
    from urbanlib.pipeline.urbanln import pretrain_urbanln, teacher_student_curve

    run = pretrain_urbanln(city, progress=False)
    curve = teacher_student_curve(run, city.tensors, city.split, city.ds.log_targets(), city.ds.indicators, "smoke")
    snaps = sorted((run.run_dir / "snapshots").glob("step-*.safetensors"))
    assert len(snaps) >= 2 and len(curve) == 2 * min(len(snaps), 6)
    first = curve[curve["step"] == 0].set_index("model")["R2"]
    assert first["student"] == pytest.approx(first["teacher"])  # at step 0 the teacher is the student's copy
    assert np.isfinite(curve["R2"]).all()
