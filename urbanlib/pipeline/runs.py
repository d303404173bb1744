"""Cached, resumable training runs: the same run asked for twice trains once.

A run directory is named by a hash of everything that determines its result (model and training
configs, the exact training texts and region ids, the data's content hash, the seed and the source
code of the model and trainer). A finished run holds ``done.json``; an interrupted one resumes from
its latest checkpoint (the trainer's resume reproduces the uninterrupted run).

The cache is local and may not survive a move to a new machine. A run asked for with
``archive=True`` (the ``full`` tier's shared stage 0, which many units consume over many sessions)
is also written to the committed ``results/runs/<run folder>/``: its final weights, logs and
``done.json`` with sha256 sums. A cache miss restores such a run from there instead of retraining.
The folder name carries the code hash, so an archive of other code is never used.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from urbanlib.cache import atomic_write, cache_dir, file_lock, results_root, stable_hash
from urbanlib.provenance import PACKAGE_ROOT, cpu_seconds, files_hash
from urbanlib.train.checkpoint import CheckpointError, file_sha256, latest_checkpoint, load_checkpoint
from urbanlib.train.trainer import TrainConfig, Trainer

_CODE_DIRS = ("models", "train", "pipeline")
# modules in those folders that read trained models but never shape one (decoding, plots):
# editing them must not retrain every cached run
_NOT_TRAINING = {"models/generate.py", "pipeline/plots.py"}


@functools.cache
def code_hash(dirs: tuple[str, ...] = _CODE_DIRS) -> str:
    """Hash of the urbanlib sources that shape a trained model (by default: models, trainer, pipeline).

    Computed once per process: the code that runs is the code imported at start, so editing a file
    while a long run is going neither renames its cache folder nor mixes two versions in one unit.
    """
    files = [p for d in dirs for p in (PACKAGE_ROOT / d).rglob("*") if p.suffix in (".py", ".json")
             and p.is_file() and str(p.relative_to(PACKAGE_ROOT)) not in _NOT_TRAINING]
    return files_hash(files)[:16]


code_hash()  # at import, with the code it names: a file edited later in the run cannot rename its folders


@dataclass
class RunResult:
    """A finished training run.

    Attributes:
        name: e.g. ``"urbanclip-synth-ring"``.
        run_dir: folder with ``losses.csv``, checkpoints and ``done.json``.
        model: the trained model (eval mode, CPU).
        history: per-step log (step, epoch, lr and the loss terms).
        wall_s: training wall time in seconds (of the run that produced it, not of loading it).
        cached: True when this call loaded a finished run instead of training.
        info: facts for the book (pairs, steps, truncations, queue size, parameters, ...).
    """

    name: str
    run_dir: Path
    model: torch.nn.Module
    history: pd.DataFrame
    wall_s: float
    cached: bool
    info: dict = field(default_factory=dict)


def run_dir_for(name: str, key_obj: dict[str, Any]) -> Path:
    """The cache folder of a run: ``<cache>/runs/<name>-<hash>``."""
    return cache_dir("runs") / f"{name}-{stable_hash({**key_obj, 'code': code_hash()})}"


def archive_dir() -> Path:
    """``results/runs/``: finished runs kept with the results (``$URBANLIB_RESULTS`` moves the results folder)."""
    return results_root() / "runs"


ARCHIVED_FILES = ("model.safetensors", "losses.csv", "val.csv")  # + done.json (written last) and sha256.json


def _archive(run_dir: Path, model: torch.nn.Module) -> Path:
    """Write the finished run's final weights, logs and ``done.json`` to :func:`archive_dir` (atomically)."""
    dest = archive_dir() / run_dir.name
    with atomic_write(dest) as tmp:  # a folder: assembled beside ``dest``, then swapped in
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        for name in ARCHIVED_FILES[1:]:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, tmp / name)
        sums = {n: file_sha256(tmp / n) for n in ARCHIVED_FILES if (tmp / n).exists()}
        (tmp / "sha256.json").write_text(json.dumps(sums, indent=1))
        shutil.copy2(run_dir / "done.json", tmp / "done.json")
    return dest


def _restore(run_dir: Path, model: torch.nn.Module) -> bool:
    """Fill an empty cache folder from the run's archive, if there is one; False if there is none.

    The freshly built ``model`` is the run's initialisation (same seed, same code): it is saved as
    ``init.safetensors`` for the random-init twin before the archived weights are put in place.

    Raises:
        CheckpointError: an archived file is missing or fails its sha256 (the file is named).
    """
    src = archive_dir() / run_dir.name
    if not (src / "done.json").exists():
        return False

    sums = json.loads((src / "sha256.json").read_text()) if (src / "sha256.json").exists() else {}
    for name in ("model.safetensors", *sums):
        if not (src / name).exists():
            raise CheckpointError(f"{src / name}: missing from the archived run")
        if name in sums and file_sha256(src / name) != sums[name]:
            raise CheckpointError(f"{src / name}: sha256 differs from {src / 'sha256.json'} (damaged archive)")
    if not (run_dir / "init.safetensors").exists():
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(run_dir / "init.safetensors"))
    for name in ARCHIVED_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, run_dir / ("final.safetensors" if name == "model.safetensors" else name))
    shutil.copy2(src / "done.json", run_dir / "done.json")  # last: the run counts as finished only now
    return True


def train_or_load(name: str, model: torch.nn.Module, dataset, config: TrainConfig, key_obj: dict[str, Any],
                  info: dict | None = None, collate=None, val_dataset=None, archive: bool = False) -> RunResult:
    """Train ``model`` on ``dataset`` unless an identical finished run is cached; resume a partial one.

    Args:
        name: run name (readable prefix of the folder).
        model: freshly built model (its weights are replaced when the run is cached).
        dataset: map-style dataset of dict samples.
        config: trainer settings (part of the key).
        key_obj: JSON-able description of everything else that determines the result.
        info: facts to store in ``done.json`` and return.
        collate: optional collate function for the trainer.
        val_dataset: held-out pairs whose loss decides the run's length (see :class:`TrainConfig`).
        archive: also keep the finished run in the committed :func:`archive_dir`, and restore it
            from there when the cache lacks it.
    """
    storage = ("progress", "keep_checkpoints", "snapshots", "num_threads")  # shape the disk, not the result
    run_dir = run_dir_for(name, {**key_obj, "train": {k: v for k, v in asdict(config).items() if k not in storage}})
    run_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(run_dir / ".lock"):  # two notebooks asking for one run: the second waits, then loads it
        return _train_or_load(name, run_dir, model, dataset, config, key_obj, info, collate, val_dataset, archive)


def _train_or_load(name, run_dir, model, dataset, config, key_obj, info, collate, val_dataset,
                   archive=False) -> RunResult:
    done = run_dir / "done.json"
    if done.exists() or (archive and _restore(run_dir, model)):
        meta = json.loads(done.read_text())
        if (run_dir / "final.safetensors").exists():  # restored from the archive: weights only
            model.load_state_dict(load_file(str(run_dir / "final.safetensors")))
        else:
            load_checkpoint(latest_checkpoint(run_dir), model)
        model.eval()
        if archive and not (archive_dir() / run_dir.name / "done.json").exists():
            _archive(run_dir, model)  # trained before it was asked to be kept (e.g. as a selection candidate)
        return RunResult(name, run_dir, model, _history(run_dir), meta["wall_s"], True, meta["info"])
    kwargs = {"collate": collate} if collate is not None else {}
    if not (run_dir / "init.safetensors").exists():  # the weights at initialisation: the random-init twin
        with atomic_write(run_dir / "init.safetensors") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    trainer = Trainer(model, dataset, config, run_dir, val_dataset=val_dataset, **kwargs)
    start = time.perf_counter()
    cpu0 = cpu_seconds()
    trainer.fit(resume=True)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    st = trainer.stop
    info = {**(info or {}), "steps": trainer.step, "step_cap": trainer.total_steps, "pairs": len(dataset),
            "val_pairs": len(val_dataset) if val_dataset is not None else 0, "lr": config.lr,
            "best_step": st.best_step, "best_val_loss": st.best_val, "stopped_by": st.stopped_by,
            "epochs_run": trainer.step / trainer.steps_per_epoch, "cpu_s": cpu}
    with atomic_write(done) as tmp:
        tmp.write_text(json.dumps({"wall_s": wall, "info": info, "key": key_obj}, indent=1, default=str))
    model.eval()
    if archive:
        _archive(run_dir, model)
    return RunResult(name, run_dir, model, _history(run_dir), wall, False, info)


def validation_curve(run: RunResult) -> pd.DataFrame:
    """The run's validation evaluations (step, epoch, val_loss, best_val_loss, lr_scale); empty without."""
    path = run.run_dir / "val.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def init_model(run: RunResult, model: torch.nn.Module) -> torch.nn.Module:
    """Load the run's weights at initialisation (saved beside it) into ``model``: the random-init twin."""
    model.load_state_dict(load_file(str(run.run_dir / "init.safetensors")))
    return model.eval()


def _history(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "losses.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def cached_array(run: RunResult, name: str, compute) -> Any:
    """``compute()`` once per run and name; stored as ``<run_dir>/<name>.safetensors`` (no pickle)."""
    path = run.run_dir / f"{name}.safetensors"
    if path.exists():
        return load_file(str(path))["value"].numpy()
    value = compute()
    with atomic_write(path) as tmp:
        save_file({"value": torch.as_tensor(value).contiguous()}, str(tmp))
    return value
