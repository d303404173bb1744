"""Transfer reads a row of ours as the benchmark does: the source's run, trained or at initialisation, on every city."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from urbanlib.experiments import benchmark, transfer


def _city(name: str):
    tensors = SimpleNamespace(key=name.upper(), satellite_mask=np.array([True]), has_street=np.array([True]))
    return SimpleNamespace(name=name, tensors=tensors, ds=SimpleNamespace(captions=pd.DataFrame({"style": ["long"]})),
                           scale=None, seed=0, protocol="all-tiles")


@pytest.fixture
def labelled_runs(monkeypatch):
    """Stub recipes and read-outs: each feature says which recipe, which weights, which city's run, whose regions."""

    def recipe(kind):
        def pretrain(city, *args, **kwargs):
            return SimpleNamespace(kind=kind, city=getattr(city, "name", city), cached=True, wall_s=0.0, history=None,
                                   info={"parameters": 1, "stage0_wall_s": 0.0, "student_total": 1})
        return pretrain

    def read_out(weights):
        def features(run, tensors, imagery="satellite"):
            return np.array([[f"{run.kind}/{weights}/{imagery}/{run.city}->{tensors.key}"]], dtype=object)
        return features

    for kind in ("urbanclip", "stage0", "urbanln"):
        monkeypatch.setattr(benchmark, f"pretrain_{kind}", recipe(kind))
    monkeypatch.setattr(benchmark, "run_features", read_out("trained"))
    monkeypatch.setattr(benchmark, "init_features", read_out("init"))


def test_a_random_init_row_transfers_its_runs_initial_weights(labelled_runs):
    source, target = _city("a"), _city("b")
    expected = {"UrbanCLIP (random init)": "urbanclip/init/satellite", "CLIP (random init, street)": "stage0/init/street",
                "UrbanLN stage 0 (satellite)": "urbanln/init/satellite", "UrbanLN (street)": "urbanln/trained/street"}
    for name, what in expected.items():
        f = transfer.transfer_features(source, [source, target], name)
        assert list(f[:, 0]) == [f"{what}/a->A", f"{what}/a->B"], name


def test_every_row_of_ours_transfers_as_the_benchmark_reads_it(labelled_runs):
    source, target = _city("a"), _city("b")
    for name in benchmark.OUR_MODELS:
        own = benchmark.encoder_features(source, name).features[0, 0]
        f = transfer.transfer_features(source, [target, source], name)
        assert list(f[:, 0]) == [own.replace("->A", "->B"), own], name  # the source's encoder on either city
