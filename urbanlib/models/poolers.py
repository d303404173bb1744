"""Task-specific attentional poolers over the image tokens (§3.2-3.3).

Two poolers share the ViT backbone: one for the coarse contrastive alignment, one feeding the
multimodal decoder. The paper's defaults (ours):

* contrastive, ``"cls_query"``: Eq. 5, ``e_pool = MeanPool(Softmax(e_q E_k^T) E_v)`` with the image
  [CLS] token as the query ``e_q`` and all tokens as keys/values; mean-pooling runs over the
  query axis (a single query, so it is the attended vector itself).
* multimodal, ``"sequence_query"``: "the overall sequence as the query" — every image token
  queries all tokens, giving a sequence of the same length for the decoder to cross-attend.

Option ``"learned"`` for either: open_clip's ``AttentionalPooler`` with learned queries (CoCa's
choice: 1 query for contrastive, ``n_queries`` for the decoder).

Both run their attention through :class:`~urbanlib.models.blocks.Attention` (packed k/v projection,
``scaled_dot_product_attention`` on strided views) over the parameters of the
``nn.MultiheadAttention`` they were built with, so ``state_dict`` keys are open_clip's.
"""

from __future__ import annotations

import torch
from open_clip.transformer import AttentionalPooler, LayerNorm
from torch import nn

from .blocks import Attention

POOLER_KINDS = ("cls_query", "sequence_query", "learned")


class ImagePooler(nn.Module):
    """Multi-head attention pooling of image tokens, then a linear map to ``out_dim``.

    Args:
        kind: ``"cls_query"``, ``"sequence_query"`` or ``"learned"`` (see module docstring).
        width: image token width.
        out_dim: output width (contrastive embed dim, or the text decoder width).
        heads: attention heads.
        n_queries: learned queries (``"learned"`` only).
        mean_pool: average the pooled queries into one vector (the contrastive pooler).
    """

    def __init__(self, kind: str, width: int, out_dim: int, heads: int, n_queries: int = 1, mean_pool: bool = False):
        super().__init__()
        if kind not in POOLER_KINDS:
            raise ValueError(f"pooler kind must be one of {POOLER_KINDS}, got {kind!r}")
        self.kind, self.mean_pool = kind, mean_pool
        if kind == "learned":
            self.pool = AttentionalPooler(width, width, n_head=heads, n_queries=n_queries)
            self.pool.attn = Attention.from_mha(self.pool.attn)
        else:
            self.ln_q, self.ln_k = LayerNorm(width), LayerNorm(width)
            self.attn = Attention.from_mha(nn.MultiheadAttention(width, heads, batch_first=True))
        self.proj = nn.Linear(width, out_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pool ``tokens`` (B, 1+N, width), [CLS] first -> (B, Q, out_dim) or (B, out_dim) if mean_pool."""
        if self.kind == "learned":
            q = self.pool.ln_q(self.pool.query)  # (Q, width)
            out = self.pool.attn(q.expand(tokens.shape[0], -1, -1), context=self.pool.ln_k(tokens))  # (B, Q, width)
        else:
            q = tokens[:, :1] if self.kind == "cls_query" else tokens  # (B, 1 or 1+N, width)
            out = self.attn(self.ln_q(q), context=self.ln_k(tokens))  # (B, Q, width)
        if self.mean_pool:
            out = out.mean(dim=1)  # (B, width)
        return self.proj(out)
