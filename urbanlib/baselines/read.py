"""READ (Han et al., AAAI 2020): a teacher-student semi-supervised tile encoder.

READ learns "economic scale" classes (uninhabited / rural / urban) from a *small* set of
human-labelled tiles: a teacher is trained on the labelled tiles, it pseudo-labels the unlabelled
ones, and a student trained on labels + pseudo-labels with noise becomes the feature extractor.
Our datasets have no such human labels, so this module keeps the method and swaps the label:

- **Label**: ``config.label_indicator`` (default night light) cut into ``n_classes`` quantile bins
  of ``ln(1 + y)``, the edges taken from the labelled regions only. Night light is the classic
  satellite proxy of economic scale (READ's own motivation, and it is recorded for every SynthCity
  region), and tertiles of it play the role of READ's uninhabited/rural/urban classes. If the
  indicator is missing (real data), the first available of ``LABEL_FALLBACKS`` is used.
- **Labelled subset**: a random ``label_fraction`` of the training regions with that label, drawn
  by seed among ``inputs.label_idx`` (the probe's train regions) when given; all other training
  regions are "unlabelled" — their labels are never read.
  Test regions are never touched. Note: this gives READ supervision on one downstream indicator
  (train regions only, the same labels the probe sees), which is what a semi-supervised baseline is.
- **Teacher**: the shared small conv net (:class:`~urbanlib.baselines._common.ConvEncoder`) +
  dropout + linear classifier, cross-entropy on the labelled tiles, dihedral augmentation.
- **Pseudo-labels**: the teacher's class probabilities averaged over the 8 dihedral transforms of
  each unlabelled training tile; tiles whose top probability is below ``confidence`` are dropped.
- **Student**: a fresh net of the same shape trained on labels + hard pseudo-labels with noise
  (dihedral augmentation, Gaussian pixel noise, dropout), as in noisy-student self-training.
- **Features**: the student's penultimate layer (pooled conv features).

Deviations from the paper: READ fine-tunes an ImageNet ResNet-18 (transfer learning), and builds
a district vector from statistics of many tiles ("embedded statistics"), then reduces it with PCA.
Here there are no hub weights and every region is one tile, so the nets start from random init
and the region feature is the tile feature itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from urbanlib.pipeline.tensors import normalize

from ._common import (
    ConvConfig,
    ConvEncoder,
    TileDataset,
    count_params,
    embed_all,
    scale_name,
    train,
    train_positions,
)
from .base import BaselineInputs, FittedEncoder

LABEL_FALLBACKS = ("night_light", "population", "gdp", "carbon", "poi_count")


@dataclass
class READConfig:
    """Labels, architecture and training length; :meth:`for_scale` gives the presets."""

    label_indicator: str = "night_light"  # indicator binned into economic-scale classes
    n_classes: int = 3  # quantile bins (READ: uninhabited / rural / urban)
    label_fraction: float = 0.2  # share of training regions whose label the teacher sees
    conv: ConvConfig = field(default_factory=lambda: ConvConfig(convs_per_block=1))  # teacher and student nets
    dropout: float = 0.3  # before the classifier (student noise; teacher regularisation)
    pixel_noise: float = 0.1  # std of Gaussian noise added to the student's (normalised) input
    confidence: float = 0.0  # minimum averaged teacher probability to keep a pseudo-label (0: keep all)
    teacher_epochs: int = 30  # passes over the labelled tiles
    student_epochs: int = 8  # passes over labelled + pseudo-labelled tiles
    batch_size: int = 32  # tiles per step
    lr: float = 2e-3  # AdamW peak learning rate (warmup + cosine)

    @classmethod
    def for_scale(cls, name: str) -> READConfig:
        """Preset sized for ``name`` (smoke: seconds; default/full: ~40 s on one thread; paper: larger)."""
        if name == "smoke":
            return cls(label_fraction=0.3, conv=ConvConfig(widths=(16, 32, 64), convs_per_block=1), teacher_epochs=30,
                       student_epochs=25, batch_size=16)
        if name == "paper":
            return cls(conv=ConvConfig(widths=(32, 64, 128, 256)), teacher_epochs=60, student_epochs=20,
                       batch_size=64, lr=1e-3)
        return cls()


class Classifier(nn.Module):
    """Conv encoder -> dropout -> linear classes; ``features`` is the penultimate layer."""

    def __init__(self, cfg: READConfig, pixel_noise: float = 0.0):
        super().__init__()
        self.encoder = ConvEncoder(cfg.conv)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.encoder.out_dim, cfg.n_classes)
        self.pixel_noise = pixel_noise

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C) penultimate features."""
        return self.encoder(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, n_classes)."""
        return self.head(self.dropout(self.encoder(x)))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Cross-entropy terms of a batch ``{"image": (B, 3, S, S), "label": (B,) long}``."""
        x = batch["image"]
        if self.training and self.pixel_noise:
            x = x + self.pixel_noise * torch.randn_like(x)
        logits = self.logits(x)
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        return {"loss": loss, "classification_loss": loss.detach(), "batch_accuracy": acc}


def build(config: READConfig, seed: int, pixel_noise: float = 0.0) -> Classifier:
    """A random-init classifier, its weights a function of ``seed``."""
    torch.manual_seed(seed)
    return Classifier(config, pixel_noise)


# ---- labels -----------------------------------------------------------------------------------
def label_column(inputs: BaselineInputs, cfg: READConfig) -> str:
    """The indicator used as label: ``cfg.label_indicator`` if present in the training regions, else a fallback."""
    regions, idx = inputs.ds.regions, train_positions(inputs)
    for name in (cfg.label_indicator, *LABEL_FALLBACKS):
        if name in regions.columns and regions[name].iloc[idx].notna().sum() >= 2 * cfg.n_classes:
            return name
    raise ValueError(f"READ needs an indicator to bin into classes; none of {(cfg.label_indicator, *LABEL_FALLBACKS)} "
                     f"has {2 * cfg.n_classes}+ values in the training regions")


def class_edges(values: np.ndarray, n_classes: int) -> np.ndarray:
    """Inner quantile edges (n_classes - 1,) of ``ln(1 + values)``."""
    return np.quantile(np.log1p(values), np.linspace(0, 1, n_classes + 1)[1:-1])


def to_classes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Class index of each value (NaN values give -1)."""
    out = np.searchsorted(edges, np.log1p(values), side="right")
    return np.where(np.isnan(values), -1, out)


def split_labelled(inputs: BaselineInputs, cfg: READConfig) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Label column, labelled positions, their classes, and the unlabelled training positions."""
    col = label_column(inputs, cfg)
    idx = train_positions(inputs)
    y = inputs.ds.regions[col].to_numpy(float)
    pool = idx if inputs.label_idx is None else np.intersect1d(idx, inputs.label_idx)  # labels: probe train only
    has = pool[~np.isnan(y[pool])]
    rng = np.random.default_rng([inputs.seed, 3])
    n_lab = min(len(has), max(2 * cfg.n_classes, round(cfg.label_fraction * len(idx))))
    labelled = np.sort(rng.choice(has, n_lab, replace=False))
    classes = to_classes(y[labelled], class_edges(y[labelled], cfg.n_classes))
    return col, labelled, classes, np.setdiff1d(idx, labelled)


@torch.no_grad()
def dihedral_probs(model: Classifier, satellite: np.ndarray, batch_size: int = 128) -> torch.Tensor:
    """Class probabilities (n, n_classes) averaged over the 8 rotations/flips of each uint8 tile."""
    model.eval()
    out = []
    for s in range(0, len(satellite), batch_size):
        x = normalize(torch.from_numpy(satellite[s:s + batch_size]))
        views = [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
        out.append(torch.stack([model.logits(v).softmax(-1) for v in views]).mean(0))
    return torch.cat(out) if out else torch.zeros(0, model.head.out_features)


def accuracy(model: Classifier, satellite: np.ndarray, classes: np.ndarray) -> float:
    """Share of tiles whose dihedral-averaged prediction equals ``classes``."""
    return float((dihedral_probs(model, satellite).argmax(1).numpy() == classes).mean())


def train_read(inputs: BaselineInputs, config: READConfig | None = None) -> tuple[Classifier, Classifier, dict]:
    """Teacher on the labelled subset, pseudo-labels, then the noisy student.

    Returns:
        teacher, student (eval mode) and ``info``: label column, class edges, counts, both step logs.
    """
    cfg = config or READConfig.for_scale(scale_name(inputs))
    sat = inputs.tensors.satellite
    col, labelled, classes, unlabelled = split_labelled(inputs, cfg)
    y = inputs.ds.regions[col].to_numpy(float)
    kw = {"batch_size": cfg.batch_size, "lr": cfg.lr, "seed": inputs.seed, "progress": inputs.progress}

    teacher = build(cfg, inputs.seed)
    data = TileDataset(sat, labelled, inputs.seed, extra={"label": torch.as_tensor(classes, dtype=torch.long)})
    teacher_log = train(teacher, data, epochs=cfg.teacher_epochs, desc="read-teacher", **kw)

    probs = dihedral_probs(teacher, sat[unlabelled])
    conf, pseudo = probs.max(1)
    keep = (conf >= cfg.confidence).numpy()
    idx = np.concatenate([labelled, unlabelled[keep]])
    targets = np.concatenate([classes, pseudo.numpy()[keep]])
    order = np.argsort(idx)
    student = build(cfg, inputs.seed + 1, pixel_noise=cfg.pixel_noise)
    data = TileDataset(sat, idx[order], inputs.seed + 1, extra={"label": torch.as_tensor(targets[order])})
    student_log = train(student, data, epochs=cfg.student_epochs, desc="read-student", **kw)

    info = {"label_indicator": col, "class_edges_log1p": class_edges(y[labelled], cfg.n_classes).tolist(),
            "n_labelled": int(len(labelled)), "n_unlabelled": int(len(unlabelled)),
            "n_pseudo_labelled": int(keep.sum()), "labelled_positions": labelled,
            "teacher_history": teacher_log, "student_history": student_log}
    return teacher, student, info


def fit(inputs: BaselineInputs, config: READConfig | None = None) -> FittedEncoder:
    """Train READ's teacher and student; features are the student's penultimate layer."""
    cfg = config or READConfig.for_scale(scale_name(inputs))
    _, student, info = train_read(inputs, cfg)
    feats = embed_all(student.features, inputs, desc="READ features")
    history = [{**r, "stage": "teacher"} for r in info.pop("teacher_history")]
    history += [{**r, "step": r["step"] + len(history), "stage": "student"} for r in info.pop("student_history")]
    info.pop("labelled_positions")
    n = count_params(student.encoder)
    return FittedEncoder("READ", feats, history, n, n,
                         {"config": asdict(cfg), "weights": "teacher-student from random init", **info})
