"""open_clip's own CoCa wrapped to UrbanCLIP's forward/encode protocol (variant ``"coca"``).

Real differences from :class:`~urbanlib.models.urbanclip.UrbanCLIP`: CoCa pools the image with
learned queries (one for the contrastive embedding, ``pooler_queries`` for the decoder) in
open_clip's "original" arrangement (pooler before the final LayerNorm, the contrastive embedding
is the first of the pooled queries); it has no Eq. 5 [CLS]-query pooler; its LM head always spans
the full 49,408-token vocabulary; and ``generate`` is open_clip's (needs ``transformers``).

open_clip 3.3.0 never initialises ``text_decoder.text_projection`` (the LM head) when
``pretrained`` is unset — it is raw ``torch.empty`` memory (seen: values up to 1e37 and NaN). We
initialise it explicitly as open_clip intended (normal, std = width**-0.5).
"""

from __future__ import annotations

import open_clip
import torch
from open_clip.coca_model import CoCa
from torch import nn

from .config import FULL_VOCAB_SIZE, UrbanCLIPConfig
from .losses import urbanclip_loss
from .urbanclip import mean_patch_features
from .vocab import PAD_ID


def _coca_from_config(cfg: UrbanCLIPConfig) -> CoCa:
    v, t = cfg.vision, cfg.text
    if cfg.embed_dim != t.width:
        raise ValueError(f"coca: open_clip's CoCa needs embed_dim == text.width (got {cfg.embed_dim} vs {t.width})")
    n_text = cfg.context_length  # open_clip 3.3 feeds the whole caption, then drops the last position
    return CoCa(
        embed_dim=cfg.embed_dim,
        vision_cfg={"image_size": v.image_size, "patch_size": v.patch_size, "width": v.width, "layers": v.layers,
                    "head_width": v.width // v.heads, "mlp_ratio": v.mlp_ratio, "attentional_pool": True,
                    "attn_pooler_heads": cfg.pooler_heads or v.heads, "attn_pooler_queries": cfg.pooler_queries,
                    "output_tokens": True},
        text_cfg={"context_length": n_text, "vocab_size": FULL_VOCAB_SIZE, "width": t.width, "heads": t.heads,
                  "layers": t.unimodal_layers, "mlp_ratio": t.mlp_ratio, "embed_cls": True, "output_tokens": True},
        multimodal_cfg={"context_length": n_text, "vocab_size": FULL_VOCAB_SIZE, "width": t.width,
                        "heads": t.heads, "layers": t.multimodal_layers, "mlp_ratio": t.mlp_ratio},
    )


class OpenClipCoCa(nn.Module):
    """open_clip ``CoCa`` with UrbanCLIP's ``forward(batch)`` / ``encode_*`` methods.

    Args:
        cfg: sizes (``vision``/``text``/``embed_dim``/``context_length``) used when ``open_clip_name`` is empty.
        open_clip_name: build a named open_clip config instead, e.g. ``"coca_ViT-B-32"``.
        pretrained: opt-in open_clip pretrained tag (downloads; not used by tests or the book).
    """

    def __init__(self, cfg: UrbanCLIPConfig, open_clip_name: str = "", pretrained: str | None = None):
        super().__init__()
        self.cfg = cfg
        if open_clip_name:
            self.model = open_clip.create_model(open_clip_name, pretrained=pretrained or None)
        else:
            self.model = _coca_from_config(cfg)
        if not pretrained:
            head = self.model.text_decoder.text_projection
            nn.init.normal_(head, std=head.shape[0] ** -0.5)

    @property
    def visual(self) -> nn.Module:
        """The ViT (open_clip ``VisionTransformer``)."""
        return self.model.visual

    def encode_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Downstream representation (B, width_v): mean of final ViT patch tokens, before any pooler."""
        return mean_patch_features(self.model.visual, images)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Contrastive image embedding (B, embed_dim)."""
        return self.model.encode_image(images, normalize=normalize)

    def encode_text(self, text: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Contrastive text embedding (B, embed_dim); ``text`` (B, L) tokenizer ids."""
        return self.model.encode_text(text, normalize=normalize)

    def forward_features(self, images: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """Same keys as :meth:`UrbanCLIP.forward_features`."""
        out = self.model(images, text)
        return {"image_emb": out["image_features"], "text_emb": out["text_features"], "logits": out["logits"],
                "labels": out["labels"], "logit_scale": out["logit_scale"].clamp(max=100.0)}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Trainer protocol, Eq. 7 loss terms."""
        out = self.forward_features(batch["image"], batch["text"])
        return urbanclip_loss(out["image_emb"], out["text_emb"], out["logit_scale"], out["logits"], out["labels"],
                              self.cfg.lambda_con, self.cfg.lambda_lm, pad_id=PAD_ID)

    def generate(self, images: torch.Tensor, **kwargs) -> torch.Tensor:
        """open_clip's CoCa generation (``generation_type="beam_search"|"top_k"|"top_p"``)."""
        return self.model.generate(images, **kwargs)
