"""Pieces the trained baselines share: running the shared Trainer, reading its log, encoding every region.

Every trained baseline goes through :class:`urbanlib.train.Trainer`, so its optimiser, schedule and
per-step loss CSV are the ones UrbanCLIP uses; its downstream features are computed the same way
for all regions, with NaN rows where a region has no image.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from urbanlib.pipeline.tensors import RegionTensors, normalize
from urbanlib.provenance import cpu_seconds
from urbanlib.train import TrainConfig, Trainer

from .base import BaselineInputs


def resize_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float images (..., 3, H, W) to ``size`` x ``size`` (bicubic) if they differ."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])  # (n, 3, H, W)
    out = F.interpolate(flat, size=(size, size), mode="bicubic", align_corners=False)
    return out.reshape(*lead, 3, size, size)


def read_history(out_dir: Path) -> list[dict]:
    """The trainer's ``losses.csv`` as a list of per-step dicts (all rows, resumed runs included)."""
    path = Path(out_dir) / "losses.csv"
    if not path.exists():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k in ("step", "epoch") else float(v)) for k, v in r.items()} for r in rows]


def training_facts(trainer: Trainer, cpu_s: float) -> dict:
    """What a finished trainer run reports: ``lr, steps, best_step, step_cap, best_val_loss, stopped_by, cpu_s``.

    Without a validation set ``best_val_loss`` is None and ``best_step`` the last step (the run's
    result); ``stopped_by`` is ``"patience"`` or ``"cap"``. ``cpu_s`` is this call's process CPU time
    (about 0 for a finished run that was only loaded).
    """
    st = trainer.stop
    return {"lr": trainer.config.lr, "steps": trainer.step, "best_step": st.best_step if trainer.eval_interval
            else trainer.step, "step_cap": trainer.total_steps, "best_val_loss": st.best_val,
            "stopped_by": st.stopped_by, "cpu_s": cpu_s, "train_samples": len(trainer.dataset),
            "val_samples": len(trainer.val_dataset) if trainer.val_dataset is not None else 0}


def fit_trainer(model: nn.Module, dataset, train_config: TrainConfig, out_dir: str = "",
                collate: Callable | None = None, val_dataset=None,
                device: str | torch.device | None = None) -> tuple[list[dict], dict]:
    """Train ``model`` with the shared Trainer; returns its full per-step history and :func:`training_facts`.

    Args:
        model: a protocol model (``forward(batch) -> {"loss", ...}``).
        dataset: map-style dataset of dict samples (optionally with ``set_epoch``).
        train_config: optimiser, schedule and (with ``val_dataset``) early stopping.
        out_dir: run directory kept after training (checkpoints, ``losses.csv``); a finished run
            there is resumed, i.e. not retrained. Empty: a temporary directory, deleted afterwards.
        collate: list of samples -> batch dict (the trainer's stacking default if None).
        val_dataset: held-out samples whose loss decides the run's length (the trainer's early stopping).
        device: the trainer's device (its default if None).
    """
    kwargs = {"collate": collate} if collate is not None else {}

    def go(directory: str, resume: bool) -> tuple[list[dict], dict]:
        trainer = Trainer(model, dataset, train_config, directory, val_dataset=val_dataset, device=device, **kwargs)
        cpu0 = cpu_seconds()
        trainer.fit(resume=resume)
        return read_history(Path(directory)), training_facts(trainer, cpu_seconds() - cpu0)

    if out_dir:
        return go(out_dir, True)
    with tempfile.TemporaryDirectory(prefix="urbanlib-baseline-") as tmp:
        return go(tmp, False)


def run_trainer(model: nn.Module, dataset, train_config: TrainConfig, out_dir: str = "",
                collate: Callable | None = None, val_dataset=None) -> list[dict]:
    """:func:`fit_trainer`'s per-step history alone."""
    return fit_trainer(model, dataset, train_config, out_dir, collate, val_dataset)[0]


def stopping_fields(inputs: BaselineInputs, val_dataset) -> dict:
    """The scale's early-stopping :class:`~urbanlib.train.TrainConfig` fields when there is a validation set.

    ``{}`` without a validation set (the old fixed-length run) or without a scale (the trainer then
    evaluates once an epoch and keeps the best weights, but runs to the cap).
    """
    return inputs.scale.early_stopping() if (val_dataset is not None and inputs.scale is not None) else {}


@torch.no_grad()
def encode_satellite(encode: Callable[[torch.Tensor], torch.Tensor], tensors: RegionTensors, image_size: int,
                     batch_size: int = 256, progress: bool = False, desc: str = "encode") -> np.ndarray:
    """Features (N, F) float32 of every region's satellite tile; NaN rows for regions without one.

    Args:
        encode: CLIP-normalised images (n, 3, image_size, image_size) -> (n, F) features.
        tensors: the dataset's images.
        image_size: the encoder's input side (tiles are resized if they differ).
        batch_size: tiles per forward pass.
        progress: show a progress bar.
        desc: progress-bar label.
    """
    have = np.flatnonzero(tensors.satellite_mask)
    out = None
    for start in tqdm(range(0, len(have), batch_size), desc=desc, disable=not progress, leave=False):
        idx = have[start:start + batch_size]
        f = encode(resize_to(normalize(torch.from_numpy(tensors.satellite[idx])), image_size)).float().numpy()
        if out is None:
            out = np.full((len(tensors), f.shape[1]), np.nan, np.float32)
        out[idx] = f
    if out is None:
        raise ValueError("no region has a satellite image: nothing to encode")
    return out


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


def usable_train(train_idx: np.ndarray, mask: np.ndarray, name: str, minimum: int = 2) -> np.ndarray:
    """Train positions that also satisfy ``mask`` (e.g. have a tile); a clear error if too few remain."""
    idx = np.asarray(train_idx, dtype=int)
    idx = idx[np.asarray(mask)[idx]]
    if len(idx) < minimum:
        raise ValueError(f"{name}: only {len(idx)} training regions have the data it needs (need >= {minimum})")
    return idx
