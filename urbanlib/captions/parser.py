"""Scene-graph parsing of captions into objects, attributes and relations.

Two parsers share one output type, :class:`SceneGraph`:

- :class:`FactualParser` runs the FACTUAL scene-graph parser (Li et al. 2023): a flan-t5 checkpoint such as
  ``lizhuang144/flan-t5-base-VG-factual-sg`` through transformers' ``T5ForConditionalGeneration``. It writes
  ``( subject , relation , object ) , ( subject , is , attribute )``; :func:`parse_factual_output` reads that
  text. Loading a checkpoint is opt-in (needs hub weights or a local copy).
- :class:`RuleParser` is a deterministic **rule-based fallback** over a closed urban vocabulary: nouns from a
  lexicon of urban objects, adjectives and quantities as attributes, prepositions as relations. It is not the
  paper's parser; every graph it produces carries ``source="rule-based fallback"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data.sentences import split_sentences

RULE_LABEL = "rule-based fallback"
FACTUAL_LABEL = "FACTUAL scene-graph parser"
FACTUAL_PROMPT = "Generate Scene Graph: "  # the prefix the FACTUAL checkpoints were trained with

# objects that describe the picture rather than the place (CAPTURE drops such words too)
STOP_OBJECTS = frozenset({
    "image", "picture", "photo", "photograph", "view", "scene", "frame", "composition", "shot", "snapshot",
    "aerial view", "satellite image", "overview", "perspective", "detail", "details", "element", "elements",
    "feature", "features", "impression", "sense", "rhythm", "tapestry", "sight", "thing", "things", "part", "side",
    "type", "category", "note", "context", "content", "layout", "pattern", "patterns",
})


@dataclass
class SceneGraph:
    """Objects, attributes and relations of one caption.

    Attributes:
        objects: unique object phrases (lemmatised heads such as ``"parking lot"``).
        attributes: unique ``(object, attribute)`` pairs; quantities are attributes (``("car", "three")``).
        relations: unique ``(subject, relation, object)`` triples.
        source: which parser made it (``"FACTUAL scene-graph parser"``, ``"rule-based fallback"``, ``"injected"``).
    """

    objects: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str]] = field(default_factory=list)
    relations: list[tuple[str, str, str]] = field(default_factory=list)
    source: str = "injected"

    @classmethod
    def from_lists(cls, objects: Iterable[str] = (), attributes: Iterable[Sequence[str]] = (),
                   relations: Iterable[Sequence[str]] = (), source: str = "injected") -> SceneGraph:
        """Build a graph from hand-written lists (deduplicated, lower-cased, order kept)."""
        g = cls(source=source)
        for o in objects:
            g.add_object(o)
        for pair in attributes:
            if len(pair) != 2:
                raise ValueError(f"attribute {pair!r}: expected (object, attribute)")
            g.add_attribute(*pair)
        for triple in relations:
            if len(triple) != 3:
                raise ValueError(f"relation {triple!r}: expected (subject, relation, object)")
            g.add_relation(*triple)
        return g

    def add_object(self, obj: str) -> None:
        """Add an object phrase once."""
        obj = _clean(obj)
        if obj and obj not in self.objects:
            self.objects.append(obj)

    def add_attribute(self, obj: str, attr: str) -> None:
        """Add an (object, attribute) pair once; the object is added too."""
        obj, attr = _clean(obj), _clean(attr)
        if not obj or not attr:
            return
        self.add_object(obj)
        if (obj, attr) not in self.attributes:
            self.attributes.append((obj, attr))

    def add_relation(self, subj: str, rel: str, obj: str) -> None:
        """Add a (subject, relation, object) triple once; both objects are added too."""
        subj, rel, obj = _clean(subj), _clean(rel), _clean(obj)
        if not subj or not rel or not obj:
            return
        self.add_object(subj)
        self.add_object(obj)
        if (subj, rel, obj) not in self.relations:
            self.relations.append((subj, rel, obj))

    def merge(self, other: SceneGraph) -> SceneGraph:
        """Union of two graphs (used to merge the sentences of one caption)."""
        out = SceneGraph(list(self.objects), list(self.attributes), list(self.relations), self.source)
        for o in other.objects:
            out.add_object(o)
        for a in other.attributes:
            out.add_attribute(*a)
        for r in other.relations:
            out.add_relation(*r)
        return out

    def without_stop_objects(self, stop: Iterable[str] = STOP_OBJECTS) -> SceneGraph:
        """Drop objects that name the picture, not the place, with their attributes and relations."""
        stop = set(stop)
        return SceneGraph([o for o in self.objects if o not in stop],
                          [a for a in self.attributes if a[0] not in stop],
                          [r for r in self.relations if r[0] not in stop and r[2] not in stop], self.source)

    def phrases(self) -> list[str]:
        """Visual-element phrases for detection: ``"red car"`` for attributes, bare objects otherwise."""
        out, described = [], set()
        for obj, attr in self.attributes:
            if not _is_quantity(attr):
                out.append(f"{attr} {obj}")
                described.add(obj)
        out += [o for o in self.objects if o not in described]
        return list(dict.fromkeys(out))

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"objects": list(self.objects), "attributes": [list(a) for a in self.attributes],
                "relations": [list(r) for r in self.relations], "source": self.source}


def _clean(s: str) -> str:
    return " ".join(str(s).lower().strip().strip(".,;:!?\"'").split())


# ---------------------------------------------------------------------------------------------
# FACTUAL output text -> SceneGraph
# ---------------------------------------------------------------------------------------------

def parse_factual_output(text: str, source: str = FACTUAL_LABEL) -> SceneGraph:
    """Read FACTUAL's linearised graph ``( s , r , o ) , ( s , is , attr )`` into a :class:`SceneGraph`.

    Robust to what generation produces in practice: missing spaces, a repeated prompt prefix, duplicate or
    malformed tuples, a truncated last tuple (dropped), FACTUAL's ``v:`` / ``pv:`` verb markers and ``:N``
    entity indices (removed). ``( x , is , 3 )`` is a quantity, kept as attribute ``"3"``; a lone ``( x )`` is
    an object.

    Args:
        text: generated text of one sentence or caption.
        source: label stored in the graph.

    Returns:
        The graph (empty when nothing parses).
    """
    g = SceneGraph(source=source)
    text = text.replace(FACTUAL_PROMPT.strip(), " ")
    text = re.sub(r"\bp?v:", "", text)
    text = re.sub(r":\d+\b", "", text)
    for inner in re.findall(r"\(([^()]*)\)", text):  # only closed tuples: a truncated tail has no ')'
        parts = [_clean(p) for p in inner.split(",")]
        parts = [p for p in parts if p]
        if len(parts) == 1:
            g.add_object(parts[0])
        elif len(parts) == 3:
            subj, rel, obj = parts
            if rel in ("is", "are"):
                g.add_attribute(subj, obj)
            else:
                g.add_relation(subj, rel, obj)
        # anything else (2 or 4+ fields) is malformed and skipped
    return g


# ---------------------------------------------------------------------------------------------
# FACTUAL parser (flan-t5 via transformers)
# ---------------------------------------------------------------------------------------------

class FactualParser:
    """The FACTUAL scene-graph parser: a T5 seq2seq model prompted with ``"Generate Scene Graph: <sentence>"``.

    Each caption is split into sentences, each sentence parsed (batched beam search), and the sentence
    graphs merged, as CAPTURE does. Object and attribute words are lemmatised with :func:`singular`.

    Args:
        model_id_or_path: hub id (e.g. ``"lizhuang144/flan-t5-base-VG-factual-sg"``) or local folder; loading it is
            the opt-in step that needs weights. Leave ``None`` and pass ``model`` and ``tokenizer`` instead to
            use an in-memory model (tests use a tiny random-init ``T5ForConditionalGeneration``).
        model: a ``T5ForConditionalGeneration`` (or any transformers seq2seq model).
        tokenizer: its tokenizer.
        device: torch device string.
        beam_size: beams for generation (CAPTURE uses 5).
        max_input_len: token limit of a sentence.
        max_output_len: token limit of a graph.
        batch_size: sentences per generation batch.
        local_files_only: forwarded to ``from_pretrained`` (default True: never download at run time).
    """

    label = FACTUAL_LABEL

    def __init__(self, model_id_or_path: str | Path | None = None, model=None, tokenizer=None, device: str = "cpu",
                 beam_size: int = 5, max_input_len: int = 256, max_output_len: int = 128, batch_size: int = 16,
                 local_files_only: bool = True):
        if model is None or tokenizer is None:
            if model_id_or_path is None:
                raise ValueError("FactualParser needs model_id_or_path, or both model= and tokenizer=")
            from transformers import AutoTokenizer, T5ForConditionalGeneration

            try:
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(model_id_or_path),
                                                                       local_files_only=local_files_only)
                model = model or T5ForConditionalGeneration.from_pretrained(str(model_id_or_path),
                                                                            local_files_only=local_files_only)
            except (OSError, ValueError) as e:  # missing folder / invalid hub id
                raise OSError(f"FactualParser: cannot load {model_id_or_path!r} (local_files_only="
                              f"{local_files_only}); download the checkpoint first or use RuleParser "
                              f"(the rule-based fallback). Cause: {e}") from e
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.beam_size = beam_size
        self.max_input_len = max_input_len
        self.max_output_len = max_output_len
        self.batch_size = batch_size

    def generate(self, sentences: Sequence[str]) -> list[str]:
        """Raw generated graph text for each sentence (batched, deterministic beam search)."""
        import torch

        out: list[str] = []
        start = getattr(self.model.config, "decoder_start_token_id", None)
        if start is None:
            start = self.tokenizer.pad_token_id
        for i in range(0, len(sentences), self.batch_size):
            batch = [FACTUAL_PROMPT + s.strip() for s in sentences[i:i + self.batch_size]]
            enc = self.tokenizer(batch, max_length=self.max_input_len, truncation=True, padding="longest",
                                 return_tensors="pt")
            with torch.no_grad():
                ids = self.model.generate(input_ids=enc["input_ids"].to(self.device),
                                          attention_mask=enc["attention_mask"].to(self.device),
                                          decoder_start_token_id=start, num_beams=self.beam_size,
                                          max_length=self.max_output_len, early_stopping=self.beam_size > 1,
                                          do_sample=False)
            out += self.tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        return out

    def parse(self, captions: Sequence[str]) -> list[SceneGraph]:
        """One merged, lemmatised :class:`SceneGraph` per caption."""
        sentences, owner = [], []
        for k, cap in enumerate(captions):
            for s in split_sentences(cap):
                sentences.append(s)
                owner.append(k)
        graphs = [SceneGraph(source=self.label) for _ in captions]
        for k, text in zip(owner, self.generate(sentences), strict=True):
            graphs[k] = graphs[k].merge(lemmatise(parse_factual_output(text, self.label)))
        return graphs


# ---------------------------------------------------------------------------------------------
# Lemmatisation (no tagger data needed)
# ---------------------------------------------------------------------------------------------

_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "feet": "foot",
              "geese": "goose", "lorries": "lorry", "skies": "sky", "bodies": "body", "patches": "patch",
              "buses": "bus", "storeys": "storey", "stories": "story", "leaves": "leaf", "shelves": "shelf"}
_INVARIANT = {"grass", "glass", "bus", "gas", "campus", "terrace", "series", "species", "news", "plus", "lens",
              "canvas", "mass", "access", "status", "overpass", "underpass", "bypass", "trellis", "chassis",
              "surroundings", "ss"}


def singular(word: str) -> str:
    """Singular of an English noun by rule (``"houses"->"house"``, ``"lorries"->"lorry"``); deterministic."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if w in _INVARIANT or len(w) <= 3 or w.endswith(("ss", "us", "is", "ous")):
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "zes", "sses")):
        return w[:-2]
    if w.endswith("s"):
        return w[:-1]
    return w


def lemmatise(g: SceneGraph) -> SceneGraph:
    """Singularise the head (last word) of every object phrase of a graph."""
    def head(p: str) -> str:
        words = p.split()
        return " ".join(words[:-1] + [singular(words[-1])]) if words else p

    return SceneGraph.from_lists([head(o) for o in g.objects], [(head(o), a) for o, a in g.attributes],
                                 [(head(s), r, head(o)) for s, r, o in g.relations], source=g.source)


# ---------------------------------------------------------------------------------------------
# Rule-based fallback on a closed urban vocabulary
# ---------------------------------------------------------------------------------------------

URBAN_NOUNS = frozenset({
    # buildings and built form
    "building", "high-rise", "high-rise building", "high-rise tower", "tower", "skyscraper", "apartment",
    "apartment block", "tall apartment block", "residential tower", "residential building", "house", "home",
    "low-rise home", "small residential building", "villa", "office building", "commercial building", "office",
    "warehouse", "industrial shed", "factory", "factory building", "industrial building", "school",
    "school building", "campus building", "hospital", "church", "temple", "mall", "shopping mall", "shop", "store",
    "shopfront", "storefront", "shop sign", "sign", "billboard", "roof", "rooftop", "facade", "high-rise facade",
    "house front", "low building", "tall building", "warehouse wall", "wall", "fence", "gate", "stadium",
    "construction site", "crane", "solar panel", "solar panel array", "block", "residential area",
    "industrial area", "commercial area", "neighbourhood", "neighborhood", "downtown", "suburb",
    # transport
    "road", "street", "local road", "major road", "main road", "highway", "avenue", "arterial road", "lane",
    "lane marking", "intersection", "crossroad", "roundabout", "bridge", "overpass", "railway", "railway line",
    "rail", "train", "station", "parking lot", "car park", "parking", "sidewalk", "pavement", "footpath",
    "walking path", "path", "crosswalk", "car", "vehicle", "bus", "truck", "lorry", "bicycle", "bike",
    "motorcycle", "boat", "ship", "port", "traffic light", "street lamp", "lamp", "pole",
    # open space and nature
    "park", "garden", "lawn", "grass", "grassy area", "tree", "forest", "patch of forest", "wooded area",
    "woodland", "field", "crop field", "farm field", "farmland", "sports field", "playing field", "running track",
    "athletics track", "tennis court", "court", "swimming pool", "pool", "playground", "square", "plaza",
    "water", "body of water", "river", "waterway", "lake", "pond", "canal", "sea", "coast", "beach", "hill",
    "mountain", "sky", "cloud", "soil", "bare soil", "patch of bare soil", "empty lot", "vegetation",
    "pedestrian", "person", "people", "crowd",
})
COLOURS = frozenset({"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey",
                     "gray", "silver", "beige", "dark", "light", "bright", "pale", "overcast", "clear", "hazy"})
ADJECTIVES = COLOURS | frozenset({
    "tall", "high", "low", "short", "small", "large", "big", "huge", "wide", "narrow", "long", "dense", "sparse",
    "busy", "quiet", "empty", "crowded", "modern", "old", "new", "historic", "residential", "commercial",
    "industrial", "green", "paved", "unpaved", "multi-storey", "multi-lane", "flat", "square", "rectangular",
    "circular", "curved", "straight", "parked", "moving", "lush", "leafy", "open", "vacant", "urban", "rural",
})
QUANTITIES = frozenset({"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "several",
                        "many", "few", "numerous", "dozens of", "more than ten", "some", "a few", "multiple",
                        "a couple of", "hundreds of", "a single", "single", "various", "lots of"})
PREPOSITIONS = ("in front of", "next to", "adjacent to", "close to", "on top of", "surrounded by", "alongside",
                "along", "beside", "near", "behind", "between", "across", "around", "over", "under",
                "above", "below", "beneath", "through", "inside", "within", "outside", "among", "opposite",
                "bordering", "facing", "lining", "on", "in", "at", "by", "with")


def _is_quantity(attr: str) -> bool:
    return attr in QUANTITIES or attr.isdigit()


class RuleParser:
    """Rule-based fallback parser (not FACTUAL): closed urban vocabulary, deterministic, no model or data files.

    Per sentence: greedy longest match of :data:`URBAN_NOUNS` phrases (plurals folded); quantity and adjective
    words directly before a noun, or after ``is/are (mostly|predominantly)`` following it, become its
    attributes; the first preposition phrase between two consecutive nouns becomes their relation. Words
    outside the vocabulary are ignored, so it misses objects FACTUAL would find.

    Args:
        nouns: the object vocabulary (multi-word phrases allowed).
        adjectives: attribute words.
        quantities: quantity words and phrases.
        prepositions: relation phrases, longest first.
    """

    label = RULE_LABEL

    def __init__(self, nouns: Iterable[str] = URBAN_NOUNS, adjectives: Iterable[str] = ADJECTIVES,
                 quantities: Iterable[str] = QUANTITIES, prepositions: Sequence[str] = PREPOSITIONS):
        self.nouns = {tuple(n.split()) for n in nouns}
        self.max_noun = max(len(n) for n in self.nouns)
        self.adjectives = set(adjectives)
        self.quantities = {tuple(q.split()) for q in quantities}
        self.prepositions = sorted((tuple(p.split()) for p in prepositions), key=len, reverse=True)

    def _noun_at(self, words: list[str], i: int) -> tuple[int, str] | None:
        for n in range(min(self.max_noun, len(words) - i), 0, -1):
            span = words[i:i + n]
            folded = span[:-1] + [singular(span[-1])]
            for cand in (tuple(span), tuple(folded)):
                if cand in self.nouns:
                    return n, " ".join(folded)
        return None

    def _quantity_ending_at(self, words: list[str], j: int) -> str | None:
        for q in sorted(self.quantities, key=len, reverse=True):
            if j - len(q) + 1 >= 0 and tuple(words[j - len(q) + 1:j + 1]) == q:
                return " ".join(q)
        return None

    def parse_sentence(self, sentence: str) -> SceneGraph:
        """Graph of one sentence."""
        g = SceneGraph(source=self.label)
        words = re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", sentence.lower())
        nouns: list[tuple[int, int, str]] = []  # (start, end, lemma)
        i = 0
        while i < len(words):
            hit = self._noun_at(words, i)
            if hit:
                nouns.append((i, i + hit[0], hit[1]))
                i += hit[0]
            else:
                i += 1
        for k, (start, end, lemma) in enumerate(nouns):
            g.add_object(lemma)
            j = start - 1  # pre-modifiers: adjectives and one quantity, right before the noun
            while j >= 0 and words[j] in self.adjectives:
                g.add_attribute(lemma, words[j])
                j -= 1
            q = self._quantity_ending_at(words, j) if j >= 0 else None
            if q:
                g.add_attribute(lemma, q)
            elif j >= 0 and words[j].isdigit():
                g.add_attribute(lemma, words[j])
            nxt = nouns[k + 1][0] if k + 1 < len(nouns) else len(words)
            gap = words[end:nxt]
            if gap[:1] and gap[0] in ("is", "are"):  # predicate adjectives: "the roofs are mostly red"
                for w in gap[1:]:
                    if w in self.adjectives:
                        g.add_attribute(lemma, w)
                    elif w not in ("mostly", "predominantly", "largely", "very", "quite", "rather", "and", "a"):
                        break
            if k + 1 < len(nouns):
                for p in self.prepositions:
                    hit = next((m for m in range(len(gap) - len(p) + 1) if tuple(gap[m:m + len(p)]) == p), None)
                    if hit is not None:
                        g.add_relation(lemma, " ".join(p), nouns[k + 1][2])
                        break
        return g

    def parse(self, captions: Sequence[str]) -> list[SceneGraph]:
        """One merged :class:`SceneGraph` per caption (sentence graphs are memoised: captions repeat them)."""
        cache = self.__dict__.setdefault("_sentence_cache", {})
        out = []
        for cap in captions:
            g = SceneGraph(source=self.label)
            for s in split_sentences(cap):
                if s not in cache:
                    if len(cache) > 200_000:
                        cache.clear()
                    cache[s] = self.parse_sentence(s)
                g = g.merge(cache[s])  # merge copies, so the cached graph is never mutated
            out.append(g)
        return out
