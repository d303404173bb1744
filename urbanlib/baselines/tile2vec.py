"""Tile2Vec (Jean et al., AAAI 2019): tiles that are close in space should be close in embedding.

Each training sample is a triplet of satellite tiles: an anchor, a *neighbour* (a training region
in an adjacent grid cell) and a *distant* tile (a random training region outside the anchor's
neighbourhood). A small conv net embeds all three and the triplet loss

    max(0, ||z_a - z_n|| - ||z_a - z_d|| + margin) + lambda * (||z_a|| + ||z_n|| + ||z_d||)

pulls neighbours together and pushes distant tiles away; the norm penalty (as in the paper) stops
the net from satisfying the margin by inflating the scale. The region feature is ``z`` of its tile.

Adaptation to region grids: the paper samples the neighbour tile within a radius of the anchor
inside one large scene; here a region is one tile, so the neighbour is an adjacent grid cell
(8-neighbourhood, ``row``/``col``). Real datasets without a grid fall back to the nearest regions
by lon/lat (:func:`neighbour_sets`). The paper's encoder is a ResNet-18 variant; at 32-64 px we use
the shared small conv net (:class:`~urbanlib.baselines._common.ConvEncoder`) plus a linear head.

Length and learning rate: with ``inputs.val_idx`` the triplet loss of held-out anchors decides when
training stops (the scale's early stopping). A validation triplet is a held-out anchor, one of its
neighbours and one distant tile drawn once by seed among the held-out and training regions, all
unaugmented. The epochs are the cap, ``max(preset epochs, scale.pretrain_epochs)``
(:func:`~urbanlib.baselines._common.epoch_cap`); the learning rate is the ``"Tile2Vec"`` family's
(:func:`urbanlib.pipeline.hparams.chosen_lr`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from urbanlib.eval.metrics import linear_cka
from urbanlib.models.parameters import count_parameters
from urbanlib.scales import Scale

from ._common import (
    ConvConfig,
    ConvEncoder,
    TileDataset,
    embed_all,
    resolve_scale,
    seeded,
    sized,
    train_positions,
    val_positions,
)
from .base import BaselineInputs, FittedEncoder
from .training import stopping_fields, train

FAMILY = "Tile2Vec"  # its learning-rate family (urbanlib.pipeline.hparams.GRIDS)


@dataclass
class Tile2VecConfig:
    """Architecture, loss and training length; :meth:`for_scale` gives the presets."""

    conv: ConvConfig = field(default_factory=lambda: ConvConfig(convs_per_block=1))  # tile encoder
    z_dim: int = 64  # embedding size
    margin: float = 1.0  # triplet margin (distances are Euclidean)
    l2_weight: float = 0.01  # weight of the embedding-norm penalty
    k_nearest: int = 4  # neighbourhood size when regions have no grid row/col (lon/lat fallback)
    epochs: int = 8  # passes over the training regions (one triplet per anchor per epoch); the cap with validation
    batch_size: int = 32  # triplets per step
    lr: float = 2e-3  # AdamW peak learning rate (warmup + cosine, or cut on plateaus)

    @classmethod
    def for_scale(cls, scale: Scale | str | None, **overrides) -> Tile2VecConfig:
        """Preset sized for ``scale`` (smoke: seconds; default/full: ~40 s on one thread; paper: larger).

        Epochs: :func:`~urbanlib.baselines._common.epoch_cap`; lr: the family's
        (:func:`~urbanlib.pipeline.hparams.chosen_lr`) unless overridden.
        """
        s = resolve_scale(scale)
        if s.name == "smoke":
            cfg = cls(ConvConfig(widths=(16, 32, 64), convs_per_block=1), z_dim=32, epochs=12, batch_size=16)
        elif s.name == "paper":
            cfg = cls(ConvConfig(widths=(32, 64, 128, 256)), z_dim=512, epochs=30, batch_size=64)
        else:
            cfg = cls()
        return sized(cfg, s, FAMILY, overrides)


# ---- spatial sampling -------------------------------------------------------------------------
def _coordinates(regions: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Planar coordinates of every region and the distance that counts as "adjacent"."""
    if {"row", "col"} <= set(regions.columns) and regions[["row", "col"]].notna().all().all():
        return regions[["row", "col"]].to_numpy(float), 1.5  # 8-neighbourhood on the grid
    if not ({"lon", "lat"} <= set(regions.columns) and regions[["lon", "lat"]].notna().all().all()):
        raise ValueError("Tile2Vec needs grid row/col or lon/lat for every region (regions table has neither)")
    lat = regions["lat"].to_numpy(float)
    xy = np.stack([lat, regions["lon"].to_numpy(float) * np.cos(np.radians(lat))], axis=1)  # local equirectangular
    return xy, 0.0  # 0: use the k nearest instead of a radius


def neighbour_sets(regions: pd.DataFrame, anchors: np.ndarray, candidates: np.ndarray, k_nearest: int = 4
                   ) -> list[np.ndarray]:
    """For each anchor, the candidate positions that count as its spatial neighbours.

    Grid data: candidates in the 8 adjacent cells; if none of them is a candidate, the nearest
    candidate(s). Without a grid: the ``k_nearest`` candidates by lon/lat distance. An anchor is
    never its own neighbour.

    Args:
        regions: the regions table (``row``/``col`` or ``lon``/``lat``).
        anchors: positions of the anchor regions.
        candidates: positions the neighbours may be drawn from (e.g. training regions).
        k_nearest: neighbourhood size for the lon/lat fallback.
    """
    xy, radius = _coordinates(regions)
    out = []
    for a in anchors:
        cand = candidates[candidates != a]
        d = np.linalg.norm(xy[cand] - xy[a], axis=1)
        if radius > 0:
            near = cand[d <= radius]
            out.append(near if len(near) else cand[d <= d.min() + 1e-9])
        else:
            out.append(cand[np.argsort(d, kind="stable")[:k_nearest]])
    return out


class TripletDataset(TileDataset):
    """Triplets (anchor, neighbour, distant) over training regions, redrawn every epoch by seed.

    Args:
        satellite: (N, 3, S, S) uint8 tiles of the whole dataset.
        idx: positions of the anchors.
        neighbours: per anchor, the positions its neighbour is drawn from.
        seed: seed of the draws and augmentations.
        pool: positions a distant tile is drawn from (default ``idx``): held-out anchors draw among
            themselves and the training regions.
        augment: shared dihedral augmentation (off for validation triplets).
    """

    def __init__(self, satellite: np.ndarray, idx: np.ndarray, neighbours: list[np.ndarray], seed: int,
                 pool: np.ndarray | None = None, augment: bool = True):
        super().__init__(satellite, idx, seed, augment=augment)
        self.neighbours = neighbours
        self.pool = self.idx if pool is None else np.asarray(pool)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = seeded(self.seed, 2, self.epoch, i)
        a = int(self.idx[i])
        near = self.neighbours[i]
        n = int(near[torch.randint(len(near), (1,), generator=g)])
        far = self.pool[~np.isin(self.pool, near) & (self.pool != a)]
        d = int(far[torch.randint(len(far), (1,), generator=g)]) if len(far) else n
        view = g if self.augment else None
        return {"anchor": self.image(a, view), "neighbour": self.image(n, view), "distant": self.image(d, view)}


# ---- model ------------------------------------------------------------------------------------
class Tile2Vec(nn.Module):
    """Conv encoder + linear head -> z; ``forward`` returns the triplet loss terms."""

    def __init__(self, cfg: Tile2VecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ConvEncoder(cfg.conv)
        self.head = nn.Linear(self.encoder.out_dim, cfg.z_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, z_dim)."""
        return self.head(self.encoder(x))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Triplet-loss terms of a batch of ``anchor``/``neighbour``/``distant`` images (B, 3, S, S)."""
        b = len(batch["anchor"])
        z = self.embed(torch.cat([batch["anchor"], batch["neighbour"], batch["distant"]]))  # (3B, z)
        za, zn, zd = z[:b], z[b:2 * b], z[2 * b:]
        d_near, d_far = (za - zn).norm(dim=1), (za - zd).norm(dim=1)
        triplet = torch.relu(d_near - d_far + self.cfg.margin).mean()
        norm = (za.norm(dim=1) + zn.norm(dim=1) + zd.norm(dim=1)).mean()
        return {"loss": triplet + self.cfg.l2_weight * norm, "triplet_loss": triplet.detach(),
                "norm_penalty": norm.detach(), "neighbour_distance": d_near.mean().detach(),
                "distant_distance": d_far.mean().detach()}


def build(config: Tile2VecConfig, seed: int) -> Tile2Vec:
    """A random-init Tile2Vec net, its weights a function of ``seed``."""
    torch.manual_seed(seed)
    return Tile2Vec(config)


def distance_ratio(features: np.ndarray, regions: pd.DataFrame, anchors: np.ndarray, k_nearest: int = 4) -> float:
    """Mean neighbour distance / mean distant distance in feature space (lower = more spatial).

    For every anchor with features, its neighbours are the adjacent regions with features
    (:func:`neighbour_sets`) and its distant tiles all other regions with features; the ratio
    compares the mean Euclidean distances over all such pairs. Deterministic (no sampling).
    """
    valid = np.flatnonzero(~np.isnan(features).any(axis=1))
    anchors = np.intersect1d(anchors, valid)
    near_d, far_d = [], []
    for a, near in zip(anchors, neighbour_sets(regions, anchors, valid, k_nearest), strict=True):
        far = valid[~np.isin(valid, near) & (valid != a)]
        near_d.append(np.linalg.norm(features[near] - features[a], axis=1))
        far_d.append(np.linalg.norm(features[far] - features[a], axis=1))
    if not near_d:
        raise ValueError("no anchor has features; cannot compute the distance ratio")
    return float(np.concatenate(near_d).mean() / np.concatenate(far_d).mean())


def train_tile2vec(inputs: BaselineInputs, config: Tile2VecConfig | None = None) -> tuple[Tile2Vec, list[dict]]:
    """Train on triplets of training regions; returns the model (eval mode) and the step log."""
    model, history, _, _ = _train(inputs, config or Tile2VecConfig.for_scale(inputs.scale))
    return model, history


def _train(inputs: BaselineInputs, cfg: Tile2VecConfig) -> tuple[Tile2Vec, list[dict], dict, Tile2Vec]:
    """The trained model, its log, its training facts and the same model at initialisation."""
    idx = train_positions(inputs)
    model = build(cfg, inputs.seed)  # the same weights fit_init keeps
    init = copy.deepcopy(model).eval()
    regions = inputs.ds.regions
    data = TripletDataset(inputs.tensors.satellite, idx, neighbour_sets(regions, idx, idx, cfg.k_nearest),
                          inputs.seed)
    val_pos, val = val_positions(inputs), None
    if val_pos is not None:
        both = np.union1d(idx, val_pos)
        val = TripletDataset(inputs.tensors.satellite, val_pos, neighbour_sets(regions, val_pos, both, cfg.k_nearest),
                             inputs.seed + 1, pool=both, augment=False)
    stopping = stopping_fields(inputs, val)
    history, facts = train(model, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=inputs.seed,
                           progress=inputs.progress, desc="tile2vec", val_dataset=val, stopping=stopping)
    return model, history, facts, init


def fit_init(inputs: BaselineInputs, config: Tile2VecConfig | None = None) -> FittedEncoder:
    """Tile2Vec's random-init twin: every region's embedding at the weights :func:`fit` starts from.

    What triplet training adds is the trained encoder's gain over this one, probed the same way.
    """
    cfg = config or Tile2VecConfig.for_scale(inputs.scale)
    model = build(cfg, inputs.seed).eval()
    feats = embed_all(model.embed, inputs, desc="tile2vec init features")
    n = count_parameters(model)["total"]
    return FittedEncoder("Tile2Vec (random init)", feats, [], n, 0,
                         {"config": asdict(cfg), "weights": f"the Tile2Vec run's weights at initialisation "
                                                            f"(seed {inputs.seed}), untrained"})


def fit(inputs: BaselineInputs, config: Tile2VecConfig | None = None) -> FittedEncoder:
    """Train Tile2Vec and return every region's embedding ``z``."""
    cfg = config or Tile2VecConfig.for_scale(inputs.scale)
    if len(inputs.ds.regions) != len(inputs.tensors):
        raise ValueError(f"regions table has {len(inputs.ds.regions)} rows but tensors hold {len(inputs.tensors)}")
    model, history, facts, init = _train(inputs, cfg)
    feats = embed_all(model.embed, inputs, desc="tile2vec features")
    n = count_parameters(model)["total"]
    return FittedEncoder("Tile2Vec", feats, history, n, n,
                         {"config": asdict(cfg), "weights": "trained from random init (triplet loss)",
                          "final_loss": history[-1]["loss"] if history else None, "training": facts,
                          "cka_to_init": linear_cka(embed_all(init.embed, inputs, desc="tile2vec init"), feats)})
