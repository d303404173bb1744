"""UrbanCLIP §3.5.1, "additional data alignment": POIs and roads as a third contrastive modality.

The paper only sketches the option ("a positive sample could be the combination of a satellite
image, a text description, the majority of POI categories as parks, and the road network of a
given area"); it reports no numbers. Here the third modality of a region is one vector:

- its POI counts by category (``poi_cat_*`` columns, ``ln(1 + count)``), and
- the density of the roads the renderer *drew* on its satellite tile: the share of pixels of each
  road colour of :mod:`urbanlib.data.synthcity.render_satellite` (local street, arterial, major
  road), passed through the city's sensor model. It is read from the tile's pixels, never from the
  latent road level that drives carbon and night light.

The vector is standardised over the pretraining regions and encoded by a small MLP
(:class:`InfusedUrbanCLIP`); the image, text and POI/road embeddings are aligned pairwise with
InfoNCE: UrbanCLIP's image–text term plus ``lambda_modality`` times the mean of the image–POI and
text–POI terms. ``lambda_modality`` is 0 by default (the option is off and the model trains as
UrbanCLIP). The probe still reads only the frozen image encoder, like every row of the benchmark.

POI counts are the input of three targets (``poi_count`` is their sum; comments and crime are drawn
from it), so a model aligned with them has seen those targets' inputs during pretraining:
:data:`SEES_TARGET_INPUTS` names them and the page marks those rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from urbanlib.cache import stable_hash
from urbanlib.data.dataset import UrbanDataset
from urbanlib.models import Vocab, get_config
from urbanlib.models.losses import contrastive_loss, urbanclip_loss
from urbanlib.models.parameters import count_parameters
from urbanlib.models.text import tokenize
from urbanlib.models.urbanclip import UrbanCLIP
from urbanlib.models.vocab import PAD_ID
from urbanlib.pipeline.caption_sets import urbanclip_texts
from urbanlib.pipeline.city import City
from urbanlib.pipeline.pairs import AugmentedPairs
from urbanlib.pipeline.runs import RunResult, train_or_load
from urbanlib.pipeline.urbanclip import train_config, trainable_regions
from urbanlib.provenance import files_hash

# The road colours render_satellite.render_tile fills road rectangles with (before the sensor model).
ROAD_COLOURS: dict[str, tuple[int, int, int]] = {"street": (95, 95, 95), "arterial": (85, 85, 85),
                                                 "major": (70, 70, 72)}
ROAD_RADIUS_SIGMAS = 2.8  # a pixel is road-coloured within 2.8 noise sigmas (95% of chi-square with 3 dof)
# Targets whose inputs the POI counts are (SynthCity's generator: poi_count = sum of poi_cat_*;
# comments and crime are drawn from the POI total).
SEES_TARGET_INPUTS = ("poi_count", "comments", "crime")
SOURCE_HASH = files_hash([Path(__file__)])[:16]  # this module's code, part of every run key it makes


def sensor_colour(rgb, sensor: dict) -> np.ndarray:
    """An RGB colour (3,) after the deterministic part of a SynthCity sensor (saturation, gain, haze)."""
    arr = np.asarray(rgb, np.float64)
    grey = arr.mean()
    arr = grey + sensor.get("saturation", 1.0) * (arr - grey)
    arr = arr * np.asarray(sensor.get("gain", (1.0, 1.0, 1.0)), np.float64)
    haze = sensor.get("haze", 0.0)
    arr = (1 - haze) * arr + haze * np.asarray(sensor.get("haze_colour", (200, 200, 200)), np.float64)
    return np.clip(arr, 0, 255)


def road_shares(tiles: np.ndarray, sensor: dict | None = None) -> np.ndarray:
    """Share of each tile's pixels drawn in each road colour: (N, 3) for ``ROAD_COLOURS``' order.

    A pixel counts for the road colour nearest to it if it lies within ``ROAD_RADIUS_SIGMAS`` times
    the sensor's pixel noise (Euclidean over RGB) of that colour as the sensor renders it.

    Args:
        tiles: (N, 3, H, W) uint8 satellite tiles, as :class:`~urbanlib.pipeline.tensors.RegionTensors` holds them.
        sensor: the city's sensor model (``ds.meta["profile"]["sensor"]``); None: a neutral one with noise 3.
    """
    sensor = sensor or {"noise": 3.0}
    ref = np.stack([sensor_colour(c, sensor) for c in ROAD_COLOURS.values()])  # (K, 3)
    radius = ROAD_RADIUS_SIGMAS * max(float(sensor.get("noise", 3.0)), 1.0)
    x = np.asarray(tiles, np.float64).transpose(0, 2, 3, 1)[..., None, :]  # (N, H, W, 1, 3)
    dist = np.sqrt(((x - ref) ** 2).sum(-1))  # (N, H, W, K)
    nearest = dist.argmin(-1)  # (N, H, W)
    hit = dist.min(-1) <= radius
    return np.stack([(hit & (nearest == k)).mean(axis=(1, 2)) for k in range(len(ref))], axis=1)


def poi_columns(ds: UrbanDataset) -> list[str]:
    """The dataset's POI-by-category count columns (``poi_cat_*``), sorted."""
    return sorted(c for c in ds.regions.columns if c.startswith("poi_cat_"))


def modality_inputs(city: City) -> tuple[np.ndarray, list[str]]:
    """The third modality of every region, unstandardised: ``ln(1 + POI count)`` per category ++ road shares.

    Returns:
        ``(x (N, C + 3), names)``; regions without a tile get road shares of NaN.

    Raises:
        ValueError: the dataset has no ``poi_cat_*`` columns.
    """
    cols = poi_columns(city.ds)
    if not cols:
        raise ValueError("modality infusion needs POI counts by category (poi_cat_* columns); this dataset has none")
    poi = np.log1p(city.ds.regions[cols].to_numpy(np.float64))
    sensor = city.ds.meta.get("profile", {}).get("sensor")
    roads = road_shares(city.tensors.satellite, sensor)
    roads[~city.tensors.satellite_mask] = np.nan
    return np.concatenate([poi, roads], axis=1), [*cols, *(f"road_{k}" for k in ROAD_COLOURS)]


def standardise(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x`` standardised with the mean and std of rows ``idx`` (NaN -> 0, the mean); float32."""
    mu, sd = np.nanmean(x[idx], 0), np.nanstd(x[idx], 0)
    sd[~(sd > 0)] = 1.0
    return np.nan_to_num((x - mu) / sd).astype(np.float32)


class InfusedUrbanCLIP(UrbanCLIP):
    """UrbanCLIP with a third modality (an MLP over a per-region vector) in its contrastive objective.

    ``forward(batch)`` needs ``batch["modality"]`` (B, M) besides UrbanCLIP's image and text and
    returns UrbanCLIP's terms plus ``modality_loss``: the mean of the image–modality and
    text–modality InfoNCE terms, added to ``loss`` with weight ``lambda_modality`` (0: off, the
    loss and its gradient are UrbanCLIP's). The extra parameters are built after UrbanCLIP's, so
    a seed gives the same UrbanCLIP weights with or without them.

    Args:
        cfg: UrbanCLIP's config.
        vocab: the restricted vocabulary (see :class:`UrbanCLIP`).
        modality_dim: M, the width of the modality vector.
        hidden: the MLP's hidden width.
        lambda_modality: weight of ``modality_loss`` in ``loss``.
    """

    def __init__(self, cfg, vocab: Vocab | None = None, modality_dim: int = 1, hidden: int = 128,
                 lambda_modality: float = 0.0):
        super().__init__(cfg, vocab)
        self.lambda_modality = float(lambda_modality)
        self.modality_encoder = nn.Sequential(nn.Linear(modality_dim, hidden), nn.GELU(),
                                              nn.Linear(hidden, self.cfg.embed_dim))
        self.modality_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.cfg.init_temperature)))

    def encode_modality(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, M) modality vectors -> (B, embed_dim) embeddings."""
        emb = self.modality_encoder(x)
        return F.normalize(emb, dim=-1) if normalize else emb

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """UrbanCLIP's Eq. 7 terms + ``modality_loss`` (pairwise InfoNCE with the third modality)."""
        out = self.forward_features(batch["image"], batch["text"])
        terms = urbanclip_loss(out["image_emb"], out["text_emb"], out["logit_scale"], out["logits"], out["labels"],
                               self.cfg.lambda_con, self.cfg.lambda_lm, pad_id=PAD_ID)
        m = self.encode_modality(batch["modality"])  # (B, D)
        scale = self.modality_logit_scale.exp().clamp(max=100.0)
        mod = 0.5 * (contrastive_loss(out["image_emb"], m, scale) + contrastive_loss(out["text_emb"], m, scale))
        terms["modality_loss"] = mod
        terms["loss"] = terms["loss"] + self.lambda_modality * mod
        return terms


class ModalityPairs:
    """:class:`AugmentedPairs` with each pair's region's modality vector as ``"modality"``.

    Args:
        pairs: the image–text pairs.
        modality: (N, M) float32, one row per region of the dataset (indexed by ``pairs.region_index``).
    """

    def __init__(self, pairs: AugmentedPairs, modality: np.ndarray):
        self.pairs, self.modality = pairs, torch.from_numpy(np.asarray(modality, np.float32))

    def set_epoch(self, epoch: int) -> None:
        """Redraw the captions of the epoch (see :meth:`AugmentedPairs.set_epoch`)."""
        self.pairs.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.pairs[i]
        return {**item, "modality": self.modality[int(item["region_index"])]}


def pretrain_infused(city: City, lambda_modality: float = 1.0, hidden: int = 128, progress: bool = False,
                     validate: bool = True) -> RunResult:
    """Pretrain (or load the cached) UrbanCLIP + POI/road infusion on the city's pretraining tiles.

    Everything else is :func:`urbanlib.pipeline.urbanclip.pretrain_urbanclip`'s recipe: the
    rule-refined short captions, the restricted vocabulary, the same optimiser settings and step
    cap, early stopping on the held-out tiles (``City.pretrain_val_idx``).

    Args:
        city: the city.
        lambda_modality: weight of the third modality's loss (0 trains UrbanCLIP with an idle extra head).
        hidden: the modality MLP's hidden width.
        progress: progress bars.
        validate: stop on the held-out tiles' loss (False: train to the cap).
    """
    ds, tensors, scale, seed = city.ds, city.tensors, city.scale, city.seed
    texts = urbanclip_texts(ds, refined=True)
    idx = trainable_regions(city.pretrain_idx, tensors, texts)
    if len(idx) == 0:
        raise ValueError("no training region has both a satellite image and a caption")
    raw, names = modality_inputs(city)
    modality = standardise(raw, idx)  # label-free statistics of the pretraining regions
    model_name = f"urbanclip-{scale.model_size}"
    cfg = get_config(model_name)
    ctx = cfg.context_length
    train_texts = [texts[i] for i in idx]
    vocab = Vocab.from_tokenized(tokenize([t for ts in train_texts for t in ts], ctx))
    torch.manual_seed(seed)
    model = InfusedUrbanCLIP(cfg, vocab, modality_dim=modality.shape[1], hidden=hidden,
                             lambda_modality=lambda_modality)
    data = ModalityPairs(AugmentedPairs(tensors.satellite[idx], train_texts, idx, lambda t: tokenize(t, ctx),
                                        "sample", augment=False, seed=seed), modality)
    vidx = trainable_regions(city.pretrain_val_idx, tensors, texts) if validate else np.zeros(0, int)
    val = None
    if len(vidx):
        val = ModalityPairs(AugmentedPairs(tensors.satellite[vidx], [texts[i] for i in vidx], vidx,
                                           lambda t: tokenize(t, ctx), "sample", augment=False, seed=seed), modality)
    tcfg = train_config(scale, seed, progress, n_pairs=len(idx), validate=val is not None)
    key = {"method": "urbanclip-infused", "model": model.cfg.to_dict(), "data": tensors.key, "regions": idx.tolist(),
           "texts": stable_hash(train_texts), "seed": seed, "val_regions": vidx.tolist(),
           "val_texts": stable_hash([texts[i] for i in vidx]), "modality": stable_hash(modality.round(5).tolist()),
           "modality_names": names, "lambda_modality": lambda_modality, "hidden": hidden, "source": SOURCE_HASH}
    info = {"model": model_name, "vocab_size": len(vocab), "train_regions": len(idx), "modality_dim": modality.shape[1],
            "lambda_modality": lambda_modality, "parameters": count_parameters(model)["total"]}
    return train_or_load(f"urbanclip-infused-{'+'.join(map(str, ds.cities))}", model, data, tcfg, key, info,
                         val_dataset=val)
