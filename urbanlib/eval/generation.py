"""How good are generated captions: repetition, diversity and agreement with the region's captions.

Metrics, all on lower-cased word tokens (:func:`words`):

* **repeated n-gram rate** of one caption (Welleck et al. 2019, "seq-rep-n"): the share of its
  n-grams that repeat an n-gram seen earlier in the same caption, ``1 - |unique n-grams| / |n-grams|``;
  averaged over captions. ``"the image . the image . the image"`` has a 2-gram rate of 4/7.
* **distinct-n** of a set of captions (Li et al. 2016): distinct n-grams / all n-grams, pooled over
  the set (n-grams never span two captions). Low when the decoder says the same thing everywhere.
* **BLEU-4** (Papineni et al. 2002), corpus level: clipped n-gram precisions pooled over the set,
  geometric mean over n = 1..4, brevity penalty against the closest reference length (ties: the
  shorter, as nltk does). Each generated caption is scored against all captions of its region.
* **CAPTURE** (:mod:`urbanlib.captions.capture`): scene-graph agreement, averaged over the region's
  captions and then over regions.

:func:`generation_report` decodes held-out tiles several ways and puts the metrics in one table.
Every row is scored against the same references: each region's captions except its first, which is
held out. SynthCity's captions are templated, so BLEU and CAPTURE are far from 0 even for a caption
of the wrong tile; each is therefore also computed against the references of *another* tile (a
fixed random derangement), which keeps the caption's style and wording and removes only what it
says about its own tile. The gap between the two is what the caption knows about the tile. The row
:data:`OWN` (the tile's held-out first caption, written by another captioner) shows that gap for a
caption that knows the tile.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from urbanlib.models.generate import generate

_WORD = re.compile(r"[^\W\d_]+|\d|[^\w\s]|_")  # words, single digits, single punctuation marks

OWN = "reference: the tile's held-out caption"  # row label of the held-out human-style caption
DEFAULT_DECODERS: dict[str, dict] = {  # label -> keyword arguments of urbanlib.models.generate.generate
    "greedy": {},
    "beam 3": {"beam_size": 3},
}


def words(text: str) -> list[str]:
    """Lower-cased tokens: words, single digits and single punctuation marks.

    Digits are split one by one and punctuation is split off because open_clip's tokenizer does the
    same, so a decoded caption (``"1 0 low - rise homes ."``) and a reference (``"10 low-rise homes."``)
    tokenize alike.
    """
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of a token list, in order."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(tokens: Sequence[str], n: int = 4) -> float:
    """Share of a caption's n-grams that repeat an earlier one: ``1 - unique / total`` (0 if it has none)."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(captions: Sequence[Sequence[str]], n: int) -> float:
    """Distinct n-grams / all n-grams over a set of tokenized captions (NaN if there are none)."""
    grams = [g for c in captions for g in ngrams(c, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def corpus_bleu(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]],
                max_n: int = 4) -> float:
    """Corpus BLEU with uniform weights over n = 1..``max_n`` and no smoothing.

    Args:
        candidates: one tokenized caption per item.
        references: per item, a list of tokenized reference captions (at least one).
        max_n: highest n-gram order (4 = BLEU-4).

    Returns:
        BLEU in [0, 1]; 0 when some order has no match.
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    match, total = np.zeros(max_n), np.zeros(max_n)
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        if not refs:
            raise ValueError("every candidate needs at least one reference")
        for n in range(1, max_n + 1):
            counts = Counter(ngrams(cand, n))
            most = Counter()
            for r in refs:
                most |= Counter(ngrams(r, n))  # elementwise max over references
            match[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
            total[n - 1] += max(0, len(cand) - n + 1)
        cand_len += len(cand)
        ref_len += min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    if cand_len == 0 or (match == 0).any():
        return 0.0
    log_p = np.mean(np.log(match / total))
    brevity = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return float(brevity * math.exp(log_p))


def mean_capture(candidates: Sequence[str], references: Sequence[Sequence[str]], metric) -> float:
    """CAPTURE of each caption against each of its references, averaged per item, then over items.

    Args:
        candidates: generated captions (text).
        references: per item, its reference captions (text).
        metric: a :class:`~urbanlib.captions.capture.Capture` (anything with ``score(cand, ref) -> dict``).
    """
    per_item = [np.mean([metric.score(c, r)["capture"] for r in refs])
                for c, refs in zip(candidates, references, strict=True)]
    return float(np.mean(per_item)) if per_item else float("nan")


def generation_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]], capture=None,
                       rep_n: int = 4, other_references: Sequence[Sequence[str]] | None = None) -> dict[str, float]:
    """The generation-quality metrics of a set of captions.

    Args:
        candidates: one caption per region (text).
        references: per region, its reference captions (text).
        capture: a :class:`~urbanlib.captions.capture.Capture` to add CAPTURE, or ``None`` to skip it.
        rep_n: n of the repeated n-gram rate.
        other_references: per region, the references of another region (the mismatched control);
            adds ``BLEU-4, other tile`` (and ``CAPTURE, other tile``).

    Returns:
        ``repeated {rep_n}-gram rate``, ``distinct-1``, ``distinct-2``, ``BLEU-4``, (``CAPTURE``), the
        mismatched controls, ``words`` (mean length) and ``distinct captions`` (share of regions whose
        caption no other region got); rates in [0, 1].
    """
    cand = [words(c) for c in candidates]
    out = {f"repeated {rep_n}-gram rate": float(np.mean([repeated_ngram_rate(c, rep_n) for c in cand])),
           "distinct-1": distinct_n(cand, 1), "distinct-2": distinct_n(cand, 2)}
    for suffix, refs in (("", references), (", other tile", other_references)):
        if refs is None:
            continue
        out["BLEU-4" + suffix] = corpus_bleu(cand, [[words(r) for r in rs] for rs in refs])
        if capture is not None:
            out["CAPTURE" + suffix] = mean_capture(candidates, refs, capture)
    counts = Counter(candidates)
    out["words"] = float(np.mean([len(c) for c in cand]))
    out["distinct captions"] = float(np.mean([counts[c] == 1 for c in candidates]))
    return out


def generation_report(model, tensors, texts: Sequence[Sequence[str]], idx, decoders: dict[str, dict] | None = None,
                      max_len: int | None = None, capture=None, seed: int = 0) -> pd.DataFrame:
    """Generation quality on the regions ``idx`` (tiles pretraining never saw), one row per decoding setting.

    Args:
        model: a trained ``UrbanCLIP``.
        tensors: the city's :class:`~urbanlib.pipeline.tensors.RegionTensors`.
        texts: every region's captions (the training-style captions); all but the first of each region
            are the references (all of them for a region with a single caption).
        idx: regions to caption; those without a tile or a caption are skipped.
        decoders: label -> keyword arguments of :func:`~urbanlib.models.generate.generate`
            (default :data:`DEFAULT_DECODERS`: greedy and beam 3, no repetition control).
        max_len: most generated tokens (default: the decoder's context less <start> and <end>, so
            ``ended`` says whether the model ends its captions within the length it was trained on).
        capture: a :class:`~urbanlib.captions.capture.Capture` to add CAPTURE, or ``None``.
        seed: draws the derangement that pairs each tile with another tile's references.

    Returns:
        One row per decoder plus :data:`OWN` (the tile's held-out first caption, over the regions with
        at least two captions). Columns: the metrics of :func:`generation_metrics` with the
        other-tile controls, ``ended`` (share of captions the decoder ended with <end> before
        ``max_len``) and ``regions``.
    """
    idx = np.asarray([i for i in idx if tensors.satellite_mask[i] and texts[i]], dtype=int)
    if len(idx) < 2:
        raise ValueError(f"generation_report needs at least 2 regions with a tile and a caption, got {len(idx)}")
    refs = [list(texts[i][1:]) or list(texts[i]) for i in idx]  # the first caption is held out when there are more
    rng = np.random.default_rng(seed)
    other = [(j + int(rng.integers(1, len(idx)))) % len(idx) for j in range(len(idx))]  # never j itself
    other_refs = [refs[o] for o in other]
    images = tensors.satellite_tensor(idx)
    rows = {}
    for label, kwargs in (decoders or DEFAULT_DECODERS).items():
        caps = generate(model, images, max_len=max_len, **kwargs)
        rows[label] = {**generation_metrics([c.text for c in caps], refs, capture, other_references=other_refs),
                       "ended": float(np.mean([c.ended for c in caps])), "regions": len(idx)}
    multi = [j for j, i in enumerate(idx) if len(texts[i]) > 1]
    if multi:
        rows[OWN] = {**generation_metrics([texts[idx[j]][0] for j in multi], [refs[j] for j in multi], capture,
                                          other_references=[other_refs[j] for j in multi]),
                     "ended": float("nan"), "regions": len(multi)}
    return pd.DataFrame(rows).T


def describe_report(table: pd.DataFrame, decoder: str = "greedy", rep_n: int = 4) -> str:
    """A few sentences on a :func:`generation_report` table, with its numbers, for the page."""
    row, rep = table.loc[decoder], f"repeated {rep_n}-gram rate"
    text = (f"With {decoder} decoding on {int(row['regions'])} held-out tiles, {row[rep]:.0%} of a caption's "
            f"{rep_n}-grams repeat an earlier one, {row['ended']:.0%} of the captions end before the length "
            f"limit, {row['distinct captions']:.0%} are unique to their tile and distinct-2 is "
            f"{row['distinct-2']:.2f}")
    own = table.loc[OWN] if OWN in table.index else None
    text += "." if own is None else f" (a held-out caption of each tile: {own[rep]:.0%} and {own['distinct-2']:.2f})."
    for metric in ("BLEU-4", "CAPTURE"):
        if metric not in table.columns or f"{metric}, other tile" not in table.columns:
            continue
        gap = row[metric] - row[f"{metric}, other tile"]
        text += (f" {metric} is {row[metric]:.3f} against the tile's own captions and "
                 f"{row[f'{metric}, other tile']:.3f} against another tile's ({gap:+.3f}")
        if own is not None:
            text += f"; a held-out caption of the tile: {own[metric] - own[f'{metric}, other tile']:+.3f}"
        text += ")."
    if own is not None and row[rep] > 2 * own[rep] + 0.02:
        text += f" The {decoder} captions repeat n-grams far more often than the tiles' own captions do."
    if own is not None and "BLEU-4, other tile" in table.columns:
        gap, own_gap = (r["BLEU-4"] - r["BLEU-4, other tile"] for r in (row, own))
        if own_gap > 0 and gap < own_gap / 4:
            text += (" They say little about their own tile: their BLEU-4 gap is under a quarter of a real "
                     "caption's, so the decoder has not learned to describe the image.")
    return text
