"""Which captions a model trains on: raw, rule-refined (UrbanCLIP), or refined and consensus-selected (UrbanLN).

Refining and selecting captions is slow next to reading them, so each prepared table is cached under
``$URBANLIB_CACHE/captions``, keyed by the raw captions and the method's settings.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd

from urbanlib.cache import atomic_write, cache_dir, file_lock, stable_hash
from urbanlib.captions.backends import _generator_params
from urbanlib.captions.capture import Capture, consensus_select
from urbanlib.captions.parser import RuleParser
from urbanlib.captions.refine_rules import refine_captions
from urbanlib.captions.standins import refine_synthcity_caption
from urbanlib.data.dataset import UrbanDataset
from urbanlib.data.synthcity.build import read_scenes

from .texts import region_texts


def _cached_table(kind: str, raw: pd.DataFrame, settings: dict, compute) -> pd.DataFrame:
    key = stable_hash({"kind": kind, "settings": settings,
                       "captions": stable_hash(raw[["region_id", "image", "source", "style", "text"]].astype(str)
                                               .values.tolist())})
    path = cache_dir("captions") / f"{kind}-{key}.json"
    with file_lock(path.with_suffix(".lock")):  # two pages of one city wait for one computation
        if path.exists():
            return pd.DataFrame(json.loads(path.read_text()))
        table = compute()
        cols = [c for c in ("region_id", "image", "source", "style", "text") if c in table]
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(table[cols].to_dict(orient="list")))
        return table[cols]


def refined_captions(ds: UrbanDataset, style: str = "short") -> pd.DataFrame:
    """The dataset's captions of one style after UrbanCLIP's rule-based refinement (default rules)."""
    raw = ds.captions[ds.captions["style"] == style]
    return _cached_table(f"refined-{style}", raw, {"rules": "default"}, lambda: refine_captions(raw)[0])


def urbanclip_texts(ds: UrbanDataset, refined: bool = True) -> list[list[str]]:
    """Per-region short captions for UrbanCLIP: rule-refined (the full model) or raw ("w/o refined text")."""
    if not refined:
        return region_texts(ds, "short")
    return region_texts(replace(ds, captions=refined_captions(ds, "short")), "short")


def _synth_refined_long(ds: UrbanDataset, seed: int) -> pd.DataFrame:
    """Long captions after divide-and-conquer refinement with SynthCity's declared stand-ins."""
    params = _generator_params(ds.meta["params"])
    by_name = {c.name: c for c in params.captioners}
    scenes = {s["image"]: s for s in read_scenes(ds.root)}
    raw = ds.captions[ds.captions["style"] == "long"]
    out = raw.copy()
    texts, parser = [], RuleParser()  # one parser: it memoises sentence graphs
    for r in raw.itertuples():
        scene, cap = scenes.get(r.image), by_name.get(r.source)
        if scene is None or cap is None:  # not a simulated caption: nothing the stand-ins can refine
            texts.append(r.text)
            continue
        texts.append(refine_synthcity_caption(scene, cap, params, seed=seed, parser=parser).text_after or r.text)
    out["text"] = texts
    return out


def dc_refined_captions(ds: UrbanDataset, seed: int = 0) -> pd.DataFrame:
    """UrbanLN's divide-and-conquer refinement of the long captions (cached).

    On SynthCity it runs with the declared stand-ins for SAM and OWLv2
    (:mod:`urbanlib.captions.standins`). On other data the real pipeline
    (:class:`~urbanlib.captions.divide_conquer.DivideAndConquer`) needs SAM, OWLv2, a parser and a
    captioner with weights; without them the raw captions are returned, and ``refinement_used`` says so.
    """
    raw = ds.captions[ds.captions["style"] == "long"]
    if ds.meta.get("generator") != "synthcity":
        return raw.assign(refinement_used="none (needs SAM/OWLv2 weights)")
    table = _cached_table("dc-refined-long", raw, {"seed": seed, "standins": "synthcity-1"},
                          lambda: _synth_refined_long(ds, seed))
    return table.assign(refinement_used="divide-and-conquer with declared stand-ins")


def select_long_captions(captions: pd.DataFrame, consensus: bool = True, seed: int = 0) -> pd.DataFrame:
    """One long caption per image: the CAPTURE consensus choice among its captioners, or a random one.

    Args:
        captions: long captions, several sources per image.
        consensus: pick the candidate with the highest mean CAPTURE against the others (UrbanLN);
            False picks one at random by ``seed`` ("w/o Consensus").
        seed: the random choice's seed.
    """
    groups = list(captions.groupby("image", sort=False))
    if not consensus:
        rng = np.random.default_rng(seed)
        keep = [g.index[int(rng.integers(len(g)))] for _, g in groups]
        return captions.loc[keep]

    def compute():
        metric = Capture(RuleParser())
        # parse every candidate and embed every distinct element once, in large batches: the
        # pairwise scoring below then only looks embeddings up (10x faster than per-pair encoding)
        graphs = metric.parse(list(captions["text"]))
        phrases = {p for g in graphs for p in [*g.objects, *(a for _, a in g.attributes),
                                                *(" ".join(r) for r in g.relations)]}
        if metric.encode is not None and phrases:
            metric.encode(sorted(phrases))
        keep = [g.index[consensus_select(list(g["text"]), metric=metric)[0]] if len(g) > 1 else g.index[0]
                for _, g in groups]
        return captions.loc[keep]

    return _cached_table("consensus-long", captions, {"parser": "rule", "metric": "capture-5-5-2"}, compute)


def urbanln_captions(ds: UrbanDataset, refinement: bool = True, consensus: bool = True, seed: int = 0,
                     sources: list[str] | None = None) -> UrbanDataset:
    """The dataset with its long captions replaced by UrbanLN's training captions (one per image).

    ``refinement=False`` is "w/o Refinement" (consensus over raw captions); ``consensus=False`` is
    "w/o Consensus" (a random refined candidate); ``sources=["sim-qwen"]`` keeps one captioner
    (UrbanLN's "diversity as augmentation" question: one captioner against several).
    """
    long = dc_refined_captions(ds, seed) if refinement else ds.captions[ds.captions["style"] == "long"]
    if sources is not None:
        long = long[long["source"].isin(sources)]
        if long.empty:
            raise ValueError(f"no long captions from sources {sources}")
    chosen = select_long_captions(long, consensus, seed)
    others = ds.captions[ds.captions["style"] != "long"]
    return replace(ds, captions=pd.concat([others, chosen[[c for c in chosen.columns if c in others.columns]]],
                                          ignore_index=True))
