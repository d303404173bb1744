"""The papers' baselines, and the random-init twins of those trained from scratch.

Each is a :class:`~urbanlib.baselines.base.FittedEncoder`.

``BASELINES`` maps a table name to ``"module:function"``; modules are imported on first use.
"""

from __future__ import annotations

from importlib import import_module

from .base import BaselineInputs, FittedEncoder, NotAvailable

BASELINES: dict[str, str] = {
    "PCA": "pca:fit",
    "Autoencoder": "autoencoder:fit",
    "ResNet-18 (random)": "resnet:fit_random",
    "ResNet-18 (land-use stand-in)": "resnet:fit_landuse",
    "ResNet-18 (ImageNet)": "resnet:fit_imagenet",
    "Tile2Vec": "tile2vec:fit",
    "Autoencoder (random init)": "autoencoder:fit_init",  # random-init twins: a run's weights at initialisation
    "Tile2Vec (random init)": "tile2vec:fit_init",
    "READ (random init)": "read:fit_init",
    "UrbanVLP (random init)": "urbanvlp:fit_init",
    "READ": "read:fit",
    "PG-SimCLR": "pg_simclr:fit",
    "UrbanViT": "urbanvit:fit",
    "Text-SimCLR": "text_simclr:fit",
    "RemoteCLIP": "remoteclip:fit",
    "UrbanVLP": "urbanvlp:fit",
    "MuseCL": "musecl:fit",
}


def run_baseline(name: str, inputs: BaselineInputs, config=None) -> FittedEncoder | NotAvailable:
    """Fit the baseline called ``name`` (a key of ``BASELINES``) on ``inputs``."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; available: {sorted(BASELINES)}")
    module, func = BASELINES[name].split(":")
    return getattr(import_module(f"urbanlib.baselines.{module}"), func)(inputs, config)


__all__ = ["BASELINES", "BaselineInputs", "FittedEncoder", "NotAvailable", "run_baseline"]
