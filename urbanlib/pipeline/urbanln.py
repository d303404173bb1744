"""Pretraining UrbanLN on one dataset: stage 0 (a short-caption CLIP), then IPSI + MSD fine-tuning.

Training text: one long caption per image, chosen among the captioners by CAPTURE consensus after
divide-and-conquer refinement (:mod:`urbanlib.pipeline.caption_sets`; on SynthCity with the declared
stand-ins for SAM and OWLv2).

UrbanLN fine-tunes a *pretrained* CLIP; at random init IPSI's reason to keep the first 20
positions, the paper's 1e-7 learning rate and the "fewer trainable parameters" comparison mean
nothing. No hub weights are reachable here, so stage 0 pretrains a 77-token CLIP on the satellite
tiles and short captions of the *other* SynthCity profiles (never the target city) with the
in-batch CLIP loss. Both imagery types start from it (as a web-image CLIP would be used for street
views). Stage 1 loads it, stretches the text positions to 248 (IPSI) and trains with
(1 - mu) L_C + mu L_D on the target city's train regions and long captions.

Deviation, stated in the book: at our scale the fine-tuning learning rate is 5e-5, not 1e-7; a
CLIP trained for minutes on a few thousand pairs is not the 400M-pair CLIP the paper starts from,
and 1e-7 leaves it unchanged in six epochs. ``lr`` is a parameter.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import torch

from urbanlib.data.dataset import UrbanDataset
from urbanlib.data.synthcity import PROFILES, load_city
from urbanlib.eval.retrieval import recall_at_k
from urbanlib.models.clip import create_clip
from urbanlib.models.urbanln import UrbanLN, UrbanLNConfig, tokenize_captions
from urbanlib.scales import Scale, get_scale

from .caption_sets import urbanln_captions
from .pairs import AugmentedPairs
from .runs import RunResult, stable_hash, train_or_load
from .tensors import RegionTensors, load_tensors, normalize
from .texts import region_texts, street_texts
from .urbanclip import train_config

IMAGERY = ("satellite", "street")
STAGE0_LR = 5e-4
FINETUNE_LR = 5e-5


def _scale(scale) -> Scale:
    return get_scale(scale) if isinstance(scale, str) else scale


def stage0_profiles(target_city: str | None) -> list[str]:
    """The SynthCity profiles stage 0 trains on: every profile except the target city."""
    return [p for p in PROFILES if p != target_city]


def pretrain_stage0(target_city: str | None, scale: str | Scale, seed: int = 0, progress: bool = True,
                    epochs: int | None = None) -> RunResult:
    """A 77-token CLIP trained on the other profiles' tiles and short captions (cached).

    Args:
        target_city: the city UrbanLN will be fine-tuned on (excluded); None excludes nothing.
        scale: size preset (``clip-<model_size>``; the other cities are built at this scale, seed 0).
        seed: initialisation and data-order seed.
        epochs: passes over the pooled pairs (default: half of ``scale.pretrain_epochs``, at least 1;
            the pool is four cities, so this is still twice the steps of one city's run).
        progress: progress bars.
    """
    scale = _scale(scale)
    images, texts = [], []
    for p in stage0_profiles(target_city):
        ds = load_city(p, scale=scale, seed=0, progress=False)
        t = load_tensors(ds, scale.tile_px, scale.street_px, scale.max_street_views, progress=False)
        tx = region_texts(ds, "short")
        keep = np.flatnonzero(t.satellite_mask & np.array([bool(x) for x in tx]))
        images.append(t.satellite[keep])
        texts += [tx[i] for i in keep]
    images_np = np.concatenate(images)
    torch.manual_seed(seed)
    clip = create_clip(f"clip-{scale.model_size}")
    model = UrbanLN(clip, UrbanLNConfig(use_ipsi=False, use_msd=False))
    data = AugmentedPairs(images_np, texts, np.arange(len(texts)), lambda t: tokenize_captions(t, 77).tokens,
                          augment=True, seed=seed)
    ep = epochs or max(1, scale.pretrain_epochs // 2)
    cfg = train_config(scale, seed, progress, n_pairs=len(texts), epochs=ep, lr=STAGE0_LR)
    key = {"method": "clip-stage0", "profiles": stage0_profiles(target_city), "scale": scale.run_dict(),
           "clip": f"clip-{scale.model_size}", "texts": stable_hash(texts), "seed": seed}
    info = {"profiles": stage0_profiles(target_city), "pairs": len(texts), "clip": f"clip-{scale.model_size}"}
    return train_or_load(f"stage0-{target_city or 'all'}", model, data, cfg, key, info)


def _pairs(ds: UrbanDataset, tensors: RegionTensors, train_idx: np.ndarray, imagery: str,
           texts=None) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    # ``ds`` carries the training captions (see :func:`~urbanlib.pipeline.caption_sets.urbanln_captions`)
    """(images, caption lists, region positions) of the training pairs of one imagery type."""
    idx = np.asarray(train_idx, dtype=int)
    if imagery == "satellite":
        texts = texts if texts is not None else region_texts(ds, "long")
        keep = idx[tensors.satellite_mask[idx] & np.array([bool(texts[i]) for i in idx], dtype=bool)]
        return tensors.satellite[keep], [texts[i] for i in keep], keep
    texts = texts if texts is not None else street_texts(ds, tensors.street_mask.shape[1], "long")
    imgs, caps, reg = [], [], []
    for i in idx:
        for j, t in enumerate(texts[i]):
            if tensors.street_mask[i, j] and t:
                imgs.append(tensors.street[i, j])
                caps.append(t)
                reg.append(i)
    if not imgs:
        return np.zeros((0, 3, 1, 1), np.uint8), [], np.zeros(0, int)
    return np.stack(imgs), caps, np.asarray(reg)


def pretrain_urbanln(ds: UrbanDataset, tensors: RegionTensors, train_idx: np.ndarray, scale: str | Scale,
                     seed: int = 0, imagery: str = "satellite", config: UrbanLNConfig | None = None,
                     texts=None, lr: float = FINETUNE_LR, stage0: bool = True, refinement: bool = True,
                     consensus: bool = True, sources: list[str] | None = None, progress: bool = True) -> RunResult:
    """Fine-tune (or load the cached) UrbanLN on ``ds``'s train regions.

    Args:
        ds: the target city.
        tensors: its images.
        train_idx: regions pretraining may see (probe train + validation).
        scale: size preset.
        seed: seed of stage 1 (stage 0 uses the same seed).
        imagery: ``"satellite"`` (one long caption per tile and captioner) or ``"street"``
            (each street view with its own long captions; region features average the views).
        config: UrbanLN method settings (IPSI, MSD, mu, queue...); ``n_train_pairs`` is filled in.
        texts: explicit caption lists (per region for satellite, per region and slot for street).
        lr: fine-tuning learning rate (paper: 1e-7 on OpenAI's CLIP; see module docstring).
        stage0: start from :func:`pretrain_stage0` (False: random init, for comparison).
        refinement: train on divide-and-conquer refined captions (False: "w/o Refinement").
        consensus: one caption per image chosen by CAPTURE consensus (False: "w/o Consensus", a
            random candidate drawn by ``seed``).
        sources: train on these captioners' captions only (default: all).
        progress: progress bars.
    """
    scale = _scale(scale)
    if imagery not in IMAGERY:
        raise ValueError(f"imagery must be one of {IMAGERY}, got {imagery!r}")
    if texts is None:
        ds = urbanln_captions(ds, refinement=refinement, consensus=consensus, seed=0 if consensus else seed,
                              sources=sources)
    images, caps, region = _pairs(ds, tensors, train_idx, imagery, texts)
    if len(caps) == 0:
        raise ValueError(f"{ds.cities}: no {imagery} training pair (image with a long caption) in the train regions")
    city = ds.cities[0] if len(ds.cities) == 1 else None
    config = replace(config or UrbanLNConfig(), n_train_pairs=len(caps))
    torch.manual_seed(seed)
    clip = create_clip(f"clip-{scale.model_size}")
    base = None
    if stage0:
        base = pretrain_stage0(city, scale, seed, progress)
        clip.load_state_dict(base.model.clip.state_dict())
    model = UrbanLN(clip, config)
    ctx = model.context_length
    n_trunc = tokenize_captions(sorted({t for ts in caps for t in ts}), ctx)
    data = AugmentedPairs(images, caps, region, lambda t: tokenize_captions(t, ctx).tokens, augment=True,
                          seed=seed)
    cfg = train_config(scale, seed, progress, n_pairs=len(caps), lr=lr)
    key = {"method": "urbanln", "imagery": imagery, "config": asdict(config), "data": tensors.key,
           "regions": sorted(set(region.tolist())), "texts": stable_hash(caps), "seed": seed,
           "stage0": str(base.run_dir.name) if base else None}
    info = {"imagery": imagery, "context_length": ctx, "captions": n_trunc.tokens.shape[0],
            "captions_truncated": n_trunc.n_truncated, "max_caption_tokens": max(n_trunc.lengths),
            "stage0": base.info if base else None, "stage0_wall_s": base.wall_s if base else 0.0,
            **{k: v for k, v in model.describe().items()}}
    return train_or_load(f"urbanln-{imagery}-{city or 'multi'}", model, data, cfg, key, info)


@torch.no_grad()
def urbanln_retrieval(model: UrbanLN, images: np.ndarray, caps: list[list[str]], context: int | None = None,
                      ks: tuple[int, ...] = (1, 5, 10), teacher: bool = False) -> dict[str, float]:
    """R@k among held-out pairs; ``context=77`` truncates captions to CLIP's length first."""
    clip = model.msd.teacher if teacher else model.clip
    img = torch.nn.functional.normalize(clip.encode_image(normalize(torch.from_numpy(images))), dim=-1)
    flat = [(j, t) for j, ts in enumerate(caps) for t in ts]
    tok = tokenize_captions([t for _, t in flat], context or model.context_length).tokens
    if tok.shape[1] < model.context_length:  # pad truncated ids to the model's width
        tok = torch.nn.functional.pad(tok, (0, model.context_length - tok.shape[1]))
    txt = torch.cat([torch.nn.functional.normalize(clip.encode_text(tok[s:s + 128]), dim=-1)
                     for s in range(0, len(tok), 128)])
    out = recall_at_k(img, txt, np.array([j for j, _ in flat]), ks)
    out["n_images"], out["n_texts"] = len(images), len(flat)
    return out


def heldout_pairs(ds: UrbanDataset, tensors: RegionTensors, idx: np.ndarray, imagery: str,
                  refinement: bool = True, consensus: bool = True):
    """The (images, caption lists, regions) of regions ``idx`` (e.g. test) with the captions UrbanLN trains on."""
    return _pairs(urbanln_captions(ds, refinement, consensus), tensors, idx, imagery)


@torch.no_grad()
def teacher_student_agreement(model: UrbanLN, images: np.ndarray, caps: list[list[str]]) -> dict[str, float]:
    """How closely the EMA teacher follows the student on held-out pairs.

    Returns the mean cosine between student and teacher embeddings (image and text) and the share
    of images whose top-1 retrieved caption is the same under both.
    """
    if model.msd is None:
        return {}
    x = normalize(torch.from_numpy(images))
    first = [ts[0] for ts in caps]
    tok = tokenize_captions(first, model.context_length).tokens
    f = torch.nn.functional.normalize
    s_img, t_img = f(model.clip.encode_image(x), dim=-1), f(model.msd.teacher.encode_image(x), dim=-1)
    s_txt, t_txt = f(model.clip.encode_text(tok), dim=-1), f(model.msd.teacher.encode_text(tok), dim=-1)
    top_s, top_t = (s_img @ s_txt.T).argmax(1), (t_img @ t_txt.T).argmax(1)
    return {"image_cosine": float((s_img * t_img).sum(-1).mean()), "text_cosine": float((s_txt * t_txt).sum(-1).mean()),
            "top1_agreement": float((top_s == top_t).float().mean())}
