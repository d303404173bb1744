"""PCA baseline (UrbanCLIP §4.1.2): the first 10 principal components of the flattened tile.

Each satellite tile is flattened to one long pixel vector (CLIP-normalised, the same pixel space
every other baseline sees) and projected onto the top components of the *training* regions'
tiles. Nothing is learned beyond the projection, so there is no random-init copy to train; its
counterpart in the tests is a random orthonormal projection of the same size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.decomposition import PCA

from urbanlib.pipeline.tensors import CLIP_MEAN, CLIP_STD

from ._common import scale_name, train_positions
from .base import BaselineInputs, FittedEncoder


@dataclass
class PCAConfig:
    """PCA settings (the same at every scale: the projection takes seconds)."""

    n_components: int = 10  # UrbanCLIP: "the first 10 principal components"

    @classmethod
    def for_scale(cls, name: str) -> PCAConfig:
        """Preset for a scale name (identical for all scales)."""
        return cls()


def flat_pixels(satellite: np.ndarray) -> np.ndarray:
    """uint8 tiles (n, 3, S, S) -> (n, 3*S*S) float32, CLIP-normalised like the models' input."""
    mean = np.asarray(CLIP_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(CLIP_STD, np.float32).reshape(1, 3, 1, 1)
    x = (satellite.astype(np.float32) / 255.0 - mean) / std
    return x.reshape(len(x), -1)  # (n, 3*S*S)


def reconstruction_mse(pca: PCA, satellite: np.ndarray) -> float:
    """Mean squared error per pixel of projecting tiles (n, 3, S, S) uint8 onto ``pca`` and back."""
    x = flat_pixels(satellite)
    return float(np.mean((pca.inverse_transform(pca.transform(x)) - x) ** 2))


def fit_pca(inputs: BaselineInputs, config: PCAConfig | None = None) -> PCA:
    """The fitted sklearn PCA on the training regions' tiles."""
    cfg = config or PCAConfig.for_scale(scale_name(inputs))
    idx = train_positions(inputs)
    if len(idx) < cfg.n_components:
        raise ValueError(f"PCA with {cfg.n_components} components needs at least that many training tiles, "
                         f"got {len(idx)}")
    return PCA(n_components=cfg.n_components, random_state=inputs.seed).fit(flat_pixels(inputs.tensors.satellite[idx]))


def fit(inputs: BaselineInputs, config: PCAConfig | None = None) -> FittedEncoder:
    """PCA-10 features of every region (NaN rows for regions without a tile)."""
    cfg = config or PCAConfig.for_scale(scale_name(inputs))
    pca = fit_pca(inputs, cfg)
    t = inputs.tensors
    feats = np.full((len(t), cfg.n_components), np.nan, np.float32)
    have = np.flatnonzero(t.satellite_mask)
    for s in range(0, len(have), 256):  # chunks keep the float copy of 64 px tiles small
        feats[have[s:s + 256]] = pca.transform(flat_pixels(t.satellite[have[s:s + 256]]))
    n_params = int(pca.components_.size + pca.mean_.size)
    return FittedEncoder("PCA", feats, [], n_params, n_params,
                         {"config": asdict(cfg), "explained_variance_ratio": float(pca.explained_variance_ratio_.sum()),
                          "train_regions": int(len(train_positions(inputs)))})
