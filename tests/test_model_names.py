"""Stored row names are data: a registry says what each name is, and the code looks names up, never parses them.

The names themselves are what ``results/*.csv`` hold, so they are pinned here too.
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from urbanlib.experiments import ablations, benchmark
from urbanlib.experiments.caption_probes import CAPTION_PROBE_MODELS, chosen_table
from urbanlib.results import tier


class _Stop(Exception):
    pass


def test_each_mu_row_trains_with_its_registered_value_and_no_other_name_does(monkeypatch):
    assert ablations.MU_VARIANTS == {"mu=0.3": 0.3, "mu=0.4": 0.4, "mu=0.5": 0.5, "mu=0.6": 0.6}
    assert [f"mu={m}" for m in ablations.MU_SWEEP] == list(ablations.MU_VARIANTS)  # how the ablations page labels them
    assert {n for _, ln in tier.ABLATION_GROUPS.values() for n in ln} - set(ablations.URBANLN_VARIANTS) \
        <= set(ablations.MU_VARIANTS) | {ablations.STAGE0_REFERENCE}
    trained = []

    def pretrain(city, imagery, config, progress, **kwargs):
        trained.append(config.mu)
        raise _Stop

    monkeypatch.setattr(ablations, "pretrain_urbanln", pretrain)
    for name in ablations.MU_VARIANTS:
        with pytest.raises(_Stop):
            ablations.urbanln_variant(None, name)
    assert trained == list(ablations.MU_VARIANTS.values())
    with pytest.raises(KeyError, match="mu=0.7"):
        ablations.urbanln_variant(None, "mu=0.7")  # not a row of Table 4: refused, not parsed into a new run


def test_each_caption_only_row_embeds_its_registered_style(monkeypatch):
    assert benchmark.CAPTION_STYLES == {"Captions only (MiniLM, short)": "short", "Captions only (MiniLM, long)": "long"}
    assert benchmark.TEXT == [*benchmark.CAPTION_STYLES, "UrbanCLIP + captions (fusion)"]
    embedded = []
    monkeypatch.setattr(benchmark, "_has_captions", lambda city, style: True)
    monkeypatch.setattr(benchmark, "region_text_features",
                        lambda ds, style, unit, progress: embedded.append((style, unit)) or np.zeros((1, 2)))
    city = SimpleNamespace(ds=None)
    for name in benchmark.CAPTION_STYLES:
        benchmark.encoder_features(city, name)
    assert embedded == [("short", "caption"), ("long", "sentence")]
    with pytest.raises(KeyError):
        benchmark.encoder_features(city, "Captions only (MiniLM, short, v2)")  # no name is guessed at


def test_train_only_rows_are_named_by_one_mapping_both_ways(monkeypatch, tmp_path):
    assert tier.PROTOCOL_MODELS == {"UrbanCLIP": "UrbanCLIP [train-only]",
                                    "UrbanCLIP (random init)": "UrbanCLIP (random init) [train-only]"}
    metrics = pd.DataFrame([{"model": m, "indicator": "gdp", "metric": "R2", "value": 0.5, "probe_seed": s}
                            for m in tier.PROTOCOL_MODELS for s in (0, 1)])
    monkeypatch.setattr(tier, "open_city", lambda *a, **k: None)
    monkeypatch.setattr(tier, "run_benchmark", lambda city, models, log: (metrics[metrics["model"].isin(models)], {}, {}))
    monkeypatch.setattr(tier, "_pretraining_rows", lambda city, feats, seed: [])
    rows = tier._protocol({"city": "synth-ring", "split": "random"}, 0, "full")
    assert {r["model"] for r in rows} == set(tier.PROTOCOL_MODELS.values())


def test_caption_probe_rows_are_looked_up_for_their_style():
    assert CAPTION_PROBE_MODELS["TF-IDF + ridge (short)"] == ("TF-IDF + ridge", "short")
    assert CAPTION_PROBE_MODELS["caption-only probe (validation, one-SE rule) (long)"] == \
        ("caption-only probe (validation, one-SE rule)", "long")
    rows = pd.DataFrame([{"model": "caption-only probe (validation, one-SE rule) (long)", "task": "gdp/random",
                          "metric": "chosen_index", "value": 1.0}])
    assert chosen_table(rows).to_dict("records") == [{"style": "long", "split": "random", "indicator": "gdp",
                                                      "chosen": "MiniLM + ridge"}]
    with pytest.raises(KeyError):
        chosen_table(rows.assign(model="something else (short)"))  # an unknown row is an error, not a guess
