"""Captions -> token ids: open_clip's BPE tokenizer (ships with open_clip) and the choice of training text.

A region may have several captions (sources, short/long styles). ``TEXT_MODES``:

* ``"sample"`` (default): one caption per region, redrawn every epoch from a seed — each pass is a
  set of ordinary image-text pairs as in the paper, and over epochs all captions are seen.
* ``"concat"``: all of a region's captions joined into one text (truncated to the context length).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

import torch
from open_clip.tokenizer import SimpleTokenizer

TEXT_MODES = ("sample", "concat")


@lru_cache(maxsize=8)
def tokenizer(context_length: int) -> SimpleTokenizer:
    """open_clip's BPE tokenizer; ids (N, context_length), <start>=49406, <end>=49407, pad 0."""
    return SimpleTokenizer(context_length=context_length)


def choose_text(captions: Sequence[str], mode: str = "sample", epoch: int = 0, seed: int = 0, key: int = 0) -> str:
    """The training text for one region in one epoch.

    Args:
        captions: the region's captions (at least one).
        mode: ``"sample"`` or ``"concat"`` (see module docstring).
        epoch: training epoch (a new draw each epoch).
        seed: run seed.
        key: region index. Together these make the draw a pure function, so resuming training
            reproduces it without saving any RNG.
    """
    if not captions:
        raise ValueError(f"region {key}: no captions to train on")
    if mode == "concat":
        return " ".join(captions)
    if mode != "sample":
        raise ValueError(f"text mode must be one of {TEXT_MODES}, got {mode!r}")
    return captions[random.Random(f"{seed}/{epoch}/{key}").randrange(len(captions))]


def tokenize(texts: Sequence[str], context_length: int, end_at_cut: bool = False) -> torch.Tensor:
    """Tokenize texts to (N, context_length) long ids: ``<start>``, BPE tokens, ``<end>``, zero padding.

    A text longer than the context is cut, and by default *without* an ``<end>`` at the cut: the
    language-model target at the last position is then the caption's real next word, not an end
    that is not there (with ``<end>`` at every cut, 44% of the captions taught UrbanCLIP's decoder to
    stop mid-sentence at the context limit). ``end_at_cut=True`` gives open_clip's tokenizer output,
    which CLIP's argmax pooling needs.
    """
    if end_at_cut:
        return tokenizer(context_length)(list(texts))
    tok = tokenizer(context_length)
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [tok.sot_token_id, *tok.encode(text), tok.eot_token_id][:context_length]
        out[i, : len(ids)] = torch.tensor(ids)
    return out
