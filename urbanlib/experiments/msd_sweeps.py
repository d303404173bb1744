"""Sweeps only SynthCity allows: when does momentum self-distillation help (issue 8)?

UrbanLN motivates MSD by noisy captions: the EMA teacher's soft targets should soften the damage
of a caption that states something false. SynthCity knows every statement's truth, so two
questions can be asked directly:

1. **MSD against caption noise and ρ.** Every captioner's long captions are regenerated with its
   hallucination mean and wrong-quantity rate multiplied by ``noise`` (and, optionally, its error
   correlation ρ changed), one caption per image is chosen by CAPTURE consensus as UrbanLN does,
   and UrbanLN is trained with MSD (μ = 0.5) and without (μ = 0, no teacher or queue). The gap in
   probe R² is MSD's benefit at that noise level; the chosen captions' measured hallucination rate
   is reported beside it.
2. **False negatives in the queue.** A queue holds earlier pairs, so on a small training set it
   holds stale copies of the query's own region, which a plain MoCo/ALBEF queue treats as
   negatives. The sweep trains with the queue capped at ``fraction`` × training pairs (0.5 is
   urbanlib's default; above 1 every pair sits in the queue more than once) and with same-region
   masking on or off, and reports the false negatives per query seen during training and the R².

Both sweeps train on satellite imagery only, with the refinement step left out (the sweep varies
the captions' noise directly), so each point differs from its pair in one factor only.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from urbanlib.captions.backends import _generator_params as from_meta
from urbanlib.data.synthcity.build import read_scenes
from urbanlib.data.synthcity.captions import caption_scene
from urbanlib.models.urbanln import UrbanLNConfig
from urbanlib.pipeline.caption_sets import select_long_captions
from urbanlib.pipeline.city import City
from urbanlib.pipeline.features import run_features
from urbanlib.pipeline.urbanln import pretrain_urbanln

from .ablations import probe_features
from .caption_quality import caption_rates

NOISE_LEVELS = (0.0, 1.0, 2.0)  # multipliers of every captioner's hallucination mean and wrong-quantity rate
QUEUE_FRACTIONS = (0.5, 2.0)  # queue cap as a fraction of the training pairs (0.5: urbanlib's default)


def _generator_params(city: City):
    if not city.is_synthetic:
        raise ValueError(f"{city.name}: the MSD sweeps need SynthCity (captions are regenerated from scene truth)")

    return from_meta(city.ds.meta["params"])


def noisy_long_captions(city: City, noise: float, rho: float | None = None, seed: int = 0) -> pd.DataFrame:
    """Every captioner's long satellite captions, regenerated with its error rates scaled by ``noise``.

    Args:
        city: a SynthCity city.
        noise: multiplier of each captioner's ``hallucination_mean`` and ``wrong_quantity_rate``
            (0: captions without false statements; 1: the city's own captioners).
        rho: error correlation between captioners (None keeps the city's).
        seed: caption draw seed.

    Returns:
        One row per (image, captioner): image, region_id, source, style, text, statements, omissions.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    params = _generator_params(city)
    caps = [replace(c, hallucination_mean=c.hallucination_mean * noise,
                    wrong_quantity_rate=min(1.0, c.wrong_quantity_rate * noise)) for c in params.captioners]
    params = replace(params, captioners=tuple(caps),
                     **({} if rho is None else {"rho": float(rho)}))
    rows = []
    for sc in read_scenes(city.ds.root):
        if sc["kind"] != "satellite":
            continue
        cache: dict = {}
        for cap in params.captioners:
            c = caption_scene(sc["objects"], sc["kind"], sc["size"], cap, "long", params, seed, cache)
            rows.append({"image": sc["image"], "region_id": sc["region_id"], "source": cap.name, "style": "long",
                         "text": c["text"], "statements": c["statements"], "omissions": c["omissions"]})
    return pd.DataFrame(rows)


def _region_texts(city: City, chosen: pd.DataFrame) -> list[list[str]]:
    by_region = chosen.groupby("region_id")["text"].apply(list).to_dict()
    return [list(by_region.get(r, [])) for r in city.ds.region_ids]


def _train_and_probe(city: City, texts, config: UrbanLNConfig, progress: bool):

    run = pretrain_urbanln(city, imagery="satellite", config=config, texts=texts, progress=progress)
    return run, probe_features(city, run_features(run, city.tensors, imagery="satellite"))


def msd_noise_sweep(city: City, noise_levels=NOISE_LEVELS, rhos=(), progress: bool = False):
    """UrbanLN with and without MSD on captions of increasing noise (and, optionally, other ρ).

    Args:
        city: a SynthCity city (its split and seed).
        noise_levels: error-rate multipliers, at the city's own ρ.
        rhos: extra settings at noise 1 with this ρ (empty: none).
        progress: progress bars.

    Returns:
        ``(metrics, settings)``: tidy probe rows with ``noise``, ``rho``, ``model`` ("with MSD" /
        "w/o MSD"); and one row per setting with the chosen captions' hallucination rate.
    """
    base_rho = _generator_params(city).rho
    settings = [(float(n), base_rho) for n in noise_levels] + [(1.0, float(r)) for r in rhos]
    rows, info = [], []
    for noise, rho in settings:
        caps = noisy_long_captions(city, noise, rho)
        chosen = select_long_captions(caps, consensus=True)
        texts = _region_texts(city, chosen)
        rates = caption_rates(caps).set_index(["image", "source"])["hallucination"]
        picked = rates.loc[list(zip(chosen["image"], chosen["source"], strict=True))]
        info.append({"noise": noise, "rho": rho, "images": len(chosen),
                     "hallucination (all candidates)": round(float(rates.mean()), 3),
                     "hallucination (chosen captions)": round(float(picked.mean()), 3)})
        for model, config in (("with MSD", UrbanLNConfig()), ("w/o MSD", UrbanLNConfig(use_msd=False))):
            _, m = _train_and_probe(city, texts, config, progress)
            rows.append(m.assign(model=model, noise=noise, rho=rho))
    return pd.concat(rows, ignore_index=True), pd.DataFrame(info)


def queue_false_negative_sweep(city: City, fractions=QUEUE_FRACTIONS, progress: bool = False):
    """UrbanLN with the queue capped at ``fraction`` × training pairs, same-region masking on and off.

    Trains on UrbanLN's own training captions (refined, consensus-selected), so only the queue
    differs; the (0.5, masked) point is the benchmark's UrbanLN (satellite) run.

    Returns:
        ``(metrics, settings)``: tidy probe rows with ``queue_fraction`` and ``masked``; and one row
        per setting with the queue length used and the mean false negatives per query over training
        (same-region candidates other than the positive, from the run's loss log).
    """
    bad = [f for f in fractions if not float(f) > 0]
    if bad:
        raise ValueError(f"queue fractions must be > 0 (a cap relative to the training pairs), got {bad}")
    rows, info = [], []
    for frac in fractions:
        for masked in (True, False):
            config = UrbanLNConfig(queue_max_fraction=float(frac), mask_same_region=masked)
            run, m = _train_and_probe(city, None, config, progress)
            h = run.history
            fn = float(h["n_false_negatives"].mean()) if "n_false_negatives" in h else float("nan")
            info.append({"queue fraction": frac, "same-region masking": masked, "queue size": run.info["queue_size"],
                         "false negatives per query": round(fn, 2), "trained (s)": round(run.wall_s, 1)})
            rows.append(m.assign(queue_fraction=frac, masked=masked))
    return pd.concat(rows, ignore_index=True), pd.DataFrame(info)
