"""Baselines, first half: PCA, autoencoder, ResNet-18 variants, Tile2Vec, READ.

Each trained baseline is checked against its own random-init copy on what its objective targets
(reconstruction, spatial distance ratio, pseudo-label classes, land-use classes), on the smoke city.
"""

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from urbanlib.baselines import BASELINES, NotAvailable, resnet
from urbanlib.baselines import autoencoder as ae
from urbanlib.baselines import pca as pca_mod
from urbanlib.baselines import read as read_mod
from urbanlib.baselines import tile2vec as t2v
from urbanlib.baselines._common import embed_all
from urbanlib.baselines.base import BaselineInputs
from urbanlib.data.splits import random_split
from urbanlib.data.synthcity import load_city
from urbanlib.pipeline.tensors import load_tensors
from urbanlib.scales import get_scale


@pytest.fixture(scope="module")
def smoke():
    ds = load_city("synth-ring", scale="smoke", progress=False)
    tensors = load_tensors(ds, 32, progress=False)
    split = random_split(ds, seed=0)
    train_idx = np.concatenate([split.train, split.val])
    inputs = BaselineInputs(ds, tensors, train_idx, seed=0, scale=get_scale("smoke"), progress=False)
    return inputs, split.test


def with_missing_tile(inputs, pos):
    mask = inputs.tensors.satellite_mask.copy()
    mask[pos] = False
    sat = inputs.tensors.satellite.copy()
    sat[pos] = 0
    return dataclasses.replace(inputs, tensors=dataclasses.replace(inputs.tensors, satellite=sat, satellite_mask=mask))


def test_registry_names_functions_of_this_half():
    for name in ["PCA", "Autoencoder", "ResNet-18 (random)", "ResNet-18 (land-use stand-in)", "ResNet-18 (ImageNet)",
                 "Tile2Vec", "READ"]:
        module, func = BASELINES[name].split(":")
        mod = {"pca": pca_mod, "autoencoder": ae, "resnet": resnet, "tile2vec": t2v, "read": read_mod}[module]
        assert callable(getattr(mod, func))


# ---- PCA --------------------------------------------------------------------------------------
def test_pca_fits_train_only_and_beats_random_projection(smoke):
    inputs, test = smoke
    out = pca_mod.fit(inputs)
    assert out.features.shape == (64, 10) and np.isfinite(out.features).all()
    # test tiles do not influence the projection
    scrambled = inputs.tensors.satellite.copy()
    scrambled[test] = np.random.default_rng(0).integers(0, 255, scrambled[test].shape, dtype=np.uint8)
    other = dataclasses.replace(inputs, tensors=dataclasses.replace(inputs.tensors, satellite=scrambled))
    np.testing.assert_allclose(pca_mod.fit(other).features[inputs.train_idx], out.features[inputs.train_idx],
                               rtol=1e-4, atol=1e-3)
    # its objective: held-out reconstruction beats a random orthonormal 10-d projection
    pca = pca_mod.fit_pca(inputs)
    x = pca_mod.flat_pixels(inputs.tensors.satellite[test])
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((x.shape[1], 10)))
    centred = x - pca.mean_
    random_mse = float(np.mean((centred @ q @ q.T - centred) ** 2))
    assert pca_mod.reconstruction_mse(pca, inputs.tensors.satellite[test]) < 0.95 * random_mse


def test_pca_nan_rows_for_missing_tiles(smoke):
    inputs, _ = smoke
    out = pca_mod.fit(with_missing_tile(inputs, [0, 5]))
    assert np.isnan(out.features[[0, 5]]).all() and np.isfinite(np.delete(out.features, [0, 5], axis=0)).all()


# ---- autoencoder ------------------------------------------------------------------------------
def test_autoencoder_reconstructs_held_out_tiles_better_than_pca10_and_random_init(smoke):
    inputs, test = smoke
    cfg = ae.AutoencoderConfig.for_scale("smoke")
    model, history = ae.train_autoencoder(inputs, cfg)
    held_out = inputs.tensors.satellite[test]
    trained = ae.reconstruction_mse(model, held_out)
    random_init = ae.reconstruction_mse(ae.build(cfg, 32, inputs.seed), held_out)
    pca10 = pca_mod.reconstruction_mse(pca_mod.fit_pca(inputs), held_out)
    assert trained < pca10 and trained < random_init, (trained, pca10, random_init)
    assert history[-1]["reconstruction_loss"] < history[0]["reconstruction_loss"]


def test_autoencoder_fit_returns_bottleneck_for_all_regions(smoke):
    inputs, _ = smoke
    cfg = dataclasses.replace(ae.AutoencoderConfig.for_scale("smoke"), epochs=1)
    out = ae.fit(with_missing_tile(inputs, [3]), cfg)
    assert out.name == "Autoencoder" and out.features.shape == (64, cfg.bottleneck)
    assert np.isnan(out.features[3]).all() and np.isfinite(np.delete(out.features, 3, axis=0)).all()
    assert len(out.history) == 51 // cfg.batch_size and out.n_params > 0  # one epoch over 51 train tiles


ONE_EPOCH = {ae: lambda: dataclasses.replace(ae.AutoencoderConfig.for_scale("smoke"), epochs=1),
             t2v: lambda: dataclasses.replace(t2v.Tile2VecConfig.for_scale("smoke"), epochs=1),
             read_mod: lambda: read_mod.READConfig.for_scale("smoke", teacher_epochs=1, student_epochs=1)}


@pytest.mark.parametrize("mod", [ae, t2v, read_mod], ids=["autoencoder", "tile2vec", "read"])
def test_conv_twin_is_the_trained_runs_starting_point(smoke, mod):
    """The random-init twin embeds with the very weights fit() starts from: the CKA fit() measures
    between its init and trained features is the CKA between the twin's and the trained features."""
    from urbanlib.eval.metrics import linear_cka

    inputs, _ = smoke
    cfg = ONE_EPOCH[mod]()
    trained, twin = mod.fit(inputs, cfg), mod.fit_init(inputs, cfg)
    assert twin.name == f"{trained.name} (random init)" and BASELINES[twin.name] == f"{mod.__name__.split('.')[-1]}:fit_init"
    assert twin.n_trainable == 0 and twin.history == [] and twin.n_params == trained.n_params
    assert twin.features.shape == trained.features.shape and not np.allclose(twin.features, trained.features)
    assert linear_cka(twin.features, trained.features) == pytest.approx(trained.info["cka_to_init"], abs=1e-6)
    other_seed = mod.fit_init(dataclasses.replace(inputs, seed=1), cfg)
    assert linear_cka(other_seed.features, trained.features) != pytest.approx(trained.info["cka_to_init"], abs=1e-3)


# ---- Tile2Vec ---------------------------------------------------------------------------------
def test_neighbours_on_grid_and_lonlat_fallback(smoke):
    inputs, _ = smoke
    regions = inputs.ds.regions
    everyone = np.arange(len(regions))
    anchor = int(np.flatnonzero((regions["row"] == 3) & (regions["col"] == 4))[0])
    (grid,) = t2v.neighbour_sets(regions, np.array([anchor]), everyone)
    rc = regions.iloc[grid][["row", "col"]].to_numpy()
    assert len(grid) == 8 and (np.abs(rc - [3, 4]).max(axis=1) == 1).all()
    no_grid = regions.drop(columns=["row", "col"])
    (lonlat,) = t2v.neighbour_sets(no_grid, np.array([anchor]), everyone, k_nearest=4)
    rc = regions.iloc[lonlat][["row", "col"]].to_numpy()
    assert sorted(map(tuple, rc)) == [(2, 4), (3, 3), (3, 5), (4, 4)]  # the 4 edge-adjacent cells


def test_tile2vec_brings_held_out_neighbours_closer_than_random_init(smoke):
    inputs, test = smoke
    cfg = t2v.Tile2VecConfig.for_scale("smoke")
    model, history = t2v.train_tile2vec(inputs, cfg)
    regions = inputs.ds.regions
    trained = t2v.distance_ratio(embed_all(model.embed, inputs), regions, test)
    random_init = t2v.distance_ratio(embed_all(t2v.build(cfg, inputs.seed).eval().embed, inputs), regions, test)
    assert trained < random_init - 0.03, (trained, random_init)
    assert {"triplet_loss", "norm_penalty"} <= set(history[0])


def test_tile2vec_is_deterministic_by_seed(smoke):
    inputs, _ = smoke
    cfg = dataclasses.replace(t2v.Tile2VecConfig.for_scale("smoke"), epochs=1)
    a, b = t2v.fit(inputs, cfg), t2v.fit(inputs, cfg)
    c = t2v.fit(dataclasses.replace(inputs, seed=1), cfg)
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.allclose(a.features, c.features)


# ---- READ -------------------------------------------------------------------------------------
def test_read_labels_come_from_a_small_train_subset(smoke):
    inputs, test = smoke
    cfg = read_mod.READConfig.for_scale("smoke")
    col, labelled, classes, unlabelled = read_mod.split_labelled(inputs, cfg)
    assert col == "night_light" and set(classes) == {0, 1, 2}
    assert set(labelled) | set(unlabelled) == set(inputs.train_idx) and not set(labelled) & set(unlabelled)
    assert len(labelled) == round(cfg.label_fraction * len(inputs.train_idx))
    # test-region labels are never read: hiding them changes nothing
    regions = inputs.ds.regions.copy()
    regions.loc[regions.index[test], "night_light"] = np.nan
    hidden = dataclasses.replace(inputs, ds=dataclasses.replace(inputs.ds, regions=regions))
    _, labelled2, classes2, _ = read_mod.split_labelled(hidden, cfg)
    np.testing.assert_array_equal(labelled, labelled2)
    np.testing.assert_array_equal(classes, classes2)


def test_read_student_predicts_held_out_classes_better_than_random_init(smoke):
    inputs, _ = smoke
    cfg = read_mod.READConfig.for_scale("smoke")
    teacher, student, info = read_mod.train_read(inputs, cfg)
    y = inputs.ds.regions[info["label_indicator"]].to_numpy(float)
    held_out = np.setdiff1d(np.arange(len(y)), info["labelled_positions"])  # unlabelled train + test regions
    classes = read_mod.to_classes(y[held_out], np.array(info["class_edges_log1p"]))
    sat = inputs.tensors.satellite[held_out]
    trained = read_mod.accuracy(student, sat, classes)
    random_init = read_mod.accuracy(read_mod.build(cfg, inputs.seed + 1), sat, classes)
    assert trained > max(random_init, 1 / cfg.n_classes) + 0.1, (trained, random_init)
    assert info["n_pseudo_labelled"] > 0 and len(info["student_history"]) > 0


# ---- ResNet-18 --------------------------------------------------------------------------------
def test_resnet_random_features_are_seeded_and_nan_for_missing(smoke):
    inputs, _ = smoke
    a = resnet.fit_random(with_missing_tile(inputs, [7]))
    b = resnet.fit_random(with_missing_tile(inputs, [7]))
    assert a.features.shape == (64, 512) and np.isnan(a.features[7]).all()
    np.testing.assert_array_equal(a.features, b.features)
    assert a.n_trainable == 0 and "random" in a.info["weights"]


def test_resnet_imagenet_needs_a_local_file_and_loads_it(smoke, tmp_path, monkeypatch):
    inputs, _ = smoke
    monkeypatch.delenv(resnet.WEIGHTS_ENV, raising=False)
    na = resnet.fit_imagenet(inputs)
    assert isinstance(na, NotAvailable) and resnet.WEIGHTS_ENV in na.reason
    ref = resnet.create(1000, seed=123).eval()  # stands in for ImageNet weights (same class, same keys)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    monkeypatch.setenv(resnet.WEIGHTS_ENV, str(path))
    out = resnet.fit_imagenet(inputs)
    expected = ref.forward_head(ref.forward_features(resnet.imagenet_input(32)(torch.from_numpy(
        inputs.tensors.satellite[:4]))), pre_logits=True).detach().numpy()
    np.testing.assert_allclose(out.features[:4], expected, rtol=1e-4, atol=1e-4)
    monkeypatch.setenv(resnet.WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        resnet.fit_imagenet(inputs)


def test_landuse_source_is_never_the_target(smoke):
    inputs, _ = smoke
    cfg = resnet.ResNetConfig()
    assert resnet.source_profile(inputs, cfg) == "synth-canals"  # after synth-ring, wrapping around
    with pytest.raises(ValueError, match="target"):
        resnet.source_profile(inputs, dataclasses.replace(cfg, source_profile="synth-ring"))
    regions = inputs.ds.regions.assign(city="Beijing")
    real = dataclasses.replace(inputs, ds=dataclasses.replace(inputs.ds, regions=regions, meta={}))
    assert resnet.source_profile(real, cfg) == resnet.REAL_DATA_SOURCE


def test_landuse_stand_in_learns_source_zones_better_than_random_init(smoke):
    inputs, _ = smoke
    cfg = resnet.ResNetConfig.for_scale("smoke")
    model, info = resnet.train_landuse(inputs, cfg)
    assert info["source_profile"] == "synth-canals"
    (tiles, y), seen, hold = info["source"], info["fit_positions"], info["holdout_positions"]
    assert len(seen) == info["source_train_regions"] and not set(seen) & set(hold)
    random_init = resnet.create(len(info["zones"]), inputs.seed)

    def score(net, pos):
        return resnet.landuse_scores(net, tiles.satellite[pos], y[pos], cfg.input_px)

    # its objective (zone cross-entropy) on the tiles it trained on, and held-out accuracy
    assert score(model.net, seen)["cross_entropy"] < score(random_init, seen)["cross_entropy"]
    assert score(model.net, hold)["accuracy"] >= score(random_init, hold)["accuracy"]


def test_read_classifier_takes_soft_pseudo_labels_and_one_hot_equals_hard():
    cfg = read_mod.READConfig.for_scale("smoke")
    model = read_mod.build(cfg, 0).eval()
    x = torch.randn(6, 3, 32, 32)
    hard = torch.tensor([0, 1, 2, 2, 1, 0])
    a = model({"image": x, "label": hard})
    b = model({"image": x, "label": torch.eye(3)[hard]})
    assert torch.allclose(a["loss"], b["loss"]) and a["batch_accuracy"] == b["batch_accuracy"]
    soft = model({"image": x, "label": torch.full((6, 3), 1 / 3)})["loss"]
    assert torch.allclose(soft, -model.logits(x).log_softmax(-1).mean())  # a uniform target: mean log-probability


def test_supervised_baselines_are_named_so_wherever_a_table_shows_them():
    from urbanlib.experiments.benchmark import SUPERVISED, shown_name

    assert shown_name("READ") == "READ (supervised)" and shown_name("READ (random init)") == "READ (random init)"
    assert shown_name("UrbanCLIP") == "UrbanCLIP" and set(SUPERVISED) <= set(BASELINES)
