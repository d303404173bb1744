"""UrbanLN model: trainer protocol, street-view pooling, overfitting, checkpoints."""

import time

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from urbanlib.models.parameters import count_parameters
from urbanlib.models.urbanln import UrbanLN, UrbanLNConfig, tokenize_captions

VOCAB = 512  # small vocabulary keeps the embedding/optimizer cheap; the last id is the end token



def tiny_clip(seed: int = 0) -> open_clip.CLIP:
    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=VOCAB, width=64, heads=2, layers=2),
    )


def fake_batch(n: int = 8, seed: int = 0, street_views: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (n, street_views, 3, 32, 32) if street_views else (n, 3, 32, 32)
    text = torch.zeros(n, 248, dtype=torch.long)
    for i in range(n):
        length = min(30 + 25 * i, 248)  # several captions run past CLIP's 77 tokens
        text[i, 0] = VOCAB - 2  # start
        text[i, 1 : length - 1] = torch.randint(1, VOCAB - 2, (length - 2,), generator=g)
        text[i, length - 1] = VOCAB - 1  # end (argmax pooling picks it)
    return {"image": torch.randn(shape, generator=g), "text": text, "region_index": torch.arange(n)}


def test_tokenize_counts_truncation():
    texts = ["a small park", " ".join(["building"] * 300)]
    out = tokenize_captions(texts, context_length=248)
    ref = open_clip.tokenizer.SimpleTokenizer(context_length=248)(texts)
    assert torch.equal(out.tokens, ref)
    assert out.n_truncated == 1 and out.lengths[0] == 5 and out.lengths[1] > 248
    assert tokenize_captions(texts, context_length=400).n_truncated == 0


def test_forward_protocol_and_queue_updates():
    model = UrbanLN(tiny_clip(), UrbanLNConfig(queue_size=6, momentum=0.5))
    assert model.context_length == 248 and model.queue_size == 6
    batch = fake_batch(4)
    out = model(batch)
    assert {"loss", "contrastive_loss", "distill_loss"} <= set(out)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    # Fresh teacher == student -> the KL term is exactly the gap from an empty queue: zero.
    assert out["distill_loss"].item() == pytest.approx(0.0, abs=1e-6)
    opt = torch.optim.AdamW(model.clip.parameters(), lr=1e-2)
    teacher_w = model.msd.teacher.text_projection.detach().clone()
    out["loss"].backward()
    opt.step()
    model.after_optimizer_step(0)
    expect = 0.5 * teacher_w + 0.5 * model.clip.text_projection.detach()
    torch.testing.assert_close(model.msd.teacher.text_projection, expect)
    assert model.msd.queue.n_filled == 4 and int(model.msd.queue.ptr) == 4
    assert model.msd.queue.region[:4].tolist() == [0, 1, 2, 3]
    model(batch)["loss"].backward()
    opt.step()
    model.after_optimizer_step(1)
    assert model.msd.queue.n_filled == 6 and int(model.msd.queue.ptr) == 2  # wrapped
    assert model(batch)["distill_loss"].item() > 0  # teacher now lags the student
    pending = len(model._pending)
    model.eval()
    with torch.no_grad():
        model(batch)
    assert len(model._pending) == pending  # evaluation does not enqueue


def test_street_view_mean_ignores_padding():
    model = UrbanLN(tiny_clip(), UrbanLNConfig(queue_size=4)).eval()
    batch = fake_batch(2, street_views=3)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    with torch.no_grad():
        z = model.encode_image_features(batch["image"], mask)
        z_view0 = model.encode_image_features(batch["image"][:, 0])
        z_view1 = model.encode_image_features(batch["image"][:, 1])
        padded = batch["image"].clone()
        padded[0, 2] = 5.0
        padded[1, 1:] = -5.0
        z_padded = model.encode_image_features(padded, mask)
        loss_a = model({**batch, "image_mask": mask})["loss"]
        loss_b = model({**batch, "image": padded, "image_mask": mask})["loss"]
    assert z.shape == (2, 64)  # ViT width, not the projection
    torch.testing.assert_close(z[0], (z_view0[0] + z_view1[0]) / 2)
    torch.testing.assert_close(z[1], z_view0[1])
    torch.testing.assert_close(z_padded, z)
    torch.testing.assert_close(loss_a, loss_b)
    with pytest.raises(ValueError, match="image_mask"):
        model.encode_image_features(batch["image"], torch.zeros(2, 3, dtype=torch.bool))


def test_bad_batches_name_the_field():
    model = UrbanLN(tiny_clip(), UrbanLNConfig(queue_size=4))
    batch = fake_batch(2)
    with pytest.raises(ValueError, match="'text'"):
        model({**batch, "text": batch["text"][:, :77]})
    with pytest.raises(KeyError, match="region_index"):
        model({"image": batch["image"], "text": batch["text"]})


def test_without_msd_is_plain_clip():
    model = UrbanLN(tiny_clip(), UrbanLNConfig(use_msd=False))
    assert model.msd is None
    out = model(fake_batch(4))
    assert out["distill_loss"].item() == 0.0
    counts = model.parameter_counts()
    assert counts["teacher"] == 0 and counts["total"] == counts["student_total"]


def test_without_ipsi_keeps_77_tokens():
    model = UrbanLN(tiny_clip(), UrbanLNConfig(use_ipsi=False, queue_size=4))
    assert model.context_length == 77
    assert model.tokenize([" ".join(["road"] * 100)]).n_truncated == 1


def test_parameter_counts_and_queue_cap():
    model = UrbanLN(tiny_clip(), UrbanLNConfig(queue_size=4096, n_train_pairs=100))
    assert model.queue_size == 50 and model.describe()["queue_size_requested"] == 4096
    c = model.parameter_counts()
    assert c["teacher"] == c["student_total"]
    assert c["trainable"] == c["student_trainable"] == count_parameters(model.clip)["trainable"]
    assert c["total"] == 2 * c["student_total"]
    assert model.describe()["context_length"] == model.describe()["expected_context_length"] == 248


def retrieval_accuracy(model: UrbanLN, batch: dict) -> float:
    with torch.no_grad():
        img = model._image_embedding(model.clip, batch["image"], None)
        txt = model.encode_text(batch["text"])
    return (img @ txt.T).argmax(dim=1).eq(torch.arange(len(img))).float().mean().item()


def test_overfits_eight_pairs():
    start = time.perf_counter()
    model = UrbanLN(tiny_clip(1), UrbanLNConfig(n_train_pairs=8))  # queue capped at 4
    assert model.queue_size == 4
    batch = fake_batch(8, seed=1)
    opt = model.make_optimizer(lr=2e-3, weight_decay=0.0)
    first = None
    for step in range(40):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.after_optimizer_step(step)
        first = out["contrastive_loss"].item() if first is None else first
    last = model(batch)["contrastive_loss"].item()
    elapsed = time.perf_counter() - start
    assert last < 0.2 * first, (first, last)
    assert retrieval_accuracy(model, batch) == 1.0
    assert elapsed < 30, elapsed


def test_safetensors_roundtrip(tmp_path):
    cfg = UrbanLNConfig(queue_size=6, momentum=0.7, freeze_kept=True)
    model = UrbanLN(tiny_clip(2), cfg)
    opt = torch.optim.AdamW(model.clip.parameters(), lr=1e-2)
    for step in range(2):
        model(fake_batch(4, seed=step))["loss"].backward()
        opt.step()
        model.after_optimizer_step(step)
    with torch.no_grad():
        model.clip.logit_scale.add_(0.3)
    path = tmp_path / "urbanln.safetensors"
    save_file(model.state_dict(), str(path))
    fresh = UrbanLN(tiny_clip(3), cfg)
    missing, unexpected = fresh.load_state_dict(load_file(str(path)))
    assert not missing and not unexpected
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert int(fresh.msd.queue.ptr) == 2 and fresh.msd.queue.n_filled == 6
    assert torch.equal(fresh.msd.queue.region, model.msd.queue.region)
    assert fresh.clip.logit_scale.item() == model.clip.logit_scale.item()
    batch = fake_batch(4, seed=9)
    model.eval(), fresh.eval()
    with torch.no_grad():
        a, b = model(batch), fresh(batch)
    assert a["loss"].item() == b["loss"].item() and a["distill_loss"].item() == b["distill_loss"].item()
