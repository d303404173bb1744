"""Learning rates chosen on validation, once per method family, and where each recipe reads its own.

Every learned family gets the same budget rule (issue-level protocol, stated in the book): three
learning rates, each trained with the scale's early stopping on the development city
(:data:`DEV_CITY`, pretraining seed :data:`DEV_SEED`), scored by the frozen-feature probe's R² on the
probe's *validation* regions (never test; :func:`selection_split`); the best is used for every city
and seed of the tier. The training length is not chosen here: every run stops on its own
validation loss. The candidates' scores are ``results/selection.csv``; the choice is written from it
to ``results/selected_lr.json`` when the last candidate is stored, and the recipes read it. The
``smoke`` and ``default`` scales use :data:`DEFAULT_LR` (their runs are capped demonstrations); a
scale with a selection plan (``full``, ``paper``) refuses to train before its choice exists.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from urbanlib.cache import atomic_write, results_root
from urbanlib.data.splits import Split
from urbanlib.scales import Scale

DEV_CITY, DEV_SEED = "synth-ring", 0
GRIDS: dict[str, tuple[float, ...]] = {  # family -> candidate learning rates
    "UrbanCLIP": (2e-4, 5e-4, 1e-3),
    "UrbanLN stage 0": (2e-4, 5e-4, 1e-3),
    "UrbanLN": (1e-5, 1e-4, 1e-3),  # fine-tuning stage 0 (the paper's 1e-7 fine-tunes a 400M-pair CLIP)
    "SimCLR ViT": (2e-4, 5e-4, 1e-3),  # UrbanViT, PG-SimCLR and Text-SimCLR share UrbanCLIP's ViT and recipe
    "Autoencoder": (1e-3, 2e-3, 4e-3),  # the small conv nets: around their preset 2e-3
    "Tile2Vec": (1e-3, 2e-3, 4e-3),
    "READ": (1e-3, 2e-3, 4e-3),  # teacher and student share one lr
    "ResNet-18 land-use": (5e-4, 1e-3, 2e-3),  # the stand-in's supervised training on another profile's zones
    "UrbanVLP": (2e-4, 5e-4, 1e-3),  # two urbanclip ViTs and a text tower, UrbanCLIP's recipe
}
DEFAULT_LR = {"UrbanCLIP": 5e-4, "UrbanLN stage 0": 5e-4, "UrbanLN": 1e-4, "SimCLR ViT": 5e-4,
              "Autoencoder": 2e-3, "Tile2Vec": 2e-3, "READ": 2e-3, "ResNet-18 land-use": 1e-3, "UrbanVLP": 5e-4}
SELECTED_SCALES = ("full", "paper")  # scales whose learning rates are chosen on validation


def selected_path() -> Path:
    """``results/selected_lr.json`` (``$URBANLIB_RESULTS`` moves the results folder)."""
    return results_root() / "selected_lr.json"


def selected() -> dict:
    """``{scale name: {family: lr}}`` as committed in ``results/selected_lr.json`` (empty if none yet)."""
    path = selected_path()
    return json.loads(path.read_text()) if path.exists() else {}


def chosen_lr(family: str, scale: Scale) -> float:
    """The learning rate a family trains with at ``scale``: the validation choice, or the default.

    Raises:
        LookupError: at a selected scale (``full``, ``paper``) whose choice is not stored yet.
    """
    if family not in GRIDS:
        raise KeyError(f"unknown family {family!r}; choose from {sorted(GRIDS)}")
    if scale.name not in SELECTED_SCALES:
        return DEFAULT_LR[family]
    choice = selected().get(scale.name, {})
    if family not in choice:
        raise LookupError(f"no learning rate chosen for {family!r} at scale {scale.name!r} yet "
                          f"({selected_path()}): run `python -m urbanlib.results run --scale {scale.name} "
                          f"--only selection` first")
    return float(choice[family])


def selection_split(split: Split, fraction: float = 0.2, seed: int = 0) -> Split:
    """A split that scores on ``split.val``: its train regions lose ``fraction`` to the probe's early stopping.

    The returned split's ``test`` is the original validation set, so a selection never reads a test label.
    """
    rng = np.random.default_rng([seed, 77])
    train = np.asarray(split.train)
    inner = np.sort(rng.choice(train, max(1, round(fraction * len(train))), replace=False))
    return replace(split, train=np.setdiff1d(train, inner), val=inner, test=np.sort(split.val),
                   name=f"selection({split.name})")


def choose(scores, scale_name: str) -> dict[str, float]:
    """Per family, the learning rate with the highest mean validation R² in a selection frame.

    Args:
        scores: rows with ``family``, ``lr`` and ``val_r2`` (one per candidate, probe seeds averaged).
        scale_name: the scale the rows were computed at (rows of other scales are ignored).
    """
    rows = scores[scores["scale"] == scale_name] if "scale" in scores else scores
    out = {}
    for family, g in rows.groupby("family"):
        best = g.groupby("lr")["val_r2"].mean()
        out[str(family)] = float(best.idxmax())
    return out


def write_selected(scores, scale_name: str) -> dict:
    """Write the choice of :func:`choose` for ``scale_name`` into ``results/selected_lr.json``; returns it."""
    all_scales = selected()
    all_scales[scale_name] = choose(scores, scale_name)
    path = selected_path()
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(all_scales, indent=1, sort_keys=True) + "\n")
    return all_scales[scale_name]


def candidate_scores(rows):
    """The selection experiment's stored rows as one row per candidate: family, lr, val_r2, scale."""
    r = rows[rows["metric"] == "val_r2"]
    return r.assign(family=r["model"], lr=r["task"].str.replace("lr=", "", regex=False).astype(float),
                    val_r2=r["value"].astype(float))[["family", "lr", "val_r2", "scale"]]
