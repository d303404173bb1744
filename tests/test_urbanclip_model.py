"""UrbanCLIP model, losses, restricted vocabulary and the open_clip CoCa variant (tiny configs)."""

import math

import pytest
import torch
import torch.nn.functional as F

from urbanlib.models import Vocab, create_model, get_config, list_models
from urbanlib.models.losses import caption_loss_parts, contrastive_loss, urbanclip_loss
from urbanlib.models.text import choose_text, tokenize

WORDS = ["park", "river", "road", "tower", "school", "market", "farm", "rail", "port", "mall",
         "lake", "plaza", "bridge", "factory", "temple", "stadium"]



def _captions(n=16):
    return [f"a {WORDS[i]} next to dense {WORDS[(i * 7) % 16]} blocks" for i in range(n)]


def _batch(n=4, size=32, ctx=24):
    return {"image": torch.randn(n, 3, size, size), "text": tokenize(_captions(n), ctx)}


def test_configs_listed_and_errors():
    assert {"urbanclip-tiny", "urbanclip-cpu", "urbanclip-paper", "coca-tiny"} <= set(list_models())
    paper = get_config("urbanclip-paper")
    assert (paper.vision.image_size, paper.vision.patch_size, paper.vision.width) == (224, 16, 768)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")
    with pytest.raises(ValueError, match="unknown override"):
        create_model("urbanclip-tiny", widht=3)


def test_shapes():
    model = create_model("urbanclip-tiny").eval()
    b = _batch()
    out = model.forward_features(b["image"], b["text"])
    assert out["image_emb"].shape == (4, 32) and out["text_emb"].shape == (4, 32)
    assert out["logits"].shape == (4, 23, 49408) and out["labels"].shape == (4, 23)
    assert torch.allclose(out["image_emb"].norm(dim=-1), torch.ones(4), atol=1e-5)
    assert model.encode_image_features(b["image"]).shape == (4, 64)
    assert model.encode_image(b["image"]).shape == (4, 32)
    assert model.encode_text(b["text"]).shape == (4, 32)
    losses = model(b)
    assert set(losses) == {"contrastive_loss", "caption_loss", "loss"}
    assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])


def test_one_forward_pass_per_step_yields_both_losses():
    """UrbanCLIP's claim for the causal decoder (UC28): each tower runs once for both loss terms."""
    model = create_model("urbanclip-tiny")
    calls = {"visual.transformer": 0, "text": 0, "decoder": 0}
    for name in calls:
        model.get_submodule(name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    losses = model(_batch())
    assert calls == {"visual.transformer": 1, "text": 1, "decoder": 1}
    assert losses["contrastive_loss"] > 0 and losses["caption_loss"] > 0


@pytest.mark.parametrize("pooler", ["learned"])
def test_learned_pooler_option(pooler):
    model = create_model("urbanclip-tiny", contrastive_pooler=pooler, multimodal_pooler=pooler, pooler_queries=5)
    out = model.forward_features(**dict(zip(["images", "text"], _batch().values(), strict=True)))
    assert out["logits"].shape == (4, 23, 49408)


def test_causal_masking_future_token_never_changes_earlier_logits():
    model = create_model("urbanclip-tiny").eval()
    b = _batch(2)
    text2 = b["text"].clone()
    k = 5
    text2[:, k] = 320  # change input token at position k
    with torch.no_grad():
        a = model.forward_features(b["image"], b["text"])["logits"]
        c = model.forward_features(b["image"], text2)["logits"]
    assert torch.allclose(a[:, :k], c[:, :k], atol=1e-6)  # logits for positions < k see only tokens < k
    assert not torch.allclose(a[:, k], c[:, k], atol=1e-4)  # and position k does see it


def test_contrastive_loss_hand_computed():
    n, s = 4, 2.0
    e = torch.eye(n)  # orthonormal pairs: logits = s * I
    expected = math.log(1 + (n - 1) * math.exp(-s))
    assert contrastive_loss(e, e, torch.tensor(s)).item() == pytest.approx(expected, rel=1e-5)
    # swapping two texts makes those two rows/cols wrong: loss = log(1 + e^s + (n-2)) for them
    swapped = e[[1, 0, 2, 3]]
    wrong = math.log(1 + math.exp(s) + (n - 2)) - 0  # -log(1 / (e^s + n-1))
    exp_sw = (2 * wrong + 2 * expected) / 4
    assert contrastive_loss(e, swapped, torch.tensor(s)).item() == pytest.approx(exp_sw, rel=1e-5)


def test_caption_loss_hand_computed_and_ignores_padding():
    v = 7
    logits = torch.zeros(2, 3, v)  # uniform -> log V per token
    labels = torch.tensor([[1, 2, 0], [3, 0, 0]])  # 3 real targets, 3 pads
    total, count = caption_loss_parts(logits, labels)
    assert count.item() == 3 and total.item() == pytest.approx(3 * math.log(v), rel=1e-6)
    e = torch.eye(2)
    out = urbanclip_loss(e, e, torch.tensor(1.0), logits, labels, lambda_con=0.5, lambda_lm=2.0)
    con = math.log(1 + math.exp(-1.0))
    assert out["contrastive_loss"].item() == pytest.approx(con, rel=1e-5)
    assert out["caption_loss"].item() == pytest.approx(math.log(v), rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.5 * con + 2.0 * math.log(v), rel=1e-5)


def test_restricted_vocab_equals_masked_full_vocab():
    b = _batch(4)
    vocab = Vocab.from_tokenized(b["text"])
    full = create_model("urbanclip-tiny").eval()
    small = create_model("urbanclip-tiny", vocab=vocab).eval()
    state = full.state_dict()
    keep = vocab.kept_ids[:-1]  # tokenizer ids of compact 0..K-2; last slot is <unk>
    for name in ("text.token_embedding.weight",):
        w = torch.zeros_like(small.state_dict()[name])
        w[:-1] = state[name][keep]
        state[name] = w
    head = torch.zeros_like(small.state_dict()["decoder.text_projection"])
    head[:, :-1] = state["decoder.text_projection"][:, keep]
    state["decoder.text_projection"] = head
    state["full_to_compact"], state["kept_ids"] = small.full_to_compact, small.kept_ids
    small.load_state_dict(state)
    with torch.no_grad():
        fo = full.forward_features(b["image"], b["text"])
        so = small.forward_features(b["image"], b["text"])
    masked = torch.full_like(fo["logits"], float("-inf"))
    masked[..., keep] = fo["logits"][..., keep]
    full_loss = F.cross_entropy(masked.flatten(0, 1), fo["labels"].flatten(), ignore_index=0)
    small_loss = F.cross_entropy(so["logits"][..., :-1].flatten(0, 1), so["labels"].flatten(), ignore_index=0)
    assert small_loss.item() == pytest.approx(full_loss.item(), rel=1e-5)
    assert torch.equal(small.to_tokenizer_ids(so["labels"]), fo["labels"])  # remap round-trips
    assert vocab.encode(torch.tensor([12345])).item() in (vocab.unk_id, *range(len(vocab)))


def test_vocab_json_roundtrip(tmp_path):
    vocab = Vocab.from_tokenized(_batch(4)["text"])
    vocab.save(tmp_path / "v.json")
    again = Vocab.load(tmp_path / "v.json")
    assert torch.equal(again.kept_ids, vocab.kept_ids)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        Vocab.load(tmp_path / "bad.json")


def test_tiny_model_overfits_16_pairs():
    torch.manual_seed(0)
    texts = tokenize(_captions(16), 24)
    images = torch.randn(16, 3, 32, 32)
    model = create_model("urbanclip-tiny", vocab=Vocab.from_tokenized(texts))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(30):
        out = model({"image": images, "text": texts})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["caption_loss"].item()
    model.eval()
    with torch.no_grad():
        sim = model.encode_image(images) @ model.encode_text(texts).t()  # (16, 16)
        last = model({"image": images, "text": texts})["caption_loss"].item()
    assert (sim.argmax(1) == torch.arange(16)).float().mean().item() == 1.0
    assert (sim.argmax(0) == torch.arange(16)).float().mean().item() == 1.0
    assert last < 0.5 * first


def test_fresh_open_clip_coca_outputs_are_finite():
    model = create_model("coca-tiny")
    head = model.model.text_decoder.text_projection
    assert torch.isfinite(head).all() and head.abs().max() < 10  # not uninitialised memory
    b = _batch(2)
    out = model.forward_features(b["image"], b["text"])
    assert all(torch.isfinite(v).all() for v in out.values())
    assert torch.isfinite(model(b)["loss"])
    assert model.encode_image_features(b["image"]).shape == (2, 64)


def test_choose_text_modes():
    caps = ["one", "two", "three"]
    assert choose_text(caps, "concat") == "one two three"
    picks = {choose_text(caps, "sample", epoch=e, seed=0, key=1) for e in range(20)}
    assert picks == set(caps)  # every caption is drawn across epochs
    assert choose_text(caps, "sample", epoch=3, key=1) == choose_text(caps, "sample", epoch=3, key=1)
    with pytest.raises(ValueError, match="region 7"):
        choose_text([], key=7)


def test_stretch_positional_embedding_is_reexported():
    import urbanlib.models as models
    from urbanlib.models.ipsi import stretch_positional_embedding

    assert models.stretch_positional_embedding is stretch_positional_embedding


def _teacher_forced_logprob(model, image, ids, ended):
    from urbanlib.models.vocab import EOT_ID, SOT_ID

    seq = [SOT_ID, *ids] + ([EOT_ID] if ended else [])
    text = torch.tensor([seq + [0] * (24 - len(seq))])
    with torch.no_grad():
        out = model.forward_features(image, text)
    logp = out["logits"][0].float().log_softmax(-1)  # (T, V)
    targets = out["labels"][0, : len(seq) - 1]
    return logp[torch.arange(len(seq) - 1), targets].sum().item()


def test_generation_greedy_and_beam_are_consistent_with_the_decoder():
    from urbanlib.models.generate import generate

    torch.manual_seed(1)
    model = create_model("urbanclip-tiny", vocab=Vocab.from_tokenized(tokenize(_captions(16), 24))).eval()
    images = torch.randn(2, 3, 32, 32)
    greedy = generate(model, images, max_len=8)
    beam = generate(model, images, max_len=8, beam_size=3)
    assert len(greedy) == 2 and all(isinstance(c.text, str) for c in greedy)
    for i in range(2):
        img = images[i:i + 1]
        for cap in (greedy[i], beam[i]):
            ended = len(cap.ids) < 8
            assert cap.logprob == pytest.approx(_teacher_forced_logprob(model, img, cap.ids, ended), abs=1e-3)
        # greedy: every generated token is the argmax of the teacher-forced logits
        seq = torch.tensor([[49406, *greedy[i].ids] + [0] * (23 - len(greedy[i].ids))])
        with torch.no_grad():
            logits = model.forward_features(img, seq)["logits"][0]
        picks = model.to_tokenizer_ids(logits.argmax(-1))[: len(greedy[i].ids)]
        assert picks.tolist() == greedy[i].ids
        assert beam[i].logprob >= greedy[i].logprob - 1e-4 or len(beam[i].ids) != len(greedy[i].ids)


def test_local_pretrained_checkpoint_is_loaded(tmp_path):
    from safetensors.torch import save_file

    src = create_model("urbanclip-tiny")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.manual_seed(123)
    loaded = create_model("urbanclip-tiny", pretrained=str(tmp_path / "w.safetensors"))
    assert torch.equal(loaded.logit_scale, src.logit_scale)
    assert torch.equal(loaded.decoder.text_projection, src.decoder.text_projection)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        create_model("urbanclip-tiny", pretrained=str(tmp_path / "missing.safetensors"))


@pytest.mark.slow  # builds the 224 px open_clip CoCa ViT-B/32 (~250M parameters)
def test_open_clip_named_coca_fresh_is_finite():
    from urbanlib.models.text import tokenize as tok

    model = create_model("coca-cpu", open_clip_name="coca_ViT-B-32").eval()
    assert torch.isfinite(model.model.text_decoder.text_projection).all()
    with torch.no_grad():
        out = model.forward_features(torch.randn(1, 3, 224, 224), tok(["a park"], 76))
    assert all(torch.isfinite(v).all() for v in out.values())


def test_coca_variant_generates_with_open_clip():
    model = create_model("coca-tiny").eval()
    with torch.no_grad():
        out = model.generate(torch.randn(1, 3, 32, 32), seq_len=6, max_seq_len=24, generation_type="top_k")
    assert out.shape == (1, 6) and out[0, 0].item() == 49406  # starts with <start_of_text>


def test_tokenize_cuts_long_captions_without_a_false_end():
    from open_clip.tokenizer import SimpleTokenizer

    from urbanlib.models.text import tokenize

    short, long = "a park by the river", " ".join(["dense blocks"] * 40)
    ref = SimpleTokenizer(context_length=16)([short, long])
    ours = tokenize([short, long], 16)
    assert torch.equal(ours[0], ref[0])  # fits: identical to open_clip, <end> included
    assert ours[1, -1] != 49407 and (ours[1] != 0).all() and torch.equal(ours[1, :-1], ref[1, :-1])
    assert ref[1, -1] == 49407 and torch.equal(tokenize([short, long], 16, end_at_cut=True), ref)
