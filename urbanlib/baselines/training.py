"""How every trained baseline trains: through the shared Trainer, with its log and facts read back.

Every trained baseline goes through :class:`urbanlib.train.Trainer` (:func:`fit_trainer`, or
:func:`train` for a plain config), so its optimiser, schedule, early stopping and per-step loss CSV
are the ones UrbanCLIP uses.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from urbanlib.provenance import cpu_seconds
from urbanlib.train import TrainConfig, Trainer

from .base import BaselineInputs


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


def stopping_fields(inputs: BaselineInputs, val_dataset) -> dict:
    """The scale's early-stopping :class:`~urbanlib.train.TrainConfig` fields when there is a validation set.

    ``{}`` without a validation set (the old fixed-length run) or without a scale (the trainer then
    evaluates once an epoch and keeps the best weights, but runs to the cap).
    """
    return inputs.scale.early_stopping() if (val_dataset is not None and inputs.scale is not None) else {}


def train(model: nn.Module, dataset, *, epochs: int, batch_size: int, lr: float, seed: int, progress: bool,
          weight_decay: float = 0.05, warmup_steps: int = 10, desc: str = "", val_dataset=None,
          stopping: dict | None = None) -> tuple[list[dict], dict]:
    """Train ``model`` (``forward(batch) -> {"loss": ...}``) with the shared trainer on the CPU.

    The trainer writes its end-of-run checkpoint into a temporary folder that is discarded: the
    baselines keep features, not weights. The batch size shrinks to the dataset size if needed.

    Args:
        model: the protocol model.
        dataset: training samples.
        epochs: passes over ``dataset``: the step cap when ``val_dataset`` is given.
        batch_size: samples per step.
        lr: peak AdamW learning rate.
        seed: data order and the torch RNG of the run.
        progress: show the trainer's progress bar.
        weight_decay: AdamW decay of the matrices.
        warmup_steps: linear warmup steps.
        desc: label of the run (temporary folder name).
        val_dataset: held-out samples of the same kind (unaugmented) whose loss decides the length;
            the best evaluation's weights are the result.
        stopping: early-stopping fields of :class:`~urbanlib.train.TrainConfig`
            (``scale.early_stopping()``); ignored without ``val_dataset``.

    Returns:
        The per-step log and the run's facts (:func:`~urbanlib.baselines.training.training_facts`).
    """
    batch_size = max(2, min(batch_size, len(dataset)))
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      warmup_steps=warmup_steps, seed=seed, progress=progress, betas=(0.9, 0.999),
                      **(stopping if val_dataset is not None and stopping else {}))
    history, facts = fit_trainer(model, dataset, cfg, val_dataset=val_dataset, device="cpu")
    model.eval()
    return history, facts
