"""The fast blocks (urbanlib.models.blocks / towers) against open_clip's: outputs and gradients.

Tolerance, fp32: outputs ``atol=1e-5, rtol=1e-4``; gradients the same with ``atol`` scaled by the
tensor's largest magnitude (gradients of these test scalars reach ~1e2, where open_clip's own
gradients differ from float64 by ~2e-4). The kernels differ only in summation order. Each open_clip reference is a deep copy of the module before conversion, so both
sides hold the same weights.
"""

import copy

import open_clip
import pytest
import torch
from open_clip.transformer import MultimodalTransformer, ResidualAttentionBlock, TextTransformer
from open_clip.transformer import Transformer as OpenClipTransformer

from urbanlib.models import Vocab, create_model
from urbanlib.models.blocks import ResidualBlock, Transformer, convert
from urbanlib.models.clip import create_clip
from urbanlib.models.towers import Decoder, TextTower, encode_text, is_fast_clip
from urbanlib.models.urbanln import UrbanLN, UrbanLNConfig

TOL = {"atol": 1e-5, "rtol": 1e-4}


def _close(a, b):
    torch.testing.assert_close(a, b, **TOL)


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _close_grad(a, b, name=""):
    atol = TOL["atol"] * max(1.0, b.abs().max().item())
    torch.testing.assert_close(a, b, atol=atol, rtol=TOL["rtol"], msg=lambda m: f"{name}: {m}")


def _assert_same_grads(ours, ref):
    g_ours, g_ref = _grads(ours), _grads(ref)
    assert set(g_ours) == set(g_ref) and g_ours
    for name in g_ref:
        _close_grad(g_ours[name], g_ref[name], name)


def _causal(n):
    return torch.full((n, n), float("-inf")).triu(1)


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_block_matches_open_clip(causal):
    torch.manual_seed(0)
    ref = ResidualAttentionBlock(32, 4)
    ours = ResidualBlock.from_open_clip(copy.deepcopy(ref))
    assert set(ours.state_dict()) == set(ref.state_dict())
    x = torch.randn(3, 11, 32)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref = ref(x_ref, attn_mask=_causal(11) if causal else None)
    y_ours = ours(x_ours, causal=causal)
    _close(y_ours, y_ref)
    w = torch.randn_like(y_ref)
    (y_ref * w).sum().backward()
    (y_ours * w).sum().backward()
    _close_grad(x_ours.grad, x_ref.grad)
    _assert_same_grads(ours, ref)


def test_cross_attention_block_matches_open_clip():
    torch.manual_seed(1)
    ref = ResidualAttentionBlock(32, 2, is_cross_attention=True)
    ours = ResidualBlock.from_open_clip(copy.deepcopy(ref))
    x, ctx = torch.randn(2, 7, 32), torch.randn(2, 13, 32)
    y_ref = ref(x, k_x=ctx, v_x=ctx)
    y_ours = ours(x, context=ctx)
    _close(y_ours, y_ref)
    y_ref.square().sum().backward()
    y_ours.square().sum().backward()
    _assert_same_grads(ours, ref)


def test_open_clip_float_mask_convention_still_works():
    """A converted transformer called the open_clip way (additive float mask) gives open_clip's output."""
    torch.manual_seed(2)
    ref = OpenClipTransformer(32, 2, 4)
    ours = Transformer.from_open_clip(copy.deepcopy(ref))
    x = torch.randn(2, 9, 32)
    _close(ours(x, attn_mask=_causal(9)), ref(x, attn_mask=_causal(9)))
    _close(ours(x, causal=True), ref(x, attn_mask=_causal(9)))


def test_convert_shares_parameters_and_keeps_state_dict_keys():
    torch.manual_seed(0)
    clip = open_clip.CLIP(embed_dim=16, vision_cfg={"image_size": 16, "patch_size": 8, "width": 32, "layers": 1,
                                                      "head_width": 16},
                          text_cfg={"context_length": 12, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1})
    before = {n: p for n, p in clip.named_parameters()}
    keys = list(clip.state_dict())
    convert(clip)
    assert is_fast_clip(clip)
    after = dict(clip.named_parameters())
    assert list(clip.state_dict()) == keys
    assert all(after[n] is p for n, p in before.items())  # same Parameter objects: nothing copied


def test_text_tower_matches_open_clip_with_padding():
    torch.manual_seed(3)
    ref = TextTransformer(context_length=10, vocab_size=40, width=32, heads=2, layers=2, output_dim=16,
                          embed_cls=True, output_tokens=True, pad_id=0, correct_cls_mask=True)
    ours = TextTower.from_open_clip(copy.deepcopy(ref))
    assert set(ours.state_dict()) == set(ref.state_dict())
    ids = torch.randint(1, 40, (3, 10))
    ids[0, 6:] = 0  # padded rows: the [CLS] and padded queries must not see the padding
    ids[1, 3:] = 0
    p_ref, t_ref = ref(ids)
    p_ours, t_ours = ours(ids)
    _close(p_ours, p_ref)
    _close(t_ours, t_ref)
    (p_ref.sum() + t_ref.square().sum()).backward()
    (p_ours.sum() + t_ours.square().sum()).backward()
    _assert_same_grads(ours, ref)


def test_decoder_matches_open_clip():
    torch.manual_seed(4)
    ref = MultimodalTransformer(width=32, layers=2, heads=2, context_length=9, output_dim=30)
    torch.nn.init.normal_(ref.text_projection, std=0.1)
    ours = Decoder.from_open_clip(copy.deepcopy(ref))
    assert set(ours.state_dict()) == set(ref.state_dict())
    img, txt = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    _close(ours(img, txt), ref(img, txt))
    ref(img, txt).square().sum().backward()
    ours(img, txt).square().sum().backward()
    _assert_same_grads(ours, ref)


def _tiny_clip(seed=0, context=77):
    torch.manual_seed(seed)
    return open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                                                    "head_width": 32},
                          text_cfg={"context_length": context, "vocab_size": 100, "width": 64, "heads": 2,
                                    "layers": 2})


def _texts(lengths, context=77, vocab=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.zeros(len(lengths), context, dtype=torch.long)
    for i, n in enumerate(lengths):
        text[i, 0] = vocab - 2
        text[i, 1 : n - 1] = torch.randint(1, vocab - 2, (n - 2,), generator=g)
        text[i, n - 1] = vocab - 1  # end token = highest id (argmax pooling)
    return text


@pytest.mark.parametrize("lengths", [[5, 20, 9], [77, 30, 12]])
def test_clip_encode_text_matches_open_clip(lengths):
    """Cut after the batch's last end token (first case) or not (second): same features and gradients."""
    ref = _tiny_clip()
    ours = convert(copy.deepcopy(ref))
    text = _texts(lengths)
    e_ref, e_ours = ref.encode_text(text), encode_text(ours, text)
    _close(e_ours, e_ref)
    e_ref.square().sum().backward()
    e_ours.square().sum().backward()
    _assert_same_grads(ours, ref)


def test_clip_encode_image_matches_open_clip():
    ref = _tiny_clip(1)
    ours = convert(copy.deepcopy(ref))
    x = torch.randn(3, 3, 32, 32)
    _close(ours.encode_image(x), ref.encode_image(x))
    ref.encode_image(x).square().sum().backward()
    ours.encode_image(x).square().sum().backward()
    _assert_same_grads(ours, ref)


def test_open_clip_state_dict_loads_into_urbanln_and_gives_open_clip_outputs(tmp_path):
    """open_clip CLIP weights (as `pretrained=` or a local safetensors would give) -> UrbanLN's student."""
    from safetensors.torch import load_file, save_file

    src = _tiny_clip(5)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    clip = _tiny_clip(6)
    clip.load_state_dict(load_file(str(path)))
    model = UrbanLN(clip, UrbanLNConfig(use_ipsi=False, use_msd=False))
    text, image = _texts([10, 40, 77]), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        _close(model.encode_text(text), torch.nn.functional.normalize(src.encode_text(text), dim=-1))
        _close(model._image_embedding(model.clip, image, None),
               torch.nn.functional.normalize(src.encode_image(image), dim=-1))


def test_create_clip_local_checkpoint_still_loads(tmp_path):
    from safetensors.torch import save_file

    src = create_clip("clip-tiny")
    path = tmp_path / "c.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = UrbanLN(create_clip("clip-tiny", pretrained=str(path)), UrbanLNConfig(use_msd=False))
    keys = set(model.clip.state_dict())
    assert {k for k in keys if "resblocks" in k} == {k for k in src.state_dict() if "resblocks" in k}


def _reference_urbanclip(model):
    """open_clip modules holding ``model``'s weights, run the way UrbanCLIP ran before the fast blocks."""
    from open_clip.transformer import VisionTransformer

    cfg, v, t = model.cfg, model.cfg.vision, model.cfg.text
    n_text = cfg.context_length - 1
    visual = VisionTransformer(image_size=v.image_size, patch_size=v.patch_size, width=v.width, layers=v.layers,
                               heads=v.heads, mlp_ratio=v.mlp_ratio, output_dim=cfg.embed_dim)
    visual.proj = None
    text = TextTransformer(context_length=n_text, vocab_size=cfg.vocab_size, width=t.width, heads=t.heads,
                           layers=t.unimodal_layers, mlp_ratio=t.mlp_ratio, output_dim=cfg.embed_dim,
                           embed_cls=True, output_tokens=True, pad_id=0, correct_cls_mask=True)
    decoder = MultimodalTransformer(width=t.width, layers=t.multimodal_layers, heads=t.heads, context_length=n_text,
                                    mlp_ratio=t.mlp_ratio, output_dim=cfg.vocab_size)
    heads = cfg.pooler_heads or v.heads
    pools = {name: torch.nn.MultiheadAttention(v.width, heads, batch_first=True)
             for name in ("contrastive_pooler", "multimodal_pooler")}
    for name, mod in {"visual": visual, "text": text, "decoder": decoder}.items():
        mod.load_state_dict(getattr(model, name).state_dict())
    for name, mha in pools.items():
        mha.load_state_dict(getattr(model, name).attn.state_dict())

    def forward(images, ids):
        inputs = ids[:, :-1]
        tokens = model.visual.ln_post(visual.transformer(visual._embeds(images)))
        out = {}
        for name, mha in pools.items():
            pooler = getattr(model, name)
            q = tokens[:, :1] if pooler.kind == "cls_query" else tokens
            kv = pooler.ln_k(tokens)
            p = mha(pooler.ln_q(q), kv, kv, need_weights=False)[0]
            out[name] = pooler.proj(p.mean(1) if pooler.mean_pool else p)
        text_emb, text_tokens = text(inputs)
        return out["contrastive_pooler"], text_emb, decoder(out["multimodal_pooler"], text_tokens)

    return forward, [visual, text, decoder, *pools.values()]


def test_urbanclip_forward_and_gradients_match_open_clip_blocks():
    vocab = Vocab(range(1, 60))
    torch.manual_seed(0)
    model = create_model("urbanclip-tiny", vocab=vocab)
    forward, ref_modules = _reference_urbanclip(model)
    images = torch.randn(3, 3, 32, 32)
    ids = torch.zeros(3, 24, dtype=torch.long)
    for i, n in enumerate([24, 10, 6]):
        ids[i, :n] = torch.randint(3, len(vocab) - 1, (n,))
    img_ref, txt_ref, logits_ref = forward(images, ids)
    full = model.to_tokenizer_ids(ids).clamp(min=0)
    out = model.forward_features(images, full)
    _close(out["logits"], logits_ref)
    _close(out["image_emb"], torch.nn.functional.normalize(img_ref, dim=-1))
    _close(out["text_emb"], torch.nn.functional.normalize(txt_ref, dim=-1))
    # gradients of the same scalar: ours first (snapshot), then the reference
    w_img, w_txt = torch.randn_like(out["image_emb"]), torch.randn_like(out["text_emb"])

    def scalar(logits, img, txt):
        return logits.square().mean() + (img * w_img).sum() + (txt * w_txt).sum()

    scalar(out["logits"], out["image_emb"], out["text_emb"]).backward()
    ours = {name: _grads(getattr(model, name)) for name in ("visual", "text", "decoder")}
    ours["pools"] = {name: _grads(getattr(model, name).attn) for name in ("contrastive_pooler", "multimodal_pooler")}
    norm = torch.nn.functional.normalize
    scalar(logits_ref, norm(img_ref, dim=-1), norm(txt_ref, dim=-1)).backward()
    for name, mod in zip(["visual", "text", "decoder"], ref_modules[:3], strict=True):
        ref_g = _grads(mod)  # ln_post of the reference ViT is unused (the model's own is applied)
        assert ref_g
        for key, g in ref_g.items():
            _close_grad(ours[name][key], g, f"{name}.{key}")
    for name, mha in zip(["contrastive_pooler", "multimodal_pooler"], ref_modules[3:], strict=True):
        for key, g in _grads(mha).items():
            _close_grad(ours["pools"][name][key], g, f"{name}.{key}")
