"""Restricting the LM head to the tokens that occur in the training corpus.

Generated captions use a few hundred distinct BPE tokens out of open_clip's 49,408; a full-vocab
LM head then dominates CPU training time. ``Vocab`` keeps the same tokenizer but remaps its ids to
a compact range, so the embedding table and LM head only hold the corpus tokens. Softmax over the
kept tokens equals the full softmax with every other logit at -inf (tested).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

PAD_ID = 0  # open_clip pads with 0
SOT_ID = 49406  # <start_of_text>
EOT_ID = 49407  # <end_of_text>


class Vocab:
    """Compact id space over tokenizer ids: ``compact = full_to_compact[full]``.

    Compact id 0 is the pad token (so padding stays id 0 and is ignored by the loss), then
    <start>, <end>, then the corpus tokens in increasing tokenizer id. Tokenizer ids outside the
    corpus map to a final ``<unk>`` slot (``unk_id``), whose tokenizer id is -1.
    """

    def __init__(self, token_ids: Iterable[int], full_size: int = 49408):
        special = [PAD_ID, SOT_ID, EOT_ID]
        rest = sorted({int(t) for t in token_ids} - set(special))
        if rest and (rest[0] < 0 or rest[-1] >= full_size):
            raise ValueError(f"Vocab: token ids must lie in [0, {full_size}); got {rest[0]}..{rest[-1]}")
        self.full_size = full_size
        self.kept_ids = torch.tensor(special + rest + [-1], dtype=torch.long)  # compact -> full
        self.unk_id = len(self.kept_ids) - 1
        table = torch.full((full_size,), self.unk_id, dtype=torch.long)
        table[self.kept_ids[:-1]] = torch.arange(self.unk_id)
        self.full_to_compact = table

    @classmethod
    def from_tokenized(cls, texts: torch.Tensor, full_size: int = 49408) -> Vocab:
        """Build from tokenized training texts (N, T) in tokenizer ids."""
        return cls(torch.unique(texts).tolist(), full_size=full_size)

    def __len__(self) -> int:
        return len(self.kept_ids)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids (any shape) -> compact ids."""
        return self.full_to_compact.to(ids.device)[ids]

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Compact ids -> tokenizer ids (``<unk>`` -> -1)."""
        return self.kept_ids.to(ids.device)[ids]

    def to_json(self) -> str:
        """Serialise (the kept tokenizer ids)."""
        return json.dumps({"full_size": self.full_size, "token_ids": self.kept_ids[:-1].tolist()})

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> Vocab:
        """Inverse of :meth:`to_json`."""
        try:
            d = json.loads(text)
            return cls(d["token_ids"], full_size=d["full_size"])
        except (KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"{source}: not a Vocab JSON ({e})") from e

    def save(self, path: str | Path) -> None:
        """Write the JSON form to ``path``."""
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Read a file written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(), source=str(path))
