"""Pretraining UrbanLN on one dataset: stage 0 (a short-caption CLIP), then IPSI + MSD fine-tuning.

Training text: one long caption per image, chosen among the captioners by CAPTURE consensus after
divide-and-conquer refinement (:mod:`urbanlib.pipeline.caption_sets`; on SynthCity with the declared
stand-ins for SAM and OWLv2).

UrbanLN fine-tunes a *pretrained* CLIP; at random init IPSI's reason to keep the first 20
positions, the paper's 1e-7 learning rate and the "fewer trainable parameters" comparison mean
nothing. No hub weights are reachable here, so stage 0 pretrains a 77-token CLIP with the in-batch
CLIP loss on the satellite tiles and short captions of SynthCity profiles, until its validation
loss stops improving: under the papers' "all-tiles" protocol one stage 0 per seed on every profile
(label-free, like web pretraining that happens to include the city), under "train-only" the other
profiles only (never the target city). Both imagery types start from it (as a web-image CLIP
would be used for street views). Stage 1 loads it, stretches the text positions to 248 (IPSI) and
trains with (1 - mu) L_C + mu L_D on the target city's regions and long captions.

Deviations, stated in the book:

- the fine-tuning learning rate is 5e-5, not 1e-7: a CLIP trained for minutes on a few thousand
  pairs is not the 400M-pair CLIP the paper starts from, and 1e-7 leaves it unchanged. ``lr`` is a
  parameter;
- the EMA momentum is scaled to the run length below the ``paper`` scale: the teacher's half-life
  is ``ema_half_life_epochs`` epochs (0.995 is a 139-step half-life, longer than a whole run of ours,
  so the teacher would stay at stage 0 and distillation would pull the student back to it);
- street views: each epoch draws one view per region (all views over the run), so an epoch of
  street-view training costs what a satellite epoch does.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from urbanlib.data.dataset import UrbanDataset
from urbanlib.data.synthcity import PROFILES, load_city
from urbanlib.eval.probe import ProbeConfig, fit_probes
from urbanlib.eval.retrieval import recall_at_k
from urbanlib.models.clip import create_clip
from urbanlib.models.urbanln import UrbanLN, UrbanLNConfig, tokenize_captions
from urbanlib.scales import Scale, get_scale

from .caption_sets import urbanln_captions
from .city import City, pretrain_holdout
from .features import satellite_features, street_features
from .hparams import chosen_lr
from .pairs import AugmentedPairs
from .runs import RunResult, stable_hash, train_or_load
from .tensors import RegionTensors, load_tensors, normalize
from .texts import region_texts, street_texts
from .urbanclip import train_config

IMAGERY = ("satellite", "street")
ARCHIVED_SCALES = ("full",)  # scales whose shared stage 0 is kept with the results (paper's ViT-B/16: too large)


def stage0_profiles(target_city: str | None, protocol: str = "all-tiles") -> list[str]:
    """The SynthCity profiles stage 0 trains on: all of them ("all-tiles"), or all but the target ("train-only")."""
    return list(PROFILES) if protocol == "all-tiles" else [p for p in PROFILES if p != target_city]


def _target(city: City) -> str | None:
    """The city a recipe fine-tunes on, by name (it names the run): the dataset's only city, None for several."""
    cities = city.ds.cities
    return cities[0] if len(cities) == 1 else None


def pretrain_stage0(city: City | None = None, *, scale: str | Scale | None = None, seed: int | None = None,
                    progress: bool = True, epochs: int | None = None, lr: float | None = None) -> RunResult:
    """A 77-token CLIP trained on profiles' tiles and short captions until its validation loss plateaus (cached).

    With a ``city``, the stage 0 that :func:`pretrain_urbanln` starts from on it: the city's scale, seed and
    protocol (under "train-only" its own SynthCity profile is left out). Without one, the tier's shared stage 0:
    every profile ("all-tiles") at ``scale`` and ``seed``, the very run any "all-tiles" city of that scale and
    seed starts from.

    Args:
        city: the city UrbanLN will be fine-tuned on; None for the shared stage 0.
        scale: size preset without a city (``clip-<model_size>``; the cities are built at this scale, data seed 0).
        seed: initialisation, data-order and validation-holdout seed without a city (default 0).
        progress: progress bars.
        epochs: step cap in epochs over the pooled pairs (default ``scale.pretrain_epochs``).
        lr: peak learning rate (default: the family's validation choice, :mod:`~urbanlib.pipeline.hparams`).

    Raises:
        TypeError: ``scale`` or ``seed`` given with a ``city`` (they come from it), or no ``scale`` without one.
    """
    if city is not None:
        if scale is not None or seed is not None:
            raise TypeError("pretrain_stage0(city): the scale and seed are the city's; pass scale= and seed= "
                            "only for the shared stage 0 (city=None)")
        target, scale, seed, protocol = _target(city), city.scale, city.seed, city.protocol
    else:
        if scale is None:
            raise TypeError("pretrain_stage0() without a city needs scale=")
        target, scale, seed, protocol = None, get_scale(scale), 0 if seed is None else seed, "all-tiles"
    # the tier's shared stage 0 (every profile) is consumed over many sessions: kept in results/runs (the
    # selection's other candidates land there too; only the chosen learning rate's runs are committed)
    archive = scale.name in ARCHIVED_SCALES and protocol == "all-tiles"
    lr = lr if lr is not None else chosen_lr("UrbanLN stage 0", scale)
    profiles = stage0_profiles(target, protocol)
    images, texts, val_images, val_texts = [], [], [], []
    for p in profiles:
        ds = load_city(p, scale=scale, seed=0, progress=False)
        t = load_tensors(ds, scale.tile_px, scale.street_px, scale.max_street_views, progress=False)
        tx = region_texts(ds, "short")
        usable = t.satellite_mask & np.array([bool(x) for x in tx])
        held = np.zeros(len(tx), bool)
        held[pretrain_holdout(len(tx), scale.pretrain_val_fraction, seed)] = True
        for mask, imgs, txts in ((usable & ~held, images, texts), (usable & held, val_images, val_texts)):
            keep = np.flatnonzero(mask)
            imgs.append(t.satellite[keep])
            txts += [tx[i] for i in keep]
    torch.manual_seed(seed)
    clip = create_clip(f"clip-{scale.model_size}")
    model = UrbanLN(clip, UrbanLNConfig(use_ipsi=False, use_msd=False))
    tok = lambda t: tokenize_captions(t, 77).tokens  # noqa: E731
    data = AugmentedPairs(np.concatenate(images), texts, np.arange(len(texts)), tok, augment=False, seed=seed)
    val = (AugmentedPairs(np.concatenate(val_images), val_texts, np.arange(len(val_texts)), tok, augment=False,
                          seed=seed) if val_texts else None)
    cfg = train_config(scale, seed, progress, n_pairs=len(texts), epochs=epochs or scale.pretrain_epochs,
                       lr=lr, validate=val is not None, val_key="inbatch_contrastive_loss")
    key = {"method": "clip-stage0", "profiles": profiles, "scale": scale.run_dict(),
           "clip": f"clip-{scale.model_size}", "texts": stable_hash(texts), "val_texts": stable_hash(val_texts),
           "seed": seed}
    info = {"profiles": profiles, "clip": f"clip-{scale.model_size}", "protocol": protocol}
    name = "stage0-all" if protocol == "all-tiles" else f"stage0-{target or 'all'}"
    return train_or_load(name, model, data, cfg, key, info, val_dataset=val, archive=archive)


class OneViewPerRegion:
    """Street-view pairs seen one view per region per epoch: view ``k`` of region ``r`` drawn by (seed, epoch, r).

    Wraps an :class:`AugmentedPairs` of single views; over the epochs every view is trained on, and an
    epoch is as long as a satellite epoch.
    """

    def __init__(self, pairs: AugmentedPairs, region: np.ndarray, seed: int = 0):
        self.pairs, self.seed = pairs, seed
        self.regions = np.unique(region)
        self.views = [np.flatnonzero(region == r) for r in self.regions]
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's view of every region (and its caption)."""
        self.pairs.set_epoch(epoch)
        rng = np.random.default_rng([self.seed, 5, epoch])
        self.chosen = np.array([v[rng.integers(len(v))] for v in self.views])

    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.pairs[int(self.chosen[i])]


def ema_momentum(scale: Scale, steps_per_epoch: int, half_life_epochs: float | None, default: float) -> float:
    """The teacher's EMA momentum: the paper's value at the ``paper`` scale, else a half-life in epochs."""
    if half_life_epochs is None or scale.model_size == "paper":
        return default
    return 0.5 ** (1.0 / max(1.0, half_life_epochs * steps_per_epoch))


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


def pretrain_urbanln(city: City, imagery: str = "satellite", config: UrbanLNConfig | None = None,
                     texts=None, lr: float | None = None, stage0: bool = True, refinement: bool = True,
                     consensus: bool = True, sources: list[str] | None = None, progress: bool = True,
                     validate: bool = True, ema_half_life_epochs: float | None = 1.0,
                     stage0_lr: float | None = None) -> RunResult:
    """Fine-tune (or load the cached) UrbanLN on the city's pretraining regions (``City.pretrain_idx``).

    The city's seed seeds stage 1 (stage 0 uses the same seed); its protocol picks the stage 0.

    Args:
        city: the target city (dataset, images, protocol, scale, seed).
        imagery: ``"satellite"`` (one long caption per tile and captioner) or ``"street"``
            (each street view with its own long captions; region features average the views).
        config: UrbanLN method settings (IPSI, MSD, mu, queue...); ``n_train_pairs`` is filled in.
        texts: explicit caption lists (per region for satellite, per region and slot for street).
        lr: fine-tuning learning rate (default: the family's validation choice; paper: 1e-7 on
            OpenAI's CLIP; see module docstring).
        stage0: start from :func:`pretrain_stage0` (False: random init, for comparison).
        refinement: train on divide-and-conquer refined captions (False: "w/o Refinement").
        consensus: one caption per image chosen by CAPTURE consensus (False: "w/o Consensus", a
            random candidate drawn by ``seed``).
        sources: train on these captioners' captions only (default: all).
        progress: progress bars.
        validate: stop on the contrastive loss of the held-out regions (``City.pretrain_val_idx``).
        ema_half_life_epochs: the teacher's EMA half-life in epochs below the ``paper`` scale
            (None: ``config.momentum`` as given).
        stage0_lr: stage 0's learning rate (default: its validation choice).
    """
    ds, tensors, train_idx, scale, seed = city.ds, city.tensors, city.pretrain_idx, city.scale, city.seed
    val_idx = city.pretrain_val_idx if validate else None
    lr = lr if lr is not None else chosen_lr("UrbanLN", scale)
    if imagery not in IMAGERY:
        raise ValueError(f"imagery must be one of {IMAGERY}, got {imagery!r}")
    if texts is None:
        ds = urbanln_captions(ds, refinement=refinement, consensus=consensus, seed=0 if consensus else seed,
                              sources=sources)
    images, caps, region = _pairs(ds, tensors, train_idx, imagery, texts)
    if len(caps) == 0:
        raise ValueError(f"{ds.cities}: no {imagery} training pair (image with a long caption) in the train regions")
    v_images, v_caps, v_region = (_pairs(ds, tensors, val_idx, imagery, texts) if val_idx is not None
                                  else (None, [], np.zeros(0, int)))
    target = _target(city)
    n_regions = len(np.unique(region))
    batch = train_config(scale, seed, lr=lr).batch_size
    momentum = ema_momentum(scale, max(1, n_regions // batch), ema_half_life_epochs,
                            (config or UrbanLNConfig()).momentum)
    n_epoch_pairs = n_regions if imagery == "street" else len(caps)  # street: one view per region per epoch
    config = replace(config or UrbanLNConfig(), n_train_pairs=n_epoch_pairs, momentum=momentum)
    torch.manual_seed(seed)
    clip = create_clip(f"clip-{scale.model_size}")
    base = None
    if stage0:
        base = pretrain_stage0(city, progress=progress, lr=stage0_lr)
        clip.load_state_dict(base.model.clip.state_dict())
    model = UrbanLN(clip, config)
    ctx = model.context_length
    n_trunc = tokenize_captions(sorted({t for ts in caps for t in ts}), ctx)
    tok = lambda t: tokenize_captions(t, ctx).tokens  # noqa: E731
    data = AugmentedPairs(images, caps, region, tok, augment=False, seed=seed)  # captions name directions
    if imagery == "street":
        data = OneViewPerRegion(data, region, seed)
    val = AugmentedPairs(v_images, v_caps, v_region, tok, augment=False, seed=seed) if v_caps else None
    cfg = train_config(scale, seed, progress, n_pairs=len(data), lr=lr, validate=val is not None,
                       val_key="inbatch_contrastive_loss", snapshots=scale.name in ("smoke", "default"))
    key = {"method": "urbanln", "imagery": imagery, "config": asdict(config), "data": tensors.key,
           "regions": sorted(set(region.tolist())), "texts": stable_hash(caps), "seed": seed,
           "stage0": str(base.run_dir.name) if base else None, "val_texts": stable_hash(v_caps),
           "views_per_epoch": "one per region" if imagery == "street" else "all"}
    info = {"imagery": imagery, "context_length": ctx, "captions": n_trunc.tokens.shape[0],
            "captions_truncated": n_trunc.n_truncated, "max_caption_tokens": max(n_trunc.lengths),
            "stage0": base.info if base else None, "stage0_wall_s": base.wall_s if base else 0.0,
            "stage0_run": str(base.run_dir) if base else None, "momentum": momentum,
            "view_pairs": len(caps), **{k: v for k, v in model.describe().items()}}
    return train_or_load(f"urbanln-{imagery}-{target or 'multi'}", model, data, cfg, key, info, val_dataset=val)


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


def teacher_student_curve(run: RunResult, tensors: RegionTensors, split, targets: np.ndarray, indicators,
                          scale: str | Scale, imagery: str = "satellite", probe_seeds=(0, 1),
                          max_points: int = 6) -> pd.DataFrame:
    """Probe R² of the student and of its EMA teacher at every saved evaluation of an UrbanLN run.

    Reads the run's weight snapshots (saved at the ``smoke`` and ``default`` scales); each snapshot's
    student and teacher image towers are read out like the benchmark's (mean final patch tokens) and
    probed (mean over ``probe_seeds`` and indicators). With distillation working as intended the
    teacher, an average of recent students, leads or matches the student. Returns rows step, model
    (student | teacher), R2 at up to ``max_points`` evenly spaced evaluations; empty without MSD or
    snapshots.
    """
    snaps = sorted((run.run_dir / "snapshots").glob("step-*.safetensors"))
    if len(snaps) > max_points:  # evenly spaced, first and last kept: each point costs two probe fits
        snaps = [snaps[i] for i in np.unique(np.linspace(0, len(snaps) - 1, max_points).round().astype(int))]
    if run.model.msd is None or not snaps:
        return pd.DataFrame(columns=["step", "model", "R2"])
    model = copy.deepcopy(run.model).eval()
    fn = satellite_features if imagery == "satellite" else street_features
    rows = []
    for path in snaps:
        model.load_state_dict(load_file(str(path)))
        step = int(path.stem.split("-")[1])
        for who, clip in (("student", model.clip), ("teacher", model.msd.teacher)):
            tower = SimpleNamespace(clip=clip)  # encode_image_features reads only .clip
            feats = fn(lambda x, t=tower: UrbanLN.encode_image_features(t, x), tensors)
            res = fit_probes(feats, targets, split, list(probe_seeds), ProbeConfig.for_scale(get_scale(scale)),
                             indicators=indicators)
            r2 = res.metrics.loc[res.metrics["metric"] == "R2", "value"].mean()
            rows.append({"step": step, "model": who, "R2": float(r2)})
    return pd.DataFrame(rows)
