"""Information-Preserved Stretching Interpolation (IPSI), UrbanLN Eq. (2).

CLIP's text encoder has 77 learned positions. UrbanLN captions run past 100 words, so the positional
table is stretched: the first ``keep`` (=20) rows, which the paper (after Long-CLIP) treats as
well-trained absolute positions, are copied bit for bit; the remaining ``L - keep`` rows are stretched
by ``ratio`` (λ = 4) with linear interpolation. New position ``keep + ratio*i + k`` is

    ((ratio - k) / ratio) * old[keep + i] + (k / ratio) * old[keep + i + 1]

and the last ``ratio`` positions, which have no right neighbour, continue the last segment linearly:
``old[L-1] + k * (old[L-1] - old[L-2]) / ratio``. With L = 77, keep = 20, ratio = 4 the table grows to
77*4 - 3*20 = 248 positions.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

__all__ = [
    "KeepFirstRows",
    "causal_mask",
    "stretch_clip",
    "stretch_positional_embedding",
    "stretched_length",
    "stretched_tokenizer",
]


def stretched_length(length: int, keep: int = 20, ratio: int = 4) -> int:
    """Number of positions after stretching: ``length * ratio - (ratio - 1) * keep`` (77 -> 248)."""
    if not 0 <= keep < length - 1:
        raise ValueError(f"keep={keep} must lie in [0, length-2] for a table of length {length}")
    if ratio < 1:
        raise ValueError(f"ratio={ratio} must be a positive integer")
    return length * ratio - (ratio - 1) * keep


def stretch_positional_embedding(pos_emb: torch.Tensor, keep: int = 20, ratio: int = 4) -> torch.Tensor:
    """Stretch a positional-embedding table with IPSI (UrbanLN Eq. 2).

    Args:
        pos_emb: (L, D) learned positional embeddings.
        keep: leading rows copied unchanged.
        ratio: interpolation ratio λ for the remaining ``L - keep`` rows.

    Returns:
        (L * ratio - (ratio - 1) * keep, D) tensor, same dtype and device; rows ``< keep`` are
        bit-identical to the input.
    """
    if pos_emb.ndim != 2:
        raise ValueError(f"pos_emb must be (L, D), got shape {tuple(pos_emb.shape)}")
    length = pos_emb.shape[0]
    n_new = stretched_length(length, keep, ratio)
    old = pos_emb.detach().to(torch.float64)
    # Fractional source position of every stretched tail row: keep + j / ratio.
    j = torch.arange((length - keep) * ratio, dtype=torch.float64, device=pos_emb.device)
    src = keep + j / ratio  # (n_tail,)
    lo = src.floor().long().clamp(max=length - 2)  # last segment reused -> linear extrapolation
    w = (src - lo.to(torch.float64)).unsqueeze(1)  # (n_tail, 1); in [0, 1) except the extrapolated tail
    tail = (1.0 - w) * old[lo] + w * old[lo + 1]  # (n_tail, D)
    out = torch.cat([pos_emb.detach()[:keep], tail.to(pos_emb.dtype)], dim=0)  # (n_new, D)
    assert out.shape[0] == n_new
    return out


def causal_mask(length: int) -> torch.Tensor:
    """Additive causal attention mask (length, length): 0 on and below the diagonal, -inf above."""
    return torch.full((length, length), float("-inf")).triu_(1)


class KeepFirstRows(nn.Module):
    """Parametrization that pins the first rows of a table to frozen values.

    Registered on ``positional_embedding`` with ``torch.nn.utils.parametrize``: the model sees
    ``cat(kept, original[keep:])``. The kept rows live in a buffer (saved in ``state_dict``) so no
    optimizer, weight decay or gradient can move them, while the stretched rows train normally.
    """

    def __init__(self, kept: torch.Tensor):
        """Store the frozen leading rows, shape (keep, D)."""
        super().__init__()
        self.register_buffer("kept", kept.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` (L, D) with its first ``keep`` rows replaced by the frozen ones."""
        return torch.cat([self.kept.to(x.dtype), x[self.kept.shape[0] :]], dim=0)  # (L, D)


def _text_tower(model: nn.Module) -> nn.Module:
    """The module that owns the text positional embedding (CLIP keeps it on the model itself)."""
    if "positional_embedding" in dict(model.named_parameters(recurse=False)) or parametrize.is_parametrized(
        model, "positional_embedding"
    ):
        return model
    text = getattr(model, "text", None)
    if text is not None and hasattr(text, "positional_embedding"):
        return text  # open_clip CustomTextCLIP / CoCa keep a TextTransformer under .text
    raise TypeError(f"{type(model).__name__} has no text positional_embedding to stretch")


def stretch_clip(model: nn.Module, keep: int = 20, ratio: int = 4, freeze_kept: bool = False) -> nn.Module:
    """Apply IPSI to an open_clip CLIP in place and return it.

    Replaces the text ``positional_embedding`` by its stretched version, rebuilds the causal
    ``attn_mask`` buffer and sets ``context_length`` (77 -> 248 by default). Works on any open_clip
    CLIP, pretrained or randomly initialised.

    Args:
        model: ``open_clip.CLIP`` (or a model with a ``.text`` TextTransformer).
        keep: leading positions preserved unchanged (paper: 20).
        ratio: interpolation ratio λ (paper: 4).
        freeze_kept: if True the first ``keep`` positions stay frozen during training (a
            :class:`KeepFirstRows` parametrization) while the stretched positions train.

    Returns:
        The same model object, stretched, with ``model.ipsi_config`` recording what was done.
    """
    tower = _text_tower(model)
    if parametrize.is_parametrized(tower, "positional_embedding"):
        raise ValueError("positional_embedding is already parametrized (was stretch_clip applied twice?)")
    old = tower.positional_embedding
    new = stretch_positional_embedding(old, keep=keep, ratio=ratio)
    n_new = new.shape[0]
    tower.positional_embedding = nn.Parameter(new.clone(), requires_grad=old.requires_grad)
    if freeze_kept:
        parametrize.register_parametrization(tower, "positional_embedding", KeepFirstRows(new[:keep]))
    persistent = "attn_mask" in tower.state_dict()
    tower.register_buffer("attn_mask", causal_mask(n_new).to(old.device), persistent=persistent)
    for owner in {id(model): model, id(tower): tower}.values():
        for name in ("context_length", "num_pos"):
            if hasattr(owner, name):
                setattr(owner, name, n_new)
    model.ipsi_config = {
        "keep": keep,
        "ratio": ratio,
        "original_length": old.shape[0],
        "freeze_kept": freeze_kept,
    }
    return model


def stretched_tokenizer(context_length: int = 248):
    """open_clip's CLIP BPE tokenizer producing ``context_length`` tokens (default 248)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)
