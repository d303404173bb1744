"""The ablations' random-init twins: which twins a set of variants needs, probed like the variants."""

import numpy as np
import pytest

from urbanlib.experiments.ablations import probe_features, twin_metrics
from urbanlib.pipeline.city import open_city
from urbanlib.pipeline.features import init_features
from urbanlib.pipeline.urbanclip import pretrain_urbanclip


@pytest.fixture(scope="module")
def city():
    return open_city("synth-ring", "smoke", 0, progress=False)


def test_twin_metrics_probe_each_needed_twin_once_at_the_runs_initial_weights(city):
    rows = twin_metrics(city, ["UrbanCLIP", "w/o L_LM", "UrbanViT", "not a variant"])
    assert set(rows["model"]) == {"UrbanCLIP (random init)"} and set(rows["family"]) == {"twin"}
    run = pretrain_urbanclip(city)  # cached: the run the UrbanCLIP variants start from
    expected = probe_features(city, init_features(run, city.tensors))
    got = rows.drop(columns=["model", "family"]).reset_index(drop=True)
    np.testing.assert_allclose(got["value"].to_numpy(float), expected["value"].to_numpy(float), rtol=1e-6)
    assert twin_metrics(city, ["not a variant"]).empty
