"""Image-text pairs over the cached uint8 images, with the shared augmentation.

Augmentation and caption draws are pure functions of ``(seed, epoch, index)``, so a resumed run
sees exactly the samples of the uninterrupted one (the trainer's resume guarantee holds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from urbanlib.models.text import choose_text

from .augment import dihedral
from .tensors import normalize


class AugmentedPairs:
    """Pairs ``(images[i], one of texts[i])`` for the trainer.

    Args:
        images: (M, 3, H, W) uint8 array (satellite tiles or single street views).
        texts: M non-empty caption lists.
        region_index: (M,) region position of each pair (several street views share a region;
            the MSD queue masks same-region entries by it).
        tokenize: texts -> (n, L) long ids.
        text_mode: ``"sample"`` (one caption per pair per epoch) or ``"concat"``.
        augment: apply a random dihedral transform.
        seed: seed of caption draws and augmentation.
    """

    def __init__(self, images: np.ndarray, texts: Sequence[Sequence[str]], region_index: np.ndarray,
                 tokenize: Callable[[list[str]], torch.Tensor], text_mode: str = "sample",
                 augment: bool = True, seed: int = 0):
        if not (len(images) == len(texts) == len(region_index)):
            raise ValueError(f"AugmentedPairs: {len(images)} images, {len(texts)} caption lists, "
                             f"{len(region_index)} region indices")
        empty = [i for i, t in enumerate(texts) if not t]
        if empty:
            raise ValueError(f"AugmentedPairs: pairs {empty[:5]} have no caption")
        self.images, self.texts = images, [list(t) for t in texts]
        self.region_index = torch.as_tensor(np.asarray(region_index), dtype=torch.long)
        self.tokenize, self.text_mode, self.augment, self.seed = tokenize, text_mode, augment, seed
        self._token_cache: dict[str, torch.Tensor] = {}
        self.set_epoch(0)

    def _tokens(self, texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self._token_cache]
        if new:
            for t, ids in zip(new, self.tokenize(new), strict=True):
                self._token_cache[t] = ids
        return torch.stack([self._token_cache[t] for t in texts])

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's caption of every pair."""
        self.epoch = epoch
        chosen = [choose_text(t, self.text_mode, epoch, self.seed, key=i) for i, t in enumerate(self.texts)]
        self.tokens = self._tokens(chosen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = normalize(torch.from_numpy(self.images[i]))  # (3, H, W)
        if self.augment:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(i))) & 0x7FFFFFFF)
            x = dihedral(x[None], g)[0]
        return {"image": x, "text": self.tokens[i], "region_index": self.region_index[i]}
