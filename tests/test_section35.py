"""UrbanCLIP §3.5's two options: modality infusion and prompt-guided prediction (tiny models, temp caches)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from urbanlib.data.splits import Split
from urbanlib.eval.probe import ProbeConfig
from urbanlib.experiments import infusion, prompted
from urbanlib.models import Vocab, get_config
from urbanlib.models.text import tokenize
from urbanlib.models.urbanclip import UrbanCLIP

CAPTIONS = ["a park with trees and a footpath", "houses along a street", "a major road crosses the tile",
            "the carbon emission is high near the factory", "a river with farmland"]


def _tiny(vocab_texts=CAPTIONS):
    cfg = get_config("urbanclip-tiny")
    vocab = Vocab.from_tokenized(tokenize(vocab_texts, cfg.context_length))
    return cfg, vocab


def _batch(cfg, n=4, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = cfg.vision.image_size
    return {"image": torch.randn(n, 3, size, size, generator=g),
            "text": tokenize(CAPTIONS[:n], cfg.context_length),
            "modality": torch.randn(n, m, generator=g)}


def _grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out["loss"].backward()
    return out, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


# ---- modality infusion -------------------------------------------------------------------------

def test_third_modality_is_off_by_default_and_changes_the_gradient_when_on():
    cfg, vocab = _tiny()
    batch = _batch(cfg)
    torch.manual_seed(0)
    plain = UrbanCLIP(cfg, vocab)
    torch.manual_seed(0)
    infused = infusion.InfusedUrbanCLIP(cfg, vocab, modality_dim=5)
    assert infused.lambda_modality == 0.0  # off by default
    shared = plain.state_dict()
    assert all(torch.equal(shared[k], v) for k, v in infused.state_dict().items() if k in shared)  # same UrbanCLIP init

    out_p, g_p = _grads(plain, {k: v for k, v in batch.items() if k != "modality"})
    out_0, g_0 = _grads(infused, batch)
    assert float(out_0["modality_loss"].detach()) > 0  # computed and logged ...
    assert torch.allclose(out_0["loss"], out_p["loss"])  # ... with zero weight
    assert all(torch.allclose(g_0[k], g, atol=1e-6) for k, g in g_p.items())
    assert all(float(g_0[k].abs().sum()) == 0 for k in g_0 if k.startswith("modality"))

    infused.lambda_modality = 1.0
    out_1, g_1 = _grads(infused, batch)
    assert torch.allclose(out_1["loss"], out_p["loss"] + out_1["modality_loss"])
    assert not torch.allclose(g_1["visual.conv1.weight"], g_p["visual.conv1.weight"], atol=1e-6)  # reaches the image encoder
    assert float(g_1["modality_encoder.0.weight"].abs().sum()) > 0


def test_modality_pairs_give_each_pair_its_regions_vector():
    from urbanlib.pipeline.pairs import AugmentedPairs

    images = np.zeros((3, 3, 8, 8), np.uint8)
    pairs = AugmentedPairs(images, [["a"], ["b"], ["c"]], np.array([5, 2, 7]), lambda t: tokenize(t, 8), augment=False)
    modality = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    data = infusion.ModalityPairs(pairs, modality)
    assert len(data) == 3
    assert data[1]["modality"].tolist() == modality[2].tolist() and data[2]["modality"].tolist() == modality[7].tolist()


def _sensor_tile(draw_fn, sensor, px=64, seed=0):
    from PIL import Image, ImageDraw

    from urbanlib.data.synthcity.render_satellite import GROUND, _sensor

    img = Image.new("RGB", (px, px), GROUND["park"])
    draw_fn(ImageDraw.Draw(img))
    arr = _sensor(np.asarray(img).astype(np.float32), sensor, np.random.default_rng(seed))
    return arr.transpose(2, 0, 1)[None]  # (1, 3, H, W)


@pytest.mark.parametrize("profile", ["synth-ring", "synth-canals"])
def test_road_density_responds_to_roads_the_test_draws(profile):
    from urbanlib.data.synthcity.config import load_profile

    sensor = load_profile(profile)["sensor"]
    none = infusion.road_shares(_sensor_tile(lambda d: None, sensor), sensor)[0]
    major = infusion.road_shares(_sensor_tile(lambda d: d.rectangle((0, 20, 63, 24), fill=(70, 70, 72)), sensor),
                                 sensor)[0]
    streets = infusion.road_shares(_sensor_tile(lambda d: [d.rectangle((0, p, 63, p + 1), fill=(95, 95, 95))
                                                         for p in (16, 32, 48)], sensor), sensor)[0]
    assert none.sum() < 0.01
    assert abs(major[2] - 5 / 64) < 0.015 and major[:2].sum() < 0.01  # a 5-px major road: 7.8% of the tile
    # local streets: a hazy, noisy sensor (synth-canals) blurs street and arterial grey, not road and no road
    assert abs(streets[:2].sum() - 6 / 64) < 0.015 and streets[2] < 0.01 and streets[0] > streets[1]


def test_road_density_reads_the_renderers_roads():
    """render_tile's own roads are found where its scene says it drew them (guards ROAD_COLOURS against drift)."""
    from urbanlib.data.synthcity.config import ZONES, load_profile
    from urbanlib.data.synthcity.render_satellite import render_tile

    def layout(road_level, road_h, road_v):
        frac = np.zeros((1, 1, len(ZONES)))
        frac[0, 0, ZONES.index("park")] = 1.0
        return SimpleNamespace(fractions=frac, water_mask=np.zeros((4, 4), bool), n=1,
                               road_level=np.array([[road_level]]), road_h=np.array([[road_h]]),
                               road_v=np.array([[road_v]]), floors=np.ones((1, 1, len(ZONES))),
                               urban=np.array([[0.5]]))

    profile = load_profile("synth-ring")
    tiles, scenes = [], []
    for lay in (layout(0, 0, 0), layout(1, 0, 0), layout(3, 3, 2)):
        img, objs = render_tile(lay, 0, 0, 64, profile, np.random.default_rng(0))
        tiles.append(np.asarray(img).transpose(2, 0, 1))
        scenes.append(objs)
    shares = infusion.road_shares(np.stack(tiles), profile["sensor"])
    assert shares[0].sum() < 0.01  # a park without roads
    assert shares[1, 0] > 0.1 and shares[1, 1:].sum() < 0.01  # local streets only
    major = next(o["bbox"] for o in scenes[2] if o["cls"] == "major_road")
    drawn = (major[2] - major[0]) * (major[3] - major[1]) / 64 ** 2
    assert 0.6 * drawn < shares[2, 2] <= drawn + 0.01  # cars and lane marks cover some of it
    assert shares[2, 1] > 0.02  # the arterial road


# ---- prompt-guided prediction ------------------------------------------------------------------

def test_prompt_reader_reads_the_prompts_next_token_state():
    cfg, vocab = _tiny()
    torch.manual_seed(0)
    model = UrbanCLIP(cfg, vocab).eval()
    images = _batch(cfg, n=3)["image"]
    prompts = ["The carbon emission is", "a park", ""]
    state = torch.from_numpy(prompted.prompt_features(model, images, prompts))  # (N, P, width)
    assert state.shape == (3, 3, cfg.text.width)
    reader = prompted.PromptReader(model)
    with torch.no_grad():
        ctx = model.multimodal_pooler(model.image_tokens(images))
        for j, p in enumerate(prompts):
            ids = prompted.prompt_ids(model, p)
            assert int(ids[0]) == 1  # the start token (compact id 1), then the words, no end token
            want = model.decode(ctx, ids[None].expand(3, -1))[:, -1]  # next-token logits after the prompt
            assert torch.allclose(reader.logits(state[:, j]), want, atol=1e-4)
    assert not torch.allclose(state[:, 0], state[:, 1])  # the prompt matters
    assert prompted.unknown_words(model, "The carbon emission is") == []
    assert "gdp" in prompted.unknown_words(model, "The GDP is")


def _toy_split(n=30):
    idx = np.random.default_rng(0).permutation(n)
    return Split(train=np.sort(idx[:18]), val=np.sort(idx[18:24]), test=np.sort(idx[24:]), name="random")


def _tiny_model_images_split(n: int = 30):
    """A seeded tiny UrbanCLIP, ``n`` random images and a toy split: the prompted probes' shared fixture."""
    cfg, vocab = _tiny()
    torch.manual_seed(0)
    model = UrbanCLIP(cfg, vocab).eval()
    images = torch.randn(n, 3, cfg.vision.image_size, cfg.vision.image_size, generator=torch.Generator().manual_seed(1))
    return model, images, _toy_split(n), n

def test_prompted_heads_are_trained_on_train_regions_only():
    model, images, split, n = _tiny_model_images_split()
    rng = np.random.default_rng(2)
    targets = rng.normal(size=(n, 2))
    noisy = targets.copy()
    noisy[split.test] = rng.normal(size=(len(split.test), 2)) * 50  # only the test targets change
    inds = ["carbon", "population"]
    probe = ProbeConfig(max_epochs=15, patience=5)
    tuning = prompted.PromptTuning(max_epochs=15)
    m1, p1, info = prompted.learned_prompt_probes(model, images, targets, split, [0, 1], inds, probe, tuning)
    m2, p2, _ = prompted.learned_prompt_probes(model, images, noisy, split, [0, 1], inds, probe, tuning)
    assert np.allclose(p1, p2)  # test targets never reach training or early stopping
    assert not m1["value"].equals(m2["value"])  # but they are what is scored
    assert p1.shape == (2, n, 2) and set(m1["indicator"]) == set(inds)
    assert (info["prompt_moved"] > 0).any()  # the prompt itself was learned
    feats = prompted.prompt_features(model, images, [prompted.prompt_for(i) for i in inds])
    f1, q1 = prompted.fixed_prompt_probes(feats, targets, split, [0, 1], inds, probe)
    f2, q2 = prompted.fixed_prompt_probes(feats, noisy, split, [0, 1], inds, probe)
    assert np.allclose(q1, q2) and not f1["value"].equals(f2["value"])


def test_learned_prompts_give_the_numbers_they_gave_before_the_probe_helpers_were_shared():
    # recorded at a37bdb7, before the prompted probe used eval.probe's head init, loss, early stopping and
    # metric rows (the same machine reproduced them exactly); rtol leaves room for another CPU's float32 kernels
    torch.set_num_threads(1)
    model, images, split, n = _tiny_model_images_split()
    targets = np.random.default_rng(2).normal(size=(n, 2))
    m, p, info = prompted.learned_prompt_probes(model, images, targets, split, [0, 1], ["carbon", "population"],
                                                ProbeConfig(max_epochs=8, patience=3), prompted.PromptTuning(max_epochs=8))
    np.testing.assert_allclose(m.query("metric == 'R2'").value, [
        -0.5850770310869138, -0.38114343184454547, -0.48125611398415713, -0.45625467239799233], rtol=1e-5)
    np.testing.assert_array_equal(info["best_epochs"], [[0, 1], [1, 3]])
    assert info["epochs_run"] == 6
    np.testing.assert_allclose(p[:, split.test[:3], :].ravel(), [
        0.356687265367133, -0.05182750447817161, 0.2148425590050868, -0.5441915060431849, 0.4830752532150405,
        -0.5755412240375439, 0.2730625942740468, 0.1582503191835441, 0.12271542237347961, -0.23342393161434752,
        -0.07782282828090875, -0.43756196728941865], rtol=1e-5)


# ---- the page's experiment ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_city(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("URBANLIB_CACHE", str(tmp_path_factory.mktemp("s35-cache")))
    mp.setenv("URBANLIB_NUM_THREADS", "1")
    from urbanlib.pipeline.city import open_city

    yield open_city("synth-ring", "smoke", 0, progress=False)
    mp.undo()


def test_rows_that_read_pois_are_marked_for_the_targets_they_feed(smoke_city):
    from urbanlib.experiments import section35 as s35

    res = s35.run_section35(smoke_city, rows=[s35.RAW], log=lambda *a: None)
    m = res.metrics
    marked = set(m.loc[m["sees_target_inputs"], "indicator"])
    assert marked == set(infusion.SEES_TARGET_INPUTS)
    assert not m.loc[~m["indicator"].isin(infusion.SEES_TARGET_INPUTS), "sees_target_inputs"].any()
    table = s35.r2_table(m)
    assert table.loc[s35.RAW, "poi_count"].endswith("†") and not table.loc[s35.RAW, "carbon"].endswith("†")
    assert m["n_test"].max() == len(res.split.test)


def test_infused_run_trains_through_the_trainer_and_its_key_follows_its_weight(smoke_city, monkeypatch):
    run = infusion.pretrain_infused(smoke_city, lambda_modality=1.0)
    assert {"contrastive_loss", "caption_loss", "modality_loss"} <= set(run.history.columns)
    assert run.info["val_pairs"] == len(smoke_city.pretrain_val_idx)  # the city's validation holdout
    off = infusion.pretrain_infused(smoke_city, lambda_modality=0.0)
    assert off.run_dir != run.run_dir
    assert not run.cached and infusion.pretrain_infused(smoke_city, lambda_modality=1.0).cached
    monkeypatch.setattr(infusion, "SOURCE_HASH", "edited")  # this module's code is part of the key
    assert infusion.pretrain_infused(smoke_city, lambda_modality=1.0).run_dir != run.run_dir
