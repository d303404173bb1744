"""Divide-and-conquer refinement: maximal rectangles, crop selection, the 0.01 phrase filter, tiny random-init
SAM and OWLv2 of the real transformers classes, and the SynthCity stand-ins."""

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from urbanlib.captions.divide_conquer import (
    PHRASE_THRESHOLD,
    DivideAndConquer,
    Owlv2PhraseScorer,
    SamSegmenter,
    box_iou,
    filter_phrases,
    maximal_rectangle,
    select_crops,
)
from urbanlib.captions.parser import RULE_LABEL, RuleParser
from urbanlib.captions.standins import (
    ScenePhraseScorer,
    SceneSegmenter,
    crop_scene,
    draw_scores,
    refine_synthcity_caption,
    separation,
    statement_rates,
)


def mask_from(rows):
    return np.array([[c == "#" for c in r] for r in rows])


# ------------------------------------------------------------------ maximal rectangle, exact on hand masks

HAND = [
    (["#####",
      "#####",
      "#####"], (0, 0, 5, 3)),
    (["#....",
      "#....",
      "#####",
      "#####"], (0, 2, 5, 4)),
    (["..##..",
      ".####.",
      "######",
      ".####."], (1, 1, 5, 4)),
    (["###.##",
      "###.##",
      "###.##",
      "######"], (0, 0, 3, 4)),
    (["......",
      "..#...",
      "......"], (2, 1, 3, 2)),
    (["##.##",
      "#####",
      "##.##",
      "#####",
      "##.##"], (0, 0, 2, 5)),
]


@pytest.mark.parametrize("case", range(len(HAND)))
def test_maximal_rectangle_hand_masks(case):
    rows, box = HAND[case]
    assert maximal_rectangle(mask_from(rows)) == box


def test_maximal_rectangle_empty_and_bad_input():
    assert maximal_rectangle(np.zeros((4, 5), bool)) is None
    with pytest.raises(ValueError, match="2-D"):
        maximal_rectangle(np.zeros((2, 3, 3), bool))


def _brute_force_area(m):
    h, w = m.shape
    best = 0
    for y0, y1 in itertools.combinations(range(h + 1), 2):
        for x0, x1 in itertools.combinations(range(w + 1), 2):
            if m[y0:y1, x0:x1].all():
                best = max(best, (y1 - y0) * (x1 - x0))
    return best


def test_maximal_rectangle_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(40):
        m = rng.random((6, 7)) < rng.uniform(0.4, 0.9)
        box = maximal_rectangle(m)
        area = 0 if box is None else (box[2] - box[0]) * (box[3] - box[1])
        assert area == _brute_force_area(m)
        if box is not None:
            assert m[box[1]:box[3], box[0]:box[2]].all()


def test_select_crops_overlap_cap_and_min_size():
    h = w = 40
    def rect(x0, y0, x1, y1):
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        return m
    masks = [rect(0, 0, 20, 20),   # 400 px, kept first
             rect(2, 2, 21, 21),   # IoU with the first ~0.81 -> dropped
             rect(20, 0, 40, 16),  # disjoint, kept
             rect(0, 30, 4, 40),   # 4 px wide < min_side -> dropped
             rect(10, 10, 30, 30)]  # IoU 100/700 = 0.14 with the first -> kept
    boxes = select_crops(masks, min_side=8, max_iou=0.3)
    assert boxes == [(0, 0, 20, 20), (10, 10, 30, 30), (20, 0, 40, 16)]
    assert all(box_iou(a, b) <= 0.3 for a, b in itertools.combinations(boxes, 2))
    assert select_crops(masks, min_side=8, max_iou=0.3, max_crops=1) == [(0, 0, 20, 20)]
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)


# ------------------------------------------------------------------ the 0.01 phrase filter

def test_filter_threshold_exact():
    kept, dropped = filter_phrases(["a", "b", "c", "d"], [0.0099, 0.01, 0.5, 0.0])
    assert PHRASE_THRESHOLD == 0.01
    assert kept == ["b", "c"] and dropped == ["a", "d"]
    with pytest.raises(ValueError):
        filter_phrases(["a"], [])


class FakeCaptioner:
    def __init__(self):
        self.calls = []

    def caption(self, images, prompt):
        from urbanlib.captions.prompts import local_prompt

        self.calls.append((len(images), prompt))
        if prompt == local_prompt():  # local captions of the crops
            return (["A red car next to a tree.", "A swimming pool."] * len(images))[:len(images)]
        return ["FUSED"]


class FakeSegmenter:
    def __call__(self, image):
        m1 = np.zeros((32, 32), bool)
        m1[0:16, 0:16] = True
        m2 = np.zeros((32, 32), bool)
        m2[16:32, 16:32] = True
        return [m1, m2]


class FakeScorer:  # the fake detector believes in everything except the swimming pool
    def __call__(self, image, phrases):
        return np.array([0.005 if "pool" in p else 0.2 for p in phrases])


def test_divide_and_conquer_with_fakes_drops_low_scores():
    cap = FakeCaptioner()
    img = Image.new("RGB", (32, 32))
    dc = DivideAndConquer(cap, FakeSegmenter(), RuleParser(), FakeScorer(), min_side=8)
    r = dc.refine(img, "There are three houses along the road.")
    assert r.boxes == [(0, 0, 16, 16), (16, 16, 32, 32)] and r.n_masks == 2
    assert r.caption == "FUSED" and r.parser == RULE_LABEL
    assert "swimming pool" in r.dropped and "swimming pool" not in r.kept
    assert {"red car", "tree", "house", "road"} <= set(r.kept)
    fuse = cap.calls[1][1]
    assert "A red car next to a tree." in fuse and "- A swimming pool." not in fuse  # the pool crop is not offered
    assert "There are three houses along the road." in fuse
    assert "(do not mention): swimming pool" in fuse


# ------------------------------------------------------------------ tiny random-init SAM and OWLv2

def tiny_sam():
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vc = SamVisionConfig(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                         patch_size=8, window_size=4, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64)
    pc = SamPromptEncoderConfig(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4)
    mc = SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2,
                              iou_head_hidden_dim=32)
    model = SamModel(SamConfig(vision_config=vc, prompt_encoder_config=pc, mask_decoder_config=mc))
    ip = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                           mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
    return model, SamProcessor(image_processor=ip)


def tiny_owlv2(tmp_path):
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {}
    for tok in chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(tok, len(vocab))
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")  # no merges: character-level BPE
    tok = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=16,
                        pad_token="<|endoftext|>")
    proc = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    tc = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
              max_position_embeddings=16)
    vc = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
              patch_size=8)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=tc, vision_config=vc, projection_dim=32))
    import torch

    with torch.no_grad():  # random init puts logits at +-90 (all scores 0 or 1); a unit scale keeps them readable
        model.class_head.logit_scale.weight.zero_()
        model.class_head.logit_scale.bias.zero_()
    return model, proc


def test_sam_segmenter_tiny_random_init():
    model, proc = tiny_sam()
    img = Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8))
    seg = SamSegmenter(model, proc, points_per_side=3, pred_iou_thresh=-1e9, stability_thresh=0.0, min_area=1,
                       nms_iou=1.0, points_per_batch=4)
    assert seg.grid(48, 40).shape == (9, 2)
    masks = seg(img)
    assert 1 <= len(masks) <= 9
    assert all(m.shape == (40, 48) and m.dtype == bool for m in masks)
    strict = SamSegmenter(model, proc, points_per_side=3, pred_iou_thresh=1e9)
    assert strict(img) == []  # thresholds are applied
    dedup = SamSegmenter(model, proc, points_per_side=3, pred_iou_thresh=-1e9, stability_thresh=0.0, min_area=1,
                         nms_iou=0.0)(img)
    assert len(dedup) <= len(masks)
    assert all(not (a & b).any() for a, b in itertools.combinations(dedup, 2))  # NMS at IoU 0: disjoint masks


def test_owlv2_scorer_tiny_random_init(tmp_path):
    model, proc = tiny_owlv2(tmp_path)
    img = (np.random.default_rng(1).random((40, 48, 3)) * 255).astype(np.uint8)
    phrases = ["red car", "tree", "tall building", "road", "swimming pool"]
    s = Owlv2PhraseScorer(model, proc, max_phrases=16)(img, phrases)
    assert s.shape == (5,) and ((s > 0) & (s < 1)).all() and np.ptp(s) > 0
    s2 = Owlv2PhraseScorer(model, proc, max_phrases=2)(img, phrases)  # chunking does not change a phrase's score
    np.testing.assert_allclose(s, s2, atol=1e-5)
    assert Owlv2PhraseScorer(model, proc)(img, []).shape == (0,)


def test_divide_and_conquer_with_tiny_sam_and_owlv2(tmp_path):
    sam, sproc = tiny_sam()
    owl, oproc = tiny_owlv2(tmp_path)
    cap = FakeCaptioner()
    dc = DivideAndConquer(cap, SamSegmenter(sam, sproc, points_per_side=2, pred_iou_thresh=-1e9, stability_thresh=0,
                                            min_area=1), RuleParser(), Owlv2PhraseScorer(owl, oproc), min_side=2)
    img = Image.fromarray((np.random.default_rng(2).random((32, 32, 3)) * 255).astype(np.uint8))
    r = dc.refine(img, "A tall building next to the road.")
    assert r.caption == "FUSED" and len(r.scores) == len(r.phrases) > 0
    assert len(cap.calls) == (2 if r.boxes else 1) and cap.calls[-1][0] == 1
    assert sorted(r.kept + r.dropped) == sorted(r.phrases)
    assert all((s >= PHRASE_THRESHOLD) == (p in r.kept) for p, s in zip(r.phrases, r.scores, strict=True))


# ------------------------------------------------------------------ SynthCity stand-ins

@pytest.mark.parametrize("target", [0.6, 0.75, 0.9])
def test_scorer_standin_auroc(target):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    truth = np.arange(2000) % 2 == 0
    scores = draw_scores(truth, target, rng)
    assert ((scores > 0) & (scores < 1)).all()
    assert roc_auc_score(truth, scores) == pytest.approx(target, abs=0.025)
    # centred on the threshold: true phrases kept and false ones dropped at the same rate
    assert (scores[truth] >= 0.01).mean() == pytest.approx((scores[~truth] < 0.01).mean(), abs=0.05)


def test_separation_formula():
    assert separation(0.5) == pytest.approx(0.0)
    from scipy.stats import norm

    assert norm.cdf(separation(0.8) / np.sqrt(2)) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        separation(1.0)


SCENE = {"image": "images/satellite/x.png", "region_id": "x", "kind": "satellite", "size": 32, "objects": [
    {"cls": "house", "bbox": [0, 0, 10, 10], "attrs": {"colour": "red", "floors": 2}},
    {"cls": "house", "bbox": [12, 0, 22, 10], "attrs": {"colour": "red", "floors": 2}},
    {"cls": "parking_lot", "bbox": [0, 16, 32, 32], "attrs": {}},
    {"cls": "car", "bbox": [3, 20, 5, 21], "attrs": {}},
]}


def test_segmenter_standin_error_model():
    exact = SceneSegmenter(SCENE, miss_rate=0.0, merge_rate=0.0, jitter=0.0).boxes()
    assert exact == [(0, 0, 10, 10), (12, 0, 22, 10), (0, 16, 32, 32)]  # the 2-px car is below the min area
    assert SceneSegmenter(SCENE, miss_rate=1.0).boxes() == []
    merged = SceneSegmenter(SCENE, miss_rate=0.0, merge_rate=1.0, jitter=0.0).boxes()
    assert (0, 0, 22, 10) in merged  # each house merged with its nearest neighbour
    a = SceneSegmenter(SCENE, seed=3).boxes()
    assert a == SceneSegmenter(SCENE, seed=3).boxes()  # seeded
    masks = SceneSegmenter(SCENE, 0.0, 0.0, 0.0)()
    assert [maximal_rectangle(m) for m in masks] == exact


def test_phrase_scorer_standin_truth_and_determinism():
    sc = ScenePhraseScorer(SCENE, auroc=0.85, seed=0)
    assert sc.truth("red houses") is True and sc.truth("car park") is True and sc.truth("swimming pool") is False
    assert sc.truth("neighbourhood") is None
    s1 = sc(None, ["house", "swimming pool", "neighbourhood"])
    s2 = sc(None, ["neighbourhood", "swimming pool", "house"])
    assert s1[2] == 1.0 and s1[0] == s2[2] and s1[1] == s2[1]  # per-phrase seeding, unknown kept
    perfect = ScenePhraseScorer(SCENE, auroc=0.99999)
    assert perfect(None, ["house"])[0] > 0.01 > perfect(None, ["swimming pool"])[0]


def test_crop_scene_and_rates():
    sub = crop_scene(SCENE, (0, 14, 32, 32))
    assert sorted(o["cls"] for o in sub["objects"]) == ["car", "parking_lot"]
    assert sub["size"] == 32 and sub["objects"][0]["bbox"][1] >= 0
    st = [{"text": "x", "true": True, "kind": "fact", "object": "house"},
          {"text": "y", "true": False, "kind": "hallucination", "object": "swimming_pool"},
          {"text": "z", "true": True, "kind": "filler", "object": None}]
    r = statement_rates(st, SCENE)
    assert r["hallucination_rate"] == 0.5 and r["omission_rate"] == pytest.approx(2 / 3) and r["n_content"] == 2


@pytest.fixture(scope="module")
def smoke_city():
    from urbanlib.data.synthcity import build, read_scenes
    from urbanlib.data.synthcity.config import DEFAULT_PARAMS

    path = build("synth-ring", scale="smoke", progress=False)
    return read_scenes(path), DEFAULT_PARAMS


def test_synthcity_refinement_runs_and_a_perfect_scorer_removes_hallucinations(smoke_city):
    scenes, params = smoke_city
    sats = [s for s in scenes if s["kind"] == "satellite"][:12]
    cap = params.captioners[-1]  # the most hallucinating profile
    before, after = [], []
    for sc in sats:
        r = refine_synthcity_caption(sc, cap, params, seed=0, auroc=0.99999)
        before.append(r.before["hallucination_rate"])
        after.append(r.after["hallucination_rate"])
        assert r.parser == RULE_LABEL and 0 <= r.after["omission_rate"] <= 1
        truth = ScenePhraseScorer(sc)
        assert not any(truth.truth(p) is False for p in r.kept)  # a near-perfect scorer keeps no false phrase
    assert np.mean(before) > 0 and np.mean(after) < np.mean(before)
    again = refine_synthcity_caption(sats[0], cap, params, seed=0)
    assert again.text_after == refine_synthcity_caption(sats[0], cap, params, seed=0).text_after  # seeded
