"""ResNet-18 baselines (UrbanCLIP §4.1.2, UrbanLN A.2): a supervised CNN transferred to tiles.

The papers use timm/torchvision's ImageNet ResNet-18 as a frozen feature extractor. Hub weights
cannot be downloaded here, so three labelled variants exist:

- ``fit_imagenet``: the papers' baseline, when a local ImageNet checkpoint is given
  (``ResNetConfig.weights`` or ``$URBANLIB_RESNET18_WEIGHTS``); otherwise an explicit n/a.
- ``fit_random``: the same network with random weights and no training (a floor, labelled so).
- ``fit_landuse``: a stand-in "pretrained" ResNet-18, trained from scratch to classify the
  land-use ``zone`` of *another* SynthCity profile (the next one in ``PROFILES`` after the target
  city's; ``synth-grid`` for real data) at the same tile size. The target city's zones (hidden
  ground truth) are never read. Like ImageNet pretraining, it is supervised on a different
  dataset and transferred frozen.

Features: the global-average-pooled penultimate layer (512-d). Input: tiles are scaled to [0, 1],
resized to ``input_px`` (bilinear) and standardised with ImageNet's mean and std, what ImageNet
weights expect. The architecture is timm's unchanged ``resnet18`` (stride 32 overall), so small
tiles leave a small last map: 2x2 at the default 64 px, 1x1 for smoke (32 px, kept for speed),
7x7 at the paper's 224 px. Tiles of another size than ``input_px`` are up/down-sampled.

The stand-in's length: with ``inputs.val_idx`` given (the benchmark's runs) its source-city holdout
(``holdout_fraction`` of the source regions, never trained on) is its validation set: the zone
cross-entropy of those tiles, unaugmented, stops the run (the scale's early stopping) and its best
weights are kept. The epochs are the cap, ``max(preset epochs, scale.pretrain_epochs)``
(:func:`~urbanlib.baselines._common.epoch_cap`); the learning rate is the ``"ResNet-18 land-use"``
family's (:func:`urbanlib.pipeline.hparams.chosen_lr`). Without ``val_idx``: fixed epochs.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from urbanlib.data.synthcity import PROFILES, load_city
from urbanlib.eval.metrics import linear_cka
from urbanlib.models.parameters import count_parameters
from urbanlib.pipeline.tensors import load_tensors
from urbanlib.scales import Scale, get_scale

from ._common import (
    TileDataset,
    embed_all,
    recalibrate_batchnorm,
    resolve_scale,
    sized,
)
from .base import BaselineInputs, FittedEncoder, NotAvailable
from .training import stopping_fields, train

FAMILY = "ResNet-18 land-use"  # the stand-in's learning-rate family (urbanlib.pipeline.hparams.GRIDS)

WEIGHTS_ENV = "URBANLIB_RESNET18_WEIGHTS"
REAL_DATA_SOURCE = "synth-grid"  # land-use source profile for datasets that are not SynthCity


@dataclass
class ResNetConfig:
    """Input size, weights and the land-use stand-in's training; :meth:`for_scale` gives the presets."""

    input_px: int = 64  # tiles are resized to this side before the network
    weights: str | None = None  # local ImageNet checkpoint (.safetensors/.pth); None: $URBANLIB_RESNET18_WEIGHTS
    source_profile: str | None = None  # SynthCity profile supervising the stand-in (None: next after the target)
    holdout_fraction: float = 0.2  # source regions held out: land-use accuracy, and the stand-in's validation set
    epochs: int = 2  # stand-in training passes over the source city's regions (the cap with validation)
    batch_size: int = 32  # tiles per step
    lr: float = 1e-3  # AdamW peak learning rate (warmup + cosine, or cut on plateaus)

    @classmethod
    def for_scale(cls, scale: Scale | str | None, **overrides) -> ResNetConfig:
        """Preset sized for ``scale`` (default/full: ResNet-18 at 64 px is the slowest baseline on a CPU).

        Epochs: :func:`~urbanlib.baselines._common.epoch_cap`; lr: the stand-in family's
        (:func:`~urbanlib.pipeline.hparams.chosen_lr`) unless overridden.
        """
        s = resolve_scale(scale)
        if s.name == "smoke":
            cfg = cls(input_px=32, epochs=3, batch_size=8)
        elif s.name == "paper":
            cfg = cls(input_px=224, epochs=30, batch_size=64)
        else:
            cfg = cls()
        return sized(cfg, s, FAMILY, overrides)


def imagenet_input(input_px: int):
    """uint8 (B, 3, S, S) -> ImageNet-standardised float (B, 3, input_px, input_px)."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)

    def transform(x: torch.Tensor) -> torch.Tensor:
        single = x.ndim == 3
        x = x[None] if single else x
        x = x.float() / 255.0
        if x.shape[-1] != input_px:
            x = F.interpolate(x, size=(input_px, input_px), mode="bilinear", align_corners=False)
        x = (x - mean) / std
        return x[0] if single else x

    return transform


def create(num_classes: int = 0, seed: int = 0, weights: str | Path | None = None) -> nn.Module:
    """The timm ``resnet18`` (random init by ``seed``, or a local checkpoint); ``num_classes=0``: pooled features."""
    torch.manual_seed(seed)
    if weights is None:
        return timm.create_model("resnet18", pretrained=False, num_classes=num_classes)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"ResNet-18 weights file {path} does not exist (set {WEIGHTS_ENV} to a local file)")
    try:  # timm drops a mismatching classifier and reads .safetensors or .pth
        return timm.create_model("resnet18", pretrained=True, num_classes=num_classes,
                                 pretrained_cfg_overlay={"file": str(path)})
    except (RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a timm/torchvision ResNet-18 state dict ({e})") from None


def _features(model: nn.Module):
    def encode(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True)  # (B, 512)
    return encode


def _encode_all(model: nn.Module, inputs: BaselineInputs, cfg: ResNetConfig, desc: str) -> np.ndarray:
    model.eval()
    return embed_all(_features(model), inputs, batch_size=64, transform=imagenet_input(cfg.input_px), desc=desc)


def _untrained_config(inputs: BaselineInputs) -> ResNetConfig:
    """The scale's preset for a network that is not trained (no learning rate is chosen or read)."""
    return ResNetConfig.for_scale(inputs.scale, lr=ResNetConfig.lr)


def fit_random(inputs: BaselineInputs, config: ResNetConfig | None = None) -> FittedEncoder:
    """Random-init ResNet-18 features (no training): how much the architecture alone gives."""
    cfg = config or _untrained_config(inputs)
    model = create(0, inputs.seed)
    feats = _encode_all(model, inputs, cfg, "ResNet-18 (random) features")
    return FittedEncoder("ResNet-18 (random)", feats, [], count_parameters(model)["total"], 0,
                         {"config": asdict(cfg), "weights": f"random init (seed {inputs.seed}), untrained"})


def fit_imagenet(inputs: BaselineInputs, config: ResNetConfig | None = None) -> FittedEncoder | NotAvailable:
    """The papers' ResNet-18: ImageNet weights from a local file, frozen; n/a without one."""
    cfg = config or _untrained_config(inputs)
    weights = cfg.weights or os.environ.get(WEIGHTS_ENV)
    if not weights:
        return NotAvailable("ResNet-18 (ImageNet)", f"needs local ImageNet ResNet-18 weights: set {WEIGHTS_ENV}")
    model = create(0, inputs.seed, weights)
    feats = _encode_all(model, inputs, cfg, "ResNet-18 (ImageNet) features")
    return FittedEncoder("ResNet-18 (ImageNet)", feats, [], count_parameters(model)["total"], 0,
                         {"config": asdict(cfg), "weights": str(weights)})


# ---- land-use stand-in ------------------------------------------------------------------------
def source_profile(inputs: BaselineInputs, cfg: ResNetConfig) -> str:
    """The SynthCity profile whose land use supervises the stand-in; never one of the target's cities."""
    targets = {str(c) for c in inputs.ds.cities}
    meta_profile = inputs.ds.meta.get("profile")
    if isinstance(meta_profile, dict) and meta_profile.get("name"):
        targets.add(meta_profile["name"])
    if cfg.source_profile is not None:
        if cfg.source_profile in targets:
            raise ValueError(f"source_profile {cfg.source_profile!r} is the target city; pick another profile")
        if cfg.source_profile not in PROFILES:
            raise KeyError(f"unknown SynthCity profile {cfg.source_profile!r}; available: {PROFILES}")
        return cfg.source_profile
    synth = [p for p in PROFILES if p in targets]
    if not synth:
        return REAL_DATA_SOURCE
    start = PROFILES.index(synth[-1])
    for k in range(1, len(PROFILES)):
        cand = PROFILES[(start + k) % len(PROFILES)]
        if cand not in targets:
            return cand
    raise ValueError("every SynthCity profile is a target city; no other profile can supervise the stand-in")


class LandUseNet(nn.Module):
    """ResNet-18 classifying zones; ``forward`` returns the cross-entropy terms."""

    def __init__(self, n_classes: int, seed: int):
        super().__init__()
        self.net = create(n_classes, seed)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Cross-entropy terms of a batch ``{"image": (B, 3, H, W), "label": (B,) long}``."""
        logits = self.net(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        return {"loss": loss, "classification_loss": loss.detach(),
                "batch_accuracy": (logits.argmax(1) == batch["label"]).float().mean()}


@torch.no_grad()
def landuse_scores(net: nn.Module, satellite: np.ndarray, labels: np.ndarray, input_px: int) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a zone classifier on uint8 tiles (n, 3, S, S)."""
    net.eval()
    x = imagenet_input(input_px)(torch.from_numpy(satellite))
    logits = torch.cat([net(x[s:s + 64]) for s in range(0, len(x), 64)])
    y = torch.as_tensor(labels, dtype=torch.long)
    return {"accuracy": float((logits.argmax(1) == y).float().mean()), "cross_entropy": float(F.cross_entropy(logits, y))}


def load_source(inputs: BaselineInputs, cfg: ResNetConfig):
    """The source city (dataset, uint8 tiles at the target's tile size, zone names, zone index per region)."""
    name = source_profile(inputs, cfg)
    scale = inputs.scale or get_scale("default")
    src = load_city(name, scale=scale, progress=inputs.progress)
    tiles = load_tensors(src, inputs.tensors.satellite.shape[-1], progress=inputs.progress)
    have = np.flatnonzero(tiles.satellite_mask)
    zones = sorted(src.regions["zone"].iloc[have].unique())
    y = src.regions["zone"].map({z: i for i, z in enumerate(zones)}).to_numpy()
    return name, tiles, have, zones, y


def train_landuse(inputs: BaselineInputs, config: ResNetConfig | None = None) -> tuple[LandUseNet, dict]:
    """Train the stand-in on the source city's zones.

    Returns:
        The net (eval mode) and facts about it: source profile, zone names, region counts, step log
        (``"history"``), held-out accuracy, the source tensors and zone indices (``"source"``), the
        source positions trained on / held out (``"fit_positions"`` / ``"holdout_positions"``), the
        run's facts (``"training"``) and the net at initialisation (``"init"``).
    """
    cfg = config or ResNetConfig.for_scale(inputs.scale)
    name, tiles, have, zones, y = load_source(inputs, cfg)
    rng = np.random.default_rng([inputs.seed, 4])
    perm = rng.permutation(have)
    n_hold = int(round(cfg.holdout_fraction * len(perm)))
    hold, fit_idx = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    model = LandUseNet(len(zones), inputs.seed)
    init = copy.deepcopy(model.net).eval()
    data = TileDataset(tiles.satellite, fit_idx, inputs.seed, extra={"label": torch.as_tensor(y[fit_idx])},
                       transform=imagenet_input(cfg.input_px))
    val = None
    if inputs.val_idx is not None and len(hold):  # the source holdout decides the length
        val = TileDataset(tiles.satellite, hold, inputs.seed, augment=False, extra={"label": torch.as_tensor(y[hold])},
                          transform=imagenet_input(cfg.input_px))
    stopping = stopping_fields(inputs, val)
    history, facts = train(model, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=inputs.seed,
                           progress=inputs.progress, desc="resnet-landuse", val_dataset=val, stopping=stopping)
    recalibrate_batchnorm(model, model.net, tiles.satellite, fit_idx, imagenet_input(cfg.input_px))
    info = {"source_profile": name, "zones": zones, "source_train_regions": int(len(fit_idx)),
            "source_holdout_regions": int(len(hold)), "history": history, "source": (tiles, y),
            "fit_positions": fit_idx, "holdout_positions": hold, "training": facts, "init": init}
    if len(hold):
        info["source_holdout_accuracy"] = landuse_scores(model.net, tiles.satellite[hold], y[hold],
                                                         cfg.input_px)["accuracy"]
        info["source_holdout_majority_rate"] = float(np.bincount(y[hold]).max() / len(hold))
    return model, info


def fit_landuse(inputs: BaselineInputs, config: ResNetConfig | None = None) -> FittedEncoder:
    """The land-use stand-in: ResNet-18 supervised on another profile's zones, frozen on the target's tiles."""
    cfg = config or ResNetConfig.for_scale(inputs.scale)
    model, info = train_landuse(inputs, cfg)
    history = info.pop("history")
    for key in ("source", "fit_positions", "holdout_positions"):
        info.pop(key)
    feats = _encode_all(model.net, inputs, cfg, "ResNet-18 (land-use) features")
    init = _encode_all(info.pop("init"), inputs, cfg, "ResNet-18 (land-use) init")
    n = count_parameters(model.net)["total"] - count_parameters(model.net.get_classifier())["total"]
    return FittedEncoder("ResNet-18 (land-use stand-in)", feats, history, n, n,
                         {"config": asdict(cfg), "weights": f"trained from random init on {info['source_profile']} "
                          "land-use zones (stand-in for ImageNet)", **info, "cka_to_init": linear_cka(init, feats)})
