"""The caption-only candidates and the rule that picks one on validation (the Real captions page, SynthCity too).

Four representations of a region's captions are probed: TF-IDF + ridge, MiniLM + ridge, TF-IDF ++
MiniLM + ridge (the MiniLM block's weight chosen on validation) and MiniLM + the MLP probe; where a
caption LM of urbanlib's own was trained on the city's captions (:mod:`urbanlib.eval.caption_lm`),
its features with ridge and with the MLP probe are two more.
:func:`run_probes` scores each on every split's validation and test regions; :func:`with_selected`
adds the two choices made on validation only: :data:`SELECTED`, the simplest candidate within one
standard error of the best (the "caption-only probe"), and :data:`ARGMAX`, the best however small
its lead. One module serves the release's page (:mod:`urbanlib.experiments.real_captions`) and the
SynthCity results experiment (:mod:`urbanlib.experiments.caption_probes`), so both choose alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .probe import ProbeConfig, fit_probes
from .text_probes import (
    combined_ridge_probe,
    region_documents,
    ridge_probe,
    select_on_validation,
    select_within_noise,
    side_scores,
    tfidf_features,
)

TFIDF = "TF-IDF + ridge"
MINILM_RIDGE = "MiniLM + ridge"
MINILM_MLP = "MiniLM + MLP probe"
COMBINED = "TF-IDF ++ MiniLM + ridge"
SELECTED = "caption-only probe (validation, one-SE rule)"
ARGMAX = "best on validation (argmax)"
OWN_LM_RIDGE = "caption LM (ours) + ridge"
OWN_LM_MLP = "caption LM (ours) + MLP probe"
# simplest first (the one-SE rule keeps the earliest within noise); appended, never reordered: the
# SynthCity results store the chosen candidate as its index here
CANDIDATES = (TFIDF, MINILM_RIDGE, MINILM_MLP, COMBINED, OWN_LM_RIDGE, OWN_LM_MLP)
FIXED_CANDIDATES = CANDIDATES[:4]  # no training on the city's captions (the SynthCity results run these)
COMBINED_WEIGHTS = (0.0, 0.5, 1.0, 2.0)  # MiniLM block weights tried on validation; 0 is TF-IDF alone


@dataclass
class ProbeRun:
    """Validation and test rows of every caption-only representation on each split, and their predictions."""

    val: pd.DataFrame  # model, split, indicator, seed, metric, value, n_test
    test: pd.DataFrame
    predictions: dict = field(default_factory=dict)  # (model, split) -> (S, N, T)
    chosen: dict = field(default_factory=dict)  # (model, split) -> settings chosen on validation


def run_probes(ds, captions: pd.DataFrame, targets: np.ndarray, split_by_name: dict, seeds: list[int],
               config: ProbeConfig, minilm: np.ndarray | None, models=CANDIDATES,
               own_lm: np.ndarray | None = None) -> ProbeRun:
    """Every caption-only representation in ``models`` on every split, scored on validation and test.

    Args:
        ds: the dataset (regions order, indicator names).
        captions: the captions to read (raw or refined).
        targets: (N, T) ln(y + 1), NaN where excluded.
        split_by_name: split name -> :class:`~urbanlib.data.splits.Split`.
        seeds: probe seeds (the MLP heads; ridge repeats its one value per seed).
        config: the MLP probe's configuration.
        minilm: (N, 384) MiniLM features of ``captions`` (NaN rows: no caption), or None (MiniLM rows skipped).
        models: which of :data:`CANDIDATES` to run.
        own_lm: (N, D) features of the caption LM of :mod:`urbanlib.eval.caption_lm` (NaN rows: no
            caption), or None (its rows skipped).
    """
    docs = region_documents(captions, ds.region_ids)
    names = list(ds.indicators)
    val, test, preds, chosen = [], [], {}, {}
    for split_name, split in split_by_name.items():
        x_tfidf, has, vocab = tfidf_features(docs, split.train)
        has_all = has & (np.isfinite(minilm).all(1) if minilm is not None else True)
        results = {}
        if TFIDF in models:
            results[TFIDF] = ridge_probe(x_tfidf, targets, split, seeds, names, has=has)
        if minilm is not None and MINILM_RIDGE in models:
            results[MINILM_RIDGE] = ridge_probe(minilm, targets, split, seeds, names)
        if minilm is not None and COMBINED in models:
            results[COMBINED] = combined_ridge_probe(x_tfidf, minilm, targets, split, seeds, names,
                                                     weights=COMBINED_WEIGHTS, has=has_all)
        if minilm is not None and MINILM_MLP in models:
            results[MINILM_MLP] = fit_probes(minilm, targets, split, seeds, config, indicators=names)
        if own_lm is not None and OWN_LM_RIDGE in models:
            results[OWN_LM_RIDGE] = ridge_probe(own_lm, targets, split, seeds, names)
        if own_lm is not None and OWN_LM_MLP in models:
            results[OWN_LM_MLP] = fit_probes(own_lm, targets, split, seeds, config, indicators=names)
        for model, res in results.items():
            preds[(model, split_name)] = res.predictions
            extra = dict(getattr(res, "extra", {}) or {})
            if hasattr(res, "alphas"):
                extra["alpha"] = res.alphas
            chosen[(model, split_name)] = {**extra, "vocabulary": vocab} if model in (TFIDF, COMBINED) else extra
            for side, out in (("val", val), ("test", test)):
                rows = side_scores(res.predictions, targets, split, side, res.seeds, names)
                out.append(rows.assign(model=model, split=split_name))
    cols = ["model", "split", "indicator", "seed", "metric", "value", "n_test"]
    val = pd.concat(val, ignore_index=True)[cols]
    test = pd.concat(test, ignore_index=True)[cols]
    return ProbeRun(val, test, preds, chosen)


def with_selected(run: ProbeRun, split_by_name: dict, targets: np.ndarray, indicators: list[str]) -> pd.DataFrame:
    """The test rows plus two choices made on validation only, per split and indicator.

    :data:`SELECTED` (the caption-only probe): the simplest representation (order of
    :data:`CANDIDATES`) within one standard error of the best on validation
    (:func:`urbanlib.eval.text_probes.select_within_noise`); :data:`ARGMAX`: the highest mean
    validation R², however small its lead.
    """
    rows = [run.test.assign(chosen=run.test["model"]), select_on_validation(run.val, run.test, ARGMAX)]
    for split_name, split in split_by_name.items():
        preds = {m: p for (m, s), p in run.predictions.items() if s == split_name}
        pick = select_within_noise(preds, targets, split, indicators, CANDIDATES)
        for ind, model in pick.items():
            t = run.test[(run.test["split"] == split_name) & (run.test["indicator"] == ind) & (run.test["model"] == model)]
            rows.append(t.assign(chosen=model, model=SELECTED))
    return pd.concat(rows, ignore_index=True)
