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
- **Student**: a fresh net of the same shape trained on labels + pseudo-labels with noise
  (dihedral augmentation, Gaussian pixel noise, dropout), as in noisy-student self-training. The
  pseudo-labels are the teacher's averaged probabilities (``soft_pseudo_labels``; noisy student
  allows soft or hard ones): a student fitted to the hard argmax of a teacher that is right on
  about 60% of tiles grows overconfident at once, and its validation cross-entropy never beat its
  initialisation (measured on synth-ring at ``full``: best step 0 for every learning rate).
- **Features**: the student's penultimate layer (pooled conv features).
- **Length**: with ``inputs.val_idx`` given (the benchmark's runs), ``val_fraction`` of the labelled
  tiles are held out of both trainings (never pseudo-labelled either) and their cross-entropy,
  unaugmented, stops the teacher and then the student (the scale's early stopping). READ's loss is
  supervised, so its validation set is its own labelled tiles, not ``inputs.val_idx``, whose labels
  it must not read. Both epoch counts are caps, each ``max(preset, scale.pretrain_epochs)``
  (:func:`~urbanlib.baselines._common.epoch_cap`); the learning rate of both is the ``"READ"``
  family's (:func:`urbanlib.pipeline.hparams.chosen_lr`). Without ``val_idx``: fixed epochs, every
  labelled tile trained on.

Deviations from the paper: READ fine-tunes an ImageNet ResNet-18 (transfer learning), and builds
a district vector from statistics of many tiles ("embedded statistics"), then reduces it with PCA.
Here there are no hub weights and every region is one tile, so the nets start from random init
and the region feature is the tile feature itself.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from urbanlib.eval.metrics import linear_cka
from urbanlib.models.parameters import count_parameters
from urbanlib.pipeline.hparams import chosen_lr
from urbanlib.pipeline.tensors import normalize
from urbanlib.scales import Scale

from ._common import (
    ConvConfig,
    ConvEncoder,
    TileDataset,
    embed_all,
    epoch_cap,
    resolve_scale,
    train_positions,
)
from .base import BaselineInputs, FittedEncoder
from .training import stopping_fields, train

FAMILY = "READ"  # its learning-rate family (urbanlib.pipeline.hparams.GRIDS)
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
    soft_pseudo_labels: bool = True  # the student fits the teacher's averaged probabilities, not their argmax
    teacher_epochs: int = 30  # passes over the labelled tiles (the cap with validation)
    student_epochs: int = 8  # passes over labelled + pseudo-labelled tiles (the cap with validation)
    batch_size: int = 32  # tiles per step
    lr: float = 2e-3  # AdamW peak learning rate of teacher and student (warmup + cosine, or cut on plateaus)
    val_fraction: float = 0.2  # labelled tiles held out to stop both trainings (only with inputs.val_idx)

    @classmethod
    def for_scale(cls, scale: Scale | str | None, **overrides) -> READConfig:
        """Preset sized for ``scale`` (smoke: seconds; default/full: ~40 s on one thread; paper: larger).

        Epochs: :func:`~urbanlib.baselines._common.epoch_cap` of each preset; lr: the family's
        (:func:`~urbanlib.pipeline.hparams.chosen_lr`) unless overridden.
        """
        s = resolve_scale(scale)
        if s.name == "smoke":
            cfg = cls(label_fraction=0.3, conv=ConvConfig(widths=(16, 32, 64), convs_per_block=1), teacher_epochs=30,
                      student_epochs=25, batch_size=16)
        elif s.name == "paper":
            cfg = cls(conv=ConvConfig(widths=(32, 64, 128, 256)), teacher_epochs=60, student_epochs=20, batch_size=64)
        else:
            cfg = cls()
        fields = {"teacher_epochs": epoch_cap(cfg.teacher_epochs, s),
                  "student_epochs": epoch_cap(cfg.student_epochs, s), **overrides}
        if "lr" not in fields:
            fields["lr"] = chosen_lr(FAMILY, s)
        return replace(cfg, **fields)


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
        target = batch["label"]  # (B,) classes, or (B, n_classes) probabilities (soft pseudo-labels)
        loss = F.cross_entropy(logits, target)
        hard = target.argmax(1) if target.is_floating_point() else target
        acc = (logits.argmax(1) == hard).float().mean()
        return {"loss": loss, "classification_loss": loss.detach(), "batch_accuracy": acc}


def build(config: READConfig, seed: int, pixel_noise: float = 0.0) -> Classifier:
    """A random-init classifier, its weights a function of ``seed``."""
    torch.manual_seed(seed)
    return Classifier(config, pixel_noise)


# ---- labels -----------------------------------------------------------------------------------
def label_pool(inputs: BaselineInputs) -> np.ndarray:
    """Training regions whose labels READ may read: those in ``inputs.label_idx`` (all training regions if None)."""
    idx = train_positions(inputs)
    return idx if inputs.label_idx is None else np.intersect1d(idx, inputs.label_idx)


def label_column(inputs: BaselineInputs, cfg: READConfig) -> str:
    """The indicator used as label: ``cfg.label_indicator`` if present in the label pool, else a fallback."""
    regions, pool = inputs.ds.regions, label_pool(inputs)
    for name in (cfg.label_indicator, *LABEL_FALLBACKS):
        if name in regions.columns and regions[name].iloc[pool].notna().sum() >= 2 * cfg.n_classes:
            return name
    raise ValueError(f"READ needs an indicator to bin into classes; none of {(cfg.label_indicator, *LABEL_FALLBACKS)} "
                     f"has {2 * cfg.n_classes}+ values in the regions whose labels it may read")


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
    pool = label_pool(inputs)  # labels: probe train only
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


def hold_out_labelled(labelled: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the labelled tiles kept for training and those held out to stop it (by seed, at least one)."""
    if fraction <= 0 or len(labelled) < 3:
        return labelled, labelled[:0]
    rng = np.random.default_rng([seed, 5])
    n_val = min(len(labelled) - 2, max(1, round(fraction * len(labelled))))
    val = np.sort(rng.choice(labelled, n_val, replace=False))
    return np.setdiff1d(labelled, val), val


def train_read(inputs: BaselineInputs, config: READConfig | None = None) -> tuple[Classifier, Classifier, dict]:
    """Teacher on the labelled subset, pseudo-labels, then the noisy student.

    Returns:
        teacher, student (eval mode) and ``info``: label column, class edges, counts, both step logs,
        both runs' facts (``teacher_training``, ``training``), the student at initialisation
        (``student_init``).
    """
    cfg = config or READConfig.for_scale(inputs.scale)
    sat = inputs.tensors.satellite
    col, labelled, classes, unlabelled = split_labelled(inputs, cfg)
    y = inputs.ds.regions[col].to_numpy(float)
    of_class = dict(zip(labelled.tolist(), classes.tolist(), strict=True))
    validate = inputs.val_idx is not None
    fit_lab, val_lab = hold_out_labelled(labelled, cfg.val_fraction if validate else 0.0, inputs.seed)
    fit_classes = np.array([of_class[p] for p in fit_lab], dtype=np.int64)
    kw = {"batch_size": cfg.batch_size, "lr": cfg.lr, "seed": inputs.seed, "progress": inputs.progress,
          "stopping": stopping_fields(inputs, val_lab if len(val_lab) else None)}

    def val_set(seed: int) -> TileDataset | None:
        if not len(val_lab):
            return None
        labels = torch.as_tensor([of_class[p] for p in val_lab], dtype=torch.long)
        return TileDataset(sat, val_lab, seed, augment=False, extra={"label": labels})

    teacher = build(cfg, inputs.seed)
    data = TileDataset(sat, fit_lab, inputs.seed, extra={"label": torch.as_tensor(fit_classes, dtype=torch.long)})
    teacher_log, teacher_facts = train(teacher, data, epochs=cfg.teacher_epochs, desc="read-teacher",
                                       val_dataset=val_set(inputs.seed), **kw)

    probs = dihedral_probs(teacher, sat[unlabelled])
    conf, pseudo = probs.max(1)
    keep = (conf >= cfg.confidence).numpy()
    idx = np.concatenate([fit_lab, unlabelled[keep]])
    if cfg.soft_pseudo_labels:
        targets = np.concatenate([np.eye(cfg.n_classes, dtype=np.float32)[fit_classes], probs.numpy()[keep]])
    else:
        targets = np.concatenate([fit_classes, pseudo.numpy()[keep]])
    order = np.argsort(idx)
    student = _student_at_init(inputs, cfg)
    student_init = copy.deepcopy(student).eval()
    data = TileDataset(sat, idx[order], inputs.seed + 1, extra={"label": torch.as_tensor(targets[order])})
    student_log, student_facts = train(student, data, epochs=cfg.student_epochs, desc="read-student",
                                       val_dataset=val_set(inputs.seed + 1), **kw)

    info = {"label_indicator": col, "class_edges_log1p": class_edges(y[labelled], cfg.n_classes).tolist(),
            "n_labelled": int(len(labelled)), "n_labelled_validation": int(len(val_lab)),
            "n_unlabelled": int(len(unlabelled)), "n_pseudo_labelled": int(keep.sum()),
            "labelled_positions": labelled, "validation_positions": val_lab,
            "teacher_history": teacher_log, "student_history": student_log,
            "teacher_training": teacher_facts, "training": student_facts, "student_init": student_init}
    return teacher, student, info


def _student_at_init(inputs: BaselineInputs, cfg: READConfig) -> Classifier:
    """The student :func:`train_read` trains (and :func:`fit_init` keeps): a function of the seed alone."""
    return build(cfg, inputs.seed + 1, pixel_noise=cfg.pixel_noise)


def fit_init(inputs: BaselineInputs, config: READConfig | None = None) -> FittedEncoder:
    """READ's random-init twin: every region's student features at the weights the student starts from.

    READ's features are its student's, so what the teacher-student training adds is the trained
    student's gain over this one, probed the same way. No label is read.
    """
    cfg = config or READConfig.for_scale(inputs.scale)
    student = _student_at_init(inputs, cfg).eval()
    feats = embed_all(student.features, inputs, desc="READ init features")
    n = count_parameters(student.encoder)["total"]
    return FittedEncoder("READ (random init)", feats, [], n, 0,
                         {"config": asdict(cfg), "weights": f"the READ student's weights at initialisation "
                                                            f"(seed {inputs.seed + 1}), untrained, no labels read"})


def fit(inputs: BaselineInputs, config: READConfig | None = None) -> FittedEncoder:
    """Train READ's teacher and student; features are the student's penultimate layer."""
    cfg = config or READConfig.for_scale(inputs.scale)
    _, student, info = train_read(inputs, cfg)
    feats = embed_all(student.features, inputs, desc="READ features")
    init = info.pop("student_init")
    history = [{**r, "stage": "teacher"} for r in info.pop("teacher_history")]
    history += [{**r, "step": r["step"] + len(history), "stage": "student"} for r in info.pop("student_history")]
    info.pop("labelled_positions")
    info.pop("validation_positions")
    n = count_parameters(student.encoder)["total"]
    return FittedEncoder("READ", feats, history, n, n,
                         {"config": asdict(cfg), "weights": "teacher-student from random init",
                          "supervised": "labels of inputs.label_idx only (the probe's train regions)", **info,
                          "cka_to_init": linear_cka(embed_all(init.features, inputs, desc="READ init"), feats)})
