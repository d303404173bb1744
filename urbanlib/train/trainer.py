"""The trainer shared by every model that follows the protocol in ``notes/GUIDE.md``.

``model(batch) -> {"loss": ..., "<name>_loss": ...}``; optional ``model.after_optimizer_step(step)``.
AdamW, linear warmup + cosine decay, gradient clipping, optional autocast (bf16/fp16 on CUDA, bf16
on CPU), per-step CSV log, atomic safetensors checkpoints, exact resume, DDP under ``torchrun``.

Data order is a pure function of ``(seed, epoch)``: each epoch draws a permutation from its own
generator, and the global batch ``perm[i*B:(i+1)*B]`` is split across ranks, so a resumed run —
and an N-rank run — sees exactly the batches of the uninterrupted single-process run.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .distributed import is_distributed, rank, world_size
from .schedule import lr_at

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Optimisation settings; every field has a default."""

    epochs: int = 10  # passes over the dataset
    max_steps: int = 0  # stop after this many optimizer steps (0 = epochs * steps_per_epoch)
    batch_size: int = 32  # GLOBAL batch; each of N ranks takes batch_size / N
    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.05  # AdamW decay on matrices (not on norms, biases, embeddings, temperature)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas (CLIP/CoCa practice)
    warmup_steps: int = 20  # linear warmup steps
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    precision: str = "fp32"  # "fp32" | "bf16" (autocast, CUDA or CPU) | "fp16" (autocast + GradScaler, CUDA)
    seed: int = 0  # data order and (fresh runs) the torch RNG
    checkpoint_every: int = 0  # steps between checkpoints (0 = only at the end)
    progress: bool = True  # tqdm bar on rank 0
    num_threads: int = 0  # torch intra-op threads (0 = leave as is); 1 avoids OpenMP thrash on a busy CPU


def init_distributed_from_env() -> bool:
    """Initialise the process group when launched by ``torchrun`` (gloo on CPU, NCCL on GPU)."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def default_collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of per-sample dicts into a batch dict."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim < 2 or "embedding" in name or "cls_emb" in name or "logit_scale" in name or "query" in name


class Trainer:
    """Train a protocol model on a map-style dataset of dict samples.

    Args:
        model: ``nn.Module`` with ``forward(batch) -> dict`` holding ``"loss"``.
        dataset: ``len()`` and ``__getitem__(i) -> dict[str, Tensor]``; an optional
            ``set_epoch(epoch)`` is called before each epoch (e.g. to redraw captions).
        config: :class:`TrainConfig`.
        out_dir: run directory (``losses.csv``, ``step-*/`` checkpoints, ``latest.json``).
        collate: list of samples -> batch dict.
        device: defaults to this rank's GPU if CUDA is available, else CPU.
    """

    def __init__(self, model: nn.Module, dataset: Any, config: TrainConfig, out_dir: str | Path,
                 collate: Callable = default_collate, device: str | torch.device | None = None):
        if config.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {config.precision!r}")
        init_distributed_from_env()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.config, self.dataset, self.collate = config, dataset, collate
        self.out_dir = Path(out_dir)
        if device is None:
            device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs CUDA; use 'bf16' on CPU")
        self.model = model.to(self.device)
        self.world, self.rank = world_size(), rank()
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by world size {self.world}")
        self.steps_per_epoch = len(dataset) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"dataset has {len(dataset)} samples, fewer than one batch of {config.batch_size}")
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if not _no_decay(n, p)], "weight_decay": config.weight_decay},
                  {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.ddp = None
        if is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.step = 0
        self.history: list[dict[str, float]] = []

    # ---- data ---------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=g)

    def _batch(self, order: torch.Tensor, index_in_epoch: int) -> dict[str, torch.Tensor]:
        per_rank = self.config.batch_size // self.world
        start = index_in_epoch * self.config.batch_size + self.rank * per_rank
        items = [self.dataset[int(i)] for i in order[start:start + per_rank]]
        return {k: v.to(self.device, non_blocking=True) for k, v in self.collate(items).items()}

    def _autocast(self):
        if self.config.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ---- checkpoints --------------------------------------------------------------------
    def save(self) -> Path | None:
        """Checkpoint now (rank 0 writes; all ranks wait)."""
        path = None
        if self.rank == 0:
            extra = {"train_config": asdict(self.config), "history_len": len(self.history),
                     "scaler": self.scaler.state_dict() if self.scaler else None}
            cfg = getattr(self.model, "cfg", None)
            if cfg is not None and hasattr(cfg, "to_dict"):
                extra["model_config"] = cfg.to_dict()
            path = save_checkpoint(self.out_dir, self.step, self.model, self.optimizer, extra)
        if is_distributed():
            dist.barrier()
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` or the run's latest checkpoint; returns False when there is none."""
        path = path or latest_checkpoint(self.out_dir)
        if path is None:
            return False
        state = load_checkpoint(path, self.model, self.optimizer)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        return True

    # ---- logging ------------------------------------------------------------------------
    def _open_log(self, fields: list[str]):
        path = self.out_dir / "losses.csv"
        rows = []
        if path.exists():  # keep rows up to the resumed step; a killed run may have logged past it
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        f = path.open("w", newline="")
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return f, writer

    # ---- loop ---------------------------------------------------------------------------
    def fit(self, resume: bool = True) -> list[dict[str, float]]:
        """Train until ``total_steps``; with ``resume`` continue from the latest checkpoint.

        Returns:
            One dict per step of this call: ``step`` (1-based), ``epoch``, ``lr`` and the loss terms.
        """
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not (resume and self.resume()):
            torch.manual_seed(cfg.seed)
        net = self.ddp or self.model
        net.train()
        log_file = writer = None
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not cfg.progress or self.rank != 0,
                   desc="train", dynamic_ncols=True)
        epoch, order = -1, None
        try:
            while self.step < self.total_steps:
                e, i = divmod(self.step, self.steps_per_epoch)
                if e != epoch:
                    epoch, order = e, self._epoch_order(e)
                    if hasattr(self.dataset, "set_epoch"):
                        self.dataset.set_epoch(epoch)
                lr = lr_at(self.step, cfg.lr, cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                batch = self._batch(order, i)
                with self._autocast():
                    out = net(batch)
                if "loss" not in out:
                    raise KeyError(f"{type(self.model).__name__}.forward must return a dict with 'loss'")
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler:
                    self.scaler.scale(out["loss"]).backward()
                    self.scaler.unscale_(self.optimizer)
                else:
                    out["loss"].backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                if self.scaler:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                hook = getattr(self.model, "after_optimizer_step", None)
                if hook is not None:
                    hook(self.step)  # 0-based index of the step just taken
                self.step += 1
                row = {"step": self.step, "epoch": epoch, "lr": lr,
                       **{k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}}
                self.history.append(row)
                if self.rank == 0:
                    if writer is None:
                        log_file, writer = self._open_log(list(row))
                    writer.writerow(row)
                    log_file.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps:
                    self.save()
            self.save()
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
        return self.history
