"""UrbanCLIP (WWW'24, §3): a ViT image encoder and a causal text decoder split in two halves.

The first (unimodal) half of the decoder reads the caption alone and yields the contrastive text
embedding from an appended text [CLS] token; the second (multimodal) half cross-attends to pooled
image tokens and predicts the next token. Built from open_clip blocks (``VisionTransformer``,
``TextTransformer``, ``MultimodalTransformer``); the poolers are in :mod:`urbanlib.models.poolers`.

Cross-attention direction: text tokens are the queries and image tokens the keys/values, as in
CoCa, which the paper cites and whose decoder must produce one output per text token to predict
captions. §3.3 says the opposite ("uses the visual modality as a query and the textual modality as
key and value"); read literally the decoder would emit image-length outputs and could not model
language, so we treat that sentence as a slip.

Differences from open_clip's CoCa (variant ``"coca"``, :mod:`urbanlib.models.coca`):
the contrastive image embedding here is Eq. 5 (image [CLS] token queries all tokens, mean-pooled)
rather than one learned query; the decoder's image context is the whole token sequence re-attended
by itself (§3.2 "overall sequence as the query") rather than 256 learned queries; the LM head can be
restricted to the corpus vocabulary; the LM head is initialised (open_clip leaves it as
uninitialised memory).

Speed: the open_clip towers are built first (same random init as open_clip) and then wrapped by
:mod:`urbanlib.models.blocks` / :mod:`urbanlib.models.towers`, which keep their parameters and
``state_dict`` keys and run ``scaled_dot_product_attention`` with ``is_causal`` or one boolean mask
per batch (outputs equal open_clip's forward within float rounding; tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.transformer import MultimodalTransformer, TextTransformer, VisionTransformer
from torch import nn

from .blocks import convert
from .config import UrbanCLIPConfig
from .losses import urbanclip_loss
from .poolers import ImagePooler
from .towers import Decoder, TextTower
from .vocab import PAD_ID, Vocab


def vit_token_features(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Final ViT block output for all tokens, before any norm or pooler: (B, 1+N, width), [CLS] first."""
    return visual.transformer(visual._embeds(images))


def mean_patch_features(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """The downstream representation shared by every variant: patch tokens of the final ViT block, averaged.

    Computed without gradients (the encoder is frozen downstream, §3.4). Shape (B, width).
    """
    with torch.no_grad():
        return vit_token_features(visual, images)[:, 1:].mean(dim=1)  # (B, width)


class UrbanCLIP(nn.Module):
    """UrbanCLIP image-text model following the trainer protocol (``forward(batch) -> loss dict``).

    Args:
        cfg: architecture; defaults are Eq. 5's [CLS]-query contrastive pooler and the
            sequence-query multimodal pooler (``"learned"`` selects open_clip's pooler).
        vocab: optional :class:`Vocab`; when given the embedding and LM head hold only its tokens
            (``cfg.vocab_size`` is set to ``len(vocab)``). Batches always carry tokenizer ids.
    """

    def __init__(self, cfg: UrbanCLIPConfig, vocab: Vocab | None = None):
        super().__init__()
        if vocab is not None:
            cfg = UrbanCLIPConfig.from_dict({**cfg.to_dict(), "vocab_size": len(vocab)})
        self.cfg, v, t = cfg, cfg.vision, cfg.text
        heads = cfg.pooler_heads or v.heads
        self.visual = VisionTransformer(
            image_size=v.image_size, patch_size=v.patch_size, width=v.width, layers=v.layers,
            heads=v.heads, mlp_ratio=v.mlp_ratio, output_dim=cfg.embed_dim)
        self.visual.proj = None  # the poolers below replace the [CLS] projection
        convert(self.visual)  # fast blocks over the same parameters
        n_text = cfg.context_length - 1  # inputs are tokens[:-1], targets tokens[1:]
        self.text = TextTower.from_open_clip(TextTransformer(
            context_length=n_text, vocab_size=cfg.vocab_size, width=t.width, heads=t.heads,
            layers=t.unimodal_layers, mlp_ratio=t.mlp_ratio, output_dim=cfg.embed_dim, embed_cls=True,
            output_tokens=True, pad_id=PAD_ID, correct_cls_mask=True))
        self.decoder = Decoder.from_open_clip(MultimodalTransformer(
            width=t.width, layers=t.multimodal_layers, heads=t.heads, context_length=n_text,
            mlp_ratio=t.mlp_ratio, output_dim=cfg.vocab_size))
        nn.init.normal_(self.decoder.text_projection, std=t.width ** -0.5)  # open_clip leaves it empty
        self.contrastive_pooler = ImagePooler(cfg.contrastive_pooler, v.width, cfg.embed_dim, heads, 1, mean_pool=True)
        self.multimodal_pooler = ImagePooler(cfg.multimodal_pooler, v.width, t.width, heads, cfg.pooler_queries)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        if vocab is not None:  # buffers, so checkpoints carry the id map
            self.register_buffer("full_to_compact", vocab.full_to_compact.clone())
            self.register_buffer("kept_ids", vocab.kept_ids.clone())
        else:
            self.full_to_compact = self.kept_ids = None

    # ---- id spaces -------------------------------------------------------------------------
    def to_model_ids(self, text: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids -> the model's (possibly compact) ids."""
        return text if self.full_to_compact is None else self.full_to_compact[text]

    def to_tokenizer_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Model ids -> tokenizer ids."""
        return ids if self.kept_ids is None else self.kept_ids[ids]

    # ---- encoders --------------------------------------------------------------------------
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised ViT tokens (B, 1+N, width_v) that both poolers read."""
        return self.visual.ln_post(vit_token_features(self.visual, images))

    def encode_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Downstream representation (B, width_v): mean of final ViT patch tokens, before any pooler."""
        return mean_patch_features(self.visual, images)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Contrastive image embedding (B, embed_dim) from the Eq. 5 pooler."""
        emb = self.contrastive_pooler(self.image_tokens(images))
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, text: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Contrastive text embedding (B, embed_dim) at the text [CLS] token; ``text`` in tokenizer ids (B, L)."""
        emb, _ = self.text(self.to_model_ids(text)[:, :-1])
        return F.normalize(emb, dim=-1) if normalize else emb

    def decode(self, image_context: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, vocab_size) for model ids (B, T) given pooled image context."""
        _, tokens = self.text(ids)  # (B, T, width_t), causal, [CLS] dropped
        return self.decoder(image_context, tokens)

    def forward_features(self, images: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embeddings and LM logits; ``text`` (B, L) tokenizer ids.

        Returns:
            ``image_emb``/``text_emb`` (B, D) normalised, ``logits`` (B, L-1, V), ``labels`` (B, L-1)
            in model ids, ``logit_scale`` (scalar, exponentiated and clamped to 100).
        """
        ids = self.to_model_ids(text)
        inputs, labels = ids[:, :-1], ids[:, 1:]  # (B, L-1) each
        tokens = self.image_tokens(images)  # (B, 1+N, width_v)
        image_emb = F.normalize(self.contrastive_pooler(tokens), dim=-1)
        text_emb, text_tokens = self.text(inputs)
        logits = self.decoder(self.multimodal_pooler(tokens), text_tokens)  # (B, L-1, V)
        return {"image_emb": image_emb, "text_emb": F.normalize(text_emb, dim=-1), "logits": logits,
                "labels": labels, "logit_scale": self.logit_scale.exp().clamp(max=100.0)}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Trainer protocol: ``batch["image"]`` (B,3,H,W), ``batch["text"]`` (B,L) -> Eq. 7 loss terms."""
        out = self.forward_features(batch["image"], batch["text"])
        return urbanclip_loss(out["image_emb"], out["text_emb"], out["logit_scale"], out["logits"], out["labels"],
                              self.cfg.lambda_con, self.cfg.lambda_lm, pad_id=PAD_ID)
