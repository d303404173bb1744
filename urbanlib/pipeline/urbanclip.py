"""Pretraining UrbanCLIP on one dataset: the regions, texts and settings the book uses.

Pretraining is label-free on the tiles ``train_idx`` and decides its length on the held-out tiles
``val_idx`` (:class:`~urbanlib.pipeline.city.City` gives both for its protocol: by default every
tile of the city, as in both papers, less a seeded validation share). The
training text is the short (UrbanCLIP-style) captions of each tile after the rule-based refinement
(:mod:`urbanlib.captions.refine_rules`), one drawn per epoch from the available captioners
(``text_mode="sample"``; ``"concat"`` joins them). The LM head is restricted
to the tokens of the training captions (:class:`~urbanlib.models.Vocab`).
"""

from __future__ import annotations

import numpy as np
import torch

from urbanlib.eval.retrieval import recall_at_k
from urbanlib.models import Vocab, create_model, get_config
from urbanlib.models.generate import generate
from urbanlib.models.parameters import count_parameters
from urbanlib.models.text import tokenize
from urbanlib.models.urbanclip import UrbanCLIP
from urbanlib.scales import Scale
from urbanlib.train.trainer import TrainConfig

from .caption_sets import urbanclip_texts
from .city import City
from .hparams import chosen_lr
from .pairs import AugmentedPairs
from .runs import RunResult, stable_hash, train_or_load
from .tensors import RegionTensors
from .texts import region_texts


def train_config(scale: Scale, seed: int, progress: bool = True, n_pairs: int | None = None,
                 validate: bool = True, **overrides) -> TrainConfig:
    """The optimiser settings every image(-text) pretraining run of a scale shares.

    ``scale.pretrain_epochs`` is the step cap; with ``validate`` the run evaluates its validation
    loss ``scale.evals_per_epoch`` times an epoch and stops after ``scale.patience`` evaluations
    without improvement (spanning at least two epochs), with ``scale.lr_schedule``.
    The learning rate is UrbanCLIP's validation choice (:mod:`urbanlib.pipeline.hparams`) unless
    overridden. Warmup is 20 steps, or a tenth of the cap when ``n_pairs`` makes it shorter than 200 steps.
    """
    batch = 16 if scale.model_size == "tiny" else 32
    epochs = overrides.get("epochs", scale.pretrain_epochs)
    warmup = 20 if n_pairs is None else max(1, min(20, epochs * (n_pairs // batch) // 10))
    lr = overrides["lr"] if "lr" in overrides else chosen_lr("UrbanCLIP", scale)  # a candidate needs no choice
    base = {"epochs": scale.pretrain_epochs, "batch_size": batch, "lr": lr, "warmup_steps": warmup,
            "weight_decay": 0.05, "seed": seed, "progress": progress, "checkpoint_every": 100}
    if validate:
        base.update(scale.early_stopping())
    base.update(overrides)
    return TrainConfig(**base)


def trainable_regions(train_idx: np.ndarray, tensors: RegionTensors, texts: list[list[str]]) -> np.ndarray:
    """Train regions that have both a satellite tile and at least one caption."""
    idx = np.asarray(train_idx, dtype=int)
    return idx[tensors.satellite_mask[idx] & np.array([bool(texts[i]) for i in idx], dtype=bool)]


def pretrain_urbanclip(city: City, text_mode: str = "sample", caption_style: str = "short",
                       caption_sources: list[str] | None = None, texts: list[list[str]] | None = None,
                       model_name: str | None = None, train_overrides: dict | None = None,
                       refined: bool = True, progress: bool = True, validate: bool = True,
                       **model_overrides) -> RunResult:
    """Pretrain (or load the cached) UrbanCLIP on the city's pretraining tiles (``City.pretrain_idx``).

    The city's scale sizes the model (``urbanclip-<scale.model_size>``) and the run; its seed seeds
    initialisation, data order, caption draws and the validation holdout.

    Args:
        city: the city (dataset, images, protocol, scale, seed).
        validate: stop on the loss of the held-out regions (``City.pretrain_val_idx``); False
            trains to the cap without validation.
        text_mode: ``"sample"`` (default) or ``"concat"``.
        caption_style: which captions (default ``"short"``).
        caption_sources: which captioners (default: all).
        texts: explicit per-region caption lists; overrides the above.
        refined: train on rule-refined captions (the paper's method; False: "w/o refined text").
        model_name: a named config instead of ``urbanclip-<model_size>``.
        train_overrides: :class:`TrainConfig` fields to change.
        progress: progress bars.
        **model_overrides: config fields, e.g. ``lambda_lm=0`` for the "w/o L_LM" ablation.
    """
    ds, tensors, train_idx, scale, seed = city.ds, city.tensors, city.pretrain_idx, city.scale, city.seed
    val_idx = city.pretrain_val_idx if validate else None
    if texts is None:
        if caption_style == "short" and caption_sources is None:
            texts = urbanclip_texts(ds, refined)
        else:
            texts = region_texts(ds, caption_style, caption_sources)
    idx = trainable_regions(train_idx, tensors, texts)
    if len(idx) == 0:
        raise ValueError("no training region has both a satellite image and a caption")
    model_name = model_name or f"urbanclip-{scale.model_size}"
    ctx = get_config(model_name, **model_overrides).context_length
    train_texts = [texts[i] for i in idx]
    vocab = Vocab.from_tokenized(tokenize([t for ts in train_texts for t in ts], ctx))
    torch.manual_seed(seed)
    model = create_model(model_name, vocab=vocab, **model_overrides)
    data = AugmentedPairs(tensors.satellite[idx], train_texts, idx, lambda t: tokenize(t, ctx), text_mode,
                          augment=False, seed=seed)  # captions name directions: a flipped tile would contradict them
    val = None
    vidx = trainable_regions(val_idx, tensors, texts) if val_idx is not None else np.zeros(0, int)
    if len(vidx):
        val = AugmentedPairs(tensors.satellite[vidx], [texts[i] for i in vidx], vidx, lambda t: tokenize(t, ctx),
                             text_mode, augment=False, seed=seed)
    cfg = train_config(scale, seed, progress, n_pairs=len(idx), validate=val is not None, **(train_overrides or {}))
    key = {"method": "urbanclip", "model": model.cfg.to_dict(), "data": tensors.key, "regions": idx.tolist(),
           "texts": stable_hash(train_texts), "text_mode": text_mode, "seed": seed,
           "val_regions": vidx.tolist(), "val_texts": stable_hash([texts[i] for i in vidx])}
    info = {"model": model_name, "vocab_size": len(vocab), "train_regions": len(idx), "text_mode": text_mode,
            "parameters": count_parameters(model)["total"]}
    city = "+".join(map(str, ds.cities))
    return train_or_load(f"urbanclip-{city}", model, data, cfg, key, info, val_dataset=val)


@torch.no_grad()
def retrieval(model, tensors: RegionTensors, texts: list[list[str]], idx: np.ndarray,
              ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Image <-> text R@k (percent) among the regions ``idx`` (e.g. the test regions), every caption a query."""
    idx = np.asarray([i for i in idx if tensors.satellite_mask[i] and texts[i]], dtype=int)
    img = model.encode_image(tensors.satellite_tensor(idx))
    flat = [(j, t) for j, i in enumerate(idx) for t in texts[i]]
    owner = np.array([j for j, _ in flat])
    ctx = model.cfg.context_length
    txt = torch.cat([model.encode_text(tokenize([t for _, t in flat[s:s + 256]], ctx))
                     for s in range(0, len(flat), 256)])
    out = recall_at_k(img, txt, owner, ks)
    out["n_images"], out["n_texts"] = len(idx), len(flat)
    return out


@torch.no_grad()
def captions_for(model, tensors: RegionTensors, idx: np.ndarray, beam_size: int = 1,
                 max_len: int | None = None) -> list[str]:
    """Captions generated by the multimodal decoder for the tiles ``idx``."""
    caps = generate(model, tensors.satellite_tensor(np.asarray(idx)), max_len=max_len, beam_size=beam_size)
    return [c.text for c in caps]


def random_init_like(model, seed: int = 0):
    """A fresh random-init UrbanCLIP with ``model``'s config and vocabulary: the untrained reference."""
    torch.manual_seed(seed)
    vocab = Vocab(model.kept_ids[:-1].tolist()) if getattr(model, "kept_ids", None) is not None else None
    cfg = model.cfg if vocab is None else type(model.cfg).from_dict({**model.cfg.to_dict(), "vocab_size": 49408})
    return UrbanCLIP(cfg, vocab=vocab).eval()
