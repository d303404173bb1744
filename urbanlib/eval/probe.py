"""The downstream protocol of both papers: a small MLP per indicator on frozen region features.

UrbanCLIP §3.4 and UrbanLN ("Downstream Task Prediction") freeze the image encoder and fit a light
MLP head per indicator on ln(y + 1) targets, split 6:2:2, selecting the head by validation error.
Here every (seed × indicator) head is one slice of a single batched model, so all heads train in one
loop: each has its own weights, its own masked loss, and its own early stopping. Because the total
loss is a sum of per-head losses and AdamW is elementwise, the heads never influence one another;
a head's result depends only on its seed, its indicator and the data.

Protocol details:

* features are standardised with train-split statistics; regions whose feature row has a NaN
  (no image) are excluded from every side and counted;
* targets are standardised per indicator on train (the loss is on that scale); predictions and
  metrics are back in ln(y + 1) units;
* missing targets (NaN) are masked out of the loss and the metrics, per indicator;
* full-batch AdamW; each head keeps its validation-best weights and stops after ``patience``
  epochs without improvement.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from urbanlib.data.splits import Split

from .metrics import METRICS, mae, r2, rmse


@dataclass
class ProbeConfig:
    """The MLP head and its training. Defaults follow the papers' "lightweight MLP"."""

    hidden: tuple[int, ...] = (64,)  # hidden widths; () is a linear probe. UrbanCLIP's public probe uses one layer
    lr: float = 3e-3  # AdamW step; full-batch steps are few per epoch, so larger than minibatch rates
    weight_decay: float = 1e-2  # AdamW decoupled decay (UrbanCLIP's public probe uses 0.01)
    max_epochs: int = 500  # upper bound; early stopping usually ends within ~50-150 full-batch epochs
    patience: int = 30  # epochs without a validation improvement before a head stops (full-batch curves are smooth)
    min_delta: float = 0.0  # improvement below this (standardised MSE) does not count

    def to_dict(self) -> dict:
        """Plain dict, for provenance and cache keys."""
        return asdict(self)

    @classmethod
    def for_scale(cls, scale) -> ProbeConfig:
        """The probe every model gets at ``scale`` (a :class:`~urbanlib.scales.Scale`; smoke trains it briefly)."""
        return cls(max_epochs=60, patience=10) if scale.name == "smoke" else cls()


@dataclass
class ProbeResult:
    """Everything one :func:`fit_probes` call measured.

    Attributes:
        metrics: tidy rows ``indicator, seed, metric, value, n_test`` (metric in R2/RMSE/MAE, test split,
            ln(y + 1) units).
        predictions: (S, N, T) ln-scale predictions of the selected heads for ALL regions (train, val
            and test, for the papers' "test and all regions" scatter); NaN for regions without
            features and for skipped indicators.
        best_epochs: (S, T) validation-best epoch of each head (0 = untrained init); -1 if skipped.
        stop_epochs: (S, T) last epoch each head trained before early stopping.
        val_curves: (E + 1, S, T) validation MSE on the standardised target scale after each epoch
            (row 0: at init); NaN after a head stopped.
        seeds: the S probe seeds.
        indicators: the T indicator names.
        split: the split used.
        n_without_features: per side, regions excluded because their feature row has NaN.
        skipped: indicator -> reason, for indicators with too few known targets to train.
        config: the probe configuration.
        wall_s: seconds spent fitting.
    """

    metrics: pd.DataFrame
    predictions: np.ndarray
    best_epochs: np.ndarray
    stop_epochs: np.ndarray
    val_curves: np.ndarray
    seeds: list[int]
    indicators: list[str]
    split: Split
    n_without_features: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    config: ProbeConfig = field(default_factory=ProbeConfig)
    wall_s: float = 0.0

    def test_mask(self) -> np.ndarray:
        """(N,) bool, True for test-split regions."""
        mask = np.zeros(self.predictions.shape[1], dtype=bool)
        mask[self.split.test] = True
        return mask


def _check_inputs(features, targets, split: Split, seeds) -> tuple[np.ndarray, np.ndarray, list[int]]:
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {x.shape}")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or len(y) != len(x):
        raise ValueError(f"targets must be (N, T) with N = {len(x)} (features rows), got shape {y.shape}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct ints, got {seeds}")
    for side in ("train", "val", "test"):
        idx = np.asarray(split[side])
        if len(idx) and (idx.min() < 0 or idx.max() >= len(x)):
            raise ValueError(f"split {side!r} has indices outside 0..{len(x) - 1} (features have {len(x)} rows)")
    if np.intersect1d(split.train, split.test).size or np.intersect1d(split.val, split.test).size:
        raise ValueError(f"split {split!r} puts some regions in test and in train/val")
    return x, y, seeds


def draw_head_weights(seeds: list[int], n_ind: int, sizes: list[int], stream: tuple[int, ...] = ()) -> list[np.ndarray]:
    """Initial weights of S x T MLP heads, each drawn from its own generator so it depends only on its seed.

    Head (seed, indicator t) draws layer k from ``default_rng([seed, t, k, *stream])``: adding or
    dropping a seed or an indicator leaves every other head's start unchanged; ``stream`` keeps
    another family of heads (the prompted probe's) apart from this one.
    Uniform(±1/sqrt(fan_in)), the scale of ``torch.nn.Linear``'s default init.

    Args:
        seeds: the S probe seeds.
        n_ind: T, the number of indicators.
        sizes: layer widths, input first and 1 last (e.g. ``[F, 64, 1]``).
        stream: extra keys of every head's generator seed.

    Returns:
        float32 ``[W0, b0, W1, b1, ...]``: Wk (S, T, d_k, d_k+1), bk (S, T, d_k+1).
    """
    params = []
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = np.empty((len(seeds), n_ind, fan_in, fan_out), dtype=np.float32)
        b = np.empty((len(seeds), n_ind, fan_out), dtype=np.float32)
        bound = 1.0 / np.sqrt(fan_in)
        for s, seed in enumerate(seeds):
            for t in range(n_ind):
                rng = np.random.default_rng([seed, t, k, *stream])
                w[s, t] = rng.uniform(-bound, bound, (fan_in, fan_out))
                b[s, t] = rng.uniform(-bound, bound, fan_out)
        params += [w, b]
    return params


def _init_heads(seeds: list[int], n_ind: int, sizes: list[int]) -> list[torch.Tensor]:
    """:func:`draw_head_weights` laid out for :func:`_forward`: W0 (F, S, T, d1), then as drawn."""
    params = draw_head_weights(seeds, n_ind, sizes)
    params[0] = params[0].transpose(2, 0, 1, 3)  # (F, S, T, d1): layer 0 of all heads is one (F, S*T*d1) matmul
    return [torch.from_numpy(np.ascontiguousarray(p)) for p in params]


def _forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Predictions of all heads: x (B, F) -> (B, S, T)."""
    w0, b0 = params[0], params[1]
    F, S, T, d1 = w0.shape
    h = (x @ w0.reshape(F, S * T * d1)).reshape(len(x), S, T, d1) + b0  # (B, S, T, d1)
    for w, b in zip(params[2::2], params[3::2], strict=True):
        if w.shape[-1] == 1:  # output layer: a dot product per head is cheaper than a batched matmul
            h = (torch.relu(h) * w[..., 0]).sum(-1, keepdim=True) + b  # (B, S, T, 1)
        else:
            h = torch.einsum("bsti,stio->bsto", torch.relu(h), w) + b  # (B, S, T, d_next)
    return h[..., 0]  # (B, S, T)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, known: torch.Tensor,
               count: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head mean squared error over the known targets: the loss and the selection score of every probe head.

    Args:
        pred: (n, *heads) predictions of n regions.
        target: targets broadcastable to ``pred``, unknown ones set to any finite value (a NaN
            would turn the gradient NaN even where it is masked out).
        known: bool, the shape of ``target``: True where the target is known.
        count: known targets per head; default ``known.sum(0)``, at least 1.

    Returns:
        (*heads) mean squared error.
    """
    sq = torch.where(known, (pred - target) ** 2, torch.zeros((), dtype=pred.dtype))  # (n, *heads)
    return sq.sum(0) / (known.sum(0).clamp(min=1) if count is None else count)


class EarlyStopping:
    """Each head's validation-best epoch and whether it still trains: the selection rule of every probe.

    An epoch improves a head when its validation loss is more than ``min_delta`` below the head's
    best; a head stops ``patience`` epochs after its last improvement. Heads are the entries of
    the loss tensor, of any shape.

    Args:
        initial_loss: the validation loss at initialisation (epoch 0), one entry per head.
        patience: epochs without an improvement before a head stops.
        min_delta: improvement that does not count.
    """

    def __init__(self, initial_loss: torch.Tensor, patience: int, min_delta: float = 0.0):
        self.best_loss = initial_loss
        self.best_epoch = torch.zeros(initial_loss.shape, dtype=torch.long)
        self.active = torch.ones(initial_loss.shape, dtype=torch.bool)
        self.patience, self.min_delta = patience, min_delta

    def step(self, epoch: int, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Take epoch ``epoch``'s validation losses; returns (heads that improved, heads that stop now)."""
        better = self.active & (val < self.best_loss - self.min_delta)
        self.best_loss = torch.where(better, val, self.best_loss)
        self.best_epoch = torch.where(better, epoch, self.best_epoch)
        done = self.active & (epoch - self.best_epoch >= self.patience)
        self.active = self.active & ~done
        return better, done


def fit_probes(features, targets, split: Split, seeds, config: ProbeConfig | None = None,
               indicators: list[str] | None = None, progress: bool = False) -> ProbeResult:
    """Train one MLP head per indicator and seed on frozen features; score it on the test split.

    Args:
        features: (N, F) region features in ``ds.regions`` order; a row with any NaN means "no
            features" (e.g. no image) and the region is excluded.
        targets: (N, T) ln(y + 1) targets, NaN where unknown (:meth:`UrbanDataset.log_targets`).
        split: train/val/test region positions (:mod:`urbanlib.data.splits`).
        seeds: probe seeds; each gives an independent initialisation of every head.
        config: head size and training; defaults to :class:`ProbeConfig`.
        indicators: T names for the metric rows (default ``y0, y1, ...``).
        progress: show a progress bar over epochs.

    Returns:
        A :class:`ProbeResult` (metrics on the test split, predictions for all regions, epochs).
    """
    start = time.perf_counter()
    cfg = config or ProbeConfig()
    x_all, y_all, seeds = _check_inputs(features, targets, split, seeds)
    N, T = y_all.shape
    names = list(indicators) if indicators is not None else [f"y{j}" for j in range(T)]
    if len(names) != T:
        raise ValueError(f"{len(names)} indicator names for {T} target columns")
    has_x, sides, n_without = _sides_with_features(x_all, split)
    tr, va, te = sides["train"], sides["val"], sides["test"]
    skipped = _untrainable(names, y_all, tr, va)
    cols = [j for j, n in enumerate(names) if n not in skipped]

    S, E = len(seeds), cfg.max_epochs
    predictions = np.full((S, N, T), np.nan)
    best_epochs = np.full((S, T), -1)
    stop_epochs = np.full((S, T), -1)
    curves = np.full((E + 1, S, T), np.nan)
    epoch = 0
    if cols:
        x_std, y_std, y_mu, y_sd = _standardise(x_all, y_all[:, cols], has_x, tr)
        best, best_ep, stop, head_curves, epoch = _train_heads(x_std, y_std, tr, va, seeds, cfg, progress)
        curves[:, :, cols] = head_curves
        with torch.no_grad():
            rows = np.flatnonzero(has_x)
            pred = _forward(best, torch.from_numpy(x_std[rows].astype(np.float32))).numpy()  # (n, S, Tk)
        predictions[:, rows[:, None], np.asarray(cols)[None, :]] = pred.transpose(1, 0, 2) * y_sd + y_mu
        best_epochs[:, cols] = best_ep.numpy()
        stop_epochs[:, cols] = stop.clamp(max=epoch).numpy()

    return ProbeResult(metrics=metrics_on_test(y_all, predictions, te, seeds, names, cols), predictions=predictions,
                       best_epochs=best_epochs, stop_epochs=stop_epochs, val_curves=curves[: epoch + 1], seeds=seeds,
                       indicators=names, split=split, n_without_features=n_without, skipped=skipped, config=cfg,
                       wall_s=time.perf_counter() - start)


def _sides_with_features(x_all: np.ndarray, split: Split) -> tuple[np.ndarray, dict, dict]:
    """(rows with features, each side's positions that have them, per side the count of those without)."""
    has_x = np.isfinite(x_all).all(1)
    sides = {s: np.asarray(split[s], dtype=int) for s in ("train", "val", "test")}
    n_without = {s: int((~has_x[idx]).sum()) for s, idx in sides.items()}
    sides = {s: idx[has_x[idx]] for s, idx in sides.items()}
    if len(sides["train"]) == 0:
        raise ValueError(f"no training region has features ({n_without['train']} train regions without)")
    return has_x, sides, n_without


def _untrainable(names: list[str], y_all: np.ndarray, tr: np.ndarray, va: np.ndarray) -> dict[str, str]:
    """Indicators without enough known targets to train (2 on train) and select (1 on validation), with why."""
    skipped = {}
    for j, name in enumerate(names):
        n_tr, n_va = np.isfinite(y_all[tr, j]).sum(), np.isfinite(y_all[va, j]).sum()
        if n_tr < 2 or n_va < 1:
            skipped[name] = f"only {n_tr} train and {n_va} validation regions with a known value"
    return skipped


def _standardise(x_all: np.ndarray, y: np.ndarray, has_x: np.ndarray, tr: np.ndarray):
    """Features and targets standardised with train statistics only; returns (x_std, y_std, y_mu, y_sd)."""
    mu, sd = x_all[tr].mean(0), x_all[tr].std(0)
    sd[sd == 0] = 1.0
    x_std = np.where(has_x[:, None], (np.nan_to_num(x_all) - mu) / sd, 0.0)
    return x_std, *standardise_targets(y, tr)


def standardise_targets(y: np.ndarray, tr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets (N, T) standardised per indicator with the known train values: (y_std, mean, sd).

    The heads learn on this scale; predictions go back to ln(y + 1) as ``y_std * sd + mean``. A
    column without spread on train keeps sd 1, so it is only centred.
    """
    y_mu, y_sd = np.nanmean(y[tr], 0), np.nanstd(y[tr], 0)
    y_sd[~(y_sd > 0)] = 1.0
    return (y - y_mu) / y_sd, y_mu, y_sd


def _masked_tensors(x_std: np.ndarray, y_std: np.ndarray, idx: np.ndarray):
    """(x, y with NaN as 0, known-target mask, known count per indicator) of the regions ``idx``, as tensors.

    y and the mask are (n, 1, Tk), so they broadcast over the seeds of the heads' (n, S, Tk) predictions.
    """
    yy = torch.from_numpy(np.nan_to_num(y_std[idx]).astype(np.float32))
    mm = torch.from_numpy(np.isfinite(y_std[idx]))
    return torch.from_numpy(x_std[idx].astype(np.float32)), yy[:, None], mm[:, None], mm.sum(0).clamp(min=1)


def _train_heads(x_std, y_std, tr, va, seeds: list[int], cfg: ProbeConfig, progress: bool):
    """Full-batch AdamW on all (seed x indicator) heads at once, each with its own early stopping.

    Returns (validation-best weights, best epoch (S, Tk), stop epoch (S, Tk), validation curves
    (E + 1, S, Tk) with NaN after a head stopped, the last epoch run).
    """
    S, Tk, E = len(seeds), y_std.shape[1], cfg.max_epochs
    x_tr, y_tr, m_tr, c_tr = _masked_tensors(x_std, y_std, tr)
    x_va, y_va, m_va, c_va = _masked_tensors(x_std, y_std, va)
    params = _init_heads(seeds, Tk, [x_std.shape[1], *cfg.hidden, 1])
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = [p.detach().clone() for p in params]
    with torch.no_grad():
        stopping = EarlyStopping(masked_mse(_forward(params, x_va), y_va, m_va, c_va), cfg.patience, cfg.min_delta)
    stop = torch.full((S, Tk), E, dtype=torch.long)
    curves = np.full((E + 1, S, Tk), np.nan)
    curves[0] = stopping.best_loss.numpy()
    epoch = 0
    bar = tqdm(total=E, desc="probe epochs", disable=not progress, leave=False)
    for epoch in range(1, E + 1):
        opt.zero_grad(set_to_none=True)
        loss = masked_mse(_forward(params, x_tr), y_tr, m_tr, c_tr).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            val = masked_mse(_forward(params, x_va), y_va, m_va, c_va)  # (S, Tk)
            curves[epoch] = np.where(stopping.active.numpy(), val.numpy(), np.nan)
            better, done = stopping.step(epoch, val)
            for k, (p, b) in enumerate(zip(params, best, strict=True)):
                view = better.view(1, S, Tk, 1) if k == 0 else better.view(S, Tk, *([1] * (p.dim() - 2)))
                b.copy_(torch.where(view, p, b))
            stop = torch.where(done, epoch, stop)
        bar.update(1)
        if not stopping.active.any():
            break
    bar.close()
    return best, stopping.best_epoch, stop, curves, epoch


def metrics_on_test(targets: np.ndarray, predictions: np.ndarray, test: np.ndarray, seeds: list[int],
                    names: list[str], cols: list[int] | None = None) -> pd.DataFrame:
    """R2, RMSE and MAE per (indicator, seed) on the test regions whose target is known: the probes' metric rows.

    Args:
        targets: (N, T) ln(y + 1) truth, NaN where unknown.
        predictions: (S, N, T) ln(y + 1) predictions.
        test: positions of the test regions.
        seeds: the S seeds, one per prediction slice.
        names: the T indicator names.
        cols: the indicators to score (default all; a skipped one has no rows).

    Returns:
        Tidy rows ``indicator, seed, metric, value, n_test``, seed-major.
    """
    records = []
    for s, seed in enumerate(seeds):
        for j in range(len(names)) if cols is None else cols:
            truth, pred = targets[test, j], predictions[s, test, j]
            known = np.isfinite(truth)
            values = {"R2": r2(truth[known], pred[known]), "RMSE": rmse(truth[known], pred[known]),
                      "MAE": mae(truth[known], pred[known])}
            records += [{"indicator": names[j], "seed": seed, "metric": m, "value": values[m],
                         "n_test": int(known.sum())} for m in METRICS]
    return pd.DataFrame(records, columns=["indicator", "seed", "metric", "value", "n_test"])
