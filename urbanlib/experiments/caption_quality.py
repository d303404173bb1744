"""How good the captions are, measured against SynthCity's statement-level truth.

Every simulated caption carries its statements with truth labels (``fact``, ``filler`` true;
``hallucination``, ``wrong_quantity`` false) and a count of true facts it omitted. That makes the
papers' caption-side claims measurable: does consensus selection pick less hallucinated captions
than a random choice, and how does that depend on how correlated the captioners' errors are (rho)?
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from urbanlib.captions.capture import Capture, consensus_select
from urbanlib.captions.parser import RuleParser
from urbanlib.data.synthcity.captions import caption_scene

FALSE_KINDS = ("hallucination", "wrong_quantity")


def caption_rates(captions: pd.DataFrame) -> pd.DataFrame:
    """Per caption: statements, false statements, hallucination rate and omission rate.

    Hallucination = false statements / statements; omission = omitted facts / (omitted + stated facts).
    """
    if "statements" not in captions:
        raise ValueError("caption_rates needs SynthCity captions (a 'statements' column with truth labels)")
    rows = []
    for r in captions.itertuples():
        st = r.statements if isinstance(r.statements, list) else []
        n = len(st)
        false = sum(s.get("kind") in FALSE_KINDS for s in st)
        facts = sum(s.get("kind") == "fact" for s in st)
        om = int(getattr(r, "omissions", 0) or 0)
        rows.append({"image": r.image, "source": r.source, "style": r.style, "n_statements": n, "n_false": false,
                     "hallucination": false / n if n else np.nan,
                     "omission": om / (om + facts) if (om + facts) else np.nan})
    return pd.DataFrame(rows)


def selection_quality(captions: pd.DataFrame, seed: int = 0, metric=None) -> pd.DataFrame:
    """Consensus selection against a random choice, per image.

    For every image with several candidate captions: the hallucination rate of the CAPTURE-consensus
    pick, the expected rate of a uniformly random pick (the candidates' mean), the best candidate's
    rate, and whether consensus picked a least-hallucinated candidate.
    """
    metric = metric or Capture(RuleParser())
    rates = caption_rates(captions).set_index(captions.index)
    graphs = metric.parse(list(captions["text"]))
    phrases = {p for g in graphs for p in [*g.objects, *(a for _, a in g.attributes), *(" ".join(x) for x in g.relations)]}
    if metric.encode is not None and phrases:
        metric.encode(sorted(phrases))  # embed every element once
    rows = []
    for image, g in captions.groupby("image", sort=False):
        if len(g) < 2:
            continue
        h = rates.loc[g.index, "hallucination"].to_numpy(float)
        pick = consensus_select(list(g["text"]), metric=metric)[0]
        rows.append({"image": image, "consensus": h[pick], "random": float(np.nanmean(h)), "best": float(np.nanmin(h)),
                     "consensus_is_best": bool(h[pick] <= np.nanmin(h) + 1e-12),
                     "chosen_source": g["source"].iloc[pick]})
    return pd.DataFrame(rows)


def rho_sweep(scenes: list[dict], params, rhos=(0.0, 0.5, 0.9), seed: int = 0, kind: str = "satellite",
              progress: bool = True) -> pd.DataFrame:
    """Consensus vs random as the captioners' error correlation rho varies (captions regenerated per rho).

    Args:
        scenes: scene records (:func:`urbanlib.data.synthcity.build.read_scenes`), e.g. the first 100 tiles.
        params: the city's generator parameters; only ``rho`` is changed.
        rhos: values of rho.
        seed: city seed of the caption draws.
        kind: which scenes to caption.
        progress: progress bar.

    Returns:
        One row per rho: mean hallucination of the consensus pick, of a random pick, of the best
        candidate, and the share of images where consensus picked a best candidate.
    """
    out = []
    for rho in tqdm(rhos, desc="rho sweep", disable=not progress, leave=False):
        p = replace(params, rho=float(rho))
        rows = []
        for sc in scenes:
            if sc["kind"] != kind:
                continue
            cache: dict = {}
            for cap in p.captioners:
                c = caption_scene(sc["objects"], sc["kind"], sc["size"], cap, "long", p, seed, cache)
                rows.append({"image": sc["image"], "source": cap.name, "style": "long", "text": c["text"],
                             "statements": c["statements"], "omissions": c["omissions"]})
        q = selection_quality(pd.DataFrame(rows), seed)
        out.append({"rho": rho, "images": len(q), "consensus": q["consensus"].mean(), "random": q["random"].mean(),
                    "best": q["best"].mean(), "consensus_is_best": q["consensus_is_best"].mean()})
    return pd.DataFrame(out)
