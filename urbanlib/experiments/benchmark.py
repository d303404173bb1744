"""The benchmark: every encoder's frozen region features, probed the same way.

``encoder_features(city, name)`` gives one model's (N, F) features (training or loading the cached
encoder); ``run_benchmark(city, names)`` probes them all on ln(y+1) with the same split, the same
test regions and probe seeds and returns tidy metric rows. Baseline features are cached like
pretraining runs: keyed by the baseline, the data, the training regions, the seed and the code.

Controls: each learned encoder family has a random-init twin probed the same way
(:data:`~urbanlib.analysis.twins.RANDOM_INIT_TWIN`): the weights of the very run at initialisation
(UrbanCLIP's ViT, the stage-0 CLIP, the Autoencoder's, Tile2Vec's and READ's conv nets, UrbanVLP's
two towers), a random ResNet-18 for the ResNet baselines, and UrbanLN's starting point, stage 0 alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from urbanlib.baselines import BASELINES, BaselineInputs, FittedEncoder, NotAvailable, run_baseline
from urbanlib.cache import atomic_write, cache_dir, stable_hash
from urbanlib.eval.probe import ProbeConfig, fit_probes
from urbanlib.eval.text_features import fuse, region_text_features
from urbanlib.pipeline.city import City
from urbanlib.pipeline.features import init_features, run_features
from urbanlib.pipeline.runs import code_hash
from urbanlib.pipeline.tensors import RegionTensors
from urbanlib.pipeline.urbanclip import pretrain_urbanclip
from urbanlib.pipeline.urbanln import pretrain_stage0, pretrain_urbanln

from .caption_probes import EMBED_UNIT


@dataclass(frozen=True)
class OurModel:
    """What a row of ours is: which recipe's run, which imagery it encodes, which of the run's weights."""

    recipe: str  # "urbanclip" | "urbanln" (the fine-tuning run) | "stage0" (the shared stage-0 CLIP)
    imagery: str = "satellite"  # "satellite" | "street"
    weights: str = "trained"  # "trained" | "init" (the run's weights at initialisation: the random-init twin)


OUR_MODELS = {  # table name -> what it is (the names are the tables' rows; nothing parses them)
    "UrbanCLIP": OurModel("urbanclip"),
    "UrbanLN (satellite)": OurModel("urbanln", "satellite"),
    "UrbanLN (street)": OurModel("urbanln", "street"),
    "UrbanCLIP (random init)": OurModel("urbanclip", weights="init"),
    "CLIP (random init, satellite)": OurModel("stage0", "satellite", "init"),
    "CLIP (random init, street)": OurModel("stage0", "street", "init"),
    "UrbanLN stage 0 (satellite)": OurModel("urbanln", "satellite", "init"),  # fine-tuning's start: stage 0 (+ IPSI)
    "UrbanLN stage 0 (street)": OurModel("urbanln", "street", "init"),
}
OURS = ["UrbanCLIP", "UrbanLN (satellite)", "UrbanLN (street)"]
BASELINE_TWINS = ["Autoencoder (random init)", "Tile2Vec (random init)", "READ (random init)",
                  "UrbanVLP (random init)"]  # baselines at their run's initialisation
CONTROLS = [n for n in OUR_MODELS if n not in OURS] + BASELINE_TWINS
CAPTION_STYLES = {  # caption-only row -> the caption style it embeds (looked up like OUR_MODELS, never parsed)
    "Captions only (MiniLM, short)": "short",  # UrbanCLIP's captions
    "Captions only (MiniLM, long)": "long",  # UrbanLN's long captions
}
TEXT = [*CAPTION_STYLES, "UrbanCLIP + captions (fusion)"]
BASELINE_ORDER = ["PCA", "Autoencoder", "ResNet-18 (random)", "ResNet-18 (land-use stand-in)", "ResNet-18 (ImageNet)",
                  "Tile2Vec", "READ", "PG-SimCLR", "MuseCL", "RemoteCLIP", "UrbanVLP", "UrbanViT", "Text-SimCLR"]
BENCHMARK_MODELS = BASELINE_ORDER + TEXT + OURS + CONTROLS  # the rows of the main table, in the papers' order
REFERENCE_ROWS = TEXT + CONTROLS  # shown beside the papers' rows, but not baselines: unranked in the table
# label-reading baselines: {model: (the tag tables add to its name, why)}
SUPERVISED = {"READ": ("supervised", "its features are trained on the night-light labels of the probe's train regions")}


def shown_name(model: str) -> str:
    """A model's name as a table shows it: a supervised baseline says so wherever it appears."""
    return f"{model} ({SUPERVISED[model][0]})" if model in SUPERVISED else model


@dataclass
class Features:
    """One encoder's region features and what produced them."""

    name: str
    features: np.ndarray  # (N, F); NaN rows where the encoder had no input
    info: dict = field(default_factory=dict)  # wall_s, cached, parameters, notes
    history: pd.DataFrame | None = None  # training log, if the encoder trained
    run: object = None  # the cached pretraining run (a RunResult) the features come from, if one


def baseline_features(city: City, name: str, progress: bool = False) -> Features | NotAvailable:
    """Fit (or load the cached) baseline ``name`` on the city's pretraining regions."""
    label_idx = city.label_idx if name in SUPERVISED else None
    inputs = BaselineInputs.from_city(city, progress, supervised=name in SUPERVISED)
    key = stable_hash({"baseline": name, "data": city.tensors.key, "regions": city.pretrain_idx.tolist(),
                       "val": city.pretrain_val_idx.tolist(),
                       "labels": None if label_idx is None else label_idx.tolist(),
                       "seed": city.seed, "scale": city.scale.run_dict(),
                       "code": code_hash(("models", "train", "pipeline", "baselines", "experiments"))})
    path = cache_dir("baselines") / f"{name.replace(' ', '_').replace('/', '_')}-{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        if meta.get("not_available"):
            return NotAvailable(name, meta["reason"])
        hist = pd.DataFrame(meta["history"]) if meta["history"] else None
        return Features(name, z["features"], {**meta["info"], "cached": True}, hist)
    start = time.perf_counter()
    out = run_baseline(name, inputs)
    wall = time.perf_counter() - start
    if isinstance(out, NotAvailable):
        with atomic_write(path) as tmp:
            np.savez(tmp, features=np.zeros((0, 0), np.float32),
                     meta=json.dumps({"not_available": True, "reason": out.reason}))
        return out
    assert isinstance(out, FittedEncoder)
    info = {**out.info, "wall_s": wall, "parameters": out.n_params, "trainable": out.n_trainable}
    with atomic_write(path) as tmp:
        np.savez(tmp, features=out.features.astype(np.float32),
                 meta=json.dumps({"info": info, "history": out.history}, default=str))
    return Features(name, out.features, {**info, "cached": False}, pd.DataFrame(out.history) if out.history else None)


def _has_captions(city: City, style: str) -> bool:
    caps = city.ds.captions
    return caps is not None and not caps.empty and bool((caps["style"] == style).any())


def our_features(city: City, name: str, progress: bool = False,
                 tensors: RegionTensors | None = None) -> Features | NotAvailable:
    """Features of one of our rows (:data:`OUR_MODELS`): the city's run, trained or at initialisation.

    The one place a row's :class:`OurModel` is read, so every experiment gives a random-init row its
    run's initial weights. ``tensors`` are the regions to encode: the city's own by default, another
    city's for transfer (the encoder still comes from ``city``).
    """
    spec = OUR_MODELS[name]
    tensors = city.tensors if tensors is None else tensors
    if spec.recipe == "urbanclip":
        run = pretrain_urbanclip(city, progress=progress)
        if spec.weights == "init":
            return Features(name, init_features(run, tensors), {"cached": run.cached, "note": "the UrbanCLIP "
                            "run's weights at initialisation", "parameters": run.info["parameters"]})
        return Features(name, run_features(run, tensors), {"wall_s": run.wall_s, "cached": run.cached,
                                                           "parameters": run.info["parameters"]}, run.history, run)

    imagery = spec.imagery
    has = city.tensors.satellite_mask.any() if imagery == "satellite" else city.tensors.has_street.any()
    if not has:
        return NotAvailable(name, f"n/a: no {imagery} images in this dataset")
    if spec.recipe == "stage0":
        stage0 = pretrain_stage0(city, progress=progress)
        return Features(name, init_features(stage0, tensors, imagery),
                        {"cached": stage0.cached, "note": "stage 0's CLIP at initialisation"})
    if not _has_captions(city, "long"):
        return NotAvailable(name, "n/a: UrbanLN trains on long captions and this dataset has none "
                                  "(write them with urbanlib.captions.batch and a captioner backend)")
    run = pretrain_urbanln(city, imagery=imagery, progress=progress)
    if spec.weights == "init":
        return Features(name, init_features(run, tensors, imagery),
                        {"cached": run.cached, "note": "UrbanLN's starting point, stage 0 alone"})
    return Features(name, run_features(run, tensors, imagery=imagery),
                    {"wall_s": run.wall_s + run.info["stage0_wall_s"], "cached": run.cached,
                     "parameters": run.info["student_total"], "imagery": imagery}, run.history, run)


def encoder_features(city: City, name: str, progress: bool = False) -> Features | NotAvailable:
    """Features of one model of the benchmark, by table name (ours, a baseline, or a text model).

    A model whose inputs the dataset lacks (no long captions, no street views) is an explicit
    :class:`NotAvailable` with the reason, so a real dataset gets a table of what could run.
    """
    if name in OUR_MODELS:
        return our_features(city, name, progress)
    if name in CAPTION_STYLES:
        style = CAPTION_STYLES[name]
        if not _has_captions(city, style):
            return NotAvailable(name, f"n/a: this dataset has no {style} captions")
        return Features(name, region_text_features(city.ds, style=style, unit=EMBED_UNIT[style], progress=progress),
                        {"note": "MiniLM sentence embeddings, mean over the region's captions"})
    if name == "UrbanCLIP + captions (fusion)":
        img = encoder_features(city, "UrbanCLIP", progress)
        txt = encoder_features(city, "Captions only (MiniLM, short)", progress)
        if isinstance(txt, NotAvailable):
            return NotAvailable(name, txt.reason)
        return Features(name, fuse(img.features, txt.features, train_idx=city.split.train),
                        {"note": "standardised UrbanCLIP features ++ caption embeddings"})
    if name in BASELINES:
        return baseline_features(city, name, progress)
    raise KeyError(f"unknown model {name!r}; ours: {OURS}, text: {TEXT}, baselines: {sorted(BASELINES)}")


def run_benchmark(city: City, names: list[str], progress: bool = False,
                  log=print) -> tuple[pd.DataFrame, dict[str, Features | NotAvailable], dict]:
    """Probe every model in ``names`` on the city's split, all on the same test regions.

    The regions every available model has features for (and only those) are probed, so the rows of
    one table are scored on one test set; the dropped regions are logged. A model the data cannot
    feed (its recipe raises a ``ValueError``, e.g. fewer training tiles than PCA components) becomes a
    :class:`NotAvailable` row with the reason, and the others still run.

    Returns:
        ``(metrics, features, probes)``: tidy rows (model, indicator, probe_seed, metric, value, n_test,
        pretrain_seed, split, city), the features (or n/a) of each model, and each model's
        :class:`~urbanlib.eval.probe.ProbeResult`.
    """
    targets = city.ds.log_targets()
    seeds = list(range(city.scale.probe_seeds))
    feats, times = {}, {}
    for name in names:
        start = time.perf_counter()
        try:
            f = encoder_features(city, name, progress)
        except ValueError as e:  # the data cannot feed this model (too few tiles, no captions, ...): an n/a row
            f = NotAvailable(name, f"n/a on this dataset: {e}")
        feats[name] = f
        times[name] = time.perf_counter() - start
        if isinstance(f, NotAvailable):
            log(f"{name}: {f.reason}")
    have = [f for f in feats.values() if not isinstance(f, NotAvailable)]
    split = common_split(city.split, [f.features for f in have], log)
    rows, probes = [], {}
    for name, f in feats.items():
        if isinstance(f, NotAvailable):
            continue
        start = time.perf_counter()
        res = fit_probes(f.features, targets, split, seeds, ProbeConfig.for_scale(city.scale), indicators=city.ds.indicators)
        probes[name] = res
        m = res.metrics.rename(columns={"seed": "probe_seed"})
        m.insert(0, "model", name)
        rows.append(m)
        log(f"{name}: {times[name] + time.perf_counter() - start:.1f} s"
            f"{' (cached encoder)' if f.info.get('cached') else ''}")
    metrics = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    metrics["pretrain_seed"], metrics["split"], metrics["city"] = city.seed, city.split.name, city.name
    return metrics, feats, probes


def common_split(split, features: list[np.ndarray], log=print):
    """``split`` restricted to the regions every feature matrix has a finite row for (one test set per table)."""
    if not features:
        return split
    ok = np.logical_and.reduce([np.isfinite(f).all(1) for f in features])
    parts = {side: split[side][ok[split[side]]] for side in ("train", "val", "test")}
    dropped = {side: len(split[side]) - len(parts[side]) for side in parts}
    if any(dropped.values()):
        log(f"regions without features for every model, left out of every row: {dropped}")
    return replace(split, **parts)
