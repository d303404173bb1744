"""UrbanVLP (Hao et al., AAAI'25): satellite and street-view towers aligned with captions at two granularities.

What its public code does, rebuilt on open_clip blocks at our sizes:

* a satellite ViT and a street-view ViT (paper: two CLIP ViT-B/16; here two ViTs of the
  ``urbanclip-<model_size>`` vision config) and an open_clip text transformer (width/heads of that
  config's text tower, all its layers in one causal CLIP text encoder; open_clip's BPE tokenizer);
* ``loss = 0.5 * clip_loss + 0.5 * filip_loss``: CLIP's symmetric InfoNCE between the satellite
  embedding and the caption embedding, and a FILIP-style token-level loss between street-view patch
  tokens and caption tokens (:func:`filip_similarity`);
* the street views of a tile are fused with a learned weighting: a linear score of each view's
  embedding, softmax over the tile's valid views (``street_mask``).

How the weighting enters the FILIP loss is our reading: each view's token-level similarity to a
caption is averaged with the tile's view weights, so the weights are trained by that loss.
Downstream features (the probe's common representation): mean-pooled final patch tokens of the
satellite tower plus the view-weighted mean of those of the street tower; regions without street
views get the satellite part only, regions without a tile the street part only, neither: NaN.
The FILIP term uses the local batch only (no cross-rank gather); this model is not DDP-aware.

Length and learning rate, as UrbanCLIP's runs: ``scale.pretrain_epochs`` is the cap and, with
``inputs.val_idx``, the loss of those held-out regions (tile, street views and a caption each,
drawn once by seed) stops the run by the scale's early stopping; the learning rate is the
``"UrbanVLP"`` family's (:func:`urbanlib.pipeline.hparams.chosen_lr`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, VisionTransformer
from torch import nn
from tqdm.auto import tqdm

from urbanlib.eval.metrics import linear_cka
from urbanlib.models import get_config
from urbanlib.models.config import TextConfig, VisionConfig
from urbanlib.models.losses import contrastive_loss
from urbanlib.models.parameters import count_parameters
from urbanlib.models.text import choose_text, tokenize
from urbanlib.models.urbanclip import mean_patch_features, vit_token_features
from urbanlib.pipeline.augment import dihedral
from urbanlib.pipeline.hparams import chosen_lr
from urbanlib.pipeline.tensors import normalize
from urbanlib.scales import Scale, get_scale
from urbanlib.train import TrainConfig

from ._common import resize_to, train_positions
from .base import BaselineInputs, FittedEncoder, NotAvailable
from .simclr import item_generator
from .training import fit_trainer, stopping_fields

NAME = "UrbanVLP"
FAMILY = "UrbanVLP"  # its learning-rate family (urbanlib.pipeline.hparams.GRIDS)
VOCAB_SIZE = 49408  # open_clip's BPE tokenizer


@dataclass
class UrbanVLPConfig:
    """Architecture and training settings; :meth:`for_scale` sizes them like UrbanCLIP's runs."""

    model_size: str = "cpu"  # towers from ``urbanclip-<model_size>`` (paper: CLIP ViT-B/16 towers)
    epochs: int = 6  # passes over the training regions (``scale.pretrain_epochs``; the cap with validation)
    batch_size: int = 32  # regions per step (UrbanCLIP: 32, 16 for tiny models); capped at the train size
    lr: float = 5e-4  # peak AdamW learning rate (TrainConfig default; for_scale: the family's chosen lr)
    warmup_steps: int = 20  # linear warmup steps
    filip_weight: float = 0.5  # loss = (1 - w) * CLIP(satellite, caption) + w * FILIP(street, caption)
    init_temperature: float = 0.07  # both learnable temperatures start at CLIP's value
    caption_style: str = "short"  # which captions are trained on
    text_mode: str = "sample"  # one caption per region per epoch, or "concat" (see urbanlib.models.text)
    out_dir: str = ""  # keep the run (checkpoints, losses.csv) here; "" = temporary directory

    @classmethod
    def for_scale(cls, scale: Scale | str | None, **overrides) -> UrbanVLPConfig:
        """UrbanCLIP's model size, epochs and batch size for ``scale`` (default scale if None), the family's lr."""
        s = get_scale(scale)
        batch = 16 if s.model_size == "tiny" else 32  # as urbanlib.pipeline.urbanclip.train_config
        fields = {"model_size": s.model_size, "epochs": s.pretrain_epochs, "batch_size": batch, **overrides}
        if "lr" not in fields:
            fields["lr"] = chosen_lr(FAMILY, s)
        return cls(**fields)


# ---- the token-level (FILIP) loss ---------------------------------------------------------------
def filip_similarity(image_tokens: torch.Tensor, view_weights: torch.Tensor, text_tokens: torch.Tensor,
                     text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FILIP late-interaction similarities between every tile's street views and every caption.

    For a view and a caption, image->text similarity is the mean over the view's tokens of their best
    cosine with any valid caption token; text->image is the mean over valid caption tokens of their
    best cosine with any of the view's tokens. Views are then averaged with ``view_weights``.

    Args:
        image_tokens: (B, V, P, D) L2-normalised street-view patch tokens.
        view_weights: (B, V) non-negative fusion weights (0 for missing views; rows sum to 1 or 0).
        text_tokens: (B, T, D) L2-normalised caption tokens.
        text_mask: (B, T) bool, valid (non-padding) caption tokens.

    Returns:
        ``(i2t, t2i)``, each (B_images, B_texts).
    """
    sim = torch.einsum("avpd,btd->avbpt", image_tokens, text_tokens)  # (B, V, B, P, T)
    mask = text_mask[None, None, :, None, :]  # (1, 1, B, 1, T)
    i2t = sim.masked_fill(~mask, float("-inf")).amax(dim=-1).mean(dim=-1)  # (B, V, B)
    n_valid = text_mask.sum(dim=-1).clamp_min(1)  # (B,)
    t2i = (sim.amax(dim=-2) * text_mask[None, None]).sum(dim=-1) / n_valid  # (B, V, B)
    w = view_weights[:, :, None]  # (B, V, 1)
    return (i2t * w).sum(dim=1), (t2i * w).sum(dim=1)


def filip_loss(i2t: torch.Tensor, t2i: torch.Tensor, logit_scale: torch.Tensor,
               valid: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric contrastive loss over FILIP similarities (matching pairs on the diagonal).

    Args:
        i2t: (B, B) image->text similarities, rows images.
        t2i: (B, B) text->image similarities, rows images.
        logit_scale: scalar, 1 / temperature.
        valid: (B,) bool, regions that have street views; the loss is over those only.

    Returns:
        Scalar: mean of the image->text and text->image cross-entropies (0 with fewer than 2 valid).
    """
    if valid is not None:
        keep = torch.nonzero(valid).flatten()
        i2t, t2i = i2t[keep][:, keep], t2i[keep][:, keep]
    if i2t.shape[0] < 2:
        return i2t.sum() * 0.0
    labels = torch.arange(i2t.shape[0], device=i2t.device)
    return 0.5 * (F.cross_entropy(logit_scale * i2t, labels) + F.cross_entropy(logit_scale * t2i.t(), labels))


def masked_view_weights(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of (B, V) scores over the valid views of each tile; all-zero rows where no view is valid."""
    w = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)  # no NaN for empty rows
    return w * mask


# ---- the model ---------------------------------------------------------------------------------
def _vit(v: VisionConfig, embed_dim: int) -> VisionTransformer:
    return VisionTransformer(image_size=v.image_size, patch_size=v.patch_size, width=v.width, layers=v.layers,
                             heads=v.heads, mlp_ratio=v.mlp_ratio, output_dim=embed_dim)


class UrbanVLP(nn.Module):
    """Two vision towers and a text tower, following the trainer protocol.

    Args:
        vision: both ViTs' config.
        text: the text tower's width/heads; its depth is ``unimodal_layers + multimodal_layers``.
        embed_dim: shared embedding size.
        context_length: tokenized caption length.
        filip_weight: weight of the FILIP term (the CLIP term gets ``1 - filip_weight``).
        init_temperature: initial temperature of both contrastive terms.
    """

    def __init__(self, vision: VisionConfig, text: TextConfig, embed_dim: int, context_length: int,
                 filip_weight: float = 0.5, init_temperature: float = 0.07):
        super().__init__()
        self.vision, self.filip_weight, self.context_length = vision, filip_weight, context_length
        self.satellite = _vit(vision, embed_dim)
        self.street = _vit(vision, embed_dim)
        self.text = TextTransformer(context_length=context_length, vocab_size=VOCAB_SIZE, width=text.width,
                                    heads=text.heads, layers=text.unimodal_layers + text.multimodal_layers,
                                    mlp_ratio=text.mlp_ratio, output_dim=embed_dim, output_tokens=True)
        self.view_score = nn.Linear(embed_dim, 1)  # learned weighting of a tile's street views
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.filip_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    # ---- encoders ------------------------------------------------------------------------
    def encode_satellite(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised satellite embeddings (B, D) ([CLS] -> ln_post -> projection, as CLIP)."""
        return F.normalize(self.satellite(images), dim=-1)

    def encode_text(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption embedding (B, D) and token embeddings (B, T, D), both L2-normalised."""
        pooled, tokens = self.text(text)  # (B, D), (B, T, width)
        proj = self.text.text_projection
        tokens = proj(tokens) if isinstance(proj, nn.Linear) else tokens @ proj  # (B, T, D)
        return F.normalize(pooled, dim=-1), F.normalize(tokens, dim=-1)

    def encode_street(self, views: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Street-view patch tokens (B, V, P, D) L2-normalised and fusion weights (B, V).

        Only valid views go through the tower; missing slots hold zeros.
        """
        b, v = mask.shape
        n_patch = (self.vision.image_size // self.vision.patch_size) ** 2
        tokens = views.new_zeros(b, v, n_patch, self.street.proj.shape[1])
        scores = views.new_zeros(b, v)
        if mask.any():
            x = self.street.ln_post(vit_token_features(self.street, views[mask]))  # (n_valid, 1+P, width)
            emb = x[:, 0] @ self.street.proj  # (n_valid, D) each view's [CLS] embedding
            tokens[mask] = F.normalize(x[:, 1:] @ self.street.proj, dim=-1)  # (n_valid, P, D)
            scores[mask] = self.view_score(emb).squeeze(-1)
        return tokens, masked_view_weights(scores, mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Trainer protocol: ``satellite`` (B,3,S,S), ``street`` (B,V,3,s,s), ``street_mask`` (B,V), ``text`` (B,T)."""
        text = batch["text"]
        txt_emb, txt_tok = self.encode_text(text)
        sat_emb = self.encode_satellite(batch["satellite"])
        clip = contrastive_loss(sat_emb, txt_emb, self.logit_scale.exp().clamp(max=100.0))
        mask = batch["street_mask"].bool()
        tokens, weights = self.encode_street(batch["street"], mask)
        i2t, t2i = filip_similarity(tokens, weights, txt_tok, text != 0)
        filip = filip_loss(i2t, t2i, self.filip_logit_scale.exp().clamp(max=100.0), valid=mask.any(dim=1))
        loss = (1 - self.filip_weight) * clip + self.filip_weight * filip
        return {"clip_loss": clip, "filip_loss": filip, "loss": loss}

    @torch.no_grad()
    def satellite_features(self, satellite: torch.Tensor) -> torch.Tensor:
        """Satellite part of the downstream features: mean patch tokens (B, width)."""
        return mean_patch_features(self.satellite, satellite)

    @torch.no_grad()
    def street_features(self, street: torch.Tensor, street_mask: torch.Tensor) -> torch.Tensor:
        """Street part of the downstream features (B, width): view-weighted mean patch tokens; 0 without views."""
        mask = street_mask.bool()
        per_view = torch.zeros(*mask.shape, self.vision.width)  # (B, V, width)
        if mask.any():
            _, weights = self.encode_street(street, mask)  # (B, V)
            per_view[mask] = mean_patch_features(self.street, street[mask])  # (n_valid, width)
            return (weights[:, :, None] * per_view).sum(dim=1)
        return per_view.sum(dim=1)


def build_model(cfg: UrbanVLPConfig, seed: int = 0) -> UrbanVLP:
    """A freshly initialised :class:`UrbanVLP` (the same weights for the same seed: the random-init copy)."""
    ucfg = get_config(f"urbanclip-{cfg.model_size}")
    torch.manual_seed(seed)
    return UrbanVLP(ucfg.vision, ucfg.text, ucfg.embed_dim, ucfg.context_length, cfg.filip_weight,
                    cfg.init_temperature)


# ---- data --------------------------------------------------------------------------------------
def region_captions(inputs: BaselineInputs, style: str) -> list[list[str]]:
    """Per region (``ds.regions`` order), its captions of ``style``."""
    cap = inputs.ds.captions
    cap = cap[cap["style"] == style]
    by_region = cap.groupby("region_id")["text"].apply(lambda s: [str(t) for t in s if str(t).strip()])
    return [by_region.get(rid, []) for rid in inputs.ds.region_ids]


class RegionTriples:
    """Map-style dataset: a region's satellite tile (dihedral-augmented), its street views and a caption.

    Args:
        inputs: the baseline's inputs.
        positions: region positions to serve.
        captions: captions of every region (``ds.regions`` order).
        image_size: the towers' input side.
        context_length: tokenized caption length.
        text_mode: caption choice per epoch.
        seed: seed of augmentations and caption draws.
    """

    def __init__(self, inputs: BaselineInputs, positions: np.ndarray, captions: list[list[str]], image_size: int,
                 context_length: int, text_mode: str = "sample", seed: int = 0):
        t = inputs.tensors
        self.positions = np.asarray(positions, dtype=int)
        self.sat = torch.from_numpy(t.satellite[self.positions])  # (n, 3, S, S) uint8
        self.street = torch.from_numpy(t.street[self.positions])  # (n, V, 3, s, s) uint8
        self.street_mask = torch.from_numpy(t.street_mask[self.positions])  # (n, V)
        self.captions = [captions[p] for p in self.positions]
        self.size, self.context_length, self.text_mode, self.seed = image_size, context_length, text_mode, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Redraw augmentations and captions."""
        self.epoch = epoch
        texts = [choose_text(c, self.text_mode, epoch, self.seed, key=int(p))
                 for c, p in zip(self.captions, self.positions, strict=True)]
        self.tokens = tokenize(texts, self.context_length, end_at_cut=True)  # (n, T); CLIP pools at <end>

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = item_generator(self.seed, self.epoch, i)
        sat = resize_to(normalize(dihedral(self.sat[i][None], g)), self.size)[0]
        return {"satellite": sat, "street": resize_to(normalize(self.street[i]), self.size),
                "street_mask": self.street_mask[i], "text": self.tokens[i], "region_index": torch.tensor(i)}


def batch_of(inputs: BaselineInputs, positions: np.ndarray, cfg: UrbanVLPConfig, seed: int = 0) -> dict:
    """One batch (no augmentation draw beyond epoch 0) of the given regions, e.g. held-out ones for evaluation."""
    ucfg = get_config(f"urbanclip-{cfg.model_size}")
    data = RegionTriples(inputs, positions, region_captions(inputs, cfg.caption_style), ucfg.vision.image_size,
                         ucfg.context_length, cfg.text_mode, seed)
    items = [data[i] for i in range(len(data))]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


# ---- fit ---------------------------------------------------------------------------------------
def _trainable(inputs: BaselineInputs, cfg: UrbanVLPConfig) -> tuple[np.ndarray, list[list[str]]]:
    captions = region_captions(inputs, cfg.caption_style)
    has_caption = np.array([len(c) > 0 for c in captions])
    return inputs.tensors.satellite_mask & has_caption, captions


def train(inputs: BaselineInputs, config: UrbanVLPConfig | None = None) -> tuple[UrbanVLP, list[dict]]:
    """Train UrbanVLP on training regions with a tile and captions (street views optional)."""
    model, history, _, _ = _train(inputs, config or UrbanVLPConfig.for_scale(inputs.scale))
    return model, history


def _train(inputs: BaselineInputs, cfg: UrbanVLPConfig) -> tuple[UrbanVLP, list[dict], dict, UrbanVLP]:
    """The trained model, its log, its training facts and the same model at initialisation."""
    ok, captions = _trainable(inputs, cfg)
    pos = train_positions(inputs, ok, NAME)
    model = build_model(cfg, inputs.seed)
    init = copy.deepcopy(model).eval()
    data = RegionTriples(inputs, pos, captions, model.vision.image_size, model.context_length, cfg.text_mode,
                         inputs.seed)
    val = None
    if inputs.val_idx is not None:
        val_pos = np.setdiff1d(np.asarray(inputs.val_idx, dtype=int), pos)
        val_pos = val_pos[ok[val_pos]]
        if len(val_pos):  # one fixed draw (epoch 0) of views and captions: set_epoch is never called on it
            val = RegionTriples(inputs, val_pos, captions, model.vision.image_size, model.context_length,
                                cfg.text_mode, inputs.seed + 1)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=min(cfg.batch_size, len(data)), lr=cfg.lr,
                       warmup_steps=cfg.warmup_steps, seed=inputs.seed, progress=inputs.progress,
                       **stopping_fields(inputs, val))
    history, facts = fit_trainer(model, data, tcfg, cfg.out_dir, val_dataset=val)
    model.eval()
    return model, history, facts, init


@torch.no_grad()
def encode_regions(model: UrbanVLP, inputs: BaselineInputs, batch_size: int = 128) -> np.ndarray:
    """Downstream features (N, width) float32 of every region (NaN where it has no image at all)."""
    t, size = inputs.tensors, model.vision.image_size
    n = len(t)
    out = np.zeros((n, model.vision.width), np.float32)
    for start in tqdm(range(0, n, batch_size), desc=f"{NAME} features", disable=not inputs.progress, leave=False):
        idx = np.arange(start, min(start + batch_size, n))
        have_sat = idx[t.satellite_mask[idx]]
        if len(have_sat):
            out[have_sat] += model.satellite_features(resize_to(t.satellite_tensor(have_sat), size)).numpy()
        if t.street_mask.shape[1]:
            street, mask = t.street_tensor(idx)
            out[idx] += model.street_features(resize_to(street, size), mask).numpy()
    out[~t.satellite_mask & ~t.has_street] = np.nan
    return out


def _unavailable(inputs: BaselineInputs, cfg: UrbanVLPConfig, name: str = NAME) -> NotAvailable | None:
    """Why UrbanVLP cannot be trained on ``inputs`` (its twin then has nothing to be the twin of), or None."""
    ok, _ = _trainable(inputs, cfg)
    train_idx = np.asarray(inputs.train_idx, dtype=int)
    if ok[train_idx].sum() < 2:
        return NotAvailable(name, f"n/a: fewer than 2 training regions have a satellite tile and "
                                  f"'{cfg.caption_style}' captions")
    if not inputs.tensors.has_street[train_idx].any():
        return NotAvailable(name, "n/a: no training region has street-view images (UrbanVLP's second tower)")
    return None


def fit_init(inputs: BaselineInputs, config: UrbanVLPConfig | None = None) -> FittedEncoder | NotAvailable:
    """UrbanVLP's random-init twin: both towers at the weights :func:`fit` starts from, the same features.

    UrbanVLP's features add a street-view tower to a satellite ViT, so UrbanCLIP's random ViT alone
    is not its twin: this one encodes the same satellite tile and street views, untrained.
    """
    cfg = config or UrbanVLPConfig.for_scale(inputs.scale)
    name = f"{NAME} (random init)"
    if (missing := _unavailable(inputs, cfg, name)) is not None:
        return missing
    model = build_model(cfg, inputs.seed).eval()
    total = count_parameters(model)["total"]
    return FittedEncoder(name, encode_regions(model, inputs), [], total, 0,
                         {"weights": f"UrbanVLP's weights at initialisation (seed {inputs.seed}), untrained",
                          "config": asdict(cfg)})


def fit(inputs: BaselineInputs, config: UrbanVLPConfig | None = None) -> FittedEncoder | NotAvailable:
    """Train UrbanVLP and return satellite + fused street-view features for every region."""
    cfg = config or UrbanVLPConfig.for_scale(inputs.scale)
    if (missing := _unavailable(inputs, cfg)) is not None:
        return missing
    model, history, facts, init = _train(inputs, cfg)
    feats = encode_regions(model, inputs)
    counts = count_parameters(model)
    t = inputs.tensors
    return FittedEncoder(NAME, feats, history, counts["total"], counts["trainable"],
                         {"encoder": f"2 x urbanclip-{cfg.model_size} ViT + open_clip text transformer (random init)",
                          "features": "satellite + view-weighted street mean patch tokens; satellite only "
                                      "where a region has no street view",
                          "regions_satellite_only": int((t.satellite_mask & ~t.has_street).sum()),
                          "regions_street_only": int((~t.satellite_mask & t.has_street).sum()),
                          "config": asdict(cfg), "training": facts,
                          "cka_to_init": linear_cka(encode_regions(init, inputs), feats)})
