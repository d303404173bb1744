"""Train/validation/test splits of regions, all deterministic by seed.

* :func:`random_split` - the papers' protocol: a random 6:2:2 partition of regions.
* :func:`blocked_split` - whole square blocks of neighbouring grid cells go to one side. Indicators
  are spatially autocorrelated, so a random split puts near-copies of each test cell in training
  and overstates accuracy; blocking measures generalisation to unseen areas.
* :func:`cross_city_split` - train (and validate) on some cities, test on another.

Every split returns a :class:`Split`: positional index arrays into ``ds.regions`` plus region ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .report import DataError

RATIOS = (0.6, 0.2, 0.2)  # UrbanCLIP and UrbanLN: 60% train, 20% validation, 20% test
SIDES = ("train", "val", "test")


@dataclass
class Split:
    """Disjoint train/val/test parts of a regions table.

    Attributes:
        train, val, test: sorted positional indices into the regions table, int arrays.
        region_ids: ``{"train": ids, "val": ids, "test": ids}`` (object arrays of str).
        name: how it was made, e.g. ``"random"``, ``"blocked(4)"``, ``"cross_city(Beijing->Shanghai)"``.
        seed: the seed it was made with.
        groups: for blocked splits, the block id of every region (else None).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    region_ids: dict = field(default_factory=dict)
    name: str = ""
    seed: int = 0
    groups: np.ndarray | None = None

    def __getitem__(self, side: str) -> np.ndarray:
        if side not in SIDES:
            raise KeyError(f"side must be one of {SIDES}, got {side!r}")
        return getattr(self, side)

    def sizes(self) -> dict[str, int]:
        """Number of regions per side."""
        return {s: len(self[s]) for s in SIDES}

    def __repr__(self) -> str:
        return f"Split({self.name}, seed={self.seed}, {self.sizes()})"


def _regions(ds_or_regions) -> pd.DataFrame:
    return ds_or_regions if isinstance(ds_or_regions, pd.DataFrame) else ds_or_regions.regions


def _make(regions: pd.DataFrame, parts: dict, name: str, seed: int, groups=None) -> Split:
    ids = regions["region_id"].astype(str).to_numpy(dtype=object)
    parts = {s: np.sort(np.asarray(parts[s], dtype=int)) for s in SIDES}
    return Split(**parts, region_ids={s: ids[parts[s]] for s in SIDES}, name=name, seed=seed, groups=groups)


def _check_ratios(ratios) -> np.ndarray:
    r = np.asarray(ratios, dtype=float)
    if r.shape != (3,) or (r < 0).any() or r.sum() <= 0:
        raise ValueError(f"ratios must be three non-negative numbers (train, val, test), got {ratios}")
    return r / r.sum()


def _counts(n: int, ratios: np.ndarray) -> np.ndarray:
    """Split n into three integer counts close to n * ratios (largest remainders)."""
    raw = n * ratios
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts


def random_split(ds, ratios=RATIOS, seed: int = 0) -> Split:
    """Random partition of regions (the papers' protocol; default 6:2:2).

    Args:
        ds: an :class:`UrbanDataset` or its regions DataFrame.
        ratios: (train, val, test) proportions, normalised to sum 1.
        seed: numpy seed; the same seed and table give the same split.
    """
    regions = _regions(ds)
    counts = _counts(len(regions), _check_ratios(ratios))
    order = np.random.default_rng(seed).permutation(len(regions))
    cuts = np.cumsum(counts)[:2]
    train, val, test = np.split(order, cuts)
    return _make(regions, {"train": train, "val": val, "test": test}, "random", seed)


def block_ids(regions: pd.DataFrame, block_size: int) -> np.ndarray:
    """Block label per region: ``city/row_block/col_block`` of ``block_size`` x ``block_size`` cells."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    for col in ("row", "col"):
        if col not in regions.columns:
            raise DataError(f"blocked split needs grid column {col!r}; regions have {list(regions.columns)}")
        bad = regions[col].isna().to_numpy()
        if bad.any():
            raise DataError(f"blocked split needs grid row/col for every region; {col!r} is missing for "
                            f"{int(bad.sum())} regions, e.g. {regions['region_id'].to_numpy()[bad][:3].tolist()}")
    rb = (regions["row"].to_numpy(dtype=float) // block_size).astype(int)
    cb = (regions["col"].to_numpy(dtype=float) // block_size).astype(int)
    city = regions["city"].astype(str).to_numpy() if "city" in regions.columns else np.full(len(regions), "")
    return np.array([f"{c}/{r}/{k}" for c, r, k in zip(city, rb, cb, strict=True)], dtype=object)


def blocked_split(ds, block_size: int = 4, ratios=RATIOS, seed: int = 0) -> Split:
    """Spatially blocked split: every block of ``block_size`` x ``block_size`` grid cells goes to one side.

    Blocks are shuffled by seed and handed, one at a time, to the side furthest below its target
    number of regions, so side sizes approach ``ratios`` to within about one block.

    Args:
        ds: an :class:`UrbanDataset` or regions DataFrame with ``row``, ``col`` (and ``city``).
        block_size: block edge in grid cells (1 = a random split of cells).
        ratios: (train, val, test) proportions.
        seed: numpy seed.
    """
    regions = _regions(ds)
    r = _check_ratios(ratios)
    groups = block_ids(regions, block_size)
    labels, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(labels))
    target = r * len(regions)
    filled = np.zeros(3)
    side_of_block = np.empty(len(labels), dtype=int)
    for b in np.random.default_rng(seed).permutation(len(labels)):
        deficit = (target - filled) / np.maximum(target, 1e-9)  # relative shortfall of each side
        deficit[r == 0] = -np.inf
        side = int(np.argmax(deficit))
        side_of_block[b] = side
        filled[side] += sizes[b]
    side = side_of_block[inverse]
    parts = {s: np.flatnonzero(side == i) for i, s in enumerate(SIDES)}
    return _make(regions, parts, f"blocked({block_size})", seed, groups=groups)


def cross_city_split(ds, train_cities, test_city: str, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Train on ``train_cities`` (a random ``val_fraction`` of them held out for validation), test on ``test_city``.

    Args:
        ds: an :class:`UrbanDataset` or regions DataFrame with a ``city`` column.
        train_cities: a city name or list of names.
        test_city: the unseen city; all its regions are test.
        val_fraction: share of the training cities' regions used for validation.
        seed: numpy seed.
    """
    regions = _regions(ds)
    train_cities = [train_cities] if isinstance(train_cities, str) else list(train_cities)
    cities = set(regions["city"].astype(str))
    for c in [*train_cities, test_city]:
        if c not in cities:
            raise DataError(f"cross-city split: city {c!r} not in dataset; available: {sorted(cities)}")
    if test_city in train_cities:
        raise ValueError(f"test city {test_city!r} is also a training city")
    city = regions["city"].astype(str).to_numpy()
    pool = np.flatnonzero(np.isin(city, train_cities))
    pool = np.random.default_rng(seed).permutation(pool)
    n_val = int(round(val_fraction * len(pool)))
    parts = {"train": pool[n_val:], "val": pool[:n_val], "test": np.flatnonzero(city == test_city)}
    return _make(regions, parts, f"cross_city({'+'.join(train_cities)}->{test_city})", seed)
