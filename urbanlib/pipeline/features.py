"""Frozen-encoder features of every region, batched and cached next to the run that made them.

The cache file name carries the data's content hash (:attr:`RegionTensors.key`), and the run folder
is keyed by the checkpoint's whole recipe, so features are keyed by checkpoint and data.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from urbanlib.eval.metrics import linear_cka

from .runs import RunResult, cached_array, init_model
from .tensors import RegionTensors, normalize


@torch.no_grad()
def batched(fn: Callable[..., torch.Tensor], n: int, get: Callable[[np.ndarray], tuple], batch_size: int = 64,
            progress: bool = False, desc: str = "encode") -> np.ndarray:
    """Apply ``fn(*get(idx))`` over ``range(n)`` in batches and stack the results as float32."""
    out = []
    for s in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        idx = np.arange(s, min(n, s + batch_size))
        out.append(fn(*get(idx)).float().cpu())
    return torch.cat(out).numpy().astype(np.float32)


def satellite_features(encode: Callable[[torch.Tensor], torch.Tensor], tensors: RegionTensors,
                       batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(N, F) features of every region's tile; NaN rows for regions without one."""
    feats = batched(encode, len(tensors), lambda idx: (tensors.satellite_tensor(idx),), batch_size, progress)
    feats[~tensors.satellite_mask] = np.nan
    return feats


def street_features(encode: Callable[[torch.Tensor], torch.Tensor], tensors: RegionTensors,
                    batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(N, F) mean of each region's street-view features (UrbanLN footnote 1); NaN rows without views."""
    n, v = tensors.street_mask.shape
    flat_idx = np.flatnonzero(tensors.street_mask.reshape(-1))
    flat = tensors.street.reshape(n * v, *tensors.street.shape[2:])

    per_view = batched(encode, len(flat_idx), lambda idx: (normalize(torch.from_numpy(flat[flat_idx[idx]])),),
                       batch_size, progress)
    out = np.full((n, per_view.shape[1]), np.nan, np.float32)
    region = flat_idx // v
    sums = np.zeros((n, per_view.shape[1]), np.float64)
    np.add.at(sums, region, per_view)
    counts = np.bincount(region, minlength=n)
    has = counts > 0
    out[has] = (sums[has] / counts[has, None]).astype(np.float32)
    return out


def run_features(run: RunResult, tensors: RegionTensors, imagery: str = "satellite",
                 which: str = "mean_patch", progress: bool = False) -> np.ndarray:
    """Cached features of a trained run's frozen image encoder.

    Args:
        run: a finished run whose model has ``encode_image_features`` (and ``encode_image``).
        tensors: the dataset's images.
        imagery: ``"satellite"`` or ``"street"`` (mean over a region's views).
        which: ``"mean_patch"`` (the representation every probe reads: mean of the final ViT patch
            tokens, before any pooler) or ``"contrastive"`` (the normalised contrastive embedding).
        progress: show a progress bar while encoding.
    """
    if which not in ("mean_patch", "contrastive"):
        raise ValueError(f"which must be 'mean_patch' or 'contrastive', got {which!r}")
    if imagery not in ("satellite", "street"):
        raise ValueError(f"imagery must be 'satellite' or 'street', got {imagery!r}")
    model = run.model.eval()
    encode = model.encode_image_features if which == "mean_patch" else model.encode_image
    fn = satellite_features if imagery == "satellite" else street_features
    return cached_array(run, f"features-{imagery}-{which}-{tensors.key}", lambda: fn(encode, tensors,
                                                                                    progress=progress))


def init_features(run: RunResult, tensors: RegionTensors, imagery: str = "satellite") -> np.ndarray:
    """Cached features of the run's model at initialisation (its random-init twin), read out like :func:`run_features`."""

    def compute():
        model = init_model(run, copy.deepcopy(run.model))
        fn = satellite_features if imagery == "satellite" else street_features
        return fn(model.encode_image_features, tensors)

    return cached_array(run, f"init-features-{imagery}-{tensors.key}", compute)


def pretraining_record(run: RunResult, tensors: RegionTensors, model: str, city: str, seed: int,
                       variant: str = "", protocol: str = "all-tiles", imagery: str = "satellite") -> dict:
    """One ``results/pretraining.csv`` row: how long the run trained, why it stopped, how far it moved.

    ``cka_to_init`` is the linear CKA between the frozen features at initialisation and after
    training, over every region the probe reads (1: training left the representation where it was).
    """
    info = run.info
    return {"table": "pretraining", "model": model, "variant": variant, "city": city, "seed": seed,
            "protocol": protocol, "lr": info.get("lr"), "steps": info.get("steps"), "best_step": info.get("best_step"),
            "step_cap": info.get("step_cap"), "best_val_loss": info.get("best_val_loss"),
            "stopped_by": info.get("stopped_by"), "train_cpu_s": info.get("cpu_s"),
            "cka_to_init": linear_cka(init_features(run, tensors, imagery), run_features(run, tensors, imagery))}
