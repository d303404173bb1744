"""The papers' ablations as named variants of the two pretraining recipes.

UrbanCLIP (Fig. 4): "w/o refined text" trains on raw captions, "w/o L_LM" and "w/o L_Con" zero one
loss weight; UrbanViT and Text-SimCLR are baselines (:mod:`urbanlib.baselines`). UrbanLN (Fig. 3):
"w/o Refinement" uses consensus-selected raw captions, "w/o Consensus" a random refined candidate,
"w/o IPSI" 77-token captions on the unstretched model, "w/o MSD" mu = 0 with no teacher or queue (the
in-batch CLIP loss); "mu=x" is the Table 4 sweep; "one captioner" trains on a single simulated
captioner's refined captions (UrbanLN's claim that several captioners act as augmentation). Every variant is probed on the same representation
(mean-pooled final ViT tokens), so a variant never probes an untrained pooler.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from urbanlib.analysis.twins import RANDOM_INIT_TWIN
from urbanlib.eval.probe import ProbeConfig, fit_probes
from urbanlib.models.urbanln import UrbanLNConfig
from urbanlib.pipeline.city import City
from urbanlib.pipeline.features import run_features
from urbanlib.pipeline.urbanclip import pretrain_urbanclip
from urbanlib.pipeline.urbanln import pretrain_stage0, pretrain_urbanln

from .benchmark import Features, encoder_features

URBANCLIP_VARIANTS: dict[str, dict] = {
    "UrbanCLIP": {},
    "w/o refined text": {"refined": False},
    "w/o L_LM": {"lambda_lm": 0.0},
    "w/o L_Con": {"lambda_con": 0.0},
}
URBANCLIP_BASELINE_VARIANTS = ["UrbanViT", "Text-SimCLR"]

URBANLN_VARIANTS: dict[str, dict] = {
    "UrbanLN": {},
    "w/o Refinement": {"refinement": False},
    "w/o Consensus": {"consensus": False},
    "w/o IPSI": {"config": {"use_ipsi": False}},
    "w/o MSD": {"config": {"use_msd": False}},
    "one captioner (sim-qwen)": {"sources": ["sim-qwen"]},
}
MU_VARIANTS: dict[str, float] = {"mu=0.3": 0.3, "mu=0.4": 0.4, "mu=0.5": 0.5, "mu=0.6": 0.6}  # Table 4: row -> mu
MU_SWEEP = tuple(MU_VARIANTS.values())  # the values alone, for pages that label the rows themselves
# Not a paper ablation: the stage-0 CLIP every UrbanLN variant starts from, probed as it is. It says how
# far UrbanLN's fine-tuning moves the representation; when it barely does, the variants cannot differ much.
STAGE0_REFERENCE = "stage 0 only (reference)"


def urbanclip_variant(city: City, name: str, progress: bool = False) -> Features:
    """Features of one UrbanCLIP ablation (or of the UrbanViT / Text-SimCLR baselines)."""
    if name in URBANCLIP_BASELINE_VARIANTS:
        return encoder_features(city, name, progress)
    if name not in URBANCLIP_VARIANTS:
        raise KeyError(f"unknown UrbanCLIP variant {name!r}; choose from {list(URBANCLIP_VARIANTS)} "
                       f"or {URBANCLIP_BASELINE_VARIANTS}")

    run = pretrain_urbanclip(city, progress=progress, **URBANCLIP_VARIANTS[name])
    return Features(name, run_features(run, city.tensors), {"wall_s": run.wall_s, "cached": run.cached}, run.history,
                    run)


def urbanln_variant(city: City, name: str, imagery: str = "satellite", progress: bool = False) -> Features:
    """Features of one UrbanLN ablation (:data:`URBANLN_VARIANTS`) or μ-sweep point (:data:`MU_VARIANTS`)."""
    if name == STAGE0_REFERENCE:
        base = pretrain_stage0(city, progress=progress)
        return Features(name, run_features(base, city.tensors, imagery=imagery),
                        {"wall_s": base.wall_s, "cached": base.cached, "imagery": imagery}, base.history)
    if name in URBANLN_VARIANTS:
        spec = URBANLN_VARIANTS[name]
    elif name in MU_VARIANTS:
        spec = {"config": {"mu": MU_VARIANTS[name]}}
    else:
        raise KeyError(f"unknown UrbanLN variant {name!r}; choose from {list(URBANLN_VARIANTS)} or {list(MU_VARIANTS)}")

    kwargs = {k: v for k, v in spec.items() if k != "config"}
    config = replace(UrbanLNConfig(), **spec.get("config", {}))
    run = pretrain_urbanln(city, imagery=imagery, config=config, progress=progress, **kwargs)
    return Features(name, run_features(run, city.tensors, imagery=imagery),
                    {"wall_s": run.wall_s, "cached": run.cached, "context_length": run.info["context_length"],
                     "captions_truncated": run.info["captions_truncated"], "imagery": imagery}, run.history, run)


def probe_features(city: City, features):
    """Probe rows (``probe_seed``, indicator, metrics) of one representation on the city's split."""
    res = fit_probes(features, city.ds.log_targets(), city.split, list(range(city.scale.probe_seeds)),
                     ProbeConfig.for_scale(city.scale), indicators=city.ds.indicators)
    return res.metrics.rename(columns={"seed": "probe_seed"})


def run_ablations(city: City, urbanclip: list[str] | None = None, urbanln: list[str] | None = None,
                  imagery: str = "satellite", progress: bool = False):
    """Probe every variant on the city's split; returns (tidy metrics with a ``model`` column, features)."""
    urbanclip = list(URBANCLIP_VARIANTS) + URBANCLIP_BASELINE_VARIANTS if urbanclip is None else urbanclip
    urbanln = list(URBANLN_VARIANTS) + [STAGE0_REFERENCE] + list(MU_VARIANTS) if urbanln is None else urbanln
    feats = {**{n: urbanclip_variant(city, n, progress) for n in urbanclip},
             **{n: urbanln_variant(city, n, imagery, progress) for n in urbanln}}
    rows = []
    for name, f in feats.items():
        m = probe_features(city, f.features)
        m.insert(0, "model", name)
        m.insert(1, "family", "UrbanCLIP" if name in urbanclip else "UrbanLN")
        rows.append(m)
    return pd.concat(rows, ignore_index=True), feats


def twin_metrics(city: City, models: list[str], imagery: str = "satellite", progress: bool = False) -> pd.DataFrame:
    """Probe rows of the random-init twins of ``models`` (ablation rows), for their gains over the twin.

    The twins are the benchmark's (:data:`~urbanlib.analysis.twins.RANDOM_INIT_TWIN`): the weights
    of this city's and seed's runs at initialisation, so no training runs here. Rows carry the
    ablation frame's columns (``model``, ``family`` = ``"twin"``).
    """
    twins = list(dict.fromkeys(RANDOM_INIT_TWIN[m] for m in models if m in RANDOM_INIT_TWIN))
    rows = []
    for name in twins:
        f = encoder_features(city, name, progress)
        if not isinstance(f, Features):
            continue
        m = probe_features(city, f.features)
        m.insert(0, "model", name)
        m.insert(1, "family", "twin")
        rows.append(m)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
