"""Models: UrbanCLIP (WWW'24) and open_clip's CoCa behind one protocol, plus their configs."""

from __future__ import annotations

from .config import UrbanCLIPConfig, get_config, list_models
from .factory import create_model, load_trained
from .ipsi import stretch_positional_embedding
from .vocab import Vocab

__all__ = [
    "UrbanCLIPConfig",
    "Vocab",
    "create_model",
    "get_config",
    "list_models",
    "load_trained",
    "stretch_positional_embedding",
]

