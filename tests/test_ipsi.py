"""IPSI (UrbanLN Eq. 2): positional-embedding stretching and the stretched CLIP."""

import open_clip
import pytest
import torch

from urbanlib.models.ipsi import (
    causal_mask,
    stretch_clip,
    stretch_positional_embedding,
    stretched_length,
    stretched_tokenizer,
)


def tiny_clip(seed: int = 0) -> open_clip.CLIP:
    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
    )


def test_lengths():
    assert stretched_length(77, 20, 4) == 248
    assert stretched_length(10, 2, 3) == 10 * 3 - 2 * 2
    with pytest.raises(ValueError):
        stretched_length(10, 9, 4)


def test_arange_fixture():
    old = torch.arange(77, dtype=torch.float32).unsqueeze(1)  # (77, 1)
    new = stretch_positional_embedding(old)
    assert new.shape == (248, 1)
    assert torch.equal(new[:20], old[:20])
    p = torch.arange(20, 248, dtype=torch.float32)
    torch.testing.assert_close(new[20:, 0], 20 + (p - 20) / 4, rtol=0, atol=1e-5)
    assert new[-1, 0].item() == pytest.approx(76.75)


@pytest.mark.parametrize("length,keep,ratio", [(77, 20, 4), (12, 3, 2), (9, 0, 3)])
def test_values_match_formula(length, keep, ratio):
    torch.manual_seed(1)
    old = torch.randn(length, 5, dtype=torch.float64)
    new = stretch_positional_embedding(old, keep=keep, ratio=ratio)
    assert new.shape == (length * ratio - (ratio - 1) * keep, 5)
    assert torch.equal(new[:keep], old[:keep])  # bit-identical kept rows
    for i in range(length - keep):
        for k in range(ratio):
            p = keep + ratio * i + k
            if i < length - keep - 1:
                expect = (ratio - k) / ratio * old[keep + i] + k / ratio * old[keep + i + 1]
            else:  # last segment extrapolates
                expect = old[-1] + k * (old[-1] - old[-2]) / ratio
            torch.testing.assert_close(new[p], expect)


def test_kept_rows_bit_identical_float32():
    old = torch.randn(77, 16)
    new = stretch_positional_embedding(old)
    assert torch.equal(new[:20], old[:20])
    assert new.dtype == old.dtype
    # Positions 20 + 4i hit old rows exactly (k = 0).
    torch.testing.assert_close(new[20::4][:57], old[20:77])


def test_causal_mask():
    m = causal_mask(4)
    assert torch.isinf(m[0, 1]) and m[1, 0] == 0 and m[2, 2] == 0


def test_stretch_clip_end_to_end():
    model = stretch_clip(tiny_clip()).eval()
    assert model.positional_embedding.shape == (248, 64)
    assert model.attn_mask.shape == (248, 248)
    assert model.context_length == 248
    assert torch.equal(model.attn_mask, causal_mask(248))
    tok = stretched_tokenizer()
    long_text = " ".join(["street"] * 300)
    text = tok([long_text])  # (1, 248), truncated
    assert text.shape == (1, 248)
    with torch.no_grad():
        e1 = model.encode_text(text)
        text2 = text.clone()
        text2[0, 200] = 1000  # a token beyond CLIP's original 77 positions
        e2 = model.encode_text(text2)
    assert e1.shape == (1, 32)
    assert not torch.allclose(e1, e2)  # position 200 reaches the pooled (EOT) token


def test_stretch_clip_from_registry_config():
    # A full ViT-B-16 from config (random init, no download) stretches too.
    model = open_clip.create_model("ViT-B-16", pretrained=None)
    old = model.positional_embedding.detach().clone()
    stretch_clip(model)
    assert model.positional_embedding.shape == (248, 512)
    assert torch.equal(model.positional_embedding[:20].detach(), old[:20])
    assert model.attn_mask.shape == (248, 248)


def test_freeze_kept_optimizer_step():
    model = stretch_clip(tiny_clip(), freeze_kept=True)
    before = model.positional_embedding.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    tok = stretched_tokenizer()
    text = tok([" ".join(["park"] * 150), "a road"])
    loss = model.encode_text(text).pow(2).sum()
    loss.backward()
    opt.step()
    after = model.positional_embedding.detach()
    assert torch.equal(after[:20], before[:20])
    assert not torch.allclose(after[20:], before[20:])
    # The frozen rows travel in the state dict.
    sd = model.state_dict()
    assert any(k.endswith("kept") for k in sd)


def test_unfrozen_kept_rows_train():
    model = stretch_clip(tiny_clip(), freeze_kept=False)
    before = model.positional_embedding.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    text = stretched_tokenizer()(["a road with trees"])
    model.encode_text(text).pow(2).sum().backward()
    opt.step()
    assert not torch.allclose(model.positional_embedding[:20].detach(), before[:20])


def test_double_stretch_rejected_when_frozen():
    model = stretch_clip(tiny_clip(), freeze_kept=True)
    with pytest.raises(ValueError):
        stretch_clip(model)
