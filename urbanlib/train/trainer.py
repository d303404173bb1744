"""The trainer shared by every model that follows the protocol in ``notes/GUIDE.md``.

``model(batch) -> {"loss": ..., "<name>_loss": ...}``; optional ``model.after_optimizer_step(step)``.
AdamW (fused), linear warmup then cosine decay over the step cap or a plateau schedule, gradient
clipping, optional autocast (bf16/fp16 on CUDA, bf16 on CPU), per-step CSV log, atomic safetensors
checkpoints, exact resume, DDP under ``torchrun``.

Training length is decided on data when a validation set is given: the validation loss is computed
``evals_per_epoch`` times per epoch (and once at step 0); the run stops when it has not improved for
``patience`` evaluations spanning at least ``patience_epochs`` epochs (evaluations during the lr
warmup do not count against it), or at the step cap, and the weights of the best evaluation are
the run's result. With ``schedule="plateau"`` the learning rate
follows that length: it is cut by ``plateau_factor`` after ``plateau_patience`` evaluations without
improvement (a cosine over the cap that stops early would never have decayed).

Data order is a pure function of ``(seed, epoch)``: each epoch draws a permutation from its own
generator, and the global batch ``perm[i*B:(i+1)*B]`` is split across ranks, so a resumed run —
and an N-rank run — sees exactly the batches of the uninterrupted single-process run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from urbanlib.cache import atomic_write

from .checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from .distributed import is_distributed, rank, world_size
from .schedule import lr_at

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "plateau")
# TrainConfig fields a resumed run may change: they shape storage and progress output, not the
# result; and the step cap (epochs, max_steps), which a run may extend or end early (see ``fit``)
RESUME_MAY_DIFFER = ("progress", "keep_checkpoints", "snapshots", "num_threads", "checkpoint_every",
                     "epochs", "max_steps")


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
    schedule: str = "cosine"  # "cosine" over the step cap | "plateau": warmup, then cut on validation plateaus
    evals_per_epoch: int = 0  # validation passes per epoch (0 = no validation; needs a val_dataset)
    patience: int = 0  # stop after this many evaluations without improvement (0 = always run to the cap)
    patience_epochs: float = 2.0  # ... and the patience window spans at least this many epochs
    plateau_patience: int = 2  # evaluations without improvement before the lr is cut (schedule="plateau")
    plateau_factor: float = 0.5  # lr multiplier at each plateau
    min_delta: float = 1e-3  # relative decrease of the validation loss that counts as an improvement
    val_key: str = "loss"  # which term of ``model(batch)`` is the validation loss
    restore_best: bool = True  # the run's final weights are those of its best evaluation
    fused_adamw: bool = True  # torch's fused AdamW kernel (fewer passes over the parameters)
    keep_checkpoints: int = 1  # checkpoints kept on disk, newest first (0 = all); the final one is always kept
    snapshots: bool = False  # also save the model weights at every evaluation (snapshots/step-N.safetensors)
    precise_bn_batches: int = 8  # BatchNorm statistics re-estimated on this many training batches before each
    # evaluation and at the end (PreciseBN); a no-op for models without BatchNorm


@dataclass
class EarlyStopState:
    """Validation bookkeeping, saved in every checkpoint so that a resumed run stops where the straight one does."""

    evals: int = 0  # evaluations so far (step 0 included)
    best_val: float | None = None  # lowest validation loss seen
    best_step: int = 0  # the step it was seen at (the run's result with restore_best)
    bad_evals: int = 0  # evaluations since the last improvement
    bad_since_cut: int = 0  # ... since the last learning-rate cut
    lr_scale: float = 1.0  # product of the plateau cuts
    stopped_by: str | None = None  # "patience" | "cap" once the run has stopped
    finished: bool = False  # the final checkpoint is written


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
                 collate: Callable = default_collate, device: str | torch.device | None = None,
                 val_dataset: Any = None):
        if config.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {config.precision!r}")
        if config.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {SCHEDULES}, got {config.schedule!r}")
        if (config.evals_per_epoch or config.patience or config.schedule == "plateau") and val_dataset is None:
            raise ValueError("evals_per_epoch, patience and schedule='plateau' need a val_dataset")
        if val_dataset is not None and len(val_dataset) == 0:
            raise ValueError("val_dataset is empty")
        init_distributed_from_env()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.config, self.dataset, self.collate, self.val_dataset = config, dataset, collate, val_dataset
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
        fused = config.fused_adamw and self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused or None)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.ddp = None
        if is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.step = 0
        self.history: list[dict[str, float]] = []
        evals = config.evals_per_epoch or (1 if val_dataset is not None else 0)
        self.eval_interval = max(1, self.steps_per_epoch // evals) if evals else 0
        self.patience = (max(config.patience, math.ceil(config.patience_epochs * self.steps_per_epoch
                                                        / self.eval_interval)) if config.patience else 0)
        self.stop = EarlyStopState()

    # ---- data ---------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=g)

    def _start_epoch(self, epoch: int) -> torch.Tensor:
        """Tell the dataset the epoch (``set_epoch``, if it has one); returns the epoch's order (:meth:`_epoch_order`)."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self._epoch_order(epoch)

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
                     "samples": len(self.dataset), "val_samples": len(self.val_dataset or []),
                     "scaler": self.scaler.state_dict() if self.scaler else None, "early_stop": asdict(self.stop)}
            cfg = getattr(self.model, "cfg", None)
            if cfg is not None and hasattr(cfg, "to_dict"):
                extra["model_config"] = cfg.to_dict()
            path = save_checkpoint(self.out_dir, self.step, self.model, self.optimizer, extra)
            if self.config.keep_checkpoints:
                old = sorted(p for p in self.out_dir.glob("step-*") if p.is_dir() and p != path)
                for stale in old[: max(0, len(old) - (self.config.keep_checkpoints - 1))]:
                    shutil.rmtree(stale, ignore_errors=True)
        if is_distributed():
            dist.barrier()
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` or the run's latest checkpoint; returns False when there is none.

        Raises:
            CheckpointError: the checkpoint was written under a different configuration (the message
                names the differing fields; only :data:`RESUME_MAY_DIFFER` may change) or for a
                dataset of another size, or one of its files fails its sha256 check.
        """
        path = path or latest_checkpoint(self.out_dir)
        if path is None:
            return False
        self._check_resumable(Path(path))
        state = load_checkpoint(path, self.model, self.optimizer)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if state.get("early_stop"):
            self.stop = EarlyStopState(**state["early_stop"])
        return True

    def _check_resumable(self, path: Path) -> None:
        """Refuse to continue a run whose saved config or data size differs from this trainer's."""
        verify_checkpoint(path)  # damaged bytes first: a changed state.json is not a config change
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path / 'state.json'}: unreadable ({e})") from None
        saved = state.get("train_config") or {}
        now = json.loads(json.dumps(asdict(self.config)))  # tuples as lists, as saved
        diff = [f"{k}: checkpoint {saved[k]!r}, now {now[k]!r}" for k in now
                if k in saved and k not in RESUME_MAY_DIFFER and saved[k] != now[k]]
        for key, n in (("samples", len(self.dataset)), ("val_samples", len(self.val_dataset or []))):
            if key in state and state[key] != n:
                diff.append(f"{key} (dataset size): checkpoint {state[key]}, now {n}")
        if diff:
            raise CheckpointError(f"{path}: cannot resume this run with a different configuration; differing "
                                  f"field(s): {'; '.join(diff)}. Use another out_dir, or fit(resume=False) "
                                  f"to start over")

    # ---- validation -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss (``config.val_key``) over fixed, unaugmented-by-epoch batches.

        Batches are the validation set in order, ``batch_size`` at a time (one batch of all of it when
        it is smaller), split across ranks like training batches; the RNG is forked so evaluating
        does not change the training run's random stream.
        """
        cfg, n = self.config, len(self.val_dataset)
        size = min(cfg.batch_size, n) if self.world == 1 else cfg.batch_size
        if n < size:
            raise ValueError(f"val_dataset has {n} samples, fewer than one batch of {size} across {self.world} ranks")
        net = self.ddp or self.model
        total, count = torch.zeros((), dtype=torch.float64), 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 7919)
            self._precise_bn()
            net.eval()
            per_rank = size // self.world
            for start in range(0, n - size + 1, size):
                idx = range(start + self.rank * per_rank, start + (self.rank + 1) * per_rank)
                batch = {k: v.to(self.device) for k, v in self.collate([self.val_dataset[i] for i in idx]).items()}
                with self._autocast():
                    out = net(batch)
                if cfg.val_key not in out:
                    raise KeyError(f"val_key {cfg.val_key!r} is not a term of {type(self.model).__name__}.forward "
                                   f"(terms: {sorted(out)})")
                total += float(out[cfg.val_key]) * size
                count += size
        net.train()
        if is_distributed():
            dist.all_reduce(total)
            total /= self.world
        return float(total) / count

    @torch.no_grad()
    def _precise_bn(self) -> None:
        """Re-estimate BatchNorm running statistics as plain averages over a few training batches.

        With momentum 0.1 the running statistics lag weights that are still moving, so in a short run
        eval-mode outputs (the validation loss, the features) differ from train-mode ones and the
        validation loss can rise while the model improves (Wu & Johnson 2021, "PreciseBN"). The
        batches are the first ``precise_bn_batches`` of the current epoch's order; under DDP the ranks
        average their estimates. The caller forks the RNG, so training's random stream is untouched.
        """
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and m.track_running_stats]
        k = min(self.config.precise_bn_batches, self.steps_per_epoch)
        if not bns or k <= 0:
            return
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        self.model.train()
        order = self._start_epoch(min(self.step, self.total_steps - 1) // self.steps_per_epoch)
        for i in range(k):
            with self._autocast():
                self.model(self._batch(order, i))
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
            if is_distributed():
                for buf in (m.running_mean, m.running_var):
                    dist.all_reduce(buf)
                    buf /= self.world

    def _after_eval(self, val: float) -> None:
        """Track the best validation loss, cut the lr on a plateau, decide whether to stop."""
        st, cfg = self.stop, self.config
        st.evals += 1
        improved = st.best_val is None or val < st.best_val - cfg.min_delta * abs(st.best_val)
        if cfg.snapshots and self.rank == 0:
            snap = self.out_dir / "snapshots"
            snap.mkdir(exist_ok=True)
            with atomic_write(snap / f"step-{self.step:08d}.safetensors") as tmp:
                save_file({k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}, str(tmp))
        if improved:
            st.best_val, st.best_step, st.bad_evals, st.bad_since_cut = val, self.step, 0, 0
            if cfg.restore_best and self.rank == 0:
                self._save_best()
        elif self.step > cfg.warmup_steps:  # the loss may rise while the lr warms up: not a plateau
            st.bad_evals += 1
            st.bad_since_cut += 1
            if cfg.schedule == "plateau" and st.bad_since_cut >= cfg.plateau_patience:
                st.lr_scale *= cfg.plateau_factor
                st.bad_since_cut = 0
        if self.patience and st.bad_evals >= self.patience:
            st.stopped_by = "patience"
        if self.rank == 0:
            path = self.out_dir / "val.csv"
            new = not path.exists()
            with path.open("a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(["step", "epoch", "val_loss", "best_val_loss", "lr_scale"])
                w.writerow([self.step, self.step / self.steps_per_epoch, val, st.best_val, st.lr_scale])

    def _save_best(self) -> None:
        best = self.out_dir / "best"
        best.mkdir(parents=True, exist_ok=True)
        with atomic_write(best / "model.safetensors") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}, str(tmp))
        (best / "step.json").write_text(json.dumps({"step": self.step, "val_loss": self.stop.best_val}))

    def _trim_log(self, name: str) -> None:
        """Rewrite a per-step log up to the resumed step, replacing the file atomically.

        Rows a killed run logged after its checkpoint, a line it left half-written and repeated
        steps are dropped.
        """
        path = self.out_dir / name
        if not path.exists():
            return
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            path.unlink()
            return
        keep, last = rows[:1], None
        for r in rows[1:]:
            if len(r) != len(rows[0]) or any(v == "" for v in r[:1]):
                continue  # a partial line (killed mid-write)
            try:
                step = int(r[0])
            except ValueError:
                continue
            if step <= self.step and (last is None or step > last):
                keep.append(r)
                last = step
        with atomic_write(path) as tmp, tmp.open("w", newline="") as f:
            csv.writer(f).writerows(keep)

    def _lr(self) -> float:
        cfg = self.config
        if cfg.schedule == "cosine":
            return lr_at(self.step, cfg.lr, cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio)
        warm = (self.step + 1) / cfg.warmup_steps if cfg.warmup_steps and self.step < cfg.warmup_steps else 1.0
        return cfg.lr * warm * self.stop.lr_scale

    # ---- logging ------------------------------------------------------------------------
    def _open_log(self, fields: list[str]):
        """Append to ``losses.csv`` (trimmed to the resumed step by ``fit``); a new file gets a header."""
        path = self.out_dir / "losses.csv"
        header = None
        if path.exists() and path.stat().st_size:
            with path.open(newline="") as f:
                header = next(csv.reader(f), None)
        f = path.open("a", newline="")
        writer = csv.DictWriter(f, fieldnames=header or fields, extrasaction="ignore")
        if header is None:
            writer.writeheader()
        return f, writer

    # ---- loop ---------------------------------------------------------------------------
    def _finish(self) -> None:
        """Mark the run finished, put the best evaluation's weights in place, write the final checkpoint."""
        st = self.stop
        st.stopped_by = st.stopped_by or "cap"
        st.finished = True
        if not self.eval_interval:  # no evaluation set the statistics: the final weights get them here
            with torch.random.fork_rng(devices=[]):
                self._precise_bn()
        best = self.out_dir / "best" / "model.safetensors"
        if self.config.restore_best and self.eval_interval:
            if is_distributed():
                dist.barrier()
            if best.exists() and st.best_step != self.step:
                self.model.load_state_dict(load_file(str(best)))
        self.save()

    def fit(self, resume: bool = True) -> list[dict[str, float]]:
        """Train until early stopping or ``total_steps``; with ``resume`` continue from the latest checkpoint.

        A finished run (its final checkpoint says so) is loaded, not trained further or rewritten.

        Returns:
            One dict per step of this call: ``step`` (1-based), ``epoch``, ``lr`` and the loss terms.
        """
        cfg = self.config
        if self._begin(resume):
            return self.history  # finished: never trained further or rewritten (logs included)
        net = self.ddp or self.model
        net.train()
        log_file = writer = None
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not cfg.progress or self.rank != 0,
                   desc="train", dynamic_ncols=True)
        epoch, order = -1, None
        try:
            if self.eval_interval and self.stop.evals == 0:
                self._after_eval(self.evaluate())  # step 0: the loss at initialisation, the curve's start
            while self.step < self.total_steps and self.stop.stopped_by is None:
                e, i = divmod(self.step, self.steps_per_epoch)
                if e != epoch:
                    epoch, order = e, self._start_epoch(e)
                lr = self._set_lr()
                out = self._train_step(net, self._batch(order, i))
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
                if self.eval_interval and self.step % self.eval_interval == 0:
                    self._after_eval(self.evaluate())
                    bar.set_postfix(loss=f"{row['loss']:.4f}", val=f"{self.stop.best_val:.4f}")
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps
                        and self.stop.stopped_by is None):
                    self.save()
            self._finish()
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
        return self.history

    def _begin(self, resume: bool) -> bool:
        """Resume the latest checkpoint (with ``resume``) or start afresh; True when the run is already finished.

        A fresh start seeds torch and clears an earlier run's logs; a resumed one trims its logs to the resumed
        step. A finished run may still go on when the step cap grew since (see :data:`RESUME_MAY_DIFFER`).
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not (resume and self.resume()):
            torch.manual_seed(self.config.seed)
            if self.rank == 0:
                for stale in ("losses.csv", "val.csv", "best", "snapshots"):
                    p = self.out_dir / stale
                    if p.is_dir():
                        shutil.rmtree(p)
                    elif p.exists():
                        p.unlink()
        if self.stop.finished and (self.stop.stopped_by == "patience" or self.step >= self.total_steps):
            return True
        if self.step and self.rank == 0:
            self._trim_log("losses.csv")
            self._trim_log("val.csv")
        self.stop.finished, self.stop.stopped_by = False, None  # a larger cap than the finished run's
        return False

    def _set_lr(self) -> float:
        """Put this step's learning rate (:meth:`_lr`) on every parameter group; returns it."""
        lr = self._lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _train_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimizer step on ``batch``: forward, backward, gradient clipping, update, the model's hook.

        Under fp16 the loss is scaled and the gradients unscaled before clipping (``GradScaler``). Advances
        ``self.step``.

        Returns:
            The model's output on ``batch`` (``"loss"`` and the other terms, from before the update).
        """
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
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        hook = getattr(self.model, "after_optimizer_step", None)
        if hook is not None:
            hook(self.step)  # 0-based index of the step just taken
        self.step += 1
        return out
