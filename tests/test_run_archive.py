"""The committed run archive (results/runs/): a finished run kept there is restored on a cache miss, checked."""

import json

import pytest
import torch
from toy_training import Linear, Points

from urbanlib.pipeline import runs
from urbanlib.train import TrainConfig
from urbanlib.train.checkpoint import CheckpointError


def _run(archive=True, seed=0):
    torch.manual_seed(seed)
    cfg = TrainConfig(max_steps=12, batch_size=8, lr=0.05, warmup_steps=2, progress=False, seed=seed,
                      evals_per_epoch=2, weight_decay=0.0)
    return runs.train_or_load("toy", Linear(), Points(64, 0), cfg, {"toy": 1}, {"what": "toy"},
                              val_dataset=Points(24, 1), archive=archive)


@pytest.fixture
def places(tmp_path, monkeypatch):
    monkeypatch.setenv("URBANLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("URBANLIB_CACHE", str(tmp_path / "cache-a"))
    return tmp_path


def test_an_archived_run_is_restored_on_a_new_machine_without_training(places, monkeypatch):
    first = _run()
    kept = runs.archive_dir() / first.run_dir.name
    assert (kept / "done.json").exists() and (kept / "model.safetensors").exists()
    assert not list(kept.glob("step-*")) and not (kept / "optimizer.safetensors").exists()  # weights only
    monkeypatch.setenv("URBANLIB_CACHE", str(places / "cache-b"))  # the cache did not survive the move
    monkeypatch.setattr(runs.Trainer, "fit", lambda *a, **k: pytest.fail("an archived run was retrained"))
    again = _run()
    assert again.cached and again.run_dir != first.run_dir and again.run_dir.name == first.run_dir.name
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert again.info == json.loads(json.dumps(first.info)) and len(again.history) == len(first.history)
    init = runs.init_model(again, Linear())  # the random-init twin: the seed's fresh weights
    torch.manual_seed(0)
    fresh = Linear()
    assert all(torch.equal(a, b) for a, b in zip(init.state_dict().values(), fresh.state_dict().values(),
                                                    strict=True))


def test_runs_not_asked_to_be_archived_stay_in_the_cache(places):
    _run(archive=False)
    assert not runs.archive_dir().exists()


def test_a_damaged_archive_is_refused_naming_the_file(places, monkeypatch):
    first = _run()
    weights = runs.archive_dir() / first.run_dir.name / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setenv("URBANLIB_CACHE", str(places / "cache-b"))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        _run()


def test_the_code_hash_is_taken_when_the_recipes_are_imported_not_at_first_use():
    import subprocess
    import sys

    code = "import urbanlib.pipeline.runs as r; print(r.code_hash.cache_info().currsize)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"  # computed at import, before any run asks for it
