"""A toy model and data set for trainer tests: y = w x + b converges in a few dozen steps, then plateaus."""

from collections.abc import Sequence

import torch

from urbanlib.models.text import TEXT_MODES, choose_text, tokenize


class Linear(torch.nn.Module):
    """A linear regression with a squared loss, in the trainer's protocol (``forward(batch) -> {"loss", ...}``)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, batch):
        err = self.lin(batch["x"]).squeeze(-1) - batch["y"]
        return {"loss": (err ** 2).mean(), "abs_loss": err.abs().mean()}


class Points:
    """``n`` noisy points of a fixed linear function, drawn by ``seed``."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class ImageTextPairs:
    """Images with one or more captions each (the trainer tests' UrbanCLIP data); which text is used follows ``text_mode``.

    Args:
        images: (N, 3, H, W) float tensor.
        captions: N lists of captions (one list per image).
        context_length: tokenized length.
        text_mode: ``"sample"`` (default: one caption per image, redrawn each epoch) or
            ``"concat"`` (all captions joined); see :mod:`urbanlib.models.text`.
        seed: seed of the per-epoch caption draw.
    """

    def __init__(self, images: torch.Tensor, captions: Sequence[Sequence[str]], context_length: int,
                 text_mode: str = "sample", seed: int = 0):
        if len(images) != len(captions):
            raise ValueError(f"ImageTextPairs: {len(images)} images but {len(captions)} caption lists")
        if text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {text_mode!r}")
        self.images, self.captions = images, [list(c) for c in captions]
        self.context_length, self.text_mode, self.seed = context_length, text_mode, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Choose (and tokenize) every image's text for ``epoch``."""
        texts = [choose_text(c, self.text_mode, epoch, self.seed, key=i) for i, c in enumerate(self.captions)]
        self.tokens = tokenize(texts, self.context_length)  # (N, context_length)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "text": self.tokens[i], "region_index": torch.tensor(i)}

    def all_tokens(self) -> torch.Tensor:
        """Tokens of every caption (for building a restricted :class:`~urbanlib.models.Vocab`)."""
        return tokenize([t for c in self.captions for t in c], self.context_length)
