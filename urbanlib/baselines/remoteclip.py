"""RemoteCLIP (Liu et al., TGRS 2024): a CLIP trained on remote-sensing image-text pairs, used frozen.

It is an open_clip CLIP with RemoteCLIP's released weights; region features are its image
embeddings. The weights cannot be downloaded here, so they are opt-in: a local checkpoint given in
:class:`RemoteCLIPConfig` or ``$URBANLIB_REMOTECLIP_WEIGHTS``. Without one the benchmark shows an
explicit "n/a" cell, never a random-init stand-in. The loading path is tested with a tiny
random-init open_clip CLIP saved to a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from urbanlib.models.parameters import count_parameters

from ._common import embed_all
from .base import BaselineInputs, FittedEncoder, NotAvailable

NAME = "RemoteCLIP"
ENV_VAR = "URBANLIB_REMOTECLIP_WEIGHTS"
REASON = f"n/a: needs RemoteCLIP weights (set {ENV_VAR} to a local checkpoint)"


@dataclass
class RemoteCLIPConfig:
    """Where the weights are and which architecture they fit."""

    weights: str = ""  # local RemoteCLIP checkpoint (.pt/.bin/.safetensors); "" = $URBANLIB_REMOTECLIP_WEIGHTS
    model_name: str = "ViT-B-32"  # open_clip architecture of the checkpoint (RemoteCLIP ships RN50, ViT-B-32, ViT-L-14)
    model_cfg: dict | None = None  # an open_clip CLIP config dict instead of a registered name (tests: a tiny one)
    batch_size: int = 64  # tiles per forward pass


def weights_path(config: RemoteCLIPConfig | None = None) -> str:
    """The configured checkpoint path, or the environment variable's, or ""."""
    return (config.weights if config and config.weights else "") or os.environ.get(ENV_VAR, "")


def load_model(config: RemoteCLIPConfig) -> torch.nn.Module:
    """An open_clip CLIP with the checkpoint's weights (strict: every tensor must match the architecture).

    Raises:
        FileNotFoundError: the checkpoint path does not exist (names the path and where it came from).
    """
    path = weights_path(config)
    source = "RemoteCLIPConfig.weights" if config.weights else f"${ENV_VAR}"
    if not Path(path).is_file():
        raise FileNotFoundError(f"{NAME}: checkpoint {path!r} (from {source}) does not exist")
    if config.model_cfg is not None:
        model = open_clip.CLIP(**config.model_cfg)
        open_clip.load_checkpoint(model, path)
    else:
        model = open_clip.create_model(config.model_name, pretrained=path)
    return model.eval()


def fit(inputs: BaselineInputs, config: RemoteCLIPConfig | None = None) -> FittedEncoder | NotAvailable:
    """Frozen RemoteCLIP image embeddings of every region's tile, or "n/a" without local weights."""
    config = config or RemoteCLIPConfig()
    if not weights_path(config):
        return NotAvailable(NAME, REASON)
    model = load_model(config)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else int(size)
    feats = embed_all(lambda x: model.encode_image(x), inputs, config.batch_size, desc=f"{NAME} features",
                      image_size=size)
    total = count_parameters(model.visual)["total"]
    return FittedEncoder(NAME, feats, [], total, 0,
                         {"weights": weights_path(config), "model": config.model_name if config.model_cfg is None
                          else "custom open_clip config", "features": "image embedding (frozen)",
                          "input_px": size})
