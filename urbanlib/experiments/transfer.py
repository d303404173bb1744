"""Cross-city transfer: pretrain and probe on a source city, test on every target city.

The source's encoder embeds the target's regions, and probe heads trained on the source's train
regions (early-stopped on its validation regions) predict the target's indicators. On the diagonal
(source = target) the test regions are the source's own test split; off it, every target region.
Baselines that return features rather than an encoder are fitted once on the union of all cities
with only the source's pretraining regions as training data, which yields the same thing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from urbanlib.baselines import BASELINES, BaselineInputs, NotAvailable, run_baseline
from urbanlib.cache import cache_dir, stable_hash
from urbanlib.data.dataset import UrbanDataset
from urbanlib.data.splits import Split
from urbanlib.eval.probe import ProbeConfig, fit_probes
from urbanlib.pipeline.city import City
from urbanlib.pipeline.runs import code_hash
from urbanlib.pipeline.tensors import RegionTensors

from .benchmark import OUR_MODELS, our_features


def combine(cities: list[City]) -> tuple[UrbanDataset, RegionTensors, np.ndarray]:
    """All cities as one dataset (image paths made absolute) and one tensor set; and each region's city index."""
    regions = pd.concat([c.ds.regions for c in cities], ignore_index=True)
    images = pd.concat([c.ds.images.assign(path=[str((c.ds.root / p).resolve()) for p in c.ds.images["path"]])
                        for c in cities], ignore_index=True)
    captions = pd.concat([c.ds.captions.assign(image=[str((c.ds.root / p).resolve()) if isinstance(p, str) and p
                                                      else p for p in c.ds.captions["image"]])
                          for c in cities], ignore_index=True)
    ds = UrbanDataset(regions, images, captions, indicators=list(cities[0].ds.indicators), root=cities[0].ds.root,
                      meta={"combined": [c.name for c in cities]})
    v = max(c.tensors.street_mask.shape[1] for c in cities)

    def pad(x, m):
        extra = v - x.shape[1]
        return (np.concatenate([x, np.zeros((x.shape[0], extra, *x.shape[2:]), x.dtype)], 1) if extra else x,
                np.concatenate([m, np.zeros((m.shape[0], extra), bool)], 1) if extra else m)

    streets = [pad(c.tensors.street, c.tensors.street_mask) for c in cities]
    t = RegionTensors(np.concatenate([c.tensors.region_ids for c in cities]),
                      np.concatenate([c.tensors.satellite for c in cities]),
                      np.concatenate([c.tensors.satellite_mask for c in cities]),
                      np.concatenate([s[0] for s in streets]), np.concatenate([s[1] for s in streets]),
                      stable_hash([c.tensors.key for c in cities]))
    city_index = np.concatenate([np.full(len(c.ds), i) for i, c in enumerate(cities)])
    return ds, t, city_index


def transfer_features(source: City, cities: list[City], name: str) -> np.ndarray | NotAvailable:
    """(sum N, F) features of every region of ``cities`` from the encoder trained on ``source``."""
    if name in OUR_MODELS:  # the benchmark's own reading of the row: a random-init twin keeps its initial weights
        parts = [our_features(source, name, tensors=c.tensors) for c in cities]
        unavailable = [p for p in parts if isinstance(p, NotAvailable)]
        return unavailable[0] if unavailable else np.concatenate([p.features for p in parts])
    if name not in BASELINES:
        raise KeyError(f"unknown model {name!r}")
    ds, tensors, city_index = combine(cities)
    offset = int(np.flatnonzero(city_index == [c.name for c in cities].index(source.name))[0])
    train_idx = source.pretrain_idx + offset
    key = stable_hash({"baseline": name, "data": tensors.key, "regions": train_idx.tolist(), "seed": source.seed,
                       "scale": source.scale.run_dict(), "code": code_hash(("models", "train", "pipeline", "baselines", "experiments"))})
    path = cache_dir("transfer") / f"{name.replace(' ', '_')}-{key}.npy"
    if path.exists():
        return np.load(path)
    out = run_baseline(name, BaselineInputs(ds, tensors, train_idx, source.seed, source.scale, progress=False))
    if isinstance(out, NotAvailable):
        return out
    np.save(path, out.features.astype(np.float32))
    return out.features


def transfer_scores(source: City, cities: list[City], name: str) -> pd.DataFrame:
    """Tidy rows (model, source, target, indicator, probe_seed, metric, value, n_test) for one model."""
    feats = transfer_features(source, cities, name)
    if isinstance(feats, NotAvailable):
        return pd.DataFrame()
    targets = np.concatenate([c.ds.log_targets() for c in cities])
    starts = np.cumsum([0] + [len(c.ds) for c in cities])
    s = [c.name for c in cities].index(source.name)
    rows = []
    for t, city in enumerate(cities):
        test = source.split.test + starts[s] if t == s else np.arange(starts[t], starts[t + 1])
        split = Split(source.split.train + starts[s], source.split.val + starts[s], test,
                      name=f"transfer({source.name}->{city.name})", seed=source.seed)
        res = fit_probes(feats, targets, split, list(range(source.scale.probe_seeds)), ProbeConfig.for_scale(source.scale),
                         indicators=source.ds.indicators)
        m = res.metrics.rename(columns={"seed": "probe_seed"})
        m.insert(0, "target", city.name)
        m.insert(0, "source", source.name)
        m.insert(0, "model", name)
        rows.append(m)
    return pd.concat(rows, ignore_index=True)
