"""Transformer blocks with open_clip's parameter layout and a faster forward pass.

open_clip's towers (``VisionTransformer``, ``TextTransformer``, ``MultimodalTransformer``) run every
attention through ``nn.MultiheadAttention``: batch-first inputs are transposed to sequence-first and
back, the causal mask is a float ``(L, L)`` table added to every score (so PyTorch never takes its
``is_causal`` path), and CoCa-style text towers build a ``(B*heads, L, L)`` float mask per batch. The
blocks here keep the same parameters under the same names (``ln_1``, ``attn.in_proj_weight``,
``attn.in_proj_bias``, ``attn.out_proj``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``, ``ln_1_kv``), so
state dicts, open_clip ``pretrained=`` weights and existing checkpoints load unchanged, while the
forward pass

* projects q, k, v with one packed matmul and hands strided ``(B, heads, L, head_dim)`` views
  straight to :func:`torch.nn.functional.scaled_dot_product_attention` (no transposes to
  sequence-first, no ``.contiguous()`` copies before the kernel);
* passes ``is_causal=True`` instead of a float mask, or a small boolean ``(B, 1, L, L)`` mask
  where padding must be hidden (broadcast over heads, never repeated per head).

:func:`convert` swaps an open_clip module's blocks for these in place, *sharing* the parameter
tensors, so a model built by open_clip (random init with its RNG draws, or pretrained) keeps its
exact weights. Numerics equal open_clip's blocks within float rounding (tests: forward and
gradients, atol 1e-5 in fp32).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Attention", "ResidualBlock", "Transformer", "convert", "causal_padding_mask"]


class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter names (batch first).

    Args:
        width: model width (query, key and value share it, like open_clip's blocks).
        heads: attention heads; ``width`` must divide evenly.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.embed_dim, self.num_heads, self.head_dim = width, heads, width // heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's init
        nn.init.zeros_(self.out_proj.bias)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> Attention:
        """Wrap an ``nn.MultiheadAttention``'s parameters (shared, not copied)."""
        if not isinstance(mha, nn.MultiheadAttention) or not mha._qkv_same_embed_dim or mha.in_proj_bias is None \
                or not mha.batch_first:
            raise TypeError("only batch-first nn.MultiheadAttention with packed, biased q/k/v can be converted")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.embed_dim, new.num_heads, new.head_dim = mha.embed_dim, mha.num_heads, mha.head_dim
        new.in_proj_weight, new.in_proj_bias, new.out_proj = mha.in_proj_weight, mha.in_proj_bias, mha.out_proj
        return new

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        causal: bool = False,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` to itself, or to ``context`` (cross-attention).

        Args:
            x: (B, T, C) queries (and keys/values without ``context``).
            context: (B, S, C) keys/values, already normalised.
            causal: token t sees tokens <= t (self-attention only).
            mask: boolean (B or 1, 1, T, S), True = may attend; or additive float of that shape.
        """
        b, t, c = x.shape
        h, d = self.num_heads, self.head_dim
        if context is None:
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3C)
            q, k, v = qkv.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, T, d)
        else:
            s = context.shape[1]
            q = F.linear(x, self.in_proj_weight[:c], self.in_proj_bias[:c]).view(b, t, h, d).transpose(1, 2)
            kv = F.linear(context, self.in_proj_weight[c:], self.in_proj_bias[c:])  # (B, S, 2C)
            k, v = kv.view(b, s, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, heads, S, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))  # (B, T, C)


class ResidualBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``.

    With ``cross=True`` the attention reads its keys/values from ``ln_1_kv(context)`` (open_clip's
    cross-attention block of ``MultimodalTransformer``).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, cross: bool = False):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        if cross:
            self.ln_1_kv = nn.LayerNorm(width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(hidden, width))]))

    @classmethod
    def from_open_clip(cls, block: nn.Module) -> ResidualBlock:
        """Wrap an open_clip ``ResidualAttentionBlock`` (same parameter objects)."""
        if not isinstance(block.ls_1, nn.Identity) or not isinstance(block.ls_2, nn.Identity):
            raise TypeError("blocks with LayerScale are not supported")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.ln_1 = block.ln_1
        new.attn = Attention.from_mha(block.attn)
        if hasattr(block, "ln_1_kv"):
            new.ln_1_kv = block.ln_1_kv
        new.ln_2, new.mlp = block.ln_2, block.mlp
        return new

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        causal: bool = False,
        mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C). ``attn_mask`` is open_clip's additive (T, T) or (B*heads, T, T) form."""
        if attn_mask is not None:  # open_clip's calling convention: keep it working (slower)
            mask = attn_mask.reshape(-1, self.attn.num_heads, *attn_mask.shape[-2:]) if attn_mask.ndim == 3 \
                else attn_mask
        kv = self.ln_1_kv(context) if context is not None else None
        x = x + self.attn(self.ln_1(x), kv, causal=causal, mask=mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of :class:`ResidualBlock` under open_clip's ``resblocks`` name."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.width, self.layers, self.grad_checkpointing = width, layers, False
        self.resblocks = nn.ModuleList([ResidualBlock(width, heads, mlp_ratio) for _ in range(layers)])

    @classmethod
    def from_open_clip(cls, transformer: nn.Module) -> Transformer:
        """Wrap an open_clip ``Transformer`` (same parameter objects)."""
        if not getattr(transformer, "batch_first", True):
            raise TypeError("only batch-first open_clip transformers can be converted")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.width, new.layers, new.grad_checkpointing = transformer.width, transformer.layers, False
        new.resblocks = nn.ModuleList([ResidualBlock.from_open_clip(b) for b in transformer.resblocks])
        return new

    def get_cast_dtype(self) -> torch.dtype:
        """Weight dtype (open_clip API)."""
        return self.resblocks[0].mlp.c_fc.weight.dtype

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        causal: bool = False,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); ``attn_mask`` is open_clip's additive mask (its callers pass it)."""
        for block in self.resblocks:
            x = block(x, causal=causal, mask=mask, attn_mask=attn_mask)
        return x


def causal_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """Boolean (B, 1, L, L) mask: query i may see key j iff j <= i and ``valid[:, j]``.

    Args:
        valid: (B, L) bool, False at padded keys.
    """
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril_()  # (L, L)
    return (causal & valid[:, None, :]).unsqueeze(1)  # (B, 1, L, L)


def convert(module: nn.Module) -> nn.Module:
    """Swap every open_clip ``Transformer`` inside ``module`` for a :class:`Transformer`, in place.

    Parameters are shared, not copied, so weights, ``state_dict`` keys and optimizer references are
    unchanged. ``MultimodalTransformer`` (a ``Transformer`` subclass with cross-attention) is left to
    :class:`urbanlib.models.towers.Decoder`; transformers with blocks this module does not cover
    (LayerScale, open_clip's custom blocks) stay as they are. Returns ``module``.
    """
    from open_clip.transformer import MultimodalTransformer
    from open_clip.transformer import Transformer as OpenClipTransformer

    for name, child in list(module.named_children()):
        if isinstance(child, OpenClipTransformer) and not isinstance(child, MultimodalTransformer):
            try:
                setattr(module, name, Transformer.from_open_clip(child))
            except TypeError:  # unsupported block type: keep open_clip's (correct, just not faster)
                pass
        else:
            convert(child)
    return module
