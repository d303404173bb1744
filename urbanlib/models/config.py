"""Named UrbanCLIP architectures: JSON files in ``configs/`` mapped onto dataclasses.

``urbanclip-tiny`` is for tests (32 px, width 64), ``urbanclip-cpu`` is the default book scale
(64 px tiles, a few minutes of pretraining on 2 CPU cores), ``urbanclip-paper`` is the paper's size:
§4.1.3 says "ViT" with 16x16 patches (§3.2) and "the first half of the transformer decoder" for the
unimodal text part, so we use ViT-B/16 at 224 px and a 12-layer width-512 decoder split 6 + 6 as in
CoCa-Base (the official CoCa ViT-L-14 config in open_clip halves its decoder the same way). ``coca-*``
configs build open_clip's own CoCa with the same sizes.

Measured on the shared 2-core CPU (1 torch thread, another job busy on the other core; AdamW
steps, fp32): ``urbanclip-tiny`` 334 samples/s with a corpus-restricted vocabulary, 12.7 with the
full 49,408-token LM head; ``urbanclip-cpu`` 44 samples/s restricted (800 pairs x 10 epochs ~ 3 min),
9.2 full-vocab; ``coca-cpu`` 11 samples/s. bf16 autocast on this CPU was slower than fp32 (tiny:
80 vs 334 samples/s). Hence the book should pass ``vocab=Vocab.from_tokenized(...)`` to
``create_model``: the LM head otherwise dominates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
FULL_VOCAB_SIZE = 49408  # open_clip SimpleTokenizer BPE vocabulary (incl. <start>/<end>)


@dataclass
class VisionConfig:
    """ViT image encoder (open_clip ``VisionTransformer``)."""

    image_size: int = 64  # input tile side in pixels
    patch_size: int = 8  # §3.2: the paper uses 16x16 patches at 224 px
    width: int = 128  # token width
    layers: int = 4  # transformer blocks
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden = mlp_ratio * width


@dataclass
class TextConfig:
    """Causal text decoder, split into a unimodal and a multimodal (cross-attending) half."""

    width: int = 128  # token width
    heads: int = 4  # attention heads
    unimodal_layers: int = 2  # first half: text-only, gives the contrastive [CLS] embedding
    multimodal_layers: int = 2  # second half: cross-attends to image tokens, feeds the LM head
    mlp_ratio: float = 4.0  # MLP hidden = mlp_ratio * width


@dataclass
class UrbanCLIPConfig:
    """Whole-model configuration; every field has a default so a JSON may name only what differs."""

    variant: str = "urbanclip"  # "urbanclip" (ours over open_clip blocks) | "coca" (open_clip's CoCa)
    embed_dim: int = 128  # contrastive embedding size
    context_length: int = 48  # tokenized caption length incl. <start>/<end> and padding
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    vocab_size: int = FULL_VOCAB_SIZE  # LM head / embedding rows; len(Vocab) when restricted
    contrastive_pooler: str = "cls_query"  # "cls_query" = Eq. 5 as written | "learned" = open_clip
    multimodal_pooler: str = "sequence_query"  # "sequence_query" = §3.2 "overall sequence as query" | "learned"
    pooler_queries: int = 16  # learned queries when multimodal_pooler == "learned"
    pooler_heads: int = 0  # heads of the poolers; 0 = same as the vision tower
    lambda_con: float = 1.0  # Eq. 7 weight of the contrastive loss
    lambda_lm: float = 2.0  # Eq. 7 weight of the LM loss (CoCa's default 2:1; the paper gives no value)
    init_temperature: float = 0.07  # learnable softmax temperature, CLIP's initial value
    pretrained: str = ""  # opt-in: open_clip pretrained tag (coca) or a local .safetensors path

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (nested dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> UrbanCLIPConfig:
        """Build from a (possibly partial) dict; unknown keys raise an error naming ``source``."""
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{source}: unknown config field(s) {sorted(unknown)}; known: {sorted(known)}")
        try:
            vision = VisionConfig(**d.pop("vision", {}))
            text = TextConfig(**d.pop("text", {}))
        except TypeError as e:
            raise ValueError(f"{source}: bad vision/text field: {e}") from e
        return cls(vision=vision, text=text, **d)


def list_models() -> list[str]:
    """Names of the JSON configs shipped in ``urbanlib/models/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_config(name: str, **overrides: Any) -> UrbanCLIPConfig:
    """Load the named config and apply overrides (``vision``/``text`` may be partial dicts)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    cfg = UrbanCLIPConfig.from_dict(json.loads(path.read_text()), source=str(path))
    for key in ("vision", "text"):
        if key in overrides:
            sub = overrides.pop(key)
            sub = asdict(sub) if not isinstance(sub, dict) else sub
            overrides[key] = replace(getattr(cfg, key), **sub)
    unknown = set(overrides) - {f.name for f in fields(cfg)}
    if unknown:
        raise ValueError(f"create_model({name!r}): unknown override(s) {sorted(unknown)}")
    return replace(cfg, **overrides)
