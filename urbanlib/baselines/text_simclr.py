"""Text-SimCLR (UrbanCLIP §4.3.3): captions choose the positives of an image-only contrastive loss.

"Text-SimCLR calculates textual embedding similarity for positive region pairs, and mandates that
the associated satellite images of these pairs be proximate in the visual latent space." Here a
training region's positive is drawn each epoch from the ``positives_k`` training regions whose
captions are most similar (cosine of the mean MiniLM sentence embedding of the region's short
captions, :func:`urbanlib.eval.text_features.region_text_features`, the caption-only probe's
features, cached under ``cache_dir("text_emb")``); both tiles get SimCLR views and the other
tiles of the batch are negatives (NT-Xent). ViT, epochs, augmentations and schedule are UrbanViT's
(:mod:`~urbanlib.baselines.simclr`), so the two differ only in where positives come from.
The paper does not say which text encoder or how many neighbours; MiniLM and top-5 are our choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from urbanlib.data.report import DataError
from urbanlib.eval.text_features import MINILM_ID, region_text_features

from ._common import train_positions, val_positions
from .base import BaselineInputs, FittedEncoder, NotAvailable
from .simclr import SimCLRConfig, SimCLRViT, fit_pairs, top_k_neighbours, train_pairs

NAME = "Text-SimCLR"


@dataclass
class TextSimCLRConfig(SimCLRConfig):
    """:class:`SimCLRConfig` plus which captions define similarity."""

    caption_style: str = "short"  # captions averaged per region ("short": UrbanCLIP-style summaries)


def caption_positives(caption_emb: np.ndarray, train_pos: np.ndarray, k: int) -> list[np.ndarray]:
    """Per training region, its ``k`` caption-nearest training regions (indices into ``train_pos``).

    Args:
        caption_emb: (N, D) L2-normalised caption embeddings of all regions.
        train_pos: (n,) positions of the training regions (all with an embedding).
        k: neighbours per region.
    """
    e = caption_emb[train_pos]  # (n, D)
    return top_k_neighbours(e @ e.T, k)


def _prepare(inputs: BaselineInputs, config: TextSimCLRConfig | None, caption_emb: np.ndarray | None):
    cfg = config or TextSimCLRConfig.for_scale(inputs.scale)
    if caption_emb is None:
        try:
            caption_emb = region_text_features(inputs.ds, style=cfg.caption_style, progress=inputs.progress)
        except DataError:  # no caption of that style at all
            caption_emb = np.full((len(inputs.ds.regions), 1), np.nan, np.float32)
        norm = np.linalg.norm(caption_emb, axis=1, keepdims=True)
        caption_emb = caption_emb / np.where(norm > 0, norm, 1.0)  # mean of unit vectors -> unit again
    if caption_emb.ndim != 2 or len(caption_emb) != len(inputs.ds.regions):
        raise ValueError(f"{NAME}: caption_emb has shape {caption_emb.shape}; expected "
                         f"({len(inputs.ds.regions)}, D), one row per region")
    have = inputs.tensors.satellite_mask & ~np.isnan(caption_emb).any(axis=1)
    return cfg, caption_emb, have


def train(inputs: BaselineInputs, config: TextSimCLRConfig | None = None,
          caption_emb: np.ndarray | None = None) -> tuple[SimCLRViT, list[dict]]:
    """Train Text-SimCLR; ``caption_emb`` (N, D) normalised overrides the MiniLM embeddings (tests)."""
    cfg, caption_emb, have = _prepare(inputs, config, caption_emb)
    pos = train_positions(inputs, have, NAME)
    return train_pairs(inputs, cfg, lambda p: {"text_pair": caption_positives(caption_emb, p, cfg.positives_k)},
                       pos, NAME, val_positions(inputs, have))


def fit(inputs: BaselineInputs, config: TextSimCLRConfig | None = None,
        caption_emb: np.ndarray | None = None) -> FittedEncoder | NotAvailable:
    """Train on training regions with a tile and captions; features = mean patch tokens of every tile."""
    encoder = MINILM_ID if caption_emb is None else "caption embeddings passed in"
    cfg, caption_emb, have = _prepare(inputs, config, caption_emb)
    train_idx = np.asarray(inputs.train_idx, dtype=int)
    if have[train_idx].sum() < 2:
        return NotAvailable(NAME, f"n/a: fewer than 2 training regions have both a satellite tile and "
                                  f"'{cfg.caption_style}' captions")
    pos = train_positions(inputs, have, NAME, train_idx)

    def positives(p):
        return {"text_pair": caption_positives(caption_emb, p, cfg.positives_k)}

    return fit_pairs(inputs, cfg, positives, pos, NAME,
                     {"objective": f"NT-Xent, positive = one of the {cfg.positives_k} caption-nearest regions",
                      "text_encoder": encoder},
                     val_pos=val_positions(inputs, have))
