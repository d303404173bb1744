"""Autoencoder baseline (UrbanCLIP §4.1.2, after Kramer 1991).

A conv autoencoder trained to reconstruct satellite tiles; the region feature is its bottleneck vector.

Encoder: the shared stride-2 conv stack (:class:`~urbanlib.baselines._common.ConvEncoder`) without
pooling, flattened, then a linear map to the bottleneck. Decoder: the mirror image (linear, then
transposed convs that double the side). Loss: mean squared error on CLIP-normalised pixels, the
pixel space PCA is fitted in, so the two reconstruction errors are comparable. Tiles get the shared
dihedral augmentation.

Length and learning rate: with ``inputs.val_idx`` the reconstruction loss of those held-out tiles
(unaugmented) decides when training stops (the scale's early stopping); the epochs are the cap,
``max(preset epochs, scale.pretrain_epochs)`` (:func:`~urbanlib.baselines._common.epoch_cap`).
The learning rate is the ``"Autoencoder"`` family's (:func:`urbanlib.pipeline.hparams.chosen_lr`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from urbanlib.eval.metrics import linear_cka
from urbanlib.models.parameters import count_parameters
from urbanlib.pipeline.tensors import normalize
from urbanlib.scales import Scale

from ._common import (
    ConvConfig,
    ConvEncoder,
    TileDataset,
    embed_all,
    resolve_scale,
    sized,
    train_positions,
    val_positions,
)
from .base import BaselineInputs, FittedEncoder
from .training import stopping_fields, train

FAMILY = "Autoencoder"  # its learning-rate family (urbanlib.pipeline.hparams.GRIDS)


@dataclass
class AutoencoderConfig:
    """Architecture and training length; :meth:`for_scale` gives the presets."""

    conv: ConvConfig = field(default_factory=lambda: ConvConfig(convs_per_block=1, batch_norm=False))  # encoder
    bottleneck: int = 64  # feature dimension
    epochs: int = 8  # passes over the training tiles (the cap when a validation set decides the length)
    batch_size: int = 16  # tiles per step (small batches: more steps in the same time)
    lr: float = 2e-3  # AdamW peak learning rate (warmup + cosine, or cut on plateaus)
    augment: bool = True  # shared dihedral augmentation of the training tiles

    @classmethod
    def for_scale(cls, scale: Scale | str | None, **overrides) -> AutoencoderConfig:
        """Preset sized for ``scale`` (smoke: seconds; default/full: ~40 s on one thread; paper: larger).

        Epochs: :func:`~urbanlib.baselines._common.epoch_cap`; lr: the family's
        (:func:`~urbanlib.pipeline.hparams.chosen_lr`) unless overridden. No BatchNorm: with small
        batches it slowed reconstruction training down in our runs.
        """
        s = resolve_scale(scale)
        if s.name == "smoke":
            cfg = cls(ConvConfig(widths=(16, 32, 64), convs_per_block=1, batch_norm=False), bottleneck=32, epochs=40,
                      batch_size=8)
        elif s.name == "paper":
            cfg = cls(ConvConfig(widths=(32, 64, 128, 256), batch_norm=False), bottleneck=128, epochs=30,
                      batch_size=32)
        else:
            cfg = cls()
        return sized(cfg, s, FAMILY, overrides)


class ConvAutoencoder(nn.Module):
    """Tiles (B, 3, S, S) -> bottleneck (B, D) -> reconstruction (B, 3, S, S); S divisible by 2**blocks."""

    def __init__(self, cfg: AutoencoderConfig, tile_px: int):
        super().__init__()
        self.cfg = cfg
        n_blocks = len(cfg.conv.widths)
        if tile_px % (2 ** n_blocks):
            raise ValueError(f"tile side {tile_px} px is not divisible by 2**{n_blocks} (conv blocks)")
        self.side = tile_px // 2 ** n_blocks  # side of the smallest feature map
        c = cfg.conv.widths[-1]
        self.encoder = ConvEncoder(cfg.conv)
        self.to_code = nn.Linear(c * self.side ** 2, cfg.bottleneck)
        self.from_code = nn.Linear(cfg.bottleneck, c * self.side ** 2)
        ups, widths = [], list(cfg.conv.widths[::-1]) + [cfg.conv.widths[0]]
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            bn = cfg.conv.batch_norm
            ups += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1, bias=not bn),
                    nn.BatchNorm2d(w_out) if bn else nn.Identity(), nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*ups, nn.Conv2d(widths[-1], cfg.conv.in_chans, 3, padding=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D) bottleneck."""
        return self.to_code(self.encoder.feature_map(x).flatten(1))  # (B, C*s*s) -> (B, D)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 3, S, S)."""
        h = self.from_code(z).view(len(z), -1, self.side, self.side)  # (B, C, s, s)
        return self.decoder(h)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Reconstruction loss terms of a batch ``{"image": (B, 3, S, S)}``."""
        x = batch["image"]
        loss = F.mse_loss(self.decode(self.encode(x)), x)
        return {"loss": loss, "reconstruction_loss": loss.detach()}


def build(config: AutoencoderConfig, tile_px: int, seed: int) -> ConvAutoencoder:
    """A random-init autoencoder, its weights a function of ``seed``."""
    torch.manual_seed(seed)
    return ConvAutoencoder(config, tile_px)


@torch.no_grad()
def reconstruction_mse(model: ConvAutoencoder, satellite: np.ndarray, batch_size: int = 128) -> float:
    """Mean squared error per pixel of reconstructing uint8 tiles (n, 3, S, S), CLIP-normalised space."""
    model.eval()
    total, count = 0.0, 0
    for s in range(0, len(satellite), batch_size):
        x = normalize(torch.from_numpy(satellite[s:s + batch_size]))
        total += float(F.mse_loss(model.decode(model.encode(x)), x, reduction="sum"))
        count += x.numel()
    return total / count


def train_autoencoder(inputs: BaselineInputs, config: AutoencoderConfig | None = None,
                      ) -> tuple[ConvAutoencoder, list[dict]]:
    """Train on the training regions' tiles; returns the model (eval mode) and the step log."""
    model, history, _, _ = _train(inputs, config or AutoencoderConfig.for_scale(inputs.scale))
    return model, history


def _train(inputs: BaselineInputs, cfg: AutoencoderConfig) -> tuple[ConvAutoencoder, list[dict], dict,
                                                                    ConvAutoencoder]:
    """The trained model, its log, its training facts and the same model at initialisation."""
    model = _initial(inputs, cfg)
    init = copy.deepcopy(model).eval()
    data = TileDataset(inputs.tensors.satellite, train_positions(inputs), inputs.seed, augment=cfg.augment)
    val_pos = val_positions(inputs)
    val = TileDataset(inputs.tensors.satellite, val_pos, inputs.seed, augment=False) if val_pos is not None else None
    stopping = stopping_fields(inputs, val)
    history, facts = train(model, data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=inputs.seed,
                           progress=inputs.progress, desc="autoencoder", val_dataset=val, stopping=stopping)
    return model, history, facts, init


def _initial(inputs: BaselineInputs, cfg: AutoencoderConfig) -> ConvAutoencoder:
    """The weights :func:`fit` starts from (and :func:`fit_init` keeps): a function of the seed alone."""
    return build(cfg, inputs.tensors.satellite.shape[-1], inputs.seed)


def _encoder_params(model: ConvAutoencoder) -> int:
    # the decoder is not part of the encoder
    return count_parameters(model.encoder)["total"] + count_parameters(model.to_code)["total"]


def fit_init(inputs: BaselineInputs, config: AutoencoderConfig | None = None) -> FittedEncoder:
    """The Autoencoder's random-init twin: every region's bottleneck at the weights :func:`fit` starts from.

    What reconstruction training adds is the trained encoder's gain over this one, probed the same way.
    """
    cfg = config or AutoencoderConfig.for_scale(inputs.scale)
    model = _initial(inputs, cfg).eval()
    feats = embed_all(model.encode, inputs, desc="autoencoder init features")
    return FittedEncoder("Autoencoder (random init)", feats, [], _encoder_params(model), 0,
                         {"config": asdict(cfg), "weights": f"the Autoencoder run's weights at initialisation "
                                                            f"(seed {inputs.seed}), untrained"})


def fit(inputs: BaselineInputs, config: AutoencoderConfig | None = None) -> FittedEncoder:
    """Train the autoencoder and return every region's bottleneck vector."""
    cfg = config or AutoencoderConfig.for_scale(inputs.scale)
    model, history, facts, init = _train(inputs, cfg)
    feats = embed_all(model.encode, inputs, desc="autoencoder features")
    n = _encoder_params(model)
    return FittedEncoder("Autoencoder", feats, history, n, n,
                         {"config": asdict(cfg), "weights": "trained from random init (reconstruction)",
                          "final_loss": history[-1]["loss"] if history else None, "training": facts,
                          "cka_to_init": linear_cka(embed_all(init.encode, inputs, desc="autoencoder init"), feats)})
