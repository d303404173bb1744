"""Plain open_clip CLIP models of named sizes: UrbanLN's backbone before IPSI stretching.

``clip-tiny`` (tests), ``clip-cpu`` (default book scale, the same ViT width/depth/patch as
``urbanclip-cpu``) and ``clip-paper`` (open_clip ``ViT-B-16``, UrbanLN's backbone). Random init by
default; ``pretrained`` is opt-in: an open_clip tag (e.g. ``"openai"``, downloads) or a local
``.safetensors``/open_clip checkpoint path.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
from safetensors.torch import load_file

CLIP_CONFIG_DIR = Path(__file__).parent / "clip_configs"


def list_clip_sizes() -> list[str]:
    """Named CLIP configs shipped with urbanlib."""
    return sorted(p.stem for p in CLIP_CONFIG_DIR.glob("*.json"))


def clip_config(name: str) -> dict:
    """The JSON of a named CLIP config (``clip-tiny``, ``clip-cpu``, ``clip-paper``)."""
    path = CLIP_CONFIG_DIR / f"{name}.json"
    if not path.exists():
        raise ValueError(f"unknown CLIP config {name!r}; available: {list_clip_sizes()}")
    return json.loads(path.read_text())


def create_clip(name: str, pretrained: str | None = None) -> open_clip.CLIP:
    """Build a CLIP from a named config; random init unless ``pretrained`` is given.

    Args:
        name: ``clip-tiny`` | ``clip-cpu`` | ``clip-paper``.
        pretrained: an open_clip pretrained tag (``clip-paper`` only; needs the hub) or a local
            ``.safetensors`` file of this architecture's state dict.
    """
    cfg = clip_config(name)
    local = pretrained and Path(pretrained).suffix == ".safetensors"
    if "open_clip_name" in cfg:
        model = open_clip.create_model(cfg["open_clip_name"], pretrained=None if local else pretrained)
    else:
        if pretrained and not local:
            raise ValueError(f"{name}: pretrained={pretrained!r} must be a local .safetensors file "
                             "(open_clip tags exist only for clip-paper)")
        model = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])
    if local:
        if not Path(pretrained).exists():
            raise FileNotFoundError(f"{name}: pretrained checkpoint {pretrained} does not exist")
        model.load_state_dict(load_file(str(pretrained)))
    return model

