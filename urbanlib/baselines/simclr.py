"""SimCLR on UrbanCLIP's ViT, shared by UrbanViT, Text-SimCLR and PG-SimCLR.

The three baselines differ only in what the positive of an anchor tile is:

* UrbanViT: another augmented view of the same tile (plain SimCLR);
* Text-SimCLR: the tile of a region whose captions are among the most similar (UrbanCLIP §4.3.3);
* PG-SimCLR: the tile of a POI-similar region, and of a geographically adjacent one (Xi et al. 2022).

Everything else is shared: the ViT of ``urbanclip-<model_size>``, its training tiles, the epochs of
``scale.pretrain_epochs``, the shared :func:`~urbanlib.pipeline.augment.dihedral` augmentation plus
SimCLR's views (random resized crop, colour jitter, grayscale) and the shared Trainer with
UrbanCLIP's optimiser and schedule, so their table rows compare objectives, not set-ups.
Downstream features are :func:`~urbanlib.models.urbanclip.mean_patch_features`, as for UrbanCLIP.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from open_clip.transformer import VisionTransformer
from torch import nn

from urbanlib.eval.metrics import linear_cka
from urbanlib.models import get_config
from urbanlib.models.config import VisionConfig
from urbanlib.models.parameters import count_parameters
from urbanlib.models.urbanclip import mean_patch_features, vit_token_features
from urbanlib.pipeline.augment import dihedral
from urbanlib.pipeline.hparams import chosen_lr
from urbanlib.pipeline.tensors import normalize
from urbanlib.scales import Scale, get_scale
from urbanlib.train import TrainConfig
from urbanlib.train.distributed import all_gather_with_grad, world_size

from ._common import embed_all, train_positions
from .base import BaselineInputs, FittedEncoder
from .training import fit_trainer


@dataclass
class SimCLRConfig:
    """Training settings of the SimCLR-family baselines; :meth:`for_scale` sizes them."""

    model_size: str = "cpu"  # vision config of ``urbanclip-<model_size>`` (UrbanCLIP's ViT)
    epochs: int = 6  # passes over the training tiles (``scale.pretrain_epochs``, as UrbanCLIP)
    batch_size: int = 32  # anchors per step (UrbanCLIP: 32, 16 for tiny models); capped at the train size
    lr: float = 5e-4  # peak AdamW learning rate (TrainConfig default, as UrbanCLIP)
    warmup_steps: int = 20  # linear warmup (TrainConfig default, as UrbanCLIP)
    temperature: float = 0.1  # NT-Xent temperature, fixed as in SimCLR
    proj_dim: int = 0  # projection-head output size (0 = UrbanCLIP's embed_dim)
    # SimCLR's views, milder than its ImageNet recipe (crop 0.08-1, jitter 0.8*s, hue 0.2*s, p=0.8, gray 0.2),
    # which assumes hundreds of epochs: on the smoke city, crop 0.3-1 with jitter 0.4 kept the loss at
    # chance, log(2B-1), for 150 steps; these views brought it to ~1.5 (measured while writing this module).
    crop_scale: tuple[float, float] = (0.6, 1.0)  # random-resized-crop area range
    jitter: float = 0.2  # brightness/contrast/saturation jitter strength
    hue: float = 0.0  # hue jitter
    jitter_p: float = 0.5  # probability of colour jitter
    gray_p: float = 0.0  # probability of grayscale
    positives_k: int = 5  # pair baselines: an anchor's positive is drawn each epoch from its top-k regions
    out_dir: str = ""  # keep the run (checkpoints, losses.csv) here; "" = temporary directory

    @classmethod
    def for_scale(cls, scale: Scale | str | None, **overrides) -> SimCLRConfig:
        """UrbanCLIP's model size, epochs and batch size for ``scale`` (default scale if None), the family's lr."""
        s = get_scale(scale)
        batch = 16 if s.model_size == "tiny" else 32  # as urbanlib.pipeline.urbanclip.train_config
        lr = overrides.pop("lr") if "lr" in overrides else chosen_lr("SimCLR ViT", s)  # a candidate needs no choice
        return cls(**{"model_size": s.model_size, "epochs": s.pretrain_epochs, "batch_size": batch, "lr": lr,
                      **overrides})


# ---- views -------------------------------------------------------------------------------------
def _crop_box(h: int, w: int, scale: tuple[float, float], g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop with area in ``scale`` and aspect ratio in [3/4, 4/3]."""
    for _ in range(10):
        area = h * w * float(torch.empty(()).uniform_(*scale, generator=g))
        ratio = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            return top, left, ch, cw
    return 0, 0, h, w


def simclr_view(img: torch.Tensor, size: int, cfg: SimCLRConfig, g: torch.Generator) -> torch.Tensor:
    """One SimCLR view of a uint8 tile (3, H, W): dihedral transform, random resized crop, colour jitter, grayscale.

    Returns:
        CLIP-normalised float image (3, size, size).
    """
    x = dihedral(img[None], g)[0]
    top, left, ch, cw = _crop_box(x.shape[-2], x.shape[-1], cfg.crop_scale, g)
    x = TF.resized_crop(x, top, left, ch, cw, [size, size], antialias=True)
    if float(torch.rand((), generator=g)) < cfg.jitter_p:
        s, hue = cfg.jitter, cfg.hue
        factors = torch.empty(3).uniform_(1 - s, 1 + s, generator=g).tolist()
        shift = float(torch.empty(()).uniform_(-hue, hue, generator=g))
        ops = [lambda y: TF.adjust_brightness(y, factors[0]), lambda y: TF.adjust_contrast(y, factors[1]),
               lambda y: TF.adjust_saturation(y, factors[2]), lambda y: TF.adjust_hue(y, shift)]
        for j in torch.randperm(4, generator=g).tolist():  # SimCLR applies the jitters in random order
            x = ops[j](x)
    if float(torch.rand((), generator=g)) < cfg.gray_p:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    return normalize(x)


def item_generator(seed: int, epoch: int, item: int, stream: int = 0) -> torch.Generator:
    """A generator that is a pure function of (seed, epoch, item, stream), so resumed runs redraw the same views."""
    state = np.random.SeedSequence([seed, epoch, item, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


class PairViews:
    """Map-style dataset for the Trainer: an anchor tile and, per positive kind, an augmented positive.

    Args:
        tiles: (n, 3, S, S) uint8 training tiles.
        positives: positive kind -> per tile, candidate positions into ``tiles``; ``None`` means the
            tile itself (two views of one tile). Each epoch one candidate is drawn per tile and kind.
        image_size: the encoder's input side.
        cfg: view settings.
        seed: seed of the draws.
        n_anchors: only the first ``n_anchors`` tiles are anchors (validation: held-out anchors whose
            positives may be training tiles); default all.
    """

    def __init__(self, tiles: torch.Tensor, positives: dict[str, list[np.ndarray] | None], image_size: int,
                 cfg: SimCLRConfig, seed: int = 0, n_anchors: int | None = None):
        for kind, cands in positives.items():
            if cands is not None and len(cands) != len(tiles):
                raise ValueError(f"PairViews: {len(tiles)} tiles but {len(cands)} '{kind}' candidate lists")
            if cands is not None and any(len(c) == 0 for c in cands):
                raise ValueError(f"PairViews: some tile has no '{kind}' positive candidate")
        self.tiles, self.positives, self.size, self.cfg, self.seed = tiles, positives, image_size, cfg, seed
        self.n_anchors = len(tiles) if n_anchors is None else n_anchors  # anchors: the first n_anchors tiles
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Views and positives are redrawn each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_anchors

    def positive_of(self, i: int, kind: str) -> int:
        """Position of tile ``i``'s ``kind`` positive in this epoch."""
        cands = self.positives[kind]
        if cands is None:
            return i
        g = item_generator(self.seed, self.epoch, i, stream=1 + list(self.positives).index(kind))
        return int(cands[i][int(torch.randint(0, len(cands[i]), (), generator=g))])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = item_generator(self.seed, self.epoch, i)
        out = {"anchor": simclr_view(self.tiles[i], self.size, self.cfg, g), "region_index": torch.tensor(i)}
        for kind in self.positives:
            out[kind] = simclr_view(self.tiles[self.positive_of(i, kind)], self.size, self.cfg, g)
        return out


# ---- loss --------------------------------------------------------------------------------------
def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent over the global batch: row i of ``z_a`` and of ``z_b`` are positives.

    Args:
        z_a: (B, D) L2-normalised embeddings of the anchors.
        z_b: (B, D) L2-normalised embeddings of their positives.
        temperature: softmax temperature.

    Returns:
        Scalar: mean cross-entropy of each of the 2N views (N = global batch) picking its partner
        among the other 2N - 1.
    """
    z = torch.cat([all_gather_with_grad(z_a), all_gather_with_grad(z_b)])  # (2N, D)
    n = z.shape[0] // 2
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = (z @ z.t() / temperature).masked_fill(eye, float("-inf"))  # (2N, 2N), self excluded
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


# ---- model -------------------------------------------------------------------------------------
def build_vit(vision: VisionConfig) -> VisionTransformer:
    """UrbanCLIP's ViT (open_clip ``VisionTransformer``) without its [CLS] projection."""
    visual = VisionTransformer(image_size=vision.image_size, patch_size=vision.patch_size, width=vision.width,
                               layers=vision.layers, heads=vision.heads, mlp_ratio=vision.mlp_ratio, output_dim=1)
    visual.proj = None  # the projection head below replaces it
    return visual


class SimCLRViT(nn.Module):
    """UrbanCLIP's ViT with a SimCLR projection head, following the trainer protocol.

    Args:
        vision: the ViT's config.
        proj_dim: projection-head output size.
        temperature: NT-Xent temperature.
        kinds: positive kinds in the batch; each gives a loss term ``"<kind>_loss"``, and ``"loss"``
            is their mean.
    """

    def __init__(self, vision: VisionConfig, proj_dim: int, temperature: float, kinds: tuple[str, ...]):
        super().__init__()
        self.vision, self.temperature, self.kinds = vision, temperature, tuple(kinds)
        self.visual = build_vit(vision)
        w = vision.width
        self.head = nn.Sequential(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, proj_dim))  # SimCLR's MLP head

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Projected, L2-normalised embeddings (B, proj_dim) of mean-pooled patch tokens."""
        tokens = vit_token_features(self.visual, images)  # (B, 1+N, width)
        return F.normalize(self.head(self.visual.ln_post(tokens[:, 1:].mean(dim=1))), dim=-1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The shared downstream representation (B, width)."""
        return mean_patch_features(self.visual, images)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Trainer protocol: ``batch["anchor"]`` and ``batch[kind]`` (B, 3, H, W) -> NT-Xent terms."""
        b = batch["anchor"].shape[0]
        z = self.embed(torch.cat([batch["anchor"]] + [batch[k] for k in self.kinds]))  # ((1+K)*B, D)
        z = z.view(1 + len(self.kinds), b, -1)  # (1+K, B, D)
        out = {f"{k}_loss": nt_xent(z[0], z[1 + j], self.temperature) for j, k in enumerate(self.kinds)}
        loss = sum(out.values()) / len(out)
        world = world_size()
        if world > 1:  # every rank has the global loss but only its slice's gradient; DDP averages
            loss = loss.detach() + (loss * world - (loss * world).detach())
        out["loss"] = loss
        return out


def build_model(cfg: SimCLRConfig, kinds: tuple[str, ...], seed: int = 0) -> SimCLRViT:
    """A freshly initialised :class:`SimCLRViT` (the same weights for the same seed: the random-init copy)."""
    ucfg = get_config(f"urbanclip-{cfg.model_size}")
    torch.manual_seed(seed)
    return SimCLRViT(ucfg.vision, cfg.proj_dim or ucfg.embed_dim, cfg.temperature, kinds)


def train_pairs(inputs: BaselineInputs, cfg: SimCLRConfig, positives: Callable[[np.ndarray], dict],
                train_pos: np.ndarray, name: str, val_pos: np.ndarray | None = None) -> tuple[SimCLRViT, list[dict]]:
    """Train a :class:`SimCLRViT` on the tiles at ``train_pos`` with the given positives.

    Args:
        inputs: the baseline's inputs.
        cfg: training settings.
        positives: region positions -> {kind: per position, candidate indices into those positions
            (None: the tile itself)}.
        train_pos: region positions whose tiles are trained on.
        name: baseline name, for error messages.
        val_pos: held-out anchors whose NT-Xent decides the run's length (their positives are drawn
            among themselves and the training tiles); None: ``inputs.val_idx`` with a tile, if any.

    Returns:
        The trained model and the trainer's per-step history.
    """
    if val_pos is None and inputs.val_idx is not None:
        val_pos = np.setdiff1d(np.asarray(inputs.val_idx, int)[inputs.tensors.satellite_mask[inputs.val_idx]],
                               train_pos)
    train_kinds = positives(train_pos)
    model = build_model(cfg, tuple(train_kinds), inputs.seed)
    tiles = torch.from_numpy(inputs.tensors.satellite[train_pos])  # (n, 3, S, S) uint8
    data = PairViews(tiles, train_kinds, model.vision.image_size, cfg, seed=inputs.seed)
    batch = min(cfg.batch_size, len(data))
    val = None
    if val_pos is not None and len(val_pos) >= 2:
        both = np.concatenate([val_pos, train_pos])
        val = PairViews(torch.from_numpy(inputs.tensors.satellite[both]), positives(both), model.vision.image_size,
                        cfg, seed=inputs.seed, n_anchors=len(val_pos))
    stopping = inputs.scale.early_stopping() if (val is not None and inputs.scale is not None) else {}
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=batch, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                       seed=inputs.seed, progress=inputs.progress, **stopping)
    init = copy.deepcopy(model).eval()  # the same weights at initialisation: the CKA reference
    history, facts = fit_trainer(model, data, tcfg, cfg.out_dir, val_dataset=val)
    model.eval()
    model.training_facts, model.initial = facts, init
    return model, history


def fit_pairs(inputs: BaselineInputs, cfg: SimCLRConfig, positives: Callable[[np.ndarray], dict],
              train_pos: np.ndarray, name: str, info: dict | None = None,
              val_pos: np.ndarray | None = None) -> FittedEncoder:
    """Train (:func:`train_pairs`) and return mean-patch features of every region's tile.

    ``info`` carries the run's ``training`` facts (:func:`~urbanlib.baselines.training.training_facts`)
    and ``cka_to_init``, the linear CKA of the features at initialisation and after training.
    """
    model, history = train_pairs(inputs, cfg, positives, train_pos, name, val_pos)
    size = model.vision.image_size
    feats = embed_all(model.features, inputs, batch_size=256, desc=f"{name} features", image_size=size)
    init = embed_all(model.initial.features, replace(inputs, progress=False), batch_size=256, image_size=size)
    counts = count_parameters(model.visual)
    return FittedEncoder(name, feats, history, counts["total"], counts["trainable"],
                         {"encoder": f"urbanclip-{cfg.model_size} ViT (random init)", "train_regions": len(train_pos),
                          "config": asdict(cfg), "training": model.training_facts,
                          "cka_to_init": linear_cka(init, feats), **(info or {})})


def satellite_train_positions(inputs: BaselineInputs, name: str) -> np.ndarray:
    """Training regions that have a satellite tile."""
    return train_positions(inputs, name=name)


def top_k_neighbours(sim: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row, the ``k`` most similar other columns of a square similarity matrix (ties: lower index first)."""
    s = np.array(sim, dtype=np.float64, copy=True)
    np.fill_diagonal(s, -np.inf)
    k = max(1, min(k, len(s) - 1))
    order = np.argsort(-s, axis=1, kind="stable")  # (n, n) most similar first
    return [order[i, :k] for i in range(len(s))]
