"""Datasets: the canonical format, SynthCity, real-data adapters and splits.

The contract: ``load(data_dir, layout=..., city=...)`` returns an :class:`UrbanDataset` whose
``.regions`` has one row per region and whose ``.report`` lists what was skipped or flagged.
"""

from __future__ import annotations

from pathlib import Path

from . import canonical, generic_layout, urbanclip_layout
from .dataset import INDICATORS, UrbanDataset
from .report import DataError, LoadReport

LAYOUTS = ("urbanlib", "urbanclip", "generic")


def load(data_dir: str | Path, layout: str = "urbanlib", city: str | None = None, **kwargs) -> UrbanDataset:
    """Load a dataset from disk.

    Args:
        data_dir: the dataset folder.
        layout: ``"urbanlib"`` (canonical format), ``"urbanclip"`` (the UrbanCLIP release) or
            ``"generic"`` (images folder + indicator table + JSONL captions).
        city: keep one city (required by layouts that store one city per file).
        **kwargs: layout-specific options (explicit file paths, column mappings).
    """
    if layout == "urbanlib":

        return canonical.read(data_dir, city=city, **kwargs)
    if layout == "urbanclip":

        return urbanclip_layout.read(data_dir, city=city, **kwargs)
    if layout == "generic":

        return generic_layout.read(data_dir, city=city, **kwargs)
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


__all__ = ["INDICATORS", "LAYOUTS", "DataError", "LoadReport", "UrbanDataset", "load"]
