"""Text tower, multimodal decoder and CLIP encoders over :mod:`urbanlib.models.blocks`.

Each class adopts the parameters of the open_clip module it replaces (``from_open_clip``), keeps
its attribute names and therefore its ``state_dict`` keys, and only changes the forward pass:

* :class:`TextTower` (open_clip ``TextTransformer`` with an appended [CLS], CoCa style): one
  boolean ``(B, 1, L+1, L+1)`` causal-and-padding mask per batch instead of open_clip's float
  ``(B*heads, L+1, L+1)`` table built with ``repeat_interleave``;
* :class:`Decoder` (open_clip ``MultimodalTransformer``): ``is_causal`` self-attention, packed
  k/v projection of the image context in the cross-attention;
* :func:`encode_text` / :func:`encode_image` for an open_clip ``CLIP`` whose transformers were
  converted by :func:`urbanlib.models.blocks.convert`: ``is_causal`` attention, sequences cut after
  the batch's last end token (causal attention: later positions cannot change the pooled one), and
  ``ln_final`` applied to the pooled token only (LayerNorm is per token).

The models build the open_clip modules first (so random init draws the same numbers as before
this module existed) and then wrap them; nothing is copied.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ResidualBlock, Transformer, causal_padding_mask

__all__ = ["Decoder", "TextTower", "encode_image", "encode_text", "is_fast_clip"]


def _adopt(new: nn.Module, old: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        setattr(new, name, getattr(old, name))


class TextTower(nn.Module):
    """Causal text encoder with an appended [CLS] token (open_clip ``TextTransformer``, ``embed_cls``).

    ``forward(ids)`` returns ``(pooled (B, output_dim), tokens (B, L, width))`` like open_clip's with
    ``output_tokens=True``: the [CLS] output after ``ln_final`` and projection, and the text tokens
    before ``ln_final``. The [CLS] query and padded queries never see padded keys (``correct_cls_mask``).
    """

    @classmethod
    def from_open_clip(cls, text: nn.Module) -> TextTower:
        """Wrap an open_clip ``TextTransformer`` built with ``embed_cls=True, correct_cls_mask=True``."""
        if text.cls_emb is None or not text.correct_cls_mask or text.attn_mask is None:
            raise TypeError("TextTower needs a causal TextTransformer with embed_cls and correct_cls_mask")
        if text.text_projection is not None and not isinstance(text.text_projection, nn.Parameter):
            raise TypeError("TextTower supports a bias-free text_projection parameter only")
        new = cls()
        _adopt(new, text, ("token_embedding", "cls_emb", "positional_embedding", "ln_final", "text_projection",
                           "pad_id", "context_length", "num_pos", "vocab_size", "width", "output_dim", "heads"))
        new.transformer = Transformer.from_open_clip(text.transformer)
        return new

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids`` (B, L) model ids -> ``(pooled (B, D), tokens (B, L, width))``."""
        b, n = ids.shape
        x = self.token_embedding(ids)  # (B, L, width)
        x = torch.cat([x, self.cls_emb.view(1, 1, -1).expand(b, 1, -1)], dim=1)  # (B, L+1, width)
        x = x + self.positional_embedding[: n + 1]
        valid = torch.cat([ids != self.pad_id, ids.new_ones(b, 1, dtype=torch.bool)], dim=1)  # (B, L+1)
        x = self.transformer(x, mask=causal_padding_mask(valid))
        pooled = self.ln_final(x[:, -1])  # (B, width): the [CLS] token
        if self.text_projection is not None:
            pooled = pooled @ self.text_projection
        return pooled, x[:, :-1]


class Decoder(nn.Module):
    """Multimodal text decoder (open_clip ``MultimodalTransformer``).

    Per layer: causal self-attention, then cross-attention to the image context; ``ln_final`` and
    the LM head last.
    """

    @classmethod
    def from_open_clip(cls, decoder: nn.Module) -> Decoder:
        """Wrap an open_clip ``MultimodalTransformer`` (batch first)."""
        if not decoder.batch_first:
            raise TypeError("Decoder needs a batch-first MultimodalTransformer")
        new = cls()
        _adopt(new, decoder, ("ln_final", "text_projection", "context_length", "width", "layers"))
        new.grad_checkpointing = False
        new.resblocks = nn.ModuleList([ResidualBlock.from_open_clip(b) for b in decoder.resblocks])
        new.cross_attn = nn.ModuleList([ResidualBlock.from_open_clip(b) for b in decoder.cross_attn])
        return new

    def forward(self, image_embs: torch.Tensor, text_embs: torch.Tensor) -> torch.Tensor:
        """``image_embs`` (B, S, width), ``text_embs`` (B, T, width) -> logits (B, T, output_dim)."""
        x = text_embs
        for block, cross in zip(self.resblocks, self.cross_attn, strict=True):
            x = block(x, causal=True)
            x = cross(x, context=image_embs)
        x = self.ln_final(x)
        return x @ self.text_projection if self.text_projection is not None else x


def is_fast_clip(clip: nn.Module) -> bool:
    """True when ``clip`` is an open_clip CLIP whose towers were converted (:func:`blocks.convert`)."""
    return isinstance(getattr(clip, "transformer", None), Transformer) and isinstance(
        getattr(getattr(clip, "visual", None), "transformer", None), Transformer)


def encode_text(clip: nn.Module, text: torch.Tensor) -> torch.Tensor:
    """``clip.encode_text(text)`` (unnormalised, (B, D)) for a converted open_clip CLIP.

    Equal to open_clip's result within float rounding; falls back to it for towers this does not
    cover (other pooling types, projection layers, unconverted transformers).
    """
    pool = getattr(clip, "text_pool_type", "argmax")
    proj = getattr(clip, "text_projection", None)
    if pool != "argmax" or not isinstance(clip.transformer, Transformer) or isinstance(proj, nn.Module):
        return clip.encode_text(text)
    b = text.shape[0]
    eot = text.argmax(dim=-1)  # (B,) end token = highest id (open_clip's argmax pooling)
    n = int(eot.max()) + 1  # causal: positions after the last end token cannot reach any pooled one
    x = clip.token_embedding(text[:, :n]) + clip.positional_embedding[:n]  # (B, n, width)
    x = clip.transformer(x, causal=True)
    x = clip.ln_final(x[torch.arange(b, device=x.device), eot])  # (B, width)
    return x @ proj if proj is not None else x


def encode_image(clip: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """``clip.encode_image(image)`` (unnormalised); the converted ViT already runs the fast blocks."""
    return clip.visual(image)
