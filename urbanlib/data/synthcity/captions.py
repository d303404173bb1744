"""Simulated MLLM captioners that read only a scene description (what the renderer drew).

Each captioner ("MLLM profile") has its own vocabulary, sentence style and error model:
omissions, hallucinated objects, generic filler and wrong quantities. Every caption keeps its
statements with truth labels (``fact`` | ``hallucination`` | ``filler`` | ``wrong_quantity``) and an
omission count. Captioners share blind spots: their omission / hallucination draws are Gaussian
copulas ``z = sqrt(rho)·z_shared + sqrt(1-rho)·z_own`` with ``z_shared`` common to all captioners of an
image, so a consensus of captioners can still be wrong together.

Captions are seeded by (seed, captioner, style, hash of the scene content): identical scenes get
identical captions, whatever region or indicator values they belong to.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import pandas as pd
from tqdm import tqdm

from urbanlib.cache import stable_hash

from .config import CaptionerProfile, GeneratorParams

# noun synonyms (singular, plural); captioners pick different ones
NOUNS = {
    "highrise_building": [("high-rise tower", "high-rise towers"), ("tall apartment block", "tall apartment blocks"),
                          ("residential tower", "residential towers")],
    "house": [("house", "houses"), ("low-rise home", "low-rise homes"), ("small residential building", "small residential buildings")],
    "office_building": [("office building", "office buildings"), ("commercial building", "commercial buildings")],
    "warehouse": [("warehouse", "warehouses"), ("industrial shed", "industrial sheds"), ("factory building", "factory buildings")],
    "school_building": [("school building", "school buildings"), ("campus building", "campus buildings")],
    "running_track": [("running track", "running tracks"), ("athletics track", "athletics tracks")],
    "sports_field": [("sports field", "sports fields"), ("playing field", "playing fields")],
    "street": [("street", "streets"), ("local road", "local roads")],
    "major_road": [("major road", "major roads"), ("highway", "highways"), ("main road", "main roads")],
    "arterial_road": [("avenue", "avenues"), ("arterial road", "arterial roads")],
    "car": [("car", "cars"), ("vehicle", "vehicles")],
    "water": [("body of water", "bodies of water"), ("river", "rivers"), ("waterway", "waterways")],
    "parking_lot": [("parking lot", "parking lots"), ("car park", "car parks")],
    "grass": [("lawn", "lawns"), ("grassy area", "grassy areas")],
    "tree": [("tree", "trees")],
    "footpath": [("footpath", "footpaths"), ("walking path", "walking paths")],
    "forest": [("patch of forest", "patches of forest"), ("wooded area", "wooded areas")],
    "farmland": [("crop field", "crop fields"), ("farm field", "farm fields")],
    "bare_soil": [("patch of bare soil", "patches of bare soil"), ("empty lot", "empty lots")],
    "construction_site": [("construction site", "construction sites")],
    "crane": [("crane", "cranes")],
    "sky": [("sky", "skies")],
    "road": [("road", "roads"), ("street", "streets")],
    "sidewalk": [("sidewalk", "sidewalks"), ("pavement", "pavements")],
    "lane_marking": [("lane marking", "lane markings")],
    "highrise_facade": [("tall building", "tall buildings"), ("high-rise facade", "high-rise facades")],
    "house_facade": [("house front", "house fronts"), ("low building", "low buildings")],
    "shopfront": [("shopfront", "shopfronts"), ("storefront", "storefronts")],
    "warehouse_facade": [("warehouse wall", "warehouse walls"), ("industrial building", "industrial buildings")],
    "school_facade": [("school building", "school buildings")],
    "shop_sign": [("shop sign", "shop signs")],
    "fence": [("fence", "fences")],
    "bus": [("bus", "buses")],
    "truck": [("truck", "trucks"), ("lorry", "lorries")],
    # never drawn: only ever hallucinated
    "swimming_pool": [("swimming pool", "swimming pools")],
    "bridge": [("bridge", "bridges")],
    "solar_panel": [("solar panel array", "solar panel arrays")],
    "boat": [("boat", "boats")],
    "tennis_court": [("tennis court", "tennis courts")],
    "railway": [("railway line", "railway lines")],
    "pedestrian": [("pedestrian", "pedestrians")],
    "traffic_light": [("traffic light", "traffic lights")],
    "street_lamp": [("street lamp", "street lamps")],
    "bicycle": [("bicycle", "bicycles")],
    "billboard": [("billboard", "billboards")],
}
UNIVERSE = {
    "satellite": ["highrise_building", "house", "office_building", "warehouse", "school_building", "running_track",
                  "sports_field", "street", "major_road", "arterial_road", "car", "water", "parking_lot", "grass", "tree",
                  "footpath", "forest", "farmland", "bare_soil", "construction_site", "crane", "swimming_pool", "bridge",
                  "solar_panel", "boat", "tennis_court", "railway"],
    "street": ["sky", "road", "sidewalk", "lane_marking", "highrise_facade", "house_facade", "shopfront",
               "warehouse_facade", "school_facade", "shop_sign", "fence", "tree", "car", "bus", "truck", "pedestrian",
               "traffic_light", "street_lamp", "bicycle", "billboard"],
}
MASS = {"water", "grass", "sky", "sidewalk", "road", "street", "bare_soil", "forest"}  # described without a count
BUILDINGS = {"highrise_building", "house", "office_building", "warehouse", "school_building", "highrise_facade",
             "house_facade", "shopfront", "warehouse_facade", "school_facade"}
# thin objects whose bbox spans the image: no extent or adjacency facts from their bbox
LINEAR = {"street", "major_road", "arterial_road", "footpath", "crane", "road", "sidewalk", "lane_marking", "sky"}
NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

FILLER = {
    "plain": ["The image shows a typical part of a city.", "Overall, the scene looks like an ordinary urban area.",
              "The picture gives a general view of the neighbourhood.", "It is a common sight in many cities.",
              "The area seems to be part of a larger urban landscape.", "The view is clear and easy to read."],
    "descriptive": ["The composition conveys a sense of the everyday rhythm of the place.",
                    "Taken together, these elements paint a picture of a lived-in environment.",
                    "The colours and shapes blend into a coherent urban tapestry.",
                    "Such scenes are characteristic of contemporary urban development.",
                    "The overall impression is of a place shaped by human activity over time."],
    "enumerative": ["Additional context: the scene is an urban environment.", "Overall category: built environment.",
                    "Image type: typical urban scene.", "General note: the layout follows common city patterns."],
    "terse": ["Urban area.", "Typical city scene.", "Nothing unusual.", "Ordinary neighbourhood.",
              "A normal place in a city."],
}
KIND_WORD = {"satellite": {"plain": "This satellite image shows", "descriptive": "Seen from above, this aerial view reveals",
                           "enumerative": "Aerial image content:", "terse": "Satellite view:"},
             "street": {"plain": "This street view image shows", "descriptive": "At eye level, this street scene reveals",
                        "enumerative": "Street-level image content:", "terse": "Street view:"}}


def scene_hash(objects: list[dict], kind: str, size: int) -> str:
    """Content hash (64 hex digits) of a scene description (what a captioner may see), not of its image path."""
    return stable_hash({"kind": kind, "size": size, "objects": objects}, n=64)


def _phi(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def seeded_rng(*parts) -> np.random.Generator:
    """A generator seeded by the sha256 of ``parts`` (as text, joined by ``|``): the same parts give the same draws.

    The seeding device of every simulated component on SynthCity (these captioners and the declared
    stand-ins of :mod:`urbanlib.captions.standins`): draws depend on what is simulated, not on call order.
    """
    h = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng([int.from_bytes(h[i:i + 4], "little") for i in range(0, 16, 4)])


def _where(objs: list[dict], size: int, kind: str) -> str:
    """Coarse location phrase of a group of objects from their bbox centres."""
    cx = np.array([(o["bbox"][0] + o["bbox"][2]) / 2 for o in objs]) / size
    cy = np.array([(o["bbox"][1] + o["bbox"][3]) / 2 for o in objs]) / size
    if kind == "street":
        if cy.mean() < 0.4:
            return "in the upper part of the view"
        if cx.mean() < 0.4:
            return "on the left side of the street"
        if cx.mean() > 0.6:
            return "on the right side of the street"
        return "in the middle of the view"
    if len(objs) > 2 and (cx.std() > 0.25 or cy.std() > 0.25):
        return "scattered across the image"
    v = "upper" if cy.mean() < 0.38 else ("lower" if cy.mean() > 0.62 else "central")
    h = "left" if cx.mean() < 0.38 else ("right" if cx.mean() > 0.62 else "")
    if v == "central" and not h:
        return "in the centre of the image"
    return f"in the {v} {h} part of the image".replace("  ", " ").replace("central left", "left").replace(
        "central right", "right")


def _quantity(n: int) -> str:
    if n < 10:
        return NUMBER_WORDS[n]
    if n < 20:
        return "more than ten"
    return "dozens of"


def _noun(cls: str, plural: bool, pref: int) -> str:
    options = NOUNS[cls]
    return options[pref % len(options)][1 if plural else 0]


def _facts(objects: list[dict], kind: str, size: int) -> list[dict]:
    """Atomic true facts about a scene, most salient first: presence/count, colour, location, height."""
    groups: dict[str, list[dict]] = {}
    for o in objects:
        groups.setdefault(o["cls"], []).append(o)
    area = {c: sum((o["bbox"][2] - o["bbox"][0]) * (o["bbox"][3] - o["bbox"][1]) for o in g) for c, g in groups.items()}
    facts = []
    for cls in sorted(groups, key=lambda c: (-area[c], c)):
        g = groups[cls]
        count = sum(o["attrs"].get("count", 1) for o in g) if cls in ("forest",) else len(g)
        colours = Counter(o["attrs"]["colour"] for o in g if "colour" in o["attrs"])
        facts.append({"cls": cls, "aspect": "count", "count": count, "where": _where(g, size, kind)})
        if colours and cls not in ("sky",):
            facts.append({"cls": cls, "aspect": "colour", "colour": colours.most_common(1)[0][0], "count": count})
        if cls in BUILDINGS:
            fl = [o["attrs"].get("floors", 1) for o in g]
            facts.append({"cls": cls, "aspect": "height", "floors": int(np.median(fl)), "count": count})
        if cls == "sky":
            facts.append({"cls": cls, "aspect": "colour", "colour": g[0]["attrs"].get("colour", "clear"), "count": 1})
        if cls not in LINEAR:
            share = g[0]["attrs"]["coverage"] if cls == "water" else min(1.0, area[cls] / size ** 2)
            facts.append({"cls": cls, "aspect": "size", "share": share, "count": count})
    top = [c for c in sorted(groups, key=lambda c: (-area[c], c)) if c not in LINEAR][:6]
    for i, a in enumerate(top):  # adjacency of the most salient object groups (bboxes within 2 px)
        for b in top[i + 1:]:
            if any(_near(p["bbox"], q["bbox"]) for p in groups[a][:30] for q in groups[b][:30]):
                facts.append({"cls": a, "aspect": "relation", "other": b, "count": len(groups[a])})
    return facts


def _near(p: list, q: list, gap: int = 2) -> bool:
    return p[0] - gap <= q[2] and q[0] - gap <= p[2] and p[1] - gap <= q[3] and q[1] - gap <= p[3]


def _sentence(f: dict, style: str, pref: int, rng: np.random.Generator, short: bool, count: int | None = None) -> str:
    """Render one fact (or a falsified one) as a sentence in a captioner's style."""
    cls = f["cls"]
    n = f["count"] if count is None else count
    plural = n != 1
    noun = _noun(cls, plural and cls not in MASS, pref)
    if f["aspect"] == "count":
        where = f.get("where", "in the image")
        if cls in MASS:
            art = "an" if noun[0] in "aeiou" else "a"
            body = {"plain": f"There is {art} {noun} {where}.",
                    "descriptive": f"One can clearly make out {art} {noun} stretching {where}, adding texture to the scene.",
                    "enumerative": f"- {noun.capitalize()}: present, {where}.",
                    "terse": f"{art.capitalize()} {noun} {where}."}[style]
        else:
            q = _quantity(n)
            body = {"plain": f"There {'are' if plural else 'is'} {q} {noun} {where}.",
                    "descriptive": f"The view includes {q} {noun}, which can be seen {where}.",
                    "enumerative": f"- {noun.capitalize()}: {q}, {where}.",
                    "terse": f"{q.capitalize()} {noun} {where}."}[style]
    elif f["aspect"] == "colour":
        col = f["colour"]
        body = {"plain": f"The {noun} {'are' if plural and cls not in MASS else 'is'} mostly {col}.",
                "descriptive": f"The {noun} {'display' if plural and cls not in MASS else 'displays'} a predominantly {col} tone "
                               "that stands out against the surroundings.",
                "enumerative": f"- Colour of {noun}: {col}.",
                "terse": f"{col.capitalize()} {noun}."}[style]
    elif f["aspect"] == "size":
        share = f["share"]
        amount = ("most of" if share > 0.5 else "about a quarter of" if share > 0.2 else "a small part of")
        many = plural and cls not in MASS
        body = {"plain": f"The {noun} {'cover' if many else 'covers'} {amount} the image.",
                "descriptive": f"Taken together, the {noun} {'occupy' if many else 'occupies'} {amount} the frame, "
                               "giving it visual weight.",
                "enumerative": f"- Extent of {noun}: {amount} the image.",
                "terse": f"{noun.capitalize()}: {amount} the image."}[style]
    elif f["aspect"] == "relation":
        other = _noun(f["other"], f["other"] not in MASS, pref)
        body = {"plain": f"The {noun} {'are' if plural and cls not in MASS else 'is'} next to the {other}.",
                "descriptive": f"The {noun} sit right beside the {other}, forming a close spatial pairing.",
                "enumerative": f"- Adjacency: {noun} next to {other}.",
                "terse": f"{noun.capitalize()} beside {other}."}[style]
    else:  # height
        fl = f["floors"]
        body = {"plain": f"The {noun} {'are' if plural else 'is'} about {fl} {'floors' if fl != 1 else 'floor'} tall.",
                "descriptive": f"The {noun} rise to roughly {fl} storeys, shaping the skyline of this part of town.",
                "enumerative": f"- Height of {noun}: about {fl} floors.",
                "terse": f"{noun.capitalize()}, ~{fl} floors."}[style]
    if short:  # UrbanCLIP-style sentences are about 18 words: add a connective prefix
        prefix = ["In this satellite image,", "Looking at the region from above,", "From this aerial perspective,",
                  "In the area covered by this tile,"][int(rng.integers(0, 4))]
        body = body.lstrip("- ")
        body = f"{prefix} {body[0].lower()}{body[1:]}"
    return body


def _hallucination(cls: str, style: str, pref: int, rng: np.random.Generator, kind: str, short: bool) -> str:
    n = int(rng.integers(1, 5))
    where = ["in the upper part of the image", "near the centre", "at the edge of the scene", "on the left side",
             "on the right side"][int(rng.integers(0, 5))]
    f = {"cls": cls, "aspect": "count", "count": n, "where": where}
    return _sentence(f, style, pref, rng, short)


def caption_scene(objects: list[dict], kind: str, size: int, captioner: CaptionerProfile, style: str,
                  params: GeneratorParams, seed: int, _cache: dict | None = None) -> dict:
    """Caption one image from its scene description only.

    Args:
        objects: the scene's objects (``cls``, ``bbox``, ``attrs``), as the renderer recorded them.
        kind: ``"satellite"`` or ``"street"``.
        size: image side in pixels.
        captioner: the simulated MLLM.
        style: ``"short"`` (UrbanCLIP: a few ~18-word sentences) or ``"long"`` (UrbanLN: 100–250 words).
        params: generator parameters (``rho``, caption lengths).
        seed: city seed.
        _cache: optional dict reused across captioners of the same scene (hash and facts).

    Returns:
        ``{"text", "statements": [{"text", "true", "kind", "object"}], "omissions": int}``, where
        ``omissions`` counts true facts dropped by the error model (blind spots), not facts left out
        of a short caption for length, and ``object`` is the scene class a statement is about
        (``None`` for filler).
    """
    if style not in ("short", "long"):
        raise ValueError(f"caption style must be 'short' or 'long', got {style!r}")
    _cache = {} if _cache is None else _cache
    if "hash" not in _cache:
        _cache["hash"] = scene_hash(objects, kind, size)
        _cache["facts"] = _facts(objects, kind, size)
    h = _cache["hash"]
    shared = seeded_rng(seed, h, style, "shared")
    own = seeded_rng(seed, h, style, captioner.name)
    rho = params.rho
    universe = UNIVERSE[kind]
    z_shared = dict(zip(universe, shared.standard_normal(len(universe)), strict=True))
    z_shared_h = dict(zip(universe, shared.standard_normal(len(universe)), strict=True))
    pref = sum(map(ord, captioner.name))  # captioner's preferred synonyms
    cstyle = captioner.style
    facts = _cache["facts"]
    present = {o["cls"] for o in objects}

    def mixed(z_s):
        return np.sqrt(rho) * z_s + np.sqrt(1 - rho) * own.standard_normal()

    statements, omissions = [], 0
    for f in facts:  # omission draw is shared per object class (a blind spot hides a whole object)
        if _phi(mixed(z_shared[f["cls"]])) < captioner.omission_rate:
            omissions += 1
            continue
        if f["aspect"] == "count" and f["cls"] not in MASS and own.random() < captioner.wrong_quantity_rate:
            wrong = f["count"]
            for _ in range(20):
                wrong = max(1, int(round(f["count"] * own.choice([0.3, 0.5, 2.0, 3.0]))) + int(own.integers(-1, 2)))
                if _quantity(wrong) != _quantity(f["count"]):
                    break
            if _quantity(wrong) != _quantity(f["count"]):
                statements.append({"text": _sentence(f, cstyle, pref, own, style == "short", count=wrong), "true": False,
                                   "kind": "wrong_quantity", "object": f["cls"]})
                continue
        statements.append({"text": _sentence(f, cstyle, pref, own, style == "short"), "true": True, "kind": "fact",
                           "object": f["cls"]})
    absent = [c for c in universe if c not in present]
    n_h = int(own.poisson(captioner.hallucination_mean * (0.4 if style == "short" else 1.0)))
    ranked = sorted(absent, key=lambda c: -mixed(z_shared_h[c]))  # shared blind spots favour the same objects
    halluc = [{"text": _hallucination(c, cstyle, pref, own, kind, style == "short"), "true": False,
               "kind": "hallucination", "object": c} for c in ranked[:n_h]]
    for s in halluc:  # inserted at random positions, never first
        statements.insert(int(own.integers(min(1, len(statements)), len(statements) + 1)), s)
    fillers = FILLER[cstyle]

    unused = list(own.permutation(len(fillers)))

    def filler():  # without repeats until the captioner's pool is exhausted
        i = unused.pop() if unused else int(own.integers(0, len(fillers)))
        return {"text": fillers[i], "true": True, "kind": "filler", "object": None}

    if style == "short":
        lo, hi = params.short_sentences
        k = int(own.integers(lo, hi + 1))
        body = [s for s in statements if s["kind"] != "filler"][:k]
        while len(body) < lo:
            body.append(filler())
        statements = body
    else:
        intro = {"text": f"{KIND_WORD[kind][cstyle]} the following scene.", "true": True, "kind": "filler",
                 "object": None}
        for _ in range(int(own.poisson(captioner.filler_mean))):
            statements.insert(int(own.integers(0, len(statements) + 1)), filler())
        statements.insert(0, intro)
        lo, hi = params.long_words
        target = int(np.clip(own.integers(lo, hi + 1) * captioner.verbosity, 100, 250))
        words = sum(len(s["text"].split()) for s in statements)
        guard = 0
        while words < max(target, 100) and guard < 200:  # verbose models pad with generic talk
            s = filler()
            statements.append(s)
            words += len(s["text"].split())
            guard += 1
        while words > 250 and len(statements) > 1:
            words -= len(statements.pop()["text"].split())
        if words < 100:  # a cut may undershoot: top up with the shortest filler
            short_f = min(fillers, key=lambda t: len(t.split()))
            while words < 100:
                statements.append({"text": short_f, "true": True, "kind": "filler", "object": None})
                words += len(short_f.split())
    text = " ".join(s["text"] for s in statements)
    return {"text": text, "statements": statements, "omissions": omissions}


def caption_scenes(scenes: list[dict], params: GeneratorParams, seed: int, progress: bool = True) -> pd.DataFrame:
    """Caption every scene with every captioner.

    Short (UrbanCLIP-style) captions for satellite tiles; long (UrbanLN-style) captions for satellite
    and street-view images. Reads only the scene descriptions.

    Returns:
        One row per caption: region_id, image, source, style, text, statements, omissions.
    """
    rows = []
    for sc in tqdm(scenes, desc="captions", disable=not progress, leave=False):
        styles = ("short", "long") if sc["kind"] == "satellite" else ("long",)
        cache: dict = {}
        for cap in params.captioners:
            for style in styles:
                c = caption_scene(sc["objects"], sc["kind"], sc["size"], cap, style, params, seed, cache)
                rows.append({"region_id": sc["region_id"], "image": sc["image"], "source": cap.name, "style": style,
                             "text": c["text"], "statements": c["statements"], "omissions": c["omissions"]})
    return pd.DataFrame(rows, columns=["region_id", "image", "source", "style", "text", "statements", "omissions"])
