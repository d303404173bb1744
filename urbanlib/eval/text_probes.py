"""Caption-only probes beside the MLP probe: TF-IDF and ridge baselines, scored like :func:`fit_probes`.

A caption-only probe reads nothing but a region's captions. Two representations are built here:
TF-IDF of the region's captions joined into one document (vocabulary and idf fitted on the train
regions only) and any dense feature block (MiniLM embeddings, :mod:`urbanlib.eval.text_features`).
:func:`ridge_probe` fits one ridge regression per indicator with its penalty chosen on the
validation regions, never the test ones, and scores the test regions in ln(y + 1) units, with the
same tidy metric rows as :func:`urbanlib.eval.probe.fit_probes`. Ridge is deterministic, so its
rows repeat one value across probe seeds (std 0); the seeds only vary the MLP heads.

:func:`side_scores` scores any (S, N, T) prediction array on one side of a split, so validation
R² of the MLP probe and of ridge are computed the same way; :func:`select_on_validation` picks, per
indicator, the representation with the best mean validation R² and reports its test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge

from urbanlib.data.splits import Split

from .metrics import METRICS, mae, r2, rmse

ALPHAS = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # ridge penalties tried on validation
TFIDF = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True, "stop_words": "english"}  # the baseline's settings


def region_documents(captions: pd.DataFrame, region_ids) -> list[str | None]:
    """One document per region: its caption texts joined by newlines (None for a region without captions).

    Args:
        captions: a captions table (``region_id``, ``text``).
        region_ids: region ids in the order of the features (``ds.regions["region_id"]``).
    """
    text = captions["text"].astype("string").str.strip()
    caps = captions[text.notna() & (text != "")]
    joined = caps.groupby(caps["region_id"].astype(str), sort=False)["text"].agg(lambda t: "\n".join(map(str, t)))
    return [joined.get(str(r)) for r in region_ids]


def tfidf_features(docs: list[str | None], train_idx, **options) -> tuple[sp.csr_matrix, np.ndarray, int]:
    """TF-IDF rows of region documents, the vocabulary and idf fitted on the train regions only.

    Args:
        docs: one document per region (None: no captions).
        train_idx: positions of the train regions.
        **options: :class:`sklearn.feature_extraction.text.TfidfVectorizer` options overriding :data:`TFIDF`.

    Returns:
        ``(X, has, vocabulary size)``: X (N, V) sparse, L2-normalised rows (zero rows for regions
        without a document); ``has`` (N,) bool, True where the region has a document.
    """
    has = np.array([d is not None for d in docs], dtype=bool)
    train = [docs[i] for i in np.asarray(train_idx, dtype=int) if has[i]]
    if not train:
        raise ValueError("no train region has a caption: TF-IDF has nothing to fit its vocabulary on")
    vec = TfidfVectorizer(**{**TFIDF, **options})
    vec.fit(train)
    x = vec.transform([d if d is not None else "" for d in docs]).tocsr()
    return x, has, len(vec.vocabulary_)


@dataclass
class LinearProbeResult:
    """What :func:`ridge_probe` measured (the ridge analogue of :class:`urbanlib.eval.probe.ProbeResult`).

    Attributes:
        metrics: tidy rows ``indicator, seed, metric, value, n_test`` on the test split (one copy per seed).
        predictions: (S, N, T) ln-scale predictions for every region with features (NaN otherwise);
            the S copies are identical (ridge has no seed).
        alphas: indicator -> the penalty chosen on the validation regions.
        val_r2: indicator -> validation R² at that penalty.
        seeds: the seeds the rows are labelled with.
        indicators: the T indicator names.
        split: the split used.
        extra: settings chosen on validation beside alpha (e.g. a block weight).
    """

    metrics: pd.DataFrame
    predictions: np.ndarray
    alphas: dict[str, float]
    val_r2: dict[str, float]
    seeds: list[int]
    indicators: list[str]
    split: Split
    extra: dict = field(default_factory=dict)


def _as_matrix(features, has: np.ndarray | None):
    if sp.issparse(features):
        x = features.tocsr()
        ok = np.ones(x.shape[0], dtype=bool) if has is None else np.asarray(has, dtype=bool)
        return x, ok
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {x.shape}")
    ok = np.isfinite(x).all(1) if has is None else np.asarray(has, dtype=bool) & np.isfinite(x).all(1)
    return x, ok


def _standardise(x, train_rows):
    """Dense blocks are standardised with train statistics (sparse TF-IDF rows are already L2-normalised)."""
    if sp.issparse(x):
        return x
    mu, sd = x[train_rows].mean(0), x[train_rows].std(0)
    sd[sd == 0] = 1.0
    return np.nan_to_num((x - mu) / sd)


def ridge_probe(features, targets, split: Split, seeds=(0,), indicators: list[str] | None = None,
                alphas=ALPHAS, has: np.ndarray | None = None) -> LinearProbeResult:
    """Ridge regression per indicator on caption features, the penalty chosen on validation R².

    Args:
        features: (N, F) dense (a NaN row: no features) or sparse (rows without features given by ``has``).
        targets: (N, T) ln(y + 1), NaN where unknown (excluded per indicator).
        split: train/val/test positions; every side is reduced to regions with features.
        seeds: labels of the metric rows (ridge is deterministic; one identical copy per seed).
        indicators: T names (default ``y0, y1, ...``).
        alphas: penalties tried; the one with the best validation R² is kept per indicator.
        has: (N,) bool, which rows have features (needed for sparse features without captions).

    Returns:
        A :class:`LinearProbeResult`.
    """
    x, ok = _as_matrix(features, has)
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if len(y) != x.shape[0]:
        raise ValueError(f"targets have {len(y)} rows, features {x.shape[0]}")
    names = list(indicators) if indicators is not None else [f"y{j}" for j in range(y.shape[1])]
    seeds = [int(s) for s in seeds]
    sides = {s: np.asarray(split[s], dtype=int) for s in ("train", "val", "test")}
    sides = {s: idx[ok[idx]] for s, idx in sides.items()}
    x = _standardise(x, sides["train"])
    pred = np.full((len(y), y.shape[1]), np.nan)
    chosen, val_r2 = {}, {}
    rows = np.flatnonzero(ok)
    for j, name in enumerate(names):
        tr, va = (idx[np.isfinite(y[idx, j])] for idx in (sides["train"], sides["val"]))
        if len(tr) < 2 or len(va) < 2:
            continue
        best = None
        for a in alphas:
            model = Ridge(alpha=float(a)).fit(x[tr], y[tr, j])
            score = r2(y[va, j], model.predict(x[va]))
            if best is None or score > best[0]:
                best = (score, float(a), model)
        val_r2[name], chosen[name] = float(best[0]), best[1]
        pred[rows, j] = best[2].predict(x[rows])
    predictions = np.repeat(pred[None], len(seeds), axis=0)
    metrics = side_scores(predictions, y, split, "test", seeds, names)
    return LinearProbeResult(metrics, predictions, chosen, val_r2, seeds, names, split)


def weighted_blocks(blocks, weights) -> sp.csr_matrix:
    """Concatenate feature blocks column-wise, each scaled by its weight (dense blocks standardised first).

    NaN rows of a dense block become zeros; the caller passes ``has`` to the probe for rows without captions.
    """
    out = []
    for b, w in zip(blocks, weights, strict=True):
        if sp.issparse(b):
            out.append(b.tocsr() * float(w))
        else:
            a = np.asarray(b, dtype=np.float64)
            ok = np.isfinite(a).all(1)
            mu, sd = a[ok].mean(0), a[ok].std(0)
            sd[sd == 0] = 1.0
            out.append(sp.csr_matrix(np.nan_to_num((a - mu) / sd) * (float(w) / np.sqrt(a.shape[1]))))
    return sp.hstack(out, format="csr")


def combined_ridge_probe(sparse_block, dense_block, targets, split: Split, seeds=(0,), indicators=None,
                         weights=(0.5, 1.0, 2.0, 4.0), alphas=ALPHAS, has=None) -> LinearProbeResult:
    """Ridge on TF-IDF ++ a dense block, the dense block's weight and the penalty chosen on validation.

    The dense block is standardised and divided by sqrt(its width), so weight 1 gives it about the
    norm of an L2-normalised TF-IDF row; the weight with the best mean validation R² over the
    indicators is kept (then each indicator's penalty, as in :func:`ridge_probe`).
    """
    best = None
    for w in weights:
        res = ridge_probe(weighted_blocks([sparse_block, dense_block], [1.0, w]), targets, split, seeds, indicators,
                          alphas, has)
        score = np.mean(list(res.val_r2.values())) if res.val_r2 else -np.inf
        if best is None or score > best[0]:
            best = (score, w, res)
    best[2].extra["dense_weight"] = best[1]
    return best[2]


def side_scores(predictions, targets, split: Split, side: str, seeds, indicators) -> pd.DataFrame:
    """R²/RMSE/MAE of (S, N, T) predictions on one side of a split, as tidy rows.

    Rows: ``indicator, seed, metric, value, n_test`` (``n_test`` counts the scored regions of that
    side: known target and a prediction).
    """
    pred = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    idx = np.asarray(split[side], dtype=int)
    records = []
    for s, seed in enumerate(seeds):
        for j, name in enumerate(indicators):
            t, p = y[idx, j], pred[s, idx, j]
            keep = np.isfinite(t) & np.isfinite(p)
            if keep.sum() < 2:
                continue
            values = {"R2": r2(t[keep], p[keep]), "RMSE": rmse(t[keep], p[keep]), "MAE": mae(t[keep], p[keep])}
            records += [{"indicator": name, "seed": int(seed), "metric": m, "value": float(values[m]),
                         "n_test": int(keep.sum())} for m in METRICS]
    return pd.DataFrame(records, columns=["indicator", "seed", "metric", "value", "n_test"])


def select_on_validation(val: pd.DataFrame, test: pd.DataFrame, name: str = "selected") -> pd.DataFrame:
    """Per (split, indicator), the representation with the best mean validation R², with its test rows.

    Args:
        val: tidy validation rows with columns ``model, split, indicator, seed, metric, value``.
        test: tidy test rows with the same columns.
        name: the ``model`` name given to the selected rows.

    Returns:
        The chosen model's test rows renamed ``name``, with a ``chosen`` column naming the model.
    """
    mean_val = (val[val["metric"] == "R2"].groupby(["split", "indicator", "model"])["value"].mean()
                .rename("val_r2").reset_index())
    pick = mean_val.loc[mean_val.groupby(["split", "indicator"])["val_r2"].idxmax()]
    out = test.merge(pick[["split", "indicator", "model", "val_r2"]], on=["split", "indicator", "model"])
    return out.assign(chosen=out["model"], model=name)


def select_within_noise(predictions: dict, targets, split: Split, indicators, order) -> dict[str, str]:
    """Per indicator, the first representation in ``order`` whose validation error is within noise of the best.

    The one-standard-error rule on the validation regions: per region, the squared error of each
    representation (mean over its seeds); the best is the lowest mean; a representation earlier in
    ``order`` (simpler) is kept instead when its mean excess over the best is at most one standard
    error of the paired per-region differences. Validation differences of a few thousandths of R²
    between representations are noise of the split, not a reason to prefer the more complex one.

    Args:
        predictions: model -> (S, N, T) predictions for all regions.
        targets: (N, T) ln(y + 1), NaN where excluded.
        split: the split whose ``val`` side decides.
        indicators: the T names.
        order: model names, simplest first (every key of ``predictions`` must appear).

    Returns:
        indicator -> chosen model.
    """
    y = np.asarray(targets, dtype=np.float64)
    va = np.asarray(split.val, dtype=int)
    models = [m for m in order if m in predictions]
    out = {}
    for j, name in enumerate(indicators):
        errs = {m: (np.nanmean(np.asarray(predictions[m])[:, va, j], axis=0) - y[va, j]) ** 2 for m in models}
        keep = np.isfinite(y[va, j]) & np.all([np.isfinite(e) for e in errs.values()], axis=0)
        if keep.sum() < 2:
            continue
        mse = {m: float(e[keep].mean()) for m, e in errs.items()}
        best = min(mse, key=mse.get)
        for m in models:
            d = errs[m][keep] - errs[best][keep]
            if m == best or d.mean() <= d.std(ddof=1) / np.sqrt(len(d)):
                out[name] = m
                break
    return out
