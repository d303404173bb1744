"""One call that every experiment notebook starts with: the city, its images and its split.

``open_city("synth-ring")`` builds (or reuses) a SynthCity profile; ``open_city("Beijing",
data_dir=..., layout="urbanclip")`` loads a real dataset. The seed is the *pretraining* seed: it
draws the split (so each seed has its own test regions) and seeds every model; the SynthCity city
itself is always generated with seed 0, so seeds vary the models, not the benchmark.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from urbanlib.data import load
from urbanlib.data.dataset import UrbanDataset
from urbanlib.data.splits import Split, blocked_split, random_split
from urbanlib.scales import Scale, get_scale

from .tensors import RegionTensors, load_tensors

SPLITS = ("random", "blocked")


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
    """

    name: str
    ds: UrbanDataset
    tensors: RegionTensors
    split: Split
    scale: Scale
    seed: int

    @property
    def pretrain_idx(self) -> np.ndarray:
        """Regions pretraining may see: the probe's train and validation regions (never test)."""
        return np.sort(np.concatenate([self.split.train, self.split.val]))

    @property
    def is_synthetic(self) -> bool:
        """True for SynthCity (hidden truth such as ``zone`` is available for evaluation only)."""
        return self.ds.meta.get("generator") == "synthcity"


def set_threads() -> int:
    """Use ``$URBANLIB_NUM_THREADS`` torch threads when set (the book runner sets it per notebook)."""
    n = int(os.environ.get("URBANLIB_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def open_city(city: str = "synth-ring", scale: str | Scale = "default", seed: int = 0, data_dir: str = "",
              layout: str = "urbanlib", split: str = "random", progress: bool = True) -> City:
    """Load a city, decode its images and draw its split.

    Args:
        city: a SynthCity profile name, or the city to select in ``data_dir``.
        scale: size preset (grid and tile size for SynthCity; model sizes and epochs for all).
        seed: pretraining seed; also draws the split.
        data_dir: a dataset folder; empty means SynthCity.
        layout: ``urbanlib`` | ``urbanclip`` | ``generic`` (see :func:`urbanlib.data.load`).
        split: ``"random"`` (the papers' 6:2:2) or ``"blocked"`` (spatial blocks).
        progress: progress bars.
    """
    set_threads()
    sc = get_scale(scale) if isinstance(scale, str) else scale
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if data_dir:
        ds = load(data_dir, layout=layout, city=city or None)
    else:
        from urbanlib.data.synthcity import PROFILES, load_city

        if city not in PROFILES:
            raise ValueError(f"{city!r} is not a SynthCity profile ({PROFILES}); pass data_dir= for real data")
        ds = load_city(city, scale=sc, seed=0, progress=progress)
    tensors = load_tensors(ds, sc.tile_px, sc.street_px, sc.max_street_views, progress=progress)
    sp = random_split(ds, seed=seed) if split == "random" else blocked_split(ds, seed=seed)
    name = city or (ds.cities[0] if ds.cities else "dataset")
    return City(name, ds, tensors, sp, sc, seed)
