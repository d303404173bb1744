"""Random, spatially blocked and cross-city splits: disjoint, complete, proportional, seeded."""

import numpy as np
import pandas as pd
import pytest

from urbanlib.data import DataError
from urbanlib.data.splits import SIDES, block_ids, blocked_split, cross_city_split, random_split


def grid(rows=20, cols=25, city="Beijing", prefix="b"):
    r, c = np.divmod(np.arange(rows * cols), cols)
    return pd.DataFrame({"region_id": [f"{prefix}{i}" for i in range(rows * cols)], "city": city, "row": r, "col": c})


def two_cities():
    return pd.concat([grid(20, 25, "Beijing", "b"), grid(10, 12, "Shanghai", "s")], ignore_index=True)


def assert_partition(split, n):
    parts = [split[s] for s in SIDES]
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n  # no overlap, full coverage
    assert set(allidx) == set(range(n))


@pytest.mark.parametrize("make", [lambda df, s: random_split(df, seed=s),
                                  lambda df, s: blocked_split(df, block_size=4, seed=s)])
def test_partition_ratios_and_seeds(make):
    df = grid()
    n = len(df)
    a = make(df, 3)
    assert_partition(a, n)
    frac = np.array([len(a[s]) for s in SIDES]) / n
    np.testing.assert_allclose(frac, [0.6, 0.2, 0.2], atol=0.05)  # 500 cells, 16-cell blocks
    b = make(df, 3)
    for s in SIDES:
        np.testing.assert_array_equal(a[s], b[s])  # deterministic by seed
    c = make(df, 4)
    assert not np.array_equal(a["test"], c["test"])  # a different seed gives a different split
    # ids follow indices
    for s in SIDES:
        np.testing.assert_array_equal(a.region_ids[s], df["region_id"].to_numpy()[a[s]])


def test_random_split_exact_counts():
    split = random_split(grid(10, 10), seed=0)
    assert split.sizes() == {"train": 60, "val": 20, "test": 20}
    small = random_split(grid(1, 7), ratios=(0.6, 0.2, 0.2), seed=0)
    assert sum(small.sizes().values()) == 7 and small.sizes()["train"] == 4


def test_blocked_split_keeps_blocks_whole():
    df = two_cities()
    split = blocked_split(df, block_size=3, seed=1)
    assert_partition(split, len(df))
    side = np.empty(len(df), dtype=int)
    for i, s in enumerate(SIDES):
        side[split[s]] = i
    groups = block_ids(df, 3)
    np.testing.assert_array_equal(groups, split.groups)
    for g in np.unique(groups):  # every block entirely on one side
        assert len(np.unique(side[groups == g])) == 1, g
    # blocks never mix cities, and cells of one block are within 3 rows/cols of each other
    assert not any(df["city"][groups == g].nunique() > 1 for g in np.unique(groups))
    b = groups == groups[0]
    assert np.ptp(df["row"][b]) < 3 and np.ptp(df["col"][b]) < 3


def test_blocked_split_has_fewer_cross_side_neighbours_than_random():
    df = grid(30, 30)
    pos = {(r, c): i for i, (r, c) in enumerate(zip(df["row"], df["col"], strict=True))}

    def test_cells_with_train_neighbour(split):
        side = np.full(len(df), "", dtype=object)
        for s in SIDES:
            side[split[s]] = s
        hits = 0
        for i in split["test"]:
            r, c = df["row"][i], df["col"][i]
            nb = [pos.get((r + dr, c + dc)) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))]
            hits += any(j is not None and side[j] == "train" for j in nb)
        return hits / len(split["test"])

    assert test_cells_with_train_neighbour(blocked_split(df, block_size=5, seed=0)) < 0.6
    assert test_cells_with_train_neighbour(random_split(df, seed=0)) > 0.8


def test_blocked_split_needs_grid():
    df = grid(3, 3)
    df.loc[4, "row"] = np.nan
    with pytest.raises(DataError, match="'row' is missing for 1 regions"):
        blocked_split(df)
    with pytest.raises(DataError, match="grid column 'col'"):
        blocked_split(grid(3, 3).drop(columns="col"))


def test_cross_city_split():
    df = two_cities()
    split = cross_city_split(df, "Beijing", "Shanghai", val_fraction=0.2, seed=0)
    assert_partition(split, len(df))
    assert set(df["city"][split["test"]]) == {"Shanghai"} and len(split["test"]) == 120
    assert set(df["city"][np.concatenate([split["train"], split["val"]])]) == {"Beijing"}
    assert len(split["val"]) == 100
    again = cross_city_split(df, ["Beijing"], "Shanghai", seed=0)
    np.testing.assert_array_equal(split["val"], again["val"])
    assert not np.array_equal(split["val"], cross_city_split(df, "Beijing", "Shanghai", seed=1)["val"])
    with pytest.raises(DataError, match="'Paris' not in dataset"):
        cross_city_split(df, "Beijing", "Paris")


def test_split_accepts_dataset():
    from urbanlib.data.dataset import UrbanDataset

    ds = UrbanDataset(regions=grid(5, 5))
    np.testing.assert_array_equal(random_split(ds, seed=2)["test"], random_split(ds.regions, seed=2)["test"])
