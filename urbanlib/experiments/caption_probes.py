"""Caption-only probes on a SynthCity city: the release page's candidates and choice, as a cheap results unit.

The "Real captions" page (:mod:`urbanlib.experiments.real_captions`) picks the caption-only probe on
validation regions among TF-IDF + ridge, MiniLM + ridge, TF-IDF ++ MiniLM + ridge and MiniLM + the
MLP probe (the simplest within one standard error of the best; :mod:`urbanlib.eval.caption_candidates`),
and also reports the best-on-validation candidate however small its lead. The same candidates and
rules run here on a generated city, for its short (UrbanCLIP) and long (UrbanLN) captions and on
both splits, so SynthCity's caption-only probe is the one the real captions chose, not a fixed
MiniLM probe. Nothing here pretrains: a unit is a few CPU-minutes and can be re-run whenever the
tier is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from urbanlib.data.report import DataError
from urbanlib.eval.caption_candidates import ARGMAX, CANDIDATES, SELECTED, run_probes, with_selected
from urbanlib.eval.probe import ProbeConfig
from urbanlib.eval.text_features import region_text_features, select_captions
from urbanlib.pipeline.city import City

STYLES = ("short", "long")  # UrbanCLIP's captions, UrbanLN's long captions
# how the benchmark embeds each style (long captions: distinct sentences, averaged per caption)
EMBED_UNIT = {"short": "caption", "long": "sentence"}


def model_name(candidate: str, style: str) -> str:
    """Row label of one representation on one caption style, e.g. ``"TF-IDF + ridge (short)"``."""
    return f"{candidate} ({style})"


# row label -> (representation, caption style): what a stored row is, looked up, never parsed from its label
CAPTION_PROBE_MODELS: dict[str, tuple[str, str]] = {model_name(r, s): (r, s) for r in (*CANDIDATES, SELECTED, ARGMAX)
                                                     for s in STYLES}


def caption_probe_rows(cities: dict[str, City], styles=STYLES, targets: np.ndarray | None = None) -> list[dict]:
    """Tidy result rows of every candidate and the validation-chosen probe, per split and caption style.

    Args:
        cities: split name -> the same city opened with that split (:func:`urbanlib.pipeline.city.open_city`).
        styles: caption styles to probe; a style the dataset lacks is skipped, and a city with none of
            them raises :class:`~urbanlib.data.report.DataError` naming it.
        targets: (N, T) ln(y + 1) to probe; default the dataset's own (a test may scramble some).

    Returns:
        Rows ``model``, ``task`` (``"<indicator>/<split>"``), ``metric`` (``R2_mean``, ``R2_std``, ... over
        probe seeds, ``n_test``, and for the chosen probe ``chosen_index``: the position of the chosen
        candidate in :data:`~urbanlib.eval.caption_candidates.CANDIDATES`), ``value``.
    """
    first = next(iter(cities.values()))
    ds = first.ds
    targets = ds.log_targets() if targets is None else targets
    seeds = list(range(first.scale.probe_seeds))
    config = ProbeConfig.for_scale(first.scale)
    splits = {name: c.split for name, c in cities.items()}
    rows = []
    for style in styles:
        if select_captions(ds.captions, style).empty:
            continue
        captions = select_captions(ds.captions, style)
        minilm = region_text_features(ds, style=style, unit=EMBED_UNIT[style], progress=False)
        run = run_probes(ds, captions, targets, splits, seeds, config, minilm)
        test = with_selected(run, splits, targets, list(ds.indicators))
        rows += _summarise(test, style)
    if not rows:
        have = sorted(ds.captions["style"].dropna().unique()) if "style" in ds.captions else []
        raise DataError(f"city {', '.join(map(str, ds.cities))} has no non-empty captions of style "
                        f"{' or '.join(styles)} to probe (caption styles present: {have or 'none'})")
    return rows


def _summarise(test: pd.DataFrame, style: str) -> list[dict]:
    rows = []
    for (model, split, indicator, metric), g in test.groupby(["model", "split", "indicator", "metric"], sort=False):
        task = f"{indicator}/{split}"
        name = model_name(model, style)
        rows += [{"model": name, "task": task, "metric": f"{metric}_mean", "value": float(g["value"].mean())},
                 {"model": name, "task": task, "metric": f"{metric}_std",
                  "value": float(g["value"].std(ddof=1)) if len(g) > 1 else 0.0}]
        if metric == "R2":
            rows.append({"model": name, "task": task, "metric": "n_test", "value": float(g["n_test"].max())})
            if model == SELECTED:
                chosen = g["chosen"].iloc[0]
                rows.append({"model": name, "task": task, "metric": "chosen_index",
                             "value": float(CANDIDATES.index(chosen))})
    return rows


def chosen_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Which candidate validation chose, per caption style, split and indicator (from stored rows)."""
    r = rows[rows["metric"] == "chosen_index"]
    task = r["task"].str.split("/")
    out = pd.DataFrame({"style": [CAPTION_PROBE_MODELS[m][1] for m in r["model"]],
                        "split": task.str[1].to_numpy(), "indicator": task.str[0].to_numpy(),
                        "chosen": [CANDIDATES[int(v)] for v in r["value"]]})
    if "city" in r:
        out.insert(0, "city", r["city"].to_numpy())
    return out
