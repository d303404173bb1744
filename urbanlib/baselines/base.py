"""What every baseline receives and returns, so the benchmark can treat them alike.

A baseline is a function ``fit(inputs: BaselineInputs, config=None) -> FittedEncoder | NotAvailable``
in its own module. It trains label-free on ``inputs.train_idx`` (the City's pretraining regions; see
:mod:`urbanlib.pipeline.city` for the protocol), may decide its length on ``inputs.val_idx``, reads
labels only of ``inputs.label_idx`` (supervised baselines), and returns frozen features for *all*
regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from urbanlib.data.dataset import UrbanDataset
from urbanlib.pipeline.city import City
from urbanlib.pipeline.tensors import RegionTensors
from urbanlib.scales import Scale


@dataclass
class BaselineInputs:
    """Everything a baseline may read.

    Attributes:
        ds: the dataset (regions with indicators, POI columns, captions, grid row/col).
        tensors: its images, aligned with ``ds.regions`` (:func:`urbanlib.pipeline.tensors.load_tensors`).
        train_idx: positions of the regions a baseline may train on (probe train + val).
        seed: seed of everything random in the baseline.
        scale: size preset; baselines size their epochs from ``scale.name``.
        progress: show progress bars.
        val_idx: held-out regions whose (label-free) loss may decide a baseline's training length.
        label_idx: regions whose labels a supervised baseline may read (the probe's train regions);
            None for label-free baselines, which then read ``train_idx``'s labels nowhere.
    """

    ds: UrbanDataset
    tensors: RegionTensors
    train_idx: np.ndarray
    seed: int = 0
    scale: Scale | None = None
    progress: bool = True
    val_idx: np.ndarray | None = None
    label_idx: np.ndarray | None = None

    @classmethod
    def from_city(cls, city: City, progress: bool = False, supervised: bool = False) -> BaselineInputs:
        """What a baseline may read of ``city``: pretraining regions, held-out part, (supervised) train labels."""
        return cls(city.ds, city.tensors, city.pretrain_idx, city.seed, city.scale, progress,
                   val_idx=city.pretrain_val_idx, label_idx=city.label_idx if supervised else None)


@dataclass
class FittedEncoder:
    """A trained (or fixed) baseline encoder's output.

    Attributes:
        name: baseline name as shown in tables (e.g. ``"Tile2Vec"``).
        features: (N, F) float32 features of every region in ``ds.regions`` order; rows of regions
            the encoder could not embed (no image) are NaN.
        history: per-step training log, ``[{"step": int, "loss": float, ...}]`` (empty if untrained).
        n_params: total parameters of the encoder.
        n_trainable: parameters that were trained.
        info: free-form facts shown in the book (e.g. ``{"weights": "random init"}``).
    """

    name: str
    features: np.ndarray
    history: list[dict] = field(default_factory=list)
    n_params: int = 0
    n_trainable: int = 0
    info: dict = field(default_factory=dict)


@dataclass
class NotAvailable:
    """An explicit "n/a" cell: the baseline cannot run here, and why."""

    name: str
    reason: str
