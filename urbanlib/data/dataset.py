"""The in-memory dataset every loader returns, whatever layout it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .report import LoadReport

# Canonical indicator names, in original units. Loaders map their columns onto these.
INDICATORS = ["population", "gdp", "carbon", "night_light", "poi_count", "comments", "crime"]
REGION_COLUMNS = ["region_id", "city", "row", "col", "lon", "lat"]  # row/col may be NaN for real data
IMAGE_COLUMNS = ["region_id", "kind", "path", "lon", "lat"]  # kind: "satellite" or "street"
CAPTION_COLUMNS = ["region_id", "image", "source", "style", "text"]  # style: "short" or "long"
POI_PREFIX = "poi_cat_"  # regions' per-category POI counts: one poi_cat_<category> column each (optional)


def poi_columns(regions: pd.DataFrame) -> list[str]:
    """The per-category POI count columns (``poi_cat_*``) of a regions table, in the table's order."""
    return [c for c in regions.columns if c.startswith(POI_PREFIX)]


@dataclass
class UrbanDataset:
    """Regions with indicators, their images and captions; one or more cities.

    Attributes:
        regions: one row per region: ``region_id`` (str), ``city``, grid ``row``/``col``,
            centre ``lon``/``lat`` (WGS84), then one column per indicator in original units
            (NaN where missing). Extra columns (e.g. ``poi_cat_*``, ``bd09_x``) are kept.
        images: one row per image: ``region_id``, ``kind`` (``satellite`` | ``street``),
            ``path`` (relative to ``root``), ``lon``/``lat`` (street views; NaN otherwise).
        captions: one row per caption: ``region_id``, ``image`` (path as in ``images``),
            ``source`` (captioner name), ``style`` (``short`` | ``long``), ``text``, plus
            optional columns such as ``statements`` (SynthCity truth labels).
        indicators: the indicator columns of ``regions``, in display order.
        root: folder that image paths are relative to.
        report: what the loader skipped or flagged.
        meta: free-form provenance (layout, generator version, parameters).
    """

    regions: pd.DataFrame
    images: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=IMAGE_COLUMNS))
    captions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CAPTION_COLUMNS))
    indicators: list[str] = field(default_factory=list)
    root: Path = Path(".")
    report: LoadReport = field(default_factory=LoadReport)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.root = Path(self.root)
        if not self.indicators:
            self.indicators = [c for c in INDICATORS if c in self.regions.columns]

    def __len__(self) -> int:
        return len(self.regions)

    def __repr__(self) -> str:
        cities = ", ".join(map(str, self.cities))
        return (f"UrbanDataset({len(self.regions)} regions in [{cities}], {len(self.images)} images, "
                f"{len(self.captions)} captions, indicators={self.indicators}, {len(self.report)} report entries)")

    @property
    def cities(self) -> list[str]:
        """Distinct city names, in order of first appearance."""
        return list(pd.unique(self.regions["city"]))

    @property
    def region_ids(self) -> np.ndarray:
        """Region ids in table order (the order every array of this dataset follows)."""
        return self.regions["region_id"].to_numpy()

    def satellite_paths(self) -> pd.Series:
        """Absolute satellite path per region id (missing regions are absent from the Series)."""
        sat = self.images[self.images["kind"] == "satellite"].drop_duplicates("region_id")
        return pd.Series([self.root / p for p in sat["path"]], index=sat["region_id"].to_numpy())

    def street_paths(self) -> dict[str, list[Path]]:
        """Absolute street-view paths per region id; regions without street views are absent."""
        st = self.images[self.images["kind"] == "street"]
        return {rid: [self.root / p for p in g["path"]] for rid, g in st.groupby("region_id", sort=False)}

    def log_targets(self, indicators: list[str] | None = None) -> np.ndarray:
        """ln(y + 1) of the indicators, shape (regions, indicators); NaN where missing."""
        cols = indicators or self.indicators
        return np.log1p(self.regions[cols].to_numpy(dtype=float))

    def subset(self, region_ids=None, city: str | None = None) -> UrbanDataset:
        """A view on some regions (by id and/or city), with their images and captions."""
        mask = np.ones(len(self.regions), dtype=bool)
        if city is not None:
            if city not in self.cities:
                raise KeyError(f"city {city!r} not in dataset; available: {self.cities}")
            mask &= (self.regions["city"] == city).to_numpy()
        if region_ids is not None:
            mask &= self.regions["region_id"].isin(list(region_ids)).to_numpy()
        keep = self.regions.loc[mask].reset_index(drop=True)
        ids = set(keep["region_id"])
        return UrbanDataset(
            regions=keep,
            images=self.images[self.images["region_id"].isin(ids)].reset_index(drop=True),
            captions=self.captions[self.captions["region_id"].isin(ids)].reset_index(drop=True),
            indicators=list(self.indicators), root=self.root, report=self.report, meta=dict(self.meta),
        )
