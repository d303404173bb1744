"""Declared stand-ins for SAM and OWLv2 on SynthCity, and the divide-and-conquer run they make possible.

Random-init SAM and OWLv2 are noise, and components that read the ground truth would win by construction.
So on SynthCity the refinement uses **declared stand-ins** with stated, fixed error models (the same device
as the simulated captioners). The constants below were fixed before any refinement result was computed;
sweeps vary them explicitly, never silently.

What the SynthCity scene data supports, and what it does not:

- A scene record holds, per drawn object, its class, an axis-aligned ``bbox`` and attributes (colour, floors).
  It holds **no pixel masks**, so the segmenter stand-in's segments are (jittered) boxes, not shapes.
- Truth of a phrase is judged by its **object only** (is an object of a class the phrase names drawn in the
  image?). Attribute truth (a wrong colour) is not modelled: the simulated captioners never state wrong
  colours, only wrong counts, and counts are not phrases.
- A phrase whose object names no SynthCity class gets no truth; the scorer gives it score 1 (kept) and the
  run counts such phrases (``n_unknown``).
- The MLLM's fusion step is replaced by a statement-level stand-in (:func:`fuse_statements`): drop
  long-caption statements whose phrases were all filtered out, add local statements that carry kept phrases
  about classes the long caption does not mention. It does not paraphrase.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm
from tqdm import tqdm

from ..data.synthcity.build import read_scenes
from ..data.synthcity.captions import NOUNS, caption_scene, seeded_rng
from .backends import _generator_params
from .divide_conquer import PHRASE_THRESHOLD, Box, select_crops
from .parser import RuleParser, singular

# --- segmenter stand-in error model (fixed; per object of the scene) ----------------------------------
SEG_MISS_RATE = 0.15  # probability an object gets no segment at all
SEG_MERGE_RATE = 0.10  # probability an object's segment is merged with its nearest other object (union box)
SEG_JITTER = 0.10  # s.d. of each box side's displacement, as a fraction of the box side (boundary error)
SEG_MIN_AREA = 4  # segments smaller than this (pixels) are not returned, as SAM's min-area filter

# --- phrase-scorer stand-in error model (fixed) --------------------------------------------------------
SCORER_AUROC = 0.85  # probability a true phrase scores above a false one
# Scores are sigmoid(logit) with unit-variance Gaussian logits centred symmetrically on logit(0.01), the
# paper's threshold: then the filter keeps true phrases and drops false ones with the same rate Φ(d/2).

# --- crop selection on SynthCity's small tiles ---------------------------------------------------------
CROP_MIN_FRACTION = 0.125  # minimum crop side as a fraction of the image side
CROP_MAX_IOU = 0.3
CROP_MAX = 6


# ---------------------------------------------------------------------------------------------------
# segmenter stand-in
# ---------------------------------------------------------------------------------------------------

class SceneSegmenter:
    """Segments from a SynthCity scene record under a stated error model (miss, merge, boundary jitter).

    Args:
        scene: one record of :func:`urbanlib.data.synthcity.build.read_scenes` (``objects`` with ``bbox``).
        miss_rate: see :data:`SEG_MISS_RATE`.
        merge_rate: see :data:`SEG_MERGE_RATE`.
        jitter: see :data:`SEG_JITTER`.
        seed: seed; the same (seed, scene image) always gives the same segments.
    """

    def __init__(self, scene: dict, miss_rate: float = SEG_MISS_RATE, merge_rate: float = SEG_MERGE_RATE,
                 jitter: float = SEG_JITTER, seed: int = 0):
        for name, v in (("miss_rate", miss_rate), ("merge_rate", merge_rate)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SceneSegmenter: {name} must be in [0, 1], got {v}")
        self.scene, self.miss_rate, self.merge_rate, self.jitter, self.seed = scene, miss_rate, merge_rate, jitter, seed

    def boxes(self) -> list[Box]:
        """The segment boxes (end-exclusive pixels) after the error model."""
        size = int(self.scene["size"])
        objs = self.scene["objects"]
        rng = seeded_rng(self.seed, self.scene["image"], "segmenter")
        centres = np.array([[(o["bbox"][0] + o["bbox"][2]) / 2, (o["bbox"][1] + o["bbox"][3]) / 2] for o in objs])
        out = []
        for i, o in enumerate(objs):
            miss, merge = rng.random(), rng.random()
            jit = rng.standard_normal(4)
            if miss < self.miss_rate:
                continue
            x0, y0, x1, y1 = (float(v) for v in o["bbox"])
            if merge < self.merge_rate and len(objs) > 1:
                d = np.linalg.norm(centres - centres[i], axis=1)
                d[i] = np.inf
                b = objs[int(np.argmin(d))]["bbox"]
                x0, y0, x1, y1 = min(x0, b[0]), min(y0, b[1]), max(x1, b[2]), max(y1, b[3])
            w, h = x1 - x0, y1 - y0
            box = (x0 + jit[0] * self.jitter * w, y0 + jit[1] * self.jitter * h,
                   x1 + jit[2] * self.jitter * w, y1 + jit[3] * self.jitter * h)
            bx = [int(np.clip(round(v), 0, size)) for v in box]
            if (bx[2] - bx[0]) * (bx[3] - bx[1]) >= SEG_MIN_AREA:
                out.append((bx[0], bx[1], bx[2], bx[3]))
        return out

    def __call__(self, image=None) -> list[np.ndarray]:
        """``(size, size)`` boolean masks (the image itself is not looked at)."""
        size = int(self.scene["size"])
        masks = []
        for x0, y0, x1, y1 in self.boxes():
            m = np.zeros((size, size), dtype=bool)
            m[y0:y1, x0:x1] = True
            masks.append(m)
        return masks


# ---------------------------------------------------------------------------------------------------
# phrase scorer stand-in with a stated AUROC
# ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def separation(auroc: float) -> float:
    """Gap between true and false mean logits for unit-variance Gaussians: AUROC = Φ(d/√2) ⇒ d = √2·Φ⁻¹(AUROC)."""
    if not 0.0 < auroc < 1.0:
        raise ValueError(f"AUROC must be in (0, 1), got {auroc}")
    return math.sqrt(2.0) * float(norm.ppf(auroc))


def draw_scores(truth: Sequence[bool], auroc: float, rng: np.random.Generator,
                threshold: float = PHRASE_THRESHOLD) -> np.ndarray:
    """Scores in (0, 1) whose true-vs-false AUROC is ``auroc`` in expectation.

    logit ~ N(c + d/2, 1) for true phrases and N(c - d/2, 1) for false ones, with d = :func:`separation` and
    c = logit(threshold); score = sigmoid(logit). The sigmoid is monotone, so the AUROC of the scores equals
    P(logit_true > logit_false) = Φ(d/√2) = ``auroc``.

    Args:
        truth: per phrase, whether it names something in the image.
        auroc: target AUROC in (0, 1) (0.5 = a scorer that knows nothing).
        rng: random generator.
        threshold: the filter threshold the two distributions are centred on.

    Returns:
        ``(P,)`` float64 scores.
    """
    t = np.asarray(truth, dtype=bool)
    d = separation(auroc)
    c = math.log(threshold / (1.0 - threshold))
    logits = c + np.where(t, d / 2, -d / 2) + rng.standard_normal(t.shape)
    return 1.0 / (1.0 + np.exp(-logits))


def _class_lexicon() -> dict[str, set[str]]:
    """Object phrase (singular) -> SynthCity classes it can name, from the simulated captioners' nouns."""
    lex: dict[str, set[str]] = {}
    for cls, forms in NOUNS.items():
        for sing, plural in forms:
            for phrase in (sing, plural):
                words = phrase.lower().split()
                lex.setdefault(" ".join(words[:-1] + [singular(words[-1])]), set()).add(cls)
        lex.setdefault(cls.replace("_", " "), set()).add(cls)
    return lex


class ScenePhraseScorer:
    """Scores phrases against a SynthCity scene with a stated AUROC (OWLv2 stand-in).

    A phrase is true when its object (the longest suffix of the phrase that names a SynthCity class) names a
    class drawn in the scene. Scores are drawn by :func:`draw_scores`, seeded per (seed, image, phrase), so a
    phrase's score does not depend on which other phrases are scored with it.

    Args:
        scene: a scene record.
        auroc: see :data:`SCORER_AUROC`.
        seed: seed.
    """

    def __init__(self, scene: dict, auroc: float = SCORER_AUROC, seed: int = 0):
        separation(auroc)  # validates
        self.scene, self.auroc, self.seed = scene, auroc, seed
        self.present = {o["cls"] for o in scene["objects"]}
        self.lexicon = _class_lexicon()

    def classes(self, phrase: str) -> set[str]:
        """SynthCity classes a phrase's object can name (empty: unknown)."""
        words = phrase.lower().split()
        for k in range(len(words)):
            sub = words[k:]
            key = " ".join(sub[:-1] + [singular(sub[-1])])
            if key in self.lexicon:
                return self.lexicon[key]
        return set()

    def truth(self, phrase: str) -> bool | None:
        """True / False when the phrase names a SynthCity class, ``None`` when it names none."""
        cls = self.classes(phrase)
        return bool(cls & self.present) if cls else None

    def __call__(self, image, phrases: Sequence[str]) -> np.ndarray:
        """``(P,)`` scores; unknown phrases score 1.0 (kept, and counted by the run)."""
        out = np.ones(len(phrases))
        for i, p in enumerate(phrases):
            t = self.truth(p)
            if t is not None:
                out[i] = draw_scores([t], self.auroc, seeded_rng(self.seed, self.scene["image"], "scorer", p))[0]
        return out


# ---------------------------------------------------------------------------------------------------
# local captions of crops and statement-level fusion
# ---------------------------------------------------------------------------------------------------

def crop_scene(scene: dict, box: Box, min_overlap: float = 0.5) -> dict:
    """The sub-scene a crop shows: objects with at least ``min_overlap`` of their box inside, clipped and shifted.

    The crop is square-padded to its longer side so the simulated captioner's location words stay meaningful.
    """
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1)
    objs = []
    for o in scene["objects"]:
        b = o["bbox"]
        iw = max(0, min(b[2], x1) - max(b[0], x0))
        ih = max(0, min(b[3], y1) - max(b[1], y0))
        area = max(1, (b[2] - b[0]) * (b[3] - b[1]))
        if iw * ih / area >= min_overlap:
            nb = [max(b[0], x0) - x0, max(b[1], y0) - y0, min(b[2], x1) - x0, min(b[3], y1) - y0]
            objs.append({"cls": o["cls"], "bbox": nb, "attrs": dict(o["attrs"])})
    return {"image": f"{scene['image']}#crop{box}", "region_id": scene.get("region_id"), "kind": scene["kind"],
            "size": side, "objects": objs}


def statement_rates(statements: Sequence[dict], scene: dict) -> dict[str, float]:
    """Hallucination and omission of a caption's labelled statements against its scene.

    Returns:
        ``hallucination_rate``: false / content statements (filler excluded); ``omission_rate``: share of the
        scene's object classes no true statement mentions; ``n_content``: content statements.
    """
    content = [s for s in statements if s.get("kind") != "filler"]
    false = sum(not s["true"] for s in content)
    present = {o["cls"] for o in scene["objects"]}
    mentioned = {s["object"] for s in content if s["true"] and s.get("object")}
    return {"hallucination_rate": false / len(content) if content else 0.0,
            "omission_rate": 1.0 - len(mentioned & present) / len(present) if present else 0.0,
            "n_content": float(len(content))}


def fuse_statements(long_statements: Sequence[dict], local_statements: Sequence[dict], graphs_long: Sequence,
                    graphs_local: Sequence, kept: set[str], dropped: set[str]) -> list[dict]:
    """Statement-level stand-in for the MLLM's fusion (declared; it does not paraphrase).

    A long-caption statement is removed when it carries a dropped phrase and no kept one. A local statement is
    added when it carries a kept phrase and is about a scene class no remaining statement is about.
    """
    out = []
    for s, g in zip(long_statements, graphs_long, strict=True):
        ph = set(g.phrases())
        if ph & dropped and not ph & kept:
            continue
        out.append(s)
    covered = {s.get("object") for s in out}
    for s, g in zip(local_statements, graphs_local, strict=True):
        if s.get("kind") == "filler" or s.get("object") in covered:
            continue
        if set(g.phrases()) & kept:
            out.append(s)
            covered.add(s.get("object"))
    return out


@dataclass
class SynthRefinement:
    """One SynthCity refinement: captions and labelled statements before and after, and what happened between."""

    image: str
    captioner: str
    before: dict
    after: dict
    text_before: str
    text_after: str
    boxes: list[Box] = field(default_factory=list)
    local_texts: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    n_unknown: int = 0
    parser: str = ""


def refine_synthcity_caption(scene: dict, captioner, params, seed: int = 0, style: str = "long",
                             parser=None, auroc: float = SCORER_AUROC, miss_rate: float = SEG_MISS_RATE,
                             merge_rate: float = SEG_MERGE_RATE, jitter: float = SEG_JITTER,
                             threshold: float = PHRASE_THRESHOLD) -> SynthRefinement:
    """Divide-and-conquer refinement of one simulated caption with the declared stand-ins.

    Steps as in :class:`~urbanlib.captions.divide_conquer.DivideAndConquer`: segmenter stand-in → maximal-
    rectangle crops (:func:`~urbanlib.captions.divide_conquer.select_crops`) → the **same** simulated captioner
    captions each crop's sub-scene (short style) → parser phrases → scorer stand-in → 0.01 filter →
    statement-level fusion stand-in. Truth of the local statements is re-judged against the whole scene.

    Args:
        scene: a scene record of the city.
        captioner: a :class:`~urbanlib.data.synthcity.config.CaptionerProfile`.
        params: the city's :class:`~urbanlib.data.synthcity.config.GeneratorParams` (its ``rho`` is used).
        seed: city seed (captions) and stand-in seed.
        style: caption style refined (UrbanLN: ``"long"``).
        parser: default :class:`~urbanlib.captions.parser.RuleParser` (the labelled rule-based fallback).
        auroc: scorer stand-in quality.
        miss_rate: segmenter miss rate.
        merge_rate: segmenter merge rate.
        jitter: segmenter boundary jitter.
        threshold: phrase filter threshold.

    Returns:
        :class:`SynthRefinement` with ``before`` / ``after`` :func:`statement_rates`.
    """
    parser = parser or RuleParser()
    cap = caption_scene(scene["objects"], scene["kind"], scene["size"], captioner, style, params, seed)
    seg = SceneSegmenter(scene, miss_rate, merge_rate, jitter, seed)
    size = int(scene["size"])
    boxes = select_crops(seg(), min_side=max(2, int(round(CROP_MIN_FRACTION * size))), max_iou=CROP_MAX_IOU,
                         max_crops=CROP_MAX)
    present = {o["cls"] for o in scene["objects"]}
    local_statements: list[dict] = []
    local_texts = []
    for b in boxes:
        sub = crop_scene(scene, b)
        if not sub["objects"]:
            continue
        lc = caption_scene(sub["objects"], sub["kind"], sub["size"], captioner, "short", params, seed)
        local_texts.append(lc["text"])
        for s in lc["statements"]:
            s = dict(s)
            if s.get("object") is not None and s["kind"] == "hallucination":
                s["true"] = s["object"] in present  # absent from the crop but maybe drawn elsewhere
            local_statements.append(s)
    texts_long = [s["text"] for s in cap["statements"]]
    texts_local = [s["text"] for s in local_statements]
    graphs = parser.parse(texts_long + texts_local)
    g_long, g_local = graphs[:len(texts_long)], graphs[len(texts_long):]
    phrases = list(dict.fromkeys(p for g in graphs for p in g.phrases()))
    scorer = ScenePhraseScorer(scene, auroc, seed)
    scores = scorer(None, phrases)
    kept = [p for p, s in zip(phrases, scores, strict=True) if s >= threshold]
    dropped = [p for p, s in zip(phrases, scores, strict=True) if s < threshold]
    fused = fuse_statements(cap["statements"], local_statements, g_long, g_local, set(kept), set(dropped))
    n_unknown = sum(scorer.truth(p) is None for p in phrases)
    return SynthRefinement(scene["image"], captioner.name, statement_rates(cap["statements"], scene),
                           statement_rates(fused, scene), cap["text"], " ".join(s["text"] for s in fused), boxes,
                           local_texts, kept, dropped, n_unknown, getattr(parser, "label", type(parser).__name__))


def refine_city(city_dir: str | Path, n_images: int | None = None, kind: str = "satellite", seed: int | None = None,
                progress: bool = True, **kwargs) -> pd.DataFrame:
    """Refine every simulated captioner's long caption of a built city's images (for the captions notebook).

    Args:
        city_dir: a built SynthCity city folder.
        n_images: first N images of ``kind`` (all when ``None``).
        kind: ``"satellite"`` or ``"street"``.
        seed: stand-in seed (default: the city's seed).
        progress: tqdm bar.
        **kwargs: forwarded to :func:`refine_synthcity_caption` (``auroc``, ``miss_rate``, ``params`` ...).

    Returns:
        One row per (image, captioner): ``{before,after}_{hallucination_rate,omission_rate,n_content}``,
        ``n_kept``, ``n_dropped``, ``n_unknown``, ``n_crops`` and the stand-in settings.
    """
    meta = json.loads((Path(city_dir) / "meta.json").read_text())
    params = kwargs.pop("params", None) or _generator_params(meta["params"])
    seed = int(meta["seed"]) if seed is None else seed
    scenes = [s for s in read_scenes(city_dir) if s["kind"] == kind][:n_images]
    rows = []
    for sc in tqdm(scenes, desc="divide-and-conquer (stand-ins)", disable=not progress, leave=False):
        for cap in params.captioners:
            r = refine_synthcity_caption(sc, cap, params, seed=seed, **kwargs)
            row = {"image": r.image, "captioner": r.captioner, "n_crops": len(r.boxes), "n_kept": len(r.kept),
                   "n_dropped": len(r.dropped), "n_unknown": r.n_unknown, "parser": r.parser, "rho": params.rho}
            row.update({f"before_{k}": v for k, v in r.before.items()})
            row.update({f"after_{k}": v for k, v in r.after.items()})
            row.update({k: kwargs.get(k, d) for k, d in (("auroc", SCORER_AUROC), ("miss_rate", SEG_MISS_RATE),
                                                         ("merge_rate", SEG_MERGE_RATE), ("jitter", SEG_JITTER))})
            rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["CROP_MAX", "CROP_MAX_IOU", "CROP_MIN_FRACTION", "SCORER_AUROC", "SEG_JITTER", "SEG_MERGE_RATE",
           "SEG_MIN_AREA", "SEG_MISS_RATE", "ScenePhraseScorer", "SceneSegmenter", "SynthRefinement",
           "crop_scene", "draw_scores", "fuse_statements", "refine_city", "refine_synthcity_caption", "separation",
           "statement_rates"]
