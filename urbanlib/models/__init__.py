"""Models: UrbanCLIP (WWW'24) and open_clip's CoCa behind one protocol, plus their configs.

``stretch_positional_embedding`` is re-exported lazily from :mod:`urbanlib.models.ipsi`.
"""

from __future__ import annotations

from typing import Any

from .config import UrbanCLIPConfig, get_config, list_models
from .factory import create_model, load_trained
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


def __getattr__(name: str) -> Any:
    if name == "stretch_positional_embedding":
        from .ipsi import stretch_positional_embedding

        return stretch_positional_embedding
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
