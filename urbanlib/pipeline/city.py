"""One call that every experiment notebook starts with: the city, its images and its split.

``open_city("synth-ring")`` builds (or reuses) a SynthCity profile; ``open_city("Beijing",
data_dir=..., layout="urbanclip")`` loads a real dataset. The seed is the *pretraining* seed: it
draws the split (so each seed has its own test regions) and seeds every model; the SynthCity city
itself is always generated with seed 0, so seeds vary the models, not the benchmark.

Which tiles pretraining sees is the ``protocol``:

- ``"all-tiles"`` (default; both papers' protocol): label-free pretraining on every tile of the
  city, so one pretraining run per (model, city, seed) serves both splits, the benchmark, the
  ablations and transfer; only the probe's split separates regions, and no label reaches
  pretraining. A seeded ``Scale.pretrain_val_fraction`` of the tiles, drawn independently of the
  split, is held out of pretraining to decide its length.
- ``"train-only"``: stricter; pretraining never sees the probe's test tiles: it trains on the
  probe's train regions and decides its length on the probe's validation regions.

Supervised baselines (READ) read labels of the probe's train regions only (:attr:`City.label_idx`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from urbanlib.data import load
from urbanlib.data.dataset import UrbanDataset
from urbanlib.data.splits import Split, blocked_split, random_split
from urbanlib.data.synthcity import PROFILES, load_city
from urbanlib.scales import Scale, get_scale

from .tensors import RegionTensors, load_tensors

SPLITS = ("random", "blocked")
PROTOCOLS = ("all-tiles", "train-only")


@dataclass
class City:
    """A dataset ready for the models.

    Attributes:
        name: city name (SynthCity profile or the dataset's city).
        ds: the dataset.
        tensors: its images as arrays.
        split: train/val/test regions.
        scale: the size preset.
        seed: pretraining (and split) seed.
        protocol: which tiles pretraining sees (``"all-tiles"`` or ``"train-only"``; module docstring).
    """

    name: str
    ds: UrbanDataset
    tensors: RegionTensors
    split: Split
    scale: Scale
    seed: int
    protocol: str = "all-tiles"

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")

    @property
    def pretrain_val_idx(self) -> np.ndarray:
        """Regions whose tiles decide pretraining's length (label-free validation pairs), never trained on."""
        if self.protocol == "train-only":
            return np.sort(self.split.val)
        return pretrain_holdout(len(self.ds.regions), self.scale.pretrain_val_fraction, self.seed)

    @property
    def pretrain_idx(self) -> np.ndarray:
        """Regions whose tiles (and captions) pretraining trains on; the same for both splits under "all-tiles"."""
        if self.protocol == "train-only":
            return np.sort(self.split.train)
        return np.setdiff1d(np.arange(len(self.ds.regions)), self.pretrain_val_idx)

    @property
    def label_idx(self) -> np.ndarray:
        """Regions whose labels a supervised baseline may read: the probe's train regions."""
        return np.sort(self.split.train)

    @property
    def is_synthetic(self) -> bool:
        """True for SynthCity (hidden truth such as ``zone`` is available for evaluation only)."""
        return self.ds.meta.get("generator") == "synthcity"


def pretrain_holdout(n_regions: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of the ``fraction`` of regions held out of "all-tiles" pretraining (by seed only)."""
    n_val = max(1, round(fraction * n_regions)) if fraction > 0 else 0
    rng = np.random.default_rng([seed, 20261201])
    return np.sort(rng.choice(n_regions, n_val, replace=False)) if n_val else np.zeros(0, int)


def set_threads() -> int:
    """Use ``$URBANLIB_NUM_THREADS`` torch threads when set (the book runner sets it per notebook)."""
    n = int(os.environ.get("URBANLIB_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def open_city(city: str = "synth-ring", scale: str | Scale = "default", seed: int = 0, data_dir: str = "",
              layout: str = "urbanlib", split: str = "random", progress: bool = True,
              protocol: str = "all-tiles") -> City:
    """Load a city, decode its images and draw its split.

    Args:
        city: a SynthCity profile name, or the city to select in ``data_dir``.
        scale: size preset (grid and tile size for SynthCity; model sizes and epochs for all).
        seed: pretraining seed; also draws the split.
        data_dir: a dataset folder; empty means SynthCity.
        layout: ``urbanlib`` | ``urbanclip`` | ``generic`` (see :func:`urbanlib.data.load`).
        split: ``"random"`` (the papers' 6:2:2) or ``"blocked"`` (spatial blocks).
        progress: progress bars.
        protocol: ``"all-tiles"`` (the papers': label-free pretraining on every tile) or ``"train-only"``.
    """
    set_threads()
    sc = get_scale(scale)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if data_dir:
        ds = load(data_dir, layout=layout, city=city or None)
    else:
        if city not in PROFILES:
            raise ValueError(f"{city!r} is not a SynthCity profile ({PROFILES}); pass data_dir= for real data")
        ds = load_city(city, scale=sc, seed=0, progress=progress)
    tensors = load_tensors(ds, sc.tile_px, sc.street_px, sc.max_street_views, progress=progress)
    sp = random_split(ds, seed=seed) if split == "random" else blocked_split(ds, seed=seed)
    name = city or (ds.cities[0] if ds.cities else "dataset")
    return City(name, ds, tensors, sp, sc, seed, protocol)
