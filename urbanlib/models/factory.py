"""``create_model(name, **overrides)``: a named config -> a model (random init unless asked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .config import UrbanCLIPConfig, get_config
from .vocab import Vocab


def create_model(name: str, vocab: Vocab | None = None, open_clip_name: str = "", **overrides: Any) -> torch.nn.Module:
    """Build a model from ``urbanlib/models/configs/<name>.json``.

    Args:
        name: one of :func:`~urbanlib.models.list_models`.
        vocab: restrict the LM head to these tokens (UrbanCLIP variant only).
        open_clip_name: for the ``coca`` variant, an open_clip config name (e.g. ``"coca_ViT-B-32"``).
        **overrides: config fields; ``pretrained`` is opt-in: an open_clip tag (coca variant,
            downloads) or a local ``.safetensors`` state dict (any variant).
    """
    # deferred: both import open_clip, which configs and vocabularies do not need
    from .coca import OpenClipCoCa
    from .urbanclip import UrbanCLIP

    cfg = get_config(name, **overrides)
    local = cfg.pretrained and Path(cfg.pretrained).suffix == ".safetensors"
    if cfg.variant == "urbanclip":
        if cfg.pretrained and not local:
            raise ValueError(f"{name}: pretrained={cfg.pretrained!r} must be a local .safetensors file")
        model = UrbanCLIP(cfg, vocab=vocab)
    elif cfg.variant == "coca":
        if vocab is not None:
            raise ValueError(f"{name}: the open_clip CoCa variant has no restricted-vocab option")
        if cfg.pretrained and not local and not open_clip_name:
            raise ValueError(f"{name}: an open_clip pretrained tag needs open_clip_name (e.g. 'coca_ViT-B-32')")
        model = OpenClipCoCa(cfg, open_clip_name=open_clip_name, pretrained=None if local else (cfg.pretrained or None))
    else:
        raise ValueError(f"{name}: unknown variant {cfg.variant!r} (expected 'urbanclip' or 'coca')")
    if local:
        path = Path(cfg.pretrained)
        if not path.exists():
            raise FileNotFoundError(f"{name}: pretrained checkpoint {path} does not exist")
        model.load_state_dict(load_file(str(path)))
    return model


def load_trained(checkpoint_dir: str | Path) -> torch.nn.Module:
    """Rebuild a model saved by the trainer from its ``step-*/`` directory, without pickle.

    The config comes from ``state.json``, a restricted vocabulary from the ``kept_ids`` buffer and the
    weights from ``model.safetensors``.
    """
    from .coca import OpenClipCoCa  # deferred, as in create_model
    from .urbanclip import UrbanCLIP

    path = Path(checkpoint_dir)
    state_path, weights_path = path / "state.json", path / "model.safetensors"
    for p in (state_path, weights_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist (expected a trainer checkpoint directory)")
    state = json.loads(state_path.read_text())
    if "model_config" not in state:
        raise ValueError(f"{state_path}: no 'model_config' (was the model an UrbanCLIP/CoCa config model?)")
    cfg = UrbanCLIPConfig.from_dict({**state["model_config"], "pretrained": ""}, source=str(state_path))
    weights = load_file(str(weights_path))
    if cfg.variant == "coca":
        model = OpenClipCoCa(cfg)
    else:
        vocab = Vocab(weights["kept_ids"][:-1].tolist()) if "kept_ids" in weights else None
        model = UrbanCLIP(cfg, vocab=vocab)
    model.load_state_dict(weights)
    return model
