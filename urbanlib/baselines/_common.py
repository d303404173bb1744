"""Pieces shared by the image baselines: sizing, training positions, a small conv net, tile datasets, features.

The tile datasets feed the shared :class:`~urbanlib.train.trainer.Trainer`.

Every baseline trains on ``inputs.train_idx`` only, augments with the shared dihedral transforms
(:func:`urbanlib.pipeline.augment.dihedral`), and embeds *all* regions afterwards, with NaN rows
where a region has no satellite tile.

Training length (the rule of every conv baseline): with ``inputs.val_idx`` the run evaluates its
own loss on held-out, unaugmented samples and stops by the scale's early stopping
(:meth:`~urbanlib.scales.Scale.early_stopping`), keeping its best weights; its epochs are then the
cap, :func:`epoch_cap`: the scale's ``pretrain_epochs`` (as every pretraining family), or the
baseline's own preset where that is larger (small conv nets on a few hundred tiles take more, and
cheaper, epochs than a ViT). Without ``val_idx`` the run has that many epochs, fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from urbanlib.pipeline.augment import dihedral
from urbanlib.pipeline.hparams import chosen_lr
from urbanlib.pipeline.tensors import normalize
from urbanlib.scales import Scale, get_scale

from .base import BaselineInputs

SCALE_NAMES = ("smoke", "default", "full", "paper")


def scale_name(inputs: BaselineInputs) -> str:
    """The preset a baseline sizes itself by (``"default"`` when ``inputs.scale`` is None)."""
    name = inputs.scale.name if inputs.scale is not None else "default"
    if name not in SCALE_NAMES:
        raise KeyError(f"unknown scale {name!r}; baselines are sized for {SCALE_NAMES}")
    return name


def resolve_scale(scale: Scale | str | None) -> Scale:
    """A :class:`Scale` from a preset, its name, or None (the ``default`` preset); only the presets baselines know."""
    s = get_scale(scale)
    if s.name not in SCALE_NAMES:
        raise KeyError(f"unknown scale {s.name!r}; baselines are sized for {SCALE_NAMES}")
    return s


def epoch_cap(preset_epochs: int, scale: Scale) -> int:
    """Epochs of a conv baseline's run: the scale's ``pretrain_epochs``, or its preset's where larger (module doc)."""
    return max(int(preset_epochs), int(scale.pretrain_epochs))


def sized(cfg, scale: Scale, family: str, overrides: dict):
    """A conv baseline's preset ``cfg`` with the tier's epoch cap and the family's chosen lr, then ``overrides``."""
    fields = {"epochs": epoch_cap(cfg.epochs, scale), **overrides}
    if "lr" not in fields:
        fields["lr"] = chosen_lr(family, scale)
    return replace(cfg, **fields)


def val_positions(inputs: BaselineInputs, mask: np.ndarray | None = None) -> np.ndarray | None:
    """``inputs.val_idx`` restricted to regions with a tile (and ``mask``), never a training region; None if none.

    These are the held-out, label-free regions whose loss decides a run's length.
    """
    if inputs.val_idx is None:
        return None
    idx = np.unique(np.asarray(inputs.val_idx, dtype=int))
    keep = inputs.tensors.satellite_mask[idx] if mask is None else np.asarray(mask)[idx]
    idx = np.setdiff1d(idx[keep], np.asarray(inputs.train_idx, dtype=int))
    return idx if len(idx) else None


def seeded(seed: int, *salt: int) -> torch.Generator:
    """A torch generator whose stream depends only on ``seed`` and ``salt`` (e.g. epoch, index)."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0]))
    return g


def train_positions(inputs: BaselineInputs, mask: np.ndarray | None = None, name: str = "a baseline",
                    train_idx: np.ndarray | None = None) -> np.ndarray:
    """``inputs.train_idx`` (or ``train_idx``) restricted to regions with a satellite tile (or ``mask``): sorted, unique.

    Raises:
        IndexError: a position outside the dataset.
        ValueError: fewer than 2 regions remain (the message names ``name``).
    """
    idx = np.unique(np.asarray(inputs.train_idx if train_idx is None else train_idx, dtype=int))
    if idx.size and (idx.min() < 0 or idx.max() >= len(inputs.tensors)):
        raise IndexError(f"train_idx holds positions outside 0..{len(inputs.tensors) - 1}")
    idx = idx[(inputs.tensors.satellite_mask if mask is None else np.asarray(mask))[idx]]
    if idx.size < 2:
        raise ValueError(f"{name}: only {idx.size} training regions have the data it needs (need at least 2)")
    return idx


# ---- model ------------------------------------------------------------------------------------
@dataclass
class ConvConfig:
    """A plain stride-2 conv stack; each block halves the side."""

    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels per block (4 blocks: 64 px -> 4 px)
    convs_per_block: int = 2  # a stride-2 conv, then stride-1 convs at the same width
    batch_norm: bool = True  # BatchNorm after each conv (off: a bias instead)
    in_chans: int = 3  # RGB


class ConvEncoder(nn.Module):
    """Conv-BN-ReLU blocks (stride 2) then global average pooling: (B, 3, S, S) -> (B, widths[-1])."""

    def __init__(self, cfg: ConvConfig):
        super().__init__()
        layers, c = [], cfg.in_chans
        for w in cfg.widths:
            for j in range(cfg.convs_per_block):
                layers += [nn.Conv2d(c, w, 3, stride=2 if j == 0 else 1, padding=1, bias=not cfg.batch_norm),
                           nn.BatchNorm2d(w) if cfg.batch_norm else nn.Identity(), nn.ReLU(inplace=True)]
                c = w
        self.body = nn.Sequential(*layers)
        self.out_dim = c

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C, S / 2^k, S / 2^k)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))  # (B, C)


# ---- data -------------------------------------------------------------------------------------
class TileDataset:
    """Satellite tiles of some regions as training samples for the shared trainer.

    Each sample is ``{"image": (3, S, S) float (CLIP-normalised), **extra}``. With ``augment`` the
    tile gets one dihedral transform drawn from a generator seeded by ``(seed, epoch, i)``, so the
    augmentation stream is a pure function of the seed (resumable and identical across runs).

    Args:
        satellite: (N, 3, S, S) uint8 tiles of the whole dataset.
        idx: positions of the regions to sample from.
        seed: baseline seed.
        augment: apply the shared dihedral augmentation.
        extra: per-sample tensors aligned with ``idx`` (e.g. ``{"label": (n,) long}``).
        transform: uint8 (..., 3, S, S) tensor -> float model input (CLIP normalisation by default).
    """

    def __init__(self, satellite: np.ndarray, idx: np.ndarray, seed: int, augment: bool = True,
                 extra: dict[str, torch.Tensor] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] = normalize):
        self.satellite, self.idx, self.seed, self.augment = satellite, np.asarray(idx), seed, augment
        self.transform = transform
        self.extra = extra or {}
        for k, v in self.extra.items():
            if len(v) != len(self.idx):
                raise ValueError(f"extra[{k!r}] has {len(v)} rows, expected {len(self.idx)}")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.idx)

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch."""
        self.epoch = epoch

    def image(self, pos: int, g: torch.Generator | None) -> torch.Tensor:
        """Region ``pos`` (a dataset position) as a (3, S, S) normalised tensor, augmented if ``g``."""
        x = self.transform(torch.from_numpy(self.satellite[pos]))
        return dihedral(x[None], g)[0] if g is not None else x

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = seeded(self.seed, 1, self.epoch, i) if self.augment else None
        return {"image": self.image(int(self.idx[i]), g), **{k: v[i] for k, v in self.extra.items()}}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], satellite: np.ndarray,
                          idx: np.ndarray, transform: Callable[[torch.Tensor], torch.Tensor] = normalize,
                          batch_size: int = 64) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over the training tiles.

    After a few hundred steps the running means (momentum 0.1) still lag the weights, so eval-mode
    outputs drift from train-mode ones; one pass over the un-augmented training tiles fixes that.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for s in range(0, len(idx), batch_size):
        forward(transform(torch.from_numpy(satellite[np.asarray(idx[s:s + batch_size])])))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()


# ---- features ---------------------------------------------------------------------------------
@torch.no_grad()
def embed_all(encode: Callable[[torch.Tensor], torch.Tensor], inputs: BaselineInputs, batch_size: int = 128,
              transform: Callable[[torch.Tensor], torch.Tensor] = normalize, desc: str = "embed",
              image_size: int | None = None) -> np.ndarray:
    """Features of every region: ``encode`` on its tile, NaN rows where there is no tile.

    Args:
        encode: (B, 3, S, S) float -> (B, F) float, called in eval mode.
        inputs: the baseline inputs (tiles and mask).
        batch_size: tiles per forward pass.
        transform: uint8 (B, 3, S, S) tensor -> model input (CLIP normalisation by default).
        desc: progress-bar label.
        image_size: the encoder's input side; tiles of another size are resized (bicubic) to it.

    Returns:
        (N, F) float32.
    """
    t = inputs.tensors
    have = np.flatnonzero(t.satellite_mask)
    chunks = []
    for s in tqdm(range(0, len(have), batch_size), desc=desc, disable=not inputs.progress, leave=False):
        x = transform(torch.from_numpy(t.satellite[have[s:s + batch_size]]))
        chunks.append(encode(x if image_size is None else resize_to(x, image_size)).float().numpy())
    if not chunks:
        raise ValueError("no region has a satellite tile; nothing to embed")
    feats = np.concatenate(chunks)
    out = np.full((len(t), feats.shape[1]), np.nan, np.float32)
    out[have] = feats
    return out


def resize_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float images (..., 3, H, W) to ``size`` x ``size`` (bicubic) if they differ."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])  # (n, 3, H, W)
    out = F.interpolate(flat, size=(size, size), mode="bicubic", align_corners=False)
    return out.reshape(*lead, 3, size, size)
