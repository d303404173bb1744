"""UrbanViT (UrbanCLIP §4.3.1): UrbanCLIP's ViT trained without text, by image-only SimCLR.

Same ViT, training tiles, epochs, augmentations, optimiser and schedule as UrbanCLIP; the only
difference is the objective: two SimCLR views of one tile are positives, other tiles in the batch
negatives (NT-Xent). The paper says only "a standard ViT-based model ... with the same setting as
the unimodal visual encoder of UrbanCLIP"; SimCLR as its self-supervised objective is the issue's
choice. Its per-step loss curve is ``FittedEncoder.history``.
"""

from __future__ import annotations

from .base import BaselineInputs, FittedEncoder
from .simclr import SimCLRConfig, SimCLRViT, fit_pairs, satellite_train_positions, train_pairs

NAME = "UrbanViT"
KINDS = ("simclr",)  # one positive kind: another view of the same tile -> loss term "simclr_loss"


def _config(inputs: BaselineInputs, config: SimCLRConfig | None) -> SimCLRConfig:
    return config or SimCLRConfig.for_scale(inputs.scale)


def train(inputs: BaselineInputs, config: SimCLRConfig | None = None) -> tuple[SimCLRViT, list[dict]]:
    """Train UrbanViT; returns the model and its per-step history."""
    pos = satellite_train_positions(inputs, NAME)
    return train_pairs(inputs, _config(inputs, config), lambda p: {"simclr": None}, pos, NAME)


def fit(inputs: BaselineInputs, config: SimCLRConfig | None = None) -> FittedEncoder:
    """Train UrbanViT on the training regions' tiles; features = mean patch tokens of every region's tile."""
    pos = satellite_train_positions(inputs, NAME)
    return fit_pairs(inputs, _config(inputs, config), lambda p: {"simclr": None}, pos, NAME,
                     {"objective": "SimCLR NT-Xent, two views of one tile"})
